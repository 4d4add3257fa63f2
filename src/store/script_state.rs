//! The per-script state (`script_state`: script name → its state as JSON), written by the server
//! after every reload so that `engine scripts` in another process sees the live state.

use redb::{ReadTransaction, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{ReadError, WriteError, read_err, storage};

/// script name → its [`ScriptState`] as JSON.
const SCRIPT_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("script_state");

/// Where a script stands after the latest reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScriptStatus {
    /// The file on disk compiled and is the live version.
    Ok,
    /// The file on disk does not compile; the previous version keeps receiving events.
    Error,
    /// The file on disk does not compile and no version of it is loaded: it receives no events.
    NotLoaded,
}

impl ScriptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ScriptStatus::Ok => "ok",
            ScriptStatus::Error => "error (previous version live)",
            ScriptStatus::NotLoaded => "error (not loaded)",
        }
    }
}

/// The state of one script, as `engine scripts` and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptState {
    /// File stem, as in `RunRecord.script`.
    pub script: String,
    pub file: String,
    pub status: ScriptStatus,
    /// Hash of the live version (as in `RunRecord.script_hash`); `None` when none is loaded.
    pub hash: Option<String>,
    /// When the live version went live.
    pub loaded_at: Option<String>,
    /// Why the file on disk does not compile (`file:line:col: message`); `None` when it does.
    pub last_error: Option<String>,
    /// When that error was first seen.
    pub error_at: Option<String>,
    /// When the file was last compiled.
    pub checked_at: String,
}

/// Replaces the recorded script state with `rows`.
pub fn save(txn: &redb::WriteTransaction, rows: &[ScriptState]) -> Result<(), WriteError> {
    txn.delete_table(SCRIPT_STATE).map_err(storage)?;
    let mut table = txn.open_table(SCRIPT_STATE).map_err(storage)?;
    for row in rows {
        let json = serde_json::to_vec(row).map_err(storage)?;
        table
            .insert(row.script.as_str(), json.as_slice())
            .map_err(storage)?;
    }
    Ok(())
}

/// The script state the server recorded at its latest reload; `None` when no server has
/// recorded one in this store.
pub fn recorded(txn: &ReadTransaction) -> Result<Option<Vec<ScriptState>>, ReadError> {
    let table = match txn.open_table(SCRIPT_STATE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let mut rows = Vec::new();
    for entry in table.iter().map_err(read_err)? {
        let (_, v) = entry.map_err(read_err)?;
        rows.push(serde_json::from_slice(v.value()).map_err(read_err)?);
    }
    Ok(Some(rows))
}
