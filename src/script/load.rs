//! Loading scripts: header, compilation into self-contained ASTs, import checks and hashes.

// A `LoadError` is built at most once per file, when loading fails: boxing it buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rhai::{AST, Engine, EvalAltResult, Position, Scope};
use rhai::{ASTNode, Expr, Stmt};
use sha2::{Digest, Sha256};

use super::Limits;
use super::engine::{StdlibResolver, check_module_name, new_engine, refusal_message};
use super::header::{Header, parse_header, pattern_matches};

/// Host functions a script must not redefine (a script function of the same name and arity
/// silently shadows the registered one).
const HOST_FUNCTIONS: &[&str] = &[
    "send_email",
    "lookup_user",
    "log",
    "warn",
    "print",
    "debug",
    "sleep",
];

/// Largest script file accepted: scripts are hand-written automations, not data.
const MAX_SCRIPT_BYTES: u64 = 1 << 20;

/// What kind of load failure a [`LoadError`] is: set where the error is made, so that `engine
/// check` can give it a stable diagnostic code without reading its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadErrorKind {
    /// The scripts directory cannot be listed.
    Dir,
    /// The script file cannot be read, is too large or is not UTF-8.
    Read,
    /// The `//! on:` / `//! hook:` header is wrong.
    Header,
    /// The script does not compile (syntax).
    Syntax,
    /// A variable is used that is not defined.
    UndefinedVariable,
    /// An `import` is not allowed, names no stdlib module, or the module fails to load.
    Import,
    /// A script function redefines a host function.
    RedefinesHost,
}

