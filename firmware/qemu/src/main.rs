//! Rivulet in QEMU's mps2-an386 (Cortex-M4F, the board firmware's target): the same application
//! as the Nucleo (`rivulet-device-app`), speaking the protocol over the CMSDK APB UART0 with the
//! core's COBS + CRC serial framing. QEMU carries the UART to a gateway's `--serial-listen`
//! address (`-serial tcp:HOST:PORT`); `host-tests/tests/qemu_device.rs` runs it that way.
//!
//! What QEMU does not have is replaced, not faked: time comes from SysTick ([`time_driver`]), the
//! LEDs are the FPGA IO block's ([`fpgaio`]), there is no temperature sensor (the telemetry has no
//! temperature), and the console is UART1 ([`console`]).
//!
//! The executor runs in an interrupt (IRQ 31, which no MPS2 device uses) while thread mode sleeps
//! in WFI: QEMU 7.2 treats the thread-mode executor's WFE as a busy yield, which would keep a
//! host core at 100 % for as long as the emulation runs.
#![no_std]
#![no_main]

mod console;
mod flash;
mod fpgaio;
mod time_driver;
mod uart;

use core::panic::PanicInfo;

use cortex_m::interrupt::InterruptNumber;
use cortex_m::peripheral::scb::VectActive;
use cortex_m::peripheral::{NVIC, SCB};
use cortex_m_rt::entry;
use defmt_rtt as _;
use embassy_executor::InterruptExecutor;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use flash::RamFlash;
use rivulet_core::files::Hex;
use rivulet_device_app::{Board, ImageEvent, device_name};
use rivulet_embassy::ota::{ImageReceiver, MAX_CHUNK};
use rivulet_embassy::{Config, Device, LinkStatus, Runner, Serial, State};
use static_cell::{ConstStaticCell, StaticCell};
use uart::Uart0;

