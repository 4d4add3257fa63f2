//! The app: builds every part from the configuration once (each part gets its own settings, not
//! the whole `Config`), runs them side by side, and stops them in order: stop accepting, answer
//! requests in flight, finish runs and sends in flight, close the store.
//!
//! The only place that knows every part: the HTTP front door (`ingest`) learns of processing only
//! through the [`ingest::Admin`] and [`MetricsSource`] handles wired in here.

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::actions::mail::{self, MailError, Transport};
use crate::actions::{
    self, ActionCounts, ActionMetrics, HttpExecutor, MailSender, MailSettings, OktaExecutor,
};
use crate::authoring::samples::SAMPLES_DIR;
use crate::backfill::{self, Backfill};
use crate::config::{
    Config, ConfigError, GENERATED_SECRET_PREFIX, HookConfig, Secret, SecretSource,
};
use crate::console::{Authoring, Console, ConsoleSettings};
use crate::ingest::{
    self, AdminError, BackfillRequest, Front, ReplayRequest, ReplayTarget, SecretError,
    ServerLimits,
};
use crate::lookup::{
    Directory, EndpointError, EndpointHost, Endpoints, Lookup, LookupError, LookupHost, OktaClient,
};
use crate::process::{self, ActionWakers, DuePool, Processor, ReplayError};
use crate::reload::{self, Reloader};
use crate::script::{ActionKind, Host, LiveScripts, ScriptSet};
use crate::store::{CommitMode, DB_FILE, OpenError, Store};
use crate::util::prom::MetricsSource;
use crate::util::{fd_limit, private};

/// The file (in the data dir) where `serve` records the console's bound address, so that the
/// CLI's admin requests find it even when `console_listen` asks for port 0.
pub const CONSOLE_ADDRESS_FILE: &str = "console-address";

/// `addr` with an unspecified IP (`0.0.0.0`) replaced by loopback: an address to connect to.
pub fn loopback_if_unspecified(mut addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

/// The sender address when `[smtp]` is absent (mail goes to `.eml` files).
pub use crate::script::DEFAULT_FROM;

/// Why the app could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error("[smtp]: {0}")]
    Mail(MailError),
    #[error("lookup_user: {0}")]
    Lookup(LookupError),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(
        "cannot listen on {addr}: {source}\n  hint: is another engine (or program) using that port? Change `listen` in engine.toml"
    )]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Script processing beside the receiver: the live scripts, the processor running them, the
/// mail executor, hot reload, retention.
pub struct Runtime {
    pub scripts: LiveScripts,
    pub processor: Arc<Processor>,
    pub mail: Arc<MailSender>,
    pub mail_pool: Arc<DuePool<MailSender>>,
    /// The `okta` actions' executor (it skips them, saying why, without `[okta]`).
    pub okta_pool: Arc<DuePool<OktaExecutor>>,
    /// The `http` actions' executor (`[endpoint.NAME]`).
    pub http_pool: Arc<DuePool<HttpExecutor>>,
    /// Every executor's outcomes by kind, and the queue's depth, for `/metrics`.
    pub action_metrics: Arc<ActionMetrics>,
    /// Hot reload of `scripts` from disk, and each script's state.
    pub reloader: Arc<Reloader>,
    /// History older than this many days is pruned (`retention_days`).
    pub retention_days: u32,
    /// The System Log backfill, when `[okta]` gives it what it needs (it polls only with
    /// `backfill = true`; `engine backfill` uses it either way).
    pub backfill: Option<Arc<Backfill>>,
}

/// A built app: the front door, and the runtime when scripts are processed.
pub struct App {
    front: Front,
    runtime: Option<Runtime>,
    /// The web console and its one-time login token (absent: `console_listen = ""`, or only a
    /// receiver).
    console: Option<(Arc<Console>, String)>,
    /// Where the console (and admin API) is served, once bound.
    console_listener: Option<TcpListener>,
}

impl App {
    /// Only the receiver (no scripts, no admin API): what the ingest tests and benchmarks run.
    pub fn receiver(hooks: Vec<(HookConfig, Secret)>, store: Store, max_body_bytes: usize) -> App {
        App {
            front: Front::new(hooks, Arc::new(store), max_body_bytes),
            runtime: None,
            console: None,
            console_listener: None,
        }
    }

