//! llama-orch's pool configuration (YAML or TOML), parsed and validated without I/O.
//!
//! Unknown fields inside a pool are rejected rather than dropped, because a misspelt key such as
//! `cmake_flag` would otherwise silently change what gets built. Unknown top-level sections are kept
//! aside and reported: the same file may configure other llama-orch components.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, FieldError, Result};

/// Default repository of the llama.cpp engine for source mode.
pub const LLAMACPP_UPSTREAM_REPO: &str = "https://github.com/ggml-org/llama.cpp.git";

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Config {
    /// Engine pools, each prepared independently.
    pub pools: Vec<PoolConfig>,
    /// Sections this component does not read (for other llama-orch components); reported, never used.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub other_sections: BTreeMap<String, serde_json::Value>,
}

/// One pool of identical engine replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Pool id: letters, digits, `.`, `_` and `-` (it names files and containers).
    pub id: String,
    /// Which inference engine serves this pool.
    pub engine: Engine,
    /// Model name; with no `provisioning.model.ref` it is looked up in the model cache.
    #[serde(default)]
    pub model: Option<String>,
    /// GPU device indices (or MIG ids) this pool may use.
    #[serde(default)]
    pub devices: Vec<DeviceId>,
    /// Quantisation label (informational for the provisioner).
    #[serde(default)]
    pub quant: Option<String>,
    /// Context length; passed to engines that take it.
    #[serde(default)]
    pub ctx: Option<u32>,
    /// Tensor split across devices.
    #[serde(default)]
    pub tensor_split: Option<Vec<f64>>,
    /// Whether pool-managerd should start the pool eagerly.
    #[serde(default)]
    pub preload: Option<bool>,
    /// Whether all replicas must report the same engine_version.
    #[serde(default)]
    pub require_same_engine_version: Option<bool>,
    /// Sampler profile version (llama-orch determinism contract).
    #[serde(default)]
    pub sampler_profile_version: Option<String>,
    /// Queue settings, owned by orchestratord.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub queue: Option<serde_json::Value>,
    /// Admission settings, owned by orchestratord.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub admission: Option<serde_json::Value>,
    /// Timeouts, owned by pool-managerd.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub timeouts: Option<serde_json::Value>,
    /// How the engine gets onto the host.
    pub provisioning: Provisioning,
}

/// A device as written in the config: an index (`0`) or an id such as a MIG UUID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DeviceId {
    /// GPU index.
    Index(u32),
    /// Device id string (e.g. `MIG-…` or `GPU-…`).
    Id(String),
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceId::Index(i) => write!(f, "{i}"),
            DeviceId::Id(s) => f.write_str(s),
        }
    }
}

/// Supported inference engines.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// ggml-org/llama.cpp `llama-server`.
    Llamacpp,
    /// vLLM OpenAI-compatible server.
    Vllm,
    /// Hugging Face Text Generation Inference.
    Tgi,
    /// NVIDIA Triton Inference Server (TensorRT-LLM backend).
    Triton,
}

impl Engine {
    /// Every engine, in a fixed order.
    pub const ALL: [Engine; 4] = [Engine::Llamacpp, Engine::Vllm, Engine::Tgi, Engine::Triton];

    /// The name used in configs, cache paths and versions.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Llamacpp => "llamacpp",
            Engine::Vllm => "vllm",
            Engine::Tgi => "tgi",
            Engine::Triton => "triton",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Provisioning modes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The engine is managed outside llama-orch.
    External,
    /// git clone + CMake build.
    Source,
    /// OCI image run by podman or docker.
    Container,
    /// Distribution package.
    Package,
    /// Prebuilt archive from a pinned URL.
    Binary,
}

impl Mode {
    /// Every mode, in a fixed order.
    pub const ALL: [Mode; 5] = [
        Mode::External,
        Mode::Source,
        Mode::Container,
        Mode::Package,
        Mode::Binary,
    ];

