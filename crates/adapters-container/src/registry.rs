//! Talking to the registry (oci-client): tag → digest, the manifest by digest (hash verified), the
//! config blob (hash verified) and its labels. Anonymous first; on 401 with credentials from the
//! auth files, the credential helpers they name, or the `LLAMA_ORCH_REGISTRY_*` variables
//! ([`CredentialSources`]).

use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE, OciDescriptor,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use provisioner_core::{Error, Result};

use crate::auth::{CredentialSources, Credentials, Search};
use crate::reference::{ImageRef, sha256_digest};

/// Labels read from the image config.
pub const REVISION_LABEL: &str = "org.opencontainers.image.revision";
/// Labels read from the image config.
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";

/// Manifests and config blobs larger than this are refused (they are small JSON documents).
const MAX_DOCUMENT: i64 = 16 * 1024 * 1024;

const MANIFEST_TYPES: [&str; 4] = [
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// What the registry said about an image.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// Manifest (or index) digest the tag points at, verified against the manifest bytes.
    pub digest: String,
    pub revision: Option<String>,
    pub version: Option<String>,
    /// Credentials that were needed, to hand to the runtime's pull.
    pub credentials: Option<Credentials>,
}

fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn client(registry: &str, insecure: bool) -> Client {
    install_crypto_provider();
    Client::new(ClientConfig {
        protocol: if insecure {
            ClientProtocol::HttpsExcept(vec![registry.to_string()])
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(60)),
        ..ClientConfig::default()
    })
}

/// Resolves `image` (tag and/or pinned digest) against its registry.
pub(crate) async fn resolve(
    image: &ImageRef,
    insecure: bool,
    sources: &CredentialSources<'_>,
) -> Result<Resolved> {
    let anonymous = resolve_with(image, insecure, &RegistryAuth::Anonymous).await;
    match anonymous {
        Ok(mut resolved) => {
            resolved.credentials = None;
            Ok(resolved)
        }
        Err(Failure::Unauthorized) => {
            let search = sources.lookup(&image.registry).await?;
            let Some(found) = search.found else {
                return Err(auth_error(
                    image,
                    sources.auth_files,
                    &format!(
                        "requires authentication and no credentials were found{}",
                        asked_helpers(&search)
                    ),
                ));
            };
            let credentials = found.credentials;
            let auth = RegistryAuth::Basic(
                credentials.username.clone(),
                credentials.password().to_string(),
            );
            match resolve_with(image, insecure, &auth).await {
                Ok(mut resolved) => {
                    resolved.credentials = Some(credentials);
                    Ok(resolved)
                }
                Err(Failure::Unauthorized) => Err(auth_error(
                    image,
                    sources.auth_files,
                    &format!(
                        "the registry rejected the credentials of user `{}` from {}{}",
                        credentials.username,
                        found.origin,
                        if credentials.username == IDENTITY_TOKEN_USER {
                            " (an identity token, which this tool cannot exchange for a registry token: log in with a user name and password or token instead)"
                        } else {
                            ""
                        }
                    ),
                )),
                Err(Failure::Other(error)) => Err(error),
            }
        }
        Err(Failure::Other(error)) => Err(error),
    }
}

/// The user name credential helpers give with an identity (OAuth2 refresh) token.
const IDENTITY_TOKEN_USER: &str = "<token>";

/// ` (docker-credential-x (selected by …); … had none for it)` when helpers were asked.
fn asked_helpers(search: &Search) -> String {
    let helpers: Vec<String> = search
        .empty_helpers
        .iter()
        .map(ToString::to_string)
        .collect();
    if helpers.is_empty() {
        String::new()
    } else {
        format!(" ({} had none for it)", helpers.join("; "))
    }
}

fn auth_error(image: &ImageRef, files: &[PathBuf], detail: &str) -> Error {
    let places: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    Error::Source {
        repo: image.name(),
        reference: image.asked(),
        message: format!("authentication failed for {}: {detail}", image.registry),
        hint: Some(format!(
            "log in with `podman login {0}` (or `docker login {0}`), or put credentials for {0} in one of: {1} (an `auths` entry, or a credential helper named by `credHelpers` or `credsStore`); or set LLAMA_ORCH_REGISTRY_USER and LLAMA_ORCH_REGISTRY_PASSWORD",
            image.registry,
            if places.is_empty() {
                "$REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json"
                    .to_string()
            } else {
                places.join(", ")
            }
        )),
    }
}

