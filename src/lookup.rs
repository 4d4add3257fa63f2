//! `lookup_user`: users from the `[directory]` file and the Okta Users API, with a small cache.
//!
//! - [`Directory`]: a CSV (header row) or JSON array file, indexed by id (exact) and by login and
//!   email (case-insensitive). It is re-read when its modification time or length changes,
//!   checked at most every [`DIRECTORY_CHECK_INTERVAL`]; an edit that does not parse keeps the
//!   previous contents and logs the error with its line.
//! - [`OktaClient`]: `GET {org_url}/api/v1/users/{key}` with `Authorization: SSWS <token>`.
//!   200 → the user; 404 `E0000007` → `None`; 429 → waits for `X-Rate-Limit-Reset` when that is
//!   at most [`DEFAULT_MAX_RATE_LIMIT_WAIT`] away (else transient); 5xx, timeouts and connection
//!   errors → [`LookupError::Transient`]; 401/403 → [`LookupError::Permanent`] with a hint.
//! - [`Lookup`]: the directory first, then Okta; Okta answers (found and not found) are cached.
//!   [`Lookup::lookup_blocking`] serves the synchronous Rhai host function.
//!
//! The API token is a [`Secret`]: it is in no `Debug` output and no error message.
//!
//! # User fields
//!
//! [`User`] has the SPEC's `lookup_user` fields. `profile` is the whole profile: for an Okta user
//! its `profile` object; for a directory row every column but `id` and `status` (so
//! `user.profile.costCenter` works the same for both sources).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};

use crate::config::{OktaConfig, Secret};

/// How often (at most) a lookup checks whether the directory file changed: a stat per second is
/// free, and an edit is live within a second as for scripts.
pub const DIRECTORY_CHECK_INTERVAL: Duration = Duration::from_millis(1000);
/// Largest directory file read: it is held in memory whole; 64 MiB is ~200k users.
pub const MAX_DIRECTORY_BYTES: u64 = 64 * 1024 * 1024;
/// One Okta request (connect, TLS, answer) may take this long; Okta answers in ~100 ms, and a
/// script run has a wall-time limit of a few seconds.
pub const OKTA_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP connect timeout for Okta: a black-holed address fails fast instead of eating the run.
pub const OKTA_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest Okta answer read; a user object is a few KiB even with many custom attributes.
pub const MAX_OKTA_BODY_BYTES: usize = 1024 * 1024;
/// Longest wait for `X-Rate-Limit-Reset` done inside a lookup; a later reset fails the lookup as
/// transient instead, so the run is retried with backoff and does not hold its thread (Okta's
/// windows are one minute; a run's wall time is seconds).
pub const DEFAULT_MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(5);
/// A 429 without a usable `X-Rate-Limit-Reset` waits this long before the retry.
const RATE_LIMIT_FALLBACK_WAIT: Duration = Duration::from_secs(1);
/// Retries after a 429 within one lookup; more means the org is saturated: give up (transient).
pub const MAX_RATE_LIMIT_RETRIES: u32 = 2;
/// How long a found user is served from the cache: short, so profile edits show up quickly, yet
/// a burst of events about the same people costs one request each.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// How long "no such user" is cached: shorter, as a user may be created right after.
pub const DEFAULT_NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(10);
/// Cached answers kept at most (bounded memory: ~10k users × a few KiB).
pub const CACHE_MAX_ENTRIES: usize = 10_000;
/// Longest lookup key accepted; logins and emails are at most a few hundred characters.
const MAX_KEY_LEN: usize = 1024;

/// A user as `lookup_user` returns it: the script layer's type (camelCase like Okta's profile).
pub use crate::script::User;

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Worth retrying the run later (Okta down, 5xx, 429, timeout, connection error).
    #[error("{0}")]
    Transient(String),
    /// Retrying will not help (bad token, bad org URL, unusable directory file).
    #[error("{0}")]
    Permanent(String),
}

