//! Processing: the dispatcher turns stored events into pending runs (one per matching script),
//! the shared scheduler runs them on blocking threads and records each result, retention prunes
//! old history.
//!
//! Invariants: a run's result, its actions and its removal from the pending set are one
//! transaction, so a crash at any point leaves each run either pending (and run again after the
//! restart) or completed once. Scripts never do I/O themselves: effects are actions, committed
//! with the run's success and carried out afterwards by the action queue (`actions`).
//!
//! # Layout
//!
//! - `scheduler`: [`DuePool`], the one scheduler of due work (runs here, mail in `actions`), and
//!   [`Backoff`], the one retry-delay rule.
//! - `dispatcher`: events → pending runs and captured samples.
//! - `executor`: one run: load, run the script, record the result and queue its actions.
//! - `retention`: hourly pruning of what is older than `retention_days`.
//! - `timers`: [`TimerClock`], which turns due timers into runs (kind `timer`) and prunes
//!   expired state.

mod dispatcher;
mod executor;
pub mod retention;
mod scheduler;
mod timers;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

pub use dispatcher::{DISPATCH_BATCH, DISPATCH_WHILE_DELIVERING, Dispatcher};
pub use executor::{
    DryAction, DryRunOutcome, Executor, MARK_IN_FLIGHT_AFTER, MAX_RUN_ATTEMPTS,
    MAX_STATE_CONFLICTS, RUN_BACKOFF, RUN_DURATION_BUCKETS, scrub_outcome,
};
pub use scheduler::{
    Admit, Backoff, Done, Due, DueKey, DuePool, DueWork, MAX_DUE_SCAN, MAX_PANICS, PAUSE_FIRST,
    PAUSE_MAX, Step, Task, Work, group_of, panic_message,
};
pub use timers::{FIRE_BATCH, STATE_PRUNE_INTERVAL, TIMER_TICK, TimerClock};

/// One run a replay makes: the script (or its name), the event, and the run it replays.
type Planned<S> = (S, StoredEvent, Option<u64>);

/// Dry runs a replay confirmation shows at most: a replay of thousands of failed runs is
/// previewed by its first ones (each dry run holds a worker thread for up to its time limit).
pub const MAX_DRY_RUNS: usize = 20;

/// The action executors' wakers, by kind: a run that queued actions wakes the executor of each
/// kind it queued (a kind without one is picked up at its executor's next tick).
#[derive(Debug, Clone, Default)]
pub struct ActionWakers {
    kinds: Vec<(crate::script::ActionKind, Arc<Notify>)>,
    /// The timer clock's, woken when a run scheduled a timer (it may be due before the
    /// clock's next look).
    timers: Option<Arc<Notify>>,
}

impl ActionWakers {
    /// These wakers and `waker` for `kind`.
    pub fn with(mut self, kind: crate::script::ActionKind, waker: Arc<Notify>) -> ActionWakers {
        self.kinds.push((kind, waker));
        self
    }

    /// Wakes the executor of each kind among `actions`.
    pub fn wake(&self, actions: &[crate::script::Action]) {
        for (kind, waker) in &self.kinds {
            if actions.iter().any(|a| a.kind() == *kind) {
                waker.notify_one();
            }
        }
    }

    /// Wakes the timer clock.
    pub fn wake_timers(&self) {
        if let Some(w) = &self.timers {
            w.notify_one();
        }
    }
}

use crate::script::{Host, Limits, LiveScripts, Script, Senders};
use crate::store::runs::{self, RunRecord, RunsView};
use crate::store::{ReadError, Store, StoreError, StoredEvent, WriteError};
use crate::util::prom;

