//! Plans: the typed, deterministic list of steps a prepare will take, shown before anything runs.
//!
//! A plan is computed without network access or processes. Values only the network knows (the
//! commit a tag names, an image tag's digest) are filled in when this host knows them from an
//! earlier prepare, otherwise they read "resolved at prepare"; such values are left out of the
//! plan's digest, so the digest depends on the configuration alone.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::names::{Generator, PoolId};
use crate::ports::UnpackLimits;
use crate::prepared::Probe;
use crate::text::{human_bytes, shell_quote};
use crate::tools::ToolRequirement;
use crate::vocabulary::{Backend, Engine, ManagerKind, Mode};

/// What `prepare` will do for one pool. The same configuration always gives the same plan
/// digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Pool id.
    pub pool_id: PoolId,
    /// Engine.
    pub engine: Engine,
    /// Provisioning mode (the configured one or the engine's default).
    pub mode: Mode,
    /// Steps, in execution order.
    pub steps: Vec<Step>,
    /// What the plan chose for the user: pinned defaults applied, flags mapped.
    pub notes: Vec<String>,
}

/// How the model reaches the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelStaging {
    /// A file or directory at a known path, checked at prepare.
    Path {
        /// The path.
        path: PathBuf,
        /// Its size in bytes, when known on this host (not part of the digest).
        bytes: Option<u64>,
    },
    /// The pool's `model` id, looked up as a name in a models directory at prepare.
    LookUp {
        /// The id.
        name: String,
        /// The directory.
        dir: PathBuf,
    },
    /// A remote scheme: fetched at prepare.
    AtPrepare {
        /// The scheme (`hf`, `https`, `s3`, `oci`).
        scheme: String,
    },
    /// A remote model an earlier prepare staged (from the catalog): prepare checks it again,
    /// without a download.
    Staged {
        /// The scheme (`hf`, `https`).
        scheme: String,
        /// Where it is: the file, or a repository's snapshot directory.
        path: PathBuf,
        /// The commit a `hf:` revision resolved to.
        revision: Option<String>,
        /// Its size in bytes (not part of the digest).
        bytes: u64,
    },
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
    /// Make the model present through the ModelProvisioner port.
    ResolveModel {
        /// Reference as configured (credentials removed).
        reference: String,
        /// How it is staged.
        staging: ModelStaging,
    },
    /// Fetch a git repository and resolve the ref to a full commit.
    FetchSource {
        /// Repository (credentials removed).
        repo: String,
        /// Tag, branch or commit.
        reference: String,
        /// Whether submodules are checked out.
        submodules: bool,
        /// The commit the ref names, when this host resolved it before; `None`: resolved at
        /// prepare (not part of the digest).
        commit: Option<String>,
    },
    /// Download a pinned artefact, hashing while streaming.
    Download {
        /// URL (credentials and query values removed).
        url: String,
        /// Expected checksum.
        checksum: String,
        /// Expected size in bytes, when pinned.
        size: Option<u64>,
    },
    /// Unpack into staging with every entry validated, then install atomically.
    Unpack {
        /// Archive format inferred from the URL.
        format: String,
        /// Executable to find inside.
        executable: String,
        /// Caps.
        limits: UnpackLimits,
    },
    /// Resolve an image to a digest, pull it by digest and verify it.
    PullImage {
        /// Repository with its registry.
        image: String,
        /// Tag, when one is pinned.
        tag: Option<String>,
        /// Digest pinned by the configuration.
        digest: Option<String>,
        /// The digest the tag resolved to on this host before; `None`: resolved at prepare
        /// (not part of the digest).
        resolved_digest: Option<String>,
        /// Runtime: the configured one, or podman falling back to docker.
        runtime: String,
    },
    /// Install a pinned distribution package (or find it installed) and locate the executable
    /// in its file list.
    InstallPackage {
        /// Manager: the configured one, or `None` for the distribution's (detected at prepare).
        manager: Option<ManagerKind>,
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
        /// Generator, or `None` for Ninja when installed, else make.
        generator: Option<Generator>,
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
    /// Write the pool's secrets into a file of mode 0600 that the engine's environment is
    /// loaded from.
    WriteEnvFile {
        /// The file.
        path: PathBuf,
        /// The variables it holds (names only).
        variables: Vec<String>,
    },
    /// Write the keys an engine option was given (`--api-key`) into a key file of mode 0600
    /// that the engine reads with its file option (`--api-key-file`): no key on a command line.
    WriteKeyFile {
        /// The file.
        path: PathBuf,
        /// The option the keys were given with (`--api-key`).
        option: String,
        /// The option that names the file (`--api-key-file`).
        file_option: String,
    },
    /// What the supervisor will spawn.
    Launch {
        /// Program (placeholders such as `{install_dir}` until prepare knows it).
        program: String,
        /// Arguments.
        args: Vec<String>,
        /// Environment the provisioner sets (never secrets).
        env: BTreeMap<String, String>,
        /// The pool's env file, when it has one.
        env_file: Option<PathBuf>,
        /// Host ports; `0` is chosen at launch.
        ports: Vec<u16>,
        /// Readiness probe.
        readiness: Probe,
    },
    /// Attach to an engine run outside this tool (`mode: external`).
    Attach {
        /// Its endpoint.
        endpoint: String,
        /// Readiness probe.
        readiness: Probe,
    },
}

