//! Parsing a delivery body into its events: lenient about what Okta may leave out, precise about
//! what makes a body unusable. The only envelope parser: the server, `engine run`, `check`,
//! `tokens` and `samples add` all read payloads through it ([`parse_payload`] wraps a lone
//! LogEvent first), so a dry run orders events and derives ids exactly as the server does.
//!
//! Every envelope field is optional and unknown fields are allowed; the only hard requirements
//! are a JSON object with a non-empty `data.events` array of objects. Events are not copied: each
//! is a byte range of the body, so the store keeps exactly what Okta sent.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::config::HookKind;
pub use crate::store::{ParsedDelivery, ParsedEvent};

/// The event type given to `generic` hook bodies that carry no `eventType` string.
pub const GENERIC_EVENT_TYPE: &str = "generic";

/// Why a body is not a delivery. The message is shown to the sender in the 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not valid UTF-8 JSON")]
    NotUtf8,
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body is not an Okta event-hook envelope: {0}")]
    NotEnvelope(String),
}

impl EnvelopeError {
    /// Stable machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            EnvelopeError::NotUtf8 | EnvelopeError::NotJson(_) => "invalid_json",
            EnvelopeError::NotEnvelope(_) => "invalid_envelope",
        }
    }
}

/// An envelope's fields; `D` is how much of `data` is parsed: `FastData` (everything, in one
/// pass) or a raw value (level by level, to say what is wrong).
#[derive(Deserialize)]
#[serde(bound(deserialize = "D: Deserialize<'de>"))]
struct Envelope<'a, D> {
    #[serde(borrow, rename = "eventId", default)]
    event_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "eventTime", default)]
    event_time: Option<&'a RawValue>,
    #[serde(borrow, default)]
    source: Option<&'a RawValue>,
    #[serde(default)]
    data: Option<D>,
}

/// `data` with `events` as `E`: a raw value, or the items.
#[derive(Deserialize)]
#[serde(bound(deserialize = "E: Deserialize<'de>"))]
struct Data<E> {
    #[serde(default)]
    events: Option<E>,
}

#[derive(Deserialize)]
struct EventHead<'a> {
    #[serde(borrow, default)]
    uuid: Option<&'a RawValue>,
    #[serde(borrow, rename = "eventType", default)]
    event_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    published: Option<&'a RawValue>,
}

/// Parses a body for a hook of the given kind.
pub fn parse(kind: HookKind, body: &[u8]) -> Result<ParsedDelivery, EnvelopeError> {
    let text = std::str::from_utf8(body).map_err(|_| EnvelopeError::NotUtf8)?;
    match kind {
        HookKind::Okta => parse_okta(text),
        HookKind::Generic => parse_generic(text),
    }
}

/// The whole envelope in one pass; any surprise falls back to [`diagnose_okta`].
type FastEnvelope<'a> = Envelope<'a, Data<Vec<&'a RawValue>>>;

fn parse_okta(text: &str) -> Result<ParsedDelivery, EnvelopeError> {
    if text.trim_start().starts_with('{')
        && let Ok(env) = serde_json::from_str::<FastEnvelope>(text)
        && let Some(items) = env.data.and_then(|d| d.events)
        && !items.is_empty()
        && items.iter().all(|i| i.get().starts_with('{'))
    {
        return delivery(text, env.event_id, env.event_time, env.source, &items);
    }
    diagnose_okta(text)
}

/// The slow path: walks the body level by level to say precisely what is wrong with it.
fn diagnose_okta(text: &str) -> Result<ParsedDelivery, EnvelopeError> {
    let root: &RawValue =
        serde_json::from_str(text).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    if !root.get().starts_with('{') {
        return Err(EnvelopeError::NotEnvelope(format!(
            "expected a JSON object, found {}",
            json_kind(root)
        )));
    }
    let env: Envelope<&RawValue> =
        serde_json::from_str(root.get()).map_err(|e| EnvelopeError::NotEnvelope(e.to_string()))?;
    let data = env
        .data
        .filter(|d| d.get() != "null")
        .ok_or_else(|| EnvelopeError::NotEnvelope("`data` is missing".into()))?;
    if !data.get().starts_with('{') {
        return Err(EnvelopeError::NotEnvelope(format!(
            "`data` must be an object, found {}",
            json_kind(data)
        )));
    }
    let data: Data<&RawValue> = serde_json::from_str(data.get())
        .map_err(|e| EnvelopeError::NotEnvelope(format!("`data`: {e}")))?;
    let events = data
        .events
        .filter(|e| e.get() != "null")
        .ok_or_else(|| EnvelopeError::NotEnvelope("`data.events` is missing".into()))?;
    if !events.get().starts_with('[') {
        return Err(EnvelopeError::NotEnvelope(format!(
            "`data.events` must be an array, found {}",
            json_kind(events)
        )));
    }
    let items: Vec<&RawValue> = serde_json::from_str(events.get())
        .map_err(|e| EnvelopeError::NotEnvelope(format!("`data.events`: {e}")))?;
    if items.is_empty() {
        return Err(EnvelopeError::NotEnvelope(
            "`data.events` is empty: a delivery needs at least one event".into(),
        ));
    }
    delivery(text, env.event_id, env.event_time, env.source, &items)
}

