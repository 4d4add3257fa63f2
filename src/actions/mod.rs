//! The action queue's executors: each carries out the actions of one kind that successful runs
//! queued (mail over SMTP or as `.eml` files, Okta changes through the Management API, HTTP
//! requests to the configured endpoints), through
//! the shared scheduler, and records every outcome through its [`Ledger`]: transient failures are
//! retried with backoff for up to [`ledger::MAX_RETRY_WINDOW`], permanent ones fail the action.
//!
//! An action is marked done in the transaction after the far side accepted it; a crash between
//! the two can carry it out again on restart (at-least-once), with the same id going along
//! (a mail's `Message-ID`, an Okta request's `Idempotency-Key`).
//!
//! # Layout
//!
//! - this module: [`MailSender`], the mail queue's executor ([`DueWork`] for the scheduler).
//! - [`ledger`]: what every executor shares (begin an attempt, record its [`Attempt`], outcomes
//!   the store could not take, panics, [`ActionMetrics`]).
//! - [`mail`]: building messages (lettre), the pooled SMTP transport and the `.eml` writer.
//! - [`okta`]: [`OktaExecutor`], the `okta` actions through the one Okta client.
//! - [`http`]: [`HttpExecutor`], the `http` actions through their `[endpoint.NAME]`.

pub mod http;
pub mod ledger;
pub mod mail;
pub mod okta;

pub use http::HttpExecutor;
pub use ledger::{ActionCounts, ActionMetrics, Attempt, Ledger};
pub use okta::OktaExecutor;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::process::{Admit, Backoff, Done, Due, DueKey, DuePool, DueWork, Step, Task, Work};
use crate::script::{ActionKind, Email};
use crate::store::actions::ActionsView;
use crate::store::{ReadError, Store};
use crate::util::prom;
use mail::Transport;

/// Mails sent at once: matches lettre's pool size so each send has a connection.
pub const MAX_CONCURRENT_SENDS: usize = mail::POOL_MAX_SIZE;
/// Mails that may be accepted by the SMTP server and not yet recorded as sent, at once: a crash
/// re-sends at most this many (at-least-once is the contract; the window is one mail). The
/// connections still work in parallel up to the end of each mail's content.
pub const MAX_UNRECORDED_SENDS: usize = 1;
/// How often the sender looks for due mail without being woken.
pub const SENDER_TICK: Duration = Duration::from_millis(250);

/// What the mail executor is built from (the app derives it from `[smtp]`).
#[derive(Debug, Clone)]
pub struct MailSettings {
    /// The `From` address.
    pub from: String,
    /// The first retry delay of a mail that failed transiently (`[smtp] retry_base_ms`).
    pub retry_base: Duration,
}

/// The mail queue's executor.
pub struct MailSender {
    ledger: Ledger,
    transport: Transport,
    from: String,
    /// Send outcomes for `/metrics`: sent, retried, failed.
    counts: [AtomicU64; 3],
    /// See [`MAX_UNRECORDED_SENDS`].
    accept_gate: mail::AcceptGate,
}

impl MailSender {
    pub fn new(
        store: Arc<Store>,
        transport: Transport,
        settings: MailSettings,
        counts: Arc<ActionCounts>,
    ) -> MailSender {
        let backoff = Backoff {
            base: settings.retry_base,
            cap: mail::BACKOFF_CAP,
            jitter: true,
        };
        MailSender {
            ledger: Ledger::new(store, ActionKind::Email, backoff, counts),
            transport,
            from: settings.from,
            counts: Default::default(),
            accept_gate: Arc::new(tokio::sync::Semaphore::new(MAX_UNRECORDED_SENDS)),
        }
    }

    /// Drains the mail queue until `shutdown`, then waits for the sends in flight and closes the
    /// transport's connections.
    pub async fn run(
        pool: Arc<DuePool<MailSender>>,
        sender: Arc<MailSender>,
        shutdown: watch::Receiver<bool>,
    ) {
        pool.run(shutdown).await;
        sender.transport.shutdown().await;
    }

    /// A scheduler for this sender; its waker is what runs notify when they queued mail.
    pub fn pool(self: &Arc<Self>) -> Arc<DuePool<MailSender>> {
        DuePool::new(self.clone(), MAX_CONCURRENT_SENDS, SENDER_TICK)
    }

    async fn send_one(&self, seq: u64) -> Done {
        let (m, email) = match self.ledger.begin_as::<Email>(seq, "mail").await {
            Ok(begun) => begun,
            Err(done) => return done,
        };
        let result =
            mail::send_gated(&self.transport, &self.from, &email, Some(&self.accept_gate)).await;
        let answered = std::time::Instant::now();
        // Held until the outcome is recorded (see MAX_UNRECORDED_SENDS).
        let mut accepted = None;
        let attempt = match result {
            Ok((receipt, permit)) => {
                accepted = permit;
                self.counts[0].fetch_add(1, Ordering::Relaxed);
                Attempt::Done {
                    answer: receipt.detail,
                }
            }
            Err(e) if e.is_transient() => {
                self.counts[1].fetch_add(1, Ordering::Relaxed);
                Attempt::Retry {
                    after: None,
                    error: e.to_string(),
                }
            }
            Err(e) => {
                self.counts[2].fetch_add(1, Ordering::Relaxed);
                Attempt::Failed {
                    error: e.to_string(),
                }
            }
        };
        let done = self.ledger.finish(m, attempt).await;
        drop(accepted);
        tracing::debug!(
            mail_seq = seq,
            record_us = answered.elapsed().as_micros() as u64,
            "mail outcome recorded"
        );
        done
    }
}

impl DueWork for MailSender {
    const KIND: &'static str = "mail";

    fn due(
        &self,
        now_ms: u64,
        after: Option<DueKey>,
        admit: &mut dyn FnMut(DueKey) -> Admit,
    ) -> Result<Due, ReadError> {
        self.ledger.due(now_ms, after, admit)
    }

    fn execute(self: Arc<Self>, id: u64) -> Work {
        Box::pin(async move { Step::Done(self.send_one(id).await) })
    }

    fn panicked(self: Arc<Self>, id: u64, count: u32, message: String) -> Task {
        Box::pin(async move { self.ledger.record_panic(id, count, message).await })
    }
}

impl prom::MetricsSource for MailSender {
    fn render_metrics(&self, out: &mut String) {
        prom::family(
            out,
            "engine_mail_total",
            "counter",
            "Mail send attempts by outcome.",
        );
        for (i, status) in ["sent", "retry", "failed"].iter().enumerate() {
            let n = self.counts[i].load(Ordering::Relaxed);
            prom::sample(out, "engine_mail_total", &[("status", status)], n);
        }
        let depth = ActionsView(&**self.ledger.store())
            .due_count(ActionKind::Email)
            .unwrap_or(0);
        prom::single(
            out,
            "engine_outbox_depth",
            "gauge",
            "Mails queued and not yet sent.",
            depth,
        );
    }
}
