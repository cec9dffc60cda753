//! Unpacking downloaded archives without trusting them.
//!
//! Every entry is checked before anything is written for it, and everything is written by this
//! module (never by the archive crates' own `unpack`):
//!
//! - paths must be relative, without `..` and without NUL bytes; `.` components are dropped;
//! - nothing is written through a symbolic link: every parent of an entry must be a real
//!   directory (links already unpacked included), and files are created with `create_new`, so an
//!   entry can neither replace nor follow an earlier one;
//! - symbolic links must be relative, may only climb with leading `..` components, and must stay
//!   inside the destination when resolved from their own directory (a link cannot be used to
//!   climb out through another link: `..` after a name is refused);
//! - hard links must point at a regular file this archive already unpacked;
//! - device, fifo and socket entries and sparse files are refused;
//! - `max_entries` counts entries as they come, `max_bytes` counts the bytes actually written
//!   (a header or a zip directory that claims less than the data holds changes nothing), and tar
//!   metadata between entries (long names, pax headers) is capped at 1 MiB;
//! - files get mode 0644, or 0755 when the archive marks them executable; directories 0755.
//!   setuid, setgid, sticky and group/world write bits are never applied; owners, times and
//!   extended attributes are not restored.
//!
//! On error the destination may hold part of the archive: unpack into a scratch directory that
//! is discarded on failure (the installer unpacks into its staging directory). Errors are
//! [`Error::HostileArchive`] naming the archive, the entry and the rule it broke, or
//! [`Error::Io`] for the disk.

use std::cell::Cell;
use std::ffi::OsStr;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use provisioner_core::{ArchiveFormat, Error, Result, UnpackLimits};

use crate::hash::BUFFER_SIZE;

/// Tar bytes allowed between two entries' data (headers, long names, pax records, padding).
const METADATA_BUDGET: u64 = 1024 * 1024;
/// Longest symbolic link target read from a zip archive.
const MAX_LINK_TARGET: u64 = 4096;
/// Memory limit for the xz decoder's dictionary, in KiB.
const XZ_MEMORY_LIMIT_KIB: u32 = 512 * 1024;

const MODE_FILE: u32 = 0o644;
const MODE_EXECUTABLE: u32 = 0o755;
const MODE_DIRECTORY: u32 = 0o755;

const S_IFMT: u32 = 0o170_000;
const S_IFSOCK: u32 = 0o140_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFREG: u32 = 0o100_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFIFO: u32 = 0o010_000;

/// What an unpack wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Entries read (files, directories, links).
    pub entries: u64,
    /// Bytes written to regular files.
    pub bytes: u64,
    /// Regular files written (hard links included), relative to the destination.
    pub files: Vec<PathBuf>,
    /// Symbolic links created, relative to the destination.
    pub symlinks: Vec<PathBuf>,
    /// Directories created (explicit entries and implied parents), relative to the destination.
    pub directories: Vec<PathBuf>,
}

