//! `engine state [SCRIPT]`, `engine state delete SCRIPT KEY` and `engine timers`: the scripts'
//! stored state and pending timers, from the file or through the running server.

use super::output::{CliError, CliResult, Exit, cut, print_json, table};
use super::remote;
use crate::config::Config;
use crate::store::kv::StateRow;
use crate::store::query::Query;
use crate::store::timers::Timer;
use crate::store::{CommitMode, OpenError, Store};

/// Characters of a value shown in the table (`--format json` gives it whole).
const VALUE_CELL_CHARS: usize = 60;

/// `engine state [SCRIPT]`.
pub fn list(config: &Config, script: Option<&str>, json: bool) -> CliResult {
    let rows: Vec<StateRow> = remote::read(
        config,
        &Query::State {
            script: script.map(str::to_string),
        },
    )
    .map_err(CliError::failure)?
    .unwrap_or_default();
    if json {
        print_json(&rows);
    } else if rows.is_empty() {
        println!(
            "no state stored{}",
            script
                .map(|s| format!(" for script `{s}`"))
                .unwrap_or_default()
        );
    } else {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.script.clone(),
                    r.key.clone(),
                    cut(&r.value.to_string(), VALUE_CELL_CHARS),
                    r.expires.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        table(&["SCRIPT", "KEY", "VALUE", "EXPIRES"], &cells);
    }
    Ok(Exit::Ok)
}

/// `engine state delete SCRIPT KEY`: in the store when no server holds it, else through it.
pub async fn delete(config: &Config, script: &str, key: &str) -> CliResult {
    let deleted = if !config.data_dir.join(crate::store::DB_FILE).exists() {
        false
    } else {
        match Store::open_with_cache(
            &config.data_dir,
            CommitMode::Group,
            config.store_cache_bytes,
        ) {
            Ok(store) => {
                let (s, k, now) = (script.to_string(), key.to_string(), crate::util::now_ms());
                let d = store
                    .write(move |txn| crate::store::kv::delete(txn, &s, &k, now))
                    .await;
                let _ = tokio::task::spawn_blocking(move || store.close()).await;
                d.map_err(CliError::failure)?
            }
            Err(OpenError::Busy { .. }) => {
                let answer = remote::admin_post(
                    config,
                    "delete-state",
                    &serde_json::json!({ "script": script, "key": key }),
                )
                .map_err(CliError::failure)?;
                answer["deleted"].as_bool().unwrap_or(false)
            }
            Err(e) => return Err(CliError::failure(e)),
        }
    };
    if !deleted {
        return Err(CliError::failure(format!(
            "script `{script}` has no key `{key}`\n  hint: `engine state {script}` lists its keys"
        )));
    }
    println!("deleted {script} {key}");
    Ok(Exit::Ok)
}

/// `engine timers`.
pub fn timers(config: &Config, limit: usize, json: bool) -> CliResult {
    let rows: Vec<Timer> = remote::read(config, &Query::Timers { limit })
        .map_err(CliError::failure)?
        .unwrap_or_default();
    if json {
        print_json(&rows);
    } else if rows.is_empty() {
        println!("no timers pending");
    } else {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|t| {
                vec![
                    t.due.clone(),
                    t.script.clone(),
                    format!(
                        "{}({})",
                        t.spec.call,
                        if t.spec.args.is_null() {
                            String::new()
                        } else {
                            cut(&t.spec.args.to_string(), 40)
                        }
                    ),
                    t.spec.key.clone().unwrap_or_else(|| "-".into()),
                    format!("run {} on {}", t.scheduled_by, t.event_uuid),
                    t.spec.id.clone(),
                ]
            })
            .collect();
        table(
            &["DUE", "SCRIPT", "CALL", "KEY", "SCHEDULED BY", "TIMER"],
            &cells,
        );
    }
    Ok(Exit::Ok)
}
