//! The threads that run scripts: a pool of their own at the lowest CPU priority (Linux
//! `SCHED_IDLE`: they get a core only when nothing else wants it), so that the receiver's
//! answers to Okta (whose timeout is 3 s) keep the cores first while a backlog of runs is worked
//! off.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::Duration;

/// The nice value a script thread takes when it does not run at `SCHED_IDLE` (0 is the default;
/// 19 the lowest). At 10 a busy script thread gets about a tenth of a core's share against a
/// busy receiver thread, and all of the cores when the receiver is idle.
pub const SCRIPT_THREAD_NICE: i32 = 10;

/// The environment variable choosing the script threads' priority: `idle` (the default:
/// `SCHED_IDLE`) or `nice` (nice [`SCRIPT_THREAD_NICE`]: for a host where idle threads would
/// starve for long, e.g. a container pinned at 100 % by another process).
pub const SCRIPT_PRIORITY_ENV: &str = "ENGINE_SCRIPT_PRIORITY";

/// Script threads the pool may hold at once: a run may wait in a lookup, so the pool grows with
/// the runs in flight (bounded upstream by the run scheduler's permits). Past it, work waits for
/// a thread to come free.
const MAX_SCRIPT_THREADS: usize = 512;
/// An idle script thread ends after this long without work (tokio's blocking pool's default).
const SCRIPT_THREAD_KEEP_ALIVE: Duration = Duration::from_secs(10);

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
/// reaches other blocking work), lowered on first use. Await the handle from any runtime; a
/// panic in `f` ends the handle in [`ScriptPanicked`] and the thread goes on.
pub fn spawn_script<F, R>(f: F) -> ScriptHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    pool().spawn(f)
}

/// The result of [`spawn_script`], once `f` has returned (or panicked).
pub struct ScriptHandle<R>(tokio::sync::oneshot::Receiver<Result<R, ScriptPanicked>>);

impl<R> std::future::Future for ScriptHandle<R> {
    type Output = Result<R, ScriptPanicked>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(ScriptPanicked("its thread ended".into()))))
    }
}

/// A script thread's work panicked (with this message).
#[derive(Debug, Clone, thiserror::Error)]
#[error("panicked: {0}")]
pub struct ScriptPanicked(pub String);

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (
        payload.downcast_ref::<&str>(),
        payload.downcast_ref::<String>(),
    ) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".into(),
    }
}

/// A script thread's work: it runs `f` and returns how to hand over the result, which the
/// thread does only once it counts itself idle again (see [`Pool::work`]).
type Job = Box<dyn FnOnce() -> Handover + Send>;
type Handover = Box<dyn FnOnce() + Send>;

/// The script threads. Idle ones wait on one shared channel; [`Pool::idle`] counts those not
/// yet claimed, and whoever queues work claims one first (or starts a new thread), so work
/// never waits behind a long run while a thread could take it.
///
/// (tokio's blocking pool, used before, shares one mutex between every thread and every spawn:
/// with the threads at `SCHED_IDLE` its holder is often preempted, and a profile of the
/// pipeline bench put a fifth of the script threads' CPU in that lock.)
struct Pool {
    tx: crossbeam_channel::Sender<Job>,
    rx: crossbeam_channel::Receiver<Job>,
    /// Threads waiting for work that no one has claimed; below zero, work queued past
    /// [`MAX_SCRIPT_THREADS`] that waits for a thread to come free.
    idle: AtomicIsize,
    threads: AtomicUsize,
    /// [`MAX_SCRIPT_THREADS`] (smaller in tests).
    max_threads: usize,
    /// [`SCRIPT_THREAD_KEEP_ALIVE`] (shorter in tests).
    keep_alive: Duration,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::new(MAX_SCRIPT_THREADS, SCRIPT_THREAD_KEEP_ALIVE))
}

impl Pool {
    fn new(max_threads: usize, keep_alive: Duration) -> Pool {
        let (tx, rx) = crossbeam_channel::unbounded();
        Pool {
            tx,
            rx,
            idle: AtomicIsize::new(0),
            threads: AtomicUsize::new(0),
            max_threads,
            keep_alive,
        }
    }

