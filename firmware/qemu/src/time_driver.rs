//! embassy-time on the Cortex-M SysTick, for QEMU's mps2-an386 (which has no embassy HAL).
//!
//! The tick rate is the workspace's one, 32 768 Hz (`tick-hz-32_768`, chosen for the STM32's
//! timer). QEMU clocks the core, and so SysTick, at 25 MHz, which 32 768 does not divide; so
//! SysTick does not count ticks. It interrupts every [`CYCLES_PER_PERIOD`] core cycles (1 kHz),
//! the driver counts those periods, and `now` converts the cycles elapsed (periods plus what the
//! counter has run down in the current one) into ticks exactly. Timers fire at the first SysTick
//! interrupt at or after their deadline: up to 1 ms late, which nothing here minds.

use core::cell::{Cell, RefCell};
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{SCB, SYST};
use cortex_m_rt::exception;
use critical_section::{CriticalSection, Mutex};
use embassy_time_driver::{Driver, TICK_HZ};
use embassy_time_queue_utils::Queue;

/// The core clock of QEMU's MPS2 boards (hw/arm/mps2.c `SYSCLK_FRQ`).
const CORE_HZ: u64 = 25_000_000;
/// SysTick interrupts at 1 kHz: often enough for timers, rare enough to cost QEMU nothing.
const CYCLES_PER_PERIOD: u32 = 25_000;

struct SysTickDriver {
    /// SysTick periods completed (interrupts taken).
    periods: Mutex<Cell<u64>>,
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    periods: Mutex::new(Cell::new(0)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

/// Starts SysTick on the core clock. Call once at boot, before anything waits on time.
pub fn init(syst: &mut SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CYCLES_PER_PERIOD - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

impl SysTickDriver {
    fn now_in(&self, cs: CriticalSection<'_>) -> u64 {
        let mut periods = self.periods.borrow(cs).get();
        let mut current = SYST::get_current();
        // With interrupts off, a wrap since the last interrupt shows as a pending SysTick: count
        // that period, and read the counter again in case it wrapped after the first read.
        if SCB::is_pendst_pending() {
            periods += 1;
            current = SYST::get_current();
        }
        let cycles = periods * u64::from(CYCLES_PER_PERIOD)
            + u64::from(CYCLES_PER_PERIOD - 1 - current.min(CYCLES_PER_PERIOD - 1));
        // cycles * TICK_HZ / CORE_HZ, split so that nothing overflows for 2^64 cycles.
        cycles / CORE_HZ * TICK_HZ + cycles % CORE_HZ * TICK_HZ / CORE_HZ
    }
}

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.now_in(cs))
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut queue = self.queue.borrow_ref_mut(cs);
            // A deadline already passed wakes at once; later ones wait for a SysTick interrupt.
            if queue.schedule_wake(at, waker) {
                queue.next_expiration(self.now_in(cs));
            }
        })
    }
}

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let periods = DRIVER.periods.borrow(cs);
        periods.set(periods.get() + 1);
        let now = DRIVER.now_in(cs);
        // Wakes every timer due by now; the next deadline needs nothing more, since SysTick
        // comes back every millisecond anyway.
        DRIVER.queue.borrow_ref_mut(cs).next_expiration(now);
    });
}
