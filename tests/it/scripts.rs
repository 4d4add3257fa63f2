//! Golden tests of the script layer: each `tests/scripts/<case>.rhai` is a script plus, in its
//! `// key: value` comment lines, the input event, the directory users and the expected outcome.
//!
//! Keys (all optional except an `expect…`):
//! - `input: fixtures/x.json` (relative to `tests/`; an envelope or one LogEvent) or
//!   `input-json: {…}` (one line); default: a minimal `user.lifecycle.create` event.
//! - `patch: {…}`: top-level fields replaced in every input event (`null` included).
//! - `script: scripts/x.rhai`: run that file (relative to the repo) instead of the case itself.
//! - `delivery-hook: id` (default `default`); `limits: {…}` merged into `Limits::default()`.
//! - `smtp-from: addr` (the configured From; default `engine@localhost`) and `allowed-from:
//!   addr` (repeatable): the run's `Senders`.
//! - `user: {…}` (repeatable) directory entries; `transient: key` / `permanent: key` /
//!   `panic: key`: `lookup_user(key)` fails that way.
//! - `expect: ok`, `expect-error: <Script|Limit|Transient> <line:col|-|*> <message substring>`
//!   (`-`: no position, `*`: any),
//!   `expect-error-file: stdlib/okta.rhai`, `expect-hint: <substring of the error's hint>` (or
//!   `expect-hint: none`), or `expect-load-error: <line:col|-> <substring>`.
//! - `expect-log: <level>: <message>` (repeatable, exact and complete; `expect-log: none`).
//! - `expect-email: to=a@x.com,b@y.com; cc=…; from=…; subject~text; body~text` (repeatable, one per
//!   mail, complete; `=` exact, `~` substring); `expect-emails: 0` for none.
//! - `expect-body: <one line of the body>` (repeatable): the whole body of the case's one mail,
//!   exact, one directive per line, kept as written after `expect-body: ` (spaces included); a
//!   last `// expect-body:` with nothing after it stands for a body ending in a line break.
//!
//! The cases live in the main repository: `$ENGINE_REPO/tests/scripts`, where `ENGINE_REPO`
//! defaults to this crate's directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::ingest::envelope::{event_id, parse_payload};
use engine::script::{
    Action, DeliveryInfo, Host, HostError, Limits, RunOutcome, ScriptSet, Senders, StaticDirectory,
    User, build_event_map, run, run_map,
};

/// A payload's events as the server reads them: (delivery, event id, event JSON) each.
fn split_payload(
    payload: &[u8],
    hook: &str,
) -> Result<Vec<(DeliveryInfo, String, Vec<u8>)>, String> {
    let p = parse_payload(payload).map_err(|e| e.to_string())?;
    let delivery = DeliveryInfo {
        id: p.delivery.delivery_id.clone().unwrap_or_default(),
        time: p.delivery.event_time.clone(),
        hook: hook.to_string(),
        source: p.delivery.source.clone(),
    };
    Ok(p.events()
        .map(|(e, json)| (delivery.clone(), e.uuid.clone(), json.to_vec()))
        .collect())
}