enum Failure {
    Unauthorized,
    Other(Error),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Other(error)
    }
}

async fn resolve_with(
    image: &ImageRef,
    insecure: bool,
    auth: &RegistryAuth,
) -> std::result::Result<Resolved, Failure> {
    let client = client(&image.registry, insecure);
    let digest = match &image.tag {
        Some(tag) => {
            let reference = image.with_tag(tag);
            let digest = match client.fetch_manifest_digest(&reference, auth).await {
                Ok(digest) => digest,
                Err(error) => {
                    let failure = classify(error, image, tag, "resolving the tag");
                    return Err(match failure {
                        Failure::Other(Error::Source { hint, .. }) if is_not_found(&hint) => {
                            Failure::Other(unknown_tag(&client, image, tag, auth).await)
                        }
                        other => other,
                    });
                }
            };
            if let Some(pinned) = &image.digest
                && *pinned != digest
            {
                return Err(Failure::Other(Error::Source {
                    repo: image.name(),
                    reference: tag.clone(),
                    message: format!(
                        "the pinned digest {pinned} differs from the digest the registry has for tag `{tag}`: {digest}"
                    ),
                    hint: Some(format!(
                        "if the tag was moved on purpose, pin the new digest ({digest}); otherwise the registry serves a different image than the one pinned"
                    )),
                }));
            }
            digest
        }
        None => image.digest.clone().unwrap_or_default(),
    };
    let manifest = fetch_manifest(&client, image, &digest, auth).await?;
    let manifest = match select_platform(&manifest)? {
        Some(child) => fetch_manifest(&client, image, &child, auth).await?,
        None => manifest,
    };
    let labels = fetch_labels(&client, image, &digest, &manifest).await?;
    Ok(Resolved {
        digest,
        revision: label(&labels, REVISION_LABEL),
        version: label(&labels, VERSION_LABEL),
        credentials: None,
    })
}

fn label(labels: &serde_json::Value, name: &str) -> Option<String> {
    labels.get(name)?.as_str().map(str::to_string)
}

fn tampered(image: &ImageRef, what: &str, expected: &str, actual: &str) -> Failure {
    Failure::Other(Error::Source {
        repo: image.name(),
        reference: image.asked(),
        message: format!(
            "the registry {} served a {what} that does not match its digest: expected {expected}, got {actual}",
            image.registry
        ),
        hint: Some(
            "the registry or something between it and this host altered the content; do not use this image until that is explained"
                .to_string(),
        ),
    })
}

