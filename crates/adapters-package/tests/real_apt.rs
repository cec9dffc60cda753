//! apt for real: a flat repository of hand-built packages in a temporary directory, installed,
//! downgraded and removed on this host through `Apt` and `PackageEngineInstaller`.
//!
//! Needs root (CI runs as root) and dpkg-dev (`scripts/ensure-deps.sh`). The packages are named
//! `ep-test-*` (never `ep-llama-server`, which the workspace end-to-end test owns) and removed at
//! the end, also when a test fails. apt waits for the dpkg lock (`DPkg::Lock::Timeout`), so this
//! file runs alongside other package tests.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters_host::{HostShell, SystemClock};
use adapters_package::{Apt, AptOptions, HostManagers, PackageEngineInstaller, Privilege};
use provisioner_core::Distro;
use provisioner_core::{
    CommandSpec, Engine, Error, ManagerKind, NoProgress, PackageInstallSpec, PackageInstaller,
    PackageManager, PackageRequest, Shell, package_engine_version,
};
use support::{ConfigPolicy, LockHolder, Recorder};

/// The two tests that install `ep-test-hello` take turns (both ship /usr/bin/ep-test-hello).
static HELLO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn shell() -> Arc<HostShell> {
    Arc::new(HostShell::new(Arc::new(NoProgress)))
}

fn require_root_and_tools() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the real apt tests install packages on this host and need root (CI runs them as root); \
         run them as root, e.g. `sudo -E cargo test -p adapters-package --test real_apt`"
    );
    let shell = shell();
    for tool in ["apt-get", "dpkg-deb", "dpkg-scanpackages", "dpkg-query"] {
        assert!(
            shell.locate(tool).is_some(),
            "{tool} is missing: run scripts/ensure-deps.sh (dpkg-dev)"
        );
    }
}

async fn run(shell: &HostShell, command: CommandSpec) -> String {
    let shown = command.display();
    let output = shell.run(&command).await.unwrap();
    assert!(output.success(), "`{shown}` failed: {}", output.tail);
    output.stdout
}

/// Builds `<repo>/<name>_<version>_all.deb` holding `files` (path relative to /, text, mode).
async fn build_deb(repo: &Path, name: &str, version: &str, files: &[(&str, String, u32)]) {
    build_deb_depending(repo, name, version, "", files).await;
}

/// [`build_deb`] with a `Depends:` field (when not empty).
async fn build_deb_depending(
    repo: &Path,
    name: &str,
    version: &str,
    depends: &str,
    files: &[(&str, String, u32)],
) {
    let root = repo.join(format!(".build-{name}-{version}"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    let depends = if depends.is_empty() {
        String::new()
    } else {
        format!("Depends: {depends}\n")
    };
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\n{depends}Maintainer: engine-provisioner tests <tests@example.invalid>\nDescription: engine-provisioner test package\n"
        ),
    )
    .unwrap();
    for (path, text, mode) in files {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let deb = repo.join(format!("{name}_{version}_all.deb"));
    run(
        &shell(),
        CommandSpec::new(
            "dpkg-deb",
            [
                "--build".to_string(),
                "--root-owner-group".to_string(),
                root.display().to_string(),
                deb.display().to_string(),
            ],
        ),
    )
    .await;
    std::fs::remove_dir_all(&root).unwrap();
}

/// Writes the flat repository's `Packages` index and returns its source line.
async fn index(repo: &Path) -> String {
    let packages = run(
        &shell(),
        CommandSpec::new("dpkg-scanpackages", ["--multiversion", ".", "/dev/null"]).cwd(repo),
    )
    .await;
    std::fs::write(repo.join("Packages"), packages).unwrap();
    format!("deb [trusted=yes] file:{} ./", repo.display())
}

fn hello_script(version: &str) -> String {
    format!("#!/bin/sh\necho \"ep-test-hello {version}\"\n")
}

/// A repository with ep-test-hello 1.0.0 and 1.1.0.
async fn hello_repo(dir: &Path) -> String {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    for version in ["1.0.0", "1.1.0"] {
        build_deb(
            &repo,
            "ep-test-hello",
            version,
            &[("usr/bin/ep-test-hello", hello_script(version), 0o755)],
        )
        .await;
    }
    index(&repo).await
}

/// Removes a package when dropped, so that a failing test leaves nothing installed.
struct Removed(&'static str);

impl Drop for Removed {
    fn drop(&mut self) {
        let name = self.0;
        // A fresh runtime on its own thread: Drop may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(purge(name));
        })
        .join();
    }
}

