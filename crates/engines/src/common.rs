//! What every engine and every mode shares: the [`Recipe`] trait through which an engine states
//! its facts, the per-pool [`PoolInputs`] computed once for both `plan` and `prepare`, and the
//! helpers that turn inputs into plan steps and a [`PreparedEngine`]. Nothing here imports an
//! engine's file or a mode's file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use provisioner_core::{
    Backend, BackendFinding, BackendVerdict, CacheEntries, CacheEntry, EngineMetadata, EnvName,
    Error, FoundBackend, GpuAsk, IdentityCheck, KnownFacts, Layout, Mode, ModelRef, ModelRequest,
    ModelStaging, OptionRename, PoolConfig, PoolId, PreparedEngine, Probe, ProgressEvent, Result,
    Secret, SourceProvenance, Step, judge_backend,
};

use crate::args::ServerArgs;

/// An engine's facts: which modes it offers, how its server is launched natively and in a
/// container, how it is built from source. Each engine implements this in its own file; the
/// modes read it and never name an engine.
pub trait Recipe: Send + Sync {
    /// The engine.
    fn engine(&self) -> provisioner_core::Engine;

    /// `Ok` when the engine offers `mode`, else what to use instead (every mode answered).
    fn offers(&self, mode: Mode) -> std::result::Result<(), String>;

    /// The pool's `flags` as this engine's options (aliases resolved, options the provisioner
    /// owns refused). Errors name `provisioning.flags[i]`. Default: the flags as written.
    fn options(&self, pool: &PoolConfig) -> Result<ServerArgs> {
        Ok(ServerArgs::verbatim(&pool.provisioning.flags))
    }

    /// The server's arguments: the model, where to listen, then the options.
    fn server_args(
        &self,
        pool: &PoolConfig,
        options: &ServerArgs,
        launch: &Listen<'_>,
    ) -> Vec<String>;

    /// How the engine runs from its image.
    fn container(&self) -> &ContainerFacts;

    /// How the server runs on the host (source, binary and package modes); `None` (the
    /// default) for engines that ship as images only.
    fn native(&self) -> Option<&NativeFacts> {
        None
    }

    /// How the engine is built from source; `None` (the default) when it is not.
    fn source(&self) -> Option<&SourceFacts> {
        None
    }

    /// Normalises a source build's CMake cache entries: the entries cmake gets, the backend they
    /// select, the old option names that were mapped, and notes on what was changed. Only
    /// called for engines with [`Recipe::source`].
    fn cmake_entries(&self, _configured: &[CacheEntry]) -> Result<CmakeChoice> {
        Err(no_source_build(self.engine()))
    }

    /// The upstream version a prebuilt server reports for its version arguments, as a label
    /// (`b6000-abc1234`). Only called for engines with [`Recipe::native`].
    fn reported_version(&self, _output: &str) -> Option<String> {
        None
    }

    /// The backend a prebuilt server names in what it printed for its version arguments, with
    /// the line that names it: a GPU backend, or CPU when the output is the server's own and
    /// names none; `None` (the default) when the output says nothing recognisable (a wrapper
    /// script, a stand-in). Only called for engines with [`Recipe::native`].
    fn reported_backend(&self, _output: &str) -> Option<(FoundBackend, String)> {
        None
    }

    /// Whether the pool's options ask the server to put layers on a GPU, and where. Default:
    /// `--n-gpu-layers` (llama-server's canonical spelling, which recipes map `-ngl` and
    /// `--gpu-layers` to) with a value that offloads (`offloads`); engines whose options are
    /// kept verbatim never match it.
    fn offload_ask(&self, pool: &PoolConfig, options: &ServerArgs) -> Option<GpuAsk> {
        let Some(Some(value)) = options.get(GPU_LAYERS) else {
            return None;
        };
        if !offloads(value) {
            return None;
        }
        let flags = &pool.provisioning.flags;
        let at = flags
            .iter()
            .position(|flag| {
                let name = flag.split_once('=').map_or(flag.as_str(), |(name, _)| name);
                GPU_LAYERS_SPELLINGS.contains(&name)
            })
            .map(|index| {
                let written = match flags.get(index + 1) {
                    Some(next) if !flags[index].contains('=') => {
                        format!("{} {next}", flags[index])
                    }
                    _ => flags[index].clone(),
                };
                format!("provisioning.flags[{index}]: {written}")
            })
            .unwrap_or_else(|| format!("provisioning.flags: {GPU_LAYERS} {value}"));
        Some(GpuAsk::any(at))
    }

