//! `state::get/set/incr/delete`, `schedule` and `cancel_schedule`: what a run reads of its
//! script's stored state (through [`Host::state_get`](super::Host::state_get)) and what it would
//! change, kept as the run's [`Effects`] and applied by the store in the transaction that
//! records the run. Nothing here reads or writes storage: a failed run's effects are dropped.

use std::collections::BTreeMap;

use rhai::{
    Dynamic, EvalAltResult, FuncRegistration, INT, ImmutableString, Map, Module, NativeCallContext,
};
use serde::{Deserialize, Serialize};

use super::duration::duration_value;
use super::engine::{RunCtx, host_read, not_in_run, with_ctx};

/// Longest state key, in characters: keys name things (`lockouts:<user id>`), they are not data.
pub const MAX_STATE_KEY_CHARS: usize = 256;
/// Largest value one key may hold, as JSON: state is for counters, flags and small records; a
/// larger value costs every run that reads it and every commit that writes it.
pub const MAX_STATE_VALUE_BYTES: usize = 64 * 1024;
/// Keys one run may change: each is a row written in the run's commit.
pub const MAX_STATE_WRITES: usize = 1_000;
/// Timers one run may schedule or cancel: each is a row written in the run's commit.
pub const MAX_TIMER_OPS: usize = 100;
/// Longest timer function name a `schedule` may give (a Rhai identifier).
const MAX_CALL_CHARS: usize = 128;
/// The keys `schedule`'s map may have.
/// `in` and `call` are Rhai keywords, so a map literal spells them `"in"` and `"call"`;
/// `after` and `run` say the same unquoted.
const SCHEDULE_KEYS: [&str; 7] = ["in", "after", "at", "call", "run", "args", "key"];

/// A key's value as stored: the value, when it expires (ms since the Unix epoch) and the
/// version the store gave its last write (what a conflicting run is detected by).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateValue {
    pub value: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    pub version: u64,
}

impl StateValue {
    /// Whether it has expired at `now_ms` (an expired key reads as absent at once).
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|e| e <= now_ms)
    }
}

/// What a run saw of a key: the version of the stored row (`None`: no row), expired or not.
/// The run's commit is refused if the row changed since (another run wrote it first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRead {
    pub key: String,
    pub version: Option<u64>,
}

/// A change to one key, as the run leaves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum StateWrite {
    Set {
        key: String,
        value: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_ms: Option<u64>,
    },
    Delete {
        key: String,
    },
}

impl StateWrite {
    pub fn key(&self) -> &str {
        match self {
            StateWrite::Set { key, .. } | StateWrite::Delete { key } => key,
        }
    }

    /// One line: `set lockouts:00u1 = 3 (expires 2026-12-03T10:00:00Z)`, `delete k`.
    pub fn describe(&self) -> String {
        match self {
            StateWrite::Set {
                key,
                value,
                expires_ms,
            } => {
                let mut s = format!("state set {key} = {value}");
                if let Some(e) = expires_ms {
                    s.push_str(&format!(" (expires {})", rfc3339_ms(*e)));
                }
                s
            }
            StateWrite::Delete { key } => format!("state delete {key}"),
        }
    }
}

/// A timer as `schedule` asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerSpec {
    /// Derived from the run's event id (a timer run's: its timer's id), the script and the
    /// timer's key or position: the same run asks for the same timer each time it runs.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The script's function to call.
    pub call: String,
    #[serde(default)]
    pub args: serde_json::Value,
    /// When it is due (ms since the Unix epoch).
    pub due_ms: u64,
}

/// What a run does to its script's timers, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum TimerOp {
    Schedule(TimerSpec),
    Cancel { key: String },
}

impl TimerOp {
    /// One line: `schedule remind(…) at 2026-12-06T09:00:00Z (key k, timer 1a2b…)`.
    pub fn describe(&self) -> String {
        match self {
            TimerOp::Schedule(t) => {
                let mut s = format!(
                    "schedule {}({}) at {}",
                    t.call,
                    if t.args.is_null() {
                        String::new()
                    } else {
                        t.args.to_string()
                    },
                    rfc3339_ms(t.due_ms)
                );
                if let Some(k) = &t.key {
                    s.push_str(&format!(" (key {k})"));
                }
                s.push_str(&format!(" timer {}", t.id));
                s
            }
            TimerOp::Cancel { key } => format!("cancel_schedule {key}"),
        }
    }
}

