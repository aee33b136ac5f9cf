//! Plain cs.packetstream calls, wire-compatible with the Python `PacketConnection`: submit a
//! request (type, flags, payload) and await `(flags, payload)` or the peer's reason; serve request
//! types with a handler. The protocol is the core's [`PacketEndpoint`]; this is its task.

use std::collections::HashMap;
use std::sync::Arc;

use embedded_io_adapters::tokio_1::FromTokio;
use rivulet_core::driver::{Clock, Driver, DriverError, write_with_room};
use rivulet_core::packetstream::{EndpointConfig, PacketEndpoint, PacketEvent};
use rivulet_core::session::{self, Incoming, RequestError, RequestId};
use rivulet_core::wire::{FrameWriter, Framing, StreamDecoder};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::link::{self, LinkError, TokioClock, WriteError};

/// Our requests awaiting answers per connection; further calls wait for room.
pub const MAX_CALLS_IN_FLIGHT: usize = 256;
/// The peer's requests being handled per connection; more are refused ("too many requests in
/// flight") until some are answered.
pub const MAX_REQUESTS_HANDLED: usize = 256;

type Endpoint = PacketEndpoint<MAX_CALLS_IN_FLIGHT, MAX_REQUESTS_HANDLED>;

/// How a packet connection is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketConfig {
    /// Largest packet body either way. Each connection holds two buffers of this size (pages of
    /// them untouched stay unallocated); the default takes 1 MiB payloads with room to spare.
    pub max_packet: usize,
    /// A call unanswered this long fails with [`CallError::TimedOut`]; `None` waits as long as
    /// the connection lives (cs.packetstream's behaviour).
    pub request_timeout: Option<std::time::Duration>,
}

impl Default for PacketConfig {
    fn default() -> Self {
        PacketConfig { max_packet: 2 << 20, request_timeout: Some(std::time::Duration::from_secs(30)) }
    }
}

/// A request of the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketRequest {
    pub rq_type: u64,
    pub flags: u64,
    pub payload: Vec<u8>,
}

/// A successful answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketReply {
    pub flags: u64,
    pub payload: Vec<u8>,
}

impl PacketReply {
    pub fn new(flags: u64, payload: impl Into<Vec<u8>>) -> Self {
        PacketReply { flags, payload: payload.into() }
    }
}

/// Why a call got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The peer answered with a failure and this reason.
    Refused(String),
    TimedOut,
    /// The connection ended before an answer came.
    Disconnected,
    /// The request does not fit in a packet of `max_packet` bytes.
    TooLarge,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Refused(reason) => write!(f, "refused by the peer: {reason}"),
            CallError::TimedOut => f.write_str("no answer in time"),
            CallError::Disconnected => f.write_str("connection ended before the answer"),
            CallError::TooLarge => f.write_str("request larger than max_packet"),
        }
    }
}

impl std::error::Error for CallError {}

impl From<RequestError<'_>> for CallError {
    fn from(error: RequestError<'_>) -> Self {
        match error {
            RequestError::Refused(reason) => CallError::Refused(reason.into()),
            RequestError::TimedOut => CallError::TimedOut,
            RequestError::Disconnected => CallError::Disconnected,
        }
    }
}

/// Serves the peer's requests. A returned `Err` is sent as the failure reason; a handler that
/// panics is answered with "exception during handler", as cs.packetstream does.
pub trait PacketHandler: Send + Sync + 'static {
    fn handle(&self, request: PacketRequest) -> impl Future<Output = Result<PacketReply, String>> + Send;
}

