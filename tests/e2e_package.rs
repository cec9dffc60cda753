//! Package mode for real, with apt: two versions of a `llama-server` package (the server built
//! from source, packed with dpkg-deb) in a flat repository on disk, used as an isolated source.
//! `orchctl` installs the pinned version into this system, brings it up, decodes, brings it down,
//! switches the pin and sees `engine_version` change. Also the bad inputs that need the real
//! package database: installs disallowed, a version that does not exist, a package without the
//! server, and no root without sudo. Everything installed is purged at the end.
//!
//! These tests install into the real system, so they need root (CI runs as root).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;
use tests::debs::{self, EMPTY_PACKAGE, Purge, SERVER_PACKAGE};
use tests::{fixtures, free_port, http_get, http_post_json, orchctl_json as run_json};

fn require_root() {
    assert!(
        debs::is_root(),
        "the package-mode tests install into the system and need root; run them as root (CI does)"
    );
}

#[allow(clippy::too_many_arguments)]
fn write_config(
    dir: &Path,
    pool: &str,
    name: &str,
    version: &str,
    repo: &str,
    allow: bool,
    model: &Path,
    port: u16,
) -> PathBuf {
    let text = format!(
        r#"pools:
  - id: {pool}
    engine: llamacpp
    provisioning:
      mode: package
      allow_package_installs: {allow}
      package:
        name: {name}
        version: "{version}"
        repo: "{repo}"
      model:
        ref: file:{model}
      ports: [{port}]
      flags: [--parallel, "1"]
"#,
        model = model.display(),
    );
    let path = dir.join(format!("{pool}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn apt_installs_the_pinned_version_serves_and_switches_versions() {
    require_root();
    let _purge = Purge(vec![SERVER_PACKAGE, EMPTY_PACKAGE]);
    let dir = tempfile::tempdir().unwrap();
    let repo = debs::server_repo(&dir.path().join("repo"), SERVER_PACKAGE);
    let cache = dir.path().join("cache");
    let model = fixtures().model.clone();
    let port = free_port();
    let config = |pool: &str, name: &str, version: &str, allow: bool| {
        write_config(dir.path(), pool, name, version, &repo, allow, &model, port)
    };

    // Installs not allowed: nothing is installed and the hint is the exact command.
    let (code, _, stderr) = run_json(
        &cache,
        &["engine", "prepare"],
        &config("pkg-denied", SERVER_PACKAGE, "1.1.0", false),
    );
    assert_eq!(code, 9, "{stderr}");
    assert!(
        stderr.contains("allow_package_installs: true")
            && stderr.contains("apt-get install")
            && stderr.contains("ep-llama-server=1.1.0"),
        "{stderr}"
    );
    assert_eq!(debs::installed_version(SERVER_PACKAGE), None);

    // A version the repository does not have: apt's exit 100 becomes the list of versions.
    let (code, _, stderr) = run_json(
        &cache,
        &["engine", "prepare"],
        &config("pkg-missing", SERVER_PACKAGE, "9.9", true),
    );
    assert_eq!(code, 13, "{stderr}");
    assert!(
        stderr.contains("9.9") && stderr.contains("1.0.0") && stderr.contains("1.1.0"),
        "{stderr}"
    );
    assert_eq!(debs::installed_version(SERVER_PACKAGE), None);

    // A package that installs but ships no server is removed again.
    let (code, _, stderr) = run_json(
        &cache,
        &["engine", "prepare"],
        &config("pkg-empty", EMPTY_PACKAGE, "1.0.0", true),
    );
    assert_eq!(code, 13, "{stderr}");
    assert!(stderr.contains("llama-server"), "{stderr}");
    assert_eq!(debs::installed_version(EMPTY_PACKAGE), None);

    // The pinned version: installed, up, decoding, down.
    let newer = config("pkg-up", SERVER_PACKAGE, "1.1.0", true);
    let (code, up, stderr) = run_json(&cache, &["engine", "up"], &newer);
    assert_eq!(code, 0, "up failed: {stderr}");
    let version = up["engine_version"].as_str().unwrap().to_string();
    assert!(
        version.starts_with("llamacpp-apt-ep-llama-server-1.1.0@repo-"),
        "{version}"
    );
    assert_eq!(up["cache_hit"], false);
    assert_eq!(
        debs::installed_version(SERVER_PACKAGE).as_deref(),
        Some("1.1.0")
    );
    let base = format!("http://127.0.0.1:{port}");
    let outcome = std::panic::catch_unwind(|| {
        let (status, completion) = http_post_json(
            &format!("{base}/completion"),
            &json!({"prompt": "hello", "n_predict": 8, "temperature": 0, "ignore_eos": true}),
        );
        assert_eq!(status, 200, "{completion}");
        assert_eq!(completion["tokens_predicted"], 8, "{completion}");
        let (_, props) = http_get(&format!("{base}/props"));
        assert!(props.contains(&fixtures().commit[..9]), "{props}");
    });
    let (code, _, stderr) = run_json(&cache, &["engine", "down"], &newer);
    assert_eq!(code, 0, "{stderr}");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }

    // Warm: the package database already has the pin; nothing is installed.
    let (code, prepared, stderr) = run_json(&cache, &["engine", "prepare"], &newer);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(prepared["metadata"]["cache_hit"], true);
    assert_eq!(prepared["engine_version"], json!(version));
    assert_eq!(
        prepared["bin"],
        json!(format!("/opt/{SERVER_PACKAGE}/bin/llama-server"))
    );

    // Pin the other version: it is installed (a downgrade) and the version changes.
    let older = config("pkg-older", SERVER_PACKAGE, "1.0.0", true);
    let (code, prepared, stderr) = run_json(&cache, &["engine", "prepare"], &older);
    assert_eq!(code, 0, "{stderr}");
    let older_version = prepared["engine_version"].as_str().unwrap();
    assert!(
        older_version.starts_with("llamacpp-apt-ep-llama-server-1.0.0@repo-"),
        "{older_version}"
    );
    assert_ne!(older_version, version);
    assert_eq!(
        debs::installed_version(SERVER_PACKAGE).as_deref(),
        Some("1.0.0")
    );

    // The 1.1.0 record is stale now: its prepare installs 1.1.0 again rather than trusting it.
    let (code, prepared, stderr) = run_json(&cache, &["engine", "prepare"], &newer);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(prepared["metadata"]["cache_hit"], false);
    assert_eq!(
        debs::installed_version(SERVER_PACKAGE).as_deref(),
        Some("1.1.0")
    );
}

/// Without root and without sudo, nothing is installed and the error says what to run as root.
#[test]
fn without_root_or_sudo_the_error_is_the_command_to_run() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let open = |path: &Path| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap()
    };
    open(dir.path());
    // The unprivileged user needs its own readable copy of the model.
    let model = dir.path().join("tiny.gguf");
    std::fs::copy(&fixtures().model, &model).unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    open(&repo);
    let config = write_config(
        dir.path(),
        "pkg-nobody",
        "ep-llama-nobody",
        "1.0.0",
        &format!("deb [trusted=yes] file:{} ./", repo.display()),
        true,
        &model,
        free_port(),
    );
    assert!(
        tests::orchctl_path()
            .metadata()
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false),
        "orchctl must be executable by others for this test"
    );
    let cache = dir.path().join("cache");
    #[allow(clippy::disallowed_methods)] // the test drops privileges with setpriv
    let output = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(tests::orchctl_path())
        .args(["engine", "prepare", "--config"])
        .arg(&config)
        .env("HOME", dir.path())
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LLAMA_ORCH_CACHE_DIR", &cache)
        .env("LLAMA_ORCH_MODELS_DIR", dir.path())
        .output()
        .expect("setpriv runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(13), "{stderr}");
    assert!(
        stderr.contains("root") && stderr.contains("apt-get"),
        "{stderr}"
    );
    assert_eq!(debs::installed_version("ep-llama-nobody"), None);
}
