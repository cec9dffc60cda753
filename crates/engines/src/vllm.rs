//! vLLM's facts: container mode only (upstream ships images, not standalone binaries).
//!
//! Upstream facts (docs.vllm.ai, deployment/docker): the OpenAI-compatible server listens on
//! 8000 and needs `--ipc=host` (or a large `--shm-size`) because PyTorch shares tensors through
//! shared memory; `/health` answers before the model is loaded, so readiness is `/v1/models`.
//!
//! The image's entrypoint was `python3 -m vllm.entrypoints.openai.api_server`, which takes the
//! model as `--model` only, up to v0.13; from v0.14.0 (January 2026) it is `vllm serve`, which
//! takes it as its first argument and warns that `--model` goes away (vllm-project/vllm issues
//! #32755 and #40872: `command:` lines that worked up to 0.13 broke with 0.14.0 because the
//! image already runs `vllm serve`; #37133 shows 0.17.1 refusing a second `serve`).
//!
//! Options (vllm/engine/arg_utils.py and vllm/entrypoints/openai/cli_args.py of the v0.11 and
//! v0.12 releases): argparse with `FlexibleArgumentParser`, which reads `_` as `-` in long
//! names and takes unique prefixes; `list` fields take several words (`nargs="+"`) and a
//! second occurrence replaces the first, except `--middleware` (`action="append"`); `bool`
//! fields are switches with a `--no-` form (`BooleanOptionalAction`).

use provisioner_core::config::ModelArg;
use provisioner_core::{Engine, Error, FoundBackend, Mode, PoolConfig, Result, TagOrDigest};

use crate::args::{
    CONTAINER_PORT_IS_OWNED, Fetches, Fetching, HOST_IS_OWNED, MODEL_IS_STAGED, OptionTable, Owned,
    Problems, ServerArgs, parse_options, pool_setting, refuse_fetching, same_count, take_owned,
};
use crate::common::{
    ApiKeyFacts, ContainerFacts, Listen, Recipe, SharedMemory, backend_in_tag, check_pool_env,
    container_only, devices_text, even_split_only,
};

/// The vLLM recipe.
pub struct Vllm;

/// `vllm/vllm-openai:v0.12.0` (December 2025).
const CONTAINER: ContainerFacts = ContainerFacts {
    default_image: "vllm/vllm-openai",
    default_tag: "v0.12.0",
    ports: &[8000],
    port_names: &["HTTP"],
    default_host_ports: &[8000],
    shared_memory: SharedMemory::HostIpc,
    readiness_path: "/v1/models",
    ready_timeout_seconds: 900,
    entrypoint_is_server: true,
};

/// The first release whose image starts `vllm serve` (model as the first argument).
pub const FIRST_SERVE_IMAGE: (u64, u64, u64) = (0, 14, 0);

const FIELD: &str = "provisioning.flags";

/// vLLM's options, from its argument definitions (see the module documentation).
const OPTIONS: OptionTable = OptionTable {
    aliases: &[
        ("-tp", "--tensor-parallel-size"),
        ("-pp", "--pipeline-parallel-size"),
        ("-dp", "--data-parallel-size"),
        ("-dcp", "--decode-context-parallel-size"),
        ("-dpn", "--data-parallel-rank"),
        ("-dpr", "--data-parallel-start-rank"),
        ("-dpl", "--data-parallel-size-local"),
        ("-dpa", "--data-parallel-address"),
        ("-dpp", "--data-parallel-rpc-port"),
        ("-dpb", "--data-parallel-backend"),
        ("-q", "--quantization"),
        ("-asc", "--api-server-count"),
    ],
    repeatable: &["--middleware"],
    switches: &[
        // EngineArgs' `bool` fields (BooleanOptionalAction or store_true).
        "--trust-remote-code",
        "--enforce-eager",
        "--disable-sliding-window",
        "--disable-cascade-attn",
        "--skip-tokenizer-init",
        "--enable-prompt-embeds",
        "--enable-sleep-mode",
        "--use-tqdm-on-load",
        "--data-parallel-hybrid-lb",
        "--enable-expert-parallel",
        "--enable-dbo",
        "--disable-nccl-for-dp-synchronization",
        "--enable-eplb",
        "--eplb-log-balancedness",
        "--ray-workers-use-nsight",
        "--disable-custom-all-reduce",
        "--enable-multimodal-encoder-data-parallel",
        "--enable-prefix-caching",
        "--calculate-kv-scales",
        "--kv-sharing-fast-prefill",
        "--enable-mm-embeds",
        "--disable-mm-preprocessor-cache",
        "--interleave-mm-strings",
        "--skip-mm-profiling",
        "--enable-lora",
        "--fully-sharded-loras",
        "--enable-chunked-prefill",
        "--disable-chunked-mm-input",
        "--disable-hybrid-kv-cache-manager",
        "--async-scheduling",
        "--disable-log-stats",
        "--aggregate-engine-logging",
        "--enable-log-requests",
        "--disable-log-requests",
        // The frontend's `bool` fields and `vllm serve`'s own switches.
        "--trust-request-chat-template",
        "--return-tokens-as-token-ids",
        "--enable-auto-tool-choice",
        "--exclude-tools-when-tool-choice-none",
        "--enable-prompt-tokens-details",
        "--enable-server-load-tracking",
        "--enable-force-include-usage",
        "--enable-tokenizer-info-endpoint",
        "--enable-log-outputs",
        "--log-error-stack",
        "--tokens-only",
        "--disable-uvicorn-access-log",
        "--allow-credentials",
        "--enable-ssl-refresh",
        "--enable-request-id-headers",
        "--disable-fastapi-docs",
        "--enable-offline-docs",
        "--disable-frontend-multiprocessing",
        "--headless",
    ],
    negated_switches: true,
    lists: &[
        "--served-model-name",
        "--allowed-media-domains",
        "--ignore-patterns",
        "--cuda-graph-sizes",
        "--cudagraph-capture-sizes",
        "--collect-detailed-traces",
        "--logits-processors",
        "--lora-modules",
        "--api-key",
    ],
    underscores: true,
    attached_short_values: false,
    abbreviations: true,
    // Options that share a prefix with an owned one (`--mod`, `--conf` are ambiguous).
    others: &[
        "--model-impl",
        "--model-loader-extra-config",
        "--config-format",
    ],
    positional: Some(
        "`vllm serve` takes it for the model, which the provisioner passes itself (provisioning.model.ref, or the pool's `model`); remove it",
    ),
};

