//! The local supervisor against real processes. The engine is `fake-engine`, a small HTTP
//! server built from `tests/fake_engine.rs` as a binary of this crate.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use adapters_host::process::locate;
use adapters_host::{HostRunFiles, Supervisor, group_alive};
use provisioner_core::{
    Engine, EngineMetadata, Error, FoundBackend, IdentityCheck, Mode, PreparedEngine, Probe,
    ProbeAuth, RunFiles, Secret,
};

const BUILD_INFO: &str = "b4567-abcdef0";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn prepared(
    pool: &str,
    bin: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    port: u16,
    workdir: &Path,
) -> PreparedEngine {
    PreparedEngine {
        pool_id: pool.parse().unwrap(),
        engine: Engine::Llamacpp,
        bin: Some(bin),
        args,
        env,
        env_file: None,
        ports: vec![port],
        workdir: Some(workdir.to_path_buf()),
        engine_version: "llamacpp-test-version".to_string(),
        metadata: EngineMetadata {
            mode: Mode::Source,
            source: None,
            build_flags: Vec::new(),
            backend: Some(FoundBackend::Cpu),
            readiness: Probe {
                port,
                path: "/health".to_string(),
                status: 200,
                timeout_seconds: 20,
                auth: None,
            },
            identity: Some(IdentityCheck {
                path: "/props".to_string(),
                json_pointer: "/build_info".to_string(),
                contains: "abcdef0".to_string(),
            }),
            model_path: Some(PathBuf::from("/dev/null")),
            cache_key: None,
            cache_hit: false,
            metadata_file: None,
            plan_digest: "test".to_string(),
            warnings: Vec::new(),
        },
    }
}

/// A prepared engine that is `fake-engine` serving HTTP on `port` (`0`: a free one).
fn fake_engine(pool: &str, port: u16, workdir: &Path) -> PreparedEngine {
    let args = ["--port", &port.to_string(), "--build-info", BUILD_INFO]
        .map(String::from)
        .to_vec();
    prepared(
        pool,
        PathBuf::from(env!("CARGO_BIN_EXE_fake-engine")),
        args,
        BTreeMap::new(),
        port,
        workdir,
    )
}

#[tokio::test]
async fn starts_checks_and_stops_an_engine() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(dir.path().join("run"));
    let port = free_port();
    let engine = fake_engine("pool-a", port, dir.path());

    let mut state = supervisor.start(&engine).unwrap();
    assert_eq!(state.pool_id, "pool-a");
    assert_eq!(state.ports, vec![port]);
    assert_eq!(state.engine_version, "llamacpp-test-version");
    assert_eq!(state.log_file, dir.path().join("run/pool-a.log"));
    assert_eq!(
        supervisor.state_file("pool-a"),
        dir.path().join("run/pool-a.json")
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("run/pool-a.pid"))
            .unwrap()
            .trim(),
        state.pid.to_string()
    );
    assert_eq!(
        supervisor.read_state("pool-a").unwrap().as_ref(),
        Some(&state)
    );

    let stopped = async {
        supervisor
            .wait_ready(&mut state, Duration::from_secs(20))
            .await
            .unwrap();
        supervisor.verify_identity(&state).await.unwrap();

        let mut other_build = state.clone();
        if let Some(identity) = &mut other_build.identity {
            identity.contains = "fffffff".to_string();
        }
        let error = supervisor
            .verify_identity(&other_build)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "running engine reports `b4567-abcdef0`, expected it to contain `fffffff`"
            ),
            "{error}"
        );

        let status = supervisor.status("pool-a").await.unwrap().unwrap();
        assert!(status.alive && status.ready, "{status:?}");
        assert_eq!(status.state, state);

        let error = supervisor.start(&engine).unwrap_err();
        assert!(
            matches!(&error, Error::AlreadyRunning { pid, .. } if *pid == state.pid),
            "{error:?}"
        );
        assert!(error.to_string().contains("already running"), "{error}");
        assert_eq!(error.code().exit_code(), 14);

        supervisor.stop("pool-a", Duration::from_secs(10)).await
    }
    .await;
    // Stop the engine even when an assertion above failed, so that no process outlives the test.
    if !matches!(stopped, Ok(true)) {
        adapters_host::kill_group(state.pid, adapters_host::process::Signal::SIGKILL);
    }
    assert!(stopped.unwrap());
    assert!(!group_alive(state.pid));
    assert!(supervisor.status("pool-a").await.unwrap().is_none());
    assert!(!supervisor.state_file("pool-a").exists());
    assert!(!dir.path().join("run/pool-a.pid").exists());
    assert!(
        !supervisor
            .stop("pool-a", Duration::from_secs(1))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_busy_port_is_refused_before_spawning() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(dir.path().join("run"));
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();

    let error = supervisor
        .start(&fake_engine("pool-b", port, dir.path()))
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(&format!("port {port} on 127.0.0.1 is already in use")),
        "{message}"
    );
    assert!(error.hint().unwrap().contains(&port.to_string()));
    assert!(!supervisor.state_file("pool-b").exists());
    assert!(supervisor.status("pool-b").await.unwrap().is_none());
}

