//! What the documents say about the files outside the code, checked against the files:
//!
//! - the README names exactly the Debian packages `scripts/ensure-deps.sh` installs;
//! - the cache layout of ARCHITECTURE.md against the tree real prepares leave in a temporary
//!   cache, both ways: every file and directory they create is documented, and every entry
//!   documented for what they exercise exists (entries whose comment starts with *while* exist
//!   only during a step and are not required). Binary mode runs here (`fake-engine` installed
//!   from a `file://` URL, brought up twice, so the log is rotated; needs `cargo build --bins`);
//!   package mode with the real apt (a one-file `.deb` in a flat repository, installed into this
//!   system and purged) only with the feature `real`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tests::{free_port, orchctl_path, repo_root, run_orchctl};

// ---------------------------------------------------------------------------------------------
// The packages the two commands install

/// The packages `scripts/ensure-deps.sh` installs: the second word of every `check` line and
/// every literal `need+=(name)`.
fn script_packages() -> BTreeSet<String> {
    let script = std::fs::read_to_string(repo_root().join("scripts/ensure-deps.sh")).unwrap();
    let mut packages = BTreeSet::new();
    for line in script.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["check", _, package] = words.as_slice() {
            packages.insert(package.to_string());
        }
        let mut rest = line;
        while let Some(start) = rest.find("need+=(") {
            rest = &rest[start + "need+=(".len()..];
            let name = rest.split(')').next().unwrap_or_default();
            if !name.is_empty() && !name.contains('$') {
                packages.insert(name.to_string());
            }
        }
    }
    packages
}

/// The packages the README's "Two commands" section lists: the backquoted words between
/// "packages are missing:" and the end of that sentence.
fn readme_packages() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let marker = "packages are missing:";
    let start = readme
        .find(marker)
        .expect("the README lists the packages scripts/ensure-deps.sh installs after `packages are missing:`")
        + marker.len();
    let sentence = &readme[start..];
    let end = sentence.find(" (").or_else(|| sentence.find(". ")).unwrap();
    sentence[..end]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_readme_names_exactly_the_packages_the_scripts_install() {
    let script = script_packages();
    assert!(
        script.contains("cmake") && script.contains("busybox-static"),
        "the script's list was not read: {script:?}"
    );
    assert_eq!(
        readme_packages(),
        script,
        "README.md (Two commands) and scripts/ensure-deps.sh disagree"
    );
}

// ---------------------------------------------------------------------------------------------
// The cache layout

/// One documented entry: its path pattern under the cache root (`/` at the end for a
/// directory) and whether it exists only while a step runs.
#[derive(Debug, Clone)]
struct Entry {
    pattern: String,
    transient: bool,
}

/// The entries of ARCHITECTURE.md's "Cache layout" block: one per line, nested by two spaces of
/// indentation under a directory line; the path ends at the first two spaces.
fn documented_layout() -> Vec<Entry> {
    let text = std::fs::read_to_string(repo_root().join("ARCHITECTURE.md")).unwrap();
    let section = &text[text
        .find("## Cache layout")
        .expect("a Cache layout section")..];
    let block = section
        .split("```")
        .nth(1)
        .expect("the Cache layout section holds a code block");
    let mut entries = Vec::new();
    let mut parents: Vec<String> = Vec::new();
    for line in block.lines().filter(|line| !line.trim().is_empty()) {
        let indent = line.len() - line.trim_start().len();
        assert_eq!(indent % 2, 0, "odd indentation: {line:?}");
        let (path, comment) = match line.trim_start().split_once("  ") {
            Some((path, comment)) => (path, comment.trim()),
            None => (line.trim(), ""),
        };
        let depth = indent / 2;
        if depth == 0 {
            // The cache root itself.
            parents = vec![String::new()];
            continue;
        }
        parents.truncate(depth);
        let parent = parents.last().cloned().unwrap_or_default();
        let pattern = format!("{parent}{path}");
        if path.ends_with('/') {
            parents.push(pattern.clone());
        }
        entries.push(Entry {
            pattern,
            transient: comment.starts_with("while"),
        });
    }
    assert!(entries.len() > 10, "too few entries read: {entries:?}");
    entries
}

