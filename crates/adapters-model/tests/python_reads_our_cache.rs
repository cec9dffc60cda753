//! The Python client (`huggingface_hub`, PyPI) reads what this crate staged, offline: proof that
//! the cache layout is shared. The interpreter is `$ENGINE_PROVISIONER_HF_PYTHON`, else the
//! fixtures' venv (`scripts/fixtures.sh`: `$ENGINE_PROVISIONER_FIXTURES/venv`, else
//! `~/.cache/engine-provisioner/fixtures/venv`), else `python3`; without the module the test
//! says why and passes, except under CI (`CI` set), where it fails.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use adapters_host::HostShell;
use provisioner_core::{CommandSpec, ModelProvisioner, NoProgress, Shell};
use support::*;

async fn python(shell: &HostShell) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(python) = std::env::var_os("ENGINE_PROVISIONER_HF_PYTHON") {
        candidates.push(PathBuf::from(python));
    }
    let fixtures = std::env::var_os("ENGINE_PROVISIONER_FIXTURES")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/engine-provisioner/fixtures"))
        });
    if let Some(fixtures) = fixtures {
        candidates.push(fixtures.join("venv/bin/python"));
    }
    candidates.push(PathBuf::from("python3"));
    for python in candidates {
        let check = CommandSpec::new(&python.to_string_lossy(), ["-c", "import huggingface_hub"]);
        if shell.run(&check).await.is_ok_and(|output| output.success()) {
            return Some(python);
        }
    }
    None
}

const SCRIPT: &str = r#"
import sys
from huggingface_hub import hf_hub_download, snapshot_download
repo, filename, revision = sys.argv[1], sys.argv[2], sys.argv[3]
print(hf_hub_download(repo_id=repo, filename=filename, revision=revision, local_files_only=True))
print(hf_hub_download(repo_id=repo, filename=filename, local_files_only=True))
print(snapshot_download(repo_id=repo, revision=revision, local_files_only=True))
"#;

#[tokio::test]
async fn hf_hub_download_finds_our_files_offline() {
    let shell = HostShell::new(Arc::new(NoProgress));
    let Some(python) = python(&shell).await else {
        let why = "no Python with huggingface_hub: pip install 'huggingface-hub==2.4.0' into the fixtures venv (scripts/fixtures.sh), or set ENGINE_PROVISIONER_HF_PYTHON";
        // CI installs it, so there a missing module is a failure; elsewhere the test says why.
        assert!(std::env::var_os("CI").is_none(), "{why}");
        #[allow(clippy::print_stderr)] // the one way to say why a test did nothing
        {
            eprintln!("skipped: {why}");
        }
        return;
    };
    let setup = Setup::new().await;
    let model = gguf_of(5000, 11);
    let commit = setup.hub.publish(
        "tiny/tiny-llama",
        vec![
            FakeFile::lfs("sub/tiny.gguf", model.clone()),
            FakeFile::regular("config.json", "{}"),
        ],
    );
    let models = setup.models(setup.settings());
    let artifact = models
        .ensure_present(&setup.request("hf:tiny/tiny-llama/sub/tiny.gguf"))
        .await
        .unwrap();
    models
        .ensure_present(&setup.request("hf:tiny/tiny-llama"))
        .await
        .unwrap();

    let home = setup.dir.path().join("home");
    let command = CommandSpec::new(
        &python.to_string_lossy(),
        ["-c", SCRIPT, "tiny/tiny-llama", "sub/tiny.gguf", &commit],
    )
    .inherit_only(["PATH"])
    .env("HOME", home.to_string_lossy())
    .env("HF_HUB_CACHE", setup.hub_cache().to_string_lossy())
    .env("HF_HUB_OFFLINE", "1")
    .env("HF_HUB_DISABLE_TELEMETRY", "1");
    let output = shell.run(&command).await.unwrap();
    let stdout = output.stdout.clone();
    assert!(
        output.success(),
        "stdout: {stdout}\noutput: {}",
        output.tail
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    // By commit, and by `main` through refs/main.
    assert_eq!(PathBuf::from(lines[0]), artifact.path);
    assert_eq!(PathBuf::from(lines[1]), artifact.path);
    assert_eq!(std::fs::read(lines[0]).unwrap(), model);
    assert_eq!(
        PathBuf::from(lines[2]),
        setup
            .repo_dir("tiny/tiny-llama")
            .join("snapshots")
            .join(&commit)
    );
}
