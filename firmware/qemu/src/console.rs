//! The firmware's console: text lines on UART1 (QEMU's second `-serial`), for people and for the
//! QEMU test. The protocol's own log goes through defmt into the RTT buffer in RAM, which a
//! debugger attached to QEMU (`-s`) can read; these lines need nothing but a terminal.

use core::fmt::{self, Write};

use crate::uart;

/// Polls per byte before a stuck console line is given up on.
const SPINS: u32 = 100_000;

/// Turns the console's transmitter on (no receiver, no interrupts).
pub fn init() {
    uart::enable(uart::UART1, false, false);
}

struct Console;

impl Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            if !uart::write_blocking(uart::UART1, byte, SPINS) {
                return Err(fmt::Error);
            }
        }
        Ok(())
    }
}

/// Writes one line, whole even if an interrupt handler writes too. A line the console cannot
/// take (its backend stalled) is dropped, never waited for.
pub fn line(args: fmt::Arguments<'_>) {
    critical_section::with(|_| {
        let _ = Console.write_fmt(format_args!("{args}\n"));
    });
}
