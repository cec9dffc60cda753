//! Container mode for real: a docker-registry with htpasswd auth on loopback, podman, an image
//! holding the llama-server built from source (pushed with credentials), `orchctl engine up` on
//! it by digest, a real completion, `down`. vLLM, TGI and Triton images cannot be had here, so
//! their rendered commands run with the image swapped for a busybox stand-in that answers each
//! engine's readiness path and reports the arguments, environment and mounts it was given.
//!
//! Everything runs in one test so that the registry is started and stopped exactly once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::{fixtures, free_port, http_get, http_post_json, orchctl, shared_cache};

const USER: &str = "orch";
const PASSWORD: &str = "s3cret-Passw0rd";

/// Test harness commands (podman, htpasswd, the registry) run directly.
#[allow(clippy::disallowed_methods)]
fn command(program: &str) -> Command {
    Command::new(program)
}

fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("the command starts");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        let htpasswd = run_ok(command("htpasswd").args(["-Bbn", USER, PASSWORD]));
        std::fs::write(dir.join("htpasswd"), &htpasswd.stdout).unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test-secret\nauth:\n  htpasswd:\n    realm: test\n    path: {auth}\n",
            root = dir.join("storage").display(),
            auth = dir.join("htpasswd").display(),
        );
        std::fs::write(dir.join("registry.yml"), config).unwrap();
        let child = command("docker-registry")
            .arg("serve")
            .arg(dir.join("registry.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts (apt-get install docker-registry)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, port }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment every podman and orchctl call here gets.
struct Env {
    vars: BTreeMap<String, PathBuf>,
}

impl Env {
    fn new(dir: &Path, registry: u16) -> Env {
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n[engine]\nruntime = \"runc\"\n",
        )
        .unwrap();
        let auth = dir.join("auth.json");
        let token = base64(&format!("{USER}:{PASSWORD}"));
        std::fs::write(
            &auth,
            json!({"auths": {format!("127.0.0.1:{registry}"): {"auth": token}}}).to_string(),
        )
        .unwrap();
        let mut vars = BTreeMap::new();
        vars.insert("CONTAINERS_CONF".to_string(), conf);
        vars.insert("REGISTRY_AUTH_FILE".to_string(), auth);
        Env { vars }
    }

    fn apply<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        for (key, value) in &self.vars {
            command.env(key, value);
        }
        command
    }

    fn podman(&self, args: &[&str]) -> Output {
        run_ok(self.apply(command("podman").args(args)))
    }
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Copies a dynamically linked program and every library `ldd` names into a root file system.
fn copy_with_libraries(program: &Path, rootfs: &Path, inside: &str) {
    let target = rootfs.join(inside.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(program, &target).unwrap();
    let ldd = run_ok(command("ldd").arg(program));
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            let real = std::fs::canonicalize(path).unwrap();
            let dest = rootfs.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(real, dest).unwrap();
        }
    }
}

/// An image holding the llama-server built from source, labelled with the commit it was built
/// from, pushed to the registry with credentials. Returns the repository.
fn push_llama_image(env: &Env, dir: &Path, registry: u16) -> String {
    let output = orchctl(&shared_cache())
        .args(["-q", "engine", "prepare", "--json", "--config"])
        .arg(tests::write_source_config(
            dir,
            "image-source",
            free_port(),
            tests::TEST_CMAKE_FLAGS,
            &[],
        ))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "source prepare: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let prepared: Value = serde_json::from_slice(&output.stdout).unwrap();
    let context = dir.join("llama-image");
    copy_with_libraries(
        Path::new(prepared["bin"].as_str().unwrap()),
        &context.join("rootfs"),
        "/llama-server",
    );
    std::fs::create_dir_all(context.join("rootfs/tmp")).unwrap();
    std::fs::write(
        context.join("Containerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"/llama-server\"]\n",
    )
    .unwrap();
    let repository = format!("127.0.0.1:{registry}/llama/server");
    let revision = format!("org.opencontainers.image.revision={}", fixtures().commit);
    let tag = format!("{repository}:fixture");
    env.podman(&[
        "build",
        "-q",
        "--label",
        &revision,
        "-t",
        &tag,
        &context.to_string_lossy(),
    ]);
    let creds = format!("{USER}:{PASSWORD}");
    env.podman(&["push", "-q", "--tls-verify=false", "--creds", &creds, &tag]);
    // Remove the local copy so that prepare has to pull it by digest.
    env.podman(&["rmi", "-f", &tag]);
    repository
}

/// A busybox image that answers every engine's readiness path and writes what it was given
/// (arguments, an environment variable, the mounted model directories) to /standin.txt.
fn push_standin_image(env: &Env, dir: &Path, registry: u16) -> String {
    let context = dir.join("standin");
    std::fs::create_dir_all(context.join("rootfs/bin")).unwrap();
    std::fs::copy("/bin/busybox", context.join("rootfs/bin/busybox")).unwrap();
    std::fs::write(
        context.join("rootfs/standin.sh"),
        r#"port=8000
prev=""
for a in "$@"; do [ "$prev" = "--port" ] && port=$a; prev=$a; done
/bin/busybox mkdir -p /www/v1 /www/v2/health /tmp
echo '{"object":"list","data":[]}' > /www/v1/models
echo ok > /www/health
echo ok > /www/v2/health/ready
{ echo "args: $*"; echo "env: STANDIN_MARK=$STANDIN_MARK"; /bin/busybox ls /models /data 2>/dev/null; } > /www/standin.txt
exec /bin/busybox httpd -f -p "$port" -h /www
"#,
    )
    .unwrap();
    std::fs::write(
        context.join("Containerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"/bin/busybox\", \"sh\", \"/standin.sh\"]\n",
    )
    .unwrap();
    let repository = format!("127.0.0.1:{registry}/standin");
    let tag = format!("{repository}:1");
    env.podman(&["build", "-q", "-t", &tag, &context.to_string_lossy()]);
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
    let model_dir = dir.path().join("models/tiny-model");
    std::fs::create_dir_all(&model_dir).unwrap();
    std::fs::write(model_dir.join("config.json"), "{}").unwrap();
    for (engine, expected_arg) in [
        ("vllm", "--model /models/tiny-model"),
        ("tgi", "--model-id /data/tiny-model"),
        ("triton", "tritonserver --model-repository=/models"),
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
            let listing = if engine == "triton" {
                "config.json"
            } else {
                "tiny-model"
            };
            assert!(
                report.contains(listing),
                "{engine}: the model mount is missing: {report}"
            );
        });
        let (code, _, stderr) = orch(&env, &cache, &["engine", "down"], &config);
        assert_eq!(code, 0, "{stderr}");
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}
