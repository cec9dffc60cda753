//! End-to-end tests with the real `HostShell`, real git and real cmake, against tiny git
//! repositories created in temporary directories and cloned through `file://` URLs, exactly as a
//! remote repository would be.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters_host::{HostShell, SystemClock, group_alive};
use adapters_source::{
    BUILDS_BUCKET, CmakeSourceBuilder, HostFacts, REF_INDEX_FILE, SourceBuildMetadata,
};
use provisioner_core::RecordingProgress as Recorder;
use provisioner_core::{
    Action, Backend, CommandSpec, Engine, Error, Policy, RecordingShell, Result, Shell,
    SourceBuildSpec, SourceBuilder,
};

/// A small C program built into `bin/`, optionally with a slow generated source (for the
/// cancellation test) and a file recording the `X` cache variable (for the quoting test).
const HELLO_CMAKE: &str = r#"cmake_minimum_required(VERSION 3.16)
project(hello C)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_executable(hello-server main.c)
if(DEFINED SLOW_FILE)
  add_custom_command(
    OUTPUT ${CMAKE_BINARY_DIR}/generated.c
    COMMAND sh ${CMAKE_SOURCE_DIR}/slow.sh ${SLOW_FILE} ${PID_FILE} ${CMAKE_BINARY_DIR}/generated.c
    VERBATIM)
  target_sources(hello-server PRIVATE ${CMAKE_BINARY_DIR}/generated.c)
endif()
if(DEFINED X)
  file(WRITE ${CMAKE_BINARY_DIR}/bin/x-value "${X}")
  file(CHMOD ${CMAKE_BINARY_DIR}/bin/x-value PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE)
endif()
"#;

/// Sleeps while `$1` exists (recording its pid in `$2` first), then writes the source `$3`.
const SLOW_SH: &str = r#"#!/bin/sh
if [ -e "$1" ]; then
  echo $$ > "$2.tmp" && mv "$2.tmp" "$2"
  sleep 30
fi
echo 'int generated(void) { return 42; }' > "$3"
"#;

fn main_c(greeting: &str) -> String {
    format!("#include <stdio.h>\nint main(void) {{ puts(\"{greeting}\"); return 0; }}\n")
}

struct AllowAll;

impl Policy for AllowAll {
    fn check(&self, _action: &Action) -> Result<()> {
        Ok(())
    }
}

/// The real shell, recording the processes it runs.
fn counting() -> Arc<RecordingShell> {
    Arc::new(RecordingShell::new(Arc::new(HostShell::new(Arc::new(
        Recorder::default(),
    )))))
}

/// A temporary directory with a git repository to build from and a cache to build into.
struct Fixture {
    temp: tempfile::TempDir,
    repo: PathBuf,
    url: String,
    cache: PathBuf,
    shell: HostShell,
}

impl Fixture {
    /// A repository holding `cmake` as CMakeLists.txt, committed on `main` and tagged `v1`.
    async fn new(cmake: &str) -> Fixture {
        let temp = tempfile::tempdir().unwrap();
        let repo = temp.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        let fixture = Fixture {
            url: format!("file://{}", repo.display()),
            cache: temp.path().join("cache"),
            repo,
            temp,
            shell: HostShell::new(Arc::new(Recorder::default())),
        };
        fixture
            .git(&["init", "--quiet", "--initial-branch=main"])
            .await;
        fixture.write("CMakeLists.txt", cmake);
        fixture.write("main.c", &main_c("hello v1"));
        fixture.write("slow.sh", SLOW_SH);
        fixture.commit("first").await;
        fixture.git(&["tag", "v1"]).await;
        fixture
    }

