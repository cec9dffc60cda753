//! Benchmark: staging a >= 500 MB `hf:` file from a hub on loopback, in one run against
//! `curl -L -o` of the same `resolve` URL and against the Python client's `hf_hub_download` of
//! it (the fixtures' venv); the peak RSS of the whole `orchctl` process; the warm resolve of the
//! staged model.
//!
//! The hub here serves the hub's documented endpoints (revision API, `resolve` answering 302 to
//! a "CDN" origin with `X-Repo-Commit`, `X-Linked-Etag`, `X-Linked-Size`, the CDN serving the
//! body with `Range`) from one file on disk with its hashes computed once, as the real hub does.
//! (`adapters_model::fake_hub` hashes every file again on each request, and twice more for the
//! revision API that only our client asks: at 512 MiB that costs more than the download being
//! measured, and not the same for each client.)
//!
//! `orchctl engine prepare` of a llama.cpp source pool that is a warm cache hit (the shared
//! build) is timed as a whole process, so its figure includes process start, the config and the
//! warm build check besides staging the model. Each `orchctl` run is spawned by a helper process
//! (this binary again) that reports its children's peak RSS, i.e. orchctl's alone.
//!
//! Downloads land next to the model under the shared test cache, or under
//! `BENCH_MODEL_SCRATCH` when it is set (`/dev/shm` takes the disk out of the comparison).
//!
//! Run with `scripts/bench.sh` (release build, real fixtures).

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use provisioner_core::{MockFetcher, ModelProvisioner, ModelRequest, NoProgress, SafeUrl};
use sha2::Digest as _;
use tests::{fixtures, free_port, shared_cache};

/// The model's size: 512 MiB.
const MODEL_BYTES: u64 = 512 * 1024 * 1024;
const REPO: &str = "bench/big-model";
const FILE: &str = "big.gguf";
const ROUNDS: usize = 5;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A valid GGUF header (version 3, no tensors, no metadata) followed by deterministic
/// incompressible bytes (xorshift) up to [`MODEL_BYTES`]; its sha256 is kept next to it.
fn model_file(root: &Path) -> anyhow::Result<(PathBuf, String)> {
    let path = root.join(FILE);
    let sum = root.join(format!("{FILE}.sha256"));
    if let (Ok(meta), Ok(text)) = (std::fs::metadata(&path), std::fs::read_to_string(&sum))
        && meta.len() == MODEL_BYTES
        && text.trim().len() == 64
    {
        return Ok((path, text.trim().to_string()));
    }
    std::fs::create_dir_all(root)?;
    let partial = root.join(format!("{FILE}.partial"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&partial)?);
    let mut hasher = sha2::Sha256::new();
    let mut header = b"GGUF".to_vec();
    header.extend(3u32.to_le_bytes());
    header.extend(0u64.to_le_bytes());
    header.extend(0u64.to_le_bytes());
    file.write_all(&header)?;
    hasher.update(&header);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    let mut left = MODEL_BYTES - header.len() as u64;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        let take = left.min(block.len() as u64) as usize;
        file.write_all(&block[..take])?;
        hasher.update(&block[..take]);
        left -= take as u64;
    }
    file.flush()?;
    drop(file);
    std::fs::rename(&partial, &path)?;
    let sha256 = hex::encode(hasher.finalize());
    std::fs::write(&sum, &sha256)?;
    Ok((path, sha256))
}

/// The hub on loopback: `127.0.0.1:<hub>` for the API and `resolve`, `localhost:<cdn>` for
/// the bodies. One thread per connection, one request per connection.
struct BenchHub {
    hub: u16,
    requests: Arc<AtomicUsize>,
}

struct Served {
    path: PathBuf,
    size: u64,
    sha256: String,
    commit: String,
    cdn: u16,
}

impl BenchHub {
    fn start(path: &Path, sha256: &str) -> anyhow::Result<BenchHub> {
        let hub = TcpListener::bind("127.0.0.1:0")?;
        let cdn = TcpListener::bind("127.0.0.1:0")?;
        let commit =
            hex::encode(sha2::Sha256::digest(format!("{REPO} {sha256}")))[..40].to_string();
        let served = Arc::new(Served {
            path: path.to_path_buf(),
            size: std::fs::metadata(path)?.len(),
            sha256: sha256.to_string(),
            commit,
            cdn: cdn.local_addr()?.port(),
        });
        let requests = Arc::new(AtomicUsize::new(0));
        let port = hub.local_addr()?.port();
        for (listener, is_cdn) in [(hub, false), (cdn, true)] {
            let served = served.clone();
            let requests = requests.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let served = served.clone();
                    requests.fetch_add(1, Ordering::Relaxed);
                    std::thread::spawn(move || {
                        let _ = serve(stream, &served, is_cdn);
                    });
                }
            });
        }
        Ok(BenchHub {
            hub: port,
            requests,
        })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.hub)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

