//! `hf:` references: the Hugging Face Hub client (see the crate documentation for the
//! endpoints, rules and layout).

use std::collections::BTreeMap;
use std::path::Path;

use adapters_host::FileLock;
use provisioner_core::{
    Action, Algorithm, Checksum, Error, FetchRequest, HfRef, ModelArtifact, ModelRequest,
    ProgressEvent, QueryAnswer, QueryRequest, Result, SafeUrl, Secret, human_bytes,
};
use serde::Deserialize;
use sha2::Digest as _;

use crate::catalog::{
    Catalog, CatalogEntry, CatalogFile, Lifecycle, entry_digest, lexical, now_ms,
};
use crate::check::check_header;
use crate::fsutil::{symlink_atomically, write_atomically};
use crate::layout::RepoCache;
use crate::names::{check_blob_name, check_repo_path, is_commit, selected, split_gguf_parts};
use crate::stager::{Stager, download_error, model_error};

/// The revision used when none is written.
const DEFAULT_REVISION: &str = "main";
/// The revision endpoint's answer is refused beyond this size.
const MAX_API_BYTES: u64 = 64 * 1024 * 1024;

/// The revision endpoint's answer (`GET /api/models/{repo}/revision/{revision}?blobs=true`).
#[derive(Debug, Deserialize)]
struct RevisionInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Debug, Clone, Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<Lfs>,
}

#[derive(Debug, Clone, Deserialize)]
struct Lfs {
    sha256: String,
    size: Option<u64>,
}

/// A file to stage.
#[derive(Debug, Clone)]
struct Wanted {
    path: String,
    size: Option<u64>,
    /// The blob's name: the LFS sha256, else the git object id.
    blob: String,
    /// The LFS sha256 (lower-case hex), when the hub gave one.
    sha256: Option<String>,
}

impl Stager {
    pub(crate) async fn ensure_hf(
        &self,
        request: &ModelRequest,
        hf: &HfRef,
    ) -> Result<ModelArtifact> {
        let Some(hub_cache) = &self.hf.hub_cache else {
            return Err(model_error(
                request,
                "no Hugging Face cache directory is known".to_string(),
                Some("set HF_HUB_CACHE or HF_HOME (or HOME)".to_string()),
            ));
        };
        if hf.path.is_none() && request.checksum.is_some() {
            return Err(model_error(
                request,
                "model.checksum names one file; this reference is a whole repository".to_string(),
                Some(
                    "remove model.checksum, or name the file: hf:org/repo/path/in/repo".to_string(),
                ),
            ));
        }
        let cache = RepoCache::new(hub_cache, &hf.repo);
        let revision = hf.revision.as_deref().unwrap_or(DEFAULT_REVISION);
        // The revision names a file under refs/: it must stay there.
        if check_repo_path(revision).is_err() {
            return Err(model_error(
                request,
                format!("`{revision}` cannot be used as a revision: it is not a relative name"),
                Some("write a branch, tag or commit: hf:org/repo@main/file".to_string()),
            ));
        }
        let known = if is_commit(revision) {
            Some(revision.to_ascii_lowercase())
        } else if !request.refresh || self.hf.offline {
            cache.read_ref(revision)
        } else {
            None
        };
        if let Some(commit) = &known
            && let Some(artifact) = self.hf_warm(request, hf, &cache, commit).await?
        {
            if request.refresh && self.hf.offline && !is_commit(revision) {
                self.progress.report(ProgressEvent::Note {
                    message: format!(
                        "HF_HUB_OFFLINE is set: using {} as staged, not resolving `{revision}` again",
                        request.reference
                    ),
                });
            }
            return Ok(artifact);
        }
        if self.hf.offline {
            let place = match &known {
                Some(commit) => cache.snapshot(commit),
                None => cache.root(),
            };
            return Err(model_error(
                request,
                format!(
                    "HF_HUB_OFFLINE is set and the model is not staged in {}",
                    place.display()
                ),
                Some(format!(
                    "stage it once with network access (unset HF_HUB_OFFLINE and run {}), or copy the cache here",
                    crate::stager::PULL_HINT
                )),
            ));
        }
        self.hf_cold(request, hf, &cache, revision).await
    }

