//! `engine check`: lints scripts against sample events and dry-runs them.
//!
//! For each script: its file and header (`on:`/`hook:`, event types Okta cannot deliver by
//! hook, hook ids the config lacks), compilation and imports, every `event.…`/`delivery.…` path it
//! reads (walked from the AST, see [`lint`]) against the documented LogEvent fields and the
//! samples of its event types, every target it picks by position (`event.target[1]`, with the
//! `okta::target(event, "Type")` the samples suggest), and a dry run on each of those samples. Findings are [`Diagnostic`]s with stable codes
//! (documented in `docs/diagnostics.md`), rendered like rustc or as one JSON object.
//!
//! ```text
//! check(scripts, scripts_dir, stdlib_dir, samples, limits, host, hooks, …, now) -> Result<Report, String>
//!     // dry runs look users up in `host` at `now`; `hook:` ids are checked against `hooks` when given
//! Report::finish(deny_warnings)   // counts and the exit code
//! render_report(&report, deny_warnings, out)   // the human text; `--format json` is the Report
//! ```
//!
//! # Layout
//!
//! - this module: the checks of one script and the report.
//! - `diagnostics`: [`Diagnostic`], the stable [`Code`]s, rendering like rustc.
//! - `lint`: the AST walk of `event.…`/`delivery.…` paths, with aliases, and did-you-mean.
//! - `dryrun`: running each script on its samples with a host that sends nothing.
//! - `eligible`: the event types Okta can deliver by hook (`event-hook-eligible.txt`).

pub mod diagnostics;
mod dryrun;
mod eligible;
pub mod lint;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::authoring::now::DryNow;
pub use diagnostics::{ALL_CODES, Code, Diagnostic, Severity, render_human};
pub use dryrun::DryRun;
pub use eligible::{eligible_types, is_eligible};

use crate::authoring::samples::Sample;
use crate::authoring::tokens::Shape;
use crate::script::{
    Header, Host, Limits, LoadError, LoadErrorKind, Script, ScriptSet, Senders, parse_header,
    pattern_matches,
};
use crate::util::exit::Exit;
use lint::{PathFinding, PathProblem, PathRead, PositionalTarget, Root};

/// Known fields listed when no close match exists.
const MAX_KNOWN_LISTED: usize = 12;

/// Everything `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub diagnostics: Vec<Diagnostic>,
    pub dry_runs: Vec<DryRun>,
    pub summary: Summary,
    /// The dry runs' "now" (each one's is in its [`DryRun::now`]).
    #[serde(skip)]
    pub now: DryNow,
}

/// Counts, and the exit code they give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub scripts: usize,
    pub samples: usize,
    pub dry_runs: usize,
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
    pub exit_code: u8,
}

impl Report {
    /// Counts the findings and sets the exit code: errors (or warnings with `deny_warnings`)
    /// fail the check.
    pub fn finish(&mut self, deny_warnings: bool) {
        let count = |s: Severity| self.diagnostics.iter().filter(|d| d.severity == s).count();
        let (errors, warnings, infos) = (
            count(Severity::Error),
            count(Severity::Warning),
            count(Severity::Info),
        );
        self.summary.errors = errors;
        self.summary.warnings = warnings;
        self.summary.infos = infos;
        self.summary.dry_runs = self.dry_runs.len();
        self.summary.exit_code = if errors > 0 || (deny_warnings && warnings > 0) {
            Exit::Failure
        } else {
            Exit::Ok
        }
        .code();
    }
}

/// The script files to check: the given ones (each must exist), or every `*.rhai` directly in
/// `scripts_dir` (hidden files skipped), sorted.
fn script_files(scripts: &[PathBuf], scripts_dir: &Path) -> Result<(Vec<PathBuf>, bool), String> {
    if !scripts.is_empty() {
        for p in scripts {
            if !p.is_file() {
                return Err(format!("{}: no such script file", p.display()));
            }
        }
        return Ok((scripts.to_vec(), false));
    }
    let files = crate::script::visible_files(scripts_dir, "rhai").map_err(|e| {
        format!(
            "cannot read the scripts directory {}: {e}",
            scripts_dir.display()
        )
    })?;
    Ok((files, true))
}

