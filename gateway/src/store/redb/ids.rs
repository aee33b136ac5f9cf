//! Where a gateway's ids go on after a restart in [`RedbStore`]: the newest stored id of a
//! server, and the gateway's own session numbers. `meta["session/<server id>"]` holds the last
//! session given out, so that a start whose session stored no event (volatile events only, or all
//! of them deleted by retention since) still leaves its number taken.

use redb::ReadableTable;
use rivulet_core::model::EventId;

use super::{EVENTS, IdKey, META, RedbStore, id_from_key, id_key};
use crate::store::StoreError;

impl RedbStore {
    /// The highest id of `server_id` in table `events`.
    pub(super) fn last_stored_id(&self, server_id: u64) -> Result<Option<EventId>, StoreError> {
        let low = id_key(EventId { server: server_id, session: 0, instance: 0 });
        let high = id_key(EventId { server: server_id, session: !0, instance: !0 });
        let txn = self.read()?;
        let events = txn.open_table(EVENTS).map_err(self.err("cannot open table `events`"))?;
        let mut range = events.range::<&IdKey>(&low..=&high).map_err(self.err("cannot read table `events`"))?;
        match range.next_back() {
            None => Ok(None),
            Some(entry) => Ok(Some(id_from_key(entry.map_err(self.err("cannot read table `events`"))?.0.value()))),
        }
    }

    /// One more than both the last session given out for `server_id` and `stored` (the newest
    /// stored event's), written durably before it is returned.
    pub(super) fn next_gateway_session(&self, server_id: u64, stored: Option<u64>) -> Result<u64, StoreError> {
        let key = format!("session/{server_id}");
        let txn = self.db.begin_write().map_err(self.err("cannot start a write transaction"))?;
        let session = {
            let mut meta = txn.open_table(META).map_err(self.err("cannot open table `meta`"))?;
            let given = meta.get(key.as_str()).map_err(self.err("cannot read table `meta`"))?.map(|v| v.value());
            let session = given.max(stored).map_or(1, |last| last.saturating_add(1));
            meta.insert(key.as_str(), session).map_err(self.err("cannot write table `meta`"))?;
            session
        };
        txn.commit().map_err(self.err("cannot commit the gateway's session"))?;
        Ok(session)
    }
}
