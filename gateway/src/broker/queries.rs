//! History queries: latest from memory, timeseries and server queries from the store, each a
//! page within the principal's ACL, at most [`PAGE_LIMIT`] events and about `max_bytes`.

use rivulet_core::owned::{Event, EventPath, Query, QueryPage};

use super::{Broker, BrokerError};
use crate::access::Principal;
use crate::store::StoreError;

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
                query.max_results = Some(query.max_results.map_or(PAGE_LIMIT, |max| max.min(PAGE_LIMIT)));
                let store = self.store.clone();
                blocking(move || store.timeseries(&query, max_bytes)).await
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

/// Runs a blocking store call off the async threads.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, BrokerError> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result.map_err(BrokerError::Store),
        Err(e) => Err(BrokerError::Store(StoreError::Io(format!("the store task failed: {e}")))),
    }
}
