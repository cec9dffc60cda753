//! PackageEngineInstaller's decisions against a scripted Shell: warm path cost, policy, rollback,
//! validation and selection errors. The executables are real files in a temporary directory.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use adapters_package::{
    HostManagers, LockSettings, PackageEngineInstaller, PackageInstallMetadata, Privilege,
};
use provisioner_core::Distro;
use provisioner_core::{
    Engine, Error, ManagerKind, PackageInstallSpec, PackageInstaller, Policy,
    package_engine_version,
};
use support::{ConfigPolicy, DenyAll, FixedClock, Recorder, ScriptedShell, fail, hint, ok};

struct Fixture {
    shell: Arc<ScriptedShell>,
    progress: Arc<Recorder>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            shell: ScriptedShell::new(),
            progress: Arc::new(Recorder::default()),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn installer_with(&self, distro: Distro, policy: Arc<dyn Policy>) -> PackageEngineInstaller {
        let managers = HostManagers::new(
            self.shell.clone(),
            self.progress.clone(),
            self.dir.path().join("state"),
        )
        .with_distro(distro)
        .with_privilege(Privilege::root())
        // The host's lock files play no part here.
        .with_locks(LockSettings {
            root: self.dir.path().join("root"),
            ..LockSettings::default()
        });
        PackageEngineInstaller::new(
            managers,
            self.shell.clone(),
            policy,
            self.progress.clone(),
            Arc::new(FixedClock),
        )
    }

    fn installer(&self) -> PackageEngineInstaller {
        self.installer_with(Distro::Debian, Arc::new(ConfigPolicy))
    }

