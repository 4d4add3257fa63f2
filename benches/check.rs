//! Time of `engine check` over 100 scripts × 20 samples: every script subscribes to both sample
//! event types, so that is 2,000 dry runs plus loading, path linting and rendering.
//!
//! Run: `cargo bench --bench check` (release). Prints the median and slowest time of a whole
//! check; the target is at most 1 s.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use engine::authoring::samples::{ANY_HOOK, Sample, load_samples_dir};
use engine::cli::check::check_command;
use engine::script::Limits;

/// Scripts checked.
const SCRIPTS: usize = 100;
/// Samples they are checked against.
const SAMPLES: usize = 20;
/// Timed runs of the whole check (after one untimed warm-up).
const RUNS: usize = 5;
/// The target from the issue.
const TARGET: Duration = Duration::from_secs(1);
/// The event types of the samples; every script subscribes to both.
const TYPES: &str = "user.lifecycle.deactivate, group.user_membership.add";

fn repo() -> PathBuf {
    std::env::var_os("ENGINE_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn main() {
    let repo = repo();
    let dir = tempfile::tempdir().expect("temp dir");

    // The shipped examples and the clean test script, subscribed to both sample types.
    let mut bodies = Vec::new();
    for f in [
        "scripts/lockout-alert.rhai",
        "scripts/new-hire-manager.rhai",
        "scripts/offboarding-checklist.rhai",
        "scripts/privileged-group-alert.rhai",
        "tests/check/clean/offboard.rhai",
    ] {
        let text = std::fs::read_to_string(repo.join(f)).expect("example script");
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with("//! on:") && !l.starts_with("//! hook:"))
            .map(|l| format!("{l}\n"))
            .collect();
        bodies.push(body);
    }
    for i in 0..SCRIPTS {
        let body = &bodies[i % bodies.len()];
        std::fs::write(
            dir.path().join(format!("script-{i:03}.rhai")),
            format!("//! on: {TYPES}\n{body}"),
        )
        .expect("write script");
    }

    // 20 samples: the two fixture events, ten copies each with their own uuid.
    let fixtures = load_samples_dir(&repo.join("tests/fixtures")).expect("fixtures");
    let bases: Vec<&Sample> = fixtures
        .iter()
        .filter(|s| TYPES.contains(s.event_type.as_str()))
        .collect();
    assert_eq!(bases.len(), 2, "one fixture of each type");
    let mut samples = Vec::new();
    for i in 0..SAMPLES {
        let base = bases[i % bases.len()];
        let mut v: serde_json::Value = serde_json::from_slice(&base.json).expect("json");
        v["uuid"] = format!("00000000-0000-0000-0000-{i:012}").into();
        let json = serde_json::to_vec(&v).expect("json");
        samples.push(Sample::new(ANY_HOOK, json, &format!("sample-{i:02}")));
    }

    let limits = Limits::default();
    let stdlib = repo.join("stdlib");
    let check = || {
        let mut out = Vec::new();
        let start = Instant::now();
        let code = check_command(
            &[],
            dir.path(),
            &stdlib,
            &samples,
            &limits,
            false,
            false,
            &mut out,
        );
        let took = start.elapsed();
        (took, code, out.len())
    };
    let (_, code, bytes) = check();
    println!("check: exit {}, {bytes} bytes of output", code.code());
    let mut times: Vec<Duration> = (0..RUNS).map(|_| check().0).collect();
    times.sort();
    let median = times[times.len() / 2];
    let worst = times[times.len() - 1];
    println!(
        "check of {SCRIPTS} scripts × {SAMPLES} samples ({} dry runs): median {:.0} ms, slowest {:.0} ms (target ≤ {} ms) {}",
        SCRIPTS * SAMPLES,
        median.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3,
        TARGET.as_millis(),
        if worst <= TARGET { "ok" } else { "OVER TARGET" }
    );
}
