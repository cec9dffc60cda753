//! llama.cpp's facts. Source is its default mode: the upstream tree is built with CMake into a
//! self-contained `llama-server`; binary, package and container modes install a pinned prebuilt
//! server instead.
//!
//! Upstream facts used here: `llama-server` listens on 8080 and answers `/health` once the model
//! is loaded, and `/props` reports `build_info` (`b<number>-<commit>`) (tools/server/README.md);
//! `--version` prints `version: <number> (<commit>)` (common/arg.cpp); the CMake options and
//! their deprecated spellings come from the tree's CMakeLists.txt; the server image's entrypoint
//! is `llama-server` (docs/docker.md).

use provisioner_core::{
    Backend, BuildFetch, CacheEntries, CacheEntry, Engine, Error, FieldError, FoundBackend,
    HeaderRequirement, IdentityCheck, Mode, OptionRename, PoolConfig, Result, SafeUrl, TreeRule,
};

use crate::args::{
    Fetches, Fetching, HOST_IS_OWNED, OptionTable, Owned, Problems, ServerArgs, parse_options,
    refuse_fetching, take_owned,
};
use crate::common::{
    ApiKeyFacts, CmakeChoice, ContainerFacts, EnvOption, Evidence, Listen, NativeFacts, Recipe,
    SharedMemory, SourceFacts, check_pool_env,
};

/// Default HTTP port of llama-server.
const DEFAULT_PORT: u16 = 8080;

/// Canonical spellings of llama-server options that have several (common/arg.cpp).
/// llama-server's option spellings (common/arg.cpp of release b11312): the short and older
/// forms mapped to one long form, and the options whose every occurrence counts (each one adds
/// an adapter, a control vector, a key override, a tensor override, a sampler sequence
/// breaker or an API key to a list).
const OPTIONS: OptionTable = OptionTable {
    aliases: &[
        ("-ngl", "--n-gpu-layers"),
        ("--ngl", "--n-gpu-layers"),
        ("--gpu-layers", "--n-gpu-layers"),
        ("-m", "--model"),
        ("-c", "--ctx-size"),
        ("-np", "--parallel"),
        ("-t", "--threads"),
        ("-a", "--alias"),
        ("-ts", "--tensor-split"),
        ("-b", "--batch-size"),
        ("-ub", "--ubatch-size"),
        ("-fa", "--flash-attn"),
        ("-cb", "--cont-batching"),
        ("-nocb", "--no-cont-batching"),
        ("-ot", "--override-tensor"),
        ("-otd", "--override-tensor-draft"),
        // Options that download (refused, see FETCHING), in every spelling of b11312 and
        // the July 2025 tree.
        ("-hf", "--hf-repo"),
        ("-hfr", "--hf-repo"),
        ("-hff", "--hf-file"),
        ("--spec-draft-hf", "--hf-repo-draft"),
        ("-hfd", "--hf-repo-draft"),
        ("-hfrd", "--hf-repo-draft"),
        ("-hfv", "--hf-repo-v"),
        ("-hfrv", "--hf-repo-v"),
        ("-hffv", "--hf-file-v"),
        ("-mu", "--model-url"),
        ("-dr", "--docker-repo"),
        ("-mmu", "--mmproj-url"),
        ("-hft", "--hf-token"),
    ],
    repeatable: &[
        "--lora",
        "--lora-scaled",
        "--control-vector",
        "--control-vector-scaled",
        "--override-kv",
        "--override-tensor",
        "--override-tensor-draft",
        "--dry-sequence-breaker",
        "--api-key",
    ],
    ..OptionTable::EMPTY
};

/// Options llama-server takes that undo what the recipe renders.
const OWNED: &[Owned] = &[
    Owned {
        option: "--host",
        instead: HOST_IS_OWNED,
    },
    Owned {
        option: "--models-dir",
        instead: "it makes llama-server a router that serves other models; the provisioner serves provisioning.model.ref",
    },
    Owned {
        option: "--models-preset",
        instead: "it makes llama-server a router that serves other models; the provisioner serves provisioning.model.ref",
    },
];

/// Options that make llama-server download a model itself (every option of common/arg.cpp,
/// release b11312 and the July 2025 tree, that sets a Hub repository, a URL or a Docker Hub
/// model, including the presets that name a Hub model).
const FETCHING: &[Fetching] = &[
    Fetching {
        option: "--hf-repo",
        what: "a model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--hf-file",
        what: "a model file from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--hf-repo-draft",
        what: "a draft model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--hf-repo-v",
        what: "a vocoder model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--hf-file-v",
        what: "a vocoder file from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--hf-token",
        what: "gated files from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--model-url",
        what: "a model from a URL",
        when: Fetches::Always,
    },
    Fetching {
        option: "--docker-repo",
        what: "a model from Docker Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--mmproj-url",
        what: "a multimodal projector from a URL",
        when: Fetches::Always,
    },
    Fetching {
        option: "--embd-gemma-default",
        what: "its preset's model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--embd-bge-small-en-default",
        what: "its preset's model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--embd-e5-small-en-default",
        what: "its preset's model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--embd-gte-small-default",
        what: "its preset's model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--fim-qwen-1.5b-default",
        what: "its preset's model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--fim-qwen-3b-default",
        what: "its preset's model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--fim-qwen-7b-default",
        what: "its preset's model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--fim-qwen-7b-spec",
        what: "its preset's models from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--fim-qwen-14b-spec",
        what: "its preset's models from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--fim-qwen-30b-default",
        what: "its preset's model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--gpt-oss-20b-default",
        what: "its preset's model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--gpt-oss-120b-default",
        what: "its preset's model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--vision-gemma-4b-default",
        what: "its preset's model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--vision-gemma-12b-default",
        what: "its preset's model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--tts-oute-default",
        what: "its preset's models from the Hugging Face Hub",
        when: Fetches::Always,
    },
];

