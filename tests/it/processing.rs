//! Scripts on events through the real binary: runs, hostile scripts, crash recovery, the outbox
//! over real SMTP (the in-process test server), replay and dry runs.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::mail::SmtpServer;
use crate::support::*;

const DIRECTORY: &str = "id,login,email,firstName,lastName,displayName,managerId,title,department
00u3m90rxKjGQ0G6L1d6,john.doe@example.com,john.doe@example.com,John,Doe,John Doe,00umgr1,Engineer,R&D
00umgr1,jane.boss@example.com,jane.boss@example.com,Jane,Boss,Jane Boss,,Director,R&D
";

fn smtp_config(port: u16) -> String {
    format!(
        "\n[smtp]\nurl_env = \"ENGINE_TEST_SMTP_URL\"\nfrom = \"automation@example.com\"\nretry_base_ms = 100\n\n[directory]\nfile = \"directory.csv\"\n# smtp port {port}\n"
    )
}

fn final_runs(dir: &std::path::Path, want: usize) -> Vec<serde_json::Value> {
    let mut runs = Vec::new();
    let done = wait_until(Duration::from_secs(60), || {
        runs = history_json(dir, "runs");
        runs.len() >= want
            && runs.iter().all(|r| {
                r["status"] == "succeeded" || r["status"] == "failed" || r["status"] == "skipped"
            })
    });
    assert!(done, "runs did not finish: {runs:#?}");
    runs
}

