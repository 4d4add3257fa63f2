//! The history commands' reads: from the store file when no server holds it, else through the
//! running server's admin endpoint (`POST /admin/read` on `console_listen`), which runs the same
//! [`query::answer`] — so a command prints the same thing whichever path served it.

use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde::de::DeserializeOwned;

use crate::app::{CONSOLE_ADDRESS_FILE, loopback_if_unspecified};
use crate::config::Config;
use crate::ingest::{ADMIN_TOKEN_FILE, ADMIN_TOKEN_HEADER};
use crate::store::query::{self, Query};
use crate::store::{History, OpenError};

/// How long a command waits for the running server's answer.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `query` on the store of `config`: here when no server holds it, else through the server.
/// `Ok(None)`: there is no store yet.
pub fn read<T: DeserializeOwned>(config: &Config, query: &Query) -> Result<Option<T>, String> {
    let value = match History::open(&config.data_dir) {
        Ok(Some(h)) => query::answer(&h, query).map_err(|e| e.to_string())?,
        Ok(None) => return Ok(None),
        Err(OpenError::Busy { .. }) => ask_server(config, query)?,
        Err(e) => return Err(e.to_string()),
    };
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| format!("unexpected answer: {e}"))
}

/// The running server's loopback address and admin token.
pub fn admin_target(config: &Config) -> Result<(std::net::SocketAddr, String), String> {
    let token = std::fs::read_to_string(config.data_dir.join(ADMIN_TOKEN_FILE))
        .map(|t| t.trim().to_string())
        .inspect(|t| crate::util::redact::register(t))
        .map_err(|e| {
            format!(
                "the store is in use by another process (a running `engine serve`?), and its admin token cannot be read ({e})\n  hint: run as the user that runs `engine serve`; if another engine command is using the store, try again when it has finished"
            )
        })?;
    // The address the running server recorded (its bound port), else the configured one.
    let recorded = std::fs::read_to_string(config.data_dir.join(CONSOLE_ADDRESS_FILE))
        .ok()
        .and_then(|a| a.trim().parse::<std::net::SocketAddr>().ok());
    let Some(addr) = recorded.or(config.console_listen) else {
        return Err(
            "the store is in use by a running `engine serve`, and its admin API is off (`console_listen = \"\"`)\n  hint: stop the server, or set `console_listen` in engine.toml and restart it".to_string(),
        );
    };
    let addr = loopback_if_unspecified(addr);
    Ok((addr, token))
}

/// `POST /admin/read` on the running server. Runs on a thread of its own so that it works from
/// synchronous commands inside the CLI's runtime.
fn ask_server(config: &Config, query: &Query) -> Result<serde_json::Value, String> {
    admin_post(
        config,
        "read",
        &serde_json::to_value(query).map_err(|e| e.to_string())?,
    )
}

/// `POST /admin/<action>` with `body` on the running server; its JSON answer.
pub fn admin_post(
    config: &Config,
    action: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    admin_post_within(config, action, body, READ_TIMEOUT)
}

/// [`admin_post`] for a request that may take the server up to `wait` (a backfill pass).
pub fn admin_post_within(
    config: &Config,
    action: &str,
    body: &serde_json::Value,
    wait: Duration,
) -> Result<serde_json::Value, String> {
    let (addr, token) = admin_target(config)?;
    let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let url = format!("http://{addr}/admin/{action}");
    let headers = vec![(ADMIN_TOKEN_HEADER.to_string(), token)];
    // Outer error: no answer in time (or no runtime); inner: the server could not be reached.
    let outcome = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            match tokio::time::timeout(
                wait,
                crate::util::http_client::request(Method::POST, &url, &headers, Bytes::from(body)),
            )
            .await
            {
                Ok(answer) => Ok(answer.map_err(|e| e.to_string())),
                Err(_) => Err(format!(
                    "the server gave no answer within {} s; it goes on with the request: see its log and /metrics",
                    wait.as_secs()
                )),
            }
        })
    })
    .join()
    .map_err(|_| "the request thread panicked".to_string())?;
    let answer = outcome?.map_err(|e| {
        format!(
            "the store is in use by another process, and no server answers at {addr}: {e}\n  hint: if another engine command is using it, try again when it has finished"
        )
    })?;
    let value: serde_json::Value = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("the server's answer is not JSON: {e}"))?;
    if answer.status != 200 {
        return Err(value["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| answer.text()));
    }
    Ok(value)
}
