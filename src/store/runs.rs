//! Script runs in redb: one record per (event, script) run, and the pending set that survives
//! crashes. A run leaves the pending set in the same transaction that records its result, so it
//! is completed exactly once (unless replayed, which records a new run).

use std::collections::HashSet;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::due::{Admit, Due, DueIndex, DueKey};
use super::{EventHead, ReadError, ReadTxnSource, WriteError, read_err, storage};
use crate::script::{Action, Effects, LogLine, RunError};

/// run id → the run's record as JSON (records evolve; JSON keeps old ones readable).
const RUNS: TableDefinition<u64, &[u8]> = TableDefinition::new("runs");
/// Every run not finished yet (`pending_runs`: run id → earliest attempt, ms since the epoch),
/// with its time index (`pending_by_time`).
const PENDING: DueIndex = DueIndex::new("pending_runs", "pending_by_time");
/// run id → when it started (ms since the epoch), for every run whose script is running: a
/// mark left at startup means the engine stopped (crashed) during that run.
const IN_FLIGHT: TableDefinition<u64, u64> = TableDefinition::new("runs_in_flight");
/// (event seq, run id) → (): the runs of one event, for its console page without a scan of
/// every run. Written where runs are created (the processing path, never ingest) and pruned with
/// them; built once from `runs` when a store written before it is opened.
const RUNS_BY_EVENT: TableDefinition<(u64, u64), ()> = TableDefinition::new("runs_by_event");
/// Crashes of the engine a run may be in flight at: at the second, the run is failed ("it
/// crashed the engine") instead of crashing it again and again.
pub const MAX_CRASHES_IN_FLIGHT: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Waiting for a worker (new, or interrupted by a crash).
    Pending,
    /// Failed on a transient host error; attempted again at `next_attempt`.
    Retrying,
    Succeeded,
    Failed,
    /// Not run: its script was deleted (or renamed) before a worker got to it. `error` says so.
    Skipped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Retrying => "retrying",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
        }
    }

    /// Whether the run is over (it leaves the pending set).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Skipped
        )
    }
}

/// Everything recorded about one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: u64,
    pub event_seq: u64,
    pub event_uuid: String,
    pub event_type: String,
    pub hook: String,
    pub script: String,
    /// The hash of the script version that ran (set when it runs).
    pub script_hash: Option<String>,
    pub status: RunStatus,
    pub attempts: u32,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub next_attempt: Option<String>,
    pub duration_ms: Option<u64>,
    pub log: Vec<LogLine>,
    pub error: Option<RunError>,
    pub actions: Vec<Action>,
    /// The run this one replays.
    pub replay_of: Option<u64>,
    /// Crashes of the engine this run was in flight at.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub crashes: u32,
    /// A timer's run (kind `timer`): the timer it runs and what scheduled it; `None`: an
    /// event's run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer: Option<TimerOrigin>,
    /// What a successful run changed in its script's state and timers (applied with it).
    #[serde(default, skip_serializing_if = "Effects::is_empty")]
    pub effects: Effects,
}

/// The timer a timer's run runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerOrigin {
    /// The timer's id (its actions' ids derive from it).
    pub id: String,
    pub call: String,
    #[serde(default)]
    pub args: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// When it was due (RFC 3339).
    pub due: String,
    /// The run that scheduled it.
    pub scheduled_by: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl RunRecord {
    pub fn new(id: u64, event: &EventHead, script: &str, replay_of: Option<u64>) -> Self {
        RunRecord {
            id,
            event_seq: event.seq,
            event_uuid: event.uuid.clone(),
            event_type: event.event_type.clone(),
            hook: event.hook.clone(),
            script: script.to_string(),
            script_hash: None,
            status: RunStatus::Pending,
            attempts: 0,
            created: crate::util::format_ms(crate::util::now_ms()),
            started: None,
            finished: None,
            next_attempt: None,
            duration_ms: None,
            log: Vec::new(),
            error: None,
            actions: Vec::new(),
            replay_of,
            crashes: 0,
            timer: None,
            effects: Effects::default(),
        }
    }

    /// `timer` for a timer's run, else `event`.
    pub fn kind(&self) -> &'static str {
        if self.timer.is_some() {
            "timer"
        } else {
            "event"
        }
    }

    /// `script:line:col: message` of the error, if any.
    pub fn error_text(&self) -> String {
        self.error
            .as_ref()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }
}

