//! Rivulet on the ST Nucleo-F767ZI: wired Ethernet with DHCP, a TCP link to the gateway that
//! survives its restarts, and the shared application (`rivulet-device-app`): telemetry every
//! second, commands for LD1, and the `info` request.
//!
//! Firmware images (`rivulet send-file IMAGE.bin --to nucleo`) are received into the DFU
//! partition (src/layout.rs) through `rivulet_embassy::ota`, their SHA-256 checked on what the
//! flash holds; a verified image that looks like this firmware (its vector table) is marked for
//! the bootloader (embassy-boot, firmware/bootloader) and the board restarts into the swap.
//!
//! Build-time settings: `RIVULET_DEVICE_NAME` (default `nucleo`), `RIVULET_GATEWAY` (default
//! `192.168.1.10:7780`). Flash the bootloader once, then flash and watch the log with
//! `cargo run --release` in this directory (probe-rs); the README's "Flash it" lists the log
//! lines.
#![no_std]
#![no_main]

use defmt::{info, unwrap};
use embassy_boot_stm32::{AlignedBuffer, FirmwareState, State as BootState};
use embassy_embedded_hal::adapter::BlockingAsync;
use embassy_embedded_hal::flash::partition::Partition;
use embassy_executor::Spawner;
use embassy_net::Ipv4Address;
use embassy_stm32::adc::{Adc, SampleTime, Temperature, VrefInt};
use embassy_stm32::flash::{Bank1Region1, Bank1Region3, Blocking, Flash, WRITE_SIZE};
use embassy_stm32::gpio::{Level, Output, Speed};
use embassy_stm32::peripherals::ADC1;
use embassy_sync::blocking_mutex::raw::{CriticalSectionRawMutex, NoopRawMutex};
use embassy_sync::mutex::Mutex;
use embassy_sync::signal::Signal;
use embassy_time::Timer;
use embedded_storage_async::nor_flash::ReadNorFlash;
use rivulet_device_app::{Board, ImageEvent, device_name, gateway_endpoint};
use rivulet_embassy::ota::ImageReceiver;
use rivulet_embassy::{Config, LinkStatus, Runner, State, TcpConnector};
use rivulet_nucleo::ethernet_peripherals;
use rivulet_nucleo::layout;
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

const DEVICE_NAME: &str = device_name!("nucleo");
const GATEWAY: ([u8; 4], u16) = gateway_endpoint!("192.168.1.10:7780");

/// The queues the device handle and its runner share (default capacities: 4 events, 2 requests).
static STATE: State = State::new();

type DeviceRunner = Runner<'static, TcpConnector<'static>>;

/// The bootloader's state and the DFU partition, each over its flash region.
type StateFlash = BlockingAsync<Bank1Region1<'static, Blocking>>;
type ImageFlash = BlockingAsync<Bank1Region3<'static, Blocking>>;
type StatePartition = Partition<'static, NoopRawMutex, StateFlash>;
type DfuPartition = Partition<'static, NoopRawMutex, ImageFlash>;

/// Raised when an image is verified: [`stage`] marks it for the bootloader.
static STAGE: Signal<CriticalSectionRawMutex, ()> = Signal::new();

/// Marks a verified image for the bootloader's swap and restarts into it, if it looks like this
/// firmware: its vector table's stack pointer in RAM and reset vector in the active partition
/// (a file whose hash matched but is not a firmware is left alone).
#[embassy_executor::task]
async fn stage(state: StatePartition, mut dfu: DfuPartition) -> ! {
    let mut magic = AlignedBuffer([0u8; WRITE_SIZE]);
    let mut state = FirmwareState::new(state, &mut magic.0);
    loop {
        STAGE.wait().await;
        let mut vectors = [0u8; 8];
        let looks_right = dfu.read(0, &mut vectors).await.is_ok() && {
            let word = |at: usize| u32::from_le_bytes([vectors[at], vectors[at + 1], vectors[at + 2], vectors[at + 3]]);
            let active = 0x0804_0000 + layout::ACTIVE_OFFSET;
            (0x2000_0000..=0x2008_0000).contains(&word(0))
                && word(4) & 1 == 1
                && (active..active + layout::ACTIVE_SIZE).contains(&word(4))
        };
        if !looks_right {
            defmt::warn!("the verified image is not a firmware for this board: not staged");
            continue;
        }
        match state.mark_updated().await {
            Ok(()) => {
                info!("image staged for the bootloader; restarting into it");
                Timer::after_millis(500).await;
                cortex_m::peripheral::SCB::sys_reset();
            }
            Err(e) => defmt::warn!("the image could not be marked for the bootloader: {}", e),
        }
    }
}