#[tokio::test]
async fn an_engine_that_exits_at_once_fails_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(dir.path().join("run"));
    let sh = locate("sh").unwrap().path;
    let script = "echo 'loading model'; echo 'error: failed to open model file' >&2; exit 1";
    let engine = prepared(
        "pool-c",
        sh,
        vec!["-c".to_string(), script.to_string()],
        BTreeMap::new(),
        free_port(),
        dir.path(),
    );

    let mut state = supervisor.start(&engine).unwrap();
    let error = supervisor
        .wait_ready(&mut state, Duration::from_secs(20))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("exited before it became ready"),
        "{message}"
    );
    assert!(
        message.contains("error: failed to open model file"),
        "{message}"
    );
    assert!(message.contains("loading model"), "{message}");
    assert!(
        error
            .hint()
            .unwrap()
            .contains(&state.log_file.display().to_string())
    );

    let status = supervisor.status("pool-c").await.unwrap().unwrap();
    assert!(!status.alive && !status.ready);
    // A dead engine does not block the next start, and `down` still cleans up its records.
    assert!(
        supervisor
            .stop("pool-c", Duration::from_secs(1))
            .await
            .unwrap()
    );
    assert!(!supervisor.state_file("pool-c").exists());
}

#[tokio::test]
async fn a_probe_that_never_answers_as_expected_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(dir.path().join("run"));
    let port = free_port();
    let mut engine = fake_engine("pool-d", port, dir.path());
    engine.metadata.readiness.path = "/not-there".to_string();

    let mut state = supervisor.start(&engine).unwrap();
    let result = supervisor
        .wait_ready(&mut state, Duration::from_millis(1500))
        .await;
    let stopped = supervisor.stop("pool-d", Duration::from_secs(10)).await;
    let error = result.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("not ready after 1.5s"), "{message}");
    assert!(
        error
            .hint()
            .unwrap()
            .contains(&state.log_file.display().to_string()),
        "{error:?}"
    );
    assert!(stopped.unwrap());
    assert!(!group_alive(state.pid));
}

#[tokio::test]
async fn a_free_port_is_found_recorded_and_probed() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(dir.path().join("run"));
    let engine = fake_engine("pool-e", 0, dir.path());
    let mut state = supervisor.start(&engine).unwrap();
    assert_eq!(state.ports, vec![0]);
    let ready = supervisor
        .wait_ready(&mut state, Duration::from_secs(20))
        .await;
    let bound = state.ports[0];
    let recorded = supervisor.read_state("pool-e").unwrap().unwrap();
    let status = supervisor.status("pool-e").await.unwrap().unwrap();
    let stopped = supervisor.stop("pool-e", Duration::from_secs(10)).await;
    ready.unwrap();
    assert_ne!(bound, 0);
    assert_eq!(state.readiness.port, bound);
    assert_eq!(recorded.ports, vec![bound]);
    assert_eq!(recorded.readiness.port, bound);
    assert!(status.ready, "{status:?}");
    assert!(stopped.unwrap());
}

