//! Container mode for every engine: the image is resolved and pulled by digest through the
//! `ContainerRuntime` port, and the PreparedEngine is the exact `podman run …` (or `docker run …`)
//! that pool-managerd spawns. What differs per engine (image, ports, mounts, shared memory,
//! arguments, readiness) is data in [`ContainerEngine`]; the argv is rendered once, here.

use std::path::{Path, PathBuf};

use provisioner_core::{
    Engine, EngineMetadata, IdentityCheck, ImageArtifact, ImageSpec, Layout, Mode, Plan,
    PoolConfig, Ports, PreparedEngine, Probe, Result, RuntimeKind, Step,
};

use crate::llamacpp::{invalid, launch_listening, model_reference, resolve_model};

/// How an engine wants its container's shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedMemory {
    /// The runtime's default is enough.
    Default,
    /// `--ipc=host` (PyTorch workers share tensors through /dev/shm).
    HostIpc,
    /// `--shm-size <size>`.
    Size(&'static str),
}

/// Where the model goes inside the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelMount {
    /// The model's parent directory is mounted read-only at this path; the model is
    /// `<path>/<file name>` inside.
    ParentAt(&'static str),
    /// The model path itself (a directory, e.g. a Triton model repository) is mounted here.
    ItselfAt(&'static str),
}

/// One engine's container facts.
#[derive(Debug, Clone, Copy)]
pub struct ContainerEngine {
    /// Engine.
    pub engine: Engine,
    /// Ports the server listens on inside the container; the first is the HTTP API.
    pub ports: &'static [u16],
    /// Where the model goes.
    pub mount: ModelMount,
    /// Shared memory.
    pub shared_memory: SharedMemory,
    /// HTTP path that answers 200 once the engine can serve.
    pub readiness_path: &'static str,
    /// How long the first start may take (image start plus model load).
    pub ready_timeout_seconds: u64,
}

/// llama.cpp's server image listens on 8080; its entrypoint is `llama-server`, so the arguments
/// after the image are server flags (upstream docs/docker.md: `… ghcr.io/ggml-org/llama.cpp:server
/// -m /models/… --port 8000 --host 0.0.0.0`).
pub const LLAMACPP: ContainerEngine = ContainerEngine {
    engine: Engine::Llamacpp,
    ports: &[8080],
    mount: ModelMount::ParentAt("/models"),
    shared_memory: SharedMemory::Default,
    readiness_path: "/health",
    ready_timeout_seconds: 120,
};

/// vLLM's OpenAI server listens on 8000 and needs `--ipc=host` (or a large `--shm-size`) because
/// PyTorch shares tensors through shared memory; `/health` answers before the model is loaded, so
/// readiness is `/v1/models` (docs.vllm.ai, deployment/docker: `docker run … -p 8000:8000
/// --ipc=host vllm/vllm-openai:latest --model …`).
pub const VLLM: ContainerEngine = ContainerEngine {
    engine: Engine::Vllm,
    ports: &[8000],
    mount: ModelMount::ParentAt("/models"),
    shared_memory: SharedMemory::HostIpc,
    readiness_path: "/v1/models",
    ready_timeout_seconds: 900,
};

/// TGI listens on 80 inside its image and reads weights from a mounted `/data`; upstream runs it
/// with `--shm-size 1g` (text-generation-inference README: `docker run --gpus all --shm-size 1g
/// -p 8080:80 -v $volume:/data ghcr.io/huggingface/text-generation-inference --model-id $model`).
pub const TGI: ContainerEngine = ContainerEngine {
    engine: Engine::Tgi,
    ports: &[80],
    mount: ModelMount::ParentAt("/data"),
    shared_memory: SharedMemory::Size("1g"),
    readiness_path: "/health",
    ready_timeout_seconds: 900,
};

/// Triton serves HTTP on 8000, gRPC on 8001 and metrics on 8002 from a model repository mounted at
/// `/models` (Triton quickstart: `docker run --gpus=1 --rm -p8000:8000 -p8001:8001 -p8002:8002
/// -v/full/path/to/model_repository:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver
/// --model-repository=/models`); readiness is `/v2/health/ready`.
pub const TRITON: ContainerEngine = ContainerEngine {
    engine: Engine::Triton,
    ports: &[8000, 8001, 8002],
    mount: ModelMount::ItselfAt("/models"),
    shared_memory: SharedMemory::Size("1g"),
    readiness_path: "/v2/health/ready",
    ready_timeout_seconds: 900,
};

/// The container facts of an engine.
pub fn container_engine(engine: Engine) -> ContainerEngine {
    match engine {
        Engine::Llamacpp => LLAMACPP,
        Engine::Vllm => VLLM,
        Engine::Tgi => TGI,
        Engine::Triton => TRITON,
    }
}

/// The container name for a pool (pool ids are already a safe alphabet).
pub fn container_name(pool_id: &str) -> String {
    format!("llama-orch-{pool_id}")
}

fn image_spec(pool: &PoolConfig) -> Result<ImageSpec> {
    let container = pool.provisioning.container.as_ref().ok_or_else(|| {
        invalid(
            "provisioning.container",
            "required for mode container".to_string(),
        )
    })?;
    let (tag, tag_digest) = match container.tag.as_deref() {
        Some(t) if t.starts_with("sha256:") => (None, Some(t.to_string())),
        Some(t) => (Some(t.to_string()), None),
        None => (None, None),
    };
    if let (Some(a), Some(b)) = (&tag_digest, &container.digest)
        && a != b
    {
        return Err(invalid(
            "provisioning.container.digest",
            format!("disagrees with the digest given as tag ({a} vs {b})"),
        ));
    }
    let runtime = match container.runtime.as_deref() {
        Some("podman") => Some(RuntimeKind::Podman),
        Some("docker") => Some(RuntimeKind::Docker),
        _ => None,
    };
    Ok(ImageSpec {
        engine: pool.engine,
        image: container.image.clone(),
        tag,
        digest: container.digest.clone().or(tag_digest),
        insecure: container.insecure,
        runtime,
        devices: pool.devices.iter().map(|d| d.to_string()).collect(),
        refresh: false,
    })
}

/// The host ports: `provisioning.ports` in order, defaulting to the engine's own.
fn host_ports(pool: &PoolConfig, facts: &ContainerEngine) -> Result<Vec<u16>> {
    let configured = &pool.provisioning.ports;
    if configured.len() > facts.ports.len() {
        return Err(invalid(
            "provisioning.ports",
            format!(
                "{} ports given but {} publishes {} ({:?})",
                configured.len(),
                facts.engine,
                facts.ports.len(),
                facts.ports
            ),
        ));
    }
    Ok(facts
        .ports
        .iter()
        .enumerate()
        .map(|(index, inside)| configured.get(index).copied().unwrap_or(*inside))
        .collect())
}

/// Where the model is inside the container and what to mount for it.
fn model_mount(facts: &ContainerEngine, model: &Path) -> (String, Option<(PathBuf, String)>) {
    match facts.mount {
        ModelMount::ParentAt(at) => {
            let name = model
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let parent = model.parent().map(Path::to_path_buf);
            (format!("{at}/{name}"), parent.map(|p| (p, at.to_string())))
        }
        ModelMount::ItselfAt(at) => (at.to_string(), Some((model.to_path_buf(), at.to_string()))),
    }
}

/// The engine's own arguments after the image.
fn engine_args(
    pool: &PoolConfig,
    facts: &ContainerEngine,
    model_inside: &str,
) -> Result<Vec<String>> {
    let flags = pool.provisioning.flags.clone();
    Ok(match facts.engine {
        Engine::Llamacpp => launch_listening(pool, model_inside, None, Some(facts.ports[0]))?.args,
        Engine::Vllm => {
            let mut args = vec![
                "--model".to_string(),
                model_inside.to_string(),
                "--host".to_string(),
                "0.0.0.0".to_string(),
                "--port".to_string(),
                facts.ports[0].to_string(),
            ];
            args.extend(flags);
            args
        }
        Engine::Tgi => {
            let mut args = vec![
                "--model-id".to_string(),
                model_inside.to_string(),
                "--port".to_string(),
                facts.ports[0].to_string(),
            ];
            args.extend(flags);
            args
        }
        Engine::Triton => {
            let mut args = vec![
                "tritonserver".to_string(),
                format!("--model-repository={model_inside}"),
            ];
            args.extend(flags);
            args
        }
    })
}

/// What is needed to render `run`, known before or after the image is resolved.
pub struct RunInputs<'a> {
    /// Runtime.
    pub runtime: RuntimeKind,
    /// `registry/repo@sha256:…` (or a placeholder in plans).
    pub reference: &'a str,
    /// Model path on the host (or a placeholder in plans).
    pub model: &'a Path,
    /// Version label.
    pub engine_version: &'a str,
}