fn serve(stream: TcpStream, served: &Served, is_cdn: bool) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("GET").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut range_from = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("range")
        {
            range_from = value
                .trim()
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<u64>().ok());
        }
    }
    let path = target.split('?').next().unwrap_or("/");
    let mut out = stream;
    let head = |out: &mut TcpStream, status: &str, headers: &[(&str, String)], len: u64| {
        let mut text = format!("HTTP/1.1 {status}\r\n");
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str(&format!(
            "Content-Length: {len}\r\nConnection: close\r\n\r\n"
        ));
        out.write_all(text.as_bytes())
    };
    let etag = format!("\"{}\"", served.sha256);
    if is_cdn {
        if path != format!("/cdn/{}", served.sha256) {
            return head(&mut out, "404 Not Found", &[], 0);
        }
        let from = range_from.unwrap_or(0).min(served.size);
        let len = served.size - from;
        let mut headers = vec![
            ("ETag", etag),
            ("Accept-Ranges", "bytes".to_string()),
            ("Content-Type", "application/octet-stream".to_string()),
        ];
        let status = if range_from.is_some() {
            headers.push((
                "Content-Range",
                format!("bytes {from}-{}/{}", served.size - 1, served.size),
            ));
            "206 Partial Content"
        } else {
            "200 OK"
        };
        head(&mut out, status, &headers, len)?;
        if method == "HEAD" {
            return Ok(());
        }
        let mut file = std::fs::File::open(&served.path)?;
        file.seek(SeekFrom::Start(from))?;
        std::io::copy(&mut file.take(len), &mut out)?;
        return Ok(());
    }
    let api = format!("/api/models/{REPO}/revision/");
    let resolve = format!("/{REPO}/resolve/");
    if let Some(revision) = path.strip_prefix(&api) {
        if revision != "main" && revision != served.commit {
            let headers = [("X-Error-Code", "RevisionNotFound".to_string())];
            return head(&mut out, "404 Not Found", &headers, 0);
        }
        let body = serde_json::json!({
            "id": REPO,
            "sha": served.commit,
            "siblings": [{
                "rfilename": FILE,
                "size": served.size,
                "blobId": &served.sha256[..40],
                "lfs": {"sha256": served.sha256, "size": served.size, "pointerSize": 134},
            }],
        })
        .to_string();
        let headers = [("Content-Type", "application/json".to_string())];
        head(&mut out, "200 OK", &headers, body.len() as u64)?;
        return out.write_all(body.as_bytes());
    }
    if let Some(rest) = path.strip_prefix(&resolve)
        && let Some((revision, file)) = rest.split_once('/')
        && (revision == "main" || revision == served.commit)
        && file == FILE
    {
        let headers = [
            ("X-Repo-Commit", served.commit.clone()),
            ("X-Linked-Etag", etag.clone()),
            ("X-Linked-Size", served.size.to_string()),
            ("ETag", etag),
            (
                "Location",
                format!("http://localhost:{}/cdn/{}", served.cdn, served.sha256),
            ),
        ];
        return head(&mut out, "302 Found", &headers, 0);
    }
    let headers = [("X-Error-Code", "EntryNotFound".to_string())];
    head(&mut out, "404 Not Found", &headers, 0)
}

/// Writes the disk's dirty pages back (`sync`).
#[allow(clippy::disallowed_methods)]
fn settle() -> anyhow::Result<()> {
    anyhow::ensure!(Command::new("sync").status()?.success(), "sync failed");
    Ok(())
}

/// The helper mode: runs the command after `--`, passes its exit status on, and prints its
/// children's peak RSS (KiB) on stderr's last line.
#[allow(clippy::disallowed_methods, clippy::print_stderr)]
fn measure_child(args: &[String]) -> anyhow::Result<()> {
    let status = Command::new(&args[0]).args(&args[1..]).status()?;
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    eprintln!("maxrss_kib={}", usage.max_rss());
    std::process::exit(status.code().unwrap_or(1));
}

