//! Outgoing mail: building RFC 5322 messages from recorded `send_email` actions and delivering
//! them over SMTP (lettre, pooled, TLS as the URL says) or as `.eml` files.
//!
//! # The pieces
//!
//! - What is sent is the `Email` a run recorded, from its own `from` (one of `[smtp] from` and
//!   `allowed_from`, checked when the run recorded it) or else the configured sender (mails
//!   queued before `from` existed have none); the mail's `id` is
//!   stable (derived from the event, script and place in the run) and becomes the `Message-ID`
//!   `<id@engine>`.
//! - [`build_message`]: validates every address with lettre's `Mailbox` and builds the message
//!   (text body, or `multipart/alternative` with an HTML part; non-ASCII subjects are RFC 2047
//!   encoded by lettre; header injection is rejected by lettre's builder).
//! - [`Transport`]: SMTP ([`Transport::from_url`]) or files ([`Transport::files`]);
//!   [`Transport::new`] picks one from the optional `[smtp]` URL.
//! - [`send`]: delivers one mail and classifies failures as [`MailError::Transient`] (retry with
//!   backoff for up to [`super::ledger::MAX_RETRY_WINDOW`]) or [`MailError::Permanent`] (fail the mail).
//!
//! # SMTP URL
//!
//! `smtp://[user[:password]@]host[:port][/helo-name][?tls=required|opportunistic|none]` or
//! `smtps://[user[:password]@]host[:port][/helo-name]`. User and password are percent-decoded.
//!
//! | URL | TLS | default port |
//! |---|---|---|
//! | `smtps://…` | implicit TLS from the first byte | 465 |
//! | `smtp://…?tls=required` | STARTTLS, fail if the server does not offer it | 587 |
//! | `smtp://…?tls=opportunistic` | STARTTLS when offered, else plain text | 587 |
//! | `smtp://…?tls=none` | plain text | 25 |
//! | `smtp://…` (no `tls`) | `required` when the URL has a password (a password is never sent in clear unless `tls=none` says so), else `opportunistic` | as above |
//!
//! Certificates are checked against the Mozilla roots (webpki-roots) with the `ring` provider.
//!
//! # Connections
//!
//! lettre's own pooled transport leaves Nagle's algorithm on; as it writes the body and the
//! final `.` separately, every mail then waits for the server's delayed ACK (~40 ms on Linux):
//! 22 mails/s per connection instead of 1000+. So this module keeps its own small pool of
//! lettre `AsyncSmtpConnection`s on sockets with `TCP_NODELAY`: up to [`POOL_MAX_SIZE`] idle
//! connections are kept for [`POOL_IDLE_TIMEOUT`], each checked with `NOOP` before reuse; any
//! connection that saw an error is closed. Connecting (TCP, TLS, greeting, EHLO, STARTTLS, AUTH)
//! is bounded by [`SMTP_CONNECT_TIMEOUT`], one whole send by [`SEND_TIMEOUT`]. Concurrency is
//! the caller's: each concurrent [`send`] uses its own connection.
//!
//! A password is only sent over TLS, unless the URL says `tls=none`: with `tls=opportunistic`
//! and a server that offers no STARTTLS, sending fails (transient) rather than leak it.
//!
//! The password is never part of `Debug` output or of an error message: errors name the server as
//! `host:port` only, and any text that a server echoes is scrubbed of it — and of every other
//! secret — by `util::redact`, with which the URL and its password (as written and decoded) are
//! registered here.
//!
//! # Files
//!
//! Without `[smtp]` each mail is written to `<data_dir>/outbox-mail/<id>.eml` (the `Bcc:` header
//! is kept there so the file shows every recipient). The file is written to a temporary name,
//! fsynced and renamed, so a crash never leaves half a file; a second send of the same id leaves
//! the existing file as it is.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::Message;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Secret;
use crate::script::Email;
use crate::util::redact;

