//! [`Apt`]: the [`PackageManager`] port over `apt-get`, `apt-cache` and `dpkg-query`.
//!
//! A repository that is a `deb …` source line is used alone, in isolation: the line is written
//! to `<state_dir>/<8 hex of its BLAKE3>/sources.list` and every apt call gets
//! `-o Dir::Etc::SourceList=<file> -o Dir::Etc::SourceParts=/nonexistent
//! -o Dir::State::Lists=<dir>/lists` (plus empty `Dir::Cache::pkgcache`/`srcpkgcache`, so that the
//! system's package caches are neither used nor overwritten). Only that repository (and what is
//! installed already) can satisfy the request, dependencies included. Any other repository value
//! is a target release (`-t bookworm-backports`). Removals use an empty source list in the same
//! way: they need only the installed packages, and skip reading the system's package lists.
//!
//! Locks: before `apt-get update` the lists lock (`/var/lib/apt/lists/lock`, or the isolated
//! lists' own), before an install dpkg's `lock-frontend` and `lock` and the archives lock
//! (`/var/cache/apt/archives/lock`), before a removal dpkg's two, are waited for, naming the
//! holder ([`crate::locks`]); apt itself also waits for dpkg's locks as long
//! (`-o DPkg::Lock::Timeout`). apt's own failure messages are passed on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use provisioner_core::{
    CommandSpec, Error, InstalledPackage, ManagerKind, PackageManager, PackageName, PackageRepo,
    PackageRequest, Progress, Result, Shell, redact_urls, shell_quote,
};

use crate::common::{
    absolute_lines, exact, failed, label, parsed, push_unique, remove_as_root, said,
    verify_installed, version_list,
};
use crate::locks::{LockSettings, ManagerLock};
use crate::privilege::{Privilege, RootRunner, RootTask};

/// Where [`Apt`] keeps its state, and how it waits for apt's and dpkg's locks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptOptions {
    /// Isolated source lists and their package lists live under here.
    pub state_dir: PathBuf,
    /// Where the system's lock files are and how long they are waited for.
    pub locks: LockSettings,
}

impl AptOptions {
    /// State under `state_dir`, the system's locks waited for as long as
    /// [`LockSettings::default`] says.
    pub fn new(state_dir: PathBuf) -> Self {
        AptOptions {
            state_dir,
            locks: LockSettings::default(),
        }
    }
}

/// apt (Debian, Ubuntu): installs with `apt-get`, queries with `dpkg-query`, lists versions with
/// `apt-cache madison`. See the module documentation for repositories.
#[derive(Clone)]
pub struct Apt {
    shell: Arc<dyn Shell>,
    runner: RootRunner,
    options: AptOptions,
}

impl std::fmt::Debug for Apt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apt")
            .field("options", &self.options)
            .field("privilege", &self.runner.privilege())
            .finish_non_exhaustive()
    }
}

/// Where packages come from for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// The system's configured sources.
    System,
    /// A target release (`-t`).
    Release(String),
    /// One source line, used alone.
    Isolated {
        line: String,
        list: PathBuf,
        lists: PathBuf,
    },
    /// No repository at all: installed packages only (removals need nothing else, and skip
    /// reading the system's package lists).
    InstalledOnly { list: PathBuf, lists: PathBuf },
}

impl Source {
    fn options(&self) -> Vec<String> {
        match self {
            Source::System => Vec::new(),
            Source::Release(release) => vec!["-t".to_string(), release.clone()],
            Source::Isolated { list, lists, .. } | Source::InstalledOnly { list, lists } => [
                format!("Dir::Etc::SourceList={}", list.display()),
                "Dir::Etc::SourceParts=/nonexistent".to_string(),
                format!("Dir::State::Lists={}", lists.display()),
                "Dir::Cache::pkgcache=".to_string(),
                "Dir::Cache::srcpkgcache=".to_string(),
            ]
            .into_iter()
            .flat_map(|option| ["-o".to_string(), option])
            .collect(),
        }
    }
}

/// The 8 hex digits naming an isolated source line's directory.
fn line_id(line: &str) -> String {
    blake3::hash(line.as_bytes()).to_hex()[..8].to_string()
}

