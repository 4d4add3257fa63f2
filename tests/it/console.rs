//! The web console on `console_listen`, spoken to over HTTP by a plain client: login (the printed
//! one-time link, the token form), the session cookie, redirects without it, CSRF on every POST,
//! the security headers, escaping of attacker-controlled payload fields, and the pages a user
//! follows: a delivered event, the failed run of a broken script with its error line, a replay
//! after the fix, the rendered mail; the scripts page and its dry run on the samples, the state
//! and timers pages, the tokens tree.

use std::time::Duration;

use bytes::Bytes;
use engine::util::http_client::{self as client, Answer};
use hyper::Method;

use crate::support::*;

/// The payload field an attacker controls (an Okta user's display name).
pub const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)>";

pub const BROKEN: &str = "//! on: user.lifecycle.create\nlet who = event.actor.displayName;\nlet n = 1 / 0;\nlog(`never ${who}`);\n";
pub const FIXED: &str = "//! on: user.lifecycle.create\nlet who = event.actor.displayName;\nsend_email(#{ to: \"ops@example.com\", subject: `New user ${who}`, body: `Say hello to ${who}.`, html: `<p>Hello <b>${who}</b></p>` });\n";

/// A `user.lifecycle.create` LogEvent whose actor's displayName is [`HOSTILE_NAME`].
pub fn hostile_event(uuid: &str) -> String {
    serde_json::json!({
        "uuid": uuid,
        "published": "2024-05-01T10:00:00.000Z",
        "eventType": "user.lifecycle.create",
        "displayMessage": "Create okta user",
        "actor": { "id": "00u1", "type": "User", "alternateId": "admin@example.com", "displayName": HOSTILE_NAME },
        "target": [{ "id": "00u2", "type": "User", "alternateId": "new@example.com", "displayName": "New Person" }]
    })
    .to_string()
}

pub fn call(method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(client::request(
        method,
        url,
        &headers,
        Bytes::from(body.to_string()),
    ))
    .expect("the console answers")
}

/// A page's HTML with minijinja's escaped slash (`&#x2f;`, harmless) written back as `/`, so
/// that assertions can name paths.
fn page(a: &Answer) -> String {
    a.text().replace("&#x2f;", "/")
}

fn header(a: &Answer, name: &str) -> String {
    a.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// `engine_session=…` from a login answer's `Set-Cookie`.
fn session_cookie(a: &Answer) -> String {
    let set = header(a, "set-cookie");
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    set.split(';').next().unwrap().to_string()
}

/// The CSRF token in a page's forms.
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("the page has a CSRF field");
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// A server with `scripts` and one hostile event delivered, once a run of it has `status`.
fn served_one_event(
    scripts: &[(&str, &str)],
    uuid: &str,
    status: &str,
) -> (tempfile::TempDir, ServeProcess) {
    let (dir, port) = engine_setup("", scripts);
    let p = ServeProcess::start(dir.path(), port, &[("ENGINE_TEST_SECRET", SECRET)]);
    assert_eq!(
        post_blocking(&format!("{}/hooks/test", p.url), wrap(&hostile_event(uuid))),
        200
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            history_json(dir.path(), "runs")
                .iter()
                .any(|r| r["status"] == status)
        }),
        "no run {status}: {:?}\n{}",
        history_json(dir.path(), "runs"),
        p.log()
    );
    (dir, p)
}

/// A server with the broken script and one hostile event delivered; its failed run is recorded.
pub fn served_with_a_failed_run(uuid: &str) -> (tempfile::TempDir, ServeProcess) {
    served_one_event(&[("greet.rhai", BROKEN)], uuid, "failed")
}

/// Without a session each of `paths` answers with a redirect to the login page.
fn assert_login_required(console: &str, paths: &[&str]) {
    for path in paths {
        let a = call(Method::GET, &format!("{console}{path}"), &[], "");
        assert_eq!(a.status, 303, "{path}");
        assert_eq!(header(&a, "location"), "/login", "{path}");
    }
}

/// A logged-in console session: GETs with its cookie, form POSTs with it.
struct Session {
    console: String,
    cookie: String,
}