/// Variables llama-server reads as options that would download (`set_env` in
/// common/arg.cpp); the command line wins over the model, host and port ones.
const ENV_OPTIONS: &[EnvOption] = &[
    EnvOption {
        variable: "LLAMA_ARG_HF_REPO",
        option: "--hf-repo",
        reason: "llama-server would download that model itself and serve it instead of the staged one; set provisioning.model.ref",
    },
    EnvOption {
        variable: "LLAMA_ARG_HF_FILE",
        option: "--hf-file",
        reason: "llama-server would download that file itself; set provisioning.model.ref",
    },
    EnvOption {
        variable: "LLAMA_ARG_MODEL_URL",
        option: "--model-url",
        reason: "llama-server would download that model itself; set provisioning.model.ref",
    },
    EnvOption {
        variable: "LLAMA_ARG_DOCKER_REPO",
        option: "--docker-repo",
        reason: "llama-server would download that model itself; set provisioning.model.ref",
    },
    EnvOption {
        variable: "LLAMA_ARG_MMPROJ_URL",
        option: "--mmproj-url",
        reason: "llama-server would download that projector itself; stage it and pass --mmproj with its path",
    },
    EnvOption {
        variable: "LLAMA_ARG_SPEC_DRAFT_HF_REPO",
        option: "--hf-repo-draft",
        reason: "llama-server would download that draft model itself; stage it and pass --model-draft with its path",
    },
    EnvOption {
        variable: "LLAMA_ARG_HFD_REPO",
        option: "--hf-repo-draft",
        reason: "llama-server would download that draft model itself; stage it and pass --model-draft with its path",
    },
    EnvOption {
        variable: "LLAMA_ARG_HF_REPO_V",
        option: "--hf-repo-v",
        reason: "llama-server would download that vocoder itself; stage it and pass --model-vocoder with its path",
    },
    EnvOption {
        variable: "LLAMA_ARG_HF_FILE_V",
        option: "--hf-file-v",
        reason: "llama-server would download that vocoder itself; stage it and pass --model-vocoder with its path",
    },
    EnvOption {
        variable: "LLAMA_ARG_MODELS_DIR",
        option: "--models-dir",
        reason: "it makes llama-server a router that serves other models; the provisioner serves provisioning.model.ref",
    },
    EnvOption {
        variable: "LLAMA_ARG_MODELS_PRESET",
        option: "--models-preset",
        reason: "it makes llama-server a router that serves other models; the provisioner serves provisioning.model.ref",
    },
];

/// Build options of ggml (`option(...)` in ggml/CMakeLists.txt of release b11312, plus options
/// older trees declared). In June 2024 llama.cpp renamed its `LLAMA_<X>` switches for ggml to
/// `GGML_<X>`; trees since then ignore the old spellings, except the few that
/// `llama_option_depr` in the top-level CMakeLists.txt forwards, and only when they are ON. So
/// `-DLLAMA_NATIVE=OFF` is silently lost there and the build targets `-march=native`.
const GGML_OPTIONS: &[&str] = &[
    "GGML_ACCELERATE",
    "GGML_ALL_WARNINGS",
    "GGML_ALL_WARNINGS_3RD_PARTY",
    "GGML_AMX_BF16",
    "GGML_AMX_INT8",
    "GGML_AMX_TILE",
    "GGML_AVX",
    "GGML_AVX2",
    "GGML_AVX512",
    "GGML_AVX512_BF16",
    "GGML_AVX512_VBMI",
    "GGML_AVX512_VNNI",
    "GGML_AVX_VNNI",
    "GGML_BACKEND_DL",
    "GGML_BLAS",
    "GGML_BMI2",
    "GGML_CANN",
    "GGML_CCACHE",
    "GGML_CPU",
    "GGML_CPU_ALL_VARIANTS",
    "GGML_CPU_HBM",
    "GGML_CPU_KLEIDIAI",
    "GGML_CPU_REPACK",
    "GGML_CUDA",
    "GGML_CUDA_F16",
    "GGML_CUDA_FA",
    "GGML_CUDA_FA_ALL_QUANTS",
    "GGML_CUDA_FORCE_CUBLAS",
    "GGML_CUDA_FORCE_DMMV",
    "GGML_CUDA_FORCE_MMQ",
    "GGML_CUDA_GRAPHS",
    "GGML_CUDA_NCCL",
    "GGML_CUDA_NO_PEER_COPY",
    "GGML_CUDA_NO_VMM",
    "GGML_F16C",
    "GGML_FATAL_WARNINGS",
    "GGML_FMA",
    "GGML_GPROF",
    "GGML_HIP",
    "GGML_HIP_GRAPHS",
    "GGML_HIP_NO_VMM",
    "GGML_HIP_UMA",
    "GGML_KOMPUTE",
    "GGML_LASX",
    "GGML_LLAMAFILE",
    "GGML_LSX",
    "GGML_LTO",
    "GGML_METAL",
    "GGML_METAL_EMBED_LIBRARY",
    "GGML_METAL_NDEBUG",
    "GGML_METAL_SHADER_DEBUG",
    "GGML_MUSA",
    "GGML_NATIVE",
    "GGML_OPENCL",
    "GGML_OPENMP",
    "GGML_RPC",
    "GGML_RVV",
    "GGML_SSE42",
    "GGML_STATIC",
    "GGML_SYCL",
    "GGML_SYCL_F16",
    "GGML_VULKAN",
    "GGML_VULKAN_CHECK_RESULTS",
    "GGML_VULKAN_DEBUG",
    "GGML_VULKAN_MEMORY_DEBUG",
    "GGML_VULKAN_RUN_TESTS",
    "GGML_VULKAN_SHADER_DEBUG_INFO",
    "GGML_VULKAN_VALIDATE",
];