fn delivery(
    text: &str,
    event_id: Option<&RawValue>,
    event_time: Option<&RawValue>,
    source: Option<&RawValue>,
    items: &[&RawValue],
) -> Result<ParsedDelivery, EnvelopeError> {
    let base = text.as_ptr() as usize;
    let mut parsed = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if !item.get().starts_with('{') {
            return Err(EnvelopeError::NotEnvelope(format!(
                "`data.events[{i}]` must be an object, found {}",
                json_kind(item)
            )));
        }
        let head: EventHead = serde_json::from_str(item.get())
            .map_err(|e| EnvelopeError::NotEnvelope(format!("`data.events[{i}]`: {e}")))?;
        let start = item.get().as_ptr() as usize - base;
        let span = start..start + item.get().len();
        let uuid = id_of(head.uuid, item.get().as_bytes());
        parsed.push(ParsedEvent {
            uuid,
            event_type: head
                .event_type
                .and_then(as_str)
                .map(Cow::into_owned)
                .unwrap_or_default(),
            published: head
                .published
                .and_then(as_str)
                .map(Cow::into_owned)
                .unwrap_or_default(),
            span,
        });
    }
    order_by_published(&mut parsed);
    Ok(ParsedDelivery {
        delivery_id: event_id.and_then(as_str).map(Cow::into_owned),
        event_time: owned(event_time),
        source: owned(source),
        events: parsed,
    })
}

/// The envelope fields given to a lone LogEvent when it is wrapped into an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapper {
    /// `eventId`.
    pub event_id: String,
    /// `eventTime`; `None`: the event's own `published`.
    pub event_time: Option<String>,
    /// `source`.
    pub source: String,
}

impl Wrapper {
    /// How a payload file is taken by `engine run`, `check`, `tokens` and `samples add`:
    /// delivery id `local`, time the event's `published`, source `file`.
    pub fn file() -> Wrapper {
        Wrapper {
            event_id: LOCAL_DELIVERY_ID.to_string(),
            event_time: None,
            source: FILE_SOURCE.to_string(),
        }
    }
}

/// The delivery id of a payload file that is a lone LogEvent.
pub const LOCAL_DELIVERY_ID: &str = "local";
/// The `source` of a payload file that is a lone LogEvent.
pub const FILE_SOURCE: &str = "file";

/// A payload file read as the server would read its body.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The envelope: the file itself, or the lone LogEvent wrapped into one.
    pub body: Bytes,
    pub delivery: ParsedDelivery,
}

impl Payload {
    /// Each event's JSON (as stored: a byte range of the body), in delivery order.
    pub fn events(&self) -> impl Iterator<Item = (&ParsedEvent, &[u8])> {
        self.delivery
            .events
            .iter()
            .map(|e| (e, self.body.get(e.span.clone()).unwrap_or_default()))
    }
}

/// Reads a payload file (an event-hook envelope, or a single LogEvent, which is wrapped with
/// [`Wrapper::file`]) exactly as the server parses a delivery body.
pub fn parse_payload(bytes: &[u8]) -> Result<Payload, EnvelopeError> {
    let body = match wrap_if_event(bytes, &Wrapper::file())? {
        Some(wrapped) => Bytes::from(wrapped),
        None => Bytes::copy_from_slice(bytes),
    };
    let delivery = parse(HookKind::Okta, &body)?;
    Ok(Payload { body, delivery })
}