    /// Serves with these connection caps and timeouts (tests pass small ones; `serve` derives
    /// them from the raised open-file limit).
    pub fn with_server_limits(mut self, limits: ServerLimits) -> App {
        self.front = self.front.with_limits(limits);
        self
    }

    pub fn store(&self) -> &Arc<Store> {
        self.front.store()
    }

    pub fn runtime(&self) -> Option<&Runtime> {
        self.runtime.as_ref()
    }

    /// Serves the console and the admin API on `listener` (when the app has a console).
    pub fn with_console_listener(mut self, listener: TcpListener) -> App {
        self.console_listener = Some(listener);
        self
    }

    /// The console's one-time login token (for the printed link).
    pub fn console_login_token(&self) -> Option<&str> {
        self.console.as_ref().map(|(_, t)| t.as_str())
    }
}

/// The admin API's replays, done by the processor, and its backfill passes.
struct Replays(Arc<Processor>, Option<Arc<Backfill>>);

impl ingest::Admin for Replays {
    fn backfill(
        &self,
        request: BackfillRequest,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<serde_json::Value, AdminError>> + Send + '_>>
    {
        Box::pin(async move {
            let Some(b) = &self.1 else {
                return Err(AdminError::Unavailable(NO_BACKFILL.to_string()));
            };
            let report = b
                .manual(request.since_ms, request.dry_run)
                .await
                .map_err(|e| AdminError::Unavailable(e.to_string()))?;
            serde_json::to_value(report).map_err(|e| AdminError::Unavailable(e.to_string()))
        })
    }

    fn dry_run(
        &self,
        request: ReplayRequest,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<serde_json::Value, AdminError>> + Send + '_>>
    {
        Box::pin(async move {
            let uuid = match &request.target {
                ReplayTarget::Event(u) => Some(u.as_str()),
                ReplayTarget::Failed => None,
            };
            let outcomes = self
                .0
                .dry_run(uuid, request.script.as_deref())
                .await
                .map_err(replay_error)?;
            serde_json::to_value(outcomes).map_err(|e| AdminError::Unavailable(e.to_string()))
        })
    }

    fn replay(
        &self,
        request: ReplayRequest,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<u64>, AdminError>> + Send + '_>> {
        Box::pin(async move {
            let script = request.script.as_deref();
            let result = match &request.target {
                ReplayTarget::Event(uuid) => self.0.replay_event(uuid, script).await,
                ReplayTarget::Failed => self.0.replay_failed(script).await,
            };
            result.map_err(replay_error)
        })
    }
}

/// A replay's error as the admin API says it.
fn replay_error(e: ReplayError) -> AdminError {
    match e {
        ReplayError::NoSuchEvent(uuid) => AdminError::NoSuchEvent(uuid),
        ReplayError::NoSuchScript(name) => AdminError::NoSuchScript(name),
        other => AdminError::Unavailable(other.to_string()),
    }
}

/// What `engine backfill` says when the config gives it nothing to poll.
pub const NO_BACKFILL: &str = "the System Log backfill needs [okta] with org_url and credentials (token_env, or client_id + private_key_env), and a backfill_hook (or exactly one okta hook)";

/// The System Log backfill on `store` for the scripts of `scripts`, when `[okta]` is configured
/// with a hook to store on (`Ok(None)` otherwise). Must run inside the tokio runtime.
pub fn build_backfill(
    config: &Config,
    okta: Option<Arc<OktaClient>>,
    store: Arc<Store>,
    scripts: LiveScripts,
) -> Result<Option<Arc<Backfill>>, AppError> {
    let Some(o) = &config.okta else {
        return Ok(None);
    };
    let Some(settings) = backfill::Settings::from_config(&o.backfill) else {
        return Ok(None);
    };
    let okta = match okta {
        Some(c) => c,
        None => build_okta(config)?
            .ok_or_else(|| AppError::Lookup(LookupError::Permanent(NO_BACKFILL.into())))?,
    };
    Ok(Some(Arc::new(Backfill::new(
        okta, store, scripts, settings,
    ))))
}

/// The one Okta client (`lookup_user`, the `okta::` reads and actions, the backfill share it:
/// its credentials, access token and rate-limit knowledge), when `[okta]` is configured.
/// Must run inside the tokio runtime.
pub fn build_okta(config: &Config) -> Result<Option<Arc<OktaClient>>, AppError> {
    let Some(o) = &config.okta else {
        return Ok(None);
    };
    let credentials = config.okta_credentials(o)?;
    Ok(Some(Arc::new(
        OktaClient::from_config(o, credentials).map_err(AppError::Lookup)?,
    )))
}

/// `lookup_user` for scripts: `[directory]`, then the Okta Users API; the endpoints and
/// `http_get`. Must run inside the runtime (the Okta client keeps its handle).
pub fn build_host(
    config: &Config,
    okta: Option<Arc<OktaClient>>,
) -> Result<Arc<dyn Host>, AppError> {
    let endpoints = Arc::new(Endpoints::from_config(config)?);
    build_host_with(config, okta, endpoints)
}

/// [`build_host`] with the endpoints the `http` executor uses too.
pub fn build_host_with(
    config: &Config,
    okta: Option<Arc<OktaClient>>,
    endpoints: Arc<Endpoints>,
) -> Result<Arc<dyn Host>, AppError> {
    let directory = match &config.directory {
        Some(path) => Some(Directory::load(path).map_err(AppError::Lookup)?),
        None => None,
    };
    let lookup = Lookup::new(directory, okta).map_err(AppError::Lookup)?;
    Ok(Arc::new(EndpointHost {
        inner: Arc::new(LookupHost(lookup)),
        endpoints,
        handle: tokio::runtime::Handle::try_current().ok(),
    }))
}

/// A host with the `[directory]` only (never Okta): what `engine check` dry runs look users up
/// in, so a check sends no request anywhere. With `[okta]` configured the `okta::` reads answer
/// as for a user in no group and no such group (`[]`, `()`); without it they fail as in a real
/// run (the dry run then says `[okta]` is missing).
pub fn directory_host(config: &Config) -> Result<Arc<dyn Host>, LookupError> {
    let inner: Arc<dyn Host> = match &config.directory {
        Some(p) => {
            let lookup = Lookup::new(Some(Directory::load(p)?), None)?;
            Arc::new(LookupHost(lookup))
        }
        None => Arc::new(crate::script::NoDirectory),
    };
    let inner: Arc<dyn Host> = match config.okta {
        Some(_) => Arc::new(OfflineOkta(inner)),
        None => inner,
    };
    Ok(Arc::new(OfflineEndpoints {
        inner,
        endpoints: config
            .endpoints
            .iter()
            .map(|e| (e.name.clone(), e.header_names()))
            .collect(),
    }))
}

/// The dry-run host's endpoints: known by name (from engine.toml, no variable read), and
/// `http_get` answers status 0 without a request.
struct OfflineEndpoints {
    inner: Arc<dyn Host>,
    endpoints: Vec<(String, Vec<String>)>,
}

impl Host for OfflineEndpoints {
    fn lookup_user(
        &self,
        key: &str,
        deadline: Option<std::time::Instant>,
    ) -> Result<Option<crate::script::User>, crate::script::HostError> {
        self.inner.lookup_user(key, deadline)
    }

    fn okta_user_groups(
        &self,
        user: &str,
        deadline: Option<std::time::Instant>,
    ) -> Result<Vec<crate::script::OktaGroup>, crate::script::HostError> {
        self.inner.okta_user_groups(user, deadline)
    }

    fn okta_get_group(
        &self,
        group: &crate::script::GroupRef,
        deadline: Option<std::time::Instant>,
    ) -> Result<Option<crate::script::OktaGroup>, crate::script::HostError> {
        self.inner.okta_get_group(group, deadline)
    }

    fn endpoint(&self, name: &str) -> Option<crate::script::EndpointInfo> {
        self.endpoints
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| crate::script::EndpointInfo {
                header_names: h.clone(),
            })
    }

    fn endpoint_names(&self) -> Vec<String> {
        self.endpoints.iter().map(|(n, _)| n.clone()).collect()
    }

    fn http_get(
        &self,
        _request: &crate::script::HttpRequest,
        _deadline: Option<std::time::Instant>,
    ) -> Result<crate::script::HttpAnswer, crate::script::HostError> {
        Ok(crate::script::HttpAnswer::default())
    }
}

/// The dry-run host's Okta: reads answer empty without a request.
struct OfflineOkta(Arc<dyn Host>);

impl Host for OfflineOkta {
    fn lookup_user(
        &self,
        key: &str,
        deadline: Option<std::time::Instant>,
    ) -> Result<Option<crate::script::User>, crate::script::HostError> {
        self.0.lookup_user(key, deadline)
    }

