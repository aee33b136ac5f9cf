//! `rivulet_tokio` over TLS end to end: a CA and a server certificate made on the fly in a temp
//! dir, a TLS server (`Server::from_listener_with` + `tls::Acceptor`) and TLS clients
//! (`connect_via` + `tls::Connector`) over loopback; clients that must fail (untrusted CA, wrong
//! name, plain TCP, silence) and a server that keeps serving the others; PEM loading errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rivulet_core::model::{EventId, Timestamp};
use rivulet_tokio::model::{Event, EventPath, Payload, RegisterEvent};
use rivulet_tokio::server::{ClientInfo, HandlerError, Registration, Server, ServerHandler, ServerOptions};
use rivulet_tokio::{Backoff, Client, ClientError, ClientOptions, Events, connect, connect_via, tls};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// How long anything may take before the test gives up: a bound against hanging, not a check.
const WAIT: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
}

/// Polls `done` until it holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    within(what, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

// ---- certificates ----

/// A temp dir with `ca.crt`, `server.crt` + `server.key` (signed by the CA, for `localhost` and
/// 127.0.0.1), and `other-ca.crt` + `other-ca.key` (a CA nobody here trusts).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (ca_params, ca_key) = ca("Rivulet test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        std::fs::write(dir.path().join("ca.crt"), ca_cert.pem()).expect("write");
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().expect("a key");
        let mut server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("SANs");
        server.distinguished_name.push(DnType::CommonName, "rivulet gateway");
        let server_cert = server.signed_by(&server_key, &issuer).expect("server cert");
        std::fs::write(dir.path().join("server.crt"), server_cert.pem()).expect("write");
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).expect("write");
        let (other, other_key) = ca("Someone else's CA");
        std::fs::write(dir.path().join("other-ca.crt"), other.self_signed(&other_key).expect("cert").pem())
            .expect("write");
        std::fs::write(dir.path().join("other-ca.key"), other_key.serialize_pem()).expect("write");
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn acceptor(&self) -> tls::Acceptor {
        let config = tls::server_config_from_pem(self.path("server.crt"), self.path("server.key")).expect("loads");
        tls::Acceptor::new(config)
    }

    /// A connector to `addr` that trusts `ca` and expects the certificate to name `name`.
    fn connector(&self, addr: SocketAddr, ca: &str, name: &str) -> tls::Connector {
        let trust = tls::client_config(self.path(ca)).expect("loads");
        tls::Connector::new(addr.to_string(), name, trust).expect("a valid name")
    }
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    (params, key)
}

// ---- the application side: registrations kept in memory ----

#[derive(Default)]
struct Store {
    events: Mutex<Vec<Event>>,
    instance: AtomicU64,
}

impl Store {
    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

struct Handler(Arc<Store>);

impl ServerHandler for Handler {
    async fn register(
        &self,
        _client: &ClientInfo,
        registrations: Vec<Registration>,
    ) -> Result<Vec<Event>, HandlerError> {
        let events: Vec<Event> = registrations
            .into_iter()
            .map(|r| Event {
                id: EventId { server: 1, session: 1, instance: self.0.instance.fetch_add(1, Ordering::SeqCst) },
                event_type: r.event.event_type,
                timestamp: Timestamp { s: 1_700_000_000, us: 0 },
                source_timestamp: r.event.source_timestamp,
                payload: r.event.payload,
            })
            .collect();
        self.0.events.lock().unwrap().extend(events.iter().cloned());
        Ok(events)
    }
}

async fn tls_server(pki: &Pki, addr: SocketAddr, store: &Arc<Store>, options: ServerOptions) -> Server {
    let listener = TcpListener::bind(addr).await.expect("bind");
    Server::from_listener_with(listener, options, Handler(store.clone()), pki.acceptor()).expect("serves")
}

fn options(name: &str) -> ClientOptions {
    let reconnect = Backoff { initial: Duration::from_millis(20), max: Duration::from_millis(200) };
    ClientOptions { reconnect, ..ClientOptions::new(name) }
}

async fn tls_client(pki: &Pki, addr: SocketAddr, options: ClientOptions) -> (Client, Events) {
    within("connect", connect_via(pki.connector(addr, "ca.crt", "localhost"), options)).await.expect("admitted")
}

fn temp(value: &str) -> RegisterEvent {
    RegisterEvent::new("sensor/room1/temp", Some(Payload::Json(value.into())))
}

/// Registers through `client` and waits until the server stored it.
async fn register(client: &Client, event: RegisterEvent) {
    let seq = within("register", client.register(event)).await.expect("in the outbox");
    within("registered", client.registered(seq)).await.expect("stored");
}

const LOCALHOST: &str = "127.0.0.1:0";

// ---- tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_register_subscribe_and_are_notified() {
    let pki = Pki::new();
    let store = Arc::new(Store::default());
    let server = tls_server(&pki, LOCALHOST.parse().unwrap(), &store, ServerOptions::default()).await;
    let addr = server.local_addr();

