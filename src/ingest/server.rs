//! The HTTP front door: hook verification and delivery, `/healthz`, `/metrics`, and the routing
//! of `/admin/*` (see `admin`).
//!
//! [`run`] is a function of its inputs (a bound listener, the front door, a shutdown future), so
//! tests bind port 0 and pass their own shutdown. Before the answer to a delivery, only
//! authentication, parsing and the durable commit happen; everything else comes after.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::limits::PerAddress;
use super::metrics::{self, HookMetrics, Outcome};
use super::{Front, Hook, Pages, admin, envelope};
use crate::store::NewDelivery;

/// The header Okta's verification request carries (matched case-insensitively by hyper).
pub const VERIFICATION_HEADER: &str = "x-okta-verification-challenge";
/// How long shutdown waits for requests in flight before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long the accept loop pauses after a failed accept (out of file descriptors and the like),
/// instead of spinning on the error.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// At most one warning per this interval about connections closed for their address's cap
/// (each one is counted in `/metrics`): an attacker must not flood the log either.
pub const REFUSAL_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// An HTTP answer, built whole.
pub type Answer = Response<Full<Bytes>>;

/// What a listener serves.
#[derive(Clone)]
enum Role {
    /// `listen`: hooks, `/healthz`, `/metrics`.
    Hooks,
    /// `console_listen`: the admin API, and everything else to the console's pages.
    Console(Arc<dyn Pages>),
}

/// Serves connections from `listener` until `shutdown` resolves, then stops accepting, lets the
/// requests in flight finish (up to [`SHUTDOWN_GRACE`]) and returns.
///
/// At most `max_connections` (of the front's [`ServerLimits`](super::ServerLimits)) are served at
/// once: the loop waits for a free slot before it accepts, so further clients wait in the
/// kernel's backlog instead of failing. A client address holding `max_connections_per_address`
/// has its further connections closed at once, unread: that costs the server nothing, and
/// closing (rather than answering 503) gives a client that is flooding no work to wait for.
pub async fn run(listener: TcpListener, app: Arc<Front>, shutdown: impl Future<Output = ()>) {
    serve(listener, app, Role::Hooks, shutdown).await;
}

/// Serves the admin API (`/admin/*`) and, for every other path, `pages` (the web console) from
/// `listener` until `shutdown` resolves, with the same caps and graceful shutdown as [`run`].
pub async fn run_console(
    listener: TcpListener,
    app: Arc<Front>,
    pages: Arc<dyn Pages>,
    shutdown: impl Future<Output = ()>,
) {
    serve(listener, app, Role::Console(pages), shutdown).await;
}

async fn serve(
    listener: TcpListener,
    app: Arc<Front>,
    role: Role,
    shutdown: impl Future<Output = ()>,
) {
    let limits = app.limits;
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = PerAddress::new(limits.max_connections_per_address);
    let mut last_refusal_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        // Back-pressure: a slot first, then accept.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(s) => s,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let Some(address_slot) = per_address.claim(peer.ip()) else {
                    drop(stream);
                    let refused = app.connections.refused_per_address.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::debug!(peer = %peer.ip(), "connection closed: its address holds the most connections allowed");
                    if last_refusal_warning.is_none_or(|t| t.elapsed() >= REFUSAL_WARN_INTERVAL) {
                        last_refusal_warning = Some(Instant::now());
                        tracing::warn!(
                            peer = %peer.ip(),
                            max_per_address = limits.max_connections_per_address,
                            refused_total = refused,
                            "closing connections from an address that holds the most allowed (see engine_connections_refused_total)"
                        );
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                // A connection from this host: over loopback, or to the address it came from
                // (a server bound to one interface address sees its own host's clients so).
                let same_host = peer.ip().is_loopback()
                    || stream.local_addr().is_ok_and(|local| local.ip() == peer.ip());
                let open = app.clone();
                let app = app.clone();
                let role = role.clone();
                let conn = http.serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| {
                        let app = app.clone();
                        let role = role.clone();
                        async move {
                            let answer = match &role {
                                Role::Hooks => handle(&app, req).await,
                                Role::Console(pages) => console(&app, pages.as_ref(), req, same_host).await,
                            };
                            Ok::<_, Infallible>(answer)
                        }
                    }),
                );
                let conn = graceful.watch(conn);
                open.connections.open.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    if let Err(error) = conn.await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    open.connections.open.fetch_sub(1, Ordering::Relaxed);
                    drop((slot, address_slot));
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still in flight after the shutdown grace period");
        }
    }
}

