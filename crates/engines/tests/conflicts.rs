//! What two pools of one file would both use, found from each pool's inputs: host ports
//! (configured, each engine's defaults, Triton's fixed gRPC and metrics ports, an external
//! engine's port; `0` never), container names, run files, install paths holding different
//! content, and one package at two versions.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use engines::Provisioner;
use provisioner_core::{
    Config, Error, FieldError, Format, Layout, MockModelProvisioner, NoProgress, NothingKnown,
    PoolId, Ports, Result, RunFiles, Secret,
};

fn layout() -> Layout {
    Layout::under_home(Path::new("/home/u"))
}

/// `<run_dir>/<pool>/<name>`, as the host's RunFiles adapter puts them.
struct RunDirFiles(PathBuf);

#[async_trait]
impl RunFiles for RunDirFiles {
    fn path(&self, pool: &PoolId, name: &str) -> PathBuf {
        self.0.join(pool.as_str()).join(name)
    }

    async fn write_private(&self, pool: &PoolId, name: &str, _: &Secret) -> Result<PathBuf> {
        Ok(self.path(pool, name))
    }
}

fn provisioner() -> Provisioner {
    let ports = Ports {
        models: Arc::new(MockModelProvisioner::new()),
        source_builder: None,
        binaries: None,
        packages: None,
        containers: None,
        run_files: Arc::new(RunDirFiles(layout().run_dir)),
        known: Arc::new(NothingKnown),
        progress: Arc::new(NoProgress),
    };
    Provisioner::new(ports, layout())
}

