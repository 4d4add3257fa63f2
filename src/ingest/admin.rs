//! The admin API: `POST /admin/read` (a history command's [`Query`] while the server holds the
//! store) and `POST /admin/replay` (`engine replay`), served only to this host and only with the
//! token in `data_dir/admin-token`. Replays go to the [`Admin`] backend the app wires in.

use std::future::Future;
use std::pin::Pin;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use subtle::ConstantTimeEq;

use super::Front;
use super::server::{Answer, body_timeout, error, error_owned, json, printable};
use crate::store::query::{self, Query};

/// The file (in the data dir) holding the admin token, mode 0600.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The header carrying the admin token on `/admin/*` requests.
pub const ADMIN_TOKEN_HEADER: &str = "x-engine-admin-token";
/// Admin request bodies are tiny JSON objects.
pub const MAX_ADMIN_BODY_BYTES: usize = 4096;

/// The admin actions (`POST /admin/<action>`).
const ACTIONS: &[&str] = &[
    "read",
    "replay",
    "remove-sample",
    "delete-state",
    "backfill",
];

/// `/admin/delete-state`: `engine state delete` while the server holds the store.
async fn delete_state(app: &Front, body: &[u8]) -> Answer {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Delete {
        script: String,
        key: String,
    }
    let d: Delete = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error_owned(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("bad delete-state request: {e}"),
            );
        }
    };
    let now = crate::util::now_ms();
    let deleted = app
        .store
        .write(move |txn| crate::store::kv::delete(txn, &d.script, &d.key, now))
        .await;
    match deleted {
        Ok(b) => json(
            StatusCode::OK,
            serde_json::json!({ "deleted": b }).to_string(),
        ),
        Err(e) => error_owned(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            e.to_string(),
        ),
    }
}

/// `/admin/remove-sample`: `engine samples rm` while the server holds the store.
async fn remove_sample(app: &Front, body: &[u8]) -> Answer {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Remove {
        uuid: String,
    }
    let remove: Remove = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error_owned(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("bad remove-sample request: {e}"),
            );
        }
    };
    let removed = app
        .store
        .write(move |txn| crate::store::samples::remove(txn, &remove.uuid))
        .await;
    match removed {
        Ok(n) => json(
            StatusCode::OK,
            serde_json::json!({ "removed": n }).to_string(),
        ),
        Err(e) => error_owned(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            e.to_string(),
        ),
    }
}

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRequest {
    pub target: ReplayTarget,
    /// Only this script (else every script the target concerns).
    pub script: Option<String>,
}

/// The events a replay runs scripts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayTarget {
    /// Every subscribed script again on the event with this uuid.
    Event(String),
    /// The latest failed run of every (event, script) again.
    Failed,
}

/// Why a replay was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("no stored event has uuid `{0}`")]
    NoSuchEvent(String),
    #[error("no script `{0}` is loaded")]
    NoSuchScript(String),
    #[error("{0}")]
    Unavailable(String),
}

/// `engine backfill` through the server: one System Log pass from `since_ms`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    pub since_ms: u64,
    #[serde(default)]
    pub dry_run: bool,
}

/// The work behind the admin API that ingest does not do itself.
pub trait Admin: Send + Sync {
    /// Queues the runs of a replay; resolves to their ids once they are committed.
    fn replay(
        &self,
        request: ReplayRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u64>, AdminError>> + Send + '_>>;

    /// What a replay would do, without doing it: each of its runs dry-run with the current
    /// scripts, as JSON (an array of the processor's dry-run outcomes).
    fn dry_run(
        &self,
        request: ReplayRequest,
    ) -> Pin<Box<dyn Future<Output = Result<serde_json::Value, AdminError>> + Send + '_>> {
        let _ = request;
        Box::pin(async {
            Err(AdminError::Unavailable(
                "this server runs no scripts".to_string(),
            ))
        })
    }

    /// Runs one System Log backfill pass; resolves to its report (as JSON) once what it stored
    /// is committed. `Unavailable` when the server has no backfill.
    fn backfill(
        &self,
        request: BackfillRequest,
    ) -> Pin<Box<dyn Future<Output = Result<serde_json::Value, AdminError>> + Send + '_>> {
        let _ = request;
        Box::pin(async {
            Err(AdminError::Unavailable(
                "this server has no System Log backfill (it needs [okta] with org_url and token_env or a service app)"
                    .to_string(),
            ))
        })
    }
}

