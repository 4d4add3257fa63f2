//! An Okta org stand-in for the `okta::` tests and benchmarks: a stateful Management API on
//! 127.0.0.1 (its own thread and tokio runtime), answering as Okta documents.
//!
//! - Users (`GET /api/v1/users/{id|login}`, lifecycle `suspend`/`unsuspend`/`deactivate`/
//!   `expire_password`, `DELETE /api/v1/users/{id}` (deactivates, or deletes a deactivated
//!   user, as Okta does), `DELETE …/sessions`, `POST /api/v1/users/{id}` partial profile update
//!   with a profile schema), groups (`GET /api/v1/groups?q=` name prefix, `GET
//!   /api/v1/groups/{id}`, `GET /api/v1/users/{id}/groups`, both lists paged by `limit`/`after`
//!   with `Link: <…>; rel="next"`, `PUT`/`DELETE /api/v1/groups/{gid}/users/{uid}`).
//! - Errors as Okta sends them: 404 `E0000007`, the 400 `E0000001` for suspending a user that
//!   is not active, 401 `E0000011`, 429 `E0000047` with `X-Rate-Limit-Limit/-Remaining/-Reset`
//!   on every answer (a window of `limit` requests per `window_s` per endpoint, like Okta's
//!   per-endpoint buckets), 5xx on demand.
//! - Credentials: an SSWS token, or OAuth: `POST /oauth2/v1/token` checks the client assertion
//!   (`private_key_jwt`): its signature with the test's public key, `aud`, `iss` = `sub` =
//!   client id, `exp` (no leeway; at most an hour ahead), a `jti` not seen before; then hands out
//!   Bearer tokens that expire after `expires_in` and can be revoked.
//!
//! Every request is logged (method, path, query, `Idempotency-Key`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

/// The SSWS token the stand-in accepts.
pub const ORG_TOKEN: &str = "00okta-standin-token-abc";
/// The OAuth client id it knows.
pub const CLIENT_ID: &str = "0oa1standinclient000";
/// Profile attributes the org's schema has (others: 400 E0000001).
const SCHEMA: &[&str] = &[
    "login",
    "email",
    "firstName",
    "lastName",
    "displayName",
    "title",
    "department",
    "costCenter",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    pub idempotency_key: Option<String>,
    pub status: u16,
}

#[derive(Clone)]
struct User {
    id: String,
    status: String,
    profile: serde_json::Map<String, Value>,
}

#[derive(Clone)]
struct Group {
    id: String,
    name: String,
    description: String,
    kind: String,
    members: BTreeSet<String>,
}

struct Window {
    used: u64,
    reset: u64,
}

/// What the token endpoint checks assertions with.
pub struct OAuth {
    pub key: jsonwebtoken::DecodingKey,
    pub algorithm: jsonwebtoken::Algorithm,
    pub expires_in: u64,
}

#[derive(Default)]
struct State {
    users: Vec<User>,
    groups: Vec<Group>,
    deleted: Vec<String>,
    log: Vec<Logged>,
    oauth: Option<OAuth>,
    tokens: HashMap<String, u64>,
    jtis: HashSet<String>,
    token_requests: u32,
    /// Seconds the stand-in's clock is ahead of the test's.
    clock_skew_s: u64,
    limit: u64,
    window_s: u64,
    windows: HashMap<String, Window>,
    /// (path, reset seconds ahead): the next request for that path gets a 429.
    force_429: Option<(String, u64)>,
    /// Paths whose next request gets a 503.
    force_503: HashSet<String>,
    page_size: usize,
    /// How long a change (any request but a GET) waits between being made and being answered.
    write_delay_ms: u64,
    /// `http://127.0.0.1:PORT`: the audience of assertions, the origin of `Link`s.
    origin: String,
}

pub struct OktaOrg {
    pub url: String,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

fn now_s(skew: u64) -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + skew
}

fn answer(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
        .expect("response")
}

fn error(status: StatusCode, code: &str, summary: &str, causes: &[&str]) -> Response<Full<Bytes>> {
    let causes: Vec<Value> = causes
        .iter()
        .map(|c| json!({ "errorSummary": c }))
        .collect();
    answer(
        status,
        json!({
            "errorCode": code, "errorSummary": summary, "errorLink": code,
            "errorId": "oae-standin", "errorCauses": causes
        }),
    )
}

fn not_found(what: &str) -> Response<Full<Bytes>> {
    error(
        StatusCode::NOT_FOUND,
        "E0000007",
        &format!("Not found: Resource not found: {what} (User)"),
        &[],
    )
}

