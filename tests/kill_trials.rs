//! Kill trials: SIGKILL at random points of `orchctl engine prepare` (binary mode, a cold install
//! from a `file://` archive; source mode, a tiny CMake tree; package mode, a pinned install
//! through a stand-in apt) and of `orchctl engine up` (with `fsync` slowed down by strace, so
//! that the kill often lands between spawning the engine and recording it), then the next call.
//!
//! Invariants after every kill: an engine that listens on the pool's port is known to `status`
//! and stopped by `down` (no orphan); the next `prepare`/`up` succeeds; what it points at exists;
//! and after it nothing is left in `.staging/` or `downloads/`.
//!
//! The quick form (CI) runs `KILL_TRIALS` trials per kind, 6 by default; the long form is
//! `KILL_TRIALS=50 cargo test -p tests --test kill_trials -- --nocapture`. The engine is
//! `fake-engine` (adapters-host's stand-in server): nothing leaves temp dirs and loopback.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tests::kill::{Random, trials};
use tests::{free_port, orchctl, orchctl_path};

/// A tar.gz holding `fake-engine` as `bin/llama-server` and filler, so that a cold install
/// takes long enough to be killed at many points.
fn make_archive(dir: &Path) -> (PathBuf, String) {
    let engine = orchctl_path().with_file_name("fake-engine");
    assert!(
        engine.exists(),
        "build the binaries first: cargo build --bins"
    );
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::copy(&engine, tree.join("bin/llama-server")).unwrap();
    let mut filler = std::fs::File::create(tree.join("filler.bin")).unwrap();
    let mut block = vec![0u8; 1 << 20];
    for (i, byte) in block.iter_mut().enumerate() {
        *byte = (i * 7 % 251) as u8;
    }
    // Each archive differs (its directory's name first), so each has its own install key.
    filler.write_all(dir.to_string_lossy().as_bytes()).unwrap();
    for _ in 0..12 {
        filler.write_all(&block).unwrap();
    }
    let archive = dir.join("engine.tar.gz");
    #[allow(clippy::disallowed_methods)] // the fixture is made with the system tar
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&tree)
        .args(["bin", "filler.bin"])
        .status()
        .unwrap();
    assert!(status.success());
    let sha256 = hex::encode(Sha256::digest(std::fs::read(&archive).unwrap()));
    (archive, sha256)
}

fn write_config(dir: &Path, pool: &str, archive: &Path, sha256: &str, port: u16) -> PathBuf {
    let model = dir.join("tiny.gguf");
    std::fs::write(&model, tests::STUB_GGUF).unwrap();
    let config = dir.join(format!("{pool}.yaml"));
    std::fs::write(
        &config,
        format!(
            "pools:\n  - id: {pool}\n    engine: llamacpp\n    provisioning:\n      mode: binary\n      binary: {{ url: \"file://{}\", checksum: \"sha256:{sha256}\" }}\n      model: {{ ref: \"file:{}\" }}\n      ports: [{port}]\n",
            archive.display(),
            model.display()
        ),
    )
    .unwrap();
    config
}

std::thread_local! {
    /// The PATH for the orchctl runs of this test (each test runs on a thread of its own), when
    /// it puts stand-in programs first.
    static TEST_PATH: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Sets this test's [`TEST_PATH`] until dropped.
struct PathGuard;

impl PathGuard {
    fn set(path: &str) -> PathGuard {
        TEST_PATH.with(|cell| *cell.borrow_mut() = Some(path.to_string()));
        PathGuard
    }
}

impl Drop for PathGuard {
    fn drop(&mut self) {
        TEST_PATH.with(|cell| *cell.borrow_mut() = None);
    }
}

/// `orchctl` for `cache`, with this test's PATH.
fn orchctl_for(cache: &Path) -> Command {
    let mut command = orchctl(cache);
    if let Some(path) = TEST_PATH.with(|cell| cell.borrow().clone()) {
        command.env("PATH", path);
    }
    command
}

fn orch(cache: &Path, words: &[&str], config: &Path) -> tests::Outcome {
    let output = orchctl_for(cache)
        .args(words)
        .arg("--config")
        .arg(config)
        .output()
        .expect("orchctl runs");
    tests::Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
    }
}