    /// The name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::External => "external",
            Mode::Source => "source",
            Mode::Container => "container",
            Mode::Package => "package",
            Mode::Binary => "binary",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `provisioning` block of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provisioning {
    /// Provisioning mode.
    pub mode: Mode,
    /// Allow installing distribution packages (tools or the engine). Default: false.
    #[serde(default)]
    pub allow_package_installs: bool,
    /// Allow downloading prebuilt binaries. Unset: allowed for checksum-pinned artefacts only.
    #[serde(default)]
    pub allow_binary_downloads: Option<bool>,
    /// Source mode settings.
    #[serde(default)]
    pub source: Option<SourceConfig>,
    /// Container mode settings.
    #[serde(default)]
    pub container: Option<ContainerConfig>,
    /// Package mode settings.
    #[serde(default)]
    pub package: Option<PackageConfig>,
    /// Binary mode settings.
    #[serde(default)]
    pub binary: Option<BinaryConfig>,
    /// Where the model comes from.
    #[serde(default)]
    pub model: Option<ModelConfig>,
    /// Ports the engine listens on; the first is the HTTP API.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Extra environment for the engine process (the host environment is not passed through).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra engine command-line flags.
    #[serde(default)]
    pub flags: Vec<String>,
}

/// `provisioning.source`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Git repository URL (https, ssh or file). Default for llama.cpp: upstream.
    #[serde(default)]
    pub repo: Option<String>,
    /// Tag, branch or commit (full or abbreviated SHA).
    #[serde(rename = "ref", default)]
    pub reference: Option<String>,
    /// Check out submodules recursively.
    #[serde(default)]
    pub submodules: bool,
    /// Build settings.
    #[serde(default)]
    pub build: BuildConfig,
}

/// `provisioning.source.build`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// CMake cache entries, each `-DNAME=VALUE` or `-DNAME:TYPE=VALUE`.
    #[serde(default)]
    pub cmake_flags: Vec<String>,
    /// CMake generator (`Unix Makefiles` or `Ninja`); default: Ninja when installed, else make.
    #[serde(default)]
    pub generator: Option<String>,
    /// Build cache root; default `~/.cache/llama-orch/<engine>`.
    #[serde(default)]
    pub cache_dir: Option<String>,
}

/// `provisioning.container`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// Image reference without tag, e.g. `vllm/vllm-openai` or `127.0.0.1:5000/llama/server`.
    pub image: String,
    /// Tag, or a `sha256:` digest.
    #[serde(default)]
    pub tag: Option<String>,
    /// Pinned manifest digest (`sha256:…`); the registry's answer for the tag must match it.
    #[serde(default)]
    pub digest: Option<String>,
    /// The registry speaks plain HTTP (a loopback mirror, say). Default: false.
    #[serde(default)]
    pub insecure: bool,
    /// `podman` or `docker`; default: podman when it works, else docker.
    #[serde(default)]
    pub runtime: Option<String>,
}

/// `provisioning.package`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageConfig {
    /// Package name; default: the distribution's package for the engine (e.g. `llama.cpp-tools`
    /// on Debian, `llama-cpp` on Arch and Fedora).
    #[serde(default)]
    pub name: Option<String>,
    /// Exact version to install, as the package database spells it (`1.0.0-1`, `1:b6000-1`).
    /// Required: package mode installs nothing unpinned.
    #[serde(default)]
    pub version: Option<String>,
    /// Repository to install from: apt a `deb …` source line (used alone) or a release name
    /// (`bookworm-backports`); pacman a repository name or the URL of its `<name>.db`; dnf a
    /// repository id or base URL.
    #[serde(default)]
    pub repo: Option<String>,
    /// `apt`, `pacman`, `paru`, `yay` or `dnf`; default: the distribution's manager (an AUR helper
    /// for AUR packages).
    #[serde(default)]
    pub manager: Option<String>,
    /// `debian`, `arch` or `fedora` (or an id they cover); default: from `/etc/os-release`.
    #[serde(default)]
    pub distro: Option<String>,
    /// `cpu` (default), `cuda`, `hip` or `vulkan`: picks the default package, and a GPU backend
    /// must be present in what gets installed (never a silent CPU build).
    #[serde(default)]
    pub backend: Option<String>,
}

