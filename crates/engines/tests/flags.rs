//! What the provisioner owns on an engine's command line, for every engine alike: options the
//! recipe renders (model, address, ports), options that repeat, options that download, the
//! pool fields each engine maps or refuses, parallelism against `devices`, and the device
//! masks and offline switches in `env`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use engines::Provisioner;
use provisioner_core::{
    Config, EngineProvisioner, Format, Layout, MockModelProvisioner, NoProgress, NothingKnown,
    PoolConfig, PoolId, Ports, Result, RunFiles, Secret, Step,
};

struct RunDir;

#[async_trait]
impl RunFiles for RunDir {
    fn path(&self, pool: &PoolId, name: &str) -> PathBuf {
        Path::new("/run/llama-orch").join(pool.as_str()).join(name)
    }

    async fn write_private(&self, pool: &PoolId, name: &str, _: &Secret) -> Result<PathBuf> {
        Ok(self.path(pool, name))
    }
}

fn provisioner() -> Provisioner {
    let ports = Ports {
        models: Arc::new(MockModelProvisioner::new()),
        source_builder: None,
        binaries: None,
        packages: None,
        containers: None,
        run_files: Arc::new(RunDir),
        known: Arc::new(NothingKnown),
        progress: Arc::new(NoProgress),
    };
    Provisioner::new(ports, Layout::under_home(Path::new("/home/user")))
}

/// A pool of `engine` with the pool-level `fields` (YAML lines without indentation, `; `
/// separated) and `provisioning` keys (a YAML flow mapping's inside).
fn pool(engine: &str, fields: &str, provisioning: &str) -> PoolConfig {
    let fields: String = fields
        .split("; ")
        .filter(|f| !f.is_empty())
        .map(|f| format!("    {f}\n"))
        .collect();
    let text = format!(
        r#"
pools:
  - id: p
    engine: {engine}
{fields}    provisioning: {{ model: {{ ref: "file:/srv/models/m" }}{sep}{provisioning} }}
"#,
        sep = if provisioning.is_empty() { "" } else { ", " }
    );
    Config::parse(&text, Format::Yaml, "p.yaml")
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .pools[0]
        .clone()
}

fn error(pool: &PoolConfig) -> String {
    match provisioner().plan(pool) {
        Ok(plan) => panic!("planned, expected an error: {plan:?}"),
        Err(error) => error.to_string(),
    }
}

/// The launch step's argv (for a container, the `run` argv; the server's part follows the
/// image reference).
fn launch(pool: &PoolConfig) -> Vec<String> {
    let plan = provisioner()
        .plan(pool)
        .unwrap_or_else(|e| panic!("{e}: {pool:?}"));
    plan.steps
        .iter()
        .find_map(|step| match step {
            Step::Launch { args, .. } => Some(args.clone()),
            _ => None,
        })
        .expect("a launch step")
}

/// The server's arguments in a container's `run` argv: what follows the image reference.
fn server(pool: &PoolConfig) -> Vec<String> {
    let args = launch(pool);
    let at = args
        .iter()
        .position(|a| a.contains("@{digest}"))
        .expect("an image reference");
    args[at + 1..].to_vec()
}

fn has(args: &[String], words: &[&str]) -> bool {
    args.windows(words.len()).any(|w| w == words)
}

fn expect_error(pool: &PoolConfig, expected: &[&str]) {
    let error = error(pool);
    for part in expected {
        assert!(error.contains(part), "`{part}` not in: {error}");
    }
}

