//! Every hint must work when pasted: each configuration key that the code base or its docs
//! name (`provisioning.binary.executable`, `container.tag`, …) exists in the configuration's
//! JSON Schema, and each `orchctl …` command they print names a subcommand that exists. The
//! commands that errors build at run time are pasted and run by the tests that provoke them
//! (`llama_orch_shapes`, `e2e`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use provisioner_core::Config;
use serde_json::Value;
use tests::{repo_root, run_orchctl};

/// The sections of `provisioning` that texts name without the `provisioning.` prefix.
const SECTIONS: &[&str] = &["source", "container", "package", "binary", "model"];

/// Rust sources of every crate (test modules and test files excluded: they quote bad keys on
/// purpose) and the two documents.
fn texts() -> Vec<(PathBuf, String)> {
    let root = repo_root();
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    let mut pending = vec![root.join("crates")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                if name != "tests" && name != "target" {
                    pending.push(path);
                }
            } else if name.ends_with(".rs") && !name.ends_with("_tests.rs") {
                files.push(path);
            }
        }
    }
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            // A crate's unit tests sit at the end of the file, after `#[cfg(test)]`.
            let text = match text.find("#[cfg(test)]") {
                Some(at) if path.extension().is_some_and(|e| e == "rs") => text[..at].to_string(),
                _ => text,
            };
            let text = if path.extension().is_some_and(|e| e == "rs") {
                words_of_rust(&text)
            } else {
                text
            };
            (path, text)
        })
        .collect()
}

/// The string literals and comments of Rust source (what users read), one per line; code is
/// dropped, so that `pool.provisioning.binary.url.is_none()` is not taken for a key path.
fn words_of_rust(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(chars[i]);
                i += 1;
            }
            out.push('\n');
        } else if c == 'r'
            && matches!(next, Some('#') | Some('"'))
            && !chars
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // Raw string: r#…#"…"#…#
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                i += 1;
                continue;
            }
            j += 1;
            let closing: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let rest: String = chars[j..].iter().collect();
            let end = rest.find(&closing).map_or(rest.len(), |e| e);
            out.push_str(&rest[..end]);
            out.push('\n');
            i = j + rest[..end].chars().count() + closing.chars().count();
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                } else {
                    out.push(chars[i]);
                }
                i += 1;
            }
            out.push('\n');
            i += 1;
        } else if c == '\'' {
            // A char literal ('"', '\'') is skipped; a lifetime is code.
            match (chars.get(i + 1), chars.get(i + 2), chars.get(i + 3)) {
                (Some('\\'), _, _) => {
                    i += 2;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                }
                (Some(_), Some('\''), _) => i += 3,
                _ => i += 1,
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Key paths written in `text`: `provisioning.` followed by names and `[N]` indexes, and
/// `<section>.<key>…` for the sections of `provisioning`.
fn key_paths(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut found = BTreeSet::new();
    let is_name = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    for start in 0..bytes.len() {
        // Only at the start of a word.
        if !text.is_char_boundary(start) {
            continue;
        }
        if start > 0
            && (is_name(bytes[start - 1]) || matches!(bytes[start - 1], b'.' | b'-' | b'/' | b'{'))
        {
            continue;
        }
        let rest = &text[start..];
        // `provisioning.` is dropped; a bare section path keeps its section as its first name.
        let body = if let Some(body) = rest.strip_prefix("provisioning.") {
            body
        } else if SECTIONS.iter().any(|s| rest.starts_with(&format!("{s}."))) {
            rest
        } else {
            continue;
        };
        let prefix = "provisioning";
        let mut path = String::from(prefix);
        let mut i = 0;
        let body_bytes = body.as_bytes();
        loop {
            let name_start = i;
            while i < body_bytes.len() && is_name(body_bytes[i]) {
                i += 1;
            }
            if i == name_start || !body_bytes[name_start].is_ascii_lowercase() {
                break;
            }
            path.push('.');
            path.push_str(&body[name_start..i]);
            while i < body_bytes.len() && body_bytes[i] == b'[' {
                let close = body[i..].find(']').map(|c| i + c);
                match close {
                    Some(close) if body[i + 1..close].chars().all(|c| c.is_ascii_digit()) => {
                        path.push_str(&body[i..=close]);
                        i = close + 1;
                    }
                    _ => break,
                }
            }
            if i + 1 < body_bytes.len()
                && body_bytes[i] == b'.'
                && body_bytes[i + 1].is_ascii_lowercase()
            {
                i += 1;
                continue;
            }
            break;
        }
        if path != "provisioning" {
            found.insert(path);
        }
    }
    found
}

/// The schema node for `#/$defs/X` (or `#/definitions/X`) references, resolved.
fn resolve<'a>(schema: &'a Value, node: &'a Value) -> &'a Value {
    let mut node = node;
    while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let pointer = reference.trim_start_matches('#');
        node = schema
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling {reference}"));
    }
    node
}

/// The nodes a value at `node` may take (its `anyOf`/`oneOf`/`allOf` branches, resolved).
fn branches<'a>(schema: &'a Value, node: &'a Value) -> Vec<&'a Value> {
    let node = resolve(schema, node);
    let mut out = vec![node];
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(list) = node.get(key).and_then(Value::as_array) {
            for branch in list {
                out.extend(branches(schema, branch));
            }
        }
    }
    out
}

