//! `orchctl engine prepare` of a binary-mode pool that asks for a GPU (`-ngl 99`) and gets a
//! server that shows none: `fake-engine` (adapters-host's stand-in server, installed from a
//! `file://` URL), whose `--version` names no llama.cpp build, so its backend is `unknown`.
//! Without `provisioning.allow_cpu_fallback` prepare fails with exit 7, saying what was asked,
//! what was found and the fix; with it, prepare goes ahead, prints the warning as a note and
//! records it in the `--json` metadata. A pool that asks for nothing is fine with `unknown`.
//! Needs `cargo build --bins` first (orchctl and fake-engine).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tests::{orchctl_path, run_orchctl};

fn fake_engine() -> PathBuf {
    let path = orchctl_path().with_file_name("fake-engine");
    assert!(
        path.exists(),
        "{} is missing; build it first with `cargo build --bins`",
        path.display()
    );
    path
}

fn write_config(dir: &Path, flags: &str, extra: &str) -> PathBuf {
    let engine = fake_engine();
    let checksum = hex::encode(Sha256::digest(std::fs::read(&engine).unwrap()));
    let model = dir.join("tiny.gguf");
    std::fs::write(&model, tests::STUB_GGUF).unwrap();
    let config = dir.join("pools.yaml");
    std::fs::write(
        &config,
        format!(
            r#"pools:
  - id: gpu
    engine: llamacpp
    devices: [0]
    provisioning:
      mode: binary
      binary: {{ url: "file://{}", checksum: "sha256:{checksum}" }}
      model: {{ ref: "file:{}" }}
      flags: [{flags}]
      {extra}
"#,
            engine.display(),
            model.display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn a_pool_asking_for_a_gpu_fails_unless_it_allows_the_cpu_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");

    let config = write_config(dir.path(), r#"--metrics, -ngl, "99""#, "");
    let config_arg = config.to_string_lossy().to_string();
    let refused = run_orchctl(&cache, &["engine", "prepare", "--json", "-c", &config_arg]);
    assert_eq!(refused.code, 7, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(
            "error: build check failed: the pool asks for a GPU backend (provisioning.flags[1]: -ngl 99), but the prebuilt server from file://"
        ) && refused.stderr.contains(
            "shows no GPU backend: found unknown (no ggml backend library among the installed files, and `llama-server --version` printed nothing that names a backend (`fake-engine (a stand-in server for tests)`))"
        ),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.lines().any(|line| line.starts_with("hint: ")
            && line.contains("provisioning.allow_cpu_fallback: true")),
        "{}",
        refused.stderr
    );
    let error: serde_json::Value = serde_json::from_str(&refused.stdout).unwrap();
    assert_eq!(error["error"]["code"], "build", "{error}");

    write_config(
        dir.path(),
        r#"--metrics, -ngl, "99""#,
        "allow_cpu_fallback: true",
    );
    let allowed = run_orchctl(&cache, &["engine", "prepare", "--json", "-c", &config_arg]);
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);
    let prepared: serde_json::Value = serde_json::from_str(&allowed.stdout).unwrap();
    assert_eq!(prepared["metadata"]["backend"], "unknown", "{prepared}");
    let warning = prepared["metadata"]["warnings"][0].as_str().unwrap();
    assert!(
        warning.ends_with("going ahead because provisioning.allow_cpu_fallback is true"),
        "{warning}"
    );
    assert!(
        allowed.stderr.contains(&format!("note: {warning}")),
        "{}",
        allowed.stderr
    );
    // The install was kept in the cache by the refused prepare: this one is a cache hit.
    assert_eq!(prepared["metadata"]["cache_hit"], true, "{prepared}");

    write_config(dir.path(), "--metrics", "");
    let plain = run_orchctl(&cache, &["engine", "prepare", "--json", "-c", &config_arg]);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    let prepared: serde_json::Value = serde_json::from_str(&plain.stdout).unwrap();
    assert_eq!(prepared["metadata"]["backend"], "unknown");
    assert_eq!(prepared["metadata"]["warnings"], serde_json::json!([]));
    assert_eq!(prepared["env"]["CUDA_VISIBLE_DEVICES"], "0");
}
