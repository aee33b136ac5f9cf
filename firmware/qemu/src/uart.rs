//! The CMSDK APB UART of the MPS2 boards (Arm DDI 0479C §4.3; QEMU's hw/char/cmsdk-apb-uart.c),
//! as `embedded_io_async::{Read, Write}` for `rivulet_embassy::Serial`. Not a PL011: five
//! registers, a one-byte buffer each way, and separate RX and TX interrupts.
//!
//! Reads and writes move bytes straight between the data register and the caller's buffer, in
//! the poll that completes: a cancelled read or write has taken or sent nothing, which the
//! runner needs (it races reads against the application's calls). No bytes are lost in between:
//! QEMU accepts the next byte from its backend only once the guest read the last one.

use core::convert::Infallible;
use core::future::poll_fn;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Poll;

use embassy_sync::waitqueue::AtomicWaker;

/// Register offsets and bits.
const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const INTSTATUS: usize = 0x0C;
const BAUDDIV: usize = 0x10;
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_ENABLE: u32 = 1 << 0;
const CTRL_RX_ENABLE: u32 = 1 << 1;
const CTRL_TX_INTERRUPT: u32 = 1 << 2;
const CTRL_RX_INTERRUPT: u32 = 1 << 3;
const INT_TX: u32 = 1 << 0;
const INT_RX: u32 = 1 << 1;
/// The smallest divider the UART allows (QEMU ignores the TX enable below it): 25 MHz / 16. QEMU
/// does not pace the bytes, so the rate only matters on real MPS2 hardware.
const MIN_BAUDDIV: u32 = 16;

/// UART0, the protocol's line, at 0x4000_4000; its RX interrupt is IRQ 0, TX IRQ 1.
const UART0: usize = 0x4000_4000;
/// UART1, the console, at 0x4000_5000 (written by polling, no interrupts).
pub const UART1: usize = 0x4000_5000;

fn read(base: usize, offset: usize) -> u32 {
    // SAFETY: `base` is one of the UARTs above, `offset` one of their registers: aligned MMIO.
    unsafe { ((base + offset) as *const u32).read_volatile() }
}

fn write(base: usize, offset: usize, value: u32) {
    // SAFETY: as in `read`.
    unsafe { ((base + offset) as *mut u32).write_volatile(value) }
}

/// Enables a UART's transmitter (and receiver), at the smallest divider; `interrupts` turns on
/// the RX and TX interrupts.
pub fn enable(base: usize, receive: bool, interrupts: bool) {
    write(base, BAUDDIV, MIN_BAUDDIV);
    let mut ctrl = CTRL_TX_ENABLE;
    if receive {
        ctrl |= CTRL_RX_ENABLE;
    }
    if interrupts {
        ctrl |= CTRL_TX_INTERRUPT | CTRL_RX_INTERRUPT;
    }
    write(base, CTRL, ctrl);
}

/// Sends one byte by polling; gives up after `spins` tries if the line stays full (a console
/// must never hang the firmware). Returns whether it went.
pub fn write_blocking(base: usize, byte: u8, spins: u32) -> bool {
    for _ in 0..spins {
        if read(base, STATE) & STATE_TX_FULL == 0 {
            write(base, DATA, u32::from(byte));
            return true;
        }
    }
    false
}

static RX_WAKER: AtomicWaker = AtomicWaker::new();
static TX_WAKER: AtomicWaker = AtomicWaker::new();
static TAKEN: AtomicBool = AtomicBool::new(false);

/// UART0 with interrupts, the only handle to it.
#[derive(Debug)]
pub struct Uart0 {
    _private: (),
}

impl Uart0 {
    /// Enables UART0 and returns its handle; `None` after the first call. Unmask IRQs 0 and 1
    /// and call [`on_interrupt`] from both.
    pub fn take() -> Option<Uart0> {
        if TAKEN.swap(true, Ordering::AcqRel) {
            return None;
        }
        enable(UART0, true, true);
        Some(Uart0 { _private: () })
    }
}

/// UART0's RX or TX interrupt: a byte arrived, or the transmit buffer emptied. Clears the cause
/// and wakes the task waiting for it; the task moves the bytes itself.
pub fn on_interrupt() {
    let pending = read(UART0, INTSTATUS) & (INT_TX | INT_RX);
    write(UART0, INTSTATUS, pending);
    if pending & INT_RX != 0 {
        RX_WAKER.wake();
    }
    if pending & INT_TX != 0 {
        TX_WAKER.wake();
    }
}

impl embedded_io_async::ErrorType for Uart0 {
    type Error = Infallible;
}

impl embedded_io_async::Read for Uart0 {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        poll_fn(|cx| {
            // Registered before looking, so a byte arriving in between still wakes us.
            RX_WAKER.register(cx.waker());
            let mut n = 0;
            for slot in buf.iter_mut() {
                if read(UART0, STATE) & STATE_RX_FULL == 0 {
                    break;
                }
                *slot = read(UART0, DATA) as u8;
                n += 1;
            }
            if n > 0 { Poll::Ready(Ok(n)) } else { Poll::Pending }
        })
        .await
    }
}

impl embedded_io_async::Write for Uart0 {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        poll_fn(|cx| {
            TX_WAKER.register(cx.waker());
            let mut n = 0;
            for byte in buf {
                if read(UART0, STATE) & STATE_TX_FULL != 0 {
                    break;
                }
                write(UART0, DATA, u32::from(*byte));
                n += 1;
            }
            if n > 0 { Poll::Ready(Ok(n)) } else { Poll::Pending }
        })
        .await
    }

    async fn flush(&mut self) -> Result<(), Infallible> {
        poll_fn(|cx| {
            TX_WAKER.register(cx.waker());
            if read(UART0, STATE) & STATE_TX_FULL == 0 { Poll::Ready(Ok(())) } else { Poll::Pending }
        })
        .await
    }
}
