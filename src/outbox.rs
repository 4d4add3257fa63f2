//! The durable outbox: mails from successful runs, keyed by their stable id, so that a mail with
//! an id already queued or sent is never queued again (retries, replays, restarts).

use crate::store::{read_err, storage};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::runs::{ReadTxnSource, RunRecord};
use crate::script::{Action, Email};
use crate::store::{ReadError, WriteError};

/// mail id → the mail and its state, as JSON.
const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");
/// queue order → mail id (for newest-first listings).
const OUTBOX_ORDER: TableDefinition<u64, &str> = TableDefinition::new("outbox_order");
/// mail id → earliest next attempt (ms since epoch), for every mail not yet sent or failed.
const OUTBOX_DUE: TableDefinition<&str, u64> = TableDefinition::new("outbox_due");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailStatus {
    Queued,
    Sent,
    Failed,
}

impl MailStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MailStatus::Queued => "queued",
            MailStatus::Sent => "sent",
            MailStatus::Failed => "failed",
        }
    }
}

/// One mail in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMail {
    pub id: String,
    pub seq: u64,
    pub run_id: u64,
    pub event_uuid: String,
    pub script: String,
    pub email: Email,
    pub status: MailStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub queued_ms: u64,
    pub sent_ms: Option<u64>,
    pub next_attempt_ms: Option<u64>,
}

pub fn init(txn: &WriteTransaction) -> Result<(), WriteError> {
    txn.open_table(OUTBOX).map_err(storage)?;
    txn.open_table(OUTBOX_ORDER).map_err(storage)?;
    txn.open_table(OUTBOX_DUE).map_err(storage)?;
    Ok(())
}

/// Queues the mails of a successful run; a mail whose id is already in the outbox (in any
/// state) is skipped. Returns how many were queued.
pub fn enqueue(txn: &WriteTransaction, run: &RunRecord) -> Result<usize, WriteError> {
    let mut outbox = txn.open_table(OUTBOX).map_err(storage)?;
    let mut order = txn.open_table(OUTBOX_ORDER).map_err(storage)?;
    let mut due = txn.open_table(OUTBOX_DUE).map_err(storage)?;
    let mut seq = order
        .last()
        .map_err(storage)?
        .map(|(k, _)| k.value() + 1)
        .unwrap_or(1);
    let mut queued = 0;
    for action in &run.actions {
        let Action::Email(email) = action;
        if outbox.get(email.id.as_str()).map_err(storage)?.is_some() {
            tracing::info!(run_id = run.id, mail_id = %email.id, "mail already in the outbox; not queued again");
            continue;
        }
        let mail = OutboxMail {
            id: email.id.clone(),
            seq,
            run_id: run.id,
            event_uuid: run.event_uuid.clone(),
            script: run.script.clone(),
            email: email.clone(),
            status: MailStatus::Queued,
            attempts: 0,
            last_error: None,
            queued_ms: crate::util::now_ms(),
            sent_ms: None,
            next_attempt_ms: None,
        };
        let json = serde_json::to_vec(&mail).map_err(storage)?;
        outbox
            .insert(email.id.as_str(), json.as_slice())
            .map_err(storage)?;
        order.insert(seq, email.id.as_str()).map_err(storage)?;
        due.insert(email.id.as_str(), 0).map_err(storage)?;
        seq += 1;
        queued += 1;
    }
    Ok(queued)
}

/// Records a mail's new state (sent, failed, or queued again with its next attempt).
pub fn save(txn: &WriteTransaction, mail: &OutboxMail) -> Result<(), WriteError> {
    let mut outbox = txn.open_table(OUTBOX).map_err(storage)?;
    let mut due = txn.open_table(OUTBOX_DUE).map_err(storage)?;
    let json = serde_json::to_vec(mail).map_err(storage)?;
    outbox
        .insert(mail.id.as_str(), json.as_slice())
        .map_err(storage)?;
    match mail.status {
        MailStatus::Queued => {
            due.insert(mail.id.as_str(), mail.next_attempt_ms.unwrap_or(0))
                .map_err(storage)?;
        }
        MailStatus::Sent | MailStatus::Failed => {
            due.remove(mail.id.as_str()).map_err(storage)?;
        }
    }
    Ok(())
}

