//! `engine backfill --since DURATION [--dry-run]`: one System Log pass by hand, through the
//! running server's admin endpoint (`POST /admin/backfill`) or, when no server holds the store,
//! on the store opened here. Lists the events the System Log has that the store lacks (events
//! younger than `backfill_lag_s` are left to the hook), and stores them unless `--dry-run`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::output::{CliError, CliResult, Exit, print_json, table};
use super::remote;
use crate::backfill::{Report, parse_duration};
use crate::config::Config;
use crate::script::{LiveScripts, ScriptSet};
use crate::store::{CommitMode, OpenError, Store};

/// How long `engine backfill` waits for the running server's pass (a long gap read under a
/// tight rate limit takes minutes).
pub const BACKFILL_WAIT: Duration = Duration::from_secs(30 * 60);

pub async fn backfill(config: &Config, since: &str, dry_run: bool, json: bool) -> CliResult {
    let span = parse_duration(since).map_err(CliError::usage)?;
    let since_ms = crate::util::now_ms().saturating_sub(span.as_millis() as u64);
    let report = match Store::open_with_cache(
        &config.data_dir,
        CommitMode::Group,
        config.store_cache_bytes,
    ) {
        Ok(store) => here(config, Arc::new(store), since_ms, dry_run).await?,
        Err(OpenError::Busy { .. }) => via_server(config, since_ms, dry_run)?,
        Err(e) => return Err(CliError::failure(e)),
    };
    if json {
        print_json(&report);
        return Ok(Exit::Ok);
    }
    if !report.missing.is_empty() {
        let rows: Vec<Vec<String>> = report
            .missing
            .iter()
            .map(|e| vec![e.published.clone(), e.event_type.clone(), e.uuid.clone()])
            .collect();
        table(&["PUBLISHED", "EVENT TYPE", "UUID"], &rows);
    }
    let what = if report.dry_run {
        "dry run: nothing stored".to_string()
    } else {
        format!("{} stored", report.stored)
    };
    println!(
        "{} event(s) in the System Log from {} to {} that the store lacked, of {} read ({}; {} request(s))",
        report.missing.len(),
        report.since,
        report.until,
        report.read,
        what,
        report.requests
    );
    if report.requests == 0 && report.filter.is_empty() && report.since != report.until {
        eprintln!(
            "hint: no script receives events of the backfill hook, so there was nothing to read; \
             add a script whose `//! on:` matches the events (and whose `//! hook:`, if any, names it) and run this again"
        );
    }
    if report.delivery_failures > 0 {
        println!(
            "Okta recorded {} failed event hook deliveries in that time",
            report.delivery_failures
        );
    }
    Ok(Exit::Ok)
}

/// The pass on the store opened here (no server runs), with the scripts as they are on disk.
async fn here(
    config: &Config,
    store: Arc<Store>,
    since_ms: u64,
    dry_run: bool,
) -> Result<Report, CliError> {
    let (set, errors) = ScriptSet::load(&config.scripts_dir, &config.stdlib_dir, &config.limits);
    for e in &errors {
        eprintln!("warning: script not loaded: {e}");
    }
    let scripts: LiveScripts = Arc::new(ArcSwap::from_pointee(set));
    let result = match crate::app::build_backfill(config, None, store.clone(), scripts) {
        Ok(Some(b)) => b.manual(since_ms, dry_run).await.map_err(CliError::failure),
        Ok(None) => Err(CliError::usage(crate::app::NO_BACKFILL)),
        Err(e) => Err(CliError::usage(e)),
    };
    // The writer is joined off the async threads.
    let _ = tokio::task::spawn_blocking(move || drop(store)).await;
    result
}

fn via_server(config: &Config, since_ms: u64, dry_run: bool) -> Result<Report, CliError> {
    let body = serde_json::json!({ "since_ms": since_ms, "dry_run": dry_run });
    let value = remote::admin_post_within(config, "backfill", &body, BACKFILL_WAIT)
        .map_err(CliError::failure)?;
    serde_json::from_value(value)
        .map_err(|e| CliError::failure(format!("unexpected answer from the server: {e}")))
}
