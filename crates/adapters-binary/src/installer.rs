//! [`BinaryArtifactInstaller`]: the [`BinaryInstaller`] port over the Fetcher port, the safe
//! unpacker and the shared install transaction.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use adapters_host::install::{InstallRoot, Installed, Staging};
use adapters_host::version::{
    DEFAULT_VERSION_TIMEOUT, HELP_TIMEOUT, VersionRun, probe_flags, run_version,
};
use async_trait::async_trait;
use provisioner_core::{
    Action, ArchiveFormat, BinaryArtifact, BinaryInstallSpec, BinaryInstaller, Checksum, Clock,
    CommandSpec, Engine, Error, FetchRequest, Fetcher, Policy, Progress, ProgressEvent, Result,
    Shell,
};
use serde::{Deserialize, Serialize};

use crate::hash::hash_file;
use crate::unpack::{copy_executable, display_name, unpack};

/// Directory under the install root holding downloads (kept across runs so that a killed
/// download resumes).
pub const DOWNLOADS_DIR: &str = "downloads";
/// Current [`BinaryInstallMetadata::format`].
pub const METADATA_FORMAT: u32 = 1;

/// What `metadata.json` next to an installed prebuilt artefact records (written last, so its
/// presence means the install is complete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryInstallMetadata {
    /// Format of this record; [`METADATA_FORMAT`].
    pub format: u32,
    /// Engine installed.
    pub engine: Engine,
    /// Cache key (the install directory's name).
    pub key: String,
    /// Download URL, credentials removed.
    pub url: String,
    /// Checksum of the downloaded file (the pinned one, or the SHA-256 computed for an unpinned
    /// download).
    pub checksum: Checksum,
    /// Size of the downloaded file.
    pub bytes: u64,
    /// The executable, relative to the install directory.
    pub executable: PathBuf,
    /// Directories with shared libraries, relative to the install directory (the executable's
    /// first).
    pub library_dirs: Vec<PathBuf>,
    /// Every shared library (`lib*.so`, `lib*.so.*`), relative to the install directory: the
    /// ggml backend libraries among them show the backend. `None` in records written before
    /// they were kept (the install is scanned again).
    #[serde(default)]
    pub libraries: Option<Vec<PathBuf>>,
    /// Size of the executable at install time.
    pub executable_size: u64,
    /// Modification time of the executable at install time, in nanoseconds since the epoch.
    pub executable_mtime: u64,
    /// What the executable printed for the version arguments (first lines, stdout and stderr).
    pub version_output: Option<String>,
    /// The flag probe's options that the server's help listed; `None` when no probe ran
    /// (records written before probes were kept: the server gets none of them).
    #[serde(default)]
    pub supported_flags: Option<Vec<String>>,
    /// When the install finished (seconds since the Unix epoch, from the Clock port).
    pub installed_at_unix: u64,
}

/// Installs prebuilt engines from pinned URLs: policy check, resumable verified download, safe
/// unpack, one version run through the Shell port, atomic install. See the crate documentation.
pub struct BinaryArtifactInstaller {
    fetcher: Arc<dyn Fetcher>,
    shell: Arc<dyn Shell>,
    policy: Arc<dyn Policy>,
    progress: Arc<dyn Progress>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for BinaryArtifactInstaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinaryArtifactInstaller")
            .finish_non_exhaustive()
    }
}

/// The install key of a spec: `<algorithm>-<first 16 hex digits of the pinned checksum>`.
pub fn install_key(spec: &BinaryInstallSpec) -> String {
    // One definition, shared with the config check that finds pools installing into one place.
    spec.checksum.cache_key()
}

