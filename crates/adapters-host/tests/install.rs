//! The install transaction: success, failure, single flight, cleanup after crashes and
//! cancellation.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use adapters_host::process::locate;
use adapters_host::{
    DetachedSpec, HostShell, InstallRoot, Installed, group_alive, kill_group, spawn_detached,
};
use provisioner_core::RecordingProgress as Recorder;
use provisioner_core::{CommandSpec, Error, NoProgress, Shell};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    version: String,
}

fn any(_: &Installed<Meta>) -> bool {
    true
}

fn meta(version: &str) -> Meta {
    Meta {
        version: version.to_string(),
    }
}

fn staging_entries(root: &Path) -> Vec<PathBuf> {
    match fs::read_dir(root.join(".staging")) {
        Ok(entries) => entries.map(|entry| entry.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_successful_install_is_committed_and_then_found() {
    let dir = tempfile::tempdir().unwrap();
    let root = InstallRoot::new(dir.path(), "builds-v1", Arc::new(NoProgress));
    assert_eq!(root.final_dir("k1"), dir.path().join("builds-v1/k1"));
    assert_eq!(root.log_file("k1"), dir.path().join("logs/k1.log"));
    assert!(root.lookup::<Meta>("k1", &any).is_none());

    let runs = AtomicUsize::new(0);
    let installed = root
        .install("k1", &any, |staging| {
            runs.fetch_add(1, Ordering::SeqCst);
            async move {
                assert!(staging.work.is_dir() && staging.out.is_dir());
                assert_eq!(staging.group_file, staging.dir.join("process-group"));
                fs::write(staging.work.join("scratch.o"), "object").unwrap();
                fs::create_dir(staging.out.join("bin")).unwrap();
                fs::write(staging.out.join("bin/llama-server"), "binary").unwrap();
                Ok(meta("1"))
            }
        })
        .await
        .unwrap();
    assert!(installed.fresh);
    assert_eq!(installed.dir, root.final_dir("k1"));
    assert_eq!(installed.metadata, meta("1"));
    assert_eq!(installed.metadata_file, installed.dir.join("metadata.json"));
    assert_eq!(
        fs::read_to_string(installed.dir.join("bin/llama-server")).unwrap(),
        "binary"
    );
    let stored: Meta =
        serde_json::from_str(&fs::read_to_string(&installed.metadata_file).unwrap()).unwrap();
    assert_eq!(stored, meta("1"));
    assert!(!installed.dir.join("scratch.o").exists());
    assert!(staging_entries(dir.path()).is_empty());
    assert!(
        fs::read_to_string(dir.path().join("CACHEDIR.TAG"))
            .unwrap()
            .starts_with("Signature: 8a477f597d28d172789f06886806bc55")
    );

    let found = root.lookup::<Meta>("k1", &any).unwrap();
    assert!(!found.fresh);
    assert_eq!(found.metadata, meta("1"));
    assert!(
        root.lookup::<Meta>("k1", &|i: &Installed<Meta>| i.metadata.version == "2")
            .is_none()
    );

    let again = root
        .install("k1", &any, |_staging| {
            runs.fetch_add(1, Ordering::SeqCst);
            async { Ok(meta("other")) }
        })
        .await
        .unwrap();
    assert!(!again.fresh);
    assert_eq!(again.metadata, meta("1"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_install_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let root = InstallRoot::new(dir.path(), "builds-v1", Arc::new(NoProgress));
    let error = root
        .install("k1", &any, |staging| async move {
            fs::write(staging.out.join("half"), "x").unwrap();
            Err::<Meta, _>(Error::BuildCheck {
                message: "the binary does not report the commit".to_string(),
                hint: None,
            })
        })
        .await
        .unwrap_err();
    assert!(matches!(error, Error::BuildCheck { .. }), "{error:?}");
    assert!(!root.final_dir("k1").exists());
    assert!(staging_entries(dir.path()).is_empty());
    assert!(root.lookup::<Meta>("k1", &any).is_none());
}

#[tokio::test]
async fn invalid_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = InstallRoot::new(dir.path(), "builds-v1", Arc::new(NoProgress));
    let error = root
        .install("../escape", &any, |_staging| async { Ok(meta("1")) })
        .await
        .unwrap_err();
    assert!(error.to_string().contains("plain name"), "{error}");
    assert!(root.lookup::<Meta>("../escape", &any).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_installs_of_one_key_build_once() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let root = Arc::new(InstallRoot::new(dir.path(), "builds-v1", recorder.clone()));
    let runs = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());

    let spawn_install = || {
        let root = root.clone();
        let runs = runs.clone();
        let release = release.clone();
        tokio::spawn(async move {
            root.install("shared", &any, move |staging| async move {
                runs.fetch_add(1, Ordering::SeqCst);
                // Hold the lock until the other installer has announced that it waits.
                release.notified().await;
                fs::write(staging.out.join("artefact"), "built").unwrap();
                Ok(meta("1"))
            })
            .await
        })
    };
    let first = spawn_install();
    let second = spawn_install();

    let waiting = "waiting for another process preparing the same build (shared)";
    wait_until("the second installer waits", || {
        recorder.notes().iter().any(|note| note == waiting)
    })
    .await;
    release.notify_one();

    let results = [
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
    ];
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        results.iter().filter(|installed| installed.fresh).count(),
        1
    );
    for installed in &results {
        assert_eq!(installed.metadata, meta("1"));
        assert_eq!(installed.dir, root.final_dir("shared"));
    }
}

#[tokio::test]
async fn an_orphaned_build_is_killed_and_its_staging_removed() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let root = InstallRoot::new(dir.path(), "builds-v1", recorder.clone());

    // What a SIGKILLed provisioner leaves: a staging directory whose build group still runs.
    let stale = dir.path().join(".staging/k1.4242.dead0");
    fs::create_dir_all(stale.join("work")).unwrap();
    let sleep = locate("sleep").unwrap().path;
    let pgid = spawn_detached(&DetachedSpec {
        program: sleep,
        args: vec!["30".to_string()],
        env: BTreeMap::new(),
        cwd: stale.join("work"),
        log: dir.path().join("orphan.log"),
    })
    .unwrap();
    fs::write(stale.join("process-group"), format!("{pgid}\n")).unwrap();
    // Another key's staging directory must survive.
    let neighbour = dir.path().join(".staging/k1.x.4242.dead0");
    fs::create_dir_all(&neighbour).unwrap();
    assert!(group_alive(pgid));

    let installed = root
        .install("k1", &any, |_staging| async { Ok(meta("1")) })
        .await
        .unwrap();
    assert!(installed.fresh);
    assert!(!group_alive(pgid), "the orphaned build still runs");
    assert!(!stale.exists());
    assert!(neighbour.exists());
    assert!(
        recorder
            .notes()
            .iter()
            .any(|note| note.contains(&format!("process group {pgid}"))),
        "{:?}",
        recorder.notes()
    );
}

#[tokio::test]
async fn a_reused_group_id_elsewhere_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let root = InstallRoot::new(dir.path(), "builds-v1", Arc::new(NoProgress));

    let stale = dir.path().join(".staging/k1.4242.dead1");
    fs::create_dir_all(&stale).unwrap();
    let sleep = locate("sleep").unwrap().path;
    let unrelated = spawn_detached(&DetachedSpec {
        program: sleep,
        args: vec!["30".to_string()],
        env: BTreeMap::new(),
        cwd: elsewhere.path().to_path_buf(),
        log: elsewhere.path().join("unrelated.log"),
    })
    .unwrap();
    fs::write(stale.join("process-group"), format!("{unrelated}\n")).unwrap();

    root.install("k1", &any, |_staging| async { Ok(meta("1")) })
        .await
        .unwrap();
    assert!(!stale.exists());
    let survived = group_alive(unrelated);
    kill_group(unrelated, adapters_host::process::Signal::SIGKILL);
    assert!(survived, "an unrelated process group was killed");
}

#[tokio::test]
async fn a_final_directory_without_valid_metadata_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let root = InstallRoot::new(dir.path(), "builds-v1", Arc::new(NoProgress));
    let final_dir = root.final_dir("k1");
    fs::create_dir_all(&final_dir).unwrap();
    fs::write(final_dir.join("leftover"), "half-installed").unwrap();
    assert!(root.lookup::<Meta>("k1", &any).is_none());

    let installed = root
        .install("k1", &any, |staging| async move {
            fs::write(staging.out.join("fresh"), "new").unwrap();
            Ok(meta("1"))
        })
        .await
        .unwrap();
    assert!(installed.fresh);
    assert!(!final_dir.join("leftover").exists());
    assert!(final_dir.join("fresh").exists());

    // Metadata that the caller no longer accepts (say, an older format) also means a rebuild.
    let wants_two = |installed: &Installed<Meta>| installed.metadata.version == "2";
    let rebuilt = root
        .install("k1", &wants_two, |_staging| async { Ok(meta("2")) })
        .await
        .unwrap();
    assert!(rebuilt.fresh);
    assert!(!final_dir.join("fresh").exists());
    assert_eq!(root.lookup("k1", &wants_two).unwrap().metadata, meta("2"));
}

