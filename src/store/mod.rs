//! The store: every table of the one redb file (the inbox, the dedup index, runs, the mail
//! queue, samples, script state) behind one interface, and the queries the history commands and
//! the admin API answer. Knows nothing of HTTP, scripts' execution or mail delivery.
//!
//! While a [`Store`] is open, one writer thread owns every write transaction (group commit,
//! `writer`): request handlers submit deliveries, the other parts submit closures
//! ([`Store::write`]) applied inside the next batch's transaction, and each gets its answer only
//! after that transaction committed. Nothing is acknowledged before its commit. (A command that
//! opens the file with [`History::open`] while no server runs writes only to create missing
//! tables and migrate old ones; redb repairs a file left by a crash on that open.)
//!
//! Readers (`/metrics`, the history commands) open read transactions. The server holds the file
//! exclusively (one fsync per commit); while it runs, the history commands read through it
//! ([`query`], answered behind `POST /admin/read`).
//!
//! # Layout
//!
//! - `writer`: the group-commit writer thread and its counters.
//! - `inbox`: deliveries, events, dedup keys, quarantine, the dispatch cursor; their reads and
//!   pruning.
//! - `dedup`: the in-memory index of stored delivery ids and event uuids.
//! - `due`: the (not before, id) time index every queue of due work uses (runs, mail).
//! - `runs`: run records and the pending runs.
//! - `actions`: the durable action queue (every side effect of successful runs: email, HTTP,
//!   Okta), one due index per kind.
//! - `outbox`: the mail actions as `engine outbox` shows them; the move of an older outbox.
//! - `samples`: captured sample events.
//! - `script_state`: the per-script state the server records at each reload.
//! - `kv`: the scripts' own state (`state::*`): values with expiry and version, the commit-time
//!   check that what a run read is unchanged, pruning of expired keys.
//! - `timers`: the scripts' durable timers (`schedule`), keyed replacement, firing into runs.
//! - `counts`: hourly counters (events, runs, failures) and each hook's last delivery, written
//!   in the transactions that store them, for the console's overview.
//! - `backfill`: the System Log backfill's cursor.
//! - `query`: the reads of the history commands, one `Query` answered the same way from the
//!   file or through the running server.

pub mod actions;
pub mod backfill;
pub mod counts;
mod dedup;
mod due;
mod inbox;
pub mod kv;
pub mod outbox;
pub mod query;
pub mod runs;
pub mod samples;
pub mod script_state;
pub mod timers;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use redb::{Database, DatabaseError, ReadTransaction, ReadableDatabase, WriteTransaction};
use tokio::sync::{Notify, oneshot};

pub use dedup::SEAL_AT as DEDUP_SEAL_AT;
use dedup::{Kind, Probe, key_hash};
pub use due::{Admit, DueKey, skipping};
pub use inbox::{
    DISPATCH_CURSOR, Depths, EventDetail, EventFilter, EventHead, EventPage, EventRow, NewDelivery,
    ParsedDelivery, ParsedEvent, Pruned, PrunedKeys, QUARANTINE_PREVIEW_CHARS, QuarantineRow,
    SYSTEM_LOG_SOURCE, Stored, StoredEvent, prune, set_dispatch_cursor, source_kind,
};
use inbox::{PackedDelivery, pack_body};
pub use writer::{
    DELIVERING_WINDOW, FAILURE_LOG_INTERVAL, OTHERS_GATHER, OTHERS_LINGER, OTHERS_WHILE_DELIVERING,
    REOPEN_FIRST_DELAY, REOPEN_MAX_DELAY, WriterCounts, WriterStats,
};
use writer::{Job, Reply, Shared, TxnFn};

/// A handle on the writer's counters that outlives nothing else of the store.
#[derive(Clone)]
pub struct WriterStatsHandle(Arc<Shared>);

impl WriterStatsHandle {
    pub fn read(&self) -> WriterCounts {
        self.0.stats.read()
    }
}