/// Fetches a manifest by digest and checks that its bytes hash to the digest.
async fn fetch_manifest(
    client: &Client,
    image: &ImageRef,
    digest: &str,
    auth: &RegistryAuth,
) -> std::result::Result<serde_json::Value, Failure> {
    let reference = image.with_digest(digest);
    let (bytes, _) = client
        .pull_manifest_raw(&reference, auth, &MANIFEST_TYPES)
        .await
        .map_err(|e| match e {
            OciDistributionError::DigestError(inner) => {
                tampered(image, "manifest", digest, &digest_actual(inner))
            }
            other => classify(other, image, digest, "fetching the manifest"),
        })?;
    let actual = sha256_digest(&bytes);
    if actual != digest {
        return Err(tampered(image, "manifest", digest, &actual));
    }
    if bytes.len() as i64 > MAX_DOCUMENT {
        return Err(protocol(image, "the manifest is larger than 16 MiB"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| protocol(image, &format!("the manifest is not valid JSON: {e}")))
}

/// The computed digest of a verification error, else the error text.
fn digest_actual(error: oci_client::errors::DigestError) -> String {
    match error {
        oci_client::errors::DigestError::VerificationError { actual, .. } => actual,
        other => other.to_string(),
    }
}

fn protocol(image: &ImageRef, message: &str) -> Failure {
    Failure::Other(Error::Source {
        repo: image.name(),
        reference: image.asked(),
        message: format!("registry {}: {message}", image.registry),
        hint: None,
    })
}

/// For an index: the digest of the manifest for this host's platform.
fn select_platform(manifest: &serde_json::Value) -> std::result::Result<Option<String>, Failure> {
    let Some(entries) = manifest.get("manifests").and_then(|m| m.as_array()) else {
        return Ok(None);
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let found = entries.iter().find(|entry| {
        let platform = &entry["platform"];
        platform["os"] == "linux" && platform["architecture"] == arch
    });
    Ok(found
        .and_then(|entry| entry["digest"].as_str())
        .map(str::to_string))
}

/// Fetches the config blob named by the manifest, checks its digest and returns its labels.
async fn fetch_labels(
    client: &Client,
    image: &ImageRef,
    digest: &str,
    manifest: &serde_json::Value,
) -> std::result::Result<serde_json::Value, Failure> {
    let config = &manifest["config"];
    let Some(config_digest) = config["digest"].as_str() else {
        return Err(protocol(image, "the manifest names no config blob"));
    };
    let size = config["size"].as_i64().unwrap_or(0);
    if size > MAX_DOCUMENT {
        return Err(protocol(image, "the config blob is larger than 16 MiB"));
    }
    let descriptor = OciDescriptor {
        media_type: config["mediaType"].as_str().unwrap_or_default().to_string(),
        digest: config_digest.to_string(),
        size,
        ..OciDescriptor::default()
    };
    // The client already holds the credentials from the manifest requests.
    let reference: Reference = image.with_digest(digest);
    // The manifest's size is the registry's word: the body is cut at the cap whatever it says.
    let mut capped = CappedBuffer::default();
    let pulled = client.pull_blob(&reference, &descriptor, &mut capped).await;
    if capped.exceeded {
        return Err(protocol(image, "the config blob is larger than 16 MiB"));
    }
    pulled.map_err(|e| match e {
        OciDistributionError::DigestError(inner) => {
            tampered(image, "config blob", config_digest, &digest_actual(inner))
        }
        other => classify(other, image, config_digest, "fetching the config blob"),
    })?;
    let bytes = capped.bytes;
    let actual = sha256_digest(&bytes);
    if actual != config_digest {
        return Err(tampered(image, "config blob", config_digest, &actual));
    }
    let config: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| protocol(image, &format!("the config blob is not valid JSON: {e}")))?;
    Ok(config["config"]["Labels"].clone())
}

/// A buffer that refuses to grow past [`MAX_DOCUMENT`]: a write beyond it fails (ending the
/// download) and sets `exceeded`.
#[derive(Default)]
struct CappedBuffer {
    bytes: Vec<u8>,
    exceeded: bool,
}

impl tokio::io::AsyncWrite for CappedBuffer {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if (this.bytes.len() + buf.len()) as u64 > MAX_DOCUMENT as u64 {
            this.exceeded = true;
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "larger than 16 MiB",
            )));
        }
        this.bytes.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

const NOT_FOUND_HINT: &str = "check the image name and tag";

fn is_not_found(hint: &Option<String>) -> bool {
    hint.as_deref()
        .is_some_and(|h| h.starts_with(NOT_FOUND_HINT))
}

/// A tag the registry does not know: tells an unknown repository from an unknown tag by listing
/// the repository's tags (and shows a few of them).
async fn unknown_tag(client: &Client, image: &ImageRef, tag: &str, auth: &RegistryAuth) -> Error {
    let reference = image.with_tag(tag);
    let (message, hint) = match client.list_tags(&reference, auth, Some(20), None).await {
        Ok(tags) if !tags.tags.is_empty() => (
            format!(
                "repository `{}` on registry {} has no tag `{tag}`",
                image.repository, image.registry
            ),
            format!("tags it has: {}", tags.tags.join(", ")),
        ),
        Ok(_) => (
            format!(
                "repository `{}` on registry {} has no tag `{tag}` (it has no tags at all)",
                image.repository, image.registry
            ),
            format!("push {}:{tag} first, or check the name", image.name()),
        ),
        Err(_) => (
            format!(
                "registry {} has no repository `{}` (or it is not visible with these credentials)",
                image.registry, image.repository
            ),
            format!("{NOT_FOUND_HINT}: `{}`", image.name()),
        ),
    };
    Error::Source {
        repo: image.name(),
        reference: tag.to_string(),
        message,
        hint: Some(hint),
    }
}