/// llama.cpp's own options whose suffix is also a ggml option's: not old names.
const LLAMA_OWN_OPTIONS: &[&str] = &[
    "LLAMA_ALL_WARNINGS",
    "LLAMA_ALL_WARNINGS_3RD_PARTY",
    "LLAMA_FATAL_WARNINGS",
    "LLAMA_BUILD_TESTS",
    "LLAMA_BUILD_EXAMPLES",
];

/// Old names that are not `LLAMA_<X>` → `GGML_<X>` (the backends renamed at the same time or
/// since: CUBLAS → CUDA, HIPBLAS → HIP).
const OTHER_OLD_NAMES: &[(&str, &str)] = &[
    ("LLAMA_CUBLAS", "GGML_CUDA"),
    ("GGML_CUBLAS", "GGML_CUDA"),
    ("LLAMA_HIPBLAS", "GGML_HIP"),
    ("GGML_HIPBLAS", "GGML_HIP"),
    ("LLAMA_HIP_UMA", "GGML_HIP_UMA"),
];

/// llama.cpp's own boolean switches besides [`LLAMA_OWN_OPTIONS`] (`option()` in the
/// top-level, common/ and tools/ CMakeLists.txt of release b11312 and the trees before it),
/// and CMake's `BUILD_SHARED_LIBS`.
const LLAMA_SWITCHES: &[&str] = &[
    "BUILD_SHARED_LIBS",
    "LLAMA_BUILD_APP",
    "LLAMA_BUILD_BORINGSSL",
    "LLAMA_BUILD_COMMON",
    "LLAMA_BUILD_LIBRESSL",
    "LLAMA_BUILD_SERVER",
    "LLAMA_BUILD_TOOLS",
    "LLAMA_BUILD_UI",
    "LLAMA_BUILD_WEBUI",
    "LLAMA_CURL",
    "LLAMA_LLGUIDANCE",
    "LLAMA_OPENSSL",
    "LLAMA_SANITIZE_ADDRESS",
    "LLAMA_SANITIZE_THREAD",
    "LLAMA_SANITIZE_UNDEFINED",
    "LLAMA_SERVER_SSL",
    "LLAMA_SERVER_VERBOSE",
    "LLAMA_USE_PREBUILT_UI",
    "LLAMA_USE_PREBUILT_WEBUI",
    "LLAMA_USE_SYSTEM_GGML",
];

/// Whether `name` is a boolean option of llama.cpp or ggml (under its current or an old name):
/// its value is a truth value, whatever its spelling.
fn is_boolean_option(name: &str) -> bool {
    GGML_OPTIONS.contains(&name)
        || LLAMA_OWN_OPTIONS.contains(&name)
        || LLAMA_SWITCHES.contains(&name)
        || successor(name).is_some_and(|new| GGML_OPTIONS.contains(&new))
}

/// The name that replaced an old llama.cpp CMake option name, if `name` is one.
pub fn successor(name: &str) -> Option<&'static str> {
    if let Some((_, new)) = OTHER_OLD_NAMES.iter().find(|(old, _)| *old == name) {
        return Some(new);
    }
    let suffix = name.strip_prefix("LLAMA_")?;
    if LLAMA_OWN_OPTIONS.contains(&name) {
        return None;
    }
    GGML_OPTIONS
        .iter()
        .find(|option| option.strip_prefix("GGML_") == Some(suffix))
        .copied()
}

