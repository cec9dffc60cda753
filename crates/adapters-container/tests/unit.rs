//! Unit tests: reference parsing, credentials, nvidia-smi parsing, device checks and runtime
//! detection over `MockShell`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use adapters_container::{
    ContainerSettings, CredentialSources, Credentials, ImageRef, Origin, PodmanFiles,
    PodmanOrDocker, TempAuthFile, credentials_in, parse_nvidia_smi_list, unknown_devices,
};
use provisioner_core::{
    CommandOutput, CommandSpec, ContainerRuntime, Distro, Engine, Error, ImageSpec, MockShell,
    NoProgress, RuntimeKind, ToolInfo,
};

/// Real output of `nvidia-smi -L` on an H100 host (shared/fixtures/gpu-h100).
const H100_LIST: &str = include_str!("fixtures/nvidia-smi-L.txt");

/// `nvidia-smi -L` on a host with MIG enabled (format of driver 535+).
const MIG_LIST: &str =
    "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-44580e09-6ab3-f333-4b4a-a122d00bfb5a)
  MIG 1g.10gb     Device  0: (UUID: MIG-0f8a7b1e-1d9c-5c1e-9f4b-1234567890ab)
  MIG 3g.40gb     Device  1: (UUID: MIG-aa8a7b1e-1d9c-5c1e-9f4b-1234567890cd)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-55580e09-6ab3-f333-4b4a-a122d00bfb5b)
";

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

// ---------------------------------------------------------------------------------------------
// References

#[test]
fn the_registry_clients_view_of_a_parsed_reference() {
    let reference = |text: &str| {
        ImageRef::from_reference(&text.parse::<provisioner_core::ImageReference>().unwrap())
    };
    let r = reference("busybox:1.36");
    assert_eq!(r.registry, "docker.io");
    assert_eq!(r.repository, "library/busybox");
    assert_eq!(r.tag.as_deref(), Some("1.36"));
    assert_eq!(r.digest, None);

    let r = reference("127.0.0.1:5000/llama/server:v1.2");
    assert_eq!(r.registry, "127.0.0.1:5000");
    assert_eq!(r.repository, "llama/server");
    assert_eq!(r.tag_key().unwrap(), "127.0.0.1:5000/llama/server:v1.2");
    assert_eq!(
        r.pinned(DIGEST),
        format!("127.0.0.1:5000/llama/server@{DIGEST}")
    );

    let r = reference(&format!("ghcr.io/ggml-org/llama.cpp@{DIGEST}"));
    assert_eq!(r.registry, "ghcr.io");
    assert_eq!(r.digest.as_deref(), Some(DIGEST));
    assert_eq!(r.tag, None);
    assert_eq!(r.tag_key(), None);
}

// ---------------------------------------------------------------------------------------------
// Credentials

#[test]
fn auth_files_in_base64_and_username_password_forms() {
    // `alice:s3cret` in base64.
    let base64 = r#"{"auths":{"https://registry.example:5000/v1/":{"auth":"YWxpY2U6czNjcmV0"}}}"#;
    let found = credentials_in(base64, "registry.example:5000").unwrap();
    assert_eq!(found.username, "alice");
    assert_eq!(found.password(), "s3cret");
    assert!(credentials_in(base64, "other.example").is_none());

    let plain = r#"{"auths":{"127.0.0.1:5000":{"username":"bob","password":"pa:ss"}}}"#;
    let found = credentials_in(plain, "127.0.0.1:5000").unwrap();
    assert_eq!(
        (found.username.as_str(), found.password()),
        ("bob", "pa:ss")
    );

    // Docker Hub's key in docker's config.json.
    let hub = r#"{"auths":{"https://index.docker.io/v1/":{"auth":"YWxpY2U6czNjcmV0"}}}"#;
    assert_eq!(credentials_in(hub, "docker.io").unwrap().username, "alice");
}

