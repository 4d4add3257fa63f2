//! A real SMTP server for the mail tests and benchmarks, in-process: the `mailin` crate's SMTP
//! state machine driven by a tokio loop on a thread of its own, TLS by rustls (ring) with a
//! throw-away certificate made by `rcgen`, and each accepted message parsed by `mail-parser`.
//!
//! `SmtpServer::start(&["--auth", "bob:pw"])` listens on a free loopback port before it returns;
//! `stop()` (or dropping it) closes the listener and every connection at once. The flags:
//!
//! - `--reject-5xx`: `550` to every `RCPT TO`. `--reject-4xx`: `451` at the end of `DATA`.
//! - `--delay-ms N`: waits N ms before taking the message at the end of `DATA` (and answering).
//! - `--auth USER:PASS`: requires AUTH PLAIN or LOGIN with these credentials, allowed without TLS.
//! - `--starttls`: offers STARTTLS; `--implicit-tls`: TLS from the first byte (smtps). Both with a
//!   self-signed certificate for `127.0.0.1`, which clients that check certificates refuse.
//! - `--no-store`: accepts and keeps nothing (benchmarks).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::config::Secret;
use mail_parser::{Address, MessageParser, MimeHeaders};
use mailin::{Action, AuthMechanism, Handler, Response, SessionBuilder};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// The name the server gives in its greeting.
const HOSTNAME: &str = "smtp.test";
/// The longest line (command or message line) read before the connection is dropped: far above
/// what SMTP allows (1000 octets), so only a broken client meets it.
const MAX_LINE: u64 = 1 << 20;
/// The answer to `DATA`: once it is sent, lines are message content until a lone `.`.
const START_DATA: u16 = 354;

/// What `start` was asked for.
#[derive(Clone, Default)]
struct Options {
    reject_5xx: bool,
    reject_4xx: bool,
    delay: Duration,
    auth: Option<(String, String)>,
    starttls: bool,
    implicit_tls: bool,
    no_store: bool,
}

impl Options {
    fn parse(args: &[&str]) -> Options {
        let mut o = Options::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || {
                *args
                    .next()
                    .unwrap_or_else(|| panic!("SmtpServer: {arg} needs a value"))
            };
            match *arg {
                "--reject-5xx" => o.reject_5xx = true,
                "--reject-4xx" => o.reject_4xx = true,
                "--delay-ms" => {
                    let ms = value();
                    let ms = ms
                        .parse()
                        .unwrap_or_else(|_| panic!("SmtpServer: --delay-ms {ms}"));
                    o.delay = Duration::from_millis(ms);
                }
                "--auth" => {
                    let pair = value();
                    let (user, pass) = pair
                        .split_once(':')
                        .unwrap_or_else(|| panic!("SmtpServer: --auth USER:PASS, got {pair}"));
                    o.auth = Some((user.to_string(), pass.to_string()));
                }
                "--starttls" => o.starttls = true,
                "--implicit-tls" => o.implicit_tls = true,
                "--no-store" => o.no_store = true,
                other => panic!("SmtpServer: unknown flag {other}"),
            }
        }
        o
    }
}

/// One accepted message: its summary and its bytes as received.
struct Stored {
    summary: serde_json::Value,
    raw: Vec<u8>,
}

/// What the connections share with the test.
struct Shared {
    options: Options,
    mail: Mutex<Mailbox>,
}

#[derive(Default)]
struct Mailbox {
    /// Messages accepted so far (also counted under `--no-store`).
    accepted: u64,
    stored: Vec<Stored>,
}

/// The SMTP server, running until stopped or dropped.
pub struct SmtpServer {
    pub port: u16,
    shared: Arc<Shared>,
    /// The certificate TLS is offered with (`--starttls`, `--implicit-tls`).
    certificate: Option<CertificateDer<'static>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SmtpServer {
    /// Starts on a free loopback port; it accepts connections once this returns.
    pub fn start(args: &[&str]) -> SmtpServer {
        SmtpServer::start_on(0, args)
    }

