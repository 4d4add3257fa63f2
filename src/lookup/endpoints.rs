//! The `[endpoint.NAME]` destinations: one HTTPS client per endpoint (the public webpki roots,
//! plus its `ca_file`), a script's [`HttpRequest`] turned into a request on the endpoint's origin
//! (its URL and configured headers, secrets among them, added only here), its `rate_per_s`, its
//! `timeout_ms`, and an answer read only up to a bound. Redirects are never followed (hyper's
//! client does not). Shared by `http_get` (a read during a run, [`EndpointHost`]) and the `http`
//! executor (`actions::http`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::okta::chain;
use crate::config::{Config, ConfigError, ResolvedEndpoint, Secret};
use crate::script::{
    EndpointInfo, GroupRef, Host, HostError, HttpAnswer, HttpRequest, MAX_HTTP_GET_ANSWER_BYTES,
    OktaGroup, User,
};
use crate::util::redact;

/// TCP connect timeout: a black-holed address fails fast (the request's own `timeout_ms`
/// bounds the whole exchange).
pub const ENDPOINT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a request waits for its endpoint's `rate_per_s` inside one attempt; a longer wait
/// ends the attempt as "retry then" instead of holding a slot.
pub const MAX_RATE_WAIT: Duration = Duration::from_secs(10);
/// Bytes of a PEM `ca_file`: a bundle of a few certificates, not a data file.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why the endpoints could not be built from the config.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("endpoint.{endpoint}.ca_file {path}: {message}")]
    CaFile {
        endpoint: String,
        path: String,
        message: String,
    },
    #[error("endpoint.{0}: TLS setup: {1}")]
    Tls(String, String),
}

/// How one request went.
#[derive(Debug)]
pub struct Exchange {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    /// The first bytes of the answer (at most the `max_body` asked for).
    pub body: Bytes,
    /// More followed than `body` holds.
    pub truncated: bool,
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No answer within `timeout_ms` (or the run's deadline: `by_run`).
    Timeout { ms: u64, by_run: bool },
    /// Could not connect, or the connection broke (transient).
    Connection(String),
    /// The request could not be built (permanent).
    Invalid(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Timeout { ms, .. } => write!(f, "no answer within {ms} ms"),
            SendError::Connection(m) | SendError::Invalid(m) => f.write_str(m),
        }
    }
}

/// An endpoint's `rate_per_s`: each request takes the next free slot, `1 / rate` apart.
struct RateGate {
    interval: Duration,
    next: Mutex<Instant>,
}

