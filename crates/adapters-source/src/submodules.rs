//! Submodules as the policy sees them: the URLs a `.gitmodules` file names (relative ones
//! resolved against the superproject's remote, as git does), so that each is checked against
//! `--offline` and the host allowlist before git contacts it.

use provisioner_core::GitRemote;

/// One submodule: its path in the superproject and the URL git will fetch it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submodule {
    /// Path relative to the superproject's root.
    pub path: String,
    /// The URL as written in `.gitmodules`.
    pub url: String,
}

/// Parses `git config -f .gitmodules --get-regexp '^submodule\..*\.(path|url)$'` output
/// (`submodule.<name>.<key> <value>` lines) into submodules that have both a path and a URL.
pub fn parse(config: &str) -> Vec<Submodule> {
    let mut entries: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    for line in config.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let Some(rest) = key.strip_prefix("submodule.") else {
            continue;
        };
        let (name, field) = match rest.rsplit_once('.') {
            Some(split) => split,
            None => continue,
        };
        let index = match entries.iter().position(|(n, _, _)| n == name) {
            Some(index) => index,
            None => {
                entries.push((name.to_string(), None, None));
                entries.len() - 1
            }
        };
        match field {
            "path" => entries[index].1 = Some(value.to_string()),
            "url" => entries[index].2 = Some(value.to_string()),
            _ => {}
        }
    }
    entries
        .into_iter()
        .filter_map(|(_, path, url)| {
            Some(Submodule {
                path: path?,
                url: url?,
            })
        })
        .collect()
}

/// The remote a submodule URL names: relative URLs (`../lib.git`, `./lib`) are resolved
/// against the superproject's remote the way `git submodule` does (each `../` drops one path
/// component of the superproject's URL).
pub fn resolve(superproject: &str, url: &str) -> Result<GitRemote, String> {
    if !(url.starts_with("../") || url.starts_with("./")) {
        return url.parse();
    }
    let mut base = superproject.trim_end_matches('/').to_string();
    let mut rest = url;
    loop {
        if let Some(next) = rest.strip_prefix("./") {
            rest = next;
        } else if let Some(next) = rest.strip_prefix("../") {
            match base.rfind(['/', ':']) {
                Some(cut) if cut > 0 => base.truncate(cut),
                _ => return Err(format!("`{url}` climbs above `{superproject}`")),
            }
            rest = next;
        } else {
            break;
        }
    }
    format!("{base}/{rest}").parse()
}

/// A remote for messages: URLs without credentials.
pub fn shown(remote: &str) -> String {
    remote
        .parse::<GitRemote>()
        .map_or_else(|_| remote.to_string(), |remote| remote.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_urls_by_submodule() {
        let found = parse(
            "submodule.ggml.path ggml\nsubmodule.ggml.url https://github.com/ggml-org/ggml.git\nsubmodule.kompute.url ../kompute.git\nsubmodule.kompute.path ggml/src/kompute\nsubmodule.orphan.path x\n",
        );
        assert_eq!(
            found,
            [
                Submodule {
                    path: "ggml".into(),
                    url: "https://github.com/ggml-org/ggml.git".into()
                },
                Submodule {
                    path: "ggml/src/kompute".into(),
                    url: "../kompute.git".into()
                }
            ]
        );
    }

    #[test]
    fn relative_urls_resolve_against_the_superproject() {
        let resolved = |base: &str, url: &str| resolve(base, url).unwrap().expose().to_string();
        assert_eq!(
            resolved(
                "https://github.com/ggml-org/llama.cpp.git",
                "../kompute.git"
            ),
            "https://github.com/ggml-org/kompute.git"
        );
        assert_eq!(
            resolved("file:///srv/mirror/llama.cpp", "./vendor/lib"),
            "file:///srv/mirror/llama.cpp/vendor/lib"
        );
        assert_eq!(
            resolved("git@github.com:org/repo.git", "../other.git"),
            "git@github.com:org/other.git"
        );
        assert_eq!(
            resolved("file:///a/b", "https://example.org/x.git"),
            "https://example.org/x.git"
        );
    }
}
