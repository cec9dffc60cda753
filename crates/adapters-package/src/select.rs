//! Which package manager serves a request on this host: [`detect_distro`] and [`HostManagers`].

use std::path::PathBuf;
use std::sync::Arc;

use provisioner_core::Distro;
use provisioner_core::packages::{ENGINE_PACKAGES, Origin};
use provisioner_core::{Engine, Error, ManagerKind, PackageManager, Progress, Result, Shell};

use crate::apt::{Apt, AptOptions};
use crate::aur::Aur;
use crate::dnf::Dnf;
use crate::locks::LockSettings;
use crate::pacman::{Pacman, PacmanOptions};
use crate::privilege::Privilege;

/// How to get an AUR helper when none is installed (makepkg refuses root: as root, the build
/// steps run as a regular user).
fn aur_helper_hint(as_root: bool) -> String {
    let build = "git clone https://aur.archlinux.org/paru-bin.git && cd paru-bin && makepkg -si";
    if as_root {
        format!(
            "pacman -S --needed base-devel git, then as a regular user with sudo rights: {build}"
        )
    } else {
        format!("sudo pacman -S --needed base-devel git && {build}")
    }
}

/// The host's distribution family, from `/etc/os-release` (or `/usr/lib/os-release`);
/// [`Distro::Unknown`] when neither can be read or names a known family.
pub fn detect_distro() -> Distro {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|path| {
            adapters_host::read_capped(std::path::Path::new(path), adapters_host::read::MAX_SMALL)
                .ok()
        })
        .map_or(Distro::Unknown, |text| Distro::from_os_release(&text))
}

/// Builds the package manager for a request on this host: the distribution's own (apt on
/// Debian, pacman on Arch, dnf on Fedora), an AUR helper where forced or where the engine
/// package table knows the package only from the AUR, or what the config forces.
#[derive(Clone)]
pub struct HostManagers {
    shell: Arc<dyn Shell>,
    progress: Arc<dyn Progress>,
    state_dir: PathBuf,
    distro: Distro,
    privilege: Privilege,
    pacman: Option<PacmanOptions>,
    locks: LockSettings,
}

impl std::fmt::Debug for HostManagers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostManagers")
            .field("state_dir", &self.state_dir)
            .field("distro", &self.distro)
            .field("privilege", &self.privilege)
            .field("pacman", &self.pacman)
            .field("locks", &self.locks)
            .finish_non_exhaustive()
    }
}

impl HostManagers {
    /// Managers for this host: the distribution from `/etc/os-release`, the privilege of this
    /// process; apt's isolated source lists under `<state_dir>/apt`, pacman's generated configs
    /// under `<state_dir>/pacman`.
    pub fn new(shell: Arc<dyn Shell>, progress: Arc<dyn Progress>, state_dir: PathBuf) -> Self {
        HostManagers {
            shell,
            progress,
            state_dir,
            distro: detect_distro(),
            privilege: Privilege::detect(),
            pacman: None,
            locks: LockSettings::default(),
        }
    }

    /// Overrides where the managers' lock files are looked for and how long they are waited for
    /// (every manager built afterwards; pacman options set with
    /// [`HostManagers::with_pacman_options`] keep their own).
    pub fn with_locks(mut self, locks: LockSettings) -> Self {
        self.locks = locks;
        self
    }

    /// Overrides the detected distribution.
    pub fn with_distro(mut self, distro: Distro) -> Self {
        self.distro = distro;
        self
    }

    /// Overrides the detected privilege.
    pub fn with_privilege(mut self, privilege: Privilege) -> Self {
        self.privilege = privilege;
        self
    }

    /// Sets pacman's options (an alternative root, database and config, e.g. for tests).
    pub fn with_pacman_options(mut self, options: PacmanOptions) -> Self {
        self.pacman = Some(options);
        self
    }

    /// The host's distribution family (detected or set).
    pub fn distro(&self) -> Distro {
        self.distro
    }

    /// The privilege commands run with (detected or set).
    pub fn privilege(&self) -> Privilege {
        self.privilege
    }