impl Session {
    /// Logs in through the server's printed one-time link.
    fn login(p: &ServeProcess) -> Session {
        let a = call(Method::GET, &p.login_link(), &[], "");
        Session::with_cookie(p, session_cookie(&a))
    }

    fn with_cookie(p: &ServeProcess, cookie: String) -> Session {
        Session {
            console: p.console_url(),
            cookie,
        }
    }

    fn get(&self, path: &str) -> Answer {
        let url = format!("{}{path}", self.console);
        call(Method::GET, &url, &[("cookie", &self.cookie)], "")
    }

    fn post(&self, path: &str, body: &str) -> Answer {
        let url = format!("{}{path}", self.console);
        let form = [
            ("cookie", self.cookie.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        call(Method::POST, &url, &form, body)
    }
}

#[test]
fn console_login_pages_csrf_and_escaping_over_http() {
    let uuid = "console-http-1";
    let (dir, p) = served_with_a_failed_run(uuid);
    let console = p.console_url();
    assert_ne!(console, p.url, "the console has its own listener");

    // Without a session every page redirects to the login page; POSTs are refused.
    assert_login_required(
        &console,
        &[
            "/",
            "/events",
            &format!("/events/{uuid}"),
            "/runs",
            "/runs/1",
            "/replay?failed=1",
            "/nope",
        ],
    );
    let a = call(Method::POST, &format!("{console}/replay"), &[], "failed=1");
    assert_eq!(a.status, 403);
    // The hook listener does not serve the console or the admin API.
    assert_eq!(
        call(Method::GET, &format!("{}/", p.url), &[], "").status,
        404
    );
    assert_eq!(
        call(Method::POST, &format!("{}/admin/read", p.url), &[], "{}").status,
        404
    );

    // The login page, with a strict policy.
    let a = call(Method::GET, &format!("{console}/login"), &[], "");
    assert_eq!(a.status, 200);
    let csp = header(&a, "content-security-policy");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header(&a, "x-frame-options"), "DENY");
    assert_eq!(header(&a, "x-content-type-options"), "nosniff");
    // A wrong token: refused, and no cookie.
    let a = call(
        Method::POST,
        &format!("{console}/login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "token=wrong",
    );
    assert_eq!(a.status, 401);
    assert!(header(&a, "set-cookie").is_empty());

    // The printed link logs in once.
    let link = p.login_link();
    assert!(link.starts_with(&format!("{console}/login?t=")), "{link}");
    let a = call(Method::GET, &link, &[], "");
    assert_eq!(a.status, 303, "{}", a.text());
    assert_eq!(header(&a, "location"), "/");
    let cookie = session_cookie(&a);
    let again = call(Method::GET, &link, &[], "");
    assert_eq!(again.status, 401, "the link works once");
    assert!(header(&again, "set-cookie").is_empty());
    // The admin token in the form logs in too.
    let token = std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap();
    let a = call(
        Method::POST,
        &format!("{console}/login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        &format!("token={}", token.trim()),
    );
    assert_eq!(a.status, 303);
    session_cookie(&a);
    let session = Session::with_cookie(&p, cookie);
    let get = |path: &str| session.get(path);

    // The overview: the hook, the chart, the failure.
    let a = get("/");
    assert_eq!(a.status, 200, "{}", a.text());
    let html = page(&a);
    assert!(
        html.contains("/hooks/test") && html.contains("<svg"),
        "{html}"
    );
    assert!(html.contains("greet"), "the script is listed: {html}");
    assert!(html.contains("actions queued"), "{html}");
    // Verified as far as the engine can tell: it delivers; once Okta's verification request is
    // answered, when.
    assert!(html.contains("delivering (verified before"), "{html}");
    let verification = call(
        Method::GET,
        &format!("{}/hooks/test", p.url),
        &[("x-okta-verification-challenge", "abc")],
        "",
    );
    assert_eq!(verification.status, 200);
    assert!(
        wait_until(Duration::from_secs(10), || page(&get("/"))
            .contains(">verified 20")),
        "{}",
        page(&get("/"))
    );
    assert!(
        html.contains("<meta http-equiv=\"refresh\""),
        "the overview refreshes itself: {html}"
    );
    assert!(
        !html.contains(token.trim()),
        "the admin token is never rendered"
    );
    assert!(!html.contains(SECRET), "the hook secret is never rendered");

    // The events list and the event: the hostile name escaped, never markup.
    let html = page(&get("/events"));
    assert!(html.contains(uuid), "{html}");
    let html = page(&get(&format!("/events?q={uuid}")));
    assert!(
        html.contains(&format!("/events/{uuid}")),
        "search by uuid: {html}"
    );
    let html = page(&get("/events?type=user.session.start"));
    assert!(
        !html.contains(&format!("/events/{uuid}")),
        "filter by type: {html}"
    );
    let html = page(&get("/events?q=admin%40example.com"));
    assert!(
        html.contains(&format!("/events/{uuid}")),
        "search by actor: {html}"
    );
    let a = get(&format!("/events/{uuid}"));
    assert_eq!(a.status, 200);
    let html = page(&a);
    assert!(
        !html.contains(HOSTILE_NAME),
        "raw markup from the payload: {html}"
    );
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    assert!(
        html.contains("event.actor.displayName"),
        "its tokens: {html}"
    );
    assert!(html.contains("/runs/"), "the runs it caused: {html}");
    assert_eq!(get("/events/no-such-uuid").status, 404);

    // The failed run: its error with the source line and caret.
    let runs = history_json(dir.path(), "runs");
    let failed = runs.iter().find(|r| r["status"] == "failed").unwrap();
    let id = failed["id"].as_u64().unwrap();
    let html = page(&get(&format!("/runs/{id}")));
    assert!(html.contains("greet.rhai:3"), "{html}");
    assert!(html.contains("let n = 1 / 0;"), "the source line: {html}");
    assert!(html.contains("class=\"caret\""), "{html}");
    assert_eq!(get("/runs/999999").status, 404);
    assert_eq!(get("/runs/x").status, 404);

    // Replay: the confirmation shows what will run; a POST without the CSRF token is refused.
    let html = page(&get("/replay?failed=1"));
    assert!(html.contains(&format!("/runs/{id}")), "{html}");
    // The dry run comes first: the broken script would fail again, at its line.
    assert!(
        html.contains("Dry run") && html.contains("would fail") && html.contains("greet.rhai:3"),
        "{html}"
    );
    let csrf = csrf_of(&html);
    let a = session.post("/replay", "failed=1");
    assert_eq!(a.status, 403, "no CSRF token");
    let a = session.post("/replay", "failed=1&csrf=forged");
    assert_eq!(a.status, 403, "a wrong CSRF token");
    assert_eq!(
        history_json(dir.path(), "runs").len(),
        runs.len(),
        "nothing was replayed"
    );

    // Fix the script (hot reload): the dry run shows the mail it would send; then replay from
    // the console, see the run succeed and its mail.
    std::fs::write(dir.path().join("scripts/greet.rhai"), FIXED).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let html = page(&get("/replay?failed=1"));
            html.contains("would succeed") && html.contains("email: mail to ops@example.com")
        }),
        "{}",
        page(&get("/replay?failed=1"))
    );
    let mut succeeded = None;
    assert!(
        wait_until(Duration::from_secs(30), || {
            let a = session.post("/replay", &format!("failed=1&csrf={csrf}"));
            assert_eq!(a.status, 303, "{}", a.text());
            std::thread::sleep(Duration::from_millis(500));
            succeeded = history_json(dir.path(), "runs")
                .into_iter()
                .find(|r| r["status"] == "succeeded");
            succeeded.is_some()
        }),
        "no replay succeeded: {:#?}",
        history_json(dir.path(), "runs")
    );
    let run = succeeded.unwrap();
    let html = page(&get(&format!("/runs/{}", run["id"])));
    assert!(html.contains("ops@example.com"), "{html}");
    assert!(
        html.contains("New user &lt;img"),
        "the subject, escaped: {html}"
    );
    assert!(
        html.contains("<iframe class=\"mail-html\" sandbox=\"\""),
        "{html}"
    );
    assert!(!html.contains("<b><img"), "{html}");
    // The failed list is empty now.
    let html = page(&get("/runs?failed=1"));
    assert!(html.contains("No runs."), "{html}");

