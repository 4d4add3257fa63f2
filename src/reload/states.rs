//! The per-script state of the live set (`engine scripts`, `/metrics`), updated by every reload:
//! which version is live, whether the file on disk compiles, since when.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::script::{LoadError, ScriptSet};
use crate::store::script_state::{ScriptState, ScriptStatus};
use crate::util::{format_ms, now_ms, prom};

#[derive(Default)]
struct StatesInner {
    states: BTreeMap<String, ScriptState>,
    /// script → sha256 of the failing file's bytes, so a second, different broken save with
    /// the same message is still reported.
    failing_sources: HashMap<String, String>,
}

/// The per-script state of the live set, updated by every reload.
#[derive(Default)]
pub struct ScriptStates {
    inner: Mutex<StatesInner>,
    passes: AtomicU64,
    reloads: AtomicU64,
    load_errors: AtomicU64,
}

/// Why a reload pass ran (a tracing field, and whether per-script lines are logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The first pass when the watcher starts: the scripts were just loaded and reported.
    Startup,
    /// A file changed in a watched directory.
    Change,
    /// A directory became watchable again (created, or recreated).
    Rewatch,
    /// `engine scripts` compiling from disk for display: nothing is logged or counted.
    Inspect,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Startup => "startup",
            Reason::Change => "change",
            Reason::Rewatch => "rewatch",
            Reason::Inspect => "inspect",
        }
    }
}

impl ScriptStates {
    /// Every script's state, by name.
    pub fn snapshot(&self) -> Vec<ScriptState> {
        self.lock().states.values().cloned().collect()
    }

    /// The state of one script.
    pub fn get(&self, script: &str) -> Option<ScriptState> {
        self.lock().states.get(script).cloned()
    }

    /// Reload passes run so far (the startup pass included).
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// Script versions that went live after startup (new, edited or fixed files).
    pub fn reloads_total(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// New failing versions seen (a script or a module it imports does not compile).
    pub fn load_errors_total(&self) -> u64 {
        self.load_errors.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatesInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the outcome of a load: `set` is what is now live, `errors` the files that failed.
    pub(crate) fn update(&self, set: &ScriptSet, errors: &[LoadError], reason: Reason) {
        let now = format_ms(now_ms());
        let log = reason != Reason::Inspect;
        let mut inner = self.lock();
        let old = std::mem::take(&mut inner.states);
        let mut failing_sources = HashMap::new();
        let mut next = BTreeMap::new();
        let failing: BTreeMap<String, &LoadError> =
            errors.iter().map(|e| (script_name(&e.script), e)).collect();

        for s in set.scripts() {
            if failing.contains_key(&s.name) {
                continue;
            }
            let prev = old.get(&s.name);
            let went_live = prev.and_then(|p| p.hash.as_deref()) != Some(s.hash.as_str());
            let was_failing = prev.is_some_and(|p| p.last_error.is_some());
            if went_live && log {
                if reason == Reason::Startup {
                    tracing::debug!(script = %s.name, hash = %s.hash, file = %s.path.display(), "script live");
                } else {
                    self.reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        script = %s.name,
                        hash = %s.hash,
                        previous_hash = prev.and_then(|p| p.hash.as_deref()).unwrap_or(""),
                        file = %s.path.display(),
                        result = "ok",
                        reason = reason.as_str(),
                        "script reloaded"
                    );
                }
            } else if was_failing && log {
                tracing::info!(script = %s.name, hash = %s.hash, result = "ok", reason = reason.as_str(), "script compiles again (same version as the live one)");
            }
            next.insert(
                s.name.clone(),
                ScriptState {
                    script: s.name.clone(),
                    file: s.path.display().to_string(),
                    status: ScriptStatus::Ok,
                    hash: Some(s.hash.clone()),
                    loaded_at: match prev {
                        Some(p) if !went_live => p.loaded_at.clone(),
                        _ if reason == Reason::Inspect => None,
                        _ => Some(now.clone()),
                    },
                    last_error: None,
                    error_at: None,
                    checked_at: now.clone(),
                },
            );
        }

        for (name, e) in failing {
            let prev = old.get(&name);
            let live = set.get(&name);
            let text = e.to_string();
            let source_hash = file_sha256(&e.script).unwrap_or_default();
            let new_error = prev.and_then(|p| p.last_error.as_deref()) != Some(text.as_str())
                || inner.failing_sources.get(&name) != Some(&source_hash);
            if new_error && reason == Reason::Startup {
                // `app::load_scripts` has just reported it.
                self.load_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(script = %name, error = %e, "script does not compile");
            } else if new_error && log {
                self.load_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    script = %name,
                    file = %e.file.display(),
                    line = e.line,
                    col = e.col,
                    source_hash = %source_hash,
                    live_hash = live.map(|s| s.hash.as_str()).unwrap_or(""),
                    result = "error",
                    reason = reason.as_str(),
                    error = %e,
                    "{}",
                    if live.is_some() {
                        "script does not compile; its previous version stays live"
                    } else {
                        "script does not compile; it is not loaded"
                    }
                );
            }
            failing_sources.insert(name.clone(), source_hash);
            next.insert(
                name.clone(),
                ScriptState {
                    script: name.clone(),
                    file: e.script.display().to_string(),
                    status: if live.is_some() {
                        ScriptStatus::Error
                    } else {
                        ScriptStatus::NotLoaded
                    },
                    hash: live.map(|s| s.hash.clone()),
                    loaded_at: match (live, prev) {
                        (Some(_), Some(p)) => p.loaded_at.clone(),
                        _ => None,
                    },
                    last_error: Some(text),
                    error_at: match prev {
                        Some(p) if !new_error => p.error_at.clone(),
                        _ => Some(now.clone()),
                    },
                    checked_at: now.clone(),
                },
            );
        }

        if log {
            for (name, p) in &old {
                if !next.contains_key(name) {
                    tracing::info!(script = %name, hash = p.hash.as_deref().unwrap_or(""), reason = reason.as_str(), "script removed (its file is gone)");
                }
            }
        }
        inner.states = next;
        inner.failing_sources = failing_sources;
        self.passes.fetch_add(1, Ordering::Relaxed);
    }
}

/// The stem of a script path: its name, as `Script.name` computes it.
fn script_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn file_sha256(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(hex::encode(Sha256::digest(&bytes)))
}

impl prom::MetricsSource for ScriptStates {
    /// The live version of each script, whether its file on disk compiles, and the reload and
    /// load-error counters.
    fn render_metrics(&self, out: &mut String) {
        let scripts = self.snapshot();
        prom::family(
            out,
            "engine_script_info",
            "gauge",
            "The live version of each script (hash as recorded on its runs).",
        );
        for s in &scripts {
            if let Some(hash) = &s.hash {
                prom::sample(
                    out,
                    "engine_script_info",
                    &[("script", &s.script), ("hash", hash)],
                    1,
                );
            }
        }
        prom::family(
            out,
            "engine_script_load_error",
            "gauge",
            "1 when the script's file does not compile (its previous version, if any, stays live).",
        );
        for s in &scripts {
            prom::sample(
                out,
                "engine_script_load_error",
                &[("script", &s.script)],
                u8::from(s.last_error.is_some()),
            );
        }
        for (name, help, v) in [
            (
                "engine_script_reloads_total",
                "Script versions that went live after startup (edited, new or fixed files).",
                self.reloads_total(),
            ),
            (
                "engine_script_load_errors_total",
                "Script versions that failed to compile (in the script or a stdlib module it imports).",
                self.load_errors_total(),
            ),
        ] {
            prom::single(out, name, "counter", help, v);
        }
    }
}
