//! [`Pacman`]: the [`PackageManager`] port over `pacman` (Arch and derivatives).
//!
//! Repositories: a repository name (`extra`) installs `extra/NAME`; the URL of a `<name>.db`
//! (`file://` or `https://`) gets a generated `pacman.conf` under the state directory holding
//! that repository alone (its `[options]` copied from the base config), which is synced with
//! `-Sy` and used for every command of that install.
//!
//! Pinning: a repository database holds one version per package. When it holds the pinned one,
//! `pacman -S --needed repo/NAME` installs it; otherwise a package file of exactly that version is
//! looked for (next to a `file://` database, or in the package cache for system repositories)
//! and installed with `pacman -U`; otherwise the error names what exists and the Arch Linux
//! Archive URL to install from.
//!
//! Lock: pacman's `db.lck` in its database directory (`--dbpath`, the config's `DBPath`, else
//! `var/lib/pacman` under the root) is a file whose existence is the lock; before a command that
//! changes the system it is waited for, naming the process that has it open, and a stale one
//! (no process has it open) is reported at once with the command that removes it
//! ([`crate::locks`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use provisioner_core::{
    CommandSpec, Error, InstalledPackage, ManagerKind, PackageManager, PackageName, PackageRepo,
    PackageRequest, Progress, Result, SafeUrl, Shell, redact_urls, shell_quote,
};

use crate::common::{
    exact, failed, field_values, label, parsed, push_unique, remove_as_root, verify_installed,
    version_list,
};
use crate::locks::{LockSettings, ManagerLock};
use crate::privilege::{Privilege, RootRunner, RootTask};

/// Package file extensions pacman installs, most common first.
const PACKAGE_EXTENSIONS: [&str; 5] = [
    ".pkg.tar.zst",
    ".pkg.tar.xz",
    ".pkg.tar.gz",
    ".pkg.tar.bz2",
    ".pkg.tar",
];

/// `[options]` keys copied from the base config into a generated one.
const COPIED_OPTIONS: [&str; 8] = [
    "RootDir",
    "DBPath",
    "CacheDir",
    "LogFile",
    "GPGDir",
    "HookDir",
    "Architecture",
    "SigLevel",
];

/// Where pacman works: an alternative root and database, a base config, the directory for
/// generated configs, and how its lock is waited for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacmanOptions {
    /// `--root`: install into this directory instead of `/`.
    pub root: Option<PathBuf>,
    /// `--dbpath`: the package database.
    pub dbpath: Option<PathBuf>,
    /// `--config`: the base configuration (default: pacman's own, `/etc/pacman.conf`).
    pub config: Option<PathBuf>,
    /// Generated configurations for `<name>.db` URLs live under here.
    pub state_dir: PathBuf,
    /// Where the system's database (and so its lock) is when no root, dbpath or config names
    /// one, and how long the lock is waited for.
    pub locks: LockSettings,
}

/// pacman: `-S`/`-U` to install, `-Q`/`-Ql`/`-Si` to query. See the module documentation.
#[derive(Clone)]
pub struct Pacman {
    shell: Arc<dyn Shell>,
    runner: RootRunner,
    options: PacmanOptions,
}

impl std::fmt::Debug for Pacman {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacman")
            .field("options", &self.options)
            .field("privilege", &self.runner.privilege())
            .finish_non_exhaustive()
    }
}

/// A repository given by the URL of its database.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UrlRepo {
    /// Repository name (the database's file name without `.db`).
    name: String,
    /// The URL as configured.
    url: SafeUrl,
    /// The directory URL (`Server =`).
    server: String,
    /// The local directory of a `file://` repository.
    dir: Option<PathBuf>,
}

/// Where a request's package comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Repo {
    /// Whichever configured repository has it.
    Any,
    /// A configured repository, by name.
    Named(String),
    /// A repository given by its database URL.
    Url(UrlRepo),
}

/// How one pinned request gets installed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// `pacman -S --needed TARGET`.
    Sync(String),
    /// `pacman -U FILE`: a package file of exactly the pinned version.
    File(PathBuf),
    /// Nowhere: the versions that exist instead.
    Unavailable { pin: String, versions: Vec<String> },
}

