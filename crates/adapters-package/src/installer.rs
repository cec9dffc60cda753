//! [`PackageEngineInstaller`]: the [`PackageInstaller`] port over [`HostManagers`] and the shared
//! install transaction.
//!
//! The record of an install lives under `<cache_dir>/packages-v1/<key>/metadata.json`. The warm
//! path reads it and asks the package database once (one process); the cold path runs under the
//! key's lock, installs only what is not installed at the pin (and only when the pool allows
//! it), finds the executable in the package's file list, runs it once for its version, and
//! undoes what it changed when the package fails those checks: a package that was not installed
//! before is removed again, one that was installed at another version is installed again at
//! exactly that version (or, when no repository offers it any more, the error names the command
//! that restores it).
//!
//! A backend that ships apart from the server ([`BackendPackage`]: Debian's
//! `libggml0-backend-*`) is installed with it, at exactly the version of the library package it
//! plugs into (`libggml0`) that is installed with the server; the backend check reads both
//! packages' files, and an undo covers both.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use adapters_host::install::{InstallRoot, Installed, Staging};
use adapters_host::version::{
    DEFAULT_VERSION_TIMEOUT, HELP_TIMEOUT, VersionRun, probe_flags, run_version,
};
use async_trait::async_trait;
use provisioner_core::packages::{
    BackendPackage, backend_package, default_engine_package, engine_packages,
};
use provisioner_core::{
    Action, Backend, BackendFinding, BackendVerdict, Clock, CommandSpec, Distro, Engine, Error,
    FALLBACK_HINT, FoundBackend, InstalledPackage, ManagerKind, PackageArtifact,
    PackageInstallSpec, PackageInstaller, PackageManager, PackageName, PackageRepo, PackageRequest,
    PackageVersion, Policy, Progress, ProgressEvent, Result, Shell, VersionProbe,
    ggml_reported_backend, judge_backend, package_engine_version,
};
use serde::{Deserialize, Serialize};

use crate::select::HostManagers;

/// Bucket under the engine cache holding install records.
pub const BUCKET: &str = "packages-v1";
/// Current [`PackageInstallMetadata::format`].
pub const METADATA_FORMAT: u32 = 1;
/// Files named in an error about a package lacking the executable.
const LISTED_FILES: usize = 10;

/// What `metadata.json` of a package install records (written last: its presence means the
/// install finished and was checked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageInstallMetadata {
    /// Format of this record; [`METADATA_FORMAT`].
    pub format: u32,
    /// Engine installed.
    pub engine: Engine,
    /// Install key (the record directory's name).
    pub key: String,
    /// Manager that installed or found it.
    pub manager: ManagerKind,
    /// What the package database reported (repository without credentials).
    pub package: InstalledPackage,
    /// The executable, an absolute path from the package's file list.
    pub executable: PathBuf,
    /// What the executable printed for the version arguments (first lines, stdout and stderr).
    pub version_output: Option<String>,
    /// Backend asked for and checked (a GPU backend's library in the files, or named by the
    /// version output).
    #[serde(default)]
    pub backend: Backend,
    /// The backend found at install time ([`BackendFinding`]); `None` in records written
    /// before it was kept.
    #[serde(default)]
    pub found: Option<BackendFinding>,
    /// The package that carries the backend, when it ships apart from the server
    /// ([`BackendPackage`]), as the package database reported it.
    #[serde(default)]
    pub backend_package: Option<InstalledPackage>,
    /// The flag probe's options that the server's help listed; `None` when no probe ran
    /// (records written before probes were kept: the server gets none of them).
    #[serde(default)]
    pub supported_flags: Option<Vec<String>>,
    /// [`package_engine_version`] of the installed package.
    pub engine_version: String,
    /// When the record was written (seconds since the Unix epoch, from the Clock port).
    pub installed_at_unix: u64,
    /// Whether the pinned version was installed before this provisioner looked (nothing was
    /// installed; it will not be removed on failure).
    pub was_installed_before: bool,
}

/// Installs engines as pinned distribution packages. See the module documentation.
pub struct PackageEngineInstaller {
    managers: HostManagers,
    shell: Arc<dyn Shell>,
    policy: Arc<dyn Policy>,
    progress: Arc<dyn Progress>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PackageEngineInstaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageEngineInstaller")
            .field("managers", &self.managers)
            .finish_non_exhaustive()
    }
}

