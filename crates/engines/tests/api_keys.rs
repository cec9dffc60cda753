//! Secrets an engine needs never reach its command line, a plan or a prepared engine: llama.cpp's
//! `--api-key` becomes a key file of mode 0600 named with `--api-key-file` (a container gets it in
//! its env file), the probes learn where the key is (a path, never the key), and `env` values
//! named by reference (`from_env`, `from_file`) are read only when the env file is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use engines::Provisioner;
use provisioner_core::{
    Config, EngineProvisioner, EnvValue, Error, Format, Layout, MockModelProvisioner,
    MockSourceBuilder, ModelArtifact, NoProgress, NothingKnown, PoolConfig, PoolId, Ports,
    ProbeAuth, Result, RunFiles, Secret, SourceArtifact, Step,
};

const KEY_A: &str = "sk-Planted-Key-A-3e1f";
const KEY_B: &str = "sk-Planted-Key-B-77c0";
const FROM_ENV: &str = "hf_Planted-From-Env-5b2a";

/// Private run files under `/run/llama-orch`, kept in memory; references resolve from a map
/// standing for this process's environment and files.
#[derive(Default)]
struct MemoryRunFiles {
    written: Mutex<Vec<(PathBuf, String)>>,
    sources: BTreeMap<String, String>,
}

#[async_trait]
impl RunFiles for MemoryRunFiles {
    fn path(&self, pool: &PoolId, name: &str) -> PathBuf {
        Path::new("/run/llama-orch").join(pool.as_str()).join(name)
    }

    async fn write_private(&self, pool: &PoolId, name: &str, contents: &Secret) -> Result<PathBuf> {
        let path = self.path(pool, name);
        self.written
            .lock()
            .unwrap()
            .push((path.clone(), contents.expose().to_string()));
        Ok(path)
    }

    async fn resolve(&self, value: &EnvValue) -> std::result::Result<Secret, String> {
        let key = match value {
            EnvValue::Plain(secret) => return Ok(secret.clone()),
            EnvValue::FromEnv(name) => name.to_string(),
            EnvValue::FromFile(path) => path.display().to_string(),
        };
        self.sources
            .get(&key)
            .map(Secret::new)
            .ok_or_else(|| format!("{} is missing", value.describe()))
    }
}

fn pool(yaml: &str) -> PoolConfig {
    Config::parse(yaml, Format::Yaml, "keys.yaml")
        .unwrap()
        .pools[0]
        .clone()
}

fn source_pool(extra: &str) -> PoolConfig {
    pool(&format!(
        r#"
pools:
  - id: p
    engine: llamacpp
    provisioning:
      source: {{ repo: "file:///srv/llama.cpp", ref: fixture-b0 }}
      model: {{ ref: "file:/models/tiny.gguf" }}
{extra}"#
    ))
}

fn provisioner(files: Arc<MemoryRunFiles>) -> Provisioner {
    let mut models = MockModelProvisioner::new();
    models
        .expect_ensure_present()
        .returning(|_| Ok(ModelArtifact::local(PathBuf::from("/models/tiny.gguf"), 1)));
    let mut builder = MockSourceBuilder::new();
    builder.expect_ensure_built().returning(|_| {
        Ok(SourceArtifact {
            dir: PathBuf::from("/cache/llamacpp/builds-v1/k1"),
            commit: "f3e37ccca624c32180c329208deac452eef38ba5".to_string(),
            key: "k1".to_string(),
            flags: vec!["-DGGML_NATIVE=OFF".to_string()],
            toolchain: Default::default(),
            cache_hit: true,
            metadata_file: PathBuf::from("/cache/llamacpp/builds-v1/k1/metadata.json"),
            engine_version: "llamacpp-f3e37ccca624-cpu-00000000".to_string(),
            supported_flags: Vec::new(),
        })
    });
    let ports = Ports {
        models: Arc::new(models),
        source_builder: Some(Arc::new(builder)),
        binaries: None,
        packages: None,
        containers: None,
        run_files: files,
        known: Arc::new(NothingKnown),
        progress: Arc::new(NoProgress),
    };
    Provisioner::new(ports, Layout::under_home(Path::new("/home/user")))
}

