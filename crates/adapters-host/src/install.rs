//! The install transaction every provisioning mode uses (source builds, binary downloads, ...).
//!
//! An install root holds finished installs under `<root>/<bucket>/<key>`, each committed by its
//! `metadata.json`. An install runs at most once at a time per key across processes (a
//! [`FileLock`] under `<root>/locks`), is built in a private staging directory under
//! `<root>/.staging` on the same file system, and becomes visible with one `rename`. The metadata
//! file is written last, so a directory without it is a half-finished install and is rebuilt.
//!
//! Failures and cancellation remove the staging directory; a later install also cleans up after
//! a provisioner that was killed outright, including the build processes it left running.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use provisioner_core::{Error, Progress, ProgressEvent, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::lock::FileLock;
use crate::process::{Signal, group_alive, group_works_in, kill_group};

/// Name of the commit marker inside a final directory.
const METADATA_FILE: &str = "metadata.json";
/// Name of the file in a staging directory that records the build's process group.
const GROUP_FILE: &str = "process-group";
/// How long to wait for an orphaned build group to die after SIGKILL.
const ORPHAN_GRACE: Duration = Duration::from_secs(5);
/// The cache directory tag (<https://bford.info/cachedir/>), so backup tools skip the cache.
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by engine-provisioner.\n\
# For information about cache directory tags, see https://bford.info/cachedir/\n";

/// A directory of installs, each under a key, with one transaction to add them.
#[derive(Clone)]
pub struct InstallRoot {
    root: PathBuf,
    bucket: String,
    progress: Arc<dyn Progress>,
}

impl std::fmt::Debug for InstallRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallRoot")
            .field("root", &self.root)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// The private directories an install is built in; handed to the install's work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staging {
    /// `<root>/.staging/<key>.<pid>.<nonce>`, removed when the install ends either way.
    pub dir: PathBuf,
    /// Scratch space (`dir/work`), e.g. a source checkout and its build tree.
    pub work: PathBuf,
    /// What becomes the final directory (`dir/out`).
    pub out: PathBuf,
    /// Where commands record their process group (`dir/process-group`); pass it as
    /// `CommandSpec::group_file` so that an orphaned build can be killed later.
    pub group_file: PathBuf,
}

/// A finished install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed<M> {
    /// The final directory.
    pub dir: PathBuf,
    /// What the work returned, as stored in `metadata.json`.
    pub metadata: M,
    /// The `metadata.json` file.
    pub metadata_file: PathBuf,
    /// Whether this call built it (`false`: it was already installed).
    pub fresh: bool,
}

impl InstallRoot {
    /// An install root whose finished installs live under `<root>/<bucket>/<key>`; the bucket
    /// names the layout version, e.g. `builds-v1`.
    pub fn new(root: impl Into<PathBuf>, bucket: &str, progress: Arc<dyn Progress>) -> Self {
        InstallRoot {
            root: root.into(),
            bucket: bucket.to_string(),
            progress,
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the install for `key` lives once finished.
    pub fn final_dir(&self, key: &str) -> PathBuf {
        self.root.join(&self.bucket).join(key)
    }

    /// The log for `key`'s install, outside staging so that it survives failures.
    pub fn log_file(&self, key: &str) -> PathBuf {
        self.root.join("logs").join(format!("{key}.log"))
    }

    /// The warm path: no lock and no process. Returns the install only if its `metadata.json`
    /// exists, parses as `M` and `is_valid` accepts it.
    pub fn lookup<M: DeserializeOwned>(
        &self,
        key: &str,
        is_valid: &dyn Fn(&Installed<M>) -> bool,
    ) -> Option<Installed<M>> {
        check_key(key).ok()?;
        let dir = self.final_dir(key);
        let metadata_file = dir.join(METADATA_FILE);
        let text = match crate::read::read_capped_bytes(&metadata_file, crate::read::MAX_STATE) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!(path = %metadata_file.display(), %error, "ignoring unreadable install metadata");
                return None;
            }
        };
        let metadata = match serde_json::from_slice(&text) {
            Ok(metadata) => metadata,
            Err(error) => {
                tracing::warn!(path = %metadata_file.display(), %error, "ignoring unreadable install metadata");
                return None;
            }
        };
        let installed = Installed {
            dir,
            metadata,
            metadata_file,
            fresh: false,
        };
        if !is_valid(&installed) {
            return None;
        }
        self.sweep_dead_staging(key);
        Some(installed)
    }