/// Follows `path` (`provisioning.binary.executable`, `provisioning.ports[0]`) from a pool.
fn exists(schema: &Value, pool: &Value, path: &str) -> bool {
    let mut nodes = vec![pool];
    for part in path.split('.') {
        let (name, indexes) = match part.find('[') {
            Some(at) => (&part[..at], part[at..].matches('[').count()),
            None => (part, 0),
        };
        let mut next = Vec::new();
        for node in nodes {
            for branch in branches(schema, node) {
                if let Some(child) = branch.get("properties").and_then(|p| p.get(name)) {
                    next.push(child);
                }
            }
        }
        for _ in 0..indexes {
            let mut items = Vec::new();
            for node in next {
                for branch in branches(schema, node) {
                    if let Some(item) = branch.get("items") {
                        items.push(item);
                    }
                }
            }
            next = items;
        }
        if next.is_empty() {
            return false;
        }
        nodes = next;
    }
    true
}

#[test]
fn every_key_path_named_in_code_and_docs_exists_in_the_schema() {
    let schema = serde_json::from_str::<Value>(&Config::json_schema()).unwrap();
    let pools = schema.pointer("/properties/pools").unwrap();
    let pool = branches(&schema, pools)
        .into_iter()
        .find_map(|b| b.get("items"))
        .expect("pools is a list");
    let mut checked = 0;
    let mut missing = Vec::new();
    for (file, text) in texts() {
        for path in key_paths(&text) {
            checked += 1;
            if !exists(&schema, pool, &path) {
                missing.push(format!(
                    "{}: {path}",
                    file.strip_prefix(repo_root()).unwrap_or(&file).display()
                ));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} key paths found: the scanner is broken"
    );
    assert!(
        missing.is_empty(),
        "key paths that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_scanner_finds_paths_and_the_schema_walk_can_fail() {
    let found = key_paths(
        "set provisioning.binary.executable, check `container.tag` and provisioning.ports[0]; model.gguf",
    );
    assert!(
        found.contains("provisioning.binary.executable"),
        "{found:?}"
    );
    assert!(found.contains("provisioning.container.tag"), "{found:?}");
    assert!(found.contains("provisioning.ports[0]"), "{found:?}");
    let rust = words_of_rust(
        "if p.provisioning.source.repo.is_some() { // see provisioning.model.ref\n    hint(r#\"set provisioning.binary.version\"#, \"or `package.name`\", '\"');\n}",
    );
    let found = key_paths(&rust);
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        [
            "provisioning.binary.version",
            "provisioning.model.ref",
            "provisioning.package.name"
        ],
        "{rust}"
    );
    let schema = serde_json::from_str::<Value>(&Config::json_schema()).unwrap();
    let pool = branches(&schema, schema.pointer("/properties/pools").unwrap())
        .into_iter()
        .find_map(|b| b.get("items"))
        .unwrap();
    assert!(exists(&schema, pool, "provisioning.container.tag"));
    assert!(exists(&schema, pool, "provisioning.ports[0]"));
    assert!(!exists(&schema, pool, "provisioning.binary.no_such_key"));
    assert!(!exists(&schema, pool, "provisioning.model.gguf"));
}

/// `orchctl` followed by its subcommand words, as printed in code and docs.
fn orchctl_commands(text: &str) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("orchctl ") {
        let before = at.checked_sub(1).map(|i| text.as_bytes()[i]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-') {
            continue;
        }
        // In prose ("orchctl says …") only a quoted command counts; a known first word always
        // does (checked below).
        let quoted = before == Some(b'`');
        // Options may come first (`orchctl --cache-dir DIR engine up`); the words are those
        // that name commands.
        let words: Vec<String> = text[at + "orchctl ".len()..]
            .split_whitespace()
            .map(|w| w.trim_end_matches(['`', ',', '.', ';', ':', ')', '"']))
            .take_while(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .filter(|w| !w.starts_with('-'))
            .take(2)
            .map(str::to_string)
            .collect();
        let first_is_known = words
            .first()
            .is_some_and(|w| KNOWN_FIRST_WORDS.contains(&w.as_str()));
        if !words.is_empty() && (quoted || first_is_known) {
            found.insert(words);
        }
    }
    found
}

/// Words that start an orchctl command line (each is checked against the real command tree).
const KNOWN_FIRST_WORDS: &[&str] = &[
    "engine", "config", "model", "cache", "plan", "prepare", "up", "down", "status",
];

/// The subcommands listed under `Commands:` in a help text.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|name| name != "help")
        .collect()
}

