//! Helpers shared by the host tests: a tokio clock for the core driver, a gateway stand-in that
//! stores registrations with session resume, a byte pipe that corrupts on purpose, and
//! ([`process`]) the plumbing of the tests that run real programs.

use std::pin::Pin;
use std::task::{Context, Poll};

use rivulet_core::model::{EventId, Status, Timestamp};
use rivulet_core::session::{Accepted, Arrival, InitRequest, Limits, SessionTable};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use rivulet_tokio::TokioClock;

pub mod peers;
pub mod process;

/// One stored registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub session: u64,
    pub seq: u32,
    pub id: EventId,
    pub event_type: String,
    pub payload: Option<String>,
}

/// Client sessions a [`Gateway`] holds: more than any test makes.
pub const GATEWAY_SESSIONS: usize = 64;

/// What a gateway keeps across connections: stored events and, per client session, the next
/// sequence number it expects (the core's [`SessionTable`]).
#[derive(Debug, Default)]
pub struct Gateway {
    pub stored: Vec<Stored>,
    pub sessions: SessionTable<GATEWAY_SESSIONS>,
    next_session: u64,
    next_instance: u64,
}

impl Gateway {
    pub const SERVER_ID: u64 = 7;
    pub const SERVER_SESSION: u64 = 1;

    /// The answer to an init: resume a known session, or start a new one at the client's
    /// `first_seq`.
    pub fn accept(&mut self, request: &InitRequest<'_>) -> Accepted {
        let next_session = &mut self.next_session;
        let new_id = || {
            *next_session += 1;
            *next_session
        };
        let (session, next_seq) =
            self.sessions.resolve(request.session, request.first_seq, new_id).expect("room for every test's sessions");
        Accepted {
            version: rivulet_core::session::message::PROTOCOL_VERSION,
            capabilities: 0,
            status: Status::Operational,
            server_id: Self::SERVER_ID,
            server_session: Self::SERVER_SESSION,
            session,
            next_seq,
            limits: Limits { window: 64, aliases: 64, max_packet: 4096 },
            keepalive_ms: 20_000,
        }
    }

    /// Stores a registration of an accepted session, refusing any but the next sequence number
    /// (a replay or a gap: it never should see one).
    pub fn store(&mut self, session: u64, seq: u32, event_type: String, payload: Option<String>) -> EventId {
        let arrival = self.sessions.arrive(session, seq);
        assert_eq!(arrival, Some(Arrival::Fresh), "registrations of a session arrive in order, each once: seq {seq}");
        self.next_instance += 1;
        let id = EventId { server: Self::SERVER_ID, session: Self::SERVER_SESSION, instance: self.next_instance };
        self.stored.push(Stored { session, seq, id, event_type, payload });
        id
    }

    pub fn timestamp(&self) -> Timestamp {
        Timestamp { s: 1_700_000_000, us: self.next_instance as u32 }
    }
}

/// A tokio byte stream that damages chosen writes, to test serial recovery: it flips a byte in
/// some, and swallows others whole (a driver's write holds whole frames, so these vanish with
/// their delimiters, which no checksum can notice).
#[derive(Debug)]
pub struct Corrupting<T> {
    inner: T,
    writes: usize,
    /// Writes (0-based) whose middle byte gets flipped.
    pub corrupt_writes: Vec<usize>,
    /// Writes (0-based) that never arrive.
    pub lost_writes: Vec<usize>,
}

impl<T> Corrupting<T> {
    pub fn new(inner: T, corrupt_writes: Vec<usize>) -> Self {
        Corrupting { inner, writes: 0, corrupt_writes, lost_writes: Vec::new() }
    }

