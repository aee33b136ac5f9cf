//! Random clients against an in-process gateway: what each does is drawn from a seed (raw
//! connections that stall in an init or a frame, garbage, floods of registrations, queries and
//! pings, subscribers that never read, connections dropped at once), while a witness registers
//! and receives numbered events. Whatever the draw:
//!
//! - the witness gets every event it registered, once, in order, on its first link, and the
//!   store has them all;
//! - every registration a flooding client had acknowledged is stored;
//! - the notifications queued for all subscribers never pass the gateway's byte budget;
//! - a new client gets in at the end.
//!
//! Seeds 1 to 3 run in CI; `RIVULET_RANDOM_SEEDS=1-200` runs more.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use rivulet_gateway::config::{NativeSettings, Settings};

use crate::common::PATIENCE;
use rivulet_gateway::gateway::Gateway;
use rivulet_tokio::model::{Payload, Query, RegisterEvent};
use rivulet_tokio::{Client, ClientOptions, Events, connect};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::gateway::within;
use crate::raw::{Rng, a_new_client_gets_through, init_frame, junk_frames, prefix, read_answer};
use crate::steady::{number, numbered, stored_numbers};

/// Bytes queued for all subscribers before the one holding the most is cut off.
const TOTAL_BYTES: u64 = 4 << 20;
const ACTORS: u64 = 12;
const ACTIONS: u64 = 8;
const WITNESSED: u64 = 300;

fn seeds() -> Vec<u64> {
    let Ok(range) = std::env::var("RIVULET_RANDOM_SEEDS") else { return vec![1, 2, 3] };
    let (from, to) = range.split_once('-').unwrap_or((&range, &range));
    (from.parse().expect("a seed")..=to.parse().expect("a seed")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_clients_cannot_hurt_the_others() {
    for seed in seeds() {
        run(seed).await;
    }
}

async fn run(seed: u64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let settings = Settings {
        native: NativeSettings { listen: "127.0.0.1:0".parse().expect("an address"), ..NativeSettings::default() },
        data: dir.path().to_path_buf(),
        max_packet: 8192,
        notify_queue: 256,
        notify_queue_bytes: 1 << 20,
        notify_total_bytes: TOTAL_BYTES,
        max_connections: 64,
        query_scan: 20_000,
        commit_delay: Duration::from_millis(2),
        ..Settings::default()
    };
    let gateway = Gateway::start(&settings).await.expect("the gateway starts");
    let addr = gateway.local_addr();

    // The budget, watched while the actors run.
    let (stop, broker) = (Arc::new(AtomicBool::new(false)), gateway.broker().clone());
    let watching = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut most = 0;
            while !stop.load(Relaxed) {
                most = most.max(broker.fanout().stats().queued_bytes);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            most
        })
    };

    let witness_options = ClientOptions { subscriptions: vec!["witness/*".into()], ..ClientOptions::new("witness") };
    let (witness, mut events) = within("the witness", connect(addr, witness_options)).await.expect("connect");
    let mut actors = JoinSet::new();
    for actor in 0..ACTORS {
        actors.spawn(act(addr, Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (actor + 1)), actor));
    }
    // The witness reads as it goes, as a client that keeps up does.
    let reading = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < WITNESSED as usize {
            match tokio::time::timeout(PATIENCE, events.next()).await {
                Ok(Some(event)) => got.push(number(&event)),
                _ => break,
            }
        }
        got
    });
    let mut last = 0;
    for n in 0..WITNESSED {
        last = within("the witness registers", witness.register(numbered("witness/n", n))).await.expect("queued");
        if n % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    within("the witness's events stored", witness.registered(last)).await.expect("stored");
    let got = reading.await.expect("the witness reads");
    assert_eq!(got, (0..WITNESSED).collect::<Vec<_>>(), "seed {seed}: the witness's events in order, once");
    let mut stored_by_actors = Vec::new();
    while let Some(done) = actors.join_next().await {
        stored_by_actors.extend(done.expect("an actor"));
    }
    stop.store(true, Relaxed);
    let most = watching.await.expect("the watcher");
    assert!(most <= TOTAL_BYTES, "seed {seed}: {most} bytes queued for subscribers, over {TOTAL_BYTES}");
    assert_eq!(witness.state().links, 1, "seed {seed}: the witness kept its link");
    assert_eq!(stored_numbers(&witness, "witness/*", 1000).await, (0..WITNESSED).collect::<Vec<_>>());
    for (ty, acknowledged) in stored_by_actors {
        let stored = within("an actor's events", witness.query_all(by_type(&ty, None))).await.expect("a query");
        assert!(
            stored.len() as u64 >= acknowledged,
            "seed {seed}: {ty}: {acknowledged} acknowledged, {} stored",
            stored.len()
        );
    }
    a_new_client_gets_through(addr, "after-random").await;
    witness.close().await;
    gateway.stop().await;
}

