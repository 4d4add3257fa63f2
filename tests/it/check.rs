//! Golden tests of `engine check` and `engine tokens` (the library calls the CLI makes).
//!
//! Each directory `tests/check/<case>/` holds scripts (`*.rhai`) checked as a whole scripts
//! directory against the samples in `<case>/samples/` if present, else `tests/fixtures/`. The
//! expected outputs are `<case>/stdout.txt` (human) and `<case>/stdout.json` (`--format json`),
//! with the repository path removed so they do not depend on the checkout. `tests/tokens/` holds
//! the expected `engine tokens` output for `tests/fixtures/`, and `tests/tokens/documented/` the
//! output without a sample of the type asked for (Okta's documented fields).
//!
//! `ENGINE_BLESS=1 cargo test --test it check` rewrites the expected files from the current
//! output; review the diff before committing it.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use engine::authoring::now::DryNow;
use engine::authoring::samples::{Sample, load_samples_dir};
use engine::cli::check::{CheckOptions, check_command, check_command_with_host, tokens_command};
use engine::script::{Host, Limits, NoDirectory};

const EXIT_USAGE: u8 = 2;

/// Set to `1` to rewrite the expected files.
const BLESS_VAR: &str = "ENGINE_BLESS";
/// Shipped example scripts' warnings accepted by `shipped_examples_are_clean`: (script, code,
/// text in the message). Each entry is a finding to fix in the script, kept visible here.
const KNOWN_EXAMPLE_WARNINGS: &[(&str, &str, &str)] = &[];

fn repo() -> PathBuf {
    std::env::var_os("ENGINE_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn bless() -> bool {
    std::env::var(BLESS_VAR).is_ok_and(|v| v == "1")
}

/// Output with the repository's absolute path taken out.
fn normalize(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out).into_owned();
    let prefix = format!("{}/", repo().display());
    text.replace(&prefix, "")
}

/// Compares `got` with the file `expected` (or writes it when blessing); `Err` explains.
fn compare(expected: &Path, got: &str) -> Result<(), String> {
    if bless() {
        std::fs::write(expected, got).map_err(|e| format!("{}: {e}", expected.display()))?;
        return Ok(());
    }
    let want = std::fs::read_to_string(expected).map_err(|e| {
        format!(
            "{}: {e} (run with {BLESS_VAR}=1 to create it)",
            expected.display()
        )
    })?;
    if want == got {
        return Ok(());
    }
    let first = want
        .lines()
        .zip(got.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| want.lines().count().min(got.lines().count()));
    Err(format!(
        "{} differs from the output at line {}:\n  expected: {:?}\n  got:      {:?}\n--- full output ---\n{got}",
        expected.display(),
        first + 1,
        want.lines().nth(first).unwrap_or("<end>"),
        got.lines().nth(first).unwrap_or("<end>"),
    ))
}

fn fixtures() -> Vec<Sample> {
    load_samples_dir(&repo().join("tests/fixtures")).expect("fixtures load as samples")
}

/// Runs `check` on a case directory both ways; returns (human, json, exit code). A case with a
/// `hooks.txt` (one hook id a line) is checked as with a config that has those hooks; one with
/// a file `no-okta` as with a config without `[okta]`.
fn run_check(dir: &Path, samples: &[Sample], deny_warnings: bool) -> (String, String, u8) {
    let stdlib = repo().join("stdlib");
    let limits = Limits::default();
    let hooks: Option<Vec<String>> = std::fs::read_to_string(dir.join("hooks.txt"))
        .ok()
        .map(|t| t.lines().map(str::to_string).collect());
    let host: Arc<dyn Host> = Arc::new(NoDirectory);
    // `now.txt`: the dry runs' `--now` (else each sample's published time).
    let now = std::fs::read_to_string(dir.join("now.txt"))
        .map(|t| DryNow::parse(&t).expect("now.txt holds an RFC 3339 time"))
        .unwrap_or_default();
    let run = |json: bool, out: &mut Vec<u8>| {
        let options = CheckOptions {
            json,
            deny_warnings,
            hooks: hooks.as_deref(),
            generic_hooks: &[],
            okta: dir.join("no-okta").exists().then_some(false),
            senders: None,
            now,
        };
        check_command_with_host(&[], dir, &stdlib, samples, &limits, &host, options, out).code()
    };
    let mut human = Vec::new();
    let code_h = run(false, &mut human);
    let mut json = Vec::new();
    let code_j = run(true, &mut json);
    assert_eq!(code_h, code_j, "exit codes of human and JSON output differ");
    (normalize(&human), normalize(&json), code_h)
}

