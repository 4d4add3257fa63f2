//! `engine run SCRIPT PAYLOAD`: runs one script on each event of a payload (an envelope, or a
//! single LogEvent) read exactly as the server reads a delivery; prints its log and the mail it
//! would send, scrubbed of secrets (`util::redact`). Nothing is sent.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::output::{CliError, CliResult, Exit, print_json};
use crate::authoring::now::{DryNow, FixedNow};
use crate::config::Config;
use crate::ingest::envelope::parse_payload;
use crate::script::{self, Action, DeliveryInfo, Host, Limits, Script, ScriptSet, Senders};

/// Characters of an HTTP action's body `engine run` shows (the request itself is bounded by
/// `script::MAX_HTTP_BODY_BYTES`).
const DRY_RUN_BODY_CHARS: usize = 4_000;

/// One dry run: one script on one event.
#[derive(Serialize)]
pub(super) struct DryRun {
    pub script: String,
    pub event_uuid: String,
    pub event_type: String,
    /// The run's "now" (RFC 3339).
    pub now: String,
    /// Where it came from (`--now`, the event's time, the clock).
    #[serde(skip)]
    pub now_source: &'static str,
    pub subscribed: bool,
    pub log: Vec<script::LogLine>,
    pub actions: Vec<Action>,
    /// What it would change in its state and timers, one line each (dry runs start from
    /// empty state).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    pub error: Option<script::RunError>,
    /// Said above the run's output (e.g. that the script does not subscribe to the event).
    #[serde(skip)]
    pub note: Option<String>,
}

/// An event to dry-run a script on: as the server would hand it to a run.
pub(super) struct DryEvent {
    pub delivery: DeliveryInfo,
    /// The event's id as stored (its uuid, or the envelope parser's content id).
    pub id: String,
    pub event_type: String,
    pub json: Vec<u8>,
}

/// What a dry run takes "now" to be: fixed (`--now`, or the event's time, for `engine run`) or
/// the clock (a replay's preview shows what replaying now would do).
#[derive(Debug, Clone, Copy)]
pub(super) enum RunNow {
    Dry(DryNow),
    Clock,
}

/// Runs `script` on `event` on a blocking thread; nothing is carried out.
pub(super) async fn dry_run_one(
    script: &Arc<Script>,
    event: DryEvent,
    now: RunNow,
    host: &Arc<dyn Host>,
    limits: &Limits,
    senders: &Senders,
) -> Result<DryRun, CliError> {
    let subscribed = script.matches(&event.delivery.hook, &event.event_type);
    let note = (!subscribed).then(|| {
        format!(
            "{} does not subscribe to this event type or hook (on: {}); ran it anyway",
            script.file_name,
            script.on.join(", ")
        )
    });
    let (now_ms, now_source) = match now {
        RunNow::Dry(d) => (d.for_event(&event.json), d.source()),
        RunNow::Clock => (
            crate::util::now_ms(),
            "the clock: what replaying now would do",
        ),
    };
    let (s, h, l, from) = (
        script.clone(),
        FixedNow::wrap(host, now_ms),
        limits.clone(),
        senders.clone(),
    );
    let DryEvent {
        delivery,
        id,
        event_type,
        json,
    } = event;
    let event_uuid = id.clone();
    let mut outcome =
        tokio::task::spawn_blocking(move || script::run(&s, &json, &id, &delivery, &h, &l, &from))
            .await
            .map_err(|e| CliError::failure(format!("the run crashed: {e}")))?;
    // A far side (Okta, a proxy) may have echoed a secret into the error or the log.
    crate::process::scrub_outcome(&mut outcome);
    Ok(DryRun {
        script: script.name.clone(),
        subscribed,
        event_uuid,
        event_type,
        now: crate::util::format_ms(now_ms),
        now_source,
        log: outcome.log,
        actions: outcome.actions,
        changes: outcome.effects.describe(),
        error: outcome.result.err(),
        note,
    })
}

/// Loads one script file as the server would; a load error is printed (with its source line)
/// and ends the command with exit 1.
pub(super) fn load_script(config: &Config, path: &Path) -> Result<Arc<Script>, Exit> {
    ScriptSet::load_one(path, &config.stdlib_dir, &config.limits).map_err(|e| {
        // The error's text carries its hint.
        eprintln!("error: {e}");
        if let Some(line) = &e.source_line {
            eprintln!("  | {line}");
        }
        Exit::Failure
    })
}

