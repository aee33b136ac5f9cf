//! The real stream-sea client (stream-sea-client 0.7.0, `host-tests/peers/
//! streamsea_client_peer.py`) against the gateway's stream-sea listener: schemas defined,
//! described and versioned over its REST API, never overwritten, kept across a restart; Basic
//! credentials from the gateway's clients; publishing checked against the stream's schema (from
//! the REST API and from a device alike) and reaching native subscribers; websocket subscribers getting a device's events in order, a
//! wrong secret refused, JWT logins, a consumer group sharing a stream, and a client that stops
//! reading cut off while another reads on.

use std::time::Duration;

use rivulet_gateway::access::{Credential, to_hex};
use rivulet_gateway::config::{ClientEntry, NativeSettings, Settings, StreamSeaSettings};
use rivulet_gateway::gateway::Gateway;
use rivulet_host_tests::peers::PeerProcess;
use rivulet_tokio::model::{EventPath, Payload, RegisterEvent};
use rivulet_tokio::{ClientOptions, connect};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);
const TOKEN: [u8; 32] = [0x42; 32];
/// The gateway's JWT secret (`[streamsea] jwt_secrets`).
const JWT_SECRET: &str = "a secret of the gateway, at least 32 bytes long";

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("{what}: nothing in {PATIENCE:?}"))
}

/// A gateway with one client, `dev`, which may do anything under `streamsea*` and nothing else.
async fn gateway(dir: &std::path::Path) -> Gateway {
    gateway_with_queue(dir, Settings::default().notify_queue).await
}

async fn gateway_with_queue(dir: &std::path::Path, notify_queue: usize) -> Gateway {
    Gateway::start(&settings(dir, notify_queue)).await.expect("the gateway starts")
}

fn settings(dir: &std::path::Path, notify_queue: usize) -> Settings {
    let credential = Credential::from_token(&TOKEN, [5; 16]);
    let dev = ClientEntry {
        name: "dev".into(),
        salt: to_hex(&credential.salt),
        stored_key: to_hex(&credential.stored_key),
        register: Some(vec!["streamsea/*".into(), "streamsea-schemas/*".into()]),
        subscribe: Some(vec!["streamsea/*".into()]),
        request: None,
        federate: false,
        files: Default::default(),
    };
    Settings {
        native: NativeSettings { listen: "127.0.0.1:0".parse().unwrap(), ..NativeSettings::default() },
        streamsea: StreamSeaSettings {
            listen: "127.0.0.1:0".parse().ok(),
            jwt_secrets: vec![JWT_SECRET.into()],
            ..StreamSeaSettings::default()
        },
        data: dir.to_path_buf(),
        clients: vec![dev],
        notify_queue,
        ..Settings::default()
    }
}

fn spawn_client(gateway: &Gateway, args: &[&str]) -> tokio::task::JoinHandle<Value> {
    let port = gateway.streamsea_addr().expect("a stream-sea listener").port().to_string();
    let mut all = vec![args[0].to_string(), port, "dev".into(), to_hex(&TOKEN)];
    all.extend(args[1..].iter().map(ToString::to_string));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = PeerProcess::spawn("streamsea_client_peer.py", &args).wait_success(PATIENCE);
        let last = out.stdout.lines().last().unwrap_or("").to_string();
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"))
    })
}