    /// The staged model without network access, or `None` when something is missing.
    async fn hf_warm(
        &self,
        request: &ModelRequest,
        hf: &HfRef,
        cache: &RepoCache,
        commit: &str,
    ) -> Result<Option<ModelArtifact>> {
        let catalog = Catalog::open(&request.models_dir);
        let id = entry_id(hf, commit, &request.include, &request.exclude);
        if let Some(entry) = catalog.get(&id)?
            && entry.files.iter().all(|file| {
                std::fs::metadata(&file.local_path)
                    .is_ok_and(|m| m.is_file() && m.len() == file.bytes)
            })
        {
            let checked = entry.clone();
            let owned = request.clone();
            tokio::task::spawn_blocking(move || verify_staged(&owned, &checked))
                .await
                .map_err(|error| {
                    model_error(request, format!("the check did not finish: {error}"), None)
                })??;
            return Ok(Some(entry.artifact()));
        }

        // Not in the catalog: staged by someone else (the Python client), or the catalog of
        // another models directory. Use it when complete; a snapshot listing is trusted offline
        // only (online, the hub says which files make it whole).
        let paths: Vec<String> = match &hf.path {
            Some(path) => split_gguf_parts(path).unwrap_or_else(|| vec![path.clone()]),
            None if self.hf.offline => list_snapshot(&cache.snapshot(commit))
                .into_iter()
                .filter(|path| selected(path, &request.include, &request.exclude))
                .collect(),
            None => return Ok(None),
        };
        if paths.is_empty()
            || !paths
                .iter()
                .all(|path| cache.snapshot_file(commit, path).is_file())
        {
            return Ok(None);
        }
        let owned = (
            request.clone(),
            hf.clone(),
            cache.clone(),
            commit.to_string(),
        );
        let entry = tokio::task::spawn_blocking(move || {
            let (request, hf, cache, commit) = owned;
            let files = paths
                .iter()
                .map(|path| describe_staged(&cache, &commit, path))
                .collect::<Result<Vec<_>>>()?;
            let entry = new_entry(&request, &hf, &cache, &commit, files);
            verify_staged(&request, &entry)?;
            Ok::<_, Error>(entry)
        })
        .await
        .map_err(|error| {
            model_error(request, format!("the check did not finish: {error}"), None)
        })??;
        catalog.upsert(entry.clone()).await?;
        Ok(Some(entry.artifact()))
    }

    /// Resolves the revision on the hub and stages what is missing.
    async fn hf_cold(
        &self,
        request: &ModelRequest,
        hf: &HfRef,
        cache: &RepoCache,
        revision: &str,
    ) -> Result<ModelArtifact> {
        let endpoint = self.hf.endpoint.expose().trim_end_matches('/').to_string();
        let api = parse_url(
            request,
            &format!(
                "{endpoint}/api/models/{}/revision/{}?blobs=true",
                hf.repo,
                quote(revision, false)
            ),
        )?;
        self.policy.check(&Action::Download {
            url: api.clone(),
            allowed_by_config: None,
        })?;
        let answer = self
            .fetcher
            .query(&QueryRequest {
                url: api.clone(),
                authorization: self.bearer(),
                max_bytes: MAX_API_BYTES,
            })
            .await
            .map_err(|error| download_error(request, error, true))?;
        if answer.status != 200 {
            return Err(self.api_error(request, hf, revision, &api, &answer));
        }
        let info: RevisionInfo = serde_json::from_slice(&answer.body).map_err(|error| {
            model_error(
                request,
                format!(
                    "{}: the hub's answer is not the expected JSON: {error}",
                    api.redacted()
                ),
                Some("check HF_ENDPOINT: it must be the hub or a mirror of its API".to_string()),
            )
        })?;
        let commit = match info.sha.as_deref() {
            Some(sha) if is_commit(sha) => sha.to_ascii_lowercase(),
            other => {
                return Err(model_error(
                    request,
                    format!(
                        "{}: the hub named no commit for `{revision}` (sha: {other:?})",
                        api.redacted()
                    ),
                    None,
                ));
            }
        };
        if commit != revision.to_ascii_lowercase() {
            self.progress.report(ProgressEvent::Note {
                message: format!("hf:{}@{revision} is commit {commit}", hf.repo),
            });
        }
        let wanted = self.select(request, hf, &endpoint, &commit, &info.siblings)?;
        self.check_pin(request, hf, &wanted)?;
        self.check_space(request, cache, &wanted)?;

        // Download every missing blob, then verify headers, then link, record the ref and the
        // catalog entry: nothing is staged until every file is there and verified.
        let mut files = Vec::with_capacity(wanted.len());
        for file in &wanted {
            let sha256 = self
                .stage_blob(request, hf, cache, &endpoint, &commit, file)
                .await?;
            files.push((file.clone(), sha256));
        }
        let owned = (
            request.clone(),
            hf.clone(),
            cache.clone(),
            commit.clone(),
            files,
        );
        let entry = tokio::task::spawn_blocking(move || {
            let (request, hf, cache, commit, files) = owned;
            link_snapshot(&request, &cache, &commit, &files)
                .map(|files| new_entry(&request, &hf, &cache, &commit, files))
        })
        .await
        .map_err(|error| {
            model_error(request, format!("staging did not finish: {error}"), None)
        })??;
        if !revision.eq_ignore_ascii_case(&commit)
            && cache.read_ref(revision).as_deref() != Some(commit.as_str())
        {
            write_atomically(&cache.ref_file(revision), commit.as_bytes())?;
        }
        let mut entry = entry;
        entry.last_verified_ms = Some(now_ms());
        Catalog::open(&request.models_dir)
            .upsert(entry.clone())
            .await?;
        Ok(entry.artifact())
    }

