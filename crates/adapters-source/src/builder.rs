//! [`CmakeSourceBuilder`]: the `SourceBuilder` port over git and CMake.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapters_host::install::{InstallRoot, Installed, Staging};
use async_trait::async_trait;
use provisioner_core::tools;
use provisioner_core::{
    Action, Backend, CacheEntries, Clock, CommandOutput, CommandSpec, Engine, Error,
    PackageManager, PackageName, PackageRequest, Policy, Progress, ProgressEvent, Result, Shell,
    SourceArtifact, SourceBuildSpec, SourceBuilder, ToolInfo, ToolRequirement,
    source_engine_version,
};
use serde::{Deserialize, Serialize};

use crate::artefacts;
use crate::gpu;
use crate::host::HostFacts;
use crate::key::{KeyInputs, build_key};
use crate::mirror::{Git, Mirror, last_line};

/// Bucket of the install root holding the builds: `<cache_dir>/builds-v1/<key>`.
pub const BUILDS_BUCKET: &str = "builds-v1";

/// What `metadata.json` next to an installed build records (written last, so its presence means
/// the build is complete).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceBuildMetadata {
    /// Format of this record; 1.
    pub format: u32,
    /// Engine built.
    pub engine: Engine,
    /// Cache key (the install directory's name).
    pub key: String,
    /// Repository URL.
    pub repo: String,
    /// Reference as configured.
    pub reference: String,
    /// Full commit SHA built.
    pub commit: String,
    /// Deterministic version ([`provisioner_core::source_engine_version`] of the engine, commit,
    /// backend and the spec's normalised flags).
    pub engine_version: String,
    /// CMake generator used.
    pub generator: String,
    /// Every cmake flag passed, in argv order.
    pub flags: Vec<String>,
    /// Tool name → `path@fingerprint`, ccache included when it was used.
    pub toolchain: BTreeMap<String, String>,
    /// Backend built and checked.
    pub backend: Backend,
    /// Targets built.
    pub targets: Vec<String>,
    /// Artefacts installed under `bin/`, as paths in the build tree.
    pub artifacts: Vec<String>,
    /// The flag probe's options that the built server's help listed; `None` when no probe ran
    /// (records written before probes were kept: the server gets none of them).
    #[serde(default)]
    pub supported_flags: Option<Vec<String>>,
    /// When the build finished (seconds since the Unix epoch, from the Clock port).
    pub built_at_unix: u64,
    /// How long fetching, configuring and building took.
    pub build_seconds: f64,
    /// Build log (configure and build output).
    pub log: PathBuf,
}

/// Current [`SourceBuildMetadata::format`].
const METADATA_FORMAT: u32 = 1;

/// Builds CMake projects from git into a keyed, atomic cache. Every process runs through the
/// Shell port; see the crate documentation for the steps.
pub struct CmakeSourceBuilder {
    shell: Arc<dyn Shell>,
    policy: Arc<dyn Policy>,
    progress: Arc<dyn Progress>,
    clock: Arc<dyn Clock>,
    host: HostFacts,
    packages: Option<Arc<dyn PackageManager>>,
}

/// The outcome of preflight: what the build will use.
#[derive(Debug, Clone, Default)]
struct Toolchain {
    generator: String,
    /// Fingerprints in the key.
    keyed: BTreeMap<String, String>,
    /// `keyed` plus ccache.
    recorded: BTreeMap<String, String>,
    /// Flags preflight adds (`-DCMAKE_CUDA_COMPILER=...`).
    flags: Vec<String>,
    /// Variables for cmake (`CCACHE_BASEDIR`).
    env: BTreeMap<String, String>,
}

/// Everything decided before the cache is consulted.
struct BuildPlan {
    commit: String,
    key: String,
    flags: Vec<String>,
    toolchain: Toolchain,
}

fn fingerprint(info: &ToolInfo) -> String {
    format!("{}@{}", info.path.display(), info.fingerprint)
}

fn install_hint(tool: &str, host: &HostFacts) -> String {
    tools::install_command(tool, host.distro, host.root)
        .unwrap_or_else(|| format!("install {tool} with your system package manager"))
}

/// A missing-tool error whose hint installs every missing tool at once, and says how to let the
/// provisioner do it.
fn with_install_hint(
    error: Error,
    requests: &[PackageRequest],
    host: &HostFacts,
    backend: provisioner_core::Backend,
) -> Error {
    let Error::MissingTool {
        tool,
        purpose,
        searched,
        hint,
    } = error
    else {
        return error;
    };
    let Some(manager) = provisioner_core::ManagerKind::for_distro(host.distro) else {
        return Error::MissingTool {
            tool,
            purpose,
            searched,
            hint,
        };
    };
    let names: Vec<&str> = requests.iter().map(|r| r.name.as_str()).collect();
    let mut text = manager.install_command(&names, host.root);
    match backend {
        provisioner_core::Backend::Cuda if tool == "nvcc" => {
            text.push_str(", or set CUDA_HOME to your CUDA toolkit root");
        }
        provisioner_core::Backend::Hip => text.push_str(
            ", or point ROCM_PATH (or HIPCXX, or -DCMAKE_HIP_COMPILER in provisioning.source.build.cmake_flags) at your ROCm install",
        ),
        provisioner_core::Backend::Vulkan => {
            text.push_str(", or set VULKAN_SDK to your Vulkan SDK");
        }
        _ => {}
    }
    text.push_str(
        " (or set provisioning.allow_package_installs: true to let the provisioner install them)",
    );
    Error::MissingTool {
        tool,
        purpose,
        searched,
        hint: Some(text),
    }
}

