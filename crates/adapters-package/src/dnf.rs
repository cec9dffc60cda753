//! [`Dnf`]: the [`PackageManager`] port over `dnf` and `rpm` (Fedora, RHEL-likes).
//!
//! A repository id restricts the install to that repository (`--repo ID`); a base URL becomes a
//! repository of its own (`--repofrompath=engine-provisioner,URL --repo=engine-provisioner`,
//! with GPG checks off only for `file://` URLs, like pacman's `SigLevel = Never` for local
//! repositories).
//!
//! Locks: before an install or a removal, rpm's `/var/lib/rpm/.rpm.lock`, dnf 5's
//! `/run/dnf/rpmtransaction.lock` and dnf 4's pid files (`/var/lib/dnf/rpmdb_lock.pid`,
//! `/var/cache/dnf/metadata_lock.pid`, `/var/cache/dnf/download_lock.pid`) are waited for,
//! naming the holder ([`crate::locks`]); dnf 4 would otherwise wait for its own without a bound.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use provisioner_core::{
    CommandSpec, Error, InstalledPackage, ManagerKind, PackageManager, PackageName, PackageRepo,
    PackageRequest, Progress, Result, Shell, shell_quote,
};

use crate::common::{
    absolute_lines, failed, label, parsed, push_unique, remove_as_root, said, verify_installed,
    version_list,
};
use crate::locks::{LockSettings, ManagerLock};
use crate::privilege::{Privilege, RootRunner, RootTask};

/// The id of a repository given by URL.
const URL_REPO_ID: &str = "engine-provisioner";

/// dnf: `dnf install -y NAME-VERSION`, `rpm -q` to query. See the module documentation.
#[derive(Clone)]
pub struct Dnf {
    shell: Arc<dyn Shell>,
    runner: RootRunner,
}

impl std::fmt::Debug for Dnf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dnf")
            .field("privilege", &self.runner.privilege())
            .finish_non_exhaustive()
    }
}

/// An RPM version as compared with a pin: without a `(none):` or `0:` epoch.
fn normalise(version: &str) -> &str {
    version
        .strip_prefix("(none):")
        .or_else(|| version.strip_prefix("0:"))
        .unwrap_or(version)
}

fn same_version(asked: &str, reported: &str) -> bool {
    normalise(asked) == normalise(reported)
}

/// Parses `rpm -q --qf '%{EPOCH}:%{VERSION}-%{RELEASE}\n'`.
fn parse_rpm_query(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.contains("is not installed"))
        .map(|line| normalise(line).to_string())
}

/// Parses `dnf list` lines (`name.arch  version  repository`) for `name`.
fn parse_dnf_list(stdout: &str, name: &str) -> Vec<String> {
    let mut versions = Vec::new();
    for line in stdout.lines() {
        let columns: Vec<&str> = line.split_whitespace().collect();
        if let [package, version, _repository, ..] = columns.as_slice()
            && package
                .rsplit_once('.')
                .is_some_and(|(package, _arch)| package == name)
        {
            push_unique(&mut versions, normalise(version).to_string());
        }
    }
    versions
}

fn repo_options(repository: Option<&PackageRepo>, package: &str) -> Result<Vec<String>> {
    match repository {
        None => Ok(Vec::new()),
        Some(PackageRepo::Url(url)) => {
            let mut options = vec![
                format!("--repofrompath={URL_REPO_ID},{}", url.expose()),
                format!("--repo={URL_REPO_ID}"),
            ];
            if url.scheme() == "file" {
                options.push(format!("--setopt={URL_REPO_ID}.gpgcheck=0"));
            }
            Ok(options)
        }
        Some(PackageRepo::Name(id)) => Ok(vec!["--repo".to_string(), id.clone()]),
        Some(line @ PackageRepo::DebLine { .. }) => Err(Error::Package {
            manager: ManagerKind::Dnf.to_string(),
            package: package.to_string(),
            message: format!(
                "repository `{line}` is an apt source line; dnf takes a repository id or a base URL"
            ),
            hint: Some("check provisioning.package.repo".to_string()),
        }),
    }
}

