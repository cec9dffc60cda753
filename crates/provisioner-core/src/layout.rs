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

    /// `<run_dir>/<pool>.<extension>`: where a supervisor keeps `record` of a pool's engine.
    pub fn run_record(&self, pool: &str, record: RunRecord) -> PathBuf {
        record.path(&self.run_dir, pool)
    }
}

/// What a supervisor keeps about a pool's engine directly in the run dir, next to the pool's
/// private directory `<run_dir>/<pool>/` (the env file): `<pool>.json`, `<pool>.pid`,
/// `<pool>.log`, the previous run's `<pool>.log.1`, and `<pool>.lock` (taken by `up`/`down`). Pool ids may hold `.`, so pool `a` and
/// pool `a.log` would share a path: the config check refuses such pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunRecord {
    /// What was started (JSON).
    State,
    /// The process (group) id.
    Pid,
    /// The engine's output.
    Log,
    /// The previous run's output.
    PreviousLog,
    /// Taken by `up` and `down` of the pool (holds the holder's pid).
    Lock,
}

impl RunRecord {
    /// Every record.
    pub const ALL: [RunRecord; 5] = [
        RunRecord::State,
        RunRecord::Pid,
        RunRecord::Log,
        RunRecord::PreviousLog,
        RunRecord::Lock,
    ];

    /// What follows `<pool>` in the file name.
    pub fn extension(self) -> &'static str {
        match self {
            RunRecord::State => ".json",
            RunRecord::Pid => ".pid",
            RunRecord::Log => ".log",
            RunRecord::PreviousLog => ".log.1",
            RunRecord::Lock => ".lock",
        }
    }

    /// What it is, for messages.
    pub fn label(self) -> &'static str {
        match self {
            RunRecord::State => "state file",
            RunRecord::Pid => "pid file",
            RunRecord::Log => "log",
            RunRecord::PreviousLog => "previous log",
            RunRecord::Lock => "lock",
        }
    }

    /// `<run_dir>/<pool><extension>`.
    pub fn path(self, run_dir: &Path, pool: &str) -> PathBuf {
        run_dir.join(format!("{pool}{}", self.extension()))
    }

    /// The pool a file name of the run dir is this record of (`a.json` → `a`).
    pub fn pool_of(self, file_name: &str) -> Option<&str> {
        file_name
            .strip_suffix(self.extension())
            .filter(|pool| !pool.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_records_sit_next_to_the_pools_directory() {
        let layout = Layout::under_home(Path::new("/home/u"));
        assert_eq!(
            layout.run_record("a", RunRecord::State),
            Path::new("/home/u/.cache/llama-orch/run/a.json")
        );
        assert_eq!(
            layout.run_record("a", RunRecord::PreviousLog),
            Path::new("/home/u/.cache/llama-orch/run/a.log.1")
        );
        assert_eq!(RunRecord::State.pool_of("a.b.json"), Some("a.b"));
        assert_eq!(RunRecord::State.pool_of(".json"), None);
        assert_eq!(RunRecord::Pid.pool_of("a.json"), None);
    }
}
