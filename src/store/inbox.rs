//! The inbox tables: deliveries as received, their events (byte ranges of the body), the dedup
//! keys, quarantine, the dispatch cursor, and the reads and pruning of them.
//!
//! Every ingest table is keyed by a sequence number, so a commit appends at the right edge of
//! each B-tree. Bodies are stored LZ4-compressed behind a marker byte when that makes them
//! smaller (see [`pack_body`]).

use std::ops::Range;

use bytes::Bytes;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableHandle, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use super::dedup::{self, DEDUP_RUNS, DEDUP_SEALED, KeyHash, Kind, Seal, Seen, key_hash};
use super::{History, ReadError, WriteError, read_err, storage};

/// A stored delivery: (hook, received ms, delivery id, eventTime, source, raw body).
pub(crate) type DeliveryValue = (
    &'static str,
    u64,
    &'static str,
    &'static str,
    &'static str,
    &'static [u8],
);
/// seq → [`DeliveryValue`]
pub(crate) const DELIVERIES: TableDefinition<u64, DeliveryValue> =
    TableDefinition::new("deliveries");
/// delivery seq → envelope eventId, in commit order (the dedup index is rebuilt from it).
pub(crate) const DELIVERY_KEYS: TableDefinition<u64, &str> = TableDefinition::new("delivery_keys");
/// Before the in-memory dedup index: envelope eventId → delivery seq. Read once to migrate a
/// store written by an older engine into `delivery_keys`, then deleted.
const LEGACY_DELIVERY_IDS: TableDefinition<&str, u64> = TableDefinition::new("delivery_ids");
/// seq → (delivery seq, uuid, eventType, published, offset, length): the event's JSON is that byte
/// range of its delivery's body, so each byte Okta sent is written once.
pub(crate) const EVENTS: TableDefinition<u64, (u64, &str, &str, &str, u32, u32)> =
    TableDefinition::new("events");
/// Before the in-memory dedup index: event uuid → event seq (`events` holds each uuid too).
/// Deleted when a store written by an older engine is opened.
const LEGACY_EVENT_UUIDS: TableDefinition<&str, u64> = TableDefinition::new("event_uuids");
/// The processing queue is implicit: event seqs are contiguous and given in commit order, so
/// every event above this cursor (in META) has not been handed to the scripts yet.
pub const DISPATCH_CURSOR: &str = "dispatched_event_seq";
/// seq → (hook, received ms, reason, raw body): authenticated bodies that were not deliveries.
pub(crate) const QUARANTINE: TableDefinition<u64, (&str, u64, &str, &[u8])> =
    TableDefinition::new("quarantine");
/// Small named values (the health probe's last write).
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// One event of a delivery, as the envelope parser found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    /// Okta's `uuid`, or a content hash (`sha256:…`) for an event without one, so that a re-sent
    /// copy is still recognised. This is the event's id everywhere (dedup, runs, action ids).
    pub uuid: String,
    pub event_type: String,
    pub published: String,
    /// Where the event's JSON is in the body.
    pub span: Range<usize>,
}

/// A parsed delivery, events ordered by `published`: what the envelope parser gives and the
/// store keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDelivery {
    /// The envelope's `eventId` (Okta's delivery id), if it has one.
    pub delivery_id: Option<String>,
    /// The envelope's `eventTime` and `source`, as sent (empty when absent).
    pub event_time: String,
    pub source: String,
    pub events: Vec<ParsedEvent>,
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
pub(crate) struct PackedDelivery {
    pub(crate) delivery: NewDelivery,
    /// The compressed body, or the received one itself (no copy).
    pub(crate) stored: Bytes,
}

/// First byte of a stored body that is LZ4-compressed (a JSON body never starts with 0xFF, which
/// is not UTF-8); any other body is stored as received.
const LZ4_BODY: u8 = 0xFF;
/// Smaller bodies are stored as received: compressing them saves no page.
const COMPRESS_MIN_BYTES: usize = 1024;