/// `NAME-VERSION` (dnf's NEVRA form), or `NAME` when unpinned.
fn spec(request: &PackageRequest) -> String {
    match &request.version {
        Some(version) => format!("{}-{version}", request.name),
        None => request.name.to_string(),
    }
}

impl Dnf {
    /// dnf over the Shell port; commands needing root run as `privilege` allows.
    pub fn new(shell: Arc<dyn Shell>, progress: Arc<dyn Progress>, privilege: Privilege) -> Self {
        Dnf {
            runner: RootRunner::new(shell.clone(), progress, privilege),
            shell,
        }
    }

    /// The same dnf with other lock settings.
    pub fn with_locks(mut self, locks: LockSettings) -> Self {
        self.runner = self.runner.with_locks(locks);
        self
    }

    /// rpm's, dnf 5's and dnf 4's locks, under the configured root.
    pub fn locks(&self) -> Vec<ManagerLock> {
        let locks = self.runner.locks();
        vec![
            ManagerLock::lock(locks.system("/var/lib/rpm/.rpm.lock")),
            ManagerLock::lock(locks.system("/run/dnf/rpmtransaction.lock")),
            ManagerLock::pid_file(locks.system("/var/lib/dnf/rpmdb_lock.pid")),
            ManagerLock::pid_file(locks.system("/var/cache/dnf/metadata_lock.pid")),
            ManagerLock::pid_file(locks.system("/var/cache/dnf/download_lock.pid")),
        ]
    }

    fn install_argv(request: &PackageRequest) -> Result<CommandSpec> {
        let mut args = vec![
            "install".to_string(),
            "-y".to_string(),
            "--setopt=install_weak_deps=False".to_string(),
        ];
        args.extend(repo_options(
            request.repository.as_ref(),
            request.name.as_str(),
        )?);
        args.push(spec(request));
        Ok(parsed("dnf", args))
    }

    async fn install_one(&self, request: &PackageRequest) -> Result<()> {
        let command = Self::install_argv(request)?;
        let package = label(request);
        let action = format!("installing {package}");
        let task = RootTask {
            manager: ManagerKind::Dnf,
            package: &package,
            action: &action,
        };
        let output = self
            .runner
            .run_locked(&command, &task, &[], &self.locks())
            .await?;
        if output.success() {
            return Ok(());
        }
        let install_failed = || {
            failed(
                ManagerKind::Dnf,
                &package,
                self.runner.display(&command),
                &output,
                Some(self.runner.display(&command)),
            )
        };
        // What the repositories offer, when dnf can say; otherwise dnf's own failure.
        let Ok(versions) = self.available(request).await else {
            return Err(install_failed());
        };
        let offered = match &request.version {
            Some(version) => versions.iter().any(|v| same_version(version.as_str(), v)),
            None => !versions.is_empty(),
        };
        if !offered {
            let message = match &request.version {
                Some(version) if !versions.is_empty() => format!(
                    "version {version} was not found; the repositories offer {}",
                    version_list(&versions)
                ),
                _ => format!("no enabled repository offers {}", request.name),
            };
            let hint = if versions.is_empty() {
                "check provisioning.package.name and provisioning.package.repo".to_string()
            } else {
                format!(
                    "set provisioning.package.version to one of: {}",
                    version_list(&versions)
                )
            };
            let dnf_said = match said(&output) {
                text if text.is_empty() => String::new(),
                text => format!("; dnf said{text}"),
            };
            return Err(Error::Package {
                manager: ManagerKind::Dnf.to_string(),
                package,
                message: format!("{message}{dnf_said}"),
                hint: Some(hint),
            });
        }
        Err(install_failed())
    }
}

#[async_trait]
impl PackageManager for Dnf {
    fn kind(&self) -> ManagerKind {
        ManagerKind::Dnf
    }

    async fn install_command(&self, requests: &[PackageRequest]) -> String {
        requests
            .iter()
            .map(|request| match Self::install_argv(request) {
                Ok(command) => self.runner.display(&command),
                Err(_) => {
                    let sudo = if self.runner.privilege().root {
                        ""
                    } else {
                        "sudo "
                    };
                    format!("{sudo}dnf install -y {}", shell_quote(&spec(request)))
                }
            })
            .collect::<Vec<_>>()
            .join(" && ")
    }

