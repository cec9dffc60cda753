//! The ports: what the core and the engine recipes need from the outside world. Adapters implement
//! them; tests use the mockall fakes generated with the `mocks` feature (`MockShell`, ...).
//! Ports that do I/O are async (`async-trait`, so they work as trait objects); pure ones are not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
#[cfg(feature = "mocks")]
use mockall::automock;
use serde::{Deserialize, Serialize};

use crate::checksum::Checksum;
use crate::cmake::CacheEntries;
use crate::config::EnvValue;
pub use crate::environment::{BASE_ENV, BUILD_ENV, CONTAINER_ENV, GIT_ENV, PACKAGE_ENV};
use crate::error::{Error, Result};
use crate::image::ImageReference;
use crate::model_ref::ModelRef;
use crate::names::{Digest, Generator, GitRef, ImageTag, PackageName, PackageVersion, PoolId};
use crate::prepared::{BackendFinding, FoundBackend, GpuAsk};
use crate::secret::{GitRemote, PackageRepo, SafeUrl, Secret};
use crate::text::{command_line, human_bytes};
use crate::vocabulary::{Backend, DeviceId, Distro, Engine, ManagerKind, RuntimeKind};

// ---------------------------------------------------------------------------------------------
// Shell

/// A program to run: argv only, never a shell command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandSpec {
    /// Program name or path.
    pub program: String,
    /// Arguments, each passed as one argv element.
    pub args: Vec<String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Variables set on top of the variables [`CommandSpec::inherit_env`] lets through; a value
    /// here wins over an inherited one.
    pub env: BTreeMap<String, String>,
    /// Which variables of this process's environment the child inherits; never all of them
    /// (see [`crate::environment`]). `None` (the default): [`BASE_ENV`] only, what a
    /// `--version` probe gets. `Some(entries)`: exactly these (an entry ending in `*` is a
    /// prefix, `AWS_*`; one starting with `!` is never inherited, `!GIT_DIR`), as
    /// [`CommandSpec::inherit_also`] (the base list plus a job's list) and
    /// [`CommandSpec::inherit_only`] (a list of its own) set it. [`CommandSpec::env`] is set on
    /// top either way.
    pub inherit_env: Option<Vec<String>>,
    /// Where to append the combined output, line by line.
    pub log: Option<PathBuf>,
    /// A label for progress reports; when set, output lines are forwarded to the Progress port.
    pub progress: Option<String>,
    /// A file to record the process group id in, so that a later run can kill an orphaned build.
    pub group_file: Option<PathBuf>,
    /// Run in the foreground with the terminal's stdin (interactive `sudo` asking for a
    /// password); such a command stays in the caller's process group.
    pub terminal: bool,
    /// Text written to the child's standard input, which is then closed (a credential helper's
    /// request). `None`: standard input is `/dev/null` (the terminal for
    /// [`CommandSpec::terminal`]). A [`Secret`], so that it never shows in `Debug` output or in
    /// a record of the commands that ran.
    pub stdin: Option<Secret>,
    /// The command prints secrets (a credential helper prints a password). Its standard output
    /// is returned to the caller in [`CommandOutput::stdout`] and goes nowhere else: no line is
    /// appended to [`CommandSpec::log`] (only the command itself), forwarded to progress or
    /// traced, and [`CommandOutput::tail`] stays empty, so that an error built from the output
    /// quotes nothing. Errors about such a command name the program and its exit status only.
    pub sensitive: bool,
}

impl CommandSpec {
    /// A command with arguments.
    pub fn new<I, S>(program: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        CommandSpec {
            program: program.to_string(),
            args: args.into_iter().map(Into::into).collect(),
            ..CommandSpec::default()
        }
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.insert(key.to_string(), value.into());
        self
    }

    /// Sets the log file.
    pub fn log(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// Sets the progress label.
    pub fn progress(mut self, label: &str) -> Self {
        self.progress = Some(label.to_string());
        self
    }

    /// Lets the child inherit only the named variables of this process's environment (an entry
    /// ending in `*` is a prefix, one starting with `!` an exclusion), not even [`BASE_ENV`];
    /// [`CommandSpec::env`] is still set on top.
    pub fn inherit_only<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.inherit_env = Some(
            names
                .into_iter()
                .map(|name| name.as_ref().to_string())
                .collect(),
        );
        self
    }

    /// Lets the child inherit the variables of a job's list too ([`GIT_ENV`], [`BUILD_ENV`],
    /// [`PACKAGE_ENV`], …), on top of [`BASE_ENV`] (or of what an earlier call allowed).
    pub fn inherit_also<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut entries = self
            .inherit_env
            .take()
            .unwrap_or_else(|| BASE_ENV.iter().map(|name| name.to_string()).collect());
        for name in names {
            let name = name.as_ref().to_string();
            if !entries.contains(&name) {
                entries.push(name);
            }
        }
        self.inherit_env = Some(entries);
        self
    }

    /// Writes `input` to the child's standard input, then closes it.
    pub fn stdin(mut self, input: Secret) -> Self {
        self.stdin = Some(input);
        self
    }

    /// Marks the output as secret: returned in [`CommandOutput::stdout`] only, never logged,
    /// forwarded to progress, traced or kept in [`CommandOutput::tail`].
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    /// Whether the variable `name` of this process's environment reaches the child
    /// ([`CommandSpec::inherit_env`]).
    pub fn inherits(&self, name: &str) -> bool {
        match &self.inherit_env {
            None => crate::environment::allows(BASE_ENV, name),
            Some(entries) => crate::environment::allows(entries, name),
        }
    }

    /// The command for humans (messages, logs, hints): shell-quoted, with every URL in it
    /// redacted ([`crate::redact_urls`]). The argv itself is never shown.
    pub fn display(&self) -> String {
        let words: Vec<String> = std::iter::once(&self.program)
            .chain(&self.args)
            .map(|word| crate::secret::redact_urls(word))
            .collect();
        command_line(words.iter().map(String::as_str))
    }
}

