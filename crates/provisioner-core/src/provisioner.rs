//! The API pool-managerd embeds: plan and prepare a pool.

use async_trait::async_trait;

use crate::config::PoolConfig;
use crate::error::Result;
use crate::plan::Plan;
use crate::prepared::PreparedEngine;

/// Prepares engines for pools. Spawning stays with the caller (pool-managerd or `orchctl`).
#[async_trait]
pub trait EngineProvisioner: Send + Sync {
    /// The steps `prepare` would take, computed without I/O.
    fn plan(&self, pool: &PoolConfig) -> Result<Plan>;

    /// Makes the engine present on this host and describes how to run it. Idempotent: a second
    /// call with the same inputs is a cache hit.
    async fn prepare(&self, pool: &PoolConfig) -> Result<PreparedEngine>;
}
