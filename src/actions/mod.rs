//! The action queue's executors: carries out the mail that successful runs queued (over SMTP or
//! as `.eml` files), through the shared scheduler, retrying transient failures with backoff for
//! up to [`mail::MAX_RETRY_WINDOW`], and records every outcome.
//!
//! A mail is marked sent in the transaction after the transport accepted it; a crash between the
//! two can send it again on restart (at-least-once), with the same `Message-ID`.
//!
//! # Layout
//!
//! - this module: [`MailSender`], the mail queue's executor ([`DueWork`] for the scheduler).
//! - [`mail`]: building messages (lettre), the pooled SMTP transport and the `.eml` writer.

pub mod mail;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::process::{
    Admit, Backoff, Done, Due, DueKey, DuePool, DueWork, MAX_PANICS, Step, Task, Work,
};
use crate::script::{ActionKind, Email};
use crate::store::actions::{self, ActionStatus, ActionsView, QueuedAction};
use crate::store::{ReadError, Store};
use crate::util::{now_ms, prom, redact};
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
    store: Arc<Store>,
    transport: Transport,
    from: String,
    backoff: Backoff,
    /// Send outcomes for `/metrics`: sent, retried, failed.
    counts: [AtomicU64; 3],
    /// See [`MAX_UNRECORDED_SENDS`].
    accept_gate: mail::AcceptGate,
    /// Mails whose outcome could not be recorded (the store could not write), by seq: their
    /// next attempt records that outcome again instead of sending again.
    unrecorded: std::sync::Mutex<std::collections::HashMap<u64, QueuedAction>>,
    failures: crate::util::Throttle,
}

impl MailSender {
    pub fn new(store: Arc<Store>, transport: Transport, settings: MailSettings) -> MailSender {
        MailSender {
            store,
            transport,
            from: settings.from,
            backoff: Backoff {
                base: settings.retry_base,
                cap: mail::BACKOFF_CAP,
                jitter: true,
            },
            counts: Default::default(),
            accept_gate: Arc::new(tokio::sync::Semaphore::new(MAX_UNRECORDED_SENDS)),
            unrecorded: Default::default(),
            failures: crate::util::Throttle::new(crate::store::FAILURE_LOG_INTERVAL),
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
        let unrecorded = self
            .unrecorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&seq);
        if let Some(m) = unrecorded {
            // Sent (or failed) already: only its outcome is missing. Never send it again here.
            return self.record(m).await;
        }
        let mut m = match ActionsView(&*self.store).get_by_seq(seq) {
            Ok(Some(m)) if m.status.is_pending() && m.kind == ActionKind::Email => m,
            Ok(_) => return Done::Recorded,
            Err(error) => {
                if let Some(left_out) = self.failures.ready() {
                    tracing::error!(mail_seq = seq, %error, left_out, "cannot read mail");
                }
                return Done::NotRecorded;
            }
        };
        let email: Email = match serde_json::from_value(m.payload.clone()) {
            Ok(e) => e,
            Err(e) => {
                m.status = ActionStatus::Failed;
                m.next_attempt_ms = None;
                m.last_error = Some(format!("the queued mail cannot be read: {e}"));
                return self.record(m).await;
            }
        };
        let result =
            mail::send_gated(&self.transport, &self.from, &email, Some(&self.accept_gate)).await;
        let answered = std::time::Instant::now();
        m.attempts += 1;
        // Held until the outcome is recorded (see MAX_UNRECORDED_SENDS).
        let mut accepted = None;
        match result {
            Ok((receipt, permit)) => {
                accepted = permit;
                m.status = ActionStatus::Done;
                m.done_ms = Some(now_ms());
                m.next_attempt_ms = None;
                m.last_error = None;
                m.answer = Some(receipt.detail.clone());
                tracing::info!(mail_id = %m.id, run_id = m.run_id, detail = %receipt.detail, "mail sent");
            }
            Err(e) if e.is_transient() && self.within_retry_window(&m) => {
                let delay = self.backoff.delay(m.attempts - 1);
                m.status = ActionStatus::Retrying;
                m.next_attempt_ms = Some(now_ms() + delay.as_millis() as u64);
                m.last_error = Some(e.to_string());
                tracing::warn!(mail_id = %m.id, error = %e, retry_in_ms = delay.as_millis() as u64, "mail not sent; will retry");
            }
            Err(e) => {
                m.status = ActionStatus::Failed;
                m.next_attempt_ms = None;
                m.last_error = Some(e.to_string());
                tracing::error!(mail_id = %m.id, error = %e, "mail failed permanently");
            }
        }
        let done = self.record(m).await;
        drop(accepted);
        tracing::debug!(
            mail_seq = seq,
            record_us = answered.elapsed().as_micros() as u64,
            "mail outcome recorded"
        );
        done
    }

