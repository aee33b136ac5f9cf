//! The Chaski front-end: the gateway is a node of a Chaski network for chaski-confluent's
//! `ChaskiStreamer` nodes that use the JSON codec of docs/CHASKI.md, at `--chaski-listen` (TCP
//! and UDP on one port, as Chaski binds). The bytes are parsed by `rivulet_core::chaski`; this
//! module owns the listeners, one task per connection (`connection.rs`), the mapping between
//! messages and events (`convert.rs`), the UDP status answers and the metrics label `chaski`.
//!
//! Chaski has no login: every node on the listener is the client `[chaski] client` to the ACLs,
//! so the listener stays on loopback unless `--insecure`. A node's `ChaskiMessage`s become events
//! (each uuid once: a pool of the last `[chaski] pool`); events of `chaski/<topic>` go to the
//! nodes subscribed to that topic, with the uuid and TTL (less one) of the node that pushed them,
//! or the gateway's own.

mod connection;
pub mod convert;

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rivulet_core::chaski::message::{Message, Value};
use rivulet_core::model::EventId;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::connections::{Connections, accept_loop};
use super::{Frontend, Listener};
use crate::broker::Broker;
use crate::config::{ChaskiSettings, Settings};
use crate::files::FileStore;

/// Its name in status, logs and metrics.
pub const NAME: &str = "chaski";

/// How long a closing connection may take to close its socket.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a message a node pushed came from: its uuid and TTL (as received), and the connection.
#[derive(Debug, Clone)]
struct Origin {
    uuid: String,
    ttl: i64,
    connection: u64,
}

/// Message uuids seen and events made of pushed messages, each the last `capacity`.
#[derive(Debug, Default)]
struct Memory {
    uuids: HashSet<String>,
    uuid_order: VecDeque<String>,
    origins: HashMap<EventId, Origin>,
    origin_order: VecDeque<EventId>,
}

impl Memory {
    /// Remembers `uuid`; false if it was seen already.
    fn first_sight(&mut self, uuid: &str, capacity: usize) -> bool {
        if self.uuids.contains(uuid) {
            return false;
        }
        self.uuids.insert(uuid.to_string());
        self.uuid_order.push_back(uuid.to_string());
        while self.uuid_order.len() > capacity {
            if let Some(old) = self.uuid_order.pop_front() {
                self.uuids.remove(&old);
            }
        }
        true
    }

    fn remember_origin(&mut self, id: EventId, origin: Origin, capacity: usize) {
        self.origins.insert(id, origin);
        self.origin_order.push_back(id);
        while self.origin_order.len() > capacity {
            if let Some(old) = self.origin_order.pop_front() {
                self.origins.remove(&old);
            }
        }
    }
}

/// What every connection of the front-end shares.
struct Shared {
    broker: Arc<Broker>,
    /// Where `ChaskiFile`s go: the gateway's files.
    files: Arc<FileStore>,
    settings: ChaskiSettings,
    /// Where nodes reach the gateway (its handshakes say so).
    addr: std::net::SocketAddr,
    memory: Mutex<Memory>,
    conns: Connections,
    /// Each joined node's name and the queue of messages relayed to it (a discovery search
    /// passing through the gateway), by connection id.
    relays: Mutex<HashMap<u64, (String, mpsc::Sender<Message>)>>,
}

