//! The native front-end: the Rivulet protocol on plain TCP (`--listen`), TLS (`--tls-listen`)
//! and serial lines carried over TCP (`--serial-listen`), all one `rivulet_tokio::server::Server`
//! sharing the broker's fan-out. Its bytes are parsed by `rivulet-core`; this module owns the
//! listeners, the glue to the broker (`handler.rs`), its two application requests (status and
//! forwarded calls, `forward.rs`) and its metrics label, `native`.

mod handler;
pub(crate) use handler::{refusal, serve_request};
pub mod login;

// The payload of a forwarded call and its decoder live in their own dependency-light file, which
// the fuzz crate compiles too (target `forward`).
pub mod forward;
pub use forward::Forward;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rivulet_core::model::Status;
use rivulet_core::session::ServerConfig;
use rivulet_tokio::packet::PacketRequest;
use rivulet_tokio::server::{Server, ServerOptions};
use rivulet_tokio::tls;

use self::handler::NativeHandler;
use self::login::Authenticator;
use super::{Call, ClientReport, Frontend, FrontendStats, Listener};
use crate::broker::Broker;
use crate::config::{NativeSettings, Settings};
use crate::files::FileStore;

/// Its name in status, logs and metrics.
pub const NAME: &str = "native";

/// Application request type a client uses to ask for the gateway's status (JSON answer).
pub const RQ_STATUS: u64 = 0x7200;

/// Application request type that calls another client's request handler through the gateway:
/// the payload is a [`Forward`] (postcard), the answer the target's answer.
pub const RQ_FORWARD: u64 = 0x7201;

/// Application request type for the latest event of each type across the federation: the
/// payload is the patterns (postcard `Vec<String>`, none for every type the client may see), the
/// answer a `federation::wire::LatestFound` (docs/FEDERATION.md, "What a query covers").
pub const RQ_LATEST_NETWORK: u64 = 0x7202;

/// A running native front-end.
pub struct NativeFrontend {
    server: Arc<Server>,
    handler: Arc<NativeHandler>,
    listeners: Vec<Listener>,
}

/// The native front-end's settings, checked (its TLS files read), before anything is created.
pub struct NativeConfig {
    settings: Settings,
    tls: Option<(SocketAddr, Arc<tls::rustls::ServerConfig>)>,
}

impl NativeFrontend {
    /// Reads what the settings name (the TLS certificate and key): a mistake there stops the
    /// gateway before it creates its store.
    pub fn configure(settings: &Settings) -> Result<NativeConfig, String> {
        let tls = match &settings.native.tls {
            Some(tls) => Some((tls.listen, tls::server_config_from_pem(&tls.cert, &tls.key)?)),
            None => None,
        };
        Ok(NativeConfig { settings: settings.clone(), tls })
    }

    /// Binds the listeners and serves them with `broker` (attached to it).
    pub async fn start(
        config: NativeConfig,
        broker: &Arc<Broker>,
        files: Arc<FileStore>,
    ) -> Result<Arc<NativeFrontend>, String> {
        let NativeConfig { settings, tls } = config;
        let native = &settings.native;
        let handler = Arc::new(NativeHandler {
            broker: broker.clone(),
            auth: Authenticator::new(broker.access().clients().clone()),
            logins_refused: AtomicU64::new(0),
            federation: std::sync::OnceLock::new(),
            files,
        });
        let options = ServerOptions {
            config: ServerConfig {
                max_packet: settings.max_packet,
                window: settings.register_window,
                max_keepalive: rivulet_core::time::Duration::from_millis(
                    u64::try_from(settings.max_keepalive.as_millis()).unwrap_or(u64::MAX),
                ),
                ..ServerConfig::default()
            },
            server_id: broker.server_id(),
            status: broker.status(),
            fanout: Some(broker.fanout().clone()),
            max_connections: settings.max_connections,
            ..ServerOptions::default()
        };
        // Every listener bound before any accepts: a failure leaves nothing running.
        let plain = bind(native.listen, "--listen").await?;
        let tls = match tls {
            Some((addr, config)) => Some((bind(addr, "--tls-listen").await?, config)),
            None => None,
        };
        let serial = match native.serial_listen {
            Some(addr) => Some(bind(addr, "--serial-listen").await?),
            None => None,
        };
        let mut listeners = vec![Listener { kind: "tcp", addr: local_addr(&plain)? }];
        let mut server = Server::builder(options, handler.clone()).listener(plain).map_err(|e| e.to_string())?;
        if let Some((listener, config)) = tls {
            listeners.push(Listener { kind: "tls", addr: local_addr(&listener)? });
            server = server.listener_with(listener, tls::Acceptor::new(config)).map_err(|e| e.to_string())?;
        }
        if let Some(listener) = serial {
            listeners.push(Listener { kind: "serial", addr: local_addr(&listener)? });
            server = server.serial_listener(listener).map_err(|e| e.to_string())?;
        }
        let server = Arc::new(server.start().map_err(|e| e.to_string())?);
        let frontend = Arc::new(NativeFrontend { server, handler, listeners });
        let attached: Arc<dyn Frontend> = frontend.clone();
        broker.attach(&attached);
        Ok(frontend)
    }

