//! Unit tests of the builder over `MockShell`: git is simulated, cmake configure fails on purpose
//! so that the argv it was given can be inspected without a real build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use provisioner_core::Distro;
use provisioner_core::{
    Backend, BuildInfoVariables, CommandOutput, CommandSpec, Engine, Error, MockClock, MockPolicy,
    MockShell, SourceBuildSpec, SourceBuilder, ToolInfo,
};

use super::*;
use crate::refs::{self, RefKind};
use provisioner_core::RecordingProgress as Recorder;

const COMMIT: &str = "012345678aabcdef0123456789abcdef01234567";
const OTHER_COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn tool(path: &str) -> ToolInfo {
    ToolInfo {
        path: PathBuf::from(path),
        fingerprint: "100-200".to_string(),
    }
}

/// What the simulated host has and how its git answers.
#[derive(Clone)]
struct FakeHost {
    on_path: BTreeMap<String, ToolInfo>,
    off_path: BTreeMap<PathBuf, ToolInfo>,
    /// What `git rev-parse` prints; `None` → the ref does not exist.
    rev_parse: Option<String>,
    /// Whether `git show-ref refs/tags/...` succeeds.
    is_tag: bool,
    /// Output of a failing `git clone --bare` / `git fetch`, when the remote is unreachable.
    unreachable: Option<String>,
    commands: Arc<Mutex<Vec<CommandSpec>>>,
}

impl FakeHost {
    fn new() -> Self {
        let on_path = ["git", "cmake", "make", "cc", "c++"]
            .into_iter()
            .map(|p| (p.to_string(), tool(&format!("/usr/bin/{p}"))))
            .collect();
        FakeHost {
            on_path,
            off_path: BTreeMap::new(),
            rev_parse: Some(COMMIT.to_string()),
            is_tag: true,
            unreachable: None,
            commands: Arc::default(),
        }
    }

    fn without(mut self, program: &str) -> Self {
        self.on_path.remove(program);
        self
    }

    fn with(mut self, program: &str, info: ToolInfo) -> Self {
        self.on_path.insert(program.to_string(), info);
        self
    }

    fn commands(&self) -> Vec<CommandSpec> {
        self.commands.lock().unwrap().clone()
    }

    fn configure(&self) -> CommandSpec {
        self.commands()
            .into_iter()
            .find(|c| c.program == "cmake" && c.args.first().map(String::as_str) == Some("-S"))
            .expect("cmake configure was run")
    }

    fn shell(&self) -> MockShell {
        let mut shell = MockShell::new();
        let on_path = self.on_path.clone();
        shell
            .expect_locate()
            .returning(move |program| on_path.get(program).cloned());
        let off_path = self.off_path.clone();
        shell
            .expect_inspect()
            .returning(move |path| off_path.get(path).cloned());
        let host = self.clone();
        shell
            .expect_run()
            .returning(move |command| host.simulate(command));
        shell
    }

    fn simulate(&self, command: &CommandSpec) -> provisioner_core::Result<CommandOutput> {
        self.commands.lock().unwrap().push(command.clone());
        let ok = CommandOutput {
            code: Some(0),
            ..CommandOutput::default()
        };
        let failed = |tail: &str| CommandOutput {
            code: Some(1),
            tail: tail.to_string(),
            ..CommandOutput::default()
        };
        let args: Vec<&str> = command.args.iter().map(String::as_str).collect();
        match (command.program.as_str(), args.as_slice()) {
            ("git", ["clone", "--bare", .., target]) => match &self.unreachable {
                Some(tail) => Ok(failed(tail)),
                None => {
                    std::fs::create_dir_all(target).unwrap();
                    Ok(ok)
                }
            },
            ("git", ["clone", .., target]) => {
                std::fs::create_dir_all(target).unwrap();
                Ok(ok)
            }
            ("git", ["-C", _, "fetch", ..]) => match &self.unreachable {
                Some(tail) => Ok(failed(tail)),
                None => Ok(ok),
            },
            ("git", ["-C", _, "rev-parse", ..]) => match &self.rev_parse {
                Some(commit) => Ok(CommandOutput {
                    stdout: format!("{commit}\n"),
                    ..ok
                }),
                None => Ok(failed("")),
            },
            ("git", ["-C", _, "show-ref", ..]) => Ok(if self.is_tag { ok } else { failed("") }),
            ("git", _) => Ok(ok),
            ("cmake", ["-S", ..]) => Ok(CommandOutput {
                code: Some(1),
                tail: "CMake Error at CMakeLists.txt:3 (message):\n  boom".to_string(),
                ..CommandOutput::default()
            }),
            _ => Ok(ok),
        }
    }
}

fn allow() -> Arc<MockPolicy> {
    let mut policy = MockPolicy::new();
    policy.expect_check().returning(|_| Ok(()));
    Arc::new(policy)
}

