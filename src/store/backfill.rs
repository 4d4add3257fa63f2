//! The System Log backfill's durable state: its cursor (in `meta`), the published time up to
//! which the System Log has been read. The cursor is advanced in the same transaction as the
//! events it covers (the writer's `Backfill` job), and only forward, so a crash neither loses
//! nor repeats, and a manual `engine backfill` beside the poller cannot move it back.

use redb::{ReadableTable, WriteTransaction};

use super::inbox::META;
use super::{History, ReadError, WriteError, read_err, storage};

/// The `meta` key of the cursor: ms since the epoch (Okta's `since` of the next poll).
pub const BACKFILL_CURSOR: &str = "backfill_cursor_ms";

/// Moves the cursor to `ms` unless it is already further.
pub(crate) fn advance_cursor(txn: &WriteTransaction, ms: u64) -> Result<(), WriteError> {
    let mut meta = txn.open_table(META).map_err(storage)?;
    let known = meta
        .get(BACKFILL_CURSOR)
        .map_err(storage)?
        .map(|g| g.value());
    if known.is_none_or(|k| k < ms) {
        meta.insert(BACKFILL_CURSOR, ms).map_err(storage)?;
    }
    Ok(())
}

impl History<'_> {
    /// The backfill cursor (`None`: the System Log was never read into this store).
    pub fn backfill_cursor(&self) -> Result<Option<u64>, ReadError> {
        let txn = self.read()?;
        let meta = txn.open_table(META).map_err(read_err)?;
        Ok(meta
            .get(BACKFILL_CURSOR)
            .map_err(read_err)?
            .map(|g| g.value()))
    }
}
