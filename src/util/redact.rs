//! The one mechanism that keeps secrets out of what the engine records, logs and prints: a
//! process-wide registry of secret values, filled where secrets enter the process (every
//! `*_env` variable read by `Config::read_env`, generated hook secrets and the admin token, the
//! SMTP URL's password), and [`scrub`], which replaces each registered value in a text with
//! [`MASK`].
//!
//! Secrets reach text through far sides: an error body that echoes the `Authorization` header, a
//! proxy's page, an SMTP server quoting `AUTH`, a user profile holding a token. So scrubbing is
//! done where text leaves for good — every log line (the tracing writer), every string recorded
//! with a run or a mail, everything `engine run` and `engine check` print — not where it is made.
//!
//! Strings are scrubbed before they are serialized, never the serialized JSON, so a replacement
//! cannot break its structure; each value is also registered in its JSON-escaped and
//! percent-encoded forms, which is how it appears inside a logged JSON string or a URL.

use std::borrow::Cow;
use std::sync::RwLock;

/// What a secret is replaced with.
pub const MASK: &str = "***";
/// Shortest value registered. Shorter ones would match ordinary text everywhere (`true`, `1`,
/// an empty string would match between every character) and cannot be strong secrets; every
/// secret the engine generates is 64 characters.
pub const MIN_SECRET_LEN: usize = 4;
/// Most distinct values kept: a config has a handful of secrets; a bug registering in a loop must
/// not turn every log line into a scan of millions.
pub const MAX_SECRETS: usize = 256;

/// The registered values (and their encoded forms), longest first so that a secret containing
/// another is masked whole.
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret value: from now on [`scrub`] masks it (and its JSON-escaped and
/// percent-encoded forms). A value that is a URL with a password (`smtp://user:pw@host`) also
/// registers that password, as written and decoded: it shows alone in a server's echo. Values
/// shorter than [`MIN_SECRET_LEN`] are ignored.
pub fn register(value: &str) {
    if let Ok(url) = url::Url::parse(value)
        && let Some(raw) = url.password()
    {
        register(raw);
        if let Ok(decoded) = percent_encoding::percent_decode_str(raw).decode_utf8() {
            register(&decoded);
        }
    }
    if value.chars().count() < MIN_SECRET_LEN {
        return;
    }
    let forms = forms(value);
    let mut secrets = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    for form in forms {
        if secrets.len() < MAX_SECRETS && !secrets.contains(&form) {
            secrets.push(form);
        }
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// A value as written, JSON-escaped and percent-encoded.
fn forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_string()];
    if let Ok(json) = serde_json::to_string(value) {
        forms.push(json[1..json.len() - 1].to_string());
    }
    forms.push(
        percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
    );
    forms
}

/// Registers `new` in place of `old` (a short-lived secret replaced by its successor, such as an
/// OAuth access token): the registry keeps one entry per live secret instead of filling up to
/// [`MAX_SECRETS`] with expired ones.
pub fn replace(old: Option<&str>, new: &str) {
    if let Some(old) = old.filter(|o| *o != new) {
        let gone = forms(old);
        let mut secrets = SECRETS.write().unwrap_or_else(|p| p.into_inner());
        secrets.retain(|s| !gone.contains(s));
    }
    register(new);
}

/// `text` with every registered secret replaced by [`MASK`]; borrowed when there was none.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|p| p.into_inner());
    let mut out = Cow::Borrowed(text);
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = Cow::Owned(out.replace(s.as_str(), MASK));
        }
    }
    out
}

/// Scrubs `text` in place (allocates only when it held a secret).
pub fn scrub_in_place(text: &mut String) {
    if let Cow::Owned(clean) = scrub(text) {
        *text = clean;
    }
}

/// A [`std::io::Write`] that scrubs what it is given before passing it on. Each `write` call is
/// scrubbed on its own, so give it whole texts (the tracing formatter writes each event in one
/// call).
pub struct ScrubWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for ScrubWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => self.0.write_all(scrub(text).as_bytes())?,
            Err(_) => self
                .0
                .write_all(scrub(&String::from_utf8_lossy(buf)).as_bytes())?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_and_their_encodings_are_masked() {
        register("s3cr\"et/value+1");
        register("abc"); // too short: ignored
        let text = r#"token s3cr"et/value+1 json "s3cr\"et/value+1" url s3cr%22et%2Fvalue%2B1 abc"#;
        assert_eq!(
            scrub(text),
            r#"token *** json "***" url *** abc"#,
            "every form masked, short values left"
        );
        assert!(matches!(scrub("nothing here"), Cow::Borrowed(_)));
        let mut s = "x s3cr\"et/value+1 y".to_string();
        scrub_in_place(&mut s);
        assert_eq!(s, "x *** y");
    }

    #[test]
    fn a_url_registers_its_password() {
        register("smtp://bot:pa%24%24-w0rd-77@mail.example.com:587");
        assert_eq!(
            scrub("535 auth failed for pa$$-w0rd-77 / pa%24%24-w0rd-77"),
            "535 auth failed for *** / ***"
        );
    }

    #[test]
    fn a_secret_inside_another_is_masked_whole() {
        register("inner-secret-77");
        register("outer-inner-secret-77-tail");
        assert_eq!(scrub("a outer-inner-secret-77-tail b"), "a *** b");
    }

    #[test]
    fn a_replaced_secret_gives_its_entry_to_its_successor() {
        let count = || SECRETS.read().map(|s| s.len()).unwrap_or(0);
        replace(None, "access-token-one-123");
        let before = count();
        replace(Some("access-token-one-123"), "access-token-two-456");
        assert_eq!(count(), before, "the old token's forms were dropped");
        assert_eq!(
            scrub("a access-token-two-456 b access-token-one-123"),
            "a *** b access-token-one-123"
        );
    }
}
