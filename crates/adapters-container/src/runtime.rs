//! [`PodmanOrDocker`]: the [`ContainerRuntime`] port over the podman or docker CLI (through the
//! [`Shell`] port) and an OCI registry client.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use provisioner_core::{
    Action, CommandOutput, CommandSpec, ContainerRuntime, Digest, Distro, Error, ImageArtifact,
    ImageSpec, ImageTag, Policy, Progress, ProgressEvent, Result, RuntimeKind, Shell, sudo_prefix,
};
use tokio::sync::OnceCell;

use crate::auth::{CredentialSources, Credentials, Search, TempAuthFile};
use crate::devices::{describe, find_cdi_spec, parse_nvidia_smi_list, unknown_devices};
use crate::index::{IndexEntry, TagIndex};
use crate::layers::ImageLayers;
use crate::reference::ImageRef;
use crate::registry::{self, REVISION_LABEL, VERSION_LABEL};
use crate::requirements::{self, ContainersConf, PodmanFiles};
use crate::store::Store;

/// Host variables passed to every runtime command and returned as `runtime_env`
/// ([`provisioner_core::CONTAINER_ENV`]).
pub const RUNTIME_ENV: &[&str] = provisioner_core::CONTAINER_RUNTIME_VARIABLES;

/// The install commands shown when neither podman nor docker works.
pub fn podman_install_hint() -> String {
    let sudo = sudo_prefix(adapters_host::running_as_root());
    format!(
        "{sudo}apt-get install -y podman (Debian/Ubuntu) | {sudo}pacman -S podman (Arch) | {sudo}dnf install -y podman (Fedora)"
    )
}

/// What docker needs to pull from a plain-HTTP registry (it is daemon configuration, not a flag).
pub const DOCKER_INSECURE_HINT: &str = "docker pulls from a plain-HTTP registry only when the daemon lists it under \"insecure-registries\" in /etc/docker/daemon.json (then restart dockerd); behind DOCKER_HOST=podman system service, the service's registries.conf decides ([[registry]] location=\"HOST:PORT\" insecure=true)";

/// Settings of [`PodmanOrDocker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSettings {
    /// Where the tag index (`images-v1.json`), its lock and temporary auth files live, e.g.
    /// `~/.cache/llama-orch/containers`.
    pub cache_dir: PathBuf,
    /// Auth files searched, in order, for registry credentials after a 401: their `auths`
    /// entries and the credential helpers their `credHelpers` and `credsStore` name
    /// ([`crate::auth`]).
    pub auth_files: Vec<PathBuf>,
    /// Host variables the runtime needs ([`RUNTIME_ENV`]), passed to every runtime command and
    /// returned as [`ImageArtifact::runtime_env`]. Never credentials. Credential helpers get
    /// those of them they may inherit (PATH, HOME, XDG_RUNTIME_DIR, DOCKER_CONFIG: the base list
    /// and [`crate::auth::HELPER_ENV`]) on top of the allowlisted variables they inherit.
    pub env: BTreeMap<String, String>,
    /// `LLAMA_ORCH_REGISTRY_USER` / `LLAMA_ORCH_REGISTRY_PASSWORD`, tried after the auth files.
    pub credentials: Option<Credentials>,
    /// Directories searched for an NVIDIA CDI spec when podman is to get GPUs.
    pub cdi_dirs: Vec<PathBuf>,
    /// Where podman's configuration and helpers are ([`crate::requirements`]).
    pub podman_files: PodmanFiles,
    /// This host's distribution family, for install commands in hints ([`Distro::Unknown`]:
    /// the commands of every family).
    pub distro: Distro,
}

