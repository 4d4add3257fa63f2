//! Samples for `engine tokens` and `engine check`: the [`Sample`] type, sample directories
//! (`--samples DIR`), and the samples added by hand as files under `data_dir/samples/` (`engine
//! samples add FILE`). Captured samples live in the store (`store::samples`).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::ingest::envelope::{event_id, parse_payload};
use crate::script::{build_event_map, visible_files};
use crate::store::samples::{StoredSample, uuid_of};

/// The folder (under the data dir) of samples added by hand.
pub const SAMPLES_DIR: &str = "samples";
/// The `hook` listed for a sample added by hand (it stands for every hook).
pub const ADDED_HOOK: &str = "added";
/// `Sample::hook` of a sample that is not tied to a hook (e.g. a file from `--samples DIR`): it
/// stands for events of every hook. (Hook ids cannot contain `*`.)
pub const ANY_HOOK: &str = "*";
/// Largest sample file read: deliveries are capped at 1 MiB by default; leave ample room.
pub const MAX_SAMPLE_BYTES: u64 = 16 << 20;

/// One sample LogEvent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The hook it came in on, or [`ANY_HOOK`].
    pub hook: String,
    /// Its id as the server gives it: the `uuid`, or the envelope parser's content id.
    pub id: String,
    /// Its `eventType` (`""` when it has none).
    pub event_type: String,
    /// One LogEvent (not an envelope).
    pub json: Vec<u8>,
    /// Where it came from: the file (with `#n` for the n-th event of an envelope), or
    /// `captured on hook ID`; several, `; `-separated, when the same event came from several.
    pub source: String,
}

/// How a captured sample's source is shown.
pub fn captured_source(hook: &str) -> String {
    format!("captured on hook {hook}")
}

impl Sample {
    /// A sample of one LogEvent's JSON; reads the event type from it.
    pub fn new(hook: &str, json: Vec<u8>, source: &str) -> Sample {
        let event_type = serde_json::from_slice::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| v.get("eventType")?.as_str().map(str::to_string))
            .unwrap_or_default();
        Sample {
            hook: hook.to_string(),
            id: event_id(&json),
            event_type,
            json,
            source: source.to_string(),
        }
    }

    /// How the sample is named to people: its id (the uuid) and where it came from.
    pub fn name(&self) -> String {
        format!("{} ({})", self.id, self.source)
    }
}

/// `samples` with each event once (by id), in first-seen order: an event captured and also
/// added by hand (or in `--samples DIR`) is one sample, with both sources. Its hook is
/// [`ANY_HOOK`] when either copy stands for every hook or they name different hooks.
pub fn dedupe(samples: Vec<Sample>) -> Vec<Sample> {
    let mut out: Vec<Sample> = Vec::with_capacity(samples.len());
    for s in samples {
        match out.iter_mut().find(|o| o.id == s.id) {
            Some(kept) => {
                if kept.hook != s.hook {
                    kept.hook = ANY_HOOK.to_string();
                }
                if !kept.source.split("; ").any(|x| x == s.source) {
                    kept.source = format!("{}; {}", kept.source, s.source);
                }
            }
            None => out.push(s),
        }
    }
    out
}

/// The stored samples (captured ones and those added by hand) as `check` and `tokens` read them:
/// a captured sample for its hook, named `captured on hook …`; an added one for every hook,
/// named by its file.
pub fn of_stored(stored: Vec<StoredSample>) -> Vec<Sample> {
    stored
        .into_iter()
        .map(|s| {
            let (hook, source) = if s.hook == ADDED_HOOK {
                (ANY_HOOK.to_string(), s.source.clone())
            } else {
                (s.hook.clone(), captured_source(&s.hook))
            };
            Sample::new(&hook, s.json, &source)
        })
        .collect()
}

/// A samples directory or file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for SampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for SampleError {}

/// Reads every `*.json` file directly in `dir` (hidden files skipped), each an Okta envelope or a
/// single LogEvent, into samples ordered by event type, then file. Any unreadable or invalid file
/// is an error naming it.
pub fn load_samples_dir(dir: &Path) -> Result<Vec<Sample>, SampleError> {
    let err = |path: &Path, message: String| SampleError {
        path: path.to_path_buf(),
        message,
    };
    let files = visible_files(dir, "json")
        .map_err(|e| err(dir, format!("cannot read the samples directory: {e}")))?;
    let mut out = Vec::new();
    for file in files {
        let size = std::fs::metadata(&file)
            .map_err(|e| err(&file, format!("cannot read: {e}")))?
            .len();
        if size > MAX_SAMPLE_BYTES {
            return Err(err(
                &file,
                format!("{size} bytes, more than the {MAX_SAMPLE_BYTES} allowed for a sample"),
            ));
        }
        let bytes = std::fs::read(&file).map_err(|e| err(&file, format!("cannot read: {e}")))?;
        let payload = parse_payload(&bytes).map_err(|e| err(&file, e.to_string()))?;
        let many = payload.delivery.events.len() > 1;
        for (i, (_, json)) in payload.events().enumerate() {
            let source = if many {
                format!("{}#{}", file.display(), i + 1)
            } else {
                file.display().to_string()
            };
            let sample = Sample::new(ANY_HOOK, json.to_vec(), &source);
            if let Err(m) = build_event_map(&sample.json) {
                return Err(err(&file, m));
            }
            out.push(sample);
        }
    }
    out.sort_by(|a, b| a.event_type.cmp(&b.event_type));
    Ok(out)
}

/// Samples added by hand (files under `data_dir/samples/`).
pub fn added(data_dir: &Path) -> Vec<StoredSample> {
    let files = visible_files(&data_dir.join(SAMPLES_DIR), "json").unwrap_or_default();
    let mut out = Vec::new();
    for f in files.into_iter().rev() {
        let Ok(json) = std::fs::read(&f) else {
            continue;
        };
        let event_type = serde_json::from_slice::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| v["eventType"].as_str().map(str::to_string))
            .unwrap_or_default();
        out.push(StoredSample {
            hook: ADDED_HOOK.into(),
            event_type,
            source: f.display().to_string(),
            uuid: uuid_of(&json),
            json,
        });
    }
    out
}

/// Deletes the sample files added by hand for the event with `uuid`; returns how many.
pub fn remove_added(data_dir: &Path, uuid: &str) -> Result<usize, String> {
    let mut n = 0;
    for s in added(data_dir) {
        if s.uuid == uuid {
            std::fs::remove_file(&s.source)
                .map_err(|e| format!("cannot remove {}: {e}", s.source))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Stores each event of a payload (envelope or LogEvent) as a file under `data_dir/samples/`.
/// Returns the files written.
pub fn add(data_dir: &Path, payload: &[u8]) -> Result<Vec<PathBuf>, String> {
    let payload = parse_payload(payload).map_err(|e| e.to_string())?;
    let dir = data_dir.join(SAMPLES_DIR);
    // Samples are real events (names, emails): private like the rest of the data dir.
    crate::util::private::create_dir(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for (_, json) in payload.events() {
        let v: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("event is not JSON: {e}"))?;
        let ty = v["eventType"].as_str().unwrap_or("unknown");
        let id = v["uuid"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(crate::util::new_uuid);
        let safe = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let path = dir.join(format!("{}.{}.json", safe(ty), safe(&id)));
        crate::util::private::write(&path, json)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
