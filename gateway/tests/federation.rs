//! Gateway federation: 3–5 gateways on loopback linked in a line, a ring, a star and a full
//! mesh; every subscriber gets every event of every gateway once (ids kept, nothing looping),
//! an event goes no further than its TTL, and a link that is cut and healed, or a gateway that
//! stops and starts again, loses nothing acknowledged and doubles nothing. Files and calls cross
//! links to gateways and to a device behind one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rivulet_core::owned::{Event, Payload, RegisterEvent};
use rivulet_gateway::access::{Credential, to_hex};
use rivulet_gateway::config::{ClientEntry, FederationSettings, NativeSettings, PeerEntry, Settings};
use rivulet_gateway::gateway::Gateway;
use rivulet_tokio::{Client, ClientOptions, Events};

mod common;

/// Turns a hang into a failure; never reached when things work.
const PATIENCE: Duration = Duration::from_secs(60);
/// Events each gateway's publisher registers.
const EACH: u64 = 25;

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("{what}: nothing in {PATIENCE:?}"))
}

/// The settings of gateway `id` (its server id) in `dir`/`id`, listening on `listen`, with
/// `federation`.
fn settings(dir: &Path, id: u64, listen: SocketAddr, federation: FederationSettings) -> Settings {
    Settings {
        native: NativeSettings { listen, tls: None, serial_listen: None },
        server_id: id,
        data: dir.join(id.to_string()),
        federation,
        ..Settings::default()
    }
}

/// Gateway `id` (its server id) in `dir`/`id`, listening on `listen`, dialing `peers`.
async fn start(dir: &Path, id: u64, listen: SocketAddr, peers: &[SocketAddr], ttl: u8) -> Gateway {
    let federation = FederationSettings {
        name: format!("g{id}"),
        peers: peers.iter().map(|p| PeerEntry::plain(p.to_string())).collect(),
        ttl,
        ping_every: Duration::from_millis(200),
        ..FederationSettings::default()
    };
    Gateway::start(&settings(dir, id, listen, federation)).await.expect("the gateway starts")
}

/// A free loopback port (bound, then let go).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// `n` gateways (server ids 1..=n); gateway `i` dials the gateways `links` pairs it with that
/// come before it, directly or through a [`Cable`] when `cables` says so.
struct Network {
    gateways: Vec<Gateway>,
}

async fn network(dir: &Path, n: u64, links: &[(u64, u64)], ttl: u8) -> Network {
    let mut gateways: Vec<Gateway> = Vec::new();
    for id in 1..=n {
        let peers: Vec<SocketAddr> = links
            .iter()
            .filter(|(a, b)| *b == id && *a < id)
            .map(|(a, _)| gateways[*a as usize - 1].local_addr())
            .collect();
        gateways.push(start(dir, id, "127.0.0.1:0".parse().unwrap(), &peers, ttl).await);
    }
    Network { gateways }
}

/// A subscriber of `t/*` on `gateway`.
async fn subscriber(gateway: &Gateway) -> (Client, Events) {
    let options = ClientOptions { subscriptions: vec!["t/*".into()], ..ClientOptions::new("sub") };
    within("subscribe", rivulet_tokio::connect(gateway.local_addr(), options)).await.expect("connects")
}

