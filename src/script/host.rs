//! The host side of `lookup_user`: the `Host` trait, the `User` record and simple directories.

use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use rhai::{Dynamic, Map};
use serde::{Deserialize, Serialize};

use super::event::json_to_dynamic;
use super::http::{EndpointInfo, HttpAnswer, HttpRequest};
use super::okta_op::{GroupRef, OktaGroup};
use super::state::StateValue;

/// What the `okta::` reads answer when the engine has no `[okta]` section.
pub const NO_OKTA: &str = "this needs the Okta API: add [okta] with org_url and token_env (or client_id and private_key_env) to engine.toml";

/// What `http_get` answers when the host makes no HTTP reads.
pub const NO_HTTP: &str = "this host makes no HTTP requests";

/// A user as `lookup_user` returns it. Field names follow Okta's user profile (camelCase), so a
/// `[directory]` JSON file or an Okta profile deserializes into it directly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct User {
    pub id: String,
    pub status: Option<String>,
    pub login: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub display_name: Option<String>,
    pub manager_id: Option<String>,
    pub manager: Option<String>,
    pub department: Option<String>,
    pub title: Option<String>,
    /// The full profile, including custom attributes.
    pub profile: serde_json::Map<String, serde_json::Value>,
    /// The map `lookup_user` returns, built on the first lookup and shared by every clone of
    /// this user (directories and the lookup cache hand out clones). Build a new `User` rather
    /// than editing the fields of one that was looked up.
    #[serde(skip)]
    pub script_map: ScriptMap,
}

/// A lazily built, shared script value of a [`User`]. Never part of equality or output.
#[derive(Clone, Default)]
pub struct ScriptMap(Arc<OnceLock<Dynamic>>);

impl PartialEq for ScriptMap {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for ScriptMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptMap")
    }
}

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Worth retrying the run later (Okta API down, 5xx, 429, timeout). `not_before`: retrying
    /// before then is pointless (a rate limit's reset); the run's retry is not scheduled
    /// earlier.
    #[error("{message}")]
    Transient {
        message: String,
        not_before: Option<SystemTime>,
    },
    /// Retrying will not help (bad configuration, 4xx other than 404/429).
    #[error("{0}")]
    Permanent(String),
    /// The lookup did not finish before the deadline it was given (the run's): the run fails
    /// with its time limit.
    #[error("{0}")]
    OutOfTime(String),
}

impl HostError {
    /// A transient error with no known time to retry at.
    pub fn transient(message: impl Into<String>) -> HostError {
        HostError::Transient {
            message: message.into(),
            not_before: None,
        }
    }
}

/// What the script layer needs from the rest of the engine.
pub trait Host: Send + Sync {
    /// Finds a user by email, login or Okta user id. `Ok(None)`: no such user. Must return by
    /// `deadline` (the run's: its `timeout_ms`), with [`HostError::OutOfTime`] if it has no
    /// answer by then; `None`: no deadline.
    fn lookup_user(&self, key: &str, deadline: Option<Instant>) -> Result<Option<User>, HostError>;

    /// `okta::user_groups`: the groups of the user with this id or login, by `deadline`.
    /// Without the Okta API: [`HostError::Permanent`] ([`NO_OKTA`]).
    fn okta_user_groups(
        &self,
        _user: &str,
        _deadline: Option<Instant>,
    ) -> Result<Vec<OktaGroup>, HostError> {
        Err(HostError::Permanent(NO_OKTA.to_string()))
    }

    /// `okta::get_group`: the group with this id or exact name; `Ok(None)`: no such group.
    fn okta_get_group(
        &self,
        _group: &GroupRef,
        _deadline: Option<Instant>,
    ) -> Result<Option<OktaGroup>, HostError> {
        Err(HostError::Permanent(NO_OKTA.to_string()))
    }

