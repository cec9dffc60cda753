//! Plans: the typed, deterministic list of steps a prepare will take, shown before anything runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{Engine, Mode};
use crate::prepared::{Backend, Probe};

/// What `prepare` will do for one pool. The same inputs always give the same plan and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Pool id.
    pub pool_id: String,
    /// Engine.
    pub engine: Engine,
    /// Provisioning mode.
    pub mode: Mode,
    /// Steps, in execution order.
    pub steps: Vec<Step>,
}

/// A tool a step needs on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolRequirement {
    /// Program names; any one of them satisfies the requirement (e.g. `c++`, `g++`, `clang++`).
    pub programs: Vec<String>,
    /// Why it is needed.
    pub purpose: String,
}

/// One typed step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Check that tools are installed; fail fast with install commands.
    Preflight {
        /// Tools required.
        tools: Vec<ToolRequirement>,
    },
    /// Resolve the model through the ModelProvisioner port.
    ResolveModel {
        /// Reference as configured.
        reference: String,
    },
    /// Fetch a git repository and resolve the ref to a full commit.
    FetchSource {
        /// Repository URL.
        repo: String,
        /// Tag, branch or commit.
        reference: String,
        /// Whether submodules are checked out.
        submodules: bool,
    },
    /// Download a pinned artefact, hashing while streaming.
    Download {
        /// URL.
        url: String,
        /// Expected checksum.
        checksum: Option<String>,
        /// Expected size, when pinned.
        size: Option<u64>,
    },
    /// Unpack into staging with every entry validated, then install atomically.
    Unpack {
        /// Archive format inferred from the URL.
        format: String,
        /// Executable to find inside.
        executable: String,
        /// Caps.
        limits: crate::ports::UnpackLimits,
    },
    /// Resolve an image to a digest, pull it by digest and verify it.
    PullImage {
        /// Repository with its registry.
        image: String,
        /// Tag, when configured.
        tag: Option<String>,
        /// Pinned digest, when configured.
        digest: Option<String>,
        /// Runtime: the configured one, or podman falling back to docker.
        runtime: String,
    },
    /// Install a pinned distribution package (or find it installed) and locate the executable
    /// in its file list.
    InstallPackage {
        /// Manager: the configured one, or `None` for the distribution's (detected at prepare).
        manager: Option<String>,
        /// Package name: the configured one, or `None` for the distribution's default.
        package: Option<String>,
        /// Exact version.
        version: String,
        /// Repository, when configured (credentials removed).
        repository: Option<String>,
        /// Executable looked up in the package's file list.
        executable: String,
        /// Backend the package must provide.
        backend: Backend,
        /// The pool's `allow_package_installs`.
        allowed: bool,
    },
    /// CMake configure.
    Configure {
        /// Generator (`Ninja`, `Unix Makefiles`), or the host default.
        generator: Option<String>,
        /// Normalised cache entries.
        cmake_flags: Vec<String>,
        /// Entries derived from the resolved commit (names only; values are known after fetch).
        commit_flags: Vec<String>,
        /// Backend the flags select.
        backend: Backend,
    },
    /// CMake build of targets.
    Build {
        /// Targets.
        targets: Vec<String>,
    },
    /// Atomic install of the built artefacts into the keyed cache.
    Install {
        /// Cache root for this engine.
        cache_dir: PathBuf,
        /// Artefacts copied from the build tree, relative to it.
        artifacts: Vec<String>,
        /// What the cache key is made of.
        key_inputs: Vec<String>,
    },
    /// What pool-managerd will spawn.
    Launch {
        /// Program (relative to the install dir until it is known).
        program: String,
        /// Arguments.
        args: Vec<String>,
        /// Environment (nothing else is inherited).
        env: BTreeMap<String, String>,
        /// Ports.
        ports: Vec<u16>,
        /// Readiness probe.
        readiness: Probe,
    },
}

impl Plan {
    /// A stable digest of the plan: BLAKE3 of its canonical JSON, 16 hex digits.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        blake3::hash(&json).to_hex()[..16].to_string()
    }
}
