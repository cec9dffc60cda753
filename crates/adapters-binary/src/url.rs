//! The little URL handling downloads need: credentials kept out of messages, redirect targets
//! resolved and vetted, `file://` URLs turned into paths. Deliberately not a general URL parser:
//! anything it does not understand is refused rather than guessed at.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// A URL cut into the parts this crate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parts<'a> {
    /// Scheme, lower case.
    pub scheme: String,
    /// `user:password`, when present (still percent-encoded).
    pub userinfo: Option<&'a str>,
    /// `host` or `host:port`.
    pub host_port: &'a str,
    /// Path and query, starting with `/` (or empty); the fragment is dropped.
    pub path_and_query: &'a str,
}

impl Parts<'_> {
    /// `scheme://host:port`, which decides whether credentials may be sent along.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.host_port.to_ascii_lowercase())
    }

    /// The URL without credentials and fragment.
    pub fn without_credentials(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme, self.host_port, self.path_and_query
        )
    }
}

/// Splits `scheme://[userinfo@]host[:port][/path][?query][#fragment]`.
pub(crate) fn split(url: &str) -> Option<Parts<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return None;
    }
    let rest = rest.split('#').next().unwrap_or(rest);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    if host_port.chars().any(|c| c.is_whitespace() || c == '\\') {
        return None;
    }
    Some(Parts {
        scheme: scheme.to_ascii_lowercase(),
        userinfo,
        host_port,
        path_and_query,
    })
}

/// The URL as it may appear in messages, progress and metadata: user-info, query values and
/// fragment replaced by `<redacted>` ([`provisioner_core::SafeUrl`]); text that does not parse as
/// a URL is not shown at all.
pub fn redact(url: &str) -> String {
    provisioner_core::SafeUrl::parse(url)
        .map(|url| url.redacted())
        .unwrap_or_else(|_| "<a URL that cannot be parsed>".to_string())
}

/// Where a redirect from `current` to `location` leads, or why it must not be followed: only
/// `http` and `https` targets, and never from `https` down to plain `http`.
pub(crate) fn resolve_redirect(current: &str, location: &str) -> Result<String, String> {
    let base = split(current).ok_or_else(|| format!("cannot parse URL `{}`", redact(current)))?;
    let location = location.trim();
    if location.is_empty() {
        return Err("the redirect has an empty Location".to_string());
    }
    let target = if split(location).is_some() {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{}://{rest}", base.scheme)
    } else if location.starts_with('/') {
        format!("{}://{}{}", base.scheme, base.host_port, location)
    } else {
        let path = base
            .path_and_query
            .split('?')
            .next()
            .unwrap_or(base.path_and_query);
        let joined = if location.starts_with('?') {
            format!("{path}{location}")
        } else {
            let dir = path.rfind('/').map_or("/", |at| &path[..=at]);
            format!("{dir}{location}")
        };
        format!("{}://{}{}", base.scheme, base.host_port, joined)
    };
    let Some(parts) = split(&target) else {
        return Err(format!(
            "cannot parse the redirect target `{}`",
            redact(&target)
        ));
    };
    match parts.scheme.as_str() {
        "https" => {}
        "http" if base.scheme == "https" => {
            return Err(format!(
                "refusing to follow a redirect from https to plain http ({})",
                redact(&target)
            ));
        }
        "http" => {}
        other => {
            return Err(format!(
                "refusing to follow a redirect to a `{other}` URL ({})",
                redact(&target)
            ));
        }
    }
    let path = remove_dot_segments(parts.path_and_query);
    let userinfo = parts
        .userinfo
        .map(|userinfo| format!("{userinfo}@"))
        .unwrap_or_default();
    Ok(format!(
        "{}://{userinfo}{}{path}",
        parts.scheme, parts.host_port
    ))
}

