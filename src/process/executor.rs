//! Carries out one run: loads its record and event (the event's body is read once), runs the
//! script on a blocking thread, and records the result, its actions and its leaving the pending
//! set in one transaction. A run whose script failed transiently is retried with [`RUN_BACKOFF`],
//! and never before the time the far side gave (a rate limit's reset). Every string a run
//! record holds is scrubbed of secrets (`util::redact`) before it is logged or saved. A run's
//! group for the scheduler's per-script share is its script.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::scheduler::{Admit, Backoff, Done, Due, DueKey, DueWork, MAX_PANICS, Step, Task, Work};
use crate::script::{
    self, DeliveryInfo, Host, Limits, LiveScripts, LogLine, RunError, RunErrorKind, RunOutcome,
    Senders,
};
use crate::store::actions::{self, Origin};
use crate::store::runs::{self, RunRecord, RunStatus, RunsView};
use crate::store::{ReadError, Store, StoredEvent};
use crate::store::{kv, timers};
use crate::util::{format_ms, now_ms, prom, redact};

/// Attempts of a run that keeps failing on transient host errors before it is marked failed.
pub const MAX_RUN_ATTEMPTS: u32 = 20;
/// Retries of a run that failed transiently: from 1 s, doubled, up to 1 h (≈ 9 h of retries
/// within [`MAX_RUN_ATTEMPTS`]), jittered so that runs failing together spread out.
pub const RUN_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(3600),
    jitter: true,
};
/// A run still going this long after it started is marked in flight (so that a crash during it
/// counts against it, [`crate::store::runs::recover_in_flight`]). Quick runs end first and need
/// no mark: one write per run fewer. A script that could crash the engine within this window
/// would be run again after a restart without the mark counting; the run limits (memory,
/// operations, time) keep a script from crashing it at all.
pub const MARK_IN_FLIGHT_AFTER: Duration = Duration::from_millis(20);
/// Times in a row a run may be run again at once because what it read of its script's state
/// changed before its commit (another run of the script wrote it first). Each conflict means
/// another run committed, so this is only reached under a storm on one key; past it the run
/// is retried with [`RUN_BACKOFF`] like a transient failure, which spreads the storm out.
pub const MAX_STATE_CONFLICTS: u32 = 100;
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

/// The runs queue, as the scheduler drains it.
pub struct Executor {
    store: Arc<Store>,
    scripts: LiveScripts,
    host: Arc<dyn Host>,
    limits: Limits,
    /// The From addresses the runs' mails may name.
    senders: Senders,
    /// Woken when a successful run queued mail.
    wakers: super::ActionWakers,
    stats: Mutex<RunStats>,
    /// Runs whose result could not be recorded (the store could not write), with their next
    /// attempt: the next attempt records them again instead of running the script again.
    unrecorded: Mutex<HashMap<u64, (RunRecord, u64)>>,
    /// The group (script) of each pending run the scheduler asked about, so that a look at the
    /// queue reads each record once; a run leaves it when it is finished.
    scripts_of: Mutex<HashMap<u64, u64>>,
    /// Runs refused at their commit because their state reads changed, with how many times in
    /// a row ([`MAX_STATE_CONFLICTS`]).
    conflicts: Mutex<HashMap<u64, u32>>,
    failures: crate::util::Throttle,
}

/// The runs' host: the configured one (`lookup_user`, the Okta reads, endpoints), plus the
/// script's stored state and timers read from the store.
struct StoreHost {
    inner: Arc<dyn Host>,
    store: Arc<Store>,
}

