//! Waiting for the managers' locks: pacman's `db.lck` (a file whose existence is the lock),
//! dnf 4's pid files, and `fcntl` locks (dnf 5's and rpm's, apt's and dpkg's) held by another
//! process. The managers are scripted fakes; the locks are real files in a temporary directory,
//! held by this test process or by a perl process (`support::LockHolder`).

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters_package::{Apt, AptOptions, Dnf, LockSettings, Pacman, PacmanOptions, Privilege};
use provisioner_core::{Error, PackageManager, PackageRequest};
use support::{LockHolder, Recorder, ScriptedShell, ok};

fn pinned(name: &str, version: &str, repository: Option<&str>) -> PackageRequest {
    PackageRequest {
        name: name.parse().unwrap(),
        version: Some(version.parse().unwrap()),
        repository: repository.map(|r| r.parse().unwrap()),
    }
}

fn locks(root: &Path, seconds: u64) -> LockSettings {
    LockSettings {
        root: root.to_path_buf(),
        timeout: Duration::from_secs(seconds),
    }
}

fn pacman(
    shell: &Arc<ScriptedShell>,
    progress: &Arc<Recorder>,
    dir: &Path,
    seconds: u64,
) -> Pacman {
    shell
        .always(
            "-Si extra/llama-cpp",
            ok("Repository      : extra\nVersion         : 6000-1\n"),
        )
        .always("-S --noconfirm --needed extra/llama-cpp", ok(""))
        .always("-Q llama-cpp", ok("llama-cpp 6000-1\n"));
    Pacman::new(
        shell.clone(),
        progress.clone(),
        Privilege::root(),
        PacmanOptions {
            dbpath: Some(dir.join("db")),
            state_dir: dir.join("state"),
            locks: locks(&dir.join("root"), seconds),
            ..PacmanOptions::default()
        },
    )
}

/// A note that names the lock and its holder.
fn waited_for(progress: &Recorder, lock: &str, pid: u32) -> bool {
    progress.notes().iter().any(|note| {
        note.contains(lock)
            && note.contains(&format!("is locked by pid {pid} ("))
            && note.contains("waiting")
    })
}

#[tokio::test]
async fn pacman_waits_for_db_lck_naming_the_process_that_has_it_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("db")).unwrap();
    let lock = dir.path().join("db/db.lck");
    let held = std::fs::File::create(&lock).unwrap();
    let shell = ScriptedShell::new();
    let progress = Arc::new(Recorder::default());
    let manager = pacman(&shell, &progress, dir.path(), 30);
    let release = {
        let lock = lock.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            drop(held);
            std::fs::remove_file(&lock).unwrap();
        })
    };
    let started = Instant::now();
    manager
        .install(&[pinned("llama-cpp", "6000-1", Some("extra"))])
        .await
        .unwrap();
    release.await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(
        waited_for(&progress, "db/db.lck", std::process::id()),
        "{:?}",
        progress.notes()
    );
    assert!(
        progress
            .notes()
            .iter()
            .any(|note| note.contains("is free after")),
        "{:?}",
        progress.notes()
    );
    assert_eq!(shell.matching("-S --noconfirm").len(), 1);
}

#[tokio::test]
async fn pacman_gives_up_after_the_bound_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("db")).unwrap();
    let lock = dir.path().join("db/db.lck");
    let _held = std::fs::File::create(&lock).unwrap();
    let shell = ScriptedShell::new();
    let progress = Arc::new(Recorder::default());
    let error = pacman(&shell, &progress, dir.path(), 1)
        .install(&[pinned("llama-cpp", "6000-1", Some("extra"))])
        .await
        .unwrap_err();
    let Error::Package {
        manager,
        message,
        hint,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(manager, "pacman");
    assert!(
        message.contains(&format!(
            "{} is still locked by pid {} (",
            lock.display(),
            std::process::id()
        )) && message.contains("after waiting 1 s")
            && message.contains("did not run"),
        "{message}"
    );
    assert!(
        hint.as_deref()
            .is_some_and(|hint| hint.contains(&format!("pid {}", std::process::id()))),
        "{hint:?}"
    );
    assert_eq!(error.code().exit_code(), 13);
    assert!(shell.matching("-S --noconfirm").is_empty());
}

