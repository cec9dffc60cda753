//! The locks package managers take, who holds them, and waiting for them with a bound.
//!
//! Before a command that takes a manager's lock runs, each lock it takes is looked at; while one
//! is held, a progress note names the lock, its holder (pid and command line, from `/proc`) and
//! the bound, and the lock is looked at again until it is free or the bound has passed, which is
//! an error naming the holder. A lock taken in the moment between the look and the command is
//! the manager's to report, and its own message is shown.
//!
//! Three kinds of lock:
//! - [`LockKind::Lock`]: an `fcntl` (or `flock`) lock on a file: apt's lists and archives locks,
//!   dpkg's `lock-frontend` and `lock`, rpm's `.rpm.lock`, dnf 5's `rpmtransaction.lock`. The
//!   holder is the lock's owner in `/proc/locks`, matched by device and inode, which also works
//!   for a user who cannot open the file.
//! - [`LockKind::Exists`]: a file whose existence is the lock: pacman's `db.lck`. The holder is
//!   a process that has the file open (`/proc/<pid>/fd`); none (as root, who sees every process)
//!   means a stale lock left by a crash, reported at once with the command that removes it.
//! - [`LockKind::PidFile`]: a file holding its owner's pid: dnf 4's `*_lock.pid`. Held while
//!   that process lives.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provisioner_core::{Error, ManagerKind, Progress, ProgressEvent, Result};

/// How long a manager's lock is waited for by default: on a fresh cloud host,
/// unattended-upgrades may hold apt's locks for minutes.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// How often a held lock is looked at again.
const POLL: Duration = Duration::from_millis(200);

/// Where the managers' system-wide lock files are looked for, and how long they are waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSettings {
    /// The system's root directory: `/`, or a directory that stands for it in tests. Lock files
    /// that follow a manager's own options (pacman's `--dbpath`, apt's isolated lists) are not
    /// moved.
    pub root: PathBuf,
    /// How long a held lock is waited for before the command is given up.
    pub timeout: Duration,
}