fn run_case(dir: &Path) -> Result<(), String> {
    let samples_dir = dir.join("samples");
    let samples = if samples_dir.is_dir() {
        load_samples_dir(&samples_dir).map_err(|e| e.to_string())?
    } else {
        fixtures()
    };
    let (human, json, code) = run_check(dir, &samples, false);
    let value: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| format!("JSON output does not parse: {e}"))?;
    if value["summary"]["exit_code"] != u64::from(code) {
        return Err(format!("exit code {code} is not the summary's: {json}"));
    }
    let mut problems = Vec::new();
    for (file, got) in [("stdout.txt", &human), ("stdout.json", &json)] {
        if let Err(e) = compare(&dir.join(file), got) {
            problems.push(e);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

#[test]
fn golden_check_cases() {
    let root = repo().join("tests/check");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    crate::support::run_golden_cases(
        "check",
        &cases,
        run_case,
        " (ENGINE_BLESS=1 rewrites the expected output)",
    );
}

/// The example scripts shipped in `scripts/` are clean against the real samples: no errors, and
/// no warnings beyond the known ones listed above.
#[test]
fn shipped_examples_are_clean() {
    let (_, json, _) = run_check(&repo().join("scripts"), &fixtures(), false);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let diags = v["diagnostics"].as_array().expect("diagnostics");
    let mut unexpected = Vec::new();
    for d in diags {
        let code = d["code"].as_str().unwrap_or("");
        if code.starts_with('I') {
            continue;
        }
        let file = d["file"].as_str().unwrap_or("");
        let message = d["message"].as_str().unwrap_or("");
        let known = KNOWN_EXAMPLE_WARNINGS
            .iter()
            .any(|(f, c, m)| file.ends_with(f) && code == *c && message.contains(m));
        if !known {
            unexpected.push(d.clone());
        }
    }
    assert!(unexpected.is_empty(), "findings: {unexpected:#?}");
    let runs = v["dry_runs"].as_array().expect("dry runs");
    assert!(
        runs.len() >= 2,
        "the examples run on the deactivate and group samples: {runs:#?}"
    );
    assert!(runs.iter().all(|r| r["ok"] == true), "{runs:#?}");
}

/// `--deny-warnings` turns warnings into a failing exit code; usage errors give 2. An event type
/// Okta cannot deliver by hook is an error (it used to be a warning that let CI pass).
#[test]
fn exit_codes() {
    let samples = fixtures();
    let dir = repo().join("tests/check/unknown-hook");
    assert_eq!(run_check(&dir, &samples, false).2, 0, "warnings only");
    assert_eq!(run_check(&dir, &samples, true).2, 1);
    assert_eq!(
        run_check(&repo().join("tests/check/ineligible"), &samples, false).2,
        1,
        "an ineligible event type fails the check"
    );
    assert_eq!(
        run_check(&repo().join("tests/check/path-typo"), &samples, false).2,
        1
    );

    // `engine check [SCRIPT...]` with `scripts_dir`: (exit code, output).
    let check = |scripts: &[PathBuf], scripts_dir: &Path, json: bool| {
        let mut out = Vec::new();
        let code = check_command(
            scripts,
            scripts_dir,
            &repo().join("stdlib"),
            &samples,
            &Limits::default(),
            json,
            false,
            &mut out,
        )
        .code();
        (code, out)
    };
    let (code, out) = check(
        &[repo().join("tests/check/no-such-script.rhai")],
        &repo().join("scripts"),
        false,
    );
    assert_eq!(code, EXIT_USAGE, "{}", String::from_utf8_lossy(&out));
    let (code, out) = check(&[], &repo().join("tests/check/does-not-exist"), true);
    assert_eq!(code, EXIT_USAGE);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON error");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("does-not-exist"))
    );

    // Named scripts are checked on their own.
    let (code, out) = check(
        &[repo().join("tests/check/clean/offboard.rhai")],
        &repo().join("scripts"),
        false,
    );
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out));
}

/// Odd scripts never panic the checker.
#[test]
fn odd_scripts_do_not_panic() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cases = [
        "",
        "//! on: *\n",
        "//! on: *\nevent",
        "//! on: *\nevent.",
        "//! on: *\nevent[",
        "//! on: *\nlet x = event.target[event.actor.id][\"a\"][0].b.c.d.e;",
        "//! on: *\nlet e = event; e = 1; e.x; let f = event.actor; f.y = 2; f.z;",
        "//! on: *\nfn f(event, delivery) { event.q + delivery.r } f(1, 2);",
        "//! on: *\nlet a = [event.target[-1].x, event.target[99999999999].y];",
        "//! on: *\nswitch event.eventType { \"a\" => event.zz, _ => event.target.len() }",
        "//! on: *\nlet f = |x| x.actor.foo; f.call(event);",
        "//! on: *\ntry { throw event.nope } catch (err) { err.foo }",
        "//! on: *\nimport \"okta\" as o; let t = o::targets(event, 1); for (x, i) in t { x.nop[i]; }",
        "//! on: *\nlet s = `${event.actor.alternateId.len} ${event[\"\"]} ${event[\"a b\"]}`;",
        "//! on: *\nlet x = ((((((((((event.actor))))))))).displayName;",
        "\u{feff}//! on: ünïcödé.*\nlog(\"é\");",
        "//! on: *\n\u{0}\u{1}",
        "//! on: *\nwhile true { event.foo; break; }",
        "//! on: *\ndo { event.bar } while false;",
        "//! on: *\nlet event = 5; event.x;",
    ];
    for (i, src) in cases.iter().enumerate() {
        std::fs::write(tmp.path().join(format!("c{i:02}.rhai")), src).expect("write");
    }
    std::fs::write(tmp.path().join("bin.rhai"), [0xff, 0xfe, 0x00]).expect("write");
    let deep = format!(
        "//! on: *\nlet x = {}1{};",
        "(".repeat(500),
        ")".repeat(500)
    );
    std::fs::write(tmp.path().join("deep.rhai"), deep).expect("write");
    let chain = format!("//! on: *\nlet x = event{};", ".a".repeat(3000));
    std::fs::write(tmp.path().join("chain.rhai"), chain).expect("write");
    let long = format!("//! on: *\nlet x = event.{};", "a".repeat(5000));
    std::fs::write(tmp.path().join("long.rhai"), long).expect("write");
    for json in [false, true] {
        let mut out = Vec::new();
        let code = check_command(
            &[],
            tmp.path(),
            &repo().join("stdlib"),
            &fixtures(),
            &Limits::default(),
            json,
            false,
            &mut out,
        )
        .code();
        assert_eq!(code, 1, "{}", String::from_utf8_lossy(&out));
        if std::env::var_os("SHOW").is_some() {
            println!("{}", String::from_utf8_lossy(&out));
        }
    }
}

