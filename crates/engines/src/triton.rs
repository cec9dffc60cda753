//! NVIDIA Triton (TensorRT-LLM backend) facts: container mode only.
//!
//! Upstream facts (Triton quickstart): `tritonserver --model-repository=<dir>` serves HTTP on
//! 8000, gRPC on 8001 and metrics on 8002; readiness is `/v2/health/ready`. The image's
//! entrypoint runs the command given after the image.
//!
//! Options (`tritonserver --help`, src/command_line_parser.cc): `getopt_long`, so `--name value`
//! and `--name=value`, unique prefixes of long names, no positional argument; every option but
//! `--disable-auto-complete-config` takes a value (booleans too: `--allow-http=false`).
//! `--model-store` is another name of `--model-repository`. Options that add to a list when
//! repeated: `--model-repository`, `--load-model`, `--backend-config`, `--host-policy`,
//! `--rate-limit-resource`, `--cuda-memory-pool-byte-size`, `--cuda-virtual-address-size`,
//! `--cache-config`, `--metrics-config`, `--trace-config`, `--trace-level`,
//! `--model-load-gpu-limit`, `--http-restricted-api`, `--grpc-restricted-protocol`;
//! `--model-control-mode` and the rest keep the last value.
//!
//! A TensorRT-LLM engine is compiled for a fixed context length and a fixed number of GPUs
//! (its world size) and runs one MPI rank per GPU (launched through `mpirun`), so `ctx` and
//! several `devices` are facts of the built engine, not options of this server.

use provisioner_core::{Engine, FieldError, FoundBackend, Mode, PoolConfig, Result};

use crate::args::{
    CONTAINER_PORT_IS_OWNED, HOST_IS_OWNED, OptionTable, Owned, Problems, ServerArgs,
    parse_options, take_owned,
};
use crate::common::{
    ContainerFacts, Listen, Recipe, SharedMemory, backend_in_tag, check_pool_env, container_only,
    devices_text,
};

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

const FIELD: &str = "provisioning.flags";

/// tritonserver's options (see the module documentation).
const OPTIONS: OptionTable = OptionTable {
    aliases: &[("--model-store", "--model-repository")],
    repeatable: &[
        "--load-model",
        "--backend-config",
        "--host-policy",
        "--rate-limit-resource",
        "--cuda-memory-pool-byte-size",
        "--cuda-virtual-address-size",
        "--cache-config",
        "--metrics-config",
        "--trace-config",
        "--trace-level",
        "--model-load-gpu-limit",
        "--http-restricted-api",
        "--grpc-restricted-protocol",
    ],
    switches: &["--disable-auto-complete-config"],
    abbreviations: true,
    others: &[
        "--help",
        "--log-verbose",
        "--log-info",
        "--log-warning",
        "--log-error",
        "--log-format",
        "--log-file",
        "--id",
        "--exit-on-error",
        "--strict-model-config",
        "--strict-readiness",
        "--http-header-forward-pattern",
        "--reuse-http-port",
        "--http-thread-count",
        "--allow-grpc",
        "--reuse-grpc-port",
        "--grpc-header-forward-pattern",
        "--grpc-infer-allocation-pool-size",
        "--grpc-use-ssl",
        "--grpc-use-ssl-mutual",
        "--grpc-server-cert",
        "--grpc-server-key",
        "--grpc-root-cert",
        "--grpc-infer-response-compression-level",
        "--allow-sagemaker",
        "--sagemaker-port",
        "--sagemaker-safe-port-range",
        "--sagemaker-thread-count",
        "--allow-vertex-ai",
        "--vertex-ai-port",
        "--vertex-ai-thread-count",
        "--vertex-ai-default-model",
        "--allow-metrics",
        "--allow-gpu-metrics",
        "--allow-cpu-metrics",
        "--metrics-interval-ms",
        "--trace-file",
        "--trace-rate",
        "--trace-count",
        "--trace-log-frequency",
        "--model-control-mode",
        "--repository-poll-secs",
        "--rate-limit",
        "--pinned-memory-pool-byte-size",
        "--response-cache-byte-size",
        "--cache-directory",
        "--min-supported-compute-capability",
        "--exit-timeout-secs",
        "--backend-directory",
        "--repoagent-directory",
        "--buffer-manager-thread-count",
        "--model-load-thread-count",
        "--model-load-retry-count",
        "--model-namespacing",
    ],
    ..OptionTable::EMPTY
};