    /// The manager for a request: `forced` (the config's `provisioning.package.manager`) when
    /// given; else an AUR helper (paru if on PATH, else yay) when the engine package table knows
    /// `package` on Arch only from the AUR; else the manager of `distro` (the config's
    /// `provisioning.package.distro`, or the detected one).
    pub fn manager(
        &self,
        forced: Option<ManagerKind>,
        distro: Option<Distro>,
        package: Option<&str>,
        engine: Option<Engine>,
    ) -> Result<Arc<dyn PackageManager>> {
        let distro = distro.unwrap_or(self.distro);
        if let Some(kind) = forced {
            if kind.is_aur_helper() && self.shell.locate(kind.program()).is_none() {
                return Err(missing_helper(kind.program(), package));
            }
            return self.build(kind);
        }
        if distro == Distro::Arch
            && let Some(package) = package
            && aur_only(package, engine)
        {
            let helper = [ManagerKind::Paru, ManagerKind::Yay]
                .into_iter()
                .find(|helper| self.shell.locate(helper.program()).is_some())
                .ok_or_else(|| missing_helper("paru", Some(package)))?;
            return self.build(helper);
        }
        match ManagerKind::for_distro(distro) {
            Some(kind) => self.build(kind),
            None => Err(Error::Package {
                manager: "package".to_string(),
                package: package.unwrap_or("(engine default)").to_string(),
                message: "unknown distribution: /etc/os-release names none of the Debian, Arch or Fedora families, so there is no package manager to use".to_string(),
                hint: Some(
                    "set provisioning.package.distro (debian, arch or fedora) or provisioning.package.manager (apt, pacman, paru, yay or dnf)"
                        .to_string(),
                ),
            }),
        }
    }

    /// The host distribution's own manager (for build-tool installs); `None` on an unknown
    /// distribution.
    pub fn default_manager(&self) -> Option<Arc<dyn PackageManager>> {
        ManagerKind::for_distro(self.distro).and_then(|kind| self.build(kind).ok())
    }

    /// The manager of `kind`, configured for this host.
    pub fn build(&self, kind: ManagerKind) -> Result<Arc<dyn PackageManager>> {
        Ok(match kind {
            ManagerKind::Apt => Arc::new(Apt::new(
                self.shell.clone(),
                self.progress.clone(),
                self.privilege,
                AptOptions {
                    state_dir: self.state_dir.join("apt"),
                    locks: self.locks.clone(),
                },
            )),
            ManagerKind::Pacman => Arc::new(Pacman::new(
                self.shell.clone(),
                self.progress.clone(),
                self.privilege,
                self.pacman.clone().unwrap_or_else(|| PacmanOptions {
                    state_dir: self.state_dir.join("pacman"),
                    locks: self.locks.clone(),
                    ..PacmanOptions::default()
                }),
            )),
            ManagerKind::Dnf => Arc::new(
                Dnf::new(self.shell.clone(), self.progress.clone(), self.privilege)
                    .with_locks(self.locks.clone()),
            ),
            ManagerKind::Paru | ManagerKind::Yay => Arc::new(
                Aur::new(
                    kind,
                    self.shell.clone(),
                    self.progress.clone(),
                    self.privilege,
                )?
                .with_locks(self.locks.clone()),
            ),
        })
    }
}

/// Whether the engine package table knows `package` on Arch only from the AUR.
fn aur_only(package: &str, engine: Option<Engine>) -> bool {
    let mut entries = ENGINE_PACKAGES
        .iter()
        .filter(|p| p.distro == Distro::Arch && p.name == package)
        .filter(|p| engine.is_none_or(|engine| p.engine == engine))
        .peekable();
    entries.peek().is_some() && entries.all(|p| p.origin == Origin::Aur)
}

fn missing_helper(program: &str, package: Option<&str>) -> Error {
    Error::MissingTool {
        tool: program.to_string(),
        purpose: match package {
            Some(package) => format!("build the AUR package {package}"),
            None => "build AUR packages".to_string(),
        },
        searched: Vec::new(),
        hint: Some(aur_helper_hint(adapters_host::running_as_root())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aur_only_follows_the_table() {
        assert!(aur_only("llama.cpp-cuda", Some(Engine::Llamacpp)));
        assert!(aur_only("llama.cpp-vulkan", None));
        assert!(!aur_only("llama-cpp", Some(Engine::Llamacpp)));
        assert!(!aur_only("unknown-package", None));
        assert!(!aur_only("llama.cpp-cuda", Some(Engine::Vllm)));
    }
}
