//! `http_post`, `http_request` and `http_get`: the script's arguments checked into an
//! [`HttpRequest`] (what an `http` action stores, and what an `http_get` read sends), the header
//! and path rules that keep a request on its endpoint's origin, and [`HttpAnswer`], what a read
//! returns to the script.

use rhai::{Dynamic, ImmutableString, Map};
use serde::{Deserialize, Serialize};

/// Longest `path` a script may append to an endpoint's URL.
pub const MAX_HTTP_PATH_CHARS: usize = 2_048;
/// Query parameters one request may carry.
pub const MAX_HTTP_QUERY_PARAMS: usize = 64;
/// Headers a script may add to one request.
pub const MAX_HTTP_HEADERS: usize = 32;
/// Characters of one header name or value a script gives (servers cap a header line at 8 KiB).
pub const MAX_HTTP_HEADER_CHARS: usize = 4_096;
/// Bytes of one request body: webhook APIs take far less (Slack 40 k characters, PagerDuty
/// 512 KiB), and every queued action is kept in the store until it is pruned.
pub const MAX_HTTP_BODY_BYTES: usize = 512 * 1024;
/// Bytes of an `http_get` answer given to the script; more is cut off (`truncated` in the map).
pub const MAX_HTTP_GET_ANSWER_BYTES: usize = 256 * 1024;

/// Request headers a script may not set: the engine writes them (`Host`, `Content-Length`,
/// `Idempotency-Key`), or they are hop-by-hop (RFC 9110 7.6.1) and change how the connection or
/// the body is framed. `engine.toml` may not set them either (`config` checks against this list).
pub const SCRIPT_RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "idempotency-key",
    "expect",
];

/// The methods `http_request` accepts.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
/// The keys `http_request` accepts.
const REQUEST_KEYS: &[&str] = &["method", "path", "query", "headers", "json", "body", "key"];
/// The keys `http_get` accepts.
const GET_KEYS: &[&str] = &["path", "query", "headers"];

/// An HTTP request recorded by `http_post`/`http_request` (an `http` action) or made by
/// `http_get`: relative to its endpoint, whose URL and configured headers (secrets among them)
/// are added only when it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// Stable action id (default key `http#<position>`); sent as `Idempotency-Key`. Empty for
    /// an `http_get` read.
    pub id: String,
    /// Index of this action among the `http` actions of its run (0-based).
    pub position: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The `[endpoint.NAME]` it goes to.
    pub endpoint: String,
    pub method: String,
    /// Appended to the endpoint's URL path ("" or starting with `/`).
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

/// A request body and its type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpBody {
    pub content_type: String,
    pub text: String,
}

impl HttpRequest {
    /// `POST slack/path` — one line for dry runs and listings (no URL: it may be a secret).
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}{}", self.method, self.endpoint, self.path);
        if !self.query.is_empty() {
            s.push('?');
            let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&q.join("&"));
        }
        if let Some(b) = &self.body {
            s.push_str(&format!(" ({}, {} bytes)", b.content_type, b.text.len()));
        }
        s
    }
}

/// What the script needs to know of a configured endpoint to check a call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The headers `engine.toml` sets on it, lower-case: a script cannot override them.
    pub header_names: Vec<String>,
}

/// The answer of an `http_get` read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpAnswer {
    pub status: u16,
    /// Names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body as text (invalid UTF-8 replaced), at most [`MAX_HTTP_GET_ANSWER_BYTES`].
    pub body: String,
    pub truncated: bool,
}

impl HttpAnswer {
    /// `#{ status, headers, json, body, truncated }`: `json` is the parsed body when it is JSON,
    /// else `()`.
    pub fn to_dynamic(&self) -> Dynamic {
        let mut m = Map::new();
        m.insert("status".into(), (self.status as rhai::INT).into());
        let mut h = Map::new();
        for (k, v) in &self.headers {
            h.insert(k.as_str().into(), v.clone().into());
        }
        m.insert("headers".into(), Dynamic::from_map(h));
        let json = serde_json::from_str::<serde_json::Value>(&self.body)
            .map(|v| super::event::json_to_dynamic(&v))
            .unwrap_or(Dynamic::UNIT);
        m.insert("json".into(), json);
        m.insert("body".into(), self.body.clone().into());
        m.insert("truncated".into(), self.truncated.into());
        Dynamic::from_map(m)
    }
}