/// Host variables a container runtime needs (its configuration, never credentials): passed to
/// every runtime command, returned as `ImageArtifact::runtime_env`, and kept by supervisors to
/// ask the runtime about the container later. The same list as [`CONTAINER_ENV`].
pub const CONTAINER_RUNTIME_VARIABLES: &[&str] = CONTAINER_ENV;

/// How a finished process ended and what it printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when it was killed.
    pub signal: Option<i32>,
    /// Standard output, at most [`MAX_STDOUT`] bytes of it. Parsers read it through
    /// [`CommandOutput::whole_stdout`], which refuses a cut output.
    pub stdout: String,
    /// Whether standard output went over [`MAX_STDOUT`] and `stdout` holds only its start.
    pub stdout_truncated: bool,
    /// The last lines of combined output, for error messages.
    pub tail: String,
}

/// The most of a command's standard output a [`Shell`] keeps: 4 MiB. The largest outputs we
/// parse (a package's file list, `podman image inspect` of an image with many layers, a
/// server's `--help`) are well under 1 MiB.
pub const MAX_STDOUT: usize = 4 * 1024 * 1024;

impl CommandOutput {
    /// Whether the process exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard output for a parser: all of it, or, when it went over [`MAX_STDOUT`] and was
    /// cut, [`Error::CommandFailed`] naming `command` (as [`CommandSpec::display`] shows it), so
    /// that nothing is concluded from the start of a list or a document.
    pub fn whole_stdout(&self, command: &str) -> Result<&str> {
        if self.stdout_truncated {
            return Err(Error::CommandFailed {
                command: command.to_string(),
                status: format!(
                    "it printed more than {} on standard output, the most that is read; the cut output is not used",
                    human_bytes(MAX_STDOUT as u64)
                ),
                tail: String::new(),
                log: None,
                hint: Some(format!("run `{command}` yourself to see what it prints")),
            });
        }
        Ok(&self.stdout)
    }

    /// The exit status for humans.
    pub fn status(&self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "unknown status".to_string(),
        }
    }
}

/// A program found on the host, with a fingerprint that changes when the file does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolInfo {
    /// Resolved absolute path (symlinks followed).
    pub path: PathBuf,
    /// Size and modification time of the resolved file; no process is run to compute it.
    pub fingerprint: String,
}

/// Runs processes on the host.
#[cfg_attr(feature = "mocks", automock)]
#[async_trait]
pub trait Shell: Send + Sync {
    /// Runs a command to completion in its own process group. Dropping the future kills the group.
    /// A non-zero exit is not an error here: callers decide with [`CommandOutput::success`].
    async fn run(&self, command: &CommandSpec) -> Result<CommandOutput>;

    /// Finds a program on PATH without running it.
    fn locate(&self, program: &str) -> Option<ToolInfo>;

    /// Describes an executable at a known path (used for toolchain roots off PATH).
    fn inspect(&self, path: &Path) -> Option<ToolInfo>;
}

// ---------------------------------------------------------------------------------------------
// Fetcher

/// A download to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// URL.
    pub url: SafeUrl,
    /// Destination file (written via a `.partial` sibling).
    pub destination: PathBuf,
    /// Expected checksum; the download fails on mismatch.
    pub expected: Option<Checksum>,
    /// Refuse bodies larger than this.
    pub max_bytes: Option<u64>,
    /// The `Authorization` header value to send (`Bearer <token>` for a hub token), to the
    /// URL's own origin only: never to a redirect target on another scheme, host or port.
    /// Never logged, traced or shown. `None`: only credentials written in the URL, if any.
    pub authorization: Option<Secret>,
}

impl FetchRequest {
    /// A download of `url` to `destination`: no checksum, no size cap, no credentials.
    pub fn new(url: SafeUrl, destination: impl Into<PathBuf>) -> FetchRequest {
        FetchRequest {
            url,
            destination: destination.into(),
            expected: None,
            max_bytes: None,
            authorization: None,
        }
    }
}

/// A small request whose answer is read into memory (a JSON API call), never a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRequest {
    /// URL.
    pub url: SafeUrl,
    /// As [`FetchRequest::authorization`]: sent to the URL's own origin only.
    pub authorization: Option<Secret>,
    /// A body longer than this many bytes fails the query.
    pub max_bytes: u64,
}

/// What a server answered to a [`QueryRequest`], whatever the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryAnswer {
    /// HTTP status of the last hop (redirects followed).
    pub status: u16,
    /// The URL that answered, after redirects.
    pub url: SafeUrl,
    /// Response headers, names in lower case; a header sent several times keeps its first
    /// value, a value that is not visible ASCII is left out.
    pub headers: BTreeMap<String, String>,
    /// The body (at most [`QueryRequest::max_bytes`]).
    pub body: Vec<u8>,
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Where it is.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// Checksum computed while streaming.
    pub checksum: Checksum,
}

