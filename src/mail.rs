//! Outgoing mail: building RFC 5322 messages from recorded `send_email` actions and delivering
//! them over SMTP (lettre, pooled, TLS as the URL says) or as `.eml` files.
//!
//! # The pieces
//!
//! - [`OutgoingMail`]: one mail as the outbox holds it; its `id` is stable (derived from the
//!   event, script and place in the run) and becomes the `Message-ID` `<id@engine>`.
//! - [`build_message`]: validates every address with lettre's `Mailbox` and builds the message
//!   (text body, or `multipart/alternative` with an HTML part; non-ASCII subjects are RFC 2047
//!   encoded by lettre; header injection is rejected by lettre's builder).
//! - [`Transport`]: SMTP ([`Transport::from_url`]) or files ([`Transport::files`]);
//!   [`Transport::new`] picks one from the optional `[smtp]` URL.
//! - [`send`]: delivers one mail and classifies failures as [`MailError::Transient`] (retry with
//!   [`backoff`] for up to [`MAX_RETRY_WINDOW`]) or [`MailError::Permanent`] (fail the mail).
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
//! `host:port` only, and any text that a server echoes is scrubbed of the password.
//!
//! # Files
//!
//! Without `[smtp]` each mail is written to `<data_dir>/outbox-mail/<id>.eml` (the `Bcc:` header
//! is kept there so the file shows every recipient). The file is written to a temporary name,
//! fsynced and renamed, so a crash never leaves half a file; a second send of the same id leaves
//! the existing file as it is.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::Secret;

/// How long lettre waits for any one SMTP read or write. Servers answer commands in well under a
/// second; 30 s tolerates a slow relay doing DNS/antispam checks on DATA while a dead one is
/// noticed quickly (lettre's own default is 60 s).
pub const SMTP_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for one whole send (connect, TLS, AUTH, envelope, DATA). Guards against a server
/// that trickles bytes and so never trips the per-command timeout.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(120);
/// Pooled connections kept open. The outbox sends a handful of mails concurrently; more than this
/// open at once would look like abuse to most relays.
pub const POOL_MAX_SIZE: u32 = 10;
/// A pooled connection unused this long is closed; most servers drop idle clients after 60–300 s.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long transient failures are retried before a mail is given up (SPEC: 24 h).
pub const MAX_RETRY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// First retry delay: short enough that a blip (server restart) costs little delay.
pub const BACKOFF_BASE: Duration = Duration::from_secs(30);
/// Longest delay between two attempts: an hour keeps a day-long outage at ~30 attempts.
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

/// One mail to deliver, as the outbox stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    /// Stable mail id (letters, digits, `-`, `_`, `.`); the `Message-ID` is `<id@engine>`.
    pub id: String,
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub reply_to: Option<String>,
    pub subject: String,
    pub body: String,
    pub html: Option<String>,
}

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
    /// A pooled SMTP transport built from the `[smtp]` URL.
    Smtp(SmtpTransport),
    /// `.eml` files in this directory (created on first send).
    Files(PathBuf),
}

/// The SMTP side of [`Transport`]: lettre's pooled transport plus what is needed to describe it
/// and to keep the password out of error text.
pub struct SmtpTransport {
    inner: AsyncSmtpTransport<Tokio1Executor>,
    /// `host:port` for messages.
    server: String,
    tls: TlsMode,
    user: Option<String>,
    /// Strings never to show (the password, raw and percent-encoded).
    redact: Vec<String>,
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
                &if self.redact.is_empty() {
                    "none"
                } else {
                    "***"
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
    /// never contain the URL (it holds the password). Must run inside a tokio runtime.
    pub fn from_url(url: &Secret) -> Result<Transport, MailError> {
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
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(MailError::Permanent(
                "the SMTP transport must be created inside the tokio runtime".to_string(),
            ));
        }

        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .timeout(Some(SMTP_COMMAND_TIMEOUT))
            .pool_config(
                PoolConfig::new()
                    .max_size(POOL_MAX_SIZE)
                    .idle_timeout(POOL_IDLE_TIMEOUT),
            );
        let tls_params = || {
            TlsParameters::new(host.clone())
                .map_err(|e| invalid(&format!("TLS setup for {host}: {e}")))
        };
        builder = match tls {
            TlsMode::Wrapper => builder.tls(Tls::Wrapper(tls_params()?)),
            TlsMode::Required => builder.tls(Tls::Required(tls_params()?)),
            TlsMode::Opportunistic => builder.tls(Tls::Opportunistic(tls_params()?)),
            TlsMode::None => builder.tls(Tls::None),
        };
        let helo = parsed.path().trim_matches('/');
        if !helo.is_empty() {
            builder = builder.hello_name(ClientId::Domain(helo.to_string()));
        }
        let mut redact = Vec::new();
        if let Some(p) = &password {
            builder = builder.credentials(Credentials::new(
                user.clone().unwrap_or_default(),
                p.clone(),
            ));
            if let Some(raw) = parsed.password() {
                redact.push(raw.to_string());
            }
            redact.push(p.clone());
            redact.retain(|s| !s.is_empty());
            redact.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
        let server = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Transport::Smtp(SmtpTransport {
            inner: builder.build(),
            server,
            tls,
            user,
            redact,
        }))
    }