/// Connecting (DNS, TCP, TLS, greeting, EHLO, STARTTLS, AUTH) may take this long. Servers answer
/// in well under a second; 30 s tolerates a slow relay doing reverse-DNS/antispam checks on
/// connect, while a dead one is noticed within the same retry.
pub const SMTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for one whole send (connect or reuse, envelope, DATA and the final answer). Also
/// guards against a server that trickles bytes or never answers DATA.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(120);
/// The `NOOP` that checks a pooled connection before reuse; a live server answers at once.
pub const POOL_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// `QUIT` when closing a connection is a courtesy: never wait long for it.
const QUIT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept open. The outbox sends a handful of mails concurrently; more than this
/// open at once would look like abuse to most relays.
pub const POOL_MAX_SIZE: usize = 10;
/// An idle connection older than this is closed instead of reused; most servers drop idle
/// clients after 60–300 s.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest delay between two attempts (the first is `[smtp] retry_base_ms`): an hour keeps a
/// day-long outage at ~30 attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60 * 60);
/// The domain part of every `Message-ID`: `<id@engine>`.
pub const MESSAGE_ID_DOMAIN: &str = "engine";
/// The folder under the data dir that the file transport writes to without `[smtp]`.
pub const OUTBOX_MAIL_DIR: &str = "outbox-mail";
/// Longest mail id accepted: it becomes a file name and a header; mail ids are 32 hex chars.
const MAX_ID_LEN: usize = 128;
/// SMTP ports (RFC 5321 relay, RFC 6409 submission, RFC 8314 submissions).
const SMTP_PORT: u16 = 25;
const SUBMISSION_PORT: u16 = 587;
const SUBMISSIONS_PORT: u16 = 465;
/// AUTH mechanisms offered, in order (both need TLS unless `tls=none`).
const AUTH_MECHANISMS: &[Mechanism] = &[Mechanism::Plain, Mechanism::Login];

/// Why a mail was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// Worth retrying later: connection refused or reset, timeout, TLS trouble, a 4xx answer.
    #[error("{0}")]
    Transient(String),
    /// Retrying will not help: a 5xx answer (the server's text is included), an invalid address.
    #[error("{0}")]
    Permanent(String),
}

impl MailError {
    pub fn is_transient(&self) -> bool {
        matches!(self, MailError::Transient(_))
    }
}

/// What a successful send reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    /// The `Message-ID` header value, `<id@engine>`.
    pub message_id: String,
    /// SMTP: the server's final answer (e.g. `250 2.0.0 Ok: queued as 4F2A`). Files: the path,
    /// with "(already written)" when an earlier send of the same id had written it.
    pub detail: String,
}

/// Where mail goes.
pub enum Transport {
    /// Pooled SMTP connections built from the `[smtp]` URL.
    Smtp(Box<SmtpTransport>),
    /// `.eml` files in this directory (created on first send).
    Files(PathBuf),
}

/// The SMTP side of [`Transport`]: how to connect, and the idle connections.
pub struct SmtpTransport {
    host: String,
    port: u16,
    tls: TlsMode,
    /// For STARTTLS (lettre upgrades the connection with it).
    starttls: Option<TlsParameters>,
    /// For implicit TLS (`smtps://`).
    implicit_tls: Option<tokio_rustls::TlsConnector>,
    hello: ClientId,
    credentials: Option<Credentials>,
    /// `host:port` for messages.
    server: String,
    user: Option<String>,
    idle: Mutex<Vec<Parked>>,
}

struct Parked {
    conn: AsyncSmtpConnection,
    since: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Wrapper,
    Required,
    Opportunistic,
    None,
}

impl TlsMode {
    fn name(self) -> &'static str {
        match self {
            TlsMode::Wrapper => "implicit",
            TlsMode::Required => "required",
            TlsMode::Opportunistic => "opportunistic",
            TlsMode::None => "none",
        }
    }
}

impl fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpTransport")
            .field("server", &self.server)
            .field("tls", &self.tls.name())
            .field("user", &self.user)
            .field(
                "password",
                &if self.credentials.is_some() {
                    "***"
                } else {
                    "none"
                },
            )
            .finish()
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Smtp(s) => f.debug_tuple("Smtp").field(s).finish(),
            Transport::Files(dir) => f.debug_tuple("Files").field(dir).finish(),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Smtp(s) => write!(f, "SMTP {} (tls={})", s.server, s.tls.name()),
            Transport::Files(dir) => write!(f, ".eml files in {}", dir.display()),
        }
    }
}

impl Transport {
    /// SMTP when the `[smtp]` URL is given, else `.eml` files under `<data_dir>/outbox-mail/`.
    pub fn new(smtp_url: Option<&Secret>, data_dir: &Path) -> Result<Transport, MailError> {
        match smtp_url {
            Some(url) => Transport::from_url(url),
            None => Ok(Transport::files(data_dir.join(OUTBOX_MAIL_DIR))),
        }
    }