/// `/admin/backfill`.
async fn backfill(backend: &dyn Admin, body: &[u8]) -> Answer {
    let request: BackfillRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error_owned(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("bad backfill request: {e}"),
            );
        }
    };
    match backend.backfill(request).await {
        Ok(report) => json(StatusCode::OK, report.to_string()),
        Err(e) => error_owned(
            StatusCode::SERVICE_UNAVAILABLE,
            "backfill_failed",
            e.to_string(),
        ),
    }
}

/// `/admin/read`: a history command's read (`remote::Query`) while the server holds the store.
async fn read(app: &Front, body: &[u8]) -> Answer {
    let query: Query = match serde_json::from_slice(body) {
        Ok(q) => q,
        Err(e) => {
            return error_owned(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("bad read request: {e}"),
            );
        }
    };
    let store = app.store.clone();
    let answered = tokio::task::spawn_blocking(move || {
        query::answer(&store.history(), &query).map(|v| v.to_string())
    })
    .await;
    match answered {
        Ok(Ok(text)) => json(StatusCode::OK, text),
        Ok(Err(e)) => error_owned(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            e.to_string(),
        ),
        Err(e) => error_owned(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the read failed: {e}"),
        ),
    }
}

/// `/admin/replay` and `/admin/read`: for `engine replay` and the history commands while the
/// server holds the store. Only from this host (loopback, or to the interface address the server
/// is bound to, from that same address), and only with the token that only readers of the data
/// dir can know.
pub(crate) async fn handle(
    app: &Front,
    action: &str,
    req: Request<Incoming>,
    same_host: bool,
) -> Answer {
    let Some((backend, token)) = &app.admin else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no admin endpoint on this server",
        );
    };
    if !same_host {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "admin requests are accepted only from this host",
        );
    }
    let given = req
        .headers()
        .get(ADMIN_TOKEN_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(token.expose().as_bytes())) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong admin token",
        );
    }
    if req.method() != Method::POST || !ACTIONS.contains(&action) {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the admin endpoints are POST /admin/replay, /admin/read, /admin/remove-sample, /admin/delete-state and /admin/backfill",
        );
    }
    let timeout = app.limits.body_read_timeout;
    let collect = Limited::new(req.into_body(), MAX_ADMIN_BODY_BYTES).collect();
    let Ok(collected) = tokio::time::timeout(timeout, collect).await else {
        return body_timeout(timeout);
    };
    let body = match collected {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "unreadable or too large admin request",
            );
        }
    };
    if action == "read" {
        return read(app, &body).await;
    }
    if action == "remove-sample" {
        return remove_sample(app, &body).await;
    }
    if action == "delete-state" {
        return delete_state(app, &body).await;
    }
    if action == "backfill" {
        return backfill(backend.as_ref(), &body).await;
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Replay {
        uuid: Option<String>,
        #[serde(default)]
        failed: bool,
        #[serde(default)]
        script: Option<String>,
    }
    let replay: Replay = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_owned(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("bad replay request: {e}"),
            );
        }
    };
    let target = match (replay.uuid, replay.failed) {
        (Some(uuid), false) => ReplayTarget::Event(uuid),
        (None, true) => ReplayTarget::Failed,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give either `uuid` or `failed: true`",
            );
        }
    };
    let result = backend
        .replay(ReplayRequest {
            target,
            script: replay.script,
        })
        .await;
    match result {
        Ok(ids) => json(
            StatusCode::OK,
            serde_json::json!({ "runs": ids }).to_string(),
        ),
        Err(AdminError::NoSuchEvent(uuid)) => error_owned(
            StatusCode::NOT_FOUND,
            "no_such_event",
            format!("no stored event has uuid `{}`", printable(&uuid)),
        ),
        Err(AdminError::NoSuchScript(name)) => error_owned(
            StatusCode::NOT_FOUND,
            "no_such_script",
            format!(
                "no script `{}` is loaded\n  hint: `engine scripts` lists the scripts",
                printable(&name)
            ),
        ),
        Err(AdminError::Unavailable(e)) => {
            error_owned(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", e)
        }
    }
}
