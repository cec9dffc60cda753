//! `orchctl` on bad input: each case gives a clear message, a documented exit code, and leaves
//! the cache empty. None of these needs a build.

use std::path::Path;

use tests::{Outcome, orchctl, run_orchctl as run};

fn with_config(text: &str, args: &[&str]) -> (Outcome, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pool.yaml");
    std::fs::write(&config, text).unwrap();
    let cache = dir.path().join("cache");
    let mut full: Vec<&str> = args.to_vec();
    let config_text = config.to_string_lossy().to_string();
    full.extend(["--config", &config_text]);
    let outcome = run(&cache, &full);
    assert!(
        !cache.join("llamacpp").exists(),
        "bad input created a build cache"
    );
    (outcome, dir)
}

const GOOD: &str = r#"pools:
  - id: p
    engine: llamacpp
    provisioning:
      mode: source
      source: { repo: "file:///nonexistent", ref: b1 }
      model: { ref: "file:/nonexistent.gguf" }
"#;

#[test]
fn malformed_yaml_is_exit_3_with_the_location() {
    let (out, _dir) = with_config("pools:\n  - id: [oops\n", &["engine", "plan"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot read configuration"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("line"), "{}", out.stderr);
}

#[test]
fn unknown_engine_is_exit_3_naming_field_and_choices() {
    let (out, _dir) = with_config(&GOOD.replace("llamacpp", "ollama"), &["engine", "prepare"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("pools[0].engine"), "{}", out.stderr);
    assert!(out.stderr.contains("`llamacpp`"), "{}", out.stderr);
}

#[test]
fn unknown_mode_is_exit_3() {
    let (out, _dir) = with_config(
        &GOOD.replace("mode: source", "mode: teleport"),
        &["engine", "prepare"],
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("pools[0].provisioning.mode"),
        "{}",
        out.stderr
    );
}

#[test]
fn missing_ref_is_exit_3_naming_the_field() {
    let (out, _dir) = with_config(&GOOD.replace(", ref: b1", ""), &["engine", "prepare"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("pools[0].provisioning.source.ref: required when source.repo is set"),
        "{}",
        out.stderr
    );
}

#[test]
fn unsupported_pair_is_exit_4_with_a_hint() {
    let text = r#"pools:
  - id: v
    engine: vllm
    provisioning:
      mode: binary
      binary: { url: "https://example.org/vllm.tar.gz", checksum: "sha256:0000000000000000000000000000000000000000000000000000000000000000" }
      model: { ref: "file:/m" }
"#;
    let (out, _dir) = with_config(text, &["engine", "plan"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("does not support provisioning mode `binary`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("hint: vLLM publishes no standalone binary; use mode: container"),
        "{}",
        out.stderr
    );
}

#[test]
fn json_errors_are_machine_readable() {
    let (out, _dir) = with_config(
        &GOOD.replace("llamacpp", "ollama"),
        &["engine", "plan", "--json"],
    );
    assert_eq!(out.code, 3);
    let value: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect(&out.stdout);
    assert_eq!(value["error"]["code"], "config");
}

/// `config check --json`: the pools when the file is good, every problem at its path when not
/// (the same `fields` every command's JSON error carries for an invalid configuration).
#[test]
fn config_check_speaks_json() {
    let (out, _dir) = with_config(GOOD, &["config", "check", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).expect(&out.stdout);
    assert_eq!(
        value,
        serde_json::json!({"ok": true, "pools": [{"id": "p", "engine": "llamacpp", "mode": "source"}]})
    );
    let bad = GOOD
        .replace("id: p", "id: no")
        .replace("ref: b1", "ref: b1, depth: 1");
    let (out, _dir) = with_config(&bad, &["config", "check", "--json"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let value: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect(&out.stdout);
    let fields = value["error"]["fields"].as_array().expect("fields");
    let paths: Vec<&str> = fields.iter().filter_map(|f| f["path"].as_str()).collect();
    assert_eq!(
        paths,
        ["pools[0].id", "pools[0].provisioning.source.depth"],
        "{value}"
    );
    assert!(
        fields[0]["message"]
            .as_str()
            .unwrap()
            .contains("quote the value"),
        "{value}"
    );
    // An empty pool list is a problem too.
    let (out, _dir) = with_config("pools: []\n", &["config", "check", "--json"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let value: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect(&out.stdout);
    assert_eq!(value["error"]["fields"][0]["path"], "pools", "{value}");
}

#[test]
fn a_missing_model_fails_before_fetching_anything() {
    let (out, dir) = with_config(GOOD, &["engine", "prepare"]);
    assert_eq!(out.code, 8, "{}", out.stderr);
    assert!(out.stderr.contains("/nonexistent.gguf"), "{}", out.stderr);
    assert!(!dir.path().join("cache").join("llamacpp").exists());
}

#[test]
fn plan_is_stable_json() {
    let (first, dir) = with_config(GOOD, &["engine", "plan", "--json"]);
    let config = dir.path().join("pool.yaml").to_string_lossy().to_string();
    let second = run(
        &dir.path().join("cache"),
        &["engine", "plan", "--json", "--config", &config],
    );
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.stdout, second.stdout);
    let a: serde_json::Value = serde_json::from_str(&first.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_str(&second.stdout).unwrap();
    assert_eq!(a["digest"], b["digest"]);
    assert_eq!(a["plan"]["steps"][2]["step"], "fetch_source");
}

#[test]
fn status_of_a_pool_that_never_ran_is_exit_12() {
    let (out, _dir) = with_config(GOOD, &["engine", "status", "--json"]);
    assert_eq!(out.code, 12, "{}", out.stderr);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(value["running"], false);
}

#[test]
fn schema_is_json_schema() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["config", "schema"]);
    assert_eq!(out.code, 0);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        value["$schema"]
            .as_str()
            .unwrap()
            .contains("json-schema.org")
    );
    assert!(out.stdout.contains("allow_package_installs"));
}

#[test]
fn offline_mode_refuses_a_remote_repository_with_exit_9() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    std::fs::write(&model, tests::STUB_GGUF).unwrap();
    let text = GOOD
        .replace(
            "file:///nonexistent",
            "https://github.com/ggml-org/llama.cpp.git",
        )
        .replace(
            "file:/nonexistent.gguf",
            &format!("file:{}", model.display()),
        );
    let config = dir.path().join("pool.yaml");
    std::fs::write(&config, text).unwrap();
    let cache = dir.path().join("cache");
    for value in ["1", "true", "yes"] {
        let output = orchctl(&cache)
            .env("LLAMA_ORCH_OFFLINE", value)
            .args(["engine", "prepare", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(9),
            "LLAMA_ORCH_OFFLINE={value}: {stderr}"
        );
        assert!(stderr.contains("offline mode"), "{stderr}");
        assert!(stderr.contains("hint: "), "{stderr}");
    }
    assert!(
        !cache.join("llamacpp/git").exists(),
        "offline mode fetched anyway"
    );
}

/// One pool that cannot be read does not hide another pool's problems; a mode the engine does
/// not offer is the problem named, not what that mode would have required; a key refused for
/// its value is not reported missing too.
#[test]
fn every_pool_is_checked_and_the_first_thing_to_fix_is_named() {
    let text = r#"pools:
  - id: a
    engine: vllm
    provisioning:
      mode: source
      model: { ref: "file:/m.gguf" }
  - id: b
    engine: ollama
    model: x.gguf
  - id: c
    engine: tgi
    provisioning:
      mode: binary
      model: { ref: "file:/m.gguf" }
"#;
    for command in [
        &["config", "check"][..],
        &["engine", "plan", "--pool", "c"][..],
    ] {
        let (out, _dir) = with_config(text, command);
        assert_eq!(out.code, 3, "{}", out.stderr);
        let stderr = &out.stderr;
        // `config check` plans every pool that reads well; `plan` of one pool reports the
        // problems reading the file found.
        assert_eq!(
            stderr.contains(
                "pools[0].provisioning.mode: engine `vllm` does not support provisioning mode `source`"
            ),
            command[0] == "config",
            "{command:?}: {stderr}"
        );
        assert!(
            stderr.contains("pools[1].engine: unknown variant `ollama`"),
            "{stderr}"
        );
        assert!(!stderr.contains("missing field `engine`"), "{stderr}");
        assert!(
            stderr.contains("pools[2].provisioning.mode: engine `tgi` does not support provisioning mode `binary`"),
            "{stderr}"
        );
        assert!(!stderr.contains("binary.url"), "{stderr}");
    }
}

/// A model named by a relative path may not climb out of the models directory, whether it is
/// written as `model.ref` or as the pool's `model` label.
#[test]
fn a_relative_model_path_may_not_leave_the_models_directory() {
    let text = "pools:\n  - id: a\n    engine: llamacpp\n    model: ../../etc/passwd\n  - id: b\n    engine: llamacpp\n    provisioning:\n      model: { ref: \"sub/../../x.gguf\" }\n";
    let (out, _dir) = with_config(text, &["config", "check"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    for field in [
        "pools[0].model: `../../etc/passwd`",
        "pools[1].provisioning.model.ref",
    ] {
        assert!(
            out.stderr.contains(field) && out.stderr.contains("climbs out of the models directory"),
            "{field}: {}",
            out.stderr
        );
    }
}

/// A local model that is not a usable GGUF file (not one at all, or of a version no reader
/// loads) is refused at prepare, naming the file, before anything is fetched or built.
#[test]
fn a_corrupt_local_model_is_refused_at_prepare_before_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mine.gguf");
    let mut version_9 = tests::STUB_GGUF.to_vec();
    version_9[4] = 9;
    for (bytes, said) in [
        (b"garbage-not-gguf".to_vec(), "magic `GGUF`"),
        (version_9, "version 9"),
        (tests::STUB_GGUF[..12].to_vec(), "GGUF"),
    ] {
        std::fs::write(&model, &bytes).unwrap();
        let text = GOOD.replace(
            "file:/nonexistent.gguf",
            &format!("file:{}", model.display()),
        );
        let (out, _dir) = with_config(&text, &["engine", "prepare"]);
        assert_eq!(out.code, 8, "{}", out.stderr);
        assert!(
            out.stderr
                .contains(&format!("{} is not a usable model", model.display())),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains(said), "{said}: {}", out.stderr);
        assert!(out.stderr.contains("hint: replace"), "{}", out.stderr);
    }
}

fn binary_config(dir: &Path, binary: &str, extra: &str) -> std::path::PathBuf {
    let model = dir.join("m.gguf");
    std::fs::write(&model, tests::STUB_GGUF).unwrap();
    let text = format!(
        "pools:\n  - id: b\n    engine: llamacpp\n    provisioning:\n      mode: binary\n{extra}      binary: {binary}\n      model: {{ ref: \"file:{}\" }}\n",
        model.display()
    );
    let config = dir.join("pool.yaml");
    std::fs::write(&config, text).unwrap();
    config
}

fn prepare(cache: &Path, config: &Path) -> Outcome {
    run(
        cache,
        &["engine", "prepare", "--config", &config.to_string_lossy()],
    )
}

/// A host file a native engine's flags name (`--chat-template-file`) that does not exist, or
/// is a directory, fails prepare at its flag before anything is downloaded; the engine would
/// otherwise fail at its start. A path the engine writes (`--log-file`, which a container would
/// refuse) does not stop the check.
#[test]
fn a_missing_host_file_in_the_flags_fails_prepare_at_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere/chat.jinja");
    for (path, said) in [
        (missing.clone(), "does not exist on this host"),
        (dir.path().to_path_buf(), "is a directory"),
    ] {
        let config = binary_config(
            dir.path(),
            r#"{ url: "https://example.org/llama.tar.gz", checksum: "sha256:0000000000000000000000000000000000000000000000000000000000000000" }"#,
            &format!(
                "      flags: [--jinja, --log-file, \"{}\", --chat-template-file, \"{}\"]\n",
                dir.path().join("engine.log").display(),
                path.display()
            ),
        );
        let cache = dir.path().join("cache");
        let out = prepare(&cache, &config);
        assert_eq!(out.code, 3, "{}", out.stderr);
        assert!(
            out.stderr.contains("pools[0].provisioning.flags[4]")
                && out.stderr.contains(said)
                && out.stderr.contains("the engine reads it when it starts"),
            "{}",
            out.stderr
        );
        assert!(!cache.join("llamacpp/bin").exists(), "it downloaded first");
    }
}

#[test]
fn an_unknown_checksum_format_is_exit_3_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = binary_config(
        dir.path(),
        r#"{ url: "https://example.org/l.zip", checksum: "md5:abcd" }"#,
        "",
    );
    let out = prepare(&dir.path().join("cache"), &config);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("pools[0].provisioning.binary.checksum"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("unknown checksum algorithm `md5`"),
        "{}",
        out.stderr
    );
}

#[test]
fn binary_downloads_switched_off_are_refused_with_the_config_key() {
    let dir = tempfile::tempdir().unwrap();
    let sum = "a".repeat(64);
    let binary = format!(r#"{{ url: "https://example.org/l.zip", checksum: "sha256:{sum}" }}"#);
    let config = binary_config(dir.path(), &binary, "      allow_binary_downloads: false\n");
    let cache = dir.path().join("cache");
    let out = prepare(&cache, &config);
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("hint: set provisioning.allow_binary_downloads: true"),
        "{}",
        out.stderr
    );
    assert!(
        !cache.join("llamacpp/bin/downloads").exists(),
        "something was downloaded"
    );
}

#[test]
fn a_download_without_a_checksum_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = binary_config(dir.path(), r#"{ url: "https://example.org/l.zip" }"#, "");
    let cache = dir.path().join("cache");
    let out = prepare(&cache, &config);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("pools[0].provisioning.binary.checksum: required for mode binary"),
        "{}",
        out.stderr
    );
}

#[test]
fn remote_plain_http_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let sum = "a".repeat(64);
    let binary = format!(r#"{{ url: "http://mirror.invalid/l.zip", checksum: "sha256:{sum}" }}"#);
    let config = binary_config(dir.path(), &binary, "");
    let out = prepare(&dir.path().join("cache"), &config);
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(
        out.stderr.contains("LLAMA_ORCH_ALLOW_HTTP"),
        "{}",
        out.stderr
    );
}

#[test]
fn structured_logs_carry_the_pool_and_the_error_class() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pool.yaml");
    std::fs::write(&config, GOOD).unwrap();
    let output = orchctl(&dir.path().join("cache"))
        .env("LLAMA_ORCH_LOG", "info")
        .env("LLAMA_ORCH_LOG_FORMAT", "json")
        .args(["engine", "prepare", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let event: serde_json::Value = stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .find(|v: &serde_json::Value| v["fields"]["message"] == "prepare failed")
        .unwrap_or_else(|| panic!("no JSON log event in: {stderr}"));
    assert_eq!(event["span"]["pool_id"], "p");
    assert_eq!(event["span"]["engine"], "llamacpp");
    assert_eq!(event["fields"]["code"], "Model");
}

#[test]
fn package_names_with_shell_characters_and_unpinned_versions_are_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let canary = dir.path().join("pwned");
    let text = format!(
        r#"pools:
  - id: p
    engine: llamacpp
    provisioning:
      mode: package
      allow_package_installs: true
      package: {{ name: "llama.cpp-tools; touch {canary}", manager: zypper }}
      model: {{ ref: "file:/nonexistent.gguf" }}
"#,
        canary = canary.display()
    );
    let (out, _dir) = with_config(&text, &["engine", "prepare"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    for field in [
        "provisioning.package.name",
        "provisioning.package.version",
        "provisioning.package.manager",
    ] {
        assert!(out.stderr.contains(field), "{field}: {}", out.stderr);
    }
    assert!(!canary.exists(), "a package name reached a shell");
}

#[test]
fn offline_mode_refuses_package_installs_from_the_systems_repositories() {
    // Any regular file passes for the model: the refusal comes before the engine would load it.
    let model = tests::repo_root().join("Cargo.toml");
    let text = format!(
        r#"pools:
  - id: p
    engine: llamacpp
    provisioning:
      mode: package
      allow_package_installs: true
      package: {{ name: ep-never-installed, version: "1.0.0", manager: apt }}
      model: {{ ref: "file:{}" }}
"#,
        model.display()
    );
    let (out, _dir) = with_config(&text, &["--offline", "engine", "prepare"]);
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(
        out.stderr.contains("offline mode") && out.stderr.contains("provisioning.package.repo"),
        "{}",
        out.stderr
    );
}

/// Two pools of one file that would both use a host port: Triton's gRPC and metrics ports are
/// fixed unless listed, llama.cpp pools without `ports` both take 8080.
const SHARED_PORTS: &str = r#"pools:
  - id: a
    engine: triton
    provisioning: { ports: [9000], model: { ref: "file:/nonexistent/models" } }
  - id: b
    engine: triton
    provisioning: { ports: [9100], model: { ref: "file:/nonexistent/models" } }
  - id: c
    engine: llamacpp
    provisioning: { mode: source, model: { ref: "file:/nonexistent.gguf" } }
  - id: d
    engine: llamacpp
    provisioning: { mode: source, model: { ref: "file:/nonexistent.gguf" } }
  - id: e
    engine: llamacpp
    provisioning: { mode: source, ports: [8085], model: { ref: "file:/nonexistent.gguf" } }
"#;

#[test]
fn config_check_names_both_pools_of_every_shared_resource_with_exit_3() {
    let (out, _dir) = with_config(SHARED_PORTS, &["config", "check"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    for expected in [
        "pools[1].provisioning.ports: host port 8001 (Triton's gRPC port, by default) is also published by pool \"a\" (pools[0]); give each pool its own ports",
        "pools[1].provisioning.ports: host port 8002 (Triton's metrics port, by default) is also published by pool \"a\" (pools[0])",
        "pools[3].provisioning.ports: host port 8080 (llama.cpp's HTTP port, by default) is also listened on by pool \"c\" (pools[2])",
    ] {
        assert!(out.stderr.contains(expected), "{expected}\n{}", out.stderr);
    }
    assert_eq!(out.stderr.matches("host port").count(), 3, "{}", out.stderr);
}

#[test]
fn plan_of_one_pool_still_counts_what_it_shares_with_another_pool() {
    let (out, _dir) = with_config(SHARED_PORTS, &["engine", "plan", "--pool", "a", "--json"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("pools[1].provisioning.ports"),
        "{}",
        out.stderr
    );
    let error: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    assert_eq!(error["error"]["code"], "config", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is also published by pool \"a\" (pools[0])"),
        "{error}"
    );
    // A pool that shares nothing plans.
    let (out, _dir) = with_config(SHARED_PORTS, &["engine", "plan", "--pool", "e"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// One pool per kind of contradiction between a pool and what the provisioner renders: every
/// engine's owned options, a positional model, an option that downloads, a pool field that
/// disagrees with its flag or that an engine cannot take, parallelism that does not fit the
/// devices, and a device mask in `env`.
const CONTRADICTIONS: &str = r#"pools:
  - id: vllm-model
    engine: vllm
    provisioning: { model: { ref: "file:/srv/m" }, ports: [9100], flags: [--model, other/model] }
  - id: vllm-positional
    engine: vllm
    provisioning: { model: { ref: "file:/srv/m" }, ports: [9101], flags: [other/model] }
  - id: tgi-port
    engine: tgi
    provisioning: { model: { ref: "file:/srv/m" }, ports: [9102], flags: [--port, "8080", --model-id, other] }
  - id: triton-port
    engine: triton
    provisioning: { model: { ref: "file:/srv/m" }, ports: [9103, 9104, 9105], flags: ["--http-port=9000"] }
  - id: llama-hub
    engine: llamacpp
    provisioning: { model: { ref: "file:/srv/m.gguf" }, ports: [9106], flags: [-hf, org/repo] }
  - id: vllm-ctx
    engine: vllm
    ctx: 4096
    provisioning: { model: { ref: "file:/srv/m" }, ports: [9107], flags: [--max-model-len, "8192"] }
  - id: triton-ctx
    engine: triton
    ctx: 4096
    provisioning: { model: { ref: "file:/srv/m" }, ports: [9108, 9109, 9110] }
  - id: vllm-tp
    engine: vllm
    devices: [0]
    provisioning: { model: { ref: "file:/srv/m" }, ports: [9111], flags: [--tensor-parallel-size, "4"] }
  - id: triton-devices
    engine: triton
    devices: [0, 1]
    provisioning: { model: { ref: "file:/srv/m" }, ports: [9112, 9113, 9114] }
  - id: tgi-mask
    engine: tgi
    devices: [1]
    provisioning: { model: { ref: "file:/srv/m" }, ports: [9115], env: { CUDA_VISIBLE_DEVICES: "1" } }
  - id: vllm-split
    engine: vllm
    devices: [0, 1]
    tensor_split: [3, 1]
    provisioning: { model: { ref: "file:/srv/m" }, ports: [9116] }
  - id: vllm-fine
    engine: vllm
    devices: [0, 1]
    ctx: 4096
    queue: { capacity: 8 }
    provisioning: { model: { ref: "file:/srv/m" }, ports: [9117], flags: [--max-model-len, "4096", --middleware, a.M, --middleware, b.M] }
"#;

#[test]
fn config_check_refuses_flags_fields_and_env_that_contradict_the_provisioner_with_exit_3() {
    let (out, _dir) = with_config(CONTRADICTIONS, &["config", "check"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    for expected in [
        "pools[0].provisioning.flags[0]: `--model other/model`: the provisioner passes the model it staged",
        "pools[1].provisioning.flags[0]: `other/model` is a positional argument",
        "pools[2].provisioning.flags[0]: `--port 8080` contradicts the provisioner's --port 80",
        "pools[2].provisioning.flags[2]: `--model-id other`: the provisioner passes the model it staged",
        "pools[3].provisioning.flags[0]: `--http-port=9000` contradicts the provisioner's --http-port 8000",
        "pools[4].provisioning.flags[0]: `-hf org/repo` makes the engine download a model from the Hugging Face Hub itself",
        "pools[5].provisioning.flags[0]: --max-model-len 8192 disagrees with the pool's ctx: 4096",
        "pools[6].ctx: Triton takes no context length",
        "pools[7].provisioning.flags[0]: tensor × pipeline × data parallel = 4 × 1 × 1 = 4 GPUs, but the pool has 1 device ([0])",
        "pools[8].devices: Triton runs here on one device",
        "pools[9].provisioning.env.CUDA_VISIBLE_DEVICES: CUDA_VISIBLE_DEVICES chooses the GPUs",
        "pools[10].tensor_split: vLLM splits the model evenly",
    ] {
        assert!(out.stderr.contains(expected), "{expected}\n{}", out.stderr);
    }
    assert!(!out.stderr.contains("pools[11]"), "{}", out.stderr);

    // The pool that says only what the provisioner renders plans, with the flags it derives.
    let (out, _dir) = with_config(
        CONTRADICTIONS,
        &["engine", "plan", "--pool", "vllm-fine", "--json"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON plan");
    let args: Vec<&str> = plan["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["step"] == "launch")
        .unwrap()["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let text = args.join(" ");
    for expected in [
        "--env HF_HUB_OFFLINE=1 --env TRANSFORMERS_OFFLINE=1",
        "--max-model-len 4096 --middleware a.M --middleware b.M --tensor-parallel-size 2",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
}
