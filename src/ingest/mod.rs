//! The ingest layer: the HTTP front door that receives Okta's deliveries and stores them
//! durably before answering, the admin API beside it, the envelope parser, and the generated
//! hook secrets. Knows nothing of scripts, runs or mail: the admin API's replay and the metrics
//! of the other parts come in through [`Admin`] and [`MetricsSource`], which the app wires in.
//!
//! # Layout
//!
//! - `server`: [`run`] (per-connection hyper http1, graceful shutdown, the connection caps),
//!   routing, verification, delivery, `/healthz`, `/metrics`.
//! - `limits`: [`ServerLimits`] (connections in total and per address, header and body
//!   timeouts), derived from the open-file limit.
//! - [`Pages`]: the console's pages, routed to on the console listener ([`run_console`]).
//! - `admin`: `POST /admin/read`, `/admin/replay`, `/admin/remove-sample` and `/admin/backfill`
//!   (this host only, with the admin token).
//! - [`envelope`]: the only envelope parser (delivery bodies and payload files).
//! - `metrics`: the per-hook counters and the receiver's Prometheus families.
//! - `secrets`: generated secrets kept under the data dir (mode 0600).

mod admin;
pub mod envelope;
mod limits;
mod metrics;
mod secrets;
mod server;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

pub use admin::{
    ADMIN_TOKEN_FILE, ADMIN_TOKEN_HEADER, Admin, AdminError, BackfillRequest, MAX_ADMIN_BODY_BYTES,
    ReplayRequest, ReplayTarget,
};
pub use limits::{
    BODY_READ_TIMEOUT, DEFAULT_FD_LIMIT, FD_RESERVE, HEADER_READ_TIMEOUT, MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_ADDRESS, MIN_CONNECTIONS, PER_ADDRESS_SHARE, ServerLimits,
};
pub use metrics::{HookMetrics, Outcome};
pub use secrets::{
    GENERATED_SECRET_BYTES, SecretError, ensure as ensure_secret,
    register_existing as register_existing_secret,
};
pub use server::{Answer, SHUTDOWN_GRACE, VERIFICATION_HEADER, run, run_console};

/// The web console's pages, served on `console_listen` beside the admin API (the app wires them
/// in; ingest only routes to them).
pub trait Pages: Send + Sync {
    /// Answers one request for a path outside `/admin/`.
    fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send + '_>>;
}

use crate::config::{HookConfig, Secret};
use crate::store::Store;
use crate::util::prom::MetricsSource;
use metrics::ConnectionStats;

/// A configured hook with its resolved secret.
pub struct Hook {
    pub config: HookConfig,
    pub secret: Secret,
    pub metrics: HookMetrics,
}

/// Everything a request needs: the hooks, the store, and what the app wired in.
pub struct Front {
    hooks: HashMap<String, Hook>,
    hook_order: Vec<String>,
    store: Arc<Store>,
    max_body_bytes: usize,
    unknown_hook_requests: AtomicU64,
    /// The admin API's backend and its token (absent: no admin endpoint).
    admin: Option<(Arc<dyn Admin>, Secret)>,
    /// The other parts' metrics, appended to `/metrics`.
    metrics: Vec<Arc<dyn MetricsSource>>,
    /// Connection caps and slow-client timeouts.
    limits: ServerLimits,
    connections: ConnectionStats,
}

impl Front {
    pub fn new(
        hooks: Vec<(HookConfig, Secret)>,
        store: Arc<Store>,
        max_body_bytes: usize,
    ) -> Front {
        let hook_order = hooks.iter().map(|(c, _)| c.id.clone()).collect();
        let hooks = hooks
            .into_iter()
            .map(|(config, secret)| {
                (
                    config.id.clone(),
                    Hook {
                        config,
                        secret,
                        metrics: HookMetrics::default(),
                    },
                )
            })
            .collect();
        Front {
            hooks,
            hook_order,
            store,
            max_body_bytes,
            unknown_hook_requests: AtomicU64::new(0),
            admin: None,
            metrics: Vec::new(),
            limits: ServerLimits::default(),
            connections: ConnectionStats::default(),
        }
    }

    /// Serves with these limits instead of those derived from the current open-file limit.
    pub fn with_limits(mut self, limits: ServerLimits) -> Front {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> ServerLimits {
        self.limits
    }

    /// Serves the admin API (`engine replay`, the history commands) with `admin` behind it,
    /// for requests that carry `token`.
    pub fn with_admin(mut self, admin: Arc<dyn Admin>, token: Secret) -> Front {
        self.admin = Some((admin, token));
        self
    }

    /// Appends `source`'s families to `/metrics`.
    pub fn with_metrics(mut self, source: Arc<dyn MetricsSource>) -> Front {
        self.metrics.push(source);
        self
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}
