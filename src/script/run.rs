//! Running one script on one event: scope set-up, limits, and turning Rhai errors into `RunError`s.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, EvalAltResult, Map, Position, Scope};

use super::Limits;
use super::email::Senders;
use super::engine::{Budget, Fatal, MAX_LOG_LINES, RunCtx, TimeBudget, Trip, enter};
use super::event::{DeliveryInfo, build_event_map, delivery_map};
use super::explain::{Context, explain};
use super::host::Host;
use super::load::Script;
use super::outcome::{LogLevel, LogLine, RunError, RunErrorKind, RunOutcome};

/// Runs `script` on one LogEvent given as JSON. `event_id` is the event's id as stored (its
/// `uuid`, or the content id the envelope parser gave an event without one): the action ids
/// derive from it, so a dry run and the server give the same ids. `senders`: the From addresses
/// its mails may name (`[smtp] from` and `allowed_from`).
pub fn run(
    script: &Script,
    event_json: &[u8],
    event_id: &str,
    delivery: &DeliveryInfo,
    host: &Arc<dyn Host>,
    limits: &Limits,
    senders: &Senders,
) -> RunOutcome {
    match build_event_map(event_json) {
        Ok(event) => run_map(script, event, event_id, delivery, host, limits, senders),
        Err(message) => failed(script, message, None),
    }
}

/// A run that failed before the script ran (its event unreadable, its timer's function gone).
fn failed(script: &Script, message: String, hint: Option<String>) -> RunOutcome {
    RunOutcome {
        log: Vec::new(),
        actions: Vec::new(),
        effects: Default::default(),
        result: Err(RunError {
            kind: RunErrorKind::Script,
            message,
            script: script.name.clone(),
            file: script.file_name.clone(),
            line: None,
            col: None,
            trace: Vec::new(),
            hint,
            not_before_ms: None,
        }),
    }
}

/// Runs `script` on an event map built by [`build_event_map`] (when several scripts share one
/// event, build it once and clone it). `event_id` feeds the action ids (see [`run`]).
pub fn run_map(
    script: &Script,
    event: Map,
    event_id: &str,
    delivery: &DeliveryInfo,
    host: &Arc<dyn Host>,
    limits: &Limits,
    senders: &Senders,
) -> RunOutcome {
    run_entry(
        script, event, event_id, delivery, host, limits, senders, None,
    )
}

/// Runs a timer: `script`'s function `call` with `args` (or with none, for a function without
/// parameters), with the scheduling run's `event` and `delivery` in scope. `timer_id` stands
/// for the event id (action ids derive from it, so a retried timer run repeats nothing). A
/// function the script no longer defines fails the run.
#[allow(clippy::too_many_arguments)]
pub fn run_timer(
    script: &Script,
    event_json: &[u8],
    timer_id: &str,
    delivery: &DeliveryInfo,
    host: &Arc<dyn Host>,
    limits: &Limits,
    senders: &Senders,
    call: &str,
    args: &serde_json::Value,
) -> RunOutcome {
    let fail = |message: String, hint: Option<String>| failed(script, message, hint);
    let arities: Vec<usize> = script
        .ast()
        .iter_functions()
        .filter(|f| f.name == call)
        .map(|f| f.params.len())
        .collect();
    let with_args = if arities.contains(&1) {
        true
    } else if arities.contains(&0) {
        false
    } else {
        let names: Vec<String> = script
            .ast()
            .iter_functions()
            .map(|f| f.name.to_string())
            .collect();
        let hint = super::suggest::nearest(call, &names)
            .map(|n| format!("did you mean `{n}`? (timers already pending keep the name they were scheduled with)"));
        return fail(
            format!(
                "timer function `{call}` is not defined in the script (any more): a timer calls `fn {call}(args)`"
            ),
            hint.or_else(|| {
                Some(format!(
                    "define `fn {call}(args)` in {} again, then `engine replay` this run",
                    script.file_name
                ))
            }),
        );
    };
    match build_event_map(event_json) {
        Ok(event) => run_entry(
            script,
            event,
            timer_id,
            delivery,
            host,
            limits,
            senders,
            Some((call, with_args.then_some(args))),
        ),
        Err(message) => fail(message, None),
    }
}

