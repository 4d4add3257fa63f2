//! What the `okta::` functions do through [`OktaClient`]: the actions ([`OktaClient::perform`]
//! carries one [`OktaOp`] out) and the reads (`user_groups`, `get_group`).
//!
//! Okta's documented paths: `POST /api/v1/users/{id}/lifecycle/{suspend|unsuspend|deactivate|
//! expire_password}`, `DELETE /api/v1/users/{id}/sessions`, `PUT`/`DELETE
//! /api/v1/groups/{gid}/users/{uid}`, `POST /api/v1/users/{id}` (a partial profile update),
//! `GET /api/v1/users/{id}/groups` and `GET /api/v1/groups?q=` (both paged by `Link:
//! rel="next"`). A user given by login or email is resolved to its id first (`GET
//! /api/v1/users/{login}`); a group given by name through `?q=` (an exact name match).
//!
//! "Done" means the effect holds, whoever made it: suspending a user Okta already has
//! `SUSPENDED` (its 400 `E0000001`, or a status read first) is done, so are adding a member and
//! removing a non-member. `deactivate_user` reads the user's status first and never sends the
//! `DELETE /api/v1/users/{id}` that would delete a deactivated user: a `DEPROVISIONED` user is
//! done as it is. 404 `E0000007` (no such user or group) fails the action with a clear message;
//! 401/403 fail it with what to check; 429 → retry at `X-Rate-Limit-Reset`; 5xx, timeouts and
//! connection errors → retry. Before a request whose endpoint's last answer left at most
//! [`RATE_LIMIT_RESERVE`] requests (`X-Rate-Limit-Remaining`), the action waits for the reset
//! (or, when that is past its deadline, asks to be retried then) instead of spending them.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::okta::{
    KEY_ESCAPE, MAX_OKTA_BODY_BYTES, MAX_RATE_LIMIT_PAUSE, OktaClient, okta_error, rate_limit_until,
};
use super::system_log::{RateBudget, budget, next_link};
use super::{LookupError, scalar_string};
use crate::script::{GroupRef, OktaGroup, OktaOp, looks_like_okta_id};

/// Requests left in an endpoint's window below which an action waits for the window's reset:
/// one stays for `lookup_user` and the reads of runs, which never wait.
pub const RATE_LIMIT_RESERVE: u64 = 1;
/// Groups asked for per page (Okta's largest `limit` for these lists).
const GROUP_PAGE_SIZE: u32 = 200;
/// Pages of a group list followed at most (10,000 groups): a `next` loop ends here.
const MAX_GROUP_PAGES: usize = 50;
/// Characters of an Okta error's summary kept in an action's error (its causes included).
const MAX_ERROR_TEXT: usize = 500;

/// How carrying out an operation went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum OpOutcome {
    /// The effect holds (made now, or found already made).
    Done { summary: OpSummary },
    /// Worth trying again: after `after` when known (a rate limit's reset).
    Retry {
        after: Option<Duration>,
        error: String,
    },
    /// Retrying will not help (no such user, bad credentials, Okta refused the change).
    Failed { error: String },
}

/// What Okta answered to the request that decided an operation (never a credential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpSummary {
    pub method: String,
    /// The path, with the user's and group's ids (no query, no host).
    pub path: String,
    pub status: u16,
    /// Okta's `errorCode` when it answered with one (the already-suspended 400).
    pub error_code: Option<String>,
    /// Why an answer that is not a 2xx still means done ("already SUSPENDED").
    pub note: Option<String>,
}

impl std::fmt::Display for OpSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} → {}", self.method, self.path, self.status)?;
        if let Some(code) = &self.error_code {
            write!(f, " {code}")?;
        }
        if let Some(note) = &self.note {
            write!(f, " ({note})")?;
        }
        Ok(())
    }
}

/// One answer, with the request it answered.
struct Answer {
    method: Method,
    path: String,
    status: StatusCode,
    body: Bytes,
}

impl Answer {
    fn summary(&self, note: Option<String>) -> OpSummary {
        OpSummary {
            method: self.method.to_string(),
            path: self.path.clone(),
            status: self.status.as_u16(),
            error_code: okta_error(&self.body).0,
            note,
        }
    }