#[test]
fn empty_entries_and_other_registries_hold_no_credentials() {
    let text = r#"{"auths":{"a.example":{},"b.example":{"auth":""},"c.example":{"auth":"bm9jb2xvbg=="}},"credsStore":"desktop"}"#;
    for registry in ["a.example", "b.example", "c.example", "d.example"] {
        assert!(credentials_in(text, registry).is_none(), "{registry}");
    }
    // Hosts compare case-insensitively; Docker Hub has three names.
    let text = r#"{"auths":{"Registry-1.Docker.IO":{"username":"u","password":"p"}}}"#;
    assert_eq!(credentials_in(text, "docker.io").unwrap().username, "u");
    assert_eq!(
        credentials_in(text, "index.docker.io").unwrap().username,
        "u"
    );
    assert!(credentials_in(text, "docker.example").is_none());
    assert!(credentials_in("not json", "docker.io").is_none());
}

#[tokio::test]
async fn lookup_takes_the_first_file_with_the_host_then_the_variables() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("auth.json");
    let second = dir.path().join("config.json");
    let broken = dir.path().join("broken.json");
    std::fs::write(&first, r#"{"auths":{"a.example":{"auth":"YTpi"}}}"#).unwrap();
    std::fs::write(&second, r#"{"auths":{"b.example":{"auth":"Yzpk"}}}"#).unwrap();
    std::fs::write(&broken, "{not json").unwrap();
    let files = vec![
        dir.path().join("missing.json"),
        broken,
        first,
        second.clone(),
    ];
    let env = Credentials::new("env-user", "env-pass");
    // No file names a credential helper: nothing may run.
    let mut shell = MockShell::new();
    shell.expect_run().never();
    let env_vars = BTreeMap::new();
    let sources = |fallback| CredentialSources {
        shell: &shell,
        auth_files: &files,
        env: &env_vars,
        fallback,
    };
    let found = sources(Some(&env)).lookup("b.example").await.unwrap();
    let found = found.found.unwrap();
    assert_eq!(found.credentials, Credentials::new("c", "d"));
    assert_eq!(
        found.origin,
        Origin::AuthFile {
            file: second,
            key: "b.example".into()
        }
    );
    let found = sources(Some(&env)).lookup("z.example").await.unwrap();
    let found = found.found.unwrap();
    assert_eq!(found.credentials, env);
    assert_eq!(found.origin, Origin::Environment);
    assert!(
        sources(None)
            .lookup("z.example")
            .await
            .unwrap()
            .found
            .is_none()
    );
}

#[test]
fn credentials_never_print_the_password() {
    let credentials = Credentials::new("alice", "hunter2-secret");
    let debug = format!("{credentials:?} {:#?}", Some(&credentials));
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("alice"), "{debug}");
}

#[test]
fn temporary_auth_files_are_private_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = Credentials::new("alice", "s3cret");
    let file = TempAuthFile::write(dir.path(), "127.0.0.1:5000", &credentials).unwrap();
    let path = file.file().to_path_buf();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(file.dir()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        credentials_in(&text, "127.0.0.1:5000").unwrap(),
        credentials
    );
    drop(file);
    assert!(!path.exists());
}

