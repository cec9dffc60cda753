//! The llama.cpp recipe. Source is its default mode: the upstream tree is built with CMake into a
//! self-contained `llama-server`. Binary mode installs a pinned release archive instead.

use std::collections::BTreeMap;

use async_trait::async_trait;
use provisioner_core::cmake::{CacheEntries, CacheEntry};
use provisioner_core::config::LLAMACPP_UPSTREAM_REPO;
use provisioner_core::tools::{Distro, source_build_tools};
use provisioner_core::{
    ArchiveFormat, Backend, BinaryInstallSpec, BuildInfoVariables, Checksum, Engine,
    EngineMetadata, Error, FieldError, IdentityCheck, Layout, ManagerKind, Mode, ModelArtifact,
    ModelRequest, PackageInstallSpec, Plan, PoolConfig, Ports, PreparedEngine, Probe, Result,
    SourceBuildSpec, SourceProvenance, Step, UnpackLimits, binary_engine_version,
};

use crate::Recipe;
use crate::args::normalise_server_flags;

/// The target and artefact of a llama.cpp server build.
const TARGET: &str = "llama-server";
const ARTIFACT: &str = "bin/llama-server";
/// Default HTTP port of llama-server.
const DEFAULT_PORT: u16 = 8080;
/// How long a cold model load may take before the engine counts as failed.
const READY_TIMEOUT_SECONDS: u64 = 120;

/// Old CMake switches and the ggml ones that replaced them.
const LEGACY_FLAGS: &[(&str, &str)] = &[
    ("LLAMA_CUBLAS", "GGML_CUDA"),
    ("LLAMA_CUDA", "GGML_CUDA"),
    ("GGML_CUBLAS", "GGML_CUDA"),
    ("LLAMA_HIPBLAS", "GGML_HIP"),
    ("GGML_HIPBLAS", "GGML_HIP"),
    ("LLAMA_VULKAN", "GGML_VULKAN"),
];

/// Defaults the provisioner adds when the config does not set them, and why.
const DEFAULT_FLAGS: &[(&str, &str)] = &[
    // An optimised server unless asked otherwise.
    ("CMAKE_BUILD_TYPE", "Release"),
    ("LLAMA_BUILD_SERVER", "ON"),
    ("LLAMA_BUILD_TESTS", "OFF"),
    ("LLAMA_BUILD_EXAMPLES", "OFF"),
    // Upstream downloads the web UI at build time by default; a build must not reach the
    // network behind the policy's back.
    ("LLAMA_USE_PREBUILT_UI", "OFF"),
    // One self-contained executable survives the atomic rename into the cache; shared
    // libraries would carry RPATHs into the staging directory.
    ("BUILD_SHARED_LIBS", "OFF"),
];

/// Variables the provisioner sets itself from the resolved commit.
const BUILD_INFO: (&str, &str) = ("LLAMA_BUILD_COMMIT", "LLAMA_BUILD_NUMBER");

/// The llama.cpp recipe.
pub struct LlamaCpp;

/// Normalises the configured CMake flags: legacy names mapped to ggml's, booleans spelled
/// `ON`/`OFF`, duplicates resolved (last wins), defaults added, sorted. Returns the entries and
/// the backend they select.
pub fn normalise_cmake_flags(flags: &[String]) -> Result<(CacheEntries, Backend)> {
    let field = "provisioning.source.build.cmake_flags";
    let invalid = |message: String| Error::ConfigInvalid {
        errors: vec![FieldError {
            path: field.to_string(),
            message,
        }],
    };
    let mut entries = CacheEntries::parse(flags.iter().map(String::as_str)).map_err(invalid)?;
    for (legacy, current) in LEGACY_FLAGS {
        if let Some(old) = entries.remove(legacy) {
            // The legacy switch is honoured, not dropped: `-DLLAMA_CUBLAS=ON` means CUDA.
            if entries.get(current).is_none() {
                entries.set(CacheEntry {
                    name: current.to_string(),
                    kind: old.kind,
                    value: old.value,
                });
            }
        }
    }
    for variable in [BUILD_INFO.0, BUILD_INFO.1] {
        if entries.get(variable).is_some() {
            return Err(invalid(format!(
                "{variable} is set by the provisioner from the resolved commit; remove it"
            )));
        }
    }
    for (name, value) in DEFAULT_FLAGS {
        entries.set_default(name, value);
    }
    let backend = if entries.is_on("GGML_CUDA") {
        Backend::Cuda
    } else if entries.is_on("GGML_HIP") {
        Backend::Hip
    } else if entries.is_on("GGML_VULKAN") {
        Backend::Vulkan
    } else {
        Backend::Cpu
    };
    Ok((entries, backend))
}