/// The file extension downloads of a format are stored with.
fn download_extension(format: ArchiveFormat) -> &'static str {
    match format {
        ArchiveFormat::Bare => "bin",
        other => other.as_str(),
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn mtime_nanos(metadata: &std::fs::Metadata) -> u64 {
    let seconds = u64::try_from(metadata.mtime()).unwrap_or(0);
    let nanos = u64::try_from(metadata.mtime_nsec()).unwrap_or(0);
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// A relative path of plain names only (metadata is re-checked before it is trusted).
fn plain_relative(path: &Path) -> bool {
    !path.as_os_str().is_empty()
        && path
            .components()
            .all(|component| matches!(component, Component::Normal(_)))
}

fn check_failed(message: String, hint: &str) -> Error {
    Error::BuildCheck {
        message,
        hint: Some(hint.to_string()),
    }
}

/// Whether an installed artefact still is what its metadata says, cheaply: no hashing, no
/// process.
fn installed_ok(
    installed: &Installed<BinaryInstallMetadata>,
    spec: &BinaryInstallSpec,
    key: &str,
    url: &str,
) -> bool {
    let metadata = &installed.metadata;
    let pinned_matches = spec.checksum == metadata.checksum;
    if metadata.format != METADATA_FORMAT
        || metadata.key != key
        || metadata.url != url
        || !pinned_matches
        || !plain_relative(&metadata.executable)
        || !metadata.library_dirs.iter().all(|dir| plain_relative(dir))
        || !metadata
            .libraries
            .iter()
            .flatten()
            .all(|file| plain_relative(file))
        || !is_the_server(spec, &metadata.executable)
    {
        return false;
    }
    let Ok(file) = std::fs::symlink_metadata(installed.dir.join(&metadata.executable)) else {
        return false;
    };
    file.is_file()
        && file.permissions().mode() & 0o111 != 0
        && file.len() == metadata.executable_size
        && mtime_nanos(&file) == metadata.executable_mtime
}

/// Whether `relative` (where an install found its server) is what `spec` asks for now: the
/// configured path or name, else the engine's name or one of its older names.
fn is_the_server(spec: &BinaryInstallSpec, relative: &Path) -> bool {
    let name = relative.file_name().and_then(|n| n.to_str());
    match &spec.configured {
        Some(member) if member.is_file_name() => name == Some(member.as_str()),
        // A path; a bare download keeps only its file name.
        Some(member) => {
            relative == Path::new(member.as_str())
                || relative.parent() == Some(Path::new(""))
                    && name == member.as_str().rsplit('/').next()
        }
        None => name.is_some_and(|name| {
            name == spec.executable || spec.older_names.iter().any(|older| older == name)
        }),
    }
}

/// Finds the server in the unpacked tree at `root`: the configured path or file name, else the
/// engine's server name, else its older names (with a note saying so). Exactly one file must
/// match; otherwise the error lists what the archive holds.
fn locate_server(root: &Path, spec: &BinaryInstallSpec) -> Result<(PathBuf, Option<String>)> {
    if let Some(member) = spec.configured.as_ref().filter(|m| !m.is_file_name()) {
        let path = root.join(member.as_str());
        let is_file = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
        if is_file {
            return Ok((PathBuf::from(member.as_str()), None));
        }
        return Err(not_in_archive(
            root,
            format!("the archive has no file `{member}` (provisioning.binary.executable)"),
        ));
    }
    let wanted: Vec<&str> = match &spec.configured {
        Some(member) => vec![member.as_str()],
        None => std::iter::once(spec.executable.as_str())
            .chain(spec.older_names.iter().map(String::as_str))
            .collect(),
    };
    for (position, name) in wanted.iter().enumerate() {
        let found = find_named(root, name)?;
        match found.as_slice() {
            [] => continue,
            [one] => {
                let note = (position > 0).then(|| {
                    format!(
                        "the archive has no `{}`; using `{}`, the name of {}'s server in older releases",
                        spec.executable,
                        one.display(),
                        spec.engine.label()
                    )
                });
                return Ok((one.clone(), note));
            }
            several => {
                let listed: Vec<String> = several
                    .iter()
                    .map(|path| display_name(path.as_os_str().as_bytes()))
                    .collect();
                return Err(check_failed(
                    format!(
                        "the archive has several files named `{name}`: {}",
                        listed.join(", ")
                    ),
                    "set provisioning.binary.executable to the server's path in the archive (one of the above)",
                ));
            }
        }
    }
    let names: Vec<String> = wanted.iter().map(|n| format!("`{n}`")).collect();
    Err(not_in_archive(
        root,
        format!("the archive has no file named {}", names.join(" or ")),
    ))
}

/// The server was not found: the error lists what the archive holds (executables first).
fn not_in_archive(root: &Path, message: String) -> Error {
    const SHOWN: usize = 15;
    let mut executables = Vec::new();
    let mut others = Vec::new();
    let _ = walk(root, Path::new(""), &mut |relative, file_type| {
        if !file_type.is_file() {
            return;
        }
        let shown = display_name(relative.as_os_str().as_bytes());
        let executable = std::fs::symlink_metadata(root.join(relative))
            .is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
        if executable {
            executables.push(format!("{shown} (executable)"));
        } else {
            others.push(shown);
        }
    });
    executables.sort();
    others.sort();
    let total = executables.len() + others.len();
    let mut listed: Vec<String> = executables.into_iter().chain(others).take(SHOWN).collect();
    if total > SHOWN {
        listed.push(format!("… and {} more", total - SHOWN));
    }
    let holds = if listed.is_empty() {
        "no files".to_string()
    } else {
        listed.join(", ")
    };
    check_failed(
        format!("{message}; it holds: {holds}"),
        "set provisioning.binary.executable to the server's path in the archive (e.g. build/bin/llama-server), or point provisioning.binary.url at an archive with the server",
    )
}

/// Regular files named `name` under `root` (symbolic links are not followed), relative.
fn find_named(root: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    walk(root, Path::new(""), &mut |relative, file_type| {
        if file_type.is_file() && relative.file_name() == Some(std::ffi::OsStr::new(name)) {
            found.push(relative.to_path_buf());
        }
    })?;
    found.sort();
    Ok(found)
}

/// Files (or links) under `root` named `lib*.so` or `lib*.so.*`, relative, sorted.
fn shared_libraries(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    walk(root, Path::new(""), &mut |relative, file_type| {
        let is_library = (file_type.is_file() || file_type.is_symlink())
            && relative
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| {
                    name.starts_with("lib") && (name.ends_with(".so") || name.contains(".so."))
                });
        if is_library {
            files.push(relative.to_path_buf());
        }
    })?;
    files.sort();
    Ok(files)
}

/// The directories holding `libraries`, relative; `first` leads.
fn library_dirs(libraries: &[PathBuf], first: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for library in libraries {
        let dir = library.parent().unwrap_or(Path::new("")).to_path_buf();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs.sort();
    if let Some(position) = dirs.iter().position(|dir| dir == first) {
        let dir = dirs.remove(position);
        dirs.insert(0, dir);
    }
    dirs
}

fn walk(
    root: &Path,
    relative: &Path,
    visit: &mut dyn FnMut(&Path, std::fs::FileType),
) -> Result<()> {
    let dir = root.join(relative);
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
        let file_type = entry
            .file_type()
            .map_err(|e| Error::io("inspect", entry.path(), e))?;
        let child = relative.join(entry.file_name());
        visit(&child, file_type);
        if file_type.is_dir() {
            walk(root, &child, visit)?;
        }
    }
    Ok(())
}

/// What the cold path decided before the transaction.
struct Plan<'a> {
    spec: &'a BinaryInstallSpec,
    key: &'a str,
    url: &'a str,
    format: ArchiveFormat,
    download: PathBuf,
}