/// A script that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub kind: LoadErrorKind,
    /// The file the position refers to (the script, or a stdlib module it imports).
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column in characters, when known.
    pub col: Option<usize>,
    pub message: String,
    pub hint: Option<String>,
    /// The source line at `line`, for diagnostics.
    pub source_line: Option<String>,
    /// The script being loaded (same as `file` unless the error is inside a module).
    pub script: PathBuf,
    /// The script's header, when it parsed (the error is in its code): which events it would
    /// have received.
    pub header: Option<Header>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.col {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if self.file != self.script {
            write!(f, " (imported by {})", self.script.display())?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    pub fn new(kind: LoadErrorKind, script: &Path, message: impl Into<String>) -> Self {
        LoadError {
            kind,
            file: script.to_path_buf(),
            line: None,
            col: None,
            message: message.into(),
            hint: None,
            source_line: None,
            script: script.to_path_buf(),
            header: None,
        }
    }

    fn at(mut self, source: &str, line: Option<usize>, col: Option<usize>) -> Self {
        self.line = line;
        self.col = col;
        self.source_line =
            line.and_then(|l| source.lines().nth(l.saturating_sub(1)).map(str::to_string));
        self
    }

    fn at_pos(self, source: &str, pos: Position) -> Self {
        self.at(source, pos.line(), pos.position())
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// The files directly in `dir` whose name ends in `.{ext}`, hidden ones (`.name`) skipped,
/// sorted: how scripts (and sample files) are found.
pub fn visible_files(dir: &Path, ext: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == ext)
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
                && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// A script file's text: at most [`MAX_SCRIPT_BYTES`], UTF-8. The error says which.
pub fn read_source(path: &Path) -> Result<String, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read: {e}"))?
        .len();
    if size > MAX_SCRIPT_BYTES {
        return Err(format!(
            "script is {size} bytes, more than the {MAX_SCRIPT_BYTES} allowed"
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))
}

/// A compiled script.
pub struct Script {
    /// File stem: `scripts/new-hire.rhai` → `new-hire`.
    pub name: String,
    pub path: PathBuf,
    /// `new-hire.rhai`, as used in error positions.
    pub file_name: String,
    /// sha256 hex of the source and of every stdlib module it imports (name and source).
    pub hash: String,
    /// Event type patterns from `//! on:`.
    pub on: Vec<String>,
    /// Hook ids from `//! hook:`; `None` = every hook.
    pub hooks: Option<Vec<String>>,
    /// The header as parsed, with where each entry is written.
    pub header: Header,
    pub source: String,
    /// The source of every stdlib module it imports, by the file name run errors give
    /// (`stdlib/okta.rhai`): run errors inside a module are explained from its text.
    pub module_sources: BTreeMap<String, String>,
    ast: AST,
    engine: Arc<Engine>,
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("hash", &self.hash)
            .field("on", &self.on)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

impl Script {
    /// Whether this script subscribes to `event_type` on `hook`.
    pub fn matches(&self, hook: &str, event_type: &str) -> bool {
        self.hooks
            .as_ref()
            .is_none_or(|h| h.iter().any(|id| id == hook))
            && self.on.iter().any(|p| pattern_matches(p, event_type))
    }

    /// The compiled, self-contained AST (imports embedded), e.g. for a linter.
    pub fn ast(&self) -> &AST {
        &self.ast
    }

    /// The engine this script was compiled with and runs on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// The scripts of a directory, compiled with one shared engine.
pub struct ScriptSet {
    scripts: Vec<Arc<Script>>,
    /// Scripts that do not compile and have no working version, but whose header parsed: the
    /// events they would have received get a failed run (kind `load`) each.
    broken: Vec<Broken>,
}

/// A script that does not load, with what it would have received.
#[derive(Debug, Clone)]
pub struct Broken {
    /// File stem, as `Script::name`.
    pub name: String,
    pub on: Vec<String>,
    pub hooks: Option<Vec<String>>,
    pub error: LoadError,
}

impl Broken {
    /// Whether this script would have received `event_type` on `hook`.
    pub fn matches(&self, hook: &str, event_type: &str) -> bool {
        self.hooks
            .as_ref()
            .is_none_or(|h| h.iter().any(|id| id == hook))
            && self.on.iter().any(|p| pattern_matches(p, event_type))
    }
}

impl fmt::Debug for ScriptSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.scripts.iter()).finish()
    }
}

impl ScriptSet {
    /// A set with no scripts.
    pub fn empty() -> Self {
        ScriptSet {
            scripts: Vec::new(),
            broken: Vec::new(),
        }
    }

    /// Compiles every `*.rhai` file directly in `scripts_dir` (hidden files skipped). A script
    /// that fails is reported in the errors and left out; the others load.
    pub fn load(
        scripts_dir: &Path,
        stdlib_dir: &Path,
        limits: &Limits,
    ) -> (ScriptSet, Vec<LoadError>) {
        let mut errors = Vec::new();
        let files = match visible_files(scripts_dir, "rhai") {
            Ok(files) => files,
            Err(e) => {
                errors.push(
                    LoadError::new(
                        LoadErrorKind::Dir,
                        scripts_dir,
                        format!("cannot read the scripts directory: {e}"),
                    )
                    .hint("set `scripts_dir` in engine.toml or create the directory"),
                );
                return (ScriptSet::empty(), errors);
            }
        };
        let (engine, resolver) = new_engine(stdlib_dir, limits);
        let engine = Arc::new(engine);
        let mut scripts = Vec::new();
        for path in files {
            match compile_script(&engine, &resolver, &path) {
                Ok(s) => scripts.push(Arc::new(s)),
                Err(e) => errors.push(e),
            }
        }
        scripts.sort_by(|a, b| a.name.cmp(&b.name));
        let broken = errors
            .iter()
            .filter_map(|e| {
                let h = e.header.as_ref()?;
                Some(Broken {
                    name: e.script.file_stem()?.to_string_lossy().into_owned(),
                    on: h.patterns(),
                    hooks: h.hook_ids(),
                    error: e.clone(),
                })
            })
            .collect();
        (ScriptSet { scripts, broken }, errors)
    }

    /// Compiles one script file the same way `load` does (with an engine of its own).
    pub fn load_one(
        path: &Path,
        stdlib_dir: &Path,
        limits: &Limits,
    ) -> Result<Arc<Script>, LoadError> {
        let (engine, resolver) = new_engine(stdlib_dir, limits);
        compile_script(&Arc::new(engine), &resolver, path).map(Arc::new)
    }

    /// For hot reload: every script of `previous` whose file failed to load now (an error in
    /// `errors` names it as its script) is kept in this set in its previous version.
    pub fn keep_previous(&mut self, previous: &ScriptSet, errors: &[LoadError]) {
        for old in &previous.scripts {
            let failed = errors.iter().any(|e| e.script == old.path);
            if failed && !self.scripts.iter().any(|s| s.name == old.name) {
                self.scripts.push(old.clone());
            }
        }
        self.scripts.sort_by(|a, b| a.name.cmp(&b.name));
        // A script whose previous version stays live is not broken.
        let live = &self.scripts;
        self.broken
            .retain(|b| !live.iter().any(|s| s.name == b.name));
    }

    /// The scripts that do not load and would have received `event_type` on `hook`.
    pub fn broken_matching(&self, hook: &str, event_type: &str) -> Vec<&Broken> {
        self.broken
            .iter()
            .filter(|b| b.matches(hook, event_type))
            .collect()
    }

    /// Every script that does not load (and has no working version), by name.
    pub fn broken_scripts(&self) -> &[Broken] {
        &self.broken
    }

    /// The script called `name` that does not load (and has no working version).
    pub fn broken(&self, name: &str) -> Option<&Broken> {
        self.broken.iter().find(|b| b.name == name)
    }

    /// The scripts subscribed to `event_type` on `hook`, by name.
    pub fn matching(&self, hook: &str, event_type: &str) -> Vec<Arc<Script>> {
        self.scripts
            .iter()
            .filter(|s| s.matches(hook, event_type))
            .cloned()
            .collect()
    }

    /// All scripts, by name.
    pub fn scripts(&self) -> &[Arc<Script>] {
        &self.scripts
    }

    /// The script called `name`, if loaded.
    pub fn get(&self, name: &str) -> Option<&Arc<Script>> {
        self.scripts.iter().find(|s| s.name == name)
    }
}

/// The scope scripts are compiled against (strict variables need the names; values at run time).
pub(crate) fn compile_scope() -> Scope<'static> {
    let mut scope = Scope::new();
    // Plain variables here (not constants) so the optimizer cannot fold their placeholder values.
    scope.push_dynamic("event", rhai::Dynamic::UNIT);
    scope.push_dynamic("delivery", rhai::Dynamic::UNIT);
    scope
}

fn compile_script(
    engine: &Arc<Engine>,
    resolver: &StdlibResolver,
    path: &Path,
) -> Result<Script, LoadError> {
    let source = read_source(path).map_err(|m| LoadError::new(LoadErrorKind::Read, path, m))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file_name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();

    let header = parse_header(&source).map_err(|e| {
        LoadError::new(LoadErrorKind::Header, path, e.message)
            .at(&source, Some(e.line), Some(e.col))
            .hint(e.hint)
    })?;
    compile_body(
        engine,
        resolver,
        path,
        source,
        name,
        file_name,
        header.clone(),
    )
    .map_err(|mut e| {
        e.header = Some(header);
        e
    })
}

/// Compiles a script whose header parsed.
fn compile_body(
    engine: &Arc<Engine>,
    resolver: &StdlibResolver,
    path: &Path,
    source: String,
    name: String,
    file_name: String,
    header: Header,
) -> Result<Script, LoadError> {
    let scope = compile_scope();
    // First pass: syntax, strict variables, and imports checked with their positions.
    let plain = engine.compile_with_scope(&scope, &source).map_err(|e| {
        let kind = match *e.0 {
            rhai::ParseErrorType::VariableUndefined(_) => LoadErrorKind::UndefinedVariable,
            _ => LoadErrorKind::Syntax,
        };
        let le = LoadError::new(kind, path, e.0.to_string()).at_pos(&source, e.1);
        match kind {
            LoadErrorKind::UndefinedVariable => le.hint(
                "scripts see `event` and `delivery`; declare other variables with `let` first",
            ),
            _ => le,
        }
    })?;
    check_ast(&plain, path, &source, resolver)?;

    // Second pass: the same code with the stdlib modules embedded.
    resolver.take_loaded();
    let mut ast = engine
        .compile_into_self_contained(&scope, &source)
        .map_err(|e| module_load_error(path, &source, resolver, &e))?;
    ast.set_source(file_name.clone());
    let loaded = resolver.take_loaded();

    let mut h = Sha256::new();
    h.update(source.as_bytes());
    for (module, text) in &loaded {
        h.update(b"\0stdlib/");
        h.update(module.as_bytes());
        h.update(b".rhai\0");
        h.update(text.as_bytes());
    }
    Ok(Script {
        name,
        path: path.to_path_buf(),
        file_name,
        hash: hex::encode(h.finalize()),
        on: header.patterns(),
        hooks: header.hook_ids(),
        header,
        source,
        module_sources: loaded
            .into_iter()
            .map(|(module, text)| (format!("stdlib/{module}.rhai"), text))
            .collect(),
        ast,
        engine: engine.clone(),
    })
}

/// Import statements must name an existing stdlib module by a literal; no host function may be
/// redefined.
fn check_ast(
    ast: &AST,
    path: &Path,
    source: &str,
    resolver: &StdlibResolver,
) -> Result<(), LoadError> {
    let mut problem: Option<LoadError> = None;
    ast.walk(&mut |nodes: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Import(x, pos))) = nodes.last() {
            let err = match &x.0 {
                Expr::StringConstant(s, _) => match check_module_name(s) {
                    Err(m) => Some(LoadError::new(LoadErrorKind::Import, path, m)),
                    Ok(name) if !resolver.file_of(name).is_file() => Some(
                        LoadError::new(
                            LoadErrorKind::Import,
                            path,
                            format!("module {s:?} not found in the stdlib directory"),
                        )
                        .hint(format!(
                            "expected the file {}",
                            resolver.file_of(name).display()
                        )),
                    ),
                    Ok(_) => None,
                },
                _ => Some(
                    LoadError::new(
                        LoadErrorKind::Import,
                        path,
                        "import needs a string literal naming a stdlib module",
                    )
                    .hint("write `import \"okta\" as okta;`"),
                ),
            };
            if let Some(e) = err {
                problem = Some(e.at_pos(source, *pos));
                return false;
            }
        }
        true
    });
    if let Some(e) = problem {
        return Err(e);
    }
    for f in ast.iter_functions() {
        if HOST_FUNCTIONS.contains(&f.name) {
            let line = source
                .lines()
                .position(|l| l.trim_start().starts_with(&format!("fn {}", f.name)))
                .map(|i| i + 1);
            return Err(LoadError::new(
                LoadErrorKind::RedefinesHost,
                path,
                format!(
                    "function `{}` redefines the host function of that name",
                    f.name
                ),
            )
            .at(source, line, line.map(|_| 1))
            .hint("rename your function"));
        }
    }
    Ok(())
}

/// Errors of `compile_into_self_contained` come from modules: report the innermost position,
/// in the module's file.
fn module_load_error(
    path: &Path,
    source: &str,
    resolver: &StdlibResolver,
    e: &EvalAltResult,
) -> LoadError {
    let mut err = e;
    let mut module: Option<String> = None;
    while let EvalAltResult::ErrorInModule(name, inner, _) = err {
        module = Some(name.clone());
        err = inner;
    }
    let (message, hint) = match err {
        EvalAltResult::ErrorParsing(t, _) => (t.to_string(), None),
        other => refusal_message(other).unwrap_or_else(|| (other.to_string(), None)),
    };
    let message = message
        .rsplit_once(" (line ")
        .map_or(message.clone(), |(m, _)| m.to_string());
    let mut le = match module.as_deref().and_then(|m| check_module_name(m).ok()) {
        Some(name) => {
            let file = resolver.file_of(name);
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let mut le =
                LoadError::new(LoadErrorKind::Import, path, message).at_pos(&text, err.position());
            le.file = file;
            le
        }
        // The first pass compiled the script itself: what fails now is one of its imports.
        None => LoadError::new(LoadErrorKind::Import, path, message).at(source, None, None),
    };
    le.hint = hint;
    le
}
