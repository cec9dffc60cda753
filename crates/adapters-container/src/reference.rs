//! Image references: `spec.image` plus its tag or digest, normalised the way the registry client
//! and the container runtimes understand them (no registry → `docker.io`, one-component names on
//! Docker Hub → `library/…`).

use oci_client::Reference;
use provisioner_core::{Error, ImageSpec, Result};

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
    /// Parses `image` (which may itself carry `:tag` or `@sha256:…`) with an optional separate
    /// tag and digest. A tag that looks like a digest (`sha256:…`) counts as the digest.
    pub fn parse(image: &str, tag: Option<&str>, digest: Option<&str>) -> Result<ImageRef> {
        let invalid = |message: String| {
            Error::Source {
            repo: image.to_string(),
            reference: tag.or(digest).unwrap_or("latest").to_string(),
            message,
            hint: Some(
                "write the image as [REGISTRY[:PORT]/]REPOSITORY, with `tag:` and/or `digest: sha256:…`"
                    .to_string(),
            ),
        }
        };
        let parsed: Reference = image
            .trim()
            .parse()
            .map_err(|e| invalid(format!("not a valid image reference: {e}")))?;
        let (mut tag, mut digest) = (
            tag.map(str::to_string),
            digest
                .map(str::to_string)
                .or(parsed.digest().map(str::to_string)),
        );
        if let Some(t) = tag.clone()
            && t.contains(':')
        {
            if digest.is_some() && digest.as_deref() != Some(t.as_str()) {
                return Err(invalid(format!(
                    "the tag `{t}` is a digest and differs from the digest `{}`",
                    digest.unwrap_or_default()
                )));
            }
            digest = Some(t);
            tag = None;
        }
        // `image:tag` without a separate tag: keep the embedded one; the crate defaults to
        // `latest` when nothing was written, which only applies when no digest pins it either.
        if tag.is_none() {
            let embedded = image.rsplit('/').next().unwrap_or(image);
            if embedded.split('@').next().unwrap_or("").contains(':') {
                tag = parsed.tag().map(str::to_string);
            } else if digest.is_none() {
                tag = Some("latest".to_string());
            }
        }
        if let Some(d) = &digest {
            check_digest(d).map_err(invalid)?;
        }
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(invalid(format!("`{t}` is not a valid tag")));
        }
        Ok(ImageRef {
            registry: parsed.registry().to_string(),
            repository: parsed.repository().to_string(),
            tag,
            digest,
        })
    }

    /// Parses the image of a spec.
    pub fn from_spec(spec: &ImageSpec) -> Result<ImageRef> {
        ImageRef::parse(&spec.image, spec.tag.as_deref(), spec.digest.as_deref())
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

    /// The registry client's reference for a tag.
    pub(crate) fn with_tag(&self, tag: &str) -> Reference {
        Reference::with_tag(
            self.registry.clone(),
            self.repository.clone(),
            tag.to_string(),
        )
    }

    /// The registry client's reference for a digest.
    pub(crate) fn with_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.registry.clone(),
            self.repository.clone(),
            digest.to_string(),
        )
    }
}

/// Whether `digest` is `sha256:` followed by 64 lowercase hex digits.
pub fn check_digest(digest: &str) -> std::result::Result<(), String> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "`{digest}` is not a digest (expected sha256: and 64 lowercase hex digits)"
        )),
    }
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// The `sha256:…` digest of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
