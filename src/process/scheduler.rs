//! The one scheduler of due work: a [`DuePool`] drains a queue whose items come due at a time
//! (runs, mail, and every later action kind and timer), with a bounded number in flight, an
//! in-flight set so no item runs twice at once, a wake-up for new work and a tick for items
//! coming due, and a drain at shutdown. [`Backoff`] is the one retry-delay rule.
//!
//! Fair between groups: a queue may put its items in groups ([`DueWork::group`]: a run's script)
//! and a pool built with [`DuePool::shared`] lets each group hold at most its share of the slots,
//! so one group with slow items (a script sleeping, a far side hanging) cannot hold every slot
//! while another group's items wait. Items of a group at its share are passed over, not
//! dropped: the next item due of another group starts instead.
//!
//! Slots are for work, not for waiting on the disk: an item whose work is done and whose outcome
//! only waits for its commit ([`Step::Committing`]) gives its slot back at once and waits (at
//! most [`MAX_COMMITTING`] of them) outside the pool's size, still in flight, so the next items
//! run while the outcomes of many commit together in one of the writer's group commits.
//!
//! Robust to panics: each item's work runs in a task of its own; when it panics, the item leaves
//! the in-flight set (so it is tried again, it never stays silently stuck) and its queue is told
//! ([`DueWork::panicked`]) so that it can record the crash and, after [`MAX_PANICS`], fail the
//! item visibly instead of trying it forever.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};

use crate::store::ReadError;
pub use crate::store::{Admit, DueKey};
use crate::util::now_ms;

/// Times an item's task may panic before its queue is asked to fail it for good.
pub const MAX_PANICS: u32 = 3;
/// First pause of the whole pool after an item's outcome could not be recorded (the store
/// cannot write: a full disk): nothing new starts until then, so a broken store is not hammered.
pub const PAUSE_FIRST: Duration = Duration::from_millis(250);
/// Longest such pause; each failure in a row doubles it up to this.
pub const PAUSE_MAX: Duration = Duration::from_secs(30);
/// Due items looked at per pass over the queue, at most. Items of a group at its share are
/// passed over to reach another group's, and a look happens after every item that ends, so this
/// bounds what one look costs when one group has a deep backlog: two passes, one from the head
/// (the earliest due first) and one from where the previous look's second pass stopped, so that
/// an item deeper in the backlog is still reached within a few looks.
pub const MAX_DUE_SCAN: usize = 256;
/// Items whose work is done and whose outcome waits for its commit, at most: what one group
/// commit can take of them (the writer takes up to [`crate::store::MAX_BATCH_JOBS`] writes per
/// batch). Beyond it, a finished item keeps its slot until an earlier one's commit ends, so
/// a slow disk slows the pool instead of piling up outcomes in memory.
pub const MAX_COMMITTING: usize = 2048;

/// How an item's work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Its outcome is recorded (or there was nothing to do).
    Recorded,
    /// Its outcome could not be recorded (storage failed); it stays due, and the pool pauses.
    NotRecorded,
    /// Its outcome was refused as out of date (a run whose state reads changed before its
    /// commit): nothing of it was recorded; it stays due and the pool looks again at once.
    Again,
}

/// A boxed future ending in how an item ended: the commit of an outcome, a panic's record.
pub type Task = Pin<Box<dyn Future<Output = Done> + Send + 'static>>;

/// How an item's work ([`DueWork::execute`]) ended.
pub enum Step {
    /// All done.
    Done(Done),
    /// The work is done and its outcome is queued for the writer: the future resolves when it
    /// committed. The item's slot is free for the next item meanwhile; the item stays in
    /// flight (not started again) until the future ends.
    Committing(Task),
}

impl From<Done> for Step {
    fn from(done: Done) -> Step {
        Step::Done(done)
    }
}

/// A boxed future, as [`DueWork::execute`] returns.
pub type Work = Pin<Box<dyn Future<Output = Step> + Send + 'static>>;

/// What the pool found due: the ids, and when the next item not yet due comes due.
pub type Due = (Vec<u64>, Option<u64>);