    /// Removes what an install of `key` killed after its commit (metadata written, staging not
    /// yet removed) left in `.staging/`: directories of `key` whose process is gone. Called on
    /// the warm path, so a crash in the last window leaves nothing for long; a live process's
    /// directory is never touched. Failures are traced, never returned.
    fn sweep_dead_staging(&self, key: &str) {
        let staging_root = self.root.join(".staging");
        let Ok(entries) = std::fs::read_dir(&staging_root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|name| is_staging_of(name, key)) else {
                continue;
            };
            let pid = name[key.len() + 1..]
                .split('.')
                .next()
                .and_then(|pid| pid.parse::<u32>().ok());
            let alive = pid.is_some_and(|pid| {
                pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
            });
            if alive {
                continue;
            }
            let path = entry.path();
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed the staging directory of a finished install that was interrupted")
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot remove a stale staging directory")
                }
            }
        }
    }

    /// Installs `key` unless a valid install exists: lock, re-check, clean up stale staging, build
    /// with `work` in a fresh staging directory, rename its `out` into place and commit by writing
    /// the metadata. Dropping the returned future removes the staging directory.
    pub async fn install<M, F, Fut>(
        &self,
        key: &str,
        is_valid: &(dyn Fn(&Installed<M>) -> bool + Sync),
        work: F,
    ) -> Result<Installed<M>>
    where
        M: Serialize + DeserializeOwned + Send,
        F: FnOnce(Staging) -> Fut + Send,
        Fut: Future<Output = Result<M>> + Send,
    {
        check_key(key).map_err(|message| Error::data("install", self.final_dir(key), message))?;
        create_dir(&self.root)?;
        self.write_cachedir_tag()?;

        let lock_path = self.root.join("locks").join(format!("{key}.lock"));
        let progress = self.progress.clone();
        let _lock = FileLock::acquire(&lock_path, || {
            progress.report(ProgressEvent::Note {
                message: format!("waiting for another process preparing the same build ({key})"),
            });
        })
        .await?;

        // Another process may have finished the install while this one waited for the lock.
        if let Some(installed) = self.lookup(key, is_valid) {
            return Ok(installed);
        }

        let staging_root = self.root.join(".staging");
        self.remove_stale_staging(&staging_root, key).await?;
        let final_dir = self.final_dir(key);
        if final_dir.symlink_metadata().is_ok() {
            tracing::info!(path = %final_dir.display(), "removing an install without valid metadata");
            remove_tree(final_dir.clone()).await?;
        }

        let dir = staging_root.join(format!("{key}.{}.{}", std::process::id(), nonce()));
        let staging = Staging {
            work: dir.join("work"),
            out: dir.join("out"),
            group_file: dir.join(GROUP_FILE),
            dir: dir.clone(),
        };
        // Armed before the directory exists, so that a partial creation is cleaned up as well.
        let mut guard = StagingGuard {
            dir: Some(dir.clone()),
        };
        create_dir(&staging.work)?;
        create_dir(&staging.out)?;
        let out = staging.out.clone();

        let result = work(staging).await;
        let metadata = match result {
            Ok(metadata) => metadata,
            Err(error) => {
                guard.disarm();
                if let Err(cleanup) = remove_tree(dir).await {
                    tracing::warn!(%cleanup, "cannot remove the staging directory of a failed install");
                }
                return Err(error);
            }
        };

        if let Some(parent) = final_dir.parent() {
            create_dir(parent)?;
        }
        std::fs::rename(&out, &final_dir).map_err(|e| Error::io("rename", &out, e))?;
        let metadata_file = final_dir.join(METADATA_FILE);
        write_metadata(&metadata_file, &metadata)?;

        guard.disarm();
        if let Err(cleanup) = remove_tree(dir).await {
            tracing::warn!(%cleanup, "cannot remove the staging directory of a finished install");
        }
        Ok(Installed {
            dir: final_dir,
            metadata,
            metadata_file,
            fresh: true,
        })
    }

    /// Kills the live build group recorded in a stale staging directory and waits briefly until
    /// it is gone. A group that does not work in that directory got its id by reuse and is left
    /// alone.
    async fn stop_orphan(&self, key: &str, pgid: u32, stale: &Path) {
        if !group_works_in(pgid, stale) {
            tracing::warn!(pgid, path = %stale.display(), "the recorded process group is alive but not working here; leaving it alone");
            return;
        }
        self.progress.report(ProgressEvent::Note {
            message: format!("stopping an orphaned build of {key} (process group {pgid})"),
        });
        kill_group(pgid, Signal::SIGKILL);
        let deadline = Instant::now() + ORPHAN_GRACE;
        while group_alive(pgid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if group_alive(pgid) {
            tracing::warn!(pgid, "an orphaned build group survived SIGKILL");
        }
    }

    fn write_cachedir_tag(&self) -> Result<()> {
        let tag = self.root.join("CACHEDIR.TAG");
        if tag.exists() {
            return Ok(());
        }
        write_atomically(&tag, CACHEDIR_TAG.as_bytes())
    }

    /// Removes staging directories of `key` left by earlier runs, killing their build first.
    /// Only runs under the key's lock, so every such directory belongs to a dead install.
    async fn remove_stale_staging(&self, staging_root: &Path, key: &str) -> Result<()> {
        let entries = match std::fs::read_dir(staging_root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(Error::io("read", staging_root, error)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read", staging_root, e))?;
            let name = entry.file_name();
            if !name.to_str().is_some_and(|name| is_staging_of(name, key)) {
                continue;
            }
            let stale = entry.path();
            if let Some(pgid) = read_group(&stale.join(GROUP_FILE))
                && group_alive(pgid)
            {
                self.stop_orphan(key, pgid, &stale).await;
            }
            tracing::info!(path = %stale.display(), "removing stale staging directory");
            remove_tree(stale).await?;
        }
        Ok(())
    }
}

/// Keys become path components: they must be plain names.
fn check_key(key: &str) -> std::result::Result<(), String> {
    let plain = !key.is_empty()
        && !key.starts_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "install key `{key}` must be a plain name (letters, digits, `-_.+`, not starting with `.`)"
        ))
    }
}

