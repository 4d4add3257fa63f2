//! The durable inbox in redb: deliveries, their events, the processing queue and quarantine.
//!
//! One writer thread owns every write transaction (group commit): it takes the first job waiting,
//! gathers every other job waiting at that moment, applies them all in one transaction, commits
//! durably, and only then answers each job. Nothing is acknowledged before its commit.
//!
//! Readers (`/metrics`, the history commands) open read transactions. The server holds the file
//! exclusively (one fsync per commit); while it runs, the history commands read through it
//! (`remote`).

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{
    Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, TableHandle, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

use crate::dedup::{KeyHash, Seen, key_hash};
use crate::envelope::ParsedDelivery;

/// The store file inside the data dir.
pub const DB_FILE: &str = "engine.redb";
/// Most jobs gathered into one transaction: bounds the latency of the first one in a batch and
/// the memory a batch holds, while being far above the concurrency Okta produces.
pub const MAX_BATCH_JOBS: usize = 4096;
/// Most body bytes gathered into one transaction, for the same reasons.
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// A stored delivery: (hook, received ms, delivery id, eventTime, source, raw body).
type DeliveryValue = (
    &'static str,
    u64,
    &'static str,
    &'static str,
    &'static str,
    &'static [u8],
);
/// seq → [`DeliveryValue`]
const DELIVERIES: TableDefinition<u64, DeliveryValue> = TableDefinition::new("deliveries");
/// delivery seq → envelope eventId, in commit order (the dedup index is rebuilt from it).
const DELIVERY_KEYS: TableDefinition<u64, &str> = TableDefinition::new("delivery_keys");
/// Before the in-memory dedup index: envelope eventId → delivery seq. Read once to migrate a
/// store written by an older engine into `delivery_keys`, then deleted.
const LEGACY_DELIVERY_IDS: TableDefinition<&str, u64> = TableDefinition::new("delivery_ids");
/// seq → (delivery seq, uuid, eventType, published, offset, length): the event's JSON is that byte
/// range of its delivery's body, so each byte Okta sent is written once.
const EVENTS: TableDefinition<u64, (u64, &str, &str, &str, u32, u32)> =
    TableDefinition::new("events");
/// Before the in-memory dedup index: event uuid → event seq (`events` holds each uuid too).
/// Deleted when a store written by an older engine is opened.
const LEGACY_EVENT_UUIDS: TableDefinition<&str, u64> = TableDefinition::new("event_uuids");
/// The processing queue is implicit: event seqs are contiguous and given in commit order, so
/// every event above this cursor (in META) has not been handed to the scripts yet.
pub const DISPATCH_CURSOR: &str = "dispatched_event_seq";
/// seq → (hook, received ms, reason, raw body): authenticated bodies that were not deliveries.
const QUARANTINE: TableDefinition<u64, (&str, u64, &str, &[u8])> =
    TableDefinition::new("quarantine");
/// Small named values (the health probe's last write).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Opening the store failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the store {path} is open in another process\n  hint: if that is `engine serve`, commands read through it; otherwise stop that process and try again"
    )]
    Busy { path: PathBuf },
    #[error("cannot open the store {path}: {source}")]
    Database {
        path: PathBuf,
        source: DatabaseError,
    },
    #[error("cannot initialise the store {path}: {source}")]
    Init { path: PathBuf, source: redb::Error },
}

/// A write (delivery, quarantine, probe) could not be committed; the request gets a 503.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("storage error: {0}")]
    Storage(String),
    #[error("the store is shutting down")]
    Closed,
}

/// A read failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the store: {0}")]
pub struct ReadError(String);

impl ReadError {
    pub fn new(message: String) -> Self {
        ReadError(message)
    }
}

/// Any store error, for callers that do not care which.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Any redb/serde failure inside a write, as the error every write reports.
pub(crate) fn storage<E: std::fmt::Display>(e: E) -> WriteError {
    WriteError::Storage(e.to_string())
}

/// Any failure inside a read.
pub(crate) fn read_err<E: std::fmt::Display>(e: E) -> ReadError {
    ReadError(e.to_string())
}