fn text(v: &Dynamic, what: &str) -> Result<String, String> {
    v.read_lock::<ImmutableString>()
        .map(|s| s.to_string())
        .ok_or_else(|| format!("`{what}` must be a string, not {}", v.type_name()))
}

/// A body from a script value: a map or array is JSON, a string is text.
pub(crate) fn body_of(v: &Dynamic, what: &str) -> Result<HttpBody, String> {
    let body = if v.is_map() || v.is_array() {
        let json: serde_json::Value =
            rhai::serde::from_dynamic(v).map_err(|e| format!("`{what}` cannot be JSON: {e}"))?;
        HttpBody {
            content_type: "application/json".into(),
            text: json.to_string(),
        }
    } else if let Some(s) = v.read_lock::<ImmutableString>() {
        HttpBody {
            content_type: "text/plain; charset=utf-8".into(),
            text: s.to_string(),
        }
    } else {
        return Err(format!(
            "`{what}` must be a map or array (sent as JSON) or a string (sent as text), not {}",
            v.type_name()
        ));
    };
    if body.text.len() > MAX_HTTP_BODY_BYTES {
        return Err(format!(
            "the body is {} bytes, more than {MAX_HTTP_BODY_BYTES}",
            body.text.len()
        ));
    }
    Ok(body)
}

fn has_ctl(s: &str) -> bool {
    s.chars().any(|c| c == '\r' || c == '\n' || c == '\0')
}

/// A `path` that stays on the endpoint's origin and under its URL: no `..` segment, no `//` at
/// the start, no scheme, no `@`, no `\`, no control characters, no `?`/`#` (use `query`).
pub fn check_path(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Ok(String::new());
    }
    if path.chars().count() > MAX_HTTP_PATH_CHARS {
        return Err(format!(
            "`path` is longer than {MAX_HTTP_PATH_CHARS} characters"
        ));
    }
    let bad = |why: &str| {
        Err(format!(
            "`path` {path:?} {why}: a path is appended to the endpoint's URL and must stay under it"
        ))
    };
    if path.chars().any(|c| c.is_control()) {
        return bad("has a control character");
    }
    if path.starts_with("//") {
        return bad("starts with `//`");
    }
    if path.contains("://") || path.split('/').next().is_some_and(|s| s.contains(':')) {
        return bad("has a scheme");
    }
    if path.contains('@') {
        return bad("has `@`");
    }
    if path.contains('\\') {
        return bad("has `\\`");
    }
    if path.contains(['?', '#']) {
        return bad("has `?` or `#` (give query parameters as `query`)");
    }
    let lower = path.to_ascii_lowercase();
    if path
        .split('/')
        .any(|seg| seg == ".." || seg == "." || lower.contains("%2e%2e") || lower.contains("%2f"))
    {
        return bad("has a `..` or `.` segment or an encoded `/` or `..`");
    }
    Ok(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    })
}

/// A script's `query`: a map of names to strings or numbers.
fn query_of(v: Option<&Dynamic>) -> Result<Vec<(String, String)>, String> {
    let Some(v) = v.filter(|v| !v.is_unit()) else {
        return Ok(Vec::new());
    };
    let Some(map) = v.read_lock::<Map>() else {
        return Err(format!(
            "`query` must be a map of names to values, not {}",
            v.type_name()
        ));
    };
    if map.len() > MAX_HTTP_QUERY_PARAMS {
        return Err(format!(
            "`query` has more than {MAX_HTTP_QUERY_PARAMS} parameters"
        ));
    }
    let mut out = Vec::new();
    for (k, v) in map.iter() {
        let value = if let Some(s) = v.read_lock::<ImmutableString>() {
            s.to_string()
        } else if v.is_int() || v.is_float() || v.is_bool() {
            v.to_string()
        } else {
            return Err(format!(
                "query parameter `{k}` must be a string or number, not {}",
                v.type_name()
            ));
        };
        if k.is_empty() || has_ctl(k) || has_ctl(&value) || value.len() > MAX_HTTP_HEADER_CHARS {
            return Err(format!(
                "query parameter `{k}` has an empty name, a line break or NUL, or is too long"
            ));
        }
        out.push((k.to_string(), value));
    }
    Ok(out)
}