/// The install key: the first 16 hex digits of BLAKE3 over engine, manager, package, version and
/// repository.
pub fn install_key(
    engine: Engine,
    manager: ManagerKind,
    name: &PackageName,
    version: &PackageVersion,
    repository: Option<&PackageRepo>,
    backend: Backend,
) -> String {
    let text = format!(
        "{engine}\0{manager}\0{name}\0{version}\0{}\0{backend}",
        repository.map_or("", PackageRepo::expose)
    );
    blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
}

/// What the cold path decided before the transaction.
struct Target<'a> {
    spec: &'a PackageInstallSpec,
    manager: Arc<dyn PackageManager>,
    name: PackageName,
    key: String,
    distro: Distro,
    /// The package carrying the backend asked for, when it ships apart from the server.
    backend: Option<Carrier>,
}

/// A [`BackendPackage`] with its names checked.
#[derive(Debug, Clone)]
struct Carrier {
    name: PackageName,
    library: PackageName,
}

impl Carrier {
    fn of(package: &BackendPackage) -> Option<Carrier> {
        Some(Carrier {
            name: package.name.parse().ok()?,
            library: package.library.parse().ok()?,
        })
    }
}

impl Target<'_> {
    fn label(&self) -> String {
        format!("{}={}", self.name, self.spec.version)
    }

    /// What installs this target, for hints and the policy: the server at its pin, and the
    /// backend package (its version follows the library installed with the server).
    fn requests(&self) -> Vec<PackageRequest> {
        let mut requests = vec![self.request()];
        if let Some(carrier) = &self.backend {
            requests.push(PackageRequest {
                name: carrier.name.clone(),
                version: None,
                repository: self.spec.repository.clone(),
            });
        }
        requests
    }

    /// The packages whose files are checked: `llama.cpp-tools`, or `llama.cpp-tools and
    /// libggml0-backend-vulkan`.
    fn packages_checked(&self) -> String {
        match &self.backend {
            Some(carrier) => format!("the files of {} and {}", self.name, carrier.name),
            None => "the package's files".to_string(),
        }
    }

    fn request(&self) -> PackageRequest {
        PackageRequest {
            name: self.name.clone(),
            version: Some(self.spec.version.clone()),
            repository: self.spec.repository.clone(),
        }
    }

    fn error(&self, message: String, hint: Option<String>) -> Error {
        Error::Package {
            manager: self.manager.kind().to_string(),
            package: self.label(),
            message,
            hint,
        }
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The executable among a package's files: named `executable`, in a `bin` or `sbin` directory,
/// an existing executable file.
fn find_executable(files: &[PathBuf], executable: &str) -> Option<PathBuf> {
    files
        .iter()
        .filter(|path| path.file_name() == Some(std::ffi::OsStr::new(executable)))
        .filter(|path| {
            path.parent()
                .and_then(Path::file_name)
                .is_some_and(|dir| dir == "bin" || dir == "sbin")
        })
        .find(|path| is_executable_file(path))
        .cloned()
}

/// What undoing a failed attempt did: a sentence for the error message and, when the version
/// installed before could not be put back, the exact command that puts it back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Undo {
    said: String,
    restore: Option<String>,
}

impl Undo {
    fn said(said: String) -> Undo {
        Undo {
            said,
            restore: None,
        }
    }

    /// `hint` with the restore command first (it is what the user must do now).
    fn hint(&self, hint: Option<String>) -> Option<String> {
        match (&self.restore, hint) {
            (Some(restore), Some(hint)) => Some(format!(
                "restore the version installed before: {restore}\n{hint}"
            )),
            (Some(restore), None) => {
                Some(format!("restore the version installed before: {restore}"))
            }
            (None, hint) => hint,
        }
    }
}

/// What was installed before this call changed anything, and what it changed since.
struct Before {
    /// The server package as it was.
    server: Option<InstalledPackage>,
    /// The server was installed at the pin already (nothing of it is undone).
    at_pin: bool,
    /// The backend package as it was.
    backend: Option<InstalledPackage>,
    /// This call ran an install of the backend package (which an undo reverts).
    backend_installed: bool,
}

/// Adds what the undo did to an error's message (and the restore command to its hint).
fn with_undo(error: Error, undo: &Undo) -> Error {
    let rollback = &undo.said;
    match error {
        Error::Package {
            manager,
            package,
            message,
            hint,
        } => Error::Package {
            manager,
            package,
            // A message that quotes a manager's output ends with it: the undo goes below.
            message: if message.contains('\n') {
                format!("{message}\n{rollback}")
            } else {
                format!("{message}; {rollback}")
            },
            hint: undo.hint(hint),
        },
        Error::CommandFailed {
            command,
            status,
            tail,
            log,
            hint,
        } => Error::CommandFailed {
            command,
            status: format!("{status}; {rollback}"),
            tail,
            log,
            hint: undo.hint(hint),
        },
        Error::MissingTool {
            tool,
            purpose,
            searched,
            hint,
        } => Error::MissingTool {
            tool,
            purpose,
            searched,
            hint: undo.hint(hint),
        },
        Error::PolicyDenied { action, hint } => Error::PolicyDenied {
            action,
            hint: undo.hint(hint),
        },
        other => other,
    }
}