fn clock() -> Arc<MockClock> {
    let mut clock = MockClock::new();
    clock
        .expect_now()
        .return_const(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    Arc::new(clock)
}

fn facts() -> HostFacts {
    HostFacts {
        distro: Distro::Debian,
        cuda_home: None,
        cuda_path: None,
        jobs: 2,
        root: false,
        include_dirs: Vec::new(),
        library_dirs: Vec::new(),
        ..HostFacts::default()
    }
}

fn builder(
    shell: MockShell,
    policy: Arc<MockPolicy>,
    progress: Arc<Recorder>,
    host: HostFacts,
) -> CmakeSourceBuilder {
    CmakeSourceBuilder::new(Arc::new(shell), policy, progress, clock(), host)
}

fn spec(cache_dir: &Path, reference: &str) -> SourceBuildSpec {
    SourceBuildSpec {
        engine: Engine::Llamacpp,
        cache_dir: cache_dir.to_path_buf(),
        repo: "https://github.com/ggml-org/llama.cpp".parse().unwrap(),
        reference: reference.parse().unwrap(),
        submodules: false,
        generator: None,
        cmake_flags: CacheEntries::parse(["-DLLAMA_CURL=OFF"]).unwrap(),
        renamed: Vec::new(),
        tree_rules: Vec::new(),
        fetches: Vec::new(),
        headers: Vec::new(),
        build_info: None,
        targets: vec!["llama-server".to_string()],
        artifacts: vec!["bin/llama-server".to_string()],
        backend: Backend::Cpu,
        allow_package_installs: false,
        flag_probe: None,
    }
}

#[tokio::test]
async fn missing_cmake_fails_preflight_with_the_install_command() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new().without("cmake");
    let b = builder(host.shell(), allow(), Arc::default(), facts());
    let error = b.ensure_built(&spec(dir.path(), COMMIT)).await.unwrap_err();
    match &error {
        Error::MissingTool { tool, purpose, .. } => {
            assert_eq!(tool, "cmake");
            assert_eq!(purpose, "configure the build");
        }
        other => panic!("expected MissingTool, got {other:?}"),
    }
    assert_eq!(
        error.hint(),
        Some(
            "sudo apt-get install -y cmake (or set provisioning.allow_package_installs: true to let the provisioner install them)"
        )
    );
    assert!(host.commands().is_empty());

    // As root, the same command without sudo (which most containers do not have).
    let host = FakeHost::new().without("cmake");
    let as_root = HostFacts {
        root: true,
        ..facts()
    };
    let b = builder(host.shell(), allow(), Arc::default(), as_root);
    let error = b.ensure_built(&spec(dir.path(), COMMIT)).await.unwrap_err();
    assert_eq!(
        error.hint(),
        Some(
            "apt-get install -y cmake (or set provisioning.allow_package_installs: true to let the provisioner install them)"
        )
    );
}

/// A shell whose `cmake` and `c++` appear once `installed` is set.
fn shell_installing(host: &FakeHost, installed: Arc<std::sync::atomic::AtomicBool>) -> MockShell {
    let mut shell = MockShell::new();
    let on_path = host.on_path.clone();
    shell.expect_locate().returning(move |program| {
        let late = ["cmake", "c++"].contains(&program);
        if late && !installed.load(std::sync::atomic::Ordering::SeqCst) {
            None
        } else {
            on_path.get(program).cloned()
        }
    });
    shell.expect_inspect().returning(|_| None);
    let host = host.clone();
    shell
        .expect_run()
        .returning(move |command| host.simulate(command));
    shell
}

#[tokio::test]
async fn missing_tools_are_installed_through_the_package_manager_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new();
    let installed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut packages = provisioner_core::MockPackageManager::new();
    packages
        .expect_kind()
        .return_const(provisioner_core::ManagerKind::Apt);
    packages
        .expect_install_command()
        .return_const("sudo apt-get install -y cmake g++".to_string());
    let flag = installed.clone();
    packages
        .expect_install()
        .withf(|requests| {
            let names: Vec<&str> = requests.iter().map(|r| r.name.as_str()).collect();
            names == ["cmake", "g++"] && requests.iter().all(|r| r.version.is_none())
        })
        .times(1)
        .returning(move |requests| {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(requests
                .iter()
                .map(|r| provisioner_core::InstalledPackage {
                    name: r.name.to_string(),
                    version: "1".to_string(),
                    repository: None,
                })
                .collect())
        });
    let progress = Arc::new(Recorder::default());
    let b = builder(
        shell_installing(&host, installed.clone()),
        allow(),
        progress.clone(),
        facts(),
    )
    .with_packages(Arc::new(packages));
    let mut spec = spec(dir.path(), COMMIT);
    spec.allow_package_installs = true;
    let error = b.ensure_built(&spec).await.unwrap_err();
    // Preflight passed after the install: the (simulated) configure ran and failed.
    assert!(matches!(error, Error::CommandFailed { .. }), "{error:?}");
    assert!(installed.load(std::sync::atomic::Ordering::SeqCst));
    let notes = progress.notes().join("\n");
    assert!(
        notes.contains("cmake, c++ or g++ or clang++ missing")
            && notes.contains("sudo apt-get install -y cmake g++"),
        "{notes}"
    );
}