/// Parses `dpkg-query -W -f '${db:Status-Abbrev}|${Version}\n'` output: installed only when the
/// status starts with `ii`.
fn parse_status(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|line| {
        let (status, version) = line.split_once('|')?;
        (status.trim_start().starts_with("ii") && !version.trim().is_empty())
            .then(|| version.trim().to_string())
    })
}

/// Parses `apt-cache madison` lines (`name | version | source`) for `name`'s binary packages.
fn parse_madison(stdout: &str, name: &str) -> Vec<String> {
    let mut versions = Vec::new();
    for line in stdout.lines() {
        let parts: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [package, version, source, ..] = parts.as_slice()
            && *package == name
            && !source.ends_with("Sources")
            && !version.is_empty()
        {
            push_unique(&mut versions, version.to_string());
        }
    }
    versions
}

impl Apt {
    /// apt over the Shell port; commands needing root run as `privilege` allows.
    pub fn new(
        shell: Arc<dyn Shell>,
        progress: Arc<dyn Progress>,
        privilege: Privilege,
        options: AptOptions,
    ) -> Self {
        Apt {
            runner: RootRunner::new(shell.clone(), progress, privilege)
                .with_locks(options.locks.clone()),
            shell,
            options,
        }
    }

    fn package_error(&self, package: String, message: String, hint: Option<String>) -> Error {
        Error::Package {
            manager: ManagerKind::Apt.to_string(),
            package,
            message,
            hint,
        }
    }

    /// The source of a repository value, without touching the disk.
    fn source_of(&self, repository: Option<&PackageRepo>, package: &str) -> Result<Source> {
        match repository {
            None => Ok(Source::System),
            Some(PackageRepo::DebLine { line, .. }) => {
                let dir = self.options.state_dir.join(line_id(line));
                Ok(Source::Isolated {
                    list: dir.join("sources.list"),
                    lists: dir.join("lists"),
                    line: line.clone(),
                })
            }
            Some(PackageRepo::Name(release)) => Ok(Source::Release(release.clone())),
            Some(PackageRepo::Url(url)) => Err(self.package_error(
                package.to_string(),
                format!(
                    "repository {url} is a bare URL; apt takes one `deb …` source line or a release name"
                ),
                Some(format!(
                    "set provisioning.package.repo to a source line such as `deb [trusted=yes] {url} ./`"
                )),
            )),
        }
    }

    /// The source of a repository value, with an isolated list written out.
    fn prepare(&self, repository: Option<&PackageRepo>, package: &str) -> Result<Source> {
        let source = self.source_of(repository, package)?;
        if let Source::Isolated { line, list, lists } = &source {
            write_list(list, lists, &format!("{line}\n"))?;
        }
        Ok(source)
    }

    /// An empty source list (installed packages only), written out.
    fn installed_only(&self) -> Result<Source> {
        let dir = self.options.state_dir.join("installed-only");
        let list = dir.join("sources.list");
        let lists = dir.join("lists");
        write_list(&list, &lists, "")?;
        Ok(Source::InstalledOnly { list, lists })
    }

    /// The lists lock `apt-get update` takes for `source`.
    fn lists_lock(&self, source: &Source) -> Vec<ManagerLock> {
        vec![ManagerLock::lock(match source {
            Source::Isolated { lists, .. } | Source::InstalledOnly { lists, .. } => {
                lists.join("lock")
            }
            Source::System | Source::Release(_) => {
                self.options.locks.system("/var/lib/apt/lists/lock")
            }
        })]
    }

    /// dpkg's locks (front end first, as apt takes them), and the archives lock when packages
    /// are downloaded.
    fn dpkg_locks(&self, download: bool) -> Vec<ManagerLock> {
        let locks = &self.options.locks;
        let mut all = vec![
            ManagerLock::lock(locks.system("/var/lib/dpkg/lock-frontend")),
            ManagerLock::lock(locks.system("/var/lib/dpkg/lock")),
        ];
        if download {
            all.push(ManagerLock::lock(
                locks.system("/var/cache/apt/archives/lock"),
            ));
        }
        all
    }

