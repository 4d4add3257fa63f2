//! The durable action queue: every side effect a successful run asked for (mail, HTTP, Okta),
//! keyed by its stable action id, recorded in the run's commit and carried out afterwards by one
//! executor per kind. An action whose id is already queued or done is never queued again
//! (retries, replays after an edit, restarts).

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::due::{Admit, Due, DueIndex, DueKey};
use super::{ReadError, ReadTxnSource, WriteError, read_err, storage};
use crate::script::{Action, ActionKind};

/// action id → the action and its state, as JSON.
const ACTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("actions");
/// queue order (the action's `seq`) → action id (newest-first listings, the due indexes).
const ACTIONS_ORDER: TableDefinition<u64, &str> = TableDefinition::new("actions_order");
/// The id a mail moved from an older outbox would get now → the id it kept (so a replay of its
/// event finds it and does not send it again).
const ALIASES: TableDefinition<&str, &str> = TableDefinition::new("actions_aliases");
/// Every email action not yet finished, by `seq`, with its earliest next attempt. One index per
/// kind, so a kind whose far side is slow or down never holds up another kind's executor.
const PENDING_EMAIL: DueIndex =
    DueIndex::new("actions_pending_email", "actions_pending_email_by_time");
/// Every HTTP action not yet finished (see [`PENDING_EMAIL`]).
const PENDING_HTTP: DueIndex =
    DueIndex::new("actions_pending_http", "actions_pending_http_by_time");
/// Every Okta action not yet finished (see [`PENDING_EMAIL`]).
const PENDING_OKTA: DueIndex =
    DueIndex::new("actions_pending_okta", "actions_pending_okta_by_time");

/// The due index of one kind: adding a kind is one arm here.
fn pending(kind: ActionKind) -> &'static DueIndex {
    match kind {
        ActionKind::Email => &PENDING_EMAIL,
        ActionKind::Http => &PENDING_HTTP,
        ActionKind::Okta => &PENDING_OKTA,
    }
}

/// Where an action is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionStatus {
    /// Waiting for its first attempt.
    Queued,
    /// Carried out (the far side accepted it).
    Done,
    /// An attempt failed transiently; waiting for `next_attempt`.
    Retrying,
    /// Failed permanently (`last_error` says why).
    Failed,
    /// Not carried out on purpose (for example its kind is not configured).
    Skipped,
}

impl ActionStatus {
    pub const ALL: [ActionStatus; 5] = [
        ActionStatus::Queued,
        ActionStatus::Done,
        ActionStatus::Retrying,
        ActionStatus::Failed,
        ActionStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Queued => "queued",
            ActionStatus::Done => "done",
            ActionStatus::Retrying => "retrying",
            ActionStatus::Failed => "failed",
            ActionStatus::Skipped => "skipped",
        }
    }

    /// Whether the action still waits to be carried out.
    pub fn is_pending(self) -> bool {
        matches!(self, ActionStatus::Queued | ActionStatus::Retrying)
    }
}

/// One action in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedAction {
    pub id: String,
    pub seq: u64,
    pub kind: ActionKind,
    pub run_id: u64,
    pub event_uuid: String,
    pub script: String,
    /// What the executor of `kind` needs (for email: the `Email`), as JSON.
    pub payload: serde_json::Value,
    pub status: ActionStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// A short summary of the far side's answer (status, message id), never a secret.
    #[serde(default)]
    pub answer: Option<String>,
    /// Times are kept in ms since the epoch and written as RFC 3339.
    #[serde(rename = "queued", with = "crate::util::rfc3339_ms")]
    pub queued_ms: u64,
    #[serde(rename = "done", default, with = "crate::util::rfc3339_ms::option")]
    pub done_ms: Option<u64>,
    #[serde(
        rename = "next_attempt",
        default,
        with = "crate::util::rfc3339_ms::option"
    )]
    pub next_attempt_ms: Option<u64>,
}

impl QueuedAction {
    /// The action as the run recorded it, read back from its payload (`None`: a payload this
    /// engine cannot read).
    pub fn action(&self) -> Option<Action> {
        let p = self.payload.clone();
        match self.kind {
            ActionKind::Email => serde_json::from_value(p).ok().map(Action::Email),
            ActionKind::Okta => serde_json::from_value(p).ok().map(Action::Okta),
            ActionKind::Http => serde_json::from_value(p).ok().map(Action::Http),
        }
    }