#[tokio::test]
async fn the_env_file_reaches_the_engine_and_nothing_records_its_values() {
    const SECRET: &str = "sk-planted-secret-value";
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let supervisor = Supervisor::new(&run_dir);
    let files = HostRunFiles::new(&run_dir);
    let pool: provisioner_core::PoolId = "pool-f".parse().unwrap();
    let env_file = files
        .write_private(&pool, "env", &Secret::new(format!("API_TOKEN={SECRET}\n")))
        .await
        .unwrap();
    let port = free_port();
    let mut engine = fake_engine("pool-f", port, dir.path());
    engine.env_file = Some(env_file.clone());
    let mut state = supervisor.start(&engine).unwrap();
    let ready = supervisor
        .wait_ready(&mut state, Duration::from_secs(20))
        .await;
    let seen = ureq::get(&format!("http://127.0.0.1:{port}/env/API_TOKEN"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok());
    let stopped = supervisor.stop("pool-f", Duration::from_secs(10)).await;
    ready.unwrap();
    assert!(stopped.unwrap());
    assert_eq!(seen.as_deref(), Some(SECRET));
    assert_eq!(state.env_file.as_deref(), Some(env_file.as_path()));
    for record in [
        supervisor.state_file("pool-f"),
        supervisor.log_file("pool-f"),
    ] {
        if let Ok(text) = fs::read_to_string(&record) {
            assert!(!text.contains(SECRET), "{}: {text}", record.display());
        }
    }
}

/// The mode bits of a file.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn probes_authenticate_with_the_key_file_and_records_hold_its_path_only() {
    const KEY: &str = "sk-supervisor-key-5d1e";
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let supervisor = Supervisor::new(&run_dir);
    let files = HostRunFiles::new(&run_dir);
    let pool: provisioner_core::PoolId = "pool-k".parse().unwrap();
    let key_file = files
        .write_private(&pool, "api-key", &Secret::new(format!("{KEY}\nsk-other\n")))
        .await
        .unwrap();
    let port = free_port();
    let mut engine = fake_engine("pool-k", port, dir.path());
    engine.args.extend([
        "--api-key-file".to_string(),
        key_file.to_string_lossy().to_string(),
    ]);
    engine.metadata.readiness.auth = Some(ProbeAuth::KeyFile {
        path: key_file.clone(),
    });
    let mut state = supervisor.start(&engine).unwrap();
    let checked = async {
        supervisor
            .wait_ready(&mut state, Duration::from_secs(20))
            .await?;
        supervisor.verify_identity(&state).await?;
        let status = supervisor.status("pool-k").await?.expect("recorded");
        let mut without = state.clone();
        without.readiness.auth = None;
        let refused = supervisor.verify_identity(&without).await;
        Ok::<_, Error>((status, refused))
    }
    .await;
    let stopped = supervisor.stop("pool-k", Duration::from_secs(10)).await;
    let (status, refused) = checked.unwrap();
    assert!(stopped.unwrap());
    assert!(status.ready, "{status:?}");
    let refused = refused.unwrap_err().to_string();
    assert!(refused.contains("answered 401"), "{refused}");
    assert!(!refused.contains(KEY), "{refused}");
    assert_eq!(
        state.readiness.auth,
        Some(ProbeAuth::KeyFile {
            path: key_file.clone()
        })
    );
    // The state, pid and log files are private from the start, and only the key file holds
    // the key.
    assert_eq!(mode(&key_file), 0o600);
    let log = supervisor.log_file("pool-k");
    assert_eq!(mode(&log), 0o600);
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("--api-key-file"), "{text}");
    assert!(!text.contains(KEY), "{text}");
}

#[tokio::test]
async fn records_are_private_while_the_engine_runs() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(dir.path().join("run"));
    let port = free_port();
    let engine = fake_engine("pool-m", port, dir.path());
    let state = supervisor.start(&engine).unwrap();
    let modes = [
        supervisor.state_file("pool-m"),
        supervisor.pid_file("pool-m"),
        supervisor.log_file("pool-m"),
    ]
    .map(|file| (file.clone(), mode(&file)));
    let stopped = supervisor.stop("pool-m", Duration::from_secs(10)).await;
    assert!(stopped.unwrap(), "{state:?}");
    for (file, mode) in modes {
        assert_eq!(mode, 0o600, "{}", file.display());
    }
}