impl Host for StoreHost {
    fn lookup_user(
        &self,
        key: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<script::User>, script::HostError> {
        self.inner.lookup_user(key, deadline)
    }
    fn okta_user_groups(
        &self,
        user: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<script::OktaGroup>, script::HostError> {
        self.inner.okta_user_groups(user, deadline)
    }
    fn okta_get_group(
        &self,
        group: &script::GroupRef,
        deadline: Option<Instant>,
    ) -> Result<Option<script::OktaGroup>, script::HostError> {
        self.inner.okta_get_group(group, deadline)
    }
    fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }
    fn state_get(
        &self,
        script: &str,
        key: &str,
    ) -> Result<Option<script::StateValue>, script::HostError> {
        kv::get(&*self.store, script, key)
            .map_err(|e| script::HostError::transient(format!("cannot read the state: {e}")))
    }
    fn timer_pending(&self, script: &str, key: &str) -> Result<bool, script::HostError> {
        timers::pending_with_key(&*self.store, script, key)
            .map_err(|e| script::HostError::transient(format!("cannot read the timers: {e}")))
    }
    fn endpoint(&self, name: &str) -> Option<script::EndpointInfo> {
        self.inner.endpoint(name)
    }
    fn endpoint_names(&self) -> Vec<String> {
        self.inner.endpoint_names()
    }
    fn http_get(
        &self,
        request: &script::HttpRequest,
        deadline: Option<Instant>,
    ) -> Result<script::HttpAnswer, script::HostError> {
        self.inner.http_get(request, deadline)
    }
}

/// How saving a run ended in the transaction.
enum Saved {
    Recorded,
    /// What it read of its state changed since: nothing was written.
    Conflict,
}

/// What a run would do, found by running the script without recording or carrying out
/// anything (the console's replay confirmation).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DryRunOutcome {
    pub script: String,
    pub event_uuid: String,
    pub event_type: String,
    pub log: Vec<crate::script::LogLine>,
    /// Each action it would record, in one line (`Action::describe`), with its kind and id.
    pub actions: Vec<DryAction>,
    /// The run's error (`file:line:col: message`), when it would fail.
    pub error: Option<String>,
}

/// One action of a dry run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DryAction {
    pub id: String,
    pub kind: &'static str,
    pub what: String,
}

impl Executor {
    /// Runs `script` on `event` as a run would (the same host, limits and secrets scrubbed),
    /// on a blocking thread, and returns what it would do; nothing is recorded or carried out.
    pub async fn dry_run(
        &self,
        script: Arc<crate::script::Script>,
        event: StoredEvent,
    ) -> DryRunOutcome {
        let (host, limits, senders) =
            (self.host.clone(), self.limits.clone(), self.senders.clone());
        let delivery = DeliveryInfo {
            id: event.delivery_id.clone(),
            time: event.event_time.clone(),
            hook: event.hook.clone(),
            source: event.source.clone(),
        };
        let (uuid, event_type, name) = (
            event.uuid.clone(),
            event.event_type.clone(),
            script.name.clone(),
        );
        let ran = crate::script::pool::spawn_script(move || {
            crate::script::run(
                &script,
                &event.json,
                &event.uuid,
                &delivery,
                &host,
                &limits,
                &senders,
            )
        })
        .await;
        let (log, actions, error) = match ran {
            Ok(mut outcome) => {
                scrub_outcome(&mut outcome);
                let actions = outcome
                    .actions
                    .iter()
                    .map(|a| DryAction {
                        id: a.id().to_string(),
                        kind: a.kind().as_str(),
                        what: a.describe(),
                    })
                    .collect();
                (
                    outcome.log,
                    actions,
                    outcome.result.err().map(|e| e.to_string()),
                )
            }
            Err(e) => (
                Vec::new(),
                Vec::new(),
                Some(format!("the run crashed: {e}")),
            ),
        };
        DryRunOutcome {
            script: name,
            event_uuid: uuid,
            event_type,
            log,
            actions,
            error,
        }
    }

    pub fn new(
        store: Arc<Store>,
        scripts: LiveScripts,
        host: Arc<dyn Host>,
        limits: Limits,
        senders: Senders,
        wakers: super::ActionWakers,
    ) -> Executor {
        let host: Arc<dyn Host> = Arc::new(StoreHost {
            inner: host,
            store: store.clone(),
        });
        Executor {
            store,
            scripts,
            host,
            limits,
            senders,
            wakers,
            stats: Mutex::new(RunStats::default()),
            unrecorded: Mutex::new(HashMap::new()),
            scripts_of: Mutex::new(HashMap::new()),
            conflicts: Mutex::new(HashMap::new()),
            failures: crate::util::Throttle::new(crate::store::FAILURE_LOG_INTERVAL),
        }
    }

