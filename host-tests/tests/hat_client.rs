//! Rivulet's hat client (`rivulet_tokio::hat`) and `rivulet pub/sub/query/status --hat` against
//! real hat servers: hat's own Event Server (`hat-event-server` of hat-event 0.9.44, LMDB
//! backend, started with a config written here), a server on the library's
//! `hat.event.eventer.listen` (`host-tests/peers/hat_eventer_server.py`, which refuses, fails and
//! pings on cue), and the gateway's hat front-end with its logins and ACLs.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use rivulet_core::model::Timestamp;
use rivulet_gateway::access::{Credential, WRONG_CREDENTIAL, to_hex};
use rivulet_gateway::config::{ClientEntry, HatSettings, NativeSettings, Settings};
use rivulet_gateway::gateway::Gateway;
use rivulet_host_tests::peers::{PeerProcess, python};
use rivulet_host_tests::process::{gateway_binary, run_to_end};
use rivulet_tokio::hat::{self, HatClient, HatError, HatEvents, HatOptions};
use rivulet_tokio::model::{Event, EventPath, Order, Payload, Query, RegisterEvent, Status, TimeseriesQuery};
use rivulet_tokio::{ClientOptions, connect};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("{what}: nothing in {PATIENCE:?}"))
}

fn event(path: &[&str], payload: Option<Payload>) -> RegisterEvent {
    RegisterEvent::new(EventPath::new(path), payload)
}

fn json(text: &str) -> Option<Payload> {
    Some(Payload::Json(text.into()))
}

/// `rivulet ARGS` run to its end.
fn rivulet(args: &[&str]) -> Output {
    let mut command = Command::new(gateway_binary());
    command.args(args).env_remove("RIVULET_TOKEN");
    run_to_end(&mut command, PATIENCE)
}