#[test]
fn settings_from_host_variables() {
    let vars: BTreeMap<String, String> = [
        ("PATH", "/usr/bin"),
        ("HOME", "/home/u"),
        ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ("REGISTRY_AUTH_FILE", "/etc/auth.json"),
        ("DOCKER_HOST", "unix:///x.sock"),
        ("LLAMA_ORCH_REGISTRY_USER", "u"),
        ("LLAMA_ORCH_REGISTRY_PASSWORD", "p"),
        ("UNRELATED", "x"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let settings = ContainerSettings::from_vars("/cache", &vars);
    assert_eq!(
        settings.auth_files,
        vec![
            PathBuf::from("/etc/auth.json"),
            PathBuf::from("/run/user/1000/containers/auth.json"),
            PathBuf::from("/home/u/.config/containers/auth.json"),
            PathBuf::from("/home/u/.docker/config.json"),
        ]
    );
    assert_eq!(
        settings.env.keys().collect::<Vec<_>>(),
        [
            "DOCKER_HOST",
            "HOME",
            "PATH",
            "REGISTRY_AUTH_FILE",
            "XDG_RUNTIME_DIR"
        ]
    );
    assert_eq!(settings.credentials, Some(Credentials::new("u", "p")));
    assert!(!format!("{settings:?}").contains("\"p\""));
}

// ---------------------------------------------------------------------------------------------
// nvidia-smi

#[test]
fn parses_the_real_h100_listing() {
    let gpus = parse_nvidia_smi_list(H100_LIST);
    assert_eq!(gpus.len(), 1);
    assert_eq!(gpus[0].index, 0);
    assert_eq!(gpus[0].name, "NVIDIA H100 80GB HBM3");
    assert_eq!(gpus[0].uuid, "GPU-44580e09-6ab3-f333-4b4a-a122d00bfb5a");
    assert!(gpus[0].migs.is_empty());
}

#[test]
fn parses_mig_devices_under_their_gpu() {
    let gpus = parse_nvidia_smi_list(MIG_LIST);
    assert_eq!(gpus.len(), 2);
    assert_eq!(gpus[0].migs.len(), 2);
    assert_eq!(gpus[0].migs[1].profile, "3g.40gb");
    assert_eq!(gpus[0].migs[1].device, 1);
    assert_eq!(
        gpus[0].migs[0].uuid,
        "MIG-0f8a7b1e-1d9c-5c1e-9f4b-1234567890ab"
    );
    assert!(gpus[1].migs.is_empty());
    assert_eq!(gpus[1].index, 1);
}

#[test]
fn devices_by_index_uuid_or_mig_uuid() {
    let gpus = parse_nvidia_smi_list(MIG_LIST);
    let ok: Vec<String> = [
        "0",
        "1",
        "GPU-55580e09-6ab3-f333-4b4a-a122d00bfb5b",
        "MIG-aa8a7b1e-1d9c-5c1e-9f4b-1234567890cd",
        "nvidia.com/gpu=0",
        "all",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert!(unknown_devices(&ok, &gpus).is_empty());
    let bad: Vec<String> = vec!["2".into(), "GPU-nope".into(), "0".into()];
    assert_eq!(unknown_devices(&bad, &gpus), ["2", "GPU-nope"]);
    assert_eq!(unknown_devices(&["all".to_string()], &[]), ["all"]);
}

// ---------------------------------------------------------------------------------------------
// The adapter over MockShell

fn tool(path: &str) -> ToolInfo {
    ToolInfo {
        path: PathBuf::from(path),
        fingerprint: "1:1".to_string(),
    }
}

fn ok(stdout: &str) -> CommandOutput {
    CommandOutput {
        code: Some(0),
        stdout: stdout.to_string(),
        ..CommandOutput::default()
    }
}

fn fail(tail: &str) -> CommandOutput {
    CommandOutput {
        code: Some(125),
        tail: tail.to_string(),
        ..CommandOutput::default()
    }
}

type Script = Arc<dyn Fn(&CommandSpec) -> CommandOutput + Send + Sync>;

/// A shell where `on_path` programs exist and `script` answers commands; commands are recorded.
fn shell(on_path: &[&str], script: Script) -> (MockShell, Arc<Mutex<Vec<CommandSpec>>>) {
    let on_path: Vec<String> = on_path.iter().map(|s| s.to_string()).collect();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut shell = MockShell::new();
    shell.expect_locate().returning(move |program| {
        on_path
            .contains(&program.to_string())
            .then(|| tool(&format!("/usr/bin/{program}")))
    });
    let record = seen.clone();
    shell.expect_run().returning(move |command| {
        record.lock().unwrap().push(command.clone());
        Ok(script(command))
    });
    (shell, seen)
}

fn adapter(shell: MockShell, settings: ContainerSettings) -> PodmanOrDocker {
    PodmanOrDocker::new(
        Arc::new(shell),
        Arc::new(policy::HostPolicy::default()),
        Arc::new(NoProgress),
        settings,
    )
}

/// Settings of a temporary host: podman's containers.conf is `<dir>/containers.conf` (absent
/// unless a test writes it), its helpers in `<dir>/helpers` (catatonit there), CNI plugins in
/// `<dir>/cni`.
fn settings(dir: &std::path::Path) -> ContainerSettings {
    let mut settings = ContainerSettings::from_vars(dir.join("cache"), &BTreeMap::new());
    settings.env.insert("PATH".into(), "/usr/bin".into());
    settings.cdi_dirs = vec![dir.join("cdi")];
    std::fs::create_dir_all(dir.join("helpers")).unwrap();
    std::fs::write(dir.join("helpers/catatonit"), "").unwrap();
    settings.podman_files = PodmanFiles {
        containers_conf: vec![dir.join("containers.conf")],
        helper_dirs: vec![dir.join("helpers")],
        cni_plugin_dirs: vec![dir.join("cni")],
    };
    settings.distro = Distro::Debian;
    settings
}

#[tokio::test]
async fn podman_missing_falls_back_to_docker() {
    let dir = tempfile::tempdir().unwrap();
    let (shell, seen) = shell(
        &["docker"],
        Arc::new(|c: &CommandSpec| {
            assert_eq!(c.program, "/usr/bin/docker");
            ok("{}")
        }),
    );
    let adapter = adapter(shell, settings(dir.path()));
    let (kind, program) = adapter.detect(None).await.unwrap();
    assert_eq!(kind, RuntimeKind::Docker);
    assert_eq!(program, PathBuf::from("/usr/bin/docker"));
    // Remembered: a second detection runs nothing.
    adapter.detect(None).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].args, ["info", "--format", "json"]);
    assert_eq!(
        seen[0].env.get("PATH").map(String::as_str),
        Some("/usr/bin")
    );
}

#[tokio::test]
async fn podman_preferred_when_both_work() {
    let dir = tempfile::tempdir().unwrap();
    let (shell, _) = shell(&["podman", "docker"], Arc::new(|_: &CommandSpec| ok("{}")));
    let adapter = adapter(shell, settings(dir.path()));
    assert_eq!(adapter.detect(None).await.unwrap().0, RuntimeKind::Podman);
}

#[tokio::test]
async fn no_runtime_is_a_missing_tool_with_the_podman_hint() {
    let dir = tempfile::tempdir().unwrap();
    let (shell, _) = shell(&[], Arc::new(|_: &CommandSpec| ok("")));
    let adapter = adapter(shell, settings(dir.path()));
    let error = adapter.detect(None).await.unwrap_err();
    match &error {
        Error::MissingTool { tool, purpose, .. } => {
            assert_eq!(tool, "podman or docker");
            assert_eq!(purpose, "run container images");
        }
        other => panic!("{other:?}"),
    }
    // `sudo` only when the tests do not run as root (a pasted sudo fails where it is absent).
    let sudo = provisioner_core::sudo_prefix(adapters_host::running_as_root());
    assert!(
        error.hint().unwrap().starts_with(&format!(
            "{sudo}apt-get install -y podman (Debian/Ubuntu) | {sudo}pacman"
        )),
        "{error:?}"
    );
    // Through the port as well.
    let spec = image_spec(Some("v1"), None, vec![]);
    let error = adapter.ensure_image(&spec).await.unwrap_err();
    assert!(matches!(error, Error::MissingTool { .. }), "{error:?}");
}

#[tokio::test]
async fn an_installed_runtime_whose_info_fails_shows_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let (shell, _) = shell(
        &["podman"],
        Arc::new(|_: &CommandSpec| fail("Error: cannot set up namespace: permission denied")),
    );
    let adapter = adapter(shell, settings(dir.path()));
    let error = adapter.detect(None).await.unwrap_err();
    assert!(matches!(error, Error::CommandFailed { .. }), "{error:?}");
    assert!(error.to_string().contains("permission denied"), "{error}");
}

