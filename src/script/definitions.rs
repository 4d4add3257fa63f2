//! Editor support: the `.d.rhai` definition files the Rhai language server (rhai-lsp) reads for
//! completion and hover. Made with rhai's own generator (`Engine::definitions`, the `metadata`
//! feature) from the engine scripts run on: the host functions with their doc comments, Rhai's
//! standard library, each stdlib module (`okta`) with the doc comments of its functions; plus the
//! `event` and `delivery` constants, every documented field listed with its type and an example
//! ([`schema`](super::schema)), since definition files have no way to type a map's fields.
//!
//! Nothing here writes files: [`definitions`] returns them, `engine definitions` writes them.

use std::fmt::Write as _;
use std::path::Path;

use rhai::Engine;

use super::Limits;
use super::engine::{new_engine, stdlib_module};
use super::load::visible_files;
use super::schema::{self, DocType, FieldDoc};

/// The folder `engine definitions` writes to by default, in the project directory (the parent
/// of `scripts_dir`). Hidden: it is generated, like a build output.
pub const DEFAULT_DEFINITIONS_DIR: &str = ".rhai-definitions";

/// The file of the host functions.
pub const HOST_FILE: &str = "engine.d.rhai";
/// The file of the `event` and `delivery` constants.
pub const SCOPE_FILE: &str = "scope.d.rhai";
/// The file of Rhai's standard library functions.
const STD_FILE: &str = "rhai-std.d.rhai";
/// The host's own modules (`state::`, registered in `state.rs`; `time::`, in `time.rs`): each
/// gets a `NAME.d.rhai` like a stdlib module.
const HOST_MODULES: [&str; 2] = ["state", "time"];

/// One definition file: its name and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionFile {
    pub name: String,
    pub text: String,
}

/// The definition files for scripts run with the stdlib in `stdlib_dir`: Rhai's builtins and
/// standard library, the host functions ([`HOST_FILE`]), one `NAME.d.rhai` per stdlib module, and
/// the scope ([`SCOPE_FILE`]). Errs, naming the module, when a stdlib module does not load.
pub fn definitions(stdlib_dir: &Path, limits: &Limits) -> Result<Vec<DefinitionFile>, String> {
    let (mut engine, resolver) = new_engine(stdlib_dir, limits);
    let modules = visible_files(stdlib_dir, "rhai").unwrap_or_default();
    let mut names = Vec::new();
    // Doc comments of each module's script functions, by (module, function, arity).
    let mut docs: Vec<(String, String, usize, String)> = Vec::new();
    for file in &modules {
        let Some(name) = file.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        let module = stdlib_module(&engine, &resolver, &name)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        // rhai keeps a script function's doc comments in its AST, not in the module it makes.
        for (module_name, source) in resolver.take_loaded() {
            if let Ok(ast) = engine.compile(&source) {
                for f in ast.iter_functions() {
                    if !f.comments.is_empty() {
                        let text = f.comments.join("\n");
                        docs.push((
                            module_name.clone(),
                            f.name.to_string(),
                            f.params.len(),
                            text,
                        ));
                    }
                }
            }
        }
        names.push(name.clone());
        engine.register_static_module(name, module);
    }

    let mut out = Vec::new();
    // Rhai's builtins and operators, and its standard library, from an engine with nothing of
    // ours: the host functions then appear once, in their own file.
    let plain = Engine::new();
    for (name, text) in plain.definitions().iter_files() {
        let name = match name.as_str() {
            "__static__.d.rhai" => STD_FILE.to_string(),
            _ => name,
        };
        out.push(DefinitionFile {
            name,
            text: known_returns(&text),
        });
    }
    let ours = engine.definitions().include_standard_packages(false);
    for (name, text) in ours.iter_files() {
        let name = match name.as_str() {
            "__static__.d.rhai" => HOST_FILE.to_string(),
            other => match other.strip_suffix(".d.rhai") {
                Some(m) if names.iter().any(|n| n == m) || HOST_MODULES.contains(&m) => {
                    other.to_string()
                }
                _ => continue,
            },
        };
        let module = name.strip_suffix(".d.rhai").unwrap_or(&name);
        let text = script_fn_docs(&text, module, &docs);
        out.push(DefinitionFile {
            text: with_intro(&name, &text),
            name,
        });
    }
    out.push(DefinitionFile {
        name: SCOPE_FILE.to_string(),
        text: scope_definitions(),
    });
    Ok(out)
}

/// `text` with `-> ?` where rhai's generator leaves a return type it does not know empty
/// (`fn to_float(_: ?) -> ;`, every script function), which is not valid definition syntax.
fn known_returns(text: &str) -> String {
    text.replace(") -> ;", ") -> ?;")
}