    /// An executable file as a package would ship it, under the temporary "file system".
    fn executable(&self, name: &str) -> PathBuf {
        let bin = self.dir.path().join("fs/usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let path = bin.join(name);
        std::fs::write(&path, "#!/bin/sh\necho 1.0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn spec(&self, name: Option<&str>, executable: &str) -> PackageInstallSpec {
        PackageInstallSpec {
            engine: Engine::Llamacpp,
            cache_dir: self.dir.path().join("cache"),
            name: name.map(|n| n.parse().unwrap()),
            version: "1.0-1".parse().unwrap(),
            repository: None,
            manager: None,
            distro: None,
            allowed_by_config: true,
            executable: executable.to_string(),
            version_args: vec!["--version".to_string()],
            backend: provisioner_core::Backend::Cpu,
            gpu: None,
            allow_cpu_fallback: false,
            flag_probe: None,
        }
    }
}

fn files_listing(paths: &[&Path]) -> String {
    let mut text = "/.\n/usr\n/usr/bin\n".to_string();
    for path in paths {
        text.push_str(&format!("{}\n", path.display()));
    }
    text
}

#[tokio::test]
async fn cold_install_records_and_the_warm_path_runs_one_process() {
    let fixture = Fixture::new();
    let server = fixture.executable("ep-fake-server");
    fixture
        .shell
        // Asked before the transaction, then again under its lock.
        .times(
            "dpkg-query -W",
            2,
            fail(1, "dpkg-query: no packages found matching ep-fake\n"),
        )
        .always("dpkg-query -W", ok("ii |1.0-1\n"))
        .always("apt-get install", ok(""))
        .always("dpkg-query -L ep-fake", ok(&files_listing(&[&server])))
        .always("ep-fake-server --version", ok("ep-fake-server 1.0\n"));
    let installer = fixture.installer();
    let spec = fixture.spec(Some("ep-fake"), "ep-fake-server");

    let cold = installer.ensure_installed(&spec).await.unwrap();
    assert!(!cold.cache_hit);
    assert_eq!(cold.manager, ManagerKind::Apt);
    assert_eq!(cold.package.version, "1.0-1");
    assert_eq!(cold.executable, server);
    assert_eq!(cold.version_output.as_deref(), Some("ep-fake-server 1.0"));
    assert_eq!(
        cold.engine_version,
        package_engine_version(
            Engine::Llamacpp,
            ManagerKind::Apt,
            &"ep-fake".parse().unwrap(),
            &"1.0-1".parse().unwrap(),
            None
        )
    );
    assert!(
        cold.metadata_file
            .starts_with(fixture.dir.path().join("cache/packages-v1")),
        "{}",
        cold.metadata_file.display()
    );
    let metadata: PackageInstallMetadata =
        serde_json::from_slice(&std::fs::read(&cold.metadata_file).unwrap()).unwrap();
    assert_eq!(metadata.format, 1);
    assert!(!metadata.was_installed_before);
    assert_eq!(metadata.installed_at_unix, 1_767_225_600);
    assert_eq!(
        fixture.progress.started()[0],
        "install ep-fake=1.0-1 (apt)",
        "{:?}",
        fixture.progress.events()
    );
    assert_eq!(fixture.shell.matching("apt-get install").len(), 1);

    let before = fixture.shell.calls().len();
    let warm = installer.ensure_installed(&spec).await.unwrap();
    let warm_calls = &fixture.shell.lines()[before..];
    assert!(warm.cache_hit);
    assert_eq!(warm_calls.len(), 1, "{warm_calls:?}");
    assert!(warm_calls[0].starts_with("dpkg-query -W"), "{warm_calls:?}");
    assert_eq!(warm.engine_version, cold.engine_version);
    assert_eq!(warm.executable, cold.executable);
}

#[tokio::test]
async fn a_record_whose_package_was_removed_is_installed_again() {
    let fixture = Fixture::new();
    let server = fixture.executable("ep-fake-server");
    fixture
        .shell
        .times(
            "dpkg-query -W",
            2,
            fail(1, "dpkg-query: no packages found matching ep-fake\n"),
        )
        .times("dpkg-query -W", 2, ok("ii |1.0-1\n"))
        // Removed behind the provisioner's back: the record alone must not be trusted.
        .times("dpkg-query -W", 2, ok("rc |1.0-1\n"))
        .always("dpkg-query -W", ok("ii |1.0-1\n"))
        .always("apt-get install", ok(""))
        .always("dpkg-query -L ep-fake", ok(&files_listing(&[&server])))
        .always("ep-fake-server --version", ok("1.0\n"));
    let installer = fixture.installer();
    let spec = fixture.spec(Some("ep-fake"), "ep-fake-server");
    installer.ensure_installed(&spec).await.unwrap();
    let again = installer.ensure_installed(&spec).await.unwrap();
    assert!(!again.cache_hit);
    assert_eq!(
        fixture.shell.matching("apt-get install").len(),
        2,
        "{:?}",
        fixture.shell.lines()
    );
}

#[tokio::test]
async fn disallowed_installs_are_denied_with_the_exact_command_after_only_the_query() {
    let fixture = Fixture::new();
    fixture.shell.always(
        "dpkg-query -W",
        fail(1, "dpkg-query: no packages found matching ep-fake\n"),
    );
    let mut spec = fixture.spec(Some("ep-fake"), "ep-fake-server");
    spec.allowed_by_config = false;
    let error = fixture
        .installer()
        .ensure_installed(&spec)
        .await
        .unwrap_err();
    let Error::PolicyDenied { action, hint } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(action, "installing ep-fake=1.0-1");
    assert_eq!(
        hint.as_deref(),
        Some(
            "set provisioning.allow_package_installs: true, or install it yourself: apt-get install -y --allow-downgrades ep-fake=1.0-1"
        )
    );
    assert_eq!(
        fixture.shell.lines(),
        ["dpkg-query -W -f ${db:Status-Abbrev}|${Version}\n ep-fake"]
    );
    assert!(
        !spec.cache_dir.exists(),
        "a refused install created the cache (locks, records)"
    );
}

#[tokio::test]
async fn an_installed_pin_is_recorded_even_when_installs_are_disallowed() {
    let fixture = Fixture::new();
    let server = fixture.executable("ep-fake-server");
    fixture
        .shell
        .always("dpkg-query -W", ok("ii |1.0-1\n"))
        .always("dpkg-query -L ep-fake", ok(&files_listing(&[&server])))
        .always("ep-fake-server --version", ok("1.0\n"));
    let mut spec = fixture.spec(Some("ep-fake"), "ep-fake-server");
    spec.allowed_by_config = false;
    let installer = fixture.installer_with(Distro::Debian, Arc::new(DenyAll));
    let artifact = installer.ensure_installed(&spec).await.unwrap();
    let metadata: PackageInstallMetadata =
        serde_json::from_slice(&std::fs::read(&artifact.metadata_file).unwrap()).unwrap();
    assert!(metadata.was_installed_before);
    assert!(fixture.shell.matching("apt-get").is_empty());
}

#[tokio::test]
async fn the_policy_port_is_asked_before_installing() {
    let fixture = Fixture::new();
    fixture.shell.always(
        "dpkg-query -W",
        fail(1, "dpkg-query: no packages found matching ep-fake\n"),
    );
    let spec = fixture.spec(Some("ep-fake"), "ep-fake-server");
    let error = fixture
        .installer_with(Distro::Debian, Arc::new(DenyAll))
        .ensure_installed(&spec)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::PolicyDenied { .. }), "{error:?}");
    assert!(fixture.shell.matching("apt-get").is_empty());
}