#[tokio::test]
async fn missing_tools_are_not_installed_unless_the_pool_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new();
    let mut packages = provisioner_core::MockPackageManager::new();
    packages.expect_install().times(0);
    let b = builder(
        shell_installing(&host, Arc::default()),
        allow(),
        Arc::default(),
        facts(),
    )
    .with_packages(Arc::new(packages));
    let error = b.ensure_built(&spec(dir.path(), COMMIT)).await.unwrap_err();
    assert!(
        matches!(&error, Error::MissingTool { tool, .. } if tool == "cmake"),
        "{error:?}"
    );
    assert_eq!(
        error.hint(),
        Some(
            "sudo apt-get install -y cmake g++ (or set provisioning.allow_package_installs: true to let the provisioner install them)"
        )
    );
    assert!(host.commands().is_empty());
}

#[tokio::test]
async fn unknown_distro_hint_names_the_package_manager() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new().without("make");
    let b = builder(
        host.shell(),
        allow(),
        Arc::default(),
        HostFacts {
            distro: Distro::Unknown,
            ..facts()
        },
    );
    let error = b.ensure_built(&spec(dir.path(), COMMIT)).await.unwrap_err();
    assert!(
        matches!(&error, Error::MissingTool { tool, .. } if tool == "ninja or make"),
        "{error:?}"
    );
    assert_eq!(
        error.hint(),
        Some("install ninja with your system package manager")
    );
}

#[tokio::test]
async fn cuda_finds_nvcc_off_path_and_passes_it_to_cmake() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = FakeHost::new();
    host.off_path.insert(
        PathBuf::from("/usr/local/cuda/bin/nvcc"),
        tool("/usr/local/cuda-12.4/bin/nvcc"),
    );
    let progress = Arc::new(Recorder::default());
    let b = builder(host.shell(), allow(), progress.clone(), facts());
    let mut spec = spec(dir.path(), COMMIT);
    spec.backend = Backend::Cuda;
    spec.cmake_flags.set("-DGGML_CUDA=ON".parse().unwrap());
    let error = b.ensure_built(&spec).await.unwrap_err();
    assert!(matches!(error, Error::CommandFailed { .. }), "{error:?}");
    let configure = host.configure();
    assert!(
        configure
            .args
            .contains(&"-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc".to_string()),
        "{configure:?}"
    );
    assert!(
        progress
            .notes()
            .iter()
            .any(|n| n.contains("/usr/local/cuda/bin/nvcc")),
        "{:?}",
        progress.notes()
    );
}

#[tokio::test]
async fn cuda_without_nvcc_anywhere_refuses_before_running_anything() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new();
    let b = builder(
        host.shell(),
        allow(),
        Arc::default(),
        HostFacts {
            cuda_home: Some("/opt/my-cuda".to_string()),
            ..facts()
        },
    );
    let mut spec = spec(dir.path(), "v1");
    spec.backend = Backend::Cuda;
    let error = b.ensure_built(&spec).await.unwrap_err();
    match &error {
        Error::MissingTool { tool, searched, .. } => {
            assert_eq!(tool, "nvcc");
            assert_eq!(
                searched,
                &vec![
                    PathBuf::from("/opt/my-cuda"),
                    PathBuf::from("/usr/local/cuda"),
                    PathBuf::from("/opt/cuda")
                ]
            );
        }
        other => panic!("expected MissingTool, got {other:?}"),
    }
    let hint = error.hint().unwrap();
    assert!(
        hint.starts_with("sudo apt-get install -y nvidia-cuda-toolkit"),
        "{hint}"
    );
    assert!(hint.contains("CUDA_HOME"), "{hint}");
    assert!(error.to_string().contains("/opt/my-cuda"), "{error}");
    assert!(host.commands().is_empty());
}

#[tokio::test]
async fn a_cuda_compiler_given_in_the_flags_is_used_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = FakeHost::new();
    host.off_path.insert(
        PathBuf::from("/srv/cuda/bin/nvcc"),
        tool("/srv/cuda/bin/nvcc"),
    );
    let b = builder(host.shell(), allow(), Arc::default(), facts());
    let mut spec = spec(dir.path(), COMMIT);
    spec.backend = Backend::Cuda;
    spec.cmake_flags.set(
        "-DCMAKE_CUDA_COMPILER:FILEPATH=/srv/cuda/bin/nvcc"
            .parse()
            .unwrap(),
    );
    let plan = b.plan(&spec).await.unwrap();
    assert_eq!(plan.flags, spec.cmake_flags.to_flags());
    assert_eq!(
        plan.toolchain.keyed.get("nvcc").map(String::as_str),
        Some("/srv/cuda/bin/nvcc@100-200")
    );

    // Another nvcc on PATH: the one named in the flags is what cmake uses and what is keyed.
    let with_path_nvcc = host.clone().with("nvcc", tool("/usr/bin/nvcc"));
    let b = builder(with_path_nvcc.shell(), allow(), Arc::default(), facts());
    let plan = b.plan(&spec).await.unwrap();
    assert_eq!(
        plan.toolchain.keyed.get("nvcc").map(String::as_str),
        Some("/srv/cuda/bin/nvcc@100-200")
    );

    // A named compiler that does not exist is missing, whatever PATH holds.
    spec.cmake_flags
        .set("-DCMAKE_CUDA_COMPILER=/nowhere/nvcc".parse().unwrap());
    let b = builder(with_path_nvcc.shell(), allow(), Arc::default(), facts());
    let error = b.plan(&spec).await.err().unwrap();
    assert!(
        matches!(&error, Error::MissingTool { searched, .. } if searched == &vec![PathBuf::from("/nowhere/nvcc")]),
        "{error:?}"
    );
}

