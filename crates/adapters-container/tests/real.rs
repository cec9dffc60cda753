//! End-to-end tests with the real `HostShell`, podman (and the docker CLI against
//! `podman system service`), a real `docker-registry` with htpasswd auth on a loopback port, and
//! small in-test registries that serve tampered content.
//!
//! Nothing is skipped: a missing tool fails the test with the apt package that provides it.
//! Every test uses its own podman storage (vfs, in a temporary directory), so pulls really happen
//! and the host's images are untouched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters_container::{ContainerSettings, Credentials, PodmanOrDocker, sha256_digest};
use adapters_host::process::Signal;
use adapters_host::{DetachedSpec, HostShell, kill_group, spawn_detached};
use provisioner_core::{
    CommandOutput, CommandSpec, ContainerRuntime, Engine, Error, FoundBackend, ImageSpec,
    NoProgress, RecordingShell, RuntimeKind, Shell,
};

const USER: &str = "tester";
const PASSWORD: &str = "pw-Zq8-very-secret";

fn require(program: &str, package: &str) -> PathBuf {
    adapters_host::process::locate(program)
        .unwrap_or_else(|| {
            panic!("`{program}` is required by this test: sudo apt-get install -y {package}")
        })
        .path
}

/// The real shell, recording every command that reaches it.
fn recording() -> Arc<RecordingShell> {
    Arc::new(RecordingShell::new(Arc::new(HostShell::new(Arc::new(
        NoProgress,
    )))))
}

/// A background process killed (as a group) when dropped.
struct Background {
    pid: u32,
    log: PathBuf,
}

impl Background {
    fn start(
        program: PathBuf,
        args: &[&str],
        env: &BTreeMap<String, String>,
        dir: &Path,
        log: &str,
    ) -> Background {
        let log = dir.join(log);
        let pid = spawn_detached(&DetachedSpec {
            program,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env.clone(),
            cwd: dir.to_path_buf(),
            log: log.clone(),
        })
        .unwrap();
        Background { pid, log }
    }

