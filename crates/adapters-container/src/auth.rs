//! Registry credentials, looked up where the container tools keep them and handed to the runtime
//! in a private temporary auth file, never on a command line.
//!
//! ## Where they are looked up ([`CredentialSources::lookup`])
//!
//! The auth files in order (podman's: `$REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`, then
//! `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`; a missing, unreadable or invalid file
//! is skipped), and in each file:
//!
//! 1. `credHelpers.<registry>`: the credential helper named for this registry;
//! 2. an `auths.<registry>` entry that carries credentials (`auth`, base64 `user:password`, or
//!    `username` and `password`); an empty entry `{}` (what `docker login` writes when a helper
//!    keeps the secret) falls through;
//! 3. `credsStore`: the helper that keeps every registry's credentials.
//!
//! After all the files, `LLAMA_ORCH_REGISTRY_USER` / `LLAMA_ORCH_REGISTRY_PASSWORD`. The first
//! source that has credentials wins; a helper that has none ("credentials not found", non-zero
//! exit) passes on to the next source; a helper that is missing or fails stops the lookup with an
//! error that names the helper and the file and key that selected it.
//!
//! Registry keys may be bare hosts (`ghcr.io`, `127.0.0.1:5000`), URLs
//! (`https://ghcr.io/v1/`) or Docker Hub's `https://index.docker.io/v1/`; they are compared by
//! host (case-insensitively), and `docker.io`, `index.docker.io` and `registry-1.docker.io` are
//! one registry.
//!
//! ## Credential helpers
//!
//! A helper `NAME` is the program `docker-credential-NAME`, run as `docker-credential-NAME get`
//! through the [`Shell`] port with the documented docker-credential-helpers protocol: the server
//! URL on standard input (the `auths` key as `docker login` wrote it when there is one, else
//! `https://index.docker.io/v1/` for Docker Hub and the registry host for others), a JSON object
//! `{"ServerURL","Username","Secret"}` on standard output. The command is `sensitive`: what it
//! prints is never logged, traced, shown as progress or quoted in an error. It runs with an
//! environment built from allowlists: the variables of this process that every program gets
//! ([`provisioner_core::BASE_ENV`]: PATH, HOME, the locale, the proxies and CA bundle a helper
//! asking a cloud's token service goes through) and those its protocol needs ([`HELPER_ENV`]),
//! with the values of [`crate::ContainerSettings::env`] for the ones it holds (PATH, HOME,
//! XDG_RUNTIME_DIR, DOCKER_CONFIG) set on top — the same PATH the runtime commands get. No other
//! variable (`LLAMA_ORCH_REGISTRY_PASSWORD`, `HF_TOKEN`, say) reaches it. A helper that does not answer within
//! [`HELPER_TIMEOUT`] is stopped (its process group is killed).
//!
//! [`Credentials`] never shows its password: its `Debug` prints `***`, and it has no `Display`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use provisioner_core::{CommandSpec, Error, Result, Secret, Shell};

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    password: String,
}