#[tokio::test]
async fn key_follows_commit_flags_and_toolchain_only() {
    let dir = tempfile::tempdir().unwrap();
    let key = |host: &FakeHost, spec: SourceBuildSpec| {
        let b = builder(host.shell(), allow(), Arc::default(), facts());
        async move { b.plan(&spec).await.unwrap().key }
    };
    let host = FakeHost::new();
    let base = key(&host, spec(dir.path(), COMMIT)).await;
    assert_eq!(base, key(&host, spec(dir.path(), COMMIT)).await);
    // Upper-case SHA: the same commit.
    assert_eq!(
        base,
        key(&host, spec(dir.path(), &COMMIT.to_ascii_uppercase())).await
    );
    // ccache and git do not change the output.
    let with_ccache = FakeHost::new().with("ccache", tool("/usr/bin/ccache"));
    assert_eq!(base, key(&with_ccache, spec(dir.path(), COMMIT)).await);
    let other_git = FakeHost::new().with(
        "git",
        ToolInfo {
            path: "/usr/local/bin/git".into(),
            fingerprint: "9-9".into(),
        },
    );
    assert_eq!(base, key(&other_git, spec(dir.path(), COMMIT)).await);

    assert_ne!(base, key(&host, spec(dir.path(), OTHER_COMMIT)).await);
    let mut flagged = spec(dir.path(), COMMIT);
    flagged
        .cmake_flags
        .set("-DGGML_NATIVE=OFF".parse().unwrap());
    assert_ne!(base, key(&host, flagged).await);
    let newer_gcc = FakeHost::new().with(
        "cc",
        ToolInfo {
            path: "/usr/bin/cc".into(),
            fingerprint: "100-201".into(),
        },
    );
    assert_ne!(base, key(&newer_gcc, spec(dir.path(), COMMIT)).await);
    let ninja = FakeHost::new().with("ninja", tool("/usr/bin/ninja"));
    assert_ne!(base, key(&ninja, spec(dir.path(), COMMIT)).await);
}

#[tokio::test]
async fn generator_defaults_to_ninja_when_present() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new().with("ninja", tool("/usr/bin/ninja"));
    let b = builder(host.shell(), allow(), Arc::default(), facts());
    let plan = b.plan(&spec(dir.path(), COMMIT)).await.unwrap();
    assert_eq!(plan.toolchain.generator, "Ninja");
    assert!(plan.toolchain.keyed.contains_key("ninja"));
    assert!(!plan.toolchain.keyed.contains_key("make"));

    let host = FakeHost::new();
    let b = builder(host.shell(), allow(), Arc::default(), facts());
    let plan = b.plan(&spec(dir.path(), COMMIT)).await.unwrap();
    assert_eq!(plan.toolchain.generator, "Unix Makefiles");
    assert_eq!(
        plan.toolchain.keyed.keys().collect::<Vec<_>>(),
        vec!["c++", "cc", "cmake", "make"]
    );
}

