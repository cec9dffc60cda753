//! What `orchctl` prints and where, as the README says: with `--json` every failure is a JSON
//! object on stdout (usage errors included); empty `LLAMA_ORCH_*` variables mean unset; the
//! cache root and models directory follow `--cache-dir`/`LLAMA_ORCH_CACHE_DIR`, then
//! `$XDG_CACHE_HOME`, then `$HOME`, else exit 3; `-q` leaves only errors on stderr; no terminal
//! escapes on a stderr that is not a terminal. None of these builds or downloads anything.

use std::path::Path;
use std::process::Command;

use tests::{Outcome, orchctl};

const POOL: &str = r#"pools:
  - id: p
    engine: llamacpp
    provisioning:
      mode: source
      source: { repo: "file:///nonexistent", ref: b1 }
      model: { ref: "file:/nonexistent.gguf" }
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().to_string()
}

fn outcome(command: &mut Command) -> Outcome {
    let output = command.output().expect("orchctl runs");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
    }
}

/// The error object a `--json` failure printed on stdout.
fn json_error(out: &Outcome) -> serde_json::Value {
    let value: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {:?}\nstderr: {}",
            out.stdout, out.stderr
        )
    });
    assert!(
        value["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{value}"
    );
    value
}

#[test]
fn usage_errors_with_json_print_the_error_object_and_keep_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "pool.yaml", POOL);
    let cache = dir.path().join("cache");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "unknown flag",
            vec!["engine", "plan", "--bogus", "--json", "--config", &config],
            "--bogus",
        ),
        (
            "missing --config",
            vec!["engine", "plan", "--json"],
            "--config",
        ),
        (
            "--pool without its value",
            vec!["engine", "plan", "--json", "--config", &config, "--pool"],
            "--pool",
        ),
        (
            "bad value",
            vec![
                "engine", "down", "--grace", "soon", "--json", "--config", &config,
            ],
            "soon",
        ),
        (
            "--json where it is not an option",
            vec!["--json", "config", "schema"],
            "--json",
        ),
        ("no subcommand", vec!["engine", "--json"], "--json"),
    ];
    for (case, args, named) in cases {
        let out = outcome(orchctl(&cache).args(&args));
        assert_eq!(out.code, 2, "{case}: {}", out.stderr);
        let value = json_error(&out);
        assert_eq!(value["error"]["code"], "usage", "{case}: {value}");
        let message = value["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{case}: {message}");
        // clap's own text stays on stderr.
        assert!(out.stderr.contains("error:"), "{case}: {}", out.stderr);
        assert!(out.stderr.contains(named), "{case}: {}", out.stderr);

        // Without --json: nothing on stdout.
        let plain: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
        let out = outcome(orchctl(&cache).args(&plain));
        if out.code == 2 {
            assert_eq!(out.stdout, "", "{case}");
        }
    }
    // Help is not a failure.
    let out = outcome(orchctl(&cache).args(["engine", "plan", "--help", "--json"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("Usage:"), "{}", out.stdout);
}

#[test]
fn every_other_failure_with_json_prints_the_error_object_too() {
    let dir = tempfile::tempdir().unwrap();
    let two = POOL.to_string()
        + &POOL
            .replace("  - id: p\n", "  - id: q\n")
            .replace("pools:\n", "");
    let config = write(dir.path(), "two.yaml", &two);
    // Several pools and no --pool: exit 3 with the object.
    let out = outcome(
        orchctl(&dir.path().join("cache")).args(["engine", "plan", "--json", "--config", &config]),
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(json_error(&out)["error"]["code"], "config");
    // A switch that does not parse: a usage error, as JSON.
    let out = outcome(
        orchctl(&dir.path().join("cache"))
            .env("LLAMA_ORCH_OFFLINE", "maybe")
            .args([
                "engine", "plan", "--json", "--pool", "p", "--config", &config,
            ]),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    let value = json_error(&out);
    assert_eq!(value["error"]["code"], "usage");
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("LLAMA_ORCH_OFFLINE"),
        "{value}"
    );
}

/// A binary-mode pool downloading from a remote host that does not exist.
fn remote_binary_pool(dir: &Path) -> String {
    let model = dir.join("m.gguf");
    std::fs::write(&model, tests::STUB_GGUF).unwrap();
    write(
        dir,
        "remote.yaml",
        &format!(
            "pools:\n  - id: b\n    engine: llamacpp\n    provisioning:\n      mode: binary\n      binary: {{ url: \"https://llama.example.invalid/l.tar.gz\", checksum: \"sha256:{}\" }}\n      model: {{ ref: \"file:{}\" }}\n",
            "a".repeat(64),
            model.display()
        ),
    )
}

#[test]
fn empty_switches_mean_unset() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "pool.yaml", POOL);
    let cache = dir.path().join("cache");
    // LLAMA_ORCH_OFFLINE= (and every other empty switch) is not a usage error.
    let out = outcome(
        orchctl(&cache)
            .env("LLAMA_ORCH_OFFLINE", "")
            .env("LLAMA_ORCH_ALLOW_HTTP", "")
            .env("LLAMA_ORCH_LOG", "")
            .env("LLAMA_ORCH_LOG_FORMAT", "")
            .args(["engine", "plan", "--config", &config]),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);

    // LLAMA_ORCH_ALLOWED_HOSTS= is no allowlist: the download is attempted (and fails: the
    // host does not exist), where an allowlist naming another host refuses it (exit 9).
    let remote = remote_binary_pool(dir.path());
    let prepare = |hosts: &str| {
        outcome(
            orchctl(&cache)
                .env("LLAMA_ORCH_ALLOWED_HOSTS", hosts)
                .args(["engine", "prepare", "--config", &remote]),
        )
    };
    let refused = prepare("other.example");
    assert_eq!(refused.code, 9, "{}", refused.stderr);
    let unset = prepare("");
    assert_ne!(
        unset.code, 9,
        "an empty allowlist refused: {}",
        unset.stderr
    );
    assert_eq!(unset.code, 6, "{}", unset.stderr);
}

