//! Hot reload: watches `scripts_dir` and `stdlib_dir`, recompiles from disk after every change
//! (the startup code path, `ScriptSet::load` + `keep_previous`), publishes the new set in one
//! atomic swap, and keeps the per-script state that `engine scripts` and `/metrics` show
//! (`states`), recording it in the store after each reload.
//!
//! Invariant: a reload never unpublishes a working script because of a broken edit. A script
//! whose file no longer compiles keeps its previous version live; only a deleted file stops.
//! Every reload reads the directories afresh, so whatever the order and grouping of file events
//! (editors rename, write in parts, touch swap files), the pass after the last event sees the
//! last save.

//!
//! # Layout
//!
//! - this module: [`Reloader`] (one reload pass) and [`run`] (the watcher task).
//! - `states`: [`ScriptStates`], what each reload did to each script.

mod states;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::{mpsc, watch};

pub use states::{Reason, ScriptStates};

use crate::script::{Limits, LiveScripts, LoadError, ScriptSet};
use crate::store::Store;
use crate::store::script_state::{self, ScriptState};

/// The debouncer's window: an event is handed on once it is this old, with the other events
/// for the same file merged into it. Short, because the spec promises a save is live within 1 s.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// How often the debouncer looks for events older than [`DEBOUNCE`] (adds at most this much).
const DEBOUNCE_TICK: Duration = Duration::from_millis(25);
/// After a relevant event, wait until the directories have been quiet this long, so one save
/// (temp file, rename, swap file, backup) or a burst of saves makes one reload, not several.
pub const SETTLE: Duration = Duration::from_millis(50);
/// A writer that never pauses still gets reloaded this often (each reload reads the disk anew,
/// so a later event always triggers a later, complete reload).
pub const MAX_SETTLE: Duration = Duration::from_millis(400);
/// A directory that could not be watched (missing, or deleted and recreated) is tried again
/// this often.
pub const WATCH_RETRY: Duration = Duration::from_secs(2);

/// What reloading is built from (the app derives it from the config).
#[derive(Debug, Clone)]
pub struct Settings {
    pub scripts_dir: PathBuf,
    pub stdlib_dir: PathBuf,
    pub limits: Limits,
}

/// Recompiles the scripts from disk and publishes them.
pub struct Reloader {
    scripts_dir: PathBuf,
    stdlib_dir: PathBuf,
    limits: Limits,
    live: LiveScripts,
    states: Arc<ScriptStates>,
    /// One reload at a time: each publishes a set built from the one it replaces.
    lock: Mutex<()>,
}

impl Reloader {
    pub fn new(settings: Settings, live: LiveScripts) -> Reloader {
        Reloader {
            scripts_dir: settings.scripts_dir,
            stdlib_dir: settings.stdlib_dir,
            limits: settings.limits,
            live,
            states: Arc::new(ScriptStates::default()),
            lock: Mutex::new(()),
        }
    }

    pub fn states(&self) -> &Arc<ScriptStates> {
        &self.states
    }

    /// The live script set this reloader publishes to.
    pub fn live(&self) -> &LiveScripts {
        &self.live
    }

    /// Loads every script as startup does, keeps the previous version of each script that no
    /// longer compiles, and publishes the result in one swap. Blocking (reads and compiles).
    pub fn reload(&self, reason: Reason) {
        let _one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let (mut set, errors) = ScriptSet::load(&self.scripts_dir, &self.stdlib_dir, &self.limits);
        if let Some(e) = errors.iter().find(|e| e.script == self.scripts_dir) {
            // The directory itself is unreadable (deleted, renamed, permissions): that is not
            // an edit of any script, so nothing is unpublished.
            tracing::error!(dir = %self.scripts_dir.display(), error = %e, reason = reason.as_str(), "cannot read the scripts directory; the loaded scripts stay live");
            return;
        }
        let previous = self.live.load_full();
        set.keep_previous(&previous, &errors);
        let set = Arc::new(set);
        self.live.store(set.clone());
        self.states.update(&set, &errors, reason);
        tracing::debug!(
            reason = reason.as_str(),
            scripts = set.scripts().len(),
            failing = errors.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "scripts reloaded from disk"
        );
    }
}