/// Whether the flags a build recorded are `expected` (the spec's and the commit-derived ones),
/// apart from what its toolchain added (`-DCMAKE_CUDA_COMPILER` found by preflight), options
/// passed under their old name to a tree that knows only that one, and entries the spec's tree
/// rules set for that tree (they replace the expected entry of the same name).
fn same_flags(spec: &SourceBuildSpec, recorded: &[String], expected: &[String]) -> bool {
    let user_cuda = user_cuda_compiler(&spec.cmake_flags).is_some();
    let user_hip = spec.cmake_flags.get("CMAKE_HIP_COMPILER").is_some();
    let set_by_tree: Vec<String> = spec
        .tree_rules
        .iter()
        .filter_map(|rule| match rule {
            provisioner_core::TreeRule::SetWhenPresent { entry, .. } => Some(entry.to_flag()),
            provisioner_core::TreeRule::RefuseWhenContains { .. } => None,
        })
        .filter(|flag| recorded.contains(flag))
        .collect();
    let named = |flag: &str, other: &str| {
        let name = other.split(['=', ':']).next().unwrap_or(other);
        flag.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(['=', ':']))
    };
    let expected: Vec<String> = expected
        .iter()
        .filter(|flag| !set_by_tree.iter().any(|set| named(flag, set)))
        .cloned()
        .collect();
    let expected = expected.as_slice();
    let recorded: Vec<&String> = recorded
        .iter()
        .filter(|flag| user_cuda || !flag.starts_with("-DCMAKE_CUDA_COMPILER="))
        .filter(|flag| user_hip || !flag.starts_with("-DCMAKE_HIP_COMPILER="))
        .filter(|flag| !set_by_tree.contains(flag))
        .collect();
    recorded.len() == expected.len()
        && recorded.iter().zip(expected).all(|(recorded, expected)| {
            *recorded == expected
                || spec.renamed.iter().any(|rename| {
                    expected
                        .strip_prefix(&format!("-D{}", rename.new))
                        .is_some_and(|rest| {
                            rest.starts_with([':', '='])
                                && **recorded == format!("-D{}{rest}", rename.old)
                        })
                })
        })
}