/// Starts `orchctl ARGS --config CONFIG` in a process group of its own (so that a kill of the
/// group kills strace and orchctl, never the engine, which runs in its own group).
fn spawn(cache: &Path, args: &[&str], config: &Path, slow_fsync: bool) -> Child {
    let mut command = if slow_fsync {
        #[allow(clippy::disallowed_methods)]
        let mut strace = Command::new("strace");
        strace
            .args([
                "-f",
                "-qq",
                "-o",
                "/dev/null",
                "-e",
                "trace=fsync,fdatasync",
                "-e",
                "inject=fsync,fdatasync:delay_enter=150000",
                "--",
            ])
            .arg(orchctl_path());
        for (key, value) in orchctl_for(cache).get_envs() {
            match value {
                Some(value) => strace.env(key, value),
                None => strace.env_remove(key),
            };
        }
        strace
    } else {
        orchctl_for(cache)
    };
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    command.spawn().expect("orchctl starts")
}

fn kill_group(child: &mut Child) {
    let pgid = child.id();
    #[allow(clippy::disallowed_methods)]
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status();
    let _ = child.wait();
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Kills `orchctl engine prepare` of `config` at a random point of a cold run, once per trial
/// (each in a cache of its own, `cache-<trial>`), then prepares again: it must succeed, its
/// server must exist, and each of `left_empty(cache)` must be empty. The kills land anywhere
/// inside a cold run, timed once first. A prepare after that is a cache hit of the same
/// `engine_version`.
fn kill_prepares(dir: &Path, config: &Path, left_empty: impl Fn(&Path) -> Vec<PathBuf>) {
    kill_prepares_from(dir, config, || {}, left_empty);
}

/// [`kill_prepares`], with `reset` run before the timing run and before each trial (to put back
/// state outside the cache, such as a package database).
fn kill_prepares_from(
    dir: &Path,
    config: &Path,
    reset: impl Fn(),
    left_empty: impl Fn(&Path) -> Vec<PathBuf>,
) {
    reset();
    let started = Instant::now();
    let probe = orch(&dir.join("cache-probe"), &["engine", "prepare"], config);
    assert_eq!(probe.code, 0, "{}", probe.stderr);
    let cold = started.elapsed().as_millis() as u64;
    let mut random = Random::new();
    for trial in 0..trials() {
        reset();
        let cache = dir.join(format!("cache-{trial}"));
        let mut child = spawn(&cache, &["engine", "prepare"], config, false);
        std::thread::sleep(Duration::from_millis(random.below(cold + 50)));
        kill_group(&mut child);

        let next = orch(&cache, &["engine", "prepare", "--json"], config);
        assert_eq!(next.code, 0, "trial {trial}: {}", next.stderr);
        let prepared: serde_json::Value = serde_json::from_str(&next.stdout).unwrap();
        let bin = PathBuf::from(prepared["bin"].as_str().unwrap());
        assert!(bin.exists(), "trial {trial}: {} is missing", bin.display());
        for place in left_empty(&cache) {
            assert_eq!(
                entries(&place),
                Vec::<String>::new(),
                "trial {trial}: left in {}",
                place.display()
            );
        }
        // And what it made is used from then on.
        let hit = orch(&cache, &["engine", "prepare", "--json"], config);
        let again: serde_json::Value = serde_json::from_str(&hit.stdout).unwrap();
        assert_eq!(again["metadata"]["cache_hit"], true, "trial {trial}");
        assert_eq!(again["engine_version"], prepared["engine_version"]);
    }
}

#[test]
fn a_prepare_killed_anywhere_leaves_nothing_broken() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, sha256) = make_archive(dir.path());
    let config = write_config(dir.path(), "killed-prepare", &archive, &sha256, free_port());
    kill_prepares(dir.path(), &config, |cache| {
        let root = cache.join("llamacpp/bin");
        vec![root.join(".staging"), root.join("downloads")]
    });
}