    /// Starts on `127.0.0.1:port` (`0`: any free port).
    pub fn start_on(port: u16, args: &[&str]) -> SmtpServer {
        let options = Options::parse(args);
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .unwrap_or_else(|e| panic!("SmtpServer: cannot listen on 127.0.0.1:{port}: {e}"));
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("local address").port();
        let (tls, certificate) = if options.starttls || options.implicit_tls {
            let (acceptor, cert) = tls_acceptor();
            (Some(acceptor), Some(cert))
        } else {
            (None, None)
        };
        let shared = Arc::new(Shared {
            options,
            mail: Mutex::default(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("smtp-server-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("SmtpServer runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        _ = accept_loop(listener, for_thread, tls) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops every connection's task, which closes its socket.
                drop(rt);
            })
            .expect("SmtpServer thread");
        SmtpServer {
            port,
            shared,
            certificate,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Closes the listener and every open connection; the port is free when this returns.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("SmtpServer thread panicked");
        }
    }

    /// `smtp://{userinfo}127.0.0.1:port?tls=none` (`userinfo` is `""` or `"user:pass@"`).
    pub fn url(&self, userinfo: &str) -> Secret {
        Secret::new(format!("smtp://{userinfo}127.0.0.1:{}?tls=none", self.port))
    }

    /// The self-signed certificate TLS is offered with, for a client that is to trust it.
    pub fn certificate(&self) -> Option<&CertificateDer<'static>> {
        self.certificate.as_ref()
    }

    /// The summaries of the messages received so far, in order: envelope `mail_from` and
    /// `rcpt_tos`; decoded `subject`, `message_id`, `from`, `to`, `cc`, `bcc`, `reply_to`
    /// (`null` when absent), `content_type`, and the `text` and `html` parts (`null` when the
    /// message has none); `eml`, the name `raw` takes.
    pub fn received(&self) -> Vec<serde_json::Value> {
        let mail = self.shared.mail.lock().expect("mailbox");
        mail.stored.iter().map(|s| s.summary.clone()).collect()
    }

    /// Messages accepted so far (counted under `--no-store` too).
    pub fn accepted(&self) -> u64 {
        self.shared.mail.lock().expect("mailbox").accepted
    }

    /// The message of a summary exactly as received (`DATA`, dot-unstuffed, CRLF line ends).
    pub fn raw(&self, summary: &serde_json::Value) -> String {
        let name = summary["eml"].as_str().expect("eml name");
        let mail = self.shared.mail.lock().expect("mailbox");
        let s = mail
            .stored
            .iter()
            .find(|s| s.summary["eml"] == name)
            .unwrap_or_else(|| panic!("no message {name}"));
        String::from_utf8_lossy(&s.raw).into_owned()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Not `expect`: a panic while unwinding would abort the test binary.
            let _ = thread.join();
        }
    }
}

/// A TLS acceptor (rustls with ring, the provider the engine uses) for a fresh self-signed
/// certificate, and that certificate.
fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, CertificateDer<'static>) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("self-signed certificate");
    let cert = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .expect("TLS server config");
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), cert)
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut builder = SessionBuilder::new(HOSTNAME);
    if shared.options.starttls {
        builder.enable_start_tls();
    }
    if shared.options.auth.is_some() {
        builder
            .enable_auth(AuthMechanism::Plain)
            .enable_auth(AuthMechanism::Login)
            .insecure_enable_plaintext_auth();
    }
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (builder, shared, tls) = (builder.clone(), Arc::clone(&shared), tls.clone());
        tokio::spawn(async move {
            // A client that goes away or fails the TLS handshake just ends its connection.
            let _ = connection(stream, peer.ip(), builder, shared, tls).await;
        });
    }
}

/// How a run of commands ended.
enum Ended {
    Closed,
    /// `STARTTLS` was answered `220`: the TLS handshake comes next.
    StartTls,
}

async fn connection(
    stream: tokio::net::TcpStream,
    ip: IpAddr,
    builder: SessionBuilder,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    let delay = shared.options.delay;
    let implicit = shared.options.implicit_tls;
    let mut session = builder.build(ip, Message::new(shared));
    let greeting = session.greeting();
    if implicit {
        let acceptor = tls.expect("implicit TLS has an acceptor");
        let stream = acceptor.accept(stream).await?;
        session.tls_active();
        let mut io = BufReader::new(stream);
        write(&mut io, &greeting).await?;
        commands(&mut io, &mut session, delay).await?;
        return Ok(());
    }
    let mut io = BufReader::new(stream);
    write(&mut io, &greeting).await?;
    if let Ended::StartTls = commands(&mut io, &mut session, delay).await? {
        // A client that sent more after STARTTLS, before the handshake, is not served on.
        if !io.buffer().is_empty() {
            return Ok(());
        }
        let Some(acceptor) = tls else {
            return Ok(());
        };
        let stream = acceptor.accept(io.into_inner()).await?;
        session.tls_active();
        let mut io = BufReader::new(stream);
        commands(&mut io, &mut session, delay).await?;
    }
    Ok(())
}

