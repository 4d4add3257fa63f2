//! The `okta` stdlib's naming helpers (`describe`, `name_of`, `location`, `user_name`), native.
//!
//! The module resolver adds them to the `okta` module unless `stdlib/okta.rhai` defines a function
//! of the same name and arity. Native, they read the map in place (a native function's first
//! argument is passed by reference, a script function's is copied) instead of interpreting a
//! dozen field reads and string comparisons: in Rhai, `location` cost ~5 µs a call, a seventh of a
//! typical run. Each returns exactly what the Rhai version it replaced returned, for any argument
//! (`naming_reference.rhai`, checked by the test below).

use rhai::{Dynamic, EvalAltResult, ImmutableString, Map, Position};

/// Adds the helpers that `defined` (the module's own script functions, as (name, arity)) lacks.
pub fn add_to_okta_module(module: &mut rhai::Module, defined: &[(String, usize)]) {
    let missing = |name: &str, arity: usize| !defined.iter().any(|(n, a)| n == name && *a == arity);
    if missing("describe", 1) {
        native("describe", &["entity", "String"], DESCRIBE_DOC)
            .set_into_module(module, |t: &mut Dynamic| {
                Ok::<_, Box<EvalAltResult>>(describe(t))
            });
    }
    if missing("name_of", 2) {
        native("name_of", &["entity", "fallback", "?"], NAME_OF_DOC)
            .set_into_module(module, |e: &mut Dynamic, fallback: Dynamic| {
                Ok::<_, Box<EvalAltResult>>(name_of(e, fallback))
            });
    }
    if missing("location", 1) {
        native("location", &["client", "String"], LOCATION_DOC)
            .set_into_module(module, |c: &mut Dynamic| {
                Ok::<_, Box<EvalAltResult>>(location(c))
            });
    }
    if missing("user_name", 1) {
        native("user_name", &["user", "?"], USER_NAME_DOC).set_into_module(module, user_name);
    }
}

const DESCRIBE_DOC: &str = "/// \"Display Name <alternateId>\" of an actor or target map when both are known (and\n\
/// differ), else the one known, else its `id`, else \"(unknown)\" (also for `()`).";
const NAME_OF_DOC: &str = "/// An actor or target map's `displayName` when a non-empty string, else its `alternateId`\n\
/// when a string other than \"unknown\", else `fallback` (also for `()`).";
const LOCATION_DOC: &str = "/// \"City, State, Country\" from `client.geographicalContext` (any map with one), skipping\n\
/// unknown parts; \"\" when nothing is known.";
const USER_NAME_DOC: &str = "/// A `lookup_user` map's displayName, else \"firstName lastName\", else its login, email or\n\
/// id; \"(unknown user)\" for `()`.";

/// A native helper's registration as `set_native_fn` makes it (internal namespace, pure), with
/// the parameters and doc comment editor definitions show.
fn native(name: &str, params: &[&str], doc: &str) -> rhai::FuncRegistration {
    rhai::FuncRegistration::new(name)
        .in_internal_namespace()
        .with_purity(true)
        .with_volatility(false)
        .with_params_info(params)
        .with_comments([doc])
}

/// The string stored under `key` in `v`, if `v` is a map holding a string there.
fn field(v: &Dynamic, key: &str) -> Option<ImmutableString> {
    let map = v.read_lock::<Map>()?;
    map.get(key)?
        .read_lock::<ImmutableString>()
        .map(|s| s.clone())
}

/// "Display Name <alternateId>", the one known of the two, the `id`, or "(unknown)".
pub fn describe(t: &mut Dynamic) -> ImmutableString {
    if !t.is_map() {
        return "(unknown)".into();
    }
    let name = field(t, "displayName").filter(|s| !s.is_empty());
    let alt = field(t, "alternateId").filter(|s| !s.is_empty() && s.as_str() != "unknown");
    match (name, alt) {
        (Some(n), Some(a)) if n != a => format!("{n} <{a}>").into(),
        (Some(n), _) => n,
        (None, Some(a)) => a,
        (None, None) => field(t, "id").unwrap_or_else(|| "(unknown)".into()),
    }
}