/// Unpacks `archive` into `dest` (created when missing) under `limits`; see the module docs for
/// the rules. [`ArchiveFormat::Bare`] copies the file in under its own file name; use
/// [`copy_executable`] to choose the name.
pub fn unpack(
    archive: &Path,
    format: ArchiveFormat,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<UnpackReport> {
    if format == ArchiveFormat::Bare {
        let name =
            archive
                .file_name()
                .and_then(OsStr::to_str)
                .ok_or_else(|| Error::BuildCheck {
                    message: format!("{} has no usable file name", archive.display()),
                    hint: None,
                })?;
        return copy_executable(archive, dest, name, limits);
    }
    prepare_dest(dest)?;
    let mut extractor = Extractor::new(dest, limits);
    unpack_into(archive, format, &mut extractor).map_err(|e| with_archive(e, archive))?;
    Ok(extractor.report)
}

fn unpack_into(archive: &Path, format: ArchiveFormat, extractor: &mut Extractor) -> Result<()> {
    match format {
        ArchiveFormat::TarGz => {
            let reader = flate2::read::MultiGzDecoder::new(open(archive)?);
            unpack_tar(Box::new(reader), extractor)?;
        }
        ArchiveFormat::TarZst => {
            let reader = ZstdFrames::new(open(archive)?)
                .map_err(|error| corrupt(format!("not a zstd stream: {error}")))?;
            unpack_tar(Box::new(reader), extractor)?;
        }
        ArchiveFormat::TarXz => {
            let reader =
                lzma_rust2::XzReader::new_mem_limit(open(archive)?, true, XZ_MEMORY_LIMIT_KIB);
            unpack_tar(Box::new(reader), extractor)?;
        }
        ArchiveFormat::Zip => unpack_zip(archive, extractor)?,
        ArchiveFormat::Bare => {
            return Err(corrupt("a bare file is copied, not unpacked"));
        }
    }
    Ok(())
}

/// Installs a bare executable: copies `file` to `dest/name` with mode 0755, under the byte
/// limit. `name` must be a plain file name.
pub fn copy_executable(
    file: &Path,
    dest: &Path,
    name: &str,
    limits: UnpackLimits,
) -> Result<UnpackReport> {
    let plain = Path::new(name);
    let mut components = plain.components();
    if !matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    ) || name.contains('\0')
    {
        return Err(Error::BuildCheck {
            message: format!(
                "executable name `{}` must be a plain file name",
                display_name(name.as_bytes())
            ),
            hint: Some(
                "set provisioning.binary.executable to a file name such as llama-server"
                    .to_string(),
            ),
        });
    }
    prepare_dest(dest)?;
    let mut extractor = Extractor::new(dest, limits);
    let mut source = File::open(file).map_err(|e| Error::io("open", file, e))?;
    let size = source
        .metadata()
        .map_err(|e| Error::io("inspect", file, e))?
        .len();
    extractor.count(name)?;
    extractor.file(name, plain, true, Some(size), &mut source)?;
    Ok(extractor.report)
}

fn open(path: &Path) -> Result<BufReader<File>> {
    File::open(path)
        .map(|file| BufReader::with_capacity(BUFFER_SIZE, file))
        .map_err(|e| Error::io("open", path, e))
}

fn prepare_dest(dest: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(MODE_DIRECTORY)
        .create(dest)
        .map_err(|e| Error::io("create", dest, e))?;
    if !dest.is_dir() {
        return Err(Error::data("unpack into", dest, "not a directory"));
    }
    Ok(())
}

/// An entry that breaks a rule (the archive is named by [`unpack`], which knows it).
fn rejected(entry: &str, rule: impl std::fmt::Display) -> Error {
    Error::HostileArchive {
        archive: String::new(),
        message: format!("entry `{entry}`: {rule}"),
    }
}

/// An archive that cannot be read as its format.
fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::HostileArchive {
        archive: String::new(),
        message: format!("cannot be read: {what}; it is malformed or hostile"),
    }
}

/// Names the archive in the errors of the unpackers.
fn with_archive(error: Error, archive: &Path) -> Error {
    match error {
        Error::HostileArchive {
            archive: name,
            message,
        } if name.is_empty() => Error::HostileArchive {
            archive: archive.display().to_string(),
            message,
        },
        other => other,
    }
}