    fn stop(&self) {
        kill_group(self.pid, Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        kill_group(self.pid, Signal::SIGKILL);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_port(port: u16, log: &Path) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "nothing listens on 127.0.0.1:{port}; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A temporary world: containers.conf, two podman storages (build, run), a registry.
struct World {
    dir: tempfile::TempDir,
    shell: HostShell,
    /// Variables for the test's own podman (build storage).
    build_env: BTreeMap<String, String>,
    /// Variables for the adapter's runtime (run storage).
    run_env: BTreeMap<String, String>,
    podman: PathBuf,
}

impl World {
    fn new() -> World {
        let podman = require("podman", "podman");
        require("busybox", "busybox-static");
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("containers.conf");
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n[engine]\nruntime = \"runc\"\n",
        )
        .unwrap();
        let mut envs = Vec::new();
        for name in ["build", "run"] {
            let storage = dir.path().join(format!("storage-{name}.conf"));
            std::fs::write(
                &storage,
                format!(
                    "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph-{1}\"\nrunroot = \"{0}/runroot-{1}\"\n",
                    dir.path().display(),
                    name
                ),
            )
            .unwrap();
            let mut env = BTreeMap::new();
            env.insert(
                "PATH".to_string(),
                std::env::var("PATH").unwrap_or_default(),
            );
            env.insert("HOME".to_string(), dir.path().display().to_string());
            env.insert("CONTAINERS_CONF".to_string(), conf.display().to_string());
            env.insert(
                "CONTAINERS_STORAGE_CONF".to_string(),
                storage.display().to_string(),
            );
            envs.push(env);
        }
        let run_env = envs.pop().unwrap();
        let build_env = envs.pop().unwrap();
        World {
            dir,
            shell: HostShell::new(Arc::new(NoProgress)),
            build_env,
            run_env,
            podman,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    async fn run(
        &self,
        program: &Path,
        args: &[&str],
        env: &BTreeMap<String, String>,
    ) -> CommandOutput {
        let mut command = CommandSpec::new(&program.display().to_string(), args.iter().copied());
        command.env = env.clone();
        let output = self.shell.run(&command).await.unwrap();
        assert!(
            output.success(),
            "`{}` failed ({}):\n{}",
            command.display(),
            output.status(),
            output.tail
        );
        output
    }

    /// Starts docker-registry with htpasswd auth on a free loopback port.
    async fn registry(&self) -> (Background, String) {
        let program = require("docker-registry", "docker-registry");
        let htpasswd = require("htpasswd", "apache2-utils");
        let port = free_port();
        let out = self
            .run(&htpasswd, &["-Bbn", USER, PASSWORD], &self.build_env)
            .await;
        std::fs::write(self.path().join("htpasswd"), out.stdout).unwrap();
        let config = self.path().join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {0}/registry\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: x\nauth:\n  htpasswd:\n    realm: test\n    path: {0}/htpasswd\n",
                self.path().display()
            ),
        )
        .unwrap();
        let background = Background::start(
            program,
            &["serve", config.to_str().unwrap()],
            &self.build_env,
            self.path(),
            "registry.log",
        );
        wait_for_port(port, &background.log).await;
        (background, format!("127.0.0.1:{port}"))
    }

    /// Builds a busybox image labelled revision `abc123` and pushes it as `registry/test/busybox:v1`;
    /// returns the pushed digest.
    async fn push_busybox(&self, registry: &str) -> String {
        let context = self.path().join("context");
        std::fs::create_dir_all(&context).unwrap();
        std::fs::copy("/bin/busybox", context.join("busybox")).unwrap();
        std::fs::write(
            context.join("Containerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\n",
        )
        .unwrap();
        let tag = format!("{registry}/test/busybox:v1");
        self.run(
            &self.podman,
            &[
                "build",
                "--label",
                "org.opencontainers.image.revision=abc123",
                "--label",
                "org.opencontainers.image.version=1.36.1",
                "-t",
                &tag,
                context.to_str().unwrap(),
            ],
            &self.build_env,
        )
        .await;
        let digest_file = self.path().join("digest");
        let creds = format!("{USER}:{PASSWORD}");
        self.run(
            &self.podman,
            &[
                "push",
                "--tls-verify=false",
                "--creds",
                &creds,
                "--digestfile",
                digest_file.to_str().unwrap(),
                &tag,
            ],
            &self.build_env,
        )
        .await;
        std::fs::read_to_string(digest_file)
            .unwrap()
            .trim()
            .to_string()
    }

    /// An auth file with the registry's credentials (base64 form).
    fn auth_file(&self, registry: &str) -> PathBuf {
        let path = self.path().join("auth.json");
        // base64 of `tester:pw-Zq8-very-secret`.
        let encoded = "dGVzdGVyOnB3LVpxOC12ZXJ5LXNlY3JldA==";
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"{registry}":{{"auth":"{encoded}"}}}}}}"#),
        )
        .unwrap();
        path
    }

    fn settings(&self, auth_files: Vec<PathBuf>) -> ContainerSettings {
        ContainerSettings {
            cache_dir: self.path().join("cache"),
            auth_files,
            env: self.run_env.clone(),
            credentials: None,
            cdi_dirs: Vec::new(),
            podman_files: adapters_container::PodmanFiles::defaults(None),
            distro: provisioner_core::Distro::Unknown,
        }
    }

    fn adapter(&self, shell: Arc<dyn Shell>, settings: ContainerSettings) -> PodmanOrDocker {
        PodmanOrDocker::new(
            shell,
            Arc::new(policy::HostPolicy::default()),
            Arc::new(NoProgress),
            settings,
        )
    }
}

fn spec(image: String, tag: Option<&str>, digest: Option<&str>) -> ImageSpec {
    let image: provisioner_core::ImageReference = image.parse().expect("an image reference");
    ImageSpec {
        engine: Engine::Llamacpp,
        image: image.with(
            tag.map(|t| t.parse().expect("a tag")),
            digest.map(|d| d.parse().expect("a digest")),
        ),
        insecure: true,
        runtime: Some(RuntimeKind::Podman),
        devices: Vec::new(),
        inputs: Vec::new(),
    }
}

