//! The threads that run scripts: a pool of their own at the lowest CPU priority (Linux
//! `SCHED_IDLE`: they get a core only when nothing else wants it), so that the receiver's
//! answers to Okta (whose timeout is 3 s) keep the cores first while a backlog of runs is worked
//! off.

use std::cell::Cell;
use std::sync::OnceLock;

/// The nice value a script thread takes when it does not run at `SCHED_IDLE` (0 is the default;
/// 19 the lowest). At 10 a busy script thread gets about a tenth of a core's share against a
/// busy receiver thread, and all of the cores when the receiver is idle.
pub const SCRIPT_THREAD_NICE: i32 = 10;

/// The environment variable choosing the script threads' priority: `idle` (the default:
/// `SCHED_IDLE`) or `nice` (nice [`SCRIPT_THREAD_NICE`]: for a host where idle threads would
/// starve for long, e.g. a container pinned at 100 % by another process).
pub const SCRIPT_PRIORITY_ENV: &str = "ENGINE_SCRIPT_PRIORITY";

/// Script threads the pool may hold at once: a run may wait in a lookup, so the pool grows with
/// the runs in flight (bounded upstream by the run scheduler's permits), like tokio's blocking pool.
const MAX_SCRIPT_THREADS: usize = 512;

thread_local! {
    static LOWERED: Cell<bool> = const { Cell::new(false) };
}

/// How script threads are lowered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptPriority {
    Idle,
    Nice,
}

/// The priority [`SCRIPT_PRIORITY_ENV`] asks for (unknown values: the default).
pub fn script_priority() -> ScriptPriority {
    match std::env::var(SCRIPT_PRIORITY_ENV).as_deref() {
        Ok("nice") => ScriptPriority::Nice,
        _ => ScriptPriority::Idle,
    }
}

/// Runs `f` on a script thread: one of a pool used for nothing else (so its low priority never
/// reaches other blocking work), lowered on first use. Await the handle from any runtime.
pub fn spawn_script<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let job = move || {
        lower_for_scripts();
        f()
    };
    match script_runtime() {
        Some(rt) => rt.spawn_blocking(job),
        // The pool could not be made (no threads left): the caller's runtime, as before.
        None => tokio::task::spawn_blocking(job),
    }
}

/// The runtime whose blocking threads are the script threads (made once, never dropped).
fn script_runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(MAX_SCRIPT_THREADS)
            .thread_name("engine-script")
            .build()
            .map_err(|error| tracing::warn!(%error, "no script thread pool; scripts run on the shared one"))
            .ok()
    })
    .as_ref()
}

/// Lowers the calling thread's priority (never raises it), once per thread (a pooled thread
/// keeps it): `SCHED_IDLE`, or nice [`SCRIPT_THREAD_NICE`] (see [`SCRIPT_PRIORITY_ENV`], and
/// the fallback when `SCHED_IDLE` is refused). Linux only; elsewhere this does nothing.
pub fn lower_for_scripts() {
    if LOWERED.with(|l| l.replace(true)) {
        return;
    }
    if script_priority() == ScriptPriority::Idle && set_idle() {
        return;
    }
    set_nice();
}

#[cfg(target_os = "linux")]
fn set_idle() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for SCHED_IDLE
    // (priority 0). Lowering to SCHED_IDLE needs no privilege; a failure changes nothing.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn set_idle() -> bool {
    false
}

#[cfg(target_os = "linux")]
fn set_nice() {
    // SAFETY: getpriority/setpriority with who = 0 read and change only the calling thread on
    // Linux and take no pointers. A failure (not permitted) leaves the priority as it was, which
    // is harmless. A thread already nicer (the engine started under `nice`) is left as it is:
    // this only ever lowers.
    unsafe {
        let now = libc::getpriority(libc::PRIO_PROCESS, 0);
        if now < SCRIPT_THREAD_NICE {
            let _ = libc::setpriority(libc::PRIO_PROCESS, 0, SCRIPT_THREAD_NICE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn set_nice() {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        // SAFETY: no pointers; who = 0 is the calling thread.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    fn policy_of_this_thread() -> i32 {
        // SAFETY: no pointers; pid 0 is the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn the_nice_fallback_lowers_only_the_calling_thread() {
        let (before, after) = std::thread::spawn(|| {
            let before = nice_of_this_thread();
            set_nice();
            set_nice();
            (before, nice_of_this_thread())
        })
        .join()
        .expect("thread");
        assert_eq!(
            after,
            before.max(SCRIPT_THREAD_NICE),
            "lowered to the script nice value, never raised"
        );
        let other = std::thread::spawn(nice_of_this_thread)
            .join()
            .expect("thread");
        assert_eq!(other, before, "only the calling thread is lowered");
    }

    #[tokio::test]
    async fn scripts_run_at_sched_idle_on_threads_of_their_own() {
        if script_priority() != ScriptPriority::Idle {
            return; // ENGINE_SCRIPT_PRIORITY=nice in this environment
        }
        let (policy, name) = spawn_script(|| {
            (
                policy_of_this_thread(),
                std::thread::current().name().map(str::to_string),
            )
        })
        .await
        .expect("script thread");
        assert_eq!(policy, libc::SCHED_IDLE);
        assert_eq!(name.as_deref(), Some("engine-script"));
        // Other blocking work keeps the normal policy, whatever ran before it.
        let other = tokio::task::spawn_blocking(policy_of_this_thread)
            .await
            .expect("thread");
        assert_eq!(other, libc::SCHED_OTHER);
    }
}