/// An entry name safe to show: control characters escaped, length capped.
pub(crate) fn display_name(raw: &[u8]) -> String {
    const MAX_CHARS: usize = 200;
    let text = String::from_utf8_lossy(raw);
    let mut shown = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == MAX_CHARS {
            shown.push('…');
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// An entry's path made relative and checked; `None` for the archive root (`.`, `./`).
fn relative_path(raw: &Path) -> std::result::Result<Option<PathBuf>, String> {
    if raw.as_os_str().is_empty() {
        return Err("empty path".to_string());
    }
    if raw.as_os_str().as_bytes().contains(&0) {
        return Err("the path contains a NUL byte".to_string());
    }
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => {
                return Err("absolute paths are not allowed".to_string());
            }
            Component::ParentDir => {
                return Err(
                    "`..` components are not allowed (the path would leave the destination)"
                        .to_string(),
                );
            }
            Component::CurDir => {}
            Component::Normal(part) => out.push(part),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Checks a symbolic link target against the link's place in the tree (see the module docs).
fn check_symlink_target(rel: &Path, target: &Path) -> std::result::Result<(), String> {
    let shown = display_name(target.as_os_str().as_bytes());
    if target.as_os_str().is_empty() {
        return Err("symbolic link with an empty target".to_string());
    }
    if target.as_os_str().as_bytes().contains(&0) {
        return Err("symbolic link target contains a NUL byte".to_string());
    }
    // Directories between the destination and the link.
    let depth = rel.components().count().saturating_sub(1);
    let mut climbs = 0usize;
    let mut named = false;
    for component in target.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => {
                return Err(format!(
                    "symbolic link to the absolute path `{shown}` is not allowed"
                ));
            }
            Component::CurDir => {}
            Component::ParentDir if named => {
                return Err(format!(
                    "symbolic link target `{shown}` has `..` after a name; only leading `..` are allowed"
                ));
            }
            Component::ParentDir => {
                climbs += 1;
                if climbs > depth {
                    return Err(format!(
                        "symbolic link target `{shown}` points outside the archive"
                    ));
                }
            }
            Component::Normal(_) => named = true,
        }
    }
    Ok(())
}

/// Writes entries under a destination, enforcing the limits.
struct Extractor<'a> {
    dest: &'a Path,
    limits: UnpackLimits,
    report: UnpackReport,
    buffer: Vec<u8>,
}

impl<'a> Extractor<'a> {
    fn new(dest: &'a Path, limits: UnpackLimits) -> Self {
        Extractor {
            dest,
            limits,
            report: UnpackReport::default(),
            buffer: vec![0u8; BUFFER_SIZE],
        }
    }

    fn count(&mut self, name: &str) -> Result<()> {
        self.report.entries += 1;
        if self.report.entries > self.limits.max_entries {
            return Err(rejected(
                name,
                format!(
                    "the archive has more than {} entries (limit max_entries)",
                    self.limits.max_entries
                ),
            ));
        }
        Ok(())
    }

