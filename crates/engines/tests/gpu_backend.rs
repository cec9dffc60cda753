//! A pool that asks for a GPU and what was installed, in every mode: the ask (`-ngl 99`, a GPU
//! backend named in CMake flags, `package.backend` or the image) against what was found (the
//! ggml libraries, the version output, the image's layers, an engine's fixed backend), driven
//! through mock ports. `devices` alone asks for nothing; `allow_cpu_fallback` goes ahead with a
//! warning in the metadata and a note.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use engines::Provisioner;
use provisioner_core::{
    BackendFinding, BinaryArtifact, Config, EngineProvisioner, Error, Format, FoundBackend,
    ImageArtifact, InstalledPackage, Layout, ManagerKind, MockBinaryInstaller,
    MockContainerRuntime, MockModelProvisioner, MockPackageInstaller, MockSourceBuilder,
    ModelArtifact, NothingKnown, PackageArtifact, PoolConfig, PoolId, Ports, PreparedEngine,
    RecordingProgress, Result, RunFiles, RuntimeKind, Secret, SourceArtifact,
};

fn layout() -> Layout {
    Layout::under_home(Path::new("/home/user"))
}

struct NoRunFiles;

#[async_trait]
impl RunFiles for NoRunFiles {
    fn path(&self, pool: &PoolId, name: &str) -> PathBuf {
        Path::new("/run/llama-orch").join(pool.as_str()).join(name)
    }

    async fn write_private(&self, pool: &PoolId, name: &str, _: &Secret) -> Result<PathBuf> {
        Ok(self.path(pool, name))
    }
}

fn models() -> Arc<MockModelProvisioner> {
    let mut models = MockModelProvisioner::new();
    models
        .expect_ensure_present()
        .returning(|_| Ok(ModelArtifact::local(PathBuf::from("/models/tiny.gguf"), 1)));
    Arc::new(models)
}

fn ports(progress: Arc<RecordingProgress>) -> Ports {
    Ports {
        models: models(),
        source_builder: None,
        binaries: None,
        packages: None,
        containers: None,
        run_files: Arc::new(NoRunFiles),
        known: Arc::new(NothingKnown),
        progress,
    }
}

/// One llama.cpp pool: `devices: [0]`, `mode`, its section, the flags and the extra keys.
fn pool(engine: &str, mode: &str, section: &str, flags: &str, extra: &str) -> PoolConfig {
    let text = format!(
        r#"
pools:
  - id: p
    engine: {engine}
    devices: [0]
    provisioning:
      mode: {mode}
      {section}
      model: {{ ref: "file:/models/tiny.gguf" }}
      flags: [{flags}]
      {extra}
"#
    );
    Config::parse(&text, Format::Yaml, "p.yaml").unwrap().pools[0].clone()
}

// ---------------------------------------------------------------------------------------------
// Binary mode

const CPU_LIBRARIES: &[&str] = &["libggml-base.so", "libggml-cpu-haswell.so", "libllama.so"];
const CUDA_LIBRARIES: &[&str] = &[
    "libggml-base.so",
    "libggml-cpu-haswell.so",
    "libggml-cuda.so",
    "libllama.so",
];
const VERSION: &str = "load_backend: loaded CPU backend from ./libggml-cpu-haswell.so\nversion: 6000 (abc1234)\nbuilt with cc for x86_64-linux-gnu";

fn binary_pool(flags: &str, extra: &str) -> PoolConfig {
    let sum = "ab".repeat(32);
    pool(
        "llamacpp",
        "binary",
        &format!(
            r#"binary: {{ url: "https://example.org/releases/download/b6000/llama-b6000-bin-ubuntu-x64.zip", checksum: "sha256:{sum}" }}"#
        ),
        flags,
        extra,
    )
}

async fn prepare_binary(
    pool: &PoolConfig,
    libraries: &'static [&'static str],
    output: &'static str,
) -> (Result<PreparedEngine>, Arc<RecordingProgress>) {
    let mut installer = MockBinaryInstaller::new();
    installer.expect_ensure_installed().returning(move |spec| {
        let dir = spec.install_root.join("sha256-abababababababab");
        Ok(BinaryArtifact {
            executable: dir.join("build/bin/llama-server"),
            library_dirs: vec![dir.join("build/bin")],
            libraries: libraries
                .iter()
                .map(|name| dir.join("build/bin").join(name))
                .collect(),
            checksum: spec.checksum.clone(),
            bytes: 10,
            version_output: Some(output.to_string()),
            key: "sha256-abababababababab".to_string(),
            cache_hit: false,
            metadata_file: dir.join("metadata.json"),
            dir,
            supported_flags: Vec::new(),
        })
    });
    let progress = Arc::new(RecordingProgress::default());
    let ports = Ports {
        binaries: Some(Arc::new(installer)),
        ..ports(progress.clone())
    };
    let result = Provisioner::new(ports, layout()).prepare(pool).await;
    (result, progress)
}

