//! The script layer: loads user Rhai scripts, builds the `event` map and runs scripts in a sandbox.
//!
//! Self-contained: nothing here imports from the rest of the crate (the tidy test enforces it),
//! so it can be compiled and tested on its own. Everything else sits above it.
//!
//! # Public API
//!
//! ```text
//! // Loading (one sync Engine per ScriptSet, shared by all threads; imports resolved only in stdlib_dir)
//! ScriptSet::load(scripts_dir: &Path, stdlib_dir: &Path, limits: &Limits) -> (ScriptSet, Vec<LoadError>)
//! ScriptSet::load_one(path: &Path, stdlib_dir: &Path, limits: &Limits) -> Result<Arc<Script>, LoadError>
//! ScriptSet::matching(&self, hook: &str, event_type: &str) -> Vec<Arc<Script>>   // by script name
//! ScriptSet::scripts(&self) -> &[Arc<Script>];  ScriptSet::get(&self, name);  ScriptSet::empty()
//! ScriptSet::keep_previous(&mut self, previous: &ScriptSet, errors: &[LoadError])  // hot reload
//! LiveScripts = Arc<ArcSwap<ScriptSet>>                      // the published set (hot reload swaps it)
//! Script { name, path, file_name, hash, on, hooks, header, source } + matches(hook, event_type), ast(), engine()
//! LoadError { kind: LoadErrorKind, file, line, col, message, hint, source_line, script }
//! parse_header(source) -> Result<Header { on, hooks: [HeaderEntry { value, line, col }] }, HeaderError>
//! pattern_matches(pattern, event_type) -> bool              // the one `on:` pattern matcher
//! visible_files(dir, ext) -> sorted non-hidden `*.ext` files; read_source(path) -> script text
//! MAX_IMPORT_DEPTH                                // longest chain of stdlib modules importing one another
//!
//! // Running (synchronous: call it from a blocking thread)
//! run(script, event_json: &[u8], event_id: &str, delivery: &DeliveryInfo, host: &Arc<dyn Host>,
//!     limits: &Limits, senders: &Senders) -> RunOutcome
//! run_map(script, event: rhai::Map, event_id, delivery, host, limits, senders) -> RunOutcome  // map already built
//! Senders { default, allowed } (Default: DEFAULT_FROM only; permits(address))  // send_email's `from`
//! parse_mailbox(s) -> Result<Mailbox { name, address }, String>; Mailbox::to_header_string()
//! RunOutcome { log: Vec<LogLine>, actions: Vec<Action>, result: Result<(), RunError> }
//! RunError { kind: RunErrorKind::{Script, Limit, Transient}, message, script, file, line, col,
//!            trace: Vec<String>, hint: Option<String>, not_before_ms: Option<u64> }
//!                                 // Display: `new-hire.rhai:12:5: message` (then the trace, then `hint: …`)
//! LogLine { level: LogLevel::{Log, Warn, Print, Debug}, message }   // all serde
//! Action::Email(Email { id, position, to, cc, bcc, reply_to, subject, body, html, key, from })
//!     // serde; recipients and `from` are mailbox strings (`a@x`, `Name <a@x>`); `from: None`:
//!     // the configured From (and what mails queued before `from` existed hold)
//! Action::Okta(OktaAction { id, position, op: OktaOp })
//! Action::Http(HttpRequest { id, position, key, endpoint, method, path, query, headers, body })
//!     // http_post(endpoint, body) / http_request(endpoint, map): key http#<position>;
//!     // http_get(endpoint, map?) reads through Host::http_get; Host::endpoint(name) says
//!     // which endpoints exist and which headers they configure
//!
//! // Host side
//! trait Host: Send + Sync {
//!     fn lookup_user(&self, key: &str, deadline: Option<Instant>) -> Result<Option<User>, HostError>;
//!     fn okta_user_groups(&self, user, deadline) -> Result<Vec<OktaGroup>, HostError>;   // default: NO_OKTA
//!     fn okta_get_group(&self, group: &GroupRef, deadline) -> Result<Option<OktaGroup>, HostError>;
//! }
//! OktaOp::{SuspendUser, …, UpdateProfile} (serde; from_args(function, user, extra), describe())
//! okta::suspend_user(user) … okta::update_profile(user, map)   // in the okta module: arguments
//!     checked into an OktaOp at the call and recorded as Action::Okta(OktaAction { id, position,
//!     op }) (key okta#<position>); okta::user_groups / okta::get_group read via the Host
//! user_ref(&Dynamic), group_ref(&Dynamic) -> GroupRef::{Id, Name}; OktaGroup { id, name, description, kind }
//! HostError::{Transient { message, not_before: Option<SystemTime> }, Permanent(String),
//!             OutOfTime(String)}; HostError::transient(message)
//! User (serde, camelCase like Okta's profile)
//! NoDirectory (always Ok(None)); StaticDirectory::new(Vec<User>)
//!
//! // Events
//! build_event_map(event_json: &[u8]) -> Result<rhai::Map, String>
//! LOGEVENT_FIELDS: &[&str]; DeliveryInfo { id, time, hook, source }
//! schema::{LOGEVENT, ENTITY, DELIVERY, USER}: &[FieldDoc { name, ty: DocType, example, doc, fields }]
//!
//! // Editor support and suggestions
//! definitions(stdlib_dir, limits) -> Result<Vec<DefinitionFile { name, text }>, String>
//! DEFAULT_DEFINITIONS_DIR, HOST_FILE, SCOPE_FILE
//! nearest(name, candidates) -> Option<String>; edit_distance(a, b)
//! Limits { max_operations, timeout_ms, max_emails, max_actions, max_call_levels, max_expr_depth,
//!          max_function_expr_depth, max_string_size, max_array_size, max_map_size, max_modules }
//! ```
//!
//! Semantics worth knowing when wiring this in:
//! - Loading never overflows the stack on the stdlib: an import cycle (`a -> b -> a`) or a chain
//!   of modules deeper than [`MAX_IMPORT_DEPTH`] is a `LoadErrorKind::Import` error naming the
//!   chain, at the import that closes it. A run resolves no module: imports by literal are
//!   embedded at load, and one by a computed name inside a stdlib function fails the run.
//! - `run` never panics and never blocks beyond `limits.timeout_ms`: `lookup_user` passes the
//!   run's deadline to the host, and a host that answers `HostError::OutOfTime` (or a lookup
//!   called past the deadline) fails the run with its time limit (`RunErrorKind::Limit`). A
//!   panic inside a host function becomes a `RunErrorKind::Script` error.
//! - `RunOutcome::actions` holds what the script recorded even when `result` is `Err` (for
//!   `engine check`/`engine run` to show); a failed run must send nothing.
//! - `RunErrorKind::Transient` (a `HostError::Transient` from `lookup_user`) means "retry the whole
//!   run later", not before `RunError::not_before_ms` when the host said when (a rate limit's
//!   reset); it is sticky: a script cannot swallow it with `try`/`catch`. So are limit errors.
//! - `limits.max_actions` counts the actions of every kind: each recording function calls
//!   `engine::count_action(ctx, kind)` once per action; past it the run fails (`Limit`).
//! - `limits.max_operations`, `timeout_ms`, `max_emails` and `max_actions` are read per run (from the `limits`
//!   passed to `run`); the size, depth and call-level limits are fixed when the set is loaded.
//! - Each `Email` has a stable `id` (see [`Email::id`]) to use as its `Message-ID` local part and
//!   as the action queue's de-duplication key; it derives from the `event_id` given to `run`.
//!
//! # Layout
//!
//! - `load`: script files, headers, compilation into self-contained ASTs, hashes, `LoadError`.
//! - `header`: the `//! on:` / `//! hook:` header parser (the only one) and the pattern matcher.
//! - `engine`: the sandboxed engine, the stdlib-only module resolver, host functions, budgets.
//! - `run`: one run: scope, limits, Rhai errors into `RunError`s.
//! - `explain`: Rhai's run-time errors in the script's terms (which value was `()`, did you
//!   mean), with a hint; used by `run`, so the server, `engine run` and `engine check` agree.
//! - `suggest`: edit distance and the closest name (did you mean).
//! - `outcome`: what a run produced (log lines, errors, the outcome).
//! - `event`: the `event` and `delivery` maps built from LogEvent JSON.
//! - `schema`: the documented fields of `event`, `delivery` and the `lookup_user` map, with
//!   types, examples and a line of documentation each.
//! - `definitions`: the `.d.rhai` editor definition files (rhai's generator, plus the scope).
//! - `email`: `send_email`'s map into an `Email` action and its stable id.
//! - `host`: the `Host` trait (`lookup_user`, the `okta::` reads, endpoints and `http_get`) and
//!   the `User` record.
//! - `http`: `http_post`/`http_request`/`http_get` arguments into an `HttpRequest` (what an
//!   `http` action stores), the header and path rules, `HttpAnswer`.
//! - `naming`: native kernels of the `okta` module's naming helpers.
//! - `okta_op`: the `okta::` functions' user and group arguments, `OktaOp` (what an `okta`
//!   action stores) and `OktaGroup` (what the `okta::` reads return).
//! - `alloc`: the global allocator, with the per-thread heap count the memory limit reads.

