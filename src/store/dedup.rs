//! The deduplication index: which envelope `eventId`s and event `uuid`s the store holds, with
//! the recent keys in memory and the older ones in sealed runs on disk behind a Bloom filter.
//!
//! Delivery ids and event uuids are random strings. Kept as one redb table each, every accepted
//! delivery dirtied one random leaf page per key, and those pages were most of what each durable
//! commit wrote (and waited for). Kept all in memory instead, a month of history (12 million
//! events at Okta's cap) cost ~600 MB and ~12 s to rebuild at every start. So the index has two
//! parts per kind (delivery ids, event uuids):
//!
//! - **live**: the keys stored since the last seal, in memory (at most ~[`SEAL_AT`] of them);
//! - **sealed runs**: each time live reaches [`SEAL_AT`] keys, the writer writes them, sorted, as
//!   one run of [`CHUNK_KEYS`]-key chunks into `dedup_runs` (appended at the right edge of the
//!   table, in the same transaction as a batch of deliveries) and moves them into an in-memory
//!   Bloom filter ([`FILTER_BITS_PER_KEY`]). A key the filter does not know is
//!   new (the common case costs no I/O); a key it may know is looked up in each run's chunk that
//!   could hold it, so the answer stays exact.
//!
//! Runs are rebuilt from nothing but the `events` / `delivery_keys` tables when missing (a store
//! written by an older engine is sealed when it is opened), and the live part is rebuilt from the
//! keys stored after the last run, so the index always describes exactly what is durable plus
//! what the writer is about to commit; the writer undoes a batch's additions when its commit fails.
//!
//! Pruning removes a run (on disk in the pruning transaction, from memory in [`Seen::drop_runs_before`])
//! once every key of it is past retention: a key stays known at least as long as the store keeps
//! its event, and at most one run longer.
//!
//! Keys are held as 128-bit digests (SHA-256, truncated); two different keys share a digest with
//! probability ~2⁻¹²⁸ per pair.

use std::collections::HashMap;

use redb::{ReadableTable, StorageError, TableDefinition, WriteTransaction};
use sha2::{Digest, Sha256};

/// A key's digest.
pub type KeyHash = u128;

/// The digest of a delivery id or event uuid.
pub fn key_hash(key: &str) -> KeyHash {
    let d = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_le_bytes(b)
}

/// Keys held in memory before they are sealed into a run: 7/8 of 2¹⁸, so that a full live map
/// fits a hash table of 2¹⁸ slots (~8.6 MB) without growing, while a month at Okta's cap makes
/// ~50 runs (a possible hit looks into each).
pub const SEAL_AT: usize = 229_376;
/// Digests per chunk of a run (16 bytes each: a 2 KiB value), the unit a lookup reads.
pub const CHUNK_KEYS: usize = 128;
/// Bits of Bloom filter per key: a split-block filter (one 32-byte block per key, so a lookup or
/// an insert touches one cache line) at 12 bits a key answers "maybe" for ~0.5 % of new keys,
/// which then cost a look into the runs.
pub const FILTER_BITS_PER_KEY: usize = 12;
/// The smallest filter made (keys): growth by a few runs does not start a new filter each time.
pub const FILTER_MIN_KEYS: u64 = 4 * SEAL_AT as u64;

/// (kind, run's first seq, first digest of the chunk) → the chunk's digests, ascending, 16 bytes
/// each, little-endian.
pub(crate) const DEDUP_RUNS: TableDefinition<(u8, u64, u128), &[u8]> =
    TableDefinition::new("dedup_runs");
/// (kind, run's first seq) → (end seq: every key of the run was stored below it, keys).
pub(crate) const DEDUP_SEALED: TableDefinition<(u8, u64), (u64, u64)> =
    TableDefinition::new("dedup_sealed");