    /// The backend an image of this engine with `tag` is built with, when that is fixed by
    /// definition (vLLM, TGI and Triton publish GPU builds only: CUDA unless the tag names
    /// another backend): the image then asks for it and shows it without being looked into.
    /// Default: `None`, the image's tag and files decide.
    fn image_backend(&self, _tag: Option<&str>) -> Option<FoundBackend> {
        None
    }

    /// The GPU backend an image's tag names (llama.cpp's `server-cuda-b6000`, `server-rocm`,
    /// `server-musa`, `server-vulkan`, `server-intel`), which the pool then asks for. Default:
    /// `backend_in_tag`.
    fn image_ask(&self, tag: &str) -> Option<GpuAsk> {
        backend_in_tag(tag).map(|backend| {
            GpuAsk::named(backend, format!("provisioning.container: image tag {tag}"))
        })
    }

    /// How to check that a running server is the build that was prepared; `None` (the
    /// default) when the engine reports nothing that identifies its build.
    fn identity(&self, _evidence: Evidence<'_>) -> Option<IdentityCheck> {
        None
    }
}

/// llama-server's canonical name of the option that puts layers on GPUs.
const GPU_LAYERS: &str = "--n-gpu-layers";

/// Every spelling of [`GPU_LAYERS`] (common/arg.cpp of release b11312), to find where the pool
/// writes it.
const GPU_LAYERS_SPELLINGS: &[&str] = &["-ngl", "--ngl", "--gpu-layers", "--n-gpu-layers"];

/// Whether a `--n-gpu-layers` value asks for layers on a GPU: a count other than 0, or `all`
/// (also `-2`). `auto` (also `-1`), llama-server's default since 2025, fits what the devices
/// hold, which is nothing without a GPU backend: it asks for nothing more than leaving the
/// option out does.
pub fn offloads(value: &str) -> bool {
    match value.trim() {
        "auto" | "-1" | "0" | "" => false,
        "all" => true,
        other => other.parse::<f64>().map_or(true, |n| n != 0.0 && n != -1.0),
    }
}

/// The GPU backend an image tag names in one of its words (split at `-`, `_` and `.`, digits
/// after the name ignored: `cuda12`): `cuda`, `rocm` or `hip`, `musa`, `vulkan`, `intel` or
/// `sycl` — the names of llama.cpp's image variants (`server-cuda-b6000`, `full-rocm`).
pub fn backend_in_tag(tag: &str) -> Option<FoundBackend> {
    tag.split(['-', '_', '.']).find_map(|word| {
        let word = word.to_ascii_lowercase();
        match word.trim_end_matches(|c: char| c.is_ascii_digit()) {
            "cuda" => Some(FoundBackend::Cuda),
            "rocm" | "hip" => Some(FoundBackend::Hip),
            "musa" => Some(FoundBackend::Musa),
            "vulkan" => Some(FoundBackend::Vulkan),
            "intel" | "sycl" => Some(FoundBackend::Sycl),
            _ => None,
        }
    })
}

/// Judges what was found in `what` against what the pool asks ([`judge_backend`]): `Ok` with
/// the warnings to record when it may run (a fallback is also reported as a note), `Err` from
/// `refuse` (given the message) when it may not.
pub fn check_backend(
    common: &PoolInputs,
    ask: Option<&GpuAsk>,
    found: &BackendFinding,
    what: &str,
    progress: &dyn provisioner_core::Progress,
    refuse: impl FnOnce(String) -> Error,
) -> Result<Vec<String>> {
    match judge_backend(ask, found, what, common.pool.allow_cpu_fallback()) {
        BackendVerdict::Met => Ok(Vec::new()),
        BackendVerdict::Fallback(warning) => {
            progress.report(ProgressEvent::Note {
                message: warning.clone(),
            });
            Ok(vec![warning])
        }
        BackendVerdict::Refused(message) => Err(refuse(message)),
    }
}

