//! The Okta System Log API, as the backfill polls it: `GET {org_url}/api/v1/logs` with
//! `sortOrder=ASCENDING`, `since`, `limit` and a `filter`, no `until` (a polling query), then
//! the `Link: <…>; rel="next"` URL of each answer (its `after` token), which a polling query
//! always has, even on an empty page. Through [`OktaClient`]'s one exchange (the SSWS header,
//! its timeouts, the token kept out of every message).
//!
//! Every answer's `X-Rate-Limit-Limit/-Remaining/-Reset` is handed back ([`RateBudget`]) so the
//! caller can leave a share of the budget to other clients. 429 → [`LogError::RateLimited`]
//! with its reset; 5xx, timeouts, connection errors → [`LogError::Transient`]; any other answer
//! (400 for a bad filter or a `since` out of range, 401 for a bad token, 403 for a token
//! without the permission, `okta.logs.read` for OAuth) → [`LogError::Rejected`], one line
//! naming the status, Okta's `errorCode` and `errorSummary` (and causes), and what to check.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::StatusCode;
use serde_json::value::RawValue;

use super::LookupError;
use super::okta::{OktaClient, okta_error_suffix, rate_limit_until};

/// Largest System Log page read: 1000 events of a few KiB each.
pub const MAX_LOG_PAGE_BYTES: usize = 32 * 1024 * 1024;

/// The System Log endpoint's path.
pub const LOGS_PATH: &str = "/api/v1/logs";

/// Characters left as they are in a query value (RFC 3986 unreserved).
const QUERY_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What one answer said about the rate limit of the endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateBudget {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// When the window resets (`X-Rate-Limit-Reset`, UTC epoch seconds).
    pub reset: Option<SystemTime>,
}

/// One page of the System Log.
#[derive(Debug)]
pub struct LogPage {
    /// Each LogEvent's JSON as Okta sent it, in the order sent (ascending `published`).
    pub events: Vec<Box<RawValue>>,
    /// The `rel="next"` URL (on the org's own origin; any other is ignored).
    pub next: Option<String>,
    pub budget: RateBudget,
}

/// Why a page was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// 429: ask again from `until` (the reset) on.
    #[error("{message}")]
    RateLimited { message: String, until: SystemTime },
    /// 5xx, a timeout, a connection error, an unreadable 200: worth retrying soon.
    #[error("{message}")]
    Transient { message: String },
    /// Okta refused the request (400, 401, 403, …): retrying the same request will not help until
    /// the configuration (or the org) changes.
    #[error("{message}")]
    Rejected { status: u16, message: String },
}

impl LogError {
    /// A short stable name of the kind of failure, for `/metrics`.
    pub fn reason(&self) -> &'static str {
        match self {
            LogError::RateLimited { .. } => "rate_limited",
            LogError::Transient { .. } => "unavailable",
            LogError::Rejected { status: 401, .. } => "unauthorized",
            LogError::Rejected { status: 403, .. } => "forbidden",
            LogError::Rejected { status: 400, .. } => "bad_request",
            LogError::Rejected { .. } => "rejected",
        }
    }
}

impl OktaClient {
    /// The first URL of a polling query: events published (persisted, for a polling query) at
    /// or after `since_ms`, oldest first, `limit` per page, filtered by `filter` (empty: none).
    pub fn system_log_url(&self, since_ms: u64, filter: &str, limit: u64) -> String {
        let mut url = format!(
            "{}{LOGS_PATH}?sortOrder=ASCENDING&limit={limit}&since={}",
            self.org_url(),
            percent_encoding::utf8_percent_encode(&crate::util::format_ms(since_ms), QUERY_ESCAPE)
        );
        if !filter.is_empty() {
            url.push_str("&filter=");
            url.push_str(&percent_encoding::utf8_percent_encode(filter, QUERY_ESCAPE).to_string());
        }
        url
    }

