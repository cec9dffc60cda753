//! Plans for every engine × mode (snapshots), and llama.cpp's prepare driven through mock ports.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use engines::Provisioner;
use provisioner_core::{
    Config, Engine, EngineProvisioner, Error, Format, Layout, MockModelProvisioner,
    MockSourceBuilder, Mode, ModelArtifact, NoProgress, NothingKnown, PoolId, Ports, Result,
    RunFiles, Secret, SourceArtifact, Step,
};

fn layout() -> Layout {
    Layout::under_home(Path::new("/home/user"))
}

fn pool_yaml(engine: Engine, mode: Mode) -> String {
    // Triton takes neither a context length nor several devices (its TensorRT-LLM engine is
    // built for them): its pools give one device and no ctx.
    let (devices, ctx) = match engine {
        Engine::Triton => ("[0]", ""),
        _ => ("[0, 1]", "\n    ctx: 4096"),
    };
    format!(
        r#"
pools:
  - id: pool-{engine}-{mode}
    engine: {engine}
    devices: {devices}{ctx}
    provisioning:
      mode: {mode}
      source:
        repo: https://github.com/ggml-org/llama.cpp.git
        ref: b6000
        build:
          cmake_flags: [-DLLAMA_CUBLAS=ON, -DCMAKE_CUDA_ARCHITECTURES=86, -DGGML_NATIVE=off]
      container: {{ image: example/{engine}, tag: "1.0" }}
      package: {{ name: {engine}, version: "1.0" }}
      binary: {{ url: "https://example.org/{engine}.tar.gz", checksum: "sha256:{zeros}" }}
      model:
        ref: file:/models/tiny.gguf
      ports: [8081]
      env: {{ LLAMA_LOG_COLORS: "off" }}
      flags: [--metrics, -ngl, "99", --parallel, "1", --gpu-layers, "99"]
"#,
        zeros = "0".repeat(64)
    )
}

/// Private run files under `/run/llama-orch`, kept in memory.
#[derive(Default)]
struct MemoryRunFiles(std::sync::Mutex<Vec<(PathBuf, String)>>);

impl MemoryRunFiles {
    fn written(&self) -> Vec<(PathBuf, String)> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait]
impl RunFiles for MemoryRunFiles {
    fn path(&self, pool: &PoolId, name: &str) -> PathBuf {
        Path::new("/run/llama-orch").join(pool.as_str()).join(name)
    }

    async fn write_private(&self, pool: &PoolId, name: &str, contents: &Secret) -> Result<PathBuf> {
        let path = self.path(pool, name);
        self.0
            .lock()
            .unwrap()
            .push((path.clone(), contents.expose().to_string()));
        Ok(path)
    }
}

fn unused_ports() -> Ports {
    Ports {
        models: Arc::new(MockModelProvisioner::new()),
        source_builder: None,
        binaries: None,
        packages: None,
        containers: None,
        run_files: Arc::new(MemoryRunFiles::default()),
        known: Arc::new(NothingKnown),
        progress: Arc::new(NoProgress),
    }
}

#[test]
fn plan_for_every_engine_and_mode() {
    let provisioner = Provisioner::new(unused_ports(), layout());
    for &engine in Engine::ALL {
        for &mode in Mode::ALL {
            let config = Config::parse(&pool_yaml(engine, mode), Format::Yaml, "pool.yaml")
                .expect("the fixture config is valid");
            let name = format!("plan_{engine}_{mode}");
            match provisioner.plan(&config.pools[0]) {
                Ok(plan) => insta::assert_yaml_snapshot!(name, plan),
                Err(error) => insta::assert_snapshot!(
                    name,
                    format!("error: {error}\nhint: {}", error.hint().unwrap_or("-"))
                ),
            }
        }
    }
}

#[test]
fn plans_are_deterministic_and_digest_changes_with_inputs() {
    let provisioner = Provisioner::new(unused_ports(), layout());
    let text = pool_yaml(Engine::Llamacpp, Mode::Source);
    let pool = Config::parse(&text, Format::Yaml, "a").unwrap().pools[0].clone();
    let first = provisioner.plan(&pool).unwrap();
    assert_eq!(first, provisioner.plan(&pool).unwrap());
    assert_eq!(first.digest(), provisioner.plan(&pool).unwrap().digest());
    // Reordered flags with the same meaning give the same plan.
    let reordered = text.replace(
        "[-DLLAMA_CUBLAS=ON, -DCMAKE_CUDA_ARCHITECTURES=86, -DGGML_NATIVE=off]",
        "[-DGGML_NATIVE=OFF, -DCMAKE_CUDA_ARCHITECTURES=86, -DGGML_CUDA=1]",
    );
    let same = Config::parse(&reordered, Format::Yaml, "b").unwrap().pools[0].clone();
    assert_eq!(first.digest(), provisioner.plan(&same).unwrap().digest());
    let other_ref = text.replace("ref: b6000", "ref: b6001");
    let other = Config::parse(&other_ref, Format::Yaml, "c").unwrap().pools[0].clone();
    assert_ne!(first.digest(), provisioner.plan(&other).unwrap().digest());
}