/// Keeps the link to the gateway: connects, resumes the session, reconnects with backoff. The
/// runner lives in a `StaticCell` and the task takes a reference: a task that took the runner by
/// value would hold it twice in its future (once as the argument, once as the moved binding),
/// 3.3 KiB of RAM for nothing (docs/FOOTPRINT.md).
#[embassy_executor::task]
async fn rivulet(runner: &'static mut DeviceRunner) -> ! {
    runner.run().await
}

/// The board as the application sees it: the die's temperature sensor through ADC1, LD1 (green,
/// PB0) for the `led` command, LD2 (blue, PB7) lit while the gateway link is up.
struct Nucleo {
    adc: Adc<'static, ADC1>,
    temperature: Temperature,
    vrefint: VrefInt,
    led: Output<'static>,
    link_led: Output<'static>,
}

/// Factory calibration in system memory (DS11532 §6.3.25, §6.3.27): 12-bit readings taken at
/// VDDA = 3.3 V of the sensor at 30 °C and 110 °C, and of VREFINT.
const TS_CAL1: *const u16 = 0x1FF0_F44C as *const u16;
const TS_CAL2: *const u16 = 0x1FF0_F44E as *const u16;
const VREFINT_CAL: *const u16 = 0x1FF0_F44A as *const u16;

impl Board for Nucleo {
    const NAME: &'static str = "nucleo-f767zi";
    const FIRMWARE_VERSION: &'static str = env!("CARGO_PKG_VERSION");

    /// The sensor's reading scaled to VDDA = 3.3 V through VREFINT (the board's supply is not
    /// exactly that), then placed on the line through the two calibration points.
    fn die_temperature(&mut self) -> Option<i32> {
        // 480 cycles at 27 MHz (18 µs): the sensor needs at least 10 µs of sampling.
        let vref = i64::from(self.adc.blocking_read(&mut self.vrefint, SampleTime::CYCLES480));
        let raw = i64::from(self.adc.blocking_read(&mut self.temperature, SampleTime::CYCLES480));
        // SAFETY: fixed, always readable addresses of the F767's system memory (OTP area).
        let (cal30, cal110, vref_cal) = unsafe {
            (
                i64::from(TS_CAL1.read_volatile()),
                i64::from(TS_CAL2.read_volatile()),
                i64::from(VREFINT_CAL.read_volatile()),
            )
        };
        if vref == 0 || cal110 <= cal30 {
            return None;
        }
        let at_3v3 = raw * vref_cal / vref;
        i32::try_from(3000 + (at_3v3 - cal30) * 8000 / (cal110 - cal30)).ok()
    }

    fn set_led(&mut self, on: bool) {
        self.led.set_level(Level::from(on));
    }

    fn link_changed(&mut self, status: &LinkStatus) {
        self.link_led.set_level(Level::from(status.connected));
    }

    fn stack_used(&self) -> Option<u32> {
        Some(rivulet_device_app::stack::used())
    }

    /// A verified image is staged by [`stage`] (this hook runs in the application's loop and
    /// must not wait).
    fn image(&mut self, event: ImageEvent<'_>) {
        match event {
            ImageEvent::Receiving { name, size, held } => info!("image {}: {} bytes, from byte {}", name, size, held),
            ImageEvent::Verified { name, size, .. } => {
                info!("image {} verified ({} bytes)", name, size);
                STAGE.signal(());
            }
            ImageEvent::Refused(reason) => defmt::warn!("image request refused: {}", reason),
            ImageEvent::Progress { .. } => {}
        }
    }
}

