//! `orchctl engine up` against engines started from another configuration file: the run dir is
//! shared, so a pool id or a host port held by a running engine is refused with exit 14, naming
//! that engine's pool, pid and configuration file, and a hint whose `orchctl engine down …`
//! works when pasted. The engine is `fake-engine` (adapters-host's stand-in server), installed
//! by binary mode from a `file://` URL: nothing is built, nothing leaves temp dirs and loopback.
//! Needs `cargo build --bins` first (orchctl and fake-engine).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tests::{Outcome, free_port, orchctl_path, run_orchctl as run};

/// `fake-engine`, built next to `orchctl`.
fn fake_engine() -> PathBuf {
    let path = orchctl_path().with_file_name("fake-engine");
    assert!(
        path.exists(),
        "{} is missing; build it first with `cargo build --bins`",
        path.display()
    );
    path
}

/// A config of one binary-mode pool serving fake-engine on `port`.
fn write_config(dir: &Path, file: &str, pool: &str, port: u16) -> PathBuf {
    let engine = fake_engine();
    let checksum = hex::encode(Sha256::digest(std::fs::read(&engine).unwrap()));
    let model = dir.join("tiny.gguf");
    std::fs::write(&model, tests::STUB_GGUF).unwrap();
    let config = dir.join(file);
    std::fs::write(
        &config,
        format!(
            r#"pools:
  - id: {pool}
    engine: llamacpp
    provisioning:
      mode: binary
      binary: {{ url: "file://{}", checksum: "sha256:{checksum}" }}
      model: {{ ref: "file:{}" }}
      ports: [{port}]
"#,
            engine.display(),
            model.display()
        ),
    )
    .unwrap();
    config
}

fn orch(cache: &Path, words: &[&str], config: &Path, pool: &str) -> Outcome {
    let config = config.to_string_lossy();
    let mut args = words.to_vec();
    args.extend(["--config", &config, "--pool", pool]);
    run(cache, &args)
}