/// The backend an installed package shows: a ggml backend library (`libggml-cuda…`) among its
/// files, or the backend named by the server's version output (a static build loads no
/// library; llama.cpp's output is read as [`ggml_reported_backend`] reads it).
fn package_backend(
    files: &[PathBuf],
    place: &str,
    executable: &Path,
    version_args: &[String],
    version_output: Option<&str>,
) -> BackendFinding {
    let probe = (!version_args.is_empty()).then(|| {
        let name = executable
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().to_string());
        VersionProbe::new(
            format!("{name} {}", version_args.join(" ")),
            version_output,
            ggml_reported_backend,
        )
    });
    BackendFinding::from_evidence(files, place, probe.as_ref())
}

/// Whether a record describes the install `target` asks for and its executable still exists.
fn record_ok(installed: &Installed<PackageInstallMetadata>, target: &Target<'_>) -> bool {
    let metadata = &installed.metadata;
    metadata.format == METADATA_FORMAT
        && metadata.key == target.key
        && metadata.engine == target.spec.engine
        && metadata.manager == target.manager.kind()
        && metadata.package.name == target.name.as_str()
        && metadata.package.version == target.spec.version.as_str()
        && metadata.backend == target.spec.backend
        && metadata.executable.file_name() == Some(std::ffi::OsStr::new(&target.spec.executable))
        && metadata.backend_package.as_ref().map(|p| p.name.as_str())
            == target.backend.as_ref().map(|c| c.name.as_str())
        && is_executable_file(&metadata.executable)
}

impl PackageEngineInstaller {
    /// An installer over the given managers and ports.
    pub fn new(
        managers: HostManagers,
        shell: Arc<dyn Shell>,
        policy: Arc<dyn Policy>,
        progress: Arc<dyn Progress>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        PackageEngineInstaller {
            managers,
            shell,
            policy,
            progress,
            clock,
        }
    }

    fn report(&self, event: ProgressEvent) {
        self.progress.report(event);
    }