    async fn execute_run(self: &Arc<Self>, id: u64) -> Step {
        let pending = self
            .unrecorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some((record, not_before)) = pending {
            return Step::Committing(self.save(record, not_before));
        }
        let loaded = (|| -> Result<Option<(RunRecord, StoredEvent)>, ReadError> {
            let Some(record) = RunsView(&*self.store).get(id)? else {
                return Ok(None);
            };
            let event = self.store.history().event_by_seq(record.event_seq)?;
            Ok(event.map(|e| (record, e)))
        })();
        let (mut record, event) = match loaded {
            Ok(Some(x)) => x,
            Ok(None) => {
                tracing::error!(run_id = id, "run or its event is missing; dropping it");
                return match self.store.write(move |txn| runs::forget(txn, id)).await {
                    Ok(()) => Done::Recorded,
                    Err(_) => Done::NotRecorded,
                }
                .into();
            }
            Err(error) => {
                if let Some(left_out) = self.failures.ready() {
                    tracing::error!(run_id = id, %error, left_out, "cannot load run");
                }
                return Done::NotRecorded.into();
            }
        };
        let set = self.scripts.load_full();
        let started = now_ms();
        let clock = Instant::now();
        record.attempts += 1;
        record.started = Some(format_ms(started));
        let script = set.get(&record.script).cloned();
        let script_gone = script.is_none() && set.broken(&record.script).is_none();
        let outcome = match script {
            Some(script) => {
                record.script_hash = Some(script.hash.clone());
                let host = self.host.clone();
                let limits = self.limits.clone();
                let senders = self.senders.clone();
                let delivery = DeliveryInfo {
                    id: event.delivery_id.clone(),
                    time: event.event_time.clone(),
                    hook: event.hook.clone(),
                    source: event.source.clone(),
                };
                let StoredEvent { json, uuid, .. } = event;
                let span = tracing::Span::current();
                let timer = record.timer.clone();
                let mut running = crate::script::pool::spawn_script(move || {
                    let _in_run = span.enter();
                    match timer {
                        None => {
                            script::run(&script, &json, &uuid, &delivery, &host, &limits, &senders)
                        }
                        Some(t) => script::run_timer(
                            &script, &json, &t.id, &delivery, &host, &limits, &senders, &t.call,
                            &t.args,
                        ),
                    }
                });
                // A run still going after a moment is marked in flight, without waiting (queued
                // before its result, so never after it): a crash during it counts against it.
                // Quick runs (nearly all) end first and cost no mark.
                tokio::select! {
                    ended = &mut running => ended,
                    _ = tokio::time::sleep(MARK_IN_FLIGHT_AFTER) => {
                        self.store
                            .write_detached(move |txn| runs::mark_in_flight(txn, id, started));
                        running.await
                    }
                }
                .unwrap_or_else(|e| script::RunOutcome {
                    log: Vec::new(),
                    actions: Vec::new(),
                    effects: Default::default(),
                    result: Err(plain_error(&record.script, format!("the run crashed: {e}"))),
                })
            }
            // A script that does not load (and has no working version): the run fails with its
            // load error, not retried; replayed once the script is fixed.
            None if set.broken(&record.script).is_some() => {
                let b = set.broken(&record.script).map(|b| b.error.clone());
                let (file, line, col, message, hint) = match b {
                    Some(e) => (
                        e.file
                            .file_name()
                            .map(|f| f.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        e.line,
                        e.col,
                        format!("the script does not load: {}", e.message),
                        e.hint,
                    ),
                    None => (
                        String::new(),
                        None,
                        None,
                        "the script does not load".into(),
                        None,
                    ),
                };
                script::RunOutcome {
                    log: Vec::new(),
                    actions: Vec::new(),
                    effects: Default::default(),
                    result: Err(RunError {
                        kind: RunErrorKind::Load,
                        message,
                        script: record.script.clone(),
                        file,
                        line,
                        col,
                        trace: Vec::new(),
                        not_before_ms: None,
                        hint: Some(hint.unwrap_or_else(|| {
                            "fix the script, then `engine replay --failed` runs it on this event".into()
                        })),
                    }),
                }
            }
            // Deleted or renamed since the run was queued (a script that stops compiling keeps
            // its previous version loaded): a deleted script stops, so the run is skipped.
            None => script::RunOutcome {
                log: Vec::new(),
                actions: Vec::new(),
                effects: Default::default(),
                result: Err(plain_error(
                    &record.script,
                    format!(
                        "skipped: script `{}` is no longer loaded (deleted or renamed after the event was queued)",
                        record.script
                    ),
                )),
            },
        };
        // Before anything of it is logged or recorded: a far side may have echoed a secret.
        let mut outcome = outcome;
        scrub_outcome(&mut outcome);
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
                record.effects = outcome.effects;
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
                    let now = now_ms();
                    let backoff = now + RUN_BACKOFF.delay(record.attempts - 1).as_millis() as u64;
                    // Not before the far side said it answers again (a rate limit's reset).
                    not_before = backoff.max(error.not_before_ms.unwrap_or(0));
                    let delay = Duration::from_millis(not_before - now);
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
        Step::Committing(self.save(record, not_before))
    }

    fn count(&self, record: &RunRecord) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        *stats
            .by_script
            .entry((record.script.clone(), record.status.as_str()))
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

    /// Queues the run's new state, scrubbed of secrets, for the writer's next commit (a
    /// successful run's actions in the same transaction); the task ends once it is recorded.
    fn save(self: &Arc<Self>, mut record: RunRecord, not_before: u64) -> Task {
        scrub_record(&mut record);
        if record.status.is_finished() {
            self.scripts_of
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&record.id);
        }
        let (id, status) = (record.id, record.status);
        // What it read is checked at the commit, not kept in the record.
        let reads = std::mem::take(&mut record.effects.reads);
        let kept = record.clone();
        let committed = self.store.queue_write(move |txn| {
            if record.status == RunStatus::Succeeded {
                // Checked first, before anything of the run is written: a conflicting run
                // leaves no trace and runs again on what the other run committed.
                if !kv::unchanged(txn, &record.script, &reads)? {
                    return Ok(Saved::Conflict);
                }
                kv::apply(txn, &record.script, &record.effects.writes)?;
                timers::apply(txn, &record, &record.effects.timers)?;
            }
            runs::save(txn, &record, not_before)?;
            if record.status == RunStatus::Succeeded && !record.actions.is_empty() {
                let origin = Origin {
                    run_id: record.id,
                    event_uuid: &record.event_uuid,
                    script: &record.script,
                };
                actions::enqueue(txn, origin, &record.actions)?;
            }
            Ok(Saved::Recorded)
        });
        let me = self.clone();
        Box::pin(async move {
            match committed.await {
                Ok(Saved::Conflict) => {
                    let n = {
                        let mut c = me.conflicts.lock().unwrap_or_else(|e| e.into_inner());
                        let n = c.entry(id).or_insert(0);
                        *n += 1;
                        *n
                    };
                    tracing::debug!(
                        run_id = id,
                        conflicts = n,
                        "run's state changed before its commit; running it again"
                    );
                    if n < MAX_STATE_CONFLICTS {
                        return Done::Again;
                    }
                    // A storm on one key: back off like a transient failure.
                    me.conflicts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    let mut record = kept;
                    record.status = RunStatus::Retrying;
                    record.actions = Vec::new();
                    record.effects = Default::default();
                    let at = now_ms()
                        + RUN_BACKOFF
                            .delay(record.attempts.saturating_sub(1))
                            .as_millis() as u64;
                    record.next_attempt = Some(format_ms(at));
                    record.error = Some(RunError {
                        kind: RunErrorKind::Transient,
                        ..plain_error(
                            &record.script,
                            format!(
                                "its state changed {n} times in a row before the run could commit (other runs of the script write the same keys); retried later"
                            ),
                        )
                    });
                    me.save(record, at).await
                }
                Ok(Saved::Recorded) => {
                    tracing::debug!(run_id = id, status = status.as_str(), "run recorded");
                    me.conflicts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    me.count(&kept);
                    if status == RunStatus::Succeeded {
                        me.wakers.wake(&kept.actions);
                        if !kept.effects.timers.is_empty() {
                            me.wakers.wake_timers();
                        }
                    }
                    Done::Recorded
                }
                Err(error) => {
                    if let Some(left_out) = me.failures.ready() {
                        tracing::error!(run_id = id, %error, left_out, "run result not recorded; recording it again later");
                    }
                    me.unrecorded
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, (kept, not_before));
                    Done::NotRecorded
                }
            }
        })
    }

    /// At startup: the runs that were in flight when the engine last stopped without finishing
    /// them count a crash; a run at its second is failed rather than run again.
    pub async fn recover_in_flight(&self) {
        let result = self
            .store
            .write(|txn| {
                runs::recover_in_flight(txn, |r| {
                    plain_error(
                        &r.script,
                        format!(
                            "the engine crashed {} times while this run was in flight: it is not run again (`engine replay` runs it once it is fixed)",
                            r.crashes
                        ),
                    )
                })
            })
            .await;
        match result {
            Ok((counted, failed)) => {
                for id in &counted {
                    tracing::warn!(
                        run_id = id,
                        "run was in flight when the engine stopped; running it again"
                    );
                }
                for id in &failed {
                    tracing::error!(
                        run_id = id,
                        "run was in flight at two crashes of the engine; failed instead of running again"
                    );
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot read the runs in flight at the last stop")
            }
        }
    }

    /// A run whose task panicked: retried with backoff, failed from [`MAX_PANICS`] panics on.
    async fn record_panic(self: &Arc<Self>, id: u64, count: u32, message: String) -> Done {
        let Ok(Some(mut record)) = RunsView(&*self.store).get(id) else {
            return Done::NotRecorded;
        };
        if record.status.is_finished() {
            return Done::Recorded;
        }
        record.finished = Some(format_ms(now_ms()));
        record.actions = Vec::new();
        let mut not_before = 0;
        if count >= MAX_PANICS {
            record.status = RunStatus::Failed;
            record.next_attempt = None;
            record.error = Some(plain_error(
                &record.script,
                format!("the run crashed {count} times: {message}"),
            ));
        } else {
            let delay = RUN_BACKOFF.delay(count - 1);
            not_before = now_ms() + delay.as_millis() as u64;
            record.status = RunStatus::Retrying;
            record.next_attempt = Some(format_ms(not_before));
            record.error = Some(RunError {
                kind: RunErrorKind::Transient,
                ..plain_error(&record.script, format!("the run crashed: {message}"))
            });
        }
        self.save(record, not_before).await
    }
}

