//! Rhai's run-time errors in the script writer's terms. Rhai says `Indexer unavailable: ()
//! [i64]` or `Function not found: to_lowercase (&str | ImmutableString | String)`; a script
//! writer needs to know which value was `()` (a field Okta left out of this event, a user
//! `lookup_user` did not find, a target the event does not have), which field or function was
//! meant, and what to write instead.
//!
//! [`explain`] reads the expression the error points at from the source line, looks its value
//! up in the run's scope when it is a plain path (`event.device`, a top-level variable), and
//! says what it was. `run` calls it for every failed run, so the server, `engine run` and `engine
//! check` report the same message and hint.

use rhai::{AST, Dynamic, Engine, EvalAltResult, Map, Position, Scope};

use super::suggest::nearest;

/// Fields of a map listed when no close match exists.
const MAX_FIELDS_LISTED: usize = 12;
/// Signatures listed for a function called with the wrong arguments.
const MAX_SIGNATURES_LISTED: usize = 4;

/// What `explain` may look at besides the error.
pub(crate) struct Context<'a> {
    /// The text of the file the error is in (the script, or a stdlib module), when known.
    pub source: Option<&'a str>,
    /// Whether that file is the script itself: only then do the names in `scope` mean what the
    /// source says (a module function's variables are gone).
    pub in_script: bool,
    /// The run's scope after the error: `event`, `delivery`, the script's top-level variables.
    pub scope: &'a Scope<'a>,
    pub engine: &'a Engine,
    /// The script's self-contained AST (its functions and the modules it imports).
    pub ast: &'a AST,
}

/// An error said in the script's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Explained {
    pub message: String,
    pub hint: Option<String>,
}

fn explained(message: String, hint: Option<String>) -> Option<Explained> {
    Some(Explained { message, hint })
}

/// The translation of `e`, or `None` to keep Rhai's own message.
pub(crate) fn explain(e: &EvalAltResult, cx: &Context) -> Option<Explained> {
    use EvalAltResult as E;
    match e {
        E::ErrorPropertyNotFound(name, pos) => missing_field(name, *pos, cx),
        E::ErrorDotExpr(text, pos) => {
            let (name, ty) = parse_unknown_property(text)?;
            field_of_non_map(&name, &ty, *pos, cx)
        }
        E::ErrorIndexingType(desc, pos) => not_indexable(desc, *pos, cx),
        E::ErrorArrayBounds(len, index, pos) => out_of_bounds(*len, *index, *pos, cx),
        E::ErrorFunctionNotFound(sig, pos) => no_function(sig, *pos, cx),
        E::ErrorFor(pos) => not_iterable(*pos, cx),
        _ => None,
    }
}

/// Where a value came from, as far as the source says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// `lookup_user(…)`, or a variable set from it.
    LookupUser,
    /// `okta::target(…)` / `okta::target_user(…)`, or a variable set from one.
    OktaTarget,
    /// A path in `event` (or `delivery`).
    Event,
    Other,
}

impl<'a> Context<'a> {
    /// The characters of the line `pos` is on, and `pos`'s 0-based column in them.
    fn line(&self, pos: Position) -> Option<(Vec<char>, usize)> {
        let text = self.source?.lines().nth(pos.line()?.checked_sub(1)?)?;
        Some((text.chars().collect(), pos.position()?.checked_sub(1)?))
    }

    /// The value of `expr` when it is a plain path from a name in scope (`event.actor`, `u`,
    /// `event.target[0]`).
    fn value_of(&self, expr: &str) -> Option<Dynamic> {
        if !self.in_script {
            return None;
        }
        let (root, steps) = parse_path(expr)?;
        let mut v = self.scope.get(&root)?.clone();
        for step in steps {
            if v.is_unit() && step.optional {
                return Some(Dynamic::UNIT);
            }
            v = match step.key {
                Key::Field(f) => v.read_lock::<Map>()?.get(f.as_str())?.clone(),
                Key::Index(i) => {
                    let arr = v.read_lock::<rhai::Array>()?;
                    let i = usize::try_from(i).ok()?;
                    arr.get(i)?.clone()
                }
            };
        }
        Some(v)
    }

