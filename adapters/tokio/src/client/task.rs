//! The client's task: the core machine (on the heap, its outbox in storage the options size),
//! the links it opens one after another, the handles' commands, and the events and answers it
//! hands back. While no link is up it keeps taking commands: registrations queue in the outbox,
//! requests fail at once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use embedded_io_adapters::tokio_1::FromTokio;
use rivulet_core::driver::{Clock, Driver, DriverError, write_with_room};
use rivulet_core::session::{self, ClientConfig, ClientEvent, Incoming, Reply, RequestId};
use rivulet_core::time::Instant;
use rivulet_core::wire::{FrameWriter, LinkDecoder};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch};

use super::subscriptions::{SubscriptionChange, Subscriptions, apply_offline};
use super::{
    ALIASES, Answer, COMMAND_BATCH, ClientError, ClientOptions, ClientState, Command, Connect, INFLIGHT, REFUSALS_KEPT,
    SUBSCRIPTIONS, SharedNotes,
};
use crate::link::{self, Jitter, LinkError, TokioClock, WriteError};
use crate::model::{Event, QueryPage, RegisterEvent, Status, pack_list};
use crate::packet::{PacketHandler, PacketReply, PacketRequest};

/// The core client as this task holds it.
type CoreClient = session::Client<'static, Box<[u8]>, INFLIGHT, ALIASES, SUBSCRIPTIONS>;

/// The core client behind a type without lifetime parameters: with one, the compiler cannot
/// prove the task's future `Send` (rust-lang/rust#110338).
pub(super) struct SessionMachine(CoreClient);

impl std::ops::Deref for SessionMachine {
    type Target = CoreClient;
    fn deref(&self) -> &CoreClient {
        &self.0
    }
}

impl std::ops::DerefMut for SessionMachine {
    fn deref_mut(&mut self) -> &mut CoreClient {
        &mut self.0
    }
}

