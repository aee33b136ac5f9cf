//! What became of a subscriber's events, for [`super::Fanout::publish_acknowledged`].

use std::collections::VecDeque;

use tokio::sync::watch;

/// Which events are settled (acknowledged, skipped, or dropped with the subscriber), counted in
/// queue order so that [`super::Fanout::publish_acknowledged`] knows when its own are done.
pub(super) struct AckTracker {
    settled: u64,
    /// One entry per delivered event awaiting its ack: how many skipped ones follow it.
    in_flight: VecDeque<u64>,
    tx: watch::Sender<u64>,
}

impl AckTracker {
    /// Reports how many events are settled on `tx`.
    pub(super) fn new(tx: watch::Sender<u64>) -> Self {
        AckTracker { settled: 0, in_flight: VecDeque::new(), tx }
    }

    pub(super) fn delivered(&mut self) {
        self.in_flight.push_back(0);
    }

    pub(super) fn skipped(&mut self) {
        match self.in_flight.back_mut() {
            Some(after) => *after += 1,
            None => self.advance(1),
        }
    }

    pub(super) fn acknowledged(&mut self, count: u32) {
        let mut done = 0;
        for _ in 0..count {
            match self.in_flight.pop_front() {
                Some(after) => done += 1 + after,
                None => break,
            }
        }
        self.advance(done);
    }

    fn advance(&mut self, done: u64) {
        if done > 0 {
            self.settled += done;
            self.tx.send_replace(self.settled);
        }
    }
}