#[tokio::test]
async fn a_forced_runtime_that_is_missing_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (shell, _) = shell(&["podman"], Arc::new(|_: &CommandSpec| ok("{}")));
    let adapter = adapter(shell, settings(dir.path()));
    let error = adapter.detect(Some(RuntimeKind::Docker)).await.unwrap_err();
    assert!(
        matches!(&error, Error::MissingTool { tool, .. } if tool == "docker"),
        "{error:?}"
    );
}

fn image_spec(tag: Option<&str>, digest: Option<&str>, devices: Vec<String>) -> ImageSpec {
    let image: provisioner_core::ImageReference = "127.0.0.1:1/llama/server".parse().unwrap();
    ImageSpec {
        engine: Engine::Vllm,
        image: image.with(
            tag.map(|t| t.parse().unwrap()),
            digest.map(|d| d.parse().unwrap()),
        ),
        insecure: true,
        runtime: None,
        inputs: Vec::new(),
        devices: devices
            .into_iter()
            .map(|d| match d.parse::<u32>() {
                Ok(index) => provisioner_core::DeviceId::Index(index),
                Err(_) => provisioner_core::DeviceId::Id(d),
            })
            .collect(),
    }
}

/// Podman has the pinned image; `nvidia-smi -L` answers `listing`.
fn present_with_gpus(listing: &'static str) -> Script {
    Arc::new(move |c: &CommandSpec| {
        if c.program.ends_with("nvidia-smi") {
            ok(listing)
        } else if c.args.first().map(String::as_str) == Some("info") {
            ok("{}")
        } else if c.args.first().map(String::as_str) == Some("image") {
            ok(&format!(
                r#"[{{"Digest":"{DIGEST}","Labels":{{"org.opencontainers.image.revision":"abc123"}}}}]"#
            ))
        } else {
            fail("unexpected")
        }
    })
}

