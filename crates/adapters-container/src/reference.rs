//! Image references as the registry client needs them, taken from the core's
//! [`ImageReference`] (parsed and normalised once, when the config was read: no registry →
//! `docker.io`, one-component names on Docker Hub → `library/…`).

use provisioner_core::ImageReference;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (with port), e.g. `127.0.0.1:5000` or `docker.io`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `llama/server` or `library/busybox`.
    pub repository: String,
    /// Tag, when one was given.
    pub tag: Option<String>,
    /// Pinned digest (`sha256:…`), when one was given.
    pub digest: Option<String>,
}

impl ImageRef {
    /// The registry client's view of a reference parsed by the core: no string is parsed again.
    pub fn from_reference(image: &ImageReference) -> ImageRef {
        ImageRef {
            registry: image.registry().to_string(),
            repository: image.repository().to_string(),
            tag: image.tag().map(|t| t.to_string()),
            digest: image.digest().map(|d| d.to_string()),
        }
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, the key of the tag index (`None` without a tag).
    pub fn tag_key(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `registry/repository@digest`.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The tag or digest asked for, for messages.
    pub fn asked(&self) -> String {
        self.tag
            .clone()
            .or_else(|| self.digest.clone())
            .unwrap_or_else(|| "latest".to_string())
    }
}

/// The `sha256:…` digest of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
