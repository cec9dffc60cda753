//! Reading the files we parse, with a size cap: a configuration, `metadata.json` of an install,
//! the indexes and catalogs the adapters keep. A file over its cap, or one that is not a regular
//! file (`/dev/zero`, a FIFO nobody writes to, a directory), is an error at once, before
//! anything is read into memory, and never a hang.
//!
//! The errors are [`std::io::Error`]s whose text says what is wrong and what the cap is, so that
//! a caller wraps them as it wraps any other read error (`Error::ConfigUnreadable`, or a file
//! taken as missing).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use provisioner_core::human_bytes;

/// The most a configuration file may hold: 4 MiB (a pool file is a few KiB; one with hundreds
/// of pools stays under 1 MiB).
pub const MAX_CONFIG: u64 = 4 * 1024 * 1024;

/// The most a state file we write ourselves and read back may hold (`metadata.json` of an
/// install, the tag and ref indexes, records): 16 MiB.
pub const MAX_STATE: u64 = 16 * 1024 * 1024;

/// The most a catalog may hold (the models directory's `index.json`, which lists every file of
/// every staged repository): 64 MiB.
pub const MAX_CATALOG: u64 = 64 * 1024 * 1024;

/// The most a small file of one value may hold (a ref file, a pid file, a process group): 64 KiB.
pub const MAX_SMALL: u64 = 64 * 1024;

/// The most a host configuration file we read may hold (`containers.conf`, an auth file, a CDI
/// spec, `/etc/os-release`, a build tree's `CMakeLists.txt`): 16 MiB.
pub const MAX_HOST_FILE: u64 = 16 * 1024 * 1024;

/// Reads `path` as UTF-8 text of at most `max` bytes. Errors: the file cannot be opened, is not
/// a regular file (kind `InvalidInput`, naming what it is), holds more than `max` bytes (kind
/// `FileTooLarge`, naming the cap), or is not UTF-8 (kind `InvalidData`).
pub fn read_capped(path: &Path, max: u64) -> io::Result<String> {
    let bytes = read_capped_bytes(path, max)?;
    String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "not UTF-8 text (a binary file?)",
        )
    })
}

/// Reads `path`'s bytes, at most `max` of them; see [`read_capped`].
pub fn read_capped_bytes(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    // Non-blocking, so that opening a FIFO nobody writes to returns at once (and is then
    // refused as not a regular file); it changes nothing for a regular file.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_NOCTTY.bits())
        .open(path)?;
    let metadata = file.metadata()?;
    let kind = metadata.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a pipe or FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what}, not a regular file; give the path of a file"),
        ));
    }
    if metadata.len() > max {
        return Err(too_large(Some(metadata.len()), max));
    }
    read_to_cap(file, max, metadata.len())
}

/// Reads at most `max` bytes of an open file; one byte more is the file-too-large error (a file
/// that grew since it was inspected, or one whose size the kernel does not report).
fn read_to_cap(file: File, max: u64, expected: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(usize::try_from(expected.min(max)).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large(None, max));
    }
    Ok(bytes)
}

/// `size` is what the file system reports, `None` when reading found more than the cap.
fn too_large(size: Option<u64>, max: u64) -> io::Error {
    let cap = format!("{} ({max} bytes) this file may hold", human_bytes(max));
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        match size {
            Some(size) => format!("it holds {size} bytes, more than the {cap}"),
            None => format!("it holds more than the {cap}"),
        },
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_file_within_its_cap_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "pools: []\n").unwrap();
        assert_eq!(read_capped(&path, 10).unwrap(), "pools: []\n");
        assert_eq!(read_capped_bytes(&path, 10).unwrap(), b"pools: []\n");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        assert_eq!(read_capped(&empty, 0).unwrap(), "");
    }

    #[test]
    fn a_file_over_its_cap_is_refused_naming_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        std::fs::write(&path, vec![b'#'; 2 * 1024 * 1024 + 1]).unwrap();
        let error = read_capped(&path, 2 * 1024 * 1024).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(
            error.to_string(),
            "it holds 2097153 bytes, more than the 2.0 MiB (2097152 bytes) this file may hold"
        );
        // The cap itself is allowed.
        assert!(read_capped(&path, 2 * 1024 * 1024 + 1).is_ok());
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_at_once() {
        let start = Instant::now();
        let error = read_capped(Path::new("/dev/zero"), MAX_CONFIG).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(
            error
                .to_string()
                .starts_with("a character device, not a regular file"),
            "{error}"
        );
        let dir = tempfile::tempdir().unwrap();
        let error = read_capped(dir.path(), MAX_CONFIG).unwrap_err();
        assert!(error.to_string().starts_with("a directory"), "{error}");
        // A FIFO with no writer would block a plain open for ever.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let error = read_capped(&fifo, MAX_CONFIG).unwrap_err();
        assert!(error.to_string().starts_with("a pipe or FIFO"), "{error}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_missing_file_keeps_its_error() {
        let error = read_capped(Path::new("/nonexistent/c.yaml"), MAX_CONFIG).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_growing_or_unsized_file_is_cut_at_the_cap() {
        // /proc files report size 0 and hold more: the take() bound applies.
        let error = read_capped_bytes(Path::new("/proc/self/maps"), 16).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(
            error.to_string(),
            "it holds more than the 16 B (16 bytes) this file may hold"
        );
    }

    #[test]
    fn binary_content_is_invalid_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(
            read_capped(&path, 16).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