/// Everything a run read of and would change in its script's state and timers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effects {
    /// The keys whose stored value the run's result depends on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<StateRead>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<StateWrite>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timers: Vec<TimerOp>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty() && self.writes.is_empty() && self.timers.is_empty()
    }

    /// Whether committing it changes anything (reads alone change nothing).
    pub fn changes(&self) -> bool {
        !self.writes.is_empty() || !self.timers.is_empty()
    }

    /// One line per change (`engine run`, `engine check`, the console).
    pub fn describe(&self) -> Vec<String> {
        self.writes
            .iter()
            .map(StateWrite::describe)
            .chain(self.timers.iter().map(TimerOp::describe))
            .collect()
    }
}

/// One key as the run in progress sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Slot {
    /// The stored row's version when the run first read it; `None` inside: no row. Absent
    /// (outer `None`) when the run wrote the key without reading it first.
    read: Option<Option<u64>>,
    /// The value now (with its expiry), after the run's own writes; `None`: absent.
    current: Option<(serde_json::Value, Option<u64>)>,
    dirty: bool,
}

/// The state and timers part of [`RunCtx`].
#[derive(Debug, Default)]
pub(crate) struct RunState {
    slots: BTreeMap<String, Slot>,
    timers: Vec<TimerOp>,
    /// Keys changed so far (at most [`MAX_STATE_WRITES`]).
    writes: usize,
}

impl RunState {
    /// The run's effects, for its outcome.
    pub(crate) fn into_effects(self) -> Effects {
        let mut e = Effects {
            timers: self.timers,
            ..Effects::default()
        };
        for (key, slot) in self.slots {
            if let Some(version) = slot.read {
                e.reads.push(StateRead {
                    key: key.clone(),
                    version,
                });
            }
            if slot.dirty {
                e.writes.push(match slot.current {
                    Some((value, expires_ms)) => StateWrite::Set {
                        key,
                        value,
                        expires_ms,
                    },
                    None => StateWrite::Delete { key },
                });
            }
        }
        e
    }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("state key is empty".into());
    }
    if key.chars().count() > MAX_STATE_KEY_CHARS {
        return Err(format!(
            "state key is longer than {MAX_STATE_KEY_CHARS} characters: keys name things; keep data in the value"
        ));
    }
    if key.chars().any(char::is_control) {
        return Err("state key holds a control character".into());
    }
    Ok(())
}

fn to_json(what: &str, v: &Dynamic) -> Result<serde_json::Value, String> {
    if v.is_fnptr() {
        return Err(format!("{what}: a function pointer cannot be stored"));
    }
    let json: serde_json::Value = rhai::serde::from_dynamic(v)
        .map_err(|e| format!("{what}: a {} cannot be stored as JSON: {e}", v.type_name()))?;
    let len = serde_json::to_vec(&json)
        .map(|b| b.len())
        .unwrap_or(usize::MAX);
    if len > MAX_STATE_VALUE_BYTES {
        return Err(format!(
            "{what}: the value is {len} bytes as JSON, more than {MAX_STATE_VALUE_BYTES} (state holds counters, flags and small records)"
        ));
    }
    Ok(json)
}

fn error(ctx: &NativeCallContext, name: &str, message: String) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        format!("{name}: {message}").into(),
        ctx.call_position(),
    ))
}

/// The run in progress, or the error of a call made while a module loads.
fn with_run<R>(
    name: &str,
    f: impl FnOnce(&mut RunCtx) -> Result<R, Box<EvalAltResult>>,
) -> Result<R, Box<EvalAltResult>> {
    with_ctx(f).ok_or_else(|| not_in_run(name))?
}

