//! Duration literals as scripts write them (`"90s"`, `"30m"`, `"1h"`, `"7d"`, or a number of
//! seconds): the one parser behind `state::set`'s TTL, `schedule(#{ in })`, `time::add` and
//! `engine check`'s literal check.

use std::time::Duration;

use rhai::{Dynamic, INT};

/// Longest duration a script may name: ten years. A TTL or timer further out is almost surely a
/// unit mistake (`"3600d"`), and it keeps every deadline well inside `u64` milliseconds.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// The units a literal may end in, with their length in seconds.
const UNITS: [(&str, u64); 5] = [
    ("s", 1),
    ("m", 60),
    ("h", 3600),
    ("d", 86_400),
    ("w", 604_800),
];

/// The hint every duration error ends with.
pub const DURATION_HINT: &str =
    "write a number and a unit: \"90s\", \"30m\", \"1h\", \"7d\", \"2w\", or a number of seconds";

/// Parses `"90s"`, `"30m"`, `"1h"`, `"7d"`, `"2w"`, `"1h30m"` or `"3600"` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("empty duration: {DURATION_HINT}"));
    }
    if let Ok(secs) = t.parse::<u64>() {
        return bounded(Duration::from_secs(secs), text);
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("bad duration {text:?}: {DURATION_HINT}"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad duration {text:?}: {DURATION_HINT}"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        let Some((_, secs)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(if unit.is_empty() {
                format!("bad duration {text:?}: a number inside it has no unit; {DURATION_HINT}")
            } else {
                format!("bad duration {text:?}: unknown unit {unit:?}; {DURATION_HINT}")
            });
        };
        rest = rest[unit_len..].trim_start();
        total = n
            .checked_mul(*secs)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("duration {text:?} is too long (at most ten years)"))?;
    }
    bounded(Duration::from_secs(total), text)
}

fn bounded(d: Duration, text: &str) -> Result<Duration, String> {
    if d > MAX_DURATION {
        Err(format!("duration {text:?} is too long (at most ten years)"))
    } else {
        Ok(d)
    }
}

/// A duration given as a script value: a literal string, or a number of seconds (int or float).
pub fn duration_value(v: &Dynamic) -> Result<Duration, String> {
    if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        return parse_duration(&s);
    }
    if let Ok(n) = v.as_int() {
        let n: INT = n;
        if n < 0 {
            return Err(format!("negative duration {n}: {DURATION_HINT}"));
        }
        return bounded(Duration::from_secs(n as u64), &n.to_string());
    }
    if let Ok(f) = v.as_float() {
        if !f.is_finite() || f < 0.0 {
            return Err(format!("bad duration {f}: {DURATION_HINT}"));
        }
        return Duration::try_from_secs_f64(f)
            .map_err(|_| format!("duration {f} is too long (at most ten years)"))
            .and_then(|d| bounded(d, &f.to_string()));
    }
    Err(format!(
        "a duration must be a string or a number of seconds, not {}: {DURATION_HINT}",
        v.type_name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 2w "), Ok(Duration::from_secs(1_209_600)));
    }

    #[test]
    fn bad_literals_say_why() {
        for (bad, says) in [
            ("", "empty"),
            ("3 days", "unknown unit"),
            ("3x", "unknown unit \"x\""),
            ("h", "bad duration"),
            ("1h30", "no unit"),
            ("-5s", "bad duration"),
            ("99999999999d", "too long"),
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn values() {
        assert_eq!(
            duration_value(&Dynamic::from_int(5)),
            Ok(Duration::from_secs(5))
        );
        assert_eq!(
            duration_value(&Dynamic::from("2m")),
            Ok(Duration::from_secs(120))
        );
        assert!(duration_value(&Dynamic::from_int(-1)).is_err());
        assert!(duration_value(&Dynamic::UNIT).is_err());
    }
}