fn assert_secret_free(error: &Error) {
    let text = format!("{error} {:?} {error:?}", error.hint());
    assert!(!text.contains(PASSWORD), "the password leaked: {text}");
    assert!(
        !text.contains("dGVzdGVy"),
        "the encoded credentials leaked: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolves_pulls_verifies_and_then_hits_the_cache_without_the_registry() {
    let world = World::new();
    let (registry_process, registry) = world.registry().await;
    let pushed = world.push_busybox(&registry).await;
    assert!(pushed.starts_with("sha256:"), "{pushed}");
    let auth = world.auth_file(&registry);

    let shell = recording();
    let adapter = world.adapter(shell.clone(), world.settings(vec![auth.clone()]));
    let image = format!("{registry}/test/busybox");
    let artifact = adapter
        .ensure_image(&spec(image.clone(), Some("v1"), None))
        .await
        .unwrap();
    assert_eq!(artifact.digest.as_str(), pushed);
    assert_eq!(artifact.reference, format!("{image}@{pushed}"));
    assert_eq!(artifact.revision.as_deref(), Some("abc123"));
    assert_eq!(artifact.version.as_deref(), Some("1.36.1"));
    assert!(!artifact.cache_hit);
    assert_eq!(artifact.runtime, RuntimeKind::Podman);
    assert_eq!(artifact.runtime_env, world.run_env);
    // vfs storage: the layers are not read, so nothing shows the backend.
    assert_eq!(artifact.backend.backend, FoundBackend::Unknown);
    assert!(
        artifact.backend.how.contains("storage driver is vfs"),
        "{}",
        artifact.backend.how
    );
    let commands = shell.commands();
    let pull = commands
        .iter()
        .find(|c| c.args.first().map(String::as_str) == Some("pull"))
        .expect("a pull ran");
    assert!(pull.args.contains(&"--tls-verify=false".to_string()));
    assert!(pull.args.contains(&"--authfile".to_string()), "{pull:?}");
    assert_eq!(pull.args.last().unwrap(), &format!("{image}@{pushed}"));
    for command in &commands {
        let text = format!("{command:?}");
        assert!(
            !text.contains(PASSWORD) && !text.contains("dGVzdGVy"),
            "{text}"
        );
    }
    // The temporary auth file is gone.
    let leftovers: Vec<_> = std::fs::read_dir(world.path().join("cache/tmp"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let index = std::fs::read_to_string(world.path().join("cache/images-v1.json")).unwrap();
    assert!(
        index.contains(&pushed) && index.contains("abc123"),
        "{index}"
    );

    // Warm: the registry is gone, a fresh adapter (a new process) still finds the image.
    registry_process.stop();
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let shell = recording();
        let adapter = world.adapter(shell.clone(), world.settings(vec![auth.clone()]));
        let started = Instant::now();
        let warm = adapter
            .ensure_image(&spec(image.clone(), Some("v1"), None))
            .await
            .unwrap();
        best = best.min(started.elapsed());
        assert!(warm.cache_hit);
        assert_eq!(warm.digest.as_str(), pushed);
        assert_eq!(warm.revision.as_deref(), Some("abc123"));
        assert_eq!(shell.commands().len(), 1, "{:?}", shell.commands());
    }
    tracing::info!(?best, "warm ensure_image");
    assert!(
        best < Duration::from_millis(1500),
        "warm path took {best:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_wrong_pins_unknown_names_and_wrong_passwords() {
    let world = World::new();
    let (_registry_process, registry) = world.registry().await;
    let pushed = world.push_busybox(&registry).await;
    let auth = world.auth_file(&registry);
    let adapter = world.adapter(recording(), world.settings(vec![auth.clone()]));
    let image = format!("{registry}/test/busybox");

    // A pinned digest that is not the tag's.
    let wrong = sha256_digest(b"something else");
    let error = adapter
        .ensure_image(&spec(image.clone(), Some("v1"), Some(&wrong)))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, Error::Source { .. }), "{error:?}");
    assert!(text.contains(&wrong) && text.contains(&pushed), "{text}");

    // Unknown tag.
    let error = adapter
        .ensure_image(&spec(image.clone(), Some("nope"), None))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains(&registry) && text.contains("test/busybox"),
        "{text}"
    );
    assert!(text.contains("has no tag `nope`"), "{text}");
    assert!(error.hint().unwrap().contains("v1"), "{:?}", error.hint());

    // Unknown repository.
    let error = adapter
        .ensure_image(&spec(format!("{registry}/no/such"), Some("v1"), None))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains(&registry) && text.contains("no/such"),
        "{text}"
    );

    // Wrong password (from the variables): authentication failed, the secret nowhere.
    let mut settings = world.settings(Vec::new());
    settings.credentials = Some(Credentials::new(USER, "wrong-Xy7-password"));
    let adapter = world.adapter(recording(), settings);
    let error = adapter
        .ensure_image(&spec(image.clone(), Some("v1"), None))
        .await
        .unwrap_err();
    let text = format!("{error} {:?}", error.hint());
    assert!(
        text.contains(&format!("authentication failed for {registry}")),
        "{text}"
    );
    assert!(!text.contains("wrong-Xy7-password"), "{text}");
    assert!(error.hint().unwrap().contains("auth.json"), "{text}");
    assert_secret_free(&error);

    // No credentials at all.
    let adapter = world.adapter(recording(), world.settings(Vec::new()));
    let error = adapter
        .ensure_image(&spec(image.clone(), Some("v1"), None))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("authentication"), "{error}");

    // Offline policy refuses a remote registry before any request.
    let offline = PodmanOrDocker::new(
        recording(),
        Arc::new(policy::HostPolicy {
            offline: true,
            ..policy::HostPolicy::default()
        }),
        Arc::new(NoProgress),
        world.settings(Vec::new()),
    );
    let error = offline
        .ensure_image(&spec("registry.invalid/x/y".into(), Some("v1"), None))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::PolicyDenied { .. }), "{error:?}");
}

