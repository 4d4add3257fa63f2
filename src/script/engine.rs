//! The sandboxed Rhai engine: settings, the stdlib-only module resolver, host functions and the
//! per-thread state of the run in progress (log, actions, budget).
//!
//! One `Engine` is built per `ScriptSet` and shared by every thread. Engine callbacks are
//! engine-wide, so everything that belongs to one run lives in thread-locals that `run` sets up
//! with [`enter`] and takes back with [`Entered::finish`].

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rhai::module_resolvers::ModuleResolver;
use rhai::{
    Dynamic, Engine, EvalAltResult, FuncRegistration, INT, ImmutableString, Map, Module,
    NativeCallContext, OptimizationLevel, Position, Scope,
};

use super::Limits;
use super::email::{Action, ActionKind, OktaAction, Senders, action_id, default_key, parse_email};
use super::host::{Host, HostError, user_to_dynamic};
use super::http::{EndpointInfo, HttpRequest, parse_get, parse_post, parse_request};
use super::okta_op::{OktaGroup, OktaOp, group_ref, user_ref};
use super::outcome::{LogLevel, LogLine, RunErrorKind};

/// Operations between two reads of the clock: `Instant::now()` costs ~25 ns, an operation a few,
/// so the check stays under 1 % of run time while a 5 s timeout is hit within microseconds.
const CLOCK_CHECK_INTERVAL: u64 = 256;
/// Operation cap while no run is active (top-level code of stdlib modules runs once at load):
/// a module that loops forever must not hang loading.
const LOAD_MAX_OPERATIONS: u64 = 1_000_000;
/// Log lines kept per run; a logging loop must not fill memory or the run store.
pub(crate) const MAX_LOG_LINES: usize = 1_000;
/// Characters kept per log line.
pub(crate) const MAX_LOG_LINE_CHARS: usize = 4_096;
/// Keywords turned off: `eval` would compile code at run time, outside the load-time checks.
const DISABLED_SYMBOLS: &[&str] = &["eval"];
/// The token `on_progress` and fatal host errors terminate a run with.
const TERMINATE_TOKEN: &str = "engine: run terminated";
/// Longest chain of stdlib modules importing one another (`a` imports `b` imports `c` …). Each
/// level nests a compile and an evaluation of its module on the loading thread's stack, ~21 KiB
/// in a debug build (measured: a chain of 90 small modules loaded on a 2 MiB thread, 100
/// overflowed it), and hot reload loads on tokio's 2 MiB blocking threads. 16 levels take ~350
/// KiB, leaving room for each module's own top-level code; a stdlib is a handful of modules.
pub const MAX_IMPORT_DEPTH: usize = 16;

/// What made the resolver refuse an import. Its errors carry this as their value's tag, so the
/// loader can report their message as is (without Rhai's "Runtime error: ") and add a hint.
/// The values fit an `i16`, Rhai's tag type on 32-bit targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
enum Refusal {
    /// Bad name, file outside the stdlib directory, unreadable file.
    File = 0x1d3,
    /// The module is already being resolved further up the chain.
    Cycle,
    /// The chain is longer than [`MAX_IMPORT_DEPTH`].
    TooDeep,
}

impl Refusal {
    const ALL: [Refusal; 3] = [Refusal::File, Refusal::Cycle, Refusal::TooDeep];

    fn hint(self) -> Option<String> {
        match self {
            Refusal::File => None,
            Refusal::Cycle => Some(
                "a module cannot import itself, directly or through others: move what they share into a module that imports neither"
                    .to_string(),
            ),
            Refusal::TooDeep => Some(format!(
                "stdlib modules may import one another at most {MAX_IMPORT_DEPTH} deep"
            )),
        }
    }
}

/// Why a run was stopped from outside the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trip {
    Operations,
    Timeout,
    /// The run's heap grew past `max_bytes`.
    Memory,
    /// A host function recorded a fatal error in `RunCtx::fatal`.
    Fatal,
}

/// How much longer than its time limit a run may last by the wall clock. The limit counts the
/// run's own CPU time and its waits in host calls, not the time its thread waited for a core
/// (script threads run at the lowest priority, so a busy receiver can keep them waiting): a run
/// starved that way is delayed, up to this many times its limit, not failed.
pub const WALL_CLOCK_FACTOR: u32 = 10;

/// Per-run budget, read on every operation (kept apart from `RunCtx` so the hot path is a `Cell`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub max_ops: u64,
    /// Heap bytes the run may hold (see `super::alloc`).
    pub max_bytes: usize,
    /// The time limit (`timeout_ms`): the run's CPU time plus its waits in host calls.
    pub time: Option<TimeBudget>,
    pub tripped: Option<Trip>,
}

/// A run's time limit and what it has used of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeBudget {
    pub limit: Duration,
    /// When the run started, by the wall clock.
    pub started: Instant,
    /// The thread's CPU clock when the run started.
    pub cpu_start: Duration,
    /// Wall time spent waiting in host reads and `sleep`.
    pub waited: Duration,
}

impl TimeBudget {
    /// A budget of `limit`, starting now on this thread.
    pub fn starting_now(limit: Duration) -> TimeBudget {
        TimeBudget {
            limit,
            started: Instant::now(),
            cpu_start: thread_cpu_time(),
            waited: Duration::ZERO,
        }
    }

    /// What the run has used: CPU time and waits. The CPU clock (a system call) is read only
    /// once the wall clock says the limit may be reached: the two together never exceed the
    /// wall time since the start by more than the CPU time spent inside waits.
    fn used(&self) -> Duration {
        let wall = self.started.elapsed();
        if wall < self.limit {
            return wall;
        }
        thread_cpu_time().saturating_sub(self.cpu_start) + self.waited
    }

    fn remaining(&self) -> Duration {
        self.limit.saturating_sub(self.used())
    }