#[test]
fn legacy_cublas_selects_cuda_and_needs_nvcc() {
    let provisioner = Provisioner::new(unused_ports(), layout());
    let text = pool_yaml(Engine::Llamacpp, Mode::Source);
    let pool = Config::parse(&text, Format::Yaml, "a").unwrap().pools[0].clone();
    let plan = provisioner.plan(&pool).unwrap();
    let configure = plan
        .steps
        .iter()
        .find_map(|s| match s {
            Step::Configure {
                cmake_flags,
                backend,
                ..
            } => Some((cmake_flags.clone(), *backend)),
            _ => None,
        })
        .unwrap();
    assert!(configure.0.contains(&"-DGGML_CUDA=ON".to_string()));
    assert!(!configure.0.iter().any(|f| f.contains("LLAMA_CUBLAS")));
    assert_eq!(configure.1, provisioner_core::Backend::Cuda);
}

fn source_pool(extra_flags: &str) -> provisioner_core::PoolConfig {
    let text = format!(
        r#"
pools:
  - id: p
    engine: llamacpp
    provisioning:
      mode: source
      source: {{ repo: "file:///srv/llama.cpp", ref: fixture-b0, build: {{ cmake_flags: [-DGGML_NATIVE=OFF] }} }}
      model: {{ ref: "file:/models/tiny.gguf" }}
      ports: [9001]
      flags: [{extra_flags}]
"#
    );
    Config::parse(&text, Format::Yaml, "p.yaml").unwrap().pools[0].clone()
}

fn artifact(cache_hit: bool) -> SourceArtifact {
    SourceArtifact {
        dir: PathBuf::from("/cache/llamacpp/builds-v1/k1"),
        commit: "f3e37ccca624c32180c329208deac452eef38ba5".to_string(),
        key: "k1".to_string(),
        flags: vec!["-DGGML_NATIVE=OFF".to_string()],
        toolchain: Default::default(),
        cache_hit,
        metadata_file: PathBuf::from("/cache/llamacpp/builds-v1/k1/metadata.json"),
        engine_version: "llamacpp-f3e37ccca624-cpu-00000000".to_string(),
        supported_flags: Vec::new(),
    }
}

#[tokio::test]
async fn prepare_resolves_the_model_first_then_builds_and_describes_the_server() {
    let mut models = MockModelProvisioner::new();
    models
        .expect_ensure_present()
        .withf(|r| r.reference.to_string() == "file:/models/tiny.gguf")
        .times(1)
        .returning(|_| Ok(ModelArtifact::local(PathBuf::from("/models/tiny.gguf"), 1)));
    let mut builder = MockSourceBuilder::new();
    builder
        .expect_ensure_built()
        .withf(|spec| {
            spec.repo.expose() == "file:///srv/llama.cpp"
                && spec.reference.as_str() == "fixture-b0"
                && spec.targets == ["llama-server"]
                && spec
                    .cmake_flags
                    .to_flags()
                    .contains(&"-DLLAMA_USE_PREBUILT_UI=OFF".to_string())
                && spec
                    .build_info
                    .as_ref()
                    .is_some_and(|b| b.commit == "LLAMA_BUILD_COMMIT")
        })
        .times(1)
        .returning(|_| Ok(artifact(true)));
    let ports = Ports {
        models: Arc::new(models),
        source_builder: Some(Arc::new(builder)),
        ..unused_ports()
    };
    let provisioner = Provisioner::new(ports, layout());
    let pool = source_pool(r#"--alias, "$(touch /tmp/pwned); rm -rf /", --ngl, "0""#);
    let prepared = provisioner.prepare(&pool).await.unwrap();
    assert_eq!(
        prepared.bin,
        Some(PathBuf::from(
            "/cache/llamacpp/builds-v1/k1/bin/llama-server"
        ))
    );
    assert_eq!(
        prepared.args,
        vec![
            "--model",
            "/models/tiny.gguf",
            "--host",
            "127.0.0.1",
            "--port",
            "9001",
            "--alias",
            "$(touch /tmp/pwned); rm -rf /",
            "--n-gpu-layers",
            "0"
        ]
    );
    assert_eq!(prepared.ports, vec![9001]);
    assert!(prepared.env.is_empty(), "{:?}", prepared.env);
    assert_eq!(
        prepared.engine_version,
        "llamacpp-f3e37ccca624-cpu-00000000"
    );
    assert!(prepared.metadata.cache_hit);
    let identity = prepared.metadata.identity.unwrap();
    assert_eq!(
        (identity.path.as_str(), identity.contains.as_str()),
        ("/props", "f3e37ccca")
    );
}

#[tokio::test]
async fn a_missing_model_fails_before_any_build() {
    let mut models = MockModelProvisioner::new();
    models.expect_ensure_present().returning(|r| {
        Err(Error::Model {
            reference: r.reference.to_string(),
            message: "no such file".to_string(),
            hint: None,
        })
    });
    let mut builder = MockSourceBuilder::new();
    builder.expect_ensure_built().times(0);
    let ports = Ports {
        models: Arc::new(models),
        source_builder: Some(Arc::new(builder)),
        ..unused_ports()
    };
    let error = Provisioner::new(ports, layout())
        .prepare(&source_pool(""))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Model { .. }), "{error:?}");
}

