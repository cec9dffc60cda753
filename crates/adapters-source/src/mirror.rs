//! The bare git mirror of a repository and resolving references against it.
//!
//! Every git call goes through the Shell port with `GIT_TERMINAL_PROMPT=0`, so a repository that
//! wants credentials fails instead of waiting for a prompt nobody sees. `file://` URLs take exactly
//! the same path as `https://` ones.

use std::path::{Path, PathBuf};

use adapters_host::lock::FileLock;
use provisioner_core::{
    Action, CommandOutput, CommandSpec, Error, Policy, Progress, ProgressEvent, Result, Shell,
    SourceBuildSpec,
};

use crate::refs::{self, RefEntry, RefKind, is_full_sha};

/// Where a repository's mirror and its lock live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mirror {
    /// `<cache_dir>/git/<hash>.git`.
    pub dir: PathBuf,
    /// Clone target, renamed into `dir` once complete.
    pub tmp: PathBuf,
    /// `<cache_dir>/locks/mirror-<hash>.lock`.
    pub lock: PathBuf,
}

impl Mirror {
    pub fn new(cache_dir: &Path, repo: &str) -> Mirror {
        let hash = &blake3::hash(repo.as_bytes()).to_hex()[..16];
        Mirror {
            dir: cache_dir.join("git").join(format!("{hash}.git")),
            tmp: cache_dir.join("git").join(format!("{hash}.git.tmp")),
            lock: locks_dir(cache_dir).join(format!("mirror-{hash}.lock")),
        }
    }
}

pub(crate) fn locks_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("locks")
}

/// A reference resolved to a full commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Full, lower-case commit SHA.
    pub commit: String,
    /// What the reference named.
    pub kind: RefKind,
}

/// git's generic advice after a failed remote operation: it says nothing about the cause.
const GIT_ADVICE: [&str; 3] = [
    "fatal: Could not read from remote repository.",
    "Please make sure you have the correct access rights",
    "and the repository exists.",
];

/// The line of a command's output that says what went wrong: git's first `fatal:` or `error:`
/// line that is not generic advice, else the last other line, else the exit status.
pub(crate) fn last_line(output: &CommandOutput) -> String {
    let lines: Vec<&str> = output
        .tail
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !GIT_ADVICE.contains(line))
        .collect();
    lines
        .iter()
        .find(|line| line.starts_with("fatal:") || line.starts_with("error:"))
        .or(lines.last())
        .map_or_else(|| output.status(), |line| line.to_string())
}

/// Runs git for one source spec.
pub(crate) struct Git<'a> {
    pub shell: &'a dyn Shell,
    pub policy: &'a dyn Policy,
    pub progress: &'a dyn Progress,
    pub spec: &'a SourceBuildSpec,
    /// Log file for the output (cold path only).
    pub log: Option<PathBuf>,
    /// Process-group file (cold path only).
    pub group_file: Option<PathBuf>,
}