/// Checks the scripts; `Err` is a usage error (nothing checked). The summary's counts are
/// filled in by [`Report::finish`].
#[allow(clippy::too_many_arguments)]
pub fn check(
    scripts: &[PathBuf],
    scripts_dir: &Path,
    stdlib_dir: &Path,
    samples: &[Sample],
    limits: &Limits,
    senders: &Senders,
    host: &Arc<dyn Host>,
    hooks: Option<&[String]>,
    generic_hooks: &[String],
    okta: Option<bool>,
    now: DryNow,
) -> Result<Report, String> {
    let (files, whole_dir) = script_files(scripts, scripts_dir)?;
    let mut report = Report {
        diagnostics: Vec::new(),
        dry_runs: Vec::new(),
        summary: Summary {
            scripts: files.len(),
            samples: samples.len(),
            dry_runs: 0,
            errors: 0,
            warnings: 0,
            infos: 0,
            exit_code: Exit::Ok.code(),
        },
        now,
    };
    if files.is_empty() {
        report.diagnostics.push(
            Diagnostic::new(
                Code::I0001,
                "",
                &scripts_dir.display().to_string(),
                "no scripts to check",
            )
            .help("scripts are `*.rhai` files in the scripts directory"),
        );
        return Ok(report);
    }

    // The whole directory compiles with one engine, like the server does.
    let (set, set_errors) = if whole_dir {
        ScriptSet::load(scripts_dir, stdlib_dir, limits)
    } else {
        (ScriptSet::empty(), Vec::new())
    };
    let mut ctx = Ctx {
        stdlib_dir,
        hooks,
        generic_hooks,
        okta,
        samples,
        limits,
        senders,
        host,
        now,
        documented: Shape::documented(),
        delivery: lint::delivery_shape(),
        shapes: HashMap::new(),
    };
    for file in &files {
        let loaded = if whole_dir {
            match set.scripts().iter().find(|s| &s.path == file) {
                Some(s) => Ok(s.clone()),
                None => Err(set_errors
                    .iter()
                    .find(|e| &e.script == file)
                    .cloned()
                    .unwrap_or_else(|| {
                        LoadError::new(LoadErrorKind::Syntax, file, "the script did not load")
                    })),
            }
        } else {
            ScriptSet::load_one(file, stdlib_dir, limits)
        };
        let (diags, runs) = ctx.check_script(file, loaded);
        report.diagnostics.extend(diags);
        report.dry_runs.extend(runs);
    }
    Ok(report)
}

struct Ctx<'a> {
    stdlib_dir: &'a Path,
    /// The hook ids of the config, when known (`hook:` ids are checked against them).
    hooks: Option<&'a [String]>,
    /// The configured hooks of kind `generic` (they deliver any JSON, not Okta's event types).
    generic_hooks: &'a [String],
    /// Whether engine.toml has `[okta]`, when known (`okta::` actions are checked against it).
    okta: Option<bool>,
    samples: &'a [Sample],
    limits: &'a Limits,
    senders: &'a Senders,
    host: &'a Arc<dyn Host>,
    now: DryNow,
    documented: Shape,
    delivery: Shape,
    /// Merged shapes by the indices of the samples they cover.
    shapes: HashMap<Vec<usize>, Shape>,
}

