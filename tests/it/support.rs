//! Helpers shared by the integration tests: temp dirs, an in-process server on port 0, HTTP
//! calls, running the built binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::app::App;
use engine::config::{HookConfig, HookKind, SecretSource};
use engine::ingest::ServerLimits;
use engine::store::{CommitMode, History, Store};
use engine::util::http_client::{self as client, Answer};
use hyper::Method;
use tokio::sync::oneshot;

pub const SECRET: &str = "test-secret-0123456789";
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(name)).expect("fixture exists")
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("engine-it-")
        .tempdir()
        .expect("temp dir")
}

pub fn hook(id: &str, kind: HookKind) -> HookConfig {
    HookConfig {
        id: id.to_string(),
        kind,
        auth_header: "authorization".to_string(),
        secret: SecretSource::Generated,
        capture: true,
    }
}

/// A server running in this process on 127.0.0.1:<free port>.
pub struct TestServer {
    pub url: String,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// One `okta` hook `test` and one `generic` hook `gen`, both with [`SECRET`].
    pub async fn start(data_dir: &Path) -> TestServer {
        Self::start_with(data_dir, DEFAULT_MAX_BODY).await
    }

    pub async fn start_with(data_dir: &Path, max_body: usize) -> TestServer {
        Self::start_limits(data_dir, max_body, ServerLimits::default()).await
    }

    /// As [`TestServer::start_with`], with these connection caps and timeouts.
    pub async fn start_limits(
        data_dir: &Path,
        max_body: usize,
        limits: ServerLimits,
    ) -> TestServer {
        let store = Store::open(data_dir, CommitMode::Group).expect("store opens");
        let hooks = vec![
            (
                hook("test", HookKind::Okta),
                engine::config::Secret::new(SECRET.into()),
            ),
            (
                hook("gen", HookKind::Generic),
                engine::config::Secret::new(SECRET.into()),
            ),
        ];
        let app = App::receiver(hooks, store, max_body).with_server_limits(limits);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            engine::app::run(listener, app, async {
                let _ = stopped.await;
            })
            .await;
        });
        TestServer {
            url,
            data_dir: data_dir.to_path_buf(),
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Signals shutdown and waits until the server has stopped and closed its store.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(d) = self.done.take() {
            d.await.unwrap();
        }
    }

    pub fn hook_url(&self, id: &str) -> String {
        format!("{}/hooks/{id}", self.url)
    }

    pub async fn post(&self, hook: &str, body: impl Into<Bytes>) -> Answer {
        post_with(&self.hook_url(hook), SECRET, body).await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        client::request(
            Method::GET,
            &format!("{}{path}", self.url),
            &headers,
            Bytes::new(),
        )
        .await
        .expect("request answered")
    }
}

pub const DEFAULT_MAX_BODY: usize = engine::config::DEFAULT_MAX_BODY_BYTES;

pub async fn post_with(url: &str, secret: &str, body: impl Into<Bytes>) -> Answer {
    let headers = vec![("Authorization".to_string(), secret.to_string())];
    client::request(Method::POST, url, &headers, body.into())
        .await
        .expect("request answered")
}

/// Reads the stored events of a data dir (server stopped or running).
pub fn stored_events(data_dir: &Path) -> Vec<engine::store::EventRow> {
    match History::open(data_dir).expect("history opens") {
        Some(h) => h.recent_events(usize::MAX).expect("events read"),
        None => Vec::new(),
    }
}

/// An envelope with `n` events, fresh ids.
pub fn envelope(n: usize) -> (String, Vec<String>) {
    let uuids: Vec<String> = (0..n).map(|_| engine::util::new_uuid()).collect();
    (envelope_with(&engine::util::new_uuid(), &uuids), uuids)
}

pub fn envelope_with(event_id: &str, uuids: &[String]) -> String {
    let events: Vec<String> = uuids
        .iter()
        .map(|u| {
            format!(
                r#"{{"uuid":"{u}","published":"2024-05-01T10:00:00.000Z","eventType":"user.lifecycle.create","actor":null,"target":null}}"#
            )
        })
        .collect();
    format!(
        r#"{{"eventType":"com.okta.event_hook","eventId":"{event_id}","data":{{"events":[{}]}}}}"#,
        events.join(",")
    )
}

/// Wraps one LogEvent into an envelope the way `engine send` does.
pub fn wrap(event_json: &str) -> String {
    let body = engine::ingest::envelope::delivery_body(event_json.as_bytes()).expect("wraps");
    String::from_utf8(body.to_vec()).expect("UTF-8")
}

