//! The Okta Users API: `GET {org_url}/api/v1/users/{key}` with `Authorization: SSWS <token>`.
//! 200 → the user; 404 `E0000007` → `None`; 429 → waits for `X-Rate-Limit-Reset` when that is at
//! most [`DEFAULT_MAX_RATE_LIMIT_WAIT`] away (else transient); 5xx, timeouts and connection
//! errors → [`LookupError::Transient`]; 401/403 → [`LookupError::Permanent`] with a hint. The
//! token is a [`Secret`]: it is in no `Debug` output and no error message.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};

use super::{LookupError, User, scalar_string, user_from_json};
use crate::config::{OktaConfig, Secret};

/// One Okta request (connect, TLS, answer) may take this long; Okta answers in ~100 ms, and a
/// script run has a wall-time limit of a few seconds.
pub const OKTA_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP connect timeout for Okta: a black-holed address fails fast instead of eating the run.
pub const OKTA_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest Okta answer read; a user object is a few KiB even with many custom attributes.
pub const MAX_OKTA_BODY_BYTES: usize = 1024 * 1024;
/// Longest wait for `X-Rate-Limit-Reset` done inside a lookup; a later reset fails the lookup as
/// transient instead, so the run is retried with backoff and does not hold its thread (Okta's
/// windows are one minute; a run's wall time is seconds).
pub const DEFAULT_MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(5);
/// A 429 without a usable `X-Rate-Limit-Reset` waits this long before the retry.
const RATE_LIMIT_FALLBACK_WAIT: Duration = Duration::from_secs(1);
/// Retries after a 429 within one lookup; more means the org is saturated: give up (transient).
pub const MAX_RATE_LIMIT_RETRIES: u32 = 2;

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A client for `GET /api/v1/users/{id-or-login}`.
pub struct OktaClient {
    org_url: String,
    token: Secret,
    client: HttpsClient,
    max_rate_limit_wait: Duration,
}

impl fmt::Debug for OktaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OktaClient")
            .field("org_url", &self.org_url)
            .field("token", &self.token)
            .finish()
    }
}