fn by_script(runs: &[serde_json::Value]) -> HashMap<String, serde_json::Value> {
    runs.iter()
        .map(|r| (r["script"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

#[test]
fn events_run_scripts_and_mail_goes_out_over_smtp_with_no_secret_shown() {
    let smtp = SmtpServer::start(&["--auth", "bot:pa55w0rd-smtp"]);
    let (dir, port) = engine_setup(
        &smtp_config(smtp.port),
        &[
            (
                "new-hire-manager.rhai",
                &example_script("new-hire-manager.rhai"),
            ),
            (
                "offboarding-checklist.rhai",
                &example_script("offboarding-checklist.rhai"),
            ),
        ],
    );
    std::fs::write(dir.path().join("directory.csv"), DIRECTORY).unwrap();
    let smtp_url = format!("smtp://bot:pa55w0rd-smtp@127.0.0.1:{}?tls=none", smtp.port);
    let env = [
        ("ENGINE_TEST_SECRET", SECRET),
        ("ENGINE_TEST_SMTP_URL", smtp_url.as_str()),
    ];
    let mut p = ServeProcess::start(dir.path(), port, &env);
    let hook = format!("{}/hooks/test", p.url);
    let create = event_variant(
        "event.user.lifecycle.deactivate.json",
        "evt-create-1",
        Some("user.lifecycle.create"),
    );
    let deactivate = event_variant("event.user.lifecycle.deactivate.json", "evt-deact-1", None);
    assert_eq!(post_blocking(&hook, wrap(&create)), 200);
    assert_eq!(post_blocking(&hook, wrap(&deactivate)), 200);

    assert!(
        wait_until(Duration::from_secs(20), || smtp.received().len() >= 2),
        "two mails arrive"
    );
    let runs = final_runs(dir.path(), 2);
    let runs = by_script(&runs);
    let hire = &runs["new-hire-manager"];
    assert_eq!(hire["status"], "succeeded");
    assert_eq!(hire["event_uuid"], "evt-create-1");
    assert_eq!(
        hire["script_hash"].as_str().unwrap().len(),
        64,
        "the run records its script hash"
    );
    let outbox = history_json(dir.path(), "outbox");
    assert_eq!(outbox.len(), 2);
    assert!(outbox.iter().all(|m| m["status"] == "sent"), "{outbox:#?}");
    // The same mails in the action queue, as done email actions.
    let o = run_engine(
        dir.path(),
        &["actions", "--kind", "email", "--format", "json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let actions: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(actions.len(), 2, "{actions:#?}");
    assert!(
        actions
            .iter()
            .all(|a| a["kind"] == "email" && a["status"] == "done"),
        "{actions:#?}"
    );
    let ids = |rows: &[serde_json::Value]| {
        let mut v: Vec<String> = rows.iter().map(|r| r["id"].to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&actions), ids(&outbox));
    let o = run_engine(dir.path(), &["actions", "--kind", "http"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stdout(&o).contains(actions[0]["id"].as_str().unwrap()));
    let hire_mail_id = hire["actions"][0]["id"].as_str().unwrap().to_string();

    let received = smtp.received();
    let mail = received
        .iter()
        .find(|m| m["message_id"] == format!("<{hire_mail_id}@engine>"))
        .expect("the new-hire mail, with its stable Message-ID");
    let mut rcpt: Vec<&str> = mail["rcpt_tos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    rcpt.sort();
    assert_eq!(rcpt, ["it-team@example.com", "jane.boss@example.com"]);
    assert_eq!(mail["subject"], "New account: John Doe");
    assert!(
        mail["text"]
            .as_str()
            .unwrap()
            .contains("john.doe@example.com")
    );
    assert!(
        received
            .iter()
            .any(|m| m["subject"].as_str().unwrap().starts_with("Offboarding"))
    );

    // Nothing shows the SMTP password or the hook secret.
    let o = run_engine(dir.path(), &["outbox"]);
    assert!(!stdout(&o).contains("pa55w0rd") && !stderr(&o).contains("pa55w0rd"));
    p.signal(libc::SIGTERM);
    let out = p.wait_output();
    assert!(out.0.success());
    for text in [&out.1, &out.2] {
        assert!(
            !text.contains("pa55w0rd") && !text.contains(SECRET),
            "a secret leaked: {text}"
        );
    }
}

const GOOD: &str = "//! on: user.lifecycle.*\nlog(`good ran on ${event.uuid}`);\nsend_email(#{ to: \"ops@example.com\", subject: \"hello\", body: \"a body\" });\n";
const LOOPS: &str = "//! on: user.lifecycle.*\nlet n = 0;\nloop { n += 1; }\n";
const TYPO: &str = "//! on: user.*\nlet who = event.actr.alternateId;\nlog(who);\n";
const RECURSES: &str = "//! on: user.lifecycle.deactivate\nfn f(n) { f(n + 1) }\nf(0);\n";

#[test]
fn hostile_scripts_fail_alone_and_replay_reruns_them() {
    let (dir, port) = engine_setup(
        "\n[limits]\nmax_operations = 200000\n",
        &[
            ("good.rhai", GOOD),
            ("loops.rhai", LOOPS),
            ("typo.rhai", TYPO),
            ("recurses.rhai", RECURSES),
        ],
    );
    let env = [("ENGINE_TEST_SECRET", SECRET)];
    let p = ServeProcess::start(dir.path(), port, &env);
    let hook = format!("{}/hooks/test", p.url);
    let ev = event_variant(
        "event.user.lifecycle.deactivate.json",
        "evt-hostile-1",
        None,
    );
    assert_eq!(post_blocking(&hook, wrap(&ev)), 200);
    let runs = by_script(&final_runs(dir.path(), 4));
    assert_eq!(runs["good"]["status"], "succeeded");
    assert_eq!(
        runs["good"]["log"][0]["message"],
        "good ran on evt-hostile-1"
    );
    assert_eq!(runs["loops"]["status"], "failed");
    assert_eq!(runs["loops"]["error"]["kind"], "limit");
    assert_eq!(runs["typo"]["status"], "failed");
    assert_eq!(runs["typo"]["error"]["kind"], "script");
    assert_eq!(runs["typo"]["error"]["line"], 2);
    assert!(
        runs["typo"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("actr")
    );
    assert_eq!(runs["recurses"]["status"], "failed");
    for failed in ["loops", "typo", "recurses"] {
        assert!(
            runs[failed]["actions"].as_array().unwrap().is_empty(),
            "a failed run commits no action"
        );
        assert_eq!(runs[failed]["attempts"], 1, "script errors are not retried");
    }
    // The good script's mail went out as an .eml file (no [smtp]).
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_dir(dir.path().join("data/outbox-mail"))
            .map(|d| d.count() == 1)
            .unwrap_or(false)
    }));
    // Metrics count runs by script and status, and mail.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let metrics = rt
        .block_on(engine::util::http_client::request(
            hyper::Method::GET,
            &format!("{}/metrics", p.url),
            &[],
            bytes::Bytes::new(),
        ))
        .unwrap()
        .text();
    for line in [
        "engine_runs_total{script=\"good\",status=\"succeeded\"} 1",
        "engine_runs_total{script=\"loops\",status=\"failed\"} 1",
        "engine_run_duration_seconds_count 4",
        "engine_runs_pending 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
    assert!(metrics.contains("engine_outbox_depth"));
    assert!(
        metrics.contains("engine_actions_pending{kind=\"http\"}"),
        "{metrics}"
    );
    // `engine runs --failed` lists the three.
    let o = run_engine(dir.path(), &["runs", "--failed", "--format", "json"]);
    let failed: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(failed.len(), 3);

    // Replay while the server runs (through its admin endpoint): the good run again, its mail
    // not sent twice.
    let o = run_engine(dir.path(), &["replay", "evt-hostile-1"]);
    let out = stdout(&o);
    assert!(
        out.contains("already sent earlier, not sent again"),
        "{out}"
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "replay reports the runs that failed again"
    );
    drop(p);

    // Fix the typo, then replay the failed runs with no server running.
    std::fs::write(
        dir.path().join("scripts/typo.rhai"),
        TYPO.replace("actr", "actor"),
    )
    .unwrap();
    let o = run_engine(dir.path(), &["replay", "--failed"]);
    let out = stdout(&o);
    assert!(
        out.contains("(typo on event evt-hostile-1): succeeded, replays run"),
        "{out}"
    );
    assert!(
        out.contains("(loops on event evt-hostile-1): failed"),
        "{out}"
    );
    let runs = history_json(dir.path(), "runs");
    let typo_runs: Vec<&serde_json::Value> =
        runs.iter().filter(|r| r["script"] == "typo").collect();
    assert_eq!(
        typo_runs.len(),
        3,
        "original, online replay, offline replay"
    );
    assert_eq!(typo_runs[0]["status"], "succeeded");
    assert!(typo_runs[0]["replay_of"].is_u64());
    assert_ne!(
        typo_runs[0]["script_hash"], typo_runs[2]["script_hash"],
        "the replay ran the current version"
    );
    let o = run_engine(dir.path(), &["replay", "no-such-uuid"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no stored event has uuid `no-such-uuid`"));
}

const COUNTS: &str = "//! on: user.lifecycle.create\nlet n = 0;\nfor i in 0..30000 { n += i; }\nlog(`counted ${n} for ${event.uuid}`);\n";

#[test]
fn sigkill_during_processing_completes_every_run_exactly_once() {
    let (dir, port) = engine_setup("", &[("a.rhai", COUNTS), ("b.rhai", COUNTS)]);
    let env = [("ENGINE_TEST_SECRET", SECRET)];
    let p = ServeProcess::start(dir.path(), port, &env);
    let hook = format!("{}/hooks/test", p.url);
    let mut accepted = Vec::new();
    for batch in 0..40 {
        let uuids: Vec<String> = (0..5).map(|i| format!("kill-{batch}-{i}")).collect();
        let events: Vec<String> = uuids
            .iter()
            .map(|u| {
                event_variant(
                    "event.user.lifecycle.deactivate.json",
                    u,
                    Some("user.lifecycle.create"),
                )
            })
            .collect();
        let body = format!(
            r#"{{"eventId":"d-{batch}","data":{{"events":[{}]}}}}"#,
            events.join(",")
        );
        assert_eq!(post_blocking(&hook, body), 200);
        accepted.extend(uuids);
    }
    // Some runs are done, some in flight, most not started: kill once the first is recorded
    // (a fixed sleep let a faster processor finish them all first).
    assert!(
        wait_until(Duration::from_secs(20), || !history_json(
            dir.path(),
            "runs"
        )
        .is_empty()),
        "no run recorded"
    );
    p.signal(libc::SIGKILL);
    drop(p);
    let before = history_json(dir.path(), "runs");
    let _p = ServeProcess::start(dir.path(), port, &env);
    let runs = final_runs(dir.path(), 2 * accepted.len());
    assert!(
        before.len() < runs.len() || before.iter().any(|r| r["status"] != "succeeded"),
        "the kill interrupted processing"
    );
    let mut seen = HashSet::new();
    for r in &runs {
        assert_eq!(r["status"], "succeeded", "{r:#?}");
        let key = (
            r["event_uuid"].as_str().unwrap().to_string(),
            r["script"].as_str().unwrap().to_string(),
        );
        assert!(seen.insert(key.clone()), "completed twice: {key:?}");
    }
    for u in &accepted {
        for s in ["a", "b"] {
            assert!(
                seen.contains(&(u.clone(), s.to_string())),
                "missing run of {s} on {u}"
            );
        }
    }
    assert_eq!(runs.len(), 2 * accepted.len());
}

#[test]
fn mail_waits_for_a_down_smtp_server_and_is_sent_once_across_a_kill() {
    let smtp_port = free_port();
    let (dir, port) = engine_setup(
        &smtp_config(smtp_port),
        &[(
            "new-hire-manager.rhai",
            &example_script("new-hire-manager.rhai"),
        )],
    );
    std::fs::write(dir.path().join("directory.csv"), DIRECTORY).unwrap();
    let smtp_url = format!("smtp://127.0.0.1:{smtp_port}?tls=none");
    let env = [
        ("ENGINE_TEST_SECRET", SECRET),
        ("ENGINE_TEST_SMTP_URL", smtp_url.as_str()),
    ];
    let p = ServeProcess::start(dir.path(), port, &env);
    let hook = format!("{}/hooks/test", p.url);
    let create = event_variant(
        "event.user.lifecycle.deactivate.json",
        "evt-down-1",
        Some("user.lifecycle.create"),
    );
    assert_eq!(post_blocking(&hook, wrap(&create)), 200);
    // The run succeeds; the mail waits, retried.
    let mut outbox = Vec::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            outbox = history_json(dir.path(), "outbox");
            outbox.len() == 1 && outbox[0]["attempts"].as_u64().unwrap_or(0) >= 2
        }),
        "{outbox:#?}"
    );
    assert_eq!(outbox[0]["status"], "queued");
    assert!(
        outbox[0]["last_error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("connect"),
        "{outbox:#?}"
    );
    // Killed between the run and the send.
    p.signal(libc::SIGKILL);
    drop(p);
    let smtp = SmtpServer::start_on(smtp_port, &[]);
    let p = ServeProcess::start(dir.path(), port, &env);
    assert!(wait_until(Duration::from_secs(20), || smtp
        .received()
        .len()
        == 1));
    // Replaying after success sends nothing new.
    let o = run_engine(dir.path(), &["replay", "evt-down-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("already sent earlier"));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(smtp.received().len(), 1, "exactly one mail");
    let outbox = history_json(dir.path(), "outbox");
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0]["status"], "sent");
    drop(p);
}

#[test]
fn a_permanent_smtp_error_fails_the_mail_without_retry() {
    let smtp = SmtpServer::start(&["--reject-5xx"]);
    let (dir, port) = engine_setup(&smtp_config(smtp.port), &[("good.rhai", GOOD)]);
    std::fs::write(dir.path().join("directory.csv"), DIRECTORY).unwrap();
    let smtp_url = format!("smtp://127.0.0.1:{}?tls=none", smtp.port);
    let env = [
        ("ENGINE_TEST_SECRET", SECRET),
        ("ENGINE_TEST_SMTP_URL", smtp_url.as_str()),
    ];
    let p = ServeProcess::start(dir.path(), port, &env);
    let hook = format!("{}/hooks/test", p.url);
    let ev = event_variant("event.user.lifecycle.deactivate.json", "evt-5xx", None);
    assert_eq!(post_blocking(&hook, wrap(&ev)), 200);
    let mut outbox = Vec::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            outbox = history_json(dir.path(), "outbox");
            outbox.first().is_some_and(|m| m["status"] == "failed")
        }),
        "{outbox:#?}"
    );
    assert!(
        outbox[0]["last_error"].as_str().unwrap().contains("550"),
        "{outbox:#?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let o = run_engine(dir.path(), &["outbox", "--failed", "--format", "json"]);
    let failed: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["attempts"], 1, "not retried");
    drop(p);
}

#[test]
fn dry_run_prints_log_and_mail_and_sends_nothing() {
    let dir = temp_dir();
    let script = format!("{REPO}/scripts/offboarding-checklist.rhai");
    let payload = format!("{FIXTURES}/event.user.lifecycle.deactivate.json");
    std::fs::create_dir_all(dir.path().join("stdlib")).unwrap();
    std::fs::copy(
        format!("{REPO}/stdlib/okta.rhai"),
        dir.path().join("stdlib/okta.rhai"),
    )
    .unwrap();
    let o = run_engine(dir.path(), &["run", &script, &payload]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(
        out.contains("would send mail") && out.contains("to: it-team@example.com"),
        "{out}"
    );
    assert!(out.contains("nothing sent (dry run)"));
    assert!(
        !dir.path().join("data").exists(),
        "a dry run stores nothing"
    );
    // JSON, and a failing script.
    std::fs::write(dir.path().join("typo.rhai"), TYPO).unwrap();
    let o = run_engine(
        dir.path(),
        &["run", "typo.rhai", &payload, "--format", "json"],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["error"]["line"], 2);
    let o = run_engine(dir.path(), &["run", "typo.rhai", "missing.json"]);
    assert_eq!(o.status.code(), Some(2));
}

const LOOKS_UP: &str = "//! on: user.account.lock\nlet u = lookup_user(\"flaky@example.com\");\nlog(`found ${u.email} (${u.id})`);\nlet none = lookup_user(\"nobody@example.com\");\nlog(`nobody: ${none}`);\n";

#[test]
fn lookup_user_against_the_okta_api_retries_transient_errors() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let okta = rt.block_on(crate::lookup::FakeOkta::start());
    let dir = temp_dir();
    let port = free_port();
    let extra = format!(
        "\n[okta]\norg_url = \"{}\"\ntoken_env = \"ENGINE_TEST_OKTA_TOKEN\"\n",
        okta.url
    );
    engine_dir(dir.path(), port, &extra, &[("looks-up.rhai", LOOKS_UP)]);
    let env = [
        ("ENGINE_TEST_SECRET", SECRET),
        ("ENGINE_TEST_OKTA_TOKEN", crate::lookup::TOKEN),
    ];
    let mut p = ServeProcess::start(dir.path(), port, &env);
    let hook = format!("{}/hooks/test", p.url);
    let ev = event_variant(
        "event.user.lifecycle.deactivate.json",
        "evt-lock-1",
        Some("user.account.lock"),
    );
    assert_eq!(post_blocking(&hook, wrap(&ev)), 200);
    let runs = final_runs(dir.path(), 1);
    let run = &runs[0];
    assert_eq!(run["status"], "succeeded", "{run:#?}");
    assert_eq!(
        run["attempts"], 2,
        "the 500 failed the first attempt, transiently"
    );
    let log: Vec<&str> = run["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(log, ["found flaky@example.com (00u3flaky)", "nobody: "]);
    assert_eq!(okta.hits("/api/v1/users/flaky%40example.com"), 2);
    p.signal(libc::SIGTERM);
    let out = p.wait_output();
    assert!(
        !out.1.contains(crate::lookup::TOKEN) && !out.2.contains(crate::lookup::TOKEN),
        "token leaked"
    );
}

#[test]
fn samples_are_captured_bounded_and_added_by_hand() {
    let (dir, port) = engine_setup(
        "\n[[hook]]\nid = \"quiet\"\nsecret_env = \"ENGINE_TEST_SECRET\"\ncapture = false\n",
        &[(
            "uuid.rhai",
            "//! on: user.lifecycle.deactivate\nlog(event.uuid);\n",
        )],
    );
    let env = [("ENGINE_TEST_SECRET", SECRET)];
    let p = ServeProcess::start(dir.path(), port, &env);
    for i in 0..7 {
        let ev = event_variant(
            "event.user.lifecycle.deactivate.json",
            &format!("cap-{i}"),
            None,
        );
        assert_eq!(
            post_blocking(&format!("{}/hooks/test", p.url), wrap(&ev)),
            200
        );
    }
    let ev = event_variant("event.group.user_membership.add.json", "quiet-1", None);
    assert_eq!(
        post_blocking(&format!("{}/hooks/quiet", p.url), wrap(&ev)),
        200
    );
    let mut samples: Vec<serde_json::Value> = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let o = run_engine(dir.path(), &["samples", "list", "--format", "json"]);
            samples = serde_json::from_slice(&o.stdout).unwrap_or_default();
            samples.first().is_some_and(|s| s["uuid"] == "cap-6")
        }),
        "{samples:#?}"
    );
    let uuids: Vec<&str> = samples
        .iter()
        .map(|s| s["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(
        uuids,
        ["cap-6", "cap-5", "cap-4", "cap-3", "cap-2"],
        "the newest five, and nothing from a hook with capture = false"
    );
    // Add Okta's Preview payload by hand (works while the server runs).
    let o = run_engine(
        dir.path(),
        &[
            "samples",
            "add",
            &format!("{FIXTURES}/envelope.user.session.start.json"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run_engine(dir.path(), &["samples", "show", "user.session.start"]);
    assert_eq!(o.status.code(), Some(0));
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(shown[0]["uuid"], "f1d0b993-cc19-11ed-a688-db22c99ef6c4");
    let o = run_engine(dir.path(), &["samples", "show", "user.nothing"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("samples exist for: user.lifecycle.deactivate, user.session.start"),
        "{}",
        stderr(&o)
    );

    // An event both captured and added by hand is one sample for `check`: dry-run once, named
    // by its uuid and both sources.
    let again = dir.path().join("cap-6.json");
    let ev = event_variant("event.user.lifecycle.deactivate.json", "cap-6", None);
    std::fs::write(&again, ev).unwrap();
    let o = run_engine(dir.path(), &["samples", "add", again.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run_engine(dir.path(), &["check", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs = report["dry_runs"].as_array().unwrap();
    let ids: Vec<&str> = runs
        .iter()
        .map(|r| r["sample_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5, "{runs:#?}");
    assert_eq!(ids.iter().filter(|i| **i == "cap-6").count(), 1, "{ids:?}");
    let six = runs.iter().find(|r| r["sample_id"] == "cap-6").unwrap();
    let source = six["sample"].as_str().unwrap();
    assert!(
        source.starts_with("captured on hook test; ") && source.ends_with(".json"),
        "{source}"
    );

    // `samples rm`: a captured one (through the running server) and an added one (a file).
    for uuid in ["cap-6", "f1d0b993-cc19-11ed-a688-db22c99ef6c4"] {
        let o = run_engine(dir.path(), &["samples", "rm", uuid]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let o = run_engine(dir.path(), &["samples", "list", "--format", "json"]);
    let left: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let left: Vec<&str> = left.iter().map(|s| s["uuid"].as_str().unwrap()).collect();
    assert_eq!(left, ["cap-5", "cap-4", "cap-3", "cap-2"]);
    let o = run_engine(dir.path(), &["samples", "rm", "cap-6"]);
    assert_eq!(o.status.code(), Some(1), "nothing left to remove");
    drop(p);
}

/// An engine directory on the default config, its config and its store opened in this process
/// (for tests that drive the processing runtime themselves).
fn engine_store() -> (
    tempfile::TempDir,
    engine::config::Config,
    std::sync::Arc<engine::store::Store>,
) {
    use engine::store::{CommitMode, Store};
    let dir = temp_dir();
    engine_dir(dir.path(), free_port(), "", &[]);
    let config = engine::config::Config::load(&dir.path().join("engine.toml")).unwrap();
    let store = std::sync::Arc::new(Store::open(&config.data_dir, CommitMode::Group).unwrap());
    (dir, config, store)
}

/// While deliveries come, the dispatcher turns events into runs in small transactions (a large
/// one keeps the writer from the next delivery); once they stop, in full ones again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_takes_small_batches_while_deliveries_come() {
    use engine::process::{DISPATCH_BATCH, DISPATCH_WHILE_DELIVERING};
    use engine::store::DELIVERING_WINDOW;

    let (_dir, config, store) = engine_store();
    let runtime = engine::app::build_runtime(&config, store.clone(), &mut Vec::new()).unwrap();
    assert!(!store.deliveries_coming(), "no delivery yet");
    let n = DISPATCH_WHILE_DELIVERING + 40;
    let uuids: Vec<String> = (0..n).map(|i| format!("evt-small-{i}")).collect();
    let stored = deliver(
        &store,
        envelope_with("d-small", &uuids),
        engine::util::now_ms(),
    )
    .await;
    assert_eq!(stored.events, n);
    assert!(store.deliveries_coming(), "a delivery was just stored");
    assert!(runtime.processor.dispatch_once().await.unwrap());
    let cursor = || store.history().dispatch_cursor().unwrap();
    assert_eq!(
        cursor(),
        DISPATCH_WHILE_DELIVERING as u64,
        "a small batch first"
    );
    tokio::time::sleep(DELIVERING_WINDOW * 2).await;
    assert!(!store.deliveries_coming(), "the deliveries stopped");
    assert!(n - DISPATCH_WHILE_DELIVERING < DISPATCH_BATCH);
    assert!(runtime.processor.dispatch_once().await.unwrap());
    assert_eq!(cursor(), n as u64, "the rest in one full batch");
    assert!(
        !runtime.processor.dispatch_once().await.unwrap(),
        "none left"
    );
}

/// A run queued for a script that is then deleted is skipped (a deleted script stops): it is
/// finished, says why, and is neither failed nor picked up by `replay --failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_queued_for_a_deleted_script_are_skipped() {
    use engine::store::runs::{self, RunRecord, RunStatus, RunsView};

    let (_dir, config, store) = engine_store();
    deliver(
        &store,
        envelope_with("d-gone", &["evt-gone-1".to_string()]),
        engine::util::now_ms(),
    )
    .await;
    let event = store.history().event_by_seq(1).unwrap().unwrap();
    // Queued while `gone.rhai` existed; dispatched, so no other runs are made for the event.
    let ids = store
        .write(move |txn| {
            engine::store::set_dispatch_cursor(txn, 1)?;
            runs::create(txn, vec![RunRecord::new(0, &event.head(), "gone", None)])
        })
        .await
        .unwrap();
    let runtime = engine::app::build_runtime(&config, store.clone(), &mut Vec::new()).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let processing = tokio::spawn(runtime.processor.clone().run(stop_rx));
    let mut record = None;
    let finished = wait_until(Duration::from_secs(20), || {
        record = RunsView(&*store).get(ids[0]).unwrap();
        record.as_ref().is_some_and(|r| r.status.is_finished())
    });
    let _ = stop_tx.send(true);
    let _ = processing.await;
    assert!(finished, "{record:?}");
    let record = record.unwrap();
    assert_eq!(record.status, RunStatus::Skipped);
    let why = record.error.map(|e| e.message).unwrap_or_default();
    assert!(why.contains("no longer loaded"), "{why}");
    assert!(RunsView(&*store).latest_failed().unwrap().is_empty());
    assert_eq!(RunsView(&*store).pending_count().unwrap(), 0);
}

/// `replay --script NAME` reruns one script only, and `--dry-run` shows what it would do and
/// carries out nothing (testing one script used to re-send mail from the others).
#[test]
fn replay_of_one_script_and_its_dry_run_send_nothing_new() {
    let smtp = SmtpServer::start(&[]);
    let mailer = |name: &str| {
        format!(
            "//! on: user.lifecycle.deactivate\nlog(\"{name} ran\");\nsend_email(#{{ to: \"it@example.com\", subject: `{name} ${{event.uuid}}`, body: \"b\" }});\n"
        )
    };
    let (a, b) = (mailer("a"), mailer("b"));
    let (dir, port) = engine_setup(
        "\n[smtp]\nurl_env = \"ENGINE_TEST_SMTP_URL\"\nfrom = \"automation@example.com\"\n",
        &[("a.rhai", &a), ("b.rhai", &b)],
    );
    let url = smtp.url("");
    let env = [
        ("ENGINE_TEST_SECRET", SECRET),
        ("ENGINE_TEST_SMTP_URL", url.expose()),
    ];
    let p = ServeProcess::start(dir.path(), port, &env);
    let body = envelope_with("d-one", &[]).replace(
        r#""events":[]"#,
        &format!(
            r#""events":[{}]"#,
            event_variant("event.user.lifecycle.deactivate.json", "evt-one", None)
        ),
    );
    assert_eq!(post_blocking(&format!("{}/hooks/test", p.url), body), 200);
    assert!(wait_until(Duration::from_secs(20), || smtp
        .received()
        .len()
        == 2));
    let runs_before = final_runs(dir.path(), 2).len();

    let o = run_engine(
        dir.path(),
        &["replay", "evt-one", "--script", "a", "--dry-run"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("log: a ran") && out.contains("would send mail"),
        "{out}"
    );
    assert!(!out.contains("b ran"), "only script a: {out}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(smtp.received().len(), 2, "a dry run sends nothing");
    assert_eq!(
        history_json(dir.path(), "runs").len(),
        runs_before,
        "and records no run"
    );

    let o = run_engine(dir.path(), &["replay", "evt-one", "--script", "a"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("(a on event evt-one): succeeded"), "{out}");
    assert!(!out.contains("(b on event"), "{out}");
    let runs = history_json(dir.path(), "runs");
    assert_eq!(runs.len(), runs_before + 1, "one new run, of a");
    assert_eq!(runs[0]["script"], "a");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(smtp.received().len(), 2, "a's mail is not sent twice");

    // Edit a's mail (new subject and body), then replay: the action id is (event, script,
    // `email#0`), not the content, so the mail already sent is not sent again.
    let edited = a
        .replace("a ran", "a edited ran")
        .replace("body: \"b\"", "body: \"edited\"");
    assert_ne!(edited, a);
    std::fs::write(dir.path().join("scripts/a.rhai"), &edited).unwrap();
    let mut out = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let o = run_engine(dir.path(), &["replay", "evt-one", "--script", "a"]);
            out = stdout(&o);
            history_json(dir.path(), "runs")[0]["log"]
                .to_string()
                .contains("a edited ran")
        }),
        "the edited script runs: {out}"
    );
    assert!(
        out.contains("already sent earlier, not sent again"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        smtp.received().len(),
        2,
        "the edited mail is the same action: not sent again"
    );

    let o = run_engine(dir.path(), &["replay", "evt-one", "--script", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no script `nosuch`"), "{}", stderr(&o));
    drop(p);
}

/// Regression: a new script that did not compile missed its events without a trace (no run, the
/// event `processed`). Each event it would have received gets a failed run (kind `load`), which
/// `replay --failed` runs once the script is fixed.
#[test]
fn a_new_script_that_does_not_load_fails_a_run_per_event_replayed_once_fixed() {
    let broken = "//! on: user.lifecycle.deactivate\nlog(\"fixed\"\n";
    let (dir, port) = engine_setup("", &[("new.rhai", broken)]);
    let p = ServeProcess::start(dir.path(), port, &[("ENGINE_TEST_SECRET", SECRET)]);
    for uuid in ["evt-load-1", "evt-load-2"] {
        let event = event_variant("event.user.lifecycle.deactivate.json", uuid, None);
        let body = format!(r#"{{"eventId":"d-{uuid}","data":{{"events":[{event}]}}}}"#);
        assert_eq!(post_blocking(&format!("{}/hooks/test", p.url), body), 200);
    }
    let runs = final_runs(dir.path(), 2);
    for r in &runs {
        assert_eq!(r["script"], "new");
        assert_eq!(r["status"], "failed", "{r:#?}");
        assert_eq!(r["error"]["kind"], "load", "{r:#?}");
        let m = r["error"]["message"].as_str().unwrap();
        assert!(m.contains("does not load"), "{m}");
    }
    std::fs::write(
        dir.path().join("scripts/new.rhai"),
        broken.replace("\"\n", "\");\n"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let o = run_engine(dir.path(), &["replay", "--failed"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    assert_eq!(out.matches("succeeded, replays run").count(), 2, "{out}");
    drop(p);
}

/// Milliseconds since the epoch of a run record's RFC 3339 field.
fn field_ms(run: &serde_json::Value, key: &str) -> Option<u64> {
    run[key]
        .as_str()
        .and_then(engine::util::parse_rfc3339_nanos)
        .map(|n| (n / 1_000_000) as u64)
}

/// One envelope with `n` events of type `user.account.lock`, uuids `{prefix}-{i}`.
fn lock_events(prefix: &str, n: usize) -> String {
    let events: Vec<String> = (0..n)
        .map(|i| {
            event_variant(
                "event.user.lifecycle.deactivate.json",
                &format!("{prefix}-{i}"),
                Some("user.account.lock"),
            )
        })
        .collect();
    format!(
        r#"{{"eventId":"d-{prefix}","data":{{"events":[{}]}}}}"#,
        events.join(",")
    )
}

fn runs_of<'a>(runs: &'a [serde_json::Value], script: &str) -> Vec<&'a serde_json::Value> {
    runs.iter().filter(|r| r["script"] == script).collect()
}

/// Waits until `n` runs of `script` succeeded in `dir`'s engine, and returns how long after
/// `delivered` (ms since the epoch) the last of them finished: the helper of the tests that
/// quick runs do not wait behind runs that wait.
pub fn last_quick_run_ms(dir: &std::path::Path, script: &str, n: usize, delivered: u64) -> u64 {
    let mut runs = Vec::new();
    assert!(
        wait_until(Duration::from_secs(40), || {
            runs = history_json(dir, "runs");
            runs_of(&runs, script)
                .iter()
                .filter(|r| r["status"] == "succeeded")
                .count()
                == n
        }),
        "{runs:#?}"
    );
    runs_of(&runs, script)
        .iter()
        .map(|r| field_ms(r, "finished").unwrap().saturating_sub(delivered))
        .max()
        .unwrap()
}

/// The engine's config for the Okta stand-in at `url`, plus `extra`.
fn okta_config(url: &str, extra: &str) -> String {
    format!("\n[okta]\norg_url = \"{url}\"\ntoken_env = \"ENGINE_TEST_OKTA_TOKEN\"\n{extra}")
}

/// An engine serving `scripts` against a fresh Okta stand-in, with `extra` config: the
/// stand-in's runtime (keep it alive), the stand-in, the engine's directory and its process.
fn okta_engine(
    extra: &str,
    scripts: &[(&str, &str)],
) -> (
    tokio::runtime::Runtime,
    crate::lookup::FakeOkta,
    tempfile::TempDir,
    ServeProcess,
) {
    let rt = okta_runtime();
    let okta = rt.block_on(crate::lookup::FakeOkta::start());
    let dir = temp_dir();
    let port = free_port();
    engine_dir(dir.path(), port, &okta_config(&okta.url, extra), scripts);
    let p = ServeProcess::start(dir.path(), port, &OKTA_ENGINE_ENV);
    (rt, okta, dir, p)
}

/// The environment [`okta_engine`] serves with: the hook secret and the Okta token.
const OKTA_ENGINE_ENV: [(&str, &str); 2] = [
    ("ENGINE_TEST_SECRET", SECRET),
    ("ENGINE_TEST_OKTA_TOKEN", crate::lookup::TOKEN),
];

fn okta_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

const RATE_LIMITED: &str = "//! on: user.account.lock\nlet u = lookup_user(\"limited@example.com\");\nlog(`found ${u}`);\n";
const PLAIN: &str = "//! on: user.account.lock\nlog(`plain ran on ${event.uuid}`);\n";

/// Regression (defect 10): a lookup that met Okta's 429 slept inside the run for
/// `X-Rate-Limit-Reset` and retried, holding a worker ~6 s per run, so an unrelated script's
/// run waited behind them. Now the run ends transient at once, is retried at the reset (not
/// before), and a known reset is honoured without asking Okta again.
#[test]
fn a_rate_limited_lookup_ends_its_run_at_once_and_retries_after_the_reset() {
    let (_rt, okta, dir, p) = okta_engine(
        "",
        &[("a-limited.rhai", RATE_LIMITED), ("b-plain.rhai", PLAIN)],
    );
    // More events than one script's runs may hold slots at once (its share), so that some of
    // them start only after the first 429 came.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = engine::process::script_share(engine::process::run_slots(cores));
    let events = 2 * share;
    assert_eq!(
        post_blocking(&format!("{}/hooks/test", p.url), lock_events("rl", events)),
        200
    );
    let delivered = engine::util::now_ms();
    let mut runs = Vec::new();
    let settled = wait_until(Duration::from_secs(40), || {
        runs = history_json(dir.path(), "runs");
        let b_done = runs_of(&runs, "b-plain")
            .iter()
            .filter(|r| r["status"] == "succeeded")
            .count();
        let a_tried = runs_of(&runs, "a-limited")
            .iter()
            .filter(|r| r["attempts"].as_u64().unwrap_or(0) >= 1 && r["finished"].is_string())
            .count();
        b_done == events && a_tried == events
    });
    assert!(settled, "runs did not settle: {runs:#?}");
    let b_wait = runs_of(&runs, "b-plain")
        .iter()
        .map(|r| field_ms(r, "finished").unwrap().saturating_sub(delivered))
        .max()
        .unwrap();
    println!("figure: wait of an unrelated run behind rate-limited ones: {b_wait} ms");
    let path = "/api/v1/users/limited%40example.com";
    let seen = okta.seen(path);
    let reset_ms = seen[0].1.expect("the 429 announced a reset") * 1000;
    for r in runs_of(&runs, "a-limited") {
        let took = r["duration_ms"].as_u64().unwrap();
        assert!(
            took < 1000,
            "a rate-limited run of a-limited took {took} ms (waited inside the run): {r:#?}"
        );
        assert_eq!(r["error"]["kind"], "transient", "{r:#?}");
        if r["attempts"] == 1 {
            assert_eq!(r["status"], "retrying", "{r:#?}");
            let next = field_ms(r, "next_attempt").unwrap();
            assert!(
                next >= reset_ms,
                "retry scheduled at {next}, before the reset {reset_ms}: {r:#?}"
            );
        }
    }
    assert!(
        b_wait <= 1500,
        "the unrelated script's runs finished {b_wait} ms after delivery"
    );
    // Only the lookups already under way when the first 429 came (at most the script's share
    // of the slots) asked Okta before the reset; the others knew of the reset and failed at once.
    let before_reset = seen.iter().filter(|(t, _)| *t < reset_ms).count();
    assert!(
        before_reset <= share,
        "{before_reset} requests before the reset (share {share}): {seen:?}"
    );
    // Retried after the reset.
    assert!(
        wait_until(Duration::from_secs(20), || {
            runs = history_json(dir.path(), "runs");
            runs_of(&runs, "a-limited")
                .iter()
                .any(|r| r["attempts"].as_u64().unwrap_or(0) >= 2 && r["finished"].is_string())
        }),
        "{runs:#?}"
    );
    for r in runs_of(&runs, "a-limited") {
        if r["attempts"].as_u64().unwrap_or(0) >= 2 {
            let started = field_ms(r, "started").unwrap();
            assert!(
                started >= reset_ms,
                "retried at {started}, before {reset_ms}"
            );
        }
    }
    let seen = okta.seen(path);
    assert!(
        seen.iter()
            .all(|(t, _)| *t < seen[0].0 + 500 || *t >= reset_ms),
        "Okta was asked again before the reset {reset_ms}: {seen:?}"
    );
    drop(p);
}

const SLOW: &str = "//! on: user.account.lock\nsleep(3);\nlog(`slow done on ${event.uuid}`);\n";

/// Regression (defect 10): runs shared as many workers as cores, first come first served, so a
/// slow script (3 s per event, inside its time limit) held every worker and another script's
/// runs waited behind all of its runs (≥ 9 s for 6 events on 2 cores).
#[test]
fn a_slow_script_does_not_hold_up_another_scripts_runs() {
    let dir = temp_dir();
    let port = free_port();
    engine_dir(
        dir.path(),
        port,
        "",
        &[("a-slow.rhai", SLOW), ("b-plain.rhai", PLAIN)],
    );
    let env = [("ENGINE_TEST_SECRET", SECRET)];
    let p = ServeProcess::start(dir.path(), port, &env);
    const EVENTS: usize = 6;
    assert_eq!(
        post_blocking(
            &format!("{}/hooks/test", p.url),
            lock_events("slow", EVENTS)
        ),
        200
    );
    let delivered = engine::util::now_ms();
    let b_wait = last_quick_run_ms(dir.path(), "b-plain", EVENTS, delivered);
    println!("figure: last of {EVENTS} runs of a quick script beside a slow one: {b_wait} ms");
    assert!(
        b_wait <= 2000,
        "the quick script's runs finished {b_wait} ms after delivery, behind the slow script's"
    );
    // The slow script still runs every event (sleep within its time limit is allowed).
    let runs = final_runs(dir.path(), 2 * EVENTS);
    assert!(
        runs_of(&runs, "a-slow")
            .iter()
            .all(|r| r["status"] == "succeeded"),
        "{runs:#?}"
    );
    drop(p);
}

const HANGS: &str =
    "//! on: user.account.lock\nlet u = lookup_user(\"hang@example.com\");\nlog(`found ${u}`);\n";

/// Regression (defect 10): a lookup against an Okta that never answers blocked the run for the
/// 10 s request timeout, far past its 1 s time limit, and then retried it as transient.
#[test]
fn a_lookup_against_a_hanging_okta_fails_at_the_run_time_limit() {
    let (_rt, okta, dir, p) =
        okta_engine("\n[limits]\ntimeout_ms = 1000\n", &[("hangs.rhai", HANGS)]);
    assert_eq!(
        post_blocking(&format!("{}/hooks/test", p.url), lock_events("hang", 1)),
        200
    );
    let mut runs = Vec::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            runs = history_json(dir.path(), "runs");
            runs.first().is_some_and(|r| r["finished"].is_string())
        }),
        "{runs:#?}"
    );
    let r = &runs[0];
    let took = r["duration_ms"].as_u64().unwrap();
    println!("figure: a run blocked on a hanging Okta lasted {took} ms (time limit 1000 ms)");
    assert_eq!(
        r["error"]["kind"], "limit",
        "after {took} ms, want the time limit: {r:#?}"
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("time limit of 1000 ms"),
        "{r:#?}"
    );
    assert_eq!(r["status"], "failed", "a limit error is not retried");
    assert!(
        (900..2000).contains(&took),
        "the run lasted {took} ms, its limit is 1000"
    );
    assert!(okta.hits("/api/v1/users/hang%40example.com") >= 1);
    drop(p);
}

/// Regression guard for the script pool's compute slots (one per core): a run waiting on Okta
/// gives its slot to the runs queued behind it. Were the wait not marked as one
/// (`script::pool::blocking`), the runs waiting on a hanging Okta would hold every compute
/// slot and another script's runs would wait behind them for their 3 s time limit.
#[test]
fn runs_waiting_on_okta_leave_the_cores_to_other_runs() {
    let (_rt, okta, dir, p) = okta_engine(
        "\n[limits]\ntimeout_ms = 3000\n",
        &[("a-hangs.rhai", HANGS), ("b-plain.rhai", PLAIN)],
    );
    const EVENTS: usize = 6;
    assert_eq!(
        post_blocking(
            &format!("{}/hooks/test", p.url),
            lock_events("hang", EVENTS)
        ),
        200
    );
    let delivered = engine::util::now_ms();
    let b_wait = last_quick_run_ms(dir.path(), "b-plain", EVENTS, delivered);
    println!("figure: last of {EVENTS} quick runs beside runs waiting on Okta: {b_wait} ms");
    assert!(
        b_wait <= 2000,
        "the quick script's runs finished {b_wait} ms after delivery, behind runs waiting on Okta"
    );
    assert!(okta.hits("/api/v1/users/hang%40example.com") >= 1);
    drop(p);
}

const ECHOES: &str = "//! on: user.account.lock\nlet u = lookup_user(\"hooksecret@example.com\");\nlog(`title: ${u.title}`);\nlet e = lookup_user(\"echo@example.com\");\nlog(`never: ${e}`);\n";

/// Regression (defect 12): a far side's error text that echoes the Okta token (a 401 body
/// quoting the `Authorization` header) put the token into the run record, `engine runs`,
/// `engine run` and the log; a far side's answer holding the hook secret put it into the run's
/// own log. Every configured secret is scrubbed from everything recorded, logged or printed.
#[test]
fn a_secret_echoed_by_a_far_side_reaches_no_record_log_or_output() {
    let (rt, okta, dir, mut p) = okta_engine("", &[("echoes.rhai", ECHOES)]);
    let event = event_variant(
        "event.user.lifecycle.deactivate.json",
        "evt-echo-1",
        Some("user.account.lock"),
    );
    assert_eq!(
        post_blocking(&format!("{}/hooks/test", p.url), wrap(&event)),
        200
    );
    let runs = final_runs(dir.path(), 1);
    assert!(okta.hits("/api/v1/users/echo%40example.com") >= 1);
    let leaks = |what: &str, text: &str| {
        for secret in [crate::lookup::TOKEN, SECRET] {
            assert!(!text.contains(secret), "{what} shows {secret:?}:\n{text}");
        }
    };
    let o = run_engine(dir.path(), &["runs", "--format", "json"]);
    leaks("engine runs --format json", &stdout(&o));
    leaks("engine runs (stderr)", &stderr(&o));
    let o = run_engine(dir.path(), &["runs"]);
    leaks("engine runs", &stdout(&o));
    let r = &runs[0];
    assert_eq!(r["status"], "failed", "{r:#?}");
    assert_eq!(r["log"][0]["message"], "title: ***", "{r:#?}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("SSWS ***"),
        "the error stays readable: {r:#?}"
    );
    let metrics = rt
        .block_on(engine::util::http_client::request(
            hyper::Method::GET,
            &format!("{}/metrics", p.url),
            &[],
            bytes::Bytes::new(),
        ))
        .unwrap()
        .text();
    leaks("/metrics", &metrics);

    // A dry run against the same far side.
    let payload = dir.path().join("event.json");
    std::fs::write(&payload, &event).unwrap();
    for format in ["table", "json"] {
        let o = engine_bin()
            .current_dir(dir.path())
            .args([
                "run",
                "scripts/echoes.rhai",
                "event.json",
                "--format",
                format,
            ])
            .envs(OKTA_ENGINE_ENV)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
        leaks(&format!("engine run --format {format}"), &stdout(&o));
        leaks(
            &format!("engine run --format {format} (stderr)"),
            &stderr(&o),
        );
        assert!(stdout(&o).contains("***"), "{}", stdout(&o));
        if format == "json" {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert!(
                v[0]["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("SSWS ***")
            );
        }
    }
    p.signal(libc::SIGTERM);
    let (status, out, err) = p.wait_output();
    assert!(status.success());
    leaks("the server's stdout", &out);
    leaks("the server's log", &err);
    assert!(
        err.contains("title: ***"),
        "the log line is kept, scrubbed: {err}"
    );
}
