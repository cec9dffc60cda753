//! A small local process supervisor, used by the CLI for `up`, `down` and `status`
//! (pool-managerd has its own).
//!
//! Each pool's engine runs detached in its own process group with exactly the prepared
//! environment plus the variables of its env file. What was started is recorded in
//! `<run_dir>/<pool>.json` (and the pid in `<run_dir>/<pool>.pid`), and its output goes to
//! `<run_dir>/<pool>.log`. A recorded process counts as alive only while the process with its pid
//! has the start time recorded when it was spawned (`/proc/<pid>/stat`), so a reused pid is never
//! mistaken for the engine (nor signalled), and an engine that is a script or a wrapper (whose
//! `/proc/<pid>/exe` is an interpreter) is still known. An engine started on a free port (`0`) has
//! the port it bound found and recorded before its readiness is probed.
//!
//! Crash consistency: the record that lets a later call find the engine is made durable before
//! the engine exists. `start` writes an intent record (no pid yet, a launch nonce), spawns the
//! engine with the nonce in its environment (`LLAMA_ORCH_LAUNCH`), then writes the pid and start
//! time. A record left with no pid (the caller was killed in between) is resolved by the next
//! call: the process whose environment holds the nonce is adopted, or the record is dropped.
//!
//! The run dir is shared by every configuration file: a record names the file its engine was
//! started from, and `start` refuses a pool id whose engine runs (from this file or another) and
//! a host port that another pool's running engine holds, naming that engine.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use provisioner_core::{Error, IdentityCheck, PreparedEngine, Probe, Result, RunRecord, Secret};

use crate::run_files::{read_env_file, read_probe_key};
use crate::sockets::listening_ports;
use serde::{Deserialize, Serialize};

use crate::install::write_private;
use crate::process::{DetachedSpec, Signal, group_alive, kill_group, spawn_detached};

/// Timeout of one HTTP request to the engine.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Lines of the engine log shown when it exits before becoming ready.
const LOG_TAIL_LINES: usize = 20;
/// How long to wait for a group to vanish after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Largest response body read from the engine.
const MAX_BODY: u64 = 1024 * 1024;

/// The variable that carries a launch's nonce into the engine's environment, so that a start
/// interrupted before its pid was recorded can be found in `/proc/*/environ`.
pub const LAUNCH_VARIABLE: &str = "LLAMA_ORCH_LAUNCH";

/// Starts, checks and stops engines on this host, one per pool.
#[derive(Debug, Clone)]
pub struct Supervisor {
    run_dir: PathBuf,
}

/// What the supervisor recorded about a started engine.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RunState {
    /// Pool id.
    pub pool_id: String,
    /// Process id, which is also the process group id.
    pub pid: u32,
    /// The program started.
    pub bin: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Ports it listens on, the HTTP API first; `0` until the port it bound is found.
    pub ports: Vec<u16>,
    /// The env file its environment was loaded from (the path only: it holds secrets).
    #[serde(default)]
    pub env_file: Option<PathBuf>,
    /// The prepared engine version.
    pub engine_version: String,
    /// Where its output goes.
    pub log_file: PathBuf,
    /// When it was started, in seconds since the Unix epoch.
    pub started_at_unix: u64,
    /// How to tell that it is ready.
    pub readiness: Probe,
    /// How to tell that it is the prepared build.
    pub identity: Option<IdentityCheck>,
    /// The variables a container runtime needs to find its containers again (never the
    /// engine's own environment, which may hold secrets).
    #[serde(default)]
    pub runtime_env: std::collections::BTreeMap<String, String>,
    /// The configuration file (absolute) the engine was started from; `None` in records of
    /// versions that did not keep it, and for engines started without one.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// The process's start time (`/proc/<pid>/stat` field 22, clock ticks after boot): what
    /// proves that `pid` is still the process that was spawned. `None` in records of versions
    /// that did not keep it (the binary is compared instead).
    #[serde(default)]
    pub start_ticks: Option<u64>,
    /// The launch nonce the engine got in its environment ([`LAUNCH_VARIABLE`]); a record with
    /// `pid` 0 is an intent whose outcome is found through it.
    #[serde(default)]
    pub launch: Option<String>,
}