/// Whether `name` is a header token (RFC 9110 5.6.2).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A script's `headers`: none overriding the endpoint's, none reserved, no CR/LF/NUL.
fn headers_of(
    v: Option<&Dynamic>,
    endpoint: &EndpointInfo,
) -> Result<Vec<(String, String)>, String> {
    let Some(v) = v.filter(|v| !v.is_unit()) else {
        return Ok(Vec::new());
    };
    let Some(map) = v.read_lock::<Map>() else {
        return Err(format!(
            "`headers` must be a map of header names to strings, not {}",
            v.type_name()
        ));
    };
    if map.len() > MAX_HTTP_HEADERS {
        return Err(format!(
            "`headers` has more than {MAX_HTTP_HEADERS} headers"
        ));
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in map.iter() {
        let name = k.as_str();
        let value = text(v, &format!("headers.{name}"))?;
        if has_ctl(name) || has_ctl(&value) {
            return Err(format!(
                "header `{}` has a line break or NUL in its name or value",
                name.escape_debug()
            ));
        }
        if !is_token(name) {
            return Err(format!("`{name}` is not a valid HTTP header name"));
        }
        if value.chars().any(|c| c.is_control() && c != '\t')
            || name.len() + value.len() > MAX_HTTP_HEADER_CHARS
        {
            return Err(format!(
                "header `{name}` has a control character or is longer than {MAX_HTTP_HEADER_CHARS} characters"
            ));
        }
        let lower = name.to_ascii_lowercase();
        if SCRIPT_RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(format!(
                "header `{name}` is set by the engine, not by scripts (reserved: {})",
                SCRIPT_RESERVED_HEADERS.join(", ")
            ));
        }
        if endpoint.header_names.contains(&lower) {
            return Err(format!(
                "header `{name}` is configured for this endpoint in engine.toml; a script cannot override it"
            ));
        }
        if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(format!("header `{name}` is given twice"));
        }
        out.push((name.to_string(), value));
    }
    Ok(out)
}

fn check_keys(map: &Map, allowed: &[&str], function: &str) -> Result<(), String> {
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(format!(
                "{function}: unknown key `{key}` (allowed: {})",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

/// `http_post(endpoint, body)`.
pub(crate) fn parse_post(endpoint: &str, body: &Dynamic) -> Result<HttpRequest, String> {
    Ok(HttpRequest {
        id: String::new(),
        position: 0,
        key: None,
        endpoint: endpoint.to_string(),
        method: "POST".into(),
        path: String::new(),
        query: Vec::new(),
        headers: Vec::new(),
        body: Some(body_of(body, "body").map_err(|e| format!("http_post: {e}"))?),
    })
}

/// `http_request(endpoint, #{ method?, path?, query?, headers?, json?, body?, key? })`.
pub(crate) fn parse_request(
    endpoint: &str,
    info: &EndpointInfo,
    map: &Map,
) -> Result<HttpRequest, String> {
    let f = "http_request";
    check_keys(map, REQUEST_KEYS, f)?;
    let method = match map.get("method").filter(|v| !v.is_unit()) {
        None => "POST".to_string(),
        Some(v) => {
            let m = text(v, "method")
                .map_err(|e| format!("{f}: {e}"))?
                .to_ascii_uppercase();
            if !METHODS.contains(&m.as_str()) {
                return Err(format!(
                    "{f}: method `{m}` is not one of {}",
                    METHODS.join(", ")
                ));
            }
            m
        }
    };
    let path = match map.get("path").filter(|v| !v.is_unit()) {
        None => String::new(),
        Some(v) => check_path(&text(v, "path").map_err(|e| format!("{f}: {e}"))?)
            .map_err(|e| format!("{f}: {e}"))?,
    };
    let query = query_of(map.get("query")).map_err(|e| format!("{f}: {e}"))?;
    let headers = headers_of(map.get("headers"), info).map_err(|e| format!("{f}: {e}"))?;
    let json = map.get("json").filter(|v| !v.is_unit());
    let body = map.get("body").filter(|v| !v.is_unit());
    let body = match (json, body) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{f}: give `json` (sent as JSON) or `body` (a string, sent as text), not both"
            ));
        }
        (Some(j), None) => {
            let json: serde_json::Value = rhai::serde::from_dynamic(j)
                .map_err(|e| format!("{f}: `json` cannot be JSON: {e}"))?;
            let text = json.to_string();
            if text.len() > MAX_HTTP_BODY_BYTES {
                return Err(format!(
                    "{f}: the body is {} bytes, more than {MAX_HTTP_BODY_BYTES}",
                    text.len()
                ));
            }
            Some(HttpBody {
                content_type: "application/json".into(),
                text,
            })
        }
        (None, Some(b)) => Some(body_of(b, "body").map_err(|e| format!("{f}: {e}"))?),
        (None, None) => None,
    };
    if method == "GET" && body.is_some() {
        return Err(format!("{f}: a GET has no body"));
    }
    let key = super::email::action_key(map.get("key")).map_err(|e| format!("{f}: {e}"))?;
    Ok(HttpRequest {
        id: String::new(),
        position: 0,
        key,
        endpoint: endpoint.to_string(),
        method,
        path,
        query,
        headers,
        body,
    })
}