    // Logging out ends the session.
    let a = session.post("/logout", &format!("csrf={csrf}"));
    assert_eq!(a.status, 303);
    assert_eq!(get("/").status, 303);
}

/// A script that stores more keys than one state page holds, one of them named after the
/// hostile display name with it in the value, and schedules a timer with it in its arguments.
pub const REMEMBERS: &str = "//! on: user.lifecycle.create\n//! hook: test\nlet who = event.actor.displayName;\nfor i in 0..105 { state::set(`k${i}`, i); }\nstate::set(`name:${who}`, #{ name: who, n: 1 });\nschedule(#{ after: \"3d\", run: \"remind\", args: #{ who: who }, key: `remind:${who}` });\nlog(`remembered ${who}`);\nfn remind(args) { log(args.who); }\n";
/// A script that does not compile (line 3).
pub const NO_COMPILE: &str = "//! on: user.account.lock\nlet x = 1;\nlet y = ;\n";

/// The scripts page (state, subscriptions, a load error's line, the dry run on the samples as a
/// CSRF-checked POST), the state and timers pages (paginated), and the tokens page: closed
/// without a session, every hostile value text.
#[test]
fn console_scripts_state_timers_and_tokens_over_http() {
    let uuid = "console-scripts-1";
    let scripts = [
        ("remembers.rhai", REMEMBERS),
        ("nocompile.rhai", NO_COMPILE),
    ];
    let (dir, p) = served_one_event(&scripts, uuid, "succeeded");
    let console = p.console_url();

    // Without a session: the login page; the dry run's POST is refused.
    assert_login_required(
        &console,
        &[
            "/scripts",
            "/state",
            "/timers",
            "/tokens",
            "/state?script=remembers",
        ],
    );
    let urlencoded = ("content-type", "application/x-www-form-urlencoded");
    let a = call(
        Method::POST,
        &format!("{console}/scripts/check"),
        &[urlencoded],
        "script=remembers",
    );
    assert_eq!(a.status, 403);

    let session = Session::login(&p);
    let get = |path: &str| session.get(path);
    let post = |body: String| session.post("/scripts/check", &body);

    // The scripts page: each script's state and subscriptions; the broken one's error line.
    let a = get("/scripts");
    assert_eq!(a.status, 200, "{}", a.text());
    let html = page(&a);
    assert!(
        html.contains("href=\"/scripts\""),
        "the nav links it: {html}"
    );
    for want in [
        "remembers",
        "nocompile",
        "<code>user.lifecycle.create</code>",
        "<code>user.account.lock</code>",
        "<code>test</code>",
        "every hook",
        "error (not loaded)",
        "nocompile.rhai:3",
        "let y = ;",
        "class=\"caret\"",
        "Dry run on the samples",
        "/runs?script=remembers",
    ] {
        assert!(html.contains(want), "{want}: {html}");
    }
    let csrf = csrf_of(&html);

    // The dry run: a POST with the CSRF token, answering what `engine check` shows.
    assert_eq!(post("script=remembers".into()).status, 403, "no CSRF token");
    assert_eq!(
        post("script=remembers&csrf=forged".into()).status,
        403,
        "a wrong CSRF token"
    );
    let a = post(format!("script=remembers&csrf={csrf}"));
    assert_eq!(a.status, 200, "{}", a.text());
    let html = page(&a);
    assert!(html.contains("dry runs (nothing is sent; now = "), "{html}");
    assert!(html.contains(uuid), "the captured sample: {html}");
    assert!(html.contains("checked 1 script against 1 sample"), "{html}");
    assert!(
        html.contains("remembered &lt;img"),
        "the log, escaped: {html}"
    );
    assert!(!html.contains(HOSTILE_NAME), "raw markup: {html}");
    let a = post(format!("script=nocompile&csrf={csrf}"));
    assert_eq!(a.status, 200, "{}", a.text());
    let html = page(&a);
    assert!(
        html.contains("has findings that fail") && html.contains("nocompile.rhai:3"),
        "{html}"
    );
    for bad in ["nope", "../remembers", "remembers.rhai", ""] {
        let a = post(format!("script={bad}&csrf={csrf}"));
        assert!(matches!(a.status, 400 | 404), "{bad}: {}", a.status);
    }
    // Nothing was sent or stored by the dry runs.
    let runs = history_json(dir.path(), "runs");
    assert_eq!(runs.len(), 1, "{runs:?}");

    // The state, two pages of it: values as pretty JSON, every one escaped.
    let a = get("/state");
    assert_eq!(a.status, 200, "{}", a.text());
    let html = page(&a);
    assert!(html.contains("<code>k0</code>"), "{html}");
    assert!(!html.contains(HOSTILE_NAME), "raw markup: {html}");
    let next = html
        .split("href=\"")
        .filter_map(|s| s.split('"').next())
        .find(|h| h.starts_with("/state?after_script="))
        .expect("a next page")
        .replace("&amp;", "&");
    let html = page(&get(&next));
    assert!(
        html.contains("name:&lt;img src=x onerror=alert(1)&gt;"),
        "the hostile key, escaped: {html}"
    );
    assert!(
        html.contains("&quot;name&quot;: &quot;&lt;img src=x onerror=alert(1)&gt;&quot;"),
        "the value as pretty JSON, escaped: {html}"
    );
    assert!(!html.contains(HOSTILE_NAME), "raw markup: {html}");
    assert!(!html.contains("<code>k0</code>"), "the second page: {html}");
    let html = page(&get("/state?script=nobody"));
    assert!(html.contains("No state stored"), "{html}");

    // The timers: the pending one, its arguments escaped, the run and event that scheduled it.
    let html = page(&get("/timers"));
    assert!(html.contains("<code>remind</code>"), "{html}");
    assert!(html.contains(&format!("/events/{uuid}")), "{html}");
    assert!(html.contains(&format!("/runs/{}", runs[0]["id"])), "{html}");
    assert!(html.contains("remind:&lt;img"), "the key, escaped: {html}");
    assert!(!html.contains(HOSTILE_NAME), "raw markup: {html}");

    // The tokens: a tree per event type and target type, each expression a copy button.
    let html = page(&get("/tokens"));
    for want in [
        "user.lifecycle.create",
        "data-copy=\"event.actor.displayName\"",
        "target User",
        "data-copy=\"okta::target(event, &quot;User&quot;).alternateId\"",
        "data-copy=\"delivery.hook\"",
        "<details",
    ] {
        assert!(html.contains(want), "{want}: {html}");
    }
    assert!(!html.contains(HOSTILE_NAME), "raw markup: {html}");
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    let html = page(&get("/tokens?type=user.session.start"));
    assert!(html.contains("no samples of event type"), "{html}");
}

