//! The exactly-once session table: for each client session, the next sequence number handed
//! to the handler and the next one not yet durable (docs/PROTOCOL.md §5.1). Resume answers what
//! is durable; a resent registration that was already taken (a [`Arrival::Replay`] against the
//! first, the core's rule) is not stored again.

use std::sync::Arc;

use rivulet_core::session::Arrival;
use rivulet_core::session::message::seq_at_or_after;
use tokio::sync::watch;

use super::handler::{ClientInfo, HandlerError, Registration, ServerHandler, guarded};
use super::{Shared, lock};

/// A client session's registrations as the server has them: the next sequence number handed to
/// the handler (`admitted`, under a lock that keeps two links of a session in order) and the next
/// one not yet durable (`durable`). Resume answers `durable`; a resent registration below
/// `admitted` is not stored again, and acknowledged only once `durable` passes it.
pub(super) struct SessionCell {
    admitted: tokio::sync::Mutex<u32>,
    progress: watch::Sender<Progress>,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    durable: u32,
    /// A durable write failed: nothing taken after it becomes durable (the handler's promise).
    failed: bool,
    /// Batches taken and not yet resolved.
    in_flight: u32,
}

impl SessionCell {
    pub(super) fn new(next_seq: u32) -> Arc<Self> {
        Arc::new(SessionCell {
            admitted: tokio::sync::Mutex::new(next_seq),
            progress: watch::Sender::new(Progress { durable: next_seq, failed: false, in_flight: 0 }),
        })
    }

    pub(super) fn durable(&self) -> u32 {
        self.progress.borrow().durable
    }

    /// A batch taken up to `next` (exclusive) resolved: durable, or not.
    fn resolved(&self, next: u32, durable: bool) {
        self.progress.send_modify(|p| {
            p.in_flight = p.in_flight.saturating_sub(1);
            if !durable {
                p.failed = true;
            } else if seq_at_or_after(next, p.durable) {
                p.durable = next;
            }
        });
    }

    /// Resolves once registrations up to `next` (exclusive) are durable.
    fn wait_durable(self: Arc<Self>, next: u32) -> Durable {
        Box::pin(async move {
            let mut progress = self.progress.subscribe();
            let reached = progress
                .wait_for(|p| p.failed || seq_at_or_after(p.durable, next))
                .await
                .map(|p| !p.failed)
                .unwrap_or(false);
            if reached {
                Ok(())
            } else {
                Err(HandlerError::Failed("an earlier write of these registrations failed".into()))
            }
        })
    }
}

pub(super) type Durable = std::pin::Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// Takes one batch of a session's registrations, under the session's admission lock. Those below
/// the session's `admitted` number were taken through another link of the client (one it has
/// since left, its acks lost): they are not stored again, and their acknowledgement waits until
/// they are durable. Returns what resolves once the whole batch is durable.
pub(super) async fn admit<H: ServerHandler>(
    handler: &Arc<H>,
    shared: &Shared,
    client: Arc<ClientInfo>,
    batch: Vec<Registration>,
) -> Result<Durable, HandlerError> {
    let first = batch.first().and_then(|r| r.seq).unwrap_or(0);
    let last = batch.last().and_then(|r| r.seq).unwrap_or(first);
    let cell = lock(&shared.sessions).entry(client.session).or_insert_with(|| SessionCell::new(first)).clone();
    let mut admitted = cell.admitted.lock().await;
    let progress = *cell.progress.borrow();
    if progress.failed {
        if progress.in_flight > 0 {
            let failed = "an earlier write of this session failed; the client sends again later";
            return Err(HandlerError::Failed(failed.into()));
        }
        // Everything taken has resolved: take again from what is durable.
        *admitted = progress.durable;
        cell.progress.send_modify(|p| p.failed = false);
    }
    // The core's rule: a replay was taken already. A gap is the registrations in between that
    // the handler refused (answered in their place, never stored): what follows is fresh.
    let fresh: Vec<Registration> =
        batch.into_iter().filter(|r| r.seq.is_none_or(|seq| Arrival::of(seq, *admitted) != Arrival::Replay)).collect();
    let Some(fresh_last) = fresh.last().and_then(|r| r.seq) else {
        drop(admitted);
        return Ok(cell.wait_durable(last.wrapping_add(1)));
    };
    let handler = handler.clone();
    let taken = guarded(async move { handler.admit(&client, fresh).await }).await?;
    let next = fresh_last.wrapping_add(1);
    *admitted = next;
    cell.progress.send_modify(|p| p.in_flight = p.in_flight.saturating_add(1));
    drop(admitted);
    let written = taken.durable;
    Ok(Box::pin(async move {
        let result = written.await;
        cell.resolved(next, result.is_ok());
        result
    }))
}
