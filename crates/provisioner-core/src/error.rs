//! The one error type of the core, shared by every port so that adapters can be used as trait
//! objects. Each variant carries what a user needs to act on it (path, URL, expected and actual
//! values) and, separately from the message, a copy-paste ready hint. Every variant maps to one
//! [`ErrorCode`], and every code to one documented process exit code (the README's table; a
//! test keeps the two equal).

use std::path::PathBuf;

/// Result alias used throughout the core and by every port.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How many pool ids a message lists before it says how many more there are.
const POOLS_SHOWN: usize = 5;

/// One problem found while validating a configuration, located by its field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path such as `pools[0].provisioning.source.ref`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Everything that can go wrong while planning or preparing an engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file is missing or cannot be read.
    #[error("cannot read configuration {}: {source}", .path.display())]
    ConfigUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration text could not be parsed at all (syntax error).
    #[error("cannot read configuration {origin}: {message}")]
    ConfigSyntax {
        /// File name or `<inline>`.
        origin: String,
        /// Parser message, including the line where known.
        message: String,
    },
    /// The configuration parsed but is not valid; every problem is listed.
    #[error("invalid configuration:\n{}", list(.errors))]
    ConfigInvalid {
        /// All problems found, in document order.
        errors: Vec<FieldError>,
    },
    /// No pool with that id in the configuration.
    #[error("no pool `{id}` in the configuration (pools: {})", pool_list(.known))]
    UnknownPool {
        /// The id asked for.
        id: String,
        /// The ids that exist.
        known: Vec<String>,
    },
    /// The configuration holds several pools and none was chosen.
    #[error("the configuration holds {} pools; choose one (pools: {})", .known.len(), pool_list(.known))]
    AmbiguousPool {
        /// The ids that exist.
        known: Vec<String>,
    },
    /// The engine exists but does not offer this provisioning mode.
    #[error("engine `{engine}` does not support provisioning mode `{mode}` (supported: {})", supported_list(.supported))]
    UnsupportedMode {
        /// Engine name.
        engine: String,
        /// Mode asked for.
        mode: String,
        /// Modes the engine supports in this version.
        supported: Vec<String>,
        /// What to use instead.
        hint: Option<String>,
    },
    /// The pool's engine is run by someone else (`mode: external`): there is nothing to start
    /// or stop.
    #[error(
        "pool `{pool}` is external (mode: external): {action} does not apply to it; its engine at {endpoint} is started and stopped outside this tool"
    )]
    ExternalPool {
        /// Pool id.
        pool: String,
        /// What was asked (`orchctl engine up`).
        action: String,
        /// The endpoint it attaches to.
        endpoint: String,
        /// What to do instead (the exact command that probes it).
        hint: Option<String>,
    },
    /// A tool, driver, daemon or package manager needed by the chosen mode is not installed.
    #[error("{tool} is required to {purpose} but was not found{}", found_elsewhere(.searched))]
    MissingTool {
        /// Program name, e.g. `cmake`.
        tool: String,
        /// Why it is needed.
        purpose: String,
        /// Places searched besides PATH.
        searched: Vec<PathBuf>,
        /// The exact command that installs it.
        hint: Option<String>,
    },
    /// Host setup a mode needs is missing: a driver's configuration, a runtime's component
    /// (an NVIDIA CDI spec for podman, an init binary).
    #[error("{what} is required to {purpose} but is missing")]
    MissingSetup {
        /// What is missing.
        what: String,
        /// Why it is needed.
        purpose: String,
        /// The exact command that sets it up.
        hint: Option<String>,
    },
    /// A process ran but failed.
    #[error("`{command}` failed ({status}){}{}", log_line(.log), tail_block(.tail))]
    CommandFailed {
        /// Program and arguments, shell-quoted for display.
        command: String,
        /// Exit status description.
        status: String,
        /// Last lines of its output.
        tail: String,
        /// Full log, when one was written.
        log: Option<PathBuf>,
        /// What to try.
        hint: Option<String>,
    },
    /// A process could not be started at all.
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        /// Program name.
        program: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Fetching or resolving source code failed (unknown ref, unreachable repository).
    #[error("source {repo}@{reference}: {message}")]
    Source {
        /// Repository, without credentials.
        repo: String,
        /// Tag, branch or commit asked for.
        reference: String,
        /// What went wrong.
        message: String,
        /// What to try.
        hint: Option<String>,
    },
    /// A download failed or did not match its pin (status, stall, truncation, checksum, size).
    #[error("download {url}: {message}")]
    Download {
        /// URL, without credentials.
        url: String,
        /// What went wrong, with expected and actual values where there are some.
        message: String,
        /// What to try.
        hint: Option<String>,
    },
    /// A downloaded archive holds an entry that could escape or harm the install directory (an
    /// absolute path, `..`, a link out of it, a device node) or breaks a cap; nothing of it is
    /// installed.
    #[error("archive {archive}: {message}")]
    HostileArchive {
        /// The archive (its URL without credentials, or its file).
        archive: String,
        /// The entry and what is wrong with it.
        message: String,
    },
    /// The build finished but its result is not what was asked for.
    #[error("build check failed: {message}")]
    BuildCheck {
        /// What was expected and what was found.
        message: String,
        /// What to try.
        hint: Option<String>,
    },
    /// The model could not be made available.
    #[error("model {reference}: {message}")]
    Model {
        /// The reference from the configuration (credentials removed).
        reference: String,
        /// What went wrong.
        message: String,
        /// What to try.
        hint: Option<String>,
    },
    /// Policy forbids the action.
    #[error("policy forbids {action}")]
    PolicyDenied {
        /// The action refused.
        action: String,
        /// The config key or switch that allows it.
        hint: Option<String>,
    },
    /// A package manager could not install, find or verify a package.
    #[error("{manager} package {package}: {message}")]
    Package {
        /// Manager (`apt`, `pacman`, `dnf`, `paru`, `yay`).
        manager: String,
        /// Package, with the version asked for when there is one (`name=version`).
        package: String,
        /// What went wrong, with the available versions or the files found where relevant.
        message: String,
        /// The exact command to run, or the config key to change.
        hint: Option<String>,
    },
    /// A file system operation failed.
    #[error("{operation} {}: {source}", .path.display())]
    Io {
        /// What was being done (`create`, `rename`, `lock`, ...).
        operation: String,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A running engine did not become ready, or is not the build it was given.
    #[error("engine `{pool}`: {message}")]
    Engine {
        /// Pool id.
        pool: String,
        /// What was observed.
        message: String,
        /// Where to look.
        hint: Option<String>,
    },
    /// The pool's engine is already running (perhaps started from another configuration file
    /// that holds a pool of the same id).
    #[error("engine `{pool}` is already running as pid {pid}{}; its log is {}", other_config(.config), .log.display())]
    AlreadyRunning {
        /// Pool id.
        pool: String,
        /// Its process (group) id.
        pid: u32,
        /// Its log file.
        log: PathBuf,
        /// The configuration file it was started from, when that is another file than the one
        /// given now.
        config: Option<PathBuf>,
        /// The command that stops it.
        hint: Option<String>,
    },
    /// A host port the pool's engine needs is held by the running engine of another pool,
    /// started by this tool from any configuration file.
    #[error("host port {port}, which pool `{pool}` needs, is held by the running engine of pool `{holder}` (pid {pid}{})", started_from(.config))]
    PortHeld {
        /// The pool being started.
        pool: String,
        /// The port.
        port: u16,
        /// The pool whose engine holds it.
        holder: String,
        /// That engine's process (group) id.
        pid: u32,
        /// The configuration file that engine was started from, when recorded.
        config: Option<PathBuf>,
        /// The command that stops it.
        hint: Option<String>,
    },
    /// A port needed by this mode is not wired in this build of the provisioner.
    #[error("no {port} adapter is configured")]
    PortUnavailable {
        /// Port name.
        port: String,
        /// How to get one.
        hint: Option<String>,
    },
    /// The operation was cancelled (Ctrl-C, SIGTERM); partial work was removed.
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    /// Fix-it advice, kept apart from the message so that it can be rendered as `hint:` lines.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Error::UnsupportedMode { hint, .. }
            | Error::MissingTool { hint, .. }
            | Error::MissingSetup { hint, .. }
            | Error::CommandFailed { hint, .. }
            | Error::Source { hint, .. }
            | Error::Download { hint, .. }
            | Error::Package { hint, .. }
            | Error::BuildCheck { hint, .. }
            | Error::Model { hint, .. }
            | Error::PolicyDenied { hint, .. }
            | Error::Engine { hint, .. }
            | Error::AlreadyRunning { hint, .. }
            | Error::PortHeld { hint, .. }
            | Error::ExternalPool { hint, .. }
            | Error::PortUnavailable { hint, .. } => hint.as_deref(),
            Error::UnknownPool { .. } | Error::AmbiguousPool { .. } => {
                Some("pass --pool ID with one of the ids listed")
            }
            Error::HostileArchive { .. } => Some(
                "nothing was installed; check that the URL and checksum name the archive you meant, and report a hostile archive to its publisher",
            ),
            Error::ConfigUnreadable { .. }
            | Error::ConfigSyntax { .. }
            | Error::ConfigInvalid { .. }
            | Error::Spawn { .. }
            | Error::Io { .. }
            | Error::Cancelled => None,
        }
    }

    /// A stable, machine-readable code for the error class, also used for exit codes.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::ConfigUnreadable { .. }
            | Error::ConfigSyntax { .. }
            | Error::ConfigInvalid { .. }
            | Error::UnknownPool { .. }
            | Error::AmbiguousPool { .. } => ErrorCode::Config,
            Error::UnsupportedMode { .. }
            | Error::ExternalPool { .. }
            | Error::PortUnavailable { .. } => ErrorCode::Unsupported,
            Error::MissingTool { .. } | Error::MissingSetup { .. } => ErrorCode::Preflight,
            Error::Source { .. } | Error::Download { .. } | Error::HostileArchive { .. } => {
                ErrorCode::Source
            }
            Error::CommandFailed { .. } | Error::Spawn { .. } | Error::BuildCheck { .. } => {
                ErrorCode::Build
            }
            Error::Model { .. } => ErrorCode::Model,
            Error::Package { .. } => ErrorCode::Package,
            Error::PolicyDenied { .. } => ErrorCode::Policy,
            Error::Io { .. } => ErrorCode::Io,
            Error::Engine { .. } => ErrorCode::Engine,
            Error::AlreadyRunning { .. } | Error::PortHeld { .. } => ErrorCode::AlreadyRunning,
            Error::Cancelled => ErrorCode::Cancelled,
        }
    }

    /// Builds an [`Error::Io`].
    pub fn io(operation: &str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            operation: operation.to_string(),
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Io`] for a file whose contents could not be encoded or decoded (JSON).
    pub fn data(
        operation: &str,
        path: impl Into<PathBuf>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::io(operation, path, std::io::Error::other(source))
    }

    /// The same error with every field path of a [`Error::ConfigInvalid`] put under `prefix`
    /// (`pools[3]`); other errors unchanged. Recipes report paths relative to their pool.
    pub fn within(self, prefix: &str) -> Error {
        match self {
            Error::ConfigInvalid { errors } => Error::ConfigInvalid {
                errors: errors
                    .into_iter()
                    .map(|e| {
                        if e.path.starts_with("pools[") {
                            e
                        } else {
                            FieldError::new(format!("{prefix}.{}", e.path), e.message)
                        }
                    })
                    .collect(),
            },
            other => other,
        }
    }

    /// One invalid field.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Error {
        Error::ConfigInvalid {
            errors: vec![FieldError::new(path, message)],
        }
    }
}

/// Error classes with stable names and process exit codes (documented in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Configuration missing, unreadable or invalid; unknown pool.
    Config,
    /// Engine/mode pair, action or port not offered.
    Unsupported,
    /// A required tool, driver, daemon or package manager is missing.
    Preflight,
    /// Source or a download could not be fetched, resolved or verified; a hostile archive.
    Source,
    /// Configure, build or check failed.
    Build,
    /// Model unavailable.
    Model,
    /// Refused by policy.
    Policy,
    /// File system error.
    Io,
    /// Running engine not ready or not the expected build.
    Engine,
    /// A package could not be installed, found or verified.
    Package,
    /// The engine, or another engine holding one of its ports, is already running.
    AlreadyRunning,
    /// Cancelled by the user.
    Cancelled,
}

impl ErrorCode {
    /// Every code, in exit-code order.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::Config,
        ErrorCode::Unsupported,
        ErrorCode::Preflight,
        ErrorCode::Source,
        ErrorCode::Build,
        ErrorCode::Model,
        ErrorCode::Policy,
        ErrorCode::Io,
        ErrorCode::Engine,
        ErrorCode::Package,
        ErrorCode::AlreadyRunning,
        ErrorCode::Cancelled,
    ];

    /// The process exit code the CLI uses for this class.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::Config => 3,
            ErrorCode::Unsupported => 4,
            ErrorCode::Preflight => 5,
            ErrorCode::Source => 6,
            ErrorCode::Build => 7,
            ErrorCode::Model => 8,
            ErrorCode::Policy => 9,
            ErrorCode::Io => 10,
            ErrorCode::Engine => 11,
            ErrorCode::Package => 13,
            ErrorCode::AlreadyRunning => 14,
            ErrorCode::Cancelled => 130,
        }
    }

    /// What the exit code means, as the README's table words it.
    pub fn meaning(self) -> &'static str {
        match self {
            ErrorCode::Config => "configuration missing, unreadable or invalid; unknown pool",
            ErrorCode::Unsupported => "engine/mode pair or action not offered",
            ErrorCode::Preflight => {
                "a required tool, driver, daemon or package manager is missing (preflight)"
            }
            ErrorCode::Source => {
                "source could not be fetched or the ref resolved; a download failed or did not match its checksum; a hostile archive"
            }
            ErrorCode::Build => "configure, build or post-build check failed",
            ErrorCode::Model => "model unavailable, or its scheme is not supported yet",
            ErrorCode::Policy => "refused by policy",
            ErrorCode::Io => "file system error",
            ErrorCode::Engine => "engine did not become ready or is not the prepared build",
            ErrorCode::Package => {
                "a package could not be installed, found or verified, or a package manager or sudo failed (package mode, preflight installs)"
            }
            ErrorCode::AlreadyRunning => {
                "`up`: the pool's engine, or another engine holding one of its ports, is already running"
            }
            ErrorCode::Cancelled => "cancelled",
        }
    }
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first pool ids and how many more there are.
fn pool_list(ids: &[String]) -> String {
    if ids.len() <= POOLS_SHOWN {
        ids.join(", ")
    } else {
        format!(
            "{} and {} more",
            ids[..POOLS_SHOWN].join(", "),
            ids.len() - POOLS_SHOWN
        )
    }
}

fn supported_list(modes: &[String]) -> String {
    if modes.is_empty() {
        "none in this version".to_string()
    } else {
        modes.join(", ")
    }
}

fn found_elsewhere(searched: &[PathBuf]) -> String {
    if searched.is_empty() {
        " on PATH".to_string()
    } else {
        let places: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
        format!(" on PATH nor in {}", places.join(", "))
    }
}

fn other_config(config: &Option<PathBuf>) -> String {
    match config {
        Some(path) => format!(
            ", started from another configuration file, {}",
            path.display()
        ),
        None => String::new(),
    }
}

fn started_from(config: &Option<PathBuf>) -> String {
    match config {
        Some(path) => format!(", started from {}", path.display()),
        None => String::new(),
    }
}

fn log_line(log: &Option<PathBuf>) -> String {
    match log {
        Some(path) => format!("; full log: {}", path.display()),
        None => String::new(),
    }
}

fn tail_block(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        let indented: Vec<String> = tail.lines().map(|l| format!("  | {l}")).collect();
        // The Shell puts the lines that carry an error first when the last lines lost them,
        // separated by a `...` line.
        let heading = if tail.lines().any(|l| l == "...") {
            "output (the lines with errors, then the last lines)"
        } else {
            "last lines of output"
        };
        format!("\n{heading}:\n{}", indented.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_pool_lists_show_five_and_a_count() {
        let known: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
        assert_eq!(
            Error::AmbiguousPool { known }.to_string(),
            "the configuration holds 12 pools; choose one (pools: p0, p1, p2, p3, p4 and 7 more)"
        );
    }

    #[test]
    fn paths_are_put_under_their_pool() {
        let error = Error::invalid("provisioning.flags[0]", "x").within("pools[2]");
        assert_eq!(
            error.to_string(),
            "invalid configuration:\n  - pools[2].provisioning.flags[0]: x"
        );
    }

    #[test]
    fn io_errors_keep_their_source() {
        use std::error::Error as _;
        let error = Error::io(
            "read",
            "/x",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert!(error.source().is_some());
    }
}