#[tokio::test]
async fn warm_path_with_a_pinned_digest_runs_one_inspect() {
    let dir = tempfile::tempdir().unwrap();
    // The first time on this host the runtime is checked (`info`); its proof is kept.
    let (first, seen) = shell(&["podman"], present_with_gpus(H100_LIST));
    adapter(first, settings(dir.path()))
        .ensure_image(&image_spec(None, Some(DIGEST), vec![]))
        .await
        .unwrap();
    let seen_first: Vec<Vec<String>> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.args.clone())
        .collect();
    assert_eq!(
        seen_first[0],
        ["info", "--format", "json"],
        "{seen_first:?}"
    );
    assert_eq!(seen_first.len(), 2, "{seen_first:?}");
    // Then (a new process) one inspect is all.
    let (shell, seen) = shell(&["podman"], present_with_gpus(H100_LIST));
    let adapter = adapter(shell, settings(dir.path()));
    let artifact = adapter
        .ensure_image(&image_spec(None, Some(DIGEST), vec![]))
        .await
        .unwrap();
    assert!(artifact.cache_hit);
    assert_eq!(artifact.revision.as_deref(), Some("abc123"));
    assert_eq!(
        artifact.reference,
        format!("127.0.0.1:1/llama/server@{DIGEST}")
    );
    assert_eq!(artifact.runtime_env.get("PATH").unwrap(), "/usr/bin");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].args,
        [
            "image",
            "inspect",
            &format!("127.0.0.1:1/llama/server@{DIGEST}")
        ]
    );
}

#[tokio::test]
async fn unknown_devices_list_the_gpus_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut names = vec!["podman", "nvidia-smi"];
    let (mock, _) = shell(&names, present_with_gpus(H100_LIST));
    let with_gpus = adapter(mock, settings(dir.path()));
    let spec = image_spec(None, Some(DIGEST), vec!["3".into()]);
    let error = with_gpus.ensure_image(&spec).await.unwrap_err();
    assert!(matches!(error, Error::Engine { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("3 not found"), "{text}");
    assert!(
        text.contains("GPU-44580e09-6ab3-f333-4b4a-a122d00bfb5a"),
        "{text}"
    );

    // A known device, but podman without a CDI spec.
    let spec = image_spec(None, Some(DIGEST), vec!["0".into()]);
    let error = with_gpus.ensure_image(&spec).await.unwrap_err();
    let sudo = provisioner_core::sudo_prefix(adapters_host::running_as_root());
    assert_eq!(
        error.hint(),
        Some(format!("{sudo}nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml").as_str())
    );
    // With a spec it passes.
    std::fs::create_dir_all(dir.path().join("cdi")).unwrap();
    std::fs::write(
        dir.path().join("cdi/nvidia.yaml"),
        "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\n",
    )
    .unwrap();
    let artifact = with_gpus.ensure_image(&spec).await.unwrap();
    assert!(artifact.cache_hit);

    // No nvidia-smi: no driver.
    names.pop();
    let (no_driver, _) = shell(&names, present_with_gpus(H100_LIST));
    let without = adapter(no_driver, settings(dir.path()));
    let error = without.ensure_image(&spec).await.unwrap_err();
    assert!(
        matches!(&error, Error::MissingTool { tool, .. } if tool.contains("nvidia-smi")),
        "{error:?}"
    );
    assert_eq!(error.code().exit_code(), 5);
}

// ---------------------------------------------------------------------------------------------
// What the run needs from the runtime (issue 11, item 10)

/// A shell whose podman answers `info` with `info` and inspects nothing.
fn podman_info(info: &'static str) -> Script {
    Arc::new(move |c: &CommandSpec| {
        if c.args.first().map(String::as_str) == Some("info") {
            ok(info)
        } else {
            fail("Error: image not known")
        }
    })
}

fn infos(seen: &Arc<Mutex<Vec<CommandSpec>>>) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|c| c.args.first().map(String::as_str) == Some("info"))
        .count()
}