struct SourceInputs {
    repo: String,
    reference: String,
    submodules: bool,
    generator: Option<String>,
    entries: CacheEntries,
    backend: Backend,
}

fn source_inputs(pool: &PoolConfig) -> Result<SourceInputs> {
    let source = pool
        .provisioning
        .source
        .as_ref()
        .ok_or_else(|| Error::ConfigInvalid {
            errors: vec![FieldError {
                path: "provisioning.source".to_string(),
                message: "required for mode source".to_string(),
            }],
        })?;
    let reference = source
        .reference
        .clone()
        .ok_or_else(|| Error::ConfigInvalid {
            errors: vec![FieldError {
                path: "provisioning.source.ref".to_string(),
                message: "required for mode source".to_string(),
            }],
        })?;
    let (entries, backend) = normalise_cmake_flags(&source.build.cmake_flags)?;
    Ok(SourceInputs {
        repo: source
            .repo
            .clone()
            .unwrap_or_else(|| LLAMACPP_UPSTREAM_REPO.to_string()),
        reference,
        submodules: source.submodules,
        generator: source.build.generator.clone(),
        entries,
        backend,
    })
}

/// The model reference: `provisioning.model.ref`, else the pool's `model` name in the cache.
pub(crate) fn model_reference(pool: &PoolConfig) -> Result<String> {
    pool.provisioning
        .model
        .as_ref()
        .and_then(|m| m.reference.clone())
        .or_else(|| pool.model.clone())
        .ok_or_else(|| Error::ConfigInvalid {
            errors: vec![FieldError {
                path: "provisioning.model.ref".to_string(),
                message: "required".to_string(),
            }],
        })
}

pub(crate) struct Launch {
    pub(crate) args: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) port: u16,
}

pub(crate) fn invalid(path: &str, message: String) -> Error {
    Error::ConfigInvalid {
        errors: vec![FieldError {
            path: path.to_string(),
            message,
        }],
    }
}

/// The server command line and environment, with the model path filled in. `library_path` is
/// the LD_LIBRARY_PATH the engine needs for shared libraries it ships with, if any.
fn launch(pool: &PoolConfig, model: &str, library_path: Option<String>) -> Result<Launch> {
    launch_listening(pool, model, library_path, None)
}

/// As [`launch`]; `inside` is the port the server listens on inside a container (it then binds
/// every interface there, and the runtime publishes the port on the host's loopback).
pub(crate) fn launch_listening(
    pool: &PoolConfig,
    model: &str,
    library_path: Option<String>,
    inside: Option<u16>,
) -> Result<Launch> {
    let provisioning = &pool.provisioning;
    let mut flags = normalise_server_flags(&provisioning.flags, "provisioning.flags")?;
    let port = provisioning.ports.first().copied().unwrap_or(DEFAULT_PORT);
    if let Some(Some(value)) = flags.remove("--port")
        && value != port.to_string()
    {
        return Err(invalid(
            "provisioning.flags",
            format!(
                "--port {value} disagrees with provisioning.ports[0] = {port}; set the port only in ports"
            ),
        ));
    }
    let host = match (flags.remove("--host"), inside) {
        (_, Some(_)) => "0.0.0.0".to_string(),
        (Some(Some(host)), None) => host,
        _ => "127.0.0.1".to_string(),
    };
    let listen_port = inside.unwrap_or(port);
    if let Some(ctx) = pool.ctx
        && flags.get("--ctx-size").is_none()
    {
        flags.set("--ctx-size", Some(ctx.to_string()));
    }
    if let Some(split) = &pool.tensor_split
        && flags.get("--tensor-split").is_none()
    {
        let text: Vec<String> = split.iter().map(|v| v.to_string()).collect();
        flags.set("--tensor-split", Some(text.join(",")));
    }
    let mut args = vec![
        "--model".to_string(),
        model.to_string(),
        "--host".to_string(),
        host,
        "--port".to_string(),
        listen_port.to_string(),
    ];
    args.extend(flags.to_argv());

    let mut env = provisioning.env.clone();
    if !pool.devices.is_empty() {
        let devices: Vec<String> = pool.devices.iter().map(|d| d.to_string()).collect();
        env.entry("CUDA_VISIBLE_DEVICES".to_string())
            .or_insert_with(|| devices.join(","));
    }
    if let Some(path) = library_path {
        env.insert("LD_LIBRARY_PATH".to_string(), path);
    }
    Ok(Launch { args, env, port })
}

