//! The stream-sea front-end: stream-sea's REST API under `/api/v1` (`rest.rs`) and its
//! websocket at `/api/v1/streams` (`ws.rs`), at `--streamsea-listen`, on axum. The bodies are parsed by `rivulet_core::streamsea`
//! (`core/src/streamsea/`, docs/STREAMSEA.md); this module owns the listener, the streams'
//! schemas (`schemas.rs`, kept as events) and the metrics label `streamsea`.
//!
//! A stream `s` is the event type `streamsea/s` (or the one `[[streamsea.streams]]` maps it onto): what is published to it is an event of that
//! type (its JSON payload the message), and what anyone registers under that type is a message
//! of the stream, held to the stream's newest schema by the broker (`schemas::SchemaRule`), so
//! through every front-end. Its schemas are events of type `streamsea-schemas/s`. Clients authenticate
//! with Basic credentials: a configured client's name and its token (the 64 hex digits
//! `rivulet credential` printed); without `[[clients]]` everyone is let in. They travel in
//! clear, so beyond loopback the listener needs `--insecure`.

mod groups;
mod rest;
mod schemas;
mod ws;

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use rivulet_core::owned::EventPath;
use tokio::net::TcpListener;

pub use schemas::SCHEMA_ROOT;
use schemas::Schemas;

use super::connections::Connections;
use super::{Frontend, Listener};
use crate::broker::Broker;
use crate::config::Settings;

/// Its name in status, logs and metrics.
pub const NAME: &str = "streamsea";
/// The first segment of a stream's event type.
pub const STREAM_ROOT: &str = "streamsea";

/// Which event type each stream is: `streamsea/<name>`, or what `[[streamsea.streams]]` maps it
/// onto; and back.
#[derive(Debug, Default)]
pub struct Streams {
    mapped: std::collections::BTreeMap<String, EventPath>,
}

impl Streams {
    fn new(mappings: &[crate::config::StreamMapping]) -> Self {
        let mapped = mappings.iter().map(|m| (m.name.clone(), EventPath::parse(&m.event_type))).collect();
        Streams { mapped }
    }

    /// A stream's event type.
    pub fn event_type(&self, stream: &str) -> EventPath {
        self.mapped.get(stream).cloned().unwrap_or_else(|| EventPath::new([STREAM_ROOT, stream]))
    }

    /// The stream an event type is, if it is one.
    pub fn stream_of(&self, event_type: &EventPath) -> Option<String> {
        if let Some((name, _)) = self.mapped.iter().find(|(_, t)| *t == event_type) {
            return Some(name.clone());
        }
        let mut segments = event_type.segments();
        match (segments.next(), segments.next(), segments.next()) {
            (Some(STREAM_ROOT), Some(stream), None) if !self.mapped.contains_key(stream) => Some(stream.to_string()),
            _ => None,
        }
    }
}

/// What every request shares.
struct Shared {
    broker: Arc<Broker>,
    max_body: usize,
    /// Shared with the broker's [`schemas::SchemaRule`].
    schemas: Arc<RwLock<Schemas>>,
    streams: Arc<Streams>,
    /// Held while a define checks and stores its version.
    defining: tokio::sync::Mutex<()>,
    /// The next websocket connection's id.
    next_id: std::sync::atomic::AtomicU64,
    /// The keys a JWT login may be signed with.
    jwt_keys: Vec<jsonwebtoken::DecodingKey>,
    /// The websocket's consumer groups.
    groups: groups::Groups,
    conns: Connections,
}

/// The claims a stream-sea JWT must carry.
#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

impl Shared {
    /// A stream's event type.
    fn stream_type(&self, stream: &str) -> EventPath {
        self.streams.event_type(stream)
    }

    /// Whether `jwt` logs `client_id` in: signed (HS256) with one of the configured secrets,
    /// unexpired (`exp`, no leeway), for this client (`sub`), and the client configured (when
    /// clients are).
    fn jwt_matches(&self, client_id: &str, jwt: &str) -> bool {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = 0;
        let signed = self.jwt_keys.iter().find_map(|key| jsonwebtoken::decode::<Claims>(jwt, key, &validation).ok());
        let clients = self.broker.access().clients();
        // `acl` is everyone's when no clients are configured.
        signed.is_some_and(|token| token.claims.sub == client_id) && clients.acl(client_id).is_some()
    }

    // A poisoned lock only means a panic elsewhere; the schemas stay consistent.
    fn schemas(&self) -> RwLockReadGuard<'_, Schemas> {
        self.schemas.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn schemas_mut(&self) -> RwLockWriteGuard<'_, Schemas> {
        self.schemas.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running stream-sea front-end.
pub struct StreamSeaFrontend {
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
}

impl StreamSeaFrontend {
    /// Listens at `[streamsea] listen` (if set), with the schemas the store holds.
    pub async fn start(settings: &Settings, broker: &Arc<Broker>) -> Result<Option<Arc<Self>>, String> {
        let Some(addr) = settings.streamsea.listen else { return Ok(None) };
        let store = broker.store().clone();
        let schemas = tokio::task::spawn_blocking(move || Schemas::load(&store))
            .await
            .map_err(|e| format!("reading the stream-sea schemas: {e}"))??;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e} (try another --streamsea-listen)"))?;
        let addr = listener.local_addr().map_err(|e| format!("the address of the stream-sea listener: {e}"))?;
        let shared = Arc::new(Shared {
            broker: broker.clone(),
            max_body: settings.streamsea.max_body,
            schemas: Arc::new(RwLock::new(schemas)),
            streams: Arc::new(Streams::new(&settings.streamsea.streams)),
            defining: tokio::sync::Mutex::new(()),
            next_id: std::sync::atomic::AtomicU64::new(1),
            groups: groups::Groups::default(),
            jwt_keys: settings
                .streamsea
                .jwt_secrets
                .iter()
                .map(|s| jsonwebtoken::DecodingKey::from_secret(s.as_bytes()))
                .collect(),
            conns: Connections::new(),
        });
        let router = Router::new()
            .route("/api/v1/streams/{stream}/define", post(rest::define))
            .route("/api/v1/streams/{stream}/schema", get(rest::describe))
            .route("/api/v1/streams/{stream}/publish", post(rest::publish))
            .route("/api/v1/schema-versions-vector", post(rest::versions))
            .route("/api/v1/streams", get(ws::upgrade))
            .fallback(rest::not_found)
            .layer(DefaultBodyLimit::max(settings.streamsea.max_body))
            .with_state(shared.clone());
        let mut stop = shared.conns.shutdown.subscribe();
        let serving = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            });
        shared.conns.set_accepting(tokio::spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!("stream-sea listener failed: {e}");
            }
        }));
        let frontend = Arc::new(StreamSeaFrontend { shared, listeners: vec![Listener { kind: "http", addr }] });
        let attached: Arc<dyn Frontend> = frontend.clone();
        broker.attach(&attached);
        // Every front-end's registrations to a stream are held to its schema.
        let rule =
            schemas::SchemaRule { schemas: frontend.shared.schemas.clone(), streams: frontend.shared.streams.clone() };
        broker.add_rule(Arc::new(rule));
        Ok(Some(frontend))
    }
}

impl Drop for StreamSeaFrontend {
    fn drop(&mut self) {
        self.shared.conns.shutdown.send_replace(true);
    }
}

impl Frontend for StreamSeaFrontend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn listeners(&self) -> Vec<Listener> {
        self.listeners.clone()
    }

    /// Its websocket clients that authenticated (REST calls keep no connection).
    fn connections(&self) -> Option<&Connections> {
        Some(&self.shared.conns)
    }
}
