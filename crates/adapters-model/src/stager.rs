//! What every scheme's staging shares: the ports, the settings, and the errors they report.

use std::path::Path;
use std::sync::Arc;

use adapters_host::LocalModels;
use provisioner_core::{Error, Fetcher, ModelRequest, Policy, Progress};

use crate::settings::HfSettings;

/// Tells how many bytes are free for the file system holding a path (`None`: unknown, no
/// check). The default is `adapters_model::free_space` (`statvfs`); tests inject a smaller figure.
pub type FreeSpace = dyn Fn(&Path) -> Option<u64> + Send + Sync;

/// How hints name `orchctl model pull` when the adapter does not know the pool's config file;
/// the CLI puts the exact command (config file, pool, host flags) in its place.
pub const PULL_HINT: &str = "orchctl model pull --config <the pool's config>";

/// The hint for a gated or private repository (401/403 from the hub).
pub(crate) const TOKEN_HINT: &str = "the repository is gated or private: set HF_TOKEN (or run `huggingface-cli login`) with a token that has access, and accept the repository's conditions on its hub page";

/// The ports and settings the schemes stage with (`hf`, `web`).
pub(crate) struct Stager {
    pub(crate) local: LocalModels,
    pub(crate) fetcher: Arc<dyn Fetcher>,
    pub(crate) policy: Arc<dyn Policy>,
    pub(crate) progress: Arc<dyn Progress>,
    pub(crate) hf: HfSettings,
    pub(crate) free_space: Arc<FreeSpace>,
}

/// An [`Error::Model`] for `request`.
pub(crate) fn model_error(request: &ModelRequest, message: String, hint: Option<String>) -> Error {
    Error::Model {
        reference: request.reference.to_string(),
        message,
        hint,
    }
}

/// A failed download or query as a model error: the URL (without credentials) and the
/// fetcher's words; 401/403 and 404 get the hub's hints; policy refusals, cancellation and
/// local disk errors stay what they are.
pub(crate) fn download_error(request: &ModelRequest, error: Error, hub: bool) -> Error {
    match error {
        Error::Download { url, message, hint } => {
            let status = message
                .strip_prefix("HTTP ")
                .and_then(|rest| rest.get(..3))
                .and_then(|code| code.parse::<u16>().ok());
            let hint = match (status, hub) {
                (Some(401 | 403), true) => Some(TOKEN_HINT.to_string()),
                (Some(404), true) => Some(
                    "check the repository and file name on the hub (they are case-sensitive)"
                        .to_string(),
                ),
                (Some(401 | 403), false) => Some(
                    "the server refused access; check provisioning.model.ref and any credentials it needs"
                        .to_string(),
                ),
                (Some(404 | 410), false) => Some("check provisioning.model.ref".to_string()),
                _ => hint,
            };
            model_error(request, format!("download {url}: {message}"), hint)
        }
        other => other,
    }
}
