//! Secrets in `orchctl`'s environment never reach the programs it starts: a binary-mode install
//! from a `file://` URL whose stand-in `llama-server` writes its environment to a file each time
//! it runs (`--version`, then `--help` for the options prepare probes), with
//! `AWS_SECRET_ACCESS_KEY`, `HF_TOKEN`, `GITHUB_TOKEN` and others planted in orchctl's
//! environment. The stand-in gets the base variables (PATH, HOME, the locale) and nothing else.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const SECRETS: [(&str, &str); 6] = [
    ("AWS_SECRET_ACCESS_KEY", "planted-aws-9f3c"),
    ("AWS_ACCESS_KEY_ID", "AKIAPLANTED"),
    ("HF_TOKEN", "hf_plantedTokenValue"),
    ("GITHUB_TOKEN", "ghp_plantedGithubValue"),
    ("SOME_PASSWORD", "planted-password-77"),
    ("LLAMA_ORCH_REGISTRY_PASSWORD", "planted-registry-pw"),
];

/// The stand-in server: records its environment in `<dir>/env<first argument>`, answers
/// `--version` as llama-server does and `--help` with the options it knows.
fn stand_in(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("llama-server");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nenv > '{}/env'\"$1\"\ncase \"$1\" in\n  --version) echo 'version: 4242 (abc1234)'; echo 'built with cc for x86_64-linux-gnu' ;;\n  --help) echo 'usage: llama-server [options]'; echo '--offline   offline mode' ;;\nesac\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[allow(clippy::disallowed_methods)] // sha256sum of the stand-in, for the pool's checksum
fn sha256(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(output.status.success(), "sha256sum runs");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
#[allow(clippy::disallowed_methods)] // the test runs the binary itself
fn planted_secrets_never_reach_the_installed_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = stand_in(dir.path());
    let model = dir.path().join("tiny.gguf");
    std::fs::write(&model, adapters_model::check::EMPTY_GGUF).unwrap();
    let config = dir.path().join("pools.yaml");
    std::fs::write(
        &config,
        format!(
            r#"pools:
  - id: planted
    engine: llamacpp
    provisioning:
      mode: binary
      binary: {{ url: "file://{}", checksum: "sha256:{}" }}
      model: {{ ref: "file:{}" }}
"#,
            server.display(),
            sha256(&server),
            model.display()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_orchctl"))
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .arg("--models-dir")
        .arg(dir.path().join("models"))
        .args(["engine", "prepare", "--json", "--config"])
        .arg(&config)
        .env_clear()
        .env("HOME", dir.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LANG", "C.UTF-8")
        .envs(SECRETS)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");

    for run in ["--version", "--help"] {
        let dump = dir.path().join(format!("env{run}"));
        let env = std::fs::read_to_string(&dump)
            .unwrap_or_else(|e| panic!("the stand-in's {run} left no {}: {e}", dump.display()));
        for (name, value) in SECRETS {
            assert!(
                !env.contains(name) && !env.contains(value),
                "{name} reached `llama-server {run}`:\n{env}"
            );
        }
        let names: Vec<&str> = env
            .lines()
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .collect();
        for name in ["PATH", "HOME", "LANG"] {
            assert!(names.contains(&name), "{name} missing in {run}: {names:?}");
        }
        for name in &names {
            // The shell running the script sets PWD, SHLVL and `_` itself; the installer sets
            // LD_LIBRARY_PATH for a server's shipped libraries.
            assert!(
                provisioner_core::environment::allows(provisioner_core::BASE_ENV, name)
                    || ["PWD", "OLDPWD", "SHLVL", "_", "LD_LIBRARY_PATH"].contains(name),
                "{name} reached `llama-server {run}`"
            );
        }
    }
}