fn user_json(u: &User) -> Value {
    json!({
        "id": u.id, "status": u.status, "created": "2024-01-02T03:04:05.000Z",
        "profile": u.profile, "_links": {}
    })
}

fn group_json(g: &Group) -> Value {
    json!({
        "id": g.id, "type": g.kind, "created": "2024-01-02T03:04:05.000Z",
        "profile": { "name": g.name, "description": g.description }, "_links": {}
    })
}

fn query_param(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

impl OktaOrg {
    /// An org with SSWS auth ([`ORG_TOKEN`]), 600 requests per endpoint per minute, pages of 200.
    pub fn start() -> OktaOrg {
        let state = Arc::new(Mutex::new(State {
            limit: 600,
            window_s: 60,
            page_size: 200,
            ..State::default()
        }));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("addr");
                shared.lock().expect("lock").origin = format!("http://{addr}");
                addr_tx.send(addr).expect("send");
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            return;
                        };
                        let state = Arc::clone(&shared);
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let state = Arc::clone(&state);
                                async move { Ok::<_, Infallible>(handle(req, &state).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stop_rx => {}
                }
            });
        });
        let addr = addr_rx.recv().expect("stand-in address");
        OktaOrg {
            url: format!("http://{addr}"),
            state,
            stop: Some(stop_tx),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().expect("lock"))
    }

    /// Adds a user (`id` must look like an Okta id: `00u` + 17 characters).
    pub fn add_user(&self, id: &str, login: &str, status: &str) {
        let mut profile = serde_json::Map::new();
        for (k, v) in [
            ("login", login),
            ("email", login),
            ("firstName", "Test"),
            ("lastName", id),
        ] {
            profile.insert(k.into(), v.into());
        }
        self.with(|s| {
            s.users.push(User {
                id: id.into(),
                status: status.into(),
                profile,
            })
        });
    }

    pub fn add_group(&self, id: &str, name: &str, members: &[&str]) {
        self.with(|s| {
            s.groups.push(Group {
                id: id.into(),
                name: name.into(),
                description: format!("{name} group"),
                kind: "OKTA_GROUP".into(),
                members: members.iter().map(|m| m.to_string()).collect(),
            })
        });
    }

    /// OAuth instead of (besides) SSWS: assertions checked with `oauth`.
    pub fn use_oauth(&self, oauth: OAuth) {
        self.with(|s| s.oauth = Some(oauth));
    }

    pub fn set_clock_skew(&self, seconds: u64) {
        self.with(|s| s.clock_skew_s = seconds);
    }

    /// `limit` requests per endpoint per `window_s`.
    pub fn set_rate_limit(&self, limit: u64, window_s: u64) {
        self.with(|s| {
            s.limit = limit;
            s.window_s = window_s;
            s.windows.clear();
        });
    }

    pub fn force_429(&self, path: &str, reset_ahead_s: u64) {
        self.with(|s| s.force_429 = Some((path.into(), reset_ahead_s)));
    }

    /// Each change is made at once and answered `ms` later (a slow org; a crash in between).
    pub fn set_write_delay(&self, ms: u64) {
        self.with(|s| s.write_delay_ms = ms);
    }

    pub fn force_503(&self, path: &str) {
        self.with(|s| {
            s.force_503.insert(path.into());
        });
    }

    pub fn set_page_size(&self, n: usize) {
        self.with(|s| s.page_size = n);
    }

    /// Every access token handed out stops working (as after a revocation).
    pub fn revoke_tokens(&self) {
        self.with(|s| s.tokens.clear());
    }

    pub fn log(&self) -> Vec<Logged> {
        self.with(|s| s.log.clone())
    }

    /// The logged requests other than GETs and token requests: the changes asked for.
    pub fn writes(&self) -> Vec<(String, String)> {
        self.log()
            .into_iter()
            .filter(|l| l.method != "GET" && !l.path.starts_with("/oauth2/"))
            .map(|l| (l.method, l.path))
            .collect()
    }

    pub fn clear_log(&self) {
        self.with(|s| s.log.clear());
    }

    pub fn status_of(&self, id: &str) -> Option<String> {
        self.with(|s| {
            s.users
                .iter()
                .find(|u| u.id == id)
                .map(|u| u.status.clone())
        })
    }

    pub fn profile_of(&self, id: &str) -> Option<serde_json::Map<String, Value>> {
        self.with(|s| {
            s.users
                .iter()
                .find(|u| u.id == id)
                .map(|u| u.profile.clone())
        })
    }

    pub fn members(&self, gid: &str) -> Vec<String> {
        self.with(|s| {
            s.groups
                .iter()
                .find(|g| g.id == gid)
                .map(|g| g.members.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    pub fn deleted(&self) -> Vec<String> {
        self.with(|s| s.deleted.clone())
    }

    pub fn token_requests(&self) -> u32 {
        self.with(|s| s.token_requests)
    }

    /// How many 429s it answered.
    pub fn rate_limited(&self) -> usize {
        self.log().iter().filter(|l| l.status == 429).count()
    }
}

impl Drop for OktaOrg {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The endpoint bucket of a path (ids as `*`).
fn bucket(method: &Method, path: &str) -> String {
    let mut out = String::new();
    let mut after = false;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        if after {
            out.push('*');
            after = false;
        } else {
            out.push_str(seg);
            after = matches!(seg, "users" | "groups");
        }
    }
    format!("{method} {out}")
}

async fn handle(req: Request<Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let auth = header("authorization");
    let idempotency_key = header("idempotency-key");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    // The lock is released before any wait (a guard held across an await is not Send).
    let (r, delay) = {
        let mut s = state.lock().expect("lock");
        let mut r = route(&mut s, &method, &path, &query, auth.as_deref(), &body);
        // A forced 429 carries its own headers.
        if !path.starts_with("/oauth2/")
            && r.status() != StatusCode::UNAUTHORIZED
            && r.status() != StatusCode::TOO_MANY_REQUESTS
        {
            rate_headers(&mut s, &method, &path, &mut r);
        }
        s.log.push(Logged {
            method: method.to_string(),
            path,
            query,
            idempotency_key,
            status: r.status().as_u16(),
        });
        let delay = if method == Method::GET {
            0
        } else {
            s.write_delay_ms
        };
        (r, delay)
    };
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    r
}

/// Counts the request in its endpoint's window, answers 429 past the limit, and puts the
/// `X-Rate-Limit-*` headers on the answer.
fn rate_headers(s: &mut State, method: &Method, path: &str, r: &mut Response<Full<Bytes>>) {
    let now = now_s(0);
    let (limit, window_s) = (s.limit, s.window_s);
    let w = s.windows.entry(bucket(method, path)).or_insert(Window {
        used: 0,
        reset: now + window_s,
    });
    if now >= w.reset {
        w.used = 0;
        w.reset = now + window_s;
    }
    w.used += 1;
    let (used, reset) = (w.used, w.reset);
    if used > limit {
        *r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "E0000047",
            "API call exceeded rate limit due to too many requests.",
            &[],
        );
    }
    let h = r.headers_mut();
    h.insert("x-rate-limit-limit", limit.to_string().parse().expect("v"));
    h.insert(
        "x-rate-limit-remaining",
        limit.saturating_sub(used).to_string().parse().expect("v"),
    );
    h.insert("x-rate-limit-reset", reset.to_string().parse().expect("v"));
}

fn authorized(s: &mut State, auth: Option<&str>) -> bool {
    let Some(auth) = auth else { return false };
    if auth == format!("SSWS {ORG_TOKEN}") {
        return s.oauth.is_none();
    }
    if let Some(token) = auth.strip_prefix("Bearer ") {
        let now = now_s(s.clock_skew_s);
        return s.tokens.get(token).is_some_and(|exp| *exp > now);
    }
    false
}

fn route(
    s: &mut State,
    method: &Method,
    path: &str,
    query: &str,
    auth: Option<&str>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    if path == "/oauth2/v1/token" && method == Method::POST {
        return token(s, body);
    }
    if !authorized(s, auth) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "E0000011",
            "Invalid token provided",
            &[],
        );
        r.headers_mut().insert(
            "www-authenticate",
            "Bearer authorization_uri=\"http://127.0.0.1/oauth2/v1/authorize\", realm=\"IdentityProvider\", scope=\"okta.users.manage\", error=\"invalid_token\", error_description=\"The token has expired.\", resource=\"/api/v1/users\""
                .parse()
                .expect("v"),
        );
        return r;
    }
    if let Some((p, ahead)) = s.force_429.clone()
        && p == path
    {
        s.force_429 = None;
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "E0000047",
            "API call exceeded rate limit due to too many requests.",
            &[],
        );
        let h = r.headers_mut();
        h.insert("x-rate-limit-limit", "600".parse().expect("v"));
        h.insert("x-rate-limit-remaining", "0".parse().expect("v"));
        h.insert(
            "x-rate-limit-reset",
            (now_s(0) + ahead).to_string().parse().expect("v"),
        );
        return r;
    }
    if s.force_503.remove(path) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "E0000009",
            "Internal Server Error",
            &[],
        );
    }
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let find_user = |s: &State, key: &str| {
        s.users.iter().position(|u| {
            u.id == key
                || u.profile
                    .get("login")
                    .and_then(|l| l.as_str())
                    .is_some_and(|l| l.eq_ignore_ascii_case(key))
        })
    };
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["api", "v1", "users", key]) => match find_user(s, key) {
            Some(i) => answer(StatusCode::OK, user_json(&s.users[i])),
            None => not_found(path),
        },
        (Method::POST, ["api", "v1", "users", key, "lifecycle", action]) => {
            let Some(i) = find_user(s, key) else {
                return not_found(path);
            };
            let u = &mut s.users[i];
            let (from, to, refusal): (&[&str], &str, &str) = match *action {
                "suspend" => (
                    &["ACTIVE"],
                    "SUSPENDED",
                    "Cannot suspend a user that is not active",
                ),
                "unsuspend" => (
                    &["SUSPENDED"],
                    "ACTIVE",
                    "Cannot unsuspend a user that is not suspended",
                ),
                "deactivate" => (
                    &[
                        "ACTIVE",
                        "STAGED",
                        "PROVISIONED",
                        "SUSPENDED",
                        "RECOVERY",
                        "LOCKED_OUT",
                        "PASSWORD_EXPIRED",
                    ],
                    "DEPROVISIONED",
                    "Cannot deactivate a user that is already deactivated",
                ),
                "expire_password" => (
                    &["ACTIVE", "PASSWORD_EXPIRED"],
                    "PASSWORD_EXPIRED",
                    "Cannot expire the password of a user that is not active",
                ),
                _ => return not_found(path),
            };
            if !from.contains(&u.status.as_str()) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "E0000001",
                    &format!("Api validation failed: {action}User"),
                    &[refusal],
                );
            }
            u.status = to.into();
            if *action == "expire_password" {
                answer(StatusCode::OK, user_json(u))
            } else {
                answer(StatusCode::OK, json!({}))
            }
        }
        (Method::DELETE, ["api", "v1", "users", key]) => {
            let Some(i) = find_user(s, key) else {
                return not_found(path);
            };
            if s.users[i].status == "DEPROVISIONED" {
                let u = s.users.remove(i);
                s.deleted.push(u.id);
            } else {
                s.users[i].status = "DEPROVISIONED".into();
            }
            empty(StatusCode::NO_CONTENT)
        }
        (Method::DELETE, ["api", "v1", "users", key, "sessions"]) => match find_user(s, key) {
            Some(_) => empty(StatusCode::NO_CONTENT),
            None => not_found(path),
        },
        (Method::POST, ["api", "v1", "users", key]) => {
            let Some(i) = find_user(s, key) else {
                return not_found(path);
            };
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "E0000003",
                    "The request body was not well-formed.",
                    &[],
                );
            };
            let Some(profile) = v["profile"].as_object() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "E0000001",
                    "Api validation failed: profile",
                    &["profile: required"],
                );
            };
            if let Some(bad) = profile.keys().find(|k| !SCHEMA.contains(&k.as_str())) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "E0000001",
                    "Api validation failed: newUser",
                    &[&format!(
                        "{bad}: Property name '{bad}' is not defined in profile"
                    )],
                );
            }
            let u = &mut s.users[i];
            for (k, v) in profile {
                u.profile.insert(k.clone(), v.clone());
            }
            answer(StatusCode::OK, user_json(u))
        }
        (Method::GET, ["api", "v1", "users", key, "groups"]) => {
            let Some(i) = find_user(s, key) else {
                return not_found(path);
            };
            let id = s.users[i].id.clone();
            let groups: Vec<Group> = s
                .groups
                .iter()
                .filter(|g| g.members.contains(&id))
                .cloned()
                .collect();
            page(s, path, query, groups)
        }
        (Method::GET, ["api", "v1", "groups"]) => {
            let q = query_param(query, "q").unwrap_or_default().to_lowercase();
            let groups: Vec<Group> = s
                .groups
                .iter()
                .filter(|g| g.name.to_lowercase().starts_with(&q))
                .cloned()
                .collect();
            page(s, path, query, groups)
        }
        (Method::GET, ["api", "v1", "groups", gid]) => match s.groups.iter().find(|g| g.id == *gid)
        {
            Some(g) => answer(StatusCode::OK, group_json(g)),
            None => not_found(path),
        },
        (m @ (Method::PUT | Method::DELETE), ["api", "v1", "groups", gid, "users", uid]) => {
            let user_exists = s.users.iter().any(|u| u.id == *uid);
            let Some(g) = s.groups.iter_mut().find(|g| g.id == *gid) else {
                return not_found(path);
            };
            if !user_exists {
                return not_found(path);
            }
            if m == Method::PUT {
                g.members.insert(uid.to_string());
            } else {
                g.members.remove(*uid);
            }
            empty(StatusCode::NO_CONTENT)
        }
        _ => not_found(path),
    }
}

