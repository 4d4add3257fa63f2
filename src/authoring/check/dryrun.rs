//! Dry runs of `engine check`: each script on each sample of its event types, with a host that
//! sends nothing; the outcome (mail it would send, log) and run-time errors as diagnostics.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::diagnostics::{Code, Diagnostic};
use crate::authoring::now::{DryNow, FixedNow};
use crate::authoring::samples::{ANY_HOOK, Sample};
use crate::script::{
    Action, DeliveryInfo, Email, Host, Limits, LogLine, RunError, RunErrorKind, Script, Senders,
    pattern_matches, run,
};

/// `delivery.id` and `delivery.source` in a dry run.
const DRY_RUN_DELIVERY_ID: &str = "engine-check";
const DRY_RUN_SOURCE: &str = "engine check";
/// `delivery.hook` when neither the sample nor the script names a hook.
const DEFAULT_HOOK: &str = "default";
/// Samples named in one diagnostic's note before "and N more".
const MAX_SAMPLES_NAMED: usize = 3;

/// What one dry run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DryRun {
    /// The script, as displayed in diagnostics.
    pub script: String,
    /// The sample's id (its uuid) and source.
    pub sample_id: String,
    pub sample: String,
    pub event_type: String,
    /// The run's "now" (RFC 3339): the sample's published time, or `--now`.
    pub now: String,
    pub ok: bool,
    /// The run-time error (`file:line:col: message`), when it failed.
    pub error: Option<String>,
    /// The mail it would send (recorded even when the run fails, for display; a failed run
    /// sends nothing).
    pub mails: Vec<Email>,
    /// The other actions it would carry out (Okta changes), in the order recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    /// What it would change in its state and timers, one line each (dry runs start from
    /// empty state).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    pub log: Vec<LogLine>,
}

/// Whether `script` receives `sample`: a subscribed event type, and the sample's hook (any, for
/// samples not tied to a hook) among the script's hooks.
pub fn receives(script: &Script, sample: &Sample) -> bool {
    if sample.hook == ANY_HOOK {
        script
            .on
            .iter()
            .any(|p| pattern_matches(p, &sample.event_type))
    } else {
        script.matches(&sample.hook, &sample.event_type)
    }
}

/// A run-time error at one place, and the samples it happened on.
struct Failure {
    diag: Diagnostic,
    samples: Vec<String>,
}

/// Runs `script` on each of `samples` at `now`; returns the runs and one diagnostic per
/// distinct error.
#[allow(clippy::too_many_arguments)]
pub fn dry_run(
    script: &Script,
    display: &str,
    stdlib_dir: &Path,
    samples: &[&Sample],
    host: &Arc<dyn Host>,
    limits: &Limits,
    senders: &Senders,
    now: DryNow,
) -> (Vec<DryRun>, Vec<Diagnostic>) {
    let mut runs = Vec::new();
    let mut failures: Vec<Failure> = Vec::new();
    for sample in samples {
        let hook = if sample.hook == ANY_HOOK {
            script
                .hooks
                .as_ref()
                .and_then(|h| h.first().cloned())
                .unwrap_or_else(|| DEFAULT_HOOK.to_string())
        } else {
            sample.hook.clone()
        };
        let published = serde_json::from_slice::<serde_json::Value>(&sample.json)
            .ok()
            .and_then(|v| v.get("published")?.as_str().map(str::to_string))
            .unwrap_or_default();
        let delivery = DeliveryInfo {
            id: DRY_RUN_DELIVERY_ID.to_string(),
            time: published,
            hook,
            source: DRY_RUN_SOURCE.to_string(),
        };
        let now_ms = now.for_event(&sample.json);
        let mut outcome = run(
            script,
            &sample.json,
            &sample.id,
            &delivery,
            &FixedNow::wrap(host, now_ms),
            limits,
            senders,
        );
        // What `engine check` prints of it, scrubbed of secrets like every recorded run.
        crate::process::scrub_outcome(&mut outcome);
        let changes = outcome.effects.describe();
        let (mut mails, mut actions) = (Vec::new(), Vec::new());
        for a in outcome.actions {
            match a {
                Action::Email(e) => mails.push(e),
                other => actions.push(other),
            }
        }
        let mut record = DryRun {
            script: display.to_string(),
            sample_id: sample.id.clone(),
            sample: sample.source.clone(),
            event_type: sample.event_type.clone(),
            now: crate::util::format_ms(now_ms),
            ok: outcome.result.is_ok(),
            error: None,
            mails,
            actions,
            changes,
            log: outcome.log,
        };
        if let Err(e) = outcome.result {
            let code = match e.kind {
                RunErrorKind::Limit => Code::E0302,
                RunErrorKind::Script | RunErrorKind::Transient | RunErrorKind::Load => Code::E0301,
            };
            // The place: the script, or a stdlib module (`stdlib/okta.rhai`).
            let (file, source) = if e.file == script.file_name || e.file.is_empty() {
                (display.to_string(), script.source.clone())
            } else {
                let rel = e.file.strip_prefix("stdlib/").unwrap_or(&e.file);
                let path = stdlib_dir.join(rel);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                (path.display().to_string(), text)
            };
            let mut diag = Diagnostic::new(
                code,
                display,
                &file,
                format!("dry run fails: {}", e.message),
            )
            .at(&source, e.line, e.col, 1);
            for t in &e.trace {
                diag = diag.note(format!("in {t}"));
            }
            if let Some(h) = &e.hint {
                diag = diag.help(h.clone());
            }
            // The hint is the diagnostic's help; the run's line shows the error alone.
            record.error = Some(RunError { hint: None, ..e }.to_string());
            // One finding per place: the same failure on several samples (details such as an
            // array's length may differ) is listed once, with its samples.
            let same = |f: &&mut Failure| {
                f.diag.code == diag.code
                    && f.diag.file == diag.file
                    && f.diag.line == diag.line
                    && f.diag.col == diag.col
            };
            match failures.iter_mut().find(same) {
                Some(f) => f.samples.push(sample.name()),
                None => failures.push(Failure {
                    diag,
                    samples: vec![sample.name()],
                }),
            }
        }
        runs.push(record);
    }
    let diags = failures
        .into_iter()
        .map(|f| {
            let n = f.samples.len();
            let mut named: Vec<String> =
                f.samples.iter().take(MAX_SAMPLES_NAMED).cloned().collect();
            if n > MAX_SAMPLES_NAMED {
                named.push(format!("and {} more", n - MAX_SAMPLES_NAMED));
            }
            f.diag.note(format!(
                "on {n} sample{}: {}",
                if n == 1 { "" } else { "s" },
                named.join(", ")
            ))
        })
        .collect();
    (runs, diags)
}