#[test]
#[allow(clippy::print_stdout)] // the trials report what they found
fn an_up_killed_anywhere_leaves_no_engine_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, sha256) = make_archive(dir.path());
    let port = free_port();
    let config = write_config(dir.path(), "killed-up", &archive, &sha256, port);
    let cache = dir.path().join("cache");
    assert_eq!(orch(&cache, &["engine", "prepare"], &config).code, 0);
    let have_strace = which("strace");
    let mut random = Random::new();
    let mut orphans_found = 0;
    let mut adopted = 0;
    for trial in 0..trials() {
        // Every other trial slows fsync down, widening the window between the spawn and the
        // record that names the engine.
        let slow = have_strace && trial % 2 == 0;
        let window = if slow { 1500 } else { 400 };
        let mut child = spawn(&cache, &["engine", "up"], &config, slow);
        std::thread::sleep(Duration::from_millis(random.below(window)));
        kill_group(&mut child);
        std::thread::sleep(Duration::from_millis(300));

        if listening(port) {
            // Something of ours listens: `status` must know it, `down` must stop it.
            let status = orch(&cache, &["engine", "status", "--json"], &config);
            let known: serde_json::Value = serde_json::from_str(&status.stdout).unwrap_or_default();
            if known["alive"] != true {
                orphans_found += 1;
            } else {
                adopted += 1;
            }
        }
        let down = orch(&cache, &["engine", "down"], &config);
        assert!(
            down.code == 0 || down.code == 12,
            "trial {trial}: down: {}",
            down.stderr
        );
        assert!(
            !listening(port),
            "trial {trial}: an engine survived down (orphan)"
        );
        let up = orch(&cache, &["engine", "up"], &config);
        assert_eq!(up.code, 0, "trial {trial}: the next up: {}", up.stderr);
        let down = orch(&cache, &["engine", "down"], &config);
        assert_eq!(down.code, 0, "trial {trial}: {}", down.stderr);
    }
    println!(
        "trials: {}, engines found after the kill and known: {adopted}",
        trials()
    );
    assert_eq!(
        orphans_found, 0,
        "engines listening that status did not know"
    );
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Sixteen processes prepare one pool at once: one install (exactly one `cache_hit: false`),
/// every one succeeds with the same `engine_version`. Installs of different pools are not
/// serialised: with one pool's install lock held, another pool prepares to the end.
#[test]
fn concurrent_prepares_install_once_per_pool() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, sha256) = make_archive(dir.path());
    let cache = dir.path().join("cache");
    let config = write_config(dir.path(), "shared", &archive, &sha256, free_port());
    let outcomes: Vec<tests::Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| scope.spawn(|| orch(&cache, &["engine", "prepare", "--json"], &config)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut versions = std::collections::BTreeSet::new();
    let mut installs = 0;
    for outcome in &outcomes {
        assert_eq!(outcome.code, 0, "{}", outcome.stderr);
        let prepared: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
        versions.insert(prepared["engine_version"].to_string());
        if prepared["metadata"]["cache_hit"] == false {
            installs += 1;
        }
    }
    assert_eq!(installs, 1, "one install for sixteen prepares");
    assert_eq!(versions.len(), 1);

    // Another pool (another archive, so another install key) in the same cache is not held up
    // by an install in progress: its key's lock is taken (as a running install holds it), and
    // the other pool prepares meanwhile, while the held one waits.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let (other_archive, other_sha) = make_archive(&other_dir);
    assert_ne!(other_sha, sha256);
    let held_dir = dir.path().join("held");
    std::fs::create_dir_all(&held_dir).unwrap();
    let (held_archive, held_sha) = make_archive(&held_dir);
    let fresh = dir.path().join("cache-two");
    let locks = fresh.join("llamacpp/bin/locks");
    std::fs::create_dir_all(&locks).unwrap();
    let lock_path = locks.join(format!("sha256-{}.lock", &held_sha[..16]));
    let lock = std::fs::File::create(&lock_path).unwrap();
    lock.lock().unwrap();
    let held_config = write_config(&held_dir, "held", &held_archive, &held_sha, free_port());
    let other_config = write_config(&other_dir, "other", &other_archive, &other_sha, free_port());
    let mut waiting = spawn(&fresh, &["engine", "prepare"], &held_config, false);
    let other = orch(&fresh, &["engine", "prepare", "--json"], &other_config);
    assert_eq!(other.code, 0, "{}", other.stderr);
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "the held pool waits for its lock"
    );
    lock.unlock().unwrap();
    let status = waiting.wait().unwrap();
    assert!(
        status.success(),
        "the held pool prepares once its lock is free"
    );
}

