//! The real thing: the offline llama.cpp fixture cloned by file:// URL, built with real cmake,
//! `llama-server` brought up by `orchctl`, a real completion from the tiny GGUF model, then down.
//! Also the bad inputs that need real git and cmake. The cold build (~12 minutes on 2 cores)
//! happens once per machine: every test shares one keyed cache and the provisioner's own lock.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provisioner_core::{Config, EngineProvisioner, Format, NoProgress};
use serde_json::{Value, json};
use tests::{
    TEST_CMAKE_FLAGS, fixtures, free_port, http_get, http_post_json, orchctl,
    orchctl_json as run_json, shared_cache, source_build, write_source_config,
};

/// The shared source build (built once per machine, see `tests::source_build`).
fn main_build() -> &'static Value {
    tests::source_build()
}

#[test]
fn prepare_up_complete_status_down() {
    let prepared = main_build();
    let commit = &fixtures().commit;
    assert_eq!(prepared["metadata"]["source"]["commit"], json!(commit));
    assert_eq!(prepared["metadata"]["backend"], "cpu");
    // The built server's --help lists --offline (learnt once at prepare): it runs with it, and
    // the up below shows it decodes that way.
    assert!(
        prepared["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--offline")),
        "{}",
        prepared["args"]
    );
    let version = prepared["engine_version"].as_str().unwrap();
    assert!(
        version.starts_with(&format!("llamacpp-{}-cpu-", &commit[..12])),
        "{version}"
    );

    let dir = tempfile::tempdir().unwrap();
    let canary = dir.path().join("pwned");
    let alias = format!("$(touch {});rm -rf /nonexistent", canary.display());
    let port = free_port();
    let config = write_source_config(
        dir.path(),
        "e2e-up",
        port,
        TEST_CMAKE_FLAGS,
        &["--alias", &alias, "-ngl", "0", "--parallel", "1"],
    );
    let cache = shared_cache();

    let (code, up, stderr) = run_json(&cache, &["engine", "up"], &config);
    assert_eq!(code, 0, "up failed: {stderr}");
    assert_eq!(up["engine_version"], json!(version));
    assert_eq!(
        up["cache_hit"], true,
        "the shared build was already prepared"
    );
    let base = format!("http://127.0.0.1:{port}");

    let outcome = std::panic::catch_unwind(|| {
        let (status, body) = http_get(&format!("{base}/health"));
        assert_eq!(status, 200, "{body}");
        let (status, completion) = http_post_json(
            &format!("{base}/completion"),
            &json!({"prompt": "hello", "n_predict": 8, "temperature": 0, "seed": 1, "ignore_eos": true}),
        );
        assert_eq!(status, 200, "{completion}");
        assert_eq!(completion["tokens_predicted"], 8, "{completion}");
        assert_eq!(completion["timings"]["predicted_n"], 8, "{completion}");

        let (_, props) = http_get(&format!("{base}/props"));
        let props: Value = serde_json::from_str(&props).unwrap();
        assert!(
            props["build_info"].as_str().unwrap().contains(&commit[..9]),
            "{props}"
        );

        // The flag with shell metacharacters reached llama-server as one literal argument.
        let (_, models) = http_get(&format!("{base}/v1/models"));
        assert!(models.contains("$(touch"), "{models}");
        assert!(!canary.exists(), "a flag was interpreted by a shell");

        let (code, status, stderr) = run_json(&cache, &["engine", "status"], &config);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(
            (status["alive"].clone(), status["ready"].clone()),
            (json!(true), json!(true))
        );
        assert_eq!(status["engine_version"], json!(version));
    });

    let (code, down, stderr) = run_json(&cache, &["engine", "down"], &config);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(down["stopped"], true);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    let (code, status, _) = run_json(&cache, &["engine", "status"], &config);
    assert_eq!((code, status["running"].clone()), (12, json!(false)));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still listening"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_prepare_runs_no_git_and_no_cmake() {
    let prepared = tokio::task::spawn_blocking(main_build).await.unwrap();
    let log = shared_cache().join("llamacpp/logs").join(format!(
        "{}.log",
        prepared["metadata"]["cache_key"].as_str().unwrap()
    ));
    let log_size = std::fs::metadata(&log).map(|m| m.len()).ok();

    let progress = Arc::new(NoProgress);
    let shell = Arc::new(provisioner_core::RecordingShell::new(Arc::new(
        adapters_host::process::HostShell::new(progress.clone()),
    )));
    let settings = cli::wiring::Settings {
        home: PathBuf::from(std::env::var_os("HOME").unwrap()),
        cache_dir: Some(shared_cache()),
        models_dir: Some(shared_cache().join("models")),
        ..Default::default()
    };
    let provisioner = cli::wiring::provisioner_with_shell(&settings, progress, shell.clone());

    let dir = tempfile::tempdir().unwrap();
    let config_path =
        write_source_config(dir.path(), "e2e-warm", free_port(), TEST_CMAKE_FLAGS, &[]);
    let text = std::fs::read_to_string(&config_path).unwrap();
    let config = Config::parse(&text, Format::Yaml, "warm.yaml").unwrap();
    let warm = provisioner.prepare(&config.pools[0]).await.unwrap();

    assert!(warm.metadata.cache_hit);
    assert_eq!(shell.count(), 0, "a warm prepare ran a command");
    assert_eq!(json!(warm.engine_version), prepared["engine_version"]);
    assert_eq!(
        std::fs::metadata(&log).map(|m| m.len()).ok(),
        log_size,
        "the build log grew"
    );
}

