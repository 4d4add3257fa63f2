//! The dispatcher: turns stored events into pending runs, one per subscribed script, and keeps
//! the newest events of capturing hooks as samples. It reads event heads (no bodies) and reads a
//! body only for the events capture keeps. The runs, the samples and the dispatch cursor move in
//! one transaction, so an event gets its runs exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::script::LiveScripts;
use crate::store::runs::{self, RunRecord};
use crate::store::samples::{self, MAX_SAMPLES_PER_TYPE};
use crate::store::{self, EventHead, Store, StoreError, StoredEvent};

/// Events turned into runs per dispatcher transaction: bounds one transaction's size.
pub const DISPATCH_BATCH: usize = 512;
/// Events per dispatcher transaction while deliveries come ([`Store::deliveries_coming`]): the
/// writer caps the other writes' transaction at a few jobs then, but one job creating 512
/// runs is hundreds of inserts, which a delivery arriving meanwhile waits for. Measured with 64
/// throughout against [`DISPATCH_BATCH`] (three rounds, BENCHMARKS.md): the answer p99 under
/// load 6.1–7.8 → 4.5–5.3 ms, but end to end −25 %, as the dispatcher awaits each commit; so
/// only while deliveries come, and the backlog left when they stop goes at [`DISPATCH_BATCH`].
pub const DISPATCH_WHILE_DELIVERING: usize = 64;
/// How often the dispatcher looks for new events without being woken.
pub const DISPATCH_TICK: Duration = Duration::from_secs(1);

/// Turns events into runs.
pub struct Dispatcher {
    store: Arc<Store>,
    scripts: LiveScripts,
    /// Hooks whose events are kept as samples (`capture = true`).
    capture_hooks: HashSet<String>,
    /// Woken when runs were created.
    runs_wake: Arc<Notify>,
    failures: crate::util::Throttle,
}

impl Dispatcher {
    pub fn new(
        store: Arc<Store>,
        scripts: LiveScripts,
        capture_hooks: HashSet<String>,
        runs_wake: Arc<Notify>,
    ) -> Dispatcher {
        Dispatcher {
            store,
            scripts,
            capture_hooks,
            runs_wake,
            failures: crate::util::Throttle::new(crate::store::FAILURE_LOG_INTERVAL),
        }
    }

    /// Dispatches until `shutdown` turns true, woken by every commit that stored events.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.dispatch_once().await {
                Ok(true) => {
                    self.failures.reset();
                    continue;
                }
                Ok(false) => {}
                Err(error) => {
                    if let Some(left_out) = self.failures.ready() {
                        tracing::error!(%error, left_out, "dispatch failed; retrying");
                    }
                }
            }
            tokio::select! {
                _ = self.store.events_committed().notified() => {}
                _ = tokio::time::sleep(DISPATCH_TICK) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Creates the runs of the next batch of undispatched events. `Ok(false)`: none waiting.
    pub async fn dispatch_once(&self) -> Result<bool, StoreError> {
        let history = self.store.history();
        let cursor = history.dispatch_cursor()?;
        let batch = if self.store.deliveries_coming() {
            DISPATCH_WHILE_DELIVERING
        } else {
            DISPATCH_BATCH
        };
        let heads = history.event_heads_after(cursor, batch)?;
        let Some(last) = heads.last().map(|e| e.seq) else {
            return Ok(false);
        };
        let set = self.scripts.load_full();
        let mut records = Vec::new();
        for e in &heads {
            for s in set.matching(&e.hook, &e.event_type) {
                records.push(RunRecord::new(0, e, &s.name, None));
            }
            // A new script that does not load gets a failed run for every event it would have
            // received (`engine replay --failed` runs them once it is fixed).
            for b in set.broken_matching(&e.hook, &e.event_type) {
                records.push(RunRecord::new(0, e, &b.name, None));
            }
        }
        let keep = self.samples_of(&heads)?;
        let (n_events, count) = (heads.len(), records.len());
        self.store
            .write(move |txn| {
                runs::create(txn, records)?;
                let keep: Vec<&StoredEvent> = keep.iter().collect();
                samples::capture(txn, &keep)?;
                store::set_dispatch_cursor(txn, last)
            })
            .await?;
        tracing::debug!(events = n_events, runs = count, "dispatched");
        self.runs_wake.notify_one();
        Ok(true)
    }

    /// The events of capturing hooks that capture keeps: the newest [`MAX_SAMPLES_PER_TYPE`]
    /// of each (hook, event type) in the batch (older ones would be dropped at once), read whole.
    fn samples_of(&self, heads: &[EventHead]) -> Result<Vec<StoredEvent>, StoreError> {
        let mut per_type: HashMap<(&str, &str), usize> = HashMap::new();
        let mut chosen = Vec::new();
        for e in heads.iter().rev() {
            if !self.capture_hooks.contains(&e.hook) {
                continue;
            }
            let n = per_type.entry((&e.hook, &e.event_type)).or_default();
            if *n < MAX_SAMPLES_PER_TYPE {
                *n += 1;
                chosen.push(e.seq);
            }
        }
        chosen.reverse();
        let history = self.store.history();
        let mut out = Vec::with_capacity(chosen.len());
        for seq in chosen {
            if let Some(e) = history.event_by_seq(seq)? {
                out.push(e);
            }
        }
        Ok(out)
    }
}