/// The console listener: `/admin/*` is the admin API, the rest the console's pages.
async fn console(
    app: &Front,
    pages: &dyn Pages,
    req: Request<Incoming>,
    same_host: bool,
) -> Answer {
    if let Some(action) = req.uri().path().strip_prefix("/admin/") {
        let action = action.to_string();
        return admin::handle(app, &action, req, same_host).await;
    }
    pages.handle(req).await
}

async fn handle(app: &Front, req: Request<Incoming>) -> Answer {
    let path = req.uri().path();
    if path.starts_with("/admin/") {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the admin API is served on `console_listen`, not on the hook listener",
        );
    }
    if let Some(id) = path.strip_prefix("/hooks/") {
        let id = id.trim_end_matches('/').to_string();
        return hook_request(app, &id, req).await;
    }
    match (req.method(), path) {
        (&Method::GET, "/healthz") => match app.store.probe().await {
            Ok(()) => text(StatusCode::OK, "ok\n"),
            Err(cause) => {
                tracing::error!(error = %cause, "health probe failed");
                text(StatusCode::SERVICE_UNAVAILABLE, "store not writable\n")
            }
        },
        (&Method::GET, "/metrics") => {
            let depths = app.store.history().depths().ok();
            let mut body = String::new();
            metrics::render(
                &mut body,
                app.hook_order
                    .iter()
                    .filter_map(|id| app.hooks.get(id).map(|h| (id.as_str(), &h.metrics))),
                app.unknown_hook_requests.load(Ordering::Relaxed),
                depths,
            );
            metrics::render_connections(
                &mut body,
                app.connections.open.load(Ordering::Relaxed),
                app.limits.max_connections,
                app.connections.refused_per_address.load(Ordering::Relaxed),
            );
            metrics::render_writer(&mut body, app.store.writer_stats().read());
            for source in &app.metrics {
                source.render_metrics(&mut body);
            }
            let mut r = text(StatusCode::OK, &body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint; hooks are served at /hooks/<id>",
        ),
    }
}

async fn hook_request(app: &Front, id: &str, req: Request<Incoming>) -> Answer {
    let Some(hook) = app.hooks.get(id) else {
        app.unknown_hook_requests.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::NOT_FOUND,
            "unknown_hook",
            &format!("no hook with id `{}` is configured", printable(id)),
        );
    };
    match *req.method() {
        Method::GET => verify(app, id, hook, &req),
        Method::POST => deliver(app, hook, req).await,
        _ => {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "hooks accept GET (verification) and POST (delivery)",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
            r
        }
    }
}

enum Auth {
    Ok,
    Missing,
    Wrong,
}

fn authenticate(hook: &Hook, req: &Request<Incoming>) -> Auth {
    let mut values = req
        .headers()
        .get_all(hook.config.auth_header.as_str())
        .iter();
    let Some(value) = values.next() else {
        return Auth::Missing;
    };
    let expected = hook.secret.expose().as_bytes();
    // A repeated auth header is ambiguous: refuse it rather than pick one.
    if values.next().is_some() {
        return Auth::Wrong;
    }
    if bool::from(value.as_bytes().ct_eq(expected)) {
        Auth::Ok
    } else {
        Auth::Wrong
    }
}

/// Okta's one-time verification: echo the challenge. When it was answered is recorded (without
/// waiting for the commit: the answer does not depend on it), for the console's overview.
fn verify(app: &Front, id: &str, hook: &Hook, req: &Request<Incoming>) -> Answer {
    // Okta does not document sending the auth header here; a wrong one is still refused.
    if let Auth::Wrong = authenticate(hook, req) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the auth header does not match this hook's secret",
        );
    }
    let Some(challenge) = req.headers().get(VERIFICATION_HEADER) else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing_challenge",
            "a GET to a hook is Okta's verification request and needs the x-okta-verification-challenge header; deliveries are POSTed",
        );
    };
    hook.metrics.verification();
    let (id, at) = (id.to_string(), crate::util::now_ms());
    app.store
        .write_detached(move |txn| crate::store::counts::note_verified(txn, &id, at));
    let challenge = String::from_utf8_lossy(challenge.as_bytes());
    let body = serde_json::json!({ "verification": challenge }).to_string();
    json(StatusCode::OK, body)
}