pub(crate) fn readiness(port: u16) -> Probe {
    Probe {
        port,
        path: "/health".to_string(),
        status: 200,
        timeout_seconds: READY_TIMEOUT_SECONDS,
    }
}

/// Resolves the model through the port before anything expensive happens.
pub(crate) async fn resolve_model(
    pool: &PoolConfig,
    layout: &Layout,
    ports: &Ports,
) -> Result<ModelArtifact> {
    let checksum = pool
        .provisioning
        .model
        .as_ref()
        .and_then(|m| m.checksum.as_deref())
        .map(Checksum::parse)
        .transpose()
        .map_err(|message| invalid("provisioning.model.checksum", message))?;
    ports
        .models
        .ensure_present(&ModelRequest {
            reference: model_reference(pool)?,
            cache_dir: layout.model_cache(pool),
            checksum,
        })
        .await
}

/// What `llama-server --version` reports, as a version label: `b<build>-<commit>`.
/// Upstream prints `version: 6000 (abc1234)`; builds with a package version print
/// `version: 0.5.0-dev (build 0, commit 0c1e57098)`.
pub fn parse_llamacpp_version(output: &str) -> Option<String> {
    let line = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("version:"))?
        .trim();
    let (head, rest) = line.split_once('(')?;
    let inner = rest.split(')').next()?;
    if let Some((build, commit)) = inner.split_once(',') {
        let build = build.trim().strip_prefix("build")?.trim();
        let commit = commit.trim().strip_prefix("commit")?.trim();
        return Some(format!("b{build}-{commit}"));
    }
    Some(format!("b{}-{}", head.trim(), inner.trim()))
}

/// The identity check for a prebuilt server: `/props` `build_info` must contain the commit the
/// binary itself reported (`b<build>-<commit>`), when it reported one.
fn identity_from(reported: Option<&str>) -> Option<IdentityCheck> {
    let (_, commit) = reported?.split_once('-')?;
    Some(IdentityCheck {
        path: "/props".to_string(),
        json_pointer: "/build_info".to_string(),
        contains: commit.to_string(),
    })
}

/// Inputs of binary mode.
struct BinaryInputs {
    url: String,
    checksum: Option<Checksum>,
    size: Option<u64>,
    version: Option<String>,
    install_root: std::path::PathBuf,
}

fn binary_inputs(pool: &PoolConfig, layout: &Layout) -> Result<BinaryInputs> {
    let binary = pool.provisioning.binary.as_ref().ok_or_else(|| {
        invalid(
            "provisioning.binary",
            "required for mode binary".to_string(),
        )
    })?;
    let checksum = binary
        .checksum
        .as_deref()
        .map(Checksum::parse)
        .transpose()
        .map_err(|message| invalid("provisioning.binary.checksum", message))?;
    let install_root = match &binary.install_dir {
        Some(dir) => layout.expand(dir),
        None => layout.engine_cache(Engine::Llamacpp, pool).join("bin"),
    };
    Ok(BinaryInputs {
        url: binary.url.clone(),
        checksum,
        size: binary.size,
        version: binary.version.clone(),
        install_root,
    })
}

