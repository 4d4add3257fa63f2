//! Parsing of a script's header comment lines (`//! on: …` and `//! hook: …`).
//!
//! The header is the block of blank lines and `//` comments at the top of the file. Inside it,
//! `//! on: a.b, c.*` (required, may repeat) lists event types and `//! hook: id1, id2`
//! (optional, may repeat) limits the script to hooks. Other `//!` lines are free description,
//! unless they look like a `key:` line with an unknown key, which is an error (a typo such as
//! `//! hooks:` must not silently widen a script to every hook).

/// The parsed header of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Event type patterns; a trailing `*` matches any suffix.
    pub on: Vec<HeaderEntry>,
    /// Hook ids the script is limited to; `None` means every hook.
    pub hooks: Option<Vec<HeaderEntry>>,
}

/// One entry of a header list, where it is written (for diagnostics that point at it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEntry {
    pub value: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

impl Header {
    /// The `on:` patterns, in header order.
    pub fn patterns(&self) -> Vec<String> {
        self.on.iter().map(|e| e.value.clone()).collect()
    }

    /// The `hook:` ids, in header order; `None` means every hook.
    pub fn hook_ids(&self) -> Option<Vec<String>> {
        self.hooks
            .as_ref()
            .map(|h| h.iter().map(|e| e.value.clone()).collect())
    }
}

/// A header problem with a 1-based line and character column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderError {
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub hint: String,
}

/// Hint shown for every header error: the correct form.
const HEADER_HINT: &str = "start the script with header lines such as\n    //! on: user.lifecycle.create, user.account.*\n    //! hook: okta-prod      (optional; default: every hook)";

/// Longest event type pattern accepted (Okta's longest type is ~70 characters).
const MAX_PATTERN_LEN: usize = 200;

fn err(line: usize, col: usize, message: impl Into<String>) -> HeaderError {
    HeaderError {
        line,
        col,
        message: message.into(),
        hint: HEADER_HINT.to_string(),
    }
}

/// Parses the header of `source`.
pub fn parse_header(source: &str) -> Result<Header, HeaderError> {
    let mut on: Vec<HeaderEntry> = Vec::new();
    let mut hooks: Option<Vec<HeaderEntry>> = None;
    let mut in_header = true;

    for (idx, raw_line) in source.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw_line.strip_prefix('\u{feff}').unwrap_or(raw_line);
        let trimmed = line.trim_start();
        let indent = line.chars().count() - trimmed.chars().count();

        if !in_header {
            // A header line after code: point at it, it is the likely mistake.
            if on.is_empty()
                && let Some(rest) = trimmed.strip_prefix("//!")
                && key_of(rest).is_some_and(|(k, _)| k.eq_ignore_ascii_case("on"))
            {
                return Err(err(
                    line_no,
                    indent + 1,
                    "the `//! on:` header must come before any code",
                ));
            }
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        if !trimmed.starts_with("//") {
            in_header = false;
            continue;
        }
        let Some(rest) = trimmed.strip_prefix("//!") else {
            // `// on: x` is an ordinary comment; say so, it is an easy slip.
            let plain = trimmed.trim_start_matches('/');
            if let Some((key, _)) = key_of(plain)
                && (key.eq_ignore_ascii_case("on") || key.eq_ignore_ascii_case("hook"))
            {
                return Err(err(
                    line_no,
                    indent + 1,
                    format!("`{key}:` header lines start with `//!`, not `//`"),
                ));
            }
            continue;
        };
        let rest_col = indent + 3 + 1; // column of the first char after `//!`
        let Some((key, value_offset)) = key_of(rest) else {
            let word = rest.split_whitespace().next().unwrap_or("");
            if word.eq_ignore_ascii_case("on") || word.eq_ignore_ascii_case("hook") {
                return Err(err(
                    line_no,
                    rest_col + leading_ws(rest),
                    format!("header `{word}` needs a colon: `//! {word}: …`"),
                ));
            }
            continue; // free description
        };
        let value = &rest[value_offset..];
        let value_col = rest_col + rest[..value_offset].chars().count();
        match key {
            "on" => on.extend(parse_list(value, value_col, line_no, check_pattern)?),
            "hook" => hooks
                .get_or_insert_with(Vec::new)
                .extend(parse_list(value, value_col, line_no, check_hook)?),
            other => {
                return Err(err(
                    line_no,
                    rest_col + leading_ws(rest),
                    format!("unknown header key `{other}` (known keys: on, hook)"),
                ));
            }
        }
    }

    if on.is_empty() {
        return Err(err(1, 1, "missing `//! on:` header naming the event types"));
    }
    Ok(Header { on, hooks })
}

