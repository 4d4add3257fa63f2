//! The receiver's counters for `/metrics`, rendered as Prometheus text. Lock-free on the
//! request path.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::{Depths, WriterCounts};
use crate::util::prom;

/// How a delivery request ended, as counted per hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Unauthorized,
    TooLarge,
    Invalid,
    /// The body did not arrive within the body read timeout (408).
    Timeout,
    Unavailable,
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Outcome::Accepted,
        Outcome::Duplicate,
        Outcome::Unauthorized,
        Outcome::TooLarge,
        Outcome::Invalid,
        Outcome::Timeout,
        Outcome::Unavailable,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Unauthorized => "unauthorized",
            Outcome::TooLarge => "too_large",
            Outcome::Invalid => "invalid",
            Outcome::Timeout => "timeout",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// One hook's counters.
#[derive(Default)]
pub struct HookMetrics {
    deliveries: [AtomicU64; Outcome::ALL.len()],
    events: AtomicU64,
    duplicate_events: AtomicU64,
    verifications: AtomicU64,
}

impl HookMetrics {
    pub fn delivery(&self, outcome: Outcome) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.deliveries[i].fetch_add(1, Ordering::Relaxed);
    }
    pub fn events(&self, stored: usize, duplicates: usize) {
        self.events.fetch_add(stored as u64, Ordering::Relaxed);
        self.duplicate_events
            .fetch_add(duplicates as u64, Ordering::Relaxed);
    }
    pub fn verification(&self) {
        self.verifications.fetch_add(1, Ordering::Relaxed);
    }
}

/// Renders the receiver's families: deliveries, events and verifications by hook, requests for
/// unknown hooks, and the store's queue depths (when readable).
pub fn render<'a>(
    out: &mut String,
    hooks: impl Iterator<Item = (&'a str, &'a HookMetrics)> + Clone,
    unknown_hook_requests: u64,
    depths: Option<Depths>,
) {
    prom::family(
        out,
        "engine_deliveries_total",
        "counter",
        "Delivery requests by hook and outcome.",
    );
    for (id, m) in hooks.clone() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            prom::sample(
                out,
                "engine_deliveries_total",
                &[("hook", id), ("status", o.label())],
                m.deliveries[i].load(Ordering::Relaxed),
            );
        }
    }
    type Counter = (&'static str, &'static str, fn(&HookMetrics) -> u64);
    let counters: [Counter; 3] = [
        (
            "engine_events_total",
            "Events stored and queued, by hook.",
            |m| m.events.load(Ordering::Relaxed),
        ),
        (
            "engine_duplicate_events_total",
            "Events dropped because their uuid was already accepted, by hook.",
            |m| m.duplicate_events.load(Ordering::Relaxed),
        ),
        (
            "engine_verifications_total",
            "Verification challenges answered, by hook.",
            |m| m.verifications.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, get) in counters {
        prom::family(out, name, "counter", help);
        for (id, m) in hooks.clone() {
            prom::sample(out, name, &[("hook", id)], get(m));
        }
    }
    prom::single(
        out,
        "engine_unknown_hook_requests_total",
        "counter",
        "Requests for hook ids that are not configured.",
        unknown_hook_requests,
    );
    if let Some(d) = depths {
        for (name, help, v) in [
            (
                "engine_queue_depth",
                "Events stored and not yet processed.",
                d.queued,
            ),
            ("engine_events_stored", "Events in the store.", d.events),
            (
                "engine_quarantine_depth",
                "Authenticated bodies kept because they were not deliveries.",
                d.quarantined,
            ),
        ] {
            prom::single(out, name, "gauge", help, v);
        }
    }
}

/// The server's connection counters, updated by the accept loop.
#[derive(Default)]
pub struct ConnectionStats {
    /// Connections being served now.
    pub open: AtomicU64,
    /// Connections closed at once because their address held the most allowed.
    pub refused_per_address: AtomicU64,
}

/// Appends the connection families: open now, the cap, and those closed for their address.
pub fn render_connections(out: &mut String, open: u64, max: usize, refused_per_address: u64) {
    prom::single(
        out,
        "engine_connections_open",
        "gauge",
        "Client connections being served.",
        open,
    );
    prom::single(
        out,
        "engine_connections_max",
        "gauge",
        "Client connections served at once (more wait to be accepted).",
        max,
    );
    prom::family(
        out,
        "engine_connections_refused_total",
        "counter",
        "Client connections closed at once, by reason.",
    );
    prom::sample(
        out,
        "engine_connections_refused_total",
        &[("reason", "per_address")],
        refused_per_address,
    );
}

/// Appends the store writer's counters: how many commits, how many jobs they carried, and the
/// time spent applying and committing them.
pub fn render_writer(out: &mut String, c: WriterCounts) {
    for (name, help, v) in [
        (
            "engine_store_commits_total",
            "Durable write transactions (each carries a batch of jobs).",
            c.batches as f64,
        ),
        (
            "engine_store_jobs_total",
            "Jobs (deliveries, run results, ...) carried by those commits.",
            c.jobs as f64,
        ),
        (
            "engine_store_busy_seconds_total",
            "Time the writer spent applying and committing batches.",
            c.busy_us as f64 / 1e6,
        ),
        (
            "engine_store_commit_seconds_total",
            "Of that, time inside commit (writing pages, waiting for the disk).",
            c.commit_us as f64 / 1e6,
        ),
    ] {
        prom::single(out, name, "counter", help, v);
    }
}
