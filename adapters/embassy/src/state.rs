//! The memory the device handle and the runner share: queues of events and requests, the call
//! slot that carries the handle's commands to the runner, and the published status. All of it is
//! inline and sized at compile time; the application provides it, usually as a `static`.

use embassy_sync::blocking_mutex::raw::{CriticalSectionRawMutex, RawMutex};
use embassy_sync::channel::Channel;
use embassy_sync::mutex::Mutex;
use embassy_sync::signal::Signal;
use embassy_sync::watch::Watch;
use rivulet_core::model::{EventType, RegisterEvent};

use crate::device::{Error, Event, Request, RequestFrom};
use crate::status::LinkStatus;

/// Bytes of a response payload the device sends ([`Device::respond`](crate::Device::respond)).
pub const ANSWER_BYTES: usize = 256;
/// Bytes of a request payload the device takes; a larger request is refused at once.
pub const REQUEST_BYTES: usize = 256;
/// Bytes of a refusal's reason; a longer one is cut at a character boundary.
pub const REASON_BYTES: usize = 64;
/// [`StatusWatcher`](crate::StatusWatcher)s that can exist at once.
pub const STATUS_WATCHERS: usize = 4;

/// What a handle asks of the runner. Owned and bounded: the handle's borrowed arguments are
/// copied in, so the call slot holds everything and nothing waits on the caller's memory.
pub(crate) enum Command {
    Register(RegisterEvent),
    Subscribe(EventType),
    Unsubscribe(EventType),
    Respond { from: RequestFrom, flags: u64, payload: heapless::Vec<u8, ANSWER_BYTES> },
    Refuse { from: RequestFrom, reason: heapless::String<REASON_BYTES> },
}

/// A command with the number of the call that sent it, so its answer finds the same call.
pub(crate) struct Call {
    pub id: u32,
    pub command: Command,
}

/// The runner's answer: a registration's sequence number, 1 or 0 for whether an unsubscribed
/// pattern was there, 0 otherwise.
pub(crate) type Reply = Result<u32, Error>;

/// The part of [`State`] the handle reaches without knowing the queue lengths.
pub(crate) struct Shared<M: RawMutex> {
    /// One call at a time owns `replies`; the value numbers the calls.
    pub calls: Mutex<M, u32>,
    pub commands: Channel<M, Call, 1>,
    pub replies: Signal<M, (u32, Reply)>,
    /// The application took an event from the queue: the runner may release its ack.
    pub taken: Signal<M, ()>,
    /// Acknowledgements made room in the outbox.
    pub room: Signal<M, ()>,
    /// One `register_when_room` waits on `room` at a time (a signal wakes one task).
    pub room_turn: Mutex<M, ()>,
    pub status: Watch<M, LinkStatus, STATUS_WATCHERS>,
}

/// Everything the [`Device`](crate::Device) handle and its [`Runner`](crate::Runner) share.
///
/// - `EVENTS`: notified events waiting for the application. It is also the window the device
///   announces: the server never has more un-acknowledged notifications out than this queue
///   holds, and an event's acknowledgement goes out only once the application took it, so none
///   is ever dropped and a slow reader holds the server back instead (its link stays up).
/// - `REQUESTS`: the server's application requests waiting for
///   [`Device::next_request`](crate::Device::next_request); one more is refused at once.
///
/// `M` guards each queue for the moment of a push or pop. It must be `Sync`, since the handle is
/// shared by reference across tasks, possibly on different executors:
/// `CriticalSectionRawMutex` (the default) works everywhere; `ThreadModeRawMutex` is cheaper when
/// every task runs in thread mode.
pub struct State<M: RawMutex = CriticalSectionRawMutex, const EVENTS: usize = 4, const REQUESTS: usize = 2> {
    pub(crate) shared: Shared<M>,
    pub(crate) events: Channel<M, Event, EVENTS>,
    pub(crate) requests: Channel<M, Request, REQUESTS>,
}

impl<M: RawMutex, const EVENTS: usize, const REQUESTS: usize> State<M, EVENTS, REQUESTS> {
    pub const fn new() -> Self {
        State {
            shared: Shared {
                calls: Mutex::new(0),
                commands: Channel::new(),
                replies: Signal::new(),
                taken: Signal::new(),
                room: Signal::new(),
                room_turn: Mutex::new(()),
                status: Watch::new_with(LinkStatus::INITIAL),
            },
            events: Channel::new(),
            requests: Channel::new(),
        }
    }
}

impl<M: RawMutex, const EVENTS: usize, const REQUESTS: usize> Default for State<M, EVENTS, REQUESTS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: RawMutex, const EVENTS: usize, const REQUESTS: usize> core::fmt::Debug for State<M, EVENTS, REQUESTS> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("State")
            .field("events", &self.events.len())
            .field("requests", &self.requests.len())
            .finish_non_exhaustive()
    }
}