/// Whether a staging directory name is `<key>.<pid>.<nonce>` for exactly this key.
fn is_staging_of(name: &str, key: &str) -> bool {
    let Some(rest) = name.strip_prefix(key).and_then(|r| r.strip_prefix('.')) else {
        return false;
    };
    let Some((pid, nonce)) = rest.split_once('.') else {
        return false;
    };
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && !nonce.is_empty()
        && nonce.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn read_group(path: &Path) -> Option<u32> {
    crate::read::read_capped(path, crate::read::MAX_SMALL)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A name part unique within this process and unlikely to repeat across processes.
fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{nanos:x}{count:x}")
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io("create", path, e))
}

/// Removes a directory tree off the async runtime; a missing tree is fine.
async fn remove_tree(path: PathBuf) -> Result<()> {
    let shown = path.clone();
    tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(Error::io("remove", &path, error)),
    })
    .await
    .map_err(|error| Error::data("remove", shown, error))?
}

/// Rewrites an install's `metadata.json` with what was learnt about it after it was committed
/// (a record from an older version that lacks a field the current one keeps), atomically.
/// Only for facts about the installed files that any process would learn alike, so two
/// processes amending at once write the same record.
pub fn amend_metadata<M: Serialize>(installed: &Installed<M>) -> Result<()> {
    write_metadata(&installed.metadata_file, &installed.metadata)
}

fn write_metadata<M: Serialize>(path: &Path, metadata: &M) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(metadata)
        .map_err(|error| Error::data("serialize", path, error))?;
    bytes.push(b'\n');
    write_atomically(path, &bytes)
}

/// Writes a file through a temporary sibling and a rename, so readers see all of it or nothing.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_through_temporary(path, bytes, 0o666)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, as the
/// other writes here do, but the file is readable by its owner only (mode 0600) from the moment it exists.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_through_temporary(path, bytes, 0o600)
}

fn write_through_temporary(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", nonce()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
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

/// Removes a staging directory (after stopping its build) when an install is abandoned.
struct StagingGuard {
    dir: Option<PathBuf>,
}

impl StagingGuard {
    fn disarm(&mut self) {
        self.dir = None;
    }
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        // The Shell kills its own group when its future is dropped; this also covers work that
        // recorded a group some other way.
        if let Some(pgid) = read_group(&dir.join(GROUP_FILE))
            && group_alive(pgid)
            && group_works_in(pgid, &dir)
        {
            kill_group(pgid, Signal::SIGKILL);
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %dir.display(), %error, "cannot remove the staging directory of an abandoned install");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_plain_names() {
        assert!(check_key("llamacpp-b4567-cpu-0123abcd").is_ok());
        assert!(check_key("v1.2+x_y").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "../x"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn staging_names_match_only_their_key() {
        assert!(is_staging_of("abc.123.ff01", "abc"));
        assert!(is_staging_of("a.b.123.ff01", "a.b"));
        assert!(!is_staging_of("a.b.123.ff01", "a"));
        assert!(!is_staging_of("abcd.123.ff01", "abc"));
        assert!(!is_staging_of("abc.x.ff01", "abc"));
        assert!(!is_staging_of("abc.123", "abc"));
        assert!(!is_staging_of("abc.123.", "abc"));
    }

    #[test]
    fn metadata_over_its_cap_or_not_a_file_is_not_an_install() {
        let dir = tempfile::tempdir().unwrap();
        let progress: Arc<dyn Progress> = Arc::new(provisioner_core::RecordingProgress::default());
        let root = InstallRoot::new(dir.path(), "b", progress);
        let valid = |_: &Installed<serde_json::Value>| true;
        std::fs::create_dir_all(root.final_dir("k")).unwrap();
        let metadata = root.final_dir("k").join(METADATA_FILE);
        std::fs::write(&metadata, "{}").unwrap();
        assert!(root.lookup("k", &valid).is_some());
        // Valid JSON, but more than the cap: never read into memory.
        let big = format!(
            "{{\"pad\": \"{}\"}}",
            "x".repeat(crate::read::MAX_STATE as usize)
        );
        std::fs::write(&metadata, big).unwrap();
        assert!(root.lookup("k", &valid).is_none());
        std::fs::remove_file(&metadata).unwrap();
        nix::unistd::mkfifo(&metadata, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(root.lookup("k", &valid).is_none());
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
    }
}