/// `displayName` when a non-empty string, else `alternateId` when a string other than
/// "unknown", else `fallback`.
pub fn name_of(entity: &mut Dynamic, fallback: Dynamic) -> Dynamic {
    if let Some(n) = field(entity, "displayName").filter(|s| !s.is_empty()) {
        return n.into();
    }
    if let Some(a) = field(entity, "alternateId").filter(|s| s.as_str() != "unknown") {
        return a.into();
    }
    fallback
}

/// "City, State, Country" of a map's `geographicalContext`, skipping unknown parts.
pub fn location(client: &mut Dynamic) -> ImmutableString {
    let Some(map) = client.read_lock::<Map>() else {
        return ImmutableString::new();
    };
    let Some(geo) = map
        .get("geographicalContext")
        .and_then(|g| g.read_lock::<Map>())
    else {
        return ImmutableString::new();
    };
    let mut out = String::new();
    for key in ["city", "state", "country"] {
        let Some(part) = geo.get(key).and_then(|v| v.read_lock::<ImmutableString>()) else {
            continue;
        };
        if !part.is_empty() {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(&part);
        }
    }
    out.into()
}

/// `displayName`, else "firstName lastName", else `login`, else `email` (each when a string),
/// else `id`. Like the property reads it replaced, a key the map lacks is an error.
pub fn user_name(user: &mut Dynamic) -> Result<Dynamic, Box<EvalAltResult>> {
    let Some(map) = user.read_lock::<Map>() else {
        return Ok("(unknown user)".into());
    };
    let get = |key: &str| {
        map.get(key).ok_or_else(|| {
            Box::new(EvalAltResult::ErrorPropertyNotFound(
                format!("{key} (okta::user_name expects a user map from lookup_user)"),
                Position::NONE,
            ))
        })
    };
    let text = |v: &Dynamic| v.read_lock::<ImmutableString>().map(|s| s.clone());
    if let Some(n) = text(get("displayName")?).filter(|s| !s.is_empty()) {
        return Ok(n.into());
    }
    if let Some(first) = text(get("firstName")?)
        && let Some(last) = text(get("lastName")?)
    {
        return Ok(format!("{first} {last}").into());
    }
    for key in ["login", "email"] {
        if let Some(v) = text(get(key)?) {
            return Ok(v.into());
        }
    }
    Ok(get("id")?.clone())
}

#[cfg(test)]
mod tests {
    use rhai::{Dynamic, Engine, Scope};

