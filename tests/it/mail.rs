//! Mail delivery against a real SMTP server (in-process, `tests/support/smtp_server.rs`) and the
//! `.eml` file transport.

use std::time::Duration;

use engine::actions::mail::{self, MailError, Transport};
use engine::config::Secret;
use engine::script::Email;

use crate::support::free_port;

#[path = "../support/smtp_server.rs"]
mod smtp_server;
pub use smtp_server::SmtpServer;

/// The sender of every test mail.
const FROM: &str = "Automation <automation@example.com>";

fn mail(id: &str) -> Email {
    Email {
        id: id.to_string(),
        position: 0,
        to: vec!["manager@example.com".to_string()],
        cc: vec![],
        bcc: vec![],
        reply_to: None,
        subject: "New hire".to_string(),
        body: "Jane starts today.".to_string(),
        html: None,
        key: None,
        from: None,
    }
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect();
    out.sort();
    out
}

fn crlf(s: &serde_json::Value) -> String {
    s.as_str().expect("string").replace("\r\n", "\n")
}

#[tokio::test]
async fn smtp_delivers_recipients_subject_parts_and_message_id() {
    let server = SmtpServer::start(&[]);
    let transport = Transport::from_url(&server.url("")).expect("transport");
    let m = Email {
        id: "0123456789abcdef0123456789abcdef".to_string(),
        to: vec![
            "manager@example.com".to_string(),
            "Zoë Ångström <zoe@example.com>".to_string(),
        ],
        cc: vec!["hr@example.com".to_string()],
        bcc: vec!["audit@example.com".to_string()],
        reply_to: Some("helpdesk@example.com".to_string()),
        subject: "Neue Mitarbeiterin: Zoë Ångström ✓ — 入社".to_string(),
        body: "Zoë starts today.\nLogin: zoe@example.com\n".to_string(),
        html: Some("<p>Zoë starts <b>today</b>.</p>\n".to_string()),
        ..mail("unused")
    };
    let receipt = mail::send(&transport, FROM, &m).await.expect("sent");
    assert_eq!(
        receipt.message_id,
        "<0123456789abcdef0123456789abcdef@engine>"
    );
    assert!(receipt.detail.starts_with("250"), "{}", receipt.detail);

    let got = server.received();
    assert_eq!(got.len(), 1);
    let g = &got[0];
    assert_eq!(g["mail_from"], "automation@example.com");
    assert_eq!(
        strings(&g["rcpt_tos"]),
        [
            "audit@example.com",
            "hr@example.com",
            "manager@example.com",
            "zoe@example.com"
        ]
    );
    assert_eq!(g["subject"], m.subject.as_str());
    assert_eq!(g["message_id"], "<0123456789abcdef0123456789abcdef@engine>");
    assert_eq!(g["cc"], "hr@example.com");
    assert_eq!(g["reply_to"], "helpdesk@example.com");
    assert!(
        g["to"]
            .as_str()
            .expect("to")
            .contains("Zoë Ångström <zoe@example.com>")
    );
    assert!(g["bcc"].is_null(), "Bcc must not be in the sent headers");
    assert_eq!(g["content_type"], "multipart/alternative");
    assert_eq!(crlf(&g["text"]), m.body);
    assert_eq!(crlf(&g["html"]), m.html.clone().expect("html"));

    let raw = server.raw(g);
    assert!(
        raw.contains("Message-ID: <0123456789abcdef0123456789abcdef@engine>"),
        "{raw}"
    );
    assert!(
        !raw.contains("audit@example.com"),
        "Bcc leaked into the message: {raw}"
    );
    assert!(
        raw.is_ascii(),
        "headers and bodies are encoded for 7-bit transport"
    );
    assert!(
        raw.contains("=?utf-8?b?"),
        "non-ASCII subject is RFC 2047 encoded: {raw}"
    );
}

#[tokio::test]
async fn smtp_text_only_pooled_and_opportunistic() {
    let server = SmtpServer::start(&["--delay-ms", "100"]);
    // No STARTTLS offered by the server: opportunistic falls back to plain text.
    let url = Secret::new(format!(
        "smtp://127.0.0.1:{}?tls=opportunistic",
        server.port
    ));
    let transport = Transport::from_url(&url).expect("transport");
    for i in 0..5 {
        mail::send(&transport, FROM, &mail(&format!("mail-{i}")))
            .await
            .expect("sent");
    }
    let got = server.received();
    assert_eq!(got.len(), 5);
    assert_eq!(got[0]["content_type"], "text/plain");
    assert!(got[0]["html"].is_null());
    assert_eq!(crlf(&got[0]["text"]).trim_end(), "Jane starts today.");
    let ids: Vec<&str> = got
        .iter()
        .map(|g| g["message_id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [
            "<mail-0@engine>",
            "<mail-1@engine>",
            "<mail-2@engine>",
            "<mail-3@engine>",
            "<mail-4@engine>"
        ]
    );
    transport.shutdown().await;
}

