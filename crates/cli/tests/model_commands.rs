//! `orchctl model pull|ls|verify|rm` against a loopback Hugging Face hub, and a pool that names
//! its model by the catalog digest.

use std::path::{Path, PathBuf};
use std::process::Command;

use adapters_model::fake_hub::{FakeFile, FakeHub, tiny_gguf};
use serde_json::Value;

struct Setup {
    _runtime: tokio::runtime::Runtime,
    hub: FakeHub,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let hub = runtime.block_on(FakeHub::start());
        Setup {
            _runtime: runtime,
            hub,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn hub_cache(&self) -> PathBuf {
        self.dir.path().join("hub")
    }

    fn models(&self) -> PathBuf {
        self.dir.path().join("models")
    }

    /// `orchctl` with this setup's cache, models directory and hub.
    #[allow(clippy::disallowed_methods)] // the test runs the binary itself
    fn orchctl(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_orchctl"))
            .args(["--cache-dir"])
            .arg(self.dir.path().join("cache"))
            .arg("--models-dir")
            .arg(self.models())
            .args(args)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HF_ENDPOINT", self.hub.endpoint())
            .env("HF_HUB_CACHE", self.hub_cache())
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    }

    fn config(&self, pool: &str, model: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{pool}.yaml"));
        std::fs::write(
            &path,
            format!(
                "pools:\n  - id: {pool}\n    engine: llamacpp\n    model: \"{model}\"\n    provisioning:\n      mode: binary\n      binary: {{ url: \"https://example.org/llama-b1-bin.zip\", checksum: \"sha256:{}\" }}\n",
                "ab".repeat(32)
            ),
        )
        .unwrap();
        path
    }

    fn hf_config(&self, pool: &str, reference: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{pool}.yaml"));
        std::fs::write(
            &path,
            format!(
                "pools:\n  - id: {pool}\n    engine: llamacpp\n    provisioning:\n      mode: binary\n      binary: {{ url: \"https://example.org/llama-b1-bin.zip\", checksum: \"sha256:{}\" }}\n      model: {{ ref: \"{reference}\" }}\n",
                "ab".repeat(32)
            ),
        )
        .unwrap();
        path
    }
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn pull_ls_verify_rm_round_trip() {
    let setup = Setup::new();
    let commit = setup.hub.publish(
        "tiny/tiny-llama",
        vec![FakeFile::lfs("tiny.gguf", tiny_gguf())],
    );
    let config = setup.hf_config("p", "hf:tiny/tiny-llama/tiny.gguf");

    let (code, stdout, stderr) = setup.orchctl(&["model", "pull", "--config", arg(&config)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("The model of pool p is staged at "),
        "{stdout}"
    );
    let snapshot = setup
        .hub_cache()
        .join("models--tiny--tiny-llama/snapshots")
        .join(&commit)
        .join("tiny.gguf");
    assert!(stdout.contains(arg(&snapshot)), "{stdout}");
    assert!(
        stdout.contains(&format!("revision:       {commit}")),
        "{stdout}"
    );

    // ls: aligned fields for people, the whole entry for machines.
    let (code, stdout, _) = setup.orchctl(&["model", "ls"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].ends_with("PATH"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("hf:tiny/tiny-llama/tiny.gguf@"),
        "{stdout}"
    );
    assert!(!stdout.contains('{'), "human output is no JSON: {stdout}");
    let (code, stdout, _) = setup.orchctl(&["model", "ls", "--json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    let entry = &listed["models"][0];
    assert_eq!(entry["revision"], commit.as_str());
    let id = entry["id"].as_str().unwrap().to_string();
    let digest = format!(
        "{}:{}",
        entry["digest"]["algo"].as_str().unwrap(),
        entry["digest"]["value"].as_str().unwrap()
    );

    // A second pull is a warm hit: no request reaches the hub.
    let before = setup.hub.requests().len();
    let (code, _, stderr) = setup.orchctl(&["model", "pull", "--config", arg(&config)]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        setup.hub.requests().len(),
        before,
        "a staged model needs no network"
    );

    // A pool may name the model by its catalog digest (llama-orch's `model: sha256:…`).
    let by_digest = setup.config("d", &digest);
    let (code, stdout, stderr) =
        setup.orchctl(&["model", "pull", "--json", "--config", arg(&by_digest)]);
    assert_eq!(code, 0, "{stderr}");
    let artifact: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(artifact["path"], arg(&snapshot));
    let unknown = setup.config("u", &format!("sha256:{}", "0".repeat(64)));
    let (code, _, stderr) = setup.orchctl(&["model", "pull", "--config", arg(&unknown)]);
    assert_eq!(code, 8, "{stderr}");
    assert!(
        stderr.contains("no staged model has this digest"),
        "{stderr}"
    );

    // verify: fine, then the blob is damaged and verify says which entry, exit 8.
    let (code, stdout, _) = setup.orchctl(&["model", "verify"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with(&format!("ok      {id}")), "{stdout}");
    let blob = std::fs::canonicalize(&snapshot).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] = b'X';
    std::fs::write(&blob, bytes).unwrap();
    let (code, stdout, stderr) = setup.orchctl(&["model", "verify", &id]);
    assert_eq!(code, 8, "{stdout}{stderr}");
    assert!(stdout.starts_with(&format!("FAILED  {id}")), "{stdout}");
    // With --json: one document on stdout, whatever failed.
    let (code, stdout, _) = setup.orchctl(&["model", "verify", "--json"]);
    assert_eq!(code, 8);
    let verified: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(verified["verified"][0]["ok"], false, "{stdout}");

    // rm: the entry and its blob go; an unknown id is a clear error.
    let (code, stdout, stderr) = setup.orchctl(&["model", "rm", &id]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with(&format!("Removed {id}")), "{stdout}");
    assert!(!blob.exists() && !snapshot.exists());
    let (code, stdout, _) = setup.orchctl(&["model", "ls"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("No models are staged yet"), "{stdout}");
    let (code, _, stderr) = setup.orchctl(&["model", "rm", &id]);
    assert_eq!(code, 8);
    // The hint is the command for this models directory, as pasted.
    let ls = format!(
        "orchctl --cache-dir {} --models-dir {} model ls",
        setup.dir.path().join("cache").display(),
        setup.models().display()
    );
    assert!(
        stderr.contains("no such model") && stderr.contains(&ls),
        "{stderr}"
    );
}

#[test]
fn a_failed_pull_stages_nothing_and_leaves_the_catalog_alone() {
    let setup = Setup::new();
    setup.hub.publish(
        "tiny/tiny-llama",
        vec![FakeFile::lfs("tiny.gguf", tiny_gguf())],
    );
    let missing = setup.hf_config("m", "hf:tiny/tiny-llama/absent.gguf");
    let (code, _, stderr) = setup.orchctl(&["model", "pull", "--config", arg(&missing)]);
    assert_eq!(code, 8, "{stderr}");
    assert!(stderr.contains("absent.gguf"), "{stderr}");
    assert!(
        !setup
            .hub_cache()
            .join("models--tiny--tiny-llama/snapshots")
            .exists()
    );
    let (_, stdout, _) = setup.orchctl(&["model", "ls", "--json"]);
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed["models"], serde_json::json!([]));
}

/// The hint of a model that `HF_HUB_OFFLINE` keeps from being staged names the exact pull
/// command, with this run's directories; pasted (without the variable) it stages the model.
#[test]
#[allow(clippy::disallowed_methods)] // the test runs the binary itself
fn the_offline_hint_pastes_into_a_pull_that_works() {
    let setup = Setup::new();
    setup.hub.publish(
        "tiny/tiny-llama",
        vec![FakeFile::lfs("tiny.gguf", tiny_gguf())],
    );
    let config = setup.hf_config("p", "hf:tiny/tiny-llama/tiny.gguf");
    let output = Command::new(env!("CARGO_BIN_EXE_orchctl"))
        .arg("--cache-dir")
        .arg(setup.dir.path().join("cache"))
        .arg("--models-dir")
        .arg(setup.models())
        .args(["model", "pull", "--config", arg(&config)])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", setup.hub.endpoint())
        .env("HF_HUB_CACHE", setup.hub_cache())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(8));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let hint = stderr
        .lines()
        .find_map(|line| line.strip_prefix("hint: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    let start = hint.find("orchctl ").unwrap();
    let end = hint[start..].find(')').map_or(hint.len(), |i| start + i);
    let words: Vec<&str> = hint[start..end].split(' ').collect();
    assert_eq!(
        &words[..5],
        [
            "orchctl",
            "--cache-dir",
            setup.dir.path().join("cache").to_str().unwrap(),
            "--models-dir",
            setup.models().to_str().unwrap()
        ],
        "{hint}"
    );
    let (code, stdout, stderr) = setup.orchctl(&words[5..]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("The model of pool p is staged at "),
        "{stdout}"
    );
}