/// Inputs of package mode.
struct PackageInputs {
    name: Option<String>,
    version: String,
    repository: Option<String>,
    manager: Option<ManagerKind>,
    distro: Option<Distro>,
    backend: Backend,
}

fn package_inputs(pool: &PoolConfig) -> Result<PackageInputs> {
    let package = pool.provisioning.package.as_ref().ok_or_else(|| {
        invalid(
            "provisioning.package",
            "required for mode package".to_string(),
        )
    })?;
    let version = package.version.clone().ok_or_else(|| {
        invalid(
            "provisioning.package.version",
            "required: package mode installs an exact version".to_string(),
        )
    })?;
    let manager = package
        .manager
        .as_deref()
        .map(|m| {
            ManagerKind::parse(m).ok_or_else(|| {
                invalid(
                    "provisioning.package.manager",
                    format!("unknown manager `{m}`"),
                )
            })
        })
        .transpose()?;
    let distro = package
        .distro
        .as_deref()
        .map(|d| {
            Distro::parse(d).ok_or_else(|| {
                invalid(
                    "provisioning.package.distro",
                    format!("unknown distribution `{d}`"),
                )
            })
        })
        .transpose()?;
    let backend = match package.backend.as_deref() {
        None => Backend::Cpu,
        Some(text) => Backend::parse(text).ok_or_else(|| {
            invalid(
                "provisioning.package.backend",
                format!("unknown backend `{text}`"),
            )
        })?,
    };
    Ok(PackageInputs {
        backend,
        name: package.name.clone(),
        version,
        repository: package.repo.clone(),
        manager,
        distro,
    })
}

/// The backend a prebuilt llama.cpp was built with, from what it prints at start-up (GPU backends
/// announce themselves, e.g. `ggml_cuda_init: found 1 CUDA devices`); CPU otherwise.
pub fn backend_from_output(output: &str) -> Backend {
    if output.contains("ggml_cuda_init") || output.contains("CUDA devices") {
        Backend::Cuda
    } else if output.contains("ROCm") || output.contains("ggml_hip") {
        Backend::Hip
    } else if output.contains("ggml_vulkan") || output.contains("Vulkan devices") {
        Backend::Vulkan
    } else {
        Backend::Cpu
    }
}

impl LlamaCpp {
    fn plan_source(&self, pool: &PoolConfig, layout: &Layout) -> Result<Plan> {
        let inputs = source_inputs(pool)?;
        let model = model_reference(pool)?;
        let shared = inputs.entries.is_on("BUILD_SHARED_LIBS");
        let launch = launch(
            pool,
            "{model}",
            shared.then(|| "{install_dir}/bin".to_string()),
        )?;
        let cache_dir = layout.engine_cache(Engine::Llamacpp, pool);
        Ok(Plan {
            pool_id: pool.id.clone(),
            engine: Engine::Llamacpp,
            mode: Mode::Source,
            steps: vec![
                Step::Preflight {
                    tools: source_build_tools(inputs.generator.as_deref(), inputs.backend),
                },
                Step::ResolveModel { reference: model },
                Step::FetchSource {
                    repo: inputs.repo,
                    reference: inputs.reference,
                    submodules: inputs.submodules,
                },
                Step::Configure {
                    generator: inputs.generator,
                    cmake_flags: inputs.entries.to_flags(),
                    commit_flags: vec![BUILD_INFO.0.to_string(), BUILD_INFO.1.to_string()],
                    backend: inputs.backend,
                },
                Step::Build {
                    targets: vec![TARGET.to_string()],
                },
                Step::Install {
                    cache_dir,
                    artifacts: vec![ARTIFACT.to_string()],
                    key_inputs: ["commit", "cmake flags", "generator", "toolchain"]
                        .map(String::from)
                        .to_vec(),
                },
                Step::Launch {
                    program: format!("{{install_dir}}/{ARTIFACT}"),
                    args: launch.args,
                    env: launch.env,
                    ports: vec![launch.port],
                    readiness: readiness(launch.port),
                },
            ],
        })
    }

