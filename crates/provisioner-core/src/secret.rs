//! Secrets and URLs that are safe to display.
//!
//! A [`Secret`] renders, prints and serialises as `<redacted>`; its value is reachable only
//! through [`Secret::expose`], a call that is easy to find in review. A [`SafeUrl`] displays
//! and serialises with its user-info, every query value and its fragment replaced by
//! `<redacted>` (modelled on uv's `DisplaySafeUrl`); tools get the exact text through
//! [`SafeUrl::expose`]. [`GitRemote`] and [`PackageRepo`] are the config's repository values,
//! built on [`SafeUrl`] wherever they hold a URL.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What every redacted part reads as.
pub const REDACTED: &str = "<redacted>";

/// A value that must never be shown: API keys, tokens, passwords, every value of a pool's `env`.
#[derive(Clone, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that hands it to a file or a process.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    /// A string, or a number or boolean taken as its text (`OMP_NUM_THREADS: 4`). Anything else
    /// is refused without echoing the value.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Secret;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Secret, E> {
                Ok(Secret(value.to_string()))
            }

            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Secret, E> {
                Ok(Secret(value.to_string()))
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Secret, E> {
                Ok(Secret(value.to_string()))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Secret, E> {
                Ok(Secret(value.to_string()))
            }

            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Secret, E> {
                Ok(Secret(value.to_string()))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// The keys of a list of API keys as llama.cpp reads one (`parse_csv_row` in common/arg.cpp,
/// used for `--api-key` and `LLAMA_API_KEY`): split at commas, a field that starts with `"`
/// quoted, `""` inside quotes a quote. Empty fields are kept (the server drops them).
pub fn csv_fields(text: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if !in_quotes && field.is_empty() => in_quotes = true,
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' if in_quotes => in_quotes = false,
            ',' if !in_quotes => fields.push(std::mem::take(&mut field)),
            other => field.push(other),
        }
    }
    fields.push(field);
    fields
}

/// Fields as one CSV row that [`csv_fields`] reads back: joined with commas, a field holding
/// `,` or `"` (or starting with `"`) quoted.
pub fn csv_join(fields: &[String]) -> String {
    fields
        .iter()
        .map(|field| {
            if field.contains([',', '"']) {
                format!("\"{}\"", field.replace('"', "\"\""))
            } else {
                field.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A URL whose display hides credentials: `scheme://<redacted>@host/path?key=<redacted>`.
///
/// Parsed without normalisation (tools receive exactly what was configured) following RFC 3986's
/// split into scheme, authority, path, query and fragment; `file:/path` (apt's spelling) has no
/// authority.
#[derive(Clone, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(transparent)]
pub struct SafeUrl {
    raw: String,
    #[schemars(skip)]
    parts: Parts,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct Parts {
    scheme_end: usize,
    /// `(start, end)` of the authority when the URL has `//`.
    authority: Option<(usize, usize)>,
    path_end: usize,
    query_end: usize,
}

impl SafeUrl {
    /// Parses a URL; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<SafeUrl, String> {
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("is not a URL: it holds spaces or control characters".to_string());
        }
        let scheme_end = text
            .find(':')
            .ok_or_else(|| "is not a URL: it has no scheme (https://, file://, …)".to_string())?;
        let scheme = &text[..scheme_end];
        let scheme_ok = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'));
        if !scheme_ok {
            return Err(
                "is not a URL: the text before the first `:` is not a scheme (https, file, …)"
                    .to_string(),
            );
        }
        let rest_start = scheme_end + 1;
        let (authority, path_start) = match text[rest_start..].strip_prefix("//") {
            Some(after) => {
                let start = rest_start + 2;
                let end = start + after.find(['/', '?', '#']).unwrap_or(after.len());
                (Some((start, end)), end)
            }
            None => (None, rest_start),
        };
        let path_end = path_start
            + text[path_start..]
                .find(['?', '#'])
                .unwrap_or(text.len() - path_start);
        let query_end = path_end + text[path_end..].find('#').unwrap_or(text.len() - path_end);
        let url = SafeUrl {
            raw: text.to_string(),
            parts: Parts {
                scheme_end,
                authority,
                path_end,
                query_end,
            },
        };
        if url.parts.authority.is_some() && url.host().is_none() && url.scheme() != "file" {
            return Err(format!(
                "`{}` is not a URL: it names no host",
                url.redacted()
            ));
        }
        Ok(url)
    }

    /// The exact configured text, credentials included: only for the tool that fetches it.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The scheme, lower-cased.
    pub fn scheme(&self) -> String {
        self.raw[..self.parts.scheme_end].to_ascii_lowercase()
    }

    fn authority(&self) -> Option<&str> {
        self.parts
            .authority
            .map(|(start, end)| &self.raw[start..end])
    }

    fn user_info(&self) -> Option<&str> {
        let authority = self.authority()?;
        authority.rfind('@').map(|at| &authority[..at])
    }

    fn host_port(&self) -> Option<&str> {
        let authority = self.authority()?;
        Some(match authority.rfind('@') {
            Some(at) => &authority[at + 1..],
            None => authority,
        })
    }

    /// Whether user-info (`user:password@`) is present.
    pub fn has_credentials(&self) -> bool {
        self.user_info().is_some()
    }

    /// The host, lower-cased, without brackets around IPv6 literals; `None` without one.
    pub fn host(&self) -> Option<String> {
        let host_port = self.host_port()?;
        let host = match host_port.strip_prefix('[') {
            Some(inner) => inner.split(']').next().unwrap_or(""),
            None => host_port.split(':').next().unwrap_or(""),
        };
        (!host.is_empty()).then(|| host.to_ascii_lowercase())
    }

    /// The explicit port, when one is written.
    pub fn port(&self) -> Option<u16> {
        let host_port = self.host_port()?;
        let after_host = match host_port.strip_prefix('[') {
            Some(inner) => inner.split_once(']').map(|(_, rest)| rest).unwrap_or(""),
            None => host_port.split_once(':').map_or("", |(_, rest)| rest),
        };
        after_host.trim_start_matches(':').parse().ok()
    }

    /// Whether the host is this machine's loopback (`localhost`, `127.0.0.0/8`, `::1`).
    pub fn is_loopback(&self) -> bool {
        self.host()
            .is_some_and(|host| host == "localhost" || host == "::1" || host.starts_with("127."))
    }

    /// Whether fetching it stays on this host: a `file:` URL or a loopback host.
    pub fn is_local(&self) -> bool {
        self.scheme() == "file" || self.is_loopback()
    }

    /// The path, as written.
    pub fn path(&self) -> &str {
        let start = self
            .parts
            .authority
            .map_or(self.parts.scheme_end + 1, |(_, end)| end);
        &self.raw[start..self.parts.path_end]
    }

    /// The URL of the directory holding the last path segment (query and fragment dropped):
    /// `https://h/a/b.db` → `https://h/a`.
    pub fn parent(&self) -> Option<SafeUrl> {
        let path_start = self.parts.path_end - self.path().len();
        let last_slash = self.path().rfind('/')?;
        SafeUrl::parse(&self.raw[..path_start + last_slash]).ok()
    }

    /// The last segment of the path (`llama-b6000-bin-ubuntu-x64.zip`), when there is one.
    pub fn file_name(&self) -> Option<&str> {
        self.path()
            .rsplit('/')
            .next()
            .filter(|name| !name.is_empty())
    }

    /// The display form with credentials, query values and fragment replaced by `<redacted>`.
    pub fn redacted(&self) -> String {
        let mut text = String::new();
        text.push_str(&self.raw[..=self.parts.scheme_end]);
        if self.parts.authority.is_some() {
            text.push_str("//");
            if self.user_info().is_some() {
                text.push_str(REDACTED);
                text.push('@');
            }
            text.push_str(self.host_port().unwrap_or(""));
        }
        text.push_str(self.path());
        let query = &self.raw[self.parts.path_end..self.parts.query_end];
        if let Some(query) = query.strip_prefix('?') {
            text.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) => format!("{key}={REDACTED}"),
                    None if pair.is_empty() => String::new(),
                    None => REDACTED.to_string(),
                })
                .collect();
            text.push_str(&pairs.join("&"));
        }
        if self.parts.query_end < self.raw.len() {
            text.push('#');
            text.push_str(REDACTED);
        }
        text
    }
}

/// A text for humans (a command line, a hint) with every URL in it redacted as [`SafeUrl`]
/// does, also where a word only ends in one (`--repofrompath=id,https://u:p@host/x`).
pub fn redact_urls(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    text.split(' ')
        .map(|word| {
            let Some(separator) = word.find("://") else {
                return word.to_string();
            };
            let start = word[..separator]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')))
                .map_or(0, |at| at + 1);
            match SafeUrl::parse(&word[start..]) {
                Ok(url) => format!("{}{}", &word[..start], url.redacted()),
                Err(_) => format!("{}{REDACTED}", &word[..start]),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafeUrl({})", self.redacted())
    }
}

impl FromStr for SafeUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        SafeUrl::parse(text)
    }
}

/// A git repository as `source.repo` names it: a URL (`https://`, `ssh://`, `git://`,
/// `file://`), scp-like syntax (`git@github.com:org/repo.git`), or a local path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(with = "String")]
pub enum GitRemote {
    /// A URL.
    Url(SafeUrl),
    /// `[user@]host:path`, which git reads as ssh.
    Scp {
        /// The whole text, as git gets it.
        raw: String,
        /// The host, lower-cased.
        host: String,
    },
    /// A path on this host.
    Path(String),
}

impl GitRemote {
    /// The exact text git receives.
    pub fn expose(&self) -> &str {
        match self {
            GitRemote::Url(url) => url.expose(),
            GitRemote::Scp { raw, .. } => raw,
            GitRemote::Path(path) => path,
        }
    }

    /// The host a fetch contacts, or `None` when it stays on this host (paths, `file:`,
    /// loopback).
    pub fn remote_host(&self) -> Option<String> {
        match self {
            GitRemote::Url(url) if url.is_local() => None,
            GitRemote::Url(url) => url.host(),
            GitRemote::Scp { host, .. } => Some(host.clone()),
            GitRemote::Path(_) => None,
        }
    }
}

impl FromStr for GitRemote {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text_ok = !text.trim().is_empty() && !text.starts_with('-');
        if !text_ok {
            return Err("must be a git URL (https://, ssh:// or file://) or a path".to_string());
        }
        if text.contains("://") || text.starts_with("file:") {
            return SafeUrl::parse(text).map(GitRemote::Url);
        }
        if let Some((before, _)) = text.split_once(':')
            && !before.contains('/')
            && !before.is_empty()
        {
            let host = before
                .rsplit('@')
                .next()
                .unwrap_or(before)
                .to_ascii_lowercase();
            if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("`{text}` is not a git URL (no host before `:`)"));
            }
            return Ok(GitRemote::Scp {
                raw: text.to_string(),
                host,
            });
        }
        if text.chars().any(char::is_control) {
            return Err("a repository path cannot hold control characters".to_string());
        }
        Ok(GitRemote::Path(text.to_string()))
    }
}

