//! The command line: argument parsing (clap), dispatch, output formats and exit codes.
//!
//! Exit codes are stable: 0 success, 1 the command ran and found a failure (e.g. `send` got a
//! non-2xx answer), 2 usage or configuration error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use hyper::Method;
use serde_json::value::RawValue;

use crate::client;
use crate::config::Config;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
/// Rows shown by the history commands unless `--limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 50;

#[derive(Parser, Debug)]
#[command(
    name = "engine",
    version,
    about = "Receives Okta Event Hooks and runs your Rhai scripts on every event",
    long_about = "Receives Okta Event Hooks, stores every delivery durably before answering, and runs \
                  your Rhai scripts on every event.\n\nConfiguration: --config FILE, else ./engine.toml \
                  if present, else built-in defaults (listen 127.0.0.1:8080, data in ./data, one hook \
                  `default` with a generated secret).\n\nExit codes: 0 success, 1 failure found, 2 usage \
                  or configuration error."
)]
pub struct Cli {
    /// Configuration file (default: ./engine.toml if present, else built-in defaults)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the receiver: answers Okta's verification and stores deliveries durably
    Serve,
    /// Show stored events, newest first (works whether or not the server runs)
    Events {
        /// Show at most this many rows
        #[arg(long, default_value_t = DEFAULT_LIMIT)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Show quarantined bodies (authenticated requests that were not valid deliveries)
        #[arg(long)]
        quarantine: bool,
    },
    /// Show script runs, newest first (works whether or not the server runs)
    Runs {
        /// Only failed runs
        #[arg(long)]
        failed: bool,
        #[arg(long, default_value_t = DEFAULT_LIMIT)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Run the subscribed scripts again on a stored event (current script versions)
    #[command(group = clap::ArgGroup::new("what").required(true).args(["event_uuid", "failed"]))]
    Replay {
        /// The event's uuid (see `engine events`)
        event_uuid: Option<String>,
        /// Replay the latest failed run of every (event, script)
        #[arg(long)]
        failed: bool,
    },
    /// Dry-run one script on a payload: prints its log and the mail it would send; sends nothing
    Run {
        /// The script file
        script: PathBuf,
        /// An event-hook envelope or a single LogEvent
        payload: PathBuf,
        /// The hook id the payload is taken to come from (for `delivery.hook` and `hook:`)
        #[arg(long, default_value = crate::config::DEFAULT_HOOK_ID)]
        hook: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show the mail outbox, newest first: state, attempts, last error
    Outbox {
        /// Only mails that failed permanently
        #[arg(long)]
        failed: bool,
        #[arg(long, default_value_t = DEFAULT_LIMIT)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Lint scripts: compile, header, event paths against samples, dry runs (exit 0 clean, 1 findings, 2 usage)
    Check {
        /// Scripts to check (default: every script in scripts_dir)
        scripts: Vec<PathBuf>,
        /// Sample payloads (envelopes or LogEvents) to check against, besides captured ones
        #[arg(long, value_name = "DIR")]
        samples: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Fail on warnings too
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Every path a script can read, with its type and an example value
    Tokens {
        /// A payload to read the tokens from (default: the samples)
        payload: Option<PathBuf>,
        /// Only this event type (`*` patterns allowed)
        #[arg(long)]
        event_type: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The scripts and their state: hash, loaded at, last error (as the running server sees them)
    Scripts {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Captured and added sample events (for `tokens` and `check`)
    Samples {
        #[command(subcommand)]
        action: Option<SamplesAction>,
    },
    /// Do what Okta does: the verification GET, then the delivery POST of PAYLOAD
    Send {
        /// An event-hook envelope, or a single LogEvent (wrapped into an envelope)
        payload: PathBuf,
        /// The hook URL, e.g. http://127.0.0.1:8080/hooks/default
        #[arg(long)]
        url: String,
        /// A header to send, e.g. 'Authorization: s3cret' (repeatable)
        #[arg(long = "header", value_name = "'Name: value'")]
        headers: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SamplesAction {
    /// List the samples per hook and event type (the default)
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print the samples of one event type as JSON
    Show {
        /// The event type, e.g. user.lifecycle.create
        event_type: String,
    },
    /// Keep the events of a payload (envelope or LogEvent, e.g. from Okta's Preview) as samples
    Add { file: PathBuf },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    init_tracing();
    let config = match Config::discover(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return fail(
                EXIT_FAILURE,
                &format!("cannot start the async runtime: {e}"),
            );
        }
    };
    let code = runtime.block_on(dispatch(cli.command, config));
    ExitCode::from(code)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ENGINE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn fail(code: u8, e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(code)
}

fn report(code: u8, e: &dyn std::fmt::Display) -> u8 {
    eprintln!("error: {e}");
    code
}

async fn dispatch(command: Command, config: Config) -> u8 {
    match command {
        Command::Serve => {
            let mut out = std::io::stdout();
            match crate::serve::serve(&config, shutdown_signal(), &mut out).await {
                Ok(()) => EXIT_OK,
                Err(e) => report(EXIT_USAGE, &e),
            }
        }
        Command::Events {
            limit,
            format,
            quarantine,
        } => events(&config, limit, format, quarantine),
        Command::Send {
            payload,
            url,
            headers,
        } => send(&payload, &url, &headers).await,
        Command::Check {
            scripts,
            samples,
            format,
            deny_warnings,
        } => crate::commands::check(
            &config,
            &scripts,
            samples.as_deref(),
            format == Format::Json,
            deny_warnings,
        ),
        Command::Tokens {
            payload,
            event_type,
            format,
        } => crate::commands::tokens(
            &config,
            payload.as_deref(),
            event_type.as_deref(),
            format == Format::Json,
        ),
        Command::Scripts { format } => {
            crate::watch::scripts_command(&config, format == Format::Json)
        }
        Command::Samples { action } => match action.unwrap_or(SamplesAction::List {
            format: Format::Table,
        }) {
            SamplesAction::List { format } => {
                crate::commands::samples_list(&config, format == Format::Json)
            }
            SamplesAction::Show { event_type } => {
                crate::commands::samples_show(&config, &event_type)
            }
            SamplesAction::Add { file } => crate::commands::samples_add(&config, &file),
        },
        Command::Runs {
            failed,
            limit,
            format,
        } => crate::commands::runs(&config, failed, limit, format == Format::Json),
        Command::Outbox {
            failed,
            limit,
            format,
        } => crate::commands::outbox(&config, failed, limit, format == Format::Json),
        Command::Replay { event_uuid, failed } => {
            crate::commands::replay(&config, event_uuid.as_deref(), failed).await
        }
        Command::Run {
            script,
            payload,
            hook,
            format,
        } => {
            crate::commands::dry_run(&config, &script, &payload, &hook, format == Format::Json)
                .await
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
    tracing::info!("shutdown requested: finishing requests in flight");
}

fn events(config: &Config, limit: usize, format: Format, quarantine: bool) -> u8 {
    use crate::remote::{Query, read};
    let mut out = std::io::stdout().lock();
    if quarantine {
        let rows: Vec<crate::store::QuarantineRow> =
            match read(config, &Query::Quarantine { limit }) {
                Ok(r) => r.unwrap_or_default(),
                Err(e) => return report(EXIT_FAILURE, &e),
            };
        if format == Format::Json {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
        } else {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.seq.to_string(),
                        r.received.clone(),
                        r.hook.clone(),
                        r.bytes.to_string(),
                        r.reason.clone(),
                    ]
                })
                .collect();
            print_table(
                &mut out,
                &["SEQ", "RECEIVED", "HOOK", "BYTES", "REASON"],
                &table,
            );
        }
        return EXIT_OK;
    }
    let rows: Vec<crate::store::EventRow> = match read(config, &Query::Events { limit }) {
        Ok(r) => r.unwrap_or_default(),
        Err(e) => return report(EXIT_FAILURE, &e),
    };
    if format == Format::Json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.seq.to_string(),
                    r.received.clone(),
                    r.hook.clone(),
                    r.event_type.clone(),
                    r.uuid.clone(),
                    r.status.to_string(),
                ]
            })
            .collect();
        print_table(
            &mut out,
            &["SEQ", "RECEIVED", "HOOK", "EVENT TYPE", "UUID", "STATUS"],
            &table,
        );
    }
    EXIT_OK
}

/// Writes rows under a header, columns padded to their widest cell.
pub fn print_table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) {
    if rows.is_empty() {
        let _ = writeln!(out, "(none)");
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// Builds the body Okta would POST for a payload file: an envelope as it is, or a single
/// LogEvent wrapped into a fresh envelope.
pub fn delivery_body(text: &str) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("the payload is not valid JSON: {e}"))?;
    let obj = value
        .as_object()
        .ok_or("the payload must be a JSON object: an event-hook envelope or a single LogEvent")?;
    if obj.get("data").and_then(|d| d.get("events")).is_some() {
        return Ok(text.to_string());
    }
    if !obj.contains_key("eventType") && !obj.contains_key("uuid") {
        return Err(
            "the payload is neither an event-hook envelope (with data.events) nor a LogEvent (with eventType)"
                .into(),
        );
    }
    let raw: &RawValue = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let envelope = serde_json::json!({
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "source": "engine send",
        "eventId": crate::util::new_uuid(),
        "eventTime": crate::util::format_ms(crate::util::now_ms()),
        "contentType": "application/json",
        "data": { "events": [raw] },
    });
    Ok(envelope.to_string())
}

async fn send(payload: &Path, url: &str, headers: &[String]) -> u8 {
    let text = match std::fs::read_to_string(payload) {
        Ok(t) => t,
        Err(e) => {
            return report(
                EXIT_USAGE,
                &format!("cannot read {}: {e}", payload.display()),
            );
        }
    };
    let body = match delivery_body(&text) {
        Ok(b) => b,
        Err(e) => return report(EXIT_USAGE, &format!("{}: {e}", payload.display())),
    };
    let mut parsed = Vec::new();
    for h in headers {
        match client::parse_header(h) {
            Ok(p) => parsed.push(p),
            Err(e) => return report(EXIT_USAGE, &e),
        }
    }
    let challenge = format!("engine-send-{}", crate::util::new_uuid());
    let mut get_headers = parsed.clone();
    get_headers.push((
        crate::server::VERIFICATION_HEADER.to_string(),
        challenge.clone(),
    ));
    let mut ok = true;
    match client::request(Method::GET, url, &get_headers, Bytes::new()).await {
        Ok(a) => {
            let echoed = serde_json::from_slice::<serde_json::Value>(&a.body)
                .ok()
                .and_then(|v| {
                    v.get("verification")
                        .and_then(|c| c.as_str())
                        .map(|c| c == challenge)
                })
                .unwrap_or(false);
            let verdict = if a.status == 200 && echoed {
                "challenge echoed: Okta would verify this hook"
            } else {
                ok = false;
                "Okta would NOT verify this hook"
            };
            println!(
                "verification GET: {} ({verdict}) {}",
                a.status,
                a.text().trim()
            );
        }
        Err(e) => return report(EXIT_FAILURE, &format!("verification GET failed: {e}")),
    }
    match client::request(Method::POST, url, &parsed, Bytes::from(body)).await {
        Ok(a) => {
            let verdict = if (200..300).contains(&a.status) {
                "accepted"
            } else {
                ok = false;
                "refused"
            };
            let text = a.text();
            if text.trim().is_empty() {
                println!("delivery POST: {} ({verdict})", a.status);
            } else {
                println!("delivery POST: {} ({verdict}) {}", a.status, text.trim());
            }
        }
        Err(e) => return report(EXIT_FAILURE, &format!("delivery POST failed: {e}")),
    }
    if ok { EXIT_OK } else { EXIT_FAILURE }
}
