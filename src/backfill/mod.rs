//! System Log backfill: the second way events come in. With `[okta] backfill = true`, `engine
//! serve` polls the Okta System Log every `backfill_interval_s` and stores every event a script
//! of `backfill_hook` subscribes to whose uuid the store has not seen, as a delivery with
//! `source` `"system-log"` on that hook, through the same writer and dedup index as hook
//! deliveries (so an event that came both ways runs once). `engine backfill --since` runs one
//! pass by hand (through the server when one runs).
//!
//! A pass: `GET /api/v1/logs?sortOrder=ASCENDING&since=<cursor>&filter=…` (no `until`: a
//! polling query), then each answer's `Link: rel="next"` until a page is empty or holds an event
//! younger than `backfill_lag_s` (those are left to the hook, and to the next poll). Each page's
//! new events and the cursor (the published time the log has been read up to) are one
//! transaction ([`Store::store_backfill`]), so a crash neither loses nor repeats an event; the
//! cursor only moves forward. A first start begins at "now".
//!
//! Rate limits: every answer's `X-Rate-Limit-Remaining` is compared with
//! `backfill_reserve_percent` of `X-Rate-Limit-Limit`; at or below it the pass pauses until
//! `X-Rate-Limit-Reset`, leaving the rest of the window to the other clients of the org's
//! System Log budget. A 429 is waited out until its reset and the same page asked again. 5xx,
//! timeouts and connection errors end the pass; the next comes after a backoff (1 s doubling, at
//! most the interval). Okta's refusals (400, 401, 403) end the pass with one log line and
//! `engine_backfill_errors_total{reason}`; the next poll tries again. Nothing here exits.
//!
//! # Layout
//!
//! - `filter`: the scripts' subscriptions and the `filter` expression made of them.
//! - this module: [`Backfill`] (the pass, the poll loop, metrics) and its [`Report`].

pub mod filter;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::config::{BackfillConfig, HookKind};
use crate::ingest::envelope;
use crate::lookup::{LogError, MAX_RATE_LIMIT_PAUSE, OktaClient, RateBudget};
use crate::script::LiveScripts;
use crate::store::{NewDelivery, SYSTEM_LOG_SOURCE, Store, WriteError};
use crate::util::prom::{self, MetricsSource};
use filter::{DELIVERY_EVENT_TYPE, Subscriptions};

/// The longest a `since` may reach back: Okta answers 400 for a `since` older than 180 days.
pub const MAX_SINCE_AGE: Duration = Duration::from_secs(180 * 24 * 3600);
/// First wait after a pass that failed transiently (5xx, timeout); doubled per failure, at most
/// the poll interval.
pub const TRANSIENT_BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// How long a pass waits for the budget when an answer gave no `X-Rate-Limit-Reset`.
const RESERVE_FALLBACK_WAIT: Duration = Duration::from_secs(60);
/// 429s one page may meet before the pass gives up (the next poll starts over).
const MAX_RATE_LIMITED_TRIES: u32 = 10;
/// How many failed-delivery uuids are remembered so that a page read twice warns once.
const WARNED_MEMORY: usize = 1024;

/// The backfill's settings, from `[okta]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Polls in `engine serve`.
    pub enabled: bool,
    /// The hook the events are stored on (its scripts make the filter).
    pub hook: String,
    pub lag: Duration,
    pub interval: Duration,
    pub reserve_percent: u64,
    pub page_size: u64,
}

impl Settings {
    /// From `[okta]`'s `backfill*` keys; `None` without a hook to store on.
    pub fn from_config(b: &BackfillConfig) -> Option<Settings> {
        Some(Settings {
            enabled: b.enabled,
            hook: b.hook.clone()?,
            lag: Duration::from_secs(b.lag_s),
            interval: Duration::from_secs(b.interval_s),
            reserve_percent: b.reserve_percent,
            page_size: b.page_size,
        })
    }
}

