//! Benchmark: a warm `prepare` (cache hit) against re-running `cmake --build` on an up-to-date
//! build tree of the same llama.cpp source, measured in the same run and printed as a ratio.
//!
//! Run with `scripts/bench.sh` (release build, real fixtures).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use provisioner_core::{Config, EngineProvisioner, Format, NoProgress};
use tests::{TEST_CMAKE_FLAGS, fixtures, free_port, shared_cache, write_source_config};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[allow(clippy::disallowed_methods, clippy::print_stdout)] // a benchmark drives cmake directly and prints
fn main() -> anyhow::Result<()> {
    let fixtures = fixtures();
    let cache = shared_cache();
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let dir = tempfile::tempdir()?;
    let config_path = write_source_config(dir.path(), "bench", free_port(), TEST_CMAKE_FLAGS, &[]);
    let config = Config::parse(
        &std::fs::read_to_string(&config_path)?,
        Format::Yaml,
        "bench.yaml",
    )?;
    let pool = config.pools[0].clone();

    let settings = cli::wiring::Settings {
        home,
        cache_dir: Some(cache.clone()),
        models_dir: Some(cache.join("models")),
        ..Default::default()
    };
    let provisioner = cli::wiring::provisioner(&settings, Arc::new(NoProgress));
    let runtime = tokio::runtime::Runtime::new()?;

    // Make sure the build is installed (cold the first time on a machine).
    let first = runtime.block_on(provisioner.prepare(&pool))?;
    println!(
        "engine_version {} (first prepare cache_hit={})",
        first.engine_version, first.metadata.cache_hit
    );

    // The baseline: an up-to-date build tree of the same commit and flags, built once here.
    let tree = cache.join("bench-tree");
    let src = tree.join("src");
    if !src.join("build/bin/llama-server").exists() {
        std::fs::remove_dir_all(&tree).ok();
        std::fs::create_dir_all(&tree)?;
        let status = Command::new("git")
            .args(["clone", "--quiet", &fixtures.repo_url])
            .arg(&src)
            .status()?;
        anyhow::ensure!(status.success(), "git clone failed");
        Command::new("git")
            .arg("-C")
            .arg(&src)
            .args(["checkout", "--quiet", &fixtures.commit])
            .status()?;
        let mut configure = Command::new("cmake");
        configure
            .env("CCACHE_BASEDIR", &tree)
            .arg("-S")
            .arg(&src)
            .arg("-B")
            .arg(src.join("build"))
            .args(&first.metadata.build_flags);
        anyhow::ensure!(configure.status()?.success(), "cmake configure failed");
    }
    let build = || -> anyhow::Result<Duration> {
        let started = Instant::now();
        let status = Command::new("cmake")
            .env("CCACHE_BASEDIR", &tree)
            .arg("--build")
            .arg(src.join("build"))
            .args(["--target", "llama-server", "--parallel", "2"])
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "cmake --build failed");
        Ok(started.elapsed())
    };
    build()?; // bring the tree up to date (a full build the first time)
    let cmake_noop = median(
        (0..5)
            .map(|_| build())
            .collect::<anyhow::Result<Vec<_>>>()?,
    );

    let mut warm = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let prepared = runtime.block_on(provisioner.prepare(&pool))?;
        warm.push(started.elapsed());
        anyhow::ensure!(prepared.metadata.cache_hit, "expected a cache hit");
    }
    let best = *warm.iter().min().unwrap();
    let warm_median = median(warm);
    println!(
        "warm prepare (median of 50):      {:>9.3} ms (best {:.3} ms)",
        warm_median.as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e3
    );
    println!(
        "cmake --build no-op (median of 5): {:>9.3} ms",
        cmake_noop.as_secs_f64() * 1e3
    );
    println!(
        "ratio warm prepare / cmake no-op:  {:.4} (1/{:.0}); targets: <= 20 ms and <= 1/50",
        warm_median.as_secs_f64() / cmake_noop.as_secs_f64(),
        cmake_noop.as_secs_f64() / warm_median.as_secs_f64()
    );
    Ok(())
}