fn plain_repo_name(name: &str) -> bool {
    !name.is_empty()
        && name != "local"
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn parse_repo(repository: Option<&PackageRepo>, package: &str) -> Result<Repo> {
    let invalid = |message: String| Error::Package {
        manager: ManagerKind::Pacman.to_string(),
        package: package.to_string(),
        message,
        hint: Some("check provisioning.package.repo".to_string()),
    };
    let url = match repository {
        None => return Ok(Repo::Any),
        Some(PackageRepo::Name(name)) if plain_repo_name(name) => {
            return Ok(Repo::Named(name.clone()));
        }
        Some(PackageRepo::Url(url)) => url,
        Some(other) => {
            return Err(invalid(format!(
                "repository `{other}` is neither a repository name nor the URL of a `<name>.db` file"
            )));
        }
    };
    let scheme = url.scheme();
    if !matches!(scheme.as_str(), "file" | "http" | "https") {
        return Err(invalid(format!(
            "repository URL `{url}` must be file://, http:// or https://"
        )));
    }
    let file = url.file_name().unwrap_or_default();
    let name = file.strip_suffix(".db").unwrap_or_default();
    let Some(server) = url.parent().filter(|_| plain_repo_name(name)) else {
        return Err(invalid(format!(
            "repository URL `{url}` must end in `<name>.db` with a plain repository name"
        )));
    };
    let dir = if scheme == "file" {
        if url.host().is_some() || !url.path().starts_with('/') {
            return Err(invalid(format!(
                "file URL `{url}` must be absolute (file:///path/{file})"
            )));
        }
        let local = server.path();
        Some(PathBuf::from(if local.is_empty() { "/" } else { local }))
    } else {
        None
    };
    Ok(Repo::Url(UrlRepo {
        name: name.to_string(),
        url: url.clone(),
        server: server.expose().to_string(),
        dir,
    }))
}

/// Parses a package file name `NAME-VERSION-ARCH.pkg.tar.*` for `name`; the version is
/// `[epoch:]pkgver-pkgrel` (exactly one `-`).
fn package_file_version(file: &str, name: &str) -> Option<String> {
    let rest = file.strip_prefix(name)?.strip_prefix('-')?;
    let body = PACKAGE_EXTENSIONS
        .iter()
        .find_map(|extension| rest.strip_suffix(extension))?;
    let (version, arch) = body.rsplit_once('-')?;
    let one_dash = version.matches('-').count() == 1;
    (one_dash && !arch.is_empty() && !version.starts_with('-') && !version.ends_with('-'))
        .then(|| version.to_string())
}

/// Package files of `name` in `dir`, with their versions, sorted by file name.
fn package_files(dir: &Path, name: &str) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let file = entry.file_name().into_string().ok()?;
            let version = package_file_version(&file, name)?;
            entry
                .file_type()
                .ok()
                .filter(|t| t.is_file())
                .map(|_| (version, entry.path()))
        })
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found
}

/// `[options]` lines of a config for the keys in [`COPIED_OPTIONS`], in order.
fn copied_options(base: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut copied = Vec::new();
    for line in base.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        if section != "options" || line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let key = key.trim();
            if COPIED_OPTIONS.contains(&key) {
                copied.push((key.to_string(), value.trim().to_string()));
            }
        }
    }
    copied
}

/// The text of a generated config: `[options]` from the base, the repository alone.
fn generated_config_text(base: Option<&str>, repo: &UrlRepo, root: Option<&Path>) -> String {
    let mut options = base.map(copied_options).unwrap_or_default();
    let has = |options: &[(String, String)], key: &str| options.iter().any(|(k, _)| k == key);
    if !has(&options, "Architecture") {
        options.push(("Architecture".to_string(), "auto".to_string()));
    }
    if let Some(root) = root
        && !has(&options, "CacheDir")
    {
        options.push((
            "CacheDir".to_string(),
            format!("{}/", root.join("var/cache/pacman/pkg").display()),
        ));
    }
    if repo.dir.is_some() {
        // A local directory the user pointed at: no signatures to check.
        options.retain(|(key, _)| key != "SigLevel");
        options.push(("SigLevel".to_string(), "Never".to_string()));
    }
    let mut text = format!(
        "# Generated by engine-provisioner for {}\n[options]\n",
        repo.url
    );
    for (key, value) in options {
        text.push_str(&format!("{key} = {value}\n"));
    }
    text.push_str(&format!("\n[{}]\nServer = {}\n", repo.name, repo.server));
    text
}

