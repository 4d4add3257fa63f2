//! The history commands: `events`, `runs`, `outbox`, `scripts`. Each works whether or not
//! `engine serve` holds the store (see `remote`).

use std::io::Write;

use super::output::{
    CliError, CliResult, ERROR_CELL_CHARS, Exit, cut, print_json, rows_or_json, table,
};
use super::remote;
use crate::config::Config;
use crate::store::outbox::OutboxMail;
use crate::store::query::Query;
use crate::store::runs::RunRecord;
use crate::store::script_state::ScriptState;
use crate::store::{EventRow, QuarantineRow};

/// Hex digits of a hash shown in a table cell (the JSON has all of them).
const HASH_CELL_CHARS: usize = 12;

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
        &["SEQ", "RECEIVED", "HOOK", "EVENT TYPE", "UUID", "STATUS"],
        |r| {
            vec![
                r.seq.to_string(),
                r.received.clone(),
                r.hook.clone(),
                r.event_type.clone(),
                r.uuid.clone(),
                r.status.to_string(),
            ]
        },
    );
    Ok(Exit::Ok)
}

pub fn runs(config: &Config, failed: bool, limit: usize, json: bool) -> CliResult {
    let rows: Vec<RunRecord> = read(config, &Query::Runs { limit, failed })?;
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
            "ERROR",
        ],
        |r| {
            vec![
                r.id.to_string(),
                r.finished
                    .clone()
                    .or(r.started.clone())
                    .unwrap_or(r.created.clone()),
                r.script.clone(),
                r.event_type.clone(),
                r.event_uuid.clone(),
                r.status.as_str().to_string(),
                r.attempts.to_string(),
                r.actions.len().to_string(),
                cut(&r.error_text(), ERROR_CELL_CHARS),
            ]
        },
    );
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
