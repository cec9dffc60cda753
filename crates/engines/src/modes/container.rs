//! Container mode, for every engine: the image is resolved and pulled by digest through the
//! ContainerRuntime port, and the prepared engine is the exact `podman run …` (or `docker run
//! …`) a supervisor spawns. What differs per engine is the recipe's [`ContainerFacts`]; the
//! argv is rendered once, here.
//!
//! Mount layout (one for every engine): the model, file or directory, is bind-mounted read-only
//! at `/models/<its name>` (never its parent directory); a model staged from the Hugging Face Hub
//! brings its repository's cache directory, mounted read-only at `/models/hf/models--org--repo`
//! (snapshot files are relative symlinks into its `blobs/`), and the engine is pointed at the
//! file or snapshot inside it; host files named in engine flags go to
//! `/inputs/<n>-<file name>`. Mounts are written as `--mount type=bind,source=…,target=…,readonly`,
//! whose value podman and docker read as one CSV record: a field holding `,` or `"` is quoted.

use std::path::Path;

use provisioner_core::{
    BackendFinding, Digest, Engine, Error, FALLBACK_HINT, GpuAsk, ImageArtifact, ImageReference,
    ImageSpec, ImageTag, KnownFacts, Layout, PreparedEngine, Result, RuntimeKind, Step,
    TagOrDigest,
};

use crate::common::{
    Cache, ContainerFacts, Evidence, Listen, OFFLINE_ENV, Outcome, PoolInputs, Recipe,
    SharedMemory, check_backend, finish, probe, wired,
};
use crate::host_files::{self, Rewritten};

/// Where models are mounted inside a container.
pub const MODELS_DIR: &str = "/models";

/// The container run, decided from the pool.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// What the runtime gets.
    pub spec: ImageSpec,
    /// Host ports, in the order of the engine's container ports (`0`: chosen at launch).
    pub host_ports: Vec<u16>,
    /// The runtime's working directory.
    pub workdir: std::path::PathBuf,
}

/// The image (the configured one, else the engine's pinned default), its tag and digest from
/// wherever they are given (they must agree), the runtime and the host ports.
pub fn inputs(recipe: &dyn Recipe, common: &mut PoolInputs, layout: &Layout) -> Result<Inputs> {
    let facts = recipe.container();
    let container = common
        .pool
        .provisioning
        .container
        .clone()
        .unwrap_or_default();
    let (image, default_image) = match container.image {
        Some(image) => (image, false),
        None => (
            facts
                .default_image
                .parse::<ImageReference>()
                .map_err(|e| Error::invalid("provisioning.container.image", e))?,
            true,
        ),
    };
    let (config_tag, tag_digest) = match container.tag {
        Some(TagOrDigest::Tag(tag)) => (Some(tag), None),
        Some(TagOrDigest::Digest(digest)) => (None, Some(digest)),
        None => (None, None),
    };
    let tag = match (image.tag().cloned(), config_tag) {
        (Some(written), Some(given)) if written != given => {
            return Err(Error::invalid(
                "provisioning.container.tag",
                format!(
                    "`{given}` disagrees with the tag `{written}` in container.image; give the tag in one place"
                ),
            ));
        }
        (written, given) => written.or(given),
    };
    let mut digest: Option<(&str, Digest)> = None;
    for (place, candidate) in [
        ("container.image", image.digest().cloned()),
        ("container.tag", tag_digest),
        ("container.digest", container.digest),
    ] {
        let Some(candidate) = candidate else { continue };
        match &digest {
            Some((first, pinned)) if *pinned != candidate => {
                return Err(Error::invalid(
                    format!("provisioning.{place}"),
                    format!("{candidate} disagrees with {pinned} given in {first}; pin one digest"),
                ));
            }
            Some(_) => {}
            None => digest = Some((place, candidate)),
        }
    }
    let digest = digest.map(|(_, d)| d);
    let tag = match (tag, &digest) {
        (Some(tag), _) => Some(tag),
        (None, Some(_)) => None,
        (None, None) if default_image => {
            common.notes.push(format!(
                "container.image is not set: running {}'s pinned image {}:{} (set provisioning.container.image and tag to choose another)",
                recipe.engine().label(),
                facts.default_image,
                facts.default_tag
            ));
            Some(
                facts
                    .default_tag
                    .parse::<ImageTag>()
                    .map_err(|e| Error::invalid("provisioning.container.tag", e))?,
            )
        }
        (None, None) => {
            common.notes.push(format!(
                "{image} names no tag or digest: using `latest`, which moves; pin container.tag or container.digest"
            ));
            Some(
                "latest"
                    .parse::<ImageTag>()
                    .map_err(|e| Error::invalid("provisioning.container.tag", e))?,
            )
        }
    };
    let host_ports = host_ports(&common.pool.provisioning.ports, facts, recipe.engine())?;
    // Host paths in the flags: refused here when they cannot be mounted; their existence is
    // checked by the runtime adapter (files prepare writes, under the run dir, excepted).
    let server = server_args(recipe, common, &format!("{MODELS_DIR}/model"))?;
    for note in &server.notes {
        if !common.notes.contains(note) {
            common.notes.push(note.clone());
        }
    }
    Ok(Inputs {
        spec: ImageSpec {
            engine: recipe.engine(),
            image: image.with(tag, digest),
            insecure: container.insecure.unwrap_or(false),
            runtime: container.runtime,
            devices: common.pool.devices.clone(),
            inputs: server.inputs_to_check(Some(&layout.run_dir)),
        },
        host_ports,
        workdir: layout.cache_root.clone(),
    })
}

