//! Carries out the outbox: sends each queued mail (SMTP or `.eml` files), retries transient
//! failures with backoff for up to [`mail::MAX_RETRY_WINDOW`], and records every outcome.
//!
//! A mail is marked sent in the transaction after the transport accepted it; a crash between the
//! two can send it again on restart (at-least-once), with the same `Message-ID`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};

use crate::mail::{self, OutgoingMail, Transport};
use crate::outbox::{self, MailStatus, OutboxView};
use crate::store::Store;
use crate::util::now_ms;

/// Mails sent at once: matches lettre's pool size so each send has a connection.
pub const MAX_CONCURRENT_SENDS: usize = mail::POOL_MAX_SIZE;
/// How often the sender looks for due mail without being woken.
pub const SENDER_TICK: Duration = Duration::from_millis(250);

pub struct OutboxSender {
    store: Arc<Store>,
    transport: Transport,
    from: String,
    /// Scales the retry delays (tests shorten them); 1.0 in production.
    retry_scale: f64,
    permits: Arc<Semaphore>,
    in_flight: Mutex<HashSet<String>>,
    /// Woken when mail is queued.
    pub wake: Arc<Notify>,
    /// Send outcomes for `/metrics`: sent, retried, failed.
    counts: [std::sync::atomic::AtomicU64; 3],
}

impl OutboxSender {
    pub fn new(store: Arc<Store>, transport: Transport, from: String, wake: Arc<Notify>) -> Self {
        OutboxSender {
            store,
            transport,
            from,
            retry_scale: 1.0,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_SENDS)),
            in_flight: Mutex::new(HashSet::new()),
            wake,
            counts: Default::default(),
        }
    }

    /// Multiplies every retry delay by `scale` (for tests that cannot wait 30 s).
    pub fn with_retry_scale(mut self, scale: f64) -> Self {
        self.retry_scale = scale;
        self
    }

    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let next_due = match self.send_due() {
                Ok(n) => n,
                Err(error) => {
                    tracing::error!(%error, "outbox cannot be read");
                    None
                }
            };
            let wait = next_due
                .map(|due| Duration::from_millis(due.saturating_sub(now_ms())))
                .unwrap_or(SENDER_TICK)
                .min(SENDER_TICK);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        let _ = self.permits.acquire_many(MAX_CONCURRENT_SENDS as u32).await;
        self.transport.shutdown().await;
    }

    /// Appends the mail metrics (Prometheus text) to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP engine_mail_total Mail send attempts by outcome."
        );
        let _ = writeln!(out, "# TYPE engine_mail_total counter");
        for (i, status) in ["sent", "retry", "failed"].iter().enumerate() {
            let n = self.counts[i].load(std::sync::atomic::Ordering::Relaxed);
            let _ = writeln!(out, "engine_mail_total{{status=\"{status}\"}} {n}");
        }
        let depth = OutboxView(self.store.db()).due_count().unwrap_or(0);
        let _ = writeln!(
            out,
            "# HELP engine_outbox_depth Mails queued and not yet sent."
        );
        let _ = writeln!(out, "# TYPE engine_outbox_depth gauge");
        let _ = writeln!(out, "engine_outbox_depth {depth}");
    }

    fn send_due(self: &Arc<Self>) -> Result<Option<u64>, crate::store::ReadError> {
        let free = self.permits.available_permits();
        let skip = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (due, next_due) = OutboxView(self.store.db()).due_now(now_ms(), &skip, free)?;
        for id in due {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                break;
            };
            self.in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone());
            let me = self.clone();
            tokio::spawn(async move {
                me.send_one(&id).await;
                me.in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                drop(permit);
                me.wake.notify_one();
            });
        }
        Ok(next_due)
    }

    async fn send_one(&self, id: &str) {
        let mut m = match OutboxView(self.store.db()).get(id) {
            Ok(Some(m)) if m.status == MailStatus::Queued => m,
            Ok(_) => return,
            Err(error) => {
                tracing::error!(mail_id = %id, %error, "cannot read mail");
                return;
            }
        };
        let out = OutgoingMail {
            id: m.id.clone(),
            from: self.from.clone(),
            to: m.email.to.clone(),
            cc: m.email.cc.clone(),
            bcc: m.email.bcc.clone(),
            reply_to: m.email.reply_to.clone(),
            subject: m.email.subject.clone(),
            body: m.email.body.clone(),
            html: m.email.html.clone(),
        };
        let result = mail::send(&self.transport, &out).await;
        m.attempts += 1;
        match result {
            Ok(receipt) => {
                m.status = MailStatus::Sent;
                m.sent_ms = Some(now_ms());
                m.next_attempt_ms = None;
                m.last_error = None;
                tracing::info!(mail_id = %m.id, run_id = m.run_id, detail = %receipt.detail, "mail sent");
            }
            Err(e)
                if e.is_transient()
                    && now_ms().saturating_sub(m.queued_ms)
                        < mail::MAX_RETRY_WINDOW.as_millis() as u64 =>
            {
                let delay = mail::backoff(m.attempts - 1).mul_f64(self.retry_scale);
                m.next_attempt_ms = Some(now_ms() + delay.as_millis() as u64);
                m.last_error = Some(e.to_string());
                tracing::warn!(mail_id = %m.id, error = %e, retry_in_ms = delay.as_millis() as u64, "mail not sent; will retry");
            }
            Err(e) => {
                m.status = MailStatus::Failed;
                m.next_attempt_ms = None;
                m.last_error = Some(e.to_string());
                tracing::error!(mail_id = %m.id, error = %e, "mail failed permanently");
            }
        }
        let slot = match m.status {
            MailStatus::Sent => 0,
            MailStatus::Queued => 1,
            MailStatus::Failed => 2,
        };
        self.counts[slot].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Err(error) = self.store.write(move |txn| outbox::save(txn, &m)).await {
            tracing::error!(mail_id = %id, %error, "mail state not recorded");
        }
    }
}
