//! Lines on stdout that never take the process down: `println!` panics when stdout is a closed
//! pipe (a supervisor that stopped reading, `rivulet sub ... | head -1`). The gateway carries on
//! without its stdout; a CLI command stops printing and ends normally.

use std::io::Write;

/// Writes one line to stdout; false when stdout is gone (the caller may stop printing).
pub fn line(text: std::fmt::Arguments<'_>) -> bool {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").and_then(|()| stdout.flush()).is_ok()
}

/// `out!("...", args)`: [`line`] with `format!` syntax.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}
