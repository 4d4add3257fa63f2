//! The scripts' durable timers (`schedule`): one record per pending timer, its id and its
//! per-script key, and a time index. A run's commit applies its schedules and cancels; a due
//! timer leaves the table in the same transaction that creates its run, so it fires once. The
//! events pending timers will run on are indexed, so retention keeps them.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::due::{Admit, DueIndex};
use super::runs::{RunRecord, TimerOrigin};
use super::{ReadError, ReadTxnSource, WriteError, read_err, storage};
use crate::script::{TimerOp, TimerSpec};

/// timer seq → [`Timer`] as JSON.
const TIMERS: TableDefinition<u64, &[u8]> = TableDefinition::new("timers");
/// timer id → seq.
const TIMER_IDS: TableDefinition<&str, u64> = TableDefinition::new("timer_ids");
/// `script \0 key` → seq, for keyed timers.
const TIMER_KEYS: TableDefinition<&str, u64> = TableDefinition::new("timer_keys");
/// seq → due (ms), with its time index.
const DUE: DueIndex = DueIndex::new("timers_pending", "timers_by_time");
/// (event seq, timer seq): the events pending timers will run on, which retention keeps.
const TIMER_EVENTS: TableDefinition<(u64, u64), ()> = TableDefinition::new("timer_events");

/// A pending timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub seq: u64,
    pub script: String,
    #[serde(flatten)]
    pub spec: TimerSpec,
    /// RFC 3339 of `spec.due_ms`.
    pub due: String,
    /// The run that scheduled it, and the event that run ran on (the timer's run gets it).
    pub scheduled_by: u64,
    pub event_seq: u64,
    pub event_uuid: String,
    pub event_type: String,
    pub hook: String,
    pub created: String,
}

pub(crate) fn init(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let timers = txn.open_table(TIMERS)?;
    txn.open_table(TIMER_IDS)?;
    txn.open_table(TIMER_KEYS)?;
    let mut events = txn.open_table(TIMER_EVENTS)?;
    // A store written before the index: index its pending timers once.
    if events.is_empty()? && !timers.is_empty()? {
        for entry in timers.iter()? {
            let (k, v) = entry?;
            if let Ok(t) = serde_json::from_slice::<Timer>(v.value()) {
                events.insert((t.event_seq, k.value()), ())?;
            }
        }
    }
    DUE.init(txn)
}

/// The oldest event a pending timer will run on (`u64::MAX`: none): retention keeps it.
pub fn oldest_event_needed(txn: &WriteTransaction) -> Result<u64, WriteError> {
    let events = txn.open_table(TIMER_EVENTS).map_err(storage)?;
    Ok(events
        .first()
        .map_err(storage)?
        .map_or(u64::MAX, |(k, _)| k.value().0))
}

fn key_of(script: &str, key: &str) -> String {
    format!("{script}\0{key}")
}

/// Removes timer `seq` from every table; the timer, if it was there.
fn remove(txn: &WriteTransaction, seq: u64) -> Result<Option<Timer>, WriteError> {
    let mut timers = txn.open_table(TIMERS).map_err(storage)?;
    let Some(old) = timers.remove(seq).map_err(storage)? else {
        return Ok(None);
    };
    let t: Timer = serde_json::from_slice(old.value()).map_err(storage)?;
    drop(old);
    txn.open_table(TIMER_EVENTS)
        .map_err(storage)?
        .remove((t.event_seq, seq))
        .map_err(storage)?;
    txn.open_table(TIMER_IDS)
        .map_err(storage)?
        .remove(t.spec.id.as_str())
        .map_err(storage)?;
    if let Some(k) = &t.spec.key {
        let mut keys = txn.open_table(TIMER_KEYS).map_err(storage)?;
        let kk = key_of(&t.script, k);
        let same = keys.get(kk.as_str()).map_err(storage)?.map(|v| v.value()) == Some(seq);
        if same {
            keys.remove(kk.as_str()).map_err(storage)?;
        }
    }
    DUE.unset(txn, seq)?;
    Ok(Some(t))
}

fn seq_of_key(txn: &WriteTransaction, script: &str, key: &str) -> Result<Option<u64>, WriteError> {
    let keys = txn.open_table(TIMER_KEYS).map_err(storage)?;
    Ok(keys
        .get(key_of(script, key).as_str())
        .map_err(storage)?
        .map(|v| v.value()))
}

