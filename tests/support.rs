//! Shared helpers for the cross-crate tests: the offline fixtures, the `orchctl` binary, free
//! ports and a tiny HTTP client for loopback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub mod containers;
pub mod debs;

/// The fixtures made by `scripts/fixtures.sh`.
#[derive(Debug, Clone)]
pub struct Fixtures {
    /// `file://` URL of the local llama.cpp repository.
    pub repo_url: String,
    /// Tag to build.
    pub reference: String,
    /// Full commit the tag points at.
    pub commit: String,
    /// Path of the tiny GGUF model.
    pub model: PathBuf,
    /// An older llama.cpp tree (mid-2025, as llama-cpp-python 0.3.14 vendors it): `file://`
    /// URL, tag and commit.
    pub older_repo_url: String,
    /// Tag of the older tree.
    pub older_reference: String,
    /// Commit the older tag points at.
    pub older_commit: String,
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs `scripts/fixtures.sh` once per process (it is idempotent and fast when done).
pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        #[allow(clippy::disallowed_methods)] // test harness: runs the fixture script itself
        let output = Command::new("bash")
            .arg(repo_root().join("scripts/fixtures.sh"))
            .output()
            .expect("bash runs scripts/fixtures.sh");
        assert!(
            output.status.success(),
            "scripts/fixtures.sh failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let vars: BTreeMap<String, String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = |k: &str| {
            vars.get(k)
                .unwrap_or_else(|| panic!("fixtures.sh printed no {k}"))
                .clone()
        };
        Fixtures {
            repo_url: get("FIXTURE_REPO_URL"),
            reference: get("FIXTURE_REF"),
            commit: get("FIXTURE_COMMIT"),
            model: PathBuf::from(get("FIXTURE_MODEL")),
            older_repo_url: get("FIXTURE_OLDER_REPO_URL"),
            older_reference: get("FIXTURE_OLDER_REF"),
            older_commit: get("FIXTURE_OLDER_COMMIT"),
        }
    })
}

/// The persistent cache the real tests share, so the ~12 minute cold build happens once per
/// machine: `ENGINE_PROVISIONER_TEST_CACHE`, default `~/.cache/engine-provisioner/test-cache`.
pub fn shared_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("ENGINE_PROVISIONER_TEST_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/engine-provisioner/test-cache")
}