/// Downloads files, hashing while streaming.
#[cfg_attr(feature = "mocks", automock)]
#[async_trait]
pub trait Fetcher: Send + Sync {
    /// Downloads `request.url` to `request.destination`, verifying the checksum.
    async fn fetch(&self, request: &FetchRequest) -> Result<Fetched>;

    /// Sends a GET for `request.url` and returns the answer whatever its status (only a
    /// transport failure, a stall, a refused redirect or an oversized body is an error).
    /// Redirects are followed as [`Fetcher::fetch`] follows them, each target checked the same
    /// way. Default: refused, for fetchers that only download.
    async fn query(&self, request: &QueryRequest) -> Result<QueryAnswer> {
        Err(crate::error::Error::Download {
            url: request.url.redacted(),
            message: "this fetcher cannot send queries".to_string(),
            hint: None,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// PackageManager

/// An installed distribution package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPackage {
    /// Package name.
    pub name: String,
    /// Exact installed version, as the package database spells it.
    pub version: String,
    /// Repository it was installed from, when one was configured or the manager reports it.
    pub repository: Option<String>,
}

/// A package to install: exactly `version` when given, from `repository` when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRequest {
    /// Package name.
    pub name: PackageName,
    /// Exact version; `None` installs whatever the repositories offer (build tools only).
    pub version: Option<PackageVersion>,
    /// Repository: for apt a `deb …` source line (used alone, in isolation) or a release name
    /// (`-t`); for pacman a repository name (`extra`) or the URL of a `<name>.db` file; for dnf
    /// a repository id or a base URL.
    pub repository: Option<PackageRepo>,
}

impl PackageRequest {
    /// A request for the repositories' version of `name` (build tools).
    pub fn latest(name: PackageName) -> Self {
        PackageRequest {
            name,
            version: None,
            repository: None,
        }
    }
}

/// Installs and queries distribution packages with one manager (apt, pacman, an AUR helper, dnf).
/// Every command is argv (never a shell); commands that need root go through `sudo -n` when not
/// root, interactive `sudo` when a terminal is attached, and otherwise fail with the exact
/// command to run.
#[cfg_attr(feature = "mocks", automock)]
#[async_trait]
pub trait PackageManager: Send + Sync {
    /// Which manager this is.
    fn kind(&self) -> ManagerKind;

    /// The exact command line an install of `requests` would run now, as a user would type it
    /// (`sudo` unless the provisioner runs as root; for hints). May read the package databases
    /// (which repository offers which version), never changes anything.
    async fn install_command(&self, requests: &[PackageRequest]) -> String;

    /// The installed version of a package, if installed (`dpkg-query`, `pacman -Q`, `rpm -q`).
    async fn query(&self, name: &PackageName) -> Result<Option<InstalledPackage>>;

    /// Versions of `request.name` the repositories offer (for errors naming what exists).
    async fn available(&self, request: &PackageRequest) -> Result<Vec<String>>;

    /// Installs the packages, each at exactly its version when given, and returns what the
    /// package database then reports; fails if a pinned version is not what got installed.
    async fn install(&self, requests: &[PackageRequest]) -> Result<Vec<InstalledPackage>>;

    /// Files owned by an installed package (`dpkg-query -L`, `pacman -Ql`, `rpm -ql`).
    async fn files(&self, name: &PackageName) -> Result<Vec<PathBuf>>;

    /// Removes a package (used to roll back an install that failed its checks).
    async fn remove(&self, name: &PackageName) -> Result<()>;
}

/// An engine to install as a distribution package, pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInstallSpec {
    /// Engine (names logs and metadata).
    pub engine: Engine,
    /// Engine cache root: the install record lives under `<cache_dir>/packages-v1/<key>`.
    pub cache_dir: PathBuf,
    /// Package name; `None`: the distribution's default for the engine and backend
    /// ([`crate::packages::default_engine_package`]).
    pub name: Option<PackageName>,
    /// Exact version.
    pub version: PackageVersion,
    /// Repository, as in [`PackageRequest::repository`].
    pub repository: Option<PackageRepo>,
    /// Manager forced by the config (`provisioning.package.manager`); else the distribution's.
    pub manager: Option<ManagerKind>,
    /// Distribution family forced by the config; else `/etc/os-release`.
    pub distro: Option<Distro>,
    /// The pool's `provisioning.allow_package_installs`.
    pub allowed_by_config: bool,
    /// File name of the server executable, looked up in the package's file list.
    pub executable: String,
    /// Arguments that make the executable print its version, run once after install.
    pub version_args: Vec<String>,
    /// Backend asked for: picks the default package, and a GPU backend must be shown to be
    /// present (its ggml library in the package's files, or named by the version output).
    pub backend: Backend,
    /// What else of the pool asks for a GPU (`--n-gpu-layers` above 0): what was installed
    /// must show a GPU backend too ([`PackageInstallSpec::gpu_ask`]).
    pub gpu: Option<GpuAsk>,
    /// The pool's `provisioning.allow_cpu_fallback`: a package that shows no GPU backend
    /// although one is asked for is kept (with a warning) instead of removed again.
    pub allow_cpu_fallback: bool,
    /// Options the server gets only when its help lists them, probed once after install
    /// (a failing or silent help run finds none).
    pub flag_probe: Option<crate::prepared::FlagProbe>,
}

impl PackageInstallSpec {
    /// Everything this install asks of the backend: [`PackageInstallSpec::backend`] when it
    /// is a GPU backend, and [`PackageInstallSpec::gpu`].
    pub fn gpu_ask(&self) -> Option<GpuAsk> {
        let named = self.backend.is_gpu().then(|| {
            GpuAsk::named(
                FoundBackend::from(self.backend),
                format!("provisioning.package.backend: {}", self.backend),
            )
        });
        GpuAsk::merge(named, self.gpu.clone())
    }
}

/// An engine installed from a distribution package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageArtifact {
    /// Manager that installed it.
    pub manager: ManagerKind,
    /// What the package database reports.
    pub package: InstalledPackage,
    /// The executable, found in the package's file list.
    pub executable: PathBuf,
    /// What the executable printed for `version_args` at install time (stdout and stderr).
    pub version_output: Option<String>,
    /// The options of the spec's flag probe that the installed server's help listed, recorded
    /// at install (empty when none was probed or the help did not answer).
    #[serde(default)]
    pub supported_flags: Vec<String>,
    /// The backend found at install time: the ggml libraries among the package's files, and
    /// the version output.
    pub found: BackendFinding,
    /// [`crate::package_engine_version`] of the installed package.
    pub engine_version: String,
    /// Key of the install record.
    pub key: String,
    /// Whether the pinned version was already installed and recorded (nothing was installed).
    pub cache_hit: bool,
    /// The install record.
    pub metadata_file: PathBuf,
}