/// Runs `orchctl ARGS` through the helper; returns the wall time and orchctl's peak RSS (KiB).
#[allow(clippy::disallowed_methods)]
fn orchctl_measured(
    env: &[(&str, PathBuf)],
    endpoint: &str,
    args: &[&str],
) -> anyhow::Result<(Duration, i64)> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("--measure-child")
        .arg("--")
        .arg(tests::orchctl_path())
        .args(args);
    for name in tests::CALLER_VARIABLES {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.env("HF_ENDPOINT", endpoint);
    let started = Instant::now();
    let output = command.stdout(Stdio::null()).output()?;
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(
        output.status.success(),
        "orchctl {args:?} failed:\n{stderr}"
    );
    let rss = stderr
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("maxrss_kib="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(-1);
    Ok((elapsed, rss))
}

#[allow(clippy::disallowed_methods, clippy::print_stdout)] // a benchmark drives tools directly and prints
fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--measure-child") {
        return measure_child(&argv[3..]);
    }
    let fixtures = fixtures();
    let python = PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
        .join(".cache/engine-provisioner/fixtures/venv/bin/python");
    anyhow::ensure!(
        python.exists(),
        "{} is missing: run scripts/fixtures.sh",
        python.display()
    );
    let root = shared_cache().join("bench-model");
    let (model, sha256) = model_file(&root)?;
    println!(
        "model: {FILE}, {:.1} MiB, sha256 {}",
        MODEL_BYTES as f64 / 1048576.0,
        &sha256[..16]
    );

    let hub = BenchHub::start(&model, &sha256)?;
    let endpoint = hub.endpoint();
    let url = format!("{endpoint}/{REPO}/resolve/main/{FILE}");
    // How fast this CPU hashes (the sha2 crate, as the fetcher uses it), from the page cache:
    // the least staging can cost over a plain download when the hash is not overlapped.
    let mut file = std::fs::File::open(&model)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let started = Instant::now();
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    let hashing = started.elapsed();
    anyhow::ensure!(
        hex::encode(hasher.finalize()) == sha256,
        "{} changed",
        model.display()
    );
    println!(
        "sha256 of the model in this process (sha2, from the page cache): {:.3} s, {:.0} MiB/s",
        hashing.as_secs_f64(),
        MODEL_BYTES as f64 / 1048576.0 / hashing.as_secs_f64()
    );

    // Downloads land under BENCH_MODEL_SCRATCH when set (e.g. /dev/shm, to take the disk out
    // of the comparison), else next to the model.
    let scratch_root = std::env::var_os("BENCH_MODEL_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.clone());
    let scratch = tempfile::tempdir_in(&scratch_root)?;
    println!("downloads land in {}", scratch_root.display());
    let config = tests::write_source_config(
        scratch.path(),
        "bench-model",
        free_port(),
        tests::TEST_CMAKE_FLAGS,
        &[],
    );
    let text = std::fs::read_to_string(&config)?.replace(
        &format!("ref: file:{}", fixtures.model.display()),
        &format!("ref: hf:{REPO}/{FILE}"),
    );
    anyhow::ensure!(text.contains("ref: hf:"), "the pool names no hf: model");
    std::fs::write(&config, text)?;
    let config_arg = config.to_string_lossy().to_string();
    let prepare = ["-q", "engine", "prepare", "--config", config_arg.as_str()];
    let place = |name: &str| scratch.path().join(name);
    let orch_env = |name: &str| {
        vec![
            ("LLAMA_ORCH_CACHE_DIR", shared_cache()),
            ("LLAMA_ORCH_MODELS_DIR", place(name).join("models")),
            ("HF_HOME", place(name).join("hf-home")),
            ("HF_HUB_CACHE", place(name).join("hub")),
        ]
    };

    // The shared build (a cache hit after the first run on a machine): each prepare below
    // finds it installed, so what it spends beyond a warm prepare is staging the model.
    let _ = tests::source_build();

    let mut ours = Vec::new();
    let mut rss = Vec::new();
    let mut curl = Vec::new();
    let mut python_times = Vec::new();
    for round in 0..ROUNDS {
        // Each timed run starts with the disk's dirty pages written back (`sync`, not timed),
        // so that none pays for the one before.
        // ours
        settle()?;
        let name = format!("ours-{round}");
        let (elapsed, peak) = orchctl_measured(&orch_env(&name), &endpoint, &prepare)?;
        let staged = place(&name)
            .join("hub/models--bench--big-model/snapshots")
            .read_dir()?
            .flatten()
            .next()
            .map(|commit| commit.path().join(FILE))
            .ok_or_else(|| anyhow::anyhow!("orchctl staged no snapshot"))?;
        anyhow::ensure!(
            std::fs::metadata(&staged)?.len() == MODEL_BYTES,
            "{} has the wrong size",
            staged.display()
        );
        ours.push(elapsed);
        rss.push(peak);
        if round + 1 < ROUNDS {
            std::fs::remove_dir_all(place(&name))?;
        }

        // curl
        settle()?;
        let out = place("curl.bin");
        let started = Instant::now();
        let status = Command::new("curl")
            .args(["-sS", "-L", "-o"])
            .arg(&out)
            .arg(&url)
            .status()?;
        curl.push(started.elapsed());
        anyhow::ensure!(status.success(), "curl failed");
        anyhow::ensure!(
            std::fs::metadata(&out)?.len() == MODEL_BYTES,
            "curl: wrong size"
        );
        std::fs::remove_file(&out)?;

        // the Python client
        settle()?;
        let cache = place("python-hub");
        let started = Instant::now();
        let output = Command::new(&python)
            .args([
                "-c",
                "import sys\nfrom huggingface_hub import hf_hub_download\nprint(hf_hub_download(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3]))",
                REPO,
                FILE,
            ])
            .arg(&cache)
            .env("HF_ENDPOINT", &endpoint)
            .env("HF_HOME", place("python-home"))
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("HF_TOKEN")
            .env_remove("HF_HUB_CACHE")
            .output()?;
        python_times.push(started.elapsed());
        anyhow::ensure!(
            output.status.success(),
            "hf_hub_download failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let downloaded = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        anyhow::ensure!(
            std::fs::metadata(&downloaded)?.len() == MODEL_BYTES,
            "python: wrong size"
        );
        std::fs::remove_dir_all(&cache)?;
    }

    // Warm: the last staged copy, resolved again with the hub's request count watched.
    let last = format!("ours-{}", ROUNDS - 1);
    let before = hub.requests();
    let mut warm_process = Vec::new();
    for _ in 0..5 {
        let (elapsed, _) = orchctl_measured(&orch_env(&last), &endpoint, &prepare)?;
        warm_process.push(elapsed);
    }
    let settings = adapters_model::HfSettings::new(
        SafeUrl::parse(&endpoint).map_err(anyhow::Error::msg)?,
        place(&last).join("hub"),
    );
    // A fetcher that fails the run if it is used at all: the warm path has no network.
    let models = adapters_model::Models::new(
        Arc::new(MockFetcher::new()),
        Arc::new(policy::HostPolicy::default()),
        Arc::new(NoProgress),
        settings,
    );
    let request = ModelRequest {
        reference: format!("hf:{REPO}/{FILE}")
            .parse()
            .map_err(anyhow::Error::msg)?,
        models_dir: place(&last).join("models"),
        checksum: None,
        include: Vec::new(),
        exclude: Vec::new(),
        refresh: false,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut warm = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        let artifact = runtime.block_on(models.ensure_present(&request))?;
        warm.push(started.elapsed());
        anyhow::ensure!(artifact.bytes == MODEL_BYTES, "warm: wrong size");
    }
    let warm_first = warm[0];
    let warm_max = *warm.iter().max().unwrap_or(&Duration::ZERO);
    anyhow::ensure!(
        hub.requests() == before,
        "the warm path contacted the hub ({} requests)",
        hub.requests() - before
    );

    let seconds = |samples: &[Duration]| {
        samples
            .iter()
            .map(|sample| format!("{:.3}", sample.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "runs (s): orchctl {}; curl {}; python {}",
        seconds(&ours),
        seconds(&curl),
        seconds(&python_times)
    );
    let paired = |theirs: &[Duration]| {
        let mut ratios: Vec<f64> = ours
            .iter()
            .zip(theirs)
            .map(|(ours, theirs)| ours.as_secs_f64() / theirs.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    let (paired_curl, paired_python) = (paired(&curl), paired(&python_times));
    let (ours, curl, python_time) = (median(ours), median(curl), median(python_times));
    let peak = rss.iter().copied().max().unwrap_or(-1);
    println!(
        "orchctl engine prepare, hf: staged cold (median of {ROUNDS}): {:>8.3} s",
        ours.as_secs_f64()
    );
    println!(
        "curl -sS -L -o (median of {ROUNDS}):                          {:>8.3} s",
        curl.as_secs_f64()
    );
    println!(
        "python hf_hub_download (median of {ROUNDS}):                  {:>8.3} s",
        python_time.as_secs_f64()
    );
    println!(
        "ratio ours/curl: {:.3}; ours/python: {:.3}; peak RSS of orchctl: {:.1} MiB (each run: {})",
        ours.as_secs_f64() / curl.as_secs_f64(),
        ours.as_secs_f64() / python_time.as_secs_f64(),
        peak as f64 / 1024.0,
        rss.iter()
            .map(|kib| format!("{:.1}", *kib as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "warm: ensure_present of the staged model {:.3} ms median ({:.3} ms first, {:.3} ms max of {}); whole `orchctl engine prepare` {:.1} ms median of 5; no request reached the hub",
        ms(median(warm.clone())),
        ms(warm_first),
        ms(warm_max),
        warm.len(),
        ms(median(warm_process))
    );
    println!(
        "median of the per-round ratios: ours/curl {paired_curl:.3}; ours/python {paired_python:.3}"
    );
    println!("targets: ours/curl <= 1.05, ours/python < 1, peak RSS <= 48 MiB, warm <= 5 ms");
    Ok(())
}
