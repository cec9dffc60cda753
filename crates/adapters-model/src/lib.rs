//! # adapters-model
//!
//! The [`ModelProvisioner`] port for real: [`Models`] makes a pool's model present on this host
//! and records it in the catalog of the models directory.
//!
//! | reference | what happens | where it lands |
//! | --- | --- | --- |
//! | `file:/abs`, `/abs`, `rel/path` | used where it is ([`adapters_host::LocalModels`]: existence, checksum) | nowhere (a catalog entry) |
//! | `hf:org/repo/path` | one file from the Hugging Face Hub; a split GGUF's first part (`…-00001-of-0000N.gguf`) brings every part | the Hugging Face cache ([`layout`]) |
//! | `hf:org/repo` | a repository snapshot, filtered by `model.include`/`model.exclude` | the Hugging Face cache |
//! | `https://…`, `http://…` | one file, or an archive unpacked with binary mode's safe unpacker | `<models dir>/url/v1/<key>/` |
//! | `s3://…`, `oci://…` | refused for now: "not supported yet" ([`Error::Model`], exit 8) | |
//!
//! ## Hugging Face
//!
//! Against the hub's documented HTTP API (the endpoints the Python client `huggingface_hub`
//! uses, <https://huggingface.co/docs/hub/api>), at `HF_ENDPOINT` ([`HfSettings`]):
//! - `GET {endpoint}/api/models/{org}/{repo}/revision/{revision}?blobs=true` resolves a branch,
//!   tag or commit: JSON with `sha` (the commit) and `siblings[]` (`rfilename`, `size`,
//!   `blobId` = the git object id, and for LFS files `lfs.sha256` and `lfs.size`);
//! - `GET {endpoint}/{org}/{repo}/resolve/{commit}/{path}` downloads a file; the hub answers
//!   large (LFS/Xet) files with a redirect to its storage hosts (`cdn-lfs.hf.co`,
//!   `cas-bridge.xethub.hf.co`), which with the default endpoint count as the hub for the host
//!   allowlist ([`HubPolicy`]); every redirect target is checked by the Policy port before it
//!   is contacted (the [`HttpFetcher`](adapters_binary::HttpFetcher) built `with_policy`), and
//!   a refused one names its host.
//!
//! Rules: the Policy port is asked (`Action::Download` of the API URL) before any connection;
//! the token (`HF_TOKEN`, else the token file) goes as `Authorization: Bearer` to the
//! endpoint's origin only, never to a storage host, and is never logged, traced or shown;
//! `HF_HUB_OFFLINE=1` means no network at all (staged models only, a missing one is an error).
//! A pinned commit (40 hex digits) that is staged needs no network; a branch or tag is resolved
//! once, recorded in `refs/<revision>`, and reused without network until `refresh`. Downloads go
//! through the [`Fetcher`] port (streamed into `blobs/<name>.partial`, hashed while streaming,
//! resumed after an interruption), one process at a time per blob (the Python client's lock
//! file); an LFS file is verified against the hub's sha256, and `model.checksum` (of the named
//! file, or a split GGUF's first part) always; nothing is linked into the snapshot, recorded in
//! `refs` or in the catalog until every file is verified. Free disk space is checked against
//! the sizes the hub reports before the first byte. File names from the hub that would escape
//! the snapshot (`..`, absolute, empty parts) are refused. Non-LFS files (configs) carry no
//! sha256 from the hub: they are hashed while downloading and the hash recorded.
//!
//! Every staged `.gguf` and `.safetensors` file passes [`check::check_header`] before the
//! artifact is returned (warm path included: a few bytes read per file).
//!
//! ## Warm path
//!
//! A model already staged is used without network access and without re-hashing: its catalog
//! entry lists its files with sizes and hashes, and each snapshot file is checked to exist with
//! its recorded size (one `stat` per file, plus the header check). A model staged by someone
//! else (the Python client) is hashed once, unless its blob's name is its sha256, and recorded.
//!
//! ## Errors
//!
//! Everything about the model is [`Error::Model`] (exit 8) naming the reference, with the URL
//! (without credentials) for a 404 and a hint to set `HF_TOKEN` for a 401/403, a stall or a
//! truncated download, a checksum mismatch, too little disk space, a corrupt header;
//! [`Error::PolicyDenied`] (exit 9) when the policy refuses a host; [`Error::Io`] (exit 10)
//! for the local disk.

pub mod catalog;
pub mod check;
#[cfg(feature = "test-support")]
pub mod fake_hub;
mod fsutil;
mod hf;
pub mod layout;
pub mod names;
pub mod settings;
mod stager;
mod web;

use std::path::Path;
use std::sync::Arc;

use adapters_host::LocalModels;
use async_trait::async_trait;
use provisioner_core::{
    Error, Fetcher, ModelArtifact, ModelProvisioner, ModelRef, ModelRequest, Policy, Progress,
    Result,
};

pub use catalog::{Catalog, CatalogDigest, CatalogEntry, CatalogFile, Lifecycle, Removed};
pub use fsutil::free_space;
pub use layout::RepoCache;
pub use settings::{DEFAULT_ENDPOINT, HUB_STORAGE_DOMAINS, HfSettings, HubPolicy};
use stager::Stager;
pub use stager::{FreeSpace, PULL_HINT};

/// The model provisioner: dispatches on the reference's scheme (see the crate documentation).
pub struct Models {
    stager: Stager,
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Models")
            .field("hf", &self.stager.hf)
            .finish_non_exhaustive()
    }
}