    fn plan_binary(&self, pool: &PoolConfig, layout: &Layout) -> Result<Plan> {
        let inputs = binary_inputs(pool, layout)?;
        let model = model_reference(pool)?;
        let format = ArchiveFormat::from_url(&inputs.url);
        let launch = launch(pool, "{model}", Some("{library_dirs}".to_string()))?;
        Ok(Plan {
            pool_id: pool.id.clone(),
            engine: Engine::Llamacpp,
            mode: Mode::Binary,
            steps: vec![
                Step::ResolveModel { reference: model },
                Step::Download {
                    url: provisioner_core::redact_url(&inputs.url),
                    checksum: inputs.checksum.as_ref().map(|c| c.to_string()),
                    size: inputs.size,
                },
                Step::Unpack {
                    format: format.as_str().to_string(),
                    executable: TARGET.to_string(),
                    limits: UnpackLimits::default(),
                },
                Step::Install {
                    cache_dir: inputs.install_root,
                    artifacts: vec![TARGET.to_string()],
                    key_inputs: vec!["checksum".to_string()],
                },
                Step::Launch {
                    program: format!("{{install_dir}}/…/{TARGET}"),
                    args: launch.args,
                    env: launch.env,
                    ports: vec![launch.port],
                    readiness: readiness(launch.port),
                },
            ],
        })
    }

    fn plan_package(&self, pool: &PoolConfig) -> Result<Plan> {
        let inputs = package_inputs(pool)?;
        let model = model_reference(pool)?;
        let launch = launch(pool, "{model}", None)?;
        Ok(Plan {
            pool_id: pool.id.clone(),
            engine: Engine::Llamacpp,
            mode: Mode::Package,
            steps: vec![
                Step::ResolveModel { reference: model },
                Step::InstallPackage {
                    manager: inputs.manager.map(|m| m.to_string()),
                    package: inputs.name,
                    version: inputs.version,
                    repository: inputs
                        .repository
                        .as_deref()
                        .map(provisioner_core::redact_url),
                    executable: TARGET.to_string(),
                    backend: inputs.backend,
                    allowed: pool.provisioning.allow_package_installs,
                },
                Step::Launch {
                    program: format!("{{package files}}/{TARGET}"),
                    args: launch.args,
                    env: launch.env,
                    ports: vec![launch.port],
                    readiness: readiness(launch.port),
                },
            ],
        })
    }