/// A file of pools, each given as the YAML of one list item without its leading `- `.
fn config(pools: &[&str]) -> Config {
    let mut text = String::from("pools:\n");
    for pool in pools {
        for (index, line) in pool.trim().lines().enumerate() {
            text.push_str(if index == 0 { "  - " } else { "    " });
            text.push_str(line);
            text.push('\n');
        }
    }
    Config::parse(&text, Format::Yaml, "pools.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The messages `check` reports, as `path: message` lines.
fn problems(config: &Config) -> Vec<String> {
    match provisioner().check(config) {
        Ok(()) => Vec::new(),
        Err(Error::ConfigInvalid { errors }) => errors.iter().map(FieldError::to_string).collect(),
        Err(other) => panic!("not a config error: {other}"),
    }
}

const MODEL: &str = "model: { ref: \"file:/m/tiny.gguf\" }";

fn source(id: &str, extra: &str) -> String {
    format!(
        "id: {id}\nengine: llamacpp\nprovisioning:\n  mode: source\n  {MODEL}\n{}",
        indent(extra)
    )
}

fn triton(id: &str, extra: &str) -> String {
    format!(
        "id: {id}\nengine: triton\nprovisioning:\n  mode: container\n  {MODEL}\n{}",
        indent(extra)
    )
}

fn indent(extra: &str) -> String {
    extra
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("  {l}\n"))
        .collect()
}

#[test]
fn tritons_fixed_grpc_and_metrics_ports_conflict_even_with_their_own_http_ports() {
    let config = config(&[&triton("a", "ports: [9000]"), &triton("b", "ports: [9100]")]);
    assert_eq!(
        problems(&config),
        [
            "pools[1].provisioning.ports: host port 8001 (Triton's gRPC port, by default) is also published by pool \"a\" (pools[0]); give each pool its own ports (provisioning.ports lists Triton's HTTP, gRPC and metrics ports, in that order)",
            "pools[1].provisioning.ports: host port 8002 (Triton's metrics port, by default) is also published by pool \"a\" (pools[0]); give each pool its own ports (provisioning.ports lists Triton's HTTP, gRPC and metrics ports, in that order)",
        ]
    );
    let separate = config_of_tritons("[9000, 9001, 9002]", "[9100, 9101, 9102]");
    assert_eq!(problems(&separate), Vec::<String>::new());
}

fn config_of_tritons(a: &str, b: &str) -> Config {
    config(&[
        &triton("a", &format!("ports: {a}")),
        &triton("b", &format!("ports: {b}")),
    ])
}

#[test]
fn default_ports_conflict_and_every_earlier_pool_is_named() {
    let config = config(&[&source("a", ""), &source("b", ""), &source("c", "")]);
    let found = problems(&config);
    assert_eq!(
        found,
        [
            "pools[1].provisioning.ports: host port 8080 (llama.cpp's HTTP port, by default) is also listened on by pool \"a\" (pools[0]); give each pool its own ports (set provisioning.ports)",
            "pools[2].provisioning.ports: host port 8080 (llama.cpp's HTTP port, by default) is also listened on by pool \"a\" (pools[0]) and listened on by pool \"b\" (pools[1]); give each pool its own ports (set provisioning.ports)",
        ]
    );
    // A container publishing the same port counts too: TGI's default host port is 8080.
    let tgi =
        "id: t\nengine: tgi\nprovisioning:\n  mode: container\n  model: { ref: \"file:/m/x\" }";
    let found = problems(&self::config(&[&source("a", "ports: [8080]"), tgi]));
    assert_eq!(
        found,
        [
            "pools[1].provisioning.ports: host port 8080 (TGI's HTTP port, by default) is also listened on by pool \"a\" (pools[0]); give each pool its own ports (set provisioning.ports)"
        ]
    );
}

#[test]
fn an_external_engine_holds_its_port() {
    let external = "id: ext\nengine: llamacpp\nprovisioning:\n  mode: external";
    let config = config(&[external, &source("a", "")]);
    assert_eq!(
        problems(&config),
        [
            "pools[1].provisioning.ports: host port 8080 (llama.cpp's HTTP port, by default) is also used by the external engine of pool \"ext\" (pools[0]); give each pool its own ports (set provisioning.ports)"
        ]
    );
    let elsewhere = "id: ext\nengine: vllm\nprovisioning:\n  mode: external\n  ports: [8000]";
    let config = self::config(&[&source("a", "ports: [8000]"), elsewhere]);
    assert_eq!(
        problems(&config),
        [
            "pools[1].provisioning.ports: host port 8000 (the port of the external vLLM engine) is also listened on by pool \"a\" (pools[0]); give each pool its own ports"
        ]
    );
}

#[test]
fn port_zero_never_conflicts() {
    let config = config(&[
        &source("a", "ports: [0]"),
        &source("b", "ports: [0]"),
        &triton("c", "ports: [0]"),
        &triton("d", "ports: [0]"),
    ]);
    assert_eq!(problems(&config), Vec::<String>::new());
}

#[test]
fn one_pool_id_twice_shares_the_container_name_and_the_run_files() {
    // Config::parse refuses a duplicate id; pool-managerd may build a Config in code.
    let one = config(&[&triton("same", "ports: [9000, 9001, 9002]")]);
    let two = config(&[&triton("other", "ports: [9100, 9101, 9102]")]);
    let mut second = two.pools[0].clone();
    second.id = "same".parse().unwrap();
    second.index = 1;
    let both = Config {
        pools: vec![one.pools[0].clone(), second],
        catalog: None,
    };
    assert_eq!(
        problems(&both),
        [
            "pools[1].id: container name llama-orch-same is also the container of pool \"same\" (pools[0]); give each pool its own id",
            "pools[1].id: run file /home/u/.cache/llama-orch/run/same.json (this pool's state file) is also the state file of pool \"same\" (pools[0]); give each pool its own id",
        ]
    );
}

#[test]
fn an_id_that_is_another_ids_run_file_conflicts() {
    let config = config(&[
        &source("x", "ports: [8081]"),
        &source("x.log", "ports: [8082]"),
        &source("x.json.1", "ports: [8083]"),
    ]);
    assert_eq!(
        problems(&config),
        [
            "pools[1].id: run file /home/u/.cache/llama-orch/run/x.log (this pool's private run directory) is also the log of pool \"x\" (pools[0]); give the pools ids that are not another pool's id followed by .json, .pid, .log, .log.1 or .lock"
        ]
    );
}

fn binary(id: &str, checksum: &str, install_dir: &str, port: u16) -> String {
    format!(
        "id: {id}\nengine: llamacpp\nprovisioning:\n  mode: binary\n  {MODEL}\n  ports: [{port}]\n  binary: {{ url: \"https://example.org/{id}.tar.gz\", checksum: \"sha256:{checksum}\", install_dir: {install_dir} }}"
    )
}

#[test]
fn one_install_path_with_different_content_conflicts_and_the_same_content_is_shared() {
    let first = format!("{}{}", "ab".repeat(8), "0".repeat(48));
    let same_key = format!("{}{}", "ab".repeat(8), "1".repeat(48));
    let config = config(&[
        &binary("a", &first, "/opt/llama", 8081),
        &binary("b", &same_key, "/opt/llama", 8082),
    ]);
    assert_eq!(
        problems(&config),
        [format!(
            "pools[1].provisioning.binary.install_dir: install path /opt/llama/sha256-abababababababab would hold the llama-server download with checksum sha256:{same_key}, but pool \"a\" (pools[0]) installs the llama-server download with checksum sha256:{first} there (its name comes from the checksum's first 16 hex digits); give one of them another binary.install_dir"
        )]
    );
    // The same checksum is the same content: shared, whatever the URL.
    let shared = self::config(&[
        &binary("a", &first, "/opt/llama", 8081),
        &binary("b", &first, "/opt/llama", 8082),
    ]);
    assert_eq!(problems(&shared), Vec::<String>::new());
    let apart = self::config(&[
        &binary("a", &first, "/opt/a", 8081),
        &binary("b", &same_key, "/opt/b", 8082),
    ]);
    assert_eq!(problems(&apart), Vec::<String>::new());
}

#[test]
fn source_builds_that_differ_only_in_submodules_share_a_build_directory() {
    let repo = "source: { repo: \"https://example.org/llama.cpp.git\", ref: b6000";
    let config = config(&[
        &source("a", &format!("ports: [8081]\n{repo}, submodules: true }}")),
        &source("b", &format!("ports: [8082]\n{repo} }}")),
        &source("c", &format!("ports: [8083]\n{repo}, submodules: true }}")),
    ]);
    assert_eq!(
        problems(&config),
        [
            "pools[1].provisioning.source.submodules: the build directory of https://example.org/llama.cpp.git@b6000 under /home/u/.cache/llama-orch/llamacpp would hold a checkout without submodules, but pool \"a\" (pools[0]) installs a checkout with submodules there (its name comes from a key over the commit, CMake flags, generator and toolchain, not submodules); give one of them another source.build.cache_dir, or both the same submodules setting",
            "pools[2].provisioning.source.submodules: the build directory of https://example.org/llama.cpp.git@b6000 under /home/u/.cache/llama-orch/llamacpp would hold a checkout with submodules, but pool \"b\" (pools[1]) installs a checkout without submodules there (its name comes from a key over the commit, CMake flags, generator and toolchain, not submodules); give one of them another source.build.cache_dir, or both the same submodules setting",
        ]
    );
    // Other flags or another cache are other directories.
    let other_flags = self::config(&[
        &source("a", &format!("ports: [8081]\n{repo}, submodules: true }}")),
        &source(
            "b",
            &format!("ports: [8082]\n{repo}, build: {{ cmake_flags: [-DGGML_CUDA=ON] }} }}"),
        ),
        &source(
            "c",
            &format!("ports: [8083]\n{repo}, build: {{ cache_dir: /srv/builds }} }}"),
        ),
    ]);
    assert_eq!(problems(&other_flags), Vec::<String>::new());
}

fn package(id: &str, package: &str, port: u16) -> String {
    format!(
        "id: {id}\nengine: llamacpp\nprovisioning:\n  mode: package\n  {MODEL}\n  ports: [{port}]\n  package: {{ {package} }}"
    )
}

#[test]
fn one_package_at_two_versions_conflicts() {
    let config = config(&[
        &package("a", "name: llama.cpp-tools, version: \"8064-1\"", 8081),
        &package("b", "name: llama.cpp-tools, version: \"8064-2\"", 8082),
        &package("c", "name: llama.cpp-tools, version: \"8064-1\"", 8083),
    ]);
    assert_eq!(
        problems(&config),
        [
            "pools[1].provisioning.package.version: package llama.cpp-tools is pinned at 8064-2 here but at 8064-1 by pool \"a\" (pools[0]); a host has one version of a package installed: pin every pool to the same version",
            "pools[2].provisioning.package.version: package llama.cpp-tools is pinned at 8064-1 here but at 8064-2 by pool \"b\" (pools[1]); a host has one version of a package installed: pin every pool to the same version",
        ]
    );
    // The same default (engine, backend, distribution), named or not.
    let defaults = self::config(&[
        &package("a", "version: \"1\"", 8081),
        &package("b", "version: \"2\"", 8082),
        &package(
            "c",
            "name: llama.cpp-tools, version: \"3\", distro: debian",
            8083,
        ),
        &package("d", "version: \"4\", distro: debian", 8084),
    ]);
    assert_eq!(
        problems(&defaults),
        [
            "pools[1].provisioning.package.version: the default llama.cpp package for the cpu backend on this host's distribution is pinned at 2 here but at 1 by pool \"a\" (pools[0]); a host has one version of a package installed: pin every pool to the same version",
            "pools[3].provisioning.package.version: package llama.cpp-tools is pinned at 4 here but at 3 by pool \"c\" (pools[2]); a host has one version of a package installed: pin every pool to the same version",
        ]
    );
    // Other packages, or one package for two distributions (two hosts), do not conflict; a
    // named package is its distribution's default for the backend too.
    let apart = self::config(&[
        &package("a", "version: \"1\", backend: cpu, distro: arch", 8081),
        &package("b", "version: \"2\", backend: hip, distro: arch", 8082),
        &package("c", "name: llama-cpp, version: \"3\", distro: arch", 8083),
        &package("d", "name: llama-cpp, version: \"4\", distro: fedora", 8084),
    ]);
    assert_eq!(
        problems(&apart),
        [
            "pools[2].provisioning.package.version: package llama-cpp is pinned at 3 here but at 1 by pool \"a\" (pools[0]); a host has one version of a package installed: pin every pool to the same version"
        ]
    );
}

#[test]
fn conflicts_come_with_every_other_problem_in_pool_order() {
    let config = config(&[
        &source("a", "flags: [--port, \"9\"]"),
        &source("b", ""),
        &source("c", ""),
    ]);
    let found = problems(&config);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("pools[0].provisioning.flags"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("pools[2].provisioning.ports: host port 8080")
            && found[1].contains("pool \"b\" (pools[1])"),
        "{found:#?}"
    );
}

#[test]
fn one_pools_conflicts_name_it_as_either_side() {
    let config = config(&[
        &source("a", ""),
        &source("b", "ports: [8081]"),
        &source("c", ""),
    ]);
    let conflicts = provisioner().conflicts(&config);
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].pools, vec![2, 0]);
    assert!(conflicts[0].involves(0) && conflicts[0].involves(2));
    assert!(!conflicts[0].involves(1));
}