    pub fn losing(inner: T, lost_writes: Vec<usize>) -> Self {
        Corrupting { inner, writes: 0, corrupt_writes: Vec::new(), lost_writes }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Corrupting<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Corrupting<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.lost_writes.contains(&this.writes) {
            this.writes += 1;
            return Poll::Ready(Ok(buf.len()));
        }
        if this.corrupt_writes.contains(&this.writes) && buf.len() > 2 {
            let mut copy = buf.to_vec();
            let mid = copy.len() / 2;
            copy[mid] ^= 0x5a;
            let result = Pin::new(&mut this.inner).poll_write(cx, &copy);
            if result.is_ready() {
                this.writes += 1;
            }
            return result;
        }
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if result.is_ready() {
            this.writes += 1;
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub use memory::{MemoryStore, ServerThread, StoredEvent};

/// An event store in memory behind a `rivulet_tokio::server::Server`, as a gateway would run one,
/// and helpers for tests that drive `rivulet_tokio` clients against it.
pub mod memory {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
    use std::time::Duration;

    use rivulet_core::model::{EventId, Order, OrderBy, Timestamp};
    use rivulet_core::session::SessionTable;
    use rivulet_tokio::Events;
    use rivulet_tokio::model::{Event, EventPath, Query, QueryPage, TimeseriesQuery};
    use rivulet_tokio::packet::{PacketReply, PacketRequest};
    use rivulet_tokio::server::{
        Admission, ClientInfo, HandlerError, Registration, Server, ServerHandler, ServerOptions,
    };
    use tokio::sync::{oneshot, watch};

    /// The session part of every id the store gives (one store, one id space).
    pub const STORE_SESSION: u64 = 1;
    /// Client sessions a [`MemoryStore`] remembers: more than any test makes.
    pub const STORE_SESSIONS: usize = 1024;
    /// Event `instance` n is stored at `BASE_SECONDS + n` seconds: deterministic and increasing.
    pub const BASE_SECONDS: i64 = 1_700_000_000;

    /// Generous: never reached when all is well, it only turns a hang into a failure.
    pub const WAIT: Duration = Duration::from_secs(30);

    /// The store's timestamp of event `instance`.
    pub fn timestamp_of(instance: u64) -> Timestamp {
        Timestamp { s: BASE_SECONDS + instance as i64, us: 0 }
    }

    /// One stored event and where it came from.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct StoredEvent {
        pub event: Event,
        pub client: String,
        pub session: u64,
        /// `None` for register-with-response.
        pub seq: Option<u32>,
        /// Which attached server stored it: 1 for the first, 2 after a restart...
        pub epoch: u64,
        pub persisted: bool,
    }

    type Admit = Box<dyn Fn(&ClientInfo) -> Admission + Send + Sync>;

    #[derive(Default)]
    struct State {
        stored: Vec<StoredEvent>,
        /// Durable with the events: `session → next expected seq`, what `resume` answers. The
        /// server hands over only fresh registrations (it classifies them), so each one stored
        /// sets where its session continues.
        sessions: SessionTable<STORE_SESSIONS>,
        next_instance: u64,
        connects: Vec<ClientInfo>,
        disconnects: Vec<ClientInfo>,
    }

    /// Stores registrations with ids and timestamps, notifies them through the attached
    /// [`Server`] (as not persisted right away, then as persisted), answers latest, timeseries and
    /// server queries with paging, serves application requests and resumes sessions it stored
    /// for. Shared as `Arc<MemoryStore>`, it outlives the servers attached to it in turn.
    ///
    /// Application requests: type 1 echoes (`flags + 1`, payload `<client name>:<payload>`); type
    /// 2 answers the number of stored events in decimal; type 3 is refused with
    /// `refused on purpose: <payload>`; others are refused with `unknown request type <n>`.
    pub struct MemoryStore {
        server_id: u64,
        state: Mutex<State>,
        server: RwLock<Weak<Server>>,
        epoch: AtomicU64,
        admit: Option<Admit>,
        /// While true, `register` waits before storing.
        hold: watch::Sender<bool>,
        auto_persist: AtomicBool,
        notify_with_ack: AtomicBool,
        /// Held from storing to notifying, so notifications go out in id order: a client drops a
        /// notification whose id is not after the last one it delivered from the same server.
        notifying: tokio::sync::Mutex<()>,
    }

    /// A poisoned lock only means a panic elsewhere (a failed assertion): the data is fine.
    fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    impl std::fmt::Debug for MemoryStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MemoryStore").field("server_id", &self.server_id).finish_non_exhaustive()
        }
    }