#[tokio::test]
async fn dropping_an_install_removes_staging_and_stops_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let root = InstallRoot::new(dir.path(), "builds-v1", Arc::new(NoProgress));
    let shell = HostShell::new(Arc::new(NoProgress));
    let log = root.log_file("k1");

    let install = root.install("k1", &any, |staging| async move {
        let mut build = CommandSpec::new("sh", ["-c", "echo started > marker; sleep 30"])
            .cwd(&staging.work)
            .log(log);
        build.group_file = Some(staging.group_file.clone());
        let output = shell.run(&build).await?;
        panic!("the build was expected to be cancelled, got {output:?}");
    });
    let mut install = Box::pin(install);

    let deadline = Instant::now() + Duration::from_secs(10);
    let staging = loop {
        tokio::select! {
            result = &mut install => panic!("the install finished early: {result:?}"),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        let started = staging_entries(dir.path())
            .into_iter()
            .find(|entry| entry.join("work/marker").exists());
        if let Some(staging) = started {
            break staging;
        }
        assert!(Instant::now() < deadline, "the build never started");
    };
    let pgid: u32 = fs::read_to_string(staging.join("process-group"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(group_alive(pgid));

    drop(install);
    assert!(!staging.exists());
    assert!(staging_entries(dir.path()).is_empty());
    assert!(!root.final_dir("k1").exists());
    wait_until("the build group is gone", || !group_alive(pgid)).await;
    // The log lives outside staging and survives.
    assert!(
        fs::read_to_string(root.log_file("k1"))
            .unwrap()
            .starts_with("$ sh -c")
    );
}