/// Installs engines as pinned distribution packages, single-flight, with a record of what was
/// installed; the warm path asks the package database only.
#[cfg_attr(feature = "mocks", automock)]
#[async_trait]
pub trait PackageInstaller: Send + Sync {
    /// Returns the installed package for `spec`, installing it when the pinned version is not.
    async fn ensure_installed(&self, spec: &PackageInstallSpec) -> Result<PackageArtifact>;
}

// ---------------------------------------------------------------------------------------------
// ContainerRuntime

/// An image to make present locally, pinned by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Engine (names logs).
    pub engine: Engine,
    /// The image with its tag and, when pinned, its digest (from the image, `tag: sha256:…`
    /// or `digest:`, which must agree).
    pub image: ImageReference,
    /// The registry speaks plain HTTP.
    pub insecure: bool,
    /// Runtime forced by the config.
    pub runtime: Option<RuntimeKind>,
    /// GPU devices the container will get: each must exist on this host.
    pub devices: Vec<DeviceId>,
    /// Host files and directories named in the engine's flags that the run bind-mounts
    /// read-only (under `/inputs/`): each must exist, as the kind named, when the image is
    /// made present. Files the provisioner writes itself (under the run directory) are not
    /// listed.
    pub inputs: Vec<HostInput>,
}

/// A host path named in an engine flag, bind-mounted read-only into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInput {
    /// Absolute host path.
    pub path: PathBuf,
    /// What it must be.
    pub kind: HostInputKind,
    /// The option that names it (`--chat-template-file`).
    pub option: String,
    /// Where the configuration names it (`provisioning.flags[3]`), for errors.
    pub field: String,
}

/// What a [`HostInput`] must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostInputKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A file or a directory (vLLM's `--tokenizer`).
    Either,
}

impl HostInputKind {
    /// `a file`, `a directory`, `a file or directory`.
    pub fn described(self) -> &'static str {
        match self {
            HostInputKind::File => "a file",
            HostInputKind::Directory => "a directory",
            HostInputKind::Either => "a file or directory",
        }
    }
}

/// An image present locally, and the runtime that has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageArtifact {
    /// Runtime.
    pub runtime: RuntimeKind,
    /// Absolute path of the runtime program.
    pub program: PathBuf,
    /// Environment the runtime program needs (PATH, HOME, XDG_RUNTIME_DIR, CONTAINERS_CONF,
    /// DOCKER_HOST, …), taken from the host; never credentials.
    pub runtime_env: BTreeMap<String, String>,
    /// What `run` is given: `registry/repository@sha256:…` for an image pulled from (or
    /// pinned at) a registry; `sha256:<image ID>` for one resolved in the runtime's own store
    /// (`localhost/…`, built or loaded here).
    pub reference: String,
    /// Manifest digest; the image ID for an image resolved in the runtime's own store.
    pub digest: Digest,
    /// Tag, for humans.
    pub tag: Option<ImageTag>,
    /// `org.opencontainers.image.revision` label.
    pub revision: Option<String>,
    /// `org.opencontainers.image.version` label.
    pub version: Option<String>,
    /// The backend shown by the ggml libraries (`libggml-*.so*`) in the image's file system,
    /// read from its layers on the host without running it; `unknown` when they cannot be
    /// read (a storage driver other than overlay, storage this user cannot read).
    pub backend: BackendFinding,
    /// Whether the image was already present (no registry contacted).
    pub cache_hit: bool,
}

