//! Retention: old history is pruned; nothing undispatched or still needed by a pending run is.

use engine::store::runs::{self, RunRecord, RunStatus, RunsView};
use engine::store::{self, CommitMode, Store};
use engine::util::{format_ms, now_ms};

use crate::support::*;

const DAY_MS: u64 = 86_400_000;

#[tokio::test]
async fn prunes_old_history_but_keeps_what_is_still_needed() {
    let dir = temp_dir();
    let store = Store::open(dir.path(), CommitMode::Group).unwrap();
    let old = now_ms() - 40 * DAY_MS;
    let ids = |p: &str| vec![format!("{p}-a"), format!("{p}-b")];
    deliver(&store, envelope_with("d1", &ids("e1")), old).await; // events 1, 2
    deliver(&store, envelope_with("d2", &ids("e2")), old + 1).await; // events 3, 4
    deliver(&store, envelope_with("d3", &ids("e3")), old + 2).await; // events 5, 6: not dispatched
    deliver(&store, envelope_with("d4", &ids("e4")), now_ms()).await; // events 7, 8: recent
    store
        .write(|txn| store::set_dispatch_cursor(txn, 4))
        .await
        .unwrap();
    // An old finished run, and a pending (retrying) run that still needs event 3.
    let history = store.history();
    let e1 = history.event_by_seq(1).unwrap().unwrap();
    let e3 = history.event_by_seq(3).unwrap().unwrap();
    let mut done = RunRecord::new(0, &e1.head(), "s", None);
    done.status = RunStatus::Succeeded;
    done.finished = Some(format_ms(old));
    let retrying = RunRecord::new(0, &e3.head(), "s", None);
    let created = store
        .write(move |txn| runs::create(txn, vec![done, retrying]))
        .await
        .unwrap();
    finish(&store, created[0], RunStatus::Succeeded, old).await;

    let report = prune(&store).await;
    assert_eq!(report.runs, 1, "the old finished run");
    assert_eq!(
        report.store.events, 2,
        "events 1 and 2 only: event 3 is needed by a pending run"
    );
    assert_eq!(report.store.deliveries, 1);
    assert_eq!(event_seqs(&store), [3, 4, 5, 6, 7, 8]);
    // A pruned event's uuid can be accepted again; a kept one is still a duplicate.
    assert_eq!(
        deliver(
            &store,
            envelope_with("again-1", &["e1-a".to_string()]),
            now_ms()
        )
        .await
        .events,
        1
    );
    assert_eq!(
        deliver(
            &store,
            envelope_with("again-2", &["e2-a".to_string()]),
            now_ms()
        )
        .await
        .duplicate_events,
        1
    );
    assert!(
        deliver(&store, envelope_with("d2", &["zzz".to_string()]), now_ms())
            .await
            .duplicate_delivery
    );
    // Once the pending run is done, the rest of the old dispatched history goes.
    finish(&store, created[1], RunStatus::Failed, old).await;
    let report = prune(&store).await;
    assert_eq!(
        (report.store.events, report.store.deliveries, report.runs),
        (2, 1, 1)
    );
    assert_eq!(
        event_seqs(&store),
        [5, 6, 7, 8, 9],
        "undispatched old events stay"
    );
    tokio::task::spawn_blocking(move || store.close())
        .await
        .unwrap();
}

/// Marks run `id` finished with `status` at `at_ms`.
async fn finish(store: &Store, id: u64, status: RunStatus, at_ms: u64) {
    let mut r = RunsView(store).get(id).unwrap().unwrap();
    r.status = status;
    r.finished = Some(format_ms(at_ms));
    store
        .write(move |txn| runs::save(txn, &r, 0))
        .await
        .unwrap();
}

/// One pruning pass with the default 30 days.
async fn prune(store: &Store) -> engine::process::retention::PruneReport {
    engine::process::retention::prune_once(store, now_ms() - 30 * DAY_MS)
        .await
        .unwrap()
}

/// The seqs of the stored events, ascending.
fn event_seqs(store: &Store) -> Vec<u64> {
    let mut v: Vec<u64> = store
        .history()
        .recent_events(100)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    v.sort();
    v
}