    fn code(&self) -> Option<String> {
        okta_error(&self.body).0
    }
}

/// A user's id and, when it was read, its status.
struct Resolved {
    id: String,
    status: Option<String>,
}

fn retry(e: LookupError) -> OpOutcome {
    match e {
        LookupError::RateLimited { message, until } => OpOutcome::Retry {
            after: Some(until.duration_since(SystemTime::now()).unwrap_or_default()),
            error: message,
        },
        LookupError::Transient(m) | LookupError::OutOfTime(m) => OpOutcome::Retry {
            after: None,
            error: m,
        },
        LookupError::Permanent(m) => OpOutcome::Failed { error: m },
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, KEY_ESCAPE).to_string()
}

/// An Okta error body as one short line: `E0000001: Api validation failed: …; cause`.
fn error_text(body: &[u8]) -> String {
    let (code, summary) = okta_error(body);
    let mut out = match (code, summary) {
        (Some(c), Some(s)) => format!("{c}: {s}"),
        (Some(c), None) => c,
        (None, Some(s)) => s,
        (None, None) => String::from_utf8_lossy(body).chars().take(200).collect(),
    };
    if let Ok(v) = serde_json::from_slice::<Value>(body)
        && let Some(causes) = v["errorCauses"].as_array()
    {
        for c in causes {
            if let Some(s) = c["errorSummary"].as_str() {
                out.push_str("; ");
                out.push_str(s);
            }
        }
    }
    if out.chars().count() > MAX_ERROR_TEXT {
        out = out.chars().take(MAX_ERROR_TEXT).collect::<String>() + "…";
    }
    out
}

/// The rate-limit bucket of a request: its method and path, ids replaced by `*` (Okta counts
/// limits per endpoint; `/api/v1/users/00u…/lifecycle/suspend` and the same for another user
/// share one).
pub(super) fn bucket(method: &Method, url: &str) -> String {
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(url);
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let mut out = String::new();
    let mut after_collection = false;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        if after_collection {
            out.push('*');
            after_collection = false;
        } else {
            out.push_str(seg);
            after_collection = matches!(seg, "users" | "groups");
        }
    }
    format!("{method} {out}")
}

fn group_from_json(v: &Value) -> Option<OktaGroup> {
    let id = v.get("id").and_then(scalar_string)?;
    let profile = v.get("profile");
    let get = |k: &str| profile.and_then(|p| p.get(k)).and_then(scalar_string);
    Some(OktaGroup {
        id,
        name: get("name").unwrap_or_default(),
        description: get("description"),
        kind: v.get("type").and_then(scalar_string),
    })
}

impl OktaClient {
    /// Records the `X-Rate-Limit-*` headers of an answer for its endpoint.
    pub(super) fn note_budget(&self, method: &Method, url: &str, headers: &hyper::HeaderMap) {
        let b = budget(headers);
        if b.remaining.is_none() {
            return;
        }
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        budgets.insert(bucket(method, url), b);
    }

    /// Token requests made to the OAuth token endpoint so far (0 with an SSWS token).
    pub fn token_requests(&self) -> u64 {
        self.auth.token_requests()
    }

    /// Carries `op` out once, by `deadline` (its outcome then says retry). `idempotency_key`
    /// (the action's id) goes along as `Idempotency-Key` and into the log. A pause for the
    /// rate limit's reset happens inside only when the reset comes before `deadline` (without
    /// one: at most [`MAX_RATE_LIMIT_PAUSE`]); an executor that must not hold a slot that long
    /// passes a deadline and gets `Retry { after }` instead.
    pub async fn perform(
        &self,
        op: &OktaOp,
        idempotency_key: &str,
        deadline: Option<Instant>,
    ) -> OpOutcome {
        let outcome = match self.carry_out(op, idempotency_key, deadline).await {
            Ok(summary) => OpOutcome::Done { summary },
            Err(o) => o,
        };
        match &outcome {
            OpOutcome::Done { summary } => tracing::info!(
                action = %idempotency_key, op = op.name(), user = %op.user(), answer = %summary,
                "Okta operation done"
            ),
            OpOutcome::Retry { after, error } => tracing::info!(
                action = %idempotency_key, op = op.name(), user = %op.user(),
                retry_after_ms = after.map(|d| d.as_millis() as u64), error = %error,
                "Okta operation to be retried"
            ),
            OpOutcome::Failed { error } => tracing::warn!(
                action = %idempotency_key, op = op.name(), user = %op.user(), error = %error,
                "Okta operation failed"
            ),
        }
        outcome
    }