#[tokio::test]
async fn a_package_without_the_executable_is_removed_again() {
    let fixture = Fixture::new();
    let doc = fixture.dir.path().join("fs/usr/share/doc/ep-fake/README");
    std::fs::create_dir_all(doc.parent().unwrap()).unwrap();
    std::fs::write(&doc, "").unwrap();
    fixture
        .shell
        // Asked before the transaction, then again under its lock.
        .times(
            "dpkg-query -W",
            2,
            fail(1, "dpkg-query: no packages found matching ep-fake\n"),
        )
        .always("dpkg-query -W", ok("ii |1.0-1\n"))
        .always("apt-get install", ok(""))
        .always("dpkg-query -L ep-fake", ok(&files_listing(&[&doc])))
        .always("apt-get remove", ok(""));
    let spec = fixture.spec(Some("ep-fake"), "llama-server");
    let error = fixture
        .installer()
        .ensure_installed(&spec)
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
        ("apt", "ep-fake=1.0-1")
    );
    assert!(
        message.contains("installed ep-fake=1.0-1 but it ships no `llama-server`")
            && message.contains(&doc.display().to_string())
            && message.contains("ep-fake was removed again"),
        "{message}"
    );
    assert!(hint(&error).contains("llama.cpp-tools"), "{}", hint(&error));
    let removes = fixture.shell.matching("apt-get remove");
    assert_eq!(removes.len(), 1);
    assert!(removes[0].ends_with(" ep-fake"));
    // Nothing recorded.
    assert!(
        !fixture.dir.path().join("cache/packages-v1").exists()
            || std::fs::read_dir(fixture.dir.path().join("cache/packages-v1"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[tokio::test]
async fn a_package_that_was_there_before_is_not_removed() {
    let fixture = Fixture::new();
    fixture
        .shell
        .always("dpkg-query -W", ok("ii |1.0-1\n"))
        .always("dpkg-query -L ep-fake", ok("/usr/share/doc/ep-fake\n"));
    let spec = fixture.spec(Some("ep-fake"), "llama-server");
    let error = fixture
        .installer()
        .ensure_installed(&spec)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("left alone"), "{error}");
    assert!(fixture.shell.matching("apt-get").is_empty());
}

#[tokio::test]
async fn a_wrong_version_after_install_is_rolled_back() {
    let fixture = Fixture::new();
    fixture
        .shell
        // Asked before the transaction, then again under its lock.
        .times(
            "dpkg-query -W",
            2,
            fail(1, "dpkg-query: no packages found matching ep-fake\n"),
        )
        .always("dpkg-query -W", ok("ii |1.1-1\n"))
        .always("apt-get install", ok(""))
        .always("apt-get remove", ok(""));
    let spec = fixture.spec(Some("ep-fake"), "ep-fake-server");
    let error = fixture
        .installer()
        .ensure_installed(&spec)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("asked 1.0-1, the package database reports 1.1-1")
            && message.contains("removed again"),
        "{message}"
    );
    assert_eq!(fixture.shell.matching("apt-get remove").len(), 1);
}

#[tokio::test]
async fn an_executable_that_is_a_path_is_refused_before_any_process() {
    // Names, versions and repositories are types checked when the config is read; the
    // executable comes from the recipe and is checked here.
    let fixture = Fixture::new();
    let spec = fixture.spec(Some("x"), "../../bin/sh");
    assert!(fixture.installer().ensure_installed(&spec).await.is_err());
    assert!(
        fixture.shell.calls().is_empty(),
        "{:?}",
        fixture.shell.lines()
    );
}

#[tokio::test]
async fn the_default_package_is_the_distributions_cpu_build() {
    let fixture = Fixture::new();
    fixture.shell.always(
        "dpkg-query -W",
        fail(
            1,
            "dpkg-query: no packages found matching llama.cpp-tools\n",
        ),
    );
    let mut spec = fixture.spec(None, "llama-server");
    spec.allowed_by_config = false;
    let error = fixture
        .installer()
        .ensure_installed(&spec)
        .await
        .unwrap_err();
    assert!(
        hint(&error).ends_with("apt-get install -y --allow-downgrades llama.cpp-tools=1.0-1"),
        "{}",
        hint(&error)
    );
}

#[tokio::test]
async fn an_unknown_distribution_is_a_clear_error() {
    let fixture = Fixture::new();
    let installer = fixture.installer_with(Distro::Unknown, Arc::new(ConfigPolicy));
    for name in [None, Some("llama-server-pkg")] {
        let error = installer
            .ensure_installed(&fixture.spec(name, "llama-server"))
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("unknown distribution"),
            "{error}"
        );
        assert!(
            hint(&error).contains("provisioning.package.distro"),
            "{error:?}"
        );
    }
    assert!(fixture.shell.calls().is_empty());
}

