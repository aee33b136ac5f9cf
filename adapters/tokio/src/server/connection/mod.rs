//! One connection's task: its machine and driver, the link's events, notifications from its
//! subscriber, answers of the handler and the store worker, and closing. Serial lines keep their
//! connection across links (`restart_line`).
//!
//! - `admission`: inits (logins, sessions, the connection limit), subscriptions, link ends;
//! - `registrations`: registrations to the store worker and acknowledgements back;
//! - `answers`: answers to the client's requests, notifications, our requests to the client;
//! - `events`: the machine's events, copied out.

mod admission;
mod answers;
mod events;
mod registrations;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use embedded_io_adapters::tokio_1::FromTokio;
use rivulet_core::driver::{Driver, DriverError, write_with_room};
use rivulet_core::session::{Incoming, RequestId, ServerConnection};
use rivulet_core::wire::{FrameWriter, Framing, LinkDecoder};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::handler::{ClientInfo, HandlerError, ServerHandler, guarded};
use super::links::Command;
use super::options::{ALIASES, COMMANDS, INFLIGHT, MAX_REQUESTS_HANDLED, PIPELINE};
use super::pipeline::{Answer, Outcome, Work, store_worker};
use super::{Counters, Shared};
use crate::fanout::{Delivery, Subscriber};
use crate::link::{self, LinkError, TokioClock, TokioDriver, WriteError};
use crate::model::{Event, Status};
use crate::packet::{CallError, PacketReply};
use events::LinkEvent;

/// The core's machine for one connection.
type ConnectionMachine = ServerConnection<INFLIGHT, ALIASES>;

/// What the connection task's wait returned: the next thing to act on.
enum Input {
    Link(Result<Option<LinkEvent>, LinkError>),
    Notify(Arc<Event>),
    Outcome(Outcome),
    Command(Command),
    Status,
    Close(Closing, String),
    /// The fan-out cut the subscriber off.
    CutOff,
    Deadline,
    /// No init accepted in time.
    InitTimeout,
}

/// What a client hears when the server shuts down.
const SHUTTING_DOWN: &str = "the server is shutting down";

/// How a connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Shutting down: let handlers answer and registrations be stored, then close.
    Drain,
    /// Too slow, or the store failed: close at once.
    Now,
}

pub(super) async fn serve_connection<H: ServerHandler>(
    stream: link::Stream,
    peer: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
    handler: Arc<H>,
    framing: Framing,
) {
    let (mut rx, mut tx) = link::buffers(framing, shared.config.max_packet as usize);
    let tx_capacity = tx.len();
    let clock = TokioClock::new();
    let conn = ConnectionMachine::new(rivulet_core::driver::Clock::now(&clock), shared.config);
    let driver =
        Driver::new(FromTokio::new(stream), LinkDecoder::new(framing, &mut rx), FrameWriter::new(&mut tx, framing));
    let window = usize::from(shared.config.window).max(1);
    let (work, work_rx) = mpsc::channel(window + MAX_REQUESTS_HANDLED);
    let (outcomes_tx, outcomes) = mpsc::channel(window + MAX_REQUESTS_HANDLED + PIPELINE);
    let worker = tokio::spawn(store_worker(handler.clone(), shared.clone(), work_rx, outcomes_tx.clone()));
    let (commands_tx, commands_rx) = mpsc::channel(COMMANDS);
    let shared_init_timeout = shared.init_timeout;
    let mut task = Task {
        id,
        peer,
        status_rx: shared.status.subscribe(),
        shutdown_rx: shared.shutdown.subscribe(),
        shared,
        handler,
        clock,
        conn,
        driver,
        generation: 0,
        client: None,
        subscriber: None,
        commands_tx,
        commands_rx,
        calls: HashMap::new(),
        work,
        outcomes_tx,
        outcomes,
        worker,
        handling: 0,
        unstored: 0,
        closing: None,
        close_sent: false,
        close_reason: None,
        deadline: None,
        counters: Arc::new(Counters::default()),
        tx_capacity,
        scratch: Vec::new(),
        serial: framing == Framing::Serial,
        init_by: (framing == Framing::Stream).then(|| tokio::time::Instant::now() + shared_init_timeout),
    };
    let result = task.run().await;
    // Boxed: the winding-up future (the task moved in, the handler's disconnect) is twice the
    // size of the running connection, and an unboxed await would make every connection's future
    // that large for its whole life (33 KB instead of 12 KB, `-Zprint-type-sizes`).
    Box::pin(task.finish(result)).await;
}