/// `pacman -Q NAME` under `args`: the installed version, `None` when not installed.
pub(crate) async fn query_installed(
    shell: &dyn Shell,
    args: Vec<String>,
    name: &str,
) -> Result<Option<InstalledPackage>> {
    let mut argv = args;
    argv.push("-Q".to_string());
    argv.push(name.to_string());
    let command = parsed("pacman", argv);
    let output = shell.run(&command).await?;
    if !output.success() {
        if output.tail.contains("was not found") {
            return Ok(None);
        }
        return Err(failed(
            ManagerKind::Pacman,
            name,
            command.display(),
            &output,
            None,
        ));
    }
    let stdout = output.whole_stdout(&command.display())?;
    Ok(stdout.lines().find_map(|line| {
        let (found, version) = line.trim().split_once(' ')?;
        (found == name).then(|| InstalledPackage {
            name: name.to_string(),
            version: version.trim().to_string(),
            repository: None,
        })
    }))
}

/// `pacman -Ql NAME` under `args`: the listed paths, as pacman prints them.
pub(crate) async fn list_files(
    shell: &dyn Shell,
    manager: ManagerKind,
    args: Vec<String>,
    name: &str,
) -> Result<Vec<PathBuf>> {
    let mut argv = args;
    argv.push("-Ql".to_string());
    argv.push(name.to_string());
    let command = parsed("pacman", argv);
    let output = shell.run(&command).await?;
    if !output.success() {
        return Err(Error::Package {
            manager: manager.to_string(),
            package: name.to_string(),
            message: format!("cannot list its files: {}", output.tail.trim()),
            hint: None,
        });
    }
    Ok(output
        .whole_stdout(&command.display())?
        .lines()
        .filter_map(|line| {
            let (owner, path) = line.split_once(' ')?;
            (owner == name && path.starts_with('/')).then(|| PathBuf::from(path))
        })
        .collect())
}

/// `pacman -R --noconfirm NAME` as root, once `lock` is free.
pub(crate) async fn remove_package(
    runner: &RootRunner,
    manager: ManagerKind,
    args: Vec<String>,
    name: &PackageName,
    lock: ManagerLock,
) -> Result<()> {
    let mut argv = args;
    argv.extend([
        "-R".to_string(),
        "--noconfirm".to_string(),
        name.to_string(),
    ]);
    let command = parsed("pacman", argv);
    remove_as_root(runner, manager, &command, name, &[lock]).await
}

impl Pacman {
    /// pacman over the Shell port; commands needing root run as `privilege` allows.
    pub fn new(
        shell: Arc<dyn Shell>,
        progress: Arc<dyn Progress>,
        privilege: Privilege,
        options: PacmanOptions,
    ) -> Self {
        Pacman {
            runner: RootRunner::new(shell.clone(), progress, privilege)
                .with_locks(options.locks.clone()),
            shell,
            options,
        }
    }

    /// pacman's lock: `db.lck` in the database directory this instance uses.
    pub fn db_lock(&self) -> ManagerLock {
        let configured = || {
            let text = adapters_host::read_capped(
                self.options.config.as_ref()?,
                adapters_host::read::MAX_HOST_FILE,
            )
            .ok()?;
            copied_options(&text)
                .into_iter()
                .find(|(key, _)| key == "DBPath")
                .map(|(_, value)| PathBuf::from(value))
        };
        let dbpath = self
            .options
            .dbpath
            .clone()
            .or_else(configured)
            .unwrap_or_else(|| match &self.options.root {
                Some(root) => root.join("var/lib/pacman"),
                None => self.options.locks.system("/var/lib/pacman"),
            });
        ManagerLock::exists(dbpath.join("db.lck"))
    }

    /// Where a path pacman lists is on this host: under the alternative root, when one is set
    /// (pacman 6 prints root-prefixed paths; a bare `/usr/…` is mapped under the root).
    pub fn host_path(&self, listed: &Path) -> PathBuf {
        match &self.options.root {
            Some(root) if !listed.starts_with(root) => {
                root.join(listed.strip_prefix("/").unwrap_or(listed))
            }
            _ => listed.to_path_buf(),
        }
    }

