//! Files at rest on the edge and the gateway: the data directory holds keys, the audit spool and
//! recordings of what engineers did on customers' nodes, so only its owner may reach it. The data
//! directory is made 0700 (refused at start when it is reachable by group or others), every
//! directory in it 0700 and every file 0600, whatever the process umask.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// Mode of every file the data plane writes.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the data directory and every directory in it.
pub const DIR_MODE: u32 = 0o700;

/// What [`open_data_dir`] would refuse, without making or changing anything: an existing `dir`
/// that is not a directory or is reachable by group or others.
pub fn check_data_dir(dir: &Path, what: &str) -> anyhow::Result<()> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading the {what} {}", dir.display())),
    };
    anyhow::ensure!(
        meta.is_dir(),
        "the {what} {} is not a directory",
        dir.display()
    );
    let mode = meta.permissions().mode() & 0o7777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the {what} {} has mode {mode:04o}: it holds keys, the audit spool and recordings, and \
         must be reachable by its owner only (chmod 700 {})",
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// Make `dir` if it is missing (0700), or check that it is reachable by its owner only; then
/// tighten what an older version left in it (directories 0700, files 0600, one level of
/// subdirectories deep). `what` names it in the error (`data_dir`).
pub fn open_data_dir(dir: &Path, what: &str) -> anyhow::Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .with_context(|| format!("creating the {what} {}", dir.display()))?;
        // `recursive` applies the mode to the last component only through the umask.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
        return Ok(());
    }
    let meta =
        std::fs::metadata(dir).with_context(|| format!("reading the {what} {}", dir.display()))?;
    anyhow::ensure!(
        meta.is_dir(),
        "the {what} {} is not a directory",
        dir.display()
    );
    let mode = meta.permissions().mode() & 0o7777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the {what} {} has mode {mode:04o}: it holds keys, the audit spool and recordings, and \
         must be reachable by its owner only (chmod 700 {})",
        dir.display(),
        dir.display()
    );
    tighten(dir, 1)
}

fn tighten(dir: &Path, depth: u32) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let path = entry.path();
        if ty.is_dir() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(DIR_MODE))?;
            if depth > 0 {
                tighten(&path, depth - 1)?;
            }
        } else if ty.is_file() {
            let mode = entry.metadata()?.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(FILE_MODE))?;
            }
        }
    }
    Ok(())
}

/// A directory inside the data directory: made 0700 when missing.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Create (or truncate) a file, 0600.
pub fn create_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Open a file for appending (and reading), made 0600 when missing.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Replace `path` with `bytes`, durably: a 0600 temporary file of its own per call, renamed over
/// it (two writers of one file at once, two tasks of this process, do not clash).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    sallyport_ca::keys::write_file_atomic(path, bytes, FILE_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writers_of_one_file_at_once_all_succeed_and_leave_one_whole_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.json");
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .map(|_| write_atomic(&path, format!("writer {i}").repeat(500).as_bytes()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for w in writers {
            for r in w.join().unwrap() {
                r.unwrap();
            }
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let first = &text[..8];
        assert_eq!(text, first.repeat(500), "one writer's whole version");
        assert_eq!(mode(&path), 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }

    #[test]
    fn a_new_data_dir_is_private_and_an_open_one_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        open_data_dir(&dir, "data_dir").unwrap();
        assert_eq!(mode(&dir), 0o700);
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = open_data_dir(&open, "data_dir").unwrap_err().to_string();
        assert!(
            err.contains("mode 0755") && err.contains("chmod 700"),
            "{err}"
        );
        // Refused means untouched.
        assert_eq!(mode(&open), 0o755);
    }

    #[test]
    fn what_an_older_version_left_is_tightened() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::create_dir(dir.join("spool")).unwrap();
        std::fs::set_permissions(dir.join("spool"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(dir.join("spool/audit.jsonl"), b"").unwrap();
        std::fs::set_permissions(
            dir.join("spool/audit.jsonl"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        open_data_dir(dir, "data_dir").unwrap();
        assert_eq!(mode(&dir.join("spool")), 0o700);
        assert_eq!(mode(&dir.join("spool/audit.jsonl")), 0o600);
        write_atomic(&dir.join("x.json"), b"{}").unwrap();
        assert_eq!(mode(&dir.join("x.json")), 0o600);
    }
}
