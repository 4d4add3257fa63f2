//! `engine samples [list | show TYPE | add FILE]`: the captured samples (from the store, through
//! the server while it runs) and the ones added by hand (files), and the samples `check` and
//! `tokens` read.

use std::path::Path;

use super::output::{CliError, CliResult, Exit, print_json, rows_or_json};
use super::remote;
use crate::authoring::samples::{self, Sample, dedupe, load_samples_dir};
use crate::config::Config;
use crate::store::query::{Query, SampleWithJson};
use crate::store::samples::StoredSample;
use crate::store::{CommitMode, OpenError, Store};

/// Captured samples (from the store) and added ones (files), newest first.
pub fn all_samples(config: &Config) -> Result<Vec<StoredSample>, CliError> {
    let captured: Vec<SampleWithJson> = remote::read(config, &Query::Samples)
        .map_err(CliError::failure)?
        .unwrap_or_default();
    let mut out: Vec<StoredSample> = captured
        .into_iter()
        .map(|s| StoredSample {
            json: s.json.into_bytes(),
            ..s.sample
        })
        .collect();
    out.extend(samples::added(&config.data_dir));
    Ok(out)
}

/// Samples for `check` and `tokens`: `--samples DIR` if given, plus captured and added ones,
/// each event once (an event captured and also added is one sample, named by both sources).
pub fn gather(config: &Config, dir: Option<&Path>) -> Result<Vec<Sample>, CliError> {
    let mut out = Vec::new();
    if let Some(d) = dir {
        out.extend(load_samples_dir(d).map_err(CliError::usage)?);
    }
    out.extend(samples::of_stored(
        all_samples(config).map_err(|e| CliError::usage(e.message))?,
    ));
    Ok(dedupe(out))
}

pub fn list(config: &Config, json: bool) -> CliResult {
    let samples = all_samples(config)?;
    rows_or_json(
        json,
        &samples,
        &["HOOK", "EVENT TYPE", "UUID", "SOURCE"],
        |s| {
            vec![
                s.hook.clone(),
                s.event_type.clone(),
                s.uuid.clone(),
                s.source.clone(),
            ]
        },
    );
    Ok(Exit::Ok)
}

pub fn show(config: &Config, event_type: &str) -> CliResult {
    let samples = all_samples(config)?;
    let matching: Vec<serde_json::Value> = samples
        .iter()
        .filter(|s| s.event_type == event_type)
        .filter_map(|s| serde_json::from_slice(&s.json).ok())
        .collect();
    if matching.is_empty() {
        let mut types: Vec<&str> = samples.iter().map(|s| s.event_type.as_str()).collect();
        types.sort();
        types.dedup();
        return Err(CliError::failure(format!(
            "no sample of `{event_type}`\n  hint: samples exist for: {}; add one with `engine samples add FILE`",
            if types.is_empty() {
                "(none)".to_string()
            } else {
                types.join(", ")
            }
        )));
    }
    print_json(&matching);
    Ok(Exit::Ok)
}

/// `engine samples rm ID`: removes the samples (captured or added) of the event with uuid `ID`.
pub async fn remove(config: &Config, uuid: &str) -> CliResult {
    let files = samples::remove_added(&config.data_dir, uuid).map_err(CliError::failure)?;
    let captured = remove_captured(config, uuid).await?;
    let n = files + captured;
    if n == 0 {
        return Err(CliError::failure(format!(
            "no sample of event `{uuid}`\n  hint: `engine samples` lists them with their uuids"
        )));
    }
    println!("removed {n} sample(s) of event {uuid}");
    Ok(Exit::Ok)
}

/// Removes the captured samples of `uuid`: in the store when no server holds it, else through
/// the server.
async fn remove_captured(config: &Config, uuid: &str) -> Result<usize, CliError> {
    if !config.data_dir.join(crate::store::DB_FILE).exists() {
        return Ok(0);
    }
    match Store::open_with_cache(
        &config.data_dir,
        CommitMode::Group,
        config.store_cache_bytes,
    ) {
        Ok(store) => {
            let uuid = uuid.to_string();
            let removed = store
                .write(move |txn| crate::store::samples::remove(txn, &uuid))
                .await;
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
            removed.map_err(CliError::failure)
        }
        Err(OpenError::Busy { .. }) => {
            let answer = remote::admin_post(
                config,
                "remove-sample",
                &serde_json::json!({ "uuid": uuid }),
            )
            .map_err(CliError::failure)?;
            Ok(answer["removed"].as_u64().unwrap_or(0) as usize)
        }
        Err(e) => Err(CliError::failure(e)),
    }
}

pub fn add(config: &Config, file: &Path) -> CliResult {
    let bytes = std::fs::read(file)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", file.display())))?;
    let paths = samples::add(&config.data_dir, &bytes)
        .map_err(|e| CliError::usage(format!("{}: {e}", file.display())))?;
    for p in paths {
        println!("added {}", p.display());
    }
    Ok(Exit::Ok)
}
