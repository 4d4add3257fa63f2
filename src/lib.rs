//! `engine` receives Okta Event Hooks, stores every delivery durably, and runs user-written Rhai
//! scripts on each event.
//!
//! # Layout
//!
//! One folder per layer; a module imports only from layers below it (the tidy test in
//! `tests/it/tidy.rs` enforces the order, lowest first):
//!
//! - [`util`]: ids, clocks, timestamps; `util/http_client.rs` (a minimal HTTP/1.1 client),
//!   `util/prom.rs` (Prometheus text, label escaping), `util/exit.rs` (the exit codes),
//!   `util/private.rs` (data files 0600, directories 0700), `util/fd_limit.rs` (the open-file
//!   limit), `util/redact.rs` (secret values scrubbed from everything recorded, logged or printed).
//! - [`script`]: the Rhai layer, self-contained: `load.rs`, `header.rs`, `engine.rs`, `run.rs`,
//!   `explain.rs` (Rhai's run-time errors in the script's terms), `suggest.rs` (did you mean), `duration.rs` (duration literals), `time.rs` (`now`, `time::*`, `html_escape`), `state.rs` (`state::*`,
//!   `schedule`, `cancel_schedule`: a run's reads and `Effects`),
//!   `outcome.rs`, `event.rs`, `schema.rs` (the documented `event`/`delivery`/user fields),
//!   `definitions.rs` (editor definition files), `email.rs`, `host.rs`, `naming.rs`,
//!   `okta_op.rs` (the `okta::` functions' arguments, `OktaOp`, `OktaGroup`), `http.rs`
//!   (`http_post`/`http_request`/`http_get` into an `HttpRequest`; header and path rules), `alloc.rs`
//!   (the global allocator with the per-thread heap count the memory limit reads), `pool.rs` (the
//!   script threads: their own pool at `SCHED_IDLE` with one compute slot per core; `blocking`
//!   marks a wait, which gives the slot to queued work).
//! - [`config`]: `engine.toml` loading and validation; the embedded defaults.
//! - [`store`]: every table of the one redb file: `writer.rs` (group commit), `inbox.rs`,
//!   `dedup.rs`, `due.rs`, `runs.rs`, `actions.rs` (the durable action queue), `outbox.rs`, `samples.rs`, `script_state.rs`, `kv.rs` (the scripts' state: versions, the commit-time check), `timers.rs` (durable timers), `counts.rs` (hourly counters, each hook's last delivery and verification, for the console's overview), `query.rs`,
//!   `backfill.rs` (the System Log cursor).
//! - [`lookup`]: `lookup_user`'s sources: `directory.rs`, `okta.rs` (the one Okta client), the
//!   cache and the `Host`; `okta_auth.rs` (SSWS token or OAuth service app), `okta_ops.rs` (the
//!   `okta::` actions' `perform` and reads); `system_log.rs` (the System Log API pages the
//!   backfill reads); `endpoints.rs` (the `[endpoint.NAME]` HTTP client shared by `http_get`
//!   and the `http` executor; `EndpointHost`).
//! - [`ingest`]: the HTTP front door: `server.rs`, `limits.rs` (connection caps, slow-client
//!   timeouts), `admin.rs`, `envelope.rs` (the only envelope parser), `metrics.rs`, `secrets.rs`.
//! - [`backfill`]: the System Log backfill (the poll loop, a pass, its metrics; `engine
//!   backfill`), `filter.rs` (the scripts' subscriptions as Okta's `filter`).
//! - [`process`]: `dispatcher.rs`, `executor.rs`, `scheduler.rs` (the one scheduler of due work,
//!   and `Backoff`), `retention.rs`, `timers.rs` (the timer clock: due timers into runs; pruning of expired state).
//! - [`actions`]: the action queue's executors: the mail sender (`mod.rs`) and `mail.rs` (its
//!   transports), `okta.rs` (the `okta` actions through the one Okta client), `http.rs` (the
//!   `http` actions through their endpoints), `ledger.rs` (what
//!   every executor shares: attempts, outcomes, retries, panics, metrics by kind).
//! - [`reload`]: hot reload of scripts and stdlib; `states.rs`, the per-script state.
//! - [`authoring`]: `tokens.rs`, `samples.rs`, `now.rs` (the fixed, shown "now" of dry runs),
//!   `check/` (`diagnostics.rs`, `lint.rs`, `dryrun.rs`, `eligible.rs`).
//! - [`console`]: the web console on `console_listen`: `session.rs` (login link, cookie, CSRF),
//!   `views.rs` (each page's reads, through the store's indexes and counters, never a scan of the history), `authoring.rs` (the scripts page and its dry run on the
//!   samples, the tokens tree), `templates/` and `static/` (compiled in).
//! - [`app`]: builds every part from the config, runs them, stops them.
//! - [`cli`]: clap and dispatch: `output.rs`, `remote.rs`, `history.rs`, `replay.rs`, `run.rs`,
//!   `samples.rs`, `check.rs`, `definitions.rs`, `send.rs`, `backfill.rs`, `state.rs` (`state`, `timers`).
//!
//! See ARCHITECTURE.md for the invariants.

pub mod actions;
pub mod app;
pub mod authoring;
pub mod backfill;
pub mod cli;
pub mod config;
pub mod console;
pub mod ingest;
pub mod lookup;
pub mod process;
pub mod reload;
pub mod script;
pub mod store;
pub mod util;
