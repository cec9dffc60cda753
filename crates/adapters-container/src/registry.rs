//! Talking to the registry (through `distribution`, the manifests typed by oci-client): the
//! manifest a tag or digest names (its digest the hash of its bytes, checked against the pin and
//! the registry's `Docker-Content-Digest`), this platform's manifest from an index, the config
//! blob (hash verified) and its labels. Anonymous first; on 401 with credentials from the
//! auth files, the credential helpers they name, or the `LLAMA_ORCH_REGISTRY_*` variables
//! ([`CredentialSources`]).

use std::path::PathBuf;
use std::sync::Arc;

use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageIndex, OciManifest,
};
use provisioner_core::{Error, Policy, Result};

use crate::auth::{CredentialSources, Credentials, Search};
use crate::distribution::{Http, Problem, Session};
use crate::reference::{ImageRef, sha256_digest};

/// Labels read from the image config.
pub const REVISION_LABEL: &str = "org.opencontainers.image.revision";
/// Labels read from the image config.
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";

/// Manifests, config blobs and tag lists larger than this are refused (they are small JSON
/// documents): 16 MiB.
const MAX_DOCUMENT: u64 = 16 * 1024 * 1024;

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
    /// The digest of the image's config blob (verified; podman's image ID is its hex).
    pub config_digest: String,
    /// The config's `WorkingDir`, when set.
    pub working_dir: Option<String>,
    /// Credentials that were needed, to hand to the runtime's pull.
    pub credentials: Option<Credentials>,
}

