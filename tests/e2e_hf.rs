//! `hf:` models end to end through `orchctl`, against the loopback stand-in for the Hugging Face
//! Hub (`adapters_model::fake_hub`, reached through `HF_ENDPOINT` exactly as the real hub is):
//! a llama.cpp pool whose model is `hf:tiny/tiny-llama/tiny.gguf` is brought up, decodes 8
//! tokens and goes down; with the hub gone and `HF_HUB_OFFLINE=1` it still prepares; its plan
//! shows the staged commit. A container pool whose model is a repository snapshot runs with the
//! repository's cache directory mounted read-only and `HF_HUB_OFFLINE=1`. And the bad inputs:
//! unknown repository or file, gated repository, offline with nothing staged, `s3:`.
//!
//! Each `orchctl` run gets its own hub cache (`HF_HUB_CACHE`), `HF_HOME` (so no token file of
//! the user is read) and models directory; the engine build is the shared one
//! (`tests::source_build`, a cache hit).

use std::path::{Path, PathBuf};
use std::process::Command;

use adapters_model::fake_hub::{FakeFile, FakeHub, sha256_hex, tiny_safetensors};
use serde_json::{Value, json};
use tests::containers::{Env, build_busybox_image};
use tests::{
    TEST_CMAKE_FLAGS, fixtures, free_port, http_get, http_post_json, orchctl, shared_cache,
    source_build, write_source_config,
};

const LLAMA_REPO: &str = "tiny/tiny-llama";

/// The fake hub and the runtime that serves it (both stop when this is dropped).
struct Hub {
    hub: Option<FakeHub>,
    runtime: tokio::runtime::Runtime,
}

impl Hub {
    fn start() -> Hub {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let hub = runtime.block_on(FakeHub::start());
        Hub {
            hub: Some(hub),
            runtime,
        }
    }

    fn hub(&self) -> &FakeHub {
        self.hub.as_ref().expect("the hub is running")
    }

