//! Package mode: a distribution package at an exact version, through the PackageInstaller port.

use provisioner_core::packages::{Origin, default_engine_package, engine_packages};
use provisioner_core::{
    Backend, Distro, Error, FALLBACK_HINT, KnownFacts, Layout, ManagerKind, PackageInstallSpec,
    PreparedEngine, Result, Step,
};

use crate::common::{
    Cache, Evidence, Outcome, PoolInputs, Recipe, check_backend, finish, native_facts, wired,
};

/// The install, decided from the pool.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// What the installer gets.
    pub spec: PackageInstallSpec,
}

/// Name (or the distribution's default), the exact version (required by config check),
/// repository, manager, distribution and backend.
pub fn inputs(recipe: &dyn Recipe, common: &PoolInputs, layout: &Layout) -> Result<Inputs> {
    let native = native_facts(recipe)?;
    let package = common.pool.provisioning.package.clone().unwrap_or_default();
    let version = package.version.ok_or_else(|| {
        Error::invalid(
            "provisioning.package.version",
            "required: package mode installs an exact version",
        )
    })?;
    let backend = package.backend.unwrap_or(Backend::Cpu);
    if package.manager == Some(ManagerKind::Pacman) {
        refuse_aur_under_pacman(recipe.engine(), package.name.as_ref(), backend)?;
    }
    Ok(Inputs {
        spec: PackageInstallSpec {
            engine: recipe.engine(),
            cache_dir: layout.engine_cache(recipe.engine()),
            name: package.name,
            version,
            repository: package.repo,
            manager: package.manager,
            distro: package.distro,
            allowed_by_config: common.pool.allow_package_installs(),
            executable: native.executable.to_string(),
            version_args: native.version_args.iter().map(|a| a.to_string()).collect(),
            flag_probe: native.flag_probe(),
            backend,
            gpu: common.gpu.clone(),
            allow_cpu_fallback: common.pool.allow_cpu_fallback(),
        },
    })
}

/// pacman installs from the official repositories only; a package the table knows as an AUR
/// build (by name, or the Arch default for the backend) needs an AUR helper.
fn refuse_aur_under_pacman(
    engine: provisioner_core::Engine,
    name: Option<&provisioner_core::PackageName>,
    backend: Backend,
) -> Result<()> {
    let arch = engine_packages(engine, Distro::Arch);
    let (package, field) = match name {
        Some(name) => (
            arch.iter().find(|p| p.name == name.as_str()).copied(),
            "provisioning.package.name",
        ),
        None => (
            default_engine_package(engine, Distro::Arch, backend),
            "provisioning.package.backend",
        ),
    };
    match package {
        Some(package) if package.origin == Origin::Aur => {
            let official = arch
                .iter()
                .find(|p| p.backend == backend && p.origin == Origin::Official)
                .map(|p| format!(" (or name: {}, from the official repositories)", p.name))
                .unwrap_or_default();
            Err(Error::invalid(
                "provisioning.package.manager",
                format!(
                    "{} is built from the AUR, which pacman cannot install ({field} selects it); set provisioning.package.manager to paru or yay{official}",
                    package.name
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Model, install, launch.
pub fn plan(
    recipe: &dyn Recipe,
    common: &PoolInputs,
    inputs: &Inputs,
    known: &dyn KnownFacts,
) -> Result<Vec<Step>> {
    let native = native_facts(recipe)?;
    let spec = &inputs.spec;
    let mut steps: Vec<Step> = common.model_step(known).into_iter().collect();
    steps.push(Step::InstallPackage {
        manager: spec.manager,
        package: spec.name.as_ref().map(|n| n.to_string()),
        version: spec.version.to_string(),
        repository: spec.repository.as_ref().map(|r| r.to_string()),
        executable: spec.executable.clone(),
        backend: spec.backend,
        allowed: spec.allowed_by_config,
    });
    steps.extend(common.env_file_step());
    steps.push(common.native_launch_step(
        recipe,
        native,
        format!("{{package files}}/{}", spec.executable),
        common.device_env(),
    ));
    Ok(steps)
}

/// The model first, then the package, then the env file.
pub async fn prepare(
    recipe: &dyn Recipe,
    common: &PoolInputs,
    inputs: &Inputs,
    ports: &provisioner_core::Ports,
    plan_digest: String,
) -> Result<PreparedEngine> {
    let env_values = common.read_env_values(ports).await?;
    common.check_host_inputs(recipe, ports).await?;
    let native = native_facts(recipe)?;
    let installer = wired(
        &ports.packages,
        "package installer",
        "wire adapters-package's PackageEngineInstaller into Ports::packages",
    )?;
    let model = ports.models.ensure_present(common.model_request()?).await?;
    // The installer checks a fresh install against what the pool asks and undoes it when it
    // fails; this also judges an install recorded earlier (and records the warning).
    let artifact = installer.ensure_installed(&inputs.spec).await?;
    let warnings = check_backend(
        common,
        inputs.spec.gpu_ask().as_ref(),
        &artifact.found,
        &format!("{} {}", artifact.package.name, artifact.package.version),
        ports.progress.as_ref(),
        |message| Error::Package {
            manager: artifact.manager.to_string(),
            package: format!("{}={}", artifact.package.name, artifact.package.version),
            message: format!("{message}; it was installed and checked before, and is left alone"),
            hint: Some(format!(
                "set provisioning.package.name to a build with that backend, build from source (mode: source), {FALLBACK_HINT}"
            )),
        },
    )?;
    let env_file = common.write_env_file(ports, env_values).await?;
    common.write_key_file(ports).await?;
    let output = artifact.version_output.as_deref().unwrap_or("");
    let reported = recipe.reported_version(output);
    let launch = common.native_launch(
        recipe,
        native,
        &model.path.to_string_lossy(),
        &artifact.supported_flags,
    );
    let workdir = artifact
        .executable
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| artifact.executable.clone());
    let outcome = Outcome {
        bin: artifact.executable.clone(),
        args: launch.args,
        env: common.device_env(),
        readiness: launch.readiness,
        ports: launch.ports,
        workdir,
        engine_version: artifact.engine_version.clone(),
        backend: artifact.found.backend,
        warnings,
        identity: reported
            .as_deref()
            .and_then(|v| recipe.identity(Evidence::ReportedVersion(v))),
        model_path: model.path,
        source: None,
        cache: Some(Cache {
            key: artifact.key,
            hit: artifact.cache_hit,
            metadata_file: Some(artifact.metadata_file),
        }),
    };
    Ok(finish(common, outcome, env_file, plan_digest))
}
