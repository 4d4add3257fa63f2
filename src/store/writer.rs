//! The writer thread: owns every write transaction (group commit). It takes the first job
//! waiting, gathers every other job waiting at that moment, applies them all in one transaction,
//! commits durably, and only then answers each job. Nothing is acknowledged before its commit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, WriteTransaction};
use tokio::sync::{Notify, oneshot};

use super::dedup::{KeyHash, Seen, key_hash};
use super::inbox::{
    DELIVERIES, DELIVERY_KEYS, EVENTS, META, NextSeq, PackedDelivery, QUARANTINE, Stored,
};
use super::{CommitMode, MAX_BATCH_BYTES, MAX_BATCH_JOBS, WriteError, storage};

pub(crate) enum Job {
    Delivery(PackedDelivery, oneshot::Sender<Result<Stored, WriteError>>),
    Quarantine {
        hook: String,
        received_ms: u64,
        reason: String,
        body: Bytes,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    Probe(oneshot::Sender<Result<(), WriteError>>),
    /// Any other write (runs, actions, samples): applied inside the shared transaction; it
    /// answers through its own typed channel, only after the commit (see [`TxnFn`]).
    Txn(TxnFn),
}

/// A write applied by the writer thread inside a batch's transaction. It returns whether it
/// succeeded (an error fails the whole batch: a transaction cannot be half committed) and the
/// [`Reply`] that hands its own result to its caller once the batch's fate is known.
pub(crate) type TxnFn =
    Box<dyn FnOnce(&WriteTransaction) -> (Result<(), WriteError>, Reply) + Send>;
/// Called with the outcome of the commit (the batch's error if it failed).
pub(crate) type Reply = Box<dyn FnOnce(Result<(), WriteError>) + Send>;

impl Job {
    fn size(&self) -> usize {
        match self {
            Job::Delivery(d, _) => d.stored.len(),
            Job::Quarantine { body, .. } => body.len(),
            Job::Probe(_) | Job::Txn(_) => 0,
        }
    }
}

/// Counters of the writer thread: batches, jobs, and where its time went.
#[derive(Debug, Default)]
pub struct WriterStats {
    batches: AtomicU64,
    jobs: AtomicU64,
    /// Applying and committing, in µs.
    busy_us: AtomicU64,
    /// Inside `commit()` (writing the pages and waiting for the disk), in µs.
    commit_us: AtomicU64,
}

/// A reading of [`WriterStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterCounts {
    pub batches: u64,
    pub jobs: u64,
    pub busy_us: u64,
    pub commit_us: u64,
}