fn no_builds(cache: &Path) {
    let builds = cache.join("llamacpp/builds-v1");
    let entries = std::fs::read_dir(&builds).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        entries,
        0,
        "something was installed under {}",
        builds.display()
    );
    let staging = cache.join("llamacpp/.staging");
    let entries = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        entries,
        0,
        "staging left behind under {}",
        staging.display()
    );
}

#[test]
fn a_ref_that_does_not_exist_is_a_source_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_source_config(dir.path(), "bad-ref", free_port(), TEST_CMAKE_FLAGS, &[]);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            &format!("ref: {}", fixtures().reference),
            "ref: no-such-tag",
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let (code, _, stderr) = run_json(&cache, &["engine", "prepare"], &config);
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("no-such-tag"), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
    no_builds(&cache);
}

#[test]
fn an_unreachable_repository_is_a_source_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_source_config(dir.path(), "bad-repo", free_port(), TEST_CMAKE_FLAGS, &[]);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(&fixtures().repo_url, "file:///nonexistent/llama.cpp.git"),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let (code, _, stderr) = run_json(&cache, &["engine", "prepare"], &config);
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("cannot reach the repository"), "{stderr}");
    no_builds(&cache);
    let mirrors = std::fs::read_dir(cache.join("llamacpp/git"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(mirrors, 0, "a failed clone left a mirror behind");
}

#[test]
fn cuda_without_a_toolkit_fails_fast_and_never_builds_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_source_config(
        dir.path(),
        "no-cuda",
        free_port(),
        &["-DGGML_NATIVE=OFF", "-DLLAMA_CUBLAS=ON"],
        &[],
    );
    let cache = dir.path().join("cache");
    let started = Instant::now();
    let output = orchctl(&cache)
        .args(["engine", "prepare", "--config"])
        .arg(&config)
        .env_remove("CUDA_HOME")
        .env_remove("CUDA_PATH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if std::path::Path::new("/usr/local/cuda/bin/nvcc").exists() {
        panic!("this machine has a CUDA toolkit; the fail-fast case cannot be checked here");
    }
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("nvcc"), "{stderr}");
    assert!(stderr.contains("/usr/local/cuda"), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not fast: {:?}",
        started.elapsed()
    );
    assert!(
        !cache.join("llamacpp/git").exists(),
        "preflight should fail before fetching"
    );
    no_builds(&cache);
}