/// Every problem with the flags is reported at once, in the order of the flags, not one per
/// `config check`.
#[test]
fn every_flag_problem_is_reported_at_once_in_flag_order() {
    let llama = pool(
        "llamacpp",
        "ctx: 4096",
        r#"flags: [--port, "9999", -hf, org/repo, --host, 0.0.0.0, --ctx-size, "2048"]"#,
    );
    let first = error(&llama);
    let lines: Vec<&str> = first.lines().skip(1).map(str::trim).collect();
    let at: Vec<&str> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("- pools[0].provisioning.flags["))
        .filter_map(|rest| rest.split(']').next())
        .collect();
    assert_eq!(at, ["0", "2", "4", "6"], "{first}");
    assert!(first.contains("the default port 8080"), "{first}");

    let vllm = pool(
        "vllm",
        "",
        r#"mode: container, flags: [--host, 1.2.3.4, --revision, main]"#,
    );
    let refused = error(&vllm);
    assert!(
        refused.contains("flags[0]") && refused.contains("flags[2]"),
        "{refused}"
    );

    // Pool keys an engine cannot take come with the flag problems, not one per run.
    let triton = pool(
        "triton",
        "ctx: 4096; tensor_split: [1, 1]; devices: [0, 1]",
        r#"mode: container, flags: [--http-port, "9000"]"#,
    );
    let refused = error(&triton);
    for field in [
        "pools[0].ctx",
        "pools[0].tensor_split",
        "pools[0].devices",
        "flags[0]",
    ] {
        assert!(refused.contains(field), "{field}: {refused}");
    }
}

