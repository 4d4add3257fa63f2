//! Personalization tokens: every path a script can read from `event`, with its type and an
//! example value, from sample LogEvents.
//!
//! The paths come from the `event` map exactly as scripts see it ([`build_event_map`]), so the
//! documented LogEvent fields that a sample has as `null` (or lacks) are listed with type `()`.
//! The samples are merged into one [`Shape`] per event type: array items are merged into one
//! item shown as index 0 (`event.target[0].alternateId`), with the lengths seen as a note.
//! `engine check` uses the same [`Shape`] to check the paths a script reads.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use rhai::{Dynamic, Map};
use serde::Serialize;

use super::samples::Sample;
use crate::script::{build_event_map, pattern_matches};

/// Characters of an example value shown in the table (the JSON output has the whole value).
const EXAMPLE_CHARS: usize = 60;
/// Nesting followed when building a shape: LogEvents are shallow; this only bounds odd input.
const MAX_DEPTH: usize = 32;

/// The kind of a value at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    String,
    Number,
    Boolean,
    Object,
    Array,
    /// `null` or missing: `()` in Rhai.
    Unit,
}

impl Kind {
    /// The JSON type name (`()` for null/missing, as scripts see it).
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Number => "number",
            Kind::Boolean => "boolean",
            Kind::Object => "object",
            Kind::Array => "array",
            Kind::Unit => "()",
        }
    }

    fn of(v: &Dynamic) -> Kind {
        if v.is_string() || v.is_char() {
            Kind::String
        } else if v.is_int() || v.is_float() {
            Kind::Number
        } else if v.is_bool() {
            Kind::Boolean
        } else if v.is_map() {
            Kind::Object
        } else if v.is_array() {
            Kind::Array
        } else {
            Kind::Unit
        }
    }
}

/// What is known about the values at one path, merged over samples (and the documentation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shape {
    /// Kinds seen (empty: documented but never seen).
    pub kinds: BTreeSet<Kind>,
    /// Fields of an object, by name.
    pub fields: BTreeMap<String, Shape>,
    /// The merged items of an array.
    pub item: Option<Box<Shape>>,
    /// A field Okta documents for LogEvents.
    pub documented: bool,
    /// A documented object whose fields are all documented: a field not among them (nor in any
    /// sample) is a mistake, not merely unseen.
    pub closed: bool,
    /// The first non-null scalar value seen.
    pub example: Option<serde_json::Value>,
    /// Smallest and largest array length seen.
    pub lengths: Option<(usize, usize)>,
    /// Samples in which this path holds a non-null value.
    pub seen: usize,
}

impl Shape {
    /// The shape of one LogEvent (as scripts see it). Errors when the JSON is not a LogEvent.
    pub fn of_event(json: &[u8]) -> Result<Shape, String> {
        let map = build_event_map(json)?;
        let mut s = Shape::default();
        s.add_map(&map, 0);
        s.kinds.insert(Kind::Object);
        s.seen = 1;
        Ok(s)
    }

