//! Container mode's rendered run: it never pulls, and host paths named in engine flags are
//! mounted read-only under `/inputs/` (and checked by the runtime adapter) or refused, for every
//! engine.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use engines::Provisioner;
use provisioner_core::{
    BackendFinding, Config, Engine, EngineProvisioner, Error, Format, HostInputKind, ImageArtifact,
    ImageSpec, Layout, MockContainerRuntime, MockModelProvisioner, ModelArtifact, NoProgress,
    NothingKnown, PoolConfig, PoolId, Ports, Result, RunFiles, RuntimeKind, Secret, Step,
};

fn layout() -> Layout {
    Layout::under_home(Path::new("/home/user"))
}

struct NoFiles;

#[async_trait]
impl RunFiles for NoFiles {
    fn path(&self, pool: &PoolId, name: &str) -> PathBuf {
        Path::new("/home/user/.cache/llama-orch/run")
            .join(pool.as_str())
            .join(name)
    }

    async fn write_private(&self, pool: &PoolId, name: &str, _: &Secret) -> Result<PathBuf> {
        Ok(self.path(pool, name))
    }
}

fn ports(containers: Option<MockContainerRuntime>) -> Ports {
    let mut models = MockModelProvisioner::new();
    models
        .expect_ensure_present()
        .returning(|_| Ok(ModelArtifact::local(PathBuf::from("/srv/models/m.gguf"), 1)));
    Ports {
        models: Arc::new(models),
        source_builder: None,
        binaries: None,
        packages: None,
        containers: containers.map(|c| Arc::new(c) as _),
        run_files: Arc::new(NoFiles),
        known: Arc::new(NothingKnown),
        progress: Arc::new(NoProgress),
    }
}

fn pool(engine: Engine, runtime: &str, flags: &str) -> PoolConfig {
    let text = format!(
        r#"
pools:
  - id: p-{engine}
    engine: {engine}
    provisioning:
      mode: container
      container: {{ image: registry.example/{engine}, tag: "1.0", runtime: {runtime} }}
      model: {{ ref: "file:/srv/models/m.gguf" }}
      flags: {flags}
"#
    );
    Config::parse(&text, Format::Yaml, "c.yaml")
        .unwrap_or_else(|e| panic!("{e}"))
        .pools[0]
        .clone()
}

fn launch_args(pool: &PoolConfig) -> Result<(Vec<String>, Vec<String>)> {
    let plan = Provisioner::new(ports(None), layout()).plan(pool)?;
    let args = plan
        .steps
        .iter()
        .find_map(|step| match step {
            Step::Launch { args, .. } => Some(args.clone()),
            _ => None,
        })
        .expect("a launch step");
    Ok((args, plan.notes.clone()))
}

/// The value following `option` in `args`.
fn after<'a>(args: &'a [String], option: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == option)
        .map(|w| w[1].as_str())
        .collect()
}

#[test]
fn the_prepared_run_never_pulls_with_podman_or_docker() {
    for runtime in ["podman", "docker"] {
        let (args, _) = launch_args(&pool(Engine::Llamacpp, runtime, "[]")).unwrap();
        assert_eq!(
            &args[..4],
            ["run", "--rm", "--pull=never", "--init"],
            "{args:?}"
        );
    }
}

/// One host-path flag per engine, each written the way that engine is usually given it.
fn host_path_flags(engine: Engine) -> (&'static str, &'static str, &'static str) {
    match engine {
        Engine::Llamacpp => (
            r#"[--chat-template-file, /host/t/chatml.jinja, --lora, "/host/a.gguf,/host/t/chatml.jinja"]"#,
            "--chat-template-file",
            "/host/t/chatml.jinja",
        ),
        Engine::Vllm => (
            "[--chat-template, /host/t/chatml.jinja]",
            "--chat-template",
            "/host/t/chatml.jinja",
        ),
        Engine::Tgi => (
            "[--tokenizer-config-path, /host/t/chatml.jinja]",
            "--tokenizer-config-path",
            "/host/t/chatml.jinja",
        ),
        Engine::Triton => (
            "[--grpc-server-cert=/host/t/chatml.jinja]",
            "--grpc-server-cert",
            "/host/t/chatml.jinja",
        ),
    }
}

#[test]
fn host_paths_in_flags_are_mounted_read_only_under_inputs_for_every_engine() {
    for &engine in Engine::ALL {
        let (flags, option, path) = host_path_flags(engine);
        let (args, _) =
            launch_args(&pool(engine, "podman", flags)).unwrap_or_else(|e| panic!("{engine}: {e}"));
        let mounts = after(&args, "--mount");
        assert!(
            mounts.contains(
                &format!("type=bind,source={path},target=/inputs/1-chatml.jinja,readonly").as_str()
            ),
            "{engine}: {args:?}"
        );
        let text = args.join(" ");
        assert!(
            text.contains(&format!("{option} /inputs/1-chatml.jinja"))
                || text.contains(&format!("{option}=/inputs/1-chatml.jinja")),
            "{engine}: {text}"
        );
        assert!(
            !text.contains(&format!("{option} {path}")),
            "{engine}: {text}"
        );
        // The mounts come before the image; the rewritten flags after it.
        let image = args
            .iter()
            .position(|a| a.starts_with("registry.example/"))
            .unwrap();
        let last_mount = args.iter().rposition(|a| a == "--mount").unwrap();
        assert!(last_mount < image, "{engine}: {args:?}");
    }
    // llama.cpp's comma list: one mount per distinct file, the same file mounted once.
    let (flags, ..) = host_path_flags(Engine::Llamacpp);
    let (args, _) = launch_args(&pool(Engine::Llamacpp, "docker", flags)).unwrap();
    assert_eq!(after(&args, "--mount").len(), 3, "{args:?}");
    assert_eq!(
        after(&args, "--lora"),
        ["/inputs/2-a.gguf,/inputs/1-chatml.jinja"]
    );
}