/// An envelope for `bytes` when it is a lone LogEvent (an object with `eventType` or `uuid` and
/// no `data.events`); `None` when it already is an envelope (or something else, which the
/// parser then describes).
pub fn wrap_if_event(bytes: &[u8], wrapper: &Wrapper) -> Result<Option<Vec<u8>>, EnvelopeError> {
    let text = std::str::from_utf8(bytes).map_err(|_| EnvelopeError::NotUtf8)?;
    let root: &RawValue =
        serde_json::from_str(text).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    if !root.get().starts_with('{') {
        return Ok(None);
    }
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow, default)]
        data: Option<&'a RawValue>,
        #[serde(borrow, rename = "eventType", default)]
        event_type: Option<&'a RawValue>,
        #[serde(borrow, default)]
        uuid: Option<&'a RawValue>,
        #[serde(borrow, default)]
        published: Option<&'a RawValue>,
    }
    let probe: Probe =
        serde_json::from_str(root.get()).map_err(|e| EnvelopeError::NotEnvelope(e.to_string()))?;
    if probe.data.is_some() || (probe.event_type.is_none() && probe.uuid.is_none()) {
        return Ok(None);
    }
    let event_time = match &wrapper.event_time {
        Some(t) => t.clone(),
        None => probe
            .published
            .and_then(as_str)
            .map(Cow::into_owned)
            .unwrap_or_default(),
    };
    // The event's bytes go in as they are, so its content id (for an event without a uuid) is
    // the same wrapped or not.
    let text = |s: &str| serde_json::Value::from(s).to_string();
    let envelope = format!(
        r#"{{"eventType":"com.okta.event_hook","eventTypeVersion":"1.0","cloudEventsVersion":"0.1","source":{},"eventId":{},"eventTime":{},"contentType":"application/json","data":{{"events":[{}]}}}}"#,
        text(&wrapper.source),
        text(&wrapper.event_id),
        text(&event_time),
        root.get()
    );
    Ok(Some(envelope.into_bytes()))
}

/// The `source` of a lone LogEvent that `engine send` wraps.
pub const SEND_SOURCE: &str = "engine send";

/// The body `engine send` posts for a payload file: an envelope as it is, or a lone LogEvent
/// wrapped with a fresh `eventId`, `eventTime` now and source `engine send`. Either must parse
/// as an Okta delivery.
pub fn delivery_body(bytes: &[u8]) -> Result<Bytes, EnvelopeError> {
    let wrapper = Wrapper {
        event_id: crate::util::new_uuid(),
        event_time: Some(crate::util::format_ms(crate::util::now_ms())),
        source: SEND_SOURCE.to_string(),
    };
    let body = match wrap_if_event(bytes, &wrapper)? {
        Some(wrapped) => Bytes::from(wrapped),
        None => Bytes::copy_from_slice(bytes),
    };
    parse(HookKind::Okta, &body)?;
    Ok(body)
}

fn parse_generic(text: &str) -> Result<ParsedDelivery, EnvelopeError> {
    let root: &RawValue =
        serde_json::from_str(text).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    let base = text.as_ptr() as usize;
    let start = root.get().as_ptr() as usize - base;
    let (event_type, published) = if root.get().starts_with('{') {
        match serde_json::from_str::<EventHead>(root.get()) {
            Ok(h) => (
                h.event_type.and_then(as_str).map(Cow::into_owned),
                h.published.and_then(as_str).map(Cow::into_owned),
            ),
            Err(_) => (None, None),
        }
    } else {
        (None, None)
    };
    Ok(ParsedDelivery {
        delivery_id: None,
        event_time: String::new(),
        source: String::new(),
        events: vec![ParsedEvent {
            // Each generic POST is one new event: there is no id to deduplicate by.
            uuid: crate::util::new_uuid(),
            event_type: event_type.unwrap_or_else(|| GENERIC_EVENT_TYPE.to_string()),
            published: published.unwrap_or_default(),
            span: start..start + root.get().len(),
        }],
    })
}

/// Okta orders nothing across a delivery; scripts see a delivery's events by `published`.
/// Timestamps carry 3 or 6 fractional digits, so they are compared as instants, not strings.
/// Events without a parseable time keep their place after the timed ones.
fn order_by_published(events: &mut [ParsedEvent]) {
    if events.len() < 2 {
        return;
    }
    let mut keyed: Vec<(Option<i128>, usize)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (crate::util::parse_rfc3339_nanos(&e.published), i))
        .collect();
    if keyed.windows(2).all(|w| w[0] <= w[1] && w[0].0.is_some()) {
        return;
    }
    keyed.sort_by(|a, b| match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(&y).then(a.1.cmp(&b.1)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.1.cmp(&b.1),
    });
    let sorted: Vec<ParsedEvent> = keyed.iter().map(|(_, i)| events[*i].clone()).collect();
    events.clone_from_slice(&sorted);
}

