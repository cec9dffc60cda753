//! # engines
//!
//! Engine recipes and the [`Provisioner`] that runs them. Each engine states its facts in one
//! file (`llamacpp.rs`, `vllm.rs`, `tgi.rs`, `triton.rs`) by implementing [`Recipe`]; each mode
//! lives in one file under `modes/`, written against [`Recipe`] and the ports; what they share
//! is in `common.rs` and `args.rs`. A pool's inputs are computed once ([`PoolInputs`] plus the
//! mode's own), and both `plan` and `prepare` are derived from them: prepare is the plan carried
//! out.
//!
//! **Invariant:** this crate depends on `provisioner-core` alone; it never names an adapter,
//! spawns a process or touches the network itself.

mod args;
mod common;
pub mod conflicts;
pub mod host_files;
mod llamacpp;
pub mod modes;
mod tgi;
mod triton;
mod vllm;

use async_trait::async_trait;
use provisioner_core::{
    Config, EngineProvisioner, Error, FieldError, Layout, Mode, Plan, PoolConfig, Ports,
    PreparedEngine, Result, Step,
};

use crate::conflicts::{Claims, Conflict};

pub use args::{ServerArgs, parse_options};
pub use common::{
    ApiKeyFacts, CmakeChoice, ContainerFacts, ENV_FILE, EnvFile, Evidence, KEY_FILE, KeyFile,
    Listen, ModelInput, NativeFacts, PoolInputs, Recipe, SharedMemory, SourceFacts,
};
pub use llamacpp::{LlamaCpp, backend_from_output, normalise_cmake_flags, parse_llamacpp_version};
pub use modes::container::{container_engine_version, container_name};
pub use tgi::Tgi;
pub use triton::Triton;
pub use vllm::Vllm;

/// Every recipe, in one list: adding an engine means adding it here.
pub fn recipes() -> Vec<Box<dyn Recipe>> {
    vec![
        Box::new(LlamaCpp),
        Box::new(Vllm),
        Box::new(Tgi),
        Box::new(Triton),
    ]
}

/// A mode's share of a pool's inputs.
#[derive(Debug, Clone)]
pub enum ModeInputs {
    /// `mode: external`.
    External(modes::external::Inputs),
    /// `mode: source`.
    Source(modes::source::Inputs),
    /// `mode: container`.
    Container(modes::container::Inputs),
    /// `mode: package`.
    Package(modes::package::Inputs),
    /// `mode: binary`.
    Binary(modes::binary::Inputs),
}

