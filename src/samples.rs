//! Samples: recent real events kept per (hook, event type), so `engine tokens` and `engine check`
//! know what fields exist. Captured by the dispatcher (never on the request path) for hooks with
//! `capture = true`; added by hand with `engine samples add FILE` as files under
//! `data_dir/samples/`.

use crate::store::{read_err, storage};
use std::path::{Path, PathBuf};

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::runs::ReadTxnSource;
use crate::store::{ReadError, StoredEvent, WriteError};

/// Samples kept per (hook, event type): enough variety for `check`, small enough to never
/// matter for the store's size.
pub const MAX_SAMPLES_PER_TYPE: usize = 5;
/// The folder (under the data dir) of samples added by hand.
pub const SAMPLES_DIR: &str = "samples";

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

pub fn init(txn: &WriteTransaction) -> Result<(), WriteError> {
    txn.open_table(SAMPLES).map_err(storage)?;
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

fn uuid_of(json: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["uuid"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Samples added by hand (files under `data_dir/samples/`).
pub fn added(data_dir: &Path) -> Vec<StoredSample> {
    let dir = data_dir.join(SAMPLES_DIR);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return Vec::new(),
    };
    files.sort();
    let mut out = Vec::new();
    for f in files.into_iter().rev() {
        if f.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(json) = std::fs::read(&f) else {
            continue;
        };
        let event_type = serde_json::from_slice::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| v["eventType"].as_str().map(str::to_string))
            .unwrap_or_default();
        out.push(StoredSample {
            hook: "added".into(),
            event_type,
            source: f.display().to_string(),
            uuid: uuid_of(&json),
            json,
        });
    }
    out
}

/// Stores each event of a payload (envelope or LogEvent) as a file under `data_dir/samples/`.
/// Returns the files written.
pub fn add(data_dir: &Path, payload: &[u8]) -> Result<Vec<PathBuf>, String> {
    let events = crate::script::split_payload(payload, "added")?;
    let dir = data_dir.join(SAMPLES_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for (_, json) in events {
        let v: serde_json::Value =
            serde_json::from_slice(&json).map_err(|e| format!("event is not JSON: {e}"))?;
        let ty = v["eventType"].as_str().unwrap_or("unknown");
        let id = v["uuid"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(crate::util::new_uuid);
        let safe = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let path = dir.join(format!("{}.{}.json", safe(ty), safe(&id)));
        std::fs::write(&path, &json)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
