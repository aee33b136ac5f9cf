//! Memory freed by connections that came and went, given back to the system.
//!
//! glibc's malloc keeps what it freed in its arenas and returns only the top of the heap: after
//! a flood of 3,000 connections the gateway held 150 MB with none of them left, until a
//! `malloc_trim(0)` gave all but 1 MB back (jemalloc and mimalloc, tried in its place, kept 100
//! and 300 MB: docs/RELIABILITY.md). So after many connections ended the gateway trims, once
//! they have stopped coming. Elsewhere than on glibc this does nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;

/// How often the connection counters are looked at.
const EVERY: Duration = Duration::from_secs(5);
/// Connections accepted since the last trim that make another one worth it.
const CHURN: u64 = 256;

/// Trims once at least [`CHURN`] connections were accepted since the last trim and none came in
/// the last [`EVERY`] (a flood over, or a wave of reconnects), until the task is aborted.
pub async fn trim_after_churn(broker: Arc<Broker>) {
    let accepted = || broker.frontends().iter().map(|f| f.stats().accepted).sum::<u64>();
    let mut at_trim = accepted();
    let mut last = at_trim;
    loop {
        tokio::time::sleep(EVERY).await;
        let now = accepted();
        if now.saturating_sub(at_trim) >= CHURN && now == last {
            let trimmed = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
            tracing::debug!("{} connections since the last trim; memory trimmed: {trimmed}", now - at_trim);
            at_trim = now;
        }
        last = now;
    }
}

/// Gives the allocator's free pages back to the system; whether any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim only walks glibc's own arenas, under their locks; any thread may call it.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}