    fn okta_user_groups(
        &self,
        _user: &str,
        _deadline: Option<std::time::Instant>,
    ) -> Result<Vec<crate::script::OktaGroup>, crate::script::HostError> {
        Ok(Vec::new())
    }

    fn okta_get_group(
        &self,
        _group: &crate::script::GroupRef,
        _deadline: Option<std::time::Instant>,
    ) -> Result<Option<crate::script::OktaGroup>, crate::script::HostError> {
        Ok(None)
    }
}

/// Hot reload's settings.
pub fn reload_settings(config: &Config) -> reload::Settings {
    reload::Settings {
        scripts_dir: config.scripts_dir.clone(),
        stdlib_dir: config.stdlib_dir.clone(),
        limits: config.limits.clone(),
    }
}

/// Loads the scripts; errors are reported and the failing scripts left out.
pub fn load_scripts(config: &Config, out: &mut dyn Write) -> ScriptSet {
    let (set, errors) = ScriptSet::load(&config.scripts_dir, &config.stdlib_dir, &config.limits);
    for e in &errors {
        tracing::error!(file = %e.file.display(), error = %e, "script not loaded");
        let _ = writeln!(out, "engine: script not loaded: {e}");
    }
    let names: Vec<&str> = set.scripts().iter().map(|s| s.name.as_str()).collect();
    let _ = writeln!(
        out,
        "engine: {} script(s) from {}: {}",
        names.len(),
        config.scripts_dir.display(),
        if names.is_empty() {
            "(none)".to_string()
        } else {
            names.join(", ")
        }
    );
    set
}

/// Opens the store, resolves every hook's secret and builds the processing runtime. What the
/// admin must configure in Okta is written to `out` (a generated secret only the first time).
pub fn prepare(config: &Config, mode: CommitMode, out: &mut dyn Write) -> Result<App, AppError> {
    // Everything the configuration can fail on comes first: nothing is generated, printed or
    // opened for a config that cannot run.
    for hook in &config.hooks {
        if let SecretSource::Env { var, line } = &hook.secret {
            config.read_env(var, "hook.secret_env", *line)?;
        }
    }
    let parts = Parts::build(config)?;
    make_data_dir_private(config);
    let mut hooks = Vec::new();
    let mut notes = Vec::new();
    for hook in &config.hooks {
        let secret = match &hook.secret {
            SecretSource::Env { var, line } => {
                let s = config.read_env(var, "hook.secret_env", *line)?;
                notes.push(format!("the value of ${var}"));
                s
            }
            SecretSource::Generated => {
                create_data_dir(config)?;
                let path = config.generated_secret_path(&hook.id);
                let (s, created) = ingest::ensure_secret(&path)?;
                if created {
                    notes.push(format!(
                        "{}\n    (generated now and stored in {}, mode 0600; it is not printed again)",
                        s.expose(),
                        path.display()
                    ));
                } else {
                    notes.push(format!("the secret stored in {}", path.display()));
                }
                s
            }
        };
        hooks.push((hook.clone(), secret));
    }
    create_data_dir(config)?;
    let (admin_token, _) = ingest::ensure_secret(&config.data_dir.join(ingest::ADMIN_TOKEN_FILE))?;
    let store = Arc::new(Store::open_with_cache(
        &config.data_dir,
        mode,
        config.store_cache_bytes,
    )?);
    let base = format!("http://{}", config.listen);
    let _ = writeln!(out, "engine: store {}", store.path().display());
    for ((hook, _), value) in hooks.iter().zip(&notes) {
        let _ = writeln!(out, "engine: hook `{}` ({:?})", hook.id, hook.kind);
        let _ = writeln!(
            out,
            "  Okta event hook URL: {base}/hooks/{} (behind your HTTPS proxy)",
            hook.id
        );
        let _ = writeln!(
            out,
            "  Authentication field: {}",
            display_header(&hook.auth_header)
        );
        let _ = writeln!(out, "  Authentication secret: {value}");
    }
    let runtime = assemble(config, store.clone(), parts, out)?;
    if let Some(b) = runtime.backfill.as_ref().filter(|b| b.settings().enabled) {
        let _ = writeln!(
            out,
            "engine: System Log backfill on: every {} s onto hook `{}`, leaving events younger than {} s to the hook",
            b.settings().interval.as_secs(),
            b.settings().hook,
            b.settings().lag.as_secs()
        );
    }
    let replays: Arc<dyn ingest::Admin> =
        Arc::new(Replays(runtime.processor.clone(), runtime.backfill.clone()));
    let console = config.console_listen.map(|_| {
        let (console, once) = Console::new(
            store.clone(),
            admin_token.clone(),
            replays.clone(),
            ConsoleSettings {
                hooks: hooks
                    .iter()
                    .map(|(h, _)| (h.id.clone(), format!("{base}/hooks/{}", h.id)))
                    .collect(),
                scripts_dir: config.scripts_dir.clone(),
                stdlib_dir: config.stdlib_dir.clone(),
                backfill: runtime
                    .backfill
                    .as_ref()
                    .is_some_and(|b| b.settings().enabled),
            },
        );
        let console = console.with_authoring(console_authoring(config, &runtime));
        (Arc::new(console), once)
    });
    let mut front = Front::new(hooks, store, config.max_body_bytes)
        .with_admin(replays, admin_token)
        .with_metrics(runtime.processor.clone() as Arc<dyn MetricsSource>)
        .with_metrics(runtime.mail.clone() as Arc<dyn MetricsSource>)
        .with_metrics(runtime.action_metrics.clone() as Arc<dyn MetricsSource>)
        .with_metrics(runtime.reloader.states().clone() as Arc<dyn MetricsSource>);
    if let Some(b) = &runtime.backfill {
        front = front.with_metrics(b.clone() as Arc<dyn MetricsSource>);
    }
    Ok(App {
        front,
        runtime: Some(runtime),
        console,
        console_listener: None,
    })
}

/// What the console's dry runs (`engine check SCRIPT`) and tokens read from the config: the
/// same as the commands, with the live script set.
fn console_authoring(config: &Config, runtime: &Runtime) -> Authoring {
    let host = directory_host(config).unwrap_or_else(|error| {
        tracing::warn!(%error, "the console's dry runs find nobody in the directory");
        Arc::new(crate::script::NoDirectory)
    });
    Authoring {
        data_dir: Some(config.data_dir.clone()),
        limits: config.limits.clone(),
        senders: config.senders(),
        host,
        hooks: Some(config.hooks.iter().map(|h| h.id.clone()).collect()),
        generic_hooks: config
            .hooks
            .iter()
            .filter(|h| h.kind == crate::config::HookKind::Generic)
            .map(|h| h.id.clone())
            .collect(),
        okta: Some(config.okta.is_some()),
        live: Some(runtime.reloader.live().clone()),
    }
}

/// Scripts, `lookup_user`, the processor and the mail executor on a store: what `serve` runs
/// beside the server, and what `replay` runs on its own when no server holds the store. Must be
/// called inside the tokio runtime.
pub fn build_runtime(
    config: &Config,
    store: Arc<Store>,
    out: &mut dyn Write,
) -> Result<Runtime, AppError> {
    let parts = Parts::build(config)?;
    assemble(config, store, parts, out)
}

/// What the runtime is built from that can fail on the configuration (an unset variable, a bad
/// SMTP URL, an unreadable directory file): built before anything is generated or opened.
pub struct Parts {
    transport: Transport,
    host: Arc<dyn Host>,
    okta: Option<Arc<OktaClient>>,
    endpoints: Arc<Endpoints>,
}

impl Parts {
    /// Must be called inside the tokio runtime (the Okta client keeps its handle).
    pub fn build(config: &Config) -> Result<Parts, AppError> {
        let smtp_url = match &config.smtp {
            Some(s) => Some(config.read_env(&s.url_env, "smtp.url_env", s.url_env_line)?),
            None => None,
        };
        let transport =
            Transport::new(smtp_url.as_ref(), &config.data_dir).map_err(AppError::Mail)?;
        let okta = build_okta(config)?;
        let endpoints = Arc::new(Endpoints::from_config(config)?);
        let host = build_host_with(config, okta.clone(), endpoints.clone())?;
        Ok(Parts {
            transport,
            host,
            okta,
            endpoints,
        })
    }
}

/// The runtime from its parts, on `store`.
fn assemble(
    config: &Config,
    store: Arc<Store>,
    parts: Parts,
    out: &mut dyn Write,
) -> Result<Runtime, AppError> {
    let Parts {
        transport,
        host,
        okta,
        endpoints,
    } = parts;
    for e in &config.endpoints {
        let rate = e
            .rate_per_s
            .map_or("no rate limit".to_string(), |r| format!("at most {r}/s"));
        let _ = writeln!(
            out,
            "engine: endpoint `{}` ({rate}, timeout {} ms)",
            e.name, e.timeout_ms
        );
    }
    match &config.smtp {
        Some(s) => {
            let _ = writeln!(out, "engine: mail via SMTP (from {})", s.from);
        }
        None => {
            let _ = writeln!(
                out,
                "engine: mail written as .eml files under {}",
                config.data_dir.join(mail::OUTBOX_MAIL_DIR).display()
            );
        }
    }
    if let Some(o) = &config.okta {
        let how = match &o.auth {
            crate::config::OktaAuth::Token { .. } => "an SSWS API token".to_string(),
            crate::config::OktaAuth::ServiceApp {
                client_id, scopes, ..
            } => format!("service app {client_id} (scopes {})", scopes.join(" ")),
        };
        let _ = writeln!(out, "engine: Okta API at {} with {how}", o.org_url);
    }
    let scripts: LiveScripts = Arc::new(ArcSwap::from_pointee(load_scripts(config, out)));
    let _ = out.flush();
    let mail_settings = MailSettings {
        from: config
            .smtp
            .as_ref()
            .map(|s| s.from.clone())
            .unwrap_or_else(|| DEFAULT_FROM.to_string()),
        retry_base: std::time::Duration::from_millis(
            config
                .smtp
                .as_ref()
                .map_or(crate::config::DEFAULT_MAIL_RETRY_BASE_MS, |s| {
                    s.retry_base_ms
                }),
        ),
    };
    let counts = Arc::new(ActionCounts::default());
    let action_metrics = Arc::new(ActionMetrics {
        store: store.clone(),
        counts: counts.clone(),
    });
    let mail = Arc::new(MailSender::new(
        store.clone(),
        transport,
        mail_settings,
        counts.clone(),
    ));
    let mail_pool = mail.pool();
    let okta_executor = Arc::new(OktaExecutor::new(
        store.clone(),
        okta.clone(),
        actions::okta::OKTA_RETRY_BASE,
        counts.clone(),
    ));
    let okta_pool = okta_executor.pool();
    let http_executor = Arc::new(HttpExecutor::new(
        store.clone(),
        endpoints,
        http_retry_base(config),
        counts,
    ));
    let http_pool = http_executor.pool();
    let wakers = ActionWakers::default()
        .with(ActionKind::Email, mail_pool.waker())
        .with(ActionKind::Okta, okta_pool.waker())
        .with(ActionKind::Http, http_pool.waker());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let workers = process::run_slots(cores);
    let settings = process::Settings {
        workers,
        per_script: process::script_share(workers),
        limits: config.limits.clone(),
        senders: config.senders(),
        capture_hooks: config
            .hooks
            .iter()
            .filter(|h| h.capture)
            .map(|h| h.id.clone())
            .collect(),
    };
    let backfill = build_backfill(config, okta, store.clone(), scripts.clone())?;
    let processor = Processor::new(store, scripts.clone(), host, settings, wakers);
    let reloader = Arc::new(Reloader::new(reload_settings(config), scripts.clone()));
    Ok(Runtime {
        scripts,
        processor,
        mail,
        mail_pool,
        okta_pool,
        http_pool,
        action_metrics,
        reloader,
        retention_days: config.retention_days,
        backfill,
    })
}

/// The `http` executor's backoff base: the smallest `retry_base_ms` of the endpoints (each
/// endpoint's own backoff is applied per attempt on top).
fn http_retry_base(config: &Config) -> std::time::Duration {
    std::time::Duration::from_millis(
        config
            .endpoints
            .iter()
            .map(|e| e.retry_base_ms)
            .min()
            .unwrap_or(crate::config::DEFAULT_ENDPOINT_RETRY_BASE_MS),
    )
}

fn create_data_dir(config: &Config) -> Result<(), OpenError> {
    private::create_dir(&config.data_dir).map_err(|source| OpenError::CreateDir {
        path: config.data_dir.clone(),
        source,
    })
}

/// How many tightened paths the start's log line names (the rest are counted): a data dir from
/// an older engine may hold thousands of `.eml` files.
pub const MAX_TIGHTENED_NAMED: usize = 8;

/// Takes group and other access away from an existing data dir and what the engine keeps in it
/// (the store, the admin token and hook secrets, `outbox-mail/` and `samples/` with their files),
/// as older engines left them 0755/0644. Only the engine's own names are touched, so a data dir
/// shared with other files keeps those as they are. One log line says what was changed.
fn make_data_dir_private(config: &Config) {
    let dir = &config.data_dir;
    if !dir.is_dir() {
        return;
    }
    let entries = |d: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(d)
            .map(|it| it.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let mut paths = vec![dir.clone()];
    for path in entries(dir) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == DB_FILE
            || name == ingest::ADMIN_TOKEN_FILE
            || name.starts_with(GENERATED_SECRET_PREFIX)
        {
            paths.push(path);
        }
    }
    for sub in [mail::OUTBOX_MAIL_DIR, SAMPLES_DIR] {
        let sub = dir.join(sub);
        paths.extend(entries(&sub));
        paths.push(sub);
    }
    let mut tightened = Vec::new();
    let mut failed = Vec::new();
    for path in &paths {
        match private::tighten(path) {
            Ok(Some(t)) => tightened.push(t.to_string()),
            Ok(None) => {}
            Err(error) => failed.push(format!("{}: {error}", path.display())),
        }
    }
    let list = |items: &[String]| {
        let mut text = items
            .iter()
            .take(MAX_TIGHTENED_NAMED)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if items.len() > MAX_TIGHTENED_NAMED {
            text.push_str(&format!(" and {} more", items.len() - MAX_TIGHTENED_NAMED));
        }
        text
    };
    if !tightened.is_empty() {
        tracing::warn!(
            count = tightened.len(),
            tightened = %list(&tightened),
            "the data dir was readable by other users; made it private"
        );
    }
    if !failed.is_empty() {
        tracing::warn!(
            failed = %list(&failed),
            "cannot make these data dir entries private; fix their owner or mode by hand"
        );
    }
}

fn display_header(lower: &str) -> String {
    lower
        .split('-')
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Raises the soft open-file limit to the hard one (every connection is a descriptor, and the
/// usual soft limit of 1024 is far below what the system allows), logs it, and returns the
/// limit the connection caps are derived from.
fn raise_fd_limit() -> u64 {
    match fd_limit::raise() {
        Ok(l) if l.soft > l.before => {
            tracing::info!(from = l.before, to = l.soft, "raised the open-file limit");
            l.soft
        }
        Ok(l) => {
            tracing::info!(limit = l.soft, "open-file limit");
            l.soft
        }
        Err(error) => {
            let limit = fd_limit::soft().unwrap_or(ingest::DEFAULT_FD_LIMIT);
            tracing::warn!(%error, limit, "cannot raise the open-file limit");
            limit
        }
    }
}

/// Binds `config.listen` and serves until `shutdown` resolves.
pub async fn serve(
    config: &Config,
    shutdown: impl Future<Output = ()>,
    out: &mut dyn Write,
) -> Result<(), AppError> {
    let limits = ServerLimits::for_fd_limit(raise_fd_limit());
    tracing::info!(
        max_connections = limits.max_connections,
        max_connections_per_address = limits.max_connections_per_address,
        "connection limits"
    );
    let mut app = prepare(config, CommitMode::Group, out)?.with_server_limits(limits);
    // The console first, its address recorded before the hook listener exists: whoever sees
    // the hook port answer (a supervisor, a test) finds the admin API at once. Before, an
    // `engine runs` in that moment found the store held and no address to ask.
    let console = match config.console_listen {
        Some(console_addr) => {
            let console =
                TcpListener::bind(console_addr)
                    .await
                    .map_err(|source| AppError::Bind {
                        addr: console_addr,
                        source,
                    })?;
            let bound = console.local_addr().unwrap_or(console_addr);
            // The CLI's admin requests find the server here (the port may be 0 in the config);
            // written whole or not at all (a reader never sees half an address).
            let at = config.data_dir.join(CONSOLE_ADDRESS_FILE);
            let tmp = config.data_dir.join(format!("{CONSOLE_ADDRESS_FILE}.tmp"));
            if let Err(error) = private::write(&tmp, format!("{bound}\n").as_bytes())
                .and_then(|()| std::fs::rename(&tmp, &at))
            {
                tracing::warn!(%error, path = %at.display(), "cannot record the console address");
            }
            Some((console, bound))
        }
        None => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| AppError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(config.listen);
    let _ = writeln!(out, "engine: listening on http://{addr}");
    if let Some((console, bound)) = console {
        let shown = loopback_if_unspecified(bound);
        let _ = writeln!(out, "engine: console on http://{shown}/");
        if let Some(once) = app.console_login_token() {
            let _ = writeln!(
                out,
                "  log in (this link works once): http://{shown}/login?t={once}"
            );
        }
        tracing::info!(addr = %bound, "console listening");
        app = app.with_console_listener(console);
    }
    let _ = out.flush();
    tracing::info!(%addr, "listening");
    run(listener, app, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

impl Runtime {
    /// Runs the processor and the mail executor (not reload or retention) until `shutdown`:
    /// what `engine replay` runs on its own when no server holds the store.
    pub fn start_processing(
        &self,
        shutdown: &watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(self.processor.clone().run(shutdown.clone())),
            tokio::spawn(MailSender::run(
                self.mail_pool.clone(),
                self.mail.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(OktaExecutor::run(self.okta_pool.clone(), shutdown.clone())),
            tokio::spawn(HttpExecutor::run(self.http_pool.clone(), shutdown.clone())),
        ]
    }
}

/// Runs a prepared app on a bound listener: the server, and (when built) the processor, the
/// mail executor, the script watcher (hot reload) and retention. On shutdown: stop accepting and
/// answer requests in flight, then let the runs and sends in flight finish, then close the store.
pub async fn run(listener: TcpListener, app: App, shutdown: impl Future<Output = ()>) {
    let App {
        front,
        runtime,
        console,
        console_listener,
    } = app;
    let front = Arc::new(front);
    let store = front.store().clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(rt) = &runtime {
        tasks.extend(rt.start_processing(&stop_rx));
        tasks.push(tokio::spawn(reload::run(
            rt.reloader.clone(),
            store.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(process::retention::run(
            store.clone(),
            rt.retention_days,
            stop_rx.clone(),
        )));
        if let Some(b) = rt.backfill.as_ref().filter(|b| b.settings().enabled) {
            tasks.push(tokio::spawn(b.clone().run(stop_rx.clone())));
        }
    }
    let (server_stop, server_stopped) = watch::channel(false);
    let console_task = match (console, console_listener) {
        (Some((pages, _)), Some(l)) => {
            let mut stopped = server_stopped.clone();
            Some(tokio::spawn(ingest::run_console(
                l,
                front.clone(),
                pages as Arc<dyn ingest::Pages>,
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            )))
        }
        _ => None,
    };
    ingest::run(listener, front.clone(), async move {
        shutdown.await;
        let _ = server_stop.send(true);
    })
    .await;
    if let Some(t) = console_task {
        let _ = t.await;
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    drop(front);
    drop(runtime);
    // The last holder closes the store (joining its writer) off the async threads.
    tokio::task::spawn_blocking(move || drop(store)).await.ok();
}
