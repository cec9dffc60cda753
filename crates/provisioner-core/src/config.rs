//! llama-orch's pool configuration (YAML or TOML), parsed into types when it is read.
//!
//! Every value with a fixed set or a syntax is a type (`Engine`, `Mode`, [`PoolId`],
//! [`GitRef`], [`CacheEntry`], [`ImageReference`], [`Checksum`], [`ModelRef`], …), so nothing
//! downstream re-parses strings. Every field of `provisioning` is optional, and an explicit
//! `null` means "not set" (llama-orch writes both). Unknown keys inside a pool are errors with
//! a did-you-mean, because a misspelt `cmake_flag` would otherwise silently change a build; at
//! the top level only `pools` and llama-orch's `catalog` section are known.
//!
//! Parsing reports every problem it can find at once, each with its `pools[N].…` path: a pool
//! with a bad value is parsed again without it, so that the next problem shows too.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::checksum::Checksum;
use crate::cmake::CacheEntry;
use crate::error::{Error, FieldError, Result};
use crate::image::ImageReference;
use crate::model_ref::ModelRef;
use crate::names::{
    Digest, EnvName, Generator, GitRef, PackageName, PackageVersion, PoolId, TagOrDigest,
};
use crate::secret::{GitRemote, PackageRepo, SafeUrl, Secret};
use crate::vocabulary::{Backend, DeviceId, Distro, Engine, ManagerKind, Mode, RuntimeKind};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Config {
    /// Engine pools, each prepared independently.
    pub pools: Vec<PoolConfig>,
    /// llama-orch's catalog section (trust policy and the like), read by other components; kept
    /// aside and reported as not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub catalog: Option<serde_json::Value>,
}

/// One pool of identical engine replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Pool id: letters, digits, `.`, `_` and `-` (it names files and containers).
    pub id: PoolId,
    /// Which inference engine serves this pool.
    pub engine: Engine,
    /// llama-orch's model id for the pool: an opaque label (a file name, a hub name, a digest
    /// such as `sha256:0123abcd`). Never parsed; without `provisioning.model.ref` it is looked
    /// up as a file name in the models directory.
    #[serde(default)]
    pub model: Option<String>,
    /// GPU device indices (0 to 1023) or GPU/MIG ids the pool may use.
    #[serde(default, deserialize_with = "null_as_default")]
    pub devices: Vec<DeviceId>,
    /// Context length in tokens, 1 to 16777216 (16 Mi); passed to engines that take it.
    #[serde(default, deserialize_with = "ranged_option::<Ctx, _, _>")]
    #[schemars(range(min = 1, max = 16_777_216))]
    pub ctx: Option<u32>,
    /// Proportions of the model per device: each 0, or from 0.000001 to 1000000.
    #[serde(default)]
    #[schemars(inner(range(min = 0, max = 1_000_000)))]
    pub tensor_split: Option<Vec<f64>>,
    /// Quantisation label (read by other components; accepted as is).
    #[serde(default)]
    pub quant: Option<serde_json::Value>,
    /// Whether pool-managerd starts the pool eagerly (accepted as is).
    #[serde(default)]
    pub preload: Option<serde_json::Value>,
    /// Whether every replica must report the same engine_version (accepted as is).
    #[serde(default)]
    pub require_same_engine_version: Option<serde_json::Value>,
    /// Sampler profile version (accepted as is).
    #[serde(default)]
    pub sampler_profile_version: Option<serde_json::Value>,
    /// Queue settings, owned by orchestratord (accepted as is).
    #[serde(default)]
    pub queue: Option<serde_json::Value>,
    /// Admission settings, owned by orchestratord (accepted as is).
    #[serde(default)]
    pub admission: Option<serde_json::Value>,
    /// Timeouts, owned by pool-managerd (accepted as is).
    #[serde(default)]
    pub timeouts: Option<serde_json::Value>,
    /// How the engine gets onto the host; every field is optional.
    #[serde(default, deserialize_with = "null_as_default")]
    pub provisioning: Provisioning,
    /// Position of the pool in the file, for `pools[N]` in messages (0 for a pool that came
    /// from elsewhere).
    #[serde(skip)]
    #[schemars(skip)]
    pub index: usize,
}

/// The `provisioning` block of a pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provisioning {
    /// `external`, `source`, `container`, `package` or `binary`; default: `source` for
    /// llama.cpp, `container` for the other engines.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Allow installing distribution packages (build tools, or the engine in package mode).
    /// Default: false.
    #[serde(default)]
    pub allow_package_installs: Option<bool>,
    /// llama-orch's gate on binary mode: `false` refuses downloads; unset or `true` allows
    /// them (a checksum is always required).
    #[serde(default)]
    pub allow_binary_downloads: Option<bool>,
    /// Run what was installed even when the pool asks for a GPU (a GPU backend named in
    /// CMake flags, `package.backend` or the image, or `--n-gpu-layers` above 0) and what was
    /// installed shows no such backend (its ggml libraries, its `--version` output): prepare
    /// then records a warning in the prepared engine's metadata and prints it as a note.
    /// Default: false, and such a prepare fails.
    #[serde(default)]
    pub allow_cpu_fallback: Option<bool>,
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
    /// Host ports (0 to 65535), the HTTP API first; `0` means a free port chosen at launch.
    /// Default: the engine's own port.
    #[serde(default, deserialize_with = "ranged_list::<Port, _, _>")]
    #[schemars(inner(range(min = 0, max = 65_535)))]
    pub ports: Vec<u16>,
    /// Environment of the engine. Every value is a secret: never shown, and handed to the
    /// engine through a file of mode 0600, never on a command line. A value is a string (or a
    /// number or boolean), or read at prepare from elsewhere: `{from_env: NAME}` (a variable of
    /// the provisioner's own environment) or `{from_file: /absolute/path}` (a file's contents,
    /// one trailing line break dropped).
    #[serde(default, deserialize_with = "null_as_default")]
    pub env: BTreeMap<EnvName, EnvValue>,
    /// Extra engine command-line flags.
    #[serde(default, deserialize_with = "null_as_default")]
    pub flags: Vec<String>,
}

/// A value of a pool's `env`: given in the configuration, or named there and read at prepare,
/// so that the configuration file need not hold the secret. Every form is a secret: a plain
/// value serialises as `<redacted>`, a reference as the reference (a variable name or a path).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EnvValue {
    /// The value itself (`HF_TOKEN: hf_…`; numbers and booleans as their text).
    Plain(Secret),
    /// `{from_env: NAME}`: the variable `NAME` of the provisioner's own environment (orchctl's,
    /// or pool-managerd's), read when the env file is written.
    FromEnv(EnvName),
    /// `{from_file: /run/secrets/hf}`: the contents of a file (an absolute path), read when the
    /// env file is written, one trailing line break dropped.
    FromFile(PathBuf),
}

impl EnvValue {
    /// The value when the configuration gives it, `None` for a reference.
    pub fn plain(&self) -> Option<&Secret> {
        match self {
            EnvValue::Plain(secret) => Some(secret),
            EnvValue::FromEnv(_) | EnvValue::FromFile(_) => None,
        }
    }