/// `provisioning.binary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BinaryConfig {
    /// Pinned download URL.
    pub url: String,
    /// `sha256:…`, `sha512:…` or `blake3:…`.
    #[serde(default)]
    pub checksum: Option<String>,
    /// Install root; default `~/.cache/llama-orch/<engine>/bin`. Each install lands in
    /// `<install_dir>/<key>/`, the key derived from the checksum.
    #[serde(default)]
    pub install_dir: Option<String>,
    /// Upstream version of the artefact (e.g. `b6000`); default: asked from the binary itself.
    #[serde(default)]
    pub version: Option<String>,
    /// Exact size in bytes, when known: shown in the plan and enforced on download.
    #[serde(default)]
    pub size: Option<u64>,
}

/// `provisioning.model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `file:/path`, a plain path, or a scheme such as `hf:org/repo/file`.
    #[serde(rename = "ref", default)]
    pub reference: Option<String>,
    /// Model cache directory; default `~/.cache/models`.
    #[serde(default)]
    pub cache_dir: Option<String>,
    /// Expected checksum of the model file.
    #[serde(default)]
    pub checksum: Option<String>,
}

/// The format of a configuration text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML (llama-orch's native format).
    Yaml,
    /// TOML.
    Toml,
}

impl Format {
    /// Picks the format from a file name: `.toml` is TOML, everything else YAML.
    pub fn from_file_name(name: &str) -> Format {
        if name.ends_with(".toml") {
            Format::Toml
        } else {
            Format::Yaml
        }
    }
}

impl Config {
    /// Parses and validates a configuration. `origin` names it in errors (a file name).
    pub fn parse(text: &str, format: Format, origin: &str) -> Result<Config> {
        let syntax = |message: String| Error::ConfigSyntax {
            origin: origin.to_string(),
            message,
        };
        // Parse into a generic tree first, then into the typed config through
        // serde_path_to_error, so that type errors name the field path in both formats.
        let tree: serde_json::Value = match format {
            Format::Yaml => serde_saphyr::from_str(text).map_err(|e| syntax(e.to_string()))?,
            Format::Toml => toml::from_str(text).map_err(|e| syntax(e.to_string()))?,
        };
        if !tree.is_object() {
            return Err(syntax(
                "expected a mapping with a `pools` list at the top level".to_string(),
            ));
        }
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." || path.is_empty() {
                syntax(inner)
            } else {
                syntax(format!("{path}: {inner}"))
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything that types alone cannot; reports all problems at once.
    pub fn validate(&self) -> Result<()> {
        let mut errors = Vec::new();
        if self.pools.is_empty() {
            errors.push(field("pools", "at least one pool is required"));
        }
        let mut seen = BTreeMap::new();
        for (index, pool) in self.pools.iter().enumerate() {
            let at = |suffix: &str| format!("pools[{index}]{suffix}");
            if let Some(first) = seen.insert(pool.id.clone(), index) {
                errors.push(field(
                    &at(".id"),
                    &format!("duplicate id `{}` (also pools[{first}])", pool.id),
                ));
            }
            validate_pool(pool, &at, &mut errors);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::ConfigInvalid { errors })
        }
    }

    /// Picks a pool by id, or the only pool when `id` is `None`.
    pub fn pool(&self, id: Option<&str>) -> Result<&PoolConfig> {
        let known = || self.pools.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
        match id {
            Some(id) => self
                .pools
                .iter()
                .find(|p| p.id == id)
                .ok_or_else(|| Error::UnknownPool {
                    id: id.to_string(),
                    known: known(),
                }),
            None if self.pools.len() == 1 => Ok(&self.pools[0]),
            None => Err(Error::AmbiguousPool { known: known() }),
        }
    }

