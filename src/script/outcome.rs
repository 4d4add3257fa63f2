//! What a run produced: its log lines, its actions and its error. Shared by the engine's host
//! functions (which write log lines and stop runs) and by [`super::run`] (which assembles them).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::email::Action;
use super::state::Effects;

/// Which function wrote a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Log,
    Warn,
    Print,
    Debug,
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Log => "log",
            LogLevel::Warn => "warn",
            LogLevel::Print => "print",
            LogLevel::Debug => "debug",
        })
    }
}

/// One line of a run's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// What kind of failure a run had; decides whether to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunErrorKind {
    /// A bug or bad data in the script (or a permanent host error): not retried.
    Script,
    /// The run exceeded a limit (`[limits]` or a sandbox size/depth limit): not retried.
    Limit,
    /// A host function failed transiently (Okta API down, rate limit): retry the run later.
    Transient,
    /// The script does not load (a new script that does not compile): not run; replay it once
    /// it is fixed.
    Load,
}

/// Why a run failed, with the innermost position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunError {
    pub kind: RunErrorKind,
    pub message: String,
    /// The script's name (file stem).
    pub script: String,
    /// The file `line`/`col` refer to: the script (`new-hire.rhai`) or a module
    /// (`stdlib/okta.rhai`) when the error happened inside one.
    pub file: String,
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub col: Option<usize>,
    /// The calls that led to the error, innermost first: `okta::target at new-hire.rhai:12:5`.
    pub trace: Vec<String>,
    /// What to do about it, in the script's terms (`use okta::target(event, "User")`, `did you
    /// mean to_lower?`). Absent in runs recorded by older engines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// A transient error's "retry not before" (ms since the Unix epoch), when the far side said
    /// when it will answer again (a rate limit's reset): the retry is not scheduled earlier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.col {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        for t in &self.trace {
            write!(f, "\n  in {t}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RunError {}

/// Everything a run produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutcome {
    pub log: Vec<LogLine>,
    /// What the script asked for, in order. Also filled when `result` is `Err` (for display);
    /// only a successful run's actions may be carried out.
    pub actions: Vec<Action>,
    /// What it read of and would change in its script's state and timers; like `actions`, only
    /// a successful run's are applied (with the run's record, in one transaction).
    #[serde(default)]
    pub effects: Effects,
    pub result: Result<(), RunError>,
}