fn by_type(ty: &str, max_results: Option<u32>) -> Query {
    Query::Timeseries(rivulet_tokio::model::TimeseriesQuery {
        event_types: Some(vec![ty.into()]),
        max_results,
        ..Default::default()
    })
}

/// One random client: `ACTIONS` things drawn from `rng`. Returns, for each flood of
/// registrations, its type and how many the gateway acknowledged.
async fn act(addr: std::net::SocketAddr, mut rng: Rng, actor: u64) -> Vec<(String, u64)> {
    let mut acknowledged = Vec::new();
    let mut held: Vec<TcpStream> = Vec::new();
    let mut clients: Vec<Client> = Vec::new();
    let mut sinks: Vec<(Client, Events)> = Vec::new();
    for step in 0..ACTIONS {
        let pause = Duration::from_millis(rng.below(20));
        match rng.below(7) {
            // A valid init, then silence (held until the actor ends).
            0 => {
                if let Ok(mut stream) = TcpStream::connect(addr).await
                    && stream.write_all(&init_frame(&format!("quiet-{actor}"))).await.is_ok()
                {
                    let _ = tokio::time::timeout(Duration::from_secs(5), read_answer(&mut stream, "quiet")).await;
                    held.push(stream);
                }
            }
            // Garbage, after an init or not.
            1 => {
                if let Ok(mut stream) = TcpStream::connect(addr).await {
                    if rng.below(2) == 0 {
                        let _ = stream.write_all(&init_frame(&format!("garbler-{actor}"))).await;
                    }
                    let _ = stream.write_all(&junk_frames(&mut rng, 16)).await;
                    held.push(stream);
                }
            }
            // Half a frame, then a stall.
            2 => {
                if let Ok(mut stream) = TcpStream::connect(addr).await {
                    let len = 100 + rng.below(4000);
                    let _ = stream.write_all(&[prefix(len), rng.bytes((len / 2) as usize)].concat()).await;
                    held.push(stream);
                }
            }
            // A flood of registrations of random sizes, some over the gateway's packets.
            3 => {
                let ty = format!("flood/{actor}/{step}");
                if let Ok((client, _)) = connect(addr, ClientOptions::new(format!("flood-{actor}"))).await {
                    let (mut last, mut ok) = (None, 0);
                    for n in 0..50 + rng.below(150) {
                        let size = 8 + rng.below(9000) as usize;
                        let mut data = rng.bytes(size);
                        data[..8].copy_from_slice(&n.to_be_bytes());
                        let event = RegisterEvent::new(ty.as_str(), Some(Payload::Binary { kind: "r".into(), data }));
                        match client.register(event).await {
                            Ok(seq) => last = Some(seq),
                            Err(_) => continue, // over the gateway's max_packet: refused here, not sent
                        }
                        ok += 1;
                    }
                    if let Some(last) = last
                        && tokio::time::timeout(Duration::from_secs(30), client.registered(last))
                            .await
                            .is_ok_and(|r| r.is_ok())
                    {
                        acknowledged.push((ty, ok));
                    }
                    clients.push(client);
                }
            }
            // Queries and pings, not waiting for each.
            4 => {
                if let Ok((client, _)) = connect(addr, ClientOptions::new(format!("asker-{actor}"))).await {
                    let client = Arc::new(client);
                    let mut asking = JoinSet::new();
                    for _ in 0..6 {
                        let client = client.clone();
                        let query = match rng.below(2) {
                            0 => by_type("flood/*", Some(20)),
                            _ => Query::Latest { event_types: None },
                        };
                        asking.spawn(async move {
                            let _ = client.query(query).await;
                            let _ = client.ping().await;
                        });
                    }
                    while asking.join_next().await.is_some() {}
                }
            }
            // A subscriber to everything that never reads.
            5 => {
                let options = ClientOptions {
                    subscriptions: vec!["*".into()],
                    events: 4,
                    window: 4,
                    ..ClientOptions::new(format!("sink-{actor}"))
                };
                if let Ok(sink) = connect(addr, options).await {
                    sinks.push(sink); // its events kept, never read
                }
            }
            // Connected and gone at once.
            _ => drop(TcpStream::connect(addr).await),
        }
        tokio::time::sleep(pause).await;
    }
    drop((held, clients, sinks));
    acknowledged
}
