//! Binary mode: a prebuilt server from a pinned URL and checksum, through the BinaryInstaller
//! port.

use provisioner_core::{
    ArchiveFormat, BackendFinding, BinaryArtifact, BinaryInstallSpec, Error, FALLBACK_HINT, GpuAsk,
    KnownFacts, Layout, PreparedEngine, Result, Step, UnpackLimits, VersionProbe,
    binary_engine_version,
};

use crate::common::{
    Cache, Evidence, NativeFacts, Outcome, PoolInputs, Recipe, check_backend, finish, native_facts,
    wired,
};

/// The install, decided from the pool.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// What the installer gets.
    pub spec: BinaryInstallSpec,
    /// The configured upstream version, when given.
    pub version: Option<String>,
}

/// URL and checksum (both required by config check), size, version, and the install root
/// (`binary.install_dir` or `<engine cache>/bin`).
pub fn inputs(recipe: &dyn Recipe, common: &PoolInputs, layout: &Layout) -> Result<Inputs> {
    let native = native_facts(recipe)?;
    let binary = common.pool.provisioning.binary.clone().unwrap_or_default();
    let url = binary
        .url
        .ok_or_else(|| Error::invalid("provisioning.binary.url", "required for mode binary"))?;
    let checksum = binary.checksum.ok_or_else(|| {
        Error::invalid("provisioning.binary.checksum", "required for mode binary")
    })?;
    if let (Some(version), Some(tag)) = (&binary.version, release_tag(&url))
        && !versions_agree(version, tag)
    {
        return Err(Error::invalid(
            "provisioning.binary.version",
            format!(
                "`{version}` disagrees with the release `{tag}` in binary.url (…/releases/download/{tag}/…); give the version in one place"
            ),
        ));
    }
    Ok(Inputs {
        spec: BinaryInstallSpec {
            engine: recipe.engine(),
            install_root: layout.dir_or(
                binary.install_dir.as_deref(),
                layout.engine_cache(recipe.engine()).join("bin"),
            ),
            url,
            checksum,
            size: binary.size,
            allowed_by_config: common.pool.provisioning.allow_binary_downloads,
            executable: native.executable.to_string(),
            older_names: native.older_names.iter().map(|n| n.to_string()).collect(),
            configured: binary.executable.clone(),
            version_args: native.version_args.iter().map(|a| a.to_string()).collect(),
            flag_probe: native.flag_probe(),
            limits: UnpackLimits::default(),
        },
        version: binary.version,
    })
}

/// Model, download, unpack, install, launch.
pub fn plan(
    recipe: &dyn Recipe,
    common: &PoolInputs,
    inputs: &Inputs,
    known: &dyn KnownFacts,
) -> Result<Vec<Step>> {
    let native = native_facts(recipe)?;
    let spec = &inputs.spec;
    // The configured path in the archive, else the name looked for.
    let shown = spec
        .configured
        .as_ref()
        .map_or_else(|| spec.executable.clone(), |member| member.to_string());
    let mut steps: Vec<Step> = common.model_step(known).into_iter().collect();
    steps.push(Step::Download {
        url: spec.url.to_string(),
        checksum: spec.checksum.to_string(),
        size: spec.size,
    });
    steps.push(Step::Unpack {
        format: ArchiveFormat::from_url(&spec.url).as_str().to_string(),
        executable: shown.clone(),
        limits: spec.limits,
    });
    steps.push(Step::Install {
        cache_dir: spec.install_root.clone(),
        artifacts: vec![shown.clone()],
        key_inputs: vec!["checksum".to_string()],
    });
    steps.extend(common.env_file_step());
    let mut env = common.device_env();
    env.insert("LD_LIBRARY_PATH".to_string(), "{library_dirs}".to_string());
    steps.push(common.native_launch_step(
        recipe,
        native,
        format!("{{install_dir}}/…/{shown}"),
        env,
    ));
    Ok(steps)
}

