//! What state and timers cost: the script path of one `state::incr` per event (the read through
//! the store and the bookkeeping, against the same script without it), the commit of runs that
//! each increment one key (with the check that what they read is unchanged), and timers fired
//! into runs per second.
//!
//! Run: `cargo bench --bench state` (release).

use std::sync::Arc;
use std::time::Instant;

use engine::script::{
    DeliveryInfo, Host, HostError, Limits, ScriptSet, Senders, StateValue, TimerOp, TimerSpec,
    User, run,
};
use engine::store::runs::RunRecord;
use engine::store::{CommitMode, EventHead, Store, kv, timers};

/// Timed runs per case (after `WARMUP`).
const ITERATIONS: usize = 5_000;
const WARMUP: usize = 500;
/// Timers fired in the firing case.
const TIMERS: usize = 20_000;

/// The runs' host for state: reads the real store, as `engine serve`'s does.
struct StoreState(Arc<Store>);

impl Host for StoreState {
    fn lookup_user(
        &self,
        _: &str,
        _: Option<std::time::Instant>,
    ) -> Result<Option<User>, HostError> {
        Ok(None)
    }
    fn state_get(&self, script: &str, key: &str) -> Result<Option<StateValue>, HostError> {
        kv::get(&*self.0, script, key).map_err(|e| HostError::transient(e.to_string()))
    }
}

fn median_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(Store::open(dir.path(), CommitMode::Group).expect("store"));
    let sdir = tempfile::tempdir().expect("scripts dir");
    std::fs::write(
        sdir.path().join("plain.rhai"),
        "//! on: *\nlet n = 1;\nlog(`count ${n}`);\n",
    )
    .unwrap();
    std::fs::write(
        sdir.path().join("counter.rhai"),
        "//! on: *\nlet n = state::incr(\"count\");\nlog(`count ${n}`);\n",
    )
    .unwrap();
    let stdlib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("stdlib");
    let limits = Limits::default();
    let (set, errors) = ScriptSet::load(sdir.path(), &stdlib, &limits);
    assert!(errors.is_empty(), "{errors:?}");
    let host: Arc<dyn Host> = Arc::new(StoreState(store.clone()));
    // A stored value to read, as after the first event.
    let first = run(
        set.get("counter").unwrap(),
        br#"{"uuid":"u0","eventType":"user.account.lock"}"#,
        "u0",
        &DeliveryInfo::default(),
        &host,
        &limits,
        &Senders::default(),
    );
    let writes = first.effects.writes.clone();
    rt.block_on(store.write(move |txn| kv::apply(txn, "counter", &writes)))
        .expect("first write");

    let payload =
        br#"{"uuid":"u1","eventType":"user.account.lock","published":"2026-12-03T10:00:00.000Z"}"#;
    let mut medians = Vec::new();
    for name in ["plain", "counter"] {
        let script = set.get(name).unwrap();
        let mut times = Vec::with_capacity(ITERATIONS);
        for i in 0..WARMUP + ITERATIONS {
            let t = Instant::now();
            let out = run(
                script,
                payload,
                "u1",
                &DeliveryInfo::default(),
                &host,
                &limits,
                &Senders::default(),
            );
            let us = t.elapsed().as_secs_f64() * 1e6;
            assert!(out.result.is_ok(), "{:?}", out.result);
            if i >= WARMUP {
                times.push(us);
            }
        }
        let (m, p) = median_p99(times);
        println!("script path {name:8}: median {m:7.1} µs/event, p99 {p:7.1} µs");
        medians.push(m);
    }
    println!(
        "one state::incr per event costs {:.1} µs on the script path (read through the store, JSON, bookkeeping)",
        medians[1] - medians[0]
    );

    // Commits: each run's write checked and applied, one job per run, as the executor queues them.
    let runs = 2_000;
    let t = Instant::now();
    rt.block_on(async {
        let mut pending = Vec::new();
        for _ in 0..runs {
            pending.push(store.queue_write(move |txn| {
                kv::apply(
                    txn,
                    "counter",
                    &[engine::script::StateWrite::Set {
                        key: "k".into(),
                        value: serde_json::json!(1),
                        expires_ms: None,
                    }],
                )
            }));
        }
        for p in pending {
            p.await.expect("commit");
        }
    });
    println!(
        "{runs} state writes committed through the writer: {:.0} /s (group commit)",
        runs as f64 / t.elapsed().as_secs_f64()
    );

    // Timers: TIMERS due now, fired into runs in batches.
    let head = EventHead {
        seq: 1,
        uuid: "u1".into(),
        event_type: "user.account.lock".into(),
        hook: "default".into(),
    };
    let mut record = RunRecord::new(1, &head, "counter", None);
    record.id = 1;
    let ops: Vec<TimerOp> = (0..TIMERS)
        .map(|i| {
            TimerOp::Schedule(TimerSpec {
                id: format!("t{i}"),
                key: None,
                call: "later".into(),
                args: serde_json::Value::Null,
                due_ms: 1,
            })
        })
        .collect();
    rt.block_on(store.write(move |txn| timers::apply(txn, &record, &ops).map(|_| ())))
        .expect("timers");
    let clock = engine::process::TimerClock::new(
        store.clone(),
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let t = Instant::now();
    let (fired, _) = rt.block_on(clock.fire_due()).expect("fire");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(fired, TIMERS);
    println!(
        "timers fired into runs: {fired} in {secs:.2} s = {:.0} timers/s",
        fired as f64 / secs
    );
}
