//! Hugging Face TGI's facts: container mode only.
//!
//! Upstream facts (text-generation-inference README): the launcher listens on 80 inside its
//! image, takes `--model-id` (a path inside the container works), and is run with
//! `--shm-size 1g`; `/health` answers once the model is loaded. The host gets 8080 by default,
//! because a host port below 1024 fails under rootless podman.
//!
//! Options (launcher/src/main.rs, clap): `-p` is `--port`, `-e` is `--env`; `Vec` options
//! (`--cors-allow-origin`, `--cuda-graphs`) accumulate; `bool` fields are switches; no
//! positional argument and no abbreviations. Every option can also come from a variable
//! (`#[clap(env)]`: `NUM_SHARD`, `REVISION`, …), which the command line overrides. The launcher
//! shards over `--num-shard` GPUs, else over every GPU it sees; `--max-input-tokens` (legacy
//! `--max-input-length`) must stay below `--max-total-tokens`.

use provisioner_core::{Engine, Error, FoundBackend, Mode, PoolConfig, Result};

use crate::args::{
    CONTAINER_PORT_IS_OWNED, Fetches, Fetching, HOST_IS_OWNED, MODEL_IS_STAGED, OptionTable, Owned,
    Problems, ServerArgs, count, parse_options, pool_setting, refuse_fetching, same_count,
    take_owned,
};
use crate::common::{
    ApiKeyFacts, ContainerFacts, EnvOption, Listen, Recipe, SharedMemory, backend_in_tag,
    check_pool_env, container_only, devices_text, even_split_only,
};

/// The TGI recipe.
pub struct Tgi;

/// `ghcr.io/huggingface/text-generation-inference:3.3.6`, the last 3.x release.
const CONTAINER: ContainerFacts = ContainerFacts {
    default_image: "ghcr.io/huggingface/text-generation-inference",
    default_tag: "3.3.6",
    ports: &[80],
    port_names: &["HTTP"],
    default_host_ports: &[8080],
    shared_memory: SharedMemory::Size("1g"),
    readiness_path: "/health",
    ready_timeout_seconds: 900,
    entrypoint_is_server: true,
};

const FIELD: &str = "provisioning.flags";

/// The launcher's options (see the module documentation).
const OPTIONS: OptionTable = OptionTable {
    aliases: &[
        ("-p", "--port"),
        ("-e", "--env"),
        ("--max-input-length", "--max-input-tokens"),
    ],
    repeatable: &["--cors-allow-origin", "--cuda-graphs"],
    switches: &[
        "--trust-remote-code",
        "--disable-custom-kernels",
        "--json-output",
        "--ngrok",
        "--disable-grammar-support",
        "--env",
        "--enable-prefill-logprobs",
        "--disable-usage-stats",
        "--disable-crash-reports",
    ],
    attached_short_values: true,
    ..OptionTable::EMPTY
};

const OWNED: &[Owned] = &[
    Owned {
        option: "--model-id",
        instead: MODEL_IS_STAGED,
    },
    Owned {
        option: "--hostname",
        instead: HOST_IS_OWNED,
    },
    Owned {
        option: "--port",
        instead: CONTAINER_PORT_IS_OWNED,
    },
    Owned {
        option: "--ngrok",
        instead: "it opens a public tunnel through ngrok's servers, outside the provisioner's policy and its loopback-only publishing; remove it",
    },
];

const FETCHING: &[Fetching] = &[
    Fetching {
        option: "--revision",
        what: "a revision of the model from the Hugging Face Hub",
        when: Fetches::Always,
    },
    Fetching {
        option: "--lora-adapters",
        what: "LoRA adapters from the Hugging Face Hub (give each as name=/absolute/path)",
        when: Fetches::UnlessPathItems,
    },
];