/// Removes up to `limit` sent or failed mails older than `cutoff_ms`, oldest first; stops at
/// the first one it must keep. After this, a replay of their (old) events could queue them again.
pub fn prune(txn: &WriteTransaction, cutoff_ms: u64, limit: usize) -> Result<u64, WriteError> {
    let mut outbox = txn.open_table(OUTBOX).map_err(storage)?;
    let mut order = txn.open_table(OUTBOX_ORDER).map_err(storage)?;
    let mut doomed: Vec<(u64, String)> = Vec::new();
    for entry in order.iter().map_err(storage)?.take(limit) {
        let (k, id) = entry.map_err(storage)?;
        let id = id.value().to_string();
        let keep = match outbox.get(id.as_str()).map_err(storage)? {
            Some(g) => {
                let m: OutboxMail = serde_json::from_slice(g.value()).map_err(storage)?;
                m.status == MailStatus::Queued || m.sent_ms.unwrap_or(m.queued_ms) >= cutoff_ms
            }
            None => false,
        };
        if keep {
            break;
        }
        doomed.push((k.value(), id));
    }
    for (seq, id) in &doomed {
        order.remove(*seq).map_err(storage)?;
        outbox.remove(id.as_str()).map_err(storage)?;
    }
    Ok(doomed.len() as u64)
}

/// Reads the outbox.
pub struct OutboxView<'a>(pub &'a dyn ReadTxnSource);

impl OutboxView<'_> {
    /// Mails waiting to be sent, with their earliest attempt time.
    pub fn due(&self) -> Result<Vec<(String, u64)>, ReadError> {
        let txn = self.0.begin()?;
        let due = match txn.open_table(OUTBOX_DUE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(read_err(e)),
        };
        let mut out = Vec::new();
        for entry in due.iter().map_err(read_err)? {
            let (k, v) = entry.map_err(read_err)?;
            out.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }

    /// How many mails wait to be sent.
    pub fn due_count(&self) -> Result<u64, ReadError> {
        use redb::ReadableTableMetadata;
        let txn = self.0.begin()?;
        match txn.open_table(OUTBOX_DUE) {
            Ok(t) => t.len().map_err(read_err),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(read_err(e)),
        }
    }

    /// Up to `limit` mails due at `now` not in `skip`, and the earliest not-yet-due attempt
    /// among those looked at; stops reading once it has `limit`.
    pub fn due_now(
        &self,
        now: u64,
        skip: &std::collections::HashSet<String>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<u64>), ReadError> {
        let txn = self.0.begin()?;
        let due = match txn.open_table(OUTBOX_DUE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), None)),
            Err(e) => return Err(read_err(e)),
        };
        let (mut ids, mut next) = (Vec::new(), None::<u64>);
        if limit == 0 {
            return Ok((ids, next));
        }
        for entry in due.iter().map_err(read_err)? {
            let (k, v) = entry.map_err(read_err)?;
            let (id, not_before) = (k.value(), v.value());
            if not_before > now {
                next = Some(next.map_or(not_before, |n| n.min(not_before)));
            } else if !skip.contains(id) {
                ids.push(id.to_string());
                if ids.len() >= limit {
                    break;
                }
            }
        }
        Ok((ids, next))
    }

    pub fn get(&self, id: &str) -> Result<Option<OutboxMail>, ReadError> {
        let txn = self.0.begin()?;
        let outbox = match txn.open_table(OUTBOX) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        match outbox.get(id).map_err(read_err)? {
            Some(g) => Ok(Some(serde_json::from_slice(g.value()).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    /// Newest first; `failed_only` keeps failed mails.
    pub fn recent(&self, limit: usize, failed_only: bool) -> Result<Vec<OutboxMail>, ReadError> {
        let txn = self.0.begin()?;
        let (order, outbox) = match (txn.open_table(OUTBOX_ORDER), txn.open_table(OUTBOX)) {
            (Ok(o), Ok(b)) => (o, b),
            (Err(redb::TableError::TableDoesNotExist(_)), _)
            | (_, Err(redb::TableError::TableDoesNotExist(_))) => return Ok(Vec::new()),
            (Err(e), _) | (_, Err(e)) => return Err(read_err(e)),
        };
        let mut out = Vec::new();
        for entry in order.iter().map_err(read_err)?.rev() {
            if out.len() >= limit {
                break;
            }
            let (_, id) = entry.map_err(read_err)?;
            if let Some(g) = outbox.get(id.value()).map_err(read_err)? {
                let mail: OutboxMail = serde_json::from_slice(g.value()).map_err(read_err)?;
                if !failed_only || mail.status == MailStatus::Failed {
                    out.push(mail);
                }
            }
        }
        Ok(out)
    }
}