/// How the writer commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitMode {
    /// Every job waiting at the moment shares one durable commit.
    Group,
    /// One durable commit per job (the baseline the benchmark compares against).
    PerRequest,
}

/// An authenticated, parsed delivery to store.
pub struct NewDelivery {
    pub hook: String,
    pub received_ms: u64,
    pub body: Bytes,
    pub parsed: ParsedDelivery,
}

/// What storing a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stored {
    /// The envelope's eventId had been accepted before: nothing was stored.
    pub duplicate_delivery: bool,
    /// Events stored and queued.
    pub events: usize,
    /// Events whose uuid had been accepted before.
    pub duplicate_events: usize,
}

/// A delivery and its body as stored (see [`pack_body`]).
struct PackedDelivery {
    delivery: NewDelivery,
    /// The compressed body, or the received one itself (no copy).
    stored: Bytes,
}

/// First byte of a stored body that is LZ4-compressed (a JSON body never starts with 0xFF, which
/// is not UTF-8); any other body is stored as received.
const LZ4_BODY: u8 = 0xFF;
/// Smaller bodies are stored as received: compressing them saves no page.
const COMPRESS_MIN_BYTES: usize = 1024;

/// The body as stored, when compressing it helps. A commit's cost is mostly its number of
/// scattered 4 KiB pages (~20 µs each on this kind of disk, on top of the fsync), and a 2.4 KB
/// event fills a page of the deliveries table on its own; compressed, two or three share one.
fn pack_body(body: &[u8]) -> Option<Vec<u8>> {
    if body.len() < COMPRESS_MIN_BYTES {
        return None;
    }
    let compressed = lz4_flex::block::compress_prepend_size(body);
    if compressed.len() + 1 >= body.len() {
        return None;
    }
    let mut out = Vec::with_capacity(compressed.len() + 1);
    out.push(LZ4_BODY);
    out.extend_from_slice(&compressed);
    Some(out)
}

/// The body as received, from its stored form.
fn unpack_body(stored: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, ReadError> {
    match stored.split_first() {
        Some((&LZ4_BODY, compressed)) => lz4_flex::block::decompress_size_prepended(compressed)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| ReadError(format!("a stored body does not decompress: {e}"))),
        _ => Ok(std::borrow::Cow::Borrowed(stored)),
    }
}

