//! Hugging Face TGI's facts: container mode only.
//!
//! Upstream facts (text-generation-inference README): the launcher listens on 80 inside its
//! image, takes `--model-id` (a path inside the container works), and is run with
//! `--shm-size 1g`; `/health` answers once the model is loaded. The host gets 8080 by default,
//! because a host port below 1024 fails under rootless podman.

use provisioner_core::{
    Backend, CacheEntries, CacheEntry, Engine, IdentityCheck, Mode, PoolConfig, Result,
};

use crate::args::ServerArgs;
use crate::common::{
    ContainerFacts, Evidence, Listen, NativeFacts, Recipe, SharedMemory, SourceFacts,
    container_only, no_source_build,
};

/// The TGI recipe.
pub struct Tgi;

/// `ghcr.io/huggingface/text-generation-inference:3.3.6`, the last 3.x release.
const CONTAINER: ContainerFacts = ContainerFacts {
    default_image: "ghcr.io/huggingface/text-generation-inference",
    default_tag: "3.3.6",
    ports: &[80],
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

    fn options(&self, pool: &PoolConfig) -> Result<ServerArgs> {
        Ok(ServerArgs::verbatim(&pool.provisioning.flags))
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

    fn native(&self) -> Option<&NativeFacts> {
        None
    }

    fn source(&self) -> Option<&SourceFacts> {
        None
    }

    fn cmake_entries(&self, _: &[CacheEntry]) -> Result<(CacheEntries, Backend, Vec<String>)> {
        Err(no_source_build(Engine::Tgi))
    }

    fn container(&self) -> &ContainerFacts {
        &CONTAINER
    }

    fn reported_version(&self, _: &str) -> Option<String> {
        None
    }

    fn reported_backend(&self, _: &str) -> Backend {
        Backend::Cuda
    }

    fn identity(&self, _: Evidence<'_>) -> Option<IdentityCheck> {
        None
    }
}
