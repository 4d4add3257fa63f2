//! `engine replay <uuid> | --failed [--script NAME] [--dry-run]`: through the running server's
//! admin endpoint, or in this process (the processor and mail executor on the store) when no
//! server holds it. Waits for the runs (and their mail) and prints what each did. With
//! `--dry-run` it runs the current scripts here on the stored events and carries out nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;

use super::output::{CliError, CliResult, Exit};
use super::remote;
use super::run::{DryEvent, RunNow, dry_run_one, print_dry_runs};
use crate::config::Config;
use crate::ingest::ADMIN_TOKEN_HEADER;
use crate::script::{DeliveryInfo, Script, ScriptSet};
use crate::store::outbox::OutboxView;
use crate::store::query::{self, Query, ReplayedRun};
use crate::store::runs::{RunFilter, RunRecord, RunStatus, RunsView};
use crate::store::{CommitMode, EventDetail, OpenError, Store};

/// How long `replay` waits for its runs (and their mail) before leaving them to the server.
pub const REPLAY_WAIT: Duration = Duration::from_secs(30);
/// How often `replay` looks at the runs it waits for.
const REPLAY_POLL: Duration = Duration::from_millis(50);

pub async fn replay(config: &Config, uuid: Option<&str>, script: Option<&str>) -> CliResult {
    match Store::open_with_cache(
        &config.data_dir,
        CommitMode::Group,
        config.store_cache_bytes,
    ) {
        Ok(store) => replay_here(config, Arc::new(store), uuid, script).await,
        Err(OpenError::Busy { .. }) => replay_via_server(config, uuid, script).await,
        Err(e) => Err(CliError::failure(e)),
    }
}

/// `engine replay … --dry-run`: runs the current scripts on the stored events (read through the
/// server while it runs), prints each run's log and actions, carries out none and records no
/// run.
pub async fn dry_run(
    config: &Config,
    uuid: Option<&str>,
    script: Option<&str>,
    json: bool,
) -> CliResult {
    let (set, errors) = ScriptSet::load(&config.scripts_dir, &config.stdlib_dir, &config.limits);
    for e in &errors {
        eprintln!("warning: script not loaded: {e}");
    }
    if let Some(name) = script
        && set.get(name).is_none()
    {
        return Err(CliError::failure(format!(
            "no script `{name}` in {}\n  hint: `engine scripts` lists the scripts",
            config.scripts_dir.display()
        )));
    }
    // (script, event) pairs: the subscribed scripts of one event, or the failed runs.
    let mut pairs: Vec<(Arc<Script>, EventDetail)> = Vec::new();
    match uuid {
        Some(u) => {
            let event = event_detail(config, u)?;
            for s in set.matching(&event.hook, &event.event_type) {
                if script.is_none_or(|n| n == s.name) {
                    pairs.push((s, event.clone()));
                }
            }
        }
        None => {
            let filter = RunFilter {
                failed_now: true,
                script: script.map(str::to_string),
                event: None,
            };
            let failed: Vec<RunRecord> = remote::read(
                config,
                &Query::Runs {
                    limit: usize::MAX,
                    filter,
                },
            )
            .map_err(CliError::failure)?
            .unwrap_or_default();
            for r in failed {
                let Some(s) = set.get(&r.script).cloned() else {
                    eprintln!(
                        "note: run {} is of `{}`, which is not loaded now",
                        r.id, r.script
                    );
                    continue;
                };
                pairs.push((s, event_detail(config, &r.event_uuid)?));
            }
        }
    }
    if pairs.is_empty() {
        println!("nothing to replay (no script subscribes to that event, or no failed runs)");
        return Ok(Exit::Ok);
    }
    let host = crate::app::build_okta(config)
        .and_then(|okta| crate::app::build_host(config, okta))
        .map_err(CliError::usage)?;
    let mut results = Vec::new();
    for (s, e) in pairs {
        let event = DryEvent {
            delivery: DeliveryInfo {
                id: e.delivery_id.clone(),
                time: e.event_time.clone(),
                hook: e.hook.clone(),
                source: e.source.clone(),
            },
            id: e.uuid.clone(),
            event_type: e.event_type.clone(),
            json: serde_json::to_vec(&e.payload).unwrap_or_default(),
        };
        results.push(
            dry_run_one(
                &s,
                event,
                RunNow::Clock,
                &host,
                &config.limits,
                &config.senders(),
            )
            .await?,
        );
    }
    Ok(print_dry_runs(&results, json))
}