pub mod alloc;
mod definitions;
mod duration;
mod email;
mod engine;
mod event;
mod explain;
mod header;
mod host;
mod http;
mod load;
mod naming;
mod okta_op;
mod outcome;
pub mod pool;
mod run;
pub mod schema;
mod state;
mod suggest;
mod time;

pub use definitions::{
    DEFAULT_DEFINITIONS_DIR, DefinitionFile, HOST_FILE, SCOPE_FILE, definitions,
};
pub use duration::{DURATION_HINT, MAX_DURATION, duration_value, parse_duration};
pub use email::{
    Action, ActionKind, DEFAULT_FROM, Email, MAX_ADDRESS_LEN, MAX_DISPLAY_NAME_CHARS,
    MAX_RECIPIENTS, MAX_SUBJECT_CHARS, Mailbox, OktaAction, Senders, action_id, default_key,
    parse_mailbox,
};
pub use engine::{MAX_IMPORT_DEPTH, OKTA_ACTIONS};
pub use event::{DeliveryInfo, LOGEVENT_FIELDS, build_event_map, delivery_map};
pub use header::{Header, HeaderEntry, HeaderError, parse_header, pattern_matches};
pub use host::{
    Host, HostError, NO_HTTP, NO_OKTA, NoDirectory, StaticDirectory, User, user_to_dynamic,
};
pub use http::{
    EndpointInfo, HttpAnswer, HttpBody, HttpRequest, MAX_HTTP_BODY_BYTES,
    MAX_HTTP_GET_ANSWER_BYTES, MAX_HTTP_HEADERS, SCRIPT_RESERVED_HEADERS, check_path,
};
pub use load::{Broken, LoadError, LoadErrorKind, Script, ScriptSet, read_source, visible_files};
pub use okta_op::{
    GroupRef, MAX_OKTA_REF_LEN, MAX_PROFILE_FIELDS, OktaGroup, OktaOp, group_ref,
    looks_like_okta_id, user_ref,
};
pub use outcome::{LogLevel, LogLine, RunError, RunErrorKind, RunOutcome};
pub use run::{run, run_map, run_timer};
pub use state::{
    Effects, MAX_STATE_KEY_CHARS, MAX_STATE_VALUE_BYTES, MAX_STATE_WRITES, MAX_TIMER_OPS,
    StateRead, StateValue, StateWrite, TimerOp, TimerSpec, parse_rfc3339_ms, rfc3339_ms,
};
pub use suggest::{edit_distance, nearest};