    /// Stops both listeners; nothing answers on their ports afterwards.
    fn stop(&mut self) {
        let _guard = self.runtime.enter();
        drop(self.hub.take());
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where one test keeps its hub cache, `HF_HOME` and models directory.
struct HfPlace {
    dir: tempfile::TempDir,
}

impl HfPlace {
    fn new() -> HfPlace {
        HfPlace {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn hub_cache(&self) -> PathBuf {
        self.path().join("hub")
    }

    fn models_dir(&self) -> PathBuf {
        self.path().join("models")
    }

    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.hub_cache()
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    /// `orchctl` with the shared engine cache, this place's hub cache and models directory,
    /// `HF_ENDPOINT` (unset when `None`) and no Hugging Face variable of the caller.
    fn orchctl(&self, endpoint: Option<&str>) -> Command {
        // `orchctl` already leaves out the caller's Hugging Face variables.
        let mut command = orchctl(&shared_cache());
        command
            .env("HF_HOME", self.path().join("hf-home"))
            .env("HF_HUB_CACHE", self.hub_cache())
            .env("LLAMA_ORCH_MODELS_DIR", self.models_dir());
        if let Some(endpoint) = endpoint {
            command.env("HF_ENDPOINT", endpoint);
        }
        command
    }

    /// The catalog's entries (`index.json`), as JSON; empty when there is none.
    fn catalog(&self) -> serde_json::Map<String, Value> {
        match std::fs::read(self.models_dir().join("index.json")) {
            Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
                .expect("index.json is JSON")
                .as_object()
                .cloned()
                .unwrap_or_default(),
            Err(_) => serde_json::Map::new(),
        }
    }
}

/// How an `orchctl` run ended.
struct Run {
    code: i32,
    json: Value,
    stdout: String,
    stderr: String,
}

fn run(command: &mut Command, args: &[&str], config: &Path) -> Run {
    let output = command
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("orchctl runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    Run {
        code: output.status.code().unwrap_or(-1),
        json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
    }
}

/// A llama.cpp source pool identical to the shared build's, with `model.ref: <reference>`.
fn source_pool(dir: &Path, pool: &str, port: u16, reference: &str) -> PathBuf {
    let config = write_source_config(
        dir,
        pool,
        port,
        TEST_CMAKE_FLAGS,
        &["-ngl", "0", "--parallel", "1"],
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let file_ref = format!("ref: file:{}", fixtures().model.display());
    assert!(text.contains(&file_ref), "{text}");
    std::fs::write(
        &config,
        text.replace(&file_ref, &format!("ref: {reference}")),
    )
    .unwrap();
    config
}

/// The model step of a plan printed with `--json`.
fn model_step(plan: &Value) -> Value {
    plan["plan"]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("a plan with steps: {plan}"))
        .iter()
        .find(|step| step["step"] == "resolve_model")
        .unwrap_or_else(|| panic!("a resolve_model step: {plan}"))
        .clone()
}

/// The argv of a running process.
fn cmdline(pid: u64) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The value after `flag` in `args`.
fn value_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|arg| arg == flag)
        .and_then(|at| args.get(at + 1))
        .map(String::as_str)
}

#[test]
fn an_hf_gguf_pool_comes_up_decodes_and_prepares_offline_afterwards() {
    let shared = source_build();
    let mut hub = Hub::start();
    let model = std::fs::read(&fixtures().model).unwrap();
    let commit = hub.hub().publish(
        LLAMA_REPO,
        vec![
            FakeFile::lfs("tiny.gguf", model.clone()),
            FakeFile::regular("README.md", "# tiny llama\n"),
        ],
    );
    let endpoint = hub.hub().endpoint();
    let place = HfPlace::new();
    let port = free_port();
    let pool = "e2e-hf-up";
    let config = source_pool(place.path(), pool, port, "hf:tiny/tiny-llama/tiny.gguf");
    let repo = place.repo_dir(LLAMA_REPO);
    let snapshot_file = repo.join(format!("snapshots/{commit}/tiny.gguf"));

    // Before anything is staged the plan says the model is resolved at prepare.
    let plan = run(
        &mut place.orchctl(Some(&endpoint)),
        &["engine", "plan", "--json"],
        &config,
    );
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let step = model_step(&plan.json);
    assert_eq!(step["staging"]["kind"], "at_prepare", "{step}");
    assert_eq!(step["reference"], "hf:tiny/tiny-llama/tiny.gguf", "{step}");
    assert!(
        hub.hub().requests().is_empty(),
        "plan contacted the hub: {:?}",
        hub.hub().requests()
    );

    // `up` stages the model from the hub into the Hugging Face cache layout.
    let up = run(
        &mut place.orchctl(Some(&endpoint)),
        &["engine", "up", "--json"],
        &config,
    );
    assert_eq!(up.code, 0, "up failed:\n{}{}", up.stdout, up.stderr);
    let outcome = std::panic::catch_unwind(|| {
        assert_eq!(up.json["cache_hit"], true, "the shared build is reused");
        assert_eq!(up.json["engine_version"], shared["engine_version"]);
        let pid = up.json["pid"].as_u64().expect("up reports a pid");
        let argv = cmdline(pid);
        assert_eq!(
            value_after(&argv, "--model").map(PathBuf::from),
            Some(snapshot_file.clone()),
            "llama-server runs on the snapshot file: {argv:?}"
        );
        let base = format!("http://127.0.0.1:{port}");
        let (status, body) = http_get(&format!("{base}/health"));
        assert_eq!(status, 200, "{body}");
        let (status, completion) = http_post_json(
            &format!("{base}/completion"),
            &json!({"prompt": "hello", "n_predict": 8, "temperature": 0, "seed": 1, "ignore_eos": true}),
        );
        assert_eq!(status, 200, "{completion}");
        assert_eq!(completion["tokens_predicted"], 8, "{completion}");

        // Staged: the plan shows the commit the branch resolved to, from local state only.
        hub.hub().clear_requests();
        let plan = run(
            &mut place.orchctl(Some(&endpoint)),
            &["engine", "plan", "--json"],
            &config,
        );
        assert_eq!(plan.code, 0, "{}", plan.stderr);
        let step = model_step(&plan.json);
        assert_eq!(step["staging"]["kind"], "staged", "{step}");
        assert_eq!(step["staging"]["revision"], json!(commit), "{step}");
        assert_eq!(
            step["staging"]["path"],
            json!(snapshot_file.to_string_lossy()),
            "{step}"
        );
        assert_eq!(step["staging"]["bytes"], json!(model.len()), "{step}");
        let human = run(
            &mut place.orchctl(Some(&endpoint)),
            &["engine", "plan"],
            &config,
        );
        assert_eq!(human.code, 0, "{}", human.stderr);
        assert!(human.stdout.contains(&commit), "{}", human.stdout);
        assert!(
            hub.hub().requests().is_empty(),
            "plan contacted the hub: {:?}",
            hub.hub().requests()
        );
    });
    let down = run(
        &mut place.orchctl(Some(&endpoint)),
        &["engine", "down", "--json"],
        &config,
    );
    assert_eq!(down.code, 0, "{}", down.stderr);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }

    // The Hugging Face cache layout: a relative symlink into blobs/<sha256>, refs/main.
    let sha256 = sha256_hex(&model);
    assert_eq!(
        std::fs::read_link(&snapshot_file).unwrap(),
        PathBuf::from(format!("../../blobs/{sha256}"))
    );
    assert_eq!(std::fs::read(&snapshot_file).unwrap(), model);
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main"))
            .unwrap()
            .trim(),
        commit
    );
    assert!(
        !repo
            .join("snapshots")
            .join(&commit)
            .join("README.md")
            .exists(),
        "only the named file is staged"
    );
    let catalog = place.catalog();
    assert_eq!(catalog.len(), 1, "{catalog:?}");
    let entry = catalog.values().next().unwrap();
    assert_eq!(entry["local_path"], json!(snapshot_file.to_string_lossy()));