impl Models {
    /// A provisioner downloading through `fetcher` (give it an
    /// [`HttpFetcher`](adapters_binary::HttpFetcher) built `with_policy` of the same policy, so
    /// that redirect targets are checked too), asking `policy` before any connection, reporting
    /// to `progress`, with the Hugging Face settings `hf` ([`HfSettings::from_env`]).
    pub fn new(
        fetcher: Arc<dyn Fetcher>,
        policy: Arc<dyn Policy>,
        progress: Arc<dyn Progress>,
        hf: HfSettings,
    ) -> Models {
        Models {
            stager: Stager {
                local: LocalModels::new(),
                fetcher,
                policy,
                progress,
                hf,
                free_space: Arc::new(free_space),
            },
        }
    }

    /// Replaces the free-space probe (tests).
    pub fn with_free_space(mut self, probe: Arc<FreeSpace>) -> Models {
        self.stager.free_space = probe;
        self
    }

    /// The Hugging Face settings in use.
    pub fn hf_settings(&self) -> &HfSettings {
        &self.stager.hf
    }

    /// What is already staged for `request`, from local state only (the `refs` file and the
    /// catalog; no network, no hashing, no process), for plans: the commit and size to show.
    /// `None` when nothing is recorded, when a branch would be resolved again (`refresh`), or
    /// for `s3:`/`oci:`.
    pub fn staged(&self, request: &ModelRequest) -> Option<CatalogEntry> {
        let catalog = Catalog::open(&request.models_dir);
        match &request.reference {
            ModelRef::HuggingFace(hf) => {
                let cache = RepoCache::new(self.stager.hf.hub_cache.as_deref()?, &hf.repo);
                let revision = hf.revision.as_deref().unwrap_or("main");
                let commit = if names::is_commit(revision) {
                    revision.to_ascii_lowercase()
                } else if request.refresh || names::check_repo_path(revision).is_err() {
                    return None;
                } else {
                    cache.read_ref(revision)?
                };
                let id = hf::entry_id(hf, &commit, &request.include, &request.exclude);
                catalog.get(&id).ok().flatten()
            }
            ModelRef::Url(url) => {
                let source = url.redacted();
                catalog
                    .entries()
                    .ok()?
                    .into_iter()
                    .find(|entry| entry.id.starts_with("url:") && entry.source == source)
            }
            ModelRef::File(path) => catalog
                .get(&format!(
                    "file:{}",
                    std::fs::canonicalize(path).ok()?.display()
                ))
                .ok()
                .flatten(),
            ModelRef::Relative(path) => catalog
                .get(&format!(
                    "file:{}",
                    std::fs::canonicalize(request.models_dir.join(path))
                        .ok()?
                        .display()
                ))
                .ok()
                .flatten(),
            ModelRef::S3(_) | ModelRef::Oci(_) => None,
        }
    }
}

#[async_trait]
impl ModelProvisioner for Models {
    async fn ensure_present(&self, request: &ModelRequest) -> Result<ModelArtifact> {
        let staged = match &request.reference {
            ModelRef::Relative(path)
                if as_digest(path).is_some() && !request.models_dir.join(path).exists() =>
            {
                by_digest(request, as_digest(path).unwrap_or_default())
            }
            ModelRef::File(_) | ModelRef::Relative(_) => self.stager.ensure_local(request).await,
            ModelRef::HuggingFace(hf) => self.stager.ensure_hf(request, hf).await,
            ModelRef::Url(url) => self.stager.ensure_url(request, url).await,
            ModelRef::S3(_) | ModelRef::Oci(_) => Err(not_yet(request)),
        };
        // A refusal names the host it refused; the user also needs to know which model wanted it.
        staged.map_err(|error| match error {
            Error::PolicyDenied { action, hint } => Error::PolicyDenied {
                action: format!("{action}, needed for model {}", request.reference),
                hint,
            },
            other => other,
        })
    }
}

/// `sha256:<8 to 64 hex>`, as llama-orch's pool `model` may name a staged model by its digest
/// (abbreviated or whole).
fn as_digest(path: &Path) -> Option<&str> {
    let text = path.to_str()?;
    let hex = text.strip_prefix("sha256:")?;
    // At least 8 hex digits (llama-orch writes ids such as `sha256:0123abcd`), at most 64.
    ((8..=64).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(text)
}

/// The staged model whose catalog digest is `digest` (llama-orch's pool-level
/// `model: sha256:…`).
fn by_digest(request: &ModelRequest, digest: &str) -> Result<ModelArtifact> {
    let catalog = Catalog::open(&request.models_dir);
    match catalog.find(&digest.to_ascii_lowercase())? {
        Some(entry) if entry.local_path.exists() => Ok(entry.artifact()),
        Some(entry) => Err(Error::Model {
            reference: digest.to_string(),
            message: format!(
                "the catalog names {} for this digest, but it is gone",
                entry.local_path.display()
            ),
            hint: Some(format!(
                "stage it again ({PULL_HINT}) or remove the entry: orchctl model rm {}",
                entry.id
            )),
        }),
        None => Err(Error::Model {
            reference: digest.to_string(),
            message: format!(
                "no staged model has this digest (catalog {})",
                catalog.path().display()
            ),
            hint: Some(
                "set provisioning.model.ref to where the model comes from (hf:org/repo/file, https://…), or stage it first; list the staged ones with: orchctl model ls"
                    .to_string(),
            ),
        }),
    }
}

/// The refusal of a scheme whose staging comes later (`s3:`, `oci:`).
fn not_yet(request: &ModelRequest) -> Error {
    let scheme = request.reference.scheme();
    Error::Model {
        reference: request.reference.to_string(),
        message: format!(
            "the {scheme}: scheme is not supported yet; models come from hf:, https:// or local files for now"
        ),
        hint: Some(
            "download the model yourself and set provisioning.model.ref to file:/absolute/path/to/the/model"
                .to_string(),
        ),
    }
}