/// A queue the pool drains.
/// The group (see [`DueWork::group`]) of items keyed by a name (a script, an endpoint).
pub fn group_of(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

pub trait DueWork: Send + Sync + 'static {
    /// What one item is called in log lines (`run`, `mail`).
    const KIND: &'static str;

    /// The ids due at `now_ms` that `admit` takes, earliest due first from just after `after`
    /// (`admit` is asked about each in turn, and says when to stop), and the earliest time an
    /// item not yet due comes due.
    fn due(
        &self,
        now_ms: u64,
        after: Option<DueKey>,
        admit: &mut dyn FnMut(DueKey) -> Admit,
    ) -> Result<Due, ReadError>;

    /// The group item `id` belongs to, for a pool with a share per group ([`DuePool::shared`]);
    /// `None`: no group (never held back).
    fn group(&self, _id: u64) -> Option<u64> {
        None
    }

    /// Carries out item `id` and records its outcome (it stays due if nothing is recorded).
    fn execute(self: Arc<Self>, id: u64) -> Work;

    /// Item `id`'s work panicked (`count` times so far in this process): record it, so the item
    /// is retried later or, from [`MAX_PANICS`] on, failed visibly.
    fn panicked(self: Arc<Self>, id: u64, count: u32, message: String) -> Task;
}

/// Retry delays: `base` doubled per attempt up to `cap`; with `jitter`, "equal jitter" (between
/// half and all of that), so items that failed together do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    pub jitter: bool,
}

impl Backoff {
    /// The delay before retry number `attempt` (0: the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(31)))
            .min(self.cap);
        if !self.jitter {
            return exp;
        }
        let half = exp / 2;
        let millis = u64::try_from((exp - half).as_millis()).unwrap_or(u64::MAX);
        let jitter = match getrandom::u64() {
            Ok(r) if millis > 0 => r % (millis + 1),
            _ => 0,
        };
        half + Duration::from_millis(jitter)
    }
}

