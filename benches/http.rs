//! `http` actions per second through the durable queue to a local receiver (a hyper server on
//! 127.0.0.1 answering 200 at once): actions enqueued as runs commit them, carried out by the
//! `http` executor (its pool, the endpoint client, every outcome recorded in its own commit),
//! without and with a `rate_per_s` on the endpoint.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::actions::{ActionCounts, HttpExecutor};
use engine::config::Config;
use engine::lookup::Endpoints;
use engine::script::{Action, ActionKind, HttpBody, HttpRequest, action_id};
use engine::store::actions::{self, ActionsView, Origin};
use engine::store::{CommitMode, Store};
use http_body_util::Full;
use hyper::Response;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Actions per measurement: a few seconds at the expected rate.
const ACTIONS: usize = 2_000;
/// Actions queued per commit (one run's worth).
const PER_RUN: usize = 4;

async fn receiver(count: Arc<AtomicU64>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    count.fetch_add(1, Ordering::Relaxed);
                    async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok")))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

async fn measure(name: &str, port: u16, extra: &str, n: usize, received: &AtomicU64) {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("[endpoint.bench]\nurl = \"http://127.0.0.1:{port}/hook\"\n{extra}");
    let config = Config::parse(&toml, &dir.path().join("engine.toml")).expect("config");
    let endpoints = Arc::new(Endpoints::from_config(&config).expect("endpoints"));
    let store = Arc::new(Store::open(Path::new(dir.path()), CommitMode::Group).expect("store"));
    let exec = Arc::new(HttpExecutor::new(
        store.clone(),
        endpoints,
        Duration::from_millis(100),
        Arc::new(ActionCounts::default()),
    ));
    let pool = exec.pool();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = tokio::spawn(HttpExecutor::run(pool.clone(), stopped));
    let before = received.load(Ordering::Relaxed);
    let start = Instant::now();
    for run in 0..n / PER_RUN {
        let uuid = format!("bench-{run}");
        let list: Vec<Action> = (0..PER_RUN)
            .map(|i| {
                Action::Http(HttpRequest {
                    id: action_id(&uuid, "bench", &format!("http#{i}")),
                    position: i,
                    key: None,
                    endpoint: "bench".into(),
                    method: "POST".into(),
                    path: String::new(),
                    query: vec![],
                    headers: vec![],
                    body: Some(HttpBody {
                        content_type: "application/json".into(),
                        text: format!("{{\"text\":\"event {uuid} #{i}\"}}"),
                    }),
                })
            })
            .collect();
        store
            .write(move |txn| {
                let origin = Origin {
                    run_id: run as u64 + 1,
                    event_uuid: &uuid,
                    script: "bench",
                };
                actions::enqueue(txn, origin, &list).map(|_| ())
            })
            .await
            .expect("enqueue");
        pool.waker().notify_one();
    }
    let queued = start.elapsed();
    loop {
        let left = ActionsView(&*store).due_count(ActionKind::Http).unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let got = received.load(Ordering::Relaxed) - before;
    println!(
        "{name:<28} {n} actions ({got} requests) in {:>6.3} s = {:>6.0} actions/s (queued in {:.3} s)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        queued.as_secs_f64()
    );
    let _ = stop.send(true);
    let _ = runner.await;
    drop(pool);
    drop(exec);
    tokio::task::spawn_blocking(move || drop(store)).await.ok();
}

#[tokio::main]
async fn main() {
    let received = Arc::new(AtomicU64::new(0));
    let port = receiver(received.clone()).await;
    measure("no rate limit", port, "", ACTIONS, &received).await;
    measure(
        "rate_per_s = 200",
        port,
        "rate_per_s = 200\n",
        400,
        &received,
    )
    .await;
}