#[test]
fn a_configure_failure_shows_cmake_output_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_source_config(
        dir.path(),
        "bad-configure",
        free_port(),
        &["-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON"],
        &[],
    );
    let cache = dir.path().join("cache");
    let (code, _, stderr) = run_json(&cache, &["engine", "prepare"], &config);
    assert_eq!(code, 7, "{stderr}");
    assert!(
        stderr.contains("GGML_BACKEND_DL requires BUILD_SHARED_LIBS"),
        "{stderr}"
    );
    assert!(stderr.contains("full log: "), "{stderr}");
    let log = stderr
        .split("full log: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap()
        .trim();
    let text = std::fs::read_to_string(log).expect("the log named in the error exists");
    assert!(text.contains("GGML_BACKEND_DL requires BUILD_SHARED_LIBS"));
    no_builds(&cache);
}

/// Starts `orchctl engine prepare` and waits until the compiler is running under it.
fn start_build_and_wait(cache: &Path, config: &Path) -> (Child, u32) {
    let mut child = orchctl(cache)
        .args(["engine", "prepare", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(Instant::now() < deadline, "the build never started");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("prepare exited early: {status}");
        }
        let staging = cache.join("llamacpp/.staging");
        let group = std::fs::read_dir(&staging).ok().and_then(|entries| {
            entries
                .filter_map(|e| e.ok())
                .find_map(|e| std::fs::read_to_string(e.path().join("process-group")).ok())
        });
        let building = std::fs::read_dir(cache.join("llamacpp/logs"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .and_then(|e| std::fs::read_to_string(e.path()).ok())
            .is_some_and(|log| log.contains("Building C"));
        if let (Some(group), true) = (group, building) {
            return (child, group.trim().parse().unwrap());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn group_alive(pgid: u32) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid as i32), None).is_ok()
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_build_killed_half_way_is_never_reused() {
    // Warm ccache first so the rebuilds below take seconds, not minutes.
    main_build();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let config = write_source_config(dir.path(), "killed", free_port(), TEST_CMAKE_FLAGS, &[]);

    // Ctrl-C/SIGTERM: the provisioner kills the build's process group and removes staging.
    let (mut child, group) = start_build_and_wait(&cache, &config);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "cancelled prepare exit code");
    wait_until("the build's process group is gone", || !group_alive(group));
    no_builds(&cache);

    // SIGKILL: nothing can clean up; the orphaned build keeps running in its own group.
    std::fs::remove_dir_all(cache.join("llamacpp/logs")).ok();
    let (mut child, group) = start_build_and_wait(&cache, &config);
    child.kill().unwrap();
    child.wait().unwrap();

    // The next prepare kills the orphan, discards its staging dir and builds cleanly.
    let (code, prepared, stderr) = run_json(&cache, &["engine", "prepare"], &config);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !group_alive(group),
        "the orphaned build survived the next prepare"
    );
    assert_eq!(prepared["metadata"]["cache_hit"], false);
    assert_eq!(prepared["engine_version"], main_build()["engine_version"]);
    let bin = prepared["bin"].as_str().unwrap();
    #[allow(clippy::disallowed_methods)] // the test checks the installed binary runs
    let version = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&version.stderr);
    assert!(text.contains(&fixtures().commit[..9]), "{text}");
    let staging = std::fs::read_dir(cache.join("llamacpp/.staging"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(staging, 0);
}

/// Packs the llama-server built from source into a release-style archive
/// (`llama-b0-bin/llama-server`) and returns its sha256.
fn release_archive(dir: &Path) -> (PathBuf, String) {
    let built = PathBuf::from(main_build()["bin"].as_str().unwrap());
    let root = dir.join("pack/llama-b0-bin");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(&built, root.join("llama-server")).unwrap();
    let archive = dir.join("llama-b0-bin-linux-x64.tar.gz");
    #[allow(clippy::disallowed_methods)] // the test makes its fixture archive with tar
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(dir.join("pack"))
        .arg("llama-b0-bin")
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&archive).unwrap();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
    (archive, hex::encode(digest))
}

fn write_binary_config(dir: &Path, pool: &str, url: &str, checksum: &str, port: u16) -> PathBuf {
    let text = format!(
        r#"pools:
  - id: {pool}
    engine: llamacpp
    provisioning:
      mode: binary
      binary:
        url: {url}
        checksum: {checksum}
      model:
        ref: file:{model}
      ports: [{port}]
      flags: [--parallel, "1"]
"#,
        model = fixtures().model.display(),
    );
    let path = dir.join(format!("{pool}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn binary_mode_installs_a_pinned_archive_from_loopback_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, sha256) = release_archive(dir.path());
    let served = dir.path().join("www");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::rename(&archive, served.join("llama-b0-bin-linux-x64.tar.gz")).unwrap();
    let server = tests::LoopbackServer::start(&served);
    let url = format!(
        "http://127.0.0.1:{}/llama-b0-bin-linux-x64.tar.gz",
        server.port
    );
    let cache = dir.path().join("cache");
    let port = free_port();

    // A wrong checksum installs nothing.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let config = write_binary_config(dir.path(), "bin-wrong", &url, &wrong, port);
    let (code, _, stderr) = run_json(&cache, &["engine", "prepare"], &config);
    assert_ne!(code, 0, "a checksum mismatch must fail");
    assert!(
        stderr.contains(&sha256) && stderr.contains(&"0".repeat(64)),
        "expected vs actual: {stderr}"
    );
    let installed = std::fs::read_dir(cache.join("llamacpp/bin"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("sha256-"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(installed, 0, "a mismatching download was installed");

    let config = write_binary_config(
        dir.path(),
        "bin-up",
        &url,
        &format!("sha256:{sha256}"),
        port,
    );
    let (code, up, stderr) = run_json(&cache, &["engine", "up"], &config);
    assert_eq!(code, 0, "up failed: {stderr}");
    let commit = &fixtures().commit;
    let expected_version = format!("llamacpp-b0-{}-sha256-{}", &commit[..9], &sha256[..12]);
    assert_eq!(up["engine_version"], json!(expected_version));
    assert_eq!(up["cache_hit"], false);
    let base = format!("http://127.0.0.1:{port}");
    let outcome = std::panic::catch_unwind(|| {
        let (status, completion) = http_post_json(
            &format!("{base}/completion"),
            &json!({"prompt": "hello", "n_predict": 8, "temperature": 0, "ignore_eos": true}),
        );
        assert_eq!(status, 200, "{completion}");
        assert_eq!(completion["tokens_predicted"], 8, "{completion}");
    });
    let (code, _, stderr) = run_json(&cache, &["engine", "down"], &config);
    assert_eq!(code, 0, "{stderr}");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }

    // The warm path contacts nothing: with the server gone, prepare is still a cache hit.
    drop(server);
    let (code, prepared, stderr) = run_json(&cache, &["engine", "prepare"], &config);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(prepared["metadata"]["cache_hit"], true);
    assert_eq!(prepared["engine_version"], json!(expected_version));
    // The prebuilt's --help was asked once at install and lists --offline: it runs offline.
    assert!(
        prepared["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--offline")),
        "{}",
        prepared["args"]
    );
}

/// `ports: [0]`: llama-server is started on a free port, `up` finds the port it bound, records
/// it for `status`, and prints it; a second engine on `[0]` never conflicts with the first.
#[test]
fn up_on_a_free_port_reports_the_port_it_bound() {
    let _ = source_build();
    let dir = tempfile::tempdir().unwrap();
    let cache = shared_cache();
    let first = write_source_config(dir.path(), "e2e-free-a", 0, TEST_CMAKE_FLAGS, &[]);
    let second = write_source_config(dir.path(), "e2e-free-b", 0, TEST_CMAKE_FLAGS, &[]);
    let (code, up_a, stderr) = run_json(&cache, &["engine", "up"], &first);
    assert_eq!(code, 0, "up failed: {stderr}");
    let (code_b, up_b, stderr_b) = run_json(&cache, &["engine", "up"], &second);
    let outcome = std::panic::catch_unwind(|| {
        assert_eq!(code_b, 0, "the second free-port pool failed: {stderr_b}");
        let port = up_a["ports"][0].as_u64().unwrap() as u16;
        assert_ne!(port, 0, "{up_a}");
        assert_ne!(up_b["ports"][0], up_a["ports"][0]);
        assert_eq!(up_a["url"], json!(format!("http://127.0.0.1:{port}")));
        let base = format!("http://127.0.0.1:{port}");
        let (status, completion) = http_post_json(
            &format!("{base}/completion"),
            &json!({"prompt": "hello", "n_predict": 8, "temperature": 0, "ignore_eos": true}),
        );
        assert_eq!(status, 200, "{completion}");
        assert_eq!(completion["tokens_predicted"], 8, "{completion}");
        let (code, status, stderr) = run_json(&cache, &["engine", "status"], &first);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(status["ports"], json!([port]));
        assert_eq!(status["ready"], json!(true));
    });
    for config in [&first, &second] {
        let (code, _, stderr) = run_json(&cache, &["engine", "down"], config);
        assert_eq!(code, 0, "{stderr}");
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// POST JSON with an optional bearer key; returns the status and the JSON body.
fn post_with_key(url: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut request = agent.post(url);
    if let Some(key) = key {
        request = request.header("Authorization", &format!("Bearer {key}"));
    }
    let mut response = request.send_json(body).expect("POST");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_json().unwrap_or(Value::Null),
    )
}

/// The files under `dir` whose bytes hold `needle` (`grep -rlF`).
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    #[allow(clippy::disallowed_methods)] // test harness: grep is the check
    let output = std::process::Command::new("grep")
        .args(["-rlF", "--", needle])
        .arg(dir)
        .output()
        .expect("grep runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// The mode bits of a file.
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// An API key given as `--api-key` in flags: llama-server gets it from a key file of mode 0600
/// (`--api-key-file`), `up` passes readiness and identity by authenticating, a completion with
/// the key works and one without is refused, and the key is in no argv, no output of plan,
/// prepare, up or status (human and --json), no state or log file: in the whole cache only the
/// key file holds it. Then the same with the key read from orchctl's environment
/// (`env: {LLAMA_API_KEY: {from_env: …}}`), which reaches llama-server through the env file.
#[test]
fn an_api_key_reaches_llama_server_through_a_private_file_only() {
    let _ = source_build();
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let key = format!("sk-e2e-flag-{nonce}");
    let env_key = format!("sk-e2e-env-{nonce}");
    let dir = tempfile::tempdir().unwrap();
    let cache = shared_cache();
    let port = free_port();
    let pool = "e2e-api-key";
    let config = write_source_config(
        dir.path(),
        pool,
        port,
        TEST_CMAKE_FLAGS,
        &["--api-key", &key, "-ngl", "0", "--parallel", "1"],
    );
    let base = format!("http://127.0.0.1:{port}");
    let config_arg = config.to_string_lossy().to_string();
    let mut outputs = Vec::new();
    let mut run = |args: &[&str], json: bool| {
        let mut command = orchctl(&cache);
        command.args(args).args(["--config", &config_arg]);
        if json {
            command.arg("--json");
        }
        let output = command.env("LLAMA_ORCH_LOG", "debug").output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        outputs.push((args.join(" "), text.clone()));
        (output.status.code().unwrap_or(-1), text)
    };
    for json in [false, true] {
        for command in ["plan", "prepare"] {
            let (code, text) = run(&["engine", command], json);
            assert_eq!(code, 0, "{command}: {text}");
        }
    }
    let key_file = cache.join("run").join(pool).join("api-key");
    let mut pids = Vec::new();
    for json in [false, true] {
        let (code, text) = run(&["engine", "up"], json);
        assert_eq!(code, 0, "up with a key failed:\n{text}");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (code, text) = run(&["engine", "status"], false);
            assert_eq!(code, 0, "{text}");
            let (code, text) = run(&["engine", "status"], true);
            assert_eq!(code, 0, "{text}");
            assert!(text.contains("\"ready\": true"), "{text}");
            let state: Value = serde_json::from_slice(
                &std::fs::read(cache.join("run").join(format!("{pool}.json"))).unwrap(),
            )
            .unwrap();
            let pid = state["pid"].as_u64().expect("a pid");
            pids.push(pid);
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            assert!(
                cmdline.contains(&format!("--api-key-file {}", key_file.display())),
                "{cmdline}"
            );
            assert!(!cmdline.contains(&key), "the key is on the argv: {cmdline}");

            let body =
                json!({"prompt": "hello", "n_predict": 4, "temperature": 0, "ignore_eos": true});
            let (status, completion) =
                post_with_key(&format!("{base}/completion"), Some(&key), &body);
            assert_eq!(status, 200, "{completion}");
            assert_eq!(completion["tokens_predicted"], 4, "{completion}");
            let (status, refused) = post_with_key(&format!("{base}/completion"), None, &body);
            assert_eq!(status, 401, "{refused}");
            let (status, _) = post_with_key(&format!("{base}/completion"), Some("sk-wrong"), &body);
            assert_eq!(status, 401);

            let state =
                std::fs::read_to_string(cache.join("run").join(format!("{pool}.json"))).unwrap();
            assert!(!state.contains(&key), "{state}");
            assert!(state.contains("key_file"), "{state}");
            for record in ["json", "pid", "log"] {
                let file = cache.join("run").join(format!("{pool}.{record}"));
                assert_eq!(mode_of(&file), 0o600, "{}", file.display());
            }
            let log =
                std::fs::read_to_string(cache.join("run").join(format!("{pool}.log"))).unwrap();
            assert!(!log.contains(&key), "{log}");
        }));
        let (code, text) = run(&["engine", "down"], json);
        assert_eq!(code, 0, "{text}");
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
    assert_eq!(pids.len(), 2);
    for (command, text) in &outputs {
        assert!(
            !text.contains(&key),
            "`orchctl {command}` showed the key:\n{text}"
        );
    }
    assert_eq!(mode_of(&key_file), 0o600);
    assert_eq!(files_holding(&cache, &key), vec![key_file.clone()]);

    // The key kept out of the YAML: read from orchctl's environment at prepare.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(&format!("\"--api-key\", \"{key}\", "), "");
    assert!(!text.contains(&key), "{text}");
    text.push_str("      env: { LLAMA_API_KEY: { from_env: E2E_LLAMA_KEY } }\n");
    std::fs::write(&config, text).unwrap();
    let up = orchctl(&cache)
        .args(["engine", "up", "--json", "--config", &config_arg])
        .env("E2E_LLAMA_KEY", &env_key)
        .output()
        .unwrap();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    assert_eq!(
        up.status.code(),
        Some(0),
        "up with a key from the environment failed:\n{shown}"
    );
    let outcome = std::panic::catch_unwind(|| {
        assert!(!shown.contains(&env_key), "{shown}");
        let body = json!({"prompt": "hi", "n_predict": 2, "temperature": 0, "ignore_eos": true});
        let (status, _) = post_with_key(&format!("{base}/completion"), Some(&env_key), &body);
        assert_eq!(status, 200);
        let (status, _) = post_with_key(&format!("{base}/completion"), None, &body);
        assert_eq!(status, 401);
        let (code, status, stderr) = run_json(&cache, &["engine", "status"], &config);
        assert_eq!(
            (code, status["ready"].clone()),
            (0, json!(true)),
            "{stderr}"
        );
    });
    let (code, _, stderr) = run_json(&cache, &["engine", "down"], &config);
    assert_eq!(code, 0, "{stderr}");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    let env_file = cache.join("run").join(pool).join("env");
    assert_eq!(files_holding(&cache, &env_key), vec![env_file.clone()]);
    assert_eq!(mode_of(&env_file), 0o600);
}