/// `http_get(endpoint, #{ path?, query?, headers? })`.
pub(crate) fn parse_get(
    endpoint: &str,
    info: &EndpointInfo,
    map: &Map,
) -> Result<HttpRequest, String> {
    let f = "http_get";
    check_keys(map, GET_KEYS, f)?;
    let path = match map.get("path").filter(|v| !v.is_unit()) {
        None => String::new(),
        Some(v) => check_path(&text(v, "path").map_err(|e| format!("{f}: {e}"))?)
            .map_err(|e| format!("{f}: {e}"))?,
    };
    Ok(HttpRequest {
        id: String::new(),
        position: 0,
        key: None,
        endpoint: endpoint.to_string(),
        method: "GET".into(),
        path,
        query: query_of(map.get("query")).map_err(|e| format!("{f}: {e}"))?,
        headers: headers_of(map.get("headers"), info).map_err(|e| format!("{f}: {e}"))?,
        body: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_endpoint() {
        assert_eq!(check_path("").unwrap(), "");
        assert_eq!(check_path("v2/enqueue").unwrap(), "/v2/enqueue");
        assert_eq!(check_path("/a/b%20c").unwrap(), "/a/b%20c");
        for bad in [
            "../x",
            "/a/../b",
            "//evil.example/x",
            "http://evil.example/",
            "https:x",
            "/a@evil.example",
            "/a\\b",
            "/a\r\nHost: x",
            "/a?x=1",
            "/a#f",
            "/%2e%2e/x",
            "/a%2fb",
            "/./a",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn headers_cannot_override_or_smuggle() {
        let info = EndpointInfo {
            header_names: vec!["authorization".into()],
        };
        let mut m = Map::new();
        let h = |k: &str, v: &str| {
            let mut h = Map::new();
            h.insert(k.into(), v.into());
            Dynamic::from_map(h)
        };
        for (k, v) in [
            ("AUTHORIZATION", "x"),
            ("Host", "evil"),
            ("Content-Length", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Idempotency-Key", "x"),
            ("Connection", "close"),
            ("X-A", "a\r\nX-B: b"),
            ("X-A\r\nX-B", "b"),
            ("X-A", "a\0"),
            ("X A", "a"),
        ] {
            m.insert("headers".into(), h(k, v));
            assert!(
                parse_request("e", &info, &m).is_err(),
                "{k:?}: {v:?} accepted"
            );
        }
        m.insert("headers".into(), h("X-Trace", "abc"));
        let r = parse_request("e", &info, &m).unwrap();
        assert_eq!(r.headers, vec![("X-Trace".to_string(), "abc".to_string())]);
    }
}