/// The profile fields mapped onto [`User`]'s own fields (besides `id` and `status`).
const PROFILE_FIELDS: &[&str] = &[
    "login",
    "email",
    "firstName",
    "lastName",
    "displayName",
    "managerId",
    "manager",
    "department",
    "title",
];

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Fills the named fields of a user from a profile map (which it keeps whole).
fn user_from_profile(id: String, status: Option<String>, profile: Map<String, Value>) -> User {
    let get = |k: &str| profile.get(k).and_then(scalar_string);
    User {
        id,
        status,
        login: get("login"),
        email: get("email"),
        first_name: get("firstName"),
        last_name: get("lastName"),
        display_name: get("displayName"),
        manager_id: get("managerId"),
        manager: get("manager"),
        department: get("department"),
        title: get("title"),
        profile,
        script_map: Default::default(),
    }
}

/// Maps an Okta user object (`{id, status, profile: {...}, ...}`) or a flat object with the
/// [`User`] keys (others → profile).
pub fn user_from_json(obj: &Map<String, Value>) -> Result<User, String> {
    let id = obj.get("id").and_then(scalar_string).unwrap_or_default();
    let status = obj.get("status").and_then(scalar_string);
    let profile = match obj.get("profile") {
        Some(Value::Object(p)) => p.clone(),
        Some(Value::Null) | None => {
            let mut p = obj.clone();
            p.remove("id");
            p.remove("status");
            p.remove("profile");
            p
        }
        Some(_) => return Err("`profile` is not an object".to_string()),
    };
    Ok(user_from_profile(id, status, profile))
}

// ---------------------------------------------------------------------------------------------
// Directory file

/// Users from the `[directory]` file, indexed, re-read when the file changes.
pub struct Directory {
    path: PathBuf,
    state: Mutex<DirState>,
}

struct DirState {
    index: Arc<Index>,
    /// (mtime, len) of the contents in `index`, or of the last broken version (not re-parsed).
    stamp: Option<(SystemTime, u64)>,
    last_check: Instant,
}

#[derive(Default)]
struct Index {
    users: Vec<User>,
    by_id: HashMap<String, usize>,
    /// Lower-cased login and email.
    by_name: HashMap<String, usize>,
}

impl Index {
    fn new(users: Vec<User>) -> Index {
        let mut by_id = HashMap::new();
        let mut by_name = HashMap::new();
        for (i, u) in users.iter().enumerate() {
            if !u.id.is_empty() {
                by_id.entry(u.id.clone()).or_insert(i);
            }
            for name in [&u.login, &u.email].into_iter().flatten() {
                by_name.entry(name.to_lowercase()).or_insert(i);
            }
        }
        Index {
            users,
            by_id,
            by_name,
        }
    }

    fn find(&self, key: &str) -> Option<&User> {
        self.by_id
            .get(key)
            .or_else(|| self.by_name.get(&key.to_lowercase()))
            .and_then(|&i| self.users.get(i))
    }
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("path", &self.path)
            .field("users", &self.len())
            .finish()
    }
}

