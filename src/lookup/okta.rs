//! The Okta Users API: `GET {org_url}/api/v1/users/{key}` with `Authorization: SSWS <token>`.
//! 200 → the user; 404 `E0000007` → `None`; 429 → [`LookupError::RateLimited`] at once, with the
//! time it resets (`X-Rate-Limit-Reset`, or `Retry-After`): the run is retried then, and until
//! then every lookup fails the same way without asking Okta. Nothing waits inside a lookup: a
//! run holds a worker thread while it waits. 5xx, timeouts and connection errors →
//! [`LookupError::Transient`]; no answer by the run's deadline → [`LookupError::OutOfTime`];
//! 401/403 → [`LookupError::Permanent`] with a hint. The token is a [`Secret`]: it is in no
//! `Debug` output and no error message of ours (a far side that echoes it is scrubbed by
//! `util::redact` wherever text is recorded or logged).
//!
//! The one client of the Okta Management API: `lookup_user`, the System Log backfill
//! (`system_log.rs`), the `okta::` reads and actions (`okta_ops.rs`) share it, and with it the
//! credentials (`okta_auth.rs`: an SSWS token or an OAuth service app's cached access token),
//! the rate-limit hold-off and the `X-Rate-Limit-Remaining` budget per endpoint.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};

use super::okta_auth::Auth;
use super::system_log::RateBudget;
use super::{LookupError, User, scalar_string, user_from_json};
use crate::config::{OktaConfig, OktaCredentials, Secret};

/// One Okta request (connect, TLS, answer) may take this long, and never longer than the run
/// that asks has left; Okta answers in ~100 ms.
pub const OKTA_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP connect timeout for Okta: a black-holed address fails fast instead of eating the run.
pub const OKTA_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest Okta answer read; a user object is a few KiB even with many custom attributes.
pub const MAX_OKTA_BODY_BYTES: usize = 1024 * 1024;
/// A 429 without a usable `X-Rate-Limit-Reset` or `Retry-After` is taken to reset this long after
/// it came.
const RATE_LIMIT_FALLBACK_WAIT: Duration = Duration::from_secs(1);
/// Longest rate-limit pause taken from a 429's headers: Okta's windows are one minute, so a reset
/// further away (a wrong clock, a proxy's header) must not park every lookup for longer.
pub const MAX_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(5 * 60);

pub(super) type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The client of the Okta Management API.
pub struct OktaClient {
    org_url: String,
    pub(super) auth: Auth,
    pub(super) client: HttpsClient,
    /// Until when the org answers 429 (the latest reset a 429 announced): lookups before then
    /// fail at once, without a request.
    rate_limited_until: Mutex<Option<SystemTime>>,
    /// The latest `X-Rate-Limit-*` headers per endpoint bucket (see `okta_ops::bucket`): an
    /// action waits for the reset instead of spending a bucket's last requests.
    pub(super) budgets: Mutex<std::collections::HashMap<String, RateBudget>>,
}

impl fmt::Debug for OktaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OktaClient")
            .field("org_url", &self.org_url)
            .field("auth", &self.auth)
            .finish()
    }
}

/// A request body: JSON (the Management API) or a form (the OAuth token endpoint).
pub(super) enum Body {
    Empty,
    Json(Vec<u8>),
    Form(String),
}

