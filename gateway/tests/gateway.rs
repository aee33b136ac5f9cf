//! The gateway in process, with `rivulet-tokio` clients over loopback: restarts, paging, status,
//! slow subscribers, limits, retention and metrics.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rivulet_core::model::{Order, Status};
use rivulet_gateway::config::{NativeSettings, Settings};
use rivulet_gateway::gateway::Gateway;
use rivulet_tokio::model::{Event, Payload, Query, RegisterEvent, TimeseriesQuery};
use rivulet_tokio::{Client, ClientError, ClientOptions, Events, connect};

/// Turns a hang into a failure; never reached when things work.
const PATIENCE: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("{what}: no result in {PATIENCE:?}"))
}

fn settings(dir: &Path) -> Settings {
    let native = NativeSettings { listen: "127.0.0.1:0".parse().unwrap(), ..NativeSettings::default() };
    Settings { native, data: dir.to_path_buf(), ..Settings::default() }
}

async fn start(settings: &Settings) -> Gateway {
    Gateway::start(settings).await.expect("the gateway starts")
}

async fn client(gateway: &Gateway, options: ClientOptions) -> (Client, Events) {
    within("connect", connect(gateway.local_addr(), options)).await.expect("connect")
}

fn numbered(ty: &str, n: u64) -> RegisterEvent {
    RegisterEvent::new(ty, Some(Payload::Json(n.to_string())))
}

fn number(event: &Event) -> u64 {
    match &event.payload {
        Some(Payload::Json(text)) => text.parse().expect("a number"),
        other => panic!("not a numbered event: {other:?}"),
    }
}

/// Registers `count` events of `ty` numbered from `from`, pipelined, and waits until all are
/// acknowledged (stored durably).
async fn register_numbered(client: &Client, ty: &str, from: u64, count: u64) {
    let mut last = None;
    for n in from..from + count {
        last = Some(within("register", client.register(numbered(ty, n))).await.expect("register"));
    }
    if let Some(last) = last {
        within("registered", client.registered(last)).await.expect("stored");
    }
}

