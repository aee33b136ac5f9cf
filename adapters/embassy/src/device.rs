//! The application's handle: register, subscribe, take events and requests, answer requests,
//! watch the link. Shared by reference across tasks; every call is served by the runner.

use core::future::poll_fn;

use embassy_sync::blocking_mutex::raw::{CriticalSectionRawMutex, RawMutex};
use embassy_sync::channel::SendDynamicReceiver;
use embassy_sync::watch;
use rivulet_core::model::{
    EventPayloadRef, EventType, EventTypeRef, PAYLOAD_BYTES, RegisterEvent, TYPE_BYTES, Timestamp,
};
use rivulet_core::session::Incoming;

use crate::state::{Call, Command, REASON_BYTES, REQUEST_BYTES, Reply, STATUS_WATCHERS, Shared};
use crate::status::LinkStatus;

/// A notified event, owned: its type holds [`TYPE_BYTES`] packed bytes, its payload
/// [`PAYLOAD_BYTES`]. A larger one is dropped by the runner and counted
/// ([`LinkStatus::events_dropped`]).
pub type Event = rivulet_core::model::Event<TYPE_BYTES, PAYLOAD_BYTES>;

/// Why a call failed. Nothing a failed call was given is kept, and nothing already kept is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The outbox has no room for this registration: it was not queued, and nothing queued
    /// before was dropped. Room comes back as the server acknowledges (on the next link, if none
    /// is up); [`Device::register_when_room`] waits for it.
    OutboxFull,
    /// Larger than the device can hold: an event type over [`TYPE_BYTES`], a payload over
    /// [`PAYLOAD_BYTES`] (an answer over [`ANSWER_BYTES`](crate::ANSWER_BYTES)), a registration larger than the whole
    /// outbox, or an answer that does not fit the transmit buffer.
    TooLarge,
    /// Not a valid event type or pattern: an empty segment, or `*` anywhere but last.
    InvalidType,
    /// The subscription list has no room for another pattern.
    SubscriptionsFull,
    /// The link the request came on has ended, so it cannot be answered any more (the server
    /// has failed it already). Nothing was sent.
    LinkEnded,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::OutboxFull => "outbox full",
            Error::TooLarge => "too large for the device's capacities",
            Error::InvalidType => "invalid event type or pattern",
            Error::SubscriptionsFull => "subscription list full",
            Error::LinkEnded => "the request's link has ended",
        })
    }
}

impl core::error::Error for Error {}

/// Where a server's request came from: give it back to [`Device::respond`] or [`Device::refuse`].
/// It names the link too, so an answer can never reach a later link that reuses the tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RequestFrom {
    pub(crate) link: u32,
    pub(crate) incoming: Incoming,
}

/// An application request of the server (channel 1), waiting for the device's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Request {
    pub from: RequestFrom,
    pub rq_type: u64,
    pub flags: u64,
    pub payload: heapless::Vec<u8, REQUEST_BYTES>,
}

/// What names an event type or pattern in the handle's calls: a path such as
/// `"sensor/room1/temp"` (segments split at `/`), or a type already built.
pub trait ToEventType {
    fn to_event_type(&self) -> Result<EventType, Error>;
}

impl ToEventType for &str {
    fn to_event_type(&self) -> Result<EventType, Error> {
        EventType::parse_path(self).map_err(model_error)
    }
}

impl ToEventType for EventTypeRef<'_> {
    fn to_event_type(&self) -> Result<EventType, Error> {
        self.to_owned().map_err(model_error)
    }
}

impl<const N: usize> ToEventType for &EventType<N> {
    fn to_event_type(&self) -> Result<EventType, Error> {
        self.as_ref().to_owned().map_err(model_error)
    }
}

fn model_error(error: rivulet_core::model::Error) -> Error {
    match error {
        rivulet_core::model::Error::Capacity => Error::TooLarge,
        _ => Error::InvalidType,
    }
}