impl ContainerSettings {
    /// Settings from a set of host variables (as [`ContainerSettings::from_host`] reads them).
    pub fn from_vars(cache_dir: impl Into<PathBuf>, vars: &BTreeMap<String, String>) -> Self {
        let get = |key: &str| vars.get(key).filter(|v| !v.is_empty()).cloned();
        let mut auth_files = Vec::new();
        if let Some(file) = get("REGISTRY_AUTH_FILE") {
            auth_files.push(PathBuf::from(file));
        }
        if let Some(dir) = get("XDG_RUNTIME_DIR") {
            auth_files.push(Path::new(&dir).join("containers/auth.json"));
        }
        if let Some(home) = get("HOME") {
            auth_files.push(Path::new(&home).join(".config/containers/auth.json"));
        }
        match (get("DOCKER_CONFIG"), get("HOME")) {
            (Some(dir), _) => auth_files.push(Path::new(&dir).join("config.json")),
            (None, Some(home)) => auth_files.push(Path::new(&home).join(".docker/config.json")),
            (None, None) => {}
        }
        // Rootless podman also reads the user's containers.conf.
        let user_config = (!adapters_host::running_as_root())
            .then(|| match (get("XDG_CONFIG_HOME"), get("HOME")) {
                (Some(dir), _) => Some(PathBuf::from(dir)),
                (None, Some(home)) => Some(Path::new(&home).join(".config")),
                (None, None) => None,
            })
            .flatten();
        let credentials = match (
            get("LLAMA_ORCH_REGISTRY_USER"),
            get("LLAMA_ORCH_REGISTRY_PASSWORD"),
        ) {
            (Some(user), Some(password)) => Some(Credentials::new(user, password)),
            _ => None,
        };
        ContainerSettings {
            cache_dir: cache_dir.into(),
            auth_files,
            env: RUNTIME_ENV
                .iter()
                .filter_map(|key| get(key).map(|value| (key.to_string(), value)))
                .collect(),
            credentials,
            cdi_dirs: vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")],
            podman_files: PodmanFiles::defaults(user_config.as_deref()),
            distro: Distro::Unknown,
        }
    }

    /// Settings from this process's environment (and the distribution from
    /// `/etc/os-release`).
    pub fn from_host(cache_dir: impl Into<PathBuf>) -> Self {
        let vars: BTreeMap<String, String> = std::env::vars().collect();
        let mut settings = ContainerSettings::from_vars(cache_dir, &vars);
        settings.distro = ["/etc/os-release", "/usr/lib/os-release"]
            .iter()
            .find_map(|file| {
                adapters_host::read_capped(Path::new(file), adapters_host::read::MAX_SMALL).ok()
            })
            .map(|text| Distro::from_os_release(&text))
            .unwrap_or(Distro::Unknown);
        settings
    }
}

/// A runtime that works on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Runtime {
    kind: RuntimeKind,
    program: PathBuf,
    /// podman's image store, as `podman info` named it when the runtime was checked.
    store: Option<Store>,
}

/// The [`ContainerRuntime`] adapter: podman (preferred) or docker (fallback) for local images,
/// the registry's HTTP API (module `distribution`). See the crate documentation for the steps and what is verified.
pub struct PodmanOrDocker {
    shell: Arc<dyn Shell>,
    policy: Arc<dyn Policy>,
    progress: Arc<dyn Progress>,
    settings: ContainerSettings,
    index: TagIndex,
    /// The runtime chosen without a forced kind, for the process lifetime.
    auto: OnceCell<Runtime>,
    /// Forced runtimes that were probed: podman, docker.
    forced: [OnceCell<Runtime>; 2],
}

impl std::fmt::Debug for PodmanOrDocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodmanOrDocker")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn slot(kind: RuntimeKind) -> usize {
    match kind {
        RuntimeKind::Podman => 0,
        RuntimeKind::Docker => 1,
    }
}

