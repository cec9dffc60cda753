//! The model catalog: `index.json` in the models directory, one entry per staged model.
//!
//! The file is llama-orch's `FsCatalog` index (`libs/catalog-core`): a JSON object mapping each
//! id to an entry with `id`, `local_path`, `lifecycle` (`"Active"` or `"Retired"`), `digest`
//! (`{"algo": "sha256", "value": "<hex>"}` or `null`) and `last_verified_ms`; this crate adds
//! `source`, `revision`, `files`, `bytes` and `cache_root`, which llama-orch's reader ignores.
//! It is rewritten whole, through a temporary file and a rename, under the lock
//! `<models dir>/.index.json.lock`; readers take no lock.
//!
//! ## Ids
//!
//! Stable and readable, one per (source, resolved content):
//! - `hf:org/repo/path/in/repo@<commit12>`: one file (a split GGUF's first part) at a commit;
//! - `hf:org/repo@<commit12>`: a whole repository snapshot; with include/exclude globs,
//!   `hf:org/repo@<commit12>~<filters8>` (8 hex digits of the sha256 of the globs);
//! - `url:<host>/<file name>@<sha256 12>`: a file or unpacked archive from an `http(s)` URL;
//! - `file:<absolute path>`: a local file or directory used where it is.
//!
//! `<commit12>`/`<sha256 12>` are the first 12 hex digits.
//!
//! ## Digests
//!
//! A one-file entry's digest is that file's sha256. An entry of several files (split GGUF,
//! snapshot) has the sha256 of its `sha256sum` listing: one line `<hex>  <path>\n` per file,
//! sorted by path; `None` while a file's hash is unknown. A pool's `model: sha256:…` is found
//! with [`Catalog::find`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use adapters_host::FileLock;
use provisioner_core::{Algorithm, Error, ModelArtifact, ModelFile, Result};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::fsutil::write_atomically;

/// The catalog's file name inside the models directory.
pub const INDEX_FILE: &str = "index.json";
/// The lock taken while the catalog is rewritten.
pub const INDEX_LOCK: &str = ".index.json.lock";

/// Whether an entry is in use (llama-orch's `LifecycleState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lifecycle {
    /// Staged and usable.
    Active,
    /// Kept but not to be used for new pools.
    Retired,
}

/// llama-orch's `Digest`: an algorithm and a lower-case hex value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogDigest {
    /// `sha256`.
    pub algo: String,
    /// Lower-case hex.
    pub value: String,
}

impl std::fmt::Display for CatalogDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algo, self.value)
    }
}

/// One file of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogFile {
    /// Path inside the model: the repository path for `hf:`, the file's path under the install
    /// directory for URLs, the file name for local files.
    pub path: String,
    /// Where the engine sees the file (absolute): in the snapshot for `hf:`.
    pub local_path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// `sha256:<hex>` of the content, when known.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Where the content is stored when that differs from where the engine sees it: the blob
    /// in the Hugging Face cache (the snapshot holds a symlink to it). Removing an entry deletes
    /// it only when no other entry names it.
    #[serde(default)]
    pub stored: Option<PathBuf>,
}

/// A staged model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The id (see the module documentation).
    pub id: String,
    /// What the engine is given: the file, or a snapshot or install directory.
    pub local_path: PathBuf,
    /// Lifecycle.
    pub lifecycle: Lifecycle,
    /// The content digest (see the module documentation).
    pub digest: Option<CatalogDigest>,
    /// When the content was last hashed and found as recorded, in milliseconds since the Unix
    /// epoch.
    pub last_verified_ms: Option<u64>,
    /// The reference as the configuration wrote it, credentials and query values redacted.
    #[serde(default)]
    pub source: String,
    /// The commit a `hf:` revision resolved to.
    #[serde(default)]
    pub revision: Option<String>,
    /// The files, sorted by path.
    #[serde(default)]
    pub files: Vec<CatalogFile>,
    /// Total size in bytes.
    #[serde(default)]
    pub bytes: u64,
    /// The directory the entry lives in: `…/hub/models--org--repo` for `hf:` (shared by every
    /// revision of the repository), the install directory for URLs; `None` for local files.
    #[serde(default)]
    pub cache_root: Option<PathBuf>,
}

