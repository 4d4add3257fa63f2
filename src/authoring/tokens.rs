//! Personalization tokens: every expression a script can paste to read a value — `event.…`
//! paths, each target type through `okta::target(event, "Type")`, `delivery.…` and the
//! `lookup_user` map — with its type and an example value, from sample LogEvents; or Okta's
//! documented fields when there is no sample.
//!
//! The paths come from the `event` map exactly as scripts see it ([`build_event_map`]), so the
//! documented LogEvent fields that a sample has as `null` (or lacks) are listed with type `()`.
//! The samples are merged into one [`Shape`] per event type. Targets are listed per type, never
//! by position (Okta does not keep their order); other arrays' items are merged into one item
//! shown as index 0 (`event.request.ipChain[0].ip`), with the lengths seen as a note.
//! `engine check` uses the same [`Shape`] to check the paths a script reads.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use rhai::{Dynamic, Map};
use serde::Serialize;

use super::samples::{ANY_HOOK, Sample};
use crate::script::schema::{self, DocType, FieldDoc};
use crate::script::{build_event_map, pattern_matches};

/// Characters of an example value shown in the table (the JSON output has the whole value).
const EXAMPLE_CHARS: usize = 60;
/// Nesting followed when building a shape: LogEvents are shallow; this only bounds odd input.
const MAX_DEPTH: usize = 32;