fn leading_ws(s: &str) -> usize {
    s.chars().take_while(|c| c.is_whitespace()).count()
}

/// If `rest` reads `  word: value`, returns the word and the byte offset just after the colon.
fn key_of(rest: &str) -> Option<(&str, usize)> {
    let start = rest.len() - rest.trim_start().len();
    let body = &rest[start..];
    let word_len = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(body.len());
    if word_len == 0 {
        return None;
    }
    let after = &body[word_len..];
    let after_trim = after.trim_start();
    if !after_trim.starts_with(':') {
        return None;
    }
    let colon_at = start + word_len + (after.len() - after_trim.len());
    Some((&body[..word_len], colon_at + 1))
}

type Check = fn(&str) -> Result<(), String>;

fn parse_list(
    value: &str,
    value_col: usize,
    line: usize,
    check: Check,
) -> Result<Vec<HeaderEntry>, HeaderError> {
    let mut out = Vec::new();
    let mut col = value_col;
    let mut any = false;
    for part in value.split(',') {
        let item = part.trim();
        let item_col = col + leading_ws(part);
        col += part.chars().count() + 1;
        if item.is_empty() {
            if any || !value.trim().is_empty() {
                return Err(err(line, item_col, "empty entry in the list"));
            }
            continue;
        }
        any = true;
        if let Err(message) = check(item) {
            return Err(err(line, item_col, message));
        }
        out.push(HeaderEntry {
            value: item.to_string(),
            line,
            col: item_col,
        });
    }
    if out.is_empty() {
        return Err(err(line, value_col, "the list is empty"));
    }
    Ok(out)
}

fn check_pattern(p: &str) -> Result<(), String> {
    if p.len() > MAX_PATTERN_LEN {
        return Err(format!(
            "event type pattern longer than {MAX_PATTERN_LEN} characters"
        ));
    }
    let body = p.strip_suffix('*').unwrap_or(p);
    if body.contains('*') {
        return Err(format!(
            "`{p}`: `*` is allowed only at the end (it matches any suffix)"
        ));
    }
    if let Some(bad) = body
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{p}`: unexpected character {bad:?} in an event type (e.g. `user.lifecycle.create`)"
        ));
    }
    Ok(())
}

fn check_hook(h: &str) -> Result<(), String> {
    if let Some(bad) = h
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!("`{h}`: unexpected character {bad:?} in a hook id"));
    }
    Ok(())
}

/// Whether `pattern` (from `on:`) matches `event_type`; ASCII case-insensitive. The one matcher
/// of event-type patterns (scripts, `check`, `tokens --event-type`).
pub fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => {
            event_type.len() >= prefix.len()
                && event_type.is_char_boundary(prefix.len())
                && event_type[..prefix.len()].eq_ignore_ascii_case(prefix)
        }
        None => pattern.eq_ignore_ascii_case(event_type),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_positions() {
        let h = parse_header("//! on: a.b, c.*\n//! hook: x\nlet a = 1;\n").unwrap();
        assert_eq!(h.patterns(), vec!["a.b", "c.*"]);
        assert_eq!(h.hook_ids(), Some(vec!["x".to_string()]));
        // Entries keep where they are written (the test `check` relied on).
        let h = parse_header("// x\n//! on: a.b,  c.*\nlet x = 1;\n").unwrap();
        let at: Vec<(&str, usize, usize)> =
            h.on.iter()
                .map(|e| (e.value.as_str(), e.line, e.col))
                .collect();
        assert_eq!(at, [("a.b", 2, 9), ("c.*", 2, 15)]);
        let e = parse_header("//! on: a.b, c*d\n").unwrap_err();
        assert_eq!((e.line, e.col), (1, 14));
        let e = parse_header("//! hooks: x\n//! on: a\n").unwrap_err();
        assert_eq!((e.line, e.col), (1, 5));
        assert!(pattern_matches("user.*", "user.lifecycle.create"));
        assert!(pattern_matches("*", "x"));
        assert!(pattern_matches(
            "user.authentication.auth_via_idp",
            "user.authentication.auth_via_IDP"
        ));
        assert!(!pattern_matches("user.lifecycle", "user.lifecycle.create"));
    }
}
