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
    "to", "cc", "bcc", "reply_to", "from", "subject", "body", "html", "key",
];
/// Characters of a display name (`"Name" <addr>`): a person's or a team's name, and the whole
/// mailbox must stay well inside RFC 5322's 998-character line once RFC 2047 encoded (up to
/// ~4.5 bytes per character for non-ASCII names).
pub const MAX_DISPLAY_NAME_CHARS: usize = 128;
/// The From address of mail without `[smtp]` (the `.eml` files; `[smtp] from` replaces it).
pub const DEFAULT_FROM: &str = "engine@localhost";
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
            Action::Email(e) => e.describe(),
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
    /// The script's `from` (checked against the run's [`Senders`] when recorded), as a mailbox
    /// string like the recipients; `None`: the configured From (mails queued before `from`
    /// existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// The From addresses the mails of a run may use: `[smtp] from` (the default) and `[smtp]
/// allowed_from`. Passed to every run by its caller, like its [`super::Limits`]; the script
/// layer knows nothing of the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Senders {
    /// What a mail without `from` is sent from (`[smtp] from`, else [`DEFAULT_FROM`]); a bare
    /// address or a mailbox (`Name <addr>`).
    pub default: String,
    /// The further addresses `send_email(#{ from })` may name (`[smtp] allowed_from`).
    pub allowed: Vec<String>,
}

impl Default for Senders {
    /// [`DEFAULT_FROM`] only: what a run without `[smtp]` may send from.
    fn default() -> Senders {
        Senders::only(DEFAULT_FROM)
    }
}

impl Senders {
    /// Only `default` (no `allowed_from`).
    pub fn only(default: &str) -> Senders {
        Senders {
            default: default.to_string(),
            allowed: Vec::new(),
        }
    }

    /// The addresses a mail may be sent from, the default first.
    fn addresses(&self) -> impl Iterator<Item = String> + '_ {
        std::iter::once(self.default.as_str())
            .chain(self.allowed.iter().map(String::as_str))
            .map(|s| parse_mailbox(s).map_or_else(|_| s.trim().to_string(), |m| m.address))
    }

    /// Whether a mail may be sent from the bare address `address` (compared without regard to
    /// ASCII case: mail servers treat `Bot@Example.com` and `bot@example.com` alike).
    pub fn permits(&self, address: &str) -> bool {
        self.addresses().any(|a| a.eq_ignore_ascii_case(address))
    }

    /// The allowed addresses as an error message lists them.
    fn listing(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        for (i, a) in self.addresses().enumerate() {
            if !out.contains(&a) {
                out.push(if i == 0 {
                    format!("{a} (the default From)")
                } else {
                    a
                });
            }
        }
        out.join(", ")
    }
}

/// A mailbox: an address with an optional display name, as [`parse_mailbox`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    /// The bare address, validated (see `validate_address`).
    pub address: String,
}

impl Mailbox {
    /// The form an `Email` stores: the bare address, `Name <addr>` when the name is atoms and
    /// spaces only, else `"Doe, \"JD\" Jane" <addr>` (quoted, `"` and `\` escaped with `\`).
    /// [`parse_mailbox`] reads it back unchanged.
    pub fn to_header_string(&self) -> String {
        match &self.name {
            None => self.address.clone(),
            Some(n) if n.chars().all(|c| c == ' ' || is_atext(c)) => {
                format!("{n} <{}>", self.address)
            }
            Some(n) => {
                let mut q = String::with_capacity(n.len() + 2);
                q.push('"');
                for c in n.chars() {
                    if c == '"' || c == '\\' {
                        q.push('\\');
                    }
                    q.push(c);
                }
                q.push('"');
                format!("{q} <{}>", self.address)
            }
        }
    }
}