    impl MemoryStore {
        pub fn new(server_id: u64) -> Self {
            MemoryStore {
                server_id,
                state: Mutex::new(State::default()),
                server: RwLock::new(Weak::new()),
                epoch: AtomicU64::new(0),
                admit: None,
                hold: watch::Sender::new(false),
                auto_persist: AtomicBool::new(true),
                notify_with_ack: AtomicBool::new(false),
                notifying: tokio::sync::Mutex::new(()),
            }
        }

        /// Decides admission with `admit` (every client is accepted without it).
        pub fn with_admission(mut self, admit: impl Fn(&ClientInfo) -> Admission + Send + Sync + 'static) -> Self {
            self.admit = Some(Box::new(admit));
            self
        }

        pub fn server_id(&self) -> u64 {
            self.server_id
        }

        /// Notifies through `server` from now on; what it stores next belongs to a new epoch.
        pub fn attach(&self, server: &Arc<Server>) {
            *self.server.write().unwrap_or_else(PoisonError::into_inner) = Arc::downgrade(server);
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }

        fn server(&self) -> Option<Arc<Server>> {
            self.server.read().unwrap_or_else(PoisonError::into_inner).upgrade()
        }

        /// While held, registrations wait before they are stored (so they are not acknowledged).
        pub fn hold_registrations(&self, held: bool) {
            self.hold.send_replace(held);
        }

        /// Without auto-persist, events are notified as persisted only by [`MemoryStore::persist`].
        pub fn set_auto_persist(&self, on: bool) {
            self.auto_persist.store(on, Ordering::SeqCst);
        }

        /// With it, a registration is acknowledged only once every client it was notified to has
        /// acknowledged the notification: a barrier for tests.
        pub fn set_notify_with_ack(&self, on: bool) {
            self.notify_with_ack.store(on, Ordering::SeqCst);
        }

        /// Persists what is not yet, and notifies it as persisted.
        pub async fn persist(&self) {
            let _order = self.notifying.lock().await;
            let events = self.mark_persisted();
            if let Some(server) = self.server()
                && !events.is_empty()
            {
                server.notify_events(&events, true, self.notify_with_ack.load(Ordering::SeqCst)).await;
            }
        }

        fn mark_persisted(&self) -> Vec<Event> {
            let mut state = lock(&self.state);
            let fresh = state.stored.iter_mut().filter(|s| !s.persisted);
            fresh
                .map(|s| {
                    s.persisted = true;
                    s.event.clone()
                })
                .collect()
        }

        pub fn stored(&self) -> Vec<StoredEvent> {
            lock(&self.state).stored.clone()
        }

        pub fn events(&self) -> Vec<Event> {
            lock(&self.state).stored.iter().map(|s| s.event.clone()).collect()
        }

        pub fn len(&self) -> usize {
            lock(&self.state).stored.len()
        }

        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        pub fn connects(&self) -> Vec<ClientInfo> {
            lock(&self.state).connects.clone()
        }

        pub fn disconnects(&self) -> Vec<ClientInfo> {
            lock(&self.state).disconnects.clone()
        }

        /// The next sequence number the store expects of `session`.
        pub fn next_seq(&self, session: u64) -> Option<u32> {
            lock(&self.state).sessions.next_seq(session)
        }