/// Purges a package (no repositories needed: an empty source list keeps apt from reading the
/// system's package lists).
async fn purge(name: &str) {
    let Ok(empty) = tempfile::tempdir() else {
        return;
    };
    let list = empty.path().join("sources.list");
    let lists = empty.path().join("lists");
    if std::fs::write(&list, "").is_err() || std::fs::create_dir_all(lists.join("partial")).is_err()
    {
        return;
    }
    let command = CommandSpec::new(
        "apt-get",
        [
            "remove".to_string(),
            "--purge".to_string(),
            "-y".to_string(),
            "-o".to_string(),
            "DPkg::Lock::Timeout=300".to_string(),
            "-o".to_string(),
            format!("Dir::Etc::SourceList={}", list.display()),
            "-o".to_string(),
            "Dir::Etc::SourceParts=/nonexistent".to_string(),
            "-o".to_string(),
            format!("Dir::State::Lists={}", lists.display()),
            "-o".to_string(),
            "Dir::Cache::pkgcache=".to_string(),
            "-o".to_string(),
            "Dir::Cache::srcpkgcache=".to_string(),
            name.to_string(),
        ],
    )
    .env("DEBIAN_FRONTEND", "noninteractive");
    let _ = shell().run(&command).await;
}

fn apt(state: &Path) -> Apt {
    Apt::new(
        shell(),
        Arc::new(Recorder::default()),
        Privilege::detect(),
        AptOptions::new(state.to_path_buf()),
    )
}

