//! The history and processing commands: `runs`, `outbox`, `replay`, `run` (dry run).
//! Each works whether or not `engine serve` holds the store.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use serde::Serialize;

use crate::cli::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE, print_table};
use crate::config::Config;
use crate::outbox::OutboxView;
use crate::remote::{self, Query, ReplayedRun};
use crate::runs::{RunRecord, RunStatus, RunsView};
use crate::script::{self, Action, ScriptSet};
use crate::serve;
use crate::server::ADMIN_TOKEN_HEADER;
use crate::store::{CommitMode, OpenError, Store};

/// How long `replay` waits for its runs (and their mail) before leaving them to the server.
pub const REPLAY_WAIT: Duration = Duration::from_secs(30);
/// How often `replay` looks at the runs it waits for.
const REPLAY_POLL: Duration = Duration::from_millis(50);
/// Characters of an error shown in a table cell.
const ERROR_CELL_CHARS: usize = 80;

fn report(code: u8, e: &dyn std::fmt::Display) -> u8 {
    eprintln!("error: {e}");
    code
}

fn print_json<T: Serialize>(value: &T) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// The first line of `s`, cut to `n` characters with `…` when anything was left out.
pub fn cut(s: &str, n: usize) -> String {
    let first = s.lines().next().unwrap_or_default();
    if first.chars().count() > n || s.lines().count() > 1 {
        format!("{}…", first.chars().take(n).collect::<String>())
    } else {
        first.to_string()
    }
}

pub fn runs(config: &Config, failed: bool, limit: usize, json: bool) -> u8 {
    let rows: Vec<RunRecord> = match remote::read(config, &Query::Runs { limit, failed }) {
        Ok(r) => r.unwrap_or_default(),
        Err(e) => return report(EXIT_FAILURE, &e),
    };
    if json {
        print_json(&rows);
        return EXIT_OK;
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
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
        })
        .collect();
    print_table(
        &mut std::io::stdout().lock(),
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
        &table,
    );
    EXIT_OK
}

pub fn outbox(config: &Config, failed: bool, limit: usize, json: bool) -> u8 {
    let rows: Vec<crate::outbox::OutboxMail> =
        match remote::read(config, &Query::Outbox { limit, failed }) {
            Ok(r) => r.unwrap_or_default(),
            Err(e) => return report(EXIT_FAILURE, &e),
        };
    if json {
        print_json(&rows);
        return EXIT_OK;
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
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
        })
        .collect();
    print_table(
        &mut std::io::stdout().lock(),
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
        &table,
    );
    EXIT_OK
}

/// `engine replay`: through the running server's admin endpoint, or in this process when no
/// server holds the store.
pub async fn replay(config: &Config, uuid: Option<&str>, failed: bool) -> u8 {
    match Store::open(&config.data_dir, CommitMode::Group) {
        Ok(store) => replay_here(config, Arc::new(store), uuid, failed).await,
        Err(OpenError::Busy { .. }) => replay_via_server(config, uuid, failed).await,
        Err(e) => report(EXIT_FAILURE, &e),
    }
}

async fn replay_here(config: &Config, store: Arc<Store>, uuid: Option<&str>, failed: bool) -> u8 {
    let mut log = std::io::stderr();
    let runtime = match serve::build_runtime(config, store.clone(), &mut log) {
        Ok(r) => r,
        Err(e) => return report(EXIT_USAGE, &e),
    };
    let created = match uuid {
        Some(u) => runtime.processor.replay_event(u).await,
        None => runtime.processor.replay_failed().await,
    };
    let ids = match created {
        Ok(ids) => ids,
        Err(e) => return report(EXIT_FAILURE, &e),
    };
    let _ = failed;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let processing = tokio::spawn(runtime.processor.clone().run(stop_rx.clone()));
    let sending = tokio::spawn(runtime.outbox.clone().run(stop_rx));
    let deadline = Instant::now() + REPLAY_WAIT;
    while Instant::now() < deadline {
        let runs_done = ids.iter().all(|id| {
            RunsView(store.db())
                .get(*id)
                .ok()
                .flatten()
                .is_none_or(|r| r.status.is_finished())
        });
        let now = crate::util::now_ms();
        let mail_done = OutboxView(store.db())
            .due()
            .map(|d| d.iter().all(|(_, nb)| *nb > now))
            .unwrap_or(true);
        if runs_done && mail_done {
            break;
        }
        tokio::time::sleep(REPLAY_POLL).await;
    }
    let _ = stop_tx.send(true);
    let _ = processing.await;
    let _ = sending.await;
    let records: Vec<RunRecord> = ids
        .iter()
        .filter_map(|id| RunsView(store.db()).get(*id).ok().flatten())
        .collect();
    let code = print_replayed(&remote::replayed(&records, store.db()));
    drop(runtime);
    tokio::task::spawn_blocking(move || drop(store)).await.ok();
    code
}