#[test]
fn port_flag_must_agree_with_ports() {
    let provisioner = Provisioner::new(unused_ports(), layout());
    let error = provisioner
        .plan(&source_pool("--port, \"1234\""))
        .unwrap_err();
    assert!(
        error.to_string().contains("--port 1234 disagrees"),
        "{error}"
    );
    assert!(provisioner.plan(&source_pool("--port, \"9001\"")).is_ok());
}

#[test]
fn build_info_flags_are_reserved() {
    let provisioner = Provisioner::new(unused_ports(), layout());
    let mut pool = source_pool("");
    pool.provisioning.source.as_mut().unwrap().build.cmake_flags =
        vec!["-DLLAMA_BUILD_COMMIT=abc".parse().unwrap()];
    let error = provisioner.plan(&pool).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("LLAMA_BUILD_COMMIT is set by the provisioner"),
        "{error}"
    );
}

fn binary_pool(version: Option<&str>) -> provisioner_core::PoolConfig {
    let version = version
        .map(|v| format!(", version: {v}"))
        .unwrap_or_default();
    let text = format!(
        r#"
pools:
  - id: b
    engine: llamacpp
    provisioning:
      mode: binary
      allow_binary_downloads: true
      binary: {{ url: "https://user:secret@example.org/llama-b6000-bin.zip", checksum: "sha256:{sum}"{version} }}
      model: {{ ref: "file:/models/tiny.gguf" }}
      ports: [9002]
"#,
        sum = "ab".repeat(32)
    );
    Config::parse(&text, Format::Yaml, "b.yaml").unwrap().pools[0].clone()
}

fn binary_ports(version_output: &'static str) -> Ports {
    binary_ports_listing(version_output, &[])
}

