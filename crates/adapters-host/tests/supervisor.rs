//! The local supervisor against real processes. The HTTP engine is this test binary itself,
//! started again with `helper_http_server` selected and its port in the environment.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use adapters_host::process::locate;
use adapters_host::{Supervisor, group_alive};
use provisioner_core::{
    Backend, Engine, EngineMetadata, IdentityCheck, Mode, PreparedEngine, Probe,
};

const HELPER_PORT: &str = "ADAPTERS_HOST_HELPER_PORT";
const BUILD_INFO: &str = "b4567-abcdef0";

/// Not a test: the fake engine. It does nothing unless started by the tests below.
#[test]
fn helper_http_server() {
    let Ok(port) = std::env::var(HELPER_PORT) else {
        return;
    };
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request = String::new();
        if reader.read_line(&mut request).is_err() {
            continue;
        }
        loop {
            let mut header = String::new();
            match reader.read_line(&mut header) {
                Ok(0) | Err(_) => break,
                Ok(_) if header == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (status, body) = match path.as_str() {
            "/health" => ("200 OK", r#"{"status":"ok"}"#.to_string()),
            "/props" => ("200 OK", format!(r#"{{"build_info":"{BUILD_INFO}"}}"#)),
            _ => ("404 Not Found", "{}".to_string()),
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

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
        pool_id: pool.to_string(),
        engine: Engine::Llamacpp,
        bin,
        args,
        env,
        ports: vec![port],
        workdir: workdir.to_path_buf(),
        engine_version: "llamacpp-test-version".to_string(),
        metadata: EngineMetadata {
            mode: Mode::Source,
            source: None,
            build_flags: Vec::new(),
            backend: Backend::Cpu,
            readiness: Probe {
                port,
                path: "/health".to_string(),
                status: 200,
                timeout_seconds: 20,
            },
            identity: Some(IdentityCheck {
                path: "/props".to_string(),
                json_pointer: "/build_info".to_string(),
                contains: "abcdef0".to_string(),
            }),
            model_path: PathBuf::from("/dev/null"),
            cache_key: None,
            cache_hit: false,
            metadata_file: None,
            plan_digest: "test".to_string(),
        },
    }
}

/// A prepared engine that is this test binary serving HTTP on `port`.
fn fake_engine(pool: &str, port: u16, workdir: &Path) -> PreparedEngine {
    let mut env = BTreeMap::new();
    env.insert(HELPER_PORT.to_string(), port.to_string());
    let args = [
        "helper_http_server",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ]
    .map(String::from)
    .to_vec();
    prepared(
        pool,
        std::env::current_exe().unwrap(),
        args,
        env,
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

    let state = supervisor.start(&engine).unwrap();
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
            .wait_ready(&state, Duration::from_secs(20))
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
        assert!(error.to_string().contains("already running"), "{error}");
        assert_eq!(error.hint(), Some("orchctl engine down --pool pool-a"));

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

    let state = supervisor.start(&engine).unwrap();
    let error = supervisor
        .wait_ready(&state, Duration::from_secs(20))
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

    let state = supervisor.start(&engine).unwrap();
    let result = supervisor
        .wait_ready(&state, Duration::from_millis(1500))
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
