//! CMake cache entries (`-DNAME[:TYPE]=VALUE`) parsed and normalised, so that equivalent flag lists
//! produce the same build key and the same argv.

use std::collections::BTreeMap;

use serde::Serialize;

/// One `-DNAME[:TYPE]=VALUE` entry (cmake(1), `-D <var>:<type>=<value>`); written and
/// serialised as that flag.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema)]
#[schemars(with = "String")]
pub struct CacheEntry {
    /// Variable name.
    pub name: String,
    /// Optional type (`BOOL`, `STRING`, `PATH`, ...), upper-cased.
    pub kind: Option<String>,
    /// Value, with booleans spelled `ON`/`OFF`.
    pub value: String,
}

impl CacheEntry {
    /// The entry as one argv element for cmake.
    pub fn to_flag(&self) -> String {
        match &self.kind {
            Some(kind) => format!("-D{}:{}={}", self.name, kind, self.value),
            None => format!("-D{}={}", self.name, self.value),
        }
    }

    /// Whether the value is a CMake true constant.
    pub fn is_on(&self) -> bool {
        is_true(&self.value)
    }

    /// The entry with a boolean constant spelled `ON`/`OFF`, for a name known to be a boolean
    /// option (a recipe's table, or the tree's own `option()`); any other value is returned
    /// unchanged. Never applied to typed `STRING`/`PATH`/`FILEPATH` entries.
    pub fn as_boolean_option(&self) -> CacheEntry {
        let typed_other = self.kind.as_deref().is_some_and(|kind| kind != "BOOL");
        if typed_other || !is_bool_word(&self.value) {
            return self.clone();
        }
        CacheEntry {
            value: if is_true(&self.value) { "ON" } else { "OFF" }.to_string(),
            ..self.clone()
        }
    }
}

/// Parses one flag; the error says how to write it.
pub fn parse_cache_entry(flag: &str) -> Result<CacheEntry, String> {
    let Some(body) = flag.strip_prefix("-D") else {
        return Err(format!(
            "`{flag}` is not a CMake cache entry; write -DNAME=VALUE (the generator has its own key, source.build.generator)"
        ));
    };
    let Some((lhs, value)) = body.split_once('=') else {
        return Err(format!("`{flag}` has no value; write -DNAME=VALUE"));
    };
    let (name, kind) = match lhs.split_once(':') {
        Some((name, kind)) => (name, Some(kind.to_ascii_uppercase())),
        None => (lhs, None),
    };
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !name_ok {
        return Err(format!(
            "`{flag}`: `{name}` is not a CMake variable name (letters, digits, `_`, `.`, `-`)"
        ));
    }
    if value.contains('\0') || value.contains('\n') {
        return Err(format!(
            "`{name}`: the value contains a NUL byte or a newline"
        ));
    }
    // Only a value typed BOOL is known to be a boolean here; any other value is kept exactly as
    // written (`-DGGML_SCHED_MAX_COPIES=1` is the number 1, which the compiler gets).
    let value = if kind.as_deref() == Some("BOOL") {
        if !is_bool_word(value) {
            return Err(format!(
                "`{flag}`: a BOOL value is ON or OFF (or TRUE/FALSE, YES/NO, Y/N, 1/0)"
            ));
        }
        if is_true(value) { "ON" } else { "OFF" }.to_string()
    } else {
        value.to_string()
    };
    Ok(CacheEntry {
        name: name.to_string(),
        kind,
        value,
    })
}

impl std::str::FromStr for CacheEntry {
    type Err = String;

    fn from_str(flag: &str) -> Result<Self, String> {
        parse_cache_entry(flag)
    }
}

impl std::fmt::Display for CacheEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_flag())
    }
}

/// An option given under its old name and passed under the name that replaced it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct OptionRename {
    /// The name the configuration used (`LLAMA_NATIVE`).
    pub old: String,
    /// The name it is passed as (`GGML_NATIVE`).
    pub new: String,
}

/// A setting that depends on the source tree being built, applied after checkout.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum TreeRule {
    /// When the tree holds the file `path` (relative to its root), `entry` is passed too (the
    /// recipe adds such a rule only for names the configuration does not set).
    SetWhenPresent {
        /// File whose presence decides.
        path: String,
        /// The entry passed.
        entry: CacheEntry,
    },
    /// The tree cannot be built when the file `path` contains `needle`: prepare fails with
    /// `message` before configuring.
    RefuseWhenContains {
        /// File to read.
        path: String,
        /// Text that marks a tree this recipe does not build.
        needle: String,
        /// Why, and what to build instead.
        message: String,
    },
}

/// A download that a build option makes at configure or build time (CMake `FetchContent`,
/// `ExternalProject`, `file(DOWNLOAD)`, npm): checked against the host policy before the
/// build starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct BuildFetch {
    /// The cache entry that turns it on (`LLAMA_LLGUIDANCE`).
    pub option: String,
    /// Where it downloads from.
    pub url: crate::secret::SafeUrl,
}

