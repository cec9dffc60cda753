//! The tag index, `<cache_dir>/images-v1.json`: which digest a tag resolved to last time, and the
//! image's revision and version labels, so that the warm path needs no registry.
//!
//! Written atomically (temporary file, then rename) under `<cache_dir>/images-v1.lock`; readers
//! take no lock and see either the old or the new file. An unreadable index is treated as empty.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use adapters_host::FileLock;
use provisioner_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// What a tag resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Manifest digest.
    pub digest: String,
    /// `org.opencontainers.image.revision` label.
    #[serde(default)]
    pub revision: Option<String>,
    /// `org.opencontainers.image.version` label.
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    /// `registry/repository:tag` → entry.
    #[serde(default)]
    images: BTreeMap<String, IndexEntry>,
}

/// The tag index of one cache directory.
#[derive(Debug, Clone)]
pub struct TagIndex {
    path: PathBuf,
    lock: PathBuf,
}

impl TagIndex {
    /// The index in `cache_dir`.
    pub fn new(cache_dir: &Path) -> Self {
        TagIndex {
            path: cache_dir.join("images-v1.json"),
            lock: cache_dir.join("images-v1.lock"),
        }
    }

    /// The index file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> IndexFile {
        adapters_host::read_capped_bytes(&self.path, adapters_host::read::MAX_STATE)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// The entry for `registry/repository:tag`.
    pub fn get(&self, key: &str) -> Option<IndexEntry> {
        self.read().images.remove(key)
    }

    /// The digest a tagged image resolved to before (`None` without a tag or a record).
    pub fn known_digest(
        &self,
        image: &provisioner_core::ImageReference,
    ) -> Option<provisioner_core::Digest> {
        let key = crate::reference::ImageRef::from_reference(image).tag_key()?;
        self.get(&key)?.digest.parse().ok()
    }

    /// Records an entry (read-modify-write under the lock, atomic rename).
    pub async fn put(&self, key: &str, entry: IndexEntry) -> Result<()> {
        let _lock = FileLock::acquire(&self.lock, || {}).await?;
        let mut file = self.read();
        file.images.insert(key.to_string(), entry);
        let text = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::data("encode", self.path.clone(), e))?;
        let temp = self
            .path
            .with_file_name(format!("images-v1.json.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut out = std::fs::File::create(&temp)?;
            out.write_all(&text)?;
            out.sync_all()?;
            std::fs::rename(&temp, &self.path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            Error::io("write", &self.path, e)
        })
    }
}
