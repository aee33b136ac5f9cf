//! Flow control: a publisher that waits for room ([`Fanout::room`]) holds back while some
//! subscriber is past its high-water mark, so a subscriber that reads slower than publishers
//! write slows them down instead of being cut off. One that reads nothing at all would hold
//! everybody: past [`super::FanoutLimits::stall`] without taking an event it is cut off and the
//! publishers go on.

use std::sync::atomic::Ordering::Relaxed;
use tokio::time::Instant;

use super::{CutOff, Fanout, Subscriber, lock};

impl Fanout {
    /// Resolves once no subscriber is congested (past its high-water mark and not yet back
    /// under half of it), cutting off those that took nothing for the stall time meanwhile.
    /// A publisher awaits it before each publish; publishing without it is never held.
    /// With a stall time of zero nobody waits: a subscriber is cut off at its limits.
    pub async fn room(&self) {
        self.room_beside(None).await;
    }

    /// [`Fanout::room`] for a publisher that is itself `own`'s only reader (one task serving a
    /// connection's registrations and its notifications): its own queue cannot drain while it
    /// waits, so it waits for the others alone, and is never cut off for its own stall here.
    pub async fn room_beside(&self, own: Option<&Subscriber>) {
        let pool = &self.pool;
        if pool.limits.stall.is_zero() {
            return;
        }
        // Checked this often for stalled subscribers while waiting.
        let check = (pool.limits.stall / 4).max(std::time::Duration::from_millis(1));
        let others = || {
            let own = own.is_some_and(|own| own.bytes.is_congested());
            pool.congested.load(Relaxed).saturating_sub(usize::from(own))
        };
        while others() > 0 {
            let relieved = pool.relieved.notified();
            tokio::pin!(relieved);
            // Registered before the check: a relief between the check and the wait is not lost.
            relieved.as_mut().enable();
            if others() == 0 {
                break;
            }
            if tokio::time::timeout(check, relieved).await.is_err() {
                self.cut_stalled(own.map(Subscriber::id));
            }
        }
    }

    /// Whether publishers that wait for room wait now.
    pub fn is_congested(&self) -> bool {
        self.pool.congested.load(Relaxed) > 0
    }

    /// Cuts off every congested subscriber that took nothing for the stall time, but `own`.
    fn cut_stalled(&self, own: Option<u64>) {
        let stall = self.pool.limits.stall;
        let now = Instant::now();
        let table = lock(&self.table);
        for (id, entry) in &table.entries {
            if Some(*id) != own && entry.bytes.stalled_for(now) >= stall {
                self.cut(entry, CutOff::Stalled(stall));
            }
        }
    }
}