/// Binary-mode ports whose installed server's help listed `supported`.
fn binary_ports_listing(version_output: &'static str, supported: &'static [&'static str]) -> Ports {
    let mut models = MockModelProvisioner::new();
    models
        .expect_ensure_present()
        .returning(|_| Ok(ModelArtifact::local(PathBuf::from("/models/tiny.gguf"), 1)));
    let mut installer = provisioner_core::MockBinaryInstaller::new();
    installer
        .expect_ensure_installed()
        .withf(|spec| {
            spec.executable == "llama-server"
                && spec.version_args == ["--version"]
                && spec.allowed_by_config == Some(true)
                && spec.install_root == Path::new("/home/user/.cache/llama-orch/llamacpp/bin")
                && spec.flag_probe
                    == Some(provisioner_core::FlagProbe {
                        args: vec!["--help".to_string()],
                        flags: vec!["--offline".to_string()],
                    })
        })
        .times(1)
        .returning(move |spec| {
            let dir = spec.install_root.join("sha256-abababababababab");
            Ok(provisioner_core::BinaryArtifact {
                executable: dir.join("build/bin/llama-server"),
                library_dirs: vec![dir.join("build/bin")],
                libraries: Vec::new(),
                checksum: spec.checksum.clone(),
                bytes: 10,
                version_output: Some(version_output.to_string()),
                key: "sha256-abababababababab".to_string(),
                cache_hit: false,
                metadata_file: dir.join("metadata.json"),
                dir,
                supported_flags: supported.iter().map(|f| f.to_string()).collect(),
            })
        });
    Ports {
        models: Arc::new(models),
        binaries: Some(Arc::new(installer)),
        ..unused_ports()
    }
}

#[tokio::test]
async fn binary_prepare_uses_the_reported_version_and_the_shipped_libraries() {
    let ports = binary_ports(
        "ggml_cuda_init: found 1 CUDA devices\nversion: 6000 (abc1234)\nbuilt with GNU",
    );
    let prepared = Provisioner::new(ports, layout())
        .prepare(&binary_pool(None))
        .await
        .unwrap();
    assert_eq!(
        prepared.engine_version,
        "llamacpp-b6000-abc1234-sha256-abababababab"
    );
    assert_eq!(
        prepared.metadata.backend,
        Some(provisioner_core::FoundBackend::Cuda)
    );
    assert_eq!(
        prepared.env.get("LD_LIBRARY_PATH").map(String::as_str),
        Some("/home/user/.cache/llama-orch/llamacpp/bin/sha256-abababababababab/build/bin")
    );
    assert!(prepared.bin.unwrap().ends_with("build/bin/llama-server"));
    assert_eq!(prepared.metadata.identity.unwrap().contains, "abc1234");
}

#[tokio::test]
async fn the_server_runs_offline_only_when_its_help_listed_the_option() {
    let listed = Provisioner::new(
        binary_ports_listing("version: 6000 (abc1234)", &["--offline"]),
        layout(),
    )
    .prepare(&binary_pool(None))
    .await
    .unwrap();
    assert_eq!(
        listed.args.iter().filter(|a| *a == "--offline").count(),
        1,
        "{:?}",
        listed.args
    );
    let unlisted = Provisioner::new(binary_ports("version: 6000 (abc1234)"), layout())
        .prepare(&binary_pool(None))
        .await
        .unwrap();
    assert!(
        !unlisted.args.contains(&"--offline".to_string()),
        "{:?}",
        unlisted.args
    );
    // The plan cannot know yet, and says when it is decided.
    let plan = Provisioner::new(unused_ports(), layout())
        .plan(&binary_pool(None))
        .unwrap();
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("--offline when its --help lists it")),
        "{:?}",
        plan.notes
    );
}

#[tokio::test]
async fn a_configured_binary_version_wins_over_the_reported_one() {
    let ports = binary_ports("version: 6000 (abc1234)");
    let prepared = Provisioner::new(ports, layout())
        .prepare(&binary_pool(Some("b6000-release")))
        .await
        .unwrap();
    assert_eq!(
        prepared.engine_version,
        "llamacpp-b6000-release-sha256-abababababab"
    );
    assert_eq!(
        prepared.metadata.backend,
        Some(provisioner_core::FoundBackend::Cpu)
    );
}

#[test]
fn binary_plan_never_shows_credentials() {
    let provisioner = Provisioner::new(unused_ports(), layout());
    let plan = provisioner.plan(&binary_pool(None)).unwrap();
    let text = serde_json::to_string(&plan).unwrap();
    assert!(!text.contains("secret"), "{text}");
    assert!(
        text.contains("https://<redacted>@example.org/llama-b6000-bin.zip"),
        "{text}"
    );
}

#[tokio::test]
async fn binary_mode_without_an_installer_says_so() {
    let mut models = MockModelProvisioner::new();
    models.expect_ensure_present().times(0);
    let ports = Ports {
        models: Arc::new(models),
        ..unused_ports()
    };
    let error = Provisioner::new(ports, layout())
        .prepare(&binary_pool(None))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::PortUnavailable { .. }), "{error:?}");
}

#[test]
fn docker_run_argv_for_every_engine() {
    for &engine in Engine::ALL {
        // Triton runs on one device (its engine is built for a fixed number of GPUs).
        let devices = match engine {
            Engine::Triton => r#"["MIG-4f5e6d7c"]"#,
            _ => r#"[0, "MIG-4f5e6d7c"]"#,
        };
        let text = format!(
            r#"
pools:
  - id: gpu-{engine}
    engine: {engine}
    devices: {devices}
    provisioning:
      mode: container
      container: {{ image: registry.example/{engine}, tag: "1.0", runtime: docker }}
      model: {{ ref: "file:/srv/models/m" }}
      env: {{ HF_HUB_OFFLINE: "1" }}
"#
        );
        let pool = Config::parse(&text, Format::Yaml, "d.yaml").unwrap().pools[0].clone();
        let plan = Provisioner::new(unused_ports(), layout())
            .plan(&pool)
            .unwrap();
        let args = plan
            .steps
            .iter()
            .find_map(|step| match step {
                Step::Launch { program, args, .. } => {
                    assert_eq!(program, "docker");
                    Some(args.clone())
                }
                _ => None,
            })
            .expect("a launch step");
        insta::assert_yaml_snapshot!(format!("docker_run_{engine}"), args);
    }
}