#[tokio::test]
async fn a_server_that_does_not_run_is_rolled_back() {
    let fixture = Fixture::new();
    let server = fixture.executable("ep-fake-server");
    fixture
        .shell
        // Asked before the transaction, then again under its lock.
        .times(
            "dpkg-query -W",
            2,
            fail(1, "dpkg-query: no packages found matching ep-fake\n"),
        )
        .always("dpkg-query -W", ok("ii |1.0-1\n"))
        .always("apt-get install", ok(""))
        .always("dpkg-query -L ep-fake", ok(&files_listing(&[&server])))
        .always(
            "ep-fake-server --version",
            fail(127, "error while loading shared libraries: libggml.so.0\n"),
        )
        .always("apt-get remove", ok(""));
    let spec = fixture.spec(Some("ep-fake"), "ep-fake-server");
    let error = fixture
        .installer()
        .ensure_installed(&spec)
        .await
        .unwrap_err();
    let Error::CommandFailed { status, tail, .. } = &error else {
        panic!("{error:?}");
    };
    assert!(
        status.contains("exit code 127") && status.contains("ep-fake was removed again"),
        "{status}"
    );
    assert!(tail.contains("libggml"), "{tail}");
    assert_eq!(fixture.shell.matching("apt-get remove").len(), 1);
}

#[tokio::test]
async fn a_package_without_the_gpu_backend_asked_for_is_removed_again() {
    let fixture = Fixture::new();
    let server = fixture.executable("ep-fake-server");
    fixture
        .shell
        .times(
            "dpkg-query -W",
            2,
            fail(1, "dpkg-query: no packages found matching ep-fake\n"),
        )
        .always("dpkg-query -W", ok("ii |1.0-1\n"))
        .always("apt-get install", ok(""))
        .always("dpkg-query -L ep-fake", ok(&files_listing(&[&server])))
        .always("ep-fake-server --version", ok("version: 6000 (abc1234)\n"))
        .always("apt-get remove", ok(""));
    let mut spec = fixture.spec(Some("ep-fake"), "ep-fake-server");
    spec.backend = provisioner_core::Backend::Cuda;
    let error = fixture
        .installer()
        .ensure_installed(&spec)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("shows no cuda backend")
            && message.contains("it would run on the CPU")
            && message.contains("ep-fake was removed again"),
        "{message}"
    );
    assert!(hint(&error).contains("mode: source"), "{}", hint(&error));
    assert_eq!(fixture.shell.matching("apt-get remove").len(), 1);
    let records = std::fs::read_dir(spec.cache_dir.join("packages-v1"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(records, 0, "a failed install left a record");
}

#[tokio::test]
async fn a_gpu_backend_with_no_known_package_is_a_clear_error_before_anything_runs() {
    let fixture = Fixture::new();
    let mut spec = fixture.spec(None, "llama-server");
    spec.backend = provisioner_core::Backend::Cuda;
    let error = fixture
        .installer_with(Distro::Fedora, Arc::new(ConfigPolicy))
        .ensure_installed(&spec)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("no known package ships llamacpp with the cuda backend on fedora")
            && message.contains("llama-cpp (cpu)"),
        "{message}"
    );
    assert!(
        fixture.shell.calls().is_empty(),
        "{:?}",
        fixture.shell.lines()
    );
}

