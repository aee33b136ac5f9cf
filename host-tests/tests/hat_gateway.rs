//! Real hat-event clients (hat-event 0.9.44, `host-tests/peers/hat_eventer_peer.py`) against the
//! gateway's hat front-end, in process: logins, hat's wildcard rules, the serverId and persisted
//! filters, registrations with and without response and refused by the ACL, paging through 10k
//! events both ways, the keepalive both ways, a malformed frame, events crossing to and from
//! native clients, and hat over TLS. A Rust client on the core's hat codec checks what Python
//! cannot: flow control by acks, and a client that never acks being cut off.

use std::time::Duration;

use rivulet_core::hat::chatter::parse_header;
use rivulet_core::hat::conversation::{Chatter, Config, Conversation};
use rivulet_core::hat::eventer::{EventsAck, InitReq, InitRes, Message, StatusNotify};
use rivulet_core::model::Status;
use rivulet_core::time::Instant;
use rivulet_gateway::access::{Credential, to_hex};
use rivulet_gateway::config::{ClientEntry, HatRespond, HatSettings, NativeSettings, Settings, TlsSettings};
use rivulet_gateway::gateway::Gateway;
use rivulet_host_tests::peers::PeerProcess;
use rivulet_host_tests::process::{gateway_binary, run_to_end};
use rivulet_tokio::model::{Event, Payload, RegisterEvent};
use rivulet_tokio::{ClientOptions, connect};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATIENCE: Duration = Duration::from_secs(90);
const TOKEN: [u8; 32] = [0x5a; 32];

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("{what}: nothing in {PATIENCE:?}"))
}

/// A gateway with its hat front-end on loopback; with `login`, one client `dev` (token
/// [`TOKEN`]) that may register and subscribe only under `sensor/*`.
async fn gateway(dir: &std::path::Path, login: bool, hat: HatSettings) -> Gateway {
    let clients = if login {
        let credential = Credential::from_token(&TOKEN, [3; 16]);
        vec![ClientEntry {
            name: "dev".into(),
            salt: to_hex(&credential.salt),
            stored_key: to_hex(&credential.stored_key),
            register: Some(vec!["sensor/*".into()]),
            subscribe: Some(vec!["sensor/*".into()]),
            request: None,
            federate: false,
            files: Default::default(),
        }]
    } else {
        Vec::new()
    };
    let settings = Settings {
        native: NativeSettings { listen: "127.0.0.1:0".parse().unwrap(), ..NativeSettings::default() },
        hat: HatSettings { listen: "127.0.0.1:0".parse().ok(), ..hat },
        data: dir.to_path_buf(),
        clients,
        ..Settings::default()
    };
    Gateway::start(&settings).await.expect("the gateway starts")
}

/// Runs a scenario of the peer to its end and returns its last line, as JSON.
async fn scenario(gateway: &Gateway, name: &str, args: &[&str]) -> Value {
    let port = gateway.hat_addr().expect("a hat listener").port().to_string();
    let mut all = vec![name.to_string(), port];
    all.extend(args.iter().map(ToString::to_string));
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        PeerProcess::spawn("hat_eventer_peer.py", &args).wait_success(PATIENCE)
    })
    .await
    .expect("the peer ran");
    let last = out.stdout.lines().last().unwrap_or_else(|| panic!("{name} printed nothing"));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{name}: {e}: {last}"))
}