/// Characters left as they are in the user key path segment (RFC 3986 unreserved).
pub(super) const KEY_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl OktaClient {
    /// `org_url` like `https://example.okta.com` (`http://` is accepted for tests and proxies),
    /// with an SSWS API token.
    pub fn new(org_url: &str, token: Secret) -> Result<OktaClient, LookupError> {
        OktaClient::with_credentials(org_url, OktaCredentials::Token(token))
    }

    /// With either kind of credentials; a service app's private key is checked here (it must
    /// sign), so a bad key fails at start, not at the first request.
    pub fn with_credentials(
        org_url: &str,
        credentials: OktaCredentials,
    ) -> Result<OktaClient, LookupError> {
        let org_url = org_url.trim_end_matches('/').to_string();
        if !(org_url.starts_with("https://") || org_url.starts_with("http://")) {
            return Err(LookupError::Permanent(format!(
                "okta.org_url `{org_url}` is not an http(s) URL"
            )));
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(OKTA_CONNECT_TIMEOUT));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| LookupError::Permanent(format!("TLS setup for Okta: {e}")))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let auth = Auth::new(&org_url, credentials)?;
        Ok(OktaClient {
            org_url,
            auth,
            client,
            rate_limited_until: Mutex::new(None),
            budgets: Mutex::new(Default::default()),
        })
    }

    /// From the `[okta]` section and the credentials read from its variables.
    pub fn from_config(
        cfg: &OktaConfig,
        credentials: OktaCredentials,
    ) -> Result<OktaClient, LookupError> {
        OktaClient::with_credentials(&cfg.org_url, credentials)
    }

    pub fn org_url(&self) -> &str {
        &self.org_url
    }

    /// The user whose id or login is `key`; `Ok(None)` when Okta says there is none. Returns by
    /// `deadline` ([`LookupError::OutOfTime`] without an answer by then).
    pub async fn get_user(
        &self,
        key: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<User>, LookupError> {
        let url = format!(
            "{}/api/v1/users/{}",
            self.org_url,
            percent_encoding::utf8_percent_encode(key, KEY_ESCAPE)
        );
        if let Some(until) = self.rate_limited() {
            return Err(LookupError::RateLimited {
                message: format!(
                    "Okta rate limit reached (429); not asking Okta again before it resets in {} s",
                    seconds_until(until)
                ),
                until,
            });
        }
        let (status, headers, body) = self.get(&url, deadline).await?;
        match status {
            StatusCode::OK => {
                let obj: Map<String, Value> = serde_json::from_slice(&body).map_err(|e| {
                    LookupError::Transient(format!(
                        "Okta answered 200 for user {key:?} with a body that is not a user object: {e}"
                    ))
                })?;
                user_from_json(&obj)
                    .map(Some)
                    .map_err(|e| LookupError::Transient(format!("Okta user {key:?}: {e}")))
            }
            StatusCode::NOT_FOUND => {
                if okta_error(&body).0.as_deref() == Some("E0000007") {
                    return Ok(None);
                }
                Err(LookupError::Permanent(format!(
                    "Okta answered 404 without errorCode E0000007 for {url}; does okta.org_url point at an Okta org?"
                )))
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let err = self.read_error(status, &headers, &body, &format!("user {key:?}"));
                if let LookupError::RateLimited { until, .. } = &err {
                    tracing::info!(
                        org_url = %self.org_url,
                        resets_in_s = seconds_until(*until),
                        "Okta rate limit reached (429); lookups fail transient until it resets"
                    );
                }
                Err(err)
            }
            _ => Err(self.read_error(status, &headers, &body, &format!("user {key:?}"))),
        }
    }

    /// The reset of a rate limit still in force.
    pub(super) fn rate_limited(&self) -> Option<SystemTime> {
        let until = *self
            .rate_limited_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        until.filter(|u| *u > SystemTime::now())
    }

    pub(super) fn note_rate_limit(&self, until: SystemTime) {
        let mut known = self
            .rate_limited_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if known.is_none_or(|k| k < until) {
            *known = Some(until);
        }
    }

    /// One exchange, bounded by [`OKTA_REQUEST_TIMEOUT`] and by `deadline`, whichever is first.
    async fn get(
        &self,
        url: &str,
        deadline: Option<Instant>,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), LookupError> {
        self.get_limited(url, deadline, MAX_OKTA_BODY_BYTES).await
    }

    /// [`OktaClient::get`] reading at most `max_body` bytes of the answer.
    pub(super) async fn get_limited(
        &self,
        url: &str,
        deadline: Option<Instant>,
        max_body: usize,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), LookupError> {
        self.call(Method::GET, url, None, deadline, max_body, None)
            .await
    }

    /// One authenticated exchange with the Management API: the credentials' header (a service
    /// app's token fetched or taken from the cache), `json` as the body, `Idempotency-Key` when
    /// given. A 401 to a cached OAuth token drops it and tries once more with a fresh one.
    pub(super) async fn call(
        &self,
        method: Method,
        url: &str,
        json: Option<&serde_json::Value>,
        deadline: Option<Instant>,
        max_body: usize,
        idempotency_key: Option<&str>,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), LookupError> {
        let body = match json {
            Some(v) => Body::Json(serde_json::to_vec(v).map_err(|e| {
                LookupError::Permanent(format!("cannot encode the Okta request body: {e}"))
            })?),
            None => Body::Empty,
        };
        let mut refreshed = false;
        loop {
            let (auth, from_cache) = self.auth.header(self, deadline).await?;
            let answer = self
                .send(
                    method.clone(),
                    url,
                    Some(auth),
                    &body,
                    deadline,
                    max_body,
                    idempotency_key,
                )
                .await?;
            if answer.0 == StatusCode::UNAUTHORIZED && from_cache && !refreshed {
                // An access token revoked or expired early: one fresh token, then the answer
                // stands.
                self.auth.forget_token().await;
                refreshed = true;
                continue;
            }
            self.note_budget(&method, url, &answer.1);
            return Ok(answer);
        }
    }

    /// One exchange, bounded by [`OKTA_REQUEST_TIMEOUT`] and by `deadline`, whichever is first.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send(
        &self,
        method: Method,
        url: &str,
        auth: Option<header::HeaderValue>,
        body: &Body,
        deadline: Option<Instant>,
        max_body: usize,
        idempotency_key: Option<&str>,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), LookupError> {
        let started = Instant::now();
        let timeout_end = started + OKTA_REQUEST_TIMEOUT;
        let (end, bound_by_run) = match deadline {
            Some(d) if d < timeout_end => (d, true),
            _ => (timeout_end, false),
        };
        let out_of_time = || {
            LookupError::OutOfTime(format!(
                "Okta at {} did not answer within the {} ms the run had left",
                self.org_url,
                end.saturating_duration_since(started).as_millis()
            ))
        };
        if bound_by_run && end <= started {
            return Err(out_of_time());
        }
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("engine/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let payload = match body {
            Body::Empty => Bytes::new(),
            Body::Json(b) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(b.clone())
            }
            Body::Form(f) => {
                request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Bytes::from(f.clone())
            }
        };
        let request = request.body(Full::new(payload)).map_err(|_| {
            LookupError::Permanent(format!("cannot build the Okta request for {url}"))
        })?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                LookupError::Transient(format!(
                    "cannot reach Okta at {}: {}",
                    self.org_url,
                    chain(&e)
                ))
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|e| {
                    LookupError::Transient(format!(
                        "reading Okta's answer from {}: {e}",
                        self.org_url
                    ))
                })?
                .to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        match tokio::time::timeout_at(tokio::time::Instant::from_std(end), exchange).await {
            Ok(r) => r,
            Err(_) if bound_by_run => Err(out_of_time()),
            Err(_) => Err(LookupError::Transient(format!(
                "Okta at {} did not answer within {} s",
                self.org_url,
                OKTA_REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// An error and its sources on one line (hyper's top-level message alone says little).
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `(errorCode, errorSummary)` of an Okta error body.
pub(super) fn okta_error(body: &[u8]) -> (Option<String>, Option<String>) {
    match serde_json::from_slice::<Map<String, Value>>(body) {
        Ok(m) => (
            m.get("errorCode").and_then(scalar_string),
            m.get("errorSummary").and_then(scalar_string),
        ),
        Err(_) => (None, None),
    }
}

pub(super) fn okta_error_suffix(body: &[u8]) -> String {
    match okta_error(body) {
        (Some(code), Some(summary)) => format!(" {code}: {summary}"),
        (Some(code), None) => format!(" {code}"),
        (None, Some(summary)) => format!(": {summary}"),
        (None, None) => String::new(),
    }
}

/// When a 429 resets: the later of `X-Rate-Limit-Reset` (UTC epoch seconds) and `Retry-After`
/// (seconds, or an HTTP date), [`RATE_LIMIT_FALLBACK_WAIT`] after `now` without either, and at
/// most [`MAX_RATE_LIMIT_PAUSE`] after `now`.
pub(super) fn rate_limit_until(headers: &hyper::HeaderMap, now: SystemTime) -> SystemTime {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let reset = text("x-rate-limit-reset")
        .and_then(|v| v.parse::<u64>().ok())
        .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)));
    let retry_after = text("retry-after").and_then(|v| match v.parse::<u64>() {
        Ok(secs) => now.checked_add(Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(v).ok(),
    });
    let until = match (reset, retry_after) {
        (Some(a), Some(b)) => a.max(b),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => now + RATE_LIMIT_FALLBACK_WAIT,
    };
    until.min(now + MAX_RATE_LIMIT_PAUSE)
}

/// Whole seconds from now until `t`, rounded up.
fn seconds_until(t: SystemTime) -> u64 {
    let left = t.duration_since(SystemTime::now()).unwrap_or_default();
    left.as_secs() + u64::from(left.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn a_429_resets_at_the_later_header_capped() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        let reset = headers(&[("x-rate-limit-reset", "1700000002")]);
        assert_eq!(rate_limit_until(&reset, now), at(1_700_000_002));
        let both = headers(&[("x-rate-limit-reset", "1700000002"), ("retry-after", "7")]);
        assert_eq!(rate_limit_until(&both, now), at(1_700_000_007));
        let date = headers(&[("retry-after", "Tue, 14 Nov 2023 22:13:30 GMT")]);
        assert_eq!(rate_limit_until(&date, now), at(1_700_000_010));
        assert_eq!(
            rate_limit_until(&headers(&[]), now),
            now + RATE_LIMIT_FALLBACK_WAIT
        );
        let far = headers(&[("x-rate-limit-reset", "1800000000")]);
        assert_eq!(rate_limit_until(&far, now), now + MAX_RATE_LIMIT_PAUSE);
        let junk = headers(&[("x-rate-limit-reset", "soon"), ("retry-after", "later")]);
        assert_eq!(rate_limit_until(&junk, now), now + RATE_LIMIT_FALLBACK_WAIT);
    }
}