impl CatalogEntry {
    /// The entry as the port's [`ModelArtifact`].
    pub fn artifact(&self) -> ModelArtifact {
        ModelArtifact {
            path: self.local_path.clone(),
            bytes: self.bytes,
            id: Some(self.id.clone()),
            revision: self.revision.clone(),
            files: self
                .files
                .iter()
                .map(|file| ModelFile {
                    path: file.path.clone(),
                    bytes: file.bytes,
                    sha256: file.sha256.clone(),
                })
                .collect(),
            cache_root: self.cache_root.clone(),
        }
    }

    /// Whether the entry is a local file used where it is (nothing of it is ever deleted).
    pub fn is_local(&self) -> bool {
        self.id.starts_with("file:")
    }
}

/// The digest of an entry's files (see the module documentation); `None` when a file's sha256
/// is unknown or there are no files.
pub fn entry_digest(files: &[CatalogFile]) -> Option<CatalogDigest> {
    let hex_of = |file: &CatalogFile| {
        file.sha256
            .as_deref()
            .and_then(|text| text.strip_prefix("sha256:"))
            .map(str::to_string)
    };
    match files {
        [] => None,
        [one] => hex_of(one).map(|value| CatalogDigest {
            algo: "sha256".to_string(),
            value,
        }),
        many => {
            let mut sorted: Vec<&CatalogFile> = many.iter().collect();
            sorted.sort_by(|a, b| a.path.cmp(&b.path));
            let mut listing = String::new();
            for file in sorted {
                listing.push_str(&format!("{}  {}\n", hex_of(file)?, file.path));
            }
            Some(CatalogDigest {
                algo: "sha256".to_string(),
                value: hex::encode(sha2::Sha256::digest(listing.as_bytes())),
            })
        }
    }
}

/// What [`Catalog::remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The entry removed from the catalog.
    pub entry: CatalogEntry,
    /// Files, links and directories deleted.
    pub deleted: Vec<PathBuf>,
    /// Stored files kept because another entry still names them.
    pub kept: Vec<PathBuf>,
}

/// The catalog of one models directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    dir: PathBuf,
}

impl Catalog {
    /// The catalog of `models_dir` (nothing is read or created yet).
    pub fn open(models_dir: impl Into<PathBuf>) -> Catalog {
        Catalog {
            dir: models_dir.into(),
        }
    }

