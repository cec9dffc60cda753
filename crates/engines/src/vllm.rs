//! vLLM's facts: container mode only (upstream ships images, not standalone binaries).
//!
//! Upstream facts (docs.vllm.ai, deployment/docker): the OpenAI-compatible server listens on
//! 8000 and needs `--ipc=host` (or a large `--shm-size`) because PyTorch shares tensors through
//! shared memory; `/health` answers before the model is loaded, so readiness is `/v1/models`.

use provisioner_core::{Engine, FoundBackend, Mode, PoolConfig};

use crate::args::ServerArgs;
use crate::common::{ContainerFacts, Listen, Recipe, SharedMemory, backend_in_tag, container_only};

/// The vLLM recipe.
pub struct Vllm;

/// `vllm/vllm-openai:v0.12.0` (December 2025).
const CONTAINER: ContainerFacts = ContainerFacts {
    default_image: "vllm/vllm-openai",
    default_tag: "v0.12.0",
    ports: &[8000],
    port_names: &["HTTP"],
    default_host_ports: &[8000],
    shared_memory: SharedMemory::HostIpc,
    readiness_path: "/v1/models",
    ready_timeout_seconds: 900,
    entrypoint_is_server: true,
};

impl Recipe for Vllm {
    fn engine(&self) -> Engine {
        Engine::Vllm
    }

    fn offers(&self, mode: Mode) -> std::result::Result<(), String> {
        container_only(Engine::Vllm, mode)
    }

    fn server_args(
        &self,
        _pool: &PoolConfig,
        options: &ServerArgs,
        listen: &Listen<'_>,
    ) -> Vec<String> {
        let mut args = vec![
            "--model".to_string(),
            listen.model.to_string(),
            "--host".to_string(),
            listen.host.to_string(),
            "--port".to_string(),
            listen.ports.first().copied().unwrap_or(8000).to_string(),
        ];
        args.extend(options.to_argv());
        args
    }

    fn container(&self) -> &ContainerFacts {
        &CONTAINER
    }

    /// vLLM's images (vllm/vllm-openai) are CUDA builds; a tag naming another backend says so.
    fn image_backend(&self, tag: Option<&str>) -> Option<FoundBackend> {
        Some(tag.and_then(backend_in_tag).unwrap_or(FoundBackend::Cuda))
    }
}