impl Shared {
    fn memory(&self) -> MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn relays(&self) -> MutexGuard<'_, HashMap<u64, (String, mpsc::Sender<Message>)>> {
        self.relays.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running Chaski front-end.
pub struct ChaskiFrontend {
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    udp: JoinHandle<()>,
}

impl ChaskiFrontend {
    /// Listens at `[chaski] listen` (if set), TCP and UDP, and serves Chaski nodes with `broker`.
    pub async fn start(
        settings: &Settings,
        broker: &Arc<Broker>,
        files: &Arc<FileStore>,
    ) -> Result<Option<Arc<Self>>, String> {
        let chaski = &settings.chaski;
        let addr = match (chaski.listen, chaski.peers.is_empty()) {
            (Some(addr), _) => addr,
            (None, true) => return Ok(None),
            // Dialing only: a loopback port of its own, for the handshakes and status.
            (None, false) => std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let cannot = |e: std::io::Error| format!("cannot listen on {addr}: {e} (try another --chaski-listen)");
        let listener = TcpListener::bind(addr).await.map_err(cannot)?;
        let addr = listener.local_addr().map_err(cannot)?;
        // UDP on the same port, as a Chaski node binds: status requests come there.
        let udp = UdpSocket::bind(addr).await.map_err(cannot)?;
        let shared = Arc::new(Shared {
            broker: broker.clone(),
            files: files.clone(),
            settings: settings.chaski.clone(),
            addr,
            memory: Mutex::new(Memory::default()),
            conns: Connections::new(),
            relays: Mutex::new(HashMap::new()),
        });
        let max = settings.max_connections;
        let accepting = accept_loop(listener, shared.clone(), |s: &Shared| &s.conns, max, "Chaski", connection::serve);
        shared.conns.set_accepting(tokio::spawn(accepting));
        let listeners = vec![Listener { kind: "tcp", addr }, Listener { kind: "udp", addr }];
        let udp = tokio::spawn(answer_status(udp, shared.clone()));
        for (n, peer) in chaski.peers.iter().enumerate() {
            tokio::spawn(dial(peer.clone(), DIALED_IDS + n as u64, Arc::downgrade(&shared)));
        }
        let frontend = Arc::new(ChaskiFrontend { shared, listeners, udp });
        let attached: Arc<dyn Frontend> = frontend.clone();
        broker.attach(&attached);
        Ok(Some(frontend))
    }
}

impl Drop for ChaskiFrontend {
    fn drop(&mut self) {
        self.shared.conns.shutdown.send_replace(true);
        self.udp.abort();
    }
}

/// Connection ids of dialed nodes, apart from those the accept loop gives.
const DIALED_IDS: u64 = 1 << 48;

/// Dials the Chaski node at `addr` and serves the link; again after a pause that doubles from
/// 1 s up to 30 s (back to 1 s after a link that stayed up a minute), until the gateway stops.
async fn dial(addr: String, id: u64, shared: std::sync::Weak<Shared>) {
    let mut pause = Duration::from_secs(1);
    loop {
        let Some(this) = shared.upgrade() else { return };
        if *this.conns.shutdown.borrow() {
            return;
        }
        let started = std::time::Instant::now();
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(stream) => {
                let peer = stream.peer_addr().unwrap_or(this.addr);
                let _ = stream.set_nodelay(true);
                tracing::info!("Chaski node {addr} dialed");
                connection::serve_dialed(stream, peer, id, this).await;
            }
            Err(e) => tracing::warn!("cannot reach Chaski node {addr}: {e}; trying again in {pause:?}"),
        }
        if started.elapsed() >= Duration::from_secs(60) {
            pause = Duration::from_secs(1);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// Answers Chaski's UDP `status` requests (what `_get_status` answers: name, paired, serving,
/// reconnecting, and the request's id); anything else is counted and dropped.
async fn answer_status(socket: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else { continue };
        let request = buf.get(..n).map(Message::parse);
        let id = match request {
            Some(Ok(m)) if m.command == "status" => m.data.get("id").cloned().unwrap_or(Value::Null),
            _ => {
                shared.conns.stats.bad_input.fetch_add(1, Relaxed);
                continue;
            }
        };
        let status = Value::Object(vec![
            ("name".into(), Value::String(shared.settings.name.clone())),
            ("paired".into(), Value::Object(Vec::new())),
            ("serving".into(), Value::Bool(!*shared.conns.shutdown.borrow())),
            ("reconnecting".into(), Value::Bool(false)),
            ("id".into(), id),
        ]);
        let response = Message {
            command: "response".into(),
            topic: String::new(),
            data: status,
            timestamp: convert::datetime(crate::broker::now()),
            ttl: 64,
            uuid: None,
        };
        let _ = socket.send_to(response.to_json().as_bytes(), from).await;
    }
}

impl Frontend for ChaskiFrontend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn listeners(&self) -> Vec<Listener> {
        self.listeners.clone()
    }

    fn connections(&self) -> Option<&Connections> {
        Some(&self.shared.conns)
    }

    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.udp.abort();
        self.shared.conns.stop(NAME)
    }
}