    /// The hard cap by the wall clock ([`WALL_CLOCK_FACTOR`] times the limit).
    fn wall_deadline(&self) -> Option<Instant> {
        self.started
            .checked_add(self.limit.saturating_mul(WALL_CLOCK_FACTOR))
    }

    fn exhausted(&self) -> bool {
        self.used() >= self.limit || self.wall_deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// The deadline a host read gets: the time left of the budget from now, within the cap.
    fn read_deadline(&self) -> Option<Instant> {
        let by_budget = Instant::now().checked_add(self.remaining());
        match (by_budget, self.wall_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The calling thread's CPU time (Linux: `CLOCK_THREAD_CPUTIME_ID`; elsewhere the wall time
/// since the thread first asked, an upper bound). A run's time limit counts it, so a script
/// thread kept waiting for a core by the receiver is not failed for it.
#[cfg(target_os = "linux")]
pub(crate) fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn thread_cpu_time() -> std::time::Duration {
    thread_local! {
        static FIRST: std::time::Instant = std::time::Instant::now();
    }
    FIRST.with(|f| f.elapsed())
}

impl Budget {
    const LOADING: Budget = Budget {
        max_ops: LOAD_MAX_OPERATIONS,
        max_bytes: usize::MAX,
        time: None,
        tripped: None,
    };
}

/// Counts `d` (a host read, a sleep) as used time of the run on this thread.
fn add_waited(d: Duration) {
    BUDGET.with(|cell| {
        let mut b = cell.get();
        if let Some(t) = &mut b.time {
            t.waited += d;
        }
        cell.set(b);
    });
}

/// An error a host function made sticky: the run fails with it even if the script catches it.
#[derive(Debug, Clone)]
pub(crate) struct Fatal {
    pub kind: RunErrorKind,
    pub message: String,
    /// A transient error's "retry not before" (see `HostError::Transient`).
    pub not_before: Option<SystemTime>,
    pub position: Position,
    pub source: Option<String>,
}

/// State of the run in progress on this thread.
pub(crate) struct RunCtx {
    pub host: Arc<dyn Host>,
    pub script: String,
    pub event_id: String,
    /// The run's "now" ([`Host::now_ms`], read once as it starts), ms since the Unix epoch.
    pub now_ms: u64,
    pub max_emails: usize,
    /// Actions of every kind the run may record (`limits.max_actions`; see [`count_action`]).
    pub max_actions: usize,
    /// The From addresses `send_email(#{ from })` may name.
    pub senders: Senders,
    pub log: Vec<LogLine>,
    pub log_dropped: usize,
    pub actions: Vec<Action>,
    pub emails: usize,
    /// Actions counted by [`count_action`], per kind (in `ActionKind::ALL`'s order).
    pub counted: [usize; ActionKind::ALL.len()],
    pub fatal: Option<Fatal>,
    /// What the run read of and would change in its script's state and timers.
    pub state: super::state::RunState,
    /// The script's own functions (a shared handle on its AST's): the names `schedule` may call.
    pub functions: rhai::Shared<Module>,
}

thread_local! {
    static CTX: RefCell<Option<RunCtx>> = const { RefCell::new(None) };
    static BUDGET: Cell<Budget> = const { Cell::new(Budget::LOADING) };
    /// The operation count from which `progress` looks at `BUDGET` again: the next clock check
    /// or the first operation over the limit, whichever comes first; 0 (every operation) while
    /// no run is entered and once the run is tripped.
    static NEXT_CHECK: Cell<u64> = const { Cell::new(0) };
    /// The stdlib modules being resolved on this thread, outermost first: evaluating a module
    /// runs its imports, which call the resolver again (one load runs on one thread; several
    /// loads may run at once on different threads).
    static RESOLVING: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// The value of `alloc::thread_net_bytes()` over which the run in progress holds more than
    /// its `max_bytes`; `isize::MAX` while no run is entered.
    static MEM_LIMIT: Cell<isize> = const { Cell::new(isize::MAX) };
}

/// The `MEM_LIMIT` of a run allowed `max_bytes`, entered now.
fn mem_limit(max_bytes: usize) -> isize {
    super::alloc::thread_net_bytes()
        .saturating_add(isize::try_from(max_bytes).unwrap_or(isize::MAX))
}

/// The `NEXT_CHECK` after operation `ops` of a run allowed `max_ops` operations.
fn next_check(ops: u64, max_ops: u64) -> u64 {
    let next_clock = (ops / CLOCK_CHECK_INTERVAL + 1).saturating_mul(CLOCK_CHECK_INTERVAL);
    next_clock.min(max_ops.saturating_add(1))
}

/// Stops the current run at its next operation (sticky: `try`/`catch` cannot continue it).
fn trip(t: Trip) {
    BUDGET.with(|cell| {
        let mut b = cell.get();
        b.tripped = Some(t);
        cell.set(b);
    });
    NEXT_CHECK.set(0);
}

/// A run entered on this thread; restores the previous state when finished or dropped.
pub(crate) struct Entered {
    prev: Option<(Option<RunCtx>, Budget, isize)>,
}

/// Makes `ctx` and `budget` the current run of this thread.
pub(crate) fn enter(ctx: RunCtx, budget: Budget) -> Entered {
    let prev_ctx = CTX.with(|c| c.borrow_mut().replace(ctx));
    NEXT_CHECK.set(if budget.tripped.is_some() {
        0
    } else {
        next_check(0, budget.max_ops)
    });
    let prev_mem_limit = MEM_LIMIT.replace(mem_limit(budget.max_bytes));
    let prev_budget = BUDGET.with(|b| b.replace(budget));
    Entered {
        prev: Some((prev_ctx, prev_budget, prev_mem_limit)),
    }
}

impl Entered {
    /// Ends the run and returns its state.
    pub(crate) fn finish(mut self) -> (Option<RunCtx>, Budget) {
        self.restore()
    }

    fn restore(&mut self) -> (Option<RunCtx>, Budget) {
        match self.prev.take() {
            Some((prev_ctx, prev_budget, prev_mem_limit)) => {
                MEM_LIMIT.set(prev_mem_limit);
                let ctx = CTX.with(|c| std::mem::replace(&mut *c.borrow_mut(), prev_ctx));
                let budget = BUDGET.with(|b| b.replace(prev_budget));
                // `progress` recomputes it from the restored budget.
                NEXT_CHECK.set(0);
                (ctx, budget)
            }
            None => (None, Budget::LOADING),
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.restore();
    }
}

pub(crate) fn with_ctx<R>(f: impl FnOnce(&mut RunCtx) -> R) -> Option<R> {
    CTX.with(|c| c.borrow_mut().as_mut().map(f))
}

/// The `on_progress` callback, called on every operation: three thread-local reads on the fast
/// path (the operation count, and the heap count against its limit); the budget itself is
/// looked at every `CLOCK_CHECK_INTERVAL` operations, on the first operation over a limit and
/// after a trip.
fn progress(ops: u64) -> Option<Dynamic> {
    if ops < NEXT_CHECK.get() && super::alloc::thread_net_bytes() <= MEM_LIMIT.get() {
        return None;
    }
    check_budget(ops)
}

#[cold]
#[inline(never)]
fn check_budget(ops: u64) -> Option<Dynamic> {
    let b = BUDGET.get();
    if b.tripped.is_none() {
        if ops > b.max_ops {
            trip(Trip::Operations);
        } else if super::alloc::thread_net_bytes() > MEM_LIMIT.get() {
            trip(Trip::Memory);
        } else if ops.is_multiple_of(CLOCK_CHECK_INTERVAL) && b.time.is_some_and(|t| t.exhausted())
        {
            trip(Trip::Timeout);
        } else {
            if ops.is_multiple_of(CLOCK_CHECK_INTERVAL) {
                // A long run lets the work queued behind it have its compute slot.
                super::pool::checkpoint();
            }
            NEXT_CHECK.set(next_check(ops, b.max_ops));
            return None;
        }
    }
    Some(TERMINATE_TOKEN.into())
}

/// Records a sticky error and returns the error that stops the script.
fn fatal(
    ctx: &NativeCallContext,
    kind: RunErrorKind,
    message: String,
    not_before: Option<SystemTime>,
) -> Box<EvalAltResult> {
    let position = ctx.call_position();
    let source = ctx.call_source().map(str::to_string);
    with_ctx(|c| {
        if c.fatal.is_none() {
            c.fatal = Some(Fatal {
                kind,
                message,
                not_before,
                position,
                source,
            });
        }
    });
    trip(Trip::Fatal);
    Box::new(EvalAltResult::ErrorTerminated(
        TERMINATE_TOKEN.into(),
        Position::NONE,
    ))
}

fn runtime_error(message: String) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(message.into(), Position::NONE))
}

/// An error at the call: module functions' errors do not get the call site's position
/// from Rhai as global ones do.
fn error_at_call(ctx: &NativeCallContext, message: String) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        message.into(),
        ctx.call_position(),
    ))
}

