//! Planted secrets never reach a program started through `HostShell`, whatever its job's
//! allowlist ([`provisioner_core::environment`]); the base variables and each job's own do.
//!
//! The secrets cannot be planted in this process (`std::env::set_var` is `unsafe` in edition
//! 2024 and tests run in parallel), so the outer test runs this test binary again, with the
//! secrets in its environment, to run only the inner test.

use std::sync::Arc;

use adapters_host::HostShell;
use provisioner_core::{
    BASE_ENV, BUILD_ENV, CONTAINER_ENV, CommandSpec, GIT_ENV, NoProgress, PACKAGE_ENV, Shell,
};

/// Set only in the re-run of this binary, to the file the inner test reports to: the inner test
/// runs when it is.
const INNER: &str = "EP_PLANTED_SECRETS_INNER";

/// Secrets a caller's shell often holds, with distinctive values.
const SECRETS: [(&str, &str); 6] = [
    ("AWS_SECRET_ACCESS_KEY", "planted-aws-9f3c"),
    ("HF_TOKEN", "hf_plantedTokenValue"),
    ("GITHUB_TOKEN", "ghp_plantedGithubValue"),
    ("SOME_PASSWORD", "planted-password-77"),
    ("LLAMA_ORCH_REGISTRY_PASSWORD", "planted-registry-pw"),
    // Not a secret, but git must not be pointed at another repository.
    ("GIT_DIR", "/planted/git-dir"),
];

/// Variables each job's list lets through, planted to prove that they do.
const WANTED: [(&str, &str); 9] = [
    ("LANG", "C.UTF-8"),
    ("https_proxy", "http://proxy.invalid:3128"),
    ("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
    ("SSH_AUTH_SOCK", "/planted/agent.sock"),
    ("CC", "planted-cc"),
    ("CUDA_HOME", "/planted/cuda"),
    ("DEBIAN_FRONTEND", "readline"),
    ("SUDO_PROMPT", "planted-prompt:"),
    ("DOCKER_HOST", "unix:///planted/docker.sock"),
];

#[test]
#[allow(clippy::disallowed_methods)] // runs this test binary again, with planted variables
fn planted_secrets_reach_no_spawned_program() {
    let home = tempfile::tempdir().unwrap();
    let report = home.path().join("report");
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "inner_every_job_gets_its_allowlist_only",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, &report)
        .env("HOME", home.path())
        .envs(SECRETS)
        .envs(WANTED)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        std::fs::read_to_string(&report).ok().as_deref(),
        Some("checked 6 jobs"),
        "the inner test did not run: {stdout}\n{stderr}"
    );
}

/// The variables `env` printed, run through `HostShell` with `spec`'s allowlist.
async fn seen_by(spec: CommandSpec) -> Vec<(String, String)> {
    let shell = HostShell::new(Arc::new(NoProgress));
    let output = shell.run(&spec).await.unwrap();
    assert!(output.success(), "{output:?}");
    output
        .stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[tokio::test]
async fn inner_every_job_gets_its_allowlist_only() {
    let Some(report) = std::env::var_os(INNER) else {
        return;
    };
    let env = || CommandSpec::new("env", Vec::<String>::new());
    let jobs: Vec<(&str, CommandSpec, Vec<&str>)> = vec![
        ("a --version probe (base only)", env(), vec![]),
        (
            "git",
            env().inherit_also(GIT_ENV),
            vec!["GIT_SSH_COMMAND", "SSH_AUTH_SOCK"],
        ),
        (
            "a build",
            env().inherit_also(BUILD_ENV),
            vec!["CC", "CUDA_HOME", "GIT_SSH_COMMAND"],
        ),
        (
            "a package manager",
            env().inherit_also(PACKAGE_ENV),
            vec!["DEBIAN_FRONTEND", "SUDO_PROMPT"],
        ),
        (
            "an AUR helper",
            env().inherit_also(PACKAGE_ENV).inherit_also(BUILD_ENV),
            vec!["DEBIAN_FRONTEND", "CC", "GIT_SSH_COMMAND"],
        ),
        (
            "a container runtime",
            env().inherit_also(CONTAINER_ENV),
            vec!["DOCKER_HOST"],
        ),
    ];
    for (job, spec, own) in &jobs {
        let seen = seen_by(spec.clone().env("EXPLICIT", "given")).await;
        let names: Vec<&str> = seen.iter().map(|(name, _)| name.as_str()).collect();
        for (name, value) in SECRETS {
            assert!(!names.contains(&name), "{job}: {name} was inherited");
            assert!(
                seen.iter().all(|(_, seen)| !seen.contains(value)),
                "{job}: the value of {name} was inherited"
            );
        }
        for name in ["PATH", "HOME", "LANG", "https_proxy", "EXPLICIT"] {
            assert!(names.contains(&name), "{job}: {name} missing: {names:?}");
        }
        for name in own {
            assert!(names.contains(name), "{job}: {name} missing: {names:?}");
        }
        for (name, _) in WANTED {
            assert_eq!(
                names.contains(&name),
                spec.inherits(name),
                "{job}: {name} (of its job's list: {})",
                spec.inherits(name)
            );
        }
        if own.is_empty() {
            assert!(
                names
                    .iter()
                    .all(|name| BASE_ENV.contains(name) || *name == "EXPLICIT")
            );
        }
        for name in &names {
            assert!(spec.inherits(name) || *name == "EXPLICIT", "{job}: {name}");
        }
    }
    std::fs::write(report, format!("checked {} jobs", jobs.len())).unwrap();
}
