//! Parsing a delivery body into its events: lenient about what Okta may leave out, precise about
//! what makes a body unusable.
//!
//! Every envelope field is optional and unknown fields are allowed; the only hard requirements
//! are a JSON object with a non-empty `data.events` array of objects. Events are not copied: each
//! is a byte range of the body, so the store keeps exactly what Okta sent.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::config::HookKind;

/// The event type given to `generic` hook bodies that carry no `eventType` string.
pub const GENERIC_EVENT_TYPE: &str = "generic";

/// One event of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    /// Okta's `uuid`, or a content hash (`sha256:…`) for an event without one, so that a re-sent
    /// copy is still recognised.
    pub uuid: String,
    pub event_type: String,
    pub published: String,
    /// Where the event's JSON is in the body.
    pub span: Range<usize>,
}

/// A parsed delivery, events ordered by `published`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDelivery {
    /// The envelope's `eventId` (Okta's delivery id), if it has one.
    pub delivery_id: Option<String>,
    /// The envelope's `eventTime` and `source`, as sent (empty when absent).
    pub event_time: String,
    pub source: String,
    pub events: Vec<ParsedEvent>,
}

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

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, rename = "eventId", default)]
    event_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "eventTime", default)]
    event_time: Option<&'a RawValue>,
    #[serde(borrow, default)]
    source: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow, default)]
    events: Option<&'a RawValue>,
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
#[derive(Deserialize)]
struct FastEnvelope<'a> {
    #[serde(borrow, rename = "eventId", default)]
    event_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "eventTime", default)]
    event_time: Option<&'a RawValue>,
    #[serde(borrow, default)]
    source: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<FastData<'a>>,
}

#[derive(Deserialize)]
struct FastData<'a> {
    #[serde(borrow, default)]
    events: Option<Vec<&'a RawValue>>,
}

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
    let env: Envelope =
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
    let data: Data = serde_json::from_str(data.get())
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
        let uuid = match head.uuid.and_then(as_str) {
            Some(u) if !u.is_empty() => u.into_owned(),
            _ => content_id(item.get().as_bytes()),
        };
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