/// E0403 for a `schedule` whose function the script lacks, E0501 for a literal duration that
/// does not parse, W0501 for `\n` inside a back-tick string.
fn timing_diagnostics(
    script: &Script,
    walk: &lint::Walk,
    display: &str,
    source: &str,
) -> Vec<Diagnostic> {
    let mut diags: Vec<Diagnostic> = Vec::new();
    let functions: Vec<(String, usize)> = script
        .ast()
        .iter_functions()
        .map(|f| (f.name.to_string(), f.params.len()))
        .collect();
    for (name, pos) in &walk.schedule_calls {
        let arities: Vec<usize> = functions
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .collect();
        if arities.iter().any(|a| *a <= 1) {
            continue;
        }
        let (line, col) = lint::literal_place(source, *pos, name);
        let what = if arities.is_empty() {
            format!(
                "schedule: the script has no function `{name}`; the run that schedules it fails"
            )
        } else {
            format!(
                "schedule: `{name}` takes {} parameters, but a timer calls `{name}(args)`",
                arities[0]
            )
        };
        let names: Vec<String> = functions.iter().map(|(n, _)| n.clone()).collect();
        let d = Diagnostic::new(Code::E0403, display, display, what).at(
            source,
            line,
            col,
            name.chars().count(),
        );
        let d = match lint::nearest(name, &names) {
            Some(s) if arities.is_empty() => d.help(format!("did you mean `{s}`?")),
            _ => d.help(format!("define `fn {name}(args) {{ … }}` in this script: the timer calls it when it is due, with `event` in scope")),
        };
        if !diags.contains(&d) {
            diags.push(d);
        }
    }
    for (what, text, pos) in &walk.durations {
        let Err(message) = crate::script::parse_duration(text) else {
            continue;
        };
        let (line, col) = lint::literal_place(source, *pos, text);
        let d = Diagnostic::new(Code::E0501, display, display, format!("{what}: {message}")).at(
            source,
            line,
            col,
            text.chars().count().max(1),
        );
        if !diags.contains(&d) {
            diags.push(d);
        }
    }
    for (line, col, e) in lint::backtick_escapes(source) {
        diags.push(
            Diagnostic::new(
                Code::W0501,
                display,
                display,
                format!("`\\{e}` inside a back-tick string is a backslash and `{e}`, not {}", match e {
                    'n' => "a line break",
                    't' => "a tab",
                    _ => "a carriage return",
                }),
            )
            .at(source, Some(line), Some(col), 2)
            .help(if e == 'n' {
                "a back-tick string keeps its line breaks: break the line inside the string instead (or use a \"…\" string, where `\\n` is a line break)"
            } else {
                "write the character itself inside the back-tick string, or use a \"…\" string, where escapes work"
            }),
        );
    }
    diags
}

