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
/// of mode 0600; a container runtime reads the same file through `--env-file`. A secret an
/// engine takes as an option (llama-server's `--api-key`) is in a key file of mode 0600 that
/// `args` names (`--api-key-file <path>`), or in `env_file` for a container; the probes find it
/// through [`Probe::auth`].
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
    /// Compute backend found in what was installed ([`FoundBackend`]: its ggml libraries,
    /// what its `--version` printed, or what its recipe or build states), never a guess from
    /// the configuration; `unknown` when nothing shows it; `None` for an external engine.
    pub backend: Option<FoundBackend>,
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
    /// What prepare went ahead with although it is not what the pool asked for (a GPU asked
    /// for and none found, with `provisioning.allow_cpu_fallback: true`). Empty when nothing.
    #[serde(default)]
    pub warnings: Vec<String>,
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
    /// Where the key of the engine's own API is, when it has one: every probe of this engine
    /// (readiness, identity, status) then sends `Authorization: Bearer <key>`. A path, never
    /// the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ProbeAuth>,
}

/// Where a probe finds the key it authenticates with: a file of mode 0600 that `prepare` wrote
/// (or the pool names), read by the supervisor when it probes. Never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProbeAuth {
    /// A key file, one key a line (llama-server's `--api-key-file`): its first key (blank lines
    /// and lines starting with `#` skipped).
    KeyFile {
        /// The file.
        path: PathBuf,
    },
    /// A variable of an env file (`NAME=value` lines, the pool's `env_file`).
    EnvFile {
        /// The file.
        path: PathBuf,
        /// The variable (`LLAMA_API_KEY`).
        variable: String,
        /// Whether the value lists several keys separated by commas (CSV, `"` quoting), of
        /// which the first is used.
        comma_separated: bool,
    },
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

// ---------------------------------------------------------------------------------------------
// Backends: what a pool asks for and what was found

/// A compute backend as found in what was installed (its ggml libraries, what its server
/// printed for its version arguments, what its recipe or its checked build states), never a
/// guess from the configuration. Unlike [`Backend`], what a configuration may ask for, it has
/// a value for "nothing shows it", and names the GPU backends llama.cpp ships images and
/// libraries for beyond the configuration's vocabulary (MUSA, SYCL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FoundBackend {
    /// CPU only: what was installed shows ggml's backends and none of them is a GPU one.
    Cpu,
    /// NVIDIA CUDA.
    Cuda,
    /// AMD HIP/ROCm.
    Hip,
    /// Moore Threads MUSA.
    Musa,
    /// Intel SYCL (oneAPI).
    Sycl,
    /// Vulkan.
    Vulkan,
    /// Nothing shows the backend (a server that does not answer the version probe, an image
    /// whose layers cannot be read).
    Unknown,
}

impl FoundBackend {
    /// Every GPU backend, in the order one is recorded when several show.
    pub const GPUS: [FoundBackend; 5] = [
        FoundBackend::Cuda,
        FoundBackend::Hip,
        FoundBackend::Musa,
        FoundBackend::Sycl,
        FoundBackend::Vulkan,
    ];

    /// The lower-case name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            FoundBackend::Cpu => "cpu",
            FoundBackend::Cuda => "cuda",
            FoundBackend::Hip => "hip",
            FoundBackend::Musa => "musa",
            FoundBackend::Sycl => "sycl",
            FoundBackend::Vulkan => "vulkan",
            FoundBackend::Unknown => "unknown",
        }
    }

    /// Whether this is a GPU backend.
    pub fn is_gpu(self) -> bool {
        Self::GPUS.contains(&self)
    }

    /// The backend a ggml backend's name stands for (`CUDA`, `ROCm`, `hip`, `Vulkan`, …, as
    /// in library names and llama.cpp's `load_backend:` lines), when it is one of these.
    fn named(name: &str) -> Option<FoundBackend> {
        let name = name.to_ascii_lowercase();
        let name = name.trim_end_matches(|c: char| c.is_ascii_digit());
        Some(match name {
            "cpu" => FoundBackend::Cpu,
            "cuda" => FoundBackend::Cuda,
            "hip" | "rocm" => FoundBackend::Hip,
            "musa" => FoundBackend::Musa,
            "sycl" => FoundBackend::Sycl,
            "vulkan" => FoundBackend::Vulkan,
            _ => return None,
        })
    }
}