/// Reads `key` from the host on the run's first use of it (the host is called outside any
/// borrow of the run's state).
fn ensure_read(ctx: &NativeCallContext, name: &str, key: &str) -> Result<(), Box<EvalAltResult>> {
    check_key(key).map_err(|m| error(ctx, name, m))?;
    let script = with_run(name, |c| {
        Ok((!c
            .state
            .slots
            .get(key)
            .is_some_and(|s| s.read.is_some() || s.dirty))
        .then(|| c.script.clone()))
    })?;
    let Some(script) = script else {
        return Ok(());
    };
    let stored = host_read(ctx, name, &format!("{name}({key:?})"), |host, _| {
        host.state_get(&script, key)
    })?;
    with_run(name, |c| {
        let now = c.now_ms;
        let entry = c.state.slots.entry(key.to_string()).or_default();
        entry.read = Some(stored.as_ref().map(|s| s.version));
        entry.current = stored
            .filter(|s| !s.expired(now))
            .map(|s| (s.value, s.expires_ms));
        Ok(())
    })
}

fn live(slot: &Slot, now_ms: u64) -> Option<&(serde_json::Value, Option<u64>)> {
    slot.current
        .as_ref()
        .filter(|(_, e)| e.is_none_or(|e| e > now_ms))
}

fn expiry(
    ctx: &NativeCallContext,
    name: &str,
    now_ms: u64,
    ttl: &Dynamic,
) -> Result<u64, Box<EvalAltResult>> {
    let d = duration_value(ttl).map_err(|m| error(ctx, name, format!("ttl: {m}")))?;
    if d.is_zero() {
        return Err(error(
            ctx,
            name,
            "ttl is zero: the value would be gone at once".into(),
        ));
    }
    Ok(now_ms.saturating_add(d.as_millis() as u64))
}

fn note_write(
    ctx: &NativeCallContext,
    c: &mut RunCtx,
    name: &str,
    key: &str,
) -> Result<(), Box<EvalAltResult>> {
    let new = !c.state.slots.get(key).is_some_and(|s| s.dirty);
    if new {
        if c.state.writes >= MAX_STATE_WRITES {
            return Err(error(
                ctx,
                name,
                format!("the run changed more than {MAX_STATE_WRITES} state keys"),
            ));
        }
        c.state.writes += 1;
    }
    Ok(())
}

fn get(ctx: NativeCallContext, key: ImmutableString) -> Result<Dynamic, Box<EvalAltResult>> {
    ensure_read(&ctx, "state::get", &key)?;
    with_run("state::get", |c| {
        let now = c.now_ms;
        let s = c.state.slots.entry(key.to_string()).or_default();
        Ok(live(s, now).map_or(Dynamic::UNIT, |(v, _)| super::event::json_to_dynamic(v)))
    })
}

fn set(
    ctx: NativeCallContext,
    key: ImmutableString,
    value: Dynamic,
    ttl: Option<Dynamic>,
) -> Result<(), Box<EvalAltResult>> {
    with_run("state::set", |c| {
        check_key(&key).map_err(|m| error(&ctx, "state::set", m))?;
        let json = to_json(&format!("state::set({key:?})"), &value)
            .map_err(|m| error(&ctx, "state::set", m))?;
        if json.is_null() {
            return Err(error(
                &ctx,
                "state::set",
                "the value is (): use state::delete to remove a key".into(),
            ));
        }
        let expires = ttl
            .map(|t| expiry(&ctx, "state::set", c.now_ms, &t))
            .transpose()?;
        note_write(&ctx, c, "state::set", &key)?;
        let s = c.state.slots.entry(key.to_string()).or_default();
        s.current = Some((json, expires));
        s.dirty = true;
        Ok(())
    })
}