    /// The documented LogEvent fields (every documented object, closed), with no kinds or
    /// examples. Derived from the same lists `build_event_map` fills in.
    pub fn documented() -> Shape {
        // Every documented sub-object present (and empty), so `build_event_map` fills in its
        // documented fields; arrays with one empty item for the same reason.
        const SKELETON: &str = r#"{"actor":{},"target":[{}],
            "client":{"userAgent":{},"geographicalContext":{"geolocation":{}}},
            "device":{},"authenticationContext":{},"outcome":{},"transaction":{},
            "debugContext":{},"securityContext":{},
            "request":{"ipChain":[{"geographicalContext":{"geolocation":{}}}]}}"#;
        let mut s = Shape::of_event(SKELETON.as_bytes()).unwrap_or_default();
        s.mark_documented();
        s
    }

    fn mark_documented(&mut self) {
        self.documented = true;
        self.closed = !self.fields.is_empty();
        self.kinds.clear();
        self.example = None;
        self.lengths = None;
        self.seen = 0;
        for f in self.fields.values_mut() {
            f.mark_documented();
        }
        if let Some(i) = &mut self.item {
            i.mark_documented();
            // `[{}]` in the skeleton stands for "an array of such objects".
            self.closed = false;
        }
    }

    /// A shape of every sample, merged; `None` when there are none. Samples that are not
    /// LogEvents are skipped.
    pub fn of_samples(samples: &[Sample]) -> Option<Shape> {
        let mut out: Option<Shape> = None;
        for s in samples {
            if let Ok(shape) = Shape::of_event(&s.json) {
                match &mut out {
                    Some(o) => o.merge(&shape),
                    None => out = Some(shape),
                }
            }
        }
        out
    }

    fn add_value(&mut self, v: &Dynamic, depth: usize) {
        let kind = Kind::of(v);
        self.kinds.insert(kind);
        if kind != Kind::Unit {
            self.seen += 1;
        }
        if depth >= MAX_DEPTH {
            return;
        }
        if let Some(m) = v.read_lock::<Map>() {
            self.add_map(&m, depth + 1);
        } else if let Some(a) = v.read_lock::<rhai::Array>() {
            let n = a.len();
            self.lengths = Some(match self.lengths {
                Some((lo, hi)) => (lo.min(n), hi.max(n)),
                None => (n, n),
            });
            if !a.is_empty() {
                // Merge the items: each is one more observation of the item shape, but the
                // array counts once for `seen`.
                let mut item = Shape::default();
                for x in a.iter() {
                    let mut one = Shape::default();
                    one.add_value(x, depth + 1);
                    item.merge(&one);
                }
                item.seen = 1;
                clamp_seen(&mut item);
                match &mut self.item {
                    Some(i) => i.merge(&item),
                    None => self.item = Some(Box::new(item)),
                }
            }
        } else if self.example.is_none() {
            self.example = scalar_json(v);
        }
    }

    fn add_map(&mut self, m: &Map, depth: usize) {
        for (k, v) in m.iter() {
            self.fields
                .entry(k.to_string())
                .or_default()
                .add_value(v, depth);
        }
    }

    /// Merges `other` into `self` (kinds, fields and items are unions).
    pub fn merge(&mut self, other: &Shape) {
        self.kinds.extend(other.kinds.iter().copied());
        for (k, v) in &other.fields {
            match self.fields.get_mut(k) {
                Some(mine) => mine.merge(v),
                None => {
                    self.fields.insert(k.clone(), v.clone());
                }
            }
        }
        match (&mut self.item, &other.item) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.item = Some(b.clone()),
            _ => {}
        }
        self.documented |= other.documented;
        self.closed |= other.closed;
        if self.example.is_none() {
            self.example = other.example.clone();
        }
        self.lengths = match (self.lengths, other.lengths) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (x, None) => x,
            (None, y) => y,
        };
        self.seen += other.seen;
    }

    /// The kinds as a type: `string`, `string | ()`, or `?` when never seen.
    pub fn type_name(&self) -> String {
        if self.kinds.is_empty() {
            return "?".to_string();
        }
        self.kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

/// Items of one array each count as one observation; keep nested counts per array, not item.
fn clamp_seen(s: &mut Shape) {
    s.seen = s.seen.min(1);
    for f in s.fields.values_mut() {
        clamp_seen(f);
    }
    if let Some(i) = &mut s.item {
        clamp_seen(i);
    }
}

fn scalar_json(v: &Dynamic) -> Option<serde_json::Value> {
    if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        return Some(serde_json::Value::String(s.to_string()));
    }
    if let Ok(i) = v.as_int() {
        return Some(i.into());
    }
    if let Ok(f) = v.as_float() {
        return serde_json::Number::from_f64(f).map(serde_json::Value::Number);
    }
    if let Ok(b) = v.as_bool() {
        return Some(b.into());
    }
    if let Ok(c) = v.as_char() {
        return Some(serde_json::Value::String(c.to_string()));
    }
    None
}

/// Whether `name` can follow a `.` in Rhai (else the path shows it as `["name"]`).
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `base` followed by the field `name`, in Rhai syntax.
pub fn field_path(base: &str, name: &str) -> String {
    if is_identifier(name) {
        format!("{base}.{name}")
    } else {
        let quoted = serde_json::to_string(name).unwrap_or_else(|_| format!("\"{name}\""));
        format!("{base}[{quoted}]")
    }
}

