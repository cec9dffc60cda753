//! [`HostRunFiles`], the `RunFiles` port: files that hold secrets, written with mode 0600 in a
//! per-pool directory of mode 0700 under the run dir (`<run_dir>/<pool>/<name>`).

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use provisioner_core::{
    EnvValue, Error, HostInput, HostInputKind, PoolId, ProbeAuth, Result, RunFiles, Secret,
};

use crate::install::write_private;

/// Checks that each host path an engine's flags name exists as what its option takes (a file,
/// a directory, either) and can be read. The first that does not is [`Error::ConfigInvalid`]
/// at its flag, saying what is wrong and `why` it must be there (each mode in its words).
pub fn check_host_inputs(inputs: &[HostInput], why: &str) -> Result<()> {
    for input in inputs {
        let problem = match std::fs::metadata(&input.path) {
            Ok(metadata) => {
                let fits = match input.kind {
                    HostInputKind::File => metadata.is_file(),
                    HostInputKind::Directory => metadata.is_dir(),
                    HostInputKind::Either => metadata.is_file() || metadata.is_dir(),
                };
                if !fits {
                    Some(format!(
                        "is {}, but {} takes {}",
                        if metadata.is_dir() {
                            "a directory"
                        } else {
                            "not a regular file or directory"
                        },
                        input.option,
                        input.kind.described()
                    ))
                } else if metadata.is_file() {
                    std::fs::File::open(&input.path)
                        .err()
                        .map(|error| format!("cannot be read: {error}"))
                } else {
                    std::fs::read_dir(&input.path)
                        .err()
                        .map(|error| format!("cannot be read: {error}"))
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Some("does not exist on this host".to_string())
            }
            Err(error) => Some(format!("cannot be read: {error}")),
        };
        if let Some(problem) = problem {
            return Err(Error::invalid(
                &input.field,
                format!(
                    "{} {}: {problem} ({why}, so it must be {} here)",
                    input.option,
                    input.path.display(),
                    input.kind.described()
                ),
            ));
        }
    }
    Ok(())
}

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

    async fn check_inputs(&self, inputs: &[HostInput]) -> Result<()> {
        check_host_inputs(inputs, "the engine reads it when it starts")
    }

    async fn resolve(&self, value: &EnvValue) -> std::result::Result<Secret, String> {
        match value {
            EnvValue::Plain(secret) => Ok(secret.clone()),
            EnvValue::FromEnv(name) => match std::env::var(name.as_str()) {
                Ok(text) if text.is_empty() => Err(format!(
                    "from_env: {name} is set but empty in the environment of this process; export the secret in it"
                )),
                Ok(text) => Ok(Secret::new(text)),
                Err(std::env::VarError::NotPresent) => Err(format!(
                    "from_env: {name} is not set in the environment of this process (orchctl, or pool-managerd); export it there, or use from_file"
                )),
                Err(std::env::VarError::NotUnicode(_)) => Err(format!(
                    "from_env: {name} is not valid UTF-8 in the environment of this process"
                )),
            },
            EnvValue::FromFile(path) => read_secret_file(path),
        }
    }
}

/// The largest secret file read: a token or key, never a document.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// A secret kept in a file (`/run/secrets/hf`): its text, one trailing line break dropped. The
/// errors name the file, never its contents.
fn read_secret_file(path: &Path) -> std::result::Result<Secret, String> {
    use std::io::Read;
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|error| format!("from_file: cannot read {shown}: {}", io_reason(&error)))?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| format!("from_file: cannot read {shown}: {}", io_reason(&error)))?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(format!(
            "from_file: {shown} is larger than {MAX_SECRET_FILE} bytes, too large for a secret"
        ));
    }
    let mut text =
        String::from_utf8(bytes).map_err(|_| format!("from_file: {shown} is not UTF-8 text"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(format!("from_file: {shown} is empty"));
    }
    Ok(Secret::new(text))
}

/// An I/O error's reason without the "(os error N)" suffix.
fn io_reason(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.split_once(" (os error") {
        Some((reason, _)) => reason.to_string(),
        None => text,
    }
}

/// Reads an env file of `NAME=value` lines (the format `RunFiles` writes and container runtimes
/// read with `--env-file`); blank lines and `#` comments are skipped.
pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = crate::read::read_capped(path, crate::read::MAX_STATE)
        .map_err(|e| Error::io("read", path, e))?;
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