/// A de-duplicated, sorted set of cache entries: for a repeated name the last one wins, as in
/// cmake. Serialised as the list of flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CacheEntries(BTreeMap<String, CacheEntry>);

impl Serialize for CacheEntries {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.values())
    }
}

impl CacheEntries {
    /// Parses flags in order; later entries override earlier ones.
    pub fn parse<'a>(flags: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut entries = CacheEntries::default();
        for flag in flags {
            entries.set(parse_cache_entry(flag)?);
        }
        Ok(entries)
    }

    /// Entries already parsed, in order; later ones override earlier ones.
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a CacheEntry>) -> Self {
        let mut set = CacheEntries::default();
        for entry in entries {
            set.set(entry.clone());
        }
        set
    }

    /// The entries, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &CacheEntry> {
        self.0.values()
    }

    /// Sets (or replaces) an entry.
    pub fn set(&mut self, entry: CacheEntry) {
        self.0.insert(entry.name.clone(), entry);
    }

    /// Sets an entry only when the user did not.
    pub fn set_default(&mut self, name: &str, value: &str) {
        self.0
            .entry(name.to_string())
            .or_insert_with(|| CacheEntry {
                name: name.to_string(),
                kind: None,
                value: value.to_string(),
            });
    }

    /// Removes an entry, returning it.
    pub fn remove(&mut self, name: &str) -> Option<CacheEntry> {
        self.0.remove(name)
    }

    /// Looks an entry up.
    pub fn get(&self, name: &str) -> Option<&CacheEntry> {
        self.0.get(name)
    }

    /// Whether the entry exists and is a true constant.
    pub fn is_on(&self, name: &str) -> bool {
        self.0.get(name).is_some_and(CacheEntry::is_on)
    }

    /// The entries as argv, sorted by name.
    pub fn to_flags(&self) -> Vec<String> {
        self.0.values().map(CacheEntry::to_flag).collect()
    }
}

fn is_bool_word(value: &str) -> bool {
    matches!(
        value.to_ascii_uppercase().as_str(),
        "ON" | "OFF" | "TRUE" | "FALSE" | "YES" | "NO" | "Y" | "N"
    ) || value == "0"
        || value == "1"
}

fn is_true(value: &str) -> bool {
    matches!(
        value.to_ascii_uppercase().as_str(),
        "ON" | "TRUE" | "YES" | "Y" | "1"
    )
}

crate::text::serde_as_text!(CacheEntry);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_typed_booleans_are_normalised_and_last_wins() {
        let entries = CacheEntries::parse([
            "-DGGML_CUDA=1",
            "-DB=yes",
            "-DGGML_CUDA:bool=off",
            "-DX=a b",
            "-DGGML_SCHED_MAX_COPIES=1",
            "-DN:STRING=0",
        ])
        .unwrap();
        assert_eq!(
            entries.to_flags(),
            vec![
                "-DB=yes",
                "-DGGML_CUDA:BOOL=OFF",
                "-DGGML_SCHED_MAX_COPIES=1",
                "-DN:STRING=0",
                "-DX=a b"
            ]
        );
        assert!(parse_cache_entry("-DX:BOOL=maybe").is_err());
    }

    #[test]
    fn a_known_boolean_option_is_spelled_on_or_off_and_nothing_else_is() {
        let entry = |flag: &str| {
            parse_cache_entry(flag)
                .unwrap()
                .as_boolean_option()
                .to_flag()
        };
        assert_eq!(entry("-DGGML_CUDA=1"), "-DGGML_CUDA=ON");
        assert_eq!(entry("-DGGML_NATIVE=off"), "-DGGML_NATIVE=OFF");
        assert_eq!(
            entry("-DGGML_NATIVE:STRING=off"),
            "-DGGML_NATIVE:STRING=off"
        );
        assert_eq!(entry("-DGGML_CUDA=sm_80"), "-DGGML_CUDA=sm_80");
    }

    #[test]
    fn shell_metacharacters_are_plain_values() {
        let entry = parse_cache_entry("-DNAME=$(touch /tmp/x);`id`|&").unwrap();
        assert_eq!(entry.value, "$(touch /tmp/x);`id`|&");
        assert_eq!(entry.to_flag(), "-DNAME=$(touch /tmp/x);`id`|&");
    }

    #[test]
    fn rejects_what_is_not_an_entry() {
        assert!(
            parse_cache_entry("-G Ninja")
                .unwrap_err()
                .contains("generator")
        );
        assert!(
            parse_cache_entry("-DNOVALUE")
                .unwrap_err()
                .contains("no value")
        );
        assert!(
            parse_cache_entry("-D$(x)=1")
                .unwrap_err()
                .contains("variable name")
        );
    }
}