impl fmt::Display for GitRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitRemote::Url(url) => fmt::Display::fmt(url, f),
            GitRemote::Scp { raw, .. } => f.write_str(raw),
            GitRemote::Path(path) => f.write_str(path),
        }
    }
}

/// A package repository as `package.repo` names it: a name (`extra`, `bookworm-backports`), a
/// URL (a pacman `<name>.db`, a dnf base URL), or one apt source line (`deb [options] URI suite
/// [components]`, see sources.list(5)).
#[derive(Debug, Clone, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(with = "String")]
pub enum PackageRepo {
    /// A repository (or release) name.
    Name(String),
    /// A URL.
    Url(SafeUrl),
    /// One `deb …` line.
    DebLine {
        /// The whole line, as apt gets it.
        line: String,
        /// Its URI.
        url: SafeUrl,
    },
}

impl PackageRepo {
    /// The exact text the package manager receives.
    pub fn expose(&self) -> &str {
        match self {
            PackageRepo::Name(name) => name,
            PackageRepo::Url(url) => url.expose(),
            PackageRepo::DebLine { line, .. } => line,
        }
    }

    /// The URL it fetches from, when it names one (a plain name is resolved by the manager's
    /// own configuration).
    pub fn url(&self) -> Option<&SafeUrl> {
        match self {
            PackageRepo::Name(_) => None,
            PackageRepo::Url(url) | PackageRepo::DebLine { url, .. } => Some(url),
        }
    }
}

