//! Diagnostics of `engine check`: stable codes, severities, and the two renderings (rustc-like
//! text for people, JSON for tools). Every code is documented in `docs/diagnostics.md`.

use std::io::Write;

use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// A diagnostic code; its text (`E0201`) never changes meaning once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    /// The script file cannot be read (I/O, too large, not UTF-8).
    E0001,
    /// The script does not compile (syntax).
    E0002,
    /// An `import` is not allowed or fails (unknown module, error inside a stdlib module).
    E0003,
    /// A variable is used that is not defined.
    E0004,
    /// A script function redefines a host function.
    E0005,
    /// The `//! on:` / `//! hook:` header is wrong.
    E0101,
    /// An `on:` event type that Okta cannot deliver by event hook.
    W0101,
    /// An `on:` event type that Okta cannot deliver by event hook, for a script bound to an okta
    /// hook: it never runs for it.
    E0102,
    /// A `hook:` id that no hook in engine.toml has.
    W0102,
    /// A field that is neither documented nor in any sample of the subscribed event types.
    E0201,
    /// A field read from an array (index it first).
    E0202,
    /// A `delivery` field that does not exist.
    E0203,
    /// A field of an undocumented object that no sample of the subscribed types has.
    W0201,
    /// A target picked by its position (`event.target[1]`): Okta's order is not stable.
    W0202,
    /// No samples for a subscribed event type: paths checked against the documentation only.
    I0201,
    /// The dry run on a sample fails with a run-time error.
    E0301,
    /// The dry run on a sample exceeds a limit.
    E0302,
    /// An `okta::` action function in a script while engine.toml has no `[okta]`.
    E0401,
    /// `http_post`/`http_request`/`http_get` names an endpoint engine.toml does not declare.
    E0402,
    /// `schedule(#{ run: "name" })` names no function of the script that takes one argument
    /// (or none).
    E0403,
    /// A literal duration that does not parse (schedule's `after`, a TTL, `time::add`'s).
    E0501,
    /// `\n` (or `\t`, `\r`) inside a back-tick string: rhai keeps it as a backslash and a
    /// letter.
    W0501,
    /// No scripts to check.
    I0001,
}

/// Every code, in documentation order.
pub const ALL_CODES: &[Code] = &[
    Code::E0001,
    Code::E0002,
    Code::E0003,
    Code::E0004,
    Code::E0005,
    Code::I0001,
    Code::E0101,
    Code::E0102,
    Code::W0101,
    Code::W0102,
    Code::E0201,
    Code::E0202,
    Code::E0203,
    Code::W0201,
    Code::W0202,
    Code::I0201,
    Code::E0301,
    Code::E0302,
    Code::E0401,
    Code::E0402,
    Code::E0403,
    Code::E0501,
    Code::W0501,
];

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::E0001 => "E0001",
            Code::E0002 => "E0002",
            Code::E0003 => "E0003",
            Code::E0004 => "E0004",
            Code::E0005 => "E0005",
            Code::I0001 => "I0001",
            Code::E0101 => "E0101",
            Code::W0101 => "W0101",
            Code::E0102 => "E0102",
            Code::W0102 => "W0102",
            Code::E0201 => "E0201",
            Code::E0202 => "E0202",
            Code::E0203 => "E0203",
            Code::W0201 => "W0201",
            Code::W0202 => "W0202",
            Code::I0201 => "I0201",
            Code::E0301 => "E0301",
            Code::E0302 => "E0302",
            Code::E0401 => "E0401",
            Code::E0402 => "E0402",
            Code::E0403 => "E0403",
            Code::E0501 => "E0501",
            Code::W0501 => "W0501",
        }
    }

    /// The severity is part of the code: `E…` errors, `W…` warnings, `I…` information.
    pub fn severity(self) -> Severity {
        match self.as_str().as_bytes().first() {
            Some(b'E') => Severity::Error,
            Some(b'W') => Severity::Warning,
            _ => Severity::Info,
        }
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One finding, with its place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    /// The file the place is in (a script, or a stdlib module), as given.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column in characters, when known.
    pub col: Option<usize>,
    /// Characters the caret underlines (at least 1).
    pub len: usize,
    /// The source line at `line`.
    pub source_line: Option<String>,
    /// Suggestions (`did you mean …`).
    pub help: Vec<String>,
    /// Context (`u is event.target[0]`, the samples a dry run failed on).
    pub notes: Vec<String>,
    /// The script the finding belongs to.
    pub script: String,
}