    /// `-o DPkg::Lock::Timeout=<seconds>`: apt waits for dpkg's locks as long as we do.
    fn dpkg_timeout(&self) -> String {
        format!(
            "DPkg::Lock::Timeout={}",
            self.options.locks.timeout.as_secs()
        )
    }

    fn update_command(source: &Source) -> CommandSpec {
        let mut args = vec!["update".to_string()];
        args.extend(source.options());
        parsed("apt-get", args).env("DEBIAN_FRONTEND", "noninteractive")
    }

    fn install_argv(&self, source: &Source, requests: &[&PackageRequest]) -> CommandSpec {
        let mut args: Vec<String> = [
            "install",
            "-y",
            "--no-install-recommends",
            "--allow-downgrades",
            "-o",
        ]
        .into_iter()
        .map(str::to_string)
        .collect();
        args.push(self.dpkg_timeout());
        args.extend(source.options());
        args.extend(requests.iter().map(|request| label(request)));
        parsed("apt-get", args).env("DEBIAN_FRONTEND", "noninteractive")
    }

    /// Installs requests that share one repository.
    async fn install_group(&self, requests: &[&PackageRequest]) -> Result<()> {
        let Some(first) = requests.first() else {
            return Ok(());
        };
        let packages = requests
            .iter()
            .map(|request| label(request))
            .collect::<Vec<_>>()
            .join(" ");
        let action = format!("installing {packages}");
        let task = RootTask {
            manager: ManagerKind::Apt,
            package: &packages,
            action: &action,
        };
        let source = self.prepare(first.repository.as_ref(), first.name.as_str())?;
        let install = self.install_argv(&source, requests);
        let mut updated = false;
        if matches!(source, Source::Isolated { .. }) {
            self.update(&source, &task, &[&install]).await?;
            updated = true;
        }
        loop {
            let output = self
                .runner
                .run_locked(&install, &task, &[], &self.dpkg_locks(true))
                .await?;
            if output.success() {
                return Ok(());
            }
            let install_failed = || {
                failed(
                    ManagerKind::Apt,
                    &packages,
                    self.runner.display(&install),
                    &output,
                    Some(self.runner.display(&install)),
                )
            };
            // Exit 100 covers every apt failure; name what the repositories offer when a
            // request is not among it (with apt's own words), else report apt's failure.
            let Ok(missing) = self.missing(requests).await else {
                return Err(install_failed());
            };
            let Some((request, versions)) = missing else {
                return Err(install_failed());
            };
            if source == Source::System && !updated {
                updated = true;
                // The lists may be old (or missing on a fresh host): read them again. When that
                // fails, apt's words say why (a lock, the network), not a guess.
                if let Err(error) = self.update(&source, &task, &[&install]).await {
                    return Err(self.update_failed(request, error));
                }
                continue;
            }
            return Err(self.not_offered(request, &versions, &source, &output));
        }
    }

    /// The error when the lists were read again for `request` and that failed: apt's failure,
    /// with what it was for.
    fn update_failed(&self, request: &PackageRequest, error: Error) -> Error {
        match error {
            Error::Package {
                manager,
                package: _,
                message,
                hint,
            } => Error::Package {
                manager,
                package: label(request),
                message: format!(
                    "apt's package lists do not offer {} and reading them again failed: {message}",
                    label(request)
                ),
                hint,
            },
            other => other,
        }
    }

    async fn update(
        &self,
        source: &Source,
        task: &RootTask<'_>,
        then: &[&CommandSpec],
    ) -> Result<()> {
        let update = Self::update_command(source);
        let output = self
            .runner
            .run_locked(&update, task, then, &self.lists_lock(source))
            .await?;
        if output.success() {
            return Ok(());
        }
        Err(failed(
            ManagerKind::Apt,
            task.package,
            self.runner.display(&update),
            &output,
            Some(match source {
                Source::Isolated { .. } => {
                    "check provisioning.package.repo: apt could not read the repository".to_string()
                }
                _ => self.runner.display(&update),
            }),
        ))
    }

