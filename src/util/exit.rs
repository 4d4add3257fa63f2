//! The exit codes of every `engine` command: stable, documented in `--help` and SPEC.

use serde::Serialize;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "u8")]
pub enum Exit {
    /// It did what was asked and found nothing wrong.
    Ok,
    /// It ran and found a failure (a failed run, a refused delivery, findings of `check`).
    Failure,
    /// Usage or configuration error: nothing was done.
    Usage,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
        }
    }
}

impl From<Exit> for u8 {
    fn from(e: Exit) -> u8 {
        e.code()
    }
}
