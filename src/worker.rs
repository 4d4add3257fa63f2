//! Processing: the dispatcher turns stored events into pending runs (one per matching script),
//! and a bounded pool runs them on blocking threads and records each result.
//!
//! Invariants: a run's result, its actions and its removal from the pending set are one
//! transaction, so a crash at any point leaves each run either pending (and run again after the
//! restart) or completed once. Scripts never do I/O themselves: effects are actions, committed
//! with the run's success and carried out afterwards by the outbox.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{Notify, Semaphore, watch};

use crate::runs::{self, RunRecord, RunStatus, RunsView};
use crate::script::{self, DeliveryInfo, Host, Limits, RunError, RunErrorKind, ScriptSet};
use crate::store::{self, Store, StoredEvent};
use crate::util::{format_ms, now_ms};

/// Events turned into runs per dispatcher transaction: bounds one transaction's size.
pub const DISPATCH_BATCH: usize = 512;
/// Attempts of a run that keeps failing on transient host errors before it is marked failed.
pub const MAX_RUN_ATTEMPTS: u32 = 20;
/// First retry delay; doubled per attempt up to [`MAX_RETRY_DELAY`] (≈ 9 h of retries in all).
pub const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// How often the scheduler looks at the pending set without being woken (retries coming due).
pub const SCHEDULER_TICK: Duration = Duration::from_millis(250);

/// Delay before attempt `attempts + 1` of a run that failed transiently.
pub fn retry_delay(attempts: u32) -> Duration {
    let factor = 1u64 << attempts.saturating_sub(1).min(20);
    (FIRST_RETRY_DELAY * factor as u32).min(MAX_RETRY_DELAY)
}

/// The live script set, swapped atomically by hot reload.
pub type LiveScripts = Arc<ArcSwap<ScriptSet>>;

/// Turns events into runs and runs them.
pub struct Processor {
    store: Arc<Store>,
    scripts: LiveScripts,
    host: Arc<dyn Host>,
    limits: Limits,
    workers: usize,
    permits: Arc<Semaphore>,
    in_flight: Mutex<HashSet<u64>>,
    wake: Notify,
    /// Woken when a run is recorded (for waiters such as `replay`).
    pub recorded: Notify,
    /// Woken when a successful run queued mail.
    outbox_wake: Arc<Notify>,
    /// Hooks whose events are kept as samples (`capture = true`).
    capture_hooks: HashSet<String>,
    stats: Mutex<RunStats>,
}

