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
            older_names: vec!["old-engine".to_string()],
            configured: None,
            version_args: vec!["--version".to_string()],
            limits: UnpackLimits::default(),
            flag_probe: None,
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
    let text = error.to_string();
    assert!(
        text.contains(
            "the archive has no file named `fake-engine` or `old-engine`; it holds: bin/other-engine (executable)"
        ),
        "{text}"
    );
    assert!(
        error
            .hint()
            .unwrap()
            .starts_with("set provisioning.binary.executable to the server's path"),
        "{error:?}"
    );
    assert!(!setup.install_root().join(install_key(&spec)).exists());
    assert!(setup.staging_leftovers().is_empty());
}

/// An archive from before the engine renamed its server holds it under the older name: it is
/// found, and prepare says so.
#[tokio::test]
async fn an_older_server_name_is_found_and_said() {
    let setup = Setup::new().await;
    let script = format!("#!/bin/sh\necho '{VERSION}'\n");
    let archive = gzip(&tar(&[
        Item::File("build/bin/old-engine", script.as_bytes(), 0o755),
        Item::File("build/bin/llama-cli", script.as_bytes(), 0o755),
    ]));
    setup.server.file("/old.tar.gz", &archive, true);
    let spec = setup.spec("/old.tar.gz", &archive);
    let artifact = setup.installer.ensure_installed(&spec).await.unwrap();
    assert!(artifact.executable.ends_with("build/bin/old-engine"));
    let notes = setup.progress.notes();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("the archive has no `fake-engine`; using `build/bin/old-engine`")),
        "{notes:?}"
    );
    // And the warm path accepts it.
    let again = setup.installer.ensure_installed(&spec).await.unwrap();
    assert!(again.cache_hit);
}

/// `binary.executable` names the server by its path in the archive (or its file name).
#[tokio::test]
async fn a_configured_executable_path_is_used_and_a_wrong_one_lists_the_contents() {
    let setup = Setup::new().await;
    let script = format!("#!/bin/sh\necho '{VERSION}'\n");
    let archive = gzip(&tar(&[
        Item::File("x/fake-engine", script.as_bytes(), 0o755),
        Item::File("y/fake-engine", script.as_bytes(), 0o755),
        Item::File("y/README.md", b"readme", 0o644),
    ]));
    setup.server.file("/two.tar.gz", &archive, true);
    let mut spec = setup.spec("/two.tar.gz", &archive);
    spec.configured = Some("y/fake-engine".parse().unwrap());
    let artifact = setup.installer.ensure_installed(&spec).await.unwrap();
    assert!(artifact.executable.ends_with("y/fake-engine"));

    let mut wrong = setup.spec("/two.tar.gz", &archive);
    wrong.install_root = setup.root.path().join("other");
    wrong.configured = Some("z/fake-engine".parse().unwrap());
    let error = setup.installer.ensure_installed(&wrong).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("the archive has no file `z/fake-engine` (provisioning.binary.executable); it holds: x/fake-engine (executable), y/fake-engine (executable), y/README.md"),
        "{text}"
    );
}