impl RunState {
    /// The host ports it holds: its ports and its readiness port, free ones (`0`) left out.
    pub fn held_ports(&self) -> Vec<u16> {
        let mut ports = self.ports.clone();
        ports.push(self.readiness.port);
        ports.retain(|&port| port != 0);
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// A recorded engine and how it is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// What was recorded at start.
    pub state: RunState,
    /// Whether the recorded process still runs the recorded binary.
    pub alive: bool,
    /// Whether it answered its readiness probe just now.
    pub ready: bool,
    /// For an engine run by podman or docker: the container's state as the runtime's `inspect`
    /// reports it (`running`, `exited`, …), or `absent`.
    pub container: Option<String>,
}

impl Supervisor {
    /// A supervisor keeping its records in `run_dir`.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Supervisor {
            run_dir: run_dir.into(),
        }
    }

    /// The directory holding state, pid and log files.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// `<run_dir>/<pool>.json`.
    pub fn state_file(&self, pool_id: &str) -> PathBuf {
        RunRecord::State.path(&self.run_dir, pool_id)
    }

    /// `<run_dir>/<pool>.pid`.
    pub fn pid_file(&self, pool_id: &str) -> PathBuf {
        RunRecord::Pid.path(&self.run_dir, pool_id)
    }

    /// `<run_dir>/<pool>.log`.
    pub fn log_file(&self, pool_id: &str) -> PathBuf {
        RunRecord::Log.path(&self.run_dir, pool_id)
    }

    /// The recorded state of a pool's engine, if any.
    pub fn read_state(&self, pool_id: &str) -> Result<Option<RunState>> {
        check_pool(pool_id)?;
        let path = self.state_file(pool_id);
        let text = match crate::read::read_capped_bytes(&path, crate::read::MAX_STATE) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(Error::io("read", &path, error)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|error| Error::Engine {
                pool: pool_id.to_string(),
                message: format!("cannot read the state file {}: {error}", path.display()),
                hint: Some(format!(
                    "if no engine of this pool is running, remove {} and {}",
                    path.display(),
                    self.pid_file(pool_id).display()
                )),
            })
    }

    /// The recorded state of a pool's engine with an interrupted start resolved: an intent
    /// record (no pid) adopts the process that carries its launch nonce, with its pid and start
    /// time written down, or is removed when no such process exists.
    pub fn current(&self, pool_id: &str) -> Result<Option<RunState>> {
        let Some(mut state) = self.read_state(pool_id)? else {
            return Ok(None);
        };
        if state.pid != 0 {
            return Ok(Some(state));
        }
        let found = state.launch.as_deref().and_then(find_launch);
        match found {
            Some(pid) => {
                state.pid = pid;
                state.start_ticks = start_ticks(pid);
                self.write_records(&state)?;
                tracing::info!(
                    pool = pool_id,
                    pid,
                    "adopted an engine whose start was interrupted"
                );
                Ok(Some(state))
            }
            None => {
                self.remove_records(pool_id)?;
                Ok(None)
            }
        }
    }

    /// The records of every other pool whose engine runs now (any configuration file).
    fn running_others(&self, pool_id: &str) -> Vec<RunState> {
        let Ok(entries) = fs::read_dir(&self.run_dir) else {
            return Vec::new();
        };
        let mut running: Vec<RunState> = entries
            .filter_map(|entry| {
                let name = entry.ok()?.file_name();
                let other = RunRecord::State.pool_of(name.to_str()?)?;
                if other == pool_id || check_pool(other).is_err() {
                    return None;
                }
                // Another pool's unreadable record is its own problem, not this start's.
                let state = self.current(other).ok()??;
                alive(&state).then_some(state)
            })
            .collect();
        running.sort_by(|a, b| a.pool_id.cmp(&b.pool_id));
        running
    }

    /// Refuses what a running engine holds that this pool's engine needs: its pool id
    /// ([`Error::AlreadyRunning`], naming the configuration file it was started from when that
    /// is another than `config`) and its host `ports` ([`Error::PortHeld`]: another pool's
    /// running engine, from any configuration file, holds one). Free ports (`0`) hold nothing.
    /// `start` checks this itself; call it before a long prepare to fail early.
    pub fn check_conflicts(
        &self,
        pool_id: &str,
        ports: &[u16],
        config: Option<&Path>,
    ) -> Result<()> {
        check_pool(pool_id)?;
        if let Some(previous) = self.current(pool_id)?
            && alive(&previous)
        {
            return Err(already_running(previous, config));
        }
        self.refuse_held_ports(pool_id, ports)
    }

    fn refuse_held_ports(&self, pool_id: &str, ports: &[u16]) -> Result<()> {
        let wanted: Vec<u16> = ports.iter().copied().filter(|&port| port != 0).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        for other in self.running_others(pool_id) {
            let held = other.held_ports();
            if let Some(port) = wanted.iter().find(|port| held.contains(port)) {
                return Err(Error::PortHeld {
                    pool: pool_id.to_string(),
                    port: *port,
                    holder: other.pool_id.clone(),
                    pid: other.pid,
                    config: other.config.clone(),
                    hint: None,
                });
            }
        }
        Ok(())
    }

    /// Starts a prepared engine in the background and records it; see [`Supervisor::start_from`].
    pub fn start(&self, prepared: &PreparedEngine) -> Result<RunState> {
        self.start_from(prepared, None)
    }

    /// Starts a prepared engine in the background and records it with `config`, the
    /// configuration file it comes from (made absolute). Refuses an external pool (nothing to
    /// start), what [`Supervisor::check_conflicts`] refuses (an engine of this pool id that
    /// already runs, a port another pool's running engine holds) and ports that already accept
    /// connections.
    pub fn start_from(&self, prepared: &PreparedEngine, config: Option<&Path>) -> Result<RunState> {
        let pool = prepared.pool_id.as_str();
        check_pool(pool)?;
        let engine_error = |message: String, hint: Option<String>| Error::Engine {
            pool: pool.to_string(),
            message,
            hint,
        };
        let readiness = &prepared.metadata.readiness;
        let (Some(bin), Some(workdir)) = (&prepared.bin, &prepared.workdir) else {
            return Err(Error::ExternalPool {
                pool: pool.to_string(),
                action: "starting its engine".to_string(),
                endpoint: format!("http://127.0.0.1:{}", readiness.port),
                hint: None,
            });
        };
        if !bin.is_absolute() {
            return Err(engine_error(
                format!(
                    "the engine program {} is not an absolute path",
                    bin.display()
                ),
                None,
            ));
        }
        fs::create_dir_all(&self.run_dir).map_err(|e| Error::io("create", &self.run_dir, e))?;

        if let Some(previous) = self.current(pool)? {
            if alive(&previous) {
                return Err(already_running(previous, config));
            }
            self.remove_records(pool)?;
        }

        let mut ports = vec![readiness.port];
        ports.extend(prepared.ports.iter().copied());
        ports.retain(|&port| port != 0);
        ports.dedup();
        self.refuse_held_ports(pool, &ports)?;
        for port in ports.iter().copied() {
            if port_accepts(port) {
                return Err(engine_error(
                    format!(
                        "port {port} on 127.0.0.1 is already in use by another process, so the engine could not listen on it"
                    ),
                    Some(format!(
                        "stop the process listening on port {port} (see `ss -ltnp 'sport = :{port}'`) or configure another port for pool {pool}"
                    )),
                ));
            }
        }

        // The pool's env (secrets) comes from its file; what the provisioner derived wins.
        let mut env = match &prepared.env_file {
            Some(file) => read_env_file(file)?,
            None => Default::default(),
        };
        env.extend(prepared.env.clone());

        let log = self.log_file(pool);
        rotate_log(&log)?;
        create_private(&log)?;
        let launch = launch_nonce(pool);
        env.insert(LAUNCH_VARIABLE.to_string(), launch.clone());
        let mut state = RunState {
            pool_id: pool.to_string(),
            pid: 0,
            bin: bin.clone(),
            args: prepared.args.clone(),
            ports: prepared.ports.clone(),
            env_file: prepared.env_file.clone(),
            engine_version: prepared.engine_version.clone(),
            log_file: log.clone(),
            started_at_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            readiness: readiness.clone(),
            identity: prepared.metadata.identity.clone(),
            runtime_env: prepared
                .env
                .iter()
                .filter(|(key, _)| {
                    provisioner_core::CONTAINER_RUNTIME_VARIABLES.contains(&key.as_str())
                })
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            config: config.map(absolute_config),
            start_ticks: None,
            launch: Some(launch),
        };
        // Intent first (written and synced): a caller killed after the spawn leaves a record
        // through which the next call finds the engine.
        self.write_records(&state)?;
        let pid = match spawn_detached(&DetachedSpec {
            program: bin.clone(),
            args: prepared.args.clone(),
            env,
            cwd: workdir.clone(),
            log: log.clone(),
        }) {
            Ok(pid) => pid,
            Err(error) => {
                let _ = self.remove_records(pool);
                return Err(error);
            }
        };
        state.pid = pid;
        state.start_ticks = start_ticks(pid);
        if let Err(error) = self.write_records(&state) {
            // An engine nobody knows about could never be stopped with `down`.
            kill_group(pid, Signal::SIGKILL);
            let _ = self.remove_records(pool);
            return Err(error);
        }
        tracing::info!(pool, pid, "engine started");
        Ok(state)
    }

    /// Finds the ports an engine started on a free port (`0`) bound, records them, and points
    /// the readiness probe at the first. Returns whether every port is known now.
    async fn resolve_ports(&self, state: &mut RunState) -> Result<bool> {
        if !state.ports.contains(&0) && state.readiness.port != 0 {
            return Ok(true);
        }
        let bound = match container_publishes(state) {
            Some(inside) => container_ports(state, &inside).await,
            None => listening_ports(state.pid),
        };
        let zeros = state.ports.iter().filter(|p| **p == 0).count();
        if bound.len() < zeros.max(1) {
            return Ok(false);
        }
        let mut found = bound.into_iter();
        for port in state.ports.iter_mut().filter(|p| **p == 0) {
            if let Some(bound) = found.next() {
                *port = bound;
            }
        }
        if state.readiness.port == 0
            && let Some(first) = state.ports.first()
        {
            state.readiness.port = *first;
        }
        self.write_records(state)?;
        tracing::info!(pool = %state.pool_id, ports = ?state.ports, "engine bound its ports");
        Ok(true)
    }

    /// Polls the readiness probe every 100 ms until it answers the expected status (first
    /// finding the port of an engine started on a free port, and recording it in `state`). Fails
    /// early, with the end of the engine's log, when the process exits first.
    pub async fn wait_ready(&self, state: &mut RunState, timeout: Duration) -> Result<()> {
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        let key = probe_key(state)?;
        loop {
            let probe = state.readiness.clone();
            let url = loopback_url(probe.port, &probe.path);
            let last = if self.resolve_ports(state).await? {
                match http_get(probe.port, &probe.path, key.as_ref(), false).await {
                    Ok((status, _)) if status == probe.status && !owns_port(state, probe.port) => {
                        format!(
                            "answered {status}, but from a process that is not this engine (pid {}) or its children",
                            state.pid
                        )
                    }
                    Ok((status, _)) if status == probe.status => return Ok(()),
                    Ok((status, _)) => format!("answered {status}"),
                    Err(error) => error,
                }
            } else {
                "the engine has not bound a port yet".to_string()
            };
            if !alive(state) {
                let tail = log_tail(&state.log_file, LOG_TAIL_LINES);
                return Err(Error::Engine {
                    pool: state.pool_id.clone(),
                    hint: Some(container_start_hint(&tail).unwrap_or_else(|| {
                        format!("read the full log: {}", state.log_file.display())
                    })),
                    message: format!(
                        "the engine (pid {}) exited before it became ready; last lines of {}:\n{tail}",
                        state.pid,
                        state.log_file.display(),
                    ),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Engine {
                    pool: state.pool_id.clone(),
                    message: format!(
                        "not ready after {:.1}s: GET {url} expected status {}, last attempt: {last}",
                        timeout.as_secs_f64(),
                        probe.status
                    ),
                    hint: Some(format!(
                        "see the engine log {}; if the model needs longer to load, raise the readiness timeout",
                        state.log_file.display()
                    )),
                });
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Checks that the running engine reports the prepared build (a no-op without an identity
    /// check).
    pub async fn verify_identity(&self, state: &RunState) -> Result<()> {
        let Some(identity) = &state.identity else {
            return Ok(());
        };
        let port = state.readiness.port;
        let url = loopback_url(port, &identity.path);
        let engine_error = |message: String| Error::Engine {
            pool: state.pool_id.clone(),
            message,
            hint: Some(format!(
                "the process answering on port {port} is not the prepared build; stop it and start the pool again"
            )),
        };
        let key = probe_key(state)?;
        let (status, body) = http_get(port, &identity.path, key.as_ref(), true)
            .await
            .map_err(|error| engine_error(format!("cannot GET {url}: {error}")))?;
        if !(200..300).contains(&status) {
            return Err(engine_error(format!("GET {url} answered {status}")));
        }
        let json: serde_json::Value = serde_json::from_str(&body)
            .map_err(|error| engine_error(format!("GET {url} did not return JSON: {error}")))?;
        let Some(value) = json.pointer(&identity.json_pointer) else {
            return Err(engine_error(format!(
                "GET {url} has no value at `{}`",
                identity.json_pointer
            )));
        };
        let observed = match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        if observed.contains(&identity.contains) {
            Ok(())
        } else {
            Err(engine_error(format!(
                "running engine reports `{observed}`, expected it to contain `{}`",
                identity.contains
            )))
        }
    }

    /// Stops a pool's engine: SIGTERM to its process group, up to `grace` to exit, then SIGKILL.
    /// Returns `false` when nothing was recorded for the pool.
    pub async fn stop(&self, pool_id: &str, grace: Duration) -> Result<bool> {
        let Some(state) = self.current(pool_id)? else {
            // A stray pid file cannot be verified against a binary: drop it, signal nothing.
            remove_if_exists(&self.pid_file(pool_id))?;
            return Ok(false);
        };
        let pgid = state.pid;
        if alive(&state) {
            kill_group(pgid, Signal::SIGTERM);
            let exited = wait_for_group_exit(pgid, grace).await;
            if !exited {
                tracing::info!(
                    pool = pool_id,
                    pgid,
                    "engine ignored SIGTERM; sending SIGKILL"
                );
                kill_group(pgid, Signal::SIGKILL);
                if !wait_for_group_exit(pgid, KILL_WAIT).await {
                    return Err(Error::Engine {
                        pool: pool_id.to_string(),
                        message: format!("process group {pgid} is still alive after SIGKILL"),
                        hint: Some(format!("check it with `ps -o pid,stat,cmd -g {pgid}`")),
                    });
                }
            }
        }
        self.remove_records(pool_id)?;
        Ok(true)
    }

    /// The recorded engine of a pool and whether it is alive and ready; `None` if none recorded.
    pub async fn status(&self, pool_id: &str) -> Result<Option<Status>> {
        let Some(state) = self.current(pool_id)? else {
            return Ok(None);
        };
        let alive = alive(&state);
        // A key that cannot be read now makes the probe go without one (and fail).
        let key = probe_key(&state).ok().flatten();
        let ready = alive
            && matches!(
                http_get(state.readiness.port, &state.readiness.path, key.as_ref(), false).await,
                Ok((status, _)) if status == state.readiness.status
            );
        let container = container_state(&state).await;
        Ok(Some(Status {
            state,
            alive,
            ready,
            container,
        }))
    }

    fn write_records(&self, state: &RunState) -> Result<()> {
        let json = serde_json::to_vec_pretty(state)
            .map_err(|error| Error::data("serialize", self.state_file(&state.pool_id), error))?;
        // Private from the start (mode 0600), like the log: records name files that hold secrets.
        write_private(
            &self.pid_file(&state.pool_id),
            format!("{}\n", state.pid).as_bytes(),
        )?;
        write_private(&self.state_file(&state.pool_id), &json)
    }

    fn remove_records(&self, pool_id: &str) -> Result<()> {
        remove_if_exists(&self.state_file(pool_id))?;
        remove_if_exists(&self.pid_file(pool_id))
    }
}

/// The state of the container behind a `podman run …`/`docker run …` engine, from the runtime's
/// own `inspect` (run with the environment the engine was started with).
async fn container_state(state: &RunState) -> Option<String> {
    let name = container_name(state)?;
    let mut spec = provisioner_core::CommandSpec::new(
        &state.bin.to_string_lossy(),
        ["inspect", "--format", "{{.State.Status}}", name.as_str()],
    );
    spec.env = state.runtime_env.clone();
    let shell = crate::process::HostShell::new(std::sync::Arc::new(provisioner_core::NoProgress));
    match provisioner_core::Shell::run(&shell, &spec).await {
        Ok(output) if output.success() && !output.stdout_truncated => {
            Some(output.stdout.trim().to_string())
        }
        _ => Some("absent".to_string()),
    }
}

/// The container ports a `run` command publishes on a free host port
/// (`--publish 127.0.0.1::<port>`), or `None` for an engine that is not a container run.
fn container_publishes(state: &RunState) -> Option<Vec<u16>> {
    container_name(state)?;
    Some(
        state
            .args
            .windows(2)
            .filter(|pair| pair[0] == "--publish")
            .filter_map(|pair| {
                let mut parts = pair[1].rsplitn(3, ':');
                let inside = parts.next()?.parse::<u16>().ok()?;
                let host = parts.next()?;
                host.is_empty().then_some(inside)
            })
            .collect(),
    )
}

/// The container name of a `podman run`/`docker run` engine, or `None` for anything else.
fn container_name(state: &RunState) -> Option<String> {
    let runtime = state.bin.file_name()?.to_str()?;
    if !matches!(runtime, "podman" | "docker")
        || state.args.first().map(String::as_str) != Some("run")
    {
        return None;
    }
    state
        .args
        .windows(2)
        .find(|pair| pair[0] == "--name")
        .map(|pair| pair[1].clone())
}

/// The host ports the runtime mapped to container ports `inside` (`podman port NAME 8000/tcp`
/// prints `127.0.0.1:34567`); empty until the container exists.
async fn container_ports(state: &RunState, inside: &[u16]) -> Vec<u16> {
    let Some(name) = container_name(state) else {
        return Vec::new();
    };
    let shell = crate::process::HostShell::new(std::sync::Arc::new(provisioner_core::NoProgress));
    let mut ports = Vec::new();
    for port in inside {
        let mut spec = provisioner_core::CommandSpec::new(
            &state.bin.to_string_lossy(),
            ["port".to_string(), name.clone(), format!("{port}/tcp")],
        );
        spec.env = state.runtime_env.clone();
        let Ok(output) = provisioner_core::Shell::run(&shell, &spec).await else {
            return Vec::new();
        };
        let Ok(stdout) = output.whole_stdout(&spec.display()) else {
            return Vec::new();
        };
        let bound = stdout
            .lines()
            .find_map(|line| line.trim().rsplit(':').next()?.parse::<u16>().ok());
        match (output.success(), bound) {
            (true, Some(bound)) => ports.push(bound),
            _ => return Vec::new(),
        }
    }
    ports
}

/// Whether an endpoint answers its readiness probe now (for engines run elsewhere).
pub async fn probe_now(probe: &Probe) -> bool {
    let key = probe
        .auth
        .as_ref()
        .and_then(|auth| read_probe_key(auth).ok());
    matches!(
        http_get(probe.port, &probe.path, key.as_ref(), false).await,
        Ok((status, _)) if status == probe.status
    )
}

/// The key the probes of a recorded engine authenticate with, when it has one; an error (exit
/// 11, naming the file, never a key) when it cannot be read.
fn probe_key(state: &RunState) -> Result<Option<Secret>> {
    let Some(auth) = &state.readiness.auth else {
        return Ok(None);
    };
    read_probe_key(auth)
        .map(Some)
        .map_err(|error| Error::Engine {
            pool: state.pool_id.clone(),
            message: format!("cannot read the key the engine's API asks for: {error}"),
            hint: Some("prepare the pool again: prepare writes the key file".to_string()),
        })
}

/// Creates `path` empty with mode 0600 (an engine's log may show what it was given), so that no
/// other user can read it from its first byte; an existing file is kept as it is.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|e| Error::io("create", path, e))
}

/// Pool ids name files in the run directory: they must be plain names.
fn check_pool(pool_id: &str) -> Result<()> {
    let plain = !pool_id.is_empty()
        && !pool_id.starts_with('.')
        && pool_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if plain {
        Ok(())
    } else {
        Err(Error::Engine {
            pool: pool_id.to_string(),
            message:
                "a pool id must be a plain name (letters, digits, `-_.`) to name its run files"
                    .to_string(),
            hint: None,
        })
    }
}

/// Whether the recorded engine still runs: the process with its pid has the recorded start
/// time (any program: a wrapper script counts) and is not a zombie (exited, not yet reaped by
/// its parent), or, for records without a start time, runs the recorded binary. An intent
/// record (pid 0) is not running.
fn alive(state: &RunState) -> bool {
    if state.pid == 0 {
        return false;
    }
    match state.start_ticks {
        Some(ticks) if Path::new("/proc/self/stat").exists() => {
            start_ticks(state.pid) == Some(ticks) && !is_zombie(state.pid)
        }
        _ => is_running(state.pid, &state.bin),
    }
}

/// Whether `pid` has exited and waits to be reaped (state `Z`, or `X` while it goes away; field
/// 3 of `/proc/<pid>/stat`, proc(5)). A process that does not exist is not a zombie.
pub fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| {
            let (_, after) = text.rsplit_once(')')?;
            after.split_whitespace().next().map(str::to_string)
        })
        .is_some_and(|state| state == "Z" || state == "X")
}

/// Whether the process answering on `port` is the engine: for a native engine, a member of its
/// process group listens on it (`/proc`'s sockets); a container run is answered through the
/// runtime's port forwarding (a rootful runtime has no listening process), so its container is
/// checked by `status` instead. Without procfs nothing can be told, and the answer counts.
fn owns_port(state: &RunState, port: u16) -> bool {
    if container_name(state).is_some() || !Path::new("/proc/net/tcp").exists() {
        return true;
    }
    listening_ports(state.pid).contains(&port)
}

/// Field 22 of `/proc/<pid>/stat` (`starttime`, clock ticks after boot); the fields are counted
/// after the command name's closing parenthesis, since the name may hold spaces (proc(5)).
pub fn start_ticks(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = text.rsplit_once(')')?;
    // `after` starts with field 3 (state); starttime is field 22.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// A nonce for one launch: the pool, this process, and the time in nanoseconds.
fn launch_nonce(pool: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{pool}-{}-{nanos:x}", std::process::id())
}

/// The process group leader whose environment holds `LLAMA_ORCH_LAUNCH=<nonce>` (the engine we
/// spawned; its children inherit the variable, so the lowest pid that leads its group wins).
fn find_launch(nonce: &str) -> Option<u32> {
    let wanted = format!("{LAUNCH_VARIABLE}={nonce}");
    let mut found: Vec<u32> = fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|byte| *byte == 0)
                    .any(|entry| entry == wanted.as_bytes())
            })
        })
        .collect();
    found.sort_unstable();
    let leader = found.iter().copied().find(|pid| {
        i32::try_from(*pid).is_ok_and(|raw| {
            nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(raw)))
                .is_ok_and(|pgid| pgid.as_raw() == raw)
        })
    });
    leader.or_else(|| found.first().copied())
}