/// Which keys: envelope eventIds (by delivery seq) or event uuids (by event seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Delivery = 0,
    Event = 1,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Delivery, Kind::Event];

    fn tag(self) -> u8 {
        self as u8
    }
}

/// A sealed run, in memory: which seqs it covers and how many keys it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first: u64,
    end: u64,
    keys: u64,
}

/// One Bloom filter of the chain: a new one starts when the last is full, so the false-positive
/// rate holds while the history grows; the chain is one filter again after a start or
/// [`Seen::rebuild_filters`].
struct Filter {
    bloom: sbbf_rs_safe::Filter,
    capacity: u64,
    keys: u64,
}

impl Filter {
    fn with_capacity(keys: u64) -> Filter {
        let capacity = keys.max(FILTER_MIN_KEYS);
        Filter {
            bloom: sbbf_rs_safe::Filter::new(FILTER_BITS_PER_KEY, capacity as usize),
            capacity,
            keys: 0,
        }
    }

    fn insert(&mut self, key: KeyHash) {
        self.bloom.insert_hash(key as u64);
        self.keys += 1;
    }
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("capacity", &self.capacity)
            .field("keys", &self.keys)
            .finish()
    }
}

/// The index of one kind.
#[derive(Debug, Default)]
struct Index {
    /// Keys stored since the last seal (or committing now), each with its seq.
    live: HashMap<KeyHash, u64>,
    /// Oldest first.
    runs: Vec<Run>,
    filters: Vec<Filter>,
    /// Keys in the filters whose run is gone (pruned): they only raise the false-positive rate.
    stale: u64,
}

impl Index {
    fn sealed_keys(&self) -> u64 {
        self.runs.iter().map(|r| r.keys).sum()
    }

    fn filter_insert(&mut self, key: KeyHash) {
        let full = self.filters.last().is_none_or(|f| f.keys >= f.capacity);
        if full {
            let total: u64 = self.filters.iter().map(|f| f.keys).sum();
            self.filters.push(Filter::with_capacity(total));
        }
        if let Some(f) = self.filters.last_mut() {
            f.insert(key);
        }
    }

    fn may_be_sealed(&self, key: KeyHash) -> bool {
        !self.runs.is_empty()
            && self
                .filters
                .iter()
                .any(|f| f.bloom.contains_hash(key as u64))
    }
}

/// What a lookup in memory found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A live key.
    Known,
    /// Not in memory, and the filter rules out every run.
    New,
    /// The filter does not rule it out: look into these runs (first seqs, newest first).
    InRuns(Vec<u64>),
}

/// Where a key may be stored, as memory says ([`Seen::locate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// A live key, stored under this seq.
    Live(u64),
    /// Not in memory, and the filter rules out every run.
    New,
    /// The filter does not rule it out: in one of these runs, (first seq, end seq), newest first.
    InRuns(Vec<(u64, u64)>),
}

/// Seen delivery ids and event uuids (as [`key_hash`]es).
#[derive(Debug)]
pub struct Seen {
    deliveries: Index,
    events: Index,
    seal_at: usize,
}

/// A run about to be written: the live keys of `kind` stored below `end`, sorted.
#[derive(Debug)]
pub struct Seal {
    pub kind: Kind,
    pub first: u64,
    pub end: u64,
    keys: Vec<KeyHash>,
}

impl Seal {
    /// A run of `kind` over seqs `first..end` holding `keys` (sorted).
    pub fn new(kind: Kind, first: u64, end: u64, keys: Vec<KeyHash>) -> Seal {
        debug_assert!(keys.is_sorted());
        Seal {
            kind,
            first,
            end,
            keys,
        }
    }
}

impl Seen {
    /// An empty index that seals every `seal_at` keys ([`SEAL_AT`] but in tests).
    pub fn with_seal_at(seal_at: usize) -> Seen {
        Seen {
            deliveries: Index::default(),
            events: Index::default(),
            seal_at: seal_at.max(1),
        }
    }