    fn path(&self, name: &str) -> PathBuf {
        self.temp.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.repo.join(name), text).unwrap();
    }

    async fn git(&self, args: &[&str]) -> String {
        let mut command = CommandSpec::new("git", args.iter().copied()).cwd(&self.repo);
        for (name, value) in [
            ("GIT_AUTHOR_NAME", "Test"),
            ("GIT_AUTHOR_EMAIL", "test@example.org"),
            ("GIT_COMMITTER_NAME", "Test"),
            ("GIT_COMMITTER_EMAIL", "test@example.org"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
        ] {
            command = command.env(name, value);
        }
        let output = self.shell.run(&command).await.unwrap();
        assert!(output.success(), "git {args:?}: {}", output.tail);
        output.stdout.trim().to_string()
    }

    async fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]).await;
        self.git(&["commit", "--quiet", "-m", message]).await;
        self.git(&["rev-parse", "HEAD"]).await
    }

    fn spec(&self, reference: &str) -> SourceBuildSpec {
        SourceBuildSpec {
            engine: Engine::Llamacpp,
            cache_dir: self.cache.clone(),
            repo: self.url.parse().unwrap(),
            reference: reference.parse().unwrap(),
            submodules: false,
            generator: None,
            cmake_flags: provisioner_core::CacheEntries::parse(["-DCMAKE_BUILD_TYPE=Release"])
                .unwrap(),
            renamed: Vec::new(),
            tree_rules: Vec::new(),
            fetches: Vec::new(),
            headers: Vec::new(),
            build_info: None,
            targets: vec!["hello-server".to_string()],
            artifacts: vec!["bin/hello-server".to_string()],
            backend: Backend::Cpu,
            allow_package_installs: false,
            flag_probe: None,
        }
    }

    fn builder(&self, shell: Arc<dyn Shell>) -> CmakeSourceBuilder {
        CmakeSourceBuilder::new(
            shell,
            Arc::new(AllowAll),
            Arc::new(Recorder::default()),
            Arc::new(SystemClock),
            HostFacts {
                jobs: 2,
                ..HostFacts::detect()
            },
        )
    }

    /// Runs an installed program and returns its standard output.
    async fn run_program(&self, program: &Path) -> String {
        let output = self
            .shell
            .run(&CommandSpec::new(
                &program.display().to_string(),
                Vec::<String>::new(),
            ))
            .await
            .unwrap();
        assert!(output.success(), "{}", output.tail);
        output.stdout.trim().to_string()
    }

    /// Entries of a cache subdirectory (none when it does not exist).
    fn entries(&self, subdir: &str) -> Vec<PathBuf> {
        std::fs::read_dir(self.cache.join(subdir))
            .map(|dir| dir.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_build_installs_and_the_warm_path_runs_no_process() {
    let fx = Fixture::new(HELLO_CMAKE).await;
    let spec = fx.spec("v1");
    let first = fx.builder(counting()).ensure_built(&spec).await.unwrap();
    assert!(!first.cache_hit);
    assert_eq!(first.commit, fx.git(&["rev-parse", "v1"]).await);
    assert_eq!(first.dir, fx.cache.join(BUILDS_BUCKET).join(&first.key));
    let program = first.dir.join("bin/hello-server");
    assert!(is_executable(&program));
    assert_eq!(fx.run_program(&program).await, "hello v1");

    let metadata: SourceBuildMetadata =
        serde_json::from_slice(&std::fs::read(&first.metadata_file).unwrap()).unwrap();
    assert_eq!(metadata.key, first.key);
    assert_eq!(metadata.commit, first.commit);
    assert_eq!(metadata.reference, "v1");
    assert_eq!(metadata.generator, "Unix Makefiles");
    assert_eq!(metadata.engine_version, first.engine_version);
    assert!(metadata.toolchain.contains_key("cmake") && metadata.toolchain.contains_key("cc"));
    let log = std::fs::read_to_string(&metadata.log).unwrap();
    assert!(log.contains("cmake --build"), "{log}");
    let index = std::fs::read_to_string(fx.cache.join(REF_INDEX_FILE)).unwrap();
    assert!(index.contains(&format!("{} v1", fx.url)), "{index}");
    assert!(fx.entries(".staging").is_empty());

    // A new builder (a new process, say) with a counting shell: a pure cache hit.
    let counting = counting();
    let builder = fx.builder(counting.clone());
    let started = Instant::now();
    let second = builder.ensure_built(&spec).await.unwrap();
    let elapsed = started.elapsed();
    assert!(second.cache_hit);
    assert_eq!(second.dir, first.dir);
    assert_eq!(second.key, first.key);
    assert_eq!(second.flags, first.flags);
    assert_eq!(counting.count(), 0, "the warm path ran a process");
    assert!(
        elapsed < Duration::from_secs(1),
        "warm path took {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_prepares_build_once() {
    let fx = Fixture::new(HELLO_CMAKE).await;
    let spec = fx.spec("v1");
    let a = fx.builder(counting());
    let b = fx.builder(counting());
    let (ra, rb) = tokio::join!(a.ensure_built(&spec), b.ensure_built(&spec));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.dir, rb.dir);
    assert_eq!(
        [ra.cache_hit, rb.cache_hit]
            .iter()
            .filter(|hit| **hit)
            .count(),
        1,
        "exactly one of them built"
    );
}

/// Refuses every fetch from a remote host, like `--offline`.
struct Offline;

impl Policy for Offline {
    fn check(&self, action: &Action) -> Result<()> {
        match action {
            Action::FetchSource { remote } if remote.remote_host().is_some() => {
                Err(Error::PolicyDenied {
                    action: format!("fetching source from {remote} (offline mode)"),
                    hint: Some("turn offline mode off".to_string()),
                })
            }
            _ => Ok(()),
        }
    }
}

/// A local repository whose `.gitmodules` names a remote submodule, under `--offline`: the
/// submodule URL is refused (exit 9, naming it and the submodule) before git contacts it.
#[tokio::test]
async fn a_submodule_on_a_remote_host_is_put_to_the_policy_before_git_runs() {
    let fx = Fixture::new(HELLO_CMAKE).await;
    fx.write(
        ".gitmodules",
        "[submodule \"ggml\"]\n\tpath = ggml\n\turl = https://github.com/ggml-org/ggml.git\n",
    );
    fx.commit("a submodule").await;
    fx.git(&["tag", "v2"]).await;
    let mut spec = fx.spec("v2");
    spec.submodules = true;
    let shell = counting();
    let builder = CmakeSourceBuilder::new(
        shell.clone(),
        Arc::new(Offline),
        Arc::new(Recorder::default()),
        Arc::new(SystemClock),
        HostFacts {
            jobs: 2,
            ..HostFacts::detect()
        },
    );
    let error = builder.ensure_built(&spec).await.unwrap_err();
    assert_eq!(error.code().exit_code(), 9, "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("https://github.com/ggml-org/ggml.git") && text.contains("submodule ggml"),
        "{text}"
    );
    let submodule_runs = shell
        .commands()
        .iter()
        .filter(|c| c.args.iter().any(|a| a == "submodule"))
        .count();
    assert_eq!(submodule_runs, 0, "git ran a submodule command");
    assert!(fx.entries(BUILDS_BUCKET).is_empty());
}

#[tokio::test]
async fn an_unknown_ref_is_a_source_error_naming_it() {
    let fx = Fixture::new(HELLO_CMAKE).await;
    let error = fx
        .builder(counting())
        .ensure_built(&fx.spec("no-such-ref"))
        .await
        .unwrap_err();
    match &error {
        Error::Source {
            reference, message, ..
        } => {
            assert_eq!(reference, "no-such-ref");
            assert!(message.contains("`no-such-ref`"), "{message}");
        }
        other => panic!("expected Error::Source, got {other:?}"),
    }
    assert!(error.hint().unwrap().contains("git ls-remote --tags"));
    assert!(fx.entries(BUILDS_BUCKET).is_empty());
}

#[tokio::test]
async fn an_unreachable_repository_is_a_source_error_and_leaves_nothing() {
    let fx = Fixture::new(HELLO_CMAKE).await;
    let mut spec = fx.spec("v1");
    spec.repo = "file:///nonexistent/repo.git".parse().unwrap();
    let error = fx
        .builder(counting())
        .ensure_built(&spec)
        .await
        .unwrap_err();
    match &error {
        Error::Source { repo, message, .. } => {
            assert_eq!(repo, "file:///nonexistent/repo.git");
            assert!(
                message.starts_with("cannot reach the repository: "),
                "{message}"
            );
            assert!(message.contains("fatal:"), "{message}");
        }
        other => panic!("expected Error::Source, got {other:?}"),
    }
    assert!(
        error
            .hint()
            .unwrap()
            .contains("git ls-remote file:///nonexistent/repo.git")
    );
    assert!(fx.entries(BUILDS_BUCKET).is_empty());
    assert!(fx.entries("git").is_empty(), "{:?}", fx.entries("git"));
}

#[tokio::test]
async fn a_configure_failure_reports_cmake_output_and_log_and_leaves_nothing() {
    let fx = Fixture::new(
        "cmake_minimum_required(VERSION 3.16)\nproject(broken C)\nmessage(FATAL_ERROR \"boom\")\n",
    )
    .await;
    let error = fx
        .builder(counting())
        .ensure_built(&fx.spec("v1"))
        .await
        .unwrap_err();
    let Error::CommandFailed { log, command, .. } = &error else {
        panic!("expected CommandFailed, got {error:?}");
    };
    let log = log.clone().unwrap();
    let message = error.to_string();
    assert!(message.contains("boom"), "{message}");
    assert!(message.contains(&log.display().to_string()), "{message}");
    assert!(command.starts_with("cmake -S "), "{command}");
    assert!(std::fs::read_to_string(&log).unwrap().contains("boom"));
    assert!(fx.entries(BUILDS_BUCKET).is_empty());
    assert!(
        fx.entries(".staging").is_empty(),
        "{:?}",
        fx.entries(".staging")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_that_moves_gives_a_new_build() {
    let fx = Fixture::new(HELLO_CMAKE).await;
    let builder = fx.builder(counting());
    let first = builder.ensure_built(&fx.spec("main")).await.unwrap();
    assert!(!first.cache_hit);

    fx.write("main.c", &main_c("hello v2"));
    let second_commit = fx.commit("second").await;
    let second = builder.ensure_built(&fx.spec("main")).await.unwrap();
    assert!(!second.cache_hit);
    assert_eq!(second.commit, second_commit);
    assert_ne!(second.key, first.key);
    assert_eq!(
        fx.run_program(&second.dir.join("bin/hello-server")).await,
        "hello v2"
    );
    assert_eq!(
        fx.run_program(&first.dir.join("bin/hello-server")).await,
        "hello v1"
    );

    // Unchanged branch: fetched again, but nothing to build.
    let again = builder.ensure_built(&fx.spec("main")).await.unwrap();
    assert!(again.cache_hit);
    assert_eq!(again.dir, second.dir);
    // The first commit pinned by full SHA is the first build, without any process.
    let counting = counting();
    let pinned = fx
        .builder(counting.clone())
        .ensure_built(&fx.spec(&first.commit.to_ascii_uppercase()))
        .await
        .unwrap();
    assert!(pinned.cache_hit);
    assert_eq!(pinned.dir, first.dir);
    assert_eq!(counting.count(), 0);
    // Branches are not recorded in the ref index.
    let index = std::fs::read_to_string(fx.cache.join(REF_INDEX_FILE)).unwrap_or_default();
    assert!(!index.contains(" main\""), "{index}");
}

#[tokio::test]
async fn shell_metacharacters_in_a_flag_reach_cmake_literally() {
    let fx = Fixture::new(HELLO_CMAKE).await;
    let pwned = fx.path("pwned");
    let pwned2 = fx.path("pwned2");
    let value = format!(
        "$(touch {});echo `touch {}` > {} && rm -rf {}/repo | true",
        pwned.display(),
        pwned2.display(),
        pwned2.display(),
        fx.temp.path().display()
    );
    let mut spec = fx.spec("v1");
    spec.cmake_flags
        .set(format!("-DX={value}").parse().unwrap());
    spec.artifacts.push("bin/x-value".to_string());
    let built = fx.builder(counting()).ensure_built(&spec).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(built.dir.join("bin/x-value")).unwrap(),
        value
    );
    assert!(built.flags.contains(&format!("-DX={value}")));
    assert!(!pwned.exists() && !pwned2.exists());
    assert!(fx.repo.join("CMakeLists.txt").exists());
}

/// A tree from before an option's rename declares only the old name: the flag the plan passes
/// under the successor reaches cmake under the old name, and the user is told.
#[tokio::test]
async fn a_tree_that_knows_only_the_old_option_name_gets_the_old_name() {
    let cmake = format!(
        "{HELLO_CMAKE}option(OLD_NATIVE \"old spelling\" ON)\n\
         file(WRITE ${{CMAKE_BINARY_DIR}}/bin/native \"${{OLD_NATIVE}}\")\n"
    );
    let fx = Fixture::new(&cmake).await;
    let mut spec = fx.spec("v1");
    spec.cmake_flags.set("-DNEW_NATIVE=OFF".parse().unwrap());
    spec.renamed = vec![provisioner_core::OptionRename {
        old: "OLD_NATIVE".to_string(),
        new: "NEW_NATIVE".to_string(),
    }];
    spec.artifacts.push("bin/native".to_string());
    let progress = Arc::new(Recorder::default());
    let builder = CmakeSourceBuilder::new(
        counting(),
        Arc::new(AllowAll),
        progress.clone(),
        Arc::new(SystemClock),
        HostFacts {
            jobs: 2,
            ..HostFacts::detect()
        },
    );
    let built = builder.ensure_built(&spec).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(built.dir.join("bin/native")).unwrap(),
        "OFF"
    );
    assert!(
        built.flags.contains(&"-DOLD_NATIVE=OFF".to_string()),
        "{:?}",
        built.flags
    );
    assert!(!built.flags.iter().any(|f| f.contains("NEW_NATIVE")));
    let notes = progress.notes();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("declares OLD_NATIVE but not NEW_NATIVE")),
        "{notes:?}"
    );
}

