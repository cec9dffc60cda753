//! NVIDIA Triton (TensorRT-LLM backend) facts: container mode only.
//!
//! Upstream facts (Triton quickstart): `tritonserver --model-repository=<dir>` serves HTTP on
//! 8000, gRPC on 8001 and metrics on 8002; readiness is `/v2/health/ready`. The image's
//! entrypoint runs the command given after the image.

use provisioner_core::{Engine, FoundBackend, Mode, PoolConfig};

use crate::args::ServerArgs;
use crate::common::{ContainerFacts, Listen, Recipe, SharedMemory, backend_in_tag, container_only};

/// The Triton recipe.
pub struct Triton;

/// `nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3` (CUDA 13.0).
const CONTAINER: ContainerFacts = ContainerFacts {
    default_image: "nvcr.io/nvidia/tritonserver",
    default_tag: "25.10-trtllm-python-py3",
    ports: &[8000, 8001, 8002],
    port_names: &["HTTP", "gRPC", "metrics"],
    default_host_ports: &[8000, 8001, 8002],
    shared_memory: SharedMemory::Size("1g"),
    readiness_path: "/v2/health/ready",
    ready_timeout_seconds: 900,
    entrypoint_is_server: false,
};

impl Recipe for Triton {
    fn engine(&self) -> Engine {
        Engine::Triton
    }

    fn offers(&self, mode: Mode) -> std::result::Result<(), String> {
        container_only(Engine::Triton, mode)
    }

    fn server_args(
        &self,
        _pool: &PoolConfig,
        options: &ServerArgs,
        listen: &Listen<'_>,
    ) -> Vec<String> {
        let mut args = vec![
            "tritonserver".to_string(),
            format!("--model-repository={}", listen.model),
        ];
        args.extend(options.to_argv());
        args
    }

    fn container(&self) -> &ContainerFacts {
        &CONTAINER
    }

    /// Triton's TensorRT-LLM images are CUDA builds.
    fn image_backend(&self, tag: Option<&str>) -> Option<FoundBackend> {
        Some(tag.and_then(backend_in_tag).unwrap_or(FoundBackend::Cuda))
    }
}