/// `N` for upstream llama.cpp's release tags `bN`, else 0.
fn build_number(reference: &str) -> u64 {
    reference
        .strip_prefix('b')
        .filter(|digits| !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn user_cuda_compiler(flags: &CacheEntries) -> Option<&str> {
    flags
        .get("CMAKE_CUDA_COMPILER")
        .map(|entry| entry.value.as_str())
}

fn command_failed(
    command: &CommandSpec,
    output: &CommandOutput,
    log: &Path,
    hint: String,
) -> Error {
    Error::CommandFailed {
        command: command.display(),
        status: output.status(),
        tail: output.tail.clone(),
        log: Some(log.to_path_buf()),
        hint: Some(hint),
    }
}

/// Appends cmake's own configure logs to our log, since the build tree is about to be removed.
/// Best effort: the log is for humans.
fn keep_cmake_logs(build_dir: &Path, log: &Path) {
    for name in ["CMakeError.log", "CMakeConfigureLog.yaml"] {
        let path = build_dir.join("CMakeFiles").join(name);
        let Some(kept) = log_tail(&path) else {
            continue;
        };
        let kept = kept.as_slice();
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .open(log)
            .and_then(|mut file| {
                writeln!(
                    file,
                    "==== {} (kept from the removed build tree)",
                    path.display()
                )?;
                file.write_all(kept)?;
                file.write_all(b"\n")
            });
    }
}

/// The last MiB of a regular file, read without loading the rest (a configure log can be tens
/// of MiB).
fn log_tail(path: &Path) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    const MAX_BYTES: u64 = 1024 * 1024;
    let mut file = std::fs::File::open(path).ok()?;
    let metadata = file.metadata().ok()?;
    if !metadata.is_file() {
        return None;
    }
    file.seek(SeekFrom::Start(metadata.len().saturating_sub(MAX_BYTES)))
        .ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_BYTES).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

impl CmakeSourceBuilder {
    /// A builder over the given ports and host facts.
    pub fn new(
        shell: Arc<dyn Shell>,
        policy: Arc<dyn Policy>,
        progress: Arc<dyn Progress>,
        clock: Arc<dyn Clock>,
        host: HostFacts,
    ) -> Self {
        CmakeSourceBuilder {
            shell,
            policy,
            progress,
            clock,
            host,
            packages: None,
        }
    }

    /// Lets preflight install missing tools through the host's package manager, for pools that
    /// set `allow_package_installs`.
    pub fn with_packages(mut self, packages: Arc<dyn PackageManager>) -> Self {
        self.packages = Some(packages);
        self
    }

    fn report(&self, event: ProgressEvent) {
        self.progress.report(event);
    }

    fn started(&self, step: &str, detail: Option<String>) {
        self.report(ProgressEvent::Started {
            step: step.to_string(),
            detail,
        });
    }

    fn finished(&self, step: &str) {
        self.report(ProgressEvent::Finished {
            step: step.to_string(),
        });
    }

    fn missing(&self, requirement: &ToolRequirement, searched: Vec<PathBuf>) -> Error {
        let first = requirement.programs.first().map_or("", String::as_str);
        let mut hint = install_hint(first, &self.host);
        if first == "nvcc" {
            hint.push_str(", or set CUDA_HOME to your CUDA toolkit root");
        }
        Error::MissingTool {
            tool: requirement.programs.join(" or "),
            purpose: requirement.purpose.clone(),
            searched,
            hint: Some(hint),
        }
    }

    /// Finds nvcc off PATH: a `-DCMAKE_CUDA_COMPILER` the user gave, else `<root>/bin/nvcc` in the
    /// usual toolkit roots. Returns the compiler and whether a flag must be added.
    fn find_nvcc(
        &self,
        requirement: &ToolRequirement,
        spec: &SourceBuildSpec,
    ) -> Result<(PathBuf, ToolInfo, bool)> {
        if let Some(given) = user_cuda_compiler(&spec.cmake_flags) {
            let path = PathBuf::from(given);
            return match self.shell.inspect(&path) {
                Some(info) => Ok((path, info, false)),
                None => Err(self.missing(requirement, vec![path])),
            };
        }
        let roots = tools::cuda_roots(
            self.host.cuda_home.as_deref(),
            self.host.cuda_path.as_deref(),
        );
        for root in &roots {
            let candidate = Path::new(root).join("bin").join("nvcc");
            if let Some(info) = self.shell.inspect(&candidate) {
                return Ok((candidate, info, true));
            }
        }
        Err(self.missing(requirement, roots.into_iter().map(PathBuf::from).collect()))
    }

    /// The base tools and nvcc (the other backends' compilers are [`gpu::check`]'s): what
    /// preflight locates one by one.
    fn tool_requirements(spec: &SourceBuildSpec) -> Vec<ToolRequirement> {
        let mut requirements = tools::base_build_tools(spec.generator);
        if spec.backend == provisioner_core::Backend::Cuda {
            requirements.extend(tools::backend_tool(spec.backend));
        }
        requirements
    }

    /// The packages that install what is missing: one per tool no program satisfies (nvcc
    /// also looked for off PATH), and the whole set of the backend's build packages when
    /// [`gpu::check`] misses anything. `None` when something missing has no known package.
    fn missing_packages(&self, spec: &SourceBuildSpec) -> Option<(Vec<String>, Vec<PackageName>)> {
        let missing: Vec<ToolRequirement> = Self::tool_requirements(spec)
            .into_iter()
            .filter(|requirement| {
                let on_path = requirement
                    .programs
                    .iter()
                    .any(|program| self.shell.locate(program).is_some());
                let is_nvcc = requirement.programs.first().is_some_and(|p| p == "nvcc");
                if is_nvcc {
                    self.find_nvcc(requirement, spec).is_err()
                        && (!on_path || user_cuda_compiler(&spec.cmake_flags).is_some())
                } else {
                    !on_path
                }
            })
            .collect();
        let mut packages: Vec<PackageName> = missing
            .iter()
            .map(|r| {
                let program = r.programs.first()?;
                provisioner_core::packages::tool_package(program, self.host.distro)
            })
            .collect::<Option<_>>()?;
        let mut names: Vec<String> = missing.iter().map(|r| r.programs.join(" or ")).collect();
        if let Err(pieces) = gpu::check(
            spec.backend,
            &spec.cmake_flags,
            self.shell.as_ref(),
            &self.host,
        ) {
            names.extend(pieces.into_iter().map(|piece| piece.what));
            let set =
                provisioner_core::packages::backend_build_packages(spec.backend, self.host.distro);
            if set.is_empty() {
                return None;
            }
            packages.extend(set);
        }
        let mut unique: Vec<PackageName> = Vec::new();
        for package in packages {
            if !unique.contains(&package) {
                unique.push(package);
            }
        }
        Some((names, unique))
    }

    /// Preflight; when tools are missing, installs their packages through the package manager
    /// if the pool allows it, else fails with one command that installs all of them.
    async fn preflight_or_install(&self, spec: &SourceBuildSpec) -> Result<Toolchain> {
        let error = match self.preflight(spec) {
            Ok(toolchain) => return Ok(toolchain),
            Err(error @ Error::MissingTool { .. }) => error,
            Err(other) => return Err(other),
        };
        let (names, unique) = match self.missing_packages(spec) {
            Some((names, packages)) if !packages.is_empty() => (names, packages),
            _ => return Err(error),
        };
        let requests: Vec<PackageRequest> = unique
            .iter()
            .map(|p| PackageRequest::latest(p.clone()))
            .collect();
        let manager = match &self.packages {
            Some(manager) if spec.allow_package_installs => manager.clone(),
            _ => {
                return Err(with_install_hint(
                    error,
                    &requests,
                    &self.host,
                    spec.backend,
                ));
            }
        };
        self.policy.check(&Action::InstallPackages {
            packages: unique.clone(),
            repository: None,
            allowed_by_config: spec.allow_package_installs,
        })?;
        self.report(ProgressEvent::Note {
            message: format!(
                "{} missing; installing with {}: {}",
                names.join(", "),
                manager.kind(),
                manager.install_command(&requests).await
            ),
        });
        let names: Vec<&str> = unique.iter().map(PackageName::as_str).collect();
        self.started("install build tools", Some(names.join(" ")));
        manager.install(&requests).await?;
        self.finished("install build tools");
        self.preflight(spec)
    }

    /// Step 1 and 2: every tool located (no process run) and fingerprinted.
    fn preflight(&self, spec: &SourceBuildSpec) -> Result<Toolchain> {
        artefacts::check_artifacts(&spec.artifacts)?;
        crate::checks::check_fetches(self.policy.as_ref(), &spec.fetches)?;
        crate::checks::check_headers(&spec.headers, &self.host.include_dirs, &self.host)?;
        let mut toolchain = Toolchain::default();
        let mut generator_tool = None;
        for requirement in Self::tool_requirements(spec) {
            let found = requirement
                .programs
                .iter()
                .find_map(|program| Some((program.clone(), self.shell.locate(program)?)));
            let first = requirement.programs.first().cloned().unwrap_or_default();
            let is_generator = requirement
                .programs
                .iter()
                .any(|p| p == "make" || p == "ninja");
            // A compiler named in the flags is the one cmake uses, PATH or not.
            let nvcc_elsewhere = first == "nvcc"
                && (found.is_none() || user_cuda_compiler(&spec.cmake_flags).is_some());
            let (role, info) = match found {
                Some((program, info)) if is_generator => {
                    generator_tool = Some(program.clone());
                    (program, info)
                }
                Some((_, info)) if !nvcc_elsewhere => (first, info),
                _ if nvcc_elsewhere => {
                    let (path, info, add_flag) = self.find_nvcc(&requirement, spec)?;
                    if add_flag {
                        let flag = format!("-DCMAKE_CUDA_COMPILER={}", path.display());
                        self.report(ProgressEvent::Note {
                            message: format!(
                                "nvcc is not on PATH; using {} (passing {flag})",
                                path.display()
                            ),
                        });
                        toolchain.flags.push(flag);
                    }
                    (first, info)
                }
                _ => return Err(self.missing(&requirement, Vec::new())),
            };
            if role != "git" {
                toolchain.keyed.insert(role, fingerprint(&info));
            }
        }
        // HIP and Vulkan: the compiler and what the tree's find_package needs besides it.
        match gpu::check(
            spec.backend,
            &spec.cmake_flags,
            self.shell.as_ref(),
            &self.host,
        ) {
            Ok(found) => {
                for message in found.notes {
                    self.report(ProgressEvent::Note { message });
                }
                for (role, info) in found.tools {
                    toolchain.keyed.insert(role, fingerprint(&info));
                }
                toolchain.flags.extend(found.flags);
            }
            Err(missing) => return Err(gpu::missing_error(spec.backend, &missing, &self.host)),
        }
        toolchain.generator = match (&spec.generator, generator_tool.as_deref()) {
            (Some(generator), _) => generator.to_string(),
            (None, Some("ninja")) => "Ninja".to_string(),
            (None, _) => "Unix Makefiles".to_string(),
        };
        toolchain.recorded = toolchain.keyed.clone();
        if let Some(ccache) = self.shell.locate("ccache") {
            toolchain
                .recorded
                .insert("ccache".to_string(), fingerprint(&ccache));
            toolchain.env.insert(
                "CCACHE_BASEDIR".to_string(),
                spec.cache_dir.display().to_string(),
            );
        }
        Ok(toolchain)
    }

    /// Step 4: the spec's flags, then preflight's, then the commit-derived ones.
    fn flags(spec: &SourceBuildSpec, toolchain: &Toolchain, commit: &str) -> Vec<String> {
        let mut flags = spec.cmake_flags.to_flags();
        flags.extend(toolchain.flags.iter().cloned());
        if let Some(info) = &spec.build_info {
            flags.push(format!(
                "-D{}={}",
                info.commit,
                &commit[..9.min(commit.len())]
            ));
            flags.push(format!(
                "-D{}={}",
                info.number,
                build_number(spec.reference.as_str())
            ));
        }
        flags
    }

    fn git<'a>(&'a self, spec: &'a SourceBuildSpec) -> Git<'a> {
        Git {
            shell: self.shell.as_ref(),
            policy: self.policy.as_ref(),
            progress: self.progress.as_ref(),
            spec,
            log: None,
            group_file: None,
        }
    }

    /// Steps 1 to 4 as a cold prepare takes them (the unit tests' view of the key).
    #[cfg(test)]
    async fn plan(&self, spec: &SourceBuildSpec) -> Result<BuildPlan> {
        let toolchain = self.preflight_or_install(spec).await?;
        self.plan_with(spec, toolchain).await
    }

    /// Steps 3 and 4: everything up to the cache key, with the toolchain preflight found.
    async fn plan_with(&self, spec: &SourceBuildSpec, toolchain: Toolchain) -> Result<BuildPlan> {
        let resolved = self.git(spec).resolve().await?;
        let flags = Self::flags(spec, &toolchain, &resolved.commit);
        let key = build_key(&KeyInputs {
            commit: &resolved.commit,
            generator: &toolchain.generator,
            flags: &flags,
            targets: &spec.targets,
            artifacts: &spec.artifacts,
            backend: spec.backend,
            toolchain: &toolchain.keyed,
            submodules: spec.submodules,
            renamed: &spec.renamed,
            tree_rules: &spec.tree_rules,
        });
        Ok(BuildPlan {
            commit: resolved.commit,
            key,
            flags,
            toolchain,
        })
    }

    /// The warm path of a host that lacks build tools (one that only runs engines): the newest
    /// complete build of the commit the reference is known to name (a full SHA, or the ref
    /// index: no git) with the spec's flags, targets, artefacts and backend, whatever toolchain
    /// built it. `None` when the commit is not known without git (a branch, a ref never
    /// resolved here) or no such build exists.
    fn built_by_any_toolchain(
        &self,
        root: &InstallRoot,
        spec: &SourceBuildSpec,
    ) -> Option<Installed<SourceBuildMetadata>> {
        let reference = spec.reference.as_str();
        let commit = if crate::refs::is_full_sha(reference) {
            reference.to_ascii_lowercase()
        } else {
            crate::refs::lookup(&spec.cache_dir, &spec.repo.to_string(), reference)?
                .commit
                .to_ascii_lowercase()
        };
        let flags = Self::flags(spec, &Toolchain::default(), &commit);
        let engine_version = source_engine_version(
            spec.engine,
            &commit,
            spec.backend,
            &spec.cmake_flags.to_flags(),
        );
        let same_build = |installed: &Installed<SourceBuildMetadata>, key: &str| {
            let m = &installed.metadata;
            m.format == METADATA_FORMAT
                && m.key == key
                && m.engine == spec.engine
                && m.commit == commit
                && m.engine_version == engine_version
                && m.backend == spec.backend
                && m.targets == spec.targets
                && m.artifacts == spec.artifacts
                && spec
                    .generator
                    .as_ref()
                    .is_none_or(|generator| m.generator == generator.to_string())
                && same_flags(spec, &m.flags, &flags)
                && artefacts::installed_ok(&installed.dir, &spec.artifacts)
        };
        let entries = std::fs::read_dir(spec.cache_dir.join(BUILDS_BUCKET)).ok()?;
        entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|key| root.lookup(&key, &|installed| same_build(installed, &key)))
            .max_by_key(|installed| installed.metadata.built_at_unix)
    }

    fn artifact(installed: Installed<SourceBuildMetadata>, cache_hit: bool) -> SourceArtifact {
        SourceArtifact {
            dir: installed.dir,
            commit: installed.metadata.commit,
            key: installed.metadata.key,
            flags: installed.metadata.flags,
            toolchain: installed.metadata.toolchain,
            cache_hit,
            metadata_file: installed.metadata_file,
            engine_version: installed.metadata.engine_version,
            supported_flags: installed.metadata.supported_flags.unwrap_or_default(),
        }
    }

    /// A build recorded before flag probes were kept learns its flags now, once
    /// ([`adapters_host::version::learn_flags_once`]).
    async fn learn_flags(
        &self,
        spec: &SourceBuildSpec,
        installed: Installed<SourceBuildMetadata>,
    ) -> Installed<SourceBuildMetadata> {
        let (Some(probe), Some(command)) = (&spec.flag_probe, help_command(spec, &installed.dir))
        else {
            return installed;
        };
        adapters_host::version::learn_flags_once(
            self.shell.as_ref(),
            self.progress.as_ref(),
            installed,
            |m| &mut m.supported_flags,
            probe,
            &command,
        )
        .await
    }

    /// Runs the spec's flag probe once on the server installed under `out`; never fails.
    /// `None` when the spec has no probe.
    async fn flag_run(
        &self,
        spec: &SourceBuildSpec,
        out: &Path,
        group_file: Option<PathBuf>,
    ) -> Option<Vec<String>> {
        let probe = spec.flag_probe.as_ref()?;
        let mut command = help_command(spec, out)?;
        command.group_file = group_file;
        Some(
            adapters_host::version::probe_flags(
                self.shell.as_ref(),
                self.progress.as_ref(),
                &command,
                probe,
                adapters_host::version::HELP_TIMEOUT,
            )
            .await,
        )
    }

    /// Step 7: the work done in the staging directory.
    async fn build(
        &self,
        spec: &SourceBuildSpec,
        plan: &BuildPlan,
        staging: Staging,
        log: PathBuf,
    ) -> Result<SourceBuildMetadata> {
        let started_at = self.clock.now();
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        let header = format!(
            "==== {} {}@{} commit {} key {} at {}\n",
            spec.engine,
            spec.repo,
            spec.reference,
            plan.commit,
            plan.key,
            unix_seconds(started_at)
        );
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut file| file.write_all(header.as_bytes()))
            .map_err(|e| Error::io("write", &log, e))?;

        let src = staging.work.join("src");
        self.checkout(spec, plan, &staging, &log, &src).await?;
        let mut flags = self.fit_to_tree(spec, &plan.flags, &crate::tree::declared(&src));
        for message in crate::tree::apply_rules(&src, &spec.tree_rules, &mut flags)? {
            self.report(ProgressEvent::Note { message });
        }

        let build_dir = src.join("build");
        let mut configure = CommandSpec::new(
            "cmake",
            [
                "-S".to_string(),
                src.display().to_string(),
                "-B".to_string(),
                build_dir.display().to_string(),
                "-G".to_string(),
                plan.toolchain.generator.clone(),
            ],
        )
        .inherit_also(provisioner_core::BUILD_ENV)
        .log(&log)
        .progress("configure");
        configure.args.extend(flags.iter().cloned());
        configure.env = plan.toolchain.env.clone();
        configure.group_file = Some(staging.group_file.clone());
        self.started("configure", Some(format!("log: {}", log.display())));
        let output = self.shell.run(&configure).await?;
        if !output.success() {
            keep_cmake_logs(&build_dir, &log);
            return Err(command_failed(
                &configure,
                &output,
                &log,
                format!(
                    "cmake could not configure the project; check source.build.cmake_flags and the toolchain. Full output: {}",
                    log.display()
                ),
            ));
        }
        self.finished("configure");

        let label = if spec.targets.is_empty() {
            "build all".to_string()
        } else {
            format!("build {}", spec.targets.join(" "))
        };
        let mut build = CommandSpec::new(
            "cmake",
            ["--build".to_string(), build_dir.display().to_string()],
        )
        .inherit_also(provisioner_core::BUILD_ENV)
        .log(&log)
        .progress(&label);
        for target in &spec.targets {
            build.args.push("--target".to_string());
            build.args.push(target.clone());
        }
        build.args.push("--parallel".to_string());
        build.args.push(self.host.jobs.max(1).to_string());
        build.env = plan.toolchain.env.clone();
        build.group_file = Some(staging.group_file.clone());
        self.started(&label, Some(format!("log: {}", log.display())));
        let output = self.shell.run(&build).await?;
        if !output.success() {
            return Err(command_failed(
                &build,
                &output,
                &log,
                format!(
                    "the first error in {} is usually the cause; a compiler killed by a signal often ran out of memory",
                    log.display()
                ),
            ));
        }
        self.finished(&label);

        let step = format!("install {}", plan.key);
        self.started(&step, None);
        artefacts::check_built(&build_dir, &spec.artifacts, &spec.targets)?;
        artefacts::check_backend(&build_dir, spec.backend, &log)?;
        artefacts::install(&build_dir, &spec.artifacts, &staging.out)?;
        self.finished(&step);
        let supported_flags = self
            .flag_run(spec, &staging.out, Some(staging.group_file.clone()))
            .await;

        let finished_at = self.clock.now();
        Ok(SourceBuildMetadata {
            format: METADATA_FORMAT,
            engine: spec.engine,
            key: plan.key.clone(),
            repo: spec.repo.to_string(),
            reference: spec.reference.to_string(),
            commit: plan.commit.clone(),
            engine_version: source_engine_version(
                spec.engine,
                &plan.commit,
                spec.backend,
                &spec.cmake_flags.to_flags(),
            ),
            generator: plan.toolchain.generator.clone(),
            flags,
            toolchain: plan.toolchain.recorded.clone(),
            backend: spec.backend,
            targets: spec.targets.clone(),
            artifacts: spec.artifacts.clone(),
            supported_flags,
            built_at_unix: unix_seconds(finished_at),
            build_seconds: finished_at
                .duration_since(started_at)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64(),
            log,
        })
    }

    /// The flags as this tree understands them: an option the configuration gave under an old
    /// name and the spec passes under its successor goes back to the old name when the tree
    /// declares only that one (a tree from before the rename), and the user is told.
    fn fit_to_tree(
        &self,
        spec: &SourceBuildSpec,
        flags: &[String],
        declared: &std::collections::BTreeMap<String, crate::tree::Declared>,
    ) -> Vec<String> {
        let mut flags = flags.to_vec();
        for rename in &spec.renamed {
            if declared.contains_key(&rename.new) || !declared.contains_key(&rename.old) {
                continue;
            }
            for flag in flags.iter_mut() {
                let Some(rest) = flag.strip_prefix(&format!("-D{}", rename.new)) else {
                    continue;
                };
                if rest.starts_with([':', '=']) {
                    *flag = format!("-D{}{rest}", rename.old);
                    self.report(ProgressEvent::Note {
                        message: format!(
                            "this tree declares {} but not {}: passing {flag}",
                            rename.old, rename.new
                        ),
                    });
                }
            }
        }
        flags
    }

    /// Clones the commit out of the mirror (fetching when it is missing) into `src`.
    async fn checkout(
        &self,
        spec: &SourceBuildSpec,
        plan: &BuildPlan,
        staging: &Staging,
        log: &Path,
        src: &Path,
    ) -> Result<()> {
        let git = Git {
            log: Some(log.to_path_buf()),
            group_file: Some(staging.group_file.clone()),
            ..self.git(spec)
        };
        let short = &plan.commit[..12.min(plan.commit.len())];
        let step = format!("checkout {short}");
        self.started(&step, None);
        let mirror = Mirror::new(&spec.cache_dir, spec.repo.expose());
        {
            let _lock = git.lock(&mirror.lock).await?;
            if !git.has_commit(&mirror, &plan.commit).await? {
                let fetch = format!("fetch {}@{}", spec.repo, spec.reference);
                self.started(&fetch, None);
                git.sync(&mirror).await?;
                self.finished(&fetch);
                if !git.has_commit(&mirror, &plan.commit).await? {
                    return Err(git.source_error(
                        format!("commit {} not found in the repository", plan.commit),
                        Some(format!(
                            "the commit may have been removed upstream or lives outside every branch and tag; list what exists with: git ls-remote {}",
                            spec.repo
                        )),
                    ));
                }
            }
            let clone = git.command([
                "clone".to_string(),
                "--quiet".to_string(),
                "--no-checkout".to_string(),
                "--".to_string(),
                mirror.dir.display().to_string(),
                src.display().to_string(),
            ]);
            let output = self.shell.run(&clone).await?;
            if !output.success() {
                return Err(git.source_error(
                    format!("cannot clone the local mirror: {}", last_line(&output)),
                    Some(format!(
                        "the mirror may be damaged; remove {} to fetch it again",
                        mirror.dir.display()
                    )),
                ));
            }
        }
        let output = git
            .run_in(src, &["checkout", "--quiet", "--detach", &plan.commit])
            .await?;
        if !output.success() {
            return Err(git.source_error(
                format!("cannot check out {}: {}", plan.commit, last_line(&output)),
                None,
            ));
        }
        if spec.submodules {
            self.policy.check(&provisioner_core::Action::FetchSource {
                remote: spec.repo.clone(),
            })?;
            let set_url = git
                .run_in(src, &["remote", "set-url", "origin", spec.repo.expose()])
                .await?;
            if !set_url.success() {
                return Err(git.source_error(
                    format!("cannot set the checkout's remote: {}", last_line(&set_url)),
                    None,
                ));
            }
            self.update_submodules(&git, src, spec.repo.expose(), log)
                .await?;
        }
        self.finished(&step);
        Ok(())
    }
}

