//! BinaryArtifactInstaller end to end: loopback server, real HttpFetcher, real HostShell, real
//! HostPolicy, real install transaction.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use adapters_binary::{
    BinaryArtifactInstaller, BinaryInstallMetadata, FetchSettings, HttpFetcher, install_key,
};
use adapters_host::SystemClock;
use policy::HostPolicy;
use provisioner_core::{BinaryInstallSpec, BinaryInstaller, Checksum, Engine, Error, UnpackLimits};
use support::{Item, Recorder, Route, TestServer, engine_archive, gzip, sha256, tar};

struct Setup {
    server: TestServer,
    shell: Arc<provisioner_core::RecordingShell>,
    progress: Arc<Recorder>,
    installer: BinaryArtifactInstaller,
    root: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        Self::with_policy(HostPolicy::default()).await
    }

    async fn with_policy(policy: HostPolicy) -> Setup {
        let progress = Arc::new(Recorder::default());
        let shell = support::counting_shell();
        let fetcher = Arc::new(HttpFetcher::new(
            progress.clone(),
            FetchSettings {
                stall_timeout: Duration::from_secs(2),
                ..FetchSettings::default()
            },
        ));
        let installer = BinaryArtifactInstaller::new(
            fetcher,
            shell.clone(),
            Arc::new(policy),
            progress.clone(),
            Arc::new(SystemClock),
        );
        Setup {
            server: TestServer::start().await,
            shell,
            progress,
            installer,
            root: tempfile::tempdir().unwrap(),
        }
    }

    fn spec(&self, path: &str, archive: &[u8]) -> BinaryInstallSpec {
        BinaryInstallSpec {
            engine: Engine::Llamacpp,
            install_root: self.root.path().join("bin"),
            url: self.server.url(path).parse().unwrap(),
            checksum: sha256(archive),
            size: Some(archive.len() as u64),
            allowed_by_config: None,
            executable: "fake-engine".to_string(),
            version_args: vec!["--version".to_string()],
            limits: UnpackLimits::default(),
        }
    }

    fn install_root(&self) -> PathBuf {
        self.root.path().join("bin")
    }

    /// Entries left in `.staging` (the directory itself may exist).
    fn staging_leftovers(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.install_root().join(".staging")) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

const VERSION: &str = "1.2.3 (build 7, commit abc1234)";

#[tokio::test]
async fn cold_install_then_warm_cache_hit() {
    let setup = Setup::new().await;
    let archive = engine_archive(VERSION, 0);
    setup.server.file("/engine.tar.gz", &archive, true);
    let spec = setup.spec("/engine.tar.gz", &archive);
    let key = install_key(&spec);

    let artifact = setup.installer.ensure_installed(&spec).await.unwrap();
    let dir = setup.install_root().join(&key);
    assert!(!artifact.cache_hit);
    assert_eq!(artifact.key, key);
    assert!(key.starts_with("sha256-") && key.len() == "sha256-".len() + 16);
    assert_eq!(artifact.dir, dir);
    assert!(artifact.dir.is_absolute());
    assert_eq!(artifact.executable, dir.join("bin/fake-engine"));
    assert_eq!(artifact.library_dirs, vec![dir.join("bin")]);
    assert_eq!(artifact.checksum, sha256(&archive));
    assert_eq!(artifact.bytes, archive.len() as u64);
    let version = artifact.version_output.clone().unwrap();
    assert!(version.contains("build 7"), "{version}");
    assert_eq!(artifact.metadata_file, dir.join("metadata.json"));

    let metadata: BinaryInstallMetadata =
        serde_json::from_slice(&std::fs::read(&artifact.metadata_file).unwrap()).unwrap();
    assert_eq!(metadata.format, 1);
    assert_eq!(metadata.key, key);
    assert_eq!(metadata.url, spec.url.to_string());
    assert_eq!(metadata.executable, PathBuf::from("bin/fake-engine"));
    assert_eq!(metadata.library_dirs, vec![PathBuf::from("bin")]);
    assert_eq!(metadata.engine, Engine::Llamacpp);
    assert!(metadata.installed_at_unix > 0);
    assert_eq!(setup.shell.count(), 1);
    assert_eq!(setup.server.requests(), 1);
    // The download is gone once installed, and no staging is left.
    assert!(
        std::fs::read_dir(setup.install_root().join("downloads"))
            .unwrap()
            .next()
            .is_none()
    );
    assert!(setup.staging_leftovers().is_empty());

    let again = setup.installer.ensure_installed(&spec).await.unwrap();
    assert!(again.cache_hit);
    assert_eq!(again.executable, artifact.executable);
    assert_eq!(again.version_output, artifact.version_output);
    assert_eq!(
        setup.server.requests(),
        1,
        "the warm path downloads nothing"
    );
    assert_eq!(setup.shell.count(), 1, "the warm path runs nothing");
}

