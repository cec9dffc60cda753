//! The composition root: real adapters plugged into the ports.

use std::path::Path;
use std::sync::Arc;

use adapters_binary::{BinaryArtifactInstaller, FetchSettings, HttpFetcher};
use adapters_container::{ContainerSettings, PodmanOrDocker, TagIndex};
use adapters_host::HostRunFiles;
use adapters_host::clock::SystemClock;
use adapters_host::process::HostShell;
use adapters_package::{HostManagers, PackageEngineInstaller};
use adapters_source::{CmakeSourceBuilder, HostFacts};
use engines::Provisioner;
use policy::HostPolicy;
use provisioner_core::{
    Digest, GitRef, GitRemote, ImageReference, KnownFacts, ModelRequest, Ports, Progress, Shell,
    StagedModel,
};

/// Host-wide settings (defined with the rules that fill them in [`crate::settings`]).
pub use crate::settings::Settings;

/// What this host knows from earlier prepares, read from the caches' own records (the ref index
/// of source builds, the tag index of images) and the file system: no network, no process.
struct KnownOnDisk {
    images: TagIndex,
    models: Arc<adapters_model::Models>,
}

impl KnownFacts for KnownOnDisk {
    fn commit(&self, cache_dir: &Path, repo: &GitRemote, reference: &GitRef) -> Option<String> {
        adapters_source::known_commit(cache_dir, repo, reference)
    }

    fn image_digest(&self, image: &ImageReference) -> Option<Digest> {
        self.images.known_digest(image)
    }

    fn size(&self, path: &Path) -> Option<u64> {
        std::fs::metadata(path)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len())
    }

    fn staged_model(&self, request: &ModelRequest) -> Option<StagedModel> {
        // Local files are `size`'s: only remote schemes are staged.
        if request.reference.is_local() {
            return None;
        }
        self.models.staged(request).map(|entry| StagedModel {
            path: entry.local_path,
            revision: entry.revision,
            bytes: entry.bytes,
        })
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
    let layout = settings.layout();
    let policy = Arc::new(HostPolicy {
        offline: settings.offline,
        allowed_hosts: settings.allowed_hosts.clone(),
        allow_plain_http: settings.allow_plain_http,
    });
    let clock = Arc::new(SystemClock);
    let managers = HostManagers::new(
        shell.clone(),
        progress.clone(),
        layout.cache_root.join("packages"),
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
    let hf = settings.hf.clone().unwrap_or_else(|| {
        adapters_model::HfSettings::new(
            adapters_model::DEFAULT_ENDPOINT
                .parse()
                .expect("the default endpoint is a URL"),
            settings.home.join(".cache/huggingface/hub"),
        )
    });
    // The public hub's storage hosts count as the hub for the allowlist.
    let model_policy: Arc<dyn provisioner_core::Policy> =
        Arc::new(adapters_model::HubPolicy::new(policy.clone(), &hf));
    let models = Arc::new(adapters_model::Models::new(
        Arc::new(
            HttpFetcher::new(progress.clone(), FetchSettings::default())
                .with_policy(model_policy.clone()),
        ),
        model_policy,
        progress.clone(),
        hf,
    ));
    let fetcher = Arc::new(
        HttpFetcher::new(progress.clone(), FetchSettings::default()).with_policy(policy.clone()),
    );
    let binaries = BinaryArtifactInstaller::new(
        fetcher,
        shell.clone(),
        policy.clone(),
        progress.clone(),
        clock,
    );
    let containers_dir = layout.cache_root.join("containers");
    let containers = PodmanOrDocker::new(
        shell,
        policy,
        progress.clone(),
        ContainerSettings::from_host(containers_dir.clone()),
    );
    let ports = Ports {
        models: models.clone(),
        source_builder: Some(Arc::new(builder)),
        binaries: Some(Arc::new(binaries)),
        packages: Some(Arc::new(package_installer)),
        containers: Some(Arc::new(containers)),
        run_files: Arc::new(HostRunFiles::new(layout.run_dir.clone())),
        known: Arc::new(KnownOnDisk {
            images: TagIndex::new(&containers_dir),
            models,
        }),
        progress,
    };
    Provisioner::new(ports, layout)
}