    /// `<models dir>/index.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(INDEX_FILE)
    }

    /// Every entry, sorted by id; none when the file does not exist.
    ///
    /// Errors: an unreadable or malformed `index.json` ([`Error::Io`] naming it).
    pub fn entries(&self) -> Result<Vec<CatalogEntry>> {
        Ok(self.read()?.into_values().collect())
    }

    /// The entry with this id.
    pub fn get(&self, id: &str) -> Result<Option<CatalogEntry>> {
        Ok(self.read()?.remove(id))
    }

    /// The entry named by `key`: a digest (`sha256:<64 hex>`, any case) or an id.
    pub fn find(&self, key: &str) -> Result<Option<CatalogEntry>> {
        let entries = self.read()?;
        if let Some(hex) = key
            .strip_prefix("sha256:")
            .or_else(|| key.strip_prefix("SHA256:"))
        {
            // A digest may be abbreviated (llama-orch's pool ids often are: `sha256:0123abcd`),
            // as long as it names one entry.
            let hex = hex.to_ascii_lowercase();
            let matching: Vec<CatalogEntry> = entries
                .into_values()
                .filter(|entry| {
                    entry.digest.as_ref().is_some_and(|digest| {
                        digest.algo == "sha256" && !hex.is_empty() && digest.value.starts_with(&hex)
                    })
                })
                .collect();
            // Entries of one content (two revisions of one file) are one answer.
            let contents: BTreeSet<&str> = matching
                .iter()
                .filter_map(|entry| entry.digest.as_ref().map(|d| d.value.as_str()))
                .collect();
            return match contents.len() {
                0 | 1 => Ok(matching.into_iter().next()),
                _ => Err(model_error(
                    key,
                    format!(
                        "the digest names {} entries: {}",
                        matching.len(),
                        matching
                            .iter()
                            .map(|e| e.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some("give more of the digest (orchctl model ls --json shows them whole)"),
                )),
            };
        }
        Ok(entries.get(key).cloned())
    }

    /// Adds or replaces the entry with `entry.id`.
    pub async fn upsert(&self, entry: CatalogEntry) -> Result<()> {
        let _lock = self.lock().await?;
        let mut entries = self.read()?;
        if entries.get(&entry.id) == Some(&entry) {
            return Ok(());
        }
        entries.insert(entry.id.clone(), entry);
        self.write(&entries)
    }

    /// Hashes every file of entry `id` again and compares it with the catalog (and checks the
    /// GGUF/safetensors headers); on success records the time in `last_verified_ms` and returns
    /// the updated entry.
    ///
    /// Errors: no such entry, a missing file, a size or hash that differs, a corrupt header
    /// ([`Error::Model`] naming the file, exit 8).
    pub async fn verify(&self, id: &str) -> Result<CatalogEntry> {
        let Some(entry) = self.get(id)? else {
            return Err(unknown(id));
        };
        let checked = entry.clone();
        tokio::task::spawn_blocking(move || verify_files(&checked))
            .await
            .map_err(|error| {
                model_error(id, format!("the check did not finish: {error}"), None)
            })??;
        let _lock = self.lock().await?;
        let mut entries = self.read()?;
        let Some(current) = entries.get_mut(id) else {
            return Err(unknown(id));
        };
        current.last_verified_ms = Some(now_ms());
        let updated = current.clone();
        self.write(&entries)?;
        Ok(updated)
    }

    /// Removes entry `id` and deletes what only it uses: its snapshot links and the blobs no
    /// other entry names (`hf:`), its install directory (URLs). A local file's entry is
    /// removed from the catalog only: the file is the user's. `in_use` is asked first (by the
    /// CLI: whether a running pool uses the entry).
    ///
    /// Errors: no such entry, or in use ([`Error::Model`], exit 8); the disk ([`Error::Io`]).
    pub async fn remove(
        &self,
        id: &str,
        in_use: &(dyn Fn(&CatalogEntry) -> bool + Sync),
    ) -> Result<Removed> {
        let _lock = self.lock().await?;
        let mut entries = self.read()?;
        let Some(entry) = entries.get(id).cloned() else {
            return Err(unknown(id));
        };
        if in_use(&entry) {
            return Err(model_error(
                id,
                "a running pool uses this model".to_string(),
                Some(
                    "stop the pool first (orchctl engine down --config FILE --pool ID), then remove the model",
                ),
            ));
        }
        entries.remove(id);
        let mut still_named: BTreeSet<PathBuf> = BTreeSet::new();
        for other in entries.values() {
            for file in &other.files {
                still_named.insert(file.local_path.clone());
                if let Some(stored) = &file.stored {
                    still_named.insert(stored.clone());
                }
            }
            still_named.insert(other.local_path.clone());
            if let Some(root) = &other.cache_root
                && !other.id.starts_with("hf:")
            {
                still_named.insert(root.clone());
            }
        }
        // The catalog goes first: a crash below leaves unreferenced files, never an entry
        // pointing at deleted ones.
        self.write(&entries)?;

        let mut removed = Removed {
            entry: entry.clone(),
            deleted: Vec::new(),
            kept: Vec::new(),
        };
        if entry.is_local() {
            return Ok(removed);
        }
        for file in &entry.files {
            let seen = file.local_path.clone();
            if !still_named.contains(&seen) && delete_file(&seen)? {
                removed.deleted.push(seen.clone());
            }
            if let Some(stored) = &file.stored {
                // A blob stays while an entry of this catalog names it, or while any snapshot
                // link of the repository (another models directory's catalog, the Python
                // client) still points at it.
                let linked = entry
                    .cache_root
                    .as_deref()
                    .is_some_and(|root| linked_from_snapshots(root, stored));
                if still_named.contains(stored) || linked {
                    removed.kept.push(stored.clone());
                } else if delete_file(stored)? {
                    removed.deleted.push(stored.clone());
                }
            }
        }
        if let (true, Some(revision), Some(root)) = (
            entry.id.starts_with("hf:"),
            &entry.revision,
            &entry.cache_root,
        ) {
            // Empty directories of the snapshot, bottom up, never the repository's own.
            let snapshot = root.join("snapshots").join(revision);
            for file in &entry.files {
                let mut dir = file.local_path.parent().map(Path::to_path_buf);
                while let Some(current) = dir {
                    if !current.starts_with(&snapshot) || std::fs::remove_dir(&current).is_err() {
                        break;
                    }
                    removed.deleted.push(current.clone());
                    dir = current.parent().map(Path::to_path_buf);
                }
            }
        } else if let Some(root) = &entry.cache_root
            && !still_named.contains(root)
            && root.starts_with(&self.dir)
        {
            match std::fs::remove_dir_all(root) {
                Ok(()) => removed.deleted.push(root.clone()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(Error::io("remove", root, error)),
            }
        }
        Ok(removed)
    }

    async fn lock(&self) -> Result<FileLock> {
        FileLock::acquire(&self.dir.join(INDEX_LOCK), || {}).await
    }

    fn read(&self) -> Result<BTreeMap<String, CatalogEntry>> {
        let path = self.path();
        let text = match adapters_host::read_capped_bytes(&path, adapters_host::read::MAX_CATALOG) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(BTreeMap::new());
            }
            Err(error) => return Err(Error::io("read", &path, error)),
        };
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(BTreeMap::new());
        }
        serde_json::from_slice(&text).map_err(|error| Error::data("read", &path, error))
    }

    fn write(&self, entries: &BTreeMap<String, CatalogEntry>) -> Result<()> {
        let path = self.path();
        let mut bytes = serde_json::to_vec_pretty(entries)
            .map_err(|error| Error::data("write", &path, error))?;
        bytes.push(b'\n');
        write_atomically(&path, &bytes)
    }
}