pub(crate) fn not_in_run(name: &str) -> Box<EvalAltResult> {
    runtime_error(format!("{name} cannot be called while a module is loading"))
}

pub(crate) fn push_log(level: LogLevel, message: &str) {
    with_ctx(|c| {
        if c.log.len() >= MAX_LOG_LINES {
            c.log_dropped += 1;
            return;
        }
        let message = if message.chars().count() > MAX_LOG_LINE_CHARS {
            let mut m: String = message.chars().take(MAX_LOG_LINE_CHARS).collect();
            m.push('…');
            m
        } else {
            message.to_string()
        };
        c.log.push(LogLine { level, message });
    });
}

fn dyn_text(v: &Dynamic) -> String {
    match v.read_lock::<ImmutableString>() {
        Some(s) => s.to_string(),
        None => v.to_string(),
    }
}

/// Counts one more action of `kind` for the run in progress, against `limits.max_actions`
/// (actions of all kinds per run). Every function that records an action (`send_email`, the
/// `okta::` actions, `http_post`/`http_request`) calls it once per action, after its arguments
/// were checked and just before it records: past the limit the run fails with a sticky
/// `Limit` error at the call naming `limits.max_actions`.
pub(crate) fn count_action(
    ctx: &NativeCallContext,
    kind: ActionKind,
) -> Result<(), Box<EvalAltResult>> {
    let index = ActionKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_default();
    let over = with_ctx(|c| {
        let total: usize = c.counted.iter().sum();
        if total >= c.max_actions {
            let so_far: Vec<String> = ActionKind::ALL
                .iter()
                .zip(c.counted)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{n} {}", k.as_str()))
                .collect();
            return Some((c.max_actions, so_far));
        }
        c.counted[index] += 1;
        None
    })
    .ok_or_else(|| not_in_run(kind.as_str()))?;
    match over {
        None => Ok(()),
        Some((max, so_far)) => {
            let so_far = if so_far.is_empty() {
                "none".to_string()
            } else {
                so_far.join(", ")
            };
            Err(fatal(
                ctx,
                RunErrorKind::Limit,
                format!(
                    "script recorded more than {max} actions (limits.max_actions): {so_far} before this {} action",
                    kind.as_str()
                ),
                None,
            ))
        }
    }
}