impl Plan {
    /// A stable digest of the plan: BLAKE3 of its canonical JSON with values learnt from this
    /// host (commits, digests, sizes) and the notes left out, 16 hex digits. Two configurations
    /// that mean the same build (reordered flags, a legacy spelling) have the same digest.
    pub fn digest(&self) -> String {
        let mut inputs = self.clone();
        inputs.notes.clear();
        for step in &mut inputs.steps {
            step.forget_host_knowledge();
        }
        let json = serde_json::to_vec(&inputs).unwrap_or_default();
        blake3::hash(&json).to_hex()[..16].to_string()
    }
}

impl Step {
    /// Clears what this host knew from earlier work, keeping only configuration-derived values.
    fn forget_host_knowledge(&mut self) {
        match self {
            Step::FetchSource { commit, .. } => *commit = None,
            Step::PullImage {
                resolved_digest, ..
            } => *resolved_digest = None,
            Step::ResolveModel {
                staging: ModelStaging::Path { bytes, .. },
                ..
            } => *bytes = None,
            Step::ResolveModel { staging, .. }
                if matches!(staging, ModelStaging::Staged { .. }) =>
            {
                if let ModelStaging::Staged { scheme, .. } = staging {
                    *staging = ModelStaging::AtPrepare {
                        scheme: std::mem::take(scheme),
                    };
                }
            }
            Step::Preflight { .. }
            | Step::ResolveModel { .. }
            | Step::Download { .. }
            | Step::Unpack { .. }
            | Step::InstallPackage { .. }
            | Step::Configure { .. }
            | Step::Build { .. }
            | Step::Install { .. }
            | Step::WriteEnvFile { .. }
            | Step::WriteKeyFile { .. }
            | Step::Launch { .. }
            | Step::Attach { .. } => {}
        }
    }
}

fn readiness_text(probe: &Probe) -> String {
    let port = if probe.port == 0 {
        "the bound port".to_string()
    } else {
        format!("port {}", probe.port)
    };
    let auth = match &probe.auth {
        None => String::new(),
        Some(crate::prepared::ProbeAuth::KeyFile { path }) => {
            format!(", probes sending the API key from {}", path.display())
        }
        Some(crate::prepared::ProbeAuth::EnvFile { path, variable, .. }) => format!(
            ", probes sending the API key {variable} of {}",
            path.display()
        ),
    };
    format!(
        "ready when GET {} on {port} answers {} (waiting up to {} s){auth}",
        probe.path, probe.status, probe.timeout_seconds
    )
}