impl Default for LockSettings {
    fn default() -> Self {
        LockSettings {
            root: PathBuf::from("/"),
            timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

impl LockSettings {
    /// A system path (`/var/lib/dpkg/lock`) under [`LockSettings::root`].
    pub fn system(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

/// How a lock file shows that it is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// An `fcntl` or `flock` lock on the file.
    Lock,
    /// The file exists.
    Exists,
    /// The file holds the pid of a live process.
    PidFile,
}

/// One lock a command takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerLock {
    /// The lock file.
    pub path: PathBuf,
    /// How it shows that it is held.
    pub kind: LockKind,
}

impl ManagerLock {
    /// An `fcntl`/`flock` lock on `path`.
    pub fn lock(path: impl Into<PathBuf>) -> Self {
        ManagerLock {
            path: path.into(),
            kind: LockKind::Lock,
        }
    }

    /// A lock file whose existence is the lock.
    pub fn exists(path: impl Into<PathBuf>) -> Self {
        ManagerLock {
            path: path.into(),
            kind: LockKind::Exists,
        }
    }

    /// A pid file.
    pub fn pid_file(path: impl Into<PathBuf>) -> Self {
        ManagerLock {
            path: path.into(),
            kind: LockKind::PidFile,
        }
    }

    /// Who holds the lock now; `None` when it is free.
    pub fn holder(&self) -> Option<Holder> {
        match self.kind {
            LockKind::Lock => lock_holder(&self.path),
            LockKind::Exists => {
                std::fs::symlink_metadata(&self.path).ok()?;
                Some(match open_by(&self.path) {
                    Some(pid) => Holder::process(pid),
                    None => Holder {
                        pid: None,
                        command: None,
                        stale: nix::unistd::geteuid().is_root(),
                    },
                })
            }
            LockKind::PidFile => {
                let text =
                    adapters_host::read_capped(&self.path, adapters_host::read::MAX_SMALL).ok()?;
                let pid: u32 = text.trim().parse().ok()?;
                Path::new("/proc")
                    .join(pid.to_string())
                    .exists()
                    .then(|| Holder::process(pid))
            }
        }
    }
}

/// The process holding a lock, as far as this user can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its pid; `None` when it cannot be seen (another user's process, an open file description
    /// lock) or when no process holds the lock file open.
    pub pid: Option<u32>,
    /// Its command line (`/proc/<pid>/cmdline`, else `comm`), shortened.
    pub command: Option<String>,
    /// No process holds an existence lock open, and every process was visible: a stale lock.
    pub stale: bool,
}

impl Holder {
    fn process(pid: u32) -> Holder {
        Holder {
            pid: Some(pid),
            command: command_line(pid),
            stale: false,
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, &self.command) {
            (Some(pid), Some(command)) => write!(f, "pid {pid} ({command})"),
            (Some(pid), None) => write!(f, "pid {pid}"),
            (None, _) if self.stale => write!(f, "no running process (a stale lock)"),
            (None, _) => write!(f, "a process this user cannot see"),
        }
    }
}

/// The command line of `pid`: its arguments joined by spaces (at most 100 characters), else its
/// `comm`.
fn command_line(pid: u32) -> Option<String> {
    let proc = Path::new("/proc").join(pid.to_string());
    let arguments = std::fs::read(proc.join("cmdline")).ok().and_then(|bytes| {
        let words: Vec<String> = bytes
            .split(|b| *b == 0)
            .filter(|word| !word.is_empty())
            .map(|word| String::from_utf8_lossy(word).into_owned())
            .collect();
        (!words.is_empty()).then(|| words.join(" "))
    });
    let text = arguments.or_else(|| {
        std::fs::read_to_string(proc.join("comm"))
            .ok()
            .map(|comm| comm.trim().to_string())
            .filter(|comm| !comm.is_empty())
    })?;
    Some(if text.chars().count() > 100 {
        format!("{}…", text.chars().take(99).collect::<String>())
    } else {
        text
    })
}

/// `major:minor` of a device number as `/proc/locks` prints it (two hex digits at least).
fn device_text(dev: u64) -> String {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    format!("{major:02x}:{minor:02x}")
}

/// The owner of a lock on `path` in `/proc/locks` (`None` when the file or a lock on it is
/// missing).
fn lock_holder(path: &Path) -> Option<Holder> {
    let metadata = std::fs::metadata(path).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in_proc_locks(&locks, metadata.dev(), metadata.ino())
}

/// The holder of a lock on the file `dev`/`ino` among `/proc/locks` lines such as
/// `1: POSIX  ADVISORY  WRITE 25135 fe:00:379257 0 EOF` (waiters, marked `->`, hold nothing).
fn holder_in_proc_locks(text: &str, dev: u64, ino: u64) -> Option<Holder> {
    let file = format!("{}:{ino}", device_text(dev));
    text.lines()
        .filter(|line| !line.contains("->"))
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let at = fields.iter().position(|field| *field == file)?;
            let pid = fields.get(at.checked_sub(1)?)?;
            Some(match pid.parse::<u32>() {
                Ok(pid) if pid > 0 => Holder::process(pid),
                _ => Holder {
                    pid: None,
                    command: None,
                    stale: false,
                },
            })
        })
}

/// A process that has `path` open, from `/proc/<pid>/fd` (only the processes this user may
/// look at).
fn open_by(path: &Path) -> Option<u32> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd"))
                .map(|fds| {
                    fds.filter_map(|fd| fd.ok())
                        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|link| link == target))
                })
                .unwrap_or(false)
        })
}

/// What a wait is for, for notes and errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockWait<'a> {
    /// Manager whose command waits.
    pub manager: ManagerKind,
    /// Package, as errors name it.
    pub package: &'a str,
    /// The command that will run, as a user would type it.
    pub command: &'a str,
}

/// Waits until none of `locks` is held, reporting the holder; an error naming the holder when
/// `settings.timeout` passes first, or at once for a stale existence lock.
pub(crate) async fn wait_for(
    progress: &Arc<dyn Progress>,
    settings: &LockSettings,
    wait: LockWait<'_>,
    locks: &[ManagerLock],
) -> Result<()> {
    let started = Instant::now();
    let mut reported: Option<(PathBuf, Holder)> = None;
    loop {
        let held = locks
            .iter()
            .find_map(|lock| lock.holder().map(|holder| (lock, holder)));
        let Some((lock, holder)) = held else {
            if reported.is_some() {
                progress.report(ProgressEvent::Note {
                    message: format!(
                        "{} is free after {:.0} s; running `{}`",
                        lock_list(locks),
                        started.elapsed().as_secs_f64(),
                        wait.command
                    ),
                });
            }
            return Ok(());
        };
        if holder.stale && lock.kind == LockKind::Exists {
            return Err(stale(wait, lock));
        }
        let waited = started.elapsed();
        if waited >= settings.timeout {
            return Err(still_held(wait, lock, &holder, settings.timeout));
        }
        let current = Some((lock.path.clone(), holder.clone()));
        if reported != current {
            progress.report(ProgressEvent::Note {
                message: format!(
                    "{} is locked by {holder}: waiting for it (at most {} s) before running `{}`",
                    lock.path.display(),
                    settings.timeout.as_secs(),
                    wait.command
                ),
            });
            reported = current;
        }
        tokio::time::sleep(POLL.min(settings.timeout.saturating_sub(waited))).await;
    }
}

