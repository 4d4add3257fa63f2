//! The one integration-test binary: the real server on a loopback port, a real redb file, the
//! real `engine` binary. Topic modules below; helpers in `support`.

mod support;

mod backfill;
mod check;
mod cli;
mod console;
mod crash;
mod dedup;
mod disk;
mod http;
mod ingest;
mod lookup;
mod mail;
mod okta;
mod processing;
mod reload;
mod retention;
mod scripts;
mod state;
mod tidy;
