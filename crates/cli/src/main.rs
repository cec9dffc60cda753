//! `orchctl` entry point: parse flags, run the command, map errors to documented exit codes.
//!
//! Exit codes: [`cli::exit`] for the CLI's own, [`provisioner_core::ErrorCode::exit_code`] for
//! every error class; the README's table lists them all.

mod args;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use cli::commands::{self, Target};
use cli::render::{StderrProgress, error as render_error};
use cli::wiring::Settings;
use provisioner_core::{Error, Progress};

use crate::args::{Cli, Command, ConfigCommand, EngineCommand, PoolArgs};

fn target(args: &PoolArgs) -> Target {
    Target {
        config: args.config.clone(),
        pool: args.pool.clone(),
        json: args.json,
    }
}

/// Structured logs on stderr, off unless `LLAMA_ORCH_LOG` sets a filter (`info`, `debug`, …);
/// `LLAMA_ORCH_LOG_FORMAT=json` makes them one JSON object per line.
fn init_logs() {
    let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("LLAMA_ORCH_LOG") else {
        return;
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var("LLAMA_ORCH_LOG_FORMAT").is_ok_and(|v| v == "json");
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs();
    let settings = Settings {
        home: std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/")),
        cache_dir: cli.host.cache_dir.clone(),
        models_dir: cli.host.models_dir.clone(),
        offline: cli.host.offline,
        allowed_hosts: cli.host.allowed_hosts.clone(),
        allow_plain_http: cli.host.allow_http,
    };
    let progress: Arc<dyn Progress> = Arc::new(StderrProgress::new(cli.host.quiet));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            render_error(&Error::io("start runtime", "-", e), false);
            return ExitCode::from(cli::exit::UNEXPECTED);
        }
    };
    let json = match &cli.command {
        Command::Engine(EngineCommand::Down(down)) => down.pool.json,
        Command::Engine(
            EngineCommand::Plan(p)
            | EngineCommand::Prepare(p)
            | EngineCommand::Up(p)
            | EngineCommand::Status(p),
        ) => p.json,
        Command::Config(_) => false,
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(cli.command, &settings, progress) => result,
            _ = shutdown_signal() => Err(Error::Cancelled),
        }
    });
    // Dropping the runtime drops any unfinished work: builds are killed and staging removed.
    drop(runtime);
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
        Command::Config(ConfigCommand::Check { config }) => {
            commands::check(settings, &config, progress)?
        }
        Command::Engine(EngineCommand::Plan(p)) => commands::plan(settings, &target(&p), progress)?,
        Command::Engine(EngineCommand::Prepare(p)) => {
            commands::prepare(settings, &target(&p), progress).await?;
        }
        Command::Engine(EngineCommand::Up(p)) => {
            commands::up(settings, &target(&p), progress).await?
        }
        Command::Engine(EngineCommand::Down(d)) => {
            let grace = Duration::from_secs(d.grace);
            commands::down(settings, &target(&d.pool), grace, progress).await?;
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
