//! What `prepare` hands to its caller: everything needed to spawn and check the engine, and
//! nothing secret (secrets travel in files whose paths it names).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checksum::Checksum;
use crate::names::PoolId;
use crate::vocabulary::{Backend, Engine, Mode};

/// A ready-to-spawn engine. A supervisor spawns `bin` with `args` in `workdir` with exactly
/// `env` plus the variables of `env_file` (nothing inherited), then probes
/// `metadata.readiness`. For an external pool (`mode: external`) `bin` and `workdir` are
/// `None`: there is nothing to spawn, only an endpoint to attach to.
///
/// No field holds a secret: the pool's `env` (every value a secret) is in `env_file`, a file
/// of mode 0600; a container runtime reads the same file through `--env-file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedEngine {
    /// Pool id.
    pub pool_id: PoolId,
    /// Engine.
    pub engine: Engine,
    /// Absolute path of the program; `None` for an external pool.
    pub bin: Option<PathBuf>,
    /// Arguments, each one argv element (never passed through a shell).
    pub args: Vec<String>,
    /// Environment the provisioner derives (device masks, library paths, a runtime's
    /// configuration). Never a secret.
    pub env: BTreeMap<String, String>,
    /// A file of `NAME=value` lines, mode 0600, holding the pool's `env`; the supervisor loads
    /// it into the engine's environment. `None` when the pool sets no `env`.
    pub env_file: Option<PathBuf>,
    /// Host ports the engine listens on, the HTTP API first; `0` is a free port chosen at
    /// launch (the supervisor finds and records the bound one).
    pub ports: Vec<u16>,
    /// Working directory; `None` for an external pool.
    pub workdir: Option<PathBuf>,
    /// Deterministic version: the same inputs on any host give the same string.
    pub engine_version: String,
    /// How it was made and how to check it.
    pub metadata: EngineMetadata,
}

/// Provenance and health information recorded with a prepared engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineMetadata {
    /// Provisioning mode.
    pub mode: Mode,
    /// Source provenance (source mode).
    pub source: Option<SourceProvenance>,
    /// Normalised build flags (source mode).
    pub build_flags: Vec<String>,
    /// Compute backend of what was installed; `None` when nothing shows it (an external
    /// engine).
    pub backend: Option<Backend>,
    /// Readiness probe.
    pub readiness: Probe,
    /// How to check that the running engine is this build.
    pub identity: Option<IdentityCheck>,
    /// Model file or directory given to the engine; `None` for an external pool.
    pub model_path: Option<PathBuf>,
    /// Cache key of the installed artefact.
    pub cache_key: Option<String>,
    /// Whether prepare found the artefact already installed.
    pub cache_hit: bool,
    /// Metadata file written next to the artefact.
    pub metadata_file: Option<PathBuf>,
    /// Digest of the plan this came from ([`crate::Plan::digest`]).
    pub plan_digest: String,
}

/// Where source-mode code came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceProvenance {
    /// Repository, without credentials.
    pub repo: String,
    /// Ref as configured (or the recipe's pinned default).
    pub reference: String,
    /// Full commit SHA it resolved to.
    pub commit: String,
}

/// An HTTP readiness probe: `GET http://127.0.0.1:{port}{path}` answers `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Port to probe; `0` means the port the engine bound at launch.
    pub port: u16,
    /// Path.
    pub path: String,
    /// Expected HTTP status.
    pub status: u16,
    /// How long to wait for readiness after spawn, in seconds.
    pub timeout_seconds: u64,
}

/// Checks that a running engine reports the build it was given: the JSON value at `json_pointer`
/// of `GET {path}` must contain `contains`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityCheck {
    /// Path to fetch.
    pub path: String,
    /// RFC 6901 pointer into the JSON body.
    pub json_pointer: String,
    /// Text the value must contain.
    pub contains: String,
}

/// The deterministic version of a source build: engine, commit, backend and a digest of the
/// normalised flags. The toolchain is deliberately left out, so replicas built from the same
/// inputs on different hosts report the same version.
pub fn source_engine_version(
    engine: Engine,
    commit: &str,
    backend: Backend,
    flags: &[String],
) -> String {
    let digest = blake3::hash(flags.join("\n").as_bytes());
    format!(
        "{engine}-{}-{backend}-{}",
        &commit[..commit.len().min(12)],
        &digest.to_hex()[..8]
    )
}

/// The deterministic version of a prebuilt artefact: engine, upstream version and checksum.
pub fn binary_engine_version(engine: Engine, version: &str, checksum: &Checksum) -> String {
    let version: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{engine}-{version}-{}-{}",
        checksum.algorithm.as_str(),
        &checksum.hex[..12]
    )
}

/// The version label of an external pool: the provisioner did not make it, so it names only
/// the engine and where it is.
pub fn external_engine_version(engine: Engine) -> String {
    format!("{engine}-external")
}
