//! Enforces the invariants written in ARCHITECTURE.md by reading manifests and sources.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tests::repo_root;

fn crates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo_root().join("crates"))
        .expect("crates/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    dirs.sort();
    dirs
}

fn name(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().to_string()
}

/// Normal (non-dev) dependencies of a crate.
fn dependencies(dir: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let mut in_deps = false;
    let mut deps = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && !key.starts_with('#') {
                deps.insert(key.split('.').next().unwrap().to_string());
            }
        }
    }
    deps
}

/// Every non-test Rust source of a crate, with its text (test modules cut off).
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.join("src")];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = match text.find("#[cfg(test)]") {
                    Some(index) => text[..index].to_string(),
                    None => text,
                };
                files.push((path, code));
            }
        }
    }
    files
}

const IO_CRATES: &[&str] = &[
    "tokio",
    "ureq",
    "reqwest",
    "hyper",
    "git2",
    "gix",
    "duct",
    "nix",
    "libc",
    "oci-client",
    "oci-distribution",
    "tar",
    "zip",
    "which",
];

#[test]
fn core_does_no_io() {
    let core = repo_root().join("crates/provisioner-core");
    let deps = dependencies(&core);
    for banned in IO_CRATES {
        assert!(
            !deps.contains(*banned),
            "provisioner-core depends on the I/O crate {banned}"
        );
    }
    for (path, code) in sources(&core) {
        for needle in [
            "std::process",
            "std::net",
            "std::fs",
            "tokio::",
            "File::open",
            "Command::new",
            "std::env::var",
        ] {
            assert!(!code.contains(needle), "{} uses {needle}", path.display());
        }
    }
}

#[test]
fn engines_and_policy_depend_only_on_ports() {
    for crate_name in ["engines", "policy"] {
        let dir = repo_root().join("crates").join(crate_name);
        let deps = dependencies(&dir);
        for dep in &deps {
            assert!(
                !dep.starts_with("adapters-") && !IO_CRATES.contains(&dep.as_str()),
                "{crate_name} depends on {dep}: engines and policy may only use provisioner-core's ports"
            );
        }
        for (path, code) in sources(&dir) {
            for needle in [
                "std::process",
                "std::net",
                "std::fs",
                "Command::new",
                "adapters_",
            ] {
                assert!(!code.contains(needle), "{} uses {needle}", path.display());
            }
        }
    }
}

#[test]
fn only_adapters_spawn_processes_or_touch_the_network() {
    for dir in crates() {
        let crate_name = name(&dir);
        let is_adapter = crate_name.starts_with("adapters-");
        let deps = dependencies(&dir);
        for network in ["ureq", "reqwest", "hyper", "oci-client", "git2"] {
            assert!(
                is_adapter || !deps.contains(network),
                "{crate_name} depends on the network crate {network}; only adapters may"
            );
        }
        for (path, code) in sources(&dir) {
            let spawns = code.contains("Command::new") || code.contains("process::Command");
            let allowed = path.ends_with("adapters-host/src/process.rs");
            assert!(
                !spawns || allowed,
                "{} spawns a process; only adapters-host/src/process.rs may (everything else uses the Shell port)",
                path.display()
            );
            assert!(
                is_adapter || !code.contains("TcpStream"),
                "{} opens sockets; only adapters may",
                path.display()
            );
        }
    }
}

#[test]
fn only_the_cli_knows_clap() {
    for dir in crates() {
        let crate_name = name(&dir);
        if crate_name == "cli" {
            continue;
        }
        assert!(
            !dependencies(&dir).contains("clap"),
            "{crate_name} depends on clap"
        );
    }
    let cli = repo_root().join("crates/cli");
    for (path, code) in sources(&cli) {
        let allowed = path.ends_with("main.rs") || path.ends_with("args.rs");
        assert!(
            allowed || !code.contains("clap::"),
            "{} uses clap; keep it in main.rs/args.rs",
            path.display()
        );
    }
}

#[test]
fn architecture_md_names_every_crate() {
    let text =
        std::fs::read_to_string(repo_root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    for dir in crates() {
        let crate_name = name(&dir);
        assert!(
            text.contains(&format!("crates/{crate_name}")),
            "ARCHITECTURE.md does not describe crates/{crate_name}"
        );
    }
}