/// Everything a pool's plan and prepare are derived from.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// What every mode shares.
    pub common: PoolInputs,
    /// The mode's own.
    pub mode: ModeInputs,
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

    fn recipe_for(&self, pool: &PoolConfig) -> Result<&dyn Recipe> {
        select(&self.recipes, pool)
    }

    /// A pool's inputs, computed once; errors name fields under `pools[N]`.
    pub fn inputs(&self, pool: &PoolConfig) -> Result<Inputs> {
        let prefix = format!("pools[{}]", pool.index);
        let recipe = self.recipe_for(pool)?;
        let env_file = self.ports.run_files.path(&pool.id, ENV_FILE);
        let compute = || -> Result<Inputs> {
            let mut common = PoolInputs::new(recipe, pool, &self.layout, env_file)?;
            let mode = match common.mode {
                Mode::External => ModeInputs::External(modes::external::inputs(recipe, &common)),
                Mode::Source => {
                    ModeInputs::Source(modes::source::inputs(recipe, &mut common, &self.layout)?)
                }
                Mode::Container => ModeInputs::Container(modes::container::inputs(
                    recipe,
                    &mut common,
                    &self.layout,
                )?),
                Mode::Package => {
                    ModeInputs::Package(modes::package::inputs(recipe, &common, &self.layout)?)
                }
                Mode::Binary => {
                    ModeInputs::Binary(modes::binary::inputs(recipe, &common, &self.layout)?)
                }
            };
            if let (
                ModeInputs::Source(_) | ModeInputs::Package(_) | ModeInputs::Binary(_),
                Some(flag),
            ) = (&mode, recipe.native().and_then(|n| n.offline_flag))
            {
                common.notes.push(format!(
                    "the model is staged before launch, so {} also gets {flag} when its --help lists it (learnt once at prepare and recorded)",
                    recipe.native().map_or("the server", |n| n.executable)
                ));
            }
            Ok(Inputs { common, mode })
        };
        compute().map_err(|error| error.within(&prefix))
    }

    fn plan_of(&self, recipe: &dyn Recipe, inputs: &Inputs) -> Result<Plan> {
        let common = &inputs.common;
        let known = self.ports.known.as_ref();
        let steps: Vec<Step> = match &inputs.mode {
            ModeInputs::External(mode) => modes::external::plan(mode),
            ModeInputs::Source(mode) => modes::source::plan(recipe, common, mode, known)?,
            ModeInputs::Container(mode) => modes::container::plan(recipe, common, mode, known)?,
            ModeInputs::Package(mode) => modes::package::plan(recipe, common, mode, known)?,
            ModeInputs::Binary(mode) => modes::binary::plan(recipe, common, mode, known)?,
        };
        Ok(Plan {
            pool_id: common.pool.id.clone(),
            engine: common.pool.engine,
            mode: common.mode,
            steps,
            notes: common.notes.clone(),
        })
    }

    /// Stages the pool's model only (`orchctl model pull`): the request prepare would make,
    /// with `refresh` set to resolve an unpinned revision (a branch) again.
    ///
    /// Errors: an external pool (it stages no model), the config's rules, and what the
    /// ModelProvisioner port reports.
    pub async fn pull_model(
        &self,
        pool: &PoolConfig,
        refresh: bool,
    ) -> Result<provisioner_core::ModelArtifact> {
        let prefix = format!("pools[{}]", pool.index);
        let recipe = self.recipe_for(pool)?;
        let env_file = self.ports.run_files.path(&pool.id, ENV_FILE);
        let common = PoolInputs::new(recipe, pool, &self.layout, env_file)
            .map_err(|error| error.within(&prefix))?;
        let mut request = common
            .model_request()
            .map_err(|error| error.within(&prefix))?
            .clone();
        request.refresh = refresh;
        self.ports.models.ensure_present(&request).await
    }

    /// Every problem of every pool that needs no host: what [`Config::parse`] checks, plus each
    /// engine's and mode's own rules (flags, unsupported engine/mode pairs, ports), plus what
    /// two pools would both use ([`Provisioner::conflicts`]). All are reported at once as one
    /// [`Error::ConfigInvalid`], in pool order.
    pub fn check(&self, config: &Config) -> Result<()> {
        self.check_all(config, Vec::new())
    }

    /// [`Provisioner::check`] going on from what [`Config::parse_all`] found: `found` are the
    /// parser's problems, `config` every pool it could read. A pool with a problem already is
    /// not planned (its other problems would be knock-on ones), but whether its engine offers
    /// its mode is still asked: when not, that is its problem, in place of what the mode
    /// would have required (`binary.url` of a mode the engine does not have). The pools
    /// without a problem are checked in full. Every problem comes back at once, by pool.
    pub fn check_all(&self, config: &Config, found: Vec<FieldError>) -> Result<()> {
        let found = with_mode_problems(&self.recipes, config, found);
        let clean: Vec<PoolConfig> = config
            .pools
            .iter()
            .filter(|pool| !found.iter().any(|error| is_of(pool, error)))
            .cloned()
            .collect();
        let mut errors: Vec<(usize, FieldError)> = found
            .into_iter()
            .map(|error| (provisioner_core::config::pool_position(&error.path), error))
            .collect();
        for pool in &clean {
            let mut push = |error: FieldError| errors.push((pool.index + 1, error));
            match self.plan(pool) {
                Ok(_) => {}
                Err(Error::ConfigInvalid { errors: found }) => found.into_iter().for_each(push),
                Err(error @ Error::UnsupportedMode { .. }) => push(mode_problem(pool, &error)),
                Err(other) => push(FieldError::new(
                    format!("pools[{}]", pool.index),
                    other.to_string(),
                )),
            }
        }
        let clean = Config {
            pools: clean,
            catalog: config.catalog.clone(),
        };
        errors.extend(
            self.conflicts(&clean)
                .into_iter()
                .map(|conflict| (conflict.pools[0] + 1, conflict.error)),
        );
        errors.sort_by_key(|(index, _)| *index);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::ConfigInvalid {
                errors: errors.into_iter().map(|(_, error)| error).collect(),
            })
        }
    }

    /// What two pools of `config` would both use on this host (a host port, a container name,
    /// a run file, an install path holding different content, one package at two versions),
    /// each reported at the later pool and naming the earlier ones. Pools whose inputs do not
    /// compute are left out: [`Provisioner::check`] reports them.
    pub fn conflicts(&self, config: &Config) -> Vec<Conflict> {
        let claims: Vec<Claims> = config
            .pools
            .iter()
            .filter_map(|pool| self.claims(pool).ok())
            .collect();
        conflicts::find(&claims)
    }

    /// What a pool would use on this host that no other pool may, from its inputs.
    pub fn claims(&self, pool: &PoolConfig) -> Result<Claims> {
        let recipe = self.recipe_for(pool)?;
        let inputs = self.inputs(pool)?;
        let env_file = self.ports.run_files.path(&pool.id, ENV_FILE);
        let run_paths = || conflicts::run_paths(&self.layout, pool, &env_file);
        let native = || common::native_facts(recipe);
        let mut claims = Claims::new(pool);
        match &inputs.mode {
            ModeInputs::External(mode) => {
                claims.ports = conflicts::external_ports(recipe, pool, mode);
            }
            ModeInputs::Source(mode) => {
                claims.ports = conflicts::native_ports(recipe, native()?, &inputs.common);
                claims.installs.push(conflicts::source_install(mode));
                claims.run_paths = run_paths();
            }
            ModeInputs::Container(mode) => {
                claims.ports = conflicts::container_ports(recipe, pool, mode);
                claims.container = Some(container_name(pool.id.as_str()));
                claims.run_paths = run_paths();
            }
            ModeInputs::Package(mode) => {
                claims.ports = conflicts::native_ports(recipe, native()?, &inputs.common);
                claims.packages = conflicts::package_pin(mode);
                claims.run_paths = run_paths();
            }
            ModeInputs::Binary(mode) => {
                claims.ports = conflicts::native_ports(recipe, native()?, &inputs.common);
                claims.installs.push(conflicts::binary_install(mode));
                claims.run_paths = run_paths();
            }
        }
        Ok(claims)
    }
}