#[test]
fn paths_the_engine_writes_are_refused_with_the_reason() {
    let cases = [
        (
            Engine::Llamacpp,
            "[--metrics, --slot-save-path, /host/slots]",
            2,
        ),
        (Engine::Vllm, "[--download-dir, /host/dl]", 1),
        (Engine::Tgi, "[--huggingface-hub-cache, /host/hub]", 1),
        (Engine::Triton, "[--log-file=/host/t.log]", 0),
    ];
    for (engine, flags, index) in cases {
        let error = launch_args(&pool(engine, "podman", flags)).unwrap_err();
        assert!(matches!(error, Error::ConfigInvalid { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.contains(&format!("provisioning.flags[{index}]")),
            "{engine}: {text}"
        );
        assert!(text.contains("writes there"), "{engine}: {text}");
    }
}

#[test]
fn relative_paths_and_inline_templates_pass_as_written() {
    let (args, notes) = launch_args(&pool(
        Engine::Vllm,
        "podman",
        r#"[--chat-template, examples/tool_chat_template_llama3.1_json.jinja]"#,
    ))
    .unwrap();
    assert_eq!(
        after(&args, "--chat-template"),
        ["examples/tool_chat_template_llama3.1_json.jinja"]
    );
    assert_eq!(after(&args, "--mount").len(), 1, "{args:?}");
    assert!(
        notes.iter().any(|n| n.contains("relative path")),
        "{notes:?}"
    );
    let (args, _) = launch_args(&pool(
        Engine::Vllm,
        "podman",
        r#"["--chat-template", "{% for m in messages %}{{ m.content }}{% endfor %}"]"#,
    ))
    .unwrap();
    assert_eq!(after(&args, "--mount").len(), 1, "{args:?}");
}

#[tokio::test]
async fn prepare_asks_the_runtime_adapter_to_check_each_host_path() {
    let seen: Arc<Mutex<Vec<ImageSpec>>> = Arc::default();
    let mut runtime = MockContainerRuntime::new();
    let record = seen.clone();
    runtime.expect_ensure_image().returning(move |spec| {
        record.lock().unwrap().push(spec.clone());
        Ok(ImageArtifact {
            runtime: RuntimeKind::Podman,
            program: PathBuf::from("/usr/bin/podman"),
            runtime_env: Default::default(),
            reference: format!("{}@sha256:{}", spec.image.name(), "1".repeat(64)),
            digest: format!("sha256:{}", "1".repeat(64)).parse().unwrap(),
            tag: spec.image.tag().cloned(),
            revision: None,
            version: None,
            backend: BackendFinding::unknown("not read"),
            cache_hit: true,
        })
    });
    let (flags, ..) = host_path_flags(Engine::Llamacpp);
    let pool = pool(Engine::Llamacpp, "podman", flags);
    let prepared = Provisioner::new(ports(Some(runtime)), layout())
        .prepare(&pool)
        .await
        .unwrap();
    let spec = seen.lock().unwrap()[0].clone();
    let checked: Vec<(&Path, HostInputKind, &str)> = spec
        .inputs
        .iter()
        .map(|i| (i.path.as_path(), i.kind, i.field.as_str()))
        .collect();
    assert_eq!(
        checked,
        [
            (
                Path::new("/host/t/chatml.jinja"),
                HostInputKind::File,
                "provisioning.flags[1]"
            ),
            (
                Path::new("/host/a.gguf"),
                HostInputKind::File,
                "provisioning.flags[3]"
            ),
        ]
    );
    assert!(
        prepared.args.contains(
            &"type=bind,source=/host/a.gguf,target=/inputs/2-a.gguf,readonly".to_string()
        ),
        "{:?}",
        prepared.args
    );
    assert!(prepared.args.contains(&"--pull=never".to_string()));
}

#[test]
fn a_localhost_image_plans_as_found_in_the_store_never_pulled() {
    let text = r#"
pools:
  - id: local
    engine: llamacpp
    provisioning:
      mode: container
      container: { image: localhost/llama/server, tag: b0 }
      model: { ref: "file:/srv/models/m.gguf" }
"#;
    let pool = Config::parse(text, Format::Yaml, "c.yaml").unwrap().pools[0].clone();
    let plan = Provisioner::new(ports(None), layout()).plan(&pool).unwrap();
    let sentence = plan
        .steps
        .iter()
        .find(|step| matches!(step, Step::PullImage { .. }))
        .unwrap()
        .to_string();
    assert_eq!(
        sentence,
        "Find localhost/llama/server:b0 (run by its image ID) in podman, else docker's own store: built or loaded on this host, never pulled."
    );
}
