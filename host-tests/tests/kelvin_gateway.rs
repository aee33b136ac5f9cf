//! Real Kelvin apps (kelvin-python-sdk 0.5.0's `KelvinApp`, `host-tests/peers/
//! kelvin_app_peer.py`) against the gateway's Kelvin listener, in process: the runtime manifest
//! gets an app past `connect()`, a device's data reaches it as asset inputs and every other kind
//! of message (as the SDK wrote it) unchanged, what it writes reaches native subscribers (and
//! never comes back to it), it reconnects; and over a raw socket,
//! what the SDK cannot send: an invalid line (skipped and counted) and a line over the limit
//! (that connection closed, the others going on).

use std::time::Duration;

use rivulet_core::kelvin::message::Message;
use rivulet_gateway::access::{Credential, Principal, to_hex};
use rivulet_gateway::config::{ClientEntry, KelvinAsset, KelvinDatastream, KelvinSettings, NativeSettings, Settings};
use rivulet_gateway::frontend::kelvin::convert;
use rivulet_gateway::gateway::Gateway;
use rivulet_host_tests::peers::PeerProcess;
use rivulet_tokio::kelvin::defaults;
use rivulet_tokio::model::{Event, EventPath, Payload, Query, RegisterEvent};
use rivulet_tokio::{ClientOptions, Events, connect};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const PATIENCE: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("{what}: nothing in {PATIENCE:?}"))
}

async fn gateway(dir: &std::path::Path, max_line: usize) -> Gateway {
    gateway_with(dir, max_line, Vec::new(), vec!["kelvin/*".into()]).await
}

async fn gateway_with(
    dir: &std::path::Path,
    max_line: usize,
    clients: Vec<ClientEntry>,
    subscribe: Vec<String>,
) -> Gateway {
    Gateway::start(&settings(dir, max_line, clients, subscribe)).await.expect("the gateway starts")
}

fn settings(dir: &std::path::Path, max_line: usize, clients: Vec<ClientEntry>, subscribe: Vec<String>) -> Settings {
    let kelvin = KelvinSettings {
        listen: "127.0.0.1:0".parse().ok(),
        max_line,
        client: "apps".into(),
        subscribe,
        configuration: json!({ "threshold": 3, "mode": "eco" }),
        assets: vec![KelvinAsset { name: "pump".into(), inputs: vec!["temp".into()], outputs: vec!["speed".into()] }],
        datastreams: vec![
            KelvinDatastream { name: "temp".into(), primitive: "number".into(), unit: Some("degC".into()) },
            KelvinDatastream { name: "speed".into(), primitive: "number".into(), unit: None },
        ],
    };
    Settings {
        native: NativeSettings { listen: "127.0.0.1:0".parse().unwrap(), ..NativeSettings::default() },
        kelvin,
        data: dir.to_path_buf(),
        clients,
        ..Settings::default()
    }
}

fn kelvin_stats(gateway: &Gateway) -> rivulet_gateway::frontend::FrontendStats {
    let frontends = gateway.broker().frontends();
    frontends.iter().find(|f| f.name() == "kelvin").expect("the Kelvin front-end").stats()
}

fn spawn_app(gateway: &Gateway, scenario: &str, inputs: usize) -> tokio::task::JoinHandle<Value> {
    let port = gateway.kelvin_addr().expect("a Kelvin listener").port().to_string();
    let (scenario, inputs) = (scenario.to_string(), inputs.to_string());
    let vectors = concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tests/data/kelvin_vectors.txt");
    tokio::task::spawn_blocking(move || {
        let args = [scenario.as_str(), &port, &inputs, vectors];
        let out = PeerProcess::spawn("kelvin_app_peer.py", &args).wait_success(PATIENCE);
        let last = out.stdout.lines().last().unwrap_or_else(|| panic!("{scenario} printed nothing"));
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{scenario}: {e}: {last}"))
    })
}

fn envelope(event: &Event) -> Value {
    match &event.payload {
        Some(Payload::Json(text)) => serde_json::from_str(text).unwrap(),
        other => panic!("not JSON: {other:?}"),
    }
}

async fn next(events: &mut Events) -> Event {
    within("a native subscriber's event", events.next()).await.expect("events go on")
}

