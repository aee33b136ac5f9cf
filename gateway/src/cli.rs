//! The commands people run against a gateway: `pub`, `sub`, `query` and `status`. Event types
//! are written with `/` between segments; events print as one JSON object per line.

use std::path::PathBuf;

use rivulet_core::model::Timestamp;
use rivulet_tokio::model::{Event, EventPath, Order, Payload, Query, RegisterEvent, TimeseriesQuery};
use rivulet_tokio::{Client, ClientError, ClientOptions, connect};

use crate::broker::{RQ_STATUS, json_string};
use crate::gateway::DEFAULT_LISTEN;

pub const DEFAULT_GATEWAY: &str = DEFAULT_LISTEN;

#[derive(Debug, Clone, clap::Args)]
pub struct PubArgs {
    /// The event type, e.g. `sensor/room1/temp`.
    pub event_type: String,
    /// JSON text (`21.5`, `'{"on":true}'`), or `@FILE` to send a file's bytes as binary.
    pub payload: Option<String>,
    /// The gateway to publish to.
    #[arg(long, default_value = DEFAULT_GATEWAY)]
    pub gateway: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SubArgs {
    /// Patterns: `?` matches one segment, a final `*` any rest (`sensor/*`, `sensor/?/temp`).
    #[arg(required = true)]
    pub patterns: Vec<String>,
    /// Exit after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Only events already stored durably.
    #[arg(long)]
    pub persisted: bool,
    #[arg(long, default_value = DEFAULT_GATEWAY)]
    pub gateway: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    #[command(subcommand)]
    pub kind: QueryKind,
    #[arg(long, default_value = DEFAULT_GATEWAY, global = true)]
    pub gateway: String,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum QueryKind {
    /// The newest event of each type matching the patterns (all types when none are given).
    Latest { patterns: Vec<String> },
    /// Events in a time range, newest first unless `--ascending`.
    Timeseries {
        patterns: Vec<String>,
        /// From this time (seconds since the Unix epoch, fractions allowed).
        #[arg(long)]
        from: Option<f64>,
        /// Up to this time (seconds since the Unix epoch).
        #[arg(long)]
        to: Option<f64>,
        /// At most this many events.
        #[arg(long)]
        max: Option<u32>,
        #[arg(long)]
        ascending: bool,
    },
}

/// A client for one command, with an error that says what to do when no gateway answers.
async fn client(gateway: &str, name: &str, options: impl FnOnce(&mut ClientOptions)) -> Result<Client, String> {
    let mut client_options = ClientOptions::new(name);
    options(&mut client_options);
    match connect(gateway.to_string(), client_options).await {
        Ok((client, _events)) => Ok(client),
        Err(ClientError::Io(e)) => {
            Err(format!("no gateway at {gateway} ({e}); start one with `rivulet gateway` or pass --gateway ADDR"))
        }
        Err(e) => Err(format!("gateway {gateway}: {e}")),
    }
}

fn parse_pattern(text: &str) -> Result<EventPath, String> {
    let path = EventPath::parse(text);
    path.check_pattern().map_err(|_| format!("{text:?}: '*' may only be the last segment of a pattern"))?;
    Ok(path)
}

fn parse_type(text: &str) -> Result<EventPath, String> {
    let path = EventPath::parse(text);
    if path.segments().any(|s| s == "?" || s == "*") {
        return Err(format!("{text:?}: an event type cannot contain '?' or '*' (those are for patterns)"));
    }
    if text.is_empty() || path.segments().any(str::is_empty) {
        return Err(format!("{text:?}: an event type needs non-empty segments, like sensor/room1/temp"));
    }
    Ok(path)
}

fn parse_payload(text: &str) -> Result<Payload, String> {
    if let Some(file) = text.strip_prefix('@') {
        let path = PathBuf::from(file);
        let data = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        return Ok(Payload::Binary { kind: "file".into(), data });
    }
    serde_json::from_str::<serde_json::Value>(text)
        .map_err(|e| format!("payload {text:?} is not JSON ({e}); quote text as '\"text\"', or use @FILE for bytes"))?;
    Ok(Payload::Json(text.to_string()))
}

pub async fn publish(args: PubArgs) -> Result<(), String> {
    let event_type = parse_type(&args.event_type)?;
    let payload = args.payload.as_deref().map(parse_payload).transpose()?;
    let client = client(&args.gateway, "rivulet-pub", |_| {}).await?;
    let event = RegisterEvent { event_type, source_timestamp: None, payload };
    let registered = client.register_with_response(vec![event]).await.map_err(|e| format!("not registered: {e}"))?;
    for event in &registered {
        println!("{}", event_json(event));
    }
    client.close().await;
    Ok(())
}

pub async fn subscribe(args: SubArgs) -> Result<(), String> {
    let patterns = args.patterns.iter().map(|p| parse_pattern(p)).collect::<Result<Vec<_>, _>>()?;
    let mut options = ClientOptions::new("rivulet-sub");
    options.subscriptions = patterns;
    options.persisted = args.persisted;
    let (client, mut events) = match connect(args.gateway.clone(), options).await {
        Ok(connected) => connected,
        Err(ClientError::Io(e)) => {
            return Err(format!(
                "no gateway at {} ({e}); start one with `rivulet gateway` or pass --gateway ADDR",
                args.gateway
            ));
        }
        Err(e) => return Err(format!("gateway {}: {e}", args.gateway)),
    };
    let mut seen = 0u64;
    while args.count.is_none_or(|count| seen < count) {
        let event = tokio::select! {
            event = events.next() => event,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(event) = event else { break };
        println!("{}", event_json(&event));
        seen += 1;
    }
    client.close().await;
    Ok(())
}

fn timestamp(seconds: f64) -> Timestamp {
    Timestamp::from_micros((seconds * 1e6).round() as i64)
}

pub async fn query(args: QueryArgs) -> Result<(), String> {
    let patterns = |patterns: &[String]| -> Result<Option<Vec<EventPath>>, String> {
        if patterns.is_empty() {
            return Ok(None);
        }
        patterns.iter().map(|p| parse_pattern(p)).collect::<Result<Vec<_>, _>>().map(Some)
    };
    let query = match &args.kind {
        QueryKind::Latest { patterns: p } => Query::Latest { event_types: patterns(p)? },
        QueryKind::Timeseries { patterns: p, from, to, max, ascending } => Query::Timeseries(TimeseriesQuery {
            event_types: patterns(p)?,
            t_from: from.map(timestamp),
            t_to: to.map(timestamp),
            order: if *ascending { Order::Ascending } else { Order::Descending },
            max_results: *max,
            ..TimeseriesQuery::default()
        }),
    };
    let client = client(&args.gateway, "rivulet-query", |_| {}).await?;
    let events = match query {
        Query::Timeseries(TimeseriesQuery { max_results: Some(_), .. }) => {
            client.query(query).await.map(|page| page.events)
        }
        _ => client.query_all(query).await,
    };
    let events = events.map_err(|e| format!("query failed: {e}"))?;
    for event in &events {
        println!("{}", event_json(event));
    }
    client.close().await;
    Ok(())
}

pub async fn status(gateway: &str) -> Result<(), String> {
    let client = client(gateway, "rivulet-status", |_| {}).await?;
    let reply = client.request(RQ_STATUS, 0, Vec::new()).await.map_err(|e| format!("status: {e}"))?;
    println!("{}", String::from_utf8_lossy(&reply.payload));
    client.close().await;
    Ok(())
}

fn timestamp_json(t: &Timestamp) -> String {
    format!("{}.{:06}", t.s, t.us)
}

/// One event as a JSON object: id, type (segments), timestamps (seconds), payload.
pub fn event_json(event: &Event) -> String {
    let segments: Vec<String> = event.event_type.segments().map(json_string).collect();
    let payload = match &event.payload {
        None => "null".to_string(),
        Some(Payload::Json(text)) => text.clone(),
        Some(Payload::Binary { kind, data }) => {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            format!("{{\"kind\":{},\"hex\":\"{hex}\"}}", json_string(kind))
        }
    };
    let source = event.source_timestamp.as_ref().map_or("null".to_string(), timestamp_json);
    format!(
        "{{\"id\":[{},{},{}],\"type\":[{}],\"timestamp\":{},\"source_timestamp\":{},\"payload\":{}}}",
        event.id.server,
        event.id.session,
        event.id.instance,
        segments.join(","),
        timestamp_json(&event.timestamp),
        source,
        payload
    )
}
