//! Generated hook secrets: created on first start, kept with mode 0600 under the data dir. Each
//! one read or created is registered with `util::redact` (they are secrets entering the
//! process), and so is the admin token, which is made the same way.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Secret;

/// Random bytes in a generated secret (hex-encoded: 64 characters).
pub const GENERATED_SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot create the hook secret file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the hook secret file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the hook secret file {path} is empty\n  hint: delete it and restart to generate a new secret (then update the header in Okta)"
    )]
    Empty { path: PathBuf },
}

/// Registers the secret stored at `path` with `util::redact`, if there is one (nothing is
/// created): for commands that print but do not serve.
pub fn register_existing(path: &Path) {
    if let Ok(text) = std::fs::read_to_string(path) {
        crate::util::redact::register(text.trim());
    }
}

/// Returns the secret stored at `path`, generating it first if there is none.
/// The flag says whether it was generated now (so it can be shown once).
pub fn ensure(path: &Path) -> Result<(Secret, bool), SecretError> {
    let (secret, created) = ensure_file(path)?;
    crate::util::redact::register(secret.expose());
    Ok((secret, created))
}

fn ensure_file(path: &Path) -> Result<(Secret, bool), SecretError> {
    let mut bytes = [0u8; GENERATED_SECRET_BYTES];
    crate::util::fill_random(&mut bytes);
    let value = hex::encode(bytes);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            let written = f
                .write_all(format!("{value}\n").as_bytes())
                .and_then(|_| f.sync_all());
            written.map_err(|source| SecretError::Create {
                path: path.to_path_buf(),
                source,
            })?;
            Ok((Secret::new(value), true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %path.display(), "hook secret file is readable by others; chmod 600 it");
            }
            let secret = text.trim();
            if secret.is_empty() {
                return Err(SecretError::Empty {
                    path: path.to_path_buf(),
                });
            }
            Ok((Secret::new(secret.to_string()), false))
        }
        Err(source) => Err(SecretError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_with_private_mode() {
        let dir = std::env::temp_dir().join(format!("engine-secret-{}", crate::util::new_uuid()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let (a, created) = ensure(&path).unwrap();
        assert!(created);
        assert_eq!(a.expose().len(), 2 * GENERATED_SECRET_BYTES);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, created) = ensure(&path).unwrap();
        assert!(!created);
        assert_eq!(a, b);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