/// Options whose values the recipe renders, or that would undo what it renders.
const OWNED: &[Owned] = &[
    Owned {
        option: "--model",
        instead: MODEL_IS_STAGED,
    },
    Owned {
        option: "--host",
        instead: HOST_IS_OWNED,
    },
    Owned {
        option: "--port",
        instead: CONTAINER_PORT_IS_OWNED,
    },
    Owned {
        option: "--uds",
        instead: "a Unix socket replaces the port that the provisioner publishes and probes for readiness; remove it",
    },
    Owned {
        option: "--config",
        instead: "vLLM would read options from that YAML file (the model, the port, parallelism), which the provisioner cannot check; write them in provisioning.flags",
    },
];

/// Options that make vLLM fetch something from the Hugging Face Hub itself.
const FETCHING: &[Fetching] = &[
    Fetching {
        option: "--tokenizer",
        what: "a tokenizer from the Hugging Face Hub",
        when: Fetches::UnlessPath,
    },
    Fetching {
        option: "--hf-config-path",
        what: "a model configuration from the Hugging Face Hub",
        when: Fetches::UnlessPath,
    },
    Fetching {
        option: "--revision",
        what: "a revision of the model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--code-revision",
        what: "model code from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--tokenizer-revision",
        what: "a revision of the tokenizer from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--hf-token",
        what: "gated files from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--speculative-config",
        what: "a draft model from the Hugging Face Hub",
        when: Fetches::UnlessPathInJson("model"),
    },
    Fetching {
        option: "--speculative-config.model",
        what: "a draft model from the Hugging Face Hub",
        when: Fetches::UnlessPath,
    },
    Fetching {
        option: "--speculative-model",
        what: "a draft model from the Hugging Face Hub",
        when: Fetches::UnlessPath,
    },
    Fetching {
        option: "--lora-modules",
        what: "LoRA adapters from the Hugging Face Hub",
        when: Fetches::UnlessPathModules,
    },
    Fetching {
        option: "--qlora-adapter-name-or-path",
        what: "a QLoRA adapter from the Hugging Face Hub",
        when: Fetches::UnlessPath,
    },
];

/// How the server takes its model: the pool's `container.model_arg`, else by the version in
/// the image tag against [`FIRST_SERVE_IMAGE`], positional when the pin names no version (a
/// digest, `latest`, `nightly`).
pub fn model_arg(pool: &PoolConfig) -> ModelArg {
    let container = pool.provisioning.container.clone().unwrap_or_default();
    if let Some(choice) = container.model_arg {
        return choice;
    }
    let tag = match (&container.image, &container.tag) {
        (None, _) => Some(CONTAINER.default_tag.to_string()),
        (Some(image), _) if image.tag().is_some() => image.tag().map(|t| t.as_str().to_string()),
        (Some(_), Some(TagOrDigest::Tag(tag))) => Some(tag.as_str().to_string()),
        (Some(_), _) => None,
    };
    match tag.as_deref().and_then(tag_version) {
        Some(version) if version < FIRST_SERVE_IMAGE => ModelArg::Flag,
        _ => ModelArg::Positional,
    }
}