/// `provisioning.ports` in the order of the engine's container ports, defaulting to the
/// engine's host ports; after a `0` (a free port chosen at launch) every unset one is `0` too.
fn host_ports(configured: &[u16], facts: &ContainerFacts, engine: Engine) -> Result<Vec<u16>> {
    if configured.len() > facts.ports.len() {
        return Err(Error::invalid(
            "provisioning.ports",
            format!(
                "{} ports given but {engine} publishes {} ({:?})",
                configured.len(),
                facts.ports.len(),
                facts.ports
            ),
        ));
    }
    let free = configured.first() == Some(&0);
    Ok(facts
        .default_host_ports
        .iter()
        .enumerate()
        .map(|(index, default)| match configured.get(index) {
            Some(port) => *port,
            None if free => 0,
            None => *default,
        })
        .collect())
}

/// Quotes one field of a `--mount` value the way Go's CSV reader (podman, docker) reads it.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// A read-only bind mount of `source` at `target`.
pub fn bind_mount(source: &Path, target: &str) -> Result<String> {
    let source = source.to_string_lossy();
    if source.contains(['\n', '\r']) || target.contains(['\n', '\r']) {
        return Err(Error::invalid(
            "provisioning.model.ref",
            "a path holding a line break cannot be mounted into a container",
        ));
    }
    Ok(format!(
        "type=bind,{},{},readonly",
        csv_field(&format!("source={source}")),
        csv_field(&format!("target={target}"))
    ))
}

/// Where the model is inside the container: `/models/<its file or directory name>`.
pub fn model_target(model: &Path) -> String {
    let name = model
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".to_string());
    format!("{MODELS_DIR}/{name}")
}

/// Where Hugging Face cache directories are mounted inside a container.
pub const HF_MODELS_DIR: &str = "/models/hf";

/// The model's mount: `(host source, target, the model's path inside the container)`. A model
/// inside a Hugging Face cache directory (`cache_root`, `…/models--org--repo`) mounts that
/// whole directory at `/models/hf/<its name>`; anything else is [`model_target`].
pub fn model_mount(
    model: &Path,
    cache_root: Option<&Path>,
) -> (std::path::PathBuf, String, String) {
    if let Some(root) = cache_root
        && let (Ok(inside), Some(name)) = (model.strip_prefix(root), root.file_name())
    {
        let target = format!("{HF_MODELS_DIR}/{}", name.to_string_lossy());
        let model_inside = if inside.as_os_str().is_empty() {
            target.clone()
        } else {
            format!("{target}/{}", inside.to_string_lossy())
        };
        return (root.to_path_buf(), target, model_inside);
    }
    let target = model_target(model);
    (model.to_path_buf(), target.clone(), target)
}