impl WriterStats {
    pub(crate) fn record(&self, jobs: usize, busy: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.jobs.fetch_add(jobs as u64, Ordering::Relaxed);
        self.busy_us
            .fetch_add(busy.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn record_commit(&self, took: Duration) {
        self.commit_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn read(&self) -> WriterCounts {
        WriterCounts {
            batches: self.batches.load(Ordering::Relaxed),
            jobs: self.jobs.load(Ordering::Relaxed),
            busy_us: self.busy_us.load(Ordering::Relaxed),
            commit_us: self.commit_us.load(Ordering::Relaxed),
        }
    }
}

/// The dedup index; a panic elsewhere while holding it leaves it usable (it is only a map).
pub(crate) fn lock(seen: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn writer_loop(
    db: &Database,
    seen: &Mutex<Seen>,
    stats: &WriterStats,
    rx: mpsc::Receiver<Job>,
    mode: CommitMode,
    mut next: NextSeq,
    events_committed: &Notify,
) {
    let max_jobs = match mode {
        CommitMode::Group => MAX_BATCH_JOBS,
        CommitMode::PerRequest => 1,
    };
    let mut batch: Vec<Job> = Vec::new();
    // No waiting for jobs still to come: under load the clients answered by one commit come back
    // while the next one runs, so two batches alternate and the disk never idles. (Waiting for
    // them to form one larger batch was measured slower: the disk idles while they come back.)
    while let Ok(first) = rx.recv() {
        let mut bytes = first.size();
        batch.push(first);
        while batch.len() < max_jobs && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.size();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let before = next;
        let started = Instant::now();
        let mut replies = Vec::new();
        let r = apply_batch(db, seen, &mut batch, &mut next, stats, &mut replies);
        stats.record(batch.len(), started.elapsed());
        match r {
            Ok(results) => {
                if next.event != before.event {
                    events_committed.notify_one();
                }
                for (job, result) in batch.drain(..).zip(results) {
                    answer(job, Ok(result));
                }
                for reply in replies {
                    reply(Ok(()));
                }
            }
            Err(e) => {
                next = before;
                tracing::error!(error = %e, jobs = batch.len(), "store commit failed");
                for job in batch.drain(..) {
                    answer(job, Err(e.clone()));
                }
                for reply in replies {
                    reply(Err(e.clone()));
                }
            }
        }
    }
}

/// Answers a delivery, quarantine or probe job (a `Txn` job answers through its own reply).
fn answer(job: Job, result: Result<Stored, WriteError>) {
    match job {
        Job::Delivery(_, reply) => {
            let _ = reply.send(result);
        }
        Job::Quarantine { reply, .. } | Job::Probe(reply) => {
            let _ = reply.send(result.map(|_| ()));
        }
        Job::Txn(_) => {}
    }
}

fn apply_batch(
    db: &Database,
    seen: &Mutex<Seen>,
    batch: &mut [Job],
    next: &mut NextSeq,
    stats: &WriterStats,
    replies: &mut Vec<Reply>,
) -> Result<Vec<Stored>, WriteError> {
    // Keys this batch adds to the dedup index, taken out again if it does not commit.
    let mut added = Added::default();
    let result = apply_jobs(db, seen, batch, next, stats, &mut added, replies);
    if result.is_err() {
        lock(seen).remove(&added.deliveries, &added.events);
    }
    result
}

/// The dedup keys a batch added.
#[derive(Default)]
struct Added {
    deliveries: Vec<KeyHash>,
    events: Vec<KeyHash>,
}

fn apply_jobs(
    db: &Database,
    seen: &Mutex<Seen>,
    batch: &mut [Job],
    next: &mut NextSeq,
    stats: &WriterStats,
    added: &mut Added,
    replies: &mut Vec<Reply>,
) -> Result<Vec<Stored>, WriteError> {
    let txn = db.begin_write().map_err(storage)?;
    let mut results: Vec<Stored> = Vec::with_capacity(batch.len());
    {
        let mut deliveries = txn.open_table(DELIVERIES).map_err(storage)?;
        let mut delivery_keys = txn.open_table(DELIVERY_KEYS).map_err(storage)?;
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        // Released before the `Txn` jobs run: retention's may take it.
        let mut seen = lock(seen);
        for job in batch.iter() {
            let mut stored = Stored::default();
            match job {
                Job::Delivery(
                    PackedDelivery {
                        delivery: d,
                        stored: body,
                    },
                    _,
                ) => {
                    let id = d.parsed.delivery_id.as_deref().unwrap_or("");
                    let dseq = next.delivery;
                    if !id.is_empty() {
                        let key = key_hash(id);
                        if seen.add_delivery(key, dseq).is_some() {
                            stored.duplicate_delivery = true;
                            results.push(stored);
                            continue;
                        }
                        added.deliveries.push(key);
                        delivery_keys.insert(dseq, id).map_err(storage)?;
                    }
                    next.delivery += 1;
                    deliveries
                        .insert(
                            dseq,
                            (
                                d.hook.as_str(),
                                d.received_ms,
                                id,
                                d.parsed.event_time.as_str(),
                                d.parsed.source.as_str(),
                                &body[..],
                            ),
                        )
                        .map_err(storage)?;
                    for ev in &d.parsed.events {
                        let eseq = next.event;
                        let key = key_hash(&ev.uuid);
                        if seen.add_event(key, eseq).is_some() {
                            stored.duplicate_events += 1;
                            continue;
                        }
                        added.events.push(key);
                        next.event += 1;
                        // Bodies are capped far below 4 GiB (MAX_BODY_BYTES_CEILING).
                        let (offset, len) = (ev.span.start as u32, ev.span.len() as u32);
                        events
                            .insert(
                                eseq,
                                (
                                    dseq,
                                    ev.uuid.as_str(),
                                    ev.event_type.as_str(),
                                    ev.published.as_str(),
                                    offset,
                                    len,
                                ),
                            )
                            .map_err(storage)?;
                        stored.events += 1;
                    }
                }
                Job::Quarantine {
                    hook,
                    received_ms,
                    reason,
                    body,
                    ..
                } => {
                    let mut q = txn.open_table(QUARANTINE).map_err(storage)?;
                    q.insert(
                        next.quarantine,
                        (hook.as_str(), *received_ms, reason.as_str(), &body[..]),
                    )
                    .map_err(storage)?;
                    next.quarantine += 1;
                }
                Job::Probe(_) => {
                    let mut meta = txn.open_table(META).map_err(storage)?;
                    meta.insert("probe_ms", crate::util::now_ms())
                        .map_err(storage)?;
                }
                // Applied below, once the ingest tables are closed, so that they may open any
                // table themselves.
                Job::Txn(_) => {}
            }
            results.push(stored);
        }
    }
    let mut failed = None;
    for job in batch.iter_mut() {
        if let Job::Txn(f) = job {
            let f = std::mem::replace(f, Box::new(|_| (Ok(()), Box::new(|_| ()))));
            let (applied, reply) = f(&txn);
            replies.push(reply);
            if let (Err(e), None) = (applied, &failed) {
                failed = Some(e);
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let committing = Instant::now();
    txn.commit().map_err(storage)?;
    stats.record_commit(committing.elapsed());
    Ok(results)
}
