//! pacman for real, into an alternative root inside a temporary directory: hand-built packages
//! (`.PKGINFO` plus files, tarred with bsdtar) and a hand-built repository database holding one
//! version, the older version installed with `-U` from the file next to the database.
//!
//! Needs root (pacman refuses to install otherwise; CI runs as root), pacman 6
//! (`pacman-package-manager` on Debian) and bsdtar (`libarchive-tools`): `scripts/ensure-deps.sh`.
//! Everything pacman writes (database, cache, log, the installed files) is under the temporary
//! directory; the test checks that the host's own paths stay untouched.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use adapters_host::{HostShell, SystemClock};
use adapters_package::{HostManagers, PackageEngineInstaller, Pacman, PacmanOptions, Privilege};
use provisioner_core::Distro;
use provisioner_core::{
    CommandSpec, Engine, Error, ManagerKind, NoProgress, PackageInstallSpec, PackageInstaller,
    PackageManager, PackageRequest, Shell, package_engine_version,
};
use support::{ConfigPolicy, Recorder};

/// Package and executable name; distinct from the apt tests' packages, which install on the host.
const NAME: &str = "ep-test-pacman";

fn shell() -> Arc<HostShell> {
    Arc::new(HostShell::new(Arc::new(NoProgress)))
}

fn require_root_and_tools() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the real pacman tests need root (pacman refuses to install otherwise; CI runs them as root); \
         run them as root, e.g. `sudo -E cargo test -p adapters-package --test real_pacman`"
    );
    let shell = shell();
    for tool in ["pacman", "bsdtar"] {
        assert!(
            shell.locate(tool).is_some(),
            "{tool} is missing: run scripts/ensure-deps.sh (pacman-package-manager, libarchive-tools)"
        );
    }
}

async fn run(shell: &HostShell, command: CommandSpec) -> String {
    let shown = command.display();
    let output = shell.run(&command).await.unwrap();
    assert!(output.success(), "`{shown}` failed: {}", output.tail);
    output.stdout
}

/// Builds `<repo>/NAME-VERSION-x86_64.pkg.tar.zst` by hand: `.PKGINFO` and `usr/bin/NAME`.
async fn build_package(repo: &Path, version: &str) -> PathBuf {
    let staging = repo.join(format!(".build-{version}"));
    let bin = staging.join("usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join(NAME);
    std::fs::write(&script, format!("#!/bin/sh\necho \"{NAME} {version}\"\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        staging.join(".PKGINFO"),
        format!(
            "pkgname = {NAME}\npkgbase = {NAME}\npkgver = {version}\npkgdesc = engine-provisioner test package\nbuilddate = 1700000000\npackager = engine-provisioner tests\nsize = 64\narch = x86_64\n"
        ),
    )
    .unwrap();
    let file = repo.join(format!("{NAME}-{version}-x86_64.pkg.tar.zst"));
    run(
        &shell(),
        CommandSpec::new(
            "bsdtar",
            [
                "--zstd".to_string(),
                "-cf".to_string(),
                file.display().to_string(),
                ".PKGINFO".to_string(),
                "usr".to_string(),
            ],
        )
        .cwd(&staging),
    )
    .await;
    std::fs::remove_dir_all(&staging).unwrap();
    file
}

/// Writes `<repo>/eptest.db` (what repo-add would) holding one version of the package.
async fn build_database(repo: &Path, version: &str) {
    let staging = repo.join(".db");
    let entry = format!("{NAME}-{version}");
    std::fs::create_dir_all(staging.join(&entry)).unwrap();
    std::fs::write(
        staging.join(&entry).join("desc"),
        format!(
            "%FILENAME%\n{NAME}-{version}-x86_64.pkg.tar.zst\n\n%NAME%\n{NAME}\n\n%VERSION%\n{version}\n\n%DESC%\nengine-provisioner test package\n\n%ARCH%\nx86_64\n\n"
        ),
    )
    .unwrap();
    run(
        &shell(),
        CommandSpec::new(
            "bsdtar",
            [
                "-czf".to_string(),
                repo.join("eptest.db").display().to_string(),
                entry,
            ],
        )
        .cwd(&staging),
    )
    .await;
    std::fs::remove_dir_all(&staging).unwrap();
}

struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
    options: PacmanOptions,
    url: String,
}

/// An alternative root, a base config pointing every pacman path into it, and a repository with
/// 1.1.0-1 in its database and 1.0.0-1 next to it.
async fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let repo = dir.path().join("repo");
    for sub in [
        "var/lib/pacman",
        "var/cache/pacman/pkg",
        "var/log",
        "etc/pacman.d/gnupg",
        "etc/pacman.d/hooks",
    ] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::create_dir_all(&repo).unwrap();
    build_package(&repo, "1.0.0-1").await;
    build_package(&repo, "1.1.0-1").await;
    build_database(&repo, "1.1.0-1").await;
    let config = dir.path().join("pacman.conf");
    std::fs::write(
        &config,
        format!(
            "[options]\nRootDir = {root}\nDBPath = {root}/var/lib/pacman/\nCacheDir = {root}/var/cache/pacman/pkg/\nLogFile = {root}/var/log/pacman.log\nGPGDir = {root}/etc/pacman.d/gnupg/\nHookDir = {root}/etc/pacman.d/hooks/\nArchitecture = x86_64\nSigLevel = Never\n",
            root = root.display()
        ),
    )
    .unwrap();
    let options = PacmanOptions {
        root: Some(root.clone()),
        dbpath: Some(root.join("var/lib/pacman")),
        config: Some(config),
        state_dir: dir.path().join("state"),
        ..PacmanOptions::default()
    };
    let url = format!("file://{}/eptest.db", repo.display());
    Sandbox {
        _dir: dir,
        root,
        repo,
        options,
        url,
    }
}

