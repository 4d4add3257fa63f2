//! The console's authoring pages: the scripts (what `engine scripts` shows, with each script's
//! `on:` and `hook:` and its last error's source line), a script's dry run on the samples (what
//! `engine check SCRIPT` prints), and the samples' tokens as a tree per event type and target
//! type (what `engine tokens` prints). Each function runs on a blocking thread.

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use super::ConsoleSettings;
use super::views::{Read, err, excerpt, nonempty};
use crate::authoring::check::{Summary, render_report};
use crate::authoring::samples::{Sample, dedupe, of_stored};
use crate::authoring::tokens::{Section, Token, TokenGroup, tokens_for};
use crate::script::{Host, Limits, LiveScripts, NoDirectory, Senders, parse_header};
use crate::store::Store;
use crate::store::script_state::{ScriptState, ScriptStatus};

/// Characters of a script's hash shown in the list (the whole hash is in its title).
pub const HASH_CHARS: usize = 12;

/// What the scripts page's dry runs and the tokens page know of the config: what `engine check`
/// and `engine tokens` read from it.
#[derive(Clone)]
pub struct Authoring {
    /// Where samples added by hand are (`data_dir/samples/`); `None`: captured samples only.
    pub data_dir: Option<PathBuf>,
    pub limits: Limits,
    /// The From addresses dry runs' mails may name.
    pub senders: Senders,
    /// `lookup_user` in dry runs: a host that sends nothing (`app::directory_host`).
    pub host: Arc<dyn Host>,
    /// The configured hook ids (`hook:` is checked against them when given).
    pub hooks: Option<Vec<String>>,
    /// The hooks of kind `generic`.
    pub generic_hooks: Vec<String>,
    /// Whether engine.toml has `[okta]`, when known.
    pub okta: Option<bool>,
    /// The live script set: each script's `on:` and `hook:` as loaded.
    pub live: Option<LiveScripts>,
}

impl Authoring {
    /// What `engine check` knows without a config: nobody in the directory, the default limits
    /// and From, no hook list, and no live set (headers are read from the files).
    pub fn offline() -> Authoring {
        Authoring {
            data_dir: None,
            limits: Limits::default(),
            senders: Senders::default(),
            host: Arc::new(NoDirectory),
            hooks: None,
            generic_hooks: Vec::new(),
            okta: None,
            live: None,
        }
    }
}

impl fmt::Debug for Authoring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authoring")
            .field("data_dir", &self.data_dir)
            .field("hooks", &self.hooks)
            .field("generic_hooks", &self.generic_hooks)
            .field("okta", &self.okta)
            .finish_non_exhaustive()
    }
}

/// Whether `path` is inside `dir` without `..` (a file the console may read).
fn inside(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir) && !path.components().any(|c| c == Component::ParentDir)
}

/// `file:line:col: message` (the first line of a load error) → file, line, col.
fn error_position(text: &str) -> Option<(String, usize, Option<usize>)> {
    let (pos, _) = text.lines().next()?.split_once(": ")?;
    let mut parts = pos.rsplitn(3, ':');
    let last = parts.next()?.parse::<usize>().ok()?;
    let rest = parts.next()?;
    match rest.parse::<usize>() {
        Ok(line) => Some((parts.next()?.to_string(), line, Some(last))),
        Err(_) => {
            let file = match parts.next() {
                Some(head) => format!("{head}:{rest}"),
                None => rest.to_string(),
            };
            Some((file, last, None))
        }
    }
}

/// The `on:` patterns and `hook:` ids of a script: the live version's, else its file's header.
fn subscriptions(
    s: &ScriptState,
    settings: &ConsoleSettings,
    authoring: &Authoring,
) -> (Vec<String>, Option<Vec<String>>, &'static str) {
    if let Some(live) = &authoring.live
        && let Some(script) = live.load().get(&s.script)
    {
        return (script.on.clone(), script.hooks.clone(), "live version");
    }
    let path = Path::new(&s.file);
    if inside(path, &settings.scripts_dir)
        && let Ok(text) = std::fs::read_to_string(path)
        && let Ok(h) = parse_header(&text)
    {
        return (h.patterns(), h.hook_ids(), "file on disk");
    }
    (Vec::new(), None, "unknown")
}