/// Applies a successful run's timer operations, in order: a schedule replaces the pending
/// timer with the same key (or id); a cancel removes the one with that key. Returns the
/// earliest due time scheduled.
pub fn apply(
    txn: &WriteTransaction,
    run: &RunRecord,
    ops: &[TimerOp],
) -> Result<Option<u64>, WriteError> {
    let mut earliest: Option<u64> = None;
    for op in ops {
        match op {
            TimerOp::Cancel { key } => {
                if let Some(seq) = seq_of_key(txn, &run.script, key)? {
                    remove(txn, seq)?;
                }
            }
            TimerOp::Schedule(spec) => {
                if let Some(k) = &spec.key
                    && let Some(seq) = seq_of_key(txn, &run.script, k)?
                {
                    remove(txn, seq)?;
                }
                let same_id = txn
                    .open_table(TIMER_IDS)
                    .map_err(storage)?
                    .get(spec.id.as_str())
                    .map_err(storage)?
                    .map(|v| v.value());
                if let Some(seq) = same_id {
                    remove(txn, seq)?;
                }
                let mut timers = txn.open_table(TIMERS).map_err(storage)?;
                let seq = timers
                    .last()
                    .map_err(storage)?
                    .map(|(k, _)| k.value() + 1)
                    .unwrap_or(1)
                    .max(next_seq_floor(txn)?);
                let t = Timer {
                    seq,
                    script: run.script.clone(),
                    spec: spec.clone(),
                    due: crate::util::format_ms(spec.due_ms),
                    scheduled_by: run.id,
                    event_seq: run.event_seq,
                    event_uuid: run.event_uuid.clone(),
                    event_type: run.event_type.clone(),
                    hook: run.hook.clone(),
                    created: crate::util::format_ms(crate::util::now_ms()),
                };
                let json = serde_json::to_vec(&t).map_err(storage)?;
                timers.insert(seq, json.as_slice()).map_err(storage)?;
                drop(timers);
                txn.open_table(TIMER_IDS)
                    .map_err(storage)?
                    .insert(spec.id.as_str(), seq)
                    .map_err(storage)?;
                if let Some(k) = &spec.key {
                    txn.open_table(TIMER_KEYS)
                        .map_err(storage)?
                        .insert(key_of(&run.script, k).as_str(), seq)
                        .map_err(storage)?;
                }
                txn.open_table(TIMER_EVENTS)
                    .map_err(storage)?
                    .insert((run.event_seq, seq), ())
                    .map_err(storage)?;
                DUE.set(txn, seq, spec.due_ms)?;
                bump_seq_floor(txn, seq + 1)?;
                earliest = Some(earliest.map_or(spec.due_ms, |e| e.min(spec.due_ms)));
            }
        }
    }
    Ok(earliest)
}

/// Timer seqs are never reused (a fired timer's seq is not given to the next one), kept as a
/// floor beside the table.
const TIMER_SEQ: TableDefinition<&str, u64> = TableDefinition::new("timer_seq");

fn next_seq_floor(txn: &WriteTransaction) -> Result<u64, WriteError> {
    let t = txn.open_table(TIMER_SEQ).map_err(storage)?;
    Ok(t.get("next")
        .map_err(storage)?
        .map(|v| v.value())
        .unwrap_or(1))
}

fn bump_seq_floor(txn: &WriteTransaction, next: u64) -> Result<(), WriteError> {
    txn.open_table(TIMER_SEQ)
        .map_err(storage)?
        .insert("next", next)
        .map_err(storage)?;
    Ok(())
}

/// The seqs of up to `limit` timers due at `now_ms`, and when the next one comes due.
pub fn due(
    src: &dyn ReadTxnSource,
    now_ms: u64,
    limit: usize,
) -> Result<(Vec<u64>, Option<u64>), ReadError> {
    let txn = src.begin()?;
    let mut taken = 0;
    DUE.due(&txn, now_ms, None, &mut |_| {
        if taken >= limit {
            Admit::Stop
        } else {
            taken += 1;
            Admit::Take
        }
    })
}

/// Fires the timers `seqs` that are still pending and due at `now_ms`: each leaves the table
/// and becomes a pending run (kind timer), in this one transaction. Returns the new run ids.
pub fn fire(txn: &WriteTransaction, seqs: &[u64], now_ms: u64) -> Result<Vec<u64>, WriteError> {
    let mut records = Vec::new();
    for seq in seqs {
        let due_now = {
            let timers = txn.open_table(TIMERS).map_err(storage)?;
            match timers.get(*seq).map_err(storage)? {
                Some(v) => {
                    serde_json::from_slice::<Timer>(v.value())
                        .map_err(storage)?
                        .spec
                        .due_ms
                        <= now_ms
                }
                None => false,
            }
        };
        if !due_now {
            continue;
        }
        let Some(t) = remove(txn, *seq)? else {
            continue;
        };
        let head = super::EventHead {
            seq: t.event_seq,
            uuid: t.event_uuid.clone(),
            event_type: t.event_type.clone(),
            hook: t.hook.clone(),
        };
        let mut r = RunRecord::new(0, &head, &t.script, None);
        r.timer = Some(TimerOrigin {
            id: t.spec.id.clone(),
            call: t.spec.call.clone(),
            args: t.spec.args.clone(),
            key: t.spec.key.clone(),
            due: t.due.clone(),
            scheduled_by: t.scheduled_by,
        });
        records.push(r);
    }
    if records.is_empty() {
        return Ok(Vec::new());
    }
    super::runs::create(txn, records)
}

