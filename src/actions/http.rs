//! The `http` executor: carries out the `http` actions of successful runs (`http_post`,
//! `http_request`) through their `[endpoint.NAME]` (`lookup::endpoints`), one attempt per turn,
//! each with `Idempotency-Key: <action id>`, and records each outcome through its [`Ledger`]:
//! 2xx done; 408, 429, 5xx, timeouts and connection errors retried (not before the answer's
//! `Retry-After`); a 3xx failed (redirects are not followed); other 4xx failed with the status
//! and the first bytes of the answer. An endpoint's `rate_per_s` makes its work wait, and the
//! pool's share per group (group = endpoint) keeps a slow endpoint from holding up the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::ledger::{ActionCounts, Attempt, Ledger};
use crate::lookup::Endpoints;
use crate::lookup::endpoints::{MAX_RATE_WAIT, SendError, retry_after, snippet};
use crate::process::{Admit, Backoff, Due, DueKey, DuePool, DueWork, Step, Task, Work};
use crate::script::{ActionKind, HttpRequest};
use crate::store::actions::ActionsView;
use crate::store::{ReadError, Store};

/// Requests in flight at once, over every endpoint.
pub const MAX_CONCURRENT_HTTP: usize = 8;
/// Slots one endpoint may hold: half, so an endpoint that hangs until its `timeout_ms` leaves
/// the other half to the rest.
pub const HTTP_ENDPOINT_SHARE: usize = MAX_CONCURRENT_HTTP / 2;
/// How often the executor looks for due actions without being woken.
pub const HTTP_TICK: Duration = Duration::from_millis(250);
/// First retry delay of a request that failed transiently; doubled per attempt.
pub const HTTP_RETRY_BASE: Duration = Duration::from_secs(2);
/// Longest delay between two attempts.
pub const HTTP_BACKOFF_CAP: Duration = Duration::from_secs(60 * 60);
/// Longest `Retry-After` honoured: a far side asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 60 * 60);
/// Bytes of an answer read: enough for its first line in the summary or the error.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024;
/// Bytes of the answer kept in an action's answer summary or error.
pub const ANSWER_SNIPPET_BYTES: usize = 200;

/// The `http` queue's executor.
pub struct HttpExecutor {
    ledger: Ledger,
    endpoints: Arc<Endpoints>,
    /// Each due action's endpoint group, read once (dropped when its attempt ends).
    groups: Mutex<HashMap<u64, u64>>,
}

impl HttpExecutor {
    pub fn new(
        store: Arc<Store>,
        endpoints: Arc<Endpoints>,
        retry_base: Duration,
        counts: Arc<ActionCounts>,
    ) -> HttpExecutor {
        let backoff = Backoff {
            base: retry_base,
            cap: HTTP_BACKOFF_CAP,
            jitter: true,
        };
        HttpExecutor {
            ledger: Ledger::new(store, ActionKind::Http, backoff, counts),
            endpoints,
            groups: Mutex::default(),
        }
    }

    /// A scheduler for this executor, one endpoint holding at most [`HTTP_ENDPOINT_SHARE`].
    pub fn pool(self: &Arc<Self>) -> Arc<DuePool<HttpExecutor>> {
        DuePool::shared(
            self.clone(),
            MAX_CONCURRENT_HTTP,
            HTTP_ENDPOINT_SHARE,
            HTTP_TICK,
        )
    }

    /// Carries out due `http` actions until `shutdown`, then waits for those in flight.
    pub async fn run(pool: Arc<DuePool<HttpExecutor>>, shutdown: watch::Receiver<bool>) {
        pool.run(shutdown).await;
    }

    async fn carry_out(&self, seq: u64) -> crate::process::Done {
        let done = self.attempt(seq).await;
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&seq);
        done
    }

    async fn attempt(&self, seq: u64) -> crate::process::Done {
        let (a, request) = match self
            .ledger
            .begin_as::<HttpRequest>(seq, "HTTP request")
            .await
        {
            Ok(x) => x,
            Err(done) => return done,
        };
        let Some(endpoint) = self.endpoints.get(&request.endpoint) else {
            let error = format!(
                "endpoint `{}` is no longer declared in engine.toml (add [endpoint.{}] back and retry the action)",
                request.endpoint, request.endpoint
            );
            return self.ledger.finish(a, Attempt::Failed { error }).await;
        };
        let what = request.describe();
        match endpoint.reserve(MAX_RATE_WAIT) {
            Ok(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
            Ok(_) => {}
            Err(after) => {
                let error = format!(
                    "{what}: waiting for endpoint `{}`'s rate_per_s",
                    endpoint.name
                );
                return self
                    .ledger
                    .finish(
                        a,
                        Attempt::Retry {
                            after: Some(after),
                            error,
                        },
                    )
                    .await;
            }
        }
        let attempt = match endpoint
            .send(&request, Some(&a.id), MAX_ANSWER_BYTES, None)
            .await
        {
            // The endpoint's own backoff (`retry_base_ms`), and its `Retry-After` if later.
            Ok(x) => match classify(&what, x.status, &x.headers, &x.body) {
                Attempt::Retry { after, error } => Attempt::Retry {
                    after: Some(
                        after
                            .unwrap_or_default()
                            .max(endpoint_backoff(endpoint.retry_base, a.attempts)),
                    ),
                    error,
                },
                other => other,
            },
            Err(e @ (SendError::Timeout { .. } | SendError::Connection(_))) => Attempt::Retry {
                after: Some(endpoint_backoff(endpoint.retry_base, a.attempts)),
                error: format!("{what}: {e}"),
            },
            Err(SendError::Invalid(m)) => Attempt::Failed {
                error: format!("{what}: {m}"),
            },
        };
        self.ledger.finish(a, attempt).await
    }
}