impl DueWork for Executor {
    const KIND: &'static str = "run";

    fn due(
        &self,
        now_ms: u64,
        after: Option<DueKey>,
        admit: &mut dyn FnMut(DueKey) -> Admit,
    ) -> Result<Due, ReadError> {
        RunsView(&*self.store).due(now_ms, after, admit)
    }

    /// A run's script (a hash of its name): one script's runs share its slots (see
    /// `process::script_share`).
    fn group(&self, id: u64) -> Option<u64> {
        if let Some(g) = self
            .scripts_of
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Some(*g);
        }
        // Unreadable now: no group (the run is not held back; running it reports the error).
        let script = RunsView(&*self.store).get(id).ok()??.script;
        let group = super::scheduler::group_of(&script);
        self.scripts_of
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, group);
        Some(group)
    }

    fn execute(self: Arc<Self>, id: u64) -> Work {
        // `Instrument`, not a guard held across `.await`: the span is entered only while this
        // future is polled, so log lines carry their own run's id.
        Box::pin(
            async move { self.execute_run(id).await }
                .instrument(tracing::info_span!("run", run_id = id)),
        )
    }

    fn panicked(self: Arc<Self>, id: u64, count: u32, message: String) -> Task {
        Box::pin(async move { self.record_panic(id, count, message).await })
    }
}

