//! The `event` and `delivery` maps scripts see, built from Okta LogEvent JSON.
//!
//! Every documented LogEvent field (and the documented fields of its sub-objects, where the
//! sub-object is present) exists in the map, with `()` for `null` or missing, so scripts can test
//! `event.target == ()` while a misspelt `event.actr` fails at run time. Undocumented fields in the
//! payload are kept as they are.

use std::fmt;

use rhai::{Dynamic, Map};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

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
pub(crate) const ACTOR_FIELDS: &[&str] =
    &["id", "type", "alternateId", "displayName", "detailEntry"];
pub(crate) const CLIENT_FIELDS: &[&str] = &[
    "userAgent",
    "zone",
    "device",
    "id",
    "ipAddress",
    "geographicalContext",
];
pub(crate) const USER_AGENT_FIELDS: &[&str] = &["rawUserAgent", "os", "browser"];
pub(crate) const GEO_FIELDS: &[&str] = &["city", "state", "country", "postalCode", "geolocation"];
pub(crate) const GEOLOCATION_FIELDS: &[&str] = &["lat", "lon"];
pub(crate) const DEVICE_FIELDS: &[&str] = &[
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
pub(crate) const AUTH_CONTEXT_FIELDS: &[&str] = &[
    "authenticationProvider",
    "credentialProvider",
    "credentialType",
    "issuer",
    "interface",
    "authenticationStep",
    "externalSessionId",
];
pub(crate) const OUTCOME_FIELDS: &[&str] = &["result", "reason"];
pub(crate) const TRANSACTION_FIELDS: &[&str] = &["type", "id", "detail"];
pub(crate) const DEBUG_CONTEXT_FIELDS: &[&str] = &["debugData"];
pub(crate) const SECURITY_CONTEXT_FIELDS: &[&str] =
    &["asNumber", "asOrg", "isp", "domain", "isProxy"];
pub(crate) const REQUEST_FIELDS: &[&str] = &["ipChain"];
pub(crate) const IP_ADDRESS_FIELDS: &[&str] = &["ip", "geographicalContext", "version", "source"];

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
        serde_json::Value::Array(a) => Dynamic::from_array(a.iter().map(json_to_dynamic).collect()),
        serde_json::Value::Object(o) => Dynamic::from_map(
            o.iter()
                .map(|(k, v)| (k.as_str().into(), json_to_dynamic(v)))
                .collect(),
        ),
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
/// One pass: each object's entries are collected in a `Vec`, the documented fields it lacks are
/// appended as `()`, and the map is built from them in bulk (see [`Shape`]).
///
/// (Rhai *shared* sub-values would make passing `event` to functions cheaper, but rhai 1.27's
/// size check panics on shared values nested in data, e.g. `#{ ev: event }`: do not use them.)
pub fn build_event_map(event_json: &[u8]) -> Result<Map, String> {
    // Checking UTF-8 once up front spares serde_json a check per string; invalid UTF-8 takes
    // the byte path, which reports where it is.
    let value = match std::str::from_utf8(event_json) {
        Ok(text) => deserialize_event(&mut serde_json::Deserializer::from_str(text)),
        Err(_) => deserialize_event(&mut serde_json::Deserializer::from_slice(event_json)),
    }
    .map_err(|e| format!("event is not valid JSON: {e}"))?;
    let map = value
        .try_cast::<Map>()
        .ok_or_else(|| "event JSON is not an object".to_string())?;
    if map.contains_key("data") && map.contains_key("eventTypeVersion") {
        return Err(
            "this is an event-hook envelope, not a LogEvent: pass one of `data.events[]`".into(),
        );
    }
    Ok(map)
}

fn deserialize_event<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
) -> serde_json::Result<Dynamic> {
    let JsonDynamic(value) = de::DeserializeSeed::deserialize(Seed::Map(Shape::Event), &mut *de)?;
    de.end()?;
    Ok(value)
}

/// The documented objects of a LogEvent: which fields each has (added as `()` when missing) and
/// which of its fields are documented objects or arrays of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Event,
    /// `actor` and each `target[]` item.
    Actor,
    Client,
    UserAgent,
    Geo,
    Geolocation,
    Device,
    AuthContext,
    Outcome,
    Transaction,
    DebugContext,
    SecurityContext,
    Request,
    /// Each `ipChain[]` item.
    IpAddress,
}

impl Shape {
    fn fields(self) -> &'static [&'static str] {
        match self {
            Shape::Event => LOGEVENT_FIELDS,
            Shape::Actor => ACTOR_FIELDS,
            Shape::Client => CLIENT_FIELDS,
            Shape::UserAgent => USER_AGENT_FIELDS,
            Shape::Geo => GEO_FIELDS,
            Shape::Geolocation => GEOLOCATION_FIELDS,
            Shape::Device => DEVICE_FIELDS,
            Shape::AuthContext => AUTH_CONTEXT_FIELDS,
            Shape::Outcome => OUTCOME_FIELDS,
            Shape::Transaction => TRANSACTION_FIELDS,
            Shape::DebugContext => DEBUG_CONTEXT_FIELDS,
            Shape::SecurityContext => SECURITY_CONTEXT_FIELDS,
            Shape::Request => REQUEST_FIELDS,
            Shape::IpAddress => IP_ADDRESS_FIELDS,
        }
    }

    /// How the value under `key` is filled in.
    fn child(self, key: &str) -> Seed {
        use Shape as S;
        match (self, key) {
            (S::Event, "actor") => Seed::Map(S::Actor),
            (S::Event, "target") => Seed::Items(S::Actor),
            (S::Event, "client") => Seed::Map(S::Client),
            (S::Event, "device") => Seed::Map(S::Device),
            (S::Event, "authenticationContext") => Seed::Map(S::AuthContext),
            (S::Event, "outcome") => Seed::Map(S::Outcome),
            (S::Event, "transaction") => Seed::Map(S::Transaction),
            (S::Event, "debugContext") => Seed::Map(S::DebugContext),
            (S::Event, "securityContext") => Seed::Map(S::SecurityContext),
            (S::Event, "request") => Seed::Map(S::Request),
            (S::Client, "userAgent") => Seed::Map(S::UserAgent),
            (S::Client | S::IpAddress, "geographicalContext") => Seed::Map(S::Geo),
            (S::Client | S::Request, "ipChain") => Seed::Items(S::IpAddress),
            (S::Geo, "geolocation") => Seed::Map(S::Geolocation),
            _ => Seed::Plain,
        }
    }
}