/// Drains a [`DueWork`] queue with at most `size` items in flight, at most `share` of them of
/// one group.
pub struct DuePool<W: DueWork> {
    work: Arc<W>,
    size: usize,
    share: usize,
    permits: Arc<Semaphore>,
    /// Items past their work, waiting for their commit ([`MAX_COMMITTING`]).
    committing: Arc<Semaphore>,
    /// The items in flight, with their groups (`None` once an item's work is done: it no
    /// longer counts against its group's share).
    in_flight: Mutex<HashMap<u64, Option<u64>>>,
    /// Where the last look's second pass stopped (see [`MAX_DUE_SCAN`]).
    scan_cursor: Mutex<Option<DueKey>>,
    /// Panics per item in this process.
    panics: Mutex<HashMap<u64, u32>>,
    wake: Arc<Notify>,
    /// Notified whenever an item's work ended (for waiters such as `replay`).
    finished: Notify,
    tick: Duration,
    /// While storage fails: (no new item starts before, the pause that got there).
    paused: Mutex<Option<(std::time::Instant, Duration)>>,
    pause_log: crate::util::Throttle,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<W: DueWork> DuePool<W> {
    /// A pool over `work`; it looks at the queue when woken and at least every `tick`.
    pub fn new(work: Arc<W>, size: usize, tick: Duration) -> Arc<DuePool<W>> {
        DuePool::shared(work, size, size, tick)
    }

    /// A pool whose items of one group ([`DueWork::group`]) hold at most `share` of its `size`
    /// slots at once.
    pub fn shared(work: Arc<W>, size: usize, share: usize, tick: Duration) -> Arc<DuePool<W>> {
        let size = size.max(1);
        Arc::new(DuePool {
            work,
            size,
            share: share.clamp(1, size),
            permits: Arc::new(Semaphore::new(size)),
            committing: Arc::new(Semaphore::new(MAX_COMMITTING)),
            in_flight: Mutex::new(HashMap::new()),
            scan_cursor: Mutex::new(None),
            panics: Mutex::new(HashMap::new()),
            wake: Arc::new(Notify::new()),
            finished: Notify::new(),
            tick,
            paused: Mutex::new(None),
            pause_log: crate::util::Throttle::new(crate::store::FAILURE_LOG_INTERVAL),
        })
    }

    /// The handle producers notify when they queued work.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Items in flight now.
    pub fn in_flight(&self) -> usize {
        lock(&self.in_flight).len()
    }

    /// Resolves the next time an item's work ends.
    pub async fn finished(&self) {
        self.finished.notified().await
    }

    /// Starts due items until `shutdown` turns true, then waits for the ones in flight.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let next_due = match self.start_due() {
                Ok(n) => n,
                Err(error) => {
                    if let Some(left_out) = self.pause_log.ready() {
                        tracing::error!(%error, kind = W::KIND, left_out, "scheduler cannot read the queue");
                    }
                    None
                }
            };
            let wait = next_due
                .map(|due| Duration::from_millis(due.saturating_sub(now_ms())))
                .unwrap_or(self.tick)
                .min(self.tick);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        // Every permit back = every item in flight finished (its work, then its commit).
        let _ = self.permits.acquire_many(self.size as u32).await;
        let _ = self.committing.acquire_many(MAX_COMMITTING as u32).await;
    }

    /// Records how an item ended: a failure to record pauses the pool (doubling), a success
    /// ends the pause.
    fn note(&self, done: Done) {
        let mut paused = lock(&self.paused);
        match done {
            Done::Recorded | Done::Again => *paused = None,
            Done::NotRecorded => {
                let pause = paused.map_or(PAUSE_FIRST, |(_, p)| (p * 2).min(PAUSE_MAX));
                *paused = Some((std::time::Instant::now() + pause, pause));
                if let Some(left_out) = self.pause_log.ready() {
                    tracing::warn!(
                        kind = W::KIND,
                        pause_ms = pause.as_millis() as u64,
                        left_out,
                        "outcome not recorded (the store cannot write); pausing"
                    );
                }
            }
        }
    }

    /// Starts every due item there is a free permit for; returns when the next one comes due.
    fn start_due(self: &Arc<Self>) -> Result<Option<u64>, ReadError> {
        if let Some((until, _)) = *lock(&self.paused) {
            let now = std::time::Instant::now();
            if now < until {
                let wait = until - now;
                return Ok(Some(now_ms() + wait.as_millis() as u64));
            }
        }
        let in_flight = lock(&self.in_flight).clone();
        let mut look = Look {
            free: self.permits.available_permits(),
            share: if self.share < self.size {
                self.share
            } else {
                usize::MAX
            },
            held: HashMap::new(),
            picked: Vec::new(),
            looked: 0,
            last: None,
            window_full: false,
        };
        for group in in_flight.values().flatten() {
            *look.held.entry(*group).or_default() += 1;
        }
        let work = &*self.work;
        let admit = |look: &mut Look, key: DueKey| look.admit(key, &in_flight, work);
        let now = now_ms();
        let (_, next_due) = self.work.due(now, None, &mut |k| admit(&mut look, k))?;
        if look.window_full && look.picked.len() < look.free {
            // Everything in the first window is in flight or of a group at its share: go on
            // from where the previous look stopped (or from here), so deeper items are reached.
            let head_end = look.last;
            let cursor = *lock(&self.scan_cursor);
            let from = match (cursor, head_end) {
                (Some(c), Some(h)) if c > h => Some(c),
                _ => head_end,
            };
            look.looked = 0;
            look.window_full = false;
            self.work.due(now, from, &mut |k| admit(&mut look, k))?;
            *lock(&self.scan_cursor) = if look.window_full { look.last } else { None };
        }
        let picked = look.picked;
        for (id, group) in picked {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                break;
            };
            lock(&self.in_flight).insert(id, group);
            let me = self.clone();
            tokio::spawn(async move {
                let mut permit = Some(permit);
                let mut committing = None;
                // The work runs in a task of its own: a panic ends that task, not this one.
                let outcome = match tokio::spawn(me.work.clone().execute(id)).await {
                    Ok(Step::Done(done)) => Ok(done),
                    Ok(Step::Committing(commit)) => {
                        // The slot goes to the next item while this one's outcome commits.
                        if let Ok(p) = me.committing.clone().acquire_owned().await {
                            committing = Some(p);
                            if let Some(group) = lock(&me.in_flight).get_mut(&id) {
                                *group = None;
                            }
                            drop(permit.take());
                            me.wake.notify_one();
                        }
                        tokio::spawn(commit).await
                    }
                    Err(e) => Err(e),
                };
                let again = matches!(outcome, Ok(Done::Again));
                match outcome {
                    Ok(done) => me.note(done),
                    Err(e) if e.is_panic() => {
                        let message = panic_message(e.into_panic());
                        let count = {
                            let mut panics = lock(&me.panics);
                            let n = panics.entry(id).or_insert(0);
                            *n += 1;
                            *n
                        };
                        tracing::error!(kind = W::KIND, id, count, panic = %message, "work panicked");
                        match tokio::spawn(me.work.clone().panicked(id, count, message)).await {
                            Ok(done) => me.note(done),
                            Err(_) => {
                                tracing::error!(
                                    kind = W::KIND,
                                    id,
                                    "recording a panic panicked too"
                                )
                            }
                        }
                    }
                    Err(_) => {}
                }
                lock(&me.in_flight).remove(&id);
                // A slot freed now is a reason to look at the queue again; the end of a commit
                // is not (its slot was freed, and looked after, when the commit began).
                if permit.take().is_some() || again {
                    me.wake.notify_one();
                }
                drop(committing);
                me.finished.notify_waiters();
            });
        }
        Ok(next_due)
    }
}

