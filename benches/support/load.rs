//! The benchmarks' shared load generator: the receiver on loopback, hook deliveries posted over
//! keep-alive connections until a deadline, each answer's latency kept (`ingest`, `backfill`,
//! `history`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use engine::app::App;
use engine::config::{HookConfig, HookKind, Secret, SecretSource};
use engine::store::Store;
use engine::util::http_client::Conn;
use hyper::Method;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A receiver [`start_receiver`] started.
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    /// Send to stop it; then await `done`.
    pub stop: oneshot::Sender<()>,
    pub done: JoinHandle<()>,
    /// The store it writes to, for writes beside the load.
    #[allow(dead_code)] // only the backfill bench writes beside the load
    pub store: Arc<Store>,
}

/// The receiver alone (no scripts) on a loopback port, hook `bench` with `secret`, on `store`.
pub async fn start_receiver(store: Store, secret: &str) -> Receiver {
    let hook = HookConfig {
        id: "bench".into(),
        kind: HookKind::Okta,
        auth_header: "authorization".into(),
        secret: SecretSource::Generated,
        capture: false,
    };
    let app = App::receiver(
        vec![(hook, Secret::new(secret.into()))],
        store,
        4 * 1024 * 1024,
    );
    let store = app.store().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let done = tokio::spawn(engine::app::run(listener, app, async {
        let _ = stop_rx.await;
    }));
    Receiver {
        addr,
        stop: stop_tx,
        done,
        store,
    }
}

/// A delivery of `events` copies of `event_template` (the deactivate fixture), each with a uuid
/// unique to this process, connection `conn` and request `i`.
pub fn hook_body(event_template: &str, conn: usize, i: u64, events: usize) -> Bytes {
    let evs: Vec<String> = (0..events)
        .map(|e| {
            event_template.replacen(
                "ab62c0bc-2837-11eb-9823-9fb8f750c5a9",
                &format!("{conn}-{i}-{e}-{}", std::process::id()),
                1,
            )
        })
        .collect();
    Bytes::from(format!(
        r#"{{"eventType":"com.okta.event_hook","eventTypeVersion":"1.0","cloudEventsVersion":"0.1","source":"bench","eventId":"d-{conn}-{i}-{}","eventTime":"2024-05-01T10:00:00.000Z","contentType":"application/json","data":{{"events":[{}]}}}}"#,
        std::process::id(),
        evs.join(",")
    ))
}

/// Posts `body(conn, i)` to `path` on the server at `base` (`http://host:port`) with
/// `Authorization: secret`, over `conns` connections, until `deadline`; every answer must be
/// 200. The answers' latencies in µs, sorted.
pub async fn post_until(
    base: &str,
    path: &'static str,
    secret: &str,
    conns: usize,
    deadline: Instant,
    body: impl Fn(usize, u64) -> Bytes + Send + Sync + 'static,
) -> Vec<u64> {
    let body = Arc::new(body);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (base, secret, body) = (base.to_string(), secret.to_string(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&base).await.expect("connect");
            let headers = vec![("Authorization".to_string(), secret)];
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let b = body(c, i);
                i += 1;
                let t = Instant::now();
                let a = conn
                    .send(Method::POST, path, &headers, b)
                    .await
                    .expect("post");
                assert_eq!(a.status, 200, "{}", a.text());
                lat.push(t.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load connection"));
    }
    all.sort_unstable();
    all
}

/// The `p` quantile of sorted latencies (µs), in ms.
pub fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}