impl PodmanOrDocker {
    /// An adapter running podman/docker through `shell`, asking `policy` before contacting a
    /// registry and reporting to `progress`.
    pub fn new(
        shell: Arc<dyn Shell>,
        policy: Arc<dyn Policy>,
        progress: Arc<dyn Progress>,
        settings: ContainerSettings,
    ) -> Self {
        PodmanOrDocker {
            index: TagIndex::new(&settings.cache_dir),
            shell,
            policy,
            progress,
            settings,
            auto: OnceCell::new(),
            forced: [OnceCell::new(), OnceCell::new()],
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &ContainerSettings {
        &self.settings
    }

    /// Where this adapter looks up registry credentials: the settings' auth files (and the
    /// credential helpers they name, run through this adapter's shell with the settings' PATH,
    /// HOME, XDG_RUNTIME_DIR and DOCKER_CONFIG), then the `LLAMA_ORCH_REGISTRY_*` credentials.
    pub fn credential_sources(&self) -> CredentialSources<'_> {
        CredentialSources {
            shell: self.shell.as_ref(),
            auth_files: &self.settings.auth_files,
            env: &self.settings.env,
            fallback: self.settings.credentials.as_ref(),
        }
    }

    /// The credentials this adapter would use for `registry` after a 401 (the lookup is the same
    /// one `ensure_image` makes; it may run credential helpers).
    pub async fn credentials_for(&self, registry: &str) -> Result<Search> {
        self.credential_sources().lookup(registry).await
    }

    /// The runtime that works on this host: `forced` when given, else podman, else docker. The
    /// choice is probed once (`<runtime> info`) and kept for the lifetime of this adapter.
    pub async fn detect(&self, forced: Option<RuntimeKind>) -> Result<(RuntimeKind, PathBuf)> {
        let runtime = self.runtime(forced).await?;
        Ok((runtime.kind, runtime.program))
    }

    async fn runtime(&self, forced: Option<RuntimeKind>) -> Result<Runtime> {
        match forced {
            Some(kind) => self.forced[slot(kind)]
                .get_or_try_init(|| async {
                    self.probe(kind).await?.ok_or_else(|| missing(Some(kind)))
                })
                .await
                .cloned(),
            None => self
                .auto
                .get_or_try_init(|| async {
                    let mut broken = None;
                    for kind in [RuntimeKind::Podman, RuntimeKind::Docker] {
                        match self.probe(kind).await {
                            Ok(Some(runtime)) => return Ok(runtime),
                            Ok(None) => {}
                            Err(error) => {
                                self.progress.report(ProgressEvent::Note {
                                    message: format!(
                                        "{} is installed but does not work: {error}",
                                        kind.as_str()
                                    ),
                                });
                                broken.get_or_insert(error);
                            }
                        }
                    }
                    Err(broken.unwrap_or_else(|| missing(None)))
                })
                .await
                .cloned(),
        }
    }

    /// `Ok(None)`: not installed; `Err`: installed, but `info` fails or the rendered run would
    /// miss a piece it needs from the runtime ([`crate::requirements`]: the init binary, the
    /// OCI runtime, the network backend).
    async fn probe(&self, kind: RuntimeKind) -> Result<Option<Runtime>> {
        let Some(tool) = self.shell.locate(kind.as_str()) else {
            return Ok(None);
        };
        let mut runtime = Runtime {
            kind,
            program: tool.path,
            store: None,
        };
        let conf = match kind {
            RuntimeKind::Podman => ContainersConf::read(
                self.settings.env.get("CONTAINERS_CONF").map(String::as_str),
                &self.settings.podman_files,
            ),
            RuntimeKind::Docker => ContainersConf::default(),
        };
        // `info` takes about a third of a second: a runtime whose binary, environment and
        // containers.conf files (their contents) have not changed since it last passed the
        // check, and whose pieces found then are all still there, is trusted without asking
        // again (a runtime broken since then in another way still fails, with its own message,
        // at the pull or at start).
        let proof = self.settings.cache_dir.join("runtimes-v1").join(format!(
            "{}-{}",
            kind.as_str(),
            &blake3::hash(
                format!(
                    "v2|{}|{}|{:?}|{:?}|{}",
                    runtime.program.display(),
                    tool.fingerprint,
                    self.settings.env,
                    self.settings.podman_files,
                    conf.fingerprint()
                )
                .as_bytes()
            )
            .to_hex()[..16]
        ));
        if let Some(record) = proof_holds(&proof) {
            // The store `podman info` named when the check ran (none for docker or an older
            // record): a record that does not read as one is no store.
            runtime.store = serde_json::from_value(record["store"].clone()).ok();
            return Ok(Some(runtime));
        }
        let command = self.command(&runtime, ["info", "--format", "json"]);
        let output = self.shell.run(&command).await?;
        if !output.success() {
            if kind == RuntimeKind::Podman
                && let Some(error) =
                    requirements::podman_info_failure(&output.tail, &conf, self.settings.distro)
            {
                return Err(error);
            }
            return Err(failed(
                &command,
                &output,
                match kind {
                    RuntimeKind::Podman => {
                        "podman is installed but `podman info` fails; run it yourself to see why (storage, containers.conf, XDG_RUNTIME_DIR for rootless use)"
                    }
                    RuntimeKind::Docker => {
                        if adapters_host::running_as_root() {
                            "docker is installed but cannot reach its daemon: start it (systemctl start docker) or set DOCKER_HOST"
                        } else {
                            "docker is installed but cannot reach its daemon: start it (sudo systemctl start docker), add yourself to the docker group, or set DOCKER_HOST"
                        }
                    }
                },
            ));
        }
        if kind == RuntimeKind::Podman {
            runtime.store = serde_json::from_str(&output.stdout)
                .ok()
                .and_then(|info| Store::from_info(&info));
        }
        let found = match kind {
            RuntimeKind::Podman => requirements::check_podman(
                output.whole_stdout(&command.display())?,
                &conf,
                &self.settings.podman_files,
                &|name: &str| self.shell.locate(name).map(|tool| tool.path),
                self.settings.distro,
            )?,
            RuntimeKind::Docker => requirements::check_docker(
                output.whole_stdout(&command.display())?,
                self.settings.distro,
            )?,
        };
        if let Some(parent) = proof.parent()
            && std::fs::create_dir_all(parent).is_ok()
        {
            let record = serde_json::json!({ "checked": found, "store": runtime.store });
            let _ = std::fs::write(&proof, record.to_string());
        }
        Ok(Some(runtime))
    }

    /// A runtime command carrying the host variables from the settings as explicit values; of
    /// this process's environment it inherits the base list only
    /// ([`provisioner_core::BASE_ENV`]: the proxies a pull goes through, the locale).
    fn command<I, S>(&self, runtime: &Runtime, args: I) -> CommandSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut command = CommandSpec::new(&runtime.program.display().to_string(), args);
        command.env = self.settings.env.clone();
        command
    }