/// The container name of a pool (pool ids are a safe alphabet).
pub fn container_name(pool_id: &str) -> String {
    format!("llama-orch-{pool_id}")
}

/// What `run` is rendered from, before or after the image is resolved.
pub struct RunInputs<'a> {
    /// Runtime.
    pub runtime: RuntimeKind,
    /// `registry/repo@sha256:…` (or a placeholder in plans).
    pub reference: &'a str,
    /// Model path on the host (or a placeholder in plans).
    pub model: &'a Path,
    /// The model's Hugging Face cache directory, when it was staged from the hub.
    pub cache_root: Option<&'a Path>,
    /// Version label.
    pub engine_version: &'a str,
    /// The pool's env file, when it has one.
    pub env_file: Option<&'a Path>,
}

/// The full `run` argv for a pool.
pub fn run_args(
    recipe: &dyn Recipe,
    common: &PoolInputs,
    inputs: &Inputs,
    run: &RunInputs<'_>,
) -> Result<Vec<String>> {
    let facts = recipe.container();
    let pool = &common.pool;
    // `--pull=never`: the image was made present by prepare, through the policy; the run
    // itself never fetches (a missing image fails at once, and the supervisor says to
    // prepare again).
    let mut args: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--pull=never".into(),
        "--init".into(),
    ];
    if run.runtime == RuntimeKind::Podman {
        // A container left by a crash would otherwise block the name.
        args.push("--replace".into());
    }
    args.extend(["--name".into(), container_name(pool.id.as_str())]);
    args.extend(["--label".into(), format!("io.llama-orch.pool={}", pool.id)]);
    args.extend([
        "--label".into(),
        format!("io.llama-orch.engine-version={}", run.engine_version),
    ]);
    for (host, inside) in inputs.host_ports.iter().zip(facts.ports) {
        let publish = if *host == 0 {
            format!("127.0.0.1::{inside}")
        } else {
            format!("127.0.0.1:{host}:{inside}")
        };
        args.extend(["--publish".into(), publish]);
    }
    let (source, mount_target, target) = model_mount(run.model, run.cache_root);
    args.extend(["--mount".into(), bind_mount(&source, &mount_target)?]);
    // Host paths named in the engine's flags: mounted read-only under /inputs/, the flags
    // rewritten to them.
    let server = server_args(recipe, common, &target)?;
    for mount in &server.mounts {
        args.extend([
            "--mount".into(),
            bind_mount(&mount.input.path, &mount.target)?,
        ]);
    }
    // The pool's env is read by the runtime from a file of mode 0600: no value is on argv.
    if let Some(env_file) = run.env_file {
        args.extend(["--env-file".into(), env_file.to_string_lossy().to_string()]);
    }
    // The model was staged on the host: the engine's own Hugging Face client must not
    // download anything (no secret here, so these go on argv after the env file, and win).
    for (name, value) in OFFLINE_ENV {
        args.extend(["--env".into(), format!("{name}={value}")]);
    }
    let devices: Vec<String> = pool.devices.iter().map(|d| d.to_string()).collect();
    if !devices.is_empty() {
        match run.runtime {
            // podman uses CDI device names (nvidia-ctk cdi generate).
            RuntimeKind::Podman => {
                for device in &devices {
                    args.extend(["--device".into(), format!("nvidia.com/gpu={device}")]);
                }
            }
            // docker's --gpus value is CSV-parsed: the quotes keep the comma list together.
            RuntimeKind::Docker => {
                args.extend(["--gpus".into(), format!("\"device={}\"", devices.join(","))]);
            }
        }
    }
    match facts.shared_memory {
        SharedMemory::Default => {}
        SharedMemory::HostIpc => args.push("--ipc=host".into()),
        SharedMemory::Size(size) => args.extend(["--shm-size".into(), size.to_string()]),
    }
    args.push(run.reference.to_string());
    args.extend(server.args);
    Ok(args)
}

/// The server's arguments inside the container (listening on every interface, the model at
/// `model`), with the host paths in its flags rewritten to their mounts under `/inputs/`.
pub fn server_args(recipe: &dyn Recipe, common: &PoolInputs, model: &str) -> Result<Rewritten> {
    let args = recipe.server_args(
        &common.pool,
        &common.options,
        &Listen {
            model,
            host: "0.0.0.0",
            ports: recipe.container().ports,
        },
    );
    host_files::rewrite(
        recipe.path_options(),
        &args,
        &common.pool.provisioning.flags,
    )
}

