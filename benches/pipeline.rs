//! End-to-end benchmark of the whole pipeline in one process, the real server on loopback:
//!
//! 1. events/s processed end to end (delivery → durable commit → dispatch → example scripts →
//!    recorded runs with their mail queued in the outbox; mail over SMTP), with the shipped example scripts,
//!    over 100,000 events (`--events N`), and the receiver's answer latency (p50/p99) under that
//!    load against the same load with no scripts; the writer's commits, jobs per commit and time
//!    per commit during ingest and during the runs after it; then how long the outbox took to
//!    send every mail;
//! 2. the receiver's answer latency (p50/p99) while every event queues a mail and the SMTP server
//!    (the tests' in-process one, `tests/support/smtp_server.rs`) answers at once, against while it
//!    takes 2 s per mail: slow mail must not slow the answers to Okta.
//!
//! 3. the same with an HTTP endpoint (a loopback receiver started here) that answers at once,
//!    against one that takes 5 s per request: a slow destination must not slow the answers.
//!
//! Run: `cargo bench --bench pipeline` (`-- --events 20000` for a shorter run; `-- --only e2e`
//! for part 1 alone).

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
/// Events in part 1, unless `--events N`.
const EVENTS: usize = 100_000;
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

/// An event as text with its uuid left out, so that the load generator's own cost per event is
/// a string join, not a JSON parse and print (it shares the two cores with the engine).
struct Template(String, String);

impl Template {
    const HOLE: &str = "@@UUID@@";

    fn new(fixture: &str) -> Template {
        let text = event(fixture, Template::HOLE);
        let (a, b) = text.split_once(Template::HOLE).expect("uuid hole");
        Template(a.to_string(), b.to_string())
    }