    async fn carry_out(
        &self,
        op: &OktaOp,
        key: &str,
        deadline: Option<Instant>,
    ) -> Result<OpSummary, OpOutcome> {
        match op {
            OktaOp::SuspendUser { user } => {
                self.lifecycle(user, "suspend", "SUSPENDED", key, deadline)
                    .await
            }
            OktaOp::UnsuspendUser { user } => {
                self.lifecycle(user, "unsuspend", "ACTIVE", key, deadline)
                    .await
            }
            OktaOp::ExpirePassword { user } => {
                self.lifecycle(user, "expire_password", "PASSWORD_EXPIRED", key, deadline)
                    .await
            }
            OktaOp::DeactivateUser { user } => {
                // The status first, always: a deactivated user is left alone (never deleted).
                let u = self.resolve_user(user, true, key, deadline).await?;
                if u.status.as_deref() == Some("DEPROVISIONED") {
                    return Ok(OpSummary {
                        method: "GET".into(),
                        path: format!("/api/v1/users/{}", u.id),
                        status: 200,
                        error_code: None,
                        note: Some("already DEPROVISIONED (deactivated); nothing to do".into()),
                    });
                }
                let path = format!("/api/v1/users/{}/lifecycle/deactivate", enc(&u.id));
                let a = self
                    .request(Method::POST, &path, None, key, deadline)
                    .await?;
                if a.status.is_success() {
                    return Ok(a.summary(None));
                }
                self.already_or_fail(a, &u.id, "DEPROVISIONED", key, deadline)
                    .await
            }
            OktaOp::ClearSessions { user } => {
                let u = self.resolve_user(user, false, key, deadline).await?;
                let path = format!("/api/v1/users/{}/sessions", enc(&u.id));
                let a = self
                    .request(Method::DELETE, &path, None, key, deadline)
                    .await?;
                if a.status.is_success() {
                    return Ok(a.summary(None));
                }
                Err(self.failure(&a, &format!("user {user:?}")))
            }
            OktaOp::AddToGroup { user, group } | OktaOp::RemoveFromGroup { user, group } => {
                let add = matches!(op, OktaOp::AddToGroup { .. });
                let u = self.resolve_user(user, false, key, deadline).await?;
                let gid = self.resolve_group(group, deadline).await?;
                let path = format!("/api/v1/groups/{}/users/{}", enc(&gid), enc(&u.id));
                let method = if add { Method::PUT } else { Method::DELETE };
                let a = self.request(method, &path, None, key, deadline).await?;
                if a.status.is_success() {
                    return Ok(a.summary(None));
                }
                if !add
                    && a.status == StatusCode::NOT_FOUND
                    && a.code().as_deref() == Some("E0000007")
                {
                    // No such group, no such user, or not a member: only the last is done.
                    if self
                        .get_group(&GroupRef::Id(gid.clone()), deadline)
                        .await
                        .map_err(retry)?
                        .is_none()
                    {
                        return Err(OpOutcome::Failed {
                            error: format!("Okta has no group {}", group.as_str()),
                        });
                    }
                    self.resolve_user(&u.id, true, key, deadline).await?;
                    return Ok(a.summary(Some("not a member; nothing to do".into())));
                }
                Err(self.failure(&a, &format!("user {user:?} or group {:?}", group.as_str())))
            }
            OktaOp::UpdateProfile { user, profile } => {
                let u = self.resolve_user(user, false, key, deadline).await?;
                let path = format!("/api/v1/users/{}", enc(&u.id));
                let body = json!({ "profile": profile });
                let a = self
                    .request(Method::POST, &path, Some(&body), key, deadline)
                    .await?;
                if a.status.is_success() {
                    return Ok(a.summary(None));
                }
                Err(self.failure(&a, &format!("user {user:?}")))
            }
        }
    }