/// A stored event whole, read through the server while it runs.
fn event_detail(config: &Config, uuid: &str) -> Result<EventDetail, CliError> {
    let found: Option<EventDetail> = remote::read(
        config,
        &Query::Event {
            uuid: uuid.to_string(),
        },
    )
    .map_err(CliError::failure)?
    .flatten();
    found.ok_or_else(|| {
        CliError::failure(format!(
            "no stored event has uuid `{uuid}`\n  hint: `engine events` lists the stored events"
        ))
    })
}

async fn replay_here(
    config: &Config,
    store: Arc<Store>,
    uuid: Option<&str>,
    script: Option<&str>,
) -> CliResult {
    let mut log = std::io::stderr();
    let runtime =
        crate::app::build_runtime(config, store.clone(), &mut log).map_err(CliError::usage)?;
    let created = match uuid {
        Some(u) => runtime.processor.replay_event(u, script).await,
        None => runtime.processor.replay_failed(script).await,
    };
    let ids = created.map_err(CliError::failure)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = runtime.start_processing(&stop_rx);
    let deadline = Instant::now() + REPLAY_WAIT;
    while Instant::now() < deadline {
        let runs_done = ids.iter().all(|id| {
            RunsView(&*store)
                .get(*id)
                .ok()
                .flatten()
                .is_none_or(|r| r.status.is_finished())
        });
        let now = crate::util::now_ms();
        let mail_done = OutboxView(&*store)
            .due()
            .map(|d| d.iter().all(|(_, nb)| *nb > now))
            .unwrap_or(true);
        if runs_done && mail_done {
            break;
        }
        tokio::time::sleep(REPLAY_POLL).await;
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let records: Vec<RunRecord> = ids
        .iter()
        .filter_map(|id| RunsView(&*store).get(*id).ok().flatten())
        .collect();
    let code = print_replayed(&query::replayed(&records, &*store));
    drop(runtime);
    tokio::task::spawn_blocking(move || drop(store)).await.ok();
    Ok(code)
}

async fn replay_via_server(config: &Config, uuid: Option<&str>, script: Option<&str>) -> CliResult {
    let (addr, token) = remote::admin_target(config).map_err(CliError::failure)?;
    let mut body = match uuid {
        Some(u) => serde_json::json!({ "uuid": u }),
        None => serde_json::json!({ "failed": true }),
    };
    if let Some(s) = script {
        body["script"] = s.into();
    }
    let url = format!("http://{addr}/admin/replay");
    let headers = vec![(ADMIN_TOKEN_HEADER.to_string(), token)];
    let answer = crate::util::http_client::request(
        Method::POST,
        &url,
        &headers,
        Bytes::from(body.to_string()),
    )
    .await
    .map_err(|e| CliError::failure(format!("cannot reach the running server at {addr}: {e}")))?;
    let value: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    if answer.status != 200 {
        let msg = value["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| answer.text());
        return Err(CliError::failure(msg));
    }
    let ids: Vec<u64> = value["runs"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    let deadline = Instant::now() + REPLAY_WAIT;
    let query = Query::Replayed { ids };
    loop {
        let runs: Vec<ReplayedRun> =
            match tokio::task::block_in_place(|| remote::read(config, &query)) {
                Ok(Some(r)) => r,
                Ok(None) => return Err(CliError::failure("the store disappeared")),
                Err(e) => return Err(CliError::failure(e)),
            };
        let done = runs.iter().all(|r| r.record.status.is_finished());
        if done || Instant::now() >= deadline {
            if !done {
                println!(
                    "(still running after {} s; see `engine runs`)",
                    REPLAY_WAIT.as_secs()
                );
            }
            return Ok(print_replayed(&runs));
        }
        tokio::time::sleep(REPLAY_POLL).await;
    }
}

fn print_replayed(runs: &[ReplayedRun]) -> Exit {
    if runs.is_empty() {
        println!("nothing to replay (no script subscribes to that event, or no failed runs)");
        return Exit::Ok;
    }
    let mut code = Exit::Ok;
    for ReplayedRun { record: r, mails } in runs {
        println!(
            "run {} ({} on event {}): {}{}",
            r.id,
            r.script,
            r.event_uuid,
            r.status.as_str(),
            r.replay_of
                .map(|p| format!(", replays run {p}"))
                .unwrap_or_default()
        );
        for m in mails {
            println!("  {m}");
        }
        if let Some(e) = &r.error {
            println!("  error: {e}");
        }
        if r.status != RunStatus::Succeeded {
            code = Exit::Failure;
        }
    }
    code
}
