//! `engine.toml`: loading, validation and the resolved configuration every command runs on.
//!
//! The file is read once. Unknown keys, bad values and (for `serve`) missing environment
//! variables are errors that name the key or variable and the line it is on. Relative paths are
//! resolved against the directory of the config file (or the working directory without one).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::script::{Limits, Senders};

/// Default address: loopback only, so a fresh install is not reachable from the network until
/// the admin puts a reverse proxy (HTTPS) in front of it or changes `listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default console (and admin API) address: loopback, and a port apart from the hooks' so that a
/// proxy exposing `listen` never exposes the console.
pub const DEFAULT_CONSOLE_LISTEN: &str = "127.0.0.1:8081";
/// Okta sends one delivery per request; real ones are a few KiB per event. 1 MiB leaves room for
/// large batches while bounding the memory one request can take.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Hard ceiling for `max_body_bytes`: a body is held in memory until it is committed.
pub const MAX_BODY_BYTES_CEILING: usize = 64 * 1024 * 1024;
/// How long history is kept unless configured.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// The hook served when the config declares none.
pub const DEFAULT_HOOK_ID: &str = "default";
/// The header Okta is usually configured to send.
pub const DEFAULT_AUTH_HEADER: &str = "Authorization";
/// `[store] cache_mb` unless configured: redb's page cache (read cache and write buffer). redb's
/// own default is 1 GiB, and every page a commit writes is moved into the read cache afterwards,
/// so the process kept a copy of every live page it wrote: RSS grew ~4.7 KB per delivery
/// (13.8 MB → 155 MB after 30,000 deliveries) towards 1 GiB. The hot set is small (the right
/// edges of the append-only tables, recent runs and mail); the OS page cache holds the rest of
/// the file, so a miss costs a `pread`, not a disk read.
pub const DEFAULT_STORE_CACHE_MB: usize = 16;
/// Highest `[store] cache_mb`: redb keeps the cache in memory, and 64 GiB is more than any host
/// this runs on should give it.
pub const STORE_CACHE_MB_CEILING: i64 = 64 * 1024;
/// Highest `[limits] max_memory_mb`: one run holding more than 16 GiB is a runaway, whatever the
/// machine.
pub const MAX_MEMORY_MB_CEILING: i64 = 16 * 1024;
/// `[limits] max_actions` at most: every action is a queue row written in the run's commit;
/// 10,000 per run is far past any automation and still one bounded transaction.
pub const MAX_ACTIONS_CEILING: i64 = 10_000;
/// Generated hook secrets are kept in the data dir as `<prefix><hook id>`.
pub const GENERATED_SECRET_PREFIX: &str = "hook-secret-";
/// The config file looked for in the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "engine.toml";

/// A configuration error: what is wrong, where, and a hint where one helps.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not UTF-8 TOML, or its TOML does not fit the schema (unknown key, wrong
    /// type): one line with the place, and a hint.
    #[error("{path}:{line}:{col}: {message}\n  hint: {hint}")]
    Toml {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
        hint: &'static str,
    },
    #[error("{path}:{line}: `{key}`: {message}{}", hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
        hint: Option<String>,
    },
    #[error("environment variable `{var}` (named by `{key}` at {path}:{line}) is not set{}", if *.empty { " or is empty" } else { "" })]
    MissingEnv {
        path: PathBuf,
        line: usize,
        key: String,
        var: String,
        empty: bool,
    },
}

/// A secret value; never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How the body of a hook's deliveries is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookKind {
    /// An Okta event-hook envelope with `data.events[]`.
    Okta,
    /// Any JSON body is one event.
    Generic,
}

/// Where a hook's secret comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// An environment variable named in the file (`secret_env`), with its place for errors.
    Env { var: String, line: usize },
    /// Generated on first start and kept under the data dir (the embedded `default` hook).
    Generated,
}

#[derive(Debug, Clone)]
pub struct HookConfig {
    pub id: String,
    pub kind: HookKind,
    /// Lower-case header name (HTTP header names are case-insensitive).
    pub auth_header: String,
    pub secret: SecretSource,
    pub capture: bool,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub url_env: String,
    pub url_env_line: usize,
    pub from: String,
    /// `allowed_from`: the other From addresses scripts may give `send_email` (bare addresses).
    pub allowed_from: Vec<String>,
    /// The first retry delay of a mail that failed transiently (doubled per attempt).
    pub retry_base_ms: u64,
}

/// Addresses in `[smtp] allowed_from`: a handful of team or bot senders; a long list means the
/// allow-list is not doing its job.
pub const MAX_ALLOWED_FROM: usize = 100;

/// Default first retry delay for mail: long enough not to hammer a server that is down.
pub const DEFAULT_MAIL_RETRY_BASE_MS: u64 = 30_000;

#[derive(Debug, Clone)]
pub struct OktaConfig {
    pub org_url: String,
    /// How the engine signs in to the Management API.
    pub auth: OktaAuth,
    /// System Log backfill (`backfill*` keys).
    pub backfill: BackfillConfig,
}

/// `[okta]`'s credentials: exactly one of `token_env` or `client_id` + `private_key_env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OktaAuth {
    /// `token_env`: an SSWS API token, sent as `Authorization: SSWS <token>`.
    Token { env: String, line: usize },
    /// An OAuth 2.0 service app (`client_id`, `private_key_env`: its PEM private key, RSA or
    /// EC; `scopes`): `private_key_jwt` client credentials, `Authorization: Bearer <token>`.
    ServiceApp {
        client_id: String,
        private_key_env: String,
        line: usize,
        scopes: Vec<String>,
    },
}

/// `[okta]`'s credentials with the secret read from its variable.
#[derive(Debug, Clone)]
pub enum OktaCredentials {
    Token(Secret),
    ServiceApp {
        client_id: String,
        /// The PEM text of the private key.
        private_key: Secret,
        scopes: Vec<String>,
    },
}

/// Longest OAuth client id accepted (Okta's are 20 characters).
const MAX_CLIENT_ID_LEN: usize = 200;
/// Scopes one service app may ask for; Okta has a few dozen `okta.*` scopes in all.
const MAX_OKTA_SCOPES: usize = 64;

/// `[okta] backfill*`: polling the System Log for events no delivery brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillConfig {
    /// `backfill`: whether `engine serve` polls.
    pub enabled: bool,
    /// `backfill_hook`: the hook whose scripts receive backfilled events (`None`: not given and
    /// not derivable, which `engine backfill` reports).
    pub hook: Option<String>,
    /// `backfill_lag_s`: events younger than this are left to the hook.
    pub lag_s: u64,
    /// `backfill_interval_s`: time between polls.
    pub interval_s: u64,
    /// `backfill_reserve_percent`: the share of the System Log rate limit left to other Okta
    /// clients; the poller pauses until the reset when fewer requests remain.
    pub reserve_percent: u64,
    /// `backfill_page_size`: events asked for per request (Okta's `limit`, at most 1000).
    pub page_size: u64,
}

