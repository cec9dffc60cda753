//! [`HfSettings`]: what the Hugging Face client reads from the environment, read once by the
//! composition root through a lookup function (tests pass a map, never the process environment).
//!
//! Every variable and its order of precedence are those of the Python client
//! (`huggingface_hub/constants.py` and `huggingface_hub/utils/_auth.py`, documented at
//! <https://huggingface.co/docs/huggingface_hub/package_reference/environment_variables>), so
//! that both use the same cache, endpoint and token. An empty variable counts as unset.

use std::path::{Path, PathBuf};

use provisioner_core::{Action, Error, Policy, Result, SafeUrl, Secret};

/// The hub's public endpoint, used when `HF_ENDPOINT` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Domains of the public hub's own storage: `resolve` answers for large files redirect to hosts
/// under them (`cdn-lfs.hf.co`, `cdn-lfs-us-1.hf.co`, `cas-bridge.xethub.hf.co`, …). With the
/// default endpoint, a redirect to any host under these counts as the hub for the network
/// allowlist ([`HubPolicy`]); with a mirror (`HF_ENDPOINT`), every redirect target is checked
/// as itself.
pub const HUB_STORAGE_DOMAINS: [&str; 2] = ["hf.co", "huggingface.co"];

/// The Hugging Face settings of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfSettings {
    /// `HF_ENDPOINT` (a mirror), else [`DEFAULT_ENDPOINT`]; without a trailing `/`.
    pub endpoint: SafeUrl,
    /// The token sent as `Authorization: Bearer` to the endpoint's origin (never to a redirect
    /// target on another host): `HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`, else the first line
    /// of the token file (`HF_TOKEN_PATH`, else `$HF_HOME/token`), surrounding whitespace
    /// removed. `None` when none is set or the file is missing or unreadable.
    pub token: Option<Secret>,
    /// The hub cache (`…/hub`, holding `models--org--repo`): `HF_HUB_CACHE`, else
    /// `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`. `None` when neither these nor a home
    /// directory say where.
    pub hub_cache: Option<PathBuf>,
    /// `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is `1`, `ON`, `YES` or `TRUE` (any case):
    /// no network at all, staged models only.
    pub offline: bool,
}

impl HfSettings {
    /// Reads the settings through `var` (a variable's value, `None` when unset) and `home`
    /// (the user's home directory). `HF_HOME` is `$HF_HOME`, else
    /// `$XDG_CACHE_HOME/huggingface`, else `<home>/.cache/huggingface`; a leading `~/` in a
    /// path variable is expanded against `home`. Reads the token file when no token variable
    /// is set.
    ///
    /// Errors: `HF_ENDPOINT` that is not an `http(s)://` URL ([`Error::ConfigInvalid`], exit 3).
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>, home: Option<&Path>) -> Result<Self> {
        let get = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let path = |name: &str| get(name).map(|value| expand_home(&value, home));

        let endpoint_text = get("HF_ENDPOINT")
            .map(|value| value.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let endpoint = SafeUrl::parse(&endpoint_text)
            .ok()
            .filter(|url| matches!(url.scheme().as_str(), "https" | "http") && url.host().is_some())
            .ok_or_else(|| {
                Error::invalid(
                    "HF_ENDPOINT",
                    "is not an http(s):// URL; unset it for the public hub or name a mirror such as https://hf-mirror.example",
                )
            })?;

        let hf_home = path("HF_HOME").or_else(|| {
            path("XDG_CACHE_HOME")
                .or_else(|| home.map(|home| home.join(".cache")))
                .map(|cache| cache.join("huggingface"))
        });
        let hub_cache = path("HF_HUB_CACHE")
            .or_else(|| path("HUGGINGFACE_HUB_CACHE"))
            .or_else(|| hf_home.as_ref().map(|dir| dir.join("hub")));

        let token = get("HF_TOKEN")
            .or_else(|| get("HUGGING_FACE_HUB_TOKEN"))
            .map(|token| token.trim().to_string())
            .or_else(|| {
                let file = path("HF_TOKEN_PATH")
                    .or_else(|| hf_home.as_ref().map(|dir| dir.join("token")))?;
                let text =
                    adapters_host::read_capped(&file, adapters_host::read::MAX_SMALL).ok()?;
                text.lines().next().map(|line| line.trim().to_string())
            })
            .filter(|token| !token.is_empty())
            .map(Secret::new);

        let truthy = |name: &str| {
            get(name).is_some_and(|value| {
                matches!(
                    value.trim().to_ascii_uppercase().as_str(),
                    "1" | "ON" | "YES" | "TRUE"
                )
            })
        };
        Ok(HfSettings {
            endpoint,
            token,
            hub_cache,
            offline: truthy("HF_HUB_OFFLINE") || truthy("TRANSFORMERS_OFFLINE"),
        })
    }

    /// Settings for a given endpoint and hub cache, with no token and online (tests, embedders).
    pub fn new(endpoint: SafeUrl, hub_cache: impl Into<PathBuf>) -> Self {
        HfSettings {
            endpoint,
            token: None,
            hub_cache: Some(hub_cache.into()),
            offline: false,
        }
    }

    /// Whether the endpoint is the public hub (`https://huggingface.co`), whose storage hosts
    /// count as part of it ([`HUB_STORAGE_DOMAINS`]).
    pub fn is_default_endpoint(&self) -> bool {
        self.endpoint
            .expose()
            .eq_ignore_ascii_case(DEFAULT_ENDPOINT)
    }
}

