//! State (`state::*`) and timers (`schedule`, `cancel_schedule`) through the real server: runs
//! committed with their state, no lost update under concurrency and SIGKILL, timers that fire
//! once (also after downtime), keyed replacement, cancel, and failed runs that change nothing.

use std::time::Duration;

use crate::support::*;

const ENV: [(&str, &str); 1] = [("ENGINE_TEST_SECRET", SECRET)];

fn state_of(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let o = run_engine(dir, &["state", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "engine state: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn value(dir: &std::path::Path, key: &str) -> Option<serde_json::Value> {
    state_of(dir)
        .into_iter()
        .find(|r| r["key"] == key)
        .map(|r| r["value"].clone())
}

fn timers_of(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let o = run_engine(dir, &["timers", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "engine timers: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Posts `n` single-event deliveries from `threads` threads at once; the uuids acknowledged.
fn post_many(url: &str, n: usize, threads: usize) -> Vec<String> {
    let per = n / threads;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let url = url.to_string();
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                for _ in 0..per {
                    let (body, uuids) = envelope(1);
                    if post_blocking(&url, body) == 200 {
                        ok.extend(uuids);
                    }
                }
                ok
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

fn finished(runs: &[serde_json::Value]) -> bool {
    !runs
        .iter()
        .any(|r| r["status"] == "pending" || r["status"] == "retrying")
}

const COUNTER: &str = "//! on: *\nlet n = state::incr(\"count\");\nlog(`count ${n}`);\n";

#[test]
fn a_thousand_concurrent_incrs_add_a_thousand() {
    let (dir, port) = engine_setup("", &[("counter.rhai", COUNTER)]);
    let mut p = ServeProcess::start(dir.path(), port, &ENV);
    let acked = post_many(&format!("{}/hooks/test", p.url), 1000, 50);
    assert_eq!(acked.len(), 1000);
    let mut runs = Vec::new();
    let done = wait_until(Duration::from_secs(120), || {
        runs = history_json(dir.path(), "runs");
        runs.len() >= 1000 && finished(&runs)
    });
    assert!(done, "runs did not finish: {} runs", runs.len());
    assert!(runs.iter().all(|r| r["status"] == "succeeded"));
    assert_eq!(value(dir.path(), "count"), Some(serde_json::json!(1000)));
    // Every run saw a different count: none read a value another run had already written.
    let mut seen: Vec<String> = runs
        .iter()
        .map(|r| r["log"][0]["message"].as_str().unwrap().to_string())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 1000, "two runs logged the same count");
    p.signal(libc::SIGTERM);
    p.wait_output();
}

#[test]
fn sigkill_during_concurrent_incrs_counts_each_stored_event_once() {
    let (dir, port) = engine_setup("", &[("counter.rhai", COUNTER)]);
    let p = ServeProcess::start(dir.path(), port, &ENV);
    let url = format!("{}/hooks/test", p.url);
    let poster = std::thread::spawn(move || post_many(&url, 1000, 50));
    std::thread::sleep(Duration::from_millis(700));
    p.signal(libc::SIGKILL);
    let mut p = p;
    p.wait_output();
    let acked = poster.join().unwrap();
    let mut p = ServeProcess::start(dir.path(), port, &ENV);
    let rest = post_many(&format!("{}/hooks/test", p.url), 200, 10);
    let mut runs = Vec::new();
    let stored = || stored_events_via_cli(dir.path());
    let done = wait_until(Duration::from_secs(120), || {
        runs = history_json(dir.path(), "runs");
        finished(&runs) && runs.len() >= stored()
    });
    assert!(done, "runs did not finish");
    let events = stored();
    assert!(
        events >= acked.len() + rest.len(),
        "an acknowledged event was lost"
    );
    let succeeded = runs.iter().filter(|r| r["status"] == "succeeded").count();
    assert_eq!(succeeded, events, "each stored event has one succeeded run");
    assert_eq!(
        value(dir.path(), "count"),
        Some(serde_json::json!(events)),
        "each stored event counted exactly once"
    );
    p.signal(libc::SIGTERM);
    p.wait_output();
}

fn stored_events_via_cli(dir: &std::path::Path) -> usize {
    history_json(dir, "events").len()
}

#[test]
fn a_timer_fires_once_with_the_scheduling_event_in_scope() {
    let script = "//! on: *\nfn remind(args) {\n  log(`remind ${args.who} for ${event.uuid} via ${delivery.hook}`);\n  state::incr(\"fired\");\n}\nlet id = schedule(#{ \"in\": \"2s\", \"call\": \"remind\", args: #{ who: \"manager\" } });\nlog(`timer ${id}`);\n";
    let (dir, port) = engine_setup("", &[("remind.rhai", script)]);
    let mut p = ServeProcess::start(dir.path(), port, &ENV);
    let (body, uuids) = envelope(1);
    assert_eq!(post_blocking(&format!("{}/hooks/test", p.url), body), 200);
    assert!(wait_until(Duration::from_secs(10), || timers_of(
        dir.path()
    )
    .len()
        == 1));
    let t = &timers_of(dir.path())[0];
    assert_eq!(t["call"], "remind");
    assert_eq!(t["event_uuid"], uuids[0].as_str());
    let mut runs = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        runs = history_json(dir.path(), "runs");
        runs.iter()
            .any(|r| r["timer"].is_object() && r["status"] == "succeeded")
    }));
    std::thread::sleep(Duration::from_millis(1500));
    let runs = history_json(dir.path(), "runs");
    let timer_runs: Vec<_> = runs.iter().filter(|r| r["timer"].is_object()).collect();
    assert_eq!(timer_runs.len(), 1, "the timer fired once");
    let line = timer_runs[0]["log"][0]["message"].as_str().unwrap();
    assert_eq!(line, format!("remind manager for {} via test", uuids[0]));
    assert_eq!(value(dir.path(), "fired"), Some(serde_json::json!(1)));
    assert!(timers_of(dir.path()).is_empty());
    let scheduler = runs.iter().find(|r| r["timer"].is_null()).unwrap();
    assert_eq!(timer_runs[0]["timer"]["scheduled_by"], scheduler["id"]);
    p.signal(libc::SIGTERM);
    p.wait_output();
}

#[test]
fn a_timer_due_while_stopped_fires_once_after_restart() {
    let script = "//! on: *\nfn later(args) { state::incr(\"fired\"); }\nschedule(#{ after: \"3s\", run: \"later\" });\n";
    let (dir, port) = engine_setup("", &[("later.rhai", script)]);
    let mut p = ServeProcess::start(dir.path(), port, &ENV);
    let (body, _) = envelope(1);
    assert_eq!(post_blocking(&format!("{}/hooks/test", p.url), body), 200);
    assert!(wait_until(Duration::from_secs(10), || timers_of(
        dir.path()
    )
    .len()
        == 1));
    p.signal(libc::SIGTERM);
    p.wait_output();
    std::thread::sleep(Duration::from_secs(4));
    // Still pending while stopped.
    assert_eq!(timers_of(dir.path()).len(), 1);
    let mut p = ServeProcess::start(dir.path(), port, &ENV);
    assert!(wait_until(Duration::from_secs(10), || value(
        dir.path(),
        "fired"
    )
    .is_some()));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(value(dir.path(), "fired"), Some(serde_json::json!(1)));
    let runs = history_json(dir.path(), "runs");
    assert_eq!(runs.iter().filter(|r| r["timer"].is_object()).count(), 1);
    p.signal(libc::SIGTERM);
    p.wait_output();
}

#[test]
fn sigkill_around_a_timer_run_leaves_it_done_exactly_once() {
    // The timer's run sends one HTTP-free action-less update and sleeps, so a kill lands
    // inside it; after restarts it is done once (its state update is in its commit).
    let script = "//! on: *\nfn slow(args) { sleep(1); state::incr(\"fired\"); }\nschedule(#{ after: \"1s\", run: \"slow\" });\n";
    let (dir, port) = engine_setup("", &[("slow.rhai", script)]);
    let p = ServeProcess::start(dir.path(), port, &ENV);
    let (body, _) = envelope(1);
    assert_eq!(post_blocking(&format!("{}/hooks/test", p.url), body), 200);
    // Due at ~1 s, running ~1 s: killed in the middle of it.
    std::thread::sleep(Duration::from_millis(1600));
    p.signal(libc::SIGKILL);
    let mut p = p;
    p.wait_output();
    let mut p = ServeProcess::start(dir.path(), port, &ENV);
    assert!(wait_until(Duration::from_secs(15), || value(
        dir.path(),
        "fired"
    )
    .is_some()));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(value(dir.path(), "fired"), Some(serde_json::json!(1)));
    let runs = history_json(dir.path(), "runs");
    let timer_runs: Vec<_> = runs.iter().filter(|r| r["timer"].is_object()).collect();
    assert_eq!(timer_runs.len(), 1, "one run for the timer: {timer_runs:?}");
    assert_eq!(timer_runs[0]["status"], "succeeded");
    p.signal(libc::SIGTERM);
    p.wait_output();
}

#[test]
fn keyed_timers_replace_and_cancel() {
    let script = "//! on: *\nfn ping(n) { state::set(\"pinged\", n); }\nif event.eventType == \"user.lifecycle.create\" {\n  let n = state::incr(\"n\");\n  schedule(#{ after: \"2s\", run: \"ping\", args: n, key: \"k\" });\n} else {\n  log(`cancelled ${cancel_schedule(\"k\")}`);\n}\n";
    let (dir, port) = engine_setup("", &[("ping.rhai", script)]);
    let mut p = ServeProcess::start(dir.path(), port, &ENV);
    let url = format!("{}/hooks/test", p.url);
    for n in 1..=2 {
        let (body, _) = envelope(1);
        assert_eq!(post_blocking(&url, body), 200);
        assert!(wait_until(Duration::from_secs(10), || value(
            dir.path(),
            "n"
        ) == Some(
            serde_json::json!(n)
        )));
    }
    let timers = timers_of(dir.path());
    assert_eq!(timers.len(), 1, "the second replaced the first: {timers:?}");
    assert_eq!(timers[0]["args"], 2);
    assert!(wait_until(Duration::from_secs(10), || value(
        dir.path(),
        "pinged"
    )
    .is_some()));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(value(dir.path(), "pinged"), Some(serde_json::json!(2)));
    let runs = history_json(dir.path(), "runs");
    assert_eq!(runs.iter().filter(|r| r["timer"].is_object()).count(), 1);

    // Schedule again, then cancel it with an event of another type.
    let (body, _) = envelope(1);
    assert_eq!(post_blocking(&url, body), 200);
    assert!(wait_until(Duration::from_secs(10), || timers_of(
        dir.path()
    )
    .len()
        == 1));
    let other = event_variant(
        "event.user.lifecycle.deactivate.json",
        &engine::util::new_uuid(),
        None,
    );
    assert_eq!(post_blocking(&url, wrap(&other)), 200);
    let mut runs = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            runs = history_json(dir.path(), "runs");
            runs.iter()
                .any(|r| r["log"][0]["message"] == "cancelled true")
        }),
        "{runs:?}"
    );
    assert!(timers_of(dir.path()).is_empty());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        value(dir.path(), "pinged"),
        Some(serde_json::json!(2)),
        "the cancelled timer did not fire"
    );
    p.signal(libc::SIGTERM);
    p.wait_output();
}

