//! Private files and directories: what the engine keeps under its data dir (stored deliveries,
//! mail, samples, secrets) is readable by its own user only. Directories are created 0700 and
//! files 0600 whatever the umask; [`tighten`] fixes what an older engine (or a copy) left open.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Data directories: only the engine's user may list or enter them.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Data files: only the engine's user may read or write them.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents with mode 0700 (an existing directory is left as it is;
/// [`tighten`] is for those).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
}

/// Opens `path` for writing, created with mode 0600 or truncated; an existing file is made 0600.
pub fn create_file(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    restrict(&file, PRIVATE_FILE_MODE)?;
    Ok(file)
}

/// Makes sure `path` exists as a file with mode 0600, without touching its contents: for files
/// another library opens afterwards (the redb file).
pub fn ensure_file(path: &Path) -> std::io::Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    restrict(&file, PRIVATE_FILE_MODE)
}

/// `std::fs::write` with mode 0600.
pub fn write(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    create_file(path)?.write_all(contents)
}

/// Clears the group and other bits of an open file, if it has any.
fn restrict(file: &File, mode: u32) -> std::io::Result<()> {
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// What [`tighten`] changed: the path and its mode before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tightened {
    pub path: std::path::PathBuf,
    pub from: u32,
    pub to: u32,
}

impl std::fmt::Display for Tightened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({:04o} -> {:04o})",
            self.path.display(),
            self.from,
            self.to
        )
    }
}

/// If `path` is a directory or a regular file that its group or others may use, takes their
/// bits away (0755 becomes 0700, 0644 becomes 0600). Symbolic links and missing paths are left alone (a link is not
/// followed: it may point anywhere).
pub fn tighten(path: &Path) -> std::io::Result<Option<Tightened>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() && !meta.is_file() {
        return Ok(None);
    }
    let from = meta.permissions().mode() & 0o7777;
    if from & 0o077 == 0 {
        return Ok(None);
    }
    let to = from & !0o077;
    std::fs::set_permissions(path, Permissions::from_mode(to))?;
    Ok(Some(Tightened {
        path: path.to_path_buf(),
        from,
        to,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_private_and_loose_ones_tightened() {
        let base = std::env::temp_dir().join(format!("engine-private-{}", crate::util::new_uuid()));
        let dir = base.join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&base.join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        write(&file, b"x").unwrap();
        assert_eq!(mode(&file), 0o600);
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        write(&file, b"y").unwrap();
        assert_eq!(
            mode(&file),
            0o600,
            "rewriting a loose file makes it private"
        );
        std::fs::set_permissions(&file, Permissions::from_mode(0o664)).unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        let t = tighten(&file).unwrap().unwrap();
        assert_eq!((t.from, t.to), (0o664, 0o600));
        assert_eq!(tighten(&dir).unwrap().unwrap().to, 0o700);
        assert_eq!(tighten(&dir).unwrap(), None, "already private");
        assert_eq!(tighten(&base.join("missing")).unwrap(), None);
        std::fs::remove_dir_all(base).unwrap();
    }
}