impl BinaryArtifactInstaller {
    /// An installer over the given ports.
    pub fn new(
        fetcher: Arc<dyn Fetcher>,
        shell: Arc<dyn Shell>,
        policy: Arc<dyn Policy>,
        progress: Arc<dyn Progress>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        BinaryArtifactInstaller {
            fetcher,
            shell,
            policy,
            progress,
            clock,
        }
    }

    fn report(&self, event: ProgressEvent) {
        self.progress.report(event);
    }

    fn artifact(installed: Installed<BinaryInstallMetadata>, cache_hit: bool) -> BinaryArtifact {
        let dir = installed.dir;
        let metadata = installed.metadata;
        let libraries = match metadata.libraries {
            Some(libraries) => libraries,
            // A record from before libraries were kept: the install is what it was.
            None => shared_libraries(&dir).unwrap_or_default(),
        };
        BinaryArtifact {
            executable: dir.join(&metadata.executable),
            library_dirs: metadata
                .library_dirs
                .iter()
                .map(|relative| dir.join(relative))
                .collect(),
            libraries: libraries
                .iter()
                .map(|relative| dir.join(relative))
                .collect(),
            checksum: metadata.checksum,
            bytes: metadata.bytes,
            version_output: metadata.version_output,
            supported_flags: metadata.supported_flags.unwrap_or_default(),
            key: metadata.key,
            cache_hit,
            metadata_file: installed.metadata_file,
            dir,
        }
    }

