//! History queries: latest from memory, timeseries and server queries from the store, each a
//! page within the principal's ACL, at most [`PAGE_LIMIT`] events and about `max_bytes`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use rivulet_core::owned::{Event, EventPath, Query, QueryPage};

use super::{Broker, BrokerError};
use crate::access::Principal;
use crate::store::{Scan, StoreError};

/// Most events one query page holds, whatever the client asks: a query over the whole history
/// pages instead of loading it at once (`more_follows` says a next page has more).
pub const PAGE_LIMIT: u32 = 1000;

impl Broker {
    /// One page of `query` as `who` may see it (a query without types gets `who`'s subscribe
    /// patterns). `max_bytes` is what the client can take: no larger page is read, since it would
    /// be cut to that anyway (see [`crate::store::page_bytes`]).
    pub async fn query(&self, who: &Principal<'_>, query: Query, max_bytes: usize) -> Result<QueryPage, BrokerError> {
        let query = self.denied(who, self.access.restrict_query(who, query))?;
        match query {
            Query::Latest { event_types } => {
                Ok(QueryPage { events: self.latest.matching(event_types.as_deref()), more_follows: false })
            }
            Query::Timeseries(mut query) => {
                if let Some(patterns) = &query.event_types
                    && patterns.len() > self.config.max_subscriptions
                {
                    return Err(BrokerError::Invalid(format!(
                        "the query names {} patterns; the gateway takes at most {} (--max-subscriptions)",
                        patterns.len(),
                        self.config.max_subscriptions
                    )));
                }
                query.max_results = Some(query.max_results.map_or(PAGE_LIMIT, |max| max.min(PAGE_LIMIT)));
                // Waits for a slot; whoever stops waiting for the answer (its client left, and
                // the front-end dropped this) stops the scan: dropped, `_cancel` says so.
                let _slot = self.query_slots.acquire().await;
                let _cancel = CancelOnDrop::default();
                let scan =
                    Scan { max_events: self.config.query_scan, cancelled: Some(_cancel.0.clone()), ..Scan::default() };
                let (store, counters) = (self.store.clone(), self.query_counters.clone());
                blocking(move || {
                    let page = store.timeseries_within(&query, max_bytes, &scan);
                    counters.count(&page, &scan);
                    page
                })
                .await
            }
            Query::Server { server_id, max_results, last_event_id, .. } => {
                let max_results = Some(max_results.map_or(PAGE_LIMIT, |max| max.min(PAGE_LIMIT)));
                let store = self.store.clone();
                blocking(move || store.server_events(server_id, max_results, last_event_id, max_bytes)).await
            }
        }
    }

    /// The newest event of each type one of `patterns` matches, unchecked: for a caller that has
    /// narrowed the patterns to what its asker may see (the federation's latest across gateways).
    pub fn latest_matching(&self, patterns: &[EventPath]) -> Vec<Event> {
        self.latest.matching(Some(patterns))
    }

    /// Where a session the front-end does not know resumes: the next sequence number the store
    /// keeps for it, or `None` (a new session). A store that cannot say is logged and treated as
    /// not knowing: the client starts a new session and resends what it holds.
    pub async fn resume_session(&self, session: u64) -> Option<u32> {
        let store = self.store.clone();
        match blocking(move || store.session(session)).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!("reading session {session:#x} from the store: {e}");
                None
            }
        }
    }
}

/// A scan's cancel flag, set when this is dropped: before the scan ends, that is a query nobody
/// waits for any more; after, it changes nothing.
#[derive(Default)]
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

/// What became of store queries that did not run to their end.
#[derive(Debug, Default)]
pub struct QueryCounters {
    /// Stopped because nobody waited for the answer any more.
    pub cancelled: AtomicU64,
    /// Ended at the scan budget (`--query-scan`): a partial page, or a refusal when it found
    /// nothing.
    pub scan_spent: AtomicU64,
}

impl QueryCounters {
    fn count(&self, page: &Result<QueryPage, StoreError>, scan: &Scan) {
        let cancelled = scan.cancelled.as_ref().is_some_and(|c| c.load(Relaxed));
        if cancelled && matches!(page, Err(StoreError::Closed(_))) {
            self.cancelled.fetch_add(1, Relaxed);
        } else if scan.spent.load(Relaxed) {
            self.scan_spent.fetch_add(1, Relaxed);
        }
    }
}

/// Runs a blocking store call off the async threads.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, BrokerError> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result.map_err(BrokerError::Store),
        Err(e) => Err(BrokerError::Store(StoreError::Io(format!("the store task failed: {e}")))),
    }
}