/// Defaults the provisioner adds when the config does not set them, and why.
const DEFAULT_FLAGS: &[(&str, &str)] = &[
    // An optimised server unless asked otherwise.
    ("CMAKE_BUILD_TYPE", "Release"),
    // The server target exists only with these (LLAMA_BUILD_COMMON since mid-2024,
    // LLAMA_BUILD_TOOLS since May 2025, when the server moved to tools/); trees that do not
    // declare one ignore it.
    ("LLAMA_BUILD_SERVER", "ON"),
    ("LLAMA_BUILD_COMMON", "ON"),
    ("LLAMA_BUILD_TOOLS", "ON"),
    ("LLAMA_BUILD_TESTS", "OFF"),
    ("LLAMA_BUILD_EXAMPLES", "OFF"),
    // Options that download at build time are off: the provisioner stages models itself and
    // a build must not reach the network behind the policy's back. LLAMA_CURL (ON by default
    // from May 2025 to March 2026) would also need the libcurl headers.
    ("LLAMA_CURL", "OFF"),
    ("LLAMA_USE_PREBUILT_UI", "OFF"),
    ("LLAMA_USE_PREBUILT_WEBUI", "OFF"),
    ("LLAMA_BUILD_UI", "OFF"),
    ("LLAMA_LLGUIDANCE", "OFF"),
    // One self-contained executable survives the atomic rename into the cache; shared
    // libraries would carry RPATHs into the staging directory.
    ("BUILD_SHARED_LIBS", "OFF"),
];

/// Build options that download something when ON, and from where (the CMake files of release
/// b11312 and older trees: `FetchContent_Declare`, `ExternalProject_Add`, `file(DOWNLOAD)`,
/// npm). A configuration that turns one on gets it checked against the host policy.
const FETCHING_OPTIONS: &[(&str, &str)] = &[
    (
        "LLAMA_USE_PREBUILT_UI",
        "https://huggingface.co/buckets/ggml-org/llama-ui",
    ),
    (
        "LLAMA_USE_PREBUILT_WEBUI",
        "https://huggingface.co/buckets/ggml-org/llama-ui",
    ),
    ("LLAMA_BUILD_UI", "https://registry.npmjs.org/"),
    (
        "LLAMA_LLGUIDANCE",
        "https://github.com/guidance-ai/llguidance",
    ),
    (
        "GGML_CPU_KLEIDIAI",
        "https://github.com/ARM-software/kleidiai/releases/download/",
    ),
    (
        "LLAMA_BUILD_BORINGSSL",
        "https://boringssl.googlesource.com/boringssl",
    ),
    (
        "LLAMA_BUILD_LIBRESSL",
        "https://cdn.openbsd.org/pub/OpenBSD/LibreSSL/",
    ),
    ("GGML_CUDA_CUB_3DOT2", "https://github.com/nvidia/cccl.git"),
    (
        "GGML_VIRTGPU",
        "https://gitlab.freedesktop.org/virgl/virglrenderer/",
    ),
    (
        "GGML_OPENMP_FETCH",
        "https://github.com/llvm/llvm-project/releases/",
    ),
];

/// Trees from mid-2024 to early 2025 keep the server in `examples/server`, built only with
/// LLAMA_BUILD_EXAMPLES; trees from before the June 2024 rename (release b3184) build it as
/// `server`, which this recipe does not install.
const SERVER_IN_EXAMPLES: &str = "examples/server/CMakeLists.txt";

/// The llama.cpp recipe.
pub struct LlamaCpp;

const NATIVE: NativeFacts = NativeFacts {
    executable: "llama-server",
    // `examples/server` built `server` until the rename of June 2024 (release b3186).
    older_names: &["server"],
    default_port: DEFAULT_PORT,
    readiness_path: "/health",
    ready_timeout_seconds: 120,
    version_args: &["--version"],
    // `--offline` ("Offline mode: forces use of cache, prevents network access",
    // common/arg.cpp, 2025); servers from before it refuse the unknown option, so it is passed
    // only when `--help` lists it.
    offline_flag: Some("--offline"),
    help_args: &["--help"],
};

/// Release `b11312` of ggml-org/llama.cpp (commit 0c1e57098bba, 2026-10): the tree the tests
/// build, and the ref used when a pool names neither repository nor ref.
const SOURCE: SourceFacts = SourceFacts {
    default_repo: "https://github.com/ggml-org/llama.cpp.git",
    default_ref: "b11312",
    targets: &["llama-server"],
    artifacts: &["bin/llama-server"],
    build_info: Some(("LLAMA_BUILD_COMMIT", "LLAMA_BUILD_NUMBER")),
};

/// The CPU server image upstream publishes per release (`server-b<number>`,
/// .github/workflows/docker.yml).
const CONTAINER: ContainerFacts = ContainerFacts {
    default_image: "ghcr.io/ggml-org/llama.cpp",
    default_tag: "server-b11312",
    ports: &[DEFAULT_PORT],
    port_names: &["HTTP"],
    default_host_ports: &[DEFAULT_PORT],
    shared_memory: SharedMemory::Default,
    readiness_path: "/health",
    ready_timeout_seconds: 120,
    entrypoint_is_server: true,
};