/// What to fill in while deserializing one JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seed {
    /// Nothing (undocumented data is kept as it is).
    Plain,
    /// If the value is an object: the fields of this shape.
    Map(Shape),
    /// If the value is an array: every object item gets the fields of this shape.
    Items(Shape),
}

/// JSON → `Dynamic` in one pass, without the detours of rhai's own `Deserialize` (keys are not
/// allocated as `String`s first, maps are not rebuilt by `Dynamic::from`). `null` → `()`,
/// integers beyond `i64` → float.
struct JsonDynamic(Dynamic);

impl<'de> de::DeserializeSeed<'de> for Seed {
    type Value = JsonDynamic;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed {
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
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let item = match self {
            Seed::Items(shape) => Seed::Map(shape),
            _ => Seed::Plain,
        };
        let mut arr = rhai::Array::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(JsonDynamic(v)) = seq.next_element_seed(item)? {
            arr.push(v);
        }
        // Not `arr.into()`: rhai's `From<Vec<T>>` re-collects the items.
        Ok(JsonDynamic(Dynamic::from_array(arr)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let shape = match self {
            Seed::Map(shape) => Some(shape),
            _ => None,
        };
        let fields = shape.map_or(&[][..], Shape::fields);
        // Bit i: `fields[i]` was in the payload.
        let mut present: u32 = 0;
        let mut entries: Vec<(rhai::Identifier, Dynamic)> =
            Vec::with_capacity(fields.len().max(access.size_hint().unwrap_or(0)).max(4));
        while let Some(key) = access.next_key::<JsonKey>()? {
            let key = key.as_str();
            let child = match shape {
                Some(shape) => {
                    if let Some(i) = fields.iter().position(|f| *f == key) {
                        present |= 1 << i;
                    }
                    shape.child(key)
                }
                None => Seed::Plain,
            };
            let JsonDynamic(v) = access.next_value_seed(child)?;
            entries.push((key.into(), v));
        }
        for (i, f) in fields.iter().enumerate() {
            if present & (1 << i) == 0 {
                entries.push(((*f).into(), Dynamic::UNIT));
            }
        }
        // Sorts, then builds the tree in one go; of duplicate keys the last one wins, as with
        // `insert`. Not `map.into()`: rhai's `From<BTreeMap>` rebuilds the map.
        Ok(JsonDynamic(Dynamic::from_map(
            entries.into_iter().collect(),
        )))
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
        assert!(build_event_map(b"{} x").is_err());
        assert!(build_event_map(br#"{"data":{},"eventTypeVersion":"1.0"}"#).is_err());
    }

    /// The two-pass reference: `serde_json::Value` → map, then the documented fields filled in.
    fn reference(json: &[u8]) -> Map {
        let v: serde_json::Value = serde_json::from_slice(json).unwrap();
        let mut map = json_to_dynamic(&v).cast::<Map>();
        normalize_event(&mut map);
        map
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

    #[test]
    fn one_pass_matches_the_two_pass_reference() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut cases: Vec<Vec<u8>> = std::fs::read_dir(&fixtures)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("event."))
            })
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        assert!(!cases.is_empty());
        for extra in [
            r#"{}"#,
            r#"{"actor":null,"target":null,"client":null,"request":null,"device":null}"#,
            r#"{"actor":[1],"target":{"id":"x"},"client":"c","outcome":[],"request":{"ipChain":{}}}"#,
            r#"{"target":[null,1,"x",[{"id":"nested"}],{"type":"User"},{}],"actor":{}}"#,
            r#"{"client":{"ipChain":[{"geographicalContext":{"geolocation":{}}},{}],"device":{"x":1}}}"#,
            r#"{"client":{"userAgent":{},"geographicalContext":{"geolocation":null}}}"#,
            r#"{"request":{"ipChain":[{"geographicalContext":{"city":"A"}}]},"device":{"id":"d"}}"#,
            r#"{"uuid":"a","uuid":"b","actor":{"id":1},"actor":{"type":"User","type":"X"}}"#,
            r#"{"target":[{"id":"1"}],"target":{"id":"2"}}"#,
            r#"{"big":18446744073709551615,"neg":-9223372036854775808,"f":1.5e300,"u":9223372036854775807}"#,
            r#"{"esc\u0061pe":"\ud83d\ude00 \"q\"","actor":{"display\u004eame":"x"}}"#,
            r#"{"debugContext":{"debugData":{"actor":{},"target":[{}]}},"transaction":{"detail":{}}}"#,
            r#"{"authenticationContext":{},"securityContext":{},"outcome":{"result":"SUCCESS"}}"#,
            r#"{"x":{"actor":{},"client":{}},"undocumented":[[[]],{}]}"#,
        ] {
            cases.push(extra.as_bytes().to_vec());
        }
        for json in &cases {
            let got = build_event_map(json).unwrap();
            let want = reference(json);
            assert_eq!(
                format!("{:?}", Dynamic::from_map(got)),
                format!("{:?}", Dynamic::from_map(want)),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }
}