    /// Where `expr`'s value came from: its own text, or the `let` that set the variable.
    fn origin(&self, expr: &str) -> Origin {
        let of_text = |t: &str| {
            let t = t.trim_start();
            if t.starts_with("lookup_user(") {
                Some(Origin::LookupUser)
            } else if t.contains("::target(") || t.contains("::target_user(") {
                Some(Origin::OktaTarget)
            } else if t.starts_with("event.")
                || t.starts_with("event[")
                || t.starts_with("event?")
                || t == "event"
                || t.starts_with("delivery")
            {
                Some(Origin::Event)
            } else {
                None
            }
        };
        if let Some(o) = of_text(expr) {
            return o;
        }
        if is_identifier(expr)
            && let Some(src) = self.source
        {
            let decl = format!("let {expr} = ");
            for line in src.lines() {
                if let Some(at) = line.find(&decl) {
                    let before = &line[..at];
                    if before.trim().is_empty() || before.trim_end().ends_with(['{', ';']) {
                        return of_text(&line[at + decl.len()..]).unwrap_or(Origin::Other);
                    }
                }
            }
        }
        Origin::Other
    }

    /// The names a call could have meant: the engine's functions (host functions and Rhai's
    /// standard library), the script's own, and those of the modules it imports (qualified
    /// with the namespace the call used).
    fn function_names(&self, namespace: Option<&str>) -> Vec<String> {
        let mut names: Vec<String> = match namespace {
            None => self
                .engine
                .gen_fn_signatures(true)
                .iter()
                .chain(
                    self.ast
                        .iter_functions()
                        .map(|f| f.to_string())
                        .collect::<Vec<_>>()
                        .iter(),
                )
                .filter_map(|s| signature_name(s).map(str::to_string))
                .collect(),
            Some(ns) => self
                .module_signatures()
                .iter()
                .filter_map(|s| signature_name(s).map(|n| format!("{ns}::{n}")))
                .collect(),
        };
        names.retain(|n| is_identifier(n.rsplit("::").next().unwrap_or(n)));
        names.sort();
        names.dedup();
        names
    }