impl std::fmt::Display for FoundBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Backend> for FoundBackend {
    fn from(backend: Backend) -> FoundBackend {
        match backend {
            Backend::Cpu => FoundBackend::Cpu,
            Backend::Cuda => FoundBackend::Cuda,
            Backend::Hip => FoundBackend::Hip,
            Backend::Vulkan => FoundBackend::Vulkan,
        }
    }
}

/// What a file says of ggml's backends, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GgmlLibrary {
    /// A backend's own library: `libggml-cuda.so`, `libggml-cpu-haswell.so`.
    Backend(FoundBackend),
    /// `libggml-base.so`: the layout (since late 2024) in which every backend is a library of
    /// its own, so that the absence of a GPU backend's library means there is none.
    Base,
}

/// What the file `name` is among ggml's shared libraries (`.so`, `.so.N`), if anything.
fn ggml_library(name: &str) -> Option<GgmlLibrary> {
    let rest = name.strip_prefix("libggml-")?;
    let (stem, suffix) = rest.split_once('.')?;
    if !(suffix == "so" || suffix.starts_with("so.")) {
        return None;
    }
    let head = stem.split('-').next().unwrap_or(stem);
    if head == "base" {
        return Some(GgmlLibrary::Base);
    }
    FoundBackend::named(head).map(GgmlLibrary::Backend)
}

/// The ggml backend a line of llama.cpp's output names: `load_backend: loaded CUDA backend
/// from …` (backends loaded at run time), `ggml_cuda_init: found 1 CUDA devices` (also ROCm and
/// MUSA builds, which share that code), `ggml_vulkan: Found 1 Vulkan devices`, and the like.
/// Only GPU backends; `None` for any other line.
fn ggml_backend_in_line(line: &str) -> Option<FoundBackend> {
    let lower = line.trim().to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("load_backend: loaded ") {
        return rest
            .split_whitespace()
            .next()
            .and_then(FoundBackend::named)
            .filter(|backend| backend.is_gpu());
    }
    let device_kind = |word: &str| {
        lower.contains(&format!(" {word} devices")) || lower.contains(&format!(" {word} device"))
    };
    if lower.starts_with("ggml_cuda_init:") || lower.starts_with("ggml_hip") {
        return Some(if lower.contains("rocm") || lower.contains("hip") {
            FoundBackend::Hip
        } else if lower.contains("musa") {
            FoundBackend::Musa
        } else {
            FoundBackend::Cuda
        });
    }
    if lower.starts_with("ggml_vulkan:") || device_kind("vulkan") {
        return Some(FoundBackend::Vulkan);
    }
    if lower.starts_with("ggml_sycl") || device_kind("sycl") {
        return Some(FoundBackend::Sycl);
    }
    if device_kind("rocm") {
        return Some(FoundBackend::Hip);
    }
    if device_kind("musa") {
        return Some(FoundBackend::Musa);
    }
    if device_kind("cuda") {
        return Some(FoundBackend::Cuda);
    }
    None
}

/// The backend llama.cpp's server names in what it printed for `--version`, with the line that
/// names it: a GPU backend that announced itself (loaded, initialised, or failing to find a
/// device, which still shows it was built in), else CPU when the output has llama.cpp's
/// `version:` line, else `None` (the output is not llama.cpp's: a wrapper script, a stand-in).
pub fn ggml_reported_backend(output: &str) -> Option<(FoundBackend, String)> {
    let mut version_line = None;
    for line in output.lines() {
        if let Some(backend) = ggml_backend_in_line(line) {
            return Some((backend, line.trim().to_string()));
        }
        if version_line.is_none() && line.trim().starts_with("version:") {
            version_line = Some(line.trim().to_string());
        }
    }
    version_line.map(|line| (FoundBackend::Cpu, line))
}

