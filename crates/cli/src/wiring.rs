//! The composition root: real adapters plugged into the ports.

use std::path::PathBuf;
use std::sync::Arc;

use adapters_binary::{BinaryArtifactInstaller, FetchSettings, HttpFetcher};
use adapters_container::{ContainerSettings, PodmanOrDocker};
use adapters_host::clock::SystemClock;
use adapters_host::models::LocalModels;
use adapters_host::process::HostShell;
use adapters_package::{HostManagers, PackageEngineInstaller};
use adapters_source::{CmakeSourceBuilder, HostFacts};
use engines::Provisioner;
use policy::HostPolicy;
use provisioner_core::{Layout, Ports, Progress, Shell};

/// Host-wide settings, from flags and environment.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Home directory (for defaults and `~/` in configs).
    pub home: PathBuf,
    /// Cache root override.
    pub cache_dir: Option<PathBuf>,
    /// Model cache override.
    pub models_dir: Option<PathBuf>,
    /// Offline mode.
    pub offline: bool,
    /// Network allowlist.
    pub allowed_hosts: Option<Vec<String>>,
    /// Allow plain HTTP downloads from remote hosts.
    pub allow_plain_http: bool,
}

impl Settings {
    /// The directories in use.
    pub fn layout(&self) -> Layout {
        let defaults = Layout::under_home(&self.home);
        Layout::with_cache_root(
            &self.home,
            self.cache_dir.clone().unwrap_or(defaults.cache_root),
            self.models_dir.clone().unwrap_or(defaults.models_dir),
        )
    }
}

/// A provisioner wired to this host.
pub fn provisioner(settings: &Settings, progress: Arc<dyn Progress>) -> Provisioner {
    let shell = Arc::new(HostShell::new(progress.clone()));
    provisioner_with_shell(settings, progress, shell)
}

/// A provisioner wired to this host around a given Shell (tests wrap the real one to count
/// the commands that reach it).
pub fn provisioner_with_shell(
    settings: &Settings,
    progress: Arc<dyn Progress>,
    shell: Arc<dyn Shell>,
) -> Provisioner {
    let policy = Arc::new(HostPolicy {
        offline: settings.offline,
        allowed_hosts: settings.allowed_hosts.clone(),
        allow_unverified_downloads: false,
        allow_plain_http: settings.allow_plain_http,
    });
    let clock = Arc::new(SystemClock);
    let managers = HostManagers::new(
        shell.clone(),
        progress.clone(),
        settings.layout().cache_root.join("packages"),
    );
    let host_packages = managers.default_manager();
    let mut builder = CmakeSourceBuilder::new(
        shell.clone(),
        policy.clone(),
        progress.clone(),
        clock.clone(),
        HostFacts::detect(),
    );
    if let Some(manager) = &host_packages {
        builder = builder.with_packages(manager.clone());
    }
    let package_installer = PackageEngineInstaller::new(
        managers,
        shell.clone(),
        policy.clone(),
        progress.clone(),
        clock.clone(),
    );
    let fetcher = Arc::new(HttpFetcher::new(progress.clone(), FetchSettings::default()));
    let binaries = BinaryArtifactInstaller::new(
        fetcher.clone(),
        shell.clone(),
        policy.clone(),
        progress.clone(),
        clock.clone(),
    );
    let containers = PodmanOrDocker::new(
        shell.clone(),
        policy.clone(),
        progress.clone(),
        ContainerSettings::from_host(settings.layout().cache_root.join("containers")),
    );
    let ports = Ports {
        shell,
        source_builder: Arc::new(builder),
        models: Arc::new(LocalModels),
        policy,
        clock,
        progress,
        fetcher: Some(fetcher),
        binaries: Some(Arc::new(binaries)),
        packages: host_packages,
        package_installer: Some(Arc::new(package_installer)),
        containers: Some(Arc::new(containers)),
    };
    Provisioner::new(ports, settings.layout())
}