fn incr(
    ctx: NativeCallContext,
    key: ImmutableString,
    by: INT,
    ttl: Option<Dynamic>,
) -> Result<INT, Box<EvalAltResult>> {
    ensure_read(&ctx, "state::incr", &key)?;
    with_run("state::incr", |c| {
        let now = c.now_ms;
        let expires = ttl
            .map(|t| expiry(&ctx, "state::incr", now, &t))
            .transpose()?;
        let s = c.state.slots.entry(key.to_string()).or_default();
        let (before, kept_expiry) = match live(s, now) {
            None => (0, expires),
            Some((v, e)) => match v.as_i64() {
                Some(n) => (n, *e),
                None => {
                    return Err(error(
                        &ctx,
                        "state::incr",
                        format!("key {key:?} holds {v}, not an integer"),
                    ));
                }
            },
        };
        let after = before
            .checked_add(by)
            .ok_or_else(|| error(&ctx, "state::incr", format!("key {key:?} would overflow")))?;
        note_write(&ctx, c, "state::incr", &key)?;
        let s = c.state.slots.entry(key.to_string()).or_default();
        s.current = Some((serde_json::Value::from(after), kept_expiry));
        s.dirty = true;
        Ok(after)
    })
}

fn delete(ctx: NativeCallContext, key: ImmutableString) -> Result<(), Box<EvalAltResult>> {
    with_run("state::delete", |c| {
        check_key(&key).map_err(|m| error(&ctx, "state::delete", m))?;
        note_write(&ctx, c, "state::delete", &key)?;
        let s = c.state.slots.entry(key.to_string()).or_default();
        s.current = None;
        s.dirty = true;
        Ok(())
    })
}

/// `schedule(#{ in | at, call, args?, key? })`.
fn schedule(ctx: NativeCallContext, map: Map) -> Result<ImmutableString, Box<EvalAltResult>> {
    let name = "schedule";
    for k in map.keys() {
        if !SCHEDULE_KEYS.contains(&k.as_str()) {
            return Err(error(
                &ctx,
                name,
                format!(
                    "unknown key `{k}` (the keys are {})",
                    SCHEDULE_KEYS.join(", ")
                ),
            ));
        }
    }
    let text = |k: &str| -> Result<Option<String>, Box<EvalAltResult>> {
        match map.get(k) {
            None => Ok(None),
            Some(v) if v.is_unit() => Ok(None),
            Some(v) => match v.read_lock::<ImmutableString>() {
                Some(s) => Ok(Some(s.to_string())),
                None => Err(error(
                    &ctx,
                    name,
                    format!("`{k}` must be a string, not {}", v.type_name()),
                )),
            },
        }
    };
    let call = match (text("call")?, text("run")?) {
        (Some(_), Some(_)) => {
            return Err(error(
                &ctx,
                name,
                "give `run` or `\"call\"`, not both (they say the same)".into(),
            ));
        }
        (Some(c), None) | (None, Some(c)) => c,
        (None, None) => {
            return Err(error(
                &ctx,
                name,
                "`run` is missing: name the script function to call, e.g. run: \"remind\"".into(),
            ));
        }
    };
    if call.is_empty()
        || call.chars().count() > MAX_CALL_CHARS
        || !call.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || call.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(error(
            &ctx,
            name,
            format!("`call` must name a function of the script, not {call:?}"),
        ));
    }
    let key = text("key")?;
    if let Some(k) = &key {
        check_key(k).map_err(|m| error(&ctx, name, m.replace("state key", "timer key")))?;
    }
    let args = match map.get("args") {
        None => serde_json::Value::Null,
        Some(v) => to_json("schedule's `args`", v).map_err(|m| error(&ctx, name, m))?,
    };
    with_run(name, |c| {
        let arities: Vec<usize> = c
            .functions
            .iter_script_fn_info()
            .filter(|f| f.2 == call.as_str())
            .map(|f| f.3)
            .collect();
        if !arities.iter().any(|n| *n <= 1) {
            let names: Vec<String> = c
                .functions
                .iter_script_fn_info()
                .map(|f| f.2.to_string())
                .collect();
            let hint = super::suggest::nearest(&call, &names)
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            let what = if arities.is_empty() {
                "no function"
            } else {
                "no function with one parameter (or none)"
            };
            return Err(error(
                &ctx,
                name,
                format!("the script has {what} `{call}`{hint}: a timer calls `fn {call}(args)`"),
            ));
        }
        let after = match (map.get("in"), map.get("after")) {
            (Some(_), Some(_)) => {
                return Err(error(
                    &ctx,
                    name,
                    "give `\"in\"` or `after`, not both (they say the same)".into(),
                ));
            }
            (a, b) => a.or(b),
        };
        let due_ms = match (after, text("at")?) {
            (Some(d), None) if !d.is_unit() => {
                let d = duration_value(d).map_err(|m| error(&ctx, name, format!("`in`: {m}")))?;
                c.now_ms.saturating_add(d.as_millis() as u64)
            }
            (None, Some(at)) => {
                parse_rfc3339_ms(&at).map_err(|m| error(&ctx, name, format!("`at`: {m}")))?
            }
            (Some(d), Some(_)) if !d.is_unit() => {
                return Err(error(
                    &ctx,
                    name,
                    "give `after` (`\"in\"`) or `at`, not both".into(),
                ));
            }
            _ => {
                return Err(error(&ctx, name, "when? give `after: \"3d\"` (or `\"in\": \"3d\"`) or `at: \"2026-12-05T09:00:00Z\"`".into()));
            }
        };
        if c.state.timers.len() >= MAX_TIMER_OPS {
            return Err(error(
                &ctx,
                name,
                format!("the run scheduled or cancelled more than {MAX_TIMER_OPS} timers"),
            ));
        }
        let position = c.state.timers.len();
        let id_key = match &key {
            Some(k) => format!("timer:key:{k}"),
            None => format!("timer#{position}"),
        };
        let id = super::email::action_id(&c.event_id, &c.script, &id_key);
        if c.state
            .timers
            .iter()
            .any(|t| matches!(t, TimerOp::Schedule(s) if s.id == id))
        {
            // The same keyed timer twice in one run: the later replaces the earlier.
            c.state
                .timers
                .retain(|t| !matches!(t, TimerOp::Schedule(s) if s.id == id));
        }
        c.state.timers.push(TimerOp::Schedule(TimerSpec {
            id: id.clone(),
            key,
            call: call.clone(),
            args,
            due_ms,
        }));
        Ok(id.into())
    })
}

