//! What each console page shows, read through the store's query layer. Each function runs on a
//! blocking thread and returns the page's data (serialized for its template), or `None` when
//! the record asked for does not exist.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Value, json};

use super::{ConsoleSettings, percent_encode};
use crate::authoring::samples::Sample;
use crate::authoring::tokens::token_groups;
use crate::script::{Action, ActionKind};
use crate::store::actions::{ActionStatus, ActionsView, Filter};
use crate::store::counts::{self, Counter, HOUR_MS};
use crate::store::outbox::OutboxView;
use crate::store::runs::{RunFilter, RunRecord, RunsView};
use crate::store::{EventFilter, Store};

/// Actions on the actions page (newest first).
pub const ACTIONS_PER_PAGE: usize = 200;

/// Keys on one page of the state page.
pub const STATE_PER_PAGE: usize = 100;
/// Timers on one page of the timers page.
pub const TIMERS_PER_PAGE: usize = 100;

/// Events on one page of the events list.
pub const EVENTS_PER_PAGE: usize = 50;
/// Runs on one page of the runs list.
pub const RUNS_PER_PAGE: usize = 100;
/// A filtered events page looks at no more than this many events: a filter that matches
/// little answers in bounded time, and the page offers to look further back.
pub const MAX_EVENTS_SCANNED: usize = 20_000;
/// Hours in the overview's chart.
pub const CHART_HOURS: u64 = 24;
/// Lines of source shown around a run's error line (before and after).
pub const SOURCE_CONTEXT_LINES: usize = 2;

pub(super) type Read<T> = Result<Option<T>, String>;

pub(super) fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// One bar group of the chart: its SVG coordinates are computed here, not in the template.
#[derive(Serialize)]
struct Bar {
    x: u64,
    label: String,
    events: u64,
    runs: u64,
    failures: u64,
    events_h: u64,
    runs_h: u64,
    failures_h: u64,
}

/// The chart's drawing height, in SVG units.
const CHART_HEIGHT: u64 = 100;

pub fn overview(store: &Store, settings: &ConsoleSettings) -> Read<Value> {
    let h = store.history();
    let now = crate::util::now_ms();
    let first_hour = (now / HOUR_MS + 1).saturating_sub(CHART_HOURS);
    let start = first_hour * HOUR_MS;
    // The chart reads the store's hourly counters (24 rows each), never the history itself.
    let (events, runs, failures, last_by_hook, verified) = {
        let txn = h.read().map_err(err)?;
        let hourly = |c| counts::hourly(&txn, c, first_hour, CHART_HOURS).map_err(err);
        (
            hourly(Counter::Events)?,
            hourly(Counter::Runs)?,
            hourly(Counter::Failures)?,
            counts::last_deliveries(&txn).map_err(err)?,
            counts::verifications(&txn).map_err(err)?,
        )
    };
    let buckets: Vec<(u64, u64, u64)> = (0..CHART_HOURS as usize)
        .map(|i| (events[i], runs[i], failures[i]))
        .collect();
    let peak = buckets
        .iter()
        .map(|b| b.0.max(b.1))
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = |n: u64| (n * CHART_HEIGHT).div_ceil(peak);
    let bars: Vec<Bar> = buckets
        .iter()
        .enumerate()
        .map(|(i, &(events, runs, failures))| Bar {
            x: i as u64 * 30,
            label: crate::util::format_ms(start + i as u64 * HOUR_MS)[11..13].to_string(),
            events,
            runs,
            failures,
            events_h: scale(events),
            runs_h: scale(runs),
            failures_h: scale(failures),
        })
        .collect();
    let depths = h.depths().map_err(err)?;
    // The action queue's depth: each kind's due index knows its length.
    let mut actions_queued = 0;
    for kind in ActionKind::ALL {
        actions_queued += ActionsView(&h).due_count(kind).map_err(err)?;
    }
    let failed_now = RunsView(&h)
        .list(
            RUNS_PER_PAGE,
            &RunFilter {
                failed_now: true,
                ..RunFilter::default()
            },
        )
        .map_err(err)?
        .len();
    let scripts = {
        let txn = h.read().map_err(err)?;
        crate::store::script_state::recorded(&txn).map_err(err)?
    }
    .unwrap_or_default();
    let backfill_read_to = h
        .backfill_cursor()
        .map_err(err)?
        .map(crate::util::format_ms);
    let hooks: Vec<Value> = settings
        .hooks
        .iter()
        .map(|(id, url)| {
            json!({
                "id": id,
                "url": url,
                "last_delivery": last_by_hook
                    .get(id)
                    .map(|ms| crate::util::format_ms(*ms))
                    .unwrap_or_default(),
                // As far as the engine can tell: Okta verifies a hook once, then delivers.
                "verified": match (verified.get(id), last_by_hook.get(id)) {
                    (Some(ms), _) => format!("verified {}", crate::util::format_ms(*ms)),
                    (None, Some(_)) => "delivering (verified before this store kept it)".to_string(),
                    (None, None) => "not verified yet: click Verify on the event hook in Okta".to_string(),
                },
                "verified_ok": verified.contains_key(id) || last_by_hook.contains_key(id),
            })
        })
        .collect();
    Ok(Some(json!({
        "hooks": hooks,
        "bars": bars,
        "peak": peak,
        "chart_height": CHART_HEIGHT,
        "chart_width": CHART_HOURS * 30,
        "queued": depths.queued,
        "actions_queued": actions_queued,
        "events": depths.events,
        "quarantined": depths.quarantined,
        "failed_now": failed_now,
        "scripts": scripts,
        "script_errors": scripts.iter().filter(|s| s.last_error.is_some()).count(),
        "backfill_on": settings.backfill,
        "backfill_read_to": backfill_read_to,
    })))
}