/// Resolves, pulls and verifies OCI images with podman (preferred) or docker (fallback).
#[cfg_attr(feature = "mocks", automock)]
#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Makes the image present by digest and reports what runs it.
    async fn ensure_image(&self, spec: &ImageSpec) -> Result<ImageArtifact>;
}

// ---------------------------------------------------------------------------------------------
// ModelProvisioner

/// A model to make available locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRequest {
    /// Where the model comes from. For `hf:` the revision written with `@` and
    /// `model.revision` were merged when the config was read (the two disagreeing is a config
    /// error), so [`HfRef::revision`](crate::model_ref::HfRef::revision) is the one to use.
    pub reference: ModelRef,
    /// Models directory: relative paths and names are looked up in it; downloads of schemes
    /// other than `hf:` land in it, and its `index.json` is the catalog.
    pub models_dir: PathBuf,
    /// Expected checksum (`model.checksum`): of the one file; on a whole repository it is a
    /// config error.
    pub checksum: Option<Checksum>,
    /// `model.include`: globs of repository paths to stage (`hf:org/repo` only; empty = all).
    pub include: Vec<String>,
    /// `model.exclude`: globs of repository paths never staged (`hf:org/repo` only).
    pub exclude: Vec<String>,
    /// Resolve an unpinned revision (a branch) again instead of reusing the recorded commit
    /// (`orchctl model pull --refresh`).
    pub refresh: bool,
}

/// One file of a staged model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFile {
    /// Path inside the model (the repository path for `hf:`, the file name otherwise).
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// `sha256:<hex>` of its content, when known (computed while downloading, or the hub's LFS
    /// hash).
    pub sha256: Option<String>,
}

/// A model present on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelArtifact {
    /// Absolute path the engine is given: the file, or for a whole repository the snapshot
    /// directory (`…/models--org--repo/snapshots/<commit>`).
    pub path: PathBuf,
    /// Size in bytes (all files together).
    pub bytes: u64,
    /// The catalog id of the entry (`index.json`), when the model went through the catalog.
    #[serde(default)]
    pub id: Option<String>,
    /// The commit a `hf:` revision resolved to.
    #[serde(default)]
    pub revision: Option<String>,
    /// The files staged, with their sizes and hashes (empty for a plain local file that was
    /// not hashed).
    #[serde(default)]
    pub files: Vec<ModelFile>,
    /// For `hf:`, the repository's directory in the Hugging Face cache
    /// (`…/hub/models--org--repo`): what a container mounts read-only, since snapshot files are
    /// relative symlinks into its `blobs`.
    #[serde(default)]
    pub cache_root: Option<PathBuf>,
}

impl ModelArtifact {
    /// A local file that was used where it is (no catalog entry, no revision).
    pub fn local(path: impl Into<PathBuf>, bytes: u64) -> ModelArtifact {
        ModelArtifact {
            path: path.into(),
            bytes,
            id: None,
            revision: None,
            files: Vec::new(),
            cache_root: None,
        }
    }
}

/// Makes models present locally (llama-orch's model-provisioner).
#[cfg_attr(feature = "mocks", automock)]
#[async_trait]
pub trait ModelProvisioner: Send + Sync {
    /// Ensures the model is on disk and returns where.
    async fn ensure_present(&self, request: &ModelRequest) -> Result<ModelArtifact>;
}

// ---------------------------------------------------------------------------------------------
// Policy

/// Something with side effects beyond the cache that policy may refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Clone or fetch a git repository.
    FetchSource {
        /// The repository.
        remote: GitRemote,
    },
    /// Download a file, pinned by a checksum.
    Download {
        /// URL.
        url: SafeUrl,
        /// The pool's `provisioning.allow_binary_downloads` (llama-orch's gate on binary mode).
        allowed_by_config: Option<bool>,
    },
    /// Resolve and pull an image from its registry.
    PullImage {
        /// The image.
        image: ImageReference,
        /// Whether the registry is spoken to over plain HTTP.
        insecure: bool,
    },
    /// Install distribution packages.
    InstallPackages {
        /// Package names.
        packages: Vec<PackageName>,
        /// The configured repository; `None`: the system's.
        repository: Option<PackageRepo>,
        /// The pool's `provisioning.allow_package_installs`.
        allowed_by_config: bool,
    },
}

/// Decides whether an action is allowed (pure: no I/O).
#[cfg_attr(feature = "mocks", automock)]
pub trait Policy: Send + Sync {
    /// `Ok` to go ahead, [`crate::Error::PolicyDenied`] with a hint naming the switch otherwise.
    fn check(&self, action: &Action) -> Result<()>;
}

// ---------------------------------------------------------------------------------------------
// Clock

/// Wall-clock time, injectable for deterministic tests.
#[cfg_attr(feature = "mocks", automock)]
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> SystemTime;
}

// ---------------------------------------------------------------------------------------------
// Progress

/// Progress of long work, for a terminal or a supervisor's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// A step started.
    Started {
        /// What.
        step: String,
        /// Extra detail, e.g. the log file.
        detail: Option<String>,
    },
    /// Build steps done, from the build tool's own counter: ninja's `[n/m]`, or make's
    /// `[ p%]` as p of 100; `current` is what the line says is being built
    /// (`Building CXX object …/server.cpp.o`).
    Steps {
        /// What.
        step: String,
        /// Steps done.
        done: u64,
        /// Steps in all.
        total: u64,
        /// What is being built now, when the line says.
        current: Option<String>,
    },
    /// Bytes moved so far (downloads).
    Bytes {
        /// What.
        step: String,
        /// Bytes done.
        done: u64,
        /// Total, when known.
        total: Option<u64>,
    },
    /// A step finished.
    Finished {
        /// What.
        step: String,
    },
    /// Something worth telling the user.
    Note {
        /// The note.
        message: String,
    },
}