    /// Every function signature of the modules the script imports (`target(event, kind)`).
    fn module_signatures(&self) -> Vec<String> {
        self.ast
            .resolver()
            .map(|r| {
                r.iter()
                    .flat_map(|(_, m)| {
                        m.gen_fn_signatures_with_mapper(std::borrow::Cow::Borrowed)
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The signatures of `name` (qualified or not), for "it takes …".
    fn signatures_of(&self, name: &str) -> Vec<String> {
        let (ns, bare) = split_namespace(name);
        let sigs: Vec<String> = match ns {
            Some(_) => self.module_signatures(),
            None => {
                let mut s = self.engine.gen_fn_signatures(true);
                s.extend(self.ast.iter_functions().map(|f| f.to_string()));
                s
            }
        };
        let mut out: Vec<String> = sigs
            .into_iter()
            .filter(|s| signature_name(s) == Some(bare))
            .map(|s| {
                let s = tidy_signature(&s);
                match ns {
                    Some(ns) => format!("{ns}::{s}"),
                    None => s,
                }
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// `event.actr`: the map has no such field.
fn missing_field(name: &str, pos: Position, cx: &Context) -> Option<Explained> {
    let lhs = cx.line(pos).and_then(|(chars, col)| {
        let op = operator_before(&chars, col)?;
        expr_ending_at(&chars, op)
    });
    let Some(lhs) = lhs else {
        return explained(format!("no field `{name}` in this map"), None);
    };
    let keys: Vec<String> = cx
        .value_of(&lhs)
        .and_then(|v| {
            v.read_lock::<Map>()
                .map(|m| m.keys().map(|k| k.to_string()).collect())
        })
        .unwrap_or_default();
    let message = format!("`{lhs}` has no field `{name}`");
    let hint = match nearest(name, &keys) {
        Some(s) => Some(format!("did you mean `{}`?", field_path(&lhs, &s))),
        None if !keys.is_empty() => {
            let mut listed: Vec<&str> = keys
                .iter()
                .take(MAX_FIELDS_LISTED)
                .map(String::as_str)
                .collect();
            if keys.len() > MAX_FIELDS_LISTED {
                listed.push("…");
            }
            Some(format!(
                "`{lhs}` has: {}; test an optional field with `\"{name}\" in {lhs}`",
                listed.join(", ")
            ))
        }
        None => Some(format!(
            "test an optional field with `\"{name}\" in {lhs}` before reading it"
        )),
    };
    explained(message, hint)
}

/// `x.name` where `x` is not a map (`()`, an array, a string).
fn field_of_non_map(name: &str, ty: &str, pos: Position, cx: &Context) -> Option<Explained> {
    let lhs = cx.line(pos).and_then(|(chars, col)| {
        // The position is the property's or its dot's.
        let op = if chars.get(col) == Some(&'.') {
            Some(if col > 0 && chars[col - 1] == '?' {
                col - 1
            } else {
                col
            })
        } else {
            operator_before(&chars, col)
        }?;
        expr_ending_at(&chars, op)
    });
    let shown = lhs.clone().unwrap_or_else(|| "the value".to_string());
    match ty {
        "()" => {
            let (message, hint) = unit_value(
                &shown,
                lhs.as_deref().map_or(Origin::Other, |l| cx.origin(l)),
                &format!("it has no field `{name}`"),
                &format!("write `{shown}?.{name}` to get () instead"),
            );
            explained(message, Some(hint))
        }
        "array" => {
            let hint = if shown == "event.target" {
                format!(
                    "pick a target by its type: `okta::target(event, \"User\").{name}`, or loop: `for t in event.target {{ … }}`"
                )
            } else {
                format!("index it (`{shown}[0].{name}`) or loop over it")
            };
            explained(
                format!("`{shown}` is an array: it has no field `{name}`"),
                Some(hint),
            )
        }
        other => explained(
            format!(
                "`{shown}` is {}: it has no field `{name}`",
                with_article(&script_type(other))
            ),
            None,
        ),
    }
}

/// `x[0]` where `x` cannot be indexed (usually `()`).
fn not_indexable(desc: &str, pos: Position, cx: &Context) -> Option<Explained> {
    let (ty, index_ty) = desc.rsplit_once(" [")?;
    let index_ty = index_ty.strip_suffix(']').unwrap_or(index_ty);
    let lhs = cx
        .line(pos)
        .and_then(|(chars, col)| expr_ending_at(&chars, bracket_at_or_before(&chars, col)?));
    let shown = lhs.clone().unwrap_or_else(|| "the value".to_string());
    if ty == "()" {
        let (message, hint) = unit_value(
            &shown,
            lhs.as_deref().map_or(Origin::Other, |l| cx.origin(l)),
            "it cannot be indexed",
            &format!("write `{shown}?[…]` to get () instead"),
        );
        return explained(message, Some(hint));
    }
    let hint = (ty.contains("map") || ty == "map")
        .then(|| format!("a map is read by field name: `{shown}.name` or `{shown}[\"name\"]`"));
    explained(
        format!(
            "`{shown}` is {}: it cannot be indexed with {}",
            with_article(&script_type(ty)),
            with_article(&script_type(index_ty))
        ),
        hint,
    )
}

/// `x[5]` past the end of an array.
fn out_of_bounds(len: usize, index: rhai::INT, pos: Position, cx: &Context) -> Option<Explained> {
    let lhs = cx
        .line(pos)
        .and_then(|(chars, col)| expr_ending_at(&chars, bracket_at_or_before(&chars, col)?))?;
    let here = if cx.origin(&lhs) == Origin::Event {
        " in this event"
    } else {
        ""
    };
    let message = match len {
        0 => format!("`{lhs}` is empty{here}: there is no `[{index}]`"),
        1 => format!("`{lhs}` has 1 item{here}: there is no `[{index}]`"),
        n => format!("`{lhs}` has {n} items{here}: there is no `[{index}]`"),
    };
    let hint = if lhs == "event.target" {
        "Okta does not keep targets in a stable order: pick one by type with `okta::target(event, \"User\")`, which gives () when there is none".to_string()
    } else {
        format!("check the length first: `if {lhs}.len() > {index} {{ … }}`")
    };
    explained(message, Some(hint))
}

/// A call (or an operator) with no function for its name and argument types.
fn no_function(sig: &str, pos: Position, cx: &Context) -> Option<Explained> {
    let (name, args) = parse_signature(sig)?;
    let arg_types: Vec<String> = args.iter().map(|a| script_type(a)).collect();
    let shown_args = arg_types.join(", ");
    let (ns, bare) = split_namespace(&name);
    if !is_identifier(bare) {
        return operator(&name, &arg_types);
    }
    let names = cx.function_names(ns);
    if names.contains(&name) {
        // It exists, for other arguments.
        let takes = {
            let sigs = cx.signatures_of(&name);
            let mut listed: Vec<String> =
                sigs.iter().take(MAX_SIGNATURES_LISTED).cloned().collect();
            if sigs.len() > MAX_SIGNATURES_LISTED {
                listed.push("…".to_string());
            }
            listed.join(", ")
        };
        // A method on (): say which value was ().
        let receiver = cx.line(pos).and_then(|(chars, col)| {
            let op = operator_before(&chars, col)?;
            expr_ending_at(&chars, op)
        });
        if arg_types.first().map(String::as_str) == Some("()")
            && let Some(recv) = receiver
        {
            let (message, hint) = unit_value(
                &recv,
                cx.origin(&recv),
                &format!("`{name}` cannot be called on it"),
                &format!("give a default first: `({recv} ?? \"\").{name}(…)`"),
            );
            return explained(message, Some(hint));
        }
        let mut message = format!("`{name}` cannot take ({shown_args})");
        if arg_types.iter().any(|t| t == "()") {
            message.push_str(": one of the values is ()");
        }
        let hint = (!takes.is_empty()).then(|| format!("it takes: {takes}"));
        return explained(message, hint);
    }
    match nearest(&name, &names) {
        Some(s) => explained(format!("no function `{name}`: did you mean `{s}`?"), {
            let sigs = cx.signatures_of(&s);
            // The form taking these arguments, if there is one.
            let fits = |sig: &String| {
                sig.split_once('(')
                    .and_then(|(_, rest)| rest.split_once(')'))
                    .map(|(params, _)| {
                        params
                            .split(", ")
                            .filter(|p| !p.is_empty())
                            .map(|p| p.rsplit(": ").next().unwrap_or(p).to_string())
                            .collect::<Vec<_>>()
                    })
                    .is_some_and(|types| types == arg_types)
            };
            sigs.iter()
                .find(|s| fits(s))
                .or(sigs.first())
                .map(|sig| format!("`{sig}`"))
        }),
        None => explained(
            format!("no function `{name}` ({shown_args})"),
            Some(
                "`engine definitions` writes every function scripts can call (host functions, the stdlib modules, Rhai's own) for your editor"
                    .to_string(),
            ),
        ),
    }
}

/// `a + b` with types the operator does not take.
fn operator(op: &str, types: &[String]) -> Option<Explained> {
    let message = match types {
        [a, b] => format!(
            "`{op}` cannot combine {} and {}",
            with_article(a),
            with_article(b)
        ),
        [a] => format!("`{op}` cannot take {}", with_article(a)),
        _ => return None,
    };
    let hint = if types.iter().any(|t| t == "()") {
        Some("one of the values is () (a field Okta left out of this event, or a user lookup_user did not find): give a default with `??`, e.g. `(x ?? \"\")`".to_string())
    } else if op == "+" && types.iter().any(|t| t == "string") {
        Some("put values into text with a template string (`` `${a} ${b}` ``) or convert them with `.to_string()`".to_string())
    } else {
        None
    };
    explained(message, hint)
}

/// `for x in v` where `v` is not an array, range, string or map.
fn not_iterable(pos: Position, cx: &Context) -> Option<Explained> {
    let (chars, col) = cx.line(pos)?;
    let text: String = chars[col.min(chars.len())..].iter().collect();
    let expr = text
        .split('{')
        .next()
        .map(str::trim)
        .filter(|t| !t.is_empty())?
        .to_string();
    let is_unit = cx.value_of(&expr).is_some_and(|v| v.is_unit());
    if is_unit {
        let (message, hint) = unit_value(
            &expr,
            cx.origin(&expr),
            "`for` cannot loop over it",
            &format!("loop over `{expr} ?? []` to skip it"),
        );
        return explained(message, Some(hint));
    }
    explained(
        format!("`for` cannot loop over `{expr}`: it is not an array, a range, a string or a map"),
        None,
    )
}

/// The message and hint for a `()` value used as something: `what` is what failed (`it has no
/// field \`name\``), `remedy` how to write it so that `()` does no harm (`write \`x?.name\` to
/// get () instead`).
fn unit_value(expr: &str, origin: Origin, what: &str, remedy: &str) -> (String, String) {
    match origin {
        Origin::LookupUser => (
            format!("`{expr}` is () because lookup_user found no user: {what}"),
            format!(
                "lookup_user returns () when no user has that key: test it first, e.g. `if {expr} == () {{ return; }}`"
            ),
        ),
        Origin::OktaTarget => (
            format!("`{expr}` is () because this event has no target of that type: {what}"),
            format!(
                "okta::target returns () when the event has no such target: test it first, e.g. `if {expr} == () {{ return; }}`"
            ),
        ),
        Origin::Event if expr == "event.target" => (
            format!("`event.target` is () in this event: {what}"),
            "use okta::target(event, \"User\") or okta::target_user(event): they give () when the event has no such target".to_string(),
        ),
        Origin::Event => (
            format!("`{expr}` is () in this event: {what}"),
            format!(
                "Okta leaves it out of some events: {remedy}, or test `if {expr} != () {{ … }}`"
            ),
        ),
        Origin::Other => (
            format!("`{expr}` is (): {what}"),
            format!("{remedy}, or test it first: `if {expr} != () {{ … }}`"),
        ),
    }
}

/// `base.name`, or `base["name"]` when `name` is not an identifier.
fn field_path(base: &str, name: &str) -> String {
    if is_identifier(name) {
        format!("{base}.{name}")
    } else {
        format!(
            "{base}[{}]",
            serde_json::to_string(name).unwrap_or_default()
        )
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The start of the `.` or `?.` just before `col` (where a property or method name starts).
fn operator_before(chars: &[char], col: usize) -> Option<usize> {
    let dot = col.checked_sub(1)?;
    if chars.get(dot) != Some(&'.') {
        return None;
    }
    Some(if dot > 0 && chars[dot - 1] == '?' {
        dot - 1
    } else {
        dot
    })
}

/// The `[` (or `?[`) at or before `col` on the line, for index errors.
fn bracket_at_or_before(chars: &[char], col: usize) -> Option<usize> {
    let mut i = col.min(chars.len().saturating_sub(1));
    loop {
        if chars.get(i) == Some(&'[') {
            return Some(if i > 0 && chars[i - 1] == '?' {
                i - 1
            } else {
                i
            });
        }
        i = i.checked_sub(1)?;
    }
}

/// The postfix expression (a chain of names, `.`/`?.`/`::`, calls and indexes) that ends just
/// before `end`, as written.
fn expr_ending_at(chars: &[char], end: usize) -> Option<String> {
    let mut i = end.min(chars.len());
    while let Some(&c) = i.checked_sub(1).and_then(|j| chars.get(j)) {
        if c == ')' || c == ']' {
            i = group_start(chars, i - 1)?;
            if chars.get(i) == Some(&'[') && i > 0 && chars[i - 1] == '?' {
                i -= 1;
            }
            continue;
        }
        if !is_ident_char(c) {
            break;
        }
        while i > 0 && is_ident_char(chars[i - 1]) {
            i -= 1;
        }
        if i >= 2 && chars[i - 1] == ':' && chars[i - 2] == ':' {
            i -= 2;
        } else if i >= 1 && chars[i - 1] == '.' {
            i -= 1;
            if i >= 1 && chars[i - 1] == '?' {
                i -= 1;
            }
        } else {
            break;
        }
    }
    let text: String = chars[i..end.min(chars.len())].iter().collect();
    let text = text.trim();
    (!text.is_empty() && text.chars().next().is_some_and(is_ident_char)).then(|| text.to_string())
}

/// The index of the `(` or `[` that the `)` or `]` at `close` closes (string literals skipped).
fn group_start(chars: &[char], close: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = close + 1;
    let mut in_str: Option<char> = None;
    while i > 0 {
        i -= 1;
        let c = chars[i];
        if let Some(q) = in_str {
            if c == q && (i == 0 || chars[i - 1] != '\\') {
                in_str = None;
            }
            continue;
        }
        match c {
            '"' | '`' | '\'' => in_str = Some(c),
            ')' | ']' => depth += 1,
            '(' | '[' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

enum Key {
    Field(String),
    Index(rhai::INT),
}

struct Step {
    key: Key,
    /// Written with `?.` / `?[`.
    optional: bool,
}

/// `root.a?.b[0]["c"]` as its root and steps; `None` for anything else (calls, expressions).
fn parse_path(expr: &str) -> Option<(String, Vec<Step>)> {
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let ident = |i: &mut usize| -> Option<String> {
        let start = *i;
        while *i < chars.len() && is_ident_char(chars[*i]) {
            *i += 1;
        }
        (*i > start).then(|| chars[start..*i].iter().collect())
    };
    let root = ident(&mut i)?;
    let mut steps = Vec::new();
    while i < chars.len() {
        let optional = chars[i] == '?';
        if optional {
            i += 1;
        }
        match chars.get(i) {
            Some('.') => {
                i += 1;
                steps.push(Step {
                    key: Key::Field(ident(&mut i)?),
                    optional,
                });
            }
            Some('[') => {
                let close = i + chars[i..].iter().position(|c| *c == ']')?;
                let inner: String = chars[i + 1..close].iter().collect();
                let inner = inner.trim();
                let key = if let Ok(n) = inner.parse::<rhai::INT>() {
                    Key::Index(n)
                } else {
                    Key::Field(serde_json::from_str::<String>(inner).ok()?)
                };
                steps.push(Step { key, optional });
                i = close + 1;
            }
            _ => return None,
        }
    }
    Some((root, steps))
}

/// `Unknown property 'name' - a getter is not registered for type 'T'` → (name, T).
fn parse_unknown_property(text: &str) -> Option<(String, String)> {
    let rest = text.strip_prefix("Unknown property '")?;
    let (name, rest) = rest.split_once('\'')?;
    let ty = rest.rsplit_once("type '")?.1.strip_suffix('\'')?;
    Some((name.to_string(), ty.to_string()))
}

/// `name (t1, t2)` as Rhai writes a missing function → (name, [t1, t2]).
fn parse_signature(sig: &str) -> Option<(String, Vec<String>)> {
    let (name, rest) = sig.split_once(" (")?;
    let inner = rest.strip_suffix(')')?;
    let args = if inner.trim().is_empty() {
        Vec::new()
    } else {
        inner.split(", ").map(|a| a.trim().to_string()).collect()
    };
    Some((name.trim().to_string(), args))
}

/// `okta::target` → (Some("okta"), "target").
fn split_namespace(name: &str) -> (Option<&str>, &str) {
    match name.rsplit_once("::") {
        Some((ns, bare)) => (Some(ns), bare),
        None => (None, name),
    }
}

/// The function name of a signature (`to_lower(string: &str) -> String` → `to_lower`).
fn signature_name(sig: &str) -> Option<&str> {
    let name = sig.split('(').next()?.trim();
    let name = name.rsplit(' ').next().unwrap_or(name);
    (!name.is_empty()).then_some(name)
}

/// A signature as a script writer reads it: parameter types in script terms.
fn tidy_signature(sig: &str) -> String {
    let sig = sig.trim();
    let sig = sig.strip_prefix("pub ").unwrap_or(sig);
    let Some((head, rest)) = sig.split_once('(') else {
        return sig.to_string();
    };
    let Some((params, ret)) = rest.rsplit_once(')') else {
        return sig.to_string();
    };
    let params: Vec<String> = params
        .split(", ")
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once(": ") {
            // `to_lower(string: &str)`: the name says nothing the type does not.
            Some((n, t)) if n.trim() == script_type(t) || n.trim() == "_" => script_type(t),
            Some((n, t)) => format!("{}: {}", n.trim(), script_type(t)),
            None => p.trim().to_string(),
        })
        .collect();
    let ret = ret.trim();
    let ret = ret
        .strip_prefix("->")
        .map(|r| format!(" -> {}", script_type(r)))
        .unwrap_or_default();
    format!("{head}({}){ret}", params.join(", "))
}

/// A Rhai type name (`&str | ImmutableString | String`, `i64`, `rhai::Map`) in script terms.
fn script_type(t: &str) -> String {
    let t = t.trim().trim_start_matches('&').trim_start_matches("mut ");
    let lower = t.to_ascii_lowercase();
    let name = if lower.contains("str") {
        "string"
    } else if lower == "i64" || lower == "int" || lower.ends_with("::int") {
        "int"
    } else if lower == "f64" || lower == "float" || lower.ends_with("::float") {
        "float"
    } else if lower == "bool" {
        "boolean"
    } else if lower.contains("map") {
        "map"
    } else if lower.contains("array") || lower.starts_with("vec<") {
        "array"
    } else if lower == "()" {
        "()"
    } else if lower.contains("fnptr") || lower == "fn" {
        "function pointer"
    } else if lower.contains("dynamic") {
        "any value"
    } else {
        t
    };
    name.to_string()
}

/// `an int`, `a string`, `()` as is.
fn with_article(t: &str) -> String {
    match t {
        "()" => "()".to_string(),
        t if t.starts_with(['a', 'e', 'i', 'o', 'u']) => format!("an {t}"),
        t => format!("a {t}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    #[test]
    fn expressions_before_an_operator() {
        let line = chars("let x = okta::target(event, \"User\").alternateId + event.actor?.id;");
        let dot = line.iter().position(|c| *c == '.').unwrap();
        assert_eq!(
            expr_ending_at(&line, dot).as_deref(),
            Some("okta::target(event, \"User\")")
        );
        let q = line.iter().rposition(|c| *c == '?').unwrap();
        assert_eq!(expr_ending_at(&line, q).as_deref(), Some("event.actor"));
        let line = chars("log(event.target[0][\"a b\"].x)");
        let last = line.iter().rposition(|c| *c == '.').unwrap();
        assert_eq!(
            expr_ending_at(&line, last).as_deref(),
            Some("event.target[0][\"a b\"]")
        );
        assert_eq!(expr_ending_at(&chars("1 + .x"), 4), None);
    }

    #[test]
    fn paths_and_signatures() {
        let (root, steps) = parse_path("event.target?[1][\"x y\"]?.z").unwrap();
        assert_eq!(root, "event");
        assert_eq!(steps.len(), 4);
        assert!(parse_path("f(x).y").is_none());
        assert_eq!(
            parse_signature("to_lowercase (&str | ImmutableString | String)"),
            Some((
                "to_lowercase".to_string(),
                vec!["&str | ImmutableString | String".to_string()]
            ))
        );
        assert_eq!(
            parse_unknown_property(
                "Unknown property 'name' - a getter is not registered for type '()'"
            ),
            Some(("name".to_string(), "()".to_string()))
        );
        assert_eq!(script_type("&str | ImmutableString | String"), "string");
        assert_eq!(script_type("i64"), "int");
        assert_eq!(
            tidy_signature("to_lower(string: &str) -> String"),
            "to_lower(string) -> string"
        );
        assert_eq!(signature_name("target(event, kind)"), Some("target"));
    }
}