    /// `--root`, `--dbpath` and `--config` (the given config, else the base one).
    fn args(&self, config: Option<&Path>) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(root) = &self.options.root {
            args.extend(["--root".to_string(), root.display().to_string()]);
        }
        if let Some(dbpath) = &self.options.dbpath {
            args.extend(["--dbpath".to_string(), dbpath.display().to_string()]);
        }
        if let Some(config) = config.or(self.options.config.as_deref()) {
            args.extend(["--config".to_string(), config.display().to_string()]);
        }
        args
    }

    fn package_error(&self, package: String, message: String, hint: Option<String>) -> Error {
        Error::Package {
            manager: ManagerKind::Pacman.to_string(),
            package,
            message,
            hint,
        }
    }

    /// Writes (when it changed) and returns the generated config for a URL repository.
    fn generated_config(&self, repo: &UrlRepo) -> Result<PathBuf> {
        let identity = format!(
            "{}\0{:?}\0{:?}\0{:?}",
            repo.url, self.options.config, self.options.root, self.options.dbpath
        );
        let dir = self
            .options
            .state_dir
            .join(&blake3::hash(identity.as_bytes()).to_hex()[..8]);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let base = match &self.options.config {
            Some(path) => Some(
                adapters_host::read_capped(path, adapters_host::read::MAX_HOST_FILE)
                    .map_err(|e| Error::io("read", path, e))?,
            ),
            None => None,
        };
        let text = generated_config_text(base.as_deref(), repo, self.options.root.as_deref());
        let path = dir.join("pacman.conf");
        if adapters_host::read_capped(&path, adapters_host::read::MAX_HOST_FILE)
            .ok()
            .as_deref()
            != Some(text.as_str())
        {
            let temporary = dir.join(format!(".pacman.conf.{}.tmp", std::process::id()));
            std::fs::write(&temporary, &text).map_err(|e| Error::io("write", &temporary, e))?;
            std::fs::rename(&temporary, &path).map_err(|e| Error::io("rename", &temporary, e))?;
        }
        Ok(path)
    }

    /// The package caches searched for older versions of system packages.
    fn cache_dirs(&self) -> Vec<PathBuf> {
        let base = self
            .options
            .config
            .as_ref()
            .and_then(|path| {
                adapters_host::read_capped(path, adapters_host::read::MAX_HOST_FILE).ok()
            })
            .map(|text| copied_options(&text))
            .unwrap_or_default();
        let mut dirs: Vec<PathBuf> = base
            .iter()
            .filter(|(key, _)| key == "CacheDir")
            .flat_map(|(_, value)| value.split_whitespace().map(PathBuf::from))
            .collect();
        if dirs.is_empty() {
            let root = self
                .options
                .root
                .clone()
                .unwrap_or_else(|| PathBuf::from("/"));
            dirs.push(root.join("var/cache/pacman/pkg"));
        }
        dirs
    }

    /// Package files of exactly `name`-`version` that `-U` can install.
    fn local_files(&self, repo: &Repo, name: &str) -> Vec<(String, PathBuf)> {
        match repo {
            Repo::Url(UrlRepo { dir: Some(dir), .. }) => package_files(dir, name),
            Repo::Url(_) => Vec::new(),
            Repo::Any | Repo::Named(_) => self
                .cache_dirs()
                .iter()
                .flat_map(|dir| package_files(dir, name))
                .collect(),
        }
    }

    /// `pacman -Si TARGET`: the repository and version the sync databases offer.
    async fn offered(
        &self,
        config: Option<&Path>,
        target: &str,
    ) -> Result<Option<(String, String)>> {
        let mut args = self.args(config);
        args.extend(["-Si".to_string(), target.to_string()]);
        let command = parsed("pacman", args);
        let output = self.shell.run(&command).await?;
        if !output.success() {
            if output.tail.contains("was not found") {
                return Ok(None);
            }
            return Err(failed(
                ManagerKind::Pacman,
                target,
                command.display(),
                &output,
                None,
            ));
        }
        let stdout = output.whole_stdout(&command.display())?;
        let repository = field_values(stdout, "Repository").into_iter().next();
        let version = field_values(stdout, "Version").into_iter().next();
        Ok(version.map(|version| (repository.unwrap_or_default(), version)))
    }

    fn target(repo: &Repo, name: &str) -> String {
        match repo {
            Repo::Any => name.to_string(),
            Repo::Named(repository) => format!("{repository}/{name}"),
            Repo::Url(url) => format!("{}/{name}", url.name),
        }
    }

    async fn run_root(
        &self,
        command: &CommandSpec,
        request: &PackageRequest,
        action: &str,
    ) -> Result<()> {
        let package = label(request);
        let task = RootTask {
            manager: ManagerKind::Pacman,
            package: &package,
            action,
        };
        let output = self
            .runner
            .run_locked(command, &task, &[], &[self.db_lock()])
            .await?;
        if output.success() {
            Ok(())
        } else {
            Err(failed(
                ManagerKind::Pacman,
                &package,
                self.runner.display(command),
                &output,
                Some(self.runner.display(command)),
            ))
        }
    }

    async fn install_one(&self, request: &PackageRequest, synced: &mut Vec<String>) -> Result<()> {
        let name = request.name.as_str();
        let repo = parse_repo(request.repository.as_ref(), name)?;
        let config = match &repo {
            Repo::Url(url) => Some(self.generated_config(url)?),
            _ => None,
        };
        let action = format!("installing {}", label(request));
        if let (Repo::Url(url), Some(config)) = (&repo, &config)
            && !synced.contains(&url.url.expose().to_string())
        {
            let mut args = self.args(Some(config));
            args.extend(["-Sy".to_string(), "--noconfirm".to_string()]);
            let sync = parsed("pacman", args);
            self.run_root(&sync, request, &action).await?;
            synced.push(url.url.expose().to_string());
        }
        let target = Self::target(&repo, name);
        let argv = match self
            .decide(request, &repo, config.as_deref(), &target)
            .await?
        {
            Decision::Sync(target) => self.install_argv(config.as_deref(), "-S", &target),
            Decision::File(file) => {
                self.install_argv(config.as_deref(), "-U", &file.display().to_string())
            }
            Decision::Unavailable { pin, versions } => {
                return Err(self.not_offered(request, &pin, &repo, &versions));
            }
        };
        self.run_root(&parsed("pacman", argv), request, &action)
            .await
    }

    /// `pacman [options] -S --noconfirm --needed TARGET` or `-U --noconfirm FILE`.
    fn install_argv(&self, config: Option<&Path>, operation: &str, target: &str) -> Vec<String> {
        let mut args = self.args(config);
        args.push(operation.to_string());
        args.push("--noconfirm".to_string());
        if operation == "-S" {
            args.push("--needed".to_string());
        }
        args.push(target.to_string());
        args
    }

    /// What installs the request: the sync databases when they offer the pinned version (or
    /// when nothing is pinned), else a package file of exactly that version from the package
    /// cache (or next to a `file://` database). Only reads (`pacman -Si`, the cache
    /// directory), so that a hint can say exactly what an install would run.
    async fn decide(
        &self,
        request: &PackageRequest,
        repo: &Repo,
        config: Option<&Path>,
        target: &str,
    ) -> Result<Decision> {
        let name = request.name.as_str();
        let Some(pin) = request.version.as_ref().map(|v| v.as_str()) else {
            return Ok(Decision::Sync(target.to_string()));
        };
        let offered = self.offered(config, target).await?;
        if let Some((repository, version)) = &offered
            && version.as_str() == pin
        {
            return Ok(Decision::Sync(
                if repository.is_empty() || *repo != Repo::Any {
                    target.to_string()
                } else {
                    format!("{repository}/{name}")
                },
            ));
        }
        let files = self.local_files(repo, name);
        if let Some((_, file)) = files.iter().find(|(version, _)| version.as_str() == pin) {
            return Ok(Decision::File(file.clone()));
        }
        let mut versions = Vec::new();
        if let Some((_, version)) = offered {
            push_unique(&mut versions, version);
        }
        for (version, _) in files {
            push_unique(&mut versions, version);
        }
        Ok(Decision::Unavailable {
            pin: pin.to_string(),
            versions,
        })
    }

    fn not_offered(
        &self,
        request: &PackageRequest,
        pin: &str,
        repo: &Repo,
        versions: &[String],
    ) -> Error {
        let name = request.name.as_str();
        let (from, hint) = match repo {
            Repo::Url(url) => (
                format!("`{}`", url.url),
                if versions.is_empty() {
                    "check provisioning.package.repo and provisioning.package.name".to_string()
                } else {
                    format!(
                        "set provisioning.package.version to one of: {} (or put {name}-{pin}-<arch>.pkg.tar.zst next to {}.db)",
                        version_list(versions),
                        url.name
                    )
                },
            ),
            Repo::Any | Repo::Named(_) => {
                let mut args = self.args(None);
                args.extend(["-U".to_string(), Self::archive_url(name, pin)]);
                let from = match repo {
                    Repo::Named(repository) => {
                        format!("repository {repository} and the package cache")
                    }
                    _ => "the sync databases and the package cache".to_string(),
                };
                (from, self.shown(args))
            }
        };
        self.package_error(
            label(request),
            format!(
                "version {pin} is not available: {from} offer{} {} (a pacman repository keeps one version per package; older ones are in the Arch Linux Archive)",
                if matches!(repo, Repo::Url(_)) { "s" } else { "" },
                version_list(versions)
            ),
            Some(hint),
        )
    }

    /// A pacman command line as the user would type it: `sudo` unless the provisioner runs as
    /// root, each word quoted for the shell, URLs without credentials.
    fn shown(&self, args: Vec<String>) -> String {
        let sudo = if self.runner.privilege().root {
            ""
        } else {
            "sudo "
        };
        let words = std::iter::once("pacman".to_string())
            .chain(args)
            .map(|w| shell_quote(&w))
            .collect::<Vec<_>>()
            .join(" ");
        format!("{sudo}{}", redact_urls(&words))
    }

    /// The Arch Linux Archive's URL of one version of an official package.
    fn archive_url(name: &str, pin: &str) -> String {
        let first = name.chars().next().unwrap_or('_');
        format!(
            "https://archive.archlinux.org/packages/{first}/{name}/{name}-{pin}-x86_64.pkg.tar.zst"
        )
    }

    /// The exact commands an install of `request` would run now (the decision of
    /// [`Pacman::decide`], without `--noconfirm`), for hints. A request that cannot be
    /// installed shows what would install it from the Arch Linux Archive (system
    /// repositories) or the package file next to the repository database (a URL).
    async fn display_one(&self, request: &PackageRequest) -> String {
        let name = request.name.as_str();
        let Ok(repo) = parse_repo(request.repository.as_ref(), name) else {
            return self.shown(vec!["-S".into(), "--needed".into(), name.to_string()]);
        };
        let target = Self::target(&repo, name);
        if let Repo::Url(url) = &repo {
            // The repository is only known to a generated config, synced first; a pinned version
            // is fetched as its package file.
            if let Some(version) = &request.version {
                return self.shown(vec![
                    "-U".to_string(),
                    format!(
                        "{}/{name}-{version}-{}.pkg.tar.zst",
                        url.server,
                        std::env::consts::ARCH
                    ),
                ]);
            }
            let Ok(config) = self.generated_config(url) else {
                return self.shown(vec!["-S".into(), "--needed".into(), target]);
            };
            let mut sync = self.args(Some(&config));
            sync.push("-Sy".to_string());
            let mut install = self.args(Some(&config));
            install.extend(["-S".to_string(), "--needed".to_string(), target]);
            return format!("{} && {}", self.shown(sync), self.shown(install));
        }
        let decision = self
            .decide(request, &repo, None, &target)
            .await
            .unwrap_or(Decision::Sync(target.clone()));
        let mut args = self.args(None);
        match decision {
            Decision::Sync(target) => {
                args.extend(["-S".to_string(), "--needed".to_string(), target])
            }
            Decision::File(file) => args.extend(["-U".to_string(), file.display().to_string()]),
            Decision::Unavailable { pin, .. } => {
                args.extend(["-U".to_string(), Self::archive_url(name, &pin)]);
            }
        }
        self.shown(args)
    }
}

