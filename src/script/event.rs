//! The `event` and `delivery` maps scripts see, built from Okta LogEvent JSON.
//!
//! Every documented LogEvent field (and the documented fields of its sub-objects, where the
//! sub-object is present) exists in the map, with `()` for `null` or missing, so scripts can test
//! `event.target == ()` while a misspelt `event.actr` fails at run time. Undocumented fields in the
//! payload are kept as they are.

use std::fmt;

use rhai::{Dynamic, Map};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};

/// The documented top-level fields of an Okta LogEvent.
pub const LOGEVENT_FIELDS: &[&str] = &[
    "uuid",
    "published",
    "eventType",
    "version",
    "severity",
    "legacyEventType",
    "displayMessage",
    "actor",
    "client",
    "device",
    "authenticationContext",
    "outcome",
    "target",
    "transaction",
    "debugContext",
    "securityContext",
    "request",
];

/// Fields of an `actor` and of each `target[]` item.
const ACTOR_FIELDS: &[&str] = &["id", "type", "alternateId", "displayName", "detailEntry"];
const CLIENT_FIELDS: &[&str] = &[
    "userAgent",
    "zone",
    "device",
    "id",
    "ipAddress",
    "geographicalContext",
];
const USER_AGENT_FIELDS: &[&str] = &["rawUserAgent", "os", "browser"];
const GEO_FIELDS: &[&str] = &["city", "state", "country", "postalCode", "geolocation"];
const GEOLOCATION_FIELDS: &[&str] = &["lat", "lon"];
const DEVICE_FIELDS: &[&str] = &[
    "id",
    "name",
    "os_platform",
    "os_version",
    "managed",
    "registered",
    "device_integrator",
    "disk_encryption_type",
    "screen_lock_type",
    "jailbreak",
    "secure_hardware_present",
];
const AUTH_CONTEXT_FIELDS: &[&str] = &[
    "authenticationProvider",
    "credentialProvider",
    "credentialType",
    "issuer",
    "interface",
    "authenticationStep",
    "externalSessionId",
];
const OUTCOME_FIELDS: &[&str] = &["result", "reason"];
const TRANSACTION_FIELDS: &[&str] = &["type", "id", "detail"];
const DEBUG_CONTEXT_FIELDS: &[&str] = &["debugData"];
const SECURITY_CONTEXT_FIELDS: &[&str] = &["asNumber", "asOrg", "isp", "domain", "isProxy"];
const REQUEST_FIELDS: &[&str] = &["ipChain"];
const IP_ADDRESS_FIELDS: &[&str] = &["ip", "geographicalContext", "version", "source"];

/// The envelope an event arrived in; in scope as the `delivery` map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryInfo {
    /// The envelope's `eventId`.
    pub id: String,
    /// The envelope's `eventTime`.
    pub time: String,
    /// The hook id the delivery came in on.
    pub hook: String,
    /// The envelope's `source`.
    pub source: String,
}

/// `#{ id, time, hook, source }`.
/// A JSON value (e.g. a user's profile) as a Rhai value.
pub(crate) fn json_to_dynamic(v: &serde_json::Value) -> Dynamic {
    match v {
        serde_json::Value::Null => Dynamic::UNIT,
        serde_json::Value::Bool(b) => (*b).into(),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => (i as rhai::INT).into(),
            None => (n.as_f64().unwrap_or(f64::NAN) as rhai::FLOAT).into(),
        },
        serde_json::Value::String(s) => s.as_str().into(),
        serde_json::Value::Array(a) => a
            .iter()
            .map(json_to_dynamic)
            .collect::<rhai::Array>()
            .into(),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, v)| (k.as_str().into(), json_to_dynamic(v)))
            .collect::<Map>()
            .into(),
    }
}

pub fn delivery_map(d: &DeliveryInfo) -> Map {
    let mut m = Map::new();
    m.insert("id".into(), d.id.clone().into());
    m.insert("time".into(), d.time.clone().into());
    m.insert("hook".into(), d.hook.clone().into());
    m.insert("source".into(), d.source.clone().into());
    m
}