#[tokio::test]
async fn a_verified_download_is_reused_after_a_failed_install() {
    let setup = Setup::new().await;
    let archive = engine_archive(VERSION, 0);
    setup.server.file("/engine.tar.gz", &archive, true);
    let mut spec = setup.spec("/engine.tar.gz", &archive);
    spec.executable = "llama-server".to_string();
    let error = setup.installer.ensure_installed(&spec).await.unwrap_err();
    assert!(
        error.to_string().contains("no file named `llama-server`"),
        "{error}"
    );
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
    // Nothing of it is kept for a later run: resuming is for interrupted transfers only.
    let downloads: Vec<_> = std::fs::read_dir(setup.install_root().join("downloads"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(downloads.is_empty(), "{downloads:?}");
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

/// A release-style archive of the fake engine with ggml's libraries next to it: the split
/// layout's base and CPU libraries, and `libggml-cuda.so` when `cuda` (empty files suffice).
fn ggml_archive(cuda: bool) -> Vec<u8> {
    let script = format!("#!/bin/sh\necho \"version: {VERSION}\"\n");
    let mut items = vec![
        Item::Dir("build/bin"),
        Item::File("build/bin/fake-engine", script.as_bytes(), 0o755),
        Item::File("build/bin/libggml-base.so", b"", 0o644),
        Item::File("build/bin/libggml-cpu-haswell.so", b"", 0o644),
        Item::File("build/bin/libllama.so", b"", 0o644),
    ];
    if cuda {
        items.push(Item::File("build/bin/libggml-cuda.so", b"", 0o644));
    }
    gzip(&tar(&items))
}

/// What binary mode makes of an installed archive for a pool with `-ngl 99`.
fn judged(artifact: &provisioner_core::BinaryArtifact) -> provisioner_core::BackendVerdict {
    let probe = provisioner_core::VersionProbe::new(
        "fake-engine --version",
        artifact.version_output.as_deref(),
        provisioner_core::ggml_reported_backend,
    );
    let found = provisioner_core::BackendFinding::from_evidence(
        &artifact.libraries,
        "the archive's files",
        Some(&probe),
    );
    let ask = provisioner_core::GpuAsk::any("provisioning.flags[0]: -ngl 99");
    provisioner_core::judge_backend(Some(&ask), &found, "the prebuilt", false)
}

#[tokio::test]
async fn the_shipped_libraries_are_recorded_and_show_the_backend() {
    let setup = Setup::new().await;
    for (cuda, path) in [(true, "/cuda.tar.gz"), (false, "/cpu.tar.gz")] {
        let archive = ggml_archive(cuda);
        setup.server.file(path, &archive, true);
        let spec = setup.spec(path, &archive);
        let artifact = setup.installer.ensure_installed(&spec).await.unwrap();
        let dir = setup.install_root().join(install_key(&spec));
        let names: Vec<String> = artifact
            .libraries
            .iter()
            .map(|library| {
                library
                    .strip_prefix(&dir)
                    .unwrap()
                    .to_string_lossy()
                    .to_string()
            })
            .collect();
        let mut expected = vec![
            "build/bin/libggml-base.so",
            "build/bin/libggml-cpu-haswell.so",
            "build/bin/libllama.so",
        ];
        if cuda {
            expected.insert(2, "build/bin/libggml-cuda.so");
        }
        assert_eq!(names, expected);
        let verdict = judged(&artifact);
        if cuda {
            assert_eq!(verdict, provisioner_core::BackendVerdict::Met);
        } else {
            let provisioner_core::BackendVerdict::Refused(message) = verdict else {
                panic!("a CPU-only archive passed -ngl 99: {verdict:?}");
            };
            assert!(
                message.contains("found cpu (no GPU backend among the ggml libraries of the archive's files (libggml-base.so, libggml-cpu-haswell.so)"),
                "{message}"
            );
        }

        // The record keeps them: the warm path shows the same without looking again.
        let metadata: BinaryInstallMetadata =
            serde_json::from_slice(&std::fs::read(&artifact.metadata_file).unwrap()).unwrap();
        assert_eq!(
            metadata.libraries.unwrap().len(),
            expected.len(),
            "{names:?}"
        );
        let again = setup.installer.ensure_installed(&spec).await.unwrap();
        assert!(again.cache_hit);
        assert_eq!(again.libraries, artifact.libraries);
    }
}

#[tokio::test]
async fn a_record_without_libraries_is_scanned_again() {
    let setup = Setup::new().await;
    let archive = ggml_archive(true);
    setup.server.file("/cuda.tar.gz", &archive, true);
    let spec = setup.spec("/cuda.tar.gz", &archive);
    let artifact = setup.installer.ensure_installed(&spec).await.unwrap();
    // An install recorded before libraries were kept.
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&artifact.metadata_file).unwrap()).unwrap();
    record.as_object_mut().unwrap().remove("libraries");
    std::fs::write(&artifact.metadata_file, record.to_string()).unwrap();
    let again = setup.installer.ensure_installed(&spec).await.unwrap();
    assert!(again.cache_hit);
    assert_eq!(again.libraries, artifact.libraries);
}

/// A server script that prints `help` for `--help` (exiting with `help_status`) and its
/// version otherwise.
fn helpful_archive(help: &str, help_status: i32) -> Vec<u8> {
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --help ]; then printf '%s\\n' '{help}'; exit {help_status}; fi\necho \"version: 1 (abc1234)\"\n"
    );
    gzip(&tar(&[
        Item::Dir("bin"),
        Item::File("bin/fake-engine", script.as_bytes(), 0o755),
    ]))
}

fn offline_probe() -> provisioner_core::FlagProbe {
    provisioner_core::FlagProbe {
        args: vec!["--help".to_string()],
        flags: vec!["--offline".to_string()],
    }
}

