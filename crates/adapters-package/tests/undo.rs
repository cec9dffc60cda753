//! Undoing a package install that failed its checks, against a scripted Shell: a package that
//! replaced another version of itself puts that version back (through the same manager), or the
//! error names the exact command that does.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use adapters_package::{HostManagers, PackageEngineInstaller, Privilege};
use provisioner_core::{
    Backend, Distro, Engine, Error, PackageInstallSpec, PackageInstaller, Policy,
};
use support::{ConfigPolicy, FixedClock, Recorder, ScriptedShell, fail, hint, ok};

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

    fn installer(&self, policy: Arc<dyn Policy>) -> PackageEngineInstaller {
        let managers = HostManagers::new(
            self.shell.clone(),
            self.progress.clone(),
            self.dir.path().join("state"),
        )
        .with_distro(Distro::Debian)
        .with_privilege(Privilege::root());
        PackageEngineInstaller::new(
            managers,
            self.shell.clone(),
            policy,
            self.progress.clone(),
            Arc::new(FixedClock),
        )
    }

    /// The server the new version ships: it runs, but it is a CPU build.
    fn server(&self) -> PathBuf {
        let bin = self.dir.path().join("fs/usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let path = bin.join("ep-fake-server");
        std::fs::write(&path, "#!/bin/sh\necho 1.0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// ep-fake 1.0-1 asked with the CUDA backend: the install succeeds, the backend check fails.
    fn spec(&self) -> PackageInstallSpec {
        PackageInstallSpec {
            engine: Engine::Llamacpp,
            cache_dir: self.dir.path().join("cache"),
            name: Some("ep-fake".parse().unwrap()),
            version: "1.0-1".parse().unwrap(),
            repository: None,
            manager: None,
            distro: None,
            allowed_by_config: true,
            executable: "ep-fake-server".to_string(),
            version_args: vec!["--version".to_string()],
            backend: Backend::Cuda,
            gpu: None,
            allow_cpu_fallback: false,
            flag_probe: None,
        }
    }

    /// 0.9-1 is installed; installing 1.0-1 upgrades it; `after_undo` is what dpkg reports once
    /// the undo ran.
    fn upgrade_from_0_9(&self, after_undo: &str) {
        let server = self.server();
        self.shell
            // Asked before the transaction and again under its lock: the old version.
            .times("dpkg-query -W", 2, ok("ii |0.9-1\n"))
            // After the install (its verification) and when the undo looks: the new one.
            .times("dpkg-query -W", 2, ok("ii |1.0-1\n"))
            .always("dpkg-query -W", ok(after_undo))
            .once("apt-get install", ok(""))
            .always(
                "dpkg-query -L ep-fake",
                ok(&format!("/.\n/usr\n/usr/bin\n{}\n", server.display())),
            )
            .always("ep-fake-server --version", ok("version: 6000 (abc1234)\n"));
    }
}

#[tokio::test]
async fn an_upgrade_that_fails_its_check_installs_the_previous_version_again() {
    let fixture = Fixture::new();
    fixture.upgrade_from_0_9("ii |0.9-1\n");
    fixture
        .shell
        .always(
            "apt-cache madison ep-fake",
            ok("   ep-fake |      1.0-1 | http://deb.example bookworm/main amd64 Packages\n   ep-fake |      0.9-1 | http://deb.example bookworm/main amd64 Packages\n"),
        )
        .once("apt-get install", ok(""));
    let error = fixture
        .installer(Arc::new(ConfigPolicy))
        .ensure_installed(&fixture.spec())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("shows no cuda backend")
            && message.contains("ep-fake 0.9-1, installed before, was installed again"),
        "{message}"
    );
    assert!(
        !hint(&error).contains("restore"),
        "nothing is left for the user to restore: {}",
        hint(&error)
    );
    let installs = fixture.shell.matching("apt-get install");
    assert_eq!(installs.len(), 2, "{installs:?}");
    assert!(installs[0].ends_with(" ep-fake=1.0-1"), "{installs:?}");
    assert!(installs[1].ends_with(" ep-fake=0.9-1"), "{installs:?}");
    assert!(fixture.shell.matching("apt-get remove").is_empty());
    assert!(
        fixture
            .progress
            .notes()
            .iter()
            .any(|note| note.contains("installing ep-fake=0.9-1 again")),
        "{:?}",
        fixture.progress.notes()
    );
}

#[tokio::test]
async fn a_previous_version_no_repository_offers_is_named_with_the_command_that_restores_it() {
    let fixture = Fixture::new();
    fixture.upgrade_from_0_9("ii |1.0-1\n");
    fixture.shell.always(
        "apt-cache madison ep-fake",
        ok("   ep-fake |      1.0-1 | http://deb.example bookworm/main amd64 Packages\n"),
    );
    let error = fixture
        .installer(Arc::new(ConfigPolicy))
        .ensure_installed(&fixture.spec())
        .await
        .unwrap_err();
    let Error::Package { message, .. } = &error else {
        panic!("{error:?}");
    };
    assert!(
        message
            .contains("ep-fake 0.9-1 was installed before and this attempt replaced it with 1.0-1")
            && message.contains("no repository this pool may use offers 0.9-1"),
        "{message}"
    );
    let hint = hint(&error);
    assert!(
        hint.starts_with(
            "restore the version installed before: apt-get install -y --allow-downgrades ep-fake=0.9-1\n"
        ),
        "{hint}"
    );
    // The pool's own advice follows.
    assert!(hint.contains("mode: source"), "{hint}");
    // Only the pinned install ran; nothing was removed.
    assert_eq!(fixture.shell.matching("apt-get install").len(), 1);
    assert!(fixture.shell.matching("apt-get remove").is_empty());
}

#[tokio::test]
async fn a_failing_reinstall_is_reported_with_its_command() {
    let fixture = Fixture::new();
    fixture.upgrade_from_0_9("ii |1.0-1\n");
    fixture
        .shell
        .always(
            "apt-cache madison ep-fake",
            ok("   ep-fake |      1.0-1 | http://deb.example bookworm/main amd64 Packages\n   ep-fake |      0.9-1 | http://deb.example bookworm/main amd64 Packages\n"),
        )
        .always(
            "apt-get install",
            fail(100, "E: Failed to fetch http://deb.example/ep-fake_0.9-1_amd64.deb\n"),
        );
    let error = fixture
        .installer(Arc::new(ConfigPolicy))
        .ensure_installed(&fixture.spec())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("installing 0.9-1 again failed"),
        "{message}"
    );
    assert!(
        hint(&error).starts_with(
            "restore the version installed before: apt-get install -y --allow-downgrades ep-fake=0.9-1"
        ),
        "{}",
        hint(&error)
    );
}

