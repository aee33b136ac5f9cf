//! `rivulet bench --idle-sessions N`: sessions that log in, subscribe and then do nothing, held
//! open while the measured load runs; what the gateway's resident memory grew by for them, per
//! session. Their patterns match none of the load's events, so the load shows what routing past
//! them costs.

use rivulet_tokio::{Client, Events};

use super::BenchArgs;
use crate::cli::connect_as;

/// Sessions connected at once while opening them.
const AT_ONCE: usize = 100;

/// Idle sessions, held open until dropped (closed by the gateway when they go).
pub(super) struct Idle {
    /// The clients and their (unread) event streams.
    _sessions: Vec<(Client, Events)>,
    pub(super) sessions: u32,
    pub(super) subscriptions: u64,
    /// The gateway's resident memory before and after they connected.
    pub(super) resident_before: Option<u64>,
    pub(super) resident_after: Option<u64>,
}

impl Idle {
    /// Bytes of gateway memory per idle session, if the gateway reports its memory.
    pub(super) fn bytes_per_session(&self) -> Option<u64> {
        let grown = self.resident_after?.checked_sub(self.resident_before?)?;
        grown.checked_div(u64::from(self.sessions))
    }
}

/// Opens `args.idle_sessions` sessions, each subscribed to `args.idle_patterns` patterns of its
/// own under `idle/RUN/N/`, and measures the gateway's memory around them.
pub(super) async fn open(args: &BenchArgs, run: &str, status: &Client) -> Result<Idle, String> {
    let resident_before = resident(status).await;
    let mut sessions = Vec::with_capacity(args.idle_sessions as usize);
    let mut pending = tokio::task::JoinSet::new();
    for n in 0..args.idle_sessions {
        let (gateway, login) = (args.gateway.clone(), args.login.clone());
        let patterns: Vec<_> = (0..args.idle_patterns).map(|k| format!("idle/{run}/{n}/p{k}/*")).collect();
        pending.spawn(async move {
            connect_as(&gateway, &login, &format!("bench-idle-{n}"), |options| {
                options.subscriptions = patterns.iter().map(|p| p.as_str().into()).collect();
            })
            .await
        });
        if pending.len() >= AT_ONCE
            && let Some(done) = pending.join_next().await
        {
            sessions.push(done.map_err(|e| format!("an idle session failed: {e}"))??);
        }
    }
    while let Some(done) = pending.join_next().await {
        sessions.push(done.map_err(|e| format!("an idle session failed: {e}"))??);
    }
    // Let the gateway settle what the logins left behind before reading its memory.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let resident_after = resident(status).await;
    Ok(Idle {
        _sessions: sessions,
        sessions: args.idle_sessions,
        subscriptions: u64::from(args.idle_sessions) * u64::from(args.idle_patterns),
        resident_before,
        resident_after,
    })
}

/// The gateway's resident memory, from its status.
async fn resident(client: &Client) -> Option<u64> {
    super::status(client).await?["resident_bytes"].as_u64()
}
