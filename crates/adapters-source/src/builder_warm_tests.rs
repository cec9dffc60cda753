//! The warm path of a host that only runs engines: no git, no cmake, no compiler on PATH. A
//! complete build of the same inputs is a cache hit whatever toolchain made it, and nothing runs;
//! without one the missing tool is still the error. Builds are records written by hand.

use std::sync::Mutex;

use provisioner_core::RecordingProgress as Recorder;
use provisioner_core::{
    BuildInfoVariables, CommandOutput, Distro, MockClock, MockPolicy, MockShell, SourceBuilder,
};

use super::*;
use crate::refs::{self, RefEntry, RefKind};

const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";

/// What ran through the shell.
type Ran = Arc<Mutex<Vec<String>>>;

/// A shell on a PATH without any program; running anything fails as a spawn would.
fn bare_host(ran: Ran) -> MockShell {
    let mut shell = MockShell::new();
    shell.expect_locate().returning(|_| None);
    shell.expect_inspect().returning(|_| None);
    shell.expect_run().returning(move |command| {
        ran.lock().unwrap().push(command.display());
        Err(Error::MissingTool {
            tool: command.program.clone(),
            purpose: "run it".to_string(),
            searched: Vec::new(),
            hint: None,
        })
    });
    shell
}

/// A shell on a PATH with every build tool (fingerprints other than the recorded builds');
/// running anything fails.
fn tooled_host(ran: Ran) -> MockShell {
    let mut shell = MockShell::new();
    shell.expect_locate().returning(|program| {
        Some(ToolInfo {
            path: Path::new("/usr/bin").join(program),
            fingerprint: "7-7".to_string(),
        })
    });
    shell.expect_inspect().returning(|_| None);
    shell.expect_run().returning(move |command| {
        ran.lock().unwrap().push(command.display());
        Ok(CommandOutput {
            code: Some(1),
            tail: "not in this test".to_string(),
            ..CommandOutput::default()
        })
    });
    shell
}

fn builder(shell: MockShell, progress: Arc<Recorder>) -> CmakeSourceBuilder {
    let mut policy = MockPolicy::new();
    policy.expect_check().returning(|_| Ok(()));
    let mut clock = MockClock::new();
    clock.expect_now().return_const(UNIX_EPOCH);
    CmakeSourceBuilder::new(
        Arc::new(shell),
        Arc::new(policy),
        progress,
        Arc::new(clock),
        HostFacts {
            distro: Distro::Debian,
            cuda_home: None,
            cuda_path: None,
            jobs: 2,
            root: false,
            include_dirs: Vec::new(),
            library_dirs: Vec::new(),
            ..HostFacts::default()
        },
    )
}

fn spec(cache_dir: &Path, reference: &str) -> SourceBuildSpec {
    SourceBuildSpec {
        engine: Engine::Llamacpp,
        cache_dir: cache_dir.to_path_buf(),
        repo: "https://github.com/ggml-org/llama.cpp".parse().unwrap(),
        reference: reference.parse().unwrap(),
        submodules: false,
        generator: None,
        cmake_flags: CacheEntries::parse(["-DLLAMA_CURL=OFF", "-DGGML_NATIVE=OFF"]).unwrap(),
        renamed: Vec::new(),
        tree_rules: Vec::new(),
        fetches: Vec::new(),
        headers: Vec::new(),
        build_info: Some(BuildInfoVariables {
            commit: "LLAMA_BUILD_COMMIT".to_string(),
            number: "LLAMA_BUILD_NUMBER".to_string(),
        }),
        targets: vec!["llama-server".to_string()],
        artifacts: vec!["bin/llama-server".to_string()],
        backend: Backend::Cpu,
        allow_package_installs: false,
        flag_probe: None,
    }
}