fn package_pool(extra: &str) -> provisioner_core::PoolConfig {
    let text = format!(
        r#"
pools:
  - id: p
    engine: llamacpp
    provisioning:
      mode: package
      allow_package_installs: true
      package: {{ name: ep-llama-server, version: "1.1.0", repo: "deb [trusted=yes] file:/srv/repo ./"{extra} }}
      model: {{ ref: "file:/models/tiny.gguf" }}
      ports: [9003]
"#
    );
    Config::parse(&text, Format::Yaml, "p.yaml").unwrap().pools[0].clone()
}

fn package_ports(cache_hit: bool) -> Ports {
    let mut models = MockModelProvisioner::new();
    models
        .expect_ensure_present()
        .returning(|_| Ok(ModelArtifact::local(PathBuf::from("/models/tiny.gguf"), 1)));
    let mut installer = provisioner_core::MockPackageInstaller::new();
    installer
        .expect_ensure_installed()
        .withf(|spec| {
            spec.name.as_ref().map(|n| n.as_str()) == Some("ep-llama-server")
                && spec.version.as_str() == "1.1.0"
                && spec.repository.as_ref().map(|r| r.expose())
                    == Some("deb [trusted=yes] file:/srv/repo ./")
                && spec.manager == Some(provisioner_core::ManagerKind::Apt)
                && spec.distro.is_none()
                && spec.allowed_by_config
                && spec.executable == "llama-server"
                && spec.version_args == ["--version"]
                && spec.cache_dir == Path::new("/home/user/.cache/llama-orch/llamacpp")
        })
        .times(1)
        .returning(move |spec| {
            Ok(provisioner_core::PackageArtifact {
                manager: provisioner_core::ManagerKind::Apt,
                package: provisioner_core::InstalledPackage {
                    name: "ep-llama-server".to_string(),
                    version: spec.version.to_string(),
                    repository: spec.repository.as_ref().map(|r| r.to_string()),
                },
                executable: PathBuf::from("/usr/bin/llama-server"),
                version_output: Some("version: 0.5.0-dev (build 0, commit f3e37ccca)".into()),
                found: provisioner_core::BackendFinding::stated(
                    provisioner_core::FoundBackend::Cpu,
                    "`llama-server --version` names no GPU backend",
                ),
                engine_version: "llamacpp-apt-ep-llama-server-1.1.0@repo-0123abcd".to_string(),
                key: "0123456789abcdef".to_string(),
                cache_hit,
                metadata_file: spec
                    .cache_dir
                    .join("packages-v1/0123456789abcdef/metadata.json"),
                supported_flags: Vec::new(),
            })
        });
    Ports {
        models: Arc::new(models),
        packages: Some(Arc::new(installer)),
        ..unused_ports()
    }
}

#[tokio::test]
async fn package_prepare_launches_the_packaged_server_with_the_installed_version() {
    let prepared = Provisioner::new(package_ports(true), layout())
        .prepare(&package_pool(", manager: apt"))
        .await
        .unwrap();
    assert_eq!(
        prepared.bin.as_deref(),
        Some(Path::new("/usr/bin/llama-server"))
    );
    assert_eq!(
        prepared.engine_version,
        "llamacpp-apt-ep-llama-server-1.1.0@repo-0123abcd"
    );
    assert_eq!(prepared.metadata.mode, Mode::Package);
    assert!(prepared.metadata.cache_hit);
    assert_eq!(prepared.metadata.identity.unwrap().contains, "f3e37ccca");
    assert_eq!(prepared.ports, vec![9003]);
    assert!(
        prepared
            .args
            .windows(2)
            .any(|w| w == ["--model", "/models/tiny.gguf"])
    );
}

#[test]
fn package_plan_shows_the_pin_and_whether_installs_are_allowed() {
    let plan = Provisioner::new(unused_ports(), layout())
        .plan(&package_pool(""))
        .unwrap();
    let step = plan
        .steps
        .iter()
        .find(|s| matches!(s, provisioner_core::Step::InstallPackage { .. }))
        .expect("an InstallPackage step");
    assert_eq!(
        step,
        &provisioner_core::Step::InstallPackage {
            manager: None,
            package: Some("ep-llama-server".to_string()),
            version: "1.1.0".to_string(),
            repository: Some("deb [trusted=yes] file:/srv/repo ./".to_string()),
            executable: "llama-server".to_string(),
            backend: provisioner_core::Backend::Cpu,
            allowed: true,
        }
    );
}