fn pinned(version: &str, url: &str) -> PackageRequest {
    PackageRequest {
        name: NAME.parse().unwrap(),
        version: Some(version.parse().unwrap()),
        repository: Some(url.parse().unwrap()),
    }
}

/// The host's own pacman paths and /usr/bin hold nothing of the test package.
fn host_untouched() {
    assert!(
        !Path::new("/usr/bin").join(NAME).exists(),
        "written to the real /usr/bin"
    );
    for dir in [
        "/var/lib/pacman/local",
        "/var/cache/pacman/pkg",
        "/var/lib/pacman/sync",
    ] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                assert!(
                    !name.starts_with(NAME) && name != "eptest.db",
                    "written to the host's {dir}: {name}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pacman_installs_pins_into_an_alternative_root() {
    require_root_and_tools();
    let sandbox = sandbox().await;
    let pacman = Pacman::new(
        shell(),
        Arc::new(Recorder::default()),
        Privilege::detect(),
        sandbox.options.clone(),
    );

    // The database's version comes from the repository.
    let installed = pacman
        .install(&[pinned("1.1.0-1", &sandbox.url)])
        .await
        .unwrap();
    assert_eq!(installed[0].version, "1.1.0-1");
    assert_eq!(
        pacman
            .query(&NAME.parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .version,
        "1.1.0-1"
    );
    let binary = sandbox.root.join("usr/bin").join(NAME);
    let files = pacman.files(&NAME.parse().unwrap()).await.unwrap();
    assert!(files.contains(&binary), "{files:?}");
    assert!(
        files.iter().all(|f| f.starts_with(&sandbox.root)),
        "{files:?}"
    );
    assert_eq!(
        run(
            &shell(),
            CommandSpec::new(&binary.display().to_string(), Vec::<String>::new())
        )
        .await,
        format!("{NAME} 1.1.0-1\n")
    );

    // An older pin: installed with -U from the file next to the database.
    pacman
        .install(&[pinned("1.0.0-1", &sandbox.url)])
        .await
        .unwrap();
    assert_eq!(
        pacman
            .query(&NAME.parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .version,
        "1.0.0-1"
    );
    assert_eq!(
        run(
            &shell(),
            CommandSpec::new(&binary.display().to_string(), Vec::<String>::new())
        )
        .await,
        format!("{NAME} 1.0.0-1\n")
    );

    // A version nobody has names the ones that exist.
    let error = pacman
        .install(&[pinned("9.9-1", &sandbox.url)])
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
    assert_eq!(manager, "pacman");
    assert_eq!(package, &format!("{NAME}=9.9-1"));
    assert!(
        message.contains("9.9-1") && message.contains("1.1.0-1") && message.contains("1.0.0-1"),
        "{message}"
    );

    pacman.remove(&NAME.parse().unwrap()).await.unwrap();
    assert_eq!(pacman.query(&NAME.parse().unwrap()).await.unwrap(), None);
    assert!(!binary.exists());
    assert!(sandbox.repo.join("eptest.db").exists());
    host_untouched();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_installer_finds_the_executable_under_the_alternative_root() {
    require_root_and_tools();
    let sandbox = sandbox().await;
    let shell = shell();
    let progress = Arc::new(Recorder::default());
    let managers = HostManagers::new(
        shell.clone(),
        progress.clone(),
        sandbox.options.state_dir.clone(),
    )
    .with_distro(Distro::Arch)
    .with_privilege(Privilege::detect())
    .with_pacman_options(sandbox.options.clone());
    let installer = PackageEngineInstaller::new(
        managers,
        shell,
        Arc::new(ConfigPolicy),
        progress,
        Arc::new(SystemClock),
    );
    let spec = PackageInstallSpec {
        engine: Engine::Llamacpp,
        cache_dir: sandbox.root.parent().unwrap().join("cache"),
        name: Some(NAME.parse().unwrap()),
        version: "1.0.0-1".parse().unwrap(),
        repository: Some(sandbox.url.parse().unwrap()),
        manager: None,
        distro: None,
        allowed_by_config: true,
        executable: NAME.to_string(),
        version_args: vec!["--version".to_string()],
        backend: provisioner_core::Backend::Cpu,
        gpu: None,
        allow_cpu_fallback: false,
        flag_probe: None,
    };
    let cold = installer.ensure_installed(&spec).await.unwrap();
    assert!(!cold.cache_hit);
    assert_eq!(cold.manager, ManagerKind::Pacman);
    assert_eq!(cold.executable, sandbox.root.join("usr/bin").join(NAME));
    assert_eq!(
        cold.version_output.as_deref(),
        Some("ep-test-pacman 1.0.0-1")
    );
    assert_eq!(
        cold.engine_version,
        package_engine_version(
            Engine::Llamacpp,
            ManagerKind::Pacman,
            &NAME.parse().unwrap(),
            &"1.0.0-1".parse().unwrap(),
            Some(&sandbox.url.parse().unwrap())
        )
    );
    let warm = installer.ensure_installed(&spec).await.unwrap();
    assert!(warm.cache_hit);
    host_untouched();
}