    async fn prepare_package(
        &self,
        pool: &PoolConfig,
        layout: &Layout,
        ports: &Ports,
    ) -> Result<PreparedEngine> {
        let plan = self.plan_package(pool)?;
        let inputs = package_inputs(pool)?;
        let installer = crate::wired(
            &ports.package_installer,
            "package installer",
            "wire adapters-package's PackageEngineInstaller into Ports::package_installer",
        )?;
        let model = resolve_model(pool, layout, ports).await?;
        let artifact = installer
            .ensure_installed(&PackageInstallSpec {
                engine: Engine::Llamacpp,
                cache_dir: layout.engine_cache(Engine::Llamacpp, pool),
                name: inputs.name,
                version: inputs.version,
                repository: inputs.repository,
                manager: inputs.manager,
                distro: inputs.distro,
                allowed_by_config: pool.provisioning.allow_package_installs,
                executable: TARGET.to_string(),
                version_args: vec!["--version".to_string()],
                backend: inputs.backend,
            })
            .await?;
        let launch = launch(pool, &model.path.to_string_lossy(), None)?;
        let identity = identity_from(
            artifact
                .version_output
                .as_deref()
                .and_then(parse_llamacpp_version)
                .as_deref(),
        );
        let workdir = artifact
            .executable
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| artifact.executable.clone());
        Ok(PreparedEngine {
            pool_id: pool.id.clone(),
            engine: Engine::Llamacpp,
            bin: artifact.executable.clone(),
            args: launch.args,
            env: launch.env,
            ports: vec![launch.port],
            workdir,
            engine_version: artifact.engine_version.clone(),
            metadata: EngineMetadata {
                mode: Mode::Package,
                source: None,
                build_flags: Vec::new(),
                // A GPU backend was asked for and checked by the installer; otherwise what the
                // server reports.
                backend: match artifact.backend {
                    Backend::Cpu => {
                        backend_from_output(artifact.version_output.as_deref().unwrap_or(""))
                    }
                    checked => checked,
                },
                readiness: readiness(launch.port),
                identity,
                model_path: model.path,
                cache_key: Some(artifact.key),
                cache_hit: artifact.cache_hit,
                metadata_file: Some(artifact.metadata_file),
                plan_digest: plan.digest(),
            },
        })
    }

    async fn prepare_source(
        &self,
        pool: &PoolConfig,
        layout: &Layout,
        ports: &Ports,
    ) -> Result<PreparedEngine> {
        let plan = self.plan_source(pool, layout)?;
        let inputs = source_inputs(pool)?;
        // The model first: it is cheap to check and a build is not.
        let model = resolve_model(pool, layout, ports).await?;
        let spec = SourceBuildSpec {
            engine: Engine::Llamacpp,
            cache_dir: layout.engine_cache(Engine::Llamacpp, pool),
            repo: inputs.repo.clone(),
            reference: inputs.reference.clone(),
            submodules: inputs.submodules,
            generator: inputs.generator.clone(),
            cmake_flags: inputs.entries.to_flags(),
            build_info: Some(BuildInfoVariables {
                commit: BUILD_INFO.0.to_string(),
                number: BUILD_INFO.1.to_string(),
            }),
            targets: vec![TARGET.to_string()],
            artifacts: vec![ARTIFACT.to_string()],
            backend: inputs.backend,
            allow_package_installs: pool.provisioning.allow_package_installs,
        };
        let artifact = ports.source_builder.ensure_built(&spec).await?;
        let shared = inputs.entries.is_on("BUILD_SHARED_LIBS");
        let library_path = shared.then(|| artifact.dir.join("bin").to_string_lossy().to_string());
        let launch = launch(pool, &model.path.to_string_lossy(), library_path)?;
        Ok(PreparedEngine {
            pool_id: pool.id.clone(),
            engine: Engine::Llamacpp,
            bin: artifact.dir.join(ARTIFACT),
            args: launch.args,
            env: launch.env,
            ports: vec![launch.port],
            workdir: artifact.dir.clone(),
            // The builder records the version in the metadata next to the artefact; one source.
            engine_version: artifact.engine_version.clone(),
            metadata: EngineMetadata {
                mode: Mode::Source,
                source: Some(SourceProvenance {
                    repo: inputs.repo,
                    reference: inputs.reference,
                    commit: artifact.commit.clone(),
                }),
                build_flags: artifact.flags.clone(),
                backend: inputs.backend,
                readiness: readiness(launch.port),
                identity: Some(IdentityCheck {
                    path: "/props".to_string(),
                    json_pointer: "/build_info".to_string(),
                    contains: artifact.commit[..artifact.commit.len().min(9)].to_string(),
                }),
                model_path: model.path,
                cache_key: Some(artifact.key),
                cache_hit: artifact.cache_hit,
                metadata_file: Some(artifact.metadata_file),
                plan_digest: plan.digest(),
            },
        })
    }

    async fn prepare_binary(
        &self,
        pool: &PoolConfig,
        layout: &Layout,
        ports: &Ports,
    ) -> Result<PreparedEngine> {
        let plan = self.plan_binary(pool, layout)?;
        let inputs = binary_inputs(pool, layout)?;
        let installer = crate::wired(
            &ports.binaries,
            "binary installer",
            "wire adapters-binary's BinaryArtifactInstaller into Ports::binaries",
        )?;
        let model = resolve_model(pool, layout, ports).await?;
        let artifact = installer
            .ensure_installed(&BinaryInstallSpec {
                engine: Engine::Llamacpp,
                install_root: inputs.install_root.clone(),
                url: inputs.url.clone(),
                checksum: inputs.checksum.clone(),
                size: inputs.size,
                allowed_by_config: pool.provisioning.allow_binary_downloads,
                executable: TARGET.to_string(),
                version_args: vec!["--version".to_string()],
                limits: UnpackLimits::default(),
            })
            .await?;
        let reported = artifact
            .version_output
            .as_deref()
            .and_then(parse_llamacpp_version);
        let version = inputs
            .version
            .clone()
            .or_else(|| reported.clone())
            .unwrap_or_else(|| "unknown".to_string());
        let library_path = (!artifact.library_dirs.is_empty()).then(|| {
            artifact
                .library_dirs
                .iter()
                .map(|d| d.to_string_lossy().to_string())
                .collect::<Vec<_>>()
                .join(":")
        });
        let launch = launch(pool, &model.path.to_string_lossy(), library_path)?;
        let identity = identity_from(reported.as_deref());
        Ok(PreparedEngine {
            pool_id: pool.id.clone(),
            engine: Engine::Llamacpp,
            bin: artifact.executable.clone(),
            args: launch.args,
            env: launch.env,
            ports: vec![launch.port],
            workdir: artifact.dir.clone(),
            engine_version: binary_engine_version(Engine::Llamacpp, &version, &artifact.checksum),
            metadata: EngineMetadata {
                mode: Mode::Binary,
                source: None,
                build_flags: Vec::new(),
                backend: backend_from_output(artifact.version_output.as_deref().unwrap_or("")),
                readiness: readiness(launch.port),
                identity,
                model_path: model.path,
                cache_key: Some(artifact.key),
                cache_hit: artifact.cache_hit,
                metadata_file: Some(artifact.metadata_file),
                plan_digest: plan.digest(),
            },
        })
    }
}