/// How often the scheduler looks at the pending runs without being woken (retries coming due).
pub const SCHEDULER_TICK: Duration = Duration::from_millis(250);
/// Run slots per core. A run holds its slot from its start until its result is handed back,
/// also while it sleeps or waits for Okta, so more slots than cores keep the cores busy while
/// some runs wait. Only as many runs as there are cores compute at once (the script pool's
/// compute slots, `script::pool`); the others wait queued for a script thread that computes,
/// which goes from one run to the next without sleeping and hands their results over together.
/// Measured: 8 per core against 2 cost 9–23 % less CPU per event end to end, and 4 per core was
/// within the noise of 8 (BENCHMARKS.md, "Compute slots").
pub const RUN_SLOTS_PER_CORE: usize = 4;
/// Fewest run slots, whatever the core count: with fewer, the per-script share
/// ([`script_share`]) would leave one script a single slot on a one-core machine.
pub const MIN_RUN_SLOTS: usize = 4;
/// One script's runs hold at most 1/this of the slots: a script whose runs are slow (sleeping,
/// waiting on a hanging far side, up to its time limit each) leaves the other half to the
/// others; with [`RUN_SLOTS_PER_CORE`] = 4, that half is still two slots per core, so a lone
/// busy script keeps every core working.
pub const SCRIPT_SHARE_DIVISOR: usize = 2;
/// The run slots for a machine with `cores` cores. Each slot's run may hold `[limits]
/// max_memory_mb`, so the worst case is slots × that (reached only when every slot's run holds
/// its heap while it waits: a queued run has not started).
pub fn run_slots(cores: usize) -> usize {
    (cores.max(1) * RUN_SLOTS_PER_CORE).max(MIN_RUN_SLOTS)
}

/// How many of `slots` one script's runs may hold at once.
pub fn script_share(slots: usize) -> usize {
    (slots / SCRIPT_SHARE_DIVISOR).max(1)
}

/// What processing is built from (the app derives it from the config).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Runs at once: [`run_slots`].
    pub workers: usize,
    /// Runs of one script at once: [`script_share`] of `workers`.
    pub per_script: usize,
    pub limits: Limits,
    /// The From addresses the runs' mails may name (`[smtp] from`, `allowed_from`).
    pub senders: Senders,
    /// Hooks whose events are kept as samples (`capture = true`).
    pub capture_hooks: HashSet<String>,
}

/// Turns events into runs and runs them.
pub struct Processor {
    store: Arc<Store>,
    scripts: LiveScripts,
    dispatcher: Arc<Dispatcher>,
    executor: Arc<Executor>,
    pool: Arc<DuePool<Executor>>,
    /// Fires due timers into runs; prunes expired state.
    clock: Arc<TimerClock>,
}

impl Processor {
    /// `wakers`: each action kind's executor, notified when a successful run queued its kind.
    pub fn new(
        store: Arc<Store>,
        scripts: LiveScripts,
        host: Arc<dyn Host>,
        settings: Settings,
        mut wakers: ActionWakers,
    ) -> Arc<Processor> {
        let timer_wake = Arc::new(Notify::new());
        wakers.timers = Some(timer_wake.clone());
        let executor = Arc::new(Executor::new(
            store.clone(),
            scripts.clone(),
            host,
            settings.limits,
            settings.senders,
            wakers,
        ));
        let pool = DuePool::shared(
            executor.clone(),
            settings.workers,
            settings.per_script,
            SCHEDULER_TICK,
        );
        let dispatcher = Arc::new(Dispatcher::new(
            store.clone(),
            scripts.clone(),
            settings.capture_hooks,
            pool.waker(),
        ));
        let clock = Arc::new(TimerClock::new(store.clone(), pool.waker(), timer_wake));
        Arc::new(Processor {
            store,
            scripts,
            dispatcher,
            executor,
            pool,
            clock,
        })
    }