fn verify_files(entry: &CatalogEntry) -> Result<()> {
    for file in &entry.files {
        let path = file.local_path.clone();
        let metadata = std::fs::metadata(&path).map_err(|error| {
            model_error(
                &entry.id,
                format!("{} cannot be read: {error}", path.display()),
                Some(&format!(
                    "stage it again ({}) or remove the entry: orchctl model rm {}",
                    crate::stager::PULL_HINT,
                    entry.id
                )),
            )
        })?;
        if metadata.len() != file.bytes {
            return Err(model_error(
                &entry.id,
                format!(
                    "{} is {} bytes, the catalog recorded {}",
                    path.display(),
                    metadata.len(),
                    file.bytes
                ),
                Some(&format!(
                    "the file changed or is damaged; remove the entry (orchctl model rm {}) and stage it again ({})",
                    entry.id,
                    crate::stager::PULL_HINT
                )),
            ));
        }
        if let Some(expected) = &file.sha256 {
            let (actual, _) = adapters_binary::hash_file(&path, Algorithm::Sha256)?;
            if actual.to_string() != *expected {
                return Err(model_error(
                    &entry.id,
                    format!(
                        "{}: checksum mismatch: the catalog recorded {expected}, the file has {actual}",
                        path.display()
                    ),
                    Some(&format!(
                        "the file is damaged; remove it (orchctl model rm {}) and stage it again ({})",
                        entry.id,
                        crate::stager::PULL_HINT
                    )),
                ));
            }
        }
        crate::check::check_header(&path).map_err(|message| {
            model_error(&entry.id, format!("{}: {message}", path.display()), None)
        })?;
    }
    Ok(())
}

/// Whether a symlink under `<root>/snapshots` points at `blob` (targets resolved lexically
/// against the link's directory).
fn linked_from_snapshots(root: &Path, blob: &Path) -> bool {
    let mut pending = vec![root.join("snapshots")];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_symlink()
                && let Ok(target) = std::fs::read_link(&path)
                && lexical(&dir.join(target)) == lexical(blob)
            {
                return true;
            }
        }
    }
    false
}

/// `path` with `.` and `..` removed lexically.
pub(crate) fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Deletes a file or symlink; `false` when it was not there.
fn delete_file(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(Error::io("remove", path, error)),
    }
}

fn unknown(id: &str) -> Error {
    model_error(
        id,
        "no such entry in the catalog".to_string(),
        Some("list the entries with orchctl model ls"),
    )
}