/// Creates the runs tables (so that readers in other processes find them).
pub(crate) fn init(txn: &WriteTransaction) -> Result<(), redb::Error> {
    use redb::TableHandle;
    let indexed = txn.list_tables()?.any(|t| t.name() == RUNS_BY_EVENT.name());
    if !indexed {
        // A store written before the index: every run is indexed once, now.
        let runs = txn.open_table(RUNS)?;
        let mut by_event = txn.open_table(RUNS_BY_EVENT)?;
        for entry in runs.iter()? {
            let (k, v) = entry?;
            if let Ok(r) = serde_json::from_slice::<RunRecord>(v.value()) {
                by_event.insert((r.event_seq, k.value()), ())?;
            }
        }
    }
    txn.open_table(RUNS)?;
    txn.open_table(IN_FLIGHT)?;
    PENDING.init(txn)
}

/// Marks run `id` as running (written without waiting for the commit: if the engine crashes
/// before the mark is durable, the crash simply is not counted).
pub fn mark_in_flight(txn: &WriteTransaction, id: u64, started_ms: u64) -> Result<(), WriteError> {
    let mut t = txn.open_table(IN_FLIGHT).map_err(storage)?;
    t.insert(id, started_ms).map_err(storage)?;
    Ok(())
}

/// At startup: every run still marked was in flight when the engine stopped without finishing it
/// (a crash). Each pending one counts the crash; one at [`MAX_CRASHES_IN_FLIGHT`] is failed with
/// `error` built by `failed`. Clears the marks. Returns (runs that counted a crash, runs failed).
pub fn recover_in_flight(
    txn: &WriteTransaction,
    failed: impl Fn(&RunRecord) -> RunError,
) -> Result<(Vec<u64>, Vec<u64>), WriteError> {
    let marked: Vec<u64> = {
        let t = txn.open_table(IN_FLIGHT).map_err(storage)?;
        let mut ids = Vec::new();
        for entry in t.iter().map_err(storage)? {
            ids.push(entry.map_err(storage)?.0.value());
        }
        ids
    };
    let (mut counted, mut failed_ids) = (Vec::new(), Vec::new());
    for id in marked {
        let record = {
            let runs = txn.open_table(RUNS).map_err(storage)?;
            let got = runs.get(id).map_err(storage)?;
            match got {
                Some(g) => Some(serde_json::from_slice::<RunRecord>(g.value()).map_err(storage)?),
                None => None,
            }
        };
        let Some(mut record) = record else { continue };
        if record.status.is_finished() {
            continue;
        }
        record.crashes += 1;
        if record.crashes >= MAX_CRASHES_IN_FLIGHT {
            record.status = RunStatus::Failed;
            record.next_attempt = None;
            record.error = Some(failed(&record));
            failed_ids.push(id);
        } else {
            counted.push(id);
        }
        save(txn, &record, 0)?;
    }
    let mut t = txn.open_table(IN_FLIGHT).map_err(storage)?;
    t.retain(|_, _| false).map_err(storage)?;
    Ok((counted, failed_ids))
}

/// Inserts new pending runs, giving them ids; returns the ids.
pub fn create(txn: &WriteTransaction, mut records: Vec<RunRecord>) -> Result<Vec<u64>, WriteError> {
    let mut runs = txn.open_table(RUNS).map_err(storage)?;
    let first = runs
        .last()
        .map_err(storage)?
        .map(|(k, _)| k.value() + 1)
        .unwrap_or(1);
    let mut by_event = txn.open_table(RUNS_BY_EVENT).map_err(storage)?;
    let mut ids = Vec::with_capacity(records.len());
    for (r, id) in records.iter_mut().zip(first..) {
        r.id = id;
        let json = serde_json::to_vec(r).map_err(storage)?;
        runs.insert(r.id, json.as_slice()).map_err(storage)?;
        by_event.insert((r.event_seq, r.id), ()).map_err(storage)?;
        PENDING.set(txn, r.id, 0)?;
        ids.push(r.id);
    }
    Ok(ids)
}

/// Records a run's new state: finished runs leave the pending set, retrying ones stay with
/// their next attempt time.
pub fn save(
    txn: &WriteTransaction,
    record: &RunRecord,
    not_before_ms: u64,
) -> Result<(), WriteError> {
    let mut runs = txn.open_table(RUNS).map_err(storage)?;
    let json = serde_json::to_vec(record).map_err(storage)?;
    runs.insert(record.id, json.as_slice()).map_err(storage)?;
    txn.open_table(IN_FLIGHT)
        .map_err(storage)?
        .remove(record.id)
        .map_err(storage)?;
    if record.status.is_finished() {
        count_result(txn, record)?;
        PENDING.unset(txn, record.id)
    } else {
        PENDING.set(txn, record.id, not_before_ms)
    }
}