/// One page of `items` from `after` (a group id), `limit` (at most the page size), with a
/// `Link` to the next page when there is one.
fn page(s: &State, path: &str, query: &str, items: Vec<Group>) -> Response<Full<Bytes>> {
    let limit = query_param(query, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(s.page_size)
        .min(s.page_size);
    let start = match query_param(query, "after") {
        Some(after) => items
            .iter()
            .position(|g| g.id == after)
            .map_or(items.len(), |i| i + 1),
        None => 0,
    };
    let slice: Vec<&Group> = items.iter().skip(start).take(limit).collect();
    let body = Value::Array(slice.iter().map(|g| group_json(g)).collect());
    let mut r = answer(StatusCode::OK, body);
    if start + slice.len() < items.len()
        && let Some(last) = slice.last()
    {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if k != "after" {
                next.append_pair(&k, &v);
            }
        }
        next.append_pair("after", &last.id);
        // Okta's links are absolute, on the org's own origin.
        let link = format!("<{}{path}?{}>; rel=\"next\"", s.origin, next.finish());
        r.headers_mut().append("link", link.parse().expect("v"));
    }
    let self_link = format!("<{}{path}?{query}>; rel=\"self\"", s.origin);
    r.headers_mut()
        .append("link", self_link.parse().expect("v"));
    r
}

