//! `engine definitions [DIR]`: writes the `.d.rhai` definition files (host functions, the
//! stdlib modules, Rhai's own functions, the `event` and `delivery` maps) that the Rhai language
//! server reads, so an editor completes and documents what scripts can use. The files come from
//! `script::definitions`; this only writes them.

use std::path::{Path, PathBuf};

use super::output::{CliError, CliResult, Exit};
use crate::config::Config;
use crate::script::{DEFAULT_DEFINITIONS_DIR, definitions};

/// The folder written when none is given: `.rhai-definitions` in the project directory (the
/// parent of `scripts_dir`), next to `scripts/` and `stdlib/`.
pub fn default_dir(config: &Config) -> PathBuf {
    config
        .scripts_dir
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(DEFAULT_DEFINITIONS_DIR)
}

pub fn write(config: &Config, dir: Option<&Path>) -> CliResult {
    let dir = dir.map_or_else(|| default_dir(config), Path::to_path_buf);
    let files = definitions(&config.stdlib_dir, &config.limits).map_err(|e| {
        CliError::failure(format!(
            "cannot make the definitions: {e}\n  hint: fix the module (`engine check` shows where)"
        ))
    })?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::usage(format!("cannot create {}: {e}", dir.display())))?;
    for f in &files {
        let path = dir.join(&f.name);
        std::fs::write(&path, &f.text)
            .map_err(|e| CliError::usage(format!("cannot write {}: {e}", path.display())))?;
    }
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    println!(
        "wrote {} definition files to {}: {}",
        files.len(),
        dir.display(),
        names.join(", ")
    );
    println!(
        "point the Rhai language server at them: in Rhai.toml, `[source] include = [\"scripts/*.rhai\", \"stdlib/*.rhai\", \"{}/*.d.rhai\"]`",
        DEFAULT_DEFINITIONS_DIR
    );
    Ok(Exit::Ok)
}
