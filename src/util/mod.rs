//! The base layer: small helpers every other layer may use (ids, clocks, timestamps), the
//! minimal HTTP client, Prometheus text, the exit codes, private files and the open-file limit.
//! Imports nothing from the crate.
//!
//! - `http_client`: a minimal HTTP/1.1 client (`engine send`, the history commands through the
//!   running server, tests and benchmarks).
//! - `prom`: Prometheus text exposition, with every label value escaped in one place.
//! - `exit`: the stable exit codes of every command.
//! - `private`: files 0600 and directories 0700 under the data dir, and tightening loose ones.
//! - `fd_limit`: raising the open-file limit at start.
//! - `redact`: the registry of secret values and the scrubbing of every text recorded, logged or
//!   printed.

pub mod exit;
pub mod fd_limit;
pub mod http_client;
pub mod private;
pub mod prom;
pub mod redact;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A random RFC 4122 version 4 UUID.
pub fn new_uuid() -> String {
    let mut b = [0u8; 16];
    fill_random(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Fills `buf` from the operating system's random source.
pub fn fill_random(buf: &mut [u8]) {
    // The OS random source failing is not recoverable and not caused by input.
    getrandom::fill(buf).expect("the operating system's random source is unavailable");
}

/// Hands the allocator's free memory back to the OS (glibc keeps freed pages in its heaps): after
/// a one-off burst of allocations, such as loading the dedup index, so that the resident size
/// shows what is in use. Elsewhere this does nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An RFC 3339 UTC timestamp with millisecond precision.
pub fn format_ms(ms: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_else(|_| ms.to_string())
}

/// Parses an RFC 3339 timestamp to nanoseconds since the epoch.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i128> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos())
}

/// Serde for a time kept as ms since the epoch: written as RFC 3339 (the one time format of the
/// JSON output), read from RFC 3339 or from a number (records written by older engines).
pub mod rfc3339_ms {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Ms(u64),
        Text(String),
    }

    fn from(e: Either) -> Result<u64, String> {
        match e {
            Either::Ms(ms) => Ok(ms),
            Either::Text(t) => super::parse_rfc3339_nanos(&t)
                .map(|n| (n / 1_000_000).max(0) as u64)
                .ok_or_else(|| format!("`{t}` is not an RFC 3339 time")),
        }
    }

    pub fn serialize<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_ms(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        from(Either::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    /// The same for an optional time (`null` when absent).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(ms: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
            match ms {
                Some(ms) => s.serialize_str(&super::super::format_ms(*ms)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
            match Option::<super::Either>::deserialize(d)? {
                Some(e) => super::from(e).map(Some).map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }
}

/// At most one log line per interval for a condition that repeats (a full disk, a far side that
/// is down), with the count of the ones left out, so a failure in a loop cannot flood the log.
pub struct Throttle {
    interval_ms: u64,
    /// When the last line was let through (ms since the epoch; 0: never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub const fn new(interval: Duration) -> Throttle {
        Throttle {
            interval_ms: interval.as_millis() as u64,
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log now (`n` occurrences were left out since the last line); `None`: stay
    /// quiet (this one is counted).
    pub fn ready(&self) -> Option<u64> {
        let now = now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.interval_ms {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last_ms
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }

    /// Forgets the last line (the condition cleared: the next occurrence is logged at once).
    pub fn reset(&self) {
        self.last_ms.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_has_v4_shape() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uuid());
    }

    #[test]
    fn times_are_written_as_rfc3339_and_read_from_either_form() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "rfc3339_ms")]
            at: u64,
            #[serde(default, with = "rfc3339_ms::option")]
            maybe: Option<u64>,
        }
        let t = T {
            at: 1_700_000_000_123,
            maybe: None,
        };
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(text, r#"{"at":"2023-11-14T22:13:20.123Z","maybe":null}"#);
        assert_eq!(serde_json::from_str::<T>(&text).unwrap(), t);
        let old: T = serde_json::from_str(r#"{"at":1700000000123,"maybe":5}"#).unwrap();
        assert_eq!((old.at, old.maybe), (1_700_000_000_123, Some(5)));
    }

    #[test]
    fn throttle_lets_one_line_through_per_interval_and_counts_the_rest() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.ready(), Some(0));
        assert_eq!(t.ready(), None);
        assert_eq!(t.ready(), None);
        t.reset();
        assert_eq!(t.ready(), Some(2));
    }

    #[test]
    fn formats_milliseconds() {
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_ms(1_700_000_000_100), "2023-11-14T22:13:20.100Z");
    }
}
