//! # engines
//!
//! Engine recipes and the [`Provisioner`] that selects one by (engine, mode). A recipe turns a
//! pool's configuration into a [`Plan`] (pure) and, through the ports only, into a
//! [`PreparedEngine`]. **Invariant:** this crate depends on `provisioner-core` alone; it never
//! names an adapter, spawns a process or touches the network itself.

mod args;
pub mod container;
mod llamacpp;
mod others;

use async_trait::async_trait;
use provisioner_core::{
    Engine, EngineProvisioner, Error, Layout, Mode, Plan, PoolConfig, Ports, PreparedEngine, Result,
};

pub use args::{ServerArgs, normalise_server_flags};
pub use llamacpp::{LlamaCpp, backend_from_output, normalise_cmake_flags, parse_llamacpp_version};

/// One engine's knowledge: which modes it offers, how to plan and how to prepare.
#[async_trait]
pub trait Recipe: Send + Sync {
    /// The engine this recipe is for.
    fn engine(&self) -> Engine;

    /// Modes offered, default first.
    fn modes(&self) -> &'static [Mode];

    /// What to use instead of an unsupported mode.
    fn unsupported_hint(&self, mode: Mode) -> Option<String>;

    /// The plan for a pool whose mode is supported (pure).
    fn plan(&self, pool: &PoolConfig, layout: &Layout) -> Result<Plan>;

    /// Executes the plan through the ports.
    async fn prepare(
        &self,
        pool: &PoolConfig,
        layout: &Layout,
        ports: &Ports,
    ) -> Result<PreparedEngine>;
}

/// The adapter wired into an optional port, or [`Error::PortUnavailable`] saying how to wire it.
pub(crate) fn wired<'a, T: ?Sized>(
    port: &'a Option<std::sync::Arc<T>>,
    name: &str,
    how: &str,
) -> Result<&'a std::sync::Arc<T>> {
    port.as_ref().ok_or_else(|| Error::PortUnavailable {
        port: name.to_string(),
        hint: Some(how.to_string()),
    })
}

/// Every recipe, in one list: adding an engine means adding it here.
pub fn recipes() -> Vec<Box<dyn Recipe>> {
    vec![
        Box::new(LlamaCpp),
        Box::new(others::Vllm),
        Box::new(others::Tgi),
        Box::new(others::Triton),
    ]
}

/// The [`EngineProvisioner`] pool-managerd embeds: recipes plus the ports they run on.
pub struct Provisioner {
    ports: Ports,
    layout: Layout,
    recipes: Vec<Box<dyn Recipe>>,
}

impl Provisioner {
    /// A provisioner with every recipe.
    pub fn new(ports: Ports, layout: Layout) -> Self {
        Provisioner {
            ports,
            layout,
            recipes: recipes(),
        }
    }

    /// The directories in use.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn recipe_for(&self, pool: &PoolConfig) -> Result<&dyn Recipe> {
        select(&self.recipes, pool.engine, pool.provisioning.mode)
    }
}

/// Picks the recipe for (engine, mode), or explains why there is none.
pub fn select(recipes: &[Box<dyn Recipe>], engine: Engine, mode: Mode) -> Result<&dyn Recipe> {
    let recipe = recipes
        .iter()
        .find(|r| r.engine() == engine)
        .ok_or_else(|| Error::UnsupportedMode {
            engine: engine.to_string(),
            mode: mode.to_string(),
            supported: Vec::new(),
            hint: Some("no recipe is registered for this engine".to_string()),
        })?;
    if recipe.modes().contains(&mode) {
        Ok(recipe.as_ref())
    } else {
        Err(Error::UnsupportedMode {
            engine: engine.to_string(),
            mode: mode.to_string(),
            supported: recipe.modes().iter().map(|m| m.to_string()).collect(),
            hint: recipe.unsupported_hint(mode),
        })
    }
}

#[async_trait]
impl EngineProvisioner for Provisioner {
    fn plan(&self, pool: &PoolConfig) -> Result<Plan> {
        self.recipe_for(pool)?.plan(pool, &self.layout)
    }

    async fn prepare(&self, pool: &PoolConfig) -> Result<PreparedEngine> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "prepare",
            pool_id = %pool.id,
            engine = %pool.engine,
            mode = %pool.provisioning.mode,
        );
        async {
            let recipe = self.recipe_for(pool)?;
            let result = recipe.prepare(pool, &self.layout, &self.ports).await;
            match &result {
                Ok(prepared) => tracing::info!(
                    engine_version = %prepared.engine_version,
                    cache_hit = prepared.metadata.cache_hit,
                    plan_digest = %prepared.metadata.plan_digest,
                    "prepared"
                ),
                Err(error) => {
                    tracing::warn!(code = ?error.code(), error = %error, "prepare failed")
                }
            }
            result
        }
        .instrument(span)
        .await
    }
}
