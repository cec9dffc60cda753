//! Benchmark: a binary-mode install of a >= 200 MB archive from a loopback server, against
//! `curl -o f && sha256sum f && tar xzf f` of the same archive, in the same run; and the peak RSS
//! of the provisioner while it installs.
//!
//! Run with `scripts/bench.sh` (release build, real fixtures).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::{fixtures, free_port, orchctl, shared_cache};

const FILLER_BYTES: usize = 200 * 1024 * 1024;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Deterministic incompressible bytes (xorshift), so the archive really is >= 200 MB.
fn write_filler(path: &Path) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..FILLER_BYTES / block.len() {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&block)?;
    }
    file.flush()
}

#[allow(clippy::disallowed_methods, clippy::print_stdout)] // a benchmark drives tools directly and prints
fn main() -> anyhow::Result<()> {
    let fixtures = fixtures();
    let root = shared_cache().join("bench-binary");
    let www = root.join("www");
    let archive_name = "llama-bench-bin.tar.gz";
    let archive = www.join(archive_name);
    if !archive.exists() {
        let prepared = Command::new(tests::orchctl_path())
            .env("LLAMA_ORCH_CACHE_DIR", shared_cache())
            .args(["-q", "engine", "prepare", "--json", "--config"])
            .arg(write_source_pool(&root)?)
            .output()?;
        anyhow::ensure!(prepared.status.success(), "source prepare failed");
        let value: serde_json::Value = serde_json::from_slice(&prepared.stdout)?;
        let pack = root.join("pack/llama-bench");
        std::fs::create_dir_all(&pack)?;
        std::fs::copy(value["bin"].as_str().unwrap(), pack.join("llama-server"))?;
        write_filler(&pack.join("filler.bin"))?;
        std::fs::create_dir_all(&www)?;
        let status = Command::new("tar")
            .arg("-czf")
            .arg(&archive)
            .arg("-C")
            .arg(root.join("pack"))
            .arg("llama-bench")
            .status()?;
        anyhow::ensure!(status.success(), "tar failed");
    }
    let bytes = std::fs::metadata(&archive)?.len();
    let sha256 = {
        let output = Command::new("sha256sum").arg(&archive).output()?;
        String::from_utf8(output.stdout)?
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    println!(
        "archive: {:.1} MiB, sha256 {}",
        bytes as f64 / 1048576.0,
        &sha256[..16]
    );

    let server = tests::LoopbackServer::start(&www);
    let port = server.port;
    let url = format!("http://127.0.0.1:{port}/{archive_name}");
    let config = root.join("binary.yaml");
    std::fs::write(
        &config,
        format!(
            "pools:\n  - id: bench-binary\n    engine: llamacpp\n    provisioning:\n      mode: binary\n      binary: {{ url: \"{url}\", checksum: \"sha256:{sha256}\" }}\n      model: {{ ref: \"file:{}\" }}\n      ports: [18089]\n",
            fixtures.model.display()
        ),
    )?;

    // Ours first, so that the children's peak RSS below is the provisioner's alone.
    let mut ours = Vec::new();
    for run in 0..3 {
        let cache = root.join(format!("cache-{run}"));
        std::fs::remove_dir_all(&cache).ok();
        let started = Instant::now();
        let status = orchctl(&cache)
            .args(["-q", "engine", "prepare", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .status()?;
        ours.push(started.elapsed());
        anyhow::ensure!(status.success(), "orchctl prepare failed");
        std::fs::remove_dir_all(&cache).ok();
    }
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    let peak_rss_kib = usage.max_rss();

    let mut baseline = Vec::new();
    for _ in 0..3 {
        let scratch = root.join("baseline");
        std::fs::remove_dir_all(&scratch).ok();
        std::fs::create_dir_all(scratch.join("out"))?;
        let script = format!(
            "curl -sS -o {f} {url} && sha256sum {f} >/dev/null && tar -xzf {f} -C {out}",
            f = scratch.join("a.tar.gz").display(),
            out = scratch.join("out").display()
        );
        let started = Instant::now();
        let status = Command::new("bash").args(["-c", &script]).status()?;
        baseline.push(started.elapsed());
        anyhow::ensure!(status.success(), "baseline failed");
        std::fs::remove_dir_all(&scratch).ok();
    }
    drop(server);

    let (ours, baseline) = (median(ours), median(baseline));
    println!(
        "orchctl prepare, cold binary install (median of 3): {:>8.3} s",
        ours.as_secs_f64()
    );
    println!(
        "curl -o + sha256sum + tar xzf (median of 3):        {:>8.3} s",
        baseline.as_secs_f64()
    );
    println!(
        "ratio: {:.2}; peak RSS of orchctl: {:.1} MiB; targets: ratio <= 0.8, RSS <= 32 MiB",
        ours.as_secs_f64() / baseline.as_secs_f64(),
        peak_rss_kib as f64 / 1024.0
    );
    Ok(())
}

fn write_source_pool(root: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(root)?;
    Ok(tests::write_source_config(
        root,
        "bench-source",
        free_port(),
        tests::TEST_CMAKE_FLAGS,
        &[],
    ))
}