#[tokio::test]
async fn shell_metacharacters_reach_cmake_as_one_literal_argument() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new().with("ccache", tool("/usr/bin/ccache"));
    let b = builder(host.shell(), allow(), Arc::default(), facts());
    let nasty = "-DX=$(touch /tmp/pwned);rm -rf /".to_string();
    let mut spec = spec(dir.path(), COMMIT);
    spec.cmake_flags.set(nasty.parse().unwrap());
    let error = b.ensure_built(&spec).await.unwrap_err();
    let configure = host.configure();
    assert_eq!(configure.args.iter().filter(|a| **a == nasty).count(), 1);
    assert_eq!(configure.program, "cmake");
    // The failure carries cmake's output, the log and the exact command.
    let message = error.to_string();
    assert!(message.contains("boom"), "{message}");
    assert!(message.contains("/logs/"), "{message}");
    assert!(
        message.contains("'-DX=$(touch /tmp/pwned);rm -rf /'"),
        "{message}"
    );
    // ccache's base dir is the (absolute) cache dir.
    assert_eq!(
        configure.env.get("CCACHE_BASEDIR").map(PathBuf::from),
        Some(dir.path().to_path_buf())
    );
    assert_eq!(configure.progress.as_deref(), Some("configure"));
    assert!(configure.group_file.is_some());
    assert!(configure.log.is_some());
    // cmake inherits the base variables and a build's (git's included), git git's: never the
    // caller's secrets, nor a GIT_DIR that would point git at another repository.
    assert!(configure.inherits("CC") && configure.inherits("CUDA_HOME"));
    assert!(configure.inherits("PATH") && configure.inherits("GIT_SSH_COMMAND"));
    let git: Vec<CommandSpec> = host
        .commands()
        .into_iter()
        .filter(|c| c.program == "git")
        .collect();
    assert!(!git.is_empty());
    for command in git.iter().chain([&configure]) {
        for secret in [
            "AWS_SECRET_ACCESS_KEY",
            "HF_TOKEN",
            "GITHUB_TOKEN",
            "GIT_DIR",
        ] {
            assert!(!command.inherits(secret), "{secret}: {command:?}");
        }
    }
    for command in &git {
        assert!(command.inherits("SSH_AUTH_SOCK") && !command.inherits("CC"));
    }
    // Nothing was installed and the staging area is gone.
    let builds = dir.path().join(BUILDS_BUCKET);
    let left: Vec<_> = std::fs::read_dir(&builds)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn policy_denial_runs_no_git() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new();
    let mut policy = MockPolicy::new();
    policy.expect_check().returning(|action| {
        Err(Error::PolicyDenied {
            action: format!("{action:?}"),
            hint: Some("set allow_network".to_string()),
        })
    });
    let b = builder(host.shell(), Arc::new(policy), Arc::default(), facts());
    let error = b.ensure_built(&spec(dir.path(), "v1")).await.unwrap_err();
    assert!(matches!(error, Error::PolicyDenied { .. }), "{error:?}");
    assert!(host.commands().is_empty());
}

/// A build option that downloads (`-DLLAMA_LLGUIDANCE=ON`) is put to the policy in preflight:
/// refused, nothing runs, not even git; and a header an option needs is looked for there too.
#[tokio::test]
async fn downloads_and_headers_of_the_options_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new();
    let mut policy = MockPolicy::new();
    policy.expect_check().returning(|action| match action {
        Action::Download { url, .. } => Err(Error::PolicyDenied {
            action: format!("download {}", url.redacted()),
            hint: Some("drop --offline".to_string()),
        }),
        _ => Ok(()),
    });
    let b = builder(host.shell(), Arc::new(policy), Arc::default(), facts());
    let mut guided = spec(dir.path(), "v1");
    guided.fetches = vec![provisioner_core::BuildFetch {
        option: "LLAMA_LLGUIDANCE".to_string(),
        url: "https://github.com/guidance-ai/llguidance".parse().unwrap(),
    }];
    let error = b.ensure_built(&guided).await.unwrap_err();
    assert!(
        error.to_string().contains("-DLLAMA_LLGUIDANCE=ON"),
        "{error}"
    );
    assert_eq!(error.code().exit_code(), 9);
    assert!(host.commands().is_empty(), "{:?}", host.commands());

    let mut curl = spec(dir.path(), "v1");
    curl.headers = vec![provisioner_core::HeaderRequirement {
        header: "curl/curl.h".to_string(),
        purpose: "build with -DLLAMA_CURL=ON".to_string(),
    }];
    let b = builder(host.shell(), allow(), Arc::default(), facts());
    let error = b.ensure_built(&curl).await.unwrap_err();
    assert!(matches!(error, Error::MissingSetup { .. }), "{error:?}");
    assert!(host.commands().is_empty(), "{:?}", host.commands());
}

#[tokio::test]
async fn tags_are_resolved_once_through_the_mirror_then_from_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new();
    let progress = Arc::new(Recorder::default());
    let b = builder(host.shell(), allow(), progress.clone(), facts());
    let spec = spec(dir.path(), "v1");
    let plan = b.plan(&spec).await.unwrap();
    assert_eq!(plan.commit, COMMIT);
    let commands = host.commands();
    assert!(commands.iter().all(|c| c.program == "git"));
    assert!(
        commands
            .iter()
            .all(|c| c.env.get("GIT_TERMINAL_PROMPT").map(String::as_str) == Some("0"))
    );
    let clone = &commands[0];
    let mirror = Mirror::new(dir.path(), spec.repo.expose());
    assert_eq!(
        clone.args,
        vec![
            "clone".to_string(),
            "--bare".into(),
            "--quiet".into(),
            "--".into(),
            spec.repo.expose().to_string(),
            mirror.tmp.display().to_string()
        ]
    );
    assert!(mirror.dir.is_dir() && !mirror.tmp.exists());
    assert!(
        commands[1]
            .args
            .ends_with(&["--end-of-options".to_string(), "v1^{commit}".to_string()])
    );
    assert!(
        progress
            .started()
            .contains(&format!("fetch {}@v1", spec.repo))
    );
    assert_eq!(
        refs::lookup(dir.path(), &spec.repo.to_string(), "v1").map(|e| e.kind),
        Some(RefKind::Tag)
    );

    let count = commands.len();
    let again = b.plan(&spec).await.unwrap();
    assert_eq!(again.key, plan.key);
    assert_eq!(host.commands().len(), count, "the index answered");
}