/// Receives progress events. The library never prints; the CLI renders these on stderr.
#[cfg_attr(feature = "mocks", automock)]
pub trait Progress: Send + Sync {
    /// Reports an event.
    fn report(&self, event: ProgressEvent);
}

/// Discards progress.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn report(&self, _event: ProgressEvent) {}
}

/// A Progress that keeps every event, for tests (feature `mocks`).
#[cfg(feature = "mocks")]
#[derive(Debug, Default)]
pub struct RecordingProgress(std::sync::Mutex<Vec<ProgressEvent>>);

#[cfg(feature = "mocks")]
impl RecordingProgress {
    /// Every event so far, in order.
    pub fn events(&self) -> Vec<ProgressEvent> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The messages of the `Note` events.
    pub fn notes(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                ProgressEvent::Note { message } => Some(message),
                _ => None,
            })
            .collect()
    }

    /// The steps of the `Started` events.
    pub fn started(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                ProgressEvent::Started { step, .. } => Some(step),
                _ => None,
            })
            .collect()
    }

    /// Every event rendered as text, for "never mentions" checks.
    pub fn text(&self) -> String {
        format!("{:?}", self.events())
    }
}

#[cfg(feature = "mocks")]
impl Progress for RecordingProgress {
    fn report(&self, event: ProgressEvent) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}

/// A Shell that passes every command on to another one and records it, for tests that count or
/// inspect what reached the real shell (feature `mocks`).
#[cfg(feature = "mocks")]
pub struct RecordingShell {
    inner: Arc<dyn Shell>,
    seen: std::sync::Mutex<Vec<CommandSpec>>,
}

#[cfg(feature = "mocks")]
impl RecordingShell {
    /// Records what runs through `inner`.
    pub fn new(inner: Arc<dyn Shell>) -> Self {
        RecordingShell {
            inner,
            seen: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Every command run so far, in order.
    pub fn commands(&self) -> Vec<CommandSpec> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many commands ran.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(feature = "mocks")]
#[async_trait]
impl Shell for RecordingShell {
    async fn run(&self, command: &CommandSpec) -> Result<CommandOutput> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(command.clone());
        self.inner.run(command).await
    }

    fn locate(&self, program: &str) -> Option<ToolInfo> {
        self.inner.locate(program)
    }

    fn inspect(&self, path: &Path) -> Option<ToolInfo> {
        self.inner.inspect(path)
    }
}

// ---------------------------------------------------------------------------------------------
// SourceBuilder

/// CMake variables that carry the resolved commit into the binary (llama.cpp's build info).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfoVariables {
    /// Variable receiving the abbreviated commit, e.g. `LLAMA_BUILD_COMMIT`.
    pub commit: String,
    /// Variable receiving the build number, e.g. `LLAMA_BUILD_NUMBER`.
    pub number: String,
}

/// A source build to ensure: fetched, configured, built and installed under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceBuildSpec {
    /// Engine (names the cache and the log lines).
    pub engine: Engine,
    /// Engine cache root, e.g. `~/.cache/llama-orch/llamacpp`.
    pub cache_dir: PathBuf,
    /// Repository.
    pub repo: GitRemote,
    /// Tag, branch or commit.
    pub reference: GitRef,
    /// Whether to check out submodules.
    pub submodules: bool,
    /// Generator, or `None` for Ninja when present, else make.
    pub generator: Option<Generator>,
    /// Normalised cache entries.
    pub cmake_flags: CacheEntries,
    /// Entries given under an old option name and passed under its successor: when the tree
    /// being built declares only the old name, the builder passes that one instead.
    pub renamed: Vec<crate::cmake::OptionRename>,
    /// Settings that depend on the checked-out tree (applied after checkout, before configure).
    pub tree_rules: Vec<crate::cmake::TreeRule>,
    /// Downloads the chosen options make during the build: each is checked against the host
    /// policy in preflight, before anything is fetched.
    pub fetches: Vec<crate::cmake::BuildFetch>,
    /// Headers the chosen options need, checked in preflight.
    pub headers: Vec<crate::tools::HeaderRequirement>,
    /// Variables set from the resolved commit.
    pub build_info: Option<BuildInfoVariables>,
    /// Targets to build.
    pub targets: Vec<String>,
    /// Artefacts to install, relative to the build dir (e.g. `bin/llama-server`).
    pub artifacts: Vec<String>,
    /// Backend, which decides the extra toolchain (nvcc, hipcc, glslc) and the post-build check.
    pub backend: Backend,
    /// The pool's `allow_package_installs`: preflight may install missing tools through the
    /// host's package manager.
    pub allow_package_installs: bool,
    /// Options the server gets only when its help lists them, probed once after install
    /// (a failing or silent help run finds none).
    pub flag_probe: Option<crate::prepared::FlagProbe>,
}