impl session::Machine for SessionMachine {
    type Event<'a> = ClientEvent<'a>;
    fn handle<'a>(&'a mut self, now: Instant, body: &'a [u8]) -> Result<Option<ClientEvent<'a>>, session::Error> {
        self.0.handle(now, body)
    }
    fn poll(&mut self, now: Instant) -> Option<session::TimerEvent> {
        self.0.poll(now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn poll_transmit(&mut self, now: Instant, out: &mut FrameWriter<'_>) -> Result<(), session::Error> {
        self.0.poll_transmit(now, out)
    }
}

/// The running client: its handles' commands, the machine and the current link.
pub(super) struct Task<H> {
    options: ClientOptions,
    handler: Arc<H>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    state: watch::Sender<ClientState>,
    notes: SharedNotes,
    /// Events the machine delivered that are not yet in the application's queue (at most a
    /// window: their acks are held). What a link leaves here goes to the application before the
    /// next link opens, since the next init announces a whole window again.
    undelivered: VecDeque<Event>,
}

/// Requests awaiting answers, by what the answer becomes.
enum Waiting {
    Registered(Answer<Vec<Event>>),
    Query(Answer<QueryPage>),
    App(Answer<PacketReply>),
    Ping(Answer<std::time::Duration>),
}

impl Waiting {
    fn fail(self, error: ClientError) {
        // The asker may have given up waiting: nobody to tell then.
        match self {
            Waiting::Registered(a) => drop(a.send(Err(error))),
            Waiting::Query(a) => drop(a.send(Err(error))),
            Waiting::App(a) => drop(a.send(Err(error))),
            Waiting::Ping(a) => drop(a.send(Err(error))),
        }
    }
}

/// What a link's loop woke up for, owned so the machine is free again.
enum Input {
    Link(Result<Option<LinkEvent>, LinkError>),
    Command(Option<Command>),
    Answer(u64, Incoming, Result<PacketReply, String>),
    EventTaken(Option<mpsc::OwnedPermit<Event>>),
}

enum LinkEvent {
    Connected { resumed: bool, status: Status, registered_below: u32 },
    Challenge(Vec<u8>),
    Refused(String),
    Status(Status),
    Event(Event),
    Registered(u32),
    Response(RequestId, Reply<'static>, Option<ReplyBody>),
    Failed(RequestId, ClientError),
    Request(Incoming, PacketRequest),
    Subscribed,
    SubscriptionRefused(String),
    RegistrationRefused(u32, String),
    Closing(String),
    Ended,
}

/// The parts of a reply that borrow the packet, copied out.
enum ReplyBody {
    Query(QueryPage),
    Registered(Vec<Event>),
    App(PacketReply),
}

impl From<ClientEvent<'_>> for LinkEvent {
    fn from(event: ClientEvent<'_>) -> Self {
        match event {
            ClientEvent::Connected { resumed, status, registered_below } => {
                LinkEvent::Connected { resumed, status, registered_below }
            }
            ClientEvent::Challenge { nonce } => LinkEvent::Challenge(nonce.to_vec()),
            ClientEvent::Refused { reason } => LinkEvent::Refused(reason.into()),
            ClientEvent::Status(status) => LinkEvent::Status(status),
            ClientEvent::Event(event) => LinkEvent::Event(event.into()),
            ClientEvent::Registered { below_seq } => LinkEvent::Registered(below_seq),
            ClientEvent::Response { id, reply } => {
                let owned = match reply {
                    Reply::Query(result) => Some(ReplyBody::Query(QueryPage {
                        events: result.events.iter().map(Event::from).collect(),
                        more_follows: result.more_follows,
                    })),
                    Reply::Registered(list) => Some(ReplyBody::Registered(list.iter().map(Event::from).collect())),
                    Reply::App { flags, payload } => Some(ReplyBody::App(PacketReply::new(flags, payload))),
                    Reply::Pong { .. } => None,
                };
                let kept = match reply {
                    Reply::Pong { rtt } => Reply::Pong { rtt },
                    _ => Reply::App { flags: 0, payload: &[] },
                };
                LinkEvent::Response(id, kept, owned)
            }
            ClientEvent::RequestFailed { id, error } => LinkEvent::Failed(id, error.into()),
            ClientEvent::Request { from, rq_type, flags, payload } => {
                LinkEvent::Request(from, PacketRequest { rq_type, flags, payload: payload.to_vec() })
            }
            ClientEvent::Subscribed => LinkEvent::Subscribed,
            ClientEvent::SubscriptionRefused { reason } => LinkEvent::SubscriptionRefused(reason.into()),
            ClientEvent::RegistrationRefused { seq, reason } => LinkEvent::RegistrationRefused(seq, reason.into()),
            ClientEvent::Closing { reason } => LinkEvent::Closing(reason.into()),
            ClientEvent::LinkEnded(_) => LinkEvent::Ended,
        }
    }
}

/// How a link ended.
enum LinkOutcome {
    /// The link dropped: reconnect. `was_open` says the server had accepted the init.
    Dropped { was_open: bool },
    /// The server refused the init.
    Refused(String),
    /// The application closed the client.
    Closed,
}

impl<H: PacketHandler> Task<H> {
    pub(super) fn new(
        options: ClientOptions,
        handler: H,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        state: watch::Sender<ClientState>,
        notes: SharedNotes,
    ) -> Self {
        Task { options, handler: Arc::new(handler), commands, events, state, notes, undelivered: VecDeque::new() }
    }

    pub(super) async fn run<C: Connect>(&mut self, connector: C, ready: oneshot::Sender<Result<(), ClientError>>) {
        let options = self.options.clone();
        // The machine's configuration borrows the name and credential for the whole session. They
        // are leaked once per client (a few bytes): with a borrowed lifetime in the machine the
        // compiler cannot prove the task's future `Send` (rust-lang/rust#110338).
        let name: &'static str = Box::leak(options.name.clone().into_boxed_str());
        let credential: Option<&'static [u8]> = options.credential.clone().map(|c| &*Box::leak(c.into_boxed_slice()));
        let mut config = ClientConfig::new(name);
        config.credential = credential;
        config.server_id = options.server_id;
        config.persisted = options.persisted;
        config.keepalive = rivulet_core::time::Duration::from_core(options.keepalive);
        config.request_timeout = rivulet_core::time::Duration::from_core(options.request_timeout);
        config.window = options.window;
        config.max_packet = options.max_packet;
        config.hold_acks = true;
        // Zeroed, so the pages the outbox never reaches are never touched; the machine's own
        // tables (about 17 KiB) go on the heap too, to keep the task's future small.
        let outbox = vec![0; options.outbox].into_boxed_slice();
        let mut machine = Box::new(SessionMachine(CoreClient::new(config, outbox)));
        for pattern in &options.subscriptions {
            if machine.subscribe(pattern.as_ref()).is_err() {
                let _ = ready.send(Err(ClientError::TooLarge));
                return;
            }
        }
        let (mut rx, mut tx) = link::buffers(options.framing, options.max_packet as usize);
        let mut ready = Some(ready);
        let mut jitter = Jitter::new();
        let mut attempt = 0u32;
        let mut parked: VecDeque<(RegisterEvent, Answer<u32>)> = VecDeque::new();
        loop {
            // The first connection is awaited by `connect`; later ones serve commands meanwhile.
            let connecting = tokio::time::timeout(options.request_timeout, connector.connect());
            let connected = if ready.is_some() {
                connecting.await
            } else {
                match self.offline(&mut machine, &mut parked, connecting).await {
                    Some(result) => result,
                    None => return,
                }
            };
            let connected = connected.map_err(|_| std::io::ErrorKind::TimedOut.into()).and_then(|r| r);
            let stream: link::Stream = match connected {
                Ok(stream) => Box::new(stream),
                Err(e) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(ClientError::Io(e.to_string())));
                        return;
                    }
                    log::debug!("reconnect failed: {e}");
                    let delay = options.reconnect.delay(attempt, &mut jitter);
                    attempt = attempt.saturating_add(1);
                    if self.offline(&mut machine, &mut parked, tokio::time::sleep(delay)).await.is_none() {
                        return;
                    }
                    continue;
                }
            };
            let outcome = self.run_link(stream, &mut machine, &mut rx, &mut tx, &mut parked, &mut ready).await;
            machine.link_down();
            self.update_state(&machine, false);
            match outcome {
                LinkOutcome::Closed => return,
                LinkOutcome::Refused(reason) => {
                    log::warn!("server refused the init: {reason}");
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(ClientError::Refused(reason)));
                    }
                    return;
                }
                LinkOutcome::Dropped { was_open } => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(ClientError::Disconnected));
                        return;
                    }
                    if !self.hand_over(&mut machine, &mut parked).await {
                        return;
                    }
                    // A link that worked starts the backoff over; one that never opened grows it.
                    attempt = if was_open { 0 } else { attempt.saturating_add(1) };
                    let delay = options.reconnect.delay(attempt, &mut jitter);
                    if self.offline(&mut machine, &mut parked, tokio::time::sleep(delay)).await.is_none() {
                        return;
                    }
                }
            }
        }
    }

    fn update_state(&self, machine: &SessionMachine, connected: bool) {
        self.state.send_modify(|state| {
            state.connected = connected;
            state.status = machine.status();
            state.session = machine.session_id();
            state.links = machine.stats().links;
        });
    }

    /// Waits for `until` between links. Meanwhile registrations and subscriptions still go to
    /// the machine, and anything that needs the server fails at once. `None` when the client was
    /// closed.
    async fn offline<T>(
        &mut self,
        machine: &mut SessionMachine,
        parked: &mut VecDeque<(RegisterEvent, Answer<u32>)>,
        until: impl Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(until);
        loop {
            let command = tokio::select! {
                done = &mut until => return Some(done),
                command = self.commands.recv(), if parked.is_empty() => command,
                permit = self.events.clone().reserve_owned(), if !self.undelivered.is_empty() => {
                    self.deliver_one(permit.ok());
                    continue;
                }
            };
            if !self.offline_command(machine, parked, command) {
                return None;
            }
        }
    }

    /// Gives the application what the last link delivered, serving commands meanwhile. False
    /// when the client was closed.
    async fn hand_over(
        &mut self,
        machine: &mut SessionMachine,
        parked: &mut VecDeque<(RegisterEvent, Answer<u32>)>,
    ) -> bool {
        while !self.undelivered.is_empty() {
            tokio::select! {
                permit = self.events.clone().reserve_owned() => self.deliver_one(permit.ok()),
                command = self.commands.recv(), if parked.is_empty() => {
                    if !self.offline_command(machine, parked, command) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Moves the oldest undelivered event into the application's queue; without a permit (the
    /// application dropped its `Events`) nobody is left to give them to.
    fn deliver_one(&mut self, permit: Option<mpsc::OwnedPermit<Event>>) {
        match permit {
            Some(permit) => {
                if let Some(event) = self.undelivered.pop_front() {
                    permit.send(event);
                }
            }
            None => self.undelivered.clear(),
        }
    }

    /// Carries out a command between links; false when the client is to close.
    fn offline_command(
        &mut self,
        machine: &mut SessionMachine,
        parked: &mut VecDeque<(RegisterEvent, Answer<u32>)>,
        command: Option<Command>,
    ) -> bool {
        {
            let Some(command) = command else { return false }; // every handle is gone
            match command {
                Command::Close => return false,
                Command::Register(event, answer) => register(machine, parked, event, answer),
                Command::Subscribe(pattern, answer) => apply_offline(machine, SubscriptionChange::Add(pattern, answer)),
                Command::Unsubscribe(pattern, answer) => {
                    apply_offline(machine, SubscriptionChange::Remove(pattern, answer));
                }
                Command::RegisterWithResponse(_, answer) => {
                    let _ = answer.send(Err(ClientError::NotConnected));
                }
                Command::Query(_, answer) => {
                    let _ = answer.send(Err(ClientError::NotConnected));
                }
                Command::Request(_, answer) => {
                    let _ = answer.send(Err(ClientError::NotConnected));
                }
                Command::Ping(answer) => {
                    let _ = answer.send(Err(ClientError::NotConnected));
                }
            }
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_link(
        &mut self,
        stream: link::Stream,
        machine: &mut SessionMachine,
        rx: &mut [u8],
        tx: &mut [u8],
        parked: &mut VecDeque<(RegisterEvent, Answer<u32>)>,
        ready: &mut Option<oneshot::Sender<Result<(), ClientError>>>,
    ) -> LinkOutcome {
        let clock = TokioClock::new();
        let generation = machine.stats().links + 1;
        machine.link_up(clock.now());
        let mut driver = Driver::new(
            FromTokio::new(stream),
            LinkDecoder::new(self.options.framing, rx),
            FrameWriter::new(tx, self.options.framing),
        );
        let mut waiting: HashMap<RequestId, Waiting> = HashMap::new();
        let (answer_tx, mut answers) = mpsc::channel::<(u64, Incoming, Result<PacketReply, String>)>(INFLIGHT);
        let mut closing = false;
        let mut opened = false;
        let mut subscriptions = Subscriptions::default();
        let outcome = loop {
            let commands_open = parked.is_empty() && !closing;
            let woke = tokio::select! {
                step = driver.step(machine, &clock) => Input::Link(step.map(|e| e.map(LinkEvent::from))),
                permit = self.events.clone().reserve_owned(), if !self.undelivered.is_empty() => Input::EventTaken(permit.ok()),
                command = self.commands.recv(), if commands_open => Input::Command(command),
                Some((generation, from, answer)) = answers.recv() => Input::Answer(generation, from, answer),
            };
            match woke {
                Input::EventTaken(permit) => {
                    // No permit: the application dropped its `Events`; nobody is left to give them to.
                    // Every undelivered event is this link's: the last link's were handed over first.
                    let count = if permit.is_some() { 1 } else { self.undelivered.len() };
                    self.deliver_one(permit);
                    machine.release(u32::try_from(count).unwrap_or(u32::MAX));
                }
                Input::Link(Ok(None)) => {}
                Input::Link(Err(DriverError::Session(e))) => {
                    log::warn!("link dropped: the server broke the protocol ({e})");
                    break LinkOutcome::Dropped { was_open: opened };
                }
                Input::Link(Err(e)) => {
                    log::debug!("link dropped: {e}");
                    break if closing { LinkOutcome::Closed } else { LinkOutcome::Dropped { was_open: opened } };
                }
                Input::Link(Ok(Some(event))) => match event {
                    LinkEvent::Ended => {
                        break if closing { LinkOutcome::Closed } else { LinkOutcome::Dropped { was_open: opened } };
                    }
                    LinkEvent::Refused(reason) => break LinkOutcome::Refused(reason),
                    LinkEvent::Connected { resumed, status, registered_below } => {
                        log::debug!("connected (resumed: {resumed}, status {status:?})");
                        opened = true;
                        self.state.send_modify(|s| s.registered_below = registered_below);
                        self.update_state(machine, true);
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(Ok(()));
                        }
                        retry_parked(machine, parked);
                    }
                    LinkEvent::Challenge(nonce) => {
                        let proof = self.options.challenge.as_ref().map(|answer| answer(&nonce));
                        match proof.map(|proof| machine.answer_challenge(&proof)) {
                            Some(Ok(())) => {}
                            _ => break LinkOutcome::Refused("challenged, and no answer to give".into()),
                        }
                    }
                    LinkEvent::Status(status) => self.state.send_modify(|s| s.status = status),
                    LinkEvent::Event(event) if self.undelivered.is_empty() => match self.events.try_send(event) {
                        Err(mpsc::error::TrySendError::Full(event)) => self.undelivered.push_back(event),
                        // Queued, or nobody reads events any more: either way it is taken.
                        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {
                            machine.release(1);
                        }
                    },
                    LinkEvent::Event(event) => self.undelivered.push_back(event),
                    LinkEvent::Registered(below) => {
                        self.state.send_modify(|s| s.registered_below = below);
                        retry_parked(machine, parked);
                    }
                    LinkEvent::Response(id, pong, reply) => match (waiting.remove(&id), reply, pong) {
                        (Some(Waiting::Query(a)), Some(ReplyBody::Query(page)), _) => drop(a.send(Ok(page))),
                        (Some(Waiting::Registered(a)), Some(ReplyBody::Registered(events)), _) => {
                            drop(a.send(Ok(events)))
                        }
                        (Some(Waiting::App(a)), Some(ReplyBody::App(reply)), _) => drop(a.send(Ok(reply))),
                        (Some(Waiting::Ping(a)), None, Reply::Pong { rtt }) => {
                            drop(a.send(Ok(std::time::Duration::from_micros(rtt.as_micros()))))
                        }
                        (Some(other), _, _) => other.fail(ClientError::Refused("answer of another kind".into())),
                        (None, _, _) => {}
                    },
                    LinkEvent::Failed(id, error) => {
                        if let Some(w) = waiting.remove(&id) {
                            w.fail(error);
                        }
                    }
                    LinkEvent::Request(from, request) => {
                        let (handler, answer_tx) = (self.handler.clone(), answer_tx.clone());
                        tokio::spawn(async move {
                            let handling = tokio::spawn(async move { handler.handle(request).await });
                            let answer = handling.await.unwrap_or_else(|_| Err("exception during handler".into()));
                            let _ = answer_tx.send((generation, from, answer)).await;
                        });
                    }
                    LinkEvent::Subscribed => subscriptions.answered(machine, None),
                    LinkEvent::Closing(reason) => {
                        log::warn!("the server is closing the link: {reason}");
                        self.notes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).closing = Some(reason);
                    }
                    LinkEvent::SubscriptionRefused(reason) => subscriptions.answered(machine, Some(reason)),
                    LinkEvent::RegistrationRefused(seq, reason) => {
                        log::warn!("server refused registration {seq}: {reason}");
                        let mut notes = self.notes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        if notes.refusals.len() == REFUSALS_KEPT {
                            notes.refusals.pop_front();
                        }
                        notes.refusals.push_back((seq, reason));
                        self.state.send_modify(|s| s.refused += 1);
                    }
                },
                Input::Answer(answer_generation, from, answer) => {
                    if answer_generation != generation {
                        continue; // the request came on a link that is gone
                    }
                    let written = write_with_room(&mut driver, |out| match &answer {
                        Ok(reply) => machine.respond(from, reply.flags, &reply.payload, out),
                        Err(reason) => machine.refuse(from, reason, out),
                    })
                    .await;
                    if let Err(WriteError::Link(e)) = written {
                        log::debug!("link dropped: {e}");
                        break LinkOutcome::Dropped { was_open: opened };
                    }
                }
                Input::Command(first) => {
                    // Whatever else is queued goes too (up to a batch), so that a burst of
                    // registrations leaves in one write rather than one write each.
                    let (mut next, mut taken) = (first, 0);
                    let dropped = loop {
                        match next {
                            None | Some(Command::Close) => {
                                closing = true;
                                machine.close();
                            }
                            Some(Command::Subscribe(pattern, answer)) if opened => {
                                subscriptions.change(machine, SubscriptionChange::Add(pattern, answer));
                            }
                            Some(Command::Unsubscribe(pattern, answer)) if opened => {
                                subscriptions.change(machine, SubscriptionChange::Remove(pattern, answer));
                            }
                            Some(command) => {
                                // Its own time: a write before it in the batch may have waited.
                                let now = clock.now();
                                let done = self.command(command, machine, &mut driver, now, &mut waiting, parked).await;
                                if let Err(e) = done {
                                    log::debug!("link dropped: {e}");
                                    break true;
                                }
                            }
                        }
                        taken += 1;
                        if closing || !parked.is_empty() || taken == COMMAND_BATCH {
                            break false;
                        }
                        match self.commands.try_recv() {
                            Ok(command) => next = Some(command),
                            Err(_) => break false,
                        }
                    };
                    if dropped {
                        break LinkOutcome::Dropped { was_open: opened };
                    }
                }
            }
        };
        for (_, w) in waiting.drain() {
            w.fail(ClientError::Disconnected);
        }
        if let LinkOutcome::Closed = outcome {
            // Close our side: over TLS that sends close_notify, so the server sees a close and not
            // a cut connection; over TCP it is the FIN that dropping would send.
            let closing = driver.io().inner_mut().shutdown();
            let _ = tokio::time::timeout(self.options.request_timeout, closing).await;
        }
        subscriptions.link_ended(machine);
        // What is left in `undelivered` was delivered by the machine, so it is never notified
        // again: `hand_over` gives it to the application before the next link.
        outcome
    }

    /// Carries out one command on an open link.
    async fn command(
        &mut self,
        command: Command,
        machine: &mut SessionMachine,
        driver: &mut link::TokioDriver<'_, link::Stream>,
        now: Instant,
        waiting: &mut HashMap<RequestId, Waiting>,
        parked: &mut VecDeque<(RegisterEvent, Answer<u32>)>,
    ) -> Result<(), LinkError> {
        let mut buf = Vec::new();
        let (sent, w) = match command {
            Command::Register(event, answer) => {
                register(machine, parked, event, answer);
                return Ok(());
            }
            // Before the init is accepted: the change goes with the init or right after it.
            Command::Subscribe(pattern, answer) => {
                apply_offline(machine, SubscriptionChange::Add(pattern, answer));
                return Ok(());
            }
            Command::Unsubscribe(pattern, answer) => {
                apply_offline(machine, SubscriptionChange::Remove(pattern, answer));
                return Ok(());
            }
            Command::Close => return Ok(()),
            Command::RegisterWithResponse(events, answer) => {
                let list = pack_list(events.iter().map(RegisterEvent::as_ref), &mut buf);
                let sent = write_with_room(driver, |out| machine.register_with_response(now, list, out)).await;
                (sent, Waiting::Registered(answer))
            }
            Command::Query(query, answer) => {
                let params = query.to_params(&mut buf);
                (write_with_room(driver, |out| machine.query(now, &params, out)).await, Waiting::Query(answer))
            }
            Command::Request(request, answer) => {
                let PacketRequest { rq_type, flags, payload } = &request;
                let sent = write_with_room(driver, |out| machine.request(now, *rq_type, *flags, payload, out)).await;
                (sent, Waiting::App(answer))
            }
            Command::Ping(answer) => {
                (write_with_room(driver, |out| machine.ping(now, out)).await, Waiting::Ping(answer))
            }
        };
        match sent {
            Ok(id) => {
                waiting.insert(id, w);
                Ok(())
            }
            Err(WriteError::Link(e)) => {
                w.fail(ClientError::Disconnected);
                Err(e)
            }
            Err(WriteError::Session(session::Error::TooLarge)) => {
                w.fail(over_server_limit(machine));
                Ok(())
            }
            Err(WriteError::TooLarge) | Err(WriteError::Session(session::Error::Wire(_))) => {
                w.fail(ClientError::TooLarge);
                Ok(())
            }
            Err(WriteError::Session(session::Error::NotConnected)) => {
                w.fail(ClientError::NotConnected);
                Ok(())
            }
            Err(WriteError::Session(session::Error::TooManyRequests)) => {
                w.fail(ClientError::Refused("too many requests in flight".into()));
                Ok(())
            }
            Err(WriteError::Session(_)) => {
                w.fail(ClientError::Closed);
                Ok(())
            }
        }
    }
}

/// Puts a registration in the outbox, or parks it (in order) until acknowledgements make room.
fn register(
    machine: &mut SessionMachine,
    parked: &mut VecDeque<(RegisterEvent, Answer<u32>)>,
    event: RegisterEvent,
    answer: Answer<u32>,
) {
    if !parked.is_empty() {
        parked.push_back((event, answer));
        return;
    }
    let e = event.as_ref();
    match machine.register(e.event_type, e.source_timestamp, e.payload) {
        Ok(seq) => drop(answer.send(Ok(seq))),
        Err(session::Error::OutboxFull) if machine.outbox_len() > 0 => parked.push_back((event, answer)),
        Err(e) => drop(answer.send(Err(not_registered(machine, e)))),
    }
}

/// Why an event could not go into the outbox.
fn not_registered(machine: &SessionMachine, error: session::Error) -> ClientError {
    match error {
        session::Error::TooLarge => over_server_limit(machine),
        _ => ClientError::TooLarge,
    }
}

/// A request or event larger than the connected server receives.
fn over_server_limit(machine: &SessionMachine) -> ClientError {
    machine.server_max_packet().map_or(ClientError::TooLarge, ClientError::OverServerLimit)
}

/// Moves parked registrations into the outbox while it has room.
fn retry_parked(machine: &mut SessionMachine, parked: &mut VecDeque<(RegisterEvent, Answer<u32>)>) {
    while let Some((event, answer)) = parked.pop_front() {
        let e = event.as_ref();
        match machine.register(e.event_type, e.source_timestamp, e.payload) {
            Ok(seq) => drop(answer.send(Ok(seq))),
            Err(session::Error::OutboxFull) if machine.outbox_len() > 0 => {
                parked.push_front((event, answer));
                return;
            }
            Err(e) => drop(answer.send(Err(not_registered(machine, e)))),
        }
    }
}