    /// One line saying what it does (`Action::describe`), else its payload as JSON.
    pub fn describe(&self) -> String {
        self.action()
            .map(|a| a.describe())
            .unwrap_or_else(|| self.payload.to_string())
    }
}

pub(crate) fn init(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(ACTIONS)?;
    txn.open_table(ACTIONS_ORDER)?;
    txn.open_table(ALIASES)?;
    for kind in ActionKind::ALL {
        pending(kind).init(txn)?;
    }
    let legacy = txn
        .list_tables()?
        .any(|t| t.name() == super::outbox::LEGACY_OUTBOX.name());
    if legacy {
        migrate_outbox(txn)?;
    }
    Ok(())
}

/// Moves the mail outbox of an older engine into the action queue: every mail keeps its id (so
/// a replay does not queue it again) and its state (a queued mail stays due, a sent one is done
/// and is not sent again). The old tables are deleted in the same transaction.
fn migrate_outbox(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let corrupt =
        |e: &dyn std::fmt::Display| redb::Error::Corrupted(format!("outbox migration: {e}"));
    let mails = super::outbox::legacy_mails(txn)?;
    let mut seq = {
        let order = txn.open_table(ACTIONS_ORDER)?;
        order.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1)
    };
    let mut moved = 0u64;
    for (mail, not_before) in mails {
        let exists = txn.open_table(ACTIONS)?.get(mail.id.as_str())?.is_some();
        if exists {
            continue;
        }
        let now_id = crate::script::action_id(
            &mail.event_uuid,
            &mail.script,
            &crate::script::default_key(ActionKind::Email, mail.email.position),
        );
        let action = mail.into_action(seq, not_before);
        if now_id != action.id {
            txn.open_table(ALIASES)?
                .insert(now_id.as_str(), action.id.as_str())?;
        }
        save(txn, &action).map_err(|e| corrupt(&e))?;
        txn.open_table(ACTIONS_ORDER)?
            .insert(seq, action.id.as_str())?;
        seq += 1;
        moved += 1;
    }
    super::outbox::drop_legacy(txn)?;
    tracing::info!(mails = moved, "mail outbox moved into the action queue");
    Ok(())
}

/// Where queued actions come from: the run that recorded them.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub run_id: u64,
    pub event_uuid: &'a str,
    pub script: &'a str,
}

/// Queues `actions` (recorded by a successful run, in its commit); an action whose id is already
/// in the queue (in any state) is skipped. Returns how many were queued.
pub fn enqueue(
    txn: &WriteTransaction,
    origin: Origin<'_>,
    actions: &[Action],
) -> Result<usize, WriteError> {
    let mut queued = 0;
    for action in actions {
        let id = action.id();
        {
            let table = txn.open_table(ACTIONS).map_err(storage)?;
            let aliases = txn.open_table(ALIASES).map_err(storage)?;
            if table.get(id).map_err(storage)?.is_some()
                || aliases.get(id).map_err(storage)?.is_some()
            {
                tracing::info!(run_id = origin.run_id, action_id = %id, kind = action.kind().as_str(), "action already in the queue; not queued again");
                continue;
            }
        }
        let seq = {
            let order = txn.open_table(ACTIONS_ORDER).map_err(storage)?;
            order
                .last()
                .map_err(storage)?
                .map(|(k, _)| k.value() + 1)
                .unwrap_or(1)
        };
        let record = QueuedAction {
            id: id.to_string(),
            seq,
            kind: action.kind(),
            run_id: origin.run_id,
            event_uuid: origin.event_uuid.to_string(),
            script: origin.script.to_string(),
            payload: action.payload().map_err(storage)?,
            status: ActionStatus::Queued,
            attempts: 0,
            last_error: None,
            answer: None,
            queued_ms: crate::util::now_ms(),
            done_ms: None,
            next_attempt_ms: None,
        };
        save(txn, &record)?;
        txn.open_table(ACTIONS_ORDER)
            .map_err(storage)?
            .insert(seq, id)
            .map_err(storage)?;
        queued += 1;
    }
    Ok(queued)
}

