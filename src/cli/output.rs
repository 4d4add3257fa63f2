//! The one output layer of the CLI: tables and JSON on stdout, one error type with its exit
//! code, printed as one `error:` line (plus its hint) on stderr.

use std::fmt::Display;
use std::io::Write;

use serde::Serialize;

pub use crate::util::exit::Exit;

/// Why a command stopped: the message (with its hint lines) and the exit code it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

impl CliError {
    /// A usage or configuration error (exit 2): nothing was done.
    pub fn usage(message: impl Display) -> CliError {
        CliError {
            exit: Exit::Usage,
            message: message.to_string(),
        }
    }

    /// The command ran and failed (exit 1).
    pub fn failure(message: impl Display) -> CliError {
        CliError {
            exit: Exit::Failure,
            message: message.to_string(),
        }
    }

    /// Prints the error and gives its exit code.
    pub fn report(&self) -> Exit {
        eprintln!("error: {}", crate::util::redact::scrub(&self.message));
        self.exit
    }
}

/// What a command returns.
pub type CliResult = Result<Exit, CliError>;

/// Characters of an error shown in a table cell (the JSON has all of it).
pub const ERROR_CELL_CHARS: usize = 80;

/// Writes rows under a header, columns padded to their widest cell.
pub fn print_table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) {
    if rows.is_empty() {
        let _ = writeln!(out, "(none)");
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// Prints a table on stdout.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    print_table(&mut std::io::stdout().lock(), header, rows);
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Rows as a table, or the records as JSON.
pub fn rows_or_json<T: Serialize>(
    json: bool,
    records: &[T],
    header: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) {
    if json {
        print_json(&records);
    } else {
        let rows: Vec<Vec<String>> = records.iter().map(row).collect();
        table(header, &rows);
    }
}

/// The first line of `s`, cut to `n` characters with `…` when anything was left out.
pub fn cut(s: &str, n: usize) -> String {
    let first = s.lines().next().unwrap_or_default();
    if first.chars().count() > n || s.lines().count() > 1 {
        format!("{}…", first.chars().take(n).collect::<String>())
    } else {
        first.to_string()
    }
}
