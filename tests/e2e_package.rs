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

use serde_json::{Value, json};
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

/// A world-readable place for a test that runs orchctl as another user: the directory (0777),
/// a copy of the model, and an empty-or-given repository.
struct Shared {
    dir: tempfile::TempDir,
    model: PathBuf,
}

impl Shared {
    fn new() -> Shared {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let model = dir.path().join("tiny.gguf");
        std::fs::copy(&fixtures().model, &model).unwrap();
        std::fs::set_permissions(&model, std::fs::Permissions::from_mode(0o644)).unwrap();
        Shared { dir, model }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `orchctl engine prepare --json` run by `command` (a user switch) with this directory as
    /// HOME and cache, and `path` as PATH.
    fn prepare(
        &self,
        mut command: std::process::Command,
        config: &Path,
        path: &str,
    ) -> (i32, Value, String) {
        assert!(
            tests::orchctl_path()
                .metadata()
                .map(|m| m.permissions().mode() & 0o001 != 0)
                .unwrap_or(false),
            "orchctl must be executable by others for this test"
        );
        let output = command
            .args(["engine", "prepare", "--json", "--config"])
            .arg(config)
            .env_clear()
            .env("HOME", self.path())
            .env("PATH", path)
            .env("LLAMA_ORCH_CACHE_DIR", self.path().join("cache"))
            .env("LLAMA_ORCH_MODELS_DIR", self.path())
            .output()
            .expect("orchctl runs as another user");
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        let value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        (output.status.code().unwrap_or(-1), value, stderr)
    }
}

const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Without root and without sudo, nothing is installed and the error says what to run as root.
#[test]
fn without_root_or_sudo_the_error_is_the_command_to_run() {
    require_root();
    let shared = Shared::new();
    let repo = shared.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    // A PATH with the package tools but no sudo (the machine may have one).
    let bin = shared.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["dpkg-query", "dpkg", "apt-get", "apt-cache"] {
        std::os::unix::fs::symlink(Path::new("/usr/bin").join(tool), bin.join(tool)).unwrap();
    }
    let config = write_config(
        shared.path(),
        "pkg-nobody",
        "ep-llama-nobody",
        "1.0.0",
        &format!("deb [trusted=yes] file:{} ./", repo.display()),
        true,
        &shared.model,
        free_port(),
    );
    #[allow(clippy::disallowed_methods)] // the test drops privileges with setpriv
    let mut command = std::process::Command::new("/usr/bin/setpriv");
    command
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(tests::orchctl_path());
    let (code, _, stderr) = shared.prepare(command, &config, &bin.display().to_string());
    assert_eq!(code, 13, "{stderr}");
    assert!(
        stderr.contains("sudo is not installed") && stderr.contains("apt-get"),
        "{stderr}"
    );
    assert_eq!(debs::installed_version("ep-llama-nobody"), None);
}

/// A user whose sudo needs no password: the install goes through `sudo -n` and succeeds.
#[test]
fn a_user_with_passwordless_sudo_installs_through_sudo_n() {
    require_root();
    const PACKAGE: &str = "ep-llama-sudo";
    let _purge = Purge(vec![PACKAGE]);
    let shared = Shared::new();
    let repo = debs::server_repo(&shared.path().join("repo"), PACKAGE);
    let user = debs::TestUser::create("ep-sudo-ok", "ep-sudo-ok ALL=(ALL) NOPASSWD: ALL");
    let config = write_config(
        shared.path(),
        "pkg-sudo",
        PACKAGE,
        "1.0.0",
        &repo,
        true,
        &shared.model,
        free_port(),
    );
    let (code, prepared, stderr) =
        shared.prepare(user.command(&tests::orchctl_path()), &config, SYSTEM_PATH);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("sudo -n"), "{stderr}");
    assert!(
        prepared["engine_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("llamacpp-apt-ep-llama-sudo-1.0.0@repo-")),
        "{prepared}"
    );
    assert_eq!(debs::installed_version(PACKAGE).as_deref(), Some("1.0.0"));
}

/// A user whose sudo asks for a password, with no terminal: nothing is installed and the error
/// is the exact sudo command to run.
#[test]
fn sudo_that_needs_a_password_without_a_terminal_fails_with_the_command() {
    require_root();
    const PACKAGE: &str = "ep-llama-sudo-pw";
    let _purge = Purge(vec![PACKAGE]);
    let shared = Shared::new();
    let repo = shared.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let user = debs::TestUser::create("ep-sudo-pw", "ep-sudo-pw ALL=(ALL) ALL");
    let config = write_config(
        shared.path(),
        "pkg-sudo-pw",
        PACKAGE,
        "1.0.0",
        &format!("deb [trusted=yes] file:{} ./", repo.display()),
        true,
        &shared.model,
        free_port(),
    );
    let (code, _, stderr) =
        shared.prepare(user.command(&tests::orchctl_path()), &config, SYSTEM_PATH);
    assert_eq!(code, 13, "{stderr}");
    assert!(
        stderr.contains("password") && stderr.contains("hint: sudo ") && stderr.contains("apt-get"),
        "{stderr}"
    );
    assert_eq!(debs::installed_version(PACKAGE), None);
}

/// Runs a command on a pseudo-terminal and types `password` when the sudo prompt shows.
const PTY_DRIVER: &str = r#"
import os, pty, sys
password = os.environ.pop("EP_PASSWORD").encode()
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
seen, sent = b"", False
while True:
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    seen += data
    if not sent and b"EP-SUDO-PROMPT:" in seen:
        os.write(fd, password + b"\n")
        sent = True
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(seen)
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// A user whose sudo asks for a password, on a terminal: orchctl says what it will run and why,
/// runs interactive sudo in the foreground, the password is typed, and the install succeeds.
#[test]
fn on_a_terminal_sudo_asks_for_the_password_and_the_install_goes_ahead() {
    require_root();
    const PACKAGE: &str = "ep-llama-sudo-tty";
    const PASSWORD: &str = "pw-Tty-4711";
    let _purge = Purge(vec![PACKAGE]);
    let shared = Shared::new();
    let repo = debs::server_repo(&shared.path().join("repo"), PACKAGE);
    let user = debs::TestUser::create("ep-sudo-tty", "ep-sudo-tty ALL=(ALL) ALL");
    user.set_password(PASSWORD);
    let config = write_config(
        shared.path(),
        "pkg-sudo-tty",
        PACKAGE,
        "1.1.0",
        &repo,
        true,
        &shared.model,
        free_port(),
    );
    #[allow(clippy::disallowed_methods)] // the test drives a pseudo-terminal with python
    let output = std::process::Command::new("python3")
        .args(["-c", PTY_DRIVER, "/usr/bin/setpriv"])
        .arg(format!("--reuid={}", user.name))
        .arg(format!("--regid={}", user.name))
        .args(["--clear-groups", "--"])
        .arg(tests::orchctl_path())
        .args(["engine", "prepare", "--config"])
        .arg(&config)
        .env_clear()
        .env("EP_PASSWORD", PASSWORD)
        .env("SUDO_PROMPT", "EP-SUDO-PROMPT:")
        .env("HOME", shared.path())
        .env("PATH", SYSTEM_PATH)
        .env("TERM", "dumb")
        .env("LLAMA_ORCH_CACHE_DIR", shared.path().join("cache"))
        .env("LLAMA_ORCH_MODELS_DIR", shared.path())
        .output()
        .expect("python3 runs the terminal driver");
    let seen = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{seen}");
    assert!(seen.contains("EP-SUDO-PROMPT:"), "sudo never asked: {seen}");
    assert!(!seen.contains(PASSWORD), "the password was echoed: {seen}");
    assert!(
        seen.contains("llamacpp-apt-ep-llama-sudo-tty-1.1.0@repo-"),
        "{seen}"
    );
    assert_eq!(debs::installed_version(PACKAGE).as_deref(), Some("1.1.0"));
}

/// Two prepares of the same pin at once: one installs, the other waits for it and finds it.
#[test]
fn concurrent_prepares_install_once() {
    require_root();
    const PACKAGE: &str = "ep-llama-twice";
    let _purge = Purge(vec![PACKAGE]);
    let dir = tempfile::tempdir().unwrap();
    let repo = debs::server_repo(&dir.path().join("repo"), PACKAGE);
    let cache = dir.path().join("cache");
    let config = write_config(
        dir.path(),
        "pkg-twice",
        PACKAGE,
        "1.1.0",
        &repo,
        true,
        &fixtures().model,
        free_port(),
    );
    let spawn = || {
        tests::orchctl(&cache)
            .args(["engine", "prepare", "--json", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("orchctl starts")
    };
    let (first, second) = (spawn(), spawn());
    let outputs = [first, second].map(|child| child.wait_with_output().unwrap());
    let mut hits = Vec::new();
    let mut installs = 0;
    for output in &outputs {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        installs += stderr.matches("==> install ep-llama-twice=1.1.0").count();
        let prepared: Value = serde_json::from_slice(&output.stdout).unwrap();
        hits.push(prepared["metadata"]["cache_hit"].as_bool().unwrap());
        assert!(
            prepared["engine_version"]
                .as_str()
                .is_some_and(|v| v.starts_with("llamacpp-apt-ep-llama-twice-1.1.0@repo-")),
            "{prepared}"
        );
    }
    assert_eq!(installs, 1, "the package was installed more than once");
    hits.sort();
    assert_eq!(hits, [false, true]);
    assert_eq!(debs::installed_version(PACKAGE).as_deref(), Some("1.1.0"));
}

/// Source-mode preflight installs what a backend's build is missing through the host's package
/// manager when the pool allows it: a Vulkan build needs `glslc`, the Vulkan headers and the
/// loader, which apt installs from the system's repositories as one set (`glslc libvulkan-dev`);
/// the build then stops at an unknown ref (before anything is fetched or built).
#[test]
fn preflight_installs_a_missing_build_tool_when_allowed() {
    require_root();
    assert_eq!(
        debs::installed_version("glslc"),
        None,
        "this test installs glslc itself; remove it first: apt-get purge glslc"
    );
    // Everything the install may add that was not there before is purged afterwards.
    let _purge = Purge(
        ["glslc", "libshaderc1", "libvulkan-dev", "libvulkan1"]
            .into_iter()
            .filter(|name| debs::installed_version(name).is_none())
            .collect(),
    );
    let dir = tempfile::tempdir().unwrap();
    let fixtures = fixtures();
    let config = dir.path().join("vulkan.yaml");
    let text = |allow: bool| {
        format!(
            r#"pools:
  - id: vulkan-preflight
    engine: llamacpp
    provisioning:
      mode: source
      allow_package_installs: {allow}
      source:
        repo: {repo}
        ref: no-such-ref
        build: {{ cmake_flags: [-DGGML_VULKAN=ON] }}
      model: {{ ref: "file:{model}" }}
"#,
            repo = fixtures.repo_url,
            model = fixtures.model.display(),
        )
    };
    let cache = dir.path().join("cache");

    // Not allowed: the hint is the command, nothing is installed.
    std::fs::write(&config, text(false)).unwrap();
    let (code, _, stderr) = run_json(&cache, &["engine", "prepare"], &config);
    assert_eq!(code, 5, "{stderr}");
    // As root, the command has no `sudo` (which a root-only host may not have).
    assert!(
        stderr.contains("hint: apt-get install -y glslc libvulkan-dev")
            && stderr.contains("allow_package_installs: true"),
        "{stderr}"
    );
    assert_eq!(debs::installed_version("glslc"), None);

    // Allowed: installed, then preflight passes and the unknown ref is the error.
    std::fs::write(&config, text(true)).unwrap();
    let (code, _, stderr) = run_json(&cache, &["engine", "prepare"], &config);
    assert!(
        stderr.contains("glslc (the Vulkan shader compiler)")
            && stderr.contains("missing; installing with apt"),
        "{stderr}"
    );
    assert_eq!(code, 6, "the unknown ref, after preflight: {stderr}");
    assert!(debs::installed_version("glslc").is_some());
    assert!(debs::installed_version("libvulkan-dev").is_some());
}

/// dpkg's front-end lock held by another process (as unattended-upgrades holds it on a fresh
/// cloud host): `orchctl` says which lock, which process and how long it waits, and installs
/// once the lock is free.
#[test]
fn a_held_dpkg_lock_is_waited_for_naming_its_holder() {
    require_root();
    const PACKAGE: &str = "ep-llama-locked";
    let _purge = Purge(vec![PACKAGE]);
    let dir = tempfile::tempdir().unwrap();
    let repo = debs::server_repo(&dir.path().join("repo"), PACKAGE);
    let config = write_config(
        dir.path(),
        "pkg-locked",
        PACKAGE,
        "1.0.0",
        &repo,
        true,
        &fixtures().model,
        free_port(),
    );
    // perl holds an fcntl write lock, as apt and dpkg take theirs, for 4 seconds.
    let marker = dir.path().join("locked");
    #[allow(clippy::disallowed_methods)] // the lock must be held by another process
    let mut holder = std::process::Command::new("perl")
        .args([
            "-e",
            r#"use Fcntl qw(F_SETLKW F_WRLCK);
open(my $fh, '>>', $ARGV[0]) or die "open: $!";
my $lock = pack('s s x4 q q l x4', F_WRLCK, 0, 0, 0, 0);
fcntl($fh, F_SETLKW, $lock) or die "fcntl: $!";
open(my $m, '>', $ARGV[1]) or die; close($m);
sleep(4);"#,
            "/var/lib/dpkg/lock-frontend",
        ])
        .arg(&marker)
        .spawn()
        .expect("perl starts");
    while !marker.exists() {
        assert!(
            holder.try_wait().unwrap().is_none(),
            "the lock holder exited"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = tests::orchctl(&dir.path().join("cache"))
        .args(["engine", "prepare", "--json", "--config"])
        .arg(&config)
        .output()
        .expect("orchctl runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "/var/lib/dpkg/lock-frontend is locked by pid {} (perl",
            holder.id()
        )) && stderr.contains("waiting for it (at most 300 s)"),
        "{stderr}"
    );
    assert_eq!(debs::installed_version(PACKAGE).as_deref(), Some("1.0.0"));
}