/// One look at the queue: what is picked, and how much of it was looked at.
struct Look {
    free: usize,
    share: usize,
    /// Items in flight or picked, per group.
    held: HashMap<u64, usize>,
    picked: Vec<(u64, Option<u64>)>,
    /// Items looked at in this pass.
    looked: usize,
    /// The last item looked at.
    last: Option<DueKey>,
    /// The pass stopped at [`MAX_DUE_SCAN`] with items left.
    window_full: bool,
}

impl Look {
    fn admit<W: DueWork>(
        &mut self,
        key: DueKey,
        in_flight: &HashMap<u64, Option<u64>>,
        work: &W,
    ) -> Admit {
        if self.picked.len() >= self.free {
            return Admit::Stop;
        }
        if self.looked >= MAX_DUE_SCAN {
            self.window_full = true;
            return Admit::Stop;
        }
        self.looked += 1;
        self.last = Some(key);
        let id = key.1;
        if in_flight.contains_key(&id) {
            return Admit::Pass;
        }
        let group = if self.share == usize::MAX {
            None
        } else {
            work.group(id)
        };
        if let Some(g) = group {
            let n = self.held.entry(g).or_default();
            if *n >= self.share {
                return Admit::Pass;
            }
            *n += 1;
        }
        self.picked.push((id, group));
        Admit::Take
    }
}