/// One message of each type the SDK's golden vectors hold (as the SDK wrote them), but the
/// runtime manifest, which only the platform sends.
fn sdk_messages() -> Vec<Message> {
    let mut seen = std::collections::BTreeSet::new();
    include_str!("../../core/tests/data/kelvin_vectors.txt")
        .lines()
        .filter_map(|line| line.strip_prefix("out "))
        .filter(|line| *line != "invalid")
        .map(|line| Message::parse(line.as_bytes(), defaults()).expect("the SDK's own line"))
        .filter(|m| m.msg_type.name != "runtime_manifest" && seen.insert(m.msg_type.to_string()))
        .collect()
}

fn temp(value: f64) -> RegisterEvent {
    RegisterEvent::new(EventPath::new(["kelvin", "ad", "pump", "temp"]), Some(Payload::Json(value.to_string())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kelvin_app_gets_its_manifest_and_inputs_and_its_outputs_reach_everyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path(), 4 << 20).await;
    let mut options = ClientOptions::new("device");
    options.subscriptions = vec![EventPath::new(["kelvin", "*"])];
    let (device, mut events) = within("connect", connect(gateway.local_addr(), options)).await.unwrap();

    let app = spawn_app(&gateway, "app", 3 + sdk_messages().len());
    // The app's six messages and one of each type of the SDK's vectors, in the order it wrote
    // them, each an event under kelvin/.
    let kinds = sdk_messages();
    let mut outputs = Vec::new();
    while outputs.len() < 6 + kinds.len() {
        outputs.push(next(&mut events).await);
    }
    for (event, message) in outputs[6..].iter().zip(&kinds) {
        let expected = convert::register_event(message);
        assert_eq!(
            (&event.event_type, &event.payload),
            (&expected.event_type, &expected.payload),
            "{:?}",
            message.msg_type
        );
    }
    outputs.truncate(6);
    let types: Vec<String> = outputs.iter().map(|e| e.event_type.to_string()).collect();
    assert_eq!(
        types,
        [
            "kelvin/ad/pump/speed",
            "kelvin/ad/pump/mode",
            "kelvin/ad/pump/alarm",
            "kelvin/ad/pump/valve",
            "kelvin/asset/pump",
            "kelvin/ad/pump/raw"
        ]
    );
    let written: Vec<Value> = outputs.iter().map(|e| envelope(e)["type"].clone()).collect();
    assert_eq!(
        written,
        ["data;pt=number", "data;pt=string", "data;pt=boolean", "control", "recommendation", "data;icd=acme.reading"]
    );
    assert_eq!(envelope(&outputs[0])["payload"], 1500);
    assert_eq!(envelope(&outputs[1])["payload"], "eco \"quiet\"");
    assert_eq!(envelope(&outputs[3])["payload"]["payload"], 42);
    assert_eq!(envelope(&outputs[5])["payload"], json!({ "b": 1, "a": [1, 2.5] }));
    assert!(outputs.iter().all(|e| e.source_timestamp.is_some()), "the message's time is the source timestamp");

    // A device's data reaches the app as asset inputs, in order; and every other kind of
    // message (each as the SDK itself wrote it: core's golden vectors) as that message.
    for value in [21.5, 22.5, 23.5] {
        device.register_with_response(vec![temp(value)]).await.expect("registered");
    }
    for message in &kinds {
        device.register_with_response(vec![convert::register_event(message)]).await.expect("registered");
    }
    let seen = within("the app", app).await.expect("the app ran");
    let connected = &seen["connects"][0];
    assert_eq!(connected["configuration"], json!({ "threshold": 3, "mode": "eco" }));
    assert_eq!((connected["inputs"].clone(), connected["outputs"].clone()), (json!(["temp"]), json!(["speed"])));
    assert_eq!(connected["assets"], json!(["pump"]));
    let inputs = seen["inputs"].as_array().unwrap();
    let values: Vec<&Value> = inputs.iter().take(3).map(|i| &i["payload"]).collect();
    assert_eq!(values, [&json!(21.5), &json!(22.5), &json!(23.5)]);
    assert!(inputs.iter().take(3).all(|i| i["type"] == "data;pt=number" && i["resource"] == "krn:ad:pump/temp"));
    let messages = seen["messages"].as_array().unwrap();
    let resources: Vec<&Value> = messages.iter().map(|m| &m["resource"]).collect();
    assert!(!resources.contains(&&json!("krn:ad:pump/speed")), "its own messages came back: {resources:?}");
    let expected: Vec<Value> = kinds
        .iter()
        .map(|m| {
            let line: Value = serde_json::from_str(&m.to_line().unwrap()).unwrap();
            json!({ "type": line["type"], "resource": line.get("resource"), "id": line["id"], "payload": line.get("payload") })
        })
        .collect();
    assert_eq!(&messages[3..], expected.as_slice(), "every kind of message, as the SDK wrote it");
    assert_eq!(kelvin_stats(&gateway).bad_input, 0);
    device.close().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kelvin_app_that_reconnects_gets_the_manifest_again_and_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path(), 4 << 20).await;
    let mut options = ClientOptions::new("device");
    options.subscriptions = vec![EventPath::new(["kelvin", "ad", "pump", "speed"])];
    let (device, mut events) = within("connect", connect(gateway.local_addr(), options)).await.unwrap();
    let app = spawn_app(&gateway, "reconnect", 1);
    let back = next(&mut events).await;
    assert_eq!(envelope(&back)["payload"], 2, "the app is back");
    device.register_with_response(vec![temp(30.0)]).await.unwrap();
    let seen = within("the app", app).await.unwrap();
    assert_eq!(seen["connects"], json!([1, 2]), "on_connect fired on each connection");
    assert_eq!(seen["inputs"][0]["payload"], json!(30), "the device wrote `30`");
    device.close().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_is_skipped_and_a_long_one_closes_only_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path(), 2048).await;
    let addr = gateway.kelvin_addr().unwrap();
    let mut options = ClientOptions::new("device");
    options.subscriptions = vec![EventPath::new(["kelvin", "*"])];
    let (device, mut events) = within("connect", connect(gateway.local_addr(), options)).await.unwrap();

    let open = || async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (read, write) = stream.into_split();
        let mut lines = BufReader::new(read);
        let mut first = String::new();
        within("the manifest", lines.read_line(&mut first)).await.unwrap();
        let manifest = Message::parse(first.trim_end().as_bytes(), defaults()).expect("a valid line");
        assert_eq!(manifest.msg_type.to_string(), "runtime_manifest");
        (lines, write)
    };
    let (mut bad_lines, mut bad) = open().await;
    let (_good_lines, mut good) = open().await;

    let line = |value: u32| {
        format!(
            "{{\"type\":\"data;pt=number\",\"resource\":\"krn:ad:pump/flow\",\"id\":\"39a7520a-a351-49c1-92f5-c0b5f4dc48{value:02}\",\"timestamp\":\"2024-01-02T03:04:05Z\",\"payload\":{value}}}\n"
        )
    };
    bad.write_all(b"not json\n{\"type\":\"data;pt=number\",\"payload\":\"a string\"}\n").await.unwrap();
    bad.write_all(line(1).as_bytes()).await.unwrap();
    assert_eq!(envelope(&next(&mut events).await)["payload"], 1, "the line after two bad ones went through");
    assert_eq!(kelvin_stats(&gateway).bad_input, 2);

    bad.write_all(&vec![b' '; 3000]).await.unwrap();
    let mut rest = Vec::new();
    within("the long line's connection closes", bad_lines.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(kelvin_stats(&gateway).bad_input, 3);

    good.write_all(line(2).as_bytes()).await.unwrap();
    assert_eq!(envelope(&next(&mut events).await)["payload"], 2, "the other connection goes on");
    device.close().await;
    gateway.stop().await;
}