enum Job {
    Delivery(PackedDelivery, oneshot::Sender<Result<Stored, WriteError>>),
    Quarantine {
        hook: String,
        received_ms: u64,
        reason: String,
        body: Bytes,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    Probe(oneshot::Sender<Result<(), WriteError>>),
    /// Any other write (runs, outbox): applied inside the shared transaction; its value is
    /// handed back only after the commit.
    Txn(
        TxnFn,
        oneshot::Sender<Result<Box<dyn Any + Send>, WriteError>>,
    ),
}

/// A write applied by the writer thread inside a batch's transaction.
pub type TxnFn =
    Box<dyn FnOnce(&WriteTransaction) -> Result<Box<dyn Any + Send>, WriteError> + Send>;

/// What one job of a batch produced.
enum Done {
    Stored(Stored),
    Value(Box<dyn Any + Send>),
}

impl Job {
    fn size(&self) -> usize {
        match self {
            Job::Delivery(d, _) => d.stored.len(),
            Job::Quarantine { body, .. } => body.len(),
            Job::Probe(_) | Job::Txn(..) => 0,
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
    fn record(&self, jobs: usize, busy: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.jobs.fetch_add(jobs as u64, Ordering::Relaxed);
        self.busy_us
            .fetch_add(busy.as_micros() as u64, Ordering::Relaxed);
    }

    fn record_commit(&self, took: Duration) {
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

/// The server's handle on the store: submits writes to the writer thread and reads directly.
pub struct Store {
    db: Arc<Database>,
    seen: Arc<Mutex<Seen>>,
    stats: Arc<WriterStats>,
    events_committed: Arc<Notify>,
    tx: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
}

/// The server holds the file exclusively: redb's shared modes (other processes reading beside
/// the writer) force a two-phase commit, a second fsync on every commit. The history commands
/// read through the server instead (`remote`).
fn builder() -> redb::Builder {
    Database::builder()
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir` and starts its writer thread.
    pub fn open(data_dir: &Path, mode: CommitMode) -> Result<Store, OpenError> {
        std::fs::create_dir_all(data_dir).map_err(|source| OpenError::CreateDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let db = builder().create(&path).map_err(|source| match source {
            DatabaseError::DatabaseAlreadyOpen => OpenError::Busy { path: path.clone() },
            source => OpenError::Database {
                path: path.clone(),
                source,
            },
        })?;
        let db = Arc::new(db);
        let next = init_tables(&db).map_err(|source| OpenError::Init {
            path: path.clone(),
            source,
        })?;
        let seen = load_seen(&db).map_err(|source| OpenError::Init {
            path: path.clone(),
            source,
        })?;
        let seen = Arc::new(Mutex::new(seen));
        let (tx, rx) = mpsc::channel();
        let writer_db = db.clone();
        let writer_seen = seen.clone();
        let stats = Arc::new(WriterStats::default());
        let writer_stats = stats.clone();
        let events_committed = Arc::new(Notify::new());
        let notify = events_committed.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer_loop(
                    &writer_db,
                    &writer_seen,
                    &writer_stats,
                    rx,
                    mode,
                    next,
                    &notify,
                )
            })
            .map_err(|e| OpenError::Init {
                path: path.clone(),
                source: redb::Error::Io(e),
            })?;
        Ok(Store {
            db,
            seen,
            stats,
            events_committed,
            tx: Some(tx),
            writer: Some(writer),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Job,
    ) -> Option<oneshot::Receiver<T>> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref()?;
        tx.send(make(reply)).ok()?;
        Some(rx)
    }

    /// Stores a delivery and its events; resolves after the durable commit that holds it.
    pub async fn store_delivery(&self, delivery: NewDelivery) -> Result<Stored, WriteError> {
        // Compressed here, on the request's task, so that the writer thread only copies.
        let delivery = PackedDelivery {
            stored: pack_body(&delivery.body)
                .map(Bytes::from)
                .unwrap_or_else(|| delivery.body.clone()),
            delivery,
        };
        match self.submit(|reply| Job::Delivery(delivery, reply)) {
            Some(rx) => rx.await.unwrap_or(Err(WriteError::Closed)),
            None => Err(WriteError::Closed),
        }
    }

    /// Keeps an authenticated body that is not a valid delivery.
    pub async fn quarantine(
        &self,
        hook: &str,
        received_ms: u64,
        reason: &str,
        body: Bytes,
    ) -> Result<(), WriteError> {
        let rx = self.submit(|reply| Job::Quarantine {
            hook: hook.to_string(),
            received_ms,
            reason: reason.to_string(),
            body,
            reply,
        });
        match rx {
            Some(rx) => rx.await.unwrap_or(Err(WriteError::Closed)),
            None => Err(WriteError::Closed),
        }
    }

    /// Applies `f` in the writer's next transaction and returns its value once that transaction
    /// has committed durably. `f` must not block: it runs on the writer thread.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, WriteError> + Send + 'static,
    ) -> Result<T, WriteError> {
        let f: TxnFn = Box::new(move |txn| f(txn).map(|v| Box::new(v) as Box<dyn Any + Send>));
        let rx = self
            .submit(|reply| Job::Txn(f, reply))
            .ok_or(WriteError::Closed)?;
        let value = rx.await.unwrap_or(Err(WriteError::Closed))?;
        value
            .downcast::<T>()
            .map(|b| *b)
            .map_err(|_| WriteError::Storage("internal: write result of the wrong type".into()))
    }

    /// Forgets the dedup keys of pruned deliveries and events (after their removal committed).
    pub fn forget(&self, keys: &PrunedKeys) {
        let hashes = |keys: &[String]| keys.iter().map(|k| key_hash(k)).collect::<Vec<_>>();
        lock(&self.seen).remove(&hashes(&keys.delivery_ids), &hashes(&keys.event_uuids));
    }

    /// What the writer has done so far (for `/metrics` and the benchmark).
    pub fn writer_stats(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }

    /// (delivery ids, event uuids) in the dedup index.
    pub fn dedup_len(&self) -> (usize, usize) {
        lock(&self.seen).len()
    }

    /// Woken after every commit that stored new events.
    pub fn events_committed(&self) -> Arc<Notify> {
        self.events_committed.clone()
    }

    /// Read access for modules that keep their own tables in this file.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Commits a small write: proves the store is writable (for `/healthz`).
    pub async fn probe(&self) -> Result<(), WriteError> {
        match self.submit(Job::Probe) {
            Some(rx) => rx.await.unwrap_or(Err(WriteError::Closed)),
            None => Err(WriteError::Closed),
        }
    }

    pub fn history(&self) -> History<'_> {
        History(HistoryDb::Shared(&self.db))
    }

    /// Stops the writer after it has committed and answered every job already submitted.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[derive(Clone, Copy, Default)]
struct NextSeq {
    delivery: u64,
    event: u64,
    quarantine: u64,
}

fn next_key<V: redb::Value + 'static>(
    txn: &WriteTransaction,
    def: TableDefinition<u64, V>,
) -> Result<u64, redb::Error> {
    let t = txn.open_table(def)?;
    Ok(t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1))
}

/// Moves the dedup keys of a store written by an older engine into `delivery_keys` (uuids are
/// already in `events`) and deletes the old key → seq tables.
fn migrate_dedup_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let mut keys = txn.open_table(DELIVERY_KEYS)?;
    let has_legacy = txn
        .list_tables()?
        .any(|t| t.name() == LEGACY_DELIVERY_IDS.name() || t.name() == LEGACY_EVENT_UUIDS.name());
    if !has_legacy {
        return Ok(());
    }
    {
        let old = txn.open_table(LEGACY_DELIVERY_IDS)?;
        for entry in old.iter()? {
            let (id, seq) = entry?;
            keys.insert(seq.value(), id.value())?;
        }
    }
    drop(keys);
    txn.delete_table(LEGACY_DELIVERY_IDS)?;
    txn.delete_table(LEGACY_EVENT_UUIDS)?;
    Ok(())
}

/// The dedup index of what the store holds: every event's uuid and every delivery's eventId.
fn load_seen(db: &Database) -> Result<Seen, redb::Error> {
    let txn = db.begin_read()?;
    let mut seen = Seen::default();
    for entry in txn.open_table(EVENTS)?.iter()? {
        let (seq, v) = entry?;
        seen.add_event(key_hash(v.value().1), seq.value());
    }
    for entry in txn.open_table(DELIVERY_KEYS)?.iter()? {
        let (seq, id) = entry?;
        seen.add_delivery(key_hash(id.value()), seq.value());
    }
    Ok(seen)
}

fn init_tables(db: &Database) -> Result<NextSeq, redb::Error> {
    let txn = db.begin_write()?;
    let next = NextSeq {
        delivery: next_key(&txn, DELIVERIES)?,
        event: next_key(&txn, EVENTS)?,
        quarantine: next_key(&txn, QUARANTINE)?,
    };
    migrate_dedup_tables(&txn)?;
    txn.open_table(META)?;
    txn.open_table(QUARANTINE)?;
    crate::runs::init(&txn).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    crate::outbox::init(&txn).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    crate::samples::init(&txn).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    txn.commit()?;
    Ok(next)
}

/// The dedup index; a panic elsewhere while holding it leaves it usable (it is only a map).
fn lock(seen: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

fn writer_loop(
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
        let r = apply_batch(db, seen, &mut batch, &mut next, stats);
        stats.record(batch.len(), started.elapsed());
        match r {
            Ok(results) => {
                if next.event != before.event {
                    events_committed.notify_one();
                }
                for (job, result) in batch.drain(..).zip(results) {
                    answer(job, Ok(result));
                }
            }
            Err(e) => {
                next = before;
                tracing::error!(error = %e, jobs = batch.len(), "store commit failed");
                for job in batch.drain(..) {
                    answer(job, Err(e.clone()));
                }
            }
        }
    }
}

fn answer(job: Job, result: Result<Done, WriteError>) {
    match job {
        Job::Delivery(_, reply) => {
            let _ = reply.send(result.map(|d| match d {
                Done::Stored(s) => s,
                Done::Value(_) => Stored::default(),
            }));
        }
        Job::Quarantine { reply, .. } | Job::Probe(reply) => {
            let _ = reply.send(result.map(|_| ()));
        }
        Job::Txn(_, reply) => {
            let _ = reply.send(result.map(|d| match d {
                Done::Value(v) => v,
                Done::Stored(_) => Box::new(()) as Box<dyn Any + Send>,
            }));
        }
    }
}

fn apply_batch(
    db: &Database,
    seen: &Mutex<Seen>,
    batch: &mut [Job],
    next: &mut NextSeq,
    stats: &WriterStats,
) -> Result<Vec<Done>, WriteError> {
    // Keys this batch adds to the dedup index, taken out again if it does not commit.
    let mut added = Added::default();
    let result = apply_jobs(db, seen, batch, next, stats, &mut added);
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
) -> Result<Vec<Done>, WriteError> {
    let txn = db.begin_write().map_err(storage)?;
    let mut results: Vec<Option<Done>> = Vec::with_capacity(batch.len());
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
                            results.push(Some(Done::Stored(stored)));
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
                Job::Txn(..) => {
                    results.push(None);
                    continue;
                }
            }
            results.push(Some(Done::Stored(stored)));
        }
    }
    for (job, result) in batch.iter_mut().zip(results.iter_mut()) {
        if let Job::Txn(f, _) = job {
            let f = std::mem::replace(f, Box::new(|_| Ok(Box::new(()))));
            *result = Some(Done::Value(f(&txn)?));
        }
    }
    let committing = Instant::now();
    txn.commit().map_err(storage)?;
    stats.record_commit(committing.elapsed());
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or(Done::Stored(Stored::default())))
        .collect())
}

/// The last delivery body [`stored_event`] unpacked: a delivery's events are consecutive.
type BodyCache = Option<(u64, Vec<u8>)>;

fn stored_event(
    deliveries: &redb::ReadOnlyTable<u64, DeliveryValue>,
    seq: u64,
    v: (u64, &str, &str, &str, u32, u32),
    cache: &mut BodyCache,
) -> Result<StoredEvent, ReadError> {
    let (dseq, uuid, event_type, published, offset, len) = v;
    let mut e = StoredEvent {
        seq,
        uuid: uuid.to_string(),
        event_type: event_type.to_string(),
        published: published.to_string(),
        hook: String::new(),
        delivery_id: String::new(),
        event_time: String::new(),
        source: String::new(),
        received_ms: 0,
        json: Vec::new(),
    };
    if let Some(d) = deliveries.get(dseq).map_err(read_err)? {
        let (hook, ms, id, time, source, body) = d.value();
        e.hook = hook.to_string();
        e.received_ms = ms;
        e.delivery_id = id.to_string();
        e.event_time = time.to_string();
        e.source = source.to_string();
        let (offset, len) = (offset as usize, len as usize);
        let body: &[u8] = match cache {
            Some((cached, b)) if *cached == dseq => b,
            _ => &cache.insert((dseq, unpack_body(body)?.into_owned())).1,
        };
        e.json = body.get(offset..offset + len).unwrap_or_default().to_vec();
    }
    Ok(e)
}

fn dispatch_cursor(txn: &ReadTransaction) -> Result<u64, ReadError> {
    let meta = txn.open_table(META).map_err(read_err)?;
    Ok(meta
        .get(DISPATCH_CURSOR)
        .map_err(read_err)?
        .map(|g| g.value())
        .unwrap_or(0))
}

fn last_event_seq(txn: &ReadTransaction) -> Result<u64, ReadError> {
    let events = txn.open_table(EVENTS).map_err(read_err)?;
    Ok(events
        .last()
        .map_err(read_err)?
        .map(|(k, _)| k.value())
        .unwrap_or(0))
}

/// A stored event with what a run needs: its JSON and the envelope it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub uuid: String,
    pub event_type: String,
    pub published: String,
    pub hook: String,
    pub delivery_id: String,
    pub event_time: String,
    pub source: String,
    pub received_ms: u64,
    pub json: Vec<u8>,
}

/// What one pruning pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub deliveries: u64,
    pub events: u64,
    pub quarantined: u64,
    /// Their dedup keys: hand to [`Store::forget`] once the pass has committed.
    pub keys: PrunedKeys,
}

/// The delivery ids and event uuids a pruning pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunedKeys {
    pub delivery_ids: Vec<String>,
    pub event_uuids: Vec<String>,
}

/// Removes up to `limit` deliveries received before `cutoff_ms`, with their events and dedup
/// keys, but only events already dispatched and below `keep_from_event` (the oldest event a
/// pending run still needs); stops at the first delivery it must keep. Quarantined bodies older
/// than the cutoff go too.
pub fn prune(
    txn: &WriteTransaction,
    cutoff_ms: u64,
    keep_from_event: u64,
    limit: usize,
) -> Result<Pruned, WriteError> {
    let mut pruned = Pruned::default();
    let cursor = {
        let meta = txn.open_table(META).map_err(storage)?;
        meta.get(DISPATCH_CURSOR)
            .map_err(storage)?
            .map(|g| g.value())
            .unwrap_or(0)
    };
    let keep_from = keep_from_event.min(cursor + 1);
    let mut deliveries = txn.open_table(DELIVERIES).map_err(storage)?;
    let mut delivery_keys = txn.open_table(DELIVERY_KEYS).map_err(storage)?;
    let mut events = txn.open_table(EVENTS).map_err(storage)?;
    let old: Vec<(u64, String)> = deliveries
        .iter()
        .map_err(storage)?
        .take(limit)
        .map(|r| r.map(|(k, v)| (k.value(), v.value().1, v.value().2.to_string())))
        .take_while(|r| r.as_ref().map(|(_, ms, _)| *ms < cutoff_ms).unwrap_or(true))
        .map(|r| r.map(|(k, _, id)| (k, id)))
        .collect::<Result<_, _>>()
        .map_err(storage)?;
    let Some(max_delivery) = old.last().map(|(k, _)| *k) else {
        return Ok(pruned);
    };
    // Events come in commit order too: the old deliveries' events are the first ones.
    let mut doomed: Vec<(u64, String)> = Vec::new();
    let mut blocked_at: Option<u64> = None;
    for entry in events.iter().map_err(storage)? {
        let (k, v) = entry.map_err(storage)?;
        let (dseq, uuid) = (v.value().0, v.value().1.to_string());
        if dseq > max_delivery {
            break;
        }
        if k.value() >= keep_from {
            blocked_at = Some(dseq);
            break;
        }
        doomed.push((k.value(), uuid));
    }
    for (eseq, uuid) in doomed {
        events.remove(eseq).map_err(storage)?;
        pruned.keys.event_uuids.push(uuid);
        pruned.events += 1;
    }
    for (dseq, id) in old {
        if blocked_at.is_some_and(|b| dseq >= b) {
            break;
        }
        deliveries.remove(dseq).map_err(storage)?;
        if !id.is_empty() {
            delivery_keys.remove(dseq).map_err(storage)?;
            pruned.keys.delivery_ids.push(id);
        }
        pruned.deliveries += 1;
    }
    let mut q = txn.open_table(QUARANTINE).map_err(storage)?;
    let old_q: Vec<u64> = q
        .iter()
        .map_err(storage)?
        .take(limit)
        .map(|r| r.map(|(k, v)| (k.value(), v.value().1)))
        .take_while(|r| r.as_ref().map(|(_, ms)| *ms < cutoff_ms).unwrap_or(true))
        .map(|r| r.map(|(k, _)| k))
        .collect::<Result<_, _>>()
        .map_err(storage)?;
    for k in old_q {
        q.remove(k).map_err(storage)?;
        pruned.quarantined += 1;
    }
    Ok(pruned)
}

/// Sets the dispatch cursor inside a write transaction (only the dispatcher moves it, forward).
pub fn set_dispatch_cursor(txn: &WriteTransaction, seq: u64) -> Result<(), WriteError> {
    let mut meta = txn.open_table(META).map_err(storage)?;
    meta.insert(DISPATCH_CURSOR, seq).map_err(storage)?;
    Ok(())
}

/// One stored event, as the history commands show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventRow {
    pub seq: u64,
    pub uuid: String,
    pub event_type: String,
    pub published: String,
    pub hook: String,
    pub delivery_id: String,
    pub received: String,
    /// `queued` until processed.
    pub status: String,
}

/// One quarantined body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuarantineRow {
    pub seq: u64,
    pub hook: String,
    pub received: String,
    pub reason: String,
    pub bytes: usize,
    /// The body as text (lossy), cut to a preview.
    pub body_preview: String,
}

/// Counts for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Depths {
    pub queued: u64,
    pub events: u64,
    pub quarantined: u64,
}

/// How much of a quarantined body the history shows.
pub const QUARANTINE_PREVIEW_CHARS: usize = 200;

enum HistoryDb<'a> {
    Shared(&'a Database),
    Owned(Box<Database>),
}

/// Read access to the stored history.
pub struct History<'a>(HistoryDb<'a>);

impl History<'static> {
    /// Opens the store of `data_dir` for reading from another process, read-write (so a store
    /// left by a crash is repaired). `Err(OpenError::Busy)`: a server holds it; read through the
    /// server (`remote::read`). `Ok(None)`: there is no store yet.
    pub fn open(data_dir: &Path) -> Result<Option<History<'static>>, OpenError> {
        let path = data_dir.join(DB_FILE);
        if !path.exists() {
            return Ok(None);
        }
        match builder().open(&path) {
            Ok(db) => {
                init_tables(&db).map_err(|source| OpenError::Init {
                    path: path.clone(),
                    source,
                })?;
                Ok(Some(History(HistoryDb::Owned(Box::new(db)))))
            }
            // A server holds it: read through the server (`remote`).
            Err(DatabaseError::DatabaseAlreadyOpen) => Err(OpenError::Busy { path }),
            Err(source) => Err(OpenError::Database { path, source }),
        }
    }
}

impl History<'_> {
    /// A read transaction on the store.
    pub fn read_txn(&self) -> Result<ReadTransaction, ReadError> {
        self.read()
    }

    fn read(&self) -> Result<ReadTransaction, ReadError> {
        match &self.0 {
            HistoryDb::Shared(db) => db.begin_read(),
            HistoryDb::Owned(db) => db.begin_read(),
        }
        .map_err(read_err)
    }

    /// The newest `limit` events, newest first.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<EventRow>, ReadError> {
        let txn = self.read()?;
        let events = txn.open_table(EVENTS).map_err(read_err)?;
        let deliveries = txn.open_table(DELIVERIES).map_err(read_err)?;
        let cursor = dispatch_cursor(&txn)?;
        let mut rows = Vec::new();
        for entry in events.iter().map_err(read_err)?.rev().take(limit) {
            let (k, v) = entry.map_err(read_err)?;
            let (dseq, uuid, event_type, published, _, _) = v.value();
            let seq = k.value();
            let (hook, received, delivery_id) = match deliveries.get(dseq).map_err(read_err)? {
                Some(d) => {
                    let (hook, ms, id, _, _, _) = d.value();
                    (hook.to_string(), crate::util::format_ms(ms), id.to_string())
                }
                None => Default::default(),
            };
            let queued = seq > cursor;
            rows.push(EventRow {
                seq,
                uuid: uuid.to_string(),
                event_type: event_type.to_string(),
                published: published.to_string(),
                hook,
                delivery_id,
                received,
                status: if queued { "queued" } else { "processed" }.to_string(),
            });
        }
        Ok(rows)
    }

    /// The dispatch cursor: events above it have not been handed to the scripts yet.
    pub fn dispatch_cursor(&self) -> Result<u64, ReadError> {
        dispatch_cursor(&self.read()?)
    }

    /// Up to `limit` events with seq > `after`, in seq order, with their JSON.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, ReadError> {
        let txn = self.read()?;
        let events = txn.open_table(EVENTS).map_err(read_err)?;
        let deliveries = txn.open_table(DELIVERIES).map_err(read_err)?;
        let mut out = Vec::new();
        let mut cache = None;
        for entry in events.range(after + 1..).map_err(read_err)?.take(limit) {
            let (k, v) = entry.map_err(read_err)?;
            out.push(stored_event(&deliveries, k.value(), v.value(), &mut cache)?);
        }
        Ok(out)
    }

    /// One event by its seq.
    pub fn event_by_seq(&self, seq: u64) -> Result<Option<StoredEvent>, ReadError> {
        Ok(self
            .events_after(seq.saturating_sub(1), 1)?
            .into_iter()
            .find(|e| e.seq == seq))
    }

    /// One event by its uuid (newest first: a scan of the events, for commands).
    pub fn event_by_uuid(&self, uuid: &str) -> Result<Option<StoredEvent>, ReadError> {
        match self.event_seq(uuid)? {
            Some(seq) => self.event_by_seq(seq),
            None => Ok(None),
        }
    }

    /// The raw JSON of a stored event, by uuid.
    pub fn event_json(&self, uuid: &str) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(self.event_by_uuid(uuid)?.map(|e| e.json))
    }

    /// The seq of the event with `uuid`. The dedup index lives in the server's memory, so this
    /// scans the events table from the newest.
    fn event_seq(&self, uuid: &str) -> Result<Option<u64>, ReadError> {
        let txn = self.read()?;
        let events = txn.open_table(EVENTS).map_err(read_err)?;
        for entry in events.iter().map_err(read_err)?.rev() {
            let (k, v) = entry.map_err(read_err)?;
            if v.value().1 == uuid {
                return Ok(Some(k.value()));
            }
        }
        Ok(None)
    }

    /// The newest `limit` quarantined bodies, newest first.
    pub fn quarantine(&self, limit: usize) -> Result<Vec<QuarantineRow>, ReadError> {
        let txn = self.read()?;
        let q = match txn.open_table(QUARANTINE) {
            Ok(q) => q,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(read_err(e)),
        };
        let mut rows = Vec::new();
        for entry in q.iter().map_err(read_err)?.rev().take(limit) {
            let (k, v) = entry.map_err(read_err)?;
            let (hook, ms, reason, body) = v.value();
            rows.push(QuarantineRow {
                seq: k.value(),
                hook: hook.to_string(),
                received: crate::util::format_ms(ms),
                reason: reason.to_string(),
                bytes: body.len(),
                body_preview: String::from_utf8_lossy(body)
                    .chars()
                    .take(QUARANTINE_PREVIEW_CHARS)
                    .collect(),
            });
        }
        Ok(rows)
    }

    pub fn depths(&self) -> Result<Depths, ReadError> {
        let txn = self.read()?;
        let len = |r: Result<u64, redb::StorageError>| r.map_err(read_err);
        let quarantined = match txn.open_table(QUARANTINE) {
            Ok(q) => len(q.len())?,
            Err(_) => 0,
        };
        Ok(Depths {
            queued: last_event_seq(&txn)?.saturating_sub(dispatch_cursor(&txn)?),
            events: len(txn.open_table(EVENTS).map_err(read_err)?.len())?,
            quarantined,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_old_raw_bodies_read_as_they_are() {
        let event = include_bytes!("../tests/fixtures/event.user.lifecycle.deactivate.json");
        let packed = pack_body(event).expect("a 2.4 KB event compresses");
        assert_eq!(packed[0], LZ4_BODY);
        assert!(packed.len() < event.len() * 2 / 3, "{}", packed.len());
        assert_eq!(&unpack_body(&packed).unwrap()[..], &event[..]);
        // Small or incompressible bodies are stored as received, and read back unchanged (as
        // are the raw bodies of stores written before compression).
        assert!(pack_body(br#"{"data":{"events":[{}]}}"#).is_none());
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(pack_body(&noise).is_none());
        assert_eq!(&unpack_body(event).unwrap()[..], &event[..]);
        // A damaged compressed body is a read error, not a panic.
        let mut damaged = packed.clone();
        damaged.truncate(packed.len() / 2);
        assert!(unpack_body(&damaged).is_err());
    }
}