/// One `[endpoint.NAME]`.
pub struct Endpoint {
    pub name: String,
    base: url::Url,
    /// Configured headers; values from `*_env` marked sensitive.
    headers: hyper::HeaderMap,
    header_names: Vec<String>,
    pub timeout: Duration,
    /// `retry_base_ms`.
    pub retry_base: Duration,
    /// `json_env`: fields set in every JSON body (secrets: never shown to the script).
    json_fields: Vec<(String, Secret)>,
    rate: Option<RateGate>,
    client: HttpsClient,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Every configured endpoint, by name.
#[derive(Debug, Default)]
pub struct Endpoints {
    by_name: BTreeMap<String, Arc<Endpoint>>,
}

impl Endpoints {
    /// Reads every endpoint's `url_env`/`headers_env` (registering the values as secrets) and
    /// `ca_file`. Must run inside the tokio runtime only when requests are sent.
    pub fn from_config(config: &Config) -> Result<Endpoints, EndpointError> {
        let mut by_name = BTreeMap::new();
        for e in &config.endpoints {
            let resolved = config.resolve_endpoint(e)?;
            by_name.insert(e.name.clone(), Arc::new(Endpoint::new(resolved)?));
        }
        Ok(Endpoints { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Endpoint>> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// What the script layer checks a call against.
    pub fn info(&self, name: &str) -> Option<EndpointInfo> {
        self.get(name).map(|e| EndpointInfo {
            header_names: e.header_names.clone(),
        })
    }
}

fn read_ca_file(
    name: &str,
    path: &std::path::Path,
) -> Result<rustls::RootCertStore, EndpointError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let err = |message: String| EndpointError::CaFile {
        endpoint: name.to_string(),
        path: path.display().to_string(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_CA_FILE_BYTES {
        return Err(err(format!("larger than {MAX_CA_FILE_BYTES} bytes")));
    }
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| err(format!("not PEM certificates: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| err(format!("a certificate is not usable as a root: {e}")))?;
        added += 1;
    }
    if added == 0 {
        return Err(err(
            "holds no certificate (expected -----BEGIN CERTIFICATE----- blocks)".to_string(),
        ));
    }
    Ok(roots)
}

impl Endpoint {
    fn new(r: ResolvedEndpoint) -> Result<Endpoint, EndpointError> {
        let name = r.config.name.clone();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(ENDPOINT_CONNECT_TIMEOUT));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match &r.config.ca_file {
            None => builder
                .with_provider_and_webpki_roots(provider)
                .map_err(|e| EndpointError::Tls(name.clone(), e.to_string()))?,
            Some(path) => {
                let roots = read_ca_file(&name, path)?;
                let tls = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| EndpointError::Tls(name.clone(), e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                builder.with_tls_config(tls)
            }
        };
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let mut headers = hyper::HeaderMap::new();
        for (n, v, secret) in &r.headers {
            let name_h = header::HeaderName::from_bytes(n.as_bytes())
                .map_err(|e| EndpointError::Tls(name.clone(), format!("header {n}: {e}")))?;
            let mut value = header::HeaderValue::from_str(v.expose())
                .map_err(|_| EndpointError::Tls(name.clone(), format!("header {n}: bad value")))?;
            value.set_sensitive(*secret);
            headers.insert(name_h, value);
        }
        Ok(Endpoint {
            header_names: r.config.header_names(),
            name,
            base: r.url,
            headers,
            timeout: Duration::from_millis(r.config.timeout_ms),
            retry_base: Duration::from_millis(r.config.retry_base_ms),
            json_fields: r.json_fields,
            rate: r.config.rate_per_s.map(|rate| RateGate {
                interval: Duration::from_secs_f64(1.0 / rate),
                next: Mutex::new(Instant::now()),
            }),
            client,
        })
    }

    /// `body` (a JSON object) with the endpoint's `json_env` fields set, over any the script
    /// gave: a script cannot replace the configured secret.
    fn with_json_fields(&self, body: &str) -> Result<String, SendError> {
        let mut value: serde_json::Value = serde_json::from_str(body).map_err(|_| {
            SendError::Invalid(format!(
                "endpoint `{}` adds json_env fields to the body, so the body must be a JSON object",
                self.name
            ))
        })?;
        let Some(object) = value.as_object_mut() else {
            return Err(SendError::Invalid(format!(
                "endpoint `{}` adds json_env fields to the body, so the body must be a JSON object, not {}",
                self.name,
                match value {
                    serde_json::Value::Array(_) => "an array",
                    _ => "a single value",
                }
            )));
        };
        for (field, secret) in &self.json_fields {
            object.insert(field.clone(), secret.expose().into());
        }
        Ok(value.to_string())
    }

    /// The full URL of `request`: the endpoint's URL, its path appended, its query parameters
    /// added to the endpoint's own.
    pub fn url_for(&self, request: &HttpRequest) -> url::Url {
        let mut url = self.base.clone();
        if !request.path.is_empty() {
            let joined = format!("{}{}", url.path().trim_end_matches('/'), request.path);
            url.set_path(&joined);
        }
        if !request.query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in &request.query {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// Takes the next slot of the endpoint's rate: `Ok(wait)` to wait before sending, or
    /// `Err(after)` when the slot is further than `max_wait` away (nothing taken: try then).
    pub fn reserve(&self, max_wait: Duration) -> Result<Duration, Duration> {
        let Some(gate) = &self.rate else {
            return Ok(Duration::ZERO);
        };
        let mut next = gate.next.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let slot = (*next).max(now);
        let wait = slot - now;
        if wait > max_wait {
            return Err(wait);
        }
        *next = slot + gate.interval;
        Ok(wait)
    }

    /// Sends `request` (with `Idempotency-Key: idempotency_key` when given), within the
    /// endpoint's `timeout_ms` and `deadline`, and reads at most `max_body` bytes of the answer.
    pub async fn send(
        &self,
        request: &HttpRequest,
        idempotency_key: Option<&str>,
        max_body: usize,
        deadline: Option<Instant>,
    ) -> Result<Exchange, SendError> {
        let started = Instant::now();
        let own_end = started + self.timeout;
        let (end, by_run) = match deadline {
            Some(d) if d < own_end => (d, true),
            _ => (own_end, false),
        };
        let timeout = SendError::Timeout {
            ms: end.saturating_duration_since(started).as_millis() as u64,
            by_run,
        };
        if end <= started {
            return Err(timeout);
        }
        let url = self.url_for(request);
        let method = hyper::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| SendError::Invalid(format!("method `{}`", request.method)))?;
        let mut builder = Request::builder().method(method).uri(url.as_str()).header(
            header::USER_AGENT,
            concat!("engine/", env!("CARGO_PKG_VERSION")),
        );
        if let Some(h) = builder.headers_mut() {
            for (n, v) in &request.headers {
                let (Ok(n), Ok(v)) = (
                    header::HeaderName::from_bytes(n.as_bytes()),
                    header::HeaderValue::from_str(v),
                ) else {
                    return Err(SendError::Invalid(format!("header `{n}` is not valid")));
                };
                h.insert(n, v);
            }
            // The configured headers last: a script's never replaces one.
            for (n, v) in &self.headers {
                h.insert(n.clone(), v.clone());
            }
            if let Some(key) = idempotency_key
                && let Ok(v) = header::HeaderValue::from_str(key)
            {
                h.insert("idempotency-key", v);
            }
        }
        let payload = match &request.body {
            Some(b) if !self.json_fields.is_empty() => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(self.with_json_fields(&b.text)?)
            }
            Some(b) => {
                builder = builder.header(header::CONTENT_TYPE, b.content_type.as_str());
                Bytes::from(b.text.clone())
            }
            None if !self.json_fields.is_empty() => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(self.with_json_fields("{}")?)
            }
            None => Bytes::new(),
        };
        let built = builder
            .body(Full::new(payload))
            .map_err(|e| SendError::Invalid(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(built)
                .await
                .map_err(|e| SendError::Connection(redact::scrub(&chain(&e)).into_owned()))?;
            let (parts, mut body) = response.into_parts();
            let mut kept = Vec::new();
            let mut truncated = false;
            while let Some(frame) = body.frame().await {
                let frame = match frame {
                    Ok(f) => f,
                    // The status is what counts; a broken body after it only shortens the text.
                    Err(_) => break,
                };
                if let Ok(data) = frame.into_data() {
                    let room = max_body.saturating_sub(kept.len());
                    if data.len() > room {
                        kept.extend_from_slice(&data[..room]);
                        truncated = true;
                        break;
                    }
                    kept.extend_from_slice(&data);
                }
            }
            Ok(Exchange {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: Bytes::from(kept),
                truncated,
            })
        };
        match tokio::time::timeout_at(tokio::time::Instant::from_std(end), exchange).await {
            Ok(r) => r,
            Err(_) => Err(timeout),
        }
    }
}

/// `Retry-After` (seconds or an HTTP date) as a wait from `now`, at most `cap`.
pub fn retry_after(headers: &hyper::HeaderMap, now: SystemTime, cap: Duration) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(v)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(cap))
}

/// The first bytes of an answer as one line of text, secrets scrubbed.
pub fn snippet(body: &[u8], max: usize) -> String {
    let mut end = body.len().min(max);
    while end > 0 && std::str::from_utf8(&body[..end]).is_err() && body.len() - end < 4 {
        end -= 1;
    }
    let text = String::from_utf8_lossy(&body[..end]);
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if body.len() > end {
        line.push('…');
    }
    redact::scrub(&line).into_owned()
}

/// The host scripts run with: `inner`'s `lookup_user` and `okta::` reads, the endpoints, and
/// `http_get` through them (`offline`: the endpoints are known but no request is made, for
/// dry runs: `http_get` answers status 0).
pub struct EndpointHost {
    pub inner: Arc<dyn Host>,
    pub endpoints: Arc<Endpoints>,
    pub handle: Option<tokio::runtime::Handle>,
}

/// Longest an `http_get` waits for its endpoint's `rate_per_s` inside the run (a script thread
/// is held meanwhile); a longer wait fails the run as transient, retried at the free slot.
pub const MAX_READ_RATE_WAIT: Duration = Duration::from_secs(2);

/// Longest wait a `Retry-After` of an `http_get` answer can ask for the run's retry.
pub const MAX_READ_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

impl Host for EndpointHost {
    fn lookup_user(&self, key: &str, deadline: Option<Instant>) -> Result<Option<User>, HostError> {
        self.inner.lookup_user(key, deadline)
    }

    fn okta_user_groups(
        &self,
        user: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<OktaGroup>, HostError> {
        self.inner.okta_user_groups(user, deadline)
    }

    fn okta_get_group(
        &self,
        group: &GroupRef,
        deadline: Option<Instant>,
    ) -> Result<Option<OktaGroup>, HostError> {
        self.inner.okta_get_group(group, deadline)
    }

    fn endpoint(&self, name: &str) -> Option<EndpointInfo> {
        self.endpoints.info(name)
    }

    fn endpoint_names(&self) -> Vec<String> {
        self.endpoints.names()
    }

    fn http_get(
        &self,
        request: &HttpRequest,
        deadline: Option<Instant>,
    ) -> Result<HttpAnswer, HostError> {
        let Some(endpoint) = self.endpoints.get(&request.endpoint) else {
            return Err(HostError::Permanent(format!(
                "no endpoint `{}`",
                request.endpoint
            )));
        };
        let Some(handle) = &self.handle else {
            // A dry run: the endpoint exists, nothing is sent.
            return Ok(HttpAnswer::default());
        };
        // A read waits for its endpoint's rate a little (never past the run's deadline); a
        // longer wait retries the run then.
        let left = deadline.map_or(MAX_READ_RATE_WAIT, |d| {
            d.saturating_duration_since(Instant::now())
                .min(MAX_READ_RATE_WAIT)
        });
        match endpoint.reserve(left) {
            Ok(wait) if !wait.is_zero() => {
                crate::script::pool::blocking(|| std::thread::sleep(wait))
            }
            Ok(_) => {}
            Err(after) => {
                return Err(HostError::Transient {
                    message: format!("endpoint `{}` is at its rate_per_s", endpoint.name),
                    not_before: SystemTime::now().checked_add(after),
                });
            }
        }
        // It waits for the far side: work queued behind the run takes its compute slot meanwhile.
        let sent = crate::script::pool::blocking(|| {
            handle.block_on(endpoint.send(request, None, MAX_HTTP_GET_ANSWER_BYTES, deadline))
        });
        let x = match sent {
            Ok(x) => x,
            Err(SendError::Timeout { by_run: true, ms }) => {
                return Err(HostError::OutOfTime(format!(
                    "endpoint `{}` did not answer within the {ms} ms the run had left",
                    endpoint.name
                )));
            }
            Err(e @ (SendError::Timeout { .. } | SendError::Connection(_))) => {
                return Err(HostError::transient(format!(
                    "endpoint `{}`: {e}",
                    endpoint.name
                )));
            }
            Err(SendError::Invalid(m)) => return Err(HostError::Permanent(m)),
        };
        if x.status == 408 || x.status == 429 || x.status >= 500 {
            let after = retry_after(&x.headers, SystemTime::now(), MAX_READ_RETRY_AFTER);
            return Err(HostError::Transient {
                message: format!("endpoint `{}` answered HTTP {}", endpoint.name, x.status),
                not_before: after.and_then(|a| SystemTime::now().checked_add(a)),
            });
        }
        // Whatever the far side echoed (a configured secret header) never reaches the script.
        let headers = x
            .headers
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_string(), redact::scrub(v).into_owned()))
            })
            .collect();
        Ok(HttpAnswer {
            status: x.status,
            headers,
            body: redact::scrub(&String::from_utf8_lossy(&x.body)).into_owned(),
            truncated: x.truncated,
        })
    }
}
