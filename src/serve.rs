//! `engine serve`: assembles the store, hooks, scripts, processor and outbox from the
//! configuration, runs the server until shutdown, then stops in order: stop accepting, answer
//! requests in flight, finish runs in flight, close the store.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::config::{Config, ConfigError, SecretSource};
use crate::lookup::{Directory, Lookup, LookupError, OktaClient};
use crate::mail::{MailError, Transport};
use crate::script::{Host, HostError, ScriptSet, User};

use crate::secrets::{self, SecretError};
use crate::sender::OutboxSender;
use crate::server::{self, App, Runtime};
use crate::store::{CommitMode, OpenError, Store};
use crate::worker::{self, Processor};

/// The file holding the token for `/admin/*` (replay while the server runs).
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The sender address when `[smtp]` is absent (mail goes to `.eml` files).
pub const DEFAULT_FROM: &str = "engine@localhost";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
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

/// `lookup_user` for scripts: the `[directory]` file, then the Okta Users API.
pub struct LookupHost(pub Lookup);

impl Host for LookupHost {
    fn lookup_user(&self, key: &str) -> Result<Option<User>, HostError> {
        match self.0.lookup_blocking(key) {
            Ok(u) => Ok(u),
            Err(LookupError::Transient(m)) => Err(HostError::Transient(m)),
            Err(e) => Err(HostError::Permanent(e.to_string())),
        }
    }
}

/// Builds the `lookup_user` host from `[directory]` and `[okta]`. Must run inside the runtime.
pub fn build_host(config: &Config) -> Result<Arc<dyn Host>, ServeError> {
    let directory = match &config.directory {
        Some(path) => Some(Directory::load(path).map_err(ServeError::Lookup)?),
        None => None,
    };
    let okta = match &config.okta {
        Some(o) => {
            let token = config.read_env(&o.token_env, "okta.token_env", o.token_env_line)?;
            Some(OktaClient::from_config(o, token).map_err(ServeError::Lookup)?)
        }
        None => None,
    };
    let lookup = Lookup::new(directory, okta).map_err(ServeError::Lookup)?;
    Ok(Arc::new(LookupHost(lookup)))
}

/// Loads the scripts; errors are reported and the failing scripts left out.
pub fn load_scripts(config: &Config, out: &mut dyn Write) -> ScriptSet {
    let limits = worker::limits_from(&config.limits);
    let (set, errors) = ScriptSet::load(&config.scripts_dir, &config.stdlib_dir, &limits);
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
pub fn prepare(config: &Config, mode: CommitMode, out: &mut dyn Write) -> Result<App, ServeError> {
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
                let (s, created) = secrets::ensure(&path)?;
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
    let (admin_token, _) = secrets::ensure(&config.data_dir.join(ADMIN_TOKEN_FILE))?;
    let store = Store::open(&config.data_dir, mode)?;
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
    let app = App::new(hooks, store, config.max_body_bytes);
    let runtime = build_runtime(config, app.store().clone(), out)?;
    Ok(app.with_runtime(runtime, admin_token))
}

/// Scripts, `lookup_user`, the processor and the outbox sender on a store: what `serve` runs
/// beside the server, and what `replay` runs on its own when no server holds the store.
/// Must be called inside the tokio runtime.
pub fn build_runtime(
    config: &Config,
    store: Arc<Store>,
    out: &mut dyn Write,
) -> Result<Runtime, ServeError> {
    let smtp_url = match &config.smtp {
        Some(s) => Some(config.read_env(&s.url_env, "smtp.url_env", s.url_env_line)?),
        None => None,
    };
    let transport =
        Transport::new(smtp_url.as_ref(), &config.data_dir).map_err(ServeError::Mail)?;
    let host = build_host(config)?;
    match &config.smtp {
        Some(s) => {
            let _ = writeln!(out, "engine: mail via SMTP (from {})", s.from);
        }
        None => {
            let _ = writeln!(
                out,
                "engine: mail written as .eml files under {}",
                config.data_dir.join(crate::mail::OUTBOX_MAIL_DIR).display()
            );
        }
    }
    let scripts = Arc::new(ArcSwap::from_pointee(load_scripts(config, out)));
    let _ = out.flush();
    let outbox_wake = Arc::new(Notify::new());
    let from = config
        .smtp
        .as_ref()
        .map(|s| s.from.clone())
        .unwrap_or_else(|| DEFAULT_FROM.to_string());
    let retry_scale = config.smtp.as_ref().map_or(1.0, |s| {
        s.retry_base_ms as f64 / crate::mail::BACKOFF_BASE.as_millis() as f64
    });
    let outbox = Arc::new(
        OutboxSender::new(store.clone(), transport, from, outbox_wake.clone())
            .with_retry_scale(retry_scale),
    );
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let processor = Processor::new(
        store,
        scripts.clone(),
        host,
        worker::limits_from(&config.limits),
        workers,
        outbox_wake,
    )
    .with_capture(
        config
            .hooks
            .iter()
            .filter(|h| h.capture)
            .map(|h| h.id.clone())
            .collect(),
    );
    let reloader = Arc::new(crate::watch::Reloader::new(config, scripts.clone()));
    Ok(Runtime {
        scripts,
        processor,
        outbox,
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
) -> Result<(), ServeError> {
    let app = prepare(config, CommitMode::Group, out)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(config.listen);
    let _ = writeln!(out, "engine: listening on http://{addr}");
    let _ = out.flush();
    tracing::info!(%addr, "listening");
    run_app(listener, app, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// Runs a prepared app on a bound listener: the server, and (when attached) the processor, the
/// outbox sender and the script watcher (hot reload). On shutdown: stop accepting and answer requests in flight, then let the
/// runs and sends in flight finish, then close the store.
pub async fn run_app(listener: TcpListener, app: App, shutdown: impl Future<Output = ()>) {
    let app = Arc::new(app);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(rt) = app.runtime() {
        tasks.push(tokio::spawn(rt.processor.clone().run(stop_rx.clone())));
        tasks.push(tokio::spawn(rt.outbox.clone().run(stop_rx.clone())));
        tasks.push(tokio::spawn(crate::watch::run(
            rt.reloader.clone(),
            app.store().clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(crate::retention::run(
            app.store().clone(),
            rt.retention_days,
            stop_rx.clone(),
        )));
    }
    server::run(listener, app.clone(), shutdown).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let store = app.store().clone();
    drop(app);
    // The last holder closes the store (joining its writer) off the async threads.
    tokio::task::spawn_blocking(move || drop(store)).await.ok();
}
