//! What the server asks of the application ([`ServerHandler`]) and what it tells it about each
//! client ([`ClientInfo`]).

use std::net::SocketAddr;
use std::sync::Arc;

#[cfg(doc)]
use super::Server;
use crate::fanout::Interest;
use crate::model::{Event, EventPath, Query, QueryPage, RegisterEvent};
use crate::packet::{PacketReply, PacketRequest};

/// What a handler that panicked answers, as cs.packetstream does.
pub(super) const HANDLER_PANICKED: &str = "exception during handler";

/// One accepted client, as the handler and [`Server::connections`] see it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The connection's id, unique within a [`Server`].
    pub id: u64,
    pub client_name: String,
    /// The TCP peer's address, over TLS too.
    pub peer: SocketAddr,
    /// The client's durable session (new, or resumed).
    pub session: u64,
    pub subscriptions: Vec<EventPath>,
    /// Notify only events whose id has this server.
    pub server_id: Option<u64>,
    /// Notify only events passed to `notify_events` with `persisted = true` (or only those with
    /// `false`, when this is `false`).
    pub persisted: bool,
    /// The client's token, or its proof after a challenge.
    pub credential: Option<Vec<u8>>,
    /// The largest packet the client takes: a handler need not read a query page larger than
    /// this, since it is cut to fit anyway.
    pub max_packet: u32,
}

impl ClientInfo {
    /// What the client's notifications are, as the fan-out takes it.
    pub fn interest(&self) -> Interest {
        Interest { patterns: self.subscriptions.clone(), server_id: self.server_id, persisted: self.persisted }
    }
}

impl std::fmt::Debug for ClientInfo {
    // The credential stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientInfo")
            .field("id", &self.id)
            .field("client_name", &self.client_name)
            .field("peer", &self.peer)
            .field("session", &self.session)
            .field("subscriptions", &self.subscriptions)
            .field("server_id", &self.server_id)
            .field("persisted", &self.persisted)
            .field("credential", &self.credential.as_ref().map(|c| format!("<{} bytes>", c.len())))
            .finish()
    }
}

/// Why a handler did not do what a client asked. Over the Rivulet protocol each reaches the
/// client as a refusal with its message; the kinds let the application count them apart, and a
/// gateway answer each in its other protocols' own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// Not allowed or not valid (an ACL, a malformed request): asking again will not help.
    Refused(String),
    /// Not possible now (the server is stopping, the client asked for is not connected, too
    /// busy): later may work.
    Unavailable(String),
    /// Storing or reading failed (the store, or a handler that panicked).
    Failed(String),
}

impl HandlerError {
    /// What the client is told.
    pub fn message(&self) -> &str {
        match self {
            HandlerError::Refused(m) | HandlerError::Unavailable(m) | HandlerError::Failed(m) => m,
        }
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for HandlerError {}

/// The answer to a client's init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Accept,
    /// Refuse with this reason; the link closes.
    Refuse(String),
    /// Ask for a proof over this nonce: the client inits again with the proof as its credential.
    Challenge(Vec<u8>),
}

/// Registrations a handler took (see [`ServerHandler::admit`]). The events themselves are not
/// handed back: the link acknowledges sequence numbers, and copying every event for that would
/// cost the gateway's hot path an allocation per event.
pub struct Admitted {
    /// Resolves once they are durable, or with the reason they will not be.
    pub durable: std::pin::Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>,
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted").finish_non_exhaustive()
    }
}

/// An event a client registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub session: u64,
    /// Its sequence number in the session; `None` for register-with-response, which is not
    /// sequenced (and not resent after a lost link).
    pub seq: Option<u32>,
    pub event: RegisterEvent,
}