#[test]
fn options_the_recipe_renders_are_refused_for_every_engine() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "vllm",
            r#"flags: [--model, other/model]"#,
            &[
                "pools[0].provisioning.flags[0]: `--model other/model`",
                "provisioning.model.ref",
            ],
        ),
        (
            "vllm",
            r#"flags: [other/model, --enforce-eager]"#,
            &["provisioning.flags[0]: `other/model` is a positional argument"],
        ),
        (
            "vllm",
            r#"flags: [--enforce-eager, other/model]"#,
            &["provisioning.flags[1]: `other/model` is a positional argument"],
        ),
        (
            "vllm",
            r#"flags: [--port, "9000"]"#,
            &[
                "provisioning.flags[0]: `--port 9000` contradicts the provisioner's --port 8000",
                "provisioning.ports",
            ],
        ),
        (
            "vllm",
            r#"flags: [--por, "9000"]"#,
            &["provisioning.flags[0]: `--por 9000`: the engine reads --por as --port"],
        ),
        (
            "vllm",
            r#"flags: ["--host=127.0.0.1"]"#,
            &[
                "provisioning.flags[0]: `--host=127.0.0.1` contradicts the provisioner's --host 0.0.0.0",
            ],
        ),
        (
            "vllm",
            r#"flags: [--uds, /tmp/v.sock]"#,
            &["`--uds /tmp/v.sock`: a Unix socket"],
        ),
        (
            "vllm",
            r#"flags: [--config, /etc/vllm.yaml]"#,
            &["`--config /etc/vllm.yaml`: vLLM would read options from that YAML file"],
        ),
        (
            "tgi",
            r#"flags: [--port, "8080", --model-id, other]"#,
            &[
                "provisioning.flags[0]: `--port 8080` contradicts the provisioner's --port 80",
                "provisioning.flags[2]: `--model-id other`",
            ],
        ),
        (
            "tgi",
            r#"flags: [-p9000]"#,
            &["provisioning.flags[0]: `-p9000` contradicts the provisioner's --port 80"],
        ),
        (
            "tgi",
            r#"flags: [--hostname, 10.0.0.1]"#,
            &["`--hostname 10.0.0.1` contradicts the provisioner's --hostname 0.0.0.0"],
        ),
        (
            "tgi",
            r#"flags: [--ngrok]"#,
            &["`--ngrok`: it opens a public tunnel"],
        ),
        (
            "triton",
            r#"flags: ["--http-port=9000", "--model-repository=/elsewhere"]"#,
            &[
                "provisioning.flags[0]: `--http-port=9000`",
                "provisioning.flags[1]: `--model-repository=/elsewhere`",
            ],
        ),
        (
            "triton",
            r#"flags: ["--http-port=9000"]"#,
            &[
                "provisioning.flags[0]: `--http-port=9000` contradicts the provisioner's --http-port 8000",
            ],
        ),
        (
            "triton",
            r#"flags: [--model-store, /elsewhere]"#,
            &["provisioning.flags[0]: `--model-store /elsewhere`"],
        ),
        (
            "triton",
            r#"flags: ["--grpc-p=9001"]"#,
            &["the engine reads --grpc-p as --grpc-port"],
        ),
        (
            "triton",
            r#"flags: ["--allow-http=false"]"#,
            &["readiness is probed over HTTP"],
        ),
        (
            "llamacpp",
            r#"flags: [--host, 0.0.0.0]"#,
            &[
                "provisioning.flags[0]: `--host 0.0.0.0` contradicts the provisioner's --host 127.0.0.1",
            ],
        ),
        (
            "llamacpp",
            r#"flags: [--models-dir, /srv/models]"#,
            &["it makes llama-server a router"],
        ),
    ];
    for (engine, provisioning, expected) in cases {
        expect_error(&pool(engine, "", provisioning), expected);
    }

    // Saying what the provisioner renders anyway is no contradiction: given once, rendered once.
    for (engine, provisioning, rendered) in [
        (
            "vllm",
            r#"flags: [--port, "8000", --host, 0.0.0.0]"#,
            "--port",
        ),
        ("tgi", r#"flags: [-p, "80"]"#, "--port"),
        (
            "triton",
            r#"flags: ["--http-port=8000"]"#,
            "--model-repository=/models/m",
        ),
        ("llamacpp", r#"flags: [--host, 127.0.0.1]"#, "--host"),
    ] {
        let args = launch(&pool(engine, "", provisioning));
        assert_eq!(
            args.iter().filter(|a| *a == rendered).count(),
            1,
            "{engine}: {args:?}"
        );
        assert!(
            !args.iter().any(|a| a.starts_with("--http-port")),
            "{args:?}"
        );
    }
    // A served model name is not rendered by the recipe: the pool may choose it.
    let args = server(&pool("vllm", "", r#"flags: [--served-model-name, a, b]"#));
    assert!(has(&args, &["--served-model-name", "a", "b"]), "{args:?}");
}

#[test]
fn vllm_takes_its_model_as_the_image_version_says() {
    let model_first = |provisioning: &str| {
        let args = server(&pool("vllm", "", provisioning));
        match args[0].as_str() {
            "--model" => {
                assert_eq!(args[1], "/models/m");
                false
            }
            "/models/m" => true,
            other => panic!("{other}: {args:?}"),
        }
    };
    // The pinned v0.12.0 image still starts the API server module: `--model`.
    assert!(!model_first(""));
    assert!(!model_first(
        r#"container: { image: vllm/vllm-openai, tag: v0.13.0 }"#
    ));
    // From v0.14.0 the image starts `vllm serve`: the model comes first.
    assert!(model_first(
        r#"container: { image: vllm/vllm-openai, tag: v0.14.0 }"#
    ));
    assert!(model_first(
        r#"container: { image: "vllm/vllm-openai:v0.15.1" }"#
    ));
    // A pin without a version: the current form.
    assert!(model_first(
        r#"container: { image: vllm/vllm-openai, tag: nightly }"#
    ));
    assert!(model_first(r#"container: { image: vllm/vllm-openai }"#));
    let digest = format!("sha256:{}", "a".repeat(64));
    assert!(model_first(&format!(
        r#"container: {{ image: vllm/vllm-openai, digest: "{digest}" }}"#
    )));
    // The pool decides when it knows better.
    assert!(!model_first(
        r#"container: { image: vllm/vllm-openai, tag: v0.15.0, model_arg: flag }"#
    ));
    assert!(model_first(
        r#"container: { image: vllm/vllm-openai, tag: v0.9.2, model_arg: positional }"#
    ));
    // Only vLLM takes it either way.
    let text = r#"
pools:
  - id: t
    engine: tgi
    provisioning: { model: { ref: "file:/srv/models/m" }, container: { model_arg: flag } }
"#;
    let error = Config::parse(text, Format::Yaml, "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            "pools[0].provisioning.container.model_arg: only vLLM takes its model either way"
        ),
        "{error}"
    );
}

#[test]
fn options_each_engine_accumulates_keep_every_occurrence() {
    let args = server(&pool(
        "vllm",
        "",
        r#"flags: [--middleware, a.M, --enforce-eager, --middleware, b.M, --allowed-origins, '["x"]']"#,
    ));
    assert!(
        has(
            &args,
            &[
                "--middleware",
                "a.M",
                "--enforce-eager",
                "--middleware",
                "b.M"
            ]
        ),
        "{args:?}"
    );
    let args = server(&pool(
        "tgi",
        "",
        r#"flags: [--cors-allow-origin, a, --cors-allow-origin, b]"#,
    ));
    assert!(
        has(
            &args,
            &["--cors-allow-origin", "a", "--cors-allow-origin", "b"]
        ),
        "{args:?}"
    );
    let args = server(&pool(
        "triton",
        "",
        r#"flags: [--model-control-mode=explicit, --load-model=a, --load-model=b, "--backend-config=tensorrtllm,x=1", "--backend-config=python,y=2"]"#,
    ));
    assert!(
        has(
            &args,
            &[
                "--load-model",
                "a",
                "--load-model",
                "b",
                "--backend-config",
                "tensorrtllm,x=1",
                "--backend-config",
                "python,y=2"
            ]
        ),
        "{args:?}"
    );

    // Single-valued upstream: twice with different values names both.
    for (engine, flags, expected) in [
        (
            "vllm",
            r#"[--max-num-seqs, "8", --max_num_seqs, "16"]"#,
            "provisioning.flags[2]: `--max_num_seqs 16` disagrees with `--max-num-seqs 8` at provisioning.flags[0]",
        ),
        (
            "vllm",
            r#"[--lora-modules, a=/l/a, b=/l/b, --lora-modules, a=/l/a]"#,
            "disagrees with `--lora-modules a=/l/a b=/l/b`",
        ),
        (
            "tgi",
            r#"[--max-batch-size, "4", "--max-batch-size=8"]"#,
            "provisioning.flags[2]: `--max-batch-size=8` disagrees with `--max-batch-size 4`",
        ),
        (
            "triton",
            r#"[--model-control-mode=explicit, --model-control-mode=poll]"#,
            "provisioning.flags[1]: `--model-control-mode=poll` disagrees with `--model-control-mode=explicit`",
        ),
    ] {
        expect_error(&pool(engine, "", &format!("flags: {flags}")), &[expected]);
    }
}

#[test]
fn options_that_make_the_engine_download_are_refused() {
    let refused: &[(&str, &str)] = &[
        ("llamacpp", r#"[-hf, org/repo]"#),
        ("llamacpp", r#"["--hf-repo=org/repo"]"#),
        ("llamacpp", r#"[-hff, m.gguf]"#),
        ("llamacpp", r#"[-hfd, org/draft]"#),
        ("llamacpp", r#"[--spec-draft-hf, org/draft]"#),
        ("llamacpp", r#"[-hfv, org/vocoder]"#),
        ("llamacpp", r#"[-mu, "https://example.org/m.gguf"]"#),
        ("llamacpp", r#"[-dr, gemma3]"#),
        ("llamacpp", r#"[-mmu, "https://example.org/p.gguf"]"#),
        ("llamacpp", r#"[--gpt-oss-20b-default]"#),
        ("llamacpp", r#"[-hft, hf_x]"#),
        ("vllm", r#"[--tokenizer, org/tokenizer]"#),
        ("vllm", r#"[--revision, main]"#),
        ("vllm", r#"[--hf-config-path, org/config]"#),
        (
            "vllm",
            r#"[--speculative-config, '{"model": "org/draft", "num_speculative_tokens": 5}']"#,
        ),
        ("vllm", r#"[--speculative_config.model, org/draft]"#),
        ("vllm", r#"[--lora-modules, a=/l/a, b=org/b]"#),
        ("tgi", r#"[--revision, refs/pr/2]"#),
        ("tgi", r#"[--lora-adapters, "org/a,b=/l/b"]"#),
    ];
    for (engine, flags) in refused {
        expect_error(
            &pool(engine, "", &format!("flags: {flags}")),
            &[
                "pools[0].provisioning.flags[0]: `",
                "makes the engine download",
                "stage it and pass a local path",
            ],
        );
    }
    // A token given to the engine's downloader is refused without being quoted.
    for (engine, flags) in [
        ("llamacpp", r#"[-hft, hf_SECRETTOKEN]"#),
        ("llamacpp", r#"["--hf-token=hf_SECRETTOKEN"]"#),
        ("vllm", r#"[--hf-token, hf_SECRETTOKEN]"#),
    ] {
        let text = error(&pool(engine, "", &format!("flags: {flags}")));
        assert!(
            text.contains("<redacted>` makes the engine download"),
            "{text}"
        );
        assert!(!text.contains("SECRETTOKEN"), "{text}");
    }
    // Local paths download nothing.
    for (engine, flags) in [
        (
            "vllm",
            r#"[--tokenizer, /models/tok, --lora-modules, a=/l/a, '{"name": "b", "path": "/l/b"}']"#,
        ),
        (
            "vllm",
            r#"[--speculative-config, '{"method": "ngram", "num_speculative_tokens": 4}']"#,
        ),
        ("tgi", r#"[--lora-adapters, "a=/l/a,b=/l/b"]"#),
    ] {
        launch(&pool(engine, "", &format!("flags: {flags}")));
    }
    // The same options given as the variables the engine reads.
    for (engine, variable) in [("llamacpp", "LLAMA_ARG_HF_REPO"), ("tgi", "REVISION")] {
        expect_error(
            &pool(engine, "", &format!("env: {{ {variable}: x }}")),
            &[&format!(
                "pools[0].provisioning.env.{variable}: the engine reads {variable} as"
            )],
        );
    }
}

#[test]
fn containers_run_offline_and_env_cannot_say_otherwise() {
    for engine in ["llamacpp", "vllm", "tgi", "triton"] {
        let args = launch(&pool(engine, "", "mode: container"));
        assert!(
            has(&args, &["--env", "HF_HUB_OFFLINE=1"]),
            "{engine}: {args:?}"
        );
        assert!(
            has(&args, &["--env", "TRANSFORMERS_OFFLINE=1"]),
            "{engine}: {args:?}"
        );
        launch(&pool(
            engine,
            "",
            r#"mode: container, env: { HF_HUB_OFFLINE: "1" }"#,
        ));
        expect_error(
            &pool(
                engine,
                "",
                r#"mode: container, env: { HF_HUB_OFFLINE: "0" }"#,
            ),
            &[
                "pools[0].provisioning.env.HF_HUB_OFFLINE: containers run with HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1",
            ],
        );
    }
    // A native llama-server reads neither.
    launch(&pool("llamacpp", "", r#"env: { HF_HUB_OFFLINE: "0" }"#));
}

#[test]
fn pool_fields_are_mapped_or_refused_per_engine() {
    // ctx
    let args = server(&pool("vllm", "ctx: 4096", ""));
    assert!(has(&args, &["--max-model-len", "4096"]), "{args:?}");
    launch(&pool(
        "vllm",
        "ctx: 4000",
        r#"flags: [--max-model-len, 4k]"#,
    ));
    expect_error(
        &pool("vllm", "ctx: 4096", r#"flags: [--max-model-len, "8192"]"#),
        &["provisioning.flags[0]: --max-model-len 8192 disagrees with the pool's ctx: 4096"],
    );
    let args = server(&pool("tgi", "ctx: 4096", ""));
    assert!(
        has(
            &args,
            &["--max-total-tokens", "4096", "--max-input-tokens", "4095"]
        ),
        "{args:?}"
    );
    let args = server(&pool(
        "tgi",
        "ctx: 4096",
        r#"flags: [--max-input-length, "1000"]"#,
    ));
    assert!(has(&args, &["--max-input-tokens", "1000"]), "{args:?}");
    assert!(has(&args, &["--max-total-tokens", "4096"]), "{args:?}");
    expect_error(
        &pool("tgi", "ctx: 4096", r#"flags: [--max-input-tokens, "4096"]"#),
        &["provisioning.flags[0]: --max-input-tokens 4096 does not fit the pool's ctx: 4096"],
    );
    expect_error(
        &pool("tgi", "ctx: 4096", r#"flags: [--max-total-tokens, "2048"]"#),
        &["--max-total-tokens 2048 disagrees with the pool's ctx: 4096"],
    );
    expect_error(
        &pool("triton", "ctx: 4096", ""),
        &[
            "pools[0].ctx: Triton takes no context length",
            "trtllm-build",
        ],
    );
    let args = launch(&pool("llamacpp", "ctx: 4096", ""));
    assert!(has(&args, &["--ctx-size", "4096"]), "{args:?}");

    // tensor_split
    for engine in ["vllm", "tgi"] {
        let args = server(&pool(engine, "devices: [0, 1]; tensor_split: [1, 1]", ""));
        assert!(!args.iter().any(|a| a.contains("split")), "{args:?}");
        expect_error(
            &pool(engine, "devices: [0, 1]; tensor_split: [3, 1]", ""),
            &[
                "pools[0].tensor_split: ",
                "splits the model evenly over the pool's devices",
            ],
        );
        expect_error(
            &pool(engine, "devices: [0, 1]; tensor_split: [1, 1, 1]", ""),
            &["pools[0].tensor_split: "],
        );
    }
    expect_error(
        &pool("triton", "tensor_split: [1]", ""),
        &["pools[0].tensor_split: Triton takes no tensor split"],
    );
    let args = launch(&pool(
        "llamacpp",
        "devices: [0, 1]; tensor_split: [3, 1]",
        "",
    ));
    assert!(has(&args, &["--tensor-split", "3,1"]), "{args:?}");

    // Keys for other llama-orch components are never refused.
    for engine in ["llamacpp", "vllm", "tgi", "triton"] {
        launch(&pool(
            engine,
            "quant: q4_k_m; preload: true; sampler_profile_version: v1; queue: { capacity: 8 }; admission: { policy: reject }; timeouts: { first_token_ms: 1000 }; require_same_engine_version: true",
            "",
        ));
    }
}

#[test]
fn parallelism_fits_the_devices() {
    // vLLM: tensor × pipeline × data parallel = devices; tensor parallel fills them by default.
    let args = server(&pool("vllm", "devices: [0, 1]", ""));
    assert!(has(&args, &["--tensor-parallel-size", "2"]), "{args:?}");
    let args = server(&pool("vllm", "devices: [0]", ""));
    assert!(
        !args.contains(&"--tensor-parallel-size".to_string()),
        "{args:?}"
    );
    let args = server(&pool(
        "vllm",
        "devices: [0, 1, 2, 3]",
        r#"flags: [-pp, "2"]"#,
    ));
    assert!(has(&args, &["--pipeline-parallel-size", "2"]), "{args:?}");
    assert!(has(&args, &["--tensor-parallel-size", "2"]), "{args:?}");
    launch(&pool(
        "vllm",
        "devices: [0, 1, 2, 3]",
        r#"flags: [-tp, "2", -dp, "2"]"#,
    ));
    expect_error(
        &pool(
            "vllm",
            "devices: [0]",
            r#"flags: [--tensor-parallel-size, "4"]"#,
        ),
        &[
            "pools[0].provisioning.flags[0]: tensor × pipeline × data parallel = 4 × 1 × 1 = 4 GPUs, but the pool has 1 device ([0])",
        ],
    );
    expect_error(
        &pool("vllm", "devices: [0, 1, 2]", r#"flags: [-pp, "2"]"#),
        &[
            "provisioning.flags[0]: pipeline × data parallel = 2 does not divide the pool's 3 devices ([0, 1, 2])",
        ],
    );
    expect_error(
        &pool("vllm", "devices: [0, 1]", r#"flags: [-tp, two]"#),
        &["--tensor-parallel-size takes a whole number"],
    );
    // Degrees whose product overflows are refused, not a panic.
    expect_error(
        &pool(
            "vllm",
            "devices: [0, 1]",
            r#"flags: [-pp, "18446744073709551615", -dp, "2"]"#,
        ),
        &["provisioning.flags[0]: pipeline × data parallel is more than 2^64"],
    );
    expect_error(
        &pool(
            "vllm",
            "devices: [0, 1]",
            r#"flags: [-tp, "9223372036854775808", -pp, "2"]"#,
        ),
        &["tensor × pipeline × data parallel = 9223372036854775808 × 2 × 1 = more than 2^64 GPUs"],
    );

    // TGI: one shard per device.
    let args = server(&pool("tgi", "devices: [0, 1]", ""));
    assert!(has(&args, &["--num-shard", "2"]), "{args:?}");
    launch(&pool(
        "tgi",
        "devices: [0, 1]",
        r#"flags: [--num-shard, "2"]"#,
    ));
    expect_error(
        &pool("tgi", "devices: [0]", r#"flags: [--num-shard, "2"]"#),
        &["provisioning.flags[0]: --num-shard 2 does not fit the pool's 1 device ([0])"],
    );
    expect_error(
        &pool("tgi", "devices: [0, 1]", r#"flags: [--sharded, "false"]"#),
        &["--sharded false would leave all but one"],
    );
    expect_error(
        &pool("tgi", "devices: [0]", r#"env: { NUM_SHARD: "2" }"#),
        &["pools[0].provisioning.env.NUM_SHARD: the engine reads NUM_SHARD as --num-shard"],
    );

    // Triton: one device, with the reason.
    expect_error(
        &pool("triton", "devices: [0, 1]", ""),
        &["pools[0].devices: Triton runs here on one device", "MPI"],
    );
    launch(&pool("triton", "devices: [1]", ""));
}

#[test]
fn device_masks_in_env_are_refused_for_every_engine() {
    for engine in ["llamacpp", "vllm", "tgi", "triton"] {
        for mask in [
            "CUDA_VISIBLE_DEVICES",
            "HIP_VISIBLE_DEVICES",
            "NVIDIA_VISIBLE_DEVICES",
        ] {
            expect_error(
                &pool(
                    engine,
                    "devices: [1]",
                    &format!(r#"env: {{ {mask}: "1" }}"#),
                ),
                &[
                    &format!("pools[0].provisioning.env.{mask}: {mask} chooses the GPUs"),
                    "list the GPUs in devices",
                ],
            );
        }
    }
    // What `devices` becomes: the mask of a native engine, the GPUs of a container.
    let plan = provisioner()
        .plan(&pool("llamacpp", "devices: [1]", ""))
        .unwrap();
    let env = plan
        .steps
        .iter()
        .find_map(|step| match step {
            Step::Launch { env, .. } => Some(env.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        env.get("CUDA_VISIBLE_DEVICES").map(String::as_str),
        Some("1")
    );
    let args = launch(&pool("vllm", "devices: [1]", ""));
    assert!(has(&args, &["--device", "nvidia.com/gpu=1"]), "{args:?}");
}