/// Every script's state as the server recorded it at its latest reload (compiled from disk
/// now when none is recorded yet), with its subscriptions and its error's source line.
pub fn scripts(store: &Store, settings: &ConsoleSettings, authoring: &Authoring) -> Read<Value> {
    let recorded = {
        let h = store.history();
        let txn = h.read().map_err(err)?;
        crate::store::script_state::recorded(&txn).map_err(err)?
    };
    let states = match recorded {
        Some(s) => s,
        None => crate::reload::inspect(&crate::reload::Settings {
            scripts_dir: settings.scripts_dir.clone(),
            stdlib_dir: settings.stdlib_dir.clone(),
            limits: authoring.limits.clone(),
        })
        .map_err(|e| e.to_string())?,
    };
    let rows: Vec<Value> = states
        .iter()
        .map(|s| {
            let (on, hooks, header_from) = subscriptions(s, settings, authoring);
            let source = s
                .last_error
                .as_deref()
                .and_then(error_position)
                .filter(|(file, _, _)| {
                    let p = Path::new(file);
                    inside(p, &settings.scripts_dir) || inside(p, &settings.stdlib_dir)
                })
                .map(|(file, line, col)| excerpt(Path::new(&file), line, col))
                .unwrap_or_default();
            json!({
                "name": s.script,
                "file": s.file,
                "status": s.status.as_str(),
                "ok": s.status == ScriptStatus::Ok,
                "loaded": s.status != ScriptStatus::NotLoaded,
                "hash": s.hash,
                "hash_short": s.hash.as_deref().map(|h| h.chars().take(HASH_CHARS).collect::<String>()),
                "loaded_at": s.loaded_at,
                "last_error": s.last_error,
                "error_at": s.error_at,
                "checked_at": s.checked_at,
                "source": source,
                "on": on,
                "hooks": hooks,
                "header_from": header_from,
                "runs_href": format!("/runs?script={}", super::percent_encode(&s.script)),
            })
        })
        .collect();
    Ok(Some(json!({
        "rows": rows,
        "failing": states.iter().filter(|s| s.last_error.is_some()).count(),
    })))
}

/// The samples `engine check` and `engine tokens` read: the captured ones and those added by
/// hand, each event once.
fn samples(store: &Store, authoring: &Authoring) -> Result<Vec<Sample>, String> {
    let mut stored = crate::store::samples::captured(&store.history()).map_err(err)?;
    if let Some(dir) = &authoring.data_dir {
        stored.extend(crate::authoring::samples::added(dir));
    }
    Ok(dedupe(of_stored(stored)))
}

/// The one call of the check in the console: `engine check FILE`'s report as text (scrubbed of
/// secrets), and its counts (`None` when nothing could be checked).
fn check_report(
    file: &Path,
    settings: &ConsoleSettings,
    authoring: &Authoring,
    samples: &[Sample],
) -> (String, Option<Summary>) {
    let checked = crate::authoring::check::check(
        &[file.to_path_buf()],
        &settings.scripts_dir,
        &settings.stdlib_dir,
        samples,
        &authoring.limits,
        &authoring.senders,
        &authoring.host,
        authoring.hooks.as_deref(),
        &authoring.generic_hooks,
        authoring.okta,
        crate::authoring::now::DryNow::EventTime,
    );
    let (text, summary) = match checked {
        Ok(mut report) => {
            report.finish(false);
            let mut out = Vec::new();
            let text = match render_report(&report, false, &mut out) {
                Ok(()) => String::from_utf8_lossy(&out).into_owned(),
                Err(e) => format!("error: the report could not be written: {e}\n"),
            };
            (text, Some(report.summary))
        }
        Err(message) => (format!("error: {message}\n"), None),
    };
    (crate::util::redact::scrub(&text).into_owned(), summary)
}

/// A script's dry run on the samples: what `engine check SCRIPT` shows. `None` when no file in
/// the scripts directory is that script.
pub fn check(
    store: &Store,
    settings: &ConsoleSettings,
    authoring: &Authoring,
    script: &str,
) -> Read<Value> {
    let files = crate::script::visible_files(&settings.scripts_dir, "rhai").map_err(|e| {
        format!(
            "cannot read the scripts directory {}: {e}",
            settings.scripts_dir.display()
        )
    })?;
    let Some(file) = files
        .into_iter()
        .find(|f| f.file_stem().is_some_and(|s| s == script))
    else {
        return Ok(None);
    };
    let samples = samples(store, authoring)?;
    let (report, summary) = check_report(&file, settings, authoring, &samples);
    Ok(Some(json!({
        "script": script,
        "file": file.display().to_string(),
        "report": report,
        "summary": summary,
        "passed": summary.is_some_and(|s| s.exit_code == 0),
        "samples": samples.len(),
    })))
}

/// One node of a token tree: the expression to copy, its type and example, what is below it.
fn node(t: &Token) -> Value {
    let example = match &t.example {
        Some(Value::String(s)) => serde_json::to_string(s).unwrap_or_default(),
        Some(v) => v.to_string(),
        None => String::new(),
    };
    json!({
        "path": t.path,
        "type": t.type_name,
        "example": example,
        "note": t.note,
        "documented": t.documented,
        "children": [],
    })
}

