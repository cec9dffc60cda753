//! What every engine and every mode shares: the [`Recipe`] trait through which an engine states
//! its facts, the per-pool [`PoolInputs`] computed once for both `plan` and `prepare`, and the
//! helpers that turn inputs into plan steps and a [`PreparedEngine`]. Nothing here imports an
//! engine's file or a mode's file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use provisioner_core::{
    Backend, BackendFinding, BackendVerdict, CacheEntries, CacheEntry, EngineMetadata, EnvName,
    EnvValue, Error, FoundBackend, GpuAsk, IdentityCheck, KnownFacts, Layout, Mode, ModelRef,
    ModelRequest, ModelStaging, OptionRename, PoolConfig, PoolId, PreparedEngine, Probe, ProbeAuth,
    ProgressEvent, Result, Secret, SourceProvenance, Step, judge_backend,
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

    /// The server's options whose values are host paths (files it reads, directories, paths it
    /// writes), every spelling: container mode mounts them under `/inputs/` or refuses them
    /// ([`crate::host_files`]). Default: none.
    fn path_options(&self) -> &'static [crate::host_files::PathOption] {
        &[]
    }

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

    /// How the server takes the key of its own API, which never goes on its command line;
    /// `None` (the default) when this recipe knows no such option.
    fn api_key(&self) -> Option<&ApiKeyFacts> {
        None
    }
}

/// How a server takes the key of its own HTTP API. Keys a pool gives with `option` in its
/// flags are taken off the command line: a server on the host gets them in a key file of mode
/// 0600 named with `file_option`; a container, which sees no host file (and a server without
/// such an option), gets them in `variable` through the pool's env file. A pool may also set
/// `variable` in its `env` (not both). The supervisor's probes authenticate with the first key.
#[derive(Debug, Clone, Copy)]
pub struct ApiKeyFacts {
    /// The option that takes keys (`--api-key`).
    pub option: &'static str,
    /// The option that names a file of keys, one a line (`--api-key-file`), if the server has
    /// one.
    pub file_option: Option<&'static str>,
    /// The variable the server reads keys from (`LLAMA_API_KEY`).
    pub variable: &'static str,
    /// Whether one value lists several keys separated by commas (CSV, `"` quoting).
    pub comma_separated: bool,
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
    /// The option that stops the server from fetching anything itself, passed only when the
    /// installed build's help (run once at install with [`NativeFacts::help_args`]) lists it,
    /// since the model it gets is always staged locally (llama.cpp's `--offline`).
    pub offline_flag: Option<&'static str>,
    /// Arguments that make it print its options and exit (`--help`).
    pub help_args: &'static [&'static str],
}

impl NativeFacts {
    /// The probe the installers run once after install: the help arguments and the options
    /// that are passed only when the help lists them. `None` when there is nothing to learn.
    pub fn flag_probe(&self) -> Option<provisioner_core::FlagProbe> {
        let flags: Vec<String> = self.offline_flag.iter().map(|f| f.to_string()).collect();
        (!flags.is_empty() && !self.help_args.is_empty()).then(|| provisioner_core::FlagProbe {
            args: self.help_args.iter().map(|a| a.to_string()).collect(),
            flags,
        })
    }
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
    /// Each variable's value, or where it is read from when the file is written.
    pub values: Vec<(EnvName, EnvValue)>,
}

/// An engine's API keys, bound for a key file of mode 0600 (one key a line).
#[derive(Debug, Clone)]
pub struct KeyFile {
    /// Where it goes.
    pub path: PathBuf,
    /// The option the pool gave the keys with (`--api-key`).
    pub option: &'static str,
    /// The option that names the file on the server's command line (`--api-key-file`).
    pub file_option: &'static str,
    /// The keys, one a line.
    pub contents: Secret,
}

/// The file name of the pool's env file in its run directory.
pub const ENV_FILE: &str = "env";

/// The file name of the pool's key file in its run directory (next to the env file).
pub const KEY_FILE: &str = "api-key";

/// How the model is made available.
#[derive(Debug, Clone)]
pub enum ModelInput {
    /// Through the ModelProvisioner port.
    Request(ModelRequest),
    /// An external pool's model is a label only.
    Label(Option<String>),
}

