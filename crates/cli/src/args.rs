//! Command-line flags (clap lives here and nowhere else in the workspace).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// orchctl — prepare and run LLM inference engines for llama-orch pools.
#[derive(Debug, Parser)]
#[command(name = "orchctl", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Host-wide settings.
    #[command(flatten)]
    pub host: HostArgs,
}

/// Host-wide settings shared by every command. Each has an environment variable, read by
/// `cli::settings` (not by clap) so that an empty variable means unset.
#[derive(Debug, Args)]
pub struct HostArgs {
    /// Cache root for engine builds and the run dir [env: LLAMA_ORCH_CACHE_DIR] [default:
    /// $XDG_CACHE_HOME/llama-orch, else ~/.cache/llama-orch].
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Model cache [env: LLAMA_ORCH_MODELS_DIR] [default: $XDG_CACHE_HOME/models, else
    /// ~/.cache/models].
    #[arg(long, global = true, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// Refuse all network access except local sources (file://, loopback) [env:
    /// LLAMA_ORCH_OFFLINE].
    #[arg(long, global = true)]
    pub offline: bool,
    /// Comma-separated hosts that may be contacted (`*.example.org` patterns allowed) [env:
    /// LLAMA_ORCH_ALLOWED_HOSTS].
    #[arg(long, global = true, value_delimiter = ',', value_name = "HOSTS")]
    pub allowed_hosts: Option<Vec<String>>,
    /// Allow plain http:// downloads from remote hosts (loopback mirrors are always allowed)
    /// [env: LLAMA_ORCH_ALLOW_HTTP].
    #[arg(long, global = true)]
    pub allow_http: bool,
    /// Only errors (and their hints) on stderr: no progress, no notes.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Engine lifecycle for a pool.
    #[command(subcommand)]
    Engine(EngineCommand),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Models: stage, list, verify and remove (the models directory's catalog, index.json).
    #[command(subcommand)]
    Model(ModelCommand),
}

/// `orchctl model …`
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Stage a pool's model (downloaded only when it is not staged yet) and record it.
    Pull {
        /// Pool selection.
        #[command(flatten)]
        pool: PoolArgs,
        /// Resolve a branch revision (e.g. `main`) again instead of reusing the recorded commit.
        #[arg(long)]
        refresh: bool,
    },
    /// List the staged models of the models directory (--models-dir).
    Ls {
        /// Machine-readable JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Hash staged models again and compare them with the catalog (every one, or ID).
    Verify {
        /// Catalog id (from `orchctl model ls`) or `sha256:<hex>` digest.
        id: Option<String>,
        /// Machine-readable JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Remove a model from the catalog and delete the files no other entry uses.
    Rm {
        /// Catalog id (from `orchctl model ls`) or `sha256:<hex>` digest.
        id: String,
        /// Machine-readable JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// `orchctl engine …`
#[derive(Debug, Subcommand)]
pub enum EngineCommand {
    /// Show the steps prepare would take, without doing anything.
    Plan(PoolArgs),
    /// Make the engine present (fetch, build, install) and print the PreparedEngine.
    Prepare(PoolArgs),
    /// Prepare, start detached, wait until ready and check the running build.
    Up(PoolArgs),
    /// Stop a running engine (TERM, then KILL after the grace period).
    Down(DownArgs),
    /// Show pid, liveness, readiness and engine_version.
    Status(PoolArgs),
}

/// Which pool of which config.
#[derive(Debug, Args)]
pub struct PoolArgs {
    /// Pool configuration (YAML, or TOML when the name ends in .toml).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Pool id; may be left out when the config holds one pool.
    #[arg(long, short)]
    pub pool: Option<String>,
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `orchctl engine down`
#[derive(Debug, Args)]
pub struct DownArgs {
    /// Pool selection.
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Seconds between TERM and KILL.
    #[arg(long, default_value_t = 10)]
    pub grace: u64,
}

/// `orchctl config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the JSON Schema of the pool configuration.
    Schema,
    /// Parse and validate a configuration.
    Check {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}