/// An installed source build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceArtifact {
    /// Install directory; artefacts keep their file names under `bin/`.
    pub dir: PathBuf,
    /// Full commit SHA.
    pub commit: String,
    /// Cache key.
    pub key: String,
    /// The exact cmake flags used, including the commit-derived ones.
    pub flags: Vec<String>,
    /// Tools used and their fingerprints.
    pub toolchain: BTreeMap<String, String>,
    /// Whether it was already installed.
    pub cache_hit: bool,
    /// The metadata file next to the artefact.
    pub metadata_file: PathBuf,
    /// The engine version recorded in the metadata ([`crate::source_engine_version`]).
    pub engine_version: String,
    /// The options of the spec's flag probe that the installed server's help listed, recorded
    /// at install (empty when none was probed or the help did not answer).
    #[serde(default)]
    pub supported_flags: Vec<String>,
}

/// Fetches, builds and installs source trees, single-flight and atomically.
#[cfg_attr(feature = "mocks", automock)]
#[async_trait]
pub trait SourceBuilder: Send + Sync {
    /// Returns the installed build for `spec`, building it when it is not in the cache.
    async fn ensure_built(&self, spec: &SourceBuildSpec) -> Result<SourceArtifact>;
}

// ---------------------------------------------------------------------------------------------
// BinaryInstaller

/// Formats a downloaded artefact can have, inferred from the URL's file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveFormat {
    /// `.tar.gz`, `.tgz`
    TarGz,
    /// `.tar.zst`, `.tzst`
    TarZst,
    /// `.tar.xz`, `.txz`
    TarXz,
    /// `.zip`
    Zip,
    /// Anything else: the file is the executable itself.
    Bare,
}

impl ArchiveFormat {
    /// Infers the format from a URL's path (query and fragment ignored).
    pub fn from_url(url: &SafeUrl) -> ArchiveFormat {
        let path = url.path().to_ascii_lowercase();
        if path.ends_with(".tar.gz") || path.ends_with(".tgz") {
            ArchiveFormat::TarGz
        } else if path.ends_with(".tar.zst") || path.ends_with(".tzst") {
            ArchiveFormat::TarZst
        } else if path.ends_with(".tar.xz") || path.ends_with(".txz") {
            ArchiveFormat::TarXz
        } else if path.ends_with(".zip") {
            ArchiveFormat::Zip
        } else {
            ArchiveFormat::Bare
        }
    }

    /// The name used in plans.
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveFormat::TarGz => "tar.gz",
            ArchiveFormat::TarZst => "tar.zst",
            ArchiveFormat::TarXz => "tar.xz",
            ArchiveFormat::Zip => "zip",
            ArchiveFormat::Bare => "executable",
        }
    }
}

/// Caps on what an archive may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnpackLimits {
    /// Total bytes of all files.
    pub max_bytes: u64,
    /// Number of entries.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 8 * 1024 * 1024 * 1024,
            max_entries: 100_000,
        }
    }
}

/// A prebuilt artefact to install from a pinned URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryInstallSpec {
    /// Engine (names logs and metadata).
    pub engine: Engine,
    /// Install root: `<engine cache>/bin` or `binary.install_dir`; installs go to `<root>/<key>`.
    pub install_root: PathBuf,
    /// Download URL.
    pub url: SafeUrl,
    /// Expected checksum (always required).
    pub checksum: Checksum,
    /// Exact size, when pinned.
    pub size: Option<u64>,
    /// The pool's `allow_binary_downloads`.
    pub allowed_by_config: Option<bool>,
    /// File name of the executable to find in the unpacked tree (exactly one must exist).
    pub executable: String,
    /// Names the engine's server had in older releases (llama.cpp's `server` before mid-2024),
    /// looked for in order when the archive has no [`BinaryInstallSpec::executable`].
    pub older_names: Vec<String>,
    /// `binary.executable`: the server's path in the archive (or its file name), which
    /// replaces the search by name.
    pub configured: Option<crate::names::ArchiveMember>,
    /// Arguments that make the executable print its version, run once after install.
    pub version_args: Vec<String>,
    /// Unpacking caps.
    pub limits: UnpackLimits,
    /// Options the server gets only when its help lists them, probed once after install
    /// (a failing or silent help run finds none).
    pub flag_probe: Option<crate::prepared::FlagProbe>,
}

/// An installed prebuilt artefact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryArtifact {
    /// Install directory.
    pub dir: PathBuf,
    /// The executable inside it.
    pub executable: PathBuf,
    /// Directories holding shared libraries shipped with it (for LD_LIBRARY_PATH).
    pub library_dirs: Vec<PathBuf>,
    /// Every shared library (`lib*.so`, `lib*.so.*`) shipped with it, absolute: the ggml
    /// backend libraries among them show its backend.
    pub libraries: Vec<PathBuf>,
    /// Checksum of the downloaded file.
    pub checksum: Checksum,
    /// Size of the downloaded file.
    pub bytes: u64,
    /// What the executable printed for `version_args` at install time (stdout and stderr).
    pub version_output: Option<String>,
    /// The options of the spec's flag probe that the installed server's help listed, recorded
    /// at install (empty when none was probed or the help did not answer).
    #[serde(default)]
    pub supported_flags: Vec<String>,
    /// Cache key.
    pub key: String,
    /// Whether it was already installed.
    pub cache_hit: bool,
    /// The metadata file next to the artefact.
    pub metadata_file: PathBuf,
}

