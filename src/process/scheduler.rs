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
//! Robust to panics: a panic in an item's work is caught in the item's task; the item leaves
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
/// bounds what one look costs when one group has a deep backlog. A look makes at most
/// [`PASSES_PER_LOOK`] passes, each from where the pool's [`Scan`] says an item may be taken;
/// a look that ends with slots free and more to look at (the window full, or a pass ended
/// to start further on) asks for another look at once.
pub const MAX_DUE_SCAN: usize = 256;
/// Passes over the queue in one look (see [`MAX_DUE_SCAN`]).
pub const PASSES_PER_LOOK: usize = 4;
/// A look from the head again costs a read of the whole backlog of any group at its share, so
/// producers' wakes (new items: one may sort behind the scan, its due time taken before its
/// commit) start the scan over at most this often; an item that lands behind it waits for
/// the first look after this long (the next item, or the pool's tick). An item left
/// due by its own work starts it over at once.
pub const RESCAN_MIN_INTERVAL: Duration = Duration::from_millis(250);
/// The scan starts over from the head at least this often, whatever happened: a safety net
/// for an item that came due behind it without the pool being told.
pub const RESCAN_MAX_INTERVAL: Duration = Duration::from_secs(1);
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
    /// What earlier looks learned of the queue, so a look starts where an item may be taken.
    scan: Mutex<Scan>,
    /// Panics per item in this process.
    panics: Mutex<HashMap<u64, u32>>,
    wake: Arc<Notify>,
    /// Notified by the pool's own items when a slot is free again (or a look should go on):
    /// unlike `wake` (new work from producers), it keeps the pool's [`Scan`].
    freed: Notify,
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
            scan: Mutex::new(Scan::default()),
            freed: Notify::new(),
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
                _ = self.wake.notified() => lock(&self.scan).requested = true,
                _ = self.freed.notified() => {}
                _ = tokio::time::sleep(wait) => lock(&self.scan).requested = true,
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
        // The scan first, then the in-flight set: an item that leaves the set and stays due
        // resets the scan after it left, so either this look sees it gone or its reset
        // comes after this look's (see `Scan`).
        let mut scan = lock(&self.scan);
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
            untaken: HashMap::new(),
            frontier: None,
            bounds: Vec::new(),
            jumped: false,
        };
        for group in in_flight.values().flatten() {
            *look.held.entry(*group).or_default() += 1;
        }
        let work = &*self.work;
        let now = now_ms();
        let since = scan.since.elapsed();
        if since >= RESCAN_MAX_INTERVAL || (scan.requested && since >= RESCAN_MIN_INTERVAL) {
            scan.reset();
        }
        let mut next_due = None;
        for _ in 0..PASSES_PER_LOOK {
            let from = scan.start(&look);
            look.looked = 0;
            look.last = None;
            look.window_full = false;
            look.jumped = false;
            look.untaken.clear();
            look.frontier = scan.frontier;
            look.bounds = scan.behind.iter().map(|(g, k)| (*g, *k)).collect();
            let admit = |look: &mut Look, key: DueKey| look.admit(key, &in_flight, work);
            let (_, next) = self.work.due(now, from, &mut |k| admit(&mut look, k))?;
            next_due = next;
            scan.learn(from, &look);
            if !(look.window_full || look.jumped) || look.picked.len() >= look.free {
                break;
            }
        }
        if (look.window_full || look.jumped) && look.picked.len() < look.free {
            // Slots free and more to look at: go on in another look (the scan moved on).
            self.freed.notify_one();
        }
        drop(scan);
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
                // A panic in the work (or its commit) is caught here and ends only this item.
                let outcome = match caught(me.work.clone().execute(id)).await {
                    Ok(Step::Done(done)) => Ok(done),
                    Ok(Step::Committing(commit)) => {
                        // The slot goes to the next item while this one's outcome commits.
                        if let Ok(p) = me.committing.clone().acquire_owned().await {
                            committing = Some(p);
                            if let Some(group) = lock(&me.in_flight).get_mut(&id) {
                                *group = None;
                            }
                            drop(permit.take());
                            me.freed.notify_one();
                        }
                        caught(commit).await
                    }
                    Err(payload) => Err(payload),
                };
                // Left due at its key, which a look may have gone past while it was in flight.
                let left_due = !matches!(outcome, Ok(Done::Recorded));
                match outcome {
                    Ok(done) => me.note(done),
                    Err(payload) => {
                        let message = panic_message(payload);
                        let count = {
                            let mut panics = lock(&me.panics);
                            let n = panics.entry(id).or_insert(0);
                            *n += 1;
                            *n
                        };
                        tracing::error!(kind = W::KIND, id, count, panic = %message, "work panicked");
                        match caught(me.work.clone().panicked(id, count, message)).await {
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
                }
                lock(&me.in_flight).remove(&id);
                if left_due {
                    // After it left the in-flight set: a look that still saw it in flight
                    // holds the scan until it has learned, and this comes after.
                    lock(&me.scan).reset();
                }
                // A slot freed now is a reason to look at the queue again; the end of a commit
                // is not (its slot was freed, and looked after, when the commit began).
                if permit.take().is_some() || left_due {
                    me.freed.notify_one();
                }
                drop(committing);
                me.finished.notify_waiters();
            });
        }
        Ok(next_due)
    }
}