/// The application's side of a device: cheap to share by reference across tasks. Calls wait for
/// the [`Runner`](crate::Runner), which must be running (spawned) for them to complete.
///
/// Calls are served one at a time, in order. A call that is cancelled (its future dropped) may
/// still be carried out: a registration may be queued without its sequence number reaching
/// anyone.
pub struct Device<'d, M: RawMutex = CriticalSectionRawMutex> {
    pub(crate) shared: &'d Shared<M>,
    pub(crate) events: SendDynamicReceiver<'d, Event>,
    pub(crate) requests: SendDynamicReceiver<'d, Request>,
}

impl<'d, M: RawMutex> Device<'d, M> {
    async fn call(&self, command: Command) -> Reply {
        let mut next_id = self.shared.calls.lock().await;
        let id = *next_id;
        *next_id = next_id.wrapping_add(1);
        self.shared.commands.send(Call { id, command }).await;
        loop {
            // An answer to an earlier call that was cancelled may come first: skip it.
            let (answered, reply) = self.shared.replies.wait().await;
            if answered == id {
                return reply;
            }
        }
    }

    /// Queues an event for registration, online or offline, and returns its sequence number.
    /// It stays in the outbox until the server acknowledges it, across any number of reconnects,
    /// and is stored once ([`LinkStatus::registered_below`] passes `seq` when it is settled).
    ///
    /// When the outbox is full this is [`Error::OutboxFull`] at once, and nothing is queued or
    /// dropped: wait with [`Device::register_when_room`], or drop the reading yourself.
    pub async fn register(
        &self,
        event_type: impl ToEventType,
        source_timestamp: Option<Timestamp>,
        payload: Option<EventPayloadRef<'_>>,
    ) -> Result<u32, Error> {
        let event = owned_registration(event_type, source_timestamp, payload)?;
        self.call(Command::Register(event)).await
    }

    /// [`Device::register`], waiting while the outbox is full until acknowledgements make room.
    /// Tasks that wait here take turns. Do not wait here in the only task that reads events: a
    /// runner between links waits for the events of the last link to be taken before it
    /// reconnects, and the acknowledgements that make room need a link.
    pub async fn register_when_room(
        &self,
        event_type: impl ToEventType,
        source_timestamp: Option<Timestamp>,
        payload: Option<EventPayloadRef<'_>>,
    ) -> Result<u32, Error> {
        let event = owned_registration(event_type, source_timestamp, payload)?;
        let _turn = self.shared.room_turn.lock().await;
        loop {
            // Room made after this point wakes the wait below, even if it comes before the wait.
            self.shared.room.reset();
            match self.call(Command::Register(event.clone())).await {
                Err(Error::OutboxFull) => self.shared.room.wait().await,
                done => return done,
            }
        }
    }

    /// Adds a subscription pattern (`?` one segment, `*` the rest). It is kept across reconnects
    /// and sent with every init; on an open link it goes out at once. Returns once the pattern
    /// is in the list: the server's refusal, if any, shows in
    /// [`LinkStatus::subscriptions_refused`].
    pub async fn subscribe(&self, pattern: impl ToEventType) -> Result<(), Error> {
        let pattern = pattern.to_event_type()?;
        self.call(Command::Subscribe(pattern)).await.map(|_| ())
    }

    /// Removes a subscription pattern; returns whether it was there.
    pub async fn unsubscribe(&self, pattern: impl ToEventType) -> Result<bool, Error> {
        let pattern = pattern.to_event_type()?;
        self.call(Command::Unsubscribe(pattern)).await.map(|removed| removed != 0)
    }

    /// The next notified event, in the order the server sent them. Taking it lets the runner
    /// acknowledge it, which gives the server room for one more.
    pub async fn next_event(&self) -> Event {
        // `poll_receive` rather than `receive`, whose future is not `Send`.
        let event = poll_fn(|cx| self.events.poll_receive(cx)).await;
        self.shared.taken.signal(());
        event
    }

    /// The next notified event if one is waiting.
    pub fn try_next_event(&self) -> Option<Event> {
        let event = self.events.try_receive().ok()?;
        self.shared.taken.signal(());
        Some(event)
    }

    /// The next application request of the server. Answer it with [`Device::respond`] or
    /// [`Device::refuse`] before the server's request timeout (10 s by default).
    pub async fn next_request(&self) -> Request {
        poll_fn(|cx| self.requests.poll_receive(cx)).await
    }

