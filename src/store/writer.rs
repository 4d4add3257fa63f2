//! The writer thread: owns every write transaction (group commit). It takes the first job
//! waiting, gathers every other job waiting at that moment, applies them all in one transaction,
//! commits durably, and only then answers each job. Nothing is acknowledged before its commit.
//! A batch holding both deliveries (any ingest job) and other writes commits them as two
//! transactions, the deliveries first, so that a delivery's answer never waits for the rest.
//! While deliveries come (one within [`DELIVERING_WINDOW`]), the other writes' transaction
//! takes at most [`OTHERS_WHILE_DELIVERING`] of them; the rest wait, in order, at the front of
//! the next batch, so that a delivery never waits behind a long commit of run outcomes either.
//! A stream of other writes with no delivery coming (two or more in a batch) is given
//! [`OTHERS_LINGER`] to gather up to [`OTHERS_GATHER`] of them before its commit, which a
//! delivery arriving meanwhile cuts short: part of a commit's cost is per transaction, and run
//! outcomes have no one waiting on their answer.
//!
//! When storage fails (a full disk, an I/O error) redb refuses every later write until the
//! database is closed and opened again. The writer then answers every job at once with an error
//! (a delivery gets 503, never a false 200), and reopens the file with backoff
//! ([`REOPEN_FIRST_DELAY`] doubling to [`REOPEN_MAX_DELAY`]), logging once per
//! [`FAILURE_LOG_INTERVAL`]; once the file opens and takes a write again, writes succeed again
//! without a restart.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use redb::{Database, WriteTransaction};
use tokio::sync::{Notify, oneshot};

use crate::util::Throttle;

use super::dedup::{self, DEDUP_RUNS, KeyHash, Kind, Seal, Seen, key_hash};
use super::inbox::{
    DELIVERIES, DELIVERY_KEYS, DeliveryValue, EVENTS, META, NewDelivery, NextSeq, PackedDelivery,
    QUARANTINE, Stored,
};
use super::{CommitMode, MAX_BATCH_BYTES, MAX_BATCH_JOBS, WriteError, storage};

/// First wait before reopening a store that failed: short, so a disk that frees up is used again
/// within a second.
pub const REOPEN_FIRST_DELAY: Duration = Duration::from_millis(250);
/// Longest wait between two reopen attempts: a disk that stays full is tried twice a minute.
pub const REOPEN_MAX_DELAY: Duration = Duration::from_secs(30);
/// A storage failure that repeats is logged at most this often (with the count left out).
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Most other writes (run outcomes, mail outcomes, marks) in one transaction while deliveries
/// come: each costs the writer ~90 µs, so a delivery arriving during that transaction waits at
/// most ~1 ms for it. Measured against no cap (8, 12 and 24 tried, three windows): the median
/// answer under load falls by ~40 % and ingest under load rises by up to half; end to end is the
/// same or better in two windows and 10–16 % lower in the third, where the writer was slower and
/// the extra commits cost more (BENCHMARKS.md). Kept: the answer to Okta comes first.
pub const OTHERS_WHILE_DELIVERING: usize = 12;
/// How long a batch of other writes (two or more, no delivery coming) waits for more before
/// its commit. Part of a commit's cost is per transaction: after an ingest, outcomes committed
/// ~20 at a time cost the writer ~100 µs each, ~200 at a time ~60 µs, and the writer sleeps
/// meanwhile, leaving the cores to the runs. Measured against no wait (BENCHMARKS.md): end to
/// end faster in 13 of 16 pairs (median −6 %), CPU per event −8 % (median of 10 pairs). A lone
/// write (one caller awaiting each write in turn: `engine replay`, the console) does not wait.
pub const OTHERS_LINGER: Duration = Duration::from_millis(4);
/// Other writes a lingering batch gathers at most before it commits at once: ~200 outcomes
/// arrive within [`OTHERS_LINGER`] under a backlog, and at ~60 µs each a batch of this size is a
/// ~30 ms commit that a delivery arriving just after it would wait for.
pub const OTHERS_GATHER: usize = 512;
/// Deliveries count as coming for this long after the last one: longer than the gap between two
/// of Okta's deliveries under load, short enough that a backlog of outcomes is committed in
/// full batches soon after the deliveries stop.
pub const DELIVERING_WINDOW: Duration = Duration::from_millis(20);