pub(super) fn nonempty(q: &HashMap<String, String>, key: &str) -> Option<String> {
    q.get(key)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

pub fn events(store: &Store, q: &HashMap<String, String>) -> Read<Value> {
    let h = store.history();
    let filter = EventFilter {
        event_type: nonempty(q, "type"),
        hook: nonempty(q, "hook"),
        source: nonempty(q, "source"),
        published_from: nonempty(q, "from"),
        published_to: nonempty(q, "to"),
        text: nonempty(q, "q"),
    };
    let before = nonempty(q, "before").and_then(|b| b.parse().ok());
    let page = h
        .events_page(before, EVENTS_PER_PAGE, &filter, MAX_EVENTS_SCANNED)
        .map_err(err)?;
    // The next page keeps the filter.
    let next = page.next_before.map(|b| {
        let mut parts = vec![format!("before={b}")];
        for key in ["type", "hook", "source", "from", "to", "q"] {
            if let Some(v) = nonempty(q, key) {
                parts.push(format!("{key}={}", percent_encode(&v)));
            }
        }
        format!("/events?{}", parts.join("&"))
    });
    let rows: Vec<Value> = page
        .rows
        .iter()
        .map(|e| json!({ "row": e, "href": format!("/events/{}", percent_encode(&e.uuid)) }))
        .collect();
    Ok(Some(json!({
        "rows": rows,
        "next": next,
        "scanned": page.scanned,
        "filter": {
            "type": filter.event_type.unwrap_or_default(),
            "hook": filter.hook.unwrap_or_default(),
            "source": filter.source.unwrap_or_default(),
            "from": filter.published_from.unwrap_or_default(),
            "to": filter.published_to.unwrap_or_default(),
            "q": filter.text.unwrap_or_default(),
        },
    })))
}

fn run_row(r: &RunRecord) -> Value {
    json!({
        "id": r.id,
        "script": r.script,
        "status": r.status.as_str(),
        "event_type": r.event_type,
        "event_uuid": r.event_uuid,
        "event_href": format!("/events/{}", percent_encode(&r.event_uuid)),
        "created": r.created,
        "attempts": r.attempts,
        "error": r.error.as_ref().map(|e| e.to_string().lines().next().unwrap_or("").to_string()),
        "replay_of": r.replay_of,
    })
}

pub fn event(store: &Store, uuid: &str) -> Read<Value> {
    let h = store.history();
    let Some(detail) = h.event_detail(uuid).map_err(err)? else {
        return Ok(None);
    };
    let pretty = serde_json::to_string_pretty(&detail.payload).unwrap_or_default();
    let runs: Vec<Value> = RunsView(&h)
        .of_event_at(detail.seq, uuid)
        .map_err(err)?
        .iter()
        .map(run_row)
        .collect();
    let json_bytes = serde_json::to_vec(&detail.payload).unwrap_or_default();
    let sample = Sample::new(&detail.hook, json_bytes, "this event");
    let tokens: Vec<Value> = token_groups(&[sample], None)
        .into_iter()
        .flat_map(|g| g.tokens)
        .map(|t| {
            json!({
                "path": t.path,
                "type": t.type_name,
                "example": t.example.map(|v| match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                }).unwrap_or_default(),
            })
        })
        .collect();
    Ok(Some(json!({
        "event": detail,
        "pretty": pretty,
        "tree": tree(&detail.payload),
        "runs": runs,
        "tokens": tokens,
    })))
}