    fn with_uuid(&self, uuid: &str) -> String {
        format!("{}{uuid}{}", self.0, self.1)
    }
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

/// Posts `events` events in deliveries of [`PER_DELIVERY`] over [`CONNS`] connections as fast
/// as they are answered; returns how long it took and every answer's latency (µs), sorted.
async fn post_all(r: &Running, events: usize, prefix: &str) -> (Duration, Vec<u64>) {
    let started = Instant::now();
    let deliveries = events.div_ceil(PER_DELIVERY);
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        let (url, secret, prefix) = (r.url.clone(), r.secret.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&url).await.expect("connect");
            let headers = vec![("Authorization".to_string(), secret)];
            let mut lat = Vec::new();
            let (deactivate, group_add) = (Template::new(DEACTIVATE), Template::new(GROUP_ADD));
            for d in (c..deliveries).step_by(CONNS) {
                let n = PER_DELIVERY.min(events - d * PER_DELIVERY);
                let events: Vec<String> = (0..n)
                    .map(|i| {
                        let t = if i % 2 == 0 { &deactivate } else { &group_add };
                        t.with_uuid(&format!("{prefix}-{d}-{i}"))
                    })
                    .collect();
                let body = format!(
                    r#"{{"eventId":"{prefix}-{d}","data":{{"events":[{}]}}}}"#,
                    events.join(",")
                );
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
    (started.elapsed(), all)
}

/// CPU time of the whole process so far (user + system, every thread): a figure that drifts
/// less than wall time when comparing two builds on a shared machine.
fn cpu_time() -> Duration {
    // SAFETY: `rusage` is plain integers, for which all zeroes is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// The `q` quantile of sorted latencies (µs), in ms.
fn quantile(sorted: &[u64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q) as usize] as f64 / 1000.0
}

async fn end_to_end(events: usize) {
    // The same load with no scripts: what the answers cost with nothing behind them.
    let bare_dir = tempfile::tempdir().expect("tmp");
    let empty = bare_dir.path().join("no-scripts");
    std::fs::create_dir(&empty).expect("dir");
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nscripts_dir = \"{}\"\nstdlib_dir = \"{REPO}/stdlib\"\n",
        empty.display()
    );
    let path = bare_dir.path().join("engine.toml");
    std::fs::write(&path, &text).expect("config");
    let bare_config = Config::parse(&text, &path).expect("valid config");
    let bare = start(&bare_config).await;
    let (bare_took, bare_lat) = post_all(&bare, events, "bare").await;
    let _ = bare.stop.send(());
    let _ = bare.done.await;
    drop(bare_dir);

    // Mail goes over SMTP, as in production, to the tests' in-process server (keeping nothing).
    let mut smtp = smtp_server::SmtpServer::start(&["--no-store"]);
    let dir = tempfile::tempdir().expect("tmp");
    let config = config(dir.path(), &smtp_config(smtp.port));
    let r = start(&config).await;
    // Read at the start, not taken as zero: starting the engine writes too.
    let writer = r.store.writer_stats();
    let at_start = writer.read();
    let started = Instant::now();
    let cpu_at_start = cpu_time();
    let (ingest_took, lat) = post_all(&r, events, "e2e").await;
    let at_ingest_end = writer.read();
    // Each deactivate runs the offboarding script (one mail); each group add the privileged-group
    // script. Wait until every run is recorded (its mail queued with it), then every mail written.
    loop {
        let undispatched = r.store.history().depths().expect("depths").queued;
        let pending = RunsView(&*r.store).pending_count().expect("runs");
        if undispatched == 0 && pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let processed = started.elapsed();
    let cpu = cpu_time() - cpu_at_start;
    let at_processed = writer.read();
    while OutboxView(&*r.store).due_count().expect("outbox") > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mailed = started.elapsed();
    let runs = RunsView(&*r.store).recent(usize::MAX, false).expect("runs");
    assert_eq!(runs.len(), events, "one run per event");
    assert!(
        runs.iter().all(|x| x.status == RunStatus::Succeeded),
        "example scripts fail on the samples"
    );
    drop(runs);
    let mails = smtp.accepted();
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    println!(
        "end to end: {events} events ({} deliveries of {PER_DELIVERY}, {CONNS} connections) → {events} runs, {mails} mails",
        events.div_ceil(PER_DELIVERY)
    );
    println!(
        "  ingest {:.2} s ({:.0} events/s); runs recorded (mail queued) after {:.2} s = {:.0} events/s end to end",
        ingest_took.as_secs_f64(),
        rate(ingest_took),
        processed.as_secs_f64(),
        rate(processed)
    );
    println!(
        "  CPU until then (every thread, load generator included): {:.2} s = {:.0} µs per event",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / events as f64
    );
    let per_batch = |a: engine::store::WriterCounts, b: engine::store::WriterCounts| {
        let batches = b.batches - a.batches;
        let each = |n: u64| n as f64 / batches.max(1) as f64;
        format!(
            "{batches} commits, {:.1} jobs each, {:.0} µs busy each ({:.0} µs in commit)",
            each(b.jobs - a.jobs),
            each(b.busy_us - a.busy_us),
            each(b.commit_us - a.commit_us),
        )
    };
    println!(
        "  writer during ingest: {}",
        per_batch(at_start, at_ingest_end)
    );
    println!(
        "  writer after ingest until every run was recorded: {}",
        per_batch(at_ingest_end, at_processed)
    );
    println!(
        "  every mail sent (SMTP) after {:.2} s = {:.0} mails/s",
        mailed.as_secs_f64(),
        mails as f64 / mailed.as_secs_f64()
    );
    println!(
        "  answers under that load: p50 {:.2} ms, p99 {:.2} ms; with no scripts: p50 {:.2} ms, p99 {:.2} ms ({:.0} events/s); p99 ratio {:.2}×",
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        quantile(&bare_lat, 0.5),
        quantile(&bare_lat, 0.99),
        rate(bare_took),
        quantile(&lat, 0.99) / quantile(&bare_lat, 0.99)
    );
    let _ = r.stop.send(());
    let _ = r.done.await;
    smtp.stop();
}

/// The `[smtp]` section for a test SMTP server on `port` (its URL in an environment variable).
fn smtp_config(port: u16) -> String {
    let var = format!("ENGINE_BENCH_SMTP_{port}");
    // SAFETY: set before the engine reads it; no other thread reads or writes this variable.
    unsafe { std::env::set_var(&var, format!("smtp://127.0.0.1:{port}?tls=none")) };
    format!("[smtp]\nurl_env = \"{var}\"\nfrom = \"bench@example.com\"\n")
}

/// p50/p99 answer latency (ms) of 1-event deliveries that each queue a mail.
async fn latency_with_smtp(delay_ms: u64) -> (f64, f64, usize) {
    let delay = delay_ms.to_string();
    let mut smtp = smtp_server::SmtpServer::start(&["--no-store", "--delay-ms", &delay]);
    let dir = tempfile::tempdir().expect("tmp");
    let config = config(dir.path(), &smtp_config(smtp.port));
    let result = latency_of(&config, &format!("lat-{delay_ms}")).await;
    smtp.stop();
    result
}

/// A script that POSTs every event it gets to the endpoint `receiver`.
const HTTP_SCRIPT: &str =
    "//! on: *\nhttp_post(\"receiver\", #{ uuid: event.uuid, type: event.eventType });\n";

/// An HTTP receiver on loopback that answers every request `204` after `delay_ms`; its port.
async fn slow_receiver(delay_ms: u64) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| async move {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .status(204)
                            .body(http_body_util::Empty::<Bytes>::new())
                            .expect("response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, task)
}

/// p50/p99 answer latency (ms) of 1-event deliveries that each queue an HTTP request to an
/// endpoint answering after `delay_ms`.
async fn latency_with_endpoint(delay_ms: u64) -> (f64, f64, usize) {
    let (port, receiver) = slow_receiver(delay_ms).await;
    let dir = tempfile::tempdir().expect("tmp");
    let scripts = dir.path().join("scripts");
    std::fs::create_dir(&scripts).expect("dir");
    std::fs::write(scripts.join("forward.rhai"), HTTP_SCRIPT).expect("script");
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nscripts_dir = \"{}\"\nstdlib_dir = \"{REPO}/stdlib\"\n\n[endpoint.receiver]\nurl = \"http://127.0.0.1:{port}/events\"\ntimeout_ms = 30000\n",
        scripts.display()
    );
    let path = dir.path().join("engine.toml");
    std::fs::write(&path, &text).expect("config");
    let config = Config::parse(&text, &path).expect("valid config");
    let result = latency_of(&config, &format!("http-{delay_ms}")).await;
    receiver.abort();
    result
}

/// p50/p99 answer latency (ms) and count of 1-event deliveries posted for [`LATENCY_RUN`] over
/// [`CONNS`] connections to an engine started on `config` (uuids start with `prefix`).
async fn latency_of(config: &Config, prefix: &str) -> (f64, f64, usize) {
    let r = start(config).await;
    let deadline = Instant::now() + LATENCY_RUN;
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        let (url, secret, prefix) = (r.url.clone(), r.secret.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&url).await.expect("connect");
            let headers = vec![("Authorization".to_string(), secret)];
            let mut lat = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let body = format!(
                    r#"{{"eventId":"{prefix}-{c}-{i}","data":{{"events":[{}]}}}}"#,
                    event(DEACTIVATE, &format!("{prefix}-{c}-{i}"))
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
    let result = (quantile(&all, 0.5), quantile(&all, 0.99), all.len());
    let _ = r.stop.send(());
    // Shutdown waits for the actions in flight (up to a slow far side's delay each).
    let _ = tokio::time::timeout(Duration::from_secs(30), r.done).await;
    result
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let events = arg("--events")
        .map(|n| n.parse().expect("--events N"))
        .unwrap_or(EVENTS);
    end_to_end(events).await;
    if arg("--only").as_deref() == Some("e2e") {
        return;
    }
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
    let fast = latency_with_endpoint(0).await;
    let slow = latency_with_endpoint(5000).await;
    println!(
        "answer latency while every event queues an HTTP request ({CONNS} connections, {} s each):",
        LATENCY_RUN.as_secs()
    );
    println!(
        "  endpoint answers at once:  p50 {:.2} ms, p99 {:.2} ms ({} deliveries)",
        fast.0, fast.1, fast.2
    );
    println!(
        "  endpoint takes 5 s/request: p50 {:.2} ms, p99 {:.2} ms ({} deliveries)",
        slow.0, slow.1, slow.2
    );
    println!("  p99 change: {:+.1}%", (slow.1 - fast.1) / fast.1 * 100.0);
}
