//! # adapters-package
//!
//! Package mode: the [`provisioner_core::PackageManager`] port for apt ([`Apt`]), pacman
//! ([`Pacman`]), the AUR helpers paru and yay ([`Aur`]) and dnf ([`Dnf`]), the choice among them
//! for a host ([`HostManagers`], [`detect_distro`]), and [`PackageEngineInstaller`], the
//! [`provisioner_core::PackageInstaller`] port that installs an engine as an exactly pinned
//! distribution package through the shared install transaction
//! ([`adapters_host::InstallRoot`], records under `<cache>/packages-v1/<key>`).
//!
//! Every process runs through the [`provisioner_core::Shell`] port, argv only (never a shell);
//! names, versions and repositories are validated before anything runs. Nothing here prints:
//! progress and notes go to the [`provisioner_core::Progress`] port.
//!
//! ## Pins
//! A pinned version is installed exactly (`apt-get install name=version --allow-downgrades`,
//! `pacman -S repo/name` when the repository holds that version, else `pacman -U` of the package
//! file, `dnf install name-version`) and checked against the package database afterwards: a
//! different installed version is an error, never a success. When a version does not exist the
//! error names the versions that do.
//!
//! ## Root
//! Commands that change the system need root, and root is never taken silently
//! ([`privilege`]): as root they run directly; otherwise sudo is asked, by exit status only,
//! whether it can run the command without a prompt (`sudo -n true`, `sudo -n -l COMMAND`), and
//! if so `sudo -n` runs it after a progress note; if not, interactive `sudo` runs in the
//! foreground when a terminal is attached (after a note saying what and why), and without a
//! terminal the error quotes sudo and its hint is the exact `sudo …` command. sudo.ws and
//! sudo-rs take the same paths. Without sudo the hint is the command to run as root. AUR helpers
//! are the exception: they refuse to run as root (the provisioner reports that as an error) and,
//! run as a user, call sudo themselves.
//!
//! ## Locks and failures
//! Before a command that takes a manager's lock (apt's lists and archives locks, dpkg's, pacman's
//! `db.lck`, rpm's and dnf's), each lock is looked at and waited for with a bound, naming the
//! process that holds it ([`locks`]). A manager's or sudo's failure is an
//! [`provisioner_core::Error::Package`] (exit 13) that quotes what it printed.
//!
//! ## Installs
//! [`PackageEngineInstaller`] honours `allow_package_installs`: a package already installed at
//! the pin is recorded without any install; otherwise a disallowed install fails with the exact
//! install command as the hint. A GPU backend that the distribution ships apart from the server
//! (Debian's `libggml0-backend-*`, [`provisioner_core::packages::BACKEND_PACKAGES`]) is
//! installed with it, at the version of the library it plugs into, and checked with it. After an install the server executable must be in the package's
//! file list (in a `bin`/`sbin` directory); a package that lacks it, or whose version check or
//! version run fails, is removed again when this call installed it. The warm path reads the
//! record and asks the package database once (one process).
//!
//! ## Tests
//! apt and pacman are tested for real (`tests/real_apt.rs`: a local flat repository built with
//! `dpkg-deb` and `dpkg-scanpackages`, installs, downgrades and removals on the host;
//! `tests/real_pacman.rs`: hand-built packages and repository database, pacman 6 installing
//! into an alternative root in a temporary directory). Both need root. dnf, paru and yay are not
//! installed on the development machines and are tested with a scripted fake Shell only
//! (`tests/managers.rs`), as are the privilege rules and the installer's decisions
//! (`tests/installer.rs`). `tests/sudo_variants.rs` runs fake `sudo` scripts that behave like
//! sudo.ws and sudo-rs; `tests/locks.rs` holds real lock files (a perl process holds the `fcntl`
//! ones) in front of scripted managers, and `tests/real_apt.rs` holds an apt lists lock for real.

pub mod apt;
pub mod aur;
mod common;
pub mod dnf;
pub mod installer;
pub mod locks;
pub mod pacman;
pub mod privilege;
pub mod select;

pub use apt::{Apt, AptOptions};
pub use aur::Aur;
pub use dnf::Dnf;
pub use installer::{PackageEngineInstaller, PackageInstallMetadata, install_key};
pub use locks::{DEFAULT_LOCK_TIMEOUT, LockKind, LockSettings, ManagerLock};
pub use pacman::{Pacman, PacmanOptions};
pub use privilege::{Privilege, RootRunner, RootTask, refuse_root_for_aur};
pub use select::{HostManagers, detect_distro};