    // The Python client, offline, finds what orchctl staged (the fixtures' venv).
    let python = PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
        .join(".cache/engine-provisioner/fixtures/venv/bin/python");
    #[allow(clippy::disallowed_methods)] // the test runs the Python client itself
    let output = Command::new(&python)
        .args([
            "-c",
            "from huggingface_hub import hf_hub_download\nprint(hf_hub_download('tiny/tiny-llama', 'tiny.gguf', local_files_only=True))",
        ])
        .env("HF_HUB_CACHE", place.hub_cache())
        .env("HF_HOME", place.path().join("hf-home"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("the fixtures' venv python runs (scripts/fixtures.sh)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()),
        snapshot_file
    );

    // The hub is gone: a staged model needs no network, with HF_HUB_OFFLINE=1 and without.
    hub.stop();
    for offline in [true, false] {
        let mut command = place.orchctl(Some(&endpoint));
        if offline {
            command.env("HF_HUB_OFFLINE", "1");
        }
        let prepared = run(&mut command, &["engine", "prepare", "--json"], &config);
        assert_eq!(
            prepared.code, 0,
            "warm prepare (HF_HUB_OFFLINE={offline}) failed:\n{}",
            prepared.stderr
        );
        assert_eq!(prepared.json["metadata"]["cache_hit"], true);
        assert_eq!(
            prepared.json["metadata"]["model_path"],
            json!(snapshot_file.to_string_lossy())
        );
        let args: Vec<String> = serde_json::from_value(prepared.json["args"].clone()).unwrap();
        assert_eq!(
            value_after(&args, "--model").map(PathBuf::from),
            Some(snapshot_file.clone()),
            "{args:?}"
        );
    }
}

/// A busybox image that answers vLLM's readiness path and writes what it was given to
/// /standin.txt: its arguments, the offline variables, and for an argument that is a directory
/// under /models, each file in it with its size (read through the snapshot's symlinks).
fn build_standin_image(env: &Env, dir: &Path, tag: &str) {
    build_busybox_image(env, dir, tag, STANDIN_SCRIPT);
}

const STANDIN_SCRIPT: &str = r#"port=8000
prev=""
for a in "$@"; do [ "$prev" = "--port" ] && port=$a; prev=$a; done
/bin/busybox mkdir -p /www/v1 /tmp
echo '{"object":"list","data":[]}' > /www/v1/models
echo ok > /www/health
{
  echo "args: $*"
  echo "env: HF_HUB_OFFLINE=$HF_HUB_OFFLINE TRANSFORMERS_OFFLINE=$TRANSFORMERS_OFFLINE"
  for a in "$@"; do
    case "$a" in
      /models/*) if [ -d "$a" ]; then for f in "$a"/*; do echo "file $f: $(/bin/busybox cat "$f" | /bin/busybox wc -c) bytes"; done; fi ;;
    esac
  done
  /bin/busybox touch /models/hf/models--tiny--tiny-repo/written 2>/dev/null && echo "writable: yes" || echo "writable: no"
} > /www/standin.txt
exec /bin/busybox httpd -f -p "$port" -h /www
"#;

/// A container pool whose model is a whole repository (`hf:tiny/tiny-repo`): its cache
/// directory is mounted read-only at `/models/hf/models--tiny--tiny-repo`, the engine is
/// pointed at the snapshot, the container runs with `HF_HUB_OFFLINE=1`, and the stand-in image
/// reads the files through the snapshot's symlinks.
#[test]
fn a_container_pool_mounts_the_hf_repository_read_only_and_runs_offline() {
    let hub = Hub::start();
    let weights = tiny_safetensors(&[7u8; 4096]);
    let config_json = r#"{"architectures": ["TinyForCausalLM"], "model_type": "tiny"}"#;
    let commit = hub.hub().publish(
        "tiny/tiny-repo",
        vec![
            FakeFile::regular("config.json", config_json),
            FakeFile::lfs("model.safetensors", weights.clone()),
            FakeFile::lfs("pytorch_model.bin", vec![1u8; 2048]),
        ],
    );
    let endpoint = hub.hub().endpoint();
    let place = HfPlace::new();
    let env = Env::new(place.path(), 1);
    let name = format!("localhost/llama-orch-e2e/standin-hf-{}", std::process::id());
    let tag = format!("{name}:1");
    let port = free_port();
    let pool = "e2e-hf-ctr";
    let config = place.path().join("ctr.yaml");
    std::fs::write(
        &config,
        format!(
            r#"pools:
  - id: {pool}
    engine: vllm
    provisioning:
      mode: container
      container: {{ image: "{name}", tag: "1" }}
      model: {{ ref: "hf:tiny/tiny-repo", exclude: ["*.bin"] }}
      ports: [{port}]
"#
        ),
    )
    .unwrap();
    build_standin_image(&env, place.path(), &tag);
    let orch = |args: &[&str]| {
        let mut command = place.orchctl(Some(&endpoint));
        env.apply(&mut command);
        run(&mut command, args, &config)
    };

    let outcome = std::panic::catch_unwind(|| {
        let repo = place.repo_dir("tiny/tiny-repo");
        let snapshot = format!("/models/hf/models--tiny--tiny-repo/snapshots/{commit}");
        let prepared = orch(&["engine", "prepare", "--json"]);
        assert_eq!(prepared.code, 0, "prepare failed:\n{}", prepared.stderr);
        let args: Vec<String> = serde_json::from_value(prepared.json["args"].clone()).unwrap();
        let mount = format!(
            "type=bind,source={},target=/models/hf/models--tiny--tiny-repo,readonly",
            repo.display()
        );
        assert!(
            args.windows(2)
                .any(|pair| pair[0] == "--mount" && pair[1] == mount),
            "no `--mount {mount}` in {args:?}"
        );
        assert!(
            args.contains(&snapshot),
            "the engine is not pointed at {snapshot}: {args:?}"
        );
        assert!(
            args.windows(2)
                .any(|pair| pair[0] == "--env" && pair[1] == "HF_HUB_OFFLINE=1"),
            "{args:?}"
        );
        assert_eq!(
            prepared.json["metadata"]["model_path"],
            json!(repo.join("snapshots").join(&commit).to_string_lossy())
        );
        assert!(
            !repo
                .join("snapshots")
                .join(&commit)
                .join("pytorch_model.bin")
                .exists(),
            "model.exclude was not applied"
        );

        let up = orch(&["engine", "up", "--json"]);
        assert_eq!(up.code, 0, "up failed:\n{}", up.stderr);
        let (status, report) = http_get(&format!("http://127.0.0.1:{port}/standin.txt"));
        let down = orch(&["engine", "down", "--json"]);
        assert_eq!(down.code, 0, "{}", down.stderr);
        assert_eq!(status, 200, "{report}");
        assert!(report.contains(&format!("args: {snapshot} ")), "{report}");
        assert!(
            report.contains("env: HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1"),
            "{report}"
        );
        assert!(
            report.contains(&format!(
                "file {snapshot}/config.json: {} bytes",
                config_json.len()
            )) && report.contains(&format!(
                "file {snapshot}/model.safetensors: {} bytes",
                weights.len()
            )),
            "the snapshot's symlinks do not resolve inside the mount: {report}"
        );
        assert!(!report.contains("pytorch_model.bin"), "{report}");
        assert!(
            report.contains("writable: no"),
            "the mount is writable: {report}"
        );
    });
    env.podman(&["rmi", "-f", &tag]);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Every bad `hf:` input fails prepare with exit 8 (model) or 9 (policy), says what is wrong,
/// and stages nothing: no snapshot, no ref, no catalog entry.
#[test]
fn bad_hf_inputs_are_clear_errors_and_stage_nothing() {
    let _ = source_build();
    let hub = Hub::start();
    let model = std::fs::read(&fixtures().model).unwrap();
    let commit = hub
        .hub()
        .publish(LLAMA_REPO, vec![FakeFile::lfs("tiny.gguf", model.clone())]);
    let token = format!("hf_e2e_gated_{}", std::process::id());
    hub.hub().publish(
        "tiny/gated",
        vec![FakeFile::lfs("tiny.gguf", model.clone())],
    );
    hub.hub().gate("tiny/gated", &token);
    let endpoint = hub.hub().endpoint();
    let place = HfPlace::new();
    let prepare = |reference: &str, setup: &dyn Fn(&mut Command)| {
        let config = source_pool(place.path(), "e2e-hf-bad", free_port(), reference);
        let mut command = place.orchctl(Some(&endpoint));
        setup(&mut command);
        let outcome = run(&mut command, &["engine", "prepare", "--json"], &config);
        let shown = format!("{}{}", outcome.stdout, outcome.stderr);
        assert!(
            !shown.contains(&token),
            "the token was shown for {reference}:\n{shown}"
        );
        outcome
    };
    let nothing_staged = |what: &str| {
        for repo in [LLAMA_REPO, "tiny/gated", "tiny/nope"] {
            let dir = place.repo_dir(repo);
            assert!(
                !dir.join("snapshots").exists() && !dir.join("refs").exists(),
                "{what}: something was staged in {}",
                dir.display()
            );
        }
        assert!(place.catalog().is_empty(), "{what}: {:?}", place.catalog());
    };

    // A file the repository does not have: 404 with the URL.
    let missing = prepare("hf:tiny/tiny-llama/missing.gguf", &|_| {});
    assert_eq!(missing.code, 8, "{}", missing.stderr);
    let url = format!("{endpoint}/tiny/tiny-llama/resolve/{commit}/missing.gguf");
    assert!(
        missing.stderr.contains(&url) && missing.stderr.contains("404"),
        "{}",
        missing.stderr
    );
    nothing_staged("unknown file");

    // A repository the hub does not have: 404 with the URL.
    let unknown = prepare("hf:tiny/nope/tiny.gguf", &|_| {});
    assert_eq!(unknown.code, 8, "{}", unknown.stderr);
    assert!(
        unknown
            .stderr
            .contains(&format!("{endpoint}/api/models/tiny/nope"))
            && unknown.stderr.contains("404"),
        "{}",
        unknown.stderr
    );
    nothing_staged("unknown repository");

    // A gated repository without a token (and with a wrong one): 401, set HF_TOKEN.
    let gated = prepare("hf:tiny/gated/tiny.gguf", &|_| {});
    assert_eq!(gated.code, 8, "{}", gated.stderr);
    assert!(
        gated.stderr.contains("401") && gated.stderr.contains("HF_TOKEN"),
        "{}",
        gated.stderr
    );
    let wrong = prepare("hf:tiny/gated/tiny.gguf", &|command| {
        command.env("HF_TOKEN", "hf_wrong_token");
    });
    assert_eq!(wrong.code, 8, "{}", wrong.stderr);
    assert!(!wrong.stderr.contains("hf_wrong_token"), "{}", wrong.stderr);
    nothing_staged("gated repository");

    // HF_HUB_OFFLINE=1 and nothing staged: exit 8, naming the variable and where it looked.
    let hub_offline = prepare("hf:tiny/tiny-llama/tiny.gguf", &|command| {
        command.env("HF_HUB_OFFLINE", "1");
    });
    assert_eq!(hub_offline.code, 8, "{}", hub_offline.stderr);
    assert!(
        hub_offline.stderr.contains("HF_HUB_OFFLINE")
            && hub_offline.stderr.contains("not staged")
            && hub_offline
                .stderr
                .contains(&place.repo_dir(LLAMA_REPO).to_string_lossy().to_string()),
        "{}",
        hub_offline.stderr
    );
    // `--offline` (the host policy) with the public hub: refused before any connection, exit 9,
    // naming the host and offline mode. (A loopback endpoint is a local source, which offline
    // mode allows, so the public endpoint is the case that matters.)
    let config = source_pool(
        place.path(),
        "e2e-hf-offline",
        free_port(),
        "hf:tiny/tiny-llama/tiny.gguf",
    );
    let offline = run(
        place.orchctl(None).env("LLAMA_ORCH_OFFLINE", "1"),
        &["engine", "prepare", "--json"],
        &config,
    );
    assert_eq!(offline.code, 9, "{}", offline.stderr);
    assert!(
        offline.stderr.contains("huggingface.co") && offline.stderr.contains("offline mode"),
        "{}",
        offline.stderr
    );
    let offline_flag = run(
        place.orchctl(None).arg("--offline"),
        &["engine", "prepare", "--json"],
        &config,
    );
    assert_eq!(offline_flag.code, 9, "{}", offline_flag.stderr);
    nothing_staged("offline");

    // s3: and oci: come later: said so.
    for reference in ["s3://bucket/key", "oci://registry.example/models/tiny:1"] {
        let later = prepare(reference, &|_| {});
        assert_eq!(later.code, 8, "{reference}: {}", later.stderr);
        assert!(
            later.stderr.contains("not supported yet"),
            "{reference}: {}",
            later.stderr
        );
    }
    nothing_staged("s3/oci");

    // The gated repository with its token stages, and the token is never shown.
    let allowed = prepare("hf:tiny/gated/tiny.gguf", &|command| {
        command.env("HF_TOKEN", &token);
    });
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);
    let cdn_auth: Vec<_> = hub
        .hub()
        .requests()
        .into_iter()
        .filter(|request| request.server == "cdn" && request.authorization.is_some())
        .collect();
    assert!(
        cdn_auth.is_empty(),
        "the token went to the storage host: {cdn_auth:?}"
    );
}