/// The text of a panic's payload.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue in memory: item 1 works, item 2 always panics, item 3 panics once then works.
    #[derive(Default)]
    struct Fake {
        /// Items still due, and what happened to each.
        state: Mutex<FakeState>,
    }

    #[derive(Default)]
    struct FakeState {
        due: Vec<u64>,
        done: Vec<u64>,
        panics_seen: Vec<(u64, u32)>,
        failed: Vec<u64>,
        attempts: HashMap<u64, u32>,
        groups: HashMap<u64, u64>,
        /// How long an item's work takes (default: none).
        slow: HashMap<u64, Duration>,
        /// (id, ms after the test began) as each item's work ended.
        ended: Vec<(u64, u128)>,
        began: Option<std::time::Instant>,
        /// How long every outcome's commit takes (`None`: recorded within the work).
        commit: Option<Duration>,
    }

    /// Runs `pool` until `fake` has nothing due (at most 10 s: "items stuck"), then stops it
    /// and waits for it (a panic inside must not have taken the pool down).
    async fn drain(pool: &Arc<DuePool<Fake>>, fake: &Fake) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let running = tokio::spawn(pool.clone().run(stop_rx));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !lock(&fake.state).due.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "items stuck: {:?}",
                lock(&fake.state).due
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = stop_tx.send(true);
        running
            .await
            .expect("the pool stops, whatever its items did");
    }

    impl DueWork for Fake {
        const KIND: &'static str = "fake";

        fn due(
            &self,
            _now: u64,
            after: Option<DueKey>,
            admit: &mut dyn FnMut(DueKey) -> Admit,
        ) -> Result<Due, ReadError> {
            // Not under the lock: `admit` asks for groups, which takes it. All due at 0.
            let due = lock(&self.state).due.clone();
            let mut ids = Vec::new();
            for id in due
                .into_iter()
                .filter(|id| after.is_none_or(|a| (0, *id) > a))
            {
                match admit((0, id)) {
                    Admit::Take => ids.push(id),
                    Admit::Pass => {}
                    Admit::Stop => break,
                }
            }
            Ok((ids, None))
        }

        fn group(&self, id: u64) -> Option<u64> {
            lock(&self.state).groups.get(&id).copied()
        }

        fn execute(self: Arc<Self>, id: u64) -> Work {
            Box::pin(async move {
                let attempt = {
                    let mut s = lock(&self.state);
                    let n = s.attempts.entry(id).or_insert(0);
                    *n += 1;
                    *n
                };
                if id == 2 || (id == 3 && attempt == 1) {
                    panic!("injected panic in item {id}");
                }
                let slow = lock(&self.state).slow.get(&id).copied();
                if let Some(d) = slow {
                    tokio::time::sleep(d).await;
                }
                let commit = lock(&self.state).commit;
                let record = move |fake: &Fake| {
                    let mut s = lock(&fake.state);
                    s.due.retain(|d| *d != id);
                    s.done.push(id);
                    let at = s.began.map(|b| b.elapsed().as_millis()).unwrap_or(0);
                    s.ended.push((id, at));
                    Done::Recorded
                };
                match commit {
                    None => Step::Done(record(&self)),
                    Some(d) => Step::Committing(Box::pin(async move {
                        tokio::time::sleep(d).await;
                        record(&self)
                    })),
                }
            })
        }

        fn panicked(self: Arc<Self>, id: u64, count: u32, message: String) -> Task {
            Box::pin(async move {
                assert!(message.contains("injected panic"), "{message}");
                let mut s = lock(&self.state);
                s.panics_seen.push((id, count));
                if count >= MAX_PANICS {
                    s.due.retain(|d| *d != id);
                    s.failed.push(id);
                }
                Done::Recorded
            })
        }
    }

    /// Regression: a run task that panicked left its id in the in-flight set, so the scheduler
    /// skipped it until a restart (runs stuck pending, their mail never sent).
    #[tokio::test]
    async fn a_panicking_item_is_retried_then_failed_never_stuck() {
        let fake = Arc::new(Fake::default());
        lock(&fake.state).due = vec![1, 2, 3];
        let pool = DuePool::new(fake.clone(), 2, Duration::from_millis(5));
        drain(&pool, &fake).await;
        let s = lock(&fake.state);
        let mut done = s.done.clone();
        done.sort();
        assert_eq!(done, [1, 3], "the others still ran");
        assert_eq!(s.failed, [2], "the always-panicking item failed visibly");
        let twos: Vec<u32> = s
            .panics_seen
            .iter()
            .filter(|(id, _)| *id == 2)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(twos, (1..=MAX_PANICS).collect::<Vec<_>>());
        assert!(s.panics_seen.contains(&(3, 1)));
        assert_eq!(pool.in_flight(), 0, "nothing left in flight");
    }

    /// A group at its share is passed over: the other group's items start beside it, and a
    /// lone group still uses its share of the slots.
    #[tokio::test]
    async fn a_group_at_its_share_is_passed_over_for_another_groups_items() {
        let fake = Arc::new(Fake::default());
        {
            let mut s = lock(&fake.state);
            // Items 10..16 of group "slow" (300 ms each) come first; 20..23 of "quick" after.
            s.due = (10..16).chain(20..23).collect();
            for id in 10..16 {
                s.groups.insert(id, 1);
                s.slow.insert(id, Duration::from_millis(300));
            }
            for id in 20..23 {
                s.groups.insert(id, 2);
            }
            s.began = Some(std::time::Instant::now());
        }
        let pool = DuePool::shared(fake.clone(), 4, 2, Duration::from_millis(5));
        drain(&pool, &fake).await;
        let s = lock(&fake.state);
        let quick_last = s
            .ended
            .iter()
            .filter(|(id, _)| *id >= 20)
            .map(|(_, at)| *at)
            .max()
            .expect("quick items ran");
        assert!(
            quick_last < 250,
            "the quick group waited behind the slow one: {:?}",
            s.ended
        );
        let slow_last = s
            .ended
            .iter()
            .filter(|(id, _)| *id < 20)
            .map(|(_, at)| *at)
            .max()
            .expect("slow items ran");
        // Six slow items, two at a time: three rounds of 300 ms (never four at once, never one).
        assert!(
            (850..1500).contains(&slow_last),
            "slow items ended at {:?}",
            s.ended
        );
    }

    /// An item of another group behind a backlog of one group's items deeper than one pass
    /// ([`MAX_DUE_SCAN`]) is still reached within a few looks.
    #[tokio::test]
    async fn an_item_behind_a_deep_backlog_of_one_group_is_reached() {
        let fake = Arc::new(Fake::default());
        let backlog = 3 * MAX_DUE_SCAN as u64;
        let quick = 100 + backlog;
        {
            let mut s = lock(&fake.state);
            s.due = (100..100 + backlog).chain([quick]).collect();
            for id in 100..100 + backlog {
                s.groups.insert(id, 1);
                s.slow.insert(id, Duration::from_secs(2));
            }
            s.groups.insert(quick, 2);
            s.began = Some(std::time::Instant::now());
        }
        let pool = DuePool::shared(fake.clone(), 4, 2, Duration::from_millis(5));
        let (stop_tx, stop_rx) = watch::channel(false);
        let running = tokio::spawn(pool.clone().run(stop_rx));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !lock(&fake.state).done.contains(&quick) {
            assert!(
                std::time::Instant::now() < deadline,
                "the item behind the backlog never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let at = lock(&fake.state)
            .ended
            .iter()
            .find(|(id, _)| *id == quick)
            .map(|(_, at)| *at);
        let _ = stop_tx.send(true);
        lock(&fake.state).due.clear();
        running.abort();
        assert!(at.is_some_and(|at| at < 1000), "reached after {at:?} ms");
    }

    /// Items whose outcome waits for its commit free their slots: ten items with a 300 ms commit
    /// through two slots commit together (not five rounds), and none starts twice meanwhile.
    #[tokio::test]
    async fn items_waiting_for_their_commit_free_their_slots_and_stay_in_flight() {
        let fake = Arc::new(Fake::default());
        {
            let mut s = lock(&fake.state);
            s.due = (10..20).collect();
            s.commit = Some(Duration::from_millis(300));
            s.began = Some(std::time::Instant::now());
        }
        let pool = DuePool::new(fake.clone(), 2, Duration::from_millis(5));
        drain(&pool, &fake).await;
        let s = lock(&fake.state);
        let last = s.ended.iter().map(|(_, at)| *at).max().unwrap_or(0);
        assert!(
            last < 600,
            "commits waited for slots: ended at {:?}",
            s.ended
        );
        assert!(
            s.attempts.values().all(|n| *n == 1),
            "an item started again while its commit was pending: {:?}",
            s.attempts
        );
        assert_eq!(s.done.len(), 10);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_jitters_within_half() {
        let plain = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
            jitter: false,
        };
        let delays: Vec<u64> = (0..6).map(|a| plain.delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(plain.delay(u32::MAX), Duration::from_secs(10));
        let jittered = Backoff {
            jitter: true,
            ..plain
        };
        for attempt in 0..6 {
            let full = plain.delay(attempt);
            for _ in 0..50 {
                let d = jittered.delay(attempt);
                assert!(d >= full / 2 && d <= full, "{attempt}: {d:?} of {full:?}");
            }
        }
    }
}