impl Git<'_> {
    /// A git command with the prompt disabled and this run's log and group file, inheriting
    /// the base variables and git's ([`provisioner_core::GIT_ENV`]) only.
    pub fn command<I, S>(&self, args: I) -> CommandSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        // No prompt, and no HTTP redirect followed: a redirect to another host would bypass the
        // policy, which saw only the configured URL (git ≥ 2.31 reads GIT_CONFIG_COUNT).
        let mut command = CommandSpec::new("git", args)
            .inherit_also(provisioner_core::GIT_ENV)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.followRedirects")
            .env("GIT_CONFIG_VALUE_0", "false");
        command.log.clone_from(&self.log);
        command.group_file.clone_from(&self.group_file);
        command
    }

    /// Runs git in `dir` (`git -C dir ...`).
    pub async fn run_in(&self, dir: &Path, args: &[&str]) -> Result<CommandOutput> {
        let mut argv = vec!["-C".to_string(), dir.display().to_string()];
        argv.extend(args.iter().map(|a| a.to_string()));
        self.shell.run(&self.command(argv)).await
    }

    pub fn source_error(&self, message: String, hint: Option<String>) -> Error {
        Error::Source {
            repo: self.spec.repo.to_string(),
            reference: self.spec.reference.to_string(),
            message,
            hint,
        }
    }

    fn unreachable(&self, output: &CommandOutput) -> Error {
        self.source_error(
            format!("cannot reach the repository: {}", last_line(output)),
            Some(format!(
                "check the URL, your network and credentials; `git ls-remote {}` shows what git sees",
                self.spec.repo
            )),
        )
    }

    fn check_policy(&self) -> Result<()> {
        self.policy.check(&Action::FetchSource {
            remote: self.spec.repo.clone(),
        })
    }

    /// Takes the mirror's lock, telling the user when another process holds it.
    pub async fn lock(&self, path: &Path) -> Result<FileLock> {
        let progress = self.progress;
        let what = path.display().to_string();
        FileLock::acquire(path, move || {
            progress.report(ProgressEvent::Note {
                message: format!("waiting for another provisioner holding {what}"),
            });
        })
        .await
    }

    /// Clones the mirror when absent, fetches it otherwise. The caller holds the mirror lock.
    pub async fn sync(&self, mirror: &Mirror) -> Result<()> {
        self.check_policy()?;
        if mirror.dir.is_dir() {
            let output = self
                .run_in(
                    &mirror.dir,
                    &[
                        "fetch",
                        "--quiet",
                        "--prune",
                        "--tags",
                        "--force",
                        "origin",
                        "+refs/heads/*:refs/heads/*",
                    ],
                )
                .await?;
            if !output.success() {
                return Err(self.unreachable(&output));
            }
            return Ok(());
        }
        let parent = mirror.dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        // A first clone whose orchctl was killed may still be running (git runs in a process
        // group of its own) and writing into the temporary directory: stop it before removing
        // what it left. Its group is recorded next to the directory.
        let group_file = mirror.tmp.with_extension("tmp.group");
        stop_orphaned_clone(&group_file, &mirror.tmp);
        remove_all(&mirror.tmp)?;
        let mut clone = self.command([
            "clone".to_string(),
            "--bare".to_string(),
            "--quiet".to_string(),
            "--".to_string(),
            self.spec.repo.expose().to_string(),
            mirror.tmp.display().to_string(),
        ]);
        clone.group_file = Some(group_file.clone());
        let outcome = self.shell.run(&clone).await;
        let _ = std::fs::remove_file(&group_file);
        match outcome {
            Ok(output) if output.success() => {}
            Ok(output) => {
                remove_all(&mirror.tmp)?;
                return Err(self.unreachable(&output));
            }
            Err(e) => {
                let _ = remove_all(&mirror.tmp);
                return Err(e);
            }
        }
        std::fs::rename(&mirror.tmp, &mirror.dir).map_err(|e| Error::io("rename", &mirror.tmp, e))
    }

    /// Whether the mirror holds `commit`.
    pub async fn has_commit(&self, mirror: &Mirror, commit: &str) -> Result<bool> {
        if !mirror.dir.is_dir() {
            return Ok(false);
        }
        let object = format!("{commit}^{{commit}}");
        Ok(self
            .run_in(&mirror.dir, &["cat-file", "-e", &object])
            .await?
            .success())
    }

    /// Resolves the spec's reference to a full commit: full SHA, then the ref index, then the
    /// mirror (fetched first). Tags and commits resolved through the mirror are recorded.
    pub async fn resolve(&self) -> Result<Resolved> {
        let spec = self.spec;
        let reference = spec.reference.as_str();
        if is_full_sha(reference) {
            return Ok(Resolved {
                commit: reference.to_ascii_lowercase(),
                kind: RefKind::Commit,
            });
        }
        if let Some(entry) = refs::lookup(&spec.cache_dir, &spec.repo.to_string(), reference) {
            return Ok(Resolved {
                commit: entry.commit.to_ascii_lowercase(),
                kind: entry.kind,
            });
        }
        self.check_policy()?;
        let step = format!("fetch {}@{}", spec.repo, reference);
        self.progress.report(ProgressEvent::Started {
            step: step.clone(),
            detail: None,
        });
        let mirror = Mirror::new(&spec.cache_dir, spec.repo.expose());
        let _mirror_lock = self.lock(&mirror.lock).await?;
        self.sync(&mirror).await?;

        let object = format!("{reference}^{{commit}}");
        let output = self
            .run_in(
                &mirror.dir,
                &[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    "--end-of-options",
                    &object,
                ],
            )
            .await?;
        let commit = output.stdout.trim().to_ascii_lowercase();
        if !output.success() || !is_full_sha(&commit) {
            return Err(self.source_error(
                format!("no tag, branch or commit named `{reference}`"),
                Some(format!(
                    "list tags with: git ls-remote --tags {}",
                    spec.repo
                )),
            ));
        }
        let tag = format!("refs/tags/{reference}");
        let kind = if self
            .run_in(&mirror.dir, &["show-ref", "--verify", "--quiet", &tag])
            .await?
            .success()
        {
            RefKind::Tag
        } else if reference.chars().all(|c| c.is_ascii_hexdigit())
            && commit.starts_with(&reference.to_ascii_lowercase())
        {
            RefKind::Commit
        } else {
            RefKind::Branch
        };
        if kind != RefKind::Branch {
            // The index is shared by every repository of this cache; its own lock orders writers.
            let _index_lock = self
                .lock(&locks_dir(&spec.cache_dir).join("refs-v1.lock"))
                .await?;
            refs::record(
                &spec.cache_dir,
                &spec.repo.to_string(),
                reference,
                RefEntry {
                    commit: commit.clone(),
                    kind,
                },
            )?;
        }
        self.progress.report(ProgressEvent::Finished { step });
        self.progress.report(ProgressEvent::Note {
            message: format!(
                "{} `{reference}` of {} is commit {commit}",
                kind.as_str(),
                spec.repo
            ),
        });
        Ok(Resolved { commit, kind })
    }
}