/// `cancel_schedule(key)`: whether a pending timer of this script had that key.
fn cancel_schedule(
    ctx: NativeCallContext,
    key: ImmutableString,
) -> Result<bool, Box<EvalAltResult>> {
    let name = "cancel_schedule";
    check_key(&key).map_err(|m| error(&ctx, name, m.replace("state key", "timer key")))?;
    // The last thing this run did with that key decides, else what is stored.
    let (mine, script) = with_run(name, |c| {
        let mine = c.state.timers.iter().rev().find_map(|t| match t {
            TimerOp::Schedule(s) if s.key.as_deref() == Some(key.as_str()) => Some(true),
            TimerOp::Cancel { key: k } if k.as_str() == key.as_str() => Some(false),
            _ => None,
        });
        Ok((mine, c.script.clone()))
    })?;
    let had = match mine {
        Some(b) => b,
        None => host_read(&ctx, name, &format!("{name}({key:?})"), |host, _| {
            host.timer_pending(&script, &key)
        })?,
    };
    with_run(name, |c| {
        if c.state.timers.len() >= MAX_TIMER_OPS {
            return Err(error(
                &ctx,
                name,
                format!("the run scheduled or cancelled more than {MAX_TIMER_OPS} timers"),
            ));
        }
        c.state.timers.push(TimerOp::Cancel {
            key: key.to_string(),
        });
        Ok(had)
    })
}

/// Milliseconds since the Unix epoch of an RFC 3339 time.
pub fn parse_rfc3339_ms(s: &str) -> Result<u64, String> {
    let t =
        ::time::OffsetDateTime::parse(s.trim(), &::time::format_description::well_known::Rfc3339)
            .map_err(|e| format!("{s:?} is not an RFC 3339 time like 2026-12-05T09:00:00Z ({e})"))?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| format!("{s:?} is before 1970"))
}

