//! HTTP endpoints as actions, against a real receiver (a hyper server on 127.0.0.1 started by
//! the test) and the real `engine serve` binary: one request per action with its
//! `Idempotency-Key`, the configured headers and the body; retries on 503 and 429 (not before
//! `Retry-After`); 400 fails; unknown endpoints and smuggled headers fail the run at the call;
//! secrets never shown; replays repeat nothing; SIGKILL loses nothing.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::support::*;

/// The secret header value the endpoint sends (from the environment).
const TOKEN: &str = "Bearer http-endpoint-token-5f3a9c";
const TOKEN_ENV: &str = "ENGINE_TEST_HTTP_TOKEN";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    at: Instant,
    method: String,
    /// Path and query.
    target: String,
    headers: HashMap<String, String>,
    body: String,
}

impl Got {
    fn key(&self) -> String {
        self.headers
            .get("idempotency-key")
            .cloned()
            .unwrap_or_default()
    }
}

/// A planned answer: status, headers, body.
type Plan = (u16, Vec<(&'static str, String)>, String);

/// A DER certificate as PEM (rcgen's `pem` feature is not built here).
fn pem_cert(der: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// Serves one connection: records each request, answers from the plan of its path (a plan
/// header `x-delay-ms` delays the answer), else 200 echoing the `Authorization` it got.
async fn serve_conn<S>(
    stream: S,
    g: Arc<Mutex<Vec<Got>>>,
    pl: Arc<Mutex<HashMap<String, VecDeque<Plan>>>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let (g, pl) = (g.clone(), pl.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let headers = parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect::<HashMap<_, _>>();
            let path = parts.uri.path().to_string();
            let echo = headers.get("authorization").cloned().unwrap_or_default();
            g.lock().unwrap().push(Got {
                at: Instant::now(),
                method: parts.method.to_string(),
                target: parts
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let plan = pl
                .lock()
                .unwrap()
                .get_mut(&path)
                .and_then(|q| q.pop_front());
            let (status, hs, text) = plan.unwrap_or((200, vec![], format!("ok; you sent {echo}")));
            let mut resp = Response::builder().status(status);
            for (k, v) in hs {
                if k == "x-delay-ms" {
                    tokio::time::sleep(Duration::from_millis(v.parse().unwrap())).await;
                    continue;
                }
                resp = resp.header(k, v);
            }
            Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(text))).unwrap())
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

/// The receiver: records every request; answers each path from its plan, then 200.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
    plans: Arc<Mutex<HashMap<String, VecDeque<Plan>>>>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        Receiver::start_with(None)
    }

    /// A receiver on HTTPS with a fresh self-signed certificate for `localhost`, and that
    /// certificate as PEM.
    fn start_tls() -> (Receiver, String) {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("self-signed certificate");
        let cert = generated.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            generated.signing_key.serialize_der(),
        ));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        (
            Receiver::start_with(Some(acceptor)),
            pem_cert(generated.cert.der()),
        )
    }

    fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let plans: Arc<Mutex<HashMap<String, VecDeque<Plan>>>> = Arc::default();
        let (g, pl) = (got.clone(), plans.clone());
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (g, pl) = (g.clone(), pl.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve_conn(stream, g, pl).await,
                        Some(acceptor) => {
                            // A client that does not trust the certificate gives up here.
                            if let Ok(s) = acceptor.accept(stream).await {
                                serve_conn(s, g, pl).await;
                            }
                        }
                    }
                });
            }
        });
        Receiver {
            port,
            got,
            plans,
            _rt: rt,
        }
    }

    fn plan(&self, path: &str, answers: Vec<Plan>) {
        self.plans
            .lock()
            .unwrap()
            .insert(path.to_string(), answers.into());
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// The `[endpoint.recv]` table for this receiver.
    fn endpoint(&self, extra: &str) -> String {
        format!(
            "\n[endpoint.recv]\nurl = \"http://127.0.0.1:{}/base\"\nheaders = {{ X-Static = \"static-value\" }}\nheaders_env = {{ Authorization = \"{TOKEN_ENV}\" }}\nretry_base_ms = 50\n{extra}",
            self.port
        )
    }
}

fn env() -> Vec<(&'static str, &'static str)> {
    vec![("ENGINE_TEST_SECRET", SECRET), (TOKEN_ENV, TOKEN)]
}

fn event(uuid: &str) -> String {
    let e = serde_json::json!({
        "uuid": uuid, "eventType": "user.session.start",
        "published": "2026-12-03T06:00:00.000Z",
        "actor": {"id": "00u1", "type": "User", "alternateId": "jane@example.com"},
    });
    wrap(&e.to_string())
}

fn http_actions(dir: &std::path::Path) -> Vec<serde_json::Value> {
    history_json(dir, "actions")
        .into_iter()
        .filter(|a| a["kind"] == "http")
        .collect()
}

