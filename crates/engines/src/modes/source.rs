//! Source mode: git + CMake through the SourceBuilder port.

use provisioner_core::tools::source_build_tools;
use provisioner_core::{
    BuildInfoVariables, Error, GitRef, GitRemote, KnownFacts, Layout, PreparedEngine, Result,
    SourceBuildSpec, SourceProvenance, Step,
};

use crate::common::{Cache, Evidence, Outcome, PoolInputs, Recipe, finish, native_facts, wired};

/// The source build, decided from the pool.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// What the builder gets.
    pub spec: SourceBuildSpec,
}

/// Repository, ref (the recipe's pinned defaults when the pool names neither), CMake entries
/// normalised by the recipe, the build cache (`source.build.cache_dir` or the engine cache).
pub fn inputs(recipe: &dyn Recipe, common: &mut PoolInputs, layout: &Layout) -> Result<Inputs> {
    let facts = recipe
        .source()
        .ok_or_else(|| Error::invalid("provisioning.mode", "no source build"))?;
    let source = common.pool.provisioning.source.clone().unwrap_or_default();
    let (repo, reference) = match (source.repo, source.reference) {
        (Some(repo), Some(reference)) => (repo, reference),
        (None, reference) => {
            let repo: GitRemote = facts
                .default_repo
                .parse()
                .map_err(|e: String| Error::invalid("provisioning.source.repo", e))?;
            let reference = match reference {
                Some(reference) => reference,
                None => {
                    common.notes.push(format!(
                        "source.ref is not set: building {}'s pinned release {} (set provisioning.source.ref to choose another)",
                        recipe.engine().label(),
                        facts.default_ref
                    ));
                    facts
                        .default_ref
                        .parse::<GitRef>()
                        .map_err(|e| Error::invalid("provisioning.source.ref", e))?
                }
            };
            (repo, reference)
        }
        (Some(_), None) => {
            return Err(Error::invalid(
                "provisioning.source.ref",
                "required when source.repo is set (the pinned default ref belongs to the default repository)",
            ));
        }
    };
    let cmake = recipe.cmake_entries(&source.build.cmake_flags)?;
    common.notes.extend(cmake.notes);
    // A pool that asks for a GPU (`-ngl 99`) with entries that build none fails here, before
    // anything is fetched, unless it allows running on the CPU.
    let (_, warnings) = crate::common::source_backend(common, cmake.backend)?;
    common.notes.extend(warnings);
    let spec = SourceBuildSpec {
        engine: recipe.engine(),
        cache_dir: layout.dir_or(
            source.build.cache_dir.as_deref(),
            layout.engine_cache(recipe.engine()),
        ),
        repo,
        reference,
        submodules: source.submodules.unwrap_or(false),
        generator: source.build.generator,
        cmake_flags: cmake.entries,
        renamed: cmake.renamed,
        tree_rules: cmake.tree_rules,
        fetches: cmake.fetches,
        headers: cmake.headers,
        build_info: facts.build_info.map(|(commit, number)| BuildInfoVariables {
            commit: commit.to_string(),
            number: number.to_string(),
        }),
        targets: facts.targets.iter().map(|t| t.to_string()).collect(),
        artifacts: facts.artifacts.iter().map(|a| a.to_string()).collect(),
        backend: cmake.backend,
        allow_package_installs: common.pool.allow_package_installs(),
        flag_probe: native_facts(recipe)
            .ok()
            .and_then(crate::common::NativeFacts::flag_probe),
    };
    Ok(Inputs { spec })
}