/// `rivulet ARGS`, which must succeed; its stdout as JSON lines.
fn rivulet_ok(args: &[&str]) -> Vec<Value> {
    let out = rivulet(args);
    assert!(out.status.success(), "rivulet {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
}

async fn connect_hat(addr: &str, options: HatOptions) -> (HatClient, HatEvents) {
    within("the hat client connects", hat::connect(addr.to_string(), options)).await.expect("connected")
}

async fn next_events(events: &mut HatEvents, n: usize) -> Vec<Event> {
    let mut got = Vec::new();
    while got.len() < n {
        got.push(within("a notified event", events.next()).await.expect("the events go on"));
    }
    got
}

/// hat's own Event Server on a free loopback port, with its LMDB store in `dir`; killed when
/// dropped, and by `timeout` whatever happens to the test.
struct HatEventServer {
    child: Child,
    addr: String,
}

impl HatEventServer {
    async fn start(dir: &Path) -> HatEventServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = serde_json::json!({
            "type": "event", "name": "rivulet-test", "server_id": 1,
            "backend": {
                "module": "hat.event.backends.lmdb", "db_path": dir.join("event.db"), "identifier": null,
                "flush_period": 0.2, "cleanup_period": 5, "conditions": [],
                "latest": {"subscriptions": [["*"]]},
                "timeseries": [{"order_by": "TIMESTAMP", "subscriptions": [["*"]]}],
            },
            "modules": [],
            "eventer_server": {"host": "127.0.0.1", "port": port},
        });
        let conf_path = dir.join("conf.json");
        std::fs::write(&conf_path, conf.to_string()).unwrap();
        let server = python().with_file_name("hat-event-server");
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new("timeout")
            .arg("300")
            .arg(&server)
            .arg("--conf")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", server.display()));
        let addr = format!("127.0.0.1:{port}");
        within("hat-event-server listens", async {
            while tokio::net::TcpStream::connect(&addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        HatEventServer { child, addr }
    }
}

impl Drop for HatEventServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_and_cli_against_hats_own_event_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = HatEventServer::start(dir.path()).await;
    let addr = server.addr.as_str();

    let subscribe = |persisted: bool, server_id: Option<u64>| {
        let mut options = HatOptions::new(if persisted { "persisted" } else { "live" });
        options.subscriptions = vec![EventPath::new(["t", "*"])];
        options.persisted = persisted;
        options.server_id = server_id;
        options
    };
    let (_live, mut live) = connect_hat(addr, subscribe(false, None)).await;
    let (_persisted, mut persisted) = connect_hat(addr, subscribe(true, None)).await;
    let (other_server, mut other) = connect_hat(addr, subscribe(false, Some(2))).await;
    let (writer, _) = connect_hat(addr, HatOptions::new("writer")).await;
    within("hat's server is operational", writer.status_changes().wait_for(|s| *s == Status::Operational))
        .await
        .expect("status");

    // Registered with a response: hat's ids and timestamps, every payload kind kept.
    let at = Timestamp { s: 1_700_000_000, us: 250_000 };
    let mut with_source = event(&["t", "source"], json(r#"{"on": true}"#));
    with_source.source_timestamp = Some(at);
    let sent = vec![
        event(&["t", "json"], json("[1, 2.5, \"x\"]")),
        event(&["t", "binary"], Some(Payload::Binary { kind: "blob".into(), data: vec![0, 1, 255] })),
        with_source,
        event(&["t"], None),
    ];
    let registered = within("registered", writer.register_with_response(sent.clone())).await.expect("registered");
    assert_eq!(registered.len(), sent.len());
    for (stored, asked) in registered.iter().zip(&sent) {
        assert_eq!((stored.id.server, &stored.event_type), (1, &asked.event_type));
        assert_eq!((stored.source_timestamp, &stored.payload), (asked.source_timestamp, &asked.payload));
    }
    assert_eq!(stored_json(&registered[0]), serde_json::json!([1, 2.5, "x"]), "JSON payloads stay JSON");
    assert!(registered.windows(2).all(|w| w[0].id.instance < w[1].id.instance), "in order");

    // Notified to both kinds of subscriber, in order, each once; nothing to server 2's.
    assert_eq!(next_events(&mut live, 4).await, registered, "notified as registered");
    assert_eq!(next_events(&mut persisted, 4).await, registered, "notified again once flushed");

    // Without a response: written, and notified like any other.
    within("sent", writer.register(vec![event(&["t", "quiet"], json("7"))])).await.expect("sent");
    let quiet = next_events(&mut live, 1).await.remove(0);
    assert_eq!((quiet.event_type.to_string().as_str(), &quiet.payload), ("t/quiet", &json("7")));

    // Paging through 25 more with 4 per page, both orders, each event once.
    let many: Vec<RegisterEvent> = (0..25).map(|i| event(&["t", "many"], json(&i.to_string()))).collect();
    let many = within("registered", writer.register_with_response(many)).await.unwrap();
    next_events(&mut live, 25).await;
    next_events(&mut persisted, 26).await;
    for order in [Order::Ascending, Order::Descending] {
        let query = Query::Timeseries(TimeseriesQuery {
            event_types: Some(vec![EventPath::new(["t", "many"])]),
            order,
            max_results: Some(4),
            ..TimeseriesQuery::default()
        });
        let mut expected = many.clone();
        if order == Order::Descending {
            expected.reverse();
        }
        assert_eq!(within("paged", writer.query_all(query)).await.unwrap(), expected, "{order:?}");
    }
    let latest = Query::Latest { event_types: Some(vec![EventPath::new(["t", "?"])]) };
    let mut newest: Vec<String> =
        within("latest", writer.query(latest)).await.unwrap().events.iter().map(|e| e.event_type.to_string()).collect();
    newest.sort();
    assert_eq!(newest, ["t/binary", "t/json", "t/many", "t/quiet", "t/source"]);

    // The CLI, on the same server.
    let published = rivulet_ok(&["pub", "--hat", addr, "t/cli", r#"{"from":"cli"}"#]);
    assert_eq!(published.len(), 1);
    assert_eq!(
        (published[0]["type"].clone(), published[0]["payload"]["from"].clone()),
        (serde_json::json!(["t", "cli"]), "cli".into())
    );
    let cli_event = next_events(&mut live, 1).await.remove(0);
    assert_eq!(published[0]["id"], serde_json::json!([1, cli_event.id.session, cli_event.id.instance]));
    let queried = rivulet_ok(&["query", "--hat", addr, "timeseries", "t/many", "--max", "6", "--ascending"]);
    let values: Vec<i64> = queried.iter().map(|e| e["payload"].as_i64().unwrap()).collect();
    assert_eq!(values, [0, 1, 2, 3, 4, 5]);
    let status = rivulet_ok(&["status", "--hat", addr]);
    assert_eq!(status[0]["status"], "operational");
    let sub = tokio::task::spawn_blocking({
        let addr = addr.to_string();
        move || rivulet_ok(&["sub", "--hat", &addr, "t/sub/*", "--count", "2"])
    });
    // The subscriber is in once a registration reaches it; keep registering until it has two.
    let mut n = 0;
    while !sub.is_finished() {
        n += 1;
        writer.register_with_response(vec![event(&["t", "sub", &n.to_string()], json("0"))]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(n < 300, "rivulet sub --hat got nothing");
    }
    let got = sub.await.unwrap();
    assert_eq!(got.len(), 2);
    let id = |e: &Value| -> Vec<u64> { e["id"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect() };
    assert!(id(&got[0]) < id(&got[1]), "in id order: {got:?}");

    assert!(other_server.status() == Status::Operational);
    let nothing = tokio::time::timeout(Duration::from_millis(300), other.next()).await;
    assert!(nothing.is_err(), "server 2's subscriber got events of server 1");
}

fn stored_json(event: &Event) -> Value {
    match &event.payload {
        Some(Payload::Json(text)) => serde_json::from_str(text).unwrap(),
        other => panic!("not JSON: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_against_a_server_on_hats_listen() {
    // The server pings after 1 s of silence and gives up 1 s later.
    let mut server = PeerProcess::spawn("hat_eventer_server.py", &["1"]);
    let addr = format!("127.0.0.1:{}", server.read_listening_port());

    let refused = hat::connect(addr.clone(), HatOptions::new("intruder")).await.map(|_| ()).expect_err("refused");
    assert_eq!(refused, HatError::Refused("intruders are not welcome".into()));

    let mut options = HatOptions::new("listener");
    options.subscriptions = vec![EventPath::new(["*"])];
    options.ping_delay = Duration::ZERO; // only the server pings: our pongs keep us in
    let (client, mut events) = connect_hat(&addr, options).await;
    assert_eq!(client.status(), Status::Operational);

    let failure = within("answered", client.register_with_response(vec![event(&["refuse", "me"], json("1"))])).await;
    assert_eq!(failure, Err(HatError::Failure));

    let sent: Vec<RegisterEvent> = (0..10).map(|i| event(&["n", &i.to_string()], json(&i.to_string()))).collect();
    let registered = within("registered", client.register_with_response(sent)).await.unwrap();
    assert_eq!(next_events(&mut events, 10).await, registered, "notified with ack, in order");

    // Idle past several of the server's pings: answered, so the connection stays.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(!client.is_closed(), "the server left us: our pongs did not reach it");
    let query = Query::Timeseries(TimeseriesQuery {
        max_results: Some(3),
        order: Order::Ascending,
        ..TimeseriesQuery::default()
    });
    assert_eq!(within("paged", client.query_all(query)).await.unwrap(), registered);

    let mut changes = client.status_changes();
    within("answered", client.register_with_response(vec![event(&["status", "standby"], None)])).await.unwrap();
    within("status notified", changes.wait_for(|s| *s == Status::Standby)).await.expect("status");
    next_events(&mut events, 1).await;

    within("answered", client.register_with_response(vec![event(&["exit"], None)])).await.unwrap();
    assert_eq!(next_events(&mut events, 1).await[0].event_type, EventPath::new(["exit"]));
    assert_eq!(within("the events end", events.next()).await, None, "the server closed");
    let out = tokio::task::spawn_blocking(move || server.wait_success(PATIENCE)).await.unwrap();
    let acked: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("acked")).collect();
    assert_eq!(acked, ["acked 10", "acked 1", "acked 1"], "every notification acked: {}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_and_cli_against_the_gateways_hat_front_end() {
    const TOKEN: [u8; 32] = [0x3c; 32];
    let dir = tempfile::tempdir().unwrap();
    let credential = Credential::from_token(&TOKEN, [9; 16]);
    let settings = Settings {
        native: NativeSettings { listen: "127.0.0.1:0".parse().unwrap(), ..NativeSettings::default() },
        hat: HatSettings { listen: "127.0.0.1:0".parse().ok(), ..HatSettings::default() },
        data: dir.path().to_path_buf(),
        clients: vec![
            ClientEntry {
                name: "dev".into(),
                salt: to_hex(&credential.salt),
                stored_key: to_hex(&credential.stored_key),
                register: Some(vec!["sensor/*".into()]),
                subscribe: Some(vec!["sensor/*".into()]),
                request: None,
                federate: false,
                files: Default::default(),
            },
            ClientEntry {
                name: "native".into(),
                salt: to_hex(&credential.salt),
                stored_key: to_hex(&credential.stored_key),
                register: None,
                subscribe: None,
                request: None,
                federate: false,
                files: Default::default(),
            },
        ],
        ..Settings::default()
    };
    let gateway = Gateway::start(&settings).await.expect("the gateway starts");
    let addr = gateway.hat_addr().unwrap().to_string();
    let token = to_hex(&TOKEN);

    let mut wrong = HatOptions::new("dev");
    wrong.client_token = Some(to_hex(&[0; 32]));
    let refused = hat::connect(addr.clone(), wrong).await.map(|_| ()).expect_err("a wrong token");
    assert_eq!(refused, HatError::Refused(WRONG_CREDENTIAL.into()));

    let mut options = HatOptions::new("dev");
    options.client_token = Some(token.clone());
    options.subscriptions = vec![EventPath::new(["sensor", "*"])];
    let (client, mut events) = connect_hat(&addr, options).await;
    let mut native_options = ClientOptions::new("native");
    native_options.challenge = Some(rivulet_gateway::frontend::native::login::answer("native", TOKEN.to_vec()));
    native_options.subscriptions = vec![EventPath::new(["sensor", "*"])];
    let (native, mut native_events) =
        within("native connects", connect(gateway.local_addr(), native_options)).await.unwrap();

    let registered =
        within("registered", client.register_with_response(vec![event(&["sensor", "t"], json("21.5"))])).await.unwrap();
    assert_eq!(registered[0].payload, json("21.5"));
    assert_eq!(next_events(&mut events, 1).await, registered);
    assert_eq!(within("native sees it", native_events.next()).await.as_ref(), registered.first());
    let denied = within("answered", client.register_with_response(vec![event(&["actuator", "x"], json("1"))])).await;
    assert_eq!(denied, Err(HatError::Failure), "the ACL refuses it whole");

    let from_native = native.register_with_response(vec![event(&["sensor", "n"], json("1"))]).await.unwrap();
    assert_eq!(next_events(&mut events, 1).await, from_native, "a native event reaches the hat client");
    let latest = Query::Latest { event_types: None };
    let mut seen = within("latest", client.query_all(latest)).await.unwrap();
    seen.sort_by_key(|e| e.id);
    assert_eq!(seen, [registered[0].clone(), from_native[0].clone()]);

    let published = rivulet_ok(&["pub", "--hat", &addr, "--name", "dev", "--token", &token, "sensor/cli", "3"]);
    assert_eq!(published[0]["type"], serde_json::json!(["sensor", "cli"]));
    assert_eq!(next_events(&mut events, 1).await[0].event_type, EventPath::new(["sensor", "cli"]));
    let no_token = rivulet(&["status", "--hat", &addr, "--name", "dev"]);
    assert!(!no_token.status.success());
    let said = String::from_utf8_lossy(&no_token.stderr);
    assert!(said.contains(WRONG_CREDENTIAL) && said.contains("--token"), "{said}");
    native.close().await;
    client.close().await;
    gateway.stop().await;
}