/// What the writer shares with the store's readers.
pub(crate) struct Shared {
    /// The open database; `None` while the writer reopens it after a failure.
    pub(crate) db: ArcSwapOption<Database>,
    pub(crate) seen: Mutex<Seen>,
    pub(crate) stats: WriterStats,
    pub(crate) events_committed: Notify,
    /// Whether writes are failing now (for `/metrics` and the health probe's message).
    pub(crate) failing: std::sync::atomic::AtomicBool,
    /// The page cache it was opened with, for a reopen.
    pub(crate) cache_bytes: usize,
    /// When the writer last took a delivery (any ingest job), as µs after `opened` (0: never):
    /// whether deliveries are coming ([`Shared::deliveries_coming`]).
    pub(crate) last_delivery_us: AtomicU64,
    pub(crate) opened: Instant,
}

impl Shared {
    /// Notes that the writer took a delivery now.
    fn took_delivery(&self) {
        let at = self.opened.elapsed().as_micros() as u64;
        self.last_delivery_us.store(at.max(1), Ordering::Relaxed);
    }

    /// Whether the writer took a delivery within [`DELIVERING_WINDOW`].
    pub(crate) fn deliveries_coming(&self) -> bool {
        match self.last_delivery_us.load(Ordering::Relaxed) {
            0 => false,
            at => {
                let now = self.opened.elapsed().as_micros() as u64;
                now.saturating_sub(at) < DELIVERING_WINDOW.as_micros() as u64
            }
        }
    }
}

/// The error every job gets while the store cannot write.
fn unavailable(cause: &str) -> WriteError {
    WriteError::Storage(format!(
        "the store cannot write ({cause}); retrying in the background"
    ))
}

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
    /// Events fetched from the Okta System Log: stored like a delivery (same dedup), unless
    /// every one of them is known already, and the backfill cursor advanced in the same
    /// transaction.
    Backfill {
        delivery: Option<PackedDelivery>,
        cursor_ms: Option<u64>,
        reply: oneshot::Sender<Result<Stored, WriteError>>,
    },
    /// Any other write (runs, actions, samples): applied inside the shared transaction; it
    /// answers through its own typed channel, only after the commit (see [`TxnFn`]).
    Txn(TxnFn),
}

/// A write applied by the writer thread inside a batch's transaction (or, when the store cannot
/// write, handed the error instead). It returns whether it succeeded (an error fails the whole
/// batch: a transaction cannot be half committed) and the [`Reply`] that hands its own result to
/// its caller once the batch's fate is known.
pub(crate) type TxnFn = Box<
    dyn FnOnce(Result<&WriteTransaction, WriteError>) -> (Result<(), WriteError>, Reply) + Send,
>;
/// Called with the outcome of the commit (the batch's error if it failed).
pub(crate) type Reply = Box<dyn FnOnce(Result<(), WriteError>) + Send>;

impl Job {
    /// A delivery, quarantine, backfill page or probe: a write someone is answered after.
    fn is_ingest(&self) -> bool {
        !matches!(self, Job::Txn(_))
    }