#[tokio::test]
async fn package_mode_without_an_installer_says_so() {
    let mut models = MockModelProvisioner::new();
    models.expect_ensure_present().times(0);
    let ports = Ports {
        models: Arc::new(models),
        ..unused_ports()
    };
    let error = Provisioner::new(ports, layout())
        .prepare(&package_pool(""))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::PortUnavailable { .. }), "{error:?}");
}

#[test]
fn package_mode_needs_a_pinned_version_and_a_safe_name() {
    let text = r#"
pools:
  - id: p
    engine: llamacpp
    provisioning:
      mode: package
      package: { name: "llama; touch /tmp/pwned", manager: zypper, distro: gentoo }
"#;
    let error = Config::parse(text, Format::Yaml, "p.yaml").unwrap_err();
    let message = error.to_string();
    for path in [
        "provisioning.package.version",
        "provisioning.package.name",
        "provisioning.package.manager",
        "provisioning.package.distro",
    ] {
        assert!(message.contains(path), "{path} missing in: {message}");
    }
}

#[tokio::test]
async fn a_gpu_backend_is_asked_of_the_installer_and_reported() {
    let mut models = MockModelProvisioner::new();
    models
        .expect_ensure_present()
        .returning(|_| Ok(ModelArtifact::local(PathBuf::from("/models/tiny.gguf"), 1)));
    let mut installer = provisioner_core::MockPackageInstaller::new();
    installer
        .expect_ensure_installed()
        .withf(|spec| spec.backend == provisioner_core::Backend::Cuda && spec.name.is_none())
        .times(1)
        .returning(|spec| {
            Ok(provisioner_core::PackageArtifact {
                manager: provisioner_core::ManagerKind::Paru,
                package: provisioner_core::InstalledPackage {
                    name: "llama.cpp-cuda".to_string(),
                    version: spec.version.to_string(),
                    repository: None,
                },
                executable: PathBuf::from("/usr/bin/llama-server"),
                // A CUDA build asked for its version on a host without a GPU says nothing of CUDA.
                version_output: Some("version: 6000 (abc1234)".into()),
                found: provisioner_core::BackendFinding::stated(
                    provisioner_core::FoundBackend::Cuda,
                    "libggml-cuda.so among the package's files",
                ),
                engine_version: "llamacpp-paru-llama.cpp-cuda-b6000-1".to_string(),
                key: "0123456789abcdef".to_string(),
                cache_hit: false,
                metadata_file: spec
                    .cache_dir
                    .join("packages-v1/0123456789abcdef/metadata.json"),
                supported_flags: Vec::new(),
            })
        });
    let ports = Ports {
        models: Arc::new(models),
        packages: Some(Arc::new(installer)),
        ..unused_ports()
    };
    let text = r#"
pools:
  - id: p
    engine: llamacpp
    devices: [0]
    provisioning:
      mode: package
      allow_package_installs: true
      package: { version: "b6000-1", backend: cuda, distro: arch }
      model: { ref: "file:/models/tiny.gguf" }
"#;
    let pool = Config::parse(text, Format::Yaml, "p.yaml").unwrap().pools[0].clone();
    let prepared = Provisioner::new(ports, layout())
        .prepare(&pool)
        .await
        .unwrap();
    assert_eq!(
        prepared.metadata.backend,
        Some(provisioner_core::FoundBackend::Cuda)
    );
    assert_eq!(
        prepared.env.get("CUDA_VISIBLE_DEVICES").map(String::as_str),
        Some("0")
    );
}