fn lock_list(locks: &[ManagerLock]) -> String {
    locks
        .iter()
        .map(|lock| lock.path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn still_held(wait: LockWait<'_>, lock: &ManagerLock, holder: &Holder, waited: Duration) -> Error {
    let hint = match holder.pid {
        Some(pid) => format!(
            "wait for pid {pid} to finish (on a fresh cloud host this is usually unattended-upgrades or cloud-init installing updates; `ps -o pid,etime,args -p {pid}` shows it), then run the same command again"
        ),
        None => format!(
            "find the process with `sudo fuser -v {}`, wait for it to finish, then run the same command again",
            lock.path.display()
        ),
    };
    Error::Package {
        manager: wait.manager.to_string(),
        package: wait.package.to_string(),
        message: format!(
            "{} is still locked by {holder} after waiting {} s, so `{}` did not run",
            lock.path.display(),
            waited.as_secs(),
            wait.command
        ),
        hint: Some(hint),
    }
}

fn stale(wait: LockWait<'_>, lock: &ManagerLock) -> Error {
    let path = lock.path.display();
    Error::Package {
        manager: wait.manager.to_string(),
        package: wait.package.to_string(),
        message: format!(
            "{path} exists but no running process holds it (a {} that was interrupted leaves it behind), so `{}` did not run",
            wait.manager, wait.command
        ),
        hint: Some(format!(
            "make sure no package manager is running, then remove the stale lock: sudo rm {path}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines_name_the_owner_by_device_and_inode() {
        let dev = 0xfe00;
        let text = "1: FLOCK  ADVISORY  WRITE 24887 fe:00:10078099 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 4242 fe:00:379257 0 EOF\n\
                    2: -> POSIX  ADVISORY  WRITE 77 fe:00:379257 0 EOF\n\
                    3: OFDLCK ADVISORY  WRITE -1 08:01:555 0 EOF\n";
        let holder = holder_in_proc_locks(text, dev, 379257).unwrap();
        assert_eq!(holder.pid, Some(4242));
        assert!(holder_in_proc_locks(text, dev, 1).is_none());
        assert!(holder_in_proc_locks(text, 0x0801, 379257).is_none());
        let ofd = holder_in_proc_locks(text, 0x0801, 555).unwrap();
        assert_eq!(ofd.pid, None);
        assert_eq!(ofd.to_string(), "a process this user cannot see");
        assert_eq!(device_text(0x0803), "08:03");
        assert_eq!(device_text(0xfe00), "fe:00");
    }

    #[test]
    fn pid_files_are_held_while_their_process_lives() {
        let dir = tempfile::tempdir().unwrap();
        let lock = ManagerLock::pid_file(dir.path().join("rpmdb_lock.pid"));
        assert_eq!(lock.holder(), None, "no file: free");
        std::fs::write(&lock.path, std::process::id().to_string()).unwrap();
        let holder = lock.holder().unwrap();
        assert_eq!(holder.pid, Some(std::process::id()));
        assert!(holder.command.is_some());
        // A pid no process has (pid_max is at most 2^22).
        std::fs::write(&lock.path, "4194305").unwrap();
        assert_eq!(lock.holder(), None, "a dead owner holds nothing");
    }

    #[test]
    fn an_existence_lock_names_the_process_that_has_it_open() {
        let dir = tempfile::tempdir().unwrap();
        let lock = ManagerLock::exists(dir.path().join("db.lck"));
        assert_eq!(lock.holder(), None);
        let file = std::fs::File::create(&lock.path).unwrap();
        let holder = lock.holder().unwrap();
        assert_eq!(holder.pid, Some(std::process::id()), "{holder}");
        drop(file);
        let holder = lock.holder().unwrap();
        assert_eq!(holder.pid, None);
        assert_eq!(holder.stale, nix::unistd::geteuid().is_root());
    }
}