/// The model first, then the install, then the env file.
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
        &ports.binaries,
        "binary installer",
        "wire adapters-binary's BinaryArtifactInstaller into Ports::binaries",
    )?;
    let model = ports.models.ensure_present(common.model_request()?).await?;
    let artifact = installer.ensure_installed(&inputs.spec).await?;
    let output = artifact.version_output.as_deref().unwrap_or("");
    let reported = recipe.reported_version(output);
    let pinned = inputs
        .version
        .as_deref()
        .map(|v| (v, "binary.version"))
        .or_else(|| release_tag(&inputs.spec.url).map(|tag| (tag, "the release in binary.url")));
    if let (Some(reported), Some((pinned, place))) = (&reported, pinned)
        && !versions_agree(pinned, reported)
    {
        return Err(Error::Download {
            url: inputs.spec.url.redacted(),
            message: format!(
                "the server in it reports version {reported}, but {place} says {pinned}: it is another release than the one pinned"
            ),
            hint: Some(if place == "binary.version" {
                format!(
                    "point provisioning.binary.url and checksum at release {pinned}, or set provisioning.binary.version to {reported}"
                )
            } else {
                format!(
                    "point provisioning.binary.url and checksum at one release: this URL names {pinned}, its contents are {reported}"
                )
            }),
        });
    }
    // The verified install stays in the cache (it is keyed by its checksum); the pool does not
    // get it when it asks for a GPU that it does not show.
    let found = found_backend(recipe, native, &artifact);
    let warnings = check_backend(
        common,
        common.gpu.as_ref(),
        &found,
        &format!("the prebuilt server from {}", inputs.spec.url.redacted()),
        ports.progress.as_ref(),
        |message| Error::BuildCheck {
            message,
            hint: Some(refused_hint(common.gpu.as_ref())),
        },
    )?;
    let env_file = common.write_env_file(ports, env_values).await?;
    common.write_key_file(ports).await?;
    let version = inputs
        .version
        .clone()
        .or_else(|| reported.clone())
        .unwrap_or_else(|| "unknown".to_string());
    let mut env = common.device_env();
    if !artifact.library_dirs.is_empty() {
        let dirs: Vec<String> = artifact
            .library_dirs
            .iter()
            .map(|d| d.to_string_lossy().to_string())
            .collect();
        env.insert("LD_LIBRARY_PATH".to_string(), dirs.join(":"));
    }
    let launch = common.native_launch(
        recipe,
        native,
        &model.path.to_string_lossy(),
        &artifact.supported_flags,
    );
    let outcome = Outcome {
        bin: artifact.executable.clone(),
        args: launch.args,
        env,
        readiness: launch.readiness,
        ports: launch.ports,
        workdir: artifact.dir.clone(),
        engine_version: binary_engine_version(recipe.engine(), &version, &artifact.checksum),
        backend: found.backend,
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

/// The backend a prebuilt shows: the ggml libraries it ships, and what its server printed for
/// the version arguments (read by the recipe).
pub fn found_backend(
    recipe: &dyn Recipe,
    native: &NativeFacts,
    artifact: &BinaryArtifact,
) -> BackendFinding {
    let name = artifact.executable.file_name().map_or_else(
        || native.executable.to_string(),
        |n| n.to_string_lossy().to_string(),
    );
    let probe = (!native.version_args.is_empty()).then(|| {
        VersionProbe::new(
            format!("{name} {}", native.version_args.join(" ")),
            artifact.version_output.as_deref(),
            |output| recipe.reported_backend(output),
        )
    });
    BackendFinding::from_evidence(&artifact.libraries, "the installed files", probe.as_ref())
}

/// The fix for a prebuilt without the GPU backend asked for.
fn refused_hint(ask: Option<&GpuAsk>) -> String {
    let wanted = match ask.and_then(|ask| ask.backend) {
        Some(backend) => format!("the {backend} backend"),
        None => "a GPU backend".to_string(),
    };
    format!(
        "point provisioning.binary.url and checksum at a build with {wanted} (llama.cpp's release assets name it, e.g. llama-<release>-bin-ubuntu-vulkan-x64.zip), build it from source (mode: source with -DGGML_CUDA=ON), {FALLBACK_HINT}"
    )
}

/// The release tag of a download URL, when it has the `/releases/download/<tag>/` form that
/// GitHub (and Gitea/Forgejo) use for release assets.
pub fn release_tag(url: &provisioner_core::SafeUrl) -> Option<&str> {
    let parts: Vec<&str> = url.path().split('/').collect();
    parts
        .windows(4)
        .find(|w| w[0] == "releases" && w[1] == "download" && !w[2].is_empty())
        .map(|w| w[2])
}

/// Whether two version labels name one release: the same first part (up to the first `-` or
/// `+`, a leading `v` ignored), so `b6000` agrees with `b6000-abc1234` and `v0.9.0` with
/// `0.9.0`, while `b6000` and `b6001` disagree.
pub fn versions_agree(a: &str, b: &str) -> bool {
    let head = |v: &str| {
        let v = v.trim();
        let v = v.strip_prefix(['v', 'V']).unwrap_or(v);
        v.split(['-', '+']).next().unwrap_or(v).to_string()
    };
    head(a) == head(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_tag_is_the_part_after_releases_download() {
        let url: provisioner_core::SafeUrl =
            "https://github.com/ggml-org/llama.cpp/releases/download/b6000/llama-b6000-bin-ubuntu-x64.zip"
                .parse()
                .unwrap();
        assert_eq!(release_tag(&url), Some("b6000"));
        let plain: provisioner_core::SafeUrl =
            "https://example.org/llama-b6000.zip".parse().unwrap();
        assert_eq!(release_tag(&plain), None);
    }

    #[test]
    fn versions_agree_on_their_first_part_only() {
        assert!(versions_agree("b6000", "b6000-abc1234"));
        assert!(versions_agree("v0.9.0", "0.9.0"));
        assert!(versions_agree("b6000-release", "b6000-abc1234"));
        assert!(!versions_agree("b6000", "b6001-abc1234"));
        assert!(!versions_agree("v0.9.0", "v0.10.0"));
    }
}