impl FromStr for PackageRepo {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || "must be a repository name, a URL or one `deb …` source line".to_string();
        if text.contains(['\n', '\r']) {
            return Err(invalid());
        }
        let text = text.trim();
        if text.is_empty() || text.starts_with('-') {
            return Err(invalid());
        }
        if let Some(line) = text.strip_prefix("deb ") {
            let mut rest = line.trim_start();
            if rest.starts_with('[') {
                rest = rest
                    .split_once(']')
                    .map_or("", |(_, after)| after.trim_start());
            }
            let uri = rest.split_whitespace().next().ok_or_else(invalid)?;
            let url = SafeUrl::parse(uri)?;
            return Ok(PackageRepo::DebLine {
                line: text.to_string(),
                url,
            });
        }
        if text.contains("://") || text.starts_with("file:") {
            return SafeUrl::parse(text).map(PackageRepo::Url);
        }
        if text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Ok(PackageRepo::Name(text.to_string()));
        }
        Err(invalid())
    }
}

impl fmt::Display for PackageRepo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackageRepo::Name(name) => f.write_str(name),
            PackageRepo::Url(url) => fmt::Display::fmt(url, f),
            PackageRepo::DebLine { line, url } => {
                f.write_str(&line.replacen(url.expose(), &url.redacted(), 1))
            }
        }
    }
}