#[test]
fn tokens_golden() {
    let samples = fixtures();
    let dir = repo().join("tests/tokens");
    let mut problems = Vec::new();
    for (file, json) in [("stdout.txt", false), ("stdout.json", true)] {
        let mut out = Vec::new();
        let code = tokens_command(&samples, None, json, &mut out).code();
        assert_eq!(code, 0);
        if let Err(e) = compare(&dir.join(file), &normalize(&out)) {
            problems.push(e);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let mut out = Vec::new();
    assert_eq!(
        tokens_command(&samples, Some("group.user_membership.*"), false, &mut out).code(),
        0
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("group.user_membership.add (1 sample)"),
        "{text}"
    );
    // Every target of the event, by type: the group's name too (not only the first target).
    for token in [
        "okta::target(event, \"UserGroup\").displayName",
        "okta::target(event, \"User\").alternateId",
        "delivery.hook",
        "lookup_user(event.actor.alternateId).manager",
    ] {
        assert!(text.contains(token), "{token}: {text}");
    }
    assert!(!text.contains("event.target[0]"), "{text}");

    // No sample of the type (or none at all): Okta's documented fields, with their types.
    let dir = repo().join("tests/tokens/documented");
    for (file, json, samples) in [
        ("stdout.txt", false, &samples[..]),
        ("stdout.json", true, &[][..]),
    ] {
        let mut out = Vec::new();
        let event_type = (!samples.is_empty()).then_some("user.lifecycle.create");
        assert_eq!(
            tokens_command(samples, event_type, json, &mut out).code(),
            0
        );
        if let Err(e) = compare(&dir.join(file), &normalize(&out)) {
            problems.push(e);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Through the binary, `engine check` knows the config's hooks: a `hook:` id that is not one of
/// them is a warning (a failure with `--deny-warnings`).
#[test]
fn check_warns_about_hook_ids_the_config_lacks() {
    let dir = crate::support::temp_dir();
    let port = crate::support::free_port();
    crate::support::engine_dir(
        dir.path(),
        port,
        "",
        &[(
            "typo.rhai",
            "//! on: user.lifecycle.create\n//! hook: tset\nlog(event.uuid);\n",
        )],
    );
    let o = crate::support::run_engine(dir.path(), &["check"]);
    let out = crate::support::stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("warning[W0102]: no hook `tset` in engine.toml"),
        "{out}"
    );
    assert!(out.contains("the configured hooks are: `test`"), "{out}");
    let o = crate::support::run_engine(dir.path(), &["check", "--deny-warnings"]);
    assert_eq!(o.status.code(), Some(1), "{}", crate::support::stdout(&o));
}

/// An event type Okta cannot deliver is an error for scripts an okta hook delivers to, and a
/// warning for a script bound only to a `generic` hook (which carries any JSON).
#[test]
fn ineligible_types_fail_for_okta_hooks_and_warn_for_generic_ones() {
    let (dir, _port) = crate::support::engine_setup(
        "\n[[hook]]\nid = \"gen\"\nkind = \"generic\"\nsecret_env = \"ENGINE_TEST_SECRET\"\n",
        &[
            (
                "okta.rhai",
                "//! on: user.lifecycle.created\nlog(event.uuid);\n",
            ),
            (
                "gen.rhai",
                "//! on: my.custom.type\n//! hook: gen\nlog(event.uuid);\n",
            ),
        ],
    );
    let o = crate::support::run_engine(dir.path(), &["check"]);
    let out = crate::support::stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("error[E0102]: event type `user.lifecycle.created` cannot be delivered"),
        "{out}"
    );
    assert!(
        out.contains("did you mean `user.lifecycle.create`?"),
        "{out}"
    );
    assert!(
        out.contains("warning[W0101]: event type `my.custom.type` cannot be delivered"),
        "{out}"
    );
}
