//! What `prepare` hands to its caller: everything needed to spawn and check the engine.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{Engine, Mode};

/// A ready-to-spawn engine. pool-managerd spawns `bin` with `args` in `workdir` with exactly `env`
/// (a cleared environment plus these variables) and probes `metadata.readiness`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedEngine {
    /// Pool id.
    pub pool_id: String,
    /// Engine.
    pub engine: Engine,
    /// Absolute path of the program.
    pub bin: PathBuf,
    /// Arguments, each one argv element (never passed through a shell).
    pub args: Vec<String>,
    /// Environment of the process; nothing else is inherited.
    pub env: BTreeMap<String, String>,
    /// Ports the engine listens on; the first is the HTTP API.
    pub ports: Vec<u16>,
    /// Working directory.
    pub workdir: PathBuf,
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
    /// Compute backend.
    pub backend: Backend,
    /// Readiness probe.
    pub readiness: Probe,
    /// How to check that the running engine is this build.
    pub identity: Option<IdentityCheck>,
    /// Model file or directory given to the engine.
    pub model_path: PathBuf,
    /// Cache key of the installed artefact.
    pub cache_key: Option<String>,
    /// Whether prepare found the artefact already installed.
    pub cache_hit: bool,
    /// Metadata file written next to the artefact.
    pub metadata_file: Option<PathBuf>,
    /// Digest of the plan this came from.
    pub plan_digest: String,
}

/// Where source-mode code came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceProvenance {
    /// Repository URL.
    pub repo: String,
    /// Ref as configured.
    pub reference: String,
    /// Full commit SHA it resolved to.
    pub commit: String,
}

/// Compute backend of an engine build.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// CPU only.
    #[default]
    Cpu,
    /// NVIDIA CUDA.
    Cuda,
    /// AMD HIP/ROCm.
    Hip,
    /// Vulkan.
    Vulkan,
}

impl Backend {
    /// Every backend.
    pub const ALL: [Backend; 4] = [Backend::Cpu, Backend::Cuda, Backend::Hip, Backend::Vulkan];

    /// Parses a lower-case name.
    pub fn parse(text: &str) -> Option<Backend> {
        Backend::ALL.into_iter().find(|b| b.as_str() == text)
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::Hip => "hip",
            Backend::Vulkan => "vulkan",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An HTTP readiness probe: `GET http://127.0.0.1:{port}{path}` answers `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Port to probe.
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
    engine: crate::config::Engine,
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
pub fn binary_engine_version(
    engine: crate::config::Engine,
    version: &str,
    checksum: &crate::checksum::Checksum,
) -> String {
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