    fn within_retry_window(&self, m: &QueuedAction) -> bool {
        now_ms().saturating_sub(m.queued_ms) < mail::MAX_RETRY_WINDOW.as_millis() as u64
    }

    /// Records a mail's state; its error text (a far side's answer) scrubbed of secrets.
    async fn record(&self, mut m: QueuedAction) -> Done {
        if let Some(e) = &mut m.last_error {
            redact::scrub_in_place(e);
        }
        let slot = match m.status {
            ActionStatus::Done => 0,
            ActionStatus::Queued | ActionStatus::Retrying => 1,
            ActionStatus::Failed | ActionStatus::Skipped => 2,
        };
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let kept = m.clone();
        match self.store.write(move |txn| actions::save(txn, &m)).await {
            Ok(()) => Done::Recorded,
            Err(error) => {
                if let Some(left_out) = self.failures.ready() {
                    tracing::error!(mail_id = %kept.id, %error, left_out, "mail state not recorded; recording it again later");
                }
                self.unrecorded
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(kept.seq, kept);
                Done::NotRecorded
            }
        }
    }

    /// A send whose task panicked: retried with backoff, failed from [`MAX_PANICS`] on.
    async fn record_panic(&self, seq: u64, count: u32, message: String) -> Done {
        let Ok(Some(mut m)) = ActionsView(&*self.store).get_by_seq(seq) else {
            return Done::NotRecorded;
        };
        if !m.status.is_pending() {
            return Done::Recorded;
        }
        m.attempts += 1;
        if count >= MAX_PANICS {
            m.status = ActionStatus::Failed;
            m.next_attempt_ms = None;
            m.last_error = Some(format!("sending crashed {count} times: {message}"));
        } else {
            let delay = self.backoff.delay(count - 1);
            m.status = ActionStatus::Retrying;
            m.next_attempt_ms = Some(now_ms() + delay.as_millis() as u64);
            m.last_error = Some(format!("sending crashed: {message}"));
        }
        self.record(m).await
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
        ActionsView(&*self.store).due_now(ActionKind::Email, now_ms, after, admit)
    }

    fn execute(self: Arc<Self>, id: u64) -> Work {
        Box::pin(async move { Step::Done(self.send_one(id).await) })
    }

    fn panicked(self: Arc<Self>, id: u64, count: u32, message: String) -> Task {
        Box::pin(async move { self.record_panic(id, count, message).await })
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
        prom::family(
            out,
            "engine_actions_total",
            "counter",
            "Action attempts by kind and outcome.",
        );
        for (i, status) in ["done", "retrying", "failed"].iter().enumerate() {
            let n = self.counts[i].load(Ordering::Relaxed);
            prom::sample(
                out,
                "engine_actions_total",
                &[("kind", ActionKind::Email.as_str()), ("status", status)],
                n,
            );
        }
        prom::family(
            out,
            "engine_actions_pending",
            "gauge",
            "Actions queued or retrying, by kind.",
        );
        for kind in ActionKind::ALL {
            let n = ActionsView(&*self.store).due_count(kind).unwrap_or(0);
            prom::sample(out, "engine_actions_pending", &[("kind", kind.as_str())], n);
        }
        let depth = ActionsView(&*self.store)
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
