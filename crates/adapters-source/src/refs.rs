//! The ref index `<cache_dir>/refs-v1.json`: tags and commits resolved once, so that a pinned
//! reference is a cache hit without touching the network. Branches are never recorded.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use provisioner_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// File name of the ref index inside the engine cache directory.
pub const REF_INDEX_FILE: &str = "refs-v1.json";

/// What a reference named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RefKind {
    /// A tag: recorded, never re-resolved.
    Tag,
    /// A commit (full SHA or abbreviation): recorded.
    Commit,
    /// A branch: resolved (and fetched) on every prepare.
    Branch,
}

impl RefKind {
    /// Lower-case name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RefKind::Tag => "tag",
            RefKind::Commit => "commit",
            RefKind::Branch => "branch",
        }
    }
}

/// One recorded resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RefEntry {
    pub commit: String,
    pub kind: RefKind,
}

pub(crate) fn index_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join(REF_INDEX_FILE)
}

fn entry_name(repo: &str, reference: &str) -> String {
    format!("{repo} {reference}")
}

/// Whether `text` is a full 40-digit hexadecimal SHA-1.
pub(crate) fn is_full_sha(text: &str) -> bool {
    text.len() == 40 && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// Reads the index; a missing or unreadable index is empty (it is only a cache).
fn load(path: &Path) -> BTreeMap<String, RefEntry> {
    adapters_host::read_capped_bytes(path, adapters_host::read::MAX_STATE)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Looks a reference up; only well-formed tag and commit entries count.
pub(crate) fn lookup(cache_dir: &Path, repo: &str, reference: &str) -> Option<RefEntry> {
    load(&index_path(cache_dir))
        .remove(&entry_name(repo, reference))
        .filter(|e| is_full_sha(&e.commit) && e.kind != RefKind::Branch)
}

/// The commit a tag or commit of `repo` resolved to before, from the ref index of `cache_dir`
/// (a full SHA is its own answer); branches are never answered. Reads one file, runs nothing.
pub fn known_commit(
    cache_dir: &Path,
    repo: &provisioner_core::GitRemote,
    reference: &provisioner_core::GitRef,
) -> Option<String> {
    if is_full_sha(reference.as_str()) {
        return Some(reference.as_str().to_ascii_lowercase());
    }
    lookup(cache_dir, &repo.to_string(), reference.as_str()).map(|entry| entry.commit)
}

/// Records a resolution with an atomic write (temp file + rename). The caller holds the index lock.
pub(crate) fn record(cache_dir: &Path, repo: &str, reference: &str, entry: RefEntry) -> Result<()> {
    if entry.kind == RefKind::Branch {
        return Ok(());
    }
    let path = index_path(cache_dir);
    let mut index = load(&path);
    index.insert(entry_name(repo, reference), entry);
    let json = serde_json::to_vec_pretty(&index).unwrap_or_default();
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let temp = cache_dir.join(format!(
        ".{REF_INDEX_FILE}.{}-{}.tmp",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&json)?;
        file.write_all(b"\n")?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&temp);
        return Err(Error::io("write", &temp, e));
    }
    std::fs::rename(&temp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        Error::io("rename", &path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_tags_and_commits_but_not_branches() {
        let dir = tempfile::tempdir().unwrap();
        let sha = "0123456789abcdef0123456789abcdef01234567".to_string();
        let repo = "https://example.org/r.git";
        let entry = |kind| RefEntry {
            commit: sha.clone(),
            kind,
        };
        record(dir.path(), repo, "v1", entry(RefKind::Tag)).unwrap();
        record(dir.path(), repo, "0123abc", entry(RefKind::Commit)).unwrap();
        record(dir.path(), repo, "main", entry(RefKind::Branch)).unwrap();
        assert_eq!(lookup(dir.path(), repo, "v1"), Some(entry(RefKind::Tag)));
        assert_eq!(
            lookup(dir.path(), repo, "0123abc"),
            Some(entry(RefKind::Commit))
        );
        assert_eq!(lookup(dir.path(), repo, "main"), None);
        assert_eq!(lookup(dir.path(), "https://other/r.git", "v1"), None);
        let text = std::fs::read_to_string(dir.path().join(REF_INDEX_FILE)).unwrap();
        assert!(text.contains("\"https://example.org/r.git v1\""), "{text}");
        assert!(text.contains("\"kind\": \"tag\""), "{text}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_corrupt_index_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(REF_INDEX_FILE), "{not json").unwrap();
        assert_eq!(lookup(dir.path(), "r", "v1"), None);
        record(
            dir.path(),
            "r",
            "v1",
            RefEntry {
                commit: "f".repeat(40),
                kind: RefKind::Tag,
            },
        )
        .unwrap();
        assert!(lookup(dir.path(), "r", "v1").is_some());
    }
}
