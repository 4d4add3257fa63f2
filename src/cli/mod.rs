//! The command line: argument parsing (clap) and dispatch to one module per command family, over
//! one output layer (`output`: tables, JSON, `CliError` and the exit codes).
//!
//! Exit codes are stable: 0 success, 1 the command ran and found a failure (e.g. `send` got a
//! non-2xx answer), 2 usage or configuration error.
//!
//! # Layout
//!
//! - `output`: the table/JSON printer, [`CliError`], [`Exit`].
//! - `remote`: the history reads, from the file or through the running server.
//! - `history`: `events`, `runs`, `outbox`, `actions`, `scripts`.
//! - `replay`: `replay`.
//! - `run`: `run` (dry run of one script on a payload).
//! - `samples`: `samples list|show|add`, and the samples `check` and `tokens` read.
//! - `check`: `check` and `tokens`.
//! - `definitions`: `definitions` (editor definition files).
//! - `send`: `send`.
//! - `backfill`: `backfill` (one System Log pass by hand).
//! - `state`: `state [SCRIPT]`, `state delete SCRIPT KEY`, `timers`.

mod backfill;
pub mod check;
mod definitions;
pub mod history;
pub mod output;
pub mod remote;
mod replay;
mod run;
mod samples;
mod send;
mod state;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::store::runs::RunFilter;
pub use output::{CliError, CliResult, Exit};

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
    /// Show stored events, newest first, or one event whole (works whether or not the server runs)
    Events {
        #[command(subcommand)]
        show: Option<EventsAction>,
        /// Show at most this many rows
        #[arg(long, default_value_t = DEFAULT_LIMIT)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
        format: Format,
        /// Show quarantined bodies (authenticated requests that were not valid deliveries)
        #[arg(long)]
        quarantine: bool,
    },
    /// Show script runs, newest first, or one run whole (works whether or not the server runs)
    Runs {
        /// One run: its log, error with the source line, actions and event
        id: Option<u64>,
        /// Only what is failed now: the latest run of each (event, script), when it failed
        /// (exit 1 when any is listed)
        #[arg(long)]
        failed: bool,
        /// Only this script's runs
        #[arg(long, value_name = "NAME")]
        script: Option<String>,
        /// Only this event's runs
        #[arg(long, value_name = "UUID")]
        event: Option<String>,
        /// Show at most this many rows
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
        /// Only this script (by name, as in `engine scripts`)
        #[arg(long, value_name = "NAME")]
        script: Option<String>,
        /// Show what each run would log and do; carry out nothing and record no run
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
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
        /// The run's "now" (RFC 3339, e.g. 2026-12-05T09:00:00Z); default: each event's
        /// published time, so the output is the same every time
        #[arg(long, value_name = "TIME")]
        now: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show the mail outbox, newest first: state, attempts, last error
    Outbox {
        /// Only mails that failed permanently
        #[arg(long)]
        failed: bool,
        /// Show at most this many rows
        #[arg(long, default_value_t = DEFAULT_LIMIT)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show the action queue (mail, HTTP, Okta), newest first: kind, state, attempts, last error
    Actions {
        /// Only actions that failed permanently
        #[arg(long)]
        failed: bool,
        /// Only actions of this kind
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Show at most this many rows
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
        /// The dry runs' "now" (RFC 3339, e.g. 2026-12-05T09:00:00Z); default: each sample's
        /// published time, so the output is the same every time
        #[arg(long, value_name = "TIME")]
        now: Option<String>,
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
    /// Write `.d.rhai` definition files (host functions, stdlib modules, the event and delivery
    /// maps) for the Rhai language server
    Definitions {
        /// Where to write them (default: `.rhai-definitions` next to the scripts directory)
        dir: Option<PathBuf>,
    },
    /// The scripts and their state: hash, loaded at, last error (as the running server sees them)
    Scripts {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The scripts' stored state (`state::set`/`incr`): every live key, or one script's
    State {
        #[command(subcommand)]
        action: Option<StateAction>,
        /// Only this script's keys
        script: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
        format: Format,
    },
    /// The pending timers (`schedule`), earliest due first
    Timers {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Show at most this many
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Captured and added sample events (for `tokens` and `check`)
    Samples {
        #[command(subcommand)]
        action: Option<SamplesAction>,
        #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
        format: Format,
    },
    /// Fetch the Okta System Log since then and store (or with --dry-run list) the events no
    /// delivery brought
    Backfill {
        /// How far back: 30m, 24h, 7d (at most 180d)
        #[arg(long, value_name = "DURATION")]
        since: String,
        /// List what is missing; store nothing
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Do what Okta does: the verification GET, then the delivery POST of PAYLOAD
    Send {
        /// An event-hook envelope, or a single LogEvent (wrapped into an envelope)
        payload: PathBuf,
        /// The hook URL, e.g. http://127.0.0.1:8080/hooks/default (default: this engine's
        /// `default` hook, with its secret)
        #[arg(long)]
        url: Option<String>,
        /// A header to send, e.g. 'Authorization: s3cret' (repeatable)
        #[arg(long = "header", value_name = "'Name: value'")]
        headers: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum EventsAction {
    /// One event whole: its envelope and its payload as stored
    Show {
        /// The event's uuid (see `engine events`)
        uuid: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SamplesAction {
    /// List the samples per hook and event type (the default)
    List,
    /// Print the samples of one event type as JSON
    Show {
        /// The event type, e.g. user.lifecycle.create
        event_type: String,
    },
    /// Keep the events of a payload (envelope or LogEvent, e.g. from Okta's Preview) as samples
    Add { file: PathBuf },
    /// Remove the samples (captured or added) of one event, by its uuid
    Rm {
        /// The event's uuid (see `engine samples`)
        uuid: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum StateAction {
    /// Remove one key of a script's state
    Delete {
        /// The script (file stem, e.g. lockout-alert)
        script: String,
        /// The key
        key: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Text for people (also accepted as `human`)
    #[value(alias = "human")]
    Table,
    Json,
}

/// `engine actions --kind`: one of the action kinds.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindArg {
    Email,
    Http,
    Okta,
}

impl KindArg {
    fn kind(self) -> crate::script::ActionKind {
        match self {
            KindArg::Email => crate::script::ActionKind::Email,
            KindArg::Http => crate::script::ActionKind::Http,
            KindArg::Okta => crate::script::ActionKind::Okta,
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            let exit = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            return ExitCode::from(exit.code());
        }
    };
    init_tracing();
    let config = match Config::discover(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return ExitCode::from(CliError::usage(e).report().code()),
    };
    register_secrets(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let e = CliError::failure(format!("cannot start the async runtime: {e}"));
            return ExitCode::from(e.report().code());
        }
    };
    let exit = match runtime.block_on(dispatch(cli.command, config)) {
        Ok(exit) => exit,
        Err(e) => e.report(),
    };
    ExitCode::from(exit.code())
}

/// Registers with `util::redact` every secret the config names that is at hand — set `*_env`
/// variables, generated hook secrets, the admin token — so that whatever this command prints or
/// logs is scrubbed of them, whether or not it uses them.
fn register_secrets(config: &Config) {
    config.register_env_secrets();
    for hook in &config.hooks {
        if matches!(hook.secret, crate::config::SecretSource::Generated) {
            crate::ingest::register_existing_secret(&config.generated_secret_path(&hook.id));
        }
    }
    crate::ingest::register_existing_secret(&config.data_dir.join(crate::ingest::ADMIN_TOKEN_FILE));
}

/// The log goes to stderr, each line scrubbed of every registered secret (`util::redact`): a
/// far side's text in an error can echo one.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ENGINE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::util::redact::ScrubWriter(std::io::stderr()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn dispatch(command: Command, config: Config) -> CliResult {
    match command {
        Command::Serve => {
            let mut out = std::io::stdout();
            crate::app::serve(&config, shutdown_signal(), &mut out)
                .await
                .map_err(CliError::usage)?;
            Ok(Exit::Ok)
        }
        Command::Events {
            show: Some(EventsAction::Show { uuid }),
            format,
            ..
        } => history::event(&config, &uuid, format == Format::Json),
        Command::Events {
            show: None,
            limit,
            format,
            quarantine,
        } => history::events(&config, limit, format == Format::Json, quarantine),
        Command::Backfill {
            since,
            dry_run,
            format,
        } => backfill::backfill(&config, &since, dry_run, format == Format::Json).await,
        Command::Send {
            payload,
            url,
            headers,
        } => send::send(&config, &payload, url.as_deref(), &headers).await,
        Command::Check {
            scripts,
            samples,
            format,
            deny_warnings,
            now,
        } => check::check(
            &config,
            &scripts,
            samples.as_deref(),
            format == Format::Json,
            deny_warnings,
            now.as_deref(),
        ),
        Command::Tokens {
            payload,
            event_type,
            format,
        } => check::tokens(
            &config,
            payload.as_deref(),
            event_type.as_deref(),
            format == Format::Json,
        ),
        Command::Definitions { dir } => definitions::write(&config, dir.as_deref()),
        Command::Scripts { format } => history::scripts(&config, format == Format::Json),
        Command::State {
            action: Some(StateAction::Delete { script, key }),
            ..
        } => state::delete(&config, &script, &key).await,
        Command::State {
            action: None,
            script,
            format,
        } => state::list(&config, script.as_deref(), format == Format::Json),
        Command::Timers { format, limit } => state::timers(&config, limit, format == Format::Json),
        Command::Samples { action, format } => match action.unwrap_or(SamplesAction::List) {
            SamplesAction::List => samples::list(&config, format == Format::Json),
            SamplesAction::Show { event_type } => samples::show(&config, &event_type),
            SamplesAction::Add { file } => samples::add(&config, &file),
            SamplesAction::Rm { uuid } => samples::remove(&config, &uuid).await,
        },
        Command::Runs {
            id: Some(id),
            format,
            ..
        } => history::run(&config, id, format == Format::Json),
        Command::Runs {
            id: None,
            failed,
            script,
            event,
            limit,
            format,
        } => {
            let filter = RunFilter {
                failed_now: failed,
                script,
                event,
            };
            history::runs(&config, &filter, limit, format == Format::Json)
        }
        Command::Outbox {
            failed,
            limit,
            format,
        } => history::outbox(&config, failed, limit, format == Format::Json),
        Command::Actions {
            failed,
            kind,
            limit,
            format,
        } => history::actions(
            &config,
            failed,
            kind.map(KindArg::kind),
            limit,
            format == Format::Json,
        ),
        Command::Replay {
            event_uuid,
            script,
            dry_run: true,
            format,
            ..
        } => {
            replay::dry_run(
                &config,
                event_uuid.as_deref(),
                script.as_deref(),
                format == Format::Json,
            )
            .await
        }
        Command::Replay {
            event_uuid,
            script,
            dry_run: false,
            ..
        } => replay::replay(&config, event_uuid.as_deref(), script.as_deref()).await,
        Command::Run {
            script,
            payload,
            hook,
            now,
            format,
        } => {
            run::dry_run(
                &config,
                &script,
                &payload,
                &hook,
                now.as_deref(),
                format == Format::Json,
            )
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