#[test]
fn console_listen_empty_turns_console_and_admin_api_off() {
    let (dir, port) = engine_setup("", &[]);
    let toml = dir.path().join("engine.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("console_listen = \"\"\n{text}")).unwrap();
    let p = ServeProcess::start(dir.path(), port, &[("ENGINE_TEST_SECRET", SECRET)]);
    assert!(!p.printed().contains("console on"), "{}", p.printed());
    let o = run_engine(dir.path(), &["events"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("console_listen"), "{}", stderr(&o));
}

#[test]
fn a_bad_console_listen_is_a_config_error() {
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("engine.toml"),
        "console_listen = \"localhost\"\n",
    )
    .unwrap();
    let o = run_engine(dir.path(), &["serve"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`console_listen`") && stderr(&o).contains("engine.toml:1"),
        "{}",
        stderr(&o)
    );
}

/// Where the browser tests write their screenshots (look at them: would a user understand?).
pub const SCREENSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/console-screenshots");
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: the console's browser tests need Debian's Chromium and its WebDriver \
             (`apt-get install -y chromium chromium-driver`, as .ci/run does)"
        );
    }
    let port = free_port();
    let child = std::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let addr = format!("127.0.0.1:{port}");
    assert!(
        wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(
            &addr
        )
        .is_ok()),
        "chromedriver never listened on {addr}"
    );
    Driver {
        child,
        url: format!("http://{addr}"),
    }
}