    /// The first request the repositories do not offer (at its pinned version), with what they
    /// do offer.
    async fn missing<'a>(
        &self,
        requests: &[&'a PackageRequest],
    ) -> Result<Option<(&'a PackageRequest, Vec<String>)>> {
        for request in requests {
            let versions = self.available(request).await?;
            let offered = match &request.version {
                Some(version) => versions.iter().any(|v| v == version.as_str()),
                None => !versions.is_empty(),
            };
            if !offered {
                return Ok(Some((request, versions)));
            }
        }
        Ok(None)
    }

    fn not_offered(
        &self,
        request: &PackageRequest,
        versions: &[String],
        source: &Source,
        output: &provisioner_core::CommandOutput,
    ) -> Error {
        let apt_said = match said(output) {
            text if text.is_empty() => String::new(),
            text => format!("; apt-get said{text}"),
        };
        let from = match source {
            Source::System => "the configured apt sources".to_string(),
            Source::Release(release) => format!("release {release}"),
            Source::Isolated { line, .. } => format!("`{}`", redact_urls(line)),
            Source::InstalledOnly { .. } => "no repository".to_string(),
        };
        if versions.is_empty() {
            let hint = match source {
                Source::System => self
                    .runner
                    .display(&parsed("apt-get", vec!["update".to_string()])),
                _ => "check provisioning.package.repo and provisioning.package.name".to_string(),
            };
            return self.package_error(
                label(request),
                format!(
                    "no configured repository offers {} ({from}){apt_said}",
                    request.name
                ),
                Some(hint),
            );
        }
        self.package_error(
            label(request),
            format!(
                "version {} was not found; {from} offers {}{apt_said}",
                request.version.as_ref().map_or("(any)", |v| v.as_str()),
                version_list(versions)
            ),
            Some(format!(
                "set provisioning.package.version to one of: {}",
                version_list(versions)
            )),
        )
    }

    /// What a user types for requests from one source.
    fn display_group(&self, requests: &[&PackageRequest]) -> String {
        let Some(first) = requests.first() else {
            return String::new();
        };
        let sudo = if self.runner.privilege().root {
            ""
        } else {
            "sudo "
        };
        let pinned = requests.iter().any(|request| request.version.is_some());
        let mut install = format!("{sudo}apt-get install -y");
        if pinned {
            install.push_str(" --allow-downgrades");
        }
        let packages = requests
            .iter()
            .map(|request| shell_quote(&label(request)))
            .collect::<Vec<_>>()
            .join(" ");
        match self.source_of(first.repository.as_ref(), first.name.as_str()) {
            Ok(Source::Release(release)) => {
                format!("{install} -t {} {packages}", shell_quote(&release))
            }
            Ok(Source::Isolated { line, .. }) => {
                let file = "/etc/apt/sources.list.d/engine-provisioner.list";
                let write = if sudo.is_empty() {
                    format!("> {file}")
                } else {
                    format!("| sudo tee {file}")
                };
                format!(
                    "echo {} {write} && {sudo}apt-get update && {install} {packages}",
                    shell_quote(&redact_urls(&line))
                )
            }
            _ => format!("{install} {packages}"),
        }
    }
}

/// Writes a source list (when it changed) and creates its package-list directory.
fn write_list(list: &Path, lists: &Path, text: &str) -> Result<()> {
    let partial = lists.join("partial");
    std::fs::create_dir_all(&partial).map_err(|e| Error::io("create", &partial, e))?;
    if adapters_host::read_capped(list, adapters_host::read::MAX_HOST_FILE)
        .ok()
        .as_deref()
        != Some(text)
    {
        write_file(list, text)?;
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    let temporary = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&temporary, text).map_err(|e| Error::io("write", &temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        Error::io("rename", &temporary, e)
    })
}

/// Groups requests by repository, keeping their order.
fn by_repository(requests: &[PackageRequest]) -> Vec<Vec<&PackageRequest>> {
    let mut groups: Vec<Vec<&PackageRequest>> = Vec::new();
    for request in requests {
        match groups
            .iter_mut()
            .find(|group| group[0].repository == request.repository)
        {
            Some(group) => group.push(request),
            None => groups.push(vec![request]),
        }
    }
    groups
}