/// A watched directory.
struct Root {
    path: PathBuf,
    /// The same directory as the OS names it (event paths may use either form).
    canonical: Option<PathBuf>,
    /// Scripts are the files directly in their directory; stdlib modules may sit in subfolders.
    mode: RecursiveMode,
    watched: bool,
}

impl Root {
    fn new(path: &Path, mode: RecursiveMode) -> Root {
        Root {
            path: path.to_path_buf(),
            canonical: path.canonicalize().ok(),
            mode,
            watched: false,
        }
    }

    fn is_root(&self, p: &Path) -> bool {
        p == self.path || self.canonical.as_deref() == Some(p)
    }

    /// The part of `p` below this directory, if `p` is inside it.
    fn relative<'a>(&self, p: &'a Path) -> Option<&'a Path> {
        p.strip_prefix(&self.path).ok().or_else(|| {
            self.canonical
                .as_deref()
                .and_then(|c| p.strip_prefix(c).ok())
        })
    }

    /// Whether a change at `p` can change what this directory contributes: a `*.rhai` file
    /// (not hidden: editors' lock files), the directory itself, or (for the stdlib) a folder.
    /// Swap, backup and temp files (`.x.rhai.swp`, `x.rhai~`, `x.rhai.tmp`) are not.
    fn concerns(&self, p: &Path) -> bool {
        if self.is_root(p) {
            return true;
        }
        let Some(rel) = self.relative(p) else {
            return false;
        };
        let hidden = rel
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
        if hidden {
            return false;
        }
        let direct = rel.components().count() == 1;
        match p.extension() {
            Some(x) if x == "rhai" => direct || self.mode == RecursiveMode::Recursive,
            // A folder of modules renamed or removed as a whole.
            None => self.mode == RecursiveMode::Recursive,
            Some(_) => false,
        }
    }
}

/// Whether an event may change what a reload would load. Our own reads produce `Access`
/// events: reacting to them would reload forever.
fn relevant(event: &notify::Event, roots: &[Root]) -> bool {
    if event.need_rescan() {
        return true;
    }
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => return false,
        EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Any
        | EventKind::Other => {}
    }
    event
        .paths
        .iter()
        .any(|p| roots.iter().any(|r| r.concerns(p)))
}

/// The directories to watch: scripts (their own folder) and the stdlib (with subfolders).
fn roots(reloader: &Reloader) -> Vec<Root> {
    let mut roots = vec![Root::new(
        &reloader.scripts_dir,
        RecursiveMode::NonRecursive,
    )];
    let same = reloader.stdlib_dir == reloader.scripts_dir
        || (roots[0].canonical.is_some()
            && reloader.stdlib_dir.canonicalize().ok() == roots[0].canonical);
    if same {
        roots[0].mode = RecursiveMode::Recursive;
    } else {
        roots.push(Root::new(&reloader.stdlib_dir, RecursiveMode::Recursive));
    }
    roots
}

type Debouncer = notify_debouncer_full::Debouncer<
    notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// Watches every root not watched yet. Returns whether one was added.
fn watch_missing(debouncer: &mut Debouncer, roots: &mut [Root]) -> bool {
    let mut added = false;
    for root in roots.iter_mut().filter(|r| !r.watched) {
        if !root.path.is_dir() {
            continue;
        }
        match debouncer.watch(&root.path, root.mode) {
            Ok(()) => {
                root.watched = true;
                root.canonical = root.path.canonicalize().ok();
                added = true;
                tracing::info!(dir = %root.path.display(), "watching for script changes");
            }
            Err(error) => {
                tracing::warn!(dir = %root.path.display(), %error, "cannot watch directory; retrying")
            }
        }
    }
    added
}

/// Marks roots whose directory was removed or renamed away (their watch is gone with them).
fn note_lost_roots(event: &notify::Event, debouncer: &mut Debouncer, roots: &mut [Root]) {
    let gone = matches!(
        event.kind,
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
    );
    if !gone {
        return;
    }
    for root in roots.iter_mut() {
        if root.watched && event.paths.iter().any(|p| root.is_root(p)) && !root.path.is_dir() {
            let _ = debouncer.unwatch(&root.path);
            root.watched = false;
            tracing::warn!(dir = %root.path.display(), "watched directory is gone; the loaded scripts stay live until it is back");
        }
    }
}