/// Feeds the client's lines to the session and writes its answers, until the client leaves, the
/// session closes, or STARTTLS is accepted.
async fn commands<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    session: &mut mailin::Session<Message>,
    delay: Duration,
) -> std::io::Result<Ended> {
    let mut line = Vec::new();
    let mut in_data = false;
    loop {
        line.clear();
        let n = (&mut *io)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 || !line.ends_with(b"\n") {
            return Ok(Ended::Closed);
        }
        let data_end = in_data && line == b".\r\n";
        if data_end && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let res = session.process(&line);
        if data_end {
            in_data = false;
        }
        match res.action {
            Action::NoReply => {}
            Action::Reply => {
                write(io, &res).await?;
                in_data = res.code == START_DATA;
                // mailin stays in its DATA state after a refused end of data: this connection
                // cannot go on, so it ends here (as a server may after a refusal).
                if data_end && res.is_error {
                    return Ok(Ended::Closed);
                }
            }
            Action::Close => {
                write(io, &res).await?;
                return Ok(Ended::Closed);
            }
            Action::UpgradeTls => {
                write(io, &res).await?;
                return Ok(Ended::StartTls);
            }
        }
    }
}

async fn write<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    res: &Response,
) -> std::io::Result<()> {
    let bytes = res.buffer()?;
    let stream = io.get_mut();
    stream.write_all(&bytes).await?;
    stream.flush().await
}

/// One connection's mail transaction as `mailin` reports it.
struct Message {
    shared: Arc<Shared>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Message {
    fn new(shared: Arc<Shared>) -> Message {
        Message {
            shared,
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
        }
    }

    fn credentials_ok(&self, user: &str, password: &str) -> Response {
        match &self.shared.options.auth {
            Some((u, p)) if u == user && p == password => mailin::response::AUTH_OK,
            _ => mailin::response::INVALID_CREDENTIALS,
        }
    }
}

impl Handler for Message {
    fn rcpt(&mut self, to: &str) -> Response {
        if self.shared.options.reject_5xx {
            return Response::custom(
                550,
                format!(
                    "5.1.1 <{to}>: Recipient address rejected: User unknown in local recipient table"
                ),
            );
        }
        mailin::response::OK
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.from = from.to_string();
        self.to = to.to_vec();
        self.data.clear();
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let options = &self.shared.options;
        if options.reject_5xx {
            return Response::custom(
                550,
                "5.7.1 Message rejected as spam by content filter".into(),
            );
        }
        if options.reject_4xx {
            return Response::custom(
                451,
                "4.3.0 Mail server temporarily rejected message, try again later".into(),
            );
        }
        let raw = std::mem::take(&mut self.data);
        let mut mail = self.shared.mail.lock().expect("mailbox");
        mail.accepted += 1;
        let n = mail.accepted;
        if !options.no_store {
            let summary = summary(&self.from, &self.to, &format!("{n:06}.eml"), &raw);
            mail.stored.push(Stored { summary, raw });
        }
        Response::custom(250, format!("2.0.0 Ok: queued as {n:06}"))
    }

    fn auth_plain(&mut self, _authorization_id: &str, user: &str, password: &str) -> Response {
        self.credentials_ok(user, password)
    }

    fn auth_login(&mut self, user: &str, password: &str) -> Response {
        self.credentials_ok(user, password)
    }
}

/// A message's summary (see [`SmtpServer::received`]).
fn summary(from: &str, to: &[String], eml: &str, raw: &[u8]) -> serde_json::Value {
    let msg = MessageParser::default()
        .parse(raw)
        .unwrap_or_else(|| panic!("SmtpServer: unparsable message: {raw:?}"));
    let part = |kind: &str| {
        msg.parts
            .iter()
            .find(|p| mime(p) == kind)
            .and_then(|p| p.text_contents())
            .map(str::to_string)
    };
    serde_json::json!({
        "mail_from": from,
        "rcpt_tos": to,
        "eml": eml,
        "subject": msg.subject(),
        "message_id": msg.message_id().map(|id| format!("<{id}>")),
        "from": addresses(msg.from()),
        "to": addresses(msg.to()),
        "cc": addresses(msg.cc()),
        "bcc": addresses(msg.bcc()),
        "reply_to": addresses(msg.reply_to()),
        "content_type": mime(msg.root_part()),
        "text": part("text/plain"),
        "html": part("text/html"),
    })
}

/// An address header as `Name <a@b>, c@d`.
fn addresses(header: Option<&Address>) -> Option<String> {
    let list: Vec<String> = header?
        .iter()
        .map(|addr| {
            let email = addr.address().unwrap_or_default();
            match addr.name() {
                Some(name) => format!("{name} <{email}>"),
                None => email.to_string(),
            }
        })
        .collect();
    Some(list.join(", "))
}

/// A part's `type/subtype`, lower case (`text/plain` without a Content-Type, as RFC 2045 says).
fn mime(part: &mail_parser::MessagePart) -> String {
    match part.content_type() {
        Some(ct) => format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()).to_lowercase(),
        None => "text/plain".to_string(),
    }
}