/// Turns a client error into 401 (retry with credentials) or a clear error.
fn classify(error: OciDistributionError, image: &ImageRef, asked: &str, doing: &str) -> Failure {
    let not_found = |what: String| {
        Failure::Other(Error::Source {
            repo: image.name(),
            reference: asked.to_string(),
            message: what,
            hint: Some(format!(
                "{NOT_FOUND_HINT}; list the tags with `skopeo list-tags docker://{}`",
                image.name()
            )),
        })
    };
    match error {
        OciDistributionError::UnauthorizedError { .. } => Failure::Unauthorized,
        OciDistributionError::AuthenticationFailure(_) => Failure::Unauthorized,
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                Failure::Unauthorized
            } else if codes.contains(&&OciErrorCode::NameUnknown) {
                not_found(format!(
                    "registry {} has no repository `{}`",
                    image.registry, image.repository
                ))
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NotFound))
            {
                not_found(format!(
                    "repository `{}` on registry {} has no manifest `{asked}`",
                    image.repository, image.registry
                ))
            } else {
                Failure::Other(Error::Source {
                    repo: image.name(),
                    reference: asked.to_string(),
                    message: format!("registry {} refused {doing}: {envelope}", image.registry),
                    hint: None,
                })
            }
        }
        OciDistributionError::ServerError { code: 401, .. } => Failure::Unauthorized,
        OciDistributionError::ServerError { code: 404, .. } => not_found(format!(
            "registry {} has no `{asked}` in repository `{}` (or no such repository)",
            image.registry, image.repository
        )),
        other => {
            let chain = error_chain(&other);
            Failure::Other(Error::Source {
                repo: image.name(),
                reference: asked.to_string(),
                message: format!("{doing} from registry {} failed: {chain}", image.registry),
                hint: Some(unreachable_hint(&image.registry, &chain)),
            })
        }
    }
}

/// What to do about a registry that could not be talked to, from the cause in the error chain:
/// `insecure: true` only when the registry answered plain HTTP to HTTPS.
pub(crate) fn unreachable_hint(registry: &str, chain: &str) -> String {
    let lower = chain.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if has(&[
        "invalidcontenttype",
        "corrupt message",
        "wrong version number",
        "http response to https",
    ]) {
        format!(
            "{registry} answers plain HTTP, not HTTPS: set `insecure: true` in provisioning.container for it (only for a registry you trust, such as a loopback mirror)"
        )
    } else if has(&["certificate", "unknownissuer", "invalid peer"]) {
        format!(
            "{registry}'s TLS certificate is not trusted by this host: add its CA to the system's trust store"
        )
    } else if has(&["connection refused"]) {
        format!(
            "nothing listens at {registry}: start the registry, or correct the host and port in provisioning.container.image"
        )
    } else if has(&[
        "dns error",
        "failed to lookup",
        "name or service not known",
        "no address associated",
        "temporary failure in name resolution",
    ]) {
        format!(
            "the host name of {registry} does not resolve: check provisioning.container.image (an image built or loaded on this host is named localhost/…)"
        )
    } else if has(&["timed out", "timeout", "deadline"]) {
        format!("{registry} did not answer in time: check the network path (proxy, firewall)")
    } else {
        format!("check that {registry} is reachable from this host")
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_document_is_cut_at_the_cap() {
        let mut capped = CappedBuffer::default();
        let chunk = vec![b' '; 1024 * 1024];
        for _ in 0..16 {
            capped.write_all(&chunk).await.unwrap();
        }
        assert!(!capped.exceeded);
        let error = capped.write_all(b"x").await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::FileTooLarge);
        assert!(capped.exceeded);
        assert_eq!(capped.bytes.len() as i64, MAX_DOCUMENT);
    }
}
