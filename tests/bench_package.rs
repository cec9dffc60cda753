//! Benchmark: package mode with apt. Warm prepare (the pinned version already installed), for
//! the whole `orchctl` process and in process; and a cold install by `orchctl engine prepare`
//! next to plain `apt-get update && apt-get install` of the same package from the same isolated
//! repository, in the same run. Installs into this system (root) and purges at the end.
//!
//! Run with `scripts/bench.sh` (release build, real fixtures).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provisioner_core::{Config, EngineProvisioner, Format, NoProgress};
use tests::debs::{self, BENCH_PACKAGE, Purge};
use tests::{fixtures, orchctl, shared_cache};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[allow(clippy::disallowed_methods)] // the baseline runs apt-get and dpkg itself
fn apt(args: &[&str], sources: &Path, lists: &Path) -> anyhow::Result<()> {
    let status = Command::new("apt-get")
        .arg("-o")
        .arg(format!("Dir::Etc::SourceList={}", sources.display()))
        .args(["-o", "Dir::Etc::SourceParts=/nonexistent", "-o"])
        .arg(format!("Dir::State::Lists={}", lists.display()))
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "apt-get {args:?} failed");
    Ok(())
}

#[allow(clippy::disallowed_methods)]
fn purge() {
    let _ = Command::new("dpkg")
        .args(["--purge", BENCH_PACKAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[allow(clippy::print_stdout)] // a benchmark prints its figures
fn main() -> anyhow::Result<()> {
    anyhow::ensure!(
        debs::is_root(),
        "this benchmark installs packages: run it as root"
    );
    let _purge = Purge(vec![BENCH_PACKAGE]);
    let root = shared_cache().join("bench-package");
    std::fs::remove_dir_all(&root).ok();
    let repo_dir = root.join("repo");
    let repo = debs::server_repo(&repo_dir, BENCH_PACKAGE);
    let config = root.join("package.yaml");
    let text = format!(
        "pools:\n  - id: bench-package\n    engine: llamacpp\n    provisioning:\n      mode: package\n      allow_package_installs: true\n      package: {{ name: {BENCH_PACKAGE}, version: \"1.1.0\", repo: \"{repo}\" }}\n      model: {{ ref: \"file:{}\" }}\n      ports: [18090]\n",
        fixtures().model.display()
    );
    std::fs::write(&config, &text)?;

    // Baseline: what a careful admin runs by hand against the same isolated source.
    let sources = root.join("baseline.list");
    std::fs::write(&sources, format!("{repo}\n"))?;
    let lists = root.join("baseline-lists");
    let pinned = format!("{BENCH_PACKAGE}=1.1.0");
    let (mut ours, mut baseline) = (Vec::new(), Vec::new());
    for run in 0..3 {
        purge();
        std::fs::remove_dir_all(&lists).ok();
        std::fs::create_dir_all(lists.join("partial"))?;
        let started = Instant::now();
        apt(&["update", "-qq"], &sources, &lists)?;
        apt(
            &["install", "-y", "-qq", "--no-install-recommends", &pinned],
            &sources,
            &lists,
        )?;
        baseline.push(started.elapsed());

        purge();
        let cache = root.join(format!("cache-{run}"));
        let started = Instant::now();
        let status = orchctl(&cache)
            .args(["-q", "engine", "prepare", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .status()?;
        ours.push(started.elapsed());
        anyhow::ensure!(status.success(), "orchctl prepare (cold) failed");
        if run < 2 {
            std::fs::remove_dir_all(&cache).ok();
        }
    }

    // Warm: the last cache holds the record and the package is installed at the pin.
    let cache = root.join("cache-2");
    let mut warm_process = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let status = orchctl(&cache)
            .args(["-q", "engine", "prepare", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        warm_process.push(started.elapsed());
        anyhow::ensure!(status.success(), "orchctl prepare (warm) failed");
    }
    let pool = Config::parse(&text, Format::Yaml, "package.yaml")?.pools[0].clone();
    let settings = cli::wiring::Settings {
        home: std::env::var_os("HOME").map(Into::into).unwrap_or_default(),
        cache_dir: Some(cache.clone()),
        models_dir: Some(cache.join("models")),
        ..Default::default()
    };
    let provisioner = cli::wiring::provisioner(&settings, Arc::new(NoProgress));
    let runtime = tokio::runtime::Runtime::new()?;
    let mut warm_inner = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let prepared = runtime.block_on(provisioner.prepare(&pool))?;
        warm_inner.push(started.elapsed());
        anyhow::ensure!(
            prepared.metadata.cache_hit,
            "the warm prepare was not a hit"
        );
    }
    purge();

    let (ours, baseline) = (median(ours), median(baseline));
    println!(
        "orchctl prepare, cold apt install (median of 3):       {:>8.1} ms",
        millis(ours)
    );
    println!(
        "apt-get update + apt-get install, same repo (median):  {:>8.1} ms",
        millis(baseline)
    );
    println!(
        "cold ratio: {:.2}",
        ours.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "warm prepare, whole orchctl process (median of 20):    {:>8.1} ms",
        millis(median(warm_process))
    );
    println!(
        "warm prepare, in process (median of 50):               {:>8.2} ms (target <= 50 ms)",
        millis(median(warm_inner))
    );
    Ok(())
}
