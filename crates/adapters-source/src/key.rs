//! The build cache key: what makes two builds interchangeable.

use std::collections::BTreeMap;

use provisioner_core::{Backend, OptionRename, TreeRule};
use serde::Serialize;

/// Version of the build layout; bumping it invalidates every key.
pub const LAYOUT_VERSION: &str = "source-v1";

/// Everything a build's output depends on. Order of flags, targets and artefacts does not matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInputs<'a> {
    /// Full commit SHA.
    pub commit: &'a str,
    /// CMake generator.
    pub generator: &'a str,
    /// Every cmake flag passed, including the derived ones.
    pub flags: &'a [String],
    /// Targets built.
    pub targets: &'a [String],
    /// Artefacts installed.
    pub artifacts: &'a [String],
    /// Backend.
    pub backend: Backend,
    /// Tool name → `path@fingerprint` (without ccache, which does not change the output).
    pub toolchain: &'a BTreeMap<String, String>,
    /// Whether submodules are checked out (they are part of the source).
    pub submodules: bool,
    /// Options that may be passed under their old name, depending on the tree.
    pub renamed: &'a [OptionRename],
    /// Settings that depend on the tree.
    pub tree_rules: &'a [TreeRule],
}

#[derive(Serialize)]
struct Canonical<'a> {
    layout: &'static str,
    commit: &'a str,
    generator: &'a str,
    flags: Vec<&'a str>,
    targets: Vec<&'a str>,
    artifacts: Vec<&'a str>,
    backend: Backend,
    toolchain: &'a BTreeMap<String, String>,
    submodules: bool,
    renamed: &'a [OptionRename],
    tree_rules: &'a [TreeRule],
}

fn sorted(items: &[String]) -> Vec<&str> {
    let mut items: Vec<&str> = items.iter().map(String::as_str).collect();
    items.sort_unstable();
    items.dedup();
    items
}

/// The first 20 hex digits of BLAKE3 over the canonical JSON of `inputs` and [`LAYOUT_VERSION`].
pub fn build_key(inputs: &KeyInputs<'_>) -> String {
    let canonical = Canonical {
        layout: LAYOUT_VERSION,
        commit: inputs.commit,
        generator: inputs.generator,
        flags: sorted(inputs.flags),
        targets: sorted(inputs.targets),
        artifacts: sorted(inputs.artifacts),
        backend: inputs.backend,
        toolchain: inputs.toolchain,
        submodules: inputs.submodules,
        renamed: inputs.renamed,
        tree_rules: inputs.tree_rules,
    };
    // Serialising strings, vectors and string maps cannot fail.
    let json = serde_json::to_vec(&canonical).unwrap_or_default();
    blake3::hash(&json).to_hex()[..20].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Owned {
        commit: String,
        generator: String,
        flags: Vec<String>,
        targets: Vec<String>,
        artifacts: Vec<String>,
        backend: Backend,
        toolchain: BTreeMap<String, String>,
        submodules: bool,
        renamed: Vec<OptionRename>,
        tree_rules: Vec<TreeRule>,
    }

    impl Owned {
        fn key(&self) -> String {
            build_key(&KeyInputs {
                commit: &self.commit,
                generator: &self.generator,
                flags: &self.flags,
                targets: &self.targets,
                artifacts: &self.artifacts,
                backend: self.backend,
                toolchain: &self.toolchain,
                submodules: self.submodules,
                renamed: &self.renamed,
                tree_rules: &self.tree_rules,
            })
        }
    }

    type Change = Box<dyn Fn(&mut Owned)>;

    fn base() -> Owned {
        Owned {
            commit: "a".repeat(40),
            generator: "Unix Makefiles".into(),
            flags: vec!["-DGGML_CUDA=OFF".into(), "-DLLAMA_CURL=OFF".into()],
            targets: vec!["llama-server".into()],
            artifacts: vec!["bin/llama-server".into()],
            backend: Backend::Cpu,
            toolchain: [("cmake".to_string(), "/usr/bin/cmake@1-2".to_string())].into(),
            submodules: false,
            renamed: Vec::new(),
            tree_rules: Vec::new(),
        }
    }

    #[test]
    fn same_inputs_same_key_and_order_does_not_matter() {
        let a = base();
        let mut b = base();
        b.flags.reverse();
        assert_eq!(a.key(), base().key());
        assert_eq!(a.key(), b.key());
        assert_eq!(a.key().len(), 20);
        assert!(a.key().chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn every_input_changes_the_key() {
        let key = base().key();
        let changes: Vec<Change> = vec![
            Box::new(|o| o.commit = "b".repeat(40)),
            Box::new(|o| o.generator = "Ninja".into()),
            Box::new(|o| o.flags[0] = "-DGGML_CUDA=ON".into()),
            Box::new(|o| o.flags.push("-DX=1".into())),
            Box::new(|o| o.targets.push("llama-cli".into())),
            Box::new(|o| o.artifacts.push("bin/llama-cli".into())),
            Box::new(|o| o.submodules = true),
            Box::new(|o| {
                o.renamed.push(OptionRename {
                    old: "LLAMA_NATIVE".into(),
                    new: "GGML_NATIVE".into(),
                })
            }),
            Box::new(|o| {
                o.tree_rules.push(TreeRule::RefuseWhenContains {
                    path: "a".into(),
                    needle: "b".into(),
                    message: "c".into(),
                })
            }),
            Box::new(|o| o.backend = Backend::Vulkan),
            Box::new(|o| {
                o.toolchain
                    .insert("cmake".into(), "/usr/bin/cmake@1-3".into());
            }),
            Box::new(|o| {
                o.toolchain.insert("cc".into(), "/usr/bin/gcc@5-6".into());
            }),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut owned = base();
            change(&mut owned);
            assert_ne!(owned.key(), key, "change {i} kept the key");
        }
    }
}
