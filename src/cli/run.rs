//! `engine run SCRIPT PAYLOAD`: runs one script on each event of a payload (an envelope, or a
//! single LogEvent) read exactly as the server reads a delivery; prints its log and the mail it
//! would send, scrubbed of secrets (`util::redact`). Nothing is sent.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::output::{CliError, CliResult, Exit, print_json};
use crate::config::Config;
use crate::ingest::envelope::parse_payload;
use crate::script::{self, Action, DeliveryInfo, ScriptSet};

#[derive(Serialize)]
struct DryRun {
    event_uuid: String,
    event_type: String,
    subscribed: bool,
    log: Vec<script::LogLine>,
    actions: Vec<Action>,
    error: Option<script::RunError>,
}

/// `engine run SCRIPT PAYLOAD`: runs the script on each event of the payload; nothing is sent.
pub async fn dry_run(
    config: &Config,
    script_path: &Path,
    payload: &Path,
    hook: &str,
    json: bool,
) -> CliResult {
    let limits = config.limits.clone();
    let script = match ScriptSet::load_one(script_path, &config.stdlib_dir, &limits) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(line) = &e.source_line {
                eprintln!("  | {line}");
            }
            if let Some(h) = &e.hint {
                eprintln!("  = hint: {h}");
            }
            return Ok(Exit::Failure);
        }
    };
    let bytes = std::fs::read(payload)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", payload.display())))?;
    let payload = parse_payload(&bytes)
        .map_err(|e| CliError::usage(format!("{}: {e}", payload.display())))?;
    let host = crate::app::build_host(config).map_err(CliError::usage)?;
    let delivery = DeliveryInfo {
        id: payload.delivery.delivery_id.clone().unwrap_or_default(),
        time: payload.delivery.event_time.clone(),
        hook: hook.to_string(),
        source: payload.delivery.source.clone(),
    };
    let mut results = Vec::new();
    for (event, json_bytes) in payload.events() {
        let event_type = event.event_type.clone();
        let event_uuid = event.uuid.clone();
        let (s, h, l, d) = (
            script.clone(),
            host.clone(),
            limits.clone(),
            delivery.clone(),
        );
        let (json_bytes, id) = (json_bytes.to_vec(), event_uuid.clone());
        let mut outcome =
            tokio::task::spawn_blocking(move || script::run(&s, &json_bytes, &id, &d, &h, &l))
                .await
                .map_err(|e| CliError::failure(format!("the run crashed: {e}")))?;
        // A far side (Okta, a proxy) may have echoed a secret into the error or the log.
        crate::process::scrub_outcome(&mut outcome);
        results.push(DryRun {
            subscribed: script.matches(hook, &event_type),
            event_uuid,
            event_type,
            log: outcome.log,
            actions: outcome.actions,
            error: outcome.result.err(),
        });
    }
    let code = if results.iter().any(|r| r.error.is_some()) {
        Exit::Failure
    } else {
        Exit::Ok
    };
    if json {
        print_json(&results);
        return Ok(code);
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
        if !r.subscribed {
            let _ = writeln!(
                out,
                "  note: {} does not subscribe to this event type or hook (on: {}); ran it anyway",
                script.file_name,
                script.on.join(", ")
            );
        }
        for line in &r.log {
            let _ = writeln!(out, "  {}: {}", line.level, line.message);
        }
        for Action::Email(e) in &r.actions {
            let verb = if r.error.is_some() {
                "would have queued (but the run failed, so nothing is sent)"
            } else {
                "would send"
            };
            let _ = writeln!(out, "  {verb} mail {}:", e.id);
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
                let _ = writeln!(
                    out,
                    "  ok: {} mail(s), nothing sent (dry run)",
                    r.actions.len()
                );
            }
        }
    }
    Ok(code)
}
