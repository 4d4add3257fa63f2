//! The threads that run scripts: a pool of their own at the lowest CPU priority (Linux
//! `SCHED_IDLE`: they get a core only when nothing else wants it), so that the receiver's
//! answers to Okta (whose timeout is 3 s) keep the cores first while a backlog of runs is worked
//! off. One job computes per core; work past that queues for the thread that finishes first, and
//! a job that waits says so ([`blocking`]) to give its place to that work.

use std::cell::{Cell, RefCell};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
/// thread does only once it has settled what it does next (see [`Pool::work`]).
type Job = Box<dyn FnOnce() -> Handover + Send>;
type Handover = Box<dyn FnOnce() + Send>;

/// How long a job may compute before work queued behind it gets a thread of its own (looked at
/// in [`checkpoint`], which a script run calls every few hundred operations). Nearly every run
/// ends well inside it (20–60 µs); one that computes longer stops holding up the queue.
const HANDOFF_AFTER: Duration = Duration::from_millis(10);

thread_local! {
    /// On a script thread: its pool, and whether its current job holds a compute slot.
    static WORKER: Cell<Option<(&'static Pool, bool)>> = const { Cell::new(None) };
    /// On a script thread: when its current job started.
    static JOB_STARTED: Cell<Option<Instant>> = const { Cell::new(None) };
    /// On a script thread: results of jobs it finished, not yet handed over.
    static HELD_BACK: RefCell<Vec<Handover>> = const { RefCell::new(Vec::new()) };
}

/// Most results a script thread holds back before handing them over (it hands them over anyway
/// once its queue is empty, before waiting in a job, and once a job computes past
/// [`HANDOFF_AFTER`]: never later than that).
const MAX_HELD_BACK: usize = 8;

/// Runs `f`, which waits (a lookup, an HTTP call, a sleep), as a script thread's work that does
/// not compute meanwhile: its compute slot goes to work queued behind it (started on another
/// thread), and is taken back once `f` returns. Anywhere but on a script thread it just runs `f`.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    let Some((pool, holding)) = WORKER.get() else {
        return f();
    };
    // Results held back must not wait for this.
    hand_over_held_back();
    if !holding {
        return f();
    }
    pool.give_up_slot();
    WORKER.set(Some((pool, false)));
    let result = f();
    pool.slots.fetch_add(1, Ordering::AcqRel);
    WORKER.set(Some((pool, true)));
    result
}

/// Called now and then by long work on a script thread (a script run, every few hundred
/// operations): once the job has run past [`HANDOFF_AFTER`], it hands over the results its
/// thread held back, and gives its compute slot to work queued behind it for the rest of the
/// job. Cheap when nothing waits.
pub fn checkpoint() {
    let Some((pool, holding)) = WORKER.get() else {
        return;
    };
    let queued = holding && pool.slots.load(Ordering::Acquire) >> QUEUED_SHIFT > 0;
    let held = HELD_BACK.with(|h| !h.borrow().is_empty());
    let long = || {
        JOB_STARTED
            .get()
            .is_some_and(|t| t.elapsed() >= HANDOFF_AFTER)
    };
    if !(queued || held) || !long() {
        return;
    }
    hand_over_held_back();
    if queued {
        pool.give_up_slot();
        WORKER.set(Some((pool, false)));
    }
}

/// Hands over the results this thread held back (see [`Pool::work`]).
fn hand_over_held_back() {
    let held = HELD_BACK.with(|h| std::mem::take(&mut *h.borrow_mut()));
    for handover in held {
        handover();
    }
}

/// [`Pool::slots`]: the low half counts compute slots held, the high half jobs queued for the
/// next slot to come free.
const QUEUED_SHIFT: u32 = 32;
const ONE_QUEUED: u64 = 1 << QUEUED_SHIFT;
const HELD_MASK: u64 = ONE_QUEUED - 1;

/// The script threads.
///
/// **Compute slots.** As many jobs compute at once as there are cores: past that, new work is
/// queued and a thread that finishes a job takes the next one at once, without sleeping and
/// being woken (on a 2-core VM each wake of a parked thread cost about as much as a short run).
/// A job that waits ([`blocking`]) or computes long ([`checkpoint`]) gives its slot to the
/// queue, so work never waits behind a run that waits or a long one.
///
/// **Threads.** Idle ones wait on one shared channel; [`Pool::idle`] counts those not yet
/// claimed, and whoever queues work with a slot free claims one first (or starts a new thread).
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
    /// Compute slots held and jobs queued for one (see [`QUEUED_SHIFT`]), in one word so that a
    /// job is never queued just as the last slot holder leaves without it.
    slots: AtomicU64,
    /// Compute slots: the cores (fewer in tests).
    compute_slots: u64,
    /// [`MAX_SCRIPT_THREADS`] (smaller in tests).
    max_threads: usize,
    /// [`SCRIPT_THREAD_KEEP_ALIVE`] (shorter in tests).
    keep_alive: Duration,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Pool::new(cores, MAX_SCRIPT_THREADS, SCRIPT_THREAD_KEEP_ALIVE)
    })
}

