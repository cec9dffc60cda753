//! Docker credential helpers, for real: small shell scripts named `docker-credential-<name>` in a
//! temporary directory put first on the adapter's PATH (through `ContainerSettings::env`, the
//! PATH every runtime command and every helper gets) speak the docker-credential-helpers protocol
//! to the real `HostShell`. The end-to-end tests add a loopback registry that wants HTTP Basic
//! credentials and a stand-in `podman` script, and check that the helper's secret shows up in no
//! error, progress event, recorded command or tracing event.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use adapters_container::{
    ContainerSettings, Credentials, DOCKER_HUB_SERVER, HELPER_ENV, Origin, PodmanOrDocker,
    sha256_digest,
};
use adapters_host::HostShell;
use async_trait::async_trait;
use base64::Engine as _;
use provisioner_core::{
    CommandOutput, CommandSpec, ContainerRuntime, Engine, Error, ImageSpec, ProgressEvent,
    RecordingProgress, RecordingShell, Result, RuntimeKind, Shell, ToolInfo,
};

/// What the helpers print as the password; it must appear nowhere else.
const SECRET: &str = "hlp-Secret-9xQ2";
const USER: &str = "alice";

/// A temporary host: `bin/` (first on the adapter's PATH) with the helpers, a HOME, auth files.
struct Host {
    dir: tempfile::TempDir,
    progress: Arc<RecordingProgress>,
    shell: Arc<RecordingShell>,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let progress = Arc::new(RecordingProgress::default());
        let shell = Arc::new(RecordingShell::new(Arc::new(FakeRuntime {
            inner: HostShell::new(progress.clone()),
            podman: dir.path().join("bin/podman"),
        })));
        Host {
            dir,
            progress,
            shell,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn bin(&self) -> PathBuf {
        self.path().join("bin")
    }

    fn script(&self, name: &str, body: &str) {
        let path = self.bin().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// `docker-credential-<name>`: answers `get` for the server URLs in `known` with
    /// `alice`/[`SECRET`] and says "credentials not found" for any other; records each server URL
    /// it was asked about (`<name>.asked`) and its environment (`<name>.env`).
    fn helper(&self, name: &str, known: &[&str]) {
        let dir = self.path().display();
        let mut cases = String::new();
        for url in known {
            cases.push_str(&format!(
                "  '{url}') printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{SECRET}\"}}\\n' \"$url\" ;;\n"
            ));
        }
        self.script(
            &format!("docker-credential-{name}"),
            &format!(
                "[ \"$1\" = get ] || {{ echo \"unknown action $1\"; exit 3; }}\nurl=$(cat)\nprintf '%s\\n' \"$url\" >> '{dir}/{name}.asked'\nenv > '{dir}/{name}.env'\ncase \"$url\" in\n{cases}  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n"
            ),
        );
    }

    /// The server URLs helper `name` was asked about.
    fn asked(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.path().join(format!("{name}.asked")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn settings(&self, auth_files: Vec<PathBuf>) -> ContainerSettings {
        let mut vars = BTreeMap::new();
        vars.insert(
            "PATH".to_string(),
            format!(
                "{}:{}",
                self.bin().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
        vars.insert(
            "HOME".to_string(),
            self.path().join("home").display().to_string(),
        );
        let mut settings = ContainerSettings::from_vars(self.path().join("cache"), &vars);
        settings.auth_files = auth_files;
        settings.cdi_dirs = Vec::new();
        // podman's configuration and helpers of this temporary host: only an init binary.
        let helpers = self.path().join("podman-helpers");
        std::fs::create_dir_all(&helpers).unwrap();
        std::fs::write(helpers.join("catatonit"), "").unwrap();
        settings.podman_files = adapters_container::PodmanFiles {
            containers_conf: Vec::new(),
            helper_dirs: vec![helpers],
            cni_plugin_dirs: Vec::new(),
        };
        settings
    }

    fn adapter(&self, settings: ContainerSettings) -> PodmanOrDocker {
        PodmanOrDocker::new(
            self.shell.clone(),
            Arc::new(policy::HostPolicy::default()),
            self.progress.clone(),
            settings,
        )
    }

    /// Everything a user or an operator could see: progress events and the recorded commands.
    fn shown(&self) -> String {
        format!("{:?}\n{:?}", self.progress.events(), self.shell.commands())
    }
}

/// The real shell, except that `podman` is the stand-in script (and docker is absent), so that
/// the adapter never reaches the host's real runtime.
struct FakeRuntime {
    inner: HostShell,
    podman: PathBuf,
}

#[async_trait]
impl Shell for FakeRuntime {
    async fn run(&self, command: &CommandSpec) -> Result<CommandOutput> {
        self.inner.run(command).await
    }

    fn locate(&self, program: &str) -> Option<ToolInfo> {
        match program {
            "podman" => self.inner.inspect(&self.podman),
            "docker" => None,
            other => self.inner.locate(other),
        }
    }

    fn inspect(&self, path: &Path) -> Option<ToolInfo> {
        self.inner.inspect(path)
    }
}

fn assert_secret_free(what: &str, text: &str) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"));
    assert!(
        !text.contains(SECRET),
        "the secret leaked into {what}: {text}"
    );
    assert!(
        !text.contains(&encoded),
        "the encoded secret leaked into {what}: {text}"
    );
}

fn error_text(error: &Error) -> String {
    format!("{error}\n{:?}\n{error:?}", error.hint())
}

// ---------------------------------------------------------------------------------------------
// The lookup

#[tokio::test]
async fn cred_helpers_name_the_helper_for_the_registry() {
    let host = Host::new();
    host.helper("ecr-login", &["123.dkr.ecr.example:5000"]);
    host.helper("desktop", &["123.dkr.ecr.example:5000"]);
    let config = host.file(
        "docker/config.json",
        r#"{"auths":{"other.example":{"auth":"eDp5"}},"credHelpers":{"https://123.dkr.ecr.example:5000":"ecr-login","other.example":"desktop"},"credsStore":"desktop"}"#,
    );
    let adapter = host.adapter(host.settings(vec![config.clone()]));
    let search = adapter
        .credentials_for("123.dkr.ecr.example:5000")
        .await
        .unwrap();
    let found = search.found.unwrap();
    assert_eq!(found.credentials, Credentials::new(USER, SECRET));
    assert_eq!(
        found.origin,
        Origin::Helper {
            name: "ecr-login".into(),
            file: config.clone(),
            selected_by: "credHelpers.\"https://123.dkr.ecr.example:5000\"".into(),
            server_url: "123.dkr.ecr.example:5000".into(),
        }
    );
    assert_eq!(host.asked("ecr-login"), ["123.dkr.ecr.example:5000"]);
    assert!(host.asked("desktop").is_empty(), "credsStore comes last");

    // The helper got the allowlisted variables only (the base list and HELPER_ENV), with the
    // adapter's PATH and HOME.
    let env = std::fs::read_to_string(host.path().join("ecr-login.env")).unwrap();
    let allowed = |name: &str| {
        provisioner_core::environment::allows(provisioner_core::BASE_ENV, name)
            || provisioner_core::environment::allows(&HELPER_ENV, name)
    };
    assert!(allowed("AWS_PROFILE") && !allowed("LLAMA_ORCH_REGISTRY_PASSWORD"));
    for line in env.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        // The shell running the script sets PWD itself.
        assert!(allowed(name) || name == "PWD", "{name} reached the helper");
        if name == "PATH" {
            assert!(
                value.starts_with(&host.bin().display().to_string()),
                "{value}"
            );
        }
        if name == "HOME" {
            assert_eq!(value, host.path().join("home").display().to_string());
        }
    }
    assert!(env.contains("PATH=") && env.contains("HOME="), "{env}");

    // The helper's command carries nothing secret, and nothing was shown.
    let commands = host.shell.commands();
    let helper = commands.last().unwrap();
    assert_eq!(helper.program, "docker-credential-ecr-login");
    assert_eq!(helper.args, ["get"]);
    assert!(helper.sensitive);
    assert!(host.progress.events().is_empty());
    assert_secret_free("what was shown", &host.shown());
}

#[tokio::test]
async fn an_empty_auths_entry_falls_through_to_the_creds_store() {
    let host = Host::new();
    host.helper("desktop", &[DOCKER_HUB_SERVER, "registry.example:5000"]);
    // What `docker login` writes with a credential store: an empty entry per registry.
    let config = host.file(
        "docker/config.json",
        &format!(
            r#"{{"auths":{{"{DOCKER_HUB_SERVER}":{{}},"registry.example:5000":{{}}}},"credsStore":"desktop"}}"#
        ),
    );
    let adapter =
        host.adapter(host.settings(vec![host.path().join("missing/auth.json"), config.clone()]));
    // Docker Hub under any of its names is asked about with docker's key.
    for registry in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
        let found = adapter.credentials_for(registry).await.unwrap().found;
        let found = found.unwrap_or_else(|| panic!("nothing for {registry}"));
        assert_eq!(found.credentials, Credentials::new(USER, SECRET));
        assert!(
            matches!(&found.origin, Origin::Helper { selected_by, .. } if selected_by == "credsStore"),
            "{:?}",
            found.origin
        );
    }
    let found = adapter
        .credentials_for("registry.example:5000")
        .await
        .unwrap()
        .found
        .unwrap();
    assert_eq!(found.credentials.password(), SECRET);
    assert_eq!(
        host.asked("desktop"),
        [
            DOCKER_HUB_SERVER,
            DOCKER_HUB_SERVER,
            DOCKER_HUB_SERVER,
            "registry.example:5000"
        ]
    );

    // Without an `auths` entry the store is asked too: with docker's key for the registry.
    let bare = host.file("bare/config.json", r#"{"credsStore":"desktop"}"#);
    let adapter = host.adapter(host.settings(vec![bare]));
    assert!(
        adapter
            .credentials_for("docker.io")
            .await
            .unwrap()
            .found
            .is_some()
    );
    assert_eq!(host.asked("desktop").last().unwrap(), DOCKER_HUB_SERVER);
    assert_secret_free("what was shown", &host.shown());
}

#[tokio::test]
async fn stored_credentials_come_before_the_creds_store_and_keep_their_forms() {
    let host = Host::new();
    host.helper("desktop", &["a.example", "b.example"]);
    // `bob:pw` in base64; and the username/password form.
    let config = host.file(
        "docker/config.json",
        r#"{"auths":{"a.example":{"auth":"Ym9iOnB3"},"https://b.example/v1/":{"username":"carol","password":"pw2"}},"credsStore":"desktop"}"#,
    );
    let adapter = host.adapter(host.settings(vec![config.clone()]));
    let found = adapter
        .credentials_for("a.example")
        .await
        .unwrap()
        .found
        .unwrap();
    assert_eq!(found.credentials, Credentials::new("bob", "pw"));
    assert_eq!(
        found.origin,
        Origin::AuthFile {
            file: config.clone(),
            key: "a.example".into()
        }
    );
    let found = adapter
        .credentials_for("b.example")
        .await
        .unwrap()
        .found
        .unwrap();
    assert_eq!(found.credentials, Credentials::new("carol", "pw2"));
    assert!(host.asked("desktop").is_empty());
}

#[tokio::test]
async fn a_helper_without_credentials_passes_on_to_the_next_source() {
    let host = Host::new();
    host.helper("desktop", &[]);
    host.helper("pass", &[]);
    let podman_file = host.file(
        "containers/auth.json",
        r#"{"credHelpers":{"registry.example":"pass"}}"#,
    );
    let docker_file = host.file(
        "docker/config.json",
        r#"{"auths":{"registry.example":{}},"credsStore":"desktop"}"#,
    );
    let mut settings = host.settings(vec![podman_file.clone(), docker_file.clone()]);
    let adapter = host.adapter(settings.clone());
    let search = adapter.credentials_for("registry.example").await.unwrap();
    assert!(search.found.is_none());
    let asked: Vec<String> = search.empty_helpers.iter().map(|o| o.to_string()).collect();
    assert_eq!(
        asked,
        [
            format!(
                "docker-credential-pass (selected by `credHelpers.\"registry.example\"` in {})",
                podman_file.display()
            ),
            format!(
                "docker-credential-desktop (selected by `credsStore` in {})",
                docker_file.display()
            ),
        ]
    );
    assert_eq!(host.asked("pass"), ["registry.example"]);
    assert_eq!(host.asked("desktop"), ["registry.example"]);

    // Then the LLAMA_ORCH_REGISTRY_* variables.
    settings.credentials = Some(Credentials::new("env-user", "env-pass"));
    let adapter = host.adapter(settings);
    let found = adapter
        .credentials_for("registry.example")
        .await
        .unwrap()
        .found
        .unwrap();
    assert_eq!(found.credentials, Credentials::new("env-user", "env-pass"));
    assert_eq!(found.origin, Origin::Environment);
}

#[tokio::test]
async fn a_missing_helper_is_named_with_the_file_and_key_that_chose_it() {
    let host = Host::new();
    let config = host.file(
        "docker/config.json",
        r#"{"auths":{"registry.example":{}},"credsStore":"nowhere-xyz"}"#,
    );
    let mut settings = host.settings(vec![config.clone()]);
    // The variables do not paper over a helper the config asks for.
    settings.credentials = Some(Credentials::new("env-user", "env-pass"));
    let adapter = host.adapter(settings);
    let error = adapter
        .credentials_for("registry.example")
        .await
        .unwrap_err();
    match &error {
        Error::MissingTool { tool, purpose, .. } => {
            assert_eq!(tool, "docker-credential-nowhere-xyz");
            assert!(purpose.contains("registry.example"), "{purpose}");
            assert!(purpose.contains("`credsStore`"), "{purpose}");
            assert!(purpose.contains(&config.display().to_string()), "{purpose}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(error.code().exit_code(), 5);
    let hint = error.hint().unwrap();
    assert!(
        hint.contains("install docker-credential-nowhere-xyz"),
        "{hint}"
    );
    assert!(hint.contains(&config.display().to_string()), "{hint}");

    // credHelpers as well.
    let config = host.file(
        "helpers/config.json",
        r#"{"credHelpers":{"registry.example":"gone-abc"}}"#,
    );
    let adapter = host.adapter(host.settings(vec![config]));
    let error = adapter
        .credentials_for("registry.example")
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("docker-credential-gone-abc")
            && error
                .to_string()
                .contains("credHelpers.\"registry.example\""),
        "{error}"
    );
}

/// A helper name is a program suffix looked up on PATH: one that is a path or an option is
/// refused before anything runs.
#[tokio::test]
async fn a_helper_name_that_is_a_path_or_an_option_is_never_run() {
    let host = Host::new();
    for name in ["../../tmp/evil", "-x", "a b", ".hidden"] {
        let text = serde_json::json!({ "credsStore": name }).to_string();
        let config = host.file("bad/config.json", &text);
        let adapter = host.adapter(host.settings(vec![config.clone()]));
        let error = adapter
            .credentials_for("registry.example")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("is not a program suffix")
                && error.contains(&config.display().to_string()),
            "{name}: {error}"
        );
    }
}

#[tokio::test]
async fn a_failing_helper_is_named_without_quoting_its_output() {
    let host = Host::new();
    // It prints the secret (stdout and stderr) and fails.
    host.script(
        "docker-credential-broken",
        &format!(
            "cat >/dev/null\necho '{{\"Username\":\"{USER}\",\"Secret\":\"{SECRET}\"}} error: keyring locked'\necho 'stderr {SECRET}' >&2\nexit 2\n"
        ),
    );
    // Exit 0, but not the protocol's JSON (the secret in it).
    host.script(
        "docker-credential-garbled",
        &format!("cat >/dev/null\necho 'user={USER} secret={SECRET}'\n"),
    );
    let config = host.file(
        "docker/config.json",
        r#"{"credHelpers":{"registry.example":"broken","garbled.example":"garbled"}}"#,
    );
    let adapter = host.adapter(host.settings(vec![config.clone()]));
    let error = adapter
        .credentials_for("registry.example")
        .await
        .unwrap_err();
    match &error {
        Error::CommandFailed {
            command,
            status,
            tail,
            ..
        } => {
            assert_eq!(command, "docker-credential-broken get");
            assert_eq!(status, "exit code 2");
            assert_eq!(tail, "");
        }
        other => panic!("{other:?}"),
    }
    let text = error_text(&error);
    assert!(text.contains(&config.display().to_string()), "{text}");
    assert!(
        error
            .hint()
            .unwrap()
            .contains("docker-credential-broken (selected by `credHelpers.\"registry.example\"`"),
        "{text}"
    );
    assert_secret_free("the error", &text);

    let error = adapter
        .credentials_for("garbled.example")
        .await
        .unwrap_err();
    let text = error_text(&error);
    assert!(text.contains("docker-credential-garbled get"), "{text}");
    assert!(text.contains("exit code 0"), "{text}");
    assert_secret_free("the error", &text);
    assert_secret_free("what was shown", &host.shown());
}

// ---------------------------------------------------------------------------------------------
// Through ensure_image: a registry that wants credentials, a stand-in podman

const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux","config":{"Labels":{"org.opencontainers.image.revision":"abc123"}},"rootfs":{"type":"layers","diff_ids":[]}}"#;

fn manifest() -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(CONFIG),
            "size": CONFIG.len(),
        },
        "layers": [],
    })
    .to_string()
    .into_bytes()
}

/// Serves `test/img:v1` to requests with `alice`/[`SECRET`] only (HTTP Basic, as a
/// docker-registry with htpasswd does); counts the requests that carried them.
async fn basic_auth_registry() -> (String, Arc<Mutex<usize>>, tokio::task::JoinHandle<()>) {
    use axum::body::Body;
    use axum::http::{Request, Response, StatusCode};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"))
    );
    let authorized = Arc::new(Mutex::new(0usize));
    let count = authorized.clone();
    let manifest = manifest();
    let digest = sha256_digest(&manifest);
    let handler = move |request: Request<Body>| {
        let (expected, count, manifest, digest) = (
            expected.clone(),
            count.clone(),
            manifest.clone(),
            digest.clone(),
        );
        async move {
            let path = request.uri().path().to_string();
            let good = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                == Some(expected.as_str());
            if !good {
                return Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header("WWW-Authenticate", "Basic realm=\"test\"")
                    .header("Content-Type", "application/json")
                    .body(Body::from(
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                    ))
                    .unwrap();
            }
            *count.lock().unwrap() += 1;
            let head = request.method() == axum::http::Method::HEAD;
            let mut response = Response::builder().status(StatusCode::OK);
            let body = if path == "/v2/" {
                b"{}".to_vec()
            } else if path.starts_with("/v2/test/img/manifests/") {
                response = response
                    .header("Docker-Content-Digest", digest.as_str())
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json");
                manifest
            } else if path == format!("/v2/test/img/blobs/{}", sha256_digest(CONFIG)) {
                CONFIG.to_vec()
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
    (address, authorized, task)
}

/// A stand-in `podman`: `info` works, `image inspect` finds the image once it was pulled, and
/// `pull` copies the auth file it was given to `pulled-auth.json`.
fn fake_podman(host: &Host, digest: &str) {
    let dir = host.path().display();
    host.script(
        "podman",
        &format!(
            r#"case "$1" in
  info) echo '{{}}' ;;
  image) [ -f '{dir}/pulled' ] || exit 125; echo '[{{"Digest":"{digest}","Labels":{{}}}}]' ;;
  pull)
    while [ $# -gt 1 ]; do
      if [ "$1" = --authfile ]; then cp "$2" '{dir}/pulled-auth.json'; fi
      shift
    done
    echo "$1" > '{dir}/pulled'
    echo 'Copying blob done' ;;
  *) exit 2 ;;
esac
"#
        ),
    );
}

