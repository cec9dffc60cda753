//! `orchctl` entry point: parse flags, run the command, map errors to documented exit codes.
//!
//! Exit codes: [`cli::exit`] for the CLI's own, [`provisioner_core::ErrorCode::exit_code`] for
//! every error class; the README's table lists them all.

mod args;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ColorChoice, CommandFactory, FromArgMatches};
use cli::commands::{self, Target};
use cli::render::{self, Failure, StderrProgress, error as render_error};
use cli::settings::{self, Environment, HostFlags};
use cli::wiring::Settings;
use provisioner_core::{Error, Progress};

use crate::args::{Cli, Command, ConfigCommand, EngineCommand, HostArgs, ModelCommand, PoolArgs};

fn target(args: &PoolArgs) -> Target {
    Target {
        config: args.config.clone(),
        pool: args.pool.clone(),
        json: args.json,
    }
}

fn host_flags(host: &HostArgs) -> HostFlags {
    HostFlags {
        cache_dir: host.cache_dir.clone(),
        models_dir: host.models_dir.clone(),
        offline: host.offline,
        allowed_hosts: host.allowed_hosts.clone(),
        allow_http: host.allow_http,
    }
}

/// Whether `--json` is anywhere on the command line (before a `--`): then every failure, a
/// command line that does not parse included, prints its JSON error object on stdout.
fn wants_json(argv: &[OsString]) -> bool {
    argv.iter()
        .skip(1)
        .take_while(|arg| *arg != "--")
        .filter_map(|arg| arg.to_str())
        .any(|arg| arg == "--json" || arg.starts_with("--json="))
}

/// clap's error as a [`Failure`]: its first paragraph is the message (`the following required
/// arguments were not provided: --config <CONFIG>`), the rest (tips, usage) the hint.
fn usage_failure(error: &clap::Error) -> Failure {
    let text = error.render().to_string();
    let paragraphs: Vec<Vec<&str>> = text
        .split("\n\n")
        .map(|paragraph| {
            paragraph
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|lines| !lines.is_empty())
        .collect();
    let first = paragraphs.first().map(|p| p.join(" ")).unwrap_or_default();
    let rest = paragraphs.iter().skip(1).flatten().copied();
    let (message, hint): (String, Vec<&str>) = match first.strip_prefix("error: ") {
        Some(message) => (message.to_string(), rest.collect()),
        // Help printed because a subcommand is missing.
        None => (
            "a subcommand is missing".to_string(),
            rest.filter(|line| line.starts_with("Usage:") || line.starts_with("For more"))
                .collect(),
        ),
    };
    Failure::usage(message, (!hint.is_empty()).then(|| hint.join("\n")))
}

/// A command line that does not parse: clap's own text on stderr (help and version on stdout,
/// exit 0), exit 2, and with `--json` the error object on stdout.
fn usage_error(error: clap::Error, json: bool) -> ExitCode {
    let _ = error.print();
    if !error.use_stderr() {
        return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(cli::exit::USAGE));
    }
    if json {
        render::failure_json(&usage_failure(&error));
    }
    ExitCode::from(cli::exit::USAGE)
}

/// Structured logs on stderr, off unless `LLAMA_ORCH_LOG` sets a filter (`info`, `debug`, …);
/// `LLAMA_ORCH_LOG_FORMAT=json` makes them one JSON object per line. Colour only when `colour`.
///
/// The user's filter is one of two, and an event is printed only when both let it through: the
/// other cuts the HTTP, TLS and registry clients' targets ([`settings::WIRE_LOG_TARGETS`]) at
/// [`settings::WIRE_LOG_LEVEL`], since their debug and trace logs dump request headers
/// (credentials included). Being a separate filter, no directive of the user's, however
/// specific, and no span directive (which `EnvFilter` lets override its target directives)
/// turns those dumps back on.
fn init_logs(env: &Environment, colour: bool) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let Some(logs) = settings::logs(env) else {
        return;
    };
    let Ok(filter) = tracing_subscriber::EnvFilter::try_new(&logs.filter) else {
        return;
    };
    let wire_level: LevelFilter = settings::WIRE_LOG_LEVEL
        .parse()
        .unwrap_or(LevelFilter::WARN);
    let wire = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(
            settings::WIRE_LOG_TARGETS
                .iter()
                .map(|target| (*target, wire_level)),
        );
    let subscriber = tracing_subscriber::registry().with(wire).with(filter);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    // `try_init` also routes the `log` records of dependencies (ureq's) through both filters.
    let _ = if logs.json {
        subscriber.with(layer.json()).try_init()
    } else {
        subscriber.with(layer).try_init()
    };
}

