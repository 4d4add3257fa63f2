//! `engine send PAYLOAD --url URL`: does what Okta does — the verification GET, then the
//! delivery POST (a lone LogEvent is wrapped into an envelope) — and reports both answers.

use std::path::Path;

use bytes::Bytes;
use hyper::Method;

use super::output::{CliError, CliResult, Exit};
use crate::ingest::VERIFICATION_HEADER;
use crate::ingest::envelope::delivery_body;
use crate::util::http_client as client;

pub async fn send(payload: &Path, url: &str, headers: &[String]) -> CliResult {
    let bytes = std::fs::read(payload)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", payload.display())))?;
    let body = delivery_body(&bytes)
        .map_err(|e| CliError::usage(format!("{}: {e}", payload.display())))?;
    let mut parsed = Vec::new();
    for h in headers {
        parsed.push(client::parse_header(h).map_err(CliError::usage)?);
    }
    let challenge = format!("engine-send-{}", crate::util::new_uuid());
    let mut get_headers = parsed.clone();
    get_headers.push((VERIFICATION_HEADER.to_string(), challenge.clone()));
    let mut ok = true;
    match client::request(Method::GET, url, &get_headers, Bytes::new()).await {
        Ok(a) => {
            let echoed = serde_json::from_slice::<serde_json::Value>(&a.body)
                .ok()
                .and_then(|v| {
                    v.get("verification")
                        .and_then(|c| c.as_str())
                        .map(|c| c == challenge)
                })
                .unwrap_or(false);
            let verdict = if a.status == 200 && echoed {
                "challenge echoed: Okta would verify this hook"
            } else {
                ok = false;
                "Okta would NOT verify this hook"
            };
            println!(
                "verification GET: {} ({verdict}) {}",
                a.status,
                a.text().trim()
            );
        }
        Err(e) => return Err(CliError::failure(format!("verification GET failed: {e}"))),
    }
    match client::request(Method::POST, url, &parsed, body).await {
        Ok(a) => {
            let verdict = if (200..300).contains(&a.status) {
                "accepted"
            } else {
                ok = false;
                "refused"
            };
            let text = a.text();
            if text.trim().is_empty() {
                println!("delivery POST: {} ({verdict})", a.status);
            } else {
                println!("delivery POST: {} ({verdict}) {}", a.status, text.trim());
            }
        }
        Err(e) => return Err(CliError::failure(format!("delivery POST failed: {e}"))),
    }
    Ok(if ok { Exit::Ok } else { Exit::Failure })
}