impl Credentials {
    /// Credentials from a user name and a password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The password (only for handing it to the registry client or an auth file).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `base64(user:password)`, the `auth` field of auth files.
    pub(crate) fn encoded(&self) -> String {
        STANDARD.encode(format!("{}:{}", self.username, self.password))
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Hosts that name Docker Hub in auth files.
const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// The server URL docker uses for Docker Hub in its config and with credential helpers.
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// The variables of this process a credential helper inherits besides the base list
/// ([`provisioner_core::BASE_ENV`]; an entry ending in `*` is a prefix): what helpers' protocols
/// need to find their store or their cloud's credentials. Kept apart from the lists of the
/// other jobs, since it lets cloud credentials through, to the helper that exchanges them for a
/// registry token and to nothing else:
///
/// - XDG_RUNTIME_DIR and DOCKER_CONFIG for all of them (the session's sockets, docker's
///   config directory);
/// - `AWS_*` for `ecr-login` (profile, region, keys, web identity, `AWS_ECR_*` cache settings);
/// - `GOOGLE_*` (`GOOGLE_APPLICATION_CREDENTIALS`), `CLOUDSDK_*` and GCE_METADATA_HOST for
///   `gcr`/`gcloud`;
/// - `AZURE_*`, and IDENTITY_ENDPOINT, IDENTITY_HEADER, MSI_ENDPOINT, MSI_SECRET (managed
///   identity) for `acr-env`;
/// - DBUS_SESSION_BUS_ADDRESS for `secretservice`;
/// - PASSWORD_STORE_DIR and GNUPGHOME for `pass`.
///
/// Nothing else reaches a helper.
pub const HELPER_ENV: [&str; 14] = [
    "XDG_RUNTIME_DIR",
    "DOCKER_CONFIG",
    "AWS_*",
    "GOOGLE_*",
    "CLOUDSDK_*",
    "GCE_METADATA_HOST",
    "AZURE_*",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "DBUS_SESSION_BUS_ADDRESS",
    "PASSWORD_STORE_DIR",
    "GNUPGHOME",
];

/// How long a credential helper may take to answer (it may have to unlock a keyring or ask a
/// cloud's token service) before it is stopped.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// What a helper prints when it has no credentials for the server (docker-credential-helpers'
/// `errCredentialsNotFound`; compared case-insensitively, as a part of the output).
const NOT_FOUND_MESSAGE: &str = "credentials not found";

/// The host part of an auth-file key (`https://host/v1/` → `host`).
fn key_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// Whether an auth-file key (a host or a URL) names `registry`.
fn same_registry(key: &str, registry: &str) -> bool {
    let host = key_host(key).to_ascii_lowercase();
    let registry = registry.to_ascii_lowercase();
    host == registry
        || (DOCKER_HUB.contains(&host.as_str()) && DOCKER_HUB.contains(&registry.as_str()))
}

/// The entries of a JSON object whose keys name `registry`, an exact key first.
fn matching<'a>(
    object: Option<&'a serde_json::Value>,
    registry: &str,
) -> Vec<(&'a String, &'a serde_json::Value)> {
    let Some(object) = object.and_then(|o| o.as_object()) else {
        return Vec::new();
    };
    let mut entries: Vec<(&String, &serde_json::Value)> = object
        .iter()
        .filter(|(key, _)| same_registry(key, registry))
        .collect();
    entries.sort_by_key(|(key, _)| *key != registry);
    entries
}

/// The credentials an `auths` entry carries itself (`None` for `{}` and for unreadable ones).
fn stored(entry: &serde_json::Value) -> Option<Credentials> {
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str())
        && !auth.is_empty()
    {
        let decoded = STANDARD.decode(auth.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        return Some(Credentials::new(user, password));
    }
    let user = entry.get("username")?.as_str()?;
    let password = entry.get("password")?.as_str()?;
    Some(Credentials::new(user, password))
}

/// Reads the credentials for `registry` stored in one auth file's JSON text (`auths` entries
/// only; [`CredentialSources::lookup`] also asks the credential helpers the file names).
pub fn credentials_in(text: &str, registry: &str) -> Option<Credentials> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    matching(value.get("auths"), registry)
        .into_iter()
        .find_map(|(_, entry)| stored(entry))
}

/// Where credentials came from, for messages (never the credentials themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An `auths` entry of an auth file.
    AuthFile {
        /// The file.
        file: PathBuf,
        /// The entry's key.
        key: String,
    },
    /// A credential helper named in an auth file.
    Helper {
        /// The helper's name: the program is `docker-credential-<name>`.
        name: String,
        /// The file that names it.
        file: PathBuf,
        /// The key that selected it: `credsStore` or `credHelpers."<key>"`.
        selected_by: String,
        /// The server URL it was asked about.
        server_url: String,
    },
    /// `LLAMA_ORCH_REGISTRY_USER` / `LLAMA_ORCH_REGISTRY_PASSWORD`.
    Environment,
}

