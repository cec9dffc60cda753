//! # policy
//!
//! The real [`Policy`] port: decides, without I/O, whether an action with effects outside the
//! cache may go ahead. Pool-level switches (`allow_package_installs`, `allow_binary_downloads`)
//! travel with the action; host-level switches (offline mode, a network allowlist) live here.
//! Local sources (`file://` URLs, paths, loopback hosts) are never network access.

use provisioner_core::{Action, Error, Policy, Result};

/// Host-wide policy settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPolicy {
    /// No network access except to local sources.
    pub offline: bool,
    /// When set, only these hosts (exact names, or `*.suffix`) may be contacted.
    pub allowed_hosts: Option<Vec<String>>,
    /// Allow downloads that no checksum pins (default: refused).
    pub allow_unverified_downloads: bool,
    /// Allow plain `http://` downloads from remote hosts (loopback is always allowed).
    pub allow_plain_http: bool,
}

impl Policy for HostPolicy {
    fn check(&self, action: &Action) -> Result<()> {
        match action {
            Action::FetchSource { url } => self.check_network(url, "fetching source from"),
            Action::Download {
                url,
                pinned,
                allowed_by_config,
            } => {
                if *allowed_by_config == Some(false) {
                    return Err(denied(
                        format!("downloading {url}"),
                        "set provisioning.allow_binary_downloads: true in the pool's configuration",
                    ));
                }
                if !pinned && !self.allow_unverified_downloads {
                    return Err(denied(
                        format!("downloading {url} without a checksum"),
                        "pin it with provisioning.binary.checksum: sha256:<hex>",
                    ));
                }
                if url.to_ascii_lowercase().starts_with("http://")
                    && remote_host(url).is_some()
                    && !self.allow_plain_http
                {
                    return Err(denied(
                        format!("downloading {url} over plain HTTP"),
                        "use an https:// URL, or allow plain HTTP for a trusted mirror (LLAMA_ORCH_ALLOW_HTTP=1)",
                    ));
                }
                self.check_network(url, "downloading")
            }
            Action::InstallPackages {
                packages,
                repository,
                allowed_by_config,
            } => {
                if !*allowed_by_config {
                    return Err(denied(
                        format!("installing packages ({})", packages.join(", ")),
                        "set provisioning.allow_package_installs: true, or install them yourself",
                    ));
                }
                let verb = format!("installing packages ({}) from", packages.join(", "));
                match repository.as_deref().and_then(repository_url) {
                    Some(url) => self.check_network(url, &verb),
                    // The system's repositories (or a named one) are remote as far as we know.
                    None if self.offline => Err(denied(
                        format!(
                            "installing packages ({}) from the system's repositories (offline mode)",
                            packages.join(", ")
                        ),
                        "turn offline mode off, or point provisioning.package.repo at a local repository (`deb [trusted=yes] file:/path ./`, `file:///path/name.db`)",
                    )),
                    None => Ok(()),
                }
            }
        }
    }
}