    /// `image inspect` of `reference`: `Some(labels)` when present and its digest is `digest`.
    async fn inspect(
        &self,
        runtime: &Runtime,
        reference: &str,
        digest: &str,
    ) -> Result<Option<Inspected>> {
        let command = self.command(runtime, ["image", "inspect", reference]);
        let output = self.shell.run(&command).await?;
        if !output.success() {
            return Ok(None);
        }
        Ok(parse_inspect(
            output.whole_stdout(&command.display())?,
            digest,
        ))
    }

    /// An image the runtime's store holds under `image`'s tag (or pinned digest), named by its
    /// image ID (`sha256:<id>`, recorded as its digest); with `prefer_repo_digest`, by the
    /// registry's manifest digest instead when the store recorded one for this repository (an
    /// image pulled before), as a pull would have named it. `None` when the store lacks it.
    async fn stored(
        &self,
        runtime: &Runtime,
        image: &ImageRef,
        prefer_repo_digest: bool,
    ) -> Result<Option<ImageArtifact>> {
        let name = stored_name(image);
        let command = self.command(runtime, ["image", "inspect", name.as_str()]);
        let output = self.shell.run(&command).await?;
        if !output.success() {
            return Ok(None);
        }
        let Some(stored) = parse_stored(output.whole_stdout(&command.display())?, &image.name())
        else {
            return Ok(None);
        };
        let (reference, digest) = match stored.repo_digest.filter(|_| prefer_repo_digest) {
            Some(digest) => (image.pinned(&digest), digest),
            None => (stored.id.clone(), stored.id),
        };
        self.artifact(
            runtime,
            image,
            reference,
            &digest,
            stored.labels,
            stored.layers,
            true,
        )
        .await
        .map(Some)
    }

    #[allow(clippy::too_many_arguments)]
    async fn artifact(
        &self,
        runtime: &Runtime,
        image: &ImageRef,
        reference: String,
        digest: &str,
        labels: Labels,
        layers: ImageLayers,
        cache_hit: bool,
    ) -> Result<ImageArtifact> {
        let parsed: Digest = digest.parse().map_err(|message: String| Error::Source {
            repo: image.name(),
            reference: image.asked(),
            message,
            hint: None,
        })?;
        // The ggml libraries in its layers, read without running it (file system reads only).
        let backend = tokio::task::spawn_blocking(move || layers.backend())
            .await
            .unwrap_or_else(|error| {
                provisioner_core::BackendFinding::unknown(format!(
                    "reading the image's layers failed: {error}"
                ))
            });
        Ok(ImageArtifact {
            backend,
            runtime: runtime.kind,
            program: runtime.program.clone(),
            runtime_env: self.settings.env.clone(),
            reference,
            digest: parsed,
            tag: image.tag.as_ref().and_then(|t| t.parse::<ImageTag>().ok()),
            revision: labels.revision,
            version: labels.version,
            cache_hit,
        })
    }

