//! End-to-end benchmark of the whole pipeline in one process, the real server on loopback:
//!
//! 1. events/s processed end to end (delivery → durable commit → dispatch → example scripts →
//!    recorded runs → outbox → `.eml` files), with the shipped example scripts;
//! 2. the receiver's answer latency (p50/p99) while every event queues a mail and the SMTP server
//!    (the tests' in-process one, `tests/support/smtp_server.rs`) answers at once, against while it
//!    takes 2 s per mail: slow mail must not slow the answers to Okta.
//!
//! Run: `cargo bench --bench pipeline`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::config::Config;
use engine::store::CommitMode;
use engine::store::outbox::OutboxView;
use engine::store::runs::{RunStatus, RunsView};
use engine::util::http_client::Conn;
use hyper::Method;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
#[path = "../tests/support/smtp_server.rs"]
#[allow(dead_code)] // the tests use the rest of it
mod smtp_server;
const DEACTIVATE: &str = include_str!("../tests/fixtures/event.user.lifecycle.deactivate.json");
const GROUP_ADD: &str = include_str!("../tests/fixtures/event.group.user_membership.add.json");
/// Events in part 1.
const EVENTS: usize = 4000;
/// Events per delivery in part 1.
const PER_DELIVERY: usize = 10;
/// Connections posting in part 1 and part 2.
const CONNS: usize = 16;
/// How long part 2 posts for each SMTP speed.
const LATENCY_RUN: Duration = Duration::from_secs(5);

fn event(template: &str, uuid: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(template).expect("fixture");
    v["uuid"] = uuid.into();
    v.to_string()
}

fn config(dir: &Path, extra: &str) -> Config {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nscripts_dir = \"{REPO}/scripts\"\nstdlib_dir = \"{REPO}/stdlib\"\n{extra}"
    );
    let path = dir.join("engine.toml");
    std::fs::write(&path, &text).expect("config");
    Config::parse(&text, &path).expect("valid config")
}

struct Running {
    url: String,
    secret: String,
    store: Arc<engine::store::Store>,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

async fn start(config: &Config) -> Running {
    let app =
        engine::app::prepare(config, CommitMode::Group, &mut std::io::sink()).expect("prepare");
    let store = app.store().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let secret = std::fs::read_to_string(config.generated_secret_path("default"))
        .expect("secret")
        .trim()
        .to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(engine::app::run(listener, app, async {
        let _ = stopped.await;
    }));
    Running {
        url,
        secret,
        store,
        stop,
        done,
    }
}

async fn end_to_end() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = config(dir.path(), "");
    let r = start(&config).await;
    let started = Instant::now();
    let deliveries = EVENTS / PER_DELIVERY;
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        let (url, secret) = (r.url.clone(), r.secret.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&url).await.expect("connect");
            let headers = vec![("Authorization".to_string(), secret)];
            for d in (c..deliveries).step_by(CONNS) {
                let events: Vec<String> = (0..PER_DELIVERY)
                    .map(|i| {
                        let t = if i % 2 == 0 { DEACTIVATE } else { GROUP_ADD };
                        event(t, &format!("e2e-{d}-{i}"))
                    })
                    .collect();
                let body = format!(
                    r#"{{"eventId":"e2e-{d}","data":{{"events":[{}]}}}}"#,
                    events.join(",")
                );
                let a = conn
                    .send(Method::POST, "/hooks/default", &headers, Bytes::from(body))
                    .await
                    .expect("post");
                assert_eq!(a.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let ingested = started.elapsed();
    // Each deactivate runs the offboarding script (one mail); each group add the privileged-group
    // script. Wait until every run is recorded and every mail written.
    let want_runs = EVENTS;
    loop {
        let undispatched = r.store.history().depths().expect("depths").queued;
        let pending = RunsView(&*r.store).pending_count().expect("runs");
        let mail_due = OutboxView(&*r.store).due_count().expect("outbox");
        if undispatched == 0 && pending == 0 && mail_due == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total = started.elapsed();
    let runs = RunsView(&*r.store).recent(usize::MAX, false).expect("runs");
    assert_eq!(runs.len(), want_runs);
    assert!(
        runs.iter().all(|x| x.status == RunStatus::Succeeded),
        "example scripts fail on the samples"
    );
    let mails = std::fs::read_dir(config.data_dir.join("outbox-mail"))
        .map(|d| d.count())
        .unwrap_or(0);
    println!(
        "end to end: {EVENTS} events ({deliveries} deliveries of {PER_DELIVERY}, {CONNS} connections) → {want_runs} runs, {mails} mails"
    );
    println!(
        "  ingest {:.2} s ({:.0} events/s); processed end to end in {:.2} s = {:.0} events/s",
        ingested.as_secs_f64(),
        EVENTS as f64 / ingested.as_secs_f64(),
        total.as_secs_f64(),
        EVENTS as f64 / total.as_secs_f64()
    );
    let _ = r.stop.send(());
    let _ = r.done.await;
}

/// p50/p99 answer latency (ms) of 1-event deliveries that each queue a mail.
async fn latency_with_smtp(delay_ms: u64) -> (f64, f64, usize) {
    let delay = delay_ms.to_string();
    let mut smtp = smtp_server::SmtpServer::start(&["--no-store", "--delay-ms", &delay]);
    let port = smtp.port;
    let var = format!("ENGINE_BENCH_SMTP_{port}");
    // SAFETY: set before the engine reads it; no other thread reads or writes this variable.
    unsafe { std::env::set_var(&var, format!("smtp://127.0.0.1:{port}?tls=none")) };
    let dir = tempfile::tempdir().expect("tmp");
    let config = config(
        dir.path(),
        &format!("[smtp]\nurl_env = \"{var}\"\nfrom = \"bench@example.com\"\n"),
    );
    let r = start(&config).await;
    let deadline = Instant::now() + LATENCY_RUN;
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        let (url, secret) = (r.url.clone(), r.secret.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&url).await.expect("connect");
            let headers = vec![("Authorization".to_string(), secret)];
            let mut lat = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let body = format!(
                    r#"{{"eventId":"lat-{delay_ms}-{c}-{i}","data":{{"events":[{}]}}}}"#,
                    event(DEACTIVATE, &format!("lat-{delay_ms}-{c}-{i}"))
                );
                i += 1;
                let t = Instant::now();
                let a = conn
                    .send(Method::POST, "/hooks/default", &headers, Bytes::from(body))
                    .await
                    .expect("post");
                assert_eq!(a.status, 200);
                lat.push(t.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    all.sort_unstable();
    let p = |q: f64| all[((all.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    let result = (p(0.5), p(0.99), all.len());
    let _ = r.stop.send(());
    // Shutdown waits for sends in flight (up to 2 s each at the slow speed).
    let _ = tokio::time::timeout(Duration::from_secs(30), r.done).await;
    smtp.stop();
    result
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    end_to_end().await;
    let fast = latency_with_smtp(0).await;
    let slow = latency_with_smtp(2000).await;
    println!(
        "answer latency while every event queues a mail ({CONNS} connections, {} s each):",
        LATENCY_RUN.as_secs()
    );
    println!(
        "  SMTP answers at once: p50 {:.2} ms, p99 {:.2} ms ({} deliveries)",
        fast.0, fast.1, fast.2
    );
    println!(
        "  SMTP takes 2 s/mail:  p50 {:.2} ms, p99 {:.2} ms ({} deliveries)",
        slow.0, slow.1, slow.2
    );
    println!("  p99 change: {:+.1}%", (slow.1 - fast.1) / fast.1 * 100.0);
}
