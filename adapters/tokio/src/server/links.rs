//! The accepted links by connection id: what [`super::Server::connections`] lists, where
//! [`super::Server::request`] finds a connection's task, and what the connection limit counts.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::Counters;
use super::handler::ClientInfo;
use crate::packet::{CallError, PacketReply};

/// A command from the `Server` handle to one connection.
pub(super) enum Command {
    Request { rq_type: u64, flags: u64, payload: Vec<u8>, reply: oneshot::Sender<Result<PacketReply, CallError>> },
}

/// What the `Server` handle knows of an accepted link.
pub(super) struct Link {
    pub(super) info: Arc<ClientInfo>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) counters: Arc<Counters>,
}

#[derive(Default)]
pub(super) struct Links {
    entries: HashMap<u64, Link>,
}

impl Links {
    /// Lists `link` under `id` unless `limit` links are listed already; `false` then.
    pub(super) fn insert_within(&mut self, id: u64, link: Link, limit: usize) -> bool {
        if self.entries.len() >= limit {
            return false;
        }
        self.entries.insert(id, link);
        true
    }

    pub(super) fn remove(&mut self, id: u64) {
        self.entries.remove(&id);
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// A listed link's new `info` (its subscriptions changed); nothing if it is not listed.
    pub(super) fn update(&mut self, id: u64, info: Arc<ClientInfo>) {
        if let Some(link) = self.entries.get_mut(&id) {
            link.info = info;
        }
    }

    /// Every listed client, by connection id.
    pub(super) fn clients(&self) -> Vec<ClientInfo> {
        let mut all: Vec<ClientInfo> = self.entries.values().map(|link| (*link.info).clone()).collect();
        all.sort_by_key(|info| info.id);
        all
    }

    pub(super) fn commands(&self, id: u64) -> Option<mpsc::Sender<Command>> {
        self.entries.get(&id).map(|link| link.commands.clone())
    }

    pub(super) fn counters(&self, id: u64) -> Option<Arc<Counters>> {
        self.entries.get(&id).map(|link| link.counters.clone())
    }
}
