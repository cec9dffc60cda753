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
    Up(UpArgs),
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
    /// Seconds between TERM and KILL, 0 to 3600 (an hour).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(0..=MAX_GRACE_SECONDS),
    )]
    pub grace: u64,
    /// How long to wait, at most, for another `up` or `down` of the pool to finish (0 to
    /// 86400 seconds); without it, as long as that process lives.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=MAX_WAIT_SECONDS))]
    pub wait: Option<u64>,
}

/// `orchctl engine up`
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Pool selection.
    #[command(flatten)]
    pub pool: PoolArgs,
    /// How long to wait, at most, for another `up` or `down` of the pool to finish (0 to
    /// 86400 seconds); without it, as long as that process lives.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=MAX_WAIT_SECONDS))]
    pub wait: Option<u64>,
}

/// The longest `--wait`: a day.
pub const MAX_WAIT_SECONDS: u64 = 86_400;

/// The longest `engine down --grace`: an hour. Every numeric argument has a range that clap
/// checks, so that nothing computed from one (a deadline) can overflow.
pub const MAX_GRACE_SECONDS: u64 = 3600;

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
        /// Machine-readable JSON on stdout: `{"ok": true, "pools": [{"id", "engine", "mode"}]}`.
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::{CommandFactory, Parser};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// What a refused command line must look like: a usage error (exit 2) whose text starts
    /// with `error:`, or help asked for or shown for a missing subcommand; never panic text.
    fn assert_clean(error: &clap::Error) {
        let text = error.render().to_string();
        let help = matches!(
            error.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert!(
            help || text.starts_with("error:"),
            "not a usage error: {text}"
        );
        assert!(
            help || error.exit_code() == 2,
            "exit {}: {text}",
            error.exit_code()
        );
        assert!(!text.contains("panicked"), "{text}");
        assert!(!text.contains("overflow"), "{text}");
    }

    fn down(grace: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from([
            "orchctl", "engine", "down", "-c", "c.yaml", "--grace", grace,
        ])
    }

    #[test]
    fn grace_is_bounded_and_says_its_range() {
        for ok in ["0", "10", "3600"] {
            let cli = down(ok).unwrap_or_else(|e| panic!("--grace {ok}: {e}"));
            let Command::Engine(EngineCommand::Down(args)) = cli.command else {
                panic!("not down");
            };
            assert_eq!(args.grace.to_string(), ok);
        }
        for bad in [
            "3601",
            "9223372036854775807",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "1.5",
            "1e3",
            "",
            "soon",
        ] {
            let error = down(bad).expect_err(bad);
            assert_clean(&error);
            let text = error.render().to_string();
            // `-1` reads as an unknown option, the rest as a bad value of --grace.
            let expected = if bad == "-1" {
                ErrorKind::UnknownArgument
            } else {
                ErrorKind::ValueValidation
            };
            assert_eq!(error.kind(), expected, "{bad}: {text}");
            assert!(
                text.contains("--grace") || text.contains(bad),
                "{bad}: {text}"
            );
        }
        let text = down("18446744073709551615")
            .unwrap_err()
            .render()
            .to_string();
        assert!(text.contains("0..=3600"), "{text}");
    }

    /// The words a command line is made of: the real subcommands and options, and arbitrary
    /// numbers and strings.
    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => proptest::sample::select(vec![
                "engine", "down", "up", "plan", "prepare", "status", "config", "check", "schema",
                "model", "pull", "ls", "verify", "rm", "--grace", "--grace=", "-c", "--config",
                "-p", "--pool", "--json", "--refresh", "--cache-dir", "--models-dir",
                "--offline", "--allowed-hosts", "--allow-http", "-q", "--", "-",
            ])
            .prop_map(str::to_string),
            2 => any::<u64>().prop_map(|n| n.to_string()),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => any::<u128>().prop_map(|n| n.to_string()),
            1 => any::<f64>().prop_map(|n| n.to_string()),
            2 => any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 1000,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Any command line parses or is refused with a clean usage error; never a panic.
        #[test]
        fn arbitrary_command_lines_never_panic(words in proptest::collection::vec(word(), 0..10)) {
            let argv = std::iter::once("orchctl".to_string()).chain(words);
            match Cli::try_parse_from(argv) {
                Ok(cli) => {
                    if let Command::Engine(EngineCommand::Down(args)) = cli.command {
                        prop_assert!(args.grace <= MAX_GRACE_SECONDS);
                    }
                }
                Err(error) => assert_clean(&error),
            }
        }

        /// `--grace N` is accepted exactly when N is in 0..=3600, whatever N is.
        #[test]
        fn every_grace_number_is_checked(grace in prop_oneof![
            0u64..=7200,
            any::<u64>(),
        ]) {
            match down(&grace.to_string()) {
                Ok(_) => prop_assert!(grace <= MAX_GRACE_SECONDS),
                Err(error) => {
                    prop_assert!(grace > MAX_GRACE_SECONDS);
                    prop_assert_eq!(error.kind(), ErrorKind::ValueValidation);
                    assert_clean(&error);
                }
            }
        }
    }
}