/// The release an image tag names: `v0.12.0`, `0.9.2`, `v0.14.0rc1` and `v0.11.2-cu130` name
/// one; `latest`, `nightly-<commit>` and `gptoss` none.
pub fn tag_version(tag: &str) -> Option<(u64, u64, u64)> {
    let rest = tag.strip_prefix('v').unwrap_or(tag);
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let parts: Vec<u64> = rest[..end]
        .split('.')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [major, minor] => Some((*major, *minor, 0)),
        [major, minor, patch, ..] => Some((*major, *minor, *patch)),
        _ => None,
    }
}

/// The degrees of parallelism the flags give, checked against the pool's devices: tensor ×
/// pipeline × data parallel (the local share of it, when given) must be the number of
/// devices; without `--tensor-parallel-size` the tensor degree fills the devices.
fn parallelism(pool: &PoolConfig, options: &mut ServerArgs) -> Result<()> {
    let flags = &pool.provisioning.flags;
    let at = |option: &str| {
        let index = ServerArgs::position_in(flags, &OPTIONS, option).unwrap_or(0);
        format!("{FIELD}[{index}]")
    };
    let degree = |option: &str| -> Result<Option<u64>> {
        match options.get(option) {
            None => Ok(None),
            Some(value) => match value.as_deref().and_then(|v| v.parse::<u64>().ok()) {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => Err(Error::invalid(
                    at(option),
                    format!("{option} takes a whole number of GPUs, at least 1"),
                )),
            },
        }
    };
    let tensor = degree("--tensor-parallel-size")?;
    let pipeline = degree("--pipeline-parallel-size")?;
    let data = match degree("--data-parallel-size-local")? {
        Some(local) => Some(("--data-parallel-size-local", local)),
        None => degree("--data-parallel-size")?.map(|n| ("--data-parallel-size", n)),
    };
    let devices = pool.devices.len() as u64;
    if devices == 0 {
        return Ok(());
    }
    // The degrees come from the flags, so their product may not fit: a product that overflows
    // is larger than any pool (`None` below).
    let others = pipeline
        .unwrap_or(1)
        .checked_mul(data.map_or(1, |(_, n)| n));
    let explain = |tensor: u64| {
        format!(
            "tensor × pipeline × data parallel = {tensor} × {} × {} = {} GPUs, but the pool has {}; vLLM runs one worker per GPU on exactly the pool's devices: make the product {devices}, or list as many devices",
            pipeline.unwrap_or(1),
            data.map_or(1, |(_, n)| n),
            others
                .and_then(|others| tensor.checked_mul(others))
                .map_or_else(|| "more than 2^64".to_string(), |n| n.to_string()),
            devices_text(pool)
        )
    };
    let Some(others) = others else {
        let option = if pipeline.is_some() {
            "--pipeline-parallel-size"
        } else {
            data.map_or("--data-parallel-size", |(option, _)| option)
        };
        return Err(Error::invalid(
            at(option),
            format!(
                "pipeline × data parallel is more than 2^64, far more than the pool's {}; give degrees whose product is {devices}",
                devices_text(pool)
            ),
        ));
    };
    match tensor {
        Some(tensor) if tensor.checked_mul(others) != Some(devices) => Err(Error::invalid(
            at("--tensor-parallel-size"),
            explain(tensor),
        )),
        Some(_) => Ok(()),
        None if !devices.is_multiple_of(others) => {
            let option = if pipeline.is_some() {
                "--pipeline-parallel-size"
            } else {
                data.map_or("--data-parallel-size", |(option, _)| option)
            };
            Err(Error::invalid(
                at(option),
                format!(
                    "pipeline × data parallel = {others} does not divide the pool's {}, so no tensor-parallel size fills them; give --tensor-parallel-size so that the product is {devices}",
                    devices_text(pool)
                ),
            ))
        }
        None => {
            let tensor = devices / others;
            if tensor > 1 {
                options.set("--tensor-parallel-size", Some(tensor.to_string()));
            }
            Ok(())
        }
    }
}

/// vLLM's API key (vllm/entrypoints/openai/cli_args.py and vllm/envs.py): `--api-key` takes one
/// or more keys, `VLLM_API_KEY` one; there is no key-file option, so a key given in the flags
/// travels in the container's private env file.
const API_KEY: ApiKeyFacts = ApiKeyFacts {
    option: "--api-key",
    file_option: None,
    variable: "VLLM_API_KEY",
    comma_separated: false,
};