impl Recipe for LlamaCpp {
    fn engine(&self) -> Engine {
        Engine::Llamacpp
    }

    fn offers(&self, mode: Mode) -> std::result::Result<(), String> {
        match mode {
            Mode::Source | Mode::Binary | Mode::Container | Mode::Package | Mode::External => {
                Ok(())
            }
        }
    }

    fn options(&self, pool: &PoolConfig) -> Result<ServerArgs> {
        let mut problems = Problems::default();
        problems.gather(check_pool_env(pool, ENV_OPTIONS))?;
        let flags = &pool.provisioning.flags;
        let field = "provisioning.flags";
        let mut options = parse_options(flags, &OPTIONS, field)?;
        let at = |option: &str| {
            let index = ServerArgs::position_in(flags, &OPTIONS, option).unwrap_or(0);
            format!("{field}[{index}]")
        };
        if options.get("--model").is_some() {
            problems.push(FieldError::new(
                at("--model"),
                "the model is set by the provisioner; use provisioning.model.ref",
            ));
            options.remove("--model");
        }
        let host = match pool.mode() {
            Mode::Container => "0.0.0.0",
            _ => "127.0.0.1",
        };
        problems.gather(take_owned(
            &mut options,
            flags,
            &OPTIONS,
            field,
            OWNED,
            &[("--host", host.to_string())],
        ))?;
        problems.gather(refuse_fetching(&options, flags, &OPTIONS, field, FETCHING))?;
        let port = pool
            .provisioning
            .ports
            .first()
            .copied()
            .unwrap_or(DEFAULT_PORT);
        if let Some(Some(value)) = options.remove("--port")
            && value != port.to_string()
        {
            let configured = if pool.provisioning.ports.is_empty() {
                format!("the default port {port} (provisioning.ports is not set)")
            } else {
                format!("provisioning.ports[0] = {port}")
            };
            problems.push(FieldError::new(
                at("--port"),
                format!(
                    "--port {value} disagrees with {configured}; set the port only in provisioning.ports"
                ),
            ));
        }
        // The pool's own keys and the flags they become: one value, given in either place.
        let from_pool = [
            ("ctx", "--ctx-size", pool.ctx.map(|ctx| ctx.to_string())),
            (
                "tensor_split",
                "--tensor-split",
                pool.tensor_split.as_ref().map(|split| {
                    split
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                }),
            ),
        ];
        for (key, option, value) in from_pool {
            let Some(value) = value else { continue };
            match options.get(option) {
                None => options.set(option, Some(value)),
                Some(Some(given)) if same_setting(option, given, &value) => {}
                Some(given) => problems.push(FieldError::new(
                    at(option),
                    format!(
                        "{option} {} disagrees with the pool's {key}: {value}; give it in one place",
                        given.as_deref().unwrap_or("(no value)")
                    ),
                )),
            }
        }
        problems.finish()?;
        Ok(options)
    }

    fn server_args(
        &self,
        _pool: &PoolConfig,
        options: &ServerArgs,
        listen: &Listen<'_>,
    ) -> Vec<String> {
        let host = listen.host.to_string();
        let port = listen.ports.first().copied().unwrap_or(DEFAULT_PORT);
        let mut args = vec![
            "--model".to_string(),
            listen.model.to_string(),
            "--host".to_string(),
            host,
            "--port".to_string(),
            port.to_string(),
        ];
        args.extend(options.to_argv());
        args
    }

    fn native(&self) -> Option<&NativeFacts> {
        Some(&NATIVE)
    }

    fn source(&self) -> Option<&SourceFacts> {
        Some(&SOURCE)
    }

    fn cmake_entries(&self, configured: &[CacheEntry]) -> Result<CmakeChoice> {
        normalise_cmake_flags(configured)
    }

    fn container(&self) -> &ContainerFacts {
        &CONTAINER
    }

