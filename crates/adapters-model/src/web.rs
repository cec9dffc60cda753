//! `https://`/`http://` references (one file, or an archive unpacked with binary mode's safe
//! unpacker) and local files (used where they are), both recorded in the catalog.
//!
//! A URL's model is installed through the one install transaction
//! ([`adapters_host::InstallRoot`]) under `<models dir>/url/`:
//!
//! ```text
//! <models dir>/url/
//!   CACHEDIR.TAG
//!   downloads/<key>-<name>            the download (and <…>.partial while it runs, kept to resume)
//!   locks/<key>.lock                  the install's lock
//!   .staging/<key>.<pid>.<nonce>/     work in progress
//!   v1/<key>/<name>                   the file (or the archive's tree)
//!   v1/<key>/metadata.json            UrlMetadata, written last
//! ```
//!
//! `<key>` is `url-` and the first 16 hex digits of the sha256 of the URL as configured. Without
//! `model.checksum`, the sha256 computed while downloading is recorded; a later use checks the
//! file's size and modification time against the record, and hashes it again when they differ.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use adapters_host::InstallRoot;
use adapters_host::install::Installed;
use provisioner_core::{
    Action, Algorithm, ArchiveFormat, Checksum, Error, FetchRequest, ModelArtifact, ModelRequest,
    Result, SafeUrl, UnpackLimits,
};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::catalog::{Catalog, CatalogEntry, CatalogFile, Lifecycle, entry_digest, now_ms};
use crate::check::check_header;
use crate::stager::{Stager, download_error, model_error};

/// The version of [`UrlMetadata`]; a change of format changes the bucket name too.
pub const URL_METADATA_FORMAT: u32 = 1;
/// Caps on an unpacked model archive: 4 TiB and 100 000 entries.
pub const MODEL_UNPACK_LIMITS: UnpackLimits = UnpackLimits {
    max_bytes: 4 << 40,
    max_entries: 100_000,
};

/// What `metadata.json` of a URL install records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlMetadata {
    /// [`URL_METADATA_FORMAT`].
    pub format: u32,
    /// The URL, credentials and query values redacted.
    pub source: String,
    /// `sha256:<hex>` of the download.
    pub sha256: String,
    /// `model.checksum` when one was given and verified.
    pub checksum: Option<String>,
    /// Size of the download in bytes.
    pub bytes: u64,
    /// Whether the download was an archive, unpacked.
    pub unpacked: bool,
    /// What the engine is given, relative to the install directory (the file's name; empty for
    /// an unpacked archive: the directory itself).
    pub model: String,
    /// The files, relative to the install directory, with their size, modification time
    /// (nanoseconds since the epoch) and sha256.
    pub files: Vec<UrlFile>,
}

/// One file of a URL install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlFile {
    /// Path under the install directory.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Modification time in nanoseconds since the epoch, when installed.
    pub mtime_ns: i128,
    /// `sha256:<hex>`.
    pub sha256: String,
}

impl Stager {
    pub(crate) async fn ensure_url(
        &self,
        request: &ModelRequest,
        url: &SafeUrl,
    ) -> Result<ModelArtifact> {
        let root = InstallRoot::new(request.models_dir.join("url"), "v1", self.progress.clone());
        let key = format!(
            "url-{}",
            &hex::encode(sha2::Sha256::digest(url.expose().as_bytes()))[..16]
        );
        let wanted = request.checksum.clone();
        let is_valid =
            move |installed: &Installed<UrlMetadata>| still_valid(installed, wanted.as_ref());
        let installed = match root.lookup(&key, &is_valid) {
            Some(installed) => installed,
            None => {
                self.policy.check(&Action::Download {
                    url: url.clone(),
                    allowed_by_config: None,
                })?;
                let downloads = root.root().join("downloads");
                let name = file_name(url);
                let download = downloads.join(format!("{key}-{name}"));
                root.install(&key, &is_valid, |staging| async move {
                    self.download(request, url, &download, &staging.out, &name)
                        .await
                })
                .await?
            }
        };
        let metadata = &installed.metadata;
        let model_path = if metadata.model.is_empty() {
            installed.dir.clone()
        } else {
            installed.dir.join(&metadata.model)
        };
        let files: Vec<CatalogFile> = metadata
            .files
            .iter()
            .map(|file| CatalogFile {
                path: file.path.clone(),
                local_path: installed.dir.join(&file.path),
                bytes: file.bytes,
                sha256: Some(file.sha256.clone()),
                stored: None,
            })
            .collect();
        for file in &files {
            if let Err(message) = check_header(&file.local_path) {
                // Nothing corrupt stays staged: the next pull downloads again.
                let _ = std::fs::remove_dir_all(&installed.dir);
                return Err(model_error(
                    request,
                    format!(
                        "{} is corrupt: {message}; it was removed, nothing is staged",
                        file.local_path.display()
                    ),
                    Some("check provisioning.model.ref: the URL must name the model file or an archive of it".to_string()),
                ));
            }
        }
        let host = url.host().unwrap_or_default();
        let short = metadata
            .sha256
            .strip_prefix("sha256:")
            .map_or("", |hex| &hex[..12.min(hex.len())]);
        let entry = CatalogEntry {
            id: format!("url:{host}/{}@{short}", file_name(url)),
            local_path: model_path,
            lifecycle: Lifecycle::Active,
            digest: entry_digest(&files),
            last_verified_ms: None,
            source: url.redacted(),
            revision: None,
            bytes: files.iter().map(|file| file.bytes).sum(),
            files,
            cache_root: Some(installed.dir.clone()),
        };
        let catalog = Catalog::open(&request.models_dir);
        match catalog.get(&entry.id)? {
            Some(existing) if same_content(&existing, &entry) => Ok(existing.artifact()),
            _ => {
                let mut entry = entry;
                entry.last_verified_ms = Some(now_ms());
                catalog.upsert(entry.clone()).await?;
                Ok(entry.artifact())
            }
        }
    }

