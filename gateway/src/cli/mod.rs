//! The commands people run against a gateway: `pub`, `sub`, `query` and `status`, each logging
//! in with `--name`/`--token` when the gateway has clients; and `credential`, which makes a client.
//! Event types are written with `/` between segments; events print as one JSON object per line.
//! With `--hat ADDR`, `pub`, `sub`, `query` and `status` talk hat-event's Eventer protocol to a
//! hat server instead (`hat.rs`).

mod files;
mod hat;

use std::path::PathBuf;

use rivulet_core::model::Timestamp;
use rivulet_core::owned::{Event, EventPath, Order, Payload, Query, QueryPage, RegisterEvent, TimeseriesQuery};
use rivulet_tokio::{Client, ClientError, ClientOptions, Events, connect, connect_via, tls};

pub use files::{FetchFileArgs, FilesArgs, SendFileArgs, fetch_file, list_files, send_file};

use crate::access::{Credential, TOKEN_LEN, WRONG_CREDENTIAL, from_hex, to_hex};
use crate::config::DEFAULT_LISTEN;
use crate::frontend::native::login;
use crate::frontend::native::{Forward, RQ_FORWARD, RQ_LATEST_NETWORK, RQ_STATUS, forward};

pub const DEFAULT_GATEWAY: &str = DEFAULT_LISTEN;

/// Where a command reads its token when `--token` is left out.
pub const TOKEN_ENV: &str = "RIVULET_TOKEN";

/// Who a command logs in as, for a gateway with `[[clients]]` (`rivulet credential` makes one).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Login {
    /// The client name to log in as.
    #[arg(long, value_name = "NAME", global = true)]
    pub name: Option<String>,
    /// The client's token (64 hex digits), read from RIVULET_TOKEN when left out. It never
    /// leaves this machine: it answers the gateway's challenge.
    #[arg(long, value_name = "TOKEN", global = true)]
    pub token: Option<String>,
    /// Connect with TLS, trusting the CA certificate(s) in this PEM file (for a gateway's
    /// `--tls-listen` address).
    #[arg(long, value_name = "FILE", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The name the gateway's certificate must carry [default: the host of --gateway].
    #[arg(long, value_name = "NAME", global = true, requires = "tls_ca")]
    pub tls_name: Option<String>,
}

impl Login {
    /// The name to use (`default` without `--name`) and the token's bytes, if there is a token.
    fn resolve(&self, default: &str) -> Result<(String, Option<Vec<u8>>), String> {
        let (token, from) = match &self.token {
            Some(token) => (Some(token.clone()), "--token"),
            None => (std::env::var(TOKEN_ENV).ok().filter(|t| !t.trim().is_empty()), TOKEN_ENV),
        };
        let Some(token) = token else {
            return Ok((self.name.clone().unwrap_or_else(|| default.to_string()), None));
        };
        let Some(name) = self.name.clone() else {
            return Err(format!(
                "a token ({from}) needs --name: the client name it was made for with `rivulet credential NAME`"
            ));
        };
        match from_hex(token.trim()) {
            Some(bytes) if bytes.len() == TOKEN_LEN => Ok((name, Some(bytes))),
            _ => Err(format!(
                "{from} is not a token: expected the {} hex digits `rivulet credential` printed",
                2 * TOKEN_LEN
            )),
        }
    }
}

/// `--hat ADDR`: the commands that hat's protocol has (`pub`, `sub`, `query`, `status`) talk to a
/// hat server instead.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HatServer {
    /// Talk to a hat-event server (hat's Eventer protocol: hat's own Event Server, or a
    /// gateway's --hat-listen) at ADDR instead of a Rivulet gateway. `--name` is the clientName,
    /// `--token` (or RIVULET_TOKEN) the clientToken as it is.
    #[arg(long = "hat", value_name = "ADDR", conflicts_with = "gateway", global = true)]
    pub addr: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PubArgs {
    /// The event type, e.g. `sensor/room1/temp`.
    pub event_type: String,
    /// JSON text (`21.5`, `'{"on":true}'`), or `@FILE` to send a file's bytes as binary.
    pub payload: Option<String>,
    /// The gateway to publish to.
    #[arg(long, default_value = DEFAULT_GATEWAY)]
    pub gateway: String,
    #[command(flatten)]
    pub hat: HatServer,
    #[command(flatten)]
    pub login: Login,
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
    /// Only events registered by this server (hat's serverId filter; with --hat).
    #[arg(long, value_name = "ID", requires = "addr")]
    pub server_id: Option<u64>,
    #[arg(long, default_value = DEFAULT_GATEWAY)]
    pub gateway: String,
    #[command(flatten)]
    pub hat: HatServer,
    #[command(flatten)]
    pub login: Login,
}

