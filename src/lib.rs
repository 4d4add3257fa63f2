//! `engine` receives Okta Event Hooks, stores every delivery durably, and runs user-written Rhai
//! scripts on each event.
//!
//! # Layout
//!
//! - [`cli`]: the command line (clap); parses arguments and calls into the modules below.
//! - [`config`]: `engine.toml` loading and validation; the embedded defaults.
//! - [`serve`]: assembles the store and hooks from the config and runs the server.
//! - [`server`]: the HTTP front door (hyper): verification, delivery, `/healthz`, `/metrics`.
//! - [`envelope`]: parses a delivery body into its events (lenient, precise errors).
//! - [`store`]: the redb inbox with its group-commit writer, and history reads.
//! - [`dedup`]: the in-memory index of stored delivery ids and event uuids.
//! - [`metrics`]: counters and their Prometheus rendering.
//! - [`secrets`]: generated hook secrets kept under the data dir.
//! - [`client`]: a minimal HTTP/1.1 client for `engine send`, tests and benchmarks.
//! - [`remote`]: the history commands' reads, from the store or through the running server.
//! - [`util`]: ids, clocks, timestamps.
//! - [`check`]: `engine check`: lints scripts against samples (paths, header, dry runs).
//! - [`tokens`]: `engine tokens`: the paths scripts can read, from samples; samples loading.
//! - [`watch`]: hot reload of scripts and stdlib from disk, and the per-script state.
//!
//! See ARCHITECTURE.md for the invariants.

pub mod check;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod dedup;
pub mod envelope;
pub mod lookup;
pub mod mail;
pub mod metrics;
pub mod outbox;
pub mod remote;
pub mod retention;
pub mod runs;
pub mod samples;
pub mod script;
pub mod secrets;
pub mod sender;
pub mod serve;
pub mod server;
pub mod store;
pub mod tokens;
pub mod util;
pub mod watch;
pub mod worker;