impl Origin {
    /// A helper's program name (`docker-credential-<name>`); `None` for other origins.
    pub fn helper_program(&self) -> Option<String> {
        match self {
            Origin::Helper { name, .. } => Some(helper_program(name)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::AuthFile { file, key } => {
                write!(f, "`auths.\"{key}\"` in {}", file.display())
            }
            Origin::Helper {
                name,
                file,
                selected_by,
                ..
            } => write!(
                f,
                "{} (selected by `{selected_by}` in {})",
                helper_program(name),
                file.display()
            ),
            Origin::Environment => {
                f.write_str("LLAMA_ORCH_REGISTRY_USER and LLAMA_ORCH_REGISTRY_PASSWORD")
            }
        }
    }
}

/// Whether `name` can only be the suffix of a program looked up on PATH: `desktop`,
/// `ecr-login`, `osxkeychain`, never `../x` or `-x`.
fn is_helper_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn helper_program(name: &str) -> String {
    format!("docker-credential-{name}")
}

/// Credentials and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The credentials.
    pub credentials: Credentials,
    /// Where they came from.
    pub origin: Origin,
}

/// What a lookup found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    /// The first credentials found, if any.
    pub found: Option<Found>,
    /// The credential helpers asked before that, which had none for the registry.
    pub empty_helpers: Vec<Origin>,
}

/// One place in an auth file that may hold credentials for a registry.
enum Candidate {
    Stored(Credentials, Origin),
    Helper(Origin),
}

/// The places in one auth file, in order: `credHelpers`, an `auths` entry with credentials,
/// `credsStore`.
fn candidates(config: &serde_json::Value, registry: &str, file: &Path) -> Vec<Candidate> {
    let auths = matching(config.get("auths"), registry);
    // Helpers are asked with the server URL the login stored the secret under: the `auths` key
    // `docker login` wrote next to it, else docker's own choice.
    let server_url = auths
        .first()
        .map(|(key, _)| key.to_string())
        .unwrap_or_else(|| {
            if DOCKER_HUB.contains(&registry.to_ascii_lowercase().as_str()) {
                DOCKER_HUB_SERVER.to_string()
            } else {
                registry.to_string()
            }
        });
    let helper = |name: &str, selected_by: String| {
        Candidate::Helper(Origin::Helper {
            name: name.to_string(),
            file: file.to_path_buf(),
            selected_by,
            server_url: server_url.clone(),
        })
    };
    let mut found = Vec::new();
    if let Some((key, name)) = matching(config.get("credHelpers"), registry)
        .into_iter()
        .find_map(|(key, value)| Some((key, value.as_str().filter(|n| !n.is_empty())?)))
    {
        found.push(helper(name, format!("credHelpers.\"{key}\"")));
    }
    if let Some((key, credentials)) = auths
        .iter()
        .find_map(|(key, entry)| Some((key, stored(entry)?)))
    {
        found.push(Candidate::Stored(
            credentials,
            Origin::AuthFile {
                file: file.to_path_buf(),
                key: key.to_string(),
            },
        ));
    }
    if let Some(name) = config
        .get("credsStore")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
    {
        found.push(helper(name, "credsStore".to_string()));
    }
    found
}

/// Where registry credentials are looked up: auth files (with the credential helpers they name)
/// and the `LLAMA_ORCH_REGISTRY_*` variables.
#[derive(Clone, Copy)]
pub struct CredentialSources<'a> {
    /// Runs credential helpers.
    pub shell: &'a dyn Shell,
    /// Auth files, in the order they are searched.
    pub auth_files: &'a [PathBuf],
    /// Host variables ([`crate::ContainerSettings::env`]); those a helper inherits (the base
    /// list and [`HELPER_ENV`]) are set for credential helpers on top of what they inherit.
    pub env: &'a BTreeMap<String, String>,
    /// `LLAMA_ORCH_REGISTRY_USER` / `LLAMA_ORCH_REGISTRY_PASSWORD`, tried after the auth files.
    pub fallback: Option<&'a Credentials>,
}