/// Writes a complete build of `spec` at `commit` under `key`, as another host's toolchain
/// (Ninja, its own compilers) made it, finished at `built_at`.
fn record(spec: &SourceBuildSpec, key: &str, commit: &str, built_at: u64) -> PathBuf {
    let dir = spec.cache_dir.join(BUILDS_BUCKET).join(key);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let server = dir.join("bin/llama-server");
    std::fs::write(&server, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755)).unwrap();
    let toolchain = Toolchain {
        generator: "Ninja".to_string(),
        flags: vec!["-DCMAKE_CUDA_COMPILER=/opt/cuda/bin/nvcc".to_string()],
        ..Toolchain::default()
    };
    let metadata = SourceBuildMetadata {
        format: METADATA_FORMAT,
        engine: spec.engine,
        key: key.to_string(),
        repo: spec.repo.to_string(),
        reference: spec.reference.to_string(),
        commit: commit.to_string(),
        engine_version: source_engine_version(
            spec.engine,
            commit,
            spec.backend,
            &spec.cmake_flags.to_flags(),
        ),
        generator: "Ninja".to_string(),
        flags: CmakeSourceBuilder::flags(spec, &toolchain, commit),
        toolchain: [("cmake".to_string(), "/opt/cmake@1-1".to_string())].into(),
        backend: spec.backend,
        targets: spec.targets.clone(),
        artifacts: spec.artifacts.clone(),
        built_at_unix: built_at,
        build_seconds: 1.0,
        log: spec.cache_dir.join("logs").join(format!("{key}.log")),
        supported_flags: None,
    };
    std::fs::write(
        dir.join("metadata.json"),
        serde_json::to_vec(&metadata).unwrap(),
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn a_build_by_another_toolchain_is_a_cache_hit_on_a_host_without_tools() {
    let cache = tempfile::tempdir().unwrap();
    let by_sha = spec(cache.path(), COMMIT);
    let built = record(&by_sha, "0000000000000001", COMMIT, 1);
    // The tag as the ref index knows it from the build.
    let by_tag = spec(cache.path(), "b6000");
    refs::record(
        &by_tag.cache_dir,
        &by_tag.repo.to_string(),
        "b6000",
        RefEntry {
            commit: COMMIT.to_string(),
            kind: RefKind::Tag,
        },
    )
    .unwrap();
    let tagged = record(&by_tag, "0000000000000002", COMMIT, 2);

    for (spec, dir) in [(&by_sha, &built), (&by_tag, &tagged)] {
        let ran = Ran::default();
        let progress = Arc::new(Recorder::default());
        let artifact = builder(bare_host(ran.clone()), progress.clone())
            .ensure_built(spec)
            .await
            .unwrap_or_else(|error| panic!("{}: {error:?}", spec.reference));
        assert!(artifact.cache_hit);
        assert_eq!(&artifact.dir, dir, "{}", spec.reference);
        assert_eq!(artifact.commit, COMMIT);
        assert_eq!(*ran.lock().unwrap(), Vec::<String>::new());
        let notes = progress.notes().join("\n");
        assert!(
            notes.contains("cache hit") && notes.contains("git is not on this host"),
            "{notes}"
        );
    }
}

#[tokio::test]
async fn the_newest_matching_build_is_used() {
    let cache = tempfile::tempdir().unwrap();
    let spec = spec(cache.path(), COMMIT);
    record(&spec, "0000000000000001", COMMIT, 10);
    let newer = record(&spec, "0000000000000002", COMMIT, 20);
    record(&spec, "0000000000000003", COMMIT, 5);
    let artifact = builder(bare_host(Ran::default()), Arc::default())
        .ensure_built(&spec)
        .await
        .unwrap();
    assert_eq!(artifact.dir, newer);
}

#[tokio::test]
async fn other_inputs_are_no_hit_and_the_missing_tool_stands() {
    let cache = tempfile::tempdir().unwrap();
    let asked = spec(cache.path(), COMMIT);
    // Another commit, other flags, another backend, another build number, a missing artefact.
    let mut others = Vec::new();
    let mut flags = asked.clone();
    flags.cmake_flags = CacheEntries::parse(["-DLLAMA_CURL=ON"]).unwrap();
    others.push((flags, COMMIT));
    let mut cuda = asked.clone();
    cuda.backend = Backend::Cuda;
    others.push((cuda, COMMIT));
    others.push((asked.clone(), "0123456789abcdef0123456789abcdef01234567"));
    let mut targets = asked.clone();
    targets.targets = vec!["llama-cli".to_string()];
    others.push((targets, COMMIT));
    for (index, (other, commit)) in others.iter().enumerate() {
        record(other, &format!("000000000000001{index}"), commit, 1);
    }
    let incomplete = record(&asked, "0000000000000020", COMMIT, 1);
    std::fs::remove_file(incomplete.join("bin/llama-server")).unwrap();
    // A tag the ref index knows as the other commit: built there only for another build number
    // (the record's reference is a SHA, whose build number is 0).
    refs::record(
        &asked.cache_dir,
        &asked.repo.to_string(),
        "b6000",
        RefEntry {
            commit: "0123456789abcdef0123456789abcdef01234567".to_string(),
            kind: RefKind::Tag,
        },
    )
    .unwrap();

    // A branch needs git to know its commit: nothing is assumed.
    for spec in [
        asked.clone(),
        spec(cache.path(), "b6000"),
        spec(cache.path(), "master"),
    ] {
        let ran = Ran::default();
        let error = builder(bare_host(ran.clone()), Arc::default())
            .ensure_built(&spec)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::MissingTool { tool, .. } if tool == "git"),
            "{}: {error:?}",
            spec.reference
        );
        assert!(
            error
                .hint()
                .is_some_and(|hint| hint.contains("apt-get install"))
        );
        assert_eq!(*ran.lock().unwrap(), Vec::<String>::new());
    }
}

#[tokio::test]
async fn a_host_with_its_tools_keys_the_build_by_its_own_toolchain() {
    let cache = tempfile::tempdir().unwrap();
    let spec = spec(cache.path(), COMMIT);
    let elsewhere = record(&spec, "0000000000000001", COMMIT, 1);
    let ran = Ran::default();
    let result = builder(tooled_host(ran.clone()), Arc::default())
        .ensure_built(&spec)
        .await;
    assert!(
        result.as_ref().is_err(),
        "a build keyed by another toolchain was used: {result:?}"
    );
    assert!(elsewhere.exists());
    assert!(
        ran.lock()
            .unwrap()
            .iter()
            .any(|command| command.starts_with("git")),
        "{:?}",
        ran.lock().unwrap()
    );
}