#[embassy_executor::main]
async fn main(spawner: Spawner) -> ! {
    let p = rivulet_nucleo::init();
    let (ip, port) = GATEWAY;
    info!(
        "rivulet-nucleo {}: device \"{}\", gateway {}.{}.{}.{}:{}",
        env!("CARGO_PKG_VERSION"),
        DEVICE_NAME,
        ip[0],
        ip[1],
        ip[2],
        ip[3],
        port
    );
    let (net_seed, rivulet_seed) = rivulet_nucleo::seeds(p.RNG);
    let adc = Adc::new(p.ADC1);
    let (temperature, vrefint) = (adc.enable_temperature(), adc.enable_vrefint());
    let mut board = Nucleo {
        adc,
        temperature,
        vrefint,
        led: Output::new(p.PB0, Level::Low, Speed::Low),
        link_led: Output::new(p.PB7, Level::Low, Speed::Low),
    };
    let stack = rivulet_nucleo::start_network(spawner, ethernet_peripherals!(p), net_seed).await;

    // Socket buffers and the link's frame buffers: 1 KiB each (adapters/embassy/README.md).
    static BUFFERS: StaticCell<[[u8; 1024]; 4]> = StaticCell::new();
    let [socket_rx, socket_tx, rx, tx] = BUFFERS.init([[0; 1024]; 4]);
    let gateway = (Ipv4Address::new(ip[0], ip[1], ip[2], ip[3]), port);
    let tcp = TcpConnector::new(stack, gateway, socket_rx, socket_tx);
    let config = Config { seed: rivulet_seed, ..Config::new(DEVICE_NAME) };
    #[cfg(feature = "login")]
    let config = Config { token: rivulet_device_app::device_token!(), ..config };
    let (device, runner) = rivulet_embassy::new(&STATE, config, tcp, rx, tx);
    static RUNNER: StaticCell<DeviceRunner> = StaticCell::new();
    spawner.spawn(unwrap!(rivulet(RUNNER.init(runner))));

    // The flash: the bootloader's state (32K sectors) and the DFU partition (256K sectors).
    let regions = Flash::new_blocking(p.FLASH).into_blocking_regions();
    static STATE_FLASH: StaticCell<Mutex<NoopRawMutex, StateFlash>> = StaticCell::new();
    static IMAGE_FLASH: StaticCell<Mutex<NoopRawMutex, ImageFlash>> = StaticCell::new();
    let state_flash = &*STATE_FLASH.init(Mutex::new(BlockingAsync::new(regions.bank1_region1)));
    let image_flash = &*IMAGE_FLASH.init(Mutex::new(BlockingAsync::new(regions.bank1_region3)));
    let state_partition = Partition::new(state_flash, layout::STATE_OFFSET, layout::STATE_SIZE);
    // Images up to the active partition's size: the last page of the DFU is the swap's scratch,
    // and a larger image would be cut by the swap.
    let dfu = Partition::new(image_flash, layout::DFU_OFFSET, layout::ACTIVE_SIZE);
    {
        // This firmware runs: confirm it before anything writes the DFU partition, which holds
        // the previous firmware after a swap (the bootloader's way back).
        let mut magic = AlignedBuffer([0u8; WRITE_SIZE]);
        let mut boot = FirmwareState::new(state_partition.clone(), &mut magic.0);
        if let Ok(BootState::Swap) = boot.get_state().await {
            info!("first start of a new firmware image");
        }
        if let Err(e) = boot.mark_booted().await {
            defmt::warn!("cannot confirm this firmware to the bootloader: {}", e);
        }
    }
    spawner.spawn(unwrap!(stage(state_partition, dfu.clone())));
    // The request queue's length (STATE's default, 2): chunks a sender may have in flight.
    let mut images = ImageReceiver::new(dfu, 2);

    match rivulet_device_app::run(&device, &mut board, &mut images, DEVICE_NAME).await {
        Ok(never) => match never {},
        Err(error) => defmt::panic!("the application cannot start: {}", error),
    }
}
