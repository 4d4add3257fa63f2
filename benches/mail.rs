//! Mails per second to the tests' in-process SMTP server (`tests/support/smtp_server.rs`,
//! `--no-store`):
//! the pooled transport (sequential and 8 in flight) vs one new connection per mail, and a
//! reference figure for one raw lettre connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::actions::mail::{self, Transport};
use engine::config::Secret;
use engine::script::Email;

/// The sender of every bench mail.
const FROM: &str = "automation@example.com";

#[path = "../tests/support/smtp_server.rs"]
#[allow(dead_code)] // the tests use the rest of it
mod smtp_server;

/// Mails per measurement: enough for a stable figure, a few seconds in all.
const MAILS: usize = 500;
/// Concurrent sends for the pooled-parallel figure (below the pool's 10 connections).
const IN_FLIGHT: usize = 8;

fn mail(i: usize) -> Email {
    Email {
        id: format!("bench-{i}"),
        position: 0,
        to: vec!["manager@example.com".into()],
        cc: vec!["hr@example.com".into()],
        bcc: vec![],
        reply_to: None,
        subject: format!("New hire #{i}: Zoë"),
        body: "Jane starts today. Her login is jane@example.com.\n".repeat(10),
        html: Some("<p>Jane starts <b>today</b>.</p>\n".repeat(10)),
        key: None,
        from: None,
    }
}

fn report(name: &str, n: usize, elapsed: Duration) {
    println!(
        "{name:<36} {n} mails in {:>7.3} s = {:>7.0} mails/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let server = smtp_server::SmtpServer::start(&["--no-store"]);
    let port = server.port;
    let url = Secret::new(format!("smtp://127.0.0.1:{port}?tls=none"));

    // Warm-up (first connection).
    let pooled = Arc::new(Transport::from_url(&url).expect("transport"));
    for i in 0..20 {
        mail::send(&pooled, FROM, &mail(i)).await.expect("warm-up");
    }

    let start = Instant::now();
    for i in 0..MAILS {
        mail::send(&pooled, FROM, &mail(i))
            .await
            .expect("pooled send");
    }
    report("pooled, sequential", MAILS, start.elapsed());

    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..IN_FLIGHT {
        let t = Arc::clone(&pooled);
        tasks.push(tokio::spawn(async move {
            for i in (w..MAILS).step_by(IN_FLIGHT) {
                mail::send(&t, FROM, &mail(i)).await.expect("pooled send");
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    report(
        &format!("pooled, {IN_FLIGHT} in flight"),
        MAILS,
        start.elapsed(),
    );
    pooled.shutdown().await;

    let start = Instant::now();
    for i in 0..MAILS {
        let single = Transport::from_url(&url).expect("transport");
        mail::send(&single, FROM, &mail(i)).await.expect("send");
        single.shutdown().await;
    }
    report(
        "one connection per mail, sequential",
        MAILS,
        start.elapsed(),
    );

    // Reference: one lettre connection on a TCP_NODELAY socket, no pool and no NOOP check.
    // (lettre's own pooled AsyncSmtpTransport leaves Nagle on and measured 22 mails/s here: it
    // writes the body and the final dot separately, and the second write waits for the ACK.)
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut conn = lettre::transport::smtp::client::AsyncSmtpConnection::connect_with_transport(
        Box::new(stream),
        &lettre::transport::smtp::extension::ClientId::Domain("bench".into()),
    )
    .await
    .expect("ehlo");
    let start = Instant::now();
    for i in 0..MAILS {
        let m = mail::build_message(FROM, &mail(i)).expect("build");
        conn.send(m.envelope(), &m.formatted()).await.expect("send");
    }
    report(
        "reference: one raw lettre connection",
        MAILS,
        start.elapsed(),
    );
    let _ = conn.quit().await;

    drop(server);
}
