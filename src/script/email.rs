//! `send_email`: validating the script's map, the recorded `Email` action and its stable id.

use super::http::HttpRequest;
use super::okta_op::OktaOp;
use rhai::{Dynamic, ImmutableString, Map};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// RFC 5321: a forward-path holds at most 256 octets, so an address at most 254.
pub const MAX_ADDRESS_LEN: usize = 254;
/// RFC 5321: the local part is at most 64 octets.
const MAX_LOCAL_LEN: usize = 64;
/// RFC 1035: a DNS label is at most 63 octets.
const MAX_LABEL_LEN: usize = 63;
/// Recipients (to + cc + bcc) of one mail: more is a mailing list, not an alert.
pub const MAX_RECIPIENTS: usize = 100;
/// RFC 5322 caps a header line at 998 characters including `Subject: `; keep well inside.
pub const MAX_SUBJECT_CHARS: usize = 900;
/// Characters of an action id kept from the sha256 hex (128 bits: collisions are not a concern).
const ACTION_ID_HEX_CHARS: usize = 32;

/// The keys `send_email` accepts.
const EMAIL_KEYS: &[&str] = &[
    "to", "cc", "bcc", "reply_to", "subject", "body", "html", "key",
];
/// Characters of a script's action `key`: it names the action among its run's, not content.
pub const MAX_KEY_CHARS: usize = 200;

/// The kinds of action, each carried out by its own executor (`src/actions/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Email,
    Http,
    Okta,
}

impl ActionKind {
    pub const ALL: [ActionKind; 3] = [ActionKind::Email, ActionKind::Http, ActionKind::Okta];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Email => "email",
            ActionKind::Http => "http",
            ActionKind::Okta => "okta",
        }
    }

    /// The kind named `s` (`email`, `http`, `okta`).
    pub fn parse(s: &str) -> Option<ActionKind> {
        ActionKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Something a run asks the engine to do after it succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    Email(Email),
    Okta(OktaAction),
    Http(HttpRequest),
}

impl Action {
    /// The stable action id (see [`action_id`]).
    pub fn id(&self) -> &str {
        match self {
            Action::Email(e) => &e.id,
            Action::Okta(o) => &o.id,
            Action::Http(h) => &h.id,
        }
    }

    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Email(_) => ActionKind::Email,
            Action::Okta(_) => ActionKind::Okta,
            Action::Http(_) => ActionKind::Http,
        }
    }

    /// One line saying what it would do, for dry runs: `mail to a@x: "Subject"`,
    /// `okta::suspend_user jane@example.com`.
    pub fn describe(&self) -> String {
        match self {
            Action::Email(e) => {
                let mut to = e.to.join(", ");
                if !e.cc.is_empty() {
                    to.push_str(&format!("; cc {}", e.cc.join(", ")));
                }
                if !e.bcc.is_empty() {
                    to.push_str(&format!("; bcc {}", e.bcc.join(", ")));
                }
                format!("mail to {to}: {:?}", e.subject)
            }
            Action::Okta(o) => o.op.describe(),
            Action::Http(h) => format!("http {}", h.describe()),
        }
    }

    /// What the kind's executor needs, as JSON.
    pub fn payload(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            Action::Email(e) => serde_json::to_value(e),
            Action::Okta(o) => serde_json::to_value(o),
            Action::Http(h) => serde_json::to_value(h),
        }
    }
}

/// An Okta change recorded by an `okta::` action function (`okta::suspend_user(user)`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OktaAction {
    /// Stable action id (see [`action_id`]; default key `okta#<position>`). It goes to Okta as
    /// the request's `Idempotency-Key`.
    pub id: String,
    /// Index of this action among the `okta` actions of its run (0-based).
    pub position: usize,
    /// The operation, its user and group as the script gave them (resolved when carried out).
    pub op: OktaOp,
}

/// A mail recorded by `send_email`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    /// Stable action id (see [`action_id`]): from the event, the script and the mail's key
    /// (`email#<position>` by default), not its content, so a replay after the script was edited
    /// does not send again what was already sent. This is what `send_email` returns.
    pub id: String,
    /// Index of this mail among the mails of its run (0-based).
    pub position: usize,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub reply_to: Option<String>,
    pub subject: String,
    pub body: String,
    pub html: Option<String>,
    /// The script's `key` for this mail (its id derives from it instead of `email#<position>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A script's `key`: a non-empty string of at most [`MAX_KEY_CHARS`] characters, or absent.
