//! The bookkeeping every action executor shares: take a due action, record how its attempt went
//! (done, retry with backoff and the far side's earliest time, failed, skipped), keep an outcome
//! the store could not write until it can, contain panics, and count outcomes by kind.
//!
//! An executor (`MailSender`, `OktaExecutor`, …) only carries the action out: it calls
//! [`Ledger::begin`] for the action to work on, then [`Ledger::finish`] with an [`Attempt`]. An
//! action whose outcome could not be recorded is never carried out again by this process: its
//! next turn records that outcome instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::process::{Admit, Backoff, Done, Due, DueKey, MAX_PANICS};
use crate::script::ActionKind;
use crate::store::actions::{self, ActionStatus, ActionsView, QueuedAction};
use crate::store::{ReadError, Store};
use crate::util::{Throttle, now_ms, prom, redact};

/// How long an action keeps being retried after it was queued (SPEC: "retried with backoff and
/// jitter for up to 24 h"); the attempt after that which fails transiently fails it for good.
pub const MAX_RETRY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// How one attempt at an action went, as its executor saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The far side accepted it (or its effect already held): `answer` summarises the reply.
    Done { answer: String },
    /// Transient: try again, not before `after` when the far side said so (`Retry-After`,
    /// `X-Rate-Limit-Reset`), else after the executor's backoff.
    Retry {
        after: Option<Duration>,
        error: String,
    },
    /// Permanent: retrying will not help.
    Failed { error: String },
    /// Not carried out on purpose (its kind is not configured).
    Skipped { reason: String },
}

/// Outcomes by kind, for `/metrics` (one family for every executor: Prometheus text allows each
/// family once).
#[derive(Debug, Default)]
pub struct ActionCounts {
    counts: [[AtomicU64; OUTCOMES.len()]; ActionKind::ALL.len()],
}

/// The outcome labels of `engine_actions_total`.
const OUTCOMES: [&str; 4] = ["done", "retrying", "failed", "skipped"];