    /// How the configuration gives it, for messages (never the value): `a value`,
    /// `from_env: NAME` or `from_file: PATH`.
    pub fn describe(&self) -> String {
        match self {
            EnvValue::Plain(_) => "a value".to_string(),
            EnvValue::FromEnv(name) => format!("from_env: {name}"),
            EnvValue::FromFile(path) => format!("from_file: {}", path.display()),
        }
    }
}

impl From<Secret> for EnvValue {
    fn from(secret: Secret) -> EnvValue {
        EnvValue::Plain(secret)
    }
}

/// The two keys of a reference.
const ENV_VALUE_KEYS: &[&str] = &["from_env", "from_file"];

impl Serialize for EnvValue {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            EnvValue::Plain(secret) => secret.serialize(serializer),
            EnvValue::FromEnv(name) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("from_env", name.as_str())?;
                map.end()
            }
            EnvValue::FromFile(path) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("from_file", &path.to_string_lossy())?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for EnvValue {
    /// A string, number or boolean (never echoed in an error), or a mapping with exactly one of
    /// `from_env` (a variable name) and `from_file` (an absolute path).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EnvValue;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a string, number or boolean, or {from_env: NAME} or {from_file: /absolute/path}",
                )
            }

            fn visit_str<E: serde::de::Error>(
                self,
                value: &str,
            ) -> std::result::Result<EnvValue, E> {
                Ok(EnvValue::Plain(Secret::new(value)))
            }

            fn visit_bool<E: serde::de::Error>(
                self,
                value: bool,
            ) -> std::result::Result<EnvValue, E> {
                Ok(EnvValue::Plain(Secret::new(value.to_string())))
            }

            fn visit_i64<E: serde::de::Error>(
                self,
                value: i64,
            ) -> std::result::Result<EnvValue, E> {
                Ok(EnvValue::Plain(Secret::new(value.to_string())))
            }

            fn visit_u64<E: serde::de::Error>(
                self,
                value: u64,
            ) -> std::result::Result<EnvValue, E> {
                Ok(EnvValue::Plain(Secret::new(value.to_string())))
            }

            fn visit_f64<E: serde::de::Error>(
                self,
                value: f64,
            ) -> std::result::Result<EnvValue, E> {
                Ok(EnvValue::Plain(Secret::new(value.to_string())))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<EnvValue, A::Error> {
                use serde::de::Error as _;
                let mut found: Option<EnvValue> = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value = match key.as_str() {
                        "from_env" => {
                            let name: String = map.next_value()?;
                            let name: EnvName = name
                                .parse()
                                .map_err(|e: String| A::Error::custom(format!("from_env: {e}")))?;
                            EnvValue::FromEnv(name)
                        }
                        "from_file" => {
                            let path: String = map.next_value()?;
                            EnvValue::FromFile(env_file_path(&path).map_err(A::Error::custom)?)
                        }
                        other => {
                            return Err(A::Error::custom(format!(
                                "`{other}` is not a way to give a value{}: write {{from_env: NAME}} or {{from_file: /absolute/path}}",
                                did_you_mean(other, ENV_VALUE_KEYS).split_once(';').map_or(
                                    String::new(),
                                    |(_, rest)| format!(" ({})", rest.trim())
                                ),
                            )));
                        }
                    };
                    if found.is_some() {
                        return Err(A::Error::custom(
                            "give one of from_env and from_file, not both",
                        ));
                    }
                    found = Some(value);
                }
                found.ok_or_else(|| {
                    A::Error::custom(
                        "an empty mapping: write a value, {from_env: NAME} or {from_file: /absolute/path}",
                    )
                })
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// The path of a `from_file` reference: absolute, without NUL or line breaks.
fn env_file_path(path: &str) -> std::result::Result<PathBuf, String> {
    if path.contains(['\0', '\n', '\r']) {
        return Err("from_file: the path holds a NUL byte or a line break".to_string());
    }
    if !path.starts_with('/') {
        return Err(format!(
            "from_file: `{path}` is not an absolute path (it is read by the process that prepares the pool, whatever its working directory)"
        ));
    }
    Ok(PathBuf::from(path))
}

impl JsonSchema for EnvValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EnvValue".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A secret: the value itself, or where prepare reads it (never shown either way).",
            "anyOf": [
                { "type": ["string", "number", "boolean"] },
                {
                    "type": "object",
                    "description": "A variable of the provisioner's own environment, read at prepare.",
                    "properties": { "from_env": { "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" } },
                    "required": ["from_env"],
                    "additionalProperties": false
                },
                {
                    "type": "object",
                    "description": "A file whose contents are the value (one trailing line break dropped), read at prepare.",
                    "properties": { "from_file": { "type": "string", "pattern": "^/" } },
                    "required": ["from_file"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

/// `provisioning.source`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Git repository (https, ssh, file URL, scp-like or a path). Default: the engine's
    /// upstream repository.
    #[serde(default)]
    pub repo: Option<GitRemote>,
    /// Tag, branch or commit. Default (only with the default repository): the release tag the
    /// recipe pins.
    #[serde(rename = "ref", default)]
    pub reference: Option<GitRef>,
    /// Check out submodules recursively. Default: false.
    #[serde(default)]
    pub submodules: Option<bool>,
    /// Build settings.
    #[serde(default, deserialize_with = "null_as_default")]
    pub build: BuildConfig,
}

/// `provisioning.source.build`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// CMake cache entries, each `-DNAME=VALUE` or `-DNAME:TYPE=VALUE`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub cmake_flags: Vec<CacheEntry>,
    /// `Ninja` or `Unix Makefiles`; default: Ninja when installed, else make.
    #[serde(default)]
    pub generator: Option<Generator>,
    /// Build cache root; default `~/.cache/llama-orch/<engine>`. Source mode only.
    #[serde(default)]
    pub cache_dir: Option<String>,
}

/// `provisioning.container`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// Image reference, e.g. `vllm/vllm-openai` or `127.0.0.1:5000/llama/server` (a `:tag` or
    /// `@sha256:…` in it counts as if given below). Default: the engine's upstream image.
    #[serde(default)]
    pub image: Option<ImageReference>,
    /// Tag, or a `sha256:` digest. Default (only with the default image): the tag the recipe
    /// pins.
    #[serde(default)]
    pub tag: Option<TagOrDigest>,
    /// Pinned manifest digest; the registry's answer for the tag must match it.
    #[serde(default)]
    pub digest: Option<Digest>,
    /// The registry speaks plain HTTP (a loopback mirror). Default: false.
    #[serde(default)]
    pub insecure: Option<bool>,
    /// `podman` or `docker`; default: podman when it works, else docker.
    #[serde(default)]
    pub runtime: Option<RuntimeKind>,
    /// vLLM only: how its server takes the model. `positional` (`vllm serve <model>`: images
    /// from v0.14.0 on, whose entrypoint is `vllm serve`) or `flag` (`--model <model>`: older
    /// images, whose entrypoint is the API server module). Default: from the version in the
    /// image tag; `positional` when the tag names none.
    #[serde(default)]
    pub model_arg: Option<ModelArg>,
}

/// `provisioning.container.model_arg`: how vLLM's server takes its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelArg {
    /// The first argument: `vllm serve <model>`.
    Positional,
    /// `--model <model>`.
    Flag,
}