#[tokio::test]
async fn a_changed_checksum_is_a_new_install() {
    let setup = Setup::new().await;
    let first = engine_archive(VERSION, 0);
    let second = engine_archive("1.2.4 (build 8, commit def5678)", 0);
    setup.server.file("/a.tar.gz", &first, true);
    setup.server.file("/b.tar.gz", &second, true);
    let one = setup
        .installer
        .ensure_installed(&setup.spec("/a.tar.gz", &first))
        .await
        .unwrap();
    let two = setup
        .installer
        .ensure_installed(&setup.spec("/b.tar.gz", &second))
        .await
        .unwrap();
    assert_ne!(one.key, two.key);
    assert!(!two.cache_hit);
    assert!(two.version_output.unwrap().contains("build 8"));
    assert!(one.executable.exists() && two.executable.exists());
}

#[tokio::test]
async fn a_checksum_mismatch_installs_nothing() {
    let setup = Setup::new().await;
    let archive = engine_archive(VERSION, 0);
    setup.server.file("/engine.tar.gz", &archive, true);
    let mut spec = setup.spec("/engine.tar.gz", &archive);
    spec.checksum = Checksum::parse(&format!("sha256:{}", "e".repeat(64))).unwrap();
    let key = install_key(&spec);
    let error = setup.installer.ensure_installed(&spec).await.unwrap_err();
    assert!(error.to_string().contains("checksum mismatch"), "{error}");
    assert!(!setup.install_root().join(&key).exists());
    assert!(setup.staging_leftovers().is_empty());
    assert!(
        std::fs::read_dir(setup.install_root().join("downloads"))
            .unwrap()
            .next()
            .is_none()
    );
    assert_eq!(setup.shell.count(), 0);
}