fn wait_http_settled(dir: &std::path::Path, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
    let mut last = Vec::new();
    let ok = wait_until(timeout, || {
        last = http_actions(dir);
        last.len() == n
            && last
                .iter()
                .all(|a| a["status"] != "queued" && a["status"] != "retrying")
    });
    assert!(ok, "http actions did not settle: {last:#?}");
    last
}

const POST_SCRIPT: &str = r#"//! on: user.session.start
http_post("recv", #{ text: `login by ${event.actor.alternateId}`, uuid: event.uuid });
http_request("recv", #{ method: "PUT", path: "/items/1", query: #{ a: "1 2" },
    headers: #{ "X-Trace": "t-1" }, body: "plain words", key: "put-item" });
"#;

#[test]
fn each_action_is_one_request_with_its_key_headers_and_body_and_no_secret_is_shown() {
    let r = Receiver::start();
    let (dir, port) = engine_setup(&r.endpoint(""), &[("notify.rhai", POST_SCRIPT)]);
    let p = ServeProcess::start(dir.path(), port, &env());
    let hook = format!("{}/hooks/test", p.url);
    assert_eq!(post_blocking(&hook, event("ev-1")), 200);
    let actions = wait_http_settled(dir.path(), 2, Duration::from_secs(15));
    assert!(
        actions.iter().all(|a| a["status"] == "done"),
        "{actions:#?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let got = r.got();
    assert_eq!(got.len(), 2, "{got:#?}");
    let mut keys: Vec<String> = got.iter().map(Got::key).collect();
    let mut ids: Vec<String> = actions
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    ids.sort();
    assert_eq!(
        keys, ids,
        "one request per action, Idempotency-Key = action id"
    );
    for g in &got {
        assert_eq!(
            g.headers.get("authorization").map(String::as_str),
            Some(TOKEN)
        );
        assert_eq!(
            g.headers.get("x-static").map(String::as_str),
            Some("static-value")
        );
    }
    let post = got.iter().find(|g| g.method == "POST").expect("the POST");
    assert_eq!(post.target, "/base");
    assert_eq!(post.headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_str(&post.body).unwrap();
    assert_eq!(json["text"], "login by jane@example.com");
    assert_eq!(json["uuid"], "ev-1");
    let put = got.iter().find(|g| g.method == "PUT").expect("the PUT");
    assert_eq!(put.target, "/base/items/1?a=1+2");
    assert_eq!(put.headers["x-trace"], "t-1");
    assert!(put.headers["content-type"].starts_with("text/plain"));
    assert_eq!(put.body, "plain words");

    // The receiver echoed the token into its answer: the answer summary is scrubbed.
    let listing = run_engine(dir.path(), &["actions"]);
    let json = run_engine(dir.path(), &["actions", "--format", "json"]);
    let runs = run_engine(dir.path(), &["runs", "--format", "json"]);
    let secret_part = TOKEN.trim_start_matches("Bearer ");
    for (what, text) in [
        ("engine actions", stdout(&listing)),
        ("engine actions --format json", stdout(&json)),
        ("engine runs", stdout(&runs)),
        ("server log", p.log()),
        ("server stdout", p.printed()),
    ] {
        assert!(
            !text.contains(secret_part),
            "{what} shows the secret: {text}"
        );
    }
    assert!(
        stdout(&listing).contains("HTTP 200"),
        "{}",
        stdout(&listing)
    );
    assert!(
        stdout(&json).contains("***"),
        "the echo is masked: {}",
        stdout(&json)
    );

    // Replay after an edit: the same ids, already done: the receiver hears nothing new.
    let edited = POST_SCRIPT.replace("login by", "edited: login by");
    std::fs::write(dir.path().join("scripts/notify.rhai"), edited).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let o = run_engine(dir.path(), &["replay", "ev-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        r.got().len(),
        2,
        "replay repeated a done request: {:#?}",
        r.got()
    );
    assert_eq!(http_actions(dir.path()).len(), 2);
}

#[test]
fn a_503_is_retried_and_a_429_waits_for_its_retry_after_and_a_400_fails() {
    let r = Receiver::start();
    r.plan("/base/flaky", vec![(503, vec![], "busy".into())]);
    r.plan(
        "/base/limited",
        vec![(
            429,
            vec![("retry-after", "2".to_string())],
            "slow down".into(),
        )],
    );
    r.plan(
        "/base/bad",
        vec![(400, vec![], "{\"error\":\"missing field channel\"}".into())],
    );
    r.plan(
        "/hang",
        vec![(200, vec![("x-delay-ms", "1500".to_string())], "late".into())],
    );
    let script = r#"//! on: user.session.start
http_post("hang", "are you there?");
http_request("recv", #{ path: "/flaky", json: #{ n: 1 } });
http_request("recv", #{ path: "/limited", json: #{ n: 2 } });
http_request("recv", #{ path: "/bad", json: #{ n: 3 } });
"#;
    let extra = format!(
        "{}\n[endpoint.hang]\nurl = \"http://127.0.0.1:{}/hang\"\ntimeout_ms = 300\nretry_base_ms = 50\n",
        r.endpoint(""),
        r.port
    );
    let (dir, port) = engine_setup(&extra, &[("s.rhai", script)]);
    let p = ServeProcess::start(dir.path(), port, &env());
    assert_eq!(
        post_blocking(&format!("{}/hooks/test", p.url), event("ev-r")),
        200
    );
    let actions = wait_http_settled(dir.path(), 4, Duration::from_secs(20));
    // A request that gets no answer within the endpoint's timeout_ms is retried.
    let hang = actions
        .iter()
        .find(|a| a["payload"]["endpoint"] == "hang")
        .unwrap();
    assert_eq!(hang["status"], "done", "{hang}");
    assert_eq!(hang["attempts"], 2, "{hang}");
    assert!(p.log().contains("no answer within 300 ms"), "{}", p.log());
    let by_path = |path: &str| {
        actions
            .iter()
            .find(|a| a["payload"]["path"] == path)
            .unwrap_or_else(|| panic!("no action for {path}: {actions:#?}"))
            .clone()
    };
    let flaky = by_path("/flaky");
    assert_eq!(flaky["status"], "done", "{flaky}");
    assert_eq!(flaky["attempts"], 2, "{flaky}");
    let limited = by_path("/limited");
    assert_eq!(limited["status"], "done", "{limited}");
    let bad = by_path("/bad");
    assert_eq!(bad["status"], "failed", "{bad}");
    assert_eq!(bad["attempts"], 1, "a 400 is not retried: {bad}");
    let err = bad["last_error"].as_str().unwrap();
    assert!(
        err.contains("HTTP 400") && err.contains("missing field channel"),
        "{err}"
    );

    let got = r.got();
    let times = |path: &str| -> Vec<Instant> {
        got.iter()
            .filter(|g| g.target == format!("/base{path}"))
            .map(|g| g.at)
            .collect()
    };
    assert_eq!(times("/flaky").len(), 2);
    assert_eq!(times("/bad").len(), 1);
    let limited_at = times("/limited");
    assert_eq!(limited_at.len(), 2, "{got:#?}");
    let gap = limited_at[1] - limited_at[0];
    assert!(
        gap >= Duration::from_secs(2),
        "429 retried after {gap:?}, before its Retry-After"
    );

    // `engine actions --failed` lists it with the status, and exits 1.
    let o = run_engine(dir.path(), &["actions", "--failed"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("HTTP 400"), "{}", stdout(&o));
    drop(p);
}

#[test]
fn undeclared_endpoints_smuggled_headers_and_failed_runs_send_nothing() {
    let r = Receiver::start();
    let cases = [
        (
            "typo.rhai",
            "http_post(\"recx\", #{ a: 1 });",
            "did you mean \"recv\"",
        ),
        (
            "override.rhai",
            "http_request(\"recv\", #{ headers: #{ authorization: \"mine\" } });",
            "cannot override",
        ),
        (
            "smuggle.rhai",
            "http_request(\"recv\", #{ headers: #{ \"X-A\": \"a\\r\\nHost: evil\" } });",
            "line break",
        ),
        (
            "host.rhai",
            "http_request(\"recv\", #{ headers: #{ Host: \"evil.example\" } });",
            "set by the engine",
        ),
        (
            "escape.rhai",
            "http_request(\"recv\", #{ path: \"//evil.example/x\" });",
            "must stay under it",
        ),
        (
            "dotdot.rhai",
            "http_request(\"recv\", #{ path: \"/a/../../x\" });",
            "must stay under it",
        ),
        (
            "throws.rhai",
            "http_post(\"recv\", \"queued then\");\nthrow \"changed my mind\";",
            "changed my mind",
        ),
    ];
    let scripts: Vec<(String, String)> = cases
        .iter()
        .map(|(name, body, _)| {
            (
                name.to_string(),
                format!("//! on: user.session.start\n{body}\n"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = scripts
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let (dir, port) = engine_setup(&r.endpoint(""), &refs);
    let p = ServeProcess::start(dir.path(), port, &env());
    assert_eq!(
        post_blocking(&format!("{}/hooks/test", p.url), event("ev-bad")),
        200
    );
    let mut runs = Vec::new();
    let ok = wait_until(Duration::from_secs(15), || {
        runs = history_json(dir.path(), "runs");
        runs.len() == cases.len()
            && runs
                .iter()
                .all(|r| r["status"] == "succeeded" || r["status"] == "failed")
    });
    assert!(ok, "{runs:#?}");
    for (name, _, says) in cases {
        let script = name.trim_end_matches(".rhai");
        let run = runs.iter().find(|r| r["script"] == script).expect(script);
        assert_eq!(run["status"], "failed", "{run}");
        let error = run["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(says), "{name}: {error}");
    }
    std::thread::sleep(Duration::from_millis(800));
    assert!(r.got().is_empty(), "a failed run sent: {:#?}", r.got());
    assert!(http_actions(dir.path()).is_empty());
    drop(p);
}

/// SIGKILL while actions are carried out, then a restart: every action of every successful
/// run ends done; a request is repeated only across a kill between "sent" and "recorded"
/// (at-least-once: at most one repeat per kill), with the same `Idempotency-Key`.
#[test]
fn sigkill_while_sending_then_restart_every_action_done_once() {
    let r = Receiver::start();
    let script = r#"//! on: user.session.start
for i in 0..3 { http_post("recv", #{ i: i, uuid: event.uuid }); }
"#;
    // A slow-ish endpoint so kills land while requests are in flight.
    let (dir, port) = engine_setup(&r.endpoint("rate_per_s = 40\n"), &[("fan.rhai", script)]);
    const KILLS: usize = 3;
    // Events posted per round at most: the endpoint takes 40 requests/s, so 3 rounds of 100
    // events (3 actions each) drain in ~23 s, inside the 60 s the restart gets. Unbounded, an
    // idle machine posted 1,040 events in the three windows: 78 s of requests, and the test
    // failed only because it was fast.
    const MAX_EVENTS_PER_ROUND: usize = 100;
    let mut accepted = Vec::new();
    let mut n = 0;
    for round in 0..KILLS {
        let p = ServeProcess::start(dir.path(), port, &env());
        let hook = format!("{}/hooks/test", p.url);
        let until = Instant::now() + Duration::from_millis(700 + 200 * round as u64);
        let first = n;
        while Instant::now() < until && n - first < MAX_EVENTS_PER_ROUND {
            let uuid = format!("crash-{n}");
            n += 1;
            if post_blocking(&hook, event(&uuid)) == 200 {
                accepted.push(uuid);
            }
        }
        p.signal(libc::SIGKILL);
        drop(p);
    }
    // The kills left work behind (runs not yet run, or actions not yet sent): the restart has
    // to finish it.
    let done_before = http_actions(dir.path())
        .iter()
        .filter(|a| a["status"] == "done")
        .count();
    assert!(
        done_before < accepted.len() * 3,
        "every action was done before the last kill: the kills hit nothing"
    );
    let _p = ServeProcess::start(dir.path(), port, &env());
    let actions = wait_http_settled(dir.path(), accepted.len() * 3, Duration::from_secs(60));
    assert!(
        actions.iter().all(|a| a["status"] == "done"),
        "{actions:#?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for g in r.got() {
        *per_key.entry(g.key()).or_default() += 1;
    }
    for a in &actions {
        let id = a["id"].as_str().unwrap();
        assert!(
            per_key.contains_key(id),
            "action {id} done but never received"
        );
    }
    assert_eq!(
        per_key.len(),
        actions.len(),
        "requests with unknown keys: {per_key:?}"
    );
    let repeats: usize = per_key.values().map(|c| c - 1).sum();
    assert!(
        repeats <= KILLS,
        "{repeats} repeated requests over {KILLS} kills: {per_key:?}"
    );
    eprintln!(
        "http crash test: {} events, {} actions ({done_before} done before the restart), {} requests, {repeats} repeats over {KILLS} kills",
        accepted.len(),
        actions.len(),
        r.got().len()
    );
}

#[test]
fn endpoint_config_errors_name_the_key() {
    for (table, says) in [
        ("url = \"http://example.com/x\"\n", "may be on the internet"),
        ("url = \"ftp://10.0.0.1/\"\n", "scheme `ftp`"),
        (
            "url = \"https://a.example\"\nurl_env = \"X\"\n",
            "both `url` and `url_env`",
        ),
        ("timeout_ms = 5\n", "no `url` or `url_env`"),
        (
            "url = \"https://a.example\"\nrate_per_s = 0\n",
            "out of range",
        ),
        ("url = \"https://a.example\"\nbogus = 1\n", "unknown field"),
        (
            "url = \"https://a.example\"\nheaders = { Host = \"x\" }\n",
            "set by the engine",
        ),
        ("url = \"https://u:p@a.example\"\n", "user or password"),
        (
            "url = \"https://a.example\"\njson_env = { \"\" = \"PD_KEY\" }\n",
            "json_env",
        ),
    ] {
        let dir = temp_dir();
        write_config(
            dir.path(),
            free_port(),
            &format!("\n[endpoint.slack]\n{table}"),
        );
        let o = run_engine(dir.path(), &["check"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{table}: {err}");
        assert!(err.contains(says), "{table}: {err}");
        assert!(err.contains("engine.toml:"), "names the place: {err}");
    }
}

#[test]
fn check_reports_an_unknown_endpoint_and_run_shows_the_request() {
    let r = Receiver::start();
    let script = "//! on: user.session.start\nhttp_post(\"recx\", #{ a: 1 });\nhttp_request(\"recv\", #{ path: \"/p\", json: #{ who: event.actor.alternateId } });\n";
    let (dir, _port) = engine_setup(&r.endpoint(""), &[("s.rhai", script)]);
    let o = run_engine(dir.path(), &["check", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let found: Vec<&serde_json::Value> = report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["code"] == "E0402")
        .collect();
    assert_eq!(found.len(), 1, "only the undeclared one: {report:#}");
    assert_eq!(found[0]["line"], 2);
    assert!(
        found[0].to_string().contains("did you mean `recv`"),
        "{}",
        found[0]
    );

    // `engine run` shows what would be sent and sends nothing.
    let payload = dir.path().join("ev.json");
    std::fs::write(&payload, event("ev-run")).unwrap();
    let fixed = script.replace("recx", "recv");
    std::fs::write(dir.path().join("scripts/s.rhai"), fixed).unwrap();
    let o = engine_bin()
        .current_dir(dir.path())
        .env(TOKEN_ENV, TOKEN)
        .args(["run", "scripts/s.rhai", payload.to_str().unwrap()])
        .output()
        .unwrap();
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}{}", stderr(&o));
    assert!(
        text.contains("POST recv/p") && text.contains("jane@example.com"),
        "{text}"
    );
    assert!(!text.contains(TOKEN), "{text}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(r.got().is_empty(), "a dry run sent: {:#?}", r.got());
}

/// A slow endpoint (each answer 2.5 s) holds at most its share of the executor's slots: a
/// fast one's requests go out meanwhile, spaced by its `rate_per_s`. The slow one's URL comes
/// from the environment (a secret) and shows nowhere.
#[test]
fn a_slow_endpoint_holds_up_no_other_and_rate_per_s_spaces_requests() {
    let r = Receiver::start();
    let secret_path = "/services/T000/B000/slowsecretpath42";
    r.plan(
        secret_path,
        (0..6)
            .map(|_| {
                (
                    200,
                    vec![("x-delay-ms", "2500".to_string())],
                    "slow ok".to_string(),
                )
            })
            .collect(),
    );
    let slow_url = format!("http://127.0.0.1:{}{secret_path}", r.port);
    let extra = format!(
        "{}\n[endpoint.slow]\nurl_env = \"ENGINE_TEST_SLOW_URL\"\ntimeout_ms = 5000\n",
        r.endpoint("rate_per_s = 5\n")
    );
    let script = r#"//! on: user.session.start
for i in 0..6 { http_post("slow", #{ i: i }); }
for i in 0..5 { http_post("recv", #{ i: i }); }
"#;
    let (dir, port) = engine_setup(&extra, &[("s.rhai", script)]);
    let mut envs = env();
    envs.push(("ENGINE_TEST_SLOW_URL", slow_url.as_str()));
    let p = ServeProcess::start(dir.path(), port, &envs);
    assert_eq!(
        post_blocking(&format!("{}/hooks/test", p.url), event("ev-slow")),
        200
    );
    let actions = wait_http_settled(dir.path(), 11, Duration::from_secs(30));
    assert!(
        actions.iter().all(|a| a["status"] == "done"),
        "{actions:#?}"
    );
    let got = r.got();
    let fast: Vec<Instant> = got
        .iter()
        .filter(|g| g.target == "/base")
        .map(|g| g.at)
        .collect();
    let slow: Vec<Instant> = got
        .iter()
        .filter(|g| g.target == secret_path)
        .map(|g| g.at)
        .collect();
    assert_eq!((fast.len(), slow.len()), (5, 6), "{got:#?}");
    let first = *fast.iter().chain(&slow).min().unwrap();
    let last_fast = *fast.iter().max().unwrap();
    // Rate 5/s: five requests span at least 4 × 200 ms.
    let span = last_fast - *fast.iter().min().unwrap();
    assert!(
        span >= Duration::from_millis(750),
        "rate_per_s not kept: {span:?}"
    );
    // And all of them went out before the slow endpoint's first answers came back.
    assert!(
        last_fast - first < Duration::from_millis(2400),
        "the fast endpoint waited for the slow one: {:?}",
        last_fast - first
    );
    // At most half the slots for the slow one: its 5th and 6th requests wait for a free slot.
    let mut slow_sorted = slow.clone();
    slow_sorted.sort();
    assert!(
        slow_sorted[4] - slow_sorted[0] >= Duration::from_millis(2000),
        "the slow endpoint held more than its share: {:?}",
        slow_sorted
            .iter()
            .map(|t| *t - slow_sorted[0])
            .collect::<Vec<_>>()
    );
    for (what, text) in [
        (
            "engine actions",
            stdout(&run_engine(dir.path(), &["actions", "--format", "json"])),
        ),
        ("server log", p.log()),
        ("server stdout", p.printed()),
    ] {
        assert!(
            !text.contains("slowsecretpath42"),
            "{what} shows the URL: {text}"
        );
    }
}

/// `ca_file` adds a private CA for one endpoint; another endpoint on the same server without
/// it does not trust the certificate (retried, saying why) and never gets a request through.
#[test]
fn https_endpoints_trust_their_ca_file_and_only_it() {
    let (r, pem) = Receiver::start_tls();
    let extra = format!(
        "\n[endpoint.tls]\nurl = \"https://localhost:{0}/x\"\nca_file = \"ca.pem\"\n\n[endpoint.untrusted]\nurl = \"https://localhost:{0}/y\"\nretry_base_ms = 50\n",
        r.port
    );
    let script = "//! on: user.session.start\nhttp_post(\"tls\", #{ a: 1 });\nhttp_post(\"untrusted\", #{ a: 2 });\n";
    let (dir, port) = engine_setup(&extra, &[("s.rhai", script)]);
    std::fs::write(dir.path().join("ca.pem"), pem).unwrap();
    let p = ServeProcess::start(dir.path(), port, &env());
    assert_eq!(
        post_blocking(&format!("{}/hooks/test", p.url), event("ev-tls")),
        200
    );
    let mut actions = Vec::new();
    let ok = wait_until(Duration::from_secs(15), || {
        actions = http_actions(dir.path());
        actions.len() == 2
            && actions
                .iter()
                .any(|a| a["payload"]["endpoint"] == "tls" && a["status"] == "done")
            && actions.iter().any(|a| {
                a["payload"]["endpoint"] == "untrusted" && a["attempts"].as_u64() >= Some(2)
            })
    });
    assert!(ok, "{actions:#?}");
    let untrusted = actions
        .iter()
        .find(|a| a["payload"]["endpoint"] == "untrusted")
        .unwrap();
    assert_eq!(untrusted["status"], "retrying", "{untrusted}");
    let err = untrusted["last_error"]
        .as_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(err.contains("certificate"), "{err}");
    let got = r.got();
    assert!(got.iter().all(|g| g.target == "/x"), "{got:#?}");
    assert_eq!(got.len(), 1, "{got:#?}");
    drop(p);
}

/// `http_get` reads during the run: the answer's `status`, `json` and `headers` reach the
/// script (an echoed secret masked); a 503 fails the run as transient and it is retried.
#[test]
fn http_get_reads_during_the_run_and_a_503_retries_the_run() {
    let r = Receiver::start();
    r.plan(
        "/base/users",
        vec![
            (503, vec![], "down".into()),
            (
                200,
                vec![
                    ("content-type", "application/json".to_string()),
                    ("x-echo", TOKEN.to_string()),
                ],
                format!("{{\"name\":\"jane\",\"token\":\"{TOKEN}\"}}"),
            ),
        ],
    );
    let script = r#"//! on: user.session.start
let a = http_get("recv", #{ path: "/users", query: #{ id: "00u1" } });
http_request("recv", #{ path: "/seen", json: #{ status: a.status, name: a.json.name,
    token: a.json.token, echo: a.headers["x-echo"] } });
"#;
    let (dir, port) = engine_setup(&r.endpoint(""), &[("g.rhai", script)]);
    let p = ServeProcess::start(dir.path(), port, &env());
    assert_eq!(
        post_blocking(&format!("{}/hooks/test", p.url), event("ev-get")),
        200
    );
    let actions = wait_http_settled(dir.path(), 1, Duration::from_secs(20));
    assert_eq!(actions[0]["status"], "done", "{actions:#?}");
    let got = r.got();
    let gets: Vec<&Got> = got.iter().filter(|g| g.method == "GET").collect();
    assert_eq!(gets.len(), 2, "the run was retried once: {got:#?}");
    assert_eq!(gets[0].target, "/base/users?id=00u1");
    assert!(
        !gets[0].headers.contains_key("idempotency-key"),
        "a read is no action"
    );
    assert_eq!(gets[0].headers["authorization"], TOKEN);
    let seen = got
        .iter()
        .find(|g| g.target == "/base/seen")
        .expect("the POST");
    let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(body["status"], 200);
    assert_eq!(body["name"], "jane");
    assert_eq!(
        body["token"], "***",
        "the script never sees the secret: {body}"
    );
    assert_eq!(body["echo"], "***", "{body}");
    let runs = history_json(dir.path(), "runs");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["status"], "succeeded", "{runs:#?}");
    drop(p);
}

/// Regression guard for the script pool's compute slots: a run waiting in `http_get` gives its
/// slot to the runs queued behind it. Were the wait not marked as one, the runs waiting on a
/// slow endpoint (2.5 s per answer) would hold every compute slot and another script's runs
/// would wait behind them.
#[test]
fn runs_waiting_in_http_get_leave_the_cores_to_other_runs() {
    const EVENTS: usize = 6;
    let r = Receiver::start();
    r.plan(
        "/base/slow",
        (0..EVENTS)
            .map(|_| (200, vec![("x-delay-ms", "2500".to_string())], "late".into()))
            .collect(),
    );
    let waits = "//! on: user.session.start\nlet a = http_get(\"recv\", #{ path: \"/slow\" });\nlog(`got ${a.status}`);\n";
    let plain = "//! on: user.session.start\nlog(`plain ran on ${event.uuid}`);\n";
    let (dir, port) = engine_setup(
        &format!("{}\n[limits]\ntimeout_ms = 5000\n", r.endpoint("")),
        &[("a-waits.rhai", waits), ("b-plain.rhai", plain)],
    );
    let p = ServeProcess::start(dir.path(), port, &env());
    let delivered = engine::util::now_ms();
    for i in 0..EVENTS {
        assert_eq!(
            post_blocking(&format!("{}/hooks/test", p.url), event(&format!("ev-w{i}"))),
            200
        );
    }
    let b_wait = crate::processing::last_quick_run_ms(dir.path(), "b-plain", EVENTS, delivered);
    println!("figure: last of {EVENTS} quick runs beside runs waiting in http_get: {b_wait} ms");
    assert!(
        b_wait <= 2000,
        "the quick script's runs finished {b_wait} ms after delivery, behind runs waiting in http_get"
    );
    drop(p);
}

/// A display name an attacker controls: in Slack it would mention everyone and add a link.
const HOSTILE: &str = "<!channel> <https://evil.example|click> & co";
/// The PagerDuty routing key, from the environment only.
const ROUTING_KEY: &str = "R0uting-key-secret-0123456789abc";

fn user_event(uuid: &str, event_type: &str) -> String {
    wrap(
        &serde_json::json!({
            "uuid": uuid,
            "eventType": event_type,
            "published": "2026-12-03T07:00:00.000Z",
            "displayMessage": "Max sign in attempts exceeded",
            "actor": {"id": "00uadmin000000000001", "type": "User", "alternateId": "admin@example.com", "displayName": "Admin"},
            "client": {"ipAddress": "203.0.113.9", "geographicalContext": {"city": "Lyon", "country": "France"}},
            "target": [{"id": "00ujane0000000000001", "type": "User", "alternateId": "jane@example.com", "displayName": HOSTILE}]
        })
        .to_string(),
    )
}

/// The shipped `slack`, `teams` and `pagerduty` modules through their example scripts
/// (`scripts/*.rhai.example`, turned on): Block Kit with the event's text escaped, an Adaptive
/// Card in the Workflows envelope, a PagerDuty trigger and then resolve with one dedup key and
/// the routing key added from `json_env`; each once, and no secret in any output.
#[test]
fn the_slack_teams_and_pagerduty_examples_post_what_their_services_take() {
    let r = Receiver::start();
    let extra = format!(
        "\n[endpoint.slack]\nurl_env = \"ENGINE_TEST_SLACK_URL\"\n\n[endpoint.teams]\nurl = \"http://127.0.0.1:{0}/teams\"\n\n[endpoint.pagerduty]\nurl = \"http://127.0.0.1:{0}/v2/enqueue\"\njson_env = {{ routing_key = \"ENGINE_TEST_PD_KEY\" }}\n",
        r.port
    );
    let scripts: Vec<(String, String)> =
        ["slack-lockout-alert", "teams-new-hire", "pagerduty-lockout"]
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(format!("{REPO}/scripts/{n}.rhai.example"))
                    .expect("the example");
                (format!("{n}.rhai"), text)
            })
            .collect();
    let scripts: Vec<(&str, &str)> = scripts
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let (dir, port) = engine_setup(&extra, &scripts);
    let slack_url = format!("http://127.0.0.1:{}/services/T1/B2/secretslackpath", r.port);
    let mut envs = env();
    envs.push(("ENGINE_TEST_SLACK_URL", slack_url.as_str()));
    envs.push(("ENGINE_TEST_PD_KEY", ROUTING_KEY));
    let p = ServeProcess::start(dir.path(), port, &envs);
    let hook = format!("{}/hooks/test", p.url);
    assert_eq!(
        post_blocking(&hook, user_event("lock-1", "user.account.lock")),
        200
    );
    assert_eq!(
        post_blocking(&hook, user_event("new-1", "user.lifecycle.create")),
        200
    );
    let actions = wait_http_settled(dir.path(), 3, Duration::from_secs(15));
    assert!(
        actions.iter().all(|a| a["status"] == "done"),
        "{actions:#?}"
    );
    let body_of = |path: &str, nth: usize| -> serde_json::Value {
        let got = r.got();
        let g = got
            .iter()
            .filter(|g| g.target == path)
            .nth(nth)
            .unwrap_or_else(|| panic!("{path} #{nth}: {got:#?}"));
        assert_eq!(g.headers["content-type"], "application/json");
        assert!(g.headers.contains_key("idempotency-key"));
        serde_json::from_str(&g.body).unwrap()
    };

    // Slack: the fallback text and Block Kit; the display name cannot mention or link.
    let slack = body_of("/services/T1/B2/secretslackpath", 0);
    let text = slack["text"].as_str().unwrap();
    assert!(
        text.contains("&lt;!channel&gt;") && !text.contains("<!channel>"),
        "{text}"
    );
    assert!(!slack.to_string().contains("<https://evil"), "{slack}");
    assert_eq!(slack["blocks"][0]["type"], "header");
    assert_eq!(slack["blocks"][1]["text"]["type"], "mrkdwn");
    assert!(slack["blocks"][2]["fields"].is_array(), "{slack}");
    assert_eq!(slack["blocks"][3]["type"], "context");

    // Teams: a Workflows message with one Adaptive Card and its facts.
    let teams = body_of("/teams", 0);
    assert_eq!(teams["type"], "message");
    let att = &teams["attachments"][0];
    assert_eq!(
        att["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(att["content"]["type"], "AdaptiveCard");
    assert_eq!(
        att["content"]["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert_eq!(att["content"]["body"][2]["type"], "FactSet");
    assert!(att.to_string().contains("jane@example.com"), "{att}");

    // PagerDuty: the Events API v2 trigger, the routing key set by the engine.
    let pd = body_of("/v2/enqueue", 0);
    assert_eq!(pd["routing_key"], ROUTING_KEY);
    assert_eq!(pd["event_action"], "trigger");
    assert_eq!(pd["dedup_key"], "okta-lockout/00ujane0000000000001");
    assert_eq!(pd["payload"]["severity"], "warning");
    assert_eq!(pd["payload"]["custom_details"]["login"], "jane@example.com");
    // The unlock resolves the same alert.
    assert_eq!(
        post_blocking(&hook, user_event("unlock-1", "user.account.unlock")),
        200
    );
    let actions = wait_http_settled(dir.path(), 4, Duration::from_secs(15));
    assert!(
        actions.iter().all(|a| a["status"] == "done"),
        "{actions:#?}"
    );
    let resolve = body_of("/v2/enqueue", 1);
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], pd["dedup_key"]);
    assert_eq!(resolve["routing_key"], ROUTING_KEY);

    // Each once; no secret (the Slack URL, the routing key) in any output.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.got().len(), 4, "{:#?}", r.got());
    for cmd in [
        vec!["actions"],
        vec!["actions", "--format", "json"],
        vec!["runs", "--format", "json"],
    ] {
        let out = stdout(&run_engine(dir.path(), &cmd));
        assert!(
            !out.contains("secretslackpath") && !out.contains(ROUTING_KEY),
            "{cmd:?}: {out}"
        );
    }
    assert!(!p.log().contains("secretslackpath") && !p.log().contains(ROUTING_KEY));
}

/// `json_env` sets its fields in every JSON body, over a script's own (a script cannot replace
/// or read the secret); a body that is not a JSON object fails its action saying why.
#[test]
fn json_env_fields_are_set_by_the_engine_and_cannot_be_forged() {
    let r = Receiver::start();
    let extra = format!(
        "\n[endpoint.pd]\nurl = \"http://127.0.0.1:{}/v2/enqueue\"\njson_env = {{ routing_key = \"ENGINE_TEST_PD_KEY\" }}\n",
        r.port
    );
    let script = "//! on: user.session.start\nhttp_post(\"pd\", #{ routing_key: \"forged\", event_action: \"trigger\" });\nhttp_post(\"pd\", [1, 2]);\n";
    let (dir, port) = engine_setup(&extra, &[("s.rhai", script)]);
    let mut envs = env();
    envs.push(("ENGINE_TEST_PD_KEY", "the-real-routing-key-0123456789"));
    let p = ServeProcess::start(dir.path(), port, &envs);
    assert_eq!(
        post_blocking(&format!("{}/hooks/test", p.url), event("json-env-1")),
        200
    );
    let actions = wait_http_settled(dir.path(), 2, Duration::from_secs(15));
    let got = r.got();
    assert_eq!(got.len(), 1, "{got:#?}");
    let body: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["routing_key"], "the-real-routing-key-0123456789");
    assert_eq!(body["event_action"], "trigger");
    let failed: Vec<_> = actions.iter().filter(|a| a["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{actions:#?}");
    assert!(
        failed[0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("must be a JSON object"),
        "{actions:#?}"
    );
    let out = stdout(&run_engine(dir.path(), &["actions", "--format", "json"]));
    assert!(!out.contains("the-real-routing-key"), "{out}");
}
