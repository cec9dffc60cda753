//! The Hugging Face cache layout, shared with the Python client (`huggingface_hub`'s
//! `file_download.py`, documented at
//! <https://huggingface.co/docs/huggingface_hub/guides/manage-cache>), so that it, vLLM and TGI
//! find what this crate staged without downloading again:
//!
//! ```text
//! <hub cache>/
//!   models--<org>--<repo>/               RepoCache::root, what a container mounts read-only
//!     blobs/<sha256 or git oid>          the content: an LFS file's sha256, else its git blob id
//!     blobs/<name>.partial               a download in progress (kept to resume)
//!     snapshots/<commit>/<path>          relative symlink to ../../blobs/<name> (one more ../
//!                                        per directory level of <path>)
//!     refs/<revision>                    the commit a branch or tag resolved to (no newline)
//!   .locks/models--<org>--<repo>/<name>.lock   per-blob lock (the Python client's too)
//! ```

use std::path::{Path, PathBuf};

/// Paths of one repository in the hub cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoCache {
    hub_cache: PathBuf,
    folder: String,
}

impl RepoCache {
    /// The repository `org/repo` in the hub cache `hub_cache`.
    pub fn new(hub_cache: &Path, repo: &str) -> RepoCache {
        RepoCache {
            hub_cache: hub_cache.to_path_buf(),
            folder: format!("models--{}", repo.replace('/', "--")),
        }
    }

    /// `<hub cache>/models--org--repo`.
    pub fn root(&self) -> PathBuf {
        self.hub_cache.join(&self.folder)
    }

    /// `…/blobs/<name>`.
    pub fn blob(&self, name: &str) -> PathBuf {
        self.root().join("blobs").join(name)
    }

    /// `…/snapshots/<commit>`.
    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.root().join("snapshots").join(commit)
    }

    /// `…/snapshots/<commit>/<path>`.
    pub fn snapshot_file(&self, commit: &str, path: &str) -> PathBuf {
        self.snapshot(commit).join(path)
    }

    /// `…/refs/<revision>` (a revision with `/`, such as `refs/pr/1`, nests).
    pub fn ref_file(&self, revision: &str) -> PathBuf {
        self.root().join("refs").join(revision)
    }

    /// The commit recorded for `revision`, when it is a full commit id.
    pub fn read_ref(&self, revision: &str) -> Option<String> {
        let text =
            adapters_host::read_capped(&self.ref_file(revision), adapters_host::read::MAX_SMALL)
                .ok()?;
        let commit = text.trim();
        crate::names::is_commit(commit).then(|| commit.to_ascii_lowercase())
    }

    /// `<hub cache>/.locks/models--org--repo/<blob>.lock`.
    pub fn lock_file(&self, blob: &str) -> PathBuf {
        self.hub_cache
            .join(".locks")
            .join(&self.folder)
            .join(format!("{blob}.lock"))
    }

    /// The relative target a snapshot link for `path` has: `../../blobs/<blob>` with one more
    /// `../` per `/` in `path` (what `os.path.relpath` gives the Python client).
    pub fn link_target(path: &str, blob: &str) -> PathBuf {
        let depth = path.matches('/').count() + 2;
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.join("blobs").join(blob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let cache = RepoCache::new(Path::new("/c/hub"), "Qwen/Qwen2.5-GGUF");
        assert_eq!(cache.root(), Path::new("/c/hub/models--Qwen--Qwen2.5-GGUF"));
        assert_eq!(
            cache.lock_file("abc"),
            Path::new("/c/hub/.locks/models--Qwen--Qwen2.5-GGUF/abc.lock")
        );
        assert_eq!(
            RepoCache::link_target("m.gguf", "b"),
            Path::new("../../blobs/b")
        );
        assert_eq!(
            RepoCache::link_target("a/b/m.gguf", "b"),
            Path::new("../../../../blobs/b")
        );
        assert_eq!(
            cache.ref_file("refs/pr/1"),
            Path::new("/c/hub/models--Qwen--Qwen2.5-GGUF/refs/refs/pr/1")
        );
    }
}