// ---------------------------------------------------------------------------------------------
// Tampering registries

/// Serves one repository: `manifest` under the claimed digest and tag `v1`, and `blobs`.
async fn tampering_registry(
    claimed: String,
    manifest: Vec<u8>,
    blobs: BTreeMap<String, Vec<u8>>,
) -> (String, tokio::task::JoinHandle<()>) {
    use axum::body::Body;
    use axum::http::{Request, Response, StatusCode};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let handler = move |request: Request<Body>| {
        let (claimed, manifest, blobs) = (claimed.clone(), manifest.clone(), blobs.clone());
        async move {
            let path = request.uri().path().to_string();
            let head = request.method() == axum::http::Method::HEAD;
            let mut response = Response::builder().status(StatusCode::OK);
            let body = if path == "/v2/" {
                b"{}".to_vec()
            } else if path.starts_with("/v2/evil/manifests/") {
                response = response
                    .header("Docker-Content-Digest", claimed.as_str())
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json");
                manifest
            } else if let Some(digest) = path.strip_prefix("/v2/evil/blobs/")
                && let Some(blob) = blobs.get(digest)
            {
                blob.clone()
            } else {
                response = response.status(StatusCode::NOT_FOUND);
                Vec::new()
            };
            let body = if head { Vec::new() } else { body };
            response.body(Body::from(body)).unwrap()
        }
    };
    let app = axum::Router::new().fallback(handler);
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (address, task)
}

fn manifest_for(config: &[u8]) -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": sha256_digest(b"layer"),
            "size": 5,
        }],
    })
    .to_string()
    .into_bytes()
}

const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux","config":{"Labels":{"org.opencontainers.image.revision":"abc123"}},"rootfs":{"type":"layers","diff_ids":[]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_does_not_match_its_digest_is_refused() {
    let world = World::new();
    let genuine = manifest_for(CONFIG);
    let claimed = sha256_digest(&genuine);
    let mut tampered = genuine.clone();
    let at = tampered.len() - 3;
    tampered.insert(at, b' ');
    let blobs = BTreeMap::from([(sha256_digest(CONFIG), CONFIG.to_vec())]);
    let (registry, _server) = tampering_registry(claimed.clone(), tampered, blobs).await;
    let shell = recording();
    let adapter = world.adapter(shell.clone(), world.settings(Vec::new()));
    let error = adapter
        .ensure_image(&spec(format!("{registry}/evil"), Some("v1"), None))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, Error::Source { .. }), "{error:?}");
    assert!(
        text.contains("manifest that does not match its digest"),
        "{text}"
    );
    assert!(text.contains(&claimed), "{text}");
    assert!(
        !shell
            .commands()
            .iter()
            .any(|c| c.args.first().map(String::as_str) == Some("pull")),
        "nothing may be pulled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_blob_that_does_not_match_its_digest_is_refused() {
    let world = World::new();
    let manifest = manifest_for(CONFIG);
    let digest = sha256_digest(&manifest);
    let forged = CONFIG
        .to_vec()
        .into_iter()
        .map(|b| if b == b'a' { b'b' } else { b })
        .collect::<Vec<u8>>();
    let blobs = BTreeMap::from([(sha256_digest(CONFIG), forged)]);
    let (registry, _server) = tampering_registry(digest.clone(), manifest, blobs).await;
    let adapter = world.adapter(recording(), world.settings(Vec::new()));
    let error = adapter
        .ensure_image(&spec(format!("{registry}/evil"), Some("v1"), None))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("config blob that does not match its digest"),
        "{text}"
    );
    assert!(text.contains(&sha256_digest(CONFIG)), "{text}");
}