/// Runs a hint's `orchctl …` line (plain and single-quoted words, as a shell splits them).
fn paste(cache: &Path, line: &str) -> Outcome {
    let mut words: Vec<String> = Vec::new();
    let (mut word, mut quoted, mut started) = (String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => (quoted, started) = (!quoted, true),
            ' ' if !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            _ => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    assert_eq!(words[0], "orchctl", "{line}");
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    run(cache, &args)
}

fn stop_hint(stderr: &str) -> &str {
    stderr
        .lines()
        .find_map(|line| line.strip_prefix("hint: stop it first: "))
        .unwrap_or_else(|| panic!("no hint with the command that stops it:\n{stderr}"))
}

#[test]
fn up_refuses_a_pool_id_or_a_port_held_by_an_engine_of_another_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let port = free_port();
    let first = write_config(dir.path(), "first.yaml", "shared", port);
    let second = write_config(dir.path(), "second.yaml", "shared", free_port());
    let third = write_config(dir.path(), "third.yaml", "other", port);

    let up = orch(&cache, &["engine", "up", "--json"], &first, "shared");
    assert_eq!(up.code, 0, "{}", up.stderr);
    let started: serde_json::Value = serde_json::from_str(&up.stdout).unwrap();
    let pid = started["pid"].as_u64().unwrap();
    let first_path = std::fs::canonicalize(&first).unwrap();

    let checked = std::panic::catch_unwind(|| {
        // A second `up` from the same file: refused with a `down` that names the file (a bare
        // `--pool` would be a usage error); the same shape is pasted and run below.
        let again = orch(&cache, &["engine", "up"], &first, "shared");
        assert_eq!(again.code, 14, "{}", again.stderr);
        let hint = stop_hint(&again.stderr);
        assert!(
            hint.contains(&format!("--config {}", first_path.display()))
                && hint.contains("--pool shared"),
            "{hint}"
        );

        // `status` from another file says which file the running engine came from; from its
        // own file it does not (and the JSON names it either way).
        let other = orch(&cache, &["engine", "status"], &second, "shared");
        assert!(
            other.stdout.contains(&format!(
                "started from:   {} (not the file given now)",
                first_path.display()
            )),
            "{}",
            other.stdout
        );
        let own = orch(&cache, &["engine", "status"], &first, "shared");
        assert!(!own.stdout.contains("started from"), "{}", own.stdout);
        let json = orch(&cache, &["engine", "status", "--json"], &second, "shared");
        let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        assert_eq!(json["config"], first_path.display().to_string());

        // The same pool id from another file: which file runs it, and how to stop it there.
        let refused = orch(&cache, &["engine", "up"], &second, "shared");
        assert_eq!(refused.code, 14, "{}", refused.stderr);
        assert!(
            refused.stderr.contains(&format!(
                "engine `shared` is already running as pid {pid}, started from another configuration file, {}",
                first_path.display()
            )),
            "{}",
            refused.stderr
        );
        let hint = stop_hint(&refused.stderr);
        assert!(
            hint.contains(&format!("--config {}", first_path.display())),
            "{hint}"
        );
        assert!(hint.contains("--pool shared"), "{hint}");

        // Another pool on its port, from a third file: refused with JSON on stdout too.
        let refused = orch(&cache, &["engine", "up", "--json"], &third, "other");
        assert_eq!(refused.code, 14, "{}", refused.stderr);
        let message = format!(
            "host port {port}, which pool `other` needs, is held by the running engine of pool `shared` (pid {pid}, started from {})",
            first_path.display()
        );
        assert!(refused.stderr.contains(&message), "{}", refused.stderr);
        let error: serde_json::Value = serde_json::from_str(&refused.stdout).unwrap();
        assert_eq!(error["error"]["code"], "already-running", "{error}");
        assert!(!cache.join("run/other.json").exists());

        // The hint stops the engine when pasted; then the port is free for the other pool.
        let pasted = paste(&cache, stop_hint(&refused.stderr));
        assert_eq!(pasted.code, 0, "{}", pasted.stderr);
        assert!(
            pasted.stdout.contains("shared stopped"),
            "{}",
            pasted.stdout
        );
        let status = orch(&cache, &["engine", "status"], &first, "shared");
        assert_eq!(status.code, 12, "{}", status.stdout);
        let up = orch(&cache, &["engine", "up"], &third, "other");
        assert_eq!(up.code, 0, "{}", up.stderr);
        let down = orch(&cache, &["engine", "down"], &third, "other");
        assert_eq!(down.code, 0, "{}", down.stderr);
    });
    // Never leave an engine behind, whatever failed above.
    orch(&cache, &["engine", "down"], &first, "shared");
    orch(&cache, &["engine", "down"], &third, "other");
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

/// Four `up` of one pool at once: the per-pool lock lets one start it; the others wait for it,
/// then find it running (exit 14). Exactly one engine runs, and `down` stops it.
#[test]
fn concurrent_ups_of_one_pool_start_exactly_one_engine() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let port = free_port();
    let config = write_config(dir.path(), "one.yaml", "one", port);
    // Install once first, so that the four race on `up` itself.
    assert_eq!(orch(&cache, &["engine", "prepare"], &config, "one").code, 0);
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| orch(&cache, &["engine", "up", "--json"], &config, "one")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut codes: Vec<i32> = outcomes.iter().map(|o| o.code).collect();
    codes.sort_unstable();
    assert_eq!(codes, vec![0, 14, 14, 14], "{outcomes:#?}");
    let started: Vec<&Outcome> = outcomes.iter().filter(|o| o.code == 0).collect();
    let up: serde_json::Value = serde_json::from_str(&started[0].stdout).unwrap();
    let pid = up["pid"].as_u64().unwrap() as u32;
    assert!(
        outcomes
            .iter()
            .filter(|o| o.code == 14)
            .all(|o| o.stderr.contains("already running") || o.stderr.contains(&pid.to_string())),
        "{outcomes:#?}"
    );
    let down = orch(&cache, &["engine", "down"], &config, "one");
    assert_eq!(down.code, 0, "{down:?}");
    assert!(
        !adapters_host::group_alive(pid),
        "the one engine was stopped"
    );
}

/// While another process holds the pool's `up`/`down` lock, `up --wait 1` gives up after a
/// second naming the holder; without `--wait` it waits for the holder and then goes on.
#[test]
fn up_waits_for_the_pools_lock_and_wait_bounds_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let config = write_config(dir.path(), "locked.yaml", "locked", free_port());
    assert_eq!(
        orch(&cache, &["engine", "prepare"], &config, "locked").code,
        0
    );
    let run = cache.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let lock_path = run.join("locked.lock");
    let lock = std::fs::File::create(&lock_path).unwrap();
    lock.lock().unwrap();
    std::fs::write(&lock_path, format!("{}\n", std::process::id())).unwrap();

    let started = std::time::Instant::now();
    let bounded = orch(&cache, &["engine", "up", "--wait", "1"], &config, "locked");
    assert_eq!(bounded.code, 11, "{bounded:?}");
    assert!(
        bounded
            .stderr
            .contains(&format!("waiting for pid {}", std::process::id()))
            && bounded
                .stderr
                .contains("still starting or stopping this pool after 1 s"),
        "{}",
        bounded.stderr
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // Unbounded: it waits, and starts once the lock is free.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(800));
        lock.unlock().unwrap();
    });
    let up = orch(&cache, &["engine", "up"], &config, "locked");
    releaser.join().unwrap();
    assert_eq!(up.code, 0, "{up:?}");
    assert_eq!(orch(&cache, &["engine", "down"], &config, "locked").code, 0);
}