#[async_trait]
impl Recipe for LlamaCpp {
    fn engine(&self) -> Engine {
        Engine::Llamacpp
    }

    fn modes(&self) -> &'static [Mode] {
        &[Mode::Source, Mode::Binary, Mode::Container, Mode::Package]
    }

    fn unsupported_hint(&self, mode: Mode) -> Option<String> {
        Some(match mode {
            Mode::External => {
                "an external llama-server is managed outside llama-orch; there is nothing to provision".to_string()
            }
            _ => format!(
                "llama.cpp {mode} mode is not offered by this version; use mode: source (builds upstream with CMake), binary (a pinned release archive), container (an image pinned by digest) or package (a pinned distribution package)"
            ),
        })
    }

    fn plan(&self, pool: &PoolConfig, layout: &Layout) -> Result<Plan> {
        match pool.provisioning.mode {
            Mode::Binary => self.plan_binary(pool, layout),
            Mode::Package => self.plan_package(pool),
            Mode::Container => crate::container::plan(pool, layout),
            _ => self.plan_source(pool, layout),
        }
    }

    async fn prepare(
        &self,
        pool: &PoolConfig,
        layout: &Layout,
        ports: &Ports,
    ) -> Result<PreparedEngine> {
        match pool.provisioning.mode {
            Mode::Binary => self.prepare_binary(pool, layout, ports).await,
            Mode::Package => self.prepare_package(pool, layout, ports).await,
            Mode::Container => crate::container::prepare(pool, layout, ports).await,
            _ => self.prepare_source(pool, layout, ports).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_both_output_styles() {
        assert_eq!(
            parse_llamacpp_version(
                "version: 0.5.0-dev (build 0, commit 0c1e57098)\nbuilt with GNU"
            )
            .as_deref(),
            Some("b0-0c1e57098")
        );
        assert_eq!(
            parse_llamacpp_version("load_backend: x\nversion: 6000 (abc1234)\n").as_deref(),
            Some("b6000-abc1234")
        );
        assert_eq!(parse_llamacpp_version("nothing here"), None);
    }

    #[test]
    fn credentials_never_shown() {
        assert_eq!(
            provisioner_core::redact_url("https://user:secret@example.org/a/b.zip"),
            "https://example.org/a/b.zip"
        );
        assert_eq!(
            provisioner_core::redact_url("https://example.org/a@b.zip"),
            "https://example.org/a@b.zip"
        );
    }
}
