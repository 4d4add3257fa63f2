//! Hook deliveries' answer latency (p50/p99) while the System Log backfill stores pages, against
//! the same load without it: the real server on loopback (group commit), 1 and 32 connections
//! sending 1-event deliveries, and beside them a catch-up at full speed — back-to-back
//! `Store::store_backfill` pages of 100 fresh events with their cursor, what a pass writes after
//! each System Log page (the Okta requests themselves run on the async workers and wait on the
//! network; the shared resource is the writer), and the same paced at one page per 50 ms.
//!
//! Run: `cargo bench --bench backfill` (optional: `-- --seconds 5`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::config::HookKind;
use engine::store::{CommitMode, Store};

#[path = "support/load.rs"]
mod load;

const SECRET: &str = "bench-secret";
const EVENT: &str = include_str!("../tests/fixtures/event.user.lifecycle.deactivate.json");

struct Result {
    deliveries: u64,
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

/// A page of `n` fresh events as the backfill stores it (source `system-log`).
fn page(event_template: &str, page_no: u64, n: usize) -> engine::store::NewDelivery {
    let evs: Vec<String> = (0..n)
        .map(|e| {
            event_template.replacen(
                "ab62c0bc-2837-11eb-9823-9fb8f750c5a9",
                &format!("bf-{page_no}-{e}-{}", std::process::id()),
                1,
            )
        })
        .collect();
    let body = Bytes::from(format!(
        r#"{{"eventType":"com.okta.event_hook","source":"system-log","eventId":"system-log-{page_no}-{}","eventTime":"2024-05-01T10:00:00.000Z","data":{{"events":[{}]}}}}"#,
        std::process::id(),
        evs.join(",")
    ));
    let parsed = engine::ingest::envelope::parse(HookKind::Okta, &body).unwrap();
    engine::store::NewDelivery {
        hook: "bench".into(),
        received_ms: engine::util::now_ms(),
        body,
        parsed,
    }
}

fn run_case(
    mode: CommitMode,
    conns: usize,
    events: usize,
    seconds: f64,
    backfill: Option<u64>,
) -> (Result, u64) {
    let dir = tempfile::Builder::new()
        .prefix("engine-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (addr, stop_tx, done, filler, pages) = server_rt.block_on(async {
        let store = Store::open(dir.path(), mode).unwrap();
        let load::Receiver {
            addr,
            stop: stop_tx,
            done,
            store,
        } = load::start_receiver(store, SECRET).await;
        let pages = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let filler = backfill.map(|pace_ms| {
            let pages = pages.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                loop {
                    let d = page(EVENT, n, 100);
                    n += 1;
                    if store.store_backfill(Some(d), Some(n)).await.is_err() {
                        return;
                    }
                    pages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if pace_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(pace_ms)).await;
                    }
                }
            })
        });
        (addr, stop_tx, done, filler, pages)
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
            deliveries: all.len() as u64,
            latencies_us: all,
            elapsed: start.elapsed(),
        }
    });
    let pages = pages.load(std::sync::atomic::Ordering::Relaxed);
    if let Some(f) = filler {
        f.abort();
    }
    let _ = stop_tx.send(());
    server_rt.block_on(done).unwrap();
    (result, pages)
}

fn main() {
    let mut seconds = 3.0;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--seconds") {
        seconds = args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(seconds);
    }
    println!(
        "backfill benchmark: hook answers with and without a full-speed backfill, {seconds} s per case"
    );
    println!(
        "{:<10} {:>5} {:>14} {:>9} {:>9} {:>16}",
        "backfill", "conns", "deliveries/s", "p50 ms", "p99 ms", "backfilled ev/s"
    );
    for conns in [1, 32] {
        // Off; a page every 50 ms (2,000 events/s, more than Okta's System Log gives one client);
        // back to back (the writer's limit).
        for backfill in [None, Some(50), Some(0)] {
            let (mut r, pages) = run_case(CommitMode::Group, conns, 1, seconds, backfill);
            r.latencies_us.sort_unstable();
            let secs = r.elapsed.as_secs_f64();
            println!(
                "{:<10} {:>5} {:>14.0} {:>9.2} {:>9.2} {:>16.0}",
                match backfill {
                    None => "off",
                    Some(0) => "flat-out",
                    Some(_) => "50ms/page",
                },
                conns,
                r.deliveries as f64 / secs,
                load::pct(&r.latencies_us, 0.50),
                load::pct(&r.latencies_us, 0.99),
                pages as f64 * 100.0 / secs,
            );
        }
    }
}