fn owned(raw: Option<&RawValue>) -> String {
    raw.and_then(as_str)
        .map(Cow::into_owned)
        .unwrap_or_default()
}

fn as_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<Cow<str>>(raw.get()).ok()
}

fn json_kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't') | Some(b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// An event's id: its `uuid`, or for an event without one a hash of its bytes, so that a
/// re-sent copy is still recognised.
fn id_of(uuid: Option<&RawValue>, bytes: &[u8]) -> String {
    match uuid.and_then(as_str) {
        Some(u) if !u.is_empty() => u.into_owned(),
        _ => content_id(bytes),
    }
}

/// The id the server gives one event's JSON (as stored): its `uuid`, or the content id of the
/// bytes. For samples and dry runs, so that their action ids are the server's.
pub fn event_id(event_json: &[u8]) -> String {
    let uuid = std::str::from_utf8(event_json)
        .ok()
        .and_then(|t| serde_json::from_str::<EventHead>(t).ok())
        .and_then(|h| h.uuid.and_then(as_str).map(Cow::into_owned));
    match uuid {
        Some(u) if !u.is_empty() => u,
        _ => content_id(event_json),
    }
}

/// A stable id for an event that has no `uuid`.
fn content_id(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!("sha256:{}", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn okta(body: &str) -> Result<ParsedDelivery, EnvelopeError> {
        parse(HookKind::Okta, body.as_bytes())
    }

    #[test]
    fn spans_point_at_each_event() {
        let body =
            r#"{"eventId":"d1","data":{"events":[{"uuid":"a","eventType":"x"}, {"uuid":"b"}]}}"#;
        let d = okta(body).unwrap();
        assert_eq!(d.delivery_id.as_deref(), Some("d1"));
        assert_eq!(
            &body[d.events[0].span.clone()],
            r#"{"uuid":"a","eventType":"x"}"#
        );
        assert_eq!(&body[d.events[1].span.clone()], r#"{"uuid":"b"}"#);
    }

    #[test]
    fn orders_by_published_instant_not_text() {
        let body = r#"{"data":{"events":[
            {"uuid":"late","published":"2024-01-01T00:00:00.159Z"},
            {"uuid":"early","published":"2024-01-01T00:00:00.158999Z"},
            {"uuid":"none"}]}}"#;
        let d = okta(body).unwrap();
        let order: Vec<&str> = d.events.iter().map(|e| e.uuid.as_str()).collect();
        assert_eq!(order, ["early", "late", "none"]);
    }

    #[test]
    fn rejects_what_is_not_an_envelope() {
        let cases = [
            ("[1]", "expected a JSON object, found an array"),
            ("{}", "`data` is missing"),
            (r#"{"data":null}"#, "`data` is missing"),
            (r#"{"data":[]}"#, "`data` must be an object"),
            (r#"{"data":{}}"#, "`data.events` is missing"),
            (
                r#"{"data":{"events":{}}}"#,
                "`data.events` must be an array",
            ),
            (r#"{"data":{"events":[]}}"#, "`data.events` is empty"),
            (
                r#"{"data":{"events":[{},3]}}"#,
                "`data.events[1]` must be an object",
            ),
        ];
        for (body, want) in cases {
            let err = okta(body).unwrap_err().to_string();
            assert!(err.contains(want), "{body}: {err}");
        }
        assert!(matches!(okta("{nope"), Err(EnvelopeError::NotJson(_))));
    }

    #[test]
    fn fast_and_diagnosing_paths_agree_on_good_bodies() {
        let bodies = [
            r#"{"eventId":"d","eventTime":"t","source":"s","data":{"events":[{"uuid":"a","published":"2024-01-01T00:00:01Z"},{"uuid":"b","published":"2024-01-01T00:00:00Z"}]}}"#,
            r#"  {"data":{"x":1,"events":[{"uuid":"\u0041"}]},"eventId":null}"#,
        ];
        for body in bodies {
            assert_eq!(parse_okta(body), diagnose_okta(body), "{body}");
        }
    }

    #[test]
    fn event_without_uuid_gets_a_stable_content_id() {
        let body = r#"{"data":{"events":[{"eventType":"x"}]}}"#;
        let a = okta(body).unwrap();
        let b = okta(body).unwrap();
        assert!(a.events[0].uuid.starts_with("sha256:"));
        assert_eq!(a.events[0].uuid, b.events[0].uuid);
    }
}