/// The body as stored, when compressing it helps. A commit's cost is mostly its number of
/// scattered 4 KiB pages (~20 µs each on this kind of disk, on top of the fsync), and a 2.4 KB
/// event fills a page of the deliveries table on its own; compressed, two or three share one.
pub(crate) fn pack_body(body: &[u8]) -> Option<Vec<u8>> {
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

#[derive(Clone, Copy, Default)]
pub(crate) struct NextSeq {
    pub(crate) delivery: u64,
    pub(crate) event: u64,
    pub(crate) quarantine: u64,
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
/// Keys stored after the last sealed run beyond [`dedup::SEAL_AT`] of them (a store written by an
/// older engine, or one whose writer stopped before sealing) are sealed first, so the live part
/// held in memory stays small.
pub(crate) fn load_seen(db: &Database) -> Result<Seen, redb::Error> {
    let seal_at = dedup::SEAL_AT;
    for kind in Kind::ALL {
        seal_backlog(db, kind, seal_at)?;
    }
    let txn = db.begin_read()?;
    let mut seen = dedup::load_runs(
        &txn.open_table(DEDUP_SEALED)?,
        &txn.open_table(DEDUP_RUNS)?,
        seal_at,
    )?;
    for kind in Kind::ALL {
        let from = seen.live_from(kind);
        for_each_key(&txn, kind, from, |seq, key| {
            seen.add_live(kind, key, seq);
            Ok(())
        })?;
    }
    Ok(seen)
}

/// Calls `f(seq, digest)` for every stored key of `kind` from `from` on, in seq order.
fn for_each_key(
    txn: &ReadTransaction,
    kind: Kind,
    from: u64,
    mut f: impl FnMut(u64, KeyHash) -> Result<(), redb::Error>,
) -> Result<(), redb::Error> {
    match kind {
        Kind::Event => {
            for entry in txn.open_table(EVENTS)?.range(from..)? {
                let (seq, v) = entry?;
                f(seq.value(), key_hash(v.value().1))?;
            }
        }
        Kind::Delivery => {
            for entry in txn.open_table(DELIVERY_KEYS)?.range(from..)? {
                let (seq, id) = entry?;
                f(seq.value(), key_hash(id.value()))?;
            }
        }
    }
    Ok(())
}

/// Writes runs of `seal_at` keys for the stored keys of `kind` after its last run, while at least
/// that many are there.
fn seal_backlog(db: &Database, kind: Kind, seal_at: usize) -> Result<(), redb::Error> {
    let read = db.begin_read()?;
    let sealed = dedup::sealed_runs(&read.open_table(DEDUP_SEALED)?, kind)?;
    let mut first = sealed.last().map_or(0, |r| r.1);
    let mut pending: Vec<(u64, KeyHash)> = Vec::new();
    let mut runs = 0usize;
    for_each_key(&read, kind, first, |seq, key| {
        pending.push((seq, key));
        if pending.len() >= seal_at {
            let end = seq + 1;
            let mut keys: Vec<KeyHash> = pending.drain(..).map(|(_, k)| k).collect();
            keys.sort_unstable();
            let seal = Seal::new(kind, first, end, keys);
            let txn = db.begin_write()?;
            dedup::write_seal(&txn, &seal)?;
            txn.commit()?;
            first = end;
            runs += 1;
        }
        Ok(())
    })?;
    if runs > 0 {
        tracing::info!(?kind, runs, "sealed stored dedup keys into runs");
    }
    Ok(())
}

/// Creates the inbox tables, migrates old dedup tables, and returns the next sequence numbers.
pub(crate) fn init(txn: &WriteTransaction) -> Result<NextSeq, redb::Error> {
    let next = NextSeq {
        delivery: next_key(txn, DELIVERIES)?,
        event: next_key(txn, EVENTS)?,
        quarantine: next_key(txn, QUARANTINE)?,
    };
    migrate_dedup_tables(txn)?;
    txn.open_table(DEDUP_RUNS)?;
    txn.open_table(DEDUP_SEALED)?;
    txn.open_table(META)?;
    txn.open_table(QUARANTINE)?;
    Ok(next)
}

/// The newest seq in `range` whose stored event has `uuid` (the check of a candidate the dedup
/// index gave: it holds digests).
pub(crate) fn seq_if_uuid(
    txn: &ReadTransaction,
    range: std::ops::Range<u64>,
    uuid: &str,
) -> Result<Option<u64>, ReadError> {
    let events = txn.open_table(EVENTS).map_err(read_err)?;
    for entry in events.range(range).map_err(read_err)?.rev() {
        let (k, v) = entry.map_err(read_err)?;
        if v.value().1 == uuid {
            return Ok(Some(k.value()));
        }
    }
    Ok(None)
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

/// What the dispatcher needs of an event to create its runs: no body is read for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHead {
    pub seq: u64,
    pub uuid: String,
    pub event_type: String,
    pub hook: String,
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

impl StoredEvent {
    /// What a run record needs of the event.
    pub fn head(&self) -> EventHead {
        EventHead {
            seq: self.seq,
            uuid: self.uuid.clone(),
            event_type: self.event_type.clone(),
            hook: self.hook.clone(),
        }
    }
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
    /// The oldest delivery seq and event seq left (`u64::MAX`: none): the dedup runs below them
    /// went in the same transaction.
    pub kept_from: Option<(u64, u64)>,
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
    let first = |k: Option<u64>| k.unwrap_or(u64::MAX);
    let kept_from = (
        first(deliveries.first().map_err(storage)?.map(|(k, _)| k.value())),
        first(events.first().map_err(storage)?.map(|(k, _)| k.value())),
    );
    dedup::delete_runs_before(txn, Kind::Delivery, kept_from.0).map_err(storage)?;
    dedup::delete_runs_before(txn, Kind::Event, kept_from.1).map_err(storage)?;
    pruned.keys.kept_from = Some(kept_from);
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
    /// How it came: `system-log` (backfilled from the Okta System Log) or `hook`.
    #[serde(default)]
    pub source: String,
    /// `queued` until processed.
    pub status: String,
}

/// Which events a page of the history shows (every field: all when `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub event_type: Option<String>,
    pub hook: Option<String>,
    /// `hook` or `system-log` (see [`source_kind`]).
    pub source: Option<String>,
    /// `published` at or after / at or before (RFC 3339, compared as text).
    pub published_from: Option<String>,
    pub published_to: Option<String>,
    /// An event uuid, or text the event's JSON contains (an actor's login, a target's id).
    pub text: Option<String>,
}

/// One page of events and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    pub rows: Vec<EventRow>,
    /// The `before` of the next (older) page, when there may be one.
    pub next_before: Option<u64>,
    /// How many events were looked at.
    pub scanned: usize,
}

/// The envelope `source` of events backfilled from the Okta System Log (`delivery.source` in
/// scripts).
pub const SYSTEM_LOG_SOURCE: &str = "system-log";

/// How an event came, for the history: [`SYSTEM_LOG_SOURCE`] or `hook`.
pub fn source_kind(envelope_source: &str) -> &'static str {
    if envelope_source == SYSTEM_LOG_SOURCE {
        SYSTEM_LOG_SOURCE
    } else {
        "hook"
    }
}