    /// Checks that every requested GPU exists (and, for podman, that a CDI spec describes them).
    async fn check_devices(&self, kind: RuntimeKind, spec: &ImageSpec) -> Result<()> {
        if spec.devices.is_empty() {
            return Ok(());
        }
        let engine = spec.engine.as_str().to_string();
        let devices: Vec<String> = spec.devices.iter().map(|d| d.to_string()).collect();
        let requested = devices.join(", ");
        let Some(smi) = self.shell.locate("nvidia-smi") else {
            return Err(Error::MissingTool {
                tool: "nvidia-smi (the NVIDIA driver)".to_string(),
                purpose: format!("give the GPUs {requested} to the container"),
                searched: Vec::new(),
                hint: Some(
                    "install the NVIDIA driver and nvidia-container-toolkit, or remove `devices:` to run without GPUs"
                        .to_string(),
                ),
            });
        };
        let command = CommandSpec::new(&smi.path.display().to_string(), ["-L"]);
        let output = self.shell.run(&command).await?;
        if !output.success() {
            return Err(Error::Engine {
                pool: engine,
                message: format!(
                    "`{}` failed ({}): the devices {requested} cannot be checked\n{}",
                    command.display(),
                    output.status(),
                    output.tail.trim()
                ),
                hint: Some("check the NVIDIA driver with `nvidia-smi`".to_string()),
            });
        }
        let gpus = parse_nvidia_smi_list(output.whole_stdout(&command.display())?);
        let unknown = unknown_devices(&devices, &gpus);
        if !unknown.is_empty() {
            return Err(Error::Engine {
                pool: engine,
                message: format!(
                    "GPU device(s) {} not found on this host; GPUs found: {}",
                    unknown.join(", "),
                    describe(&gpus)
                ),
                hint: Some(
                    "name a device by index (0), GPU UUID (GPU-…) or MIG UUID (MIG-…) as `nvidia-smi -L` lists them"
                        .to_string(),
                ),
            });
        }
        if kind == RuntimeKind::Podman && find_cdi_spec(&self.settings.cdi_dirs).is_none() {
            let dirs: Vec<String> = self
                .settings
                .cdi_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            return Err(Error::MissingSetup {
                what: format!("an NVIDIA CDI spec in {}", dirs.join(" or ")),
                purpose: "give GPUs to podman containers (podman names them through CDI)"
                    .to_string(),
                hint: Some(format!(
                    "{}nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml",
                    sudo_prefix(adapters_host::running_as_root())
                )),
            });
        }
        Ok(())
    }

    async fn pull(
        &self,
        runtime: &Runtime,
        image: &ImageRef,
        digest: &str,
        insecure: bool,
        credentials: Option<&Credentials>,
    ) -> Result<Option<String>> {
        let reference = image.pinned(digest);
        let auth = match credentials {
            Some(credentials) => Some(TempAuthFile::write(
                &self.settings.cache_dir.join("tmp"),
                &image.registry,
                credentials,
            )?),
            None => None,
        };
        let mut args: Vec<String> = Vec::new();
        match runtime.kind {
            RuntimeKind::Podman => {
                args.push("pull".into());
                if insecure {
                    args.push("--tls-verify=false".into());
                }
                if let Some(auth) = &auth {
                    args.push("--authfile".into());
                    args.push(auth.file().display().to_string());
                }
            }
            RuntimeKind::Docker => {
                if let Some(auth) = &auth {
                    args.push("--config".into());
                    args.push(auth.dir().display().to_string());
                }
                args.push("pull".into());
            }
        }
        args.push(reference.clone());
        let step = format!("pull {reference}");
        let command = self.command(runtime, args).progress(&step);
        self.progress.report(ProgressEvent::Started {
            step: step.clone(),
            detail: Some(runtime.kind.as_str().to_string()),
        });
        let output = self.shell.run(&command).await;
        drop(auth);
        let output = output?;
        if !output.success() {
            let hint = match (runtime.kind, insecure) {
                (RuntimeKind::Docker, true) => DOCKER_INSECURE_HINT.to_string(),
                _ => format!(
                    "check that {} is reachable from the {} runtime and that the credentials it uses are valid",
                    image.registry,
                    runtime.kind.as_str()
                ),
            };
            return Err(failed(&command, &output, &hint));
        }
        self.progress.report(ProgressEvent::Finished { step });
        Ok(crate::store::pulled_id(&output.stdout).map(str::to_string))
    }
}