fn is_running(pid: u32, bin: &Path) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 1 {
        return false;
    }
    if !Path::new("/proc/self/exe").exists() {
        // Without procfs the binary cannot be checked; existence is the best available answer.
        return nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None).is_ok();
    }
    let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    // A binary replaced while it runs (e.g. by a rebuild) shows up with this suffix.
    let exe = match exe
        .to_str()
        .and_then(|text| text.strip_suffix(" (deleted)"))
    {
        Some(text) => PathBuf::from(text),
        None => exe,
    };
    let expected = fs::canonicalize(bin).unwrap_or_else(|_| bin.to_path_buf());
    exe == expected
}

async fn wait_for_group_exit(pgid: u32, limit: Duration) -> bool {
    let deadline = Instant::now()
        .checked_add(limit)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
    loop {
        if !group_alive(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn port_accepts(port: u16) -> bool {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok()
}

/// The error for an engine of this pool id that runs: started from `config` or, as recorded,
/// from another configuration file.
fn already_running(previous: RunState, config: Option<&Path>) -> Error {
    let other = match (&previous.config, config) {
        (Some(recorded), Some(given)) if !same_file(recorded, given) => Some(recorded.clone()),
        _ => None,
    };
    Error::AlreadyRunning {
        pool: previous.pool_id,
        pid: previous.pid,
        log: previous.log_file,
        config: other,
        hint: None,
    }
}

/// A configuration path as recorded: without symbolic links where it resolves, else absolute.
fn absolute_config(config: &Path) -> PathBuf {
    fs::canonicalize(config)
        .or_else(|_| std::path::absolute(config))
        .unwrap_or_else(|_| config.to_path_buf())
}

/// Whether two paths name one file.
fn same_file(a: &Path, b: &Path) -> bool {
    absolute_config(a) == absolute_config(b)
}

/// Keeps the previous run's log as `<pool>.log.1` ([`RunRecord::PreviousLog`]), so that a new
/// run's log starts empty.
fn rotate_log(log: &Path) -> Result<()> {
    let mut previous = log.as_os_str().to_owned();
    previous.push(".1");
    match fs::rename(log, &previous) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(Error::io("rename", log, error)),
    }
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(Error::io("remove", path, error)),
    }
}

/// The last lines of a log, indented for an error message, the lines that carry an error first.
/// What to do when a container runtime refused to start a prepared container, from its
/// message: the image is gone from its store (the prepared command runs with `--pull=never` and
/// never fetches), or its init binary is missing (`--init`).
fn container_start_hint(tail: &str) -> Option<String> {
    let gone = ["image not known", "No such image", "Unable to find image"];
    if gone.iter().any(|text| tail.contains(text)) {
        return Some(
            "the prepared image is no longer in the container runtime's store (removed since prepare?); the prepared command never pulls (--pull=never): run prepare again (`orchctl engine prepare`), which fetches it as the policy allows, then start it"
                .to_string(),
        );
    }
    if tail.contains("container-init binary not found") || tail.contains("docker-init") {
        return Some(
            "the container runtime's init binary (for --init) is missing since prepare: run prepare again (`orchctl engine prepare`), whose runtime check names what to install"
                .to_string(),
        );
    }
    None
}

fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = fs::read(path) else {
        return "  | (the log cannot be read)".to_string();
    };
    let text = String::from_utf8_lossy(&bytes);
    if text.trim().is_empty() {
        return "  | (the log is empty)".to_string();
    }
    crate::process::tail_of_text(&text, lines)
        .lines()
        .map(|line| format!("  | {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn loopback_url(port: u16, path: &str) -> String {
    if path.starts_with('/') {
        format!("http://127.0.0.1:{port}{path}")
    } else {
        format!("http://127.0.0.1:{port}/{path}")
    }
}

/// `GET http://127.0.0.1:{port}{path}` with a short timeout, no proxy and no redirects, with
/// `Authorization: Bearer <key>` when a key is given; returns the status and, when asked, the
/// body. Errors never hold the key (ureq's do not show request headers).
async fn http_get(
    port: u16,
    path: &str,
    key: Option<&Secret>,
    read_body: bool,
) -> std::result::Result<(u16, String), String> {
    let url = loopback_url(port, path);
    let authorization = key.map(|key| format!("Bearer {}", key.expose()));
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(HTTP_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .build()
            .into();
        let mut request = agent.get(&url);
        if let Some(authorization) = &authorization {
            request = request.header("Authorization", authorization);
        }
        let mut response = request.call().map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        let body = if read_body {
            response
                .body_mut()
                .with_config()
                .limit(MAX_BODY)
                .read_to_string()
                .map_err(|error| error.to_string())?
        } else {
            String::new()
        };
        Ok((status, body))
    })
    .await
    .map_err(|error| error.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids_must_be_plain_names() {
        assert!(check_pool("pool-0_a.b").is_ok());
        for bad in ["", ".x", "a/b", "../x", "a b"] {
            assert!(check_pool(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        fs::write(&log, text).unwrap();
        let tail = log_tail(&log, 20);
        assert!(tail.starts_with("  | line 11\n"), "{tail}");
        assert!(tail.ends_with("  | line 30"), "{tail}");
        assert!(log_tail(&dir.path().join("missing"), 20).contains("cannot be read"));

        // An engine that failed early and then logged on: its error comes first.
        let mut text = String::from("llama_model_load: error loading model: tensor 'x' missing\n");
        text.extend((1..=30).map(|i| format!("line {i}\n")));
        fs::write(&log, text).unwrap();
        let tail = log_tail(&log, 20);
        assert!(
            tail.starts_with("  | llama_model_load: error loading model: tensor 'x' missing\n  | ...\n  | line 11\n"),
            "{tail}"
        );
    }

    #[test]
    fn a_reused_pid_is_not_the_engine() {
        let own = std::process::id();
        let exe = std::env::current_exe().unwrap();
        assert!(is_running(own, &exe));
        assert!(!is_running(own, Path::new("/definitely/not/the/engine")));
        assert!(!is_running(0, &exe));
    }

    #[test]
    fn the_records_are_the_run_records_the_config_check_knows() {
        let supervisor = Supervisor::new("/run");
        let mut previous = supervisor.log_file("a.b").into_os_string();
        previous.push(".1");
        assert_eq!(
            PathBuf::from(previous),
            RunRecord::PreviousLog.path(Path::new("/run"), "a.b")
        );
        assert_eq!(supervisor.state_file("a.b"), Path::new("/run/a.b.json"));
    }

    #[test]
    fn urls_stay_on_loopback() {
        assert_eq!(
            loopback_url(8080, "/health"),
            "http://127.0.0.1:8080/health"
        );
        assert_eq!(loopback_url(8080, "props"), "http://127.0.0.1:8080/props");
    }
}
