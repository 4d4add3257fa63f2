//! The "now" of a dry run (`engine run`, `engine check`): fixed and shown, so that a script
//! reading `now()`, `time::since` or scheduling a timer gives the same output every time.

use std::sync::Arc;
use std::time::Instant;

use crate::script::{
    EndpointInfo, GroupRef, Host, HostError, HttpAnswer, HttpRequest, OktaGroup, StateValue, User,
};
use crate::util::{format_ms, parse_rfc3339_nanos};

/// The "now" when neither `--now` nor the event gives one (an event without `published`):
/// a fixed instant, so the output is still stable.
pub const FALLBACK_NOW_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// What a dry run takes "now" to be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DryNow {
    /// `--now`: this instant (ms since the Unix epoch) for every event.
    Fixed(u64),
    /// The default: each event's `published` time, as if the run happened when Okta
    /// published it ([`FALLBACK_NOW_MS`] without one).
    #[default]
    EventTime,
}

impl DryNow {
    /// Parses `--now`: an RFC 3339 time (`2026-12-05T09:00:00Z`).
    pub fn parse(text: &str) -> Result<DryNow, String> {
        let nanos = parse_rfc3339_nanos(text.trim()).ok_or_else(|| {
            format!("--now {text:?}: not an RFC 3339 time; write e.g. 2026-12-05T09:00:00Z")
        })?;
        let ms =
            u64::try_from(nanos / 1_000_000).map_err(|_| format!("--now {text:?}: before 1970"))?;
        Ok(DryNow::Fixed(ms))
    }

    /// `--now` when given, else each event's time.
    pub fn from_arg(arg: Option<&str>) -> Result<DryNow, String> {
        arg.map_or(Ok(DryNow::EventTime), DryNow::parse)
    }

    /// The instant for an event (its JSON as delivered).
    pub fn for_event(self, event_json: &[u8]) -> u64 {
        match self {
            DryNow::Fixed(ms) => ms,
            DryNow::EventTime => published_ms(event_json).unwrap_or(FALLBACK_NOW_MS),
        }
    }

    /// How `engine check`'s report says what "now" is.
    pub fn describe(self) -> String {
        match self {
            DryNow::Fixed(ms) => format!("now = {}, from --now", format_ms(ms)),
            DryNow::EventTime => "now = each event's published time; --now sets another".into(),
        }
    }

    /// Where one run's "now" came from, after its time (`engine run`).
    pub fn source(self) -> &'static str {
        match self {
            DryNow::Fixed(_) => "from --now",
            DryNow::EventTime => "the event's published time; --now sets another",
        }
    }
}

/// An event's `published` time, ms since the Unix epoch.
fn published_ms(event_json: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Published<'a> {
        #[serde(borrow)]
        published: Option<std::borrow::Cow<'a, str>>,
    }
    let p: Published = serde_json::from_slice(event_json).ok()?;
    let nanos = parse_rfc3339_nanos(&p.published?)?;
    u64::try_from(nanos / 1_000_000).ok()
}

/// A host whose "now" is fixed; everything else is the wrapped host's.
pub struct FixedNow {
    inner: Arc<dyn Host>,
    now_ms: u64,
}

impl FixedNow {
    pub fn wrap(inner: &Arc<dyn Host>, now_ms: u64) -> Arc<dyn Host> {
        Arc::new(FixedNow {
            inner: inner.clone(),
            now_ms,
        })
    }
}

impl Host for FixedNow {
    fn lookup_user(&self, key: &str, deadline: Option<Instant>) -> Result<Option<User>, HostError> {
        self.inner.lookup_user(key, deadline)
    }

    fn okta_user_groups(
        &self,
        user: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<OktaGroup>, HostError> {
        self.inner.okta_user_groups(user, deadline)
    }

    fn okta_get_group(
        &self,
        group: &GroupRef,
        deadline: Option<Instant>,
    ) -> Result<Option<OktaGroup>, HostError> {
        self.inner.okta_get_group(group, deadline)
    }

    fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn state_get(&self, script: &str, key: &str) -> Result<Option<StateValue>, HostError> {
        self.inner.state_get(script, key)
    }

    fn timer_pending(&self, script: &str, key: &str) -> Result<bool, HostError> {
        self.inner.timer_pending(script, key)
    }

    fn endpoint(&self, name: &str) -> Option<EndpointInfo> {
        self.inner.endpoint(name)
    }

    fn endpoint_names(&self) -> Vec<String> {
        self.inner.endpoint_names()
    }

    fn http_get(
        &self,
        request: &HttpRequest,
        deadline: Option<Instant>,
    ) -> Result<HttpAnswer, HostError> {
        self.inner.http_get(request, deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_the_events_published_time_unless_given() {
        let json = br#"{"uuid":"u","published":"2024-05-01T10:00:00.000Z"}"#;
        assert_eq!(
            format_ms(DryNow::EventTime.for_event(json)),
            "2024-05-01T10:00:00.000Z"
        );
        assert_eq!(DryNow::EventTime.for_event(b"{}"), FALLBACK_NOW_MS);
        assert_eq!(format_ms(FALLBACK_NOW_MS), "2026-01-01T00:00:00.000Z");
        let fixed = DryNow::parse("2026-12-05T09:00:00+01:00").unwrap();
        assert_eq!(format_ms(fixed.for_event(json)), "2026-12-05T08:00:00.000Z");
        let err = DryNow::parse("tomorrow").unwrap_err();
        assert!(
            err.contains("RFC 3339") && err.contains("tomorrow"),
            "{err}"
        );
    }

    #[test]
    fn the_wrapper_forwards_everything_but_now() {
        let inner: Arc<dyn Host> = Arc::new(crate::script::NoDirectory);
        let h = FixedNow::wrap(&inner, 42);
        assert_eq!(h.now_ms(), 42);
        assert_eq!(h.lookup_user("x", None), Ok(None));
        assert_eq!(h.state_get("s", "k"), Ok(None));
        assert!(h.endpoint_names().is_empty());
    }
}