/// The script's top-level imports and its functions, without the rest of its top-level code:
/// what a timer's function call runs in (its imports as the script's body would see them).
fn imports_only(ast: &rhai::AST) -> rhai::AST {
    let imports: Vec<rhai::Stmt> = ast
        .statements()
        .iter()
        .filter(|s| matches!(s, rhai::Stmt::Import(..)))
        .cloned()
        .collect();
    rhai::AST::new(imports, rhai::Module::new()).merge(&ast.clone_functions_only())
}

#[allow(clippy::too_many_arguments)]
fn run_entry(
    script: &Script,
    event: Map,
    event_id: &str,
    delivery: &DeliveryInfo,
    host: &Arc<dyn Host>,
    limits: &Limits,
    senders: &Senders,
    call: Option<(&str, Option<&serde_json::Value>)>,
) -> RunOutcome {
    let mut scope = Scope::new();
    // `Dynamic::from_map`, not `push_constant(name, map)`: rhai's `Dynamic::from` rebuilds a map.
    scope.push_constant_dynamic("event", Dynamic::from_map(event));
    scope.push_constant_dynamic("delivery", Dynamic::from_map(delivery_map(delivery)));

    let ctx = RunCtx {
        host: host.clone(),
        script: script.name.clone(),
        event_id: event_id.to_string(),
        now_ms: host.now_ms(),
        max_emails: limits.max_emails,
        max_actions: limits.max_actions,
        senders: senders.clone(),
        log: Vec::new(),
        log_dropped: 0,
        actions: Vec::new(),
        emails: 0,
        counted: Default::default(),
        fatal: None,
        state: Default::default(),
        functions: script.ast().shared_lib().clone(),
    };
    let budget = Budget {
        max_ops: limits.max_operations,
        max_bytes: limits.max_memory_bytes,
        time: Some(TimeBudget::starting_now(Duration::from_millis(
            limits.timeout_ms,
        ))),
        tripped: None,
    };
    let entered = enter(ctx, budget);
    let result = catch_unwind(AssertUnwindSafe(|| match call {
        None => script.engine().run_ast_with_scope(&mut scope, script.ast()),
        Some((name, args)) => {
            let prelude = imports_only(script.ast());
            let options = rhai::CallFnOptions::new().eval_ast(true).rewind_scope(true);
            match args {
                Some(a) => script.engine().call_fn_with_options::<Dynamic>(
                    options,
                    &mut scope,
                    &prelude,
                    name,
                    (super::event::json_to_dynamic(a),),
                ),
                None => script.engine().call_fn_with_options::<Dynamic>(
                    options,
                    &mut scope,
                    &prelude,
                    name,
                    (),
                ),
            }
            .map(|_| ())
        }
    }));
    let (ctx, budget) = entered.finish();

    let (mut log, actions, fatal, dropped, effects) = match ctx {
        Some(c) => (
            c.log,
            c.actions,
            c.fatal,
            c.log_dropped,
            c.state.into_effects(),
        ),
        None => (Vec::new(), Vec::new(), None, 0, Default::default()),
    };
    if dropped > 0 {
        log.push(LogLine {
            level: LogLevel::Warn,
            message: format!("{dropped} more log lines dropped (at most {MAX_LOG_LINES} per run)"),
        });
    }

    let base = RunError {
        kind: RunErrorKind::Script,
        message: String::new(),
        script: script.name.clone(),
        file: script.file_name.clone(),
        line: None,
        col: None,
        trace: Vec::new(),
        hint: None,
        not_before_ms: None,
    };
    let result = match result {
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(RunError {
                message: format!("internal error in a host function: {what}"),
                ..base
            })
        }
        Ok(r) => match (budget.tripped, fatal, r) {
            (None, None, Ok(())) => Ok(()),
            (trip, fatal, r) => Err(describe(base, trip, fatal, r.err(), limits, script, &scope)),
        },
    };
    drop(scope);
    RunOutcome {
        log,
        actions,
        effects,
        result,
    }
}

