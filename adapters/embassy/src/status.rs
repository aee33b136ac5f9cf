//! What the application can see of the link and the session.

use rivulet_core::model::Status;
use rivulet_core::session::ClientStats;

/// The link, the session and counters, as the runner last published them. Read the current
/// value with [`Device::status`](crate::Device::status); follow changes with a
/// [`StatusWatcher`](crate::StatusWatcher).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LinkStatus {
    /// The server accepted the init on the current link, and the link is not closing.
    pub connected: bool,
    /// The server's status (hat-event's), as of its last init answer or status message.
    pub server_status: Status,
    /// The last accepted init resumed our session: nothing acknowledged before is sent again.
    pub resumed: bool,
    /// The session the server gave us, once a link was accepted; it outlives links.
    pub session: Option<u64>,
    /// Every registration with a sequence number below this is settled: stored, or refused
    /// (see `registrations_refused`).
    pub registered_below: u32,
    /// Registrations in the outbox, waiting for the server's acknowledgement.
    pub outbox_len: u32,
    /// Outbox bytes they take (of the runner's `OUTBOX`).
    pub outbox_bytes: u32,
    /// Links the server accepted.
    pub links: u32,
    /// Attempts to open a transport that failed or timed out.
    pub connect_failures: u32,
    /// Inits the server refused (or challenged: the device has no answer to a challenge).
    pub inits_refused: u32,
    /// Frames that did not decode (each ended its link; on serial the next link follows on the
    /// same line).
    pub bad_frames: u32,
    pub registrations_refused: u32,
    /// Subscription lists the server refused; the patterns stay in the list and go again with the
    /// next init.
    pub subscriptions_refused: u32,
    /// Requests of the server refused at once: the request queue was full, or the payload larger
    /// than [`REQUEST_BYTES`](crate::REQUEST_BYTES).
    pub requests_refused: u32,
    /// Notified events the application never gets: larger than the owned [`Event`](crate::Event)
    /// holds, or beyond the window a misbehaving server overran (that also ends the link).
    pub events_dropped: u32,
    /// The core machine's counters: events delivered, duplicates dropped, registrations stored.
    pub client: ClientStats,
}

impl LinkStatus {
    /// Before the runner has run.
    pub const INITIAL: LinkStatus = LinkStatus {
        connected: false,
        server_status: Status::Standby,
        resumed: false,
        session: None,
        registered_below: 0,
        outbox_len: 0,
        outbox_bytes: 0,
        links: 0,
        connect_failures: 0,
        inits_refused: 0,
        bad_frames: 0,
        registrations_refused: 0,
        subscriptions_refused: 0,
        requests_refused: 0,
        events_dropped: 0,
        client: ClientStats { events: 0, duplicates: 0, undeliverable: 0, registered: 0, links: 0, dropped: 0 },
    };
}

impl Default for LinkStatus {
    fn default() -> Self {
        Self::INITIAL
    }
}