/// Every form a plan and a prepared engine are shown in: JSON, Debug and the plan's sentences.
fn shown(
    plan: &provisioner_core::Plan,
    prepared: Option<&provisioner_core::PreparedEngine>,
) -> String {
    let mut text = serde_json::to_string(plan).unwrap();
    text.push_str(&format!("{plan:?}"));
    for step in &plan.steps {
        text.push_str(&step.to_string());
    }
    if let Some(prepared) = prepared {
        text.push_str(&serde_json::to_string(prepared).unwrap());
        text.push_str(&format!("{prepared:?}"));
    }
    text
}

fn launch_args(plan: &provisioner_core::Plan) -> (Vec<String>, provisioner_core::Probe) {
    plan.steps
        .iter()
        .find_map(|step| match step {
            Step::Launch {
                args, readiness, ..
            } => Some((args.clone(), readiness.clone())),
            _ => None,
        })
        .expect("a launch step")
}

#[tokio::test]
async fn api_keys_in_flags_go_to_a_private_key_file_named_on_the_command_line() {
    let pool = source_pool(&format!(
        "      flags: [--api-key, {KEY_A}, --metrics, \"--api-key={KEY_B},\"]\n"
    ));
    let files = Arc::new(MemoryRunFiles::default());
    let provisioner = provisioner(files.clone());
    let plan = provisioner.plan(&pool).unwrap();
    let key_file = PathBuf::from("/run/llama-orch/p/api-key");
    let (args, readiness) = launch_args(&plan);
    assert!(
        args.ends_with(&[
            "--metrics".to_string(),
            "--api-key-file".to_string(),
            key_file.display().to_string()
        ]),
        "{args:?}"
    );
    assert!(
        !args
            .iter()
            .any(|arg| arg.starts_with("--api-key=") || arg == "--api-key")
    );
    assert_eq!(
        readiness.auth,
        Some(ProbeAuth::KeyFile {
            path: key_file.clone()
        })
    );
    assert!(plan.steps.iter().any(|step| matches!(
        step,
        Step::WriteKeyFile { path, option, .. } if *path == key_file && option == "--api-key"
    )));

    let prepared = provisioner.prepare(&pool).await.unwrap();
    assert_eq!(
        files.written.lock().unwrap().clone(),
        vec![(key_file.clone(), format!("{KEY_A}\n{KEY_B}\n"))]
    );
    assert_eq!(prepared.args, args);
    assert_eq!(
        prepared.metadata.readiness.auth,
        Some(ProbeAuth::KeyFile { path: key_file })
    );
    assert_eq!(prepared.env_file, None);
    let text = shown(&plan, Some(&prepared));
    for key in [KEY_A, KEY_B] {
        assert!(!text.contains(key), "{text}");
    }
}

#[test]
fn a_container_gets_the_keys_through_its_env_file() {
    let pool = pool(&format!(
        r#"
pools:
  - id: c
    engine: llamacpp
    provisioning:
      mode: container
      container: {{ image: ghcr.io/ggml-org/llama.cpp, tag: server-b6000 }}
      model: {{ ref: "file:/models/tiny.gguf" }}
      env: {{ HF_TOKEN: x }}
      flags: [--api-key, "{KEY_A},{KEY_B}"]
"#
    ));
    let plan = provisioner(Arc::default()).plan(&pool).unwrap();
    let env_file = PathBuf::from("/run/llama-orch/c/env");
    assert!(plan.steps.iter().any(|step| matches!(
        step,
        Step::WriteEnvFile { path, variables } if *path == env_file && variables == &["HF_TOKEN", "LLAMA_API_KEY"]
    )));
    assert!(
        !plan
            .steps
            .iter()
            .any(|step| matches!(step, Step::WriteKeyFile { .. }))
    );
    let (args, readiness) = launch_args(&plan);
    assert!(
        args.windows(2)
            .any(|pair| pair == ["--env-file", env_file.to_str().unwrap()]),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|arg| arg.contains("--api-key")),
        "{args:?}"
    );
    assert_eq!(
        readiness.auth,
        Some(ProbeAuth::EnvFile {
            path: env_file,
            variable: "LLAMA_API_KEY".to_string(),
            comma_separated: true,
        })
    );
    let text = shown(&plan, None);
    for key in [KEY_A, KEY_B] {
        assert!(!text.contains(key), "{text}");
    }
}

