//! `engine outbox`: the mail actions of the action queue ([`super::actions`]) in the shape the
//! outbox had before the queue held every kind; and the move of an older engine's outbox
//! tables into the queue (ids and states kept).

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::actions::{ActionStatus, ActionsView, Filter, QueuedAction};
use super::{ReadError, ReadTxnSource};
use crate::script::{ActionKind, Email};

/// An older engine's outbox: mail id → the mail and its state, as JSON.
pub(crate) const LEGACY_OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");
/// An older engine's outbox order: seq → mail id.
const LEGACY_OUTBOX_ORDER: TableDefinition<u64, &str> = TableDefinition::new("outbox_order");
/// An older engine's due index of the outbox: seq → earliest next attempt.
const LEGACY_PENDING: TableDefinition<u64, u64> = TableDefinition::new("outbox_pending");
/// Its time index.
const LEGACY_PENDING_BY_TIME: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("outbox_pending_by_time");
/// Older still: mail id → earliest next attempt.
const LEGACY_OUTBOX_DUE: TableDefinition<&str, u64> = TableDefinition::new("outbox_due");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailStatus {
    Queued,
    Sent,
    Failed,
    Skipped,
}

impl MailStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MailStatus::Queued => "queued",
            MailStatus::Sent => "sent",
            MailStatus::Failed => "failed",
            MailStatus::Skipped => "skipped",
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

/// Every mail of an older engine's outbox with its earliest next attempt (0: due now).
pub(crate) fn legacy_mails(txn: &WriteTransaction) -> Result<Vec<(OutboxMail, u64)>, redb::Error> {
    let names: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
    let has = |n: &str| names.iter().any(|t| t == n);
    let mut by_seq = std::collections::HashMap::new();
    if has(LEGACY_PENDING.name()) {
        for entry in txn.open_table(LEGACY_PENDING)?.iter()? {
            let (seq, nb) = entry?;
            by_seq.insert(seq.value(), nb.value());
        }
    }
    let mut by_id = std::collections::HashMap::new();
    if has(LEGACY_OUTBOX_DUE.name()) {
        for entry in txn.open_table(LEGACY_OUTBOX_DUE)?.iter()? {
            let (id, nb) = entry?;
            by_id.insert(id.value().to_string(), nb.value());
        }
    }
    let outbox = txn.open_table(LEGACY_OUTBOX)?;
    let mut mails = Vec::new();
    for entry in outbox.iter()? {
        let (_, v) = entry?;
        let mail: OutboxMail = serde_json::from_slice(v.value())
            .map_err(|e| redb::Error::Corrupted(format!("outbox mail: {e}")))?;
        let nb = by_seq
            .get(&mail.seq)
            .or_else(|| by_id.get(&mail.id))
            .copied()
            .or(mail.next_attempt_ms)
            .unwrap_or(0);
        mails.push((mail, nb));
    }
    mails.sort_by_key(|(m, _)| m.seq);
    Ok(mails)
}

/// Deletes an older engine's outbox tables (after [`legacy_mails`] were moved).
pub(crate) fn drop_legacy(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let names: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
    let has = |n: &str| names.iter().any(|t| t == n);
    if has(LEGACY_OUTBOX.name()) {
        txn.delete_table(LEGACY_OUTBOX)?;
    }
    if has(LEGACY_OUTBOX_ORDER.name()) {
        txn.delete_table(LEGACY_OUTBOX_ORDER)?;
    }
    if has(LEGACY_PENDING.name()) {
        txn.delete_table(LEGACY_PENDING)?;
    }
    if has(LEGACY_PENDING_BY_TIME.name()) {
        txn.delete_table(LEGACY_PENDING_BY_TIME)?;
    }
    if has(LEGACY_OUTBOX_DUE.name()) {
        txn.delete_table(LEGACY_OUTBOX_DUE)?;
    }
    Ok(())
}

impl OutboxMail {
    /// The action this mail becomes in the queue (same id, same state).
    pub(crate) fn into_action(self, seq: u64, not_before: u64) -> QueuedAction {
        let status = match self.status {
            MailStatus::Queued if self.attempts > 0 => ActionStatus::Retrying,
            MailStatus::Queued => ActionStatus::Queued,
            MailStatus::Sent => ActionStatus::Done,
            MailStatus::Failed => ActionStatus::Failed,
            MailStatus::Skipped => ActionStatus::Skipped,
        };
        let pending = status.is_pending();
        QueuedAction {
            id: self.id,
            seq,
            kind: ActionKind::Email,
            run_id: self.run_id,
            event_uuid: self.event_uuid,
            script: self.script,
            payload: serde_json::to_value(&self.email).unwrap_or_default(),
            status,
            attempts: self.attempts,
            last_error: self.last_error,
            answer: None,
            queued_ms: self.queued_ms,
            done_ms: self.sent_ms,
            next_attempt_ms: if pending && not_before > 0 {
                Some(not_before)
            } else {
                None
            },
        }
    }

    /// A mail action as `engine outbox` shows it; `None` for another kind or an unreadable payload.
    pub fn from_action(a: QueuedAction) -> Option<OutboxMail> {
        if a.kind != ActionKind::Email {
            return None;
        }
        let email: Email = serde_json::from_value(a.payload).ok()?;
        Some(OutboxMail {
            id: a.id,
            seq: a.seq,
            run_id: a.run_id,
            event_uuid: a.event_uuid,
            script: a.script,
            email,
            status: match a.status {
                ActionStatus::Queued | ActionStatus::Retrying => MailStatus::Queued,
                ActionStatus::Done => MailStatus::Sent,
                ActionStatus::Failed => MailStatus::Failed,
                ActionStatus::Skipped => MailStatus::Skipped,
            },
            attempts: a.attempts,
            last_error: a.last_error,
            queued_ms: a.queued_ms,
            sent_ms: a.done_ms,
            next_attempt_ms: a.next_attempt_ms,
        })
    }
}

/// Reads the mail actions.
pub struct OutboxView<'a>(pub &'a dyn ReadTxnSource);

impl OutboxView<'_> {
    /// Mails waiting to be sent: (seq, earliest attempt time).
    pub fn due(&self) -> Result<Vec<(u64, u64)>, ReadError> {
        ActionsView(self.0).due(ActionKind::Email)
    }

    /// How many mails wait to be sent.
    pub fn due_count(&self) -> Result<u64, ReadError> {
        ActionsView(self.0).due_count(ActionKind::Email)
    }

    pub fn get(&self, id: &str) -> Result<Option<OutboxMail>, ReadError> {
        Ok(ActionsView(self.0)
            .get(id)?
            .and_then(OutboxMail::from_action))
    }

    /// Newest first; `failed_only` keeps failed mails.
    pub fn recent(&self, limit: usize, failed_only: bool) -> Result<Vec<OutboxMail>, ReadError> {
        let filter = Filter {
            kind: Some(ActionKind::Email),
            failed_only,
        };
        Ok(ActionsView(self.0)
            .recent(limit, filter)?
            .into_iter()
            .filter_map(OutboxMail::from_action)
            .collect())
    }
}
