//! The log on stderr: one line per event, whatever a peer put into the strings it logs.
//!
//! Client names, event types, reasons and addresses come from peers; a newline in one would start
//! a forged log line, an escape sequence would drive the operator's terminal. So every field
//! value, the message included, is written with its control characters escaped (`\n`, `\u{1b}`),
//! here, once, for every front-end and every library that logs. Colours only on a terminal (and
//! not with `NO_COLOR`): a log file gets plain text.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Installs the stderr log: `RUST_LOG` picks what is logged (default `info`); the `log` lines of
/// the libraries come along.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .fmt_fields(EscapedFields)
        .init();
}

/// Fields as `tracing_subscriber`'s default writes them (the message bare, the others
/// `name=value`, separated by spaces, the `log.*` fields of `log` records left out), with
/// control characters escaped.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Visitor { out: Escaping(writer), first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'w> {
    out: Escaping<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // As the default formatter: a string field quoted, the message not.
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let separator = if std::mem::take(&mut self.first) { "" } else { " " };
        self.result = if field.name() == "message" {
            write!(self.out, "{separator}{value:?}")
        } else {
            write!(self.out, "{separator}{}={value:?}", field.name())
        };
    }
}

/// A writer that escapes control characters (`char::escape_default`) and passes the rest on.
struct Escaping<'w>(Writer<'w>);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(char::is_control) {
            let (plain, control) = rest.split_at(at);
            self.0.write_str(plain)?;
            let mut chars = control.chars();
            if let Some(c) = chars.next() {
                write!(self.0, "{}", c.escape_default())?;
            }
            rest = chars.as_str();
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one event's fields look like through [`EscapedFields`].
    fn formatted(record: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_level(false)
            .fmt_fields(EscapedFields)
            .finish();
        tracing::subscriber::with_default(subscriber, record);
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_newline_or_an_escape_from_a_peer_stays_on_its_line() {
        let name = "x\nERROR rivulet: forged \u{1b}[31mred";
        let line = formatted(|| tracing::info!(client = %name, "init refused: {name}"));
        assert_eq!(
            line,
            "init refused: x\\nERROR rivulet: forged \\u{1b}[31mred client=x\\nERROR rivulet: forged \\u{1b}[31mred\n"
        );
    }

    #[test]
    fn plain_fields_look_as_the_default_formatter_writes_them() {
        let line = formatted(|| tracing::info!(peer = "127.0.0.1:9", n = 3, "accepted {}", "ok"));
        assert_eq!(line, "accepted ok peer=\"127.0.0.1:9\" n=3\n");
    }
}