/// The same for every engine that takes an API key: vLLM and TGI read theirs from one
/// variable, so a key given in the flags reaches the container through its env file, and a
/// second key (which that variable cannot hold) is refused without being quoted.
#[test]
fn vllm_and_tgi_keys_travel_in_the_env_file_too() {
    for (engine, variable) in [("vllm", "VLLM_API_KEY"), ("tgi", "API_KEY")] {
        let pool = pool(&format!(
            r#"
pools:
  - id: {engine}
    engine: {engine}
    provisioning:
      mode: container
      container: {{ image: "127.0.0.1:5000/x/{engine}", tag: "1.0" }}
      model: {{ ref: "file:/models/m" }}
      flags: [--api-key, "{KEY_A}"]
"#
        ));
        let plan = provisioner(Arc::default()).plan(&pool).unwrap();
        let env_file = PathBuf::from(format!("/run/llama-orch/{engine}/env"));
        assert!(
            plan.steps.iter().any(|step| matches!(
                step,
                Step::WriteEnvFile { path, variables } if *path == env_file && variables == &[variable]
            )),
            "{engine}"
        );
        let (args, readiness) = launch_args(&plan);
        assert!(
            !args.iter().any(|arg| arg.contains("--api-key")),
            "{args:?}"
        );
        assert_eq!(
            readiness.auth,
            Some(ProbeAuth::EnvFile {
                path: env_file,
                variable: variable.to_string(),
                comma_separated: false,
            })
        );
        assert!(!shown(&plan, None).contains(KEY_A), "{engine}");

        let mut two = pool.clone();
        two.provisioning.flags = vec![
            "--api-key".to_string(),
            KEY_A.to_string(),
            "--api-key".to_string(),
            KEY_B.to_string(),
        ];
        let error = provisioner(Arc::default())
            .plan(&two)
            .unwrap_err()
            .to_string();
        // vLLM keeps the last `--api-key` only, TGI's variable holds one key: refused either way.
        assert!(
            error.contains("which holds one") || error.contains("takes one value"),
            "{engine}: {error}"
        );
        assert!(!error.contains(KEY_A) && !error.contains(KEY_B), "{error}");
    }
}

#[tokio::test]
async fn env_references_are_read_at_prepare_and_probes_use_the_engines_variable() {
    let pool = source_pool(
        "      env: { LLAMA_API_KEY: { from_env: ORCH_LLAMA_KEY }, HF_TOKEN: { from_file: /run/secrets/hf }, N: 4 }\n",
    );
    let files = Arc::new(MemoryRunFiles {
        sources: BTreeMap::from([
            ("ORCH_LLAMA_KEY".to_string(), KEY_A.to_string()),
            ("/run/secrets/hf".to_string(), FROM_ENV.to_string()),
        ]),
        ..Default::default()
    });
    let provisioner = provisioner(files.clone());
    let plan = provisioner.plan(&pool).unwrap();
    let env_file = PathBuf::from("/run/llama-orch/p/env");
    let (args, readiness) = launch_args(&plan);
    assert!(
        !args.iter().any(|arg| arg.contains("--api-key")),
        "{args:?}"
    );
    let auth = Some(ProbeAuth::EnvFile {
        path: env_file.clone(),
        variable: "LLAMA_API_KEY".to_string(),
        comma_separated: true,
    });
    assert_eq!(readiness.auth, auth);
    let prepared = provisioner.prepare(&pool).await.unwrap();
    assert_eq!(
        files.written.lock().unwrap().clone(),
        vec![(
            env_file.clone(),
            format!("HF_TOKEN={FROM_ENV}\nLLAMA_API_KEY={KEY_A}\nN=4\n")
        )]
    );
    assert_eq!(prepared.env_file, Some(env_file));
    assert_eq!(prepared.metadata.readiness.auth, auth);
    let text = shown(&plan, Some(&prepared));
    for secret in [KEY_A, FROM_ENV] {
        assert!(!text.contains(secret), "{text}");
    }
}

