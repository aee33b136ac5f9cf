//! The gateway's own session numbers in [`RedbStore`]: `meta["session/<server id>"]` holds the
//! last one given out, so that a start whose session stored no event (volatile events only, or
//! all of them deleted by retention since) still leaves its number taken.

use redb::ReadableTable;

use super::{META, RedbStore};
use crate::store::StoreError;

impl RedbStore {
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