fn describe(
    mut out: RunError,
    trip: Option<Trip>,
    fatal: Option<Fatal>,
    err: Option<Box<EvalAltResult>>,
    limits: &Limits,
    script: &Script,
    scope: &Scope,
) -> RunError {
    let script_file = out.file.clone();
    // Walk to the innermost error, remembering the calls on the way.
    let mut innermost_file = script_file.clone();
    let mut inner = err.map(|e| *e);
    let mut caller_file = script_file.clone();
    while let Some(e) = inner.take() {
        match e {
            EvalAltResult::ErrorInFunctionCall(name, source, next, pos) => {
                out.trace
                    .push(format!("{name} called at {}", at(&caller_file, pos)));
                if !source.is_empty() {
                    caller_file = source;
                }
                innermost_file = caller_file.clone();
                inner = Some(*next);
            }
            EvalAltResult::ErrorInModule(name, next, pos) => {
                out.trace.push(format!(
                    "module {name:?} imported at {}",
                    at(&caller_file, pos)
                ));
                inner = Some(*next);
            }
            other => {
                inner = Some(other);
                break;
            }
        }
    }
    out.trace.reverse();

    if let Some(e) = &inner {
        out.file = innermost_file;
        out.line = e.position().line();
        out.col = e.position().position();
    }
    let (kind, message) = match (trip, &fatal, &inner) {
        (_, Some(f), _) => {
            out.file = f
                .source
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or(script_file);
            out.line = f.position.line();
            out.col = f.position.position();
            out.not_before_ms = f.not_before.and_then(epoch_ms);
            (f.kind, f.message.clone())
        }
        (Some(Trip::Operations), ..) => (
            RunErrorKind::Limit,
            format!(
                "script exceeded {} operations (limits.max_operations)",
                limits.max_operations
            ),
        ),
        (Some(Trip::Memory), ..) => (
            RunErrorKind::Limit,
            format!(
                "script used more than {} MiB of memory (limits.max_memory_bytes)",
                limits.max_memory_bytes / (1024 * 1024)
            ),
        ),
        (Some(Trip::Timeout), ..) => (
            RunErrorKind::Limit,
            format!(
                "script exceeded its time limit of {} ms (limits.timeout_ms)",
                limits.timeout_ms
            ),
        ),
        (_, None, Some(e)) => {
            let in_script = out.file == script.file_name;
            let cx = Context {
                source: if in_script {
                    Some(script.source.as_str())
                } else {
                    script.module_sources.get(&out.file).map(String::as_str)
                },
                in_script,
                scope,
                engine: script.engine(),
                ast: script.ast(),
            };
            match explain(e, &cx) {
                Some(x) => {
                    out.hint = x.hint;
                    (RunErrorKind::Script, x.message)
                }
                None => classify(e, limits),
            }
        }
        (_, None, None) => (RunErrorKind::Script, "run stopped".to_string()),
    };
    out.kind = kind;
    out.message = message;
    out
}

/// Milliseconds since the Unix epoch of `t` (`None` before it).
fn epoch_ms(t: std::time::SystemTime) -> Option<u64> {
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn at(file: &str, pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
        (Some(l), None) => format!("{file}:{l}"),
        _ => file.to_string(),
    }
}

fn classify(e: &EvalAltResult, limits: &Limits) -> (RunErrorKind, String) {
    use EvalAltResult as E;
    match e {
        E::ErrorTooManyOperations(_) => (
            RunErrorKind::Limit,
            format!(
                "script exceeded {} operations (limits.max_operations)",
                limits.max_operations
            ),
        ),
        E::ErrorStackOverflow(_) => (
            RunErrorKind::Limit,
            format!(
                "script exceeded {} nested function calls (limits.max_call_levels)",
                limits.max_call_levels
            ),
        ),
        E::ErrorDataTooLarge(what, _) => {
            let what = what.to_ascii_lowercase();
            let message = if what.contains("string") {
                format!(
                    "a string grew past {} characters (limits.max_string_size)",
                    limits.max_string_size
                )
            } else if what.contains("array") {
                format!(
                    "an array grew past {} elements (limits.max_array_size)",
                    limits.max_array_size
                )
            } else {
                format!(
                    "a map grew past {} entries (limits.max_map_size)",
                    limits.max_map_size
                )
            };
            (RunErrorKind::Limit, message)
        }
        E::ErrorTooManyModules(_) => (
            RunErrorKind::Limit,
            format!(
                "script imported more than {} modules (limits.max_modules)",
                limits.max_modules
            ),
        ),
        E::ErrorTooManyVariables(_) => (RunErrorKind::Limit, "too many variables".to_string()),
        E::ErrorRuntime(v, _) => (
            RunErrorKind::Script,
            match v.read_lock::<rhai::ImmutableString>() {
                Some(s) => s.to_string(),
                None => format!("script threw {v}"),
            },
        ),
        other => {
            let mut e = other.to_string();
            if let Some(cut) = e.rfind(" (line ") {
                e.truncate(cut);
            }
            (RunErrorKind::Script, e)
        }
    }
}