/// Waits until `count` websocket clients have a subscription.
async fn subscribed(gateway: &Gateway, count: usize) {
    within("the websocket subscriptions", async {
        loop {
            let frontends = gateway.broker().frontends();
            let streamsea = frontends.iter().find(|f| f.name() == "streamsea").unwrap();
            if streamsea.clients().iter().filter(|c| !c.subscriptions.is_empty()).count() >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

async fn native(gateway: &Gateway) -> rivulet_tokio::Client {
    let mut options = ClientOptions::new("dev");
    options.challenge = Some(rivulet_gateway::frontend::native::login::answer("dev", TOKEN.to_vec()));
    within("connect", connect(gateway.local_addr(), options)).await.unwrap().0
}

fn boiler(n: usize, padding: usize) -> RegisterEvent {
    let payload = json!({ "n": n, "pad": "x".repeat(padding) });
    RegisterEvent::new(EventPath::new(["streamsea", "boiler_data"]), Some(Payload::Json(payload.to_string())))
}

async fn client(gateway: &Gateway, args: &[&str]) -> Value {
    let port = gateway.streamsea_addr().expect("a stream-sea listener").port().to_string();
    let token = to_hex(&TOKEN);
    let mut all = vec![args[0].to_string(), port, "dev".into(), token];
    all.extend(args[1..].iter().map(ToString::to_string));
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        PeerProcess::spawn("streamsea_client_peer.py", &args).wait_success(PATIENCE)
    })
    .await
    .unwrap();
    let last = out.stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"))
}

fn stats(gateway: &Gateway) -> rivulet_gateway::frontend::FrontendStats {
    let frontends = gateway.broker().frontends();
    frontends.iter().find(|f| f.name() == "streamsea").expect("the stream-sea front-end").stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_are_defined_versioned_never_overwritten_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path()).await;
    let seen = client(&gateway, &["schemas"]).await;
    assert_eq!(seen["statuses"], json!([200, 200, 409, 200]), "new, again unchanged, a conflict, a new version");
    assert_eq!(seen["described"]["version"], "2", "the newest version");
    let fields: Vec<&str> =
        seen["described"]["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(fields, ["temperature", "mode", "at", "tags"]);
    assert_eq!(seen["described"]["fields"][1]["enum"], json!(["off", "on"]));
    assert_eq!(seen["unknown"], Value::Null, "an unknown stream has no schema");
    assert_eq!(seen["versions"], json!(["2", null]));
    assert_eq!(seen["wrong_secret"], 401);
    assert_eq!(stats(&gateway).logins_refused, 1);
    gateway.stop().await;

    // Stored: a new gateway on the same store describes the same schema.
    let gateway = self::gateway(dir.path()).await;
    let described = client(&gateway, &["describe", "boiler_data"]).await;
    assert_eq!(described, seen["described"]);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_are_checked_against_the_schema_and_reach_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path()).await;
    client(&gateway, &["schemas"]).await;
    let mut options = ClientOptions::new("dev");
    options.challenge = Some(rivulet_gateway::frontend::native::login::answer("dev", TOKEN.to_vec()));
    options.subscriptions = vec![EventPath::new(["streamsea", "boiler_data"])];
    let (native, mut events) = within("connect", connect(gateway.local_addr(), options)).await.unwrap();

    let good = json!({ "temperature": 91.5, "mode": "on", "at": "2024-01-02T03:04:05Z", "tags": ["a"] });
    let published = client(&gateway, &["publish", "boiler_data", &good.to_string()]).await;
    assert_eq!(published["status"], 200, "{published}");
    let event = within("the native subscriber", events.next()).await.unwrap();
    match &event.payload {
        Some(Payload::Json(text)) => assert_eq!(serde_json::from_str::<Value>(text).unwrap(), good),
        other => panic!("{other:?}"),
    }

    let bad = json!({ "temperature": "hot", "mode": "on", "at": "2024-01-02T03:04:05Z", "tags": [] });
    let refused = client(&gateway, &["publish", "boiler_data", &bad.to_string()]).await;
    assert_eq!(refused["status"], 400);
    let error = refused["answer"]["error"].as_str().unwrap();
    assert!(error.contains("temperature: must be a number") && error.contains("version \"2\""), "{error}");
    let stranger = client(&gateway, &["publish", "other/stream", "{}"]).await;
    assert_eq!(stranger["status"], 404, "a stream name is one path segment");
    let undefined = client(&gateway, &["publish", "free_form", r#"{"any": [1]}"#]).await;
    assert_eq!(undefined["status"], 200, "a stream without a schema takes any JSON");

    // The schema holds for every front-end: a device's registration is refused the same way.
    let event = |payload: &Value| {
        RegisterEvent::new(EventPath::new(["streamsea", "boiler_data"]), Some(Payload::Json(payload.to_string())))
    };
    let refused = native.register_with_response(vec![event(&bad)]).await.expect_err("refused");
    let reason = refused.to_string();
    assert!(reason.contains("temperature: must be a number") && reason.contains("boiler_data"), "{reason}");
    let stored = native.register_with_response(vec![event(&good)]).await.expect("a conforming one is taken");
    assert_eq!(stored.len(), 1);
    native.close().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscribers_get_every_message_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path()).await;
    assert_eq!(client(&gateway, &["refused"]).await, json!({ "refused": true }), "a wrong secret: CredentialsError");
    assert_eq!(stats(&gateway).logins_refused, 1);

    let subscriber = spawn_client(&gateway, &["subscribe", "boiler_data", "5"]);
    subscribed(&gateway, 1).await;
    let device = native(&gateway).await;
    device.register_with_response((0..5).map(|n| boiler(n, 0)).collect()).await.unwrap();
    let got = within("the subscriber", subscriber).await.unwrap();
    let numbers: Vec<u64> = got["got"].as_array().unwrap().iter().map(|p| p["n"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [0, 1, 2, 3, 4], "what a device registered, in order, once");
    device.close().await;
    gateway.stop().await;
}

/// A websocket client that authenticates, subscribes to `boiler_data` and then reads nothing,
/// on a socket whose receive buffer is a few KiB (the real client's, autotuned on loopback, hold
/// tens of MiB before the gateway would notice).
async fn stalled_client(gateway: &Gateway) -> impl Sized {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(gateway.streamsea_addr().unwrap()).await.unwrap();
    let url = format!("ws://{}/api/v1/streams", gateway.streamsea_addr().unwrap());
    let (mut ws, _) = within("the websocket handshake", tokio_tungstenite::client_async(url, stream)).await.unwrap();
    let auth = json!({ "id": 1, "action": "authenticate",
        "payload": { "type": "basic", "clientId": "dev", "clientSecret": to_hex(&TOKEN) } });
    ws.send(Message::text(auth.to_string())).await.unwrap();
    ws.send(Message::text(json!({ "id": 2, "action": "subscribe", "payload": "boiler_data" }).to_string()))
        .await
        .unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_stops_reading_is_cut_off_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway_with_queue(dir.path(), 64).await;
    // More than the gateway's socket send buffer (4 MiB at most here) and its queues hold.
    const COUNT: usize = 2000;
    let stalled = stalled_client(&gateway).await;
    let reader = spawn_client(&gateway, &["subscribe", "boiler_data", &COUNT.to_string()]);
    subscribed(&gateway, 2).await;
    let device = native(&gateway).await;
    for batch in 0..COUNT / 15 + 1 {
        let events = (batch * 15..(batch * 15 + 15).min(COUNT)).map(|n| boiler(n, 4000)).collect();
        device.register_with_response(events).await.unwrap();
    }
    let got = within("the reader", reader).await.unwrap();
    let numbers: Vec<u64> = got["got"].as_array().unwrap().iter().map(|p| p["n"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (0..COUNT as u64).collect::<Vec<_>>(), "the reader got everything, in order");
    within("the stalled client cut off", async {
        while stats(&gateway).too_slow < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    drop(stalled);
    device.close().await;
    gateway.stop().await;
}

/// An HS256 JWT, made here from the RFC 7519 recipe (ring's HMAC, base64url), not with the
/// gateway's JWT crate.
fn jwt(secret: &str, sub: &str, exp: u64) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = b64.encode(json!({ "sub": sub, "exp": exp }).to_string());
    let signed = format!("{header}.{claims}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!("{signed}.{}", b64.encode(ring::hmac::sign(&key, signed.as_bytes()).as_ref()))
}

/// Logs in over the websocket with a JWT; the gateway's answer, and (when it let the client in)
/// its answer to a subscribe.
async fn jwt_login(gateway: &Gateway, client_id: &str, token: &str) -> (Value, Option<Value>) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{}/api/v1/streams", gateway.streamsea_addr().unwrap());
    let (mut ws, _) = within("the websocket handshake", tokio_tungstenite::connect_async(url)).await.unwrap();
    let auth =
        json!({ "id": 1, "action": "authenticate", "payload": { "type": "jwt", "clientId": client_id, "jwt": token } });
    ws.send(Message::text(auth.to_string())).await.unwrap();
    let reply = answer(&mut ws).await.expect("an answer to the authenticate");
    if reply["success"] != true {
        return (reply, None);
    }
    ws.send(Message::text(json!({ "id": 2, "action": "subscribe", "payload": "boiler_data" }).to_string()))
        .await
        .unwrap();
    (reply, answer(&mut ws).await)
}

/// The next text message as JSON; `None` once the gateway closed.
async fn answer<S: futures_util::Stream<Item = Result<tokio_tungstenite::tungstenite::Message, E>> + Unpin, E>(
    ws: &mut S,
) -> Option<Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match within("an answer", ws.next()).await {
            Some(Ok(Message::Text(text))) => return Some(serde_json::from_str::<Value>(&text).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_logins_are_signed_unexpired_and_for_their_client() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path()).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (reply, subscribed) = jwt_login(&gateway, "dev", &jwt(JWT_SECRET, "dev", now + 60)).await;
    assert_eq!((reply["action"].clone(), reply["success"].clone()), (json!("authenticate"), json!(true)), "{reply}");
    let subscribed = subscribed.expect("an answer to the subscribe");
    assert_eq!((subscribed["action"].clone(), subscribed["success"].clone()), (json!("subscription"), json!(true)));
    let refusals = [
        ("dev", jwt(JWT_SECRET, "dev", now - 5), "expired"),
        ("dev", jwt("another secret, also at least 32 bytes", "dev", now + 60), "signed with another secret"),
        ("dev", jwt(JWT_SECRET, "someone", now + 60), "for another client"),
        ("stranger", jwt(JWT_SECRET, "stranger", now + 60), "a client the gateway does not know"),
        ("dev", "not.a.jwt".to_string(), "not a JWT"),
    ];
    for (client, token, what) in &refusals {
        let (reply, _) = jwt_login(&gateway, client, token).await;
        assert_eq!(reply["success"], false, "{what}: {reply}");
    }
    assert_eq!(stats(&gateway).logins_refused, refusals.len() as u64);
    gateway.stop().await;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A websocket client of `dev` subscribed to `boiler_data`, in `group` if one is given.
async fn ws_subscriber(gateway: &Gateway, group: Option<&str>) -> Ws {
    ws_subscriber_to(gateway, "boiler_data", group).await
}

async fn ws_subscriber_to(gateway: &Gateway, stream: &str, group: Option<&str>) -> Ws {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{}/api/v1/streams", gateway.streamsea_addr().unwrap());
    let (mut ws, _) = within("the websocket handshake", tokio_tungstenite::connect_async(url)).await.unwrap();
    let auth = json!({ "id": 1, "action": "authenticate",
        "payload": { "type": "basic", "clientId": "dev", "clientSecret": to_hex(&TOKEN) } });
    ws.send(Message::text(auth.to_string())).await.unwrap();
    assert_eq!(answer(&mut ws).await.unwrap()["success"], true);
    let mut subscribe = json!({ "id": 2, "action": "subscribe", "payload": stream });
    if let Some(group) = group {
        subscribe["groupId"] = json!(group);
    }
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    let reply = answer(&mut ws).await.unwrap();
    assert_eq!((reply["action"].clone(), reply["success"].clone()), (json!("subscription"), json!(true)), "{reply}");
    ws
}

/// The `n` of the messages `ws` receives until none comes for half a second.
async fn drain(ws: &mut Ws) -> Vec<u64> {
    let mut got = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(500), answer(ws)).await {
        got.push(message["payload"]["n"].as_u64().unwrap());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_shares_each_message_once_and_rebalances() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path()).await;
    const GROUP: &str = "6f1c2a4e-8b3d-4c5e-9f70-1a2b3c4d5e6f";
    let mut first = ws_subscriber(&gateway, Some(GROUP)).await;
    let mut second = ws_subscriber(&gateway, Some(GROUP)).await;
    let mut everything = ws_subscriber(&gateway, None).await;
    let device = native(&gateway).await;
    device.register_with_response((0..100).map(|n| boiler(n, 0)).collect()).await.unwrap();

    assert_eq!(drain(&mut everything).await, (0..100).collect::<Vec<_>>(), "outside the group: everything");
    let (a, b) = (drain(&mut first).await, drain(&mut second).await);
    assert!(!a.is_empty() && !b.is_empty(), "both members got a share: {} and {}", a.len(), b.len());
    assert!(a.windows(2).all(|w| w[0] < w[1]) && b.windows(2).all(|w| w[0] < w[1]), "each in order");
    let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<_>>(), "each message to one member, none lost");

    // A member leaves: the group's next messages all go to the other.
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    device.register_with_response((100..150).map(|n| boiler(n, 0)).collect()).await.unwrap();
    assert_eq!(drain(&mut second).await, (100..150).collect::<Vec<_>>());
    device.close().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kelvin_apps_output_reaches_a_stream_sea_subscriber_through_a_mapped_stream() {
    use rivulet_gateway::config::{KelvinSettings, StreamMapping};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), Settings::default().notify_queue);
    // Kelvin apps have no login: the listener's apps are `dev` to the ACLs, which then covers kelvin/.
    settings.clients[0].register = None;
    settings.clients[0].subscribe = None;
    settings.kelvin =
        KelvinSettings { listen: "127.0.0.1:0".parse().ok(), client: "dev".into(), ..KelvinSettings::default() };
    settings.streamsea.streams =
        vec![StreamMapping { name: "pump_speed".into(), event_type: "kelvin/ad/pump/speed".into() }];
    let gateway = Gateway::start(&settings).await.expect("the gateway starts");
    let mut speeds = ws_subscriber_to(&gateway, "pump_speed", None).await;
    let mut boilers = ws_subscriber_to(&gateway, "boiler_data", None).await;

    // A Kelvin app (its lines as the SDK writes them) writes its output, and reads its inputs.
    let stream = tokio::net::TcpStream::connect(gateway.kelvin_addr().unwrap()).await.unwrap();
    let (read, mut app) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read);
    let mut manifest = String::new();
    within("the manifest", lines.read_line(&mut manifest)).await.unwrap();
    let output = r#"{"type":"data;pt=number","resource":"krn:ad:pump/speed","id":"39a7520a-a351-49c1-92f5-c0b5f4dc4881","timestamp":"2024-01-02T03:04:05.000000Z","payload":1500}"#;
    app.write_all(format!("{output}\n").as_bytes()).await.unwrap();
    let speed = answer(&mut speeds).await.expect("the app's output as a stream-sea message");
    assert_eq!(speed["streamName"], "pump_speed");
    assert_eq!(
        (speed["payload"]["type"].clone(), speed["payload"]["payload"].clone()),
        (json!("data;pt=number"), json!(1500))
    );

    // A device's message reaches the stream-sea subscriber, and its data the Kelvin app.
    let device = native(&gateway).await;
    device.register_with_response(vec![boiler(7, 0)]).await.unwrap();
    let temp = RegisterEvent::new(EventPath::new(["kelvin", "ad", "pump", "temp"]), Some(Payload::Json("21.5".into())));
    device.register_with_response(vec![temp]).await.unwrap();
    assert_eq!(answer(&mut boilers).await.unwrap()["payload"]["n"], 7);
    let mut input = String::new();
    within("the app's input", lines.read_line(&mut input)).await.unwrap();
    assert!(input.contains(r#""resource":"krn:ad:pump/temp""#) && input.contains(r#""payload":21.5"#), "{input}");
    // Each once: nothing more for either subscriber.
    assert!(drain(&mut speeds).await.is_empty() && drain(&mut boilers).await.is_empty());
    device.close().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_holds_for_hat_clients_and_rivulet_pub_too() {
    use rivulet_gateway::config::HatSettings;
    use rivulet_tokio::hat::{self, HatError, HatOptions};
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), Settings::default().notify_queue);
    settings.hat = HatSettings { listen: "127.0.0.1:0".parse().ok(), ..HatSettings::default() };
    let gateway = Gateway::start(&settings).await.expect("the gateway starts");
    client(&gateway, &["schemas"]).await;
    let bad = json!({ "temperature": "hot", "mode": "on", "at": "2024-01-02T03:04:05Z", "tags": [] });
    let good = json!({ "temperature": 90, "mode": "off", "at": "2024-01-02T03:04:05Z", "tags": [] });

    let mut options = HatOptions::new("dev");
    options.client_token = Some(to_hex(&TOKEN));
    let (hat_client, _) = within("hat connects", hat::connect(gateway.hat_addr().unwrap(), options)).await.unwrap();
    let event = |payload: &Value| {
        RegisterEvent::new(EventPath::new(["streamsea", "boiler_data"]), Some(Payload::Json(payload.to_string())))
    };
    assert_eq!(hat_client.register_with_response(vec![event(&bad)]).await, Err(HatError::Failure), "hat's failure");
    assert!(hat_client.register_with_response(vec![event(&good)]).await.is_ok());

    let cli = |payload: &Value| {
        let addr = gateway.local_addr().to_string();
        let mut command = std::process::Command::new(rivulet_host_tests::process::gateway_binary());
        command.args(["pub", "--gateway", &addr, "--name", "dev", "--token", &to_hex(&TOKEN), "streamsea/boiler_data"]);
        command.arg(payload.to_string()).env_remove("RIVULET_TOKEN");
        rivulet_host_tests::process::run_to_end(&mut command, PATIENCE)
    };
    let refused = tokio::task::block_in_place(|| cli(&bad));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("temperature: must be a number"), "{said}");
    assert!(tokio::task::block_in_place(|| cli(&good)).status.success());
    hat_client.close().await;
    gateway.stop().await;
}