/// One event of the System Log the store did not hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MissingEvent {
    pub uuid: String,
    pub event_type: String,
    pub published: String,
}

/// What a pass did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    /// The `since` asked for and the time up to which events were taken (younger ones are left
    /// to the hook), RFC 3339.
    pub since: String,
    pub until: String,
    pub filter: String,
    pub requests: u64,
    /// Events read that a script subscribes to, older than the lag.
    pub read: u64,
    /// Those the store lacked, oldest first.
    pub missing: Vec<MissingEvent>,
    /// Of those, how many were stored (0 in a dry run).
    pub stored: u64,
    pub dry_run: bool,
    /// `event_hook.delivery` failures Okta recorded in the pass's span.
    pub delivery_failures: u64,
}

/// Why a pass stopped early.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Okta(#[from] LogError),
    #[error("cannot store backfilled events: {0}")]
    Store(#[from] WriteError),
}

impl PassError {
    fn reason(&self) -> &'static str {
        match self {
            PassError::Okta(e) => e.reason(),
            PassError::Store(_) => "storage",
        }
    }
}

#[derive(Default)]
struct Counters {
    polls: AtomicU64,
    requests: AtomicU64,
    events: AtomicU64,
    known: AtomicU64,
    delivery_failures: AtomicU64,
    rate_pauses: AtomicU64,
    cursor_ms: AtomicU64,
    last_success_ms: AtomicU64,
    failing: AtomicBool,
    /// errors by reason
    errors: Mutex<Vec<(&'static str, u64)>>,
}

/// The System Log poller of one store.
pub struct Backfill {
    okta: Arc<OktaClient>,
    store: Arc<Store>,
    scripts: LiveScripts,
    settings: Settings,
    counters: Counters,
    /// One pass at a time: the poll loop and `engine backfill` through the server.
    pass_lock: tokio::sync::Mutex<()>,
    /// Until when no request is sent (a 429's reset, or the reserve reached).
    hold_until: Mutex<Option<SystemTime>>,
    warned: Mutex<VecDeque<String>>,
}

impl std::fmt::Debug for Backfill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backfill")
            .field("okta", &self.okta)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Backfill {
    pub fn new(
        okta: Arc<OktaClient>,
        store: Arc<Store>,
        scripts: LiveScripts,
        settings: Settings,
    ) -> Backfill {
        let counters = Counters::default();
        if let Ok(Some(ms)) = store.history().backfill_cursor() {
            counters.cursor_ms.store(ms, Ordering::Relaxed);
        }
        Backfill {
            okta,
            store,
            scripts,
            settings,
            counters,
            pass_lock: tokio::sync::Mutex::new(()),
            hold_until: Mutex::new(None),
            warned: Mutex::new(VecDeque::new()),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The poll loop of `engine serve`: a pass from the cursor every interval, until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tracing::info!(
            hook = %self.settings.hook,
            interval_s = self.settings.interval.as_secs(),
            lag_s = self.settings.lag.as_secs(),
            org_url = %self.okta.org_url(),
            "System Log backfill on"
        );
        let mut backoff = TRANSIENT_BACKOFF_FIRST;
        loop {
            if *stop.borrow() {
                return;
            }
            // A stop ends a pass at once, even mid-request: each page's events and its cursor
            // are one writer job, committed whole or not at all, so nothing is half written.
            let mut stopping = stop.clone();
            let polled = tokio::select! {
                r = self.poll(&stop) => r,
                _ = stopping.changed() => return,
            };
            let wait = match polled {
                Ok(()) => {
                    backoff = TRANSIENT_BACKOFF_FIRST;
                    self.settings.interval
                }
                Err(PassError::Okta(LogError::Transient { .. })) => {
                    let wait = backoff.min(self.settings.interval);
                    backoff = (backoff * 2).min(self.settings.interval);
                    wait
                }
                Err(_) => {
                    backoff = TRANSIENT_BACKOFF_FIRST;
                    self.settings.interval
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One poll from the cursor (a first start sets it to now), with its outcome logged and
    /// counted.
    async fn poll(&self, stop: &watch::Receiver<bool>) -> Result<(), PassError> {
        let since = match self.store.history().backfill_cursor() {
            Ok(Some(ms)) => ms,
            Ok(None) => {
                let now = crate::util::now_ms();
                self.store.store_backfill(None, Some(now)).await?;
                self.counters.cursor_ms.store(now, Ordering::Relaxed);
                tracing::info!(since = %crate::util::format_ms(now), "System Log backfill starts now (no cursor yet)");
                now
            }
            Err(e) => {
                let e = PassError::Store(WriteError::Storage(e.to_string()));
                self.failed(&e, true);
                return Err(e);
            }
        };
        // After a downtime longer than Okta lets a query reach back, start from the oldest
        // `since` it accepts (the log keeps 90 days, so nothing older could be fetched anyway)
        // rather than failing every poll with a 400.
        let oldest = oldest_since_ms();
        let since = if since < oldest {
            tracing::warn!(
                cursor = %crate::util::format_ms(since),
                since = %crate::util::format_ms(oldest),
                "the backfill cursor is older than Okta's System Log can be queried (180 days); reading from the oldest time it accepts"
            );
            oldest
        } else {
            since
        };
        match self.pass(since, false, Some(stop)).await {
            Ok(report) => {
                self.counters.failing.store(false, Ordering::Relaxed);
                self.counters
                    .last_success_ms
                    .store(crate::util::now_ms(), Ordering::Relaxed);
                if report.stored > 0 {
                    tracing::info!(
                        stored = report.stored,
                        read = report.read,
                        requests = report.requests,
                        until = %report.until,
                        "backfilled events the hook did not deliver"
                    );
                } else {
                    tracing::debug!(
                        read = report.read,
                        requests = report.requests,
                        "System Log poll: nothing missing"
                    );
                }
                Ok(())
            }
            Err(e) => {
                self.failed(&e, true);
                Err(e)
            }
        }
    }

    /// Counts a failed pass (and, for the poller, logs it: it tries again at the next poll).
    fn failed(&self, e: &PassError, polling: bool) {
        self.counters.failing.store(true, Ordering::Relaxed);
        let reason = e.reason();
        {
            let mut errors = self
                .counters
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match errors.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => *n += 1,
                None => errors.push((reason, 1)),
            }
        }
        if polling {
            tracing::error!(reason, error = %e, "System Log backfill failed; retrying later");
        }
    }

    /// A pass by hand (`engine backfill --since`): from `since_ms` (at most 180 days back),
    /// storing what the store lacks unless `dry_run`.
    pub async fn manual(&self, since_ms: u64, dry_run: bool) -> Result<Report, PassError> {
        let r = self
            .pass(since_ms.max(oldest_since_ms()), dry_run, None)
            .await;
        if let Err(e) = &r {
            // Counted; the command that asked prints the error itself.
            self.failed(e, false);
        }
        r
    }

    /// Reads the System Log from `since_ms` up to now less the lag, page by page; stores each
    /// page's missing events with the cursor (unless `dry_run`).
    pub async fn pass(
        &self,
        since_ms: u64,
        dry_run: bool,
        stop: Option<&watch::Receiver<bool>>,
    ) -> Result<Report, PassError> {
        let _one = self.pass_lock.lock().await;
        self.counters.polls.fetch_add(1, Ordering::Relaxed);
        let until_ms = crate::util::now_ms().saturating_sub(self.settings.lag.as_millis() as u64);
        let subs = Subscriptions::of(&self.scripts.load(), &self.settings.hook);
        let mut report = Report {
            since: crate::util::format_ms(since_ms),
            until: crate::util::format_ms(until_ms.max(since_ms)),
            filter: subs.filter(),
            dry_run,
            ..Report::default()
        };
        if until_ms <= since_ms {
            return Ok(report);
        }
        if subs.is_empty() {
            // No script would receive anything: nothing to read, the span is covered.
            if !dry_run {
                self.advance(until_ms).await?;
            }
            return Ok(report);
        }
        let mut url = self
            .okta
            .system_log_url(since_ms, &report.filter, self.settings.page_size);
        let mut limited = 0;
        loop {
            if stop.is_some_and(|s| *s.borrow()) {
                return Ok(report);
            }
            self.wait_for_budget(stop).await;
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            report.requests += 1;
            let page = match self.okta.system_log_page(&url).await {
                Ok(page) => page,
                Err(LogError::RateLimited { message, until }) => {
                    limited += 1;
                    self.hold(until);
                    let e = PassError::Okta(LogError::RateLimited { message, until });
                    if limited >= MAX_RATE_LIMITED_TRIES {
                        return Err(e);
                    }
                    self.counters.rate_pauses.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "System Log backfill waits for the rate limit to reset");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            limited = 0;
            self.note_budget(&page.budget);
            if page.events.is_empty() {
                break;
            }
            let (young, last_ms, fresh) =
                self.sort_page(&page.events, until_ms, &subs, &mut report);
            if !dry_run {
                let delivery = if fresh.is_empty() {
                    None
                } else {
                    Some(self.delivery(&fresh)?)
                };
                let cursor = if young {
                    until_ms
                } else {
                    last_ms.max(since_ms)
                };
                let stored = self.store.store_backfill(delivery, Some(cursor)).await?;
                self.counters.cursor_ms.fetch_max(cursor, Ordering::Relaxed);
                let known = (fresh.len() - stored.events) as u64;
                report.stored += stored.events as u64;
                self.counters
                    .events
                    .fetch_add(stored.events as u64, Ordering::Relaxed);
                self.counters.known.fetch_add(known, Ordering::Relaxed);
            }
            if young {
                return Ok(report);
            }
            match page.next {
                Some(next) => url = next,
                None => break,
            }
        }
        if !dry_run {
            self.advance(until_ms).await?;
        }
        Ok(report)
    }

    /// Sorts one page: whether it reached events younger than `until_ms` (the rest of the page
    /// and the log are), the latest published time taken, and the events to store (subscribed,
    /// not in the store), each also listed in `report.missing`. Reports failed hook deliveries.
    fn sort_page<'p>(
        &self,
        events: &'p [Box<RawValue>],
        until_ms: u64,
        subs: &Subscriptions,
        report: &mut Report,
    ) -> (bool, u64, Vec<&'p RawValue>) {
        #[derive(Deserialize)]
        struct Head {
            #[serde(default)]
            uuid: Option<String>,
            #[serde(rename = "eventType", default)]
            event_type: Option<String>,
            #[serde(default)]
            published: Option<String>,
        }
        let mut fresh = Vec::new();
        let mut last_ms = 0;
        for raw in events {
            let head: Head = serde_json::from_str(raw.get()).unwrap_or(Head {
                uuid: None,
                event_type: None,
                published: None,
            });
            let published = head.published.unwrap_or_default();
            let published_ms =
                crate::util::parse_rfc3339_nanos(&published).map(|n| (n / 1_000_000).max(0) as u64);
            if published_ms.is_some_and(|ms| ms > until_ms) {
                return (true, last_ms, fresh);
            }
            last_ms = last_ms.max(published_ms.unwrap_or(0));
            let event_type = head.event_type.unwrap_or_default();
            if event_type == DELIVERY_EVENT_TYPE {
                self.delivery_event(raw.get(), head.uuid.as_deref(), report);
            }
            if !subs.matches(&event_type) {
                continue;
            }
            report.read += 1;
            let uuid = envelope::event_id(raw.get().as_bytes());
            // A failed read counts as missing: the writer drops it if it is known after all.
            if self.store.has_event(&uuid).unwrap_or(false) {
                self.counters.known.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            report.missing.push(MissingEvent {
                uuid,
                event_type,
                published,
            });
            fresh.push(&**raw);
        }
        (false, last_ms, fresh)
    }

    /// Warns (once per uuid) about an `event_hook.delivery` event that is not a success.
    fn delivery_event(&self, json: &str, uuid: Option<&str>, report: &mut Report) {
        let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        let result = v["outcome"]["result"].as_str().unwrap_or("");
        if result.eq_ignore_ascii_case("SUCCESS") {
            return;
        }
        report.delivery_failures += 1;
        let uuid = uuid.unwrap_or("").to_string();
        {
            let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
            if warned.contains(&uuid) {
                return;
            }
            if warned.len() >= WARNED_MEMORY {
                warned.pop_front();
            }
            warned.push_back(uuid.clone());
        }
        self.counters
            .delivery_failures
            .fetch_add(1, Ordering::Relaxed);
        let hook = v["target"]
            .as_array()
            .and_then(|t| t.first())
            .and_then(|t| t["displayName"].as_str().or(t["alternateId"].as_str()))
            .unwrap_or("");
        tracing::warn!(
            uuid = %uuid,
            published = v["published"].as_str().unwrap_or(""),
            event_hook = hook,
            outcome = result,
            reason = v["outcome"]["reason"].as_str().unwrap_or(""),
            message = v["displayMessage"].as_str().unwrap_or(""),
            "Okta recorded a failed event hook delivery; backfill fetches the events it carried"
        );
    }

    /// One delivery holding `events` (source `system-log`, a fresh delivery id), parsed by the
    /// one envelope parser.
    fn delivery(&self, events: &[&RawValue]) -> Result<NewDelivery, PassError> {
        let now = crate::util::now_ms();
        let mut body = format!(
            r#"{{"eventType":"com.okta.event_hook","eventTypeVersion":"1.0","cloudEventsVersion":"0.1","source":"{SYSTEM_LOG_SOURCE}","eventId":"system-log-{}","eventTime":"{}","contentType":"application/json","data":{{"events":["#,
            crate::util::new_uuid(),
            crate::util::format_ms(now)
        );
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(e.get());
        }
        body.push_str("]}}");
        let body = Bytes::from(body);
        let parsed = envelope::parse(HookKind::Okta, &body).map_err(|e| {
            PassError::Okta(LogError::Transient {
                message: format!("the System Log's events do not form a delivery: {e}"),
            })
        })?;
        Ok(NewDelivery {
            hook: self.settings.hook.clone(),
            received_ms: now,
            body,
            parsed,
        })
    }

    async fn advance(&self, cursor_ms: u64) -> Result<(), PassError> {
        self.store.store_backfill(None, Some(cursor_ms)).await?;
        self.counters
            .cursor_ms
            .fetch_max(cursor_ms, Ordering::Relaxed);
        Ok(())
    }

    fn hold(&self, until: SystemTime) {
        let until = until.min(SystemTime::now() + MAX_RATE_LIMIT_PAUSE);
        let mut h = self.hold_until.lock().unwrap_or_else(|p| p.into_inner());
        if h.is_none_or(|k| k < until) {
            *h = Some(until);
        }
    }

    /// Holds further requests until the reset once the remaining budget is down to the share
    /// kept for other clients.
    fn note_budget(&self, b: &RateBudget) {
        let (Some(limit), Some(remaining)) = (b.limit, b.remaining) else {
            return;
        };
        if limit == 0 || remaining * 100 > limit * self.settings.reserve_percent {
            return;
        }
        let until = b
            .reset
            .unwrap_or_else(|| SystemTime::now() + RESERVE_FALLBACK_WAIT);
        if until <= SystemTime::now() {
            return;
        }
        self.counters.rate_pauses.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            remaining,
            limit,
            reserve_percent = self.settings.reserve_percent,
            resets_in_s = until
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .as_secs(),
            "System Log backfill pauses until the rate limit resets, leaving the rest to other Okta clients"
        );
        self.hold(until);
    }

    async fn wait_for_budget(&self, stop: Option<&watch::Receiver<bool>>) {
        let until = *self.hold_until.lock().unwrap_or_else(|p| p.into_inner());
        let Some(until) = until else { return };
        let Ok(wait) = until.duration_since(SystemTime::now()) else {
            return;
        };
        match stop {
            Some(stop) => {
                let mut stop = stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            }
            None => tokio::time::sleep(wait).await,
        }
    }
}

impl MetricsSource for Backfill {
    fn render_metrics(&self, out: &mut String) {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        prom::single(
            out,
            "engine_backfill_polls_total",
            "counter",
            "System Log backfill passes started (polls and engine backfill)",
            get(&c.polls),
        );
        prom::single(
            out,
            "engine_backfill_requests_total",
            "counter",
            "Requests sent to the Okta System Log",
            get(&c.requests),
        );
        prom::single(
            out,
            "engine_backfill_events_total",
            "counter",
            "Events stored from the System Log (no delivery had brought them)",
            get(&c.events),
        );
        prom::single(
            out,
            "engine_backfill_known_events_total",
            "counter",
            "Events read from the System Log that a delivery had already brought",
            get(&c.known),
        );
        prom::single(
            out,
            "engine_backfill_rate_limit_pauses_total",
            "counter",
            "Pauses until the System Log rate limit reset (429, or the reserve reached)",
            get(&c.rate_pauses),
        );
        prom::single(
            out,
            "engine_backfill_delivery_failures_total",
            "counter",
            "Failed event hook deliveries (event_hook.delivery) Okta recorded in the System Log",
            get(&c.delivery_failures),
        );
        prom::single(
            out,
            "engine_backfill_cursor_timestamp_seconds",
            "gauge",
            "The published time up to which the System Log has been read (0: never)",
            get(&c.cursor_ms) as f64 / 1000.0,
        );
        prom::single(
            out,
            "engine_backfill_last_success_timestamp_seconds",
            "gauge",
            "When the last poll succeeded (0: never)",
            get(&c.last_success_ms) as f64 / 1000.0,
        );
        prom::single(
            out,
            "engine_backfill_failing",
            "gauge",
            "1 when the last System Log poll failed (see the log and engine_backfill_errors_total)",
            u8::from(c.failing.load(Ordering::Relaxed)),
        );
        prom::family(
            out,
            "engine_backfill_errors_total",
            "counter",
            "Failed System Log passes by reason (unauthorized, forbidden, bad_request, rate_limited, unavailable, storage, rejected)",
        );
        let errors = c.errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for reason in [
            "unauthorized",
            "forbidden",
            "bad_request",
            "rate_limited",
            "unavailable",
            "storage",
            "rejected",
        ] {
            let n = errors
                .iter()
                .find(|(r, _)| *r == reason)
                .map_or(0, |(_, n)| *n);
            prom::sample(
                out,
                "engine_backfill_errors_total",
                &[("reason", reason)],
                n,
            );
        }
    }
}

/// The oldest `since` Okta accepts now: [`MAX_SINCE_AGE`] back, less a minute's margin for the
/// clocks and the request's travel.
fn oldest_since_ms() -> u64 {
    crate::util::now_ms()
        .saturating_sub(MAX_SINCE_AGE.as_millis() as u64)
        .saturating_add(60_000)
}

/// Parses `engine backfill --since`'s duration: a number with `s`, `m`, `h` or `d` (`24h`,
/// `90m`, `7d`), or whole seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write it as 30m, 24h or 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: unknown unit `{unit}`; use s, m, h or d")),
    };
    let d = Duration::from_secs(n.saturating_mul(secs));
    if d > MAX_SINCE_AGE {
        return Err(format!(
            "`{text}` reaches back further than Okta's System Log can be queried (180 days; it keeps events for 90)"
        ));
    }
    if d.is_zero() {
        return Err(format!("`{text}` is no time at all"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("200d").is_err());
        assert!(parse_duration("0h").is_err());
        assert!(parse_duration("h").is_err());
    }
}