#[tokio::test]
async fn smtp_server_down_is_transient() {
    let port = free_port();
    let url = Secret::new(format!(
        "smtp://bob:hunter2-secret@127.0.0.1:{port}?tls=none"
    ));
    let transport = Transport::from_url(&url).expect("transport");
    let err = mail::send(&transport, FROM, &mail("down"))
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, MailError::Transient(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn smtp_5xx_is_permanent_with_server_text() {
    let server = SmtpServer::start(&["--reject-5xx"]);
    let transport = Transport::from_url(&server.url("")).expect("transport");
    let err = mail::send(&transport, FROM, &mail("rejected"))
        .await
        .expect_err("rejected");
    let MailError::Permanent(text) = &err else {
        panic!("expected permanent, got {err:?}");
    };
    assert!(text.contains("550"), "{text}");
    assert!(
        text.contains("User unknown in local recipient table"),
        "{text}"
    );
    assert!(server.received().is_empty());
    assert_eq!(server.accepted(), 0, "a rejected message is not counted");
}

#[tokio::test]
async fn smtp_4xx_is_transient() {
    let server = SmtpServer::start(&["--reject-4xx"]);
    let transport = Transport::from_url(&server.url("")).expect("transport");
    let err = mail::send(&transport, FROM, &mail("later"))
        .await
        .expect_err("tempfail");
    assert!(
        matches!(&err, MailError::Transient(t) if t.contains("451")),
        "{err:?}"
    );
}

#[tokio::test]
async fn smtp_password_never_in_errors_or_debug() {
    let server = SmtpServer::start(&["--auth", "bob:right-pass"]);
    // Right credentials: delivered (AUTH over plain text only because tls=none says so).
    let ok = Transport::from_url(&server.url("bob:right-pass@")).expect("transport");
    mail::send(&ok, FROM, &mail("authed"))
        .await
        .expect("sent with AUTH");
    assert_eq!(server.received().len(), 1);
    assert_eq!(server.accepted(), 1);

    let password = "Wr0ng-P%40ss-9d8f7";
    let bad = Transport::from_url(&server.url(&format!("bob:{password}@"))).expect("transport");
    let err = mail::send(&bad, FROM, &mail("bad-auth"))
        .await
        .expect_err("auth fails");
    assert!(matches!(err, MailError::Permanent(_)), "{err:?}");
    for shown in [
        err.to_string(),
        format!("{err:?}"),
        format!("{bad:?}"),
        format!("{bad}"),
    ] {
        assert!(!shown.contains("Wr0ng"), "password shown: {shown}");
    }
    assert!(err.to_string().contains("535"), "{err}");

    // A bad URL names the problem, never the URL.
    for url in [
        "smtp://bob:Wr0ng-secret@127.0.0.1:25?tls=sometimes",
        "imap://bob:Wr0ng-secret@127.0.0.1",
        "smtp://bob:Wr0ng-secret@",
        "not a url Wr0ng-secret",
    ] {
        let err = Transport::from_url(&Secret::new(url.into())).expect_err(url);
        assert!(matches!(err, MailError::Permanent(_)));
        assert!(!err.to_string().contains("Wr0ng"), "{err}");
    }
}

#[tokio::test]
async fn file_transport_writes_one_eml_per_id_idempotently() {
    let data = tempfile::tempdir().expect("temp dir");
    let transport = Transport::new(None, data.path()).expect("files");
    let dir = data.path().join("outbox-mail");
    let m = Email {
        bcc: vec!["audit@example.com".to_string()],
        subject: "Grüße".to_string(),
        ..mail("abc123")
    };
    let first = mail::send(&transport, FROM, &m).await.expect("written");
    assert_eq!(first.message_id, "<abc123@engine>");
    let path = dir.join("abc123.eml");
    let content = std::fs::read_to_string(&path).expect("eml exists");
    assert!(content.contains("Message-ID: <abc123@engine>"));
    assert!(
        content.contains("Bcc: audit@example.com"),
        "files keep Bcc: {content}"
    );
    assert!(content.contains("Subject: =?utf-8?"), "{content}");

    // Same id again (a retry or replay): the file is left as it was.
    let again = mail::send(
        &transport,
        FROM,
        &Email {
            body: "changed".into(),
            ..m.clone()
        },
    )
    .await
    .expect("idempotent");
    assert!(again.detail.contains("already written"), "{}", again.detail);
    assert_eq!(std::fs::read_to_string(&path).expect("eml"), content);

    mail::send(&transport, FROM, &mail("other-id"))
        .await
        .expect("written");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["abc123.eml", "other-id.eml"],
        "one file per id, no temp files left"
    );
}

#[test]
fn invalid_addresses_and_ids_are_permanent_and_named() {
    let bad_to = Email {
        to: vec!["not an address".into()],
        ..mail("x1")
    };
    let err = mail::build_message(FROM, &bad_to).expect_err("invalid");
    assert!(
        matches!(&err, MailError::Permanent(t) if t.contains("`to`") && t.contains("not an address")),
        "{err:?}"
    );

    let injected = Email {
        cc: vec!["a@example.com\r\nBcc: evil@example.com".into()],
        ..mail("x2")
    };
    assert!(matches!(
        mail::build_message(FROM, &injected),
        Err(MailError::Permanent(_))
    ));

    for id in ["", "../etc/passwd", ".hidden", "a b"] {
        let err = mail::build_message(FROM, &mail(id)).expect_err(id);
        assert!(matches!(err, MailError::Permanent(_)));
    }
    let nobody = Email {
        to: vec![],
        ..mail("x3")
    };
    assert!(matches!(
        mail::build_message(FROM, &nobody),
        Err(MailError::Permanent(_))
    ));

    let ok = mail::build_message(FROM, &mail("x4")).expect("valid");
    let text = String::from_utf8(ok.formatted()).expect("ascii");
    assert!(text.contains("Message-ID: <x4@engine>"));
}

#[test]
fn mail_retries_back_off_with_jitter_up_to_the_cap_for_a_day() {
    let backoff = engine::process::Backoff {
        base: Duration::from_millis(engine::config::DEFAULT_MAIL_RETRY_BASE_MS),
        cap: mail::BACKOFF_CAP,
        jitter: true,
    };
    let base = backoff.base;
    let first = backoff.delay(0);
    assert!(first >= base / 2 && first <= base, "{first:?}");
    let third = backoff.delay(2);
    assert!(third >= base * 2 && third <= base * 4, "{third:?}");
    for attempt in [10, 31, 1000, u32::MAX] {
        let d = backoff.delay(attempt);
        assert!(
            d >= mail::BACKOFF_CAP / 2 && d <= mail::BACKOFF_CAP,
            "{attempt}: {d:?}"
        );
    }
    let samples: std::collections::HashSet<Duration> = (0..20).map(|_| backoff.delay(5)).collect();
    assert!(samples.len() > 1, "jitter varies the delay");
    assert_eq!(
        engine::actions::ledger::MAX_RETRY_WINDOW,
        Duration::from_secs(24 * 3600)
    );
}

#[test]
fn smtp_url_parses_without_connecting_or_runtime() {
    let t =
        Transport::from_url(&Secret::new("smtp://bob:pw@mail.example.com".into())).expect("url");
    assert_eq!(t.to_string(), "SMTP mail.example.com:587 (tls=required)");
    let t = Transport::from_url(&Secret::new("smtps://mail.example.com".into())).expect("url");
    assert_eq!(t.to_string(), "SMTP mail.example.com:465 (tls=implicit)");
    let t = Transport::from_url(&Secret::new("smtp://relay.local?tls=none".into())).expect("url");
    assert_eq!(t.to_string(), "SMTP relay.local:25 (tls=none)");
    let t = Transport::from_url(&Secret::new("smtp://relay.local".into())).expect("url");
    assert_eq!(t.to_string(), "SMTP relay.local:587 (tls=opportunistic)");
}

#[tokio::test]
async fn smtp_tls_required_is_enforced() {
    // No STARTTLS offered: tls=required refuses to go on in clear.
    let plain = SmtpServer::start(&[]);
    let url = Secret::new(format!("smtp://127.0.0.1:{}?tls=required", plain.port));
    let err = mail::send(
        &Transport::from_url(&url).expect("url"),
        FROM,
        &mail("tls1"),
    )
    .await
    .expect_err("no STARTTLS");
    assert!(
        matches!(&err, MailError::Transient(t) if t.contains("STARTTLS")),
        "{err:?}"
    );
    // A password is never sent in clear unless tls=none says so.
    let url = Secret::new(format!(
        "smtp://bob:Wr0ng-pw@127.0.0.1:{}?tls=opportunistic",
        plain.port
    ));
    let err = mail::send(
        &Transport::from_url(&url).expect("url"),
        FROM,
        &mail("tls2"),
    )
    .await
    .expect_err("password in clear");
    assert!(
        matches!(&err, MailError::Transient(t) if t.contains("password") && !t.contains("Wr0ng")),
        "{err:?}"
    );
    assert!(plain.received().is_empty());

    // STARTTLS offered with a self-signed certificate: the handshake is attempted and the
    // certificate refused (webpki roots), so nothing is sent.
    let tls = SmtpServer::start(&["--starttls"]);
    let url = Secret::new(format!("smtp://127.0.0.1:{}?tls=required", tls.port));
    let err = mail::send(
        &Transport::from_url(&url).expect("url"),
        FROM,
        &mail("tls3"),
    )
    .await
    .expect_err("untrusted certificate");
    assert!(
        matches!(&err, MailError::Transient(t) if t.contains("STARTTLS failed")),
        "{err:?}"
    );
    assert!(tls.received().is_empty());

    // smtps:// speaks TLS from the first byte: against an implicit-TLS server the handshake
    // happens and the self-signed certificate is refused; against a plain server it fails too.
    let implicit = SmtpServer::start(&["--implicit-tls"]);
    let url = Secret::new(format!("smtps://127.0.0.1:{}", implicit.port));
    let err = mail::send(
        &Transport::from_url(&url).expect("url"),
        FROM,
        &mail("tls4"),
    )
    .await
    .expect_err("untrusted certificate");
    assert!(
        matches!(&err, MailError::Transient(t) if t.to_lowercase().contains("certificate")),
        "{err:?}"
    );
    assert!(implicit.received().is_empty());
    let url = Secret::new(format!("smtps://127.0.0.1:{}", plain.port));
    let err = mail::send(
        &Transport::from_url(&url).expect("url"),
        FROM,
        &mail("tls5"),
    )
    .await
    .expect_err("a plain server does not speak TLS");
    assert!(err.is_transient(), "{err:?}");
    assert!(plain.received().is_empty());
}

#[tokio::test]
async fn smtp_pool_survives_server_restart() {
    // A port from the tests' range: a port the kernel hands out could be taken by a client's
    // source port while the server is down (see `free_port`).
    let port = free_port();
    let mut server = SmtpServer::start_on(port, &[]);
    let transport = Transport::from_url(&server.url("")).expect("transport");
    mail::send(&transport, FROM, &mail("before"))
        .await
        .expect("sent");
    // The pooled connection dies with the server; a new server on the same port takes over.
    server.stop();
    let err = mail::send(&transport, FROM, &mail("while-down"))
        .await
        .expect_err("down");
    assert!(err.is_transient(), "{err:?}");
    let restarted = SmtpServer::start_on(port, &[]);
    mail::send(&transport, FROM, &mail("after"))
        .await
        .expect("sent after restart");
    assert_eq!(restarted.received().len(), 1);
    drop(server);
}

/// The test server's TLS works for a client that trusts its certificate, STARTTLS and implicit:
/// the refusals in `smtp_tls_required_is_enforced` are the engine refusing an untrusted
/// certificate, not a handshake that could never succeed.
#[tokio::test]
async fn test_server_speaks_tls_to_a_client_that_trusts_its_certificate() {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
    use lettre::transport::smtp::extension::ClientId;
    for (flag, implicit) in [("--starttls", false), ("--implicit-tls", true)] {
        let server = SmtpServer::start(&[flag, "--auth", "bob:pw"]);
        let cert = server
            .certificate()
            .expect("a TLS server has a certificate");
        let tls = TlsParameters::builder("127.0.0.1".into())
            .add_root_certificate(Certificate::from_der(cert.to_vec()).expect("DER"))
            .build_rustls()
            .expect("TLS parameters");
        let hello = ClientId::Domain("client.test".into());
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            ("127.0.0.1", server.port),
            Some(Duration::from_secs(10)),
            &hello,
            implicit.then(|| tls.clone()),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{flag}: connect: {e}"));
        if !implicit {
            assert!(conn.can_starttls(), "{flag}: STARTTLS offered");
            conn.starttls(tls, &hello)
                .await
                .unwrap_or_else(|e| panic!("{flag}: STARTTLS: {e}"));
        }
        assert!(conn.is_encrypted(), "{flag}");
        conn.auth(
            &[Mechanism::Plain],
            &Credentials::new("bob".into(), "pw".into()),
        )
        .await
        .unwrap_or_else(|e| panic!("{flag}: AUTH: {e}"));
        let m = mail::build_message(FROM, &mail(&format!("tls-{implicit}"))).expect("message");
        conn.send(m.envelope(), &m.formatted())
            .await
            .unwrap_or_else(|e| panic!("{flag}: send: {e}"));
        let got = server.received();
        assert_eq!(got.len(), 1, "{flag}");
        assert_eq!(got[0]["message_id"], format!("<tls-{implicit}@engine>"));
        let _ = conn.quit().await;
    }
}

/// `[smtp]` for the binary: the test server by `ENGINE_TEST_SMTP_URL`, the From with a display
/// name, one more allowed sender, and `extra` after it.
fn smtp_engine_config(extra: &str) -> String {
    format!(
        "\n[smtp]\nurl_env = \"ENGINE_TEST_SMTP_URL\"\nfrom = \"Automation <automation@example.com>\"\nallowed_from = [\"security-bot@example.com\"]\nretry_base_ms = 100\n{extra}"
    )
}

/// The mail with this subject among what the server received.
fn with_subject<'a>(got: &'a [serde_json::Value], subject: &str) -> &'a serde_json::Value {
    got.iter()
        .find(|m| m["subject"] == subject)
        .unwrap_or_else(|| panic!("no mail {subject:?} among {got:#?}"))
}

