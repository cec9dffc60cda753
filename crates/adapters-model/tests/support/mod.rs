//! Shared setup of the integration tests: a fake hub, a temporary hub cache and models
//! directory, and a `Models` wired as the CLI wires it (an `HttpFetcher` with the policy).

#![allow(dead_code)]

#[path = "../../src/fake_hub.rs"]
pub mod fake_hub;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use adapters_binary::{FetchSettings, HttpFetcher};
use adapters_model::{Catalog, HfSettings, Models};
use provisioner_core::{
    Action, Error, ModelRequest, Policy, RecordingProgress, Result, SafeUrl, Secret,
};

#[allow(unused_imports)] // not every test binary uses all of them
pub use fake_hub::{
    FakeFile, FakeHub, HubRequest, Misbehaviour, sha256_hex, tiny_gguf, tiny_safetensors,
};

/// A policy that refuses downloads from one host, naming it, and allows everything else.
pub struct DenyHost(pub &'static str);

impl Policy for DenyHost {
    fn check(&self, action: &Action) -> Result<()> {
        if let Action::Download { url, .. } = action
            && url.host().as_deref() == Some(self.0)
        {
            return Err(Error::PolicyDenied {
                action: format!(
                    "downloading {url}: host `{}` is not in the network allowlist",
                    self.0
                ),
                hint: Some(format!("add `{}` to the allowlist", self.0)),
            });
        }
        Ok(())
    }
}

pub struct Setup {
    pub hub: FakeHub,
    pub dir: tempfile::TempDir,
    pub progress: Arc<RecordingProgress>,
}

impl Setup {
    pub async fn new() -> Setup {
        Setup {
            hub: FakeHub::start().await,
            dir: tempfile::tempdir().unwrap(),
            progress: Arc::new(RecordingProgress::default()),
        }
    }

    pub fn hub_cache(&self) -> PathBuf {
        self.dir.path().join("hf/hub")
    }

    pub fn models_dir(&self) -> PathBuf {
        self.dir.path().join("models")
    }

    pub fn settings(&self) -> HfSettings {
        HfSettings::new(
            SafeUrl::parse(&self.hub.endpoint()).unwrap(),
            self.hub_cache(),
        )
    }

    pub fn with_token(&self, token: &str) -> HfSettings {
        let mut settings = self.settings();
        settings.token = Some(Secret::new(token));
        settings
    }

    pub fn offline(&self) -> HfSettings {
        let mut settings = self.settings();
        settings.offline = true;
        settings
    }

    pub fn models(&self, settings: HfSettings) -> Models {
        self.models_with_policy(settings, Arc::new(policy::HostPolicy::default()))
    }

    pub fn models_with_policy(&self, settings: HfSettings, policy: Arc<dyn Policy>) -> Models {
        let fetcher = HttpFetcher::new(
            self.progress.clone(),
            FetchSettings {
                stall_timeout: Duration::from_secs(1),
                connect_timeout: Duration::from_secs(5),
                ..FetchSettings::default()
            },
        )
        .with_policy(policy.clone());
        Models::new(Arc::new(fetcher), policy, self.progress.clone(), settings)
    }

    pub fn request(&self, reference: &str) -> ModelRequest {
        ModelRequest {
            reference: reference.parse().unwrap(),
            models_dir: self.models_dir(),
            checksum: None,
            include: Vec::new(),
            exclude: Vec::new(),
            refresh: false,
        }
    }

    pub fn catalog(&self) -> Catalog {
        Catalog::open(self.models_dir())
    }

    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.hub_cache()
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    /// Requests to one server (`hub` or `cdn`).
    pub fn requests_to(&self, server: &str) -> Vec<HubRequest> {
        self.hub
            .requests()
            .into_iter()
            .filter(|request| request.server == server)
            .collect()
    }
}

/// The error with its hint, for assertions.
pub fn described(error: &Error) -> String {
    format!("{error} / hint: {}", error.hint().unwrap_or(""))
}

/// Every file under `dir` (recursively, links included), relative, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(path);
            } else {
                out.push(
                    path.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A GGUF file of `len` bytes (valid header, noise after it).
pub fn gguf_of(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = tiny_gguf();
    bytes.extend(noise(len.saturating_sub(bytes.len()), seed));
    bytes
}