/// Reads `addr`, `<addr>`, `Display Name <addr>` or `"Display, Name" <addr>` (RFC 5322's
/// name-addr with a quoted or plain phrase). Rejects line breaks and control characters,
/// unbalanced `<`/`>` or quotes, text after the `>`, a name longer than
/// [`MAX_DISPLAY_NAME_CHARS`], and a string that looks like several addresses.
pub fn parse_mailbox(s: &str) -> Result<Mailbox, String> {
    let shown = shown(s);
    if s.contains(['\r', '\n']) {
        return Err(format!("{shown:?} contains a line break"));
    }
    let t = s.trim();
    if !t.contains(['<', '>']) {
        validate_address(t)?;
        return Ok(Mailbox {
            name: None,
            address: t.to_string(),
        });
    }
    let unbalanced = |why: &str| {
        Err(format!(
            "{shown:?}: {why} (write \"Name <user@example.com>\", or the bare address)"
        ))
    };
    // The name: a quoted string, or plain text up to the `<`.
    let (name, rest) = if let Some(q) = t.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = q.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) => name.push(e),
                    None => break,
                },
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                c => name.push(c),
            }
        }
        let Some(end) = end else {
            return unbalanced("the display name's quote is not closed");
        };
        (name, q[end..].trim_start())
    } else {
        let Some(open) = t.find('<') else {
            return unbalanced("a `>` without its `<`");
        };
        let name = t[..open].trim();
        if name.contains(['"', '>']) {
            return unbalanced("a quote or `>` in the display name");
        }
        // `a@x.com, Bob <b@y.com>`: two recipients in one string.
        if name.contains([',', ';'])
            && name
                .split([',', ';'])
                .any(|part| validate_address(part.trim()).is_ok())
        {
            return Err(format!(
                "{shown:?} looks like several addresses in one string: give an array of them"
            ));
        }
        (name.to_string(), &t[open..])
    };
    let Some(inner) = rest.strip_prefix('<') else {
        return unbalanced("the address after the display name must be in `<…>`");
    };
    let Some(close) = inner.find('>') else {
        return unbalanced("a `<` without its `>`");
    };
    let (address, after) = (&inner[..close], inner[close + 1..].trim());
    if address.contains('<') {
        return unbalanced("a `<` inside `<…>`");
    }
    if !after.is_empty() {
        return unbalanced("text after the `>`");
    }
    validate_address(address.trim())?;
    if name.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!(
            "{shown:?}: the display name has a control character"
        ));
    }
    let name = name.trim();
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(format!(
            "{shown:?}: the display name is longer than {MAX_DISPLAY_NAME_CHARS} characters"
        ));
    }
    Ok(Mailbox {
        name: (!name.is_empty()).then(|| name.to_string()),
        address: address.trim().to_string(),
    })
}

/// A display name from outside (an Okta `displayName`): control characters and runs of white
/// space become one space, cut to [`MAX_DISPLAY_NAME_CHARS`]; `None` when nothing is left or
/// it only repeats the address.
fn clean_display_name(name: &str, address: &str) -> Option<String> {
    let cleaned: String = name
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(MAX_DISPLAY_NAME_CHARS)
        .collect();
    let cleaned = cleaned.trim().to_string();
    (!cleaned.is_empty() && !cleaned.eq_ignore_ascii_case(address)).then_some(cleaned)
}

/// Only for messages: `s` cut to 80 characters.
fn shown(s: &str) -> &str {
    &s[..s.char_indices().nth(80).map_or(s.len(), |(i, _)| i)]
}

impl Email {
    /// One line for dry runs: `mail [from F ]to a@x, B <b@y>; cc …; bcc …: "Subject"`.
    pub fn describe(&self) -> String {
        let mut to = self.to.join(", ");
        if !self.cc.is_empty() {
            to.push_str(&format!("; cc {}", self.cc.join(", ")));
        }
        if !self.bcc.is_empty() {
            to.push_str(&format!("; bcc {}", self.bcc.join(", ")));
        }
        match &self.from {
            Some(from) => format!("mail from {from} to {to}: {:?}", self.subject),
            None => format!("mail to {to}: {:?}", self.subject),
        }
    }
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

/// Validates the `send_email` map into an `Email` (id and position still empty); `from` must
/// be one of `senders`.
pub(crate) fn parse_email(map: &Map, senders: &Senders) -> Result<Email, String> {
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
    let from = match map.get("from") {
        None => None,
        Some(v) if v.is_unit() => None,
        Some(v) => Some(sender(v, senders)?),
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
        from,
    })
}