    /// Closes pooled connections (QUIT is not awaited per connection; they are aborted). Call at
    /// shutdown; sends after this fail as transient.
    pub async fn shutdown(&self) {
        if let Transport::Smtp(s) = self {
            s.inner.shutdown().await;
        }
    }
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

fn mailbox(what: &str, addr: &str) -> Result<Mailbox, MailError> {
    addr.trim()
        .parse::<Mailbox>()
        .map_err(|e| MailError::Permanent(format!("invalid `{what}` address {addr:?}: {e}")))
}

/// Builds the message for `mail` (see the module docs). Invalid addresses or ids are
/// [`MailError::Permanent`] naming the field and the address.
pub fn build_message(mail: &OutgoingMail) -> Result<Message, MailError> {
    build(mail, false)
}

fn build(mail: &OutgoingMail, keep_bcc: bool) -> Result<Message, MailError> {
    check_id(&mail.id)?;
    if mail.to.is_empty() && mail.cc.is_empty() && mail.bcc.is_empty() {
        return Err(MailError::Permanent(format!(
            "mail {} has no recipients",
            mail.id
        )));
    }
    let mut b = Message::builder()
        .from(mailbox("from", &mail.from)?)
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
pub async fn send(transport: &Transport, mail: &OutgoingMail) -> Result<SendReceipt, MailError> {
    let message_id = format!("<{}@{MESSAGE_ID_DOMAIN}>", mail.id);
    match transport {
        Transport::Smtp(smtp) => {
            let message = build_message(mail)?;
            let result = tokio::time::timeout(SEND_TIMEOUT, smtp.inner.send(message)).await;
            match result {
                Err(_) => Err(MailError::Transient(format!(
                    "SMTP {}: no answer within {} s",
                    smtp.server,
                    SEND_TIMEOUT.as_secs()
                ))),
                Ok(Ok(response)) => {
                    let text: Vec<&str> = response.message().collect();
                    Ok(SendReceipt {
                        message_id,
                        detail: smtp.scrub(&format!("{} {}", response.code(), text.join(" "))),
                    })
                }
                Ok(Err(e)) => Err(smtp.classify(&e)),
            }
        }
        Transport::Files(dir) => {
            let message = build(mail, true)?;
            let dir = dir.clone();
            let id = mail.id.clone();
            let written = tokio::task::spawn_blocking(move || write_eml(&dir, &id, &message))
                .await
                .map_err(|e| MailError::Transient(format!("mail file writer failed: {e}")))??;
            Ok(SendReceipt {
                message_id,
                detail: written,
            })
        }
    }
}

impl SmtpTransport {
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.redact {
            out = out.replace(s.as_str(), "***");
        }
        out
    }

    fn classify(&self, e: &lettre::transport::smtp::Error) -> MailError {
        let text = self.scrub(&format!("SMTP {}: {e}", self.server));
        if e.is_permanent() || e.is_client() {
            MailError::Permanent(text)
        } else {
            MailError::Transient(text)
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
    std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
    let tmp = dir.join(format!(".{id}.eml.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
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

/// Delay before retry number `attempt` (0 = first retry): [`BACKOFF_BASE`] doubled per attempt,
/// capped at [`BACKOFF_CAP`], with "equal jitter" (between half and all of that) so mails that
/// failed together do not retry in lockstep.
pub fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(attempt.min(31)))
        .min(BACKOFF_CAP);
    let half = exp / 2;
    let millis = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    let jitter = match getrandom::u64() {
        Ok(r) if millis > 0 => r % (millis + 1),
        _ => 0,
    };
    half + Duration::from_millis(jitter)
}
