//! Container mode for real: a docker-registry with htpasswd auth on loopback, podman, an image
//! holding the llama-server built from source (pushed with credentials), `orchctl engine up` on
//! it by digest, a real completion, `down`. vLLM, TGI and Triton images cannot be had here, so
//! their rendered commands run with the image swapped for a busybox stand-in that answers each
//! engine's readiness path and reports the arguments, environment and mounts it was given.
//!
//! Everything that needs the registry runs in one test so that it is started and stopped
//! exactly once; images built on this host (`localhost/…`) and the runtime check need none.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::containers::{
    Env, PASSWORD, Registry, USER, build_busybox_image, command, push_llama_image,
};
use tests::kill::{Random, trials};
use tests::{fixtures, free_port, http_get, http_post_json, orchctl};

/// A chat template llama-server accepts, with a mark to find it by.
const CHAT_TEMPLATE: &str = "{# llama-orch e2e template #}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Adds `flags: <yaml>` to a pool written by [`container_config`].
/// The tests of this file share podman's storage; one at a time, so that one test's `rmi` and
/// pulls never race another's `run` (podman then exits without a word).
static PODMAN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn podman_turn() -> std::sync::MutexGuard<'static, ()> {
    PODMAN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn add_flags(config: &Path, flags: &str) {
    let text = std::fs::read_to_string(config).unwrap().replace(
        "      ports: [",
        &format!("      flags: {flags}\n      ports: ["),
    );
    std::fs::write(config, text).unwrap();
}