fn pinned(name: &str, version: &str, line: &str) -> PackageRequest {
    PackageRequest {
        name: name.parse().unwrap(),
        version: Some(version.parse().unwrap()),
        repository: Some(line.parse().unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn apt_installs_exact_pins_downgrades_and_names_what_exists() {
    require_root_and_tools();
    let _turn = HELLO.lock().await;
    let _removed = Removed("ep-test-hello");
    purge("ep-test-hello").await;
    let dir = tempfile::tempdir().unwrap();
    let line = hello_repo(dir.path()).await;
    let apt = apt(&dir.path().join("state"));

    let installed = apt
        .install(&[pinned("ep-test-hello", "1.1.0", &line)])
        .await
        .unwrap();
    assert_eq!(installed[0].version, "1.1.0");
    assert_eq!(installed[0].repository.as_deref(), Some(line.as_str()));
    assert_eq!(
        apt.query(&"ep-test-hello".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .version,
        "1.1.0"
    );
    let files = apt.files(&"ep-test-hello".parse().unwrap()).await.unwrap();
    assert!(
        files.contains(&PathBuf::from("/usr/bin/ep-test-hello")),
        "{files:?}"
    );
    assert_eq!(
        run(
            &shell(),
            CommandSpec::new("/usr/bin/ep-test-hello", Vec::<String>::new())
        )
        .await,
        "ep-test-hello 1.1.0\n"
    );

    // An older pin is a downgrade.
    apt.install(&[pinned("ep-test-hello", "1.0.0", &line)])
        .await
        .unwrap();
    assert_eq!(
        apt.query(&"ep-test-hello".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .version,
        "1.0.0"
    );
    let mut available = apt
        .available(&pinned("ep-test-hello", "1.0.0", &line))
        .await
        .unwrap();
    available.sort();
    assert_eq!(available, ["1.0.0", "1.1.0"]);

    // A version that does not exist names the ones that do.
    let error = apt
        .install(&[pinned("ep-test-hello", "9.9", &line)])
        .await
        .unwrap_err();
    let Error::Package {
        manager,
        package,
        message,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(
        (manager.as_str(), package.as_str()),
        ("apt", "ep-test-hello=9.9")
    );
    assert!(
        message.contains("9.9") && message.contains("1.1.0") && message.contains("1.0.0"),
        "{message}"
    );
    assert_eq!(
        apt.query(&"ep-test-hello".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .version,
        "1.0.0",
        "a failed install leaves the installed version alone"
    );

    apt.remove(&"ep-test-hello".parse().unwrap()).await.unwrap();
    assert_eq!(
        apt.query(&"ep-test-hello".parse().unwrap()).await.unwrap(),
        None
    );
}

fn installer(dir: &Path, progress: Arc<Recorder>) -> PackageEngineInstaller {
    let shell = shell();
    let managers = HostManagers::new(shell.clone(), progress.clone(), dir.join("state"))
        .with_distro(Distro::Debian)
        .with_privilege(Privilege::detect());
    PackageEngineInstaller::new(
        managers,
        shell,
        Arc::new(ConfigPolicy),
        progress,
        Arc::new(SystemClock),
    )
}

fn spec(dir: &Path, name: &str, version: &str, line: &str, executable: &str) -> PackageInstallSpec {
    PackageInstallSpec {
        engine: Engine::Llamacpp,
        cache_dir: dir.join("cache"),
        name: Some(name.parse().unwrap()),
        version: version.parse().unwrap(),
        repository: Some(line.parse().unwrap()),
        manager: None,
        distro: Some(Distro::Debian),
        allowed_by_config: true,
        executable: executable.to_string(),
        version_args: vec!["--version".to_string()],
        backend: provisioner_core::Backend::Cpu,
        gpu: None,
        allow_cpu_fallback: false,
        flag_probe: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_installer_installs_records_and_then_only_asks_dpkg() {
    require_root_and_tools();
    let _turn = HELLO.lock().await;
    let _removed = Removed("ep-test-hello");
    purge("ep-test-hello").await;
    let dir = tempfile::tempdir().unwrap();
    let line = hello_repo(dir.path()).await;
    let progress = Arc::new(Recorder::default());
    let installer = installer(dir.path(), progress.clone());
    let spec = spec(dir.path(), "ep-test-hello", "1.1.0", &line, "ep-test-hello");

    let cold = installer.ensure_installed(&spec).await.unwrap();
    assert!(!cold.cache_hit);
    assert_eq!(cold.manager, ManagerKind::Apt);
    assert_eq!(cold.package.version, "1.1.0");
    assert_eq!(cold.executable, PathBuf::from("/usr/bin/ep-test-hello"));
    assert_eq!(cold.version_output.as_deref(), Some("ep-test-hello 1.1.0"));
    assert_eq!(
        cold.engine_version,
        package_engine_version(
            Engine::Llamacpp,
            ManagerKind::Apt,
            &"ep-test-hello".parse().unwrap(),
            &"1.1.0".parse().unwrap(),
            Some(&line.parse().unwrap())
        )
    );
    assert!(
        progress
            .started()
            .contains(&"install ep-test-hello=1.1.0 (apt)".to_string()),
        "{:?}",
        progress.events()
    );

    let started = Instant::now();
    let warm = installer.ensure_installed(&spec).await.unwrap();
    let elapsed = started.elapsed();
    assert!(warm.cache_hit);
    assert_eq!(warm.engine_version, cold.engine_version);
    // One dpkg-query; generous bound for loaded CI machines (about 15 ms in a debug build).
    assert!(
        elapsed < Duration::from_millis(200),
        "warm path took {elapsed:?}"
    );

    let apt = apt(&dir.path().join("state2"));
    apt.remove(&"ep-test-hello".parse().unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_package_without_the_executable_is_not_left_installed() {
    require_root_and_tools();
    let _removed = Removed("ep-test-empty");
    purge("ep-test-empty").await;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    build_deb(
        &repo,
        "ep-test-empty",
        "1.0.0",
        &[(
            "usr/share/doc/ep-test-empty/README",
            "nothing to run\n".to_string(),
            0o644,
        )],
    )
    .await;
    let line = index(&repo).await;
    let installer = installer(dir.path(), Arc::new(Recorder::default()));
    let error = installer
        .ensure_installed(&spec(
            dir.path(),
            "ep-test-empty",
            "1.0.0",
            &line,
            "ep-test-empty",
        ))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("ships no `ep-test-empty`")
            && message.contains("/usr/share/doc/ep-test-empty/README")
            && message.contains("removed again"),
        "{message}"
    );
    let apt = apt(&dir.path().join("state"));
    assert_eq!(
        apt.query(&"ep-test-empty".parse().unwrap()).await.unwrap(),
        None,
        "the package must not be left installed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_that_fails_its_check_puts_the_previous_version_back() {
    require_root_and_tools();
    let _removed = Removed("ep-test-undo");
    purge("ep-test-undo").await;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    // 1.0.0 ships the server; 2.0.0 does not (a broken upgrade).
    build_deb(
        &repo,
        "ep-test-undo",
        "1.0.0",
        &[(
            "usr/bin/ep-test-undo",
            "#!/bin/sh\necho \"ep-test-undo 1.0.0\"\n".to_string(),
            0o755,
        )],
    )
    .await;
    build_deb(
        &repo,
        "ep-test-undo",
        "2.0.0",
        &[(
            "usr/share/doc/ep-test-undo/README",
            "nothing to run\n".to_string(),
            0o644,
        )],
    )
    .await;
    let line = index(&repo).await;
    let apt = apt(&dir.path().join("state"));
    apt.install(&[pinned("ep-test-undo", "1.0.0", &line)])
        .await
        .unwrap();

    let progress = Arc::new(Recorder::default());
    let error = installer(dir.path(), progress.clone())
        .ensure_installed(&spec(
            dir.path(),
            "ep-test-undo",
            "2.0.0",
            &line,
            "ep-test-undo",
        ))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("ships no `ep-test-undo`")
            && message.contains("ep-test-undo 1.0.0, installed before, was installed again"),
        "{message}"
    );
    assert_eq!(
        apt.query(&"ep-test-undo".parse().unwrap())
            .await
            .unwrap()
            .map(|installed| installed.version)
            .as_deref(),
        Some("1.0.0"),
        "the version installed before must be back"
    );
    assert_eq!(
        run(
            &shell(),
            CommandSpec::new("/usr/bin/ep-test-undo", Vec::<String>::new())
        )
        .await,
        "ep-test-undo 1.0.0\n"
    );
}

/// The lists lock of an isolated source held by another process (as unattended-upgrades holds
/// the system's on a fresh cloud host): the install waits, naming the holder, and goes ahead
/// once it is free; held past the bound, nothing runs and the error names the holder.
#[tokio::test(flavor = "multi_thread")]
async fn apt_waits_for_the_lists_lock_naming_its_holder_and_gives_up_after_the_bound() {
    require_root_and_tools();
    let _turn = HELLO.lock().await;
    let _removed = Removed("ep-test-hello");
    purge("ep-test-hello").await;
    let dir = tempfile::tempdir().unwrap();
    let line = hello_repo(dir.path()).await;
    let state = dir.path().join("state");
    let lists = state
        .join(&blake3::hash(line.as_bytes()).to_hex()[..8])
        .join("lists");
    std::fs::create_dir_all(&lists).unwrap();
    let lock = lists.join("lock");
    let progress = Arc::new(Recorder::default());
    let apt_with = |seconds: u64| {
        Apt::new(
            shell(),
            progress.clone(),
            Privilege::detect(),
            AptOptions {
                state_dir: state.clone(),
                locks: adapters_package::LockSettings {
                    timeout: Duration::from_secs(seconds),
                    ..adapters_package::LockSettings::default()
                },
            },
        )
    };

    let holder = LockHolder::hold(&lock, 2).await;
    let pid = holder.pid;
    let started = Instant::now();
    apt_with(300)
        .install(&[pinned("ep-test-hello", "1.1.0", &line)])
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    holder.finish().await;
    let notes = progress.notes();
    assert!(
        notes.iter().any(|note| note
            .contains(&format!("{} is locked by pid {pid} (perl", lock.display()))
            && note.contains("at most 300 s")),
        "{notes:?}"
    );

    let holder = LockHolder::hold(&lock, 60).await;
    let error = apt_with(1)
        .install(&[pinned("ep-test-hello", "1.0.0", &line)])
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(&format!("is still locked by pid {} (perl", holder.pid))
            && message.contains("apt-get update"),
        "{message}"
    );
    assert_eq!(error.code().exit_code(), 13);
    drop(holder);
    assert_eq!(
        apt_with(300)
            .query(&"ep-test-hello".parse().unwrap())
            .await
            .unwrap()
            .map(|installed| installed.version)
            .as_deref(),
        Some("1.1.0"),
        "nothing ran while the lock was held"
    );
}

/// What the backend test installs under Debian's own names; a host that has the real ones is
/// left alone.
const GGML_TEST_PACKAGES: [&str; 3] = ["llama.cpp-tools", "libggml0", "libggml0-backend-vulkan"];

/// Debian's layout for real: `llama.cpp-tools` (from llama.cpp's source) depends on
/// `libggml0 (>= …)`; `libggml0-backend-vulkan` (from ggml's source, versioned like
/// `libggml0`) depends on `libggml0 (= its version)`. `backend: vulkan` installs the server and
/// the backend package at the version of the `libggml0` on the host, here the older of the two
/// the repository offers, and finds the backend among both packages' files.
#[tokio::test(flavor = "multi_thread")]
async fn a_backend_in_its_own_package_is_installed_at_the_librarys_version_and_checked() {
    require_root_and_tools();
    let state = tempfile::tempdir().unwrap();
    let apt = apt(state.path());
    for name in GGML_TEST_PACKAGES {
        if let Some(installed) = apt.query(&name.parse().unwrap()).await.unwrap()
            && !installed.version.contains("eptest")
        {
            // The real package is installed here: nothing of it is replaced.
            return;
        }
    }
    let _removed: Vec<Removed> = GGML_TEST_PACKAGES
        .iter()
        .map(|name| Removed(name))
        .collect();
    for name in GGML_TEST_PACKAGES {
        purge(name).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    build_deb_depending(
        &repo,
        "llama.cpp-tools",
        "8064+eptest-1",
        "libggml0 (>= 0.9.1~eptest-1)",
        &[(
            "usr/bin/ep-test-llama-server",
            "#!/bin/sh\necho 'version: 8064 (eptest)'\n".to_string(),
            0o755,
        )],
    )
    .await;
    for version in ["0.9.1~eptest-1", "0.9.2~eptest-1"] {
        build_deb(
            &repo,
            "libggml0",
            version,
            &[(
                "usr/lib/ep-test-ggml/libggml-base.so.0",
                String::new(),
                0o644,
            )],
        )
        .await;
        build_deb_depending(
            &repo,
            "libggml0-backend-vulkan",
            version,
            &format!("libggml0 (= {version})"),
            &[(
                "usr/lib/ep-test-ggml/backends0/libggml-vulkan.so",
                String::new(),
                0o644,
            )],
        )
        .await;
    }
    let line = index(&repo).await;
    // The host has the older ggml already.
    apt.install(&[pinned("libggml0", "0.9.1~eptest-1", &line)])
        .await
        .unwrap();

    let progress = Arc::new(Recorder::default());
    let mut spec = spec(
        dir.path(),
        "llama.cpp-tools",
        "8064+eptest-1",
        &line,
        "ep-test-llama-server",
    );
    spec.name = None;
    spec.backend = provisioner_core::Backend::Vulkan;
    let artifact = installer(dir.path(), progress.clone())
        .ensure_installed(&spec)
        .await
        .unwrap();
    assert_eq!(artifact.package.name, "llama.cpp-tools");
    assert_eq!(
        artifact.found.backend,
        provisioner_core::FoundBackend::Vulkan
    );
    assert!(
        artifact.found.how.contains("libggml-vulkan.so"),
        "{}",
        artifact.found.how
    );
    let version = |name: &'static str| {
        let apt = &apt;
        async move {
            apt.query(&name.parse().unwrap())
                .await
                .unwrap()
                .map(|installed| installed.version)
        }
    };
    assert_eq!(
        version("libggml0-backend-vulkan").await.as_deref(),
        Some("0.9.1~eptest-1"),
        "the backend follows the libggml0 on the host, not the newest"
    );
    assert_eq!(version("libggml0").await.as_deref(), Some("0.9.1~eptest-1"));
    assert!(
        progress
            .started()
            .contains(&"install libggml0-backend-vulkan=0.9.1~eptest-1 (apt)".to_string()),
        "{:?}",
        progress.events()
    );
}