    fn index(&self, kind: Kind) -> &Index {
        match kind {
            Kind::Delivery => &self.deliveries,
            Kind::Event => &self.events,
        }
    }

    fn index_mut(&mut self, kind: Kind) -> &mut Index {
        match kind {
            Kind::Delivery => &mut self.deliveries,
            Kind::Event => &mut self.events,
        }
    }

    /// Looks `key` up in memory only.
    pub fn probe(&self, kind: Kind, key: KeyHash) -> Probe {
        let ix = self.index(kind);
        if ix.live.contains_key(&key) {
            Probe::Known
        } else if ix.may_be_sealed(key) {
            Probe::InRuns(ix.runs.iter().rev().map(|r| r.first).collect())
        } else {
            Probe::New
        }
    }

    /// Where `key` may be stored, from memory only: a live key's seq, or the seq ranges of the
    /// runs that may hold it (the console's event by uuid; no I/O, no write).
    pub fn locate(&self, kind: Kind, key: KeyHash) -> Located {
        let ix = self.index(kind);
        if let Some(seq) = ix.live.get(&key) {
            Located::Live(*seq)
        } else if ix.may_be_sealed(key) {
            Located::InRuns(ix.runs.iter().rev().map(|r| (r.first, r.end)).collect())
        } else {
            Located::New
        }
    }

    /// Whether `key` is known: in memory, else in the runs (read through `runs`).
    pub fn knows(
        &self,
        kind: Kind,
        key: KeyHash,
        runs: &impl ReadableTable<(u8, u64, u128), &'static [u8]>,
    ) -> Result<bool, StorageError> {
        match self.probe(kind, key) {
            Probe::Known => Ok(true),
            Probe::New => Ok(false),
            Probe::InRuns(firsts) => in_runs(runs, kind, &firsts, key),
        }
    }

    /// Records `key` (stored under `seq`) unless it is known; returns whether it was known.
    pub fn add(
        &mut self,
        kind: Kind,
        key: KeyHash,
        seq: u64,
        runs: &impl ReadableTable<(u8, u64, u128), &'static [u8]>,
    ) -> Result<bool, StorageError> {
        if self.knows(kind, key, runs)? {
            return Ok(true);
        }
        self.index_mut(kind).live.insert(key, seq);
        Ok(false)
    }

    /// Forgets live keys (their commit failed, or they were pruned). A sealed key goes with its
    /// run ([`Seen::drop_runs_before`]).
    pub fn remove(&mut self, kind: Kind, keys: &[KeyHash]) {
        let live = &mut self.index_mut(kind).live;
        for k in keys {
            live.remove(k);
        }
    }

    /// (delivery ids, event uuids) held, live and sealed.
    pub fn len(&self) -> (usize, usize) {
        let n = |ix: &Index| ix.live.len() + ix.sealed_keys() as usize;
        (n(&self.deliveries), n(&self.events))
    }

    /// (live, sealed runs, filters) of `kind`, for tests and the benchmark.
    pub fn shape(&self, kind: Kind) -> (usize, usize, usize) {
        let ix = self.index(kind);
        (ix.live.len(), ix.runs.len(), ix.filters.len())
    }

    /// The runs due: for each kind whose live part reached the seal size, its live keys (all
    /// stored below `next(kind)`), sorted. Nothing changes until [`Seen::apply_seal`].
    pub fn due_seals(&self, next: impl Fn(Kind) -> u64) -> Vec<Seal> {
        Kind::ALL
            .into_iter()
            .filter(|k| self.index(*k).live.len() >= self.seal_at)
            .map(|kind| {
                let ix = self.index(kind);
                let mut keys: Vec<KeyHash> = ix.live.keys().copied().collect();
                keys.sort_unstable();
                let first = ix.runs.last().map_or(0, |r| r.end);
                // Every live key is committed: stored below the next seq to give.
                Seal::new(kind, first, next(kind), keys)
            })
            .collect()
    }

