//! How [`OktaClient`] signs in: an SSWS API token (`Authorization: SSWS <token>`), or an OAuth
//! 2.0 service app, which Okta recommends: a `private_key_jwt` client assertion (iss = sub =
//! client_id, aud = `{org_url}/oauth2/v1/token`, exp at most [`ASSERTION_LIFETIME`] ahead, a
//! fresh random jti) POSTed to `/oauth2/v1/token` with `grant_type=client_credentials` and the
//! configured scopes; the access token is sent as `Authorization: Bearer <token>` and cached
//! until [`TOKEN_REFRESH_MARGIN`] before its `expires_in`. One token request at a time: callers
//! that find the cache empty wait for the one in flight.
//!
//! Signing is `jsonwebtoken`'s (ring underneath, the build's one crypto provider): RS256 for an
//! RSA key (PKCS#1 or PKCS#8 PEM), ES256/ES384 for an EC key (PKCS#8 PEM). The private key,
//! the assertion and the access token are secrets: in no `Debug` output, error or log line
//! (each access token is registered with `util::redact` as it arrives).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::{Method, StatusCode, header};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::LookupError;
use super::okta::{Body, OktaClient};
use crate::config::{OktaCredentials, Secret};

/// The OAuth token endpoint of the org authorization server (Management API scopes come only
/// from it, not from a custom authorization server).
pub const TOKEN_PATH: &str = "/oauth2/v1/token";
/// How long a client assertion is valid: Okta accepts at most an hour; a few minutes is enough
/// for one token request and limits what a leaked assertion could do.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// A cached access token is replaced this long before it expires, so no request goes out with
/// a token that expires on the way (Okta's service-app tokens live an hour).
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// The `client_assertion_type` of `private_key_jwt` (RFC 7523).
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Largest token endpoint answer read: a token is a few KiB.
const MAX_TOKEN_BODY_BYTES: usize = 64 * 1024;
/// An `expires_in` missing or absurd is taken as this (Okta's default token lifetime).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The credentials of one client.
pub(super) enum Auth {
    Ssws(Secret),
    ServiceApp(Box<ServiceApp>),
}

pub(super) struct ServiceApp {
    client_id: String,
    key: EncodingKey,
    algorithm: Algorithm,
    /// Space-separated, as the token request sends them.
    scopes: String,
    token_url: String,
    cached: tokio::sync::Mutex<Option<Cached>>,
    token_requests: AtomicU64,
}

struct Cached {
    token: Secret,
    refresh_at: Instant,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Ssws(t) => f.debug_tuple("Ssws").field(t).finish(),
            Auth::ServiceApp(app) => f
                .debug_struct("ServiceApp")
                .field("client_id", &app.client_id)
                .field("algorithm", &app.algorithm)
                .field("scopes", &app.scopes)
                .field("key", &"***")
                .finish(),
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
}

impl Auth {
    pub(super) fn new(org_url: &str, credentials: OktaCredentials) -> Result<Auth, LookupError> {
        match credentials {
            OktaCredentials::Token(t) => Ok(Auth::Ssws(t)),
            OktaCredentials::ServiceApp {
                client_id,
                private_key,
                scopes,
            } => {
                let token_url = format!("{org_url}{TOKEN_PATH}");
                let (key, algorithm) = signing_key(private_key.expose(), &client_id, &token_url)?;
                Ok(Auth::ServiceApp(Box::new(ServiceApp {
                    client_id,
                    key,
                    algorithm,
                    scopes: scopes.join(" "),
                    token_url,
                    cached: tokio::sync::Mutex::new(None),
                    token_requests: AtomicU64::new(0),
                })))
            }
        }
    }

    /// What the credentials are, for messages: "API token" or "service app 0oa…".
    pub(super) fn what(&self) -> String {
        match self {
            Auth::Ssws(_) => "API token".to_string(),
            Auth::ServiceApp(app) => format!("access token of service app {}", app.client_id),
        }
    }