    /// The Rivulet server behind it.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// Hands peer gateways' messages (federation) to `federation` from now on.
    pub fn serve_federation(&self, federation: Arc<crate::federation::Federation>) {
        let _ = self.handler.federation.set(federation);
    }

    /// The first listener of `kind` (`tcp`, `tls`, `serial`), if it has one.
    pub fn addr(&self, kind: &str) -> Option<SocketAddr> {
        self.listeners.iter().find(|l| l.kind == kind).map(|l| l.addr)
    }
}

impl NativeSettings {
    /// Every address the native front-end would listen on, with the flag that sets it.
    pub fn addresses(&self) -> Vec<(&'static str, SocketAddr)> {
        std::iter::once(("--listen", self.listen))
            .chain(self.tls.as_ref().map(|t| ("--tls-listen", t.listen)))
            .chain(self.serial_listen.map(|a| ("--serial-listen", a)))
            .collect()
    }
}

impl Frontend for NativeFrontend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn listeners(&self) -> Vec<Listener> {
        self.listeners.clone()
    }

    fn clients(&self) -> Vec<ClientReport> {
        self.server
            .connections()
            .into_iter()
            .map(|c| {
                let stats = self.server.connection_stats(c.id).unwrap_or_default();
                ClientReport {
                    id: c.id,
                    name: c.client_name,
                    peer: c.peer,
                    subscriptions: c.subscriptions.iter().map(ToString::to_string).collect(),
                    persisted: c.persisted,
                    registered: stats.registered,
                    refused: stats.refused,
                    notified: stats.notified,
                }
            })
            .collect()
    }

    fn stats(&self) -> FrontendStats {
        let s = self.server.stats();
        FrontendStats {
            connections: self.server.connections().len() as u64,
            accepted: s.accepted,
            over_limit: s.over_limit,
            logins_refused: self.handler.logins_refused.load(Relaxed) + s.inits_refused,
            notified: s.notified,
            registrations_refused: s.refused,
            too_slow: s.too_slow,
            bad_input: s.bad_input,
            handshake_failed: s.handshake_failed,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            too_large: 0,
            keepalive_capped: s.keepalive_capped,
            accept_failed: s.accept_failed,
        }
    }

    fn call(&self, client: &str, request: PacketRequest) -> Option<Call> {
        // The newest connection of that name answers.
        let target = self.server.connections().into_iter().filter(|c| c.client_name == client).max_by_key(|c| c.id)?;
        let server = self.server.clone();
        Some(Box::pin(async move { server.request(target.id, request.rq_type, request.flags, request.payload).await }))
    }

    fn announce(&self, status: Status) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.server.set_status(status))
    }

    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.server.shutdown())
    }
}

/// A listener on `addr`, or an error that says which setting to change.
async fn bind(addr: SocketAddr, flag: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e} (is another gateway running? try {flag})"))
}

fn local_addr(listener: &tokio::net::TcpListener) -> Result<SocketAddr, String> {
    listener.local_addr().map_err(|e| format!("the address of a listener: {e}"))
}