/// The runtime check recorded at `proof`, when it still holds: written by this version, and
/// every piece it found still there.
fn proof_holds(proof: &Path) -> Option<serde_json::Value> {
    let text = adapters_host::read_capped(proof, adapters_host::read::MAX_STATE).ok()?;
    let record = serde_json::from_str::<serde_json::Value>(&text).ok()?;
    record["checked"]
        .as_array()
        .is_some_and(|paths| {
            paths
                .iter()
                .all(|path| path.as_str().is_some_and(|path| Path::new(path).exists()))
        })
        .then_some(record)
}

fn missing(kind: Option<RuntimeKind>) -> Error {
    match kind {
        Some(RuntimeKind::Docker) => Error::MissingTool {
            tool: "docker".to_string(),
            purpose: "run container images (the configuration asks for docker)".to_string(),
            searched: Vec::new(),
            hint: Some({
                let sudo = sudo_prefix(adapters_host::running_as_root());
                format!(
                    "{sudo}apt-get install -y docker.io (Debian/Ubuntu) | {sudo}pacman -S docker (Arch) | {sudo}dnf install -y moby-engine (Fedora); or drop `runtime: docker` to use podman"
                )
            }),
        },
        Some(RuntimeKind::Podman) => Error::MissingTool {
            tool: "podman".to_string(),
            purpose: "run container images (the configuration asks for podman)".to_string(),
            searched: Vec::new(),
            hint: Some(podman_install_hint()),
        },
        None => Error::MissingTool {
            tool: "podman or docker".to_string(),
            purpose: "run container images".to_string(),
            searched: Vec::new(),
            hint: Some(podman_install_hint()),
        },
    }
}

fn failed(command: &CommandSpec, output: &CommandOutput, hint: &str) -> Error {
    Error::CommandFailed {
        command: command.display(),
        status: output.status(),
        tail: output.tail.clone(),
        log: None,
        hint: Some(hint.to_string()),
    }
}

#[derive(Debug, Default, Clone)]
struct Labels {
    revision: Option<String>,
    version: Option<String>,
}

#[derive(Debug)]
struct Inspected {
    labels: Labels,
    /// Where its files are on the host.
    layers: ImageLayers,
}

/// Reads `image inspect` JSON (podman or docker): present with `digest` → its labels.
fn parse_inspect(stdout: &str, digest: &str) -> Option<Inspected> {
    let value: serde_json::Value = serde_json::from_str(stdout).ok()?;
    let image = value.as_array()?.first()?;
    let suffix = format!("@{digest}");
    let matches = image["Digest"].as_str() == Some(digest)
        || image["RepoDigests"].as_array().is_some_and(|all| {
            all.iter()
                .any(|d| d.as_str().is_some_and(|d| d.ends_with(&suffix)))
        });
    if !matches {
        return None;
    }
    Some(Inspected {
        labels: labels_of(image),
        layers: ImageLayers::from_inspect(image),
    })
}