fn everything(order: Order, page: u32) -> Query {
    Query::Timeseries(TimeseriesQuery { order, max_results: Some(page), ..TimeseriesQuery::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_events_sessions_and_counts_instances_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path());
    let gateway = start(&settings).await;
    let (producer, _) = client(&gateway, ClientOptions::new("producer")).await;
    register_numbered(&producer, "sensor/a", 0, 100).await;
    let before = within("query", producer.query_all(everything(Order::Ascending, 1000))).await.unwrap();
    assert_eq!(before.iter().map(number).collect::<Vec<_>>(), (0..100).collect::<Vec<_>>());
    let session = producer.state().session.expect("a session");
    settings.native.listen = gateway.local_addr();
    gateway.stop().await;

    // Same directory and port: the client reconnects by itself and resumes its session.
    let gateway = start(&settings).await;
    register_numbered(&producer, "sensor/a", 100, 10).await;
    assert_eq!(producer.state().session, Some(session), "the stored session resumed");
    let after = within("query", producer.query_all(everything(Order::Ascending, 1000))).await.unwrap();
    assert_eq!(after.iter().map(number).collect::<Vec<_>>(), (0..110).collect::<Vec<_>>(), "each once, in order");
    assert_eq!(after[..100], before[..], "the stored events are unchanged");
    let (old, new) = (before[99].id, after[100].id);
    assert_eq!(new.server, old.server);
    assert!(new.session > old.session, "a new gateway session per start");
    assert!(new.instance > old.instance, "instance numbers continue");
    let latest = within("latest", producer.query(Query::Latest { event_types: None })).await.unwrap();
    assert_eq!(latest.events, vec![after[109].clone()], "the latest table is rebuilt and current");
    producer.close().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_through_ten_thousand_events_returns_each_once_in_both_orders() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(&settings(dir.path())).await;
    let (producer, _) = client(&gateway, ClientOptions::new("producer")).await;
    register_numbered(&producer, "bulk/a", 0, 5000).await;
    register_numbered(&producer, "bulk/b", 5000, 5000).await;
    let ascending = within("ascending", producer.query_all(everything(Order::Ascending, 733))).await.unwrap();
    let descending = within("descending", producer.query_all(everything(Order::Descending, 733))).await.unwrap();
    assert_eq!(ascending.iter().map(number).collect::<Vec<_>>(), (0..10_000).collect::<Vec<_>>());
    assert_eq!(descending.iter().map(number).collect::<Vec<_>>(), (0..10_000).rev().collect::<Vec<_>>());
    // Pages larger than the gateway's page limit still page.
    let unbounded = Query::Timeseries(TimeseriesQuery { order: Order::Ascending, ..TimeseriesQuery::default() });
    let first = within("page", producer.query(unbounded)).await.unwrap();
    assert_eq!(first.events.len(), rivulet_gateway::broker::PAGE_LIMIT as usize);
    assert!(first.more_follows);
    producer.close().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_goes_operational_then_stopping_and_clients_hear_it() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(&settings(dir.path())).await;
    let (watcher, _) = client(&gateway, ClientOptions::new("watcher")).await;
    assert_eq!(watcher.status(), Status::Operational);
    let mut changes = watcher.state_changes();
    let stopping = tokio::spawn(async move {
        changes.wait_for(|state| state.status == Status::Stopping).await.map(|state| state.status)
    });
    gateway.stop().await;
    assert_eq!(within("stopping", stopping).await.unwrap().ok(), Some(Status::Stopping));
    assert_eq!(watcher.close_reason().as_deref(), Some("the server is shutting down"));
    watcher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_cut_off_while_a_normal_one_gets_everything() {
    let dir = tempfile::tempdir().unwrap();
    // Publishers never held back: the queue's limit is what cuts the slow one off (faults::flow
    // tests the waiting).
    let settings = Settings { notify_queue: 64, notify_stall: Duration::ZERO, ..settings(dir.path()) };
    let gateway = start(&settings).await;
    let subscribed = |name: &str| ClientOptions {
        subscriptions: vec!["feed/*".into()],
        window: 4,
        events: 8,
        ..ClientOptions::new(name)
    };
    // The slow one never reads its events.
    let (slow, _slow_events) = client(&gateway, subscribed("slow")).await;
    let (normal, mut normal_events) = client(&gateway, subscribed("normal")).await;
    let (producer, _) = client(&gateway, ClientOptions::new("producer")).await;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 2000 {
            match normal_events.next().await {
                Some(event) => got.push(number(&event)),
                None => break,
            }
        }
        got
    });
    // In batches smaller than the queue: the normal subscriber keeps up with them, the slow one
    // falls behind for good.
    for from in (0..2000).step_by(32) {
        register_numbered(&producer, "feed/x", from, 32.min(2000 - from)).await;
    }
    let got = within("the normal subscriber", reader).await.unwrap();
    assert_eq!(got, (0..2000).collect::<Vec<_>>(), "everything, in order, once");
    assert!(gateway.native().server().stats().too_slow >= 1, "the slow one was cut off and counted");
    let reason = within("the reason", async {
        loop {
            match slow.close_reason() {
                Some(reason) => break reason,
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    assert!(reason.contains("64 notifications behind"), "the slow one is told why: {reason}");
    let status = gateway.broker().report();
    assert!(status["connections"].as_u64().is_some());
    // Front-end by front-end: the native one, its listener, and its clients tagged with it; the
    // federation (no links here) is always there, as any gateway may be linked to.
    let frontends = status["frontends"].as_array().expect("a list of front-ends");
    let names: Vec<&str> = frontends.iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(names, ["native", "federation"]);
    assert_eq!(frontends[0]["listeners"][0]["addr"], gateway.local_addr().to_string());
    assert!(frontends[0]["too_slow"].as_u64() >= Some(1), "the cut-off counted where it happened: {status}");
    let clients = status["clients"].as_array().expect("clients");
    assert!(clients.iter().all(|c| c["frontend"] == "native"), "{status}");
    assert_eq!(status["connections"].as_u64(), Some(clients.len() as u64));
    normal.close().await;
    producer.close().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_on_connections_and_subscriptions_refuse_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(&Settings { max_connections: 2, max_subscriptions: 2, ..settings(dir.path()) }).await;
    let (a, _) = client(&gateway, ClientOptions::new("a")).await;
    let (b, _) = client(&gateway, ClientOptions::new("b")).await;
    let third = within("third", connect(gateway.local_addr(), ClientOptions::new("c"))).await;
    match third {
        Err(ClientError::Refused(reason)) => assert!(reason.contains("full"), "{reason}"),
        other => panic!("a third client got in: {other:?}"),
    }
    assert_eq!(gateway.native().server().stats().over_limit, 1);
    b.close().await;

    a.subscribe("x/*").await.unwrap();
    a.subscribe("y/*").await.unwrap();
    match a.subscribe("z/*").await {
        Err(ClientError::Refused(reason)) => assert!(reason.contains("allows 2"), "{reason}"),
        other => panic!("a third pattern was taken: {other:?}"),
    }
    let listed = gateway.native().server().connections();
    let patterns: Vec<String> = listed[0].subscriptions.iter().map(ToString::to_string).collect();
    assert_eq!(patterns, vec!["x/*", "y/*"]);
    let too_many = ClientOptions { subscriptions: vec!["1".into(), "2".into(), "3".into()], ..ClientOptions::new("d") };
    match within("many", connect(gateway.local_addr(), too_many)).await {
        Err(ClientError::Refused(reason)) => assert!(reason.contains("3 subscription patterns"), "{reason}"),
        other => panic!("{other:?}"),
    }
    a.close().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_and_latest_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let settings =
        Settings { retain_events: Some(10), retain_every: Duration::from_millis(100), ..settings(dir.path()) };
    let gateway = start(&settings).await;
    let (producer, _) = client(&gateway, ClientOptions::new("producer")).await;
    register_numbered(&producer, "old/type", 0, 1).await;
    register_numbered(&producer, "new/type", 1, 49).await;
    let store = gateway.broker().store().clone();
    within("retention", async {
        while store.stats().unwrap().events > 10 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let kept = producer.query_all(everything(Order::Ascending, 100)).await.unwrap();
    assert_eq!(kept.iter().map(number).collect::<Vec<_>>(), (40..50).collect::<Vec<_>>(), "the newest ten");
    let latest = producer.query(Query::Latest { event_types: Some(vec!["old/*".into()]) }).await.unwrap();
    assert_eq!(latest.events.iter().map(number).collect::<Vec<_>>(), vec![0], "latest outlives retention");
    producer.close().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let volatile = vec![rivulet_core::owned::EventPath::parse_pattern("v/*").unwrap()];
    let gateway = start(&Settings { metrics: "127.0.0.1:0".parse().ok(), volatile, ..settings(dir.path()) }).await;
    let (producer, _) = client(&gateway, ClientOptions::new("producer")).await;
    register_numbered(&producer, "m/x", 0, 25).await;
    register_numbered(&producer, "v/x", 25, 5).await;
    let scrape = |path: &'static str| {
        let addr = gateway.metrics_addr().expect("metrics listen");
        async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).await.unwrap();
            text
        }
    };
    let page = within("scrape", scrape("/metrics")).await;
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    let value = |name: &str| -> f64 {
        let line = page.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '));
        line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(value("rivulet_events_stored_total"), 25.0);
    assert_eq!(value("rivulet_events_volatile_total"), 5.0);
    // A front-end's families carry its name.
    assert_eq!(value(r#"rivulet_connections{frontend="native"}"#), 1.0);
    assert!(value("rivulet_commits_total") >= 1.0);
    assert_eq!(value("rivulet_commit_seconds_count"), value("rivulet_commits_total"));
    assert_eq!(value("rivulet_store_events"), 25.0);
    let bytes_in = value(r#"rivulet_bytes_in_total{frontend="native"}"#);
    assert!(bytes_in > 25.0 * 4.0, "at least a 4-byte header per registration");
    assert!(value(r#"rivulet_bytes_out_total{frontend="native"}"#) > 0.0);
    assert!(within("404", scrape("/other")).await.starts_with("HTTP/1.1 404"));
    producer.close().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_subscribers_hear_only_stored_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Arc::new(start(&settings(dir.path())).await);
    let persisted =
        ClientOptions { subscriptions: vec!["p/*".into()], persisted: true, ..ClientOptions::new("durable") };
    let quick = ClientOptions { subscriptions: vec!["p/*".into()], ..ClientOptions::new("quick") };
    let (durable, mut durable_events) = client(&gateway, persisted).await;
    let (fast, mut fast_events) = client(&gateway, quick).await;
    let (producer, _) = client(&gateway, ClientOptions::new("producer")).await;
    register_numbered(&producer, "p/x", 0, 300).await;
    let store = gateway.broker().store().clone();
    for _ in 0..300 {
        let event = within("durable", durable_events.next()).await.expect("an event");
        let stored = store.server_events(event.id.server, Some(1), Some(prev(event.id)), usize::MAX).unwrap();
        assert_eq!(stored.events.first(), Some(&event), "notified only once stored");
        let quick = within("quick", fast_events.next()).await.expect("an event");
        assert_eq!(quick, event, "both see the same events in the same order");
    }
    durable.close().await;
    fast.close().await;
    producer.close().await;
    if let Ok(gateway) = Arc::try_unwrap(gateway) {
        gateway.stop().await;
    }
}

/// The id just before `id` in the same session, to read `id` itself with an "after" query.
fn prev(id: rivulet_core::model::EventId) -> rivulet_core::model::EventId {
    rivulet_core::model::EventId { instance: id.instance - 1, ..id }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_ends_only_its_own_connection_and_is_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(&settings(dir.path())).await;
    let (producer, _) = client(&gateway, ClientOptions::new("producer")).await;
    // A length prefix that never ends, then an oversize frame: both are bad input.
    for garbage in [vec![0xffu8; 16], vec![0x80, 0x80, 0x80, 0x01, 0, 0, 0]] {
        let mut raw = tokio::net::TcpStream::connect(gateway.local_addr()).await.unwrap();
        raw.write_all(&garbage).await.unwrap();
        let mut rest = Vec::new();
        // The gateway closes it (a reset or an end of stream): this returns instead of hanging.
        let _ = within("the gateway closes it", raw.read_to_end(&mut rest)).await;
    }
    within("counted", async {
        while gateway.native().server().stats().bad_input < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    register_numbered(&producer, "still/fine", 0, 10).await;
    assert_eq!(producer.state().links, 1, "the good client never noticed");
    producer.close().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rivulet_request_calls_a_connected_clients_handler() {
    use rivulet_tokio::{PacketReply, PacketRequest, connect_with_handler};
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(&settings(dir.path())).await;
    let handler = |request: PacketRequest| async move {
        match request.rq_type {
            1 => Ok(PacketReply::new(
                request.flags + 1,
                format!("info for {}", String::from_utf8_lossy(&request.payload)),
            )),
            other => Err(format!("no handler for request type {other}")),
        }
    };
    let (device, _) =
        within("device", connect_with_handler(gateway.local_addr(), ClientOptions::new("device-7"), handler))
            .await
            .unwrap();
    let addr = gateway.local_addr().to_string();
    let rivulet = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_rivulet")).args(args).output()
        })
        .await
        .unwrap()
        .unwrap()
    };
    let args = |list: &[&str]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
    let answered = rivulet(args(&["request", "device-7", "1", "me", "--flags", "4", "--gateway", &addr])).await;
    assert!(answered.status.success(), "{}", String::from_utf8_lossy(&answered.stderr));
    assert_eq!(String::from_utf8_lossy(&answered.stdout).trim(), "info for me");
    assert!(String::from_utf8_lossy(&answered.stderr).contains("flags 5"));
    let refused = rivulet(args(&["request", "device-7", "9", "--gateway", &addr])).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no handler for request type 9"));
    let nobody = rivulet(args(&["request", "device-8", "1", "--gateway", &addr])).await;
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no client \"device-8\" is connected"));
    device.close().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rivulet_bench_counts_every_delivery_once() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(&settings(dir.path())).await;
    let addr = gateway.local_addr().to_string();
    let args: Vec<String> = [
        "bench",
        "--gateway",
        &addr,
        "--publishers",
        "2",
        "--subscribers",
        "3",
        "--count",
        "300",
        "--size",
        "100",
        "--json",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rivulet")).args(args).output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(report["published"], 600);
    assert_eq!(report["expected"], 1800, "each of 3 subscribers gets all 600");
    assert_eq!(report["delivered"], 1800);
    assert_eq!((report["lost"].as_u64(), report["duplicated"].as_u64()), (Some(0), Some(0)));
    assert!(report["latency_us_p50"].as_u64().is_some());
    assert!(report["gateway_cpu_us_per_msg"].as_f64().is_some(), "the gateway reports its CPU time");
    gateway.stop().await;
}
