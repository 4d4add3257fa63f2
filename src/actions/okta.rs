//! The `okta` executor: carries out the `okta::` actions of successful runs through the one Okta
//! client (`lookup::OktaClient::perform`: logins and group names resolved to ids, "already so"
//! counts as done, deactivation never deletes, the rate limit kept), one attempt per turn, and
//! records each outcome through its [`Ledger`]. Without `[okta]` every such action is skipped,
//! saying why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::ledger::{ActionCounts, Attempt, Ledger};
use crate::lookup::{OktaClient, OpOutcome};
use crate::process::{Admit, Backoff, Due, DueKey, DuePool, DueWork, Step, Task, Work};
use crate::script::{ActionKind, OktaAction};
use crate::store::actions::ActionsView;
use crate::store::{ReadError, Store};

/// Okta operations carried out at once. Okta's rate limits are per endpoint and per org (the
/// client pauses at each endpoint's reserve); a few in flight hide the ~100 ms round trip
/// without bursting into a 429.
pub const MAX_CONCURRENT_OKTA: usize = 4;
/// How often the executor looks for due actions without being woken.
pub const OKTA_TICK: Duration = Duration::from_millis(250);
/// The longest one attempt holds its slot, rate-limit pause included: a longer pause (a reset a
/// minute away) ends the attempt as a retry at the reset instead, freeing the slot.
pub const OKTA_ATTEMPT_LIMIT: Duration = Duration::from_secs(30);
/// First retry delay of an operation that failed transiently (5xx, connection): Okta's
/// outages are short; the backoff doubles from here.
pub const OKTA_RETRY_BASE: Duration = Duration::from_secs(2);
/// Longest delay between two attempts: a day-long outage costs ~30 attempts.
pub const OKTA_BACKOFF_CAP: Duration = Duration::from_secs(60 * 60);
/// Why an `okta` action is skipped when the engine has no `[okta]` section.
pub const NO_OKTA_SKIPPED: &str = "skipped: engine.toml has no [okta] section (org_url and token_env, or client_id and private_key_env); `engine check` reports okta:: actions without it";

/// The `okta` queue's executor.
pub struct OktaExecutor {
    ledger: Ledger,
    client: Option<Arc<OktaClient>>,
}

impl OktaExecutor {
    /// `client`: the engine's one Okta client, or `None` without `[okta]` (actions skipped).
    pub fn new(
        store: Arc<Store>,
        client: Option<Arc<OktaClient>>,
        retry_base: Duration,
        counts: Arc<ActionCounts>,
    ) -> OktaExecutor {
        let backoff = Backoff {
            base: retry_base,
            cap: OKTA_BACKOFF_CAP,
            jitter: true,
        };
        OktaExecutor {
            ledger: Ledger::new(store, ActionKind::Okta, backoff, counts),
            client,
        }
    }

    /// A scheduler for this executor; its waker is what runs notify when they queued one. The
    /// actions of one run are carried out one at a time, in the order the script called them
    /// (`suspend_user` before `clear_sessions`); different runs' actions in parallel.
    pub fn pool(self: &Arc<Self>) -> Arc<DuePool<OktaExecutor>> {
        DuePool::shared(self.clone(), MAX_CONCURRENT_OKTA, 1, OKTA_TICK)
    }

    /// Carries out due `okta` actions until `shutdown`, then waits for those in flight.
    pub async fn run(pool: Arc<DuePool<OktaExecutor>>, shutdown: watch::Receiver<bool>) {
        pool.run(shutdown).await;
    }

    async fn carry_out(&self, seq: u64) -> crate::process::Done {
        let (a, action) = match self.ledger.begin_as::<OktaAction>(seq, "Okta action").await {
            Ok(begun) => begun,
            Err(done) => return done,
        };
        let Some(client) = &self.client else {
            let reason = NO_OKTA_SKIPPED.to_string();
            return self.ledger.finish(a, Attempt::Skipped { reason }).await;
        };
        let deadline = Instant::now() + OKTA_ATTEMPT_LIMIT;
        let attempt = match client.perform(&action.op, &a.id, Some(deadline)).await {
            OpOutcome::Done { summary } => Attempt::Done {
                answer: format!("{} — {summary}", action.op.describe()),
            },
            OpOutcome::Retry { after, error } => Attempt::Retry { after, error },
            OpOutcome::Failed { error } => Attempt::Failed { error },
        };
        self.ledger.finish(a, attempt).await
    }
}

impl DueWork for OktaExecutor {
    const KIND: &'static str = "okta";

    fn due(
        &self,
        now_ms: u64,
        after: Option<DueKey>,
        admit: &mut dyn FnMut(DueKey) -> Admit,
    ) -> Result<Due, ReadError> {
        self.ledger.due(now_ms, after, admit)
    }

    /// The run that queued the action: one at a time per run (see [`OktaExecutor::pool`]).
    fn group(&self, id: u64) -> Option<u64> {
        ActionsView(&**self.ledger.store())
            .get_by_seq(id)
            .ok()
            .flatten()
            .map(|a| a.run_id)
    }

    fn execute(self: Arc<Self>, id: u64) -> Work {
        Box::pin(async move { Step::Done(self.carry_out(id).await) })
    }

    fn panicked(self: Arc<Self>, id: u64, count: u32, message: String) -> Task {
        Box::pin(async move { self.ledger.record_panic(id, count, message).await })
    }
}