/// The store file inside the data dir.
pub const DB_FILE: &str = "engine.redb";
/// Most jobs gathered into one transaction: bounds the latency of the first one in a batch and
/// the memory a batch holds, while being far above the concurrency Okta produces.
pub const MAX_BATCH_JOBS: usize = 4096;
/// Most body bytes gathered into one transaction, for the same reasons.
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Opening the store failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot create the store file {path}: {source}\n  hint: the data dir must be writable by the user running the engine"
    )]
    CreateFile {
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
pub struct ReadError(pub(crate) String);

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

/// The server's handle on the store: submits writes to the writer thread and reads directly.
pub struct Store {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
}

/// The server holds the file exclusively: redb's shared modes (other processes reading beside
/// the writer) force a two-phase commit, a second fsync on every commit. The history commands
/// read through the server instead (`cli`'s remote reads, answered by [`query`]).
fn builder(cache_bytes: usize) -> redb::Builder {
    let mut b = Database::builder();
    b.set_cache_size(cache_bytes);
    b
}

/// redb's page cache unless [`Store::open_with_cache`] says otherwise (`[store] cache_mb`; why
/// it is bounded: [`crate::config::DEFAULT_STORE_CACHE_MB`]).
pub const REDB_CACHE_BYTES: usize = crate::config::DEFAULT_STORE_CACHE_MB * 1024 * 1024;

/// redb's page cache while the store is opened and the dedup index loaded: the load streams
/// every sealed run (~16 bytes a stored event) once, and a larger cache would only keep pages
/// no one reads again.
const LOAD_CACHE_BYTES: usize = 1024 * 1024;

impl Store {
    /// Opens (creating if needed) the store in `data_dir` and starts its writer thread. A new
    /// data dir is created 0700 and the redb file 0600.
    pub fn open(data_dir: &Path, mode: CommitMode) -> Result<Store, OpenError> {
        Store::open_with_cache(data_dir, mode, REDB_CACHE_BYTES)
    }

    /// [`Store::open`] with a page cache of `cache_bytes` (`[store] cache_mb`).
    pub fn open_with_cache(
        data_dir: &Path,
        mode: CommitMode,
        cache_bytes: usize,
    ) -> Result<Store, OpenError> {
        crate::util::private::create_dir(data_dir).map_err(|source| OpenError::CreateDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        // redb would create the file with the umask's mode (0644): it holds every delivery.
        crate::util::private::ensure_file(&path).map_err(|source| OpenError::CreateFile {
            path: path.clone(),
            source,
        })?;
        let create = |cache: usize| {
            builder(cache).create(&path).map_err(|source| match source {
                DatabaseError::DatabaseAlreadyOpen => OpenError::Busy { path: path.clone() },
                source => OpenError::Database {
                    path: path.clone(),
                    source,
                },
            })
        };
        let db = create(LOAD_CACHE_BYTES)?;
        let next = init_tables(&db).map_err(|source| OpenError::Init {
            path: path.clone(),
            source,
        })?;
        let seen = inbox::load_seen(&db).map_err(|source| OpenError::Init {
            path: path.clone(),
            source,
        })?;
        // Loading read every dedup run once: through a small cache, which goes now, so that the
        // configured one starts empty; what the load allocated and freed goes back to the OS.
        drop(db);
        let db = create(cache_bytes)?;
        crate::util::release_free_memory();
        let shared = Arc::new(Shared {
            db: ArcSwapOption::from_pointee(db),
            seen: Mutex::new(seen),
            stats: WriterStats::default(),
            events_committed: Notify::new(),
            failing: AtomicBool::new(false),
            cache_bytes,
            last_delivery_us: AtomicU64::new(0),
            opened: std::time::Instant::now(),
        });
        let (tx, rx) = mpsc::channel();
        let writer_shared = shared.clone();
        let writer_path = path.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer::writer_loop(&writer_shared, &writer_path, rx, mode, next))
            .map_err(|e| OpenError::Init {
                path: path.clone(),
                source: redb::Error::Io(e),
            })?;
        Ok(Store {
            shared,
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

    /// Stores events fetched from the Okta System Log as `delivery` (through the same dedup
    /// index as hook deliveries; not at all when every event is known already) and advances the
    /// backfill cursor to `cursor_ms` in the same transaction; resolves after that commit.
    pub async fn store_backfill(
        &self,
        delivery: Option<NewDelivery>,
        cursor_ms: Option<u64>,
    ) -> Result<Stored, WriteError> {
        let delivery = delivery.map(|delivery| PackedDelivery {
            stored: pack_body(&delivery.body)
                .map(Bytes::from)
                .unwrap_or_else(|| delivery.body.clone()),
            delivery,
        });
        match self.submit(|reply| Job::Backfill {
            delivery,
            cursor_ms,
            reply,
        }) {
            Some(rx) => rx.await.unwrap_or(Err(WriteError::Closed)),
            None => Err(WriteError::Closed),
        }
    }

    /// Whether the store holds (or is committing) an event with this uuid.
    pub fn has_event(&self, uuid: &str) -> Result<bool, ReadError> {
        let key = key_hash(uuid);
        let firsts = match writer::lock(&self.shared.seen).probe(Kind::Event, key) {
            Probe::Known => return Ok(true),
            Probe::New => return Ok(false),
            Probe::InRuns(firsts) => firsts,
        };
        let db = self
            .shared
            .db
            .load_full()
            .ok_or_else(|| read_err("the store is closed"))?;
        let txn = db.begin_read().map_err(read_err)?;
        let runs = txn.open_table(dedup::DEDUP_RUNS).map_err(read_err)?;
        dedup::in_runs(&runs, Kind::Event, &firsts, key).map_err(read_err)
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
    /// has committed durably. `f` must not block: it runs on the writer thread. An error from `f`
    /// fails the other writes of its batch (nothing of them is committed), not the deliveries:
    /// those commit first, in a transaction of their own.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, WriteError> + Send + 'static,
    ) -> Result<T, WriteError> {
        self.queue_write(f).await
    }

    /// Like [`Store::write`], but `f` is queued now, in order with every earlier and later
    /// write of this kind (a delivery queued after it may commit first), whether or not the
    /// returned future (its outcome, once committed) is ever polled.
    pub fn queue_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, WriteError> + Send + 'static,
    ) -> impl Future<Output = Result<T, WriteError>> + Send + 'static {
        let (tx, rx) = oneshot::channel::<Result<T, WriteError>>();
        let job: TxnFn = Box::new(move |txn: Result<&WriteTransaction, WriteError>| {
            let value = txn.and_then(f);
            let applied = value.as_ref().map(|_| ()).map_err(Clone::clone);
            let reply: Reply = Box::new(move |committed| {
                let _ = tx.send(committed.and(value));
            });
            (applied, reply)
        });
        let queued = match self.tx.as_ref() {
            Some(sender) => sender.send(Job::Txn(job)).is_ok(),
            None => false,
        };
        async move {
            if !queued {
                return Err(WriteError::Closed);
            }
            rx.await.unwrap_or(Err(WriteError::Closed))
        }
    }

    /// Queues `f` for the writer's next transaction now, in order with every later write, and
    /// does not wait for it (its outcome is not reported: for marks whose loss is harmless).
    pub fn write_detached(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<(), WriteError> + Send + 'static,
    ) {
        let job: TxnFn = Box::new(move |txn: Result<&WriteTransaction, WriteError>| {
            let applied = txn.and_then(f);
            let reply: Reply = Box::new(|_| ());
            (applied, reply)
        });
        if let Some(sender) = self.tx.as_ref() {
            let _ = sender.send(Job::Txn(job));
        }
    }

    /// Forgets the dedup keys of pruned deliveries and events (after their removal committed).
    pub fn forget(&self, keys: &PrunedKeys) {
        let hashes = |keys: &[String]| keys.iter().map(|k| key_hash(k)).collect::<Vec<_>>();
        let mut seen = writer::lock(&self.shared.seen);
        seen.remove(Kind::Delivery, &hashes(&keys.delivery_ids));
        seen.remove(Kind::Event, &hashes(&keys.event_uuids));
        if let Some((deliveries, events)) = keys.kept_from {
            seen.drop_runs_before(Kind::Delivery, deliveries);
            seen.drop_runs_before(Kind::Event, events);
        }
    }

    /// Rebuilds the dedup filters of each kind whose filters hold mostly keys of pruned runs
    /// (or grew into a chain): from a snapshot of the runs, outside the index's lock, which is
    /// taken only to add the runs sealed since and swap. Returns how many kinds were rebuilt.
    pub fn compact_dedup(&self) -> Result<usize, ReadError> {
        let mut rebuilt = 0;
        for kind in Kind::ALL {
            let runs = {
                let seen = writer::lock(&self.shared.seen);
                if !seen.filters_stale(kind) {
                    continue;
                }
                seen.runs(kind)
            };
            let db = self
                .shared
                .db
                .load_full()
                .ok_or_else(|| read_err("the store is closed"))?;
            let mut build = dedup::FilterBuild::new(runs.iter().map(|r| r.1).sum());
            {
                let txn = db.begin_read().map_err(read_err)?;
                let table = txn.open_table(dedup::DEDUP_RUNS).map_err(read_err)?;
                for (first, _) in &runs {
                    build.add_run(&table, kind, *first).map_err(read_err)?;
                }
            }
            let mut seen = writer::lock(&self.shared.seen);
            let txn = db.begin_read().map_err(read_err)?;
            let table = txn.open_table(dedup::DEDUP_RUNS).map_err(read_err)?;
            seen.rebuild_filters(kind, build, &table)
                .map_err(read_err)?;
            rebuilt += 1;
        }
        Ok(rebuilt)
    }

    /// (live keys, sealed runs, filters) of the event uuid index: for tests and benchmarks.
    pub fn dedup_shape(&self) -> (usize, usize, usize) {
        writer::lock(&self.shared.seen).shape(Kind::Event)
    }

    /// Whether deliveries are coming: the writer took one within [`DELIVERING_WINDOW`]. Work
    /// that can wait (the dispatcher) keeps its writes small meanwhile.
    pub fn deliveries_coming(&self) -> bool {
        self.shared.deliveries_coming()
    }

    /// What the writer has done so far (for `/metrics` and the benchmark).
    pub fn writer_stats(&self) -> WriterStatsHandle {
        WriterStatsHandle(self.shared.clone())
    }

    /// (delivery ids, event uuids) in the dedup index.
    pub fn dedup_len(&self) -> (usize, usize) {
        writer::lock(&self.shared.seen).len()
    }

    /// Woken after every commit that stored new events.
    pub fn events_committed(&self) -> &Notify {
        &self.shared.events_committed
    }

    /// Commits a small write: proves the store is writable (for `/healthz`).
    pub async fn probe(&self) -> Result<(), WriteError> {
        match self.submit(Job::Probe) {
            Some(rx) => rx.await.unwrap_or(Err(WriteError::Closed)),
            None => Err(WriteError::Closed),
        }
    }

    pub fn history(&self) -> History<'_> {
        History(HistoryDb::Shared(&self.shared))
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
        // Closes the file (handles such as `writer_stats` keep only the counters).
        self.shared.db.store(None);
    }

    /// Whether writes are failing now (the writer is reopening the file).
    pub fn failing(&self) -> bool {
        self.shared
            .failing
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn init_tables(db: &Database) -> Result<inbox::NextSeq, redb::Error> {
    let txn = db.begin_write()?;
    let next = inbox::init(&txn)?;
    runs::init(&txn)?;
    actions::init(&txn)?;
    samples::init(&txn)?;
    kv::init(&txn)?;
    timers::init(&txn)?;
    counts::init(&txn)?;
    txn.commit()?;
    Ok(next)
}

enum HistoryDb<'a> {
    /// The server's open store: its database and its dedup index.
    Shared(&'a Shared),
    Owned(Box<Database>),
}

/// Read access to the stored history: on the server's open store, or on the file opened by a
/// command while no server holds it.
pub struct History<'a>(HistoryDb<'a>);

impl History<'static> {
    /// Opens the store of `data_dir` for reading from another process, read-write (so a store
    /// left by a crash is repaired). `Err(OpenError::Busy)`: a server holds it; read through the
    /// server. `Ok(None)`: there is no store yet.
    pub fn open(data_dir: &Path) -> Result<Option<History<'static>>, OpenError> {
        let path = data_dir.join(DB_FILE);
        if !path.exists() {
            return Ok(None);
        }
        match builder(REDB_CACHE_BYTES).open(&path) {
            Ok(db) => {
                init_tables(&db).map_err(|source| OpenError::Init {
                    path: path.clone(),
                    source,
                })?;
                Ok(Some(History(HistoryDb::Owned(Box::new(db)))))
            }
            // A server holds it: read through the server.
            Err(DatabaseError::DatabaseAlreadyOpen) => Err(OpenError::Busy { path }),
            Err(source) => Err(OpenError::Database { path, source }),
        }
    }
}

