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
