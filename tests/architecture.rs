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

/// The modules of a crate (`config`, `modes::source`; `crate` for lib.rs or main.rs) and the
/// modules each one names through `crate::…` or `super::…` paths (test code cut off).
fn module_graph(dir: &Path) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let src = dir.join("src");
    let module_of = |path: &Path| -> String {
        let relative = path.strip_prefix(&src).unwrap().with_extension("");
        let parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .filter(|part| part != "mod")
            .collect();
        match parts.as_slice() {
            [one] if one == "lib" || one == "main" => "crate".to_string(),
            _ => parts.join("::"),
        }
    };
    let files = sources(dir);
    let modules: BTreeSet<String> = files.iter().map(|(path, _)| module_of(path)).collect();
    let mut graph = std::collections::BTreeMap::new();
    for (path, code) in &files {
        let from = module_of(path);
        let mut targets = BTreeSet::new();
        // Comments (doc links included) are not imports.
        let code: String = code
            .lines()
            .map(|line| line.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let words: Vec<&str> = code
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .collect();
        for word in words {
            let first = word.split("::").next().unwrap_or("");
            let resolved = if let Some(rest) = word.strip_prefix("crate::") {
                rest.to_string()
            } else if from == "crate" && word.contains("::") && modules.contains(first) {
                // The crate root names its modules without `crate::`.
                word.to_string()
            } else if let Some(rest) = word.strip_prefix("super::") {
                let parent = from.rsplit_once("::").map_or("", |(parent, _)| parent);
                if parent.is_empty() {
                    rest.to_string()
                } else {
                    format!("{parent}::{rest}")
                }
            } else {
                continue;
            };
            // The longest module the path starts with; an item of the crate root otherwise.
            let segments: Vec<&str> = resolved.split("::").collect();
            let target = (1..=segments.len())
                .rev()
                .map(|n| segments[..n].join("::"))
                .find(|candidate| modules.contains(candidate))
                .unwrap_or_else(|| "crate".to_string());
            if target != from {
                targets.insert(target);
            }
        }
        graph.insert(from, targets);
    }
    graph
}

/// A cycle in the graph, as the modules on it, if there is one.
fn find_cycle(graph: &std::collections::BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &std::collections::BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn no_crate_has_an_import_circle() {
    for dir in crates() {
        let graph = module_graph(&dir);
        assert!(
            graph.len() > 1 || name(&dir) == "policy",
            "{}: no modules found",
            name(&dir)
        );
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "{} has an import circle: {}",
                name(&dir),
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph = |edges: &[(&str, &str)]| {
        let mut graph = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
        for (from, to) in edges {
            graph
                .entry(from.to_string())
                .or_default()
                .insert(to.to_string());
            graph.entry(to.to_string()).or_default();
        }
        graph
    };
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("a", "c"), ("b", "c")])),
        None
    );
    let core = module_graph(&repo_root().join("crates/provisioner-core"));
    assert!(core["config"].contains("vocabulary"), "{core:?}");
    assert!(core["ports"].contains("secret"), "{core:?}");
    let engines = module_graph(&repo_root().join("crates/engines"));
    assert!(engines["modes::source"].contains("common"), "{engines:?}");
    assert!(engines["llamacpp"].contains("args"), "{engines:?}");
    assert!(engines["crate"].contains("modes::container"), "{engines:?}");
}
