//! The history commands: `events`, `runs`, `outbox`, `scripts`. Each works whether or not
//! `engine serve` holds the store (see `remote`).

use std::io::Write;

use super::output::{
    CliError, CliResult, ERROR_CELL_CHARS, Exit, cut, print_json, rows_or_json, table,
};
use super::remote;
use crate::config::Config;
use crate::script::ActionKind;
use crate::store::actions::QueuedAction;
use crate::store::outbox::OutboxMail;
use crate::store::query::{Query, ReplayedRun};
use crate::store::runs::{RunFilter, RunRecord};
use crate::store::script_state::ScriptState;
use crate::store::{EventDetail, EventRow, QuarantineRow};

/// Hex digits of a hash shown in a table cell (the JSON has all of them).
const HASH_CELL_CHARS: usize = 12;
/// Characters of a run's last log line shown in the `runs` table.
const LOG_CELL_CHARS: usize = 40;

/// Runs a history query; no store yet reads as nothing.
fn read<T: serde::de::DeserializeOwned + Default>(
    config: &Config,
    query: &Query,
) -> Result<T, CliError> {
    remote::read(config, query)
        .map(Option::unwrap_or_default)
        .map_err(CliError::failure)
}

pub fn events(config: &Config, limit: usize, json: bool, quarantine: bool) -> CliResult {
    if quarantine {
        let rows: Vec<QuarantineRow> = read(config, &Query::Quarantine { limit })?;
        rows_or_json(
            json,
            &rows,
            &["SEQ", "RECEIVED", "HOOK", "BYTES", "REASON"],
            |r| {
                vec![
                    r.seq.to_string(),
                    r.received.clone(),
                    r.hook.clone(),
                    r.bytes.to_string(),
                    r.reason.clone(),
                ]
            },
        );
        return Ok(Exit::Ok);
    }
    let rows: Vec<EventRow> = read(config, &Query::Events { limit })?;
    rows_or_json(
        json,
        &rows,
        &[
            "SEQ",
            "RECEIVED",
            "HOOK",
            "SOURCE",
            "EVENT TYPE",
            "UUID",
            "STATUS",
        ],
        |r| {
            vec![
                r.seq.to_string(),
                r.received.clone(),
                r.hook.clone(),
                r.source.clone(),
                r.event_type.clone(),
                r.uuid.clone(),
                r.status.to_string(),
            ]
        },
    );
    Ok(Exit::Ok)
}

pub fn runs(config: &Config, filter: &RunFilter, limit: usize, json: bool) -> CliResult {
    let query = Query::Runs {
        limit,
        filter: filter.clone(),
    };
    let rows: Vec<RunRecord> = read(config, &query)?;
    rows_or_json(
        json,
        &rows,
        &[
            "RUN",
            "TIME",
            "SCRIPT",
            "EVENT TYPE",
            "EVENT UUID",
            "STATUS",
            "ATTEMPTS",
            "MAILS",
            "LOG",
            "ERROR",
        ],
        |r| {
            vec![
                r.id.to_string(),
                r.finished
                    .clone()
                    .or(r.started.clone())
                    .unwrap_or(r.created.clone()),
                match &r.timer {
                    // A timer's run: what it calls and the run that scheduled it.
                    Some(t) => format!("{} timer {}() of run {}", r.script, t.call, t.scheduled_by),
                    None => r.script.clone(),
                },
                r.event_type.clone(),
                r.event_uuid.clone(),
                r.status.as_str().to_string(),
                r.attempts.to_string(),
                r.actions.len().to_string(),
                r.log
                    .last()
                    .map(|l| cut(&l.message, LOG_CELL_CHARS))
                    .unwrap_or_default(),
                cut(&r.error_text(), ERROR_CELL_CHARS),
            ]
        },
    );
    // `--failed` answers "is anything failed now?": exit 1 when it lists any.
    Ok(if filter.failed_now && !rows.is_empty() {
        Exit::Failure
    } else {
        Exit::Ok
    })
}