/// Default `backfill_lag_s`: Okta delivers a hook within seconds; two minutes leaves it room.
pub const DEFAULT_BACKFILL_LAG_S: u64 = 120;
/// Default `backfill_interval_s`.
pub const DEFAULT_BACKFILL_INTERVAL_S: u64 = 60;
/// Default `backfill_reserve_percent`: half of the System Log budget stays with other clients.
pub const DEFAULT_BACKFILL_RESERVE_PERCENT: u64 = 50;
/// Default and largest `backfill_page_size` (Okta's maximum `limit` for `/api/v1/logs`).
pub const MAX_BACKFILL_PAGE_SIZE: u64 = 1000;

impl Default for BackfillConfig {
    fn default() -> Self {
        BackfillConfig {
            enabled: false,
            hook: None,
            lag_s: DEFAULT_BACKFILL_LAG_S,
            interval_s: DEFAULT_BACKFILL_INTERVAL_S,
            reserve_percent: DEFAULT_BACKFILL_RESERVE_PERCENT,
            page_size: MAX_BACKFILL_PAGE_SIZE,
        }
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (`None`: embedded defaults).
    pub source: Option<PathBuf>,
    pub listen: SocketAddr,
    /// The web console and admin API (`None`: `console_listen = ""`, both off).
    pub console_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub scripts_dir: PathBuf,
    pub stdlib_dir: PathBuf,
    pub max_body_bytes: usize,
    pub retention_days: u32,
    pub hooks: Vec<HookConfig>,
    pub smtp: Option<SmtpConfig>,
    pub okta: Option<OktaConfig>,
    pub directory: Option<PathBuf>,
    /// `[limits]`: the script layer's own type, so its defaults live in one place.
    pub limits: Limits,
    /// `[store] cache_mb`, in bytes.
    pub store_cache_bytes: usize,
    /// `[endpoint.NAME]`: the HTTP destinations scripts may call by name, sorted by name.
    pub endpoints: Vec<EndpointConfig>,
}

/// Default `[endpoint.NAME] timeout_ms`: a webhook answers in well under a second; ten leaves
/// room for a slow one without holding a slot for long.
pub const DEFAULT_ENDPOINT_TIMEOUT_MS: u64 = 10_000;
/// Default `[endpoint.NAME] retry_base_ms`: the first retry of a failed request, doubled per
/// attempt (with jitter) up to an hour.
pub const DEFAULT_ENDPOINT_RETRY_BASE_MS: u64 = 2_000;
/// Highest `timeout_ms` of an endpoint: an attempt holds an executor slot this long at most.
pub const MAX_ENDPOINT_TIMEOUT_MS: i64 = 300_000;
/// Highest `rate_per_s`: above this a limit is no limit (the executor's slots bound it first).
pub const MAX_ENDPOINT_RATE_PER_S: f64 = 10_000.0;
/// Headers one endpoint may configure (`headers` and `headers_env` together).
pub const MAX_ENDPOINT_HEADERS: usize = 32;
/// Characters of a `json_env` field name: a JSON key a vendor documents (`routing_key`).
pub const MAX_JSON_ENV_FIELD_CHARS: usize = 100;
/// Longest endpoint name: it is written in scripts and shown in listings.
const MAX_ENDPOINT_NAME_LEN: usize = 64;

/// Where an endpoint's base URL comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointUrl {
    /// `url`: written in the file (checked when the config is read).
    Plain(String),
    /// `url_env`: a variable holding it (a secret, like Slack's webhook URLs; checked when read).
    Env { var: String, line: usize },
}

/// `[endpoint.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub name: String,
    pub url: EndpointUrl,
    /// `headers`: plain (non-secret) values, names as written.
    pub headers: Vec<(String, String)>,
    /// `headers_env`: header name → (variable, line).
    pub headers_env: Vec<(String, String, usize)>,
    /// `json_env`: top-level field of a JSON body → (variable, line): set by the engine on every
    /// request (a secret the far side wants in the body, like PagerDuty's `routing_key`).
    pub json_env: Vec<(String, String, usize)>,
    /// `rate_per_s`: at most this many requests a second (`None`: no limit).
    pub rate_per_s: Option<f64>,
    pub timeout_ms: u64,
    /// `retry_base_ms`: the first retry delay after a transient failure.
    pub retry_base_ms: u64,
    /// `ca_file`: PEM certificates trusted for this endpoint besides the public roots.
    pub ca_file: Option<PathBuf>,
    /// The line of its table header.
    pub line: usize,
}

impl EndpointConfig {
    /// The names of every header it configures, lower-case (a script's header may not
    /// override them).
    pub fn header_names(&self) -> Vec<String> {
        self.headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .chain(
                self.headers_env
                    .iter()
                    .map(|(n, _, _)| n.to_ascii_lowercase()),
            )
            .collect()
    }
}

/// An endpoint with its secrets read: the base URL and every header value.
#[derive(Clone)]
pub struct ResolvedEndpoint {
    pub config: EndpointConfig,
    pub url: url::Url,
    /// (name, value, secret): secret values came from `*_env`.
    pub headers: Vec<(String, Secret, bool)>,
    /// `json_env` read: (field, value).
    pub json_fields: Vec<(String, Secret)>,
}

impl fmt::Debug for ResolvedEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedEndpoint")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

/// Why a URL cannot be an endpoint's: `http://` only to hosts that cannot be on the internet.
pub fn check_endpoint_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err("not an http(s) URL with a host".to_string());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a URL with a user or password in it; put credentials in headers_env (e.g. Authorization)".to_string());
    }
    if url.fragment().is_some() {
        return Err("a URL with a #fragment".to_string());
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" => match internal_host(&url) {
            Some(_) => Ok(url),
            None => Err(format!(
                "http:// to `{}`, a host that may be on the internet: use https://, or http:// only for loopback (127.0.0.0/8, ::1, localhost), private (10/8, 172.16/12, 192.168/16, fc00::/7) or internal hosts (a name without a dot, or ending in .internal, .local, .lan, .home.arpa)",
                url.host_str().unwrap_or_default()
            )),
        },
        other => Err(format!(
            "scheme `{other}`: use https:// (or http:// for loopback, private and internal hosts)"
        )),
    }
}

