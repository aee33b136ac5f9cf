//! Memory a flood of connections leaves behind.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::gateway::{Gateway, within};
use crate::raw::a_new_client_gets_through;

/// Three floods of 1000 connections that never send a byte. Each costs little while it lasts (a
/// link's 64 KiB buffers take memory only once written: before, 62 KiB a connection, 3000 of
/// them 7 → 195 MB), and once they are gone the gateway's memory comes back near where it was
/// (before, glibc kept it: four floods of 3000 left 549 MB with no client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_silent_connections_cost_little_and_their_memory_comes_back() {
    const FLOOD: usize = 1000;
    const FLOODS: usize = 3;
    let gateway = Gateway::start_with_fd_limit(4 * FLOOD as u64, &[]);
    let (base, _) = gateway.memory_kib();
    let mut per_connection = Vec::new();
    for round in 1..=FLOODS {
        let mut flood = Vec::new();
        for _ in 0..FLOOD {
            flood.push(within("connect", TcpStream::connect(gateway.addr)).await.expect("a TCP connection"));
        }
        // Once the gateway has accepted them all.
        gateway.metric_reaches("rivulet_connections_accepted_total", (round * FLOOD) as u64).await;
        let (held, _) = gateway.memory_kib();
        per_connection.push(held.saturating_sub(base) / FLOOD as u64);
        drop(flood);
        // Back near where it was: within 16 MiB of the start (the gateway trims its allocator once
        // connections stop coming).
        within("memory given back", async {
            while gateway.memory_kib().0 > base + 16 * 1024 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
    }
    let (after, peak) = gateway.memory_kib();
    // 45 KiB here (the connection's task, its core machine's alias tables): under 56, where
    // the buffers' pages alone made 62.
    for kib in &per_connection {
        assert!(*kib < 56, "a silent connection held {kib} KiB: {per_connection:?}");
    }
    a_new_client_gets_through(gateway.addr, "after-floods").await;
    gateway.stop();
    println!(
        "floods: {FLOODS} of {FLOOD} silent connections, KiB each {per_connection:?}; RSS {base} KiB at the start, \
         {after} KiB after, peak {peak} KiB"
    );
}
