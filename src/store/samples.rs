//! Captured samples: recent real events kept per (hook, event type), so `engine tokens` and
//! `engine check` know what fields exist. Captured by the dispatcher (never on the request path)
//! for hooks with `capture = true`. (Samples added by hand are files: `authoring`.)

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{ReadError, ReadTxnSource, StoredEvent, WriteError, read_err, storage};

/// Samples kept per (hook, event type): enough variety for `check`, small enough to never
/// matter for the store's size.
pub const MAX_SAMPLES_PER_TYPE: usize = 5;

/// (hook, event type, event seq) → the event's JSON.
const SAMPLES: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("samples");

/// One sample, captured or added.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSample {
    pub hook: String,
    pub event_type: String,
    /// `captured` or the file it was added as.
    pub source: String,
    pub uuid: String,
    #[serde(skip)]
    pub json: Vec<u8>,
}

pub(crate) fn init(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(SAMPLES)?;
    Ok(())
}

/// Keeps `events` as samples, dropping the oldest beyond [`MAX_SAMPLES_PER_TYPE`].
pub fn capture(txn: &WriteTransaction, events: &[&StoredEvent]) -> Result<(), WriteError> {
    let mut t = txn.open_table(SAMPLES).map_err(storage)?;
    for e in events {
        let (hook, ty) = (e.hook.as_str(), e.event_type.as_str());
        t.insert((hook, ty, e.seq), e.json.as_slice())
            .map_err(storage)?;
        let keys: Vec<u64> = t
            .range((hook, ty, 0)..=(hook, ty, u64::MAX))
            .map_err(storage)?
            .map(|r| r.map(|(k, _)| k.value().2))
            .collect::<Result<_, _>>()
            .map_err(storage)?;
        for old in keys
            .iter()
            .take(keys.len().saturating_sub(MAX_SAMPLES_PER_TYPE))
        {
            t.remove((hook, ty, *old)).map_err(storage)?;
        }
    }
    Ok(())
}

/// Removes the captured samples whose event has `uuid`; returns how many.
pub fn remove(txn: &WriteTransaction, uuid: &str) -> Result<usize, WriteError> {
    let mut t = txn.open_table(SAMPLES).map_err(storage)?;
    let mut doomed = Vec::new();
    for entry in t.iter().map_err(storage)? {
        let (k, v) = entry.map_err(storage)?;
        if uuid_of(v.value()) == uuid {
            let (hook, ty, seq) = k.value();
            doomed.push((hook.to_string(), ty.to_string(), seq));
        }
    }
    for (hook, ty, seq) in &doomed {
        t.remove((hook.as_str(), ty.as_str(), *seq))
            .map_err(storage)?;
    }
    Ok(doomed.len())
}

/// Every captured sample, newest first within each (hook, type).
pub fn captured(db: &dyn ReadTxnSource) -> Result<Vec<StoredSample>, ReadError> {
    let txn = db.begin()?;
    let t = match txn.open_table(SAMPLES) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(read_err(e)),
    };
    let mut out = Vec::new();
    for entry in t.iter().map_err(read_err)?.rev() {
        let (k, v) = entry.map_err(read_err)?;
        let (hook, ty, _) = k.value();
        let json = v.value().to_vec();
        out.push(StoredSample {
            hook: hook.to_string(),
            event_type: ty.to_string(),
            source: "captured".into(),
            uuid: uuid_of(&json),
            json,
        });
    }
    Ok(out)
}

/// The `uuid` of an event's JSON (`""` without one).
pub fn uuid_of(json: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["uuid"].as_str().map(str::to_string))
        .unwrap_or_default()
}
