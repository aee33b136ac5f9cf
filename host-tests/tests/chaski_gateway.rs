//! A real Chaski node (chaski-confluent 0.1a5's `ChaskiStreamer` with the JSON codec of
//! docs/CHASKI.md, `host-tests/peers/chaski_node_peer.py`) joins a gateway's Chaski listener: the
//! handshake both ways, a UDP status answer, its pushes as events a native subscriber gets, and
//! events of the topic it subscribed to on its message stream, with uuid and TTL; a file it
//! sends (`push_file`) lands in the gateway's files, each chunk's running hash checked; a node's
//! discovery passes through the gateway and finds the node that shares its subscription.

use std::time::Duration;

use rivulet_gateway::config::{ChaskiSettings, NativeSettings, Settings};
use rivulet_gateway::gateway::Gateway;
use rivulet_host_tests::peers::PeerProcess;
use rivulet_tokio::model::{EventPath, Payload, RegisterEvent};
use rivulet_tokio::{ClientOptions, connect};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("{what}: nothing in {PATIENCE:?}"))
}

/// A gateway with its Chaski listener (TCP and UDP) on loopback.
async fn gateway(dir: &std::path::Path) -> Gateway {
    let settings = Settings {
        native: NativeSettings { listen: "127.0.0.1:0".parse().unwrap(), ..NativeSettings::default() },
        chaski: ChaskiSettings { listen: "127.0.0.1:0".parse().ok(), ..ChaskiSettings::default() },
        data: dir.join("data"),
        ..Settings::default()
    };
    Gateway::start(&settings).await.expect("the gateway starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chaski_node_joins_pushes_events_and_gets_its_topic() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path()).await;
    let (device, _) = within("connect", connect(gateway.local_addr(), ClientOptions::new("device"))).await.unwrap();
    let port = gateway.chaski_addr().unwrap().port().to_string();
    let node = tokio::task::spawn_blocking(move || {
        PeerProcess::spawn("chaski_node_peer.py", &["dial", &port, "3", "2"]).wait_success(PATIENCE)
    });

    let out = the_node_pushes_and_gets_its_topic(&device, node).await;
    assert_eq!(out["edge"]["name"], "rivulet", "the gateway's handshake_back");
    device.close().await;
    gateway.stop().await;
}

/// The scenario of `chaski_node_peer.py` once linked: its pushes are stored as events, then
/// `device` registers events of its topic and another; returns its report.
async fn the_node_pushes_and_gets_its_topic(
    device: &rivulet_tokio::Client,
    node: tokio::task::JoinHandle<rivulet_host_tests::peers::PeerOutput>,
) -> Value {
    // Its pushes, as events: bytes as a binary payload, an object as JSON (bytes tagged).
    // Asked of the store: a gateway that dials the node may hear its pushes before a subscriber
    // is there.
    let query = rivulet_tokio::model::Query::Timeseries(rivulet_tokio::model::TimeseriesQuery {
        event_types: Some(vec!["chaski/*".into()]),
        order: rivulet_tokio::model::Order::Ascending,
        ..Default::default()
    });
    let pushed = within("the pushed messages", async {
        loop {
            let stored = device.query_all(query.clone()).await.expect("answered");
            if stored.len() >= 5 {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let types: Vec<String> = pushed.iter().map(|e| e.event_type.to_string()).collect();
    assert_eq!(types, ["chaski/topic1", "chaski/topic1", "chaski/topic1", "chaski/topic1", "chaski/other"]);
    assert_eq!(pushed[0].payload, Some(Payload::Binary { kind: "bytes".into(), data: b"py-0".to_vec() }));
    assert_eq!(pushed[3].payload, Some(Payload::Json(r#"{"t":21.5,"raw":{"$b64":"AAE="}}"#.into())));
    assert!(pushed[0].source_timestamp.is_some(), "the message's time is the source timestamp");

    // Events of its topic reach it; another topic does not.
    let other = RegisterEvent::new(EventPath::parse("chaski/elsewhere"), Some(Payload::Json("1".into())));
    let json_event = RegisterEvent::new(EventPath::parse("chaski/topic1"), Some(Payload::Json(r#"{"v":2}"#.into())));
    let bytes_event = RegisterEvent::new(
        EventPath::parse("chaski/topic1"),
        Some(Payload::Binary { kind: "raw".into(), data: vec![1, 2, 3] }),
    );
    device.register_with_response(vec![other, json_event, bytes_event]).await.unwrap();
    let out = within("the node", node).await.unwrap();
    let report: Value = serde_json::from_str(out.stdout.lines().last().expect("a report")).unwrap();
    assert_eq!(report["status_command"], "response");
    assert_eq!(report["status"]["serving"], true);
    let got = report["got"].as_array().unwrap();
    assert_eq!(got.len(), 2, "{report}");
    assert_eq!((&got[0]["topic"], &got[0]["data"], &got[0]["ttl"]), (&json!("topic1"), &json!({"v": 2}), &json!(63)));
    assert_eq!(got[1]["data"], json!({"bytes": "AQID"}));
    assert_ne!(got[0]["uuid"], got[1]["uuid"], "each its own uuid");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_dials_a_chaski_node_and_the_same_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut listening = PeerProcess::spawn("chaski_node_peer.py", &["listen", "3", "2"]);
    let port = listening.read_listening_port();
    let settings = Settings {
        native: NativeSettings { listen: "127.0.0.1:0".parse().unwrap(), ..NativeSettings::default() },
        chaski: ChaskiSettings { peers: vec![format!("127.0.0.1:{port}")], ..ChaskiSettings::default() },
        data: dir.path().join("data"),
        ..Settings::default()
    };
    let gateway = Gateway::start(&settings).await.expect("the gateway starts");
    let (device, _) = within("connect", connect(gateway.local_addr(), ClientOptions::new("device"))).await.unwrap();
    let node = tokio::task::spawn_blocking(move || listening.wait_success(PATIENCE));
    let out = the_node_pushes_and_gets_its_topic(&device, node).await;
    assert_eq!(out["edge"]["name"], "rivulet");
    device.close().await;
    gateway.stop().await;
}

/// A node of our own, on a raw socket with `rivulet_core::chaski`.
struct RawNode {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawNode {
    async fn join(gateway: &Gateway, topics: &[&str]) -> RawNode {
        let stream = tokio::net::TcpStream::connect(gateway.chaski_addr().unwrap()).await.unwrap();
        let mut node = RawNode { stream, buf: Vec::new() };
        node.send("All", "handshake", json!({"handshake_id": "h-1", "response": true, "back_delay": 0}), None, 64)
            .await;
        // The gateway's handshake and handshake_back; then ours.
        let (first, second) = (node.next().await, node.next().await);
        assert_eq!((first.command.as_str(), second.command.as_str()), ("handshake", "handshake_back"));
        let topics = Value::Array(topics.iter().map(|t| json!(t)).collect());
        node.send("All", "handshake_back", json!({"name": "raw", "subscriptions": {"$set": topics}}), None, 64).await;
        node
    }

    async fn send(&mut self, topic: &str, command: &str, data: Value, uuid: Option<&str>, ttl: i64) {
        use rivulet_core::chaski::message::{Message, Value as ChaskiValue, topic_json};
        let message = Message {
            command: command.into(),
            topic: topic.into(),
            data: ChaskiValue::parse(data.to_string().as_bytes()).unwrap(),
            timestamp: ChaskiValue::DateTime("2026-12-07T16:20:01.123456".into()),
            ttl,
            uuid: uuid.map(String::from),
        };
        self.raw(topic_json(topic).as_bytes(), message.to_json().as_bytes()).await;
    }

    async fn raw(&mut self, topic: &[u8], data: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let repr = rivulet_core::chaski::frame::FrameRepr { topic, data };
        let mut frame = vec![0u8; repr.buffer_len().unwrap()];
        repr.emit(&mut frame).unwrap();
        self.stream.write_all(&frame).await.unwrap();
    }

    async fn next(&mut self) -> rivulet_core::chaski::message::Message {
        use tokio::io::AsyncReadExt;
        loop {
            if let Ok(frame) = rivulet_core::chaski::frame::Frame::new_checked(&self.buf[..]) {
                let len = frame.total_len().unwrap();
                let message = rivulet_core::chaski::message::Message::parse(frame.data()).unwrap();
                self.buf.drain(..len);
                return message;
            }
            let mut chunk = [0u8; 4096];
            let n = within("a frame", self.stream.read(&mut chunk)).await.unwrap();
            assert!(n > 0, "the gateway closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_taken_once_and_passed_on_with_its_uuid_and_one_hop_less() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path()).await;
    let options = ClientOptions { subscriptions: vec!["chaski/*".into()], ..ClientOptions::new("watcher") };
    let (watcher, mut events) = within("connect", connect(gateway.local_addr(), options)).await.unwrap();
    let mut pusher = RawNode::join(&gateway, &["topic1"]).await;
    let mut listener = RawNode::join(&gateway, &["topic1"]).await;
    // A frame that is not the codec's is skipped and counted; the connection goes on.
    pusher.raw(b"\"topic1\"", b"not json").await;
    // The same message twice (it came around a loop of the Chaski network): taken once.
    for _ in 0..2 {
        pusher.send("topic1", "ChaskiMessage", json!("hello"), Some("u-1"), 10).await;
    }
    pusher.send("topic1", "ChaskiMessage", json!("after"), Some("u-2"), 1).await;
    let first = within("an event", events.next()).await.unwrap();
    let second = within("an event", events.next()).await.unwrap();
    assert_eq!(
        (first.payload, second.payload),
        (Some(Payload::Json("\"hello\"".into())), Some(Payload::Json("\"after\"".into())))
    );
    // The other node gets the first with its uuid and one hop less; the second had none left.
    let passed = listener.next().await;
    assert_eq!((passed.uuid.as_deref(), passed.ttl), (Some("u-1"), 9));
    let nothing = tokio::time::timeout(Duration::from_millis(300), listener.next()).await;
    assert!(nothing.is_err(), "a message with a TTL of 1 goes no further: {nothing:?}");
    let nothing = tokio::time::timeout(Duration::from_millis(300), pusher.next()).await;
    assert!(nothing.is_err(), "nothing back to the node that pushed it: {nothing:?}");
    let stats = gateway.broker().frontends().into_iter().find(|f| f.name() == "chaski").unwrap().stats();
    assert_eq!((stats.bad_input, stats.connections), (1, 2));
    watcher.close().await;
    gateway.stop().await;
}

/// The gateway's files as `rivulet files` lists them: (name, size, SHA-256 hex).
fn listed(dir: &std::path::Path) -> Vec<(String, u64, String)> {
    let dir = dir.join("data/files");
    let mut files: Vec<(String, u64, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            let name = e.file_name().into_string().unwrap();
            let sha = std::fs::read_to_string(dir.join(".sha256").join(&name)).unwrap_or_default();
            (name, e.metadata().unwrap().len(), sha.split_whitespace().next().unwrap_or("").to_string())
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_a_chaski_node_sends_lands_in_the_gateways_files_hash_checked() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path()).await;
    let bytes: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
    let path = dir.path().join("report.bin");
    std::fs::write(&path, &bytes).unwrap();
    let port = gateway.chaski_addr().unwrap().port().to_string();
    let path_arg = path.display().to_string();
    let node = tokio::task::spawn_blocking(move || {
        PeerProcess::spawn("chaski_node_peer.py", &["file", &port, &path_arg]).wait_success(PATIENCE)
    });
    let out: Value = serde_json::from_str(node.await.unwrap().stdout.lines().last().unwrap()).unwrap();
    assert!(out["chunk_size"].as_u64().unwrap() < 50_000, "sent in several chunks: {out}");
    let sha = out["sha256"].as_str().unwrap().to_string();
    within("the file in the gateway's files", async {
        while listed(dir.path()) != [("report.bin".to_string(), 50_000, sha.clone())] {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(std::fs::read(dir.path().join("data/files/report.bin")).unwrap() == bytes);

    // A chunk whose running hash is not its bytes' is caught at once: the file is dropped,
    // never listed, and counted; its last chunk is not a file of its own (bad input).
    let mut raw = RawNode::join(&gateway, &["topic1"]).await;
    let chunk = |bytes: &[u8], size: usize, hash: &str| {
        json!({"filename": "bad.bin", "chunk": {"$b64": base64_encode(bytes)}, "hash": hash,
               "data": {}, "chunk_size": 4, "size": size})
    };
    let good = |upto: &[u8]| -> String {
        ring::digest::digest(&ring::digest::SHA256, upto).as_ref().iter().map(|b| format!("{b:02x}")).collect()
    };
    raw.send("topic1", "ChaskiFile", chunk(b"abcd", 4, &good(b"abcd")), Some("f-1"), 64).await;
    raw.send("topic1", "ChaskiFile", chunk(b"efgh", 8, &good(b"abcdXXXX")), Some("f-2"), 64).await;
    raw.send("topic1", "ChaskiFile", chunk(b"", 8, &good(b"abcdefgh")), Some("f-3"), 64).await;
    let files = within("the mismatch counted", async {
        loop {
            let report = gateway.files().report();
            if report["mismatched"] == 1 {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(files["completed"], 1, "{files}");
    let bad_input =
        || gateway.broker().frontends().into_iter().find(|f| f.name() == "chaski").unwrap().stats().bad_input;
    within("the orphan end counted", async {
        while bad_input() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(gateway.files().report()["mismatched"], 1, "the end of a dropped stream is no second mismatch");
    assert_eq!(listed(dir.path()).len(), 1, "bad.bin is not listed");
    let partials: Vec<String> = std::fs::read_dir(dir.path().join("data/files/.partial"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(partials.iter().all(|p| !p.starts_with("bad.bin")), "nothing half-written stays: {partials:?}");
    gateway.stop().await;
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_discovery_passes_through_the_gateway_and_finds_the_node_that_shares_its_topic() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path()).await;
    let port = gateway.chaski_addr().unwrap().port().to_string();
    let (b_port, a_port) = (port.clone(), port);
    // Node B joins first and is ready to answer a search (its own found nobody).
    let b = tokio::task::spawn_blocking(move || {
        let mut b = PeerProcess::spawn("chaski_node_peer.py", &["discover", &b_port, "py-b", "wait"]);
        b.read_listening_port();
        b
    })
    .await
    .unwrap();
    // Node A searches through the gateway, its only link: B links to it directly.
    let a = tokio::task::spawn_blocking(move || {
        PeerProcess::spawn("chaski_node_peer.py", &["discover", &a_port, "py-a", "seek"]).wait_success(PATIENCE)
    });
    let a: Value = serde_json::from_str(a.await.unwrap().stdout.lines().last().unwrap()).unwrap();
    let b = tokio::task::spawn_blocking(move || b.wait_success(PATIENCE)).await.unwrap();
    let b: Value = serde_json::from_str(b.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(a["edges"], json!(["py-b", "rivulet"]), "A found B: {a}");
    assert_eq!(b["edges"], json!(["py-a", "rivulet"]), "B linked to A: {b}");
    gateway.stop().await;
}