/// `provisioning.package`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageConfig {
    /// Package name; default: the distribution's package for the engine and backend.
    #[serde(default)]
    pub name: Option<PackageName>,
    /// Exact version, as the package database spells it (`1.0.0-1`, `1:b6000-1`). Required:
    /// package mode installs nothing unpinned.
    #[serde(default)]
    pub version: Option<PackageVersion>,
    /// Repository: apt a `deb …` line (used alone) or a release name; pacman a repository name
    /// or the URL of its `<name>.db`; dnf a repository id or base URL.
    #[serde(default)]
    pub repo: Option<PackageRepo>,
    /// `apt`, `pacman`, `paru`, `yay` or `dnf`; default: the distribution's manager.
    #[serde(default)]
    pub manager: Option<ManagerKind>,
    /// `debian`, `arch` or `fedora` (or an id they cover); default: from `/etc/os-release`.
    #[serde(default)]
    pub distro: Option<Distro>,
    /// `cpu` (default), `cuda`, `hip` or `vulkan`: picks the default package, and a GPU backend
    /// must show in what gets installed.
    #[serde(default)]
    pub backend: Option<Backend>,
}

/// `provisioning.binary`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BinaryConfig {
    /// Pinned download URL (https; http and file only for local mirrors). Required for mode
    /// binary.
    #[serde(default)]
    pub url: Option<SafeUrl>,
    /// `sha256:…`, `sha512:…` or `blake3:…`. Required for mode binary.
    #[serde(default)]
    pub checksum: Option<Checksum>,
    /// Install root; default `~/.cache/llama-orch/<engine>/bin`.
    #[serde(default)]
    pub install_dir: Option<String>,
    /// Upstream version of the artefact (e.g. `b6000`); default: what the binary reports. A
    /// release URL (`…/releases/download/<tag>/…`) and this must name the same release.
    #[serde(default)]
    pub version: Option<String>,
    /// The server inside the archive: a path (`build/bin/llama-server`) or a file name
    /// (`server`). Default: the engine's server name (`llama-server`), else its older names
    /// (`server`, before mid-2024).
    #[serde(default)]
    pub executable: Option<crate::names::ArchiveMember>,
    /// Exact size in bytes (1 to 68719476736, 64 GiB), when known: shown in the plan and
    /// enforced on download.
    #[serde(default, deserialize_with = "ranged_option::<BinarySize, _, _>")]
    #[schemars(range(min = 1, max = 68_719_476_736_u64))]
    pub size: Option<u64>,
}

/// `provisioning.model`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `file:/path`, a path (relative paths are relative to the models directory),
    /// `hf:org/repo[/file]`, `https://…`, `s3://…` or `oci://…`.
    #[serde(rename = "ref", default)]
    pub reference: Option<ModelRef>,
    /// Models directory for this pool; default `--models-dir`, else `~/.cache/models`.
    #[serde(default)]
    pub cache_dir: Option<String>,
    /// Expected checksum of the model file (`sha256:<hex>`); an error on a whole repository.
    #[serde(default)]
    pub checksum: Option<Checksum>,
    /// `hf:` only: the branch, tag or commit to stage (the same as `hf:org/repo@revision`; the
    /// two disagreeing is a config error). Default `main`. A branch is resolved to a commit
    /// once, recorded in the catalog, and reused offline until `orchctl model pull --refresh`.
    #[serde(default)]
    pub revision: Option<String>,
    /// `hf:org/repo` only: globs (`*`, `?`, `**`) of the repository paths to stage; empty
    /// stages every file. E.g. `["*.safetensors", "*.json", "tokenizer*"]`.
    #[serde(default)]
    pub include: Vec<String>,
    /// `hf:org/repo` only: globs of repository paths never staged (e.g. `["*.bin", "*.onnx",
    /// "original/**"]`), applied after `include`.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// The range of each numeric field, checked when the configuration is read (a value outside it
/// is a [`FieldError`] naming the field and the range), so that nothing computed from one can
/// overflow and an engine never gets a number it cannot take.
pub mod ranges {
    use std::ops::RangeInclusive;

    /// `provisioning.ports[N]`: a TCP port; 0 is a free port chosen at launch.
    pub const PORT: RangeInclusive<u64> = 0..=65_535;
    /// `ctx`: tokens of context (16 Mi; the longest contexts models offer are near 10 M).
    pub const CTX: RangeInclusive<u64> = 1..=16_777_216;
    /// `devices[N]` written as an index (as `nvidia-smi -L` numbers GPUs).
    pub const DEVICE_INDEX: RangeInclusive<u64> = 0..=1023;
    /// `tensor_split[N]` other than 0 (an engine parses it as a 32-bit float).
    pub const TENSOR_SPLIT: RangeInclusive<f64> = 0.000_001..=1_000_000.0;
    /// `provisioning.binary.size`: bytes of the download (64 GiB).
    pub const BINARY_SIZE: RangeInclusive<u64> = 1..=68_719_476_736;
}

/// A numeric field's range and how messages name it.
trait Bound {
    /// The range.
    const RANGE: std::ops::RangeInclusive<u64>;
    /// What the field holds, with its range: `a port from 0 to 65535 (…)`.
    const WHAT: &'static str;
}

/// `provisioning.ports[N]`.
struct Port;
impl Bound for Port {
    const RANGE: std::ops::RangeInclusive<u64> = ranges::PORT;
    const WHAT: &'static str = "a port from 0 to 65535 (0: a free port chosen at launch)";
}

/// `ctx`.
struct Ctx;
impl Bound for Ctx {
    const RANGE: std::ops::RangeInclusive<u64> = ranges::CTX;
    const WHAT: &'static str = "a whole number of tokens from 1 to 16777216";
}

/// `provisioning.binary.size`.
struct BinarySize;
impl Bound for BinarySize {
    const RANGE: std::ops::RangeInclusive<u64> = ranges::BINARY_SIZE;
    const WHAT: &'static str = "a whole number of bytes from 1 to 68719476736 (64 GiB)";
}

/// A whole number within `B::RANGE`, read from any number the file holds (an integer of any
/// size or sign, or a float that is whole), refused with a message that names the range.
struct Ranged<B>(u64, std::marker::PhantomData<B>);

impl<'de, B: Bound> Deserialize<'de> for Ranged<B> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor<B>(std::marker::PhantomData<B>);

        impl<B: Bound> Visitor<B> {
            fn out_of_range<E: serde::de::Error>(value: impl std::fmt::Display) -> E {
                E::custom(format!("must be {}, not {value}", B::WHAT))
            }
        }

        impl<'de, B: Bound> serde::de::Visitor<'de> for Visitor<B> {
            type Value = Ranged<B>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(B::WHAT)
            }

            fn visit_u64<E: serde::de::Error>(
                self,
                value: u64,
            ) -> std::result::Result<Self::Value, E> {
                if B::RANGE.contains(&value) {
                    Ok(Ranged(value, std::marker::PhantomData))
                } else {
                    Err(Self::out_of_range(value))
                }
            }

            fn visit_i64<E: serde::de::Error>(
                self,
                value: i64,
            ) -> std::result::Result<Self::Value, E> {
                match u64::try_from(value) {
                    Ok(value) => self.visit_u64(value),
                    Err(_) => Err(Self::out_of_range(value)),
                }
            }

            fn visit_u128<E: serde::de::Error>(
                self,
                value: u128,
            ) -> std::result::Result<Self::Value, E> {
                match u64::try_from(value) {
                    Ok(value) => self.visit_u64(value),
                    Err(_) => Err(Self::out_of_range(value)),
                }
            }

            fn visit_i128<E: serde::de::Error>(
                self,
                value: i128,
            ) -> std::result::Result<Self::Value, E> {
                match u64::try_from(value) {
                    Ok(value) => self.visit_u64(value),
                    Err(_) => Err(Self::out_of_range(value)),
                }
            }

            fn visit_f64<E: serde::de::Error>(
                self,
                value: f64,
            ) -> std::result::Result<Self::Value, E> {
                // Whole and within u64 (2^64 itself is not): the range check does the rest.
                if value.is_finite()
                    && value.fract() == 0.0
                    && (0.0..18_446_744_073_709_551_616.0).contains(&value)
                {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    return self.visit_u64(value as u64);
                }
                Err(Self::out_of_range(value))
            }
        }

        deserializer.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