    /// The run's "now" (ms since the Unix epoch), read once as a run starts: `now()`,
    /// `time::since`, `schedule(#{ in })` and TTLs count from it. Dry runs (`engine run`,
    /// `engine check`) give a fixed one, so their output is stable.
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// `state::get` and the first `state::incr` of a key in a run: the value `script` stored
    /// under `key` (expired or not: the run decides), with its version. Default: nothing stored
    /// (dry runs start from empty state).
    fn state_get(&self, _script: &str, _key: &str) -> Result<Option<StateValue>, HostError> {
        Ok(None)
    }

    /// `cancel_schedule`: whether `script` has a pending timer with this key.
    fn timer_pending(&self, _script: &str, _key: &str) -> Result<bool, HostError> {
        Ok(false)
    }

    /// The `[endpoint.NAME]` called `name`, or `None` when engine.toml declares none.
    fn endpoint(&self, _name: &str) -> Option<EndpointInfo> {
        None
    }

    /// Every declared endpoint's name (for did-you-mean).
    fn endpoint_names(&self) -> Vec<String> {
        Vec::new()
    }

    /// `http_get`: the request (relative to its endpoint) made now, answered by `deadline`.
    fn http_get(
        &self,
        _request: &HttpRequest,
        _deadline: Option<Instant>,
    ) -> Result<HttpAnswer, HostError> {
        Err(HostError::Permanent(NO_HTTP.to_string()))
    }
}

/// A directory with nobody in it: every lookup is `Ok(None)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDirectory;

impl Host for NoDirectory {
    fn lookup_user(&self, _key: &str, _: Option<Instant>) -> Result<Option<User>, HostError> {
        Ok(None)
    }
}

/// An in-memory directory: matches the key against `id` exactly and against `login` and `email`
/// ignoring ASCII case.
#[derive(Debug, Clone, Default)]
pub struct StaticDirectory {
    users: Vec<User>,
}

impl StaticDirectory {
    pub fn new(users: Vec<User>) -> Self {
        StaticDirectory { users }
    }

    pub fn users(&self) -> &[User] {
        &self.users
    }
}

impl Host for StaticDirectory {
    fn lookup_user(&self, key: &str, _: Option<Instant>) -> Result<Option<User>, HostError> {
        let eq = |v: &Option<String>| v.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(key));
        Ok(self
            .users
            .iter()
            .find(|u| u.id == key || eq(&u.login) || eq(&u.email))
            .cloned())
    }
}

fn opt(v: &Option<String>) -> Dynamic {
    match v {
        Some(s) => s.clone().into(),
        None => Dynamic::UNIT,
    }
}

/// The SPEC user map: `#{ id, status, login, email, firstName, lastName, displayName, managerId,
/// manager, department, title, profile }`, every key present (`()` when unknown). Built once per
/// user; each call returns a copy (scripts may change theirs).
pub fn user_to_dynamic(u: &User) -> Dynamic {
    u.script_map.0.get_or_init(|| build_user_map(u)).clone()
}

fn build_user_map(u: &User) -> Dynamic {
    let mut m = Map::new();
    m.insert("id".into(), u.id.clone().into());
    m.insert("status".into(), opt(&u.status));
    m.insert("login".into(), opt(&u.login));
    m.insert("email".into(), opt(&u.email));
    m.insert("firstName".into(), opt(&u.first_name));
    m.insert("lastName".into(), opt(&u.last_name));
    m.insert("displayName".into(), opt(&u.display_name));
    m.insert("managerId".into(), opt(&u.manager_id));
    m.insert("manager".into(), opt(&u.manager));
    m.insert("department".into(), opt(&u.department));
    m.insert("title".into(), opt(&u.title));
    let profile: Map = u
        .profile
        .iter()
        .map(|(k, v)| (k.as_str().into(), json_to_dynamic(v)))
        .collect();
    // `Dynamic::from_map`, not `.into()`: rhai's `From<BTreeMap>` rebuilds the map.
    m.insert("profile".into(), Dynamic::from_map(profile));
    Dynamic::from_map(m)
}