fn send_email(ctx: NativeCallContext, map: Map) -> Result<ImmutableString, Box<EvalAltResult>> {
    let senders = with_ctx(|c| c.senders.clone()).ok_or_else(|| not_in_run("send_email"))?;
    let mut email = parse_email(&map, &senders).map_err(runtime_error)?;
    let checked = with_ctx(|c| {
        if c.emails >= c.max_emails {
            return Err(c.max_emails);
        }
        email.position = c.emails;
        let key = email
            .key
            .clone()
            .unwrap_or_else(|| default_key(ActionKind::Email, email.position));
        email.id = action_id(&c.event_id, &c.script, &key);
        if c.actions.iter().any(|a| a.id() == email.id) {
            return Ok(Err(key));
        }
        Ok(Ok(()))
    })
    .ok_or_else(|| not_in_run("send_email"))?;
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(key)) => {
            return Err(runtime_error(format!(
                "send_email: key `{key}` is used twice in this run (each action needs its own key)"
            )));
        }
        Err(max) => {
            return Err(fatal(
                &ctx,
                RunErrorKind::Limit,
                format!("script sent more than {max} emails (limits.max_emails)"),
                None,
            ));
        }
    }
    count_action(&ctx, ActionKind::Email)?;
    let id = email.id.clone();
    with_ctx(|c| {
        c.emails += 1;
        c.actions.push(Action::Email(email));
    })
    .ok_or_else(|| not_in_run("send_email"))?;
    Ok(id.into())
}

fn lookup_user(
    ctx: NativeCallContext,
    key: ImmutableString,
) -> Result<Dynamic, Box<EvalAltResult>> {
    if key.trim().is_empty() {
        // Still only inside a run.
        with_ctx(|_| ()).ok_or_else(|| not_in_run("lookup_user"))?;
        return Ok(Dynamic::UNIT);
    }
    let what = format!("lookup_user({:?})", key.as_str());
    host_read(&ctx, "lookup_user", &what, |host, deadline| {
        host.lookup_user(&key, deadline)
    })
    .map(|found| found.map_or(Dynamic::UNIT, |u| user_to_dynamic(&u)))
}

/// A read through the host during a run (`lookup_user`, the `okta::` reads), within the run's
/// deadline: a transient failure fails the run as transient (retried later, sticky), running
/// out of time fails it with its time limit, a permanent one is an error at the call.
pub(crate) fn host_read<T>(
    ctx: &NativeCallContext,
    name: &str,
    what: &str,
    read: impl FnOnce(&dyn Host, Option<Instant>) -> Result<T, HostError>,
) -> Result<T, Box<EvalAltResult>> {
    let host = with_ctx(|c| c.host.clone()).ok_or_else(|| not_in_run(name))?;
    // The read gets what is left of the run's time: it must not hold the thread past the
    // limit. Its wait counts as the run's time.
    let time = BUDGET.with(|b| b.get().time);
    if time.is_some_and(|t| t.exhausted()) {
        return Err(out_of_time(ctx));
    }
    let deadline = time.and_then(|t| t.read_deadline());
    // The host is called outside any borrow of the run state.
    let asked = Instant::now();
    let answer = read(host.as_ref(), deadline);
    add_waited(asked.elapsed());
    match answer {
        Ok(v) => Ok(v),
        Err(HostError::Transient {
            message,
            not_before,
        }) => Err(fatal(
            ctx,
            RunErrorKind::Transient,
            format!("{what}: {message} (transient; the run will be retried)"),
            not_before,
        )),
        Err(HostError::OutOfTime(_)) => Err(out_of_time(ctx)),
        Err(HostError::Permanent(msg)) => Err(error_at_call(ctx, format!("{what}: {msg}"))),
    }
}

/// The endpoint `name` as the host knows it, or the error at the call: not declared, with a
/// did-you-mean among the declared ones.
fn endpoint_of(
    ctx: &NativeCallContext,
    function: &str,
    name: &str,
) -> Result<EndpointInfo, Box<EvalAltResult>> {
    let host = with_ctx(|c| c.host.clone()).ok_or_else(|| not_in_run(function))?;
    if let Some(info) = host.endpoint(name) {
        return Ok(info);
    }
    let names = host.endpoint_names();
    let hint = match super::suggest::nearest(name, &names) {
        Some(n) => format!(": did you mean \"{n}\"?"),
        None if names.is_empty() => {
            ": engine.toml declares no endpoints (add [endpoint.NAME] with url or url_env)"
                .to_string()
        }
        None => format!(" (declared: {})", names.join(", ")),
    };
    Err(error_at_call(
        ctx,
        format!("{function}: no endpoint `{name}` in engine.toml{hint}"),
    ))
}

/// Records an `http` action (carried out by the `http` executor after the run succeeds) and
/// returns its id: key the script's `key`, else `http#<position>`.
fn record_http(
    ctx: &NativeCallContext,
    function: &str,
    mut request: HttpRequest,
) -> Result<ImmutableString, Box<EvalAltResult>> {
    count_action(ctx, ActionKind::Http)?;
    let recorded = with_ctx(|c| {
        let position = c
            .actions
            .iter()
            .filter(|a| a.kind() == ActionKind::Http)
            .count();
        let key = request
            .key
            .clone()
            .unwrap_or_else(|| default_key(ActionKind::Http, position));
        request.position = position;
        request.id = action_id(&c.event_id, &c.script, &key);
        if c.actions.iter().any(|a| a.id() == request.id) {
            return Err(key);
        }
        let id = request.id.clone();
        c.actions.push(Action::Http(request));
        Ok(id)
    })
    .ok_or_else(|| not_in_run(function))?;
    match recorded {
        Ok(id) => Ok(id.into()),
        Err(key) => Err(error_at_call(
            ctx,
            format!(
                "{function}: key `{key}` is used twice in this run (each action needs its own key)"
            ),
        )),
    }
}

