//! The web console: server-rendered pages over the store's query layer (overview, events, one
//! event, runs, one run with its mails, replay, actions, scripts with a dry run on the samples,
//! state, timers, tokens), served on `console_listen` beside the admin API.
//!
//! # Layout
//!
//! - `session`: the one-time login link, sessions (HttpOnly, SameSite=Strict cookie), CSRF.
//! - `views`: what each page shows, read from the store (blocking reads, off the async threads).
//! - `authoring`: the scripts page and a script's dry run (what `engine check SCRIPT` shows), the
//!   tokens page (a tree per event type and target type).
//! - `templates/`: minijinja templates compiled into the binary, HTML auto-escaping always on;
//!   `static/`: the stylesheet and the one small script (copying a token's expression).
//!
//! Every answer carries a strict Content-Security-Policy (`default-src 'self'`, no inline
//! script), `X-Frame-Options: DENY` and `nosniff`. A mail's HTML part is shown in an iframe with
//! an empty `sandbox` (no scripts, no same origin). No secret is given to a template.

mod authoring;
mod session;
mod views;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use minijinja::{AutoEscape, Environment};

pub use authoring::Authoring;
pub use session::{SESSION_COOKIE, SESSION_IDLE};

use crate::config::Secret;
use crate::ingest::{Admin, AdminError, Answer, Pages, ReplayRequest, ReplayTarget};
use crate::store::Store;
use crate::store::actions::{self, Intervened, Intervention};

/// The largest form the console accepts (a login token, a CSRF token, a uuid).
pub const MAX_FORM_BYTES: usize = 4096;
/// The policy on every answer: only the engine's own files, no inline script, no framing.
/// `frame-src 'self'` lets a mail's HTML show in its sandboxed `srcdoc` iframe.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("events.html", include_str!("templates/events.html")),
    ("event.html", include_str!("templates/event.html")),
    ("runs.html", include_str!("templates/runs.html")),
    ("run.html", include_str!("templates/run.html")),
    ("replay.html", include_str!("templates/replay.html")),
    ("actions.html", include_str!("templates/actions.html")),
    ("message.html", include_str!("templates/message.html")),
    ("scripts.html", include_str!("templates/scripts.html")),
    ("check.html", include_str!("templates/check.html")),
    ("state.html", include_str!("templates/state.html")),
    ("timers.html", include_str!("templates/timers.html")),
    ("tokens.html", include_str!("templates/tokens.html")),
];
const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

/// What the console shows besides the store.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Each hook's id and the URL Okta is configured with.
    pub hooks: Vec<(String, String)>,
    /// Where scripts and modules are, for the source line of a run's error.
    pub scripts_dir: PathBuf,
    pub stdlib_dir: PathBuf,
    /// Whether the System Log backfill polls.
    pub backfill: bool,
}

/// The console's pages.
pub struct Console {
    store: Arc<Store>,
    admin_token: Secret,
    sessions: session::Sessions,
    admin: Arc<dyn Admin>,
    templates: Environment<'static>,
    settings: ConsoleSettings,
    authoring: Authoring,
}

impl Console {
    /// The console and its one-time login token (for the link `serve` prints).
    pub fn new(
        store: Arc<Store>,
        admin_token: Secret,
        admin: Arc<dyn Admin>,
        settings: ConsoleSettings,
    ) -> (Console, String) {
        let mut templates = Environment::new();
        templates.set_auto_escape_callback(|_| AutoEscape::Html);
        for (name, text) in TEMPLATES {
            // Compiled-in templates: a syntax error is a bug caught by every console test.
            if let Err(error) = templates.add_template(name, text) {
                tracing::error!(%error, template = name, "console template does not parse");
            }
        }
        let (sessions, once) = session::Sessions::new();
        (
            Console {
                store,
                admin_token,
                sessions,
                admin,
                templates,
                settings,
                authoring: Authoring::offline(),
            },
            once,
        )
    }

    /// What the scripts page's dry runs and the tokens page know of the config (without it:
    /// [`Authoring::offline`], as `engine check` without a config).
    pub fn with_authoring(mut self, authoring: Authoring) -> Console {
        self.authoring = authoring;
        self
    }

