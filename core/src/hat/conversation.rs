//! One chatter connection's bookkeeping, sans IO, with time passed in: message ids,
//! conversations, and the ping/pong keepalive, as `hat.drivers.chatter.Connection` keeps them.
//!
//! - **Ids**: each side counts the messages it sends from 1, pings and pongs included. The
//!   machine writes every frame it numbers, so an id is spent only on a frame that was written.
//! - **Conversations**: a message opens one (`first = own id`, `owner = true`) or replies in one
//!   (`first` = the id that opened it, `owner` = whether the replier opened it). The receiver's
//!   view is [`Conversation`] `{ owner: !wire.owner, first_id: wire.first }`, so a reply to a
//!   conversation we opened compares equal to what [`Chatter::open`] returned; hat matches
//!   replies this way and no other.
//! - **Keepalive**: after `ping_delay` with nothing received, send `HatChatter.Ping` (new
//!   conversation, `last = false`); if nothing at all arrives in `ping_timeout` after it, the
//!   connection is dead ([`ChatterEvent::TimedOut`]; hat closes it). Anything received resets
//!   the timer. A received ping is answered with `HatChatter.Pong` (its conversation,
//!   `last = true`) at the next [`Chatter::poll_transmit`]; neither reaches the caller.
//!
//! A loop runs it like the core's session machines: feed each frame body to
//! [`Chatter::receive`], call [`Chatter::poll`] and [`Chatter::poll_transmit`], and sleep until
//! [`Chatter::poll_timeout`] or the next bytes.

use super::Error;
use super::chatter::{Header, Msg, PING, PONG};
use super::eventer::{self, EventerMessage, Keepalive, Message};
use crate::time::{Duration, Instant};

/// hat's defaults for both: 20 s.
pub const DEFAULT_PING_DELAY: Duration = Duration::from_secs(20);
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Pongs owed at once. The peer pings only after `ping_delay` of silence and waits for any
/// message, so more is never needed; should it be, the newest pings are answered.
const OWED_PONGS: usize = 2;

/// The keepalive's timing (hat's `connect`/`listen` arguments of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// Silence after which a ping is sent; zero sends none (and so never times out).
    pub ping_delay: Duration,
    /// How long after a ping something must arrive.
    pub ping_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config { ping_delay: DEFAULT_PING_DELAY, ping_timeout: DEFAULT_PING_TIMEOUT }
    }
}

/// A conversation as one side sees it: whether it opened it, and the id of the message that did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Conversation {
    pub owner: bool,
    pub first_id: i64,
}

/// A received message for the caller: not a ping or pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Received<'a> {
    /// Ours (`owner`) when this replies in a conversation we opened.
    pub conversation: Conversation,
    /// The message opens its conversation.
    pub first: bool,
    /// The sender expects no reply.
    pub last: bool,
    pub msg_type: &'a str,
    pub data: &'a [u8],
}

impl<'a> Received<'a> {
    /// The message's data as read for its type.
    pub fn message(&self) -> Result<Message<'a>, Error> {
        Message::parse(self.msg_type, self.data)
    }

    /// Whether this replies in `conversation`, one we opened.
    pub fn is_reply_to(&self, conversation: Conversation) -> bool {
        self.conversation == conversation
    }
}

/// What [`Chatter::poll`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ChatterEvent {
    /// Nothing arrived within `ping_timeout` of our ping: close the connection.
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ping {
    /// None in flight; the next is due `ping_delay` after the last message received.
    Idle,
    /// Sent at this time, nothing received since.
    Sent(Instant),
    /// Timed out, and reported.
    Dead,
}

/// The state of one chatter connection (either side: client and server keep the same).
#[derive(Debug, Clone)]
pub struct Chatter {
    config: Config,
    next_id: i64,
    last_rx: Instant,
    ping: Ping,
    pongs: heapless::Deque<Conversation, OWED_PONGS>,
}

impl Chatter {
    /// A connection that starts at `now`, its keepalive counting from then.
    pub fn new(config: Config, now: Instant) -> Self {
        Chatter { config, next_id: 1, last_rx: now, ping: Ping::Idle, pongs: heapless::Deque::new() }
    }

    pub fn config(&self) -> Config {
        self.config
    }