fn http_post(
    ctx: NativeCallContext,
    endpoint: ImmutableString,
    body: Dynamic,
) -> Result<ImmutableString, Box<EvalAltResult>> {
    endpoint_of(&ctx, "http_post", &endpoint)?;
    let request = parse_post(&endpoint, &body).map_err(|e| error_at_call(&ctx, e))?;
    record_http(&ctx, "http_post", request)
}

fn http_request(
    ctx: NativeCallContext,
    endpoint: ImmutableString,
    map: Map,
) -> Result<ImmutableString, Box<EvalAltResult>> {
    let info = endpoint_of(&ctx, "http_request", &endpoint)?;
    let request = parse_request(&endpoint, &info, &map).map_err(|e| error_at_call(&ctx, e))?;
    record_http(&ctx, "http_request", request)
}

fn http_get(
    ctx: NativeCallContext,
    endpoint: ImmutableString,
    map: Map,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let info = endpoint_of(&ctx, "http_get", &endpoint)?;
    let request = parse_get(&endpoint, &info, &map).map_err(|e| error_at_call(&ctx, e))?;
    let what = format!("http_get({:?}, {:?})", endpoint.as_str(), request.path);
    host_read(&ctx, "http_get", &what, |host, deadline| {
        host.http_get(&request, deadline)
    })
    .map(|a| a.to_dynamic())
}

const HTTP_POST_DOC: &str = "/// Queues a POST to the endpoint `[endpoint.NAME]` declares, sent after the run succeeds\n\
/// (a failed run sends nothing); returns the action id (sent as `Idempotency-Key`).\n\
/// `body`: a map or array is sent as JSON, a string as text.";
const HTTP_REQUEST_DOC: &str = "/// Queues a request to an endpoint: `#{ method?, path?, query?, headers?, json?, body?, key? }`\n\
/// (`method` POST by default; `path` appended to the endpoint's URL; `headers` cannot override\n\
/// the endpoint's configured ones). Returns the action id.";
const HTTP_GET_DOC: &str = "/// Reads from an endpoint during the run: `#{ path?, query?, headers? }` →\n\
/// `#{ status, headers, json, body, truncated }`. A transient failure (timeout, 5xx, 429)\n\
/// retries the whole run later.";

/// `okta::user_groups(user)`: `[#{ id, name, description, type }]`.
fn okta_user_groups(ctx: NativeCallContext, user: Dynamic) -> Result<Dynamic, Box<EvalAltResult>> {
    let key =
        user_ref(&user).map_err(|e| error_at_call(&ctx, format!("okta::user_groups: {e}")))?;
    let what = format!("okta::user_groups({key:?})");
    let groups = host_read(&ctx, "okta::user_groups", &what, |host, deadline| {
        host.okta_user_groups(&key, deadline)
    })?;
    Ok(Dynamic::from_array(
        groups.iter().map(OktaGroup::to_dynamic).collect(),
    ))
}

/// `okta::get_group(id_or_name)`: the group map or `()`.
fn okta_get_group(ctx: NativeCallContext, group: Dynamic) -> Result<Dynamic, Box<EvalAltResult>> {
    let group =
        group_ref(&group).map_err(|e| error_at_call(&ctx, format!("okta::get_group: {e}")))?;
    let what = format!("okta::get_group({:?})", group.as_str());
    let found = host_read(&ctx, "okta::get_group", &what, |host, deadline| {
        host.okta_get_group(&group, deadline)
    })?;
    Ok(found.map_or(Dynamic::UNIT, |g| g.to_dynamic()))
}

const USER_GROUPS_DOC: &str = "/// The Okta groups of a user (an Okta user id, a login, a `lookup_user` map or an\n\
/// actor/target map): `[#{ id, name, description, type }]`, read from Okta during the run.\n\
/// A transient failure (Okta down, rate limit) retries the whole run later.";
const GET_GROUP_DOC: &str = "/// The Okta group with this id or exact name (or a `UserGroup` target map's id):\n\
/// `#{ id, name, description, type }`, or `()` when there is none. Read during the run.";

/// The `okta::` action functions: (name, whether it takes a second argument).
pub const OKTA_ACTIONS: &[(&str, bool)] = &[
    ("suspend_user", false),
    ("unsuspend_user", false),
    ("deactivate_user", false),
    ("clear_sessions", false),
    ("expire_password", false),
    ("add_to_group", true),
    ("remove_from_group", true),
    ("update_profile", true),
];

/// Records an `okta` action (carried out by the action queue's `okta` executor after the run
/// succeeds) and returns its id; the id derives from the event, the script and `okta#<position>`.
fn record_okta(ctx: &NativeCallContext, op: OktaOp) -> Result<ImmutableString, Box<EvalAltResult>> {
    let name = op.name();
    count_action(ctx, ActionKind::Okta)?;
    let recorded = with_ctx(|c| {
        let position = c
            .actions
            .iter()
            .filter(|a| a.kind() == ActionKind::Okta)
            .count();
        let key = default_key(ActionKind::Okta, position);
        let id = action_id(&c.event_id, &c.script, &key);
        c.actions.push(Action::Okta(OktaAction {
            id: id.clone(),
            position,
            op,
        }));
        id
    })
    .ok_or_else(|| not_in_run(name))?;
    Ok(recorded.into())
}

const OKTA_ACTION_DOC: &str = "/// Records an `okta` action, carried out once after the run succeeds (see docs/scripting.md):\n\
/// `user` is an Okta user id, a login, a `lookup_user` map or an actor/target map; `group` a\n\
/// group id or name, a `UserGroup` target map or an `okta::get_group` map. Returns the action id.";

