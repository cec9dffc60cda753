//! Small file-system helpers: atomic writes, relative symlinks, free space.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use provisioner_core::{Error, Result};

/// A temporary sibling name for `path`: `.<name>.<pid>.<nonce>.tmp`.
pub(crate) fn temporary_sibling(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(
        ".{name}.{}.{nanos:x}{count:x}.tmp",
        std::process::id()
    ))
}

/// Writes `bytes` to `path` through a temporary sibling and a rename (readers see all of it or
/// nothing), creating the parent directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    let temporary = temporary_sibling(path);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(Error::io("write", &temporary, error));
    }
    std::fs::rename(&temporary, path).map_err(|error| {
        let _ = std::fs::remove_file(&temporary);
        Error::io("rename", &temporary, error)
    })
}

/// Makes `link` a symlink to `target` (written as given, so relative targets stay relative),
/// replacing whatever link was there atomically.
pub(crate) fn symlink_atomically(target: &Path, link: &Path) -> Result<()> {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    if std::fs::read_link(link).is_ok_and(|current| current == target) {
        return Ok(());
    }
    let temporary = temporary_sibling(link);
    std::os::unix::fs::symlink(target, &temporary)
        .map_err(|error| Error::io("link", &temporary, error))?;
    std::fs::rename(&temporary, link).map_err(|error| {
        let _ = std::fs::remove_file(&temporary);
        Error::io("rename", &temporary, error)
    })
}

/// Bytes available to an unprivileged user on the file system holding `path` (or its nearest
/// existing ancestor), from `statvfs`; `None` when it cannot be asked.
pub fn free_space(path: &Path) -> Option<u64> {
    let mut probe = path;
    loop {
        if probe.exists() {
            let stat = nix::sys::statvfs::statvfs(probe).ok()?;
            #[allow(clippy::useless_conversion)] // the field types differ between platforms
            return Some(
                u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size())),
            );
        }
        probe = probe.parent()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a/b.json");
        write_atomically(&file, b"{}").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"{}");
        let link = dir.path().join("s/c/link");
        symlink_atomically(Path::new("../../a/b.json"), &link).unwrap();
        symlink_atomically(Path::new("../../a/b.json"), &link).unwrap();
        assert_eq!(std::fs::read(&link).unwrap(), b"{}");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from("../../a/b.json")
        );
        assert!(free_space(&dir.path().join("not/yet")).is_some_and(|free| free > 0));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }
}