const DEVICE_NAME: &str = device_name!("qemu");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The device interrupts this firmware uses (QEMU's hw/arm/mps2.c for the AN386).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
enum Irq {
    Uart0Rx = 0,
    Uart0Tx = 1,
    /// Unused by the board: the executor pends it to run.
    Executor = 31,
}

// SAFETY: the numbers are interrupts of the AN386 (it has 32).
unsafe impl InterruptNumber for Irq {
    fn number(self) -> u16 {
        self as u16
    }
}

/// NVIC priorities (the upper bits count): the UART above the executor, so a byte's interrupt
/// is taken even while a task runs. SysTick stays at 0, the highest.
const UART_PRIORITY: u8 = 0x40;
const EXECUTOR_PRIORITY: u8 = 0xC0;

static EXECUTOR: InterruptExecutor = InterruptExecutor::new();
/// Requests waiting for the application: also the chunks of an image in flight.
const REQUESTS: usize = 2;
/// The queues the device handle and its runner share (default capacities).
static STATE: State<CriticalSectionRawMutex, 4, REQUESTS> = State::new();

type DeviceRunner = Runner<'static, Serial<Uart0>>;

/// Keeps the link over UART0: each link an init, session resumed across links and gateways.
/// By reference from a `StaticCell`: a runner taken by value sits twice in the task's future.
#[embassy_executor::task]
async fn rivulet(runner: &'static mut DeviceRunner) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn app(device: Device<'static>, mut board: Qemu, mut images: ImageReceiver<RamFlash>) {
    match rivulet_device_app::run(&device, &mut board, &mut images, DEVICE_NAME).await {
        Ok(never) => match never {},
        Err(error) => panic!("the application cannot start: {error}"),
    }
}

/// The board as the application sees it: LED 0 of the FPGA IO block for the `led` command, LED 1
/// lit while the gateway link is up, and a console line for each; images received into RAM
/// ([`flash`]), a console line when one starts, every 16 KiB and when it is verified.
struct Qemu;

/// Console lines of an image's progress: one per this many bytes.
const PROGRESS_EVERY: u64 = 16 * 1024;

impl Board for Qemu {
    const NAME: &'static str = "qemu-mps2-an386";
    const FIRMWARE_VERSION: &'static str = VERSION;

    /// The emulated chip has no sensor.
    fn die_temperature(&mut self) -> Option<i32> {
        None
    }

    fn set_led(&mut self, on: bool) {
        fpgaio::set_led(0, on);
        console::line(format_args!("LED {}", if on { "on" } else { "off" }));
    }

    fn link_changed(&mut self, status: &LinkStatus) {
        fpgaio::set_led(1, status.connected);
        if status.connected {
            console::line(format_args!("gateway link up (link {}, session resumed: {})", status.links, status.resumed));
        } else {
            console::line(format_args!("gateway link down"));
        }
    }

    fn stack_used(&self) -> Option<u32> {
        Some(rivulet_device_app::stack::used())
    }

    fn image(&mut self, event: ImageEvent<'_>) {
        match event {
            ImageEvent::Receiving { name, size, held } => {
                console::line(format_args!("image {name}: receiving {size} bytes from byte {held}"));
            }
            ImageEvent::Progress { held, size } if held % PROGRESS_EVERY < u64::from(MAX_CHUNK) && held < size => {
                console::line(format_args!("image: {held} of {size} bytes"));
            }
            ImageEvent::Verified { name, size, sha256 } => {
                console::line(format_args!("image {name} verified: {size} bytes, SHA-256 {}", Hex(sha256)));
            }
            ImageEvent::Refused(reason) => console::line(format_args!("image request refused: {reason}")),
            ImageEvent::Progress { .. } => {}
        }
    }
}

#[entry]
fn main() -> ! {
    console::init();
    console::line(format_args!(
        "rivulet-qemu {VERSION}: device \"{DEVICE_NAME}\", protocol on UART0 (COBS + CRC frames), console on UART1"
    ));
    let Some(mut core) = cortex_m::Peripherals::take() else {
        panic!("the core peripherals were taken before main");
    };
    time_driver::init(&mut core.SYST);
    let Some(uart) = Uart0::take() else {
        panic!("UART0 was taken before main");
    };
    // SAFETY: priorities are set before the interrupts are unmasked (and before the executor
    // starts, as InterruptExecutor::start requires); nothing runs yet that they could break.
    unsafe {
        core.NVIC.set_priority(Irq::Uart0Rx, UART_PRIORITY);
        core.NVIC.set_priority(Irq::Uart0Tx, UART_PRIORITY);
        core.NVIC.set_priority(Irq::Executor, EXECUTOR_PRIORITY);
        NVIC::unmask(Irq::Uart0Rx);
        NVIC::unmask(Irq::Uart0Tx);
    }
    let spawner = EXECUTOR.start(Irq::Executor);

    // The link's frame buffers, 1 KiB each as on the board.
    static BUFFERS: StaticCell<[[u8; 1024]; 2]> = StaticCell::new();
    let [rx, tx] = BUFFERS.init([[0; 1024]; 2]);
    // No RNG on the MPS2: the reconnect jitter is seeded from the name, so devices with
    // different names still spread out after a gateway restart.
    let config = Config { seed: fnv1a(DEVICE_NAME.as_bytes()), ..Config::new(DEVICE_NAME) };
    #[cfg(feature = "login")]
    let config = Config { token: rivulet_device_app::device_token!(), ..config };
    let (device, runner) = rivulet_embassy::new(&STATE, config, Serial::new(uart), rx, tx);
    console::line(format_args!("booted; linking to the gateway over UART0"));
    static RUNNER: StaticCell<DeviceRunner> = StaticCell::new();
    // Zeroed (in .bss, not on the stack nor in the image); RamFlash erases it.
    static IMAGES: ConstStaticCell<[u8; flash::CAPACITY]> = ConstStaticCell::new([0; flash::CAPACITY]);
    // The request queue's length: chunks a sender may have in flight.
    let images = ImageReceiver::new(RamFlash::new(IMAGES.take()), REQUESTS as u16);
    match (rivulet(RUNNER.init(runner)), app(device, Qemu, images)) {
        (Ok(rivulet), Ok(app)) => {
            spawner.spawn(rivulet);
            spawner.spawn(app);
        }
        _ => panic!("the tasks were spawned twice"),
    }
    loop {
        // Sleeps until an interrupt; the tasks run in the executor's.
        cortex_m::asm::wfi();
    }
}

/// The device part of the vector table (no PAC provides one): all 32 AN386 interrupts go to one
/// handler, which looks at the active vector.
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
static __INTERRUPTS: [unsafe extern "C" fn(); 32] = [device_interrupt; 32];

unsafe extern "C" fn device_interrupt() {
    match SCB::vect_active() {
        VectActive::Interrupt { irqn }
            if u16::from(irqn) == Irq::Uart0Rx as u16 || u16::from(irqn) == Irq::Uart0Tx as u16 =>
        {
            uart::on_interrupt();
        }
        // SAFETY: this is the executor's interrupt, which only fires after `start`.
        VectActive::Interrupt { irqn } if u16::from(irqn) == Irq::Executor as u16 => unsafe { EXECUTOR.on_interrupt() },
        // Nothing else is unmasked.
        _ => {}
    }
}

/// 64-bit FNV-1a: a seed from the device name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

/// Prints the panic on the console, then stops everything: SysTick and every device interrupt
/// off, so QEMU idles in WFI until the test (or a person) ends it.
#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    cortex_m::interrupt::disable();
    console::line(format_args!("panicked: {info}"));
    // SAFETY: nothing runs any more; stopping the timer and masking interrupts cannot break it.
    unsafe {
        let syst = &*cortex_m::peripheral::SYST::PTR;
        syst.csr.write(0);
        let nvic = &*NVIC::PTR;
        nvic.icer[0].write(u32::MAX);
    }
    loop {
        cortex_m::asm::wfi();
    }
}