/// Removes a file or directory tree if it exists.
pub(crate) fn remove_all(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("inspect", path, e)),
        Ok(meta) if meta.is_dir() => {
            std::fs::remove_dir_all(path).map_err(|e| Error::io("remove", path, e))
        }
        Ok(_) => std::fs::remove_file(path).map_err(|e| Error::io("remove", path, e)),
    }
}

/// Kills the process group recorded in `group_file` when it still works in `dir` (a clone of a
/// killed run), and waits until it is gone (at most 5 s). A group id that was reused by an
/// unrelated process is left alone.
fn stop_orphaned_clone(group_file: &Path, dir: &Path) {
    let Some(pgid) = std::fs::read_to_string(group_file)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
    else {
        return;
    };
    if adapters_host::group_alive(pgid) && adapters_host::process::group_works_in(pgid, dir) {
        adapters_host::kill_group(pgid, adapters_host::process::Signal::SIGKILL);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while adapters_host::group_alive(pgid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_file(group_file);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_line_is_gits_fatal_line() {
        let output = |tail: &str| CommandOutput {
            code: Some(128),
            tail: tail.to_string(),
            ..CommandOutput::default()
        };
        let tail = "Cloning into bare repository 'x'...\nfatal: '/nonexistent/repo.git' does not appear to be a git repository\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.\n";
        assert_eq!(
            last_line(&output(tail)),
            "fatal: '/nonexistent/repo.git' does not appear to be a git repository"
        );
        let ssh = "git@github.com: Permission denied (publickey).\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.\n";
        assert_eq!(
            last_line(&output(ssh)),
            "git@github.com: Permission denied (publickey)."
        );
        assert_eq!(last_line(&output("one\ntwo\n\n")), "two");
        assert_eq!(last_line(&output("")), "exit code 128");
    }

    #[test]
    fn mirrors_are_named_by_url() {
        let a = Mirror::new(Path::new("/c"), "https://github.com/ggml-org/llama.cpp");
        let b = Mirror::new(Path::new("/c"), "https://github.com/ggml-org/llama.cpp.git");
        assert_ne!(a.dir, b.dir);
        let name = a.dir.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 16 + ".git".len());
        assert!(a.dir.starts_with("/c/git"));
        assert_eq!(a.lock.parent(), Some(Path::new("/c/locks")));
        assert!(
            a.lock
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("mirror-")
        );
    }
}