/// The kind of a value at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    String,
    /// Rhai's `INT` (i64).
    Int,
    /// Rhai's `FLOAT` (f64); JSON integers beyond i64 become floats too.
    Float,
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
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::Boolean => "boolean",
            Kind::Object => "object",
            Kind::Array => "array",
            Kind::Unit => "()",
        }
    }

    fn of(v: &Dynamic) -> Kind {
        if v.is_string() || v.is_char() {
            Kind::String
        } else if v.is_int() {
            Kind::Int
        } else if v.is_float() {
            Kind::Float
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
    /// Its documentation (type, example), when documented.
    pub doc: Option<&'static FieldDoc>,
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
        Ok(Shape::of_map(&build_event_map(json)?))
    }

    /// The documented LogEvent fields (every documented object, closed), with no kinds or
    /// examples seen: [`script::schema`](crate::script::schema), the lists `build_event_map`
    /// fills in.
    pub fn documented() -> Shape {
        Shape {
            fields: doc_fields(schema::LOGEVENT),
            documented: true,
            closed: true,
            ..Shape::default()
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
        if self.doc.is_none() {
            self.doc = other.doc;
        }
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

    /// The kinds as a type: `string`, `string | ()`; the documented type when never seen, else
    /// `?`.
    pub fn type_name(&self) -> String {
        if self.kinds.is_empty() {
            return self.doc.map_or("?", |d| d.ty.name()).to_string();
        }
        self.kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

/// The shapes of documented fields: objects closed over their documented fields, arrays with
/// their documented item.
fn doc_fields(fields: &'static [FieldDoc]) -> BTreeMap<String, Shape> {
    fields
        .iter()
        .map(|f| (f.name.to_string(), doc_shape(f)))
        .collect()
}

fn doc_shape(f: &'static FieldDoc) -> Shape {
    let mut s = Shape {
        documented: true,
        doc: Some(f),
        ..Shape::default()
    };
    match f.ty {
        DocType::Array if !f.fields.is_empty() => {
            s.item = Some(Box::new(Shape {
                fields: doc_fields(f.fields),
                documented: true,
                closed: true,
                ..Shape::default()
            }));
        }
        DocType::Object => {
            s.fields = doc_fields(f.fields);
            s.closed = !f.fields.is_empty();
        }
        _ => {}
    }
    s
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

/// Where a token's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// A path in `event`.
    Event,
    /// A field of one target type: `okta::target(event, "User").alternateId`.
    Target,
    /// A field of `delivery`.
    Delivery,
    /// A field of the map `lookup_user` returns.
    LookupUser,
}

/// One expression a script can use to read a value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Token {
    /// What to paste: `event.actor.alternateId`, `okta::target(event, "UserGroup").displayName`.
    pub path: String,
    /// The type(s) seen: `string`, `int`, `float`, `object`, `string | ()`; the documented type
    /// when nothing was seen.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The first non-null scalar value seen (or the documented example).
    pub example: Option<serde_json::Value>,
    /// E.g. `1–3 items` for arrays, `in 2 of 5 samples` for paths not in every sample.
    pub note: Option<String>,
    /// Whether Okta (or the engine, for `delivery` and `lookup_user`) documents the field.
    pub documented: bool,
    /// The documented type, when documented.
    pub documented_type: Option<&'static str>,
    pub section: Section,
    /// The target type of a [`Section::Target`] token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_type: Option<String>,
    /// Fields below the section's root (1 for `event.actor`, `okta::target(…).id`).
    #[serde(skip)]
    depth: usize,
}

impl Token {
    /// Fields below its section's root: a token follows its parent (one less deep) in the list
    /// [`tokens`] gives, so the list is a tree in pre-order.
    pub fn depth(&self) -> usize {
        self.depth
    }
}

/// The expression of the first target of type `ty`.
pub fn target_expr(ty: &str) -> String {
    let quoted = serde_json::to_string(ty).unwrap_or_else(|_| format!("\"{ty}\""));
    format!("okta::target(event, {quoted})")
}

/// The key `lookup_user` is shown with in the tokens (any email, login or user id works).
const LOOKUP_EXPR: &str = "lookup_user(event.actor.alternateId)";
/// The target type shown when there are no samples (targets are listed per type).
const DOCUMENTED_TARGET_TYPE: &str = "User";

/// The targets of the samples, per type.
struct Targets {
    /// Merged items of each type; `seen` counts the samples with one, `lengths` how many one
    /// event had.
    by_type: BTreeMap<String, Shape>,
    /// Items without a string `type` (never listed: they cannot be picked by type).
    untyped: usize,
}

impl Targets {
    fn of(maps: &[Map]) -> Targets {
        let mut by_type: BTreeMap<String, Shape> = BTreeMap::new();
        let mut untyped = 0;
        for m in maps {
            let Some(items) = m.get("target").and_then(|t| t.read_lock::<rhai::Array>()) else {
                continue;
            };
            let mut mine: BTreeMap<String, (Shape, usize)> = BTreeMap::new();
            for item in items.iter() {
                let ty = item.read_lock::<Map>().and_then(|t| {
                    t.get("type")?
                        .read_lock::<rhai::ImmutableString>()
                        .map(|s| s.to_string())
                });
                let Some(ty) = ty else {
                    untyped += 1;
                    continue;
                };
                let mut one = Shape::default();
                one.add_value(item, 1);
                let entry = mine.entry(ty).or_default();
                entry.0.merge(&one);
                entry.1 += 1;
            }
            for (ty, (mut shape, n)) in mine {
                clamp_seen(&mut shape);
                shape.seen = 1;
                shape.lengths = Some((n, n));
                by_type.entry(ty).or_default().merge(&shape);
            }
        }
        Targets { by_type, untyped }
    }
}

impl Shape {
    fn of_map(map: &Map) -> Shape {
        let mut s = Shape::default();
        s.add_map(map, 0);
        s.kinds.insert(Kind::Object);
        s.seen = 1;
        s
    }
}

/// How rows are filled in.
#[derive(Clone, Copy)]
struct Opts<'a> {
    /// Samples the parent path's shape covers (for `in N of M samples`).
    total: usize,
    section: Section,
    target_type: Option<&'a str>,
    /// No samples: types, examples and notes from the documentation.
    documented_only: bool,
    /// The target types seen, for the `event.target` row.
    target_types: &'a [String],
}

/// Every token of `samples` (merged), in path order, then per target type, then `delivery` and
/// `lookup_user`; empty when no sample is a LogEvent.
pub fn tokens(samples: &[Sample]) -> Vec<Token> {
    let maps: Vec<Map> = samples
        .iter()
        .filter_map(|s| build_event_map(&s.json).ok())
        .collect();
    let Some(first) = maps.first() else {
        return Vec::new();
    };
    let mut shape = Shape::of_map(first);
    for m in &maps[1..] {
        shape.merge(&Shape::of_map(m));
    }
    let documented = Shape::documented();
    let targets = Targets::of(&maps);
    let types: Vec<String> = targets.by_type.keys().cloned().collect();
    let opts = Opts {
        total: shape.seen,
        section: Section::Event,
        target_type: None,
        documented_only: false,
        target_types: &types,
    };
    let mut out = Vec::new();
    collect(&shape, Some(&documented), "event", 1, opts, &mut out);
    if targets.untyped > 0
        && let Some(t) = out.iter_mut().find(|t| t.path == "event.target")
    {
        let extra = format!("{} without a type", targets.untyped);
        t.note = Some(match t.note.take() {
            Some(n) => format!("{n}; {extra}"),
            None => extra,
        });
    }
    let item_doc = documented
        .fields
        .get("target")
        .and_then(|t| t.item.as_deref());
    for (ty, s) in &targets.by_type {
        let base = target_expr(ty);
        let mut notes = Vec::new();
        if s.seen < shape.seen {
            notes.push(format!("in {} of {} samples", s.seen, shape.seen));
        }
        if let Some((_, hi)) = s.lengths
            && hi > 1
        {
            notes.push(format!(
                "{hi} in one event: `okta::targets(event, {})` gives them all",
                serde_json::to_string(ty).unwrap_or_default()
            ));
        }
        out.push(Token {
            path: base.clone(),
            type_name: if s.seen < shape.seen {
                "object | ()".to_string()
            } else {
                "object".to_string()
            },
            example: None,
            note: (!notes.is_empty()).then(|| notes.join(", ")),
            documented: true,
            documented_type: Some(DocType::Object.name()),
            section: Section::Target,
            target_type: Some(ty.clone()),
            depth: 0,
        });
        let opts = Opts {
            total: s.seen,
            section: Section::Target,
            target_type: Some(ty),
            ..opts
        };
        collect(s, item_doc, &base, 1, opts, &mut out);
    }
    let hook = samples
        .iter()
        .find(|s| s.hook != ANY_HOOK)
        .map(|s| s.hook.clone());
    push_delivery_and_user(hook.as_deref(), &mut out);
    out
}

/// The tokens of Okta's documentation alone, for when there are no samples: every documented
/// field with its documented type and example, the targets shown for one type.
pub fn documented_tokens() -> Vec<Token> {
    let documented = Shape::documented();
    let opts = Opts {
        total: 0,
        section: Section::Event,
        target_type: None,
        documented_only: true,
        target_types: &[],
    };
    let mut out = Vec::new();
    collect(&documented, Some(&documented), "event", 1, opts, &mut out);
    if let Some(item) = documented
        .fields
        .get("target")
        .and_then(|t| t.item.as_deref())
    {
        let base = target_expr(DOCUMENTED_TARGET_TYPE);
        out.push(Token {
            path: base.clone(),
            type_name: "object | ()".to_string(),
            example: None,
            note: Some(
                "the first target of that type, () when none; any type: \"User\", \"UserGroup\", \"AppInstance\", …"
                    .to_string(),
            ),
            documented: true,
            documented_type: Some(DocType::Object.name()),
            section: Section::Target,
            target_type: Some(DOCUMENTED_TARGET_TYPE.to_string()),
            depth: 0,
        });
        let opts = Opts {
            section: Section::Target,
            target_type: Some(DOCUMENTED_TARGET_TYPE),
            ..opts
        };
        collect(item, Some(item), &base, 1, opts, &mut out);
    }
    push_delivery_and_user(None, &mut out);
    out
}

fn doc_example(f: &FieldDoc) -> Option<serde_json::Value> {
    f.example.and_then(|e| serde_json::from_str(e).ok())
}

/// The `delivery` fields and the `lookup_user` map: documented, with documented examples (a
/// captured sample's hook as `delivery.hook`).
fn push_delivery_and_user(hook: Option<&str>, out: &mut Vec<Token>) {
    for f in schema::DELIVERY {
        let example = match (f.name, hook) {
            ("hook", Some(h)) => Some(serde_json::Value::String(h.to_string())),
            _ => doc_example(f),
        };
        out.push(Token {
            path: field_path("delivery", f.name),
            type_name: f.ty.name().to_string(),
            example,
            note: Some(f.doc.to_string()),
            documented: true,
            documented_type: Some(f.ty.name()),
            section: Section::Delivery,
            target_type: None,
            depth: 1,
        });
    }
    out.push(Token {
        path: LOOKUP_EXPR.to_string(),
        type_name: "object | ()".to_string(),
        example: None,
        note: Some("() when no user has that key: an email, login or Okta user id".to_string()),
        documented: true,
        documented_type: Some(DocType::Object.name()),
        section: Section::LookupUser,
        target_type: None,
        depth: 0,
    });
    for f in schema::USER {
        // `id` and `profile` are always set; the others are () when unknown.
        let type_name = match f.name {
            "id" | "profile" => f.ty.name().to_string(),
            _ => format!("{} | ()", f.ty.name()),
        };
        out.push(Token {
            path: field_path(LOOKUP_EXPR, f.name),
            type_name,
            example: doc_example(f),
            note: Some(f.doc.to_string()),
            documented: true,
            documented_type: Some(f.ty.name()),
            section: Section::LookupUser,
            target_type: None,
            depth: 1,
        });
    }
}

fn collect(
    shape: &Shape,
    doc: Option<&Shape>,
    path: &str,
    depth: usize,
    opts: Opts<'_>,
    out: &mut Vec<Token>,
) {
    for (name, child) in &shape.fields {
        let child_doc = doc.and_then(|d| d.fields.get(name));
        let p = field_path(path, name);
        push_token(child, child_doc, &p, depth, opts, out);
    }
}

fn push_token(
    shape: &Shape,
    doc: Option<&Shape>,
    path: &str,
    depth: usize,
    opts: Opts<'_>,
    out: &mut Vec<Token>,
) {
    let field_doc = doc.and_then(|d| d.doc);
    let is_targets = opts.section == Section::Event && path == "event.target";
    let mut notes = Vec::new();
    if opts.documented_only {
        if let Some(d) = field_doc {
            notes.push(d.doc.to_string());
        }
    } else {
        if let Some((lo, hi)) = shape.lengths {
            let items = if hi == 1 { "item" } else { "items" };
            let mut n = if lo == hi {
                format!("{lo} {items}")
            } else {
                format!("{lo}–{hi} {items}")
            };
            if is_targets && !opts.target_types.is_empty() {
                n.push_str(&format!(": {}", opts.target_types.join(", ")));
            }
            notes.push(n);
        }
        if shape.seen > 0 && shape.seen < opts.total {
            notes.push(format!("in {} of {} samples", shape.seen, opts.total));
        }
        if shape.kinds.len() == 1
            && shape.kinds.contains(&Kind::Unit)
            && let Some(d) = field_doc
        {
            notes.push(format!("documented as {}", d.ty.name()));
        }
    }
    let mut note = (!notes.is_empty()).then(|| notes.join(", "));
    if is_targets && !opts.documented_only {
        const PICK: &str = "pick one by type: okta::target(event, \"Type\"), below";
        note = Some(match note {
            Some(n) => format!("{n}; {PICK}"),
            None => PICK.to_string(),
        });
    }
    let example = if opts.documented_only {
        field_doc.and_then(doc_example)
    } else {
        shape.example.clone()
    };
    out.push(Token {
        path: path.to_string(),
        type_name: shape.type_name(),
        example,
        note,
        documented: doc.is_some_and(|d| d.documented),
        documented_type: field_doc.map(|d| d.ty.name()),
        section: opts.section,
        target_type: opts.target_type.map(str::to_string),
        depth,
    });
    collect(shape, doc, path, depth + 1, opts, out);
    if is_targets {
        // Targets are listed per type (their order is not stable), not as `event.target[0]`.
        return;
    }
    if let Some(item) = &shape.item {
        let item_doc = doc.and_then(|d| d.item.as_deref());
        // Items are counted per array: compare with the number of samples holding an array.
        let opts = Opts {
            total: shape.seen,
            ..opts
        };
        push_token(item, item_doc, &format!("{path}[0]"), depth + 1, opts, out);
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

/// A sample the tokens come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SampleRef {
    /// The event's uuid (or content id).
    pub id: String,
    /// Where it came from (a file, `captured on hook …`).
    pub source: String,
}

/// The tokens of one event type.
#[derive(Debug, Clone, Serialize)]
pub struct TokenGroup {
    /// The event type (`""` for documented fields of any type).
    pub event_type: String,
    /// The samples the tokens come from (empty: Okta's documented fields).
    pub samples: Vec<SampleRef>,
    /// Why only the documented fields are shown, when there are no samples.
    pub note: Option<String>,
    pub tokens: Vec<Token>,
}

/// The tokens per event type of `samples`, limited to types matching `event_type` if given.
pub fn token_groups(samples: &[Sample], event_type: Option<&str>) -> Vec<TokenGroup> {
    by_event_type(samples)
        .into_iter()
        .filter(|(t, _)| event_type.is_none_or(|p| pattern_matches(p, t)))
        .map(|(t, group)| TokenGroup {
            samples: group
                .iter()
                .map(|s| SampleRef {
                    id: s.id.clone(),
                    source: s.source.clone(),
                })
                .collect(),
            note: None,
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
        let name = match (g.event_type.is_empty(), n) {
            (false, _) => g.event_type.as_str(),
            (true, 0) => "(any event type)",
            (true, _) => "(no eventType)",
        };
        if n == 0 {
            writeln!(out, "{name} (no samples: Okta's documented fields)")?;
        } else {
            writeln!(out, "{name} ({n} sample{})", if n == 1 { "" } else { "s" })?;
        }
        if let Some(note) = &g.note {
            writeln!(out, "  note: {note}")?;
        }
        for s in &g.samples {
            writeln!(out, "  sample {} ({})", s.id, s.source)?;
        }
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
                let event_field = matches!(t.section, Section::Event | Section::Target);
                if !t.documented && event_field && t.depth == 1 {
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

/// The token groups of `samples` (of the types matching `event_type`, if given); when there are
/// none, one group of Okta's documented fields, with a note that says why.
pub fn tokens_for(samples: &[Sample], event_type: Option<&str>) -> Vec<TokenGroup> {
    let groups = token_groups(samples, event_type);
    if !groups.is_empty() {
        return groups;
    }
    let how = "capture some (hook `capture = true`), add one with `engine samples add FILE`, or give a payload file";
    let note = match event_type {
        Some(t) if !samples.is_empty() => {
            let known: BTreeSet<&str> = samples.iter().map(|s| s.event_type.as_str()).collect();
            format!(
                "no samples of event type `{t}` (samples exist for: {}); the documented LogEvent fields follow, with documented examples: {how}",
                known.into_iter().collect::<Vec<_>>().join(", ")
            )
        }
        _ => format!(
            "no samples; the documented LogEvent fields follow, with documented examples: {how}"
        ),
    };
    vec![TokenGroup {
        event_type: event_type.unwrap_or_default().to_string(),
        samples: Vec::new(),
        note: Some(note),
        tokens: documented_tokens(),
    }]
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
        assert_eq!(
            target.note.as_deref(),
            Some(
                "1–2 items: User, UserGroup; pick one by type: okta::target(event, \"Type\"), below; 1 without a type"
            )
        );
        // Targets by type, never by position.
        assert!(t.iter().all(|t| !t.path.contains("target[")), "{t:#?}");
        let group = get("okta::target(event, \"UserGroup\")").expect("group");
        assert_eq!(group.type_name, "object | ()");
        assert_eq!(group.note.as_deref(), Some("in 1 of 2 samples"));
        let extra = get("okta::target(event, \"UserGroup\").extra").expect("extra");
        assert_eq!(extra.type_name, "boolean");
        assert_eq!(extra.target_type.as_deref(), Some("UserGroup"));
        assert!(!extra.documented);
        assert!(get("okta::target(event, \"User\").alternateId").is_some_and(|t| t.documented));
        assert_eq!(get("event.device").map(|t| t.type_name), Some("()".into()));
        assert!(get(r#"event["weird key"]"#).is_some_and(|t| t.type_name == "int"));
        assert!(get("delivery.hook").is_some());
        assert!(get("lookup_user(event.actor.alternateId).managerId").is_some());
    }

    #[test]
    fn documented_tokens_without_samples() {
        let t = documented_tokens();
        let get = |p: &str| t.iter().find(|t| t.path == p).cloned();
        let step = get("event.authenticationContext.authenticationStep").expect("step");
        assert_eq!(step.type_name, "int");
        assert_eq!(step.example, Some(0.into()));
        let lat = get("event.client.geographicalContext.geolocation.lat").expect("lat");
        assert_eq!(lat.type_name, "float");
        assert!(get("okta::target(event, \"User\").alternateId").is_some());
        assert!(get("event.request.ipChain[0].ip").is_some());
        let groups = tokens_for(&[], Some("user.lifecycle.create"));
        assert_eq!(groups.len(), 1);
        assert!(groups[0].samples.is_empty());
        assert!(groups[0].note.is_some());
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