/// Adds a finished run to the overview's hourly counters (the hour it finished: `finished`,
/// else now), in the transaction that records its result.
fn count_result(txn: &WriteTransaction, record: &RunRecord) -> Result<(), WriteError> {
    use super::counts::{Counter, add, hour_of};
    let ms = record
        .finished
        .as_deref()
        .and_then(crate::util::parse_rfc3339_nanos)
        .map_or_else(crate::util::now_ms, |n| (n / 1_000_000).max(0) as u64);
    let one = std::collections::BTreeMap::from([(hour_of(ms), 1)]);
    add(txn, Counter::Runs, &one)?;
    if record.status == RunStatus::Failed {
        add(txn, Counter::Failures, &one)?;
    }
    Ok(())
}

/// Removes up to `limit` finished runs that finished before `cutoff_ms`, oldest first; stops at
/// the first run it must keep. Returns how many it removed and the oldest event seq that a
/// pending run still needs (`u64::MAX` when none).
pub fn prune(
    txn: &WriteTransaction,
    cutoff_ms: u64,
    limit: usize,
) -> Result<(u64, u64), WriteError> {
    let pending = PENDING.ids_in(txn)?;
    let mut runs = txn.open_table(RUNS).map_err(storage)?;
    let mut oldest_needed = u64::MAX;
    for id in pending {
        if let Some(g) = runs.get(id).map_err(storage)? {
            let r: RunRecord = serde_json::from_slice(g.value()).map_err(storage)?;
            oldest_needed = oldest_needed.min(r.event_seq);
        }
    }
    let mut doomed = Vec::new();
    for entry in runs.iter().map_err(storage)?.take(limit) {
        let (k, v) = entry.map_err(storage)?;
        let r: RunRecord = serde_json::from_slice(v.value()).map_err(storage)?;
        let event_seq = r.event_seq;
        let finished_ms = r
            .finished
            .as_deref()
            .and_then(crate::util::parse_rfc3339_nanos)
            .map(|n| (n / 1_000_000) as u64);
        let done = r.status.is_finished();
        match finished_ms {
            Some(ms) if done && ms < cutoff_ms => doomed.push((k.value(), event_seq)),
            _ => break,
        }
    }
    let mut by_event = txn.open_table(RUNS_BY_EVENT).map_err(storage)?;
    for (id, event_seq) in &doomed {
        runs.remove(*id).map_err(storage)?;
        by_event.remove((*event_seq, *id)).map_err(storage)?;
    }
    Ok((doomed.len() as u64, oldest_needed))
}

/// Drops a pending run whose record or event is gone (it can never run).
pub fn forget(txn: &WriteTransaction, id: u64) -> Result<(), WriteError> {
    txn.open_table(IN_FLIGHT)
        .map_err(storage)?
        .remove(id)
        .map_err(storage)?;
    PENDING.unset(txn, id)
}

/// Which runs a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFilter {
    /// Only what is failed now: the newest run of an (event, script) whose status is failed (a
    /// failure that was fixed and replayed is not listed).
    #[serde(default)]
    pub failed_now: bool,
    /// Only this script's runs.
    #[serde(default)]
    pub script: Option<String>,
    /// Only this event's runs.
    #[serde(default)]
    pub event: Option<String>,
}

impl RunFilter {
    fn matches(&self, r: &RunRecord) -> bool {
        self.script.as_ref().is_none_or(|s| *s == r.script)
            && self.event.as_ref().is_none_or(|e| *e == r.event_uuid)
    }
}

/// Reads runs; works on a server's database or one opened by a command.
pub struct RunsView<'a>(pub &'a dyn ReadTxnSource);

