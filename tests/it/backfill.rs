//! System Log backfill against a stand-in that serves `GET /api/v1/logs` as Okta documents it:
//! `since`, `limit`, `sortOrder=ASCENDING`, a `filter` of `eventType eq/sw "…"` terms joined by
//! `or`, `Link: <…>; rel="self"` and `rel="next"` with an opaque `after` token (a polling query
//! always has a next link, even on an empty page), `X-Rate-Limit-Limit/-Remaining/-Reset` on every
//! answer, 429 with `E0000047`, and 401 with `E0000011` for a wrong token. The real binary runs
//! against it; the tests count stored events and runs per uuid.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

use crate::support::*;

const TOKEN: &str = "00sysLog-test-token-Qz9";
const RATE_LIMIT: u64 = 1000;

/// An answer the stand-in gives instead of the real one, in order, to the next requests.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 with `X-Rate-Limit-Reset` this many seconds ahead.
    TooMany { reset_in_s: u64 },
    /// 401 as Okta answers a bad token.
    Unauthorized,
    /// 500.
    ServerError,
}

/// One request the stand-in answered.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at_ms: u64,
    pub query: HashMap<String, String>,
    pub status: u16,
    pub events: usize,
    /// The `X-Rate-Limit-Reset` a 429 announced (epoch s).
    pub reset: Option<u64>,
}

#[derive(Default)]
struct LogState {
    /// (published ms, uuid, event JSON), in published order.
    events: Vec<(u64, String, serde_json::Value)>,
    faults: VecDeque<Fault>,
    requests: Vec<Logged>,
    /// Each answer is delayed this long (a slow Okta, to SIGKILL mid catch-up).
    delay_ms: u64,
}