/// The hot-reload task: watches the directories and reloads after changes until `shutdown`
/// turns true. Runs beside the processor (see `app`).
pub async fn run(reloader: Arc<Reloader>, store: Arc<Store>, mut shutdown: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<DebounceEventResult>();
    let debouncer = new_debouncer(
        DEBOUNCE,
        Some(DEBOUNCE_TICK),
        move |r: DebounceEventResult| {
            let _ = tx.send(r);
        },
    );
    let mut debouncer = match debouncer {
        Ok(d) => Some(d),
        Err(error) => {
            tracing::error!(%error, "cannot start the file watcher; scripts will not hot-reload");
            None
        }
    };
    let mut roots = roots(&reloader);
    if let Some(d) = debouncer.as_mut() {
        watch_missing(d, &mut roots);
    }
    // Watch first, then load: a save during startup is seen by one or the other.
    reload(&reloader, &store, Reason::Startup).await;
    let mut retry = tokio::time::interval(WATCH_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    retry.tick().await;
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            msg = rx.recv() => {
                let Some(first) = msg else { break };
                let Some(d) = debouncer.as_mut() else { continue };
                if !absorb(first, d, &mut roots) {
                    continue;
                }
                // Let the save (or burst of saves) finish, then reload once.
                let deadline = tokio::time::Instant::now() + MAX_SETTLE;
                loop {
                    let wait = SETTLE.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                    match tokio::time::timeout(wait, rx.recv()).await {
                        Ok(Some(more)) => { absorb(more, d, &mut roots); }
                        Ok(None) | Err(_) => break,
                    }
                }
                reload(&reloader, &store, Reason::Change).await;
            }
            _ = retry.tick() => {
                if let Some(d) = debouncer.as_mut() && watch_missing(d, &mut roots) {
                    reload(&reloader, &store, Reason::Rewatch).await;
                }
            }
        }
    }
    if let Some(d) = debouncer {
        d.stop_nonblocking();
    }
}

/// Takes in one batch from the debouncer; returns whether it calls for a reload.
fn absorb(batch: DebounceEventResult, debouncer: &mut Debouncer, roots: &mut [Root]) -> bool {
    match batch {
        Ok(events) => {
            let mut any = false;
            for e in &events {
                note_lost_roots(e, debouncer, roots);
                if relevant(e, roots) {
                    tracing::trace!(kind = ?e.kind, paths = ?e.paths, "script change");
                    any = true;
                }
            }
            any
        }
        Err(errors) => {
            for error in &errors {
                tracing::warn!(%error, "file watcher error");
            }
            // A lost event (queue overflow) must not leave a stale script live.
            true
        }
    }
}

async fn reload(reloader: &Arc<Reloader>, store: &Arc<Store>, reason: Reason) {
    let r = reloader.clone();
    if let Err(error) = tokio::task::spawn_blocking(move || r.reload(reason)).await {
        tracing::error!(%error, "script reload crashed; the loaded scripts stay live");
        return;
    }
    let rows = reloader.states().snapshot();
    if let Err(error) = store.write(move |txn| script_state::save(txn, &rows)).await {
        tracing::warn!(%error, "cannot record the script state for `engine scripts`");
    }
}