/// Records an action's new state (and moves it in or out of its kind's due index).
pub fn save(txn: &WriteTransaction, action: &QueuedAction) -> Result<(), WriteError> {
    let mut table = txn.open_table(ACTIONS).map_err(storage)?;
    let json = serde_json::to_vec(action).map_err(storage)?;
    table
        .insert(action.id.as_str(), json.as_slice())
        .map_err(storage)?;
    let index = pending(action.kind);
    if action.status.is_pending() {
        index.set(txn, action.seq, action.next_attempt_ms.unwrap_or(0))
    } else {
        index.unset(txn, action.seq)
    }
}

/// What a person may do to one action (the console's buttons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intervention {
    /// Carry it out at the next turn of its executor: a pending action without waiting for
    /// its backoff, a failed or skipped one once more. Never a done one.
    RetryNow,
    /// Do not carry it out: a pending action becomes `skipped`, saying so.
    Cancel,
}

/// How an [`Intervention`] went.
#[derive(Debug, Clone, PartialEq)]
pub enum Intervened {
    /// The action as it is now.
    Changed(QueuedAction),
    NotFound,
    /// Nothing changed, and why.
    Refused(String),
}

/// Applies `what` to the action `id` at `now_ms`. A done action is never changed (it is never
/// carried out twice); the executor may be carrying out a pending one right now, in which case
/// its outcome is what is recorded last.
pub fn intervene(
    txn: &WriteTransaction,
    id: &str,
    what: Intervention,
    now_ms: u64,
) -> Result<Intervened, WriteError> {
    let found: Option<QueuedAction> = {
        let table = txn.open_table(ACTIONS).map_err(storage)?;
        let got = table.get(id).map_err(storage)?;
        match got {
            Some(g) => Some(serde_json::from_slice(g.value()).map_err(storage)?),
            None => None,
        }
    };
    let Some(mut a) = found else {
        return Ok(Intervened::NotFound);
    };
    match (what, a.status) {
        (_, ActionStatus::Done) => {
            return Ok(Intervened::Refused(
                "it is done: a done action is never carried out again".into(),
            ));
        }
        (Intervention::Cancel, ActionStatus::Failed | ActionStatus::Skipped) => {
            return Ok(Intervened::Refused(format!(
                "it is {} already: nothing is pending to cancel",
                a.status.as_str()
            )));
        }
        (Intervention::RetryNow, _) => {
            a.status = if a.attempts == 0 {
                ActionStatus::Queued
            } else {
                ActionStatus::Retrying
            };
            a.next_attempt_ms = Some(now_ms);
        }
        (Intervention::Cancel, _) => {
            a.status = ActionStatus::Skipped;
            a.next_attempt_ms = None;
            a.last_error = Some(format!(
                "cancelled from the console at {}",
                crate::util::format_ms(now_ms)
            ));
        }
    }
    save(txn, &a)?;
    Ok(Intervened::Changed(a))
}

/// Removes up to `limit` finished actions older than `cutoff_ms`, oldest first; stops at the
/// first one it must keep. After this, a replay of their (old) events could queue them again.
pub fn prune(txn: &WriteTransaction, cutoff_ms: u64, limit: usize) -> Result<u64, WriteError> {
    let mut table = txn.open_table(ACTIONS).map_err(storage)?;
    let mut order = txn.open_table(ACTIONS_ORDER).map_err(storage)?;
    let mut doomed: Vec<(u64, String)> = Vec::new();
    for entry in order.iter().map_err(storage)?.take(limit) {
        let (k, id) = entry.map_err(storage)?;
        let id = id.value().to_string();
        let keep = match table.get(id.as_str()).map_err(storage)? {
            Some(g) => {
                let a: QueuedAction = serde_json::from_slice(g.value()).map_err(storage)?;
                a.status.is_pending() || a.done_ms.unwrap_or(a.queued_ms) >= cutoff_ms
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
        table.remove(id.as_str()).map_err(storage)?;
    }
    Ok(doomed.len() as u64)
}

/// Which actions a listing keeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter {
    pub kind: Option<ActionKind>,
    pub failed_only: bool,
}

impl Filter {
    fn keeps(&self, a: &QueuedAction) -> bool {
        self.kind.is_none_or(|k| k == a.kind)
            && (!self.failed_only || a.status == ActionStatus::Failed)
    }
}

/// Reads the action queue.
pub struct ActionsView<'a>(pub &'a dyn ReadTxnSource);