/// What a source build selects with its CMake entries, stated (the builder checks a GPU
/// backend after the build), judged against what the pool asks: the warnings to record, or a
/// configuration error when the pool asks for a GPU that the entries do not build (nothing is
/// fetched or built for it).
pub fn source_backend(
    common: &PoolInputs,
    backend: Backend,
) -> Result<(BackendFinding, Vec<String>)> {
    let found = match backend {
        Backend::Cpu => BackendFinding::stated(
            FoundBackend::Cpu,
            "source.build.cmake_flags select no GPU backend (-DGGML_CUDA=ON, -DGGML_HIP=ON or -DGGML_VULKAN=ON)",
        ),
        gpu => BackendFinding::stated(
            FoundBackend::from(gpu),
            format!("source.build.cmake_flags select {gpu}, which the build is checked for"),
        ),
    };
    let ask = GpuAsk::merge(
        backend.is_gpu().then(|| {
            GpuAsk::named(
                FoundBackend::from(backend),
                "provisioning.source.build.cmake_flags",
            )
        }),
        common.gpu.clone(),
    );
    let warnings = match judge_backend(
        ask.as_ref(),
        &found,
        "the source build",
        common.pool.allow_cpu_fallback(),
    ) {
        BackendVerdict::Met => Vec::new(),
        BackendVerdict::Fallback(warning) => vec![warning],
        BackendVerdict::Refused(message) => {
            return Err(Error::invalid(
                "provisioning.flags",
                format!(
                    "{message}; add the GPU backend to provisioning.source.build.cmake_flags (-DGGML_CUDA=ON, -DGGML_HIP=ON or -DGGML_VULKAN=ON), drop the offload flag, {}",
                    provisioner_core::FALLBACK_HINT
                ),
            ));
        }
    };
    Ok((found, warnings))
}

/// What a recipe makes of a pool's CMake cache entries.
#[derive(Debug, Clone, Default)]
pub struct CmakeChoice {
    /// The entries cmake gets.
    pub entries: CacheEntries,
    /// The backend they select.
    pub backend: Backend,
    /// Entries given under an old option name, passed under its successor.
    pub renamed: Vec<OptionRename>,
    /// Settings that depend on the tree being built.
    pub tree_rules: Vec<provisioner_core::TreeRule>,
    /// Downloads the chosen options make during the build.
    pub fetches: Vec<provisioner_core::BuildFetch>,
    /// Headers the chosen options need.
    pub headers: Vec<provisioner_core::HeaderRequirement>,
    /// What was changed, for the plan.
    pub notes: Vec<String>,
}

/// What proves which build a running engine is.
#[derive(Debug, Clone, Copy)]
pub enum Evidence<'a> {
    /// The commit a source build was made from.
    Commit(&'a str),
    /// The version label a prebuilt server reported ([`Recipe::reported_version`]).
    ReportedVersion(&'a str),
    /// The `org.opencontainers.image.revision` label of an image.
    ImageRevision(&'a str),
}

/// Where and how a server listens, for [`Recipe::server_args`].
#[derive(Debug, Clone)]
pub struct Listen<'a> {
    /// The model path as the server sees it.
    pub model: &'a str,
    /// Address to bind: loopback on the host, every interface inside a container.
    pub host: &'a str,
    /// Ports to listen on, the HTTP API first (`0`: any free port).
    pub ports: &'a [u16],
}

/// How a server runs on the host.
#[derive(Debug, Clone)]
pub struct NativeFacts {
    /// File name of the server executable.
    pub executable: &'static str,
    /// Names the server had in older releases, tried in order when a prebuilt archive has no
    /// [`NativeFacts::executable`].
    pub older_names: &'static [&'static str],
    /// Port it listens on when the pool gives none.
    pub default_port: u16,
    /// Readiness path.
    pub readiness_path: &'static str,
    /// How long a cold start may take, in seconds.
    pub ready_timeout_seconds: u64,
    /// Arguments that make it print its version (and build details).
    pub version_args: &'static [&'static str],
}