/// A tiny CMake project that builds `bin/llama-server` (a C program that sleeps a little while
/// compiling, so that kills land in configure, in the build and in the install alike), in a git
/// repository served by `file://`.
fn tiny_tree(dir: &Path) -> String {
    let repo = dir.join("tiny-llama");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(
        repo.join("CMakeLists.txt"),
        "cmake_minimum_required(VERSION 3.16)\nproject(tiny C)\nset(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)\nadd_custom_command(OUTPUT ${CMAKE_BINARY_DIR}/slow.c COMMAND sh -c \"sleep 1; echo 'int slow(void) { return 1; }' > ${CMAKE_BINARY_DIR}/slow.c\" VERBATIM)\nadd_executable(llama-server main.c ${CMAKE_BINARY_DIR}/slow.c)\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("main.c"),
        "#include <stdio.h>\nint main(void) { puts(\"version: 1 (tiny)\"); return 0; }\n",
    )
    .unwrap();
    let git = |args: &[&str]| {
        #[allow(clippy::disallowed_methods)]
        let status = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(&repo)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "tiny"]);
    git(&["tag", "v1"]);
    format!("file://{}", repo.display())
}

/// Source mode: SIGKILL anywhere in a cold `prepare` (clone, configure, build, install) of a
/// tiny tree; the next prepare builds it, nothing is left in `.staging/`, and no build process
/// of the killed run is still alive.
#[test]
fn a_source_build_killed_anywhere_is_redone_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let url = tiny_tree(dir.path());
    let model = dir.path().join("tiny.gguf");
    std::fs::write(&model, tests::STUB_GGUF).unwrap();
    let config = dir.path().join("source.yaml");
    std::fs::write(
        &config,
        format!(
            "pools:\n  - id: built\n    engine: llamacpp\n    provisioning:\n      mode: source\n      source: {{ repo: \"{url}\", ref: v1 }}\n      model: {{ ref: \"file:{}\" }}\n",
            model.display()
        ),
    )
    .unwrap();
    kill_prepares(dir.path(), &config, |cache| {
        vec![cache.join("llamacpp/.staging")]
    });
}

/// A stand-in for apt, dpkg-query and sudo: shell scripts with their paths written in (the
/// provisioner gives the programs it runs an allowlisted environment, so nothing can reach them
/// through variables). "Installing" `ep-standin-server=1.0.0` copies `fake-engine` to
/// `<root>/usr/bin/llama-server` the way dpkg unpacks (a `.dpkg-new` file renamed into place)
/// and then records the version, holding a lock as dpkg does; a killed orchctl leaves it running
/// to the end in its own process group, as it would leave the real apt. Nothing outside the
/// test's directory changes.
struct StandInApt {
    bin: PathBuf,
    root: PathBuf,
    database: PathBuf,
}