/// The live script set, swapped atomically by hot reload; runs hold the `Arc<Script>` they
/// started with.
pub type LiveScripts = std::sync::Arc<arc_swap::ArcSwap<ScriptSet>>;

use serde::{Deserialize, Serialize};

/// Per-run limits. The `[limits]` table of `engine.toml` deserializes straight into it (unknown
/// keys are rejected, missing ones take the defaults below).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Rhai operations per run (one operation ≈ one expression step).
    pub max_operations: u64,
    /// Wall-clock time per run, in milliseconds (checked every few hundred operations).
    pub timeout_ms: u64,
    /// Emails one run may queue.
    pub max_emails: usize,
    /// Actions of all kinds (mail, HTTP, Okta) one run may record.
    pub max_actions: usize,
    /// Nested function calls (script functions and stdlib helpers).
    pub max_call_levels: usize,
    /// Nesting depth of expressions/statements at the top level of a script.
    pub max_expr_depth: usize,
    /// Nesting depth of expressions/statements inside functions.
    pub max_function_expr_depth: usize,
    /// Characters in one string (and in all strings of one nested value).
    pub max_string_size: usize,
    /// Elements of one array (counting nested arrays).
    pub max_array_size: usize,
    /// Entries of one map (counting nested maps).
    pub max_map_size: usize,
    /// Modules a script may import (directly or through other modules).
    pub max_modules: usize,
    /// Heap bytes one run may hold (allocated minus freed on its thread; checked between
    /// operations, see `alloc`).
    pub max_memory_bytes: usize,
}

