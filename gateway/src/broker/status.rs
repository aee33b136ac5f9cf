//! The gateway's status (`starting`, `operational`, `standby` once the store failed, `stopping`),
//! which the broker announces through every front-end, and the report `rivulet status` prints:
//! the broker's counters and, front-end by front-end, listeners, counters and clients.

use std::sync::atomic::Ordering::Relaxed;

use rivulet_core::model::Status;
use tokio::sync::watch;

use super::Broker;

impl Broker {
    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// Changes the status and announces it through every front-end; returns once each has
    /// queued it to its clients (a front-end that starts later takes it from [`Broker::status`]).
    pub async fn set_status(&self, status: Status) {
        self.status.send_replace(status);
        for frontend in self.frontends() {
            frontend.announce(status).await;
        }
    }

    /// Why the store takes no more events, once a commit failed (until a restart).
    pub fn store_failed(&self) -> Option<String> {
        self.store_failed.get().map(ToString::to_string)
    }

    /// The status now, and each change after it.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// What `rivulet status` shows.
    pub fn report(&self) -> serde_json::Value {
        let frontends = self.frontends();
        let mut clients = Vec::new();
        let mut reports = Vec::new();
        let mut links = Vec::new();
        for frontend in &frontends {
            links.extend(frontend.links().iter().map(|l| {
                let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
                serde_json::json!({
                    "peer": l.peer,
                    "name": l.name,
                    "addr": l.addr,
                    "dialed": l.dialed,
                    "up_s": l.up.as_secs(),
                    "sent": l.sent,
                    "received": l.received,
                    "pings": l.pings,
                    "rtt_ms": { "last": ms(l.rtt_last), "min": ms(l.rtt_min), "avg": ms(l.rtt_mean), "max": ms(l.rtt_max) },
                })
            }));
            let listed = frontend.clients();
            clients.extend(listed.iter().map(|c| {
                serde_json::json!({
                    "frontend": frontend.name(),
                    "id": c.id,
                    "name": c.name,
                    "peer": c.peer.to_string(),
                    "subscriptions": c.subscriptions,
                    "persisted": c.persisted,
                    "registered": c.registered,
                    "refused": c.refused,
                    "notified": c.notified,
                })
            }));
            let stats = frontend.stats();
            let listeners: Vec<serde_json::Value> = frontend
                .listeners()
                .iter()
                .map(|l| serde_json::json!({ "kind": l.kind, "addr": l.addr.to_string() }))
                .collect();
            reports.push(serde_json::json!({
                "name": frontend.name(),
                "listeners": listeners,
                "connections": listed.len(),
                "notified": stats.notified,
                "logins_refused": stats.logins_refused,
                "registrations_refused": stats.registrations_refused,
                "too_slow": stats.too_slow,
                "bad_input": stats.bad_input,
                "too_large": stats.too_large,
                "keepalive_capped": stats.keepalive_capped,
            }));
        }
        let stats = self.store.stats();
        let (_, commit_seconds, commits) = self.counters.commit_latency.snapshot();
        serde_json::json!({
            "server_id": self.config.server_id,
            "status": format!("{:?}", self.status()).to_lowercase(),
            "connections": clients.len(),
            "clients": clients,
            "frontends": reports,
            "links": links,
            "imported": self.counters.imported.load(Relaxed),
            "import_duplicates": self.counters.import_duplicates.load(Relaxed),
            "events_in": self.counters.events_in.load(Relaxed),
            "events_volatile": self.counters.events_volatile.load(Relaxed),
            "commits": self.counters.commits.load(Relaxed),
            "commit_failures": self.counters.commit_failures.load(Relaxed),
            "store_failed": self.store_failed(),
            "queries_cancelled": self.query_counters.cancelled.load(Relaxed),
            "queries_scan_spent": self.query_counters.scan_spent.load(Relaxed),
            "mean_commit_ms": if commits > 0 { commit_seconds * 1000.0 / commits as f64 } else { 0.0 },
            "cpu_seconds": process_cpu_seconds(),
            "resident_bytes": crate::limits::resident_bytes(),
            "store": match stats {
                Ok(stats) => serde_json::json!({ "events": stats.events, "bytes": stats.bytes }),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            },
        })
    }
}

/// CPU time (user + system) this process has used, from `/proc/self/stat` (Linux); `None`
/// elsewhere.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, so split after its closing paren):
    // utime and stime are the 12th and 13th, in clock ticks: USER_HZ, which Linux fixes at 100 for
    // /proc whatever the kernel's own tick rate.
    let after = stat.rsplit_once(')')?.1;
    let mut fields = after.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
