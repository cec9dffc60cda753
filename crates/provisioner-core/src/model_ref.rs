//! Model references as `provisioning.model.ref` writes them (llama-orch's model-provisioner
//! schemes): `file:/abs`, a plain absolute or relative path, `hf:org/repo[@revision][/path]`,
//! `https://…`, `s3://…` and `oci://…`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use schemars::JsonSchema;

use crate::secret::SafeUrl;

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(with = "String")]
pub enum ModelRef {
    /// An absolute path (`file:/abs`, `file:///abs` or `/abs`).
    File(PathBuf),
    /// A path relative to the models directory (`tiny.gguf`, `qwen/model.gguf`).
    Relative(PathBuf),
    /// A file or a whole repository on the Hugging Face Hub.
    HuggingFace(HfRef),
    /// A file (or archive) at an `http(s)://` URL.
    Url(SafeUrl),
    /// An object in S3 (`s3://bucket/key`).
    S3(SafeUrl),
    /// An OCI artifact (`oci://registry/repository:tag`).
    Oci(String),
}

/// `hf:org/repo[@revision][/path/in/repo]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HfRef {
    /// `org/repo`.
    pub repo: String,
    /// Branch, tag or commit, when written with `@`.
    pub revision: Option<String>,
    /// A file inside the repository; `None` means the whole repository.
    pub path: Option<String>,
}

impl ModelRef {
    /// A path looked up in the models directory (a relative reference, or llama-orch's pool
    /// `model` label). Errors: a `..` component, which would leave the directory.
    pub fn relative(path: PathBuf) -> Result<ModelRef, String> {
        if path
            .components()
            .any(|part| part == std::path::Component::ParentDir)
        {
            return Err(format!(
                "`{}` climbs out of the models directory (a relative path is looked up in it); give the absolute path instead (file:/path/to/the/model)",
                path.display()
            ));
        }
        Ok(ModelRef::Relative(path))
    }

    /// The scheme's name, for messages (`file`, `hf`, `https`, `s3`, `oci`).
    pub fn scheme(&self) -> String {
        match self {
            ModelRef::File(_) | ModelRef::Relative(_) => "file".to_string(),
            ModelRef::HuggingFace(_) => "hf".to_string(),
            ModelRef::Url(url) => url.scheme(),
            ModelRef::S3(_) => "s3".to_string(),
            ModelRef::Oci(_) => "oci".to_string(),
        }
    }

    /// Whether the model is already on this host (no download can be involved).
    pub fn is_local(&self) -> bool {
        match self {
            ModelRef::File(_) | ModelRef::Relative(_) => true,
            ModelRef::HuggingFace(_) | ModelRef::Url(_) | ModelRef::S3(_) | ModelRef::Oci(_) => {
                false
            }
        }
    }
}

const HOW: &str = "write file:/absolute/path, a path relative to the models directory, hf:org/repo[/file] or https://… (s3:// and oci:// are recognised but not staged yet)";

impl FromStr for ModelRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("the model reference is empty; {HOW}"));
        }
        if text.chars().any(char::is_control) {
            return Err("a model reference cannot hold control characters".to_string());
        }
        let scheme = text.split_once(':').map(|(scheme, _)| scheme).filter(|s| {
            !s.contains('/')
                && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
        });
        let relative = ModelRef::relative;
        match scheme.map(str::to_ascii_lowercase).as_deref() {
            None => {
                let path = PathBuf::from(text);
                if path.is_absolute() {
                    Ok(ModelRef::File(path))
                } else {
                    relative(path)
                }
            }
            Some("file") => {
                let rest = &text["file:".len()..];
                let path = match rest.strip_prefix("//") {
                    Some(after) if after.starts_with('/') => after,
                    Some(_) => {
                        return Err(
                            "a file:// reference needs an absolute path (file:///path); remote hosts are not supported"
                                .to_string(),
                        );
                    }
                    None => rest,
                };
                if path.is_empty() {
                    return Err(format!("`{text}` names no file; {HOW}"));
                }
                let path = PathBuf::from(path);
                if path.is_absolute() {
                    Ok(ModelRef::File(path))
                } else {
                    relative(path)
                }
            }
            Some("hf") => text["hf:".len()..].parse().map(ModelRef::HuggingFace),
            Some("https" | "http") => SafeUrl::parse(text).map(ModelRef::Url),
            Some("s3") => SafeUrl::parse(text).map(ModelRef::S3),
            Some("oci") => Ok(ModelRef::Oci(text.to_string())),
            Some(other) => Err(format!("unknown model scheme `{other}:`; {HOW}")),
        }
    }
}

/// Checks a Hugging Face revision (branch, tag or commit): not empty, no leading `-`, no `..`,
/// no whitespace or `:`. A branch name with `/` (`refs/pr/1`) is allowed.
pub fn check_revision(revision: &str) -> Result<(), String> {
    if revision.is_empty()
        || revision.starts_with('-')
        || revision.contains("..")
        || revision
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':')
    {
        return Err(format!("`{revision}` is not a revision"));
    }
    Ok(())
}

impl FromStr for HfRef {
    type Err = String;