    /// Gets the verified download: a complete earlier download when it still verifies, else
    /// through the Fetcher port.
    async fn download(&self, plan: &Plan<'_>) -> Result<(Checksum, u64)> {
        let spec = plan.spec;
        let expected = &spec.checksum;
        if plan.download.is_file() {
            let path = plan.download.clone();
            let algorithm = expected.algorithm;
            let verified = tokio::task::spawn_blocking(move || hash_file(&path, algorithm))
                .await
                .ok()
                .and_then(|result| result.ok());
            match verified {
                Some((checksum, bytes))
                    if checksum == *expected && spec.size.is_none_or(|size| size == bytes) =>
                {
                    self.report(ProgressEvent::Note {
                        message: format!("using the verified download {}", plan.download.display()),
                    });
                    return Ok((checksum, bytes));
                }
                _ => {
                    let _ = std::fs::remove_file(&plan.download);
                }
            }
        }
        let fetched = self
            .fetcher
            .fetch(&FetchRequest {
                url: spec.url.clone(),
                destination: plan.download.clone(),
                expected: Some(spec.checksum.clone()),
                max_bytes: spec.size,
                authorization: None,
            })
            .await?;
        if let Some(size) = spec.size
            && fetched.bytes != size
        {
            let _ = std::fs::remove_file(&fetched.path);
            return Err(Error::Download {
                url: plan.url.to_string(),
                message: format!(
                    "size mismatch: expected {size} bytes, got {}",
                    fetched.bytes
                ),
                hint: Some("check provisioning.binary.size against the published file".to_string()),
            });
        }
        Ok((fetched.checksum, fetched.bytes))
    }

    /// The work inside the install transaction: download, unpack, find, check, describe.
    async fn install(&self, plan: &Plan<'_>, staging: Staging) -> Result<BinaryInstallMetadata> {
        let spec = plan.spec;
        let (checksum, bytes) = self.download(plan).await?;

        let step = format!("unpack {}", plan.key);
        self.report(ProgressEvent::Started {
            step: step.clone(),
            detail: Some(format!("{} archive", plan.format.as_str())),
        });
        let archive = plan.download.clone();
        let out = staging.out.clone();
        let format = plan.format;
        let limits = spec.limits;
        // A bare download is the server itself, saved under the name looked for.
        let bare_name = spec
            .configured
            .as_ref()
            .and_then(|member| member.as_str().rsplit('/').next())
            .unwrap_or(&spec.executable)
            .to_string();
        let executable_name = bare_name.clone();
        tokio::task::spawn_blocking(move || {
            if format == ArchiveFormat::Bare {
                copy_executable(&archive, &out, &executable_name, limits)
            } else {
                unpack(&archive, format, &out, limits)
            }
        })
        .await
        .map_err(|error| Error::data("unpack", plan.download.clone(), error))?
        .map_err(|error| {
            // An archive that cannot be unpacked is not kept for a later run: resuming is for
            // interrupted transfers only.
            let _ = std::fs::remove_file(&plan.download);
            match error {
                // Name what the user configured, not our download file.
                Error::HostileArchive { message, .. } => Error::HostileArchive {
                    archive: spec.url.to_string(),
                    message,
                },
                other => other,
            }
        })?;
        self.report(ProgressEvent::Finished { step });

        let executable = if plan.format == ArchiveFormat::Bare {
            PathBuf::from(&bare_name)
        } else {
            let (executable, note) = locate_server(&staging.out, spec)?;
            if let Some(message) = note {
                self.report(ProgressEvent::Note { message });
            }
            executable
        };
        let executable_path = staging.out.join(&executable);
        let metadata = std::fs::symlink_metadata(&executable_path)
            .map_err(|e| Error::io("inspect", &executable_path, e))?;
        if metadata.permissions().mode() & 0o111 == 0 {
            // Archives made without Unix modes (zip) lose the bit; this one file is meant to run.
            std::fs::set_permissions(&executable_path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io("chmod", &executable_path, e))?;
        }
        let executable_dir = executable.parent().unwrap_or(Path::new("")).to_path_buf();
        let libraries = shared_libraries(&staging.out)?;
        let library_dirs = library_dirs(&libraries, &executable_dir);

        let server = InstalledServer {
            executable: &executable,
            executable_dir: &executable_dir,
            library_dirs: &library_dirs,
        };
        let version_output = self.version_run(spec, &staging, &server).await?;
        let supported_flags = self.flag_run(spec, &staging, &server).await;

        let metadata = std::fs::symlink_metadata(&executable_path)
            .map_err(|e| Error::io("inspect", &executable_path, e))?;
        Ok(BinaryInstallMetadata {
            format: METADATA_FORMAT,
            engine: spec.engine,
            key: plan.key.to_string(),
            url: plan.url.to_string(),
            checksum,
            bytes,
            executable,
            library_dirs,
            libraries: Some(libraries),
            executable_size: metadata.len(),
            executable_mtime: mtime_nanos(&metadata),
            version_output,
            supported_flags: spec.flag_probe.is_some().then_some(supported_flags),
            installed_at_unix: unix_seconds(self.clock.now()),
        })
    }