/// Variables the launcher reads as options that the flags would be refused for.
const ENV_OPTIONS: &[EnvOption] = &[
    EnvOption {
        variable: "REVISION",
        option: "--revision",
        reason: "a revision is downloaded from the Hugging Face Hub, behind the provisioner's policy; stage the model at that revision and point provisioning.model.ref at it",
    },
    EnvOption {
        variable: "LORA_ADAPTERS",
        option: "--lora-adapters",
        reason: "adapters named by Hub id are downloaded behind the provisioner's policy; give them in provisioning.flags as --lora-adapters name=/absolute/path",
    },
    EnvOption {
        variable: "NGROK",
        option: "--ngrok",
        reason: "it opens a public tunnel through ngrok's servers; remove it",
    },
    EnvOption {
        variable: "NUM_SHARD",
        option: "--num-shard",
        reason: "the provisioner shards over the pool's devices; list them in devices (or give --num-shard in provisioning.flags)",
    },
    EnvOption {
        variable: "SHARDED",
        option: "--sharded",
        reason: "the provisioner shards over the pool's devices; list them in devices (or give --sharded in provisioning.flags)",
    },
];

/// The shard count the flags give, checked against the pool's devices (one shard per
/// device); without `--num-shard` a pool with several devices gets `--num-shard <n>`.
fn shards(pool: &PoolConfig, options: &mut ServerArgs) -> Result<()> {
    let flags = &pool.provisioning.flags;
    let at = |option: &str| {
        let index = ServerArgs::position_in(flags, &OPTIONS, option).unwrap_or(0);
        format!("{FIELD}[{index}]")
    };
    let devices = pool.devices.len();
    let num_shard = match options.get("--num-shard") {
        None => None,
        Some(value) => match value.as_deref().and_then(|v| v.parse::<usize>().ok()) {
            Some(n) if n > 0 => Some(n),
            _ => {
                return Err(Error::invalid(
                    at("--num-shard"),
                    "--num-shard takes a whole number of GPUs, at least 1",
                ));
            }
        },
    };
    let sharded = match options.get("--sharded") {
        None => None,
        Some(value) => match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => {
                return Err(Error::invalid(
                    at("--sharded"),
                    "--sharded takes true or false",
                ));
            }
        },
    };
    if devices == 0 {
        return Ok(());
    }
    if let Some(n) = num_shard
        && n != devices
    {
        return Err(Error::invalid(
            at("--num-shard"),
            format!(
                "--num-shard {n} does not fit the pool's {}: TGI runs one shard per GPU on exactly the pool's devices; give --num-shard {devices}, or list {n} devices",
                devices_text(pool)
            ),
        ));
    }
    match sharded {
        Some(false) if devices > 1 => {
            return Err(Error::invalid(
                at("--sharded"),
                format!(
                    "--sharded false would leave all but one of the pool's {} idle; remove it, or list one device",
                    devices_text(pool)
                ),
            ));
        }
        Some(true) if devices == 1 => {
            return Err(Error::invalid(
                at("--sharded"),
                format!(
                    "--sharded true needs several GPUs, but the pool has {}; remove it, or list more devices",
                    devices_text(pool)
                ),
            ));
        }
        _ => {}
    }
    if num_shard.is_none() && devices > 1 {
        options.set("--num-shard", Some(devices.to_string()));
    }
    Ok(())
}