    /// What to check after a 401.
    pub(super) fn check_hint(&self) -> &'static str {
        match self {
            Auth::Ssws(_) => {
                "check that the variable named by okta.token_env holds a valid, active Okta API token"
            }
            Auth::ServiceApp(_) => {
                "check that the service app (okta.client_id) is active and that the key in okta.private_key_env is the one registered on it"
            }
        }
    }

    /// What to check after a 403 to an operation that needs `scope` (for a token: its admin's
    /// permission to `doing`).
    pub(super) fn permission_hint(&self, scope: &str, doing: &str) -> String {
        match self {
            Auth::Ssws(_) => format!("the API token's admin needs permission to {doing}"),
            Auth::ServiceApp(_) => format!(
                "grant the service app the scope {scope} (Okta API Scopes tab) and list it in okta.scopes, and give the app an admin role that may {doing}"
            ),
        }
    }

    /// Token requests made so far (0 with an SSWS token), for tests and metrics.
    pub(super) fn token_requests(&self) -> u64 {
        match self {
            Auth::Ssws(_) => 0,
            Auth::ServiceApp(app) => app.token_requests.load(Ordering::Relaxed),
        }
    }

    /// The `Authorization` header of the next request, and whether it came from the cache
    /// (then a 401 is worth one retry with a fresh token).
    pub(super) async fn header(
        &self,
        client: &OktaClient,
        deadline: Option<Instant>,
    ) -> Result<(header::HeaderValue, bool), LookupError> {
        let (scheme, token, cached) = match self {
            Auth::Ssws(t) => ("SSWS", t.clone(), false),
            Auth::ServiceApp(app) => {
                let mut slot = app.cached.lock().await;
                let live = slot
                    .as_ref()
                    .filter(|c| Instant::now() < c.refresh_at)
                    .map(|c| c.token.clone());
                match live {
                    Some(token) => ("Bearer", token, true),
                    None => {
                        let previous = slot.take().map(|c| c.token);
                        let fresh = app.fetch(client, deadline, previous.as_ref()).await?;
                        let token = fresh.token.clone();
                        *slot = Some(fresh);
                        ("Bearer", token, false)
                    }
                }
            }
        };
        let mut value = header::HeaderValue::try_from(format!("{scheme} {}", token.expose()))
            .map_err(|_| {
                LookupError::Permanent(match self {
                    Auth::Ssws(_) => {
                        "the Okta API token is not a valid header value (check okta.token_env)"
                            .to_string()
                    }
                    Auth::ServiceApp(_) => {
                        "Okta's access token is not a valid header value".to_string()
                    }
                })
            })?;
        value.set_sensitive(true);
        Ok((value, cached))
    }

    /// Makes the next request fetch a fresh access token (Okta refused the cached one); the old
    /// one stays masked until its successor arrives.
    pub(super) async fn forget_token(&self) {
        if let Auth::ServiceApp(app) = self
            && let Some(c) = app.cached.lock().await.as_mut()
        {
            c.refresh_at = Instant::now();
        }
    }
}

impl ServiceApp {
    /// A new access token from the token endpoint.
    async fn fetch(
        &self,
        client: &OktaClient,
        deadline: Option<Instant>,
        previous: Option<&Secret>,
    ) -> Result<Cached, LookupError> {
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let assertion = assertion(&self.key, self.algorithm, &self.client_id, &self.token_url)?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("scope", &self.scopes)
            .append_pair("client_assertion_type", ASSERTION_TYPE)
            .append_pair("client_assertion", &assertion)
            .finish();
        let (status, headers, body) = client
            .send(
                Method::POST,
                &self.token_url,
                None,
                &Body::Form(form),
                deadline,
                MAX_TOKEN_BODY_BYTES,
                None,
            )
            .await?;
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let text = |k: &str| answer.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        match status {
            StatusCode::OK => {
                let token = text("access_token");
                if token.is_empty() {
                    return Err(LookupError::Transient(format!(
                        "Okta's token endpoint {} answered 200 without an access_token",
                        self.token_url
                    )));
                }
                // The expired token's entry makes room for this one.
                crate::util::redact::replace(previous.map(Secret::expose), token);
                let lifetime = answer
                    .get("expires_in")
                    .and_then(|v| v.as_u64())
                    .filter(|s| *s > 0 && *s <= 86_400)
                    .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
                tracing::info!(
                    client_id = %self.client_id,
                    expires_in_s = lifetime.as_secs(),
                    "Okta access token obtained"
                );
                Ok(Cached {
                    token: Secret::new(token.to_string()),
                    refresh_at: Instant::now()
                        + lifetime.saturating_sub(TOKEN_REFRESH_MARGIN.min(lifetime / 2)),
                })
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let until = super::okta::rate_limit_until(&headers, SystemTime::now());
                client.note_rate_limit(until);
                Err(LookupError::RateLimited {
                    message: "Okta's token endpoint is rate limited (429)".to_string(),
                    until,
                })
            }
            s if s.is_server_error() => Err(LookupError::Transient(format!(
                "Okta's token endpoint {} answered {s}",
                self.token_url
            ))),
            s => {
                let error = text("error");
                let description = text("error_description");
                let hint = match error {
                    "invalid_client" => {
                        "check okta.client_id, that the app's client authentication is \"Public key / Private key\", and that the key in okta.private_key_env matches a public key registered on the app"
                    }
                    "invalid_scope" => {
                        "every scope in okta.scopes must be granted to the app (Okta API Scopes tab)"
                    }
                    "unauthorized_client" => {
                        "the app must allow the Client Credentials grant (a service app does)"
                    }
                    _ => "check the service app's settings in the Okta Admin Console",
                };
                Err(LookupError::Permanent(format!(
                    "Okta refused the service app's token request ({s}{}{}): {hint}",
                    if error.is_empty() {
                        String::new()
                    } else {
                        format!(" {error}")
                    },
                    if description.is_empty() {
                        String::new()
                    } else {
                        format!(": {description}")
                    }
                )))
            }
        }
    }
}

