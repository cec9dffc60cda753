//! `mode: external`: the engine is run by someone else; the pool attaches to its endpoint.
//! Nothing is fetched, built, installed or started.

use provisioner_core::{EngineMetadata, PreparedEngine, Probe, Step, external_engine_version};

use crate::common::{PoolInputs, Recipe, probe};

/// Where the external engine is.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// Its port.
    pub port: u16,
    /// Its readiness probe.
    pub readiness: Probe,
}

/// The endpoint: `ports[0]`, else the engine's default port (config check refuses `0`).
pub fn inputs(recipe: &dyn Recipe, common: &PoolInputs) -> Inputs {
    let facts = recipe.container();
    let port = common
        .pool
        .provisioning
        .ports
        .first()
        .copied()
        .unwrap_or(facts.default_host_ports[0]);
    let readiness_path = recipe
        .native()
        .map_or(facts.readiness_path, |native| native.readiness_path);
    Inputs {
        endpoint: format!("http://127.0.0.1:{port}"),
        port,
        readiness: probe(port, readiness_path, facts.ready_timeout_seconds),
    }
}

/// One step: attach.
pub fn plan(inputs: &Inputs) -> Vec<Step> {
    vec![Step::Attach {
        endpoint: inputs.endpoint.clone(),
        readiness: inputs.readiness.clone(),
    }]
}

/// An attach-only result: no program, no arguments, only the endpoint's probe.
pub fn prepare(common: &PoolInputs, inputs: &Inputs, plan_digest: String) -> PreparedEngine {
    PreparedEngine {
        pool_id: common.pool.id.clone(),
        engine: common.pool.engine,
        bin: None,
        args: Vec::new(),
        env: Default::default(),
        env_file: None,
        ports: vec![inputs.port],
        workdir: None,
        engine_version: external_engine_version(common.pool.engine),
        metadata: EngineMetadata {
            mode: common.mode,
            source: None,
            build_flags: Vec::new(),
            backend: None,
            readiness: inputs.readiness.clone(),
            identity: None,
            model_path: None,
            cache_key: None,
            cache_hit: false,
            metadata_file: None,
            plan_digest,
            warnings: Vec::new(),
        },
    }
}
