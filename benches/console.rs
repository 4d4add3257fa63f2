//! Console page render time on a store of 100,000 events (issue "A web console", issue 15): the
//! events list (first page, a filtered page, an older page), one event (the newest, one from the
//! middle), the overview, the scripts, state, timers and tokens pages, each rendered many times
//! through `Console::page` (the reads and the template, no HTTP); median and p99. Besides the
//! events, the store holds `RUNS` finished runs (every tenth failed), `STATE_KEYS` state keys
//! and `TIMERS` pending timers; one event by uuid is also timed through the scan it replaced.
//!
//! Run: `cargo bench --bench console` (`-- --events N` for another size).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::config::{HookKind, Secret};
use engine::console::{Console, ConsoleSettings};
use engine::ingest::{Admin, AdminError, ReplayRequest};
use engine::script::{StateWrite, TimerOp, TimerSpec};
use engine::store::runs::{self, RunRecord, RunStatus};
use engine::store::{CommitMode, NewDelivery, Store, set_dispatch_cursor};

/// Events stored unless `--events N`.
const EVENTS: u64 = 100_000;
/// Events per delivery while building.
const PER_DELIVERY: u64 = 10;
/// Renders of each page.
const RENDERS: usize = 200;
/// Finished runs stored (on the first events), every tenth failed.
const RUNS: u64 = 20_000;
/// State keys of one script.
const STATE_KEYS: u64 = 10_000;
/// Pending timers.
const TIMERS: u64 = 1_000;

const SCRIPT: &str = "//! on: user.lifecycle.create\n//! hook: bench\nlet who = event.actor.displayName;\nstate::set(`seen:${who}`, #{ n: 1 });\nlog(`hello ${who}`);\n";

struct NoReplays;

impl Admin for NoReplays {
    fn replay(
        &self,
        _: ReplayRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u64>, AdminError>> + Send + '_>> {
        Box::pin(async { Err(AdminError::Unavailable("bench".into())) })
    }
}