#[tokio::test]
async fn an_init_path_naming_a_missing_file_fails_detection_and_the_check_follows_containers_conf()
{
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("custom.conf");
    std::fs::write(
        &conf,
        "[containers]\ninit_path = \"/nonexistent/catatonit\"\n",
    )
    .unwrap();
    let mut with_conf = settings(dir.path());
    with_conf
        .env
        .insert("CONTAINERS_CONF".into(), conf.display().to_string());
    let (mock, seen) = shell(&["podman"], podman_info("{}"));
    let error = adapter(mock, with_conf.clone())
        .detect(None)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::MissingSetup { .. }), "{error:?}");
    assert_eq!(error.code().exit_code(), 5);
    let text = error.to_string();
    assert!(
        text.contains("/nonexistent/catatonit") && text.contains(&conf.display().to_string()),
        "{text}"
    );
    let sudo = provisioner_core::sudo_prefix(adapters_host::running_as_root());
    let hint = error.hint().unwrap();
    assert!(
        hint.contains(&format!("{sudo}apt-get install -y catatonit")),
        "{hint}"
    );
    assert_eq!(infos(&seen), 1);

    // The same file, now naming an init that exists: its contents changed, so it is checked
    // again, and passes.
    let init = dir.path().join("helpers/catatonit");
    std::fs::write(
        &conf,
        format!("[containers]\ninit_path = \"{}\"\n", init.display()),
    )
    .unwrap();
    let (mock, seen) = shell(&["podman"], podman_info("{}"));
    adapter(mock, with_conf.clone()).detect(None).await.unwrap();
    assert_eq!(infos(&seen), 1);
    // Unchanged: the recorded check holds, no process runs.
    let (mock, seen) = shell(&["podman"], podman_info("{}"));
    adapter(mock, with_conf.clone()).detect(None).await.unwrap();
    assert_eq!(infos(&seen), 0);
    // The init binary it found is gone: checked again, and refused.
    std::fs::remove_file(&init).unwrap();
    let (mock, seen) = shell(&["podman"], podman_info("{}"));
    let error = adapter(mock, with_conf).detect(None).await.unwrap_err();
    assert!(matches!(error, Error::MissingSetup { .. }), "{error:?}");
    assert_eq!(infos(&seen), 1);

    // No init_path and no catatonit anywhere podman looks: the package to install.
    let (mock, _) = shell(&["podman"], podman_info("{}"));
    let error = adapter(mock, settings(dir.path()))
        .detect(Some(RuntimeKind::Podman))
        .await;
    // settings() wrote catatonit again into the helper directory.
    assert!(error.is_ok(), "{error:?}");
    let mut bare = settings(dir.path());
    bare.podman_files.helper_dirs = vec![dir.path().join("empty")];
    let (mock, _) = shell(&["podman"], podman_info("{}"));
    let error = adapter(mock, bare).detect(None).await.unwrap_err();
    assert!(
        matches!(&error, Error::MissingTool { tool, .. } if tool.contains("catatonit")),
        "{error:?}"
    );
    assert!(
        error
            .hint()
            .unwrap()
            .contains("apt-get install -y catatonit")
    );
}