/// The state of every script without a server: compiled from disk now.
pub fn inspect(settings: &Settings) -> Result<Vec<ScriptState>, Box<LoadError>> {
    let (set, errors) = ScriptSet::load(
        &settings.scripts_dir,
        &settings.stdlib_dir,
        &settings.limits,
    );
    if let Some(e) = errors.iter().find(|e| e.script == settings.scripts_dir) {
        return Err(Box::new(e.clone()));
    }
    let states = ScriptStates::default();
    states.update(&set, &errors, Reason::Inspect);
    Ok(states.snapshot())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::script_state::ScriptStatus;
    use notify::event::{CreateKind, DataChange, RenameMode};

    fn ev(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut e = notify::Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    fn test_roots() -> Vec<Root> {
        vec![
            Root::new(Path::new("/nonexistent/s"), RecursiveMode::NonRecursive),
            Root::new(Path::new("/nonexistent/lib"), RecursiveMode::Recursive),
        ]
    }

    #[test]
    fn editor_files_are_ignored_and_saves_are_not() {
        let r = test_roots();
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert!(relevant(&ev(write, &["/nonexistent/s/a.rhai"]), &r));
        assert!(!relevant(&ev(write, &["/nonexistent/s/.a.rhai.swp"]), &r));
        assert!(!relevant(&ev(write, &["/nonexistent/s/a.rhai~"]), &r));
        assert!(!relevant(&ev(write, &["/nonexistent/s/4913"]), &r));
        assert!(!relevant(&ev(write, &["/nonexistent/s/sub/a.rhai"]), &r));
        assert!(!relevant(&ev(write, &["/nonexistent/other/a.rhai"]), &r));
        assert!(relevant(&ev(write, &["/nonexistent/lib/sub/m.rhai"]), &r));
        // Write-then-rename: the temp name does not matter, the target does.
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(relevant(
            &ev(
                rename,
                &["/nonexistent/s/.a.rhai.tmp", "/nonexistent/s/a.rhai"]
            ),
            &r
        ));
        assert!(relevant(
            &ev(
                EventKind::Create(CreateKind::File),
                &["/nonexistent/s/b.rhai"]
            ),
            &r
        ));
    }

    #[test]
    fn our_own_reads_do_not_trigger_reloads() {
        let r = test_roots();
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        assert!(!relevant(&ev(open, &["/nonexistent/s/a.rhai"]), &r));
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(relevant(&ev(closed, &["/nonexistent/s/a.rhai"]), &r));
        let chmod = EventKind::Modify(ModifyKind::Metadata(notify::event::MetadataKind::Any));
        assert!(!relevant(&ev(chmod, &["/nonexistent/s/a.rhai"]), &r));
    }

    #[test]
    fn a_broken_edit_keeps_the_previous_version_and_a_fix_replaces_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let scripts = dir.path().join("scripts");
        let lib = dir.path().join("stdlib");
        std::fs::create_dir_all(&scripts).expect("mkdir");
        std::fs::create_dir_all(&lib).expect("mkdir");
        let settings = Settings {
            scripts_dir: scripts.clone(),
            stdlib_dir: lib,
            limits: Limits::default(),
        };
        let file = scripts.join("a.rhai");
        std::fs::write(&file, "//! on: user.*\nlog(\"v1\");\n").expect("write");
        let live: LiveScripts = Arc::new(arc_swap::ArcSwap::from_pointee(ScriptSet::empty()));
        let r = Reloader::new(settings, live.clone());
        r.reload(Reason::Change);
        let v1 = live.load().get("a").expect("loaded").hash.clone();
        assert_eq!(r.states().get("a").expect("state").status, ScriptStatus::Ok);

        std::fs::write(&file, "//! on: user.*\nlog(\"v2\"\n").expect("write");
        r.reload(Reason::Change);
        assert_eq!(live.load().get("a").expect("kept").hash, v1);
        let st = r.states().get("a").expect("state");
        assert_eq!(st.status, ScriptStatus::Error);
        assert_eq!(st.hash.as_deref(), Some(v1.as_str()));
        assert!(
            st.last_error.as_deref().unwrap_or("").contains("a.rhai:3:"),
            "{st:?}"
        );
        assert_eq!(r.states().load_errors_total(), 1);

        std::fs::write(&file, "//! on: user.*\nlog(\"v3\");\n").expect("write");
        r.reload(Reason::Change);
        let v3 = live.load().get("a").expect("loaded").hash.clone();
        assert_ne!(v3, v1);
        let st = r.states().get("a").expect("state");
        assert_eq!((st.status, st.last_error), (ScriptStatus::Ok, None));
        assert_eq!(r.states().reloads_total(), 2);

        std::fs::remove_file(&file).expect("rm");
        r.reload(Reason::Change);
        assert!(live.load().get("a").is_none());
        assert!(r.states().get("a").is_none());
    }
}