/// The built binary.
pub fn engine_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_engine"));
    c.env_remove("ENGINE_LOG");
    c
}

pub fn run_engine(dir: &Path, args: &[&str]) -> Output {
    engine_bin()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("engine runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Ports are handed out from this range, below the kernel's ephemeral range (32768–60999 on
/// these machines): a port from `bind(0)` could be taken, between its release and the server's
/// bind, by a client connection's source port or by another test's `bind(0)`. A restarted server
/// then failed to bind while the readiness probe reached the other listener.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;
/// How many ports this test process has handed out.
static PORTS_GIVEN: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

/// A free loopback port that no other test of this process gets.
pub fn free_port() -> u16 {
    let span = TEST_PORTS.end - TEST_PORTS.start;
    // A start that differs between processes, so two test runs at once rarely overlap.
    let offset = (std::process::id() % u32::from(span)) as u16;
    loop {
        let n = PORTS_GIVEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n < span, "out of test ports");
        let port = TEST_PORTS.start + (offset + n) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `engine serve` as a child process in `dir` with a config listening on `port`. Its stdout and
/// stderr are drained into buffers as it writes (a full pipe would block the server).
pub struct ServeProcess {
    pub child: Child,
    pub url: String,
    out: std::sync::Arc<std::sync::Mutex<String>>,
    err: std::sync::Arc<std::sync::Mutex<String>>,
    drains: Vec<std::thread::JoinHandle<()>>,
}

/// Copies everything `from` gives into `into`, until it ends.
fn drain(
    mut from: impl std::io::Read + Send + 'static,
    into: std::sync::Arc<std::sync::Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
}

impl ServeProcess {
    pub fn start(dir: &Path, port: u16, envs: &[(&str, &str)]) -> ServeProcess {
        Self::start_with(dir, port, envs, |_| {})
    }

    /// As [`ServeProcess::start`], with `configure` applied to the command first (a `pre_exec`
    /// setting the child's umask or rlimits, say: only the child's, never this process's).
    pub fn start_with(
        dir: &Path,
        port: u16,
        envs: &[(&str, &str)],
        configure: impl FnOnce(&mut Command),
    ) -> ServeProcess {
        // Every server's console on a port of its own: the default 8081 would be shared.
        let toml = dir.join("engine.toml");
        if let Ok(text) = std::fs::read_to_string(&toml)
            && !text.contains("console_listen")
        {
            std::fs::write(&toml, format!("console_listen = \"127.0.0.1:0\"\n{text}")).unwrap();
        }
        let mut cmd = engine_bin();
        configure(&mut cmd);
        cmd.current_dir(dir)
            .args(["serve"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("engine serve starts");
        let url = format!("http://127.0.0.1:{port}");
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut drains = Vec::new();
        if let Some(o) = child.stdout.take() {
            drains.push(drain(o, out.clone()));
        }
        if let Some(e) = child.stderr.take() {
            drains.push(drain(e, err.clone()));
        }
        let mut p = ServeProcess {
            child,
            url,
            out,
            err,
            drains,
        };
        p.wait_ready();
        p
    }

    /// What the server wrote on stdout so far.
    pub fn printed(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// The console's base URL (`http://127.0.0.1:PORT`), as the server printed it.
    pub fn console_url(&self) -> String {
        self.printed_line("engine: console on ")
            .trim_end_matches('/')
            .to_string()
    }

    /// The one-time login link the server printed.
    pub fn login_link(&self) -> String {
        self.printed_line("log in (this link works once): ")
    }

    /// The rest of the first printed line that starts (after spaces) with `prefix`, waiting up
    /// to 10 s for it.
    fn printed_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.printed();
            if let Some(rest) = out
                .lines()
                .find_map(|l| l.trim_start().strip_prefix(prefix))
            {
                return rest.trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "the server never printed `{prefix}`: {out}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the server wrote on stderr so far.
    pub fn log(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits for the server to exit: (status, stdout, stderr).
    pub fn wait_output(&mut self) -> (std::process::ExitStatus, String, String) {
        let status = self.child.wait().unwrap();
        for d in self.drains.drain(..) {
            let _ = d.join();
        }
        (status, self.out.lock().unwrap().clone(), self.log())
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = self.url.trim_start_matches("http://").to_string();
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&addr).is_ok() {
                // Something listens; make sure it is this server and not a leftover.
                std::thread::sleep(Duration::from_millis(20));
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("engine serve exited with {status} although {addr} answers");
                }
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                for d in self.drains.drain(..) {
                    let _ = d.join();
                }
                panic!(
                    "engine serve exited with {status} before listening: {}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("engine serve did not start listening on {addr}");
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn write_config(dir: &Path, port: u16, extra: &str) {
    std::fs::write(
        dir.join("engine.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\n\n[[hook]]\nid = \"test\"\nsecret_env = \"ENGINE_TEST_SECRET\"\n{extra}"
        ),
    )
    .unwrap();
}

pub fn shared(app: App) -> Arc<App> {
    Arc::new(app)
}

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Lays out an engine directory: `engine.toml` (listen on `port`, hook `test` with
/// `ENGINE_TEST_SECRET`, plus `extra`), `scripts/` with the given files, and the repo's `stdlib/`.
pub fn engine_dir(dir: &Path, port: u16, extra: &str, scripts: &[(&str, &str)]) {
    write_config(dir, port, extra);
    let sdir = dir.join("scripts");
    std::fs::create_dir_all(&sdir).unwrap();
    for (name, text) in scripts {
        std::fs::write(sdir.join(name), text).unwrap();
    }
    let lib = dir.join("stdlib");
    std::fs::create_dir_all(&lib).unwrap();
    for entry in std::fs::read_dir(Path::new(REPO).join("stdlib")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, lib.join(p.file_name().unwrap())).unwrap();
    }
}

/// A temp dir laid out by [`engine_dir`] for a server on a fresh port.
pub fn engine_setup(extra: &str, scripts: &[(&str, &str)]) -> (tempfile::TempDir, u16) {
    let dir = temp_dir();
    let port = free_port();
    engine_dir(dir.path(), port, extra, scripts);
    (dir, port)
}

/// The repo's example script `name` (from `scripts/`).
pub fn example_script(name: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join("scripts").join(name)).unwrap()
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `engine <cmd> --format json --limit <big>` parsed.
pub fn history_json(dir: &Path, cmd: &str) -> Vec<serde_json::Value> {
    let o = run_engine(dir, &[cmd, "--format", "json", "--limit", "1000000"]);
    assert_eq!(o.status.code(), Some(0), "engine {cmd}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("engine {cmd} JSON: {e}: {}", stdout(&o)))
}

/// Posts a body to a running `engine serve` with the test secret (blocking).
pub fn post_blocking(url: &str, body: String) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(post_with(url, SECRET, body)).status
}

/// A LogEvent fixture with its uuid (and optionally its type) replaced.
pub fn event_variant(fixture_name: &str, uuid: &str, event_type: Option<&str>) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&fixture(fixture_name)).unwrap();
    v["uuid"] = uuid.into();
    if let Some(t) = event_type {
        v["eventType"] = t.into();
    }
    v.to_string()
}

/// Waits for a child and reads what it printed (for children whose pipes we did not take).
pub trait WaitRef {
    fn wait_with_output_ref(&mut self) -> (std::process::ExitStatus, String, String);
}

impl WaitRef for std::process::Child {
    fn wait_with_output_ref(&mut self) -> (std::process::ExitStatus, String, String) {
        use std::io::Read;
        let status = self.wait().unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(o) = self.stdout.as_mut() {
            o.read_to_string(&mut out).unwrap();
        }
        if let Some(e) = self.stderr.as_mut() {
            e.read_to_string(&mut err).unwrap();
        }
        (status, out, err)
    }
}

/// Stores one envelope straight through the store (no HTTP), as received at `received_ms`.
pub async fn deliver(store: &Store, body: String, received_ms: u64) -> engine::store::Stored {
    let parsed = engine::ingest::envelope::parse(HookKind::Okta, body.as_bytes()).unwrap();
    store
        .store_delivery(engine::store::NewDelivery {
            hook: "test".into(),
            received_ms,
            body: body.into(),
            parsed,
        })
        .await
        .unwrap()
}

/// Runs every golden case through `run_case`, printing `ok`/`FAIL` per case, and panics naming
/// the failed ones (`what` names the kind, `hint` follows the list).
pub fn run_golden_cases(
    what: &str,
    cases: &[PathBuf],
    run_case: impl Fn(&Path) -> Result<(), String>,
    hint: &str,
) {
    assert!(!cases.is_empty(), "no {what} cases");
    let mut failed = Vec::new();
    for case in cases {
        let name = case
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match run_case(case) {
            Ok(()) => println!("ok   {name}"),
            Err(e) => {
                println!("FAIL {name}\n  {}", e.replace('\n', "\n  "));
                failed.push(name);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {what} cases failed: {failed:?}{hint}",
        failed.len(),
        cases.len()
    );
}