    /// The page at `path_and_query` as a logged-in user gets it (the benches render pages so).
    pub async fn page(&self, path_and_query: &str) -> Answer {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        self.get(path, &parse_form(query.as_bytes()), "bench").await
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> Answer {
        match self
            .templates
            .get_template(name)
            .and_then(|t| t.render(ctx))
        {
            Ok(html) => page(StatusCode::OK, html),
            Err(error) => {
                tracing::error!(%error, template = name, "console page failed to render");
                plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page failed to render (see the engine's log)\n",
                )
            }
        }
    }

    fn message(&self, status: StatusCode, title: &str, text: &str, csrf: Option<&str>) -> Answer {
        let mut a = self.render(
            "message.html",
            minijinja::context! { title, text, csrf => csrf.unwrap_or("") },
        );
        *a.status_mut() = status;
        a
    }

    async fn route(&self, req: Request<Incoming>) -> Answer {
        let path = req.uri().path().to_string();
        let query = parse_form(req.uri().query().unwrap_or("").as_bytes());
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/static/console.css") => asset("text/css; charset=utf-8", CSS),
            (Method::GET, "/static/console.js") => asset("text/javascript; charset=utf-8", JS),
            (Method::GET, "/login") => {
                if let Some(t) = query.get("t") {
                    if self.sessions.take_login_token(t) {
                        return self.logged_in();
                    }
                    return self.login_page(
                        StatusCode::UNAUTHORIZED,
                        "That login link was already used or is not this server's. Log in with the admin token.",
                    );
                }
                self.login_page(StatusCode::OK, "")
            }
            (Method::POST, "/login") => {
                let Some(form) = read_form(req).await else {
                    return plain(StatusCode::BAD_REQUEST, "unreadable or too large form\n");
                };
                let given = form.get("token").map(|t| t.trim()).unwrap_or("");
                if session::same(self.admin_token.expose(), given) {
                    return self.logged_in();
                }
                tracing::warn!("console login with a wrong admin token");
                self.login_page(StatusCode::UNAUTHORIZED, "That is not the admin token.")
            }
            (method, _) => {
                let session = req
                    .headers()
                    .get(header::COOKIE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|c| session::cookie_value(c, SESSION_COOKIE))
                    .map(str::to_string);
                let Some((sid, csrf)) =
                    session.and_then(|sid| self.sessions.csrf(&sid).map(|c| (sid, c)))
                else {
                    if method == Method::GET {
                        return redirect("/login");
                    }
                    return plain(StatusCode::FORBIDDEN, "log in first\n");
                };
                if method == Method::POST {
                    let Some(form) = read_form(req).await else {
                        return plain(StatusCode::BAD_REQUEST, "unreadable or too large form\n");
                    };
                    if !form
                        .get("csrf")
                        .is_some_and(|given| session::same(&csrf, given))
                    {
                        tracing::warn!(path = %path, "console POST without a valid CSRF token");
                        return plain(
                            StatusCode::FORBIDDEN,
                            "missing or wrong CSRF token: reload the page and try again\n",
                        );
                    }
                    return self.post(&path, &form, &sid, &csrf).await;
                }
                if method != Method::GET {
                    return plain(StatusCode::METHOD_NOT_ALLOWED, "GET or POST only\n");
                }
                self.get(&path, &query, &csrf).await
            }
        }
    }

    fn login_page(&self, status: StatusCode, problem: &str) -> Answer {
        let mut a = self.render("login.html", minijinja::context! { problem, csrf => "" });
        *a.status_mut() = status;
        a
    }

    fn logged_in(&self) -> Answer {
        let sid = self.sessions.open();
        let mut a = redirect("/");
        let cookie = format!(
            "{SESSION_COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            SESSION_IDLE.as_secs()
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            a.headers_mut().insert(header::SET_COOKIE, v);
        }
        a
    }

