//! The durable outbox: mails from successful runs, keyed by their stable id, so that a mail with
//! an id already queued or sent is never queued again (retries, replays, restarts).

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::due::{Admit, Due, DueIndex, DueKey};
use super::{ReadError, ReadTxnSource, WriteError, read_err, storage};
use crate::script::{Action, Email};

/// mail id → the mail and its state, as JSON.
const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");
/// queue order (the mail's `seq`) → mail id (for newest-first listings and the due index).
const OUTBOX_ORDER: TableDefinition<u64, &str> = TableDefinition::new("outbox_order");
/// Every mail not yet sent or failed, by `seq`, with its earliest next attempt (ms since the
/// epoch) and the time index the scheduler reads.
const PENDING: DueIndex = DueIndex::new("outbox_pending", "outbox_pending_by_time");
/// Before the time index: mail id → earliest next attempt. Moved into [`PENDING`] when a store
/// written by an older engine is opened, then deleted.
const LEGACY_OUTBOX_DUE: TableDefinition<&str, u64> = TableDefinition::new("outbox_due");

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
    /// Times are kept in ms since the epoch and written as RFC 3339 (`queued`, `sent`,
    /// `next_attempt`), like every time in the JSON output; records written by older engines
    /// (numbers under `*_ms`) still read.
    #[serde(
        rename = "queued",
        alias = "queued_ms",
        with = "crate::util::rfc3339_ms"
    )]
    pub queued_ms: u64,
    #[serde(
        rename = "sent",
        alias = "sent_ms",
        default,
        with = "crate::util::rfc3339_ms::option"
    )]
    pub sent_ms: Option<u64>,
    #[serde(
        rename = "next_attempt",
        alias = "next_attempt_ms",
        default,
        with = "crate::util::rfc3339_ms::option"
    )]
    pub next_attempt_ms: Option<u64>,
}

pub(crate) fn init(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(OUTBOX)?;
    txn.open_table(OUTBOX_ORDER)?;
    PENDING.init(txn)?;
    let legacy = txn
        .list_tables()?
        .any(|t| t.name() == LEGACY_OUTBOX_DUE.name());
    if legacy {
        let mut moved = Vec::new();
        {
            let old = txn.open_table(LEGACY_OUTBOX_DUE)?;
            let outbox = txn.open_table(OUTBOX)?;
            for entry in old.iter()? {
                let (id, not_before) = entry?;
                if let Some(g) = outbox.get(id.value())? {
                    let mail: OutboxMail = serde_json::from_slice(g.value())
                        .map_err(|e| redb::Error::Corrupted(format!("outbox mail: {e}")))?;
                    moved.push((mail.seq, not_before.value()));
                }
            }
        }
        for (seq, not_before) in moved {
            PENDING
                .set(txn, seq, not_before)
                .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
        }
        txn.delete_table(LEGACY_OUTBOX_DUE)?;
    }
    Ok(())
}

/// Where queued actions come from: the run that recorded them.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub run_id: u64,
    pub event_uuid: &'a str,
    pub script: &'a str,
}

/// Queues the mails among `actions` (recorded by a successful run); a mail whose id is already
/// in the outbox (in any state) is skipped. Returns how many were queued.
pub fn enqueue(
    txn: &WriteTransaction,
    origin: Origin<'_>,
    actions: &[Action],
) -> Result<usize, WriteError> {
    let mut outbox = txn.open_table(OUTBOX).map_err(storage)?;
    let mut order = txn.open_table(OUTBOX_ORDER).map_err(storage)?;
    let mut seq = order
        .last()
        .map_err(storage)?
        .map(|(k, _)| k.value() + 1)
        .unwrap_or(1);
    let mut queued = 0;
    for action in actions {
        let Action::Email(email) = action;
        if outbox.get(email.id.as_str()).map_err(storage)?.is_some() {
            tracing::info!(run_id = origin.run_id, mail_id = %email.id, "mail already in the outbox; not queued again");
            continue;
        }
        let mail = OutboxMail {
            id: email.id.clone(),
            seq,
            run_id: origin.run_id,
            event_uuid: origin.event_uuid.to_string(),
            script: origin.script.to_string(),
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
        PENDING.set(txn, seq, 0)?;
        seq += 1;
        queued += 1;
    }
    Ok(queued)
}

/// Records a mail's new state (sent, failed, or queued again with its next attempt).
pub fn save(txn: &WriteTransaction, mail: &OutboxMail) -> Result<(), WriteError> {
    let mut outbox = txn.open_table(OUTBOX).map_err(storage)?;
    let json = serde_json::to_vec(mail).map_err(storage)?;
    outbox
        .insert(mail.id.as_str(), json.as_slice())
        .map_err(storage)?;
    match mail.status {
        MailStatus::Queued => PENDING.set(txn, mail.seq, mail.next_attempt_ms.unwrap_or(0)),
        MailStatus::Sent | MailStatus::Failed => PENDING.unset(txn, mail.seq),
    }
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
    /// Mails waiting to be sent: (seq, earliest attempt time).
    pub fn due(&self) -> Result<Vec<(u64, u64)>, ReadError> {
        PENDING.all(&self.0.begin()?)
    }

    /// How many mails wait to be sent.
    pub fn due_count(&self) -> Result<u64, ReadError> {
        PENDING.count(&self.0.begin()?)
    }

    /// The mails (by seq) due at `now` that `admit` takes (from just after `after`), and the earliest time one not yet due
    /// comes due (see [`DueIndex::due`]).
    pub fn due_now(
        &self,
        now: u64,
        after: Option<DueKey>,
        admit: &mut dyn FnMut(DueKey) -> Admit,
    ) -> Result<Due, ReadError> {
        PENDING.due(&self.0.begin()?, now, after, admit)
    }

    /// The mail queued as `seq`.
    pub fn get_by_seq(&self, seq: u64) -> Result<Option<OutboxMail>, ReadError> {
        let txn = self.0.begin()?;
        let order = match txn.open_table(OUTBOX_ORDER) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let Some(id) = order.get(seq).map_err(read_err)? else {
            return Ok(None);
        };
        self.get(id.value())
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