/// The env file's contents, read at the start of a prepare and written at its end (`None`
/// inside when the pool has no env file).
#[derive(Debug)]
pub struct EnvValues(Option<Secret>);

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
    /// The pool's env file, when it sets `env` (or a container gets API keys through it).
    pub env_file: Option<EnvFile>,
    /// The engine's key file, when the pool gives API keys in its flags and the engine runs on
    /// the host.
    pub key_file: Option<KeyFile>,
    /// Where the probes find the key of the engine's API, when it has one.
    pub probe_auth: Option<ProbeAuth>,
    /// What the pool's options ask of the backend ([`Recipe::offload_ask`]); each mode adds
    /// what its own settings name.
    pub gpu: Option<GpuAsk>,
}

impl PoolInputs {
    /// Computes what every mode shares: the model request, the options, the env file and the
    /// key file (a sibling of the env file, `KEY_FILE`).
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
                    (None, Some(name)) => ModelRef::relative(PathBuf::from(name))
                        .map_err(|message| Error::invalid("model", message))?,
                    (None, None) => {
                        return Err(Error::invalid(
                            "provisioning.model.ref",
                            "required (or set the pool's `model` to a file name in the models directory)",
                        ));
                    }
                };
                // `model.revision` and `hf:org/repo@revision` agree (checked when the config
                // was read): the request carries one revision, in the reference.
                let reference = match (reference, &model_config.revision) {
                    (ModelRef::HuggingFace(mut hf), Some(revision)) => {
                        hf.revision.get_or_insert_with(|| revision.clone());
                        ModelRef::HuggingFace(hf)
                    }
                    (reference, _) => reference,
                };
                ModelInput::Request(ModelRequest {
                    reference,
                    models_dir,
                    checksum: model_config.checksum,
                    include: model_config.include,
                    exclude: model_config.exclude,
                    refresh: false,
                })
            }
        };
        let mut options = recipe.options(pool)?;
        let mut env = pool.provisioning.env.clone();
        let (key_file, probe_auth) = match recipe.api_key() {
            Some(facts) => api_key_inputs(facts, pool, &mut options, &mut env, &env_file_path)?,
            None => (None, None),
        };
        let env_file = (!env.is_empty()).then(|| EnvFile {
            path: env_file_path,
            variables: env.keys().cloned().collect(),
            values: env.into_iter().collect(),
        });
        Ok(PoolInputs {
            pool: pool.clone(),
            mode,
            notes: Vec::new(),
            model,
            gpu: recipe.offload_ask(pool, &options),
            options,
            env_file,
            key_file,
            probe_auth,
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
            other => match known.staged_model(request) {
                Some(staged) => ModelStaging::Staged {
                    scheme: other.scheme(),
                    path: staged.path,
                    revision: staged.revision,
                    bytes: staged.bytes,
                },
                None => ModelStaging::AtPrepare {
                    scheme: other.scheme(),
                },
            },
        };
        Some(Step::ResolveModel {
            reference: request.reference.to_string(),
            staging,
        })
    }

    /// The plan steps that write the env file and the key file, those there are.
    pub fn env_file_step(&self) -> Vec<Step> {
        let env = self.env_file.as_ref().map(|file| Step::WriteEnvFile {
            path: file.path.clone(),
            variables: file.variables.iter().map(|v| v.to_string()).collect(),
        });
        let keys = self.key_file.as_ref().map(|file| Step::WriteKeyFile {
            path: file.path.clone(),
            option: file.option.to_string(),
            file_option: file.file_option.to_string(),
        });
        env.into_iter().chain(keys).collect()
    }

    /// `probe` with the key of the engine's API, when it has one.
    pub fn authenticated(&self, mut probe: Probe) -> Probe {
        probe.auth = self.probe_auth.clone();
        probe
    }

    /// How a native server is launched with `model`: its host ports, arguments and readiness.
    /// `supported` lists the options of [`NativeFacts::flag_probe`] the installed server's help
    /// listed (empty in a plan, before anything is installed).
    pub fn native_launch(
        &self,
        recipe: &dyn Recipe,
        native: &NativeFacts,
        model: &str,
        supported: &[String],
    ) -> NativeLaunch {
        let ports = self.native_ports(native);
        let mut args = recipe.server_args(
            &self.pool,
            &self.options,
            &Listen {
                model,
                host: "127.0.0.1",
                ports: &ports,
            },
        );
        // The model is staged locally: a server that can promise not to fetch does so.
        if let Some(flag) = native.offline_flag
            && supported.iter().any(|s| s == flag)
            && !args.iter().any(|a| a == flag)
        {
            args.push(flag.to_string());
        }
        // The keys are in a file of mode 0600; only its path is on the command line.
        if let Some(file) = &self.key_file {
            args.extend([
                file.file_option.to_string(),
                file.path.to_string_lossy().to_string(),
            ]);
        }
        NativeLaunch {
            args,
            readiness: self.authenticated(probe(
                ports[0],
                native.readiness_path,
                native.ready_timeout_seconds,
            )),
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
        let launch = self.native_launch(recipe, native, &self.model_placeholder(), &[]);
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

    /// Checks, through the RunFiles port, that the host files the pool's flags name by
    /// absolute path (the recipe's path options: a chat template, a grammar, LoRA adapters)
    /// exist as their options take them: a native engine would otherwise fail at its start.
    /// A relative path is the engine's business (its working directory).
    pub async fn check_host_inputs(
        &self,
        recipe: &dyn Recipe,
        ports: &provisioner_core::Ports,
    ) -> Result<()> {
        let inputs = crate::host_files::native_inputs(
            recipe.path_options(),
            &self.options.to_argv(),
            &self.pool.provisioning.flags,
        );
        ports
            .run_files
            .check_inputs(&inputs)
            .await
            .map_err(|error| error.within(&format!("pools[{}]", self.pool.index)))
    }

    /// Reads every value of the env file (`from_env`, `from_file`) now, without writing
    /// anything: each mode reads them first, so that a value that cannot be read fails before a
    /// download or a build rather than after it, and writes what it read at the end
    /// ([`PoolInputs::write_env_file`]). A value that cannot be read, or that an env file cannot
    /// carry, is an error naming its key (never the value).
    pub async fn read_env_values(&self, ports: &provisioner_core::Ports) -> Result<EnvValues> {
        self.env_contents(ports).await.map(EnvValues)
    }

    /// Writes the env file with the values read by [`PoolInputs::read_env_values`] through the
    /// RunFiles port, when the pool has one.
    pub async fn write_env_file(
        &self,
        ports: &provisioner_core::Ports,
        values: EnvValues,
    ) -> Result<Option<PathBuf>> {
        let Some(contents) = values.0 else {
            return Ok(None);
        };
        let path = ports
            .run_files
            .write_private(&self.pool.id, ENV_FILE, &contents)
            .await?;
        Ok(Some(path))
    }

    /// The env file's contents (`NAME=value` lines), every value read now; `None` when the
    /// pool has no env file.
    async fn env_contents(&self, ports: &provisioner_core::Ports) -> Result<Option<Secret>> {
        let Some(file) = &self.env_file else {
            return Ok(None);
        };
        let mut contents = String::new();
        for (name, value) in &file.values {
            let field = self.pool.field(&format!("provisioning.env.{name}"));
            let secret = ports
                .run_files
                .resolve(value)
                .await
                .map_err(|message| Error::invalid(field.clone(), message))?;
            if secret.expose().contains(['\n', '\r', '\0']) {
                return Err(Error::invalid(
                    field,
                    format!(
                        "the value ({}) holds a line break or a NUL byte, which an environment file cannot carry",
                        value.describe()
                    ),
                ));
            }
            contents.push_str(name.as_str());
            contents.push('=');
            contents.push_str(secret.expose());
            contents.push('\n');
        }
        Ok(Some(Secret::new(contents)))
    }

    /// Writes the key file through the RunFiles port, when the engine gets one.
    pub async fn write_key_file(&self, ports: &provisioner_core::Ports) -> Result<Option<PathBuf>> {
        match &self.key_file {
            Some(file) => Ok(Some(
                ports
                    .run_files
                    .write_private(&self.pool.id, KEY_FILE, &file.contents)
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

/// The readiness probe of a server on `port` (without a key: see [`PoolInputs::authenticated`]).
pub fn probe(port: u16, path: &str, timeout_seconds: u64) -> Probe {
    Probe {
        port,
        path: path.to_string(),
        status: 200,
        timeout_seconds,
        auth: None,
    }
}

/// Where an engine's API keys go (see [`ApiKeyFacts`]): keys given in the flags are taken off
/// `options` into a key file (a server on the host that reads one) or into `env` (a container,
/// or a server without a key file option); then where the probes find the first key: the key
/// file, the env file's variable, or a key file the flags name. An external engine's keys are
/// its own business.
fn api_key_inputs(
    facts: &ApiKeyFacts,
    pool: &PoolConfig,
    options: &mut ServerArgs,
    env: &mut BTreeMap<EnvName, EnvValue>,
    env_file_path: &std::path::Path,
) -> Result<(Option<KeyFile>, Option<ProbeAuth>)> {
    let mode = pool.mode();
    let variable: EnvName = facts
        .variable
        .parse()
        .map_err(|e: String| Error::invalid("provisioning.env", e))?;
    let keys = take_api_keys(facts, pool, options)?;
    if mode == Mode::External {
        return Ok((None, None));
    }
    let mut key_file = None;
    if let Some((at, keys)) = keys {
        if env.contains_key(&variable) {
            return Err(Error::invalid(
                at,
                format!(
                    "{} and provisioning.env.{variable} both give the API key; give it in one place (env can read it from elsewhere: {{from_env: NAME}} or {{from_file: /path}})",
                    facts.option
                ),
            ));
        }
        let native = matches!(mode, Mode::Source | Mode::Package | Mode::Binary);
        match facts.file_option.filter(|_| native) {
            Some(file_option) => {
                if keys.iter().any(|key| key.starts_with('#')) {
                    return Err(Error::invalid(
                        at,
                        format!(
                            "a key given with {} starts with `#`, which the server reads as a comment in its key file; use another key",
                            facts.option
                        ),
                    ));
                }
                key_file = Some(KeyFile {
                    path: env_file_path.with_file_name(KEY_FILE),
                    option: facts.option,
                    file_option,
                    contents: Secret::new(
                        keys.iter()
                            .map(|key| format!("{key}\n"))
                            .collect::<String>(),
                    ),
                });
            }
            // A container sees no host file: the keys travel in its env file.
            None => {
                if !facts.comma_separated && keys.len() > 1 {
                    return Err(Error::invalid(
                        at,
                        format!(
                            "{} is given several keys, but the server gets them in {variable}, which holds one",
                            facts.option
                        ),
                    ));
                }
                env.insert(
                    variable.clone(),
                    EnvValue::Plain(Secret::new(csv_join(&keys, facts.comma_separated))),
                );
            }
        }
    }
    let given_file = facts
        .file_option
        .and_then(|option| match options.get(option) {
            Some(Some(path)) => Some(PathBuf::from(path)),
            _ => None,
        });
    let probe_auth = match &key_file {
        Some(file) => Some(ProbeAuth::KeyFile {
            path: file.path.clone(),
        }),
        None if env.contains_key(&variable) => Some(ProbeAuth::EnvFile {
            path: env_file_path.to_path_buf(),
            variable: variable.to_string(),
            comma_separated: facts.comma_separated,
        }),
        None => given_file.map(|path| ProbeAuth::KeyFile { path }),
    };
    Ok((key_file, probe_auth))
}

/// Takes every occurrence of the API key option off `options`: `None` when the pool gives
/// none, else the field of the first (`provisioning.flags[i]`) and the keys, in order (each
/// value split at commas where the server does so; empty keys dropped, as the server drops
/// them). Errors never show a key.
fn take_api_keys(
    facts: &ApiKeyFacts,
    pool: &PoolConfig,
    options: &mut ServerArgs,
) -> Result<Option<(String, Vec<String>)>> {
    let flags = &pool.provisioning.flags;
    let index = flags
        .iter()
        .position(|flag| {
            flag == facts.option
                || flag
                    .strip_prefix(facts.option)
                    .is_some_and(|rest| rest.starts_with('='))
        })
        .unwrap_or(0);
    let at = format!("provisioning.flags[{index}]");
    // Every word given to the option, in every occurrence (a list option such as vLLM's takes
    // several), read before the option is taken off.
    let values: Vec<String> = options
        .values(facts.option)
        .into_iter()
        .map(str::to_string)
        .collect();
    if options.remove(facts.option).is_none() {
        return Ok(None);
    }
    if values.is_empty() {
        return Err(Error::invalid(
            at,
            format!(
                "{} takes a key (or set the key in provisioning.env, which can read it from elsewhere)",
                facts.option
            ),
        ));
    }
    let mut keys = Vec::new();
    for value in &values {
        if value.contains(['\n', '\r']) {
            return Err(Error::invalid(
                at,
                format!(
                    "a key given with {} holds a line break, which no server reads",
                    facts.option
                ),
            ));
        }
        if facts.comma_separated {
            keys.extend(
                provisioner_core::csv_fields(value)
                    .into_iter()
                    .filter(|key| !key.is_empty()),
            );
        } else if !value.is_empty() {
            keys.push(value.clone());
        }
    }
    if keys.is_empty() {
        return Err(Error::invalid(
            at,
            format!("{} gives no key (only empty ones)", facts.option),
        ));
    }
    Ok(Some((at, keys)))
}

/// Keys as one value: a CSV row when the server splits the value, else the first key.
fn csv_join(keys: &[String], comma_separated: bool) -> String {
    if comma_separated {
        provisioner_core::csv_join(keys)
    } else {
        keys.first().cloned().unwrap_or_default()
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

// ---------------------------------------------------------------------------------------------
// What the provisioner owns of a pool's env and fields, for every engine: device masks,
// offline switches, variables an engine reads as options, tensor splits and device counts.
// ---------------------------------------------------------------------------------------------

/// Variables that choose the GPUs a process sees (CUDA, NVIDIA's container toolkit, ROCm/HIP,
/// oneAPI/Level Zero, ggml's Vulkan and MUSA backends). The provisioner derives them from the
/// pool's `devices`; inside a container the GPUs it passes are renumbered from 0.
pub const DEVICE_MASKS: &[&str] = &[
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "ONEAPI_DEVICE_SELECTOR",
    "ZE_AFFINITY_MASK",
    "GGML_VK_VISIBLE_DEVICES",
    "MUSA_VISIBLE_DEVICES",
];

/// Variables that keep the Hugging Face libraries (huggingface_hub, transformers) from
/// downloading: every container runs with them, since its model is staged on the host first.
pub const OFFLINE_ENV: &[(&str, &str)] = &[("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1")];

/// A variable an engine reads as one of its options, which the recipe owns or refuses there.
#[derive(Debug, Clone, Copy)]
pub struct EnvOption {
    /// The variable.
    pub variable: &'static str,
    /// The option it stands for.
    pub option: &'static str,
    /// Why the pool may not set it, and what to do instead.
    pub reason: &'static str,
}

/// Checks the names in the pool's `env` against what the provisioner owns: a device mask is an
/// error saying to use `devices`; in a container, an offline switch other than `1` contradicts
/// the staged model; a variable the engine reads as an option the recipe owns or refuses
/// (`env_options`) is refused as the option would be. Values are never shown.
pub fn check_pool_env(pool: &PoolConfig, env_options: &[EnvOption]) -> Result<()> {
    for (name, value) in &pool.provisioning.env {
        let name = name.as_str();
        let field = format!("provisioning.env.{name}");
        if DEVICE_MASKS.contains(&name) {
            return Err(Error::invalid(
                field,
                format!(
                    "{name} chooses the GPUs the engine sees, which the provisioner derives from the pool's `devices` (and inside a container the GPUs are numbered from 0); list the GPUs in devices and remove {name}"
                ),
            ));
        }
        if pool.mode() == Mode::Container
            && OFFLINE_ENV.iter().any(|(variable, _)| *variable == name)
        {
            let on = value.plain().is_some_and(|value| {
                matches!(
                    value.expose().trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            });
            if !on {
                return Err(Error::invalid(
                    field,
                    format!(
                        "containers run with {} because their model is staged on the host (provisioning.model.ref) and the engine must not download; remove {name}",
                        OFFLINE_ENV
                            .iter()
                            .map(|(variable, value)| format!("{variable}={value}"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                ));
            }
        }
        if let Some(rule) = env_options.iter().find(|rule| rule.variable == name) {
            return Err(Error::invalid(
                field,
                format!(
                    "the engine reads {name} as {}: {}",
                    rule.option, rule.reason
                ),
            ));
        }
    }
    Ok(())
}

/// The pool's `devices` for messages: `2 devices ([0, 1])`.
pub fn devices_text(pool: &PoolConfig) -> String {
    let devices: Vec<String> = pool.devices.iter().map(|d| d.to_string()).collect();
    let count = match devices.len() {
        1 => "1 device".to_string(),
        n => format!("{n} devices"),
    };
    format!("{count} ([{}])", devices.join(", "))
}

/// `tensor_split` for an engine that splits tensors evenly over its devices (vLLM's and TGI's
/// tensor parallelism): an even split over every device says what the engine does anyway and
/// is accepted (no option); any other is an error saying why.
pub fn even_split_only(pool: &PoolConfig, label: &str) -> Result<()> {
    let Some(split) = &pool.tensor_split else {
        return Ok(());
    };
    let devices = pool.devices.len();
    let even = split.windows(2).all(|pair| pair[0] == pair[1]);
    if even && devices > 0 && split.len() == devices {
        return Ok(());
    }
    Err(Error::invalid(
        "tensor_split",
        format!(
            "{label} splits the model evenly over the pool's devices (tensor parallelism over {}) and takes no proportions; tensor_split can only say that ({} equal numbers) or be left out",
            devices_text(pool),
            devices.max(1)
        ),
    ))
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
