//! A secret planted in every place a configuration can hold one (the pool's `env`, given or read
//! from orchctl's environment or a file, user-info and query values of URLs, llama-server's
//! `--api-key` in flags) never shows in what `orchctl` prints for any mode: `config check`,
//! `plan`, `prepare` (which fails here, at the first step that needs the network) and their
//! `--json` forms, with structured logs on. Nothing here needs a build or the network: every
//! URL points at a closed loopback port.

use std::path::Path;

use tests::orchctl;

const SECRET: &str = "Planted-Secret-7f3a9c";

/// The variable of orchctl's environment a pool reads the secret from (`from_env`).
const SECRET_VARIABLE: &str = "PLANTED_SECRET_VARIABLE";

/// One pool per mode, each holding the secret wherever its mode lets a config hold one (and
/// its own port, so that every plan is made: pools sharing a port fail the config check).
fn config(dir: &Path) -> String {
    let sum = "ab".repeat(32);
    let model = dir.join("tiny.gguf");
    std::fs::write(&model, tests::STUB_GGUF).unwrap();
    let model = model.display();
    let secret_file = dir.join("hf-token");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let secret_file = secret_file.display();
    format!(
        r#"pools:
  - id: source
    engine: llamacpp
    provisioning:
      mode: source
      source: {{ repo: "https://user:{SECRET}@127.0.0.1:9/llama.cpp.git?token={SECRET}", ref: b1 }}
      model: {{ ref: "file:{model}" }}
      ports: [18081]
      env: {{ HF_TOKEN: "{SECRET}", LLAMA_API_KEY: "{SECRET}" }}
  - id: binary
    engine: llamacpp
    provisioning:
      mode: binary
      binary: {{ url: "https://user:{SECRET}@127.0.0.1:9/llama.tar.gz?X-Amz-Signature={SECRET}", checksum: "sha256:{sum}" }}
      model: {{ ref: "https://user:{SECRET}@127.0.0.1:9/tiny.gguf?sig={SECRET}" }}
      ports: [18082]
      env: {{ HF_TOKEN: {{ from_env: {SECRET_VARIABLE} }} }}
      flags: [--api-key, "{SECRET}"]
  - id: package
    engine: llamacpp
    provisioning:
      mode: package
      package: {{ name: ep-llama-server, version: "1.0", repo: "deb [trusted=yes] http://user:{SECRET}@127.0.0.1:9/repo ./" }}
      model: {{ ref: "file:{model}" }}
      ports: [18083]
      env: {{ HF_TOKEN: {{ from_file: "{secret_file}" }} }}
      flags: ["--api-key={SECRET}"]
  - id: container
    engine: tgi
    provisioning:
      container: {{ image: "127.0.0.1:9/tgi", tag: "1" }}
      model: {{ ref: "file:{model}" }}
      ports: [18084]
      env: {{ HF_TOKEN: "{SECRET}" }}
  - id: container-llama
    engine: llamacpp
    provisioning:
      mode: container
      container: {{ image: "127.0.0.1:9/llama", tag: server-b1 }}
      model: {{ ref: "file:{model}" }}
      ports: [18085]
      flags: [--api-key, "{SECRET}"]
  - id: external
    engine: vllm
    provisioning:
      mode: external
      ports: [9]
      env: {{ HF_TOKEN: "{SECRET}" }}
"#
    )
}

#[test]
fn a_planted_secret_never_shows_in_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pools.yaml");
    std::fs::write(&config, config_text(dir.path())).unwrap();
    let cache = dir.path().join("cache");
    let config_arg = config.to_string_lossy().to_string();
    let mut runs = vec![vec!["config", "check", "--config", &config_arg]];
    for pool in [
        "source",
        "binary",
        "package",
        "container",
        "container-llama",
        "external",
    ] {
        for command in ["plan", "prepare", "status"] {
            for json in [false, true] {
                let mut args = vec!["engine", command, "--config", &config_arg, "--pool", pool];
                if json {
                    args.push("--json");
                }
                runs.push(args);
            }
        }
    }
    let mut outputs = 0;
    for args in &runs {
        let output = orchctl(&cache)
            .args(args)
            .env("LLAMA_ORCH_LOG", "debug")
            .env(SECRET_VARIABLE, SECRET)
            .output()
            .expect("orchctl runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !text.contains(SECRET),
            "`orchctl {}` showed the secret:\n{text}",
            args.join(" ")
        );
        assert!(
            !text.is_empty(),
            "`orchctl {}` printed nothing",
            args.join(" ")
        );
        outputs += 1;
    }
    assert_eq!(outputs, 37);
    // Whatever prepare left behind holds the secret only in the pool's private env or key file.
    for entry in walk(&cache) {
        let Ok(text) = std::fs::read_to_string(&entry) else {
            continue;
        };
        if text.contains(SECRET) {
            let name = entry.file_name().unwrap();
            assert!(name == "env" || name == "api-key", "{}", entry.display());
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", entry.display());
        }
    }
}

fn config_text(dir: &Path) -> String {
    config(dir)
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}