/// Whether `actual` (a path under the root, `/` at the end for a directory) matches `pattern`:
/// `<engine>` is an engine's name, any other `<…>` one or more characters of one name, `…` the
/// rest of a path.
fn matches(pattern: &str, actual: &str) -> bool {
    fn walk(pattern: &[char], actual: &[char]) -> bool {
        match pattern.first() {
            None => actual.is_empty(),
            Some('…') => !actual.is_empty(),
            Some('<') => {
                let close = pattern.iter().position(|c| *c == '>').unwrap();
                let name: String = pattern[1..close].iter().collect();
                let rest = &pattern[close + 1..];
                if name == "engine" {
                    return ["llamacpp", "vllm", "tgi", "triton"].iter().any(|engine| {
                        let engine: Vec<char> = engine.chars().collect();
                        actual.starts_with(&engine) && walk(rest, &actual[engine.len()..])
                    });
                }
                (1..=actual.len())
                    .take_while(|n| actual[n - 1] != '/')
                    .any(|n| walk(rest, &actual[n..]))
            }
            Some(c) => actual.first() == Some(c) && walk(&pattern[1..], &actual[1..]),
        }
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let actual: Vec<char> = actual.chars().collect();
    walk(&pattern, &actual)
}

/// Every documented pattern with its ancestor directories (`a/b/c` also documents `a/`, `a/b/`).
fn documented_patterns(entries: &[Entry]) -> BTreeSet<String> {
    let mut patterns = BTreeSet::new();
    for entry in entries {
        let mut prefix = String::new();
        for part in entry.pattern.split_inclusive('/') {
            prefix.push_str(part);
            patterns.insert(prefix.clone());
        }
    }
    patterns
}

/// Every file and directory under `root`, relative, directories ending in `/`.
fn tree(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if entry.file_type().unwrap().is_dir() {
                found.push(format!("{relative}/"));
                pending.push(path);
            } else {
                found.push(relative);
            }
        }
    }
    found.sort();
    found
}

/// Checks `cache` against the documented layout: nothing undocumented, and every lasting entry
/// documented under one of `exercised` (documented patterns, or their beginnings) exists.
fn check_layout(cache: &Path, exercised: &[&str]) {
    let entries = documented_layout();
    let patterns = documented_patterns(&entries);
    let actual = tree(cache);
    let undocumented: Vec<&String> = actual
        .iter()
        .filter(|path| !patterns.iter().any(|pattern| matches(pattern, path)))
        .collect();
    assert!(
        undocumented.is_empty(),
        "not in ARCHITECTURE.md's cache layout: {undocumented:#?}\nthe tree: {actual:#?}"
    );
    for prefix in exercised {
        let required: Vec<&Entry> = entries
            .iter()
            .filter(|entry| entry.pattern.starts_with(prefix) && !entry.transient)
            .collect();
        assert!(
            !required.is_empty(),
            "ARCHITECTURE.md's cache layout documents nothing under {prefix}"
        );
        for entry in required {
            assert!(
                actual.iter().any(|path| matches(&entry.pattern, path)),
                "ARCHITECTURE.md documents {} but the run left none: {actual:#?}",
                entry.pattern
            );
        }
    }
}

#[test]
fn layout_patterns_match_as_documented() {
    assert!(matches(
        "<engine>/bin/<key>/…",
        "llamacpp/bin/sha256-ab/llama-server"
    ));
    assert!(matches("<engine>/bin/<key>/…", "tgi/bin/k/a/b/"));
    assert!(!matches("<engine>/bin/<key>/…", "run/bin/k/x"));
    assert!(matches("run/<pool>.log.1", "run/a.b.log.1"));
    assert!(!matches("run/<pool>.log", "run/a.log.1"));
    assert!(!matches(
        "<engine>/locks/<key>.lock",
        "llamacpp/locks/a/b.lock"
    ));
    let entries = documented_layout();
    let env = entries
        .iter()
        .find(|entry| entry.pattern == "run/<pool>/env")
        .expect("run/<pool>/env is documented under run/");
    assert!(!env.transient);
    assert!(entries.iter().any(|entry| entry.pattern
        == "<engine>/bin/.staging/<key>.<pid>.<nonce>/"
        && entry.transient));
}

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

