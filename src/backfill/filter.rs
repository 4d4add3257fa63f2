//! The System Log `filter` of a poll: the `on:` patterns of the scripts bound to the backfill
//! hook, read from the live script set at each poll (so a reload changes the next poll's
//! filter). `eventType eq "…"` per exact type, `eventType sw "…"` per `*` pattern (its prefix),
//! joined with ` or `, plus `event_hook.delivery` (Okta's record of a failed hook delivery,
//! which the poller reports). A pattern covered by another (`user.*` covers
//! `user.lifecycle.create`) is left out; a bare `*` means no filter at all.

use crate::script::{ScriptSet, pattern_matches};

/// Okta's record of an event hook delivery; with `outcome.result` other than `SUCCESS`, a
/// delivery that failed.
pub const DELIVERY_EVENT_TYPE: &str = "event_hook.delivery";

/// What the scripts bound to one hook subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriptions {
    /// The patterns, sorted, without those another one covers.
    pub patterns: Vec<String>,
}

impl Subscriptions {
    /// The patterns of every script (loaded or broken: a broken script's events get a failed
    /// run to replay once it is fixed) that receives events of `hook`.
    pub fn of(set: &ScriptSet, hook: &str) -> Subscriptions {
        let bound = |hooks: &Option<Vec<String>>| {
            hooks.as_ref().is_none_or(|h| h.iter().any(|id| id == hook))
        };
        let all: Vec<String> = set
            .scripts()
            .iter()
            .filter(|s| bound(&s.hooks))
            .flat_map(|s| s.on.iter().cloned())
            .chain(
                set.broken_scripts()
                    .iter()
                    .filter(|b| bound(&b.hooks))
                    .flat_map(|b| b.on.iter().cloned()),
            )
            .collect();
        let patterns = minimal(all);
        Subscriptions { patterns }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether a script receives `event_type`.
    pub fn matches(&self, event_type: &str) -> bool {
        self.patterns.iter().any(|p| pattern_matches(p, event_type))
    }

    /// The `filter` expression (empty: every event, for a bare `*`).
    pub fn filter(&self) -> String {
        if self.patterns.iter().any(|p| p == "*") {
            return String::new();
        }
        let mut terms: Vec<String> = self
            .patterns
            .iter()
            .map(|p| match p.strip_suffix('*') {
                Some(prefix) => format!("eventType sw {}", quoted(prefix)),
                None => format!("eventType eq {}", quoted(p)),
            })
            .collect();
        if !self.matches(DELIVERY_EVENT_TYPE) {
            terms.push(format!("eventType eq {}", quoted(DELIVERY_EVENT_TYPE)));
        }
        terms.join(" or ")
    }
}

/// The patterns sorted, each once (ignoring ASCII case, as the matcher does), without those a
/// `*` pattern covers.
fn minimal(mut all: Vec<String>) -> Vec<String> {
    all.sort_by_key(|p| p.to_ascii_lowercase());
    all.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    let covered = |p: &String| {
        all.iter()
            .any(|q| q != p && q.ends_with('*') && pattern_matches(q, p.trim_end_matches('*')))
    };
    all.iter().filter(|p| !covered(p)).cloned().collect()
}

/// A string literal of Okta's filter syntax (double quotes; `\` and `"` escaped, though event
/// types never hold them).
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(patterns: &[&str]) -> Subscriptions {
        Subscriptions {
            patterns: minimal(patterns.iter().map(|p| p.to_string()).collect()),
        }
    }

    #[test]
    fn filter_terms_per_pattern() {
        let s = subs(&["user.lifecycle.create", "group.user_membership.*"]);
        assert_eq!(
            s.filter(),
            r#"eventType sw "group.user_membership." or eventType eq "user.lifecycle.create" or eventType eq "event_hook.delivery""#
        );
        let s = subs(&["user.*", "user.lifecycle.create", "user.lifecycle.*"]);
        assert_eq!(s.patterns, ["user.*"]);
        assert_eq!(subs(&["*", "x.y"]).filter(), "");
        let s = subs(&["event_hook.*"]);
        assert_eq!(s.filter(), r#"eventType sw "event_hook.""#);
    }
}