/// `engine runs ID`: one run whole — its log, error with the source line, actions (with their
/// state) and event.
pub fn run(config: &Config, id: u64, json: bool) -> CliResult {
    let runs: Vec<ReplayedRun> = read(config, &Query::Replayed { ids: vec![id] })?;
    let Some(ReplayedRun { record: r, mails }) = runs.into_iter().next() else {
        return Err(CliError::failure(format!(
            "no run {id}\n  hint: `engine runs` lists the runs"
        )));
    };
    let event: Option<EventDetail> = read(
        config,
        &Query::Event {
            uuid: r.event_uuid.clone(),
        },
    )?;
    if json {
        print_json(&serde_json::json!({ "run": r, "mails": mails, "event": event }));
        return Ok(Exit::Ok);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "run {} ({}): {}", r.id, r.script, r.status.as_str());
    let _ = writeln!(
        out,
        "  event: {} {} (hook {})",
        r.event_type, r.event_uuid, r.hook
    );
    if let Some(e) = &event {
        let _ = writeln!(
            out,
            "         published {}, received {}",
            e.published, e.received
        );
    }
    let _ = writeln!(out, "  attempts: {}", r.attempts);
    for (what, v) in [
        ("created", Some(&r.created)),
        ("started", r.started.as_ref()),
        ("finished", r.finished.as_ref()),
        ("next attempt", r.next_attempt.as_ref()),
    ] {
        if let Some(v) = v {
            let _ = writeln!(out, "  {what}: {v}");
        }
    }
    if let Some(h) = &r.script_hash {
        let _ = writeln!(out, "  script version: {h}");
    }
    if let Some(p) = r.replay_of {
        let _ = writeln!(out, "  replays run {p}");
    }
    if let Some(t) = &r.timer {
        let _ = writeln!(
            out,
            "  kind: timer {} calling {}({}), due {}, scheduled by run {}",
            t.id,
            t.call,
            if t.args.is_null() {
                String::new()
            } else {
                t.args.to_string()
            },
            t.due,
            t.scheduled_by
        );
    }
    for c in r.effects.describe() {
        let _ = writeln!(out, "  changed: {c}");
    }
    if r.crashes > 0 {
        let _ = writeln!(out, "  in flight at {} crash(es) of the engine", r.crashes);
    }
    let _ = writeln!(out, "log:");
    if r.log.is_empty() {
        let _ = writeln!(out, "  (nothing)");
    }
    for l in &r.log {
        let _ = writeln!(out, "  {}: {}", l.level, l.message);
    }
    if let Some(e) = &r.error {
        let _ = writeln!(out, "error: {e}");
        if let Some(shown) = source_line(config, &e.file, e.line, e.col) {
            let _ = writeln!(out, "{shown}");
        }
    }
    let _ = writeln!(out, "actions:");
    if r.actions.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for m in &mails {
        let _ = writeln!(out, "  {m}");
    }
    let _ = writeln!(out, "(the payload: `engine events show {}`)", r.event_uuid);
    Ok(Exit::Ok)
}

/// The line `line` of a script or stdlib file as it is now, with a caret under `col`.
fn source_line(
    config: &Config,
    file: &str,
    line: Option<usize>,
    col: Option<usize>,
) -> Option<String> {
    let path = match file.strip_prefix("stdlib/") {
        Some(rel) => config.stdlib_dir.join(rel),
        None => config.scripts_dir.join(file),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let n = line?;
    let src = text.lines().nth(n.checked_sub(1)?)?;
    let mut shown = format!("  {n:>4} | {src}");
    if let Some(c) = col {
        shown.push_str(&format!("\n       | {}^", " ".repeat(c.saturating_sub(1))));
    }
    Some(shown)
}

/// `engine events show UUID`: the event's envelope and its payload as stored, pretty.
pub fn event(config: &Config, uuid: &str, json: bool) -> CliResult {
    let detail: Option<EventDetail> = read(
        config,
        &Query::Event {
            uuid: uuid.to_string(),
        },
    )?;
    let Some(e) = detail else {
        return Err(CliError::failure(format!(
            "no stored event has uuid `{uuid}`\n  hint: `engine events` lists the stored events"
        )));
    };
    if json {
        print_json(&e);
        return Ok(Exit::Ok);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "event {} ({}), {}", e.uuid, e.event_type, e.status);
    let _ = writeln!(out, "  published: {}", e.published);
    let _ = writeln!(out, "  hook: {}, received {}", e.hook, e.received);
    let _ = writeln!(
        out,
        "  delivery: {} (eventTime {}, source {})",
        e.delivery_id, e.event_time, e.source
    );
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(&e.payload).unwrap_or_default()
    );
    let _ = writeln!(out, "(its runs: `engine runs --event {}`)", e.uuid);
    Ok(Exit::Ok)
}