/// Characters left as they are in the user key path segment (RFC 3986 unreserved).
const KEY_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl OktaClient {
    /// `org_url` like `https://example.okta.com` (`http://` is accepted for tests and proxies).
    pub fn new(org_url: &str, token: Secret) -> Result<OktaClient, LookupError> {
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
        Ok(OktaClient {
            org_url,
            token,
            client,
            max_rate_limit_wait: DEFAULT_MAX_RATE_LIMIT_WAIT,
        })
    }

    /// From the `[okta]` section and the token read from its `token_env` variable.
    pub fn from_config(cfg: &OktaConfig, token: Secret) -> Result<OktaClient, LookupError> {
        OktaClient::new(&cfg.org_url, token)
    }

    /// Changes the longest `X-Rate-Limit-Reset` wait done in place (default
    /// [`DEFAULT_MAX_RATE_LIMIT_WAIT`]).
    pub fn with_max_rate_limit_wait(mut self, wait: Duration) -> OktaClient {
        self.max_rate_limit_wait = wait;
        self
    }

    pub fn org_url(&self) -> &str {
        &self.org_url
    }

    /// The user whose id or login is `key`; `Ok(None)` when Okta says there is none.
    pub async fn get_user(&self, key: &str) -> Result<Option<User>, LookupError> {
        let url = format!(
            "{}/api/v1/users/{}",
            self.org_url,
            percent_encoding::utf8_percent_encode(key, KEY_ESCAPE)
        );
        let mut rate_limited = 0;
        loop {
            let (status, headers, body) = self.get(&url).await?;
            match status {
                StatusCode::OK => {
                    let obj: Map<String, Value> = serde_json::from_slice(&body).map_err(|e| {
                        LookupError::Transient(format!(
                            "Okta answered 200 for user {key:?} with a body that is not a user object: {e}"
                        ))
                    })?;
                    return user_from_json(&obj)
                        .map(Some)
                        .map_err(|e| LookupError::Transient(format!("Okta user {key:?}: {e}")));
                }
                StatusCode::NOT_FOUND => {
                    if okta_error(&body).0.as_deref() == Some("E0000007") {
                        return Ok(None);
                    }
                    return Err(LookupError::Permanent(format!(
                        "Okta answered 404 without errorCode E0000007 for {url}; does okta.org_url point at an Okta org?"
                    )));
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    let wait = rate_limit_wait(&headers);
                    if rate_limited >= MAX_RATE_LIMIT_RETRIES || wait > self.max_rate_limit_wait {
                        return Err(LookupError::Transient(format!(
                            "Okta rate limit reached (429) looking up {key:?}; it resets in {} s",
                            wait.as_secs()
                        )));
                    }
                    rate_limited += 1;
                    tracing::info!(
                        "Okta rate limit reached (429); waiting {} ms for X-Rate-Limit-Reset",
                        wait.as_millis()
                    );
                    tokio::time::sleep(wait).await;
                }
                StatusCode::UNAUTHORIZED => {
                    return Err(LookupError::Permanent(format!(
                        "Okta rejected the API token (401{}): check that the variable named by okta.token_env holds a valid, active Okta API token",
                        okta_error_suffix(&body)
                    )));
                }
                StatusCode::FORBIDDEN => {
                    return Err(LookupError::Permanent(format!(
                        "Okta refused the request (403{}): the API token's admin needs permission to read users",
                        okta_error_suffix(&body)
                    )));
                }
                s if s.is_server_error() => {
                    return Err(LookupError::Transient(format!(
                        "Okta answered {s}{} looking up {key:?}",
                        okta_error_suffix(&body)
                    )));
                }
                s => {
                    return Err(LookupError::Permanent(format!(
                        "Okta answered {s}{} looking up {key:?}",
                        okta_error_suffix(&body)
                    )));
                }
            }
        }
    }

    async fn get(&self, url: &str) -> Result<(StatusCode, hyper::HeaderMap, Bytes), LookupError> {
        let mut auth = header::HeaderValue::try_from(format!("SSWS {}", self.token.expose()))
            .map_err(|_| {
                LookupError::Permanent(
                    "the Okta API token is not a valid header value (check okta.token_env)"
                        .to_string(),
                )
            })?;
        auth.set_sensitive(true);
        let request = Request::get(url)
            .header(header::AUTHORIZATION, auth)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("engine/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|_| {
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
            let body = Limited::new(body, MAX_OKTA_BODY_BYTES)
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
        match tokio::time::timeout(OKTA_REQUEST_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err(LookupError::Transient(format!(
                "Okta at {} did not answer within {} s",
                self.org_url,
                OKTA_REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// An error and its sources on one line (hyper's top-level message alone says little).
fn chain(e: &dyn std::error::Error) -> String {
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
fn okta_error(body: &[u8]) -> (Option<String>, Option<String>) {
    match serde_json::from_slice::<Map<String, Value>>(body) {
        Ok(m) => (
            m.get("errorCode").and_then(scalar_string),
            m.get("errorSummary").and_then(scalar_string),
        ),
        Err(_) => (None, None),
    }
}

fn okta_error_suffix(body: &[u8]) -> String {
    match okta_error(body) {
        (Some(code), Some(summary)) => format!(" {code}: {summary}"),
        (Some(code), None) => format!(" {code}"),
        (None, Some(summary)) => format!(": {summary}"),
        (None, None) => String::new(),
    }
}

/// How long until `X-Rate-Limit-Reset` (UTC epoch seconds), rounded up to the next second.
fn rate_limit_wait(headers: &hyper::HeaderMap) -> Duration {
    let reset = headers
        .get("x-rate-limit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(reset) = reset else {
        return RATE_LIMIT_FALLBACK_WAIT;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(reset).saturating_sub(now)
}