/// `text` with each script function's doc comment before its declaration (and the return
/// types fixed, see [`known_returns`]).
fn script_fn_docs(text: &str, module: &str, docs: &[(String, String, usize, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let line = known_returns(line);
        if let Some(rest) = line.strip_prefix("fn ")
            && let Some((name, params)) = rest.split_once('(')
        {
            let arity = params
                .split(')')
                .next()
                .map_or(0, |p| p.split(',').filter(|x| !x.trim().is_empty()).count());
            if let Some((.., doc)) = docs
                .iter()
                .find(|(m, n, a, _)| m == module && n == name && *a == arity)
            {
                out.push_str(doc);
                out.push('\n');
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A first comment saying where the file comes from.
fn with_intro(name: &str, text: &str) -> String {
    let what = match name.strip_suffix(".d.rhai") {
        _ if name == HOST_FILE => "the engine's host functions".to_string(),
        Some(m) => format!("the stdlib module `{m}`, as `import \"{m}\" as {m};` gives it"),
        None => name.to_string(),
    };
    format!(
        "// Generated by `engine definitions`: {what}. Do not edit.\n\n{}\n",
        text.trim_end()
    )
}

/// `const event: Map;` and `const delivery: Map;`, each with every field in its doc comment.
fn scope_definitions() -> String {
    let mut s = String::from(
        "// Generated by `engine definitions`: what every script has in scope. Do not edit.\n\nmodule static;\n\n",
    );
    s.push_str(
        "/// The Okta LogEvent being handled, read-only. Every documented field below is present\n\
         /// (`()` when Okta sent none); a field neither documented nor in the event is an error\n\
         /// where it is read. Pick targets by type: `okta::target(event, \"User\")`.\n///\n",
    );
    write_fields(&mut s, "event", schema::LOGEVENT, 0);
    s.push_str("const event: Map;\n\n");
    s.push_str("/// The envelope the event came in, read-only.\n///\n");
    write_fields(&mut s, "delivery", schema::DELIVERY, 0);
    s.push_str("const delivery: Map;\n");
    s
}

fn write_fields(s: &mut String, base: &str, fields: &[FieldDoc], depth: usize) {
    for f in fields {
        let path = format!("{base}.{}", f.name);
        let ty = match f.ty {
            DocType::Array if !f.fields.is_empty() => "array of maps".to_string(),
            t => t.rhai_name().to_string(),
        };
        let example = f
            .example
            .map(|e| format!(", e.g. `{e}`"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "/// {}- `{path}`: {ty}{example} — {}",
            "  ".repeat(depth),
            f.doc
        );
        let child = match f.ty {
            DocType::Array => format!("{path}[i]"),
            _ => path,
        };
        write_fields(s, &child, f.fields, depth + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_functions_modules_and_scope() {
        let stdlib = Path::new(env!("CARGO_MANIFEST_DIR")).join("stdlib");
        let files = definitions(&stdlib, &Limits::default()).expect("definitions");
        let get = |n: &str| {
            files
                .iter()
                .find(|f| f.name == n)
                .map(|f| f.text.clone())
                .unwrap_or_else(|| {
                    panic!(
                        "{n}: {:?}",
                        files.iter().map(|f| &f.name).collect::<Vec<_>>()
                    )
                })
        };
        let host = get(HOST_FILE);
        assert!(
            host.contains("fn send_email(mail: map) -> String;"),
            "{host}"
        );
        assert!(host.contains("/// Queues a mail"), "{host}");
        let okta = get("okta.d.rhai");
        assert!(okta.contains("module okta;"), "{okta}");
        assert!(
            okta.contains("/// Okta does not keep targets in a stable order: always find them by type.\nfn target(event: ?, kind: ?) -> ?;"),
            "{okta}"
        );
        assert!(!okta.contains("-> ;"), "{okta}");
        assert!(okta.contains("fn describe(entity: ?) -> String;"), "{okta}");
        let state = get("state.d.rhai");
        assert!(state.contains("module state;"), "{state}");
        assert!(
            state.contains("fn incr(key: String, by: int, ttl: ?) -> int;"),
            "{state}"
        );
        let time = get("time.d.rhai");
        assert!(
            time.contains("module time;") && time.contains("fn format("),
            "{time}"
        );
        let scope = get(SCOPE_FILE);
        assert!(
            scope.contains("- `event.authenticationContext.authenticationStep`: int, e.g. `0`"),
            "{scope}"
        );
        assert!(scope.contains("const delivery: Map;"), "{scope}");
    }
}
