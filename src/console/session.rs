//! The console's logins: the one-time login token printed at startup, the sessions (an
//! HttpOnly, SameSite=Strict cookie each) and their CSRF tokens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "engine_session";
/// How long a session lasts without use: a console left open over a working day stays logged in,
/// a stolen cookie does not work for ever.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// At most this many sessions at once (the oldest goes first): logins cannot grow memory
/// without bound.
pub const MAX_SESSIONS: usize = 64;
/// Random bytes in a session id, a CSRF token and the login token (hex-encoded, twice as long).
pub const TOKEN_BYTES: usize = 32;

/// A fresh random token, hex.
pub fn random_token() -> String {
    let mut buf = [0u8; TOKEN_BYTES];
    crate::util::fill_random(&mut buf);
    hex::encode(buf)
}

struct Session {
    csrf: String,
    last_used: Instant,
}

/// The live sessions and the unused one-time login token.
pub struct Sessions {
    inner: Mutex<Inner>,
}

struct Inner {
    sessions: HashMap<String, Session>,
    login_once: Option<String>,
}

impl Sessions {
    /// Sessions with a fresh one-time login token (also returned, for the printed link).
    pub fn new() -> (Sessions, String) {
        let once = random_token();
        (
            Sessions {
                inner: Mutex::new(Inner {
                    sessions: HashMap::new(),
                    login_once: Some(once.clone()),
                }),
            },
            once,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Uses up the one-time login token when `given` is it.
    pub fn take_login_token(&self, given: &str) -> bool {
        let mut inner = self.lock();
        let matches = inner
            .login_once
            .as_ref()
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(given.as_bytes())));
        if matches {
            inner.login_once = None;
        }
        matches
    }

    /// A new session: its id (the cookie's value).
    pub fn open(&self) -> String {
        let mut inner = self.lock();
        inner
            .sessions
            .retain(|_, s| s.last_used.elapsed() < SESSION_IDLE);
        while inner.sessions.len() >= MAX_SESSIONS {
            let oldest = inner
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => inner.sessions.remove(&k),
                None => break,
            };
        }
        let id = random_token();
        inner.sessions.insert(
            id.clone(),
            Session {
                csrf: random_token(),
                last_used: Instant::now(),
            },
        );
        id
    }

    /// The CSRF token of the live session `id` (refreshing its idle time); `None`: no such
    /// session.
    pub fn csrf(&self, id: &str) -> Option<String> {
        let mut inner = self.lock();
        let live = inner
            .sessions
            .get(id)
            .is_some_and(|s| s.last_used.elapsed() < SESSION_IDLE);
        if !live {
            inner.sessions.remove(id);
            return None;
        }
        let s = inner.sessions.get_mut(id)?;
        s.last_used = Instant::now();
        Some(s.csrf.clone())
    }

    pub fn close(&self, id: &str) {
        self.lock().sessions.remove(id);
    }
}

/// Whether `given` is `expected` (constant time).
pub fn same(expected: &str, given: &str) -> bool {
    bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// The session cookie's value in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_token_works_once() {
        let (s, once) = Sessions::new();
        assert!(!s.take_login_token("nope"));
        assert!(s.take_login_token(&once));
        assert!(!s.take_login_token(&once));
    }

    #[test]
    fn sessions_are_capped_and_closable() {
        let (s, _) = Sessions::new();
        let first = s.open();
        for _ in 0..MAX_SESSIONS {
            s.open();
        }
        assert!(s.csrf(&first).is_none(), "the oldest session went first");
        let id = s.open();
        assert!(s.csrf(&id).is_some());
        s.close(&id);
        assert!(s.csrf(&id).is_none());
    }

    #[test]
    fn cookies_are_found_by_name() {
        assert_eq!(
            cookie_value("a=1; engine_session=xyz", SESSION_COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie_value("engine_sessionx=1", SESSION_COOKIE), None);
    }
}
