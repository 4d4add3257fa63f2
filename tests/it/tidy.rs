//! Tidy tests, in the spirit of rust-analyzer's: they read `src/` as text and fail when the
//! layout's rules are broken.
//!
//! - Layers, lowest first ([`LAYERS`]; ARCHITECTURE.md states the same order): a module imports
//!   only from its own layer or a lower one. `script` imports nothing outside itself.
//! - Every module file starts with a `//!` line saying what it is for.
//! - `lib.rs`'s Layout names every layer and every module file.

use std::path::{Path, PathBuf};

/// The layers, lowest first. `lib.rs` and `main.rs` sit above them all.
const LAYERS: &[&str] = &[
    "util",
    "script",
    "config",
    "store",
    "lookup",
    "ingest",
    "backfill",
    "process",
    "actions",
    "reload",
    "authoring",
    "console",
    "app",
    "cli",
];

/// Layers that may import nothing from any other layer.
const SELF_CONTAINED: &[&str] = &["script"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, as (path relative to `src/`, text).
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("src is readable")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src(), &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(src())
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&p).expect("readable");
            (rel, text)
        })
        .collect()
}

/// The module path of a file: `store/runs.rs` → [store, runs]; `store/mod.rs` → [store].
fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

/// The code of a line, without comments (`//…`) and string literals' contents: what imports
/// can hide in. (Good enough for this crate's style: no `/* */` around code.)
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            if c == '\\' {
                chars.next();
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        if c == '"' {
            in_str = true;
            continue;
        }
        if c == '/' && chars.peek() == Some(&'/') {
            break;
        }
        out.push(c);
    }
    out
}

/// The layers a line of `file` (at module path `path`) refers to: every `crate::x` and every
/// `super::` chain that climbs to the crate root.
fn referenced_layers(code: &str, path: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if boundary && rest.starts_with("crate::") {
            let name: String = rest["crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
            i += "crate::".len();
            continue;
        }
        if boundary && rest.starts_with("super::") {
            let mut ups = 0;
            let mut r = rest;
            while let Some(next) = r.strip_prefix("super::") {
                ups += 1;
                r = next;
            }
            // A file's own `super::` is its parent module; climbing past the layer's folder
            // reaches the crate root, and the next segment is a layer.
            let parent_depth = path.len().saturating_sub(1);
            if ups > parent_depth {
                let name: String = r
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                found.push(name);
            }
            i += "super::".len() * ups;
            continue;
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    found
}

/// Every import that breaks the layer order, as a message.
fn layer_violations(files: &[(String, String)]) -> Vec<String> {
    let order = LAYERS.join(" < ");
    let mut problems = Vec::new();
    for (rel, text) in files {
        let path = module_path(rel);
        let Some(own) = path.first() else { continue };
        let Some(own_rank) = rank(own) else {
            continue; // lib.rs and main.rs: above every layer
        };
        let mut in_test = false;
        for (n, line) in text.lines().enumerate() {
            // Unit tests may reach anything a test needs; the rule is about the code.
            if line.trim_start().starts_with("#[cfg(test)]") {
                in_test = true;
            }
            if in_test {
                continue;
            }
            let code = code_of(line);
            for target in referenced_layers(&code, &path) {
                if &target == own {
                    continue;
                }
                // A `super::` chain from an inline module (`mod x { … }` in a file) stays inside
                // the file's own module: only a layer name past the root leaves the layer.
                let is_layer = rank(&target).is_some();
                if !is_layer && !code.contains(&format!("crate::{target}")) {
                    continue;
                }
                let why = match rank(&target) {
                    _ if SELF_CONTAINED.contains(&own.as_str()) => {
                        format!("`{own}` is self-contained and may import nothing outside itself")
                    }
                    Some(r) if r < own_rank => continue,
                    Some(_) => format!(
                        "`{target}` is a layer above `{own}` (layers, lowest first: {order})"
                    ),
                    None => format!("`{target}` is not a layer (layers, lowest first: {order})"),
                };
                problems.push(format!(
                    "src/{rel}:{}: imports `crate::{target}`: {why}\n    {}",
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    problems
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let problems = layer_violations(&sources());
    assert!(
        problems.is_empty(),
        "{} forbidden import(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The checker itself: a forbidden import is found, an allowed one is not.
#[test]
fn the_layer_check_finds_what_it_should() {
    let files = vec![
        (
            "store/runs.rs".to_string(),
            "//! x\nuse crate::script::Action;\nuse crate::process::Backoff;\n".to_string(),
        ),
        (
            "script/run.rs".to_string(),
            "//! x\nuse super::engine::Budget;\nuse crate::util::now_ms;\n// crate::cli in a comment\n".to_string(),
        ),
        (
            "ingest/server.rs".to_string(),
            "//! x\nuse super::super::app::App;\nlet s = \"crate::cli\";\n".to_string(),
        ),
    ];
    let problems = layer_violations(&files);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("src/store/runs.rs:3: imports `crate::process`"));
    assert!(problems[1].contains("`script` is self-contained"));
    assert!(problems[2].contains("src/ingest/server.rs:2: imports `crate::app`"));
}

#[test]
fn every_module_file_says_what_it_is_for() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(rel, _)| format!("src/{rel}"))
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not start with a `//!` line saying what they are for: {missing:?}"
    );
}

#[test]
fn lib_rs_layout_names_every_layer_and_module() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let layout: String = lib
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    // Each layer's bullet: from `- [`layer`]` to the next bullet.
    let bullet = |layer: &str| -> Option<String> {
        let start = layout.find(&format!("- [`{layer}`]"))?;
        let rest = &layout[start + 2..];
        let end = rest.find("\n//! - ").unwrap_or(rest.len());
        Some(rest[..end].to_string())
    };
    let mut missing = Vec::new();
    for layer in LAYERS {
        if bullet(layer).is_none() {
            missing.push(format!("layer `{layer}`"));
        }
    }
    for (rel, _) in sources() {
        let Some((layer, _)) = rel.split_once('/') else {
            continue;
        };
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        if name != "mod.rs" && !bullet(layer).is_some_and(|b| b.contains(name)) {
            missing.push(format!("src/{rel} (in the `{layer}` bullet)"));
        }
    }
    assert!(
        missing.is_empty(),
        "lib.rs's Layout does not mention: {missing:?}"
    );
}