/// The image ID of `reference` in podman's store.
fn image_id(env: &Env, reference: &str) -> String {
    let output = env.podman(&["image", "inspect", "--format", "{{.Id}}", reference]);
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A busybox image that answers every engine's readiness path and writes what it was given
/// (arguments, an environment variable, the mounted model directories, the files mounted under
/// /inputs and their contents) to /standin.txt; built as `tag`.
fn build_standin_image(env: &Env, dir: &Path, tag: &str) {
    build_busybox_image(env, dir, tag, STANDIN_SCRIPT);
}

const STANDIN_SCRIPT: &str = r#"port=8000
prev=""
for a in "$@"; do [ "$prev" = "--port" ] && port=$a; prev=$a; done
/bin/busybox mkdir -p /www/v1 /www/v2/health /tmp
echo '{"object":"list","data":[]}' > /www/v1/models
echo ok > /www/health
echo ok > /www/v2/health/ready
{ echo "args: $*"; echo "env: STANDIN_MARK=$STANDIN_MARK"; /bin/busybox ls -R /models 2>/dev/null; for f in /inputs/*; do [ -f "$f" ] && echo "input $f: $(/bin/busybox cat "$f")"; done; } > /www/standin.txt
exec /bin/busybox httpd -f -p "$port" -h /www
"#;

/// The stand-in image, pushed to the registry as `standin:1`; returns the repository.
fn push_standin_image(env: &Env, dir: &Path, registry: u16) -> String {
    let repository = format!("127.0.0.1:{registry}/standin");
    let tag = format!("{repository}:1");
    build_standin_image(env, dir, &tag);
    let creds = format!("{USER}:{PASSWORD}");
    env.podman(&["push", "-q", "--tls-verify=false", "--creds", &creds, &tag]);
    repository
}

fn container_config(
    dir: &Path,
    pool: &str,
    engine: &str,
    image: &str,
    extra: &str,
    model: &Path,
    ports: &[u16],
) -> PathBuf {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let ports = ports.join(", ");
    let text = format!(
        r#"pools:
  - id: {pool}
    engine: {engine}
    provisioning:
      mode: container
      container: {{ image: "{image}", insecure: true{extra} }}
      model: {{ ref: "file:{model}" }}
      ports: [{ports}]
      env: {{ STANDIN_MARK: "passed-through" }}
"#,
        model = model.display()
    );
    let path = dir.join(format!("{pool}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn orch(env: &Env, cache: &Path, args: &[&str], config: &Path) -> (i32, Value, String) {
    let mut command = orchctl(cache);
    env.apply(&mut command);
    let output = command
        .args(args)
        .arg("--json")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    (
        output.status.code().unwrap_or(-1),
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
        stderr,
    )
}

fn containers_named(env: &Env, name: &str) -> usize {
    let output = env.podman(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("name={name}"),
    ]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[test]
fn container_mode_end_to_end() {
    let _turn = podman_turn();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    let env = Env::new(dir.path(), registry.port);
    let cache = dir.path().join("cache");
    let model = fixtures().model.clone();

    // llama.cpp for real: resolve the tag to a digest, pull by digest, up, decode, down.
    let repository = push_llama_image(&env, dir.path(), registry.port);
    let port = free_port();
    let config = container_config(
        dir.path(),
        "ctr-llama",
        "llamacpp",
        &repository,
        ", tag: fixture",
        &model,
        &[port],
    );
    // A host file named in a flag (in a directory whose name holds `,`, a file name holding
    // `:`) is mounted read-only under /inputs/ and the flag rewritten: llama-server reads the
    // chat template inside the container, and /props shows it.
    let inputs = dir.path().join("host inputs,1");
    std::fs::create_dir_all(&inputs).unwrap();
    let template = inputs.join("chat:ml.jinja");
    std::fs::write(&template, CHAT_TEMPLATE).unwrap();
    add_flags(
        &config,
        &format!("[--chat-template-file, \"{}\"]", template.display()),
    );
    let (code, plan, stderr) = orch(&env, &cache, &["engine", "plan"], &config);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(plan["plan"]["steps"][1]["step"], "pull_image");
    let (code, up, stderr) = orch(&env, &cache, &["engine", "up"], &config);
    assert_eq!(code, 0, "up failed: {stderr}");
    assert!(
        !stderr.contains(PASSWORD),
        "the password reached the output"
    );
    let version = up["engine_version"].as_str().unwrap().to_string();
    assert!(version.starts_with("llamacpp-fixture-sha256-"), "{version}");
    assert!(
        version.contains(&format!("-r{}", &fixtures().commit[..12])),
        "{version}"
    );
    let outcome = std::panic::catch_unwind(|| {
        let base = format!("http://127.0.0.1:{port}");
        let (status, completion) = http_post_json(
            &format!("{base}/completion"),
            &json!({"prompt": "hello", "n_predict": 8, "temperature": 0, "ignore_eos": true}),
        );
        assert_eq!(status, 200, "{completion}");
        assert_eq!(completion["tokens_predicted"], 8, "{completion}");
        let (status, props) = http_get(&format!("{base}/props"));
        assert_eq!(status, 200, "{props}");
        let props: Value = serde_json::from_str(&props).unwrap();
        assert_eq!(props["chat_template"], CHAT_TEMPLATE, "{props}");
        let (code, status, stderr) = orch(&env, &cache, &["engine", "status"], &config);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(status["container"], "running", "{status}");
        assert_eq!(status["ready"], true, "{status}");
    });
    let (code, _, stderr) = orch(&env, &cache, &["engine", "down"], &config);
    assert_eq!(code, 0, "{stderr}");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(
        containers_named(&env, "llama-orch-ctr-llama"),
        0,
        "the container outlived down"
    );

    // Warm: the image is present by digest; prepare is a cache hit.
    let (code, warm, stderr) = orch(&env, &cache, &["engine", "prepare"], &config);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(warm["metadata"]["cache_hit"], true);
    assert_eq!(warm["engine_version"], json!(version));

    // A port already in use is refused before anything starts.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let config = container_config(
        dir.path(),
        "ctr-busy",
        "llamacpp",
        &repository,
        ", tag: fixture",
        &model,
        &[busy_port],
    );
    let (code, _, stderr) = orch(&env, &cache, &["engine", "up"], &config);
    assert_ne!(code, 0, "up on a busy port succeeded");
    assert!(stderr.contains(&busy_port.to_string()), "{stderr}");
    assert_eq!(containers_named(&env, "llama-orch-ctr-busy"), 0);
    drop(busy);

    // A GPU that does not exist on this host is refused with what was found.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "    engine: llamacpp\n",
        "    engine: llamacpp\n    devices: [7]\n",
    );
    std::fs::write(&config, text).unwrap();
    let (code, _, stderr) = orch(&env, &cache, &["engine", "prepare"], &config);
    assert_ne!(code, 0, "a missing GPU was accepted");
    assert!(
        stderr.contains('7') && stderr.to_lowercase().contains("nvidia"),
        "{stderr}"
    );

    // A pinned digest that is not the registry's is refused.
    let wrong = format!(", tag: fixture, digest: \"sha256:{}\"", "0".repeat(64));
    let config = container_config(
        dir.path(),
        "ctr-wrong",
        "llamacpp",
        &repository,
        &wrong,
        &model,
        &[free_port()],
    );
    let (code, _, stderr) = orch(&env, &cache, &["engine", "prepare"], &config);
    assert_ne!(code, 0, "a wrong pinned digest was accepted");
    assert!(stderr.contains(&"0".repeat(64)), "{stderr}");

    // vLLM, TGI and Triton: their rendered commands, with a stand-in image.
    let standin = push_standin_image(&env, dir.path(), registry.port);
    // A directory name holding `,` and `:`: the `--mount` value must be quoted as CSV.
    let model_dir = dir.path().join("models/tiny,model:1");
    std::fs::create_dir_all(&model_dir).unwrap();
    std::fs::write(model_dir.join("config.json"), "{}").unwrap();
    for (engine, expected_arg) in [
        // Tag `1` names no vLLM release before v0.14.0: `vllm serve <model>`.
        ("vllm", "args: /models/tiny,model:1 --host 0.0.0.0"),
        ("tgi", "--model-id /models/tiny,model:1"),
        (
            "triton",
            "tritonserver --model-repository=/models/tiny,model:1",
        ),
    ] {
        let port = free_port();
        let ports = if engine == "triton" {
            vec![port, free_port(), free_port()]
        } else {
            vec![port]
        };
        let pool = format!("standin-{engine}");
        let config = container_config(
            dir.path(),
            &pool,
            engine,
            &standin,
            ", tag: \"1\"",
            &model_dir,
            &ports,
        );
        let (code, up, stderr) = orch(&env, &cache, &["engine", "up"], &config);
        assert_eq!(code, 0, "{engine} up failed: {stderr}");
        assert!(
            up["engine_version"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{engine}-1-sha256-"))
        );
        let outcome = std::panic::catch_unwind(|| {
            let (status, report) = http_get(&format!("http://127.0.0.1:{port}/standin.txt"));
            assert_eq!(status, 200);
            assert!(report.contains(expected_arg), "{engine}: {report}");
            assert!(
                report.contains("STANDIN_MARK=passed-through"),
                "{engine}: {report}"
            );
            assert!(
                report.contains("/models/tiny,model:1:") && report.contains("config.json"),
                "{engine}: the model mount is missing: {report}"
            );
        });
        let (code, _, stderr) = orch(&env, &cache, &["engine", "down"], &config);
        assert_eq!(code, 0, "{stderr}");
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    // `ports: [0]`: the runtime chooses a free host port, and `up` finds and reports it.
    let config = container_config(
        dir.path(),
        "standin-free-port",
        "vllm",
        &standin,
        ", tag: \"1\"",
        &model_dir,
        &[0],
    );
    let (code, up, stderr) = orch(&env, &cache, &["engine", "up"], &config);
    assert_eq!(code, 0, "up on a free port failed: {stderr}");
    let bound = up["ports"][0].as_u64().unwrap_or(0) as u16;
    let outcome = std::panic::catch_unwind(|| {
        assert_ne!(bound, 0, "{up}");
        assert_eq!(up["url"], format!("http://127.0.0.1:{bound}"));
        let (status, report) = http_get(&format!("http://127.0.0.1:{bound}/standin.txt"));
        assert_eq!(status, 200, "{report}");
        assert!(report.contains("--port 8000"), "{report}");
    });
    let (_, status, _) = orch(&env, &cache, &["engine", "status"], &config);
    let (code, _, stderr) = orch(&env, &cache, &["engine", "down"], &config);
    assert_eq!(code, 0, "{stderr}");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(
        status["ports"][0].as_u64(),
        Some(u64::from(bound)),
        "{status}"
    );

    // The prepared run never pulls: with the image removed after prepare, the command a
    // supervisor spawns fails at once, says to prepare again, and fetches nothing.
    let config = container_config(
        dir.path(),
        "standin-removed",
        "vllm",
        &standin,
        ", tag: \"1\"",
        &model_dir,
        &[free_port()],
    );
    let (code, prepared, stderr) = orch(&env, &cache, &["engine", "prepare"], &config);
    assert_eq!(code, 0, "{stderr}");
    let args: Vec<String> = serde_json::from_value(prepared["args"].clone()).unwrap();
    assert_eq!(&args[..3], ["run", "--rm", "--pull=never"], "{args:?}");
    let reference = args
        .iter()
        .find(|a| a.starts_with(&format!("{standin}@sha256:")))
        .expect("the run names the image by digest")
        .clone();
    remove_image_retrying(&env, &image_id(&env, &reference));
    let prepared: provisioner_core::PreparedEngine = serde_json::from_value(prepared).unwrap();
    let supervisor = adapters_host::Supervisor::new(dir.path().join("supervised"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut state = supervisor.start(&prepared).unwrap();
    let started = Instant::now();
    let error = runtime
        .block_on(supervisor.wait_ready(&mut state, Duration::from_secs(120)))
        .unwrap_err();
    let _ = runtime.block_on(supervisor.stop("standin-removed", Duration::from_secs(1)));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a missing image did not fail fast"
    );
    assert!(error.to_string().contains("image not known"), "{error}");
    let hint = error.hint().unwrap_or_default();
    assert!(hint.contains("prepare again"), "{hint}");
    let exists = env
        .apply(command("podman").args(["image", "exists", &reference]))
        .status()
        .unwrap();
    assert!(!exists.success(), "the run pulled {reference}");
}

/// Images built on this host (`localhost/…`) are prepared from podman's store by their image
/// ID; what the run needs from the runtime is checked when it is detected.
#[test]
fn local_images_and_the_runtime_check() {
    let _turn = podman_turn();
    let dir = tempfile::tempdir().unwrap();
    let mut env = Env::new(dir.path(), 1);
    let cache = dir.path().join("cache");
    let model = dir.path().join("model.gguf");
    std::fs::write(&model, tests::STUB_GGUF).unwrap();
    let name = format!("localhost/llama-orch-e2e/standin-{}", std::process::id());
    let port = free_port();
    let config = container_config(
        dir.path(),
        "local-standin",
        "llamacpp",
        &name,
        ", tag: b0",
        &model,
        &[port],
    );

    // Not built yet: said so, with how to build it; no registry, no `insecure`.
    let (code, _, stderr) = orch(&env, &cache, &["engine", "prepare"], &config);
    assert_eq!(code, 6, "{stderr}");
    assert!(
        stderr.contains("not in podman's local store") && stderr.contains("podman build -t"),
        "{stderr}"
    );
    assert!(!stderr.contains("insecure"), "{stderr}");

    let tag = format!("{name}:b0");
    build_standin_image(&env, dir.path(), &tag);
    let outcome = std::panic::catch_unwind(|| {
        let id = image_id(&env, &tag);
        let (code, prepared, stderr) = orch(&env, &cache, &["engine", "prepare"], &config);
        assert_eq!(code, 0, "{stderr}");
        let args: Vec<String> = serde_json::from_value(prepared["args"].clone()).unwrap();
        assert!(args.contains(&format!("sha256:{id}")), "{args:?}");
        assert!(args.contains(&"--pull=never".to_string()), "{args:?}");
        assert_eq!(
            prepared["engine_version"],
            format!("llamacpp-b0-sha256-{}", &id[..12])
        );
        let (code, up, stderr) = orch(&env, &cache, &["engine", "up"], &config);
        assert_eq!(code, 0, "up failed: {stderr}");
        let (status, report) = http_get(&format!("http://127.0.0.1:{port}/standin.txt"));
        let (code, _, stderr) = orch(&env, &cache, &["engine", "down"], &config);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(status, 200, "{up}");
        assert!(report.contains("--model /models/model.gguf"), "{report}");
    });

    // The runtime check: an init_path naming a missing file fails prepare (exit 5) with what
    // to install, before anything runs; the check is cached by containers.conf's contents.
    let conf = dir.path().join("no-init.conf");
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\ninit_path = \"/nonexistent/catatonit\"\n[engine]\nruntime = \"runc\"\n",
    )
    .unwrap();
    env.set("CONTAINERS_CONF", conf);
    let (code, _, stderr) = orch(&env, &cache, &["engine", "prepare"], &config);
    env.podman(&["rmi", "-f", &tag]);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.contains("/nonexistent/catatonit") && stderr.contains("no-init.conf"),
        "{stderr}"
    );
    assert!(stderr.contains("catatonit"), "{stderr}");
}

/// Container mode kill trials: SIGKILL anywhere in a cold `prepare` (registry resolution, pull,
/// inspection), then the next prepare succeeds and the image it names is present; nothing of the
/// killed run (a private auth file) is left under `containers/tmp/`. `KILL_TRIALS` trials, 6 by
/// default.
#[test]
fn a_container_prepare_killed_anywhere_is_redone_cleanly() {
    let _turn = podman_turn();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    let env = Env::new(dir.path(), registry.port);
    let repository = push_standin_image(&env, dir.path(), registry.port);
    let model = dir.path().join("tiny.gguf");
    std::fs::write(&model, tests::STUB_GGUF).unwrap();
    let config = container_config(
        dir.path(),
        "killed-pull",
        "llamacpp",
        &repository,
        ", tag: \"1\"",
        &model,
        &[free_port()],
    );
    let remove_image = || {
        let _ = command("podman")
            .envs(env_vars(&env))
            .args(["rmi", "-f", &format!("{repository}:1")])
            .output();
    };
    remove_image();
    let cache = dir.path().join("cache-probe");
    let started = Instant::now();
    let (code, _, stderr) = orch(&env, &cache, &["engine", "prepare"], &config);
    assert_eq!(code, 0, "{stderr}");
    let cold = started.elapsed().as_millis() as u64;
    let mut random = Random::new();
    for trial in 0..trials() {
        remove_image();
        let cache = dir.path().join(format!("cache-{trial}"));
        kill_within(
            &env,
            &cache,
            &["engine", "prepare"],
            &config,
            cold + 50,
            &mut random,
        );

        let (code, prepared, stderr) = orch(&env, &cache, &["engine", "prepare"], &config);
        assert_eq!(code, 0, "trial {trial}: {stderr}");
        let reference = prepared["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.as_str())
            .find(|a| a.contains("@sha256:"))
            .unwrap()
            .to_string();
        let exists = command("podman")
            .envs(env_vars(&env))
            .args(["image", "exists", &reference])
            .status()
            .unwrap();
        assert!(
            exists.success(),
            "trial {trial}: {reference} is not present"
        );
        let tmp = cache.join("containers/tmp");
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "trial {trial}: {left:?} left in {}",
            tmp.display()
        );
    }
    remove_image();
}

/// Container mode `up` kill trials: SIGKILL of `orchctl engine up` anywhere (before, during and
/// after the runtime's `run`); a container left running is known to `status` (adopted through
/// the launch record) and removed by `down`, and the next `up` starts exactly one container.
/// `KILL_TRIALS` trials, 6 by default.
#[test]
#[allow(clippy::print_stdout)] // the trials report what they found
fn a_container_up_killed_anywhere_leaves_no_container_unknown() {
    let _turn = podman_turn();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    let env = Env::new(dir.path(), registry.port);
    let repository = push_standin_image(&env, dir.path(), registry.port);
    let model = dir.path().join("tiny.gguf");
    std::fs::write(&model, tests::STUB_GGUF).unwrap();
    let pool = "killed-up";
    let config = container_config(
        dir.path(),
        pool,
        "llamacpp",
        &repository,
        ", tag: \"1\"",
        &model,
        &[free_port()],
    );
    let cache = dir.path().join("cache");
    let (code, _, stderr) = orch(&env, &cache, &["engine", "prepare"], &config);
    assert_eq!(code, 0, "{stderr}");
    let started = Instant::now();
    let (code, _, stderr) = orch(&env, &cache, &["engine", "up"], &config);
    assert_eq!(code, 0, "{stderr}");
    let window = started.elapsed().as_millis() as u64 + 200;
    let (code, _, stderr) = orch(&env, &cache, &["engine", "down"], &config);
    assert_eq!(code, 0, "{stderr}");
    let name = format!("llama-orch-{pool}");
    let gone = |trial: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while containers_named(&env, &name) > 0 {
            assert!(
                Instant::now() < deadline,
                "trial {trial}: a container survived down"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    gone(0);
    let mut random = Random::new();
    let (mut adopted, mut orphans) = (0, 0);
    for trial in 0..trials() {
        kill_within(
            &env,
            &cache,
            &["engine", "up"],
            &config,
            window,
            &mut random,
        );
        std::thread::sleep(Duration::from_millis(300));

        if containers_named(&env, &name) > 0 {
            let (_, status, _) = orch(&env, &cache, &["engine", "status"], &config);
            if status["alive"] == true {
                adopted += 1;
            } else {
                orphans += 1;
            }
        }
        let (code, _, stderr) = orch(&env, &cache, &["engine", "down"], &config);
        assert!(code == 0 || code == 12, "trial {trial}: down: {stderr}");
        gone(trial);
        let (code, _, stderr) = orch(&env, &cache, &["engine", "up"], &config);
        assert_eq!(code, 0, "trial {trial}: the next up: {stderr}");
        assert_eq!(containers_named(&env, &name), 1, "trial {trial}");
        let (code, _, stderr) = orch(&env, &cache, &["engine", "down"], &config);
        assert_eq!(code, 0, "trial {trial}: {stderr}");
        gone(trial);
    }
    println!(
        "trials: {}, containers found after the kill and known: {adopted}",
        trials()
    );
    assert_eq!(orphans, 0, "containers running that status did not know");
    remove_image_retrying(&env, &format!("{repository}:1"));
}

/// Starts `orchctl <words> --config CONFIG` with `env`, SIGKILLs it after a moment below
/// `window` ms, and reaps it.
fn kill_within(
    env: &Env,
    cache: &Path,
    words: &[&str],
    config: &Path,
    window: u64,
    random: &mut Random,
) {
    let mut killed = orchctl(cache);
    env.apply(&mut killed);
    let mut child = killed
        .args(words)
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(random.below(window)));
    let _ = child.kill();
    let _ = child.wait();
}

/// The variables `env` sets, for commands built by hand.
fn env_vars(env: &Env) -> Vec<(String, std::ffi::OsString)> {
    let mut probe = command("true");
    env.apply(&mut probe);
    probe
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_string_lossy().to_string(), v?.to_os_string())))
        .collect()
}

/// `podman rmi -f`, tried again for a few seconds: a container of the image that `--rm` is
/// still removing (after `down`) makes podman refuse for a moment.
fn remove_image_retrying(env: &Env, image: &str) {
    let mut last = String::new();
    for _ in 0..40 {
        let output = env
            .apply(&mut command("podman"))
            .args(["rmi", "-f", image])
            .output()
            .unwrap();
        if output.status.success() {
            return;
        }
        last = String::from_utf8_lossy(&output.stderr).to_string();
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("podman rmi -f {image} kept failing: {last}");
}