/// What the pool knows of its queue between looks, so that a look starts where an item may
/// be taken instead of at the head, past the items in flight and the backlog of groups at
/// their share (with a few groups and one of them behind, that backlog is most of what a
/// look from the head reads). Keys are the due index's (due time, id), in its order.
///
/// Invariant (while valid): every due item at or before `frontier` is in flight, or belongs to
/// a group in `behind` and comes after that group's key there. A look starts just after the
/// smallest of `frontier` and the `behind` keys of groups under their share. Whatever could
/// break it starts the scan over from the head: an item left due by its work (not recorded,
/// refused as out of date, panicked) at once; producers' wakes (new items, cancellations) and
/// ticks within [`RESCAN_MIN_INTERVAL`]; anything else within [`RESCAN_MAX_INTERVAL`].
#[derive(Debug)]
pub struct Scan {
    frontier: Option<DueKey>,
    /// Groups with items not in flight at or before `frontier`: none of them at or before
    /// this key (`None`: from the head).
    behind: HashMap<u64, Option<DueKey>>,
    /// When it last started over.
    since: std::time::Instant,
    /// A producer's wake or a tick asked for a start from the head.
    requested: bool,
}

impl Default for Scan {
    fn default() -> Scan {
        Scan {
            frontier: None,
            behind: HashMap::new(),
            since: std::time::Instant::now(),
            requested: false,
        }
    }
}

impl Scan {
    /// Forgets what it knew: the next look starts at the head.
    fn reset(&mut self) {
        *self = Scan::default();
    }

    /// Where a look goes on from (exclusive; `None`: the head).
    fn start(&self, look: &Look) -> Option<DueKey> {
        let mut from = self.frontier;
        for (group, key) in &self.behind {
            let at_share = look.held.get(group).is_some_and(|n| *n >= look.share);
            if !at_share && key_before(*key, from) {
                from = *key;
            }
        }
        from
    }

    /// Takes in what a pass from `from` (exclusive) saw.
    fn learn(&mut self, from: Option<DueKey>, look: &Look) {
        // What it passed over, of groups at their share: their first such item.
        for (group, first) in &look.untaken {
            let before = predecessor(*first);
            let e = self.behind.entry(*group).or_insert(before);
            if key_before(before, *e) {
                *e = before;
            }
        }
        let Some(last) = look.last else {
            return;
        };
        // Every item after `from` up to `last` was looked at: a group seen with nothing left
        // untaken there has nothing left up to `last`.
        for (group, key) in self.behind.iter_mut() {
            if !look.untaken.contains_key(group)
                && !key_before(*key, from)
                && key_before(*key, Some(last))
            {
                *key = Some(last);
            }
        }
        if key_before(self.frontier, Some(last)) && !key_before(self.frontier, from) {
            self.frontier = Some(last);
        }
        let frontier = self.frontier;
        self.behind.retain(|_, key| key_before(*key, frontier));
    }
}

/// Whether `a` comes before `b` (`None`: before every key).
fn key_before(a: Option<DueKey>, b: Option<DueKey>) -> bool {
    match (a, b) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a < b,
    }
}

/// The key just before `key` (`None`: the head).
fn predecessor(key: DueKey) -> Option<DueKey> {
    match key {
        (0, 0) => None,
        (due, 0) => Some((due - 1, u64::MAX)),
        (due, id) => Some((due, id - 1)),
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
    /// In this pass, per group at its share: the first of its items passed over.
    untaken: HashMap<u64, DueKey>,
    /// The scan's frontier and `behind` keys as the pass began (see [`Look::pass`]).
    frontier: Option<DueKey>,
    bounds: Vec<(u64, Option<DueKey>)>,
    /// The pass ended early to start again further on.
    jumped: bool,
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
            return self.pass(key);
        }
        let group = if self.share == usize::MAX {
            None
        } else {
            work.group(id)
        };
        if let Some(g) = group {
            let n = self.held.entry(g).or_default();
            if *n >= self.share {
                self.untaken.entry(g).or_insert(key);
                return self.pass(key);
            }
            *n += 1;
        }
        self.picked.push((id, group));
        Admit::Take
    }

    /// Passes over `key`, or ends the pass when nothing can be taken until further on: every
    /// group under its share has nothing to take at or before `key` (as the scan knows it),
    /// so the next pass starts where one of them may (instead of reading, say, the backlog
    /// of a group at its share item by item to reach another group's next item).
    fn pass(&mut self, key: DueKey) -> Admit {
        if key_before(self.frontier, Some(key)) {
            return Admit::Pass;
        }
        let takeable_here = self.bounds.iter().any(|(group, bound)| {
            let under = self.held.get(group).is_none_or(|n| *n < self.share);
            under && key_before(*bound, Some(key))
        });
        if takeable_here {
            Admit::Pass
        } else {
            self.jumped = true;
            Admit::Stop
        }
    }
}