    /// Downloads (resumably, outside staging) and moves or unpacks into `out`.
    async fn download(
        &self,
        request: &ModelRequest,
        url: &SafeUrl,
        download: &Path,
        out: &Path,
        name: &str,
    ) -> Result<UrlMetadata> {
        let fetched = self
            .fetcher
            .fetch(&FetchRequest {
                url: url.clone(),
                destination: download.to_path_buf(),
                expected: request.checksum.clone(),
                max_bytes: None,
                authorization: None,
            })
            .await
            .map_err(|error| download_error(request, error, false))?;
        let source = url.redacted();
        let checksum = request.checksum.as_ref().map(Checksum::to_string);
        let owned = (
            download.to_path_buf(),
            out.to_path_buf(),
            name.to_string(),
            url.clone(),
        );
        let metadata = tokio::task::spawn_blocking(move || {
            let (download, out, name, url) = owned;
            let sha256 = if fetched.checksum.algorithm == Algorithm::Sha256 {
                fetched.checksum.to_string()
            } else {
                adapters_binary::hash_file(&download, Algorithm::Sha256)?
                    .0
                    .to_string()
            };
            let format = ArchiveFormat::from_url(&url);
            let unpacked = format != ArchiveFormat::Bare;
            let mut files = Vec::new();
            if unpacked {
                let report = adapters_binary::unpack(&download, format, &out, MODEL_UNPACK_LIMITS)?;
                for path in report.files {
                    let relative = path.strip_prefix(&out).unwrap_or(&path).to_path_buf();
                    files.push(describe(&out, &relative)?);
                }
                let _ = std::fs::remove_file(&download);
            } else {
                let target = out.join(&name);
                std::fs::rename(&download, &target)
                    .map_err(|e| Error::io("rename", &download, e))?;
                files.push(describe_known(&out, Path::new(&name), &sha256)?);
            }
            files.sort_by(|a, b| a.path.cmp(&b.path));
            Ok::<_, Error>(UrlMetadata {
                format: URL_METADATA_FORMAT,
                source,
                sha256,
                checksum,
                bytes: fetched.bytes,
                unpacked,
                model: if unpacked { String::new() } else { name },
                files,
            })
        })
        .await
        .map_err(|error| {
            model_error(request, format!("installing did not finish: {error}"), None)
        })??;
        Ok(metadata)
    }

    /// `file:` references and paths: [`adapters_host::LocalModels`], then a catalog entry
    /// (written only when new or changed; a catalog that cannot be written is only traced,
    /// since the model itself is fine).
    pub(crate) async fn ensure_local(&self, request: &ModelRequest) -> Result<ModelArtifact> {
        use provisioner_core::ModelProvisioner as _;
        let artifact = self.local.ensure_present(request).await?;
        let is_file = artifact.path.is_file();
        // The header, before any engine sees the file (a file that is a directory's model, or
        // of another kind, passes unread).
        if is_file && let Err(message) = check_header(&artifact.path) {
            return Err(model_error(
                request,
                format!(
                    "{} is not a usable model: {message}",
                    artifact.path.display()
                ),
                Some(format!(
                    "replace {} with the complete model file (a copy or download may have been cut short), or point provisioning.model.ref at the right file",
                    artifact.path.display()
                )),
            ));
        }
        let id = format!("file:{}", artifact.path.display());
        let catalog = Catalog::open(&request.models_dir);
        // The catalog is read once: for the recorded hash and to see whether anything changed.
        let existing = catalog.get(&id);
        let sha256 = match request
            .checksum
            .as_ref()
            .filter(|checksum| checksum.algorithm == Algorithm::Sha256)
        {
            Some(pinned) => Some(pinned.to_string()),
            None if is_file => Some(
                self.local_sha256(existing.as_ref().ok().and_then(Option::as_ref), &artifact)
                    .await?,
            ),
            None => None,
        };
        let files = if is_file {
            vec![CatalogFile {
                path: artifact
                    .path
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                local_path: artifact.path.clone(),
                bytes: artifact.bytes,
                sha256: sha256.clone(),
                stored: None,
            }]
        } else {
            Vec::new()
        };
        let entry = CatalogEntry {
            id,
            local_path: artifact.path.clone(),
            lifecycle: Lifecycle::Active,
            digest: entry_digest(&files),
            last_verified_ms: None,
            source: request.reference.to_string(),
            revision: None,
            bytes: artifact.bytes,
            files,
            cache_root: None,
        };
        let recorded = match existing {
            Ok(Some(existing)) if same_content(&existing, &entry) => existing,
            Ok(_) => {
                let mut entry = entry;
                entry.last_verified_ms = request.checksum.is_some().then(now_ms);
                if let Err(error) = catalog.upsert(entry.clone()).await {
                    tracing::warn!(%error, "cannot record a local model in the catalog");
                }
                entry
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the model catalog");
                entry
            }
        };
        let mut artifact = artifact;
        artifact.files = recorded.artifact().files;
        artifact.id = Some(recorded.id);
        Ok(artifact)
    }
}