async fn browser(driver: &Driver) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_string(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100"],
        }),
    );
    fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session through chromedriver")
}

async fn screenshot(c: &fantoccini::Client, name: &str) {
    std::fs::create_dir_all(SCREENSHOTS).unwrap();
    let png = c.screenshot().await.expect("a screenshot");
    std::fs::write(format!("{SCREENSHOTS}/{name}.png"), png).unwrap();
}

/// Clicks the element `at` (every click here leaves the page) and waits for the next page: its
/// URL differs and it has loaded. A busy machine takes a while; reading before that would read
/// the old page.
async fn click(c: &fantoccini::Client, at: fantoccini::Locator<'_>) {
    let before = c.current_url().await.unwrap();
    c.find(at)
        .await
        .unwrap_or_else(|e| panic!("nothing to click: {e}"))
        .click()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let moved = c.current_url().await.is_ok_and(|u| u != before);
        let loaded = c
            .execute("return document.readyState", vec![])
            .await
            .is_ok_and(|v| v == "complete");
        if moved && loaded {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the click did not lead to another page (still {before})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many `<img src=x>` the page's DOM holds (the hostile name's, if it was not escaped).
async fn hostile_images(c: &fantoccini::Client) -> serde_json::Value {
    c.execute(
        "return document.querySelectorAll('img[src=\"x\"]').length",
        vec![],
    )
    .await
    .unwrap()
}

async fn text_of(c: &fantoccini::Client, css: &str) -> String {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(fantoccini::Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
        .text()
        .await
        .unwrap()
}

#[test]
fn console_in_a_real_browser() {
    use fantoccini::Locator;
    let driver = start_driver();
    let uuid = "console-browser-1";
    let (dir, p) = served_with_a_failed_run(uuid);
    let console = p.console_url();
    let link = p.login_link();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = browser(&driver).await;
        // Without a cookie every page goes to the login page.
        for path in ["/", "/events", "/runs?failed=1"] {
            c.goto(&format!("{console}{path}")).await.unwrap();
            assert!(c.current_url().await.unwrap().path() == "/login", "{path}");
        }
        // Log in through the printed link: the overview.
        c.goto(&link).await.unwrap();
        assert_eq!(c.current_url().await.unwrap().path(), "/");
        assert_eq!(text_of(&c, "h1").await, "Overview");
        assert!(text_of(&c, "main").await.contains("/hooks/test"));
        screenshot(&c, "overview").await;

        // The scripts page, and the dry run of the broken script on the samples.
        c.goto(&format!("{console}/scripts")).await.unwrap();
        assert_eq!(text_of(&c, "h1").await, "Scripts");
        let on = text_of(&c, "#script-greet .on").await;
        assert!(on.contains("user.lifecycle.create"), "{on}");
        screenshot(&c, "scripts").await;
        click(&c, Locator::Css("#script-greet button.dry-run-button")).await;
        let report = text_of(&c, "#check-report").await;
        assert!(
            report.contains("dry runs (nothing is sent; now = ") && report.contains("greet.rhai:3"),
            "{report}"
        );
        screenshot(&c, "script-dry-run").await;

        // The delivered event and its payload; the hostile name is text, not an element.
        c.goto(&format!("{console}/events")).await.unwrap();
        click(&c, Locator::LinkText(uuid)).await;
        assert!(c.current_url().await.unwrap().path().ends_with(uuid));
        let tree = text_of(&c, "#payload-tree").await;
        assert!(tree.contains("admin@example.com"), "{tree}");
        assert!(
            tree.contains(HOSTILE_NAME),
            "the literal string is shown: {tree}"
        );
        let imgs = hostile_images(&c).await;
        assert_eq!(imgs, serde_json::json!(0), "no <img> came from the payload");
        screenshot(&c, "event").await;

        // The tokens: a tree whose expressions are copy buttons; the hostile example is text.
        c.goto(&format!("{console}/tokens")).await.unwrap();
        let b = c
            .find(Locator::Css(
                "button.token[data-copy='event.actor.displayName']",
            ))
            .await
            .unwrap();
        assert_eq!(b.text().await.unwrap(), "event.actor.displayName");
        let tree = text_of(&c, ".token-group").await;
        assert!(tree.contains(HOSTILE_NAME), "{tree}");
        let imgs = hostile_images(&c).await;
        assert_eq!(imgs, serde_json::json!(0), "no <img> came from a sample");
        screenshot(&c, "tokens").await;

        // The failed run of the broken script: its error line.
        c.goto(&format!("{console}/runs?failed=1")).await.unwrap();
        click(&c, Locator::Css("td a[href^='/runs/']")).await;
        let source = text_of(&c, "#error-source").await;
        assert!(source.contains("let n = 1 / 0;"), "{source}");
        assert!(text_of(&c, ".error .where").await.contains("greet.rhai:3"));
        screenshot(&c, "run-failed").await;

        // Fix the script (hot reload), replay from the console (dry run page, confirm), succeed.
        std::fs::write(dir.path().join("scripts/greet.rhai"), FIXED).unwrap();
        let mut ok_run = None;
        for _ in 0..40 {
            c.goto(&format!("{console}/replay?failed=1")).await.unwrap();
            if let Ok(b) = c.find(Locator::Id("confirm-replay")).await {
                b.click().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let d = dir.path().to_path_buf();
            let runs = tokio::task::spawn_blocking(move || history_json(&d, "runs"))
                .await
                .unwrap();
            ok_run = runs.into_iter().find(|r| r["status"] == "succeeded");
            if ok_run.is_some() {
                break;
            }
        }
        let run = ok_run.expect("a replay succeeded after the fix");
        c.goto(&format!("{console}/runs/{}", run["id"]))
            .await
            .unwrap();
        assert!(text_of(&c, "h1").await.contains("succeeded"));
        let subject = text_of(&c, ".mail .subject").await;
        assert_eq!(subject, format!("New user {HOSTILE_NAME}"));
        let frame = c.find(Locator::Css("iframe.mail-html")).await.unwrap();
        assert_eq!(frame.attr("sandbox").await.unwrap().as_deref(), Some(""));
        screenshot(&c, "run-mail").await;

        // Logged out, the pages are closed again.
        click(&c, Locator::Css(".logout button")).await;
        c.goto(&format!("{console}/runs")).await.unwrap();
        assert_eq!(c.current_url().await.unwrap().path(), "/login");
        c.close().await.unwrap();
    });
}

/// The actions page lists every action with its state; "retry now" and "cancel" are POSTs with
/// the CSRF token; a done action is never carried out again (refused), a pending one is
/// cancelled (skipped, saying so), a skipped one can be retried.
#[test]
fn the_actions_page_retries_and_cancels_but_never_redoes_a_done_action() {
    // Okta is down (nothing listens): the okta action keeps retrying; the mail is written.
    let script = "//! on: user.lifecycle.create\nimport \"okta\" as okta;\nokta::suspend_user(\"jane@example.com\");\nsend_email(#{ to: \"ops@example.com\", subject: \"hi\", body: \"x\" });\n";
    let (dir, port) = engine_setup(
        "\n[okta]\norg_url = \"http://127.0.0.1:9\"\ntoken_env = \"ENGINE_TEST_OKTA_TOKEN\"\n",
        &[("both.rhai", script)],
    );
    let p = ServeProcess::start(
        dir.path(),
        port,
        &[
            ("ENGINE_TEST_SECRET", SECRET),
            ("ENGINE_TEST_OKTA_TOKEN", "tok-console-actions-1"),
        ],
    );
    assert_eq!(
        post_blocking(
            &format!("{}/hooks/test", p.url),
            wrap(&hostile_event("console-actions-1"))
        ),
        200
    );
    let by_kind = |kind: &str| -> serde_json::Value {
        history_json(dir.path(), "actions")
            .into_iter()
            .find(|a| a["kind"] == kind)
            .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(20), || {
            by_kind("okta")["status"] == "retrying" && by_kind("email")["status"] == "done"
        }),
        "{:?}\n{}",
        history_json(dir.path(), "actions"),
        p.log()
    );
    let okta_id = by_kind("okta")["id"].as_str().unwrap().to_string();
    let mail_id = by_kind("email")["id"].as_str().unwrap().to_string();

    let console = p.console_url();
    let a = call(Method::GET, &format!("{console}/actions"), &[], "");
    assert_eq!(a.status, 303, "no session: the login page");
    let session = Session::login(&p);
    let overview = page(&session.get("/"));
    assert!(
        overview.contains("<span class=\"n\">1</span> actions queued"),
        "the retrying Okta action, not the done mail: {overview}"
    );
    let html = page(&session.get("/actions"));
    assert!(
        html.contains("okta::suspend_user jane@example.com") && html.contains("retrying"),
        "{html}"
    );
    assert!(html.contains("mail to ops@example.com"), "{html}");
    let csrf = csrf_of(&html);
    let post = |path: &str, body: String| session.post(path, &body);

    // Without the CSRF token nothing changes.
    let a = post("/actions/cancel", format!("id={okta_id}"));
    assert_eq!(a.status, 403);
    assert_eq!(by_kind("okta")["status"], "retrying");
    // A done mail is never sent again.
    let a = post("/actions/retry", format!("id={mail_id}&csrf={csrf}"));
    assert_eq!(a.status, 409, "{}", a.text());
    assert!(page(&a).contains("never carried out again"), "{}", a.text());
    // Cancel the pending Okta action: skipped, saying who.
    let a = post("/actions/cancel", format!("id={okta_id}&csrf={csrf}"));
    assert_eq!(a.status, 303, "{}", a.text());
    let okta = by_kind("okta");
    assert_eq!(okta["status"], "skipped", "{okta}");
    assert!(
        okta["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("cancelled from the console"),
        "{okta}"
    );
    let attempts = okta["attempts"].as_u64().unwrap();
    // Cancelling again is refused; retrying the skipped one makes another attempt.
    assert_eq!(
        post("/actions/cancel", format!("id={okta_id}&csrf={csrf}")).status,
        409
    );
    assert_eq!(
        post("/actions/retry", format!("id={okta_id}&csrf={csrf}")).status,
        303
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            by_kind("okta")["attempts"].as_u64().unwrap_or(0) > attempts
        }),
        "{}",
        by_kind("okta")
    );
    assert_eq!(
        post("/actions/retry", format!("id=nope&csrf={csrf}")).status,
        404
    );
    let sent = std::fs::read_dir(dir.path().join("data/outbox-mail"))
        .unwrap()
        .count();
    assert_eq!(sent, 1, "the mail was written once");
}