    fn bearer(&self) -> Option<Secret> {
        self.hf
            .token
            .as_ref()
            .map(|token| Secret::new(format!("Bearer {}", token.expose())))
    }

    /// The files to stage, each checked.
    fn select(
        &self,
        request: &ModelRequest,
        hf: &HfRef,
        endpoint: &str,
        commit: &str,
        siblings: &[Sibling],
    ) -> Result<Vec<Wanted>> {
        let by_name: BTreeMap<&str, &Sibling> = siblings
            .iter()
            .map(|sibling| (sibling.rfilename.as_str(), sibling))
            .collect();
        let chosen: Vec<&Sibling> = match &hf.path {
            Some(path) => {
                let names = split_gguf_parts(path).unwrap_or_else(|| vec![path.clone()]);
                let missing: Vec<&String> = names
                    .iter()
                    .filter(|name| !by_name.contains_key(name.as_str()))
                    .collect();
                if missing.contains(&path) {
                    let url = format!(
                        "{endpoint}/{}/resolve/{commit}/{}",
                        hf.repo,
                        quote(path, true)
                    );
                    return Err(model_error(
                        request,
                        format!(
                            "{}: 404: the repository has no file `{path}` at commit {commit}",
                            redact(&url)
                        ),
                        Some("check the file name on the hub (it is case-sensitive), or the revision".to_string()),
                    ));
                }
                if !missing.is_empty() {
                    let list: Vec<&str> = missing.iter().map(|name| name.as_str()).collect();
                    return Err(model_error(
                        request,
                        format!(
                            "the split GGUF `{path}` has {} parts, but the repository lacks {} at commit {commit}; nothing was staged",
                            names.len(),
                            list.join(", ")
                        ),
                        Some("the upload is incomplete; pick another revision or file".to_string()),
                    ));
                }
                names
                    .iter()
                    .filter_map(|name| by_name.get(name.as_str()).copied())
                    .collect()
            }
            None => {
                let chosen: Vec<&Sibling> = siblings
                    .iter()
                    .filter(|sibling| {
                        selected(&sibling.rfilename, &request.include, &request.exclude)
                    })
                    .collect();
                if chosen.is_empty() {
                    return Err(model_error(
                        request,
                        format!(
                            "no file of the repository at commit {commit} matches model.include {:?} / model.exclude {:?}",
                            request.include, request.exclude
                        ),
                        Some("check the globs (fnmatch: `*` also matches `/`)".to_string()),
                    ));
                }
                chosen
            }
        };
        chosen
            .into_iter()
            .map(|sibling| {
                check_repo_path(&sibling.rfilename).map_err(|message| {
                    model_error(request, format!("{message}; nothing was staged"), None)
                })?;
                let sha256 = sibling
                    .lfs
                    .as_ref()
                    .map(|lfs| lfs.sha256.to_ascii_lowercase());
                let blob = match (&sha256, &sibling.blob_id) {
                    (Some(sha256), _) => sha256.clone(),
                    (None, Some(oid)) => oid.to_ascii_lowercase(),
                    (None, None) => {
                        return Err(model_error(
                            request,
                            format!(
                                "the hub gave no hash for `{}` (no lfs.sha256, no blobId)",
                                sibling.rfilename
                            ),
                            Some("check HF_ENDPOINT: a mirror must answer ?blobs=true".to_string()),
                        ));
                    }
                };
                check_blob_name(&blob).map_err(|message| model_error(request, message, None))?;
                if sha256.as_ref().is_some_and(|hex| hex.len() != 64) {
                    return Err(model_error(
                        request,
                        format!(
                            "the hub gave a malformed sha256 for `{}`",
                            sibling.rfilename
                        ),
                        None,
                    ));
                }
                Ok(Wanted {
                    path: sibling.rfilename.clone(),
                    size: sibling
                        .lfs
                        .as_ref()
                        .and_then(|lfs| lfs.size)
                        .or(sibling.size),
                    blob,
                    sha256,
                })
            })
            .collect()
    }