    /// The JSON Schema of the configuration, pretty-printed.
    pub fn json_schema() -> String {
        let schema = schemars::schema_for!(Config);
        serde_json::to_string_pretty(&schema).unwrap_or_default()
    }
}

fn field(path: &str, message: &str) -> FieldError {
    FieldError {
        path: path.to_string(),
        message: message.to_string(),
    }
}

/// Pool ids name files, log paths and containers, so only a safe alphabet is allowed.
pub fn is_valid_pool_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with(['.', '-'])
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn validate_pool(pool: &PoolConfig, at: &dyn Fn(&str) -> String, errors: &mut Vec<FieldError>) {
    if !is_valid_pool_id(&pool.id) {
        errors.push(field(
            &at(".id"),
            "must be 1-64 characters of letters, digits, `.`, `_` or `-`, not starting with `.` or `-`",
        ));
    }
    let p = &pool.provisioning;
    let mode = p.mode.as_str();
    for (index, port) in p.ports.iter().enumerate() {
        if *port == 0 {
            errors.push(field(
                &at(&format!(".provisioning.ports[{index}]")),
                "port 0 is not a port",
            ));
        }
    }
    for key in p.env.keys() {
        let valid = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            errors.push(field(
                &at(&format!(".provisioning.env.{key}")),
                "environment variable names are letters, digits and `_`, not starting with a digit",
            ));
        }
    }
    for (index, flag) in p.flags.iter().enumerate() {
        if flag.contains('\0') {
            errors.push(field(
                &at(&format!(".provisioning.flags[{index}]")),
                "contains a NUL byte",
            ));
        }
    }
    match p.mode {
        Mode::Source => match &p.source {
            None => errors.push(field(
                &at(".provisioning.source"),
                "required for mode source (repo, ref and build settings)",
            )),
            Some(source) => {
                match source.reference.as_deref() {
                    None => errors.push(field(
                        &at(".provisioning.source.ref"),
                        "required for mode source",
                    )),
                    Some(r) if !is_valid_git_ref(r) => errors.push(field(
                        &at(".provisioning.source.ref"),
                        &format!("`{r}` is not a valid git tag, branch or commit name"),
                    )),
                    Some(_) => {}
                }
                if let Some(repo) = &source.repo
                    && (repo.trim().is_empty() || repo.starts_with('-'))
                {
                    errors.push(field(
                        &at(".provisioning.source.repo"),
                        "must be a git URL (https://, ssh:// or file://) or a path",
                    ));
                }
                for (index, flag) in source.build.cmake_flags.iter().enumerate() {
                    if let Err(message) = crate::cmake::parse_cache_entry(flag) {
                        errors.push(field(
                            &at(&format!(".provisioning.source.build.cmake_flags[{index}]")),
                            &message,
                        ));
                    }
                }
                if let Some(generator) = &source.build.generator
                    && !matches!(generator.as_str(), "Ninja" | "Unix Makefiles")
                {
                    errors.push(field(
                        &at(".provisioning.source.build.generator"),
                        "must be `Ninja` or `Unix Makefiles`",
                    ));
                }
            }
        },
        Mode::Container if p.container.is_none() => errors.push(field(
            &at(".provisioning.container"),
            &format!("required for mode {mode} (image and tag)"),
        )),
        Mode::Package if p.package.is_none() => errors.push(field(
            &at(".provisioning.package"),
            &format!("required for mode {mode} (version, and name where the default does not fit)"),
        )),
        Mode::Package => {
            if let Some(package) = &p.package
                && package.version.is_none()
            {
                errors.push(field(
                    &at(".provisioning.package.version"),
                    "required: package mode installs an exact version (list them with `apt-cache madison NAME`, `pacman -Si NAME` or `dnf list --showduplicates NAME`)",
                ));
            }
        }
        Mode::Binary if p.binary.is_none() => errors.push(field(
            &at(".provisioning.binary"),
            &format!("required for mode {mode} (url and checksum)"),
        )),
        _ => {}
    }
    if let Some(package) = &p.package {
        if let Some(name) = &package.name
            && !crate::packages::is_valid_package_name(name)
        {
            errors.push(field(
                &at(".provisioning.package.name"),
                "must start with a letter or digit and hold only letters, digits and `.` `_` `+` `-` `@`",
            ));
        }
        if let Some(version) = &package.version
            && !crate::packages::is_valid_package_version(version)
        {
            errors.push(field(
                &at(".provisioning.package.version"),
                "must start with a letter or digit and hold only letters, digits and `.` `_` `+` `~` `:` `-`",
            ));
        }
        if let Some(repo) = &package.repo
            && (repo.trim().is_empty() || repo.starts_with('-') || repo.contains(['\n', '\r']))
        {
            errors.push(field(
                &at(".provisioning.package.repo"),
                "must be a repository name, a URL or one `deb …` source line",
            ));
        }
        if let Some(manager) = &package.manager
            && crate::packages::ManagerKind::parse(manager).is_none()
        {
            errors.push(field(
                &at(".provisioning.package.manager"),
                "must be `apt`, `pacman`, `paru`, `yay` or `dnf`",
            ));
        }
        if let Some(backend) = &package.backend
            && crate::prepared::Backend::parse(backend).is_none()
        {
            errors.push(field(
                &at(".provisioning.package.backend"),
                "must be `cpu`, `cuda`, `hip` or `vulkan`",
            ));
        }
        if let Some(distro) = &package.distro
            && crate::tools::Distro::parse(distro).is_none()
        {
            errors.push(field(
                &at(".provisioning.package.distro"),
                "must be `debian`, `arch` or `fedora` (or an id they cover, e.g. `ubuntu`, `cachyos`, `rhel`)",
            ));
        }
    }
    if let Some(container) = &p.container {
        let digests = [container.tag.as_deref(), container.digest.as_deref()];
        for (index, value) in digests.into_iter().enumerate() {
            let Some(value) = value else { continue };
            let key = if index == 0 { "tag" } else { "digest" };
            let is_digest = value.starts_with("sha256:");
            let valid = if is_digest {
                value.len() == 71
                    && value[7..]
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            } else {
                index == 0
                    && !value.is_empty()
                    && value.len() <= 128
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            };
            if !valid {
                errors.push(field(
                    &at(&format!(".provisioning.container.{key}")),
                    "must be a tag (letters, digits, `_`, `.`, `-`) or sha256:<64 lower-case hex>",
                ));
            }
        }
        if let Some(runtime) = &container.runtime
            && !matches!(runtime.as_str(), "podman" | "docker")
        {
            errors.push(field(
                &at(".provisioning.container.runtime"),
                "must be `podman` or `docker`",
            ));
        }
    }
    if let Some(binary) = &p.binary {
        if let Some(checksum) = &binary.checksum
            && let Err(message) = crate::checksum::Checksum::parse(checksum)
        {
            errors.push(field(&at(".provisioning.binary.checksum"), &message));
        }
        let scheme = binary
            .url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("https" | "http" | "file")) {
            errors.push(field(
                &at(".provisioning.binary.url"),
                "must be an https:// URL (http:// and file:// only for local mirrors)",
            ));
        }
    }
    if let Some(model) = &p.model
        && let Some(checksum) = &model.checksum
        && let Err(message) = crate::checksum::Checksum::parse(checksum)
    {
        errors.push(field(&at(".provisioning.model.checksum"), &message));
    }
    let has_model_ref = p.model.as_ref().is_some_and(|m| m.reference.is_some());
    if p.mode != Mode::External && !has_model_ref && pool.model.is_none() {
        errors.push(field(
            &at(".provisioning.model.ref"),
            "required (or set the pool's `model` to a file name in the model cache)",
        ));
    }
}