impl<F, Fut> PacketHandler for F
where
    F: Fn(PacketRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<PacketReply, String>> + Send,
{
    fn handle(&self, request: PacketRequest) -> impl Future<Output = Result<PacketReply, String>> + Send {
        self(request)
    }
}

/// A handler for connections that serve nothing: every request is refused with
/// "no request handler", as a `PacketConnection` without one does.
#[derive(Debug, Clone, Copy)]
pub struct NoHandler;

impl PacketHandler for NoHandler {
    async fn handle(&self, _request: PacketRequest) -> Result<PacketReply, String> {
        Err("no request handler".into())
    }
}

enum Command {
    Call { rq_type: u64, flags: u64, payload: Vec<u8>, reply: oneshot::Sender<Result<PacketReply, CallError>> },
    Close,
}

/// One cs.packetstream connection. Calls may be made from many tasks at once (the handle is
/// cheap to share by reference); answers match by tag in whatever order they come.
#[derive(Debug)]
pub struct PacketConnection {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<Result<(), LinkError>>,
}

impl PacketConnection {
    /// Connects over TCP; requests of the peer are refused.
    pub async fn connect(addr: impl ToSocketAddrs, config: PacketConfig) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self::new(stream, config, NoHandler))
    }

    /// Runs a connection over any byte stream, serving the peer's requests with `handler`.
    pub fn new<T, H>(io: T, config: PacketConfig, handler: H) -> Self
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: PacketHandler,
    {
        let (commands, command_rx) = mpsc::channel(64);
        let task = tokio::spawn(run(io, config, Arc::new(handler), command_rx));
        PacketConnection { commands, task }
    }

    /// Sends a request of user type `rq_type` and waits for its answer.
    pub async fn call(&self, rq_type: u64, flags: u64, payload: impl Into<Vec<u8>>) -> Result<PacketReply, CallError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Call { rq_type, flags, payload: payload.into(), reply };
        self.commands.send(command).await.map_err(|_| CallError::Disconnected)?;
        answer.await.unwrap_or(Err(CallError::Disconnected))
    }

    /// Closes gracefully: ERQ now, EOF once the peer's requests are answered, then waits for the
    /// peer's EOF. Calls still open get their answers until then.
    pub async fn close(self) -> Result<(), LinkError> {
        let _ = self.commands.send(Command::Close).await;
        self.finished().await
    }

    /// Waits until the connection ends (the peer closed it, or it broke).
    pub async fn finished(self) -> Result<(), LinkError> {
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(DriverError::Io(std::io::Error::other(join))),
        }
    }
}

/// Accepts connections and serves each with `handler` until the peer closes it. Runs until the
/// listener fails; one connection's failure does not stop the others.
pub async fn serve<H: PacketHandler>(listener: TcpListener, config: PacketConfig, handler: H) -> std::io::Result<()> {
    let handler = Arc::new(handler);
    loop {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let handler = handler.clone();
        tokio::spawn(async move {
            let (commands, command_rx) = mpsc::channel(1);
            let result = run(stream, config, handler, command_rx).await;
            drop(commands);
            match result {
                Ok(()) => log::debug!("packet connection from {peer} closed"),
                Err(e) => log::warn!("packet connection from {peer} failed: {e}"),
            }
        });
    }
}

/// What the connection task's wait returned: the next thing to act on.
enum Input {
    Link(Result<Option<PacketLinkEvent>, LinkError>),
    Command(Option<Command>),
    Answer(Incoming, Result<PacketReply, String>),
}

/// An event of the packet machine, with what it borrowed copied out.
enum PacketLinkEvent {
    Request(Incoming, PacketRequest),
    Answer(RequestId, Result<PacketReply, CallError>),
    Ended,
    Other,
}

impl From<PacketEvent<'_>> for PacketLinkEvent {
    fn from(event: PacketEvent<'_>) -> Self {
        match event {
            PacketEvent::Request { from, rq_type, flags, payload } => {
                PacketLinkEvent::Request(from, PacketRequest { rq_type, flags, payload: payload.to_vec() })
            }
            PacketEvent::Response { id, flags, payload } => {
                PacketLinkEvent::Answer(id, Ok(PacketReply::new(flags, payload)))
            }
            PacketEvent::RequestFailed { id, error } => PacketLinkEvent::Answer(id, Err(error.into())),
            PacketEvent::LinkEnded(_) => PacketLinkEvent::Ended,
            PacketEvent::RequestsEnded => PacketLinkEvent::Other,
        }
    }
}