    /// The id the next message sent gets.
    pub fn next_id(&self) -> i64 {
        self.next_id
    }

    /// Writes `message` as the frame that opens a new conversation to the front of `buf`;
    /// returns its length and the conversation, which replies will compare equal to.
    pub fn open(
        &mut self,
        message: &impl EventerMessage,
        last: bool,
        buf: &mut [u8],
    ) -> Result<(usize, Conversation), Error> {
        let conversation = Conversation { owner: true, first_id: self.next_id };
        let len = self.send(conversation, message, last, buf)?;
        Ok((len, conversation))
    }

    /// Writes `message` as a frame in `conversation` (one the peer opened, or one we did) to the
    /// front of `buf`; returns its length.
    pub fn reply(
        &mut self,
        conversation: Conversation,
        message: &impl EventerMessage,
        last: bool,
        buf: &mut [u8],
    ) -> Result<usize, Error> {
        self.send(conversation, message, last, buf)
    }

    fn send(
        &mut self,
        conversation: Conversation,
        message: &impl EventerMessage,
        last: bool,
        buf: &mut [u8],
    ) -> Result<usize, Error> {
        let id = self.next_id;
        let next_id = id.checked_add(1).ok_or(Error::Range)?;
        let header = Header { id, first: conversation.first_id, owner: conversation.owner, token: true, last };
        let len = eventer::emit_frame(&header, message, buf)?;
        self.next_id = next_id;
        Ok(len)
    }