impl Pool {
    fn new(compute_slots: usize, max_threads: usize, keep_alive: Duration) -> Pool {
        let (tx, rx) = crossbeam_channel::unbounded();
        Pool {
            tx,
            rx,
            idle: AtomicIsize::new(0),
            threads: AtomicUsize::new(0),
            slots: AtomicU64::new(0),
            compute_slots: compute_slots.max(1) as u64,
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
        // A slot for it, or a place in the queue when every slot computes.
        let queued = self
            .slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some(if s & HELD_MASK >= self.compute_slots {
                    s + ONE_QUEUED
                } else {
                    s + 1
                })
            })
            .is_ok_and(|s| s & HELD_MASK >= self.compute_slots);
        // The channel is never closed: the pool owns both ends.
        let _ = self.tx.send(job);
        if !queued {
            self.wake_one();
        }
    }

    /// Finds a thread for a job just sent with a compute slot taken for it: an idle one, a new
    /// one, or (past the thread limit) the next to come free.
    fn wake_one(&'static self) {
        if self.take_idle() {
            return;
        }
        if self.threads.load(Ordering::Acquire) >= self.max_threads {
            // In debt: the next thread to come free takes it (it counts itself idle first).
            self.idle.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        self.threads.fetch_add(1, Ordering::AcqRel);
        let started = std::thread::Builder::new()
            .name("engine-script".into())
            .spawn(move || self.work());
        // The new thread waits on the channel like any idle one; whichever waits takes it.
        if let Err(error) = started {
            self.threads.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(%error, "cannot start a script thread; running a job on a shared blocking thread");
            let work = move || {
                // A job was sent for this thread (whichever comes first is as good); its slot is
                // this thread's while it runs.
                if let Ok(job) = self.rx.recv() {
                    job()();
                }
                self.give_up_slot();
            };
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(work)),
                Err(_) => work(),
            }
        }
    }

    /// Gives up a compute slot: to the first queued job if there is one (a thread is found for
    /// it), otherwise back to the pool.
    fn give_up_slot(&'static self) {
        let before = self
            .slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some(if s >> QUEUED_SHIFT > 0 {
                    s - ONE_QUEUED
                } else {
                    s - 1
                })
            })
            .unwrap_or_default();
        if before >> QUEUED_SHIFT > 0 {
            self.wake_one();
        }
    }

    /// After a job: the thread takes the next queued one (keeping its slot, or taking one if it
    /// gave its own away), or gives its slot back. Whether it goes on.
    fn next_queued(&self, holding: bool) -> bool {
        let before = self
            .slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some(match (s >> QUEUED_SHIFT > 0, holding) {
                    (true, true) => s - ONE_QUEUED,
                    (true, false) => s - ONE_QUEUED + 1,
                    (false, true) => s - 1,
                    (false, false) => s,
                })
            })
            .unwrap_or_default();
        before >> QUEUED_SHIFT > 0
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
    fn work(&'static self) {
        lower_for_scripts();
        let mut next = self.next_job();
        while let Some(job) = next {
            WORKER.set(Some((self, true)));
            JOB_STARTED.set(Some(Instant::now()));
            let handover = job();
            let holding = WORKER.get().is_some_and(|(_, h)| h);
            WORKER.set(None);
            // Settled before the result is handed over: whoever it wakes (a tokio worker, at a
            // higher priority) may queue the next run at once, and finds a slot or this thread.
            // A queued job is taken off the channel only once it is there (its sender counts
            // it first): until then, or when another waiting thread took it, this thread waits
            // like an idle one (which it then stands for) and holds back nothing.
            let queued = self.next_queued(holding).then(|| self.rx.try_recv().ok());
            if let Some(Some(job)) = queued {
                // Held back while the thread goes on with queued work, to be handed over with
                // the next ones: one wake of their awaiter for several results.
                let full = HELD_BACK.with(|h| {
                    let mut h = h.borrow_mut();
                    h.push(handover);
                    h.len() >= MAX_HELD_BACK
                });
                if full {
                    hand_over_held_back();
                }
                next = Some(job);
            } else if queued.is_some() {
                hand_over_held_back();
                handover();
                next = self.next_job();
            } else {
                self.idle.fetch_add(1, Ordering::AcqRel);
                hand_over_held_back();
                handover();
                next = self.next_job();
            }
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
                        blocking(|| all_in.wait());
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
    fn test_pool(compute_slots: usize, max_threads: usize, keep_alive: Duration) -> &'static Pool {
        Box::leak(Box::new(Pool::new(compute_slots, max_threads, keep_alive)))
    }

    /// Past its thread limit the pool queues work for the next thread to come free: none of it
    /// is lost or run twice, and the count of idle threads comes back even.
    #[tokio::test]
    async fn past_the_thread_limit_work_waits_for_a_free_thread() {
        let pool = test_pool(8, 2, Duration::from_secs(10));
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
        let pool = test_pool(8, 8, Duration::from_millis(50));
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

    /// Waits for `f` to be true (the threads are at `SCHED_IDLE`, behind every other test's).
    fn eventually(what: &str, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Past the compute slots, work queues for the thread that computes: no thread is started
    /// (or woken) for it, and that thread runs all of it, one job after the other.
    #[tokio::test]
    async fn past_the_compute_slots_work_queues_for_the_thread_that_computes() {
        let pool = test_pool(1, 8, Duration::from_secs(10));
        let (gate_tx, gate_rx) = crossbeam_channel::unbounded::<()>();
        let first = pool.spawn(move || {
            let _ = gate_rx.recv();
            std::thread::current().id()
        });
        let queued: Vec<_> = (0..5)
            .map(|_| pool.spawn(|| std::thread::current().id()))
            .collect();
        assert_eq!(
            pool.threads.load(Ordering::SeqCst),
            1,
            "one thread computes"
        );
        assert_eq!(
            pool.slots.load(Ordering::SeqCst) >> QUEUED_SHIFT,
            5,
            "five queued"
        );
        gate_tx.send(()).unwrap();
        let ran_on = first.await.unwrap();
        for h in queued {
            assert_eq!(h.await.unwrap(), ran_on, "the computing thread took it");
        }
        assert_eq!(pool.threads.load(Ordering::SeqCst), 1);
        eventually("the slot is given back", || {
            pool.slots.load(Ordering::SeqCst) == 0
        });
    }

    /// A job that waits (marked with [`blocking`]) gives its compute slot to the work queued
    /// behind it, and takes one back when the wait ends.
    #[tokio::test]
    async fn a_job_that_waits_gives_its_slot_to_queued_work() {
        let pool = test_pool(1, 8, Duration::from_secs(10));
        let (start_tx, start_rx) = crossbeam_channel::unbounded::<()>();
        let (end_tx, end_rx) = crossbeam_channel::unbounded::<()>();
        let waiter = pool.spawn(move || {
            let _ = start_rx.recv(); // computing, holding the only slot
            blocking(|| end_rx.recv().is_ok())
        });
        let behind = pool.spawn(|| 7);
        assert_eq!(
            pool.slots.load(Ordering::SeqCst) >> QUEUED_SHIFT,
            1,
            "queued"
        );
        start_tx.send(()).unwrap();
        let ran = tokio::time::timeout(Duration::from_secs(30), behind)
            .await
            .expect("the queued job ran while the first one waited");
        assert_eq!(ran.unwrap(), 7);
        end_tx.send(()).unwrap();
        assert!(waiter.await.unwrap());
        eventually("both slots are given back", || {
            pool.slots.load(Ordering::SeqCst) == 0
        });
    }

    /// A job that computes long gives its slot to queued work at a [`checkpoint`] once past
    /// [`HANDOFF_AFTER`]: the queued job runs while it still computes.
    #[tokio::test]
    async fn a_long_job_gives_its_slot_to_queued_work_at_a_checkpoint() {
        let pool = test_pool(1, 8, Duration::from_secs(10));
        let (start_tx, start_rx) = crossbeam_channel::unbounded::<()>();
        let other_ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = other_ran.clone();
        let long = pool.spawn(move || {
            let _ = start_rx.recv();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !seen.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                checkpoint();
                std::hint::spin_loop();
            }
            seen.load(Ordering::SeqCst)
        });
        let flag = other_ran.clone();
        let behind = pool.spawn(move || flag.store(true, Ordering::SeqCst));
        start_tx.send(()).unwrap();
        assert!(
            long.await.unwrap(),
            "the queued job ran during the long one"
        );
        behind.await.unwrap();
        assert_eq!(
            pool.threads.load(Ordering::SeqCst),
            2,
            "a thread was started for it"
        );
    }

    /// Results held back while a thread goes on with queued work are handed over before it
    /// waits in a job: they never wait for that job.
    #[tokio::test]
    async fn held_back_results_are_handed_over_before_a_wait() {
        let pool = test_pool(1, 8, Duration::from_secs(10));
        let (start_tx, start_rx) = crossbeam_channel::unbounded::<()>();
        let (end_tx, end_rx) = crossbeam_channel::unbounded::<()>();
        let first = pool.spawn(move || start_rx.recv().is_ok());
        let second = pool.spawn(|| 2);
        let waits = pool.spawn(move || blocking(|| end_rx.recv().is_ok()));
        start_tx.send(()).unwrap();
        let both = tokio::time::timeout(Duration::from_secs(30), async {
            (first.await.unwrap(), second.await.unwrap())
        })
        .await
        .expect("the first two results came while the third job waits");
        assert_eq!(both, (true, 2));
        end_tx.send(()).unwrap();
        assert!(waits.await.unwrap());
    }
}