#[tokio::test]
async fn a_cpu_only_prebuilt_fails_a_pool_that_offloads_saying_what_how_and_the_fix() {
    let (result, _) = prepare_binary(
        &binary_pool(r#"--metrics, -ngl, "99""#, ""),
        CPU_LIBRARIES,
        VERSION,
    )
    .await;
    let error = result.unwrap_err();
    assert!(matches!(error, Error::BuildCheck { .. }), "{error:?}");
    let message = error.to_string();
    for expected in [
        "the pool asks for a GPU backend (provisioning.flags[1]: -ngl 99)",
        "the prebuilt server from https://example.org/releases/download/b6000/llama-b6000-bin-ubuntu-x64.zip shows no GPU backend",
        "found cpu (no GPU backend among the ggml libraries of the installed files (libggml-base.so, libggml-cpu-haswell.so)",
        "`llama-server --version` names no GPU backend (`version: 6000 (abc1234)`)",
        "it would run on the CPU",
    ] {
        assert!(message.contains(expected), "{expected}\nin: {message}");
    }
    let hint = error.hint().unwrap();
    assert!(
        hint.contains("point provisioning.binary.url and checksum at a build with a GPU backend")
            && hint.contains("provisioning.allow_cpu_fallback: true"),
        "{hint}"
    );
    assert_eq!(error.code().exit_code(), 7);
}

#[tokio::test]
async fn a_prebuilt_shipping_the_cuda_library_is_recorded_as_cuda() {
    let (result, progress) = prepare_binary(
        &binary_pool(r#"--gpu-layers=all"#, ""),
        CUDA_LIBRARIES,
        // Asked on a host without a GPU, a backend loaded at run time says nothing.
        VERSION,
    )
    .await;
    let prepared = result.unwrap();
    assert_eq!(prepared.metadata.backend, Some(FoundBackend::Cuda));
    assert!(prepared.metadata.warnings.is_empty());
    assert!(progress.notes().is_empty(), "{:?}", progress.notes());
    assert_eq!(
        prepared.env.get("CUDA_VISIBLE_DEVICES").map(String::as_str),
        Some("0")
    );
}

#[tokio::test]
async fn devices_alone_ask_for_nothing_and_the_found_backend_is_recorded() {
    let (result, _) = prepare_binary(&binary_pool("--metrics", ""), CPU_LIBRARIES, VERSION).await;
    let prepared = result.unwrap();
    assert_eq!(prepared.metadata.backend, Some(FoundBackend::Cpu));
    assert_eq!(
        prepared.env.get("CUDA_VISIBLE_DEVICES").map(String::as_str),
        Some("0")
    );
    // Offload values that ask for nothing more than leaving the flag out.
    for flags in [r#"-ngl, "0""#, r#"-ngl, auto"#, r#"--n-gpu-layers, "-1""#] {
        let (result, _) = prepare_binary(&binary_pool(flags, ""), CPU_LIBRARIES, VERSION).await;
        assert!(result.is_ok(), "{flags}: {result:?}");
    }
}

#[tokio::test]
async fn a_server_that_does_not_answer_the_probe_is_unknown_and_fails_only_a_pool_that_asks() {
    let stand_in = "fake-engine (a stand-in server for tests)";
    let (result, _) = prepare_binary(&binary_pool("--metrics", ""), &[], stand_in).await;
    assert_eq!(
        result.unwrap().metadata.backend,
        Some(FoundBackend::Unknown)
    );
    let (result, _) = prepare_binary(&binary_pool(r#"-ngl, "99""#, ""), &[], stand_in).await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("found unknown (no ggml backend library among the installed files, and `llama-server --version` printed nothing that names a backend (`fake-engine (a stand-in server for tests)`))")
            && message.contains("nothing shows that it can use a GPU"),
        "{message}"
    );
}

#[tokio::test]
async fn allow_cpu_fallback_goes_ahead_with_a_warning_in_the_metadata_and_a_note() {
    let (result, progress) = prepare_binary(
        &binary_pool(r#"-ngl, "99""#, "allow_cpu_fallback: true"),
        CPU_LIBRARIES,
        VERSION,
    )
    .await;
    let prepared = result.unwrap();
    assert_eq!(prepared.metadata.backend, Some(FoundBackend::Cpu));
    assert_eq!(prepared.metadata.warnings.len(), 1);
    let warning = &prepared.metadata.warnings[0];
    assert!(
        warning.contains("the pool asks for a GPU backend (provisioning.flags[0]: -ngl 99)")
            && warning.contains("found cpu")
            && warning.ends_with("going ahead because provisioning.allow_cpu_fallback is true"),
        "{warning}"
    );
    assert_eq!(progress.notes(), vec![warning.clone()]);
    // The JSON a supervisor reads carries both.
    let json = serde_json::to_value(&prepared).unwrap();
    assert_eq!(json["metadata"]["backend"], "cpu");
    assert_eq!(json["metadata"]["warnings"][0], warning.as_str());
}

// ---------------------------------------------------------------------------------------------
// Package mode

fn package_pool(extra_package: &str, flags: &str, extra: &str) -> PoolConfig {
    pool(
        "llamacpp",
        "package",
        &format!(
            r#"allow_package_installs: true
      package: {{ name: llama.cpp-tools, version: "8064+dfsg-2", manager: apt{extra_package} }}"#
        ),
        flags,
        extra,
    )
}

async fn prepare_package(
    pool: &PoolConfig,
    found: BackendFinding,
) -> (Result<PreparedEngine>, Arc<RecordingProgress>) {
    let mut installer = MockPackageInstaller::new();
    installer
        .expect_ensure_installed()
        .times(1)
        .returning(move |spec| {
            Ok(PackageArtifact {
                manager: ManagerKind::Apt,
                package: InstalledPackage {
                    name: "llama.cpp-tools".to_string(),
                    version: spec.version.to_string(),
                    repository: None,
                },
                executable: PathBuf::from("/usr/bin/llama-server"),
                version_output: Some("version: 8064 (abc1234)".into()),
                found: found.clone(),
                engine_version: "llamacpp-apt-llama.cpp-tools-8064+dfsg-2".to_string(),
                key: "0123456789abcdef".to_string(),
                cache_hit: true,
                metadata_file: spec
                    .cache_dir
                    .join("packages-v1/0123456789abcdef/metadata.json"),
                supported_flags: Vec::new(),
            })
        });
    let progress = Arc::new(RecordingProgress::default());
    let ports = Ports {
        packages: Some(Arc::new(installer)),
        ..ports(progress.clone())
    };
    let result = Provisioner::new(ports, layout()).prepare(pool).await;
    (result, progress)
}

fn cpu_package() -> BackendFinding {
    BackendFinding::stated(
        FoundBackend::Cpu,
        "no GPU backend among the ggml libraries of the package's files (libggml-cpu-x64.so)",
    )
}

#[test]
fn the_installer_is_told_what_the_pool_asks() {
    let provisioner = Provisioner::new(ports(Arc::default()), layout());
    let inputs = provisioner
        .inputs(&package_pool(", backend: vulkan", r#"-ngl, "99""#, ""))
        .unwrap();
    let engines::ModeInputs::Package(package) = inputs.mode else {
        panic!("not package inputs");
    };
    let ask = package.spec.gpu_ask().unwrap();
    assert_eq!(ask.backend, Some(FoundBackend::Vulkan));
    assert_eq!(
        ask.by,
        [
            "provisioning.package.backend: vulkan",
            "provisioning.flags[0]: -ngl 99"
        ]
    );
    assert!(!package.spec.allow_cpu_fallback);
    let inputs = provisioner
        .inputs(&package_pool("", "--metrics", "allow_cpu_fallback: true"))
        .unwrap();
    let engines::ModeInputs::Package(package) = inputs.mode else {
        panic!("not package inputs");
    };
    assert_eq!(package.spec.gpu_ask(), None);
    assert!(package.spec.allow_cpu_fallback);
}

#[tokio::test]
async fn a_recorded_cpu_package_fails_a_pool_that_now_offloads_and_is_left_alone() {
    let (result, _) = prepare_package(&package_pool("", r#"-ngl, "99""#, ""), cpu_package()).await;
    let error = result.unwrap_err();
    let Error::Package {
        manager, package, ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(
        (manager.as_str(), package.as_str()),
        ("apt", "llama.cpp-tools=8064+dfsg-2")
    );
    let message = error.to_string();
    assert!(
        message.contains("shows no GPU backend: found cpu") && message.contains("is left alone"),
        "{message}"
    );
    assert!(
        error.hint().unwrap().contains("allow_cpu_fallback"),
        "{:?}",
        error.hint()
    );

    let (result, progress) = prepare_package(
        &package_pool("", r#"-ngl, "99""#, "allow_cpu_fallback: true"),
        cpu_package(),
    )
    .await;
    let prepared = result.unwrap();
    assert_eq!(prepared.metadata.backend, Some(FoundBackend::Cpu));
    assert_eq!(prepared.metadata.warnings.len(), 1);
    assert_eq!(progress.notes(), prepared.metadata.warnings);

    let (result, _) = prepare_package(&package_pool("", "--metrics", ""), cpu_package()).await;
    assert!(result.unwrap().metadata.warnings.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Container mode

fn container_pool(engine: &str, tag: &str, flags: &str, extra: &str) -> PoolConfig {
    pool(
        engine,
        "container",
        &format!(r#"container: {{ image: ghcr.io/ggml-org/llama.cpp, tag: "{tag}" }}"#),
        flags,
        extra,
    )
}

/// Prepares with an image whose layers showed `found`; `scanned` says whether the runtime
/// adapter was asked at all.
async fn prepare_container(pool: &PoolConfig, found: BackendFinding) -> Result<PreparedEngine> {
    let mut runtime = MockContainerRuntime::new();
    runtime
        .expect_ensure_image()
        .times(1)
        .returning(move |spec| {
            Ok(ImageArtifact {
                runtime: RuntimeKind::Podman,
                program: PathBuf::from("/usr/bin/podman"),
                runtime_env: Default::default(),
                reference: format!("{}@sha256:{}", spec.image.name(), "1".repeat(64)),
                digest: format!("sha256:{}", "1".repeat(64)).parse().unwrap(),
                tag: spec.image.tag().cloned(),
                revision: None,
                version: None,
                backend: found.clone(),
                cache_hit: true,
            })
        });
    let ports = Ports {
        containers: Some(Arc::new(runtime)),
        ..ports(Arc::default())
    };
    Provisioner::new(ports, layout()).prepare(pool).await
}

fn layers(backend: FoundBackend) -> BackendFinding {
    match backend {
        FoundBackend::Unknown => BackendFinding::unknown(
            "the image's files were not read: its storage driver is vfs, whose layers are not read (only overlay's are)",
        ),
        FoundBackend::Cpu => BackendFinding::from_evidence(
            &[
                PathBuf::from("/app/libggml-base.so"),
                PathBuf::from("/app/libggml-cpu-haswell.so"),
            ],
            "the image's files (read from its layers)",
            None,
        ),
        gpu => BackendFinding::from_evidence(
            &[PathBuf::from(format!("/app/libggml-{gpu}.so"))],
            "the image's files (read from its layers)",
            None,
        ),
    }
}

#[tokio::test]
async fn an_image_tag_naming_cuda_must_hold_the_cuda_library() {
    let pool = container_pool("llamacpp", "server-cuda-b11312", "--metrics", "");
    let error = prepare_container(&pool, layers(FoundBackend::Cpu))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::BuildCheck { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(
            "the pool asks for the cuda backend (provisioning.container: image tag server-cuda-b11312)"
        ) && message.contains("shows no cuda backend: found cpu (no GPU backend among the ggml libraries of the image's files (read from its layers) (libggml-base.so, libggml-cpu-haswell.so))"),
        "{message}"
    );
    assert!(
        error.hint().unwrap().contains("server-cuda-<release>"),
        "{:?}",
        error.hint()
    );
    let prepared = prepare_container(&pool, layers(FoundBackend::Cuda))
        .await
        .unwrap();
    assert_eq!(prepared.metadata.backend, Some(FoundBackend::Cuda));
    // Vulkan is a GPU backend, but not the one the tag names.
    let message = prepare_container(&pool, layers(FoundBackend::Vulkan))
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("it would use vulkan instead"), "{message}");
}

#[tokio::test]
async fn the_cpu_image_with_offload_fails_and_unreadable_layers_fail_only_a_pool_that_asks() {
    let offload = container_pool("llamacpp", "server-b11312", r#"-ngl, "99""#, "");
    let message = prepare_container(&offload, layers(FoundBackend::Cpu))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("(provisioning.flags[0]: -ngl 99)"),
        "{message}"
    );
    let message = prepare_container(&offload, layers(FoundBackend::Unknown))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message
            .contains("found unknown (the image's files were not read: its storage driver is vfs"),
        "{message}"
    );
    let plain = container_pool("llamacpp", "server-b11312", "--metrics", "");
    let prepared = prepare_container(&plain, layers(FoundBackend::Unknown))
        .await
        .unwrap();
    assert_eq!(prepared.metadata.backend, Some(FoundBackend::Unknown));
    let fallback = container_pool(
        "llamacpp",
        "server-b11312",
        r#"-ngl, "99""#,
        "allow_cpu_fallback: true",
    );
    let prepared = prepare_container(&fallback, layers(FoundBackend::Cpu))
        .await
        .unwrap();
    assert_eq!(prepared.metadata.warnings.len(), 1);
}

#[tokio::test]
async fn vllm_tgi_and_triton_images_are_gpu_builds_by_definition() {
    for engine in ["vllm", "tgi", "triton"] {
        let pool = container_pool(engine, "1.0", "", "");
        // What the layers show is not consulted.
        let prepared = prepare_container(&pool, layers(FoundBackend::Unknown))
            .await
            .unwrap();
        assert_eq!(
            prepared.metadata.backend,
            Some(FoundBackend::Cuda),
            "{engine}"
        );
        assert!(prepared.metadata.warnings.is_empty());
    }
    let rocm = container_pool("tgi", "3.3.6-rocm", "", "");
    let prepared = prepare_container(&rocm, layers(FoundBackend::Unknown))
        .await
        .unwrap();
    assert_eq!(prepared.metadata.backend, Some(FoundBackend::Hip));
}

// ---------------------------------------------------------------------------------------------
// Source mode

fn source_pool(cmake: &str, flags: &str, extra: &str) -> PoolConfig {
    pool(
        "llamacpp",
        "source",
        &format!(
            r#"source: {{ repo: "file:///srv/llama.cpp", ref: fixture-b0, build: {{ cmake_flags: [{cmake}] }} }}"#
        ),
        flags,
        extra,
    )
}

#[test]
fn a_cpu_build_with_offload_is_refused_before_anything_is_fetched() {
    let provisioner = Provisioner::new(ports(Arc::default()), layout());
    let error = provisioner
        .plan(&source_pool(
            "-DGGML_NATIVE=OFF",
            r#"--metrics, --n-gpu-layers, "99""#,
            "",
        ))
        .unwrap_err();
    let Error::ConfigInvalid { errors } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(errors[0].path, "pools[0].provisioning.flags");
    assert!(
        errors[0].message.contains(
            "the pool asks for a GPU backend (provisioning.flags[1]: --n-gpu-layers 99), but the source build shows no GPU backend: found cpu"
        ) && errors[0].message.contains("-DGGML_CUDA=ON")
            && errors[0].message.contains("allow_cpu_fallback"),
        "{}",
        errors[0].message
    );
    assert!(
        provisioner
            .plan(&source_pool("-DGGML_CUDA=ON", r#"-ngl, "99""#, ""))
            .is_ok()
    );
    let plan = provisioner
        .plan(&source_pool(
            "-DGGML_NATIVE=OFF",
            r#"-ngl, "99""#,
            "allow_cpu_fallback: true",
        ))
        .unwrap();
    assert!(
        plan.notes.iter().any(
            |note| note.contains("going ahead because provisioning.allow_cpu_fallback is true")
        ),
        "{:?}",
        plan.notes
    );
}

#[tokio::test]
async fn a_source_build_records_its_checked_backend_and_the_fallback_warning() {
    let mut builder = MockSourceBuilder::new();
    builder.expect_ensure_built().returning(|spec| {
        Ok(SourceArtifact {
            dir: PathBuf::from("/cache/llamacpp/builds-v1/k1"),
            commit: "f3e37ccca624c32180c329208deac452eef38ba5".to_string(),
            key: "k1".to_string(),
            flags: spec.cmake_flags.to_flags(),
            toolchain: Default::default(),
            cache_hit: true,
            metadata_file: PathBuf::from("/cache/llamacpp/builds-v1/k1/metadata.json"),
            engine_version: "llamacpp-f3e37ccca624-cpu-00000000".to_string(),
            supported_flags: Vec::new(),
        })
    });
    let builder = Arc::new(builder);
    let progress = Arc::new(RecordingProgress::default());
    let provisioner = Provisioner::new(
        Ports {
            source_builder: Some(builder),
            ..ports(progress.clone())
        },
        layout(),
    );
    let prepared = provisioner
        .prepare(&source_pool("-DGGML_VULKAN=ON", r#"-ngl, "99""#, ""))
        .await
        .unwrap();
    assert_eq!(prepared.metadata.backend, Some(FoundBackend::Vulkan));
    assert!(prepared.metadata.warnings.is_empty());
    let prepared = provisioner
        .prepare(&source_pool(
            "-DGGML_NATIVE=OFF",
            r#"-ngl, "99""#,
            "allow_cpu_fallback: true",
        ))
        .await
        .unwrap();
    assert_eq!(prepared.metadata.backend, Some(FoundBackend::Cpu));
    assert_eq!(prepared.metadata.warnings.len(), 1);
    assert_eq!(progress.notes(), prepared.metadata.warnings);
}
