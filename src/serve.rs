//! `engine serve`: assembles the store and the hooks from the configuration and runs the server
//! until shutdown, then closes the store after every accepted request has been answered.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{Config, ConfigError, SecretSource};
use crate::secrets::{self, SecretError};
use crate::server::{self, App};
use crate::store::{CommitMode, OpenError, Store};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error(
        "cannot listen on {addr}: {source}\n  hint: is another engine (or program) using that port? Change `listen` in engine.toml"
    )]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Opens the store and resolves every hook's secret. What the admin must configure in Okta is
/// written to `out` (a generated secret only the first time, when it is created).
pub fn prepare(config: &Config, mode: CommitMode, out: &mut dyn Write) -> Result<App, ServeError> {
    let mut hooks = Vec::new();
    let mut notes = Vec::new();
    for hook in &config.hooks {
        let secret = match &hook.secret {
            SecretSource::Env { var, line } => {
                let s = config.read_env(var, "hook.secret_env", *line)?;
                notes.push((hook.id.clone(), format!("the value of ${var}")));
                s
            }
            SecretSource::Generated => {
                std::fs::create_dir_all(&config.data_dir).map_err(|source| {
                    OpenError::CreateDir {
                        path: config.data_dir.clone(),
                        source,
                    }
                })?;
                let path = config.generated_secret_path(&hook.id);
                let (s, created) = secrets::ensure(&path)?;
                if created {
                    notes.push((
                        hook.id.clone(),
                        format!("{}\n    (generated now and stored in {}, mode 0600; it is not printed again)", s.expose(), path.display()),
                    ));
                } else {
                    notes.push((
                        hook.id.clone(),
                        format!("the secret stored in {}", path.display()),
                    ));
                }
                s
            }
        };
        hooks.push((hook.clone(), secret));
    }
    let store = Store::open(&config.data_dir, mode)?;
    let base = format!("http://{}", config.listen);
    let _ = writeln!(out, "engine: store {}", store.path().display());
    for ((hook, _), (_, value)) in hooks.iter().zip(&notes) {
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
    let _ = out.flush();
    Ok(App::new(hooks, store, config.max_body_bytes))
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

/// Runs a prepared app on a bound listener and closes the store afterwards.
pub async fn run_app(listener: TcpListener, app: App, shutdown: impl Future<Output = ()>) {
    let app = Arc::new(app);
    server::run(listener, app.clone(), shutdown).await;
    // Connections that outlived the grace period may still hold the app; the store closes
    // when the last of them is gone.
    if let Ok(app) = Arc::try_unwrap(app) {
        let store = app.into_store();
        tokio::task::spawn_blocking(move || store.close())
            .await
            .ok();
    }
}