/// `dpkg-query -W` of one package (the pattern a rule matches).
fn status_of(name: &str) -> String {
    format!("dpkg-query -W -f ${{db:Status-Abbrev}}|${{Version}}\n {name}")
}

/// Debian ships llama.cpp's GPU backends apart from the server: `backend: vulkan` installs
/// `llama.cpp-tools` and `libggml0-backend-vulkan` at the version of the `libggml0` installed
/// with it, and the backend check reads both packages' files.
#[tokio::test]
async fn a_backend_that_ships_apart_is_installed_with_the_server_and_checked_with_it() {
    let fixture = Fixture::new();
    let server = fixture.executable("llama-server");
    let library = "/usr/lib/x86_64-linux-gnu/ggml/backends0/libggml-vulkan.so";
    fixture
        .shell
        // The backend's rules come first: `libggml0` is a prefix of its name.
        .once(
            &status_of("libggml0-backend-vulkan"),
            fail(
                1,
                "dpkg-query: no packages found matching libggml0-backend-vulkan\n",
            ),
        )
        .always(&status_of("libggml0-backend-vulkan"), ok("ii |0.9.11-1\n"))
        .always(&status_of("libggml0"), ok("ii |0.9.11-1\n"))
        .times(
            &status_of("llama.cpp-tools"),
            2,
            fail(
                1,
                "dpkg-query: no packages found matching llama.cpp-tools\n",
            ),
        )
        .always(&status_of("llama.cpp-tools"), ok("ii |1.0-1\n"))
        .always("apt-get install", ok(""))
        .always(
            "dpkg-query -L llama.cpp-tools",
            ok(&files_listing(&[&server])),
        )
        .always(
            "dpkg-query -L libggml0-backend-vulkan",
            ok(&format!("/.\n/usr\n{library}\n")),
        )
        .always("llama-server --version", ok("version: 8064 (abc1234)\n"));
    let mut spec = fixture.spec(None, "llama-server");
    spec.backend = provisioner_core::Backend::Vulkan;
    let installer = fixture.installer();

    let cold = installer.ensure_installed(&spec).await.unwrap();
    assert_eq!(cold.package.name, "llama.cpp-tools");
    assert_eq!(cold.found.backend, provisioner_core::FoundBackend::Vulkan);
    assert!(
        cold.found.how.contains("libggml-vulkan.so")
            && cold
                .found
                .how
                .contains("llama.cpp-tools and libggml0-backend-vulkan"),
        "{}",
        cold.found.how
    );
    let installs = fixture.shell.matching("apt-get install");
    assert_eq!(installs.len(), 2, "{installs:?}");
    assert!(
        installs[0].ends_with(" llama.cpp-tools=1.0-1"),
        "{installs:?}"
    );
    // At exactly the version of the libggml0 that came with the server.
    assert!(
        installs[1].ends_with(" libggml0-backend-vulkan=0.9.11-1"),
        "{installs:?}"
    );
    assert!(
        fixture
            .progress
            .started()
            .contains(&"install libggml0-backend-vulkan=0.9.11-1 (apt)".to_string()),
        "{:?}",
        fixture.progress.events()
    );
    let metadata: PackageInstallMetadata =
        serde_json::from_slice(&std::fs::read(&cold.metadata_file).unwrap()).unwrap();
    let backend = metadata.backend_package.unwrap();
    assert_eq!(
        (backend.name.as_str(), backend.version.as_str()),
        ("libggml0-backend-vulkan", "0.9.11-1")
    );

    // Warm: the record and one query per package.
    let before = fixture.shell.calls().len();
    let warm = installer.ensure_installed(&spec).await.unwrap();
    let warm_calls = &fixture.shell.lines()[before..];
    assert!(warm.cache_hit);
    assert_eq!(warm_calls.len(), 2, "{warm_calls:?}");
    assert!(
        warm_calls
            .iter()
            .all(|call| call.starts_with("dpkg-query -W"))
    );
}

