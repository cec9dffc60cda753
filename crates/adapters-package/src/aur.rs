//! [`Aur`]: the [`PackageManager`] port over an AUR helper (`paru` or `yay`).
//!
//! Helpers build the AUR's current PKGBUILD as the invoking user and call `sudo` themselves, so
//! they never run as root here (a clear error instead), and a pin can only be honoured when it
//! is the version the AUR currently offers. Queries go to `pacman -Q`/`-Ql`; removal is
//! `pacman -R` (as root, through [`RootRunner`]). pacman's `db.lck` (the system's) is waited for
//! before either, as for pacman.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use provisioner_core::{
    CommandSpec, Error, InstalledPackage, ManagerKind, PackageManager, PackageName, PackageRequest,
    Progress, ProgressEvent, Result, Shell, shell_quote,
};

use crate::common::{exact, failed, field_values, label, parsed, push_unique, verify_installed};
use crate::locks::{LockSettings, LockWait, ManagerLock};
use crate::pacman::{list_files, query_installed, remove_package};
use crate::privilege::{Privilege, RootRunner, refuse_root_for_aur};

/// An AUR helper: `paru` or `yay`. See the module documentation.
#[derive(Clone)]
pub struct Aur {
    helper: ManagerKind,
    shell: Arc<dyn Shell>,
    progress: Arc<dyn Progress>,
    runner: RootRunner,
}

impl std::fmt::Debug for Aur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aur")
            .field("helper", &self.helper)
            .field("privilege", &self.runner.privilege())
            .finish_non_exhaustive()
    }
}

impl Aur {
    /// An AUR helper over the Shell port. `helper` must be [`ManagerKind::Paru`] or
    /// [`ManagerKind::Yay`].
    pub fn new(
        helper: ManagerKind,
        shell: Arc<dyn Shell>,
        progress: Arc<dyn Progress>,
        privilege: Privilege,
    ) -> Result<Self> {
        if !helper.is_aur_helper() {
            return Err(Error::Package {
                manager: helper.to_string(),
                package: String::new(),
                message: format!("{helper} is not an AUR helper (paru or yay)"),
                hint: Some("set provisioning.package.manager to paru or yay".to_string()),
            });
        }
        Ok(Aur {
            helper,
            runner: RootRunner::new(shell.clone(), progress.clone(), privilege),
            shell,
            progress,
        })
    }

    /// The same helper waiting for pacman's lock as `locks` says.
    pub fn with_locks(mut self, locks: LockSettings) -> Self {
        self.runner = self.runner.with_locks(locks);
        self
    }

    /// The system's pacman lock, which the helper's own `sudo pacman` takes.
    fn db_lock(&self) -> ManagerLock {
        ManagerLock::exists(self.runner.locks().system("/var/lib/pacman/db.lck"))
    }

    /// A helper's command: a package manager's list, and a build's (makepkg builds the package
    /// and clones its git sources).
    fn helper_command(&self, args: Vec<String>) -> CommandSpec {
        parsed(self.helper.program(), args).inherit_also(provisioner_core::BUILD_ENV)
    }

    async fn install_one(&self, request: &PackageRequest) -> Result<()> {
        let package = label(request);
        if let Some(pin) = &request.version {
            let versions = self.available(request).await?;
            let Some(current) = versions.first() else {
                return Err(Error::Package {
                    manager: self.helper.to_string(),
                    package,
                    message: format!(
                        "neither the repositories nor the AUR offer {}",
                        request.name
                    ),
                    hint: Some("check provisioning.package.name".to_string()),
                });
            };
            if current != pin.as_str() {
                let name = &request.name;
                return Err(Error::Package {
                    manager: self.helper.to_string(),
                    package,
                    message: format!(
                        "{} builds the current PKGBUILD only, which is version {current}; version {pin} cannot be installed this way. Pin {current}, or build the PKGBUILD of {pin} yourself (git clone https://aur.archlinux.org/{name}.git, check out the commit of {pin}, makepkg) and install the result with `{}pacman -U {name}-{pin}-x86_64.pkg.tar.zst`",
                        self.helper,
                        provisioner_core::sudo_prefix(self.runner.privilege().root)
                    ),
                    hint: Some(format!("set provisioning.package.version to {current}")),
                });
            }
        }
        let mut command = self.helper_command(vec![
            "-S".to_string(),
            "--noconfirm".to_string(),
            "--needed".to_string(),
            request.name.to_string(),
        ]);
        // The helper calls sudo itself: keep it in the foreground so that sudo can ask.
        command.terminal = self.runner.privilege().terminal;
        self.progress.report(ProgressEvent::Note {
            message: format!(
                "building {package} from the AUR with `{}`; it calls sudo to install the result{}",
                command.display(),
                if command.terminal {
                    " and may ask for your password"
                } else {
                    ""
                }
            ),
        });
        crate::locks::wait_for(
            &self.progress,
            self.runner.locks(),
            LockWait {
                manager: self.helper,
                package: &package,
                command: &command.display(),
            },
            &[self.db_lock()],
        )
        .await?;
        let output = self.shell.run(&command).await?;
        if output.success() {
            Ok(())
        } else {
            Err(failed(
                self.helper,
                &package,
                command.display(),
                &output,
                Some(command.display()),
            ))
        }
    }
}

#[async_trait]
impl PackageManager for Aur {
    fn kind(&self) -> ManagerKind {
        self.helper
    }

    async fn install_command(&self, requests: &[PackageRequest]) -> String {
        let names = requests
            .iter()
            .map(|request| shell_quote(request.name.as_str()))
            .collect::<Vec<_>>()
            .join(" ");
        format!("{} -S --needed {names}", self.helper.program())
    }

    async fn query(&self, name: &PackageName) -> Result<Option<InstalledPackage>> {
        query_installed(self.shell.as_ref(), Vec::new(), name.as_str()).await
    }

    async fn available(&self, request: &PackageRequest) -> Result<Vec<String>> {
        refuse_root_for_aur(self.runner.privilege(), self.helper, &label(request))?;
        let command = self.helper_command(vec!["-Si".to_string(), request.name.to_string()]);
        let output = self.shell.run(&command).await?;
        if !output.success() {
            if output.tail.contains("not found") || output.tail.contains("No AUR package") {
                return Ok(Vec::new());
            }
            return Err(failed(
                self.helper,
                &label(request),
                command.display(),
                &output,
                None,
            ));
        }
        let mut versions = Vec::new();
        for version in field_values(output.whole_stdout(&command.display())?, "Version") {
            push_unique(&mut versions, version);
        }
        Ok(versions)
    }

    async fn install(&self, requests: &[PackageRequest]) -> Result<Vec<InstalledPackage>> {
        for request in requests {
            refuse_root_for_aur(self.runner.privilege(), self.helper, &label(request))?;
        }
        for request in requests {
            self.install_one(request).await?;
        }
        verify_installed(self, requests, exact).await
    }

    async fn files(&self, name: &PackageName) -> Result<Vec<PathBuf>> {
        list_files(self.shell.as_ref(), self.helper, Vec::new(), name.as_str()).await
    }

    async fn remove(&self, name: &PackageName) -> Result<()> {
        remove_package(&self.runner, self.helper, Vec::new(), name, self.db_lock()).await
    }
}
