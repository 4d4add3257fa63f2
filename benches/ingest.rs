//! Ingest benchmark: durable deliveries/s, events/s and answer latency (p50/p99) of the real
//! server on loopback, for 1 and 32 connections, 1- and 10-event deliveries, with group commit
//! against one commit per request. Every request has a fresh eventId and fresh uuids.
//!
//! Run: `cargo bench --bench ingest` (optional: `-- --seconds 5 --only group|per-request
//! --conns 1|32 --events 1|10`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::store::{CommitMode, Store};

#[path = "support/load.rs"]
mod load;

const SECRET: &str = "bench-secret";
const EVENT: &str = include_str!("../tests/fixtures/event.user.lifecycle.deactivate.json");

struct Result {
    writer: engine::store::WriterCounts,
    deliveries: u64,
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

fn run_case(mode: CommitMode, conns: usize, events: usize, seconds: f64) -> Result {
    let dir = tempfile::Builder::new()
        .prefix("engine-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (addr, stop_tx, done, stats) = server_rt.block_on(async {
        let store = Store::open(dir.path(), mode).unwrap();
        let stats = store.writer_stats();
        let load::Receiver {
            addr,
            stop: stop_tx,
            done,
            ..
        } = load::start_receiver(store, SECRET).await;
        (addr, stop_tx, done, stats)
    });
    let template = Arc::new(EVENT.to_string());
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = load_rt.block_on(async move {
        let base = format!("http://{addr}");
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let all = load::post_until(
            &base,
            "/hooks/bench",
            SECRET,
            conns,
            deadline,
            move |c, i| load::hook_body(&template, c, i, events),
        )
        .await;
        Result {
            writer: stats.read(),
            deliveries: all.len() as u64,
            latencies_us: all,
            elapsed: start.elapsed(),
        }
    });
    let _ = stop_tx.send(());
    server_rt.block_on(done).unwrap();
    result
}

fn main() {
    let mut seconds = 3.0;
    let args: Vec<String> = std::env::args().collect();
    // `--only group|per-request` limits the run (for profiling one mode).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    // `--conns N` / `--events N` run one shape only.
    let pick = |flag: &str| -> Option<usize> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|s| s.parse().ok())
    };
    let (only_conns, only_events) = (pick("--conns"), pick("--events"));
    if let Some(i) = args.iter().position(|a| a == "--seconds") {
        seconds = args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(seconds);
    }
    println!(
        "ingest benchmark: real server on loopback, redb durable commits, {seconds} s per case"
    );
    println!(
        "{:<12} {:>5} {:>6} {:>14} {:>12} {:>9} {:>9} {:>10} {:>11} {:>9}",
        "commit",
        "conns",
        "events",
        "deliveries/s",
        "events/s",
        "p50 ms",
        "p99 ms",
        "jobs/batch",
        "busy ms",
        "commit ms"
    );
    for mode in [CommitMode::Group, CommitMode::PerRequest] {
        let name = match mode {
            CommitMode::Group => "group",
            CommitMode::PerRequest => "per-request",
        };
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        for conns in [1, 32] {
            for events in [1, 10] {
                if only_conns.is_some_and(|c| c != conns)
                    || only_events.is_some_and(|e| e != events)
                {
                    continue;
                }
                let mut r = run_case(mode, conns, events, seconds);
                r.latencies_us.sort_unstable();
                let secs = r.elapsed.as_secs_f64();
                let dps = r.deliveries as f64 / secs;
                let w = r.writer;
                let per_batch = |us: u64| us as f64 / w.batches.max(1) as f64 / 1000.0;
                println!(
                    "{:<12} {:>5} {:>6} {:>14.0} {:>12.0} {:>9.2} {:>9.2} {:>10.1} {:>11.2} {:>9.2}",
                    match mode {
                        CommitMode::Group => "group",
                        CommitMode::PerRequest => "per-request",
                    },
                    conns,
                    events,
                    dps,
                    dps * events as f64,
                    load::pct(&r.latencies_us, 0.50),
                    load::pct(&r.latencies_us, 0.99),
                    w.jobs as f64 / w.batches.max(1) as f64,
                    per_batch(w.busy_us),
                    per_batch(w.commit_us),
                );
            }
        }
    }
}
