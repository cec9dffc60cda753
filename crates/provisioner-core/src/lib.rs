//! # provisioner-core
//!
//! The pure domain core of engine-provisioner and the API boundary that pool-managerd embeds.
//! It holds the domain vocabulary, the configuration types (llama-orch's pool YAML/TOML) parsed
//! into types that carry their rules, typed [`Plan`]s with stable digests, the
//! [`PreparedEngine`] handed to a supervisor, the [`EngineProvisioner`] trait, and the ports
//! (traits) that adapters implement.
//!
//! **Invariant:** this crate does no I/O. It has no tokio runtime, no process, network or file
//! system calls; parsing takes strings and hashing takes bytes. Everything that touches the host
//! is behind a port.
//!
//! Modules form layers, each importing only those above it: `vocabulary`, `error`, `text` and
//! `environment` (the allowlists of variables each kind of spawned program inherits);
//! then the values (`names`, `secret`, `checksum`, `cmake`, `image`, `model_ref`); then the
//! tables (`packages`, `tools`); then `config`, `layout`, `prepared`, `ports`, `plan` and
//! `provisioner`. A test checks that no import circle appears.

pub mod checksum;
pub mod cmake;
pub mod config;
pub mod environment;
pub mod error;
pub mod image;
pub mod layout;
pub mod model_ref;
pub mod names;
pub mod packages;
pub mod plan;
pub mod ports;
pub mod prepared;
pub mod provisioner;
pub mod secret;
pub mod text;
pub mod tools;
pub mod vocabulary;

pub use checksum::{Algorithm, Checksum};
pub use cmake::{BuildFetch, CacheEntries, CacheEntry, OptionRename, TreeRule};
pub use config::{Config, EnvValue, Format, PoolConfig};
pub use error::{Error, ErrorCode, FieldError, Result};
pub use image::ImageReference;
pub use layout::{Layout, RunRecord};
pub use model_ref::{HfRef, ModelRef};
pub use names::{
    ArchiveMember, Digest, EnvName, Generator, GitRef, ImageTag, PackageName, PackageVersion,
    PoolId, TagOrDigest,
};
pub use packages::package_engine_version;
pub use plan::{ModelStaging, Plan, Step};
pub use ports::*;
pub use prepared::{
    BackendFinding, BackendVerdict, EngineMetadata, FALLBACK_HINT, FlagProbe, FoundBackend, GpuAsk,
    IdentityCheck, PreparedEngine, Probe, ProbeAuth, SourceProvenance, VersionProbe,
    binary_engine_version, external_engine_version, ggml_reported_backend, judge_backend,
    source_engine_version,
};
pub use provisioner::EngineProvisioner;
pub use secret::{
    GitRemote, PackageRepo, REDACTED, SafeUrl, Secret, csv_fields, csv_join, redact_urls,
};
pub use text::{command_line, human_bytes, shell_quote, sudo_prefix};
pub use tools::{HeaderRequirement, ToolRequirement};
pub use vocabulary::{Backend, DeviceId, Distro, Engine, ManagerKind, Mode, RuntimeKind};