#[test]
fn every_orchctl_command_named_in_code_and_docs_exists() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let top = run_orchctl(&cache, &["--help"]);
    assert_eq!(top.code, 0, "{}", top.stderr);
    let mut tree: Vec<(String, Vec<String>)> = Vec::new();
    for command in subcommands(&top.stdout) {
        let help = run_orchctl(&cache, &[command.as_str(), "--help"]);
        assert_eq!(help.code, 0, "{}", help.stderr);
        tree.push((command, subcommands(&help.stdout)));
    }
    assert!(
        tree.iter()
            .any(|(c, subs)| c == "engine" && subs.contains(&"up".to_string())),
        "{tree:?}"
    );

    let mut named = BTreeSet::new();
    for (file, text) in texts() {
        for words in orchctl_commands(&text) {
            named.insert((
                words,
                file.strip_prefix(repo_root())
                    .unwrap_or(&file)
                    .display()
                    .to_string(),
            ));
        }
    }
    assert!(named.len() > 5, "{named:?}");
    let mut broken = Vec::new();
    for (words, file) in &named {
        let Some((_, subs)) = tree.iter().find(|(c, _)| *c == words[0]) else {
            broken.push(format!("{file}: orchctl {}", words.join(" ")));
            continue;
        };
        // `orchctl engine` alone names the group; `orchctl engine commands` names nothing.
        let names_the_group = words.len() == 1;
        let complete = subs.is_empty() || words.get(1).is_some_and(|w| subs.contains(w));
        if !(complete || names_the_group) {
            broken.push(format!("{file}: orchctl {}", words.join(" ")));
        }
    }
    assert!(
        broken.is_empty(),
        "commands that do not exist:\n{}",
        broken.join("\n")
    );
}
