//! The scripts' state (`state::*`): one row per (script, key) with its value, expiry and
//! version. Runs read it through the store; a run's commit first checks that every row it read
//! is unchanged (else the run is run again: no lost update), then applies its writes with fresh
//! versions. Expired rows read as absent at once and are pruned later.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{ReadError, ReadTxnSource, WriteError, read_err, storage};
use crate::script::{StateRead, StateValue, StateWrite};

/// `script \0 key` → [`StateValue`] as JSON.
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// `"next"` → the next version a write gets (versions are never reused, so a row deleted and
/// written again is a change a reader sees).
const STATE_VERSION: TableDefinition<&str, u64> = TableDefinition::new("state_version");
/// (expires ms, `script \0 key`): the rows with a TTL by expiry, so pruning reads only what
/// has expired.
const STATE_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("state_expiry");
/// The [`STATE_VERSION`] entry saying [`STATE_EXPIRY`] covers every row (stores written before
/// the index get it built once, at open).
const EXPIRY_INDEXED: &str = "expiry_indexed";
/// Expired rows deleted per pruning transaction: bounds the time a pass holds the writer.
pub const PRUNE_BATCH: usize = 10_000;

/// One key as `engine state` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRow {
    pub script: String,
    pub key: String,
    pub value: serde_json::Value,
    /// RFC 3339, when it expires.
    pub expires: Option<String>,
}

fn row_key(script: &str, key: &str) -> String {
    format!("{script}\0{key}")
}

pub(crate) fn init(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let table = txn.open_table(STATE)?;
    let mut versions = txn.open_table(STATE_VERSION)?;
    let mut expiry = txn.open_table(STATE_EXPIRY)?;
    if versions.get(EXPIRY_INDEXED)?.is_none() {
        for entry in table.iter()? {
            let (k, v) = entry?;
            if let Ok(StateValue {
                expires_ms: Some(at),
                ..
            }) = serde_json::from_slice::<StateValue>(v.value())
            {
                expiry.insert((at, k.value()), ())?;
            }
        }
        versions.insert(EXPIRY_INDEXED, 1)?;
    }
    Ok(())
}

/// Drops the expiry entry of a row just replaced or removed (its old JSON).
fn unindex(
    expiry: &mut redb::Table<(u64, &str), ()>,
    key: &str,
    old: &[u8],
) -> Result<Option<StateValue>, WriteError> {
    let Ok(row) = serde_json::from_slice::<StateValue>(old) else {
        return Ok(None);
    };
    if let Some(at) = row.expires_ms {
        expiry.remove((at, key)).map_err(storage)?;
    }
    Ok(Some(row))
}