/// Waits until `gateway` has heard of every gateway of `ids` (but itself) wanting `t/*`.
async fn hears_everyone(gateway: &Gateway, ids: &[u64]) {
    let own = gateway.broker().server_id();
    within("the adverts", async {
        loop {
            let heard = gateway.federation().gateways();
            let all = ids.iter().filter(|id| **id != own).all(|id| {
                heard.iter().any(|(origin, _, patterns, via)| {
                    origin == id && patterns.iter().any(|p| p == "t/*") && !via.is_empty()
                })
            });
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Registers events `from..to` of `t/<server id>` on `gateway` and waits until stored.
async fn publish(gateway: &Gateway, from: u64, to: u64) {
    let id = gateway.broker().server_id();
    let (client, _) = within("connect", rivulet_tokio::connect(gateway.local_addr(), ClientOptions::new("pub")))
        .await
        .expect("connects");
    let mut last = None;
    for n in from..to {
        let event = RegisterEvent::new(format!("t/{id}").as_str(), Some(Payload::Json(n.to_string())));
        last = Some(within("register", client.register(event)).await.expect("in the outbox"));
    }
    if let Some(last) = last {
        within("stored", client.registered(last)).await.expect("stored");
    }
    client.close().await;
}

/// Everything `events` receives until nothing comes for `quiet`: (origin, n) in arrival order.
async fn drain(events: &mut Events, expected: usize, quiet: Duration) -> Vec<Event> {
    let mut got = Vec::new();
    while got.len() < expected {
        got.push(within("an event", events.next()).await.expect("the subscriber runs"));
    }
    while let Ok(Some(more)) = tokio::time::timeout(quiet, events.next()).await {
        got.push(more);
    }
    got
}

/// (origin server, number) of a published event; its id names the gateway that admitted it.
fn origin(event: &Event) -> (u64, u64) {
    let from: u64 = event.event_type.segments().nth(1).unwrap().parse().unwrap();
    assert_eq!(event.id.server, from, "an event keeps the id its gateway gave it");
    match &event.payload {
        Some(Payload::Json(n)) => (from, n.parse().unwrap()),
        other => panic!("{other:?}"),
    }
}

/// Each origin's numbers, in arrival order.
fn by_origin(events: &[Event]) -> BTreeMap<u64, Vec<u64>> {
    let mut by: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for event in events {
        let (from, n) = origin(event);
        by.entry(from).or_default().push(n);
    }
    by
}

/// Every gateway publishes `EACH` events at once; every subscriber gets each exactly once (in
/// each publisher's order where `ordered`: one path from each gateway to each other).
async fn everyone_gets_everything_once(n: u64, links: &[(u64, u64)], ordered: bool) {
    let dir = tempfile::tempdir().unwrap();
    let net = network(dir.path(), n, links, 64).await;
    let mut subscribers = Vec::new();
    for gateway in &net.gateways {
        subscribers.push(subscriber(gateway).await);
    }
    let ids: Vec<u64> = (1..=n).collect();
    for gateway in &net.gateways {
        hears_everyone(gateway, &ids).await;
    }
    let publishing: Vec<_> = net.gateways.iter().map(|g| publish(g, 0, EACH)).collect();
    for p in publishing {
        p.await;
    }
    for (gateway, (_, events)) in net.gateways.iter().zip(&mut subscribers) {
        let id = gateway.broker().server_id();
        let got = drain(events, (n * EACH) as usize, Duration::from_millis(300)).await;
        let by = by_origin(&got);
        for origin in &ids {
            let mut numbers = by.get(origin).cloned().unwrap_or_default();
            if !ordered {
                numbers.sort_unstable();
            }
            assert_eq!(
                numbers,
                (0..EACH).collect::<Vec<_>>(),
                "gateway {id}: the events of gateway {origin}, once each"
            );
        }
        assert_eq!(got.len() as u64, n * EACH, "gateway {id}: nothing twice, nothing else");
        let imported = gateway.broker().counters.imported.load(Ordering::Relaxed);
        assert_eq!(imported, (n - 1) * EACH, "gateway {id} imported each foreign event once");
    }
    for gateway in net.gateways {
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_delivers_each_event_once_in_order() {
    everyone_gets_everything_once(4, &[(1, 2), (2, 3), (3, 4)], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_delivers_each_event_once_in_order() {
    everyone_gets_everything_once(5, &[(1, 2), (1, 3), (1, 4), (1, 5)], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_delivers_each_event_once_and_nothing_loops() {
    everyone_gets_everything_once(4, &[(1, 2), (2, 3), (3, 4), (1, 4)], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mesh_delivers_each_event_once() {
    let mesh: Vec<(u64, u64)> = (1..=4).flat_map(|a| (a + 1..=4).map(move |b| (a, b))).collect();
    everyone_gets_everything_once(4, &mesh, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_crosses_no_more_links_than_its_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(dir.path(), 4, &[(1, 2), (2, 3), (3, 4)], 2).await;
    let mut subscribers = Vec::new();
    for gateway in &net.gateways {
        subscribers.push(subscriber(gateway).await);
    }
    // With a TTL of 2 an advert too goes two links: gateway 1 hears of 2 and 3, not of 4.
    hears_everyone(&net.gateways[0], &[2, 3]).await;
    publish(&net.gateways[0], 0, EACH).await;
    for (i, (_, events)) in subscribers.iter_mut().enumerate().take(3) {
        let got = drain(events, EACH as usize, Duration::from_millis(100)).await;
        assert_eq!(by_origin(&got)[&1], (0..EACH).collect::<Vec<_>>(), "gateway {} is within two links", i + 1);
    }
    let far = tokio::time::timeout(Duration::from_millis(500), subscribers[3].1.next()).await;
    assert!(far.is_err(), "three links away, gateway 4 gets nothing: {far:?}");
    assert_eq!(net.gateways[3].broker().counters.imported.load(Ordering::Relaxed), 0);
    for gateway in net.gateways {
        gateway.stop().await;
    }
}

/// A TCP relay between two gateways that can be cut (every connection through it closed, new
/// ones refused) and healed.
struct Cable {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    cutting: tokio::sync::watch::Sender<u64>,
}

impl Cable {
    async fn to(target: SocketAddr) -> Cable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let cutting = tokio::sync::watch::Sender::new(0u64);
        let (flag, cuts) = (cut.clone(), cutting.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    continue;
                }
                let mut cuts = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Cable { addr, cut, cutting }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.cutting.send_modify(|n| *n += 1);
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_heals_and_a_restarted_gateway_resumes_losing_nothing_doubling_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // 1 — 2 — 3, the 1—2 link through a cable; 2 listens on a fixed port, to start again there.
    let one = start(dir.path(), 1, "127.0.0.1:0".parse().unwrap(), &[], 64).await;
    let cable = Cable::to(one.local_addr()).await;
    let two_addr = free_addr();
    let mut two = start(dir.path(), 2, two_addr, &[cable.addr], 64).await;
    let three = start(dir.path(), 3, "127.0.0.1:0".parse().unwrap(), &[two_addr], 64).await;
    let (_sub, mut events) = subscriber(&three).await;
    hears_everyone(&one, &[3]).await;

    publish(&one, 0, 10).await;
    // Cut: what 1 takes meanwhile waits in its store, and crosses once the cable heals.
    cable.cut();
    publish(&one, 10, 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cable.heal();
    publish(&one, 20, 30).await;
    let got = drain(&mut events, 30, Duration::from_millis(100)).await;
    assert_eq!(by_origin(&got)[&1], (0..30).collect::<Vec<_>>(), "through a cut and a heal: each once, in order");

    // The middle gateway stops; 1 goes on taking events; 2 starts again on its store.
    two.stop().await;
    publish(&one, 30, 40).await;
    two = start(dir.path(), 2, two_addr, &[cable.addr], 64).await;
    publish(&one, 40, 50).await;
    let got = drain(&mut events, 20, Duration::from_millis(500)).await;
    assert_eq!(by_origin(&got)[&1], (30..50).collect::<Vec<_>>(), "across the restart: each once, in order");
    for gateway in [one, two, three] {
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_middle_gateway_killed_with_sigkill_resumes_its_links_losing_nothing_doubling_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // 1 — 2 — 3, where 2 is the `rivulet` binary, dialing 1 with `--peer`.
    let one = start(dir.path(), 1, "127.0.0.1:0".parse().unwrap(), &[], 64).await;
    let two_addr = free_addr().to_string();
    let one_addr = one.local_addr().to_string();
    let data = dir.path().join("2");
    let args =
        ["gateway", "--listen", &two_addr, "--server-id", "2", "--data", data.to_str().unwrap(), "--peer", &one_addr];
    let two = common::Running::spawn(&args, dir.path(), &[]);
    assert_eq!(two.listening_addr(), two_addr);
    let three = start(dir.path(), 3, "127.0.0.1:0".parse().unwrap(), &[two_addr.parse().unwrap()], 64).await;
    let (_sub, mut events) = subscriber(&three).await;
    hears_everyone(&one, &[3]).await;

    // 1 takes 300 events while 2 is killed and started again.
    let publishing = tokio::spawn({
        let addr = one.local_addr();
        async move {
            let (client, _) = rivulet_tokio::connect(addr, ClientOptions::new("pub")).await.unwrap();
            let mut last = None;
            for n in 0..300u64 {
                last =
                    Some(client.register(RegisterEvent::new("t/1", Some(Payload::Json(n.to_string())))).await.unwrap());
                if n % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            client.registered(last.unwrap()).await.unwrap();
            client.close().await;
        }
    });
    let mut got = Vec::new();
    while got.len() < 40 {
        got.push(within("an event", events.next()).await.unwrap());
    }
    tokio::task::spawn_blocking(move || two.kill()).await.unwrap();
    let two = common::Running::spawn(&args, dir.path(), &[]);
    assert_eq!(two.listening_addr(), two_addr);
    within("published", publishing).await.unwrap();
    let rest = drain(&mut events, 300 - got.len(), Duration::from_millis(500)).await;
    got.extend(rest);
    assert_eq!(by_origin(&got)[&1], (0..300).collect::<Vec<_>>(), "across kill -9: each once, in order");
    two.terminate();
    one.stop().await;
    three.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_client_allowed_to_federate_links_and_its_events_stay_within_its_acl() {
    let dir = tempfile::tempdir().unwrap();
    let token = [0x42u8; 32];
    let entry = |name: &str, federate: bool| {
        let credential = Credential::from_token(&token, [7; 16]);
        ClientEntry {
            name: name.into(),
            salt: to_hex(&credential.salt),
            stored_key: to_hex(&credential.stored_key),
            register: Some(vec!["t/2".into()]),
            subscribe: None,
            request: None,
            federate,
            files: Default::default(),
        }
    };
    let first = Settings {
        native: NativeSettings { listen: "127.0.0.1:0".parse().unwrap(), tls: None, serial_listen: None },
        server_id: 1,
        data: dir.path().join("1"),
        clients: vec![entry("peer", true), entry("device", false)],
        ..Settings::default()
    };
    let one = Gateway::start(&first).await.unwrap();
    let (_sub, mut events) = subscriber_as(&one, "peer", &token).await;
    let dial = |id: u64, name: &str| {
        let federation = FederationSettings {
            name: name.into(),
            token: Some(to_hex(&token)),
            peers: vec![PeerEntry::plain(one.local_addr().to_string())],
            ping_every: Duration::from_millis(200),
            ..FederationSettings::default()
        };
        settings(dir.path(), id, "127.0.0.1:0".parse().unwrap(), federation)
    };
    let two = Gateway::start(&dial(2, "peer")).await.unwrap();
    let three = Gateway::start(&dial(3, "device")).await.unwrap();
    hears_everyone(&two, &[1]).await;
    // 2 publishes under t/2 (its ACL at 1) and t/9 (not): only t/2 crosses.
    publish(&two, 0, 5).await;
    let (client, _) = rivulet_tokio::connect(two.local_addr(), ClientOptions::new("pub")).await.unwrap();
    client.register_with_response(vec![RegisterEvent::new("t/9", None)]).await.unwrap();
    let got = drain(&mut events, 5, Duration::from_millis(500)).await;
    assert_eq!(by_origin(&got), BTreeMap::from([(2, (0..5).collect())]), "t/9 is outside the peer's register ACL");
    let links: Vec<u64> = one.federation().link_reports().iter().map(|l| l.peer).collect();
    assert_eq!(links, vec![2], "the client that may not federate has no link");
    assert!(three.federation().link_reports().is_empty());
    client.close().await;
    for gateway in [one, two, three] {
        gateway.stop().await;
    }
}

/// A subscriber of `t/*` on `gateway`, logged in as `name` with `token`.
async fn subscriber_as(gateway: &Gateway, name: &str, token: &[u8]) -> (Client, Events) {
    let mut options = ClientOptions { subscriptions: vec!["t/*".into()], ..ClientOptions::new(name) };
    options.challenge = Some(rivulet_gateway::frontend::native::login::answer(name, token.to_vec()));
    within("subscribe", rivulet_tokio::connect(gateway.local_addr(), options)).await.expect("connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_that_dial_each_other_keep_one_link() {
    let dir = tempfile::tempdir().unwrap();
    let (one_addr, two_addr) = (free_addr(), free_addr());
    let one = start(dir.path(), 1, one_addr, &[two_addr], 64).await;
    let two = start(dir.path(), 2, two_addr, &[one_addr], 64).await;
    let (_sub, mut events) = subscriber(&two).await;
    hears_everyone(&one, &[2]).await;
    // Whichever dialed first, the link 1 dialed is the one that stays.
    within("the link 1 dialed", async {
        while !one.federation().link_reports().first().is_some_and(|l| l.dialed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let linked = |g: &Gateway| g.federation().counters.linked.load(Ordering::Relaxed);
    let before = (linked(&one), linked(&two));
    // 2 dials again (after 1 s, 2 s...) and is refused: nothing replaces the link.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!((linked(&one), linked(&two)), before, "no link made since");
    for gateway in [&one, &two] {
        let links = gateway.federation().link_reports();
        assert_eq!(links.len(), 1, "one link");
        assert_eq!(links[0].dialed, gateway.broker().server_id() == 1, "the link the lower server id dialed");
    }
    publish(&one, 0, EACH).await;
    let got = drain(&mut events, EACH as usize, Duration::from_millis(300)).await;
    assert_eq!(by_origin(&got)[&1], (0..EACH).collect::<Vec<_>>());
    for gateway in [one, two] {
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_gets_what_was_admitted_while_it_was_down_before_its_subscribers_return() {
    let dir = tempfile::tempdir().unwrap();
    let one = start(dir.path(), 1, "127.0.0.1:0".parse().unwrap(), &[], 64).await;
    let two_addr = free_addr();
    let two = start(dir.path(), 2, two_addr, &[one.local_addr()], 64).await;
    let (sub, _events) = subscriber(&two).await;
    hears_everyone(&one, &[2]).await;
    sub.close().await;
    two.stop().await;
    // Admitted while 2 is down; 2 comes back with no subscriber yet (it wants nothing now).
    publish(&one, 0, EACH).await;
    let two = start(dir.path(), 2, two_addr, &[one.local_addr()], 64).await;
    let (client, _) =
        within("connect", rivulet_tokio::connect(two.local_addr(), ClientOptions::new("q"))).await.unwrap();
    let query = rivulet_core::owned::Query::Timeseries(rivulet_core::owned::TimeseriesQuery {
        event_types: Some(vec!["t/*".into()]),
        order: rivulet_core::model::Order::Ascending,
        ..Default::default()
    });
    // Imported, then stored: asked until all are there.
    let stored = within("the backlog", async {
        loop {
            let stored = client.query_all(query.clone()).await.unwrap();
            if stored.len() as u64 >= EACH {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(by_origin(&stored)[&1], (0..EACH).collect::<Vec<_>>(), "held at 2, each once");
    client.close().await;
    for gateway in [one, two] {
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_that_want_the_same_discover_each_other_and_link_directly() {
    let dir = tempfile::tempdir().unwrap();
    let discovering = |id: u64, listen: SocketAddr, peers: &[SocketAddr], discover: bool| {
        let federation = FederationSettings {
            name: format!("g{id}"),
            peers: peers.iter().map(|p| PeerEntry::plain(p.to_string())).collect(),
            ping_every: Duration::from_millis(200),
            discover,
            ..FederationSettings::default()
        };
        Settings {
            native: NativeSettings { listen, tls: None, serial_listen: None },
            server_id: id,
            data: dir.path().join(id.to_string()),
            federation,
            ..Settings::default()
        }
    };
    // 1 — 2 — 3: 1 and 3 subscribe to t/*, 2 to nothing; 1 and 3 discover.
    let one = Gateway::start(&discovering(1, free_addr(), &[], true)).await.unwrap();
    let two = Gateway::start(&discovering(2, free_addr(), &[one.local_addr()], false)).await.unwrap();
    let three = Gateway::start(&discovering(3, free_addr(), &[two.local_addr()], true)).await.unwrap();
    let (_s1, _e1) = subscriber(&one).await;
    let (_s3, mut events) = subscriber(&three).await;
    within("a direct link", async {
        while !one.federation().link_reports().iter().any(|l| l.peer == 3) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(three.federation().link_reports().iter().any(|l| l.peer == 1), "the link is there at both ends");
    let twos: Vec<u64> = two.federation().link_reports().iter().map(|l| l.peer).collect();
    assert_eq!(twos, vec![1, 3], "2 wants nothing: nobody discovers it, it keeps its two links");
    // Now a triangle: each event once all the same.
    publish(&one, 0, EACH).await;
    let got = drain(&mut events, EACH as usize, Duration::from_millis(300)).await;
    let mut numbers = by_origin(&got)[&1].clone();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..EACH).collect::<Vec<_>>());
    assert_eq!(got.len() as u64, EACH);
    for gateway in [one, two, three] {
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_over_tls_carries_events_and_a_wrong_ca_gets_no_link() {
    let dir = tempfile::tempdir().unwrap();
    common::certificates(dir.path());
    let tls = rivulet_gateway::config::TlsSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server.key"),
    };
    let first = Settings {
        native: NativeSettings { listen: "127.0.0.1:0".parse().unwrap(), tls: Some(tls), serial_listen: None },
        server_id: 1,
        data: dir.path().join("1"),
        ..Settings::default()
    };
    let one = Gateway::start(&first).await.unwrap();
    let (_sub, mut events) = subscriber(&one).await;
    let dialing = |id: u64, ca: &str| {
        let peer = PeerEntry {
            tls_ca: Some(dir.path().join(ca)),
            tls_name: Some("localhost".into()),
            ..PeerEntry::plain(one.tls_addr().unwrap().to_string())
        };
        let federation = FederationSettings { peers: vec![peer], ..FederationSettings::default() };
        settings(dir.path(), id, "127.0.0.1:0".parse().unwrap(), federation)
    };
    let two = Gateway::start(&dialing(2, "ca.pem")).await.unwrap();
    let stranger = Gateway::start(&dialing(3, "other-ca.pem")).await.unwrap();
    hears_everyone(&two, &[1]).await;
    publish(&two, 0, EACH).await;
    let got = drain(&mut events, EACH as usize, Duration::from_millis(300)).await;
    assert_eq!(by_origin(&got)[&2], (0..EACH).collect::<Vec<_>>(), "over TLS");
    let linked: Vec<u64> = one.federation().link_reports().iter().map(|l| l.peer).collect();
    assert_eq!(linked, vec![2], "a gateway that does not trust the certificate does not link");
    assert!(stranger.federation().link_reports().is_empty());
    for gateway in [one, two, stranger] {
        gateway.stop().await;
    }
}

/// A device's file receiver on a client named `sink`: `rivulet_core::files::Receiver` (ring's
/// SHA-256), the bytes it was told to write kept in memory.
#[derive(Clone)]
struct RingSha(ring::digest::Context);

impl rivulet_core::files::Sha256 for RingSha {
    fn new() -> Self {
        RingSha(ring::digest::Context::new(&ring::digest::SHA256))
    }
    fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finalize(self) -> rivulet_core::files::Digest {
        self.0.finish().as_ref().try_into().expect("32 bytes")
    }
}

type Sink = Arc<std::sync::Mutex<(rivulet_core::files::Receiver<RingSha>, Vec<u8>)>>;

async fn sink(gateway: &Gateway) -> (Client, Sink) {
    use rivulet_core::files::{Answer, FileRequest, Receiver, Step};
    use rivulet_tokio::packet::{PacketReply, PacketRequest};
    // Small chunks, four in flight, as a device takes them.
    let held: Sink = Arc::new(std::sync::Mutex::new((Receiver::new(1 << 20, 700, 4), Vec::new())));
    let state = held.clone();
    let handler = move |request: PacketRequest| {
        let state = state.clone();
        async move {
            let mut state = state.lock().unwrap();
            let (receiver, bytes) = &mut *state;
            let parsed = FileRequest::parse(request.rq_type, &request.payload).map_err(|e| e.to_string())?;
            let answer = match parsed.ok_or("not a file request")? {
                FileRequest::Offer(offer) => receiver.offer(&offer).map_err(|e| e.to_string())?,
                FileRequest::Chunk(chunk) => match receiver.chunk(&chunk).map_err(|e| e.to_string())? {
                    Step::Write { offset, data } => {
                        bytes.truncate(offset as usize);
                        bytes.extend_from_slice(data);
                        receiver.wrote(data)
                    }
                    Step::Answer(answer) => answer,
                },
                FileRequest::Done(done) => Answer::Complete(receiver.done(&done).map_err(|e| e.to_string())?),
                _ => return Err("a device lists and reads no files".to_string()),
            };
            Ok(PacketReply::new(0, postcard::to_allocvec(&answer).unwrap()))
        }
    };
    let connected = rivulet_tokio::connect_with_handler(gateway.local_addr(), ClientOptions::new("sink"), handler);
    let (client, _) = within("the sink connects", connected).await.expect("connects");
    (client, held)
}

/// Waits until each gateway has as many links as `counts` says.
async fn linked(network: &Network, counts: &[usize]) {
    within("the links", async {
        while network.gateways.iter().zip(counts).any(|(g, n)| g.federation().link_reports().len() != *n) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_cross_links_to_gateways_and_to_a_device_behind_one() {
    let dir = tempfile::tempdir().unwrap();
    // g2 dials g1 and g3 dials g2: requests cross each link in both directions.
    let network = network(dir.path(), 3, &[(1, 2), (2, 3)], 8).await;
    linked(&network, &[1, 2, 1]).await;
    let (_sink_client, sink) = sink(&network.gateways[2]).await;
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let path = dir.path().join("fw.bin");
    std::fs::write(&path, &bytes).unwrap();
    let send = |from: usize, to: &str| {
        let args = rivulet_gateway::cli::SendFileArgs {
            path: path.clone(),
            to: Some(to.to_string()),
            file_name: None,
            chunk: None,
            retry_for: 5,
            gateway: network.gateways[from].local_addr().to_string(),
            login: Default::default(),
        };
        within("the send", rivulet_gateway::cli::send_file(args))
    };
    // g1 → g2 (g2's dialed link), g3 → g1 (two links, each way once), g1 → the device on g3.
    send(0, "g2").await.expect("to the next gateway");
    assert!(std::fs::read(dir.path().join("2/files/fw.bin")).unwrap() == bytes);
    send(2, "g2/g1").await.expect("to a gateway two links away");
    assert!(std::fs::read(dir.path().join("1/files/fw.bin")).unwrap() == bytes);
    send(0, "g2/g3/sink").await.expect("to a device behind two links");
    {
        let (receiver, held) = &*sink.lock().unwrap();
        assert!(receiver.verified().is_some() && *held == bytes, "the device holds the file, its hash checked");
    }
    let error = send(0, "g2/nobody").await.expect_err("no such client");
    assert!(error.contains("no client \"nobody\" is connected"), "{error}");
    // A client cannot pass federation messages (events) off as its gateway's, nor ask another
    // gateway what only its own clients may (its status): over a link its gateway dialed (g3 to
    // g2) or one the other dialed (g1 to g2).
    let cases = [
        (0, "g2", 0x7212, "federation messages are not forwarded"),
        (0, "g2/g3", 0x7212, "federation messages are not forwarded"),
        (2, "g2", 0x7200, "request type 0x7200 is not passed to another gateway"),
        (0, "g2", 0x7200, "unknown request type 29184"),
    ];
    for (from, to, rq_type, refusal) in cases {
        use rivulet_gateway::frontend::native::{Forward, RQ_FORWARD, forward};
        let addr = network.gateways[from].local_addr();
        let (client, _) = within("connect", rivulet_tokio::connect(addr, ClientOptions::new("c"))).await.unwrap();
        let asked = Forward { client: to.into(), rq_type, flags: 0, payload: vec![0, 0] };
        let answer = within("a forward", client.request(RQ_FORWARD, 0, forward::encode(&asked).unwrap())).await;
        let error = answer.expect_err("refused").to_string();
        assert!(error.contains(refusal), "g{} to {to}: {error}", from + 1);
        client.close().await;
    }
    for gateway in network.gateways {
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_across_the_network_comes_from_every_gateway_newest_first() {
    use rivulet_gateway::federation::wire::LatestFound;
    use rivulet_gateway::frontend::native::RQ_LATEST_NETWORK;
    let dir = tempfile::tempdir().unwrap();
    let network = network(dir.path(), 3, &[(1, 2), (2, 3)], 8).await;
    linked(&network, &[1, 2, 1]).await;
    // Nobody subscribes: each event stays on the gateway that admitted it.
    let register = |gateway: usize, events: Vec<(&'static str, &'static str)>| {
        let addr = network.gateways[gateway].local_addr();
        async move {
            let (client, _) = within("connect", rivulet_tokio::connect(addr, ClientOptions::new("pub"))).await.unwrap();
            let events =
                events.into_iter().map(|(t, v)| RegisterEvent::new(t, Some(Payload::Json(v.into())))).collect();
            within("registered", client.register_with_response(events)).await.unwrap();
            client.close().await;
        }
    };
    register(0, vec![("x/a", "1"), ("x/s", "\"old\"")]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    register(2, vec![("x/c", "3"), ("x/s", "\"new\"")]).await;
    register(1, vec![("y/b", "2")]).await;
    let (client, _) =
        within("connect", rivulet_tokio::connect(network.gateways[2].local_addr(), ClientOptions::new("asker")))
            .await
            .unwrap();
    let ask = |patterns: Vec<String>| {
        let client = &client;
        async move {
            let reply =
                within("the answer", client.request(RQ_LATEST_NETWORK, 0, postcard::to_allocvec(&patterns).unwrap()))
                    .await
                    .expect("answered");
            let found: LatestFound<'_> = postcard::from_bytes(&reply.payload).unwrap();
            found
                .events
                .iter()
                .map(|e| (e.event_type.to_string(), Event::from(*e).payload, e.id.server))
                .collect::<Vec<_>>()
        }
    };
    let json = |text: &str| Some(Payload::Json(text.into()));
    assert_eq!(
        ask(vec!["x/*".into()]).await,
        [("x/a".into(), json("1"), 1), ("x/c".into(), json("3"), 3), ("x/s".into(), json("\"new\""), 3)],
        "each type once, the newest, from wherever it was admitted"
    );
    let all = ask(Vec::new()).await;
    assert_eq!(all.iter().map(|(t, _, _)| t.as_str()).collect::<Vec<_>>(), ["x/a", "x/c", "x/s", "y/b"]);
    // The gateway's own latest holds only what it has.
    let local = within("local", client.query(rivulet_core::owned::Query::Latest { event_types: None })).await.unwrap();
    let local: Vec<String> = local.events.iter().map(|e| e.event_type.to_string()).collect();
    assert_eq!(local, ["x/c", "x/s"]);
    client.close().await;
    for gateway in network.gateways {
        gateway.stop().await;
    }
}
