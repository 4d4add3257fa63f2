//! `lookup_user`: users from the `[directory]` file and the Okta Users API, with a small cache.
//!
//! - [`Directory`]: a CSV (header row) or JSON array file, indexed by id (exact) and by login and
//!   email (case-insensitive). It is re-read when its modification time or length changes,
//!   checked at most every [`DIRECTORY_CHECK_INTERVAL`]; an edit that does not parse keeps the
//!   previous contents and logs the error with its line.
//! - [`OktaClient`]: `GET {org_url}/api/v1/users/{key}` with `Authorization: SSWS <token>`.
//!   200 → the user; 404 `E0000007` → `None`; 429 → [`LookupError::RateLimited`] at once with
//!   the reset (no wait inside the lookup; lookups before the reset fail without a request);
//!   5xx, timeouts and connection errors → [`LookupError::Transient`]; no answer by the caller's
//!   deadline → [`LookupError::OutOfTime`]; 401/403 → [`LookupError::Permanent`] with a hint.
//! - [`Lookup`]: the directory first, then Okta; Okta answers (found and not found) are cached.
//!   [`Lookup::lookup_blocking`] serves the synchronous Rhai host function, within the run's
//!   deadline.
//!
//! The API token is a `Secret`: it is in no `Debug` output and no error message.
//!
//! # User fields
//!
//! [`User`] has the SPEC's `lookup_user` fields. `profile` is the whole profile: for an Okta user
//! its `profile` object; for a directory row every column but `id` and `status` (so
//! `user.profile.costCenter` works the same for both sources).
//!
//! # Layout
//!
//! - `directory`: the `[directory]` file, indexed and re-read on change.
//! - `okta`: the one Okta Management API client (the Users API for `lookup_user`, rate limits,
//!   errors, the authenticated exchange every other part uses).
//! - `okta_auth`: its credentials: an SSWS token, or an OAuth 2.0 service app (a
//!   `private_key_jwt` client assertion for an access token, cached until shortly before expiry).
//! - `okta_ops`: the `okta::` actions ([`OktaClient::perform`] of an `OktaOp` → [`OpOutcome`])
//!   and reads (`user_groups`, `get_group`).
//! - `endpoints`: the `[endpoint.NAME]` destinations (one HTTPS client each, the request on the
//!   endpoint's origin with its configured headers, `rate_per_s`, `timeout_ms`, bounded
//!   answers), shared by `http_get` ([`EndpointHost`]) and the `http` executor.
//! - `system_log`: the System Log API (`/api/v1/logs` polling pages, `Link` next, the rate-limit
//!   budget), on the same client, for the backfill.
//! - this module: [`Lookup`] (directory first, then Okta, with a TTL cache) and [`LookupHost`],
//!   the script layer's `Host` on top of it.

mod directory;
pub mod endpoints;
mod okta;
mod okta_auth;
mod okta_ops;
mod system_log;

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};

use std::sync::Arc;

use crate::script::{GroupRef, Host, HostError, NO_OKTA, OktaGroup};

pub use directory::{
    DIRECTORY_CHECK_INTERVAL, Directory, MAX_DIRECTORY_BYTES, parse_csv_directory,
    parse_json_directory,
};
pub use endpoints::{EndpointError, EndpointHost, Endpoints};
pub use okta::{
    MAX_OKTA_BODY_BYTES, MAX_RATE_LIMIT_PAUSE, OKTA_CONNECT_TIMEOUT, OKTA_REQUEST_TIMEOUT,
    OktaClient,
};
pub use okta_auth::{ASSERTION_LIFETIME, TOKEN_PATH, TOKEN_REFRESH_MARGIN};
pub use okta_ops::{OpOutcome, OpSummary, RATE_LIMIT_RESERVE};
pub use system_log::{LOGS_PATH, LogError, LogPage, RateBudget};

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
    /// Worth retrying the run later (Okta down, 5xx, timeout, connection error).
    #[error("{0}")]
    Transient(String),
    /// Okta's rate limit (429): worth retrying from `until` (its reset) on, not before.
    #[error("{message}")]
    RateLimited { message: String, until: SystemTime },
    /// No answer by the caller's deadline (the run's time limit).
    #[error("{0}")]
    OutOfTime(String),
    /// Retrying will not help (bad token, bad org URL, unusable directory file).
    #[error("{0}")]
    Permanent(String),
}