fn ports_text(ports: &[u16]) -> String {
    let words: Vec<String> = ports
        .iter()
        .map(|p| {
            if *p == 0 {
                "a free port chosen at launch".to_string()
            } else {
                p.to_string()
            }
        })
        .collect();
    words.join(", ")
}

impl fmt::Display for Step {
    /// The step as a sentence for humans.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Preflight { tools } => {
                let names: Vec<String> = tools
                    .iter()
                    .map(|t| format!("{} ({})", t.programs.join(" or "), t.purpose))
                    .collect();
                write!(
                    f,
                    "Check that the tools are installed: {}.",
                    names.join(", ")
                )
            }
            Step::ResolveModel { reference, staging } => match staging {
                ModelStaging::Path { path, bytes } => {
                    write!(f, "Use the model {reference} at {}", path.display())?;
                    match bytes {
                        Some(bytes) => write!(f, " ({}).", human_bytes(*bytes)),
                        None => write!(f, " (checked at prepare)."),
                    }
                }
                ModelStaging::LookUp { name, dir } if name.starts_with("sha256:") => write!(
                    f,
                    "Look up the model `{name}` by its digest in the catalog of {} (at prepare).",
                    dir.display()
                ),
                ModelStaging::LookUp { name, dir } => write!(
                    f,
                    "Look up the model `{name}` as a file name in {} (at prepare).",
                    dir.display()
                ),
                ModelStaging::AtPrepare { scheme } => write!(
                    f,
                    "Stage the model {reference} (a {scheme}: reference, resolved at prepare)."
                ),
                ModelStaging::Staged {
                    path,
                    revision,
                    bytes,
                    ..
                } => {
                    write!(f, "Use the model {reference}, staged at {}", path.display())?;
                    match revision {
                        Some(revision) => {
                            write!(f, " (revision {revision}, {})", human_bytes(*bytes))?
                        }
                        None => write!(f, " ({})", human_bytes(*bytes))?,
                    }
                    write!(f, "; checked again at prepare.")
                }
            },
            Step::FetchSource {
                repo,
                reference,
                submodules,
                commit,
            } => {
                write!(f, "Fetch {repo} at {reference}")?;
                match commit {
                    Some(commit) => write!(f, " (commit {commit}, known from an earlier fetch)")?,
                    None => write!(f, " (commit resolved at prepare)")?,
                }
                if *submodules {
                    write!(f, ", with its submodules")?;
                }
                write!(f, ".")
            }
            Step::Download {
                url,
                checksum,
                size,
            } => {
                write!(f, "Download {url}")?;
                if let Some(size) = size {
                    write!(f, " ({})", human_bytes(*size))?;
                }
                write!(f, ", hashing while it streams; it must match {checksum}.")
            }
            Step::Unpack {
                format,
                executable,
                limits,
            } => write!(
                f,
                "Unpack it ({format}) into a staging directory, every entry checked (at most {} entries, {}), and find `{executable}` in it.",
                limits.max_entries,
                human_bytes(limits.max_bytes)
            ),
            Step::PullImage {
                image,
                tag,
                digest,
                resolved_digest,
                runtime,
            } => {
                // `localhost/…` is built or loaded on this host: no registry serves it.
                if image.starts_with("localhost/") {
                    write!(f, "Find {image}")?;
                    match (digest, tag) {
                        (Some(digest), _) => write!(f, "@{digest}")?,
                        (None, Some(tag)) => write!(f, ":{tag} (run by its image ID)")?,
                        (None, None) => {}
                    }
                    return write!(
                        f,
                        " in {runtime}'s own store: built or loaded on this host, never pulled."
                    );
                }
                write!(f, "Pull {image}")?;
                if let Some(tag) = tag {
                    write!(f, ":{tag}")?;
                }
                match (digest, resolved_digest) {
                    (Some(digest), _) => write!(f, " pinned to {digest}")?,
                    (None, Some(known)) => {
                        write!(f, " by digest ({known}, known from an earlier pull)")?
                    }
                    (None, None) => write!(f, " by digest (resolved at prepare)")?,
                }
                write!(f, " with {runtime}, and verify the image.")
            }
            Step::InstallPackage {
                manager,
                package,
                version,
                repository,
                executable,
                backend,
                allowed,
            } => {
                let manager = manager
                    .map_or("the distribution's package manager".to_string(), |m| {
                        m.to_string()
                    });
                let package = package
                    .clone()
                    .unwrap_or_else(|| format!("the distribution's {backend} package"));
                write!(f, "Install {package} at exactly {version} with {manager}")?;
                if let Some(repository) = repository {
                    write!(f, " from {repository}")?;
                }
                write!(f, ", and find `{executable}` in its files")?;
                if !allowed {
                    write!(
                        f,
                        " (installs are not allowed for this pool: unless it is installed already, prepare stops with the command to run)"
                    )?;
                }
                write!(f, ".")
            }
            Step::Configure {
                generator,
                cmake_flags,
                commit_flags,
                backend,
            } => {
                let generator = generator
                    .map_or("Ninja when installed, else make".to_string(), |g| {
                        g.to_string()
                    });
                write!(
                    f,
                    "Configure with cmake ({generator}) for the {backend} backend: {}; {} are set from the resolved commit.",
                    cmake_flags.join(" "),
                    commit_flags.join(" and ")
                )
            }
            Step::Build { targets } => write!(f, "Build {}.", targets.join(", ")),
            Step::Install {
                cache_dir,
                artifacts,
                key_inputs,
            } => write!(
                f,
                "Install {} atomically under {}, keyed by {}.",
                artifacts.join(", "),
                cache_dir.display(),
                key_inputs.join(", ")
            ),
            Step::WriteEnvFile { path, variables } => write!(
                f,
                "Write the pool's env ({}) to {} (mode 0600); values are never shown.",
                variables.join(", "),
                path.display()
            ),
            Step::WriteKeyFile {
                path,
                option,
                file_option,
            } => write!(
                f,
                "Write the keys given with {option} to {} (mode 0600), passed as {file_option}; keys are never shown.",
                path.display()
            ),
            Step::Launch {
                program,
                args,
                env,
                env_file,
                ports,
                readiness,
            } => {
                let argv: Vec<String> = std::iter::once(program.as_str())
                    .chain(args.iter().map(String::as_str))
                    .map(shell_quote)
                    .collect();
                write!(f, "Run {}", argv.join(" "))?;
                if !env.is_empty() {
                    let pairs: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    write!(f, " with {}", pairs.join(" "))?;
                }
                if let Some(file) = env_file {
                    write!(f, " and the variables of {}", file.display())?;
                }
                write!(
                    f,
                    ", listening on {}; {}.",
                    ports_text(ports),
                    readiness_text(readiness)
                )
            }
            Step::Attach {
                endpoint,
                readiness,
            } => write!(
                f,
                "Attach to the engine at {endpoint}, which runs outside this tool; {}.",
                readiness_text(readiness)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(commit: Option<&str>) -> Plan {
        Plan {
            pool_id: "p".parse().unwrap(),
            engine: Engine::Llamacpp,
            mode: Mode::Source,
            steps: vec![Step::FetchSource {
                repo: "https://example.org/x.git".into(),
                reference: "b1".into(),
                submodules: false,
                commit: commit.map(str::to_string),
            }],
            notes: Vec::new(),
        }
    }

    #[test]
    fn what_the_host_knows_is_shown_but_not_digested() {
        let known = plan(Some("0c1e57098bba"));
        assert_eq!(known.digest(), plan(None).digest());
        assert_eq!(
            known.steps[0].to_string(),
            "Fetch https://example.org/x.git at b1 (commit 0c1e57098bba, known from an earlier fetch)."
        );
        assert_eq!(
            plan(None).steps[0].to_string(),
            "Fetch https://example.org/x.git at b1 (commit resolved at prepare)."
        );
    }
}