/// Adds the `okta::` action functions to the `okta` module (unless `stdlib/okta.rhai` defines
/// one of the same name and arity): each checks its arguments into an [`OktaOp`] at the call.
fn add_okta_actions(module: &mut Module, defined: &[(String, usize)]) {
    for &(name, two) in OKTA_ACTIONS {
        let arity = if two { 2 } else { 1 };
        if defined.iter().any(|(n, a)| n == name && *a == arity) {
            continue;
        }
        let reg = FuncRegistration::new(name)
            .in_internal_namespace()
            .with_comments([OKTA_ACTION_DOC]);
        if two {
            let second = if name == "update_profile" {
                "profile: Map"
            } else {
                "group: ?"
            };
            reg.with_params_info(["user: ?", second, "String"])
                .set_into_module(
                    module,
                    move |ctx: NativeCallContext, user: Dynamic, extra: Dynamic| {
                        let op = OktaOp::from_args(name, &user, Some(&extra))
                            .map_err(|e| error_at_call(&ctx, e))?;
                        record_okta(&ctx, op)
                    },
                );
        } else {
            reg.with_params_info(["user: ?", "String"]).set_into_module(
                module,
                move |ctx: NativeCallContext, user: Dynamic| {
                    let op =
                        OktaOp::from_args(name, &user, None).map_err(|e| error_at_call(&ctx, e))?;
                    record_okta(&ctx, op)
                },
            );
        }
    }
}

/// Adds the `okta::` reads to the `okta` module unless `stdlib/okta.rhai` defines a function of
/// the same name and arity (`defined`: (name, arity) of its script functions).
fn add_okta_reads(module: &mut Module, defined: &[(String, usize)]) {
    let missing = |name: &str, arity: usize| !defined.iter().any(|(n, a)| n == name && *a == arity);
    if missing("user_groups", 1) {
        FuncRegistration::new("user_groups")
            .in_internal_namespace()
            .with_params_info(["user: ?", "Array"])
            .with_comments([USER_GROUPS_DOC])
            .set_into_module(module, okta_user_groups);
    }
    if missing("get_group", 1) {
        FuncRegistration::new("get_group")
            .in_internal_namespace()
            .with_params_info(["id_or_name: ?", "?"])
            .with_comments([GET_GROUP_DOC])
            .set_into_module(module, okta_get_group);
    }
}

/// Stops the run with its time limit error, at the host function's call.
fn out_of_time(ctx: &NativeCallContext) -> Box<EvalAltResult> {
    trip(Trip::Timeout);
    Box::new(EvalAltResult::ErrorTerminated(
        TERMINATE_TOKEN.into(),
        ctx.call_position(),
    ))
}

fn sleep_for(seconds: f64) -> Result<(), Box<EvalAltResult>> {
    if !seconds.is_finite() || seconds <= 0.0 {
        return Ok(());
    }
    let Some(time) = BUDGET.with(|b| b.get().time) else {
        return Err(not_in_run("sleep"));
    };
    let want = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX);
    if want >= time.remaining() {
        // Sleeping would outlive the run: fail now instead of holding the thread.
        trip(Trip::Timeout);
        return Err(Box::new(EvalAltResult::ErrorTerminated(
            TERMINATE_TOKEN.into(),
            Position::NONE,
        )));
    }
    super::pool::blocking(|| std::thread::sleep(want));
    add_waited(want);
    Ok(())
}

/// Module names: `name` or `dir/name` of `[A-Za-z0-9_-]`, optionally ending in `.rhai`.
pub(crate) fn check_module_name(path: &str) -> Result<&str, String> {
    let name = path.strip_suffix(".rhai").unwrap_or(path);
    let ok = !name.is_empty()
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "import {path:?}: modules are imported by name from the stdlib directory (e.g. `import \"okta\" as okta;`); paths with `..`, `/` at the start, `\\` or other characters are not allowed"
        ))
    }
}

/// Resolves `import "name"` to `<stdlib_dir>/name.rhai`, and nothing else. Records the sources it
/// read so a script's hash covers them.
pub(crate) struct StdlibResolver {
    dir: PathBuf,
    loaded: Mutex<BTreeMap<String, String>>,
}

impl StdlibResolver {
    pub(crate) fn new(dir: &Path) -> Self {
        StdlibResolver {
            dir: dir.to_path_buf(),
            loaded: Mutex::new(BTreeMap::new()),
        }
    }

    /// The (name, source) pairs read since the last call.
    pub(crate) fn take_loaded(&self) -> BTreeMap<String, String> {
        match self.loaded.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    pub(crate) fn file_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.rhai"))
    }

    fn read(&self, path: &str, pos: Position) -> Result<(String, String), Box<EvalAltResult>> {
        let name = check_module_name(path).map_err(|m| runtime_error_at(m, pos))?;
        let file = self.file_of(name);
        // Refuse symlinks that lead out of the stdlib directory.
        if let (Ok(real), Ok(root)) = (file.canonicalize(), self.dir.canonicalize())
            && !real.starts_with(&root)
        {
            return Err(runtime_error_at(
                format!("import {path:?}: the module file lies outside the stdlib directory"),
                pos,
            ));
        }
        let source = std::fs::read_to_string(&file).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Box::new(EvalAltResult::ErrorModuleNotFound(path.to_string(), pos))
            }
            _ => runtime_error_at(
                format!("import {path:?}: cannot read {}: {e}", file.display()),
                pos,
            ),
        })?;
        if let Ok(mut l) = self.loaded.lock() {
            l.insert(name.to_string(), source.clone());
        }
        Ok((name.to_string(), source))
    }

    fn compile(
        &self,
        engine: &Engine,
        path: &str,
        pos: Position,
    ) -> Result<rhai::AST, Box<EvalAltResult>> {
        let (name, source) = self.read(path, pos)?;
        let mut ast = engine.compile(&source).map_err(|e| {
            Box::new(EvalAltResult::ErrorInModule(
                path.to_string(),
                Box::new(e.into()),
                pos,
            ))
        })?;
        ast.set_source(format!("stdlib/{name}.rhai"));
        Ok(ast)
    }
}

