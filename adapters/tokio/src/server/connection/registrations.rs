//! Registrations: each goes to the store worker (or is refused by the handler's check, in its
//! place), and comes back as an acknowledgement once durable.

use std::sync::atomic::Ordering;

use rivulet_core::driver::write_with_room;

use super::{Closing, Task};
use crate::link::{LinkError, WriteError};
use crate::model::RegisterEvent;
use crate::server::handler::{Registration, ServerHandler};
use crate::server::pipeline::{Outcome, Work};

impl<H: ServerHandler> Task<'_, H> {
    pub(super) fn on_register(&mut self, seq: u32, event: RegisterEvent) {
        let Some(client) = self.client.clone() else { return };
        let work = match self.handler.check_register(&client, &event) {
            Ok(()) => {
                let registration = Registration { session: client.session, seq: Some(seq), event };
                Work::Register { generation: self.generation, client, registration }
            }
            Err(reason) => {
                log::info!(
                    "connection {}: {} may not register {}: {reason}",
                    self.id,
                    client.client_name,
                    event.event_type
                );
                Work::Refused { generation: self.generation, seq, reason: reason.to_string() }
            }
        };
        match self.work.try_send(work) {
            Ok(()) => self.unstored += 1,
            Err(_) => {
                // Cannot happen: the machine holds the client to the window the queue is sized for.
                log::warn!("connection {}: registration queue full; closing", self.id);
                self.begin_close(Closing::Now, "registration queue full".into());
            }
        }
    }

    pub(super) async fn on_outcome(&mut self, outcome: Outcome) -> Result<(), LinkError> {
        match outcome {
            Outcome::Stored { generation, count } if generation == self.generation => {
                self.unstored = self.unstored.saturating_sub(count);
                self.conn.acknowledge(count);
                self.counters.registered.fetch_add(u64::from(count), Ordering::Relaxed);
            }
            Outcome::StoreFailed { generation, error } if generation == self.generation => {
                let reason = error.message();
                log::warn!("connection {} from {}: register failed, closing: {reason}", self.id, self.peer);
                self.unstored = 0;
                let reason = format!("the server could not store registrations ({reason}); send them again");
                self.begin_close(Closing::Now, reason);
            }
            Outcome::Refused { generation, seq, reason } if generation == self.generation => {
                self.unstored = self.unstored.saturating_sub(1);
                let written =
                    write_with_room(&mut self.driver, |out| self.conn.refuse_registration(seq, &reason, out)).await;
                match written {
                    Err(WriteError::Link(e)) => return Err(e),
                    Err(e) => log::debug!("connection {}: refusal of seq {seq} not sent: {e:?}", self.id),
                    Ok(()) => {}
                }
                self.conn.acknowledge(1);
                self.count_refused();
            }
            Outcome::Stored { .. } | Outcome::StoreFailed { .. } | Outcome::Refused { .. } => {}
            Outcome::Answer { generation, from, answer } => {
                self.handling = self.handling.saturating_sub(1);
                if generation == self.generation {
                    return self.write_answer(from, answer).await;
                }
            }
        }
        Ok(())
    }

    /// A registration refused (not stored), sequenced or a register request (refused whole, it
    /// counts once): on the connection's counters and the server's.
    pub(super) fn count_refused(&self) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        self.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
    }
}