/// `engine run SCRIPT PAYLOAD`: runs the script on each event of the payload; nothing is sent.
pub async fn dry_run(
    config: &Config,
    script_path: &Path,
    payload: &Path,
    hook: &str,
    now: Option<&str>,
    json: bool,
) -> CliResult {
    let now = RunNow::Dry(DryNow::from_arg(now).map_err(CliError::usage)?);
    let script = match load_script(config, script_path) {
        Ok(s) => s,
        Err(exit) => return Ok(exit),
    };
    let bytes = std::fs::read(payload)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", payload.display())))?;
    let payload = parse_payload(&bytes)
        .map_err(|e| CliError::usage(format!("{}: {e}", payload.display())))?;
    let host = crate::app::build_okta(config)
        .and_then(|okta| crate::app::build_host(config, okta))
        .map_err(CliError::usage)?;
    let delivery = DeliveryInfo {
        id: payload.delivery.delivery_id.clone().unwrap_or_default(),
        time: payload.delivery.event_time.clone(),
        hook: hook.to_string(),
        source: payload.delivery.source.clone(),
    };
    let mut results = Vec::new();
    for (event, json_bytes) in payload.events() {
        let event = DryEvent {
            delivery: delivery.clone(),
            id: event.uuid.clone(),
            event_type: event.event_type.clone(),
            json: json_bytes.to_vec(),
        };
        results.push(
            dry_run_one(
                &script,
                event,
                now,
                &host,
                &config.limits,
                &config.senders(),
            )
            .await?,
        );
    }
    Ok(print_dry_runs(&results, json))
}

/// Prints dry runs (their logs and the actions they would carry out); exit 1 when one failed.
pub(super) fn print_dry_runs(results: &[DryRun], json: bool) -> Exit {
    let code = if results.iter().any(|r| r.error.is_some()) {
        Exit::Failure
    } else {
        Exit::Ok
    };
    if json {
        print_json(&results);
        return code;
    }
    let mut out = std::io::stdout().lock();
    let n = results.len();
    for (i, r) in results.iter().enumerate() {
        let _ = writeln!(
            out,
            "event {}/{n}: {} {}",
            i + 1,
            r.event_type,
            r.event_uuid
        );
        if let Some(note) = &r.note {
            let _ = writeln!(out, "  note: {note}");
        }
        let _ = writeln!(out, "  now: {} ({})", r.now, r.now_source);
        for line in &r.log {
            let _ = writeln!(out, "  {}: {}", line.level, line.message);
        }
        for c in &r.changes {
            let verb = if r.error.is_some() {
                "would have done (but the run failed, so nothing changes)"
            } else {
                "would"
            };
            let _ = writeln!(out, "  {verb}: {c}");
        }
        for a in &r.actions {
            let e = match a {
                Action::Email(e) => e,
                other => {
                    let verb = if r.error.is_some() {
                        "would have queued (but the run failed, so nothing is done)"
                    } else {
                        "would carry out"
                    };
                    let kind = other.kind().as_str();
                    let _ = writeln!(out, "  {verb} {kind} action {}:", other.id());
                    let _ = writeln!(out, "    {}", other.describe());
                    if let Action::Http(h) = other {
                        for (k, v) in &h.headers {
                            let _ = writeln!(out, "    {k}: {v}");
                        }
                        if let Some(b) = &h.body {
                            for line in b
                                .text
                                .chars()
                                .take(DRY_RUN_BODY_CHARS)
                                .collect::<String>()
                                .lines()
                            {
                                let _ = writeln!(out, "    | {line}");
                            }
                        }
                    }
                    continue;
                }
            };
            let verb = if r.error.is_some() {
                "would have queued (but the run failed, so nothing is sent)"
            } else {
                "would send"
            };
            let _ = writeln!(out, "  {verb} mail {}:", e.id);
            if let Some(from) = &e.from {
                let _ = writeln!(out, "    from: {from}");
            }
            let _ = writeln!(out, "    to: {}", e.to.join(", "));
            if !e.cc.is_empty() {
                let _ = writeln!(out, "    cc: {}", e.cc.join(", "));
            }
            if !e.bcc.is_empty() {
                let _ = writeln!(out, "    bcc: {}", e.bcc.join(", "));
            }
            if let Some(r) = &e.reply_to {
                let _ = writeln!(out, "    reply-to: {r}");
            }
            let _ = writeln!(out, "    subject: {}", e.subject);
            for line in e.body.lines() {
                let _ = writeln!(out, "    | {line}");
            }
            if e.html.is_some() {
                let _ = writeln!(out, "    (+ HTML part)");
            }
        }
        match &r.error {
            Some(e) => {
                let _ = writeln!(out, "  error: {e}");
            }
            None => {
                let mails = r
                    .actions
                    .iter()
                    .filter(|a| matches!(a, Action::Email(_)))
                    .count();
                let others = r.actions.len() - mails;
                if others == 0 {
                    let _ = writeln!(out, "  ok: {mails} mail(s), nothing sent (dry run)");
                } else {
                    let _ = writeln!(
                        out,
                        "  ok: {mails} mail(s) and {others} other action(s), none carried out (dry run)"
                    );
                }
            }
        }
    }
    code
}
