//! A Kelvin stream client: the SDK's `KelvinStream` (kelvin-python-sdk 0.5.0) for Rust apps, so
//! they talk to a Kelvin platform (or a gateway's Kelvin listener) as Python apps do: TCP to
//! `KELVIN_STREAM_IP:KELVIN_STREAM_PORT` (default `127.0.0.1:49167`), one JSON message per line,
//! lines up to `KELVIN_STREAM_LIMIT` bytes (default 4 MiB). The messages are the core's
//! (`rivulet_core::kelvin`, docs/KELVIN.md).
//!
//! Like the SDK's stream it does not reconnect: [`KelvinStream::read`] fails with
//! [`KelvinError::ConnectionLost`] at the end, and the app connects again. A line that is not a
//! valid message is [`KelvinError::Invalid`] and the stream goes on (the SDK raises there too);
//! a line over the limit ends the stream.

use std::time::{SystemTime, UNIX_EPOCH};

use rivulet_core::kelvin::Error;
use rivulet_core::kelvin::line::{DEFAULT_LIMIT, LineDecoder};
use rivulet_core::kelvin::message::{Defaults, Message, Uuid};
use rivulet_core::model::Timestamp;
use rivulet_core::wire::FrameDecoder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The SDK's defaults: `127.0.0.1:49167`, 4 MiB lines.
pub const DEFAULT_IP: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 49167;

/// Where the stream is and how long a line may be (the SDK's `KelvinStreamConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KelvinConfig {
    pub ip: String,
    pub port: u16,
    pub limit: usize,
}

impl Default for KelvinConfig {
    fn default() -> Self {
        KelvinConfig { ip: DEFAULT_IP.to_string(), port: DEFAULT_PORT, limit: DEFAULT_LIMIT }
    }
}

impl KelvinConfig {
    /// The defaults, overridden by `KELVIN_STREAM_IP`, `KELVIN_STREAM_PORT` and
    /// `KELVIN_STREAM_LIMIT` as the SDK reads them.
    pub fn from_env() -> Result<Self, KelvinError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, KelvinError> {
        let mut config = KelvinConfig::default();
        if let Some(ip) = var("KELVIN_STREAM_IP") {
            config.ip = ip;
        }
        if let Some(port) = var("KELVIN_STREAM_PORT") {
            config.port = number("KELVIN_STREAM_PORT", port)?;
        }
        if let Some(limit) = var("KELVIN_STREAM_LIMIT") {
            config.limit = number("KELVIN_STREAM_LIMIT", limit)?;
        }
        Ok(config)
    }
}

fn number<T: std::str::FromStr>(name: &'static str, text: String) -> Result<T, KelvinError> {
    text.trim().parse().map_err(|_| KelvinError::Config(name, text))
}

/// Why a Kelvin stream call failed.
#[derive(Debug)]
pub enum KelvinError {
    /// An environment variable that does not hold what it should: its name and value.
    Config(&'static str, String),
    /// The peer closed the stream (the SDK's `ConnectionError("connection lost")`), or an earlier
    /// error ended it.
    ConnectionLost,
    /// A line that is no valid message; the stream goes on.
    Invalid(Error),
    /// A line over the limit: the stream has lost its place and is closed.
    Oversize,
    /// A message that cannot be written (a `data`/`parameter` message without a payload).
    Unwritable(Error),
    Io(std::io::Error),
}

impl std::fmt::Display for KelvinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KelvinError::Config(name, value) => write!(f, "{name}={value:?} is not a number"),
            KelvinError::ConnectionLost => f.write_str("connection lost"),
            KelvinError::Invalid(e) => write!(f, "invalid message: {e}"),
            KelvinError::Oversize => f.write_str("a line longer than the stream's limit"),
            KelvinError::Unwritable(e) => write!(f, "cannot write the message: {e}"),
            KelvinError::Io(e) => write!(f, "i/o: {e}"),
        }
    }
}

impl std::error::Error for KelvinError {}

/// Messages read ahead of the app: beyond them the reader stops reading the socket.
const READ_AHEAD: usize = 64;

/// A connected Kelvin stream. A task reads lines ahead (up to 64 messages) while the app works.
pub struct KelvinStream {
    messages: mpsc::Receiver<Result<Message, KelvinError>>,
    writer: Box<dyn AsyncWrite + Unpin + Send>,
    reader: JoinHandle<()>,
}

impl std::fmt::Debug for KelvinStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KelvinStream").finish_non_exhaustive()
    }
}

impl KelvinStream {
    /// Connects over TCP as the SDK's `KelvinStream.connect()` does.
    pub async fn connect(config: &KelvinConfig) -> Result<Self, KelvinError> {
        let stream =
            tokio::net::TcpStream::connect((config.ip.as_str(), config.port)).await.map_err(KelvinError::Io)?;
        let _ = stream.set_nodelay(true);
        Ok(KelvinStream::over(stream, config.limit))
    }