    /// The file transport writing `<id>.eml` files into `dir`.
    pub fn files(dir: impl Into<PathBuf>) -> Transport {
        Transport::Files(dir.into())
    }

    /// A pooled SMTP transport from an `smtp://` or `smtps://` URL (see the module docs). Errors
    /// never contain the URL (it holds the password). Nothing connects until the first send.
    pub fn from_url(url: &Secret) -> Result<Transport, MailError> {
        redact::register(url.expose());
        let invalid = |what: &str| {
            MailError::Permanent(format!(
                "invalid SMTP URL: {what} (expected smtp://user:password@host:port?tls=required|opportunistic|none or smtps://user:password@host:port)"
            ))
        };
        let parsed = url::Url::parse(url.expose()).map_err(|e| invalid(&e.to_string()))?;
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err(invalid("no host")),
        };
        let mut tls_param = None;
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "tls" => tls_param = Some(v.into_owned()),
                other => return Err(invalid(&format!("unknown parameter `{other}`"))),
            }
        }
        let password = match parsed.password() {
            Some(p) => Some(decode(p).ok_or_else(|| invalid("the password is not UTF-8"))?),
            None => None,
        };
        let user = match parsed.username() {
            "" => None,
            u => Some(decode(u).ok_or_else(|| invalid("the user name is not UTF-8"))?),
        };
        let tls = match (parsed.scheme(), tls_param.as_deref()) {
            ("smtps", None) => TlsMode::Wrapper,
            ("smtps", Some(_)) => return Err(invalid("smtps:// always uses TLS; drop `tls=`")),
            ("smtp", Some("required")) => TlsMode::Required,
            ("smtp", Some("opportunistic")) => TlsMode::Opportunistic,
            ("smtp", Some("none")) => TlsMode::None,
            ("smtp", None) if password.is_some() => TlsMode::Required,
            ("smtp", None) => TlsMode::Opportunistic,
            ("smtp", Some(other)) => {
                return Err(invalid(&format!(
                    "`tls={other}` is not one of required, opportunistic, none"
                )));
            }
            (scheme, _) => return Err(invalid(&format!("unknown scheme `{scheme}`"))),
        };
        let port = parsed.port().unwrap_or(match tls {
            TlsMode::Wrapper => SUBMISSIONS_PORT,
            TlsMode::Required | TlsMode::Opportunistic => SUBMISSION_PORT,
            TlsMode::None => SMTP_PORT,
        });
        let starttls = match tls {
            TlsMode::Required | TlsMode::Opportunistic => Some(
                TlsParameters::new(host.clone())
                    .map_err(|e| invalid(&format!("TLS setup for {host}: {e}")))?,
            ),
            TlsMode::Wrapper | TlsMode::None => None,
        };
        let implicit_tls = match tls {
            TlsMode::Wrapper => Some(implicit_tls_connector().map_err(|e| invalid(&e))?),
            _ => None,
        };
        let helo = parsed.path().trim_matches('/');
        let hello = if helo.is_empty() {
            ClientId::default()
        } else {
            ClientId::Domain(helo.to_string())
        };
        let credentials = password.as_ref().map(|p| {
            if let Some(raw) = parsed.password() {
                redact::register(raw);
            }
            redact::register(p);
            Credentials::new(user.clone().unwrap_or_default(), p.clone())
        });
        let server = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Transport::Smtp(Box::new(SmtpTransport {
            host,
            port,
            tls,
            starttls,
            implicit_tls,
            hello,
            credentials,
            server,
            user,
            idle: Mutex::new(Vec::new()),
        })))
    }

    /// Closes the idle connections (with `QUIT`). Call at shutdown.
    pub async fn shutdown(&self) {
        if let Transport::Smtp(s) = self {
            let parked: Vec<Parked> = std::mem::take(&mut *s.lock_idle());
            for p in parked {
                close(p.conn).await;
            }
        }
    }
}

/// rustls with the `ring` provider and the Mozilla roots, for `smtps://`.
fn implicit_tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// An implicit-TLS stream handed to lettre as its transport.
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl fmt::Debug for ImplicitTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ImplicitTls")
    }
}

impl AsyncRead for ImplicitTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// Sends `QUIT` (briefly) and drops the connection.
async fn close(mut conn: AsyncSmtpConnection) {
    let _ = tokio::time::timeout(QUIT_TIMEOUT, conn.quit()).await;
}

