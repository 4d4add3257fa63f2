//! The event types Okta can deliver by event hook (built into the binary).

use std::sync::OnceLock;

use crate::script::pattern_matches;

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
    eligible_types().iter().any(|t| pattern_matches(pattern, t))
}

/// The eligible type closest to `pattern`, for a "did you mean".
pub fn nearest_eligible(pattern: &str) -> Option<String> {
    let all: Vec<String> = eligible_types().iter().map(|s| s.to_string()).collect();
    super::lint::nearest(pattern, &all)
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
}