/// Which kind of host plain HTTP is allowed to (`loopback`, `private`, `internal`), or `None`.
pub fn internal_host(url: &url::Url) -> Option<&'static str> {
    use std::net::IpAddr;
    let ip = |ip: IpAddr| -> Option<&'static str> {
        match ip {
            IpAddr::V4(v) if v.is_loopback() => Some("loopback"),
            IpAddr::V4(v) if v.is_private() || v.is_link_local() => Some("private"),
            IpAddr::V6(v) if v.is_loopback() => Some("loopback"),
            IpAddr::V6(v) if (v.segments()[0] & 0xfe00) == 0xfc00 => Some("private"),
            IpAddr::V6(v) if (v.segments()[0] & 0xffc0) == 0xfe80 => Some("private"),
            _ => None,
        }
    };
    match url.host()? {
        url::Host::Ipv4(v) => ip(IpAddr::V4(v)),
        url::Host::Ipv6(v) => ip(IpAddr::V6(v)),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if d == "localhost" || d.ends_with(".localhost") {
                Some("loopback")
            } else if !d.contains('.')
                || [".internal", ".local", ".lan", ".home.arpa"]
                    .iter()
                    .any(|s| d.ends_with(s))
            {
                Some("internal")
            } else {
                None
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    console_listen: Option<Spanned<String>>,
    data_dir: Option<String>,
    scripts_dir: Option<String>,
    stdlib_dir: Option<String>,
    max_body_bytes: Option<Spanned<i64>>,
    retention_days: Option<Spanned<i64>>,
    #[serde(default)]
    hook: Vec<Spanned<RawHook>>,
    smtp: Option<RawSmtp>,
    okta: Option<RawOkta>,
    directory: Option<RawDirectory>,
    limits: Option<RawLimits>,
    store: Option<RawStore>,
    #[serde(default)]
    endpoint: BTreeMap<String, Spanned<RawEndpoint>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    url: Option<Spanned<String>>,
    url_env: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    headers_env: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    json_env: BTreeMap<String, Spanned<String>>,
    rate_per_s: Option<Spanned<RawNumber>>,
    timeout_ms: Option<Spanned<i64>>,
    retry_base_ms: Option<Spanned<i64>>,
    ca_file: Option<Spanned<String>>,
}

/// A TOML number, whole or not (`rate_per_s = 1` and `= 0.5`).
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum RawNumber {
    Int(i64),
    Float(f64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    cache_mb: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    id: Spanned<String>,
    kind: Option<HookKind>,
    auth_header: Option<Spanned<String>>,
    secret_env: Option<Spanned<String>>,
    capture: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    url_env: Spanned<String>,
    from: Spanned<String>,
    allowed_from: Option<Spanned<Vec<Spanned<String>>>>,
    retry_base_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOkta {
    org_url: Spanned<String>,
    token_env: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    private_key_env: Option<Spanned<String>>,
    scopes: Option<Spanned<Vec<String>>>,
    backfill: Option<Spanned<bool>>,
    backfill_hook: Option<Spanned<String>>,
    backfill_lag_s: Option<Spanned<i64>>,
    backfill_interval_s: Option<Spanned<i64>>,
    backfill_reserve_percent: Option<Spanned<i64>>,
    backfill_page_size: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    file: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_operations: Option<Spanned<i64>>,
    timeout_ms: Option<Spanned<i64>>,
    max_emails: Option<Spanned<i64>>,
    max_actions: Option<Spanned<i64>>,
    max_memory_mb: Option<Spanned<i64>>,
}

impl Config {
    /// The embedded defaults: what `engine serve` runs on without a config file.
    pub fn defaults(base: &Path) -> Config {
        Config {
            source: None,
            listen: DEFAULT_LISTEN.parse().expect("constant address parses"),
            console_listen: Some(
                DEFAULT_CONSOLE_LISTEN
                    .parse()
                    .expect("constant address parses"),
            ),
            data_dir: base.join("data"),
            scripts_dir: base.join("scripts"),
            stdlib_dir: base.join("stdlib"),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            retention_days: DEFAULT_RETENTION_DAYS,
            hooks: vec![HookConfig {
                id: DEFAULT_HOOK_ID.to_string(),
                kind: HookKind::Okta,
                auth_header: DEFAULT_AUTH_HEADER.to_ascii_lowercase(),
                secret: SecretSource::Generated,
                capture: true,
            }],
            smtp: None,
            okta: None,
            directory: None,
            limits: Limits::default(),
            store_cache_bytes: DEFAULT_STORE_CACHE_MB * 1024 * 1024,
            endpoints: Vec::new(),
        }
    }

    /// `--config PATH`, else `./engine.toml` if present, else the embedded defaults.
    pub fn discover(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        match explicit {
            Some(path) => Config::load(path),
            None => {
                let candidate = Path::new(DEFAULT_CONFIG_FILE);
                if candidate.is_file() {
                    Config::load(candidate)
                } else {
                    Ok(Config::defaults(Path::new(".")))
                }
            }
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            // The valid prefix is text, so the place of the first bad byte is computed on it.
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
            let (line, col) = line_col(&prefix, valid);
            ConfigError::Toml {
                path: path.to_path_buf(),
                line,
                col,
                message: "the file is not valid UTF-8".to_string(),
                hint: "save engine.toml as UTF-8 text",
            }
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // Syntax first, so a file that is not TOML and a key that does not fit are told apart.
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(toml_error(text, path, &e, false));
        }
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(text, path, &e, true))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut cfg = Config::defaults(base);
        cfg.source = Some(path.to_path_buf());
        let v = Validator { text, path };

        if let Some(listen) = raw.listen {
            cfg.listen = listen.get_ref().parse().map_err(|_| {
                v.invalid(
                    listen.span(),
                    "listen",
                    format!("`{}` is not an address with a port", listen.get_ref()),
                    Some("write it as \"127.0.0.1:8080\" or \"0.0.0.0:8080\""),
                )
            })?;
        }
        if let Some(listen) = raw.console_listen {
            let text = listen.get_ref().trim();
            cfg.console_listen = if text.is_empty() {
                None
            } else {
                Some(text.parse().map_err(|_| {
                    v.invalid(
                        listen.span(),
                        "console_listen",
                        format!("`{}` is not an address with a port", listen.get_ref()),
                        Some("write it as \"127.0.0.1:8081\", or \"\" to turn the console and admin API off"),
                    )
                })?)
            };
        }
        if let Some(d) = raw.data_dir {
            cfg.data_dir = base.join(d);
        }
        if let Some(d) = raw.scripts_dir {
            cfg.scripts_dir = base.join(d);
        }
        if let Some(d) = raw.stdlib_dir {
            cfg.stdlib_dir = base.join(d);
        }
        if let Some(n) = raw.max_body_bytes {
            cfg.max_body_bytes =
                v.range(&n, "max_body_bytes", 1024, MAX_BODY_BYTES_CEILING as i64)? as usize;
        }
        if let Some(n) = raw.retention_days {
            cfg.retention_days = v.range(&n, "retention_days", 1, 36_500)? as u32;
        }
        if !raw.hook.is_empty() {
            cfg.hooks.clear();
            let mut seen = HashSet::new();
            for hook in raw.hook {
                let span = hook.span();
                let hook = hook.into_inner();
                let id = hook.id.get_ref().clone();
                if id.is_empty()
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(v.invalid(
                        hook.id.span(),
                        "hook.id",
                        format!("`{id}` is not a valid hook id"),
                        Some("use letters, digits, `-`, `_` or `.`; it becomes the URL path /hooks/<id>"),
                    ));
                }
                if !seen.insert(id.clone()) {
                    return Err(v.invalid(
                        hook.id.span(),
                        "hook.id",
                        format!("hook id `{id}` is declared twice"),
                        Some("each [[hook]] needs its own id"),
                    ));
                }
                let auth_header = match &hook.auth_header {
                    Some(h) => {
                        let name = h.get_ref();
                        if name.is_empty()
                            || hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                        {
                            return Err(v.invalid(
                                h.span(),
                                "hook.auth_header",
                                format!("`{name}` is not a valid HTTP header name"),
                                Some("for example \"Authorization\" or \"X-Okta-Secret\""),
                            ));
                        }
                        name.to_ascii_lowercase()
                    }
                    None => DEFAULT_AUTH_HEADER.to_ascii_lowercase(),
                };
                let secret = match hook.secret_env {
                    Some(var) => SecretSource::Env {
                        var: v.env_name(&var, "hook.secret_env")?,
                        line: v.line(var.span()),
                    },
                    None => {
                        return Err(v.invalid(
                            span,
                            "hook.secret_env",
                            format!("hook `{id}` has no `secret_env`"),
                            Some("add secret_env = \"NAME\" naming the environment variable that holds the header value Okta sends; secrets never live in the file"),
                        ));
                    }
                };
                cfg.hooks.push(HookConfig {
                    id,
                    kind: hook.kind.unwrap_or(HookKind::Okta),
                    auth_header,
                    secret,
                    capture: hook.capture.unwrap_or(true),
                });
            }
        }
        if let Some(smtp) = raw.smtp {
            let from = smtp.from.get_ref();
            if !from.contains('@') || from.contains(['\r', '\n']) {
                return Err(v.invalid(
                    smtp.from.span(),
                    "smtp.from",
                    format!("`{from}` is not an email address"),
                    Some("for example \"automation@example.com\""),
                ));
            }
            let allowed_from = v.allowed_from(smtp.allowed_from.as_ref())?;
            cfg.smtp = Some(SmtpConfig {
                url_env: v.env_name(&smtp.url_env, "smtp.url_env")?,
                url_env_line: v.line(smtp.url_env.span()),
                from: from.clone(),
                allowed_from,
                retry_base_ms: match &smtp.retry_base_ms {
                    Some(n) => v.range(n, "smtp.retry_base_ms", 10, 3_600_000)? as u64,
                    None => DEFAULT_MAIL_RETRY_BASE_MS,
                },
            });
        }
        if let Some(okta) = raw.okta {
            let url = okta.org_url.get_ref();
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(v.invalid(
                    okta.org_url.span(),
                    "okta.org_url",
                    format!("`{url}` is not an http(s) URL"),
                    Some("for example \"https://example.okta.com\""),
                ));
            }
            let backfill = v.backfill(&okta, &cfg.hooks)?;
            let auth = v.okta_auth(&okta)?;
            cfg.okta = Some(OktaConfig {
                org_url: url.trim_end_matches('/').to_string(),
                auth,
                backfill,
            });
        }
        if let Some(dir) = raw.directory {
            cfg.directory = Some(base.join(dir.file));
        }
        if let Some(l) = raw.limits {
            if let Some(n) = l.max_operations {
                cfg.limits.max_operations =
                    v.range(&n, "limits.max_operations", 1, i64::MAX)? as u64;
            }
            if let Some(n) = l.timeout_ms {
                cfg.limits.timeout_ms = v.range(&n, "limits.timeout_ms", 1, 3_600_000)? as u64;
            }
            if let Some(n) = l.max_emails {
                cfg.limits.max_emails = v.range(&n, "limits.max_emails", 0, 10_000)? as usize;
            }
            if let Some(n) = l.max_actions {
                cfg.limits.max_actions =
                    v.range(&n, "limits.max_actions", 0, MAX_ACTIONS_CEILING)? as usize;
            }
            if let Some(n) = l.max_memory_mb {
                cfg.limits.max_memory_bytes =
                    v.range(&n, "limits.max_memory_mb", 1, MAX_MEMORY_MB_CEILING)? as usize
                        * 1024
                        * 1024;
            }
        }
        if let Some(st) = raw.store
            && let Some(n) = st.cache_mb
        {
            cfg.store_cache_bytes =
                v.range(&n, "store.cache_mb", 1, STORE_CACHE_MB_CEILING)? as usize * 1024 * 1024;
        }
        for (name, raw) in raw.endpoint {
            cfg.endpoints.push(v.endpoint(&name, raw, base)?);
        }
        Ok(cfg)
    }

    /// The From addresses a run's mails may use: `[smtp] from` (else the engine's default) and
    /// `[smtp] allowed_from`.
    pub fn senders(&self) -> Senders {
        match &self.smtp {
            Some(s) => Senders {
                default: s.from.clone(),
                allowed: s.allowed_from.clone(),
            },
            None => Senders::default(),
        }
    }

    pub fn hook(&self, id: &str) -> Option<&HookConfig> {
        self.hooks.iter().find(|h| h.id == id)
    }

    /// Registers every `*_env` secret this config names whose variable is set (missing ones are
    /// left: the command that needs one reports it), so that a command scrubs them from what it
    /// prints even when it does not use them.
    pub fn register_env_secrets(&self) {
        for hook in &self.hooks {
            if let SecretSource::Env { var, line } = &hook.secret {
                let _ = self.read_env(var, "hook.secret_env", *line);
            }
        }
        if let Some(s) = &self.smtp {
            let _ = self.read_env(&s.url_env, "smtp.url_env", s.url_env_line);
        }
        if let Some(o) = &self.okta {
            let _ = self.okta_credentials(o);
        }
        for e in &self.endpoints {
            let _ = self.resolve_endpoint(e);
        }
    }

    /// The endpoint named `name`.
    pub fn endpoint(&self, name: &str) -> Option<&EndpointConfig> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// An endpoint with its `url_env` and `headers_env` read (each value registered with
    /// [`crate::util::redact`]) and its URL checked. An error about a URL from the environment
    /// never shows the URL.
    pub fn resolve_endpoint(&self, e: &EndpointConfig) -> Result<ResolvedEndpoint, ConfigError> {
        let key = |k: &str| format!("endpoint.{}.{k}", e.name);
        let url = match &e.url {
            EndpointUrl::Plain(u) => {
                check_endpoint_url(u).map_err(|message| ConfigError::Invalid {
                    path: self.source.clone().unwrap_or_default(),
                    line: e.line,
                    key: key("url"),
                    message,
                    hint: None,
                })?
            }
            EndpointUrl::Env { var, line } => {
                let value = self.read_env(var, &key("url_env"), *line)?;
                check_endpoint_url(value.expose().trim()).map_err(|message| {
                    // The URL is a secret: say what is wrong with it, not what it is.
                    let message = crate::util::redact::scrub(&message).into_owned();
                    ConfigError::Invalid {
                        path: self.source.clone().unwrap_or_default(),
                        line: *line,
                        key: key("url_env"),
                        message: format!("the value of ${var} is {message}"),
                        hint: Some("set it to the endpoint's base URL, e.g. https://hooks.slack.com/services/…".to_string()),
                    }
                })?
            }
        };
        let mut headers: Vec<(String, Secret, bool)> = e
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), Secret::new(v.clone()), false))
            .collect();
        for (name, var, line) in &e.headers_env {
            let value = self.read_env(var, &key("headers_env"), *line)?;
            if hyper::header::HeaderValue::from_str(value.expose()).is_err() {
                return Err(ConfigError::Invalid {
                    path: self.source.clone().unwrap_or_default(),
                    line: *line,
                    key: key("headers_env"),
                    message: format!(
                        "the value of ${var} cannot be an HTTP header value (a line break or control character)"
                    ),
                    hint: None,
                });
            }
            headers.push((name.clone(), value, true));
        }
        let mut json_fields = Vec::new();
        for (field, var, line) in &e.json_env {
            json_fields.push((field.clone(), self.read_env(var, &key("json_env"), *line)?));
        }
        Ok(ResolvedEndpoint {
            config: e.clone(),
            url,
            headers,
            json_fields,
        })
    }

    /// The `[okta]` credentials, the secret read from its variable (and registered with
    /// [`crate::util::redact`], like every `*_env` value).
    pub fn okta_credentials(&self, o: &OktaConfig) -> Result<OktaCredentials, ConfigError> {
        match &o.auth {
            OktaAuth::Token { env, line } => Ok(OktaCredentials::Token(self.read_env(
                env,
                "okta.token_env",
                *line,
            )?)),
            OktaAuth::ServiceApp {
                client_id,
                private_key_env,
                line,
                scopes,
            } => {
                // The key is never sent anywhere (only signatures made with it): the whole PEM
                // is registered like every `*_env` value, not each of its lines.
                let key = self.read_env(private_key_env, "okta.private_key_env", *line)?;
                Ok(OktaCredentials::ServiceApp {
                    client_id: client_id.clone(),
                    private_key: key,
                    scopes: scopes.clone(),
                })
            }
        }
    }

    /// The file that holds a generated hook secret.
    pub fn generated_secret_path(&self, hook_id: &str) -> PathBuf {
        self.data_dir
            .join(format!("{GENERATED_SECRET_PREFIX}{hook_id}"))
    }

    /// Reads a `*_env` variable, naming it (and where it was configured) when it is missing.
    /// The one place `*_env` secrets enter: each value read is registered with
    /// [`crate::util::redact`], so no text recorded, logged or printed shows it.
    pub fn read_env(&self, var: &str, key: &str, line: usize) -> Result<Secret, ConfigError> {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => {
                crate::util::redact::register(&v);
                Ok(Secret(v))
            }
            Ok(_) | Err(_) => Err(ConfigError::MissingEnv {
                path: self.source.clone().unwrap_or_default(),
                line,
                key: key.to_string(),
                var: var.to_string(),
                empty: std::env::var_os(var).is_some(),
            }),
        }
    }
}