    /// Runs a blocking read of the store off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| format!("the read failed: {e}"))?
    }

    async fn get(&self, path: &str, query: &HashMap<String, String>, csrf: &str) -> Answer {
        let settings = self.settings.clone();
        let q = query.clone();
        let result = match path {
            "/" => self
                .read(move |s| views::overview(s, &settings))
                .await
                .map(|v| ("overview.html", v)),
            "/events" => self
                .read(move |s| views::events(s, &q))
                .await
                .map(|v| ("events.html", v)),
            "/runs" => self
                .read(move |s| views::runs(s, &q))
                .await
                .map(|v| ("runs.html", v)),
            "/replay" => {
                let preview = self
                    .read(move |s| views::replay_preview(s, &q))
                    .await
                    .map(|v| ("replay.html", v));
                // Always the dry run first: what each run would log and do, before confirming.
                match preview {
                    Ok((t, Some(mut view))) => {
                        let target = match query.get("uuid").filter(|u| !u.is_empty()) {
                            Some(u) => ReplayTarget::Event(u.clone()),
                            None => ReplayTarget::Failed,
                        };
                        let script = query.get("script").filter(|s| !s.is_empty()).cloned();
                        let dry = self.admin.dry_run(ReplayRequest { target, script }).await;
                        match dry {
                            Ok(runs) => view["dry_runs"] = runs,
                            Err(e) => view["dry_run_error"] = e.to_string().into(),
                        }
                        view["max_dry_runs"] = crate::process::MAX_DRY_RUNS.into();
                        Ok((t, Some(view)))
                    }
                    other => other,
                }
            }
            "/actions" => self
                .read(move |s| views::actions(s, &q))
                .await
                .map(|v| ("actions.html", v)),
            "/scripts" => {
                let authoring = self.authoring.clone();
                self.read(move |s| authoring::scripts(s, &settings, &authoring))
                    .await
                    .map(|v| ("scripts.html", v))
            }
            "/state" => self
                .read(move |s| views::state(s, &q))
                .await
                .map(|v| ("state.html", v)),
            "/timers" => self
                .read(move |s| views::timers(s, &q))
                .await
                .map(|v| ("timers.html", v)),
            "/tokens" => {
                let authoring = self.authoring.clone();
                self.read(move |s| authoring::tokens(s, &authoring, &q))
                    .await
                    .map(|v| ("tokens.html", v))
            }
            _ => {
                if let Some(uuid) = path.strip_prefix("/events/") {
                    let uuid = percent_decode(uuid);
                    self.read(move |s| views::event(s, &uuid))
                        .await
                        .map(|v| ("event.html", v))
                } else if let Some(id) = path.strip_prefix("/runs/") {
                    let Ok(id) = id.parse::<u64>() else {
                        return self.message(
                            StatusCode::NOT_FOUND,
                            "No such run",
                            "A run id is a number.",
                            Some(csrf),
                        );
                    };
                    self.read(move |s| views::run(s, id, &settings))
                        .await
                        .map(|v| ("run.html", v))
                } else {
                    return self.message(
                        StatusCode::NOT_FOUND,
                        "No such page",
                        "The console has no page at that address.",
                        Some(csrf),
                    );
                }
            }
        };
        self.answer(result, csrf)
    }

    /// A page's answer: its template with its data, or why there is none.
    fn answer(
        &self,
        result: Result<(&str, Option<serde_json::Value>), String>,
        csrf: &str,
    ) -> Answer {
        match result {
            Ok((template, Some(view))) => self.render(
                template,
                minijinja::context! { csrf, ..minijinja::Value::from_serialize(&view) },
            ),
            Ok((_, None)) => self.message(
                StatusCode::NOT_FOUND,
                "Not found",
                "Nothing is stored under that id (it may have been pruned).",
                Some(csrf),
            ),
            Err(e) => self.message(
                StatusCode::SERVICE_UNAVAILABLE,
                "The store cannot be read",
                &e,
                Some(csrf),
            ),
        }
    }

    async fn post(
        &self,
        path: &str,
        form: &HashMap<String, String>,
        sid: &str,
        csrf: &str,
    ) -> Answer {
        match path {
            "/logout" => {
                self.sessions.close(sid);
                let mut a = redirect("/login");
                a.headers_mut().insert(
                    header::SET_COOKIE,
                    HeaderValue::from_static(
                        "engine_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
                    ),
                );
                a
            }
            "/replay" => {
                let target = match (form.get("uuid"), form.get("failed")) {
                    (Some(u), None) if !u.is_empty() => ReplayTarget::Event(u.clone()),
                    (None, Some(_)) => ReplayTarget::Failed,
                    _ => {
                        return self.message(
                            StatusCode::BAD_REQUEST,
                            "Nothing to replay",
                            "Give one event's uuid or choose every failed run.",
                            Some(csrf),
                        );
                    }
                };
                let script = form.get("script").filter(|s| !s.is_empty()).cloned();
                let back = match &target {
                    ReplayTarget::Event(u) => format!("/events/{}", percent_encode(u)),
                    ReplayTarget::Failed => "/runs".to_string(),
                };
                match self.admin.replay(ReplayRequest { target, script }).await {
                    Ok(ids) => {
                        tracing::info!(runs = ids.len(), "replay queued from the console");
                        redirect(&format!("{back}?replayed={}", ids.len()))
                    }
                    Err(AdminError::NoSuchEvent(_)) => self.message(
                        StatusCode::NOT_FOUND,
                        "No such event",
                        "No stored event has that uuid.",
                        Some(csrf),
                    ),
                    Err(AdminError::NoSuchScript(name)) => self.message(
                        StatusCode::NOT_FOUND,
                        "No such script",
                        &format!("No script `{name}` is loaded."),
                        Some(csrf),
                    ),
                    Err(AdminError::Unavailable(e)) => self.message(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "The replay was not queued",
                        &e,
                        Some(csrf),
                    ),
                }
            }
            "/scripts/check" => {
                let Some(script) = form.get("script").filter(|s| !s.is_empty()).cloned() else {
                    return self.message(
                        StatusCode::BAD_REQUEST,
                        "No script given",
                        "The form names no script.",
                        Some(csrf),
                    );
                };
                let settings = self.settings.clone();
                let authoring = self.authoring.clone();
                // Compiling and dry-running take a while: on a blocking thread, like a read.
                let result = self
                    .read(move |s| authoring::check(s, &settings, &authoring, &script))
                    .await
                    .map(|v| ("check.html", v));
                if let Ok((_, None)) = result {
                    return self.message(
                        StatusCode::NOT_FOUND,
                        "No such script",
                        "No file in the scripts directory is that script.",
                        Some(csrf),
                    );
                }
                self.answer(result, csrf)
            }
            "/actions/retry" | "/actions/cancel" => {
                let (what, done) = if path.ends_with("retry") {
                    (Intervention::RetryNow, "retry")
                } else {
                    (Intervention::Cancel, "cancel")
                };
                let Some(id) = form.get("id").filter(|i| !i.is_empty()).cloned() else {
                    return self.message(
                        StatusCode::BAD_REQUEST,
                        "No action given",
                        "The form names no action id.",
                        Some(csrf),
                    );
                };
                let now = crate::util::now_ms();
                let kept = id.clone();
                let result = self
                    .store
                    .write(move |txn| actions::intervene(txn, &kept, what, now))
                    .await;
                match result {
                    Ok(Intervened::Changed(a)) => {
                        tracing::info!(action_id = %a.id, kind = a.kind.as_str(), status = a.status.as_str(), change = done, "action changed from the console");
                        redirect(&format!("/actions?done={done}"))
                    }
                    Ok(Intervened::NotFound) => self.message(
                        StatusCode::NOT_FOUND,
                        "No such action",
                        "No action has that id (it may have been pruned).",
                        Some(csrf),
                    ),
                    Ok(Intervened::Refused(why)) => self.message(
                        StatusCode::CONFLICT,
                        "Not changed",
                        &format!("The action was not changed: {why}."),
                        Some(csrf),
                    ),
                    Err(e) => self.message(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Not changed",
                        &format!("The store could not record it: {e}"),
                        Some(csrf),
                    ),
                }
            }
            _ => self.message(
                StatusCode::NOT_FOUND,
                "No such action",
                "The console has no action at that address.",
                Some(csrf),
            ),
        }
    }
}

impl Pages for Console {
    fn handle(&self, req: Request<Incoming>) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
        Box::pin(async move {
            let mut a = self.route(req).await;
            secure(&mut a);
            a
        })
    }
}

/// The headers every console answer carries.
fn secure(a: &mut Answer) {
    let h = a.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

fn page(status: StatusCode, html: String) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(html)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn plain(status: StatusCode, text: &'static str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    r
}

fn redirect(to: &str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn read_form(req: Request<Incoming>) -> Option<HashMap<String, String>> {
    let collect = Limited::new(req.into_body(), MAX_FORM_BYTES).collect();
    let body = tokio::time::timeout(crate::ingest::BODY_READ_TIMEOUT, collect)
        .await
        .ok()?
        .ok()?
        .to_bytes();
    Some(parse_form(&body))
}

fn parse_form(bytes: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// What [`percent_encode`] leaves alone: RFC 3986's unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `s` as one path segment or query value.
pub(crate) fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}