fn runtime_error_at(message: String, pos: Position) -> Box<EvalAltResult> {
    refused(Refusal::File, message, pos)
}

fn refused(why: Refusal, message: String, pos: Position) -> Box<EvalAltResult> {
    let mut value: Dynamic = message.into();
    value.set_tag((why as i16).into());
    Box::new(EvalAltResult::ErrorRuntime(value, pos))
}

/// The message and hint of an error the resolver raised itself.
pub(crate) fn refusal_message(e: &EvalAltResult) -> Option<(String, Option<String>)> {
    let EvalAltResult::ErrorRuntime(v, _) = e else {
        return None;
    };
    let tag = i16::try_from(v.tag()).ok()?;
    let why = Refusal::ALL.into_iter().find(|r| *r as i16 == tag)?;
    let message = v.read_lock::<ImmutableString>()?.to_string();
    Some((message, why.hint()))
}

/// Module `name` is being resolved on this thread; leaves the chain when dropped.
struct Resolving;

impl Resolving {
    /// Puts `name` on this thread's chain of modules being resolved, unless that closes a
    /// cycle or makes the chain longer than [`MAX_IMPORT_DEPTH`]. `pos` is where the import
    /// stands in the module at the end of the chain.
    fn enter(name: &str, pos: Position) -> Result<Resolving, Box<EvalAltResult>> {
        RESOLVING.with(|chain| {
            let mut chain = chain.borrow_mut();
            if let Some(start) = chain.iter().position(|m| m == name) {
                let cycle: Vec<&str> = chain[start..].iter().map(String::as_str).collect();
                return Err(refused(
                    Refusal::Cycle,
                    format!("import cycle: {} -> {name}", cycle.join(" -> ")),
                    pos,
                ));
            }
            if chain.len() >= MAX_IMPORT_DEPTH {
                return Err(refused(
                    Refusal::TooDeep,
                    format!(
                        "import chain more than {MAX_IMPORT_DEPTH} modules deep: {} -> {name}",
                        chain.join(" -> ")
                    ),
                    pos,
                ));
            }
            chain.push(name.to_string());
            Ok(Resolving)
        })
    }
}

impl Drop for Resolving {
    fn drop(&mut self) {
        RESOLVING.with(|chain| chain.borrow_mut().pop());
    }
}

/// Adapter so the resolver can be shared with the loader after the engine owns it.
struct SharedResolver(Arc<StdlibResolver>);

impl ModuleResolver for SharedResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Arc<Module>, Box<EvalAltResult>> {
        if CTX.with(|c| c.borrow().is_some()) {
            // Literal imports are embedded at load; resolving now would read the file as it is
            // (not the version the script's hash covers) from inside a run.
            return Err(runtime_error_at(
                format!(
                    "import {path:?} while a script runs: stdlib modules are embedded when the script loads, so an import must name its module by a string literal"
                ),
                pos,
            ));
        }
        let name = check_module_name(path).map_err(|m| runtime_error_at(m, pos))?;
        // Evaluating the module below resolves its imports (recursively): refuse a cycle or a
        // chain too deep before it overflows the stack.
        let _resolving = Resolving::enter(name, pos)?;
        let ast = self.0.compile(engine, path, pos)?;
        let mut module = Module::eval_ast_as_new(Scope::new(), &ast, engine)
            .map_err(|e| Box::new(EvalAltResult::ErrorInModule(path.to_string(), e, pos)))?;
        if check_module_name(path) == Ok("okta") {
            let defined: Vec<(String, usize)> = ast
                .iter_functions()
                .map(|f| (f.name.to_string(), f.params.len()))
                .collect();
            super::naming::add_to_okta_module(&mut module, &defined);
            add_okta_reads(&mut module, &defined);
            add_okta_actions(&mut module, &defined);
        }
        Ok(module.into())
    }

    fn resolve_ast(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Option<Result<rhai::AST, Box<EvalAltResult>>> {
        Some(self.0.compile(engine, path, pos))
    }
}

const LOG_DOC: &str = "/// Adds a line to the run's log (`engine run`, `engine runs` show it). Non-strings are\n\
/// converted with `to_string`; a float is Rhai's math `log`: write ``log(`${x}`)``.\n\
/// At most 1,000 lines of 4,096 characters per run are kept.";
const WARN_DOC: &str = "/// Adds a warning line to the run's log (like `log`).";
const SEND_EMAIL_DOC: &str = "/// Queues a mail, sent after the run succeeds (a failed run sends nothing); returns its id.\n\
///\n\
/// `#{ to, subject, body, html?, cc?, bcc?, reply_to?, from?, key? }`: `to`, `cc`, `bcc` are\n\
/// an address, `\"Name <addr>\"`, a `lookup_user` map (its email), an actor or target map\n\
/// whose `alternateId` is an address (its displayName kept), or an array of those; `subject`\n\
/// is one line; `from` is `[smtp] from` or an address in `[smtp] allowed_from`; `key` names\n\
/// the mail among the run's (its id derives from it). Any other key is an error.";
const LOOKUP_USER_DOC: &str = "/// The user with this email, login or Okta user id, or `()` when there is none:\n\
/// `#{ id, status, login, email, firstName, lastName, displayName, managerId, manager,\n\
/// department, title, profile }` (every key present, `()` when unknown).\n\
///\n\
/// Reads the `[directory]` file, then the Okta Users API. A transient failure (Okta down,\n\
/// rate limit) retries the whole run later, even inside `try`/`catch`.";
const SLEEP_DOC: &str =
    "/// Waits `seconds`; a sleep that would outlast the run's time limit fails the run at once.";