#[tokio::test]
async fn the_server_help_is_asked_once_and_its_options_recorded() {
    let setup = Setup::new().await;
    let archive = helpful_archive(
        "--offline                   Offline mode: forces use of cache",
        0,
    );
    setup.server.file("/help.tar.gz", &archive, true);
    let mut spec = setup.spec("/help.tar.gz", &archive);
    spec.flag_probe = Some(offline_probe());
    let artifact = setup.installer.ensure_installed(&spec).await.unwrap();
    assert_eq!(artifact.supported_flags, vec!["--offline".to_string()]);
    assert_eq!(setup.shell.count(), 2, "one version run, one help run");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&artifact.metadata_file).unwrap()).unwrap();
    assert_eq!(record["supported_flags"], serde_json::json!(["--offline"]));

    // Warm: recorded, never asked again.
    let again = setup.installer.ensure_installed(&spec).await.unwrap();
    assert!(again.cache_hit);
    assert_eq!(again.supported_flags, artifact.supported_flags);
    assert_eq!(setup.shell.count(), 2);

    // A record from before probes were kept learns once, and is amended.
    let mut record = record;
    record.as_object_mut().unwrap().remove("supported_flags");
    std::fs::write(&artifact.metadata_file, record.to_string()).unwrap();
    let learnt = setup.installer.ensure_installed(&spec).await.unwrap();
    assert_eq!(learnt.supported_flags, vec!["--offline".to_string()]);
    assert_eq!(setup.shell.count(), 3);
    let amended: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&artifact.metadata_file).unwrap()).unwrap();
    assert_eq!(amended["supported_flags"], serde_json::json!(["--offline"]));
    setup.installer.ensure_installed(&spec).await.unwrap();
    assert_eq!(setup.shell.count(), 3, "learnt once");
}

#[tokio::test]
async fn a_server_that_cannot_answer_help_gets_no_probed_option() {
    let setup = Setup::new().await;
    // Lists the option but fails: not trusted. And one that never names it.
    for (path, help, status) in [
        ("/fails.tar.gz", "--offline  x", 1),
        ("/silent.tar.gz", "usage: fake-engine [--offline-mode]", 0),
    ] {
        let archive = helpful_archive(help, status);
        setup.server.file(path, &archive, true);
        let mut spec = setup.spec(path, &archive);
        spec.flag_probe = Some(offline_probe());
        let artifact = setup.installer.ensure_installed(&spec).await.unwrap();
        assert!(artifact.supported_flags.is_empty(), "{path}");
    }
    let notes: Vec<String> = setup
        .progress
        .events()
        .into_iter()
        .filter_map(|event| match event {
            provisioner_core::ProgressEvent::Note { message } => Some(message),
            _ => None,
        })
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("did not answer") && n.contains("--offline")),
        "{notes:?}"
    );
}

/// A run killed after its install was committed (metadata written) but before it cleaned up
/// leaves its staging directory and its download; the next warm call removes both.
#[tokio::test]
async fn leftovers_of_a_run_killed_after_its_commit_are_removed_by_the_next_call() {
    let setup = Setup::new().await;
    let archive = engine_archive(VERSION, 0);
    setup.server.file("/engine.tar.gz", &archive, true);
    let spec = setup.spec("/engine.tar.gz", &archive);
    let key = install_key(&spec);
    setup.installer.ensure_installed(&spec).await.unwrap();

    // What the last window leaves: a dead process's staging dir, the download, a partial one.
    let stale = setup
        .install_root()
        .join(".staging")
        .join(format!("{key}.4294967.deadbeef"));
    std::fs::create_dir_all(stale.join("work")).unwrap();
    std::fs::write(stale.join("work/big"), vec![0u8; 1024]).unwrap();
    let downloads = setup.install_root().join("downloads");
    std::fs::write(downloads.join(format!("{key}.tar.gz")), &archive).unwrap();
    std::fs::write(downloads.join(format!("{key}.tar.gz.partial")), b"x").unwrap();
    // Another key's files are not this call's business.
    std::fs::write(
        downloads.join("sha256-0000000000000000.tar.gz.partial"),
        b"y",
    )
    .unwrap();

    let again = setup.installer.ensure_installed(&spec).await.unwrap();
    assert!(again.cache_hit);
    assert!(!stale.exists(), "the dead run's staging is gone");
    let left: Vec<String> = std::fs::read_dir(&downloads)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        left,
        vec!["sha256-0000000000000000.tar.gz.partial".to_string()]
    );
}