/// The stand-in, on its own thread and runtime.
pub struct SystemLog {
    pub url: String,
    state: Arc<Mutex<LogState>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl SystemLog {
    pub fn start() -> SystemLog {
        let state: Arc<Mutex<LogState>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let url = format!("http://{}", listener.local_addr().unwrap());
                tx.send(url.clone()).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let state = shared.clone();
                    let url = url.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            let url = url.clone();
                            async move {
                                let delay = state.lock().unwrap().delay_ms;
                                if delay > 0 {
                                    tokio::time::sleep(Duration::from_millis(delay)).await;
                                }
                                Ok::<_, Infallible>(answer(&state, &url, req))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        SystemLog {
            url: rx.recv().unwrap(),
            state,
        }
    }

    /// Logs an event now; returns its JSON (for delivering it by hook too).
    pub fn log(&self, uuid: &str, event_type: &str) -> String {
        let ms = now_ms();
        let mut v: serde_json::Value =
            serde_json::from_str(&fixture("event.user.lifecycle.deactivate.json")).unwrap();
        v["uuid"] = uuid.into();
        v["eventType"] = event_type.into();
        v["published"] = engine::util::format_ms(ms).into();
        let mut s = self.state.lock().unwrap();
        s.events.push((ms, uuid.to_string(), v.clone()));
        s.events.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        v.to_string()
    }

    /// Logs Okta's record of a failed hook delivery.
    pub fn log_delivery_failure(&self, uuid: &str) {
        let ms = now_ms();
        let v = serde_json::json!({
            "uuid": uuid, "published": engine::util::format_ms(ms), "eventType": "event_hook.delivery",
            "version": "0", "severity": "WARN", "displayMessage": "Event hook delivery",
            "outcome": {"result": "FAILURE", "reason": "Read timed out"},
            "target": [{"id": "who1", "type": "EventHook", "displayName": "engine test hook"}],
            "actor": null, "client": null
        });
        let mut s = self.state.lock().unwrap();
        s.events.push((ms, uuid.to_string(), v));
    }

    pub fn fault(&self, f: Fault) {
        self.state.lock().unwrap().faults.push_back(f);
    }

    pub fn set_delay(&self, ms: u64) {
        self.state.lock().unwrap().delay_ms = ms;
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.state.lock().unwrap().requests.clone()
    }
}

fn query_of(req: &Request<hyper::body::Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

/// Okta's filter, as far as the engine uses it: `eventType eq "x"` and `eventType sw "x"`
/// joined by ` or `. `None`: not a filter this stand-in (or Okta) understands.
fn filter_matches(filter: &str, event_type: &str) -> Option<bool> {
    if filter.is_empty() {
        return Some(true);
    }
    let mut any = false;
    for term in filter.split(" or ") {
        let rest = term.trim().strip_prefix("eventType ")?;
        let (op, lit) = rest.split_once(' ')?;
        let lit = lit.strip_prefix('"')?.strip_suffix('"')?;
        any |= match op {
            "eq" => event_type == lit,
            "sw" => event_type.starts_with(lit),
            _ => return None,
        };
    }
    Some(any)
}

fn okta_error(status: StatusCode, code: &str, summary: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "errorCode": code, "errorSummary": summary, "errorLink": code,
        "errorId": "oae-test", "errorCauses": []
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn answer(
    state: &Arc<Mutex<LogState>>,
    base: &str,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let query = query_of(&req);
    let mut s = state.lock().unwrap();
    let mut log = Logged {
        at_ms: now_ms(),
        query: query.clone(),
        status: 200,
        events: 0,
        reset: None,
    };
    let reset = now_ms() / 1000 + 60;
    let remaining = RATE_LIMIT.saturating_sub(s.requests.len() as u64 + 1);
    let with_rate = |b: hyper::http::response::Builder| {
        b.header("x-rate-limit-limit", RATE_LIMIT.to_string())
            .header("x-rate-limit-remaining", remaining.to_string())
            .header("x-rate-limit-reset", reset.to_string())
    };
    let response = if req.uri().path() != "/api/v1/logs" {
        okta_error(
            StatusCode::NOT_FOUND,
            "E0000022",
            "The endpoint does not support the provided HTTP method",
        )
    } else if req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        != Some(&format!("SSWS {TOKEN}"))
    {
        okta_error(
            StatusCode::UNAUTHORIZED,
            "E0000011",
            "Invalid token provided",
        )
    } else if let Some(f) = s.faults.pop_front() {
        match f {
            Fault::TooMany { reset_in_s } => {
                let at = now_ms() / 1000 + 1 + reset_in_s;
                log.reset = Some(at);
                let mut r = okta_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "E0000047",
                    "API call exceeded rate limit due to too many requests.",
                );
                let h = r.headers_mut();
                h.insert(
                    "x-rate-limit-limit",
                    RATE_LIMIT.to_string().parse().unwrap(),
                );
                h.insert("x-rate-limit-remaining", "0".parse().unwrap());
                h.insert("x-rate-limit-reset", at.to_string().parse().unwrap());
                r
            }
            Fault::Unauthorized => okta_error(
                StatusCode::UNAUTHORIZED,
                "E0000011",
                "Invalid token provided",
            ),
            Fault::ServerError => okta_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "E0000009",
                "Internal Server Error",
            ),
        }
    } else {
        let filter = query.get("filter").cloned().unwrap_or_default();
        let limit: usize = query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(100)
            .min(1000);
        // The position: after the (published, uuid) the token names, else from `since`.
        let after: Option<(u64, String)> = query.get("after").and_then(|a| {
            let (ms, uuid) = a.split_once('_')?;
            Some((ms.parse().ok()?, uuid.to_string()))
        });
        let since = query
            .get("since")
            .and_then(|t| engine::util::parse_rfc3339_nanos(t))
            .map(|n| (n / 1_000_000) as u64);
        let matched: Option<Vec<&(u64, String, serde_json::Value)>> = s
            .events
            .iter()
            .filter(|(ms, uuid, _)| match &after {
                Some((a_ms, a_uuid)) => (*ms, uuid) > (*a_ms, a_uuid),
                None => since.is_none_or(|since| *ms >= since),
            })
            .map(|e| {
                filter_matches(&filter, e.2["eventType"].as_str().unwrap_or("")).map(|m| (m, e))
            })
            .filter_map(|r| match r {
                Some((true, e)) => Some(Some(e)),
                Some((false, _)) => None,
                None => Some(None),
            })
            .collect();
        match matched {
            None => okta_error(
                StatusCode::BAD_REQUEST,
                "E0000031",
                "Invalid search criteria.",
            ),
            Some(matched) => {
                let page: Vec<&serde_json::Value> =
                    matched.iter().take(limit).map(|e| &e.2).collect();
                log.events = page.len();
                // A polling query's next link continues after the last event given (or from the
                // same place when the page is empty).
                let token = match matched.iter().take(limit).next_back() {
                    Some((ms, uuid, _)) => Some(format!("{ms}_{uuid}")),
                    None => after.as_ref().map(|(m, u)| format!("{m}_{u}")),
                };
                let enc = |v: &str| {
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                        .to_string()
                };
                let mut next = format!(
                    "{base}/api/v1/logs?limit={limit}&sortOrder=ASCENDING&filter={}",
                    enc(&filter)
                );
                match token {
                    Some(t) => next.push_str(&format!("&after={}", enc(&t))),
                    None => next.push_str(&format!(
                        "&since={}",
                        enc(query.get("since").map(String::as_str).unwrap_or(""))
                    )),
                }
                let body = serde_json::to_string(&page).unwrap();
                with_rate(Response::builder())
                    .status(200)
                    .header("content-type", "application/json")
                    .header("link", format!("<{base}{}>; rel=\"self\"", req.uri()))
                    .header("link", format!("<{next}>; rel=\"next\""))
                    .body(Full::new(Bytes::from(body)))
                    .unwrap()
            }
        }
    };
    log.status = response.status().as_u16();
    s.requests.push(log);
    response
}

/// The scripts every test runs: they count one run per event and log the delivery's source.
const SCRIPT: &str = "//! on: user.lifecycle.create, group.user_membership.*\n//! hook: test\nlog(`${event.uuid} ${delivery.source}`);\n";

fn okta_config(log: &SystemLog, extra: &str) -> String {
    format!(
        "\n[okta]\norg_url = \"{}\"\ntoken_env = \"OKTA_API_TOKEN\"\nbackfill = true\nbackfill_hook = \"test\"\nbackfill_lag_s = 1\nbackfill_interval_s = 1\n{extra}",
        log.url
    )
}

fn env() -> [(&'static str, &'static str); 2] {
    [("ENGINE_TEST_SECRET", SECRET), ("OKTA_API_TOKEN", TOKEN)]
}

fn metrics(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(engine::util::http_client::request(
        hyper::Method::GET,
        &format!("{url}/metrics"),
        &[],
        Bytes::new(),
    ))
    .map(|a| a.text())
    .unwrap_or_default()
}

/// The value of one metric sample line (`name{labels}`), 0 when absent.
fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Successful runs per event uuid (through the server or the file).
fn runs_per_uuid(dir: &Path) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in history_json(dir, "runs") {
        if r["status"] == "succeeded" {
            *out.entry(r["event_uuid"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    out
}

/// Stored events per uuid, with their source.
fn events_per_uuid(dir: &Path) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for e in history_json(dir, "events") {
        out.entry(e["uuid"].as_str().unwrap().to_string())
            .or_default()
            .push(e["source"].as_str().unwrap_or("").to_string());
    }
    out
}

/// Waits until the server's first poll has set the cursor (a first start begins at now).
fn wait_cursor(p: &ServeProcess) {
    assert!(
        wait_until(Duration::from_secs(20), || {
            metric(&metrics(&p.url), "engine_backfill_cursor_timestamp_seconds") > 0.0
        }),
        "no cursor: {}",
        p.log()
    );
}

fn uuid(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:03}-{}", &engine::util::new_uuid()[..8])
}

/// Events the hook never delivered are fetched and run once; those delivered by hook, before or
/// after the System Log brought them, run once too; unsubscribed types are not stored.
#[test]
fn every_event_is_stored_and_run_once_whichever_way_it_came() {
    let log = SystemLog::start();
    let (dir, port) = engine_setup(
        &okta_config(&log, "backfill_page_size = 4\n"),
        &[("count.rhai", SCRIPT)],
    );
    // Logged before the first start: a first start begins at "now", so this one is not fetched.
    let before = uuid("before", 0);
    log.log(&before, "user.lifecycle.create");
    std::thread::sleep(Duration::from_millis(20));
    let p = ServeProcess::start(dir.path(), port, &env());
    wait_cursor(&p);
    let hook = format!("{}/hooks/test", p.url);
    let mut subscribed = Vec::new();
    let mut by_hook_first = Vec::new();
    let mut by_hook_late = Vec::new();
    for i in 0..12 {
        let t = if i % 2 == 0 {
            "user.lifecycle.create"
        } else {
            "group.user_membership.add"
        };
        let u = uuid("ev", i);
        let json = log.log(&u, t);
        subscribed.push(u.clone());
        match i % 3 {
            // Delivered by hook at once (and in the log too: both ways).
            0 => by_hook_first.push((u, json)),
            // Delivered by hook late, after the backfill stored it.
            1 => by_hook_late.push((u, json)),
            // Never delivered: only the System Log has it.
            _ => {}
        }
    }
    let unsubscribed = uuid("session", 0);
    log.log(&unsubscribed, "user.session.start");
    log.log_delivery_failure(&uuid("hookfail", 0));
    for (_, json) in &by_hook_first {
        assert_eq!(post_blocking(&hook, wrap(json)), 200);
    }
    assert!(
        wait_until(Duration::from_secs(30), || {
            let runs = runs_per_uuid(dir.path());
            subscribed.iter().all(|u| runs.contains_key(u))
        }),
        "not every event ran: {:?}\n{}",
        runs_per_uuid(dir.path()),
        p.log()
    );
    for (_, json) in &by_hook_late {
        assert_eq!(
            post_blocking(&hook, wrap(json)),
            200,
            "a late duplicate is answered 200"
        );
    }
    // Give the late copies, and a few more polls, every chance to run twice.
    std::thread::sleep(Duration::from_secs(3));
    let runs = runs_per_uuid(dir.path());
    for u in &subscribed {
        assert_eq!(runs.get(u), Some(&1), "{u} ran {:?} times", runs.get(u));
    }
    let events = events_per_uuid(dir.path());
    assert_eq!(events.len(), subscribed.len(), "{events:?}");
    for u in &subscribed {
        let sources = &events[u];
        assert_eq!(sources.len(), 1, "{u}: {sources:?}");
        let want = if by_hook_first.iter().any(|(h, _)| h == u) {
            "hook"
        } else {
            "system-log"
        };
        assert_eq!(sources[0], want, "{u}");
    }
    assert!(!events.contains_key(&unsubscribed));
    assert!(!events.contains_key(&before), "a first start begins at now");
    // Scripts see `delivery.source`.
    let all = history_json(dir.path(), "runs");
    let line = |u: &str| {
        all.iter()
            .find(|r| r["event_uuid"] == u)
            .and_then(|r| r["log"][0]["message"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let only_log = subscribed
        .iter()
        .find(|u| {
            !by_hook_first.iter().any(|(h, _)| h == *u)
                && !by_hook_late.iter().any(|(h, _)| h == *u)
        })
        .unwrap();
    assert_eq!(line(only_log), format!("{only_log} system-log"));
    let m = metrics(&p.url);
    assert!(metric(&m, "engine_backfill_events_total") >= 8.0, "{m}");
    assert!(metric(&m, "engine_backfill_polls_total") >= 2.0, "{m}");
    assert_eq!(
        metric(&m, "engine_backfill_delivery_failures_total"),
        1.0,
        "{m}"
    );
    assert!(
        p.log().contains("failed event hook delivery"),
        "{}",
        p.log()
    );
    // Pagination: several pages were followed by their next link.
    let reqs = log.requests();
    assert!(
        reqs.iter()
            .filter(|r| r.query.contains_key("after") && r.events > 0)
            .count()
            >= 2,
        "{reqs:?}"
    );
    assert!(reqs.iter().all(
        |r| r.query.get("sortOrder").map(String::as_str) == Some("ASCENDING")
            && !r.query.contains_key("until")
    ));
    assert!(!p.log().contains(TOKEN));
}

/// The filter is made of the backfill hook's scripts' `on:` patterns, and follows a reload.
#[test]
fn the_filter_follows_the_scripts_subscriptions() {
    let log = SystemLog::start();
    let other = "//! on: user.session.start\n//! hook: elsewhere\nlog(\"x\");\n";
    let (dir, port) = engine_setup(
        &okta_config(&log, ""),
        &[("count.rhai", SCRIPT), ("other.rhai", other)],
    );
    let p = ServeProcess::start(dir.path(), port, &env());
    wait_cursor(&p);
    log.log(&uuid("f", 0), "user.lifecycle.create");
    let want = r#"eventType sw "group.user_membership." or eventType eq "user.lifecycle.create" or eventType eq "event_hook.delivery""#;
    assert!(
        wait_until(Duration::from_secs(20), || log.requests().iter().any(|r| r
            .query
            .get("filter")
            .map(String::as_str)
            == Some(want))),
        "{:?}",
        log.requests()
    );
    // A new script bound to every hook adds its types to the next poll's filter.
    std::fs::write(
        dir.path().join("scripts/all-users.rhai"),
        "//! on: user.*\nlog(\"u\");\n",
    )
    .unwrap();
    let want = r#"eventType sw "group.user_membership." or eventType sw "user." or eventType eq "event_hook.delivery""#;
    assert!(
        wait_until(Duration::from_secs(20), || log.requests().iter().any(|r| r
            .query
            .get("filter")
            .map(String::as_str)
            == Some(want))),
        "{:?}",
        log.requests().last()
    );
}

/// Downtime: events logged while the engine is stopped are fetched after the restart; a SIGKILL
/// in the middle of a catch-up loses and repeats nothing.
#[test]
fn catches_up_after_downtime_and_a_kill_mid_catch_up_loses_and_repeats_nothing() {
    let log = SystemLog::start();
    let (dir, port) = engine_setup(
        &okta_config(&log, "backfill_page_size = 2\n"),
        &[("count.rhai", SCRIPT)],
    );
    let p = ServeProcess::start(dir.path(), port, &env());
    wait_cursor(&p);
    p.signal(libc::SIGTERM);
    drop(p);
    let logged: Vec<String> = (0..30)
        .map(|i| {
            let u = uuid("down", i);
            log.log(&u, "user.lifecycle.create");
            u
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1100));
    // A slow Okta: 15 pages take a few seconds, and the kill comes in between.
    log.set_delay(200);
    let p = ServeProcess::start(dir.path(), port, &env());
    assert!(
        wait_until(Duration::from_secs(20), || {
            metric(&metrics(&p.url), "engine_backfill_events_total") >= 4.0
        }),
        "{}",
        p.log()
    );
    p.signal(libc::SIGKILL);
    drop(p);
    let partial = stored_events(&dir.path().join("data")).len();
    assert!(
        partial >= 4,
        "what the metrics counted is durable ({partial})"
    );
    assert!(
        partial < logged.len(),
        "the kill came after the catch-up ({partial})"
    );
    log.set_delay(0);
    let p = ServeProcess::start(dir.path(), port, &env());
    assert!(
        wait_until(Duration::from_secs(30), || {
            let runs = runs_per_uuid(dir.path());
            logged.iter().all(|u| runs.contains_key(u))
        }),
        "{:?}\n{}",
        runs_per_uuid(dir.path()),
        p.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    let events = events_per_uuid(dir.path());
    let runs = runs_per_uuid(dir.path());
    for u in &logged {
        assert_eq!(
            events.get(u).map(Vec::len),
            Some(1),
            "{u} stored {:?}",
            events.get(u)
        );
        assert_eq!(runs.get(u), Some(&1), "{u} ran {:?}", runs.get(u));
    }
    assert_eq!(events.len(), logged.len());
}

/// A 500 is retried after a backoff; a 429 is waited out until its `X-Rate-Limit-Reset`; a 401 is reported in one clear line and on
/// `/metrics`, and retried.
#[test]
fn a_429_is_waited_out_and_a_401_reported_and_retried() {
    let log = SystemLog::start();
    let (dir, port) = engine_setup(
        &okta_config(&log, "backfill_page_size = 2\n"),
        &[("count.rhai", SCRIPT)],
    );
    let p = ServeProcess::start(dir.path(), port, &env());
    wait_cursor(&p);
    log.fault(Fault::Unauthorized);
    log.fault(Fault::Unauthorized);
    let logged: Vec<String> = (0..6)
        .map(|i| {
            let u = uuid("rl", i);
            log.log(&u, "user.lifecycle.create");
            u
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(20), || log
            .requests()
            .iter()
            .filter(|r| r.status == 401)
            .count()
            == 2),
        "{:?}",
        log.requests()
    );
    // Then a 500 (backed off, retried), then a 429 (reset 1–2 s ahead).
    log.fault(Fault::ServerError);
    log.fault(Fault::TooMany { reset_in_s: 1 });
    assert!(
        wait_until(Duration::from_secs(30), || {
            let runs = runs_per_uuid(dir.path());
            logged.iter().all(|u| runs.contains_key(u))
        }),
        "{:?}\n{}",
        log.requests(),
        p.log()
    );
    let reqs = log.requests();
    let limited = reqs
        .iter()
        .position(|r| r.status == 429)
        .expect("a 429 was answered");
    let reset_ms = reqs[limited].reset.unwrap() * 1000;
    let after = &reqs[limited + 1];
    assert!(
        after.at_ms >= reset_ms,
        "asked again {} ms before the reset",
        reset_ms - after.at_ms
    );
    assert_eq!(after.status, 200);
    let text = p.log();
    let line = text
        .lines()
        .find(|l| l.contains("E0000011"))
        .unwrap_or_else(|| panic!("no 401 line: {text}"));
    assert!(
        line.contains("(401 ") && line.contains("okta.token_env"),
        "{line}"
    );
    assert!(!text.contains(TOKEN));
    let m = metrics(&p.url);
    assert_eq!(
        metric(&m, "engine_backfill_errors_total{reason=\"unauthorized\"}"),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "engine_backfill_errors_total{reason=\"unavailable\"}"),
        1.0,
        "{m}"
    );
    assert!(
        metric(&m, "engine_backfill_rate_limit_pauses_total") >= 1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "engine_backfill_failing"), 0.0, "{m}");
    let runs = runs_per_uuid(dir.path());
    assert!(logged.iter().all(|u| runs[u] == 1));
}

/// `engine backfill --since` lists what the store lacks (`--dry-run` stores nothing), stores it
/// without a server, and through a running one.
#[test]
fn engine_backfill_lists_and_fills_a_gap_with_and_without_a_server() {
    let log = SystemLog::start();
    let cfg = format!(
        "\n[okta]\norg_url = \"{}\"\ntoken_env = \"OKTA_API_TOKEN\"\nbackfill_hook = \"test\"\nbackfill_lag_s = 0\n",
        log.url
    );
    let (dir, port) = engine_setup(&cfg, &[("count.rhai", SCRIPT)]);
    let a = uuid("gap", 0);
    let b = uuid("gap", 1);
    log.log(&a, "user.lifecycle.create");
    log.log(&b, "group.user_membership.add");
    log.log(&uuid("gap", 2), "user.session.start");
    std::thread::sleep(Duration::from_millis(50));
    let run = |args: &[&str]| {
        let o = engine_bin()
            .current_dir(dir.path())
            .args(args)
            .env("OKTA_API_TOKEN", TOKEN)
            .env("ENGINE_TEST_SECRET", SECRET)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        stdout(&o)
    };
    let out = run(&["backfill", "--since", "1h", "--dry-run"]);
    assert!(out.contains(&a) && out.contains(&b), "{out}");
    assert!(
        out.contains("2 event(s)") && out.contains("dry run"),
        "{out}"
    );
    assert!(stored_events(&dir.path().join("data")).is_empty());
    let out = run(&["backfill", "--since", "1h", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["stored"], 2, "{out}");
    assert_eq!(stored_events(&dir.path().join("data")).len(), 2);
    // Through the running server (backfill off: only by hand): one new event, the rest known.
    let c = uuid("gap", 3);
    log.log(&c, "user.lifecycle.create");
    std::thread::sleep(Duration::from_millis(50));
    let p = ServeProcess::start(dir.path(), port, &env());
    let out = run(&["backfill", "--since", "1h"]);
    assert!(out.contains(&c) && !out.contains(&a), "{out}");
    assert!(
        out.contains("1 event(s)") && out.contains("1 stored"),
        "{out}"
    );
    assert!(wait_until(Duration::from_secs(20), || {
        let runs = runs_per_uuid(dir.path());
        [&a, &b, &c].iter().all(|u| runs.get(*u) == Some(&1))
    }));
    drop(p);
}

/// Bad `backfill*` values are configuration errors naming the key and its line.
#[test]
fn bad_backfill_config_is_a_clear_error() {
    let cases = [
        (
            "backfill = true\nbackfill_hook = \"nope\"\n",
            "okta.backfill_hook",
            "no [[hook]] has id `nope`",
        ),
        (
            "backfill = true\nbackfill_lag_s = -5\n",
            "okta.backfill_lag_s",
            "out of range",
        ),
        (
            "backfill = true\nbackfill_interval_s = 0\n",
            "okta.backfill_interval_s",
            "out of range",
        ),
        (
            "backfill_page_size = 5000\n",
            "okta.backfill_page_size",
            "out of range",
        ),
        (
            "backfill_reserve_percent = 95\n",
            "okta.backfill_reserve_percent",
            "out of range",
        ),
        ("backfill = \"yes\"\n", "backfill", "invalid type"),
    ];
    for (extra, key, message) in cases {
        let cfg = format!(
            "\n[okta]\norg_url = \"https://example.okta.com\"\ntoken_env = \"OKTA_API_TOKEN\"\n{extra}"
        );
        let (dir, _) = engine_setup(&cfg, &[]);
        let o = engine_bin()
            .current_dir(dir.path())
            .args(["backfill", "--since", "1h"])
            .env("OKTA_API_TOKEN", TOKEN)
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{extra}: {err}");
        assert!(err.contains(key) && err.contains(message), "{extra}: {err}");
        assert!(
            err.contains("engine.toml:"),
            "names the file and line: {err}"
        );
    }
    // Two okta hooks and no backfill_hook: which one is not guessed.
    let cfg = "\n[[hook]]\nid = \"second\"\nsecret_env = \"ENGINE_TEST_SECRET\"\n\n[okta]\norg_url = \"https://example.okta.com\"\ntoken_env = \"OKTA_API_TOKEN\"\nbackfill = true\n";
    let (dir, _) = engine_setup(cfg, &[]);
    let o = run_engine(dir.path(), &["backfill", "--since", "1h"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("backfill_hook"), "{}", stderr(&o));
    let (dir, _) = engine_setup("", &[]);
    let o = run_engine(dir.path(), &["backfill", "--since", "soon"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("30m, 24h or 7d"), "{}", stderr(&o));
}

/// A cursor older than Okta lets a query reach back (a downtime of over 180 days) is not asked
/// for (Okta would answer 400 on every poll): the poller starts from the oldest `since` it accepts.
#[test]
fn a_cursor_older_than_180_days_is_read_from_the_oldest_since_okta_accepts() {
    let log = SystemLog::start();
    let (dir, port) = engine_setup(&okta_config(&log, ""), &[("count.rhai", SCRIPT)]);
    let day_ms = 24 * 3600 * 1000;
    {
        let store =
            engine::store::Store::open(&dir.path().join("data"), engine::store::CommitMode::Group)
                .expect("store");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(store.store_backfill(None, Some(now_ms() - 200 * day_ms)))
            .expect("cursor written");
        store.close();
    }
    let p = ServeProcess::start(dir.path(), port, &env());
    assert!(
        wait_until(Duration::from_secs(20), || !log.requests().is_empty()),
        "no request: {}",
        p.log()
    );
    let first = log.requests()[0]
        .query
        .get("since")
        .cloned()
        .unwrap_or_default();
    let since_ms =
        engine::util::parse_rfc3339_nanos(&first).expect("since is RFC 3339") / 1_000_000;
    let oldest = (now_ms() - 180 * day_ms) as i128;
    assert!(
        since_ms >= oldest && since_ms < oldest + 5 * 60 * 1000,
        "since {first} is not the oldest Okta accepts"
    );
    assert!(
        p.log()
            .contains("older than Okta's System Log can be queried"),
        "{}",
        p.log()
    );
}