/// `work`, with a panic in it caught (its payload) instead of unwinding through the item's task:
/// one task per item, where a task spawned per step (work, commit, the panic's record) cost a
/// spawn and a wake of its awaiter each.
fn caught<F: Future>(
    work: F,
) -> impl Future<Output = Result<F::Output, Box<dyn std::any::Any + Send>>> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(work).catch_unwind()
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
        /// Items whose outcome is refused as out of date (`Done::Again`) this many times more.
        again: HashMap<u64, u32>,
        /// Due items handed to `admit`, over every look.
        looked: u64,
        /// Items whose commit (not their work) panics this many times more.
        commit_panics: HashMap<u64, u32>,
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
                lock(&self.state).looked += 1;
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
                    if let Some(n) = s.again.get_mut(&id).filter(|n| **n > 0) {
                        *n -= 1;
                        return Done::Again;
                    }
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
                        let panics = lock(&self.state)
                            .commit_panics
                            .get_mut(&id)
                            .filter(|n| **n > 0)
                            .map(|n| *n -= 1)
                            .is_some();
                        if panics {
                            panic!("injected panic in the commit of item {id}");
                        }
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

    /// A panic in an item's commit, after its work gave its slot back, is caught like one in
    /// its work: the item is told to its queue, leaves the in-flight set and is tried again.
    #[tokio::test]
    async fn a_panic_in_an_items_commit_is_caught_like_one_in_its_work() {
        let fake = Arc::new(Fake::default());
        {
            let mut s = lock(&fake.state);
            s.due = vec![10, 11];
            s.commit = Some(Duration::from_millis(1));
            s.commit_panics.insert(10, 1);
        }
        let pool = DuePool::new(fake.clone(), 1, Duration::from_millis(5));
        drain(&pool, &fake).await;
        let s = lock(&fake.state);
        assert_eq!(
            s.panics_seen,
            [(10, 1)],
            "the commit's panic was told to the queue"
        );
        let mut done = s.done.clone();
        done.sort();
        assert_eq!(
            done,
            [10, 11],
            "tried again after its panic; the other ran too"
        );
        assert_eq!(s.attempts.get(&10), Some(&2));
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

    /// A slow group's backlog at the head of the queue is read once, not once per look: the
    /// other group's 2,000 items (each look taking one or two) start where the last look
    /// stopped. (Before the pool kept its `Scan`, each of those looks read the backlog again
    /// from the head: 100.1 items looked at per item started, against 2.1 with it.)
    #[tokio::test]
    async fn a_slow_groups_backlog_is_not_read_again_by_every_look() {
        let fake = Arc::new(Fake::default());
        let (slow, quick) = (200u64, 2000u64);
        {
            let mut s = lock(&fake.state);
            // From 10: the fake's items 2 and 3 panic.
            s.due = (10..10 + slow + quick).collect();
            for id in 10..10 + slow {
                s.groups.insert(id, 1);
                s.slow.insert(id, Duration::from_millis(4));
            }
            for id in 10 + slow..10 + slow + quick {
                s.groups.insert(id, 2);
            }
        }
        let pool = DuePool::shared(fake.clone(), 4, 2, Duration::from_millis(5));
        drain(&pool, &fake).await;
        let s = lock(&fake.state);
        assert_eq!(s.done.len() as u64, slow + quick, "every item ran once");
        let per_item = s.looked as f64 / (slow + quick) as f64;
        assert!(
            per_item < 20.0,
            "{} items looked at for {} items ({per_item:.1} per item)",
            s.looked,
            slow + quick
        );
    }

    /// An item left due by its work (its outcome refused as out of date) after later items
    /// were taken is taken again at once, though the pool's scan had gone past it.
    #[tokio::test]
    async fn an_item_left_due_behind_the_scan_is_taken_again() {
        let fake = Arc::new(Fake::default());
        {
            let mut s = lock(&fake.state);
            s.due = (10..60).collect();
            s.again.insert(10, 3);
            s.commit = Some(Duration::from_millis(20));
            s.began = Some(std::time::Instant::now());
        }
        let pool = DuePool::new(fake.clone(), 2, Duration::from_secs(60));
        drain(&pool, &fake).await;
        let s = lock(&fake.state);
        assert_eq!(
            s.attempts.get(&10),
            Some(&4),
            "three refusals, then recorded"
        );
        let at = s.ended.iter().find(|(id, _)| *id == 10).map(|(_, at)| *at);
        // Not left for the pool's tick (a minute here) or its rescan safety net (1 s).
        assert!(
            at.is_some_and(|at| at < 900),
            "item 10 recorded after {at:?} ms"
        );
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