const OWNED: &[Owned] = &[
    Owned {
        option: "--model-repository",
        instead: "the provisioner passes the model repository it staged (provisioning.model.ref, or the pool's `model`); remove it",
    },
    Owned {
        option: "--http-port",
        instead: CONTAINER_PORT_IS_OWNED,
    },
    Owned {
        option: "--grpc-port",
        instead: CONTAINER_PORT_IS_OWNED,
    },
    Owned {
        option: "--metrics-port",
        instead: CONTAINER_PORT_IS_OWNED,
    },
    Owned {
        option: "--http-address",
        instead: HOST_IS_OWNED,
    },
    Owned {
        option: "--grpc-address",
        instead: HOST_IS_OWNED,
    },
    Owned {
        option: "--metrics-address",
        instead: HOST_IS_OWNED,
    },
    Owned {
        option: "--allow-http",
        instead: "readiness is probed over HTTP (/v2/health/ready), which the server must serve; remove it",
    },
];

/// Why Triton takes none of the pool's fields that other engines map to options.
const ENGINE_IS_BUILT: &str = "a TensorRT-LLM engine is compiled for its context length and its number of GPUs (launched as one MPI rank per GPU), which Triton's command line cannot change";

impl Recipe for Triton {
    fn engine(&self) -> Engine {
        Engine::Triton
    }

    fn offers(&self, mode: Mode) -> std::result::Result<(), String> {
        container_only(Engine::Triton, mode)
    }

    /// The flags parsed with tritonserver's table; the model repository, ports, addresses
    /// and HTTP switch refused; `ctx`, `tensor_split` and more than one device refused with
    /// the reason (a later launcher may run multi-GPU engines through MPI).
    fn options(&self, pool: &PoolConfig) -> Result<ServerArgs> {
        let mut problems = Problems::default();
        problems.gather(check_pool_env(pool, &[]))?;
        if let Some(ctx) = pool.ctx {
            problems.push(FieldError::new(
                "ctx",
                format!(
                    "Triton takes no context length ({ctx}): {ENGINE_IS_BUILT}; build the engine with the length you want (trtllm-build --max_seq_len) and remove ctx"
                ),
            ));
        }
        if pool.tensor_split.is_some() {
            problems.push(FieldError::new(
                "tensor_split",
                format!("Triton takes no tensor split: {ENGINE_IS_BUILT}; remove tensor_split"),
            ));
        }
        if pool.devices.len() > 1 {
            problems.push(FieldError::new(
                "devices",
                format!(
                    "Triton runs here on one device, but the pool lists {}: {ENGINE_IS_BUILT}, and this recipe has no MPI launcher yet; list one device",
                    devices_text(pool)
                ),
            ));
        }
        let flags = &pool.provisioning.flags;
        let mut options = parse_options(flags, &OPTIONS, FIELD)?;
        let rendered: Vec<(&str, String)> = ["--http-port", "--grpc-port", "--metrics-port"]
            .into_iter()
            .zip(CONTAINER.ports)
            .map(|(option, port)| (option, port.to_string()))
            .chain([
                ("--http-address", "0.0.0.0".to_string()),
                ("--grpc-address", "0.0.0.0".to_string()),
                ("--metrics-address", "0.0.0.0".to_string()),
                ("--allow-http", "true".to_string()),
            ])
            .collect();
        problems.gather(take_owned(
            &mut options,
            flags,
            &OPTIONS,
            FIELD,
            OWNED,
            &rendered,
        ))?;
        problems.finish()?;
        Ok(options)
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

    /// tritonserver's options that name host paths (`tritonserver --help`).
    fn path_options(&self) -> &'static [crate::host_files::PathOption] {
        use crate::host_files::PathOption;
        const PATHS: &[PathOption] = &[
            PathOption::directory(&["--backend-directory"]),
            PathOption::directory(&["--repoagent-directory"]),
            PathOption::directory(&["--cache-directory"]),
            PathOption::file(&["--grpc-server-cert"]),
            PathOption::file(&["--grpc-server-key"]),
            PathOption::file(&["--grpc-root-cert"]),
            PathOption::output(&["--log-file"]),
            PathOption::output(&["--trace-file"]),
        ];
        PATHS
    }

    /// Triton's TensorRT-LLM images are CUDA builds.
    fn image_backend(&self, tag: Option<&str>) -> Option<FoundBackend> {
        Some(tag.and_then(backend_in_tag).unwrap_or(FoundBackend::Cuda))
    }
}