    /// llama-server's options that name host paths (common/arg.cpp of release b11312 and the
    /// July 2025 tree: the options of the server whose value is `FNAME`, `FILE`, `PATH` or
    /// `JINJA_TEMPLATE_FILE`). `--lora` and `--control-vector` take comma-separated lists,
    /// their `-scaled` forms `FNAME:SCALE` items (older trees: `FNAME SCALE`).
    fn path_options(&self) -> &'static [crate::host_files::PathOption] {
        use crate::host_files::{PathOption, PathValue};
        use provisioner_core::HostInputKind::{Directory, File};
        const PATHS: &[PathOption] = &[
            PathOption::file(&["--chat-template-file"]),
            PathOption::file(&["--grammar-file"]),
            PathOption::file(&["-jf", "--json-schema-file"]),
            PathOption::file(&["-mm", "--mmproj"]),
            PathOption::read(&["--lora"], PathValue::List, File),
            PathOption::read(&["--lora-scaled"], PathValue::ScaledList, File),
            PathOption::read(&["--control-vector"], PathValue::List, File),
            PathOption::read(&["--control-vector-scaled"], PathValue::ScaledList, File),
            PathOption::file(&["--api-key-file"]),
            PathOption::file(&["--ssl-key-file"]),
            PathOption::file(&["--ssl-cert-file"]),
            PathOption::file(&["-md", "--model-draft", "--spec-draft-model"]),
            PathOption::file(&["-mv", "--model-vocoder"]),
            PathOption::file(&["--tts-speaker-file"]),
            PathOption::file(&["-lcs", "--lookup-cache-static"]),
            PathOption::file(&["--ui-config-file", "--webui-config-file"]),
            PathOption::file(&["--mcp-servers-config"]),
            PathOption::file(&["--models-preset"]),
            PathOption::read(&["--path"], PathValue::One, Directory),
            PathOption::read(&["--media-path"], PathValue::One, Directory),
            PathOption::read(&["--models-dir"], PathValue::One, Directory),
            PathOption::read(&["--video-ffmpeg-dir"], PathValue::One, Directory),
            PathOption::output(&["--log-file"]),
            PathOption::output(&["--slot-save-path"]),
            PathOption::output(&["--log-prompts-dir"]),
            PathOption::output(&["-lcd", "--lookup-cache-dynamic"]),
        ];
        PATHS
    }

    fn reported_version(&self, output: &str) -> Option<String> {
        parse_llamacpp_version(output)
    }

    fn reported_backend(&self, output: &str) -> Option<(FoundBackend, String)> {
        backend_from_output(output)
    }

    fn identity(&self, evidence: Evidence<'_>) -> Option<IdentityCheck> {
        let contains = match evidence {
            Evidence::Commit(commit) | Evidence::ImageRevision(commit) => {
                commit[..commit.len().min(9)].to_string()
            }
            // `b<build>-<commit>`: the commit part.
            Evidence::ReportedVersion(version) => version.split_once('-')?.1.to_string(),
        };
        Some(IdentityCheck {
            path: "/props".to_string(),
            json_pointer: "/build_info".to_string(),
            contains,
        })
    }

    fn api_key(&self) -> Option<&ApiKeyFacts> {
        Some(&API_KEY)
    }
}

/// llama-server's API key (common/arg.cpp of release b11312): `--api-key` takes a
/// comma-separated list and reads `LLAMA_API_KEY`; `--api-key-file` (since mid-2024) reads one
/// key a line. `/health` answers without a key, `/props` and the API do not.
const API_KEY: ApiKeyFacts = ApiKeyFacts {
    option: "--api-key",
    file_option: Some("--api-key-file"),
    variable: "LLAMA_API_KEY",
    comma_separated: true,
};

/// Whether a flag's value and a pool key's value say the same: equal, or for
/// `--tensor-split` the same proportions (`3,1` and `3.0,1.0`; llama-server also takes `/`).
fn same_setting(option: &str, given: &str, from_pool: &str) -> bool {
    if given == from_pool {
        return true;
    }
    let numbers = |text: &str| -> Option<Vec<f64>> {
        text.split([',', '/'])
            .map(|part| part.trim().parse::<f64>().ok())
            .collect()
    };
    option == "--tensor-split" && numbers(given).is_some() && numbers(given) == numbers(from_pool)
}

