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
    Backend, CacheEntries, CacheEntry, Engine, Error, IdentityCheck, Mode, PoolConfig, Result,
};

use crate::args::{ServerArgs, parse_options};
use crate::common::{
    ContainerFacts, Evidence, Listen, NativeFacts, Recipe, SharedMemory, SourceFacts,
};

/// Default HTTP port of llama-server.
const DEFAULT_PORT: u16 = 8080;

/// Canonical spellings of llama-server options that have several (common/arg.cpp).
const ALIASES: &[(&str, &str)] = &[
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
];

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

/// The llama.cpp recipe.
pub struct LlamaCpp;

const NATIVE: NativeFacts = NativeFacts {
    executable: "llama-server",
    default_port: DEFAULT_PORT,
    readiness_path: "/health",
    ready_timeout_seconds: 120,
    version_args: &["--version"],
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
        let flags = &pool.provisioning.flags;
        let field = "provisioning.flags";
        let mut options = parse_options(flags, ALIASES, field)?;
        let at = |option: &str| {
            let index = ServerArgs::position_in(flags, ALIASES, option).unwrap_or(0);
            format!("{field}[{index}]")
        };
        if options.get("--model").is_some() {
            return Err(Error::invalid(
                at("--model"),
                "the model is set by the provisioner; use provisioning.model.ref",
            ));
        }
        let port = pool
            .provisioning
            .ports
            .first()
            .copied()
            .unwrap_or(DEFAULT_PORT);
        if let Some(Some(value)) = options.remove("--port")
            && value != port.to_string()
        {
            return Err(Error::invalid(
                at("--port"),
                format!(
                    "--port {value} disagrees with provisioning.ports[0] = {port}; set the port only in ports"
                ),
            ));
        }
        if let Some(ctx) = pool.ctx
            && options.get("--ctx-size").is_none()
        {
            options.set("--ctx-size", Some(ctx.to_string()));
        }
        if let Some(split) = &pool.tensor_split
            && options.get("--tensor-split").is_none()
        {
            let text: Vec<String> = split.iter().map(|v| v.to_string()).collect();
            options.set("--tensor-split", Some(text.join(",")));
        }
        Ok(options)
    }

    fn server_args(
        &self,
        _pool: &PoolConfig,
        options: &ServerArgs,
        listen: &Listen<'_>,
    ) -> Vec<String> {
        let mut options = options.clone();
        let host = match options.remove("--host") {
            Some(Some(host)) if listen.host == "127.0.0.1" => host,
            _ => listen.host.to_string(),
        };
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

    fn cmake_entries(
        &self,
        configured: &[CacheEntry],
    ) -> Result<(CacheEntries, Backend, Vec<String>)> {
        normalise_cmake_flags(configured)
    }

    fn container(&self) -> &ContainerFacts {
        &CONTAINER
    }

    fn reported_version(&self, output: &str) -> Option<String> {
        parse_llamacpp_version(output)
    }

    fn reported_backend(&self, output: &str) -> Backend {
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
}

/// Normalises configured CMake entries: legacy names mapped to ggml's, duplicates resolved (last
/// wins), defaults added, sorted. Returns the entries, the backend they select and notes on what
/// was mapped.
pub fn normalise_cmake_flags(
    configured: &[CacheEntry],
) -> Result<(CacheEntries, Backend, Vec<String>)> {
    let field = "provisioning.source.build.cmake_flags";
    let mut entries = CacheEntries::from_entries(configured);
    let mut notes = Vec::new();
    for (legacy, current) in LEGACY_FLAGS {
        if let Some(old) = entries.remove(legacy) {
            // The legacy switch is honoured, not dropped: `-DLLAMA_CUBLAS=ON` means CUDA.
            if entries.get(current).is_none() {
                notes.push(format!(
                    "{legacy} is an old name of {current}; building with -D{current}={}",
                    old.value
                ));
                entries.set(CacheEntry {
                    name: current.to_string(),
                    kind: old.kind,
                    value: old.value,
                });
            }
        }
    }
    if let Some((commit, number)) = SOURCE.build_info {
        for name in [commit, number] {
            if entries.get(name).is_some() {
                return Err(Error::invalid(
                    field,
                    format!("{name} is set by the provisioner from the resolved commit; remove it"),
                ));
            }
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
    Ok((entries, backend, notes))
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
    fn legacy_switches_map_to_ggml_and_say_so() {
        let entries: Vec<CacheEntry> = ["-DLLAMA_CUBLAS=ON", "-DGGML_NATIVE=off"]
            .iter()
            .map(|f| f.parse().unwrap())
            .collect();
        let (entries, backend, notes) = normalise_cmake_flags(&entries).unwrap();
        assert_eq!(backend, Backend::Cuda);
        assert!(entries.is_on("GGML_CUDA"));
        assert!(entries.get("LLAMA_CUBLAS").is_none());
        assert_eq!(
            notes,
            vec!["LLAMA_CUBLAS is an old name of GGML_CUDA; building with -DGGML_CUDA=ON"]
        );
    }
}