    /// Resolves distribution, package name and manager (names, versions and repositories were
    /// checked when the config was read).
    fn target<'a>(&self, spec: &'a PackageInstallSpec) -> Result<Target<'a>> {
        if spec.executable.is_empty()
            || spec.executable.contains('/')
            || spec.executable.starts_with('.')
        {
            return Err(Error::Package {
                manager: spec
                    .manager
                    .map_or_else(|| "package".to_string(), |m| m.to_string()),
                package: format!("{} package", spec.engine),
                message: format!("executable `{}` must be a plain file name", spec.executable),
                hint: None,
            });
        }
        let distro = spec.distro.unwrap_or(self.managers.distro());
        let shown = spec
            .name
            .as_ref()
            .map_or_else(|| format!("{} package", spec.engine), |n| n.to_string());
        let default = default_engine_package(spec.engine, distro, spec.backend);
        let name: Option<PackageName> = spec
            .name
            .clone()
            .or_else(|| default.and_then(|p| p.name.parse().ok()));
        let manager = self.managers.manager(
            spec.manager,
            Some(distro),
            name.as_ref().map(PackageName::as_str),
            Some(spec.engine),
        )?;
        let Some(name) = name else {
            let known: Vec<String> = engine_packages(spec.engine, distro)
                .iter()
                .map(|p| format!("{} ({})", p.name, p.backend))
                .collect();
            return Err(Error::Package {
                manager: manager.kind().to_string(),
                package: shown,
                message: format!(
                    "no known package ships {} with the {} backend on {} (known packages there: {})",
                    spec.engine,
                    spec.backend,
                    distro.as_str(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
                hint: Some("set provisioning.package.name".to_string()),
            });
        };
        let key = install_key(
            spec.engine,
            manager.kind(),
            &name,
            &spec.version,
            spec.repository.as_ref(),
            spec.backend,
        );
        let backend =
            backend_package(spec.engine, distro, name.as_str(), spec.backend).and_then(Carrier::of);
        Ok(Target {
            spec,
            manager,
            name,
            key,
            distro,
            backend,
        })
    }

    fn artifact(installed: Installed<PackageInstallMetadata>, cache_hit: bool) -> PackageArtifact {
        let metadata = installed.metadata;
        let found = metadata.found.unwrap_or_else(|| {
            // A record from before findings were kept: a GPU backend asked for was checked.
            if metadata.backend.is_gpu() {
                BackendFinding::stated(
                    FoundBackend::from(metadata.backend),
                    "checked when it was installed",
                )
            } else {
                let name = metadata
                    .executable
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().to_string());
                let probe = VersionProbe::new(
                    format!("{name} --version"),
                    metadata.version_output.as_deref(),
                    ggml_reported_backend,
                );
                BackendFinding::from_evidence(
                    &[],
                    "the install record (from before its files were kept)",
                    Some(&probe),
                )
            }
        });
        PackageArtifact {
            manager: metadata.manager,
            package: metadata.package,
            executable: metadata.executable,
            version_output: metadata.version_output,
            supported_flags: metadata.supported_flags.unwrap_or_default(),
            found,
            engine_version: metadata.engine_version,
            key: metadata.key,
            cache_hit,
            metadata_file: installed.metadata_file,
        }
    }

    /// Undoes what this call changed, and says what happened, for the error message: a package
    /// that was not installed before is removed again; one that was installed at another version
    /// (which this call upgraded, downgraded or removed) is installed again at exactly that
    /// version through the same manager, or, when no repository the pool or the policy allows
    /// still offers it, the undo fails with the exact command that restores it.
    async fn roll_back(
        &self,
        target: &Target<'_>,
        name: &PackageName,
        before: Option<&InstalledPackage>,
    ) -> Undo {
        let now = target.manager.query(name).await.ok().flatten();
        match (before, now) {
            (None, Some(_)) => {
                self.report(ProgressEvent::Note {
                    message: format!("removing {name} again: it failed its checks"),
                });
                Undo::said(match target.manager.remove(name).await {
                    Ok(()) => format!("{name} was removed again"),
                    Err(error) => format!("removing {name} again failed: {error}"),
                })
            }
            (Some(before), now) if now.as_ref().is_none_or(|now| now.version != before.version) => {
                self.restore(target, name, before, now.as_ref()).await
            }
            _ => Undo::said("nothing was left installed by this attempt".to_string()),
        }
    }

    /// Installs `before` again at its exact version: from the pool's repository when it offers
    /// that version, else from the system's repositories, each only when the policy allows it.
    async fn restore(
        &self,
        target: &Target<'_>,
        name: &PackageName,
        before: &InstalledPackage,
        now: Option<&InstalledPackage>,
    ) -> Undo {
        let replaced = match now {
            Some(now) => format!("replaced it with {}", now.version),
            None => "removed it".to_string(),
        };
        let Ok(version) = before.version.parse::<PackageVersion>() else {
            return Undo::said(format!(
                "{name} {} was installed before and this attempt {replaced}; it cannot be restored automatically (its version cannot be pinned)",
                before.version
            ));
        };
        let request = |repository: Option<PackageRepo>| PackageRequest {
            name: name.clone(),
            version: Some(version.clone()),
            repository,
        };
        let mut sources = vec![target.spec.repository.clone()];
        if target.spec.repository.is_some() {
            sources.push(None);
        }
        let mut failed: Option<(PackageRequest, Error)> = None;
        for repository in sources {
            let allowed = self.policy.check(&Action::InstallPackages {
                packages: vec![name.clone()],
                repository: repository.clone(),
                allowed_by_config: target.spec.allowed_by_config,
            });
            let candidate = request(repository);
            if allowed.is_err()
                || !target
                    .manager
                    .available(&candidate)
                    .await
                    .is_ok_and(|versions| versions.iter().any(|v| v == version.as_str()))
            {
                continue;
            }
            self.report(ProgressEvent::Note {
                message: format!(
                    "installing {name}={version} again: it was installed before, and this attempt {replaced} and failed its checks"
                ),
            });
            match target
                .manager
                .install(std::slice::from_ref(&candidate))
                .await
            {
                Ok(_) => {
                    return Undo::said(format!(
                        "{name} {version}, installed before, was installed again"
                    ));
                }
                Err(error) => failed = Some((candidate, error)),
            }
        }
        let (said, command) = match failed {
            Some((candidate, error)) => (
                format!(
                    "{name} {version} was installed before and this attempt {replaced}; installing {version} again failed: {error}"
                ),
                target
                    .manager
                    .install_command(std::slice::from_ref(&candidate))
                    .await,
            ),
            None => (
                format!(
                    "{name} {version} was installed before and this attempt {replaced}; no repository this pool may use offers {version} any more, so it was not installed again"
                ),
                target
                    .manager
                    .install_command(std::slice::from_ref(&request(None)))
                    .await,
            ),
        };
        Undo {
            said,
            restore: Some(command),
        }
    }

    /// After a check failed on the installed packages: a server that was there at the pin before
    /// this call is left alone; otherwise what this call changed is undone, the backend package
    /// first. Says which.
    async fn undo_failed_check(&self, target: &Target<'_>, before: &Before) -> Undo {
        let mut undo = match (&target.backend, before.backend_installed) {
            (Some(carrier), true) => Some(
                self.roll_back(target, &carrier.name, before.backend.as_ref())
                    .await,
            ),
            _ => None,
        };
        let server = if before.at_pin {
            Undo::said("it was installed before and is left alone".to_string())
        } else {
            self.roll_back(target, &target.name, before.server.as_ref())
                .await
        };
        match undo.take() {
            Some(backend) => Undo {
                said: format!("{}; {}", backend.said, server.said),
                restore: match (backend.restore, server.restore) {
                    (Some(a), Some(b)) => Some(format!("{a} && {b}")),
                    (a, b) => a.or(b),
                },
            },
            None => server,
        }
    }

    /// Refuses installing `requests` when the pool or the host policy does not allow it, naming
    /// the exact command (for the server: with the backend package that goes with it).
    async fn check_allowed(&self, target: &Target<'_>, requests: &[PackageRequest]) -> Result<()> {
        let spec = target.spec;
        let manager = &target.manager;
        if !spec.allowed_by_config {
            let packages: Vec<String> = requests
                .iter()
                .map(|request| match &request.version {
                    Some(version) => format!("{}={version}", request.name),
                    None => request.name.to_string(),
                })
                .collect();
            return Err(Error::PolicyDenied {
                action: format!("installing {}", packages.join(" and ")),
                hint: Some(format!(
                    "set provisioning.allow_package_installs: true, or install it yourself: {}",
                    manager.install_command(requests).await
                )),
            });
        }
        self.policy.check(&Action::InstallPackages {
            packages: requests.iter().map(|r| r.name.clone()).collect(),
            repository: spec.repository.clone(),
            allowed_by_config: spec.allowed_by_config,
        })?;
        Ok(())
    }

    /// Installs the package that carries the backend, at the version of its library that is
    /// installed now (with the server), unless it is installed at that version already.
    async fn install_backend(
        &self,
        target: &Target<'_>,
        carrier: &Carrier,
        before: &mut Before,
    ) -> Result<()> {
        let manager = &target.manager;
        let library = manager.query(&carrier.library).await?;
        let version = library
            .as_ref()
            .and_then(|library| library.version.parse::<PackageVersion>().ok());
        if let (Some(installed), Some(version)) = (&before.backend, &version)
            && installed.version == version.as_str()
        {
            return Ok(());
        }
        let request = PackageRequest {
            name: carrier.name.clone(),
            version: version.clone(),
            repository: target.spec.repository.clone(),
        };
        let shown = match &version {
            Some(version) => format!("{}={version}", carrier.name),
            None => carrier.name.to_string(),
        };
        self.check_allowed(target, std::slice::from_ref(&request))
            .await?;
        let why = match (&library, &version) {
            (Some(library), Some(_)) => format!(
                "the {} backend of {} ships in it, at the version of {} ({})",
                target.spec.backend, target.name, library.name, library.version
            ),
            _ => format!(
                "the {} backend of {} ships in it ({} is not installed, so the repository's version is used)",
                target.spec.backend, target.name, carrier.library
            ),
        };
        let step = format!("install {shown} ({})", manager.kind());
        self.report(ProgressEvent::Started {
            step: step.clone(),
            detail: Some(why),
        });
        before.backend_installed = true;
        manager.install(std::slice::from_ref(&request)).await?;
        self.report(ProgressEvent::Finished { step });
        Ok(())
    }

    /// The work inside the transaction: install when needed, check, describe.
    async fn install(
        &self,
        target: &Target<'_>,
        staging: Staging,
    ) -> Result<PackageInstallMetadata> {
        let spec = target.spec;
        let manager = &target.manager;
        let server = manager.query(&target.name).await?;
        let backend = match &target.backend {
            Some(carrier) => manager.query(&carrier.name).await?,
            None => None,
        };
        let mut before = Before {
            at_pin: server
                .as_ref()
                .is_some_and(|installed| installed.version == spec.version.as_str()),
            server,
            backend,
            backend_installed: false,
        };
        if before.at_pin {
            self.report(ProgressEvent::Note {
                message: format!("{} is already installed; recording it", target.label()),
            });
        } else {
            let request = target.request();
            self.check_allowed(target, &target.requests()).await?;
            let step = format!("install {} ({})", target.label(), manager.kind());
            self.report(ProgressEvent::Started {
                step: step.clone(),
                detail: spec.repository.as_ref().map(PackageRepo::to_string),
            });
            if let Err(error) = manager.install(std::slice::from_ref(&request)).await {
                let undo = self
                    .roll_back(target, &target.name, before.server.as_ref())
                    .await;
                return Err(with_undo(error, &undo));
            }
            self.report(ProgressEvent::Finished { step });
        }
        if let Some(carrier) = &target.backend
            && let Err(error) = self.install_backend(target, carrier, &mut before).await
        {
            let undo = self.undo_failed_check(target, &before).await;
            return Err(with_undo(error, &undo));
        }

        let mut files = manager.files(&target.name).await?;
        let Some(executable) = find_executable(&files, &spec.executable) else {
            // Listed before a rollback removes them.
            let listed: Vec<String> = files
                .iter()
                .filter(|path| std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir()))
                .take(LISTED_FILES)
                .map(|path| path.display().to_string())
                .collect();
            let undo = self.undo_failed_check(target, &before).await;
            let rollback = &undo.said;
            let shipping: Vec<&str> = engine_packages(spec.engine, target.distro)
                .iter()
                .filter(|p| p.executable == spec.executable && p.name != target.name.as_str())
                .map(|p| p.name)
                .collect();
            return Err(target.error(
                format!(
                    "installed {} but it ships no `{}` in a bin directory (files: {}); {rollback}",
                    target.label(),
                    spec.executable,
                    if listed.is_empty() {
                        "none".to_string()
                    } else {
                        listed.join(", ")
                    }
                ),
                undo.hint(Some(if shipping.is_empty() {
                    format!(
                        "set provisioning.package.name to a package that ships {}",
                        spec.executable
                    )
                } else {
                    format!(
                        "set provisioning.package.name to a package that ships {} on {}: {}",
                        spec.executable,
                        target.distro.as_str(),
                        shipping.join(", ")
                    )
                })),
            ));
        };
        let backend_package = match &target.backend {
            Some(carrier) => {
                files.extend(manager.files(&carrier.name).await?);
                manager.query(&carrier.name).await?
            }
            None => None,
        };

        let version_output = match self.version_run(spec, &staging, &executable).await {
            Ok(output) => output,
            Err(error) => {
                let undo = self.undo_failed_check(target, &before).await;
                return Err(with_undo(error, &undo));
            }
        };

        // What the pool asks of the backend (`package.backend`, `-ngl 99`) against what the
        // files and the version output show; a fallback the pool allows is judged (and
        // reported) again by the caller.
        let found = package_backend(
            &files,
            &target.packages_checked(),
            &executable,
            &spec.version_args,
            version_output.as_deref(),
        );
        let ask = spec.gpu_ask();
        if let BackendVerdict::Refused(message) = judge_backend(
            ask.as_ref(),
            &found,
            &target.label(),
            spec.allow_cpu_fallback,
        ) {
            let undo = self.undo_failed_check(target, &before).await;
            let wanted = ask.as_ref().and_then(|ask| ask.backend);
            let shipping: Vec<&str> = engine_packages(spec.engine, target.distro)
                .iter()
                .filter(|p| {
                    p.backend.is_gpu()
                        && wanted.is_none_or(|wanted| FoundBackend::from(p.backend) == wanted)
                        && p.name != target.name.as_str()
                })
                .map(|p| p.name)
                .collect();
            let build = match wanted {
                Some(backend) => format!("the {backend} backend"),
                None => "a GPU backend".to_string(),
            };
            return Err(target.error(
                format!("{message}; {}", undo.said),
                undo.hint(Some(if shipping.is_empty() {
                    format!(
                        "name a package built with {build} in provisioning.package.name, build from source (mode: source), {FALLBACK_HINT}"
                    )
                } else {
                    format!(
                        "set provisioning.package.name to a build with {build} on {}: {}, {FALLBACK_HINT}",
                        target.distro.as_str(),
                        shipping.join(", ")
                    )
                })),
            ));
        }

        let supported_flags = match &spec.flag_probe {
            Some(probe) => {
                let mut command = CommandSpec::new(
                    &executable.display().to_string(),
                    probe.args.iter().cloned(),
                )
                .cwd(&staging.work);
                command.group_file = Some(staging.group_file.clone());
                Some(
                    probe_flags(
                        self.shell.as_ref(),
                        self.progress.as_ref(),
                        &command,
                        probe,
                        HELP_TIMEOUT,
                    )
                    .await,
                )
            }
            None => None,
        };

        let installed = manager
            .query(&target.name)
            .await?
            .filter(|installed| installed.version == spec.version.as_str())
            .ok_or_else(|| {
                target.error(
                    "the package database no longer reports the pinned version".to_string(),
                    None,
                )
            })?;
        let package = InstalledPackage {
            repository: spec.repository.as_ref().map(PackageRepo::to_string),
            ..installed
        };
        let engine_version = package_engine_version(
            spec.engine,
            manager.kind(),
            &target.name,
            // The database reports exactly the pin (checked above).
            &spec.version,
            spec.repository.as_ref(),
        );
        Ok(PackageInstallMetadata {
            format: METADATA_FORMAT,
            engine: spec.engine,
            key: target.key.clone(),
            manager: manager.kind(),
            package,
            executable,
            version_output,
            backend: spec.backend,
            found: Some(found),
            backend_package: backend_package.map(|installed| InstalledPackage {
                repository: spec.repository.as_ref().map(PackageRepo::to_string),
                ..installed
            }),
            supported_flags,
            engine_version,
            installed_at_unix: unix_seconds(self.clock.now()),
            was_installed_before: before.at_pin,
        })
    }

    /// A record written before flag probes were kept learns the server's flags now, once, and
    /// is amended (a failure to amend only costs a probe next time).
    async fn learn_flags(
        &self,
        spec: &PackageInstallSpec,
        installed: Installed<PackageInstallMetadata>,
    ) -> Installed<PackageInstallMetadata> {
        let Some(probe) = &spec.flag_probe else {
            return installed;
        };
        let command = CommandSpec::new(
            &installed.metadata.executable.display().to_string(),
            probe.args.iter().cloned(),
        )
        .cwd(&installed.dir);
        adapters_host::version::learn_flags_once(
            self.shell.as_ref(),
            self.progress.as_ref(),
            installed,
            |m| &mut m.supported_flags,
            probe,
            &command,
        )
        .await
    }

    /// Runs `<executable> <version_args>` once, through the Shell port, with a time limit. Like
    /// the flag probes it inherits the base variables only ([`provisioner_core::BASE_ENV`]).
    async fn version_run(
        &self,
        spec: &PackageInstallSpec,
        staging: &Staging,
        executable: &Path,
    ) -> Result<Option<String>> {
        if spec.version_args.is_empty() {
            return Ok(None);
        }
        let mut command = CommandSpec::new(
            &executable.display().to_string(),
            spec.version_args.iter().cloned(),
        )
        .cwd(&staging.work);
        command.group_file = Some(staging.group_file.clone());
        run_version(
            self.shell.as_ref(),
            self.progress.as_ref(),
            &VersionRun {
                step: format!("check {}", spec.executable),
                command: &command,
                timeout: DEFAULT_VERSION_TIMEOUT,
                failure_hint: "the packaged server does not run on this host: check its dependencies (ldd) or pin another version",
            },
        )
        .await
    }
}