/// The state and timers pages in Chromium: the hostile key and values are text in the DOM, the
/// state's second page is one link away.
#[test]
fn state_and_timers_in_a_real_browser() {
    use fantoccini::Locator;
    let driver = start_driver();
    let (_dir, p) = served_one_event(
        &[("remembers.rhai", REMEMBERS)],
        "console-state-1",
        "succeeded",
    );
    let console = p.console_url();
    let link = p.login_link();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = browser(&driver).await;
        c.goto(&link).await.unwrap();
        let no_img = async |c: &fantoccini::Client| {
            let imgs = hostile_images(c).await;
            assert_eq!(
                imgs,
                serde_json::json!(0),
                "no <img> came from a script's state"
            );
        };

        c.goto(&format!("{console}/state")).await.unwrap();
        assert!(text_of(&c, "table.state").await.contains("k0"));
        click(&c, Locator::LinkText("Next page →")).await;
        let table = text_of(&c, "table.state").await;
        assert!(
            table.contains(&format!("name:{HOSTILE_NAME}"))
                && table.contains(&format!("\"name\": \"{HOSTILE_NAME}\"")),
            "{table}"
        );
        no_img(&c).await;
        screenshot(&c, "state").await;

        c.goto(&format!("{console}/timers")).await.unwrap();
        let table = text_of(&c, "table.timers").await;
        assert!(
            table.contains("remind") && table.contains(&format!("remind:{HOSTILE_NAME}")),
            "{table}"
        );
        no_img(&c).await;
        screenshot(&c, "timers").await;
        c.close().await.unwrap();
    });
}
