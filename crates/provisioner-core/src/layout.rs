//! Where things live on disk, as data. The defaults follow llama-orch: engine build caches under
//! `~/.cache/llama-orch/<engine>`, models under `~/.cache/models`, run files under
//! `~/.cache/llama-orch/run`.

use std::path::{Path, PathBuf};

use crate::vocabulary::Engine;

/// The directories the provisioner uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Home directory, for `~/` in configured paths.
    pub home: PathBuf,
    /// Engine caches: `<cache_root>/<engine>`; default `~/.cache/llama-orch`.
    pub cache_root: PathBuf,
    /// Models directory; default `~/.cache/models`.
    pub models_dir: PathBuf,
    /// Run records, logs and per-pool private files of engines; default
    /// `<cache_root>/run`.
    pub run_dir: PathBuf,
}

impl Layout {
    /// llama-orch's defaults under a home directory.
    pub fn under_home(home: &Path) -> Layout {
        let cache = home.join(".cache");
        Layout::with_cache_root(home, cache.join("llama-orch"), cache.join("models"))
    }

    /// A layout with a given cache root; the run dir sits inside it.
    pub fn with_cache_root(home: &Path, cache_root: PathBuf, models_dir: PathBuf) -> Layout {
        Layout {
            home: home.to_path_buf(),
            run_dir: cache_root.join("run"),
            cache_root,
            models_dir,
        }
    }

    /// The cache of an engine: `<cache_root>/<engine>`.
    pub fn engine_cache(&self, engine: Engine) -> PathBuf {
        self.cache_root.join(engine.as_str())
    }

    /// A configured directory, or `default` when none is configured.
    pub fn dir_or(&self, configured: Option<&str>, default: PathBuf) -> PathBuf {
        configured.map(|dir| self.expand(dir)).unwrap_or(default)
    }

    /// Expands a leading `~/` against the home directory; other paths stay as they are.
    pub fn expand(&self, path: &str) -> PathBuf {
        match path.strip_prefix("~/") {
            Some(rest) => self.home.join(rest),
            None => PathBuf::from(path),
        }
    }
}