    /// Takes one frame body. Pings and pongs are kept (a pong is owed for a ping); anything
    /// else is returned with its conversation. A body that is no `Msg` is an error, and hat
    /// closes the connection on one.
    pub fn receive<'a>(&mut self, now: Instant, body: &'a [u8]) -> Result<Option<Received<'a>>, Error> {
        let msg = Msg::parse(body)?;
        Ok(self.receive_msg(now, &msg))
    }

    /// [`Chatter::receive`] for a message already read.
    pub fn receive_msg<'a>(&mut self, now: Instant, msg: &Msg<'a>) -> Option<Received<'a>> {
        let wire = msg.header;
        self.last_rx = now;
        if self.ping != Ping::Dead {
            self.ping = Ping::Idle;
        }
        let conversation = Conversation { owner: !wire.owner, first_id: wire.first };
        match msg.msg_type {
            PING => {
                if self.pongs.is_full() {
                    self.pongs.pop_front();
                }
                let _ = self.pongs.push_back(conversation);
                None
            }
            PONG => None,
            msg_type => Some(Received {
                conversation,
                first: wire.owner && wire.first == wire.id,
                last: wire.last,
                msg_type,
                data: msg.data,
            }),
        }
    }

    /// Runs the keepalive: reports once that the connection timed out.
    pub fn poll(&mut self, now: Instant) -> Option<ChatterEvent> {
        match self.ping {
            Ping::Sent(at) if now >= at + self.config.ping_timeout => {
                self.ping = Ping::Dead;
                Some(ChatterEvent::TimedOut)
            }
            _ => None,
        }
    }

    /// When [`Chatter::poll`] or [`Chatter::poll_transmit`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ping == Ping::Dead {
            return None;
        }
        if !self.pongs.is_empty() {
            return Some(self.last_rx);
        }
        match self.ping {
            Ping::Sent(at) => Some(at + self.config.ping_timeout),
            _ if self.config.ping_delay == Duration::ZERO => None,
            _ => Some(self.last_rx + self.config.ping_delay),
        }
    }

    fn ping_due(&self, now: Instant) -> bool {
        self.ping == Ping::Idle
            && self.config.ping_delay != Duration::ZERO
            && now >= self.last_rx + self.config.ping_delay
    }

    /// Whether [`Chatter::poll_transmit`] would write something now.
    pub fn wants_transmit(&self, now: Instant) -> bool {
        self.ping != Ping::Dead && (!self.pongs.is_empty() || self.ping_due(now))
    }

    /// Writes the owed pongs and a due ping, as frames, to the front of `buf`, as many as fit;
    /// returns the bytes written. Nothing after a timeout.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Result<usize, Error> {
        let mut at = 0;
        if self.ping == Ping::Dead {
            return Ok(0);
        }
        while let Some(&conversation) = self.pongs.front() {
            let out = buf.get_mut(at..).unwrap_or(&mut []);
            match self.reply(conversation, &Keepalive { pong: true }, true, out) {
                Ok(len) => at += len,
                Err(Error::BufferTooSmall) => return Ok(at),
                Err(e) => return Err(e),
            }
            self.pongs.pop_front();
        }
        if self.ping_due(now) {
            let out = buf.get_mut(at..).unwrap_or(&mut []);
            match self.open(&Keepalive { pong: false }, false, out) {
                Ok((len, _)) => {
                    at += len;
                    self.ping = Ping::Sent(now);
                }
                Err(Error::BufferTooSmall) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hat::chatter::Msg;
    use crate::hat::eventer::{EventsAck, StatusNotify};
    use crate::model::Status;

    fn t(secs: u64) -> Instant {
        Instant::from_millis(secs * 1000)
    }

    /// Bodies of the frames in `bytes`.
    fn msgs(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Ok(Some((header, body))) = crate::hat::chatter::parse_header(rest, usize::MAX) {
            out.push(rest[header..header + body].to_vec());
            rest = &rest[header + body..];
        }
        assert!(rest.is_empty());
        out
    }

    /// The header and type of the one frame in `bytes`.
    fn sent(bytes: &[u8]) -> (Header, String) {
        let bodies = msgs(bytes);
        assert_eq!(bodies.len(), 1);
        let msg = Msg::parse(&bodies[0]).unwrap();
        assert!(msg.data.is_empty());
        (msg.header, msg.msg_type.to_string())
    }

    fn frame(header: Header, msg_type: &str) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let n = Msg { header, msg_type, data: &[] }.emit(&mut buf).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn ids_count_every_sent_message_and_replies_carry_the_opening_id() {
        let mut c = Chatter::new(Config::default(), t(0));
        let mut buf = [0u8; 128];
        let (n, conv) = c.open(&StatusNotify(Status::Operational), true, &mut buf).unwrap();
        assert_eq!(conv, Conversation { owner: true, first_id: 1 });
        let body = &msgs(&buf[..n])[0];
        assert_eq!(Msg::parse(body).unwrap().header, Header { id: 1, first: 1, owner: true, token: true, last: true });
        assert_eq!(Msg::parse(body).unwrap().data, [0x82], "operational");
        // The peer (id 5) opens one; our reply: id 2, first 5, owner false.
        let peer =
            frame(Header { id: 5, first: 5, owner: true, token: true, last: false }, "HatEventer.MsgEventsNotify");
        let got = c.receive(t(1), &peer).unwrap().unwrap();
        assert_eq!(got.conversation, Conversation { owner: false, first_id: 5 });
        assert!(got.first && !got.last);
        let n = c.reply(got.conversation, &EventsAck, true, &mut buf).unwrap();
        let reply = Header { id: 2, first: 5, owner: false, token: true, last: true };
        assert_eq!(sent(&buf[..n]), (reply, "HatEventer.MsgEventsAck".into()));
        // A failed write spends no id.
        assert_eq!(c.open(&EventsAck, true, &mut buf[..4]), Err(Error::BufferTooSmall));
        assert_eq!(c.next_id(), 3);
    }

    #[test]
    fn a_reply_matches_the_conversation_we_opened() {
        let mut c = Chatter::new(Config::default(), t(0));
        let mut buf = [0u8; 128];
        let (_, ours) = c.open(&EventsAck, false, &mut buf).unwrap();
        let reply = frame(Header { id: 9, first: 1, owner: false, token: true, last: true }, "HatEventer.MsgInitRes");
        let got = c.receive(t(0), &reply).unwrap().unwrap();
        assert!(got.is_reply_to(ours) && !got.first && got.last);
        let other = frame(Header { id: 10, first: 1, owner: true, token: true, last: true }, "HatEventer.MsgInitRes");
        assert!(!c.receive(t(0), &other).unwrap().unwrap().is_reply_to(ours), "the peer's own conversation 1");
    }

    /// peers.md §2: a ping with id 7 is answered with a pong in its conversation, and neither
    /// reaches the caller. Our pong is our third message here, as in the captured vector.
    #[test]
    fn a_ping_is_answered_at_once_with_the_golden_pong() {
        let mut c = Chatter::new(Config::default(), t(0));
        let mut buf = [0u8; 128];
        c.open(&EventsAck, true, &mut buf).unwrap();
        c.open(&EventsAck, true, &mut buf).unwrap();
        let ping = frame(Header { id: 7, first: 7, owner: true, token: true, last: false }, PING);
        assert_eq!(c.receive(t(3), &ping), Ok(None));
        assert!(c.wants_transmit(t(3)));
        assert_eq!(c.poll_timeout(), Some(t(3)));
        let n = c.poll_transmit(t(3), &mut buf).unwrap();
        let golden = [
            0x01, 0x16, 0x83, 0x87, 0x00, 0x01, 0x01, 0x8f, b'H', b'a', b't', b'C', b'h', b'a', b't', b't', b'e', b'r',
            b'.', b'P', b'o', b'n', b'g', 0x80,
        ];
        assert_eq!(&buf[..n], &golden);
        assert_eq!(c.poll_transmit(t(3), &mut buf), Ok(0));
        let pong = frame(Header { id: 1, first: 1, owner: false, token: true, last: true }, PONG);
        assert_eq!(c.receive(t(4), &pong), Ok(None));
    }

    #[test]
    fn pings_after_the_delay_and_times_out_after_the_timeout() {
        let config = Config { ping_delay: Duration::from_secs(20), ping_timeout: Duration::from_secs(5) };
        let mut c = Chatter::new(config, t(0));
        let mut buf = [0u8; 128];
        assert_eq!(c.poll_timeout(), Some(t(20)));
        assert_eq!(c.poll_transmit(t(19), &mut buf), Ok(0));
        let n = c.poll_transmit(t(20), &mut buf).unwrap();
        assert_eq!(sent(&buf[..n]), (Header { id: 1, first: 1, owner: true, token: true, last: false }, PING.into()));
        assert_eq!(c.poll_transmit(t(21), &mut buf), Ok(0), "one ping per silence");
        assert_eq!(c.poll_timeout(), Some(t(25)));
        assert_eq!(c.poll(t(24)), None);
        // Anything received answers it: the next ping is due 20 s after that.
        let any = frame(Header { id: 1, first: 1, owner: true, token: true, last: true }, "HatEventer.MsgStatusNotify");
        assert!(c.receive(t(24), &any).unwrap().is_some());
        assert_eq!(c.poll(t(30)), None);
        assert_eq!(c.poll_timeout(), Some(t(44)));
        let n = c.poll_transmit(t(44), &mut buf).unwrap();
        assert_eq!(sent(&buf[..n]).0.id, 2);
        assert_eq!(c.poll(t(48)), None);
        assert_eq!(c.poll(t(49)), Some(ChatterEvent::TimedOut));
        assert_eq!(c.poll(t(50)), None, "reported once");
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(c.poll_transmit(t(90), &mut buf), Ok(0));
    }

    #[test]
    fn a_zero_delay_sends_no_pings() {
        let mut c = Chatter::new(Config { ping_delay: Duration::ZERO, ..Config::default() }, t(0));
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(c.poll_transmit(t(1000), &mut [0u8; 64]), Ok(0));
        assert_eq!(c.poll(t(1000)), None);
    }

    #[test]
    fn owed_pongs_wait_for_room() {
        let mut c = Chatter::new(Config::default(), t(0));
        let ping = |id| frame(Header { id, first: id, owner: true, token: true, last: false }, PING);
        for id in 1..=3 {
            assert_eq!(c.receive(t(0), &ping(id)), Ok(None));
        }
        let mut buf = [0u8; 30];
        let n = c.poll_transmit(t(0), &mut buf).unwrap();
        assert_eq!(sent(&buf[..n]).0.first, 2, "the newest two pings are answered");
        let n = c.poll_transmit(t(0), &mut buf).unwrap();
        assert_eq!(sent(&buf[..n]), (Header { id: 2, first: 3, owner: false, token: true, last: true }, PONG.into()));
        assert!(!c.wants_transmit(t(0)));
    }
}