/// RFC 3339 (UTC, milliseconds) of ms since the Unix epoch.
pub fn rfc3339_ms(ms: u64) -> String {
    let t = ::time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH);
    let f = ::time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

const GET_DOC: &str =
    "/// The value this script stored under `key`, or `()` (never set, deleted or expired).";
const SET_DOC: &str = "/// Stores `value` (anything JSON can hold, at most 64 KiB as JSON) under `key` for this\n\
/// script; `ttl` (\"90s\", \"30m\", \"1h\", \"7d\" or seconds): it is gone after that. Part of the\n\
/// run's result: a failed run changes nothing.";
const INCR_DOC: &str = "/// Adds `by` (default 1) to the integer under `key` (absent: 0) and returns the new value;\n\
/// `ttl` is set when the key is created. Concurrent runs never lose an update.";
const DELETE_DOC: &str = "/// Removes `key`.";
const SCHEDULE_DOC: &str = "/// A durable timer: `#{ after: \"3d\" (or \"in\": \"3d\") | at: \"2026-12-05T09:00:00Z\", run: \"fn_name\" (or \"call\"), args?, key? }`.\n\
/// When due, the script's `fn fn_name(args)` runs as a run of its own with this run's `event`\n\
/// and `delivery`. A pending timer of this script with the same `key` is replaced. Returns the\n\
/// timer's id. A failed run schedules nothing.";
const CANCEL_DOC: &str =
    "/// Cancels this script's pending timer with that key; returns whether there was one.";

/// The `state` module (static: no import needed).
pub(crate) fn state_module() -> Module {
    let mut m = Module::new();
    FuncRegistration::new("get")
        .with_params_info(["key: String", "?"])
        .with_comments([GET_DOC])
        .set_into_module(&mut m, get);
    FuncRegistration::new("set")
        .with_params_info(["key: String", "value: ?", "()"])
        .with_comments([SET_DOC])
        .set_into_module(
            &mut m,
            |ctx: NativeCallContext, k: ImmutableString, v: Dynamic| set(ctx, k, v, None),
        );
    FuncRegistration::new("set")
        .with_params_info(["key: String", "value: ?", "ttl: ?", "()"])
        .with_comments([SET_DOC])
        .set_into_module(
            &mut m,
            |ctx: NativeCallContext, k: ImmutableString, v: Dynamic, t: Dynamic| {
                set(ctx, k, v, Some(t))
            },
        );
    FuncRegistration::new("incr")
        .with_params_info(["key: String", "int"])
        .with_comments([INCR_DOC])
        .set_into_module(&mut m, |ctx: NativeCallContext, k: ImmutableString| {
            incr(ctx, k, 1, None)
        });
    FuncRegistration::new("incr")
        .with_params_info(["key: String", "by: int", "int"])
        .with_comments([INCR_DOC])
        .set_into_module(
            &mut m,
            |ctx: NativeCallContext, k: ImmutableString, by: INT| incr(ctx, k, by, None),
        );
    FuncRegistration::new("incr")
        .with_params_info(["key: String", "by: int", "ttl: ?", "int"])
        .with_comments([INCR_DOC])
        .set_into_module(
            &mut m,
            |ctx: NativeCallContext, k: ImmutableString, by: INT, t: Dynamic| {
                incr(ctx, k, by, Some(t))
            },
        );
    FuncRegistration::new("delete")
        .with_params_info(["key: String", "()"])
        .with_comments([DELETE_DOC])
        .set_into_module(&mut m, delete);
    m
}

/// Registers `schedule`, `cancel_schedule` and the `state` module.
pub(crate) fn register(engine: &mut rhai::Engine) {
    FuncRegistration::new("schedule")
        .with_params_info(["timer: Map", "String"])
        .with_comments([SCHEDULE_DOC])
        .register_into_engine(engine, schedule);
    FuncRegistration::new("cancel_schedule")
        .with_params_info(["key: String", "bool"])
        .with_comments([CANCEL_DOC])
        .register_into_engine(engine, cancel_schedule);
    engine.register_static_module("state", state_module().into());
}