#[test]
fn a_failed_run_changes_no_state_and_schedules_nothing() {
    let script = "//! on: *\nfn later(a) {}\nstate::set(\"x\", 1);\nschedule(#{ after: \"1h\", run: \"later\" });\nthrow \"boom\";\n";
    let (dir, port) = engine_setup("", &[("boom.rhai", script)]);
    let mut p = ServeProcess::start(dir.path(), port, &ENV);
    let (body, _) = envelope(1);
    assert_eq!(post_blocking(&format!("{}/hooks/test", p.url), body), 200);
    let mut runs = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        runs = history_json(dir.path(), "runs");
        runs.iter().any(|r| r["status"] == "failed")
    }));
    assert!(state_of(dir.path()).is_empty());
    assert!(timers_of(dir.path()).is_empty());
    p.signal(libc::SIGTERM);
    p.wait_output();
}

#[test]
fn a_key_with_a_ttl_is_gone_once_it_expires() {
    let script = "//! on: *\nlet before = state::get(\"seen\");\nlog(`before ${before}`);\nstate::set(\"seen\", #{ at: event.published }, \"2s\");\nlog(`now ${state::get(\"seen\").at}`);\n";
    let (dir, port) = engine_setup("", &[("ttl.rhai", script)]);
    let mut p = ServeProcess::start(dir.path(), port, &ENV);
    let url = format!("{}/hooks/test", p.url);
    let (body, _) = envelope(1);
    assert_eq!(post_blocking(&url, body), 200);
    assert!(wait_until(Duration::from_secs(10), || value(
        dir.path(),
        "seen"
    )
    .is_some()));
    let runs = history_json(dir.path(), "runs");
    assert_eq!(runs[0]["log"][0]["message"], "before ");
    assert_eq!(
        runs[0]["log"][1]["message"], "now 2024-05-01T10:00:00.000Z",
        "a run reads its own write"
    );
    assert!(
        wait_until(Duration::from_secs(5), || value(dir.path(), "seen")
            .is_none()),
        "expired key still listed"
    );
    // A run after the expiry does not see it either.
    let (body, _) = envelope(1);
    assert_eq!(post_blocking(&url, body), 200);
    let mut runs = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        runs = history_json(dir.path(), "runs");
        runs.len() == 2 && finished(&runs)
    }));
    assert_eq!(runs[0]["log"][0]["message"], "before ");
    p.signal(libc::SIGTERM);
    p.wait_output();
}