/// Pids of the processes of group `pgid` that are not zombies.
fn live_members(pgid: u32) -> Vec<(u32, String)> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let comm = head.split_once('(').map_or("", |(_, c)| c).to_string();
        if fields.len() > 2 && fields[0] != "Z" && fields[2].parse() == Ok(pgid) {
            members.push((pid, comm));
        }
    }
    members
}

fn pgid_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    rest.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_build_leaves_no_process_and_no_install() {
    let fx = Fixture::new(HELLO_CMAKE).await;
    let slow = fx.path("slow");
    let pid_file = fx.path("slow.pid");
    std::fs::write(&slow, "").unwrap();
    let mut spec = fx.spec("v1");
    spec.cmake_flags
        .set(format!("-DSLOW_FILE={}", slow.display()).parse().unwrap());
    spec.cmake_flags.set(
        format!("-DPID_FILE={}", pid_file.display())
            .parse()
            .unwrap(),
    );
    let builder = Arc::new(fx.builder(counting()));

    let task = tokio::spawn({
        let builder = builder.clone();
        let spec = spec.clone();
        async move { builder.ensure_built(&spec).await }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pid_file.exists() {
        assert!(
            Instant::now() < deadline,
            "the build never reached the slow step"
        );
        if task.is_finished() {
            panic!("the build ended early: {:?}", task.await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pgid = pgid_of(pid);
    assert_ne!(
        pgid,
        pgid_of(std::process::id()),
        "the build runs in its own group"
    );
    let logs = fx.entries("logs");
    assert_eq!(logs.len(), 1, "{logs:?}");
    let log = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(log.contains("cmake --build"), "{log}");
    assert!(
        live_members(pgid).iter().any(|(_, comm)| comm == "sleep"),
        "{:?}",
        live_members(pgid)
    );

    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let deadline = Instant::now() + Duration::from_secs(10);
    while group_alive(pgid) || !live_members(pgid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the build group survived: {:?}",
            live_members(pgid)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fx.entries(BUILDS_BUCKET).is_empty(),
        "{:?}",
        fx.entries(BUILDS_BUCKET)
    );
    assert!(
        fx.entries(".staging").is_empty(),
        "{:?}",
        fx.entries(".staging")
    );

    // Same spec (same key) without the sleep: builds cleanly.
    std::fs::remove_file(&slow).unwrap();
    let built = builder.ensure_built(&spec).await.unwrap();
    assert!(!built.cache_hit);
    assert_eq!(
        fx.run_program(&built.dir.join("bin/hello-server")).await,
        "hello v1"
    );
}

/// The real shell on a host whose PATH holds none of the build tools (no git, no cmake, no
/// compiler, no make): a host that only runs what was built elsewhere. `locate` searches
/// `path` (a directory the test controls) the way `HostShell` searches PATH; `run` refuses a
/// program that is not found there, as a spawn would fail, and records what it ran.
struct RunOnlyHost {
    path: PathBuf,
    inner: HostShell,
    ran: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Shell for RunOnlyHost {
    async fn run(&self, command: &CommandSpec) -> Result<provisioner_core::CommandOutput> {
        self.ran.lock().unwrap().push(command.display());
        if self.locate(&command.program).is_none() {
            return Err(Error::MissingTool {
                tool: command.program.clone(),
                purpose: format!("run `{}`", command.display()),
                searched: vec![self.path.clone()],
                hint: None,
            });
        }
        self.inner.run(command).await
    }

    fn locate(&self, program: &str) -> Option<provisioner_core::ToolInfo> {
        if program.contains('/') {
            return self.inspect(Path::new(program));
        }
        self.inspect(&self.path.join(program))
    }

    fn inspect(&self, path: &Path) -> Option<provisioner_core::ToolInfo> {
        self.inner.inspect(path)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_build_needs_no_build_tool_on_path() {
    let fx = Fixture::new(HELLO_CMAKE).await;
    let built = fx
        .builder(counting())
        .ensure_built(&fx.spec("v1"))
        .await
        .unwrap();
    assert!(!built.cache_hit);

    let empty = fx.path("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let host = Arc::new(RunOnlyHost {
        path: empty,
        inner: HostShell::new(Arc::new(Recorder::default())),
        ran: std::sync::Mutex::default(),
    });
    for tool in ["git", "cmake", "make", "cc"] {
        assert!(host.locate(tool).is_none(), "{tool} is on the test's PATH");
    }
    // By tag (from the ref index) and by full SHA: a cache hit, no process, no preflight error.
    for reference in ["v1", built.commit.as_str()] {
        let warm = fx
            .builder(host.clone())
            .ensure_built(&fx.spec(reference))
            .await
            .unwrap_or_else(|error| panic!("{reference}: {error} ({error:?})"));
        assert!(warm.cache_hit, "{reference}");
        assert_eq!(warm.dir, built.dir);
        assert_eq!(warm.engine_version, built.engine_version);
    }
    assert_eq!(*host.ran.lock().unwrap(), Vec::<String>::new());

    // What was never built still needs the tools: preflight names the first one missing.
    let mut other = fx.spec("v1");
    other.cmake_flags =
        provisioner_core::CacheEntries::parse(["-DCMAKE_BUILD_TYPE=Debug"]).unwrap();
    let error = fx
        .builder(host.clone())
        .ensure_built(&other)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::MissingTool { tool, .. } if tool == "git"),
        "{error:?}"
    );
    // A branch must be resolved with git: no build of an older commit is used blindly.
    let error = fx
        .builder(host.clone())
        .ensure_built(&fx.spec("main"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::MissingTool { .. }), "{error:?}");
    assert_eq!(*host.ran.lock().unwrap(), Vec::<String>::new());
}
