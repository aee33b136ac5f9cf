//! Connections that hold on: slowloris, silence, floods, long keepalives, no init.

use std::time::{Duration, Instant};

use rivulet_core::wire::{FrameWriter, Framing};
use rivulet_tokio::{ClientError, ClientOptions, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::gateway::{Gateway, within};
use crate::raw::*;
use crate::steady::*;

/// A slowloris that sends a valid init a byte every 50 ms, then trickles a packet that never
/// completes: the keepalive ends it (a whole packet is what counts, not a byte). A connection
/// that sends nothing is dropped when no init came in time, a silent TLS connection by the
/// handshake timeout, and nobody else waits for them.
///
/// The issue says a byte a second; at 50 ms a byte the init (about 30 bytes) arrives in under
/// two seconds instead of half a minute, the same rule applies, and the test stays short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_silent_connections_end_without_holding_others() {
    const BYTE_EVERY: Duration = Duration::from_millis(50);
    let gateway = Gateway::start_with_tls(&[]);
    let steady = Steady::start(&gateway, "slowloris").await;
    let started = Instant::now();

    let silent = {
        let addr = gateway.addr;
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            send_until_closed(&mut stream, &[]).await;
            started.elapsed()
        })
    };
    let silent_tls = {
        let addr = gateway.tls.expect("a TLS listener");
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            send_until_closed(&mut stream, &[]).await;
            started.elapsed()
        })
    };
    let (accepted_tx, mut accepted) = watch::channel(None);
    let slowloris = {
        let addr = gateway.addr;
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            for byte in init_frame("slowloris") {
                stream.write_all(&[byte]).await.expect("the gateway takes the init");
                tokio::time::sleep(BYTE_EVERY).await;
            }
            let inited = started.elapsed();
            accepted_tx.send_replace(Some(read_answer(&mut stream, "slowloris").await));
            // Then a packet announced at 4000 bytes, a byte every 50 ms: it would take 200 s.
            let (mut reader, mut writer) = stream.into_split();
            let trickle = async {
                for byte in [prefix(4000), vec![0; 4000]].concat() {
                    if writer.write_all(&[byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(BYTE_EVERY).await;
                }
            };
            let mut sink = [0u8; 1024];
            let closed = async { while let Ok(1..) = reader.read(&mut sink).await {} };
            tokio::select! {
                () = closed => {}
                () = trickle => panic!("the whole trickled packet went through"),
            }
            (inited, started.elapsed())
        })
    };

    let answer = within("the slowloris init", accepted.wait_for(Option::is_some)).await.expect("sent").clone();
    assert_eq!(answer, Some(Answer::Accepted), "a slow but valid init is a valid init");
    gateway.clients_become(3).await;
    // While the three hang on, other clients come and go.
    for i in 0..5 {
        a_new_client_gets_through(gateway.addr, &format!("meanwhile-{i}")).await;
    }
    let tls_dropped = within("the TLS handshake timeout", silent_tls).await.expect("silent TLS");
    assert!(gateway.metrics().await.get("rivulet_handshakes_failed_total") >= 1, "the silent TLS handshake");
    let (inited, slowloris_dropped) = within("the slowloris' end", slowloris).await.expect("slowloris");
    let silent_dropped = within("the silent connection's end", silent).await.expect("silent");
    gateway.clients_become(2).await;

    let metrics = gateway.metrics().await;
    assert_eq!(metrics.get("rivulet_bad_input_total"), 0, "slow is not malformed");
    // The silent TLS connection (handshake timeout) and the silent TCP one (no init in time).
    assert_eq!(metrics.get("rivulet_handshakes_failed_total"), 2);
    let steady_run = steady.finish().await;
    gateway.stop();
    println!(
        "slowloris: init took {inited:?}, dropped {slowloris_dropped:?} after the start (keepalive {GATEWAY_KEEPALIVE:?}); \
         silent TCP dropped after {silent_dropped:?}, silent TLS after {tls_dropped:?}; {steady_run}"
    );
}