#[async_trait]
impl PackageInstaller for PackageEngineInstaller {
    async fn ensure_installed(&self, spec: &PackageInstallSpec) -> Result<PackageArtifact> {
        let target = self.target(spec)?;
        let root = InstallRoot::new(&spec.cache_dir, BUCKET, self.progress.clone());
        let valid = |installed: &Installed<PackageInstallMetadata>| record_ok(installed, &target);

        // Warm path: the record, then one question to the package database (two when the
        // backend ships in a package of its own).
        let recorded = root.lookup(&target.key, &valid);
        let current = target.manager.query(&target.name).await?;
        let at_pin = current.is_some_and(|current| current.version == spec.version.as_str());
        if let Some(installed) = &recorded {
            let backend_kept = match &installed.metadata.backend_package {
                Some(backend) if at_pin => match backend.name.parse::<PackageName>() {
                    Ok(name) => target
                        .manager
                        .query(&name)
                        .await?
                        .is_some_and(|now| now.version == backend.version),
                    Err(_) => false,
                },
                _ => true,
            };
            if at_pin && backend_kept {
                self.report(ProgressEvent::Note {
                    message: format!(
                        "{} {} is installed ({}; cache hit)",
                        spec.engine,
                        target.label(),
                        installed.metadata.executable.display()
                    ),
                });
                let installed = self.learn_flags(spec, installed.clone()).await;
                return Ok(Self::artifact(installed, true));
            }
            self.report(ProgressEvent::Note {
                message: if at_pin {
                    format!(
                        "{} is recorded but the package carrying its {} backend is no longer installed at that version; checking again",
                        target.label(),
                        spec.backend
                    )
                } else {
                    format!(
                        "{} is recorded but the package database no longer has it at that version; checking again",
                        target.label()
                    )
                },
            });
        }

        // Refused installs stop here, before the transaction creates anything in the cache.
        if !at_pin {
            self.check_allowed(&target, &target.requests()).await?;
        }

        // The stale record seen above must not satisfy the re-check under the lock; a record
        // written meanwhile by another process does.
        let stale = recorded.map(|installed| installed.metadata);
        let fresh_record = |installed: &Installed<PackageInstallMetadata>| {
            record_ok(installed, &target) && stale.as_ref() != Some(&installed.metadata)
        };
        let installed = root
            .install(&target.key, &fresh_record, |staging| {
                self.install(&target, staging)
            })
            .await?;
        let cache_hit = !installed.fresh;
        Ok(Self::artifact(installed, cache_hit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cover_every_input() {
        let key = |manager, version: &str, repo: Option<&str>, backend| {
            install_key(
                Engine::Llamacpp,
                manager,
                &"a".parse().unwrap(),
                &version.parse().unwrap(),
                repo.map(|r| r.parse().unwrap()).as_ref(),
                backend,
            )
        };
        let base = key(ManagerKind::Apt, "1", None, Backend::Cpu);
        assert_eq!(base.len(), 16);
        assert_ne!(base, key(ManagerKind::Apt, "2", None, Backend::Cpu));
        assert_ne!(base, key(ManagerKind::Dnf, "1", None, Backend::Cpu));
        assert_ne!(base, key(ManagerKind::Apt, "1", Some("x"), Backend::Cpu));
        assert_ne!(base, key(ManagerKind::Apt, "1", None, Backend::Cuda));
    }

    const FILES: &str = "the package's files";

    #[test]
    fn a_gpu_backend_shows_by_its_library_or_the_version_output() {
        let server = PathBuf::from("/usr/bin/llama-server");
        let args = ["--version".to_string()];
        let cuda_files = vec![
            server.clone(),
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libggml-base.so.0"),
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libggml-cuda.so.0"),
        ];
        let found = package_backend(
            &cuda_files,
            FILES,
            &server,
            &args,
            Some("version: 6000 (abc)"),
        );
        assert_eq!(found.backend, FoundBackend::Cuda);
        assert!(found.how.contains("libggml-cuda.so.0"), "{}", found.how);

        let static_build = Some("ggml_cuda_init: found 1 CUDA devices\nversion: 6000 (abc)");
        let found = package_backend(
            std::slice::from_ref(&server),
            FILES,
            &server,
            &args,
            static_build,
        );
        assert_eq!(found.backend, FoundBackend::Cuda);

        let cpu = package_backend(
            &cuda_files[..2],
            FILES,
            &server,
            &args,
            Some("version: 6000 (abc)"),
        );
        assert_eq!(cpu.backend, FoundBackend::Cpu);
        let ask = provisioner_core::GpuAsk::named(
            FoundBackend::Cuda,
            "provisioning.package.backend: cuda",
        );
        let BackendVerdict::Refused(message) = judge_backend(Some(&ask), &cpu, "p=1", false) else {
            panic!("a CPU build passed a CUDA ask");
        };
        assert!(
            message.contains("shows no cuda backend")
                && message.contains("it would run on the CPU"),
            "{message}"
        );
        assert!(matches!(
            judge_backend(Some(&ask), &cpu, "p=1", true),
            BackendVerdict::Fallback(_)
        ));

        let hip = package_backend(
            &[server.clone(), PathBuf::from("/usr/lib/libggml-hip.so")],
            FILES,
            &server,
            &args,
            None,
        );
        assert_eq!(hip.backend, FoundBackend::Hip);
        let unknown = package_backend(
            std::slice::from_ref(&server),
            FILES,
            &server,
            &args,
            Some("1.0"),
        );
        assert_eq!(unknown.backend, FoundBackend::Unknown);
    }

    #[test]
    fn executables_live_in_bin_directories() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("usr/bin");
        let share = dir.path().join("usr/share/doc");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&share).unwrap();
        for path in [bin.join("llama-server"), share.join("llama-server")] {
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let files = vec![share.join("llama-server"), bin.join("llama-server")];
        assert_eq!(
            find_executable(&files, "llama-server"),
            Some(bin.join("llama-server"))
        );
        std::fs::set_permissions(
            bin.join("llama-server"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert_eq!(find_executable(&files, "llama-server"), None);
    }
}
