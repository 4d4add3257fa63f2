//! `engine send PAYLOAD --url URL`: does what Okta does — the verification GET, then the
//! delivery POST (a lone LogEvent is wrapped into an envelope) — and reports both answers.

use std::path::Path;

use bytes::Bytes;
use hyper::Method;

use super::output::{CliError, CliResult, Exit};
use crate::config::{Config, DEFAULT_HOOK_ID, SecretSource};
use crate::ingest::VERIFICATION_HEADER;
use crate::ingest::envelope::delivery_body;
use crate::util::http_client as client;

pub async fn send(
    config: &Config,
    payload: &Path,
    url: Option<&str>,
    headers: &[String],
) -> CliResult {
    let bytes = std::fs::read(payload)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", payload.display())))?;
    let body = delivery_body(&bytes)
        .map_err(|e| CliError::usage(format!("{}: {e}", payload.display())))?;
    let mut parsed = Vec::new();
    for h in headers {
        parsed.push(client::parse_header(h).map_err(CliError::usage)?);
    }
    let local;
    let url = match url {
        Some(u) => u,
        None => {
            let (u, header) = local_default_hook(config)?;
            parsed.push(header);
            local = u;
            local.as_str()
        }
    };
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

/// This engine's `default` hook: its URL on `listen` and its auth header with the secret (the
/// generated one in the data dir, or its `secret_env` variable). The secret is sent, never printed.
fn local_default_hook(config: &Config) -> Result<(String, (String, String)), CliError> {
    let hook = config.hook(DEFAULT_HOOK_ID).ok_or_else(|| {
        CliError::usage(format!(
            "no --url, and engine.toml has no hook `{DEFAULT_HOOK_ID}` to send to\n  hint: give the hook's URL, e.g. --url http://{}/hooks/<id> --header 'Authorization: <secret>'",
            config.listen
        ))
    })?;
    let secret = match &hook.secret {
        SecretSource::Env { var, line } => config
            .read_env(var, "hook.secret_env", *line)
            .map_err(CliError::usage)?
            .expose()
            .to_string(),
        SecretSource::Generated => {
            let path = config.generated_secret_path(&hook.id);
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(|e| {
                    CliError::usage(format!(
                        "cannot read the `{}` hook's secret {}: {e}\n  hint: start `engine serve` once (it generates the secret), or give --url and --header",
                        hook.id,
                        path.display()
                    ))
                })?
        }
    };
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok((
        format!("http://{addr}/hooks/{}", hook.id),
        (hook.auth_header.clone(), secret),
    ))
}