/// A host function's registration with the parameters (`name: Type`, then the return type)
/// and doc comment its editor definition shows.
fn host_fn(name: &str, params: &[&str], doc: &str) -> FuncRegistration {
    FuncRegistration::new(name)
        .with_params_info(params)
        .with_comments([doc])
}

/// The stdlib module `name` as an import of it gives it (the `okta` module with its native
/// helpers), compiled with `engine`: for editor definitions.
pub(crate) fn stdlib_module(
    engine: &Engine,
    resolver: &Arc<StdlibResolver>,
    name: &str,
) -> Result<Arc<Module>, Box<EvalAltResult>> {
    SharedResolver(resolver.clone()).resolve(engine, None, name, Position::NONE)
}

/// Builds the sandboxed engine for one script set.
pub(crate) fn new_engine(stdlib_dir: &Path, limits: &Limits) -> (Engine, Arc<StdlibResolver>) {
    let resolver = Arc::new(StdlibResolver::new(stdlib_dir));
    let mut engine = Engine::new();
    // The interner's lock stalls threads sharing a `sync` engine (FIELD-NOTES).
    engine.set_max_strings_interned(0);
    engine.set_strict_variables(true);
    engine.set_fail_on_invalid_map_property(true);
    // Constants stay constants, but no functions are called at compile time.
    engine.set_optimization_level(OptimizationLevel::Simple);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_expr_depths(limits.max_expr_depth, limits.max_function_expr_depth);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_modules(limits.max_modules);
    // Operations are counted per run by `progress` (limits may differ per run).
    engine.set_max_operations(0);
    for sym in DISABLED_SYMBOLS {
        engine.disable_symbol(*sym);
    }
    engine.set_module_resolver(SharedResolver(resolver.clone()));
    engine.on_progress(progress);
    engine.on_print(|s| push_log(LogLevel::Print, s));
    engine.on_debug(|s, _source, _pos| push_log(LogLevel::Debug, s));

    // Host functions, with the parameter names and doc comments editor definitions show
    // (`engine definitions`); neither changes how they run.
    host_fn("log", &["msg: String", "()"], LOG_DOC)
        .register_into_engine(&mut engine, |msg: ImmutableString| {
            push_log(LogLevel::Log, &msg)
        });
    host_fn("log", &["msg: ?", "()"], LOG_DOC).register_into_engine(&mut engine, |msg: Dynamic| {
        push_log(LogLevel::Log, &dyn_text(&msg))
    });
    host_fn("warn", &["msg: String", "()"], WARN_DOC)
        .register_into_engine(&mut engine, |msg: ImmutableString| {
            push_log(LogLevel::Warn, &msg)
        });
    host_fn("warn", &["msg: ?", "()"], WARN_DOC)
        .register_into_engine(&mut engine, |msg: Dynamic| {
            push_log(LogLevel::Warn, &dyn_text(&msg))
        });
    host_fn("send_email", &["mail: Map", "String"], SEND_EMAIL_DOC)
        .register_into_engine(&mut engine, send_email);
    host_fn(
        "http_post",
        &["endpoint: String", "body: ?", "String"],
        HTTP_POST_DOC,
    )
    .register_into_engine(&mut engine, http_post);
    host_fn(
        "http_request",
        &["endpoint: String", "request: Map", "String"],
        HTTP_REQUEST_DOC,
    )
    .register_into_engine(&mut engine, http_request);
    host_fn(
        "http_get",
        &["endpoint: String", "request: Map", "Map"],
        HTTP_GET_DOC,
    )
    .register_into_engine(&mut engine, http_get);
    host_fn("http_get", &["endpoint: String", "Map"], HTTP_GET_DOC).register_into_engine(
        &mut engine,
        |ctx: NativeCallContext, endpoint: ImmutableString| http_get(ctx, endpoint, Map::new()),
    );
    super::state::register(&mut engine);
    super::time::register(&mut engine);
    host_fn("lookup_user", &["key: String", "?"], LOOKUP_USER_DOC)
        .register_into_engine(&mut engine, lookup_user);
    host_fn("lookup_user", &["key: ()", "()"], LOOKUP_USER_DOC)
        .register_into_engine(&mut engine, |_: ()| Dynamic::UNIT);
    // Replace the built-in `sleep`, which blocks past the run's deadline.
    host_fn("sleep", &["seconds: int", "()"], SLEEP_DOC)
        .register_into_engine(&mut engine, |s: INT| sleep_for(s as f64));
    host_fn("sleep", &["seconds: float", "()"], SLEEP_DOC)
        .register_into_engine(&mut engine, sleep_for);
    (engine, resolver)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_thread_cpu_clock_counts_work_not_sleep() {
        let t0 = thread_cpu_time();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let slept = thread_cpu_time() - t0;
        let t1 = thread_cpu_time();
        let mut x = 0u64;
        while thread_cpu_time() - t1 < std::time::Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(slept < std::time::Duration::from_millis(20), "{slept:?}");
        assert!(thread_cpu_time() - t1 >= std::time::Duration::from_millis(20));
    }

    /// A run's time is what it did and waited for in host calls; time its thread spent
    /// waiting for a core (here: asleep, outside any host call) does not count, up to the cap.
    #[test]
    fn a_run_is_not_charged_for_time_it_was_not_running() {
        let mut t = TimeBudget::starting_now(Duration::from_millis(40));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!t.exhausted(), "60 ms off the CPU is not 40 ms of run time");
        t.waited = Duration::from_millis(45);
        assert!(t.exhausted(), "45 ms waiting in a host call is");
        let capped = TimeBudget {
            started: Instant::now() - Duration::from_millis(40 * u64::from(WALL_CLOCK_FACTOR)),
            ..TimeBudget::starting_now(Duration::from_millis(40))
        };
        assert!(capped.exhausted(), "past the wall-clock cap");
    }
}