    /// Answers a request with `flags` and `payload` (at most [`ANSWER_BYTES`](crate::ANSWER_BYTES)).
    pub async fn respond(&self, from: RequestFrom, flags: u64, payload: &[u8]) -> Result<(), Error> {
        let payload = heapless::Vec::from_slice(payload).map_err(|_| Error::TooLarge)?;
        self.call(Command::Respond { from, flags, payload }).await.map(|_| ())
    }

    /// Refuses a request; the server's caller gets `reason` (cut to [`REASON_BYTES`]).
    pub async fn refuse(&self, from: RequestFrom, reason: &str) -> Result<(), Error> {
        let reason = truncated(reason);
        self.call(Command::Refuse { from, reason }).await.map(|_| ())
    }

    /// The link and session as the runner last published them.
    pub fn status(&self) -> LinkStatus {
        self.shared.status.try_get().unwrap_or(LinkStatus::INITIAL)
    }

    /// A watcher of the status, or `None` when [`STATUS_WATCHERS`] exist already.
    pub fn status_watcher(&self) -> Option<StatusWatcher<'d, M>> {
        let mut receiver = self.shared.status.receiver()?;
        // The current value counts as seen: `wait_for_change` waits for the next one.
        let _ = receiver.try_get();
        Some(StatusWatcher { receiver })
    }
}

impl<M: RawMutex> core::fmt::Debug for Device<'_, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device").field("status", &self.status()).finish_non_exhaustive()
    }
}

fn owned_registration(
    event_type: impl ToEventType,
    source_timestamp: Option<Timestamp>,
    payload: Option<EventPayloadRef<'_>>,
) -> Result<RegisterEvent, Error> {
    let event_type = event_type.to_event_type()?;
    let payload = payload.map(|p| p.to_owned()).transpose().map_err(model_error)?;
    Ok(RegisterEvent { event_type, source_timestamp, payload })
}

/// `reason` cut to fit at a character boundary: it is only ever read by people.
fn truncated(reason: &str) -> heapless::String<REASON_BYTES> {
    let mut end = reason.len().min(REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    let mut out = heapless::String::new();
    let _ = out.push_str(reason.get(..end).unwrap_or(""));
    out
}

/// Follows the [`LinkStatus`] as the runner publishes it. Holds one of [`STATUS_WATCHERS`] slots
/// until dropped.
pub struct StatusWatcher<'d, M: RawMutex = CriticalSectionRawMutex> {
    receiver: watch::Receiver<'d, M, LinkStatus, STATUS_WATCHERS>,
}

impl<M: RawMutex> StatusWatcher<'_, M> {
    /// The current status.
    pub fn get(&mut self) -> LinkStatus {
        self.receiver.try_get().unwrap_or(LinkStatus::INITIAL)
    }

    /// Waits for the next status the runner publishes after the last one this watcher saw.
    /// Changes made meanwhile fold into one: the newest is returned.
    pub async fn wait_for_change(&mut self) -> LinkStatus {
        self.receiver.changed().await
    }

    /// The current status if `f` holds for it, else the first published later that it holds for
    /// (say, `|s| s.connected`).
    pub async fn wait_for(&mut self, f: impl Fn(&LinkStatus) -> bool) -> LinkStatus {
        self.receiver.get_and(f).await
    }
}

impl<M: RawMutex> core::fmt::Debug for StatusWatcher<'_, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StatusWatcher").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_at_a_character_boundary() {
        assert_eq!(truncated("short").as_str(), "short");
        let long = "é".repeat(40); // 80 bytes
        let cut = truncated(&long);
        assert_eq!(cut.len(), 64);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn paths_and_types_name_event_types() {
        assert_eq!("a/b".to_event_type().map(|t| t.to_string()), Ok("a/b".into()));
        assert_eq!("a//b".to_event_type(), Err(Error::InvalidType));
        let long = "x".repeat(80);
        assert_eq!(long.as_str().to_event_type(), Err(Error::TooLarge));
        let built: EventType<16> = EventType::parse_path("c/d").expect("valid");
        assert_eq!((&built).to_event_type().map(|t| t.to_string()), Ok("c/d".into()));
    }
}
