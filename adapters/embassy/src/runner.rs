//! The runner: the task that owns the core client machine, the transport and the link buffers.
//!
//! It loops over links. Between links it waits (for the application to take the last link's
//! events, for the transport, for the backoff) while it keeps serving the handle: registrations
//! and subscriptions go into the machine offline too. On a link it races three futures with
//! `select3`, in this order:
//!
//! 1. a command from the handle (register, subscribe, respond...), answered at once;
//! 2. "the application took an event", which releases that event's held acknowledgement;
//! 3. [`Driver::step`]: one packet handled, a timer run, or what the machine owes written and
//!    input awaited until its next deadline.
//!
//! Losing the race drops the other futures, which is safe: the channel receive and the signal
//! wait take nothing unless they complete, and every await point of `Driver::step` is
//! cancel-safe as long as the stream's `read` and `write` are (embassy-net's `TcpSocket` and the
//! usual UART drivers are): bytes read are committed to the decoder in the same poll that
//! returns them, bytes written are consumed from the transmit buffer likewise, and what the
//! machine wrote into the transmit buffer stays there for the next step to flush. The first two
//! are bounded (a caller waits for each answer; takes are bounded by the window), so polling
//! them first cannot starve the link.

use core::marker::PhantomData;
use core::pin::pin;

use embassy_futures::select::{Either, Either3, select, select3};
use embassy_sync::blocking_mutex::raw::{CriticalSectionRawMutex, RawMutex};
use embassy_time::{Duration, Timer, with_timeout};
use embedded_io_async::{ErrorKind, Read, Write};
use rivulet_core::driver::{Clock, Driver, DriverError, LinkBroken, write_with_room};
use rivulet_core::model::{PAYLOAD_BYTES, TYPE_BYTES};
use rivulet_core::session::{self, Client, ClientEvent, Incoming, LinkEnd, OutboxStorage};
use rivulet_core::wire::{FrameDecoder, FrameWriter, Framing, FramingChoice, LinkDecoder};

use crate::connect::Connect;
use crate::device::{Error, Request, RequestFrom};
use crate::state::{Call, Command, Reply, State};
use crate::status::LinkStatus;
use crate::time::{Backoff, EmbassyClock, Jitter};

/// The reason a request gets when the request queue is full.
pub const REQUEST_QUEUE_FULL: &str = "device busy: request queue full";
/// The reason a request gets when its payload is larger than [`REQUEST_BYTES`](crate::REQUEST_BYTES).
pub const REQUEST_TOO_LARGE: &str = "request payload too large for the device";

/// Runs the device's links; spawn [`Runner::run`] in a task of its own. It owns the core client
/// machine (`OUTBOX` bytes of unacknowledged registrations, the outbox's storage inline,
/// `INFLIGHT` requests, `ALIASES` event types each way, `SUBS` bytes of subscription patterns),
/// the connector and the link buffers.
pub struct Runner<
    'd,
    C,
    M: RawMutex = CriticalSectionRawMutex,
    const EVENTS: usize = 4,
    const REQUESTS: usize = 2,
    const OUTBOX: usize = 1024,
    const INFLIGHT: usize = 4,
    const ALIASES: usize = 8,
    const SUBS: usize = 128,
> {
    pub(crate) endpoint: Endpoint<'d, M, EVENTS, REQUESTS, OUTBOX, INFLIGHT, ALIASES, SUBS>,
    pub(crate) connector: C,
    /// It lives across links: a serial line's keeps its place (`FrameDecoder::reset_link`).
    pub(crate) decoder: LinkDecoder<'d, FramingOf<C>>,
    pub(crate) writer: FrameWriter<'d>,
    pub(crate) backoff: Backoff,
    pub(crate) jitter: Jitter,
    pub(crate) connect_timeout: Duration,
}

/// The device's end of the protocol: the client machine, the state it shares with the handle,
/// and the status it publishes.
pub(crate) struct Endpoint<
    'd,
    M: RawMutex,
    const EVENTS: usize,
    const REQUESTS: usize,
    const OUTBOX: usize,
    const INFLIGHT: usize,
    const ALIASES: usize,
    const SUBS: usize,
> {
    pub(crate) state: &'d State<M, EVENTS, REQUESTS>,
    pub(crate) client: Client<'d, [u8; OUTBOX], INFLIGHT, ALIASES, SUBS>,
    /// Numbers links, so an answer never goes to a later link than its request came on.
    pub(crate) link: u32,
    /// The counters kept here, and the machine's state as of the last `publish`.
    pub(crate) status: LinkStatus,
    pub(crate) published: LinkStatus,
    /// What answers a login challenge.
    #[cfg(feature = "login")]
    pub(crate) token: Option<&'d [u8; crate::login::TOKEN_LEN]>,
}