fn expand_home(value: &str, home: Option<&Path>) -> PathBuf {
    match (value.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ if value == "~" => home.map_or_else(|| PathBuf::from(value), Path::to_path_buf),
        _ => PathBuf::from(value),
    }
}

/// Whether `host` is one of the public hub's storage hosts ([`HUB_STORAGE_DOMAINS`]).
pub fn is_hub_storage_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    HUB_STORAGE_DOMAINS
        .iter()
        .any(|domain| host == *domain || host.ends_with(&format!(".{domain}")))
}

/// A [`Policy`] that treats the public hub's storage hosts as the hub itself: a download from a
/// host under [`HUB_STORAGE_DOMAINS`] is allowed exactly when the same download from the
/// endpoint's host would be, so an allowlist naming `huggingface.co` lets the hub's redirects to
/// `cdn-lfs.hf.co` or `cas-bridge.xethub.hf.co` through. Only with the default endpoint: with a
/// mirror, and for every other action, the inner policy decides alone. Give it to the
/// [`HttpFetcher`](adapters_binary::HttpFetcher) (`with_policy`) that serves the models, since
/// the fetcher checks each redirect target.
pub struct HubPolicy {
    inner: std::sync::Arc<dyn Policy>,
    endpoint: Option<SafeUrl>,
}

impl HubPolicy {
    /// Wraps `inner` for the endpoint of `settings`.
    pub fn new(inner: std::sync::Arc<dyn Policy>, settings: &HfSettings) -> Self {
        HubPolicy {
            inner,
            endpoint: settings
                .is_default_endpoint()
                .then(|| settings.endpoint.clone()),
        }
    }
}