#[test]
fn engine_state_delete_removes_a_key() {
    let (dir, port) = engine_setup("", &[("counter.rhai", COUNTER)]);
    let mut p = ServeProcess::start(dir.path(), port, &ENV);
    let (body, _) = envelope(1);
    assert_eq!(post_blocking(&format!("{}/hooks/test", p.url), body), 200);
    assert!(wait_until(Duration::from_secs(10), || value(
        dir.path(),
        "count"
    )
    .is_some()));
    let o = run_engine(dir.path(), &["state", "delete", "counter", "count"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(value(dir.path(), "count").is_none());
    let o = run_engine(dir.path(), &["state", "delete", "counter", "count"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("has no key `count`"), "{}", stderr(&o));
    p.signal(libc::SIGTERM);
    p.wait_output();
}

#[test]
fn the_repeated_lockout_example_alerts_once_for_three_and_not_for_the_fourth() {
    let script = example_script("repeated-lockout.rhai.example");
    let (dir, port) = engine_setup("", &[("repeated-lockout.rhai", &script)]);
    let mut p = ServeProcess::start(dir.path(), port, &ENV);
    let url = format!("{}/hooks/test", p.url);
    let lockout = |_: usize| {
        wrap(&event_variant(
            "event.user.lifecycle.deactivate.json",
            &engine::util::new_uuid(),
            Some("user.account.lock"),
        ))
    };
    // Two, then (once they are counted) two more at once: the third alerts, the fourth not.
    for i in 0..2 {
        assert_eq!(post_blocking(&url, lockout(i)), 200);
    }
    assert!(wait_until(Duration::from_secs(10), || {
        let runs = history_json(dir.path(), "runs");
        runs.len() == 2 && finished(&runs)
    }));
    assert!(
        history_json(dir.path(), "outbox").is_empty(),
        "no alert for two lockouts"
    );
    let both: Vec<_> = (2..4)
        .map(|i| {
            let (url, body) = (url.clone(), lockout(i));
            std::thread::spawn(move || post_blocking(&url, body))
        })
        .collect();
    for b in both {
        assert_eq!(b.join().unwrap(), 200);
    }
    let mut runs = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        runs = history_json(dir.path(), "runs");
        runs.len() == 4 && finished(&runs)
    }));
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:?}");
    let outbox = history_json(dir.path(), "outbox");
    assert_eq!(outbox.len(), 1, "one alert: {outbox:?}");
    let mail = outbox[0].to_string();
    assert!(
        mail.contains("Okta: John Doe locked out 3 times within an hour"),
        "{mail}"
    );
    let state = state_of(dir.path());
    let count = state
        .iter()
        .find(|r| r["key"].as_str().unwrap().starts_with("lockouts:"))
        .unwrap();
    assert_eq!(count["value"], 4);
    assert!(count["expires"].is_string(), "the window has an end");
    assert!(
        state
            .iter()
            .any(|r| r["key"].as_str().unwrap().starts_with("alerted:"))
    );
    p.signal(libc::SIGTERM);
    p.wait_output();
}