/// Preflight, model, fetch, configure, build, install, launch.
pub fn plan(
    recipe: &dyn Recipe,
    common: &PoolInputs,
    inputs: &Inputs,
    known: &dyn KnownFacts,
) -> Result<Vec<Step>> {
    let spec = &inputs.spec;
    let native = native_facts(recipe)?;
    let mut steps = vec![Step::Preflight {
        tools: source_build_tools(spec.generator, spec.backend),
    }];
    steps.extend(common.model_step(known));
    steps.push(Step::FetchSource {
        repo: spec.repo.to_string(),
        reference: spec.reference.to_string(),
        submodules: spec.submodules,
        commit: known.commit(&spec.cache_dir, &spec.repo, &spec.reference),
    });
    steps.push(Step::Configure {
        generator: spec.generator,
        cmake_flags: spec.cmake_flags.to_flags(),
        commit_flags: spec
            .build_info
            .iter()
            .flat_map(|b| [b.commit.clone(), b.number.clone()])
            .collect(),
        backend: spec.backend,
    });
    steps.push(Step::Build {
        targets: spec.targets.clone(),
    });
    steps.push(Step::Install {
        cache_dir: spec.cache_dir.clone(),
        artifacts: spec.artifacts.clone(),
        key_inputs: ["commit", "cmake flags", "generator", "toolchain"]
            .map(String::from)
            .to_vec(),
    });
    steps.extend(common.env_file_step());
    let mut env = common.device_env();
    if spec.cmake_flags.is_on("BUILD_SHARED_LIBS") {
        env.insert(
            "LD_LIBRARY_PATH".to_string(),
            "{install_dir}/bin".to_string(),
        );
    }
    steps.push(common.native_launch_step(
        recipe,
        native,
        format!("{{install_dir}}/{}", spec.artifacts[0]),
        env,
    ));
    Ok(steps)
}

/// The model first (cheap to check, a build is not), then the build, then the env file.
pub async fn prepare(
    recipe: &dyn Recipe,
    common: &PoolInputs,
    inputs: &Inputs,
    ports: &provisioner_core::Ports,
    plan_digest: String,
) -> Result<PreparedEngine> {
    let env_values = common.read_env_values(ports).await?;
    common.check_host_inputs(recipe, ports).await?;
    let spec = &inputs.spec;
    let native = native_facts(recipe)?;
    let builder = wired(
        &ports.source_builder,
        "source builder",
        "wire adapters-source's CmakeSourceBuilder into Ports::source_builder",
    )?;
    let model = ports.models.ensure_present(common.model_request()?).await?;
    let (found, warnings) = crate::common::source_backend(common, spec.backend)?;
    for message in &warnings {
        ports
            .progress
            .report(provisioner_core::ProgressEvent::Note {
                message: message.clone(),
            });
    }
    let artifact = builder.ensure_built(spec).await?;
    let env_file = common.write_env_file(ports, env_values).await?;
    common.write_key_file(ports).await?;
    let mut env = common.device_env();
    if spec.cmake_flags.is_on("BUILD_SHARED_LIBS") {
        env.insert(
            "LD_LIBRARY_PATH".to_string(),
            artifact.dir.join("bin").to_string_lossy().to_string(),
        );
    }
    let launch = common.native_launch(
        recipe,
        native,
        &model.path.to_string_lossy(),
        &artifact.supported_flags,
    );
    let outcome = Outcome {
        bin: artifact.dir.join(&spec.artifacts[0]),
        args: launch.args,
        env,
        readiness: launch.readiness,
        ports: launch.ports,
        workdir: artifact.dir.clone(),
        // The builder records the version in the metadata next to the artefact; one source.
        engine_version: artifact.engine_version.clone(),
        backend: found.backend,
        warnings,
        identity: recipe.identity(Evidence::Commit(&artifact.commit)),
        model_path: model.path,
        source: Some((
            SourceProvenance {
                repo: spec.repo.to_string(),
                reference: spec.reference.to_string(),
                commit: artifact.commit.clone(),
            },
            artifact.flags.clone(),
        )),
        cache: Some(Cache {
            key: artifact.key,
            hit: artifact.cache_hit,
            metadata_file: Some(artifact.metadata_file),
        }),
    };
    Ok(finish(common, outcome, env_file, plan_digest))
}