    /// `POST /api/v1/users/{id}/lifecycle/{action}`, done when the user ends up `goal`: a
    /// status read first (a login is resolved anyway) that already is `goal` sends nothing; a
    /// 400 is done when a read after it finds `goal` (Okta's answer to suspending a suspended
    /// user: 400 `E0000001` "Cannot suspend a user that is not active").
    async fn lifecycle(
        &self,
        user: &str,
        action: &str,
        goal: &str,
        key: &str,
        deadline: Option<Instant>,
    ) -> Result<OpSummary, OpOutcome> {
        let u = self.resolve_user(user, false, key, deadline).await?;
        if u.status.as_deref() == Some(goal) {
            return Ok(OpSummary {
                method: "GET".into(),
                path: format!("/api/v1/users/{}", u.id),
                status: 200,
                error_code: None,
                note: Some(format!("already {goal}; nothing to do")),
            });
        }
        let path = format!("/api/v1/users/{}/lifecycle/{action}", enc(&u.id));
        let a = self
            .request(Method::POST, &path, None, key, deadline)
            .await?;
        if a.status.is_success() {
            return Ok(a.summary(None));
        }
        self.already_or_fail(a, &u.id, goal, key, deadline).await
    }

    /// After a refused lifecycle request: done if the user's status is `goal` now.
    async fn already_or_fail(
        &self,
        a: Answer,
        id: &str,
        goal: &str,
        key: &str,
        deadline: Option<Instant>,
    ) -> Result<OpSummary, OpOutcome> {
        if a.status != StatusCode::BAD_REQUEST {
            return Err(self.failure(&a, &format!("user {id:?}")));
        }
        let now = self.resolve_user(id, true, key, deadline).await?;
        match now.status.as_deref() {
            Some(s) if s == goal => Ok(a.summary(Some(format!("already {goal}")))),
            status => Err(OpOutcome::Failed {
                error: format!(
                    "Okta refused {} {} for a user whose status is {} (400 {})",
                    a.method,
                    a.path,
                    status.unwrap_or("unknown"),
                    error_text(&a.body)
                ),
            }),
        }
    }

    /// The user's id: as given when it is one (and `need_status` is false), else read from
    /// `GET /api/v1/users/{id-or-login}` (with its status).
    async fn resolve_user(
        &self,
        user: &str,
        need_status: bool,
        key: &str,
        deadline: Option<Instant>,
    ) -> Result<Resolved, OpOutcome> {
        if !need_status && looks_like_okta_id(user, "00u") {
            return Ok(Resolved {
                id: user.to_string(),
                status: None,
            });
        }
        let path = format!("/api/v1/users/{}", enc(user));
        let a = self
            .request(Method::GET, &path, None, key, deadline)
            .await?;
        if a.status == StatusCode::OK {
            let v: Value = serde_json::from_slice(&a.body).map_err(|e| OpOutcome::Retry {
                after: None,
                error: format!(
                    "Okta answered 200 for user {user:?} with a body that is not a user: {e}"
                ),
            })?;
            let id = v
                .get("id")
                .and_then(scalar_string)
                .ok_or_else(|| OpOutcome::Retry {
                    after: None,
                    error: format!("Okta's user {user:?} has no id"),
                })?;
            return Ok(Resolved {
                id,
                status: v.get("status").and_then(scalar_string),
            });
        }
        Err(self.failure(&a, &format!("user {user:?}")))
    }

    /// A group's id: as given, or the group whose name is exactly `name`.
    async fn resolve_group(
        &self,
        group: &GroupRef,
        deadline: Option<Instant>,
    ) -> Result<String, OpOutcome> {
        match group {
            GroupRef::Id(id) => Ok(id.clone()),
            GroupRef::Name(name) => {
                match self.group_by_name(name, deadline).await.map_err(retry)? {
                    Some(g) => Ok(g.id),
                    None => Err(OpOutcome::Failed {
                        error: format!(
                            "Okta has no group named {name:?} (names must match exactly)"
                        ),
                    }),
                }
            }
        }
    }