/// The row `script` stored under `key` (expired or not), with its version.
pub fn get(
    src: &dyn ReadTxnSource,
    script: &str,
    key: &str,
) -> Result<Option<StateValue>, ReadError> {
    let txn = src.begin()?;
    let table = match txn.open_table(STATE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let Some(v) = table.get(row_key(script, key).as_str()).map_err(read_err)? else {
        return Ok(None);
    };
    serde_json::from_slice(v.value())
        .map(Some)
        .map_err(read_err)
}

/// Whether every row in `reads` still has the version the run saw (inside the commit's
/// transaction: later jobs of the same batch see earlier jobs' writes).
pub fn unchanged(
    txn: &WriteTransaction,
    script: &str,
    reads: &[StateRead],
) -> Result<bool, WriteError> {
    if reads.is_empty() {
        return Ok(true);
    }
    let table = txn.open_table(STATE).map_err(storage)?;
    for r in reads {
        let now = match table
            .get(row_key(script, &r.key).as_str())
            .map_err(storage)?
        {
            None => None,
            Some(v) => Some(
                serde_json::from_slice::<StateValue>(v.value())
                    .map_err(storage)?
                    .version,
            ),
        };
        if now != r.version {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Applies a run's writes, each set with a fresh version.
pub fn apply(
    txn: &WriteTransaction,
    script: &str,
    writes: &[StateWrite],
) -> Result<(), WriteError> {
    if writes.is_empty() {
        return Ok(());
    }
    let mut versions = txn.open_table(STATE_VERSION).map_err(storage)?;
    let mut next = versions
        .get("next")
        .map_err(storage)?
        .map(|v| v.value())
        .unwrap_or(1);
    let mut table = txn.open_table(STATE).map_err(storage)?;
    let mut expiry = txn.open_table(STATE_EXPIRY).map_err(storage)?;
    for w in writes {
        let k = row_key(script, w.key());
        let old = match w {
            StateWrite::Set {
                value, expires_ms, ..
            } => {
                let row = StateValue {
                    value: value.clone(),
                    expires_ms: *expires_ms,
                    version: next,
                };
                next += 1;
                let json = serde_json::to_vec(&row).map_err(storage)?;
                let old = table
                    .insert(k.as_str(), json.as_slice())
                    .map_err(storage)?
                    .map(|v| v.value().to_vec());
                if let Some(old) = &old {
                    unindex(&mut expiry, &k, old)?;
                }
                if let Some(at) = expires_ms {
                    expiry.insert((*at, k.as_str()), ()).map_err(storage)?;
                }
                continue;
            }
            StateWrite::Delete { .. } => table.remove(k.as_str()).map_err(storage)?,
        };
        if let Some(old) = old {
            unindex(&mut expiry, &k, old.value())?;
        }
    }
    versions.insert("next", next).map_err(storage)?;
    Ok(())
}

/// Deletes `script`'s `key` (`engine state delete`); whether it was there (and not expired).
pub fn delete(
    txn: &WriteTransaction,
    script: &str,
    key: &str,
    now_ms: u64,
) -> Result<bool, WriteError> {
    let mut table = txn.open_table(STATE).map_err(storage)?;
    let mut expiry = txn.open_table(STATE_EXPIRY).map_err(storage)?;
    let k = row_key(script, key);
    let Some(old) = table.remove(k.as_str()).map_err(storage)? else {
        return Ok(false);
    };
    let row = unindex(&mut expiry, &k, old.value())?;
    Ok(row.is_some_and(|v| !v.expired(now_ms)))
}

/// Every live key (of `script`, or of every script), by script then key.
pub fn list(
    src: &dyn ReadTxnSource,
    script: Option<&str>,
    now_ms: u64,
) -> Result<Vec<StateRow>, ReadError> {
    page(src, script, None, usize::MAX, now_ms).map(|(rows, _)| rows)
}

/// Where a page of [`page`] continues: the last (script, key) it showed.
pub type StateCursor = (String, String);

/// One page of live keys (of `script`, or of every script), by script then key, starting just
/// after `after`: at most `limit` rows, and the cursor of the next page when more follow. Reads
/// the keys from `after` on through the table's order, never the whole table (expired rows it
/// meets are skipped; the timer clock prunes them).
pub fn page(
    src: &dyn ReadTxnSource,
    script: Option<&str>,
    after: Option<(&str, &str)>,
    limit: usize,
    now_ms: u64,
) -> Result<(Vec<StateRow>, Option<StateCursor>), ReadError> {
    use std::ops::Bound;
    let txn = src.begin()?;
    let table = match txn.open_table(STATE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), None)),
        Err(e) => return Err(read_err(e)),
    };
    let prefix = script.map(|s| format!("{s}\0"));
    let from = after.map(|(s, k)| row_key(s, k));
    let lower = match (&from, &prefix) {
        (Some(f), Some(p)) if f.as_str() < p.as_str() => Bound::Included(p.as_str()),
        (Some(f), _) => Bound::Excluded(f.as_str()),
        (None, Some(p)) => Bound::Included(p.as_str()),
        (None, None) => Bound::Unbounded,
    };
    let mut out = Vec::new();
    let mut more = false;
    for entry in table
        .range::<&str>((lower, Bound::Unbounded))
        .map_err(read_err)?
    {
        let (k, v) = entry.map_err(read_err)?;
        let k = k.value();
        if let Some(p) = &prefix
            && !k.starts_with(p.as_str())
        {
            break;
        }
        let row: StateValue = serde_json::from_slice(v.value()).map_err(read_err)?;
        if row.expired(now_ms) {
            continue;
        }
        if out.len() >= limit {
            more = true;
            break;
        }
        let (s, key) = k.split_once('\0').unwrap_or(("", k));
        out.push(StateRow {
            script: s.to_string(),
            key: key.to_string(),
            value: row.value,
            expires: row.expires_ms.map(crate::util::format_ms),
        });
    }
    let next = more
        .then(|| out.last().map(|r| (r.script.clone(), r.key.clone())))
        .flatten();
    Ok((out, next))
}

/// Deletes up to [`PRUNE_BATCH`] rows expired at `now_ms`, found through the expiry index;
/// how many.
pub fn prune_expired(txn: &WriteTransaction, now_ms: u64) -> Result<usize, WriteError> {
    let mut table = txn.open_table(STATE).map_err(storage)?;
    let mut expiry = txn.open_table(STATE_EXPIRY).map_err(storage)?;
    let mut gone: Vec<(u64, String)> = Vec::new();
    // `expired` is `expires_ms <= now`.
    for entry in expiry
        .range((0, "")..(now_ms.saturating_add(1), ""))
        .map_err(storage)?
        .take(PRUNE_BATCH)
    {
        let (k, _) = entry.map_err(storage)?;
        let (at, key) = k.value();
        gone.push((at, key.to_string()));
    }
    for (at, k) in &gone {
        expiry.remove((*at, k.as_str())).map_err(storage)?;
        table.remove(k.as_str()).map_err(storage)?;
    }
    Ok(gone.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: i64, expires_ms: Option<u64>) -> StateWrite {
        StateWrite::Set {
            key: key.into(),
            value: value.into(),
            expires_ms,
        }
    }

    /// Pages follow the table's order from their cursor, skip expired rows, stay inside one
    /// script when asked, and say when nothing follows.
    #[test]
    fn pages_continue_after_their_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        init(&txn).unwrap();
        apply(
            &txn,
            "a",
            &[
                set("k1", 1, None),
                set("k2", 2, Some(10)),
                set("k3", 3, None),
            ],
        )
        .unwrap();
        apply(&txn, "b", &[set("k1", 4, None), set("k2", 5, None)]).unwrap();
        txn.commit().unwrap();
        let keys = |rows: &[StateRow]| -> Vec<String> {
            rows.iter()
                .map(|r| format!("{}/{}", r.script, r.key))
                .collect()
        };

        let (rows, next) = page(&db, None, None, 2, 100).unwrap();
        assert_eq!(keys(&rows), ["a/k1", "a/k3"], "a/k2 expired");
        let next = next.expect("more follow");
        let (rows, next) = page(&db, None, Some((&next.0, &next.1)), 2, 100).unwrap();
        assert_eq!(keys(&rows), ["b/k1", "b/k2"]);
        assert_eq!(next, None);

        let (rows, next) = page(&db, Some("b"), None, 1, 100).unwrap();
        assert_eq!(keys(&rows), ["b/k1"]);
        let next = next.unwrap();
        let (rows, next) = page(&db, Some("b"), Some((&next.0, &next.1)), 1, 100).unwrap();
        assert_eq!(keys(&rows), ["b/k2"]);
        assert_eq!(next, None);
        // A cursor before the script's keys starts at its first.
        let (rows, _) = page(&db, Some("b"), Some(("a", "k9")), 5, 100).unwrap();
        assert_eq!(keys(&rows), ["b/k1", "b/k2"]);
        assert_eq!(
            page(&db, Some("c"), None, 5, 100).unwrap(),
            (Vec::new(), None)
        );
        assert_eq!(
            page(&db, None, None, 5, 0).unwrap().0.len(),
            5,
            "none expired at 0"
        );
    }
}