/// An optional ranged number (`null` is unset) as the field's own integer type.
fn ranged_option<'de, B, T, D>(deserializer: D) -> std::result::Result<Option<T>, D::Error>
where
    B: Bound,
    T: TryFrom<u64>,
    D: Deserializer<'de>,
{
    Option::<Ranged<B>>::deserialize(deserializer)?
        .map(|Ranged(value, _)| {
            T::try_from(value)
                .map_err(|_| serde::de::Error::custom(format!("must be {}, not {value}", B::WHAT)))
        })
        .transpose()
}

/// A list of ranged numbers (`null` is empty), each checked where it stands.
fn ranged_list<'de, B, T, D>(deserializer: D) -> std::result::Result<Vec<T>, D::Error>
where
    B: Bound,
    T: TryFrom<u64>,
    D: Deserializer<'de>,
{
    Option::<Vec<Ranged<B>>>::deserialize(deserializer)?
        .unwrap_or_default()
        .into_iter()
        .map(|Ranged(value, _)| {
            T::try_from(value)
                .map_err(|_| serde::de::Error::custom(format!("must be {}, not {value}", B::WHAT)))
        })
        .collect()
}

/// An explicit `null` means "not set": the field's default.
fn null_as_default<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
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

/// Stands in for a pool id that did not parse, so that the rest of the pool is still checked.
const INVALID_ID: &str = "_invalid-id_";

/// The top-level sections this component knows.
const TOP_LEVEL: &[&str] = &["pools", "catalog"];

impl PoolConfig {
    /// The provisioning mode: the configured one, else the engine's default (ORCH-3800).
    pub fn mode(&self) -> Mode {
        self.provisioning
            .mode
            .unwrap_or_else(|| self.engine.default_mode())
    }

    /// The full path of a field of this pool for messages: `pools[N].<relative>`.
    pub fn field(&self, relative: &str) -> String {
        format!("pools[{}].{relative}", self.index)
    }

    /// `provisioning.allow_package_installs`, default false.
    pub fn allow_package_installs(&self) -> bool {
        self.provisioning.allow_package_installs.unwrap_or(false)
    }

    /// `provisioning.allow_cpu_fallback`, default false.
    pub fn allow_cpu_fallback(&self) -> bool {
        self.provisioning.allow_cpu_fallback.unwrap_or(false)
    }
}