#[async_trait]
impl PackageManager for Pacman {
    fn kind(&self) -> ManagerKind {
        ManagerKind::Pacman
    }

    async fn install_command(&self, requests: &[PackageRequest]) -> String {
        let mut commands = Vec::with_capacity(requests.len());
        for request in requests {
            commands.push(self.display_one(request).await);
        }
        commands.join(" && ")
    }

    async fn query(&self, name: &PackageName) -> Result<Option<InstalledPackage>> {
        query_installed(self.shell.as_ref(), self.args(None), name.as_str()).await
    }

    async fn available(&self, request: &PackageRequest) -> Result<Vec<String>> {
        let repo = parse_repo(request.repository.as_ref(), request.name.as_str())?;
        let config = match &repo {
            Repo::Url(url) => Some(self.generated_config(url)?),
            _ => None,
        };
        let mut versions = Vec::new();
        if let Some((_, version)) = self
            .offered(
                config.as_deref(),
                &Self::target(&repo, request.name.as_str()),
            )
            .await?
        {
            versions.push(version);
        }
        for (version, _) in self.local_files(&repo, request.name.as_str()) {
            push_unique(&mut versions, version);
        }
        Ok(versions)
    }

    async fn install(&self, requests: &[PackageRequest]) -> Result<Vec<InstalledPackage>> {
        for request in requests {
            parse_repo(request.repository.as_ref(), request.name.as_str())?;
        }
        let mut synced = Vec::new();
        for request in requests {
            self.install_one(request, &mut synced).await?;
        }
        verify_installed(self, requests, exact).await
    }

