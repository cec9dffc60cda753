//! # adapters-host
//!
//! The host's implementations of the ports that have no natural home in the mode-specific adapter
//! crates:
//!
//! - [`process`]: running processes ([`HostShell`], the only place that spawns them), locating
//!   programs on PATH, detached spawns and process-group signalling.
//! - [`clock`]: the wall clock ([`SystemClock`]).
//! - [`lock`]: cross-process file locks ([`FileLock`]).
//! - [`install`]: the one install transaction every provisioning mode uses ([`InstallRoot`]):
//!   single-flight under a lock, built in a staging directory, renamed into place, and committed by
//!   writing `metadata.json` last.
//! - [`models`]: the local model provisioner ([`LocalModels`]), which resolves `file:` references
//!   and plain paths and verifies checksums.
//! - [`version`]: the one "run it once and ask its version" check installers make before they
//!   commit ([`run_version`]).
//! - [`read`]: reading the files we parse with a size cap ([`read_capped`]): a configuration,
//!   install metadata, indexes and catalogs; devices and FIFOs refused at once.
//! - [`run_files`]: private per-pool files that hold secrets ([`HostRunFiles`], the RunFiles
//!   port).
//! - [`sockets`]: which TCP ports a process group listens on (for engines started on a free port).
//! - [`supervisor`]: a small local process supervisor ([`Supervisor`]) that the CLI uses for
//!   `up`, `down` and `status`.
//!
//! Nothing here prints: progress goes to the [`provisioner_core::Progress`] port and diagnostics to
//! `tracing`.

pub mod clock;
pub mod install;
pub mod lock;
pub mod models;
pub mod process;
pub mod read;
pub mod run_files;
pub mod sockets;
pub mod supervisor;
pub mod version;

pub use clock::SystemClock;
pub use install::{InstallRoot, Installed, Staging};
pub use lock::FileLock;
pub use models::LocalModels;
pub use process::{DetachedSpec, HostShell, group_alive, kill_group, spawn_detached};
pub use read::{read_capped, read_capped_bytes};
pub use run_files::{HostRunFiles, read_env_file};
pub use supervisor::{RunState, Status, Supervisor};
pub use version::{HELP_TIMEOUT, VersionRun, probe_flags, run_version, version_text};

/// Whether this process runs as root (effective uid 0): commands it prints for the user to run
/// carry `sudo` only when it does not.
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}