const ALLOWED_FROM: &str = r#"//! on: user.lifecycle.deactivate
send_email(#{
    to: ["Jane Doe <jane@example.com>", "Doe, John <john@example.com>", "Zoë Ångström <zoe@example.com>"],
    cc: event.actor,
    bcc: lookup_user("boss@example.com"),
    reply_to: "\"Help \\\"Desk\\\"\" <help@example.com>",
    from: "Security Bot <security-bot@example.com>",
    subject: "allowed from",
    body: "b",
});
send_email(#{ to: "ops@example.com", subject: "default from", body: "b" });
"#;
const DISALLOWED_FROM: &str = r#"//! on: user.lifecycle.deactivate
send_email(#{ to: "ops@example.com", subject: "before", body: "b" });
send_email(#{ to: "ops@example.com", from: "The CEO <ceo@example.com>", subject: "disallowed", body: "b" });
"#;
const TOO_MANY: &str = r#"//! on: user.lifecycle.deactivate
import "okta" as okta;
okta::suspend_user("jane@example.com");
for i in 0..5 {
    send_email(#{ to: "ops@example.com", subject: `too many ${i}`, body: "b" });
}
"#;

/// Scripts through the real binary and SMTP: a mail from an allowed sender arrives with that
/// From (envelope and header), one without `from` with the configured From; display names,
/// an actor map and a lookup_user map reach the headers (quoted and RFC 2047 encoded by
/// lettre); a disallowed `from` and an overrun of `max_actions` fail their runs at the call,
/// and a failed run sends nothing; `engine check` says the same of the overrun.
#[test]
fn from_display_names_maps_and_max_actions_through_the_binary() {
    use crate::support::*;
    let smtp = SmtpServer::start(&[]);
    let (dir, port) = engine_setup(
        &smtp_engine_config(
            "\n[directory]\nfile = \"directory.csv\"\n\n[limits]\nmax_actions = 3\n",
        ),
        &[
            ("allowed.rhai", ALLOWED_FROM),
            ("disallowed.rhai", DISALLOWED_FROM),
            ("too-many.rhai", TOO_MANY),
        ],
    );
    std::fs::write(
        dir.path().join("directory.csv"),
        "id,login,email,displayName\n00uboss,boss@example.com,boss@example.com,Big Boss\n",
    )
    .unwrap();
    let url = smtp.url("").expose().to_string();
    let env = [
        ("ENGINE_TEST_SECRET", SECRET),
        ("ENGINE_TEST_SMTP_URL", url.as_str()),
    ];
    let mut p = ServeProcess::start(dir.path(), port, &env);
    let event = event_variant("event.user.lifecycle.deactivate.json", "evt-mailx-1", None);
    assert_eq!(
        post_blocking(&format!("{}/hooks/test", p.url), wrap(&event)),
        200
    );
    let mut runs = Vec::new();
    let finished = wait_until(Duration::from_secs(30), || {
        runs = history_json(dir.path(), "runs");
        runs.len() == 3
            && runs
                .iter()
                .all(|r| r["status"] == "succeeded" || r["status"] == "failed")
    });
    assert!(finished, "runs did not finish: {runs:#?}");
    assert!(
        wait_until(Duration::from_secs(20), || smtp.received().len() >= 2),
        "the two mails of the successful run arrive"
    );
    let run = |script: &str| {
        runs.iter()
            .find(|r| r["script"] == script)
            .unwrap_or_else(|| panic!("no run of {script}: {runs:#?}"))
            .clone()
    };
    assert_eq!(run("allowed")["status"], "succeeded", "{runs:#?}");

    let denied = run("disallowed");
    assert_eq!(denied["status"], "failed");
    assert_eq!(denied["error"]["kind"], "script");
    assert_eq!(denied["error"]["line"], 3, "the error is at the call");
    let message = denied["error"]["message"].as_str().unwrap();
    for part in [
        "`from` \"ceo@example.com\" is not an allowed sender",
        "automation@example.com (the default From), security-bot@example.com",
        "[smtp] allowed_from",
    ] {
        assert!(message.contains(part), "{message}");
    }

    let over = run("too-many");
    assert_eq!(over["status"], "failed");
    assert_eq!(over["error"]["kind"], "limit");
    assert_eq!(over["error"]["line"], 5);
    let message = over["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "more than 3 actions (limits.max_actions): 2 email, 1 okta before this email action"
        ),
        "{message}"
    );

    // Let the executors run a moment more: only the successful run's mails ever go out.
    std::thread::sleep(Duration::from_millis(800));
    let got = smtp.received();
    assert_eq!(got.len(), 2, "failed runs send nothing: {got:#?}");
    let allowed = with_subject(&got, "allowed from");
    assert_eq!(allowed["mail_from"], "security-bot@example.com");
    assert_eq!(allowed["from"], "Security Bot <security-bot@example.com>");
    assert_eq!(
        allowed["to"],
        "Jane Doe <jane@example.com>, Doe, John <john@example.com>, Zoë Ångström <zoe@example.com>"
    );
    assert_eq!(allowed["cc"], "Okta Trainer <okta.trainer@okta.com>");
    assert_eq!(allowed["reply_to"], "Help \"Desk\" <help@example.com>");
    assert_eq!(
        strings(&allowed["rcpt_tos"]),
        [
            "boss@example.com",
            "jane@example.com",
            "john@example.com",
            "okta.trainer@okta.com",
            "zoe@example.com"
        ]
    );
    let raw = smtp.raw(allowed);
    assert!(raw.is_ascii(), "headers are 7-bit: {raw}");
    assert!(
        !raw.contains("Doe, John <john@example.com>"),
        "a name with a comma is quoted or encoded, never bare: {raw}"
    );
    assert!(
        raw.contains("=?utf-8?b?"),
        "a non-ASCII name is RFC 2047 encoded: {raw}"
    );
    assert!(!raw.contains("boss@example.com"), "Bcc stays out: {raw}");
    let default = with_subject(&got, "default from");
    assert_eq!(default["mail_from"], "automation@example.com");
    assert_eq!(default["from"], "Automation <automation@example.com>");
    p.signal(libc::SIGTERM);
    assert!(p.wait_output().0.success());

    // `engine check` dry-runs the captured sample and reports the overrun as clearly.
    let o = run_engine(dir.path(), &["check", "scripts/too-many.rhai"]);
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("limits.max_actions"), "{text}");
    assert!(text.contains("too-many.rhai:5"), "{text}");
    let o = run_engine(dir.path(), &["check", "scripts/allowed.rhai"]);
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        o.status.code(),
        Some(0),
        "the allowed From passes the dry run: {text}"
    );
    assert!(text.contains("security-bot@example.com"), "{text}");
}

/// A mail queued by an engine from before `from` and display names (its JSON has neither
/// `from` nor `key`) is still read and sent, from the configured From.
#[test]
fn an_old_queued_mail_without_the_new_fields_still_sends() {
    use crate::support::*;
    use engine::store::actions::{ActionStatus, QueuedAction, save};
    let smtp = SmtpServer::start(&[]);
    let (dir, port) = engine_setup(&smtp_engine_config(""), &[]);
    let id = "0123456789abcdef0123456789abcdef";
    let payload = serde_json::json!({
        "id": id,
        "position": 0,
        "to": ["manager@example.com"],
        "cc": [],
        "bcc": [],
        "reply_to": null,
        "subject": "queued before the upgrade",
        "body": "b",
        "html": null,
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = engine::store::Store::open(
        &dir.path().join("data"),
        engine::store::CommitMode::PerRequest,
    )
    .expect("store");
    let record = QueuedAction {
        id: id.to_string(),
        seq: 1,
        kind: engine::script::ActionKind::Email,
        run_id: 1,
        event_uuid: "evt-old".into(),
        script: "old".into(),
        payload,
        status: ActionStatus::Queued,
        attempts: 0,
        last_error: None,
        answer: None,
        queued_ms: engine::util::now_ms(),
        done_ms: None,
        next_attempt_ms: None,
    };
    // As an older engine left it: the record (its payload the JSON of that engine's `Email`)
    // and its place in the queue's order (the table `store::actions` keeps).
    rt.block_on(store.write(move |txn| {
        save(txn, &record)?;
        const ORDER: redb::TableDefinition<u64, &str> = redb::TableDefinition::new("actions_order");
        let mut order = txn.open_table(ORDER).expect("order table");
        order.insert(1, id).expect("order");
        Ok(())
    }))
    .expect("queued");
    store.close();

    let url = smtp.url("").expose().to_string();
    let env = [
        ("ENGINE_TEST_SECRET", SECRET),
        ("ENGINE_TEST_SMTP_URL", url.as_str()),
    ];
    let mut p = ServeProcess::start(dir.path(), port, &env);
    assert!(
        wait_until(Duration::from_secs(20), || !smtp.received().is_empty()),
        "the old mail is sent: {}\n{:#?}",
        p.log(),
        history_json(dir.path(), "actions")
    );
    let got = smtp.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["subject"], "queued before the upgrade");
    assert_eq!(got[0]["from"], "Automation <automation@example.com>");
    assert_eq!(got[0]["to"], "manager@example.com");
    assert_eq!(got[0]["message_id"], format!("<{id}@engine>"));
    let mut actions = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            actions = history_json(dir.path(), "actions");
            actions.first().is_some_and(|a| a["status"] == "done")
        }),
        "{actions:#?}"
    );
    p.signal(libc::SIGTERM);
    assert!(p.wait_output().0.success());
}

