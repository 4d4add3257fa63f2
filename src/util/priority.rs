//! Lower CPU priority for the threads that run scripts, so that the receiver's answers to Okta
//! (whose timeout is 3 s) keep the cores first while a backlog of runs is worked off.

use std::cell::Cell;

/// The nice value a script thread takes (0 is the default; 19 the lowest). At 10 a busy script
/// thread gets about a tenth of a core's share against a busy receiver thread, and all of the
/// cores when the receiver is idle.
pub const SCRIPT_THREAD_NICE: i32 = 10;

thread_local! {
    static LOWERED: Cell<bool> = const { Cell::new(false) };
}

/// Lowers the calling thread's priority to [`SCRIPT_THREAD_NICE`] (never raises it), once per thread (a pooled
/// thread keeps it). On Linux the nice value is per thread; elsewhere this does nothing.
pub fn lower_for_scripts() {
    if LOWERED.with(|l| l.replace(true)) {
        return;
    }
    set_nice();
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

    #[test]
    fn a_script_thread_runs_at_the_lower_priority_and_other_threads_do_not() {
        let (before, after) = std::thread::spawn(|| {
            let before = nice_of_this_thread();
            lower_for_scripts();
            lower_for_scripts();
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
}