/// Downloads, verifies, unpacks and installs prebuilt artefacts, single-flight and atomically.
#[cfg_attr(feature = "mocks", automock)]
#[async_trait]
pub trait BinaryInstaller: Send + Sync {
    /// Returns the installed artefact for `spec`, downloading it when it is not installed.
    async fn ensure_installed(&self, spec: &BinaryInstallSpec) -> Result<BinaryArtifact>;
}

// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// RunFiles

/// Files a prepared engine needs that hold secrets (the pool's env file, an engine's key file):
/// written with mode 0600 under the pool's own directory of the run dir (mode 0700), so that no
/// secret is ever on a command line or in a prepared engine; and the secrets a configuration
/// names instead of giving them (`{from_env: NAME}`, `{from_file: PATH}`), read when those files
/// are written.
#[cfg_attr(feature = "mocks", automock)]
#[async_trait]
pub trait RunFiles: Send + Sync {
    /// Where `<run dir>/<pool>/<name>` is, without writing it (for plans). The files of one
    /// pool are siblings in one directory.
    fn path(&self, pool: &PoolId, name: &str) -> PathBuf;

    /// Writes `contents` to that file atomically, mode 0600, and returns its path.
    async fn write_private(&self, pool: &PoolId, name: &str, contents: &Secret) -> Result<PathBuf>;

    /// Checks that the host paths a native engine's flags name (`--chat-template-file`, …)
    /// exist as what their options take and can be read, so that a missing one fails prepare
    /// rather than the engine's start. Errors: [`crate::Error::ConfigInvalid`] at the flag.
    /// Default: no check (a host with no files to look at).
    async fn check_inputs(&self, inputs: &[HostInput]) -> Result<()> {
        let _ = inputs;
        Ok(())
    }

    /// The value of an env entry: a plain value as given; a reference read from this process's
    /// environment or from its file. The error says what is missing or unreadable, never a
    /// value; the caller names the pool key. Default: plain values only (a host that reads no
    /// references refuses them).
    async fn resolve(&self, value: &EnvValue) -> std::result::Result<Secret, String> {
        match value {
            EnvValue::Plain(secret) => Ok(secret.clone()),
            EnvValue::FromEnv(_) | EnvValue::FromFile(_) => Err(format!(
                "{} cannot be read here: this provisioner reads no references",
                value.describe()
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// KnownFacts

/// What this host learnt from earlier work, read from local state only (no network, no
/// process): plans show these values when known and "resolved at prepare" otherwise.
#[cfg_attr(feature = "mocks", automock)]
pub trait KnownFacts: Send + Sync {
    /// The full commit `reference` of `repo` resolved to before, from the engine cache at
    /// `cache_dir` (tags and full SHAs only: a branch moves).
    fn commit(&self, cache_dir: &Path, repo: &GitRemote, reference: &GitRef) -> Option<String>;

    /// The digest an image's tag resolved to before.
    fn image_digest(&self, image: &ImageReference) -> Option<Digest>;

    /// The size of a local file or directory, in bytes.
    fn size(&self, path: &Path) -> Option<u64>;

    /// What an earlier prepare staged for a remote model (`hf:`, `https:`), from the models
    /// directory's catalog and the Hugging Face cache's `refs`; `None` when nothing is recorded
    /// or a branch would be resolved again.
    fn staged_model(&self, _request: &ModelRequest) -> Option<StagedModel> {
        None
    }
}

/// A remote model staged by an earlier prepare, as a plan shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedModel {
    /// Where it is (the file, or a repository's snapshot directory).
    pub path: PathBuf,
    /// The commit a `hf:` revision resolved to.
    pub revision: Option<String>,
    /// Its size in bytes (every file together).
    pub bytes: u64,
}

/// Knows nothing: every value is resolved at prepare.
#[derive(Debug, Clone, Copy, Default)]
pub struct NothingKnown;

impl KnownFacts for NothingKnown {
    fn commit(&self, _: &Path, _: &GitRemote, _: &GitRef) -> Option<String> {
        None
    }

    fn image_digest(&self, _: &ImageReference) -> Option<Digest> {
        None
    }

    fn size(&self, _: &Path) -> Option<u64> {
        None
    }
}

// ---------------------------------------------------------------------------------------------

/// The ports the recipes use. What only an adapter needs (a Shell, the Policy, a Clock, a
/// Fetcher, the host's package manager) is given to that adapter's constructor instead.
#[derive(Clone)]
pub struct Ports {
    /// Models.
    pub models: Arc<dyn ModelProvisioner>,
    /// Source builds (source mode), when wired.
    pub source_builder: Option<Arc<dyn SourceBuilder>>,
    /// Prebuilt installs (binary mode), when wired.
    pub binaries: Option<Arc<dyn BinaryInstaller>>,
    /// Engine packages (package mode), when wired.
    pub packages: Option<Arc<dyn PackageInstaller>>,
    /// Images (container mode), when wired.
    pub containers: Option<Arc<dyn ContainerRuntime>>,
    /// Private files (the pool's env file, an engine's key file) and the secrets they carry.
    pub run_files: Arc<dyn RunFiles>,
    /// What this host knows from earlier work, for plans.
    pub known: Arc<dyn KnownFacts>,
    /// Progress sink.
    pub progress: Arc<dyn Progress>,
}