impl Diagnostic {
    pub fn new(code: Code, script: &str, file: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            file: file.to_string(),
            line: None,
            col: None,
            len: 1,
            source_line: None,
            help: Vec::new(),
            notes: Vec::new(),
            script: script.to_string(),
        }
    }

    /// Places the diagnostic at `line:col` of `source`, underlining `len` characters.
    pub fn at(mut self, source: &str, line: Option<usize>, col: Option<usize>, len: usize) -> Self {
        self.line = line;
        self.col = col.filter(|_| line.is_some());
        self.len = len.max(1);
        self.source_line = line.and_then(|l| {
            source
                .lines()
                .nth(l.checked_sub(1)?)
                .map(|s| s.strip_prefix('\u{feff}').unwrap_or(s).to_string())
        });
        self
    }

    pub fn help(mut self, h: impl Into<String>) -> Self {
        self.help.push(h.into());
        self
    }

    pub fn note(mut self, n: impl Into<String>) -> Self {
        self.notes.push(n.into());
        self
    }
}

/// Writes one diagnostic like rustc does.
pub fn render_human(d: &Diagnostic, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{}[{}]: {}",
        d.severity.label(),
        d.code.as_str(),
        d.message
    )?;
    let place = match (d.line, d.col) {
        (Some(l), Some(c)) => format!("{}:{l}:{c}", d.file),
        (Some(l), None) => format!("{}:{l}", d.file),
        _ => d.file.clone(),
    };
    let gutter = d.line.map_or(1, |l| l.to_string().len());
    let pad = " ".repeat(gutter);
    writeln!(out, "{pad}--> {place}")?;
    if let (Some(line), Some(text)) = (d.line, &d.source_line) {
        // Control characters would garble a terminal; one replacement char keeps the columns.
        let text: String = text
            .chars()
            .map(|c| {
                if c.is_control() && c != '\t' {
                    char::REPLACEMENT_CHARACTER
                } else {
                    c
                }
            })
            .collect();
        let text = &text;
        writeln!(out, "{pad} |")?;
        writeln!(out, "{line} | {text}")?;
        if let Some(col) = d.col {
            // Keep tabs so the caret lines up under the same characters.
            let lead: String = text
                .chars()
                .take(col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let avail = text.chars().count().saturating_sub(col.saturating_sub(1));
            let n = d.len.min(avail.max(1));
            writeln!(out, "{pad} | {lead}{}", "^".repeat(n))?;
        }
    }
    if d.source_line.is_some() && d.line.is_some() && !(d.notes.is_empty() && d.help.is_empty()) {
        writeln!(out, "{pad} |")?;
    }
    for n in &d.notes {
        writeln!(
            out,
            "{pad} = note: {}",
            n.replace('\n', &format!("\n{pad}   "))
        )?;
    }
    for h in &d.help {
        writeln!(
            out,
            "{pad} = help: {}",
            h.replace('\n', &format!("\n{pad}   "))
        )?;
    }
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_documented_once() {
        let doc = include_str!("../../../docs/diagnostics.md");
        for c in ALL_CODES {
            let row = format!("| `{}` |", c.as_str());
            assert_eq!(
                doc.matches(&row).count(),
                1,
                "{} in docs/diagnostics.md",
                c.as_str()
            );
        }
        let mut codes: Vec<&str> = ALL_CODES.iter().map(|c| c.as_str()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ALL_CODES.len());
    }

    #[test]
    fn caret_under_the_column() {
        let d = Diagnostic::new(Code::E0201, "x.rhai", "x.rhai", "unknown field")
            .at("a\n\tlet x = event.actr;\n", Some(2), Some(16), 4)
            .help("did you mean `event.actor`?");
        let mut out = Vec::new();
        render_human(&d, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("2 | \tlet x = event.actr;\n  | \t              ^^^^\n  |\n  = help"),
            "{text}"
        );
        // Odd positions never panic.
        for (line, col) in [(Some(0), Some(0)), (Some(99), Some(5)), (None, Some(3))] {
            let d = Diagnostic::new(Code::E0002, "x", "x", "m").at("", line, col, 0);
            render_human(&d, &mut Vec::new()).unwrap();
        }
    }
}