    /// Moves a written (and committed) run's keys from the live part into the filter.
    pub fn apply_seal(&mut self, seal: Seal) {
        let ix = self.index_mut(seal.kind);
        ix.live.retain(|_, seq| *seq >= seal.end);
        ix.live.shrink_to(0);
        for k in &seal.keys {
            ix.filter_insert(*k);
        }
        ix.runs.push(Run {
            first: seal.first,
            end: seal.end,
            keys: seal.keys.len() as u64,
        });
    }

    /// Forgets the runs all of whose keys were stored below `first_kept` (pruned); their disk
    /// part went in the pruning transaction ([`delete_runs_before`]).
    pub fn drop_runs_before(&mut self, kind: Kind, first_kept: u64) {
        let ix = self.index_mut(kind);
        let gone: u64 = ix
            .runs
            .iter()
            .take_while(|r| r.end <= first_kept)
            .map(|r| r.keys)
            .sum();
        ix.runs.retain(|r| r.end > first_kept);
        ix.stale += gone;
    }

    /// Whether the filters of `kind` hold more keys of pruned runs than of live ones (and so
    /// waste memory and raise the false-positive rate): [`Seen::rebuild_filters`] then.
    pub fn filters_stale(&self, kind: Kind) -> bool {
        let ix = self.index(kind);
        ix.stale > ix.sealed_keys().max(FILTER_MIN_KEYS) || ix.filters.len() > 4
    }

    /// The runs of `kind` (first seq, keys) as they are now, for [`Seen::rebuild_filters`].
    pub fn runs(&self, kind: Kind) -> Vec<(u64, u64)> {
        self.index(kind)
            .runs
            .iter()
            .map(|r| (r.first, r.keys))
            .collect()
    }

    /// Replaces the filters of `kind` with `filter`, built from the runs `built` (first seqs) of
    /// [`Seen::runs`]; runs sealed since are read into it from `table`.
    pub fn rebuild_filters(
        &mut self,
        kind: Kind,
        mut filter: FilterBuild,
        table: &impl ReadableTable<(u8, u64, u128), &'static [u8]>,
    ) -> Result<(), StorageError> {
        let ix = self.index_mut(kind);
        let since: Vec<u64> = ix
            .runs
            .iter()
            .map(|r| r.first)
            .filter(|first| !filter.runs.contains(first))
            .collect();
        for first in since {
            filter.add_run(table, kind, first)?;
        }
        ix.filters = vec![filter.filter];
        ix.stale = 0;
        Ok(())
    }
}

/// A filter being built from runs on disk.
pub struct FilterBuild {
    filter: Filter,
    runs: Vec<u64>,
}

impl FilterBuild {
    /// For about `keys` keys.
    pub fn new(keys: u64) -> FilterBuild {
        // Room to grow by a few runs before the chain gets a second filter.
        FilterBuild {
            filter: Filter::with_capacity(keys + keys / 8 + 2 * SEAL_AT as u64),
            runs: Vec::new(),
        }
    }

    /// Adds every key of the run of `kind` starting at `first`.
    pub fn add_run(
        &mut self,
        table: &impl ReadableTable<(u8, u64, u128), &'static [u8]>,
        kind: Kind,
        first: u64,
    ) -> Result<(), StorageError> {
        let t = kind.tag();
        for entry in table.range((t, first, 0u128)..=(t, first, u128::MAX))? {
            let (_, chunk) = entry?;
            for k in decode(chunk.value()) {
                self.filter.insert(k);
            }
        }
        self.runs.push(first);
        Ok(())
    }
}