    /// Each kernel against the Rhai body it replaced, on input of every odd shape.
    #[test]
    fn kernels_answer_exactly_as_the_rhai_they_replaced() {
        let mut engine = Engine::new();
        engine.set_fail_on_invalid_map_property(true);
        engine.register_fn("okta_describe", super::describe);
        engine.register_fn("okta_name_of", super::name_of);
        engine.register_fn("okta_location", super::location);
        engine.register_fn("okta_user_name", super::user_name);
        let reference = engine
            .compile(include_str!("naming_reference.rhai"))
            .expect("reference compiles");
        let entities = [
            "()",
            "\"text\"",
            "42",
            "#{}",
            "#{displayName: ()}",
            "#{displayName: \"\", alternateId: \"unknown\", id: 5}",
            "#{displayName: \"\", alternateId: \"\", id: \"00u1\"}",
            "#{displayName: \"A\", alternateId: \"A\"}",
            "#{displayName: \"A\", alternateId: \"a@x.com\"}",
            "#{displayName: 7, alternateId: \"a@x.com\"}",
            "#{alternateId: \"unknown\"}",
            "#{alternateId: \"\"}",
            "#{id: \"00u9\"}",
            "#{id: 9}",
            "#{displayName: \"Ünïcode Näme\", alternateId: \"ü@x.com\", id: ()}",
        ];
        let clients = [
            "()",
            "#{}",
            "#{geographicalContext: ()}",
            "#{geographicalContext: \"x\"}",
            "#{geographicalContext: #{}}",
            "#{geographicalContext: #{city: \"Paris\", state: (), country: \"France\"}}",
            "#{geographicalContext: #{city: \"\", state: \"CA\", country: 1}}",
            "#{geographicalContext: #{city: \"A\", state: \"B\", country: \"C\", postalCode: \"9\"}}",
        ];
        let users = [
            "()",
            "#{displayName: \"D\", firstName: \"F\", lastName: \"L\", login: \"l\", email: \"e\", id: \"i\"}",
            "#{displayName: \"\", firstName: \"F\", lastName: \"L\", login: \"l\", email: \"e\", id: \"i\"}",
            "#{displayName: (), firstName: \"F\", lastName: (), login: (), email: \"e\", id: \"i\"}",
            "#{displayName: (), firstName: (), lastName: (), login: (), email: (), id: \"i\"}",
            "#{displayName: (), firstName: (), lastName: (), login: (), email: (), id: ()}",
            "#{displayName: ()}",
            "#{}",
        ];
        let mut cases = Vec::new();
        for e in entities {
            cases.push(format!("describe({e})"));
            cases.push(format!("name_of({e}, \"fallback\")"));
            cases.push(format!("name_of({e}, ())"));
        }
        for c in clients.iter().chain(&entities) {
            cases.push(format!("location({c})"));
        }
        for u in users.iter().chain(&entities) {
            cases.push(format!("user_name({u})"));
        }
        for case in cases {
            let run = |call: String| -> Result<Dynamic, String> {
                let mut ast = reference.clone();
                ast += engine.compile(&call).map_err(|e| e.to_string())?;
                engine
                    .eval_ast_with_scope::<Dynamic>(&mut Scope::new(), &ast)
                    .map_err(|e| e.to_string())
            };
            let old = run(format!("old_{case}"));
            let new = run(format!("okta_{case}"));
            match (&old, &new) {
                (Ok(a), Ok(b)) => assert_eq!(
                    (a.type_name(), a.to_string()),
                    (b.type_name(), b.to_string()),
                    "{case}"
                ),
                (Err(_), Err(_)) => {}
                _ => panic!("{case}: old {old:?}, native {new:?}"),
            }
        }
    }

    /// The built-in helpers are added to `okta` only where okta.rhai defines no function of that
    /// name and arity: a user's own `describe` wins, `location` stays native.
    #[test]
    fn okta_rhai_can_replace_a_built_in_helper() {
        use std::sync::Arc;

        use super::super::{DeliveryInfo, Host, Limits, NoDirectory, ScriptSet, Senders, run};

        let dir = tempfile::tempdir().unwrap();
        let stdlib = dir.path().join("stdlib");
        std::fs::create_dir_all(&stdlib).unwrap();
        std::fs::write(stdlib.join("okta.rhai"), "fn describe(t) { \"mine\" }\n").unwrap();
        let script = dir.path().join("s.rhai");
        std::fs::write(
            &script,
            "//! on: *\nimport \"okta\" as okta;\nlog(okta::describe(event.actor));\nlog(okta::location(event.client));\nlog(okta::name_of((), \"fb\"));\n",
        )
        .unwrap();
        let limits = Limits::default();
        let s = ScriptSet::load_one(&script, &stdlib, &limits).unwrap();
        let host: Arc<dyn Host> = Arc::new(NoDirectory);
        let event =
            br#"{"actor":{"displayName":"A"},"client":{"geographicalContext":{"city":"Oslo"}}}"#;
        let senders = Senders::default();
        let out = run(
            &s,
            event,
            "e1",
            &DeliveryInfo::default(),
            &host,
            &limits,
            &senders,
        );
        assert_eq!(out.result, Ok(()));
        let lines: Vec<&str> = out.log.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(lines, ["mine", "Oslo", "fb"]);
    }
}