impl HostPolicy {
    fn check_network(&self, url: &str, verb: &str) -> Result<()> {
        let Some(host) = remote_host(url) else {
            return Ok(());
        };
        if self.offline {
            return Err(denied(
                format!("{verb} {url} (offline mode)"),
                "turn offline mode off (unset LLAMA_ORCH_OFFLINE / drop --offline), or point the config at a local mirror (file://…)",
            ));
        }
        if let Some(allowed) = &self.allowed_hosts
            && !allowed.iter().any(|pattern| host_matches(pattern, &host))
        {
            return Err(denied(
                format!("{verb} {url}: host `{host}` is not in the network allowlist"),
                &format!("add `{host}` to the allowlist (LLAMA_ORCH_ALLOWED_HOSTS)"),
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

/// The URL inside a package repository setting: the repository itself when it is a URL, the URI
/// of a `deb [options] URI suite` line, or `None` for a repository name (`extra`, a release).
pub fn repository_url(repository: &str) -> Option<&str> {
    let repository = repository.trim();
    if let Some(line) = repository.strip_prefix("deb ") {
        let mut rest = line.trim_start();
        if rest.starts_with('[') {
            rest = rest
                .split_once(']')
                .map_or("", |(_, after)| after.trim_start());
        }
        return rest.split_whitespace().next();
    }
    (repository.contains("://") || repository.starts_with("file:")).then_some(repository)
}

/// The host a URL contacts, or `None` for local sources (paths, `file://`, loopback).
pub fn remote_host(url: &str) -> Option<String> {
    // apt spells local repositories `file:/path`.
    if url
        .get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("file:"))
    {
        return None;
    }
    let (scheme, rest) = match url.split_once("://") {
        Some(pair) => pair,
        // scp-like git syntax `user@host:path` is remote; a plain path is local.
        None => {
            let (before, _) = url.split_once(':')?;
            if before.contains('/') {
                return None;
            }
            return Some(before.rsplit('@').next().unwrap_or(before).to_lowercase());
        }
    };
    if scheme.eq_ignore_ascii_case("file") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(stripped) = host_port.strip_prefix('[') {
        stripped.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    }
    .to_lowercase();
    let loopback = host == "localhost" || host == "::1" || host.starts_with("127.");
    if loopback { None } else { Some(host) }
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

    #[test]
    fn local_sources_are_not_network() {
        for url in [
            "file:///srv/llama.cpp",
            "/srv/llama.cpp",
            "./repo",
            "http://127.0.0.1:5000/x",
            "https://localhost/x",
            "http://[::1]:80/x",
        ] {
            assert_eq!(remote_host(url), None, "{url}");
        }
        assert_eq!(
            remote_host("https://user:pw@GitHub.com:443/ggml-org/llama.cpp.git").as_deref(),
            Some("github.com")
        );
        assert_eq!(
            remote_host("git@github.com:ggml-org/llama.cpp.git").as_deref(),
            Some("github.com")
        );
    }

    #[test]
    fn offline_blocks_remote_fetches_only() {
        let policy = HostPolicy {
            offline: true,
            ..HostPolicy::default()
        };
        let remote = Action::FetchSource {
            url: "https://github.com/ggml-org/llama.cpp.git".into(),
        };
        assert!(hint_of(policy.check(&remote)).contains("LLAMA_ORCH_OFFLINE"));
        let local = Action::FetchSource {
            url: "file:///srv/llama.cpp".into(),
        };
        assert!(policy.check(&local).is_ok());
    }

    #[test]
    fn allowlist_names_the_host() {
        let policy = HostPolicy {
            allowed_hosts: Some(vec!["*.github.com".into(), "gitlab.com".into()]),
            ..HostPolicy::default()
        };
        let ok = Action::FetchSource {
            url: "https://codeload.github.com/x".into(),
        };
        assert!(policy.check(&ok).is_ok());
        let bad = Action::FetchSource {
            url: "https://evil.example/x".into(),
        };
        let error = policy.check(&bad).unwrap_err();
        assert!(error.to_string().contains("evil.example"), "{error}");
    }

    #[test]
    fn offline_package_installs_need_a_local_repository() {
        let policy = HostPolicy {
            offline: true,
            ..HostPolicy::default()
        };
        let install = |repository: Option<&str>| Action::InstallPackages {
            packages: vec!["llama.cpp-tools=1".into()],
            repository: repository.map(str::to_string),
            allowed_by_config: true,
        };
        assert!(
            policy
                .check(&install(Some("deb [trusted=yes] file:/srv/repo ./")))
                .is_ok()
        );
        assert!(
            policy
                .check(&install(Some("file:///srv/repo/local.db")))
                .is_ok()
        );
        assert!(
            policy
                .check(&install(Some("deb http://127.0.0.1:8080/debian ./")))
                .is_ok()
        );
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
        assert_eq!(
            repository_url("deb [arch=amd64 trusted=yes] https://a.example/x stable main"),
            Some("https://a.example/x")
        );
        assert_eq!(repository_url("extra"), None);
    }

    #[test]
    fn package_installs_need_the_config_switch() {
        let policy = HostPolicy::default();
        let action = |allowed| Action::InstallPackages {
            packages: vec!["cmake".into()],
            repository: None,
            allowed_by_config: allowed,
        };
        assert!(hint_of(policy.check(&action(false))).contains("allow_package_installs: true"));
        assert!(policy.check(&action(true)).is_ok());
    }

    #[test]
    fn downloads_need_a_checksum_and_the_switch() {
        let policy = HostPolicy::default();
        let download = |pinned, allowed| Action::Download {
            url: "https://example.org/llama.tar.gz".into(),
            pinned,
            allowed_by_config: allowed,
        };
        assert!(policy.check(&download(true, None)).is_ok());
        assert!(hint_of(policy.check(&download(false, None))).contains("checksum"));
        assert!(
            hint_of(policy.check(&download(true, Some(false))))
                .contains("allow_binary_downloads: true")
        );
    }

    #[test]
    fn plain_http_only_for_loopback_unless_allowed() {
        let download = |url: &str| Action::Download {
            url: url.to_string(),
            pinned: true,
            allowed_by_config: None,
        };
        let strict = HostPolicy::default();
        assert!(
            strict
                .check(&download("http://127.0.0.1:8000/llama.tar.gz"))
                .is_ok()
        );
        assert!(
            hint_of(strict.check(&download("http://mirror.example/llama.tar.gz")))
                .contains("LLAMA_ORCH_ALLOW_HTTP")
        );
        let relaxed = HostPolicy {
            allow_plain_http: true,
            ..HostPolicy::default()
        };
        assert!(
            relaxed
                .check(&download("http://mirror.example/llama.tar.gz"))
                .is_ok()
        );
    }

    #[test]
    fn offline_blocks_remote_downloads() {
        let policy = HostPolicy {
            offline: true,
            ..HostPolicy::default()
        };
        let action = Action::Download {
            url: "https://example.org/llama.zip".into(),
            pinned: true,
            allowed_by_config: Some(true),
        };
        assert!(hint_of(policy.check(&action)).contains("offline"));
    }
}
