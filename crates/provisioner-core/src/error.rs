//! The one error type of the core, shared by every port so that adapters can be used as trait
//! objects. Each variant carries what a user needs to act on it (path, URL, expected and actual
//! values) and, separately from the message, a copy-paste ready hint.

use std::path::PathBuf;

/// Result alias used throughout the core and by every port.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One problem found while validating a configuration, located by its field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path such as `pools[0].provisioning.source.ref`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Everything that can go wrong while planning or preparing an engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration text could not be parsed at all (syntax or type error).
    #[error("cannot read configuration {origin}: {message}")]
    ConfigSyntax {
        /// File name or `<inline>`.
        origin: String,
        /// Parser message, including the line or field path where known.
        message: String,
    },
    /// The configuration parsed but is not valid; every problem is listed.
    #[error("invalid configuration:\n{}", list(.errors))]
    ConfigInvalid {
        /// All problems found, in document order.
        errors: Vec<FieldError>,
    },
    /// No pool with that id in the configuration.
    #[error("no pool `{id}` in the configuration (pools: {})", .known.join(", "))]
    UnknownPool {
        /// The id asked for.
        id: String,
        /// The ids that exist.
        known: Vec<String>,
    },
    /// The configuration holds several pools and none was chosen.
    #[error("the configuration holds {} pools; choose one (pools: {})", .known.len(), .known.join(", "))]
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
    /// A tool needed by the chosen mode is not installed.
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
    #[error("cannot start `{program}`: {message}")]
    Spawn {
        /// Program name.
        program: String,
        /// OS error text.
        message: String,
    },
    /// Fetching or resolving source code failed (unknown ref, unreachable repository).
    #[error("source {repo}@{reference}: {message}")]
    Source {
        /// Repository URL.
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
        /// The reference from the configuration.
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
    #[error("{operation} {}: {message}", .path.display())]
    Io {
        /// What was being done (`create`, `rename`, `lock`, ...).
        operation: String,
        /// The path involved.
        path: PathBuf,
        /// OS error text.
        message: String,
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
            | Error::CommandFailed { hint, .. }
            | Error::Source { hint, .. }
            | Error::Download { hint, .. }
            | Error::Package { hint, .. }
            | Error::BuildCheck { hint, .. }
            | Error::Model { hint, .. }
            | Error::PolicyDenied { hint, .. }
            | Error::Engine { hint, .. }
            | Error::PortUnavailable { hint, .. } => hint.as_deref(),
            Error::UnknownPool { .. } | Error::AmbiguousPool { .. } => {
                Some("pass --pool ID with one of the ids listed")
            }
            _ => None,
        }
    }

    /// A stable, machine-readable code for the error class, also used for exit codes.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::ConfigSyntax { .. }
            | Error::ConfigInvalid { .. }
            | Error::UnknownPool { .. }
            | Error::AmbiguousPool { .. } => ErrorCode::Config,
            Error::UnsupportedMode { .. } | Error::PortUnavailable { .. } => ErrorCode::Unsupported,
            Error::MissingTool { .. } => ErrorCode::Preflight,
            Error::Source { .. } | Error::Download { .. } => ErrorCode::Source,
            Error::CommandFailed { .. } | Error::Spawn { .. } | Error::BuildCheck { .. } => {
                ErrorCode::Build
            }
            Error::Model { .. } => ErrorCode::Model,
            Error::Package { .. } => ErrorCode::Package,
            Error::PolicyDenied { .. } => ErrorCode::Policy,
            Error::Io { .. } => ErrorCode::Io,
            Error::Engine { .. } => ErrorCode::Engine,
            Error::Cancelled => ErrorCode::Cancelled,
        }
    }

    /// Builds an [`Error::Io`] from a `std::io::Error`.
    pub fn io(operation: &str, path: impl Into<PathBuf>, error: &std::io::Error) -> Self {
        Error::Io {
            operation: operation.to_string(),
            path: path.into(),
            message: error.to_string(),
        }
    }
}

/// Error classes with stable names and process exit codes (documented in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Configuration unreadable or invalid.
    Config,
    /// Engine/mode pair or port not offered.
    Unsupported,
    /// A required tool is missing.
    Preflight,
    /// Source or a download could not be fetched, resolved or verified.
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
    /// Cancelled by the user.
    Cancelled,
}

impl ErrorCode {
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
            ErrorCode::Cancelled => 130,
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
        format!("\nlast lines of output:\n{}", indented.join("\n"))
    }
}
