//! Raw connections: bytes the core's client would never send, and the answers to them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rivulet_core::session::{self, ClientConfig, ClientEvent};
use rivulet_core::wire::{FrameDecoder, FrameWriter, Framing, StreamDecoder, varint};
use rivulet_tokio::{Client, ClientOptions, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::gateway::within;
use crate::steady::{numbered, stored_numbers};

/// The gateway's keepalive: it is not a setting, the core's `ServerConfig` default (20 s).
/// A link is dead after twice this without a whole packet.
pub(crate) const GATEWAY_KEEPALIVE: Duration = Duration::from_secs(20);

/// xorshift64*: random garbage, the same on every run.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A stream length prefix for a body of `len` bytes.
pub(crate) fn prefix(len: u64) -> Vec<u8> {
    let mut buf = [0u8; varint::MAX_LEN];
    let used = varint::encode(len, &mut buf).expect("a u64 fits ten bytes");
    buf[..used].to_vec()
}

/// `frames` frames with a valid-looking length prefix (1 to 1000) and a random body each.
pub(crate) fn junk_frames(rng: &mut Rng, frames: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for _ in 0..frames {
        let len = 1 + rng.below(1000);
        bytes.extend(prefix(len));
        bytes.extend(rng.bytes(len as usize));
    }
    bytes
}

/// A core client machine named `name` on a fresh link, and the init frame it sends first (which
/// proposes the gateway's own keepalive).
pub(crate) fn client_machine(name: &str) -> (session::Client<'_>, Vec<u8>) {
    client_machine_with(name, rivulet_core::time::Duration::from_secs(GATEWAY_KEEPALIVE.as_secs()))
}

/// [`client_machine`] proposing `keepalive`.
pub(crate) fn client_machine_with(
    name: &str,
    keepalive: rivulet_core::time::Duration,
) -> (session::Client<'_>, Vec<u8>) {
    let config = ClientConfig { keepalive, ..ClientConfig::new(name) };
    let mut machine = session::Client::new(config, [0; 1024]);
    let now = rivulet_core::time::Instant::ZERO;
    machine.link_up(now);
    let mut buf = vec![0u8; name.len() + 512];
    let mut out = FrameWriter::new(&mut buf, Framing::Stream);
    machine.poll_transmit(now, &mut out).expect("an init fits its name and 512 bytes");
    let init = out.pending().to_vec();
    (machine, init)
}

/// The valid init frame of a client named `name`.
pub(crate) fn init_frame(name: &str) -> Vec<u8> {
    client_machine(name).1
}

/// How the gateway answered a raw connection's init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    Accepted,
    /// Asked to log in (the gateway has clients configured).
    Challenged,
    Refused(String),
    /// Closed (or reset) without an answer.
    Closed,
}

/// The gateway's answer to `name`'s init in the bytes `received` so far, if it is there: the
/// core client reads them as it would on a real link.
pub(crate) fn answer_in(name: &str, received: &[u8]) -> Option<Answer> {
    let (mut machine, _) = client_machine(name);
    let mut storage = vec![0u8; received.len().max(1) + varint::MAX_LEN];
    let mut decoder = StreamDecoder::new(&mut storage);
    decoder.push(received);
    while let Ok(Some(body)) = decoder.next_body() {
        match machine.handle(rivulet_core::time::Instant::ZERO, body) {
            Ok(Some(ClientEvent::Connected { .. })) => return Some(Answer::Accepted),
            Ok(Some(ClientEvent::Challenge { .. })) => return Some(Answer::Challenged),
            Ok(Some(ClientEvent::Refused { reason })) => return Some(Answer::Refused(reason.to_string())),
            _ => {}
        }
    }
    None
}

/// Reads until the gateway has answered `name`'s init (or closed the connection).
pub(crate) async fn read_answer(stream: &mut TcpStream, name: &str) -> Answer {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match within("the init's answer", stream.read(&mut chunk)).await {
            Ok(0) | Err(_) => return Answer::Closed,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
        if let Some(answer) = answer_in(name, &received) {
            return answer;
        }
    }
}

/// Sends a valid init of `name` at once on `stream` and reads the answer.
pub(crate) async fn init_on(stream: &mut TcpStream, name: &str) -> Answer {
    match stream.write_all(&init_frame(name)).await {
        Ok(()) => read_answer(stream, name).await,
        Err(_) => Answer::Closed,
    }
}

/// Connects, sends a valid init of `name` at once, and reads the answer.
pub(crate) async fn raw_init(addr: SocketAddr, name: &str) -> (TcpStream, Answer) {
    let mut stream = TcpStream::connect(addr).await.expect("a TCP connection");
    let answer = init_on(&mut stream, name).await;
    (stream, answer)
}

/// Opens `n` connections, then sends all their inits at once (named `PREFIX-i`) and returns the
/// streams with the answers.
pub(crate) async fn inits_together(addr: SocketAddr, prefix: &str, n: usize) -> Vec<(TcpStream, Answer)> {
    let together = Arc::new(tokio::sync::Barrier::new(n));
    let mut connecting = JoinSet::new();
    for i in 0..n {
        let (together, name) = (together.clone(), format!("{prefix}-{i}"));
        connecting.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("a TCP connection");
            together.wait().await;
            let answer = init_on(&mut stream, &name).await;
            (stream, answer)
        });
    }
    let mut answered = Vec::new();
    while let Some(connection) = connecting.join_next().await {
        answered.push(connection.expect("a connection"));
    }
    answered
}

/// Sends `bytes` (as far as the gateway takes them) and reads until the gateway closes the
/// connection; fails the test if it never does.
pub(crate) async fn send_until_closed(stream: &mut TcpStream, bytes: &[u8]) {
    // A write fails once the gateway has closed (reset): that is the expected end.
    let _ = stream.write_all(bytes).await;
    let mut sink = [0u8; 4096];
    within("the gateway closes the connection", async { while let Ok(1..) = stream.read(&mut sink).await {} }).await;
}

/// A client that registers `count` events of `ty` and waits until all are stored.
pub(crate) async fn register_all(client: &Client, ty: &str, count: u64) {
    let mut last = None;
    for n in 0..count {
        last = Some(within("register", client.register(numbered(ty, n))).await.expect("register"));
    }
    if let Some(last) = last {
        within("registered", client.registered(last)).await.expect("stored");
    }
}

/// Connects a new client, registers a few events and closes it: nobody is holding new clients up.
pub(crate) async fn a_new_client_gets_through(addr: SocketAddr, name: &str) {
    let (client, _) = within("a new client", connect(addr, ClientOptions::new(name))).await.expect("connect");
    register_all(&client, &format!("new/{name}"), 5).await;
    assert_eq!(stored_numbers(&client, &format!("new/{name}"), 1000).await, vec![0, 1, 2, 3, 4]);
    client.close().await;
}