fn event(uuid: &str, n: u64) -> String {
    let ty = if n.is_multiple_of(10) {
        "user.lifecycle.create"
    } else {
        "user.session.start"
    };
    format!(
        r#"{{"uuid":"{uuid}","published":"2026-12-01T10:00:00.000Z","eventType":"{ty}","version":"0","severity":"INFO","displayMessage":"User login to Okta","actor":{{"id":"00u{n}","type":"User","alternateId":"user{n}@example.com","displayName":"User {n}"}},"outcome":{{"result":"SUCCESS"}},"target":[]}}"#
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(EVENTS);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(Store::open(dir.path(), CommitMode::Group).expect("store"));
    let started = Instant::now();
    let mut pending = Vec::new();
    for d in 0..events.div_ceil(PER_DELIVERY) {
        let evs: Vec<String> = (0..PER_DELIVERY)
            .map(|i| d * PER_DELIVERY + i)
            .filter(|n| *n < events)
            .map(|n| event(&format!("c-{n}"), n))
            .collect();
        let body = Bytes::from(format!(
            r#"{{"eventId":"cd-{d}","data":{{"events":[{}]}}}}"#,
            evs.join(",")
        ));
        let parsed = engine::ingest::envelope::parse(HookKind::Okta, &body).expect("parse");
        let store = store.clone();
        pending.push(tokio::spawn(async move {
            store
                .store_delivery(NewDelivery {
                    hook: "bench".into(),
                    received_ms: engine::util::now_ms(),
                    body,
                    parsed,
                })
                .await
                .expect("stored");
        }));
        if pending.len() >= 64 {
            for p in pending.drain(..) {
                p.await.expect("builder");
            }
        }
    }
    for p in pending {
        p.await.expect("builder");
    }
    store
        .write(|txn| set_dispatch_cursor(txn, u64::MAX))
        .await
        .expect("dispatched");
    println!("built {events} events in {:.1?}", started.elapsed());
    let started = Instant::now();
    let history = store.history();
    let heads: Vec<_> = (1..=RUNS.min(events))
        .map(|seq| {
            history
                .event_by_seq(seq)
                .expect("read")
                .expect("event")
                .head()
        })
        .collect();
    drop(history);
    for chunk in heads.chunks(1000) {
        let records: Vec<RunRecord> = chunk
            .iter()
            .map(|h| RunRecord::new(0, h, "bench.rhai", None))
            .collect();
        store
            .write(move |txn| {
                let ids = runs::create(txn, records.clone())?;
                for (mut r, id) in records.into_iter().zip(ids) {
                    r.id = id;
                    r.status = if id.is_multiple_of(10) {
                        RunStatus::Failed
                    } else {
                        RunStatus::Succeeded
                    };
                    r.finished = Some(engine::util::format_ms(engine::util::now_ms()));
                    runs::save(txn, &r, 0)?;
                }
                Ok(())
            })
            .await
            .expect("runs");
    }
    let writes: Vec<StateWrite> = (0..STATE_KEYS)
        .map(|i| StateWrite::Set {
            key: format!("seen:user{i}@example.com"),
            value: serde_json::json!({ "n": i, "who": format!("User {i}") }),
            expires_ms: None,
        })
        .collect();
    store
        .write(move |txn| engine::store::kv::apply(txn, "bench.rhai", &writes))
        .await
        .expect("state");
    if let Some(run) = heads
        .first()
        .map(|h| RunRecord::new(1, h, "bench.rhai", None))
    {
        let due = engine::util::now_ms() + 86_400_000;
        let ops: Vec<TimerOp> = (0..TIMERS)
            .map(|i| {
                TimerOp::Schedule(TimerSpec {
                    id: format!("bench-timer-{i}"),
                    key: Some(format!("remind:{i}")),
                    call: "remind".into(),
                    args: serde_json::json!({ "i": i }),
                    due_ms: due + i * 1000,
                })
            })
            .collect();
        store
            .write(move |txn| engine::store::timers::apply(txn, &run, &ops).map(|_| ()))
            .await
            .expect("timers");
    }
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).expect("scripts dir");
    std::fs::write(scripts.join("bench.rhai"), SCRIPT).expect("script");
    println!(
        "stored {} runs, {STATE_KEYS} state keys, {TIMERS} timers in {:.1?}",
        heads.len(),
        started.elapsed()
    );

    let (console, _) = Console::new(
        store.clone(),
        Secret::new("bench-admin-token".into()),
        Arc::new(NoReplays),
        ConsoleSettings {
            hooks: vec![("bench".into(), "http://127.0.0.1:8080/hooks/bench".into())],
            scripts_dir: dir.path().join("scripts"),
            stdlib_dir: dir.path().join("stdlib"),
            backfill: false,
        },
    );
    let middle = format!("c-{}", events / 2);
    let pages = [
        ("events list", "/events".to_string()),
        (
            "events, type filter",
            "/events?type=user.lifecycle.create".to_string(),
        ),
        (
            "events, older page",
            format!("/events?before={}", events / 2),
        ),
        ("one event (newest)", format!("/events/c-{}", events - 1)),
        ("one event (middle)", format!("/events/{middle}")),
        ("one event (oldest)", "/events/c-0".to_string()),
        ("overview", "/".to_string()),
        ("scripts", "/scripts".to_string()),
        ("state", "/state".to_string()),
        (
            "state, a later page",
            "/state?after_script=bench.rhai&after_key=seen%3Auser5000%40example.com".to_string(),
        ),
        ("timers", "/timers".to_string()),
        ("tokens", "/tokens".to_string()),
    ];
    println!(
        "{:<22} {:>10} {:>10} {:>8}",
        "page", "median", "p99", "bytes"
    );
    for (name, path) in pages {
        let mut times = Vec::with_capacity(RENDERS);
        let mut bytes = 0;
        for _ in 0..RENDERS {
            let t = Instant::now();
            let a = console.page(&path).await;
            times.push(t.elapsed());
            assert_eq!(a.status(), 200, "{path}");
            bytes = http_body_util::BodyExt::collect(a.into_body())
                .await
                .map(|b| b.to_bytes().len())
                .unwrap_or(0);
        }
        times.sort();
        println!(
            "{name:<22} {:>10.2?} {:>10.2?} {bytes:>8}",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    // The lookup the event page replaced, alone: the scan of the events from the newest.
    let history = store.history();
    let mut times = Vec::with_capacity(RENDERS);
    for _ in 0..RENDERS {
        let t = Instant::now();
        let seq = history.scanned_event_seq(&middle).expect("scan");
        times.push(t.elapsed());
        assert!(seq.is_some());
    }
    times.sort();
    println!(
        "{:<22} {:>10.2?} {:>10.2?}",
        "scan for (middle)",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
}