#[tokio::test]
async fn the_network_backend_and_oci_runtime_are_checked_with_install_commands() {
    let dir = tempfile::tempdir().unwrap();
    // Rootful with CNI: the bridge and portmap plugins must be there.
    let cni = r#"{"host":{"networkBackend":"cni","security":{"rootless":false}}}"#;
    let (mock, _) = shell(&["podman"], podman_info(cni));
    let error = adapter(mock, settings(dir.path()))
        .detect(None)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::MissingTool { tool, .. } if tool.contains("bridge")),
        "{error:?}"
    );
    assert!(
        error
            .hint()
            .unwrap()
            .contains("apt-get install -y containernetworking-plugins"),
        "{error:?}"
    );
    std::fs::create_dir_all(dir.path().join("cni")).unwrap();
    for plugin in ["bridge", "portmap"] {
        std::fs::write(dir.path().join("cni").join(plugin), "").unwrap();
    }
    let (mock, _) = shell(&["podman"], podman_info(cni));
    adapter(mock, settings(dir.path()))
        .detect(None)
        .await
        .unwrap();

    // Rootless without slirp4netns or pasta (another host: no recorded check).
    let dir = tempfile::tempdir().unwrap();
    let rootless = r#"{"host":{"security":{"rootless":true},"slirp4netns":{"executable":""}}}"#;
    let (mock, _) = shell(&["podman"], podman_info(rootless));
    let error = adapter(mock, settings(dir.path()))
        .detect(None)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::MissingTool { tool, .. } if tool.contains("slirp4netns")),
        "{error:?}"
    );
    assert!(error.hint().unwrap().contains("apt-get install -y passt"));

    // `podman info` fails naming the OCI runtime it lacks.
    let (mock, _) = shell(
        &["podman"],
        Arc::new(|_: &CommandSpec| {
            fail("Error: default OCI runtime \"crun\" not found: invalid argument")
        }),
    );
    let error = adapter(mock, settings(dir.path()))
        .detect(None)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::MissingTool { tool, .. } if tool == "crun"),
        "{error:?}"
    );
    assert!(error.hint().unwrap().contains("apt-get install -y crun"));
}

// ---------------------------------------------------------------------------------------------
// Images in the runtime's own store (issue 11, item 12)

const IMAGE_ID: &str = "803f15cfa83828d6f6114c7ebca6defb737d7490b613460294d317fccf60c32d";
const LOCAL_DIGEST: &str =
    "sha256:005e4463e4fb95673713c9aa7deb8d26aa24c70acbbdb2905372af164cd19223";

/// podman's store holds `names` (image inspect by name answers with IMAGE_ID).
fn store(names: &'static [&'static str]) -> Script {
    Arc::new(
        move |c: &CommandSpec| match c.args.first().map(String::as_str) {
            Some("info") => ok("{}"),
            Some("image") if names.contains(&c.args[2].as_str()) => ok(&format!(
                r#"[{{"Id":"{IMAGE_ID}","Digest":"{LOCAL_DIGEST}","RepoDigests":["{}@{LOCAL_DIGEST}"],"Labels":{{"org.opencontainers.image.version":"b0"}}}}]"#,
                c.args[2]
                    .rsplit_once(':')
                    .map_or(c.args[2].as_str(), |(name, _)| name)
            )),
            Some("image") => fail(&format!("Error: {}: image not known", c.args[2])),
            _ => fail("unexpected"),
        },
    )
}

fn spec_of(image: &str) -> ImageSpec {
    let reference: provisioner_core::ImageReference = image.parse().unwrap();
    ImageSpec {
        engine: Engine::Llamacpp,
        image: reference,
        insecure: false,
        runtime: Some(RuntimeKind::Podman),
        devices: Vec::new(),
        inputs: Vec::new(),
    }
}

#[tokio::test]
async fn a_localhost_image_is_resolved_in_the_store_by_its_image_id() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, seen) = shell(&["podman"], store(&["localhost/llama/server:b0"]));
    let adapter = adapter(mock, settings(dir.path()));
    let artifact = adapter
        .ensure_image(&spec_of("localhost/llama/server:b0"))
        .await
        .unwrap();
    assert_eq!(artifact.reference, format!("sha256:{IMAGE_ID}"));
    assert_eq!(artifact.digest.as_str(), format!("sha256:{IMAGE_ID}"));
    assert_eq!(artifact.tag.as_ref().map(|t| t.as_str()), Some("b0"));
    assert_eq!(artifact.version.as_deref(), Some("b0"));
    assert!(artifact.cache_hit);
    let seen: Vec<Vec<String>> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.args.clone())
        .collect();
    assert_eq!(
        seen.last().unwrap(),
        &["image", "inspect", "localhost/llama/server:b0"]
    );
    assert!(
        !seen.iter().any(|args| args[0] == "pull"),
        "nothing is pulled: {seen:?}"
    );
    // The tag index does not record it (the store is the truth; a rebuild moves the tag).
    assert!(!dir.path().join("cache/images-v1.json").exists());

    // Not in the store: said so, with how to get it there; no registry, no `insecure`.
    let error = adapter
        .ensure_image(&spec_of("localhost/llama/server:b1"))
        .await
        .unwrap_err();
    let text = format!("{error} {}", error.hint().unwrap_or_default());
    assert!(matches!(error, Error::Source { .. }), "{error:?}");
    assert!(
        text.contains("not in podman's local store") && text.contains("podman build -t"),
        "{text}"
    );
    assert!(!text.contains("insecure"), "{text}");
}