impl Directory {
    /// Loads the file; a missing or broken file is a [`LookupError::Permanent`] naming the file
    /// and line (at startup this should stop the engine; later edits never do).
    pub fn load(path: impl Into<PathBuf>) -> Result<Directory, LookupError> {
        let path = path.into();
        let (users, stamp) = read_directory(&path).map_err(LookupError::Permanent)?;
        Ok(Directory {
            path,
            state: Mutex::new(DirState {
                index: Arc::new(Index::new(users)),
                stamp: Some(stamp),
                last_check: Instant::now(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of users currently loaded.
    pub fn len(&self) -> usize {
        self.current().users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The user whose id is `key`, or whose login or email is `key` ignoring case.
    pub fn find(&self, key: &str) -> Option<User> {
        self.current().find(key).cloned()
    }

    /// The current index, re-reading the file first if it changed (checked at most every
    /// [`DIRECTORY_CHECK_INTERVAL`]).
    fn current(&self) -> Arc<Index> {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if st.last_check.elapsed() >= DIRECTORY_CHECK_INTERVAL {
            st.last_check = Instant::now();
            self.refresh(&mut st);
        }
        Arc::clone(&st.index)
    }

    fn refresh(&self, st: &mut DirState) {
        let stamp = match file_stamp(&self.path) {
            Ok(s) => s,
            Err(e) => {
                if st.stamp.is_some() {
                    tracing::warn!(
                        "directory file {}: {e}; keeping the {} users loaded before",
                        self.path.display(),
                        st.index.users.len()
                    );
                    st.stamp = None;
                }
                return;
            }
        };
        if st.stamp == Some(stamp) {
            return;
        }
        st.stamp = Some(stamp);
        match read_directory(&self.path) {
            Ok((users, read_stamp)) => {
                st.stamp = Some(read_stamp);
                tracing::info!(
                    "directory file {} reloaded: {} users",
                    self.path.display(),
                    users.len()
                );
                st.index = Arc::new(Index::new(users));
            }
            Err(e) => tracing::warn!(
                "{e}; keeping the {} users loaded before",
                st.index.users.len()
            ),
        }
    }
}

fn file_stamp(path: &Path) -> Result<(SystemTime, u64), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
    Ok((mtime, meta.len()))
}

/// Reads and parses a directory file; errors name the file (and line where known).
fn read_directory(path: &Path) -> Result<(Vec<User>, (SystemTime, u64)), String> {
    let shown = path.display();
    let stamp = file_stamp(path).map_err(|e| format!("directory file {shown}: {e}"))?;
    if stamp.1 > MAX_DIRECTORY_BYTES {
        return Err(format!(
            "directory file {shown}: {} bytes is over the limit of {MAX_DIRECTORY_BYTES}",
            stamp.1
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("directory file {shown}: cannot read: {e}"))?;
    let is_json = match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("json") => true,
        Some(ext) if ext.eq_ignore_ascii_case("csv") => false,
        _ => text
            .trim_start_matches('\u{feff}')
            .trim_start()
            .starts_with('['),
    };
    let users = if is_json {
        parse_json_directory(&text)
    } else {
        parse_csv_directory(&text)
    }
    .map_err(|e| format!("directory file {shown}:{e}"))?;
    Ok((users, stamp))
}

/// Parses a JSON array of user objects. Errors start with `line: `.
pub fn parse_json_directory(text: &str) -> Result<Vec<User>, String> {
    let text = text.trim_start_matches('\u{feff}');
    let items: Vec<Value> = serde_json::from_str(text)
        .map_err(|e| format!("{}: {e} (expected a JSON array of user objects)", e.line()))?;
    let mut users = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let obj = item
            .as_object()
            .ok_or_else(|| format!("1: item {i} is not an object"))?;
        let u = user_from_json(obj).map_err(|e| format!("1: item {i}: {e}"))?;
        if u.id.is_empty() && u.login.is_none() && u.email.is_none() {
            return Err(format!("1: item {i} has none of id, login, email"));
        }
        users.push(u);
    }
    Ok(users)
}

/// Parses CSV with a header row (RFC 4180: `"` quotes, `""` inside quotes, newlines inside
/// quotes, CRLF or LF). Column names are matched exactly (`firstName`) or ignoring case and
/// `_`/`-`/spaces (`first_name`, `First Name`). Errors start with `line: `.
pub fn parse_csv_directory(text: &str) -> Result<Vec<User>, String> {
    let text = text.trim_start_matches('\u{feff}');
    let rows = parse_csv(text)?;
    let mut rows = rows.into_iter();
    let Some((_, header)) = rows.next() else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = header.iter().map(|h| canonical_column(h.trim())).collect();
    if !names
        .iter()
        .any(|n| n == "id" || n == "login" || n == "email")
    {
        return Err("1: the header row has none of the columns id, login, email".to_string());
    }
    let mut users = Vec::new();
    for (line, fields) in rows {
        if fields.len() == 1 && fields[0].trim().is_empty() {
            continue;
        }
        if fields.len() != names.len() {
            return Err(format!(
                "{line}: {} fields, but the header has {} columns",
                fields.len(),
                names.len()
            ));
        }
        let mut id = String::new();
        let mut status = None;
        let mut profile = Map::new();
        for (name, value) in names.iter().zip(fields) {
            if value.is_empty() {
                continue;
            }
            match name.as_str() {
                "id" => id = value,
                "status" => status = Some(value),
                _ => {
                    profile.insert(name.clone(), Value::String(value));
                }
            }
        }
        let u = user_from_profile(id, status, profile);
        if u.id.is_empty() && u.login.is_none() && u.email.is_none() {
            return Err(format!("{line}: the row has none of id, login, email"));
        }
        users.push(u);
    }
    Ok(users)
}

/// `first_name`, `First Name`, `FIRSTNAME` → `firstName`; other columns keep their name.
fn canonical_column(name: &str) -> String {
    let squashed: String = name
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    for known in ["id", "status"].iter().chain(PROFILE_FIELDS) {
        if known.to_lowercase() == squashed {
            return known.to_string();
        }
    }
    name.to_string()
}

/// Splits CSV text into records, each with the line it starts on (1-based).
fn parse_csv(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut start_line = 1;
    let mut in_quotes = false;
    let mut quoted_field = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !quoted_field => {
                in_quotes = true;
                quoted_field = true;
            }
            '"' => {
                return Err(format!(
                    "{line}: a `\"` inside an unquoted field (quote the whole field and double the `\"`)"
                ));
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                quoted_field = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                records.push((start_line, std::mem::take(&mut fields)));
                quoted_field = false;
                line += 1;
                start_line = line;
            }
            _ if quoted_field => {
                return Err(format!("{line}: text after the closing quote of a field"));
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(format!("{start_line}: a quoted field is never closed"));
    }
    if !field.is_empty() || !fields.is_empty() || quoted_field {
        fields.push(field);
        records.push((start_line, fields));
    }
    Ok(records)
}

// ---------------------------------------------------------------------------------------------
// Okta Users API

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A client for `GET /api/v1/users/{id-or-login}`.
pub struct OktaClient {
    org_url: String,
    token: Secret,
    client: HttpsClient,
    max_rate_limit_wait: Duration,
}

impl fmt::Debug for OktaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OktaClient")
            .field("org_url", &self.org_url)
            .field("token", &self.token)
            .finish()
    }
}

/// Characters left as they are in the user key path segment (RFC 3986 unreserved).
const KEY_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl OktaClient {
    /// `org_url` like `https://example.okta.com` (`http://` is accepted for tests and proxies).
    pub fn new(org_url: &str, token: Secret) -> Result<OktaClient, LookupError> {
        let org_url = org_url.trim_end_matches('/').to_string();
        if !(org_url.starts_with("https://") || org_url.starts_with("http://")) {
            return Err(LookupError::Permanent(format!(
                "okta.org_url `{org_url}` is not an http(s) URL"
            )));
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(OKTA_CONNECT_TIMEOUT));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| LookupError::Permanent(format!("TLS setup for Okta: {e}")))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(OktaClient {
            org_url,
            token,
            client,
            max_rate_limit_wait: DEFAULT_MAX_RATE_LIMIT_WAIT,
        })
    }

    /// From the `[okta]` section and the token read from its `token_env` variable.
    pub fn from_config(cfg: &OktaConfig, token: Secret) -> Result<OktaClient, LookupError> {
        OktaClient::new(&cfg.org_url, token)
    }

    /// Changes the longest `X-Rate-Limit-Reset` wait done in place (default
    /// [`DEFAULT_MAX_RATE_LIMIT_WAIT`]).
    pub fn with_max_rate_limit_wait(mut self, wait: Duration) -> OktaClient {
        self.max_rate_limit_wait = wait;
        self
    }

    pub fn org_url(&self) -> &str {
        &self.org_url
    }

    /// The user whose id or login is `key`; `Ok(None)` when Okta says there is none.
    pub async fn get_user(&self, key: &str) -> Result<Option<User>, LookupError> {
        let url = format!(
            "{}/api/v1/users/{}",
            self.org_url,
            percent_encoding::utf8_percent_encode(key, KEY_ESCAPE)
        );
        let mut rate_limited = 0;
        loop {
            let (status, headers, body) = self.get(&url).await?;
            match status {
                StatusCode::OK => {
                    let obj: Map<String, Value> = serde_json::from_slice(&body).map_err(|e| {
                        LookupError::Transient(format!(
                            "Okta answered 200 for user {key:?} with a body that is not a user object: {e}"
                        ))
                    })?;
                    return user_from_json(&obj)
                        .map(Some)
                        .map_err(|e| LookupError::Transient(format!("Okta user {key:?}: {e}")));
                }
                StatusCode::NOT_FOUND => {
                    if okta_error(&body).0.as_deref() == Some("E0000007") {
                        return Ok(None);
                    }
                    return Err(LookupError::Permanent(format!(
                        "Okta answered 404 without errorCode E0000007 for {url}; does okta.org_url point at an Okta org?"
                    )));
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    let wait = rate_limit_wait(&headers);
                    if rate_limited >= MAX_RATE_LIMIT_RETRIES || wait > self.max_rate_limit_wait {
                        return Err(LookupError::Transient(format!(
                            "Okta rate limit reached (429) looking up {key:?}; it resets in {} s",
                            wait.as_secs()
                        )));
                    }
                    rate_limited += 1;
                    tracing::info!(
                        "Okta rate limit reached (429); waiting {} ms for X-Rate-Limit-Reset",
                        wait.as_millis()
                    );
                    tokio::time::sleep(wait).await;
                }
                StatusCode::UNAUTHORIZED => {
                    return Err(LookupError::Permanent(format!(
                        "Okta rejected the API token (401{}): check that the variable named by okta.token_env holds a valid, active Okta API token",
                        okta_error_suffix(&body)
                    )));
                }
                StatusCode::FORBIDDEN => {
                    return Err(LookupError::Permanent(format!(
                        "Okta refused the request (403{}): the API token's admin needs permission to read users",
                        okta_error_suffix(&body)
                    )));
                }
                s if s.is_server_error() => {
                    return Err(LookupError::Transient(format!(
                        "Okta answered {s}{} looking up {key:?}",
                        okta_error_suffix(&body)
                    )));
                }
                s => {
                    return Err(LookupError::Permanent(format!(
                        "Okta answered {s}{} looking up {key:?}",
                        okta_error_suffix(&body)
                    )));
                }
            }
        }
    }

    async fn get(&self, url: &str) -> Result<(StatusCode, hyper::HeaderMap, Bytes), LookupError> {
        let mut auth = header::HeaderValue::try_from(format!("SSWS {}", self.token.expose()))
            .map_err(|_| {
                LookupError::Permanent(
                    "the Okta API token is not a valid header value (check okta.token_env)"
                        .to_string(),
                )
            })?;
        auth.set_sensitive(true);
        let request = Request::get(url)
            .header(header::AUTHORIZATION, auth)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("engine/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|_| {
                LookupError::Permanent(format!("cannot build the Okta request for {url}"))
            })?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                LookupError::Transient(format!(
                    "cannot reach Okta at {}: {}",
                    self.org_url,
                    chain(&e)
                ))
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_OKTA_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    LookupError::Transient(format!(
                        "reading Okta's answer from {}: {e}",
                        self.org_url
                    ))
                })?
                .to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        match tokio::time::timeout(OKTA_REQUEST_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err(LookupError::Transient(format!(
                "Okta at {} did not answer within {} s",
                self.org_url,
                OKTA_REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// An error and its sources on one line (hyper's top-level message alone says little).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `(errorCode, errorSummary)` of an Okta error body.
fn okta_error(body: &[u8]) -> (Option<String>, Option<String>) {
    match serde_json::from_slice::<Map<String, Value>>(body) {
        Ok(m) => (
            m.get("errorCode").and_then(scalar_string),
            m.get("errorSummary").and_then(scalar_string),
        ),
        Err(_) => (None, None),
    }
}

fn okta_error_suffix(body: &[u8]) -> String {
    match okta_error(body) {
        (Some(code), Some(summary)) => format!(" {code}: {summary}"),
        (Some(code), None) => format!(" {code}"),
        (None, Some(summary)) => format!(": {summary}"),
        (None, None) => String::new(),
    }
}

/// How long until `X-Rate-Limit-Reset` (UTC epoch seconds), rounded up to the next second.
fn rate_limit_wait(headers: &hyper::HeaderMap) -> Duration {
    let reset = headers
        .get("x-rate-limit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(reset) = reset else {
        return RATE_LIMIT_FALLBACK_WAIT;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(reset).saturating_sub(now)
}

// ---------------------------------------------------------------------------------------------
// Lookup: directory, then Okta, with a cache

/// What `lookup_user` runs on.
pub struct Lookup {
    directory: Option<Directory>,
    okta: Option<OktaClient>,
    cache: Mutex<HashMap<String, Cached>>,
    ttl: Duration,
    negative_ttl: Duration,
    handle: Option<tokio::runtime::Handle>,
    okta_requests: std::sync::atomic::AtomicU64,
}

struct Cached {
    expires: Instant,
    user: Option<User>,
}

impl fmt::Debug for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lookup")
            .field("directory", &self.directory)
            .field("okta", &self.okta)
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .finish()
    }
}

impl Lookup {
    /// With Okta, this must be called inside the tokio runtime: its handle is kept for
    /// [`Lookup::lookup_blocking`].
    pub fn new(
        directory: Option<Directory>,
        okta: Option<OktaClient>,
    ) -> Result<Lookup, LookupError> {
        let handle = tokio::runtime::Handle::try_current().ok();
        if okta.is_some() && handle.is_none() {
            return Err(LookupError::Permanent(
                "the Okta lookup must be created inside the tokio runtime".to_string(),
            ));
        }
        Ok(Lookup {
            directory,
            okta,
            cache: Mutex::new(HashMap::new()),
            ttl: DEFAULT_CACHE_TTL,
            negative_ttl: DEFAULT_NEGATIVE_CACHE_TTL,
            handle,
            okta_requests: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Cache lifetimes for found users and for "no such user" (zero: no caching).
    pub fn with_cache_ttl(mut self, found: Duration, not_found: Duration) -> Lookup {
        self.ttl = found;
        self.negative_ttl = not_found;
        self
    }

    pub fn directory(&self) -> Option<&Directory> {
        self.directory.as_ref()
    }

    /// Okta lookups done (cache misses that reached the API), for metrics.
    pub fn okta_requests(&self) -> u64 {
        self.okta_requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The directory first (always current), then Okta (cached). `Ok(None)`: no such user.
    /// A directory reload (at most once per [`DIRECTORY_CHECK_INTERVAL`], only after the file
    /// changed) reads the file on the calling thread; directory files are small.
    pub async fn lookup(&self, key: &str) -> Result<Option<User>, LookupError> {
        let key = key.trim();
        if key.is_empty() {
            return Ok(None);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(LookupError::Permanent(format!(
                "lookup_user: the key is {} bytes long (at most {MAX_KEY_LEN})",
                key.len()
            )));
        }
        if let Some(u) = self.directory.as_ref().and_then(|d| d.find(key)) {
            return Ok(Some(u));
        }
        let Some(okta) = &self.okta else {
            return Ok(None);
        };
        if let Some(hit) = self.cached(key) {
            return Ok(hit);
        }
        self.okta_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let found = okta.get_user(key).await?;
        self.remember(key, &found);
        Ok(found)
    }

    /// [`Lookup::lookup`] for synchronous code: a Rhai host function on a `spawn_blocking`
    /// thread or another plain OS thread. Never call it from an async task (tokio panics when
    /// `block_on` runs inside the runtime's async context); use [`Lookup::lookup`] there.
    pub fn lookup_blocking(&self, key: &str) -> Result<Option<User>, LookupError> {
        // Without Okta nothing awaits: no runtime needed.
        if self.okta.is_none() {
            let key = key.trim();
            return Ok(self.directory.as_ref().and_then(|d| d.find(key)));
        }
        match &self.handle {
            Some(h) => h.block_on(self.lookup(key)),
            None => Err(LookupError::Permanent(
                "the Okta lookup has no tokio runtime".to_string(),
            )),
        }
    }

    fn cached(&self, key: &str) -> Option<Option<User>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .filter(|c| c.expires > Instant::now())
            .map(|c| c.user.clone())
    }

    fn remember(&self, key: &str, user: &Option<User>) {
        let ttl = if user.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        };
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX_ENTRIES && !cache.contains_key(key) {
            cache.retain(|_, c| c.expires > now);
            if cache.len() >= CACHE_MAX_ENTRIES {
                // Still full of live entries: drop the one closest to expiry.
                let oldest = cache
                    .iter()
                    .min_by_key(|(_, c)| c.expires)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    cache.remove(&k);
                }
            }
        }
        cache.insert(
            key.to_string(),
            Cached {
                expires: now + ttl,
                user: user.clone(),
            },
        );
    }
}