fn hat_stats(gateway: &Gateway) -> rivulet_gateway::frontend::FrontendStats {
    let frontends = gateway.broker().frontends();
    frontends.iter().find(|f| f.name() == "hat").expect("the hat front-end").stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hat_client_logs_in_with_its_token_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path(), true, HatSettings::default()).await;
    let seen = scenario(&gateway, "login", &[&to_hex(&TOKEN)]).await;
    assert_eq!(seen["status"], "OPERATIONAL");
    let refusals: Vec<&str> = seen["refusals"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(refusals, ["unknown client or wrong credential"; 3], "a wrong token, none, an unknown name");
    assert_eq!(hat_stats(&gateway).logins_refused, 3);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hats_wildcard_rules_hold_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path(), false, HatSettings::default()).await;
    let seen = scenario(&gateway, "wildcards", &[]).await;
    let got = |name: &str| serde_json::to_string(&seen["got"][name]).unwrap();
    assert_eq!(got("star"), r#"[[],["a"],["a","b"],["b"]]"#, "('*',) matches everything, () included");
    assert_eq!(got("a_star"), r#"[["a"],["a","b"]]"#, "('a','*') matches ('a',)");
    assert_eq!(got("a"), r#"[["a"]]"#, "('a',) does not match ('a','b')");
    assert_eq!(got("q"), r#"[["a"],["b"]]"#, "('?',) is exactly one segment");
    assert_eq!(got("none"), "[]", "no subscriptions, no notifications");
    assert_eq!(seen["invalid"], "invalid query event type", "hat's own init error");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_id_and_persisted_filters_each_get_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path(), false, HatSettings::default()).await;
    let seen = scenario(&gateway, "filters", &[]).await;
    let ids = |name: &str| seen[name].as_array().unwrap().iter().filter_map(Value::as_u64).collect::<Vec<_>>();
    assert_eq!(ids("live").len(), 5);
    assert_eq!(ids("persisted"), ids("live"), "the persisted subscriber: the same events, once");
    assert_eq!(ids("server_1"), ids("live"), "this gateway is server 1");
    assert!(ids("server_2").is_empty(), "nothing of server 2");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_answered_and_a_denied_one_fails_whole() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path(), true, HatSettings::default()).await;
    let seen = scenario(&gateway, "register", &[&to_hex(&TOKEN)]).await;
    let stored = serde_json::to_string(&seen["stored"]).unwrap();
    assert_eq!(stored, r#"[["sensor","quiet"],["sensor","a"],["sensor","b"]]"#, "none of the failed request");
    let ids: Vec<u64> = seen["registered"].as_array().unwrap().iter().map(|e| e["id"][2].as_u64().unwrap()).collect();
    assert_eq!(ids, [2, 3], "the gateway's ids, in order");
    assert_eq!(hat_stats(&gateway).registrations_refused, 2);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_at_registration_as_hats_server_does_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let registered = HatSettings { respond: HatRespond::Registered, ..HatSettings::default() };
    let gateway = gateway(dir.path(), true, registered).await;
    let seen = scenario(&gateway, "register", &[&to_hex(&TOKEN)]).await;
    let stored = serde_json::to_string(&seen["stored"]).unwrap();
    assert_eq!(stored, r#"[["sensor","quiet"],["sensor","a"],["sensor","b"]]"#, "the same events, stored");
    let ids: Vec<u64> = seen["registered"].as_array().unwrap().iter().map(|e| e["id"][2].as_u64().unwrap()).collect();
    assert_eq!(ids, [2, 3]);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_page_through_both_orders_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path(), false, HatSettings::default()).await;
    let seen = scenario(&gateway, "paging", &["10000"]).await;
    assert_eq!(
        (seen["ascending"].as_u64(), seen["descending"].as_u64(), seen["server"].as_u64()),
        (Some(10_000), Some(10_000), Some(10_000))
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let quick = HatSettings {
        ping_delay: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(1000),
        ..HatSettings::default()
    };
    let gateway = gateway(dir.path(), false, quick).await;
    let seen = scenario(&gateway, "keepalive", &[]).await;
    assert_eq!(seen["open"], true);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_only_its_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path(), false, HatSettings::default()).await;
    let seen = scenario(&gateway, "malformed", &[]).await;
    assert_eq!((seen["closed"].as_bool(), seen["good_registered"].as_u64()), (Some(true), Some(1)));
    assert_eq!(hat_stats(&gateway).bad_input, 1, "counted");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_between_hat_and_native_clients_with_their_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path(), false, HatSettings::default()).await;
    let options = ClientOptions { subscriptions: vec!["x/*".into()], ..ClientOptions::new("native-side") };
    let (native, mut events) = within("connect", connect(gateway.local_addr(), options)).await.unwrap();
    let port = gateway.hat_addr().unwrap().port().to_string();
    let peer = tokio::task::spawn_blocking(move || {
        PeerProcess::spawn("hat_eventer_peer.py", &["cross", &port]).wait_success(PATIENCE)
    });
    // What the hat client registered, as a native client sees it.
    let mut from_hat: Vec<Event> = Vec::new();
    while from_hat.len() < 2 {
        from_hat.push(within("an event from hat", events.next()).await.expect("the client runs"));
    }
    assert_eq!(from_hat[0].event_type.to_string(), "x/hat/json");
    assert_eq!(from_hat[0].payload, Some(Payload::Json(r#"{"t": 21.5}"#.into())), "JSON stays its text");
    assert_eq!(from_hat[1].payload, Some(Payload::Binary { kind: "blob".into(), data: vec![0, 1, 255] }));
    assert_eq!(from_hat[1].source_timestamp.map(|t| (t.s, t.us)), Some((1_700_000_000, 5)));
    // And back: a native registration reaches the hat client.
    let seq = native.register(RegisterEvent::new("x/native/json", Some(Payload::Json("[1, 2]".into())))).await.unwrap();
    native.registered(seq).await.unwrap();
    let out = within("the hat client", peer).await.unwrap();
    let seen: Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    let got = seen["got"].as_array().unwrap();
    let native_event = got.iter().find(|e| e["type"][1] == "native").expect("the native event reached hat");
    assert_eq!(native_event["payload"]["json"], serde_json::json!([1, 2]));
    assert_eq!(native_event["id"][2].as_u64(), Some(3), "with the gateway's id");
    native.close().await;
    gateway.stop().await;
}

/// Writes `ca.pem` and a certificate for 127.0.0.1 signed by it (`server.pem`, `server.key`).
fn certificates(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(dir.join("server.pem"), server.signed_by(&key, &Issuer::new(ca, ca_key)).unwrap().pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hat_clients_over_tls_log_in_and_the_rest_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let tls = TlsSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server.key"),
    };
    let gateway = gateway(dir.path(), true, HatSettings { tls: Some(tls), ..HatSettings::default() }).await;
    let port = gateway.hat_tls_addr().expect("a hat TLS listener").port().to_string();
    let ca = dir.path().join("ca.pem").display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        PeerProcess::spawn("hat_eventer_peer.py", &["tls", &port, &ca, &to_hex(&TOKEN)]).wait_success(PATIENCE)
    })
    .await
    .unwrap();
    let seen: Value = serde_json::from_str(out.stdout.lines().last().unwrap_or("")).unwrap();
    eprintln!("over TLS: {seen}");
    assert_eq!(seen["status"], "OPERATIONAL", "{seen}");
    assert_eq!(seen["latest"], seen["registered"], "what it registered over TLS is stored: {seen}");
    assert_eq!(seen["registered"][0]["payload"]["json"]["t"], 1, "{seen}");
    let refusals = seen["refusals"].as_object().expect("refusals");
    assert_eq!(refusals.len(), 2, "an untrusted and a plain client: {seen}");
    // Both failed handshakes were counted (the gateway may see the second close a moment later).
    within("two failed handshakes counted", async {
        while hat_stats(&gateway).handshake_failed < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(hat_stats(&gateway).logins_refused, 0, "refused before any login");

    // `rivulet ... --hat` over TLS, trusting the same CA.
    let addr = format!("127.0.0.1:{}", gateway.hat_tls_addr().unwrap().port());
    let ca = dir.path().join("ca.pem").display().to_string();
    let args = ["status", "--hat", &addr, "--tls-ca", &ca, "--name", "dev", "--token", &to_hex(&TOKEN)];
    let mut command = std::process::Command::new(gateway_binary());
    command.args(args).env_remove("RIVULET_TOKEN");
    let out = tokio::task::spawn_blocking(move || run_to_end(&mut command, PATIENCE)).await.unwrap();
    assert!(out.status.success(), "rivulet {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["status"], "operational");
    gateway.stop().await;
}

/// What a raw client read, in short.
#[derive(Debug)]
enum Read {
    InitOk,
    Notify(usize),
    Status(Status),
    /// Shown (by `Debug`) when a test fails on it.
    Other(#[allow(dead_code)] String),
}

/// A raw hat client on the core's codec: logs in with `subscriptions`, then reads messages and
/// answers them as a test wants (or does not).
struct RawClient {
    stream: tokio::net::TcpStream,
    chatter: Chatter,
    rx: Vec<u8>,
}

impl RawClient {
    async fn connect(gateway: &Gateway, subscriptions: &[&[&str]]) -> RawClient {
        let stream = tokio::net::TcpStream::connect(gateway.hat_addr().unwrap()).await.unwrap();
        let mut client = RawClient { stream, chatter: Chatter::new(Config::default(), Instant::ZERO), rx: Vec::new() };
        let init = InitReq {
            client_name: "raw",
            client_token: None,
            subscriptions: subscriptions.iter().copied(),
            server_id: None,
            persisted: false,
        };
        let mut buf = vec![0; 4096];
        let (len, _) = client.chatter.open(&init, false, &mut buf).unwrap();
        client.stream.write_all(&buf[..len]).await.unwrap();
        let (_, read) = client.next().await;
        assert!(matches!(read, Read::InitOk), "init: {read:?}");
        client
    }

    /// The next message (pings and pongs stay inside), with its conversation.
    async fn next(&mut self) -> (Conversation, Read) {
        loop {
            if let Some((header, body)) = parse_header(&self.rx, usize::MAX).unwrap()
                && self.rx.len() >= header + body
            {
                let frame: Vec<u8> = self.rx.drain(..header + body).collect();
                let Some(received) = self.chatter.receive(Instant::ZERO, &frame[header..]).unwrap() else { continue };
                let read = match received.message().unwrap() {
                    Message::InitRes(InitRes::Success(_)) => Read::InitOk,
                    Message::EventsNotify(notify) => Read::Notify(notify.events.len()),
                    Message::StatusNotify(StatusNotify(status)) => Read::Status(status),
                    other => Read::Other(format!("{other:?}")),
                };
                return (received.conversation, read);
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the gateway closed the connection");
            self.rx.extend_from_slice(&chunk[..n]);
        }
    }

    async fn ack(&mut self, conversation: Conversation) {
        let mut buf = vec![0; 256];
        let len = self.chatter.reply(conversation, &EventsAck, true, &mut buf).unwrap();
        self.stream.write_all(&buf[..len]).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_wait_for_acks_and_a_client_that_never_acks_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path(), false, HatSettings::default()).await;
    let mut raw = RawClient::connect(&gateway, &[&["n", "*"]]).await;
    let (producer, _) = within("connect", connect(gateway.local_addr(), ClientOptions::new("producer"))).await.unwrap();
    let mut last = 0;
    for n in 0..10 {
        last = producer.register(RegisterEvent::new("n/x", Some(Payload::Json(n.to_string())))).await.unwrap();
    }
    producer.registered(last).await.unwrap();
    // The first notification; nothing more until it is acknowledged.
    let (conversation, first) = within("a notification", raw.next()).await;
    let Read::Notify(mut received) = first else { panic!("{first:?}") };
    let more = tokio::time::timeout(Duration::from_millis(300), raw.next()).await;
    assert!(more.is_err(), "a second notification before the ack");
    raw.ack(conversation).await;
    while received < 10 {
        let (conversation, read) = within("the rest", raw.next()).await;
        let Read::Notify(count) = read else { panic!("{read:?}") };
        received += count;
        raw.ack(conversation).await;
    }
    assert_eq!(received, 10, "every event once, batch by batch");
    // Now it stops acking: past its high-water mark the producer waits for it, until it has taken
    // nothing for the stall time and is cut off; then the producer goes on.
    let queue = Settings::default().notify_queue as u64;
    for batch in 0..(queue / 1000 + 3) {
        let events: Vec<RegisterEvent> =
            (0..1000).map(|n| RegisterEvent::new("n/y", Some(Payload::Json((batch * 1000 + n).to_string())))).collect();
        let seq = producer.register_with_response(events).await;
        assert!(seq.is_ok(), "the producer goes on: {seq:?}");
    }
    within("the cut-off", async {
        while hat_stats(&gateway).too_slow == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    producer.close().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_change_reaches_hat_clients_before_their_links_close() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path(), false, HatSettings::default()).await;
    let mut raw = RawClient::connect(&gateway, &[]).await;
    let stopping = tokio::spawn(gateway.stop());
    let (_, read) = within("the status", raw.next()).await;
    assert!(matches!(read, Read::Status(Status::Stopping)), "{read:?}");
    within("the stop", stopping).await.unwrap();
}
