//! The app: builds every part from the configuration once (each part gets its own settings, not
//! the whole `Config`), runs them side by side, and stops them in order: stop accepting, answer
//! requests in flight, finish runs and sends in flight, close the store.
//!
//! The only place that knows every part: the HTTP front door (`ingest`) learns of processing only
//! through the [`ingest::Admin`] and [`MetricsSource`] handles wired in here.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::actions::mail::{self, MailError, Transport};
use crate::actions::{MailSender, MailSettings};
use crate::config::{Config, ConfigError, HookConfig, Secret, SecretSource};
use crate::ingest::{self, AdminError, Front, ReplayRequest, SecretError};
use crate::lookup::{Directory, Lookup, LookupError, LookupHost, OktaClient};
use crate::process::{self, DuePool, Processor, ReplayError};
use crate::reload::{self, Reloader};
use crate::script::{Host, LiveScripts, ScriptSet};
use crate::store::{CommitMode, OpenError, Store};
use crate::util::prom::MetricsSource;

/// The sender address when `[smtp]` is absent (mail goes to `.eml` files).
pub const DEFAULT_FROM: &str = "engine@localhost";

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
    /// Hot reload of `scripts` from disk, and each script's state.
    pub reloader: Arc<Reloader>,
    /// History older than this many days is pruned (`retention_days`).
    pub retention_days: u32,
}

/// A built app: the front door, and the runtime when scripts are processed.
pub struct App {
    front: Front,
    runtime: Option<Runtime>,
}

impl App {
    /// Only the receiver (no scripts, no admin API): what the ingest tests and benchmarks run.
    pub fn receiver(hooks: Vec<(HookConfig, Secret)>, store: Store, max_body_bytes: usize) -> App {
        App {
            front: Front::new(hooks, Arc::new(store), max_body_bytes),
            runtime: None,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        self.front.store()
    }

    pub fn runtime(&self) -> Option<&Runtime> {
        self.runtime.as_ref()
    }
}

/// The admin API's replays, done by the processor.
struct Replays(Arc<Processor>);

impl ingest::Admin for Replays {
    fn replay(
        &self,
        request: ReplayRequest,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<u64>, AdminError>> + Send + '_>> {
        Box::pin(async move {
            let result = match &request {
                ReplayRequest::Event(uuid) => self.0.replay_event(uuid).await,
                ReplayRequest::Failed => self.0.replay_failed().await,
            };
            result.map_err(|e| match e {
                ReplayError::NoSuchEvent(uuid) => AdminError::NoSuchEvent(uuid),
                other => AdminError::Unavailable(other.to_string()),
            })
        })
    }
}

/// `lookup_user` for scripts: `[directory]`, then the Okta Users API. Must run inside the
/// runtime (the Okta client keeps its handle).
pub fn build_host(config: &Config) -> Result<Arc<dyn Host>, AppError> {
    let directory = match &config.directory {
        Some(path) => Some(Directory::load(path).map_err(AppError::Lookup)?),
        None => None,
    };
    let okta = match &config.okta {
        Some(o) => {
            let token = config.read_env(&o.token_env, "okta.token_env", o.token_env_line)?;
            Some(OktaClient::from_config(o, token).map_err(AppError::Lookup)?)
        }
        None => None,
    };
    let lookup = Lookup::new(directory, okta).map_err(AppError::Lookup)?;
    Ok(Arc::new(LookupHost(lookup)))
}

/// A host with the `[directory]` only (never Okta): what `engine check` dry runs look users up
/// in, so a check sends no request anywhere.
pub fn directory_host(config: &Config) -> Result<Arc<dyn Host>, LookupError> {
    match &config.directory {
        Some(p) => {
            let lookup = Lookup::new(Some(Directory::load(p)?), None)?;
            Ok(Arc::new(LookupHost(lookup)))
        }
        None => Ok(Arc::new(crate::script::NoDirectory)),
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
    let store = Arc::new(Store::open(&config.data_dir, mode)?);
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
    let runtime = build_runtime(config, store.clone(), out)?;
    let front = Front::new(hooks, store, config.max_body_bytes)
        .with_admin(Arc::new(Replays(runtime.processor.clone())), admin_token)
        .with_metrics(runtime.processor.clone() as Arc<dyn MetricsSource>)
        .with_metrics(runtime.mail.clone() as Arc<dyn MetricsSource>)
        .with_metrics(runtime.reloader.states().clone() as Arc<dyn MetricsSource>);
    Ok(App {
        front,
        runtime: Some(runtime),
    })
}

/// Scripts, `lookup_user`, the processor and the mail executor on a store: what `serve` runs
/// beside the server, and what `replay` runs on its own when no server holds the store. Must be
/// called inside the tokio runtime.
pub fn build_runtime(
    config: &Config,
    store: Arc<Store>,
    out: &mut dyn Write,
) -> Result<Runtime, AppError> {
    let smtp_url = match &config.smtp {
        Some(s) => Some(config.read_env(&s.url_env, "smtp.url_env", s.url_env_line)?),
        None => None,
    };
    let transport = Transport::new(smtp_url.as_ref(), &config.data_dir).map_err(AppError::Mail)?;
    let host = build_host(config)?;
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
    let mail = Arc::new(MailSender::new(store.clone(), transport, mail_settings));
    let mail_pool = mail.pool();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let workers = process::run_slots(cores);
    let settings = process::Settings {
        workers,
        per_script: process::script_share(workers),
        limits: config.limits.clone(),
        capture_hooks: config
            .hooks
            .iter()
            .filter(|h| h.capture)
            .map(|h| h.id.clone())
            .collect(),
    };
    let processor = Processor::new(store, scripts.clone(), host, settings, mail_pool.waker());
    let reloader = Arc::new(Reloader::new(reload_settings(config), scripts.clone()));
    Ok(Runtime {
        scripts,
        processor,
        mail,
        mail_pool,
        reloader,
        retention_days: config.retention_days,
    })
}

fn create_data_dir(config: &Config) -> Result<(), OpenError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| OpenError::CreateDir {
        path: config.data_dir.clone(),
        source,
    })
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

/// Binds `config.listen` and serves until `shutdown` resolves.
pub async fn serve(
    config: &Config,
    shutdown: impl Future<Output = ()>,
    out: &mut dyn Write,
) -> Result<(), AppError> {
    let app = prepare(config, CommitMode::Group, out)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| AppError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(config.listen);
    let _ = writeln!(out, "engine: listening on http://{addr}");
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
        ]
    }
}

/// Runs a prepared app on a bound listener: the server, and (when built) the processor, the
/// mail executor, the script watcher (hot reload) and retention. On shutdown: stop accepting and
/// answer requests in flight, then let the runs and sends in flight finish, then close the store.
pub async fn run(listener: TcpListener, app: App, shutdown: impl Future<Output = ()>) {
    let App { front, runtime } = app;
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
    }
    ingest::run(listener, front.clone(), shutdown).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    drop(front);
    drop(runtime);
    // The last holder closes the store (joining its writer) off the async threads.
    tokio::task::spawn_blocking(move || drop(store)).await.ok();
}