fn spec(registry: &str) -> ImageSpec {
    let image: provisioner_core::ImageReference = format!("{registry}/test/img").parse().unwrap();
    ImageSpec {
        engine: Engine::Llamacpp,
        image: image.with(Some("v1".parse().unwrap()), None),
        insecure: true,
        runtime: Some(RuntimeKind::Podman),
        devices: Vec::new(),
        inputs: Vec::new(),
    }
}

/// Every field of every tracing event and span, as text.
#[derive(Clone, Default)]
struct Traced(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?}\n", field.name()));
    }
}

impl tracing::Subscriber for Traced {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        span.record(&mut Fields(&mut self.0.lock().unwrap()));
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        values.record(&mut Fields(&mut self.0.lock().unwrap()));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        event.record(&mut Fields(&mut self.0.lock().unwrap()));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn ensure_image_uses_the_creds_store_and_shows_the_secret_nowhere() {
    let traced = Traced::default();
    let _tracing = tracing::subscriber::set_default(traced.clone());
    // Events first met on another test's thread, with no subscriber there, are asked again.
    tracing::callsite::rebuild_interest_cache();
    let (registry, authorized, _server) = basic_auth_registry().await;
    let host = Host::new();
    let digest = sha256_digest(&manifest());
    fake_podman(&host, &digest);
    host.helper("desktop", &[&registry]);
    let config = host.file(
        "docker/config.json",
        &format!(r#"{{"auths":{{"{registry}":{{}}}},"credsStore":"desktop"}}"#),
    );
    let adapter = host.adapter(host.settings(vec![config]));
    let artifact = adapter.ensure_image(&spec(&registry)).await.unwrap();
    assert_eq!(artifact.digest.as_str(), digest);
    assert_eq!(artifact.revision.as_deref(), Some("abc123"));
    assert!(!artifact.cache_hit);
    assert!(*authorized.lock().unwrap() > 0);
    assert_eq!(host.asked("desktop"), [registry.as_str()]);
    // podman got the helper's credentials in its private auth file, and the file is gone.
    let handed = std::fs::read_to_string(host.path().join("pulled-auth.json")).unwrap();
    assert_eq!(
        adapters_container::credentials_in(&handed, &registry),
        Some(Credentials::new(USER, SECRET))
    );
    let leftovers: Vec<_> = std::fs::read_dir(host.path().join("cache/tmp"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let pull = host
        .shell
        .commands()
        .into_iter()
        .find(|c| c.args.first().map(String::as_str) == Some("pull"))
        .expect("a pull ran");
    assert!(pull.args.contains(&"--authfile".to_string()), "{pull:?}");
    assert!(
        host.progress
            .events()
            .iter()
            .any(|e| matches!(e, ProgressEvent::Started { step, .. } if step.starts_with("pull "))),
        "{:?}",
        host.progress.events()
    );
    assert_secret_free("what was shown", &host.shown());
    let traced = traced.0.lock().unwrap().clone();
    assert!(traced.contains("docker-credential-desktop"), "{traced}");
    assert_secret_free("tracing", &traced);
}

#[tokio::test]
async fn ensure_image_names_the_helper_when_its_credentials_are_refused_or_absent() {
    let traced = Traced::default();
    let _tracing = tracing::subscriber::set_default(traced.clone());
    // Events first met on another test's thread, with no subscriber there, are asked again.
    tracing::callsite::rebuild_interest_cache();
    let (registry, authorized, _server) = basic_auth_registry().await;
    let host = Host::new();
    fake_podman(&host, &sha256_digest(&manifest()));
    // A helper that knows another password for the registry.
    host.script(
        "docker-credential-stale",
        &format!(
            "cat >/dev/null\nprintf '{{\"ServerURL\":\"x\",\"Username\":\"{USER}\",\"Secret\":\"%s\"}}' old-{SECRET}\n"
        ),
    );
    let config = host.file(
        "docker/config.json",
        &format!(r#"{{"credHelpers":{{"{registry}":"stale"}}}}"#),
    );
    let adapter = host.adapter(host.settings(vec![config.clone()]));
    let error = adapter.ensure_image(&spec(&registry)).await.unwrap_err();
    let text = error_text(&error);
    assert!(matches!(error, Error::Source { .. }), "{error:?}");
    assert!(
        text.contains(&format!("authentication failed for {registry}")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "the registry rejected the credentials of user `{USER}` from docker-credential-stale (selected by `credHelpers.\"{registry}\"` in {})",
            config.display()
        )),
        "{text}"
    );
    // (The stale password holds the secret.)
    assert_secret_free("the error", &text);
    assert_eq!(*authorized.lock().unwrap(), 0);

    // A store without credentials for it: the message says which helper had none.
    host.helper("desktop", &[]);
    let config = host.file(
        "store/config.json",
        &format!(r#"{{"auths":{{"{registry}":{{}}}},"credsStore":"desktop"}}"#),
    );
    let adapter = host.adapter(host.settings(vec![config]));
    let error = adapter.ensure_image(&spec(&registry)).await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("no credentials were found"), "{text}");
    assert!(
        text.contains("docker-credential-desktop (selected by `credsStore`"),
        "{text}"
    );

    // A missing helper fails the prepare with its name.
    let config = host.file("missing/config.json", r#"{"credsStore":"not-installed-q"}"#);
    let adapter = host.adapter(host.settings(vec![config]));
    let error = adapter.ensure_image(&spec(&registry)).await.unwrap_err();
    assert!(
        matches!(&error, Error::MissingTool { tool, .. } if tool == "docker-credential-not-installed-q"),
        "{error:?}"
    );
    assert_secret_free("what was shown", &host.shown());
    assert_secret_free("tracing", &traced.0.lock().unwrap());
}
