//! # provisioner-core
//!
//! The pure domain core of engine-provisioner and the API boundary that pool-managerd embeds.
//! It holds the configuration types (llama-orch's pool YAML/TOML) and their validation, typed
//! [`Plan`]s with stable digests, the [`PreparedEngine`] handed to a supervisor, the
//! [`EngineProvisioner`] trait, and the ports (traits) that adapters implement.
//!
//! **Invariant:** this crate does no I/O. It has no tokio runtime, no process, network or file
//! system calls; parsing takes strings and hashing takes bytes. Everything that touches the host
//! is behind a port.

pub mod checksum;
pub mod cmake;
pub mod config;
pub mod error;
pub mod layout;
pub mod packages;
pub mod plan;
pub mod ports;
pub mod prepared;
pub mod provisioner;
pub mod tools;

pub use checksum::{Algorithm, Checksum};
pub use config::{Config, Engine, Format, Mode, PoolConfig};
pub use error::{Error, ErrorCode, FieldError, Result};
pub use layout::Layout;
pub use packages::{ManagerKind, package_engine_version};
pub use plan::{Plan, Step, ToolRequirement};
pub use ports::*;
pub use prepared::{
    Backend, EngineMetadata, IdentityCheck, PreparedEngine, Probe, SourceProvenance,
    binary_engine_version, source_engine_version,
};
pub use provisioner::EngineProvisioner;