fn token(s: &mut State, body: &[u8]) -> Response<Full<Bytes>> {
    s.token_requests += 1;
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let refuse = |status: StatusCode, error: &str, description: &str| {
        answer(
            status,
            json!({ "error": error, "error_description": description }),
        )
    };
    let Some(oauth) = &s.oauth else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed.",
        );
    };
    let expires_in = oauth.expires_in;
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The authorization grant type is not supported.",
        );
    }
    if form.get("client_assertion_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The client_assertion_type is invalid.",
        );
    }
    let scope = form.get("scope").cloned().unwrap_or_default();
    if scope.is_empty() || scope.split(' ').any(|sc| !sc.starts_with("okta.")) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "One or more scopes are not configured for the authorization server resource.",
        );
    }
    let Some(assertion) = form.get("client_assertion") else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed.",
        );
    };
    // The signature, aud, iss and sub first, without looking at time; then exp against the
    // stand-in's own clock, without leeway.
    let mut v = jsonwebtoken::Validation::new(oauth.algorithm);
    v.set_audience(&[format!("{}/oauth2/v1/token", s.origin)]);
    v.set_issuer(&[CLIENT_ID]);
    v.sub = Some(CLIENT_ID.to_string());
    v.validate_exp = false;
    v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    let claims = match jsonwebtoken::decode::<Value>(assertion, &oauth.key, &v) {
        Ok(d) => d.claims,
        Err(e) => {
            let description = match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => "The client_assertion signature is invalid.".to_string(),
                jsonwebtoken::errors::ErrorKind::InvalidAudience => "The audience claim for client_assertion must be the endpoint invoked for the request.".to_string(),
                jsonwebtoken::errors::ErrorKind::InvalidIssuer | jsonwebtoken::errors::ErrorKind::InvalidSubject => "The client_assertion token's iss and sub claims must be the client_id.".to_string(),
                other => format!("The client_assertion is invalid: {other:?}"),
            };
            return refuse(StatusCode::UNAUTHORIZED, "invalid_client", &description);
        }
    };
    let now = now_s(s.clock_skew_s);
    let exp = claims["exp"].as_u64().unwrap_or(0);
    if exp <= now {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The client_assertion token is expired.",
        );
    }
    if exp > now + 3600 {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The client_assertion token has an expiration too far into the future.",
        );
    }
    let jti = claims["jti"].as_str().unwrap_or_default().to_string();
    if jti.is_empty() || !s.jtis.insert(jti) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The client_assertion token has already been used.",
        );
    }
    let token = format!("eyJstandin.{}.{}", s.token_requests, now);
    s.tokens.insert(token.clone(), now + expires_in);
    answer(
        StatusCode::OK,
        json!({ "token_type": "Bearer", "expires_in": expires_in, "access_token": token, "scope": scope }),
    )
}