#[tokio::test]
async fn a_repository_the_policy_refuses_is_not_used_to_restore() {
    let fixture = Fixture::new();
    fixture.upgrade_from_0_9("ii |1.0-1\n");
    let mut spec = fixture.spec();
    spec.repository = Some("deb [trusted=yes] file:/srv/repo ./".parse().unwrap());
    fixture.shell.always("apt-get update", ok(""));
    // The pool's repository holds only the new version; the system's would hold the old one,
    // but the policy refuses installs from it.
    fixture.shell.always(
        "apt-cache madison",
        ok("   ep-fake |      1.0-1 | file:/srv/repo ./ Packages\n"),
    );
    let error = fixture
        .installer(Arc::new(OnlyTheirRepository))
        .ensure_installed(&spec)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("was not installed again"),
        "{error}"
    );
    assert!(
        hint(&error).starts_with(
            "restore the version installed before: apt-get install -y --allow-downgrades ep-fake=0.9-1"
        ),
        "{}",
        hint(&error)
    );
    // One madison for the pool's repository; none for the refused system repositories.
    assert_eq!(
        fixture.shell.matching("apt-cache madison").len(),
        1,
        "{:?}",
        fixture.shell.lines()
    );
}

/// Allows installs from a configured repository only (like offline mode with a local one).
struct OnlyTheirRepository;

impl Policy for OnlyTheirRepository {
    fn check(&self, action: &provisioner_core::Action) -> provisioner_core::Result<()> {
        match action {
            provisioner_core::Action::InstallPackages {
                repository: None, ..
            } => Err(Error::PolicyDenied {
                action: "installing from the system's repositories".to_string(),
                hint: None,
            }),
            _ => Ok(()),
        }
    }
}