/// The profile fields mapped onto [`User`]'s own fields (besides `id` and `status`).
pub(crate) const PROFILE_FIELDS: &[&str] = &[
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

pub(crate) fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Fills the named fields of a user from a profile map (which it keeps whole).
pub(crate) fn user_from_profile(
    id: String,
    status: Option<String>,
    profile: Map<String, Value>,
) -> User {
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

/// What `lookup_user` runs on.
pub struct Lookup {
    directory: Option<Directory>,
    okta: Option<Arc<OktaClient>>,
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
        okta: Option<Arc<OktaClient>>,
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
    /// changed) reads the file on the calling thread; directory files are small. An Okta request
    /// ends by `deadline` ([`LookupError::OutOfTime`]).
    pub async fn lookup(
        &self,
        key: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<User>, LookupError> {
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
        let found = okta.get_user(key, deadline).await?;
        self.remember(key, &found);
        Ok(found)
    }

    /// The Okta client, when `[okta]` is configured.
    pub fn okta(&self) -> Option<&Arc<OktaClient>> {
        self.okta.as_ref()
    }

    /// Runs an Okta read from synchronous code (a Rhai host function), like
    /// [`Lookup::lookup_blocking`].
    fn okta_blocking<T, F>(&self, read: impl FnOnce(Arc<OktaClient>) -> F) -> Result<T, LookupError>
    where
        F: std::future::Future<Output = Result<T, LookupError>>,
    {
        let (Some(okta), Some(h)) = (&self.okta, &self.handle) else {
            return Err(LookupError::Permanent(NO_OKTA.to_string()));
        };
        // It waits for Okta: work queued behind the run takes its compute slot meanwhile.
        crate::script::pool::blocking(|| h.block_on(read(okta.clone())))
    }

    /// [`Lookup::lookup`] for synchronous code: a Rhai host function on a `spawn_blocking`
    /// thread or another plain OS thread. Never call it from an async task (tokio panics when
    /// `block_on` runs inside the runtime's async context); use [`Lookup::lookup`] there.
    pub fn lookup_blocking(
        &self,
        key: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<User>, LookupError> {
        // Without Okta nothing awaits: no runtime needed.
        if self.okta.is_none() {
            let key = key.trim();
            return Ok(self.directory.as_ref().and_then(|d| d.find(key)));
        }
        match &self.handle {
            Some(h) => crate::script::pool::blocking(|| h.block_on(self.lookup(key, deadline))),
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

/// `lookup_user` for scripts: the `[directory]` file, then the Okta Users API.
pub struct LookupHost(pub Lookup);

impl From<LookupError> for HostError {
    fn from(e: LookupError) -> HostError {
        match e {
            LookupError::Transient(m) => HostError::transient(m),
            LookupError::RateLimited { message, until } => HostError::Transient {
                message,
                not_before: Some(until),
            },
            LookupError::OutOfTime(m) => HostError::OutOfTime(m),
            e @ LookupError::Permanent(_) => HostError::Permanent(e.to_string()),
        }
    }
}

impl Host for LookupHost {
    fn lookup_user(&self, key: &str, deadline: Option<Instant>) -> Result<Option<User>, HostError> {
        Ok(self.0.lookup_blocking(key, deadline)?)
    }

    fn okta_user_groups(
        &self,
        user: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<OktaGroup>, HostError> {
        Ok(self
            .0
            .okta_blocking(|o| async move { o.user_groups(user, deadline).await })?)
    }

    fn okta_get_group(
        &self,
        group: &GroupRef,
        deadline: Option<Instant>,
    ) -> Result<Option<OktaGroup>, HostError> {
        Ok(self
            .0
            .okta_blocking(|o| async move { o.get_group(group, deadline).await })?)
    }
}
