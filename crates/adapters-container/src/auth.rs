//! Registry credentials: looked up in container auth files (podman's `auth.json`, docker's
//! `config.json`) or taken from `LLAMA_ORCH_REGISTRY_USER` / `LLAMA_ORCH_REGISTRY_PASSWORD`, and
//! handed to the runtime in a private temporary auth file, never on a command line.
//!
//! [`Credentials`] never shows its password: its `Debug` prints `***`, and it has no `Display`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use provisioner_core::{Error, Result};

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
    fn encoded(&self) -> String {
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

/// The host part of an auth-file key (`https://host/v1/` → `host`).
fn key_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

fn same_registry(key: &str, registry: &str) -> bool {
    let host = key_host(key);
    host.eq_ignore_ascii_case(registry)
        || (DOCKER_HUB.contains(&host) && DOCKER_HUB.contains(&registry))
}

/// Reads the credentials for `registry` from one auth file's JSON text.
pub fn credentials_in(text: &str, registry: &str) -> Option<Credentials> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let auths = value.get("auths")?.as_object()?;
    // An exact `host` key wins over `https://host/...` forms.
    let mut entries: Vec<(&String, &serde_json::Value)> = auths
        .iter()
        .filter(|(key, _)| same_registry(key, registry))
        .collect();
    entries.sort_by_key(|(key, _)| *key != registry);
    entries.into_iter().find_map(|(_, entry)| {
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
    })
}

/// The credentials for `registry`: the first auth file that has an entry for it, else
/// `fallback` (the `LLAMA_ORCH_REGISTRY_*` variables). Unreadable files are skipped.
pub fn lookup_credentials(
    registry: &str,
    auth_files: &[PathBuf],
    fallback: Option<&Credentials>,
) -> Option<Credentials> {
    auth_files
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .find_map(|text| credentials_in(&text, registry))
        .or_else(|| fallback.cloned())
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