    /// Runs `<executable> <version_args>` once, through the Shell port.
    async fn version_run(
        &self,
        spec: &BinaryInstallSpec,
        staging: &Staging,
        server: &InstalledServer<'_>,
    ) -> Result<Option<String>> {
        if spec.version_args.is_empty() {
            return Ok(None);
        }
        let command = server.command(staging, &spec.version_args);
        run_version(
            self.shell.as_ref(),
            self.progress.as_ref(),
            &VersionRun {
                step: format!("check {}", spec.executable),
                command: &command,
                timeout: DEFAULT_VERSION_TIMEOUT,
                failure_hint: "the prebuilt binary does not run on this host: a missing shared library, another CPU architecture or an older glibc are the usual causes; pick the release asset built for this system",
            },
        )
        .await
    }

    /// An install recorded before flag probes were kept learns its flags now, once, and the
    /// record is amended (a failure to amend only costs a probe next time).
    async fn learn_flags(
        &self,
        spec: &BinaryInstallSpec,
        installed: Installed<BinaryInstallMetadata>,
    ) -> Installed<BinaryInstallMetadata> {
        let Some(probe) = &spec.flag_probe else {
            return installed;
        };
        let metadata = &installed.metadata;
        let command = InstalledServer {
            executable: &metadata.executable,
            executable_dir: metadata.executable.parent().unwrap_or(Path::new("")),
            library_dirs: &metadata.library_dirs,
        }
        .command_in(&installed.dir, &probe.args);
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

    /// Runs the spec's flag probe (`<executable> --help`) once; never fails.
    async fn flag_run(
        &self,
        spec: &BinaryInstallSpec,
        staging: &Staging,
        server: &InstalledServer<'_>,
    ) -> Vec<String> {
        let Some(probe) = &spec.flag_probe else {
            return Vec::new();
        };
        let command = server.command(staging, &probe.args);
        probe_flags(
            self.shell.as_ref(),
            self.progress.as_ref(),
            &command,
            probe,
            HELP_TIMEOUT,
        )
        .await
    }
}

/// The unpacked server, relative to its install (staging) directory, as version and help runs
/// start it.
struct InstalledServer<'a> {
    executable: &'a Path,
    executable_dir: &'a Path,
    library_dirs: &'a [PathBuf],
}