/// Options a server gets only when the installed build lists them in its help: the help is
/// run once at install (never at launch), the options found are recorded next to the artefact,
/// and a server that cannot answer simply does not get them. llama.cpp's `--offline` is one
/// (added to common/arg.cpp in 2025; older servers refuse unknown options).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagProbe {
    /// Arguments that print the help and exit (`["--help"]`).
    pub args: Vec<String>,
    /// The options looked for (`["--offline"]`).
    pub flags: Vec<String>,
}

impl FlagProbe {
    /// The options of [`FlagProbe::flags`] that `help` lists as options of their own: preceded
    /// by the start of a line, a space or a comma, and followed by the end of the line, a space,
    /// a comma or `=` (so `--offline` is not found in `--offline-mode` or in prose such as
    /// `the-offline`).
    pub fn listed(&self, help: &str) -> Vec<String> {
        self.flags
            .iter()
            .filter(|flag| {
                help.lines().any(|line| {
                    line.match_indices(flag.as_str()).any(|(at, _)| {
                        let before = line[..at].chars().next_back();
                        let after = line[at + flag.len()..].chars().next();
                        matches!(before, None | Some(' ' | ',' | '\t'))
                            && matches!(after, None | Some(' ' | ',' | '=' | '\t'))
                    })
                })
            })
            .cloned()
            .collect()
    }
}

/// What a server printed for its version arguments, as evidence of its backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionProbe {
    /// The command, for messages (`llama-server --version`).
    pub command: String,
    /// The backend its output names and the line naming it (CPU with its version line when it
    /// names none); `None` when the output says nothing recognisable.
    pub reported: Option<(FoundBackend, String)>,
    /// The first line it printed, for messages; `None` when it printed nothing.
    pub first_line: Option<String>,
}

impl VersionProbe {
    /// A probe of `command` whose output was `output`, read by `read` (a recipe's
    /// `reported_backend`).
    pub fn new(
        command: impl Into<String>,
        output: Option<&str>,
        read: impl Fn(&str) -> Option<(FoundBackend, String)>,
    ) -> VersionProbe {
        let output = output.unwrap_or("");
        VersionProbe {
            command: command.into(),
            reported: read(output),
            first_line: output
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .map(|line| line.chars().take(120).collect()),
        }
    }

    fn describe(&self) -> String {
        match (&self.reported, &self.first_line) {
            (Some((backend, line)), _) if backend.is_gpu() => {
                format!("`{}` printed `{line}`", self.command)
            }
            (Some((_, line)), _) => {
                format!("`{}` names no GPU backend (`{line}`)", self.command)
            }
            (None, Some(line)) => format!(
                "`{}` printed nothing that names a backend (`{line}`)",
                self.command
            ),
            (None, None) => format!("`{}` printed nothing", self.command),
        }
    }
}

/// The backend found in what was installed, and how it was found (for messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendFinding {
    /// What is recorded: the first GPU backend shown, else `cpu` when ggml's libraries or the
    /// server's version output show that there is none, else `unknown`.
    pub backend: FoundBackend,
    /// Every GPU backend shown (an archive may ship several).
    pub gpus: Vec<FoundBackend>,
    /// How it was found: which files, which output, or who states it.
    pub how: String,
}

impl BackendFinding {
    /// A backend stated rather than looked up: a recipe's fact (vLLM images are CUDA builds),
    /// a source build whose backend was checked after the build.
    pub fn stated(backend: FoundBackend, how: impl Into<String>) -> BackendFinding {
        BackendFinding {
            backend,
            gpus: if backend.is_gpu() {
                vec![backend]
            } else {
                Vec::new()
            },
            how: how.into(),
        }
    }

    /// Nothing shows the backend.
    pub fn unknown(how: impl Into<String>) -> BackendFinding {
        BackendFinding::stated(FoundBackend::Unknown, how)
    }

