//! The commands, independent of how flags were parsed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use adapters_host::supervisor::{Supervisor, probe_now};
use provisioner_core::{
    Config, EngineProvisioner, Error, FieldError, Format, Mode, PoolConfig, PreparedEngine,
    Progress, ProgressEvent, Result, Step, command_line,
};
use serde_json::json;

use crate::render::out;
use crate::wiring::{Settings, provisioner};

/// Which pool of which config, and how to print.
#[derive(Debug, Clone)]
pub struct Target {
    /// Config file.
    pub config: PathBuf,
    /// Pool id.
    pub pool: Option<String>,
    /// JSON output.
    pub json: bool,
}

/// Reads and parses a configuration file, at most [`adapters_host::read::MAX_CONFIG`] bytes of
/// a regular file (a device, a FIFO or a larger file is refused at once). A missing, unreadable
/// or refused file is [`Error::ConfigUnreadable`] (exit 3).
pub fn load_config(path: &Path) -> Result<Config> {
    let (config, found) = load_config_all(path)?;
    if found.is_empty() {
        return Ok(config);
    }
    Err(Error::ConfigInvalid {
        errors: engines::with_mode_problems(&engines::recipes(), &config, found),
    })
}

/// The configuration with every problem the parser found, for checkers that go on from there.
fn load_config_all(path: &Path) -> Result<(Config, Vec<provisioner_core::FieldError>)> {
    let text =
        adapters_host::read_capped(path, adapters_host::read::MAX_CONFIG).map_err(|source| {
            Error::ConfigUnreadable {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let name = path.to_string_lossy();
    Config::parse_all(&text, Format::from_file_name(&name), &name)
}

fn note_unread_sections(config: &Config, progress: &dyn Progress) {
    if config.catalog.is_some() {
        progress.report(ProgressEvent::Note {
            message:
                "the `catalog` section belongs to other llama-orch components and is not read here"
                    .to_string(),
        });
    }
}

fn load_pool(target: &Target, progress: &dyn Progress) -> Result<PoolConfig> {
    let config = load_config(&target.config)?;
    note_unread_sections(&config, progress);
    Ok(config.pool(target.pool.as_deref())?.clone())
}

/// The `orchctl` command line that addresses this target's pool with the same host settings, for
/// hints that must work when pasted.
pub fn orchctl_command(settings: &Settings, target: &Target, pool: &str, words: &[&str]) -> String {
    let config = std::path::absolute(&target.config).unwrap_or_else(|_| target.config.clone());
    let config = config.to_string_lossy().to_string();
    let mut argv = host_argv(settings);
    argv.extend(words.iter().map(|w| w.to_string()));
    argv.extend([
        "--config".to_string(),
        config,
        "--pool".to_string(),
        pool.to_string(),
    ]);
    command_line(argv.iter().map(String::as_str))
}

/// `orchctl` and the directory flags this run was given (`--cache-dir`, `--models-dir`), which
/// a command printed for pasting must repeat to act on the same caches.
fn host_argv(settings: &Settings) -> Vec<String> {
    let mut argv: Vec<String> = vec!["orchctl".to_string()];
    if let Some(dir) = &settings.cache_dir {
        argv.extend(["--cache-dir".to_string(), dir.to_string_lossy().to_string()]);
    }
    if let Some(dir) = &settings.models_dir {
        argv.extend([
            "--models-dir".to_string(),
            dir.to_string_lossy().to_string(),
        ]);
    }
    argv
}

/// `orchctl [directory flags] WORDS`, for hints about the models directory.
fn orchctl_words(settings: &Settings, words: &[&str]) -> String {
    let mut argv = host_argv(settings);
    argv.extend(words.iter().map(|w| w.to_string()));
    command_line(argv.iter().map(String::as_str))
}

/// A model error whose hint works when pasted: the `orchctl model …` commands the model
/// adapter names get this run's directory flags, and its placeholder for the pull command
/// ([`adapters_model::PULL_HINT`]) becomes `pull`, the exact command, when the pool is known.
fn pasteable(error: Error, settings: &Settings, pull: Option<&str>) -> Error {
    let Error::Model {
        reference,
        message,
        hint: Some(hint),
    } = error
    else {
        return error;
    };
    let prefix = host_argv(settings).join(" ");
    let mut hint = hint.replace("orchctl model ", &format!("{prefix} model "));
    if let Some(pull) = pull {
        let placeholder = adapters_model::PULL_HINT.replacen("orchctl", &prefix, 1);
        hint = hint.replace(&placeholder, pull);
    }
    Error::Model {
        reference,
        message,
        hint: Some(hint),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// `orchctl config schema`
pub fn schema() {
    out(&Config::json_schema());
}

/// `orchctl config check`: every validation that needs no host, for every pool, all problems at
/// once.
pub fn check(
    settings: &Settings,
    path: &Path,
    json: bool,
    progress: Arc<dyn Progress>,
) -> Result<()> {
    let (config, found) = load_config_all(path)?;
    note_unread_sections(&config, progress.as_ref());
    provisioner(settings, progress).check_all(&config, found)?;
    if json {
        let pools: Vec<serde_json::Value> = config
            .pools
            .iter()
            .map(|pool| {
                serde_json::json!({
                    "id": pool.id.as_str(),
                    "engine": pool.engine,
                    "mode": pool.mode(),
                })
            })
            .collect();
        out(&to_json(&serde_json::json!({ "ok": true, "pools": pools })));
        return Ok(());
    }
    let ids: Vec<String> = config.pools.iter().map(|p| p.id.to_string()).collect();
    let noun = if ids.len() == 1 { "pool" } else { "pools" };
    out(&format!("ok: {} {noun}: {}", ids.len(), ids.join(", ")));
    Ok(())
}

/// `orchctl engine plan`: the pool's plan; refused, like `config check`, when the pool would
/// share a host port, a container name, a run file, an install path or a package with another
/// pool of its file.
pub fn plan(settings: &Settings, target: &Target, progress: Arc<dyn Progress>) -> Result<()> {
    let config = load_config(&target.config)?;
    note_unread_sections(&config, progress.as_ref());
    let pool = config.pool(target.pool.as_deref())?;
    let provisioner = provisioner(settings, progress);
    let plan = provisioner.plan(pool)?;
    let conflicts: Vec<FieldError> = provisioner
        .conflicts(&config)
        .into_iter()
        .filter(|conflict| conflict.involves(pool.index))
        .map(|conflict| conflict.error)
        .collect();
    if !conflicts.is_empty() {
        return Err(Error::ConfigInvalid { errors: conflicts });
    }
    if target.json {
        out(&to_json(&json!({ "digest": plan.digest(), "plan": plan })));
        return Ok(());
    }
    out(&format!(
        "Plan for pool {} ({} in {} mode), digest {}:",
        plan.pool_id,
        plan.engine.label(),
        plan.mode,
        plan.digest()
    ));
    for (index, step) in plan.steps.iter().enumerate() {
        out(&format!("{:>3}. {step}", index + 1));
    }
    for note in &plan.notes {
        out(&format!("note: {note}"));
    }
    Ok(())
}

/// `orchctl engine prepare`
pub async fn prepare(
    settings: &Settings,
    target: &Target,
    progress: Arc<dyn Progress>,
) -> Result<PreparedEngine> {
    let pool = load_pool(target, progress.as_ref())?;
    let pull = orchctl_command(settings, target, pool.id.as_str(), &["model", "pull"]);
    let prepared = provisioner(settings, progress)
        .prepare(&pool)
        .await
        .map_err(|error| pasteable(error, settings, Some(&pull)))?;
    if target.json {
        out(&to_json(&prepared));
    } else {
        describe(&prepared);
    }
    Ok(prepared)
}

fn field(name: &str, value: impl std::fmt::Display) {
    out(&format!("{:<16}{value}", format!("{name}:")));
}

fn describe(prepared: &PreparedEngine) {
    field("pool", &prepared.pool_id);
    field("engine_version", &prepared.engine_version);
    let Some(bin) = &prepared.bin else {
        field(
            "endpoint",
            format!("http://127.0.0.1:{}", prepared.metadata.readiness.port),
        );
        out("nothing was provisioned: this pool attaches to an engine run outside this tool");
        return;
    };
    field(
        "cache",
        if prepared.metadata.cache_hit {
            "hit"
        } else {
            "built"
        },
    );
    field("bin", bin.display());
    field(
        "args",
        command_line(prepared.args.iter().map(String::as_str)),
    );
    for (key, value) in &prepared.env {
        field("env", format!("{key}={value}"));
    }
    if let Some(file) = &prepared.env_file {
        field("env_file", file.display());
    }
    if let Some(workdir) = &prepared.workdir {
        field("workdir", workdir.display());
    }
}

/// Refuses `up`/`down` (`command`) for an external pool: nothing of it runs here.
fn refuse_external(
    settings: &Settings,
    target: &Target,
    pool: &PoolConfig,
    command: &str,
) -> Result<()> {
    match pool.mode() {
        Mode::External => {
            let endpoint = pool.provisioning.ports.first().map_or_else(
                || "its default port".to_string(),
                |port| format!("http://127.0.0.1:{port}"),
            );
            let status = orchctl_command(settings, target, pool.id.as_str(), &["engine", "status"]);
            Err(Error::ExternalPool {
                pool: pool.id.to_string(),
                action: format!("`orchctl engine {command}`"),
                endpoint,
                hint: Some(format!("probe it with: {status}")),
            })
        }
        Mode::Source | Mode::Container | Mode::Package | Mode::Binary => Ok(()),
    }
}

/// What a running engine holds that `up` needs, with the exact command that stops it (from the
/// configuration file it was started from).
fn explain_held(settings: &Settings, target: &Target, error: Error) -> Error {
    let down = |config: &Path, pool: &str| {
        let other = Target {
            config: config.to_path_buf(),
            pool: None,
            json: false,
        };
        orchctl_command(settings, &other, pool, &["engine", "down"])
    };
    match error {
        Error::AlreadyRunning {
            pool,
            pid,
            log,
            config,
            ..
        } => {
            let hint = match &config {
                Some(other) => format!(
                    "stop it first: {}\nor give pool {pool} of {} another id",
                    down(other, &pool),
                    target.config.display()
                ),
                None => format!("stop it first: {}", down(&target.config, &pool)),
            };
            Error::AlreadyRunning {
                pool,
                pid,
                log,
                config,
                hint: Some(hint),
            }
        }
        Error::PortHeld {
            pool,
            port,
            holder,
            pid,
            config,
            ..
        } => {
            let stop = match &config {
                Some(other) => format!("stop it first: {}", down(other, &holder)),
                None => format!(
                    "stop it first with `orchctl engine down --config FILE --pool {holder}`, FILE being the configuration it was started from (its record does not say)"
                ),
            };
            Error::PortHeld {
                hint: Some(format!(
                    "{stop}\nor give pool {pool} another port than {port} in provisioning.ports"
                )),
                pool,
                port,
                holder,
                pid,
                config,
            }
        }
        other => other,
    }
}

/// The host ports a plan's launch step holds (its ports and its readiness port).
fn launch_ports(steps: &[Step]) -> Vec<u16> {
    steps
        .iter()
        .filter_map(|step| match step {
            Step::Launch {
                ports, readiness, ..
            } => Some(ports.iter().copied().chain([readiness.port])),
            _ => None,
        })
        .flatten()
        .collect()
}

/// `orchctl engine up`
pub async fn up(
    settings: &Settings,
    target: &Target,
    wait: Option<Duration>,
    progress: Arc<dyn Progress>,
) -> Result<()> {
    let pool = load_pool(target, progress.as_ref())?;
    refuse_external(settings, target, &pool, "up")?;
    // One `up` or `down` of a pool at a time; the checks below run once it is ours.
    let _lock = pool_lock(settings, pool.id.as_str(), wait, progress.as_ref()).await?;
    let supervisor = Supervisor::new(settings.layout().run_dir);
    let provisioner = provisioner(settings, progress.clone());
    // Before a prepare that may build for minutes: what a running engine holds. `start`
    // checks again with the prepared ports.
    let planned = provisioner
        .plan(&pool)
        .map(|plan| launch_ports(&plan.steps))
        .unwrap_or_default();
    supervisor
        .check_conflicts(pool.id.as_str(), &planned, Some(&target.config))
        .map_err(|error| explain_held(settings, target, error))?;
    let pull = orchctl_command(settings, target, pool.id.as_str(), &["model", "pull"]);
    let prepared = provisioner
        .prepare(&pool)
        .await
        .map_err(|error| pasteable(error, settings, Some(&pull)))?;
    let mut state = supervisor
        .start_from(&prepared, Some(&target.config))
        .map_err(|error| explain_held(settings, target, error))?;
    let step = format!("wait for {} to be ready", prepared.pool_id);
    progress.report(ProgressEvent::Started {
        step: step.clone(),
        detail: Some(format!(
            "pid {}, log: {}",
            state.pid,
            state.log_file.display()
        )),
    });
    let timeout = Duration::from_secs(prepared.metadata.readiness.timeout_seconds);
    let checked = async {
        supervisor.wait_ready(&mut state, timeout).await?;
        supervisor.verify_identity(&state).await
    }
    .await;
    if let Err(error) = checked {
        // Never leave a server running that is not ready or not the build we prepared.
        let _ = supervisor
            .stop(prepared.pool_id.as_str(), Duration::from_secs(5))
            .await;
        return Err(error);
    }
    progress.report(ProgressEvent::Finished { step });
    let url = format!("http://127.0.0.1:{}", state.readiness.port);
    if target.json {
        out(&to_json(&json!({
            "pool_id": prepared.pool_id,
            "pid": state.pid,
            "url": url,
            "ports": state.ports,
            "engine_version": prepared.engine_version,
            "log_file": state.log_file,
            "cache_hit": prepared.metadata.cache_hit,
        })));
    } else {
        out(&format!(
            "{} is up at {url} (pid {}), engine_version {}",
            prepared.pool_id, state.pid, prepared.engine_version
        ));
        if prepared.ports.contains(&0) {
            let ports: Vec<String> = state.ports.iter().map(u16::to_string).collect();
            out(&format!(
                "it bound port {} (the configuration asked for a free one)",
                ports.join(", ")
            ));
        }
        out(&format!("log: {}", state.log_file.display()));
    }
    Ok(())
}

/// Serialises `up` and `down` of one pool across processes: `<run_dir>/<pool>.lock`, holding
/// the holder's pid. A caller that finds it taken says whose it is and waits (the kernel
/// releases it when its holder exits, even by SIGKILL), then re-checks what runs.
/// `wait` bounds the wait: past it the call fails (exit 11) naming the holder.
async fn pool_lock(
    settings: &Settings,
    pool: &str,
    wait: Option<Duration>,
    progress: &dyn Progress,
) -> Result<adapters_host::FileLock> {
    let path = provisioner_core::RunRecord::Lock.path(&settings.layout().run_dir, pool);
    let acquire = adapters_host::FileLock::acquire(&path, || {
        let holder = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());
        progress.report(ProgressEvent::Note {
            message: match holder {
                Some(pid) => {
                    format!("waiting for pid {pid}, which is starting or stopping pool {pool}")
                }
                None => format!("waiting for another orchctl starting or stopping pool {pool}"),
            },
        });
    });
    let lock = match wait {
        None => acquire.await?,
        Some(limit) => match tokio::time::timeout(limit, acquire).await {
            Ok(lock) => lock?,
            Err(_) => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|text| text.trim().parse::<u32>().ok())
                    .map_or_else(|| "another orchctl".to_string(), |pid| format!("pid {pid}"));
                return Err(Error::Engine {
                    pool: pool.to_string(),
                    message: format!(
                        "{holder} is still starting or stopping this pool after {} s",
                        limit.as_secs()
                    ),
                    hint: Some(
                        "wait longer (--wait SECONDS, or leave it out to wait as long as that process lives), or stop that process"
                            .to_string(),
                    ),
                });
            }
        },
    };
    // Whose it is, for those who wait (the lock is on the open file, not its content).
    let _ = std::fs::write(&path, format!("{}\n", std::process::id()));
    Ok(lock)
}

/// `orchctl engine down`; returns whether something was stopped.
pub async fn down(
    settings: &Settings,
    target: &Target,
    grace: Duration,
    wait: Option<Duration>,
    progress: Arc<dyn Progress>,
) -> Result<bool> {
    let pool = load_pool(target, progress.as_ref())?;
    refuse_external(settings, target, &pool, "down")?;
    let _lock = pool_lock(settings, pool.id.as_str(), wait, progress.as_ref()).await?;
    let id = pool.id.to_string();
    let stopped = Supervisor::new(settings.layout().run_dir)
        .stop(&id, grace)
        .await?;
    if target.json {
        out(&to_json(&json!({ "pool_id": id, "stopped": stopped })));
    } else if stopped {
        out(&format!("{id} stopped"));
    } else {
        out(&format!("{id} was not running"));
    }
    Ok(stopped)
}

/// `orchctl engine status`; returns whether the engine is alive (for an external pool: whether
/// its endpoint answers its readiness probe).
pub async fn status(
    settings: &Settings,
    target: &Target,
    progress: Arc<dyn Progress>,
) -> Result<bool> {
    let pool = load_pool(target, progress.as_ref())?;
    let id = pool.id.to_string();
    if pool.mode() == Mode::External {
        let probe = provisioner(settings, progress)
            .plan(&pool)
            .and_then(|plan| {
                plan.steps
                    .into_iter()
                    .find_map(|step| match step {
                        provisioner_core::Step::Attach { readiness, .. } => Some(readiness),
                        _ => None,
                    })
                    .ok_or_else(|| Error::invalid(pool.field("provisioning.mode"), "no endpoint"))
            })?;
        let ready = probe_now(&probe).await;
        let url = format!("http://127.0.0.1:{}", probe.port);
        if target.json {
            out(&to_json(&json!({
                "pool_id": id,
                "external": true,
                "url": url,
                "ready": ready,
                "running": ready,
            })));
        } else {
            field("pool", &id);
            field("external", &url);
            field("ready", ready);
        }
        return Ok(ready);
    }
    let status = Supervisor::new(settings.layout().run_dir)
        .status(&id)
        .await?;
    let alive = status.as_ref().is_some_and(|s| s.alive);
    // The engine may have been started from another file (a copy with other ports, say): the
    // record names the one it was, and a human is told when it is not the one given now.
    let given = std::fs::canonicalize(&target.config).unwrap_or_else(|_| target.config.clone());
    let other_file = status
        .as_ref()
        .and_then(|s| s.state.config.clone())
        .filter(|recorded| *recorded != given);
    if target.json {
        let value = match &status {
            Some(s) => json!({
                "pool_id": id,
                "running": s.alive,
                "pid": s.state.pid,
                "alive": s.alive,
                "ready": s.ready,
                "engine_version": s.state.engine_version,
                "container": s.container,
                "ports": s.state.ports,
                "log_file": s.state.log_file,
                "config": s.state.config,
            }),
            None => json!({ "pool_id": id, "running": false }),
        };
        out(&to_json(&value));
    } else {
        match &status {
            Some(s) => {
                field("pool", &id);
                field("pid", s.state.pid);
                field("alive", s.alive);
                field("ready", s.ready);
                let ports: Vec<String> = s.state.ports.iter().map(u16::to_string).collect();
                field("ports", ports.join(", "));
                field("engine_version", &s.state.engine_version);
                if let Some(container) = &s.container {
                    field("container", container);
                }
                field("log", s.state.log_file.display());
                if let Some(recorded) = &other_file {
                    field(
                        "started from",
                        format!("{} (not the file given now)", recorded.display()),
                    );
                }
            }
            None => out(&format!("{id} is not running")),
        }
    }
    Ok(alive)
}

/// The running engines recorded in the run directory (alive process groups only).
fn running_engines(settings: &Settings) -> Vec<adapters_host::RunState> {
    let layout = settings.layout();
    let supervisor = Supervisor::new(layout.run_dir.clone());
    let Ok(entries) = std::fs::read_dir(&layout.run_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            let pool = provisioner_core::RunRecord::State
                .pool_of(&name)?
                .to_string();
            supervisor.read_state(&pool).ok().flatten()
        })
        .filter(|state| adapters_host::group_alive(state.pid))
        .collect()
}

/// The running engine whose command line names the entry's files, if any.
fn engine_using(
    running: &[adapters_host::RunState],
    entry: &adapters_model::CatalogEntry,
) -> Option<adapters_host::RunState> {
    let mut paths: Vec<String> = vec![entry.local_path.to_string_lossy().to_string()];
    if let Some(root) = &entry.cache_root {
        paths.push(root.to_string_lossy().to_string());
    }
    running
        .iter()
        .find(|state| {
            state
                .args
                .iter()
                .any(|arg| paths.iter().any(|path| arg.contains(path.as_str())))
        })
        .cloned()
}

/// `orchctl model pull`: stages the pool's model (a download only when it is not staged yet,
/// or with `refresh` when its branch moved) and records it in the catalog.
pub async fn model_pull(
    settings: &Settings,
    target: &Target,
    refresh: bool,
    progress: Arc<dyn Progress>,
) -> Result<()> {
    let pool = load_pool(target, progress.as_ref())?;
    let pull = orchctl_command(settings, target, pool.id.as_str(), &["model", "pull"]);
    let artifact = provisioner(settings, progress)
        .pull_model(&pool, refresh)
        .await
        .map_err(|error| pasteable(error, settings, Some(&pull)))?;
    if target.json {
        out(&to_json(&artifact));
        return Ok(());
    }
    out(&format!(
        "The model of pool {} is staged at {}.",
        pool.id,
        artifact.path.display()
    ));
    if let Some(id) = &artifact.id {
        field("id", id);
    }
    if let Some(revision) = &artifact.revision {
        field("revision", revision);
    }
    field("size", provisioner_core::human_bytes(artifact.bytes));
    if artifact.files.len() > 1 {
        field("files", artifact.files.len());
    }
    Ok(())
}

/// The models directory's catalog.
fn catalog(settings: &Settings) -> adapters_model::Catalog {
    adapters_model::Catalog::open(settings.layout().models_dir)
}

/// `orchctl model ls`: the catalog of the models directory.
pub fn model_ls(settings: &Settings, json: bool) -> Result<()> {
    let catalog = catalog(settings);
    let entries = catalog.entries()?;
    if json {
        out(&to_json(&json!({
            "catalog": catalog.path(),
            "models": entries,
        })));
        return Ok(());
    }
    if entries.is_empty() {
        out(&format!(
            "No models are staged yet (catalog {}).",
            catalog.path().display()
        ));
        return Ok(());
    }
    let width = entries.iter().map(|e| e.id.len()).max().unwrap_or(2).max(2);
    out(&format!(
        "{:<width$}  {:>10}  {:<12}  PATH",
        "ID", "SIZE", "REVISION"
    ));
    for entry in &entries {
        let revision = entry
            .revision
            .as_deref()
            .map_or("-".to_string(), |r| r.chars().take(12).collect());
        out(&format!(
            "{:<width$}  {:>10}  {:<12}  {}",
            entry.id,
            provisioner_core::human_bytes(entry.bytes),
            revision,
            entry.local_path.display()
        ));
    }
    Ok(())
}

/// `orchctl model verify [ID]`: hashes the files of one entry (or all) again and compares them
/// with the catalog. Fails (exit 8) when any differs, after checking every one; with `--json`
/// the one document on stdout says which (and the exit code is 8), nothing else is printed
/// there.
pub async fn model_verify(settings: &Settings, id: Option<&str>, json: bool) -> Result<u8> {
    let catalog = catalog(settings);
    let ids: Vec<String> = match id {
        Some(id) => {
            let entry = catalog.find(id)?.ok_or_else(|| Error::Model {
                reference: id.to_string(),
                message: format!("no such model in the catalog {}", catalog.path().display()),
                hint: Some(format!(
                    "list the staged models with: {}",
                    orchctl_words(settings, &["model", "ls"])
                )),
            })?;
            vec![entry.id]
        }
        None => catalog.entries()?.into_iter().map(|e| e.id).collect(),
    };
    let mut results = Vec::new();
    let mut first_failure = None;
    for id in ids {
        match catalog.verify(&id).await {
            Ok(entry) => results.push(json!({"id": id, "ok": true, "bytes": entry.bytes})),
            Err(error) => {
                // The id is in its own field: the error's own text without it.
                let text = match &error {
                    Error::Model { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                results.push(json!({"id": id, "ok": false, "error": text}));
                first_failure.get_or_insert(pasteable(error, settings, None));
            }
        }
    }
    if json {
        out(&to_json(&json!({ "verified": results })));
        return Ok(if first_failure.is_some() {
            provisioner_core::ErrorCode::Model.exit_code() as u8
        } else {
            0
        });
    } else if results.is_empty() {
        out("No models are staged yet: nothing to verify.");
    } else {
        for result in &results {
            let id = result["id"].as_str().unwrap_or_default();
            match result["error"].as_str() {
                None => out(&format!("ok      {id}")),
                Some(error) => out(&format!("FAILED  {id}: {error}")),
            }
        }
    }
    match first_failure {
        Some(error) => Err(error),
        None => Ok(0),
    }
}

/// `orchctl model rm ID`: removes the entry and deletes the files no other entry uses; refused
/// while a running engine uses it.
pub async fn model_rm(settings: &Settings, id: &str, json: bool) -> Result<()> {
    let catalog = catalog(settings);
    let Some(entry) = catalog.find(id)? else {
        return Err(Error::Model {
            reference: id.to_string(),
            message: format!("no such model in the catalog {}", catalog.path().display()),
            hint: Some(format!(
                "list the staged models with: {}",
                orchctl_words(settings, &["model", "ls"])
            )),
        });
    };
    let running = running_engines(settings);
    if let Some(state) = engine_using(&running, &entry) {
        let down = match &state.config {
            Some(config) => {
                let target = Target {
                    config: config.clone(),
                    pool: None,
                    json: false,
                };
                orchctl_command(settings, &target, &state.pool_id, &["engine", "down"])
            }
            None => format!(
                "orchctl engine down --config <its config> --pool {}",
                state.pool_id
            ),
        };
        return Err(Error::Model {
            reference: entry.id.clone(),
            message: format!(
                "pool {} (pid {}) is running with this model",
                state.pool_id, state.pid
            ),
            hint: Some(format!("stop it first: {down}")),
        });
    }
    let removed = catalog
        .remove(&entry.id, &|candidate| {
            engine_using(&running, candidate).is_some()
        })
        .await
        .map_err(|error| pasteable(error, settings, None))?;
    if json {
        out(&to_json(&json!({
            "removed": removed.entry.id,
            "deleted": removed.deleted,
            "kept": removed.kept,
        })));
        return Ok(());
    }
    out(&format!("Removed {} from the catalog.", removed.entry.id));
    if removed.entry.is_local() {
        out("The file is yours: it is left where it is.");
        return Ok(());
    }
    field("deleted", removed.deleted.len());
    field("kept", removed.kept.len());
    if !removed.kept.is_empty() {
        out("Kept files are still used by other entries.");
    }
    Ok(())
}