/// `from`: an address or `Name <addr>` whose address `senders` permits.
fn sender(v: &Dynamic, senders: &Senders) -> Result<String, String> {
    let Some(s) = v.read_lock::<ImmutableString>() else {
        return Err(format!(
            "send_email: `from` must be an address string, not {}",
            v.type_name()
        ));
    };
    let m = parse_mailbox(&s).map_err(|e| format!("send_email: `from`: {e}"))?;
    if !senders.permits(&m.address) {
        return Err(format!(
            "send_email: `from` {:?} is not an allowed sender (allowed: {}; add it to [smtp] allowed_from in engine.toml)",
            m.address,
            senders.listing()
        ));
    }
    Ok(m.to_header_string())
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
        let m = parse_mailbox(&s).map_err(|e| format!("send_email: `{what}`: {e}"))?;
        out.push(m.to_header_string());
        return Ok(());
    }
    if let Some(m) = v.read_lock::<Map>() {
        out.push(map_address(&m, what)?.to_header_string());
        return Ok(());
    }
    if v.is_unit() {
        return Err(format!(
            "send_email: `{what}` is () (did lookup_user find nobody?)"
        ));
    }
    Err(format!(
        "send_email: `{what}` must be an address, a user map, an actor/target map or an array of them, not {}",
        v.type_name()
    ))
}

/// A recipient map: a `lookup_user` map (its `email`), or an Okta actor/target (its
/// `alternateId`, when that is an address, with its `displayName`).
fn map_address(m: &Map, what: &str) -> Result<Mailbox, String> {
    let text = |key: &str| {
        m.get(key)
            .and_then(|v| v.read_lock::<ImmutableString>().map(|s| s.to_string()))
    };
    if m.contains_key("email") {
        let who = text("login")
            .or_else(|| text("id"))
            .map_or(String::new(), |w| format!(" ({w})"));
        let Some(email) = text("email").filter(|e| !e.trim().is_empty()) else {
            return Err(format!(
                "send_email: `{what}` is a user{who} without an email address"
            ));
        };
        validate_address(email.trim()).map_err(|e| {
            format!("send_email: `{what}` is a user{who} whose email is unusable: {e}")
        })?;
        return Ok(Mailbox {
            name: None,
            address: email.trim().to_string(),
        });
    }
    if m.contains_key("alternateId") {
        let kind = text("type").map_or(String::new(), |t| format!(" of type {t}"));
        let Some(alt) = text("alternateId").filter(|a| !a.trim().is_empty()) else {
            return Err(format!(
                "send_email: `{what}` is an Okta actor/target{kind} without an alternateId"
            ));
        };
        let address = alt.trim();
        validate_address(address).map_err(|e| {
            format!(
                "send_email: `{what}` is an Okta actor/target{kind} whose alternateId is not an email address ({e}); give its user's address, e.g. lookup_user(…).email"
            )
        })?;
        return Ok(Mailbox {
            name: text("displayName").and_then(|n| clean_display_name(&n, address)),
            address: address.to_string(),
        });
    }
    Err(format!(
        "send_email: `{what}` is a map without `email` or `alternateId` (expected a user from lookup_user or an Okta actor/target)"
    ))
}

/// RFC 5322 atext (plus UTF-8 for RFC 6531 addresses).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control())
}

