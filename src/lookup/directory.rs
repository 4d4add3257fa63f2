//! The `[directory]` file: a CSV (header row) or JSON array of users, indexed by id (exact) and
//! by login and email (case-insensitive). It is re-read when its modification time or length
//! changes, checked at most every [`DIRECTORY_CHECK_INTERVAL`]; an edit that does not parse keeps
//! the previous contents and logs the error with its line.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::{LookupError, PROFILE_FIELDS, User, user_from_json, user_from_profile};

/// free, and an edit is live within a second as for scripts.
pub const DIRECTORY_CHECK_INTERVAL: Duration = Duration::from_millis(1000);
/// Largest directory file read: it is held in memory whole; 64 MiB is ~200k users.
pub const MAX_DIRECTORY_BYTES: u64 = 64 * 1024 * 1024;

/// Users from the `[directory]` file, indexed, re-read when the file changes.
pub struct Directory {
    path: PathBuf,
    state: Mutex<DirState>,
}

struct DirState {
    index: Arc<Index>,
    /// (mtime, len) of the contents in `index`, or of the last broken version (not re-parsed).
    stamp: Option<(SystemTime, u64)>,
    last_check: Instant,
}

#[derive(Default)]
struct Index {
    users: Vec<User>,
    by_id: HashMap<String, usize>,
    /// Lower-cased login and email.
    by_name: HashMap<String, usize>,
}

impl Index {
    fn new(users: Vec<User>) -> Index {
        let mut by_id = HashMap::new();
        let mut by_name = HashMap::new();
        for (i, u) in users.iter().enumerate() {
            if !u.id.is_empty() {
                by_id.entry(u.id.clone()).or_insert(i);
            }
            for name in [&u.login, &u.email].into_iter().flatten() {
                by_name.entry(name.to_lowercase()).or_insert(i);
            }
        }
        Index {
            users,
            by_id,
            by_name,
        }
    }

    fn find(&self, key: &str) -> Option<&User> {
        self.by_id
            .get(key)
            .or_else(|| self.by_name.get(&key.to_lowercase()))
            .and_then(|&i| self.users.get(i))
    }
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("path", &self.path)
            .field("users", &self.len())
            .finish()
    }
}

