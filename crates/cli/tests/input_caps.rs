//! Inputs we parse have size caps: a configuration that is a device, a FIFO or larger than the
//! cap is refused at once with exit 3, never read until memory runs out.

use std::process::Command;
use std::time::{Duration, Instant};

#[allow(clippy::disallowed_methods)] // the test runs the binary itself
fn check(config: &str) -> (i32, String, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_orchctl"))
        .args(["config", "check", "-c", config])
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).to_string(),
        started.elapsed(),
    )
}

#[test]
fn a_device_a_fifo_or_a_huge_file_is_refused_at_once() {
    let (code, stderr, took) = check("/dev/zero");
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.yaml");
    #[allow(clippy::disallowed_methods)]
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let (code, stderr, took) = check(fifo.to_str().unwrap());
    assert_eq!(code, 3, "{stderr}");
    assert!(
        took < Duration::from_secs(10),
        "a FIFO nobody writes must not hang: {took:?}"
    );

    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; 5 * 1024 * 1024]).unwrap();
    let (code, stderr, _) = check(big.to_str().unwrap());
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("MiB"), "{stderr}");
}
