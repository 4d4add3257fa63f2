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
