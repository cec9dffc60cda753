//! [`HostRunFiles`], the `RunFiles` port: files that hold secrets, written with mode 0600 in a
//! per-pool directory of mode 0700 under the run dir (`<run_dir>/<pool>/<name>`).

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use provisioner_core::{Error, PoolId, Result, RunFiles, Secret};

use crate::install::write_private;

/// Private per-pool files under a run dir.
#[derive(Debug, Clone)]
pub struct HostRunFiles {
    run_dir: PathBuf,
}

impl HostRunFiles {
    /// Files under `run_dir`.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        HostRunFiles {
            run_dir: run_dir.into(),
        }
    }
}

#[async_trait]
impl RunFiles for HostRunFiles {
    fn path(&self, pool: &PoolId, name: &str) -> PathBuf {
        self.run_dir.join(pool.as_str()).join(name)
    }

    async fn write_private(&self, pool: &PoolId, name: &str, contents: &Secret) -> Result<PathBuf> {
        let path = self.path(pool, name);
        let dir = self.run_dir.join(pool.as_str());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io("create", &dir, e))?;
        // An existing directory keeps its mode on create: make sure it is private.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("chmod", &dir, e))?;
        write_private(&path, contents.expose().as_bytes())?;
        Ok(path)
    }
}

/// Reads an env file of `NAME=value` lines (the format `RunFiles` writes and container runtimes
/// read with `--env-file`); blank lines and `#` comments are skipped.
pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    let mut variables = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line.split_once('=').ok_or_else(|| {
            Error::data(
                "read",
                path,
                "a line is not NAME=value (the value is not shown)",
            )
        })?;
        variables.insert(name.to_string(), value.to_string());
    }
    Ok(variables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_are_private_from_the_start_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let files = HostRunFiles::new(dir.path());
        let pool: PoolId = "p1".parse().unwrap();
        let path = files
            .write_private(&pool, "env", &Secret::new("A=1\nTOKEN=s3cret=x\n"))
            .await
            .unwrap();
        assert_eq!(path, dir.path().join("p1/env"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("p1")), 0o700);
        let variables = read_env_file(&path).unwrap();
        assert_eq!(variables["TOKEN"], "s3cret=x");
        assert_eq!(variables["A"], "1");
    }
}
