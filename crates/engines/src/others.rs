//! vLLM, TGI and Triton: container mode only (their upstream ships images, not standalone
//! binaries); the run command is rendered by [`crate::container`].

use async_trait::async_trait;
use provisioner_core::{Engine, Layout, Mode, Plan, PoolConfig, Ports, PreparedEngine, Result};

use crate::Recipe;

macro_rules! container_only_engine {
    ($name:ident, $engine:expr, $label:literal) => {
        #[doc = concat!("The ", $label, " recipe (container mode).")]
        pub struct $name;

        #[async_trait]
        impl Recipe for $name {
            fn engine(&self) -> Engine {
                $engine
            }

            fn modes(&self) -> &'static [Mode] {
                &[Mode::Container]
            }

            fn unsupported_hint(&self, mode: Mode) -> Option<String> {
                Some(container_hint($label, mode))
            }

            fn plan(&self, pool: &PoolConfig, layout: &Layout) -> Result<Plan> {
                crate::container::plan(pool, layout)
            }

            async fn prepare(
                &self,
                pool: &PoolConfig,
                layout: &Layout,
                ports: &Ports,
            ) -> Result<PreparedEngine> {
                crate::container::prepare(pool, layout, ports).await
            }
        }
    };
}

container_only_engine!(Vllm, Engine::Vllm, "vLLM");
container_only_engine!(Tgi, Engine::Tgi, "TGI");
container_only_engine!(Triton, Engine::Triton, "Triton");

fn container_hint(label: &str, mode: Mode) -> String {
    match mode {
        Mode::Binary => format!(
            "{label} publishes no standalone binary; use mode: container with its upstream image"
        ),
        _ => format!("{label} is provisioned as a container image: use mode: container"),
    }
}
