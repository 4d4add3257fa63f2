//! The history commands' reads (`events`, `runs`, `outbox`, `samples`, `scripts`, replay
//! results), answered from the store when no server runs, or by the running server through its
//! loopback admin endpoint (`POST /admin/read`) when it holds the store.
//!
//! The server holds the store file exclusively: redb's shared modes would let other processes
//! read it directly, but they force a two-phase commit, a second fsync on every commit the
//! receiver waits for. Both paths run the same [`answer`] on a [`History`], so a command prints
//! the same thing whichever path served it.

use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::config::Config;
use crate::outbox::{MailStatus, OutboxView};
use crate::runs::{ReadTxnSource, RunRecord, RunsView};
use crate::script::Action;
use crate::serve::ADMIN_TOKEN_FILE;
use crate::server::ADMIN_TOKEN_HEADER;
use crate::store::{History, OpenError, ReadError};

/// How long a command waits for the running server's answer.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One read a history command needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    /// The newest events, newest first.
    Events { limit: usize },
    /// The newest quarantined bodies.
    Quarantine { limit: usize },
    /// The newest runs (only failed ones with `failed`).
    Runs { limit: usize, failed: bool },
    /// The newest mails (only failed ones with `failed`).
    Outbox { limit: usize, failed: bool },
    /// Captured samples, with their JSON.
    Samples,
    /// The per-script state the server recorded (`null` when none was).
    Scripts,
    /// Runs by id, each with the state of its mails (for `engine replay`).
    Replayed { ids: Vec<u64> },
}

/// A captured sample with its event JSON (as text: events are JSON, so UTF-8).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleWithJson {
    #[serde(flatten)]
    pub sample: crate::samples::StoredSample,
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
        Query::Runs { limit, failed } => {
            json(serde_json::to_value(RunsView(h).recent(*limit, *failed)?))
        }
        Query::Outbox { limit, failed } => {
            json(serde_json::to_value(OutboxView(h).recent(*limit, *failed)?))
        }
        Query::Samples => {
            let rows: Vec<SampleWithJson> = crate::samples::captured(h)?
                .into_iter()
                .map(|s| SampleWithJson {
                    json: String::from_utf8_lossy(&s.json).into_owned(),
                    sample: s,
                })
                .collect();
            json(serde_json::to_value(rows))
        }
        Query::Scripts => {
            let txn = h.read_txn()?;
            json(serde_json::to_value(crate::watch::recorded_states(&txn)?))
        }
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
                .map(|Action::Email(e)| {
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
                })
                .collect(),
            record: r.clone(),
        })
        .collect()
}

/// Runs `query` on the store of `config`: here when no server holds it, else through the server.
/// `Ok(None)`: there is no store yet.
pub fn read<T: DeserializeOwned>(config: &Config, query: &Query) -> Result<Option<T>, String> {
    let value = match History::open(&config.data_dir) {
        Ok(Some(h)) => answer(&h, query).map_err(|e| e.to_string())?,
        Ok(None) => return Ok(None),
        Err(OpenError::Busy { .. }) => ask_server(config, query)?,
        Err(e) => return Err(e.to_string()),
    };
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| format!("unexpected answer: {e}"))
}

/// The running server's loopback address and admin token.
pub fn admin_target(config: &Config) -> Result<(std::net::SocketAddr, String), String> {
    let token = std::fs::read_to_string(config.data_dir.join(ADMIN_TOKEN_FILE))
        .map(|t| t.trim().to_string())
        .map_err(|e| {
            format!(
                "the store is in use by another process (a running `engine serve`?), and its admin token cannot be read ({e})\n  hint: run as the user that runs `engine serve`; if another engine command is using the store, try again when it has finished"
            )
        })?;
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok((addr, token))
}

/// `POST /admin/read` on the running server. Runs on a thread of its own so that it works from
/// synchronous commands inside the CLI's runtime.
fn ask_server(config: &Config, query: &Query) -> Result<serde_json::Value, String> {
    let (addr, token) = admin_target(config)?;
    let body = serde_json::to_vec(query).map_err(|e| e.to_string())?;
    let url = format!("http://{addr}/admin/read");
    let headers = vec![(ADMIN_TOKEN_HEADER.to_string(), token)];
    let answer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            tokio::time::timeout(
                READ_TIMEOUT,
                crate::client::request(Method::POST, &url, &headers, Bytes::from(body)),
            )
            .await
            .map_err(|_| format!("no answer within {} s", READ_TIMEOUT.as_secs()))?
            .map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "the request thread panicked".to_string())?
    .map_err(|e| {
        format!(
            "the store is in use by another process, and no server answers at {addr}: {e}\n  hint: if another engine command is using it, try again when it has finished"
        )
    })?;
    let value: serde_json::Value = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("the server's answer is not JSON: {e}"))?;
    if answer.status != 200 {
        return Err(value["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| answer.text()));
    }
    Ok(value)
}