/// Tokens in pre-order (each after its parent, one less deep) as nested nodes.
fn nest(tokens: &[&Token]) -> Vec<Value> {
    let mut roots = Vec::new();
    let mut stack: Vec<(usize, Value)> = Vec::new();
    fn attach(stack: &mut Vec<(usize, Value)>, roots: &mut Vec<Value>) {
        if let Some((_, done)) = stack.pop() {
            match stack.last_mut() {
                Some((_, parent)) => {
                    if let Some(c) = parent["children"].as_array_mut() {
                        c.push(done);
                    }
                }
                None => roots.push(done),
            }
        }
    }
    for t in tokens {
        while stack.last().is_some_and(|(d, _)| *d >= t.depth()) {
            attach(&mut stack, &mut roots);
        }
        stack.push((t.depth(), node(t)));
    }
    while !stack.is_empty() {
        attach(&mut stack, &mut roots);
    }
    roots
}

/// One event type's tokens as trees: the event's fields, each target type, `delivery` and the
/// `lookup_user` map.
fn group_view(g: &TokenGroup) -> Value {
    let of = |want: Section, target: Option<&str>| -> Vec<&Token> {
        g.tokens
            .iter()
            .filter(|t| t.section == want && t.target_type.as_deref() == target)
            .collect()
    };
    let mut target_types: Vec<&str> = g
        .tokens
        .iter()
        .filter(|t| t.section == Section::Target)
        .filter_map(|t| t.target_type.as_deref())
        .collect();
    target_types.dedup();
    let mut sections = vec![json!({
        "title": "event",
        "hint": "the event's fields",
        "nodes": nest(&of(Section::Event, None)),
    })];
    for ty in target_types {
        sections.push(json!({
            "title": format!("target {ty}"),
            "hint": format!("the first target of type {ty}"),
            "nodes": nest(&of(Section::Target, Some(ty))),
        }));
    }
    sections.push(json!({
        "title": "delivery",
        "hint": "the delivery the event came in",
        "nodes": nest(&of(Section::Delivery, None)),
    }));
    sections.push(json!({
        "title": "lookup_user",
        "hint": "the map lookup_user returns",
        "nodes": nest(&of(Section::LookupUser, None)),
    }));
    let name = match (g.event_type.is_empty(), g.samples.is_empty()) {
        (false, _) => g.event_type.clone(),
        (true, true) => "(any event type)".to_string(),
        (true, false) => "(no eventType)".to_string(),
    };
    json!({
        "event_type": name,
        "samples": g.samples,
        "note": g.note,
        "sections": sections,
    })
}

/// The samples' tokens per event type (of the types matching `type`, if given); Okta's
/// documented fields when there is no sample.
pub fn tokens(store: &Store, authoring: &Authoring, q: &HashMap<String, String>) -> Read<Value> {
    let samples = samples(store, authoring)?;
    let wanted = nonempty(q, "type");
    let mut types: Vec<String> = samples.iter().map(|s| s.event_type.clone()).collect();
    types.sort();
    types.dedup();
    let groups: Vec<Value> = tokens_for(&samples, wanted.as_deref())
        .iter()
        .map(group_view)
        .collect();
    Ok(Some(json!({
        "groups": groups,
        "types": types,
        "type": wanted.unwrap_or_default(),
        "samples": samples.len(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_positions_are_read_from_the_error_text() {
        assert_eq!(
            error_position("scripts/a.rhai:3:9: bad thing\n  hint: x"),
            Some(("scripts/a.rhai".into(), 3, Some(9)))
        );
        assert_eq!(
            error_position("/x/a.rhai:12: bad: worse"),
            Some(("/x/a.rhai".into(), 12, None))
        );
        assert_eq!(error_position("/x/a.rhai: no position"), None);
        assert_eq!(error_position("nothing"), None);
    }

    #[test]
    fn pre_order_tokens_nest_by_depth() {
        let samples = vec![Sample::new(
            "h",
            br#"{"uuid":"u1","eventType":"user.lifecycle.create","actor":{"id":"00u1","detail":{"a":1}},"target":[{"type":"User","id":"00u2"}]}"#.to_vec(),
            "test",
        )];
        let groups = tokens_for(&samples, None);
        let view = group_view(&groups[0]);
        let event = &view["sections"][0]["nodes"];
        let actor = event
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["path"] == "event.actor")
            .expect("event.actor is a root");
        let detail = actor["children"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["path"] == "event.actor.detail")
            .expect("under event.actor");
        assert_eq!(detail["children"][0]["path"], "event.actor.detail.a");
        let user = &view["sections"][1];
        assert_eq!(user["title"], "target User");
        assert_eq!(
            user["nodes"][0]["path"], "okta::target(event, \"User\")",
            "{user}"
        );
        assert!(
            user["nodes"][0]["children"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["path"] == "okta::target(event, \"User\").id")
        );
    }
}
