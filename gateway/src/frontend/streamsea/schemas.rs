//! The streams' schemas: kept durably as events of type `streamsea-schemas/<stream>` (their
//! JSON as the payload), read back from the store when the front-end starts, and held in
//! memory by stream, every version in the order defined. A version, once defined, is never
//! replaced.

use std::collections::BTreeMap;
use std::sync::Arc;

use std::sync::{PoisonError, RwLock};

use rivulet_core::model::Order;
use rivulet_core::owned::{EventPath, Payload, RegisterEvent, TimeseriesQuery};
use rivulet_core::streamsea::schema::Schema;

use crate::broker::PayloadRule;
use crate::store::EventStore;

/// The first segment of a schema's event type.
pub const SCHEMA_ROOT: &str = "streamsea-schemas";

/// A schema's event type.
pub fn schema_type(stream: &str) -> EventPath {
    EventPath::new([SCHEMA_ROOT, stream])
}

/// Every stream's schema versions.
#[derive(Debug, Default)]
pub struct Schemas {
    by_stream: BTreeMap<String, Vec<Schema>>,
}

/// What defining a schema comes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Defined {
    /// A new version.
    New,
    /// The same schema again: nothing to store.
    Again,
    /// That version exists with other fields.
    Conflict,
}

impl Schemas {
    /// The schemas the store holds, oldest first.
    pub fn load(store: &Arc<dyn EventStore>) -> Result<Schemas, String> {
        let mut schemas = Schemas::default();
        let mut query = TimeseriesQuery {
            event_types: Some(vec![EventPath::new([SCHEMA_ROOT, "*"])]),
            order: Order::Ascending,
            max_results: Some(1000),
            ..TimeseriesQuery::default()
        };
        loop {
            let page = store.timeseries(&query, 1 << 20).map_err(|e| format!("reading the stream-sea schemas: {e}"))?;
            for event in &page.events {
                let Some(Payload::Json(text)) = &event.payload else { continue };
                match Schema::parse(text.as_bytes()) {
                    Ok(schema) => schemas.insert(schema),
                    Err(e) => tracing::warn!("stored stream-sea schema {} unreadable: {e}", event.event_type),
                }
            }
            match (page.more_follows, page.events.last()) {
                (true, Some(last)) => query.last_event_id = Some(last.id),
                _ => return Ok(schemas),
            }
        }
    }

    /// Whether `schema` would be a new version of its stream.
    pub fn check(&self, schema: &Schema) -> Defined {
        match self.by_stream.get(&schema.name).and_then(|all| all.iter().find(|s| s.version == schema.version)) {
            None => Defined::New,
            Some(existing) if existing == schema => Defined::Again,
            Some(_) => Defined::Conflict,
        }
    }

    pub fn insert(&mut self, schema: Schema) {
        if self.check(&schema) == Defined::New {
            self.by_stream.entry(schema.name.clone()).or_default().push(schema);
        }
    }

    /// The stream's newest schema.
    pub fn latest(&self, stream: &str) -> Option<&Schema> {
        self.by_stream.get(stream).and_then(|all| all.last())
    }
}

/// The streams' schemas as a rule of the broker: an event of a stream's type (`streamsea/s`, or
/// a mapped one), registered through any front-end, must carry a JSON payload its newest schema
/// takes.
pub struct SchemaRule {
    pub schemas: Arc<RwLock<Schemas>>,
    pub streams: Arc<super::Streams>,
}

impl PayloadRule for SchemaRule {
    fn check(&self, event: &RegisterEvent) -> Result<(), String> {
        let Some(stream) = self.streams.stream_of(&event.event_type) else { return Ok(()) };
        let schemas = self.schemas.read().unwrap_or_else(PoisonError::into_inner);
        let Some(schema) = schemas.latest(&stream) else { return Ok(()) };
        let breaks = |why: &dyn std::fmt::Display| {
            format!("breaks the schema of stream {stream:?} (version {}): {why}", schema.version)
        };
        match &event.payload {
            Some(Payload::Json(text)) => schema.check(text).map_err(|v| breaks(&v)),
            Some(Payload::Binary { .. }) => Err(breaks(&"a message is JSON, not binary")),
            None => Err(breaks(&"a message needs a payload")),
        }
    }
}