#[tokio::test]
async fn probes_authenticate_with_a_key_from_the_env_file() {
    const KEY: &str = "sk-env-key-91c4";
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let supervisor = Supervisor::new(&run_dir);
    let files = HostRunFiles::new(&run_dir);
    let pool: provisioner_core::PoolId = "pool-n".parse().unwrap();
    let env_file = files
        .write_private(
            &pool,
            "env",
            &Secret::new(format!("LLAMA_API_KEY={KEY},sk-second\n")),
        )
        .await
        .unwrap();
    let port = free_port();
    let mut engine = fake_engine("pool-n", port, dir.path());
    engine.env_file = Some(env_file.clone());
    engine.metadata.readiness.auth = Some(ProbeAuth::EnvFile {
        path: env_file,
        variable: "LLAMA_API_KEY".to_string(),
        comma_separated: true,
    });
    let mut state = supervisor.start(&engine).unwrap();
    let checked = async {
        supervisor
            .wait_ready(&mut state, Duration::from_secs(20))
            .await?;
        supervisor.verify_identity(&state).await
    }
    .await;
    let stopped = supervisor.stop("pool-n", Duration::from_secs(10)).await;
    checked.unwrap();
    assert!(stopped.unwrap());
}

#[tokio::test]
async fn an_external_pool_is_not_started() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(dir.path().join("run"));
    let mut engine = fake_engine("pool-g", 8080, dir.path());
    engine.bin = None;
    engine.workdir = None;
    let error = supervisor.start(&engine).unwrap_err();
    assert!(matches!(error, Error::ExternalPool { .. }), "{error:?}");
    assert!(!supervisor.state_file("pool-g").exists());
}

#[tokio::test]
async fn a_pool_id_or_a_port_held_by_an_engine_of_another_config_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(dir.path().join("run"));
    let first = dir.path().join("first.yaml");
    let second = dir.path().join("second.yaml");
    for config in [&first, &second] {
        fs::write(config, "pools: []\n").unwrap();
    }
    let port = free_port();
    let engine = fake_engine("pool-h", port, dir.path());
    let state = supervisor.start_from(&engine, Some(&first)).unwrap();
    let checked = std::panic::catch_unwind(|| {
        let first = fs::canonicalize(&first).unwrap();
        assert_eq!(state.config.as_deref(), Some(first.as_path()));
        assert_eq!(
            supervisor.read_state("pool-h").unwrap().unwrap().config,
            Some(first.clone())
        );

        // The same pool id from another file: says which file runs it.
        let error = supervisor.start_from(&engine, Some(&second)).unwrap_err();
        match &error {
            Error::AlreadyRunning { pid, config, .. } => {
                assert_eq!(*pid, state.pid);
                assert_eq!(config.as_deref(), Some(first.as_path()));
            }
            other => panic!("{other:?}"),
        }
        let message = error.to_string();
        assert!(
            message.contains(&format!(
                "engine `pool-h` is already running as pid {}, started from another configuration file, {}",
                state.pid,
                first.display()
            )),
            "{message}"
        );
        assert_eq!(error.code().exit_code(), 14);
        // From its own file (however it is spelt), no other file is named.
        let spelt = dir.path().join(".").join("first.yaml");
        let error = supervisor.start_from(&engine, Some(&spelt)).unwrap_err();
        assert!(
            matches!(&error, Error::AlreadyRunning { config: None, .. }),
            "{error:?}"
        );

        // Another pool on a port the running engine holds, from any file, before spawning.
        let other = fake_engine("pool-i", port, dir.path());
        for config in [Some(second.as_path()), Some(first.as_path()), None] {
            let error = supervisor.start_from(&other, config).unwrap_err();
            match &error {
                Error::PortHeld {
                    pool,
                    port: held,
                    holder,
                    pid,
                    config,
                    ..
                } => {
                    assert_eq!(
                        (pool.as_str(), *held, holder.as_str(), *pid),
                        ("pool-i", port, "pool-h", state.pid)
                    );
                    assert_eq!(config.as_deref(), Some(first.as_path()));
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(
                error.to_string(),
                format!(
                    "host port {port}, which pool `pool-i` needs, is held by the running engine of pool `pool-h` (pid {}, started from {})",
                    state.pid,
                    first.display()
                )
            );
            assert_eq!(error.code().exit_code(), 14);
        }
        assert!(!supervisor.state_file("pool-i").exists());
        assert!(matches!(
            supervisor.check_conflicts("pool-i", &[port], Some(&second)),
            Err(Error::PortHeld { .. })
        ));
        // A free port, or another port, is not held.
        supervisor
            .check_conflicts("pool-i", &[0, free_port()], Some(&second))
            .unwrap();
    });
    let stopped = supervisor.stop("pool-h", Duration::from_secs(10)).await;
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
    assert!(stopped.unwrap());
    // A stopped engine holds nothing.
    supervisor
        .check_conflicts("pool-i", &[port], Some(&second))
        .unwrap();
}

#[test]
fn records_of_older_versions_without_a_config_file_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(dir.path());
    let record = serde_json::json!({
        "pool_id": "old",
        "pid": 12345,
        "bin": "/usr/bin/llama-server",
        "args": [],
        "ports": [8080],
        "engine_version": "v",
        "log_file": dir.path().join("old.log"),
        "started_at_unix": 0,
        "readiness": { "port": 8080, "path": "/health", "status": 200, "timeout_seconds": 1 },
        "identity": null
    });
    fs::write(supervisor.state_file("old"), record.to_string()).unwrap();
    let state = supervisor.read_state("old").unwrap().unwrap();
    assert_eq!(state.config, None);
    assert_eq!(state.held_ports(), vec![8080]);
}