/// `engine_version` of an image: digest plus revision label, with the tag for humans.
pub fn container_engine_version(engine: Engine, image: &ImageArtifact) -> String {
    let tag = image.tag.as_ref().map_or("untagged", ImageTag::as_str);
    let digest = image.digest.hex();
    let mut version = format!("{engine}-{tag}-sha256-{}", &digest[..12]);
    if let Some(revision) = &image.revision {
        version.push_str(&format!("-r{}", &revision[..revision.len().min(12)]));
    }
    version
}

/// Model, pull, launch.
pub fn plan(
    recipe: &dyn Recipe,
    common: &PoolInputs,
    inputs: &Inputs,
    known: &dyn KnownFacts,
) -> Result<Vec<Step>> {
    let facts = recipe.container();
    let spec = &inputs.spec;
    let runtime = spec.runtime.unwrap_or(RuntimeKind::Podman);
    let reference = format!("{}@{{digest}}", spec.image.name());
    let model = common.model_placeholder();
    let mut steps: Vec<Step> = common.model_step(known).into_iter().collect();
    steps.push(Step::PullImage {
        image: spec.image.name(),
        tag: spec.image.tag().map(|t| t.to_string()),
        digest: spec.image.digest().map(|d| d.to_string()),
        resolved_digest: match spec.image.digest() {
            Some(_) => None,
            None => known.image_digest(&spec.image).map(|d| d.to_string()),
        },
        runtime: match spec.runtime {
            Some(kind) => kind.to_string(),
            None => "podman, else docker".to_string(),
        },
    });
    steps.extend(common.env_file_step());
    let env_file = common.env_file.as_ref().map(|f| f.path.clone());
    let args = run_args(
        recipe,
        common,
        inputs,
        &RunInputs {
            runtime,
            reference: &reference,
            model: Path::new(&model),
            cache_root: None,
            engine_version: "{engine_version}",
            env_file: env_file.as_deref(),
        },
    )?;
    steps.push(Step::Launch {
        program: runtime.to_string(),
        args,
        env: Default::default(),
        env_file: None,
        ports: inputs.host_ports.clone(),
        readiness: common.authenticated(probe(
            inputs.host_ports[0],
            facts.readiness_path,
            facts.ready_timeout_seconds,
        )),
    });
    Ok(steps)
}

/// The model first, then the image, then the env file.
pub async fn prepare(
    recipe: &dyn Recipe,
    common: &PoolInputs,
    inputs: &Inputs,
    ports: &provisioner_core::Ports,
    plan_digest: String,
) -> Result<PreparedEngine> {
    let env_values = common.read_env_values(ports).await?;
    let facts = recipe.container();
    let runtime = wired(
        &ports.containers,
        "container runtime",
        "wire adapters-container into Ports::containers",
    )?;
    let model = ports.models.ensure_present(common.model_request()?).await?;
    // A host path in the flags that is missing is named at its flag of this pool.
    let image = runtime
        .ensure_image(&inputs.spec)
        .await
        .map_err(|error| error.within(&format!("pools[{}]", common.pool.index)))?;
    let (ask, found) = backend_of_image(recipe, common, inputs, &image);
    let warnings = check_backend(
        common,
        ask.as_ref(),
        &found,
        &format!("the image {}", image.reference),
        ports.progress.as_ref(),
        |message| Error::BuildCheck {
            message,
            hint: Some(format!(
                "point provisioning.container.image and tag at a build with {} (llama.cpp publishes server-cuda-<release>, server-rocm-<release>, server-vulkan-<release>, … next to the CPU-only server-<release>), {FALLBACK_HINT}",
                match ask.as_ref().and_then(|ask| ask.backend) {
                    Some(backend) => format!("the {backend} backend"),
                    None => "a GPU backend".to_string(),
                }
            )),
        },
    )?;
    let env_file = common.write_env_file(ports, env_values).await?;
    let engine_version = container_engine_version(recipe.engine(), &image);
    let args = run_args(
        recipe,
        common,
        inputs,
        &RunInputs {
            runtime: image.runtime,
            reference: &image.reference,
            model: &model.path,
            cache_root: model.cache_root.as_deref(),
            engine_version: &engine_version,
            env_file: env_file.as_deref(),
        },
    )?;
    let outcome = Outcome {
        bin: image.program.clone(),
        args,
        env: image.runtime_env.clone(),
        readiness: common.authenticated(probe(
            inputs.host_ports[0],
            facts.readiness_path,
            facts.ready_timeout_seconds,
        )),
        ports: inputs.host_ports.clone(),
        workdir: inputs.workdir.clone(),
        engine_version,
        backend: found.backend,
        warnings,
        identity: image
            .revision
            .as_deref()
            .and_then(|revision| recipe.identity(Evidence::ImageRevision(revision))),
        model_path: model.path,
        source: None,
        // The image's digest is the cache key; there is no metadata file of our own.
        cache: Some(Cache {
            key: image.digest.to_string(),
            hit: image.cache_hit,
            metadata_file: None,
        }),
    };
    Ok(finish(common, outcome, env_file, plan_digest))
}

