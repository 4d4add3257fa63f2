//! The `engine` binary: help, exit codes, configuration errors, `events`, `send`, `serve`.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::*;

#[test]
fn help_lists_commands_and_bad_usage_exits_2() {
    let dir = temp_dir();
    let o = run_engine(dir.path(), &["--help"]);
    assert_eq!(o.status.code(), Some(0));
    for cmd in ["serve", "events", "send", "Exit codes"] {
        assert!(stdout(&o).contains(cmd), "{cmd} missing from --help");
    }
    let o = run_engine(dir.path(), &["events", "--bogus"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--bogus"));
}

/// A config file and what the engine must say about it.
struct ConfigCase {
    name: &'static str,
    toml: &'static str,
    messages: &'static [&'static str],
}

#[test]
fn config_errors_name_the_key_and_line() {
    let cases = [
        ConfigCase {
            name: "unknown key",
            toml: "listen = \"127.0.0.1:1\"\nlisten_port = 9\n",
            messages: &["listen_port", "engine.toml:2:1:"],
        },
        ConfigCase {
            name: "unknown hook key",
            toml: "[[hook]]\nid = \"a\"\nsecret_env = \"X\"\nsecret = \"plain\"\n",
            messages: &["secret", "engine.toml:4:1:"],
        },
        ConfigCase {
            name: "bad listen",
            toml: "\nlisten = \"localhost\"\n",
            messages: &["engine.toml:2", "`listen`", "not an address", "hint"],
        },
        ConfigCase {
            name: "bad kind",
            toml: "[[hook]]\nid = \"a\"\nkind = \"slack\"\nsecret_env = \"X\"\n",
            messages: &["slack", "`kind`", "engine.toml:3:8:"],
        },
        ConfigCase {
            name: "bad hook id",
            toml: "[[hook]]\nid = \"a/b\"\nsecret_env = \"X\"\n",
            messages: &["engine.toml:2", "hook.id", "a/b"],
        },
        ConfigCase {
            name: "duplicate hook id",
            toml: "[[hook]]\nid = \"a\"\nsecret_env = \"X\"\n[[hook]]\nid = \"a\"\nsecret_env = \"Y\"\n",
            messages: &["engine.toml:5", "declared twice"],
        },
        ConfigCase {
            name: "hook without secret",
            toml: "[[hook]]\nid = \"a\"\n",
            messages: &["engine.toml:1", "secret_env"],
        },
        ConfigCase {
            name: "secret in the file",
            toml: "[[hook]]\nid = \"a\"\nsecret_env = \"my secret value!\"\n",
            messages: &["engine.toml:3", "not an environment variable name"],
        },
        ConfigCase {
            name: "body limit out of range",
            toml: "max_body_bytes = 5\n",
            messages: &["engine.toml:1", "max_body_bytes", "out of range"],
        },
        ConfigCase {
            name: "wrong type",
            toml: "retention_days = \"thirty\"\n",
            messages: &["`retention_days`", "engine.toml:1:18:"],
        },
        ConfigCase {
            name: "not toml",
            toml: "listen = \n",
            messages: &["engine.toml:1:10:"],
        },
        ConfigCase {
            name: "bad smtp from",
            toml: "[smtp]\nurl_env = \"SMTP_URL\"\nfrom = \"nobody\"\n",
            messages: &["engine.toml:3", "smtp.from"],
        },
        ConfigCase {
            name: "store cache out of range",
            toml: "\n[store]\ncache_mb = 0\n",
            messages: &["engine.toml:3", "store.cache_mb", "out of range"],
        },
        ConfigCase {
            name: "unknown store key",
            toml: "[store]\ncache = 16\n",
            messages: &["cache", "engine.toml:2:1:"],
        },
        ConfigCase {
            name: "bad okta url",
            toml: "[okta]\norg_url = \"example.okta.com\"\ntoken_env = \"T\"\n",
            messages: &["engine.toml:2", "okta.org_url"],
        },
    ];
    for case in cases {
        let dir = temp_dir();
        std::fs::write(dir.path().join("engine.toml"), case.toml).unwrap();
        let o = run_engine(dir.path(), &["events"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{}: {err}", case.name);
        assert!(err.starts_with("error: "), "{}: {err}", case.name);
        for m in case.messages {
            assert!(err.contains(m), "{}: {err:?} lacks {m:?}", case.name);
        }
        assert!(!err.contains("panicked"), "{}", case.name);
    }
}

/// Defect 14: TOML syntax errors printed toml's multi-line snippet (`TOML parse error at line 1,
/// column 22`, the line, a caret, the message) where one line and a hint are promised; a
/// non-UTF-8 file said only "stream did not contain valid UTF-8", with no place.
#[test]
fn toml_syntax_errors_are_one_line_and_a_hint() {
    let cases: [(&str, &[u8], &str, &str); 7] = [
        (
            "unclosed string",
            b"listen = \"127.0.0.1:1\nretention_days = 3\n",
            "engine.toml:1:22: ",
            "double quotes",
        ),
        (
            "missing =",
            b"retention_days = 3\nlisten \"127.0.0.1:1\"\n",
            "engine.toml:2:8: ",
            "key = value",
        ),
        (
            "duplicate key",
            b"listen = \"127.0.0.1:1\"\n\nlisten = \"127.0.0.1:2\"\n",
            "engine.toml:3:1: duplicate key",
            "only once",
        ),
        (
            "bad table header",
            b"[[hook]\nid = \"a\"\nsecret_env = \"X\"\n",
            "engine.toml:1:8: ",
            "[[hook]]",
        ),
        (
            "table header twice",
            b"[smtp]\nurl_env = \"U\"\n[smtp]\nfrom = \"a@b\"\n",
            "engine.toml:3:",
            "only once",
        ),
        (
            "not UTF-8 (line 2, after a two-byte character)",
            b"# ok\nlisten = \"\xc3\xa9\xff\"\n",
            "engine.toml:2:12: the file is not valid UTF-8",
            "UTF-8",
        ),
        (
            "unknown key (TOML that does not fit)",
            b"retention_days = 3\n  listen_prot = \"x\"\n",
            "engine.toml:2:3: unknown field `listen_prot`",
            "spelling",
        ),
    ];
    for (name, toml, place, hint) in cases {
        let dir = temp_dir();
        std::fs::write(dir.path().join("engine.toml"), toml).unwrap();
        for args in [&["events"][..], &["serve"][..]] {
            let o = run_engine(dir.path(), args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{name}: {err}");
            let lines: Vec<&str> = err.lines().collect();
            assert_eq!(lines.len(), 2, "{name}: not one line and a hint:\n{err}");
            assert!(
                lines[0].starts_with(&format!("error: {place}")),
                "{name}: {:?} does not start with error: {place}",
                lines[0]
            );
            assert!(
                lines[1].starts_with("  hint: ") && lines[1].contains(hint),
                "{name}: hint line {:?} lacks {hint:?}",
                lines[1]
            );
            assert!(
                !err.contains("TOML parse error") && !err.contains(" | "),
                "{name}: {err}"
            );
            assert!(
                stdout(&o).is_empty(),
                "{name}: serve started: {}",
                stdout(&o)
            );
        }
    }
}

#[test]
fn missing_secret_variable_is_a_startup_error_naming_it() {
    let dir = temp_dir();
    write_config(dir.path(), free_port(), "");
    let o = engine_bin()
        .current_dir(dir.path())
        .env_remove("ENGINE_TEST_SECRET")
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("ENGINE_TEST_SECRET") && err.contains("engine.toml:5"),
        "{err}"
    );
    // An explicit --config that does not exist.
    let o = run_engine(dir.path(), &["--config", "nope.toml", "events"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope.toml"));
}

#[test]
fn embedded_defaults_generate_a_private_secret_shown_once() {
    let dir = temp_dir();
    // The defaults but for the port (8080 may be taken on a test machine).
    let port = free_port();
    std::fs::write(
        dir.path().join("engine.toml"),
        format!("listen = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let mut p = ServeProcess::start(dir.path(), port, &[]);
    let secret_path = dir.path().join("data/hook-secret-default");
    let secret = std::fs::read_to_string(&secret_path)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(secret.len(), 64);
    assert_eq!(
        std::fs::metadata(&secret_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    p.signal(libc::SIGTERM);
    let out = p.wait_output();
    assert!(out.0.success(), "SIGTERM exits 0: {:?}\n{}", out.0, out.2);
    assert!(out.1.contains(&secret), "first start shows the secret");
    assert!(out.1.contains("/hooks/default"));
    assert!(!out.2.contains(&secret), "the secret is not logged");
    // Second start: the same secret, not shown again.
    let mut p = ServeProcess::start(dir.path(), port, &[]);
    p.signal(libc::SIGINT);
    let out = p.wait_output();
    assert!(out.0.success(), "SIGINT exits 0: {:?}\n{}", out.0, out.2);
    assert!(!out.1.contains(&secret) && !out.2.contains(&secret));
    assert!(out.1.contains("hook-secret-default"));
    assert_eq!(
        std::fs::read_to_string(&secret_path).unwrap().trim(),
        secret
    );
}

#[test]
fn send_events_and_quarantine_through_the_binary() {
    let dir = temp_dir();
    let port = free_port();
    write_config(dir.path(), port, "");
    let env = [("ENGINE_TEST_SECRET", SECRET)];
    let p = ServeProcess::start(dir.path(), port, &env);
    let url = format!("{}/hooks/test", p.url);
    let auth = format!("Authorization: {SECRET}");
    // A single LogEvent is wrapped into an envelope.
    let payload = format!("{FIXTURES}/event.user.lifecycle.deactivate.json");
    let o = run_engine(
        dir.path(),
        &["send", &payload, "--url", &url, "--header", &auth],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("verification GET: 200") && out.contains("delivery POST: 200"),
        "{out}"
    );
    // An envelope as it is.
    let payload = format!("{FIXTURES}/envelope.user.session.start.json");
    let o = run_engine(
        dir.path(),
        &["send", &payload, "--url", &url, "--header", &auth],
    );
    assert_eq!(o.status.code(), Some(0));
    // Wrong secret: reported, exit 1, and the secret we sent is not echoed.
    let o = run_engine(
        dir.path(),
        &[
            "send",
            &payload,
            "--url",
            &url,
            "--header",
            "Authorization: wrong-one",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("delivery POST: 401"));
    // Bad payload and bad header are usage errors.
    std::fs::write(dir.path().join("bad.json"), "[1,2]").unwrap();
    let o = run_engine(dir.path(), &["send", "bad.json", "--url", &url]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.json"));
    let o = run_engine(
        dir.path(),
        &["send", &payload, "--url", &url, "--header", "no colon"],
    );
    assert_eq!(o.status.code(), Some(2));
    let o = run_engine(
        dir.path(),
        &["send", &payload, "--url", "https://example.com/hooks/x"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("only http://"));
    // An authenticated body that is not an envelope goes to quarantine.
    assert_eq!(
        post_blocking(&url, "{\"data\":{\"events\":[]}}".into()),
        400
    );

    // History while the server runs.
    let o = run_engine(dir.path(), &["events"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(table.starts_with("SEQ"), "{table}");
    assert!(
        table.contains("user.lifecycle.deactivate") && table.contains("user.session.start"),
        "{table}"
    );
    let o = run_engine(dir.path(), &["events", "--format", "json", "--limit", "1"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["event_type"], "user.session.start", "newest first");
    assert_eq!(rows[0]["hook"], "test");
    let o = run_engine(dir.path(), &["events", "--quarantine", "--format", "json"]);
    let q: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let q = q.as_array().unwrap();
    assert_eq!(q.len(), 1, "the one body that is not an envelope: {q:?}");
    assert!(
        q[0]["reason"].as_str().unwrap().contains("data.events"),
        "{q:?}"
    );
    // The secret never appears in the server's output.
    p.signal(libc::SIGTERM);
    let mut p = p;
    let out = p.wait_output();
    assert!(out.0.success());
    assert!(
        !out.1.contains(SECRET) && !out.2.contains(SECRET),
        "secret leaked"
    );
    // History after the server stopped.
    let o = run_engine(dir.path(), &["events", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
}

#[test]
fn events_on_an_empty_data_dir() {
    let dir = temp_dir();
    let o = run_engine(dir.path(), &["events"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o).trim(), "(none)");
    let o = run_engine(dir.path(), &["events", "--format", "json"]);
    assert_eq!(stdout(&o).trim(), "[]");
}

/// The server holds the store exclusively; every history command reads through its loopback
/// admin endpoint and prints what it would print with the server stopped.
#[test]
fn history_commands_read_through_a_running_server() {
    let (dir, port) = engine_setup(
        "",
        &[("log-it.rhai", "//! on: user.*\nlog(`saw ${event.uuid}`);\n")],
    );
    let env = [("ENGINE_TEST_SECRET", SECRET)];
    let p = ServeProcess::start(dir.path(), port, &env);
    let url = format!("{}/hooks/test", p.url);
    let uuid = "read-through-1".to_string();
    let body = envelope_with("read-through", std::slice::from_ref(&uuid));
    assert_eq!(post_blocking(&url, body), 200);
    assert_eq!(post_blocking(&url, "{\"not\":\"an envelope\"}".into()), 400);
    let events = history_json(dir.path(), "events");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["uuid"], uuid.as_str());
    let mut runs = Vec::new();
    assert!(wait_until(Duration::from_secs(30), || {
        runs = history_json(dir.path(), "runs");
        runs.len() == 1 && runs[0]["status"] == "succeeded"
    }));
    let o = run_engine(dir.path(), &["events", "--quarantine", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let q: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(q.len(), 1);
    for cmd in [
        &["outbox", "--format", "json"][..],
        &["samples", "list", "--format", "json"],
        &["scripts", "--format", "json"],
    ] {
        let o = run_engine(dir.path(), cmd);
        assert_eq!(o.status.code(), Some(0), "{cmd:?}: {}", stderr(&o));
    }
    let o = run_engine(dir.path(), &["scripts", "--format", "json"]);
    assert!(stdout(&o).contains("log-it"), "{}", stdout(&o));

    // The endpoint itself: a token is required, and only known queries are answered.
    let token = std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap();
    let read = |token: &str, body: &str| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(engine::util::http_client::request(
            hyper::Method::POST,
            &format!("{}/admin/read", p.console_url()),
            &[("x-engine-admin-token".to_string(), token.trim().to_string())],
            bytes::Bytes::from(body.to_string()),
        ))
        .unwrap()
    };
    let a = read("wrong", r#"{"what":"events","limit":1}"#);
    assert_eq!(a.status, 401, "{}", a.text());
    let a = read(&token, r#"{"what":"everything"}"#);
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("bad read request"), "{}", a.text());
    let a = read(&token, r#"{"what":"events","limit":5}"#);
    assert_eq!(a.status, 200, "{}", a.text());

    // With the token unreadable, a command says why instead of failing obscurely.
    std::fs::rename(
        dir.path().join("data/admin-token"),
        dir.path().join("data/admin-token.moved"),
    )
    .unwrap();
    let o = run_engine(dir.path(), &["runs"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("admin token"), "{}", stderr(&o));
}

/// Regression (one event path): `engine run` and `engine check` read a payload through the
/// server's own envelope parser, so events without a `uuid` or `published` get the server's
/// order and ids (dry runs used to order by the `published` string and hash re-encoded JSON).
#[tokio::test]
async fn dry_runs_order_and_identify_events_as_the_server_does() {
    let dir = temp_dir();
    // Out of order as strings but not as instants; two events without uuid, one without time.
    let body = r#"{"eventId":"d-order","data":{"events":[
        {"eventType":"user.lifecycle.create","published":"2024-01-01T00:00:00.159Z","n":1},
        {"eventType":"user.lifecycle.create","published":"2024-01-01T00:00:00.158999Z","n":2},
        {"eventType":"user.lifecycle.create","n":3},
        {"uuid":"u-4","eventType":"user.lifecycle.create","published":"2023-12-31T23:59:59Z","n":4}
    ]}}"#;
    let server = TestServer::start(&dir.path().join("data")).await;
    let a = server.post("test", body).await;
    assert_eq!(a.status, 200, "{}", a.text());
    server.stop().await;
    let mut stored = stored_events(&dir.path().join("data"));
    stored.sort_by_key(|e| e.seq);
    let server_ids: Vec<String> = stored.iter().map(|e| e.uuid.clone()).collect();
    assert_eq!(server_ids.len(), 4);
    assert_eq!(server_ids[0], "u-4", "earliest first: {server_ids:?}");
    assert!(server_ids[1].starts_with("sha256:"), "{server_ids:?}");

    let payload = dir.path().join("payload.json");
    std::fs::write(&payload, body).unwrap();
    let script = dir.path().join("scripts/s.rhai");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(
        &script,
        "//! on: user.lifecycle.create\nsend_email(#{ to: \"a@example.com\", subject: `n${event.n}`, body: \"b\" });\n",
    )
    .unwrap();
    let o = run_engine(
        dir.path(),
        &[
            "run",
            script.to_str().unwrap(),
            payload.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let runs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let run_ids: Vec<String> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_uuid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        run_ids, server_ids,
        "engine run: same order and ids as the server"
    );
    let mail_ids: Vec<String> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["actions"][0]["id"].as_str().unwrap().to_string())
        .collect();

    // `engine check` dry-runs the same payload as a sample: the same mail ids.
    let samples = dir.path().join("samples");
    std::fs::create_dir_all(&samples).unwrap();
    std::fs::write(samples.join("p.json"), body).unwrap();
    let o = run_engine(
        dir.path(),
        &[
            "check",
            "--samples",
            samples.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut check_ids: Vec<String> = report["dry_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["mails"][0]["id"].as_str().unwrap().to_string())
        .collect();
    let mut want = mail_ids.clone();
    check_ids.sort();
    want.sort();
    assert_eq!(
        check_ids, want,
        "engine check: the same mail ids as engine run"
    );
}

/// Regression (defect 2 of "Hardening"): with a stdlib module importing itself, `engine check`
/// and `engine run` overflowed the stack and aborted (exit 134). Now the cycle is a load error:
/// check reports it as a finding (exit 1), run as the script's load error (exit 1).
#[test]
fn engine_check_and_run_report_a_stdlib_import_cycle_instead_of_aborting() {
    for (modules, cycle) in [
        (
            &[("a", "import \"a\" as a;\nfn f() { 1 }\n")][..],
            "import cycle: a -> a",
        ),
        (
            &[
                ("a", "import \"b\" as b;\nfn f() { 1 }\n"),
                ("b", "import \"a\" as a;\nfn g() { 2 }\n"),
            ][..],
            "import cycle: a -> b -> a",
        ),
    ] {
        let dir = temp_dir();
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        std::fs::create_dir_all(dir.path().join("stdlib")).unwrap();
        std::fs::write(
            dir.path().join("scripts/s.rhai"),
            "//! on: user.lifecycle.create\nimport \"a\" as a;\nlog(a::f());\n",
        )
        .unwrap();
        for (name, text) in modules {
            std::fs::write(dir.path().join(format!("stdlib/{name}.rhai")), text).unwrap();
        }
        let o = run_engine(dir.path(), &["check"]);
        assert_eq!(o.status.code(), Some(1), "check: {}", stderr(&o));
        assert!(stdout(&o).contains(cycle), "{cycle} in {}", stdout(&o));

        std::fs::write(
            dir.path().join("event.json"),
            fixture("event.user.lifecycle.deactivate.json"),
        )
        .unwrap();
        let o = run_engine(dir.path(), &["run", "scripts/s.rhai", "event.json"]);
        assert_eq!(o.status.code(), Some(1), "run: {}", stderr(&o));
        assert!(stderr(&o).contains(cycle), "{cycle} in {}", stderr(&o));
    }
}

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every path the engine keeps under `data/`: (path, is a directory).
fn data_entries(data: &std::path::Path) -> Vec<(std::path::PathBuf, bool)> {
    let mut out = vec![(data.to_path_buf(), true)];
    for name in ["engine.redb", "admin-token"] {
        out.push((data.join(name), false));
    }
    for sub in ["outbox-mail", "samples"] {
        let d = data.join(sub);
        out.push((d.clone(), true));
        for e in std::fs::read_dir(&d).unwrap() {
            out.push((e.unwrap().path(), false));
        }
    }
    out
}

/// Defect 13: `engine.redb` was 0644 and the data dir 0755 (so were `.eml` mail and samples):
/// any account on the host could read stored deliveries and mail. New ones are 0700/0600 even
/// under umask 000, and a start tightens what an older engine left open, saying so once.
#[test]
fn data_dir_is_private_and_a_loose_one_is_tightened_at_start() {
    let dir = temp_dir();
    let port = free_port();
    let mailer = "//! on: user.lifecycle.*\nsend_email(#{ to: \"a@example.com\", subject: \"s\", body: \"b\" });\n";
    engine_dir(dir.path(), port, "", &[("mailer.rhai", mailer)]);
    let data = dir.path().join("data");
    let env = [("ENGINE_TEST_SECRET", SECRET)];
    let open_umask = |cmd: &mut std::process::Command| {
        use std::os::unix::process::CommandExt;
        // SAFETY: umask is async-signal-safe; it changes only the child's mask.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
    };
    let p = ServeProcess::start_with(dir.path(), port, &env, open_umask);
    let (body, _) = envelope(1);
    assert_eq!(post_blocking(&format!("{}/hooks/test", p.url), body), 200);
    let mail_dir = data.join("outbox-mail");
    // Wait for the finished `.eml` (it is written under a temporary name and renamed): a kill
    // in between left only the temporary file, and the check below found no mail (a CI flake).
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_dir(&mail_dir)
            .is_ok_and(|d| d
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "eml")))),
        "no .eml written"
    );
    drop(p);
    let o = engine_bin()
        .current_dir(dir.path())
        .args(["samples", "add"])
        .arg(format!("{FIXTURES}/envelope.user.session.start.json"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let entries = data_entries(&data);
    assert!(
        entries
            .iter()
            .any(|(p, _)| p.extension().is_some_and(|x| x == "eml"))
    );
    assert!(
        entries
            .iter()
            .any(|(p, _)| p.extension().is_some_and(|x| x == "json"))
    );
    for (path, is_dir) in &entries {
        let want = if *is_dir { 0o700 } else { 0o600 };
        let got = mode_of(path);
        assert_eq!(got, want, "fresh {} is {got:04o}", path.display());
    }

    // As an older engine left it: everything readable by all; plus a file that is not ours.
    for (path, is_dir) in &entries {
        set_mode(path, if *is_dir { 0o755 } else { 0o644 });
    }
    let foreign = data.join("notes.txt");
    std::fs::write(&foreign, "not the engine's").unwrap();
    set_mode(&foreign, 0o644);
    let mut p = ServeProcess::start(dir.path(), port, &env);
    p.signal(libc::SIGTERM);
    let (status, _, err) = p.wait_output();
    assert!(status.success(), "{err}");
    for (path, is_dir) in &entries {
        let want = if *is_dir { 0o700 } else { 0o600 };
        let got = mode_of(path);
        assert_eq!(got, want, "{} is still {got:04o}", path.display());
    }
    assert_eq!(mode_of(&foreign), 0o644, "a file that is not the engine's");
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("made it private"))
        .collect();
    assert_eq!(said.len(), 1, "one log line: {err}");
    for what in [
        "data (0755 -> 0700)",
        "data/engine.redb (0644 -> 0600)",
        "data/admin-token (0644 -> 0600)",
        "data/outbox-mail (0755 -> 0700)",
        "data/samples (0755 -> 0700)",
        "count=7",
    ] {
        assert!(said[0].contains(what), "{what:?} not in {}", said[0]);
    }
    assert!(!said[0].contains("notes.txt"));

    // Nothing left to tighten: nothing said.
    let mut p = ServeProcess::start(dir.path(), port, &env);
    p.signal(libc::SIGTERM);
    let (status, _, err) = p.wait_output();
    assert!(status.success(), "{err}");
    assert!(!err.contains("made it private"), "{err}");
}

/// Inspection: one run whole (`runs ID`, with the source line of its error), one event whole
/// (`events show UUID`), the log's last line in the table, filters, `--failed` as "failed now"
/// (a fixed and replayed failure disappears) with exit 1 while it lists any, RFC 3339 times.
#[test]
fn runs_and_events_can_be_inspected_one_by_one() {
    let ok = "//! on: user.lifecycle.deactivate\nlog(`hello ${event.uuid}`);\nsend_email(#{ to: \"it@example.com\", subject: \"s\", body: \"b\" });\n";
    let typo = "//! on: user.lifecycle.deactivate\nlet a = 1;\nlog(event.actr.id);\n";
    let (dir, port) = engine_setup("", &[("ok.rhai", ok), ("typo.rhai", typo)]);
    let p = ServeProcess::start(dir.path(), port, &[("ENGINE_TEST_SECRET", SECRET)]);
    let event = event_variant("event.user.lifecycle.deactivate.json", "evt-inspect", None);
    let body = format!(r#"{{"eventId":"d-inspect","data":{{"events":[{event}]}}}}"#);
    assert_eq!(post_blocking(&format!("{}/hooks/test", p.url), body), 200);
    assert!(wait_until(Duration::from_secs(20), || {
        history_json(dir.path(), "runs")
            .iter()
            .filter(|r| r["status"] == "succeeded" || r["status"] == "failed")
            .count()
            == 2
    }));

    let o = run_engine(dir.path(), &["runs", "--failed", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "--failed lists one: exit 1");
    let failed: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["script"], "typo");
    let typo_id = failed[0]["id"].as_u64().unwrap();
    let only_ok = run_engine(dir.path(), &["runs", "--script", "ok", "--format", "json"]);
    let only_ok: Vec<serde_json::Value> = serde_json::from_slice(&only_ok.stdout).unwrap();
    assert_eq!(only_ok.len(), 1);
    assert_eq!(only_ok[0]["script"], "ok");
    let of_event = run_engine(
        dir.path(),
        &["runs", "--event", "evt-inspect", "--format", "json"],
    );
    let of_event: Vec<serde_json::Value> = serde_json::from_slice(&of_event.stdout).unwrap();
    assert_eq!(of_event.len(), 2);
    let table = stdout(&run_engine(dir.path(), &["runs"]));
    assert!(
        table.contains("LOG") && table.contains("hello evt-inspect"),
        "{table}"
    );

    let o = run_engine(dir.path(), &["runs", &typo_id.to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shown = stdout(&o);
    for want in [
        "typo.rhai:3:",
        "log(event.actr.id);",
        "^",
        "actions:",
        "engine events show evt-inspect",
    ] {
        assert!(shown.contains(want), "{want} missing from:\n{shown}");
    }
    let o = run_engine(dir.path(), &["runs", "999999"]);
    assert_eq!(o.status.code(), Some(1));

    let o = run_engine(dir.path(), &["events", "show", "evt-inspect"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shown = stdout(&o);
    assert!(
        shown.contains("\"eventType\": \"user.lifecycle.deactivate\""),
        "{shown}"
    );
    assert!(shown.contains("hook: test"), "{shown}");
    let o = run_engine(
        dir.path(),
        &["events", "show", "evt-inspect", "--format", "json"],
    );
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["payload"]["uuid"], "evt-inspect");
    assert_eq!(e["delivery_id"], "d-inspect");
    assert_eq!(
        run_engine(dir.path(), &["events", "show", "nope"])
            .status
            .code(),
        Some(1)
    );

    // Every time in JSON output is RFC 3339.
    assert!(wait_until(Duration::from_secs(10), || {
        history_json(dir.path(), "outbox")
            .first()
            .is_some_and(|m| m["status"] == "sent")
    }));
    let mail = &history_json(dir.path(), "outbox")[0];
    for key in ["queued", "sent"] {
        let t = mail[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: {mail}"));
        assert!(engine::util::parse_rfc3339_nanos(t).is_some(), "{key}: {t}");
    }

    // Fixed and replayed: nothing is failed now.
    std::fs::write(
        dir.path().join("scripts/typo.rhai"),
        typo.replace("actr", "actor"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let o = run_engine(dir.path(), &["replay", "--failed"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = run_engine(dir.path(), &["runs", "--failed", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o).trim(), "[]");
    drop(p);
}

/// Regression: `serve` generated (and printed) a new hook secret, then failed on a missing
/// environment variable. The whole configuration is checked first.
#[test]
fn serve_checks_every_variable_before_generating_a_secret() {
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("engine.toml"),
        "listen = \"127.0.0.1:1\"\n\n[smtp]\nurl_env = \"ENGINE_TEST_UNSET_SMTP\"\nfrom = \"a@example.com\"\n",
    )
    .unwrap();
    let o = run_engine(dir.path(), &["serve"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ENGINE_TEST_UNSET_SMTP"),
        "{}",
        stderr(&o)
    );
    assert!(
        !stdout(&o).contains("Authentication secret"),
        "{}",
        stdout(&o)
    );
    assert!(!dir.path().join("data/hook-secret-default").exists());
}

/// `engine send FILE` without `--url` targets this engine's `default` hook with its secret.
#[test]
fn send_without_url_posts_to_the_local_default_hook() {
    let dir = temp_dir();
    let port = free_port();
    std::fs::write(
        dir.path().join("engine.toml"),
        format!("listen = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let p = ServeProcess::start(dir.path(), port, &[]);
    let payload = format!("{FIXTURES}/event.user.lifecycle.deactivate.json");
    let o = run_engine(dir.path(), &["send", &payload]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("delivery POST: 200 (accepted)"), "{out}");
    let secret = std::fs::read_to_string(dir.path().join("data/hook-secret-default")).unwrap();
    assert!(!out.contains(secret.trim()), "the secret is not printed");
    let rows = history_json(dir.path(), "events");
    assert_eq!(rows.len(), 1);
    drop(p);
}

/// `engine definitions` writes the editor definition files: the host functions, the `okta`
/// module's functions with their doc comments, and the `event`/`delivery` maps; every line is a
/// declaration of the definition-file syntax (rhai has no parser for it, so the lines are checked).
#[test]
fn definitions_writes_the_editor_files() {
    let dir = temp_dir();
    engine_dir(dir.path(), free_port(), "", &[]);
    let o = run_engine(dir.path(), &["definitions"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("Rhai.toml"), "{}", stdout(&o));
    // Default: `.rhai-definitions` next to the scripts directory.
    let defs = dir.path().join(".rhai-definitions");
    let read = |name: &str| {
        std::fs::read_to_string(defs.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let host = read("engine.d.rhai");
    for line in [
        "fn send_email(mail: map) -> String;",
        "fn lookup_user(key: String) -> ?;",
        "fn log(msg: String) -> ();",
        "/// Queues a mail, sent after the run succeeds",
    ] {
        assert!(host.contains(line), "{line}:\n{host}");
    }
    let okta = read("okta.d.rhai");
    for line in [
        "module okta;",
        "/// Every target whose `type` is `kind`, in payload order (`[]` when none).\nfn targets(event: ?, kind: ?) -> ?;",
        "fn target_user(event: ?) -> ?;",
        "fn actor_email(event: ?) -> ?;",
        "fn succeeded(event: ?) -> ?;",
        "fn describe(entity: ?) -> String;",
        "fn user_name(user: ?) -> ?;",
    ] {
        assert!(okta.contains(line), "{line}:\n{okta}");
    }
    let scope = read("scope.d.rhai");
    for line in [
        "const event: Map;",
        "const delivery: Map;",
        "/// - `event.target`: array of maps",
        "///     - `event.client.geographicalContext.geolocation`: Map",
        "/// - `delivery.hook`: String, e.g. `\"default\"`",
    ] {
        assert!(scope.contains(line), "{line}:\n{scope}");
    }
    assert!(read("rhai-std.d.rhai").contains("fn to_lower("));
    for entry in std::fs::read_dir(&defs).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("module "), "{}", path.display());
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            let decl = ["module ", "fn ", "op ", "const ", "let "]
                .iter()
                .any(|k| line.starts_with(k));
            assert!(
                decl && line.ends_with(';') && !line.contains("-> ;"),
                "{}: {line}",
                path.display()
            );
        }
    }

    // An explicit directory; a stdlib module that does not compile is an error naming it.
    let o = run_engine(dir.path(), &["definitions", "out/defs"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(dir.path().join("out/defs/okta.d.rhai").is_file());
    std::fs::write(dir.path().join("stdlib/broken.rhai"), "fn f( {").unwrap();
    let o = run_engine(dir.path(), &["definitions"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("broken.rhai"), "{}", stderr(&o));
}