/// Accepts what `git check-ref-format --allow-onelevel` accepts, minus anything that could be
/// mistaken for an option. Commits are hex strings, which pass too.
pub fn is_valid_git_ref(reference: &str) -> bool {
    !reference.is_empty()
        && !reference.starts_with(['-', '/'])
        && !reference.ends_with(['/', '.'])
        && !reference.ends_with(".lock")
        && !reference.contains("..")
        && !reference.contains("@{")
        && !reference.contains("//")
        && reference.chars().all(|c| {
            !c.is_ascii_control() && !matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
pools:
  - id: local-llamacpp-gpu
    engine: llamacpp
    model: qwen2.5-0.5b-instruct-q4_k_m.gguf
    devices: [0]
    provisioning:
      mode: source
      allow_package_installs: true
      source:
        repo: https://github.com/ggml-org/llama.cpp.git
        ref: 703f9e3
        submodules: true
        build:
          cmake_flags: [-DCMAKE_BUILD_TYPE=Release, -DLLAMA_BUILD_SERVER=ON, -DGGML_CUDA=ON,
                        -DCMAKE_CUDA_ARCHITECTURES=86]
      model:
        ref: hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf
      ports: [8080]
      env: {}
      flags: [--metrics, --no-webui, --parallel, "1", --no-cont-batching, --n-gpu-layers, "99"]
"#;

    fn errors_of(text: &str) -> Vec<String> {
        match Config::parse(text, Format::Yaml, "test.yaml") {
            Err(Error::ConfigInvalid { errors }) => errors.iter().map(|e| e.to_string()).collect(),
            other => panic!("expected ConfigInvalid, got {other:?}"),
        }
    }

    #[test]
    fn design_card_example_parses() {
        let config = Config::parse(EXAMPLE, Format::Yaml, "example.yaml").expect("valid");
        let pool = config.pool(None).expect("one pool");
        assert_eq!(pool.engine, Engine::Llamacpp);
        assert_eq!(pool.provisioning.mode, Mode::Source);
        let source = pool.provisioning.source.as_ref().expect("source");
        assert_eq!(source.reference.as_deref(), Some("703f9e3"));
        assert_eq!(source.build.cmake_flags.len(), 4);
        assert_eq!(pool.devices, vec![DeviceId::Index(0)]);
        assert_eq!(pool.provisioning.flags[3], "1");
    }

    #[test]
    fn toml_reads_the_same_config() {
        let text = r#"
[[pools]]
id = "p"
engine = "llamacpp"
[pools.provisioning]
mode = "source"
ports = [8080]
[pools.provisioning.source]
ref = "b1"
[pools.provisioning.model]
ref = "file:/m.gguf"
"#;
        let config = Config::parse(text, Format::Toml, "c.toml").expect("valid");
        assert_eq!(config.pools[0].provisioning.ports, vec![8080]);
    }

    #[test]
    fn missing_ref_names_the_field() {
        let text = EXAMPLE.replace("        ref: 703f9e3\n", "");
        assert_eq!(
            errors_of(&text),
            vec!["pools[0].provisioning.source.ref: required for mode source"]
        );
    }

    #[test]
    fn unknown_engine_names_the_field_and_choices() {
        let text = EXAMPLE.replace("engine: llamacpp", "engine: ollama");
        let error = Config::parse(&text, Format::Yaml, "c.yaml").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("pools[0].engine"), "{message}");
        assert!(message.contains("ollama"), "{message}");
        assert!(message.contains("llamacpp"), "{message}");
        assert_eq!(error.code(), crate::ErrorCode::Config);
    }

    #[test]
    fn unknown_mode_names_the_field() {
        let text = EXAMPLE.replace("mode: source", "mode: magic");
        let message = Config::parse(&text, Format::Yaml, "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(message.contains("pools[0].provisioning.mode"), "{message}");
        assert!(message.contains("magic"), "{message}");
    }

    #[test]
    fn misspelt_field_is_rejected_not_dropped() {
        let text = EXAMPLE.replace("cmake_flags:", "cmake_flag:");
        let message = Config::parse(&text, Format::Yaml, "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("pools[0].provisioning.source.build"),
            "{message}"
        );
        assert!(message.contains("cmake_flag"), "{message}");
    }

    #[test]
    fn malformed_yaml_is_a_syntax_error_with_a_location() {
        let error =
            Config::parse("pools:\n  - id: [unclosed\n", Format::Yaml, "bad.yaml").unwrap_err();
        assert!(matches!(error, Error::ConfigSyntax { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("bad.yaml"), "{message}");
        assert!(message.contains("line"), "{message}");
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let text = r#"
pools:
  - id: "bad id"
    engine: llamacpp
    provisioning:
      mode: source
      ports: [0]
      env: { "1X": "y" }
      source:
        ref: "-rf"
        build:
          cmake_flags: ["--fresh", "-DOK=1"]
  - id: "bad id"
    engine: vllm
    provisioning:
      mode: container
      model: { ref: "file:/m" }
"#;
        assert_eq!(
            errors_of(text),
            vec![
                "pools[0].id: must be 1-64 characters of letters, digits, `.`, `_` or `-`, not starting with `.` or `-`",
                "pools[0].provisioning.ports[0]: port 0 is not a port",
                "pools[0].provisioning.env.1X: environment variable names are letters, digits and `_`, not starting with a digit",
                "pools[0].provisioning.source.ref: `-rf` is not a valid git tag, branch or commit name",
                "pools[0].provisioning.source.build.cmake_flags[0]: `--fresh` is not a CMake cache entry; write -DNAME=VALUE (the generator has its own key, source.build.generator)",
                "pools[0].provisioning.model.ref: required (or set the pool's `model` to a file name in the model cache)",
                "pools[1].id: duplicate id `bad id` (also pools[0])",
                "pools[1].id: must be 1-64 characters of letters, digits, `.`, `_` or `-`, not starting with `.` or `-`",
                "pools[1].provisioning.container: required for mode container (image and tag)",
            ]
        );
    }

    #[test]
    fn pool_selection() {
        let config = Config::parse(EXAMPLE, Format::Yaml, "c.yaml").unwrap();
        assert!(config.pool(Some("local-llamacpp-gpu")).is_ok());
        let error = config.pool(Some("nope")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no pool `nope` in the configuration (pools: local-llamacpp-gpu)"
        );
    }

    #[test]
    fn other_top_level_sections_are_kept_aside() {
        let text = format!("orchestrator: {{ listen: 1 }}\n{EXAMPLE}");
        let config = Config::parse(&text, Format::Yaml, "c.yaml").unwrap();
        assert!(config.other_sections.contains_key("orchestrator"));
    }

    #[test]
    fn git_refs() {
        for good in [
            "b6000",
            "master",
            "v1.2.3",
            "703f9e3",
            "feature/x",
            "release-1.0",
        ] {
            assert!(is_valid_git_ref(good), "{good}");
        }
        for bad in [
            "", "-x", "a..b", "a b", "x.lock", "a~1", "a^", "HEAD@{1}", "a:b",
        ] {
            assert!(!is_valid_git_ref(bad), "{bad}");
        }
    }

    #[test]
    fn schema_mentions_every_section() {
        let schema = Config::json_schema();
        for key in [
            "pools",
            "provisioning",
            "cmake_flags",
            "allow_package_installs",
            "checksum",
        ] {
            assert!(schema.contains(key), "schema lacks {key}");
        }
    }
}
