//! Retention: events, deliveries, finished runs and sent mail older than `retention_days` are
//! pruned in small transactions, never anything a pending run, a pending timer or the
//! dispatcher still needs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::{self, Store, WriteError};

/// How often pruning runs.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// The first pass waits a little after start, so a restart is not slowed by it.
pub const FIRST_PRUNE_DELAY: Duration = Duration::from_secs(60);
/// Rows looked at per table per transaction: keeps each write short beside live traffic.
pub const PRUNE_BATCH: usize = 1000;

/// What a pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub store: store::Pruned,
    pub runs: u64,
    pub mails: u64,
}

/// One pruning pass over everything older than `cutoff_ms`, batch by batch.
pub async fn prune_once(store: &Store, cutoff_ms: u64) -> Result<PruneReport, WriteError> {
    let mut total = PruneReport::default();
    loop {
        let pass = store
            .write(move |txn| {
                let (runs, oldest_run) = store::runs::prune(txn, cutoff_ms, PRUNE_BATCH)?;
                // A pending timer runs on its scheduling run's event, maybe days later.
                let oldest_needed = oldest_run.min(store::timers::oldest_event_needed(txn)?);
                let mails = store::actions::prune(txn, cutoff_ms, PRUNE_BATCH)?;
                let s = store::prune(txn, cutoff_ms, oldest_needed, PRUNE_BATCH)?;
                store::counts::prune(txn, cutoff_ms)?;
                Ok(PruneReport {
                    store: s,
                    runs,
                    mails,
                })
            })
            .await?;
        store.forget(&pass.store.keys);
        total.store.deliveries += pass.store.deliveries;
        total.store.events += pass.store.events;
        total.store.quarantined += pass.store.quarantined;
        total.runs += pass.runs;
        total.mails += pass.mails;
        let progressed = pass.store.deliveries
            + pass.store.events
            + pass.store.quarantined
            + pass.runs
            + pass.mails;
        if progressed == 0 {
            return Ok(total);
        }
    }
}

/// Prunes every [`PRUNE_INTERVAL`] until shutdown.
pub async fn run(store: Arc<Store>, retention_days: u32, mut shutdown: watch::Receiver<bool>) {
    let mut wait = FIRST_PRUNE_DELAY;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let cutoff = crate::util::now_ms().saturating_sub(u64::from(retention_days) * 86_400_000);
        match prune_once(&store, cutoff).await {
            Ok(r) => tracing::info!(
                deliveries = r.store.deliveries,
                events = r.store.events,
                runs = r.runs,
                mails = r.mails,
                quarantined = r.store.quarantined,
                retention_days,
                "pruned old history"
            ),
            Err(error) => tracing::error!(%error, "pruning failed"),
        }
        // Pruned runs leave their keys in the dedup filter: rebuilt (off the runtime's
        // threads) once they are most of it.
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.compact_dedup()).await {
            Ok(Ok(rebuilt)) if rebuilt > 0 => tracing::info!(rebuilt, "rebuilt the dedup filters"),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "rebuilding the dedup filters failed"),
            Err(error) => tracing::error!(%error, "rebuilding the dedup filters panicked"),
        }
        wait = PRUNE_INTERVAL;
    }
}