#[test]
fn binary_mode_and_up_leave_the_documented_layout() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let engine = fake_engine();
    let checksum = hex::encode(Sha256::digest(std::fs::read(&engine).unwrap()));
    let model = dir.path().join("tiny.gguf");
    std::fs::write(&model, tests::STUB_GGUF).unwrap();
    let config = dir.path().join("pool.yaml");
    std::fs::write(
        &config,
        format!(
            r#"pools:
  - id: layout
    engine: llamacpp
    provisioning:
      mode: binary
      binary: {{ url: "file://{}", checksum: "sha256:{checksum}" }}
      model: {{ ref: "file:{}" }}
      ports: [{}]
      env: {{ LAYOUT_TOKEN: "not-a-secret" }}
      flags: [--api-key, not-a-secret-key]
"#,
            engine.display(),
            model.display(),
            free_port()
        ),
    )
    .unwrap();
    let config = config.to_string_lossy().to_string();
    let orch = |words: &[&str]| {
        let mut args = words.to_vec();
        args.extend(["--config", config.as_str()]);
        run_orchctl(&cache, &args)
    };
    let checked = std::panic::catch_unwind(|| {
        // The second run finds the first one's log and keeps it as <pool>.log.1.
        for _ in 0..2 {
            let up = orch(&["engine", "up"]);
            assert_eq!(up.code, 0, "{}", up.stderr);
            check_running(&cache);
            let down = orch(&["engine", "down"]);
            assert_eq!(down.code, 0, "{}", down.stderr);
        }
        check_layout(&cache, &["<engine>/bin/", "run/"]);
    });
    orch(&["engine", "down"]);
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

/// While the engine runs: what is there is documented.
fn check_running(cache: &Path) {
    check_layout(cache, &["<engine>/bin/<key>/"]);
    for record in [
        "layout.json",
        "layout.pid",
        "layout.log",
        "layout/env",
        "layout/api-key",
    ] {
        assert!(cache.join("run").join(record).exists(), "run/{record}");
    }
}

#[cfg(feature = "real")]
#[test]
fn package_mode_leaves_the_documented_layout() {
    use provisioner_core::{CommandSpec, Shell};

    assert!(
        nix::unistd::geteuid().is_root(),
        "package mode installs into this system and needs root (CI runs the real tests as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let root = dir.path().join("deb");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::fs::create_dir_all(&repo).unwrap();
    // /usr/sbin: no other test package ships a file there.
    std::fs::copy(fake_engine(), root.join("usr/sbin/llama-server")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: ep-test-layout\nVersion: 1.0.0\nArchitecture: all\nMaintainer: engine-provisioner tests <tests@example.invalid>\nDescription: engine-provisioner layout test package\n",
    )
    .unwrap();
    let shell = adapters_host::HostShell::new(std::sync::Arc::new(provisioner_core::NoProgress));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let run = |command: CommandSpec| {
        let shown = command.display();
        let output = runtime.block_on(shell.run(&command)).unwrap();
        assert!(output.success(), "`{shown}` failed: {}", output.tail);
        output.stdout
    };
    run(CommandSpec::new(
        "dpkg-deb",
        [
            "--build".to_string(),
            "--root-owner-group".to_string(),
            root.display().to_string(),
            repo.join("ep-test-layout_1.0.0_all.deb")
                .display()
                .to_string(),
        ],
    ));
    let index =
        run(CommandSpec::new("dpkg-scanpackages", ["--multiversion", ".", "/dev/null"]).cwd(&repo));
    std::fs::write(repo.join("Packages"), index).unwrap();
    let model = dir.path().join("tiny.gguf");
    std::fs::write(&model, tests::STUB_GGUF).unwrap();
    let config = dir.path().join("pool.yaml");
    std::fs::write(
        &config,
        format!(
            r#"pools:
  - id: layout-package
    engine: llamacpp
    provisioning:
      mode: package
      allow_package_installs: true
      package: {{ name: ep-test-layout, version: "1.0.0", manager: apt, repo: "deb [trusted=yes] file:{} ./" }}
      model: {{ ref: "file:{}" }}
"#,
            repo.display(),
            model.display()
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let purge = || {
        let _ = runtime.block_on(
            shell.run(
                &CommandSpec::new(
                    "apt-get",
                    [
                        "remove",
                        "--purge",
                        "-y",
                        "-o",
                        "DPkg::Lock::Timeout=300",
                        "ep-test-layout",
                    ],
                )
                .env("DEBIAN_FRONTEND", "noninteractive"),
            ),
        );
    };
    purge();
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let config = config.to_string_lossy();
        for _ in 0..2 {
            let prepared = run_orchctl(&cache, &["engine", "prepare", "--config", &config]);
            assert_eq!(prepared.code, 0, "{}", prepared.stderr);
        }
        check_layout(
            &cache,
            &[
                "<engine>/CACHEDIR.TAG",
                "<engine>/locks/<key>.lock",
                "<engine>/.staging/",
                "<engine>/packages-v1/",
                "packages/apt/<line-hash>/",
            ],
        );
    }));
    purge();
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}