impl std::fmt::Debug for CredentialSources<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialSources")
            .field("auth_files", &self.auth_files)
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

impl CredentialSources<'_> {
    /// The credentials for `registry` (see the module documentation for the order). `Err` when a
    /// credential helper that was selected is missing or fails.
    pub async fn lookup(&self, registry: &str) -> Result<Search> {
        let mut search = Search::default();
        for file in self.auth_files {
            let text = match adapters_host::read_capped(file, adapters_host::read::MAX_HOST_FILE) {
                Ok(text) => text,
                Err(error) => {
                    if error.kind() != std::io::ErrorKind::NotFound {
                        tracing::debug!(file = %file.display(), %error, "auth file not read; skipped");
                    }
                    continue;
                }
            };
            let Ok(config) = serde_json::from_str::<serde_json::Value>(&text) else {
                tracing::debug!(file = %file.display(), "auth file is not valid JSON; skipped");
                continue;
            };
            for candidate in candidates(&config, registry, file) {
                match candidate {
                    Candidate::Stored(credentials, origin) => {
                        search.found = Some(Found {
                            credentials,
                            origin,
                        });
                        return Ok(search);
                    }
                    Candidate::Helper(origin) => match self.ask(&origin, registry).await? {
                        Some(credentials) => {
                            search.found = Some(Found {
                                credentials,
                                origin,
                            });
                            return Ok(search);
                        }
                        None => search.empty_helpers.push(origin),
                    },
                }
            }
        }
        search.found = self.fallback.map(|credentials| Found {
            credentials: credentials.clone(),
            origin: Origin::Environment,
        });
        Ok(search)
    }

    /// `docker-credential-<name> get`: `Some` credentials, `None` when it has none.
    async fn ask(&self, origin: &Origin, registry: &str) -> Result<Option<Credentials>> {
        let Origin::Helper { server_url, .. } = origin else {
            return Ok(None);
        };
        let program = origin.helper_program().unwrap_or_default();
        if let Origin::Helper {
            name,
            file,
            selected_by,
            ..
        } = origin
            && !is_helper_name(name)
        {
            return Err(Error::data(
                "read",
                file,
                format!(
                    "`{selected_by}` names the credential helper `{name}`, which is not a program suffix (letters, digits, `.`, `_`, `-`; never a path or an option); it is not run. Fix it, or log in again with `podman login {registry}`"
                ),
            ));
        }
        let mut command = CommandSpec::new(&program, ["get"])
            .stdin(Secret::new(server_url.clone()))
            .sensitive()
            .inherit_also(HELPER_ENV);
        command.env = self
            .env
            .iter()
            .filter(|(name, _)| command.inherits(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let failed = |status: String| helper_failed(&command, origin, registry, status);
        let output = match tokio::time::timeout(HELPER_TIMEOUT, self.shell.run(&command)).await {
            Err(_) => {
                return Err(failed(format!(
                    "no answer within {} s; stopped",
                    HELPER_TIMEOUT.as_secs()
                )));
            }
            Ok(Err(Error::MissingTool { .. })) => {
                return Err(helper_missing(&program, origin, registry));
            }
            Ok(Err(Error::Spawn { source, .. })) => {
                return Err(failed(format!("cannot be started: {source}")));
            }
            Ok(Err(other)) => return Err(other),
            Ok(Ok(output)) => output,
        };
        if !output.success() {
            if output
                .stdout
                .to_ascii_lowercase()
                .contains(NOT_FOUND_MESSAGE)
            {
                tracing::debug!(helper = %program, registry, "no credentials in the helper");
                return Ok(None);
            }
            return Err(failed(output.status()));
        }
        if output.stdout_truncated {
            return Err(failed(format!(
                "exit code 0, but it printed more than {}; a credential is a small JSON object",
                provisioner_core::human_bytes(provisioner_core::MAX_STDOUT as u64)
            )));
        }
        match parse_helper_output(&output.stdout) {
            Some(credentials) => Ok(credentials),
            None => Err(failed(
                "exit code 0, but its output is not a {\"Username\",\"Secret\"} object".to_string(),
            )),
        }
    }
}

/// A helper's answer: `Some(None)` for an empty one, `None` when it is not the protocol's JSON.
fn parse_helper_output(stdout: &str) -> Option<Option<Credentials>> {
    let value: serde_json::Value = serde_json::from_str(stdout.trim()).ok()?;
    let object = value.as_object()?;
    let field = |name: &str| -> Option<String> {
        match object.get(name) {
            None | Some(serde_json::Value::Null) => Some(String::new()),
            Some(value) => value.as_str().map(str::to_string),
        }
    };
    let username = field("Username")?;
    let secret = field("Secret")?;
    if secret.is_empty() {
        return Some(None);
    }
    Some(Some(Credentials::new(username, secret)))
}

/// The file and key that selected a helper.
fn selection(origin: &Origin) -> (String, &str) {
    match origin {
        Origin::Helper {
            file, selected_by, ..
        } => (file.display().to_string(), selected_by),
        _ => (String::new(), ""),
    }
}

fn helper_missing(program: &str, origin: &Origin, registry: &str) -> Error {
    let (file, selected_by) = selection(origin);
    Error::MissingTool {
        tool: program.to_string(),
        purpose: format!(
            "read the registry credentials for {registry} (`{selected_by}` in {file} names it)"
        ),
        searched: Vec::new(),
        hint: Some(format!(
            "install {program} and put it on PATH (the PATH the container runtime gets), or remove `{selected_by}` from {file} and log in again with `podman login {registry}` or `docker login {registry}`"
        )),
    }
}

/// A helper that failed: the program and its exit status, never its output.
fn helper_failed(command: &CommandSpec, origin: &Origin, registry: &str, status: String) -> Error {
    let (file, selected_by) = selection(origin);
    let program = origin.helper_program().unwrap_or_default();
    Error::CommandFailed {
        command: command.display(),
        status,
        tail: String::new(),
        log: None,
        hint: Some(format!(
            "{program} (selected by `{selected_by}` in {file}) could not give the credentials for {registry}; its output is not shown because it may hold secrets. Check that {program} works (is its keyring or cloud login available?), log in again with `docker login {registry}`, or remove `{selected_by}` from {file}"
        )),
    }
}

/// Removes the auth directories of processes that are gone (a run killed while it pulled): they
/// hold credentials and nothing will use them again.
fn sweep_dead(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix("auth-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A private auth file holding one registry's credentials, removed when dropped.
#[derive(Debug)]
pub struct TempAuthFile {
    dir: PathBuf,
    file: PathBuf,
}

impl TempAuthFile {
    /// Writes `{"auths":{registry:{"auth":…}}}` as `<parent>/auth-<pid>-<n>/config.json` with mode
    /// 0600 in a 0700 directory (docker reads `config.json` from `--config DIR`; podman takes the
    /// file with `--authfile`).
    pub fn write(parent: &Path, registry: &str, credentials: &Credentials) -> Result<TempAuthFile> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        sweep_dead(parent);
        let dir = parent.join(format!(
            "auth-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io("create", &dir, e))?;
        let guard = TempAuthFile {
            file: dir.join("config.json"),
            dir,
        };
        let body = serde_json::json!({ "auths": { registry: { "auth": credentials.encoded() } } });
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&guard.file)
            .map_err(|e| Error::io("create", &guard.file, e))?;
        file.write_all(body.to_string().as_bytes())
            .map_err(|e| Error::io("write", &guard.file, e))?;
        Ok(guard)
    }

    /// The auth file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Its directory (docker's `--config`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TempAuthFile {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