    /// `model.checksum` against the hub's sha256, before anything is downloaded.
    fn check_pin(&self, request: &ModelRequest, hf: &HfRef, wanted: &[Wanted]) -> Result<()> {
        let (Some(expected), Some(path)) = (&request.checksum, &hf.path) else {
            return Ok(());
        };
        if expected.algorithm == Algorithm::Sha256
            && let Some(file) = wanted.iter().find(|file| file.path == *path)
            && let Some(sha256) = &file.sha256
            && *sha256 != expected.hex
        {
            return Err(model_error(
                request,
                format!(
                    "checksum mismatch for `{path}`: model.checksum is {expected}, the hub's file is sha256:{sha256}; nothing was staged"
                ),
                Some("the file changed on the hub or model.checksum is wrong: pin the revision (hf:org/repo@<commit>/file) or update model.checksum".to_string()),
            ));
        }
        Ok(())
    }

    fn check_space(
        &self,
        request: &ModelRequest,
        cache: &RepoCache,
        wanted: &[Wanted],
    ) -> Result<()> {
        let needed: u64 = wanted
            .iter()
            .filter(|file| !cache.blob(&file.blob).is_file())
            .filter_map(|file| {
                let partial = partial_len(&cache.blob(&file.blob));
                file.size.map(|size| size.saturating_sub(partial))
            })
            .sum();
        if needed == 0 {
            return Ok(());
        }
        let blobs = cache.root().join("blobs");
        if let Some(free) = (self.free_space)(&blobs)
            && free < needed
        {
            return Err(model_error(
                request,
                format!(
                    "not enough disk space: the download needs {} ({needed} bytes), {} ({free} bytes) are free for {}",
                    human_bytes(needed),
                    human_bytes(free),
                    blobs.display()
                ),
                Some(
                    "free some space, or point HF_HUB_CACHE (or HF_HOME) at a larger disk"
                        .to_string(),
                ),
            ));
        }
        Ok(())
    }