/// One connection: its machine, driver and everything in flight on it.
struct Task<'b, H> {
    id: u64,
    peer: SocketAddr,
    shared: Arc<Shared>,
    handler: Arc<H>,
    clock: TokioClock,
    conn: ConnectionMachine,
    driver: TokioDriver<'b, link::Stream>,
    /// Counts links (inits) on this connection, so answers meant for an earlier one are dropped.
    generation: u64,
    /// The client of the accepted link.
    client: Option<Arc<ClientInfo>>,
    /// The accepted link's notifications, from the fan-out.
    subscriber: Option<Subscriber>,
    commands_tx: mpsc::Sender<Command>,
    commands_rx: mpsc::Receiver<Command>,
    calls: HashMap<RequestId, oneshot::Sender<Result<PacketReply, CallError>>>,
    work: mpsc::Sender<Work>,
    outcomes_tx: mpsc::Sender<Outcome>,
    outcomes: mpsc::Receiver<Outcome>,
    worker: JoinHandle<()>,
    /// Client requests being handled.
    handling: usize,
    /// Registrations of the current link handed to the worker and not yet stored.
    unstored: u32,
    status_rx: watch::Receiver<Status>,
    shutdown_rx: watch::Receiver<bool>,
    closing: Option<Closing>,
    close_sent: bool,
    /// Told to the client when the close goes out.
    close_reason: Option<String>,
    /// When a closing connection is dropped even if the client has not closed.
    deadline: Option<tokio::time::Instant>,
    counters: Arc<Counters>,
    tx_capacity: usize,
    /// Where query answers are tried for size.
    scratch: Vec<u8>,
    /// A serial line: links end, the line stays (see `ServerBuilder::serial_listener`).
    serial: bool,
    /// When a stream connection without an accepted init is dropped; `None` once one is accepted.
    init_by: Option<tokio::time::Instant>,
}