#[tokio::test]
async fn a_reference_that_cannot_be_read_names_the_pool_key() {
    let pool = source_pool("      env: { HF_TOKEN: { from_env: ORCH_MISSING } }\n");
    let missing = provisioner(Arc::default());
    missing.plan(&pool).expect("a plan reads no secret");
    let error = missing.prepare(&pool).await.unwrap_err();
    assert!(matches!(error, Error::ConfigInvalid { .. }), "{error:?}");
    assert_eq!(
        error.to_string().lines().last().unwrap().trim(),
        "- pools[0].provisioning.env.HF_TOKEN: from_env: ORCH_MISSING is missing"
    );

    // It fails before the model is staged or anything is built (a cold build takes minutes).
    let mut models = MockModelProvisioner::new();
    models.expect_ensure_present().never();
    let mut builder = MockSourceBuilder::new();
    builder.expect_ensure_built().never();
    let early = Provisioner::new(
        Ports {
            models: Arc::new(models),
            source_builder: Some(Arc::new(builder)),
            binaries: None,
            packages: None,
            containers: None,
            run_files: Arc::<MemoryRunFiles>::default(),
            known: Arc::new(NothingKnown),
            progress: Arc::new(NoProgress),
        },
        Layout::under_home(Path::new("/home/user")),
    );
    let error = early.prepare(&pool).await.unwrap_err();
    assert!(error.to_string().contains("ORCH_MISSING"), "{error}");

    // A value read from elsewhere that an env file cannot carry is refused without showing it.
    let pool = source_pool("      env: { HF_TOKEN: { from_file: /run/secrets/two-lines } }\n");
    let files = Arc::new(MemoryRunFiles {
        sources: BTreeMap::from([(
            "/run/secrets/two-lines".to_string(),
            format!("{FROM_ENV}\nmore"),
        )]),
        ..Default::default()
    });
    let error = provisioner(files.clone()).prepare(&pool).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("pools[0].provisioning.env.HF_TOKEN: the value (from_file: /run/secrets/two-lines) holds a line break"),
        "{message}"
    );
    assert!(!message.contains(FROM_ENV), "{message}");
    assert!(files.written.lock().unwrap().is_empty());
}

#[test]
fn the_key_is_given_in_one_place() {
    let provisioner = provisioner(Arc::default());
    let both = source_pool(&format!(
        "      env: {{ LLAMA_API_KEY: x }}\n      flags: [--metrics, --api-key, {KEY_A}]\n"
    ));
    let error = provisioner.check(&Config {
        pools: vec![both],
        catalog: None,
    });
    let message = error.unwrap_err().to_string();
    assert!(
        message.contains("pools[0].provisioning.flags[1]: --api-key and provisioning.env.LLAMA_API_KEY both give the API key"),
        "{message}"
    );
    assert!(!message.contains(KEY_A), "{message}");

    let comment = source_pool("      flags: [--api-key, \"#not-a-key\"]\n");
    let message = provisioner.plan(&comment).unwrap_err().to_string();
    assert!(message.contains("starts with `#`"), "{message}");
    assert!(!message.contains("not-a-key"), "{message}");

    let empty = source_pool("      flags: [--api-key, \",\"]\n");
    let message = provisioner.plan(&empty).unwrap_err().to_string();
    assert!(message.contains("--api-key gives no key"), "{message}");
}