/// A raw Kelvin connection: its lines after the manifest, and where to write.
async fn raw_app(gateway: &Gateway) -> (BufReader<tokio::net::tcp::OwnedReadHalf>, tokio::net::tcp::OwnedWriteHalf) {
    let stream = tokio::net::TcpStream::connect(gateway.kelvin_addr().unwrap()).await.unwrap();
    let (read, write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut first = String::new();
    within("the manifest", lines.read_line(&mut first)).await.unwrap();
    assert!(first.starts_with(r#"{"type":"runtime_manifest""#), "{first}");
    (lines, write)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listeners_client_and_its_acl_bound_what_apps_write_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let credential = Credential::from_token(&[7; 32], [1; 16]);
    let client = |name: &str, register: &[&str], subscribe: &[&str]| ClientEntry {
        name: name.into(),
        salt: to_hex(&credential.salt),
        stored_key: to_hex(&credential.stored_key),
        register: Some(register.iter().map(ToString::to_string).collect()),
        subscribe: Some(subscribe.iter().map(ToString::to_string).collect()),
        request: None,
        federate: false,
        files: Default::default(),
    };
    let clients = vec![client("apps", &["kelvin/ad/pump/*"], &["kelvin/ad/pump/*"])];
    let gateway = gateway_with(dir.path(), 4096, clients, vec!["kelvin/ad/pump/*".into()]).await;
    let (_lines, mut app) = raw_app(&gateway).await;
    let line = |resource: &str| {
        format!(
            "{{\"type\":\"data;pt=number\",\"resource\":\"{resource}\",\"id\":\"39a7520a-a351-49c1-92f5-c0b5f4dc4881\",\"timestamp\":\"2024-01-02T03:04:05Z\",\"payload\":1}}\n"
        )
    };
    app.write_all(line("krn:ad:boiler/temp").as_bytes()).await.unwrap();
    app.write_all(line("krn:ad:pump/temp").as_bytes()).await.unwrap();
    // The allowed line is stored once the line refused before it is counted, not before.
    let who = Principal { name: "apps", frontend: "test", peer: None };
    let types = within("the allowed line stored", async {
        loop {
            let latest = gateway.broker().query(&who, Query::Latest { event_types: None }, 1 << 20).await.unwrap();
            if !latest.events.is_empty() {
                return latest.events.iter().map(|e| e.event_type.to_string()).collect::<Vec<_>>();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(kelvin_stats(&gateway).registrations_refused, 1, "the other line, refused and counted");
    assert_eq!(types, ["kelvin/ad/pump/temp"], "only what the ACL allows is stored");
    gateway.stop().await;

    // Subscribing beyond the client's ACL: every app is turned away, and counted.
    let dir = tempfile::tempdir().unwrap();
    let narrow = vec![client("apps", &["kelvin/*"], &["kelvin/ad/pump/*"])];
    let gateway = gateway_with(dir.path(), 4096, narrow, vec!["kelvin/*".into()]).await;
    let mut stream = tokio::net::TcpStream::connect(gateway.kelvin_addr().unwrap()).await.unwrap();
    let mut rest = Vec::new();
    within("the refused app's connection closes", stream.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty(), "no manifest for a refused app");
    assert_eq!(kelvin_stats(&gateway).logins_refused, 1);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_stops_reading_is_cut_off_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    // A small fan-out queue, and one app on a socket with a few KiB of receive buffer that
    // reads nothing (not even its manifest).
    let mut settings = settings(dir.path(), 4096, Vec::new(), vec!["kelvin/*".into()]);
    settings.notify_queue = 64;
    let gateway = Gateway::start(&settings).await.expect("the gateway starts");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let _stalled = socket.connect(gateway.kelvin_addr().unwrap()).await.unwrap();
    let (mut reader, _writer) = raw_app(&gateway).await;
    let (device, _) = within("connect", connect(gateway.local_addr(), ClientOptions::new("device"))).await.unwrap();
    within("both apps in", async {
        while kelvin_stats(&gateway).connections < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    const COUNT: usize = 2000;
    // The other app reads as the events come.
    let reading = tokio::spawn(async move {
        let mut line = String::new();
        for n in 0..COUNT {
            line.clear();
            within("the reading app's next line", reader.read_line(&mut line)).await.unwrap();
            let message = Message::parse(line.trim_end().as_bytes(), defaults()).expect("a message");
            let payload: Value = serde_json::from_str(message.payload.as_deref().unwrap()).unwrap();
            assert_eq!(payload["n"], n, "in order, each once");
        }
    });
    let pad = "x".repeat(4000);
    for batch in 0..COUNT / 15 + 1 {
        let events = (batch * 15..(batch * 15 + 15).min(COUNT))
            .map(|n| {
                let payload = json!({ "n": n, "pad": pad }).to_string();
                RegisterEvent::new(EventPath::new(["kelvin", "ad", "pump", "log"]), Some(Payload::Json(payload)))
            })
            .collect();
        device.register_with_response(events).await.unwrap();
    }
    within("the reading app", reading).await.expect("it read every event in order");
    within("the stalled app cut off", async {
        while kelvin_stats(&gateway).too_slow < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    device.close().await;
    gateway.stop().await;
}