/// Normalises configured CMake entries: old option names mapped to their successors whatever
/// their value (a name given twice, or an old and a new name, with different values is an
/// error), defaults added, sorted. Returns the entries, the backend they select, the names
/// mapped (so the builder can pass an old name to a tree that knows only that one) and notes.
pub fn normalise_cmake_flags(configured: &[CacheEntry]) -> Result<CmakeChoice> {
    // Boolean options are spelled ON/OFF so that equivalent spellings build once; every other
    // value reaches cmake exactly as written (`GGML_SCHED_MAX_COPIES=1` is a number).
    let configured: Vec<CacheEntry> = configured
        .iter()
        .map(|entry| {
            if is_boolean_option(&entry.name) {
                entry.as_boolean_option()
            } else {
                entry.clone()
            }
        })
        .collect();
    let configured = configured.as_slice();
    let field = "provisioning.source.build.cmake_flags";
    let at = |name: &str| {
        let index = configured.iter().rposition(|e| e.name == name).unwrap_or(0);
        format!("{field}[{index}]")
    };
    for (index, entry) in configured.iter().enumerate() {
        if let Some(earlier) = configured[..index]
            .iter()
            .position(|e| e.name == entry.name && e.value != entry.value)
        {
            return Err(Error::invalid(
                format!("{field}[{index}]"),
                format!(
                    "{entry} disagrees with {} at {field}[{earlier}]; give {} once",
                    configured[earlier], entry.name
                ),
            ));
        }
    }
    let mut entries = CacheEntries::from_entries(configured);
    let mut choice = CmakeChoice::default();
    let old_names: Vec<String> = entries
        .iter()
        .filter(|e| successor(&e.name).is_some())
        .map(|e| e.name.clone())
        .collect();
    for old_name in old_names {
        let Some(new_name) = successor(&old_name) else {
            continue;
        };
        let Some(old) = entries.remove(&old_name) else {
            continue;
        };
        match entries.get(new_name) {
            Some(new) if new.value != old.value => {
                return Err(Error::invalid(
                    at(&old_name),
                    format!(
                        "-D{old_name}={} and -D{new_name}={} disagree: {old_name} is the old name of {new_name}; give it once",
                        old.value, new.value
                    ),
                ));
            }
            Some(_) => {}
            None => {
                entries.set(CacheEntry {
                    name: new_name.to_string(),
                    kind: old.kind,
                    value: old.value.clone(),
                });
            }
        }
        choice.notes.push(format!(
            "{old_name} is the old name of {new_name}: building with -D{new_name}={}",
            old.value
        ));
        choice.renamed.push(OptionRename {
            old: old_name.clone(),
            new: new_name.to_string(),
        });
    }
    if let Some((commit, number)) = SOURCE.build_info {
        for name in [commit, number] {
            if entries.get(name).is_some() {
                return Err(Error::invalid(
                    at(name),
                    format!("{name} is set by the provisioner from the resolved commit; remove it"),
                ));
            }
        }
    }
    let configured_names: Vec<&str> = configured.iter().map(|e| e.name.as_str()).collect();
    for (name, value) in DEFAULT_FLAGS {
        entries.set_default(name, value);
    }
    if !configured_names.contains(&"LLAMA_BUILD_EXAMPLES") {
        choice.tree_rules.push(TreeRule::SetWhenPresent {
            path: SERVER_IN_EXAMPLES.to_string(),
            entry: CacheEntry {
                name: "LLAMA_BUILD_EXAMPLES".to_string(),
                kind: None,
                value: "ON".to_string(),
            },
        });
    }
    choice.tree_rules.push(TreeRule::RefuseWhenContains {
        path: SERVER_IN_EXAMPLES.to_string(),
        needle: "set(TARGET server)".to_string(),
        message: "this llama.cpp tree is from before June 2024, when the server was still called `server`; build release b3184 or newer".to_string(),
    });
    for (option, url) in FETCHING_OPTIONS {
        if entries.is_on(option) {
            let url: SafeUrl = url
                .parse()
                .map_err(|e: String| Error::invalid(at(option), e))?;
            choice.notes.push(format!(
                "-D{option}=ON downloads from {} during the build; it is checked against --offline and the allowed hosts before anything is fetched",
                url.redacted()
            ));
            choice.fetches.push(BuildFetch {
                option: option.to_string(),
                url,
            });
        }
    }
    // With no download asked for, CMake's FetchContent may not download either: a dependency
    // this table does not know fails at configure instead of reaching the network.
    if choice.fetches.is_empty() {
        entries.set_default("FETCHCONTENT_FULLY_DISCONNECTED", "ON");
    }
    if entries.is_on("LLAMA_CURL") {
        choice.headers.push(HeaderRequirement {
            header: "curl/curl.h".to_string(),
            purpose: "build with -DLLAMA_CURL=ON (the libcurl development files)".to_string(),
        });
    }
    choice.backend = if entries.is_on("GGML_CUDA") {
        Backend::Cuda
    } else if entries.is_on("GGML_HIP") {
        Backend::Hip
    } else if entries.is_on("GGML_VULKAN") {
        Backend::Vulkan
    } else {
        Backend::Cpu
    };
    choice.entries = entries;
    Ok(choice)
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

/// The backend a prebuilt llama.cpp names in what it prints for `--version`, with the line
/// naming it: GPU backends announce themselves (`load_backend: loaded CUDA backend from …` when
/// loaded at run time, `ggml_cuda_init: found 1 CUDA devices` or `… found 1 ROCm devices` when
/// built in, `ggml_vulkan: Found 1 Vulkan devices`, and a device-less host still gets the
/// `ggml_cuda_init: failed to initialize CUDA` line); CPU when it prints its `version:` line and
/// no GPU backend; `None` when the output is not llama.cpp's (a wrapper script, a stand-in).
pub fn backend_from_output(output: &str) -> Option<(FoundBackend, String)> {
    provisioner_core::ggml_reported_backend(output)
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

    fn entries(flags: &[&str]) -> Vec<CacheEntry> {
        flags.iter().map(|f| f.parse().unwrap()).collect()
    }

    #[test]
    fn old_names_map_to_ggml_whatever_their_value_and_say_so() {
        let choice = normalise_cmake_flags(&entries(&[
            "-DLLAMA_CUBLAS=ON",
            "-DLLAMA_NATIVE=OFF",
            "-DLLAMA_AVX2=OFF",
            "-DLLAMA_CUDA_FORCE_MMQ=ON",
        ]))
        .unwrap();
        assert_eq!(choice.backend, Backend::Cuda);
        let flags = choice.entries.to_flags();
        for expected in [
            "-DGGML_CUDA=ON",
            "-DGGML_NATIVE=OFF",
            "-DGGML_AVX2=OFF",
            "-DGGML_CUDA_FORCE_MMQ=ON",
        ] {
            assert!(flags.contains(&expected.to_string()), "{flags:?}");
        }
        assert!(
            !flags.iter().any(|f| f.starts_with("-DLLAMA_CUBLAS")),
            "{flags:?}"
        );
        assert!(
            choice.notes.contains(
                &"LLAMA_NATIVE is the old name of GGML_NATIVE: building with -DGGML_NATIVE=OFF"
                    .to_string()
            ),
            "{:?}",
            choice.notes
        );
        assert_eq!(choice.renamed.len(), 4);
    }

    #[test]
    fn llamas_own_options_are_not_old_names() {
        for own in [
            "LLAMA_BUILD_SERVER",
            "LLAMA_CURL",
            "LLAMA_ALL_WARNINGS",
            "LLAMA_BUILD_TESTS",
        ] {
            assert_eq!(successor(own), None, "{own}");
        }
        assert_eq!(successor("LLAMA_HIPBLAS"), Some("GGML_HIP"));
        assert_eq!(successor("LLAMA_LTO"), Some("GGML_LTO"));
    }

    #[test]
    fn only_boolean_options_are_spelled_on_or_off() {
        let choice = normalise_cmake_flags(&entries(&[
            "-DGGML_SCHED_MAX_COPIES=1",
            "-DGGML_CUDA_PEER_MAX_BATCH_SIZE:STRING=0",
            "-DGGML_NATIVE=0",
            "-DLLAMA_CURL=yes",
            "-DLLAMA_CUDA=1",
        ]))
        .unwrap();
        let flags = choice.entries.to_flags();
        for expected in [
            "-DGGML_SCHED_MAX_COPIES=1",
            "-DGGML_CUDA_PEER_MAX_BATCH_SIZE:STRING=0",
            "-DGGML_NATIVE=OFF",
            "-DLLAMA_CURL=ON",
            "-DGGML_CUDA=ON",
        ] {
            assert!(
                flags.contains(&expected.to_string()),
                "{expected}: {flags:?}"
            );
        }
        // Two spellings of one truth value agree.
        assert!(normalise_cmake_flags(&entries(&["-DGGML_NATIVE=0", "-DGGML_NATIVE=off"])).is_ok());
        assert!(
            normalise_cmake_flags(&entries(&[
                "-DGGML_SCHED_MAX_COPIES=1",
                "-DGGML_SCHED_MAX_COPIES=2"
            ]))
            .is_err()
        );
    }

    #[test]
    fn options_that_download_are_off_unless_asked_and_then_checked() {
        let choice = normalise_cmake_flags(&entries(&["-DGGML_NATIVE=OFF"])).unwrap();
        for off in [
            "LLAMA_CURL",
            "LLAMA_USE_PREBUILT_UI",
            "LLAMA_USE_PREBUILT_WEBUI",
            "LLAMA_BUILD_UI",
            "LLAMA_LLGUIDANCE",
        ] {
            assert_eq!(
                choice.entries.get(off).map(|e| e.value.as_str()),
                Some("OFF"),
                "{off}"
            );
        }
        assert!(choice.fetches.is_empty() && choice.headers.is_empty());
        // The examples switch follows the tree unless the configuration sets it.
        assert!(choice.tree_rules.iter().any(|rule| matches!(
            rule,
            TreeRule::SetWhenPresent { entry, .. } if entry.name == "LLAMA_BUILD_EXAMPLES"
        )));

        let choice = normalise_cmake_flags(&entries(&[
            "-DLLAMA_LLGUIDANCE=ON",
            "-DLLAMA_CURL=ON",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
        ]))
        .unwrap();
        assert_eq!(
            choice
                .fetches
                .iter()
                .map(|f| (f.option.as_str(), f.url.to_string()))
                .collect::<Vec<_>>(),
            [(
                "LLAMA_LLGUIDANCE",
                "https://github.com/guidance-ai/llguidance".to_string()
            )]
        );
        assert!(
            choice.notes.iter().any(|n| n.contains(
                "-DLLAMA_LLGUIDANCE=ON downloads from https://github.com/guidance-ai/llguidance"
            )),
            "{:?}",
            choice.notes
        );
        assert_eq!(choice.headers.len(), 1);
        assert_eq!(choice.headers[0].header, "curl/curl.h");
        assert!(!choice.tree_rules.iter().any(|rule| matches!(
            rule,
            TreeRule::SetWhenPresent { entry, .. } if entry.name == "LLAMA_BUILD_EXAMPLES"
        )));
    }

    #[test]
    fn an_old_and_a_new_name_that_disagree_is_an_error() {
        let error = normalise_cmake_flags(&entries(&["-DGGML_NATIVE=ON", "-DLLAMA_NATIVE=OFF"]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("provisioning.source.build.cmake_flags[1]: -DLLAMA_NATIVE=OFF and -DGGML_NATIVE=ON disagree"),
            "{error}"
        );
        assert!(
            normalise_cmake_flags(&entries(&["-DGGML_NATIVE=OFF", "-DLLAMA_NATIVE=0"])).is_ok()
        );
    }
}