/// An endpoint's backoff before attempt `attempts + 1`.
fn endpoint_backoff(base: Duration, attempts: u32) -> Duration {
    Backoff {
        base,
        cap: HTTP_BACKOFF_CAP,
        jitter: true,
    }
    .delay(attempts)
}

/// How an answer ends an attempt.
pub fn classify(what: &str, status: u16, headers: &hyper::HeaderMap, body: &[u8]) -> Attempt {
    let text = snippet(body, ANSWER_SNIPPET_BYTES);
    let said = if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    };
    match status {
        200..=299 => Attempt::Done {
            answer: format!("HTTP {status} — {what}{said}"),
        },
        300..=399 => Attempt::Failed {
            error: format!(
                "HTTP {status} from {what}: redirects are not followed (point the endpoint's url at where it redirects){}",
                headers
                    .get(hyper::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .map(|l| format!(" [Location: {}]", crate::util::redact::scrub(l)))
                    .unwrap_or_default()
            ),
        },
        408 | 429 | 500..=599 => Attempt::Retry {
            after: retry_after(headers, SystemTime::now(), MAX_RETRY_AFTER),
            error: format!("HTTP {status} from {what}{said}"),
        },
        _ => Attempt::Failed {
            error: format!("HTTP {status} from {what}{said}"),
        },
    }
}

impl DueWork for HttpExecutor {
    const KIND: &'static str = "http";

    fn due(
        &self,
        now_ms: u64,
        after: Option<DueKey>,
        admit: &mut dyn FnMut(DueKey) -> Admit,
    ) -> Result<Due, ReadError> {
        self.ledger.due(now_ms, after, admit)
    }

    /// An action's endpoint (a hash of its name): one endpoint's requests share its slots.
    fn group(&self, id: u64) -> Option<u64> {
        if let Some(g) = self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Some(*g);
        }
        let a = ActionsView(&**self.ledger.store()).get_by_seq(id).ok()??;
        let endpoint = a.payload.get("endpoint")?.as_str()?.to_string();
        let group = crate::process::group_of(&endpoint);
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, group);
        Some(group)
    }

    fn execute(self: Arc<Self>, id: u64) -> Work {
        Box::pin(async move { Step::Done(self.carry_out(id).await) })
    }

    fn panicked(self: Arc<Self>, id: u64, count: u32, message: String) -> Task {
        Box::pin(async move {
            self.groups
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            self.ledger.record_panic(id, count, message).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_done_retried_or_failed() {
        let h = hyper::HeaderMap::new();
        assert!(matches!(
            classify("x", 200, &h, b"ok"),
            Attempt::Done { .. }
        ));
        assert!(matches!(classify("x", 204, &h, b""), Attempt::Done { .. }));
        for s in [408, 429, 500, 502, 503] {
            assert!(
                matches!(
                    classify("x", s, &h, b""),
                    Attempt::Retry { after: None, .. }
                ),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 422] {
            let Attempt::Failed { error } = classify("x", s, &h, b"bad thing") else {
                panic!("{s} not failed");
            };
            assert!(
                error.contains(&s.to_string()) && error.contains("bad thing"),
                "{error}"
            );
        }
        let Attempt::Failed { error } = classify("x", 302, &h, b"") else {
            panic!("302 not failed");
        };
        assert!(error.contains("redirects are not followed"), "{error}");
        let mut h = hyper::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(
            classify("x", 429, &h, b""),
            Attempt::Retry {
                after: Some(Duration::from_secs(7)),
                error: "HTTP 429 from x".into()
            }
        );
        let when = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert("retry-after", when.parse().unwrap());
        let Attempt::Retry { after: Some(a), .. } = classify("x", 503, &h, b"") else {
            panic!("no retry-after from a date");
        };
        assert!(
            a > Duration::from_secs(100) && a <= Duration::from_secs(120),
            "{a:?}"
        );
    }
}
