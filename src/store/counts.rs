//! Hourly counters and each hook's last delivery: what the console's overview charts, kept as
//! small tables so that a render reads 24 rows per counter instead of the history.
//!
//! `hourly_counts` holds (counter, hour) → count, where hour is the UTC hour since the epoch
//! (`ms / HOUR_MS`). The writer adds a batch's stored events in the transaction that stores them
//! (one row update per hour the batch's deliveries were received in: normally one), and a run's
//! result adds to `runs` (and `failures`) in the transaction that records it. Rows older than
//! the retention window go with the history they counted ([`prune`]). `hook_last_delivery`
//! holds hook → the received time of its newest stored delivery, set once per hook per batch;
//! `hook_verified` hook → when Okta's one-time verification request was last answered.

use std::collections::BTreeMap;

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::{ReadError, WriteError, read_err, storage};

/// (counter, hour since the epoch) → count.
const COUNTS: TableDefinition<(u8, u64), u64> = TableDefinition::new("hourly_counts");
/// hook id → received ms of its newest stored delivery.
const HOOK_LAST: TableDefinition<&str, u64> = TableDefinition::new("hook_last_delivery");
/// hook id → when the engine last answered Okta's verification request for it (ms).
const HOOK_VERIFIED: TableDefinition<&str, u64> = TableDefinition::new("hook_verified");

/// One hour, in ms.
pub const HOUR_MS: u64 = 3_600_000;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Events stored, by the hour their delivery was received.
    Events = 0,
    /// Runs finished (succeeded, failed or skipped), by the hour they finished.
    Runs = 1,
    /// Runs failed, by the hour they finished.
    Failures = 2,
}

/// The hour (since the epoch) `ms` falls in.
pub fn hour_of(ms: u64) -> u64 {
    ms / HOUR_MS
}

pub(crate) fn init(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(COUNTS)?;
    txn.open_table(HOOK_LAST)?;
    txn.open_table(HOOK_VERIFIED)?;
    Ok(())
}

/// Records that Okta's verification request for `hook` was answered at `ms`.
pub fn note_verified(txn: &WriteTransaction, hook: &str, ms: u64) -> Result<(), WriteError> {
    txn.open_table(HOOK_VERIFIED)
        .map_err(storage)?
        .insert(hook, ms)
        .map_err(storage)?;
    Ok(())
}

/// Each hook's last answered verification (ms).
pub fn verifications(txn: &ReadTransaction) -> Result<BTreeMap<String, u64>, ReadError> {
    read_map(txn, HOOK_VERIFIED)
}

/// Adds `by_hour` (hour → n) to `counter`: one row update per hour.
pub fn add(
    txn: &WriteTransaction,
    counter: Counter,
    by_hour: &BTreeMap<u64, u64>,
) -> Result<(), WriteError> {
    if by_hour.values().all(|n| *n == 0) {
        return Ok(());
    }
    let mut t = txn.open_table(COUNTS).map_err(storage)?;
    for (hour, n) in by_hour.iter().filter(|(_, n)| **n > 0) {
        let key = (counter as u8, *hour);
        let was = t.get(key).map_err(storage)?.map_or(0, |v| v.value());
        t.insert(key, was + n).map_err(storage)?;
    }
    Ok(())
}

/// Records each hook's newest delivery of a batch (kept only when newer than the stored one).
pub fn note_deliveries(
    txn: &WriteTransaction,
    last_by_hook: &BTreeMap<String, u64>,
) -> Result<(), WriteError> {
    if last_by_hook.is_empty() {
        return Ok(());
    }
    let mut t = txn.open_table(HOOK_LAST).map_err(storage)?;
    for (hook, ms) in last_by_hook {
        let was = t.get(hook.as_str()).map_err(storage)?.map(|v| v.value());
        if was.is_none_or(|w| w < *ms) {
            t.insert(hook.as_str(), *ms).map_err(storage)?;
        }
    }
    Ok(())
}

/// The counts of `counter` for the `hours` hours from `first_hour` on (0 where none).
pub fn hourly(
    txn: &ReadTransaction,
    counter: Counter,
    first_hour: u64,
    hours: u64,
) -> Result<Vec<u64>, ReadError> {
    let mut out = vec![0; hours as usize];
    let t = match txn.open_table(COUNTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
        Err(e) => return Err(read_err(e)),
    };
    let c = counter as u8;
    let range = (c, first_hour)..(c, first_hour.saturating_add(hours));
    for entry in t.range(range).map_err(read_err)? {
        let (k, v) = entry.map_err(read_err)?;
        if let Some(slot) = out.get_mut((k.value().1 - first_hour) as usize) {
            *slot = v.value();
        }
    }
    Ok(out)
}

/// Each hook's newest stored delivery (received ms).
pub fn last_deliveries(txn: &ReadTransaction) -> Result<BTreeMap<String, u64>, ReadError> {
    read_map(txn, HOOK_LAST)
}

fn read_map(
    txn: &ReadTransaction,
    table: TableDefinition<&str, u64>,
) -> Result<BTreeMap<String, u64>, ReadError> {
    let t = match txn.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
        Err(e) => return Err(read_err(e)),
    };
    let mut out = BTreeMap::new();
    for entry in t.iter().map_err(read_err)? {
        let (k, v) = entry.map_err(read_err)?;
        out.insert(k.value().to_string(), v.value());
    }
    Ok(out)
}

/// Removes the counts of the hours wholly before `cutoff_ms` (retention); returns how many rows.
pub fn prune(txn: &WriteTransaction, cutoff_ms: u64) -> Result<u64, WriteError> {
    let before = hour_of(cutoff_ms);
    let mut t = txn.open_table(COUNTS).map_err(storage)?;
    let mut gone = 0;
    for c in [Counter::Events, Counter::Runs, Counter::Failures] {
        let c = c as u8;
        t.retain_in((c, 0)..(c, before), |_, _| {
            gone += 1;
            false
        })
        .map_err(storage)?;
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, ReadableDatabase};

    #[test]
    fn counts_add_per_hour_read_as_a_window_and_prune_by_hour() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let w = db.begin_write().unwrap();
        init(&w).unwrap();
        add(&w, Counter::Events, &BTreeMap::from([(10, 3), (11, 2)])).unwrap();
        add(&w, Counter::Events, &BTreeMap::from([(11, 5), (12, 0)])).unwrap();
        add(&w, Counter::Runs, &BTreeMap::from([(11, 1)])).unwrap();
        w.commit().unwrap();
        let r = db.begin_read().unwrap();
        assert_eq!(hourly(&r, Counter::Events, 9, 4).unwrap(), vec![0, 3, 7, 0]);
        assert_eq!(hourly(&r, Counter::Runs, 9, 4).unwrap(), vec![0, 0, 1, 0]);
        assert_eq!(hourly(&r, Counter::Failures, 9, 4).unwrap(), vec![0; 4]);
        drop(r);
        let w = db.begin_write().unwrap();
        assert_eq!(prune(&w, 11 * HOUR_MS + 5).unwrap(), 1, "hour 10 only");
        w.commit().unwrap();
        let r = db.begin_read().unwrap();
        assert_eq!(hourly(&r, Counter::Events, 9, 4).unwrap(), vec![0, 0, 7, 0]);
        assert_eq!(hourly(&r, Counter::Runs, 9, 4).unwrap(), vec![0, 0, 1, 0]);
    }
}