#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    #[command(subcommand)]
    pub kind: QueryKind,
    #[arg(long, default_value = DEFAULT_GATEWAY, global = true)]
    pub gateway: String,
    #[command(flatten)]
    pub hat: HatServer,
    #[command(flatten)]
    pub login: Login,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RequestArgs {
    /// The client (device) whose request handler answers, by its name.
    pub client: String,
    /// The request type, a number its handler knows.
    pub rq_type: u64,
    /// The request's payload as text, or `@FILE` for a file's bytes [default: empty].
    pub payload: Option<String>,
    /// Request flags.
    #[arg(long, default_value_t = 0)]
    pub flags: u64,
    #[arg(long, default_value = DEFAULT_GATEWAY)]
    pub gateway: String,
    #[command(flatten)]
    pub login: Login,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The gateway to ask.
    #[arg(long, default_value = DEFAULT_GATEWAY)]
    pub gateway: String,
    #[command(flatten)]
    pub hat: HatServer,
    #[command(flatten)]
    pub login: Login,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CredentialArgs {
    /// The client's name, as it logs in with `--name`.
    pub name: String,
    /// A pattern of event types it may register (repeat for more) [default: any type].
    #[arg(long = "register", value_name = "PATTERN")]
    pub register: Vec<String>,
    /// It may register nothing.
    #[arg(long, conflicts_with = "register")]
    pub no_register: bool,
    /// A pattern it may subscribe to and query (repeat for more) [default: any type].
    #[arg(long = "subscribe", value_name = "PATTERN")]
    pub subscribe: Vec<String>,
    /// It may subscribe to and query nothing.
    #[arg(long, conflicts_with = "subscribe")]
    pub no_subscribe: bool,
    /// It is a peer gateway: it may link with this one (docs/FEDERATION.md), its events held
    /// to its --register patterns.
    #[arg(long)]
    pub federate: bool,
    /// What it may do with the gateway's files: `write` (send and fetch), `read` or `none`
    /// [default: write].
    #[arg(long, value_name = "ACCESS", value_parser = ["write", "read", "none"])]
    pub files: Option<String>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum QueryKind {
    /// The newest event of each type matching the patterns (all types when none are given).
    Latest {
        patterns: Vec<String>,
        /// Across the gateways this one links to (and theirs), not only what this one holds:
        /// the newest of each type wherever it was admitted (its id's server says where).
        #[arg(long)]
        network: bool,
    },
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

/// A client for one command, logged in as `login` says (`default_name` without `--name`), with
/// errors that say what to do when no gateway answers or the login fails.
pub(crate) async fn connect_as(
    gateway: &str,
    login: &Login,
    default_name: &str,
    options: impl FnOnce(&mut ClientOptions),
) -> Result<(Client, Events), String> {
    let (name, token) = login.resolve(default_name)?;
    let mut client_options = ClientOptions::new(name.clone());
    // Only the answer to the challenge goes out, never the token.
    client_options.challenge = token.clone().map(|token| login::answer(name.clone(), token));
    options(&mut client_options);
    let connected = match &login.tls_ca {
        None => connect(gateway.to_string(), client_options).await,
        Some(ca) => connect_via(tls_connector(gateway, login, ca)?, client_options).await,
    };
    match connected {
        Ok(connected) => Ok(connected),
        Err(ClientError::Io(e)) => {
            Err(format!("no gateway at {gateway} ({e}); start one with `rivulet gateway` or pass --gateway ADDR"))
        }
        Err(ClientError::Refused(reason)) if reason.contains(WRONG_CREDENTIAL) => Err(format!(
            "gateway {gateway} refused the login as {name:?}: {reason}; check --name and --token (or {TOKEN_ENV})"
        )),
        Err(ClientError::Refused(reason)) if token.is_none() && reason.contains("challenged") => Err(format!(
            "gateway {gateway} requires a login: pass --name NAME and --token TOKEN (or set {TOKEN_ENV}); \
             `rivulet credential NAME` makes a client for the gateway's config"
        )),
        Err(ClientError::Refused(reason)) => Err(format!("gateway {gateway} refused {name:?}: {reason}")),
        Err(e) => Err(format!("gateway {gateway}: {e}")),
    }
}

/// A TLS connector to `addr` that trusts the CA certificates in `ca` and wants the name
/// `--tls-name` gives, or else the host of `addr`.
fn tls_connector(addr: &str, login: &Login, ca: &std::path::Path) -> Result<tls::Connector, String> {
    let config = tls::client_config(ca)?;
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host).trim_matches(['[', ']']);
    let server_name = login.tls_name.as_deref().unwrap_or(host);
    tls::Connector::new(addr, server_name, config)
}

async fn client(gateway: &str, login: &Login, default_name: &str) -> Result<Client, String> {
    connect_as(gateway, login, default_name, |_| {}).await.map(|(client, _events)| client)
}

fn parse_pattern(text: &str) -> Result<EventPath, String> {
    EventPath::parse_pattern(text).map_err(|e| format!("{text:?}: {e}"))
}

fn parse_type(text: &str) -> Result<EventPath, String> {
    EventPath::parse_type(text).map_err(|e| format!("{text:?}: {e}"))
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
    let event = RegisterEvent { event_type, source_timestamp: None, payload };
    if let Some(server) = &args.hat.addr {
        return hat::publish(server, &args.login, event).await;
    }
    let client = client(&args.gateway, &args.login, "rivulet-pub").await?;
    let registered = client.register_with_response(vec![event]).await.map_err(|e| format!("not registered: {e}"))?;
    client.close().await;
    print_events(&registered);
    Ok(())
}

pub async fn subscribe(args: SubArgs) -> Result<(), String> {
    let patterns = args.patterns.iter().map(|p| parse_pattern(p)).collect::<Result<Vec<_>, _>>()?;
    if let Some(server) = &args.hat.addr {
        return hat::subscribe(server, &args, patterns).await;
    }
    let (client, mut events) = connect_as(&args.gateway, &args.login, "rivulet-sub", |options| {
        options.subscriptions = patterns;
        options.persisted = args.persisted;
    })
    .await?;
    print_until(&mut events, args.count).await;
    client.close().await;
    Ok(())
}

/// Prints notified events, one JSON line each, until `count` were printed, the events end,
/// nobody reads our output or Ctrl-C.
async fn print_until(events: &mut (impl futures_core::Stream<Item = Event> + Unpin), count: Option<u64>) {
    let mut seen = 0u64;
    while count.is_none_or(|count| seen < count) {
        let event = tokio::select! {
            event = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *events).poll_next(cx)) => event,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(event) = event else { break };
        if !crate::out!("{}", event_json(&event)) {
            break; // nobody reads our output any more
        }
        seen += 1;
    }
}

fn timestamp(seconds: f64) -> Timestamp {
    Timestamp::from_micros((seconds * 1e6).round() as i64)
}

/// The query `rivulet query` asks, as its arguments say.
fn query_of(kind: &QueryKind) -> Result<Query, String> {
    let patterns = |patterns: &[String]| -> Result<Option<Vec<EventPath>>, String> {
        if patterns.is_empty() {
            return Ok(None);
        }
        patterns.iter().map(|p| parse_pattern(p)).collect::<Result<Vec<_>, _>>().map(Some)
    };
    Ok(match kind {
        QueryKind::Latest { patterns: p, .. } => Query::Latest { event_types: patterns(p)? },
        QueryKind::Timeseries { patterns: p, from, to, max, ascending } => Query::Timeseries(TimeseriesQuery {
            event_types: patterns(p)?,
            t_from: from.map(timestamp),
            t_to: to.map(timestamp),
            order: if *ascending { Order::Ascending } else { Order::Descending },
            max_results: *max,
            ..TimeseriesQuery::default()
        }),
    })
}

pub async fn query(args: QueryArgs) -> Result<(), String> {
    let query = query_of(&args.kind)?;
    if let Some(server) = &args.hat.addr {
        return hat::query(server, &args.login, query).await;
    }
    let client = client(&args.gateway, &args.login, "rivulet-query").await?;
    let failed = |e: ClientError| format!("query failed: {e}");
    // The latest of each type is one answer, one packet: no pages follow it, but the gateway
    // says when more types matched than fit.
    let (events, partial) = match &args.kind {
        QueryKind::Latest { patterns, network: true } => (latest_across(&client, patterns).await, false),
        QueryKind::Latest { .. } => match client.query(query).await {
            Ok(page) => (Ok(page.events), page.more_follows),
            Err(e) => (Err(failed(e)), false),
        },
        QueryKind::Timeseries { .. } => {
            (query_events(query, |page| client.query(page), |all| client.query_all(all)).await.map_err(failed), false)
        }
    };
    client.close().await;
    let events = events?;
    print_events(&events);
    if partial {
        return Err(format!(
            "partial answer: the newest events of {} types fit one answer, and more types match; narrow the \
             patterns (e.g. `rivulet query latest 'a/*'`, then 'b/*')",
            events.len()
        ));
    }
    Ok(())
}

/// The newest event of each type matching `patterns` across the federation (`RQ_LATEST_NETWORK`).
async fn latest_across(client: &Client, patterns: &[String]) -> Result<Vec<Event>, String> {
    let body = postcard::to_allocvec(patterns).map_err(|e| format!("cannot encode the query: {e}"))?;
    let reply = client.request(RQ_LATEST_NETWORK, 0, body).await.map_err(|e| format!("query failed: {e}"))?;
    let found: crate::federation::wire::LatestFound<'_> =
        postcard::from_bytes(&reply.payload).map_err(|e| format!("the gateway's answer is not understood: {e}"))?;
    Ok(found.events.into_iter().map(Event::from).collect())
}

/// Prints events, one JSON line each, until nobody reads.
fn print_events(events: &[Event]) {
    for event in events {
        if !crate::out!("{}", event_json(event)) {
            break;
        }
    }
}

/// The events `query` asks for: with a timeseries `max_results`, the first that many, asked
/// page by page with `page`; else all of them, with `all`.
async fn query_events<E, P, A>(
    query: Query,
    page: impl FnMut(Query) -> P,
    all: impl FnOnce(Query) -> A,
) -> Result<Vec<Event>, E>
where
    P: Future<Output = Result<QueryPage, E>>,
    A: Future<Output = Result<Vec<Event>, E>>,
{
    match query {
        Query::Timeseries(query @ TimeseriesQuery { max_results: Some(_), .. }) => first_events(query, page).await,
        query => all(query).await,
    }
}

/// The first `query.max_results` events, over as many pages as the server cuts them into,
/// each asked with `page`.
async fn first_events<E, F: Future<Output = Result<QueryPage, E>>>(
    mut query: TimeseriesQuery,
    mut page: impl FnMut(Query) -> F,
) -> Result<Vec<Event>, E> {
    let wanted = query.max_results.unwrap_or(u32::MAX) as usize;
    let mut events = Vec::new();
    while events.len() < wanted {
        query.max_results = u32::try_from(wanted - events.len()).ok();
        let page = page(Query::Timeseries(query.clone())).await?;
        query.last_event_id = page.events.last().map(|e| e.id);
        events.extend(page.events);
        if !page.more_follows || query.last_event_id.is_none() {
            break;
        }
    }
    Ok(events)
}

/// `rivulet request`: calls a connected client's request handler through the gateway and prints
/// its answer (text as it is, other bytes in hex) and the answer's flags on stderr.
pub async fn request(args: RequestArgs) -> Result<(), String> {
    let payload = match args.payload.as_deref() {
        None => Vec::new(),
        Some(text) => match text.strip_prefix('@') {
            Some(file) => std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?,
            None => text.as_bytes().to_vec(),
        },
    };
    let forward = Forward { client: args.client.clone(), rq_type: args.rq_type, flags: args.flags, payload };
    let encoded = forward::encode(&forward).map_err(|e| format!("cannot encode the request: {e}"))?;
    let client = client(&args.gateway, &args.login, "rivulet-request").await?;
    let answer = client.request(RQ_FORWARD, 0, encoded).await;
    client.close().await;
    let reply = answer.map_err(|e| match e {
        ClientError::Refused(reason) => format!("request {} to {:?} failed: {reason}", args.rq_type, args.client),
        other => format!("request {} to {:?}: {other}", args.rq_type, args.client),
    })?;
    match std::str::from_utf8(&reply.payload) {
        Ok(text) => crate::out!("{text}"),
        Err(_) => crate::out!("{}", reply.payload.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    };
    eprintln!("flags {}", reply.flags);
    Ok(())
}

pub async fn status(args: StatusArgs) -> Result<(), String> {
    if let Some(server) = &args.hat.addr {
        return hat::status(server, &args.login).await;
    }
    let client = client(&args.gateway, &args.login, "rivulet-status").await?;
    let reply = client.request(RQ_STATUS, 0, Vec::new()).await.map_err(|e| format!("status: {e}"))?;
    crate::out!("{}", String::from_utf8_lossy(&reply.payload));
    client.close().await;
    Ok(())
}

/// `rivulet credential`: a new client. The token goes to stderr, once; the config entry (which
/// holds only a salted hash of it) to stdout, so `rivulet credential NAME >> gateway.toml` adds
/// the client while the token shows on the terminal only.
pub fn credential(args: CredentialArgs) -> Result<(), String> {
    if args.name.is_empty() {
        return Err("a client needs a name: rivulet credential NAME".into());
    }
    let patterns = |flag: &str, list: &[String], none: bool| -> Result<Option<Vec<String>>, String> {
        for pattern in list {
            EventPath::parse_pattern(pattern).map_err(|e| format!("{flag} {pattern:?}: {e}"))?;
        }
        Ok(match (none, list.is_empty()) {
            (true, _) => Some(Vec::new()),
            (false, true) => None,
            (false, false) => Some(list.to_vec()),
        })
    };
    let register = patterns("--register", &args.register, args.no_register)?;
    let subscribe = patterns("--subscribe", &args.subscribe, args.no_subscribe)?;
    let (token, credential) = Credential::generate()?;
    let token = to_hex(&token);
    eprintln!(
        "Token for client {:?}, shown only now. Keep it secret: whoever has it logs in as {:?}.",
        args.name, args.name
    );
    eprintln!("  {token}");
    eprintln!(
        "The client uses it with --name {} --token TOKEN, or with {TOKEN_ENV}=TOKEN in its environment.",
        args.name
    );
    let mut entry = client_entry(&args.name, &credential, register.as_deref(), subscribe.as_deref());
    if args.federate {
        entry.push_str("federate = true\n");
    }
    if let Some(files) = &args.files {
        entry.push_str(&format!("files = \"{files}\"\n"));
    }
    print!("{entry}");
    Ok(())
}

/// The `[[clients]]` TOML entry for a credential.
pub fn client_entry(
    name: &str,
    credential: &Credential,
    register: Option<&[String]>,
    subscribe: Option<&[String]>,
) -> String {
    let mut entry = format!(
        "# client {name:?}, made by `rivulet credential`: add it to the gateway's config file\n\
         [[clients]]\nname = {}\nsalt = \"{}\"\nstored_key = \"{}\"\n",
        toml_string(name),
        to_hex(&credential.salt),
        to_hex(&credential.stored_key),
    );
    for (key, list) in [("register", register), ("subscribe", subscribe)] {
        if let Some(list) = list {
            let items: Vec<String> = list.iter().map(|p| toml_string(p)).collect();
            entry.push_str(&format!("{key} = [{}]\n", items.join(", ")));
        }
    }
    entry
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn timestamp_json(t: &Timestamp) -> serde_json::Value {
    // Seconds with microseconds, as a number: what `jq` and people read best.
    serde_json::Value::from(t.s as f64 + f64::from(t.us) / 1e6)
}

/// One event as a JSON object: id, type (segments), timestamps (seconds), payload. A JSON payload
/// is embedded as JSON (or as a string if a device sent text that is not JSON); a binary one as
/// `{"kind": ..., "hex": ...}`.
pub fn event_json(event: &Event) -> String {
    let payload = match &event.payload {
        None => serde_json::Value::Null,
        Some(Payload::Json(text)) => {
            serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.clone()))
        }
        Some(Payload::Binary { kind, data }) => {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            serde_json::json!({ "kind": kind, "hex": hex })
        }
    };
    serde_json::json!({
        "id": [event.id.server, event.id.session, event.id.instance],
        "type": event.event_type.segments().collect::<Vec<_>>(),
        "timestamp": timestamp_json(&event.timestamp),
        "source_timestamp": event.source_timestamp.as_ref().map(timestamp_json),
        "payload": payload,
    })
    .to_string()
}