impl SmtpTransport {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Parked>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn scrub(&self, text: &str) -> String {
        redact::scrub(text).into_owned()
    }

    /// 5xx answers and mails lettre cannot send (e.g. non-ASCII addresses without SMTPUTF8) are
    /// permanent; everything else (4xx, network, TLS, bad responses) transient.
    fn classify(&self, e: &lettre::transport::smtp::Error) -> MailError {
        let text = self.scrub(&format!("SMTP {}: {e}", self.server));
        if e.is_permanent() || e.is_client() {
            MailError::Permanent(text)
        } else {
            MailError::Transient(text)
        }
    }

    fn transient(&self, what: impl fmt::Display) -> MailError {
        MailError::Transient(self.scrub(&format!("SMTP {}: {what}", self.server)))
    }

    /// An idle connection that still answers `NOOP`, or a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, MailError> {
        loop {
            let parked = self.lock_idle().pop();
            let Some(p) = parked else { break };
            if p.since.elapsed() >= POOL_IDLE_TIMEOUT {
                close(p.conn).await;
                continue;
            }
            let mut conn = p.conn;
            let alive = tokio::time::timeout(POOL_CHECK_TIMEOUT, conn.test_connected()).await;
            if alive == Ok(true) {
                return Ok(conn);
            }
        }
        match tokio::time::timeout(SMTP_CONNECT_TIMEOUT, self.connect()).await {
            Ok(r) => r,
            Err(_) => Err(self.transient(format_args!(
                "no connection within {} s",
                SMTP_CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// TCP (with `TCP_NODELAY`), TLS as configured, greeting and EHLO, STARTTLS, AUTH.
    async fn connect(&self) -> Result<AsyncSmtpConnection, MailError> {
        let addrs = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.transient(format_args!("cannot resolve the host: {e}")))?;
        let mut last_error = None;
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let tcp = match (tcp, last_error) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(self.transient(format_args!("cannot connect: {e}"))),
            (None, None) => return Err(self.transient("the host has no address")),
        };
        tcp.set_nodelay(true)
            .map_err(|e| self.transient(format_args!("cannot set TCP_NODELAY: {e}")))?;
        let stream: Box<dyn AsyncTokioStream> = match &self.implicit_tls {
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| self.transient(format_args!("TLS server name: {e}")))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| self.transient(format_args!("TLS handshake failed: {e}")))?;
                Box::new(ImplicitTls(tls))
            }
            None => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(|e| self.classify(&e))?;
        let mut encrypted = self.implicit_tls.is_some();
        if let Some(params) = &self.starttls {
            if conn.can_starttls() {
                conn.starttls(params.clone(), &self.hello)
                    .await
                    .map_err(|e| self.transient(format_args!("STARTTLS failed: {e}")))?;
                encrypted = true;
            } else if self.tls == TlsMode::Required {
                close(conn).await;
                return Err(self.transient(
                    "the server does not offer STARTTLS (tls=required; use tls=opportunistic or tls=none if that is expected)",
                ));
            }
        }
        if let Some(credentials) = &self.credentials {
            if !encrypted && self.tls != TlsMode::None {
                close(conn).await;
                return Err(self.transient(
                    "the server offers no STARTTLS; not sending the password in clear (tls=none allows it)",
                ));
            }
            conn.auth(AUTH_MECHANISMS, credentials)
                .await
                .map_err(|e| self.classify(&e))?;
        }
        Ok(conn)
    }

    /// Puts a healthy connection back (or closes it when the pool is full).
    async fn checkin(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        let overflow = {
            let mut idle = self.lock_idle();
            if idle.len() < POOL_MAX_SIZE {
                idle.push(Parked {
                    conn,
                    since: Instant::now(),
                });
                None
            } else {
                Some(conn)
            }
        };
        if let Some(conn) = overflow {
            close(conn).await;
        }
    }