async fn run<T, H>(
    io: T,
    config: PacketConfig,
    handler: Arc<H>,
    mut commands: mpsc::Receiver<Command>,
) -> Result<(), LinkError>
where
    T: AsyncRead + AsyncWrite + Unpin,
    H: PacketHandler,
{
    let clock = TokioClock::new();
    let (mut rx, mut tx) = link::buffers(Framing::Stream, config.max_packet);
    let timeout = config.request_timeout.map(|t| rivulet_core::time::Duration::from_micros(t.as_micros() as u64));
    let mut endpoint = Endpoint::new(EndpointConfig { request_timeout: timeout });
    let mut driver =
        Driver::new(FromTokio::new(io), StreamDecoder::new(&mut rx), FrameWriter::new(&mut tx, Framing::Stream));
    let mut waiting: HashMap<RequestId, oneshot::Sender<Result<PacketReply, CallError>>> = HashMap::new();
    // Every handler answers exactly once, and at most MAX_REQUESTS_HANDLED run: never full.
    let (answer_tx, mut answers) = mpsc::channel(MAX_REQUESTS_HANDLED);
    let mut commands_open = true;
    let result = loop {
        let may_call = commands_open && endpoint.requests_in_flight() < MAX_CALLS_IN_FLIGHT;
        let woke = tokio::select! {
            step = driver.step(&mut endpoint, &clock) => Input::Link(step.map(|e| e.map(PacketLinkEvent::from))),
            command = commands.recv(), if may_call => Input::Command(command),
            Some((from, answer)) = answers.recv() => Input::Answer(from, answer),
        };
        let now = clock.now();
        match woke {
            Input::Link(Ok(None)) | Input::Link(Ok(Some(PacketLinkEvent::Other))) => {}
            Input::Link(Ok(Some(PacketLinkEvent::Ended))) => break Ok(()),
            // cs.packetstream tolerates a plain socket close as the end.
            Input::Link(Err(DriverError::Closed)) => break Ok(()),
            Input::Link(Err(e)) => break Err(e),
            Input::Link(Ok(Some(PacketLinkEvent::Answer(id, answer)))) => {
                if let Some(reply) = waiting.remove(&id) {
                    let _ = reply.send(answer);
                }
            }
            Input::Link(Ok(Some(PacketLinkEvent::Request(from, request)))) => {
                let (handler, answer_tx) = (handler.clone(), answer_tx.clone());
                tokio::spawn(async move {
                    let handling = tokio::spawn(async move { handler.handle(request).await });
                    let answer = handling.await.unwrap_or_else(|_| Err("exception during handler".into()));
                    let _ = answer_tx.send((from, answer)).await;
                });
            }
            Input::Answer(from, answer) => {
                let written = write_with_room(&mut driver, |out| match &answer {
                    Ok(reply) => endpoint.respond(from, reply.flags, &reply.payload, out),
                    Err(reason) => endpoint.refuse(from, reason, out),
                })
                .await;
                match written {
                    Ok(()) => {}
                    Err(WriteError::Link(e)) => break Err(e),
                    Err(WriteError::TooLarge) => {
                        // The peer still needs an answer: a short one always fits.
                        let reason = "response larger than max_packet";
                        if let Err(WriteError::Link(e)) =
                            write_with_room(&mut driver, |out| endpoint.refuse(from, reason, out)).await
                        {
                            break Err(e);
                        }
                    }
                    // The link is closed or the request is unknown: nobody is waiting for it.
                    Err(WriteError::Session(e)) => log::debug!("answer to tag {} dropped: {e}", from.tag),
                }
            }
            Input::Command(None) => {
                // Every handle is gone: nobody can call any more, so close.
                commands_open = false;
                endpoint.close();
            }
            Input::Command(Some(Command::Close)) => endpoint.close(),
            Input::Command(Some(Command::Call { rq_type, flags, payload, reply })) => {
                let sent =
                    write_with_room(&mut driver, |out| endpoint.request(now, rq_type, flags, &payload, out)).await;
                match sent {
                    Ok(id) => {
                        waiting.insert(id, reply);
                    }
                    Err(WriteError::Link(e)) => {
                        let _ = reply.send(Err(CallError::Disconnected));
                        break Err(e);
                    }
                    Err(WriteError::TooLarge) | Err(WriteError::Session(session::Error::Wire(_))) => {
                        let _ = reply.send(Err(CallError::TooLarge));
                    }
                    Err(WriteError::Session(_)) => {
                        let _ = reply.send(Err(CallError::Disconnected));
                    }
                }
            }
        }
    };
    for (_, reply) in waiting.drain() {
        let _ = reply.send(Err(CallError::Disconnected));
    }
    // Whatever is still buffered (our EOF, say) goes out before the stream is dropped.
    if result.is_ok() {
        let _ = driver.flush().await;
    }
    result
}
