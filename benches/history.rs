//! Memory, start time and ingest throughput of `engine serve` on a store with a long history
//! (issue "Throughput and memory that hold with a month of history"), against an empty store:
//!
//! 1. builds a store of `--events N` events (default 2,000,000; 30 days at Okta's cap is
//!    12,000,000) fast, through the store's own API (deliveries of 10 small events, many in
//!    flight, group commit), marked as dispatched, as a month of history would be;
//! 2. starts the release `engine serve` on it: start-to-ready (spawn to the first `/healthz`
//!    200), idle RSS 3 s later;
//! 3. posts 1-event deliveries for 5 s over 32 connections: deliveries/s, answer p99, peak RSS;
//! 4. the same 2–3 on an empty store.
//!
//! Run: `cargo bench --bench history` (`-- --events 12000000` for the full month; ~2 GB of disk;
//! `--baseline NAME=PATH`, repeatable, measures other `engine` binaries on the same stores too).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::config::HookKind;
use engine::store::{CommitMode, NewDelivery, Store, set_dispatch_cursor};
use engine::util::http_client::Conn;
use hyper::Method;

#[path = "support/load.rs"]
#[allow(dead_code)] // `hook_body`: the ingest and backfill benches use it
mod load;

/// Events stored unless `--events N`.
const EVENTS: u64 = 2_000_000;
/// Events per delivery while building.
const PER_DELIVERY: u64 = 10;
/// Deliveries in flight while building (group commit gathers them).
const BUILDERS: u64 = 64;
/// Connections and duration of the ingest load.
const CONNS: usize = 32;
const LOAD: Duration = Duration::from_secs(5);
const SECRET: &str = "history-bench-secret-0123456789";

fn event(uuid: &str) -> String {
    format!(
        r#"{{"uuid":"{uuid}","published":"2026-12-01T10:00:00.000Z","eventType":"user.session.start","version":"0","severity":"INFO","displayMessage":"User login to Okta","actor":{{"id":"00u1a2b3c4","type":"User","alternateId":"someone@example.com","displayName":"Some One"}},"outcome":{{"result":"SUCCESS"}},"target":[]}}"#
    )
}