/// Whether a command reads or writes the cache root or the models directory (every one but
/// `config schema`).
fn needs_directories(command: &Command) -> bool {
    !matches!(command, Command::Config(ConfigCommand::Schema))
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let json = wants_json(&argv);
    let env = Environment::from_process();
    let colour = settings::colour(&env, std::io::stderr().is_terminal());
    let mut command = Cli::command().color(if colour {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    });
    let parsed = command
        .try_get_matches_from_mut(&argv)
        .and_then(|mut matches| Cli::from_arg_matches_mut(&mut matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(error) => return usage_error(error.format(&mut command), json),
    };
    init_logs(&env, colour);
    let settings: Settings = match settings::resolve(&host_flags(&cli.host), &env) {
        Ok(settings) => settings,
        Err(error) => {
            let failure = Failure::usage(
                error.message,
                Some("fix or unset the variable; an empty value means unset".to_string()),
            );
            render::failure(&failure, json);
            return ExitCode::from(failure.exit);
        }
    };
    if needs_directories(&cli.command)
        && let Err(failure) = settings.try_layout()
    {
        render::failure(&failure, json);
        return ExitCode::from(failure.exit);
    }
    let progress: Arc<dyn Progress> = Arc::new(StderrProgress::new(cli.host.quiet));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            render_error(&Error::io("start runtime", "-", e), json);
            return ExitCode::from(cli::exit::UNEXPECTED);
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(cli.command, &settings, progress) => result,
            _ = shutdown_signal() => Err(Error::Cancelled),
        }
    });
    // Shutting the runtime down drops any unfinished work: builds are killed and staging
    // removed. A blocking wait that cannot be cancelled (a lock another process holds, after
    // `--wait` gave up) is abandoned after a moment instead of holding the exit.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            render_error(&error, json);
            ExitCode::from(error.code().exit_code() as u8)
        }
    }
}

async fn run(
    command: Command,
    settings: &Settings,
    progress: Arc<dyn Progress>,
) -> Result<u8, Error> {
    match command {
        Command::Config(ConfigCommand::Schema) => commands::schema(),
        Command::Config(ConfigCommand::Check { config, json }) => {
            commands::check(settings, &config, json, progress)?
        }
        Command::Engine(EngineCommand::Plan(p)) => commands::plan(settings, &target(&p), progress)?,
        Command::Engine(EngineCommand::Prepare(p)) => {
            commands::prepare(settings, &target(&p), progress).await?;
        }
        Command::Engine(EngineCommand::Up(u)) => {
            let wait = u.wait.map(Duration::from_secs);
            commands::up(settings, &target(&u.pool), wait, progress).await?
        }
        Command::Engine(EngineCommand::Down(d)) => {
            let grace = Duration::from_secs(d.grace);
            let wait = d.wait.map(Duration::from_secs);
            commands::down(settings, &target(&d.pool), grace, wait, progress).await?;
        }
        Command::Model(ModelCommand::Pull { pool, refresh }) => {
            commands::model_pull(settings, &target(&pool), refresh, progress).await?;
        }
        Command::Model(ModelCommand::Ls { json }) => commands::model_ls(settings, json)?,
        Command::Model(ModelCommand::Verify { id, json }) => {
            let code = commands::model_verify(settings, id.as_deref(), json).await?;
            if code != 0 {
                return Ok(code);
            }
        }
        Command::Model(ModelCommand::Rm { id, json }) => {
            commands::model_rm(settings, &id, json).await?;
        }
        Command::Engine(EngineCommand::Status(p)) => {
            if !commands::status(settings, &target(&p), progress).await? {
                return Ok(cli::exit::NOT_RUNNING);
            }
        }
    }
    Ok(cli::exit::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = hangup.recv() => {}
    }
}
