//! Benchmark: container-mode prepare with the image present by digest (warm) and pulled from a
//! loopback registry (cold), against `podman pull` of the same digest, in the same run.
//!
//! Run with `scripts/bench.sh` (release build, real fixtures, podman and docker-registry).

use std::time::{Duration, Instant};

use tests::containers::{Env, Registry, push_llama_image};
use tests::{fixtures, free_port, orchctl};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[allow(clippy::print_stdout)] // a benchmark prints its figures
fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = Registry::start(dir.path());
    let env = Env::new(dir.path(), registry.port);
    let repository = push_llama_image(&env, dir.path(), registry.port);
    let config = dir.path().join("bench-container.yaml");
    std::fs::write(
        &config,
        format!(
            "pools:\n  - id: bench-container\n    engine: llamacpp\n    provisioning:\n      mode: container\n      container: {{ image: \"{repository}\", tag: fixture, insecure: true }}\n      model: {{ ref: \"file:{}\" }}\n      ports: [{}]\n",
            fixtures().model.display(),
            free_port()
        ),
    )?;
    let prepare = |cache: &std::path::Path| -> anyhow::Result<(Duration, serde_json::Value)> {
        let mut command = orchctl(cache);
        env.apply(&mut command);
        let started = Instant::now();
        let output = command
            .args(["-q", "engine", "prepare", "--json", "--config"])
            .arg(&config)
            .output()?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            output.status.success(),
            "prepare failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok((elapsed, serde_json::from_slice(&output.stdout)?))
    };

    // The first prepare on a host also checks that the runtime works (`podman info`); later cold
    // prepares of new images skip that. Each cold run below removes the image and the tag index,
    // so the registry is asked and the image pulled again.
    let cache = dir.path().join("cache");
    let (first, prepared) = prepare(&cache)?;
    anyhow::ensure!(
        prepared["metadata"]["cache_hit"] == false,
        "expected a pull"
    );
    let reference = prepared["args"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .find(|s| s.contains("@sha256:"))
        })
        .unwrap_or_default()
        .to_string();
    let mut cold = Vec::new();
    for _ in 0..3 {
        env.podman(&["rmi", "-f", &reference]);
        std::fs::remove_file(cache.join("containers/images-v1.json")).ok();
        let (elapsed, prepared) = prepare(&cache)?;
        anyhow::ensure!(
            prepared["metadata"]["cache_hit"] == false,
            "expected a pull"
        );
        cold.push(elapsed);
    }
    let auth = dir.path().join("auth.json");
    let mut pulls = Vec::new();
    for _ in 0..3 {
        env.podman(&["rmi", "-f", &reference]);
        let started = Instant::now();
        env.podman(&[
            "pull",
            "-q",
            "--tls-verify=false",
            "--authfile",
            &auth.to_string_lossy(),
            &reference,
        ]);
        pulls.push(started.elapsed());
    }
    let mut warm = Vec::new();
    for _ in 0..10 {
        let (elapsed, prepared) = prepare(&cache)?;
        anyhow::ensure!(
            prepared["metadata"]["cache_hit"] == true,
            "expected a cache hit"
        );
        warm.push(elapsed);
    }
    let (cold, pull, warm) = (median(cold), median(pulls), median(warm));
    println!("image: {reference}");
    println!(
        "warm prepare (whole orchctl process, median of 10): {:>8.1} ms (target <= 150 ms)",
        warm.as_secs_f64() * 1e3
    );
    println!(
        "first prepare on this host (+ podman info):         {:>8.1} ms",
        first.as_secs_f64() * 1e3
    );
    println!(
        "cold prepare (resolve + pull + verify, median of 3): {:>8.1} ms",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "podman pull of the same digest (median of 3):       {:>8.1} ms",
        pull.as_secs_f64() * 1e3
    );
    println!(
        "ratio cold prepare / podman pull: {:.2} (target <= 1.1)",
        cold.as_secs_f64() / pull.as_secs_f64()
    );
    drop(registry);
    Ok(())
}