/// Two hundred raw connections, each with a valid init, against `--max-connections 20` while two
/// normal clients work: at most 20 clients at once, every other connection refused and counted,
/// and once the flood ends new clients get in again.
///
/// This found a bug, fixed: the limit was checked before the handler admitted the client and
/// the link listed after, with awaits between, so inits arriving together could all pass the
/// check and go over the limit (19 clients in the 18 places left, now and then). The check and
/// the listing are now one step under the connections' lock (`adapters/tokio/src/server/`);
/// [`the_connection_limit_holds_when_inits_arrive_together`] pins it down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_held_at_the_limit_and_new_clients_get_in_after_it() {
    const LIMIT: u64 = 20;
    const FLOOD: u64 = 200;
    let gateway = Gateway::start(&["--max-connections", &LIMIT.to_string()]);
    let steady = Steady::start(&gateway, "flood").await;

    // Every connection opens first, then all send their init at once: the inits the gateway
    // takes in (up to a tenth over the limit) arrive together, as in a real flood.
    let (mut admitted, mut refused_full, mut closed) = (Vec::new(), 0, 0);
    for (stream, answer) in inits_together(gateway.addr, "flood", FLOOD as usize).await {
        match answer {
            Answer::Accepted => admitted.push(stream),
            Answer::Refused(reason) => {
                assert!(reason.contains("the server is full"), "{reason}");
                refused_full += 1;
            }
            Answer::Closed => closed += 1,
            Answer::Challenged => panic!("a challenge from a gateway without clients"),
        }
    }
    let admitted_n = admitted.len() as u64;
    let during = gateway.metrics().await;
    assert_eq!(admitted_n, LIMIT - 2, "the flood fills exactly the room the two steady clients leave");
    assert_eq!(during.get("rivulet_connections"), LIMIT, "the limit holds");
    assert_eq!(during.get("rivulet_connections_refused_total"), FLOOD - admitted_n, "every other one counted");
    assert_eq!(refused_full + closed, FLOOD - admitted_n);
    // A well-behaved newcomer is refused while the flood holds the room: with the reason, or
    // closed at once while refused flood connections are still finishing their close.
    match within("a client during the flood", connect(gateway.addr, ClientOptions::new("during"))).await {
        Err(ClientError::Refused(reason)) => assert!(reason.contains("full"), "{reason}"),
        Err(closed) => assert!(matches!(closed, ClientError::Disconnected | ClientError::Io(_)), "{closed:?}"),
        Ok(_) => panic!("a client got in beyond the limit"),
    }

    // The flood ends: the first newcomer after it gets in once the gateway has seen the closes.
    drop(admitted);
    let ended = Instant::now();
    let (newcomer, _) = within("a client after the flood", async {
        loop {
            match connect(gateway.addr, ClientOptions::new("after-flood")).await {
                Ok(connected) => break connected,
                // Still full until the gateway has seen the flood's connections close.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    let recovered = ended.elapsed();
    register_all(&newcomer, "after/flood", 10).await;
    let status = gateway.status().await;
    let names: Vec<&str> =
        status["clients"].as_array().expect("clients").iter().filter_map(|c| c["name"].as_str()).collect();
    assert!(!names.iter().any(|name| name.starts_with("flood-")), "the flood is gone: {names:?}");
    for name in ["steady-sub", "steady-pub", "after-flood"] {
        assert!(names.contains(&name), "{name} is connected: {names:?}");
    }
    newcomer.close().await;
    let steady_run = steady.finish().await;
    let refused = gateway.metrics().await.get("rivulet_connections_refused_total");
    gateway.stop();
    println!(
        "flood: {FLOOD} connections against {LIMIT}: {admitted_n} admitted, {refused_full} refused as full, \
         {closed} closed at once; refused counter {refused}; a new client got in {recovered:?} after the flood; \
         {steady_run}"
    );
}

/// A client that asks for the longest keepalive there is (`u32::MAX` ms, 50 days) and goes
/// silent gets the gateway's longest (`--max-keepalive-s`), is counted, and is closed after twice
/// that: with `--max-connections 1` the place comes free for the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_cannot_ask_for_a_keepalive_longer_than_the_gateways_longest() {
    let gateway = Gateway::start(&["--max-connections", "1", "--max-keepalive-s", "1"]);
    let mut stream = within("connect", TcpStream::connect(gateway.addr)).await.expect("a TCP connection");
    let forever = rivulet_core::time::Duration::from_millis(u64::from(u32::MAX));
    let (_, init) = client_machine_with("forever", forever);
    stream.write_all(&init).await.expect("send the init");
    assert_eq!(read_answer(&mut stream, "forever").await, Answer::Accepted);
    gateway.clients_become(1).await;
    assert_eq!(gateway.metrics().await.get("rivulet_keepalive_capped_total"), 1);
    // Silent from here on (the gateway's pings go unanswered): it ends the link after about
    // 2 s, not 100 days, and the place is free again.
    let mut sink = [0u8; 1024];
    within("the gateway closing the silent client", async {
        while !matches!(stream.read(&mut sink).await, Ok(0) | Err(_)) {}
    })
    .await;
    gateway.clients_become(0).await;
    a_new_client_gets_through(gateway.addr, "next").await;
    gateway.stop();
}

/// The bug the flood found, pinned down: with one place left, eight inits arriving together
/// let in at most one client, round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_holds_when_inits_arrive_together() {
    const LIMIT: usize = 100;
    const ROUNDS: usize = 20;
    let gateway = Gateway::start(&["--max-connections", &LIMIT.to_string()]);
    let mut held = Vec::new();
    for i in 0..LIMIT - 1 {
        let (stream, answer) = raw_init(gateway.addr, &format!("held-{i}")).await;
        assert_eq!(answer, Answer::Accepted, "held-{i}");
        held.push(stream);
    }
    let mut admitted_per_round = Vec::new();
    for round in 0..ROUNDS {
        let answers = inits_together(gateway.addr, &format!("round-{round}"), 8).await;
        let admitted = answers.iter().filter(|(_, answer)| *answer == Answer::Accepted).count();
        assert!(admitted <= 1, "round {round}: {admitted} clients admitted to the one place left");
        admitted_per_round.push(admitted);
        drop(answers);
        gateway.clients_become(LIMIT as u64 - 1).await;
    }
    assert!(admitted_per_round.contains(&1), "the place left was taken in some round: {admitted_per_round:?}");
    drop(held);
    gateway.stop();
}

/// Found as a bug, fixed since (the test shows the fix): on plain TCP nothing but the keepalive
/// ends a connection that never sends an init, and any whole packet resets the keepalive, even one
/// the link drops unanswered before an init (a request on an unknown channel). Connections beyond a
/// tenth over `--max-connections` that have not sent an init are closed at once, so that many such
/// connections, each sending a packet of a few bytes every 15 s, shut every new client out for as
/// long as they like. `ServerOptions::handshake_timeout` (10 s) bounds only the TLS handshake.
/// Here twelve of them hold a gateway with `--max-connections 10` past twice the keepalive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_init_do_not_hold_the_gateway_for_good() {
    const LIMIT: usize = 10;
    let gateway = Gateway::start(&["--max-connections", &LIMIT.to_string()]);
    let mut frame = [0u8; 16];
    let mut out = FrameWriter::new(&mut frame, Framing::Stream);
    out.push_repr(&rivulet_core::wire::PacketRepr::request(7, 1, 0, 0, &[])).expect("a tiny packet");
    let packet = out.pending().to_vec();
    let mut holders = JoinSet::new();
    for _ in 0..LIMIT + LIMIT / 10 + 1 {
        let (addr, packet) = (gateway.addr, packet.clone());
        holders.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            while stream.write_all(&packet).await.is_ok() {
                tokio::time::sleep(Duration::from_secs(15)).await;
            }
        });
    }
    // The gateway drops a connection without an accepted init after 10 s (the server's
    // `init_timeout`), whatever it sends meanwhile.
    let waited = Duration::from_secs(10 + 5);
    tokio::time::sleep(waited).await;
    let newcomer = within("a client", connect(gateway.addr, ClientOptions::new("newcomer"))).await;
    assert!(
        newcomer.is_ok(),
        "{} connections that never sent an init still shut a new client out after {waited:?}: {:?}",
        LIMIT + LIMIT / 10 + 1,
        newcomer.err()
    );
    let metrics = gateway.metrics().await;
    assert!(metrics.get("rivulet_handshakes_failed_total") >= (LIMIT + LIMIT / 10 + 1) as u64, "counted");
    holders.abort_all();
    gateway.stop();
}

