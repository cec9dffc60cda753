//! Where things live on disk, as data. The defaults follow llama-orch.

use std::path::{Path, PathBuf};

use crate::config::{Engine, PoolConfig};

/// The directories the provisioner uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Home directory, for `~/` in configured paths.
    pub home: PathBuf,
    /// Engine build caches: `<cache_root>/<engine>`; default `~/.cache/llama-orch`.
    pub cache_root: PathBuf,
    /// Model cache; default `~/.cache/models`.
    pub models_dir: PathBuf,
    /// Pid files and logs of running engines; default `~/.cache/llama-orch/run`.
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

    /// The build cache of an engine for a pool (honours `source.build.cache_dir`).
    pub fn engine_cache(&self, engine: Engine, pool: &PoolConfig) -> PathBuf {
        pool.provisioning
            .source
            .as_ref()
            .and_then(|s| s.build.cache_dir.as_deref())
            .map(|dir| self.expand(dir))
            .unwrap_or_else(|| self.cache_root.join(engine.as_str()))
    }

    /// The model cache for a pool (honours `model.cache_dir`).
    pub fn model_cache(&self, pool: &PoolConfig) -> PathBuf {
        pool.provisioning
            .model
            .as_ref()
            .and_then(|m| m.cache_dir.as_deref())
            .map(|dir| self.expand(dir))
            .unwrap_or_else(|| self.models_dir.clone())
    }

    /// Expands a leading `~/` against the home directory; other paths stay as they are.
    pub fn expand(&self, path: &str) -> PathBuf {
        match path.strip_prefix("~/") {
            Some(rest) => self.home.join(rest),
            None => PathBuf::from(path),
        }
    }
}
