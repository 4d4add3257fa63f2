//! Crash safety: SIGKILL the server while clients post; every event answered 200 survives.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::util::http_client as client;
use hyper::Method;

use crate::support::*;

/// Posts from `clients` connections until `stop`, returning the uuids of events answered 200.
fn load(
    url: String,
    clients: usize,
    run_for: Duration,
) -> std::thread::JoinHandle<HashSet<String>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let accepted = Arc::new(Mutex::new(HashSet::new()));
            let mut tasks = Vec::new();
            for _ in 0..clients {
                let url = url.clone();
                let accepted = accepted.clone();
                tasks.push(tokio::spawn(async move {
                    let deadline = Instant::now() + run_for;
                    let Ok(mut conn) = client::Conn::open(&url).await else {
                        return;
                    };
                    let headers = vec![("Authorization".to_string(), SECRET.to_string())];
                    while Instant::now() < deadline {
                        let (body, uuids) = envelope(3);
                        match conn
                            .send(Method::POST, "/hooks/test", &headers, Bytes::from(body))
                            .await
                        {
                            Ok(a) if a.status == 200 => accepted.lock().unwrap().extend(uuids),
                            Ok(a) => panic!("unexpected answer {}", a.status),
                            Err(_) => return, // the server died mid-request: not acknowledged
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            Arc::try_unwrap(accepted).unwrap().into_inner().unwrap()
        })
    })
}

/// Posts one single-event delivery every `pace` until the server stops answering; returns the
/// uuids answered 200.
fn paced(url: String, pace: Duration) -> std::thread::JoinHandle<HashSet<String>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut accepted = HashSet::new();
            let Ok(mut conn) = client::Conn::open(&url).await else {
                return accepted;
            };
            let headers = vec![("Authorization".to_string(), SECRET.to_string())];
            loop {
                let (body, uuids) = envelope(1);
                match conn
                    .send(Method::POST, "/hooks/test", &headers, Bytes::from(body))
                    .await
                {
                    Ok(a) if a.status == 200 => accepted.extend(uuids),
                    Ok(a) => panic!("unexpected answer {}", a.status),
                    Err(_) => return accepted, // the server died: not acknowledged
                }
                tokio::time::sleep(pace).await;
            }
        })
    })
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_event() {
    let dir = temp_dir();
    let port = free_port();
    write_config(dir.path(), port, "");
    let env = [("ENGINE_TEST_SECRET", SECRET)];
    let mut acknowledged = HashSet::new();
    for round in 0..3 {
        let p = ServeProcess::start(dir.path(), port, &env);
        let url = format!("{}/hooks/test", p.url);
        let loader = load(url, 16, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(400 + 200 * round));
        p.signal(libc::SIGKILL);
        let got = loader.join().unwrap();
        assert!(
            !got.is_empty(),
            "round {round}: the load made progress before the kill"
        );
        acknowledged.extend(got);
        drop(p);
    }
    // Restart on the same data dir: the server repairs the store and serves again.
    let p = ServeProcess::start(dir.path(), port, &env);
    let (body, uuids) = envelope(1);
    let a = tokio::runtime::Runtime::new().unwrap().block_on(post_with(
        &format!("{}/hooks/test", p.url),
        SECRET,
        body,
    ));
    assert_eq!(a.status, 200);
    acknowledged.extend(uuids);
    // Read through the binary while the server runs.
    let o = run_engine(
        dir.path(),
        &["events", "--format", "json", "--limit", "100000000"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let stored: HashSet<String> = rows
        .iter()
        .map(|r| r["uuid"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(stored.len(), rows.len(), "no event stored twice");
}

/// Kills while a script mails every event: every acknowledged event ends with exactly one
/// succeeded run, every mail arrives, and a crash re-sends at most the mail whose send it cut
/// between the server's acceptance and our record (the sweep saw ~10 per crash: every send in
/// flight).
#[test]
fn kills_while_mailing_lose_no_event_and_resend_at_most_one_mail_per_crash() {
    const CRASHES: usize = 5;
    /// One single-event delivery this often: a steady stream of mail, not a flood.
    const PACE: Duration = Duration::from_millis(1);
    /// Loaders at once: together a few hundred mails per second, as in the sweep.
    const LOADERS: usize = 4;
    let smtp = crate::mail::SmtpServer::start(&["--delay-ms", "5"]);
    let (dir, port) = engine_setup(
        "\n[smtp]\nurl_env = \"ENGINE_TEST_SMTP_URL\"\nfrom = \"automation@example.com\"\nretry_base_ms = 50\n",
        &[(
            "mailer.rhai",
            "//! on: *\nsend_email(#{ to: \"a@example.com\", subject: `event ${event.uuid}`, body: \"b\" });\n",
        )],
    );
    let url = smtp.url("");
    let env = [
        ("ENGINE_TEST_SECRET", SECRET),
        ("ENGINE_TEST_SMTP_URL", url.expose()),
        ("ENGINE_LOG", "info,engine::actions=debug"),
    ];
    let mut acknowledged = HashSet::new();
    let mut logs = String::new();
    for round in 0..CRASHES {
        let p = ServeProcess::start(dir.path(), port, &env);
        let loaders: Vec<_> = (0..LOADERS)
            .map(|_| paced(format!("{}/hooks/test", p.url), PACE))
            .collect();
        std::thread::sleep(Duration::from_millis(800 + 150 * round as u64));
        p.signal(libc::SIGKILL);
        for l in loaders {
            acknowledged.extend(l.join().unwrap());
        }
        let mut p = p;
        logs.push_str(&p.wait_output().2);
    }
    let final_server = ServeProcess::start(dir.path(), port, &env);
    let mut runs = Vec::new();
    let mailed = |received: &[serde_json::Value]| -> HashSet<String> {
        received
            .iter()
            .map(|m| m["subject"].as_str().unwrap().to_string())
            .collect()
    };
    let finished = wait_until(Duration::from_secs(120), || {
        runs = history_json(dir.path(), "runs");
        let done = runs.iter().filter(|r| r["status"] == "succeeded").count();
        let subjects = mailed(&smtp.received());
        let unfinished = runs
            .iter()
            .any(|r| r["status"] == "pending" || r["status"] == "retrying");
        done >= acknowledged.len()
            && !unfinished
            && acknowledged
                .iter()
                .all(|u| subjects.contains(&format!("event {u}")))
    });
    let received = smtp.received();
    assert!(
        finished,
        "{} events acknowledged, {} runs succeeded, {} mails received",
        acknowledged.len(),
        runs.iter().filter(|r| r["status"] == "succeeded").count(),
        received.len()
    );
    let mut per_event: std::collections::HashMap<String, usize> = Default::default();
    for r in &runs {
        assert_eq!(r["status"], "succeeded", "{r:#?}");
        *per_event
            .entry(r["event_uuid"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for u in &acknowledged {
        assert_eq!(
            per_event.get(u),
            Some(&1),
            "event {u}: runs {:?}",
            per_event.get(u)
        );
    }
    let ids: Vec<&str> = received
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    let duplicates = ids.len() - unique.len();
    eprintln!(
        "{} events over {CRASHES} kills: {} mails, {duplicates} duplicates ({:.1} per crash)",
        acknowledged.len(),
        ids.len(),
        duplicates as f64 / CRASHES as f64
    );
    let subjects = mailed(&received);
    for u in &acknowledged {
        assert!(
            subjects.contains(&format!("event {u}")),
            "no mail for event {u}"
        );
    }
    logs.push_str(&final_server.log());
    let log = logs;
    let mut record_us: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split("record_us=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect();
    record_us.sort();
    if !record_us.is_empty() {
        eprintln!(
            "mail outcome recorded after: p50 {} us, p99 {} us, max {} us",
            record_us[record_us.len() / 2],
            record_us[record_us.len() * 99 / 100],
            record_us[record_us.len() - 1]
        );
    }
    assert!(
        duplicates <= CRASHES,
        "{duplicates} mails sent twice over {CRASHES} crashes"
    );
}

/// Regression: a script that crashed the engine (a memory bomb) ran again after every restart
/// and crashed it again (4 restarts in the sweep). A run in flight at two crashes is failed.
#[test]
fn a_run_in_flight_at_two_crashes_is_failed_not_run_a_third_time() {
    let dir = temp_dir();
    let port = free_port();
    // Long enough to be killed while running; within the 5 s time limit.
    engine_dir(
        dir.path(),
        port,
        "",
        &[(
            "slow.rhai",
            "//! on: *\nlog(\"start\");\nsleep(3);\nlog(\"end\");\n",
        )],
    );
    let env = [("ENGINE_TEST_SECRET", SECRET)];
    let (body, uuids) = envelope(1);
    for crash in 0..2 {
        let p = ServeProcess::start(dir.path(), port, &env);
        if crash == 0 {
            assert_eq!(
                post_blocking(&format!("{}/hooks/test", p.url), body.clone()),
                200
            );
        }
        // The run starts within a moment of the (re)start and sleeps 3 s: kill it mid-run.
        std::thread::sleep(Duration::from_millis(1200));
        p.signal(libc::SIGKILL);
        drop(p);
    }
    let mut p = ServeProcess::start(dir.path(), port, &env);
    let mut runs = Vec::new();
    let failed = wait_until(Duration::from_secs(10), || {
        runs = history_json(dir.path(), "runs");
        runs.first().is_some_and(|r| r["status"] == "failed")
    });
    assert!(failed, "{runs:#?}");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["event_uuid"], uuids[0].as_str());
    assert_eq!(runs[0]["crashes"], 2);
    let error = runs[0]["error"]["message"].as_str().unwrap();
    assert!(error.contains("crashed 2 times"), "{error}");
    // It is not run again: no new attempt starts.
    std::thread::sleep(Duration::from_millis(500));
    let again = history_json(dir.path(), "runs");
    assert_eq!(again[0]["attempts"], runs[0]["attempts"]);
    p.signal(libc::SIGTERM);
    let (status, _, log) = p.wait_output();
    assert!(status.success());
    assert!(log.contains("two crashes"), "{log}");
}

/// Regression: a script filling a map with distinct 0.5 MB strings grew the server to 2.6 GB
/// and aborted it. The run fails on its memory limit and the server stays small.
#[test]
fn a_memory_bomb_fails_its_run_and_the_server_stays_small() {
    let (dir, port) = engine_setup(
        "",
        &[(
            "bomb.rhai",
            "//! on: *\nlet m = #{};\nlet s = \"x\";\ns.pad(500000, \"x\");\nfor i in 0..100000 { m[\"k\" + i] = s + i; }\n",
        )],
    );
    let mut p = ServeProcess::start(dir.path(), port, &[("ENGINE_TEST_SECRET", SECRET)]);
    let (body, _) = envelope(1);
    assert_eq!(post_blocking(&format!("{}/hooks/test", p.url), body), 200);
    let mut runs = Vec::new();
    let done = wait_until(Duration::from_secs(20), || {
        runs = history_json(dir.path(), "runs");
        runs.first().is_some_and(|r| r["status"] == "failed")
    });
    assert!(done, "{runs:#?}");
    let error = runs[0]["error"]["message"].as_str().unwrap();
    assert!(error.contains("MiB of memory"), "{error}");
    assert_eq!(runs[0]["error"]["kind"], "limit");
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    eprintln!("peak RSS under the memory bomb: {} MB", peak_kb / 1024);
    assert!(peak_kb < 400 * 1024, "peak RSS {} MB", peak_kb / 1024);
    p.signal(libc::SIGTERM);
    assert!(p.wait_output().0.success());
}