/// What the pool asks of the image's backend (the engine's fixed backend, or a GPU backend its
/// tag names, and the pool's offload flags) and what the image shows (the engine's fixed
/// backend, else the ggml libraries the runtime adapter found in its layers).
pub fn backend_of_image(
    recipe: &dyn Recipe,
    common: &PoolInputs,
    inputs: &Inputs,
    image: &ImageArtifact,
) -> (Option<GpuAsk>, BackendFinding) {
    let label = recipe.engine().label();
    let tag = inputs.spec.image.tag().map(ImageTag::as_str);
    match recipe.image_backend(tag) {
        Some(backend) => (
            GpuAsk::merge(
                Some(GpuAsk::named(
                    backend,
                    format!("{label} images are GPU builds ({backend})"),
                )),
                common.gpu.clone(),
            ),
            BackendFinding::stated(
                backend,
                format!("{label} publishes GPU builds only; this tag is a {backend} build"),
            ),
        ),
        None => (
            GpuAsk::merge(
                tag.and_then(|tag| recipe.image_ask(tag)),
                common.gpu.clone(),
            ),
            image.backend.clone(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_fields_holding_commas_or_quotes_are_csv_quoted() {
        assert_eq!(
            bind_mount(Path::new("/srv/models/tiny.gguf"), "/models/tiny.gguf").unwrap(),
            "type=bind,source=/srv/models/tiny.gguf,target=/models/tiny.gguf,readonly"
        );
        assert_eq!(
            bind_mount(
                Path::new("/srv/a,b \"c\":d.gguf"),
                "/models/a,b \"c\":d.gguf"
            )
            .unwrap(),
            r#"type=bind,"source=/srv/a,b ""c"":d.gguf","target=/models/a,b ""c"":d.gguf",readonly"#
        );
        assert!(bind_mount(Path::new("/srv/a\nb"), "/models/x").is_err());
    }

    #[test]
    fn a_hub_model_mounts_its_whole_cache_directory() {
        let root = Path::new("/home/u/.cache/huggingface/hub/models--org--repo");
        let file = root.join("snapshots/abc/sub/m.gguf");
        assert_eq!(
            model_mount(&file, Some(root)),
            (
                root.to_path_buf(),
                "/models/hf/models--org--repo".to_string(),
                "/models/hf/models--org--repo/snapshots/abc/sub/m.gguf".to_string()
            )
        );
        let plain = Path::new("/srv/m/tiny.gguf");
        assert_eq!(
            model_mount(plain, Some(root)).2,
            "/models/tiny.gguf",
            "outside the cache directory: mounted by its own name"
        );
    }

    #[test]
    fn models_are_mounted_by_their_own_name() {
        assert_eq!(
            model_target(Path::new("/srv/m/tiny.gguf")),
            "/models/tiny.gguf"
        );
        assert_eq!(
            model_target(Path::new("/srv/m/Qwen2.5-0.5B-Instruct")),
            "/models/Qwen2.5-0.5B-Instruct"
        );
    }
}