/// The 1-based line and column (in characters) of byte `at` of `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// A `toml` error as one line: its place from the span, its message (without the snippet toml
/// would draw), and for schema errors (`schema`: the TOML parsed but does not fit) the key
/// written on that line.
fn toml_error(text: &str, path: &Path, e: &toml::de::Error, schema: bool) -> ConfigError {
    let at = e.span().map_or(0, |s| s.start);
    let (line, col) = line_col(text, at);
    let mut message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    // "invalid type: string, expected i64" does not say which key: the one on its line does.
    if schema
        && !message.starts_with("unknown field")
        && let Some(key) = text
            .lines()
            .nth(line - 1)
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim())
            .filter(|k| !k.is_empty() && !k.contains(char::is_whitespace))
    {
        message = format!("`{key}`: {message}");
    }
    let hint = if schema {
        schema_hint(&message)
    } else {
        syntax_hint(&message)
    };
    ConfigError::Toml {
        path: path.to_path_buf(),
        line,
        col,
        message,
        hint,
    }
}

/// What to do about a TOML syntax error.
fn syntax_hint(message: &str) -> &'static str {
    if message.contains("duplicate key") {
        "each key may appear only once in a table, and each [table] header only once"
    } else if message.contains("string") {
        "strings are written in double quotes and end on the same line: key = \"value\""
    } else if message.contains("expected `=`") {
        "write each setting as key = value, one per line"
    } else if message.contains("table") {
        "table headers stand on a line of their own: [smtp], or [[hook]] for each hook"
    } else {
        "engine.toml is TOML: one key = value per line, strings in double quotes, tables as [name]"
    }
}