impl ActionCounts {
    fn add(&self, kind: ActionKind, status: ActionStatus) {
        let slot = match status {
            ActionStatus::Done => 0,
            ActionStatus::Queued | ActionStatus::Retrying => 1,
            ActionStatus::Failed => 2,
            ActionStatus::Skipped => 3,
        };
        self.counts[kind_index(kind)][slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Attempts of `kind` that ended `outcome` (one of "done", "retrying", "failed", "skipped").
    pub fn get(&self, kind: ActionKind, outcome: &str) -> u64 {
        OUTCOMES.iter().position(|o| *o == outcome).map_or(0, |i| {
            self.counts[kind_index(kind)][i].load(Ordering::Relaxed)
        })
    }
}

fn kind_index(kind: ActionKind) -> usize {
    ActionKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_default()
}

/// `/metrics` for the whole action queue: attempts by kind and outcome, pending by kind.
pub struct ActionMetrics {
    pub store: Arc<Store>,
    pub counts: Arc<ActionCounts>,
}

impl prom::MetricsSource for ActionMetrics {
    fn render_metrics(&self, out: &mut String) {
        prom::family(
            out,
            "engine_actions_total",
            "counter",
            "Action attempts by kind and outcome.",
        );
        for kind in ActionKind::ALL {
            for outcome in OUTCOMES {
                let n = self.counts.get(kind, outcome);
                prom::sample(
                    out,
                    "engine_actions_total",
                    &[("kind", kind.as_str()), ("status", outcome)],
                    n,
                );
            }
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
    }
}

/// One kind's bookkeeping.
pub struct Ledger {
    store: Arc<Store>,
    kind: ActionKind,
    backoff: Backoff,
    counts: Arc<ActionCounts>,
    /// Actions whose outcome could not be recorded (the store could not write), by seq: their
    /// next turn records that outcome again instead of carrying them out again.
    unrecorded: Mutex<HashMap<u64, QueuedAction>>,
    failures: Throttle,
}

impl Ledger {
    pub fn new(
        store: Arc<Store>,
        kind: ActionKind,
        backoff: Backoff,
        counts: Arc<ActionCounts>,
    ) -> Ledger {
        Ledger {
            store,
            kind,
            backoff,
            counts,
            unrecorded: Default::default(),
            failures: Throttle::new(crate::store::FAILURE_LOG_INTERVAL),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The due actions of this kind (for `DueWork::due`).
    pub fn due(
        &self,
        now_ms: u64,
        after: Option<DueKey>,
        admit: &mut dyn FnMut(DueKey) -> Admit,
    ) -> Result<Due, ReadError> {
        ActionsView(&*self.store).due_now(self.kind, now_ms, after, admit)
    }

    /// The action `seq` to carry out now, or how its turn ended without it: recorded (it is no
    /// longer pending, or an outcome kept from an earlier turn was recorded now) or not.
    pub async fn begin(&self, seq: u64) -> Result<QueuedAction, Done> {
        let kept = self
            .unrecorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&seq);
        if let Some(a) = kept {
            // Carried out (or failed) already: only its outcome is missing. Never again here.
            return Err(self.record(a).await);
        }
        match ActionsView(&*self.store).get_by_seq(seq) {
            Ok(Some(a)) if a.status.is_pending() && a.kind == self.kind => Ok(a),
            Ok(_) => Err(Done::Recorded),
            Err(error) => {
                if let Some(left_out) = self.failures.ready() {
                    tracing::error!(kind = self.kind.as_str(), action_seq = seq, %error, left_out, "cannot read action");
                }
                Err(Done::NotRecorded)
            }
        }
    }

    /// [`Ledger::begin`], and the action's payload read as `T` (`what` names it in the error): a
    /// payload that cannot be read fails the action at once (retrying cannot mend it).
    pub async fn begin_as<T: serde::de::DeserializeOwned>(
        &self,
        seq: u64,
        what: &str,
    ) -> Result<(QueuedAction, T), Done> {
        let a = self.begin(seq).await?;
        match serde_json::from_value(a.payload.clone()) {
            Ok(payload) => Ok((a, payload)),
            Err(e) => {
                let error = format!("the queued {what} cannot be read: {e}");
                Err(self.finish(a, Attempt::Failed { error }).await)
            }
        }
    }

    /// Applies `attempt` to `a` (one more attempt; the next one's time) and records it.
    pub async fn finish(&self, mut a: QueuedAction, attempt: Attempt) -> Done {
        self.settle(&mut a, attempt);
        self.record(a).await
    }

    /// Applies `attempt` to `a` without recording it.
    pub fn settle(&self, a: &mut QueuedAction, attempt: Attempt) {
        a.attempts += 1;
        let kind = self.kind.as_str();
        match attempt {
            Attempt::Done { answer } => {
                a.status = ActionStatus::Done;
                a.done_ms = Some(now_ms());
                a.next_attempt_ms = None;
                a.last_error = None;
                a.answer = Some(answer);
                tracing::info!(kind, action_id = %a.id, run_id = a.run_id, answer = a.answer.as_deref().unwrap_or(""), "action done");
            }
            Attempt::Retry { after, error } if self.within_retry_window(a) => {
                let backoff = self.backoff.delay(a.attempts.saturating_sub(1));
                let delay = after.map_or(backoff, |after| after.max(backoff));
                a.status = ActionStatus::Retrying;
                a.next_attempt_ms = Some(now_ms() + delay.as_millis() as u64);
                a.last_error = Some(error);
                tracing::warn!(kind, action_id = %a.id, error = a.last_error.as_deref().unwrap_or(""), retry_in_ms = delay.as_millis() as u64, "action not done; will retry");
            }
            Attempt::Retry { error, .. } => {
                a.status = ActionStatus::Failed;
                a.next_attempt_ms = None;
                a.last_error = Some(format!(
                    "{error} (still failing {} h after it was queued: given up)",
                    MAX_RETRY_WINDOW.as_secs() / 3600
                ));
                tracing::error!(kind, action_id = %a.id, error = a.last_error.as_deref().unwrap_or(""), "action failed: retry window over");
            }
            Attempt::Failed { error } => {
                a.status = ActionStatus::Failed;
                a.next_attempt_ms = None;
                a.last_error = Some(error);
                tracing::error!(kind, action_id = %a.id, error = a.last_error.as_deref().unwrap_or(""), "action failed permanently");
            }
            Attempt::Skipped { reason } => {
                a.status = ActionStatus::Skipped;
                a.next_attempt_ms = None;
                a.last_error = Some(reason);
                tracing::warn!(kind, action_id = %a.id, reason = a.last_error.as_deref().unwrap_or(""), "action skipped");
            }
        }
    }

    fn within_retry_window(&self, a: &QueuedAction) -> bool {
        now_ms().saturating_sub(a.queued_ms) < MAX_RETRY_WINDOW.as_millis() as u64
    }

    /// Records an action's state; its error and answer text (a far side's words) scrubbed of
    /// secrets first.
    pub async fn record(&self, mut a: QueuedAction) -> Done {
        if let Some(e) = &mut a.last_error {
            redact::scrub_in_place(e);
        }
        if let Some(e) = &mut a.answer {
            redact::scrub_in_place(e);
        }
        self.counts.add(self.kind, a.status);
        let kept = a.clone();
        match self.store.write(move |txn| actions::save(txn, &a)).await {
            Ok(()) => Done::Recorded,
            Err(error) => {
                if let Some(left_out) = self.failures.ready() {
                    tracing::error!(kind = self.kind.as_str(), action_id = %kept.id, %error, left_out, "action state not recorded; recording it again later");
                }
                self.unrecorded
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(kept.seq, kept);
                Done::NotRecorded
            }
        }
    }

    /// An attempt whose task panicked: retried with backoff, failed from [`MAX_PANICS`] on.
    pub async fn record_panic(&self, seq: u64, count: u32, message: String) -> Done {
        let Ok(Some(mut a)) = ActionsView(&*self.store).get_by_seq(seq) else {
            return Done::NotRecorded;
        };
        if !a.status.is_pending() {
            return Done::Recorded;
        }
        let verb = match self.kind {
            ActionKind::Email => "sending",
            _ => "carrying it out",
        };
        a.attempts += 1;
        if count >= MAX_PANICS {
            a.status = ActionStatus::Failed;
            a.next_attempt_ms = None;
            a.last_error = Some(format!("{verb} crashed {count} times: {message}"));
        } else {
            let delay = self.backoff.delay(count - 1);
            a.status = ActionStatus::Retrying;
            a.next_attempt_ms = Some(now_ms() + delay.as_millis() as u64);
            a.last_error = Some(format!("{verb} crashed: {message}"));
        }
        self.record(a).await
    }
}