/// The `orchctl` binary built next to the test executable.
pub fn orchctl_path() -> PathBuf {
    // Test executables sit in target/<profile>/deps, benchmark binaries in target/<profile>.
    let exe = std::env::current_exe().expect("test executable path");
    let beside = exe.parent().expect("executable dir").join("orchctl");
    let path = if beside.exists() {
        beside
    } else {
        exe.parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps")
            .join("orchctl")
    };
    assert!(
        path.exists(),
        "{} is missing; build it first with `cargo build -p cli` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A command running `orchctl` with an isolated cache and models dir.
pub fn orchctl(cache: &Path) -> Command {
    #[allow(clippy::disallowed_methods)] // test harness: drives the real CLI binary
    let mut command = Command::new(orchctl_path());
    command
        .env("LLAMA_ORCH_CACHE_DIR", cache)
        .env("LLAMA_ORCH_MODELS_DIR", cache.join("models"));
    for name in CALLER_VARIABLES {
        command.env_remove(name);
    }
    command
}

/// Variables of whoever runs the tests that would change what an `orchctl` under test does (the
/// policy switches, the Hugging Face endpoint, token and offline switches): never inherited.
pub const CALLER_VARIABLES: &[&str] = &[
    "LLAMA_ORCH_OFFLINE",
    "LLAMA_ORCH_ALLOWED_HOSTS",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HUGGINGFACE_HUB_CACHE",
];

/// How an `orchctl` run ended and what it printed.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `orchctl ARGS` with an isolated cache.
pub fn run_orchctl(cache: &Path, args: &[&str]) -> Outcome {
    let output = orchctl(cache).args(args).output().expect("orchctl runs");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
    }
}

/// Runs `orchctl ARGS --json --config CONFIG`; returns the exit code, the JSON it printed (or
/// null) and its stderr.
pub fn orchctl_json(
    cache: &Path,
    args: &[&str],
    config: &Path,
) -> (i32, serde_json::Value, String) {
    let output = orchctl(cache)
        .args(args)
        .arg("--json")
        .arg("--config")
        .arg(config)
        .output()
        .expect("orchctl runs");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let value = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    (output.status.code().unwrap_or(-1), value, stderr)
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Writes a one-pool llama.cpp source config and returns its path.
pub fn write_source_config(
    dir: &Path,
    pool: &str,
    port: u16,
    cmake_flags: &[&str],
    flags: &[&str],
) -> PathBuf {
    let fixtures = fixtures();
    let quote = |items: &[&str]| {
        items
            .iter()
            .map(|s| serde_json::to_string(s).expect("string"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        r#"pools:
  - id: {pool}
    engine: llamacpp
    provisioning:
      mode: source
      source:
        repo: {repo}
        ref: {reference}
        build:
          cmake_flags: [{cmake}]
      model:
        ref: file:{model}
      ports: [{port}]
      flags: [{flags}]
"#,
        repo = fixtures.repo_url,
        reference = fixtures.reference,
        model = fixtures.model.display(),
        cmake = quote(cmake_flags),
        flags = quote(flags),
    );
    let path = dir.join(format!("{pool}.yaml"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// Prepares the shared source build of the fixture once per test process (a cache hit after the
/// first process on a machine) and returns the PreparedEngine JSON `orchctl` printed.
pub fn source_build() -> &'static serde_json::Value {
    static PREPARED: OnceLock<serde_json::Value> = OnceLock::new();
    PREPARED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let config =
            write_source_config(dir.path(), "e2e-main", free_port(), TEST_CMAKE_FLAGS, &[]);
        let output = orchctl(&shared_cache())
            .args(["engine", "prepare", "--json", "--config"])
            .arg(&config)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("orchctl runs");
        assert!(
            output.status.success(),
            "prepare failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        serde_json::from_slice(&output.stdout).expect("prepare --json prints JSON")
    })
}

/// The CMake flags the tests build llama.cpp with: portable and offline.
pub const TEST_CMAKE_FLAGS: &[&str] = &["-DGGML_NATIVE=OFF"];

/// GET a loopback URL; returns status and body.
pub fn http_get(url: &str) -> (u16, String) {
    let agent = agent();
    match agent.get(url).call() {
        Ok(mut response) => {
            let status = response.status().as_u16();
            (
                status,
                response.body_mut().read_to_string().unwrap_or_default(),
            )
        }
        Err(error) => panic!("GET {url}: {error}"),
    }
}

/// POST JSON to a loopback URL; returns status and the JSON body.
pub fn http_post_json(url: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let agent = agent();
    match agent.post(url).send_json(body) {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let value = response
                .body_mut()
                .read_json()
                .unwrap_or(serde_json::Value::Null);
            (status, value)
        }
        Err(error) => panic!("POST {url}: {error}"),
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into()
}

/// Serves a directory over plain HTTP on loopback (python's http.server: no Range support, which
/// is what a simple mirror looks like). Killed on drop.
pub struct LoopbackServer {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl LoopbackServer {
    /// Serves `dir`; waits until the port answers.
    pub fn start(dir: &Path) -> LoopbackServer {
        let port = free_port();
        #[allow(clippy::disallowed_methods)] // the test runs its own HTTP server
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the test HTTP server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        LoopbackServer { child, port }
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stand-in model for pools whose engine never reads it: the header of an empty GGUF file,
/// which passes the header check every local model gets.
pub const STUB_GGUF: &[u8] = &adapters_model::check::EMPTY_GGUF;

/// What the kill trials share (`tests/kill_trials.rs`, and the container ones in
/// `tests/e2e_container.rs`): how many, and where in a run the kill lands.
pub mod kill {
    /// Trials per kind: `KILL_TRIALS`, 6 by default (the quick form CI runs; the long form is
    /// `KILL_TRIALS=50`).
    pub fn trials() -> usize {
        std::env::var("KILL_TRIALS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(6)
    }

    /// A small deterministic generator (xorshift), seeded from the clock and printed, so that a
    /// failing run can be repeated with `KILL_SEED`.
    pub struct Random(u64);

    impl Random {
        /// Seeded from `KILL_SEED`, else the clock; the seed is printed.
        #[allow(clippy::print_stdout)] // the seed is printed so that a failing run can be repeated
        pub fn new() -> Random {
            let seed = std::env::var("KILL_SEED")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(7)
                        | 1
                });
            println!("KILL_SEED={seed}");
            Random(seed)
        }

        /// A number in `0..limit` (0 when `limit` is 0).
        pub fn below(&mut self, limit: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % limit.max(1)
        }
    }

    impl Default for Random {
        fn default() -> Random {
            Random::new()
        }
    }
}