/// What to do about TOML that parses but does not fit the schema.
fn schema_hint(message: &str) -> &'static str {
    if message.contains("unknown field") {
        "check the spelling: the message lists the keys this table accepts"
    } else if message.contains("unknown variant") {
        "use one of the values the message lists"
    } else if message.contains("missing field") {
        "add the key the message names"
    } else if message.contains("invalid type") {
        "numbers are written bare (30), strings in double quotes (\"x\"), flags as true or false"
    } else {
        "see the README for the keys engine.toml accepts"
    }
}

struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Validator<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|b| *b == b'\n').count() + 1
    }

    fn invalid(
        &self,
        span: Range<usize>,
        key: &str,
        message: String,
        hint: Option<&str>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: self.line(span),
            key: key.to_string(),
            message,
            hint: hint.map(str::to_string),
        }
    }

    fn range(&self, n: &Spanned<i64>, key: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
        let value = *n.get_ref();
        if value < min || value > max {
            return Err(self.invalid(
                n.span(),
                key,
                format!("{value} is out of range"),
                Some(&format!("use a whole number from {min} to {max}")),
            ));
        }
        Ok(value)
    }

    /// The `backfill*` keys of `[okta]`. `backfill_hook` must name a declared hook of kind
    /// `okta`; without it, the only such hook is taken (with backfill on, there must be one).
    fn backfill(
        &self,
        okta: &RawOkta,
        hooks: &[HookConfig],
    ) -> Result<BackfillConfig, ConfigError> {
        let mut b = BackfillConfig::default();
        if let Some(on) = &okta.backfill {
            b.enabled = *on.get_ref();
        }
        if let Some(n) = &okta.backfill_lag_s {
            b.lag_s = self.range(n, "okta.backfill_lag_s", 0, 86_400)? as u64;
        }
        if let Some(n) = &okta.backfill_interval_s {
            b.interval_s = self.range(n, "okta.backfill_interval_s", 1, 86_400)? as u64;
        }
        if let Some(n) = &okta.backfill_reserve_percent {
            b.reserve_percent = self.range(n, "okta.backfill_reserve_percent", 0, 90)? as u64;
        }
        if let Some(n) = &okta.backfill_page_size {
            b.page_size = self.range(
                n,
                "okta.backfill_page_size",
                1,
                MAX_BACKFILL_PAGE_SIZE as i64,
            )? as u64;
        }
        let okta_hooks: Vec<&HookConfig> =
            hooks.iter().filter(|h| h.kind == HookKind::Okta).collect();
        match &okta.backfill_hook {
            Some(id) => {
                let name = id.get_ref();
                match hooks.iter().find(|h| &h.id == name) {
                    Some(h) if h.kind == HookKind::Okta => b.hook = Some(name.clone()),
                    Some(_) => {
                        return Err(self.invalid(
                            id.span(),
                            "okta.backfill_hook",
                            format!("hook `{name}` is of kind generic; System Log events go to an okta hook"),
                            Some("name a [[hook]] with kind = \"okta\""),
                        ));
                    }
                    None => {
                        let ids: Vec<&str> = okta_hooks.iter().map(|h| h.id.as_str()).collect();
                        return Err(self.invalid(
                            id.span(),
                            "okta.backfill_hook",
                            format!("no [[hook]] has id `{name}`"),
                            Some(&format!(
                                "name one of the declared okta hooks: {}",
                                if ids.is_empty() {
                                    "(none)".to_string()
                                } else {
                                    ids.join(", ")
                                }
                            )),
                        ));
                    }
                }
            }
            None if okta_hooks.len() == 1 => b.hook = Some(okta_hooks[0].id.clone()),
            None => {
                if let Some(on) = okta.backfill.as_ref().filter(|on| *on.get_ref()) {
                    return Err(self.invalid(
                        on.span(),
                        "okta.backfill_hook",
                        format!(
                            "backfill is on but `backfill_hook` is not set, and there are {} okta hooks to choose from",
                            okta_hooks.len()
                        ),
                        Some("add backfill_hook = \"<hook id>\": the hook whose scripts receive backfilled events"),
                    ));
                }
            }
        }
        Ok(b)
    }

    /// `[okta]`'s credentials: `token_env`, or `client_id` + `private_key_env` + `scopes`.
    fn okta_auth(&self, okta: &RawOkta) -> Result<OktaAuth, ConfigError> {
        const BOTH: &str = "use one: token_env = \"OKTA_API_TOKEN\" (an SSWS API token), or client_id + private_key_env + scopes (an OAuth 2.0 service app, which Okta recommends)";
        match (&okta.token_env, &okta.client_id, &okta.private_key_env) {
            (Some(token), None, None) => {
                if let Some(scopes) = &okta.scopes {
                    return Err(self.invalid(
                        scopes.span(),
                        "okta.scopes",
                        "`scopes` is set with token_env, but an API token has no scopes (its admin's role decides)".to_string(),
                        Some("remove `scopes`, or use a service app: client_id + private_key_env instead of token_env"),
                    ));
                }
                Ok(OktaAuth::Token {
                    env: self.env_name(token, "okta.token_env")?,
                    line: self.line(token.span()),
                })
            }
            (Some(token), _, _) => Err(self.invalid(
                token.span(),
                "okta.token_env",
                "[okta] has both token_env and a service app (client_id/private_key_env)".to_string(),
                Some(BOTH),
            )),
            (None, Some(id), Some(key)) => {
                let client_id = id.get_ref().trim();
                if client_id.is_empty()
                    || client_id.len() > MAX_CLIENT_ID_LEN
                    || !client_id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(self.invalid(
                        id.span(),
                        "okta.client_id",
                        format!("`{client_id}` is not an OAuth client id"),
                        Some("the service app's Client ID from the Okta Admin Console (Applications > your app > General), e.g. \"0oa1b2c3d4e5f6g7h8i9\""),
                    ));
                }
                let Some(scopes) = &okta.scopes else {
                    return Err(self.invalid(
                        id.span(),
                        "okta.scopes",
                        "a service app needs `scopes`: the Okta API scopes granted to it".to_string(),
                        Some("e.g. scopes = [\"okta.users.read\", \"okta.users.manage\", \"okta.groups.manage\", \"okta.logs.read\"]: users.read for lookup_user, users.manage and groups.manage for okta:: actions, logs.read for backfill"),
                    ));
                };
                let list = scopes.get_ref();
                let bad = list.iter().find(|s| {
                    s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
                });
                if list.is_empty() || list.len() > MAX_OKTA_SCOPES || bad.is_some() {
                    return Err(self.invalid(
                        scopes.span(),
                        "okta.scopes",
                        match bad {
                            Some(b) => format!("`{b}` is not an OAuth scope"),
                            None => format!("give 1 to {MAX_OKTA_SCOPES} scopes"),
                        },
                        Some("scopes are names like \"okta.users.read\", one string each"),
                    ));
                }
                Ok(OktaAuth::ServiceApp {
                    client_id: client_id.to_string(),
                    private_key_env: self.env_name(key, "okta.private_key_env")?,
                    line: self.line(key.span()),
                    scopes: list.clone(),
                })
            }
            (None, Some(id), None) => Err(self.invalid(
                id.span(),
                "okta.private_key_env",
                "client_id is set but private_key_env is not".to_string(),
                Some("add private_key_env = \"OKTA_PRIVATE_KEY\": the variable holding the service app's PEM private key (RSA or EC)"),
            )),
            (None, None, Some(key)) => Err(self.invalid(
                key.span(),
                "okta.client_id",
                "private_key_env is set but client_id is not".to_string(),
                Some("add client_id = \"<the service app's Client ID>\""),
            )),
            (None, None, None) => Err(self.invalid(
                okta.org_url.span(),
                "okta.token_env",
                "[okta] has no credentials".to_string(),
                Some(BOTH),
            )),
        }
    }

    /// `[smtp] allowed_from`: bare addresses, at most [`MAX_ALLOWED_FROM`].
    fn allowed_from(
        &self,
        list: Option<&Spanned<Vec<Spanned<String>>>>,
    ) -> Result<Vec<String>, ConfigError> {
        const KEY: &str = "smtp.allowed_from";
        let Some(list) = list else {
            return Ok(Vec::new());
        };
        if list.get_ref().len() > MAX_ALLOWED_FROM {
            return Err(self.invalid(
                list.span(),
                KEY,
                format!(
                    "{} addresses, at most {MAX_ALLOWED_FROM}",
                    list.get_ref().len()
                ),
                None,
            ));
        }
        let mut out = Vec::new();
        for entry in list.get_ref() {
            let a = entry.get_ref();
            match crate::script::parse_mailbox(a) {
                Ok(m) if m.name.is_none() => out.push(m.address),
                Ok(m) => {
                    return Err(self.invalid(
                        entry.span(),
                        KEY,
                        format!("`{a}` has a display name"),
                        Some(&format!(
                            "list the bare address (\"{}\"); a script may add a display name in send_email's `from`",
                            m.address
                        )),
                    ));
                }
                Err(e) => {
                    return Err(self.invalid(
                        entry.span(),
                        KEY,
                        format!("not an email address: {e}"),
                        Some("for example [\"security-bot@example.com\"]"),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// One `[endpoint.NAME]` table.
    fn endpoint(
        &self,
        name: &str,
        raw: Spanned<RawEndpoint>,
        base: &Path,
    ) -> Result<EndpointConfig, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let key = |k: &str| format!("endpoint.{name}.{k}");
        if name.is_empty()
            || name.len() > MAX_ENDPOINT_NAME_LEN
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return Err(self.invalid(
                span,
                &format!("endpoint.{name}"),
                format!("`{name}` is not a valid endpoint name"),
                Some(&format!("use up to {MAX_ENDPOINT_NAME_LEN} letters, digits, `-` or `_`: scripts call it as http_post(\"slack\", …)")),
            ));
        }
        let url = match (&raw.url, &raw.url_env) {
            (Some(u), None) => {
                check_endpoint_url(u.get_ref()).map_err(|m| {
                    self.invalid(
                        u.span(),
                        &key("url"),
                        format!("`{}` is {m}", u.get_ref()),
                        None,
                    )
                })?;
                EndpointUrl::Plain(u.get_ref().clone())
            }
            (None, Some(var)) => EndpointUrl::Env {
                var: self.env_name(var, &key("url_env"))?,
                line: self.line(var.span()),
            },
            (Some(u), Some(_)) => {
                return Err(self.invalid(
                    u.span(),
                    &key("url"),
                    "both `url` and `url_env` are set".to_string(),
                    Some("use one: url = \"https://…\", or url_env = \"VAR\" when the URL itself is a secret (Slack and Teams webhooks)"),
                ));
            }
            (None, None) => {
                return Err(self.invalid(
                    span,
                    &key("url"),
                    format!("[endpoint.{name}] has no `url` or `url_env`"),
                    Some("add url = \"https://…\", or url_env = \"VAR\" when the URL itself is a secret (Slack and Teams webhooks)"),
                ));
            }
        };
        let mut seen = HashSet::new();
        let mut check_name = |n: &str, span: Range<usize>, k: &str| -> Result<(), ConfigError> {
            let lower = n.to_ascii_lowercase();
            if hyper::header::HeaderName::from_bytes(n.as_bytes()).is_err() {
                return Err(self.invalid(
                    span,
                    &key(k),
                    format!("`{n}` is not a valid HTTP header name"),
                    None,
                ));
            }
            if crate::script::SCRIPT_RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(self.invalid(
                    span,
                    &key(k),
                    format!("header `{n}` is set by the engine itself"),
                    Some(&format!(
                        "these are not configurable: {}",
                        crate::script::SCRIPT_RESERVED_HEADERS.join(", ")
                    )),
                ));
            }
            if !seen.insert(lower) {
                return Err(self.invalid(
                    span,
                    &key(k),
                    format!("header `{n}` is configured twice (names are case-insensitive)"),
                    None,
                ));
            }
            Ok(())
        };
        let mut headers = Vec::new();
        for (n, value) in &raw.headers {
            check_name(n, value.span(), "headers")?;
            if hyper::header::HeaderValue::from_str(value.get_ref()).is_err() {
                return Err(self.invalid(
                    value.span(),
                    &key("headers"),
                    format!("the value of header `{n}` has a line break or control character"),
                    None,
                ));
            }
            headers.push((n.clone(), value.get_ref().clone()));
        }
        let mut headers_env = Vec::new();
        for (n, var) in &raw.headers_env {
            check_name(n, var.span(), "headers_env")?;
            headers_env.push((
                n.clone(),
                self.env_name(var, &key("headers_env"))?,
                self.line(var.span()),
            ));
        }
        let mut json_env = Vec::new();
        for (field, var) in &raw.json_env {
            if field.is_empty() || field.chars().count() > MAX_JSON_ENV_FIELD_CHARS {
                return Err(self.invalid(
                    var.span(),
                    &key("json_env"),
                    format!("the field name must have 1 to {MAX_JSON_ENV_FIELD_CHARS} characters"),
                    None,
                ));
            }
            json_env.push((
                field.clone(),
                self.env_name(var, &key("json_env"))?,
                self.line(var.span()),
            ));
        }
        if json_env.len() > MAX_ENDPOINT_HEADERS {
            return Err(self.invalid(
                span,
                &key("json_env"),
                format!("more than {MAX_ENDPOINT_HEADERS} fields"),
                None,
            ));
        }
        if headers.len() + headers_env.len() > MAX_ENDPOINT_HEADERS {
            return Err(self.invalid(
                span,
                &key("headers"),
                format!("more than {MAX_ENDPOINT_HEADERS} headers"),
                None,
            ));
        }
        let rate_per_s = match &raw.rate_per_s {
            None => None,
            Some(r) => {
                let value = match *r.get_ref() {
                    RawNumber::Int(i) => i as f64,
                    RawNumber::Float(f) => f,
                };
                if !(value > 0.0 && value <= MAX_ENDPOINT_RATE_PER_S) {
                    return Err(self.invalid(
                        r.span(),
                        &key("rate_per_s"),
                        format!("{value} is out of range"),
                        Some(&format!("requests per second: more than 0, at most {MAX_ENDPOINT_RATE_PER_S} (leave it out for no limit; 0.5 is one every 2 s)")),
                    ));
                }
                Some(value)
            }
        };
        let timeout_ms = match &raw.timeout_ms {
            Some(n) => self.range(n, &key("timeout_ms"), 1, MAX_ENDPOINT_TIMEOUT_MS)? as u64,
            None => DEFAULT_ENDPOINT_TIMEOUT_MS,
        };
        let retry_base_ms = match &raw.retry_base_ms {
            Some(n) => self.range(n, &key("retry_base_ms"), 10, 3_600_000)? as u64,
            None => DEFAULT_ENDPOINT_RETRY_BASE_MS,
        };
        let ca_file = raw.ca_file.as_ref().map(|f| base.join(f.get_ref()));
        Ok(EndpointConfig {
            name: name.to_string(),
            url,
            headers,
            headers_env,
            json_env,
            rate_per_s,
            timeout_ms,
            retry_base_ms,
            ca_file,
            line: self.line(span),
        })
    }

    fn env_name(&self, name: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        let n = name.get_ref();
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(self.invalid(
                name.span(),
                key,
                format!("`{n}` is not an environment variable name"),
                Some("a `*_env` key names an environment variable, e.g. \"OKTA_HOOK_SECRET\"; it does not hold the secret itself"),
            ));
        }
        Ok(n.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_allowed_from_is_a_list_of_bare_addresses_named_by_key_and_line() {
        let path = Path::new("/etc/engine/engine.toml");
        let smtp = |extra: &str| {
            Config::parse(
                &format!(
                    "[smtp]\nurl_env = \"SMTP_URL\"\nfrom = \"Automation <automation@example.com>\"\n{extra}"
                ),
                path,
            )
        };
        let none = smtp("").expect("no allowed_from");
        assert_eq!(
            none.senders(),
            Senders::only("Automation <automation@example.com>")
        );
        let c = smtp("allowed_from = [\"security-bot@example.com\", \" ops@example.com \"]\n")
            .expect("allowed_from");
        let senders = c.senders();
        assert_eq!(
            senders.allowed,
            ["security-bot@example.com", "ops@example.com"]
        );
        assert!(senders.permits("automation@example.com"));
        assert!(senders.permits("ops@example.com"));
        assert!(!senders.permits("ceo@example.com"));
        assert_eq!(
            Config::parse("", path).expect("defaults").senders(),
            Senders::default()
        );

        for (list, line, says) in [
            (
                "allowed_from = [\n  \"ok@example.com\",\n  \"not an address\",\n]\n",
                6,
                "not an email address",
            ),
            (
                "allowed_from = [\"Bot <bot@example.com>\"]\n",
                4,
                "has a display name",
            ),
            (
                "allowed_from = [\"a@b.com\\r\\nBcc: x@y.com\"]\n",
                4,
                "line break",
            ),
        ] {
            let e = smtp(list).expect_err(list).to_string();
            assert!(
                e.contains(&format!("engine.toml:{line}: `smtp.allowed_from`")),
                "{list}: {e}"
            );
            assert!(e.contains(says), "{list}: {e}");
        }
        let e = smtp("allowed_from = \"bot@example.com\"\n").expect_err("not a list");
        assert!(e.to_string().contains("allowed_from"), "{e}");
        let many: Vec<String> = (0..=MAX_ALLOWED_FROM)
            .map(|i| format!("\"b{i}@example.com\""))
            .collect();
        let e = smtp(&format!("allowed_from = [{}]\n", many.join(", "))).expect_err("too many");
        assert!(e.to_string().contains("at most 100"), "{e}");
    }

    #[test]
    fn limits_max_actions_defaults_to_100_and_is_bounded() {
        let path = Path::new("/etc/engine/engine.toml");
        assert_eq!(
            Config::parse("", path)
                .expect("defaults")
                .limits
                .max_actions,
            100
        );
        let c = Config::parse("[limits]\nmax_actions = 7\n", path).expect("max_actions");
        assert_eq!(c.limits.max_actions, 7);
        for bad in ["-1", "10001"] {
            let e = Config::parse(&format!("[limits]\nmax_actions = {bad}\n"), path)
                .expect_err(bad)
                .to_string();
            assert!(e.contains(":2: `limits.max_actions`"), "{e}");
        }
    }

    #[test]
    fn store_cache_mb_sets_the_page_cache_and_defaults_to_16_mib() {
        let path = Path::new("/etc/engine/engine.toml");
        let default = Config::parse("", path).expect("empty config");
        assert_eq!(default.store_cache_bytes, 16 * 1024 * 1024);
        let set = Config::parse("[store]\ncache_mb = 64\n", path).expect("cache_mb");
        assert_eq!(set.store_cache_bytes, 64 * 1024 * 1024);
        let err = Config::parse("[store]\ncache_mb = 100000\n", path).expect_err("too large");
        assert!(err.to_string().contains("store.cache_mb"), "{err}");
    }

    #[test]
    fn okta_takes_exactly_one_kind_of_credentials() {
        let path = Path::new("/etc/engine/engine.toml");
        let okta = |body: &str| {
            Config::parse(
                &format!("[okta]\norg_url = \"https://o.okta.com\"\n{body}"),
                path,
            )
        };
        let token = okta("token_env = \"T\"\n").expect("token");
        assert_eq!(
            token.okta.expect("okta").auth,
            OktaAuth::Token {
                env: "T".into(),
                line: 3
            }
        );
        let app = okta(
            "client_id = \"0oa1\"\nprivate_key_env = \"K\"\nscopes = [\"okta.users.manage\"]\n",
        )
        .expect("service app");
        assert_eq!(
            app.okta.expect("okta").auth,
            OktaAuth::ServiceApp {
                client_id: "0oa1".into(),
                private_key_env: "K".into(),
                line: 4,
                scopes: vec!["okta.users.manage".into()]
            }
        );
        for (body, key, says) in [
            ("", "okta.token_env", "no credentials"),
            (
                "token_env = \"T\"\nclient_id = \"0oa1\"\n",
                "okta.token_env",
                "both",
            ),
            (
                "client_id = \"0oa1\"\n",
                "okta.private_key_env",
                "private_key_env is not",
            ),
            (
                "private_key_env = \"K\"\n",
                "okta.client_id",
                "client_id is not",
            ),
            (
                "client_id = \"0oa1\"\nprivate_key_env = \"K\"\n",
                "okta.scopes",
                "needs `scopes`",
            ),
            (
                "client_id = \"0oa1\"\nprivate_key_env = \"K\"\nscopes = []\n",
                "okta.scopes",
                "give 1",
            ),
            (
                "client_id = \"0oa1\"\nprivate_key_env = \"K\"\nscopes = [\"a b\"]\n",
                "okta.scopes",
                "not an OAuth scope",
            ),
            (
                "client_id = \"a b\"\nprivate_key_env = \"K\"\nscopes = [\"s\"]\n",
                "okta.client_id",
                "not an OAuth client id",
            ),
            (
                "token_env = \"T\"\nscopes = [\"s\"]\n",
                "okta.scopes",
                "no scopes",
            ),
        ] {
            let err = okta(body).expect_err(body).to_string();
            assert!(err.contains(key) && err.contains(says), "{body:?}: {err}");
        }
    }

    #[test]
    fn endpoint_urls_are_https_or_http_to_hosts_off_the_internet() {
        for ok in [
            "https://hooks.slack.com/services/x",
            "http://127.0.0.1:8080/x",
            "http://[::1]/x",
            "http://10.1.2.3/",
            "http://192.168.0.5/",
            "http://172.20.0.1/",
            "http://localhost:9000/",
            "http://alertmanager:9093/api",
            "http://pd.corp.internal/",
            "https://prod-01.westus.logic.azure.com/workflows/x?api-version=1&sig=y",
        ] {
            assert!(
                check_endpoint_url(ok).is_ok(),
                "{ok}: {:?}",
                check_endpoint_url(ok)
            );
        }
        for (bad, says) in [
            ("http://example.com/", "may be on the internet"),
            ("http://8.8.8.8/", "may be on the internet"),
            ("http://172.32.0.1/", "may be on the internet"),
            ("ftp://10.0.0.1/", "scheme `ftp`"),
            ("https://user:pw@a.example/", "user or password"),
            ("https://a.example/#x", "fragment"),
            ("not a url", "not a URL"),
        ] {
            let e = check_endpoint_url(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn an_endpoint_url_from_the_environment_is_checked_and_not_shown() {
        let path = Path::new("/etc/engine/engine.toml");
        let var = "ENGINE_UNIT_TEST_ENDPOINT_URL";
        let cfg = Config::parse(&format!("[endpoint.slack]\nurl_env = \"{var}\"\n"), path)
            .expect("config");
        let e = &cfg.endpoints[0];
        // SAFETY: this test alone uses this variable.
        unsafe { std::env::set_var(var, "http://public.example/secret-path-771") };
        let err = cfg
            .resolve_endpoint(e)
            .expect_err("plain http to the internet")
            .to_string();
        assert!(
            err.contains("endpoint.slack.url_env") && err.contains("engine.toml:2"),
            "{err}"
        );
        assert!(!err.contains("secret-path-771"), "{err}");
        unsafe { std::env::set_var(var, "https://hooks.slack.com/services/secret-path-771") };
        let r = cfg.resolve_endpoint(e).expect("https");
        assert_eq!(r.url.path(), "/services/secret-path-771");
        assert!(!format!("{r:?}").contains("secret-path-771"));
        unsafe { std::env::remove_var(var) };
    }
}