crate::text::serde_as_text!(GitRemote);
crate::text::serde_as_text!(PackageRepo);
crate::text::serde_as_text!(SafeUrl);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_render() {
        let secret = Secret::new("sk-very-secret");
        assert_eq!(secret.to_string(), REDACTED);
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"<redacted>\"");
        assert_eq!(secret.expose(), "sk-very-secret");
    }

    #[test]
    fn key_lists_split_and_join_as_llama_cpp_reads_them() {
        assert_eq!(csv_fields("a,b"), ["a", "b"]);
        assert_eq!(
            csv_fields(r#""x,y","say ""hi""",z"q"#),
            ["x,y", r#"say "hi""#, r#"z"q"#]
        );
        assert_eq!(csv_fields(""), [""]);
        let keys = ["sk-1".to_string(), "a,b".to_string(), "q\"".to_string()];
        assert_eq!(csv_fields(&csv_join(&keys)), keys);
    }

    #[test]
    fn urls_hide_user_info_query_values_and_fragments() {
        let url = SafeUrl::parse("https://user:pw@Example.org:8443/a/b.zip?sig=abc&x=1&flag#frag")
            .unwrap();
        assert_eq!(
            url.to_string(),
            "https://<redacted>@Example.org:8443/a/b.zip?sig=<redacted>&x=<redacted>&<redacted>#<redacted>"
        );
        assert_eq!(url.host().as_deref(), Some("example.org"));
        assert_eq!(url.port(), Some(8443));
        assert_eq!(url.file_name(), Some("b.zip"));
        assert_eq!(
            url.parent().unwrap().expose(),
            "https://user:pw@Example.org:8443/a"
        );
        assert_eq!(
            url.expose(),
            "https://user:pw@Example.org:8443/a/b.zip?sig=abc&x=1&flag#frag"
        );
        assert!(!format!("{url:?}").contains("pw"));
        assert!(
            !serde_json::to_string(&url).unwrap().contains("pw"),
            "serialised form is redacted"
        );
        let plain = SafeUrl::parse("https://example.org/a@b.zip").unwrap();
        assert_eq!(plain.to_string(), "https://example.org/a@b.zip");
    }

    #[test]
    fn local_urls() {
        for local in [
            "file:///srv/x",
            "file:/srv/x",
            "http://127.0.0.1:5000/x",
            "https://localhost/x",
            "http://[::1]:80/x",
        ] {
            assert!(SafeUrl::parse(local).unwrap().is_local(), "{local}");
        }
        assert!(!SafeUrl::parse("https://github.com/x").unwrap().is_local());
        assert_eq!(
            SafeUrl::parse("http://[::1]:80/x").unwrap().port(),
            Some(80)
        );
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_credentials() {
        assert!(SafeUrl::parse("not a url").is_err());
        assert!(SafeUrl::parse("https://").is_err());
        let error = SafeUrl::parse("https://u:topsecret@host/a b").unwrap_err();
        assert!(!error.contains("topsecret"), "{error}");
    }

    #[test]
    fn urls_inside_text_are_redacted() {
        assert_eq!(
            redact_urls("dnf --repofrompath=ep,https://u:pw@h/x?sig=1 install x"),
            "dnf --repofrompath=ep,https://<redacted>@h/x?sig=<redacted> install x"
        );
        assert_eq!(
            redact_urls("deb file:/srv/repo ./"),
            "deb file:/srv/repo ./"
        );
    }

    #[test]
    fn git_remotes() {
        let scp: GitRemote = "git@GitHub.com:ggml-org/llama.cpp.git".parse().unwrap();
        assert_eq!(scp.remote_host().as_deref(), Some("github.com"));
        let path: GitRemote = "/srv/llama.cpp".parse().unwrap();
        assert_eq!(path.remote_host(), None);
        let file: GitRemote = "file:///srv/llama.cpp".parse().unwrap();
        assert_eq!(file.remote_host(), None);
        let https: GitRemote = "https://u:tok@github.com/ggml-org/llama.cpp.git"
            .parse()
            .unwrap();
        assert_eq!(https.remote_host().as_deref(), Some("github.com"));
        assert_eq!(
            https.to_string(),
            "https://<redacted>@github.com/ggml-org/llama.cpp.git"
        );
        assert!("-uhoh".parse::<GitRemote>().is_err());
    }

    #[test]
    fn package_repositories() {
        let line: PackageRepo = "deb [trusted=yes] http://u:pw@127.0.0.1:8000/repo ./"
            .parse()
            .unwrap();
        assert_eq!(
            line.to_string(),
            "deb [trusted=yes] http://<redacted>@127.0.0.1:8000/repo ./"
        );
        assert!(line.url().unwrap().is_local());
        assert!(matches!(
            "extra".parse::<PackageRepo>(),
            Ok(PackageRepo::Name(_))
        ));
        assert!(matches!(
            "file:///srv/repo/ep.db".parse::<PackageRepo>(),
            Ok(PackageRepo::Url(_))
        ));
        assert!("two words".parse::<PackageRepo>().is_err());
        assert!("deb\n".parse::<PackageRepo>().is_err());
    }
}