impl Directory {
    /// Loads the file; a missing or broken file is a [`LookupError::Permanent`] naming the file
    /// and line (at startup this should stop the engine; later edits never do).
    pub fn load(path: impl Into<PathBuf>) -> Result<Directory, LookupError> {
        let path = path.into();
        let (users, stamp) = read_directory(&path).map_err(LookupError::Permanent)?;
        Ok(Directory {
            path,
            state: Mutex::new(DirState {
                index: Arc::new(Index::new(users)),
                stamp: Some(stamp),
                last_check: Instant::now(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of users currently loaded.
    pub fn len(&self) -> usize {
        self.current().users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The user whose id is `key`, or whose login or email is `key` ignoring case.
    pub fn find(&self, key: &str) -> Option<User> {
        self.current().find(key).cloned()
    }

    /// The current index, re-reading the file first if it changed (checked at most every
    /// [`DIRECTORY_CHECK_INTERVAL`]).
    fn current(&self) -> Arc<Index> {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if st.last_check.elapsed() >= DIRECTORY_CHECK_INTERVAL {
            st.last_check = Instant::now();
            self.refresh(&mut st);
        }
        Arc::clone(&st.index)
    }

    fn refresh(&self, st: &mut DirState) {
        let stamp = match file_stamp(&self.path) {
            Ok(s) => s,
            Err(e) => {
                if st.stamp.is_some() {
                    tracing::warn!(
                        "directory file {}: {e}; keeping the {} users loaded before",
                        self.path.display(),
                        st.index.users.len()
                    );
                    st.stamp = None;
                }
                return;
            }
        };
        if st.stamp == Some(stamp) {
            return;
        }
        st.stamp = Some(stamp);
        match read_directory(&self.path) {
            Ok((users, read_stamp)) => {
                st.stamp = Some(read_stamp);
                tracing::info!(
                    "directory file {} reloaded: {} users",
                    self.path.display(),
                    users.len()
                );
                st.index = Arc::new(Index::new(users));
            }
            Err(e) => tracing::warn!(
                "{e}; keeping the {} users loaded before",
                st.index.users.len()
            ),
        }
    }
}

fn file_stamp(path: &Path) -> Result<(SystemTime, u64), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
    Ok((mtime, meta.len()))
}

/// Reads and parses a directory file; errors name the file (and line where known).
fn read_directory(path: &Path) -> Result<(Vec<User>, (SystemTime, u64)), String> {
    let shown = path.display();
    let stamp = file_stamp(path).map_err(|e| format!("directory file {shown}: {e}"))?;
    if stamp.1 > MAX_DIRECTORY_BYTES {
        return Err(format!(
            "directory file {shown}: {} bytes is over the limit of {MAX_DIRECTORY_BYTES}",
            stamp.1
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("directory file {shown}: cannot read: {e}"))?;
    let is_json = match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("json") => true,
        Some(ext) if ext.eq_ignore_ascii_case("csv") => false,
        _ => text
            .trim_start_matches('\u{feff}')
            .trim_start()
            .starts_with('['),
    };
    let users = if is_json {
        parse_json_directory(&text)
    } else {
        parse_csv_directory(&text)
    }
    .map_err(|e| format!("directory file {shown}:{e}"))?;
    Ok((users, stamp))
}

/// Parses a JSON array of user objects. Errors start with `line: `.
pub fn parse_json_directory(text: &str) -> Result<Vec<User>, String> {
    let text = text.trim_start_matches('\u{feff}');
    let items: Vec<Value> = serde_json::from_str(text)
        .map_err(|e| format!("{}: {e} (expected a JSON array of user objects)", e.line()))?;
    let mut users = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let obj = item
            .as_object()
            .ok_or_else(|| format!("1: item {i} is not an object"))?;
        let u = user_from_json(obj).map_err(|e| format!("1: item {i}: {e}"))?;
        if u.id.is_empty() && u.login.is_none() && u.email.is_none() {
            return Err(format!("1: item {i} has none of id, login, email"));
        }
        users.push(u);
    }
    Ok(users)
}

/// Parses CSV with a header row (RFC 4180: `"` quotes, `""` inside quotes, newlines inside
/// quotes, CRLF or LF). Column names are matched exactly (`firstName`) or ignoring case and
/// `_`/`-`/spaces (`first_name`, `First Name`). Errors start with `line: `.
pub fn parse_csv_directory(text: &str) -> Result<Vec<User>, String> {
    let text = text.trim_start_matches('\u{feff}');
    let rows = parse_csv(text)?;
    let mut rows = rows.into_iter();
    let Some((_, header)) = rows.next() else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = header.iter().map(|h| canonical_column(h.trim())).collect();
    if !names
        .iter()
        .any(|n| n == "id" || n == "login" || n == "email")
    {
        return Err("1: the header row has none of the columns id, login, email".to_string());
    }
    let mut users = Vec::new();
    for (line, fields) in rows {
        if fields.len() == 1 && fields[0].trim().is_empty() {
            continue;
        }
        if fields.len() != names.len() {
            return Err(format!(
                "{line}: {} fields, but the header has {} columns",
                fields.len(),
                names.len()
            ));
        }
        let mut id = String::new();
        let mut status = None;
        let mut profile = Map::new();
        for (name, value) in names.iter().zip(fields) {
            if value.is_empty() {
                continue;
            }
            match name.as_str() {
                "id" => id = value,
                "status" => status = Some(value),
                _ => {
                    profile.insert(name.clone(), Value::String(value));
                }
            }
        }
        let u = user_from_profile(id, status, profile);
        if u.id.is_empty() && u.login.is_none() && u.email.is_none() {
            return Err(format!("{line}: the row has none of id, login, email"));
        }
        users.push(u);
    }
    Ok(users)
}

/// `first_name`, `First Name`, `FIRSTNAME` → `firstName`; other columns keep their name.
fn canonical_column(name: &str) -> String {
    let squashed: String = name
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    for known in ["id", "status"].iter().chain(PROFILE_FIELDS) {
        if known.to_lowercase() == squashed {
            return known.to_string();
        }
    }
    name.to_string()
}

/// Splits CSV text into records, each with the line it starts on (1-based).
fn parse_csv(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut start_line = 1;
    let mut in_quotes = false;
    let mut quoted_field = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !quoted_field => {
                in_quotes = true;
                quoted_field = true;
            }
            '"' => {
                return Err(format!(
                    "{line}: a `\"` inside an unquoted field (quote the whole field and double the `\"`)"
                ));
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                quoted_field = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                records.push((start_line, std::mem::take(&mut fields)));
                quoted_field = false;
                line += 1;
                start_line = line;
            }
            _ if quoted_field => {
                return Err(format!("{line}: text after the closing quote of a field"));
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(format!("{start_line}: a quoted field is never closed"));
    }
    if !field.is_empty() || !fields.is_empty() || quoted_field {
        fields.push(field);
        records.push((start_line, fields));
    }
    Ok(records)
}