/// `engine run` of a script on the deactivate fixture: its stdout and exit code.
fn dry_run(script: &str) -> (String, Option<i32>) {
    let (dir, port) = engine_setup("", &[("t.rhai", script)]);
    let _ = port;
    let payload = dir.path().join("event.json");
    std::fs::write(&payload, fixture("event.user.lifecycle.deactivate.json")).unwrap();
    let o = run_engine(
        dir.path(),
        &["run", "scripts/t.rhai", payload.to_str().unwrap()],
    );
    (format!("{}{}", stdout(&o), stderr(&o)), o.status.code())
}

#[test]
fn time_format_follows_a_zone_across_dst_changes() {
    let script = r#"//! on: *
for t in ["2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"] { log(time::format(t, "%Y-%m-%d %H:%M %Z", "Europe/Berlin")); }
for t in ["2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"] { log(time::format(t, "%H:%M %Z", "America/New_York")); }
log(time::format("2026-12-05T09:00:00+01:00", "%d.%m.%Y %H:%M"));
log(time::parse("2026-12-05T09:00:00+01:00"));
log(time::add("2026-12-05T09:00:00Z", "3d"));
log(time::add("2026-12-05T09:00:00Z", "-90m"));
log(`${time::since(now())}`);
log(html_escape("<b>Tom & 'Jerry'</b>"));
"#;
    let (out, code) = dry_run(script);
    assert_eq!(code, Some(0), "{out}");
    for want in [
        "log: 2026-03-29 01:30 CET",
        "log: 2026-03-29 03:30 CEST",
        "log: 01:30 EDT",
        "log: 01:30 EST",
        "log: 05.12.2026 08:00",
        "log: 2026-12-05T08:00:00.000Z",
        "log: 2026-12-08T09:00:00.000Z",
        "log: 2026-12-05T07:30:00.000Z",
        "log: 0\n",
        "log: &lt;b&gt;Tom &amp; &#39;Jerry&#39;&lt;/b&gt;",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn bad_times_zones_and_durations_say_what_is_wrong() {
    for (script, says) in [
        (
            "time::format(\"2026-01-01T00:00:00Z\", \"%H\", \"Europe/Berln\");",
            "did you mean \"Europe/Berlin\"",
        ),
        ("time::parse(\"yesterday\");", "is not an RFC 3339 time"),
        (
            "time::add(\"2026-01-01T00:00:00Z\", \"3 days\");",
            "unknown unit",
        ),
        ("state::set(\"k\", 1, \"soon\");", "ttl: bad duration"),
        (
            "fn later(a) {}\nschedule(#{ after: \"1h\", run: \"latr\" });",
            "did you mean `later`",
        ),
        ("schedule(#{ run: \"x\" });", "no function `x`"),
        ("fn x() {}\nschedule(#{ run: \"x\" });", "when? give `after"),
        (
            "let a = []; a.pad(9000, \"abcdefgh\"); state::set(\"big\", a);",
            "more than 65536",
        ),
    ] {
        let (out, code) = dry_run(&format!("//! on: *\n{script}\n"));
        assert_eq!(code, Some(1), "{script}: {out}");
        assert!(out.contains(says), "{script}: wanted {says:?} in:\n{out}");
    }
}

/// Expired keys are pruned through the expiry index: exactly the expired rows go; a key whose
/// TTL was replaced (longer, or none) or that was deleted leaves no stale entry behind that
/// would delete it later.
#[tokio::test]
async fn pruning_removes_exactly_the_expired_keys() {
    use engine::script::StateWrite;
    use engine::store::{CommitMode, Store, kv};
    let dir = temp_dir();
    let store = Store::open(dir.path(), CommitMode::Group).unwrap();
    let set = |key: &str, expires_ms: Option<u64>| StateWrite::Set {
        key: key.to_string(),
        value: serde_json::json!(key),
        expires_ms,
    };
    let writes = vec![
        set("gone", Some(1_000)),
        set("later", Some(5_000)),
        set("forever", None),
        set("extended", Some(1_000)),
        set("cleared", Some(1_000)),
        set("deleted", Some(1_000)),
    ];
    store
        .write(move |txn| kv::apply(txn, "s", &writes))
        .await
        .unwrap();
    let again = vec![
        set("extended", Some(9_000)),
        set("cleared", None),
        StateWrite::Delete {
            key: "deleted".to_string(),
        },
    ];
    store
        .write(move |txn| kv::apply(txn, "s", &again))
        .await
        .unwrap();
    let pruned = store
        .write(|txn| kv::prune_expired(txn, 2_000))
        .await
        .unwrap();
    assert_eq!(pruned, 1, "only `gone` had expired at 2 s");
    let keys = |now: u64| -> Vec<String> {
        let mut k: Vec<String> = kv::list(&store, Some("s"), now)
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(0), ["cleared", "extended", "forever", "later"]);
    let pruned = store
        .write(|txn| kv::prune_expired(txn, 10_000))
        .await
        .unwrap();
    assert_eq!(pruned, 2, "`later` and `extended`, nothing else");
    assert_eq!(keys(0), ["cleared", "forever"]);
    tokio::task::spawn_blocking(move || store.close())
        .await
        .unwrap();
}