#[async_trait]
impl PackageManager for Apt {
    fn kind(&self) -> ManagerKind {
        ManagerKind::Apt
    }

    async fn install_command(&self, requests: &[PackageRequest]) -> String {
        by_repository(requests)
            .iter()
            .map(|group| self.display_group(group))
            .collect::<Vec<_>>()
            .join(" && ")
    }

    async fn query(&self, name: &PackageName) -> Result<Option<InstalledPackage>> {
        let command = parsed(
            "dpkg-query",
            vec![
                "-W".to_string(),
                "-f".to_string(),
                "${db:Status-Abbrev}|${Version}\n".to_string(),
                name.to_string(),
            ],
        );
        let output = self.shell.run(&command).await?;
        if !output.success() {
            if output.tail.contains("no packages found") {
                return Ok(None);
            }
            return Err(failed(
                ManagerKind::Apt,
                name.as_str(),
                command.display(),
                &output,
                None,
            ));
        }
        Ok(
            parse_status(output.whole_stdout(&command.display())?).map(|version| {
                InstalledPackage {
                    name: name.to_string(),
                    version,
                    repository: None,
                }
            }),
        )
    }

    async fn available(&self, request: &PackageRequest) -> Result<Vec<String>> {
        let source = self.prepare(request.repository.as_ref(), request.name.as_str())?;
        let mut args = vec!["madison".to_string()];
        if let Source::Isolated { .. } = source {
            args.extend(source.options());
        }
        args.push(request.name.to_string());
        let command = parsed("apt-cache", args);
        let output = self.shell.run(&command).await?;
        if !output.success() {
            return Err(failed(
                ManagerKind::Apt,
                &label(request),
                command.display(),
                &output,
                None,
            ));
        }
        Ok(parse_madison(
            output.whole_stdout(&command.display())?,
            request.name.as_str(),
        ))
    }

    async fn install(&self, requests: &[PackageRequest]) -> Result<Vec<InstalledPackage>> {
        for request in requests {
            self.source_of(request.repository.as_ref(), request.name.as_str())?;
        }
        for group in by_repository(requests) {
            self.install_group(&group).await?;
        }
        verify_installed(self, requests, exact).await
    }

    async fn files(&self, name: &PackageName) -> Result<Vec<PathBuf>> {
        let command = parsed("dpkg-query", vec!["-L".to_string(), name.to_string()]);
        let output = self.shell.run(&command).await?;
        if !output.success() {
            return Err(self.package_error(
                name.to_string(),
                format!("cannot list its files: {}", output.tail.trim()),
                None,
            ));
        }
        Ok(absolute_lines(output.whole_stdout(&command.display())?))
    }

    async fn remove(&self, name: &PackageName) -> Result<()> {
        let mut args = vec![
            "remove".to_string(),
            "-y".to_string(),
            "-o".to_string(),
            self.dpkg_timeout(),
        ];
        args.extend(self.installed_only()?.options());
        args.push(name.to_string());
        let command = parsed("apt-get", args).env("DEBIAN_FRONTEND", "noninteractive");
        remove_as_root(
            &self.runner,
            ManagerKind::Apt,
            &command,
            name,
            &self.dpkg_locks(false),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_needs_ii() {
        assert_eq!(parse_status("ii |1.0.0\n").as_deref(), Some("1.0.0"));
        assert_eq!(parse_status("rc |1.0.0\n"), None);
        assert_eq!(parse_status("un |\n"), None);
        assert_eq!(
            parse_status("rc |0.9\nii |1:2.0~rc1-2\n").as_deref(),
            Some("1:2.0~rc1-2")
        );
    }

    #[test]
    fn madison_lines_are_parsed_per_package() {
        let text = "ep-test-hello |      1.1.0 | file:/tmp/r ./ Packages\n\
                    ep-test-hello |      1.0.0 | file:/tmp/r ./ Packages\n\
                    ep-test-hello |      1.0.0 | http://deb.debian.org/debian bookworm/main Sources\n\
                    other |      2 | file:/tmp/r ./ Packages\n";
        assert_eq!(parse_madison(text, "ep-test-hello"), vec!["1.1.0", "1.0.0"]);
    }
}