pub(crate) fn action_key(v: Option<&Dynamic>) -> Result<Option<String>, String> {
    let Some(v) = v.filter(|v| !v.is_unit()) else {
        return Ok(None);
    };
    let Some(s) = v.read_lock::<ImmutableString>() else {
        return Err(format!("`key` must be a string, not {}", v.type_name()));
    };
    if s.trim().is_empty() {
        return Err("`key` is empty (leave it out for the default, `<kind>#<position>`)".into());
    }
    if s.chars().count() > MAX_KEY_CHARS {
        return Err(format!("`key` is longer than {MAX_KEY_CHARS} characters"));
    }
    Ok(Some(s.to_string()))
}

/// The default key of the `position`-th action of `kind` in a run: `email#0`, `http#1`.
pub fn default_key(kind: ActionKind, position: usize) -> String {
    format!("{}#{position}", kind.as_str())
}

/// An action's stable id: the first 32 hex characters of sha256 over the event id (its `uuid`),
/// the script name and the action's key (the script's `key`, else [`default_key`]). Never the
/// content: re-running an edited script on the same event gives the same ids.
pub fn action_id(event_id: &str, script: &str, key: &str) -> String {
    let mut h = Sha256::new();
    for part in [event_id, script, key] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let mut id = hex::encode(h.finalize());
    id.truncate(ACTION_ID_HEX_CHARS);
    id
}

/// Validates the `send_email` map into an `Email` (id and position still empty).
pub(crate) fn parse_email(map: &Map) -> Result<Email, String> {
    for key in map.keys() {
        if !EMAIL_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "send_email: unknown key `{key}` (allowed: {})",
                EMAIL_KEYS.join(", ")
            ));
        }
    }
    let to = addresses(map.get("to"), "to")?;
    if to.is_empty() {
        return Err(match map.get("to") {
            None => "send_email: `to` is required".to_string(),
            Some(_) => "send_email: `to` has no address (did lookup_user return ())?".to_string(),
        });
    }
    let cc = addresses(map.get("cc"), "cc")?;
    let bcc = addresses(map.get("bcc"), "bcc")?;
    let total = to.len() + cc.len() + bcc.len();
    if total > MAX_RECIPIENTS {
        return Err(format!(
            "send_email: {total} recipients, at most {MAX_RECIPIENTS} per mail"
        ));
    }
    let reply_to = match map.get("reply_to") {
        None => None,
        Some(v) if v.is_unit() => None,
        Some(v) => {
            let mut list = addresses(Some(v), "reply_to")?;
            if list.len() != 1 {
                return Err("send_email: `reply_to` must be one address".into());
            }
            list.pop()
        }
    };
    let subject = required_string(map, "subject")?;
    if subject.contains(['\r', '\n']) {
        return Err("send_email: `subject` must be one line (it contains a line break)".into());
    }
    if subject.trim().is_empty() {
        return Err("send_email: `subject` is empty".into());
    }
    if subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(format!(
            "send_email: `subject` is longer than {MAX_SUBJECT_CHARS} characters"
        ));
    }
    let body = required_string(map, "body")?;
    let html = match map.get("html") {
        None => None,
        Some(v) if v.is_unit() => None,
        Some(v) => Some(
            v.read_lock::<ImmutableString>()
                .map(|s| s.to_string())
                .ok_or_else(|| {
                    format!("send_email: `html` must be a string, not {}", v.type_name())
                })?,
        ),
    };
    Ok(Email {
        id: String::new(),
        position: 0,
        key: action_key(map.get("key")).map_err(|e| format!("send_email: {e}"))?,
        to,
        cc,
        bcc,
        reply_to,
        subject,
        body,
        html,
    })
}

fn required_string(map: &Map, key: &str) -> Result<String, String> {
    let v = map
        .get(key)
        .ok_or_else(|| format!("send_email: `{key}` is required"))?;
    v.read_lock::<ImmutableString>()
        .map(|s| s.to_string())
        .ok_or_else(|| {
            format!(
                "send_email: `{key}` must be a string, not {}",
                v.type_name()
            )
        })
}

/// `to`/`cc`/`bcc`/`reply_to`: a string, a user map (its `email`), an array of those, or `()`.
fn addresses(v: Option<&Dynamic>, key: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let Some(v) = v else { return Ok(out) };
    if let Some(arr) = v.read_lock::<rhai::Array>() {
        for (i, item) in arr.iter().enumerate() {
            one_address(item, &format!("{key}[{i}]"), &mut out)?;
        }
        return Ok(out);
    }
    if v.is_unit() {
        return Ok(out);
    }
    one_address(v, key, &mut out)?;
    Ok(out)
}

