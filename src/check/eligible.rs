//! The event types Okta can deliver by event hook (built into the binary), and where each `on:`
//! pattern sits in a script's header.

use std::sync::OnceLock;

use crate::tokens::type_matches;

/// Okta's list of event-hook-eligible event types, one per line (copied from Okta's docs into
/// `src/check/event-hook-eligible.txt`).
const ELIGIBLE_TEXT: &str = include_str!("event-hook-eligible.txt");

/// The eligible event types.
pub fn eligible_types() -> &'static [&'static str] {
    static TYPES: OnceLock<Vec<&'static str>> = OnceLock::new();
    TYPES.get_or_init(|| {
        ELIGIBLE_TEXT
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
}

/// Whether Okta can deliver `pattern` by event hook: an exact type must be eligible; a pattern
/// with `*` must match at least one eligible type.
pub fn is_eligible(pattern: &str) -> bool {
    eligible_types().iter().any(|t| type_matches(pattern, t))
}

/// The eligible type closest to `pattern`, for a "did you mean".
pub fn nearest_eligible(pattern: &str) -> Option<String> {
    let all: Vec<String> = eligible_types().iter().map(|s| s.to_string()).collect();
    super::lint::nearest(pattern, &all)
}

/// Where each `on:` entry is written in the header: (pattern, 1-based line, 1-based column).
/// Mirrors the header grammar of `script::parse_header` (the header is the leading block of
/// blank and `//` lines; entries are comma-separated after `//! on:`).
pub fn on_positions(source: &str) -> Vec<(String, usize, usize)> {
    header_positions(source, "on")
}

/// Each `//! hook:` id with its 1-based line and column (characters), in header order.
pub fn hook_positions(source: &str) -> Vec<(String, usize, usize)> {
    header_positions(source, "hook")
}

fn header_positions(source: &str, key: &str) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for (idx, raw) in source.lines().enumerate() {
        let line = raw.strip_prefix('\u{feff}').unwrap_or(raw);
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        if !trimmed.starts_with("//") {
            break;
        }
        let Some(rest) = trimmed.strip_prefix("//!") else {
            continue;
        };
        let body = rest.trim_start();
        let Some(after_key) = body.strip_prefix(key) else {
            continue;
        };
        let Some(value) = after_key.trim_start().strip_prefix(':') else {
            continue;
        };
        // Column of `value`'s first character in `raw`, in characters.
        let value_byte = raw.len() - value.len();
        let mut col = raw[..value_byte].chars().count() + 1;
        for part in value.split(',') {
            let lead = part.chars().take_while(|c| c.is_whitespace()).count();
            let item = part.trim();
            if !item.is_empty() {
                out.push((item.to_string(), idx + 1, col + lead));
            }
            col += part.chars().count() + 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eligibility() {
        assert!(is_eligible("user.lifecycle.create"));
        assert!(is_eligible("USER.lifecycle.create"));
        assert!(is_eligible("user.lifecycle.*"));
        assert!(is_eligible("*"));
        assert!(!is_eligible("user.lifecycle.creat"));
        assert!(!is_eligible("nothing.*"));
        assert_eq!(
            nearest_eligible("user.lifecycle.creat").as_deref(),
            Some("user.lifecycle.create")
        );
        assert!(eligible_types().len() > 100);
    }

    #[test]
    fn positions() {
        let src = "// x\n//! on: a.b,  c.*\nlet x = 1;\n//! on: z\n";
        assert_eq!(
            on_positions(src),
            vec![("a.b".to_string(), 2, 9), ("c.*".to_string(), 2, 15)]
        );
    }
}
