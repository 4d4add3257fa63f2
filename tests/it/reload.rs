//! Hot reload end to end: the full runtime from `serve::prepare` on a loopback port, scripts and
//! stdlib in temp dirs edited the ways editors save, events delivered over HTTP, and the version
//! that ran read back from the runs table (each version logs a distinct line).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::config::Config;
use engine::reload::ScriptStates;
use engine::script::LiveScripts;
use engine::script::{Limits, ScriptSet};
use engine::store::runs::{RunRecord, RunStatus, RunsView};
use engine::store::script_state::ScriptStatus;
use engine::store::{CommitMode, History, Store};
use engine::util::http_client as client;
use hyper::Method;
use tokio::sync::oneshot;

use crate::support::{envelope, post_with, temp_dir};

/// The spec: within a second of a save, changed scripts are live.
const LIVE_WITHIN: Duration = Duration::from_secs(1);
/// How long a delivered event may take to be run and recorded.
const RUN_WITHIN: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(5);

/// A script subscribed to every event the tests deliver, logging `<name> <version>`.
fn script(name: &str, version: &str) -> String {
    format!("//! on: user.lifecycle.*\nlog(\"{name} {version}\");\n")
}

/// `engine serve` in-process on the embedded defaults, with scripts and stdlib in a temp dir.
struct Server {
    dir: tempfile::TempDir,
    config: Config,
    url: String,
    secret: String,
    store: Option<Arc<Store>>,
    live: LiveScripts,
    states: Arc<ScriptStates>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start(scripts: &[(&str, &str)], stdlib: &[(&str, &str)]) -> Server {
        let dir = temp_dir();
        let mut config = Config::defaults(dir.path());
        config.scripts_dir = dir.path().join("scripts");
        config.stdlib_dir = dir.path().join("stdlib");
        std::fs::create_dir_all(&config.scripts_dir).unwrap();
        std::fs::create_dir_all(&config.stdlib_dir).unwrap();
        for (name, text) in scripts {
            std::fs::write(config.scripts_dir.join(name), text).unwrap();
        }
        for (name, text) in stdlib {
            std::fs::write(config.stdlib_dir.join(name), text).unwrap();
        }
        let mut out = Vec::new();
        let app = engine::app::prepare(&config, CommitMode::Group, &mut out).expect("prepares");
        let rt = app.runtime().expect("runtime attached");
        let live = rt.scripts.clone();
        let states = rt.reloader.states().clone();
        let store = app.store().clone();
        let secret = std::fs::read_to_string(config.generated_secret_path("default"))
            .expect("generated secret")
            .trim()
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(engine::app::run(listener, app, async {
            let _ = stopped.await;
        }));
        let s = Server {
            dir,
            config,
            url,
            secret,
            store: Some(store),
            live,
            states,
            stop: Some(stop),
            done: Some(done),
        };
        // The watcher is up once its first pass has run (it watches before that pass).
        s.wait(Duration::from_secs(10), "the watcher's startup pass", |s| {
            s.states.passes() >= 1
        })
        .await;
        s
    }