/// A JSON value as nested `<details>` data: each node's key, its scalar text or its children.
fn tree(v: &Value) -> Value {
    fn node(key: String, v: &Value) -> Value {
        match v {
            Value::Object(m) => json!({
                "key": key,
                "kind": "object",
                "summary": format!("{{…}} {} fields", m.len()),
                "children": m.iter().map(|(k, c)| node(k.clone(), c)).collect::<Vec<_>>(),
            }),
            Value::Array(a) => json!({
                "key": key,
                "kind": "array",
                "summary": format!("[…] {} items", a.len()),
                "children": a.iter().enumerate().map(|(i, c)| node(i.to_string(), c)).collect::<Vec<_>>(),
            }),
            other => {
                json!({ "key": key, "kind": "scalar", "text": other.to_string(), "children": [] })
            }
        }
    }
    node("event".to_string(), v)
}

pub fn runs(store: &Store, q: &HashMap<String, String>) -> Read<Value> {
    let h = store.history();
    let failed = q.get("failed").is_some_and(|v| v == "1");
    let script = nonempty(q, "script");
    let filter = RunFilter {
        failed_now: failed,
        script: script.clone(),
        event: None,
    };
    let rows: Vec<Value> = RunsView(&h)
        .list(RUNS_PER_PAGE, &filter)
        .map_err(err)?
        .iter()
        .map(run_row)
        .collect();
    let mut scripts: Vec<String> = {
        let txn = h.read().map_err(err)?;
        crate::store::script_state::recorded(&txn)
            .map_err(err)?
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.script)
            .collect()
    };
    scripts.sort();
    Ok(Some(json!({
        "rows": rows,
        "failed": failed,
        "script": script.unwrap_or_default(),
        "scripts": scripts,
        "replayed": nonempty(q, "replayed"),
    })))
}

/// The source lines around `line` of `file` (a script, or `stdlib/…` for a module), with the
/// caret under `col`; empty when the file cannot be read (deleted since the run).
fn source_excerpt(
    settings: &ConsoleSettings,
    file: &str,
    line: usize,
    col: Option<usize>,
) -> Vec<Value> {
    if file.contains("..") || file.starts_with('/') {
        return Vec::new();
    }
    let path = match file.strip_prefix("stdlib/") {
        Some(rest) => settings.stdlib_dir.join(rest),
        None => settings.scripts_dir.join(file),
    };
    excerpt(&path, line, col)
}

/// The lines of `path` around `line`, with the caret under `col`; empty when it cannot be read.
pub(super) fn excerpt(path: &std::path::Path, line: usize, col: Option<usize>) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let first = line.saturating_sub(SOURCE_CONTEXT_LINES).max(1);
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .skip(first - 1)
        .take(line + SOURCE_CONTEXT_LINES + 1 - first)
        .map(|(n, l)| {
            let caret = (n == line)
                .then(|| col.map(|c| format!("{}^", " ".repeat(c.saturating_sub(1)))))
                .flatten();
            json!({ "n": n, "text": l, "error": n == line, "caret": caret })
        })
        .collect()
}