    /// The backend shown by the ggml libraries among `files` (paths or file names; the others
    /// are ignored) of `place` (`the archive's files`), and by the server's version output
    /// when it was run. A GPU backend's library (`libggml-cuda.so…`) shows it; ggml's base
    /// library or a CPU backend's library without any GPU one shows CPU (every backend is a
    /// library of its own there); otherwise the version output decides, and when it says
    /// nothing recognisable the backend is `unknown`.
    pub fn from_evidence(
        files: &[std::path::PathBuf],
        place: &str,
        version: Option<&VersionProbe>,
    ) -> BackendFinding {
        let mut gpus: Vec<FoundBackend> = Vec::new();
        let mut gpu_files: Vec<String> = Vec::new();
        let mut ggml_files: Vec<String> = Vec::new();
        for file in files {
            let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            match ggml_library(name) {
                Some(GgmlLibrary::Backend(backend)) if backend.is_gpu() => {
                    if !gpus.contains(&backend) {
                        gpus.push(backend);
                    }
                    gpu_files.push(name.to_string());
                }
                Some(_) => ggml_files.push(name.to_string()),
                None => {}
            }
        }
        gpu_files.sort();
        gpu_files.dedup();
        ggml_files.sort();
        ggml_files.dedup();
        if !gpus.is_empty() {
            gpus.sort();
            return BackendFinding {
                backend: gpus[0],
                gpus,
                how: format!("{} among {place}", gpu_files.join(", ")),
            };
        }
        let libraries = if ggml_files.is_empty() {
            format!("no ggml backend library among {place}")
        } else {
            format!(
                "no GPU backend among the ggml libraries of {place} ({})",
                list(&ggml_files, 6)
            )
        };
        let (reported, how) = match version {
            Some(probe) => (
                probe.reported.as_ref().map(|(backend, _)| *backend),
                format!("{libraries}, and {}", probe.describe()),
            ),
            None => (None, libraries),
        };
        let backend = match reported {
            Some(backend) if backend.is_gpu() => {
                return BackendFinding {
                    backend,
                    gpus: vec![backend],
                    how,
                };
            }
            Some(_) => FoundBackend::Cpu,
            None if !ggml_files.is_empty() => FoundBackend::Cpu,
            None => FoundBackend::Unknown,
        };
        BackendFinding {
            backend,
            gpus: Vec::new(),
            how,
        }
    }

    /// Whether it shows `backend`.
    pub fn shows(&self, backend: FoundBackend) -> bool {
        self.gpus.contains(&backend)
    }
}

/// At most `shown` items, then how many more.
fn list(items: &[String], shown: usize) -> String {
    let mut text = items
        .iter()
        .take(shown)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > shown {
        text.push_str(&format!(" and {} more", items.len() - shown));
    }
    text
}

/// What a pool asks of the backend: a GPU, and where it says so. A pool asks for a GPU when it
/// names a GPU backend (a CMake flag, `package.backend`, a GPU image) or asks the server to
/// offload layers (`--n-gpu-layers` above 0); `devices` alone only sets the device mask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuAsk {
    /// The GPU backend named; `None` when any GPU backend will do (offload asked for without
    /// naming a backend).
    pub backend: Option<FoundBackend>,
    /// Where the pool asks, each with its configuration path (`provisioning.flags[1]: -ngl
    /// 99`) or the fact it comes from.
    pub by: Vec<String>,
}

impl GpuAsk {
    /// Asks for `backend` by name.
    pub fn named(backend: FoundBackend, by: impl Into<String>) -> GpuAsk {
        GpuAsk {
            backend: backend.is_gpu().then_some(backend),
            by: vec![by.into()],
        }
    }

    /// Asks for any GPU backend.
    pub fn any(by: impl Into<String>) -> GpuAsk {
        GpuAsk {
            backend: None,
            by: vec![by.into()],
        }
    }

    /// Both asks as one: the first backend named, every place that asks.
    pub fn merge(first: Option<GpuAsk>, second: Option<GpuAsk>) -> Option<GpuAsk> {
        match (first, second) {
            (Some(mut first), Some(second)) => {
                first.backend = first.backend.or(second.backend);
                for by in second.by {
                    if !first.by.contains(&by) {
                        first.by.push(by);
                    }
                }
                Some(first)
            }
            (first, second) => first.or(second),
        }
    }

    /// Whether `found` shows what is asked.
    pub fn met_by(&self, found: &BackendFinding) -> bool {
        match self.backend {
            Some(backend) => found.shows(backend),
            None => !found.gpus.is_empty(),
        }
    }

    fn wanted(&self) -> String {
        match self.backend {
            Some(backend) => format!("the {backend} backend"),
            None => "a GPU backend".to_string(),
        }
    }
}