/// Resolves `image` (tag and/or pinned digest) against its registry.
pub(crate) async fn resolve(
    image: &ImageRef,
    insecure: bool,
    sources: &CredentialSources<'_>,
    policy: Arc<dyn Policy>,
) -> Result<Resolved> {
    let http = Http::new(policy);
    let anonymous = resolve_with(&http, image, insecure, None).await;
    match anonymous {
        Ok(resolved) => Ok(resolved),
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
            match resolve_with(&http, image, insecure, Some(credentials.clone())).await {
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
    http: &Http,
    image: &ImageRef,
    insecure: bool,
    credentials: Option<Credentials>,
) -> std::result::Result<Resolved, Failure> {
    let mut session = Session::new(
        http.clone(),
        &image.registry,
        &image.repository,
        insecure,
        credentials,
    );
    // One request gives the manifest and its digest: the hash of the bytes served for the tag
    // (the `Docker-Content-Digest` header, when sent, must agree).
    let (digest, manifest) = match (&image.tag, &image.digest) {
        (Some(tag), pinned) => {
            let fetched = match fetch_manifest(&mut session, image, tag, None).await {
                Err(Failure::Other(Error::Source { hint, .. })) if is_not_found(&hint) => {
                    return Err(Failure::Other(unknown_tag(&mut session, image, tag).await));
                }
                other => other?,
            };
            if let Some(pinned) = pinned
                && *pinned != fetched.0
            {
                return Err(Failure::Other(Error::Source {
                    repo: image.name(),
                    reference: tag.clone(),
                    message: format!(
                        "the pinned digest {pinned} differs from the digest the registry has for tag `{tag}`: {}",
                        fetched.0
                    ),
                    hint: Some(format!(
                        "if the tag was moved on purpose, pin the new digest ({}); otherwise the registry serves a different image than the one pinned",
                        fetched.0
                    )),
                }));
            }
            fetched
        }
        (None, Some(digest)) => fetch_manifest(&mut session, image, digest, Some(digest)).await?,
        (None, None) => fetch_manifest(&mut session, image, "latest", None).await?,
    };
    let manifest = match manifest {
        OciManifest::Image(manifest) => manifest,
        OciManifest::ImageIndex(index) => {
            let child = select_platform(image, &index)?;
            match fetch_manifest(&mut session, image, &child, Some(&child))
                .await?
                .1
            {
                OciManifest::Image(manifest) => manifest,
                OciManifest::ImageIndex(_) => {
                    return Err(protocol(
                        image,
                        &format!("the index entry {child} for this platform is another index"),
                    ));
                }
            }
        }
    };
    let config = fetch_config(&mut session, image, &manifest.config).await?;
    let labels = &config["Labels"];
    Ok(Resolved {
        digest,
        revision: label(labels, REVISION_LABEL),
        version: label(labels, VERSION_LABEL),
        config_digest: manifest.config.digest.clone(),
        working_dir: config["WorkingDir"]
            .as_str()
            .filter(|dir| dir.starts_with('/'))
            .map(str::to_string),
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

/// Fetches the manifest `reference` names (a tag or a digest) and returns its digest (the
/// hash of its bytes) and its JSON. The bytes must hash to `expected` when given, and to the
/// `Docker-Content-Digest` the registry sent, when it sent one.
async fn fetch_manifest(
    session: &mut Session,
    image: &ImageRef,
    reference: &str,
    expected: Option<&str>,
) -> std::result::Result<(String, OciManifest), Failure> {
    let document = session
        .get(
            &format!("manifests/{reference}"),
            &MANIFEST_TYPES.join(", "),
            MAX_DOCUMENT,
        )
        .await
        .map_err(|problem| classify(problem, image, reference, "fetching the manifest"))?;
    let actual = sha256_digest(&document.body);
    let claimed = document
        .headers
        .get("docker-content-digest")
        .and_then(|value| value.to_str().ok())
        .filter(|value| value.starts_with("sha256:"));
    for expected in [expected, claimed].into_iter().flatten() {
        if expected != actual {
            return Err(tampered(image, "manifest", expected, &actual));
        }
    }
    let manifest = serde_json::from_slice(&document.body)
        .map_err(|e| protocol(image, &format!("the manifest is not valid JSON: {e}")))?;
    Ok((actual, manifest))
}

fn protocol(image: &ImageRef, message: &str) -> Failure {
    Failure::Other(Error::Source {
        repo: image.name(),
        reference: image.asked(),
        message: format!("registry {}: {message}", image.registry),
        hint: None,
    })
}

/// For an index: the digest of the manifest for this host's platform (`linux` and the Go name
/// of this architecture, as the OCI image index names platforms).
fn select_platform(
    image: &ImageRef,
    index: &OciImageIndex,
) -> std::result::Result<String, Failure> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let platforms = || {
        index
            .manifests
            .iter()
            .filter_map(|entry| entry.platform.as_ref())
            .map(|platform| format!("{}/{}", platform.os, platform.architecture))
    };
    index
        .manifests
        .iter()
        .find(|entry| {
            entry.platform.as_ref().is_some_and(|platform| {
                platform.os.to_string() == "linux" && platform.architecture.to_string() == arch
            })
        })
        .map(|entry| entry.digest.clone())
        .ok_or_else(|| {
            protocol(
                image,
                &format!(
                    "the image index has no manifest for linux/{arch} (it has: {})",
                    platforms().collect::<Vec<_>>().join(", ")
                ),
            )
        })
}

/// Fetches the config blob named by the manifest, checks its digest and returns its `config`
/// object (labels, working directory).
async fn fetch_config(
    session: &mut Session,
    image: &ImageRef,
    config: &OciDescriptor,
) -> std::result::Result<serde_json::Value, Failure> {
    let config_digest = config.digest.as_str();
    // The manifest's size is the registry's word: the body is cut at the cap whatever it says.
    if u64::try_from(config.size).unwrap_or(0) > MAX_DOCUMENT {
        return Err(too_large(image, "config blob"));
    }
    let document = session
        .get(
            &format!("blobs/{config_digest}"),
            &config.media_type,
            MAX_DOCUMENT,
        )
        .await
        .map_err(|problem| match problem {
            Problem::TooLarge => too_large(image, "config blob"),
            other => classify(other, image, config_digest, "fetching the config blob"),
        })?;
    let actual = sha256_digest(&document.body);
    if actual != config_digest {
        return Err(tampered(image, "config blob", config_digest, &actual));
    }
    let config: serde_json::Value = serde_json::from_slice(&document.body)
        .map_err(|e| protocol(image, &format!("the config blob is not valid JSON: {e}")))?;
    Ok(config["config"].clone())
}

fn too_large(image: &ImageRef, what: &str) -> Failure {
    protocol(
        image,
        &format!(
            "the {what} is larger than {}, the most that is read (manifests and configs are small JSON documents)",
            provisioner_core::human_bytes(MAX_DOCUMENT)
        ),
    )
}

const NOT_FOUND_HINT: &str = "check the image name and tag";

fn is_not_found(hint: &Option<String>) -> bool {
    hint.as_deref()
        .is_some_and(|h| h.starts_with(NOT_FOUND_HINT))
}

/// A tag the registry does not know: tells an unknown repository from an unknown tag by listing
/// the repository's tags (and shows a few of them).
async fn unknown_tag(session: &mut Session, image: &ImageRef, tag: &str) -> Error {
    let listed = session
        .get("tags/list?n=20", "application/json", MAX_DOCUMENT)
        .await
        .ok()
        .and_then(|document| serde_json::from_slice::<serde_json::Value>(&document.body).ok())
        .map(|list| {
            list["tags"]
                .as_array()
                .map(|tags| {
                    tags.iter()
                        .filter_map(|tag| tag.as_str().map(str::to_string))
                        .take(20)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        });
    let (message, hint) = match listed {
        Some(tags) if !tags.is_empty() => (
            format!(
                "repository `{}` on registry {} has no tag `{tag}`",
                image.repository, image.registry
            ),
            format!("tags it has: {}", tags.join(", ")),
        ),
        Some(_) => (
            format!(
                "repository `{}` on registry {} has no tag `{tag}` (it has no tags at all)",
                image.repository, image.registry
            ),
            format!("push {}:{tag} first, or check the name", image.name()),
        ),
        None => (
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

/// Turns a failed request into 401 (retry with credentials) or a clear error.
fn classify(problem: Problem, image: &ImageRef, asked: &str, doing: &str) -> Failure {
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
    match problem {
        Problem::Unauthorized => Failure::Unauthorized,
        Problem::Refused(error) => Failure::Other(error),
        Problem::TooLarge => too_large(image, "manifest"),
        Problem::Status { status, errors } => {
            let has = |codes: &[&str]| {
                errors
                    .iter()
                    .any(|(code, _)| codes.contains(&code.as_str()))
            };
            if has(&["UNAUTHORIZED", "DENIED"]) {
                Failure::Unauthorized
            } else if has(&["NAME_UNKNOWN"]) {
                not_found(format!(
                    "registry {} has no repository `{}`",
                    image.registry, image.repository
                ))
            } else if has(&["MANIFEST_UNKNOWN", "NOT_FOUND", "BLOB_UNKNOWN"]) {
                not_found(format!(
                    "repository `{}` on registry {} has no manifest `{asked}`",
                    image.repository, image.registry
                ))
            } else if status == 404 {
                not_found(format!(
                    "registry {} has no `{asked}` in repository `{}` (or no such repository)",
                    image.registry, image.repository
                ))
            } else {
                let said: Vec<String> = errors
                    .iter()
                    .map(|(code, message)| format!("{code}: {message}"))
                    .collect();
                Failure::Other(Error::Source {
                    repo: image.name(),
                    reference: asked.to_string(),
                    message: format!(
                        "registry {} refused {doing}: HTTP {status}{}",
                        image.registry,
                        if said.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", said.join("; "))
                        }
                    ),
                    hint: None,
                })
            }
        }
        Problem::Transport(chain) => Failure::Other(Error::Source {
            repo: image.name(),
            reference: asked.to_string(),
            message: format!("{doing} from registry {} failed: {chain}", image.registry),
            hint: Some(unreachable_hint(&image.registry, &chain)),
        }),
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
