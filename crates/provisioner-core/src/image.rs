//! OCI image references, parsed once: `[REGISTRY[:PORT]/]REPOSITORY[:TAG][@sha256:DIGEST]`.
//!
//! The grammar and the normalisation follow the distribution project's reference package (the
//! one docker and podman use): the first path component is a registry when it holds a `.` or a
//! `:` or is `localhost`; otherwise the registry is `docker.io`, where one-component names live
//! under `library/`.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;

use crate::names::{Digest, ImageTag};

/// Docker Hub's registry name.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(with = "String")]
pub struct ImageReference {
    registry: String,
    repository: String,
    tag: Option<ImageTag>,
    digest: Option<Digest>,
}

const HOW: &str =
    "write the image as [REGISTRY[:PORT]/]REPOSITORY, optionally with :TAG and @sha256:DIGEST";

impl ImageReference {
    /// Registry host, with its port (`127.0.0.1:5000`, `ghcr.io`, `docker.io`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository path inside the registry (`vllm/vllm-openai`, `library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, when one is given.
    pub fn tag(&self) -> Option<&ImageTag> {
        self.tag.as_ref()
    }

    /// The pinned digest, when one is given.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository@digest`: what a runtime pulls and runs.
    pub fn pinned(&self, digest: &Digest) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The same repository with another tag and digest.
    pub fn with(&self, tag: Option<ImageTag>, digest: Option<Digest>) -> ImageReference {
        ImageReference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag,
            digest,
        }
    }

    /// Whether the image is local by nature (`localhost/…`, podman's name for images built or
    /// loaded on this host).
    pub fn is_localhost(&self) -> bool {
        self.registry == "localhost"
    }
}

impl FromStr for ImageReference {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() || text.len() > 512 {
            return Err(format!("`{text}` is not an image reference; {HOW}"));
        }
        let (rest, digest) = match text.rsplit_once('@') {
            Some((rest, digest)) => (rest, Some(digest.parse::<Digest>()?)),
            None => (text, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(colon) => {
                let at = last_slash + colon;
                (&rest[..at], Some(rest[at + 1..].parse::<ImageTag>()?))
            }
            None => (rest, None),
        };
        let components: Vec<&str> = name.split('/').collect();
        let first = components[0];
        let (registry, path) = if components.len() > 1
            && (first.contains('.') || first.contains(':') || first == "localhost")
        {
            (first.to_string(), components[1..].to_vec())
        } else {
            (DOCKER_HUB.to_string(), components)
        };
        if !valid_registry(&registry) {
            return Err(format!("`{registry}` is not a registry host; {HOW}"));
        }
        if let Some(bad) = path.iter().find(|c| !valid_path_component(c)) {
            return Err(format!(
                "`{bad}` in `{text}` is not a repository name component (lower-case letters, digits and single `.`, `_` or `-` between them); {HOW}"
            ));
        }
        let mut repository = path.join("/");
        if registry == DOCKER_HUB && path.len() == 1 {
            repository = format!("library/{repository}");
        }
        if repository.len() > 255 {
            return Err(format!(
                "the repository name in `{text}` is over 255 characters"
            ));
        }
        Ok(ImageReference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

fn valid_registry(registry: &str) -> bool {
    let (host, port) = match registry.strip_prefix('[') {
        Some(inner) => match inner.split_once(']') {
            Some((host, rest)) => (host, rest.strip_prefix(':')),
            None => return false,
        },
        None => match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        },
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        && !host.starts_with(['-', '.']);
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    host_ok && port_ok
}

fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1])
        && bytes
            .iter()
            .all(|&b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
        && !component.contains("..")
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

crate::text::serde_as_text!(ImageReference);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ImageReference {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn docker_hub_names_are_normalised() {
        let image = parse("busybox");
        assert_eq!(image.name(), "docker.io/library/busybox");
        assert_eq!(image.tag(), None);
        assert_eq!(
            parse("vllm/vllm-openai:v0.10.0").name(),
            "docker.io/vllm/vllm-openai"
        );
        assert_eq!(
            parse("vllm/vllm-openai:v0.10.0")
                .tag()
                .map(ImageTag::as_str),
            Some("v0.10.0")
        );
    }

    #[test]
    fn registries_with_ports_and_digests() {
        let digest = format!("sha256:{}", "0".repeat(64));
        let image = parse(&format!("127.0.0.1:5000/llama/server:b0@{digest}"));
        assert_eq!(image.registry(), "127.0.0.1:5000");
        assert_eq!(image.repository(), "llama/server");
        assert_eq!(image.tag().map(ImageTag::as_str), Some("b0"));
        assert_eq!(image.digest().map(Digest::as_str), Some(digest.as_str()));
        assert_eq!(
            image.to_string(),
            format!("127.0.0.1:5000/llama/server:b0@{digest}")
        );
        assert!(parse("localhost/llama/server:b0").is_localhost());
        assert_eq!(
            parse("ghcr.io/ggml-org/llama.cpp:server").registry(),
            "ghcr.io"
        );
    }

    #[test]
    fn invalid_references_say_how_to_write_one() {
        for bad in [
            "",
            "UPPER/case",
            "a//b",
            "-x/y",
            "x:",
            "x@sha256:zz",
            "reg:port/x",
        ] {
            let error = bad.parse::<ImageReference>().unwrap_err();
            assert!(!error.is_empty(), "{bad}");
        }
    }
}