#[tokio::test]
async fn branches_are_fetched_every_time_and_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = FakeHost::new();
    host.is_tag = false;
    let b = builder(host.shell(), allow(), Arc::default(), facts());
    let spec = spec(dir.path(), "master");
    b.plan(&spec).await.unwrap();
    b.plan(&spec).await.unwrap();
    let fetches = host
        .commands()
        .iter()
        .filter(|c| c.args.get(2).map(String::as_str) == Some("fetch"))
        .count();
    assert_eq!(fetches, 1, "the second plan fetches the existing mirror");
    assert_eq!(
        refs::lookup(dir.path(), &spec.repo.to_string(), "master"),
        None
    );
}

#[tokio::test]
async fn abbreviated_commits_are_recorded_as_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = FakeHost::new();
    host.is_tag = false;
    let b = builder(host.shell(), allow(), Arc::default(), facts());
    b.plan(&spec(dir.path(), "012345678A")).await.unwrap();
    let entry = refs::lookup(
        dir.path(),
        &spec(dir.path(), "x").repo.to_string(),
        "012345678A",
    )
    .unwrap();
    assert_eq!(entry.kind, RefKind::Commit);
    assert_eq!(entry.commit, COMMIT);
}

#[tokio::test]
async fn unknown_ref_and_unreachable_repo_are_source_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = FakeHost::new();
    host.rev_parse = None;
    let b = builder(host.shell(), allow(), Arc::default(), facts());
    let error = b.plan(&spec(dir.path(), "nope")).await.err().unwrap();
    match &error {
        Error::Source { message, .. } => {
            assert_eq!(message, "no tag, branch or commit named `nope`")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        error.hint(),
        Some("list tags with: git ls-remote --tags https://github.com/ggml-org/llama.cpp")
    );

    let dir = tempfile::tempdir().unwrap();
    let mut host = FakeHost::new();
    host.unreachable = Some(
        "Cloning into bare repository...\nfatal: repository 'https://x/' not found\n".to_string(),
    );
    let b = builder(host.shell(), allow(), Arc::default(), facts());
    let error = b.plan(&spec(dir.path(), "v1")).await.err().unwrap();
    match &error {
        Error::Source { message, .. } => assert_eq!(
            message,
            "cannot reach the repository: fatal: repository 'https://x/' not found"
        ),
        other => panic!("{other:?}"),
    }
    assert!(
        error
            .hint()
            .unwrap()
            .contains("git ls-remote https://github.com/ggml-org/llama.cpp")
    );
    assert!(
        !Mirror::new(dir.path(), spec(dir.path(), "v1").repo.expose())
            .dir
            .exists()
    );
}

#[tokio::test]
async fn build_info_flags_carry_the_commit_and_release_number() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new();
    let b = builder(host.shell(), allow(), Arc::default(), facts());
    let mut spec = spec(dir.path(), "b4500");
    spec.build_info = Some(BuildInfoVariables {
        commit: "LLAMA_BUILD_COMMIT".to_string(),
        number: "LLAMA_BUILD_NUMBER".to_string(),
    });
    let plan = b.plan(&spec).await.unwrap();
    assert_eq!(
        plan.flags,
        vec![
            "-DLLAMA_CURL=OFF".to_string(),
            "-DLLAMA_BUILD_COMMIT=012345678".to_string(),
            "-DLLAMA_BUILD_NUMBER=4500".to_string(),
        ]
    );
    assert_eq!(build_number("v1.2"), 0);
    assert_eq!(build_number("b"), 0);
    assert_eq!(build_number("b12x"), 0);
}

#[tokio::test]
async fn cold_path_commands_are_shaped_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new();
    let b = builder(host.shell(), allow(), Arc::default(), facts());
    let mut spec = spec(dir.path(), COMMIT);
    spec.submodules = true;
    let _ = b.ensure_built(&spec).await.unwrap_err();
    let commands = host.commands();
    let git: Vec<Vec<String>> = commands
        .iter()
        .filter(|c| c.program == "git")
        .map(|c| c.args.clone())
        .collect();
    let verbs: Vec<&str> = git
        .iter()
        .map(|a| {
            if a[0] == "-C" {
                a[2].as_str()
            } else {
                a[0].as_str()
            }
        })
        .collect();
    // No mirror yet: it is cloned, checked for the commit, then cloned from; this checkout has
    // no .gitmodules, so there is no submodule to fetch (tests/real.rs covers one that has).
    assert_eq!(
        verbs,
        vec!["clone", "cat-file", "clone", "checkout", "remote"]
    );
    assert_eq!(git[3][2..], ["checkout", "--quiet", "--detach", COMMIT]);
    assert_eq!(
        git[4][2..],
        ["remote", "set-url", "origin", spec.repo.expose()]
    );
    assert!(
        commands
            .iter()
            .all(|c| c.group_file.is_some() && c.log.is_some())
    );
    let configure = host.configure();
    assert!(
        configure
            .args
            .windows(2)
            .any(|w| w == ["-G", "Unix Makefiles"])
    );
}