/// What the server asks of the application. Each call runs in its own task, so a panic is
/// contained: a request is then refused with "exception during handler".
pub trait ServerHandler: Send + Sync + 'static {
    /// Admits a client. Called on each init (again after a challenge).
    fn connect(&self, client: &ClientInfo) -> impl Future<Output = Admission> + Send {
        let _ = client;
        async { Admission::Accept }
    }

    /// The client's link ended (closed, broken, or replaced by a new init on the same
    /// connection). Called once per accepted link; when the connection ends, only after every
    /// `register` call of it returned.
    fn disconnect(&self, client: &ClientInfo) -> impl Future<Output = ()> + Send {
        let _ = client;
        async {}
    }

    /// Whether `client` may subscribe to `patterns` (its whole new list). A refusal reaches the
    /// client with the reason, and its previous list stays. The init's list is the handler's to
    /// check in [`ServerHandler::connect`].
    fn subscribe(
        &self,
        client: &ClientInfo,
        patterns: &[EventPath],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = (client, patterns);
        async { Ok(()) }
    }

    /// Whether `client` may register `event`; checked on the connection before anything is
    /// stored, so keep it cheap. A refused registration is not stored: the client is told why
    /// and it leaves the client's outbox (a register-with-response fails whole).
    fn check_register(&self, client: &ClientInfo, event: &RegisterEvent) -> Result<(), HandlerError> {
        let _ = (client, event);
        Ok(())
    }

    /// Stores registrations (in order) and returns them as registered events (ids and
    /// timestamps). Only after this returns `Ok` are they acknowledged to the client; an `Err`
    /// closes the link and the client sends them again on its next one.
    fn register(
        &self,
        client: &ClientInfo,
        registrations: Vec<Registration>,
    ) -> impl Future<Output = Result<Vec<Event>, HandlerError>> + Send;

    /// Takes registrations (in order) for storing and returns a future that resolves once they
    /// are durable; a connection's registrations are acknowledged only then, so the next batch
    /// need not wait for this one's write (a store that commits in groups can take several
    /// batches per commit). The default stores with
    /// [`ServerHandler::register`] and is durable at once.
    ///
    /// The durable futures of one handler must resolve in the order their batches were admitted,
    /// and once one fails every later one must fail too: an acknowledged registration must never
    /// sit behind one that was lost.
    fn admit(
        &self,
        client: &ClientInfo,
        registrations: Vec<Registration>,
    ) -> impl Future<Output = Result<Admitted, HandlerError>> + Send {
        async move {
            self.register(client, registrations).await?;
            Ok(Admitted { durable: Box::pin(async { Ok(()) }) })
        }
    }

    /// Answers a query with one page. An answer larger than the client can receive is cut to
    /// the events that fit, with `more_follows = true` (for `Latest`, which does not page, that
    /// says the answer is incomplete).
    fn query(&self, client: &ClientInfo, query: Query) -> impl Future<Output = Result<QueryPage, HandlerError>> + Send {
        let _ = (client, query);
        async { Err(HandlerError::Refused("queries are not served here".into())) }
    }

    /// Answers an application request (channel 1).
    fn request(
        &self,
        client: &ClientInfo,
        request: PacketRequest,
    ) -> impl Future<Output = Result<PacketReply, HandlerError>> + Send {
        let _ = (client, request);
        async { Err(HandlerError::Refused("no request handler".into())) }
    }

    /// Where a session this process does not know resumes: the next sequence number the store
    /// expects (a store that survived a restart), or `None` to start a new session.
    fn resume(&self, session: u64) -> impl Future<Output = Option<u32>> + Send {
        let _ = session;
        async { None }
    }
}

/// A shared handler serves too, so the application can keep a handle on it (to notify, say).
impl<H: ServerHandler> ServerHandler for Arc<H> {
    fn connect(&self, client: &ClientInfo) -> impl Future<Output = Admission> + Send {
        H::connect(self, client)
    }
    fn disconnect(&self, client: &ClientInfo) -> impl Future<Output = ()> + Send {
        H::disconnect(self, client)
    }
    fn subscribe(
        &self,
        client: &ClientInfo,
        patterns: &[EventPath],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        H::subscribe(self, client, patterns)
    }
    fn check_register(&self, client: &ClientInfo, event: &RegisterEvent) -> Result<(), HandlerError> {
        H::check_register(self, client, event)
    }
    fn register(
        &self,
        client: &ClientInfo,
        registrations: Vec<Registration>,
    ) -> impl Future<Output = Result<Vec<Event>, HandlerError>> + Send {
        H::register(self, client, registrations)
    }
    fn admit(
        &self,
        client: &ClientInfo,
        registrations: Vec<Registration>,
    ) -> impl Future<Output = Result<Admitted, HandlerError>> + Send {
        H::admit(self, client, registrations)
    }
    fn query(&self, client: &ClientInfo, query: Query) -> impl Future<Output = Result<QueryPage, HandlerError>> + Send {
        H::query(self, client, query)
    }
    fn request(
        &self,
        client: &ClientInfo,
        request: PacketRequest,
    ) -> impl Future<Output = Result<PacketReply, HandlerError>> + Send {
        H::request(self, client, request)
    }
    fn resume(&self, session: u64) -> impl Future<Output = Option<u32>> + Send {
        H::resume(self, session)
    }
}

/// Runs a handler call in its own task, so a panic becomes a refusal.
pub(super) async fn guarded<T: Send + 'static>(
    call: impl Future<Output = Result<T, HandlerError>> + Send + 'static,
) -> Result<T, HandlerError> {
    tokio::spawn(call).await.unwrap_or_else(|_| Err(HandlerError::Failed(HANDLER_PANICKED.into())))
}