fn repo() -> PathBuf {
    std::env::var_os("ENGINE_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// A directory whose lookups can be made to fail.
struct TestHost {
    dir: StaticDirectory,
    transient: Vec<String>,
    permanent: Vec<String>,
    panic: Vec<String>,
}

impl Host for TestHost {
    fn lookup_user(
        &self,
        key: &str,
        deadline: Option<std::time::Instant>,
    ) -> Result<Option<User>, HostError> {
        if self.transient.iter().any(|k| k == key) {
            return Err(HostError::transient("Okta API answered 503"));
        }
        if self.permanent.iter().any(|k| k == key) {
            return Err(HostError::Permanent("Okta API answered 403".into()));
        }
        if self.panic.iter().any(|k| k == key) {
            panic!("test host panics on {key}");
        }
        self.dir.lookup_user(key, deadline)
    }
}

const DEFAULT_EVENT: &str = r#"{"uuid":"00000000-0000-0000-0000-000000000001","eventType":"user.lifecycle.create","published":"2024-01-01T00:00:00.000Z","target":[{"id":"00u1","type":"User","alternateId":"new.hire@example.com","displayName":"New Hire"}]}"#;

/// The `// key: value` lines of a case.
fn directives(source: &str) -> Vec<(String, String)> {
    source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("// "))
        .filter_map(|l| {
            l.split_once(": ")
                .or_else(|| l.strip_suffix(':').map(|k| (k, "")))
        })
        .filter(|(k, _)| !k.contains(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The whole mail body the `// expect-body:` lines spell, if there are any: each line's text after
/// `expect-body: ` as written (not trimmed), joined with line breaks.
fn expected_body(source: &str) -> Option<String> {
    let lines: Vec<&str> = source
        .lines()
        .filter_map(|l| l.strip_prefix("// expect-body:"))
        .map(|rest| rest.strip_prefix(' ').unwrap_or(rest))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// `line:col` or `-`.
fn position(s: &str) -> Option<(usize, usize)> {
    let (l, c) = s.split_once(':')?;
    Some((l.parse().ok()?, c.parse().ok()?))
}

fn check_email(spec: &str, action: &Action) -> Result<(), String> {
    let Action::Email(mail) = action else {
        panic!("not a mail: {action:?}")
    };
    for part in spec.split("; ").filter(|p| !p.is_empty()) {
        let (key, exact, want) = match (part.split_once('='), part.split_once('~')) {
            (Some((k, v)), None) => (k, true, v),
            (None, Some((k, v))) => (k, false, v),
            (Some((k1, v1)), Some((k2, v2))) => {
                if k1.len() < k2.len() {
                    (k1, true, v1)
                } else {
                    (k2, false, v2)
                }
            }
            _ => return Err(format!("bad expect-email part {part:?}")),
        };
        let got = match key.trim() {
            "to" => mail.to.join(","),
            "cc" => mail.cc.join(","),
            "bcc" => mail.bcc.join(","),
            "reply_to" => mail.reply_to.clone().unwrap_or_default(),
            "from" => mail.from.clone().unwrap_or_default(),
            "subject" => mail.subject.clone(),
            "body" => mail.body.clone(),
            "html" => mail.html.clone().unwrap_or_default(),
            other => return Err(format!("unknown expect-email key {other:?}")),
        };
        let ok = if exact {
            got == want
        } else {
            got.contains(want)
        };
        if !ok {
            return Err(format!(
                "email {key}: expected {}{want:?}, got {got:?}",
                if exact { "" } else { "to contain " }
            ));
        }
    }
    Ok(())
}

/// Runs one case; `Err` describes every mismatch.
fn run_case(case: &Path) -> Result<(), String> {
    let source = std::fs::read_to_string(case).map_err(|e| e.to_string())?;
    let d = directives(&source);
    let get = |k: &'static str| {
        d.iter()
            .filter(move |(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let tests_dir = repo().join("tests");

    let mut limits = Limits::default();
    if let Some(l) = get("limits").next() {
        let mut base = serde_json::to_value(&limits).map_err(|e| e.to_string())?;
        let patch: serde_json::Value =
            serde_json::from_str(l).map_err(|e| format!("limits: {e}"))?;
        if let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) {
            b.extend(p.clone());
        }
        limits = serde_json::from_value(base).map_err(|e| format!("limits: {e}"))?;
    }
    let script_path = match get("script").next() {
        Some(p) => repo().join(p),
        None => case.to_path_buf(),
    };
    let stdlib = repo().join("stdlib");
    let script = match ScriptSet::load_one(&script_path, &stdlib, &limits) {
        Ok(s) => s,
        Err(e) => {
            let Some(want) = get("expect-load-error").next() else {
                return Err(format!("load failed: {e}"));
            };
            let (pos, text) = want.split_once(' ').unwrap_or((want, ""));
            let got_pos = e.line.zip(e.col);
            if position(pos) != got_pos {
                return Err(format!("load error at {got_pos:?}, expected {pos}: {e}"));
            }
            if !e.to_string().contains(text) {
                return Err(format!("load error {e:?} does not contain {text:?}"));
            }
            if e.hint.is_none() && e.line == Some(1) {
                return Err(format!("header error without a hint: {e}"));
            }
            return Ok(());
        }
    };
    if get("expect-load-error").next().is_some() {
        return Err("expected a load error, but the script loaded".into());
    }

    let hook = get("delivery-hook").next().unwrap_or("default");
    let payload = match (get("input").next(), get("input-json").next()) {
        (Some(f), _) => std::fs::read(tests_dir.join(f)).map_err(|e| format!("input {f}: {e}"))?,
        (None, Some(j)) => j.as_bytes().to_vec(),
        (None, None) => DEFAULT_EVENT.as_bytes().to_vec(),
    };
    let mut events = split_payload(&payload, hook)?;
    for patch in get("patch") {
        let patch: serde_json::Value =
            serde_json::from_str(patch).map_err(|e| format!("patch: {e}"))?;
        for (_, _, bytes) in events.iter_mut() {
            let mut ev: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            if let (Some(o), Some(p)) = (ev.as_object_mut(), patch.as_object()) {
                o.extend(p.clone());
            }
            *bytes = serde_json::to_vec(&ev).map_err(|e| e.to_string())?;
        }
    }
    let users: Vec<User> = get("user")
        .map(|u| serde_json::from_str(u).map_err(|e| format!("user: {e}")))
        .collect::<Result<_, _>>()?;
    let host: Arc<dyn Host> = Arc::new(TestHost {
        dir: StaticDirectory::new(users),
        transient: get("transient").map(String::from).collect(),
        permanent: get("permanent").map(String::from).collect(),
        panic: get("panic").map(String::from).collect(),
    });

    let mut all = RunOutcome {
        log: Vec::new(),
        actions: Vec::new(),
        effects: Default::default(),
        result: Ok(()),
    };
    let mut senders = Senders::default();
    if let Some(from) = get("smtp-from").next() {
        senders.default = from.to_string();
    }
    senders.allowed = get("allowed-from").map(String::from).collect();
    for (delivery, id, event) in &events {
        let out = run(&script, event, id, delivery, &host, &limits, &senders);
        all.log.extend(out.log);
        all.actions.extend(out.actions);
        if all.result.is_ok() {
            all.result = out.result;
        }
    }

    let mut problems = Vec::new();
    match (
        get("expect").next(),
        get("expect-error").next(),
        &all.result,
    ) {
        (Some("ok"), None, Ok(())) => {}
        (Some("ok"), None, Err(e)) => problems.push(format!("expected ok, got error: {e}")),
        (None, Some(want), result) => {
            let mut parts = want.splitn(3, ' ');
            let (kind, pos, text) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            match result {
                Ok(()) => problems.push(format!("expected {want}, but the run succeeded")),
                Err(e) => {
                    if format!("{:?}", e.kind) != kind {
                        problems.push(format!("expected kind {kind}, got {:?}: {e}", e.kind));
                    }
                    if pos != "*" && position(pos) != e.line.zip(e.col) {
                        problems.push(format!(
                            "expected position {pos}, got {:?}:{:?}: {e}",
                            e.line, e.col
                        ));
                    }
                    if !e.message.contains(text) {
                        problems.push(format!("message {:?} does not contain {text:?}", e.message));
                    }
                    if let Some(file) = get("expect-error-file").next()
                        && e.file != file
                    {
                        problems.push(format!("expected the error in {file}, got {}", e.file));
                    }
                    match (get("expect-hint").next(), &e.hint) {
                        (None, _) | (Some("none"), None) => {}
                        (Some("none"), Some(h)) => {
                            problems.push(format!("expected no hint, got {h:?}"))
                        }
                        (Some(want), Some(h)) if h.contains(want) => {}
                        (Some(want), got) => {
                            problems.push(format!("hint {got:?} does not contain {want:?}"))
                        }
                    }
                }
            }
        }
        _ => problems.push("a case needs exactly one of `expect: ok`, `expect-error:`".into()),
    }

    let want_log: Vec<&str> = get("expect-log").collect();
    if !want_log.is_empty() {
        let got: Vec<String> = all
            .log
            .iter()
            .map(|l| format!("{}: {}", l.level, l.message))
            .collect();
        let want: Vec<&str> = want_log.into_iter().filter(|l| *l != "none").collect();
        if got != want {
            problems.push(format!(
                "log mismatch\n  expected: {want:#?}\n  got: {got:#?}"
            ));
        }
    }
    let want_mail: Vec<&str> = get("expect-email").collect();
    let want_count = get("expect-emails")
        .next()
        .and_then(|n| n.parse::<usize>().ok());
    if !want_mail.is_empty() || want_count.is_some() {
        let n = want_count.unwrap_or(want_mail.len());
        if all.actions.len() != n {
            problems.push(format!(
                "expected {n} emails, got {}: {:#?}",
                all.actions.len(),
                all.actions
            ));
        }
        for (spec, action) in want_mail.iter().zip(&all.actions) {
            if let Err(p) = check_email(spec, action) {
                problems.push(p);
            }
        }
    }
    if let Some(want) = expected_body(&source) {
        match all.actions.as_slice() {
            [Action::Email(mail)] if mail.body == want => {}
            [Action::Email(mail)] => problems.push(format!(
                "body mismatch\n  expected: {want:?}\n  got:      {:?}",
                mail.body
            )),
            other => problems.push(format!(
                "expect-body needs exactly one mail, got {}",
                other.len()
            )),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

#[test]
fn golden_cases() {
    let dir = repo().join("tests/scripts");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .collect();
    cases.sort();
    crate::support::run_golden_cases("golden", &cases, run_case, "");
}

/// One bad script does not stop the others from loading, and a failing run does not affect a
/// good one on the same event; runs on several threads share one set.
#[test]
fn scripts_fail_independently() {
    let tmp =
        std::env::temp_dir().join(format!("engine-script-independent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let on = "//! on: user.lifecycle.deactivate\n";
    std::fs::write(tmp.join("a-broken.rhai"), "let x = 1;\n").expect("write");
    std::fs::write(
        tmp.join("b-throws.rhai"),
        format!("{on}log(\"before\");\nlet a = event.actr;\n"),
    )
    .expect("write");
    std::fs::write(
        tmp.join("c-good.rhai"),
        format!("{on}import \"okta\" as okta;\nsend_email(#{{ to: \"it@example.com\", subject: `Gone: ${{okta::target_user(event).alternateId}}`, body: \"x\" }});\n"),
    )
    .expect("write");
    std::fs::write(
        tmp.join("d-other.rhai"),
        "//! on: user.session.*\nlog(\"no\");\n",
    )
    .expect("write");

    let limits = Limits::default();
    let (set, errors) = ScriptSet::load(&tmp, &repo().join("stdlib"), &limits);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].script.ends_with("a-broken.rhai"), "{}", errors[0]);
    assert_eq!(set.scripts().len(), 3);

    let payload = std::fs::read(repo().join("tests/fixtures/event.user.lifecycle.deactivate.json"))
        .expect("fixture");
    let event = build_event_map(&payload).expect("event");
    let id = event_id(&payload);
    let delivery = DeliveryInfo {
        id: "d1".into(),
        time: "t".into(),
        hook: "default".into(),
        source: "s".into(),
    };
    let host: Arc<dyn Host> = Arc::new(StaticDirectory::default());
    let matching = set.matching("default", "user.lifecycle.deactivate");
    let names: Vec<&str> = matching.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["b-throws", "c-good"]);

    let senders = Senders::default();
    let bad = run_map(
        &matching[0],
        event.clone(),
        &id,
        &delivery,
        &host,
        &limits,
        &senders,
    );
    let good = run_map(
        &matching[1],
        event.clone(),
        &id,
        &delivery,
        &host,
        &limits,
        &senders,
    );
    let err = bad.result.expect_err("b-throws must fail");
    assert_eq!((err.line, err.col), (Some(3), Some(15)), "{err}");
    assert_eq!(bad.log.len(), 1);
    assert!(good.result.is_ok(), "{:?}", good.result);
    assert_eq!(good.actions.len(), 1);
    let Action::Email(mail) = &good.actions[0] else {
        panic!("not a mail")
    };
    assert_eq!(mail.subject, "Gone: john.doe@example.com");

    // The same set on four threads at once gives the same mail ids.
    let set = Arc::new(set);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (set, payload, host, delivery, limits, id) = (
                set.clone(),
                payload.clone(),
                host.clone(),
                delivery.clone(),
                limits.clone(),
                id.clone(),
            );
            std::thread::spawn(move || {
                let script = set.get("c-good").expect("c-good").clone();
                (0..50)
                    .map(|_| {
                        let senders = Senders::default();
                        run(&script, &payload, &id, &delivery, &host, &limits, &senders)
                    })
                    .map(|o| match &o.actions[..] {
                        [Action::Email(m)] => m.id.clone(),
                        _ => String::new(),
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        let ids = t.join().expect("thread");
        assert!(ids.iter().all(|i| i == &mail.id), "{ids:?} vs {}", mail.id);
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A temp dir with `scripts/s.rhai` importing `first` and the given stdlib modules.
fn import_setup(first: &str, modules: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = crate::support::temp_dir();
    let (scripts, stdlib) = (dir.path().join("scripts"), dir.path().join("stdlib"));
    std::fs::create_dir_all(&scripts).expect("scripts dir");
    std::fs::create_dir_all(&stdlib).expect("stdlib dir");
    std::fs::write(
        scripts.join("s.rhai"),
        format!("//! on: user.lifecycle.create\nimport \"{first}\" as m;\nlog(\"s\");\n"),
    )
    .expect("write");
    for (name, text) in modules {
        std::fs::write(stdlib.join(format!("{name}.rhai")), text).expect("write");
    }
    dir
}

/// Regression (defect 2 of "Hardening"): a stdlib module importing itself, directly or through
/// another, recursed in the resolver until the stack overflowed and the process aborted. Now
/// each is a load error naming the cycle and the import that closes it, from `load` and
/// `load_one` alike.
#[test]
fn stdlib_import_cycle_is_a_load_error_not_a_stack_overflow() {
    /// The module the script imports, the stdlib, the message, and where the cycle closes.
    struct Case {
        first: &'static str,
        modules: &'static [(&'static str, &'static str)],
        message: &'static str,
        file: &'static str,
        line: usize,
    }
    let cases = [
        Case {
            first: "a",
            modules: &[("a", "import \"a\" as a;\nfn f() { 1 }\n")],
            message: "import cycle: a -> a",
            file: "a.rhai",
            line: 1,
        },
        Case {
            first: "a",
            modules: &[
                ("a", "fn f() { 1 }\nimport \"b\" as b;\n"),
                ("b", "// b\n\nimport \"a\" as a;\nfn g() { 2 }\n"),
            ],
            message: "import cycle: a -> b -> a",
            file: "b.rhai",
            line: 3,
        },
        Case {
            first: "okta",
            modules: &[(
                "okta",
                "import \"okta\" as okta;\nfn target_user(e) { () }\n",
            )],
            message: "import cycle: okta -> okta",
            file: "okta.rhai",
            line: 1,
        },
    ];
    for Case {
        first,
        modules,
        message,
        file,
        line,
    } in cases
    {
        let dir = import_setup(first, modules);
        let (scripts, stdlib) = (dir.path().join("scripts"), dir.path().join("stdlib"));
        let (set, errors) = ScriptSet::load(&scripts, &stdlib, &Limits::default());
        assert!(set.scripts().is_empty(), "{message}: {set:?}");
        let single = ScriptSet::load_one(&scripts.join("s.rhai"), &stdlib, &Limits::default())
            .expect_err(message);
        for e in [&errors[0], &single] {
            assert_eq!(e.kind, engine::script::LoadErrorKind::Import, "{e}");
            assert!(e.message.contains(message), "{message} in {e}");
            assert!(!e.message.contains("Runtime error"), "{e}");
            assert!(e.file.ends_with(file), "{file}: {e}");
            assert_eq!(e.line, Some(line), "{e}");
            assert!(e.script.ends_with("s.rhai"), "{e}");
        }
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}

/// Regression (defect 2 of "Hardening"): a chain of distinct modules nests one compile and one
/// evaluation per level on the loading thread's stack; deeper than `MAX_IMPORT_DEPTH` it is a
/// load error, and as deep as that it loads on a 2 MiB thread (tokio's, where reload loads).
#[test]
fn stdlib_import_chain_deeper_than_the_limit_is_a_load_error_not_a_stack_overflow() {
    let max = engine::script::MAX_IMPORT_DEPTH;
    let chain = |n: usize| -> Vec<(String, String)> {
        (0..n)
            .map(|i| {
                let import = if i + 1 < n {
                    format!("import \"m{}\" as next;\n", i + 1)
                } else {
                    String::new()
                };
                (format!("m{i}"), format!("{import}fn f{i}() {{ {i} }}\n"))
            })
            .collect()
    };
    for (n, loads) in [(max, true), (max + 1, false), (200, false)] {
        let modules = chain(n);
        let refs: Vec<(&str, &str)> = modules
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let dir = import_setup("m0", &refs);
        let (scripts, stdlib) = (dir.path().join("scripts"), dir.path().join("stdlib"));
        let got = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                ScriptSet::load_one(&scripts.join("s.rhai"), &stdlib, &Limits::default())
                    .map(|_| ())
                    .map_err(|e| (e.kind, e.message))
            })
            .expect("thread")
            .join()
            .expect("no panic");
        match (loads, got) {
            (true, Ok(_)) => {}
            (false, Err((kind, message))) => {
                assert_eq!(kind, engine::script::LoadErrorKind::Import, "{message}");
                assert!(
                    message.contains(&format!("more than {max} modules deep")),
                    "{n}: {message}"
                );
                assert!(message.contains("m0 -> m1 -> "), "{message}");
            }
            (_, got) => panic!("a chain of {n} modules: {got:?}"),
        }
    }
}

/// Runs `s.rhai` of an [`import_setup`] dir once on the default event.
fn run_setup_script(script: &engine::script::Script) -> RunOutcome {
    let delivery = DeliveryInfo {
        id: "d1".into(),
        time: "t".into(),
        hook: "default".into(),
        source: "s".into(),
    };
    let host: Arc<dyn Host> = Arc::new(StaticDirectory::default());
    run(
        script,
        DEFAULT_EVENT.as_bytes(),
        "e1",
        &delivery,
        &host,
        &Limits::default(),
        &Senders::default(),
    )
}

/// A loaded script is self-contained: its runs resolve no module again, not even one imported
/// inside a module's function, so they read no stdlib file (here: all deleted after loading).
#[test]
fn a_loaded_script_resolves_no_module_at_run_time() {
    let dir = import_setup(
        "a",
        &[
            (
                "a",
                "import \"b\" as b;\nfn f() { import \"c\" as c; b::g() + c::h() }\n",
            ),
            ("b", "fn g() { 2 }\n"),
            ("c", "fn h() { 3 }\n"),
        ],
    );
    let (scripts, stdlib) = (dir.path().join("scripts"), dir.path().join("stdlib"));
    std::fs::write(
        scripts.join("s.rhai"),
        "//! on: user.lifecycle.create\nimport \"a\" as m;\nlog(m::f());\n",
    )
    .unwrap();
    let script =
        ScriptSet::load_one(&scripts.join("s.rhai"), &stdlib, &Limits::default()).expect("loads");
    std::fs::remove_dir_all(&stdlib).unwrap();
    let out = run_setup_script(&script);
    assert!(out.result.is_ok(), "{:?}", out.result);
    assert_eq!(out.log.len(), 1);
    assert_eq!(out.log[0].message, "5");
}

/// Regression: an import by a computed name inside a stdlib function was resolved while the
/// script ran: the run read the module file as it was then (not the version the script's hash
/// covers), and a module re-importing itself that way recursed until `max_modules`. A run now
/// resolves nothing: such an import fails the run with a message saying why.
#[test]
fn an_import_by_computed_name_is_not_resolved_during_a_run() {
    let dir = import_setup(
        "a",
        &[
            ("a", "fn f() { let p = \"b\"; import p as x; x::g() }\n"),
            ("b", "fn g() { 2 }\n"),
        ],
    );
    let (scripts, stdlib) = (dir.path().join("scripts"), dir.path().join("stdlib"));
    std::fs::write(
        scripts.join("s.rhai"),
        "//! on: user.lifecycle.create\nimport \"a\" as m;\nlog(m::f());\n",
    )
    .unwrap();
    let script =
        ScriptSet::load_one(&scripts.join("s.rhai"), &stdlib, &Limits::default()).expect("loads");
    let out = run_setup_script(&script);
    let err = out.result.expect_err("the import is refused");
    assert!(
        err.message.contains("import \"b\"") && err.message.contains("while a script runs"),
        "{err}"
    );
    assert!(out.log.is_empty(), "{:?}", out.log);
}

/// `send_email`'s `key` names the action: its id is (event, script, key) whatever the content;
/// the same key twice in a run is an error at that line; a bad key is refused.
#[test]
fn send_email_key_names_the_action_not_its_content() {
    let dir = import_setup("a", &[("a", "fn f() { 1 }\n")]);
    let scripts = dir.path().join("scripts");
    let stdlib = dir.path().join("stdlib");
    let run_source = |source: &str| {
        std::fs::write(scripts.join("s.rhai"), source).unwrap();
        let script = ScriptSet::load_one(&scripts.join("s.rhai"), &stdlib, &Limits::default())
            .expect("loads");
        run_setup_script(&script)
    };
    let ids = |out: &RunOutcome| -> Vec<String> {
        out.actions.iter().map(|a| a.id().to_string()).collect()
    };
    let head = "//! on: user.lifecycle.create\n";
    let a = run_source(&format!(
        "{head}send_email(#{{ to: \"a@example.com\", subject: \"one\", body: \"x\", key: \"welcome\" }});\nsend_email(#{{ to: \"a@example.com\", subject: \"two\", body: \"x\" }});\n"
    ));
    assert!(a.result.is_ok(), "{:?}", a.result);
    let b = run_source(&format!(
        "{head}send_email(#{{ to: \"b@example.com\", subject: \"edited\", body: \"y\", key: \"welcome\" }});\nsend_email(#{{ to: \"b@example.com\", subject: \"edited too\", body: \"y\" }});\n"
    ));
    assert!(b.result.is_ok(), "{:?}", b.result);
    assert_eq!(ids(&a), ids(&b), "same keys and positions, same ids");
    assert_ne!(ids(&a)[0], ids(&a)[1]);

    let other_key = run_source(&format!(
        "{head}send_email(#{{ to: \"a@example.com\", subject: \"one\", body: \"x\", key: \"other\" }});\n"
    ));
    assert_ne!(
        ids(&other_key)[0],
        ids(&a)[0],
        "another key, another action"
    );

    let twice = run_source(&format!(
        "{head}send_email(#{{ to: \"a@example.com\", subject: \"1\", body: \"x\", key: \"k\" }});\nsend_email(#{{ to: \"a@example.com\", subject: \"2\", body: \"x\", key: \"k\" }});\n"
    ));
    let err = twice.result.expect_err("a key used twice fails the run");
    assert!(err.message.contains("key `k` is used twice"), "{err}");
    assert_eq!(err.line, Some(3), "{err}");

    for (bad, says) in [("\"\"", "`key` is empty"), ("42", "`key` must be a string")] {
        let out = run_source(&format!(
            "{head}send_email(#{{ to: \"a@example.com\", subject: \"1\", body: \"x\", key: {bad} }});\n"
        ));
        let err = out.result.expect_err("a bad key fails");
        assert!(err.message.contains(says), "{bad}: {err}");
    }
}