async fn replay_via_server(config: &Config, uuid: Option<&str>, _failed: bool) -> u8 {
    let (addr, token) = match remote::admin_target(config) {
        Ok(t) => t,
        Err(e) => return report(EXIT_FAILURE, &e),
    };
    let body = match uuid {
        Some(u) => serde_json::json!({ "uuid": u }),
        None => serde_json::json!({ "failed": true }),
    };
    let url = format!("http://{addr}/admin/replay");
    let headers = vec![(ADMIN_TOKEN_HEADER.to_string(), token)];
    let answer =
        match crate::client::request(Method::POST, &url, &headers, Bytes::from(body.to_string()))
            .await
        {
            Ok(a) => a,
            Err(e) => {
                return report(
                    EXIT_FAILURE,
                    &format!("cannot reach the running server at {addr}: {e}"),
                );
            }
        };
    let value: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    if answer.status != 200 {
        let msg = value["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| answer.text());
        return report(EXIT_FAILURE, &msg);
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
                Ok(None) => return report(EXIT_FAILURE, &"the store disappeared"),
                Err(e) => return report(EXIT_FAILURE, &e),
            };
        let done = runs.iter().all(|r| r.record.status.is_finished());
        if done || Instant::now() >= deadline {
            if !done {
                println!(
                    "(still running after {} s; see `engine runs`)",
                    REPLAY_WAIT.as_secs()
                );
            }
            return print_replayed(&runs);
        }
        tokio::time::sleep(REPLAY_POLL).await;
    }
}

fn print_replayed(runs: &[ReplayedRun]) -> u8 {
    if runs.is_empty() {
        println!("nothing to replay (no script subscribes to that event, or no failed runs)");
        return EXIT_OK;
    }
    let mut code = EXIT_OK;
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
            code = EXIT_FAILURE;
        }
    }
    code
}

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
) -> u8 {
    let limits = crate::worker::limits_from(&config.limits);
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
            return EXIT_FAILURE;
        }
    };
    let bytes = match std::fs::read(payload) {
        Ok(b) => b,
        Err(e) => {
            return report(
                EXIT_USAGE,
                &format!("cannot read {}: {e}", payload.display()),
            );
        }
    };
    let events = match script::split_payload(&bytes, hook) {
        Ok(ev) => ev,
        Err(e) => return report(EXIT_USAGE, &format!("{}: {e}", payload.display())),
    };
    let host = match serve::build_host(config) {
        Ok(h) => h,
        Err(e) => return report(EXIT_USAGE, &e),
    };
    let mut results = Vec::new();
    for (delivery, json_bytes) in events {
        let head: serde_json::Value = serde_json::from_slice(&json_bytes).unwrap_or_default();
        let event_type = head["eventType"].as_str().unwrap_or_default().to_string();
        let event_uuid = head["uuid"].as_str().unwrap_or_default().to_string();
        let (s, h, l) = (script.clone(), host.clone(), limits.clone());
        let outcome =
            tokio::task::spawn_blocking(move || script::run(&s, &json_bytes, &delivery, &h, &l))
                .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => return report(EXIT_FAILURE, &format!("the run crashed: {e}")),
        };
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
        EXIT_FAILURE
    } else {
        EXIT_OK
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
    code
}

/// Captured samples (from the store) and added ones (files), newest first.
pub fn all_samples(config: &Config) -> Result<Vec<crate::samples::StoredSample>, String> {
    let captured: Vec<remote::SampleWithJson> =
        remote::read(config, &Query::Samples)?.unwrap_or_default();
    let mut out: Vec<crate::samples::StoredSample> = captured
        .into_iter()
        .map(|s| crate::samples::StoredSample {
            json: s.json.into_bytes(),
            ..s.sample
        })
        .collect();
    out.extend(crate::samples::added(&config.data_dir));
    Ok(out)
}

pub fn samples_list(config: &Config, json: bool) -> u8 {
    let samples = match all_samples(config) {
        Ok(s) => s,
        Err(e) => return report(EXIT_FAILURE, &e),
    };
    if json {
        print_json(&samples);
        return EXIT_OK;
    }
    let rows: Vec<Vec<String>> = samples
        .iter()
        .map(|s| {
            vec![
                s.hook.clone(),
                s.event_type.clone(),
                s.uuid.clone(),
                s.source.clone(),
            ]
        })
        .collect();
    print_table(
        &mut std::io::stdout().lock(),
        &["HOOK", "EVENT TYPE", "UUID", "SOURCE"],
        &rows,
    );
    EXIT_OK
}

