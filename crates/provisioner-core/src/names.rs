//! Names and small values with a syntax, each a type checked once when the config is read: pool
//! ids, environment variable names, git refs, package names and versions, image tags and
//! digests, the CMake generator. Downstream code receives these types and never re-checks the
//! strings inside.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Declares a string newtype whose every value passed `$check` (a `fn(&str) -> Result<(),
/// String>`): construction goes through `FromStr`/`Deserialize` only.
macro_rules! checked_string {
    ($(#[$meta:meta])* $type:ident, $check:path) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $type(String);

        impl $type {
            /// The checked text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $type {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                $check(text).map(|()| $type(text.to_string()))
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $type {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

checked_string!(
    /// A pool id: 1-64 letters, digits, `.`, `_` or `-`, not starting with `.` or `-`. It names
    /// run files and containers, so it can never be a path or an option.
    PoolId,
    check_pool_id
);

checked_string!(
    /// An environment variable name: letters, digits and `_`, not starting with a digit (POSIX
    /// portable names).
    EnvName,
    check_env_name
);

checked_string!(
    /// A git tag, branch or commit name, as `git check-ref-format --allow-onelevel` accepts it,
    /// minus anything that could be read as an option (a leading `-`).
    GitRef,
    check_git_ref
);

checked_string!(
    /// A package name valid for apt, pacman and dnf: starts with a letter or digit and holds
    /// only `a-z A-Z 0-9 . _ + - @` (never an option, never shell syntax).
    PackageName,
    check_package_name
);

checked_string!(
    /// An exact package version as the package database spells it (Debian
    /// `epoch:upstream-revision`, pacman `epoch:pkgver-pkgrel` such as `b6000-1`, RPM
    /// `version-release`): starts with a letter or digit, holds only `a-z A-Z 0-9 . _ + ~ : -`.
    PackageVersion,
    check_package_version
);

checked_string!(
    /// A file inside an unpacked archive: a relative path of plain components
    /// (`build/bin/llama-server`), or a bare file name (`server`). Never absolute, never `.` or
    /// `..`, no empty components, NUL or line breaks; at most 1024 bytes.
    ArchiveMember,
    check_archive_member
);

impl ArchiveMember {
    /// Whether it is a bare file name (found anywhere in the archive) rather than a path.
    pub fn is_file_name(&self) -> bool {
        !self.0.contains('/')
    }
}

checked_string!(
    /// An OCI image tag: up to 128 of `A-Z a-z 0-9 _ . -`, not starting with `.` or `-`
    /// (distribution spec, `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`).
    ImageTag,
    check_image_tag
);

checked_string!(
    /// An OCI content digest as registries report it: `sha256:` and 64 lower-case hex digits.
    Digest,
    check_digest
);

impl Digest {
    /// The hex part, without `sha256:`.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl GitRef {
    /// Whether the ref is spelled like a commit (7 to 40 hex digits); it may still be a branch
    /// or tag with such a name.
    pub fn looks_like_commit(&self) -> bool {
        (7..=40).contains(&self.0.len()) && self.0.chars().all(|c| c.is_ascii_hexdigit())
    }
}

fn check_pool_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with(['.', '-'])
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err("must be 1-64 characters of letters, digits, `.`, `_` or `-`, not starting with `.` or `-`".to_string())
    }
}

fn check_env_name(name: &str) -> Result<(), String> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not an environment variable name (letters, digits and `_`, not starting with a digit)"
        ))
    }
}

fn check_git_ref(reference: &str) -> Result<(), String> {
    let ok = !reference.is_empty()
        && reference.len() <= 255
        && !reference.starts_with(['-', '/'])
        && !reference.ends_with(['/', '.'])
        && !reference.ends_with(".lock")
        && !reference.contains("..")
        && !reference.contains("@{")
        && !reference.contains("//")
        && reference.chars().all(|c| {
            !c.is_ascii_control() && !matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{reference}` is not a valid git tag, branch or commit name"
        ))
    }
}

fn check_package_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err("must start with a letter or digit and hold only letters, digits and `.` `_` `+` `-` `@`".to_string())
    }
}

fn check_package_version(version: &str) -> Result<(), String> {
    let ok = version.len() <= 128
        && version
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '~' | ':' | '-'));
    if ok {
        Ok(())
    } else {
        Err("must start with a letter or digit and hold only letters, digits and `.` `_` `+` `~` `:` `-`".to_string())
    }
}

fn check_archive_member(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > 1024 {
        return Err("must be a path inside the archive, 1-1024 bytes".to_string());
    }
    if path.starts_with('/') {
        return Err(format!(
            "`{path}` is absolute; give the path inside the archive (e.g. build/bin/llama-server)"
        ));
    }
    if path.contains(['\0', '\n', '\r']) {
        return Err("contains a NUL byte or a line break".to_string());
    }
    if path.split('/').any(|part| matches!(part, "" | "." | "..")) {
        return Err(format!(
            "`{path}` has an empty, `.` or `..` component; give a plain path inside the archive"
        ));
    }
    Ok(())
}

fn check_image_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{tag}` is not an image tag (up to 128 letters, digits, `_`, `.`, `-`; not starting with `.` or `-`), nor a digest sha256:<64 lower-case hex>"
        ))
    }
}