    async fn files(&self, name: &PackageName) -> Result<Vec<PathBuf>> {
        let listed = list_files(
            self.shell.as_ref(),
            ManagerKind::Pacman,
            self.args(None),
            name.as_str(),
        )
        .await?;
        Ok(listed.iter().map(|path| self.host_path(path)).collect())
    }

    async fn remove(&self, name: &PackageName) -> Result<()> {
        remove_package(
            &self.runner,
            ManagerKind::Pacman,
            self.args(None),
            name,
            self.db_lock(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_names_or_db_urls() {
        let parse_repo = |text: Option<&str>, package: &str| {
            let repo = text.map(|t| t.parse::<PackageRepo>().unwrap());
            parse_repo(repo.as_ref(), package)
        };
        assert_eq!(parse_repo(None, "x").unwrap(), Repo::Any);
        assert_eq!(
            parse_repo(Some("extra"), "x").unwrap(),
            Repo::Named("extra".to_string())
        );
        let Repo::Url(url) = parse_repo(Some("file:///srv/repo/eptest.db"), "x").unwrap() else {
            panic!("not a URL repository");
        };
        assert_eq!(url.name, "eptest");
        assert_eq!(url.server, "file:///srv/repo");
        assert_eq!(url.dir.as_deref(), Some(Path::new("/srv/repo")));
        let Repo::Url(url) =
            parse_repo(Some("https://u:p@mirror.example/arch/custom.db"), "x").unwrap()
        else {
            panic!("not a URL repository");
        };
        assert_eq!(url.server, "https://u:p@mirror.example/arch");
        assert_eq!(url.dir, None);
        for bad in [
            "ftp://x/y.db",
            "https://x/y.tar",
            "https://x/local.db",
            "file://relative/x.db",
        ] {
            assert!(parse_repo(Some(bad), "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn package_files_need_the_exact_name() {
        assert_eq!(
            package_file_version("foo-1.0-1-x86_64.pkg.tar.zst", "foo").as_deref(),
            Some("1.0-1")
        );
        assert_eq!(
            package_file_version("foo-2:1.0-3-any.pkg.tar.xz", "foo").as_deref(),
            Some("2:1.0-3")
        );
        assert_eq!(
            package_file_version("foo-bar-1.0-1-x86_64.pkg.tar.zst", "foo"),
            None
        );
        assert_eq!(
            package_file_version("foo-1.0-1-x86_64.pkg.tar.zst.sig", "foo"),
            None
        );
        assert_eq!(
            package_file_version("foobar-1.0-1-x86_64.pkg.tar.zst", "foo"),
            None
        );
    }

    #[test]
    fn generated_configs_copy_options_and_trust_local_repositories_only() {
        let base = "[options]\nRootDir = /r\nDBPath = /r/db/\nSigLevel = Required\nColor\nHoldPkg = x\n\n[core]\nSigLevel = Never\nServer = https://x\n";
        let local = UrlRepo {
            name: "eptest".to_string(),
            url: "file:///srv/eptest.db".parse().unwrap(),
            server: "file:///srv".to_string(),
            dir: Some(PathBuf::from("/srv")),
        };
        let text = generated_config_text(Some(base), &local, None);
        assert!(text.contains("RootDir = /r\nDBPath = /r/db/\n"), "{text}");
        assert!(text.contains("Architecture = auto"), "{text}");
        assert!(text.contains("SigLevel = Never\n"), "{text}");
        assert!(!text.contains("Required"), "{text}");
        assert!(
            !text.contains("HoldPkg") && !text.contains("[core]"),
            "{text}"
        );
        assert!(text.ends_with("[eptest]\nServer = file:///srv\n"), "{text}");
        let remote = UrlRepo {
            dir: None,
            url: "https://u:secret@x/eptest.db".parse().unwrap(),
            server: "https://u:secret@x".to_string(),
            ..local
        };
        let text = generated_config_text(Some(base), &remote, None);
        assert!(text.contains("SigLevel = Required"), "{text}");
        assert!(!text.lines().next().unwrap().contains("secret"), "{text}");
    }
}