/// The revision and version labels of one `image inspect` entry (podman: `Labels`; docker:
/// `Config.Labels`).
fn labels_of(image: &serde_json::Value) -> Labels {
    let labels = if image["Labels"].is_object() {
        &image["Labels"]
    } else {
        &image["Config"]["Labels"]
    };
    let get = |name: &str| {
        labels
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    Labels {
        revision: get(REVISION_LABEL),
        version: get(VERSION_LABEL),
    }
}

/// Checks the host files the run bind-mounts (named in the engine's flags): each must exist as
/// the kind its option takes, and be readable.
fn check_inputs(spec: &ImageSpec) -> Result<()> {
    adapters_host::run_files::check_host_inputs(
        &spec.inputs,
        "container mode bind-mounts a host path named in flags read-only under /inputs/; a relative path names a file inside the image",
    )
}

/// An image as the store holds it.
#[derive(Debug)]
struct Stored {
    /// `sha256:<image ID>`.
    id: String,
    /// The manifest digest recorded for the repository asked for (`RepoDigests`), if any.
    repo_digest: Option<String>,
    labels: Labels,
    layers: ImageLayers,
}

/// Reads `image inspect` JSON (podman: `Id` is bare hex; docker: `sha256:…`) of an image looked
/// up by name.
fn parse_stored(stdout: &str, repository: &str) -> Option<Stored> {
    let value: serde_json::Value = serde_json::from_str(stdout).ok()?;
    let image = value.as_array()?.first()?;
    let id = image["Id"].as_str()?;
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let prefix = format!("{repository}@");
    let repo_digest = image["RepoDigests"].as_array().and_then(|all| {
        all.iter()
            .filter_map(|d| d.as_str()?.strip_prefix(&prefix))
            .find(|d| d.starts_with("sha256:"))
            .map(str::to_string)
    });
    Some(Stored {
        id: format!("sha256:{}", hex.to_ascii_lowercase()),
        repo_digest,
        labels: labels_of(image),
        layers: ImageLayers::from_inspect(image),
    })
}

#[async_trait]
impl ContainerRuntime for PodmanOrDocker {
    async fn ensure_image(&self, spec: &ImageSpec) -> Result<ImageArtifact> {
        check_inputs(spec)?;
        let image = ImageRef::from_reference(&spec.image);
        // The runtime, checked for what the run needs (cached: no process when nothing changed).
        let runtime = self.runtime(spec.runtime).await?;
        let local = spec.image.is_localhost();
        let indexed = image
            .tag_key()
            .filter(|_| !local)
            .and_then(|key| self.index.get(&key));
        // Warm path: a digest known without the registry, and the image present locally.
        let known = image
            .digest
            .clone()
            .or_else(|| indexed.as_ref().map(|entry| entry.digest.clone()));
        if let Some(digest) = &known
            && let Some(found) = self
                .inspect(&runtime, &image.pinned(digest), digest)
                .await?
        {
            self.check_devices(runtime.kind, spec).await?;
            let mut labels = found.labels;
            if let Some(entry) = indexed.filter(|entry| entry.digest == *digest) {
                labels.revision = labels.revision.or(entry.revision);
                labels.version = labels.version.or(entry.version);
            }
            tracing::debug!(image = %image.pinned(digest), "image present locally");
            return self
                .artifact(
                    &runtime,
                    &image,
                    image.pinned(digest),
                    digest,
                    labels,
                    found.layers,
                    true,
                )
                .await;
        }

        self.check_devices(runtime.kind, spec).await?;
        // `localhost/…` names an image built or loaded here: no registry serves it, the
        // runtime's own store is the only place to look.
        if local {
            let Some(stored) = self.stored(&runtime, &image, false).await? else {
                return Err(not_in_store(&runtime, &image));
            };
            self.progress.report(ProgressEvent::Note {
                message: format!(
                    "{} is local by nature: resolved in {}'s store to image {} (nothing is pulled)",
                    stored_name(&image),
                    runtime.kind.as_str(),
                    stored.digest
                ),
            });
            return Ok(stored);
        }

        if let Err(denied) = self.policy.check(&Action::PullImage {
            image: spec.image.clone(),
            insecure: spec.insecure,
        }) {
            // No registry may be asked (offline, or not an allowed host): an image the store
            // already holds under that tag is used as it is, unverified against the registry.
            if image.digest.is_none()
                && let Some(stored) = self.stored(&runtime, &image, true).await?
            {
                self.progress.report(ProgressEvent::Note {
                    message: format!(
                        "{} is not checked against {} ({}): using the image {}'s store holds under that tag, {}",
                        stored_name(&image),
                        image.registry,
                        denied,
                        runtime.kind.as_str(),
                        stored.reference
                    ),
                });
                return Ok(stored);
            }
            return Err(denied);
        }
        let step = format!("resolve {}:{}", image.name(), image.asked());
        self.progress.report(ProgressEvent::Started {
            step: step.clone(),
            detail: None,
        });
        let started = std::time::Instant::now();
        let resolved = registry::resolve(
            &image,
            spec.insecure,
            &self.credential_sources(),
            self.policy.clone(),
        )
        .await?;
        tracing::debug!(
            digest = %resolved.digest,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "resolved against the registry"
        );
        self.progress.report(ProgressEvent::Finished { step });
        let digest = resolved.digest.clone();
        let reference = image.pinned(&digest);

        // Pulled by digest straight away: a store that holds it already answers at once, and
        // one `image inspect` afterwards both checks the digest and reads what the artefact
        // needs (a runtime process saved against asking the store first; each costs ~100 ms).
        let pulled = self
            .pull(
                &runtime,
                &image,
                &digest,
                spec.insecure,
                resolved.credentials.as_ref(),
            )
            .await?;
        // podman names the image it stored by its ID, the hex of the config digest: when that
        // is the verified config, its store gives the layers and confirms the digest without
        // another runtime process; anything else is asked of the runtime.
        let from_store = runtime
            .store
            .as_ref()
            .zip(pulled.as_deref())
            .filter(|(_, id)| Some(*id) == resolved.config_digest.strip_prefix("sha256:"))
            .and_then(|(store, id)| store.overlay_layers(id, &digest))
            .map(|layers| Inspected {
                labels: Labels::default(),
                layers: ImageLayers::Overlay {
                    layers,
                    working_dir: resolved.working_dir.clone(),
                },
            });
        if from_store.is_some() {
            tracing::debug!(image = %reference, "pulled image found in the store");
        }
        let present = match from_store {
            Some(found) => Some(found),
            None => self.inspect(&runtime, &reference, &digest).await?,
        };
        let present = present.ok_or_else(|| Error::Source {
            repo: image.name(),
            reference: digest.clone(),
            message: format!(
                "after `{} pull {reference}`, `{} image inspect` does not report digest {digest}",
                runtime.kind.as_str(),
                runtime.kind.as_str()
            ),
            hint: Some(format!(
                "remove the local image (`{} rmi {reference}`) and prepare again",
                runtime.kind.as_str()
            )),
        })?;
        if let Some(key) = image.tag_key() {
            self.index
                .put(
                    &key,
                    IndexEntry {
                        digest: digest.clone(),
                        revision: resolved.revision.clone(),
                        version: resolved.version.clone(),
                    },
                )
                .await?;
        }
        self.artifact(
            &runtime,
            &image,
            reference,
            &digest,
            Labels {
                revision: resolved.revision,
                version: resolved.version,
            },
            present.layers,
            false,
        )
        .await
    }
}

/// How the store is asked for an image: `name@digest`, `name:tag`, else `name:latest`.
fn stored_name(image: &ImageRef) -> String {
    match (&image.digest, &image.tag) {
        (Some(digest), _) => image.pinned(digest),
        (None, Some(tag)) => format!("{}:{tag}", image.name()),
        (None, None) => format!("{}:latest", image.name()),
    }
}

/// A `localhost/…` image the runtime's store does not hold.
fn not_in_store(runtime: &Runtime, image: &ImageRef) -> Error {
    let program = runtime.kind.as_str();
    let name = stored_name(image);
    Error::Source {
        repo: image.name(),
        reference: image.asked(),
        message: format!(
            "{name} is not in {program}'s local store; images named localhost/… are built or loaded on this host and never pulled (no registry serves them)"
        ),
        hint: Some(format!(
            "build or load it into {program}'s store first (`{program} build -t {name} <context>` or `{program} load -i <archive>`), then prepare again; `{program} images` lists what the store holds (another runtime's or user's store is separate)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_output_of_podman_and_docker() {
        let d = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let podman = format!(
            r#"[{{"Id":"x","Digest":"{d}","RepoDigests":[],"Labels":{{"{REVISION_LABEL}":"abc"}}}}]"#
        );
        let found = parse_inspect(&podman, d).unwrap();
        assert_eq!(found.labels.revision.as_deref(), Some("abc"));
        let docker = format!(
            r#"[{{"Id":"x","RepoDigests":["r/x@{d}"],"Config":{{"Labels":{{"{VERSION_LABEL}":"1.2"}}}}}}]"#
        );
        let found = parse_inspect(&docker, d).unwrap();
        assert_eq!(found.labels.version.as_deref(), Some("1.2"));
        let other = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
        assert!(parse_inspect(&docker, other).is_none());
        assert!(parse_inspect("not json", d).is_none());
    }
}