/// W0102 for each `hook:` id that is not configured.
fn unknown_hooks(
    header: &Header,
    source: &str,
    display: &str,
    configured: &[String],
) -> Vec<Diagnostic> {
    let named = header.hooks.as_deref().unwrap_or_default();
    let unknown: Vec<(&String, &usize, &usize)> = named
        .iter()
        .filter(|e| !configured.contains(&e.value))
        .map(|e| (&e.value, &e.line, &e.col))
        .collect();
    let none_known = !named.is_empty() && unknown.len() == named.len();
    unknown
        .into_iter()
        .map(|(id, line, col)| {
            let message = if none_known {
                format!("no hook `{id}` in engine.toml: this script never runs")
            } else {
                format!("no hook `{id}` in engine.toml: the script never runs for it")
            };
            let d = Diagnostic::new(Code::W0102, display, display, message).at(
                source,
                Some(*line),
                Some(*col),
                id.chars().count(),
            );
            match lint::nearest(id, configured) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!(
                    "the configured hooks are: {}",
                    configured
                        .iter()
                        .map(|h| format!("`{h}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        })
        .collect()
}

impl Ctx<'_> {
    fn check_script(
        &mut self,
        file: &Path,
        loaded: Result<Arc<Script>, LoadError>,
    ) -> (Vec<Diagnostic>, Vec<DryRun>) {
        let display = file.display().to_string();
        let mut diags = Vec::new();
        let source = match crate::script::read_source(file) {
            Ok(s) => s,
            Err(m) => {
                diags.push(Diagnostic::new(Code::E0001, &display, &display, m));
                return (diags, Vec::new());
            }
        };

        // Header first: a header error stops loading, and says more than the load error.
        let header = match parse_header(&source) {
            Ok(h) => h,
            Err(e) => {
                diags.push(
                    Diagnostic::new(Code::E0101, &display, &display, e.message)
                        .at(
                            &source,
                            Some(e.line),
                            Some(e.col),
                            token_len(&source, e.line, e.col),
                        )
                        .help(e.hint),
                );
                return (diags, Vec::new());
            }
        };
        let on: Vec<(&String, &usize, &usize)> = header
            .on
            .iter()
            .map(|e| (&e.value, &e.line, &e.col))
            .collect();
        // Through an okta hook, an ineligible type is an error (the script never runs for it);
        // a script bound only to generic hooks gets a warning.
        let okta_bound = match header.hook_ids() {
            Some(ids) => ids.iter().any(|id| !self.generic_hooks.contains(id)),
            None => self
                .hooks
                .is_none_or(|all| all.iter().any(|id| !self.generic_hooks.contains(id))),
        };
        for &(pattern, line, col) in &on {
            if eligible::is_eligible(pattern) {
                continue;
            }
            let message = if pattern.ends_with('*') {
                format!("no event type matching `{pattern}` can be delivered by an Okta event hook")
            } else {
                format!("event type `{pattern}` cannot be delivered by an Okta event hook")
            };
            let code = if okta_bound { Code::E0102 } else { Code::W0101 };
            let mut d = Diagnostic::new(code, &display, &display, message).at(
                &source,
                Some(*line),
                Some(*col),
                pattern.chars().count(),
            );
            let subscribed = |t: &str| on.iter().any(|(p, _, _)| p.eq_ignore_ascii_case(t));
            d = match eligible::nearest_eligible(pattern) {
                Some(s) if subscribed(&s) => d.help(format!(
                    "remove it: the script already subscribes to `{s}`"
                )),
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.note(
                    "Okta sends only the event types it marks as event-hook eligible; the script never runs for this one",
                ),
            };
            diags.push(d);
        }

        if let Some(configured) = self.hooks {
            diags.extend(unknown_hooks(&header, &source, &display, configured));
        }

        let script = match loaded {
            Ok(s) => s,
            Err(e) => {
                diags.push(load_diagnostic(&e, &display, file, &source));
                return (diags, Vec::new());
            }
        };

        // The samples this script receives, and the shape they make.
        let chosen: Vec<usize> = self
            .samples
            .iter()
            .enumerate()
            .filter(|(_, s)| dryrun::receives(&script, s))
            .map(|(i, _)| i)
            .collect();
        for &(pattern, line, col) in &on {
            if !eligible::is_eligible(pattern) {
                continue; // E0102 / W0101 already says it never runs
            }
            let any = chosen
                .iter()
                .any(|&i| pattern_matches(pattern, &self.samples[i].event_type));
            if !any {
                diags.push(
                    Diagnostic::new(
                        Code::I0201,
                        &display,
                        &display,
                        format!("no samples of `{pattern}`: its paths are checked against the documented LogEvent fields only, and it is not dry-run"),
                    )
                    .at(&source, Some(*line), Some(*col), pattern.chars().count())
                    .help("capture events (`capture = true` on the hook), add one with `engine samples add FILE`, or pass `--samples DIR`"),
                );
            }
        }
        let shape = self.shape_for(&chosen);

        let picked: Vec<&Sample> = chosen.iter().map(|&i| &self.samples[i]).collect();
        let walk = lint::walk(script.ast());
        if self.okta == Some(false) {
            for (shown, pos) in &walk.okta_actions {
                // The call as written starts at its namespace, before the function's name.
                let name_len = shown.rsplit("::").next().map_or(0, |n| n.chars().count());
                let col = pos
                    .position()
                    .map(|c| c.saturating_sub(shown.chars().count() - name_len).max(1));
                diags.push(
                    Diagnostic::new(
                        Code::E0401,
                        &display,
                        &display,
                        format!("`{shown}` changes Okta, but engine.toml has no [okta]: the action would be skipped, not carried out"),
                    )
                    .at(&source, pos.line(), col, shown.chars().count())
                    .help("add [okta] with org_url and token_env (or client_id, private_key_env and scopes for a service app)"),
                );
            }
        }
        let mut path_diags: Vec<Diagnostic> = Vec::new();
        let endpoints = self.host.endpoint_names();
        for (function, name, pos) in &walk.endpoint_calls {
            if endpoints.contains(name) {
                continue;
            }
            // The position is the string literal's opening quote.
            let col = pos.position().map(|c| c + 1);
            let d = Diagnostic::new(
                Code::E0402,
                &display,
                &display,
                format!(
                    "{function}: no endpoint `{name}` in engine.toml; the call fails at run time"
                ),
            )
            .at(&source, pos.line(), col, name.chars().count());
            let d = match lint::nearest(name, &endpoints) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None if endpoints.is_empty() => d.help(
                    "declare it: [endpoint.NAME] with url (or url_env) in engine.toml".to_string(),
                ),
                None => d.help(format!(
                    "the configured endpoints are: {}",
                    endpoints
                        .iter()
                        .map(|e| format!("`{e}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            };
            if !path_diags.contains(&d) {
                path_diags.push(d);
            }
        }
        path_diags.extend(timing_diagnostics(&script, &walk, &display, &source));
        for p in &walk.positional {
            let d = positional_diagnostic(p, &picked, walk.imports_okta, &display, &source);
            if !path_diags.contains(&d) {
                path_diags.push(d);
            }
        }
        for read in walk.reads {
            let root_shape = match read.root {
                Root::Event => &shape,
                Root::Delivery => &self.delivery,
            };
            if let Some(f) = lint::check_path(&read, root_shape) {
                let d = path_diagnostic(&read, &f, &display, &source);
                if !path_diags.contains(&d) {
                    path_diags.push(d);
                }
            }
        }

        let (runs, run_diags) = dryrun::dry_run(
            &script,
            &display,
            self.stdlib_dir,
            &picked,
            self.host,
            self.limits,
            self.senders,
            self.now,
        );
        for d in run_diags {
            // A dry run failing on a path already reported: one finding, with the run as a note.
            if let Some(p) = path_diags.iter_mut().find(|p| {
                p.severity == Severity::Error
                    && p.file == d.file
                    && p.line == d.line
                    && d.line.is_some()
            }) {
                p.notes.extend(
                    d.notes
                        .iter()
                        .filter(|n| n.starts_with("on "))
                        .map(|n| format!("the dry run fails here {n}")),
                );
                continue;
            }
            diags.push(d);
        }
        diags.extend(path_diags);
        diags.sort_by(|a, b| {
            (a.file != display, a.line, a.col, a.code).cmp(&(
                b.file != display,
                b.line,
                b.col,
                b.code,
            ))
        });
        (diags, runs)
    }

    fn shape_for(&mut self, chosen: &[usize]) -> Shape {
        if let Some(s) = self.shapes.get(chosen) {
            return s.clone();
        }
        let picked: Vec<Sample> = chosen.iter().map(|&i| self.samples[i].clone()).collect();
        let mut shape = self.documented.clone();
        if let Some(s) = Shape::of_samples(&picked) {
            shape.merge(&s);
        }
        self.shapes.insert(chosen.to_vec(), shape.clone());
        shape
    }
}

/// Characters of the word at `line:col` (up to white space, `,`, `:`, `.`-free delimiters), at
/// least 1: what the caret underlines for header entries and names.
fn token_len(source: &str, line: usize, col: usize) -> usize {
    let Some(text) = line.checked_sub(1).and_then(|l| source.lines().nth(l)) else {
        return 1;
    };
    let n = text
        .chars()
        .skip(col.saturating_sub(1))
        .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | ':' | '(' | ')' | ';' | '[' | ']'))
        .count();
    n.max(1)
}

/// A load error as a diagnostic with its code.
fn load_diagnostic(e: &LoadError, display: &str, file: &Path, source: &str) -> Diagnostic {
    let in_module = e.file != e.script && e.file != file;
    let message = e.message.as_str();
    let code = match e.kind {
        _ if in_module => Code::E0003,
        LoadErrorKind::Read | LoadErrorKind::Dir => Code::E0001,
        LoadErrorKind::RedefinesHost => Code::E0005,
        LoadErrorKind::Import => Code::E0003,
        LoadErrorKind::UndefinedVariable => Code::E0004,
        LoadErrorKind::Header => Code::E0101,
        LoadErrorKind::Syntax => Code::E0002,
    };
    let mut d = if in_module {
        let mfile = e.file.display().to_string();
        let text = std::fs::read_to_string(&e.file).unwrap_or_default();
        Diagnostic::new(code, display, &mfile, message)
            .at(&text, e.line, e.col, 1)
            .note(format!("in a module imported by {display}"))
    } else {
        let len = match (code, e.line, e.col) {
            (Code::E0004, Some(l), Some(c)) => token_len(source, l, c),
            _ => 1,
        };
        Diagnostic::new(code, display, display, message).at(source, e.line, e.col, len)
    };
    if let Some(h) = &e.hint {
        d = d.help(h.clone());
    }
    d
}

/// The type of the target at `index` in each sample: (type, samples) in order of type, and the
/// number of samples with no target there (or one without a type).
fn target_types_at(index: rhai::INT, samples: &[&Sample]) -> (Vec<(String, usize)>, usize) {
    let mut types: std::collections::BTreeMap<String, usize> = Default::default();
    let mut missing = 0;
    for s in samples {
        let ty = serde_json::from_slice::<serde_json::Value>(&s.json)
            .ok()
            .and_then(|v| {
                let i = usize::try_from(index).ok()?;
                v.get("target")?
                    .get(i)?
                    .get("type")?
                    .as_str()
                    .map(str::to_string)
            });
        match ty {
            Some(t) => *types.entry(t).or_default() += 1,
            None => missing += 1,
        }
    }
    (types.into_iter().collect(), missing)
}

/// W0202: a target picked by position, with the `okta::target` rewrite when the samples agree
/// on what is at that position.
fn positional_diagnostic(
    p: &PositionalTarget,
    samples: &[&Sample],
    imports_okta: bool,
    display: &str,
    source: &str,
) -> Diagnostic {
    let written = format!("{}[{}]", p.written, p.index);
    let (line, col) = (p.start.line(), p.start.position());
    // Underline from the start of the chain to the `]` after the index.
    let len = match (line, col, p.index_pos.line(), p.index_pos.position()) {
        (Some(l), Some(c), Some(il), Some(ic)) if l == il && ic > c => source
            .lines()
            .nth(l - 1)
            .and_then(|text| {
                let close = text.chars().skip(ic - 1).position(|ch| ch == ']')?;
                Some(ic + close - c + 1)
            })
            .unwrap_or(1),
        _ => 1,
    };
    let mut d = Diagnostic::new(
        Code::W0202,
        display,
        display,
        format!(
            "`{written}` picks a target by its position: Okta does not keep targets in a stable order"
        ),
    )
    .at(source, line, col, len);
    if p.written != "event.target" {
        d = d.note(format!("`{}` is `event.target`", p.written));
    }
    let import = if imports_okta {
        ""
    } else {
        ", after `import \"okta\" as okta;`"
    };
    let (types, missing) = target_types_at(p.index, samples);
    let plural = |n: usize| if n == 1 { "sample" } else { "samples" };
    match types.as_slice() {
        [(ty, n)] => {
            let quoted = serde_json::to_string(ty).unwrap_or_default();
            let which = if missing == 0 && *n > 1 {
                format!("in all {n} samples")
            } else {
                format!("in {n} {}", plural(*n))
            };
            d = d.note(format!(
                "{which} of this script's event types, `{written}` is the `{ty}` target"
            ));
            if missing > 0 {
                d = d.note(format!(
                    "{missing} {} {} no target there",
                    plural(missing),
                    if missing == 1 { "has" } else { "have" }
                ));
            }
            d.help(format!(
                "pick it by type: `okta::target(event, {quoted})`{import}"
            ))
        }
        [] => d.help(format!(
            "pick the target by its type, e.g. `okta::target(event, \"User\")`{import}; `engine tokens` lists each event type's targets"
        )),
        many => {
            let seen: Vec<String> = many
                .iter()
                .map(|(t, n)| format!("`{t}` in {n} {}", plural(*n)))
                .collect();
            d.note(format!(
                "in the samples, `{written}` is {}",
                seen.join(", ")
            ))
            .help(format!(
                "pick the one you mean by its type: `okta::target(event, \"Type\")`{import}"
            ))
        }
    }
}

/// The written form of `read` up to and including its finding's field.
fn path_diagnostic(read: &PathRead, f: &PathFinding, display: &str, source: &str) -> Diagnostic {
    let field = |parent: &str, name: &str| {
        if f.quoted {
            format!(
                "{parent}[{}]",
                serde_json::to_string(name).unwrap_or_default()
            )
        } else {
            crate::authoring::tokens::field_path(parent, name)
        }
    };
    let len = f.name.chars().count() + if f.quoted { 2 } else { 0 };
    let (code, message) = match (&f.problem, read.root) {
        (PathProblem::OnArray, _) => (
            Code::E0202,
            format!("`{}` is an array: it has no field `{}`", f.parent, f.name),
        ),
        (_, Root::Delivery) => (
            Code::E0203,
            format!("unknown field `{}` of `{}`", f.name, f.parent),
        ),
        (PathProblem::Unknown, Root::Event) => (
            Code::E0201,
            format!("unknown field `{}` of `{}`", f.name, f.parent),
        ),
        (PathProblem::Unseen, Root::Event) => (
            Code::W0201,
            format!(
                "field `{}` of `{}` is in no sample of this script's event types",
                f.name, f.parent
            ),
        ),
    };
    let mut d = Diagnostic::new(code, display, display, message).at(
        source,
        f.pos.line(),
        f.pos.position(),
        len,
    );
    if let Some((name, n, pos)) = &read.alias {
        let mut target = read.root.name().to_string();
        for seg in read.segs.iter().take(*n) {
            match seg {
                lint::Seg::Field { name, quoted, .. } => {
                    target = if *quoted {
                        format!(
                            "{target}[{}]",
                            serde_json::to_string(name).unwrap_or_default()
                        )
                    } else {
                        crate::authoring::tokens::field_path(&target, name)
                    };
                }
                lint::Seg::Index { dynamic } => {
                    target.push_str(if *dynamic { "[…]" } else { "[0]" });
                }
            }
        }
        let at = pos
            .line()
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        d = d.note(format!("`{name}` is `{target}`{at}"));
    }
    match (&f.problem, &f.suggestion) {
        (PathProblem::OnArray, _) if f.parent == "event.target" => {
            d = d.help(format!(
                "pick a target by its type: `okta::target(event, \"User\").{}`, or loop: `for t in event.target {{ … }}`",
                f.name
            ));
        }
        (PathProblem::OnArray, _) => {
            d = d.help(format!(
                "index it first (`{}[0].{}`), or loop over it",
                f.parent, f.name
            ));
        }
        (_, Some(s)) => d = d.help(format!("did you mean `{}`?", field(&f.parent, s))),
        (_, None) => {
            if !f.known.is_empty() {
                let mut names: Vec<&str> = f
                    .known
                    .iter()
                    .take(MAX_KNOWN_LISTED)
                    .map(String::as_str)
                    .collect();
                if f.known.len() > MAX_KNOWN_LISTED {
                    names.push("…");
                }
                d = d.note(format!("`{}` has: {}", f.parent, names.join(", ")));
            }
        }
    }
    if f.problem == PathProblem::Unseen {
        d = d.note("a field missing from the event is a run-time error; test for it with `\"name\" in map` if it is optional");
    }
    d
}

/// The text report: diagnostics, the dry runs with the mail they would send, and a summary.
pub fn render_report(r: &Report, deny_warnings: bool, out: &mut dyn Write) -> std::io::Result<()> {
    for d in &r.diagnostics {
        render_human(d, out)?;
    }
    if !r.dry_runs.is_empty() {
        writeln!(out, "dry runs (nothing is sent; {}):", r.now.describe())?;
        for run in &r.dry_runs {
            let mails = run.mails.len();
            let status = if run.ok {
                let mut s = format!("ok, {mails} mail{}", if mails == 1 { "" } else { "s" });
                let others = run.actions.len();
                if others > 0 {
                    s.push_str(&format!(
                        ", {others} other action{}",
                        if others == 1 { "" } else { "s" }
                    ));
                }
                s
            } else {
                format!("failed: {}", run.error.as_deref().unwrap_or("error"))
            };
            writeln!(
                out,
                "  {} on {} {} ({}): {}",
                run.script, run.event_type, run.sample_id, run.sample, status
            )?;
            if run.ok {
                for m in &run.mails {
                    writeln!(out, "    {}", m.describe())?;
                }
                for a in &run.actions {
                    writeln!(out, "    {}", a.describe())?;
                }
                for c in &run.changes {
                    writeln!(out, "    would: {c}")?;
                }
                for l in &run.log {
                    writeln!(out, "    {}: {}", l.level, l.message)?;
                }
            }
        }
        writeln!(out)?;
    }
    let s = &r.summary;
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    let findings = if s.errors + s.warnings + s.infos == 0 {
        "no findings".to_string()
    } else {
        format!(
            "{}, {}, {}",
            plural(s.errors, "error"),
            plural(s.warnings, "warning"),
            plural(s.infos, "info")
        )
    };
    writeln!(
        out,
        "checked {} against {} ({}): {findings}{}",
        plural(s.scripts, "script"),
        plural(s.samples, "sample"),
        plural(s.dry_runs, "dry run"),
        if deny_warnings && s.warnings > 0 && s.errors == 0 {
            " (warnings denied)"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(src: &str) -> Vec<String> {
        let engine = rhai::Engine::new();
        let mut scope = rhai::Scope::new();
        scope.push_dynamic("event", rhai::Dynamic::UNIT);
        scope.push_dynamic("delivery", rhai::Dynamic::UNIT);
        let ast = engine.compile_with_scope(&scope, src).expect("compiles");
        lint::path_reads(&ast)
            .iter()
            .map(|r| {
                let mut s = r.root.name().to_string();
                for seg in &r.segs {
                    match seg {
                        lint::Seg::Field { name, .. } => s = format!("{s}.{name}"),
                        lint::Seg::Index { dynamic: false } => s.push_str("[0]"),
                        lint::Seg::Index { dynamic: true } => s.push_str("[?]"),
                    }
                }
                s
            })
            .collect()
    }

    #[test]
    fn walks_chains_aliases_and_scopes() {
        assert_eq!(
            reads("let a = event.target[0].alternateId; let b = event.actor?.id;"),
            ["event.target[0].alternateId", "event.actor.id"]
        );
        assert_eq!(
            reads("let u = event.actor; { let u = 1; u.x; } u.y;"),
            ["event.actor", "event.actor.y"]
        );
        assert_eq!(
            reads("let u = event.actor; if true { u = 5; } u.z;"),
            ["event.actor"]
        );
        assert_eq!(
            reads("let i = 1; event.target[i].id; event[\"uuid\"]; event.target.len();"),
            ["event.target[?].id", "event.uuid", "event.target"]
        );
        assert_eq!(
            reads("fn f(event, x) { event.a + x.b } fn g(e) { e.c }"),
            ["event.a"]
        );
        assert_eq!(reads("delivery.hook; event;"), ["delivery.hook"]);
    }

    #[test]
    fn stdlib_functions_are_not_linted_as_the_script() {
        let dir = tempfile::tempdir().expect("tmp");
        let stdlib = dir.path().join("stdlib");
        std::fs::create_dir(&stdlib).expect("mkdir");
        std::fs::write(stdlib.join("m.rhai"), "fn f(event) { event.notAField }\n").expect("w");
        let script = dir.path().join("s.rhai");
        std::fs::write(
            &script,
            "//! on: *\nimport \"m\" as m;\nfn g(event) { event.mine }\n",
        )
        .expect("w");
        let s = ScriptSet::load_one(&script, &stdlib, &Limits::default()).expect("loads");
        let all: Vec<String> = lint::path_reads(s.ast())
            .iter()
            .filter_map(|r| match r.segs.first() {
                Some(lint::Seg::Field { name, .. }) => Some(name.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(all, ["mine"]);
    }
}