/// The key in `pem` and the algorithm it signs with, tried by signing one assertion.
fn signing_key(
    pem: &str,
    client_id: &str,
    token_url: &str,
) -> Result<(EncodingKey, Algorithm), LookupError> {
    let pem = pem.trim().as_bytes();
    let mut candidates = Vec::new();
    if let Ok(k) = EncodingKey::from_rsa_pem(pem) {
        candidates.push((k, Algorithm::RS256));
    }
    if let Ok(k) = EncodingKey::from_ec_pem(pem) {
        candidates.push((k.clone(), Algorithm::ES256));
        candidates.push((k, Algorithm::ES384));
    }
    for (key, alg) in candidates {
        if assertion(&key, alg, client_id, token_url).is_ok() {
            return Ok((key, alg));
        }
    }
    let sec1 = std::str::from_utf8(pem).is_ok_and(|p| p.contains("BEGIN EC PRIVATE KEY"));
    Err(LookupError::Permanent(if sec1 {
        "the key in okta.private_key_env is an EC key in SEC1 form (BEGIN EC PRIVATE KEY): convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt -in key.pem`".to_string()
    } else {
        "the value of okta.private_key_env is not a PEM private key (RSA, or EC P-256/P-384 in PKCS#8): it should start with -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----".to_string()
    }))
}

/// A signed client assertion.
fn assertion(
    key: &EncodingKey,
    algorithm: Algorithm,
    client_id: &str,
    token_url: &str,
) -> Result<String, LookupError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut jti = [0u8; 16];
    getrandom::fill(&mut jti).map_err(|e| {
        LookupError::Transient(format!("no randomness for the client assertion's jti: {e}"))
    })?;
    let claims = Claims {
        iss: client_id,
        sub: client_id,
        aud: token_url,
        iat: now,
        exp: now + ASSERTION_LIFETIME.as_secs(),
        jti: hex::encode(jti),
    };
    jsonwebtoken::encode(&Header::new(algorithm), &claims, key).map_err(|e| {
        LookupError::Permanent(format!(
            "cannot sign the client assertion with the key in okta.private_key_env: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIVATE: &str = include_str!("../../tests/support/okta-keys/rsa-private.pem");
    const PUBLIC: &str = include_str!("../../tests/support/okta-keys/rsa-public.pem");
    const EC_PRIVATE: &str = include_str!("../../tests/support/okta-keys/ec-private.pem");

    #[test]
    fn an_assertion_names_the_app_and_the_endpoint_lives_five_minutes_and_is_unique() {
        let url = "https://o.okta.com/oauth2/v1/token";
        let (key, alg) = signing_key(PRIVATE, "0oa1", url).expect("RSA key");
        assert_eq!(alg, Algorithm::RS256);
        let decode = |jwt: &str| {
            let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
            v.set_audience(&[url]);
            v.set_issuer(&["0oa1"]);
            v.sub = Some("0oa1".into());
            jsonwebtoken::decode::<serde_json::Value>(
                jwt,
                &jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC.as_bytes()).expect("public"),
                &v,
            )
            .expect("valid assertion")
            .claims
        };
        let a = decode(&assertion(&key, alg, "0oa1", url).expect("sign"));
        let b = decode(&assertion(&key, alg, "0oa1", url).expect("sign"));
        let life = a["exp"].as_u64().unwrap() - a["iat"].as_u64().unwrap();
        assert_eq!(life, ASSERTION_LIFETIME.as_secs());
        assert!(life <= 300);
        assert_ne!(a["jti"], b["jti"]);
        assert_eq!(a["jti"].as_str().map(str::len), Some(32));
        assert_eq!(
            signing_key(EC_PRIVATE, "0oa1", url).expect("EC key").1,
            Algorithm::ES256
        );
    }

    #[test]
    fn keys_that_cannot_sign_are_refused_with_what_to_do() {
        let url = "https://o.okta.com/oauth2/v1/token";
        let sec1 = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n";
        let refused = |pem: &str| match signing_key(pem, "0oa1", url) {
            Ok(_) => panic!("{pem} accepted"),
            Err(e) => e.to_string(),
        };
        let e = refused(sec1);
        assert!(e.contains("openssl pkcs8 -topk8"), "{e}");
        let e = refused(PUBLIC);
        assert!(e.contains("not a PEM private key"), "{e}");
        let e = refused("just text");
        assert!(!e.contains("just text"), "{e}");
    }
}
