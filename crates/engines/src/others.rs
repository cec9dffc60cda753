//! vLLM, TGI and Triton. Their default mode is container, which needs the container adapter;
//! until it exists these recipes offer no mode and say what to do instead.

use async_trait::async_trait;
use provisioner_core::{
    Engine, Error, Layout, Mode, Plan, PoolConfig, Ports, PreparedEngine, Result,
};

use crate::Recipe;

macro_rules! container_only_engine {
    ($name:ident, $engine:expr, $label:literal) => {
        #[doc = concat!("The ", $label, " recipe (container mode, not offered yet).")]
        pub struct $name;

        #[async_trait]
        impl Recipe for $name {
            fn engine(&self) -> Engine {
                $engine
            }

            fn modes(&self) -> &'static [Mode] {
                &[]
            }

            fn unsupported_hint(&self, mode: Mode) -> Option<String> {
                Some(container_hint($label, mode))
            }

            fn plan(&self, pool: &PoolConfig, _layout: &Layout) -> Result<Plan> {
                Err(unsupported(self, pool.provisioning.mode))
            }

            async fn prepare(
                &self,
                pool: &PoolConfig,
                _layout: &Layout,
                _ports: &Ports,
            ) -> Result<PreparedEngine> {
                Err(unsupported(self, pool.provisioning.mode))
            }
        }
    };
}

container_only_engine!(Vllm, Engine::Vllm, "vLLM");
container_only_engine!(Tgi, Engine::Tgi, "TGI");
container_only_engine!(Triton, Engine::Triton, "Triton");

fn container_hint(label: &str, mode: Mode) -> String {
    match mode {
        Mode::Container => format!(
            "{label} is provisioned as a container image; this version of engine-provisioner has no container runtime adapter yet"
        ),
        Mode::Binary => format!(
            "{label} publishes no standalone binary; its supported path is the container image"
        ),
        _ => format!("{label} is provisioned as a container image (mode: container)"),
    }
}

fn unsupported(recipe: &dyn Recipe, mode: Mode) -> Error {
    Error::UnsupportedMode {
        engine: recipe.engine().to_string(),
        mode: mode.to_string(),
        supported: recipe.modes().iter().map(|m| m.to_string()).collect(),
        hint: recipe.unsupported_hint(mode),
    }
}