impl RunsView<'_> {
    pub fn get(&self, id: u64) -> Result<Option<RunRecord>, ReadError> {
        let txn = self.0.begin()?;
        let runs = match txn.open_table(RUNS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        match runs.get(id).map_err(read_err)? {
            Some(g) => Ok(Some(serde_json::from_slice(g.value()).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    /// How many runs are pending.
    pub fn pending_count(&self) -> Result<u64, ReadError> {
        PENDING.count(&self.0.begin()?)
    }

    /// Pending runs with their earliest attempt time, oldest first.
    pub fn pending(&self) -> Result<Vec<(u64, u64)>, ReadError> {
        PENDING.all(&self.0.begin()?)
    }

    /// The runs due at `now` (earliest due first, then oldest) that `admit` takes (from just after `after`), and the
    /// earliest time a pending run not yet due comes due (see [`DueIndex::due`]).
    pub fn due(
        &self,
        now: u64,
        after: Option<DueKey>,
        admit: &mut dyn FnMut(DueKey) -> Admit,
    ) -> Result<Due, ReadError> {
        PENDING.due(&self.0.begin()?, now, after, admit)
    }

    /// The newest runs first, optionally only failed ones; `limit` rows at most.
    pub fn recent(&self, limit: usize, failed_only: bool) -> Result<Vec<RunRecord>, ReadError> {
        let filter = RunFilter {
            failed_now: failed_only,
            ..RunFilter::default()
        };
        self.list(limit, &filter)
    }

    /// The newest runs that pass `filter`, newest first; `limit` rows at most.
    pub fn list(&self, limit: usize, filter: &RunFilter) -> Result<Vec<RunRecord>, ReadError> {
        let mut latest = HashSet::new();
        let mut out = Vec::new();
        // Newest first, decoding only until the page is full (not every run first).
        self.walk(|r| {
            if out.len() >= limit {
                return false;
            }
            if !filter.matches(&r) {
                return true;
            }
            // The newest run of each (event, script) says whether it is failed now.
            let newest = latest.insert((r.event_uuid.clone(), r.script.clone()));
            if filter.failed_now && !(newest && r.status == RunStatus::Failed) {
                return true;
            }
            out.push(r);
            out.len() < limit
        })?;
        Ok(out)
    }

    /// The newest runs of one event, newest first.
    pub fn of_event(&self, event_uuid: &str) -> Result<Vec<RunRecord>, ReadError> {
        self.scan(usize::MAX, |r| r.event_uuid == event_uuid)
    }

    /// The runs of the event stored under `event_seq` (with `event_uuid`), newest first: through
    /// the (event, run) index, not a scan of every run (the console's event page).
    pub fn of_event_at(
        &self,
        event_seq: u64,
        event_uuid: &str,
    ) -> Result<Vec<RunRecord>, ReadError> {
        let txn = self.0.begin()?;
        let (runs, by_event) = match (txn.open_table(RUNS), txn.open_table(RUNS_BY_EVENT)) {
            (Ok(r), Ok(b)) => (r, b),
            (Err(redb::TableError::TableDoesNotExist(_)), _)
            | (_, Err(redb::TableError::TableDoesNotExist(_))) => return Ok(Vec::new()),
            (Err(e), _) | (_, Err(e)) => return Err(read_err(e)),
        };
        let mut out = Vec::new();
        let range = (event_seq, 0u64)..=(event_seq, u64::MAX);
        for entry in by_event.range(range).map_err(read_err)?.rev() {
            let (k, _) = entry.map_err(read_err)?;
            if let Some(v) = runs.get(k.value().1).map_err(read_err)? {
                let r: RunRecord = serde_json::from_slice(v.value()).map_err(read_err)?;
                if r.event_uuid == event_uuid {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Calls `f` on each run, newest first, while it returns true.
    fn walk(&self, mut f: impl FnMut(RunRecord) -> bool) -> Result<(), ReadError> {
        let txn = self.0.begin()?;
        let runs = match txn.open_table(RUNS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(read_err(e)),
        };
        for entry in runs.iter().map_err(read_err)?.rev() {
            let (_, v) = entry.map_err(read_err)?;
            let r: RunRecord = serde_json::from_slice(v.value()).map_err(read_err)?;
            if !f(r) {
                break;
            }
        }
        Ok(())
    }

    fn scan(
        &self,
        limit: usize,
        keep: impl Fn(&RunRecord) -> bool,
    ) -> Result<Vec<RunRecord>, ReadError> {
        let txn = self.0.begin()?;
        let runs = match txn.open_table(RUNS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(read_err(e)),
        };
        let mut out = Vec::new();
        for entry in runs.iter().map_err(read_err)?.rev() {
            if out.len() >= limit {
                break;
            }
            let (_, v) = entry.map_err(read_err)?;
            let r: RunRecord = serde_json::from_slice(v.value()).map_err(read_err)?;
            if keep(&r) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The latest run of each (event, script) whose latest run failed: what `replay --failed`
    /// runs again.
    pub fn latest_failed(&self) -> Result<Vec<RunRecord>, ReadError> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for r in self.scan(usize::MAX, |_| true)? {
            if seen.insert((r.event_uuid.clone(), r.script.clone()))
                && r.status == RunStatus::Failed
            {
                out.push(r);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::due::skipping;
    use super::*;

    fn event(seq: u64) -> EventHead {
        EventHead {
            seq,
            uuid: format!("u{seq}"),
            event_type: "user.lifecycle.create".into(),
            hook: "h".into(),
        }
    }

    fn write<T>(db: &redb::Database, f: impl FnOnce(&WriteTransaction) -> T) -> T {
        let txn = db.begin_write().unwrap();
        let out = f(&txn);
        txn.commit().unwrap();
        out
    }

    /// An event's runs come from the (event, run) index, newest first; pruned runs leave it; a
    /// store from before the index gets it built when opened.
    #[test]
    fn an_events_runs_come_from_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        write(&db, |t| init(t).unwrap());
        let records = [7, 8, 7, 9, 7]
            .iter()
            .map(|s| RunRecord::new(0, &event(*s), "s", None))
            .collect();
        write(&db, |t| create(t, records).unwrap());
        let ids = |seq: u64| -> Vec<u64> {
            RunsView(&db)
                .of_event_at(seq, &format!("u{seq}"))
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect()
        };
        assert_eq!(ids(7), [5, 3, 1]);
        assert_eq!(ids(8), [2]);
        assert!(ids(10).is_empty());
        assert!(RunsView(&db).of_event_at(7, "other").unwrap().is_empty());
        let by_scan: Vec<u64> = RunsView(&db)
            .of_event("u7")
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(by_scan, ids(7));
        let mut done = RunsView(&db).get(1).unwrap().unwrap();
        done.status = RunStatus::Succeeded;
        done.finished = Some("2020-01-01T00:00:00Z".into());
        write(&db, |t| save(t, &done, 0).unwrap());
        write(&db, |t| prune(t, u64::MAX, 10).unwrap());
        assert_eq!(ids(7), [5, 3]);
        write(&db, |t| t.delete_table(RUNS_BY_EVENT).unwrap());
        write(&db, |t| init(t).unwrap());
        assert_eq!(ids(7), [5, 3]);
        assert_eq!(ids(9), [4]);
    }

    /// `due` reads the time index: due runs earliest first, in-flight ones skipped, retrying
    /// ones only once due; finished runs leave both tables; an old store gets its index built.
    #[test]
    fn due_runs_come_from_the_time_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        write(&db, |t| init(t).unwrap());
        let records = (1..=4)
            .map(|i| RunRecord::new(0, &event(i), "s", None))
            .collect();
        let ids = write(&db, |t| create(t, records).unwrap());
        assert_eq!(ids, [1, 2, 3, 4]);
        let mut retrying = RunsView(&db).get(2).unwrap().unwrap();
        retrying.status = RunStatus::Retrying;
        write(&db, |t| save(t, &retrying, 5_000).unwrap());
        let mut done = RunsView(&db).get(3).unwrap().unwrap();
        done.status = RunStatus::Succeeded;
        write(&db, |t| save(t, &done, 0).unwrap());

        let skip: std::collections::HashSet<u64> = [1].into();
        assert_eq!(
            RunsView(&db)
                .due(1_000, None, &mut skipping(&skip, 10))
                .unwrap(),
            (vec![4], Some(5_000))
        );
        assert_eq!(
            RunsView(&db)
                .due(5_000, None, &mut skipping(&Default::default(), 10))
                .unwrap(),
            (vec![1, 4, 2], None)
        );
        assert_eq!(
            RunsView(&db)
                .due(5_000, None, &mut skipping(&Default::default(), 1))
                .unwrap()
                .0,
            [1]
        );
        assert_eq!(RunsView(&db).pending_count().unwrap(), 3);

        // A store from before the index: dropping it and opening again rebuilds it.
        write(&db, |t| {
            t.delete_table(TableDefinition::<(u64, u64), ()>::new("pending_by_time"))
                .unwrap()
        });
        write(&db, |t| init(t).unwrap());
        assert_eq!(
            RunsView(&db)
                .due(1_000, None, &mut skipping(&skip, 10))
                .unwrap(),
            (vec![4], Some(5_000))
        );
        write(&db, |t| forget(t, 4).unwrap());
        assert_eq!(
            RunsView(&db)
                .due(1_000, None, &mut skipping(&skip, 10))
                .unwrap(),
            (vec![], Some(5_000))
        );
    }
}