    /// Makes `blobs/<name>` present and verified (downloading it under the blob's lock when it
    /// is missing); returns the content's sha256 (`sha256:<hex>`).
    async fn stage_blob(
        &self,
        request: &ModelRequest,
        hf: &HfRef,
        cache: &RepoCache,
        endpoint: &str,
        commit: &str,
        file: &Wanted,
    ) -> Result<String> {
        let blob = cache.blob(&file.blob);
        let pinned = request
            .checksum
            .as_ref()
            .filter(|_| hf.path.as_deref() == Some(file.path.as_str()));
        let progress = self.progress.clone();
        let shown = format!("hf:{}/{}", hf.repo, file.path);
        let _lock = FileLock::acquire(&cache.lock_file(&file.blob), move || {
            progress.report(ProgressEvent::Note {
                message: format!("waiting for another process downloading {shown}"),
            });
        })
        .await?;
        if blob.is_file()
            && file
                .size
                .is_none_or(|size| std::fs::metadata(&blob).is_ok_and(|m| m.len() == size))
        {
            return self.existing_blob(request, &blob, file, pinned).await;
        }
        let url = parse_url(
            request,
            &format!(
                "{endpoint}/{}/resolve/{commit}/{}",
                hf.repo,
                quote(&file.path, true)
            ),
        )?;
        self.policy.check(&Action::Download {
            url: url.clone(),
            allowed_by_config: None,
        })?;
        let lfs = file.sha256.as_ref().map(|hex| Checksum {
            algorithm: Algorithm::Sha256,
            hex: hex.clone(),
        });
        let expected = lfs.or_else(|| {
            pinned
                .filter(|pin| pin.algorithm == Algorithm::Sha256)
                .cloned()
        });
        let fetched = self
            .fetcher
            .fetch(&FetchRequest {
                url,
                destination: blob.clone(),
                expected,
                max_bytes: file.size,
                authorization: self.bearer(),
            })
            .await
            .map_err(|error| download_error(request, error, true))?;
        if let Some(size) = file.size
            && fetched.bytes != size
        {
            let _ = std::fs::remove_file(&blob);
            return Err(model_error(
                request,
                format!(
                    "`{}` is {} bytes, the hub announced {size}; nothing was staged",
                    file.path, fetched.bytes
                ),
                None,
            ));
        }
        let sha256 = if fetched.checksum.algorithm == Algorithm::Sha256 {
            fetched.checksum.to_string()
        } else {
            hash_blocking(request, &blob, Algorithm::Sha256)
                .await?
                .to_string()
        };
        if let Some(pin) = pinned {
            self.verify_pin(request, &blob, &sha256, pin, file).await?;
        }
        Ok(sha256)
    }

    /// A blob already in the cache: its sha256 from its name (LFS) or by hashing it (small
    /// files), and the pin checked.
    async fn existing_blob(
        &self,
        request: &ModelRequest,
        blob: &Path,
        file: &Wanted,
        pinned: Option<&Checksum>,
    ) -> Result<String> {
        let sha256 = match &file.sha256 {
            Some(hex) => format!("sha256:{hex}"),
            None => hash_blocking(request, blob, Algorithm::Sha256)
                .await?
                .to_string(),
        };
        if let Some(pin) = pinned {
            self.verify_pin(request, blob, &sha256, pin, file).await?;
        }
        Ok(sha256)
    }

    async fn verify_pin(
        &self,
        request: &ModelRequest,
        blob: &Path,
        sha256: &str,
        pin: &Checksum,
        file: &Wanted,
    ) -> Result<()> {
        let actual = if pin.algorithm == Algorithm::Sha256 {
            sha256.to_string()
        } else {
            hash_blocking(request, blob, pin.algorithm)
                .await?
                .to_string()
        };
        if actual != pin.to_string() {
            if file.sha256.is_none() {
                // Not the hub's LFS content: the blob is only what this pin refused.
                let _ = std::fs::remove_file(blob);
            }
            return Err(model_error(
                request,
                format!(
                    "checksum mismatch for `{}`: model.checksum is {pin}, the file is {actual}; nothing was staged",
                    file.path
                ),
                Some("the file changed on the hub or model.checksum is wrong: pin the revision or update model.checksum".to_string()),
            ));
        }
        Ok(())
    }

    /// The error for a non-200 answer of the revision endpoint. The hub names the case in
    /// `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `GatedRepo`; what the Python
    /// client's `hf_raise_for_status` reads).
    fn api_error(
        &self,
        request: &ModelRequest,
        hf: &HfRef,
        revision: &str,
        api: &SafeUrl,
        answer: &QueryAnswer,
    ) -> Error {
        let code = answer.headers.get("x-error-code").map(String::as_str);
        let shown = api.redacted();
        let status = answer.status;
        match (status, code) {
            (_, Some("GatedRepo")) | (401 | 403, _) => {
                let with_token = if self.hf.token.is_some() {
                    "with the token given"
                } else {
                    "without a token"
                };
                model_error(
                    request,
                    format!(
                        "{shown}: HTTP {status}: the repository {} is gated or private and cannot be read {with_token}",
                        hf.repo
                    ),
                    Some(crate::stager::TOKEN_HINT.to_string()),
                )
            }
            (404, Some("RevisionNotFound")) => model_error(
                request,
                format!("{shown}: HTTP 404: the repository {} has no revision `{revision}`", hf.repo),
                Some("check the branch, tag or commit (hf:org/repo@<revision>/file or model.revision)".to_string()),
            ),
            (404, _) => model_error(
                request,
                format!("{shown}: HTTP 404: no repository {} on the hub", hf.repo),
                Some("check the repository name (org/repo, case-sensitive); a private one needs HF_TOKEN".to_string()),
            ),
            _ => model_error(
                request,
                format!("{shown}: HTTP {status} from the hub"),
                Some("the hub failed or is overloaded; try again later".to_string()),
            ),
        }
    }
}