/// Upper bounds (seconds) of the run-duration histogram buckets.
pub const RUN_DURATION_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// Counters for `/metrics`: runs by script and status, and their durations.
#[derive(Default)]
struct RunStats {
    by_script: std::collections::BTreeMap<(String, &'static str), u64>,
    buckets: [u64; RUN_DURATION_BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

impl Processor {
    pub fn new(
        store: Arc<Store>,
        scripts: LiveScripts,
        host: Arc<dyn Host>,
        limits: Limits,
        workers: usize,
        outbox_wake: Arc<Notify>,
    ) -> Arc<Processor> {
        let workers = workers.max(1);
        Arc::new(Processor {
            store,
            scripts,
            host,
            limits,
            workers,
            permits: Arc::new(Semaphore::new(workers)),
            in_flight: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            recorded: Notify::new(),
            outbox_wake,
            capture_hooks: HashSet::new(),
            stats: Mutex::new(RunStats::default()),
        })
    }

    /// Keeps the events of these hooks as samples when they are dispatched.
    pub fn with_capture(self: Arc<Self>, hooks: HashSet<String>) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(mut p) => {
                p.capture_hooks = hooks;
                Arc::new(p)
            }
            Err(shared) => shared,
        }
    }

    /// Runs the dispatcher and the scheduler until `shutdown` turns true, then waits for the
    /// runs in flight to be recorded.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let dispatcher = tokio::spawn(self.clone().dispatch_loop(shutdown.clone()));
        loop {
            if *shutdown.borrow() {
                break;
            }
            let next_due = match self.schedule_due().await {
                Ok(n) => n,
                Err(error) => {
                    tracing::error!(%error, "scheduler cannot read pending runs");
                    None
                }
            };
            let wait = next_due
                .map(|due| Duration::from_millis(due.saturating_sub(now_ms())))
                .unwrap_or(SCHEDULER_TICK)
                .min(SCHEDULER_TICK);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        let _ = dispatcher.await;
        // Every permit back = every run in flight recorded.
        let _ = self.permits.acquire_many(self.workers as u32).await;
    }

    /// Starts every due pending run there is a free worker for. Returns the earliest time a
    /// not-yet-due run comes due.
    async fn schedule_due(self: &Arc<Self>) -> Result<Option<u64>, store::ReadError> {
        let free = self.permits.available_permits();
        let skip = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (due, next_due) = RunsView(self.store.db()).due(now_ms(), &skip, free)?;
        for id in due {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                break;
            };
            self.in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id);
            let me = self.clone();
            tokio::spawn(async move {
                me.execute(id).await;
                me.in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                drop(permit);
                me.wake.notify_one();
                me.recorded.notify_waiters();
            });
        }
        Ok(next_due)
    }

    async fn dispatch_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let committed = self.store.events_committed();
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.dispatch_once().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => tracing::error!(%error, "dispatch failed; retrying"),
            }
            tokio::select! {
                _ = committed.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Creates the runs of the next batch of undispatched events. `Ok(false)`: none waiting.
    pub async fn dispatch_once(&self) -> Result<bool, store::StoreError> {
        let history = self.store.history();
        let cursor = history.dispatch_cursor()?;
        let events = history.events_after(cursor, DISPATCH_BATCH)?;
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(false);
        };
        let set = self.scripts.load_full();
        let mut records = Vec::new();
        for e in &events {
            for s in set.matching(&e.hook, &e.event_type) {
                records.push(RunRecord::new(0, e, &s.name, None));
            }
        }
        let count = records.len();
        let capture = self.capture_hooks.clone();
        let n_events = events.len();
        self.store
            .write(move |txn| {
                runs::create(txn, records)?;
                let keep: Vec<&StoredEvent> = events
                    .iter()
                    .filter(|e| capture.contains(&e.hook))
                    .collect();
                crate::samples::capture(txn, &keep)?;
                store::set_dispatch_cursor(txn, last)
            })
            .await?;
        tracing::debug!(events = n_events, runs = count, "dispatched");
        self.wake.notify_one();
        Ok(true)
    }

    /// Creates new runs for an event (current script versions), as `replay` does.
    pub async fn replay_event(&self, uuid: &str) -> Result<Vec<u64>, ReplayError> {
        let event = self
            .store
            .history()
            .event_by_uuid(uuid)?
            .ok_or_else(|| ReplayError::NoSuchEvent(uuid.to_string()))?;
        let set = self.scripts.load_full();
        let previous = RunsView(self.store.db()).of_event(uuid)?;
        let records: Vec<RunRecord> = set
            .matching(&event.hook, &event.event_type)
            .iter()
            .map(|s| {
                let replay_of = previous.iter().find(|r| r.script == s.name).map(|r| r.id);
                RunRecord::new(0, &event, &s.name, replay_of)
            })
            .collect();
        self.create_runs(records).await
    }

    /// Creates new runs for the latest failed run of each (event, script).
    pub async fn replay_failed(&self) -> Result<Vec<u64>, ReplayError> {
        let failed = RunsView(self.store.db()).latest_failed()?;
        let history = self.store.history();
        let mut records = Vec::new();
        for r in failed {
            if let Some(event) = history.event_by_seq(r.event_seq)? {
                records.push(RunRecord::new(0, &event, &r.script, Some(r.id)));
            }
        }
        self.create_runs(records).await
    }

    async fn create_runs(&self, records: Vec<RunRecord>) -> Result<Vec<u64>, ReplayError> {
        let ids = self
            .store
            .write(move |txn| runs::create(txn, records))
            .await?;
        self.wake.notify_one();
        Ok(ids)
    }

    /// Appends the run metrics (Prometheus text) to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP engine_runs_total Script runs recorded, by script and status."
        );
        let _ = writeln!(out, "# TYPE engine_runs_total counter");
        for ((script, status), n) in &stats.by_script {
            let _ = writeln!(
                out,
                "engine_runs_total{{script=\"{script}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP engine_run_duration_seconds Wall time of script runs."
        );
        let _ = writeln!(out, "# TYPE engine_run_duration_seconds histogram");
        for (bound, n) in RUN_DURATION_BUCKETS.iter().zip(stats.buckets) {
            let _ = writeln!(
                out,
                "engine_run_duration_seconds_bucket{{le=\"{bound}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "engine_run_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            stats.count
        );
        let _ = writeln!(out, "engine_run_duration_seconds_sum {}", stats.sum_seconds);
        let _ = writeln!(out, "engine_run_duration_seconds_count {}", stats.count);
        let pending = RunsView(self.store.db()).pending_count().unwrap_or(0);
        let _ = writeln!(out, "# HELP engine_runs_pending Runs waiting or in flight.");
        let _ = writeln!(out, "# TYPE engine_runs_pending gauge");
        let _ = writeln!(out, "engine_runs_pending {pending}");
    }

    /// True when no run is pending or in flight.
    pub fn idle(&self) -> Result<bool, store::ReadError> {
        Ok(RunsView(self.store.db()).pending_count()? == 0)
    }

    async fn execute(&self, id: u64) {
        let span = tracing::info_span!("run", run_id = id);
        let _enter = span.enter();
        let loaded = (|| -> Result<Option<(RunRecord, StoredEvent)>, store::ReadError> {
            let Some(record) = RunsView(self.store.db()).get(id)? else {
                return Ok(None);
            };
            let event = self.store.history().event_by_seq(record.event_seq)?;
            Ok(event.map(|e| (record, e)))
        })();
        let (mut record, event) = match loaded {
            Ok(Some(x)) => x,
            Ok(None) => {
                tracing::error!(run_id = id, "run or its event is missing; dropping it");
                let _ = self.store.write(move |txn| runs::forget(txn, id)).await;
                return;
            }
            Err(error) => {
                tracing::error!(run_id = id, %error, "cannot load run");
                return;
            }
        };
        let set = self.scripts.load_full();
        let started = now_ms();
        let clock = Instant::now();
        record.attempts += 1;
        record.started = Some(format_ms(started));
        let script = set.get(&record.script).cloned();
        let script_gone = script.is_none();
        let outcome = match script {
            Some(script) => {
                record.script_hash = Some(script.hash.clone());
                let host = self.host.clone();
                let limits = self.limits.clone();
                let delivery = DeliveryInfo {
                    id: event.delivery_id.clone(),
                    time: event.event_time.clone(),
                    hook: event.hook.clone(),
                    source: event.source.clone(),
                };
                let json = event.json;
                tokio::task::spawn_blocking(move || {
                    script::run(&script, &json, &delivery, &host, &limits)
                })
                .await
                .unwrap_or_else(|e| script::RunOutcome {
                    log: Vec::new(),
                    actions: Vec::new(),
                    result: Err(plain_error(&record.script, format!("the run crashed: {e}"))),
                })
            }
            // Deleted or renamed since the run was queued (a script that stops compiling keeps
            // its previous version loaded): a deleted script stops, so the run is skipped.
            None => script::RunOutcome {
                log: Vec::new(),
                actions: Vec::new(),
                result: Err(plain_error(
                    &record.script,
                    format!(
                        "skipped: script `{}` is no longer loaded (deleted or renamed after the event was queued)",
                        record.script
                    ),
                )),
            },
        };
        record.duration_ms = Some(clock.elapsed().as_millis() as u64);
        record.finished = Some(format_ms(now_ms()));
        for line in &outcome.log {
            tracing::info!(run_id = id, script = %record.script, level = %line.level, "{}", line.message);
        }
        record.log = outcome.log;
        let mut not_before = 0;
        match outcome.result {
            Ok(()) => {
                record.status = RunStatus::Succeeded;
                record.actions = outcome.actions;
                record.error = None;
                record.next_attempt = None;
            }
            Err(error) if script_gone => {
                record.actions = Vec::new();
                record.status = RunStatus::Skipped;
                record.next_attempt = None;
                tracing::info!(run_id = id, script = %record.script, "run skipped: its script is no longer loaded");
                record.error = Some(error);
            }
            Err(error) => {
                record.actions = Vec::new();
                if error.kind == RunErrorKind::Transient && record.attempts < MAX_RUN_ATTEMPTS {
                    let delay = retry_delay(record.attempts);
                    not_before = now_ms() + delay.as_millis() as u64;
                    record.status = RunStatus::Retrying;
                    record.next_attempt = Some(format_ms(not_before));
                    tracing::warn!(run_id = id, script = %record.script, %error, retry_in_ms = delay.as_millis() as u64, "run failed transiently");
                } else {
                    record.status = RunStatus::Failed;
                    record.next_attempt = None;
                    tracing::warn!(run_id = id, script = %record.script, %error, "run failed");
                }
                record.error = Some(error);
            }
        }
        let status = record.status;
        {
            let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            *stats
                .by_script
                .entry((record.script.clone(), status.as_str()))
                .or_default() += 1;
            let secs = record.duration_ms.unwrap_or(0) as f64 / 1000.0;
            stats.count += 1;
            stats.sum_seconds += secs;
            for (i, bound) in RUN_DURATION_BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    stats.buckets[i] += 1;
                }
            }
        }
        let result = self
            .store
            .write(move |txn| {
                runs::save(txn, &record, not_before)?;
                if record.status == RunStatus::Succeeded {
                    crate::outbox::enqueue(txn, &record)?;
                }
                Ok(())
            })
            .await;
        match result {
            Ok(()) => {
                tracing::debug!(run_id = id, status = status.as_str(), "run recorded");
                if status == RunStatus::Succeeded {
                    self.outbox_wake.notify_one();
                }
            }
            Err(error) => {
                tracing::error!(run_id = id, %error, "run result not recorded; it will run again")
            }
        }
    }
}

fn plain_error(script: &str, message: String) -> RunError {
    RunError {
        kind: RunErrorKind::Script,
        message,
        script: script.to_string(),
        file: format!("{script}.rhai"),
        line: None,
        col: None,
        trace: Vec::new(),
    }
}

/// Why a replay could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no stored event has uuid `{0}`\n  hint: `engine events` lists the stored events")]
    NoSuchEvent(String),
    #[error(transparent)]
    Read(#[from] store::ReadError),
    #[error(transparent)]
    Write(#[from] store::WriteError),
}

/// The script limits from the `[limits]` config.
pub fn limits_from(config: &crate::config::LimitsConfig) -> Limits {
    Limits {
        max_operations: config.max_operations,
        timeout_ms: config.timeout_ms,
        max_emails: config.max_emails,
        ..Limits::default()
    }
}