/// One path a script can read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Token {
    /// `event.target[0].alternateId`.
    pub path: String,
    /// JSON type(s) seen: `string`, `object`, `string | ()`; `?` when only documented.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The first non-null scalar value seen.
    pub example: Option<serde_json::Value>,
    /// E.g. `1–3 items` for arrays, `in 2 of 5 samples` for paths not in every sample.
    pub note: Option<String>,
    /// Whether Okta documents the field.
    pub documented: bool,
}

/// Every path in `samples` (merged), in path order; empty when there are no samples.
pub fn tokens(samples: &[Sample]) -> Vec<Token> {
    let Some(shape) = Shape::of_samples(samples) else {
        return Vec::new();
    };
    let documented = Shape::documented();
    let mut out = Vec::new();
    collect(&shape, Some(&documented), "event", shape.seen, &mut out);
    out
}

fn collect(shape: &Shape, doc: Option<&Shape>, path: &str, total: usize, out: &mut Vec<Token>) {
    for (name, child) in &shape.fields {
        let child_doc = doc.and_then(|d| d.fields.get(name));
        let p = field_path(path, name);
        push_token(child, child_doc, &p, total, out);
    }
}

fn push_token(shape: &Shape, doc: Option<&Shape>, path: &str, total: usize, out: &mut Vec<Token>) {
    let mut notes = Vec::new();
    if let Some((lo, hi)) = shape.lengths {
        let items = if hi == 1 { "item" } else { "items" };
        notes.push(if lo == hi {
            format!("{lo} {items}")
        } else {
            format!("{lo}–{hi} {items}")
        });
    }
    if shape.seen > 0 && shape.seen < total {
        notes.push(format!("in {} of {total} samples", shape.seen));
    }
    out.push(Token {
        path: path.to_string(),
        type_name: shape.type_name(),
        example: shape.example.clone(),
        note: (!notes.is_empty()).then(|| notes.join(", ")),
        documented: doc.is_some_and(|d| d.documented),
    });
    collect(shape, doc, path, total, out);
    if let Some(item) = &shape.item {
        let item_doc = doc.and_then(|d| d.item.as_deref());
        // Items are counted per array: compare with the number of samples holding an array.
        push_token(item, item_doc, &format!("{path}[0]"), shape.seen, out);
    }
}

/// The samples grouped by event type, in order of type.
fn by_event_type(samples: &[Sample]) -> Vec<(String, Vec<Sample>)> {
    let mut groups: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for s in samples {
        groups
            .entry(s.event_type.clone())
            .or_default()
            .push(s.clone());
    }
    groups.into_iter().collect()
}

/// The tokens of one event type.
#[derive(Debug, Clone, Serialize)]
pub struct TokenGroup {
    pub event_type: String,
    /// Where the samples came from.
    pub samples: Vec<String>,
    pub tokens: Vec<Token>,
}

/// The tokens per event type of `samples`, limited to types matching `event_type` if given.
pub fn token_groups(samples: &[Sample], event_type: Option<&str>) -> Vec<TokenGroup> {
    by_event_type(samples)
        .into_iter()
        .filter(|(t, _)| event_type.is_none_or(|p| pattern_matches(p, t)))
        .map(|(t, group)| TokenGroup {
            samples: group.iter().map(|s| s.source.clone()).collect(),
            tokens: tokens(&group),
            event_type: t,
        })
        .collect()
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Renders the groups as tables for people.
pub fn render_table(groups: &[TokenGroup], out: &mut dyn Write) -> std::io::Result<()> {
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        let n = g.samples.len();
        writeln!(
            out,
            "{} ({n} sample{})",
            if g.event_type.is_empty() {
                "(no eventType)"
            } else {
                &g.event_type
            },
            if n == 1 { "" } else { "s" }
        )?;
        let rows: Vec<[String; 3]> = g
            .tokens
            .iter()
            .map(|t| {
                let mut example = match &t.example {
                    Some(serde_json::Value::String(s)) => {
                        shorten(&serde_json::to_string(s).unwrap_or_default(), EXAMPLE_CHARS)
                    }
                    Some(v) => shorten(&v.to_string(), EXAMPLE_CHARS),
                    None => String::new(),
                };
                if let Some(note) = &t.note {
                    if !example.is_empty() {
                        example.push_str("  ");
                    }
                    example.push_str(&format!("({note})"));
                }
                if !t.documented && t.path.matches('.').count() == 1 {
                    // Top-level fields Okta does not document: say so, scripts may rely on them.
                    if !example.is_empty() {
                        example.push_str("  ");
                    }
                    example.push_str("(undocumented)");
                }
                [t.path.clone(), t.type_name.clone(), example]
            })
            .collect();
        let w0 = rows
            .iter()
            .map(|r| r[0].chars().count())
            .max()
            .unwrap_or(0)
            .max("PATH".len());
        let w1 = rows
            .iter()
            .map(|r| r[1].chars().count())
            .max()
            .unwrap_or(0)
            .max("TYPE".len());
        writeln!(out, "  {:<w0$}  {:<w1$}  EXAMPLE", "PATH", "TYPE")?;
        for r in rows {
            let line = format!("  {:<w0$}  {:<w1$}  {}", r[0], r[1], r[2]);
            writeln!(out, "{}", line.trim_end())?;
        }
    }
    Ok(())
}