    async fn query(&self, name: &PackageName) -> Result<Option<InstalledPackage>> {
        let command = parsed(
            "rpm",
            vec![
                "-q".to_string(),
                "--qf".to_string(),
                "%{EPOCH}:%{VERSION}-%{RELEASE}\n".to_string(),
                name.to_string(),
            ],
        );
        let output = self.shell.run(&command).await?;
        if !output.success() {
            if output.stdout.contains("is not installed")
                || output.tail.contains("is not installed")
            {
                return Ok(None);
            }
            return Err(failed(
                ManagerKind::Dnf,
                name.as_str(),
                command.display(),
                &output,
                None,
            ));
        }
        Ok(
            parse_rpm_query(output.whole_stdout(&command.display())?).map(|version| {
                InstalledPackage {
                    name: name.to_string(),
                    version,
                    repository: None,
                }
            }),
        )
    }

    async fn available(&self, request: &PackageRequest) -> Result<Vec<String>> {
        let mut args = vec![
            "list".to_string(),
            "--showduplicates".to_string(),
            "--available".to_string(),
            "-q".to_string(),
        ];
        args.extend(repo_options(
            request.repository.as_ref(),
            request.name.as_str(),
        )?);
        args.push(request.name.to_string());
        let command = parsed("dnf", args);
        let output = self.shell.run(&command).await?;
        if !output.success() {
            // `dnf list` exits 1 when nothing matches.
            if output.tail.contains("No matching Packages") {
                return Ok(Vec::new());
            }
            return Err(failed(
                ManagerKind::Dnf,
                &label(request),
                command.display(),
                &output,
                None,
            ));
        }
        Ok(parse_dnf_list(
            output.whole_stdout(&command.display())?,
            request.name.as_str(),
        ))
    }

    async fn install(&self, requests: &[PackageRequest]) -> Result<Vec<InstalledPackage>> {
        for request in requests {
            repo_options(request.repository.as_ref(), request.name.as_str())?;
        }
        for request in requests {
            self.install_one(request).await?;
        }
        verify_installed(self, requests, same_version).await
    }

    async fn files(&self, name: &PackageName) -> Result<Vec<PathBuf>> {
        let command = parsed("rpm", vec!["-ql".to_string(), name.to_string()]);
        let output = self.shell.run(&command).await?;
        if !output.success() {
            return Err(Error::Package {
                manager: ManagerKind::Dnf.to_string(),
                package: name.to_string(),
                message: format!("cannot list its files: {}", output.tail.trim()),
                hint: None,
            });
        }
        Ok(absolute_lines(output.whole_stdout(&command.display())?))
    }

    async fn remove(&self, name: &PackageName) -> Result<()> {
        let command = parsed(
            "dnf",
            vec!["remove".to_string(), "-y".to_string(), name.to_string()],
        );
        remove_as_root(
            &self.runner,
            ManagerKind::Dnf,
            &command,
            name,
            &self.locks(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpm_versions_drop_an_empty_epoch() {
        assert_eq!(
            parse_rpm_query("(none):b6000-1.fc42\n").as_deref(),
            Some("b6000-1.fc42")
        );
        assert_eq!(parse_rpm_query("1:2.0-3\n").as_deref(), Some("1:2.0-3"));
        assert_eq!(parse_rpm_query("package x is not installed\n"), None);
        assert!(same_version("1.0-1", "0:1.0-1"));
        assert!(!same_version("1.0-1", "1:1.0-1"));
    }

    #[test]
    fn dnf_list_lines_are_parsed() {
        let text = "Available Packages\n\
                    llama-cpp.x86_64        b5000-1.fc42        fedora\n\
                    llama-cpp.x86_64        b6000-1.fc42        updates\n\
                    llama-cpp-devel.x86_64  b6000-1.fc42        updates\n";
        assert_eq!(
            parse_dnf_list(text, "llama-cpp"),
            vec!["b5000-1.fc42", "b6000-1.fc42"]
        );
    }
}