/// The connector's framing as a type: a link's decoder then holds only that framing's code (a
/// TCP device carries no COBS or CRC code).
pub(crate) struct FramingOf<C>(PhantomData<fn() -> C>);

impl<C: Connect> FramingChoice for FramingOf<C> {
    const FIXED: Option<Framing> = Some(C::FRAMING);
}

impl<
    'd,
    C: Connect,
    M: RawMutex,
    const EVENTS: usize,
    const REQUESTS: usize,
    const OUTBOX: usize,
    const INFLIGHT: usize,
    const ALIASES: usize,
    const SUBS: usize,
> Runner<'d, C, M, EVENTS, REQUESTS, OUTBOX, INFLIGHT, ALIASES, SUBS>
{
    /// Keeps the device linked to its gateway, for ever: connect, run the link, back off,
    /// reconnect. Sessions resume by themselves (the outbox is replayed from where the server
    /// stands, the subscriptions go with every init).
    ///
    /// Meant to run for ever: a future dropped in the middle of a link takes the transmit buffer
    /// with it, and a later `run` has none to send with.
    pub async fn run(&mut self) -> ! {
        // Borrowed in place: the task's future then holds the runner once, not a second copy.
        let Runner { endpoint, connector, decoder, writer, backoff, jitter, connect_timeout } = self;
        let mut attempt = 0u32;
        loop {
            // The next init announces the whole event queue as its window: the events of the last
            // link must all be taken first, or the server could send more than the queue holds.
            endpoint.offline(endpoint.state.events_drained()).await;
            let connecting = with_timeout(*connect_timeout, connector.connect());
            let accepted = match endpoint.offline(connecting).await {
                Ok(Ok(io)) => endpoint.run_link::<C>(io, decoder, writer).await,
                Ok(Err(error)) => {
                    log_connect_error(&error);
                    endpoint.status.connect_failures = endpoint.status.connect_failures.wrapping_add(1);
                    false
                }
                Err(_) => {
                    debug!("connecting timed out");
                    endpoint.status.connect_failures = endpoint.status.connect_failures.wrapping_add(1);
                    false
                }
            };
            // A link the server accepted starts the backoff over; one that never opened grows it.
            if accepted {
                attempt = 0;
            }
            let delay = backoff.delay(attempt, jitter);
            attempt = attempt.saturating_add(1);
            endpoint.offline(Timer::after(delay)).await;
        }
    }
}

impl<M: RawMutex, const EVENTS: usize, const REQUESTS: usize> State<M, EVENTS, REQUESTS> {
    /// Completes once the application has taken every queued event.
    async fn events_drained(&self) {
        while !self.events.is_empty() {
            self.shared.taken.wait().await;
        }
    }
}

fn log_connect_error<E: core::fmt::Debug>(error: &E) {
    #[cfg(feature = "log")]
    log::debug!("connecting failed: {error:?}");
    #[cfg(feature = "defmt")]
    defmt::debug!("connecting failed: {}", defmt::Debug2Format(error));
    #[cfg(not(any(feature = "log", feature = "defmt")))]
    let _ = error;
}

/// Why a packet could not be written: the link's own error is not kept, the link just ends.
type WriteError = rivulet_core::driver::WriteError<LinkBroken>;

/// How a link ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Both sides sent EOF.
    Closed,
    /// Broken, timed out, refused, or given up by the device.
    Dropped,
}