/// The parser's problems ([`Config::parse_all`]) with, for each pool that has one and whose
/// engine does not offer its mode, that in place of what the mode would have required: the
/// first thing to fix is the engine or the mode, not `binary.url` of a mode the engine does not
/// have. Ordered by pool.
pub fn with_mode_problems(
    recipes: &[Box<dyn Recipe>],
    config: &Config,
    found: Vec<FieldError>,
) -> Vec<FieldError> {
    let mut errors = found;
    for pool in &config.pools {
        if !errors.iter().any(|error| is_of(pool, error)) {
            continue;
        }
        if let Err(error @ Error::UnsupportedMode { .. }) = select(recipes, pool) {
            let section = pool.field(&format!("provisioning.{}", pool.mode()));
            errors.retain(|e| !(e.path == section || e.path.starts_with(&format!("{section}."))));
            errors.push(mode_problem(pool, &error));
        }
    }
    errors.sort_by_key(|error| provisioner_core::config::pool_position(&error.path));
    errors
}

/// Whether `error` is at a field of `pool`.
fn is_of(pool: &PoolConfig, error: &FieldError) -> bool {
    let prefix = format!("pools[{}]", pool.index);
    error.path == prefix || error.path.starts_with(&format!("{prefix}."))
}

/// An engine that does not offer a pool's mode, as a problem at `provisioning.mode`.
fn mode_problem(pool: &PoolConfig, error: &Error) -> FieldError {
    let mut message = error.to_string();
    if let Some(hint) = error.hint() {
        message.push_str("; ");
        message.push_str(hint);
    }
    FieldError::new(pool.field("provisioning.mode"), message)
}

/// Picks the recipe for the pool's engine and checks that it offers the pool's mode.
pub fn select<'a>(recipes: &'a [Box<dyn Recipe>], pool: &PoolConfig) -> Result<&'a dyn Recipe> {
    let (engine, mode) = (pool.engine, pool.mode());
    let recipe = recipes
        .iter()
        .find(|r| r.engine() == engine)
        .ok_or_else(|| Error::UnsupportedMode {
            engine: engine.to_string(),
            mode: mode.to_string(),
            supported: Vec::new(),
            hint: Some("no recipe is registered for this engine".to_string()),
        })?;
    match recipe.offers(mode) {
        Ok(()) => Ok(recipe.as_ref()),
        Err(hint) => Err(Error::UnsupportedMode {
            engine: engine.to_string(),
            mode: mode.to_string(),
            supported: Mode::ALL
                .iter()
                .filter(|m| recipe.offers(**m).is_ok())
                .map(|m| m.to_string())
                .collect(),
            hint: Some(hint),
        }),
    }
}

#[async_trait]
impl EngineProvisioner for Provisioner {
    fn plan(&self, pool: &PoolConfig) -> Result<Plan> {
        let recipe = self.recipe_for(pool)?;
        let inputs = self.inputs(pool)?;
        self.plan_of(recipe, &inputs)
    }

    async fn prepare(&self, pool: &PoolConfig) -> Result<PreparedEngine> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "prepare",
            pool_id = %pool.id,
            engine = %pool.engine,
            mode = %pool.mode(),
        );
        async {
            let result = async {
                let recipe = self.recipe_for(pool)?;
                let inputs = self.inputs(pool)?;
                let digest = self.plan_of(recipe, &inputs)?.digest();
                let common = &inputs.common;
                let ports = &self.ports;
                match &inputs.mode {
                    ModeInputs::External(mode) => {
                        Ok(modes::external::prepare(common, mode, digest))
                    }
                    ModeInputs::Source(mode) => {
                        modes::source::prepare(recipe, common, mode, ports, digest).await
                    }
                    ModeInputs::Container(mode) => {
                        modes::container::prepare(recipe, common, mode, ports, digest).await
                    }
                    ModeInputs::Package(mode) => {
                        modes::package::prepare(recipe, common, mode, ports, digest).await
                    }
                    ModeInputs::Binary(mode) => {
                        modes::binary::prepare(recipe, common, mode, ports, digest).await
                    }
                }
            }
            .await;
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
