//! `rivulet gateway`: opens the store, starts the broker and listens until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rivulet_core::model::Status;
use rivulet_tokio::server::{Server, ServerOptions};

use crate::broker::{Broker, CommitPolicy};
use crate::store::RedbStore;

/// Where the gateway listens when nothing says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7780";

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Address for Rivulet clients.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Directory of the event store (created if missing).
    #[arg(long, default_value = "rivulet-data")]
    pub data: PathBuf,
    /// This gateway's server id in event ids.
    #[arg(long, default_value_t = 1)]
    pub server_id: u64,
    /// Write a group commit once this many events wait...
    #[arg(long, default_value_t = 1000)]
    pub commit_events: usize,
    /// ...or this many milliseconds after the first one arrived.
    #[arg(long, default_value_t = 5)]
    pub commit_ms: u64,
    /// Notifications queued per client before a client that stays behind is disconnected.
    #[arg(long, default_value_t = 1024)]
    pub notify_queue: usize,
}

/// Runs the gateway until Ctrl-C or SIGTERM, then closes every client and the store.
pub async fn run(args: GatewayArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.data)
        .map_err(|e| format!("cannot create the data directory {}: {e}", args.data.display()))?;
    let path = args.data.join("events.redb");
    let store = RedbStore::open(&path).map_err(|e| format!("cannot open the store {}: {e}", path.display()))?;
    let policy =
        CommitPolicy { max_events: args.commit_events.max(1), max_delay: Duration::from_millis(args.commit_ms) };
    let broker = Broker::start(Arc::new(store), args.server_id, policy).map_err(|e| format!("store: {e}"))?;
    let options = ServerOptions {
        server_id: args.server_id,
        status: Status::Starting,
        notify_queue: args.notify_queue,
        ..ServerOptions::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e} (is another gateway running? try --listen)", args.listen))?;
    let server = Arc::new(Server::from_listener(listener, options, broker.clone()).map_err(|e| e.to_string())?);
    broker.attach(server.clone());
    server.set_status(Status::Operational).await;
    println!("rivulet gateway listening on {} (store {})", server.local_addr(), path.display());
    println!("  subscribe: rivulet sub --gateway {} 'sensor/*'", server.local_addr());
    println!("  publish:   rivulet pub --gateway {} sensor/room1/temp 21.5", server.local_addr());
    shutdown_signal().await;
    println!("rivulet gateway stopping");
    server.set_status(Status::Stopping).await;
    match Arc::try_unwrap(server) {
        Ok(server) => server.shutdown().await,
        Err(server) => drop(server),
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