    /// Reads one page of the System Log at `url` (a URL from [`OktaClient::system_log_url`] or
    /// a page's `next`).
    pub async fn system_log_page(&self, url: &str) -> Result<LogPage, LogError> {
        let (status, headers, body) = self
            .get_limited(url, None, MAX_LOG_PAGE_BYTES)
            .await
            .map_err(|e| match e {
                LookupError::Permanent(m) => LogError::Rejected {
                    status: 0,
                    message: m,
                },
                other => LogError::Transient {
                    message: other.to_string(),
                },
            })?;
        let budget = budget(&headers);
        match status {
            StatusCode::OK => {
                let events: Vec<Box<RawValue>> =
                    serde_json::from_slice(&body).map_err(|e| LogError::Transient {
                        message: format!(
                            "Okta answered 200 for the System Log with a body that is not an array of events: {e}"
                        ),
                    })?;
                if let Some(bad) = events.iter().position(|e| !e.get().starts_with('{')) {
                    return Err(LogError::Transient {
                        message: format!("the System Log's event {bad} is not a JSON object"),
                    });
                }
                Ok(LogPage {
                    events,
                    next: next_link(&headers, self.org_url(), LOGS_PATH),
                    budget,
                })
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let until = rate_limit_until(&headers, SystemTime::now());
                let left = until
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .as_secs_f64()
                    .ceil();
                Err(LogError::RateLimited {
                    message: format!(
                        "Okta's System Log rate limit reached (429{}); it resets in {left} s",
                        okta_error_suffix(&body)
                    ),
                    until,
                })
            }
            StatusCode::UNAUTHORIZED => Err(LogError::Rejected {
                status: 401,
                message: format!(
                    "Okta rejected the {} reading the System Log (401{}): {}",
                    self.auth.what(),
                    okta_error_suffix(&body),
                    self.auth.check_hint()
                ),
            }),
            StatusCode::FORBIDDEN => Err(LogError::Rejected {
                status: 403,
                message: format!(
                    "Okta refused to let the API token read the System Log (403{}): the token's admin needs a role that may read the System Log (an OAuth service app needs the scope okta.logs.read)",
                    okta_error_suffix(&body)
                ),
            }),
            StatusCode::BAD_REQUEST => Err(LogError::Rejected {
                status: 400,
                message: format!(
                    "Okta rejected the System Log query (400{}{}): check the scripts' `on:` patterns (they make the filter) and that `since` is within the last 180 days",
                    okta_error_suffix(&body),
                    causes(&body)
                ),
            }),
            s if s.is_server_error() => Err(LogError::Transient {
                message: format!(
                    "Okta answered {s}{} reading the System Log",
                    okta_error_suffix(&body)
                ),
            }),
            s => Err(LogError::Rejected {
                status: s.as_u16(),
                message: format!(
                    "Okta answered {s}{} reading the System Log at {}{LOGS_PATH}; does okta.org_url point at an Okta org?",
                    okta_error_suffix(&body),
                    self.org_url()
                ),
            }),
        }
    }
}

/// `errorCauses[].errorSummary` of an Okta error body, as `; cause; cause` (empty without).
fn causes(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::new();
    };
    let list: Vec<String> = v["errorCauses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["errorSummary"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    list.iter().map(|c| format!("; {c}")).collect()
}

pub(super) fn budget(headers: &hyper::HeaderMap) -> RateBudget {
    let num = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    RateBudget {
        limit: num("x-rate-limit-limit"),
        remaining: num("x-rate-limit-remaining"),
        reset: num("x-rate-limit-reset")
            .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s))),
    }
}

/// The `rel="next"` target among the `Link` headers (one header per link, or several links in
/// one header separated by commas), if it is on the org's own origin under `prefix` (a path):
/// the token is sent to it.
pub(super) fn next_link(headers: &hyper::HeaderMap, org_url: &str, prefix: &str) -> Option<String> {
    for value in headers.get_all(hyper::header::LINK) {
        let Ok(text) = value.to_str() else { continue };
        for link in text.split(',') {
            let mut parts = link.split(';');
            let Some(target) = parts.next().map(str::trim) else {
                continue;
            };
            let is_next = parts.any(|p| {
                let p = p.trim();
                p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
            });
            if !is_next {
                continue;
            }
            let Some(url) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) else {
                continue;
            };
            if url.starts_with(&format!("{org_url}{prefix}")) {
                return Some(url.to_string());
            }
            tracing::warn!(next = %url, "ignoring an Okta next link to another origin or path");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_is_found_and_kept_on_the_org() {
        let mut h = hyper::HeaderMap::new();
        h.append(
            "link",
            "<https://o.okta.com/api/v1/logs?limit=2&after=a1>; rel=\"self\""
                .parse()
                .unwrap(),
        );
        h.append(
            "link",
            "<https://o.okta.com/api/v1/logs?limit=2&after=b2>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&h, "https://o.okta.com", LOGS_PATH).as_deref(),
            Some("https://o.okta.com/api/v1/logs?limit=2&after=b2")
        );
        assert_eq!(next_link(&h, "https://other.okta.com", LOGS_PATH), None);
        let mut one = hyper::HeaderMap::new();
        one.insert(
            "link",
            "<https://o.okta.com/api/v1/logs?a=1>; rel=\"self\", <https://o.okta.com/api/v1/logs?after=z>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&one, "https://o.okta.com", LOGS_PATH).as_deref(),
            Some("https://o.okta.com/api/v1/logs?after=z")
        );
    }
}