    /// Parses what follows `hf:`.
    fn from_str(text: &str) -> Result<Self, String> {
        let how = "write hf:org/repo, hf:org/repo/path/in/repo or hf:org/repo@revision/path";
        // As in a model reference, which is read trimmed: no blanks around it, no control
        // characters in it (a path ending in a blank would not read back).
        if text.trim() != text || text.chars().any(char::is_control) {
            return Err(format!(
                "`hf:{}` has blanks around it or control characters in it; {how}",
                text.escape_debug()
            ));
        }
        let mut parts = text.splitn(3, '/');
        let org = parts.next().unwrap_or("");
        let name_and_revision = parts.next().unwrap_or("");
        let path = parts.next();
        let (name, revision) = match name_and_revision.split_once('@') {
            Some((name, revision)) => (name, Some(revision)),
            None => (name_and_revision, None),
        };
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.len() <= 96
                && !s.starts_with(['.', '-'])
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        if !valid_name(org) || !valid_name(name) {
            return Err(format!("`hf:{text}` does not name a repository; {how}"));
        }
        if let Some(revision) = revision {
            check_revision(revision).map_err(|message| format!("{message}; {how}"))?;
        }
        if let Some(path) = path
            && (path.is_empty()
                || path.starts_with('/')
                || path.ends_with('/')
                || path
                    .split('/')
                    .any(|part| part == ".." || part == "." || part.is_empty()))
        {
            return Err(format!(
                "`{path}` is not a file path inside the repository (no `..`, no leading `/`); {how}"
            ));
        }
        Ok(HfRef {
            repo: format!("{org}/{name}"),
            revision: revision.map(str::to_string),
            path: path.map(str::to_string),
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // `file:` + a path starting `//` would read as a remote host: `file://` + it.
            ModelRef::File(path) if path.as_os_str().as_encoded_bytes().starts_with(b"//") => {
                write!(f, "file://{}", path.display())
            }
            ModelRef::File(path) => write!(f, "file:{}", path.display()),
            // Bare when it reads back as itself; `file:` before one that would read as a
            // scheme (`a:b`) or lose its leading blanks.
            ModelRef::Relative(path) => {
                let text = path.display().to_string();
                if text.parse::<ModelRef>().as_ref() == Ok(self) {
                    f.write_str(&text)
                } else {
                    write!(f, "file:{text}")
                }
            }
            ModelRef::HuggingFace(hf) => {
                write!(f, "hf:{}", hf.repo)?;
                if let Some(revision) = &hf.revision {
                    write!(f, "@{revision}")?;
                }
                if let Some(path) = &hf.path {
                    write!(f, "/{path}")?;
                }
                Ok(())
            }
            ModelRef::Url(url) | ModelRef::S3(url) => fmt::Display::fmt(url, f),
            ModelRef::Oci(text) => f.write_str(text),
        }
    }
}

crate::text::serde_as_text!(ModelRef);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(
            "file:/m/tiny.gguf".parse::<ModelRef>(),
            Ok(ModelRef::File("/m/tiny.gguf".into()))
        );
        assert_eq!(
            "file:///m/tiny.gguf".parse::<ModelRef>(),
            Ok(ModelRef::File("/m/tiny.gguf".into()))
        );
        assert_eq!(
            "tiny.gguf".parse::<ModelRef>(),
            Ok(ModelRef::Relative("tiny.gguf".into()))
        );
        let hf: ModelRef = "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf"
            .parse()
            .unwrap();
        let ModelRef::HuggingFace(hf) = hf else {
            panic!("not hf")
        };
        assert_eq!(hf.repo, "Qwen/Qwen2.5-0.5B-Instruct-GGUF");
        assert_eq!(
            hf.path.as_deref(),
            Some("qwen2.5-0.5b-instruct-q4_k_m.gguf")
        );
        let pinned: ModelRef = "hf:org/repo@v1.0/a/b.gguf".parse().unwrap();
        assert_eq!(pinned.to_string(), "hf:org/repo@v1.0/a/b.gguf");
        assert!(matches!(
            "s3://bucket/key".parse::<ModelRef>(),
            Ok(ModelRef::S3(_))
        ));
        assert!(matches!(
            "oci://r/x:1".parse::<ModelRef>(),
            Ok(ModelRef::Oci(_))
        ));
    }

    #[test]
    fn unknown_schemes_and_escapes_are_refused() {
        assert!(
            "gopher://x/y"
                .parse::<ModelRef>()
                .unwrap_err()
                .contains("unknown model scheme `gopher:`")
        );
        assert!("hf:org".parse::<ModelRef>().is_err());
        assert!("hf:org/repo/../x".parse::<ModelRef>().is_err());
        assert!("file://host/x".parse::<ModelRef>().is_err());
        assert_eq!(
            "file:sub/tiny.gguf".parse::<ModelRef>(),
            Ok(ModelRef::Relative("sub/tiny.gguf".into()))
        );
    }

    #[test]
    fn paths_that_look_like_something_else_show_with_file() {
        for text in [
            "file:////srv/m.gguf",
            "file:a:b.gguf",
            "file: lead.gguf",
            "file:hf:x",
        ] {
            let reference: ModelRef = text.parse().unwrap();
            let shown = reference.to_string();
            assert_eq!(
                shown.parse::<ModelRef>(),
                Ok(reference),
                "{text} shows as {shown}"
            );
        }
        assert_eq!(ModelRef::Relative("m.gguf".into()).to_string(), "m.gguf");
        for escaping in ["../../etc/passwd", "file:../m.gguf", "sub/../../m.gguf"] {
            let error = escaping.parse::<ModelRef>().unwrap_err();
            assert!(
                error.contains("climbs out of the models directory"),
                "{error}"
            );
        }
        assert!("sub/./m.gguf".parse::<ModelRef>().is_ok());
        assert_eq!(ModelRef::File("/m.gguf".into()).to_string(), "file:/m.gguf");
    }
}
