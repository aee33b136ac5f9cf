//! Rivulet on the ST Nucleo-F767ZI: wired Ethernet with DHCP, a TCP link to the gateway that
//! survives its restarts, and the shared application (`rivulet-device-app`): telemetry every
//! second, commands for LD1, and the `info` request.
//!
//! Build-time settings: `RIVULET_DEVICE_NAME` (default `nucleo`), `RIVULET_GATEWAY` (default
//! `192.168.1.10:7780`). Flash and watch the log with `cargo run --release` in this directory
//! (probe-rs); the README's "Flash it" lists the log lines.
#![no_std]
#![no_main]

use defmt::{info, unwrap};
use embassy_executor::Spawner;
use embassy_net::Ipv4Address;
use embassy_stm32::adc::{Adc, SampleTime, Temperature, VrefInt};
use embassy_stm32::gpio::{Level, Output, Speed};
use embassy_stm32::peripherals::ADC1;
use rivulet_device_app::{Board, NoImages, device_name, gateway_endpoint};
use rivulet_embassy::{Config, LinkStatus, Runner, State, TcpConnector};
use rivulet_nucleo::ethernet_peripherals;
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

const DEVICE_NAME: &str = device_name!("nucleo");
const GATEWAY: ([u8; 4], u16) = gateway_endpoint!("192.168.1.10:7780");

/// The queues the device handle and its runner share (default capacities: 4 events, 2 requests).
static STATE: State = State::new();

type DeviceRunner = Runner<'static, TcpConnector<'static>>;

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

    match rivulet_device_app::run(&device, &mut board, &mut NoImages, DEVICE_NAME).await {
        Ok(never) => match never {},
        Err(error) => defmt::panic!("the application cannot start: {}", error),
    }
}