pub fn run(store: &Store, id: u64, settings: &ConsoleSettings) -> Read<Value> {
    let h = store.history();
    let Some(r) = RunsView(&h).get(id).map_err(err)? else {
        return Ok(None);
    };
    let source = r
        .error
        .as_ref()
        .and_then(|e| e.line.map(|l| source_excerpt(settings, &e.file, l, e.col)))
        .unwrap_or_default();
    let mails: Vec<Value> = r
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Email(e) => Some(e),
            _ => None,
        })
        .map(|e| {
            let stored = OutboxView(&h).get(&e.id).ok().flatten();
            json!({
                "id": e.id,
                "from": e.from,
                "to": e.to.join(", "),
                "cc": e.cc.join(", "),
                "bcc": e.bcc.join(", "),
                "reply_to": e.reply_to,
                "subject": e.subject,
                "body": e.body,
                "html": e.html,
                "status": stored.as_ref().map(|m| m.status.as_str()).unwrap_or("not queued"),
                "attempts": stored.as_ref().map(|m| m.attempts).unwrap_or(0),
                "last_error": stored.as_ref().and_then(|m| m.last_error.clone()),
            })
        })
        .collect();
    // The other actions (Okta changes, HTTP requests) with their state in the queue.
    let others: Vec<Value> = r
        .actions
        .iter()
        .filter(|a| !matches!(a, Action::Email(_)))
        .map(|a| {
            let stored = ActionsView(&h).get(a.id()).ok().flatten();
            json!({
                "id": a.id(),
                "kind": a.kind().as_str(),
                "what": a.describe(),
                "status": stored.as_ref().map(|q| q.status.as_str()).unwrap_or("not queued"),
                "attempts": stored.as_ref().map(|q| q.attempts).unwrap_or(0),
                "last_error": stored.as_ref().and_then(|q| q.last_error.clone()),
                "answer": stored.as_ref().and_then(|q| q.answer.clone()),
            })
        })
        .collect();
    let log: Vec<Value> = r
        .log
        .iter()
        .map(|l| json!({ "level": format!("{:?}", l.level).to_lowercase(), "message": l.message }))
        .collect();
    Ok(Some(json!({
        "actions": others,
        "run": run_row(&r),
        "duration_ms": r.duration_ms,
        "hash": r.script_hash,
        "finished": r.finished,
        "error": r.error,
        "source": source,
        "log": log,
        "mails": mails,
    })))
}

/// The replay confirmation: what would run again (the runs that failed, or the event's runs).
pub fn replay_preview(store: &Store, q: &HashMap<String, String>) -> Read<Value> {
    let h = store.history();
    let script = nonempty(q, "script");
    let uuid = nonempty(q, "uuid");
    let rows = match &uuid {
        Some(u) => {
            let Some(detail) = h.event_detail(u).map_err(err)? else {
                return Ok(None);
            };
            RunsView(&h).of_event_at(detail.seq, u).map_err(err)?
        }
        None => RunsView(&h).latest_failed().map_err(err)?,
    };
    let mut latest: BTreeMap<(String, String), &RunRecord> = BTreeMap::new();
    for r in &rows {
        if script.as_deref().is_none_or(|s| s == r.script) {
            let key = (r.event_uuid.clone(), r.script.clone());
            if latest.get(&key).is_none_or(|old| old.id < r.id) {
                latest.insert(key, r);
            }
        }
    }
    let rows: Vec<Value> = latest.values().map(|r| run_row(r)).collect();
    Ok(Some(json!({
        "uuid": uuid,
        "script": script.unwrap_or_default(),
        "rows": rows,
    })))
}