// ---------------------------------------------------------------------------------------------
// docker fallback

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_cli_against_podman_system_service() {
    let world = World::new();
    let docker = require("docker", "docker-cli (or docker.io)");
    let (_registry_process, registry) = world.registry().await;
    let pushed = world.push_busybox(&registry).await;
    let auth = world.auth_file(&registry);

    // The service's registries.conf marks the loopback registry insecure (docker has no flag).
    let registries = world.path().join("registries.conf");
    std::fs::write(
        &registries,
        format!("[[registry]]\nlocation = \"{registry}\"\ninsecure = true\n"),
    )
    .unwrap();
    let socket = world.path().join("podman.sock");
    let mut service_env = world.run_env.clone();
    service_env.insert(
        "CONTAINERS_REGISTRIES_CONF".to_string(),
        registries.display().to_string(),
    );
    let service = Background::start(
        world.podman.clone(),
        &[
            "system",
            "service",
            "--time=0",
            &format!("unix://{}", socket.display()),
        ],
        &service_env,
        world.path(),
        "service.log",
    );
    for _ in 0..200 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        socket.exists(),
        "podman system service did not start:\n{}",
        std::fs::read_to_string(&service.log).unwrap_or_default()
    );

    let mut settings = world.settings(vec![auth]);
    settings.env.insert(
        "DOCKER_HOST".to_string(),
        format!("unix://{}", socket.display()),
    );
    let shell = recording();
    let adapter = world.adapter(shell.clone(), settings);
    let mut docker_spec = spec(format!("{registry}/test/busybox"), Some("v1"), None);
    docker_spec.runtime = Some(RuntimeKind::Docker);
    let artifact = adapter.ensure_image(&docker_spec).await.unwrap();
    assert_eq!(artifact.runtime, RuntimeKind::Docker);
    assert_eq!(artifact.program, docker);
    assert_eq!(artifact.digest.as_str(), pushed);
    assert_eq!(artifact.revision.as_deref(), Some("abc123"));
    assert!(!artifact.cache_hit);
    let commands = shell.commands();
    assert!(
        commands
            .iter()
            .all(|c| c.program == docker.display().to_string()),
        "{commands:?}"
    );
    let pull = commands
        .iter()
        .find(|c| c.args.contains(&"pull".to_string()))
        .unwrap();
    assert_eq!(pull.args[0], "--config");
    // Warm, through docker.
    let warm = adapter.ensure_image(&docker_spec).await.unwrap();
    assert!(warm.cache_hit);
}

