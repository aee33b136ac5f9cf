//! The Kelvin front-end: the gateway plays the Kelvin platform for Kelvin apps
//! (kelvin-python-sdk's `KelvinApp` on `KelvinStream`, or `rivulet_tokio::kelvin`), at
//! `--kelvin-listen` (Kelvin's own is 127.0.0.1:49167). The bytes are parsed by
//! `rivulet_core::kelvin` (`core/src/kelvin/`, docs/KELVIN.md); this module owns the listener,
//! one task per connection (`connection.rs`), the mapping between messages and events
//! (`convert.rs`) and the metrics label `kelvin`.
//!
//! Kelvin has no login: every app on the listener is the client `[kelvin] client` to the ACLs
//! (a `[[clients]]` entry when clients are configured), so the listener stays on loopback unless
//! `--insecure`. Each app gets the runtime manifest of `[kelvin]` first, then every event under
//! the `[kelvin] subscribe` patterns (`kelvin/*`) but its own, as messages.

mod connection;
pub mod convert;

use std::sync::Arc;
use std::time::Duration;

use rivulet_core::owned::EventPath;
use tokio::net::TcpListener;

use super::connections::{Connections, accept_loop};
use super::{Frontend, Listener};
use crate::broker::Broker;
use crate::config::Settings;

/// Its name in status, logs and metrics.
pub const NAME: &str = "kelvin";

/// How long a closing connection may take to close its socket.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every connection of the front-end shares.
struct Shared {
    broker: Arc<Broker>,
    client: String,
    max_line: usize,
    subscribe: Vec<EventPath>,
    /// The runtime manifest's payload, as compact JSON.
    manifest: String,
    /// The connections, their counters, shutdown and accept task.
    conns: Connections,
}

/// A running Kelvin front-end.
pub struct KelvinFrontend {
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
}

impl KelvinFrontend {
    /// Listens at `[kelvin] listen` (if set) and serves Kelvin apps with `broker`.
    pub async fn start(settings: &Settings, broker: &Arc<Broker>) -> Result<Option<Arc<Self>>, String> {
        let kelvin = &settings.kelvin;
        let Some(addr) = kelvin.listen else { return Ok(None) };
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            format!("cannot listen on {addr}: {e} (is a Kelvin platform running? try another --kelvin-listen)")
        })?;
        let addr = listener.local_addr().map_err(|e| format!("the address of the Kelvin listener: {e}"))?;
        let subscribe = kelvin
            .subscribe
            .iter()
            .map(|p| EventPath::parse_pattern(p).map_err(|e| format!("[kelvin] subscribe {p:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let shared = Arc::new(Shared {
            broker: broker.clone(),
            client: kelvin.client.clone(),
            max_line: kelvin.max_line,
            subscribe,
            manifest: kelvin.manifest_payload().to_string(),
            conns: Connections::new(),
        });
        let max = settings.max_connections;
        let accepting = accept_loop(listener, shared.clone(), |s: &Shared| &s.conns, max, "Kelvin", connection::serve);
        shared.conns.set_accepting(tokio::spawn(accepting));
        let listeners = vec![Listener { kind: "tcp", addr }];
        let frontend = Arc::new(KelvinFrontend { shared, listeners });
        let attached: Arc<dyn Frontend> = frontend.clone();
        broker.attach(&attached);
        Ok(Some(frontend))
    }
}

impl Drop for KelvinFrontend {
    fn drop(&mut self) {
        self.shared.conns.shutdown.send_replace(true);
    }
}

impl Frontend for KelvinFrontend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn listeners(&self) -> Vec<Listener> {
        self.listeners.clone()
    }

    fn connections(&self) -> Option<&Connections> {
        Some(&self.shared.conns)
    }
}