/// With `ulimit -n 64`, 150 silent connections take every file descriptor: `accept` fails
/// (`EMFILE`) until some end. The gateway waits longer while it fails, logs the first failure of
/// the burst and its end (not a warning every 50 ms: 749 of them in 40 s, before), counts each,
/// and takes clients again once the connections are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_gateway_backs_off_and_logs_once() {
    let gateway = Gateway::start_with_fd_limit(64, &[]);
    let mut silent = Vec::new();
    for _ in 0..150 {
        // The kernel completes the handshake from its backlog even when the gateway cannot
        // accept: each connect succeeds.
        silent.push(within("connect", TcpStream::connect(gateway.addr)).await.expect("a TCP connection"));
    }
    let failures = gateway.metric_reaches("rivulet_accept_failures_total", 1).await;
    // Held for 3 s: a failure every 50 ms would be 60 more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = gateway.metrics().await.get("rivulet_accept_failures_total");
    drop(silent);
    a_new_client_gets_through(gateway.addr, "after-emfile").await;
    let log = gateway.stop();
    let warnings = log.matches("rivulet accept failed").count();
    let ends = log.matches("rivulet accepts again after").count();
    assert!(warnings >= 1 && warnings == ends, "each burst logged once, with its end:\n{log}");
    assert!(warnings <= 3, "{warnings} bursts logged");
    assert!(held < failures + 20, "{held} failures in 3 s: it backs off");
    println!("EMFILE: {held} accept failures counted, {warnings} bursts logged");
}

