//! llama-orch's own configuration shapes through `orchctl`: a pool with no provisioning block
//! and a digest as its model, a `catalog` section, explicit nulls, `ports: [0]`, an external
//! pool, the design card's example. Nothing here builds or downloads.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tests::{LoopbackServer, Outcome, free_port, run_orchctl as run};

/// Runs a command line printed by orchctl (`orchctl …`, words shell-quoted by it), as pasted.
fn paste(cache: &Path, line: &str) -> Outcome {
    let words = shell_words(line);
    assert_eq!(words[0], "orchctl", "{line}");
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    run(cache, &args)
}

/// Splits a line the way a POSIX shell splits plain and single-quoted words.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                started = true;
            }
            ' ' if !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            _ => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("pools.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

const DESIGN_CARD: &str = r#"
pools:
  - id: local-llamacpp-gpu
    engine: llamacpp
    model: qwen2.5-0.5b-instruct-q4_k_m.gguf
    devices: [0]
    provisioning:
      mode: source
      allow_package_installs: true
      source:
        repo: https://github.com/ggml-org/llama.cpp.git
        ref: 703f9e3
        submodules: true
        build:
          cmake_flags: [-DCMAKE_BUILD_TYPE=Release, -DLLAMA_BUILD_SERVER=ON, -DGGML_CUDA=ON,
                        -DCMAKE_CUDA_ARCHITECTURES=86]
      model:
        ref: hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf
      ports: [8080]
      env: {}
      flags: [--metrics, --no-webui, --parallel, "1", --no-cont-batching, --n-gpu-layers, "99"]
"#;

fn llama_orch_file(external_port: u16) -> String {
    format!(
        r#"catalog:
  trust_policy: {{ require_signatures: false }}
{}  - id: minimal
    engine: llamacpp
    model: sha256:0123abcd
    devices: [0]
  - id: nulls
    engine: vllm
    model: Qwen/Qwen2.5-0.5B-Instruct
    devices: [0]
    quant: null
    ctx: null
    queue: {{ capacity: 8 }}
    admission: {{ policy: reject }}
    timeouts: {{ first_token_ms: 1000 }}
    preload: true
    sampler_profile_version: v1
    require_same_engine_version: true
    provisioning:
      mode: null
      allow_package_installs: null
      source: null
      container: {{ image: null, tag: null }}
      model: {{ ref: "file:/srv/models/Qwen2.5-0.5B-Instruct" }}
      ports: [0]
      env: null
      flags: null
  - id: attached
    engine: tgi
    model: tgi-model
    devices: [0]
    provisioning: {{ mode: external, ports: [{external_port}] }}
"#,
        // Two llama.cpp pools of one file need their own ports: `minimal` takes the default,
        // 8080, so the design card's pool moves (`config check` refuses the pair otherwise).
        DESIGN_CARD.replace("ports: [8080]", "ports: [8081]")
    )
}

#[test]
fn llama_orch_files_check_and_plan_for_every_pool() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let config = write(dir.path(), &llama_orch_file(free_port()));
    let config = config.to_str().unwrap();

    let check = run(&cache, &["config", "check", "--config", config]);
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert_eq!(
        check.stdout.trim(),
        "ok: 4 pools: local-llamacpp-gpu, minimal, nulls, attached"
    );
    assert!(
        check
            .stderr
            .contains("the `catalog` section belongs to other llama-orch components"),
        "{}",
        check.stderr
    );

    // The design card: an hf: model is staged at prepare; the plan is sentences.
    let plan = run(
        &cache,
        &[
            "engine",
            "plan",
            "--config",
            config,
            "--pool",
            "local-llamacpp-gpu",
        ],
    );
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout
            .starts_with("Plan for pool local-llamacpp-gpu (llama.cpp in source mode), digest "),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("Stage the model hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf (a hf: reference, resolved at prepare)."), "{}", plan.stdout);
    assert!(
        plan.stdout
            .contains("(commit resolved at prepare), with its submodules."),
        "{}",
        plan.stdout
    );
    assert!(
        !plan.stdout.contains('{') || plan.stdout.contains("{install_dir}"),
        "no JSON lines: {}",
        plan.stdout
    );

    // No provisioning block: source mode, the pinned release, the model id looked up by name.
    let plan = run(
        &cache,
        &["engine", "plan", "--config", config, "--pool", "minimal"],
    );
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout.contains("(llama.cpp in source mode)"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("Fetch https://github.com/ggml-org/llama.cpp.git at b11312"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("Look up the model `sha256:0123abcd` by its digest in the catalog of"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("note: source.ref is not set: building llama.cpp's pinned release b11312"),
        "{}",
        plan.stdout
    );

    // Nulls everywhere, no mode: container mode with the pinned image, a free port.
    let plan = run(
        &cache,
        &[
            "engine", "plan", "--json", "--config", config, "--pool", "nulls",
        ],
    );
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let json: Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(json["plan"]["mode"], "container");
    let steps = json["plan"]["steps"].as_array().unwrap();
    let pull = steps.iter().find(|s| s["step"] == "pull_image").unwrap();
    assert_eq!(pull["image"], "docker.io/vllm/vllm-openai");
    assert_eq!(pull["tag"], "v0.12.0");
    let launch = steps.iter().find(|s| s["step"] == "launch").unwrap();
    assert_eq!(launch["ports"], serde_json::json!([0]));
    let args: Vec<&str> = launch["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--publish", "127.0.0.1::8000"]),
        "{args:?}"
    );
    assert!(args.windows(2).any(|w| w == ["--mount", "type=bind,source=/srv/models/Qwen2.5-0.5B-Instruct,target=/models/Qwen2.5-0.5B-Instruct,readonly"]), "{args:?}");
}