    /// Runs the dispatcher and the scheduler until `shutdown` turns true, then waits for the
    /// runs in flight to be recorded.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        self.executor.recover_in_flight().await;
        let dispatcher = tokio::spawn(self.dispatcher.clone().run(shutdown.clone()));
        let clock = tokio::spawn(self.clock.clone().run(shutdown.clone()));
        self.pool.clone().run(shutdown).await;
        let _ = dispatcher.await;
        let _ = clock.await;
    }

    /// Creates the runs of the next batch of undispatched events. `Ok(false)`: none waiting.
    pub async fn dispatch_once(&self) -> Result<bool, StoreError> {
        self.dispatcher.dispatch_once().await
    }

    /// Resolves the next time a run's work ends (for waiters such as `replay`).
    pub async fn run_finished(&self) {
        self.pool.finished().await
    }

    /// Creates new runs for an event (current script versions; only `script` when given), as
    /// `replay` does.
    pub async fn replay_event(
        &self,
        uuid: &str,
        script: Option<&str>,
    ) -> Result<Vec<u64>, ReplayError> {
        let records = self
            .plan_event(uuid, script)?
            .into_iter()
            .map(|(s, event, replay_of)| RunRecord::new(0, &event.head(), &s.name, replay_of))
            .collect();
        self.create_runs(records).await
    }

    /// Creates new runs for the latest failed run of each (event, script), of `script` only
    /// when given.
    pub async fn replay_failed(&self, script: Option<&str>) -> Result<Vec<u64>, ReplayError> {
        let records = self
            .plan_failed(script)?
            .into_iter()
            .map(|(s, event, replay_of)| RunRecord::new(0, &event.head(), &s, replay_of))
            .collect();
        self.create_runs(records).await
    }

    /// What a replay of `target` would do: each of its runs dry-run with the current scripts
    /// (the same host and limits as a run); nothing is recorded or carried out.
    pub async fn dry_run(
        &self,
        uuid: Option<&str>,
        script: Option<&str>,
    ) -> Result<Vec<DryRunOutcome>, ReplayError> {
        let set = self.scripts.load_full();
        let planned: Vec<(Arc<Script>, StoredEvent)> = match uuid {
            Some(u) => self
                .plan_event(u, script)?
                .into_iter()
                .map(|(s, e, _)| (s, e))
                .collect(),
            None => self
                .plan_failed(script)?
                .into_iter()
                .filter_map(|(name, e, _)| set.get(&name).cloned().map(|s| (s, e)))
                .collect(),
        };
        let mut out = Vec::new();
        for (s, e) in planned.into_iter().take(MAX_DRY_RUNS) {
            out.push(self.executor.dry_run(s, e).await);
        }
        Ok(out)
    }

    /// The runs a replay of event `uuid` makes: each subscribed script (or `script` only),
    /// the event, and the run it replays.
    fn plan_event(
        &self,
        uuid: &str,
        script: Option<&str>,
    ) -> Result<Vec<Planned<Arc<Script>>>, ReplayError> {
        let event = self
            .store
            .history()
            .event_by_uuid(uuid)?
            .ok_or_else(|| ReplayError::NoSuchEvent(uuid.to_string()))?;
        let set = self.scripts.load_full();
        let previous = RunsView(&*self.store).of_event(uuid)?;
        if let Some(name) = script
            && set.get(name).is_none()
        {
            return Err(ReplayError::NoSuchScript(name.to_string()));
        }
        Ok(set
            .matching(&event.hook, &event.event_type)
            .into_iter()
            .filter(|s| script.is_none_or(|n| n == s.name))
            .map(|s| {
                let replay_of = previous.iter().find(|r| r.script == s.name).map(|r| r.id);
                (s, event.clone(), replay_of)
            })
            .collect())
    }

    /// The runs a replay of the failed runs makes: (script name, event, the failed run).
    fn plan_failed(&self, script: Option<&str>) -> Result<Vec<Planned<String>>, ReplayError> {
        let failed = RunsView(&*self.store).latest_failed()?;
        let history = self.store.history();
        let mut out = Vec::new();
        for r in failed {
            if script.is_some_and(|n| n != r.script) {
                continue;
            }
            if let Some(event) = history.event_by_seq(r.event_seq)? {
                out.push((r.script.clone(), event, Some(r.id)));
            }
        }
        Ok(out)
    }

    async fn create_runs(&self, records: Vec<RunRecord>) -> Result<Vec<u64>, ReplayError> {
        let ids = self
            .store
            .write(move |txn| runs::create(txn, records))
            .await?;
        self.pool.waker().notify_one();
        Ok(ids)
    }

    /// True when no run is pending or in flight.
    pub fn idle(&self) -> Result<bool, ReadError> {
        Ok(RunsView(&*self.store).pending_count()? == 0)
    }
}

impl prom::MetricsSource for Processor {
    fn render_metrics(&self, out: &mut String) {
        self.executor.render_metrics(out);
        self.clock.render_metrics(out);
    }
}

/// Why a replay could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no stored event has uuid `{0}`\n  hint: `engine events` lists the stored events")]
    NoSuchEvent(String),
    #[error("no script `{0}` is loaded\n  hint: `engine scripts` lists the scripts")]
    NoSuchScript(String),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] WriteError),
}