/// The server is there, the backend package is not, and installs are not allowed: the hint
/// installs the backend package; with both missing it names both.
#[tokio::test]
async fn a_missing_backend_package_is_named_in_the_install_command() {
    let fixture = Fixture::new();
    let server = fixture.executable("llama-server");
    fixture
        .shell
        .always(
            &status_of("libggml0-backend-cuda"),
            fail(
                1,
                "dpkg-query: no packages found matching libggml0-backend-cuda\n",
            ),
        )
        .always(&status_of("libggml0"), ok("ii |0.9.11-1\n"))
        .always(&status_of("llama.cpp-tools"), ok("ii |1.0-1\n"))
        .always(
            "dpkg-query -L llama.cpp-tools",
            ok(&files_listing(&[&server])),
        );
    let mut spec = fixture.spec(Some("llama.cpp-tools"), "llama-server");
    spec.backend = provisioner_core::Backend::Cuda;
    spec.allowed_by_config = false;
    let error = fixture
        .installer()
        .ensure_installed(&spec)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::PolicyDenied { .. }), "{error:?}");
    assert_eq!(
        hint(&error),
        "set provisioning.allow_package_installs: true, or install it yourself: apt-get install -y --allow-downgrades libggml0-backend-cuda=0.9.11-1"
    );
    assert!(fixture.shell.matching("apt-get install").is_empty());

    let fixture = Fixture::new();
    fixture.shell.always(
        "dpkg-query -W",
        fail(
            1,
            "dpkg-query: no packages found matching llama.cpp-tools\n",
        ),
    );
    let error = fixture
        .installer()
        .ensure_installed(&spec)
        .await
        .unwrap_err();
    assert_eq!(
        hint(&error),
        "set provisioning.allow_package_installs: true, or install it yourself: apt-get install -y --allow-downgrades llama.cpp-tools=1.0-1 libggml0-backend-cuda"
    );
}

/// The backend package turns out not to carry the backend: both packages this call installed
/// are removed again, the backend package first.
#[tokio::test]
async fn a_backend_package_without_the_backend_is_removed_with_the_server() {
    let fixture = Fixture::new();
    let server = fixture.executable("llama-server");
    fixture
        .shell
        .once(
            &status_of("libggml0-backend-hip"),
            fail(
                1,
                "dpkg-query: no packages found matching libggml0-backend-hip\n",
            ),
        )
        .always(&status_of("libggml0-backend-hip"), ok("ii |0.9.11-1\n"))
        .always(&status_of("libggml0"), ok("ii |0.9.11-1\n"))
        .times(
            &status_of("llama.cpp-tools"),
            2,
            fail(
                1,
                "dpkg-query: no packages found matching llama.cpp-tools\n",
            ),
        )
        .always(&status_of("llama.cpp-tools"), ok("ii |1.0-1\n"))
        .always("apt-get install", ok(""))
        .always("apt-get remove", ok(""))
        .always(
            "dpkg-query -L llama.cpp-tools",
            ok(&files_listing(&[&server])),
        )
        .always(
            "dpkg-query -L libggml0-backend-hip",
            ok("/.\n/usr/share/doc/libggml0-backend-hip/copyright\n"),
        )
        .always("llama-server --version", ok("version: 8064 (abc1234)\n"));
    let mut spec = fixture.spec(None, "llama-server");
    spec.backend = provisioner_core::Backend::Hip;
    let error = fixture
        .installer()
        .ensure_installed(&spec)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("shows no hip backend")
            && message.contains("the files of llama.cpp-tools and libggml0-backend-hip")
            && message.contains(
                "libggml0-backend-hip was removed again; llama.cpp-tools was removed again"
            ),
        "{message}"
    );
    let removals = fixture.shell.matching("apt-get remove");
    assert_eq!(removals.len(), 2, "{removals:?}");
    assert!(
        removals[0].ends_with(" libggml0-backend-hip"),
        "{removals:?}"
    );
    assert!(removals[1].ends_with(" llama.cpp-tools"), "{removals:?}");
}