fn model_error(id: &str, message: String, hint: Option<&str>) -> Error {
    Error::Model {
        reference: id.to_string(),
        message,
        hint: hint.map(str::to_string),
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, at: &Path, bytes: &[u8], stored: Option<PathBuf>) -> CatalogFile {
        CatalogFile {
            path: path.to_string(),
            local_path: at.to_path_buf(),
            bytes: bytes.len() as u64,
            sha256: Some(format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(bytes))
            )),
            stored,
        }
    }

    fn entry(id: &str, local_path: PathBuf, files: Vec<CatalogFile>) -> CatalogEntry {
        CatalogEntry {
            id: id.to_string(),
            local_path,
            lifecycle: Lifecycle::Active,
            digest: entry_digest(&files),
            last_verified_ms: None,
            source: id.to_string(),
            revision: None,
            bytes: files.iter().map(|f| f.bytes).sum(),
            files,
            cache_root: None,
        }
    }

    #[tokio::test]
    async fn round_trip_find_verify_and_shared_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        let blobs = dir.path().join("repo/blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        let blob = blobs.join("b1");
        std::fs::write(&blob, b"weights").unwrap();
        let snap_a = dir.path().join("repo/snapshots/a");
        let snap_b = dir.path().join("repo/snapshots/b");
        for snap in [&snap_a, &snap_b] {
            std::fs::create_dir_all(snap).unwrap();
            std::os::unix::fs::symlink("../../blobs/b1", snap.join("m.bin")).unwrap();
        }
        let catalog = Catalog::open(&models);
        assert!(catalog.entries().unwrap().is_empty());
        let a = entry(
            "hf:o/r/m.bin@aaaaaaaaaaaa",
            snap_a.join("m.bin"),
            vec![file(
                "m.bin",
                &snap_a.join("m.bin"),
                b"weights",
                Some(blob.clone()),
            )],
        );
        let b = entry(
            "hf:o/r/m.bin@bbbbbbbbbbbb",
            snap_b.join("m.bin"),
            vec![file(
                "m.bin",
                &snap_b.join("m.bin"),
                b"weights",
                Some(blob.clone()),
            )],
        );
        let (mut a, mut b) = (a, b);
        for (entry, revision) in [(&mut a, "a"), (&mut b, "b")] {
            entry.revision = Some(revision.to_string());
            entry.cache_root = Some(dir.path().join("repo"));
        }
        catalog.upsert(a.clone()).await.unwrap();
        catalog.upsert(b.clone()).await.unwrap();
        assert_eq!(catalog.entries().unwrap().len(), 2);
        let digest = a.digest.clone().unwrap().to_string();
        assert!(catalog.find(&digest).unwrap().is_some());
        assert_eq!(catalog.find(&a.id).unwrap(), Some(a.clone()));
        assert_eq!(catalog.find("sha256:00").unwrap(), None);

        let verified = catalog.verify(&a.id).await.unwrap();
        assert!(verified.last_verified_ms.is_some());

        let error = catalog.remove(&a.id, &|_| true).await.unwrap_err();
        assert!(error.to_string().contains("running pool"), "{error}");
        let removed = catalog.remove(&a.id, &|_| false).await.unwrap();
        assert_eq!(removed.kept, vec![blob.clone()]);
        assert!(blob.exists(), "the blob is still named by the other entry");
        assert!(!snap_a.exists(), "the empty snapshot went");
        let removed = catalog.remove(&b.id, &|_| false).await.unwrap();
        assert!(removed.deleted.contains(&blob), "{removed:?}");
        assert!(!blob.exists());
        assert!(catalog.entries().unwrap().is_empty());
        assert!(catalog.remove(&b.id, &|_| false).await.is_err());
    }

    #[tokio::test]
    async fn verify_finds_damage_and_local_files_survive_removal() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend([0u8; 16]);
        std::fs::write(&model, &bytes).unwrap();
        let catalog = Catalog::open(dir.path());
        let local = entry(
            &format!("file:{}", model.display()),
            model.clone(),
            vec![file("m.gguf", &model, &bytes, None)],
        );
        catalog.upsert(local.clone()).await.unwrap();
        catalog.verify(&local.id).await.unwrap();
        let mut damaged = bytes.clone();
        damaged[20] = 1;
        std::fs::write(&model, &damaged).unwrap();
        let error = catalog.verify(&local.id).await.unwrap_err();
        assert!(error.to_string().contains("checksum mismatch"), "{error}");
        catalog.remove(&local.id, &|_| false).await.unwrap();
        assert!(model.exists());
    }

    #[test]
    fn digests_of_several_files_are_a_listing_hash() {
        let at = Path::new("/m");
        let one = vec![file("a", at, b"x", None)];
        let digest = entry_digest(&one).unwrap();
        assert_eq!(
            digest.value,
            hex::encode(sha2::Sha256::digest(b"x")),
            "one file: its own hash"
        );
        let two = vec![file("b", at, b"y", None), file("a", at, b"x", None)];
        let listing = format!(
            "{}  a\n{}  b\n",
            hex::encode(sha2::Sha256::digest(b"x")),
            hex::encode(sha2::Sha256::digest(b"y"))
        );
        assert_eq!(
            entry_digest(&two).unwrap().value,
            hex::encode(sha2::Sha256::digest(listing.as_bytes()))
        );
        let mut unknown = two.clone();
        unknown[0].sha256 = None;
        assert_eq!(entry_digest(&unknown), None);
    }
}