/// A ROCm-like root with the `hip` CMake package, and the HIP compiler ROCm ships.
fn rocm_root(host: &mut FakeHost) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let package = root.path().join("lib/cmake/hip");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(package.join("hip-config.cmake"), "").unwrap();
    let clang = root.path().join("llvm/bin/clang");
    host.off_path
        .insert(clang.clone(), tool(&clang.display().to_string()));
    (root, clang)
}

fn hip_spec(dir: &Path) -> SourceBuildSpec {
    let mut spec = spec(dir, COMMIT);
    spec.backend = Backend::Hip;
    spec.cmake_flags.set("-DGGML_HIP=ON".parse().unwrap());
    spec
}

#[tokio::test]
async fn hip_finds_rocms_clang_under_rocm_path_without_hipcc() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = FakeHost::new();
    let (root, clang) = rocm_root(&mut host);
    let progress = Arc::new(Recorder::default());
    let facts = HostFacts {
        rocm_path: Some(root.path().to_path_buf()),
        ..facts()
    };
    let b = builder(host.shell(), allow(), progress.clone(), facts);
    let error = b.ensure_built(&hip_spec(dir.path())).await.unwrap_err();
    // Preflight passed: the (simulated) configure ran, with the compiler it found.
    assert!(matches!(error, Error::CommandFailed { .. }), "{error:?}");
    let configure = host.configure();
    assert!(
        configure
            .args
            .contains(&format!("-DCMAKE_HIP_COMPILER={}", clang.display())),
        "{configure:?}"
    );
    assert!(
        progress
            .notes()
            .iter()
            .any(|n| n.contains("llvm/bin/clang")),
        "{:?}",
        progress.notes()
    );
}

#[tokio::test]
async fn hip_takes_the_compiler_from_hipcxx_or_the_flags_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = FakeHost::new();
    let (root, clang) = rocm_root(&mut host);
    // HIPCXX: the compiler's own root holds the hip package; no flag is added.
    let facts_hipcxx = HostFacts {
        hipcxx: Some(clang.clone()),
        ..facts()
    };
    let b = builder(host.shell(), allow(), Arc::default(), facts_hipcxx);
    let error = b.ensure_built(&hip_spec(dir.path())).await.unwrap_err();
    assert!(matches!(error, Error::CommandFailed { .. }), "{error:?}");
    assert!(
        !host
            .configure()
            .args
            .iter()
            .any(|a| a.starts_with("-DCMAKE_HIP_COMPILER")),
        "cmake reads HIPCXX itself"
    );

    // A compiler named in the flags that does not exist: nothing runs, the path is named.
    let host = FakeHost::new();
    let b = builder(host.shell(), allow(), Arc::default(), facts());
    let mut spec = hip_spec(dir.path());
    spec.cmake_flags
        .set("-DCMAKE_HIP_COMPILER=/opt/nowhere/clang".parse().unwrap());
    let error = b.ensure_built(&spec).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("/opt/nowhere/clang") && text.contains("-DCMAKE_HIP_COMPILER"),
        "{text}"
    );
    assert!(host.commands().is_empty());
    drop(root);
}

#[tokio::test]
async fn hip_without_rocm_names_every_missing_piece_and_the_whole_package_set() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new();
    let empty = tempfile::tempdir().unwrap();
    let facts = HostFacts {
        rocm_path: Some(empty.path().to_path_buf()),
        ..facts()
    };
    let b = builder(host.shell(), allow(), Arc::default(), facts);
    let error = b.ensure_built(&hip_spec(dir.path())).await.unwrap_err();
    assert_eq!(error.code().exit_code(), 5, "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("the HIP compiler") && text.contains("hip-config.cmake"),
        "{text}"
    );
    assert!(
        text.contains(&empty.path().join("llvm/bin/clang").display().to_string()),
        "{text}"
    );
    let hint = error.hint().unwrap();
    assert!(
        hint.starts_with("sudo apt-get install -y hipcc libamdhip64-dev, or point ROCM_PATH"),
        "{hint}"
    );
    assert!(host.commands().is_empty());
}

fn vulkan_spec(dir: &Path) -> SourceBuildSpec {
    let mut spec = spec(dir, COMMIT);
    spec.backend = Backend::Vulkan;
    spec.cmake_flags.set("-DGGML_VULKAN=ON".parse().unwrap());
    spec
}

