//! The one integration-test binary: the real server on a loopback port, a real redb file, the
//! real `engine` binary. Topic modules below; helpers in `support`.

mod support;

mod cli;
mod crash;
mod ingest;
mod lookup;
mod mail;
mod processing;
mod retention;
mod reload;
mod scripts;