/// SPEC `[limits]` default: enough for any sane automation, stops runaway loops in well under 1 s.
pub const DEFAULT_MAX_OPERATIONS: u64 = 1_000_000;
/// SPEC `[limits]` default: 5 s per run.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// SPEC `[limits]` default: 50 mails per event is already a mail storm.
pub const DEFAULT_MAX_EMAILS: usize = 50;
/// SPEC `[limits]` default: 100 side effects of all kinds per event; one event that asks for
/// more is a loop gone wrong (a group's every member, a mail per array element), and each
/// action is a queue row and a far-side request.
pub const DEFAULT_MAX_ACTIONS: usize = 100;
/// Rhai's release default is 64 and debug 8; 32 allows real helper nesting yet fails deep
/// recursion fast, identically in debug and release builds.
pub const DEFAULT_MAX_CALL_LEVELS: usize = 32;
/// Rhai's release default; deeper nesting is a sign of generated code, not of an automation.
pub const DEFAULT_MAX_EXPR_DEPTH: usize = 64;
/// Rhai's release default for function bodies.
pub const DEFAULT_MAX_FUNCTION_EXPR_DEPTH: usize = 32;
/// 1 Mi characters: the whole delivery body is capped at 1 MiB (`max_body_bytes`), so no single
/// event's strings come near it, while `s += s` loops stop after ~20 doublings.
pub const DEFAULT_MAX_STRING_SIZE: usize = 1 << 20;
/// A LogEvent has a handful of targets and ipChain entries and deliveries are split before
/// scripts see them, so this only bounds what a script builds itself. Rhai re-measures an array
/// on every push (quadratic), so a much larger cap would let a push loop burn the whole timeout.
pub const DEFAULT_MAX_ARRAY_SIZE: usize = 10_000;
/// Entries of one map, nested: a large LogEvent has ~150 in all (a 100-event delivery ~15,000,
/// but scripts get one event at a time); same quadratic re-measuring as arrays.
pub const DEFAULT_MAX_MAP_SIZE: usize = 10_000;
/// Imports per script: the stdlib is small; this only stops import cycles and abuse.
pub const DEFAULT_MAX_MODULES: usize = 16;
/// 64 MiB per run: a whole `engine run` of the offboarding example peaks at 12.7 MB RSS. Rhai
/// does not re-measure a map when `m[k] = v` adds a key, so without this a loop adding 500 KB
/// strings reached 2.6 GB and aborted the server. With one run per slot in flight, the worst
/// case is run slots (`process::run_slots`: 4 per core, at least 4) × 64 MiB, reached only when
/// every run holds its heap while it waits (past one per core, runs queue before they start).
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 64 * 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: DEFAULT_MAX_OPERATIONS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            max_emails: DEFAULT_MAX_EMAILS,
            max_actions: DEFAULT_MAX_ACTIONS,
            max_call_levels: DEFAULT_MAX_CALL_LEVELS,
            max_expr_depth: DEFAULT_MAX_EXPR_DEPTH,
            max_function_expr_depth: DEFAULT_MAX_FUNCTION_EXPR_DEPTH,
            max_string_size: DEFAULT_MAX_STRING_SIZE,
            max_array_size: DEFAULT_MAX_ARRAY_SIZE,
            max_map_size: DEFAULT_MAX_MAP_SIZE,
            max_modules: DEFAULT_MAX_MODULES,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
        }
    }
}