/// `build_message` uses the mail's own `from` when it has one, else the configured From; a
/// stored display name reaches the header as a name (quoted as needed), an unreadable stored
/// address fails the mail permanently, naming the field.
#[test]
fn build_message_takes_the_mails_from_and_stored_display_names() {
    let m = Email {
        to: vec!["\"Doe, John\" <john@example.com>".into()],
        from: Some("Security Bot <security-bot@example.com>".into()),
        ..mail("m1")
    };
    let text = String::from_utf8(mail::build_message(FROM, &m).expect("built").formatted())
        .expect("utf-8");
    assert!(
        text.contains("From: \"Security Bot\" <security-bot@example.com>")
            || text.contains("From: Security Bot <security-bot@example.com>"),
        "{text}"
    );
    // lettre writes a name with a special character as an RFC 2047 word (or quoted): never
    // bare, where its comma would split it into two recipients.
    assert!(
        text.contains("To: =?utf-8?b?RG9lLCBKb2hu?= <john@example.com>")
            || text.contains("To: \"Doe, John\" <john@example.com>"),
        "{text}"
    );
    let plain = mail::build_message(FROM, &mail("m2")).expect("built");
    let text = String::from_utf8(plain.formatted()).expect("utf-8");
    assert!(text.contains("automation@example.com"), "{text}");
    assert!(!text.contains("security-bot"), "{text}");
    let bad = Email {
        from: Some("Bot <not an address>".into()),
        ..mail("m3")
    };
    match mail::build_message(FROM, &bad) {
        Err(MailError::Permanent(e)) => assert!(e.contains("`from`"), "{e}"),
        other => panic!("expected a permanent error, got {other:?}"),
    }
}