/// Overlay storage of its own: images built with ggml's libraries in `/app` (empty files), with
/// `libggml-cuda.so` present, absent, and deleted by a later layer (a real overlay whiteout).
/// The adapter reads the layers `image inspect` names, without running the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_is_read_from_the_image_layers_of_overlay_storage() {
    let world = World::new();
    let storage = world.path().join("storage-overlay.conf");
    std::fs::write(
        &storage,
        format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/graph-overlay\"\nrunroot = \"{0}/runroot-overlay\"\n",
            world.path().display()
        ),
    )
    .unwrap();
    let mut env = world.run_env.clone();
    env.insert(
        "CONTAINERS_STORAGE_CONF".to_string(),
        storage.display().to_string(),
    );
    let context = world.path().join("ggml");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy("/bin/busybox", context.join("busybox")).unwrap();
    for name in [
        "libggml-base.so",
        "libggml-cpu-haswell.so",
        "libggml-cuda.so",
    ] {
        std::fs::write(context.join(name), b"").unwrap();
    }
    let images = [
        (
            "cuda",
            "FROM scratch\nCOPY libggml-base.so libggml-cpu-haswell.so libggml-cuda.so /app/\nWORKDIR /app\n",
            FoundBackend::Cuda,
        ),
        (
            "cpu",
            "FROM scratch\nCOPY libggml-base.so libggml-cpu-haswell.so /app/\nWORKDIR /app\n",
            FoundBackend::Cpu,
        ),
        (
            "deleted",
            "FROM localhost/ggml:cuda\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"rm\", \"/app/libggml-cuda.so\"]\n",
            FoundBackend::Cpu,
        ),
    ];
    for (tag, containerfile, expected) in images {
        let file = context.join(format!("Containerfile.{tag}"));
        std::fs::write(&file, containerfile).unwrap();
        let name = format!("localhost/ggml:{tag}");
        world
            .run(
                &world.podman,
                &[
                    "build",
                    "-f",
                    file.to_str().unwrap(),
                    "-t",
                    &name,
                    context.to_str().unwrap(),
                ],
                &env,
            )
            .await;
        let inspect = world
            .run(
                &world.podman,
                &["image", "inspect", "--format", "{{.Digest}}", &name],
                &env,
            )
            .await;
        let digest = inspect.stdout.trim().to_string();
        let adapter = world.adapter(
            recording(),
            ContainerSettings {
                env: env.clone(),
                ..world.settings(Vec::new())
            },
        );
        let artifact = adapter
            .ensure_image(&spec(
                "localhost/ggml".to_string(),
                Some(tag),
                Some(digest.as_str()),
            ))
            .await
            .unwrap();
        assert!(artifact.cache_hit, "{tag}: a local image by digest");
        assert_eq!(
            artifact.backend.backend, expected,
            "{tag}: {:?}",
            artifact.backend
        );
        if expected == FoundBackend::Cuda {
            assert!(
                artifact.backend.how.contains("libggml-cuda.so"),
                "{}",
                artifact.backend.how
            );
        } else {
            assert!(
                artifact
                    .backend
                    .how
                    .contains("libggml-base.so, libggml-cpu-haswell.so"),
                "{tag}: {}",
                artifact.backend.how
            );
        }
    }

    // A cold pull from the registry into overlay storage: the layers come from podman's store
    // files (no `image inspect` after the pull), and show what `image inspect` shows.
    let (_registry_process, registry) = world.registry().await;
    let pushed = format!("{registry}/ggml/deleted:v1");
    let creds = format!("{USER}:{PASSWORD}");
    world
        .run(
            &world.podman,
            &["tag", "localhost/ggml:deleted", &pushed],
            &env,
        )
        .await;
    world
        .run(
            &world.podman,
            &["push", "--tls-verify=false", "--creds", &creds, &pushed],
            &env,
        )
        .await;
    for name in ["localhost/ggml:deleted", pushed.as_str()] {
        world.run(&world.podman, &["rmi", name], &env).await;
    }
    let shell = recording();
    let adapter = world.adapter(
        shell.clone(),
        ContainerSettings {
            env: env.clone(),
            ..world.settings(vec![world.auth_file(&registry)])
        },
    );
    let image = format!("{registry}/ggml/deleted");
    let cold = adapter
        .ensure_image(&spec(image.clone(), Some("v1"), None))
        .await
        .unwrap();
    assert!(!cold.cache_hit);
    let after_pull: Vec<String> = shell
        .commands()
        .iter()
        .skip_while(|c| c.args.first().map(String::as_str) != Some("pull"))
        .skip(1)
        .map(|c| c.args.join(" "))
        .collect();
    assert!(
        after_pull
            .iter()
            .all(|args| !args.starts_with("image inspect")),
        "{after_pull:?}"
    );
    assert_eq!(
        cold.backend.backend,
        FoundBackend::Cpu,
        "{:?}",
        cold.backend
    );
    // The warm path asks `image inspect`: the same layers, the same finding.
    let warm = adapter
        .ensure_image(&spec(image, Some("v1"), None))
        .await
        .unwrap();
    assert!(warm.cache_hit);
    assert_eq!(warm.backend, cold.backend);
}