#[tokio::test]
async fn offline_a_tag_the_store_holds_is_used_by_its_registry_digest() {
    let dir = tempfile::tempdir().unwrap();
    let offline = policy::HostPolicy {
        offline: true,
        ..policy::HostPolicy::default()
    };
    let (mock, seen) = shell(&["podman"], store(&["ghcr.io/ggml-org/llama.cpp:server"]));
    let adapter = PodmanOrDocker::new(
        Arc::new(mock),
        Arc::new(offline),
        Arc::new(NoProgress),
        settings(dir.path()),
    );
    let artifact = adapter
        .ensure_image(&spec_of("ghcr.io/ggml-org/llama.cpp:server"))
        .await
        .unwrap();
    assert_eq!(
        artifact.reference,
        format!("ghcr.io/ggml-org/llama.cpp@{LOCAL_DIGEST}")
    );
    assert_eq!(artifact.digest.as_str(), LOCAL_DIGEST);
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.args.first().map(String::as_str) == Some("pull"))
    );
    // A tag the store lacks: the policy's refusal stands.
    let error = adapter
        .ensure_image(&spec_of("ghcr.io/ggml-org/llama.cpp:other"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::PolicyDenied { .. }), "{error:?}");
}

// ---------------------------------------------------------------------------------------------
// Host files named in engine flags (issue 11, item 11)

#[tokio::test]
async fn host_inputs_must_exist_as_the_kind_their_option_takes() {
    use provisioner_core::{HostInput, HostInputKind};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chatml.jinja");
    std::fs::write(&file, "{{ x }}").unwrap();
    let input = |path: PathBuf, kind| HostInput {
        path,
        kind,
        option: "--chat-template-file".into(),
        field: "provisioning.flags[1]".into(),
    };
    let (mock, _) = shell(&["podman"], store(&["localhost/llama/server:b0"]));
    let adapter = adapter(mock, settings(dir.path()));
    let mut spec = spec_of("localhost/llama/server:b0");
    spec.inputs = vec![input(file.clone(), HostInputKind::File)];
    adapter.ensure_image(&spec).await.unwrap();
    for (path, kind, says) in [
        (
            dir.path().join("missing.jinja"),
            HostInputKind::File,
            "does not exist",
        ),
        (
            dir.path().to_path_buf(),
            HostInputKind::File,
            "is a directory",
        ),
        (file.clone(), HostInputKind::Directory, "takes a directory"),
    ] {
        spec.inputs = vec![input(path, kind)];
        let error = adapter.ensure_image(&spec).await.unwrap_err();
        assert!(matches!(error, Error::ConfigInvalid { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.contains("provisioning.flags[1]") && text.contains(says),
            "{text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Hints that match the cause (issue 11, item 12)

#[tokio::test]
async fn an_unreachable_registry_is_told_apart_from_a_plain_http_one() {
    let dir = tempfile::tempdir().unwrap();
    let ask = |registry: String| {
        let settings = settings(dir.path());
        async move {
            let (mock, _) = shell(&["podman"], podman_info("{}"));
            let adapter = adapter(mock, settings);
            let mut spec = spec_of(&format!("{registry}/llama/server:b0"));
            spec.insecure = false;
            adapter.ensure_image(&spec).await.unwrap_err()
        }
    };
    // Nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let error = ask(format!("127.0.0.1:{port}")).await;
    let hint = error.hint().unwrap().to_string();
    assert!(hint.contains("nothing listens"), "{error:?}");
    assert!(!hint.contains("insecure"), "{hint}");
    // A plain-HTTP server asked over HTTPS.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|| async { "plain" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    let error = ask(format!("127.0.0.1:{port}")).await;
    let hint = error.hint().unwrap().to_string();
    assert!(hint.contains("insecure: true"), "{error:?}");
}