async fn build(data: &Path, events: u64) -> Duration {
    let store = Arc::new(Store::open(data, CommitMode::Group).expect("store"));
    let started = Instant::now();
    let deliveries = events.div_ceil(PER_DELIVERY);
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for b in 0..BUILDERS {
        let (store, done) = (store.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            for d in (b..deliveries).step_by(BUILDERS as usize) {
                let n = PER_DELIVERY.min(events - d * PER_DELIVERY);
                let evs: Vec<String> = (0..n).map(|i| event(&format!("h-{d}-{i}"))).collect();
                let body = format!(
                    r#"{{"eventId":"hd-{d}","data":{{"events":[{}]}}}}"#,
                    evs.join(",")
                );
                let body = Bytes::from(body);
                let parsed = engine::ingest::envelope::parse(HookKind::Okta, &body).expect("parse");
                store
                    .store_delivery(NewDelivery {
                        hook: "bench".into(),
                        received_ms: engine::util::now_ms(),
                        body,
                        parsed,
                    })
                    .await
                    .expect("stored");
                let total = done.fetch_add(n, Ordering::Relaxed) + n;
                if total % 1_000_000 < n {
                    eprintln!("  {total} events stored ({:.0?})", started.elapsed());
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("builder");
    }
    let last = done.load(Ordering::Relaxed);
    store
        .write(move |txn| set_dispatch_cursor(txn, last))
        .await
        .expect("dispatched");
    let took = started.elapsed();
    match Arc::try_unwrap(store) {
        Ok(store) => store.close(),
        Err(_) => panic!("store still shared"),
    }
    took
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Serve {
    child: Child,
    url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SIGTERM: a clean stop, so the next start reads a cleanly closed file.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

async fn start(dir: &Path, bin: &str) -> (Serve, Duration) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    std::fs::create_dir_all(dir.join("scripts")).expect("scripts dir");
    std::fs::write(
        dir.join("engine.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n\n[[hook]]\nid = \"bench\"\nsecret_env = \"HISTORY_BENCH_SECRET\"\n"
        ),
    )
    .expect("config");
    let started = Instant::now();
    let child = Command::new(bin)
        .args(["serve", "--config", "engine.toml"])
        .current_dir(dir)
        .env("HISTORY_BENCH_SECRET", SECRET)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("engine serve");
    let url = format!("http://127.0.0.1:{port}");
    let serve = Serve { child, url };
    loop {
        if let Ok(mut c) = Conn::open(&serve.url).await
            && let Ok(a) = c.send(Method::GET, "/healthz", &[], Bytes::new()).await
            && a.status == 200
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "not ready");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (serve, started.elapsed())
}

/// Deliveries/s, p99 ms and peak RSS MB of 1-event deliveries for [`LOAD`].
async fn load(serve: &Serve, prefix: &str) -> (f64, f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let pid = serve.child.id();
    let peak = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut peak: f64 = 0.0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss_mb(pid));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        }
    });
    let started = Instant::now();
    let prefix = prefix.to_string();
    let all = load::post_until(
        &serve.url,
        "/hooks/bench",
        SECRET,
        CONNS,
        started + LOAD,
        move |c, i| {
            let uuid = format!("{prefix}-{c}-{i}");
            Bytes::from(format!(
                r#"{{"eventId":"{uuid}","data":{{"events":[{}]}}}}"#,
                event(&uuid)
            ))
        },
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let peak = peak.await.expect("rss sampler");
    (all.len() as f64 / secs, load::pct(&all, 0.99), peak)
}

async fn measure(name: &str, dir: &Path, bin: &str) {
    let (serve, ready) = start(dir, bin).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss_mb(serve.child.id());
    let (rate, p99, peak) = load(&serve, name).await;
    println!(
        "{name:<20} start-to-ready {:>7.0} ms   idle RSS {idle:>6.1} MB   ingest {rate:>7.0} deliveries/s, p99 {p99:.2} ms, peak RSS {peak:.1} MB",
        ready.as_secs_f64() * 1000.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(EVENTS);
    // `--baseline NAME=PATH` (repeatable): other `engine` binaries (older builds) measured on
    // the same stores.
    let baselines: Vec<(String, String)> = args
        .windows(2)
        .filter(|w| w[0] == "--baseline")
        .filter_map(|w| {
            w[1].split_once('=')
                .map(|(n, p)| (n.to_string(), p.to_string()))
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let full = tempfile::tempdir().expect("tmp");
        println!(
            "history benchmark: {events} stored events vs an empty store (release engine serve)"
        );
        let took = build(&full.path().join("data"), events).await;
        let size = std::fs::metadata(full.path().join("data").join(engine::store::DB_FILE))
            .map(|m| m.len())
            .unwrap_or(0);
        println!(
            "built {events} events in {:.1} s ({:.0} events/s), store file {:.0} MB",
            took.as_secs_f64(),
            events as f64 / took.as_secs_f64(),
            size as f64 / 1e6
        );
        let this = env!("CARGO_BIN_EXE_engine");
        let empty = tempfile::tempdir().expect("tmp");
        measure("empty", empty.path(), this).await;
        for (name, bin) in &baselines {
            let empty = tempfile::tempdir().expect("tmp");
            measure(&format!("empty ({name})"), empty.path(), bin).await;
        }
        // On the same store, alternating: the disk's speed drifts.
        for _ in 0..if baselines.is_empty() { 1 } else { 2 } {
            for (name, bin) in &baselines {
                measure(&format!("history ({name})"), full.path(), bin).await;
            }
            measure("history", full.path(), this).await;
        }
    });
}