/// An engine that is a shell script around the server (as distribution packages and container
/// entrypoints ship them): `/proc/<pid>/exe` is the shell, yet it is the process we spawned.
#[tokio::test]
async fn an_engine_that_is_a_wrapper_script_is_known_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("llama-server");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n# a wrapper that stays the parent of the server\n{} \"$@\"\n",
            env!("CARGO_BIN_EXE_fake-engine")
        ),
    )
    .unwrap();
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let port = free_port();
    let mut engine = fake_engine("wrapped", port, dir.path());
    engine.bin = Some(wrapper);
    let supervisor = Supervisor::new(dir.path().join("run"));
    let mut state = supervisor.start(&engine).unwrap();
    supervisor
        .wait_ready(&mut state, Duration::from_secs(20))
        .await
        .expect("a wrapper that serves is ready, not dead");
    let status = supervisor.status("wrapped").await.unwrap().unwrap();
    assert!(status.alive && status.ready, "{status:?}");
    assert!(
        supervisor
            .stop("wrapped", Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(!group_alive(state.pid));
}

/// A start interrupted after the spawn and before the pid was written leaves an intent record;
/// the next call finds the engine by its launch nonce, adopts it, and `down` stops it.
#[tokio::test]
async fn an_interrupted_start_is_adopted_through_its_launch_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let supervisor = Supervisor::new(&run);
    let port = free_port();
    let engine = fake_engine("interrupted", port, dir.path());
    let mut state = supervisor.start(&engine).unwrap();
    let pid = state.pid;
    supervisor
        .wait_ready(&mut state, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(state.launch.is_some() && state.start_ticks.is_some());

    // What a kill between spawn and confirmation leaves: the intent, no pid.
    let mut intent = state.clone();
    intent.pid = 0;
    intent.start_ticks = None;
    fs::write(
        supervisor.state_file("interrupted"),
        serde_json::to_vec(&intent).unwrap(),
    )
    .unwrap();
    fs::remove_file(supervisor.pid_file("interrupted")).unwrap();

    let status = supervisor.status("interrupted").await.unwrap().unwrap();
    assert_eq!(status.state.pid, pid, "adopted by its nonce");
    assert!(status.alive && status.ready, "{status:?}");
    let recorded: serde_json::Value =
        serde_json::from_slice(&fs::read(supervisor.state_file("interrupted")).unwrap()).unwrap();
    assert_eq!(recorded["pid"], pid, "the adoption is written down");
    assert!(
        supervisor
            .stop("interrupted", Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(!group_alive(pid));

    // An intent whose engine never started is dropped: nothing runs, the pool can start.
    fs::write(
        supervisor.state_file("interrupted"),
        serde_json::to_vec(&intent).unwrap(),
    )
    .unwrap();
    assert!(supervisor.status("interrupted").await.unwrap().is_none());
    assert!(!supervisor.state_file("interrupted").exists());
}

/// A pid that was reused by another process after the engine exited is not the engine: the
/// start time differs.
#[test]
fn a_record_whose_start_time_differs_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(dir.path());
    let engine = fake_engine("reused", free_port(), dir.path());
    let mut state = supervisor.start(&engine).unwrap();
    let pid = state.pid;
    state.start_ticks = state.start_ticks.map(|t| t + 1);
    fs::write(
        supervisor.state_file("reused"),
        serde_json::to_vec(&state).unwrap(),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime
        .block_on(supervisor.status("reused"))
        .unwrap()
        .unwrap();
    assert!(!status.alive, "another start time is another process");
    // Clean up the real one.
    adapters_host::kill_group(pid, adapters_host::process::Signal::SIGKILL);
}

/// An engine that exited but was not reaped yet (a zombie: its parent, often pid 1 in a
/// container, has not waited for it) is not running: `status` says so and `up` may start anew.
#[test]
fn a_zombie_engine_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(dir.path());
    let engine = fake_engine("zombie", free_port(), dir.path());
    let mut state = supervisor.start(&engine).unwrap();
    adapters_host::kill_group(state.pid, adapters_host::process::Signal::SIGKILL);
    // A child of this test that exits and is not waited for stays a zombie.
    #[allow(clippy::disallowed_methods)] // the test makes a zombie of its own
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !adapters_host::supervisor::is_zombie(pid) {
        assert!(std::time::Instant::now() < deadline, "no zombie");
        std::thread::sleep(Duration::from_millis(20));
    }
    state.pid = pid;
    state.start_ticks = adapters_host::supervisor::start_ticks(pid);
    assert!(state.start_ticks.is_some());
    fs::write(
        supervisor.state_file("zombie"),
        serde_json::to_vec(&state).unwrap(),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime
        .block_on(supervisor.status("zombie"))
        .unwrap()
        .unwrap();
    assert!(!status.alive, "a zombie is not running");
    child.wait().unwrap();
    assert!(!adapters_host::supervisor::is_zombie(pid));
}

/// Readiness proves the answer comes from the engine we spawned: another process answering on
/// the port (a second `up` whose own engine died on `bind`) does not make it ready.
#[tokio::test]
async fn an_answer_from_another_process_on_the_port_is_not_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Our "engine" never listens.
    let sleep = locate("sleep").expect("sleep on PATH").path;
    let mut engine = prepared(
        "impostor",
        sleep,
        vec!["30".to_string()],
        BTreeMap::new(),
        port,
        dir.path(),
    );
    engine.metadata.readiness.timeout_seconds = 2;
    let supervisor = Supervisor::new(dir.path().join("run"));
    let mut state = supervisor.start(&engine).unwrap();
    // Someone else answers on the port.
    let other = Supervisor::new(dir.path().join("other-run"));
    let mut answering = other
        .start(&fake_engine("answering", port, dir.path()))
        .unwrap();
    other
        .wait_ready(&mut answering, Duration::from_secs(20))
        .await
        .unwrap();
    let error = supervisor
        .wait_ready(&mut state, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not this engine"), "{error}");
    supervisor
        .stop("impostor", Duration::from_secs(1))
        .await
        .unwrap();
    other
        .stop("answering", Duration::from_secs(5))
        .await
        .unwrap();
}