    /// Makes sure every parent of `rel` is a real directory, creating missing ones.
    fn prepare_parents(&mut self, name: &str, rel: &Path) -> Result<()> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut relative = PathBuf::new();
        for component in parent.components() {
            relative.push(component);
            let path = self.dest.join(&relative);
            match std::fs::symlink_metadata(&path) {
                Ok(metadata) if metadata.is_dir() => {}
                Ok(metadata) if metadata.file_type().is_symlink() => {
                    return Err(rejected(
                        name,
                        format!(
                            "its parent `{}` is a symbolic link; nothing is written through links",
                            relative.display()
                        ),
                    ));
                }
                Ok(_) => {
                    return Err(rejected(
                        name,
                        format!("its parent `{}` is not a directory", relative.display()),
                    ));
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    self.make_directory(&path)?;
                    self.report.directories.push(relative.clone());
                }
                Err(error) => return Err(Error::io("inspect", &path, error)),
            }
        }
        Ok(())
    }

    fn make_directory(&self, path: &Path) -> Result<()> {
        DirBuilder::new()
            .mode(MODE_DIRECTORY)
            .create(path)
            .map_err(|e| Error::io("create", path, e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(MODE_DIRECTORY))
            .map_err(|e| Error::io("chmod", path, e))
    }

    fn directory(&mut self, name: &str, rel: &Path) -> Result<()> {
        self.prepare_parents(name, rel)?;
        let path = self.dest.join(rel);
        match std::fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.is_dir() => Ok(()),
            Ok(_) => Err(rejected(
                name,
                "a file or link of that name was already unpacked (duplicate entry)",
            )),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                self.make_directory(&path)?;
                self.report.directories.push(rel.to_path_buf());
                Ok(())
            }
            Err(error) => Err(Error::io("inspect", &path, error)),
        }
    }

    fn file(
        &mut self,
        name: &str,
        rel: &Path,
        executable: bool,
        declared: Option<u64>,
        reader: &mut dyn Read,
    ) -> Result<()> {
        let max = self.limits.max_bytes;
        let remaining = max.saturating_sub(self.report.bytes);
        if let Some(declared) = declared
            && declared > remaining
        {
            return Err(rejected(
                name,
                format!(
                    "it holds {declared} bytes, more than the {remaining} bytes left of the unpack limit (max_bytes {max})"
                ),
            ));
        }
        self.prepare_parents(name, rel)?;
        let path = self.dest.join(rel);
        let mode = if executable {
            MODE_EXECUTABLE
        } else {
            MODE_FILE
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|error| {
                if error.kind() == std::io::ErrorKind::AlreadyExists {
                    rejected(
                        name,
                        "something of that name was already unpacked (duplicate entry)",
                    )
                } else {
                    Error::io("create", &path, error)
                }
            })?;
        loop {
            let read = match reader.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    return Err(rejected(name, format!("cannot read its data: {error}")));
                }
            };
            if self.report.bytes + read as u64 > max {
                return Err(rejected(
                    name,
                    format!(
                        "unpacking it exceeds the limit of {max} bytes (max_bytes); the archive expands to more than it declares"
                    ),
                ));
            }
            file.write_all(&self.buffer[..read])
                .map_err(|e| Error::io("write", &path, e))?;
            self.report.bytes += read as u64;
        }
        // The creation mode went through the umask; make the result exact.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("chmod", &path, e))?;
        self.report.files.push(rel.to_path_buf());
        Ok(())
    }

    fn symlink(&mut self, name: &str, rel: &Path, target: &Path) -> Result<()> {
        check_symlink_target(rel, target).map_err(|rule| rejected(name, rule))?;
        self.prepare_parents(name, rel)?;
        let path = self.dest.join(rel);
        std::os::unix::fs::symlink(target, &path).map_err(|error| {
            if error.kind() == std::io::ErrorKind::AlreadyExists {
                rejected(
                    name,
                    "something of that name was already unpacked (duplicate entry)",
                )
            } else {
                Error::io("symlink", &path, error)
            }
        })?;
        self.report.symlinks.push(rel.to_path_buf());
        Ok(())
    }

    fn hardlink(&mut self, name: &str, rel: &Path, target: &Path) -> Result<()> {
        let shown = display_name(target.as_os_str().as_bytes());
        let target = match relative_path(target) {
            Ok(Some(target)) => target,
            Ok(None) => return Err(rejected(name, "hard link to the archive root")),
            Err(rule) => {
                return Err(rejected(
                    name,
                    format!("hard link target `{shown}` is outside the archive: {rule}"),
                ));
            }
        };
        // The target must be a regular file reached through real directories only.
        let mut relative = PathBuf::new();
        let mut components = target.components().peekable();
        while let Some(component) = components.next() {
            relative.push(component);
            let last = components.peek().is_none();
            let metadata = std::fs::symlink_metadata(self.dest.join(&relative)).ok();
            let fine = metadata.is_some_and(|metadata| {
                if last {
                    metadata.is_file()
                } else {
                    metadata.is_dir()
                }
            });
            if !fine {
                return Err(rejected(
                    name,
                    format!(
                        "hard link target `{shown}` is not a regular file unpacked earlier from this archive"
                    ),
                ));
            }
        }
        self.prepare_parents(name, rel)?;
        let path = self.dest.join(rel);
        std::fs::hard_link(self.dest.join(&target), &path).map_err(|error| {
            if error.kind() == std::io::ErrorKind::AlreadyExists {
                rejected(
                    name,
                    "something of that name was already unpacked (duplicate entry)",
                )
            } else {
                Error::io("link", &path, error)
            }
        })?;
        self.report.files.push(rel.to_path_buf());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// tar

/// Bytes the tar reader may consume, shared between the reader and the unpack loop.
#[derive(Default)]
struct Budget {
    consumed: Cell<u64>,
    limit: Cell<u64>,
    exceeded: Cell<bool>,
}

impl Budget {
    fn allow(&self, more: u64) {
        self.limit.set(self.consumed.get().saturating_add(more));
    }
}

/// A reader that fails once the budget is spent.
struct BudgetReader<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Read for BudgetReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self
            .budget
            .limit
            .get()
            .saturating_sub(self.budget.consumed.get());
        if left == 0 && !buf.is_empty() {
            self.budget.exceeded.set(true);
            return Err(std::io::Error::other(
                "tar metadata between entries exceeds its limit",
            ));
        }
        let cap = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let read = self.inner.read(&mut buf[..cap])?;
        self.budget
            .consumed
            .set(self.budget.consumed.get() + read as u64);
        Ok(read)
    }
}