/// The catalog id of a `hf:` model at a commit (see [`crate::catalog`]).
pub(crate) fn entry_id(hf: &HfRef, commit: &str, include: &[String], exclude: &[String]) -> String {
    let short = &commit[..12.min(commit.len())];
    match &hf.path {
        Some(path) => format!("hf:{}/{path}@{short}", hf.repo),
        None if include.is_empty() && exclude.is_empty() => format!("hf:{}@{short}", hf.repo),
        None => {
            let filters = format!("include={include:?} exclude={exclude:?}");
            let digest = hex::encode(sha2::Sha256::digest(filters.as_bytes()));
            format!("hf:{}@{short}~{}", hf.repo, &digest[..8])
        }
    }
}

fn new_entry(
    request: &ModelRequest,
    hf: &HfRef,
    cache: &RepoCache,
    commit: &str,
    mut files: Vec<CatalogFile>,
) -> CatalogEntry {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let local_path = match &hf.path {
        Some(path) => cache.snapshot_file(commit, path),
        None => cache.snapshot(commit),
    };
    CatalogEntry {
        id: entry_id(hf, commit, &request.include, &request.exclude),
        local_path,
        lifecycle: Lifecycle::Active,
        digest: entry_digest(&files),
        last_verified_ms: None,
        source: request.reference.to_string(),
        revision: Some(commit.to_string()),
        bytes: files.iter().map(|file| file.bytes).sum(),
        files,
        cache_root: Some(cache.root()),
    }
}

/// Header checks of every file and `model.checksum` of the named one, on a staged entry.
fn verify_staged(request: &ModelRequest, entry: &CatalogEntry) -> Result<()> {
    for file in &entry.files {
        check_header(&file.local_path)
            .map_err(|message| corrupt(request, &file.local_path, &message))?;
    }
    if let Some(pin) = &request.checksum
        && let Some(file) = entry
            .files
            .iter()
            .find(|file| file.local_path == entry.local_path)
    {
        let actual = match (&file.sha256, pin.algorithm) {
            (Some(sha256), Algorithm::Sha256) => sha256.clone(),
            _ => adapters_binary::hash_file(&file.local_path, pin.algorithm)?
                .0
                .to_string(),
        };
        if actual != pin.to_string() {
            return Err(model_error(
                request,
                format!(
                    "checksum mismatch for {}: model.checksum is {pin}, the staged file is {actual}",
                    file.local_path.display()
                ),
                Some("the file changed on the hub or model.checksum is wrong: pin the revision or update model.checksum".to_string()),
            ));
        }
    }
    Ok(())
}

fn corrupt(request: &ModelRequest, path: &Path, message: &str) -> Error {
    model_error(
        request,
        format!("{} is corrupt: {message}", path.display()),
        Some(format!(
            "delete {} and stage it again; if the hub's file is broken, pick another revision (provisioning.model.revision)",
            path.display()
        )),
    )
}

/// A snapshot file staged by someone else, described for the catalog: its sha256 from the
/// blob's name when that is a sha256, else by hashing it.
fn describe_staged(cache: &RepoCache, commit: &str, path: &str) -> Result<CatalogFile> {
    let local_path = cache.snapshot_file(commit, path);
    let metadata =
        std::fs::metadata(&local_path).map_err(|e| Error::io("inspect", &local_path, e))?;
    let stored = std::fs::read_link(&local_path).ok().map(|target| {
        local_path
            .parent()
            .map_or_else(|| target.clone(), |parent| parent.join(&target))
    });
    let named = stored
        .as_ref()
        .and_then(|blob| blob.file_name())
        .and_then(|name| name.to_str())
        .filter(|name| name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|name| format!("sha256:{}", name.to_ascii_lowercase()));
    let sha256 = match named {
        Some(sha256) => sha256,
        None => adapters_binary::hash_file(&local_path, Algorithm::Sha256)?
            .0
            .to_string(),
    };
    let stored = stored.map(|blob| lexical(&blob));
    Ok(CatalogFile {
        path: path.to_string(),
        local_path,
        bytes: metadata.len(),
        sha256: Some(sha256),
        stored,
    })
}