impl<H: ServerHandler> Task<'_, H> {
    async fn run(&mut self) -> Result<(), LinkError> {
        if *self.shutdown_rx.borrow_and_update() {
            self.begin_close(Closing::Drain, SHUTTING_DOWN.into());
        }
        loop {
            let drained = self.handling == 0 && self.unstored == 0;
            if !self.close_sent && (self.closing == Some(Closing::Now) || (self.closing.is_some() && drained)) {
                self.close_sent = true;
                let reason = self.close_reason.take().unwrap_or_default();
                // Before the link is open (or once closing) this only closes.
                match write_with_room(&mut self.driver, |out| self.conn.close_with_reason(&reason, out)).await {
                    Err(WriteError::Link(e)) => return Err(e),
                    Err(_) => self.conn.close(),
                    Ok(()) => {}
                }
            }
            let can_notify = self.client.is_some() && self.closing.is_none() && self.conn.credit() > 0;
            let can_call = self.calls.len() < INFLIGHT - 1;
            let open = self.closing.is_none();
            let deadline = self.deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let input = tokio::select! {
                step = self.driver.step(&mut self.conn, &self.clock) => Input::Link(step.map(|e| e.map(LinkEvent::from))),
                delivery = next_delivery(&mut self.subscriber, can_notify), if open => match delivery {
                    Delivery::Event(event) => Input::Notify(event),
                    Delivery::CutOff => Input::CutOff,
                },
                Some(outcome) = self.outcomes.recv() => Input::Outcome(outcome),
                Some(command) = self.commands_rx.recv(), if can_call => Input::Command(command),
                Ok(()) = self.status_rx.changed() => Input::Status,
                Ok(()) = self.shutdown_rx.changed(), if open => Input::Close(Closing::Drain, SHUTTING_DOWN.into()),
                () = tokio::time::sleep_until(deadline), if !open => Input::Deadline,
                () = tokio::time::sleep_until(self.init_by.unwrap_or(deadline)), if self.init_by.is_some() => Input::InitTimeout,
            };
            match input {
                Input::Link(Ok(Some(LinkEvent::Ended(end)))) => {
                    log::debug!("connection {} from {}: link ended ({end:?})", self.id, self.peer);
                    if !self.serial || self.closing == Some(Closing::Drain) {
                        return Ok(());
                    }
                    self.restart_line().await;
                }
                Input::Link(Ok(Some(event))) => self.on_event(event).await?,
                Input::Link(Ok(None)) => {}
                Input::Link(Err(e @ (DriverError::Frame(_) | DriverError::Session(_)))) if self.serial => {
                    // A bad frame or message on a serial line costs the link, not the line.
                    self.shared.stats.bad_input.fetch_add(1, Ordering::Relaxed);
                    log::info!(
                        "serial line {} from {}: link ended by bad input ({e}); waiting for a new init",
                        self.id,
                        self.peer
                    );
                    self.restart_line().await;
                }
                Input::Link(Err(e)) => return Err(e),
                Input::Notify(event) => {
                    self.notify(event).await?;
                    // Send what else is queued while the client's window lasts.
                    while self.conn.credit() > 0 {
                        match self.subscriber.as_mut().and_then(Subscriber::try_recv) {
                            Some(event) => self.notify(event).await?,
                            None => break,
                        }
                    }
                }
                Input::Outcome(outcome) => self.on_outcome(outcome).await?,
                Input::Command(command) => self.on_command(command).await?,
                Input::Status => {
                    let status = *self.status_rx.borrow_and_update();
                    if self.client.is_some() {
                        match write_with_room(&mut self.driver, |out| self.conn.set_status(status, out)).await {
                            Err(WriteError::Link(e)) => return Err(e),
                            Err(e) => log::debug!("connection {}: status not sent: {e:?}", self.id),
                            Ok(()) => {}
                        }
                    }
                }
                Input::Close(why, reason) => self.begin_close(why, reason),
                Input::CutOff => {
                    self.shared.stats.too_slow.fetch_add(1, Ordering::Relaxed);
                    log::warn!("closing connection {} from {}: too slow", self.id, self.peer);
                    let reason = self.subscriber.as_ref().map(Subscriber::cut_off_reason).unwrap_or_default();
                    self.begin_close(Closing::Now, reason);
                }
                Input::Deadline => {
                    log::info!("connection {} from {}: dropped, the client did not close in time", self.id, self.peer);
                    return Ok(());
                }
                Input::InitTimeout => {
                    self.shared.stats.handshake_failed.fetch_add(1, Ordering::Relaxed);
                    log::info!("connection {} from {}: dropped, no init accepted in time", self.id, self.peer);
                    return Ok(());
                }
            }
        }
    }

    /// Starts closing: at once, or (shutting down) once handlers answered and registrations are
    /// stored. Either way the connection is dropped at the deadline.
    /// The close itself (with `reason` told to the client) goes out at the top of the loop.
    fn begin_close(&mut self, why: Closing, reason: String) {
        if self.closing.is_none() {
            self.deadline = Some(tokio::time::Instant::now() + self.shared.shutdown_timeout);
            self.close_reason = Some(reason);
        }
        if self.closing != Some(Closing::Now) {
            self.closing = Some(why);
        }
    }

    /// A serial line's link is over: forget it, keep the line, and wait for the device's next
    /// init on it. Answers meant for the old link are dropped by generation.
    async fn restart_line(&mut self) {
        self.end_link().await;
        self.generation += 1;
        self.unstored = 0;
        let now = rivulet_core::driver::Clock::now(&self.clock);
        self.conn = ConnectionMachine::new(now, self.shared.config);
        self.driver.reset_link();
        self.closing = None;
        self.close_sent = false;
        self.close_reason = None;
        self.deadline = None;
    }

    /// Why a new request of the client is not taken, if it is not.
    fn busy(&self) -> Option<&'static str> {
        if self.closing.is_some() {
            Some("the server is closing this connection")
        } else if self.handling >= MAX_REQUESTS_HANDLED {
            Some("too many requests in flight")
        } else {
            None
        }
    }

    async fn on_event(&mut self, event: LinkEvent) -> Result<(), LinkError> {
        match event {
            LinkEvent::Init(from, init) => self.on_init(from, init).await,
            LinkEvent::Subscribe(from, patterns) => self.on_subscribe(from, patterns).await,
            LinkEvent::Register(seq, event) => {
                self.on_register(seq, event);
                Ok(())
            }
            LinkEvent::RegisterRequest(from, events) => {
                let client = self.client.clone();
                match (self.busy(), client) {
                    (Some(reason), _) => self.refuse(from, reason).await,
                    (None, None) => self.refuse(from, "not connected").await,
                    (None, Some(client)) => {
                        let refusal = events.iter().find_map(|e| self.handler.check_register(&client, e).err());
                        if let Some(reason) = refusal {
                            self.count_refused();
                            return self.refuse(from, reason.message()).await;
                        }
                        let work = Work::RegisterRequest { generation: self.generation, client, from, events };
                        match self.work.try_send(work) {
                            Ok(()) => {
                                self.handling += 1;
                                Ok(())
                            }
                            Err(_) => self.refuse(from, "too many requests in flight").await,
                        }
                    }
                }
            }
            LinkEvent::Query(from, query) => {
                // A query stops with its link: the handler's future is dropped then, so a store
                // scan nobody waits for can stop (the gateway's broker does).
                let (handler, link) = (self.handler.clone(), self.outcomes_tx.clone());
                self.spawn_handler(from, move |client| async move {
                    let answering = guarded(async move { handler.query(&client, query).await });
                    tokio::select! {
                        answer = answering => Answer::Query(answer),
                        () = link.closed() => Answer::Query(Err(HandlerError::Unavailable("the link ended".into()))),
                    }
                })
                .await
            }
            LinkEvent::Request(from, request) => {
                let handler = self.handler.clone();
                self.spawn_handler(from, move |client| async move {
                    Answer::App(guarded(async move { handler.request(&client, request).await }).await)
                })
                .await
            }
            LinkEvent::Acked(count) => {
                if let Some(subscriber) = &mut self.subscriber {
                    subscriber.acknowledged(count);
                }
                Ok(())
            }
            LinkEvent::Answer(id, answer) => {
                if let Some(reply) = self.calls.remove(&id) {
                    let _ = reply.send(answer);
                }
                Ok(())
            }
            LinkEvent::Ended(_) | LinkEvent::Other => Ok(()),
        }
    }

    /// Runs a handler for a client request in its own task; its answer comes back as an outcome.
    async fn spawn_handler<F, Fut>(&mut self, from: Incoming, call: F) -> Result<(), LinkError>
    where
        F: FnOnce(Arc<ClientInfo>) -> Fut,
        Fut: Future<Output = Answer> + Send + 'static,
    {
        let client = self.client.clone();
        let client = match (self.busy(), client) {
            (Some(reason), _) => return self.refuse(from, reason).await,
            (None, None) => return self.refuse(from, "not connected").await,
            (None, Some(client)) => client,
        };
        self.handling += 1;
        let (outcomes, generation, answering) = (self.outcomes_tx.clone(), self.generation, call(client));
        tokio::spawn(async move {
            let answer = answering.await;
            let _ = outcomes.send(Outcome::Answer { generation, from, answer }).await;
        });
        Ok(())
    }

    async fn finish(mut self, result: Result<(), LinkError>) {
        match &result {
            Ok(()) => log::debug!("connection {} from {} closed", self.id, self.peer),
            // The client dropped the connection without the close handshake.
            Err(DriverError::Closed) => log::debug!("connection {} from {} dropped by the client", self.id, self.peer),
            // The same over TLS: the client closed TCP without TLS's close_notify.
            Err(DriverError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                log::debug!("connection {} from {} dropped by the client ({e})", self.id, self.peer);
            }
            Err(e @ (DriverError::Frame(_) | DriverError::Session(_))) => {
                self.shared.stats.bad_input.fetch_add(1, Ordering::Relaxed);
                log::warn!("connection {} from {}: bad input, closed: {e}", self.id, self.peer);
            }
            Err(e) => log::warn!("connection {} from {} failed: {e}", self.id, self.peer),
        }
        self.unlist();
        // The worker stops after the batch in progress; `disconnect` comes after it.
        self.outcomes.close();
        if let Err(e) = (&mut self.worker).await {
            log::error!("connection {}: store worker failed: {e}", self.id);
        }
        self.disconnect().await;
        if result.is_ok() {
            // Our EOF, if still buffered; never past a closing connection's deadline.
            let until = self.deadline.unwrap_or_else(|| tokio::time::Instant::now() + self.shared.shutdown_timeout);
            let _ = tokio::time::timeout_at(until, self.driver.flush()).await;
            // Then close our side: over TLS that sends close_notify, so the client sees a close
            // and not a cut connection; over TCP it is the FIN that dropping would send.
            let _ = tokio::time::timeout_at(until, self.driver.io().inner_mut().shutdown()).await;
        }
    }
}

/// The next notification (with `take`) or the cut-off of the link's subscriber; never, without one.
async fn next_delivery(subscriber: &mut Option<Subscriber>, take: bool) -> Delivery {
    match subscriber {
        Some(subscriber) => subscriber.next(take).await,
        None => std::future::pending().await,
    }
}