async fn deliver(app: &Front, hook: &Hook, req: Request<Incoming>) -> Answer {
    let m = &hook.metrics;
    match authenticate(hook, &req) {
        Auth::Ok => {}
        Auth::Missing => {
            m.delivery(Outcome::Unauthorized);
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &format!(
                    "missing the `{}` header that carries this hook's secret",
                    hook.config.auth_header
                ),
            );
        }
        Auth::Wrong => {
            m.delivery(Outcome::Unauthorized);
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the auth header does not match this hook's secret",
            );
        }
    }
    let max = app.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        m.delivery(Outcome::TooLarge);
        return too_large(max);
    }
    let timeout = app.limits.body_read_timeout;
    let read = tokio::time::timeout(timeout, Limited::new(req.into_body(), max).collect()).await;
    let Ok(read) = read else {
        m.delivery(Outcome::Timeout);
        tracing::debug!(hook = %hook.config.id, "delivery body did not arrive in time");
        return body_timeout(timeout);
    };
    let body = match read {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            m.delivery(Outcome::TooLarge);
            return too_large(max);
        }
        Err(cause) => {
            m.delivery(Outcome::Invalid);
            tracing::debug!(error = %cause, "reading a delivery body failed");
            return error_owned(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("could not read the request body: {cause}"),
            );
        }
    };
    let received_ms = crate::util::now_ms();
    let parsed = match envelope::parse(hook.config.kind, &body) {
        Ok(p) => p,
        Err(bad) => {
            let reason = bad.to_string();
            return match app
                .store
                .quarantine(&hook.config.id, received_ms, &reason, body)
                .await
            {
                Ok(()) => {
                    m.delivery(Outcome::Invalid);
                    tracing::warn!(hook = %hook.config.id, reason = %reason, "authenticated body quarantined");
                    error_owned(StatusCode::BAD_REQUEST, bad.code(), reason)
                }
                Err(cause) => unavailable(m, &cause),
            };
        }
    };
    let delivery = NewDelivery {
        hook: hook.config.id.clone(),
        received_ms,
        body,
        parsed,
    };
    match app.store.store_delivery(delivery).await {
        Ok(stored) => {
            if stored.duplicate_delivery {
                m.delivery(Outcome::Duplicate);
            } else {
                m.delivery(Outcome::Accepted);
                m.events(stored.events, stored.duplicate_events);
            }
            Response::new(Full::new(Bytes::new()))
        }
        Err(cause) => unavailable(m, &cause),
    }
}

pub(crate) fn unavailable(m: &HookMetrics, cause: &crate::store::WriteError) -> Answer {
    /// While the store fails, every delivery fails: one line per interval says so.
    static LOG: crate::util::Throttle =
        crate::util::Throttle::new(crate::store::FAILURE_LOG_INTERVAL);
    m.delivery(Outcome::Unavailable);
    if let Some(left_out) = LOG.ready() {
        tracing::error!(error = %cause, left_out, "delivery not stored");
    }
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        "the delivery could not be stored; retry later",
    )
}

/// 408 for a body that did not arrive within the limit; the connection is closed after it (the
/// rest of the body may still come, and cannot be told from a next request).
pub(crate) fn body_timeout(timeout: Duration) -> Answer {
    let mut r = error_owned(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        format!(
            "the request body did not arrive within {} s (is Content-Length larger than the body?)",
            timeout.as_secs_f64()
        ),
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn too_large(max: usize) -> Answer {
    error_owned(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the body is larger than max_body_bytes ({max} bytes)"),
    )
}

/// Hook ids from the URL, made safe to echo.
pub(crate) fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(100).collect()
}

pub(crate) fn text(status: StatusCode, body: &str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub(crate) fn json(status: StatusCode, body: String) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    json(
        status,
        serde_json::json!({ "error": code, "message": message }).to_string(),
    )
}

pub(crate) fn error_owned(status: StatusCode, code: &str, message: String) -> Answer {
    error(status, code, &message)
}
