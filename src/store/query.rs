//! The history commands' reads (`events`, `runs`, `outbox`, `samples`, `scripts`, replay
//! results) as one [`Query`] type and its [`answer`]: run on the file by a command when no server
//! runs, or by the running server behind its admin endpoint (`POST /admin/read`) when it holds
//! the store. Both paths run the same [`answer`] on a [`History`], so a command prints the same
//! thing whichever path served it.
//!
//! The server holds the store file exclusively: redb's shared modes would let other processes
//! read it directly, but they force a two-phase commit, a second fsync on every commit the
//! receiver waits for.

use serde::{Deserialize, Serialize};

use super::actions::{ActionStatus, ActionsView};
use super::outbox::{MailStatus, OutboxView};
use super::runs::{RunFilter, RunRecord, RunsView};
use super::{History, ReadError, ReadTxnSource};
use crate::script::Action;

/// One read a history command needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    /// The newest events, newest first.
    Events { limit: usize },
    /// The newest quarantined bodies.
    Quarantine { limit: usize },
    /// The newest runs that pass the filter.
    Runs { limit: usize, filter: RunFilter },
    /// One event with its payload as stored.
    Event { uuid: String },
    /// The newest mails (only failed ones with `failed`).
    Outbox { limit: usize, failed: bool },
    /// The newest actions of every kind (or of `kind`; only failed ones with `failed`).
    Actions {
        limit: usize,
        failed: bool,
        kind: Option<crate::script::ActionKind>,
    },
    /// Captured samples, with their JSON.
    Samples,
    /// The per-script state the server recorded (`null` when none was).
    Scripts,
    /// Runs by id, each with the state of its mails (for `engine replay`).
    Replayed { ids: Vec<u64> },
    /// The scripts' live state keys (of `script` only, when given).
    State { script: Option<String> },
    /// The pending timers, earliest due first.
    Timers { limit: usize },
}

/// A captured sample with its event JSON (as text: events are JSON, so UTF-8).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleWithJson {
    #[serde(flatten)]
    pub sample: super::samples::StoredSample,
    pub json: String,
}

/// A run and one line per mail it produced: "mail ID to ADDRS: STATE".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayedRun {
    pub record: RunRecord,
    pub mails: Vec<String>,
}

/// Answers `query` from the store.
pub fn answer(h: &History<'_>, query: &Query) -> Result<serde_json::Value, ReadError> {
    let json = |v: Result<serde_json::Value, serde_json::Error>| {
        v.map_err(|e| ReadError::new(format!("cannot encode the answer: {e}")))
    };
    match query {
        Query::Events { limit } => json(serde_json::to_value(h.recent_events(*limit)?)),
        Query::Quarantine { limit } => json(serde_json::to_value(h.quarantine(*limit)?)),
        Query::Runs { limit, filter } => {
            json(serde_json::to_value(RunsView(h).list(*limit, filter)?))
        }
        Query::Event { uuid } => json(serde_json::to_value(h.event_detail(uuid)?)),
        Query::Outbox { limit, failed } => {
            json(serde_json::to_value(OutboxView(h).recent(*limit, *failed)?))
        }
        Query::Actions {
            limit,
            failed,
            kind,
        } => {
            let filter = super::actions::Filter {
                kind: *kind,
                failed_only: *failed,
            };
            json(serde_json::to_value(
                super::actions::ActionsView(h).recent(*limit, filter)?,
            ))
        }
        Query::Samples => {
            let rows: Vec<SampleWithJson> = super::samples::captured(h)?
                .into_iter()
                .map(|s| SampleWithJson {
                    json: String::from_utf8_lossy(&s.json).into_owned(),
                    sample: s,
                })
                .collect();
            json(serde_json::to_value(rows))
        }
        Query::Scripts => {
            let txn = h.read()?;
            json(serde_json::to_value(super::script_state::recorded(&txn)?))
        }
        Query::State { script } => json(serde_json::to_value(super::kv::list(
            h,
            script.as_deref(),
            crate::util::now_ms(),
        )?)),
        Query::Timers { limit } => json(serde_json::to_value(super::timers::list(h, *limit)?)),
        Query::Replayed { ids } => {
            let records: Vec<RunRecord> = ids
                .iter()
                .filter_map(|id| RunsView(h).get(*id).ok().flatten())
                .collect();
            json(serde_json::to_value(replayed(&records, h)))
        }
    }
}

/// Each run with the state of its mails.
pub fn replayed(records: &[RunRecord], db: &dyn ReadTxnSource) -> Vec<ReplayedRun> {
    records
        .iter()
        .map(|r| ReplayedRun {
            mails: r
                .actions
                .iter()
                .map(|a| match a {
                    Action::Email(e) => {
                        let state = OutboxView(db)
                            .get(&e.id)
                            .ok()
                            .flatten()
                            .map(|m| match (m.status, m.run_id == r.id) {
                                (MailStatus::Sent, true) => "sent".to_string(),
                                (MailStatus::Sent, false) => {
                                    "already sent earlier, not sent again".to_string()
                                }
                                (s, _) => s.as_str().to_string(),
                            })
                            .unwrap_or_else(|| "not queued".into());
                        format!("mail {} to {}: {state}", e.id, e.to.join(", "))
                    }
                    other => {
                        let state = ActionsView(db)
                            .get(other.id())
                            .ok()
                            .flatten()
                            .map(|q| match (q.status, q.run_id == r.id) {
                                (ActionStatus::Done, false) => {
                                    "already done earlier, not done again".to_string()
                                }
                                (s, _) => s.as_str().to_string(),
                            })
                            .unwrap_or_else(|| "not queued".into());
                        format!(
                            "{} {} {}: {state}",
                            other.kind().as_str(),
                            other.id(),
                            other.describe()
                        )
                    }
                })
                .collect(),
            record: r.clone(),
        })
        .collect()
}