/// Checks the headers of the downloaded blobs, then links them into the snapshot.
fn link_snapshot(
    request: &ModelRequest,
    cache: &RepoCache,
    commit: &str,
    files: &[(Wanted, String)],
) -> Result<Vec<CatalogFile>> {
    for (file, _) in files {
        let blob = cache.blob(&file.blob);
        // The blob has no extension: check it under the repository path's name.
        crate::check::check_header_as(&blob, &file.path)
            .map_err(|message| {
                model_error(
                    request,
                    format!("`{}` ({}) is corrupt: {message}; nothing was staged", file.path, blob.display()),
                    Some("the hub's file is broken or not what its name says; pick another revision or file".to_string()),
                )
            })?;
    }
    let mut out = Vec::with_capacity(files.len());
    for (file, sha256) in files {
        let blob = cache.blob(&file.blob);
        let link = cache.snapshot_file(commit, &file.path);
        symlink_atomically(&RepoCache::link_target(&file.path, &file.blob), &link)?;
        let bytes = std::fs::metadata(&blob)
            .map_err(|e| Error::io("inspect", &blob, e))?
            .len();
        out.push(CatalogFile {
            path: file.path.clone(),
            local_path: link,
            bytes,
            sha256: Some(sha256.clone()),
            stored: Some(blob),
        });
    }
    Ok(out)
}

/// Every file (or link to one) under a snapshot directory, as `/`-separated relative paths.
fn list_snapshot(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((current, prefix)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                pending.push((path, relative));
            } else if path.is_file() {
                out.push(relative);
            }
        }
    }
    out.sort();
    out
}

fn partial_len(blob: &Path) -> u64 {
    adapters_binary::partial_path(blob)
        .ok()
        .and_then(|partial| std::fs::metadata(partial).ok())
        .map_or(0, |metadata| metadata.len())
}

async fn hash_blocking(
    request: &ModelRequest,
    path: &Path,
    algorithm: Algorithm,
) -> Result<Checksum> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || adapters_binary::hash_file(&owned, algorithm))
        .await
        .map_err(|error| model_error(request, format!("hashing did not finish: {error}"), None))?
        .map(|(checksum, _)| checksum)
}

fn parse_url(request: &ModelRequest, text: &str) -> Result<SafeUrl> {
    SafeUrl::parse(text).map_err(|message| {
        model_error(
            request,
            format!("`{}` {message}", redact(text)),
            Some("check HF_ENDPOINT".to_string()),
        )
    })
}

fn redact(url: &str) -> String {
    adapters_binary::redact(url)
}

/// Percent-encodes `text` as Python's `urllib.parse.quote` does (letters, digits and `_.-~`
/// kept; `/` kept when `keep_slash`), which is how the Python client writes revisions
/// (`quote(revision, safe="")`) and file paths (`quote(filename)`) into URLs.
pub(crate) fn quote(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(byte, b'_' | b'.' | b'-' | b'~')
            || (keep_slash && byte == b'/');
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn quoting_follows_python() {
        assert_eq!(quote("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(quote("a b/c+d.gguf", true), "a%20b/c%2Bd.gguf");
        assert_eq!(quote("main", false), "main");
    }

    #[test]
    fn ids() {
        let hf: HfRef = "org/repo/m.gguf".parse().unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            entry_id(&hf, commit, &[], &[]),
            "hf:org/repo/m.gguf@0123456789ab"
        );
        let whole: HfRef = "org/repo".parse().unwrap();
        assert_eq!(
            entry_id(&whole, commit, &[], &[]),
            "hf:org/repo@0123456789ab"
        );
        let filtered = entry_id(&whole, commit, &["*.json".to_string()], &[]);
        assert!(
            filtered.starts_with("hf:org/repo@0123456789ab~"),
            "{filtered}"
        );
        assert_eq!(filtered.len(), "hf:org/repo@0123456789ab~".len() + 8);
    }

    #[test]
    fn normalizes_link_targets() {
        assert_eq!(
            lexical(Path::new("/c/m/snapshots/x/a/../../../blobs/b")),
            PathBuf::from("/c/m/blobs/b")
        );
    }
}