/// RFC 3986 dot-segment removal on the path part (the query is kept as is).
fn remove_dot_segments(path_and_query: &str) -> String {
    let (path, query) = match path_and_query.find('?') {
        Some(at) => path_and_query.split_at(at),
        None => (path_and_query, ""),
    };
    if path.is_empty() {
        return format!("/{query}");
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (index, segment) in segments.iter().enumerate() {
        match *segment {
            "." => trailing_slash = index == last,
            ".." => {
                out.pop();
                trailing_slash = index == last;
            }
            other => {
                out.push(other);
                trailing_slash = false;
            }
        }
    }
    let mut result = format!("/{}", out.join("/"));
    if trailing_slash && !result.ends_with('/') {
        result.push('/');
    }
    result.push_str(query);
    result
}

/// The `Authorization` header for credentials embedded in the URL.
pub(crate) fn basic_auth(userinfo: &str) -> String {
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let mut plain = percent_decode(user);
    plain.push(b':');
    plain.extend(percent_decode(password));
    format!("Basic {}", base64(&plain))
}

/// The local path of a `file://` URL (`file:///abs` or `file://localhost/abs`).
pub(crate) fn file_path(url: &str) -> Result<PathBuf, String> {
    let parts = split(url).ok_or_else(|| format!("cannot parse URL `{}`", redact(url)))?;
    if !(parts.host_port.is_empty() || parts.host_port.eq_ignore_ascii_case("localhost")) {
        return Err(format!(
            "file URLs must name a local path (file:///path), not host `{}`",
            parts.host_port
        ));
    }
    let path = parts
        .path_and_query
        .split('?')
        .next()
        .unwrap_or(parts.path_and_query);
    if path.is_empty() {
        return Err("the file URL has no path".to_string());
    }
    Ok(PathBuf::from(OsString::from_vec(percent_decode(path))))
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%'
            && let Some(hex) = bytes.get(index + 1..index + 3)
            && let Ok(text) = std::str::from_utf8(hex)
            && let Ok(value) = u8::from_str_radix(text, 16)
        {
            out.push(value);
            index += 3;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (position, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if position <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show() {
        assert_eq!(
            redact("https://alice:s3cret@example.com/a/b.tar.gz?x=1#f"),
            "https://<redacted>@example.com/a/b.tar.gz?x=<redacted>#<redacted>"
        );
        assert_eq!(redact("https://example.com/a@b"), "https://example.com/a@b");
        assert_eq!(redact("weird://u:p@x y"), "<a URL that cannot be parsed>");
        assert_eq!(redact("file:///tmp/x.zip"), "file:///tmp/x.zip");
    }

    #[test]
    fn splits_urls() {
        let parts = split("HTTPS://u:p@Host:8443/p/q?x=1#frag").unwrap();
        assert_eq!(parts.scheme, "https");
        assert_eq!(parts.userinfo, Some("u:p"));
        assert_eq!(parts.host_port, "Host:8443");
        assert_eq!(parts.path_and_query, "/p/q?x=1");
        assert_eq!(parts.origin(), "https://host:8443");
        assert!(split("no-scheme/path").is_none());
        assert!(split("1http://x").is_none());
    }

    #[test]
    fn redirects_resolve() {
        let base = "https://example.com/releases/v1/file.tar.gz?sig=1";
        assert_eq!(
            resolve_redirect(base, "https://cdn.example.net/x").unwrap(),
            "https://cdn.example.net/x"
        );
        assert_eq!(
            resolve_redirect(base, "//cdn.example.net/x").unwrap(),
            "https://cdn.example.net/x"
        );
        assert_eq!(
            resolve_redirect(base, "/other/y").unwrap(),
            "https://example.com/other/y"
        );
        assert_eq!(
            resolve_redirect(base, "../v2/z.tar.gz").unwrap(),
            "https://example.com/releases/v2/z.tar.gz"
        );
        assert_eq!(
            resolve_redirect(base, "?sig=2").unwrap(),
            "https://example.com/releases/v1/file.tar.gz?sig=2"
        );
        assert_eq!(
            resolve_redirect("http://a/b", "https://c/d").unwrap(),
            "https://c/d"
        );
        assert_eq!(resolve_redirect("http://a/b", "/x").unwrap(), "http://a/x");
    }

    #[test]
    fn https_never_redirects_down_to_http() {
        let error = resolve_redirect("https://example.com/a", "http://example.com/a").unwrap_err();
        assert!(error.contains("from https to plain http"), "{error}");
        let error = resolve_redirect("https://example.com/a", "HTTP://evil/a").unwrap_err();
        assert!(error.contains("plain http"), "{error}");
    }

    #[test]
    fn redirects_to_other_schemes_are_refused() {
        for target in ["file:///etc/passwd", "ftp://x/y", "gopher://x"] {
            let error = resolve_redirect("http://example.com/a", target).unwrap_err();
            assert!(error.contains("refusing"), "{target}: {error}");
        }
        assert!(resolve_redirect("http://example.com/a", "  ").is_err());
    }

    #[test]
    fn dot_segments() {
        assert_eq!(remove_dot_segments("/a/b/../c/./d"), "/a/c/d");
        assert_eq!(remove_dot_segments("/../../x"), "/x");
        assert_eq!(remove_dot_segments("/a/b/.."), "/a/");
        assert_eq!(remove_dot_segments("/a?x=../y"), "/a?x=../y");
        assert_eq!(remove_dot_segments(""), "/");
    }

    #[test]
    fn basic_auth_encodes() {
        // RFC 7617's example.
        assert_eq!(
            basic_auth("Aladdin:open%20sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn file_urls() {
        assert_eq!(
            file_path("file:///tmp/a%20b.zip").unwrap(),
            PathBuf::from("/tmp/a b.zip")
        );
        assert_eq!(
            file_path("file://localhost/x").unwrap(),
            PathBuf::from("/x")
        );
        assert!(file_path("file://server/share/x").is_err());
        assert!(file_path("file://").is_err());
    }
}