/// The key a probe authenticates with, read from where [`ProbeAuth`] says: the first key of a
/// key file (blank lines and `#` comments skipped), or a variable of an env file (the first of
/// its comma-separated keys where the server splits it). Errors name the file, never a key.
pub fn read_probe_key(auth: &ProbeAuth) -> Result<Secret> {
    match auth {
        ProbeAuth::KeyFile { path } => {
            let text = crate::read::read_capped(path, crate::read::MAX_STATE)
                .map_err(|e| Error::io("read", path, e))?;
            text.lines()
                .map(|line| line.trim_end_matches('\r'))
                .find(|line| !line.is_empty() && !line.starts_with('#'))
                .map(Secret::new)
                .ok_or_else(|| Error::data("read", path, "the key file holds no key"))
        }
        ProbeAuth::EnvFile {
            path,
            variable,
            comma_separated,
        } => {
            let variables = read_env_file(path)?;
            let value = variables.get(variable).ok_or_else(|| {
                Error::data(
                    "read",
                    path,
                    format!("the env file does not set {variable}"),
                )
            })?;
            let key = if *comma_separated {
                provisioner_core::csv_fields(value)
                    .into_iter()
                    .find(|key| !key.is_empty())
            } else {
                Some(value.clone()).filter(|key| !key.is_empty())
            };
            key.map(Secret::new).ok_or_else(|| {
                Error::data(
                    "read",
                    path,
                    format!("{variable} in the env file holds no key"),
                )
            })
        }
    }
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

    #[tokio::test]
    async fn references_are_read_from_the_environment_and_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = HostRunFiles::new(dir.path());
        let name = |n: &str| n.parse().unwrap();
        // Cargo sets CARGO_PKG_NAME for the tests it runs.
        let value = files
            .resolve(&EnvValue::FromEnv(name("CARGO_PKG_NAME")))
            .await
            .unwrap();
        assert_eq!(value.expose(), env!("CARGO_PKG_NAME"));
        let error = files
            .resolve(&EnvValue::FromEnv(name(
                "ENGINE_PROVISIONER_SURELY_UNSET_7F3A",
            )))
            .await
            .unwrap_err();
        assert!(
            error.starts_with("from_env: ENGINE_PROVISIONER_SURELY_UNSET_7F3A is not set"),
            "{error}"
        );

        let secret = dir.path().join("hf");
        std::fs::write(&secret, "hf_file-secret-0123\n").unwrap();
        let value = files
            .resolve(&EnvValue::FromFile(secret.clone()))
            .await
            .unwrap();
        assert_eq!(value.expose(), "hf_file-secret-0123");
        std::fs::write(&secret, "two\r\n").unwrap();
        let value = files.resolve(&EnvValue::FromFile(secret.clone())).await;
        assert_eq!(value.unwrap().expose(), "two");
        for (contents, expected) in [
            (&b""[..], "is empty"),
            (&b"\n"[..], "is empty"),
            (&b"\xff\xfe"[..], "is not UTF-8 text"),
        ] {
            std::fs::write(&secret, contents).unwrap();
            let error = files
                .resolve(&EnvValue::FromFile(secret.clone()))
                .await
                .unwrap_err();
            assert!(error.ends_with(expected), "{error}");
        }
        let missing = dir.path().join("missing");
        let error = files
            .resolve(&EnvValue::FromFile(missing.clone()))
            .await
            .unwrap_err();
        assert_eq!(
            error,
            format!(
                "from_file: cannot read {}: No such file or directory",
                missing.display()
            )
        );
        let plain = files
            .resolve(&EnvValue::Plain(Secret::new("as-given")))
            .await
            .unwrap();
        assert_eq!(plain.expose(), "as-given");
    }

    #[test]
    fn probes_read_the_first_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("api-key");
        std::fs::write(&keys, "\n# a comment\nsk-first\nsk-second\n").unwrap();
        let key = read_probe_key(&ProbeAuth::KeyFile { path: keys.clone() }).unwrap();
        assert_eq!(key.expose(), "sk-first");
        std::fs::write(&keys, "# only a comment\n").unwrap();
        let error = read_probe_key(&ProbeAuth::KeyFile { path: keys }).unwrap_err();
        assert!(error.to_string().contains("holds no key"), "{error}");

        let env = dir.path().join("env");
        std::fs::write(&env, "A=1\nLLAMA_API_KEY=,\"sk,quoted\",sk-2\n").unwrap();
        let auth = |comma_separated| ProbeAuth::EnvFile {
            path: env.clone(),
            variable: "LLAMA_API_KEY".to_string(),
            comma_separated,
        };
        assert_eq!(read_probe_key(&auth(true)).unwrap().expose(), "sk,quoted");
        assert_eq!(
            read_probe_key(&auth(false)).unwrap().expose(),
            ",\"sk,quoted\",sk-2"
        );
        let missing = ProbeAuth::EnvFile {
            path: env.clone(),
            variable: "OTHER".to_string(),
            comma_separated: false,
        };
        let error = read_probe_key(&missing).unwrap_err().to_string();
        assert!(error.contains("does not set OTHER"), "{error}");
    }
}