/// How an engine is built from source.
#[derive(Debug, Clone)]
pub struct SourceFacts {
    /// Upstream repository, used when the pool names none.
    pub default_repo: &'static str,
    /// The release tag used with the default repository when the pool names no ref: pinned,
    /// never a branch.
    pub default_ref: &'static str,
    /// CMake targets.
    pub targets: &'static [&'static str],
    /// Artefacts installed, relative to the build tree; the first is the server.
    pub artifacts: &'static [&'static str],
    /// CMake variables the provisioner sets from the resolved commit (commit, build number).
    pub build_info: Option<(&'static str, &'static str)>,
}

/// How an engine runs from its image.
#[derive(Debug, Clone)]
pub struct ContainerFacts {
    /// Upstream image, used when the pool names none.
    pub default_image: &'static str,
    /// Tag used with the default image when the pool names none: pinned, never `latest`.
    pub default_tag: &'static str,
    /// Ports the server listens on inside the container, the HTTP API first.
    pub ports: &'static [u16],
    /// What each of `ports` serves, in the same order (`HTTP`, `gRPC`, `metrics`), for messages.
    pub port_names: &'static [&'static str],
    /// Host ports published when the pool gives none (the same as inside, except where a
    /// low port would fail under rootless podman).
    pub default_host_ports: &'static [u16],
    /// Shared memory the engine needs.
    pub shared_memory: SharedMemory,
    /// Readiness path.
    pub readiness_path: &'static str,
    /// How long a cold start may take (image start plus model load), in seconds.
    pub ready_timeout_seconds: u64,
    /// Whether the arguments after the image are the server's own (the entrypoint is the
    /// server) rather than a command line.
    pub entrypoint_is_server: bool,
}

/// How an engine wants its container's shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedMemory {
    /// The runtime's default is enough.
    Default,
    /// `--ipc=host` (PyTorch workers share tensors through /dev/shm).
    HostIpc,
    /// `--shm-size <size>`.
    Size(&'static str),
}

/// The pool's `env`, bound for a file of mode 0600.
#[derive(Debug, Clone)]
pub struct EnvFile {
    /// Where it goes.
    pub path: PathBuf,
    /// The variables, names only.
    pub variables: Vec<EnvName>,
    /// `NAME=value` lines.
    pub contents: Secret,
}

/// The file name of the pool's env file in its run directory.
pub const ENV_FILE: &str = "env";

/// How the model is made available.
#[derive(Debug, Clone)]
pub enum ModelInput {
    /// Through the ModelProvisioner port.
    Request(ModelRequest),
    /// An external pool's model is a label only.
    Label(Option<String>),
}

/// Everything a pool's plan and prepare derive from its configuration, computed once.
#[derive(Debug, Clone)]
pub struct PoolInputs {
    /// The pool.
    pub pool: PoolConfig,
    /// Its mode (configured or the engine's default).
    pub mode: Mode,
    /// What defaults and mappings were applied, for the plan.
    pub notes: Vec<String>,
    /// The model.
    pub model: ModelInput,
    /// The engine's options from the pool's flags.
    pub options: ServerArgs,
    /// The pool's env file, when it sets `env`.
    pub env_file: Option<EnvFile>,
    /// What the pool's options ask of the backend ([`Recipe::offload_ask`]); each mode adds
    /// what its own settings name.
    pub gpu: Option<GpuAsk>,
}