    /// Stops the server; the temp dir lives on in the returned handle.
    async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(d) = self.done.take() {
            d.await.unwrap();
        }
        // Ours is the last handle: close the store (joins its writer) off the async threads.
        let store = self.store.take();
        tokio::task::spawn_blocking(move || drop(store))
            .await
            .unwrap();
        self.dir
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("running")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.config.scripts_dir.join(name)
    }

    /// Saves in place (truncate and write), as `echo > file` or many IDEs do.
    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    /// Saves the way vim does with `backupcopy=no`, plus a swap file: swap file, backup copy,
    /// write a temp file, rename it over the original, drop the swap file.
    fn save_by_rename(&self, dir: &Path, name: &str, text: &str) {
        let target = dir.join(name);
        let swap = dir.join(format!(".{name}.swp"));
        std::fs::write(&swap, b"vim swap").unwrap();
        if target.exists() {
            std::fs::copy(&target, dir.join(format!("{name}~"))).unwrap();
        }
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &target).unwrap();
        std::fs::remove_file(&swap).unwrap();
    }

    /// The hash the engine gives `text` as script `name` (compiled on its own, same stdlib).
    fn hash_of(&self, name: &str, text: &str) -> String {
        let scratch = temp_dir();
        let p = scratch.path().join(name);
        std::fs::write(&p, text).unwrap();
        ScriptSet::load_one(&p, &self.config.stdlib_dir, &Limits::default())
            .expect("compiles")
            .hash
            .clone()
    }

    fn live_hash(&self, script: &str) -> Option<String> {
        self.live.load().get(script).map(|s| s.hash.clone())
    }

    /// Polls `cond` every few ms; panics with `what` after `timeout`. Returns the time taken.
    async fn wait(
        &self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&Server) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if cond(self) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until script `name` is live in the version `text`; returns the latency.
    async fn wait_live(&self, name: &str, text: &str, started: Instant) -> Duration {
        let script = name.trim_end_matches(".rhai");
        let want = self.hash_of(name, text);
        self.wait(
            Duration::from_secs(10),
            &format!("{script} to go live"),
            |s| s.live_hash(script).as_deref() == Some(want.as_str()),
        )
        .await;
        started.elapsed()
    }

    /// Posts one event; returns its uuid.
    async fn deliver(&self) -> String {
        let (body, uuids) = envelope(1);
        let a = post_with(&format!("{}/hooks/default", self.url), &self.secret, body).await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        uuids.into_iter().next().unwrap()
    }

    /// The runs of one event, once all of them are finished (they are created together).
    async fn finished_runs(&self, uuid: &str) -> Vec<RunRecord> {
        let start = Instant::now();
        loop {
            let runs = RunsView(self.store()).of_event(uuid).unwrap();
            let done = |r: &RunRecord| matches!(r.status, RunStatus::Succeeded | RunStatus::Failed);
            if !runs.is_empty() && runs.iter().all(done) {
                return runs;
            }
            assert!(
                start.elapsed() < RUN_WITHIN,
                "runs of {uuid} not finished: {runs:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Delivers one event and returns `script → (log line, hash it ran)` of its runs.
    async fn run_event(&self) -> Vec<(String, String, String)> {
        let uuid = self.deliver().await;
        let mut out: Vec<(String, String, String)> = self
            .finished_runs(&uuid)
            .await
            .into_iter()
            .map(|r| {
                assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
                let line = r
                    .log
                    .iter()
                    .map(|l| l.message.clone())
                    .collect::<Vec<_>>()
                    .join("|");
                (r.script, line, r.script_hash.unwrap_or_default())
            })
            .collect();
        out.sort();
        out
    }

    async fn metrics(&self) -> String {
        let a = client::request(
            Method::GET,
            &format!("{}/metrics", self.url),
            &[],
            Bytes::new(),
        )
        .await
        .unwrap();
        assert_eq!(a.status, 200);
        String::from_utf8_lossy(&a.body).into_owned()
    }

    /// The script state the server recorded in the store (what `engine scripts` reads).
    fn recorded(&self) -> Vec<engine::store::script_state::ScriptState> {
        let txn = engine::store::ReadTxnSource::begin(self.store()).unwrap();
        engine::store::script_state::recorded(&txn)
            .unwrap()
            .expect("state recorded")
    }
}

fn row(script: &str, line: &str, hash: &str) -> (String, String, String) {
    (script.to_string(), line.to_string(), hash.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edit_is_used_for_the_next_event_within_a_second() {
    let v1 = script("a", "v1");
    let s = Server::start(&[("a.rhai", &v1)], &[]).await;
    let h1 = s.hash_of("a.rhai", &v1);
    assert_eq!(s.run_event().await, vec![row("a", "a v1", &h1)]);

    let v2 = script("a", "v2");
    let t0 = Instant::now();
    s.write("a.rhai", &v2);
    let latency = s.wait_live("a.rhai", &v2, t0).await;
    eprintln!("reload latency (in-place write): {latency:?}");
    assert!(latency < LIVE_WITHIN, "live after {latency:?}");
    let h2 = s.hash_of("a.rhai", &v2);
    assert_eq!(s.run_event().await, vec![row("a", "a v2", &h2)]);

    let st = s.states.get("a").expect("state");
    assert_eq!(st.status, ScriptStatus::Ok);
    assert_eq!(st.hash.as_deref(), Some(h2.as_str()));
    assert!(st.loaded_at.is_some() && st.last_error.is_none(), "{st:?}");
    let m = s.metrics().await;
    assert!(
        m.contains(&format!(
            "engine_script_info{{script=\"a\",hash=\"{h2}\"}} 1"
        )),
        "{m}"
    );
    assert!(m.contains("engine_script_reloads_total 1"), "{m}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_in_flight_finishes_on_the_version_it_started_with() {
    let v1 = "//! on: user.lifecycle.*\nlog(\"a v1 start\");\nsleep(1.0);\nlog(\"a v1\");\n";
    let s = Server::start(&[("a.rhai", v1)], &[]).await;
    let h1 = s.hash_of("a.rhai", v1);
    let first = s.deliver().await;
    s.wait(Duration::from_secs(5), "the first run to be created", |s| {
        !RunsView(s.store()).of_event(&first).unwrap().is_empty()
    })
    .await;
    // Let the worker pick it up (it sleeps for a second inside the script).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let v2 = script("a", "v2");
    let written = engine::util::now_ms() as i128 * 1_000_000;
    let t0 = Instant::now();
    s.write("a.rhai", &v2);
    s.wait_live("a.rhai", &v2, t0).await;
    let live = engine::util::now_ms() as i128 * 1_000_000;
    let h2 = s.hash_of("a.rhai", &v2);
    assert_eq!(s.run_event().await, vec![row("a", "a v2", &h2)]);

    let run = s.finished_runs(&first).await.remove(0);
    let lines: Vec<&str> = run.log.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(lines, ["a v1 start", "a v1"]);
    assert_eq!(run.script_hash.as_deref(), Some(h1.as_str()));
    let nanos =
        |t: &Option<String>| engine::util::parse_rfc3339_nanos(t.as_deref().unwrap()).unwrap();
    let (started, finished) = (nanos(&run.started), nanos(&run.finished));
    assert!(
        started < written && live < finished,
        "the swap ({written}..{live} ns) must fall inside the run ({started}..{finished} ns)"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_then_rename_save_is_used_within_a_second() {
    let v1 = script("a", "v1");
    let s = Server::start(&[("a.rhai", &v1)], &[]).await;
    assert_eq!(s.run_event().await[0].1, "a v1");

    let v2 = script("a", "v2");
    let t0 = Instant::now();
    s.save_by_rename(&s.config.scripts_dir, "a.rhai", &v2);
    let latency = s.wait_live("a.rhai", &v2, t0).await;
    eprintln!("reload latency (write-then-rename): {latency:?}");
    assert!(latency < LIVE_WITHIN, "live after {latency:?}");
    let h2 = s.hash_of("a.rhai", &v2);
    // The backup file `a.rhai~` and the swap file are not scripts.
    assert_eq!(s.run_event().await, vec![row("a", "a v2", &h2)]);
    assert_eq!(s.live.load().scripts().len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_save_keeps_the_old_version_and_the_fix_goes_live() {
    let v1 = script("a", "v1");
    let s = Server::start(&[("a.rhai", &v1)], &[]).await;
    let h1 = s.hash_of("a.rhai", &v1);
    assert_eq!(s.run_event().await, vec![row("a", "a v1", &h1)]);

    // Line 2 misses its closing parenthesis.
    let t0 = Instant::now();
    s.write("a.rhai", "//! on: user.lifecycle.*\nlog(\"a v2\";\n");
    let seen = s
        .wait(Duration::from_secs(10), "the error to be reported", |s| {
            s.states
                .get("a")
                .is_some_and(|st| st.status == ScriptStatus::Error)
        })
        .await;
    assert!(t0.elapsed() < LIVE_WITHIN, "error reported after {seen:?}");
    let st = s.states.get("a").unwrap();
    let error = st.last_error.clone().unwrap_or_default();
    assert!(error.contains("a.rhai:2:"), "file:line:col in {error}");
    assert_eq!(
        st.hash.as_deref(),
        Some(h1.as_str()),
        "the old version stays live"
    );
    // The old version keeps running.
    assert_eq!(s.run_event().await, vec![row("a", "a v1", &h1)]);
    let m = s.metrics().await;
    assert!(
        m.contains("engine_script_load_error{script=\"a\"} 1"),
        "{m}"
    );
    assert!(m.contains("engine_script_load_errors_total 1"), "{m}");
    assert!(
        m.contains(&format!(
            "engine_script_info{{script=\"a\",hash=\"{h1}\"}} 1"
        )),
        "{m}"
    );
    s.wait(Duration::from_secs(5), "the error to be recorded", |s| {
        s.recorded()
            .iter()
            .any(|r| r.script == "a" && r.status == ScriptStatus::Error)
    })
    .await;

    let v3 = script("a", "v3");
    let t0 = Instant::now();
    s.write("a.rhai", &v3);
    let latency = s.wait_live("a.rhai", &v3, t0).await;
    eprintln!("reload latency (fix after a broken save): {latency:?}");
    assert!(latency < LIVE_WITHIN, "live after {latency:?}");
    let h3 = s.hash_of("a.rhai", &v3);
    assert_eq!(s.run_event().await, vec![row("a", "a v3", &h3)]);
    let st = s.states.get("a").unwrap();
    assert_eq!((st.status, st.last_error), (ScriptStatus::Ok, None));
    assert!(
        s.metrics()
            .await
            .contains("engine_script_load_error{script=\"a\"} 0")
    );
    s.wait(Duration::from_secs(5), "the fix to be recorded", |s| {
        s.recorded().iter().any(|r| {
            r.script == "a"
                && r.status == ScriptStatus::Ok
                && r.hash.as_deref() == Some(h3.as_str())
        })
    })
    .await;

    // What `engine scripts` shows after the server stopped: the recorded state.
    let data_dir = s.config.data_dir.clone();
    let _dir = s.stop().await;
    let h = History::open(&data_dir).unwrap().expect("store exists");
    let recorded =
        engine::store::script_state::recorded(&engine::store::ReadTxnSource::begin(&h).unwrap())
            .unwrap()
            .unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].hash.as_deref(), Some(h3.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_script_stops_and_a_new_one_starts() {
    let (a, w) = (script("a", "v1"), script("w", "v1"));
    let s = Server::start(&[("a.rhai", &a), ("w.rhai", &w)], &[]).await;
    let (ha, hw) = (s.hash_of("a.rhai", &a), s.hash_of("w.rhai", &w));
    assert_eq!(
        s.run_event().await,
        vec![row("a", "a v1", &ha), row("w", "w v1", &hw)]
    );

    let t0 = Instant::now();
    std::fs::remove_file(s.path("a.rhai")).unwrap();
    let gone = s
        .wait(Duration::from_secs(10), "a to be unloaded", |s| {
            s.live_hash("a").is_none()
        })
        .await;
    eprintln!("reload latency (delete): {gone:?}");
    assert!(t0.elapsed() < LIVE_WITHIN);
    assert!(s.states.get("a").is_none());
    // `w` runs, `a` does not (runs of one event are created together).
    assert_eq!(s.run_event().await, vec![row("w", "w v1", &hw)]);

    let b = script("b", "v1");
    let t0 = Instant::now();
    s.write("b.rhai", &b);
    let latency = s.wait_live("b.rhai", &b, t0).await;
    eprintln!("reload latency (new file): {latency:?}");
    assert!(latency < LIVE_WITHIN);
    let hb = s.hash_of("b.rhai", &b);
    assert_eq!(
        s.run_event().await,
        vec![row("b", "b v1", &hb), row("w", "w v1", &hw)]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stdlib_edit_reaches_the_scripts_that_import_it() {
    let module = |v: &str| format!("fn tag() {{ \"lib {v}\" }}\n");
    let c = "//! on: user.lifecycle.*\nimport \"tags\" as t;\nlog(\"c \" + t::tag());\n";
    let d = script("d", "v1");
    let s = Server::start(
        &[("c.rhai", c), ("d.rhai", &d)],
        &[("tags.rhai", &module("v1"))],
    )
    .await;
    let hd = s.hash_of("d.rhai", &d);
    let hc1 = s.hash_of("c.rhai", c);
    assert_eq!(
        s.run_event().await,
        vec![row("c", "c lib v1", &hc1), row("d", "d v1", &hd)]
    );

    let lib = s.config.stdlib_dir.clone();
    let t0 = Instant::now();
    s.save_by_rename(&lib, "tags.rhai", &module("v2"));
    let latency = s.wait_live("c.rhai", c, t0).await;
    eprintln!("reload latency (stdlib edit): {latency:?}");
    assert!(latency < LIVE_WITHIN);
    let hc2 = s.hash_of("c.rhai", c);
    assert_ne!(hc1, hc2, "the hash covers the imported module");
    assert_eq!(
        s.run_event().await,
        vec![row("c", "c lib v2", &hc2), row("d", "d v1", &hd)]
    );

    // A broken module: the scripts importing it keep their last working version.
    std::fs::write(lib.join("tags.rhai"), "fn tag() { \"lib v3\" \n").unwrap();
    s.wait(Duration::from_secs(10), "the module error", |s| {
        s.states
            .get("c")
            .is_some_and(|st| st.status == ScriptStatus::Error)
    })
    .await;
    let error = s.states.get("c").unwrap().last_error.unwrap_or_default();
    assert!(
        error.contains("tags.rhai:"),
        "the module's position in {error}"
    );
    assert_eq!(s.states.get("d").unwrap().status, ScriptStatus::Ok);
    assert_eq!(
        s.run_event().await,
        vec![row("c", "c lib v2", &hc2), row("d", "d v1", &hd)]
    );

    std::fs::write(lib.join("tags.rhai"), module("v4")).unwrap();
    let t0 = Instant::now();
    s.wait_live("c.rhai", c, t0).await;
    let hc4 = s.hash_of("c.rhai", c);
    assert_eq!(
        s.run_event().await,
        vec![row("c", "c lib v4", &hc4), row("d", "d v1", &hd)]
    );
    s.stop().await;
}

/// Regression (defect 2 of "Hardening"): a stdlib module edited into an import cycle
/// overflowed the reload thread's stack and aborted the server within 2 s; a restart with the
/// files in place aborted too. Now the cycle is a load error: the scripts importing the module
/// keep their previous version, the others are untouched, and a start with the cycle in place
/// runs without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stdlib_edit_into_an_import_cycle_keeps_the_previous_version_live() {
    let c = "//! on: user.lifecycle.*\nimport \"okta\" as okta;\nimport \"tags\" as t;\nlog(\"c \" + t::tag());\n";
    let d = script("d", "v1");
    let tags = "fn tag() { \"lib v1\" }\n";
    let okta = "fn target_user(e) { () }\n";
    let s = Server::start(
        &[("c.rhai", c), ("d.rhai", &d)],
        &[("tags.rhai", tags), ("okta.rhai", okta)],
    )
    .await;
    let (hc, hd) = (s.hash_of("c.rhai", c), s.hash_of("d.rhai", &d));
    let before = vec![row("c", "c lib v1", &hc), row("d", "d v1", &hd)];
    assert_eq!(s.run_event().await, before);

    let lib = s.config.stdlib_dir.clone();
    for (module, text, cycle) in [
        (
            "tags.rhai",
            "import \"tags\" as again;\nfn tag() { \"lib v2\" }\n",
            "import cycle: tags -> tags",
        ),
        (
            "okta.rhai",
            "import \"okta\" as okta;\nfn target_user(e) { () }\n",
            "import cycle: okta -> okta",
        ),
    ] {
        let passes = s.states.passes();
        let original = std::fs::read_to_string(lib.join(module)).unwrap();
        std::fs::write(lib.join(module), text).unwrap();
        s.wait(Duration::from_secs(10), "the cycle to be reported", |s| {
            s.states.passes() > passes
                && s.states.get("c").is_some_and(|st| {
                    st.status == ScriptStatus::Error
                        && st.last_error.as_deref().is_some_and(|e| e.contains(cycle))
                })
        })
        .await;
        let st = s.states.get("c").unwrap();
        assert_eq!(
            st.hash.as_deref(),
            Some(hc.as_str()),
            "the old version stays live"
        );
        assert_eq!(s.states.get("d").unwrap().status, ScriptStatus::Ok);
        assert_eq!(s.run_event().await, before, "the server runs on");
        std::fs::write(lib.join(module), original).unwrap();
        s.wait(Duration::from_secs(10), "the fix", |s| {
            s.states
                .get("c")
                .is_some_and(|st| st.status == ScriptStatus::Ok)
        })
        .await;
    }
    let _dir = s.stop().await;

    // A start with the cycle in place: `c` is not loaded (its runs fail with the load error,
    // to be replayed once it is fixed), `d` runs.
    let cyclic = "import \"tags\" as again;\nfn tag() { \"lib v2\" }\n";
    let s = Server::start(
        &[("c.rhai", c), ("d.rhai", &d)],
        &[("tags.rhai", cyclic), ("okta.rhai", okta)],
    )
    .await;
    let st = s.states.get("c").expect("c has a state");
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("import cycle: tags -> tags")),
        "{st:?}"
    );
    let uuid = s.deliver().await;
    let mut runs = s.finished_runs(&uuid).await;
    runs.sort_by(|a, b| a.script.cmp(&b.script));
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].script, "c");
    assert_eq!(runs[0].status, RunStatus::Failed);
    let e = runs[0].error.as_ref().expect("c's load error");
    assert_eq!(e.kind, engine::script::RunErrorKind::Load);
    assert!(e.message.contains("import cycle: tags -> tags"), "{e}");
    assert_eq!(runs[1].script, "d");
    assert_eq!(runs[1].status, RunStatus::Succeeded);
    assert_eq!(runs[1].log[0].message, "d v1");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_rapid_saves_end_in_the_last_one() {
    let s = Server::start(&[("a.rhai", &script("a", "v0"))], &[]).await;
    let dir = s.config.scripts_dir.clone();
    let mut last = String::new();
    let t0 = Instant::now();
    for i in 1..=100 {
        last = script("a", &format!("v{i}"));
        match i % 3 {
            0 => s.save_by_rename(&dir, "a.rhai", &last),
            1 => s.write("a.rhai", &last),
            // A broken save in the middle of the storm.
            _ => s.write("a.rhai", "//! on: user.lifecycle.*\nlog(\"a \" +);\n"),
        }
    }
    // The last save (i = 100) is a valid in-place write.
    let saves = t0.elapsed();
    let t1 = Instant::now();
    let latency = s.wait_live("a.rhai", &last, t1).await;
    eprintln!("100 saves in {saves:?}; the last live {latency:?} after it");
    assert!(latency < LIVE_WITHIN);
    // Quiet for a while: no late reload of an older version takes over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let h = s.hash_of("a.rhai", &last);
    assert_eq!(s.live_hash("a").as_deref(), Some(h.as_str()));
    let st = s.states.get("a").unwrap();
    assert_eq!(
        (st.status, st.hash.as_deref()),
        (ScriptStatus::Ok, Some(h.as_str()))
    );
    assert_eq!(s.run_event().await, vec![row("a", "a v100", &h)]);
    s.wait(
        Duration::from_secs(5),
        "the final state to be recorded",
        |s| s.recorded() == s.states.snapshot(),
    )
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_concurrent_deliveries_fail_no_request_and_lose_no_event() {
    const CLIENTS: usize = 4;
    const EVENTS_PER_DELIVERY: usize = 2;
    const SAVES: usize = 30;
    /// Slower than the watcher's settle time, so most saves become a reload of their own.
    const SAVE_EVERY: Duration = Duration::from_millis(60);
    let start = [("a.rhai", script("a", "v0")), ("w.rhai", script("w", "v0"))];
    let start: Vec<(&str, &str)> = start.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let s = Arc::new(Server::start(&start, &[]).await);
    let mut hashes = std::collections::HashMap::new();
    for i in 0..=SAVES {
        let v = format!("v{i}");
        hashes.insert(format!("a {v}"), s.hash_of("a.rhai", &script("a", &v)));
    }
    let editing = Arc::new(std::sync::atomic::AtomicBool::new(true));

    let editor = {
        let (s, editing) = (s.clone(), editing.clone());
        tokio::spawn(async move {
            let dir = s.config.scripts_dir.clone();
            for i in 1..=SAVES {
                let text = script("a", &format!("v{i}"));
                match i % 4 {
                    // Broken saves in between: the previous version keeps running.
                    0 => s.write("a.rhai", "//! on: user.lifecycle.*\nlog(\"a\" +;\n"),
                    1 => s.write("a.rhai", &text),
                    _ => s.save_by_rename(&dir, "a.rhai", &text),
                }
                tokio::time::sleep(SAVE_EVERY).await;
            }
            s.write("a.rhai", &script("a", &format!("v{SAVES}")));
            tokio::time::sleep(Duration::from_millis(300)).await;
            editing.store(false, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (s, editing) = (s.clone(), editing.clone());
        clients.push(tokio::spawn(async move {
            let mut uuids = Vec::new();
            while editing.load(std::sync::atomic::Ordering::Relaxed) {
                let (body, u) = envelope(EVENTS_PER_DELIVERY);
                let a = post_with(&format!("{}/hooks/default", s.url), &s.secret, body).await;
                assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
                uuids.extend(u);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            uuids
        }));
    }
    editor.await.unwrap();
    let mut uuids = Vec::new();
    for c in clients {
        uuids.extend(c.await.unwrap());
    }

    // Every event ends with one finished run per script (read in one scan: hundreds of events).
    let mut by_event: std::collections::HashMap<String, Vec<RunRecord>> = Default::default();
    let t0 = Instant::now();
    loop {
        by_event.clear();
        for r in RunsView(s.store()).recent(usize::MAX, false).unwrap() {
            if matches!(r.status, RunStatus::Succeeded | RunStatus::Failed) {
                by_event.entry(r.event_uuid.clone()).or_default().push(r);
            }
        }
        if uuids
            .iter()
            .all(|u| by_event.get(u).is_some_and(|runs| runs.len() >= 2))
        {
            break;
        }
        assert!(
            t0.elapsed() < RUN_WITHIN,
            "runs not finished after {RUN_WITHIN:?}"
        );
        // A full scan of the runs table: not every few ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = t0.elapsed();
    let mut versions = std::collections::BTreeSet::new();
    for uuid in &uuids {
        let runs = &by_event[uuid];
        let mut scripts: Vec<&str> = runs.iter().map(|r| r.script.as_str()).collect();
        scripts.sort();
        assert_eq!(scripts, ["a", "w"], "one run per script for {uuid}");
        for r in runs {
            assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
            if r.script == "a" {
                // The version that ran is the version recorded.
                let line = &r.log[0].message;
                assert_eq!(r.script_hash.as_ref(), hashes.get(line), "{r:?}");
                versions.insert(line.clone());
            }
        }
    }
    eprintln!(
        "{} events delivered during {SAVES} saves, all run once per script ({drained:?} to drain), on {} versions of `a`",
        uuids.len(),
        versions.len()
    );
    assert!(uuids.len() >= 100, "only {} events delivered", uuids.len());
    assert!(
        versions.len() >= 5,
        "runs interleaved with reloads: {versions:?}"
    );
    let s = Arc::into_inner(s).expect("no other handle");
    s.stop().await;
}

#[tokio::test]
async fn engine_scripts_compiles_from_disk_when_no_server_ran() {
    let dir = temp_dir();
    let mut config = Config::defaults(dir.path());
    config.data_dir = dir.path().join("data");
    std::fs::create_dir_all(&config.scripts_dir).unwrap();
    std::fs::create_dir_all(&config.stdlib_dir).unwrap();
    std::fs::write(config.scripts_dir.join("ok.rhai"), script("ok", "v1")).unwrap();
    assert_eq!(
        engine::cli::history::scripts(&config, true),
        Ok(engine::cli::Exit::Ok)
    );
    std::fs::write(
        config.scripts_dir.join("bad.rhai"),
        "//! on: user.*\nlet = 1;\n",
    )
    .unwrap();
    let states = engine::reload::inspect(&engine::app::reload_settings(&config)).unwrap();
    let bad = states.iter().find(|s| s.script == "bad").unwrap();
    assert_eq!(bad.status, ScriptStatus::NotLoaded);
    assert!(
        bad.last_error
            .as_deref()
            .unwrap_or("")
            .contains("bad.rhai:2:"),
        "{bad:?}"
    );
    assert_eq!(
        engine::cli::history::scripts(&config, false),
        Ok(engine::cli::Exit::Failure)
    );
    let _ = &dir;
}