#[tokio::test]
async fn vulkan_needs_headers_and_loader_besides_glslc() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new().with("glslc", tool("/usr/bin/glslc"));
    let include = tempfile::tempdir().unwrap();
    let lib = tempfile::tempdir().unwrap();
    let with_dirs = |distro| HostFacts {
        distro,
        include_dirs: vec![include.path().to_path_buf()],
        library_dirs: vec![lib.path().to_path_buf()],
        ..facts()
    };
    let b = builder(
        host.shell(),
        allow(),
        Arc::default(),
        with_dirs(Distro::Debian),
    );
    let error = b.ensure_built(&vulkan_spec(dir.path())).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("vulkan/vulkan.h")
            && text.contains("libvulkan.so")
            && !text.contains("glslc ("),
        "{text}"
    );
    assert_eq!(
        error.hint(),
        Some(
            "sudo apt-get install -y glslc libvulkan-dev, or set VULKAN_SDK to your Vulkan SDK (or set provisioning.allow_package_installs: true to let the provisioner install them)"
        )
    );
    let b = builder(
        host.shell(),
        allow(),
        Arc::default(),
        with_dirs(Distro::Arch),
    );
    let error = b.ensure_built(&vulkan_spec(dir.path())).await.unwrap_err();
    assert!(
        error
            .hint()
            .unwrap()
            .starts_with("sudo pacman -S --needed shaderc vulkan-headers vulkan-icd-loader"),
        "{:?}",
        error.hint()
    );
    assert!(host.commands().is_empty());

    // With the header and the loader in place, preflight passes and configure runs.
    std::fs::create_dir_all(include.path().join("vulkan")).unwrap();
    std::fs::write(include.path().join("vulkan/vulkan.h"), "").unwrap();
    std::os::unix::fs::symlink("libvulkan.so.1", lib.path().join("libvulkan.so")).unwrap();
    std::fs::write(lib.path().join("libvulkan.so.1"), "").unwrap();
    let b = builder(
        host.shell(),
        allow(),
        Arc::default(),
        with_dirs(Distro::Debian),
    );
    let error = b.ensure_built(&vulkan_spec(dir.path())).await.unwrap_err();
    assert!(matches!(error, Error::CommandFailed { .. }), "{error:?}");
}

#[tokio::test]
async fn vulkan_sdk_provides_everything() {
    let dir = tempfile::tempdir().unwrap();
    let sdk = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(sdk.path().join("include/vulkan")).unwrap();
    std::fs::write(sdk.path().join("include/vulkan/vulkan.h"), "").unwrap();
    std::fs::create_dir_all(sdk.path().join("lib")).unwrap();
    std::fs::write(sdk.path().join("lib/libvulkan.so"), "").unwrap();
    let mut host = FakeHost::new();
    let glslc = sdk.path().join("bin/glslc");
    host.off_path
        .insert(glslc.clone(), tool(&glslc.display().to_string()));
    let facts = HostFacts {
        vulkan_sdk: Some(sdk.path().to_path_buf()),
        ..facts()
    };
    let b = builder(host.shell(), allow(), Arc::default(), facts);
    let error = b.ensure_built(&vulkan_spec(dir.path())).await.unwrap_err();
    assert!(matches!(error, Error::CommandFailed { .. }), "{error:?}");
}

#[tokio::test]
async fn vulkan_auto_install_installs_the_whole_set() {
    let dir = tempfile::tempdir().unwrap();
    let include = tempfile::tempdir().unwrap();
    let lib = tempfile::tempdir().unwrap();
    let host = FakeHost::new().with("glslc", tool("/usr/bin/glslc"));
    let mut packages = provisioner_core::MockPackageManager::new();
    packages
        .expect_kind()
        .return_const(provisioner_core::ManagerKind::Apt);
    packages
        .expect_install_command()
        .return_const("sudo apt-get install -y glslc libvulkan-dev".to_string());
    let (include_dir, lib_dir) = (include.path().to_path_buf(), lib.path().to_path_buf());
    packages
        .expect_install()
        .withf(|requests| {
            let names: Vec<&str> = requests.iter().map(|r| r.name.as_str()).collect();
            names == ["glslc", "libvulkan-dev"]
        })
        .times(1)
        .returning(move |requests| {
            // What the packages put on disk.
            std::fs::create_dir_all(include_dir.join("vulkan")).unwrap();
            std::fs::write(include_dir.join("vulkan/vulkan.h"), "").unwrap();
            std::fs::write(lib_dir.join("libvulkan.so"), "").unwrap();
            Ok(requests
                .iter()
                .map(|r| provisioner_core::InstalledPackage {
                    name: r.name.to_string(),
                    version: "1".to_string(),
                    repository: None,
                })
                .collect())
        });
    let facts = HostFacts {
        include_dirs: vec![include.path().to_path_buf()],
        library_dirs: vec![lib.path().to_path_buf()],
        ..facts()
    };
    let b = builder(host.shell(), allow(), Arc::default(), facts).with_packages(Arc::new(packages));
    let mut spec = vulkan_spec(dir.path());
    spec.allow_package_installs = true;
    let error = b.ensure_built(&spec).await.unwrap_err();
    assert!(matches!(error, Error::CommandFailed { .. }), "{error:?}");
}