fn unpack_tar(reader: Box<dyn Read + '_>, extractor: &mut Extractor<'_>) -> Result<()> {
    let budget = Rc::new(Budget::default());
    budget.allow(METADATA_BUDGET);
    let mut archive = tar::Archive::new(BudgetReader {
        inner: reader,
        budget: budget.clone(),
    });
    let mut last = String::from("(start of archive)");
    let read_error = |error: std::io::Error, last: &str, budget: &Budget| {
        if budget.exceeded.get() {
            corrupt(format!(
                "more than {METADATA_BUDGET} bytes of headers, long names or padding after entry `{last}`"
            ))
        } else {
            corrupt(format!("{error} (after entry `{last}`)"))
        }
    };
    let entries = archive
        .entries()
        .map_err(|error| read_error(error, &last, &budget))?;
    for entry in entries {
        let mut entry = entry.map_err(|error| read_error(error, &last, &budget))?;
        let raw = entry.path_bytes().into_owned();
        let name = display_name(&raw);
        extractor.count(&name)?;
        let rel = relative_path(Path::new(OsStr::from_bytes(&raw)))
            .map_err(|rule| rejected(&name, rule))?;
        let entry_type = entry.header().entry_type();
        let as_directory = entry_type.is_dir() || (entry_type.is_file() && raw.ends_with(b"/"));
        match (entry_type, rel) {
            (tar::EntryType::XGlobalHeader, _) => {}
            (_, None) if as_directory => {}
            (_, None) => {
                return Err(rejected(
                    &name,
                    "only a directory may name the archive root",
                ));
            }
            (_, Some(rel)) if as_directory => extractor.directory(&name, &rel)?,
            (tar::EntryType::Regular | tar::EntryType::Continuous, Some(rel)) => {
                let mode = entry
                    .header()
                    .mode()
                    .map_err(|error| rejected(&name, format!("unreadable mode: {error}")))?;
                let size = entry.size();
                budget.allow(size.saturating_add(METADATA_BUDGET));
                extractor.file(&name, &rel, mode & 0o111 != 0, Some(size), &mut entry)?;
            }
            (tar::EntryType::Symlink, Some(rel)) => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| rejected(&name, "symbolic link without a target"))?
                    .into_owned();
                extractor.symlink(&name, &rel, Path::new(OsStr::from_bytes(&target)))?;
            }
            (tar::EntryType::Link, Some(rel)) => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| rejected(&name, "hard link without a target"))?
                    .into_owned();
                extractor.hardlink(&name, &rel, Path::new(OsStr::from_bytes(&target)))?;
            }
            (tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo, _) => {
                return Err(rejected(&name, "device and fifo entries are not allowed"));
            }
            (tar::EntryType::GNUSparse, _) => {
                return Err(rejected(&name, "sparse files are not supported"));
            }
            (other, _) => {
                return Err(rejected(&name, format!("unsupported entry type {other:?}")));
            }
        }
        last = name;
        budget.allow(METADATA_BUDGET);
    }
    Ok(())
}