    /// One request of an action: held off while the org is rate limited, paused while its
    /// endpoint is at its reserve, 429 → retry at the reset.
    async fn request(
        &self,
        method: Method,
        path: &str,
        json: Option<&Value>,
        key: &str,
        deadline: Option<Instant>,
    ) -> Result<Answer, OpOutcome> {
        let url = format!("{}{path}", self.org_url());
        if let Some(until) = self.rate_limited() {
            return Err(OpOutcome::Retry {
                after: Some(until.duration_since(SystemTime::now()).unwrap_or_default()),
                error: "Okta rate limit reached (429); waiting for its reset".to_string(),
            });
        }
        self.keep_under_limit(&method, &url, deadline).await?;
        let (status, headers, body) = self
            .call(
                method.clone(),
                &url,
                json,
                deadline,
                MAX_OKTA_BODY_BYTES,
                Some(key),
            )
            .await
            .map_err(retry)?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            let until = rate_limit_until(&headers, SystemTime::now());
            self.note_rate_limit(until);
            return Err(OpOutcome::Retry {
                after: Some(until.duration_since(SystemTime::now()).unwrap_or_default()),
                error: format!(
                    "Okta rate limit reached (429 {}) on {method} {path}",
                    error_text(&body)
                ),
            });
        }
        Ok(Answer {
            method,
            path: path.to_string(),
            status,
            body,
        })
    }

    /// Waits for the reset of an endpoint whose last answer left at most
    /// [`RATE_LIMIT_RESERVE`] requests; past `deadline`, asks to be retried at the reset.
    async fn keep_under_limit(
        &self,
        method: &Method,
        url: &str,
        deadline: Option<Instant>,
    ) -> Result<(), OpOutcome> {
        let key = bucket(method, url);
        let known: Option<RateBudget> = self
            .budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied();
        let Some(RateBudget {
            remaining: Some(left),
            reset: Some(reset),
            ..
        }) = known
        else {
            return Ok(());
        };
        // A reset further away than Okta's windows (a wrong clock, a proxy's header) is capped.
        let wait = reset
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(MAX_RATE_LIMIT_PAUSE);
        if left > RATE_LIMIT_RESERVE || wait.is_zero() {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() + wait > d) {
            return Err(OpOutcome::Retry {
                after: Some(wait),
                error: format!(
                    "Okta's rate limit for {key} is at its reserve ({left} left); waiting for its reset"
                ),
            });
        }
        tracing::info!(endpoint = %key, remaining = left, wait_ms = wait.as_millis() as u64,
            "pausing before Okta's rate limit is reached");
        tokio::time::sleep(wait).await;
        self.budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        Ok(())
    }

    /// An answer that is neither success nor a known "already so" as an outcome.
    fn failure(&self, a: &Answer, what: &str) -> OpOutcome {
        let text = error_text(&a.body);
        match a.status {
            StatusCode::NOT_FOUND if a.code().as_deref() == Some("E0000007") => OpOutcome::Failed {
                error: format!("Okta has no {what} (404 {text})"),
            },
            StatusCode::UNAUTHORIZED => OpOutcome::Failed {
                error: format!(
                    "Okta rejected the {} (401 {text}): {}",
                    self.auth.what(),
                    self.auth.check_hint()
                ),
            },
            StatusCode::FORBIDDEN => OpOutcome::Failed {
                error: format!(
                    "Okta refused {} {} (403 {text}): {}",
                    a.method,
                    a.path,
                    self.auth.permission_hint(
                        if a.path.starts_with("/api/v1/groups") {
                            "okta.groups.manage"
                        } else {
                            "okta.users.manage"
                        },
                        "manage users and groups"
                    )
                ),
            },
            s if s.is_server_error() => OpOutcome::Retry {
                after: None,
                error: format!("Okta answered {s} ({text}) to {} {}", a.method, a.path),
            },
            s => OpOutcome::Failed {
                error: format!(
                    "Okta refused {} {} ({} {text})",
                    a.method,
                    a.path,
                    s.as_u16()
                ),
            },
        }
    }

    /// `okta::user_groups`: every group of the user (an id or a login), all pages.
    pub async fn user_groups(
        &self,
        user: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<OktaGroup>, LookupError> {
        let id = if looks_like_okta_id(user, "00u") {
            user.to_string()
        } else {
            match self.get_user(user, deadline).await? {
                Some(u) => u.id,
                None => {
                    return Err(LookupError::Permanent(format!("Okta has no user {user:?}")));
                }
            }
        };
        let first = format!(
            "{}/api/v1/users/{}/groups?limit={GROUP_PAGE_SIZE}",
            self.org_url(),
            enc(&id)
        );
        let prefix = format!("/api/v1/users/{}/groups", enc(&id));
        let mut groups = Vec::new();
        self.pages(&first, &prefix, deadline, &format!("user {user:?}"), |g| {
            groups.push(g);
            false
        })
        .await?;
        Ok(groups)
    }

    /// `okta::get_group`: the group with this id, or with exactly this name; `None`: none.
    pub async fn get_group(
        &self,
        group: &GroupRef,
        deadline: Option<Instant>,
    ) -> Result<Option<OktaGroup>, LookupError> {
        let id = match group {
            GroupRef::Name(name) => return self.group_by_name(name, deadline).await,
            GroupRef::Id(id) => id,
        };
        self.check_hold_off()?;
        let url = format!("{}/api/v1/groups/{}", self.org_url(), enc(id));
        let (status, headers, body) = self
            .get_limited(&url, deadline, MAX_OKTA_BODY_BYTES)
            .await?;
        match status {
            StatusCode::OK => {
                let v: Value = serde_json::from_slice(&body).map_err(|e| {
                    LookupError::Transient(format!("Okta's group {id:?} is not JSON: {e}"))
                })?;
                Ok(group_from_json(&v))
            }
            StatusCode::NOT_FOUND if okta_error(&body).0.as_deref() == Some("E0000007") => Ok(None),
            _ => Err(self.read_error(status, &headers, &body, &format!("group {id:?}"))),
        }
    }

    /// The group named exactly `name` (`?q=` matches name prefixes; the exact one is picked,
    /// else the one equal ignoring case when there is only one).
    async fn group_by_name(
        &self,
        name: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<OktaGroup>, LookupError> {
        let first = format!(
            "{}/api/v1/groups?q={}&limit={GROUP_PAGE_SIZE}",
            self.org_url(),
            enc(name)
        );
        let mut exact = None;
        let mut folded = Vec::new();
        self.pages(
            &first,
            "/api/v1/groups",
            deadline,
            &format!("group {name:?}"),
            |g| {
                if g.name == name {
                    exact = Some(g);
                    return true;
                }
                if g.name.eq_ignore_ascii_case(name) {
                    folded.push(g);
                }
                false
            },
        )
        .await?;
        Ok(exact.or_else(|| (folded.len() == 1).then(|| folded.remove(0))))
    }

    fn check_hold_off(&self) -> Result<(), LookupError> {
        match self.rate_limited() {
            Some(until) => Err(LookupError::RateLimited {
                message: "Okta rate limit reached (429); not asking Okta again before it resets"
                    .to_string(),
                until,
            }),
            None => Ok(()),
        }
    }

    /// Reads a paged list of groups from `first`, following `Link: rel="next"` on the org's
    /// origin under `prefix`, handing each group to `each` until it returns true.
    async fn pages(
        &self,
        first: &str,
        prefix: &str,
        deadline: Option<Instant>,
        what: &str,
        mut each: impl FnMut(OktaGroup) -> bool,
    ) -> Result<(), LookupError> {
        let mut url = first.to_string();
        for _ in 0..MAX_GROUP_PAGES {
            self.check_hold_off()?;
            let (status, headers, body) = self
                .get_limited(&url, deadline, MAX_OKTA_BODY_BYTES * 8)
                .await?;
            if status != StatusCode::OK {
                return Err(self.read_error(status, &headers, &body, what));
            }
            let list: Vec<Value> = serde_json::from_slice(&body).map_err(|e| {
                LookupError::Transient(format!("Okta's groups of {what} are not a JSON array: {e}"))
            })?;
            for g in list.iter().filter_map(group_from_json) {
                if each(g) {
                    return Ok(());
                }
            }
            match next_link(&headers, self.org_url(), prefix) {
                Some(next) => url = next,
                None => return Ok(()),
            }
        }
        tracing::warn!(
            what,
            pages = MAX_GROUP_PAGES,
            "stopped following Okta's group pages"
        );
        Ok(())
    }

    /// A read's answer other than 200 as an error.
    pub(super) fn read_error(
        &self,
        status: StatusCode,
        headers: &hyper::HeaderMap,
        body: &[u8],
        what: &str,
    ) -> LookupError {
        // Reading a group needs the groups scope; a user (and its groups), the users scope.
        let (scope, doing) = if what.starts_with("group") {
            ("okta.groups.read", "read groups")
        } else {
            ("okta.users.read", "read users")
        };
        let text = error_text(body);
        match status {
            StatusCode::NOT_FOUND if okta_error(body).0.as_deref() == Some("E0000007") => {
                LookupError::Permanent(format!("Okta has no {what} (404 {text})"))
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let until = rate_limit_until(headers, SystemTime::now());
                self.note_rate_limit(until);
                let left = until.duration_since(SystemTime::now()).unwrap_or_default();
                LookupError::RateLimited {
                    message: format!(
                        "Okta rate limit reached (429 {text}) reading {what}; it resets in {} s",
                        left.as_secs() + u64::from(left.subsec_nanos() > 0)
                    ),
                    until,
                }
            }
            StatusCode::UNAUTHORIZED => LookupError::Permanent(format!(
                "Okta rejected the {} (401 {text}): {}",
                self.auth.what(),
                self.auth.check_hint()
            )),
            StatusCode::FORBIDDEN => LookupError::Permanent(format!(
                "Okta refused to let the engine read {what} (403 {text}): {}",
                self.auth.permission_hint(scope, doing)
            )),
            s if s.is_server_error() => {
                LookupError::Transient(format!("Okta answered {s} ({text}) reading {what}"))
            }
            s => LookupError::Permanent(format!("Okta answered {s} ({text}) reading {what}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_put_ids_aside() {
        assert_eq!(
            bucket(
                &Method::POST,
                "https://o.okta.com/api/v1/users/00u1/lifecycle/suspend?x=1"
            ),
            "POST /api/v1/users/*/lifecycle/suspend"
        );
        assert_eq!(
            bucket(
                &Method::PUT,
                "http://127.0.0.1:9/api/v1/groups/00g1/users/00u2"
            ),
            "PUT /api/v1/groups/*/users/*"
        );
        assert_eq!(
            bucket(&Method::GET, "https://o/api/v1/groups?q=a"),
            "GET /api/v1/groups"
        );
    }

    #[test]
    fn error_text_has_code_summary_and_causes_and_is_bounded() {
        let body = br#"{"errorCode":"E0000001","errorSummary":"Api validation failed: login","errorCauses":[{"errorSummary":"login: already exists"}]}"#;
        assert_eq!(
            error_text(body),
            "E0000001: Api validation failed: login; login: already exists"
        );
        let long = format!(r#"{{"errorSummary":"{}"}}"#, "x".repeat(2000));
        assert!(error_text(long.as_bytes()).chars().count() <= MAX_ERROR_TEXT + 1);
        assert_eq!(error_text(b"oops"), "oops");
    }

    #[test]
    fn summaries_read_as_one_line() {
        let s = OpSummary {
            method: "POST".into(),
            path: "/api/v1/users/00u1/lifecycle/suspend".into(),
            status: 400,
            error_code: Some("E0000001".into()),
            note: Some("already SUSPENDED".into()),
        };
        assert_eq!(
            s.to_string(),
            "POST /api/v1/users/00u1/lifecycle/suspend → 400 E0000001 (already SUSPENDED)"
        );
    }
}
