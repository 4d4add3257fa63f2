//! The timer clock: turns due timers into pending runs (kind `timer`), each in the transaction
//! that removes it, so a timer fires once whatever crashes; after downtime every overdue timer
//! fires once, at start. Also prunes the scripts' expired state now and then (expired keys
//! already read as absent; pruning only frees their rows).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::store::{Store, StoreError, kv, timers};
use crate::util::{now_ms, prom};

/// Longest the clock sleeps without looking at the timers: a timer scheduled by another path
/// than a run (none today) or missed by a wake is fired at most this late.
pub const TIMER_TICK: Duration = Duration::from_secs(1);
/// Timers fired per transaction: bounds one commit's size when thousands come due at once
/// (after downtime); the clock goes on at once with the next batch.
pub const FIRE_BATCH: usize = 512;
/// How often expired state rows are pruned.
pub const STATE_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Fires due timers into runs.
pub struct TimerClock {
    store: Arc<Store>,
    /// The runs' scheduler, woken when timers became runs.
    runs: Arc<Notify>,
    /// Woken when a run scheduled a timer.
    wake: Arc<Notify>,
    fired: AtomicU64,
    failures: crate::util::Throttle,
}

impl TimerClock {
    pub fn new(store: Arc<Store>, runs: Arc<Notify>, wake: Arc<Notify>) -> TimerClock {
        TimerClock {
            store,
            runs,
            wake,
            fired: AtomicU64::new(0),
            failures: crate::util::Throttle::new(crate::store::FAILURE_LOG_INTERVAL),
        }
    }

    /// Fires every timer due now, in batches; returns how many fired and when the next one is
    /// due.
    pub async fn fire_due(&self) -> Result<(usize, Option<u64>), StoreError> {
        let mut fired = 0;
        loop {
            let now = now_ms();
            let (due, next) = timers::due(&*self.store, now, FIRE_BATCH)?;
            if due.is_empty() {
                return Ok((fired, next));
            }
            let n = due.len();
            let runs = self
                .store
                .write(move |txn| timers::fire(txn, &due, now))
                .await?;
            fired += runs.len();
            self.fired.fetch_add(runs.len() as u64, Ordering::Relaxed);
            for id in &runs {
                tracing::debug!(run_id = id, "timer fired");
            }
            self.runs.notify_one();
            if n < FIRE_BATCH {
                return Ok((fired, timers::due(&*self.store, now_ms(), 0)?.1));
            }
        }
    }

    /// Fires due timers until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut last_prune = Instant::now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let next = match self.fire_due().await {
                Ok((_, next)) => next,
                Err(error) => {
                    if let Some(left_out) = self.failures.ready() {
                        tracing::error!(%error, left_out, "cannot fire due timers");
                    }
                    None
                }
            };
            if last_prune.elapsed() >= STATE_PRUNE_INTERVAL {
                last_prune = Instant::now();
                let now = now_ms();
                match self
                    .store
                    .write(move |txn| kv::prune_expired(txn, now))
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(pruned = n, "expired state keys pruned"),
                    Err(error) => tracing::warn!(%error, "cannot prune expired state"),
                }
            }
            let wait = next
                .map(|due| Duration::from_millis(due.saturating_sub(now_ms())))
                .unwrap_or(TIMER_TICK)
                .min(TIMER_TICK);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

impl prom::MetricsSource for TimerClock {
    fn render_metrics(&self, out: &mut String) {
        prom::single(
            out,
            "engine_timers_fired_total",
            "counter",
            "Timers fired into runs since start.",
            self.fired.load(Ordering::Relaxed),
        );
        prom::single(
            out,
            "engine_timers_pending",
            "gauge",
            "Timers scheduled and not yet due.",
            timers::count(&*self.store).unwrap_or(0),
        );
    }
}
