//! Authoring: what helps a person write scripts — the personalization tokens of sample events
//! (`engine tokens`), the samples themselves, and `engine check` (lints and dry runs). Runs
//! scripts only as dry runs: nothing here is sent or stored.
//!
//! # Layout
//!
//! - `samples`: the [`Sample`](samples::Sample) type (named by uuid and source), `--samples DIR`,
//!   samples added by hand, each event once ([`dedupe`](samples::dedupe)).
//! - `tokens`: every expression a script can paste (`event.…`, targets per type, `delivery.…`,
//!   `lookup_user`'s map), with its type and an example, or Okta's documented fields without
//!   samples; the [`Shape`](tokens::Shape) `check` checks paths against.
//! - `check/`: `engine check` (see its own layout).
//! - `now`: the fixed, shown "now" of dry runs ([`DryNow`](now::DryNow): `--now`, else each
//!   event's published time) and the host wrapper that gives it.

pub mod check;
pub mod now;
pub mod samples;
pub mod tokens;