impl prom::MetricsSource for Executor {
    fn render_metrics(&self, out: &mut String) {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        prom::family(
            out,
            "engine_runs_total",
            "counter",
            "Script runs recorded, by script and status.",
        );
        for ((script, status), n) in &stats.by_script {
            prom::sample(
                out,
                "engine_runs_total",
                &[("script", script), ("status", status)],
                n,
            );
        }
        prom::family(
            out,
            "engine_run_duration_seconds",
            "histogram",
            "Wall time of script runs.",
        );
        for (bound, n) in RUN_DURATION_BUCKETS.iter().zip(stats.buckets) {
            prom::sample(
                out,
                "engine_run_duration_seconds_bucket",
                &[("le", &bound.to_string())],
                n,
            );
        }
        prom::sample(
            out,
            "engine_run_duration_seconds_bucket",
            &[("le", "+Inf")],
            stats.count,
        );
        prom::sample(
            out,
            "engine_run_duration_seconds_sum",
            &[],
            stats.sum_seconds,
        );
        prom::sample(out, "engine_run_duration_seconds_count", &[], stats.count);
        let pending = RunsView(&*self.store).pending_count().unwrap_or(0);
        prom::single(
            out,
            "engine_runs_pending",
            "gauge",
            "Runs waiting or in flight.",
            pending,
        );
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
        hint: None,
        not_before_ms: None,
    }
}

/// Scrubs the secrets from what a far side may have put into a run's error and log lines.
fn scrub_error(error: &mut RunError) {
    redact::scrub_in_place(&mut error.message);
    for t in &mut error.trace {
        redact::scrub_in_place(t);
    }
}

fn scrub_log(log: &mut [LogLine]) {
    for line in log {
        redact::scrub_in_place(&mut line.message);
    }
}

/// Scrubs a run's log lines and error, where a far side's text lands (an error body, a profile
/// field logged): what `engine run` and `engine check` print passes through here, as run records
/// do. Mail the script composed is left as written (a short secret that is also a common word
/// would garble it); it goes only to the addresses the script chose.
pub fn scrub_outcome(outcome: &mut RunOutcome) {
    scrub_log(&mut outcome.log);
    if let Err(e) = &mut outcome.result {
        scrub_error(e);
    }
}

fn scrub_record(record: &mut RunRecord) {
    scrub_log(&mut record.log);
    if let Some(e) = &mut record.error {
        scrub_error(e);
    }
}