impl std::fmt::Debug for HubPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubPolicy")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Policy for HubPolicy {
    fn check(&self, action: &Action) -> Result<()> {
        if let (
            Some(endpoint),
            Action::Download {
                url,
                allowed_by_config,
            },
        ) = (&self.endpoint, action)
            && url.scheme() == "https"
            && url.host().is_some_and(|host| is_hub_storage_host(&host))
        {
            return self
                .inner
                .check(&Action::Download {
                    url: endpoint.clone(),
                    allowed_by_config: *allowed_by_config,
                })
                .map_err(|error| match error {
                    // The endpoint itself needs no word on storage hosts; a storage host
                    // (a redirect target) is named as what it is.
                    Error::PolicyDenied { action, hint } if url.host() != endpoint.host() => {
                        Error::PolicyDenied {
                            action: format!(
                                "{action}, which includes its storage host `{}` ({url})",
                                url.host().unwrap_or_default()
                            ),
                            hint,
                        }
                    }
                    other => other,
                });
        }
        self.inner.check(action)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)], home: Option<&Path>) -> HfSettings {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HfSettings::from_env(&|name| map.get(name).cloned(), home).unwrap()
    }

    #[test]
    fn defaults_follow_the_python_client() {
        let home = Path::new("/home/u");
        let s = settings(&[], Some(home));
        assert_eq!(s.endpoint.expose(), "https://huggingface.co");
        assert!(s.is_default_endpoint());
        assert_eq!(
            s.hub_cache.as_deref(),
            Some(Path::new("/home/u/.cache/huggingface/hub"))
        );
        assert!(!s.offline);
        assert!(s.token.is_none());

        let s = settings(&[("XDG_CACHE_HOME", "/x")], Some(home));
        assert_eq!(
            s.hub_cache.as_deref(),
            Some(Path::new("/x/huggingface/hub"))
        );
        let s = settings(&[("XDG_CACHE_HOME", "/x"), ("HF_HOME", "~/hf")], Some(home));
        assert_eq!(s.hub_cache.as_deref(), Some(Path::new("/home/u/hf/hub")));
        let s = settings(
            &[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/cache")],
            Some(home),
        );
        assert_eq!(s.hub_cache.as_deref(), Some(Path::new("/cache")));
        let s = settings(&[("HF_HOME", "")], None);
        assert_eq!(s.hub_cache, None);
    }

    #[test]
    fn endpoint_offline_and_tokens() {
        let s = settings(
            &[
                ("HF_ENDPOINT", "http://127.0.0.1:9/"),
                ("HF_HUB_OFFLINE", "yes"),
                ("HF_TOKEN", " hf_abc \n"),
            ],
            None,
        );
        assert_eq!(s.endpoint.expose(), "http://127.0.0.1:9");
        assert!(!s.is_default_endpoint());
        assert!(s.offline);
        assert_eq!(s.token.as_ref().map(Secret::expose), Some("hf_abc"));
        assert!(!format!("{s:?}").contains("hf_abc"));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_from_file\n").unwrap();
        let home = dir.path().to_string_lossy().to_string();
        let s = settings(&[("HF_HOME", &home), ("HF_HUB_OFFLINE", "0")], None);
        assert_eq!(s.token.as_ref().map(Secret::expose), Some("hf_from_file"));
        assert!(!s.offline);
        let other = dir.path().join("other");
        std::fs::write(&other, "hf_other").unwrap();
        let s = settings(
            &[
                ("HF_HOME", &home),
                ("HF_TOKEN_PATH", &other.to_string_lossy()),
            ],
            None,
        );
        assert_eq!(s.token.as_ref().map(Secret::expose), Some("hf_other"));

        let error = HfSettings::from_env(
            &|name| (name == "HF_ENDPOINT").then(|| "ftp://x".into()),
            None,
        )
        .unwrap_err();
        assert!(error.to_string().contains("HF_ENDPOINT"), "{error}");
    }

    #[test]
    fn storage_hosts_count_as_the_hub_with_the_default_endpoint_only() {
        let allowlist = std::sync::Arc::new(policy::HostPolicy {
            allowed_hosts: Some(vec!["huggingface.co".to_string()]),
            ..policy::HostPolicy::default()
        });
        let download = |url: &str| Action::Download {
            url: url.parse().unwrap(),
            allowed_by_config: None,
        };
        let hub = HubPolicy::new(allowlist.clone(), &settings(&[], None));
        for url in [
            "https://huggingface.co/org/repo/resolve/main/x.gguf",
            "https://cdn-lfs.hf.co/repos/aa/bb/cc?X-Amz-Signature=1",
            "https://cas-bridge.xethub.hf.co/xet-bridge-us/abc",
        ] {
            hub.check(&download(url)).unwrap();
        }
        let error = hub.check(&download("https://evil.example/x")).unwrap_err();
        assert!(error.to_string().contains("evil.example"), "{error}");
        // Plain http to a storage host is not the hub.
        assert!(hub.check(&download("http://cdn-lfs.hf.co/x")).is_err());

        let mirror = HubPolicy::new(
            allowlist,
            &settings(&[("HF_ENDPOINT", "https://mirror.example")], None),
        );
        let error = mirror
            .check(&download("https://cdn-lfs.hf.co/repos/x"))
            .unwrap_err();
        assert!(error.to_string().contains("cdn-lfs.hf.co"), "{error}");

        let offline = std::sync::Arc::new(policy::HostPolicy {
            offline: true,
            ..policy::HostPolicy::default()
        });
        let hub = HubPolicy::new(offline, &settings(&[], None));
        let error = hub.check(&download("https://cdn-lfs.hf.co/x")).unwrap_err();
        assert!(error.to_string().contains("cdn-lfs.hf.co"), "{error}");
    }
}
