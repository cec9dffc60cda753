//! # policy
//!
//! The real [`Policy`] port: decides, without I/O, whether an action with effects outside the
//! cache may go ahead. Pool-level switches (`allow_package_installs`, `allow_binary_downloads`)
//! travel with the action; host-level switches (offline mode, a network allowlist) live here.
//! Local sources (`file://` URLs, paths, loopback hosts) are never network access.

use provisioner_core::{Action, Error, ImageReference, Policy, Result, SafeUrl};

/// Host-wide policy settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPolicy {
    /// No network access except to local sources.
    pub offline: bool,
    /// When set, only these hosts (exact names, or `*.suffix`) may be contacted.
    pub allowed_hosts: Option<Vec<String>>,
    /// Allow plain `http://` downloads from remote hosts (loopback is always allowed).
    pub allow_plain_http: bool,
}

impl Policy for HostPolicy {
    fn check(&self, action: &Action) -> Result<()> {
        match action {
            Action::FetchSource { remote } => self.check_network(
                remote.remote_host(),
                &format!("fetching source from {remote}"),
            ),
            Action::Download {
                url,
                allowed_by_config,
            } => {
                if *allowed_by_config == Some(false) {
                    return Err(denied(
                        format!("downloading {url}"),
                        "set provisioning.allow_binary_downloads: true in the pool's configuration",
                    ));
                }
                if url.scheme() == "http" && !url.is_local() && !self.allow_plain_http {
                    return Err(denied(
                        format!("downloading {url} over plain HTTP"),
                        "use an https:// URL, or allow plain HTTP for a trusted mirror (LLAMA_ORCH_ALLOW_HTTP=1)",
                    ));
                }
                self.check_url(url, "downloading")
            }
            Action::PullImage { image, .. } => self.check_network(
                registry_host(image),
                &format!("pulling {image} from its registry"),
            ),
            Action::InstallPackages {
                packages,
                repository,
                allowed_by_config,
            } => {
                let names: Vec<&str> = packages.iter().map(|p| p.as_str()).collect();
                if !*allowed_by_config {
                    return Err(denied(
                        format!("installing packages ({})", names.join(", ")),
                        "set provisioning.allow_package_installs: true, or install them yourself",
                    ));
                }
                let verb = format!("installing packages ({}) from", names.join(", "));
                match repository.as_ref().and_then(|r| r.url()) {
                    Some(url) => self.check_url(url, &verb),
                    // The system's repositories (or a named one) are remote as far as we know.
                    None if self.offline => Err(denied(
                        format!(
                            "installing packages ({}) from the system's repositories (offline mode)",
                            names.join(", ")
                        ),
                        "turn offline mode off, or point provisioning.package.repo at a local repository (`deb [trusted=yes] file:/path ./`, `file:///path/name.db`)",
                    )),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The registry host an image is pulled from, or `None` for a loopback registry or podman's
/// `localhost/` images.
pub fn registry_host(image: &ImageReference) -> Option<String> {
    let registry = image.registry();
    let host = match registry.strip_prefix('[') {
        Some(inner) => inner.split(']').next().unwrap_or(""),
        None => registry.split(':').next().unwrap_or(""),
    }
    .to_ascii_lowercase();
    let loopback = host == "localhost" || host == "::1" || host.starts_with("127.");
    (!loopback).then_some(host)
}

impl HostPolicy {
    fn check_url(&self, url: &SafeUrl, verb: &str) -> Result<()> {
        let host = (!url.is_local()).then(|| url.host()).flatten();
        self.check_network(host, &format!("{verb} {url}"))
    }

    fn check_network(&self, host: Option<String>, what: &str) -> Result<()> {
        let Some(host) = host else {
            return Ok(());
        };
        if self.offline {
            return Err(denied(
                format!("{what} (offline mode)"),
                "turn offline mode off (unset LLAMA_ORCH_OFFLINE / drop --offline), or use a local mirror: a file:// URL, or for hf: models HF_ENDPOINT on loopback",
            ));
        }
        if let Some(allowed) = &self.allowed_hosts
            && !allowed.iter().any(|pattern| host_matches(pattern, &host))
        {
            return Err(denied(
                format!("{what}: host `{host}` is not in the network allowlist"),
                &format!(
                    "add `{host}` to the allowlist (--allowed-hosts, or LLAMA_ORCH_ALLOWED_HOSTS when the flag is not given)"
                ),
            ));
        }
        Ok(())
    }
}

fn denied(action: String, hint: &str) -> Error {
    Error::PolicyDenied {
        action,
        hint: Some(hint.to_string()),
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.ends_with(&format!(".{suffix}")),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint_of(result: Result<()>) -> String {
        let error = result.expect_err("expected a denial");
        error.hint().unwrap_or_default().to_string()
    }

    fn fetch(remote: &str) -> Action {
        Action::FetchSource {
            remote: remote.parse().unwrap(),
        }
    }

    #[test]
    fn offline_blocks_remote_fetches_only() {
        let policy = HostPolicy {
            offline: true,
            ..HostPolicy::default()
        };
        assert!(
            hint_of(policy.check(&fetch("https://github.com/ggml-org/llama.cpp.git")))
                .contains("LLAMA_ORCH_OFFLINE")
        );
        assert!(
            hint_of(policy.check(&fetch("git@github.com:ggml-org/llama.cpp.git")))
                .contains("offline")
        );
        for local in [
            "file:///srv/llama.cpp",
            "/srv/llama.cpp",
            "./repo",
            "http://127.0.0.1:5000/x",
        ] {
            assert!(policy.check(&fetch(local)).is_ok(), "{local}");
        }
    }

    #[test]
    fn allowlist_names_the_host_and_never_credentials() {
        let policy = HostPolicy {
            allowed_hosts: Some(vec!["*.github.com".into(), "gitlab.com".into()]),
            ..HostPolicy::default()
        };
        assert!(
            policy
                .check(&fetch("https://codeload.github.com/x"))
                .is_ok()
        );
        let error = policy
            .check(&fetch("https://user:tok3n@evil.example/x"))
            .unwrap_err();
        assert!(error.to_string().contains("evil.example"), "{error}");
        assert!(!error.to_string().contains("tok3n"), "{error}");
    }

    #[test]
    fn image_pulls_are_checked_against_their_registry() {
        let policy = HostPolicy {
            offline: true,
            ..HostPolicy::default()
        };
        let pull = |image: &str| Action::PullImage {
            image: image.parse().unwrap(),
            insecure: false,
        };
        let error = policy.check(&pull("vllm/vllm-openai:v0.12.0")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("pulling docker.io/vllm/vllm-openai"),
            "{error}"
        );
        assert!(
            policy
                .check(&pull("127.0.0.1:5000/llama/server:b0"))
                .is_ok()
        );
        assert!(policy.check(&pull("localhost/llama/server:b0")).is_ok());
    }

    #[test]
    fn offline_package_installs_need_a_local_repository() {
        let policy = HostPolicy {
            offline: true,
            ..HostPolicy::default()
        };
        let install = |repository: Option<&str>| Action::InstallPackages {
            packages: vec!["llama.cpp-tools".parse().unwrap()],
            repository: repository.map(|r| r.parse().unwrap()),
            allowed_by_config: true,
        };
        for local in [
            "deb [trusted=yes] file:/srv/repo ./",
            "file:///srv/repo/local.db",
            "deb http://127.0.0.1:8080/debian ./",
        ] {
            assert!(policy.check(&install(Some(local))).is_ok(), "{local}");
        }
        for remote in [
            None,
            Some("bookworm-backports"),
            Some("deb https://deb.example.org/debian bookworm main"),
        ] {
            let error = policy.check(&install(remote)).unwrap_err();
            assert!(error.to_string().contains("offline mode"), "{error}");
        }
        let online = HostPolicy {
            allowed_hosts: Some(vec!["deb.debian.org".into()]),
            ..HostPolicy::default()
        };
        let error = online
            .check(&install(Some("deb https://evil.example/debian ./")))
            .unwrap_err();
        assert!(error.to_string().contains("evil.example"), "{error}");
    }

    #[test]
    fn package_installs_need_the_config_switch() {
        let policy = HostPolicy::default();
        let action = |allowed| Action::InstallPackages {
            packages: vec!["cmake".parse().unwrap()],
            repository: None,
            allowed_by_config: allowed,
        };
        assert!(hint_of(policy.check(&action(false))).contains("allow_package_installs: true"));
        assert!(policy.check(&action(true)).is_ok());
    }

    fn download(url: &str, allowed: Option<bool>) -> Action {
        Action::Download {
            url: url.parse().unwrap(),
            allowed_by_config: allowed,
        }
    }

    #[test]
    fn downloads_follow_llama_orchs_switch() {
        let policy = HostPolicy::default();
        let url = "https://example.org/llama.tar.gz";
        assert!(policy.check(&download(url, None)).is_ok());
        assert!(policy.check(&download(url, Some(true))).is_ok());
        assert!(
            hint_of(policy.check(&download(url, Some(false))))
                .contains("allow_binary_downloads: true")
        );
    }

    #[test]
    fn plain_http_only_for_loopback_unless_allowed() {
        let strict = HostPolicy::default();
        assert!(
            strict
                .check(&download("http://127.0.0.1:8000/llama.tar.gz", None))
                .is_ok()
        );
        assert!(
            hint_of(strict.check(&download("http://mirror.example/llama.tar.gz", None)))
                .contains("LLAMA_ORCH_ALLOW_HTTP")
        );
        let relaxed = HostPolicy {
            allow_plain_http: true,
            ..HostPolicy::default()
        };
        assert!(
            relaxed
                .check(&download("http://mirror.example/llama.tar.gz", None))
                .is_ok()
        );
    }

    #[test]
    fn offline_blocks_remote_downloads_without_showing_secrets() {
        let policy = HostPolicy {
            offline: true,
            ..HostPolicy::default()
        };
        let error = policy
            .check(&download(
                "https://u:pw-secret@example.org/llama.zip?token=q-secret",
                Some(true),
            ))
            .unwrap_err();
        assert!(error.hint().unwrap_or_default().contains("offline"));
        let text = error.to_string();
        assert!(
            !text.contains("pw-secret") && !text.contains("q-secret"),
            "{text}"
        );
    }
}