impl History<'_> {
    /// The seq of the event with `uuid` as the server's dedup index knows it, verified against
    /// the stored event's uuid (the index holds digests). `Ok(None)`: no index is loaded (a
    /// command opened the file); `Ok(Some(None))`: no event has this uuid.
    ///
    /// A live key carries its seq; a sealed run holds digests only, so a key the filter and the
    /// run's chunk place in a run is looked for among that run's seqs (at most
    /// [`DEDUP_SEAL_AT`] events, not the whole history).
    pub(crate) fn indexed_event_seq(&self, uuid: &str) -> Result<Option<Option<u64>>, ReadError> {
        let HistoryDb::Shared(shared) = &self.0 else {
            return Ok(None);
        };
        let key = key_hash(uuid);
        let candidate = {
            let seen = writer::lock(&shared.seen);
            seen.locate(Kind::Event, key)
        };
        let txn = self.read()?;
        let found = match candidate {
            dedup::Located::New => None,
            dedup::Located::Live(seq) => inbox::seq_if_uuid(&txn, seq..seq + 1, uuid)?,
            dedup::Located::InRuns(runs) => {
                let table = txn.open_table(dedup::DEDUP_RUNS).map_err(read_err)?;
                let mut found = None;
                for (first, end) in runs {
                    if dedup::in_runs(&table, Kind::Event, &[first], key).map_err(read_err)? {
                        found = inbox::seq_if_uuid(&txn, first..end, uuid)?;
                        if found.is_some() {
                            break;
                        }
                    }
                }
                found
            }
        };
        Ok(Some(found))
    }

    /// A read transaction on the store.
    pub(crate) fn read(&self) -> Result<ReadTransaction, ReadError> {
        match &self.0 {
            HistoryDb::Shared(shared) => match &*shared.db.load() {
                Some(db) => db.begin_read(),
                None => {
                    return Err(ReadError(
                        "the store is being reopened after a storage failure".into(),
                    ));
                }
            },
            HistoryDb::Owned(db) => db.begin_read(),
        }
        .map_err(read_err)
    }
}

/// Anything that can start a read transaction: the server's database or a [`History`].
pub trait ReadTxnSource {
    fn begin(&self) -> Result<ReadTransaction, ReadError>;
}

impl ReadTxnSource for Database {
    fn begin(&self) -> Result<ReadTransaction, ReadError> {
        self.begin_read().map_err(read_err)
    }
}

impl ReadTxnSource for History<'_> {
    fn begin(&self) -> Result<ReadTransaction, ReadError> {
        self.read()
    }
}

impl ReadTxnSource for Store {
    fn begin(&self) -> Result<ReadTransaction, ReadError> {
        self.history().read()
    }
}