    fn spawn<F, R>(&'static self, f: F) -> ScriptHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.run(Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .map_err(|payload| ScriptPanicked(panic_message(&*payload)));
            Box::new(move || {
                let _ = tx.send(result);
            })
        }));
        ScriptHandle(rx)
    }

    fn run(&'static self, job: Job) {
        if self.take_idle() {
            // The channel is never closed: the pool owns both ends.
            let _ = self.tx.send(job);
            return;
        }
        if self.threads.load(Ordering::Acquire) >= self.max_threads {
            // In debt: the next thread to come free takes it (it counts itself idle first).
            self.idle.fetch_sub(1, Ordering::AcqRel);
            let _ = self.tx.send(job);
            return;
        }
        self.threads.fetch_add(1, Ordering::AcqRel);
        let started = std::thread::Builder::new()
            .name("engine-script".into())
            .spawn(move || self.work());
        match started {
            // The new thread waits on the channel like any idle one; whichever waits takes it.
            Ok(_) => {
                let _ = self.tx.send(job);
            }
            Err(error) => {
                self.threads.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(%error, "cannot start a script thread; running it on a shared blocking thread");
                let work = move || job()();
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => drop(rt.spawn_blocking(work)),
                    Err(_) => work(),
                }
            }
        }
    }

    /// Takes one unclaimed idle count, if there is one: to hand a job to an idle thread, or for
    /// an idle thread to leave.
    fn take_idle(&self) -> bool {
        self.idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > 0).then(|| n - 1)
            })
            .is_ok()
    }

    /// A script thread's life: whatever work comes, until idle for its keep-alive.
    fn work(&self) {
        lower_for_scripts();
        while let Some(job) = self.next_job() {
            let handover = job();
            // Counted idle before the result is handed over: whoever it wakes (a tokio worker,
            // at a higher priority) may queue the next run at once, and finds this thread.
            self.idle.fetch_add(1, Ordering::AcqRel);
            handover();
        }
    }

    /// The next job, or `None` once idle for the keep-alive with no job on its way (every
    /// waiting thread stands for one unclaimed idle count or one job sent: one leaves only by
    /// taking back an unclaimed count).
    fn next_job(&self) -> Option<Job> {
        loop {
            match self.rx.recv_timeout(self.keep_alive) {
                Ok(job) => return Some(job),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if self.take_idle() {
                        self.threads.fetch_sub(1, Ordering::AcqRel);
                        return None;
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
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
    use std::sync::Arc;

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

    #[tokio::test]
    async fn a_panic_ends_its_handle_and_the_thread_goes_on() {
        let crashed = spawn_script(|| -> u32 { panic!("a bad host function") }).await;
        let error = crashed.expect_err("the panic is reported");
        assert_eq!(error.0, "a bad host function");
        assert_eq!(spawn_script(|| 7).await.expect("later work runs"), 7);
    }

    /// Regression guard for the pool's claim rule: work queued while every thread is busy gets
    /// a thread of its own, it does not wait behind a run that waits (in a lookup, a sleep).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_never_waits_behind_work_that_waits() {
        const AT_ONCE: usize = 24;
        for _round in 0..3 {
            let all_in = Arc::new(std::sync::Barrier::new(AT_ONCE));
            let handles: Vec<_> = (0..AT_ONCE)
                .map(|i| {
                    let all_in = all_in.clone();
                    // Each waits until all of them are running at once.
                    spawn_script(move || {
                        all_in.wait();
                        i
                    })
                })
                .collect();
            let joined = tokio::time::timeout(Duration::from_secs(20), async {
                let mut done = Vec::new();
                for h in handles {
                    done.push(h.await.expect("no panic"));
                }
                done
            })
            .await
            .expect("every job had a thread of its own at once");
            assert_eq!(joined, (0..AT_ONCE).collect::<Vec<_>>());
        }
    }

    /// A pool of its own for a test (leaked: its threads borrow it for good).
    fn test_pool(max_threads: usize, keep_alive: Duration) -> &'static Pool {
        Box::leak(Box::new(Pool::new(max_threads, keep_alive)))
    }

    /// Past its thread limit the pool queues work for the next thread to come free: none of it
    /// is lost or run twice, and the count of idle threads comes back even.
    #[tokio::test]
    async fn past_the_thread_limit_work_waits_for_a_free_thread() {
        let pool = test_pool(2, Duration::from_secs(10));
        let (gate_tx, gate_rx) = crossbeam_channel::unbounded::<()>();
        let held: Vec<_> = (0..2)
            .map(|_| {
                let gate = gate_rx.clone();
                pool.spawn(move || gate.recv().is_ok())
            })
            .collect();
        let ran = Arc::new(AtomicUsize::new(0));
        let queued: Vec<_> = (0..6)
            .map(|i| {
                let ran = ran.clone();
                pool.spawn(move || {
                    ran.fetch_add(1, Ordering::SeqCst);
                    i
                })
            })
            .collect();
        assert_eq!(
            pool.threads.load(Ordering::SeqCst),
            2,
            "no thread past the limit"
        );
        assert_eq!(ran.load(Ordering::SeqCst), 0, "both threads are held");
        assert_eq!(
            pool.idle.load(Ordering::SeqCst),
            -6,
            "six jobs wait for a thread"
        );
        gate_tx.send(()).unwrap();
        gate_tx.send(()).unwrap();
        // Generous: the threads are at SCHED_IDLE, behind every other test's threads.
        let all = tokio::time::timeout(Duration::from_secs(30), async {
            for h in held {
                assert!(h.await.unwrap());
            }
            let mut done = Vec::new();
            for h in queued {
                done.push(h.await.unwrap());
            }
            done
        })
        .await
        .expect("the queued work ran once the threads came free");
        assert_eq!(all, (0..6).collect::<Vec<_>>());
        assert_eq!(ran.load(Ordering::SeqCst), 6, "each ran once");
        // Both threads end up waiting, unclaimed.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while pool.idle.load(Ordering::SeqCst) != 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(pool.idle.load(Ordering::SeqCst), 2);
        assert_eq!(pool.threads.load(Ordering::SeqCst), 2);
    }

    /// Idle threads end after their keep-alive; work after that starts a new one.
    #[tokio::test]
    async fn idle_threads_end_after_their_keep_alive() {
        let pool = test_pool(8, Duration::from_millis(50));
        let all_in = Arc::new(std::sync::Barrier::new(3));
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let all_in = all_in.clone();
                pool.spawn(move || {
                    all_in.wait();
                })
            })
            .collect();
        // Three ran at once (the barrier), so three threads were started.
        for h in handles {
            h.await.unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while pool.threads.load(Ordering::SeqCst) != 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            pool.threads.load(Ordering::SeqCst),
            0,
            "every idle thread ended"
        );
        assert_eq!(pool.idle.load(Ordering::SeqCst), 0);
        assert_eq!(
            pool.spawn(|| 5).await.unwrap(),
            5,
            "a new thread takes new work"
        );
    }
}