impl Config {
    /// Parses a configuration into types and checks what types alone cannot, reporting every
    /// problem at once. `origin` names the text in errors (a file name).
    ///
    /// Errors: [`Error::ConfigSyntax`] when the text is not YAML/TOML at all,
    /// [`Error::ConfigInvalid`] with every field problem otherwise.
    pub fn parse(text: &str, format: Format, origin: &str) -> Result<Config> {
        let (config, errors) = Config::parse_all(text, format, origin)?;
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(Error::ConfigInvalid { errors })
        }
    }

    /// As [`Config::parse`], but a field problem does not stop it: the pools that could be read
    /// (problems or not) and every problem found, ordered by pool. A checker that knows more
    /// (the engines: which modes an engine offers, its flags) goes on from there with the pools
    /// that have no problem yet.
    ///
    /// Errors: [`Error::ConfigSyntax`] when the text is not YAML/TOML at all.
    pub fn parse_all(
        text: &str,
        format: Format,
        origin: &str,
    ) -> Result<(Config, Vec<FieldError>)> {
        let syntax = |message: String| Error::ConfigSyntax {
            origin: origin.to_string(),
            message,
        };
        let tree: serde_json::Value = match format {
            Format::Yaml => serde_saphyr::from_str(text)
                .map_err(|e| syntax(yaml_message(&e.to_string(), origin)))?,
            Format::Toml => toml::from_str(text).map_err(|e| syntax(e.to_string()))?,
        };
        let serde_json::Value::Object(top) = tree else {
            return Err(syntax(
                "expected a mapping with a `pools` list at the top level".to_string(),
            ));
        };
        let mut errors = Vec::new();
        for key in top.keys() {
            if !TOP_LEVEL.contains(&key.as_str()) {
                errors.push(FieldError::new(
                    key,
                    format!(
                        "unknown top-level section{}; this file holds `pools` (and llama-orch's `catalog`)",
                        did_you_mean(key, TOP_LEVEL)
                    ),
                ));
            }
        }
        let mut pools = Vec::new();
        match top.get("pools") {
            None => errors.push(FieldError::new("pools", "required: the list of pools")),
            Some(serde_json::Value::Array(items)) if items.is_empty() => errors.push(
                FieldError::new(
                    "pools",
                    "empty: there is nothing to prepare; add a pool with at least `id`, `engine` and a model (`orchctl config schema` lists every key)",
                ),
            ),
            Some(serde_json::Value::Array(items)) => {
                for (index, item) in items.iter().enumerate() {
                    let mut parsed = parse_pool(item.clone(), index);
                    errors.extend(parsed.errors.iter().cloned());
                    if let Some(pool) = parsed.pool.take() {
                        let mut semantic = Vec::new();
                        validate_pool(&pool, &mut semantic);
                        // A value refused above was parsed as unset; what that causes is not
                        // another problem.
                        semantic.retain(|e| !parsed.touched(&e.path));
                        errors.extend(semantic);
                        pools.push(pool);
                    }
                }
            }
            Some(_) => errors.push(FieldError::new("pools", "must be a list of pools")),
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for pool in pools.iter().filter(|p| p.id.as_str() != INVALID_ID) {
            if let Some(first) = seen.insert(pool.id.as_str(), pool.index) {
                errors.push(FieldError::new(
                    pool.field("id"),
                    format!("duplicate id `{}` (also pools[{first}])", pool.id),
                ));
            }
        }
        errors.sort_by_key(|e| pool_position(&e.path));
        Ok((
            Config {
                pools,
                catalog: top.get("catalog").cloned(),
            },
            errors,
        ))
    }

    /// Picks a pool by id, or the only pool when `id` is `None`.
    pub fn pool(&self, id: Option<&str>) -> Result<&PoolConfig> {
        let known = || {
            self.pools
                .iter()
                .map(|p| p.id.to_string())
                .collect::<Vec<_>>()
        };
        match id {
            Some(id) => self
                .pools
                .iter()
                .find(|p| p.id.as_str() == id)
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

/// Sorts errors by pool, keeping document order within one.
/// The YAML reader's message in our words: without its own `error: ` prefix, its snippet
/// labelled with the file's name instead of `<input>`, and a duplicate key explained instead of
/// the reader's advice to its programmers.
fn yaml_message(message: &str, origin: &str) -> String {
    message
        .strip_prefix("error: ")
        .unwrap_or(message)
        .replace("--> <input>:", &format!("--> {origin}:"))
        .replace(
            ", set DuplicateKeyPolicy in Options if acceptable",
            " (given twice in one mapping; keep one)",
        )
}

/// Where a problem at `path` sorts: problems of the file first, then each pool's in order.
pub fn pool_position(path: &str) -> usize {
    path.strip_prefix("pools[")
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(0, |n| n + 1)
}

/// `; did you mean `x`?` when a known word is close to `word`.
pub fn did_you_mean(word: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(word, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 3))
        .min()
        .map(|(_, candidate)| format!(" `{word}`; did you mean `{candidate}`?"))
        .unwrap_or_else(|| format!(" `{word}`"))
}

/// The outcome of parsing one pool: the pool (when its required fields parsed), every problem,
/// and the paths that were refused and parsed as unset.
struct ParsedPool {
    pool: Option<PoolConfig>,
    errors: Vec<FieldError>,
    removed: Vec<String>,
}

impl ParsedPool {
    /// Whether `path` is, holds or lies under a refused value.
    fn touched(&self, path: &str) -> bool {
        self.removed.iter().any(|removed| {
            path == removed
                || path
                    .strip_prefix(removed.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
                || removed
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    }
}

/// Parses one pool, repeatedly: each problem found is recorded and the offending value removed,
/// so that the next parse finds the next problem.
fn parse_pool(mut tree: serde_json::Value, index: usize) -> ParsedPool {
    use serde_path_to_error::Segment;
    let prefix = format!("pools[{index}]");
    let mut parsed = ParsedPool {
        pool: None,
        errors: Vec::new(),
        removed: Vec::new(),
    };
    // Elements removed from lists, by the list's path, as original indices: later errors in
    // the same list are reported at the index the user wrote.
    let mut removed_elements: HashMap<String, Vec<usize>> = HashMap::new();
    for _ in 0..100 {
        let error = match serde_path_to_error::deserialize::<_, PoolConfig>(tree.clone()) {
            Ok(mut pool) => {
                pool.index = index;
                parsed.pool = Some(pool);
                return parsed;
            }
            Err(error) => error,
        };
        let segments: Vec<Segment> = error.path().iter().cloned().collect();
        let message = error.into_inner().to_string();
        // Render the path with original list indices, and the JSON pointer with current ones.
        let mut path = prefix.clone();
        let mut pointer = String::new();
        let mut original_indices = Vec::new();
        for segment in &segments {
            match segment {
                Segment::Map { key } => {
                    path.push('.');
                    path.push_str(key);
                    pointer.push('/');
                    pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                }
                Segment::Seq { index: current } => {
                    let mut original = *current;
                    let mut removed = removed_elements.get(&path).cloned().unwrap_or_default();
                    removed.sort_unstable();
                    for r in removed {
                        if r <= original {
                            original += 1;
                        }
                    }
                    original_indices.push((path.clone(), original));
                    path.push_str(&format!("[{original}]"));
                    pointer.push_str(&format!("/{current}"));
                }
                Segment::Enum { variant } => {
                    path.push('.');
                    path.push_str(variant);
                }
                Segment::Unknown => path.push_str(".?"),
            }
        }
        if let Some(key) = unknown_field(&message) {
            let expected = expected_fields(&message);
            let known: Vec<&str> = expected.iter().map(String::as_str).collect();
            // The path names the unknown key itself; make sure it does.
            let key_segment =
                matches!(segments.last(), Some(Segment::Map { key: last }) if *last == key);
            if !key_segment {
                path.push('.');
                path.push_str(&key);
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            let suggestion = did_you_mean(&key, &known);
            let suggestion = suggestion
                .split_once(';')
                .map_or(String::new(), |(_, rest)| format!(";{rest}"));
            parsed.errors.push(FieldError::new(
                path.clone(),
                format!(
                    "unknown key{suggestion}{}",
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!(" (keys here: {})", known.join(", "))
                    }
                ),
            ));
            let Some((parent, _)) = pointer.rsplit_once('/') else {
                return parsed;
            };
            let Some(node) = tree.pointer_mut(parent).and_then(|n| n.as_object_mut()) else {
                return parsed;
            };
            node.remove(&key);
            parsed.removed.push(path);
            continue;
        }
        // An invalid id stands in as a placeholder, so the rest of the pool is still checked.
        if matches!(segments.as_slice(), [Segment::Map { key }] if key == "id")
            && let Some(map) = tree.as_object_mut()
        {
            parsed
                .errors
                .push(FieldError::new(path.clone(), friendly(&message)));
            map.insert("id".to_string(), serde_json::Value::from(INVALID_ID));
            parsed.removed.push(path);
            continue;
        }
        // A required key whose value was refused above is missing only because of that.
        let knock_on = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .is_some_and(|field| parsed.removed.contains(&format!("{path}.{field}")));
        if !knock_on {
            parsed
                .errors
                .push(FieldError::new(path.clone(), friendly(&message)));
        }
        if segments.is_empty() {
            // The pool itself (a required key missing, or not a mapping): nothing to retry.
            return parsed;
        }
        let Some((parent_pointer, last)) = pointer.rsplit_once('/') else {
            return parsed;
        };
        let last = last.replace("~1", "/").replace("~0", "~");
        match tree.pointer_mut(parent_pointer) {
            Some(serde_json::Value::Object(map)) => {
                map.remove(&last);
            }
            Some(serde_json::Value::Array(list)) => {
                let Ok(current) = last.parse::<usize>() else {
                    return parsed;
                };
                if current < list.len() {
                    list.remove(current);
                }
                if let Some((list_path, original)) = original_indices.last() {
                    removed_elements
                        .entry(list_path.clone())
                        .or_default()
                        .push(*original);
                }
            }
            _ => return parsed,
        }
        parsed.removed.push(path);
    }
    parsed
}

/// The key of serde's "unknown field `x`, expected …" message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// The keys serde lists after "expected" in an unknown-field message.
fn expected_fields(message: &str) -> Vec<String> {
    let Some((_, expected)) = message.split_once("expected") else {
        return Vec::new();
    };
    expected
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, key)| key.to_string())
        .collect()
}

/// What `devices[N]` holds.
const DEVICE_WHAT: &str = "must be a GPU index from 0 to 1023 or a device id (GPU-…, MIG-…)";

/// serde's messages, with the untagged enums' opaque wording replaced.
fn friendly(message: &str) -> String {
    if message.contains("untagged enum DeviceId") {
        return DEVICE_WHAT.to_string();
    }
    // YAML's plain scalars that are not text: `no`, `on`, `y` become booleans and `1.10`
    // becomes the number 1.1 before any field sees them.
    let wants_text = message
        .split_once(", expected ")
        .is_some_and(|(_, expected)| expected.contains("string"));
    if wants_text && message.starts_with("invalid type: boolean") {
        return format!(
            "{message}; YAML reads unquoted yes/no/on/off/y/n/true/false as booleans: quote the value (\"no\")"
        );
    }
    if wants_text
        && (message.starts_with("invalid type: floating point")
            || message.starts_with("invalid type: integer"))
    {
        return format!(
            "{message}; YAML reads an unquoted number as a number (1.10 becomes 1.1): quote the value (\"1.10\")"
        );
    }
    message.to_string()
}

/// Checks what types alone cannot (required fields of the chosen mode, values that must agree),
/// without any host access.
/// The rules between `provisioning.model`'s fields: `revision`, `include` and `exclude` belong
/// to `hf:` references, globs and a checksum to a repository or a file respectively.
fn validate_model(model: &ModelConfig, push: &mut impl FnMut(&str, String)) {
    let hf = match &model.reference {
        Some(ModelRef::HuggingFace(hf)) => Some(hf),
        _ => None,
    };
    if let Some(revision) = &model.revision {
        match hf {
            None => push(
                "provisioning.model.revision",
                "applies to hf: references only; a file or URL has no revision".to_string(),
            ),
            Some(hf) => {
                if let Err(message) = crate::model_ref::check_revision(revision) {
                    push("provisioning.model.revision", message);
                }
                if let Some(written) = &hf.revision
                    && written != revision
                {
                    push(
                        "provisioning.model.revision",
                        format!(
                            "`{revision}` disagrees with `@{written}` in provisioning.model.ref; keep one of them"
                        ),
                    );
                }
            }
        }
    }
    let is_repository = hf.is_some_and(|hf| hf.path.is_none());
    for (field, globs) in [("include", &model.include), ("exclude", &model.exclude)] {
        if globs.is_empty() {
            continue;
        }
        if !is_repository {
            push(
                &format!("provisioning.model.{field}"),
                "applies to a whole Hugging Face repository (hf:org/repo) only; a single file needs no globs".to_string(),
            );
        }
        for (index, glob) in globs.iter().enumerate() {
            if glob.is_empty() || glob.starts_with('/') || glob.split('/').any(|p| p == "..") {
                push(
                    &format!("provisioning.model.{field}[{index}]"),
                    format!("`{glob}` is not a glob of repository paths (no leading `/`, no `..`)"),
                );
            }
        }
    }
    if is_repository && model.checksum.is_some() {
        push(
            "provisioning.model.checksum",
            "a whole repository has no single checksum; name one file (hf:org/repo/file.gguf) or remove the checksum (the hub's sha256 of every LFS file is verified)".to_string(),
        );
    }
}

fn validate_pool(pool: &PoolConfig, errors: &mut Vec<FieldError>) {
    let p = &pool.provisioning;
    let mode = pool.mode();
    let mut push = |relative: &str, message: String| {
        errors.push(FieldError::new(pool.field(relative), message));
    };
    let mut seen_ports = Vec::new();
    for (index, port) in p.ports.iter().enumerate() {
        if *port != 0 && seen_ports.contains(port) {
            push(
                &format!("provisioning.ports[{index}]"),
                format!("port {port} is listed twice"),
            );
        }
        seen_ports.push(*port);
    }
    for (name, value) in &p.env {
        if value
            .plain()
            .is_some_and(|value| value.expose().contains(['\n', '\r', '\0']))
        {
            push(
                &format!("provisioning.env.{name}"),
                "the value holds a line break or a NUL byte, which an environment file cannot carry"
                    .to_string(),
            );
        }
    }
    if let Some(model) = &p.model {
        validate_model(model, &mut push);
    }
    for (index, flag) in p.flags.iter().enumerate() {
        if flag.contains('\0') {
            push(
                &format!("provisioning.flags[{index}]"),
                "contains a NUL byte".to_string(),
            );
        }
    }
    for (index, device) in pool.devices.iter().enumerate() {
        if let DeviceId::Index(n) = device
            && !ranges::DEVICE_INDEX.contains(&u64::from(*n))
        {
            push(
                &format!("devices[{index}]"),
                format!("{DEVICE_WHAT}, not {n}"),
            );
        }
    }
    for (index, value) in pool.tensor_split.iter().flatten().enumerate() {
        if *value != 0.0 && !ranges::TENSOR_SPLIT.contains(value) {
            push(
                &format!("tensor_split[{index}]"),
                format!(
                    "must be 0 or a proportion from 0.000001 to 1000000 (a share of the model per device), not {value}"
                ),
            );
        }
    }
    match mode {
        Mode::External => {
            if p.ports.first() == Some(&0) {
                push(
                    "provisioning.ports[0]",
                    "an external engine listens on a known port; 0 (a free port chosen at launch) only applies to engines this tool starts".to_string(),
                );
            }
        }
        Mode::Source => {
            if let Some(source) = &p.source
                && source.repo.is_some()
                && source.reference.is_none()
            {
                push(
                    "provisioning.source.ref",
                    "required when source.repo is set (the pinned default ref belongs to the default repository)".to_string(),
                );
            }
        }
        Mode::Container => {
            if let Some(container) = &p.container
                && container.image.is_none()
                && (container.tag.is_some() || container.digest.is_some())
            {
                push(
                    "provisioning.container.image",
                    "required when container.tag or container.digest is set (the pinned default tag belongs to the default image)".to_string(),
                );
            }
            if pool.engine != Engine::Vllm
                && p.container.as_ref().is_some_and(|c| c.model_arg.is_some())
            {
                push(
                    "provisioning.container.model_arg",
                    format!(
                        "only vLLM takes its model either way; {} takes it one way, so remove model_arg",
                        pool.engine.label()
                    ),
                );
            }
        }
        Mode::Package => match p.package.as_ref().and_then(|pk| pk.version.as_ref()) {
            Some(_) => {}
            None => push(
                "provisioning.package.version",
                "required for mode package: an exact version (list them with `apt-cache madison NAME`, `pacman -Si NAME` or `dnf list --showduplicates NAME`)".to_string(),
            ),
        },
        Mode::Binary => {
            let binary = p.binary.clone().unwrap_or_default();
            if binary.url.is_none() {
                push(
                    "provisioning.binary.url",
                    "required for mode binary: the pinned download URL".to_string(),
                );
            }
            if binary.checksum.is_none() {
                push(
                    "provisioning.binary.checksum",
                    "required for mode binary: sha256:<64 hex>, sha512:<128 hex> or blake3:<64 hex> of the download".to_string(),
                );
            }
            if let Some(url) = &binary.url
                && !matches!(url.scheme().as_str(), "https" | "http" | "file")
            {
                push(
                    "provisioning.binary.url",
                    "must be an https:// URL (http:// and file:// only for local mirrors)"
                        .to_string(),
                );
            }
        }
    }
    let has_model_ref = p.model.as_ref().is_some_and(|m| m.reference.is_some());
    if mode != Mode::External && !has_model_ref && pool.model.is_none() {
        push(
            "provisioning.model.ref",
            "required (or set the pool's `model` to a file name in the models directory)"
                .to_string(),
        );
    }
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
        assert_eq!(pool.mode(), Mode::Source);
        let source = pool.provisioning.source.as_ref().expect("source");
        assert_eq!(
            source.reference.as_ref().map(GitRef::as_str),
            Some("703f9e3")
        );
        assert_eq!(source.build.cmake_flags.len(), 4);
        assert_eq!(pool.devices, vec![DeviceId::Index(0)]);
        assert_eq!(pool.provisioning.flags[3], "1");
    }

    #[test]
    fn yaml_errors_name_the_file_and_explain_a_duplicate_key() {
        let error = Config::parse(
            "pools:\n  - id: a\n    engine: llamacpp\n    engine: vllm\n",
            Format::Yaml,
            "dup.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("cannot read configuration dup.yaml: line 4"),
            "{error}"
        );
        assert!(error.contains("--> dup.yaml:4:5"), "{error}");
        assert!(error.contains("given twice in one mapping"), "{error}");
        assert!(
            !error.contains("DuplicateKeyPolicy") && !error.contains("<input>"),
            "{error}"
        );
    }

    #[test]
    fn an_empty_pool_list_is_an_error_that_says_what_to_add() {
        let errors = errors_of("pools: []\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("pools: empty"), "{errors:?}");
        assert!(errors[0].contains("orchctl config schema"), "{errors:?}");
    }

    #[test]
    fn yaml_words_and_numbers_where_text_is_wanted_get_the_quoting_hint() {
        let errors = errors_of(
            "pools:\n  - id: no\n    engine: llamacpp\n    provisioning:\n      mode: package\n      package: { name: x, version: 1.10 }\n      model: { ref: \"file:/m.gguf\" }\n",
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("pools[0].id: invalid type: boolean")
                    && e.contains("quote the value (\"no\")")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("pools[0].provisioning.package.version")
                    && e.contains("1.10 becomes 1.1")),
            "{errors:?}"
        );
        // A boolean where a boolean is wanted is fine; a string where a number is wanted gets
        // no quoting hint.
        let errors = errors_of(
            "pools:\n  - id: p\n    engine: llamacpp\n    ctx: many\n    provisioning:\n      allow_package_installs: no\n      model: { ref: \"file:/m.gguf\" }\n",
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(!errors[0].contains("quote"), "{errors:?}");
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
    fn llama_orch_minimal_pools_parse_with_defaults_and_nulls() {
        let text = r#"
catalog: { trust_policy: { require_signatures: false } }
pools:
  - id: minimal
    engine: llamacpp
    model: sha256:0123abcd
    devices: [0]
  - id: nulls
    engine: vllm
    model: Qwen/Qwen2.5-0.5B-Instruct
    devices: null
    quant: null
    ctx: null
    queue: { capacity: 8 }
    admission: { policy: reject }
    timeouts: { first_token_ms: 1000 }
    preload: true
    sampler_profile_version: v1
    require_same_engine_version: true
    provisioning:
      mode: null
      allow_package_installs: null
      source: null
      container: { image: null, tag: null }
      ports: [0]
      env: null
      flags: null
"#;
        let config = Config::parse(text, Format::Yaml, "orch.yaml").expect("valid");
        assert_eq!(config.pools[0].mode(), Mode::Source);
        assert_eq!(config.pools[1].mode(), Mode::Container);
        assert_eq!(config.pools[1].provisioning.ports, vec![0]);
        assert!(config.catalog.is_some());
        assert_eq!(config.pools[1].index, 1);
    }

    #[test]
    fn a_repo_without_a_ref_names_the_ref() {
        let text = EXAMPLE.replace("        ref: 703f9e3\n", "");
        assert_eq!(
            errors_of(&text),
            vec![
                "pools[0].provisioning.source.ref: required when source.repo is set (the pinned default ref belongs to the default repository)"
            ]
        );
    }

    #[test]
    fn unknown_engine_names_the_field_and_choices() {
        let text = EXAMPLE.replace("engine: llamacpp", "engine: ollama");
        let message = Config::parse(&text, Format::Yaml, "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(message.contains("pools[0].engine"), "{message}");
        assert!(message.contains("ollama"), "{message}");
        assert!(message.contains("llamacpp"), "{message}");
    }

    #[test]
    fn misspelt_keys_get_a_did_you_mean() {
        let text = EXAMPLE.replace("cmake_flags:", "cmake_flag:");
        assert_eq!(
            errors_of(&text),
            vec![
                "pools[0].provisioning.source.build.cmake_flag: unknown key; did you mean `cmake_flags`? (keys here: cmake_flags, generator, cache_dir)"
            ]
        );
        let text = EXAMPLE.replace("pools:", "pool:");
        let errors = errors_of(&text);
        assert!(
            errors[0].contains("unknown top-level section `pool`; did you mean `pools`?"),
            "{errors:?}"
        );
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
      ports: [8080, 8080]
      env: { "1X": "y" }
      source:
        ref: "-rf"
        build:
          cmake_flags: ["--fresh", "-DOK=1", "-DNOVALUE"]
  - id: "dup"
    engine: vllm
    provisioning:
      mode: binary
      model: { ref: "file:/m" }
  - id: "dup"
    engine: vllm
    model: m
"#;
        assert_eq!(
            errors_of(text),
            vec![
                "pools[0].id: must be 1-64 characters of letters, digits, `.`, `_` or `-`, not starting with `.` or `-`",
            ]
            .into_iter()
            .chain([
                "pools[0].provisioning.env.1X: `1X` is not an environment variable name (letters, digits and `_`, not starting with a digit)",
                "pools[0].provisioning.source.build.cmake_flags[0]: `--fresh` is not a CMake cache entry; write -DNAME=VALUE (the generator has its own key, source.build.generator)",
                "pools[0].provisioning.source.build.cmake_flags[2]: `-DNOVALUE` has no value; write -DNAME=VALUE",
                "pools[0].provisioning.source.ref: `-rf` is not a valid git tag, branch or commit name",
                "pools[0].provisioning.ports[1]: port 8080 is listed twice",
                "pools[0].provisioning.model.ref: required (or set the pool's `model` to a file name in the models directory)",
                "pools[1].provisioning.binary.url: required for mode binary: the pinned download URL",
                "pools[1].provisioning.binary.checksum: required for mode binary: sha256:<64 hex>, sha512:<128 hex> or blake3:<64 hex> of the download",
                "pools[2].id: duplicate id `dup` (also pools[1])",
            ])
            .collect::<Vec<_>>()
        );
    }

    #[test]
    fn env_values_are_never_echoed() {
        let text = EXAMPLE.replace("env: {}", "env: { TOKEN: \"line1\\nsk-secret-value\" }");
        let errors = errors_of(&text).join("\n");
        assert!(
            errors.contains("pools[0].provisioning.env.TOKEN"),
            "{errors}"
        );
        assert!(!errors.contains("sk-secret-value"), "{errors}");
    }

    #[test]
    fn env_values_can_be_read_from_the_environment_or_a_file() {
        let text = EXAMPLE.replace(
            "env: {}",
            "env: { HF_TOKEN: { from_env: ORCH_HF }, KEY: { from_file: /run/secrets/key }, PLAIN: sk-plain-value, N: 4 }",
        );
        let config = Config::parse(&text, Format::Yaml, "c.yaml").expect("valid");
        let env = &config.pools[0].provisioning.env;
        let name = |n: &str| n.parse::<EnvName>().unwrap();
        assert_eq!(env[&name("HF_TOKEN")], EnvValue::FromEnv(name("ORCH_HF")));
        assert_eq!(
            env[&name("KEY")],
            EnvValue::FromFile(PathBuf::from("/run/secrets/key"))
        );
        assert_eq!(
            env[&name("PLAIN")].plain().map(Secret::expose),
            Some("sk-plain-value")
        );
        assert_eq!(env[&name("N")].plain().map(Secret::expose), Some("4"));
        // References serialise as themselves, values as <redacted>.
        let json = serde_json::to_string(&config).unwrap();
        assert!(
            json.contains(r#""HF_TOKEN":{"from_env":"ORCH_HF"}"#),
            "{json}"
        );
        assert!(
            json.contains(r#""KEY":{"from_file":"/run/secrets/key"}"#),
            "{json}"
        );
        assert!(json.contains(r#""PLAIN":"<redacted>""#), "{json}");
        assert!(!json.contains("sk-plain-value"), "{json}");
        // TOML reads the same.
        let toml = r#"
[[pools]]
id = "p"
engine = "llamacpp"
model = "m.gguf"
[pools.provisioning.env]
HF_TOKEN = { from_env = "ORCH_HF" }
"#;
        let config = Config::parse(toml, Format::Toml, "c.toml").expect("valid");
        assert_eq!(
            config.pools[0].provisioning.env[&name("HF_TOKEN")],
            EnvValue::FromEnv(name("ORCH_HF"))
        );
    }

    #[test]
    fn bad_env_references_name_the_key() {
        let errors = errors_of(&EXAMPLE.replace(
            "env: {}",
            "env: { A: { from_env: 1BAD }, B: { from_file: relative/hf }, C: { form_env: X }, D: { from_env: X, from_file: /x }, E: {}, F: [sk-in-a-list] }",
        ));
        let expected = [
            "pools[0].provisioning.env.A: from_env: `1BAD` is not an environment variable name",
            "pools[0].provisioning.env.B: from_file: `relative/hf` is not an absolute path",
            "pools[0].provisioning.env.C: `form_env` is not a way to give a value (did you mean `from_env`?)",
            "pools[0].provisioning.env.D: give one of from_env and from_file, not both",
            "pools[0].provisioning.env.E: an empty mapping",
            "pools[0].provisioning.env.F: invalid type: sequence",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(error.starts_with(expected), "{error}\nexpected: {expected}");
        }
        assert!(!errors.join("\n").contains("sk-in-a-list"), "{errors:?}");
    }

    #[test]
    fn numbers_out_of_their_range_name_the_field_and_the_range() {
        let pool = |fields: &str| {
            format!("pools:\n  - id: p\n    engine: llamacpp\n    model: m.gguf\n{fields}")
        };
        let cases = [
            (
                "    ctx: 0\n",
                "pools[0].ctx: must be a whole number of tokens from 1 to 16777216, not 0",
            ),
            (
                "    ctx: 16777217\n",
                "pools[0].ctx: must be a whole number of tokens from 1 to 16777216, not 16777217",
            ),
            (
                "    ctx: -1\n",
                "pools[0].ctx: must be a whole number of tokens from 1 to 16777216, not -1",
            ),
            (
                "    ctx: 4096.5\n",
                "pools[0].ctx: must be a whole number of tokens from 1 to 16777216, not 4096.5",
            ),
            (
                "    ctx: 18446744073709551615\n",
                "pools[0].ctx: must be a whole number of tokens from 1 to 16777216, not 18446744073709551615",
            ),
            (
                "    ctx: 99999999999999999999999999\n",
                "pools[0].ctx: must be a whole number of tokens from 1 to 16777216",
            ),
            (
                "    ctx: many\n",
                "pools[0].ctx: invalid type: string \"many\", expected a whole number of tokens from 1 to 16777216",
            ),
            (
                "    provisioning: { ports: [8080, 65536] }\n",
                "pools[0].provisioning.ports[1]: must be a port from 0 to 65535 (0: a free port chosen at launch), not 65536",
            ),
            (
                "    provisioning: { ports: [-1] }\n",
                "pools[0].provisioning.ports[0]: must be a port from 0 to 65535 (0: a free port chosen at launch), not -1",
            ),
            (
                "    devices: [0, 1024]\n",
                "pools[0].devices[1]: must be a GPU index from 0 to 1023 or a device id (GPU-…, MIG-…), not 1024",
            ),
            (
                "    devices: [4294967296]\n",
                "pools[0].devices[0]: must be a GPU index from 0 to 1023 or a device id (GPU-…, MIG-…)",
            ),
            (
                "    devices: [-1]\n",
                "pools[0].devices[0]: must be a GPU index from 0 to 1023 or a device id (GPU-…, MIG-…)",
            ),
            (
                "    tensor_split: [1, -1]\n",
                "pools[0].tensor_split[1]: must be 0 or a proportion from 0.000001 to 1000000 (a share of the model per device), not -1",
            ),
            (
                "    tensor_split: [1e300]\n",
                "pools[0].tensor_split[0]: must be 0 or a proportion from 0.000001 to 1000000",
            ),
            (
                "    tensor_split: [1e-300]\n",
                "pools[0].tensor_split[0]: must be 0 or a proportion from 0.000001 to 1000000",
            ),
            (
                "    provisioning: { binary: { size: 0 } }\n",
                "pools[0].provisioning.binary.size: must be a whole number of bytes from 1 to 68719476736 (64 GiB), not 0",
            ),
            (
                "    provisioning: { binary: { size: 68719476737 } }\n",
                "pools[0].provisioning.binary.size: must be a whole number of bytes from 1 to 68719476736 (64 GiB), not 68719476737",
            ),
        ];
        for (fields, expected) in cases {
            let errors = errors_of(&pool(fields));
            assert!(
                errors.iter().any(|e| e.starts_with(expected)),
                "{fields}: {errors:#?}\nexpected: {expected}"
            );
        }
        // The ends of each range are accepted.
        let text = pool(
            "    ctx: 16777216\n    devices: [0, 1023, GPU-0a]\n    tensor_split: [0, 0.000001, 1000000]\n    provisioning: { ports: [0, 65535], binary: { size: 68719476736 } }\n",
        );
        let config = Config::parse(&text, Format::Yaml, "c.yaml").expect("valid");
        assert_eq!(config.pools[0].ctx, Some(16_777_216));
        assert_eq!(config.pools[0].provisioning.ports, vec![0, 65535]);
        // TOML reads the same ranges.
        let toml = "[[pools]]\nid = \"p\"\nengine = \"llamacpp\"\nmodel = \"m\"\nctx = 9223372036854775807\n";
        let error = Config::parse(toml, Format::Toml, "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("pools[0].ctx: must be a whole number of tokens from 1 to 16777216"),
            "{error}"
        );
    }

    #[test]
    fn the_schema_describes_env_references() {
        let schema = Config::json_schema();
        assert!(
            schema.contains("from_env") && schema.contains("from_file"),
            "{schema}"
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
    fn schema_mentions_every_section() {
        let schema = Config::json_schema();
        for key in [
            "pools",
            "provisioning",
            "cmake_flags",
            "allow_package_installs",
            "allow_cpu_fallback",
            "checksum",
            "catalog",
        ] {
            assert!(schema.contains(key), "schema lacks {key}");
        }
    }
}