/// A bare RFC 5322 addr-spec on one line: dot-atom or quoted local part, `@`, a host name (or an
/// address literal in brackets). Display names (`Name <a@b>`) are [`parse_mailbox`]'s.
pub(crate) fn validate_address(s: &str) -> Result<(), String> {
    let shown = shown(s);
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

    #[test]
    fn mailboxes_parse_and_read_back_unchanged() {
        let named = |name: &str, address: &str| Mailbox {
            name: Some(name.into()),
            address: address.into(),
        };
        let bare = |address: &str| Mailbox {
            name: None,
            address: address.into(),
        };
        for (input, want, stored) in [
            ("a@b.com", bare("a@b.com"), "a@b.com"),
            ("  a@b.com ", bare("a@b.com"), "a@b.com"),
            ("<a@b.com>", bare("a@b.com"), "a@b.com"),
            ("\"\" <a@b.com>", bare("a@b.com"), "a@b.com"),
            (
                "Jane Doe <jane@example.com>",
                named("Jane Doe", "jane@example.com"),
                "Jane Doe <jane@example.com>",
            ),
            (
                "Jane Doe<jane@example.com>",
                named("Jane Doe", "jane@example.com"),
                "Jane Doe <jane@example.com>",
            ),
            (
                "Doe, Jane <jane@example.com>",
                named("Doe, Jane", "jane@example.com"),
                "\"Doe, Jane\" <jane@example.com>",
            ),
            (
                "\"Jane \\\"JD\\\" Doe\" <jane@example.com>",
                named("Jane \"JD\" Doe", "jane@example.com"),
                "\"Jane \\\"JD\\\" Doe\" <jane@example.com>",
            ),
            (
                "\"Ops <team>\" <ops@example.com>",
                named("Ops <team>", "ops@example.com"),
                "\"Ops <team>\" <ops@example.com>",
            ),
            (
                "Zoë Ångström <zoe@example.com>",
                named("Zoë Ångström", "zoe@example.com"),
                "Zoë Ångström <zoe@example.com>",
            ),
            (
                "jane@example.com <jane@example.com>",
                named("jane@example.com", "jane@example.com"),
                "\"jane@example.com\" <jane@example.com>",
            ),
            (
                "\"odd name\"@example.com",
                bare("\"odd name\"@example.com"),
                "\"odd name\"@example.com",
            ),
        ] {
            let got = parse_mailbox(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(got, want, "{input}");
            assert_eq!(got.to_header_string(), stored, "{input}");
            assert_eq!(parse_mailbox(stored).as_ref(), Ok(&want), "{stored}");
        }
    }

    #[test]
    fn bad_mailboxes_are_refused_with_the_reason() {
        for (input, why) in [
            ("Jane <jane@example.com", "without its `>`"),
            ("Jane jane@example.com>", "without its `<`"),
            ("Jane <jane@example.com> x", "text after"),
            ("Jane <<jane@example.com>>", "inside"),
            ("\"Jane <jane@example.com>", "not closed"),
            ("Ja\"ne <jane@example.com>", "quote"),
            ("\"Jane\" jane@example.com", "not a valid email address"),
            ("\"Jane\" x <jane@example.com>", "`<…>`"),
            ("Jane <jane@example.com>\r\nBcc: x@y.com", "line break"),
            ("Jane\nDoe <jane@example.com>", "line break"),
            ("Ja\u{7}ne <jane@example.com>", "control character"),
            ("Jane <not-an-address>", "no @"),
            ("a@x.com, Bob <b@y.com>", "several addresses"),
            ("", "empty"),
        ] {
            let e = parse_mailbox(input).expect_err(input);
            assert!(e.contains(why), "{input:?}: {e}");
        }
        let long = format!("{} <a@b.com>", "n".repeat(MAX_DISPLAY_NAME_CHARS + 1));
        assert!(
            parse_mailbox(&long)
                .expect_err("long")
                .contains("longer than")
        );
    }

    #[test]
    fn senders_permit_the_default_and_the_allowed_only() {
        let s = Senders {
            default: "Automation <automation@example.com>".into(),
            allowed: vec!["security-bot@example.com".into()],
        };
        assert!(s.permits("automation@example.com"));
        assert!(s.permits("Security-Bot@Example.com"));
        assert!(!s.permits("ceo@example.com"));
        assert!(!s.permits("automation@example.org"));
        assert_eq!(
            s.listing(),
            "automation@example.com (the default From), security-bot@example.com"
        );
        assert!(Senders::default().permits(DEFAULT_FROM));
        assert!(!Senders::default().permits("security-bot@example.com"));
    }

    #[test]
    fn display_names_from_okta_are_cleaned() {
        assert_eq!(
            clean_display_name("  Jane\r\n  Doe\t", "j@x.com").as_deref(),
            Some("Jane Doe")
        );
        assert_eq!(clean_display_name("J@X.com", "j@x.com"), None);
        assert_eq!(clean_display_name(" \n", "j@x.com"), None);
        let long = "x".repeat(MAX_DISPLAY_NAME_CHARS * 2);
        assert_eq!(
            clean_display_name(&long, "j@x.com").map(|n| n.chars().count()),
            Some(MAX_DISPLAY_NAME_CHARS)
        );
    }

    #[test]
    fn old_queued_mails_without_from_or_key_still_read() {
        let old = r#"{"id":"abc","position":0,"to":["a@b.com"],"cc":[],"bcc":[],"reply_to":null,"subject":"s","body":"b","html":null}"#;
        let e: Email = serde_json::from_str(old).expect("old mail");
        assert_eq!((&e.from, &e.key), (&None, &None));
        let json = serde_json::to_string(&e).expect("json");
        assert!(
            !json.contains("from"),
            "no `from` written when unset: {json}"
        );
    }
}