/// `ctx` as `--max-total-tokens`, and `--max-input-tokens` one below it unless the flags give
/// a smaller one.
fn context(pool: &PoolConfig, options: &mut ServerArgs) -> Result<()> {
    let Some(ctx) = pool.ctx else {
        return Ok(());
    };
    let flags = &pool.provisioning.flags;
    pool_setting(
        options,
        flags,
        &OPTIONS,
        FIELD,
        "ctx",
        "--max-total-tokens",
        &ctx.to_string(),
        same_count,
    )?;
    match options.get("--max-input-tokens") {
        None if ctx > 1 => options.set("--max-input-tokens", Some((ctx - 1).to_string())),
        None => {}
        Some(given) => {
            let fits = given
                .as_deref()
                .and_then(count)
                .is_some_and(|n| n < u64::from(ctx));
            if !fits {
                let index =
                    ServerArgs::position_in(flags, &OPTIONS, "--max-input-tokens").unwrap_or(0);
                return Err(Error::invalid(
                    format!("{FIELD}[{index}]"),
                    format!(
                        "--max-input-tokens {} does not fit the pool's ctx: {ctx} (TGI needs it below the total, {ctx}); give at most {} or leave it out",
                        given.as_deref().unwrap_or("(no value)"),
                        ctx.saturating_sub(1)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// TGI's API key (launcher/src/main.rs: `--api-key`, read from `API_KEY` too); no key-file
/// option, so a key given in the flags travels in the container's private env file.
const API_KEY: ApiKeyFacts = ApiKeyFacts {
    option: "--api-key",
    file_option: None,
    variable: "API_KEY",
    comma_separated: false,
};

impl Recipe for Tgi {
    fn engine(&self) -> Engine {
        Engine::Tgi
    }

    fn offers(&self, mode: Mode) -> std::result::Result<(), String> {
        container_only(Engine::Tgi, mode)
    }

    /// The flags parsed with the launcher's table; the model, address and port (and ngrok)
    /// refused; a Hub revision and adapters by Hub id refused; `ctx` as `--max-total-tokens`
    /// (and `--max-input-tokens` below it); one shard per device; `tensor_split` only as an
    /// even split.
    fn options(&self, pool: &PoolConfig) -> Result<ServerArgs> {
        let mut problems = Problems::default();
        problems.gather(check_pool_env(pool, ENV_OPTIONS))?;
        let flags = &pool.provisioning.flags;
        let mut options = parse_options(flags, &OPTIONS, FIELD)?;
        problems.gather(take_owned(
            &mut options,
            flags,
            &OPTIONS,
            FIELD,
            OWNED,
            &[
                ("--port", CONTAINER.ports[0].to_string()),
                ("--hostname", "0.0.0.0".to_string()),
            ],
        ))?;
        problems.gather(refuse_fetching(&options, flags, &OPTIONS, FIELD, FETCHING))?;
        problems.gather(context(pool, &mut options))?;
        problems.gather(even_split_only(pool, Engine::Tgi.label()))?;
        problems.gather(shards(pool, &mut options))?;
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
            "--model-id".to_string(),
            listen.model.to_string(),
            "--hostname".to_string(),
            listen.host.to_string(),
            "--port".to_string(),
            listen.ports.first().copied().unwrap_or(80).to_string(),
        ];
        args.extend(options.to_argv());
        args
    }

    fn container(&self) -> &ContainerFacts {
        &CONTAINER
    }

    /// The TGI launcher's options that name host paths (`text-generation-launcher --help`):
    /// `--lora-adapters` lists adapter ids or `NAME=PATH` items.
    fn path_options(&self) -> &'static [crate::host_files::PathOption] {
        use crate::host_files::{PathOption, PathValue};
        use provisioner_core::HostInputKind::Either;
        const PATHS: &[PathOption] = &[
            PathOption::file(&["--tokenizer-config-path"]),
            PathOption::read(&["--lora-adapters"], PathValue::NamedList, Either),
            PathOption::directory(&["--weights-cache-override"]),
            PathOption::output(&["--huggingface-hub-cache"]),
        ];
        PATHS
    }

    fn api_key(&self) -> Option<&ApiKeyFacts> {
        Some(&API_KEY)
    }

    /// TGI's images are CUDA builds unless the tag names another backend (`3.3.6-rocm`, `…-intel-xpu`).
    fn image_backend(&self, tag: Option<&str>) -> Option<FoundBackend> {
        Some(tag.and_then(backend_in_tag).unwrap_or(FoundBackend::Cuda))
    }
}