/// A `db.lck` no process has open is what a crashed pacman leaves: reported at once, with the
/// command that removes it (only root sees every process; a user waits for the bound).
#[tokio::test]
async fn a_stale_db_lck_is_reported_at_once_as_root() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("db")).unwrap();
    let lock = dir.path().join("db/db.lck");
    std::fs::write(&lock, "").unwrap();
    let shell = ScriptedShell::new();
    let progress = Arc::new(Recorder::default());
    let started = Instant::now();
    let error = pacman(&shell, &progress, dir.path(), 30)
        .install(&[pinned("llama-cpp", "6000-1", Some("extra"))])
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        error.to_string().contains("no running process holds it"),
        "{error}"
    );
    assert_eq!(
        error.hint(),
        Some(
            format!(
                "make sure no package manager is running, then remove the stale lock: sudo rm {}",
                lock.display()
            )
            .as_str()
        )
    );
    assert!(shell.matching("-S --noconfirm").is_empty());
}

fn dnf(shell: &Arc<ScriptedShell>, progress: &Arc<Recorder>, root: &Path, seconds: u64) -> Dnf {
    shell
        .always("dnf install", ok(""))
        .always("rpm -q", ok("(none):b6000-1.fc42\n"));
    Dnf::new(shell.clone(), progress.clone(), Privilege::root()).with_locks(locks(root, seconds))
}

#[tokio::test]
async fn dnf_waits_for_dnf4s_pid_file_while_its_process_lives() {
    let root = tempfile::tempdir().unwrap();
    let pid_file = root.path().join("var/lib/dnf/rpmdb_lock.pid");
    std::fs::create_dir_all(pid_file.parent().unwrap()).unwrap();
    std::fs::write(&pid_file, std::process::id().to_string()).unwrap();
    let shell = ScriptedShell::new();
    let progress = Arc::new(Recorder::default());
    let release = {
        let pid_file = pid_file.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            std::fs::remove_file(&pid_file).unwrap();
        })
    };
    dnf(&shell, &progress, root.path(), 30)
        .install(&[pinned("llama-cpp", "b6000-1.fc42", None)])
        .await
        .unwrap();
    release.await.unwrap();
    assert!(
        waited_for(&progress, "rpmdb_lock.pid", std::process::id()),
        "{:?}",
        progress.notes()
    );
    assert_eq!(shell.matching("dnf install").len(), 1);
}

#[tokio::test]
async fn dnf_waits_for_an_fcntl_lock_another_process_holds() {
    let root = tempfile::tempdir().unwrap();
    let lock = root.path().join("run/dnf/rpmtransaction.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let holder = LockHolder::hold(&lock, 1).await;
    let pid = holder.pid;
    let shell = ScriptedShell::new();
    let progress = Arc::new(Recorder::default());
    dnf(&shell, &progress, root.path(), 30)
        .install(&[pinned("llama-cpp", "b6000-1.fc42", None)])
        .await
        .unwrap();
    holder.finish().await;
    let notes = progress.notes();
    assert!(
        waited_for(&progress, "rpmtransaction.lock", pid),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|note| note.contains("(perl")),
        "the holder's command line is named: {notes:?}"
    );
}

/// dpkg's front-end lock held past the bound: apt-get never runs and the error names the holder.
#[tokio::test]
async fn apt_gives_up_on_dpkgs_lock_after_the_bound_naming_the_holder() {
    let root = tempfile::tempdir().unwrap();
    let lock = root.path().join("var/lib/dpkg/lock-frontend");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let holder = LockHolder::hold(&lock, 60).await;
    let shell = ScriptedShell::new();
    shell.always("apt-get install", ok(""));
    let progress = Arc::new(Recorder::default());
    let apt = Apt::new(
        shell.clone(),
        progress.clone(),
        Privilege::root(),
        AptOptions {
            state_dir: root.path().join("state"),
            locks: locks(root.path(), 1),
        },
    );
    let error = apt
        .install(&[pinned("llama.cpp-tools", "8064+dfsg-2", None)])
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "lock-frontend is still locked by pid {} (perl",
            holder.pid
        )) && message.contains("apt-get install"),
        "{message}"
    );
    assert_eq!(error.code().exit_code(), 13);
    assert!(shell.matching("apt-get install").is_empty());
    assert!(waited_for(&progress, "lock-frontend", holder.pid));
    drop(holder);
}