#[tokio::test]
async fn an_archive_without_the_executable_installs_nothing() {
    let setup = Setup::new().await;
    let archive = gzip(&tar(&[Item::File(
        "bin/other-engine",
        b"#!/bin/sh\n",
        0o755,
    )]));
    setup.server.file("/engine.tar.gz", &archive, true);
    let spec = setup.spec("/engine.tar.gz", &archive);
    let error = setup.installer.ensure_installed(&spec).await.unwrap_err();
    assert!(matches!(error, Error::BuildCheck { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("the archive has no `fake-engine`"),
        "{error}"
    );
    assert!(!setup.install_root().join(install_key(&spec)).exists());
    assert!(setup.staging_leftovers().is_empty());
}

#[tokio::test]
async fn a_verified_download_is_reused_after_a_failed_install() {
    let setup = Setup::new().await;
    let archive = engine_archive(VERSION, 0);
    setup.server.file("/engine.tar.gz", &archive, true);
    let mut spec = setup.spec("/engine.tar.gz", &archive);
    spec.executable = "llama-server".to_string();
    let error = setup.installer.ensure_installed(&spec).await.unwrap_err();
    assert!(error.to_string().contains("no `llama-server`"), "{error}");
    assert_eq!(setup.server.requests(), 1);
    // Same archive, corrected executable name: no second download.
    spec.executable = "fake-engine".to_string();
    let artifact = setup.installer.ensure_installed(&spec).await.unwrap();
    assert!(!artifact.cache_hit);
    assert_eq!(setup.server.requests(), 1);
    assert!(
        setup
            .progress
            .text()
            .contains("using the verified download")
    );
}

#[tokio::test]
async fn concurrent_installs_of_one_key_download_once() {
    let setup = Setup::new().await;
    let archive = engine_archive(VERSION, 200_000);
    setup.server.route(
        "/engine.tar.gz",
        Route::Slow {
            body: Arc::new(archive.clone()),
            chunk: 32 * 1024,
            delay: Duration::from_millis(5),
            ranges: true,
        },
    );
    let spec = setup.spec("/engine.tar.gz", &archive);
    let (one, two) = tokio::join!(
        setup.installer.ensure_installed(&spec),
        setup.installer.ensure_installed(&spec)
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one.dir, two.dir);
    assert!(
        one.cache_hit != two.cache_hit,
        "exactly one of them installed"
    );
    assert_eq!(setup.server.requests(), 1);
    assert_eq!(setup.shell.count(), 1);
}

#[tokio::test]
async fn several_executables_are_listed() {
    let setup = Setup::new().await;
    let script = b"#!/bin/sh\necho x\n";
    let archive = gzip(&tar(&[
        Item::File("a/fake-engine", script, 0o755),
        Item::File("b/fake-engine", script, 0o755),
    ]));
    setup.server.file("/engine.tar.gz", &archive, true);
    let error = setup
        .installer
        .ensure_installed(&setup.spec("/engine.tar.gz", &archive))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("a/fake-engine, b/fake-engine"), "{text}");
}

#[tokio::test]
async fn a_hostile_archive_installs_nothing() {
    let setup = Setup::new().await;
    let archive = gzip(&support::raw_tar(&[
        (
            support::raw_header(b"bin/fake-engine", tar::EntryType::Regular, 3, 0o755, None),
            b"x\n\n".to_vec(),
        ),
        (
            support::raw_header(b"../../escape", tar::EntryType::Regular, 4, 0o644, None),
            b"evil".to_vec(),
        ),
    ]));
    setup.server.file("/engine.tar.gz", &archive, true);
    let spec = setup.spec("/engine.tar.gz", &archive);
    let error = setup.installer.ensure_installed(&spec).await.unwrap_err();
    assert!(matches!(error, Error::HostileArchive { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("engine.tar.gz: entry `../../escape`"),
        "{error}"
    );
    assert!(!setup.install_root().join(install_key(&spec)).exists());
    assert!(setup.staging_leftovers().is_empty());
    assert!(!setup.root.path().join("escape").exists());
    assert_eq!(setup.shell.count(), 0);
}

#[tokio::test]
async fn a_binary_that_does_not_run_here_is_an_error() {
    let setup = Setup::new().await;
    let script = b"#!/bin/sh\necho 'fake-engine: error while loading shared libraries: libcuda.so.1' >&2\nexit 127\n";
    let archive = gzip(&tar(&[Item::File("fake-engine", script, 0o755)]));
    setup.server.file("/engine.tar.gz", &archive, true);
    let spec = setup.spec("/engine.tar.gz", &archive);
    let error = setup.installer.ensure_installed(&spec).await.unwrap_err();
    let Error::CommandFailed {
        command,
        status,
        tail,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert!(command.ends_with("fake-engine --version"), "{command}");
    assert_eq!(status, "exit code 127");
    assert!(tail.contains("libcuda.so.1"), "{tail}");
    assert!(error.hint().unwrap().contains("shared library"));
    assert!(!setup.install_root().join(install_key(&spec)).exists());
    assert!(setup.staging_leftovers().is_empty());
}

#[tokio::test]
async fn policy_denial_contacts_nothing() {
    let setup = Setup::new().await;
    let archive = engine_archive(VERSION, 0);
    setup.server.file("/engine.tar.gz", &archive, true);

    let mut spec = setup.spec("/engine.tar.gz", &archive);
    spec.allowed_by_config = Some(false);
    let error = setup.installer.ensure_installed(&spec).await.unwrap_err();
    assert!(matches!(error, Error::PolicyDenied { .. }), "{error:?}");

    assert_eq!(setup.server.requests(), 0);
    assert_eq!(setup.shell.count(), 0);
    assert!(!setup.install_root().join("downloads").exists());
}

#[tokio::test]
async fn a_tampered_install_is_replaced() {
    let setup = Setup::new().await;
    let archive = engine_archive(VERSION, 0);
    setup.server.file("/engine.tar.gz", &archive, true);
    let spec = setup.spec("/engine.tar.gz", &archive);
    let artifact = setup.installer.ensure_installed(&spec).await.unwrap();
    std::fs::write(&artifact.executable, "#!/bin/sh\necho tampered\n").unwrap();
    let again = setup.installer.ensure_installed(&spec).await.unwrap();
    assert!(!again.cache_hit);
    assert!(again.version_output.unwrap().contains("build 7"));
    assert_eq!(setup.server.requests(), 2);
}

#[tokio::test]
async fn a_bare_executable_is_installed_under_its_name() {
    let setup = Setup::new().await;
    let script = format!("#!/bin/sh\necho \"version: {VERSION}\"\n").into_bytes();
    setup.server.file("/fake-engine-linux-x64", &script, true);
    let spec = setup.spec("/fake-engine-linux-x64", &script);
    let artifact = setup.installer.ensure_installed(&spec).await.unwrap();
    assert_eq!(artifact.executable, artifact.dir.join("fake-engine"));
    assert!(artifact.library_dirs.is_empty());
    assert!(artifact.version_output.unwrap().contains("build 7"));
}

#[tokio::test]
async fn a_wrong_size_is_refused() {
    let setup = Setup::new().await;
    let archive = engine_archive(VERSION, 0);
    setup.server.file("/engine.tar.gz", &archive, true);
    let mut spec = setup.spec("/engine.tar.gz", &archive);
    spec.size = Some(archive.len() as u64 + 10);
    let error = setup.installer.ensure_installed(&spec).await.unwrap_err();
    assert!(error.to_string().contains("size mismatch"), "{error}");
    spec.size = Some(archive.len() as u64 - 10);
    let error = setup.installer.ensure_installed(&spec).await.unwrap_err();
    assert!(
        error.to_string().contains("more than the allowed"),
        "{error}"
    );
    assert!(!setup.install_root().join(install_key(&spec)).exists());
}

fn partial_len(root: &Path, key: &str) -> u64 {
    std::fs::metadata(root.join("downloads").join(format!("{key}.tar.gz.partial")))
        .map_or(0, |m| m.len())
}

#[tokio::test]
async fn a_dropped_install_resumes_its_download() {
    let setup = Setup::new().await;
    // About 600 KB of noise, sent 16 KB every 20 ms: a few hundred milliseconds in flight.
    let archive = engine_archive(VERSION, 600_000);
    setup.server.route(
        "/engine.tar.gz",
        Route::Slow {
            body: Arc::new(archive.clone()),
            chunk: 16 * 1024,
            delay: Duration::from_millis(20),
            ranges: true,
        },
    );
    let spec = setup.spec("/engine.tar.gz", &archive);
    let key = install_key(&spec);
    {
        let install = setup.installer.ensure_installed(&spec);
        tokio::pin!(install);
        loop {
            tokio::select! {
                result = &mut install => panic!("finished before it was dropped: {result:?}"),
                () = tokio::time::sleep(Duration::from_millis(5)) => {
                    if partial_len(&setup.install_root(), &key) >= 100_000 {
                        break;
                    }
                }
            }
        }
        // Dropped here, mid-download, like a killed run.
    }
    assert!(
        setup.staging_leftovers().is_empty(),
        "the staging directory is removed on drop"
    );
    assert!(!setup.install_root().join(&key).exists());

    setup.server.file("/engine.tar.gz", &archive, true);
    let artifact = setup.installer.ensure_installed(&spec).await.unwrap();
    assert!(!artifact.cache_hit);
    assert_eq!(artifact.checksum, sha256(&archive));
    assert!(artifact.version_output.unwrap().contains("build 7"));
    let hits = setup.server.hits_for("/engine.tar.gz");
    assert_eq!(hits.len(), 2);
    let range = hits[1].range.clone().expect("the second request resumes");
    let from: u64 = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .unwrap()
        .parse()
        .unwrap();
    assert!(from >= 100_000 && from < archive.len() as u64, "{range}");
    assert!(setup.progress.text().contains("resuming"));
}