    /// Sends one message on a pooled connection: `MAIL`, `RCPT`s and `DATA` as lettre's own
    /// `send` does them, then — once `gate` (if any) gives a permit — the content and its end,
    /// which is when the server accepts the mail. The permit is handed back with the answer, so
    /// the caller can hold it until the outcome is recorded.
    async fn send(
        &self,
        message: &Message,
        gate: Option<&AcceptGate>,
    ) -> Result<(String, Option<OwnedSemaphorePermit>), MailError> {
        let mut conn = self.checkout().await?;
        let body = message.formatted();
        if let Err(e) = begin(&mut conn, message.envelope(), &body).await {
            conn.abort().await;
            return Err(match e {
                Begin::Smtp(e) => self.classify(&e),
                Begin::Unsupported(what) => {
                    MailError::Permanent(format!("SMTP {}: {what}", self.server))
                }
            });
        }
        let permit = match gate {
            Some(g) => g.clone().acquire_owned().await.ok(),
            None => None,
        };
        match conn.message(&body).await {
            Ok(response) => {
                self.checkin(conn).await;
                let text: Vec<&str> = response.message().collect();
                let detail = self.scrub(&format!("{} {}", response.code(), text.join(" ")));
                Ok((detail, permit))
            }
            Err(e) => {
                conn.abort().await;
                Err(self.classify(&e))
            }
        }
    }
}

/// Why a mail could not be started.
enum Begin {
    Smtp(lettre::transport::smtp::Error),
    /// The mail needs an extension the server does not offer.
    Unsupported(&'static str),
}

impl From<lettre::transport::smtp::Error> for Begin {
    fn from(e: lettre::transport::smtp::Error) -> Begin {
        Begin::Smtp(e)
    }
}

/// `MAIL FROM` (with SMTPUTF8 / 8BITMIME where the addresses or content need them), one
/// `RCPT TO` per recipient, and `DATA`: what lettre's `AsyncSmtpConnection::send` does before the
/// content, with the same refusals when the server lacks an extension the mail needs.
async fn begin(
    conn: &mut AsyncSmtpConnection,
    envelope: &lettre::address::Envelope,
    body: &[u8],
) -> Result<(), Begin> {
    use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
    use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
    let mut options = Vec::new();
    let ascii = |a: &lettre::Address| {
        let s: &str = a.as_ref();
        s.is_ascii()
    };
    let non_ascii = envelope.from().is_some_and(|a| !ascii(a)) || !envelope.to().iter().all(ascii);
    if non_ascii {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(Begin::Unsupported(
                "the addresses are not ASCII, and the server does not offer SMTPUTF8",
            ));
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    if !body.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            return Err(Begin::Unsupported(
                "the message is not ASCII, and the server does not offer 8BITMIME",
            ));
        }
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    conn.command(Mail::new(envelope.from().cloned(), options))
        .await?;
    for to in envelope.to() {
        conn.command(Rcpt::new(to.clone(), vec![])).await?;
    }
    conn.command(Data).await?;
    Ok(())
}

fn decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Checks that a mail id is safe as a file name and inside a `Message-ID`.
fn check_id(id: &str) -> Result<(), MailError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(MailError::Permanent(format!(
            "invalid mail id {id:?}: use 1 to {MAX_ID_LEN} letters, digits, `-`, `_` or `.`"
        )))
    }
}

/// A stored mailbox string (`a@x`, `Name <a@x>`, `"Doe, Jane" <a@x>`) as lettre's `Mailbox`:
/// read with the script layer's own parser (the one `send_email` checked it with), so the
/// display name reaches lettre as a name, which lettre quotes or RFC 2047 encodes in the
/// header; anything that parser does not read (a `[smtp] from` written some other way) goes
/// to lettre's parser as before.
fn mailbox(what: &str, addr: &str) -> Result<Mailbox, MailError> {
    let invalid = |e: &dyn fmt::Display| {
        MailError::Permanent(format!("invalid `{what}` address {addr:?}: {e}"))
    };
    match crate::script::parse_mailbox(addr) {
        Ok(m) => {
            let address = m.address.parse().map_err(|e| invalid(&e))?;
            Ok(Mailbox::new(m.name, address))
        }
        Err(_) => addr.trim().parse::<Mailbox>().map_err(|e| invalid(&e)),
    }
}

/// Builds the message for `mail` (see the module docs), from the mail's own `from` (what the
/// script chose among the allowed senders) or else `from` (the configured From). Invalid
/// addresses or ids are [`MailError::Permanent`] naming the field and the address.
pub fn build_message(from: &str, mail: &Email) -> Result<Message, MailError> {
    build(from, mail, false)
}