fn check_digest(digest: &str) -> Result<(), String> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{digest}` is not an image digest; write sha256:<64 lower-case hex>"
        ))
    }
}

/// An image tag or a digest, as the config's `container.tag` accepts either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum TagOrDigest {
    /// A digest written where a tag goes (`tag: sha256:…`).
    Digest(Digest),
    /// A tag.
    Tag(ImageTag),
}

impl<'de> Deserialize<'de> for TagOrDigest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.starts_with("sha256:") {
            text.parse().map(TagOrDigest::Digest)
        } else {
            text.parse().map(TagOrDigest::Tag)
        }
        .map_err(serde::de::Error::custom)
    }
}

/// The CMake generator of a source build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, JsonSchema)]
pub enum Generator {
    /// `Ninja`.
    Ninja,
    /// `Unix Makefiles`.
    #[serde(rename = "Unix Makefiles")]
    UnixMakefiles,
}

impl Generator {
    /// The name cmake's `-G` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Generator::Ninja => "Ninja",
            Generator::UnixMakefiles => "Unix Makefiles",
        }
    }

    /// The program that runs the build.
    pub fn program(self) -> &'static str {
        match self {
            Generator::Ninja => "ninja",
            Generator::UnixMakefiles => "make",
        }
    }
}

impl fmt::Display for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Generator {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "Ninja" => Ok(Generator::Ninja),
            "Unix Makefiles" => Ok(Generator::UnixMakefiles),
            other => Err(format!(
                "unknown generator `{other}`; expected `Ninja` or `Unix Makefiles`"
            )),
        }
    }
}

crate::text::serde_as_text!(Generator);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids() {
        assert!("pool-0_a.b".parse::<PoolId>().is_ok());
        for bad in ["", ".x", "-x", "a/b", "../x", "a b", &"x".repeat(65)] {
            assert!(bad.parse::<PoolId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn git_refs() {
        for good in [
            "b6000",
            "master",
            "v1.2.3",
            "703f9e3",
            "feature/x",
            "release-1.0",
        ] {
            assert!(good.parse::<GitRef>().is_ok(), "{good}");
        }
        for bad in [
            "", "-x", "a..b", "a b", "x.lock", "a~1", "a^", "HEAD@{1}", "a:b",
        ] {
            assert!(bad.parse::<GitRef>().is_err(), "{bad}");
        }
        assert!("703f9e3".parse::<GitRef>().unwrap().looks_like_commit());
        assert!(!"b6000".parse::<GitRef>().unwrap().looks_like_commit());
    }

    #[test]
    fn names_and_versions_that_could_be_options_or_shell_are_refused() {
        assert!("llama.cpp-tools".parse::<PackageName>().is_ok());
        assert!("gcc-c++".parse::<PackageName>().is_ok());
        for bad in ["--config=/tmp/evil", "llama; rm -rf /", "$(touch x)", ""] {
            assert!(bad.parse::<PackageName>().is_err(), "{bad}");
        }
        for good in ["1:2.3~rc1+dfsg-2", "6000-1.fc42", "b9727-1"] {
            assert!(good.parse::<PackageVersion>().is_ok(), "{good}");
        }
        for bad in ["-1", "1.0 && reboot"] {
            assert!(bad.parse::<PackageVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_and_digests() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(
            serde_json::from_value::<TagOrDigest>(serde_json::json!(digest)),
            Ok(TagOrDigest::Digest(_))
        ));
        assert!(matches!(
            serde_json::from_value::<TagOrDigest>(serde_json::json!("v0.10.0")),
            Ok(TagOrDigest::Tag(_))
        ));
        assert!(serde_json::from_value::<TagOrDigest>(serde_json::json!("sha256:ABC")).is_err());
        assert!(
            format!("sha256:{}", "A".repeat(64))
                .parse::<Digest>()
                .is_err()
        );
        assert!("-x".parse::<ImageTag>().is_err());
    }
}