impl ActionsView<'_> {
    /// Actions of `kind` waiting to be carried out: (seq, earliest attempt time).
    pub fn due(&self, kind: ActionKind) -> Result<Vec<(u64, u64)>, ReadError> {
        pending(kind).all(&self.0.begin()?)
    }

    /// Every kind's actions waiting to be carried out: (seq, earliest attempt time).
    pub fn due_all(&self) -> Result<Vec<(u64, u64)>, ReadError> {
        let txn = self.0.begin()?;
        let mut out = Vec::new();
        for kind in ActionKind::ALL {
            out.extend(pending(kind).all(&txn)?);
        }
        Ok(out)
    }

    /// How many actions of `kind` wait to be carried out.
    pub fn due_count(&self, kind: ActionKind) -> Result<u64, ReadError> {
        pending(kind).count(&self.0.begin()?)
    }

    /// The actions of `kind` (by seq) due at `now` that `admit` takes, and the earliest time one
    /// not yet due comes due (see [`DueIndex::due`]).
    pub fn due_now(
        &self,
        kind: ActionKind,
        now: u64,
        after: Option<DueKey>,
        admit: &mut dyn FnMut(DueKey) -> Admit,
    ) -> Result<Due, ReadError> {
        pending(kind).due(&self.0.begin()?, now, after, admit)
    }

    /// The action queued as `seq`.
    pub fn get_by_seq(&self, seq: u64) -> Result<Option<QueuedAction>, ReadError> {
        let txn = self.0.begin()?;
        let order = match txn.open_table(ACTIONS_ORDER) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let Some(id) = order.get(seq).map_err(read_err)? else {
            return Ok(None);
        };
        self.get(id.value())
    }

    pub fn get(&self, id: &str) -> Result<Option<QueuedAction>, ReadError> {
        let txn = self.0.begin()?;
        let table = match txn.open_table(ACTIONS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        if let Some(g) = table.get(id).map_err(read_err)? {
            return Ok(Some(serde_json::from_slice(g.value()).map_err(read_err)?));
        }
        // A mail moved from an older outbox is found under the id it would get now too.
        let kept = match txn.open_table(ALIASES) {
            Ok(t) => t.get(id).map_err(read_err)?.map(|g| g.value().to_string()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(read_err(e)),
        };
        match kept {
            Some(kept) => match table.get(kept.as_str()).map_err(read_err)? {
                Some(g) => Ok(Some(serde_json::from_slice(g.value()).map_err(read_err)?)),
                None => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// Newest first, up to `limit` that `filter` keeps.
    pub fn recent(&self, limit: usize, filter: Filter) -> Result<Vec<QueuedAction>, ReadError> {
        let txn = self.0.begin()?;
        let (order, table) = match (txn.open_table(ACTIONS_ORDER), txn.open_table(ACTIONS)) {
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
            if let Some(g) = table.get(id.value()).map_err(read_err)? {
                let a: QueuedAction = serde_json::from_slice(g.value()).map_err(read_err)?;
                if filter.keeps(&a) {
                    out.push(a);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::outbox::{LEGACY_OUTBOX, MailStatus, OutboxMail, OutboxView};
    use super::*;
    use crate::script::{Email, action_id, default_key};
    use redb::ReadableDatabase;

    fn write<T>(db: &redb::Database, f: impl FnOnce(&WriteTransaction) -> T) -> T {
        let txn = db.begin_write().unwrap();
        let out = f(&txn);
        txn.commit().unwrap();
        out
    }

    fn email(id: &str, position: usize) -> Email {
        Email {
            id: id.into(),
            position,
            to: vec!["a@example.com".into()],
            cc: vec![],
            bcc: vec![],
            reply_to: None,
            subject: "s".into(),
            body: "b".into(),
            html: None,
            key: None,
            from: None,
        }
    }

    /// The tables as the engine before the action queue wrote them: `outbox`, `outbox_order`
    /// and the due index `outbox_pending` (+ its time index) holding the queued mail.
    fn legacy_store(db: &redb::Database) {
        const ORDER: TableDefinition<u64, &str> = TableDefinition::new("outbox_order");
        const PENDING: TableDefinition<u64, u64> = TableDefinition::new("outbox_pending");
        const BY_TIME: TableDefinition<(u64, u64), ()> =
            TableDefinition::new("outbox_pending_by_time");
        write(db, |t| {
            let mut outbox = t.open_table(LEGACY_OUTBOX).unwrap();
            let mut order = t.open_table(ORDER).unwrap();
            for (seq, id, status) in [
                (1, "old-queued-id", MailStatus::Queued),
                (2, "old-sent-id", MailStatus::Sent),
            ] {
                let mail = OutboxMail {
                    id: id.into(),
                    seq,
                    run_id: seq,
                    event_uuid: format!("uuid-{seq}"),
                    script: "alert.rhai".into(),
                    email: email(id, 0),
                    status,
                    attempts: u32::from(status == MailStatus::Sent),
                    last_error: None,
                    queued_ms: 1_700_000_000_000,
                    sent_ms: (status == MailStatus::Sent).then_some(1_700_000_001_000),
                    next_attempt_ms: None,
                };
                let json = serde_json::to_vec(&mail).unwrap();
                outbox.insert(id, json.as_slice()).unwrap();
                order.insert(seq, id).unwrap();
            }
            t.open_table(PENDING).unwrap().insert(1, 0).unwrap();
            t.open_table(BY_TIME).unwrap().insert((0, 1), ()).unwrap();
        });
    }

    /// An older outbox moves into the queue: ids and states kept, the queued mail due, the sent
    /// one done and never queued again, not even under the id a replay computes now.
    #[test]
    fn an_older_outbox_moves_into_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        legacy_store(&db);
        write(&db, |t| init(t).unwrap());

        let queued = ActionsView(&db).get("old-queued-id").unwrap().unwrap();
        assert_eq!(queued.kind, ActionKind::Email);
        assert_eq!(queued.status, ActionStatus::Queued);
        let sent = ActionsView(&db).get("old-sent-id").unwrap().unwrap();
        assert_eq!(sent.status, ActionStatus::Done);
        assert_eq!(sent.done_ms, Some(1_700_000_001_000));
        let due = ActionsView(&db).due(ActionKind::Email).unwrap();
        assert_eq!(due, vec![(queued.seq, 0)], "only the queued mail is due");
        let names: Vec<String> = db
            .begin_read()
            .unwrap()
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with("outbox")), "{names:?}");

        // `engine outbox` still shows them as mails.
        let shown = OutboxView(&db).recent(10, false).unwrap();
        let states: Vec<_> = shown.iter().map(|m| (m.id.as_str(), m.status)).collect();
        assert_eq!(
            states,
            [
                ("old-sent-id", MailStatus::Sent),
                ("old-queued-id", MailStatus::Queued)
            ]
        );

        // A replay of the sent mail's event computes the new id: found, not queued again.
        let now_id = action_id("uuid-2", "alert.rhai", &default_key(ActionKind::Email, 0));
        let origin = Origin {
            run_id: 9,
            event_uuid: "uuid-2",
            script: "alert.rhai",
        };
        let n = write(&db, |t| {
            enqueue(t, origin, &[Action::Email(email(&now_id, 0))]).unwrap()
        });
        assert_eq!(n, 0);
        assert_eq!(ActionsView(&db).due(ActionKind::Email).unwrap().len(), 1);
        // Opening again changes nothing.
        write(&db, |t| init(t).unwrap());
        assert_eq!(
            ActionsView(&db)
                .recent(10, Filter::default())
                .unwrap()
                .len(),
            2
        );
    }

    /// A second run recording the same action id queues nothing; a new id gets the next seq.
    #[test]
    fn an_action_id_is_queued_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        write(&db, |t| init(t).unwrap());
        let origin = Origin {
            run_id: 1,
            event_uuid: "u",
            script: "s",
        };
        let a = Action::Email(email("a", 0));
        let b = Action::Email(email("b", 1));
        assert_eq!(
            write(&db, |t| enqueue(t, origin, std::slice::from_ref(&a))
                .unwrap()),
            1
        );
        assert_eq!(write(&db, |t| enqueue(t, origin, &[a, b]).unwrap()), 1);
        let all = ActionsView(&db).recent(10, Filter::default()).unwrap();
        assert_eq!(
            all.iter()
                .map(|x| (x.id.as_str(), x.seq))
                .collect::<Vec<_>>(),
            [("b", 2), ("a", 1)]
        );
        let mut done = all[1].clone();
        done.status = ActionStatus::Done;
        write(&db, |t| save(t, &done).unwrap());
        assert_eq!(
            ActionsView(&db).due(ActionKind::Email).unwrap(),
            vec![(2, 0)]
        );
        assert!(ActionsView(&db).due(ActionKind::Http).unwrap().is_empty());
    }
}