impl Recipe for Vllm {
    fn engine(&self) -> Engine {
        Engine::Vllm
    }

    fn offers(&self, mode: Mode) -> std::result::Result<(), String> {
        container_only(Engine::Vllm, mode)
    }

    /// The flags parsed with vLLM's own table; the model (also as a positional argument), the
    /// address and port, a Unix socket and an options file refused; options that download
    /// from the Hub refused unless they name a local path; `ctx` as `--max-model-len`; the
    /// parallelism checked against `devices` (tensor-parallel over every device by default);
    /// `tensor_split` only as an even split.
    fn options(&self, pool: &PoolConfig) -> Result<ServerArgs> {
        let mut problems = Problems::default();
        problems.gather(check_pool_env(pool, &[]))?;
        let flags = &pool.provisioning.flags;
        let mut options = parse_options(flags, &OPTIONS, FIELD)?;
        let port = CONTAINER.ports[0].to_string();
        problems.gather(take_owned(
            &mut options,
            flags,
            &OPTIONS,
            FIELD,
            OWNED,
            &[("--port", port), ("--host", "0.0.0.0".to_string())],
        ))?;
        problems.gather(refuse_fetching(&options, flags, &OPTIONS, FIELD, FETCHING))?;
        if let Some(ctx) = pool.ctx {
            problems.gather(pool_setting(
                &mut options,
                flags,
                &OPTIONS,
                FIELD,
                "ctx",
                "--max-model-len",
                &ctx.to_string(),
                same_count,
            ))?;
        }
        problems.gather(even_split_only(pool, Engine::Vllm.label()))?;
        problems.gather(parallelism(pool, &mut options))?;
        problems.finish()?;
        Ok(options)
    }

    fn server_args(
        &self,
        pool: &PoolConfig,
        options: &ServerArgs,
        listen: &Listen<'_>,
    ) -> Vec<String> {
        let mut args = match model_arg(pool) {
            ModelArg::Positional => vec![listen.model.to_string()],
            ModelArg::Flag => vec!["--model".to_string(), listen.model.to_string()],
        };
        args.extend([
            "--host".to_string(),
            listen.host.to_string(),
            "--port".to_string(),
            listen.ports.first().copied().unwrap_or(8000).to_string(),
        ]);
        args.extend(options.to_argv());
        args
    }

    fn container(&self) -> &ContainerFacts {
        &CONTAINER
    }

    /// vLLM's options that name host paths (`vllm serve --help`): a chat template is a path
    /// unless it holds `{`, `}` or a line break (vLLM's own rule); LoRA modules and tokenizers
    /// are directories in the Hugging Face layout.
    fn path_options(&self) -> &'static [crate::host_files::PathOption] {
        use crate::host_files::{PathOption, PathValue};
        use provisioner_core::HostInputKind::{Either, File};
        const PATHS: &[PathOption] = &[
            PathOption::read(&["--chat-template"], PathValue::PathOrInline, File),
            PathOption::either(&["--tokenizer"]),
            PathOption::either(&["--hf-config-path"]),
            PathOption::either(&["--generation-config"]),
            PathOption::read(&["--lora-modules"], PathValue::NamedWords, Either),
            PathOption::file(&["--ssl-keyfile"]),
            PathOption::file(&["--ssl-certfile"]),
            PathOption::file(&["--ssl-ca-certs"]),
            PathOption::file(&["--tool-parser-plugin"]),
            PathOption::file(&["--reasoning-parser-plugin"]),
            PathOption::directory(&["--allowed-local-media-path"]),
            PathOption::output(&["--download-dir"]),
        ];
        PATHS
    }

    fn api_key(&self) -> Option<&ApiKeyFacts> {
        Some(&API_KEY)
    }

    /// vLLM's images (vllm/vllm-openai) are CUDA builds; a tag naming another backend says so.
    fn image_backend(&self, tag: Option<&str>) -> Option<FoundBackend> {
        Some(tag.and_then(backend_in_tag).unwrap_or(FoundBackend::Cuda))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_in_image_tags() {
        assert_eq!(tag_version("v0.12.0"), Some((0, 12, 0)));
        assert_eq!(tag_version("0.9.2"), Some((0, 9, 2)));
        assert_eq!(tag_version("v0.14.0rc1"), Some((0, 14, 0)));
        assert_eq!(tag_version("v0.10.1.1"), Some((0, 10, 1)));
        assert_eq!(tag_version("v0.11.2-cu130"), Some((0, 11, 2)));
        assert_eq!(tag_version("1.0"), Some((1, 0, 0)));
        for none in ["latest", "nightly-0123abc", "gptoss", "v1", ""] {
            assert_eq!(tag_version(none), None, "{none}");
        }
    }
}