/// Renders the groups as one JSON object `{"event_types": [...]}` for tools.
pub fn render_json(groups: &[TokenGroup], out: &mut dyn Write) -> std::io::Result<()> {
    #[derive(Serialize)]
    struct Doc<'a> {
        event_types: &'a [TokenGroup],
    }
    serde_json::to_writer_pretty(
        &mut *out,
        &Doc {
            event_types: groups,
        },
    )?;
    writeln!(out)
}

/// There is nothing to show: no samples, or none of the event type asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoTokens(pub String);

/// The token groups of `samples` (of the types matching `event_type`, if given); an error that
/// says why when there are none.
pub fn tokens_for(
    samples: &[Sample],
    event_type: Option<&str>,
) -> Result<Vec<TokenGroup>, NoTokens> {
    let groups = token_groups(samples, event_type);
    if !groups.is_empty() {
        return Ok(groups);
    }
    Err(NoTokens(match event_type {
        Some(t) if !samples.is_empty() => {
            let known: BTreeSet<&str> = samples.iter().map(|s| s.event_type.as_str()).collect();
            format!(
                "no samples of event type `{t}` (samples exist for: {})",
                known.into_iter().collect::<Vec<_>>().join(", ")
            )
        }
        _ => "no samples: capture some (hook `capture = true`), add one with `engine samples add FILE`, or give a payload file".to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authoring::samples::ANY_HOOK;

    #[test]
    fn paths_types_and_union() {
        let a = Sample::new(
            ANY_HOOK,
            br#"{"eventType":"x","actor":null,"target":[{"id":"1","type":"User"},{"id":"2","type":"UserGroup","extra":true}]}"#.to_vec(),
            "a",
        );
        let b = Sample::new(
            ANY_HOOK,
            br#"{"eventType":"x","actor":{"alternateId":"a@b.c"},"target":[{"id":"3"}],"weird key":1}"#.to_vec(),
            "b",
        );
        let t = tokens(&[a, b]);
        let get = |p: &str| t.iter().find(|t| t.path == p).cloned();
        let actor = get("event.actor").expect("actor");
        assert_eq!(actor.type_name, "object | ()");
        let alt = get("event.actor.alternateId").expect("alt");
        assert_eq!(alt.example, Some("a@b.c".into()));
        let target = get("event.target").expect("target");
        assert_eq!(target.note.as_deref(), Some("1–2 items"));
        assert!(get("event.target[0].extra").is_some());
        assert_eq!(
            get("event.target[0].extra").and_then(|t| t.note),
            Some("in 1 of 2 samples".into())
        );
        assert_eq!(get("event.device").map(|t| t.type_name), Some("()".into()));
        assert!(get(r#"event["weird key"]"#).is_some());
        assert!(get("event.target[0].alternateId").is_some_and(|t| t.documented));
    }

    #[test]
    fn documented_shape_is_closed() {
        let d = Shape::documented();
        assert!(d.closed);
        assert!(d.fields["actor"].closed);
        assert!(d.fields["target"].item.as_ref().is_some_and(|i| i.closed));
        assert!(
            d.fields["client"].fields["geographicalContext"].fields["geolocation"]
                .fields
                .contains_key("lat")
        );
        assert!(!d.fields["debugContext"].fields["debugData"].closed);
        assert!(pattern_matches("user.*", "user.x"));
        assert!(!pattern_matches("user.x*", "use"));
        assert!(pattern_matches("é*", "é"));
        assert!(!pattern_matches("a*", "é"));
    }
}