/// Builds a busybox image into the adapter's own (run) storage as `name`, labelled with
/// version `b0`; returns its image ID.
async fn build_local(world: &World, name: &str) -> String {
    let context = world.path().join("local-context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy("/bin/busybox", context.join("busybox")).unwrap();
    std::fs::write(
        context.join("Containerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\n",
    )
    .unwrap();
    world
        .run(
            &world.podman,
            &[
                "build",
                "--label",
                "org.opencontainers.image.version=b0",
                "-t",
                name,
                context.to_str().unwrap(),
            ],
            &world.run_env,
        )
        .await;
    let id = world
        .run(
            &world.podman,
            &["image", "inspect", "--format", "{{.Id}}", name],
            &world.run_env,
        )
        .await;
    id.stdout.trim().to_string()
}

/// An image built here and named by tag (`localhost/…`) is resolved in podman's store, never
/// in a registry; the reference it gets runs with `--pull=never`. One that is not there says
/// how to get it there (and nothing about `insecure`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_image_named_by_tag_is_resolved_in_the_store_and_runs_without_pulling() {
    let world = World::new();
    let id = build_local(&world, "localhost/llama/server:b0").await;
    let shell = recording();
    let adapter = world.adapter(shell.clone(), world.settings(Vec::new()));
    let mut local = spec("localhost/llama/server".to_string(), Some("b0"), None);
    local.insecure = false;
    let artifact = adapter.ensure_image(&local).await.unwrap();
    assert_eq!(artifact.reference, format!("sha256:{id}"));
    assert_eq!(artifact.digest.as_str(), format!("sha256:{id}"));
    assert_eq!(artifact.version.as_deref(), Some("b0"));
    assert!(artifact.cache_hit);
    for command in shell.commands() {
        assert_ne!(command.args[0], "pull", "{command:?}");
    }
    // The reference runs as the prepared command names it.
    let out = world
        .run(
            &world.podman,
            &[
                "run",
                "--rm",
                "--pull=never",
                "--init",
                &artifact.reference,
                "echo",
                "from-the-store",
            ],
            &world.run_env,
        )
        .await;
    assert!(out.stdout.contains("from-the-store"), "{out:?}");

    // A tag the store lacks.
    let missing = spec("localhost/llama/server".to_string(), Some("b1"), None);
    let error = adapter.ensure_image(&missing).await.unwrap_err();
    let text = format!("{error} {}", error.hint().unwrap_or_default());
    assert!(
        text.contains("not in podman's local store") && text.contains("podman build -t"),
        "{text}"
    );
    assert!(!text.contains("insecure"), "{text}");

    // A removed image is not pulled back by the prepared run: podman fails at once.
    world
        .run(
            &world.podman,
            &["rmi", "-f", "localhost/llama/server:b0"],
            &world.run_env,
        )
        .await;
    let mut command = CommandSpec::new(
        &world.podman.display().to_string(),
        ["run", "--rm", "--pull=never", &artifact.reference, "true"],
    );
    command.env = world.run_env.clone();
    let output = world.shell.run(&command).await.unwrap();
    assert!(!output.success());
    assert!(output.tail.contains("image not known"), "{}", output.tail);
}

/// The runtime check runs real `podman info` against containers.conf files: an `init_path`
/// naming a missing file, and a network backend whose helper is not where podman looks, are
/// refused when the runtime is detected, with what to install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_check_names_what_the_run_would_miss() {
    let world = World::new();
    let base = "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n";
    let conf = world.path().join("check.conf");
    let mut settings = world.settings(Vec::new());
    settings
        .env
        .insert("CONTAINERS_CONF".into(), conf.display().to_string());

    std::fs::write(
        &conf,
        format!("{base}init_path = \"/nonexistent/catatonit\"\n[engine]\nruntime = \"runc\"\n"),
    )
    .unwrap();
    let adapter = world.adapter(recording(), settings.clone());
    let error = adapter.detect(Some(RuntimeKind::Podman)).await.unwrap_err();
    assert!(matches!(error, Error::MissingSetup { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("/nonexistent/catatonit") && text.contains("check.conf"),
        "{text}"
    );
    assert!(error.hint().unwrap().contains("catatonit"), "{error:?}");
    // The same check passes once the file names podman's default init again: its contents
    // are part of the cache key.
    std::fs::write(&conf, format!("{base}[engine]\nruntime = \"runc\"\n")).unwrap();
    let adapter = world.adapter(recording(), settings.clone());
    adapter.detect(Some(RuntimeKind::Podman)).await.unwrap();

    let empty = world.path().join("no-helpers");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(
        &conf,
        format!(
            "{base}[network]\nnetwork_backend = \"netavark\"\n[engine]\nruntime = \"runc\"\nhelper_binaries_dir = [\"{}\"]\n",
            empty.display()
        ),
    )
    .unwrap();
    let adapter = world.adapter(recording(), settings);
    let error = adapter.detect(Some(RuntimeKind::Podman)).await.unwrap_err();
    assert!(
        matches!(&error, Error::MissingTool { tool, searched, .. } if tool == "netavark" && searched == std::slice::from_ref(&empty)),
        "{error:?}"
    );
    let hint = error.hint().unwrap();
    assert!(
        hint.contains("netavark") && hint.contains("helper_binaries_dir"),
        "{hint}"
    );
}