/// `orchctl engine plan --json` for a pool whose model is a file name (looked up in the models
/// directory), with the given environment and no cache or models directory given.
fn plan_with(dir: &Path, vars: &[(&str, &Path)], remove: &[&str]) -> Outcome {
    let config = write(
        dir,
        "named.yaml",
        "pools:\n  - id: p\n    engine: llamacpp\n    model: tiny.gguf\n    provisioning:\n      mode: source\n      source: { repo: \"file:///nonexistent\", ref: b1 }\n",
    );
    let mut command = orchctl(&dir.join("unused"));
    command
        .env_remove("LLAMA_ORCH_CACHE_DIR")
        .env_remove("LLAMA_ORCH_MODELS_DIR")
        .env_remove("XDG_CACHE_HOME");
    for name in remove {
        command.env_remove(name);
    }
    for (name, value) in vars {
        command.env(name, value);
    }
    outcome(command.args(["engine", "plan", "--json", "--config", &config]))
}

#[test]
fn the_cache_root_and_models_dir_follow_xdg_then_home_else_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let xdg = dir.path().join("xdg");

    let out = plan_with(
        dir.path(),
        &[("HOME", &home), ("XDG_CACHE_HOME", &xdg)],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&xdg.join("llama-orch/llamacpp").display().to_string()),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&xdg.join("models/tiny.gguf").display().to_string()),
        "{}",
        out.stdout
    );

    // A relative XDG_CACHE_HOME is ignored (the XDG rule): ~/.cache.
    let out = plan_with(
        dir.path(),
        &[("HOME", &home), ("XDG_CACHE_HOME", Path::new("relative"))],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(
            &home
                .join(".cache/llama-orch/llamacpp")
                .display()
                .to_string()
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&home.join(".cache/models/tiny.gguf").display().to_string()),
        "{}",
        out.stdout
    );

    // No HOME and nothing given: exit 3 naming the flag and the variable, never /.cache.
    for home in [None, Some(Path::new(""))] {
        let vars: Vec<(&str, &Path)> = home.map(|h| ("HOME", h)).into_iter().collect();
        let out = plan_with(dir.path(), &vars, &["HOME"]);
        assert_eq!(out.code, 3, "{}", out.stderr);
        let value = json_error(&out);
        assert_eq!(value["error"]["code"], "config");
        let hint = value["error"]["hint"].as_str().unwrap();
        assert!(
            hint.contains("--cache-dir") && hint.contains("LLAMA_ORCH_CACHE_DIR"),
            "{hint}"
        );
        assert!(
            out.stderr.contains("hint: set --cache-dir"),
            "{}",
            out.stderr
        );
        // Nothing was planned (under `/.cache` or anywhere).
        assert!(value.get("plan").is_none(), "{value}");
    }

    // Given, the cache root needs no HOME; the models directory then needs its own.
    let cache = dir.path().join("given");
    let models = dir.path().join("models-given");
    let out = plan_with(
        dir.path(),
        &[
            ("LLAMA_ORCH_CACHE_DIR", &cache),
            ("LLAMA_ORCH_MODELS_DIR", &models),
        ],
        &["HOME"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&models.join("tiny.gguf").display().to_string())
    );
    let out = plan_with(dir.path(), &[("LLAMA_ORCH_CACHE_DIR", &cache)], &["HOME"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        json_error(&out)["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("LLAMA_ORCH_MODELS_DIR"),
        "{}",
        out.stdout
    );
}

/// A config with llama-orch's `catalog` section, which is noted as not read here.
const WITH_CATALOG: &str = r#"pools:
  - id: p
    engine: llamacpp
    provisioning:
      mode: source
      source: { repo: "file:///nonexistent", ref: b1 }
      model: { ref: "file:/nonexistent.gguf" }
catalog: {}
"#;

#[test]
fn quiet_leaves_only_errors_and_hints_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "pool.yaml", WITH_CATALOG);
    let cache = dir.path().join("cache");

    let noisy = outcome(orchctl(&cache).args(["engine", "plan", "--config", &config]));
    assert_eq!(noisy.code, 0, "{}", noisy.stderr);
    assert!(
        noisy.stderr.contains("note: the `catalog` section"),
        "{}",
        noisy.stderr
    );

    for args in [
        vec!["-q", "engine", "plan", "--config", &config],
        vec!["engine", "plan", "--quiet", "--config", &config],
        vec!["-q", "config", "check", "--config", &config],
    ] {
        let quiet = outcome(orchctl(&cache).args(&args));
        assert_eq!(quiet.code, 0, "{}", quiet.stderr);
        assert_eq!(quiet.stderr, "", "{args:?}");
        assert!(!quiet.stdout.is_empty());
    }

    // A failing prepare: only `error:` and `hint:` lines.
    let failed = outcome(orchctl(&cache).args(["-q", "engine", "prepare", "--config", &config]));
    assert_eq!(failed.code, 8, "{}", failed.stderr);
    assert!(failed.stderr.starts_with("error: "), "{}", failed.stderr);
    for line in failed.stderr.lines() {
        assert!(
            line.starts_with("error: ") || line.starts_with("hint: "),
            "{line:?} in:\n{}",
            failed.stderr
        );
    }
}

#[test]
fn no_escape_sequences_on_a_stderr_that_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "pool.yaml", WITH_CATALOG);
    let cache = dir.path().join("cache");
    let runs = [
        // Structured logs as text, notes, an error and its hint.
        outcome(
            orchctl(&cache)
                .env("LLAMA_ORCH_LOG", "debug")
                .env_remove("NO_COLOR")
                .args(["engine", "prepare", "--config", &config]),
        ),
        // clap's usage error.
        outcome(
            orchctl(&cache)
                .env_remove("NO_COLOR")
                .args(["engine", "plan", "--bogus"]),
        ),
    ];
    for out in runs {
        assert!(!out.stderr.is_empty());
        assert!(
            !out.stderr.contains('\u{1b}'),
            "an escape sequence on a pipe: {:?}",
            out.stderr
        );
    }
}