impl Stager {
    /// The sha256 of a local model file for the catalog (so that `model verify` can hash it
    /// again and a pool can name it by digest): the one recorded for this path and size, else
    /// the file hashed now, once (a note says so for a large file).
    async fn local_sha256(
        &self,
        existing: Option<&CatalogEntry>,
        artifact: &ModelArtifact,
    ) -> Result<String> {
        let recorded = existing.and_then(|entry| {
            entry
                .files
                .iter()
                .find(|file| file.local_path == artifact.path && file.bytes == artifact.bytes)
                .and_then(|file| file.sha256.clone())
        });
        if let Some(sha256) = recorded {
            return Ok(sha256);
        }
        if artifact.bytes >= 256 * 1024 * 1024 {
            self.progress.report(provisioner_core::ProgressEvent::Note {
                message: format!(
                    "hashing {} ({}) once for the model catalog",
                    artifact.path.display(),
                    provisioner_core::human_bytes(artifact.bytes)
                ),
            });
        }
        let path = artifact.path.clone();
        let (checksum, _) = tokio::task::spawn_blocking(move || {
            adapters_binary::hash_file(&path, Algorithm::Sha256)
        })
        .await
        .map_err(|error| Error::Io {
            operation: "hash".to_string(),
            path: artifact.path.clone(),
            source: std::io::Error::other(error.to_string()),
        })??;
        Ok(checksum.to_string())
    }
}

/// Whether two entries record the same content (times aside).
fn same_content(a: &CatalogEntry, b: &CatalogEntry) -> bool {
    a.local_path == b.local_path
        && a.digest == b.digest
        && a.files == b.files
        && a.bytes == b.bytes
        && a.lifecycle == b.lifecycle
        && a.cache_root == b.cache_root
        && a.source == b.source
}

/// The warm check of a URL install: every file there with its recorded size; a file whose
/// modification time changed is hashed again; the configured checksum is the one recorded.
fn still_valid(installed: &Installed<UrlMetadata>, wanted: Option<&Checksum>) -> bool {
    let metadata = &installed.metadata;
    if metadata.format != URL_METADATA_FORMAT {
        return false;
    }
    if let Some(wanted) = wanted {
        let recorded = metadata.checksum.as_deref() == Some(wanted.to_string().as_str())
            || (wanted.algorithm == Algorithm::Sha256 && metadata.sha256 == wanted.to_string());
        if !recorded {
            return false;
        }
    }
    metadata.files.iter().all(|file| {
        let path = installed.dir.join(&file.path);
        let Ok(found) = std::fs::metadata(&path) else {
            return false;
        };
        if found.len() != file.bytes {
            return false;
        }
        mtime_ns(&found) == file.mtime_ns
            || adapters_binary::hash_file(&path, Algorithm::Sha256)
                .is_ok_and(|(actual, _)| actual.to_string() == file.sha256)
    })
}

fn mtime_ns(metadata: &std::fs::Metadata) -> i128 {
    i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec())
}

fn describe(dir: &Path, relative: &Path) -> Result<UrlFile> {
    let path = dir.join(relative);
    let (sha256, _) = adapters_binary::hash_file(&path, Algorithm::Sha256)?;
    describe_known(dir, relative, &sha256.to_string())
}

fn describe_known(dir: &Path, relative: &Path, sha256: &str) -> Result<UrlFile> {
    let path: PathBuf = dir.join(relative);
    let metadata = std::fs::metadata(&path).map_err(|e| Error::io("inspect", &path, e))?;
    Ok(UrlFile {
        path: relative.to_string_lossy().into_owned(),
        bytes: metadata.len(),
        mtime_ns: mtime_ns(&metadata),
        sha256: sha256.to_string(),
    })
}

/// The URL's last path segment as a plain file name (`model` when it has none usable).
fn file_name(url: &SafeUrl) -> String {
    let name: String = url
        .file_name()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
        .collect();
    if name.is_empty() || name.starts_with('.') {
        "model".to_string()
    } else {
        name
    }
}