#[tokio::test]
async fn the_pools_env_reaches_the_engine_through_a_private_file_only() {
    const SECRET: &str = "hf_Planted-Secret-0123456789";
    let text = format!(
        r#"
pools:
  - id: p
    engine: llamacpp
    provisioning:
      source: {{ repo: "file:///srv/llama.cpp", ref: fixture-b0 }}
      model: {{ ref: "file:/models/tiny.gguf" }}
      env: {{ HF_TOKEN: "{SECRET}", OMP_NUM_THREADS: 4 }}
"#
    );
    let pool = Config::parse(&text, Format::Yaml, "p.yaml").unwrap().pools[0].clone();
    let mut models = MockModelProvisioner::new();
    models
        .expect_ensure_present()
        .returning(|_| Ok(ModelArtifact::local(PathBuf::from("/models/tiny.gguf"), 1)));
    let mut builder = MockSourceBuilder::new();
    builder
        .expect_ensure_built()
        .returning(|_| Ok(artifact(false)));
    let files = Arc::new(MemoryRunFiles::default());
    let ports = Ports {
        models: Arc::new(models),
        source_builder: Some(Arc::new(builder)),
        run_files: files.clone(),
        ..unused_ports()
    };
    let provisioner = Provisioner::new(ports, layout());
    let plan = provisioner.plan(&pool).unwrap();
    let prepared = provisioner.prepare(&pool).await.unwrap();
    let env_file = PathBuf::from("/run/llama-orch/p/env");
    assert_eq!(prepared.env_file.as_deref(), Some(env_file.as_path()));
    assert_eq!(
        files.written(),
        vec![(env_file, format!("HF_TOKEN={SECRET}\nOMP_NUM_THREADS=4\n"))]
    );
    for shown in [
        serde_json::to_string(&prepared).unwrap(),
        serde_json::to_string(&plan).unwrap(),
        format!("{prepared:?} {plan:?}"),
        plan.steps
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    ] {
        assert!(!shown.contains(SECRET), "{shown}");
    }
    assert!(plan.steps.iter().any(|s| matches!(
        s,
        Step::WriteEnvFile { variables, .. } if variables == &["HF_TOKEN", "OMP_NUM_THREADS"]
    )));
}

/// Every value a pool can give twice must say the same both times, else the config error names
/// both places (and never does the plan show one value while prepare uses the other).
#[test]
fn a_value_given_twice_must_agree() {
    let provisioner = Provisioner::new(unused_ports(), layout());
    let cases: [(&str, &str); 3] = [
        (
            "-c, \"4096\", --ctx-size, \"8192\"",
            "provisioning.flags[2]: `--ctx-size 8192` disagrees with `-c 4096` at provisioning.flags[0]",
        ),
        (
            "-ngl, \"99\", --gpu-layers=0",
            "provisioning.flags[2]: `--gpu-layers=0` disagrees with `-ngl 99`",
        ),
        ("--metrics, --metrics=false", "disagrees with `--metrics`"),
    ];
    for (flags, expected) in cases {
        let error = provisioner
            .plan(&source_pool(flags))
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{flags}: {error}");
    }
    // The same value twice is one value.
    assert!(
        provisioner
            .plan(&source_pool("-c, \"4096\", --ctx-size=4096"))
            .is_ok()
    );

    // The pool's own keys against the flags they become.
    let mut pool = source_pool("-c, \"8192\"");
    pool.ctx = Some(4096);
    let error = provisioner.plan(&pool).unwrap_err().to_string();
    assert!(
        error
            .contains("provisioning.flags[0]: --ctx-size 8192 disagrees with the pool's ctx: 4096"),
        "{error}"
    );
    let mut pool = source_pool("-ts, \"3.0/1\"");
    pool.tensor_split = Some(vec![3.0, 1.0]);
    assert!(provisioner.plan(&pool).is_ok());
    pool.tensor_split = Some(vec![1.0, 1.0]);
    assert!(provisioner.plan(&pool).is_err());

    // A CMake entry given twice.
    let mut pool = source_pool("");
    pool.provisioning.source.as_mut().unwrap().build.cmake_flags = vec![
        "-DGGML_CUDA=ON".parse().unwrap(),
        "-DGGML_AVX2=OFF".parse().unwrap(),
        "-DGGML_CUDA=OFF".parse().unwrap(),
    ];
    let error = provisioner.plan(&pool).unwrap_err().to_string();
    assert!(
        error.contains("cmake_flags[2]: -DGGML_CUDA=OFF disagrees with -DGGML_CUDA=ON at provisioning.source.build.cmake_flags[0]"),
        "{error}"
    );
}

#[test]
fn options_llama_server_accumulates_keep_every_occurrence() {
    let provisioner = Provisioner::new(unused_ports(), layout());
    let plan = provisioner
        .plan(&source_pool(
            "--lora, a.gguf, -ot, \"exps=CPU\", --lora, b.gguf, -ot, \"blk=CUDA0\"",
        ))
        .unwrap();
    let text = serde_json::to_string(&plan).unwrap();
    let loras: Vec<_> = text.match_indices("\"--lora\"").collect();
    assert_eq!(loras.len(), 2, "{text}");
    assert!(
        text.contains("\"--override-tensor\",\"exps=CPU\""),
        "{text}"
    );
    assert!(
        text.contains("\"--override-tensor\",\"blk=CUDA0\""),
        "{text}"
    );
}