        fn query_page(&self, query: Query) -> Result<QueryPage, String> {
            let state = lock(&self.state);
            let all = state.stored.iter();
            match query {
                Query::Latest { event_types } => {
                    let mut latest: HashMap<&EventPath, &Event> = HashMap::new();
                    for stored in all.filter(|s| matches_any(event_types.as_deref(), &s.event.event_type)) {
                        // Stored in id order: the later one is the newer.
                        latest.insert(&stored.event.event_type, &stored.event);
                    }
                    let mut events: Vec<Event> = latest.into_values().cloned().collect();
                    events.sort_by_key(|e| e.id);
                    Ok(QueryPage { events, more_follows: false })
                }
                Query::Timeseries(q) => {
                    let mut events: Vec<&Event> = all.map(|s| &s.event).filter(|e| in_timeseries(&q, e)).collect();
                    let key = |e: &&Event| match q.order_by {
                        OrderBy::Timestamp => (Some(e.timestamp), e.id),
                        OrderBy::SourceTimestamp => (e.source_timestamp, e.id),
                    };
                    events.sort_by_key(key);
                    if q.order == Order::Descending {
                        events.reverse();
                    }
                    page(events, q.last_event_id, q.max_results)
                }
                Query::Server { server_id, persisted, max_results, last_event_id } => {
                    let events = all
                        .filter(|s| s.event.id.server == server_id && (!persisted || s.persisted))
                        .map(|s| &s.event)
                        .collect();
                    page(events, last_event_id, max_results)
                }
            }
        }
    }

    fn matches_any(patterns: Option<&[EventPath]>, event_type: &EventPath) -> bool {
        patterns.is_none_or(|patterns| patterns.iter().any(|p| p.matches(event_type)))
    }

    fn in_timeseries(q: &TimeseriesQuery, e: &Event) -> bool {
        let within = |t: Option<Timestamp>, from: Option<Timestamp>, to: Option<Timestamp>| match t {
            Some(t) => from.is_none_or(|from| t >= from) && to.is_none_or(|to| t <= to),
            None => from.is_none() && to.is_none(),
        };
        matches_any(q.event_types.as_deref(), &e.event_type)
            && within(Some(e.timestamp), q.t_from, q.t_to)
            && within(e.source_timestamp, q.source_t_from, q.source_t_to)
    }

    /// The page after `last` (in the given order) of at most `max` events.
    fn page(events: Vec<&Event>, last: Option<EventId>, max: Option<u32>) -> Result<QueryPage, String> {
        let start = match last {
            Some(last) => 1 + events.iter().position(|e| e.id == last).ok_or("unknown last_event_id")?,
            None => 0,
        };
        let rest = events.get(start..).unwrap_or(&[]);
        let take = max.map_or(rest.len(), |max| rest.len().min(max as usize));
        let events = rest.iter().take(take).map(|e| (*e).clone()).collect();
        Ok(QueryPage { events, more_follows: rest.len() > take })
    }

    impl ServerHandler for MemoryStore {
        async fn connect(&self, client: &ClientInfo) -> Admission {
            lock(&self.state).connects.push(client.clone());
            self.admit.as_ref().map_or(Admission::Accept, |admit| admit(client))
        }

        async fn disconnect(&self, client: &ClientInfo) {
            lock(&self.state).disconnects.push(client.clone());
        }

        async fn register(
            &self,
            client: &ClientInfo,
            registrations: Vec<Registration>,
        ) -> Result<Vec<Event>, HandlerError> {
            let mut hold = self.hold.subscribe();
            // The sender lives in `self`: this only ends when released.
            let _ = hold.wait_for(|held| !held).await;
            let _order = self.notifying.lock().await;
            let events = {
                // Events and the session's next seq change together, as one durable write would.
                let mut state = lock(&self.state);
                let epoch = self.epoch.load(Ordering::SeqCst);
                let mut events = Vec::with_capacity(registrations.len());
                for Registration { session, seq, event } in registrations {
                    state.next_instance += 1;
                    let instance = state.next_instance;
                    let event = Event {
                        id: EventId { server: self.server_id, session: STORE_SESSION, instance },
                        event_type: event.event_type,
                        timestamp: timestamp_of(instance),
                        source_timestamp: event.source_timestamp,
                        payload: event.payload,
                    };
                    if let Some(seq) = seq {
                        state.sessions.insert(session, seq.wrapping_add(1)).expect("room for every test's sessions");
                    }
                    let client = client.client_name.clone();
                    state.stored.push(StoredEvent {
                        event: event.clone(),
                        client,
                        session,
                        seq,
                        epoch,
                        persisted: false,
                    });
                    events.push(event);
                }
                events
            };
            let with_ack = self.notify_with_ack.load(Ordering::SeqCst);
            let server = self.server();
            if let Some(server) = &server {
                server.notify_events(&events, false, with_ack).await;
            }
            if self.auto_persist.load(Ordering::SeqCst) {
                // Everything not yet persisted, in order (also what waited for `persist`).
                let persisted = self.mark_persisted();
                if let Some(server) = &server {
                    server.notify_events(&persisted, true, with_ack).await;
                }
            }
            Ok(events)
        }