fn build(from: &str, mail: &Email, keep_bcc: bool) -> Result<Message, MailError> {
    check_id(&mail.id)?;
    if mail.to.is_empty() && mail.cc.is_empty() && mail.bcc.is_empty() {
        return Err(MailError::Permanent(format!(
            "mail {} has no recipients",
            mail.id
        )));
    }
    let from = mail.from.as_deref().unwrap_or(from);
    let mut b = Message::builder()
        .from(mailbox("from", from)?)
        .subject(mail.subject.as_str())
        .message_id(Some(format!("<{}@{MESSAGE_ID_DOMAIN}>", mail.id)));
    for a in &mail.to {
        b = b.to(mailbox("to", a)?);
    }
    for a in &mail.cc {
        b = b.cc(mailbox("cc", a)?);
    }
    for a in &mail.bcc {
        b = b.bcc(mailbox("bcc", a)?);
    }
    if let Some(r) = &mail.reply_to {
        b = b.reply_to(mailbox("reply_to", r)?);
    }
    if keep_bcc {
        b = b.keep_bcc();
    }
    let built = match &mail.html {
        Some(html) => b.multipart(MultiPart::alternative_plain_html(
            mail.body.clone(),
            html.clone(),
        )),
        None => b.singlepart(SinglePart::plain(mail.body.clone())),
    };
    built.map_err(|e| MailError::Permanent(format!("cannot build mail {}: {e}", mail.id)))
}

/// Delivers `mail`. SMTP: 5xx answers and mails that cannot be built are `Permanent` (with the
/// server's text); everything else (refused connection, timeout, TLS failure, 4xx) is `Transient`.
/// Files: I/O errors are `Transient` (a full disk may clear).
pub async fn send(
    transport: &Transport,
    from: &str,
    mail: &Email,
) -> Result<SendReceipt, MailError> {
    send_gated(transport, from, mail, None)
        .await
        .map(|(r, _)| r)
}

/// Holds back the end of a mail's content (when the server accepts it) until its sender may
/// have one more mail accepted and not yet recorded: its permits bound how many mails a crash
/// can send twice.
pub type AcceptGate = Arc<Semaphore>;

/// [`send`], with the SMTP server's acceptance behind `gate`: the permit comes back with the
/// receipt, to be dropped once the outcome is recorded. (Files need no gate: a file written for
/// an id is never written again.)
pub async fn send_gated(
    transport: &Transport,
    from: &str,
    mail: &Email,
    gate: Option<&AcceptGate>,
) -> Result<(SendReceipt, Option<OwnedSemaphorePermit>), MailError> {
    let message_id = format!("<{}@{MESSAGE_ID_DOMAIN}>", mail.id);
    match transport {
        Transport::Smtp(smtp) => {
            let message = build_message(from, mail)?;
            match tokio::time::timeout(SEND_TIMEOUT, smtp.send(&message, gate)).await {
                Ok(sent) => {
                    let (detail, permit) = sent?;
                    Ok((SendReceipt { message_id, detail }, permit))
                }
                Err(_) => Err(smtp.transient(format_args!(
                    "no answer within {} s",
                    SEND_TIMEOUT.as_secs()
                ))),
            }
        }
        Transport::Files(dir) => {
            let message = build(from, mail, true)?;
            let dir = dir.clone();
            let id = mail.id.clone();
            let written = tokio::task::spawn_blocking(move || write_eml(&dir, &id, &message))
                .await
                .map_err(|e| MailError::Transient(format!("mail file writer failed: {e}")))??;
            Ok((
                SendReceipt {
                    message_id,
                    detail: written,
                },
                None,
            ))
        }
    }
}

/// Writes `<dir>/<id>.eml` atomically; an existing file for the id is kept as it is.
fn write_eml(dir: &Path, id: &str, message: &Message) -> Result<String, MailError> {
    let io = |what: &str, path: &Path, e: std::io::Error| {
        MailError::Transient(format!("{what} {}: {e}", path.display()))
    };
    let target = dir.join(format!("{id}.eml"));
    if target.exists() {
        return Ok(format!("{} (already written)", target.display()));
    }
    crate::util::private::create_dir(dir).map_err(|e| io("cannot create", dir, e))?;
    // Unique per process and call, so two writers of the same id never share a temp file.
    static TMP_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = TMP_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{id}.eml.{}-{seq}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        // Mail bodies are private like the rest of the data dir: 0600.
        let mut f = crate::util::private::create_file(&tmp)?;
        f.write_all(&message.formatted())?;
        f.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("cannot write", &tmp, e));
    }
    if let Err(e) = std::fs::rename(&tmp, &target) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("cannot rename into", &target, e));
    }
    // Make the rename itself durable; failure here only risks losing a file we can rewrite.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(target.display().to_string())
}