impl PoolInputs {
    /// Computes what every mode shares: the model request, the options and the env file.
    pub fn new(
        recipe: &dyn Recipe,
        pool: &PoolConfig,
        layout: &Layout,
        env_file_path: PathBuf,
    ) -> Result<PoolInputs> {
        let mode = pool.mode();
        let model_config = pool.provisioning.model.clone().unwrap_or_default();
        let models_dir =
            layout.dir_or(model_config.cache_dir.as_deref(), layout.models_dir.clone());
        let model = match mode {
            Mode::External => ModelInput::Label(pool.model.clone()),
            Mode::Source | Mode::Container | Mode::Package | Mode::Binary => {
                let reference = match (model_config.reference, &pool.model) {
                    (Some(reference), _) => reference,
                    // llama-orch's pool model id is a label: looked up as a file name, never
                    // parsed as a scheme or a checksum.
                    (None, Some(name)) => ModelRef::Relative(PathBuf::from(name)),
                    (None, None) => {
                        return Err(Error::invalid(
                            "provisioning.model.ref",
                            "required (or set the pool's `model` to a file name in the models directory)",
                        ));
                    }
                };
                ModelInput::Request(ModelRequest {
                    reference,
                    models_dir,
                    checksum: model_config.checksum,
                })
            }
        };
        let env_file = (!pool.provisioning.env.is_empty()).then(|| {
            let mut contents = String::new();
            for (name, value) in &pool.provisioning.env {
                contents.push_str(name.as_str());
                contents.push('=');
                contents.push_str(value.expose());
                contents.push('\n');
            }
            EnvFile {
                path: env_file_path,
                variables: pool.provisioning.env.keys().cloned().collect(),
                contents: Secret::new(contents),
            }
        });
        let options = recipe.options(pool)?;
        Ok(PoolInputs {
            pool: pool.clone(),
            mode,
            notes: Vec::new(),
            model,
            gpu: recipe.offload_ask(pool, &options),
            options,
            env_file,
        })
    }

    /// The pool id.
    pub fn pool_id(&self) -> &PoolId {
        &self.pool.id
    }

    /// The model request (every mode but external has one).
    pub fn model_request(&self) -> Result<&ModelRequest> {
        match &self.model {
            ModelInput::Request(request) => Ok(request),
            ModelInput::Label(_) => Err(Error::invalid(
                "provisioning.mode",
                "an external pool stages no model",
            )),
        }
    }

    /// The plan step that stages the model, with what this host knows of it.
    pub fn model_step(&self, known: &dyn KnownFacts) -> Option<Step> {
        let ModelInput::Request(request) = &self.model else {
            return None;
        };
        let staging = match &request.reference {
            ModelRef::File(path) => ModelStaging::Path {
                path: path.clone(),
                bytes: known.size(path),
            },
            ModelRef::Relative(path) => {
                let full = request.models_dir.join(path);
                match &self.pool.model {
                    Some(name)
                        if self
                            .pool
                            .provisioning
                            .model
                            .as_ref()
                            .is_none_or(|m| m.reference.is_none()) =>
                    {
                        ModelStaging::LookUp {
                            name: name.clone(),
                            dir: request.models_dir.clone(),
                        }
                    }
                    _ => ModelStaging::Path {
                        bytes: known.size(&full),
                        path: full,
                    },
                }
            }
            other => ModelStaging::AtPrepare {
                scheme: other.scheme(),
            },
        };
        Some(Step::ResolveModel {
            reference: request.reference.to_string(),
            staging,
        })
    }

    /// The plan step that writes the env file, when there is one.
    pub fn env_file_step(&self) -> Option<Step> {
        self.env_file.as_ref().map(|file| Step::WriteEnvFile {
            path: file.path.clone(),
            variables: file.variables.iter().map(|v| v.to_string()).collect(),
        })
    }

    /// How a native server is launched with `model`: its host ports, arguments and readiness.
    pub fn native_launch(
        &self,
        recipe: &dyn Recipe,
        native: &NativeFacts,
        model: &str,
    ) -> NativeLaunch {
        let ports = self.native_ports(native);
        let args = recipe.server_args(
            &self.pool,
            &self.options,
            &Listen {
                model,
                host: "127.0.0.1",
                ports: &ports,
            },
        );
        NativeLaunch {
            args,
            readiness: probe(
                ports[0],
                native.readiness_path,
                native.ready_timeout_seconds,
            ),
            ports,
        }
    }