/// What to do about what was found, given what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendVerdict {
    /// What was found is what was asked (or nothing was asked).
    Met,
    /// Not what was asked, but `provisioning.allow_cpu_fallback` lets it run: the warning to
    /// record and show.
    Fallback(String),
    /// Not what was asked: the error message (what was asked and where, what was found and
    /// how). The caller adds its own fix and [`FALLBACK_HINT`].
    Refused(String),
}

/// The end of every hint of a refused backend.
pub const FALLBACK_HINT: &str =
    "or set provisioning.allow_cpu_fallback: true to run it as it is (with a warning)";

/// Judges what was found in `what` (`the prebuilt server`, `the image …`) against what the pool
/// asks. Pure: the same inputs give the same verdict in every mode.
pub fn judge_backend(
    ask: Option<&GpuAsk>,
    found: &BackendFinding,
    what: &str,
    allow_cpu_fallback: bool,
) -> BackendVerdict {
    let Some(ask) = ask.filter(|ask| !ask.met_by(found)) else {
        return BackendVerdict::Met;
    };
    let shows = match ask.backend {
        Some(backend) => format!("shows no {backend} backend"),
        None => "shows no GPU backend".to_string(),
    };
    let consequence = match found.backend {
        FoundBackend::Cpu => "it would run on the CPU".to_string(),
        FoundBackend::Unknown => "nothing shows that it can use a GPU".to_string(),
        other => format!("it would use {other} instead"),
    };
    let said = format!(
        "the pool asks for {} ({}), but {what} {shows}: found {} ({}); {consequence}",
        ask.wanted(),
        ask.by.join("; "),
        found.backend,
        found.how,
    );
    if allow_cpu_fallback {
        BackendVerdict::Fallback(format!(
            "{said}; going ahead because provisioning.allow_cpu_fallback is true"
        ))
    } else {
        BackendVerdict::Refused(said)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn found_backends_serialise_as_lower_case_words() {
        assert_eq!(
            serde_json::to_string(&[FoundBackend::Cpu, FoundBackend::Unknown]).unwrap(),
            r#"["cpu","unknown"]"#
        );
        assert_eq!(FoundBackend::from(Backend::Hip), FoundBackend::Hip);
        assert!(!FoundBackend::Unknown.is_gpu() && FoundBackend::Sycl.is_gpu());
    }

    #[test]
    fn llama_cpp_output_names_its_backend() {
        let cases = [
            (
                "load_backend: loaded CUDA backend from /app/libggml-cuda.so\nversion: 1 (a)",
                Some(FoundBackend::Cuda),
            ),
            (
                "ggml_cuda_init: found 1 ROCm devices:\nversion: 1 (a)",
                Some(FoundBackend::Hip),
            ),
            (
                "ggml_cuda_init: failed to initialize CUDA: no CUDA-capable device is detected",
                Some(FoundBackend::Cuda),
            ),
            (
                "ggml_vulkan: Found 1 Vulkan devices:\nversion: 1 (a)",
                Some(FoundBackend::Vulkan),
            ),
            ("found 2 MUSA devices", Some(FoundBackend::Musa)),
            (
                "load_backend: loaded CPU backend from /opt/cuda-x/libggml-cpu.so\nversion: 6000 (abc)",
                Some(FoundBackend::Cpu),
            ),
            ("fake-engine (a stand-in server for tests)", None),
            ("", None),
        ];
        for (output, expected) in cases {
            assert_eq!(
                ggml_reported_backend(output).map(|(backend, _)| backend),
                expected,
                "{output}"
            );
        }
    }

    fn files(names: &[&str]) -> Vec<PathBuf> {
        names
            .iter()
            .map(|n| PathBuf::from("/x/lib").join(n))
            .collect()
    }

    #[test]
    fn a_probed_flag_counts_only_as_an_option_of_its_own() {
        let probe = FlagProbe {
            args: vec!["--help".into()],
            flags: vec!["--offline".into(), "--jinja".into()],
        };
        let help = "-h,    --help, --usage                  print usage and exit\n--offline                               Offline mode: forces use of cache, prevents network access\n--no-jinja-x  nothing";
        assert_eq!(probe.listed(help), vec!["--offline".to_string()]);
        assert!(
            probe
                .listed("--offline-mode  x\nrun the--offline thing")
                .is_empty()
        );
        assert_eq!(
            probe.listed("-o, --offline=yes"),
            vec!["--offline".to_string()]
        );
        assert!(probe.listed("").is_empty());
    }

    #[test]
    fn libraries_decide_before_the_version_output() {
        let cuda = BackendFinding::from_evidence(
            &files(&["libggml-base.so", "libggml-cuda.so.0", "libggml-vulkan.so"]),
            "the archive's files",
            None,
        );
        assert_eq!(cuda.backend, FoundBackend::Cuda);
        assert_eq!(cuda.gpus, [FoundBackend::Cuda, FoundBackend::Vulkan]);
        assert_eq!(
            cuda.how,
            "libggml-cuda.so.0, libggml-vulkan.so among the archive's files"
        );

        // ggml's base library: every backend is a library, and none is a GPU one.
        let cpu = BackendFinding::from_evidence(
            &files(&["libggml-base.so", "libllama.so"]),
            "the archive's files",
            None,
        );
        assert_eq!(cpu.backend, FoundBackend::Cpu);

        // A static build: the output decides; no output it understands → unknown.
        let probe =
            |output: &str| VersionProbe::new("s --version", Some(output), ggml_reported_backend);
        let stat = BackendFinding::from_evidence(
            &[],
            "the archive's files",
            Some(&probe(
                "ggml_cuda_init: found 1 CUDA devices:\nversion: 1 (a)",
            )),
        );
        assert_eq!(stat.backend, FoundBackend::Cuda);
        assert!(
            stat.how.contains("`s --version` printed `ggml_cuda_init"),
            "{}",
            stat.how
        );
        let unknown =
            BackendFinding::from_evidence(&[], "the archive's files", Some(&probe("hello")));
        assert_eq!(unknown.backend, FoundBackend::Unknown);
        assert_eq!(
            unknown.how,
            "no ggml backend library among the archive's files, and `s --version` printed nothing that names a backend (`hello`)"
        );
        // Libraries that are not ggml's, or not shared objects, say nothing.
        let nothing = BackendFinding::from_evidence(
            &files(&["libggml-cuda.a", "libcudart.so.12", "libggml.so"]),
            "the archive's files",
            None,
        );
        assert_eq!(nothing.backend, FoundBackend::Unknown);
    }

    #[test]
    fn asks_merge_and_are_judged() {
        let offload = GpuAsk::any("provisioning.flags[1]: -ngl 99");
        let named = GpuAsk::named(FoundBackend::Cuda, "provisioning.package.backend: cuda");
        let both = GpuAsk::merge(Some(named.clone()), Some(offload.clone())).unwrap();
        assert_eq!(both.backend, Some(FoundBackend::Cuda));
        assert_eq!(both.by.len(), 2);
        assert_eq!(
            GpuAsk::merge(None, Some(offload.clone())),
            Some(offload.clone())
        );

        let cpu = BackendFinding::stated(FoundBackend::Cpu, "no GPU library");
        let vulkan = BackendFinding::stated(FoundBackend::Vulkan, "libggml-vulkan.so");
        assert_eq!(judge_backend(None, &cpu, "it", false), BackendVerdict::Met);
        assert_eq!(
            judge_backend(Some(&offload), &vulkan, "it", false),
            BackendVerdict::Met
        );
        let BackendVerdict::Refused(message) =
            judge_backend(Some(&both), &vulkan, "the image x", false)
        else {
            panic!("vulkan met a cuda ask");
        };
        assert_eq!(
            message,
            "the pool asks for the cuda backend (provisioning.package.backend: cuda; provisioning.flags[1]: -ngl 99), but the image x shows no cuda backend: found vulkan (libggml-vulkan.so); it would use vulkan instead"
        );
        let BackendVerdict::Fallback(warning) = judge_backend(Some(&offload), &cpu, "it", true)
        else {
            panic!("no fallback");
        };
        assert!(
            warning.ends_with("it would run on the CPU; going ahead because provisioning.allow_cpu_fallback is true"),
            "{warning}"
        );
    }
}