/// Whether `key` is in one of the runs of `kind` starting at `firsts`.
pub fn in_runs(
    table: &impl ReadableTable<(u8, u64, u128), &'static [u8]>,
    kind: Kind,
    firsts: &[u64],
    key: KeyHash,
) -> Result<bool, StorageError> {
    let t = kind.tag();
    for first in firsts {
        // The chunk that would hold `key`: the last one starting at or below it.
        let chunk = table
            .range((t, *first, 0u128)..=(t, *first, key))?
            .next_back();
        if let Some(entry) = chunk {
            let (_, chunk) = entry?;
            if decode(chunk.value()).any(|k| k == key) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn decode(chunk: &[u8]) -> impl Iterator<Item = KeyHash> + '_ {
    chunk.chunks_exact(16).map(|b| {
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        u128::from_le_bytes(a)
    })
}

/// Writes a run (in the transaction that then commits; [`Seen::apply_seal`] after that).
pub fn write_seal(txn: &WriteTransaction, seal: &Seal) -> Result<(), StorageError> {
    let mut runs = txn.open_table(DEDUP_RUNS).map_err(table_err)?;
    let t = seal.kind.tag();
    let mut buf = Vec::with_capacity(CHUNK_KEYS * 16);
    for chunk in seal.keys.chunks(CHUNK_KEYS) {
        buf.clear();
        for k in chunk {
            buf.extend_from_slice(&k.to_le_bytes());
        }
        runs.insert((t, seal.first, chunk[0]), &buf[..])?;
    }
    let mut sealed = txn.open_table(DEDUP_SEALED).map_err(table_err)?;
    sealed.insert((t, seal.first), (seal.end, seal.keys.len() as u64))?;
    Ok(())
}

/// Deletes the runs of `kind` all of whose keys were stored below `first_kept`.
pub fn delete_runs_before(
    txn: &WriteTransaction,
    kind: Kind,
    first_kept: u64,
) -> Result<(), StorageError> {
    let t = kind.tag();
    let mut sealed = txn.open_table(DEDUP_SEALED).map_err(table_err)?;
    let mut gone = Vec::new();
    for entry in sealed.range((t, 0u64)..=(t, u64::MAX))? {
        let (k, v) = entry?;
        if v.value().0 > first_kept {
            break;
        }
        gone.push(k.value().1);
    }
    if gone.is_empty() {
        return Ok(());
    }
    let mut runs = txn.open_table(DEDUP_RUNS).map_err(table_err)?;
    for first in gone {
        sealed.remove((t, first))?;
        runs.retain_in((t, first, 0u128)..=(t, first, u128::MAX), |_, _| false)?;
    }
    Ok(())
}

/// The sealed runs of `kind` on disk: (first seq, end seq, keys), oldest first.
pub fn sealed_runs(
    table: &impl ReadableTable<(u8, u64), (u64, u64)>,
    kind: Kind,
) -> Result<Vec<(u64, u64, u64)>, StorageError> {
    let t = kind.tag();
    let mut out = Vec::new();
    for entry in table.range((t, 0u64)..=(t, u64::MAX))? {
        let (k, v) = entry?;
        let (end, keys) = v.value();
        out.push((k.value().1, end, keys));
    }
    Ok(out)
}

/// Builds the in-memory part from the runs on disk: the filters (one per kind) and the run list.
/// The live keys are added by the caller ([`Seen::add_live`]).
pub fn load_runs(
    sealed: &impl ReadableTable<(u8, u64), (u64, u64)>,
    table: &impl ReadableTable<(u8, u64, u128), &'static [u8]>,
    seal_at: usize,
) -> Result<Seen, StorageError> {
    let mut seen = Seen::with_seal_at(seal_at);
    for kind in Kind::ALL {
        let runs = sealed_runs(sealed, kind)?;
        if runs.is_empty() {
            continue;
        }
        let mut build = FilterBuild::new(runs.iter().map(|r| r.2).sum());
        for (first, _, _) in &runs {
            build.add_run(table, kind, *first)?;
        }
        let ix = seen.index_mut(kind);
        ix.filters.push(build.filter);
        ix.runs = runs
            .into_iter()
            .map(|(first, end, keys)| Run { first, end, keys })
            .collect();
    }
    Ok(seen)
}

impl Seen {
    /// Adds a stored key to the live part while loading (it is known to be in no run).
    pub fn add_live(&mut self, kind: Kind, key: KeyHash, seq: u64) {
        self.index_mut(kind).live.insert(key, seq);
    }

    /// Where the live part of `kind` starts: the end of its last run.
    pub fn live_from(&self, kind: Kind) -> u64 {
        self.index(kind).runs.last().map_or(0, |r| r.end)
    }
}

fn table_err(e: redb::TableError) -> StorageError {
    match e {
        redb::TableError::Storage(s) => s,
        other => StorageError::Io(std::io::Error::other(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, ReadableDatabase};

    fn db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(DEDUP_RUNS).unwrap();
        txn.open_table(DEDUP_SEALED).unwrap();
        txn.commit().unwrap();
        (dir, db)
    }

    /// Adds `keys` as the writer does: each batch of one key, sealing when due.
    fn add_all(db: &Database, seen: &mut Seen, keys: &[String], next: &mut u64) -> Vec<bool> {
        let mut known = Vec::new();
        for k in keys {
            let txn = db.begin_write().unwrap();
            let seals = seen.due_seals(|_| *next);
            for s in &seals {
                write_seal(&txn, s).unwrap();
            }
            {
                let runs = txn.open_table(DEDUP_RUNS).unwrap();
                let was = seen.add(Kind::Event, key_hash(k), *next, &runs).unwrap();
                if !was {
                    *next += 1;
                }
                known.push(was);
            }
            txn.commit().unwrap();
            for s in seals {
                seen.apply_seal(s);
            }
        }
        known
    }

    fn reload(db: &Database, seal_at: usize) -> Seen {
        let r = db.begin_read().unwrap();
        load_runs(
            &r.open_table(DEDUP_SEALED).unwrap(),
            &r.open_table(DEDUP_RUNS).unwrap(),
            seal_at,
        )
        .unwrap()
    }

    #[test]
    fn sealed_keys_stay_known_and_exact() {
        let (_dir, db) = db();
        let mut seen = Seen::with_seal_at(100);
        let mut next = 0;
        let keys: Vec<String> = (0..1000).map(|i| format!("u-{i}")).collect();
        assert!(add_all(&db, &mut seen, &keys, &mut next).iter().all(|k| !k));
        let (live, runs, filters) = seen.shape(Kind::Event);
        assert_eq!((live, runs, filters), (100, 9, 1));
        assert_eq!(seen.len(), (0, 1000));
        // Every key, sealed or live, is a duplicate now; keys never stored are new.
        assert!(add_all(&db, &mut seen, &keys, &mut next).iter().all(|k| *k));
        let fresh: Vec<String> = (0..5000).map(|i| format!("fresh-{i}")).collect();
        let r = db.begin_read().unwrap();
        let runs = r.open_table(DEDUP_RUNS).unwrap();
        for k in &fresh {
            assert!(!seen.knows(Kind::Event, key_hash(k), &runs).unwrap(), "{k}");
        }
        // Delivery ids are another space.
        assert!(!seen.knows(Kind::Delivery, key_hash("u-1"), &runs).unwrap());
        // The second pass's first batch sealed the last 100; a reload from the runs knows all.
        assert_eq!(seen.shape(Kind::Event), (0, 10, 1));
        let again = reload(&db, 100);
        assert_eq!(again.shape(Kind::Event), (0, 10, 1));
        for k in &keys {
            assert!(again.knows(Kind::Event, key_hash(k), &runs).unwrap(), "{k}");
        }
        for k in &fresh {
            assert!(
                !again.knows(Kind::Event, key_hash(k), &runs).unwrap(),
                "{k}"
            );
        }
    }

    #[test]
    fn pruned_runs_are_forgotten_on_disk_and_in_memory() {
        let (_dir, db) = db();
        let mut seen = Seen::with_seal_at(10);
        let mut next = 0;
        let keys: Vec<String> = (0..35).map(|i| format!("u-{i}")).collect();
        add_all(&db, &mut seen, &keys, &mut next);
        assert_eq!(seen.runs(Kind::Event), vec![(0, 10), (10, 10), (20, 10)]);
        // Events below 25 were pruned: the first two runs go, the third holds kept keys.
        let txn = db.begin_write().unwrap();
        delete_runs_before(&txn, Kind::Event, 25).unwrap();
        txn.commit().unwrap();
        seen.drop_runs_before(Kind::Event, 25);
        assert_eq!(seen.runs(Kind::Event), vec![(20, 10)]);
        let r = db.begin_read().unwrap();
        let runs = r.open_table(DEDUP_RUNS).unwrap();
        assert!(!seen.knows(Kind::Event, key_hash("u-3"), &runs).unwrap());
        assert!(seen.knows(Kind::Event, key_hash("u-21"), &runs).unwrap());
        assert!(seen.knows(Kind::Event, key_hash("u-34"), &runs).unwrap());
        assert_eq!(runs.iter().unwrap().count(), 1, "one chunk of the kept run");
        assert_eq!(reload(&db, 10).runs(Kind::Event), vec![(20, 10)]);
    }

    #[test]
    fn a_rebuilt_filter_holds_the_runs_sealed_while_it_was_built() {
        let (_dir, db) = db();
        let mut seen = Seen::with_seal_at(10);
        let mut next = 0;
        let keys: Vec<String> = (0..45).map(|i| format!("u-{i}")).collect();
        add_all(&db, &mut seen, &keys[..25], &mut next);
        let snapshot = seen.runs(Kind::Event);
        let mut build = FilterBuild::new(snapshot.iter().map(|r| r.1).sum());
        let r = db.begin_read().unwrap();
        for (first, _) in &snapshot {
            build
                .add_run(&r.open_table(DEDUP_RUNS).unwrap(), Kind::Event, *first)
                .unwrap();
        }
        drop(r);
        // Two more runs are sealed before the swap.
        add_all(&db, &mut seen, &keys[25..], &mut next);
        assert_eq!(seen.shape(Kind::Event), (5, 4, 1));
        let r = db.begin_read().unwrap();
        let runs = r.open_table(DEDUP_RUNS).unwrap();
        seen.rebuild_filters(Kind::Event, build, &runs).unwrap();
        assert!(!seen.filters_stale(Kind::Event));
        for k in &keys {
            assert!(seen.knows(Kind::Event, key_hash(k), &runs).unwrap(), "{k}");
        }
        assert!(!seen.knows(Kind::Event, key_hash("u-45"), &runs).unwrap());
    }

    #[test]
    fn a_failed_commit_changes_nothing() {
        let (_dir, db) = db();
        let mut seen = Seen::with_seal_at(3);
        let mut next = 0;
        let keys: Vec<String> = (0..3).map(|i| format!("u-{i}")).collect();
        add_all(&db, &mut seen, &keys, &mut next);
        // The seal is written, but its transaction aborts: memory keeps the keys live.
        let seals = seen.due_seals(|_| next);
        assert_eq!(seals.len(), 1);
        let txn = db.begin_write().unwrap();
        write_seal(&txn, &seals[0]).unwrap();
        txn.abort().unwrap();
        assert_eq!(seen.shape(Kind::Event), (3, 0, 0));
        let r = db.begin_read().unwrap();
        let runs = r.open_table(DEDUP_RUNS).unwrap();
        assert!(seen.knows(Kind::Event, key_hash("u-1"), &runs).unwrap());
        seen.remove(Kind::Event, &[key_hash("u-1")]);
        assert!(!seen.knows(Kind::Event, key_hash("u-1"), &runs).unwrap());
    }
}