/// The design card's pool names its model on the Hugging Face Hub: it plans without the
/// network, and a prepare under `HF_HUB_OFFLINE=1` with nothing staged says so (exit 8) and
/// contacts nothing. (`tests/e2e_hf.rs` runs such a pool end to end against a loopback hub.)
#[test]
fn the_design_cards_hub_model_plans_and_needs_staging_when_offline() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let config = write(dir.path(), DESIGN_CARD);
    let config = config.to_str().unwrap();
    let plan = run(&cache, &["engine", "plan", "--config", config]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let output = tests::orchctl(&cache)
        .args(["engine", "prepare", "--config", config])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", dir.path().join("hub"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(8), "{stderr}");
    assert!(
        stderr.contains("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF") && stderr.contains("HF_HUB_OFFLINE"),
        "{stderr}"
    );
    assert!(
        !dir.path()
            .join("hub")
            .join("models--Qwen--Qwen2.5-0.5B-Instruct-GGUF/snapshots")
            .exists()
    );
}

#[test]
fn an_external_pool_attaches_and_is_probed_never_started() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("health"), "ok").unwrap();
    let server = LoopbackServer::start(&www);
    let cache = dir.path().join("cache");
    let config = write(dir.path(), &llama_orch_file(server.port));
    let config = config.to_str().unwrap();

    let prepare = run(
        &cache,
        &[
            "engine", "prepare", "--json", "--config", config, "--pool", "attached",
        ],
    );
    assert_eq!(prepare.code, 0, "{}", prepare.stderr);
    let prepared: Value = serde_json::from_str(&prepare.stdout).unwrap();
    assert_eq!(prepared["bin"], Value::Null);
    assert_eq!(prepared["args"], serde_json::json!([]));
    assert_eq!(prepared["engine_version"], "tgi-external");
    assert_eq!(prepared["metadata"]["readiness"]["port"], server.port);

    let status = run(
        &cache,
        &[
            "engine", "status", "--json", "--config", config, "--pool", "attached",
        ],
    );
    assert_eq!(status.code, 0, "{}", status.stderr);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["ready"], true);

    for command in ["up", "down"] {
        let refused = run(
            &cache,
            &["engine", command, "--config", config, "--pool", "attached"],
        );
        assert_eq!(refused.code, 4, "{}", refused.stderr);
        assert!(
            refused.stderr.contains("is external (mode: external)"),
            "{}",
            refused.stderr
        );
        let hint = refused
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("hint: probe it with: "))
            .expect("a hint with the command");
        let pasted = paste(&cache, hint);
        assert_eq!(pasted.code, 0, "`{hint}`: {}", pasted.stderr);
    }
    drop(server);
    let status = run(
        &cache,
        &["engine", "status", "--config", config, "--pool", "attached"],
    );
    assert_eq!(status.code, 12, "{}", status.stderr);
}

#[test]
fn an_unknown_section_and_a_free_port_on_an_external_pool_are_refused_with_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let text = r#"
pool:
  - id: a
pools:
  - id: ext
    engine: vllm
    model: m
    provisioning: { mode: external, ports: [0] }
"#;
    let config = write(dir.path(), text);
    let check = run(
        &cache,
        &["config", "check", "--config", config.to_str().unwrap()],
    );
    assert_eq!(check.code, 3, "{}", check.stderr);
    assert!(
        check
            .stderr
            .contains("pool: unknown top-level section `pool`; did you mean `pools`?"),
        "{}",
        check.stderr
    );
    assert!(
        check
            .stderr
            .contains("pools[0].provisioning.ports[0]: an external engine listens on a known port"),
        "{}",
        check.stderr
    );
}

#[test]
fn many_pools_are_listed_as_five_and_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut text = "pools:\n".to_string();
    for index in 0..12 {
        text.push_str(&format!(
            "  - {{ id: p{index}, engine: vllm, model: m, provisioning: {{ mode: external }} }}\n"
        ));
    }
    let config = write(dir.path(), &text);
    let plan = run(
        &cache,
        &[
            "engine",
            "plan",
            "--config",
            config.to_str().unwrap(),
            "--pool",
            "nope",
        ],
    );
    assert_eq!(plan.code, 3, "{}", plan.stderr);
    assert!(
        plan.stderr
            .contains("(pools: p0, p1, p2, p3, p4 and 7 more)"),
        "{}",
        plan.stderr
    );
}