/// Decodes every zstd frame of a stream, one after the other.
struct ZstdFrames<R: BufRead> {
    decoder: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> std::io::Result<Self> {
        let decoder =
            ruzstd::decoding::StreamingDecoder::new(source).map_err(std::io::Error::other)?;
        Ok(ZstdFrames {
            decoder: Some(decoder),
        })
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(0);
            };
            let read = decoder.read(buf)?;
            if read > 0 || buf.is_empty() {
                return Ok(read);
            }
            // This frame is done; another may follow.
            let Some(decoder) = self.decoder.take() else {
                return Ok(0);
            };
            let mut source = decoder.into_inner();
            if source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            self.decoder = Some(
                ruzstd::decoding::StreamingDecoder::new(source).map_err(std::io::Error::other)?,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// zip

fn unpack_zip(archive: &Path, extractor: &mut Extractor<'_>) -> Result<()> {
    let mut zip =
        zip::ZipArchive::new(open(archive)?).map_err(|error| corrupt(format!("zip: {error}")))?;
    let count = zip.len();
    // The central directory lists every entry: refuse too many before writing anything.
    if u64::try_from(count).unwrap_or(u64::MAX) > extractor.limits.max_entries {
        let first_over = usize::try_from(extractor.limits.max_entries).unwrap_or(usize::MAX);
        let name = zip
            .name_for_index(first_over)
            .and_then(|name| name.ok())
            .map(|name| display_name(name.as_bytes()))
            .unwrap_or_default();
        return Err(rejected(
            &name,
            format!(
                "the archive has {count} entries, more than the limit of {} (max_entries)",
                extractor.limits.max_entries
            ),
        ));
    }
    for index in 0..count {
        let mut entry = zip
            .by_index(index)
            .map_err(|error| corrupt(format!("zip entry {index}: {error}")))?;
        let decoded = entry
            .name()
            .map_err(|error| corrupt(format!("zip entry {index}: {error}")))?
            .replace('\\', "/");
        let name = display_name(decoded.as_bytes());
        extractor.count(&name)?;
        let rel = relative_path(Path::new(&decoded)).map_err(|rule| rejected(&name, rule))?;
        let mode = entry.unix_mode();
        let file_type = mode.map(|mode| mode & S_IFMT);
        let is_directory = file_type == Some(S_IFDIR) || decoded.ends_with('/');
        let rel = match rel {
            Some(rel) => rel,
            None if is_directory => continue,
            None => {
                return Err(rejected(
                    &name,
                    "only a directory may name the archive root",
                ));
            }
        };
        match file_type {
            Some(S_IFCHR | S_IFBLK | S_IFIFO | S_IFSOCK) => {
                return Err(rejected(
                    &name,
                    "device, fifo and socket entries are not allowed",
                ));
            }
            Some(S_IFLNK) => {
                let mut target = Vec::new();
                (&mut entry)
                    .take(MAX_LINK_TARGET + 1)
                    .read_to_end(&mut target)
                    .map_err(|error| {
                        rejected(&name, format!("cannot read the link target: {error}"))
                    })?;
                if target.len() as u64 > MAX_LINK_TARGET {
                    return Err(rejected(&name, "symbolic link target is too long"));
                }
                extractor.symlink(&name, &rel, Path::new(OsStr::from_bytes(&target)))?;
            }
            _ if is_directory => extractor.directory(&name, &rel)?,
            None | Some(0 | S_IFREG) => {
                let executable = mode.is_some_and(|mode| mode & 0o111 != 0);
                let declared = entry.size();
                extractor.file(&name, &rel, executable, Some(declared), &mut entry)?;
            }
            Some(other) => {
                return Err(rejected(&name, format!("unsupported file type {other:o}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_inside() {
        assert_eq!(
            relative_path(Path::new("./a/./b")).unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(relative_path(Path::new("./")).unwrap(), None);
        assert!(
            relative_path(Path::new("/etc/x"))
                .unwrap_err()
                .contains("absolute")
        );
        assert!(
            relative_path(Path::new("a/../../x"))
                .unwrap_err()
                .contains("..")
        );
        assert!(relative_path(Path::new("")).is_err());
    }

    #[test]
    fn symlink_targets() {
        let ok = |rel: &str, target: &str| check_symlink_target(Path::new(rel), Path::new(target));
        assert!(ok("lib/libfoo.so", "libfoo.so.1").is_ok());
        assert!(ok("lib/libfoo.so", "../lib/libfoo.so.1").is_ok());
        assert!(ok("a/b/c", "../../x").is_ok());
        assert!(ok("a/root", "..").is_ok());
        assert!(ok("a", "../x").unwrap_err().contains("outside"));
        assert!(ok("a/b", "../../x").unwrap_err().contains("outside"));
        assert!(ok("a", "/").unwrap_err().contains("absolute"));
        assert!(ok("a/b", "c/../../x").unwrap_err().contains("after a name"));
        assert!(ok("a", "").is_err());
    }

    #[test]
    fn names_are_shown_safely() {
        assert_eq!(display_name(b"a\x1b[31mb"), "a\\u{1b}[31mb");
        assert_eq!(display_name(&[b'a'; 300]).chars().count(), 201);
    }
    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Paths as an archive may write them: plain names, `.`, `..`, empty components, and
        /// leading `/` or `./`.
        fn path_text() -> impl Strategy<Value = String> {
            let component = proptest::sample::select(vec![
                "a", "b", "lib", "..", ".", "", "...", "..a", "a..", " ", "\\",
            ]);
            (
                proptest::sample::select(vec!["", "/", "./", "//", "../"]),
                proptest::collection::vec(component, 0..6),
                any::<bool>(),
            )
                .prop_map(|(lead, parts, slash)| {
                    format!("{lead}{}{}", parts.join("/"), if slash { "/" } else { "" })
                })
        }

        /// Where `target`, read from the directory `dir` (relative to the destination), lands,
        /// resolving `..` lexically; `None` when it climbs above the destination or is absolute.
        fn lands(dir: &Path, target: &Path) -> Option<PathBuf> {
            let mut at: Vec<_> = dir.components().collect();
            for component in target.components() {
                match component {
                    Component::Prefix(_) | Component::RootDir => return None,
                    Component::CurDir => {}
                    Component::ParentDir => {
                        at.pop()?;
                    }
                    Component::Normal(_) => at.push(component),
                }
            }
            Some(at.iter().collect())
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 1000,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            /// An accepted entry path is relative, made of plain names only, and stays under
            /// the destination; one with `..` or a root is refused.
            #[test]
            fn accepted_entry_paths_stay_inside(raw in prop_oneof![path_text(), any::<String>()]) {
                match relative_path(Path::new(&raw)) {
                    Ok(Some(rel)) => {
                        prop_assert!(rel.is_relative());
                        prop_assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
                        prop_assert!(lands(Path::new(""), &rel).is_some());
                    }
                    Ok(None) => prop_assert!(Path::new(&raw).components().all(|c| c == Component::CurDir)),
                    Err(rule) => prop_assert!(!rule.is_empty()),
                }
                if Path::new(&raw).components().any(|c| matches!(c, Component::ParentDir | Component::RootDir)) {
                    prop_assert!(relative_path(Path::new(&raw)).is_err());
                }
            }

            /// A symbolic link target accepted for an accepted entry path never resolves above
            /// the destination, and has no `..` after a name (so no other link can take it out).
            #[test]
            fn accepted_link_targets_never_escape(
                raw in path_text(),
                target in prop_oneof![3 => path_text(), 1 => any::<String>()],
            ) {
                let Ok(Some(rel)) = relative_path(Path::new(&raw)) else {
                    return Ok(());
                };
                let target = Path::new(&target);
                if check_symlink_target(&rel, target).is_ok() {
                    let dir = rel.parent().unwrap_or(Path::new(""));
                    prop_assert!(lands(dir, target).is_some(), "{:?} -> {:?}", rel, target);
                    let mut named = false;
                    for component in target.components() {
                        match component {
                            Component::Normal(_) => named = true,
                            Component::ParentDir => prop_assert!(!named, "{:?}", target),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
}