/// The full `run` argv for a pool.
pub fn run_args(pool: &PoolConfig, inputs: &RunInputs<'_>) -> Result<Vec<String>> {
    let facts = container_engine(pool.engine);
    let ports = host_ports(pool, &facts)?;
    let (model_inside, mount) = model_mount(&facts, inputs.model);
    let mut args: Vec<String> = vec!["run".into(), "--rm".into(), "--init".into()];
    if inputs.runtime == RuntimeKind::Podman {
        // A container left by a crash would otherwise block the name.
        args.push("--replace".into());
    }
    args.extend(["--name".into(), container_name(&pool.id)]);
    args.extend(["--label".into(), format!("io.llama-orch.pool={}", pool.id)]);
    args.extend([
        "--label".into(),
        format!("io.llama-orch.engine-version={}", inputs.engine_version),
    ]);
    for (host, inside) in ports.iter().zip(facts.ports) {
        args.extend(["--publish".into(), format!("127.0.0.1:{host}:{inside}")]);
    }
    if let Some((host_dir, at)) = mount {
        args.extend([
            "--volume".into(),
            format!("{}:{at}:ro", host_dir.to_string_lossy()),
        ]);
    }
    // The engine's environment is passed explicitly; nothing of the host's leaks in.
    for (key, value) in &pool.provisioning.env {
        args.extend(["--env".into(), format!("{key}={value}")]);
    }
    let devices: Vec<String> = pool.devices.iter().map(|d| d.to_string()).collect();
    if !devices.is_empty() {
        match inputs.runtime {
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
    args.push(inputs.reference.to_string());
    args.extend(engine_args(pool, &facts, &model_inside)?);
    Ok(args)
}

fn readiness(pool: &PoolConfig, facts: &ContainerEngine) -> Result<Probe> {
    Ok(Probe {
        port: host_ports(pool, facts)?[0],
        path: facts.readiness_path.to_string(),
        status: 200,
        timeout_seconds: facts.ready_timeout_seconds,
    })
}

/// `engine_version` of an image: digest plus revision label, with the tag for humans.
pub fn container_engine_version(engine: Engine, image: &ImageArtifact) -> String {
    let tag = image.tag.as_deref().unwrap_or("untagged");
    let digest = image.digest.trim_start_matches("sha256:");
    let mut version = format!("{engine}-{tag}-sha256-{}", &digest[..digest.len().min(12)]);
    if let Some(revision) = &image.revision {
        version.push_str(&format!("-r{}", &revision[..revision.len().min(12)]));
    }
    version
}

/// The plan of container mode.
pub fn plan(pool: &PoolConfig, _layout: &Layout) -> Result<Plan> {
    let spec = image_spec(pool)?;
    let facts = container_engine(pool.engine);
    let runtime = spec.runtime.unwrap_or(RuntimeKind::Podman);
    let reference = format!("{}@{{digest}}", spec.image);
    let model = PathBuf::from(model_reference(pool)?.trim_start_matches("file:"));
    let args = run_args(
        pool,
        &RunInputs {
            runtime,
            reference: &reference,
            model: &model,
            engine_version: "{engine_version}",
        },
    )?;
    Ok(Plan {
        pool_id: pool.id.clone(),
        engine: pool.engine,
        mode: Mode::Container,
        steps: vec![
            Step::ResolveModel {
                reference: model_reference(pool)?,
            },
            Step::PullImage {
                image: spec.image,
                tag: spec.tag,
                digest: spec.digest,
                runtime: match spec.runtime {
                    Some(kind) => kind.as_str().to_string(),
                    None => "podman, else docker".to_string(),
                },
            },
            Step::Launch {
                program: runtime.as_str().to_string(),
                args,
                env: Default::default(),
                ports: host_ports(pool, &facts)?,
                readiness: readiness(pool, &facts)?,
            },
        ],
    })
}

/// Prepares container mode through the ports.
pub async fn prepare(pool: &PoolConfig, layout: &Layout, ports: &Ports) -> Result<PreparedEngine> {
    let plan = plan(pool, layout)?;
    let runtime = crate::wired(
        &ports.containers,
        "container runtime",
        "wire adapters-container into Ports::containers",
    )?;
    let facts = container_engine(pool.engine);
    let model = resolve_model(pool, layout, ports).await?;
    let image = runtime.ensure_image(&image_spec(pool)?).await?;
    let engine_version = container_engine_version(pool.engine, &image);
    let args = run_args(
        pool,
        &RunInputs {
            runtime: image.runtime,
            reference: &image.reference,
            model: &model.path,
            engine_version: &engine_version,
        },
    )?;
    let identity = match (pool.engine, &image.revision) {
        // llama.cpp reports the commit it was built from in /props; an image labelled with its
        // revision must be running that build.
        (Engine::Llamacpp, Some(revision)) => Some(IdentityCheck {
            path: "/props".to_string(),
            json_pointer: "/build_info".to_string(),
            contains: revision[..revision.len().min(9)].to_string(),
        }),
        _ => None,
    };
    Ok(PreparedEngine {
        pool_id: pool.id.clone(),
        engine: pool.engine,
        bin: image.program.clone(),
        args,
        env: image.runtime_env.clone(),
        ports: host_ports(pool, &facts)?,
        workdir: layout.cache_root.clone(),
        engine_version,
        metadata: EngineMetadata {
            mode: Mode::Container,
            source: None,
            build_flags: Vec::new(),
            backend: if pool.devices.is_empty() {
                provisioner_core::Backend::Cpu
            } else {
                provisioner_core::Backend::Cuda
            },
            readiness: readiness(pool, &facts)?,
            identity,
            model_path: model.path,
            cache_key: Some(image.digest.clone()),
            cache_hit: image.cache_hit,
            metadata_file: None,
            plan_digest: plan.digest(),
        },
    })
}
