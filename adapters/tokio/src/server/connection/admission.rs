//! A link's life on its connection: the init (session, login, the connection limit), listing it
//! where the `Server` handle and the fan-out find it, subscription changes, and its end.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rivulet_core::driver::write_with_room;
use rivulet_core::session::message::PROTOCOL_VERSION;
use rivulet_core::session::{self, Accepted, Incoming};

use super::events::Init;
use super::{Closing, Task};
use crate::link::{LinkError, WriteError};
use crate::model::EventPath;
use crate::packet::CallError;
use crate::server::handler::{Admission, ClientInfo, HANDLER_PANICKED, ServerHandler, guarded};
use crate::server::links::Link;
use crate::server::sessions::SessionCell;
use crate::server::{lock, random_id};

impl<H: ServerHandler> Task<'_, H> {
    pub(super) async fn on_init(&mut self, from: Incoming, init: Init) -> Result<(), LinkError> {
        if self.client.is_some() {
            // The client started over on this connection: the machine already dropped the old link.
            self.end_link().await;
        }
        self.generation += 1;
        self.unstored = 0;
        if self.closing.is_some() {
            return self.refuse(from, "the server is closing this connection").await;
        }
        let invalid = session::client_name_error(&init.client_name)
            .map(|long| long.to_string())
            .or_else(|| invalid_subscription(&init.subscriptions));
        if let Some(reason) = invalid {
            self.shared.stats.inits_refused.fetch_add(1, Ordering::Relaxed);
            log::info!("connection {} from {}: init refused: {reason}", self.id, self.peer);
            return self.refuse(from, &reason).await;
        }
        // This connection's earlier link, if any, is off the list by now. An early refusal: the
        // limit itself is enforced where the link is listed, after the handler admitted it.
        if lock(&self.shared.links).len() >= self.shared.max_connections {
            return self.refuse_full(from).await;
        }
        let (session, next_seq) = self.resolve_session(init.session, init.first_seq).await;
        let client = Arc::new(ClientInfo {
            id: self.id,
            client_name: init.client_name,
            peer: self.peer,
            session,
            subscriptions: init.subscriptions,
            server_id: init.server_id,
            persisted: init.persisted,
            credential: init.credential,
            max_packet: init.max_packet,
        });
        let handler = self.handler.clone();
        let asking = client.clone();
        let admission = tokio::spawn(async move { handler.connect(&asking).await })
            .await
            .unwrap_or_else(|_| Admission::Refuse(HANDLER_PANICKED.into()));
        match admission {
            Admission::Accept => {
                // Counted and listed under one lock: inits admitted at the same time cannot all
                // pass the check above and together go over the limit.
                if !self.list(client.clone()) {
                    return self.refuse_full(from).await;
                }
                let keepalive_ms = self.shared.config.keepalive_for(init.keepalive_ms);
                if keepalive_ms < init.keepalive_ms {
                    self.shared.stats.keepalive_capped.fetch_add(1, Ordering::Relaxed);
                    log::info!(
                        "connection {}: {:?} asked for a keepalive of {} ms; it gets {keepalive_ms} ms (the server's longest)",
                        self.id,
                        client.client_name,
                        init.keepalive_ms
                    );
                }
                let accepted = Accepted {
                    version: PROTOCOL_VERSION,
                    capabilities: 0,
                    status: *self.status_rx.borrow_and_update(),
                    server_id: self.shared.server_id,
                    server_session: self.shared.server_session,
                    session,
                    next_seq,
                    limits: self.conn.limits(),
                    keepalive_ms,
                };
                match write_with_room(&mut self.driver, |out| self.conn.accept(from, &accepted, out)).await {
                    Ok(()) => {}
                    Err(WriteError::Link(e)) => return Err(e),
                    Err(e) => {
                        log::warn!("connection {}: accept not sent: {e:?}", self.id);
                        self.unlist();
                        self.begin_close(Closing::Now, "the server could not answer the init".into());
                        return Ok(());
                    }
                }
                lock(&self.shared.sessions).entry(session).or_insert_with(|| SessionCell::new(next_seq));
                log::info!(
                    "connection {} from {}: {} accepted, session {session:#x} at seq {next_seq}",
                    self.id,
                    self.peer,
                    client.client_name
                );
                self.client = Some(client);
                self.init_by = None;
                Ok(())
            }
            Admission::Refuse(reason) => {
                log::info!("connection {} from {}: {} refused: {reason}", self.id, self.peer, client.client_name);
                self.refuse(from, &reason).await
            }
            Admission::Challenge(nonce) => {
                match write_with_room(&mut self.driver, |out| self.conn.challenge(from, &nonce, out)).await {
                    Err(WriteError::Link(e)) => Err(e),
                    Err(e) => {
                        log::warn!("connection {}: challenge not sent: {e:?}", self.id);
                        Ok(())
                    }
                    Ok(()) => Ok(()),
                }
            }
        }
    }

    /// The session an init continues and its next sequence number: a known one (waiting for
    /// registrations of it being stored right now), one the handler resumes, or a new one.
    pub(super) async fn resolve_session(&self, requested: Option<u64>, first_seq: u32) -> (u64, u32) {
        if let Some(session) = requested.filter(|&s| s != 0) {
            let known = lock(&self.shared.sessions).get(&session).cloned();
            if let Some(cell) = known {
                // What is durable: the client sends the rest again, and registrations taken but
                // not yet durable are acknowledged only once they are (see `store_worker`).
                return (session, cell.durable());
            }
            let handler = self.handler.clone();
            let resumed = tokio::spawn(async move { handler.resume(session).await }).await.unwrap_or_else(|_| {
                log::warn!("resume handler panicked; session {session:#x} starts over");
                None
            });
            if let Some(next_seq) = resumed {
                let cell =
                    lock(&self.shared.sessions).entry(session).or_insert_with(|| SessionCell::new(next_seq)).clone();
                return (session, cell.durable());
            }
        }
        let sessions = lock(&self.shared.sessions);
        loop {
            let session = random_id();
            if session != 0 && !sessions.contains_key(&session) {
                return (session, first_seq);
            }
        }
    }

    /// Refuses an init because the server has `max_connections` clients; counted.
    pub(super) async fn refuse_full(&mut self, from: Incoming) -> Result<(), LinkError> {
        self.shared.stats.over_limit.fetch_add(1, Ordering::Relaxed);
        let reason = format!("the server is full ({} clients connected); try again later", self.shared.max_connections);
        self.refuse(from, &reason).await
    }

    /// Makes the accepted link visible to the `Server` handle (requests, the list of clients)
    /// and subscribes it to the fan-out, if the server has room for another client; `false`
    /// when it has not.
    pub(super) fn list(&mut self, client: Arc<ClientInfo>) -> bool {
        let link = Link { info: client.clone(), commands: self.commands_tx.clone(), counters: self.counters.clone() };
        if !lock(&self.shared.links).insert_within(self.id, link, self.shared.max_connections) {
            return false;
        }
        let label = format!("connection {} ({}, {})", self.id, client.client_name, self.peer);
        self.subscriber = Some(self.shared.fanout.subscribe(client.interest(), label));
        true
    }

    /// Takes the link off the list and out of the fan-out (what was queued for it is dropped
    /// and settled), and fails our requests to it.
    pub(super) fn unlist(&mut self) {
        lock(&self.shared.links).remove(self.id);
        self.subscriber = None;
        for (_, reply) in self.calls.drain() {
            let _ = reply.send(Err(CallError::Disconnected));
        }
    }

    pub(super) async fn end_link(&mut self) {
        self.unlist();
        self.disconnect().await;
    }

    pub(super) async fn disconnect(&mut self) {
        if let Some(client) = self.client.take() {
            let handler = self.handler.clone();
            if tokio::spawn(async move { handler.disconnect(&client).await }).await.is_err() {
                log::warn!("connection {}: disconnect handler panicked", self.id);
            }
        }
    }

    pub(super) async fn on_subscribe(&mut self, from: Incoming, patterns: Vec<EventPath>) -> Result<(), LinkError> {
        if let Some(reason) = invalid_subscription(&patterns) {
            return self.refuse(from, &reason).await;
        }
        let Some(client) = self.client.clone() else { return self.refuse(from, "not connected").await };
        let (handler, asking, wanted) = (self.handler.clone(), client.clone(), patterns.clone());
        let allowed = guarded(async move { handler.subscribe(&asking, &wanted).await }).await;
        if let Err(reason) = allowed {
            log::info!("connection {}: subscriptions of {} refused: {reason}", self.id, client.client_name);
            return self.refuse(from, reason.message()).await;
        }
        // Listed first, so that events notified after the client sees the answer match.
        if let Some(subscriber) = &self.subscriber {
            subscriber.set_patterns(&patterns);
        }
        let client = Arc::new(ClientInfo { subscriptions: patterns, ..(*client).clone() });
        lock(&self.shared.links).update(self.id, client.clone());
        self.client = Some(client);
        self.answer(from, |conn, out| conn.respond_raw(from, 0, &[], out)).await
    }
}

/// Why a list of subscription patterns is refused, if it is: the core's pattern grammar.
fn invalid_subscription(patterns: &[EventPath]) -> Option<String> {
    patterns.iter().find_map(|p| p.check_pattern().err().map(|e| format!("invalid subscription {p}: {e}")))
}