    let subscribing = ClientOptions { subscriptions: vec![EventPath::from("sensor/*")], ..options("display") };
    let (subscriber, mut notified) = tls_client(&pki, addr, subscribing).await;
    let subscribed = || server.connections().iter().any(|c| c.subscriptions == [EventPath::from("sensor/*")]);
    eventually("the subscription is listed", subscribed).await;
    let (producer, _) = tls_client(&pki, addr, options("thermostat")).await;
    register(&producer, temp("21.5")).await;

    let stored = store.events();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_type, EventPath::from("sensor/room1/temp"));
    server.notify_events(&stored, false, true).await;
    let event = within("the notification", notified.next()).await.expect("a notification");
    assert_eq!(event, stored[0]);

    // The handler sees the TCP peer, not something of TLS's.
    let connections = server.connections();
    assert_eq!(connections.len(), 2);
    for client in &connections {
        assert!(client.peer.ip().is_loopback() && client.peer.port() != addr.port(), "{:?}", client.peer);
    }
    assert_eq!(server.stats().handshake_failed, 0);
    subscriber.close().await;
    producer.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_reconnects_when_the_server_restarts_on_the_same_port() {
    let pki = Pki::new();
    let store = Arc::new(Store::default());
    let first = tls_server(&pki, LOCALHOST.parse().unwrap(), &store, ServerOptions::default()).await;
    let addr = first.local_addr();
    let (client, _) = tls_client(&pki, addr, options("thermostat")).await;
    register(&client, temp("20.0")).await;
    let mut changes = client.state_changes();
    first.shutdown().await;
    within("the link drops", changes.wait_for(|state| !state.connected)).await.expect("client running");

    // Kept in the outbox while no server is up; stored by the next one once the client is back.
    let seq = within("register offline", client.register(temp("20.5"))).await.expect("in the outbox");
    let second = tls_server(&pki, addr, &store, ServerOptions::default()).await;
    within("reconnected", changes.wait_for(|state| state.connected && state.links == 2)).await.expect("running");
    within("registered", client.registered(seq)).await.expect("stored by the new server");
    let payloads: Vec<Option<Payload>> = store.events().into_iter().map(|e| e.payload).collect();
    assert_eq!(payloads, [Some(Payload::Json("20.0".into())), Some(Payload::Json("20.5".into()))]);
    assert_eq!(second.connections().len(), 1);
    client.close().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_server_fails_clearly_and_others_are_served() {
    let pki = Pki::new();
    let store = Arc::new(Store::default());
    let server = tls_server(&pki, LOCALHOST.parse().unwrap(), &store, ServerOptions::default()).await;
    let addr = server.local_addr();

    let untrusting = pki.connector(addr, "other-ca.crt", "localhost");
    let refused = within("connect", connect_via(untrusting, options("stranger"))).await.expect_err("no trust");
    let ClientError::Io(message) = &refused else { panic!("not an i/o error: {refused:?}") };
    assert!(message.contains("TLS handshake with") && message.contains("UnknownIssuer"), "{message}");

    // A certificate for another name is refused too, and says so.
    let misnamed = pki.connector(addr, "ca.crt", "gateway.example");
    let refused = within("connect", connect_via(misnamed, options("stranger"))).await.expect_err("wrong name");
    assert!(format!("{refused}").contains("not valid for name \"gateway.example\""), "{refused}");

    eventually("both failures counted", || server.stats().handshake_failed == 2).await;
    let (client, _) = tls_client(&pki, addr, options("thermostat")).await;
    register(&client, temp("19.0")).await;
    assert_eq!(store.events().len(), 1);
    client.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tcp_client_on_the_tls_port_fails_without_harming_the_server() {
    let pki = Pki::new();
    let store = Arc::new(Store::default());
    let server = tls_server(&pki, LOCALHOST.parse().unwrap(), &store, ServerOptions::default()).await;
    let addr = server.local_addr();

    let plain = within("connect", connect(addr, options("plain"))).await;
    // It cannot tell TLS from garbage: the link just ends before its init is answered.
    assert!(matches!(plain, Err(ClientError::Disconnected | ClientError::Io(_))), "got through: {plain:?}");
    eventually("the failed handshake is counted", || server.stats().handshake_failed == 1).await;
    assert!(server.connections().is_empty());

    let (client, _) = tls_client(&pki, addr, options("thermostat")).await;
    register(&client, temp("18.0")).await;
    assert_eq!(store.events().len(), 1);
    client.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_blocks_nobody_and_its_handshake_times_out() {
    let pki = Pki::new();
    let store = Arc::new(Store::default());
    // A handshake that would never time out within the test: a client still gets through, so
    // the silent one is not holding up the accept loop.
    let patient = ServerOptions { handshake_timeout: Duration::from_secs(3600), ..ServerOptions::default() };
    let server = tls_server(&pki, LOCALHOST.parse().unwrap(), &store, patient).await;
    let silent = TcpStream::connect(server.local_addr()).await.expect("accepted");
    let (client, _) = tls_client(&pki, server.local_addr(), options("thermostat")).await;
    register(&client, temp("17.0")).await;
    client.close().await;
    // Shutting down does not wait for the handshake either.
    within("shutdown", server.shutdown()).await;
    drop(silent);

    // With a short one, the silent connection is dropped and counted.
    let hasty = ServerOptions { handshake_timeout: Duration::from_millis(100), ..ServerOptions::default() };
    let server = tls_server(&pki, LOCALHOST.parse().unwrap(), &store, hasty).await;
    let mut silent = TcpStream::connect(server.local_addr()).await.expect("accepted");
    let mut byte = [0u8; 1];
    let read = within("the server drops it", silent.read(&mut byte)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "the server sent something: {read:?}");
    eventually("the timeout is counted", || server.stats().handshake_failed == 1).await;
    server.shutdown().await;
}

#[test]
fn pem_loading_errors_name_the_file_and_the_problem() {
    let pki = Pki::new();
    let path = |name: &str| pki.path(name);
    let shown = |name: &str| path(name).display().to_string();
    let server_err = |cert: &Path, key: &Path| tls::server_config_from_pem(cert, key).expect_err("must fail");

    let missing = server_err(&path("absent.crt"), &path("server.key"));
    assert!(missing.contains(&shown("absent.crt")) && missing.contains("cannot read"), "{missing}");
    let missing = server_err(&path("server.crt"), &path("absent.key"));
    assert!(missing.contains(&shown("absent.key")) && missing.contains("cannot read"), "{missing}");

    let no_key = server_err(&path("server.crt"), &path("server.crt"));
    assert!(no_key.contains(&shown("server.crt")) && no_key.contains("no private key"), "{no_key}");
    let no_cert = server_err(&path("server.key"), &path("server.key"));
    assert!(no_cert.contains(&shown("server.key")) && no_cert.contains("no certificate"), "{no_cert}");
    let mismatch = server_err(&path("server.crt"), &path("other-ca.key"));
    assert!(mismatch.contains(&shown("other-ca.key")) && mismatch.contains("does not match"), "{mismatch}");

    std::fs::write(path("garbage.crt"), "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n").expect("write");
    let garbage = server_err(&path("garbage.crt"), &path("server.key"));
    assert!(garbage.contains(&shown("garbage.crt")) && garbage.contains("not valid PEM"), "{garbage}");

    let trust = tls::client_config(path("absent.crt")).expect_err("must fail");
    assert!(trust.contains(&shown("absent.crt")) && trust.contains("cannot read"), "{trust}");
    let trust = tls::client_config(path("server.key")).expect_err("must fail");
    assert!(trust.contains(&shown("server.key")) && trust.contains("no certificate"), "{trust}");

    // And the good ones load, a combined certificate-and-key file too.
    let combined = format!(
        "{}{}",
        std::fs::read_to_string(path("server.crt")).unwrap(),
        std::fs::read_to_string(path("server.key")).unwrap()
    );
    std::fs::write(path("combined.pem"), combined).expect("write");
    tls::server_config_from_pem(path("combined.pem"), path("combined.pem")).expect("a combined file loads");
    tls::client_config(path("ca.crt")).expect("the CA loads");
    let bad_name = tls::Connector::new("127.0.0.1:1", "not a name!", tls::client_config(path("ca.crt")).unwrap());
    assert!(bad_name.expect_err("must fail").contains("not a name!"));
}