/// A release URL names its version; `binary.version` must agree with it, and at prepare the
/// server must report the release both name.
#[tokio::test]
async fn a_binary_version_must_agree_with_its_release_url_and_with_the_server() {
    let provisioner = Provisioner::new(unused_ports(), layout());
    let mut pool = binary_pool(Some("b6001"));
    pool.provisioning.binary.as_mut().unwrap().url = Some(
        "https://github.com/ggml-org/llama.cpp/releases/download/b6000/llama-b6000-bin-ubuntu-x64.zip"
            .parse()
            .unwrap(),
    );
    let error = provisioner.plan(&pool).unwrap_err().to_string();
    assert!(
        error.contains(
            "provisioning.binary.version: `b6001` disagrees with the release `b6000` in binary.url"
        ),
        "{error}"
    );

    let error = Provisioner::new(binary_ports("version: 5000 (abc1234)"), layout())
        .prepare(&binary_pool(Some("b6000")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("reports version b5000-abc1234, but binary.version says b6000"),
        "{error}"
    );
}

#[test]
fn an_image_tag_or_digest_given_twice_must_agree() {
    let provisioner = Provisioner::new(unused_ports(), layout());
    let pool = |container: &str| {
        let text = format!(
            r#"
pools:
  - id: v
    engine: vllm
    provisioning:
      mode: container
      container: {container}
      model: {{ ref: "file:/models/m" }}
"#
        );
        Config::parse(&text, Format::Yaml, "v.yaml").unwrap().pools[0].clone()
    };
    let a = format!("sha256:{}", "a".repeat(64));
    let b = format!("sha256:{}", "b".repeat(64));
    let cases = [
        (
            "{ image: \"127.0.0.1:5000/vllm/vllm-openai:v0.9.0\", tag: v0.10.0 }".to_string(),
            "provisioning.container.tag: `v0.10.0` disagrees with the tag `v0.9.0` in container.image",
        ),
        (
            format!("{{ image: \"127.0.0.1:5000/vllm/vllm-openai@{a}\", digest: \"{b}\" }}"),
            "provisioning.container.digest",
        ),
        (
            format!(
                "{{ image: \"127.0.0.1:5000/vllm/vllm-openai\", tag: \"{a}\", digest: \"{b}\" }}"
            ),
            "provisioning.container.digest",
        ),
    ];
    for (container, expected) in cases {
        let error = provisioner.plan(&pool(&container)).unwrap_err().to_string();
        assert!(error.contains(expected), "{container}: {error}");
    }
    // Given twice and agreeing: the plan shows the one image prepare pulls.
    let plan = provisioner
        .plan(&pool(
            "{ image: \"127.0.0.1:5000/vllm/vllm-openai:v0.9.0\", tag: v0.9.0 }",
        ))
        .unwrap();
    let text = serde_json::to_string(&plan).unwrap();
    assert!(
        text.contains(r#""image":"127.0.0.1:5000/vllm/vllm-openai","tag":"v0.9.0""#),
        "{text}"
    );
    assert!(!text.contains("v0.10.0"));
}

/// pacman cannot build AUR packages: naming one (or the backend whose Arch default is one)
/// under `manager: pacman` is a config error that says which helper to use.
#[test]
fn an_aur_package_under_pacman_is_a_config_error() {
    let provisioner = Provisioner::new(unused_ports(), layout());
    let pool = |package: &str| {
        let text = format!(
            r#"
pools:
  - id: p
    engine: llamacpp
    provisioning:
      mode: package
      package: {package}
      model: {{ ref: "file:/models/tiny.gguf" }}
"#
        );
        Config::parse(&text, Format::Yaml, "p.yaml").unwrap().pools[0].clone()
    };
    for package in [
        "{ manager: pacman, backend: cuda, version: b5000-1 }",
        "{ manager: pacman, name: llama.cpp-vulkan, version: b5000-1 }",
        "{ manager: pacman, name: llama.cpp, version: b5000-1 }",
    ] {
        let error = provisioner.plan(&pool(package)).unwrap_err().to_string();
        assert!(
            error.contains("provisioning.package.manager")
                && error.contains("which pacman cannot install")
                && error.contains("set provisioning.package.manager to paru or yay"),
            "{package}: {error}"
        );
    }
    let error = provisioner
        .plan(&pool(
            "{ manager: pacman, backend: hip, name: llama.cpp-hip, version: b5000-1 }",
        ))
        .unwrap_err()
        .to_string();
    assert!(error.contains("or name: llama-cpp-rocm"), "{error}");
    for package in [
        "{ manager: pacman, name: llama-cpp, version: b5000-1 }",
        "{ manager: pacman, backend: hip, version: b5000-1 }",
        "{ manager: paru, backend: cuda, version: b5000-1 }",
    ] {
        assert!(provisioner.plan(&pool(package)).is_ok(), "{package}");
    }
}