/// Regression: a timer scheduled days ago runs on its scheduling run's event, so that event
/// outlives the retention window while the timer is pending (it used to be pruned, and the timer
/// dropped when it came due).
#[tokio::test]
async fn a_pending_timer_keeps_its_event() {
    use engine::script::{TimerOp, TimerSpec};
    let dir = temp_dir();
    let store = Store::open(dir.path(), CommitMode::Group).unwrap();
    let old = now_ms() - 40 * DAY_MS;
    deliver(&store, envelope_with("d1", &["t-1".to_string()]), old).await; // event 1
    deliver(&store, envelope_with("d2", &["t-2".to_string()]), old + 1).await; // event 2
    store
        .write(|txn| store::set_dispatch_cursor(txn, 2))
        .await
        .unwrap();
    let e2 = store.history().event_by_seq(2).unwrap().unwrap();
    let mut by = RunRecord::new(0, &e2.head(), "s", None);
    by.status = RunStatus::Succeeded;
    by.finished = Some(format_ms(old));
    let spec = TimerSpec {
        id: "timer-1".into(),
        key: Some("k".into()),
        call: "later".into(),
        args: serde_json::Value::Null,
        due_ms: now_ms() + DAY_MS,
    };
    store
        .write(move |txn| {
            let ids = runs::create(txn, vec![by.clone()])?;
            by.id = ids[0];
            store::timers::apply(txn, &by, &[TimerOp::Schedule(spec)])
        })
        .await
        .unwrap();
    let report = prune(&store).await;
    assert_eq!(
        report.store.events, 1,
        "event 1 only: event 2 waits for its timer"
    );
    assert_eq!(event_seqs(&store), [2]);
    // Once the timer is cancelled, its event goes with the rest.
    let by = RunRecord::new(0, &e2.head(), "s", None);
    store
        .write(move |txn| {
            store::timers::apply(
                txn,
                &by,
                &[TimerOp::Cancel {
                    key: "k".to_string(),
                }],
            )
        })
        .await
        .unwrap();
    assert_eq!(prune(&store).await.store.events, 1);
    assert!(event_seqs(&store).is_empty());
    tokio::task::spawn_blocking(move || store.close())
        .await
        .unwrap();
}

/// Issue 15: the overview's hourly counters, on a real store: events by the hour their delivery
/// was received (a duplicate delivery and duplicate events not counted), finished runs and
/// failures by the hour they finished (a retrying run not counted), across an hour boundary; each
/// hook's last delivery; and after a pruning pass, the hours before the cutoff are gone.
#[tokio::test]
async fn console_counters_count_per_hour_across_a_boundary_and_are_pruned() {
    use engine::store::ReadTxnSource;
    use engine::store::counts::{Counter, HOUR_MS, hourly, last_deliveries};
    let dir = temp_dir();
    let store = Store::open(dir.path(), CommitMode::Group).unwrap();
    let h0 = now_ms() / HOUR_MS - 3;
    let late = h0 * HOUR_MS + HOUR_MS - 1; // the last ms of hour h0
    let next = (h0 + 1) * HOUR_MS; // the first of h0 + 1
    let ids = |p: &str, n: usize| (0..n).map(|i| format!("{p}-{i}")).collect::<Vec<_>>();
    deliver(&store, envelope_with("c1", &ids("a", 3)), late).await;
    deliver(&store, envelope_with("c2", &ids("b", 2)), next).await;
    // A re-sent delivery, and one whose events are all known: nothing new to count.
    deliver(&store, envelope_with("c2", &ids("b", 2)), next + 5).await;
    deliver(&store, envelope_with("c3", &ids("a", 3)), next + 6).await;
    // One new event beside a known one.
    let s = deliver(
        &store,
        envelope_with("c4", &["a-0".to_string(), "c-0".to_string()]),
        next + 7,
    )
    .await;
    assert_eq!((s.events, s.duplicate_events), (1, 1));
    let heads: Vec<_> = (1..=3)
        .map(|seq| store.history().event_by_seq(seq).unwrap().unwrap().head())
        .collect();
    let records = heads
        .iter()
        .map(|h| RunRecord::new(0, h, "s", None))
        .collect();
    let created = store
        .write(move |txn| runs::create(txn, records))
        .await
        .unwrap();
    finish(&store, created[0], RunStatus::Succeeded, late).await;
    finish(&store, created[1], RunStatus::Failed, next + 10).await;
    finish(&store, created[2], RunStatus::Retrying, next + 11).await;
    let window = |c| hourly(&store.begin().unwrap(), c, h0 - 1, 3).unwrap();
    assert_eq!(window(Counter::Events), vec![0, 3, 3]);
    assert_eq!(window(Counter::Runs), vec![0, 1, 1]);
    assert_eq!(window(Counter::Failures), vec![0, 0, 1]);
    let last = last_deliveries(&store.begin().unwrap()).unwrap();
    assert_eq!(last.get("test"), Some(&(next + 7)));
    // Retention at the start of hour h0 + 1: hour h0 is wholly older, and goes.
    engine::process::retention::prune_once(&store, next)
        .await
        .unwrap();
    assert_eq!(window(Counter::Events), vec![0, 0, 3]);
    assert_eq!(window(Counter::Runs), vec![0, 0, 1]);
    assert_eq!(window(Counter::Failures), vec![0, 0, 1]);
    tokio::task::spawn_blocking(move || store.close())
        .await
        .unwrap();
}