    /// The plan's launch step of a native server run as `program` with `env`.
    pub fn native_launch_step(
        &self,
        recipe: &dyn Recipe,
        native: &NativeFacts,
        program: String,
        env: BTreeMap<String, String>,
    ) -> Step {
        let launch = self.native_launch(recipe, native, &self.model_placeholder());
        Step::Launch {
            program,
            args: launch.args,
            env,
            env_file: self.env_file.as_ref().map(|f| f.path.clone()),
            ports: launch.ports,
            readiness: launch.readiness,
        }
    }

    /// The host ports of a native server: the configured ones, else the engine's default.
    pub fn native_ports(&self, facts: &NativeFacts) -> Vec<u16> {
        match self.pool.provisioning.ports.as_slice() {
            [] => vec![facts.default_port],
            ports => ports.to_vec(),
        }
    }

    /// The model path as the plan shows it before prepare: the configured path when it is
    /// one, else `{model}`.
    pub fn model_placeholder(&self) -> String {
        match &self.model {
            ModelInput::Request(request) => match &request.reference {
                ModelRef::File(path) => path.to_string_lossy().to_string(),
                ModelRef::Relative(path) => {
                    request.models_dir.join(path).to_string_lossy().to_string()
                }
                ModelRef::HuggingFace(_)
                | ModelRef::Url(_)
                | ModelRef::S3(_)
                | ModelRef::Oci(_) => "{model}".to_string(),
            },
            ModelInput::Label(_) => "{model}".to_string(),
        }
    }

    /// Writes the env file through the RunFiles port, when the pool has one.
    pub async fn write_env_file(&self, ports: &provisioner_core::Ports) -> Result<Option<PathBuf>> {
        match &self.env_file {
            Some(file) => Ok(Some(
                ports
                    .run_files
                    .write_private(&self.pool.id, ENV_FILE, &file.contents)
                    .await?,
            )),
            None => Ok(None),
        }
    }

    /// The device mask of a native engine (`CUDA_VISIBLE_DEVICES`), when the pool has devices.
    pub fn device_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        if !self.pool.devices.is_empty() {
            let devices: Vec<String> = self.pool.devices.iter().map(|d| d.to_string()).collect();
            env.insert("CUDA_VISIBLE_DEVICES".to_string(), devices.join(","));
        }
        env
    }
}

/// The native facts of an engine whose mode needs them.
pub fn native_facts(recipe: &dyn Recipe) -> Result<&NativeFacts> {
    recipe.native().ok_or_else(|| Error::UnsupportedMode {
        engine: recipe.engine().to_string(),
        mode: "native".to_string(),
        supported: Vec::new(),
        hint: Some(format!(
            "{} runs from its container image only",
            recipe.engine().label()
        )),
    })
}

/// The readiness probe of a server on `port`.
pub fn probe(port: u16, path: &str, timeout_seconds: u64) -> Probe {
    Probe {
        port,
        path: path.to_string(),
        status: 200,
        timeout_seconds,
    }
}

/// How a native server is launched.
pub struct NativeLaunch {
    /// Its arguments.
    pub args: Vec<String>,
    /// Host ports, the HTTP API first.
    pub ports: Vec<u16>,
    /// Its readiness probe.
    pub readiness: Probe,
}

/// What a mode found or made, for [`finish`].
pub struct Outcome {
    /// The program.
    pub bin: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment the provisioner derived.
    pub env: BTreeMap<String, String>,
    /// Host ports.
    pub ports: Vec<u16>,
    /// Working directory.
    pub workdir: PathBuf,
    /// The engine version.
    pub engine_version: String,
    /// Backend found (never a guess from the configuration).
    pub backend: FoundBackend,
    /// What prepare went ahead with although the pool asked otherwise.
    pub warnings: Vec<String>,
    /// Readiness probe.
    pub readiness: Probe,
    /// Identity check.
    pub identity: Option<IdentityCheck>,
    /// The model path given to the engine.
    pub model_path: PathBuf,
    /// Source provenance and flags, for source builds.
    pub source: Option<(SourceProvenance, Vec<String>)>,
    /// The installed artefact in the cache.
    pub cache: Option<Cache>,
}