pub fn outbox(config: &Config, failed: bool, limit: usize, json: bool) -> CliResult {
    let rows: Vec<OutboxMail> = read(config, &Query::Outbox { limit, failed })?;
    rows_or_json(
        json,
        &rows,
        &[
            "MAIL ID",
            "TIME",
            "STATUS",
            "ATTEMPTS",
            "TO",
            "SUBJECT",
            "SCRIPT",
            "LAST ERROR",
        ],
        |m| {
            vec![
                m.id.clone(),
                crate::util::format_ms(m.sent_ms.unwrap_or(m.queued_ms)),
                m.status.as_str().to_string(),
                m.attempts.to_string(),
                m.email.to.join(", "),
                cut(&m.email.subject, 40),
                m.script.clone(),
                cut(
                    m.last_error.as_deref().unwrap_or_default(),
                    ERROR_CELL_CHARS,
                ),
            ]
        },
    );
    Ok(Exit::Ok)
}

/// `engine actions [--failed] [--kind K] [--format json]`: the action queue, newest first.
pub fn actions(
    config: &Config,
    failed: bool,
    kind: Option<ActionKind>,
    limit: usize,
    json: bool,
) -> CliResult {
    let rows: Vec<QueuedAction> = read(
        config,
        &Query::Actions {
            limit,
            failed,
            kind,
        },
    )?;
    rows_or_json(
        json,
        &rows,
        &[
            "ACTION ID",
            "KIND",
            "TIME",
            "STATUS",
            "ATTEMPTS",
            "WHAT",
            "SCRIPT",
            "ANSWER / LAST ERROR",
        ],
        |a| {
            vec![
                a.id.clone(),
                a.kind.as_str().to_string(),
                crate::util::format_ms(a.done_ms.unwrap_or(a.queued_ms)),
                a.status.as_str().to_string(),
                a.attempts.to_string(),
                cut(&action_summary(a), 50),
                a.script.clone(),
                cut(
                    a.last_error
                        .as_deref()
                        .or(a.answer.as_deref())
                        .unwrap_or_default(),
                    ERROR_CELL_CHARS,
                ),
            ]
        },
    );
    // SPEC: `--failed` exits 1 when it lists any (as `engine runs --failed` does).
    Ok(if failed && !rows.is_empty() {
        Exit::Failure
    } else {
        Exit::Ok
    })
}

/// One line saying what an action does: a mail's recipients and subject; else its payload.
fn action_summary(a: &QueuedAction) -> String {
    let p = &a.payload;
    match a.kind {
        ActionKind::Email => {
            let to: Vec<&str> = p["to"]
                .as_array()
                .map(|l| l.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            format!(
                "to {}: {}",
                to.join(", "),
                p["subject"].as_str().unwrap_or("")
            )
        }
        ActionKind::Okta | ActionKind::Http => a.describe(),
    }
}

/// `engine scripts [--format json]`: every script's state (hash, loaded at, last error) as the
/// running (or last) server recorded it, or compiled from disk when no server has run on this
/// data directory. Exit 1 when a script does not compile.
pub fn scripts(config: &Config, json: bool) -> CliResult {
    let recorded: Option<Vec<ScriptState>> = remote::read(config, &Query::Scripts)
        .map(Option::flatten)
        .map_err(CliError::failure)?;
    let from_server = recorded.is_some();
    let states = match recorded {
        Some(s) => s,
        None => crate::reload::inspect(&crate::app::reload_settings(config))
            .map_err(CliError::failure)?,
    };
    let failing = states.iter().any(|s| s.last_error.is_some());
    if json {
        print_json(&states);
    } else {
        let rows: Vec<Vec<String>> = states
            .iter()
            .map(|s| {
                vec![
                    s.script.clone(),
                    s.status.as_str().to_string(),
                    s.hash
                        .as_deref()
                        .map(|h| h.chars().take(HASH_CELL_CHARS).collect())
                        .unwrap_or_else(|| "-".into()),
                    s.loaded_at.clone().unwrap_or_else(|| "-".into()),
                    cut(s.last_error.as_deref().unwrap_or(""), ERROR_CELL_CHARS),
                ]
            })
            .collect();
        table(
            &["SCRIPT", "STATUS", "HASH", "LOADED AT", "LAST ERROR"],
            &rows,
        );
        let mut out = std::io::stdout().lock();
        if from_server {
            let checked = states
                .iter()
                .max_by_key(|s| crate::util::parse_rfc3339_nanos(&s.checked_at))
                .map(|s| s.checked_at.as_str());
            let _ = writeln!(
                out,
                "(as recorded by `engine serve`{})",
                checked
                    .map(|c| format!(", last checked {c}"))
                    .unwrap_or_default()
            );
        } else {
            let _ = writeln!(
                out,
                "(no server has run on {}: compiled from disk now)",
                config.data_dir.display()
            );
        }
    }
    Ok(if failing { Exit::Failure } else { Exit::Ok })
}
