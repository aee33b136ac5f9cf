//! Keepalive, the same on both sides: after `interval` with nothing received, send one ping;
//! after twice `interval` with nothing received, the link is dead. Any packet counts.

use crate::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Keepalive {
    interval: Duration,
    last_rx: Instant,
    pinged: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeepaliveAction {
    Nothing,
    Ping,
    Dead,
}

impl Keepalive {
    pub fn new(interval: Duration, now: Instant) -> Self {
        Keepalive { interval, last_rx: now, pinged: false }
    }

    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    pub fn received(&mut self, now: Instant) {
        self.last_rx = now;
        self.pinged = false;
    }

    pub fn poll(&mut self, now: Instant) -> KeepaliveAction {
        if self.interval == Duration::ZERO {
            return KeepaliveAction::Nothing;
        }
        if now >= self.last_rx + self.interval + self.interval {
            KeepaliveAction::Dead
        } else if now >= self.last_rx + self.interval && !self.pinged {
            self.pinged = true;
            KeepaliveAction::Ping
        } else {
            KeepaliveAction::Nothing
        }
    }

    pub fn poll_at(&self) -> Option<Instant> {
        if self.interval == Duration::ZERO {
            return None;
        }
        let ping = self.last_rx + self.interval;
        Some(if self.pinged { ping + self.interval } else { ping })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_once_then_declares_dead() {
        let t = Instant::from_millis;
        let mut k = Keepalive::new(Duration::from_millis(100), t(0));
        assert_eq!(k.poll(t(99)), KeepaliveAction::Nothing);
        assert_eq!(k.poll_at(), Some(t(100)));
        assert_eq!(k.poll(t(100)), KeepaliveAction::Ping);
        assert_eq!(k.poll(t(150)), KeepaliveAction::Nothing, "one ping per silence");
        assert_eq!(k.poll_at(), Some(t(200)));
        assert_eq!(k.poll(t(200)), KeepaliveAction::Dead);
        k.received(t(210));
        assert_eq!(k.poll(t(250)), KeepaliveAction::Nothing);
        assert_eq!(k.poll_at(), Some(t(310)));
    }
}