        async fn query(&self, _client: &ClientInfo, query: Query) -> Result<QueryPage, HandlerError> {
            self.query_page(query).map_err(HandlerError::Refused)
        }

        async fn request(&self, client: &ClientInfo, request: PacketRequest) -> Result<PacketReply, HandlerError> {
            match request.rq_type {
                1 => {
                    let payload = [client.client_name.as_bytes(), b":", &request.payload].concat();
                    Ok(PacketReply::new(request.flags + 1, payload))
                }
                2 => Ok(PacketReply::new(0, self.len().to_string())),
                3 => Err(HandlerError::Refused(format!(
                    "refused on purpose: {}",
                    String::from_utf8_lossy(&request.payload)
                ))),
                other => Err(HandlerError::Refused(format!("unknown request type {other}"))),
            }
        }

        async fn resume(&self, session: u64) -> Option<u32> {
            self.next_seq(session)
        }
    }

    /// Serves `store` on a free loopback port of the current runtime.
    pub async fn serve(store: &Arc<MemoryStore>, options: ServerOptions) -> Arc<Server> {
        let server = rivulet_tokio::server::listen("127.0.0.1:0", options, store.clone()).await.expect("bind");
        let server = Arc::new(server);
        store.attach(&server);
        server
    }

    /// Shuts `server` down gracefully if this is its last handle (a handler may hold one for a
    /// moment); otherwise dropping it starts the same shutdown without waiting.
    pub async fn stop(server: Arc<Server>) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut server = server;
        loop {
            match Arc::try_unwrap(server) {
                Ok(server) => return server.shutdown().await,
                Err(shared) if tokio::time::Instant::now() < deadline => {
                    server = shared;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(_) => return,
            }
        }
    }

    /// A server in its own thread and runtime, so a test can kill it as a crash would: every
    /// task stops between two steps and the kernel closes its sockets, without ERQ or EOF (a
    /// dropped or shut down `Server` closes gracefully instead).
    pub struct ServerThread {
        addr: SocketAddr,
        /// Taken only by `shutdown`.
        server: Option<Arc<Server>>,
        stop: Option<oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl std::fmt::Debug for ServerThread {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ServerThread").field("addr", &self.addr).finish_non_exhaustive()
        }
    }

    impl ServerThread {
        /// Binds `addr` (with `SO_REUSEADDR`, so a restart can take the port of a killed server
        /// at once) and serves `store`, attached before the first client can be accepted.
        pub async fn start(addr: SocketAddr, options: ServerOptions, store: Arc<MemoryStore>) -> std::io::Result<Self> {
            let (ready_tx, ready) = oneshot::channel::<std::io::Result<Arc<Server>>>();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new().name(format!("server {addr}")).spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let bound = (|| {
                        let socket = tokio::net::TcpSocket::new_v4()?;
                        socket.set_reuseaddr(true)?;
                        socket.bind(addr)?;
                        let listener = socket.listen(1024)?;
                        Server::from_listener(listener, options, store.clone())
                    })();
                    match bound {
                        Ok(server) => {
                            let server = Arc::new(server);
                            // No await since `from_listener`: on this one-thread runtime no client
                            // was accepted yet.
                            store.attach(&server);
                            let _ = ready_tx.send(Ok(server));
                            // Serve until killed (or until the handle is gone).
                            let _ = stopped.await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
                // Every task of the server is dropped here, wherever it stood.
                drop(runtime);
            })?;
            let server = ready.await.map_err(|_| std::io::Error::other("the server thread ended"))??;
            Ok(ServerThread { addr: server.local_addr(), server: Some(server), stop: Some(stop), thread: Some(thread) })
        }