/// The actions page: the newest actions, by `kind` and `status` when given.
pub fn actions(store: &Store, q: &HashMap<String, String>) -> Read<Value> {
    let kind = q
        .get("kind")
        .filter(|k| !k.is_empty())
        .and_then(|k| ActionKind::parse(k));
    let status = q
        .get("status")
        .filter(|s| !s.is_empty())
        .and_then(|s| ActionStatus::ALL.into_iter().find(|x| x.as_str() == s));
    let h = store.history();
    let filter = Filter {
        kind,
        failed_only: status == Some(ActionStatus::Failed),
    };
    // A status other than failed is filtered here, within a bounded look back.
    let rows: Vec<Value> = ActionsView(&h)
        .recent(ACTIONS_PER_PAGE * 5, filter)
        .map_err(err)?
        .into_iter()
        .filter(|a| status.is_none_or(|s| a.status == s))
        .take(ACTIONS_PER_PAGE)
        .map(|a| {
            json!({
                "id": a.id,
                "kind": a.kind.as_str(),
                "what": a.describe(),
                "status": a.status.as_str(),
                "pending": a.status.is_pending(),
                "attempts": a.attempts,
                "next_attempt": a.next_attempt_ms.map(crate::util::format_ms),
                "last_error": a.last_error,
                "answer": a.answer,
                "run_id": a.run_id,
                "script": a.script,
            })
        })
        .collect();
    let done_msg = match q.get("done").map(String::as_str) {
        Some("retry") => Some("Queued to be carried out at the executor's next turn."),
        Some("cancel") => Some("Cancelled: it will not be carried out."),
        _ => None,
    };
    Ok(Some(json!({
        "rows": rows,
        "kind": kind.map(|k| k.as_str()),
        "status": status.map(|s| s.as_str()),
        "kinds": ActionKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        "statuses": ActionStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "done_msg": done_msg,
    })))
}

/// The scripts' stored state (`engine state [SCRIPT]`): one page of live keys, by script then
/// key, each value as pretty JSON; `script` narrows it, `after_script`/`after_key` continue.
pub fn state(store: &Store, q: &HashMap<String, String>) -> Read<Value> {
    let h = store.history();
    let script = nonempty(q, "script");
    let after = match (q.get("after_script"), q.get("after_key")) {
        (Some(s), Some(k)) => Some((s.as_str(), k.as_str())),
        _ => None,
    };
    let (rows, next) = crate::store::kv::page(
        &h,
        script.as_deref(),
        after,
        STATE_PER_PAGE,
        crate::util::now_ms(),
    )
    .map_err(err)?;
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "script": r.script,
                "key": r.key,
                "value": serde_json::to_string_pretty(&r.value).unwrap_or_default(),
                "expires": r.expires,
            })
        })
        .collect();
    let next = next.map(|(s, k)| {
        let mut href = format!(
            "/state?after_script={}&after_key={}",
            percent_encode(&s),
            percent_encode(&k)
        );
        if let Some(only) = &script {
            href.push_str(&format!("&script={}", percent_encode(only)));
        }
        href
    });
    Ok(Some(json!({
        "rows": rows,
        "script": script.unwrap_or_default(),
        "next": next,
        "first_page": after.is_none(),
    })))
}

/// The pending timers (`engine timers`): one page, earliest due first; `after` (`DUE-SEQ`)
/// continues.
pub fn timers(store: &Store, q: &HashMap<String, String>) -> Read<Value> {
    let h = store.history();
    let after = nonempty(q, "after").and_then(|a| {
        let (due, seq) = a.split_once('-')?;
        Some((due.parse().ok()?, seq.parse().ok()?))
    });
    let (rows, next) = crate::store::timers::page(&h, after, TIMERS_PER_PAGE).map_err(err)?;
    let rows: Vec<Value> = rows
        .iter()
        .map(|t| {
            json!({
                "due": t.due,
                "script": t.script,
                "call": t.spec.call,
                "args": if t.spec.args.is_null() {
                    String::new()
                } else {
                    serde_json::to_string_pretty(&t.spec.args).unwrap_or_default()
                },
                "key": t.spec.key,
                "id": t.spec.id,
                "scheduled_by": t.scheduled_by,
                "event_uuid": t.event_uuid,
                "event_type": t.event_type,
                "event_href": format!("/events/{}", percent_encode(&t.event_uuid)),
                "created": t.created,
            })
        })
        .collect();
    Ok(Some(json!({
        "rows": rows,
        "next": next.map(|(due, seq)| format!("/timers?after={due}-{seq}")),
        "first_page": after.is_none(),
    })))
}