    /// A stream over an open connection, taking lines of up to `limit` bytes.
    pub fn over<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S, limit: usize) -> Self {
        let (read, writer) = tokio::io::split(stream);
        let (tx, messages) = mpsc::channel(READ_AHEAD);
        let reader = tokio::spawn(read_lines(read, limit, tx));
        KelvinStream { messages, writer: Box::new(writer), reader }
    }

    /// The next message. A message without an `id` or `timestamp` gets a new one and the time
    /// now, as the SDK's `Message` does.
    pub async fn read(&mut self) -> Result<Message, KelvinError> {
        self.messages.recv().await.unwrap_or(Err(KelvinError::ConnectionLost))
    }

    /// Writes one message and its `\n`, as the SDK's `write()` does.
    pub async fn write(&mut self, message: &Message) -> Result<(), KelvinError> {
        let line = message.to_line().map_err(KelvinError::Unwritable)?;
        self.writer.write_all(line.as_bytes()).await.map_err(KelvinError::Io)
    }

    /// Closes the stream.
    pub async fn disconnect(mut self) {
        let _ = self.writer.shutdown().await;
        self.reader.abort();
    }
}

/// Reads lines into messages until the stream ends, an error ends it, or nobody reads.
async fn read_lines(
    mut read: impl AsyncRead + Unpin,
    limit: usize,
    messages: mpsc::Sender<Result<Message, KelvinError>>,
) {
    let mut rx = vec![0u8; limit.saturating_add(1)];
    let mut decoder = LineDecoder::new(&mut rx, limit);
    loop {
        loop {
            let message = match decoder.next_frame() {
                Ok(Some(range)) => Message::parse(decoder.frame(range), defaults()).map_err(KelvinError::Invalid),
                Ok(None) => break,
                Err(_) => {
                    let _ = messages.send(Err(KelvinError::Oversize)).await;
                    return;
                }
            };
            if messages.send(message).await.is_err() {
                return;
            }
        }
        match read.read(decoder.read_buffer()).await {
            Ok(0) => return,
            Ok(n) => decoder.commit(n),
            Err(e) => {
                let _ = messages.send(Err(KelvinError::Io(e))).await;
                return;
            }
        }
    }
}

/// A new message id and the time now, for what a line leaves out.
pub fn defaults() -> Defaults {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let now = Timestamp { s: i64::try_from(now.as_secs()).unwrap_or(i64::MAX), us: now.subsec_micros() };
    Defaults { id: new_id(), now }
}

/// A random (version 4) UUID, from the std hasher's per-process random keys and a counter.
pub fn new_id() -> Uuid {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let mut bytes = [0u8; 16];
    for (i, half) in bytes.chunks_mut(8).enumerate() {
        let mut hasher = state.build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_usize(i);
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rivulet_core::kelvin::msg_type::{MsgType, Primitive};
    use tokio::io::AsyncBufReadExt;

    #[test]
    fn the_environment_overrides_the_defaults_as_the_sdk_reads_it() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(KelvinConfig::from_vars(vars(&[])).unwrap(), KelvinConfig::default());
        let set = KelvinConfig::from_vars(vars(&[
            ("KELVIN_STREAM_IP", "10.0.0.2"),
            ("KELVIN_STREAM_PORT", "5000"),
            ("KELVIN_STREAM_LIMIT", "1024"),
        ]));
        assert_eq!(set.unwrap(), KelvinConfig { ip: "10.0.0.2".into(), port: 5000, limit: 1024 });
        let bad = KelvinConfig::from_vars(vars(&[("KELVIN_STREAM_PORT", "x")]));
        assert!(matches!(bad, Err(KelvinError::Config("KELVIN_STREAM_PORT", _))));
    }

    #[test]
    fn new_ids_are_version_4_and_differ() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert_eq!(a.0[6] >> 4, 4);
        assert_eq!(a.0[8] >> 6, 0b10);
    }

    #[tokio::test]
    async fn lines_both_ways_a_bad_one_skipped_and_an_oversize_one_ends_it() {
        let (ours, theirs) = tokio::io::duplex(4096);
        let mut stream = KelvinStream::over(ours, 300);
        let (read, mut write) = tokio::io::split(theirs);
        let mut lines = tokio::io::BufReader::new(read).lines();

        let mut message =
            Message::new(MsgType::data(Primitive::Number), new_id(), Timestamp { s: 1_704_164_645, us: 0 });
        message.payload = Some("21.5".into());
        stream.write(&message).await.unwrap();
        let written = lines.next_line().await.unwrap().unwrap();
        assert!(
            written.starts_with(r#"{"type":"data;pt=number","id":""#)
                && written.ends_with(r#""timestamp":"2024-01-02T03:04:05.000000Z","payload":21.5}"#),
            "{written}"
        );

        write.write_all(b"not json\n").await.unwrap();
        write.write_all(written.as_bytes()).await.unwrap();
        write.write_all(b"\n").await.unwrap();
        assert!(matches!(stream.read().await, Err(KelvinError::Invalid(Error::Json))));
        assert_eq!(stream.read().await.unwrap(), message, "the stream goes on after a bad line");

        write.write_all(&[b'x'; 301]).await.unwrap();
        assert!(matches!(stream.read().await, Err(KelvinError::Oversize)));
        assert!(matches!(stream.read().await, Err(KelvinError::ConnectionLost)));

        let mut empty = Message::new(MsgType::data(Primitive::Number), new_id(), Timestamp { s: 0, us: 0 });
        empty.payload = None;
        assert!(matches!(stream.write(&empty).await, Err(KelvinError::Unwritable(Error::Payload))));
    }
}
