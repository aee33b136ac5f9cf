//! What the task writes besides the machine's own traffic: answers to the client's requests
//! (cut to what the client can take), notifications, and our requests to the client.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rivulet_core::driver::write_with_room;
use rivulet_core::model::{EventList, QueryResult};
use rivulet_core::session::{self, Incoming};
use rivulet_core::wire::{FrameWriter, Framing};

use super::{ConnectionMachine, Task};
use crate::link::{LinkError, WriteError};
use crate::model::{Event, QueryPage, pack_list};
use crate::packet::CallError;
use crate::server::handler::{HandlerError, ServerHandler};
use crate::server::links::Command;
use crate::server::pipeline::Answer;

impl<H: ServerHandler> Task<'_, H> {
    pub(super) async fn write_answer(&mut self, from: Incoming, answer: Answer) -> Result<(), LinkError> {
        match answer {
            Answer::Query(Ok(page)) => self.respond_page(from, page).await,
            Answer::Registered(Ok(events)) => {
                let mut buf = Vec::new();
                let list: EventList<'_> = pack_list(events.iter().map(Event::as_ref), &mut buf);
                let written = write_with_room(&mut self.driver, |out| self.conn.respond(from, &list, out)).await;
                self.after_respond(from, written, "registered events larger than max_packet").await
            }
            Answer::App(Ok(reply)) => {
                let written = write_with_room(&mut self.driver, |out| {
                    self.conn.respond_raw(from, reply.flags, &reply.payload, out)
                })
                .await;
                self.after_respond(from, written, "response larger than max_packet").await
            }
            Answer::Registered(Err(reason)) => {
                if let HandlerError::Refused(_) = reason {
                    self.count_refused();
                }
                self.refuse(from, reason.message()).await
            }
            Answer::Query(Err(reason)) | Answer::App(Err(reason)) => self.refuse(from, reason.message()).await,
        }
    }

    /// A response that does not fit the client is refused instead: the client still gets an answer.
    pub(super) async fn after_respond(
        &mut self,
        from: Incoming,
        written: Result<(), WriteError>,
        too_large: &str,
    ) -> Result<(), LinkError> {
        match written {
            Ok(()) => Ok(()),
            Err(WriteError::Link(e)) => Err(e),
            Err(WriteError::TooLarge | WriteError::Session(session::Error::TooLarge)) => {
                log::warn!("connection {}: {too_large}", self.id);
                self.refuse(from, too_large).await
            }
            Err(WriteError::Session(e)) => {
                log::debug!("connection {}: answer to tag {} dropped: {e}", self.id, from.tag);
                Ok(())
            }
        }
    }

    /// Answers a query with as much of the page as the client can receive.
    pub(super) async fn respond_page(&mut self, from: Incoming, page: QueryPage) -> Result<(), LinkError> {
        let events = &page.events;
        let mut buf = Vec::new();
        let whole = QueryResult {
            events: pack_list(events.iter().map(Event::as_ref), &mut buf),
            more_follows: page.more_follows,
        };
        let written = write_with_room(&mut self.driver, |out| self.conn.respond(from, &whole, out)).await;
        match written {
            Ok(()) => return Ok(()),
            Err(WriteError::Link(e)) => return Err(e),
            Err(WriteError::TooLarge | WriteError::Session(session::Error::TooLarge)) => {}
            Err(WriteError::Session(e)) => {
                log::debug!("connection {}: query answer dropped: {e}", self.id);
                return Ok(());
            }
        }
        // Too large: find the longest prefix that fits, trying sizes on a scratch buffer as large
        // as the transmit buffer (`respond` changes nothing in the machine).
        if self.scratch.len() != self.tx_capacity {
            self.scratch = vec![0; self.tx_capacity];
        }
        let (mut fits, mut too_long) = (0, events.len());
        while too_long - fits > 1 {
            let n = fits + (too_long - fits) / 2;
            let cut = QueryResult {
                events: pack_list(events.iter().take(n).map(Event::as_ref), &mut buf),
                more_follows: true,
            };
            let mut probe = FrameWriter::new(&mut self.scratch, Framing::Stream);
            if self.conn.respond(from, &cut, &mut probe).is_ok() {
                fits = n;
            } else {
                too_long = n;
            }
        }
        if fits == 0 {
            log::warn!("connection {}: a queried event is larger than the client's max_packet", self.id);
            return self.refuse(from, "event larger than max_packet").await;
        }
        let cut = QueryResult {
            events: pack_list(events.iter().take(fits).map(Event::as_ref), &mut buf),
            more_follows: true,
        };
        let written = write_with_room(&mut self.driver, |out| self.conn.respond(from, &cut, out)).await;
        self.after_respond(from, written, "query page larger than max_packet").await
    }

    pub(super) async fn on_command(&mut self, command: Command) -> Result<(), LinkError> {
        let Command::Request { rq_type, flags, payload, reply } = command;
        let now = rivulet_core::driver::Clock::now(&self.clock);
        let sent = write_with_room(&mut self.driver, |out| self.conn.request(now, rq_type, flags, &payload, out)).await;
        match sent {
            Ok(id) => {
                self.calls.insert(id, reply);
            }
            Err(WriteError::Link(e)) => {
                let _ = reply.send(Err(CallError::Disconnected));
                return Err(e);
            }
            // Over the client's max_packet (the core checks it) or this side's buffer.
            Err(
                WriteError::TooLarge
                | WriteError::Session(session::Error::TooLarge)
                | WriteError::Session(session::Error::Wire(_)),
            ) => {
                let _ = reply.send(Err(CallError::TooLarge));
            }
            Err(WriteError::Session(_)) => {
                let _ = reply.send(Err(CallError::Disconnected));
            }
        }
        Ok(())
    }

    pub(super) async fn notify(&mut self, event: Arc<Event>) -> Result<(), LinkError> {
        match write_with_room(&mut self.driver, |out| self.conn.notify(&Event::as_ref(&event), out)).await {
            Ok(()) => {
                if let Some(subscriber) = &mut self.subscriber {
                    subscriber.delivered();
                }
                self.counters.notified.fetch_add(1, Ordering::Relaxed);
                self.shared.stats.notified.fetch_add(1, Ordering::Relaxed);
            }
            Err(WriteError::Link(e)) => return Err(e),
            Err(WriteError::TooLarge | WriteError::Session(session::Error::TooLarge)) => {
                log::warn!(
                    "connection {}: event {:?} ({}) is larger than the client's max_packet; not notified",
                    self.id,
                    event.id,
                    event.event_type
                );
                self.counters.too_large.fetch_add(1, Ordering::Relaxed);
                if let Some(subscriber) = &mut self.subscriber {
                    subscriber.skipped();
                }
            }
            Err(WriteError::Session(e)) => {
                log::debug!("connection {}: notification dropped: {e}", self.id);
                if let Some(subscriber) = &mut self.subscriber {
                    subscriber.skipped();
                }
            }
        }
        Ok(())
    }

    pub(super) async fn refuse(&mut self, from: Incoming, reason: &str) -> Result<(), LinkError> {
        self.answer(from, |conn, out| conn.refuse(from, reason, out)).await
    }

    /// Writes an answer; only a broken link is an error. An answer the link no longer takes (it
    /// is closing) is dropped.
    pub(super) async fn answer(
        &mut self,
        from: Incoming,
        mut write: impl FnMut(&mut ConnectionMachine, &mut FrameWriter<'_>) -> Result<(), session::Error>,
    ) -> Result<(), LinkError> {
        match write_with_room(&mut self.driver, |out| write(&mut self.conn, out)).await {
            Ok(()) => Ok(()),
            Err(WriteError::Link(e)) => Err(e),
            Err(e) => {
                log::debug!("connection {}: answer to tag {} dropped: {e:?}", self.id, from.tag);
                Ok(())
            }
        }
    }
}