/// One stored event whole: its envelope and its payload as stored (`engine events show`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventDetail {
    pub seq: u64,
    pub uuid: String,
    pub event_type: String,
    pub published: String,
    pub hook: String,
    pub delivery_id: String,
    /// The envelope's `eventTime` and `source`.
    pub event_time: String,
    pub source: String,
    pub received: String,
    /// `queued` until processed.
    pub status: String,
    /// The LogEvent as Okta sent it.
    pub payload: serde_json::Value,
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

impl History<'_> {
    /// The newest `limit` events, newest first.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<EventRow>, ReadError> {
        Ok(self
            .events_page(None, limit, &EventFilter::default(), usize::MAX)?
            .rows)
    }

    /// Up to `limit` events older than `before` (seq; `None`: from the newest) that pass
    /// `filter`, newest first, looking at no more than `max_scan` events (the console's pages).
    pub fn events_page(
        &self,
        before: Option<u64>,
        limit: usize,
        filter: &EventFilter,
        max_scan: usize,
    ) -> Result<EventPage, ReadError> {
        let txn = self.read()?;
        let events = txn.open_table(EVENTS).map_err(read_err)?;
        let deliveries = txn.open_table(DELIVERIES).map_err(read_err)?;
        let cursor = dispatch_cursor(&txn)?;
        let mut rows = Vec::new();
        let mut scanned = 0usize;
        let mut last_seen = None;
        let mut cache = None;
        let range = events
            .range(..before.unwrap_or(u64::MAX))
            .map_err(read_err)?;
        for entry in range.rev() {
            if rows.len() >= limit || scanned >= max_scan {
                break;
            }
            scanned += 1;
            let (k, v) = entry.map_err(read_err)?;
            let (dseq, uuid, event_type, published, _, _) = v.value();
            let seq = k.value();
            last_seen = Some(seq);
            if filter
                .event_type
                .as_deref()
                .is_some_and(|t| t != event_type)
            {
                continue;
            }
            let delivery = deliveries.get(dseq).map_err(read_err)?;
            let (hook, received, delivery_id, source) = match &delivery {
                Some(d) => {
                    let (hook, ms, id, _, source, _) = d.value();
                    (
                        hook.to_string(),
                        crate::util::format_ms(ms),
                        id.to_string(),
                        source_kind(source).to_string(),
                    )
                }
                None => Default::default(),
            };
            if filter.hook.as_deref().is_some_and(|h| h != hook)
                || filter.source.as_deref().is_some_and(|s| s != source)
                || filter
                    .published_from
                    .as_deref()
                    .is_some_and(|t| published < t)
                || filter
                    .published_to
                    .as_deref()
                    .is_some_and(|t| published > t)
            {
                continue;
            }
            if let Some(needle) = filter.text.as_deref().filter(|n| !n.is_empty()) {
                let in_payload = uuid == needle
                    || stored_event(&deliveries, seq, v.value(), &mut cache)
                        .is_ok_and(|e| String::from_utf8_lossy(&e.json).contains(needle));
                if !in_payload {
                    continue;
                }
            }
            let queued = seq > cursor;
            rows.push(EventRow {
                seq,
                uuid: uuid.to_string(),
                event_type: event_type.to_string(),
                published: published.to_string(),
                hook,
                delivery_id,
                received,
                source,
                status: if queued { "queued" } else { "processed" }.to_string(),
            });
        }
        // More may follow when the page filled or the scan stopped before the oldest event.
        let more = (rows.len() >= limit || scanned >= max_scan)
            && last_seen
                .is_some_and(|s| events.range(..s).ok().and_then(|mut r| r.next()).is_some());
        Ok(EventPage {
            rows,
            next_before: if more { last_seen } else { None },
            scanned,
        })
    }

    /// The event with `uuid` whole (`None`: no such event).
    pub fn event_detail(&self, uuid: &str) -> Result<Option<EventDetail>, ReadError> {
        let Some(e) = self.event_by_uuid(uuid)? else {
            return Ok(None);
        };
        let cursor = self.dispatch_cursor()?;
        let payload = serde_json::from_slice(&e.json).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&e.json).into_owned())
        });
        Ok(Some(EventDetail {
            seq: e.seq,
            uuid: e.uuid,
            event_type: e.event_type,
            published: e.published,
            hook: e.hook,
            delivery_id: e.delivery_id,
            event_time: e.event_time,
            source: e.source,
            received: crate::util::format_ms(e.received_ms),
            status: if e.seq > cursor {
                "queued"
            } else {
                "processed"
            }
            .to_string(),
            payload,
        }))
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

    /// Up to `limit` event heads with seq > `after`, in seq order (no body is read).
    pub fn event_heads_after(&self, after: u64, limit: usize) -> Result<Vec<EventHead>, ReadError> {
        let txn = self.read()?;
        let events = txn.open_table(EVENTS).map_err(read_err)?;
        let deliveries = txn.open_table(DELIVERIES).map_err(read_err)?;
        let mut out = Vec::new();
        let mut hook: Option<(u64, String)> = None;
        for entry in events.range(after + 1..).map_err(read_err)?.take(limit) {
            let (k, v) = entry.map_err(read_err)?;
            let (dseq, uuid, event_type, _, _, _) = v.value();
            let hook = match &hook {
                Some((d, h)) if *d == dseq => h.clone(),
                _ => {
                    let h = match deliveries.get(dseq).map_err(read_err)? {
                        Some(d) => d.value().0.to_string(),
                        None => String::new(),
                    };
                    hook = Some((dseq, h.clone()));
                    h
                }
            };
            out.push(EventHead {
                seq: k.value(),
                uuid: uuid.to_string(),
                event_type: event_type.to_string(),
                hook,
            });
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

    /// One event by its uuid. In the server (the console, the admin API's reads) through the
    /// dedup index ([`History::indexed_event_seq`]: a live key's seq, or the seqs of the one
    /// sealed run that holds its digest); only where no index is loaded (a command that opened
    /// the file itself) by a scan of the events from the newest.
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

    /// The seq of the event with `uuid`: through the dedup index where it is loaded, else (a
    /// command that opened the file) by a scan of the events table from the newest.
    fn event_seq(&self, uuid: &str) -> Result<Option<u64>, ReadError> {
        if let Some(found) = self.indexed_event_seq(uuid)? {
            return Ok(found);
        }
        self.scanned_event_seq(uuid)
    }

    /// [`History::event_seq`] without the index: the fallback, and the benchmark's baseline.
    pub fn scanned_event_seq(&self, uuid: &str) -> Result<Option<u64>, ReadError> {
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
        let event = include_bytes!("../../tests/fixtures/event.user.lifecycle.deactivate.json");
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