/// Whether `script` has a pending timer with `key`.
pub fn pending_with_key(
    src: &dyn ReadTxnSource,
    script: &str,
    key: &str,
) -> Result<bool, ReadError> {
    let txn = src.begin()?;
    match txn.open_table(TIMER_KEYS) {
        Ok(t) => Ok(t
            .get(key_of(script, key).as_str())
            .map_err(read_err)?
            .is_some()),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(read_err(e)),
    }
}

/// Every pending timer, earliest due first (at most `limit`).
pub fn list(src: &dyn ReadTxnSource, limit: usize) -> Result<Vec<Timer>, ReadError> {
    let txn = src.begin()?;
    let timers = match txn.open_table(TIMERS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(read_err(e)),
    };
    let mut out = Vec::new();
    for (_, seq) in DUE
        .all(&txn)?
        .into_iter()
        .map(|(seq, due)| (due, seq))
        .collect::<std::collections::BTreeSet<_>>()
    {
        if out.len() >= limit {
            break;
        }
        if let Some(v) = timers.get(seq).map_err(read_err)? {
            out.push(serde_json::from_slice(v.value()).map_err(read_err)?);
        }
    }
    Ok(out)
}

/// Where a page of [`page`] continues: the last timer's (due ms, seq).
pub type TimerCursor = (u64, u64);

/// One page of pending timers, earliest due first, starting just after `after`: at most `limit`,
/// and the cursor of the next page when more follow. Reads the time index from `after` on, never
/// every timer.
pub fn page(
    src: &dyn ReadTxnSource,
    after: Option<TimerCursor>,
    limit: usize,
) -> Result<(Vec<Timer>, Option<TimerCursor>), ReadError> {
    let txn = src.begin()?;
    let timers = match txn.open_table(TIMERS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), None)),
        Err(e) => return Err(read_err(e)),
    };
    let mut keys = Vec::new();
    // Every timer is "due" at the end of time: the index's order, one past the page.
    DUE.due(&txn, u64::MAX, after, &mut |key| {
        if keys.len() > limit {
            return Admit::Stop;
        }
        keys.push(key);
        Admit::Take
    })?;
    let more = keys.len() > limit;
    keys.truncate(limit);
    let mut out = Vec::new();
    for &(_, seq) in &keys {
        if let Some(v) = timers.get(seq).map_err(read_err)? {
            out.push(serde_json::from_slice(v.value()).map_err(read_err)?);
        }
    }
    let next = more.then(|| keys.last().copied()).flatten();
    Ok((out, next))
}

/// How many timers are pending.
pub fn count(src: &dyn ReadTxnSource) -> Result<u64, ReadError> {
    let txn = src.begin()?;
    match txn.open_table(TIMERS) {
        Ok(t) => t.len().map_err(read_err),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(read_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventHead;

    /// Pages follow the due order (then seq) from their cursor and say when nothing follows.
    #[test]
    fn pages_follow_the_due_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        init(&txn).unwrap();
        let head = EventHead {
            seq: 1,
            uuid: "u1".into(),
            event_type: "user.lifecycle.create".into(),
            hook: "h".into(),
        };
        let run = RunRecord::new(7, &head, "s", None);
        // Due 50, 10, 30, 10, 20: seqs 1..=5.
        let ops: Vec<TimerOp> = [50u64, 10, 30, 10, 20]
            .iter()
            .enumerate()
            .map(|(i, due)| {
                TimerOp::Schedule(TimerSpec {
                    id: format!("t{i}"),
                    key: None,
                    call: "f".into(),
                    args: serde_json::Value::Null,
                    due_ms: *due,
                })
            })
            .collect();
        apply(&txn, &run, &ops).unwrap();
        txn.commit().unwrap();
        let ids = |ts: &[Timer]| ts.iter().map(|t| t.spec.id.clone()).collect::<Vec<_>>();

        let (first, next) = page(&db, None, 2).unwrap();
        assert_eq!(ids(&first), ["t1", "t3"]);
        assert_eq!(next, Some((10, 4)));
        let (second, next) = page(&db, next, 2).unwrap();
        assert_eq!(ids(&second), ["t4", "t2"]);
        let (third, next) = page(&db, next, 2).unwrap();
        assert_eq!(ids(&third), ["t0"]);
        assert_eq!(next, None);
        assert_eq!(page(&db, None, 5).unwrap().1, None, "exactly a page");
        assert_eq!(ids(&list(&db, 10).unwrap()), ["t1", "t3", "t4", "t2", "t0"]);
    }
}