        pub fn addr(&self) -> SocketAddr {
            self.addr
        }

        pub fn server(&self) -> &Server {
            self.server.as_ref().expect("running")
        }

        /// Kills the server and returns once none of its code runs any more.
        pub async fn kill(mut self) {
            self.end().await;
        }

        /// Shuts the server down gracefully ([`Server::shutdown`]: ERQ and EOF to every client,
        /// registrations in progress stored first), then ends its thread.
        pub async fn shutdown(mut self) {
            let mut server = self.server.take().expect("running");
            let deadline = tokio::time::Instant::now() + WAIT;
            // The store's handlers hold the server for a moment while they notify.
            let server = loop {
                match Arc::try_unwrap(server) {
                    Ok(server) => break server,
                    Err(shared) => {
                        assert!(tokio::time::Instant::now() < deadline, "the server handle is held elsewhere");
                        server = shared;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            };
            server.shutdown().await;
            self.end().await;
        }

        async fn end(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(thread) = self.thread.take() {
                tokio::task::spawn_blocking(move || thread.join()).await.expect("join").expect("server thread");
            }
        }
    }

    impl Drop for ServerThread {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
        }
    }

    /// The next notified event; panics if none comes in time or the client closed.
    pub async fn next_event(events: &mut Events) -> Event {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the client closed while an event was awaited"),
            Err(_) => panic!("no event within {WAIT:?}"),
        }
    }

    /// The next `n` notified events.
    pub async fn take_events(events: &mut Events, n: usize) -> Vec<Event> {
        let mut taken = Vec::with_capacity(n);
        while taken.len() < n {
            match tokio::time::timeout(WAIT, events.next()).await {
                Ok(Some(event)) => taken.push(event),
                Ok(None) => panic!("the client closed after {} of {n} events: {taken:?}", taken.len()),
                Err(_) => panic!("only {} of {n} events within {WAIT:?}: {taken:?}", taken.len()),
            }
        }
        taken
    }

    /// The events already delivered to the application and not yet taken, without waiting.
    pub async fn drain_events(events: &mut Events) -> Vec<Event> {
        let mut drained = Vec::new();
        // Unconstrained: the cooperative budget would otherwise make a ready queue look empty.
        while let Ok(Some(event)) =
            tokio::task::unconstrained(tokio::time::timeout(Duration::ZERO, events.next())).await
        {
            drained.push(event);
        }
        drained
    }

    /// Polls `check` until it holds; panics after [`WAIT`].
    pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !check() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Awaits `future`, failing the test if it takes longer than [`memory::WAIT`] (a hang).
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(memory::WAIT, future).await {
        Ok(done) => done,
        Err(_) => panic!("{what}: not done within {:?}", memory::WAIT),
    }
}

/// A `rivulet-embassy` device's transport in tests: loopback TCP to `0`, a fresh connection per
/// link, through embedded-io-adapters.
#[derive(Debug, Clone, Copy)]
pub struct Loopback(pub std::net::SocketAddr);

impl rivulet_embassy::Connect for Loopback {
    type Io<'a> = embedded_io_adapters::tokio_1::FromTokio<tokio::net::TcpStream>;
    type Error = std::io::Error;
    const FRAMING: rivulet_embassy::Framing = rivulet_embassy::Framing::Stream;

    async fn connect(&mut self) -> std::io::Result<Self::Io<'_>> {
        let stream = tokio::net::TcpStream::connect(self.0).await?;
        stream.set_nodelay(true)?;
        Ok(embedded_io_adapters::tokio_1::FromTokio::new(stream))
    }
}
