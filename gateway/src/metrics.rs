//! `--metrics ADDR`: the gateway's counters in Prometheus' text format at `GET /metrics`. A few
//! lines of HTTP/1.1 by hand, one request per connection: a scraper needs no more, and the gateway
//! no web framework.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::broker::{Broker, COMMIT_BUCKETS};
use crate::frontend::{FrontendStats, LinkReport};

// Parsing the request head is pure and dependency-light, in its own file, which the fuzz crate
// compiles too (target `metrics_http`).
pub mod http;
use http::{HeadError, Request};

/// A client that sends its request slower than this is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves scrapes until the task is aborted.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, broker.clone()));
            }
            Err(e) => {
                tracing::warn!("metrics accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, broker: Arc<Broker>) {
    let Ok(Some(page)) = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await else { return };
    let response = match page {
        Page::Metrics => {
            let body = render(&broker).await;
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        Page::NotFound => {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 22\r\nConnection: close\r\n\r\nonly /metrics is here\n"
                .to_string()
        }
        Page::NotAllowed => {
            "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_string()
        }
        Page::BadRequest(why) => {
            let body = format!("{why}\n");
            format!("HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
        }
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The answer to a request.
enum Page {
    /// `GET /metrics`.
    Metrics,
    /// `GET` of anything else.
    NotFound,
    /// Another method.
    NotAllowed,
    /// Not an HTTP request head: too long, not UTF-8, no method and target.
    BadRequest(HeadError),
}

/// Reads the request head until [`http::parse_head`] takes or refuses it; `None` (no answer) if
/// the client stops first.
async fn read_request(stream: &mut TcpStream) -> Option<Page> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(chunk.get(..n)?);
        return match http::parse_head(&buf) {
            Ok(None) => continue,
            Ok(Some(Request { method: "GET", target: "/metrics" })) => Some(Page::Metrics),
            Ok(Some(Request { method: "GET", .. })) => Some(Page::NotFound),
            Ok(Some(_)) => Some(Page::NotAllowed),
            Err(why) => Some(Page::BadRequest(why)),
        };
    }
}

/// One metric family: help, type, and its samples (each with its labels, `""` for none).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// A family of one unlabelled sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    family(out, name, kind, help, &[(String::new(), value)]);
}

/// The links to other gateways: each one's latency, labelled with the peer's server id.
fn links(out: &mut String, broker: &Broker) {
    let links: Vec<_> = broker.frontends().iter().flat_map(|f| f.links()).collect();
    type Pick = fn(&LinkReport) -> std::time::Duration;
    let rtt = |pick: Pick| -> Vec<(String, f64)> {
        links.iter().map(|l| (format!("{{peer=\"{}\"}}", l.peer), pick(l).as_secs_f64())).collect()
    };
    let families: [(&str, Pick); 4] = [
        ("rivulet_link_rtt_last_seconds", |l| l.rtt_last),
        ("rivulet_link_rtt_min_seconds", |l| l.rtt_min),
        ("rivulet_link_rtt_avg_seconds", |l| l.rtt_mean),
        ("rivulet_link_rtt_max_seconds", |l| l.rtt_max),
    ];
    for (name, pick) in families {
        family(out, name, "gauge", "Round trip of a federation link's pings.", &rtt(pick));
    }
    let counted = |pick: fn(&LinkReport) -> u64| -> Vec<(String, f64)> {
        links.iter().map(|l| (format!("{{peer=\"{}\"}}", l.peer), pick(l) as f64)).collect()
    };
    family(
        out,
        "rivulet_link_events_sent_total",
        "counter",
        "Events sent over a federation link.",
        &counted(|l| l.sent),
    );
    family(
        out,
        "rivulet_link_events_received_total",
        "counter",
        "Events taken from a federation link.",
        &counted(|l| l.received),
    );
    let c = &broker.counters;
    single(
        out,
        "rivulet_events_imported_total",
        "counter",
        "Events imported from peer gateways.",
        c.imported.load(Relaxed) as f64,
    );
    let dups = c.import_duplicates.load(Relaxed) as f64;
    single(
        out,
        "rivulet_import_duplicates_total",
        "counter",
        "Copies of events from peers dropped as already here.",
        dups,
    );
}

/// Every metric, as Prometheus reads them: the front-ends' with a `frontend` label each, then
/// the broker's and the store's.
pub async fn render(broker: &Broker) -> String {
    let mut out = String::new();
    let frontends: Vec<(String, FrontendStats)> =
        broker.frontends().iter().map(|f| (format!("{{frontend=\"{}\"}}", f.name()), f.stats())).collect();
    type Field = fn(&FrontendStats) -> u64;
    let per_frontend: [(&str, &str, &str, Field); 14] = [
        ("rivulet_connections", "gauge", "Clients with an accepted link.", |s| s.connections),
        ("rivulet_connections_accepted_total", "counter", "Connections accepted.", |s| s.accepted),
        ("rivulet_connections_refused_total", "counter", "Connections refused over the connection limit.", |s| {
            s.over_limit
        }),
        (
            "rivulet_clients_refused_total",
            "counter",
            "Clients refused at login (credentials, the init's subscriptions, an over-long name).",
            |s| s.logins_refused,
        ),
        ("rivulet_events_notified_total", "counter", "Notifications written to clients.", |s| s.notified),
        ("rivulet_registrations_refused_total", "counter", "Registrations refused (not allowed).", |s| {
            s.registrations_refused
        }),
        ("rivulet_slow_clients_total", "counter", "Clients disconnected for falling behind their queue.", |s| {
            s.too_slow
        }),
        ("rivulet_bad_input_total", "counter", "Links ended by malformed input or a protocol error.", |s| s.bad_input),
        (
            "rivulet_keepalive_capped_total",
            "counter",
            "Clients that asked for a longer keepalive than the gateway's longest (max_keepalive).",
            |s| s.keepalive_capped,
        ),
        (
            "rivulet_accept_failures_total",
            "counter",
            "Times a listener's accept failed (out of file descriptors, say); it waits longer while they go on.",
            |s| s.accept_failed,
        ),
        ("rivulet_events_too_large_total", "counter", "Events too large to pass on (over a federation link).", |s| {
            s.too_large
        }),
        (
            "rivulet_handshakes_failed_total",
            "counter",
            "Connections dropped in their TLS handshake or before logging in.",
            |s| s.handshake_failed,
        ),
        ("rivulet_bytes_in_total", "counter", "Protocol bytes received from clients.", |s| s.bytes_in),
        ("rivulet_bytes_out_total", "counter", "Protocol bytes sent to clients.", |s| s.bytes_out),
    ];
    for (name, kind, help, field) in per_frontend {
        let samples: Vec<(String, f64)> = frontends.iter().map(|(l, s)| (l.clone(), field(s) as f64)).collect();
        family(&mut out, name, kind, help, &samples);
    }
    links(&mut out, broker);
    let fanout = broker.fanout().stats();
    single(
        &mut out,
        "rivulet_subscribers",
        "gauge",
        "Subscribers of the broker's fan-out, of every front-end.",
        fanout.subscribers as f64,
    );
    single(
        &mut out,
        "rivulet_subscribers_cut_off_total",
        "counter",
        "Subscribers the fan-out cut off (a queue full in events or bytes, or the most held past the total).",
        fanout.cut_off as f64,
    );
    let queries = &broker.query_counters;
    single(
        &mut out,
        "rivulet_queries_cancelled_total",
        "counter",
        "Store queries stopped because nobody waited for the answer (the client left).",
        queries.cancelled.load(Relaxed) as f64,
    );
    single(
        &mut out,
        "rivulet_queries_scan_spent_total",
        "counter",
        "Store queries that looked at --query-scan stored events: a partial page, or refused with nothing found.",
        queries.scan_spent.load(Relaxed) as f64,
    );
    single(
        &mut out,
        "rivulet_store_failed",
        "gauge",
        "1 once a group commit failed: no more events are taken until a restart (the log and `rivulet status` say why).",
        if broker.store_failed().is_some() { 1.0 } else { 0.0 },
    );
    single(
        &mut out,
        "rivulet_notify_queued_bytes",
        "gauge",
        "Bytes of notifications queued for all subscribers (an event once per queue).",
        fanout.queued_bytes as f64,
    );
    let c = &broker.counters;
    single(
        &mut out,
        "rivulet_events_stored_total",
        "counter",
        "Events stored durably.",
        c.events_in.load(Relaxed) as f64,
    );
    single(
        &mut out,
        "rivulet_events_volatile_total",
        "counter",
        "Volatile events routed (never stored).",
        c.events_volatile.load(Relaxed) as f64,
    );
    single(&mut out, "rivulet_commits_total", "counter", "Group commits written.", c.commits.load(Relaxed) as f64);
    let failures = c.commit_failures.load(Relaxed) as f64;
    single(&mut out, "rivulet_commit_failures_total", "counter", "Group commits that failed.", failures);
    let (buckets, sum, count) = c.commit_latency.snapshot();
    let name = "rivulet_commit_seconds";
    let _ = writeln!(out, "# HELP {name} Time to write and fsync one group commit.\n# TYPE {name} histogram");
    for (bound, n) in COMMIT_BUCKETS.iter().zip(&buckets) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}");
    let store = broker.store().clone();
    if let Ok(Ok(stats)) = tokio::task::spawn_blocking(move || store.stats()).await {
        single(&mut out, "rivulet_store_events", "gauge", "Events in the store.", stats.events as f64);
        single(&mut out, "rivulet_store_bytes", "gauge", "Size of the store file.", stats.bytes as f64);
    }
    out
}
