//! `engine check` and `engine tokens`: gather the samples and the host, run the authoring
//! layer, and write its report (text or JSON) with the exit code it gives.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::output::{CliError, CliResult, Exit};
use super::samples::gather;
use crate::authoring::check::{self, render_report};
use crate::authoring::now::DryNow;
use crate::authoring::samples::{ANY_HOOK, Sample};
use crate::authoring::tokens::{render_json, render_table, tokens_for};
use crate::config::Config;
use crate::ingest::envelope::parse_payload;
use crate::script::{Host, Limits, NoDirectory, Senders};

/// How `engine check` reports, and what it knows of the config.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions<'a> {
    /// JSON instead of text.
    pub json: bool,
    /// Warnings fail the check (exit 1).
    pub deny_warnings: bool,
    /// The configured hook ids; `hook:` ids are checked against them when given.
    pub hooks: Option<&'a [String]>,
    /// The configured hooks of kind `generic` (an event type Okta cannot deliver is a warning
    /// for scripts bound only to them, an error otherwise).
    pub generic_hooks: &'a [String],
    /// Whether engine.toml has `[okta]`, when known (`okta::` actions without it are errors).
    pub okta: Option<bool>,
    /// The From addresses dry runs' mails may name (`Config::senders`; `None`: the default
    /// From only, as without `[smtp]`).
    pub senders: Option<&'a Senders>,
    /// The dry runs' "now" (`--now`, else each sample's published time).
    pub now: DryNow,
}

/// `engine check` with a host that finds nobody (dry runs see `lookup_user` return `()`).
#[allow(clippy::too_many_arguments)]
pub fn check_command(
    scripts: &[PathBuf],
    scripts_dir: &Path,
    stdlib_dir: &Path,
    samples: &[Sample],
    limits: &Limits,
    json: bool,
    deny_warnings: bool,
    out: &mut dyn Write,
) -> Exit {
    let host: Arc<dyn Host> = Arc::new(NoDirectory);
    let options = CheckOptions {
        json,
        deny_warnings,
        hooks: None,
        generic_hooks: &[],
        okta: None,
        senders: None,
        now: DryNow::EventTime,
    };
    check_command_with_host(
        scripts,
        scripts_dir,
        stdlib_dir,
        samples,
        limits,
        &host,
        options,
        out,
    )
}

/// `engine check`: checks `scripts` (all of `scripts_dir` when empty), writes the report as text
/// or JSON, and returns the exit code (0 clean, 1 findings that fail, 2 usage error). Dry runs
/// call `host` for `lookup_user` (give it a directory-only host: nothing may be sent).
#[allow(clippy::too_many_arguments)]
pub fn check_command_with_host(
    scripts: &[PathBuf],
    scripts_dir: &Path,
    stdlib_dir: &Path,
    samples: &[Sample],
    limits: &Limits,
    host: &Arc<dyn Host>,
    options: CheckOptions<'_>,
    out: &mut dyn Write,
) -> Exit {
    let CheckOptions {
        json,
        deny_warnings,
        hooks,
        generic_hooks,
        okta,
        senders,
        now,
    } = options;
    let default_senders = Senders::default();
    let senders = senders.unwrap_or(&default_senders);
    let mut report = match check::check(
        scripts,
        scripts_dir,
        stdlib_dir,
        samples,
        limits,
        senders,
        host,
        hooks,
        generic_hooks,
        okta,
        now,
    ) {
        Ok(r) => r,
        Err(message) => {
            let _ = if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({ "error": message, "exit_code": Exit::Usage.code() })
                )
            } else {
                writeln!(out, "error: {message}")
            };
            return Exit::Usage;
        }
    };
    report.finish(deny_warnings);
    let written = if json {
        serde_json::to_writer_pretty(&mut *out, &report)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        render_report(&report, deny_warnings, out)
    };
    match (written, report.summary.exit_code) {
        (Err(_), _) => Exit::Usage,
        (Ok(()), 0) => Exit::Ok,
        (Ok(()), _) => Exit::Failure,
    }
}

/// `engine tokens`: the tokens of `samples` (of the types matching `event_type`, if given), as
/// tables or JSON; Okta's documented fields when no sample matches.
pub fn tokens_command(
    samples: &[Sample],
    event_type: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Exit {
    let groups = tokens_for(samples, event_type);
    let written = if json {
        render_json(&groups, out)
    } else {
        render_table(&groups, out)
    };
    match written {
        Ok(()) => Exit::Ok,
        Err(_) => Exit::Usage,
    }
}

pub fn check(
    config: &Config,
    scripts: &[PathBuf],
    samples: Option<&Path>,
    json: bool,
    deny_warnings: bool,
    now: Option<&str>,
) -> CliResult {
    let now = DryNow::from_arg(now).map_err(CliError::usage)?;
    let samples = gather(config, samples)?;
    let host = crate::app::directory_host(config).map_err(CliError::usage)?;
    let hooks: Vec<String> = config.hooks.iter().map(|h| h.id.clone()).collect();
    let generic: Vec<String> = config
        .hooks
        .iter()
        .filter(|h| h.kind == crate::config::HookKind::Generic)
        .map(|h| h.id.clone())
        .collect();
    let senders = config.senders();
    let options = CheckOptions {
        json,
        deny_warnings,
        hooks: Some(&hooks),
        generic_hooks: &generic,
        okta: Some(config.okta.is_some()),
        senders: Some(&senders),
        now,
    };
    Ok(check_command_with_host(
        scripts,
        &config.scripts_dir,
        &config.stdlib_dir,
        &samples,
        &config.limits,
        &host,
        options,
        &mut std::io::stdout().lock(),
    ))
}

pub fn tokens(
    config: &Config,
    payload: Option<&Path>,
    event_type: Option<&str>,
    json: bool,
) -> CliResult {
    let samples = match payload {
        Some(p) => {
            let bytes = std::fs::read(p)
                .map_err(|e| CliError::usage(format!("cannot read {}: {e}", p.display())))?;
            let payload = parse_payload(&bytes)
                .map_err(|e| CliError::usage(format!("{}: {e}", p.display())))?;
            payload
                .events()
                .map(|(_, j)| Sample::new(ANY_HOOK, j.to_vec(), &p.display().to_string()))
                .collect()
        }
        None => gather(config, None)?,
    };
    Ok(tokens_command(
        &samples,
        event_type,
        json,
        &mut std::io::stdout().lock(),
    ))
}