    fn size(&self) -> usize {
        match self {
            Job::Delivery(d, _) => d.stored.len(),
            Job::Backfill { delivery, .. } => delivery.as_ref().map_or(0, |d| d.stored.len()),
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

/// Where the writer stands after a failed commit: the store is reopened at `retry_at`.
struct Broken {
    cause: String,
    retry_at: Instant,
    delay: Duration,
}

pub(crate) fn writer_loop(
    shared: &Shared,
    path: &Path,
    rx: mpsc::Receiver<Job>,
    mode: CommitMode,
    mut next: NextSeq,
) {
    let max_jobs = match mode {
        CommitMode::Group => MAX_BATCH_JOBS,
        CommitMode::PerRequest => 1,
    };
    let failures = Throttle::new(FAILURE_LOG_INTERVAL);
    let mut broken: Option<Broken> = None;
    let mut batch: Vec<Job> = Vec::new();
    // Other writes held back while deliveries come, oldest first; always empty while broken.
    let mut held: VecDeque<Job> = VecDeque::new();
    loop {
        // How many held writes a transaction without deliveries takes now.
        let others_cap = if shared.deliveries_coming() {
            OTHERS_WHILE_DELIVERING
        } else {
            max_jobs
        };
        // While broken, wake up to reopen even when no job comes; while writes are held, do not
        // wait for a job (None: commit some of them; after the last sender went, all of them).
        let first = match &broken {
            None if !held.is_empty() => rx.try_recv().ok(),
            None => match rx.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            },
            Some(b) => {
                match rx.recv_timeout(b.retry_at.saturating_duration_since(Instant::now())) {
                    Ok(job) => Some(job),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        };
        if let Some(b) = broken.take() {
            if Instant::now() >= b.retry_at {
                match reopen(shared, path) {
                    Ok(n) => {
                        next = n;
                        shared.failing.store(false, Ordering::Relaxed);
                        tracing::info!(path = %path.display(), "store reopened; writes succeed again");
                    }
                    Err(e) => {
                        if let Some(left_out) = failures.ready() {
                            tracing::error!(error = %e, left_out, retry_in_ms = b.delay.as_millis() as u64, "store still cannot write");
                        }
                        let delay = (b.delay * 2).min(REOPEN_MAX_DELAY);
                        broken = Some(Broken {
                            cause: e,
                            retry_at: Instant::now() + delay,
                            delay,
                        });
                    }
                }
            } else {
                broken = Some(b);
            }
        }
        let Some(first) = first else {
            if broken.is_none() && !held.is_empty() {
                let mut part: Vec<Job> = held.drain(..others_cap.min(held.len())).collect();
                broken = commit_batch(shared, &mut part, &mut next, &failures);
                fail_held(&mut held, &broken);
            }
            continue;
        };
        if let Some(b) = &broken {
            // Nothing can be written: answer at once (503 for deliveries), do not spin.
            answer_failed(first, &unavailable(&b.cause));
            while let Ok(job) = rx.try_recv() {
                answer_failed(job, &unavailable(&b.cause));
            }
            continue;
        }
        let mut bytes = first.size();
        batch.push(first);
        // No waiting for jobs still to come: under load the clients answered by one commit come
        // back while the next one runs, so two batches alternate and the disk never idles.
        // (Waiting for them to form one larger batch was measured slower.)
        while batch.len() < max_jobs && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.size();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        // A stream of other writes, no delivery coming: gather more before the commit (not a
        // lone write, whose caller waits for each in turn).
        if batch.len() >= 2 && !batch.iter().any(Job::is_ingest) && !shared.deliveries_coming() {
            linger(
                &rx,
                &mut batch,
                bytes,
                OTHERS_GATHER.saturating_sub(held.len()),
            );
        }
        // A delivery's answer never waits for the other writes of its batch (run outcomes,
        // mail outcomes, the dispatcher's): they commit in a transaction of their own right after.
        // While deliveries come, that transaction is kept short; what it leaves waits, in order.
        let later: Vec<Job> = if batch.iter().any(Job::is_ingest) {
            shared.took_delivery();
            held.extend(batch.extract_if(.., |job| !job.is_ingest()));
            held.drain(..OTHERS_WHILE_DELIVERING.min(held.len()))
                .collect()
        } else {
            if !held.is_empty() {
                held.extend(batch.drain(..));
                batch.extend(held.drain(..others_cap.min(held.len())));
            }
            Vec::new()
        };
        for mut part in [std::mem::take(&mut batch), later] {
            if part.is_empty() {
                continue;
            }
            if let Some(b) = &broken {
                for job in part.drain(..) {
                    answer_failed(job, &unavailable(&b.cause));
                }
                continue;
            }
            broken = commit_batch(shared, &mut part, &mut next, &failures);
            fail_held(&mut held, &broken);
            batch = part;
        }
    }
}

/// Waits up to [`OTHERS_LINGER`] for more jobs until `batch` holds `room` of them (or
/// [`MAX_BATCH_BYTES`]); a delivery ends the wait at once, and so does the last sender going (the
/// writer's next `recv` then ends it).
fn linger(rx: &mpsc::Receiver<Job>, batch: &mut Vec<Job>, mut bytes: usize, room: usize) {
    let until = Instant::now() + OTHERS_LINGER;
    while batch.len() < room && bytes < MAX_BATCH_BYTES {
        let Ok(job) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) else {
            return;
        };
        let ingest = job.is_ingest();
        bytes += job.size();
        batch.push(job);
        if ingest {
            return;
        }
    }
}

/// Once the store broke, the writes held back get its error at once, like every job after them.
fn fail_held(held: &mut VecDeque<Job>, broken: &Option<Broken>) {
    if let Some(b) = broken {
        for job in held.drain(..) {
            answer_failed(job, &unavailable(&b.cause));
        }
    }
}

/// Applies `batch` in one transaction, commits it and answers every job (emptying `batch`).
/// Returns the broken state when the store failed and was closed for a reopen.
fn commit_batch(
    shared: &Shared,
    batch: &mut Vec<Job>,
    next: &mut NextSeq,
    failures: &Throttle,
) -> Option<Broken> {
    let Some(db) = shared.db.load_full() else {
        for job in batch.drain(..) {
            answer_failed(job, &unavailable("the store is closed"));
        }
        return None;
    };
    let before = *next;
    let started = Instant::now();
    let mut replies = Vec::new();
    let mut seals = Vec::new();
    let r = apply_batch(
        &db,
        &shared.seen,
        batch,
        next,
        &shared.stats,
        &mut replies,
        &mut seals,
    );
    shared.stats.record(batch.len(), started.elapsed());
    match r {
        Ok(results) => {
            failures.reset();
            if !seals.is_empty() {
                let mut seen = lock(&shared.seen);
                for seal in seals {
                    seen.apply_seal(seal);
                }
            }
            if next.event != before.event {
                shared.events_committed.notify_one();
            }
            for (job, result) in batch.drain(..).zip(results) {
                answer(job, Ok(result));
            }
            for reply in replies {
                reply(Ok(()));
            }
            None
        }
        Err(e) => {
            *next = before;
            if let Some(left_out) = failures.ready() {
                tracing::error!(error = %e, jobs = batch.len(), left_out, "store commit failed");
            }
            for job in batch.drain(..) {
                answer(job, Err(e.clone()));
            }
            for reply in replies {
                reply(Err(e.clone()));
            }
            // redb refuses every write after an I/O error until it is reopened.
            if db.begin_write().is_err() {
                shared.failing.store(true, Ordering::Relaxed);
                drop(db);
                close(shared);
                return Some(Broken {
                    cause: e.to_string(),
                    retry_at: Instant::now() + REOPEN_FIRST_DELAY,
                    delay: REOPEN_FIRST_DELAY,
                });
            }
            None
        }
    }
}

/// Takes the database out of the readers' reach and waits (briefly) until the last reader let go,
/// so that its file is closed and can be opened again.
fn close(shared: &Shared) {
    let Some(db) = shared.db.swap(None) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut db = db;
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => {
                drop(db);
                return;
            }
            Err(still) if Instant::now() < deadline => {
                db = still;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(still) => {
                // A reader holds it: it closes when that reader is done; reopen retries.
                drop(still);
                return;
            }
        }
    }
}

/// Opens the file again, re-reads the next sequence numbers and rebuilds the dedup index from
/// what is durable (a failed commit may or may not have reached the disk), and proves a write
/// goes through.
fn reopen(shared: &Shared, path: &Path) -> Result<NextSeq, String> {
    let db = super::builder(shared.cache_bytes)
        .create(path)
        .map_err(|e| e.to_string())?;
    let next = super::init_tables(&db).map_err(|e| e.to_string())?;
    let seen = super::inbox::load_seen(&db).map_err(|e| e.to_string())?;
    let probe = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut meta = probe.open_table(META).map_err(|e| e.to_string())?;
        meta.insert("probe_ms", crate::util::now_ms())
            .map_err(|e| e.to_string())?;
    }
    probe.commit().map_err(|e| e.to_string())?;
    *lock(&shared.seen) = seen;
    shared.db.store(Some(Arc::new(db)));
    Ok(next)
}

/// Answers any job with `error` (a `Txn` job through its own reply).
fn answer_failed(job: Job, error: &WriteError) {
    match job {
        Job::Txn(f) => {
            let (_, reply) = f(Err(error.clone()));
            reply(Err(error.clone()));
        }
        other => answer(other, Err(error.clone())),
    }
}

/// Answers a delivery, quarantine or probe job (a `Txn` job answers through its own reply).
fn answer(job: Job, result: Result<Stored, WriteError>) {
    match job {
        Job::Delivery(_, reply) | Job::Backfill { reply, .. } => {
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
    seals: &mut Vec<Seal>,
) -> Result<Vec<Stored>, WriteError> {
    // Keys this batch adds to the dedup index, taken out again if it does not commit.
    let mut added = Added::default();
    let result = apply_jobs(db, seen, batch, next, stats, &mut added, replies);
    if result.is_err() {
        let mut seen = lock(seen);
        seen.remove(Kind::Delivery, &added.deliveries);
        seen.remove(Kind::Event, &added.events);
    } else {
        *seals = added.seals;
    }
    result
}

/// What a batch did to the dedup index: the keys it added (taken out again if it does not
/// commit) and the runs it wrote (moved out of the live part once it has committed).
#[derive(Default)]
struct Added {
    deliveries: Vec<KeyHash>,
    events: Vec<KeyHash>,
    seals: Vec<Seal>,
}

/// What a batch stored, for the overview's counters ([`super::counts`]).
#[derive(Default)]
struct Tally {
    /// Events stored, by the hour their delivery was received.
    events: std::collections::BTreeMap<u64, u64>,
    /// Each hook's newest stored delivery.
    last_by_hook: std::collections::BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, d: &NewDelivery, stored: &Stored) {
        if stored.duplicate_delivery || stored.events == 0 {
            return;
        }
        *self
            .events
            .entry(super::counts::hour_of(d.received_ms))
            .or_default() += stored.events as u64;
        let last = self.last_by_hook.entry(d.hook.clone()).or_default();
        *last = (*last).max(d.received_ms);
    }
}

/// The inbox tables a delivery is written to.
struct InboxTables<'a, 't> {
    deliveries: &'a mut redb::Table<'t, u64, DeliveryValue>,
    delivery_keys: &'a mut redb::Table<'t, u64, &'static str>,
    events: &'a mut redb::Table<'t, u64, (u64, &'static str, &'static str, &'static str, u32, u32)>,
    /// The dedup index's sealed runs (read when its filter cannot rule a key out).
    runs: &'a redb::Table<'t, (u8, u64, u128), &'static [u8]>,
}

/// Writes one delivery and those of its events the dedup index does not know (a delivery whose
/// eventId is known is a duplicate: nothing of it is written).
fn put_delivery(
    d: &NewDelivery,
    body: &Bytes,
    t: &mut InboxTables<'_, '_>,
    seen: &mut Seen,
    next: &mut NextSeq,
    added: &mut Added,
    stored: &mut Stored,
) -> Result<(), WriteError> {
    let id = d.parsed.delivery_id.as_deref().unwrap_or("");
    let dseq = next.delivery;
    if !id.is_empty() {
        let key = key_hash(id);
        if seen
            .add(Kind::Delivery, key, dseq, t.runs)
            .map_err(storage)?
        {
            stored.duplicate_delivery = true;
            return Ok(());
        }
        added.deliveries.push(key);
        t.delivery_keys.insert(dseq, id).map_err(storage)?;
    }
    next.delivery += 1;
    t.deliveries
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
        if seen.add(Kind::Event, key, eseq, t.runs).map_err(storage)? {
            stored.duplicate_events += 1;
            continue;
        }
        added.events.push(key);
        next.event += 1;
        // Bodies are capped far below 4 GiB (MAX_BODY_BYTES_CEILING).
        let (offset, len) = (ev.span.start as u32, ev.span.len() as u32);
        t.events
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
    Ok(())
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
        // Full live parts of the dedup index are written as runs first (moved out of memory
        // once this transaction commits).
        added.seals = lock(seen).due_seals(|kind| match kind {
            Kind::Delivery => next.delivery,
            Kind::Event => next.event,
        });
        for seal in &added.seals {
            dedup::write_seal(&txn, seal).map_err(storage)?;
        }
        let runs = txn.open_table(DEDUP_RUNS).map_err(storage)?;
        let mut deliveries = txn.open_table(DELIVERIES).map_err(storage)?;
        let mut delivery_keys = txn.open_table(DELIVERY_KEYS).map_err(storage)?;
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        // Released before the `Txn` jobs run: retention's may take it.
        let mut seen = lock(seen);
        let mut tally = Tally::default();
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
                    let mut tables = InboxTables {
                        deliveries: &mut deliveries,
                        delivery_keys: &mut delivery_keys,
                        events: &mut events,
                        runs: &runs,
                    };
                    put_delivery(d, body, &mut tables, &mut seen, next, added, &mut stored)?;
                    tally.add(d, &stored);
                }
                Job::Backfill {
                    delivery,
                    cursor_ms,
                    ..
                } => {
                    if let Some(PackedDelivery {
                        delivery: d,
                        stored: body,
                    }) = delivery
                    {
                        // A delivery whose events all arrived another way is not kept at all.
                        let mut any_new = false;
                        for ev in &d.parsed.events {
                            if !seen
                                .knows(Kind::Event, key_hash(&ev.uuid), &runs)
                                .map_err(storage)?
                            {
                                any_new = true;
                                break;
                            }
                        }
                        if any_new {
                            let mut tables = InboxTables {
                                deliveries: &mut deliveries,
                                delivery_keys: &mut delivery_keys,
                                events: &mut events,
                                runs: &runs,
                            };
                            put_delivery(
                                d,
                                body,
                                &mut tables,
                                &mut seen,
                                next,
                                added,
                                &mut stored,
                            )?;
                            tally.add(d, &stored);
                        } else {
                            stored.duplicate_events = d.parsed.events.len();
                        }
                    }
                    if let Some(ms) = cursor_ms {
                        super::backfill::advance_cursor(&txn, *ms)?;
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
        drop(seen);
        // The overview's counters: one row update per hour (and hook) per batch, not per event.
        super::counts::add(&txn, super::counts::Counter::Events, &tally.events)?;
        super::counts::note_deliveries(&txn, &tally.last_by_hook)?;
    }
    let mut failed = None;
    for job in batch.iter_mut() {
        if let Job::Txn(f) = job {
            let noop: TxnFn = Box::new(|_: Result<&WriteTransaction, WriteError>| {
                let reply: Reply = Box::new(|_| ());
                (Ok(()), reply)
            });
            let f = std::mem::replace(f, noop);
            let (applied, reply) = f(Ok(&txn));
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
