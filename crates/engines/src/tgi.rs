//! Hugging Face TGI's facts: container mode only.
//!
//! Upstream facts (text-generation-inference README): the launcher listens on 80 inside its
//! image, takes `--model-id` (a path inside the container works), and is run with
//! `--shm-size 1g`; `/health` answers once the model is loaded. The host gets 8080 by default,
//! because a host port below 1024 fails under rootless podman.

use provisioner_core::{Engine, FoundBackend, Mode, PoolConfig};

use crate::args::ServerArgs;
use crate::common::{ContainerFacts, Listen, Recipe, SharedMemory, backend_in_tag, container_only};

/// The TGI recipe.
pub struct Tgi;

/// `ghcr.io/huggingface/text-generation-inference:3.3.6`, the last 3.x release.
const CONTAINER: ContainerFacts = ContainerFacts {
    default_image: "ghcr.io/huggingface/text-generation-inference",
    default_tag: "3.3.6",
    ports: &[80],
    port_names: &["HTTP"],
    default_host_ports: &[8080],
    shared_memory: SharedMemory::Size("1g"),
    readiness_path: "/health",
    ready_timeout_seconds: 900,
    entrypoint_is_server: true,
};

impl Recipe for Tgi {
    fn engine(&self) -> Engine {
        Engine::Tgi
    }

    fn offers(&self, mode: Mode) -> std::result::Result<(), String> {
        container_only(Engine::Tgi, mode)
    }

    fn server_args(
        &self,
        _pool: &PoolConfig,
        options: &ServerArgs,
        listen: &Listen<'_>,
    ) -> Vec<String> {
        let mut args = vec![
            "--model-id".to_string(),
            listen.model.to_string(),
            "--port".to_string(),
            listen.ports.first().copied().unwrap_or(80).to_string(),
        ];
        args.extend(options.to_argv());
        args
    }

    fn container(&self) -> &ContainerFacts {
        &CONTAINER
    }

    /// TGI's images are CUDA builds unless the tag names another backend (`3.3.6-rocm`, `…-intel-xpu`).
    fn image_backend(&self, tag: Option<&str>) -> Option<FoundBackend> {
        Some(tag.and_then(backend_in_tag).unwrap_or(FoundBackend::Cuda))
    }
}
