//! Names that become paths: repository file names from the hub, blob names, revisions, split
//! GGUF parts, and the include/exclude globs. Everything that comes from a server is checked here
//! before it touches the file system.

/// Whether `text` is a full commit id (40 lower- or upper-case hex digits).
pub fn is_commit(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks a repository path given by the hub (`rfilename`): relative, `/`-separated, no empty,
/// `.` or `..` part, no backslash, no control character, at most 1024 bytes. A name that would
/// escape the snapshot directory is refused with the reason.
pub fn check_repo_path(path: &str) -> Result<(), String> {
    let reason = if path.is_empty() {
        Some("it is empty")
    } else if path.len() > 1024 {
        Some("it is longer than 1024 bytes")
    } else if path.starts_with('/') {
        Some("it is absolute")
    } else if path.contains('\\') {
        Some("it holds a backslash")
    } else if path.chars().any(char::is_control) {
        Some("it holds a control character")
    } else if path.split('/').any(|part| part.is_empty()) {
        Some("it has an empty path part")
    } else if path.split('/').any(|part| part == "." || part == "..") {
        Some("it has a `.` or `..` part")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(format!(
            "the hub named a file `{}` that would escape the snapshot directory: {reason}",
            path.escape_debug()
        )),
        None => Ok(()),
    }
}

/// Checks a blob name (an LFS sha256 or a git object id from the hub): 40 or 64 hex digits.
pub fn check_blob_name(name: &str) -> Result<(), String> {
    if (name.len() == 40 || name.len() == 64) && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "the hub gave `{}` as a file's hash, which is not 40 or 64 hex digits",
            name.escape_debug()
        ))
    }
}

/// The parts of a split GGUF named by its first part, `<prefix>-00001-of-0000N.gguf`
/// (llama.cpp's `gguf-split` naming, `%s-%05d-of-%05d.gguf`), in order, first part included.
/// `None` when `path` is not a first part (any other file, or part 2 and later).
pub fn split_gguf_parts(path: &str) -> Option<Vec<String>> {
    let stem = path.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, index) = rest.rsplit_once('-')?;
    let digits = |text: &str| text.len() == 5 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits(index) || !digits(count) || index != "00001" {
        return None;
    }
    let count: u32 = count.parse().ok()?;
    if count < 1 {
        return None;
    }
    Some(
        (1..=count)
            .map(|part| format!("{prefix}-{part:05}-of-{count:05}.gguf"))
            .collect(),
    )
}

/// `fnmatch`-style glob matching, as the Python client's `allow_patterns`/`ignore_patterns`
/// (`huggingface_hub.utils.filter_repo_objects`, which calls Python's `fnmatch`): `*` matches
/// any run of characters, `/` included; `?` one character; `[abc]`, `[a-z]` and `[!abc]` a set;
/// a pattern ending in `/` matches everything under that directory. Case-sensitive.
pub fn glob_matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<char> = if pattern.ends_with('/') {
        format!("{pattern}*").chars().collect()
    } else {
        pattern.chars().collect()
    };
    let text: Vec<char> = path.chars().collect();
    matches_from(&pattern, &text)
}

fn matches_from(pattern: &[char], text: &[char]) -> bool {
    // Iterative matching with a single backtrack point for the last `*` (linear in practice).
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                '*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                '?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = class(&pattern[p..], text[t]) {
                        if matched {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == '[' {
                        // An unclosed `[` is a literal, as in fnmatch.
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                literal if literal == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((star_p, star_t)) => {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Matches one character against a `[...]` class at the start of `pattern`; returns whether it
/// matched and the class's length, or `None` when the class is not closed.
fn class(pattern: &[char], c: char) -> Option<(bool, usize)> {
    let mut index = 1;
    let negated = matches!(pattern.get(index), Some('!'));
    if negated {
        index += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let current = *pattern.get(index)?;
        if current == ']' && !first {
            return Some((matched != negated, index + 1));
        }
        first = false;
        if pattern.get(index + 1) == Some(&'-')
            && let Some(&end) = pattern.get(index + 2)
            && end != ']'
        {
            if current <= c && c <= end {
                matched = true;
            }
            index += 3;
        } else {
            if current == c {
                matched = true;
            }
            index += 1;
        }
    }
}

/// Whether a repository path is selected by `include` (empty: everything) and not dropped by
/// `exclude`.
pub fn selected(path: &str, include: &[String], exclude: &[String]) -> bool {
    (include.is_empty() || include.iter().any(|glob| glob_matches(glob, path)))
        && !exclude.iter().any(|glob| glob_matches(glob, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_paths_that_escape_are_refused() {
        for good in ["a.gguf", "sub/dir/x.safetensors", "..a", "a..b/c"] {
            assert!(check_repo_path(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a\\b",
            "a/",
            "x\n",
        ] {
            let error = check_repo_path(bad).unwrap_err();
            assert!(error.contains("escape"), "{bad}: {error}");
        }
    }

    #[test]
    fn blob_names() {
        assert!(check_blob_name(&"a".repeat(64)).is_ok());
        assert!(check_blob_name(&"0".repeat(40)).is_ok());
        assert!(check_blob_name("../x").is_err());
        assert!(check_blob_name(&"g".repeat(64)).is_err());
    }

    #[test]
    fn split_parts() {
        assert_eq!(
            split_gguf_parts("q/m-00001-of-00003.gguf").unwrap(),
            vec![
                "q/m-00001-of-00003.gguf",
                "q/m-00002-of-00003.gguf",
                "q/m-00003-of-00003.gguf"
            ]
        );
        assert_eq!(split_gguf_parts("m-00002-of-00003.gguf"), None);
        assert_eq!(split_gguf_parts("m.gguf"), None);
        assert_eq!(split_gguf_parts("m-1-of-3.gguf"), None);
        assert_eq!(split_gguf_parts("m-00001-of-00000.gguf"), None);
    }

    #[test]
    fn globs_behave_like_fnmatch() {
        assert!(glob_matches("*.safetensors", "model.safetensors"));
        assert!(glob_matches("*.safetensors", "sub/model.safetensors"));
        assert!(!glob_matches("*.safetensors", "model.bin"));
        assert!(glob_matches("onnx/", "onnx/model.onnx"));
        assert!(glob_matches(
            "model-?????-of-*.gguf",
            "model-00001-of-00002.gguf"
        ));
        assert!(glob_matches("[!.]*", "config.json"));
        assert!(!glob_matches("[!.]*", ".gitattributes"));
        assert!(glob_matches("[a-c]x", "bx"));
        assert!(!glob_matches("[a-c]x", "dx"));
        assert!(glob_matches("a[x", "a[x"));
        assert!(glob_matches("*", ""));
        assert!(!glob_matches("?", ""));
        assert!(glob_matches("*a*b*c", "xxaybzzc"));
        assert!(!glob_matches("*a*b*c", "xxaybzzcd"));
        let include = vec!["*.json".to_string(), "*.safetensors".to_string()];
        let exclude = vec!["*consolidated*".to_string()];
        assert!(selected("config.json", &include, &exclude));
        assert!(!selected("consolidated.safetensors", &include, &exclude));
        assert!(!selected("model.bin", &include, &exclude));
        assert!(selected("model.bin", &[], &[]));
    }
}