impl StandInApt {
    fn new(dir: &Path) -> StandInApt {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("stand-in-bin");
        let root = dir.join("stand-in-root");
        let database = dir.join("stand-in-db");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&database).unwrap();
        let server = orchctl_path().with_file_name("fake-engine");
        let (root_text, db, server) = (
            root.display().to_string(),
            database.display().to_string(),
            server.display().to_string(),
        );
        let scripts = [
            (
                "apt-get",
                format!(
                    r#"#!/bin/sh
case " $* " in
  *" update "*) exit 0 ;;
  *" install "*)
    exec 9>"{db}/lock"; flock 9
    for arg in "$@"; do
      case "$arg" in *::*) continue ;; *=*) ;; *) continue ;; esac
      name=${{arg%%=*}}; version=${{arg#*=}}
      if [ "$name" != ep-standin-server ] || [ "$version" != 1.0.0 ]; then
        echo "E: Version '$version' for '$name' was not found" >&2; exit 100
      fi
      echo "Unpacking $name ($version) ..."
      mkdir -p "{root_text}/usr/bin"
      cp "{server}" "{root_text}/usr/bin/llama-server.dpkg-new"
      sleep 0.15
      mv "{root_text}/usr/bin/llama-server.dpkg-new" "{root_text}/usr/bin/llama-server"
      echo "Setting up $name ($version) ..."
      sleep 0.1
      echo "$version" > "{db}/$name.tmp" && mv "{db}/$name.tmp" "{db}/$name"
    done ;;
  *" remove "*)
    exec 9>"{db}/lock"; flock 9
    for name; do [ "$name" = ep-standin-server ] && rm -f "{db}/$name" "{root_text}/usr/bin/llama-server"; done ;;
  *) echo "stand-in apt-get: unexpected $*" >&2; exit 100 ;;
esac
"#
                ),
            ),
            (
                "apt-cache",
                "#!/bin/sh\necho ' ep-standin-server |      1.0.0 | file:/stand-in ./ Packages'\n"
                    .to_string(),
            ),
            (
                "dpkg-query",
                format!(
                    r#"#!/bin/sh
for name; do :; done
if [ ! -f "{db}/$name" ]; then echo "dpkg-query: no packages found matching $name" >&2; exit 1; fi
case "$1" in
  -W) echo "ii |$(cat "{db}/$name")" ;;
  -L) printf '/.\n{root_text}\n{root_text}/usr\n{root_text}/usr/bin\n{root_text}/usr/bin/llama-server\n' ;;
esac
"#
                ),
            ),
            (
                "sudo",
                "#!/bin/sh\n[ \"$1\" = -n ] && shift\n[ \"$1\" = -l ] && exit 0\nexec \"$@\"\n"
                    .to_string(),
            ),
        ];
        for (name, text) in scripts {
            let path = bin.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        StandInApt {
            bin,
            root,
            database,
        }
    }

    /// Uninstalls, after any install still running (from a killed prepare) has finished.
    fn reset(&self) {
        #[allow(clippy::disallowed_methods)] // the test's own process, waiting on the lock
        let status = Command::new("flock")
            .arg(self.database.join("lock"))
            .args(["rm", "-rf"])
            .arg(&self.root)
            .arg(self.database.join("ep-standin-server"))
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn installed(&self) -> Option<String> {
        std::fs::read_to_string(self.database.join("ep-standin-server"))
            .ok()
            .map(|v| v.trim().to_string())
    }
}

/// Package mode: SIGKILL anywhere in a cold `prepare` that installs a pinned package through a
/// stand-in apt; the next prepare succeeds with the package at the pin, its server in place,
/// nothing in `.staging/`, and the one after it is a cache hit of the same `engine_version`.
#[test]
fn a_package_install_killed_anywhere_is_finished_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let apt = StandInApt::new(dir.path());
    let model = dir.path().join("tiny.gguf");
    std::fs::write(&model, tests::STUB_GGUF).unwrap();
    let config = dir.path().join("package.yaml");
    std::fs::write(
        &config,
        format!(
            "pools:\n  - id: packaged\n    engine: llamacpp\n    provisioning:\n      mode: package\n      allow_package_installs: true\n      package: {{ name: ep-standin-server, version: \"1.0.0\", manager: apt }}\n      model: {{ ref: \"file:{}\" }}\n",
            model.display()
        ),
    )
    .unwrap();
    // The stand-ins come first on the PATH orchctl (and so everything it runs) sees.
    let path = format!(
        "{}:{}",
        apt.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let _path = PathGuard::set(&path);
    kill_prepares_from(
        dir.path(),
        &config,
        || apt.reset(),
        |cache| vec![cache.join("llamacpp/packages-v1/.staging")],
    );
    assert_eq!(apt.installed().as_deref(), Some("1.0.0"));
    assert!(apt.root.join("usr/bin/llama-server").is_file());
    assert!(!apt.root.join("usr/bin/llama-server.dpkg-new").exists());
}