impl InstalledServer<'_> {
    /// `<executable> <args>` in its own directory, with the shipped libraries first on
    /// `LD_LIBRARY_PATH`, in the staging directory's process group file.
    fn command(&self, staging: &Staging, args: &[String]) -> CommandSpec {
        let mut command = self.command_in(&staging.out, args);
        command.group_file = Some(staging.group_file.clone());
        command
    }

    /// `<executable> <args>` of the install under `out`. Of this process's environment it
    /// inherits the base list only ([`provisioner_core::BASE_ENV`]), like every probe of an
    /// installed server; `LD_LIBRARY_PATH` is passed explicitly.
    fn command_in(&self, out: &Path, args: &[String]) -> CommandSpec {
        let mut paths: Vec<String> = self
            .library_dirs
            .iter()
            .map(|dir| out.join(dir).display().to_string())
            .collect();
        if let Some(inherited) = std::env::var_os("LD_LIBRARY_PATH")
            .and_then(|value| value.into_string().ok())
            .filter(|value| !value.is_empty())
        {
            paths.push(inherited);
        }
        let mut command = CommandSpec::new(
            &out.join(self.executable).display().to_string(),
            args.iter().cloned(),
        )
        .cwd(out.join(self.executable_dir));
        if !paths.is_empty() {
            command = command.env("LD_LIBRARY_PATH", paths.join(":"));
        }
        command
    }
}

#[async_trait]
impl BinaryInstaller for BinaryArtifactInstaller {
    async fn ensure_installed(&self, spec: &BinaryInstallSpec) -> Result<BinaryArtifact> {
        if spec.executable.is_empty()
            || !plain_relative(Path::new(&spec.executable))
            || spec.executable.contains('/')
        {
            return Err(check_failed(
                format!("executable `{}` must be a plain file name", spec.executable),
                "set provisioning.binary.executable to the file name, e.g. llama-server",
            ));
        }
        let install_root = std::path::absolute(&spec.install_root)
            .map_err(|e| Error::io("resolve", &spec.install_root, e))?;
        let key = install_key(spec);
        let url = spec.url.redacted();
        let root = InstallRoot::new(&install_root, "", self.progress.clone());
        let is_valid = |installed: &Installed<BinaryInstallMetadata>| {
            installed_ok(installed, spec, &key, &url)
        };

        // Warm path: no lock, no network, no process.
        if let Some(installed) = root.lookup(&key, &is_valid) {
            sweep_downloads(&install_root.join(DOWNLOADS_DIR), &key);
            self.report(ProgressEvent::Note {
                message: format!(
                    "{} {key} is installed at {} (cache hit)",
                    spec.engine,
                    installed.dir.display()
                ),
            });
            let installed = self.learn_flags(spec, installed).await;
            return Ok(Self::artifact(installed, true));
        }

        self.policy.check(&Action::Download {
            url: spec.url.clone(),
            allowed_by_config: spec.allowed_by_config,
        })?;

        let format = ArchiveFormat::from_url(&spec.url);
        let plan = Plan {
            spec,
            key: &key,
            url: &url,
            format,
            download: install_root
                .join(DOWNLOADS_DIR)
                .join(format!("{key}.{}", download_extension(format))),
        };
        let installed = root
            .install(&key, &is_valid, |staging| self.install(&plan, staging))
            .await?;
        if installed.fresh {
            match std::fs::remove_file(&plan.download) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(path = %plan.download.display(), %error, "cannot remove the installed download");
                }
            }
        }
        let cache_hit = !installed.fresh;
        Ok(Self::artifact(installed, cache_hit))
    }
}

/// Removes what a run killed after its install was committed left in `downloads/` for `key`
/// (the verified download, a partial one): once `key` is installed, nothing resumes them.
fn sweep_downloads(downloads: &Path, key: &str) {
    let Ok(entries) = std::fs::read_dir(downloads) else {
        return;
    };
    let prefix = format!("{key}.");
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(&prefix))
        {
            let path = entry.path();
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "cannot remove a leftover download");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let spec = BinaryInstallSpec {
            engine: Engine::Llamacpp,
            install_root: PathBuf::from("/x"),
            url: "https://example.com/a.tar.gz".parse().unwrap(),
            checksum: Checksum::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap(),
            size: None,
            allowed_by_config: None,
            executable: "llama-server".to_string(),
            older_names: Vec::new(),
            configured: None,
            version_args: vec![],
            limits: Default::default(),
            flag_probe: None,
        };
        assert_eq!(install_key(&spec), "sha256-abababababababab");
    }

    #[test]
    fn plain_relative_paths() {
        assert!(plain_relative(Path::new("bin/x")));
        assert!(!plain_relative(Path::new("../x")));
        assert!(!plain_relative(Path::new("/x")));
        assert!(!plain_relative(Path::new("")));
    }
}
