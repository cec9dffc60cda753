//! What a checked-out source tree declares to CMake: its options (`option()` and
//! `cmake_dependent_option()`, booleans) and its cache variables (`set(NAME value CACHE TYPE …)`),
//! read from every `CMakeLists.txt` and `*.cmake` file without running cmake. CMake command
//! names are case-insensitive (cmake-language(7)).

use std::collections::BTreeMap;
use std::path::Path;

/// How a tree declares a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declared {
    /// A boolean option.
    Option,
    /// A cache variable of this type (`STRING`, `PATH`, `FILEPATH`, `BOOL`, …).
    Cache(String),
}

/// Files read at most, and bytes read of each: a CMake tree is small; anything beyond is not one.
const MAX_FILES: usize = 5_000;
const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;

/// The options and cache variables declared anywhere in the tree at `root` (build directories
/// and hidden directories skipped).
pub fn declared(root: &Path) -> BTreeMap<String, Declared> {
    let mut found = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    let mut files = 0;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !name.starts_with('.') && name != "build" {
                    pending.push(entry.path());
                }
                continue;
            }
            let is_cmake = name == "CMakeLists.txt" || name.ends_with(".cmake");
            if !kind.is_file() || !is_cmake || files >= MAX_FILES {
                continue;
            }
            files += 1;
            if entry.metadata().map_or(true, |m| m.len() > MAX_FILE_BYTES) {
                continue;
            }
            if let Ok(text) = adapters_host::read_capped(&entry.path(), MAX_FILE_BYTES) {
                scan(&text, &mut found);
            }
        }
    }
    found
}

/// Adds what one CMake file declares.
fn scan(text: &str, found: &mut BTreeMap<String, Declared>) {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim_start();
        let lower = line.to_ascii_lowercase();
        let arguments = |command: &str| -> Option<Vec<String>> {
            let rest = lower.strip_prefix(command)?.trim_start();
            rest.strip_prefix('(')?;
            let start = line.len() - rest.len() + 1;
            Some(
                line[start..]
                    .split(|c: char| c.is_whitespace() || c == ')')
                    .filter(|w| !w.is_empty())
                    .map(|w| w.trim_matches('"').to_string())
                    .collect(),
            )
        };
        if let Some(args) = arguments("option").or_else(|| arguments("cmake_dependent_option")) {
            if let Some(name) = args.first().filter(|n| is_name(n)) {
                found.entry(name.clone()).or_insert(Declared::Option);
            }
        } else if let Some(args) = arguments("set")
            && let Some(cache) = args.iter().position(|a| a == "CACHE")
            && let (Some(name), Some(kind)) = (args.first(), args.get(cache + 1))
            && is_name(name)
        {
            found
                .entry(name.clone())
                .or_insert_with(|| Declared::Cache(kind.to_ascii_uppercase()));
        }
    }
}

/// Applies `rules` to the tree at `root`: a refused tree is an error (before anything is
/// configured); each entry of a rule whose file exists is appended to `flags`. Returns a
/// sentence per entry added, for the user.
pub fn apply_rules(
    root: &Path,
    rules: &[provisioner_core::TreeRule],
    flags: &mut Vec<String>,
) -> provisioner_core::Result<Vec<String>> {
    use provisioner_core::TreeRule;
    let mut notes = Vec::new();
    for rule in rules {
        match rule {
            TreeRule::RefuseWhenContains {
                path,
                needle,
                message,
            } => {
                // The tree is not ours: a link to a device or a huge file reads as empty.
                let text = adapters_host::read_capped(
                    &root.join(path),
                    adapters_host::read::MAX_HOST_FILE,
                )
                .unwrap_or_default();
                if text.contains(needle.as_str()) {
                    return Err(provisioner_core::Error::BuildCheck {
                        message: format!("{message} ({path} has `{needle}`)"),
                        hint: Some(
                            "set provisioning.source.ref to a newer release tag".to_string(),
                        ),
                    });
                }
            }
            TreeRule::SetWhenPresent { path, entry } => {
                if root.join(path).is_file() {
                    let flag = entry.to_flag();
                    let name = format!("-D{}", entry.name);
                    flags.retain(|f| {
                        !(f.starts_with(&name) && f[name.len()..].starts_with([':', '=']))
                    });
                    notes.push(format!("this tree has {path}: passing {flag}"));
                    flags.push(flag);
                }
            }
        }
    }
    Ok(notes)
}

fn is_name(word: &str) -> bool {
    !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisioner_core::{CacheEntry, TreeRule};

    #[test]
    fn rules_set_what_a_tree_needs_and_refuse_what_cannot_be_built() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("examples/server")).unwrap();
        let file = dir.path().join("examples/server/CMakeLists.txt");
        std::fs::write(&file, "set(TARGET llama-server)\n").unwrap();
        let rules = vec![
            TreeRule::SetWhenPresent {
                path: "examples/server/CMakeLists.txt".to_string(),
                entry: CacheEntry {
                    name: "LLAMA_BUILD_EXAMPLES".to_string(),
                    kind: None,
                    value: "ON".to_string(),
                },
            },
            TreeRule::SetWhenPresent {
                path: "tools/absent/CMakeLists.txt".to_string(),
                entry: CacheEntry {
                    name: "OTHER".to_string(),
                    kind: None,
                    value: "ON".to_string(),
                },
            },
            TreeRule::RefuseWhenContains {
                path: "examples/server/CMakeLists.txt".to_string(),
                needle: "set(TARGET server)".to_string(),
                message: "too old".to_string(),
            },
        ];
        let mut flags = vec![
            "-DLLAMA_BUILD_EXAMPLES=OFF".to_string(),
            "-DX=1".to_string(),
        ];
        let notes = apply_rules(dir.path(), &rules, &mut flags).unwrap();
        assert_eq!(flags, ["-DX=1", "-DLLAMA_BUILD_EXAMPLES=ON"]);
        assert_eq!(notes.len(), 1, "{notes:?}");

        std::fs::write(&file, "set(TARGET server)\n").unwrap();
        let error = apply_rules(dir.path(), &rules, &mut flags).unwrap_err();
        assert!(error.to_string().contains("too old"), "{error}");
    }

    #[test]
    fn options_and_cache_variables_are_found() {
        let mut found = BTreeMap::new();
        scan(
            "option(GGML_NATIVE \"ggml: optimize for the host\" ${GGML_NATIVE_DEFAULT})\n\
             OPTION (LLAMA_CURL \"llama: use libcurl\" ON)  # comment\n\
             set(GGML_SCHED_MAX_COPIES  \"4\" CACHE STRING \"ggml: max input copies\")\n\
             set(NOT_CACHED 1)\n\
             # option(COMMENTED \"no\" ON)\n\
             cmake_dependent_option(GGML_X \"x\" ON \"GGML_Y\" OFF)\n",
            &mut found,
        );
        assert_eq!(found.get("GGML_NATIVE"), Some(&Declared::Option));
        assert_eq!(found.get("LLAMA_CURL"), Some(&Declared::Option));
        assert_eq!(found.get("GGML_X"), Some(&Declared::Option));
        assert_eq!(
            found.get("GGML_SCHED_MAX_COPIES"),
            Some(&Declared::Cache("STRING".to_string()))
        );
        assert!(!found.contains_key("NOT_CACHED"));
        assert!(!found.contains_key("COMMENTED"));
    }
}
