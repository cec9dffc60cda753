//! No log level prints the credentials a request carries: `orchctl` with `LLAMA_ORCH_LOG=trace`
//! (and with filters that name the HTTP client's targets or wrap everything in a span
//! directive) downloads from a loopback URL with `user:password@` in it, and stderr holds
//! neither the password, nor the base64 `user:password` of the `Authorization: Basic` header
//! that was sent, nor an `authorization:` header, not even in the hex dump of the wire that the
//! HTTP client logs at trace level.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

const USER: &str = "alice";
const PASSWORD: &str = "pw-Wire-S3cret";
/// base64("alice:pw-Wire-S3cret")
const BASIC: &str = "YWxpY2U6cHctV2lyZS1TM2NyZXQ=";

/// A loopback HTTP server answering every request with 200 and a small body; keeps the request
/// heads it received.
fn serve() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            seen.lock().unwrap().push(head);
            let body = b"not the archive the checksum names";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(body);
        }
    });
    (port, heads)
}

fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let model = dir.join("tiny.gguf");
    std::fs::write(&model, adapters_model::check::EMPTY_GGUF).unwrap();
    let config = dir.join("pools.yaml");
    std::fs::write(
        &config,
        format!(
            r#"pools:
  - id: wire
    engine: llamacpp
    provisioning:
      mode: binary
      binary: {{ url: "http://{USER}:{PASSWORD}@127.0.0.1:{port}/llama-b1-bin-ubuntu-x64.zip", checksum: "sha256:{}" }}
      model: {{ ref: "file:{}" }}
"#,
            "ab".repeat(32),
            model.display()
        ),
    )
    .unwrap();
    config
}

/// The bytes of every hex-dump row in `text` (`4745 5420 2f6c … GET /l…`), in order.
fn hex_dumped(text: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|word| !word.is_empty())
            .collect();
        for window in words.windows(8) {
            let is_row = window.iter().all(|word| {
                word.len() == 4 && word.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            });
            if is_row {
                for word in window {
                    for pair in [&word[..2], &word[2..]] {
                        if let Ok(byte) = u8::from_str_radix(pair, 16) {
                            bytes.push(byte);
                        }
                    }
                }
                break;
            }
        }
    }
    bytes
}

#[test]
#[allow(clippy::disallowed_methods)] // the test runs the binary itself
fn no_log_filter_prints_the_credentials_of_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let (port, heads) = serve();
    let config = write_config(dir.path(), port);
    for filter in [
        "trace",
        "warn,ureq=trace,ureq_proto=trace,rustls=trace,hyper=trace,h2=trace,reqwest=trace",
        "warn,ureq_proto::util=trace,ureq::run=trace,ureq::unversioned=trace",
        "warn,[prepare]=trace",
    ] {
        for format in ["text", "json"] {
            let output = Command::new(env!("CARGO_BIN_EXE_orchctl"))
                .arg("--cache-dir")
                .arg(dir.path().join("cache"))
                .arg("--models-dir")
                .arg(dir.path().join("models"))
                .args(["engine", "prepare", "--config"])
                .arg(&config)
                .env_clear()
                .env("HOME", dir.path())
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("LLAMA_ORCH_LOG", filter)
                .env("LLAMA_ORCH_LOG_FORMAT", format)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            let what = format!("LLAMA_ORCH_LOG={filter} ({format})");
            // The download ran and failed its checksum (exit 6), with logs on.
            assert_eq!(output.status.code(), Some(6), "{what}: {stderr}");
            assert!(
                stderr.contains("prepare failed"),
                "{what}: no logs at all: {stderr}"
            );
            for line in stderr.lines() {
                if line.contains("TRACE") || line.contains("DEBUG") {
                    assert!(
                        ["ureq", "rustls", "hyper", "h2::", "reqwest", "oci_client"]
                            .iter()
                            .all(|target| !line.contains(target)),
                        "{what}: the HTTP client's logs are on: {line}"
                    );
                }
            }
            let lower = stderr.to_lowercase();
            assert!(!stderr.contains(PASSWORD), "{what}: the password: {stderr}");
            assert!(
                !stderr.contains(BASIC),
                "{what}: the basic credentials: {stderr}"
            );
            assert!(
                !lower.contains("authorization:") && !lower.contains("authorization\":"),
                "{what}: a header: {stderr}"
            );
            let dumped = String::from_utf8_lossy(&hex_dumped(&stderr)).to_lowercase();
            assert!(
                !dumped.contains("authorization") && !dumped.contains(&BASIC.to_lowercase()),
                "{what}: the wire dump holds the header: {dumped}"
            );
        }
    }
    // The credentials were on the wire: the logs had them to hide.
    let heads = heads.lock().unwrap();
    assert!(!heads.is_empty());
    assert!(
        heads.iter().all(|head| head
            .to_lowercase()
            .contains(&format!("authorization: basic {}", BASIC.to_lowercase()))),
        "{heads:?}"
    );
}
