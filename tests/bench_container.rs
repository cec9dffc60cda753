//! Benchmark: container-mode prepare with the image present by digest (warm) and pulled from a
//! loopback registry (cold), against `podman pull` of the same digest, in the same run: the
//! small llama image (fixed overhead in ms) and the same image with a 320 MiB layer on top (an
//! image of realistic size; ratio).
//!
//! Run with `scripts/bench.sh` (release build, real fixtures, podman and docker-registry);
//! `BENCH_SMALL_ONLY=1 target/release/bench-container` measures the small image alone.

use std::time::{Duration, Instant};

use tests::containers::{Env, Registry, push_llama_image};
use tests::{fixtures, free_port, orchctl};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Cold prepares (image and tag index removed each time) against `podman pull` of the same
/// digest, medians of `rounds`, interleaved so that both see the same machine load.
fn cold_against_pull(
    env: &Env,
    dir: &std::path::Path,
    image: &str,
    rounds: usize,
) -> anyhow::Result<(Duration, Duration, String, Duration)> {
    let config = dir.join(format!(
        "bench-{}.yaml",
        image.replace(['/', ':', '.'], "-")
    ));
    std::fs::write(
        &config,
        format!(
            "pools:\n  - id: bench-container\n    engine: llamacpp\n    provisioning:\n      mode: container\n      container: {{ image: \"{image}\", tag: fixture, insecure: true }}\n      model: {{ ref: \"file:{}\" }}\n      ports: [{}]\n",
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
    // The first prepare on a host also checks that the runtime works (`podman info`); later
    // cold prepares of new images skip that.
    let cache = dir.join(format!("cache-{}", image.len()));
    let (_, prepared) = prepare(&cache)?;
    let reference = prepared["args"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .find(|s| s.contains("@sha256:"))
        })
        .unwrap_or_default()
        .to_string();
    let auth = dir.join("auth.json");
    let (mut cold, mut pulls) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        env.podman(&["rmi", "-f", &reference]);
        std::fs::remove_file(cache.join("containers/images-v1.json")).ok();
        let (elapsed, prepared) = prepare(&cache)?;
        anyhow::ensure!(
            prepared["metadata"]["cache_hit"] == false,
            "expected a pull"
        );
        cold.push(elapsed);
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
    Ok((median(cold), median(pulls), reference, median(warm)))
}

/// The llama image with a layer of incompressible filler on top: an image of realistic size
/// (real engine images are gigabytes). Returns the repository.
fn push_large_image(env: &Env, dir: &std::path::Path, small: &str, registry: u16) -> String {
    let context = dir.join("large-image");
    std::fs::create_dir_all(&context).unwrap();
    let mut filler = std::fs::File::create(context.join("filler.bin")).unwrap();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..320 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        std::io::Write::write_all(&mut filler, &block).unwrap();
    }
    std::fs::write(
        context.join("Containerfile"),
        format!("FROM {small}:fixture\nCOPY filler.bin /filler.bin\n"),
    )
    .unwrap();
    let repository = format!("127.0.0.1:{registry}/llama-large");
    let tag = format!("{repository}:fixture");
    env.podman(&[
        "build",
        "-q",
        "--tls-verify=false",
        "-t",
        &tag,
        &context.to_string_lossy(),
    ]);
    env.podman(&[
        "push",
        "-q",
        "--tls-verify=false",
        "--creds",
        &format!(
            "{}:{}",
            tests::containers::USER,
            tests::containers::PASSWORD
        ),
        &tag,
    ]);
    env.podman(&["rmi", "-f", &tag]);
    repository
}

#[allow(clippy::print_stdout)] // a benchmark prints its figures
fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = Registry::start(dir.path());
    let env = Env::new(dir.path(), registry.port);
    let small = push_llama_image(&env, dir.path(), registry.port);
    // The small image is measured before the large one is built on top of it (which leaves the
    // small image's layers in the store, so that its pulls would fetch nothing).
    let (cold, pull, reference, warm) = cold_against_pull(&env, dir.path(), &small, 5)?;
    println!("small image: {reference}");
    println!(
        "warm prepare (whole orchctl process, median of 10): {:>8.1} ms (target <= 150 ms)",
        warm.as_secs_f64() * 1e3
    );
    println!(
        "cold prepare (resolve + pull + verify, median of 5): {:>8.1} ms",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "podman pull of the same digest (median of 5):       {:>8.1} ms",
        pull.as_secs_f64() * 1e3
    );
    println!(
        "small image: ratio cold prepare / podman pull {:.2}, fixed overhead {:.0} ms (target <= 55 ms)",
        cold.as_secs_f64() / pull.as_secs_f64(),
        (cold.as_secs_f64() - pull.as_secs_f64()) * 1e3
    );
    if std::env::var_os("BENCH_SMALL_ONLY").is_some() {
        return Ok(());
    }
    let large = push_large_image(&env, dir.path(), &small, registry.port);
    let (cold, pull, reference, _) = cold_against_pull(&env, dir.path(), &large, 3)?;
    println!("large image (+320 MiB layer): {reference}");
    println!(
        "cold prepare {:.1} ms, podman pull {:.1} ms (medians of 3)",
        cold.as_secs_f64() * 1e3,
        pull.as_secs_f64() * 1e3
    );
    println!(
        "large image: ratio cold prepare / podman pull {:.2} (target <= 1.05), overhead {:.0} ms",
        cold.as_secs_f64() / pull.as_secs_f64(),
        (cold.as_secs_f64() - pull.as_secs_f64()) * 1e3
    );
    drop(registry);
    Ok(())
}