/// A client made by `rivulet credential NAME`: its token and its `[[clients]]` entry.
fn credential(name: &str) -> (Vec<u8>, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = crate::common::run(&["credential", name], dir.path(), &[]);
    assert!(output.status.success(), "rivulet credential");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let token = stderr
        .split_whitespace()
        .find(|word| word.len() == 64 && word.chars().all(|c| c.is_ascii_hexdigit()))
        .expect("the token on stderr");
    let token = (0..64).step_by(2).map(|i| u8::from_str_radix(&token[i..i + 2], 16).expect("hex")).collect();
    (token, String::from_utf8_lossy(&output.stdout).into_owned())
}

/// One address floods challenge-only inits (it never answers): past 64 challenges waiting for
/// it, its inits are refused ("too many logins in progress"), and a real client from another
/// address logs in at once (4,200 such inits used to lock everyone out for 8 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_from_one_address_leaves_room_for_the_others() {
    const FLOOD: usize = 100;
    let (token, entry) = credential("dev");
    let gateway = Gateway::start_with_config(&entry, &[]);
    let mut flood = Vec::new();
    let (mut challenged, mut busy) = (0, 0);
    for i in 0..FLOOD {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.bind("127.0.0.2:0".parse().expect("an address")).expect("127.0.0.2 is loopback too");
        let mut stream = within("connect", socket.connect(gateway.addr)).await.expect("a TCP connection");
        match init_on(&mut stream, &format!("flood-{i}")).await {
            Answer::Challenged => challenged += 1,
            Answer::Refused(reason) => {
                assert!(reason.contains("too many logins in progress"), "{reason}");
                busy += 1;
            }
            other => panic!("flood init {i}: {other:?}"),
        }
        flood.push(stream);
    }
    assert_eq!((challenged, busy), (64, FLOOD - 64), "64 challenges wait for one address");
    let options = ClientOptions {
        challenge: Some(rivulet_gateway::frontend::native::login::answer("dev", token)),
        ..ClientOptions::new("dev")
    };
    let (client, _) = within("a login meanwhile", connect(gateway.addr, options)).await.expect("logged in");
    client.close().await;
    drop(flood);
    gateway.stop();
}