fn one_address(v: &Dynamic, what: &str, out: &mut Vec<String>) -> Result<(), String> {
    if let Some(s) = v.read_lock::<ImmutableString>() {
        validate_address(&s).map_err(|e| format!("send_email: `{what}`: {e}"))?;
        out.push(s.to_string());
        return Ok(());
    }
    if let Some(m) = v.read_lock::<Map>() {
        let email = m.get("email").ok_or_else(|| {
            format!(
                "send_email: `{what}` is a map without `email` (expected a user from lookup_user)"
            )
        })?;
        let s = email
            .read_lock::<ImmutableString>()
            .ok_or_else(|| format!("send_email: `{what}` is a user without an email address"))?;
        validate_address(&s).map_err(|e| format!("send_email: `{what}`: {e}"))?;
        out.push(s.to_string());
        return Ok(());
    }
    if v.is_unit() {
        return Err(format!(
            "send_email: `{what}` is () (did lookup_user find nobody?)"
        ));
    }
    Err(format!(
        "send_email: `{what}` must be an address, a user map or an array of them, not {}",
        v.type_name()
    ))
}

/// RFC 5322 atext (plus UTF-8 for RFC 6531 addresses).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control())
}

/// A bare RFC 5322 addr-spec on one line: dot-atom or quoted local part, `@`, a host name (or an
/// address literal in brackets). Display names (`Name <a@b>`) are not accepted.
pub(crate) fn validate_address(s: &str) -> Result<(), String> {
    // Only for messages: the address cut to 80 characters.
    let shown = &s[..s.char_indices().nth(80).map_or(s.len(), |(i, _)| i)];
    if s.is_empty() {
        return Err("empty address".into());
    }
    if s.contains(['\r', '\n']) {
        return Err(format!("address {shown:?} contains a line break"));
    }
    if s.len() > MAX_ADDRESS_LEN {
        return Err(format!("address longer than {MAX_ADDRESS_LEN} characters"));
    }
    if s.contains('<') || s.contains('>') {
        return Err(format!(
            "{shown:?}: give the bare address (user@example.com), not a display name"
        ));
    }
    let at = s
        .rfind('@')
        .ok_or_else(|| format!("{shown:?} is not an email address (no @)"))?;
    let (local, domain) = (&s[..at], &s[at + 1..]);
    let bad = |why: &str| Err(format!("{shown:?} is not a valid email address ({why})"));
    if local.is_empty() || local.len() > MAX_LOCAL_LEN {
        return bad("local part empty or too long");
    }
    if let Some(q) = local.strip_prefix('"') {
        let Some(inner) = q.strip_suffix('"') else {
            return bad("unterminated quoted local part");
        };
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.next().is_none_or(|n| n.is_control() && n != '\t') => {
                    return bad("bad escape in quoted local part");
                }
                '"' => return bad("unescaped quote in quoted local part"),
                c if c.is_control() && c != '\t' => return bad("control character"),
                _ => {}
            }
        }
    } else if local
        .split('.')
        .any(|atom| atom.is_empty() || !atom.chars().all(is_atext))
    {
        return bad("local part");
    }
    if let Some(lit) = domain.strip_prefix('[') {
        let Some(inner) = lit.strip_suffix(']') else {
            return bad("unterminated address literal");
        };
        let ok = inner.parse::<std::net::Ipv4Addr>().is_ok()
            || inner
                .strip_prefix("IPv6:")
                .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
        return if ok { Ok(()) } else { bad("address literal") };
    }
    if domain.is_empty() {
        return bad("no domain");
    }
    for label in domain.split('.') {
        let label_ok = !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| {
                c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric())
            });
        if !label_ok {
            return bad("domain");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for ok in [
            "a@b.com",
            "first.last+tag@sub.example.org",
            "\"odd name\"@example.com",
            "x@[10.0.0.1]",
            "x@localhost",
            "o'brien@example.ie",
        ] {
            assert!(validate_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "plain",
            "a@",
            "@b.com",
            "a..b@c.com",
            ".a@c.com",
            "a@-b.com",
            "a@b..com",
            "Name <a@b.com>",
            "a@b.com\r\nBcc: x@y.com",
            "a b@c.com",
            "a@b_c.com",
        ] {
            assert!(validate_address(bad).is_err(), "{bad}");
        }
    }
}