pub fn samples_show(config: &Config, event_type: &str) -> u8 {
    let samples = match all_samples(config) {
        Ok(s) => s,
        Err(e) => return report(EXIT_FAILURE, &e),
    };
    let matching: Vec<serde_json::Value> = samples
        .iter()
        .filter(|s| s.event_type == event_type)
        .filter_map(|s| serde_json::from_slice(&s.json).ok())
        .collect();
    if matching.is_empty() {
        let mut types: Vec<&str> = samples.iter().map(|s| s.event_type.as_str()).collect();
        types.sort();
        types.dedup();
        return report(
            EXIT_FAILURE,
            &format!(
                "no sample of `{event_type}`\n  hint: samples exist for: {}; add one with `engine samples add FILE`",
                if types.is_empty() {
                    "(none)".to_string()
                } else {
                    types.join(", ")
                }
            ),
        );
    }
    print_json(&matching);
    EXIT_OK
}

pub fn samples_add(config: &Config, file: &Path) -> u8 {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => return report(EXIT_USAGE, &format!("cannot read {}: {e}", file.display())),
    };
    match crate::samples::add(&config.data_dir, &bytes) {
        Ok(paths) => {
            for p in paths {
                println!("added {}", p.display());
            }
            EXIT_OK
        }
        Err(e) => report(EXIT_USAGE, &format!("{}: {e}", file.display())),
    }
}

/// Samples for `check` and `tokens`: `--samples DIR` if given, plus captured and added ones.
fn gather_samples(
    config: &Config,
    dir: Option<&Path>,
) -> Result<Vec<crate::tokens::Sample>, String> {
    let mut out = Vec::new();
    if let Some(d) = dir {
        out.extend(crate::tokens::load_samples_dir(d).map_err(|e| e.to_string())?);
    }
    for s in all_samples(config)? {
        let hook = if s.hook == "added" {
            crate::tokens::ANY_HOOK
        } else {
            s.hook.as_str()
        };
        out.push(crate::tokens::Sample::new(hook, s.json, &s.source));
    }
    Ok(out)
}

pub fn check(
    config: &Config,
    scripts: &[std::path::PathBuf],
    samples: Option<&Path>,
    json: bool,
    deny_warnings: bool,
) -> u8 {
    let samples = match gather_samples(config, samples) {
        Ok(s) => s,
        Err(e) => return report(EXIT_USAGE, &e),
    };
    let host: Arc<dyn script::Host> = match &config.directory {
        Some(p) => match crate::lookup::Directory::load(p) {
            Ok(d) => match crate::lookup::Lookup::new(Some(d), None) {
                Ok(l) => Arc::new(serve::LookupHost(l)),
                Err(e) => return report(EXIT_USAGE, &e),
            },
            Err(e) => return report(EXIT_USAGE, &e),
        },
        None => Arc::new(script::NoDirectory),
    };
    let limits = crate::worker::limits_from(&config.limits);
    let hooks: Vec<String> = config.hooks.iter().map(|h| h.id.clone()).collect();
    let options = crate::check::CheckOptions {
        json,
        deny_warnings,
        hooks: Some(&hooks),
    };
    crate::check::check_command_with_host(
        scripts,
        &config.scripts_dir,
        &config.stdlib_dir,
        &samples,
        &limits,
        &host,
        options,
        &mut std::io::stdout().lock(),
    )
}

pub fn tokens(config: &Config, payload: Option<&Path>, event_type: Option<&str>, json: bool) -> u8 {
    let samples = match payload {
        Some(p) => {
            let bytes = match std::fs::read(p) {
                Ok(b) => b,
                Err(e) => return report(EXIT_USAGE, &format!("cannot read {}: {e}", p.display())),
            };
            match script::split_payload(&bytes, crate::tokens::ANY_HOOK) {
                Ok(evs) => evs
                    .into_iter()
                    .map(|(_, j)| {
                        crate::tokens::Sample::new(
                            crate::tokens::ANY_HOOK,
                            j,
                            &p.display().to_string(),
                        )
                    })
                    .collect(),
                Err(e) => return report(EXIT_USAGE, &format!("{}: {e}", p.display())),
            }
        }
        None => match gather_samples(config, None) {
            Ok(s) => s,
            Err(e) => return report(EXIT_USAGE, &e),
        },
    };
    crate::tokens::tokens_command(&samples, event_type, json, &mut std::io::stdout().lock())
}