/// Builds the `event` map from one LogEvent's JSON.
///
/// (Rhai *shared* sub-values would make passing `event` to functions cheaper, but rhai 1.27's
/// size check panics on shared values nested in data, e.g. `#{ ev: event }`: do not use them.)
pub fn build_event_map(event_json: &[u8]) -> Result<Map, String> {
    let JsonDynamic(value) =
        serde_json::from_slice(event_json).map_err(|e| format!("event is not valid JSON: {e}"))?;
    let mut map = value
        .try_cast::<Map>()
        .ok_or_else(|| "event JSON is not an object".to_string())?;
    if map.contains_key("data") && map.contains_key("eventTypeVersion") {
        return Err(
            "this is an event-hook envelope, not a LogEvent: pass one of `data.events[]`".into(),
        );
    }
    normalize_event(&mut map);
    Ok(map)
}

/// JSON → `Dynamic` without the detours of rhai's own `Deserialize` (keys are not allocated as
/// `String`s first). `null` → `()`, integers beyond `i64` → float.
struct JsonDynamic(Dynamic);

impl<'de> Deserialize<'de> for JsonDynamic {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DynamicVisitor)
    }
}

struct DynamicVisitor;

impl<'de> Visitor<'de> for DynamicVisitor {
    type Value = JsonDynamic;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(JsonDynamic(v.into()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(JsonDynamic((v as rhai::INT).into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(JsonDynamic(match rhai::INT::try_from(v) {
            Ok(i) => i.into(),
            Err(_) => (v as rhai::FLOAT).into(),
        }))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(JsonDynamic((v as rhai::FLOAT).into()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(JsonDynamic(v.into()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(JsonDynamic(v.into()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(JsonDynamic(Dynamic::UNIT))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(JsonDynamic(Dynamic::UNIT))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        JsonDynamic::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut arr = rhai::Array::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(JsonDynamic(v)) = seq.next_element()? {
            arr.push(v);
        }
        Ok(JsonDynamic(arr.into()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut m = Map::new();
        while let Some(key) = access.next_key::<JsonKey>()? {
            let JsonDynamic(v) = access.next_value()?;
            m.insert(key.as_str().into(), v);
        }
        Ok(JsonDynamic(m.into()))
    }
}

/// A map key, borrowed from the input when it has no escapes.
enum JsonKey<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl JsonKey<'_> {
    fn as_str(&self) -> &str {
        match self {
            JsonKey::Borrowed(s) => s,
            JsonKey::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for JsonKey<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = JsonKey<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonKey::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonKey::Owned(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonKey::Owned(v))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The event's `uuid`, or (for events without one) the sha256 hex of its JSON bytes.
pub fn event_id(event: &Map, event_json: &[u8]) -> String {
    match event
        .get("uuid")
        .and_then(|v| v.read_lock::<rhai::ImmutableString>())
    {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => hex::encode(Sha256::digest(event_json)),
    }
}

fn fill(map: &mut Map, fields: &[&str]) {
    for f in fields {
        if !map.contains_key(*f) {
            map.insert((*f).into(), Dynamic::UNIT);
        }
    }
}

/// Runs `f` on the map stored under `key`, if it is a map.
fn with_map(map: &mut Map, key: &str, f: impl FnOnce(&mut Map)) {
    if let Some(v) = map.get_mut(key)
        && let Some(mut m) = v.write_lock::<Map>()
    {
        f(&mut m);
    }
}

/// Runs `f` on every map item of the array stored under `key`, if it is an array.
fn with_items(map: &mut Map, key: &str, f: impl Fn(&mut Map)) {
    if let Some(v) = map.get_mut(key)
        && let Some(mut arr) = v.write_lock::<rhai::Array>()
    {
        for item in arr.iter_mut() {
            if let Some(mut m) = item.write_lock::<Map>() {
                f(&mut m);
            }
        }
    }
}

fn fill_geo(m: &mut Map) {
    with_map(m, "geographicalContext", |g| {
        fill(g, GEO_FIELDS);
        with_map(g, "geolocation", |l| fill(l, GEOLOCATION_FIELDS));
    });
}

fn fill_ip_chain(m: &mut Map) {
    with_items(m, "ipChain", |ip| {
        fill(ip, IP_ADDRESS_FIELDS);
        fill_geo(ip);
    });
}

/// Adds the documented fields (as `()`) that the payload lacks.
fn normalize_event(map: &mut Map) {
    fill(map, LOGEVENT_FIELDS);
    with_map(map, "actor", |m| fill(m, ACTOR_FIELDS));
    with_items(map, "target", |m| fill(m, ACTOR_FIELDS));
    with_map(map, "client", |c| {
        fill(c, CLIENT_FIELDS);
        with_map(c, "userAgent", |u| fill(u, USER_AGENT_FIELDS));
        fill_geo(c);
        fill_ip_chain(c);
    });
    with_map(map, "device", |m| fill(m, DEVICE_FIELDS));
    with_map(map, "authenticationContext", |m| {
        fill(m, AUTH_CONTEXT_FIELDS)
    });
    with_map(map, "outcome", |m| fill(m, OUTCOME_FIELDS));
    with_map(map, "transaction", |m| fill(m, TRANSACTION_FIELDS));
    with_map(map, "debugContext", |m| fill(m, DEBUG_CONTEXT_FIELDS));
    with_map(map, "securityContext", |m| fill(m, SECURITY_CONTEXT_FIELDS));
    with_map(map, "request", |r| {
        fill(r, REQUEST_FIELDS);
        fill_ip_chain(r);
    });
}

fn str_field(v: &serde_json::Value, key: &str) -> String {
    v.get(key)
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .to_string()
}

/// Splits a payload file into events: an Okta envelope gives one entry per `data.events[]` item
/// (ordered by `published`) with the envelope's delivery info; a single LogEvent gives one entry
/// with `id` = `"local"`, `time` = its `published` and `source` = `"file"`. For `engine run`,
/// `engine check` and tests; the receiver has its own parsing.
pub fn split_payload(json: &[u8], hook: &str) -> Result<Vec<(DeliveryInfo, Vec<u8>)>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("payload is not valid JSON: {e}"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| "payload is not a JSON object".to_string())?;
    let to_bytes = |v: &serde_json::Value| {
        serde_json::to_vec(v).map_err(|e| format!("cannot re-encode event: {e}"))
    };
    if let Some(data) = obj.get("data") {
        let events = data
            .get("events")
            .and_then(|e| e.as_array())
            .ok_or_else(|| "envelope has no `data.events` array".to_string())?;
        let delivery = DeliveryInfo {
            id: str_field(&value, "eventId"),
            time: str_field(&value, "eventTime"),
            hook: hook.to_string(),
            source: str_field(&value, "source"),
        };
        let mut sorted: Vec<&serde_json::Value> = events.iter().collect();
        sorted.sort_by_key(|e| str_field(e, "published"));
        return sorted
            .into_iter()
            .map(|e| Ok((delivery.clone(), to_bytes(e)?)))
            .collect();
    }
    let delivery = DeliveryInfo {
        id: "local".to_string(),
        time: str_field(&value, "published"),
        hook: hook.to_string(),
        source: "file".to_string(),
    };
    Ok(vec![(delivery, to_bytes(&value)?)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_documented_fields() {
        let m =
            build_event_map(br#"{"eventType":"x","target":[{"id":"1"}],"actor":null}"#).unwrap();
        for f in LOGEVENT_FIELDS {
            assert!(m.contains_key(*f), "{f}");
        }
        assert!(m["actor"].is_unit());
        let t = m["target"].clone().into_array().unwrap();
        let t0 = t[0].clone().cast::<Map>();
        assert!(t0["alternateId"].is_unit());
        assert!(build_event_map(b"[1]").is_err());
        assert!(build_event_map(b"{").is_err());
    }
}