/// An installed artefact's place in the cache.
pub struct Cache {
    /// Cache key.
    pub key: String,
    /// Whether it was installed before this prepare.
    pub hit: bool,
    /// The metadata file next to it, when the provisioner wrote one.
    pub metadata_file: Option<PathBuf>,
}

/// Assembles the [`PreparedEngine`].
pub fn finish(
    inputs: &PoolInputs,
    outcome: Outcome,
    env_file: Option<PathBuf>,
    plan_digest: String,
) -> PreparedEngine {
    let (source, build_flags) = match outcome.source {
        Some((provenance, flags)) => (Some(provenance), flags),
        None => (None, Vec::new()),
    };
    let (cache_key, cache_hit, metadata_file) = match outcome.cache {
        Some(cache) => (Some(cache.key), cache.hit, cache.metadata_file),
        None => (None, false, None),
    };
    PreparedEngine {
        pool_id: inputs.pool.id.clone(),
        engine: inputs.pool.engine,
        bin: Some(outcome.bin),
        args: outcome.args,
        env: outcome.env,
        env_file,
        ports: outcome.ports,
        workdir: Some(outcome.workdir),
        engine_version: outcome.engine_version,
        metadata: EngineMetadata {
            mode: inputs.mode,
            source,
            build_flags,
            backend: Some(outcome.backend),
            readiness: outcome.readiness,
            identity: outcome.identity,
            model_path: Some(outcome.model_path),
            cache_key,
            cache_hit,
            metadata_file,
            plan_digest,
            warnings: outcome.warnings,
        },
    }
}

/// The adapter wired into an optional port, or [`Error::PortUnavailable`] saying how to wire it.
pub fn wired<'a, T: ?Sized>(
    port: &'a Option<std::sync::Arc<T>>,
    name: &str,
    how: &str,
) -> Result<&'a std::sync::Arc<T>> {
    port.as_ref().ok_or_else(|| Error::PortUnavailable {
        port: name.to_string(),
        hint: Some(how.to_string()),
    })
}

/// `offers` of an engine that ships as images only: container and external modes.
pub fn container_only(
    engine: provisioner_core::Engine,
    mode: Mode,
) -> std::result::Result<(), String> {
    let label = engine.label();
    match mode {
        Mode::Container | Mode::External => Ok(()),
        Mode::Binary => Err(format!(
            "{label} publishes no standalone binary; use mode: container with its upstream image"
        )),
        Mode::Source | Mode::Package => Err(format!(
            "{label} is provisioned as a container image: use mode: container"
        )),
    }
}

/// The error of [`Recipe::cmake_entries`] for an engine that is not built from source.
fn no_source_build(engine: provisioner_core::Engine) -> Error {
    Error::UnsupportedMode {
        engine: engine.to_string(),
        mode: Mode::Source.to_string(),
        supported: Vec::new(),
        hint: Some(format!("{} is not built from source here", engine.label())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_values_that_ask_for_a_gpu() {
        for value in ["99", "1", "all", "-2", "999"] {
            assert!(offloads(value), "{value}");
        }
        for value in ["0", "auto", "-1", ""] {
            assert!(!offloads(value), "{value}");
        }
    }

    #[test]
    fn image_tags_that_name_a_gpu_backend() {
        let cases = [
            ("server-cuda-b11312", Some(FoundBackend::Cuda)),
            ("server-cuda13-b11312", Some(FoundBackend::Cuda)),
            ("full-rocm", Some(FoundBackend::Hip)),
            ("server-musa-b6000", Some(FoundBackend::Musa)),
            ("server-vulkan", Some(FoundBackend::Vulkan)),
            ("server-intel-b6000", Some(FoundBackend::Sycl)),
            ("server-b11312", None),
            ("v0.12.0", None),
            ("25.10-trtllm-python-py3", None),
            ("hipster", None),
        ];
        for (tag, expected) in cases {
            assert_eq!(backend_in_tag(tag), expected, "{tag}");
        }
    }
}