impl CmakeSourceBuilder {
    /// Checks out the submodules of `root` level by level: the URLs each `.gitmodules` names
    /// (relative ones resolved as git does) are put to the policy before git contacts any of
    /// them, then that level is updated; nested submodules follow, eight levels at most.
    async fn update_submodules(
        &self,
        git: &Git<'_>,
        root: &Path,
        remote: &str,
        log: &Path,
    ) -> Result<()> {
        const MAX_DEPTH: usize = 8;
        let mut pending = vec![(root.to_path_buf(), remote.to_string(), 0usize)];
        while let Some((dir, superproject, depth)) = pending.pop() {
            if !dir.join(".gitmodules").is_file() {
                continue;
            }
            let listed = git
                .run_in(
                    &dir,
                    &[
                        "config",
                        "-f",
                        ".gitmodules",
                        "--get-regexp",
                        r"^submodule\..*\.(path|url)$",
                    ],
                )
                .await?;
            let found = crate::submodules::parse(
                listed.whole_stdout("git config -f .gitmodules --get-regexp 'submodule.*'")?,
            );
            let mut resolved = Vec::with_capacity(found.len());
            for submodule in &found {
                let url = crate::submodules::resolve(&superproject, &submodule.url).map_err(
                    |message| {
                        git.source_error(format!("submodule {}: {message}", submodule.path), None)
                    },
                )?;
                self.policy
                    .check(&provisioner_core::Action::FetchSource {
                        remote: url.clone(),
                    })
                    .map_err(|error| match error {
                        Error::PolicyDenied { action, hint } => Error::PolicyDenied {
                            action: format!(
                                "{action} (submodule {} of {})",
                                submodule.path,
                                crate::submodules::shown(&superproject)
                            ),
                            hint,
                        },
                        other => other,
                    })?;
                resolved.push((submodule.path.clone(), url));
            }
            if found.is_empty() {
                continue;
            }
            let output = git
                .run_in(&dir, &["submodule", "update", "--init", "--quiet"])
                .await?;
            if !output.success() {
                return Err(git.source_error(
                    format!("cannot fetch the submodules: {}", last_line(&output)),
                    Some(format!(
                        "check your network and credentials for the submodule URLs ({}); the full output is in {}",
                        resolved
                            .iter()
                            .map(|(_, url)| url.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        log.display()
                    )),
                ));
            }
            if depth + 1 < MAX_DEPTH {
                for (path, url) in resolved {
                    pending.push((dir.join(path), url.expose().to_string(), depth + 1));
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl SourceBuilder for CmakeSourceBuilder {
    async fn ensure_built(&self, spec: &SourceBuildSpec) -> Result<SourceArtifact> {
        // Every path below derives from the cache dir; make it absolute once (ccache needs it).
        let cache_dir = std::path::absolute(&spec.cache_dir)
            .map_err(|e| Error::io("resolve", &spec.cache_dir, e))?;
        let spec = &SourceBuildSpec {
            cache_dir,
            ..spec.clone()
        };
        let root = InstallRoot::new(&spec.cache_dir, BUILDS_BUCKET, self.progress.clone());
        // Preflight only looks at the host (no process). When it passes, the toolchain is part
        // of the key and the exact build for it is looked up below. When it fails (a tool, a
        // header or a permission a new build would need), a prepared engine must still run on a
        // host that only runs it: any complete build of the same inputs is a cache hit, and
        // only without one does the failure count (tools installed when allowed, or the error).
        let toolchain = match self.preflight(spec) {
            Ok(toolchain) => toolchain,
            Err(error) => {
                if let Some(installed) = self.built_by_any_toolchain(&root, spec) {
                    let lacking = match &error {
                        Error::MissingTool { tool, .. } => format!("{tool} is not on this host"),
                        other => other.to_string(),
                    };
                    self.report(ProgressEvent::Note {
                        message: format!(
                            "{} build {} is installed at {} (cache hit; only a new build would need what this host lacks: {lacking})",
                            spec.engine,
                            installed.metadata.key,
                            installed.dir.display()
                        ),
                    });
                    let installed = self.learn_flags(spec, installed).await;
                    return Ok(Self::artifact(installed, true));
                }
                match error {
                    Error::MissingTool { .. } => self.preflight_or_install(spec).await?,
                    other => return Err(other),
                }
            }
        };
        let plan = self.plan_with(spec, toolchain).await?;
        let key = plan.key.as_str();
        let is_valid = |installed: &Installed<SourceBuildMetadata>| {
            installed.metadata.format == METADATA_FORMAT
                && installed.metadata.key == key
                && artefacts::installed_ok(&installed.dir, &spec.artifacts)
        };
        if let Some(installed) = root.lookup(key, &is_valid) {
            self.report(ProgressEvent::Note {
                message: format!(
                    "{} build {key} is installed at {} (cache hit)",
                    spec.engine,
                    installed.dir.display()
                ),
            });
            let installed = self.learn_flags(spec, installed).await;
            return Ok(Self::artifact(installed, true));
        }
        let log = root.log_file(key);
        let installed = root
            .install(key, &is_valid, |staging| {
                self.build(spec, &plan, staging, log.clone())
            })
            .await?;
        let cache_hit = !installed.fresh;
        Ok(Self::artifact(installed, cache_hit))
    }
}

/// The spec's help run on the server installed under `out` (the first artefact, with the
/// libraries installed beside it in `bin/`); it inherits the base variables only
/// (`provisioner_core::BASE_ENV`). `None` without a probe or an artefact.
fn help_command(spec: &SourceBuildSpec, out: &Path) -> Option<CommandSpec> {
    let probe = spec.flag_probe.as_ref()?;
    let name = spec.artifacts.first().and_then(|a| a.rsplit('/').next())?;
    let bin = out.join("bin");
    Some(
        CommandSpec::new(
            &bin.join(name).display().to_string(),
            probe.args.iter().cloned(),
        )
        .cwd(&bin)
        .env("LD_LIBRARY_PATH", bin.display().to_string()),
    )
}

#[cfg(test)]
#[path = "builder_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "builder_warm_tests.rs"]
mod warm_tests;