/// What a link's loop acts on next (what its wait returned), owned, so the machine is free again. One lives on the stack at a
/// time, and there is no allocator to box the large call into.
#[allow(clippy::large_enum_variant)]
enum Input {
    Nothing,
    Call(Call),
    Taken,
    Opened {
        resumed: bool,
    },
    /// Refuse this request of the server at once.
    Refuse(Incoming, &'static str),
    /// Acknowledge events the application will never see.
    Release(u32),
    /// The gateway wants a login proof over this nonce.
    #[cfg(feature = "login")]
    Challenge(heapless::Vec<u8, 64>),
    End(End),
}

/// Events pushed to the queue on this link, and acknowledgements released for them.
#[derive(Default)]
struct Held {
    queued: u32,
    released: u32,
}

impl<
    'd,
    M: RawMutex,
    const EVENTS: usize,
    const REQUESTS: usize,
    const OUTBOX: usize,
    const INFLIGHT: usize,
    const ALIASES: usize,
    const SUBS: usize,
> Endpoint<'d, M, EVENTS, REQUESTS, OUTBOX, INFLIGHT, ALIASES, SUBS>
{
    /// Waits for `until` between links, serving the handle meanwhile: what needs no link goes
    /// into the machine, answers to requests fail (their link has ended).
    async fn offline<F: Future>(&mut self, until: F) -> F::Output {
        let mut until = pin!(until);
        loop {
            self.publish();
            match select(self.state.shared.commands.receive(), until.as_mut()).await {
                Either::First(call) => {
                    let reply = self.keep(&call.command);
                    self.state.shared.replies.signal((call.id, reply));
                }
                Either::Second(done) => return done,
            }
        }
    }

    /// Carries out a command that needs no link.
    fn keep(&mut self, command: &Command) -> Reply {
        let client = &mut self.client;
        match command {
            Command::Register(event) => {
                let event = event.as_ref();
                match client.register(event.event_type, event.source_timestamp, event.payload) {
                    Ok(seq) => Ok(seq),
                    Err(session::Error::OutboxFull) if client.outbox_len() > 0 => Err(Error::OutboxFull),
                    // Larger than the whole outbox (or unencodable): waiting would not help.
                    Err(_) => Err(Error::TooLarge),
                }
            }
            Command::Subscribe(pattern) => match client.subscribe(pattern.as_ref()) {
                Ok(()) => Ok(0),
                Err(session::Error::Model(rivulet_core::model::Error::Capacity)) => Err(Error::SubscriptionsFull),
                Err(_) => Err(Error::InvalidType),
            },
            Command::Unsubscribe(pattern) => Ok(u32::from(client.unsubscribe(pattern.as_ref()))),
            Command::Respond { .. } | Command::Refuse { .. } => Err(Error::LinkEnded),
        }
    }

    /// Publishes the status if it changed, and tells a registration waiting for room when the
    /// outbox shrank.
    fn publish(&mut self) {
        let client = &self.client;
        let status = LinkStatus {
            connected: client.is_connected(),
            server_status: client.status(),
            session: client.session_id(),
            // The outbox holds the consecutive sequence numbers below `next_seq`.
            registered_below: client.next_seq().wrapping_sub(client.outbox_len()),
            outbox_len: client.outbox_len(),
            outbox_bytes: u32::try_from(client.outbox_bytes()).unwrap_or(u32::MAX),
            client: client.stats(),
            ..self.status
        };
        if status != self.published {
            if status.outbox_bytes < self.published.outbox_bytes {
                self.state.shared.room.signal(());
            }
            self.state.shared.status.sender().send(status);
            self.published = status;
        }
        self.status = status;
    }

    /// Runs one link over `io` until it ends; returns whether the server accepted it.
    async fn run_link<C: Connect>(
        &mut self,
        io: C::Io<'_>,
        decoder: &mut LinkDecoder<'d, FramingOf<C>>,
        writer: &mut FrameWriter<'d>,
    ) -> bool {
        decoder.reset_link(); // a new stream: nothing buffered belongs to it; a line keeps its place
        writer.clear(); // serial frame numbers go on from the last frame that went out
        // The driver owns the writer for the link, and gives it back at the end.
        let tx = core::mem::replace(writer, FrameWriter::new(&mut [], C::FRAMING));
        let state = self.state;
        let clock = EmbassyClock;
        self.link = self.link.wrapping_add(1);
        self.client.link_up(clock.now());
        state.shared.taken.reset();
        let mut driver = Driver::new(io, &mut *decoder, tx);
        let mut held = Held::default();
        let mut accepted = false;
        let end = loop {
            self.publish();
            let woke = match select3(
                state.shared.commands.receive(),
                state.shared.taken.wait(),
                driver.step(&mut self.client, &clock),
            )
            .await
            {
                Either3::First(call) => Input::Call(call),
                Either3::Second(()) => Input::Taken,
                Either3::Third(step) => input_of_step(step, state, &mut self.status, self.link, &mut held),
            };
            match &woke {
                Input::Nothing => {}
                // Matched by reference: moving the call's parts out would give them a second
                // place in the task's future, since they are alive across the await below.
                Input::Call(Call { id, command }) => {
                    let (reply, broken) = match command {
                        Command::Respond { from, flags, payload } if from.link == self.link => {
                            let client = &mut self.client;
                            answer(
                                write_with_room(&mut driver, |out| client.respond(from.incoming, *flags, payload, out))
                                    .await,
                            )
                        }
                        Command::Refuse { from, reason } if from.link == self.link => {
                            answer(refuse_with_room(&mut driver, &mut self.client, from.incoming, reason).await)
                        }
                        command => (self.keep(command), false),
                    };
                    state.shared.replies.signal((*id, reply));
                    if broken {
                        break End::Dropped;
                    }
                }
                Input::Taken => {
                    // Every event in the queue came on this link (it was empty when the link
                    // began), so those no longer there were taken by the application.
                    let waiting = u32::try_from(state.events.len()).unwrap_or(u32::MAX);
                    let fresh = held.queued.saturating_sub(waiting).saturating_sub(held.released);
                    if fresh > 0 {
                        held.released = held.released.saturating_add(self.client.release(fresh));
                    }
                }
                Input::Opened { resumed } => {
                    accepted = true;
                    self.status.resumed = *resumed;
                    self.status.links = self.status.links.wrapping_add(1);
                }
                Input::Refuse(incoming, reason) => {
                    if let Err(WriteError::Link(LinkBroken)) =
                        refuse_with_room(&mut driver, &mut self.client, *incoming, reason).await
                    {
                        break End::Dropped;
                    }
                }
                Input::Release(count) => {
                    self.client.release(*count);
                }
                #[cfg(feature = "login")]
                Input::Challenge(nonce) => {
                    let name = self.client.config().client_name;
                    let proof = self.token.and_then(|token| crate::login::proof(token, nonce, name));
                    match proof.map(|proof| self.client.answer_challenge(&proof)) {
                        Some(Ok(())) => debug!("answering the login challenge"),
                        _ => {
                            warn!("the server asks for a login and the device has no token (Config::token)");
                            self.status.inits_refused = self.status.inits_refused.wrapping_add(1);
                            break End::Dropped;
                        }
                    }
                }
                Input::End(end) => break *end,
            }
        };
        let (mut io, _, tx) = driver.into_parts();
        *writer = tx;
        C::disconnect(&mut io, end == End::Closed).await;
        drop(io);
        self.client.link_down();
        // No answer can reach the server on another link: these requests are failed there.
        state.requests.clear();
        self.publish();
        accepted
    }
}

/// What a driver step means for the link's loop. Events and requests go to their queues here.
/// Out of line: inlined into the link's loop it made the firmware larger (docs/FOOTPRINT.md).
#[inline(never)]
fn input_of_step<M: RawMutex, const EVENTS: usize, const REQUESTS: usize, E: embedded_io_async::Error>(
    step: Result<Option<ClientEvent<'_>>, DriverError<E>>,
    state: &State<M, EVENTS, REQUESTS>,
    status: &mut LinkStatus,
    link: u32,
    held: &mut Held,
) -> Input {
    let event = match step {
        Ok(Some(event)) => event,
        Ok(None) => return Input::Nothing,
        Err(error) => {
            match error {
                DriverError::Io(e) => debug!("link dropped: i/o error ({})", kind_name(e.kind())),
                DriverError::Closed => debug!("link dropped: the stream ended"),
                DriverError::Frame(e) => {
                    status.bad_frames = status.bad_frames.wrapping_add(1);
                    debug!("link dropped: bad frame ({})", e);
                }
                DriverError::Session(e) => warn!("link dropped: the server broke the protocol ({})", e),
            }
            return Input::End(End::Dropped);
        }
    };
    match event {
        ClientEvent::Connected { resumed, status: server_status, .. } => {
            info!("connected (resumed: {}, server {:?})", resumed, server_status);
            Input::Opened { resumed }
        }
        #[cfg(feature = "login")]
        ClientEvent::Challenge { nonce } => match heapless::Vec::from_slice(nonce) {
            Ok(nonce) => Input::Challenge(nonce),
            Err(_) => {
                warn!("the server's challenge is longer than 64 bytes; no answer");
                status.inits_refused = status.inits_refused.wrapping_add(1);
                Input::End(End::Dropped)
            }
        },
        #[cfg(not(feature = "login"))]
        ClientEvent::Challenge { .. } => {
            warn!("the server asks for a login; build with the `login` feature and set Config::token");
            status.inits_refused = status.inits_refused.wrapping_add(1);
            Input::End(End::Dropped)
        }
        ClientEvent::Refused { reason } => {
            // The machine closes the link itself.
            warn!("the server refused the init: {}", reason);
            status.inits_refused = status.inits_refused.wrapping_add(1);
            Input::Nothing
        }
        ClientEvent::Event(event) => match event.to_owned::<TYPE_BYTES, PAYLOAD_BYTES>() {
            Ok(owned) => match state.events.try_send(owned) {
                Ok(()) => {
                    held.queued = held.queued.saturating_add(1);
                    Input::Nothing
                }
                Err(_) => {
                    // The queue is the window; only a server that ignores it gets here.
                    warn!("the server sent more events than the window; link dropped");
                    status.events_dropped = status.events_dropped.wrapping_add(1);
                    Input::End(End::Dropped)
                }
            },
            Err(_) => {
                warn!("event too large for the device, dropped");
                status.events_dropped = status.events_dropped.wrapping_add(1);
                Input::Release(1)
            }
        },
        ClientEvent::Request { from, rq_type, flags, payload } => {
            let Ok(payload) = heapless::Vec::from_slice(payload) else {
                status.requests_refused = status.requests_refused.wrapping_add(1);
                return Input::Refuse(from, REQUEST_TOO_LARGE);
            };
            let request = Request { from: RequestFrom { link, incoming: from }, rq_type, flags, payload };
            match state.requests.try_send(request) {
                Ok(()) => Input::Nothing,
                Err(_) => {
                    status.requests_refused = status.requests_refused.wrapping_add(1);
                    Input::Refuse(from, REQUEST_QUEUE_FULL)
                }
            }
        }
        ClientEvent::SubscriptionRefused { reason } => {
            warn!("the server refused the subscriptions: {}", reason);
            status.subscriptions_refused = status.subscriptions_refused.wrapping_add(1);
            Input::Nothing
        }
        ClientEvent::RegistrationRefused { seq, reason } => {
            warn!("the server refused registration {}: {}", seq, reason);
            status.registrations_refused = status.registrations_refused.wrapping_add(1);
            Input::Nothing
        }
        ClientEvent::Closing { reason } => {
            info!("the server is closing the link: {}", reason);
            Input::Nothing
        }
        ClientEvent::LinkEnded(LinkEnd::Closed) => Input::End(End::Closed),
        ClientEvent::LinkEnded(LinkEnd::TimedOut) => {
            debug!("link dropped: timed out");
            Input::End(End::Dropped)
        }
        // The status and the outbox are published from the machine; the device sends no requests
        // of its own, so responses and failures belong to nobody.
        ClientEvent::Status(_)
        | ClientEvent::Registered { .. }
        | ClientEvent::Subscribed
        | ClientEvent::Response { .. }
        | ClientEvent::RequestFailed { .. } => Input::Nothing,
    }
}

/// The reply to an answer the application wrote, and whether the link broke writing it.
fn answer(written: Result<(), WriteError>) -> (Reply, bool) {
    match written {
        Ok(()) => (Ok(0), false),
        Err(WriteError::Link(LinkBroken)) => (Err(Error::LinkEnded), true),
        Err(WriteError::TooLarge) => (Err(Error::TooLarge), false),
        Err(WriteError::Session(session::Error::NotConnected | session::Error::Closed)) => {
            (Err(Error::LinkEnded), false)
        }
        Err(WriteError::Session(_)) => (Err(Error::TooLarge), false),
    }
}

/// Refuses a request of the server, through [`write_with_room`]: one copy for both places that
/// refuse (the application's refusal and the runner's own).
async fn refuse_with_room<
    T: Read + Write,
    D: FrameDecoder,
    O: OutboxStorage,
    const I: usize,
    const A: usize,
    const S: usize,
>(
    driver: &mut Driver<'_, T, D>,
    client: &mut Client<'_, O, I, A, S>,
    incoming: Incoming,
    reason: &str,
) -> Result<(), WriteError> {
    write_with_room(driver, |out| client.refuse(incoming, reason, out)).await
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ConnectionReset => "connection reset",
        ErrorKind::ConnectionAborted => "connection aborted",
        ErrorKind::NotConnected => "not connected",
        ErrorKind::BrokenPipe => "broken pipe",
        ErrorKind::TimedOut => "timed out",
        ErrorKind::Interrupted => "interrupted",
        _ => "other",
    }
}

impl<C, M: RawMutex, const E: usize, const R: usize, const O: usize, const I: usize, const A: usize, const S: usize>
    core::fmt::Debug for Runner<'_, C, M, E, R, O, I, A, S>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Runner")
            .field("status", &self.endpoint.status)
            .field("framing", &self.writer.framing())
            .finish_non_exhaustive()
    }
}
