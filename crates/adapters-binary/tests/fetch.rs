//! HttpFetcher against a loopback server that misbehaves on purpose.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters_binary::{FetchSettings, HttpFetcher, partial_path};
use provisioner_core::{Checksum, Error, FetchRequest, Fetcher, ProgressEvent};
use support::{Recorder, Route, TestServer, noise, sha256, sha256_hex};

fn fetcher(progress: Arc<Recorder>) -> HttpFetcher {
    HttpFetcher::new(
        progress,
        FetchSettings {
            stall_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            max_redirects: 3,
            ..FetchSettings::default()
        },
    )
}

fn request(url: String, destination: &Path, expected: Option<Checksum>) -> FetchRequest {
    FetchRequest {
        url: url.parse().expect("a URL"),
        destination: destination.to_path_buf(),
        expected,
        max_bytes: None,
        authorization: None,
    }
}

fn message(error: &Error) -> String {
    format!("{error} / hint: {}", error.hint().unwrap_or(""))
}

struct Setup {
    server: TestServer,
    progress: Arc<Recorder>,
    fetcher: HttpFetcher,
    dir: tempfile::TempDir,
    body: Vec<u8>,
}

impl Setup {
    async fn new(len: usize) -> Setup {
        let progress = Arc::new(Recorder::default());
        Setup {
            server: TestServer::start().await,
            fetcher: fetcher(progress.clone()),
            progress,
            dir: tempfile::tempdir().unwrap(),
            body: noise(len, 42),
        }
    }

    fn dest(&self) -> PathBuf {
        self.dir.path().join("downloads").join("file.tar.gz")
    }

    fn partial(&self) -> PathBuf {
        partial_path(&self.dest()).unwrap()
    }
}

#[tokio::test]
async fn downloads_and_verifies_sha256_sha512_blake3() {
    let setup = Setup::new(300_000).await;
    setup.server.file("/f", &setup.body, true);
    let sha512 = {
        use sha2::Digest;
        hex::encode(sha2::Sha512::digest(&setup.body))
    };
    let sums = [
        format!("sha256:{}", sha256_hex(&setup.body)),
        format!("sha512:{sha512}"),
        format!("blake3:{}", blake3::hash(&setup.body).to_hex()),
    ];
    for sum in sums {
        let expected = Checksum::parse(&sum).unwrap();
        let fetched = setup
            .fetcher
            .fetch(&request(
                setup.server.url("/f"),
                &setup.dest(),
                Some(expected.clone()),
            ))
            .await
            .unwrap();
        assert_eq!(fetched.checksum, expected);
        assert_eq!(fetched.bytes, setup.body.len() as u64);
        assert_eq!(fetched.path, setup.dest());
        assert_eq!(std::fs::read(setup.dest()).unwrap(), setup.body);
        assert!(!setup.partial().exists(), "the partial file is gone");
    }
    let events = setup.progress.events();
    let step = format!("download {}", setup.server.url("/f"));
    assert!(events.contains(&ProgressEvent::Started {
        step: step.clone(),
        detail: Some(setup.dest().display().to_string()),
    }));
    assert!(events.contains(&ProgressEvent::Finished { step: step.clone() }));
    assert!(events.contains(&ProgressEvent::Bytes {
        step,
        done: setup.body.len() as u64,
        total: Some(setup.body.len() as u64),
    }));
}

#[tokio::test]
async fn unpinned_download_reports_its_sha256() {
    let setup = Setup::new(1000).await;
    setup.server.file("/f", &setup.body, false);
    let fetched = setup
        .fetcher
        .fetch(&request(setup.server.url("/f"), &setup.dest(), None))
        .await
        .unwrap();
    assert_eq!(fetched.checksum, sha256(&setup.body));
}

#[tokio::test]
async fn checksum_mismatch_leaves_nothing() {
    let setup = Setup::new(50_000).await;
    setup.server.file("/f", &setup.body, true);
    let wrong = Checksum::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
    let error = setup
        .fetcher
        .fetch(&request(setup.server.url("/f"), &setup.dest(), Some(wrong)))
        .await
        .unwrap_err();
    let text = message(&error);
    assert!(matches!(error, Error::Download { .. }), "{text}");
    assert!(
        text.contains(&format!("expected sha256:{}", "0".repeat(64))),
        "{text}"
    );
    assert!(
        text.contains(&format!("got sha256:{}", sha256_hex(&setup.body))),
        "{text}"
    );
    assert!(!setup.dest().exists());
    assert!(!setup.partial().exists());
}

#[tokio::test]
async fn truncated_download_fails_then_resumes_when_fixed() {
    let setup = Setup::new(200_000).await;
    let body = Arc::new(setup.body.clone());
    setup.server.route(
        "/f",
        Route::Truncate {
            body: body.clone(),
            send: 80_000,
        },
    );
    let req = request(
        setup.server.url("/f"),
        &setup.dest(),
        Some(sha256(&setup.body)),
    );
    let error = setup.fetcher.fetch(&req).await.unwrap_err();
    let text = message(&error);
    assert!(
        text.contains("closed after 80000 of 200000 bytes"),
        "{text}"
    );
    assert!(!setup.dest().exists());
    assert_eq!(std::fs::metadata(setup.partial()).unwrap().len(), 80_000);

    setup.server.file("/f", &setup.body, true);
    let fetched = setup.fetcher.fetch(&req).await.unwrap();
    assert_eq!(fetched.checksum, sha256(&setup.body));
    assert_eq!(std::fs::read(setup.dest()).unwrap(), setup.body);
    let hits = setup.server.hits_for("/f");
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[1].range.as_deref(), Some("bytes=80000-"));
}

#[tokio::test]
async fn http_errors_name_url_and_status() {
    let setup = Setup::new(10).await;
    setup.server.route("/gone", Route::Status(404));
    setup.server.route("/broken", Route::Status(500));
    for (path, status) in [
        ("/gone", "404"),
        ("/broken", "500"),
        ("/never-routed", "404"),
    ] {
        let url = setup.server.url(path);
        let error = setup
            .fetcher
            .fetch(&request(url.clone(), &setup.dest(), None))
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, Error::Download { .. }), "{text}");
        assert!(text.contains(&url), "{text}");
        assert!(text.contains(&format!("HTTP {status}")), "{text}");
        assert!(error.hint().is_some());
        assert!(!setup.dest().exists());
    }
}

#[tokio::test]
async fn a_stalled_server_fails_within_the_stall_timeout() {
    let setup = Setup::new(100_000).await;
    setup.server.route(
        "/f",
        Route::Stall {
            body: Arc::new(setup.body.clone()),
            after: 10_000,
        },
    );
    let started = Instant::now();
    let error = setup
        .fetcher
        .fetch(&request(setup.server.url("/f"), &setup.dest(), None))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    let text = message(&error);
    assert!(text.contains("stalled"), "{text}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    // What arrived is kept for the next run.
    assert_eq!(std::fs::metadata(setup.partial()).unwrap().len(), 10_000);
}

#[tokio::test]
async fn a_silent_server_fails_within_the_stall_timeout() {
    let setup = Setup::new(10).await;
    setup.server.route("/f", Route::Hang);
    let started = Instant::now();
    let error = setup
        .fetcher
        .fetch(&request(setup.server.url("/f"), &setup.dest(), None))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(error.to_string().contains("timed out"), "{error}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[tokio::test]
async fn resumes_a_partial_download_with_a_range_request() {
    let setup = Setup::new(100_000).await;
    setup.server.file("/f", &setup.body, true);
    std::fs::create_dir_all(setup.dest().parent().unwrap()).unwrap();
    std::fs::write(setup.partial(), &setup.body[..50_000]).unwrap();
    let fetched = setup
        .fetcher
        .fetch(&request(
            setup.server.url("/f"),
            &setup.dest(),
            Some(sha256(&setup.body)),
        ))
        .await
        .unwrap();
    assert_eq!(fetched.bytes, 100_000);
    assert_eq!(std::fs::read(setup.dest()).unwrap(), setup.body);
    let hits = setup.server.hits_for("/f");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].range.as_deref(), Some("bytes=50000-"));
    assert!(setup.progress.text().contains("resuming"));
}

#[tokio::test]
async fn restarts_when_the_server_ignores_the_range() {
    let setup = Setup::new(100_000).await;
    setup.server.file("/f", &setup.body, false);
    std::fs::create_dir_all(setup.dest().parent().unwrap()).unwrap();
    std::fs::write(setup.partial(), &setup.body[..50_000]).unwrap();
    let fetched = setup
        .fetcher
        .fetch(&request(
            setup.server.url("/f"),
            &setup.dest(),
            Some(sha256(&setup.body)),
        ))
        .await
        .unwrap();
    assert_eq!(fetched.bytes, 100_000);
    assert_eq!(std::fs::read(setup.dest()).unwrap(), setup.body);
    let hits = setup.server.hits_for("/f");
    assert_eq!(hits.len(), 1, "the 200 answer is used as the restart");
    assert_eq!(hits[0].range.as_deref(), Some("bytes=50000-"));
}

#[tokio::test]
async fn restarts_after_416() {
    let setup = Setup::new(10_000).await;
    setup.server.file("/f", &setup.body, true);
    std::fs::create_dir_all(setup.dest().parent().unwrap()).unwrap();
    // Longer than the file: the range cannot be served.
    std::fs::write(setup.partial(), noise(12_000, 9)).unwrap();
    let fetched = setup
        .fetcher
        .fetch(&request(
            setup.server.url("/f"),
            &setup.dest(),
            Some(sha256(&setup.body)),
        ))
        .await
        .unwrap();
    assert_eq!(fetched.bytes, 10_000);
    let ranges: Vec<Option<String>> = setup
        .server
        .hits_for("/f")
        .into_iter()
        .map(|h| h.range)
        .collect();
    assert_eq!(ranges, vec![Some("bytes=12000-".to_string()), None]);
}

#[tokio::test]
async fn a_corrupt_partial_is_deleted_not_resumed_again() {
    let setup = Setup::new(100_000).await;
    setup.server.file("/f", &setup.body, true);
    std::fs::create_dir_all(setup.dest().parent().unwrap()).unwrap();
    std::fs::write(setup.partial(), noise(50_000, 1234)).unwrap();
    let req = request(
        setup.server.url("/f"),
        &setup.dest(),
        Some(sha256(&setup.body)),
    );
    let error = setup.fetcher.fetch(&req).await.unwrap_err();
    assert!(error.to_string().contains("checksum mismatch"), "{error}");
    assert!(!setup.partial().exists());
    assert!(!setup.dest().exists());
    // The next run starts from scratch and succeeds.
    setup.fetcher.fetch(&req).await.unwrap();
    let ranges: Vec<Option<String>> = setup
        .server
        .hits_for("/f")
        .into_iter()
        .map(|h| h.range)
        .collect();
    assert_eq!(ranges, vec![Some("bytes=50000-".to_string()), None]);
    assert_eq!(std::fs::read(setup.dest()).unwrap(), setup.body);
}

#[tokio::test]
async fn follows_redirects_up_to_the_cap() {
    let setup = Setup::new(1000).await;
    setup.server.file("/f", &setup.body, true);
    setup.server.route(
        "/r1",
        Route::Redirect {
            status: 302,
            location: "/r2".to_string(),
        },
    );
    setup.server.route(
        "/r2",
        Route::Redirect {
            status: 301,
            location: setup.server.url("/r3"),
        },
    );
    setup.server.route(
        "/r3",
        Route::Redirect {
            status: 307,
            location: "f".to_string(),
        },
    );
    let fetched = setup
        .fetcher
        .fetch(&request(
            setup.server.url("/r1"),
            &setup.dest(),
            Some(sha256(&setup.body)),
        ))
        .await
        .unwrap();
    assert_eq!(fetched.bytes, 1000);

    for hop in 0..10 {
        setup.server.route(
            &format!("/loop{hop}"),
            Route::Redirect {
                status: 302,
                location: format!("/loop{}", hop + 1),
            },
        );
    }
    let before = setup.server.requests();
    let error = setup
        .fetcher
        .fetch(&request(setup.server.url("/loop0"), &setup.dest(), None))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("too many redirects"), "{error}");
    // The first request and three redirects followed, then it stops.
    assert_eq!(setup.server.requests() - before, 4);
}

#[tokio::test]
async fn refuses_redirects_to_other_schemes() {
    // (https → http is refused by the same redirect policy; its unit test is in src/url.rs,
    // since a TLS test server is not worth its weight here.)
    let setup = Setup::new(10).await;
    setup.server.route(
        "/r",
        Route::Redirect {
            status: 302,
            location: "file:///etc/passwd".to_string(),
        },
    );
    let error = setup
        .fetcher
        .fetch(&request(setup.server.url("/r"), &setup.dest(), None))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("refusing to follow a redirect to a `file` URL"),
        "{error}"
    );
    assert!(!setup.dest().exists());
}

#[tokio::test]
async fn bodies_over_max_bytes_are_refused() {
    let setup = Setup::new(100_000).await;
    setup.server.file("/f", &setup.body, true);
    let mut req = request(setup.server.url("/f"), &setup.dest(), None);
    req.max_bytes = Some(99_999);
    let error = setup.fetcher.fetch(&req).await.unwrap_err();
    assert!(
        error.to_string().contains("more than the allowed 99999"),
        "{error}"
    );
    assert!(!setup.dest().exists());
    assert!(!setup.partial().exists());
}

#[tokio::test]
async fn file_urls_go_through_the_same_checks() {
    let setup = Setup::new(70_000).await;
    let source = setup.dir.path().join("mirror file.bin");
    std::fs::write(&source, &setup.body).unwrap();
    let url = format!("file://{}", source.display()).replace(' ', "%20");
    let fetched = setup
        .fetcher
        .fetch(&request(
            url.clone(),
            &setup.dest(),
            Some(sha256(&setup.body)),
        ))
        .await
        .unwrap();
    assert_eq!(fetched.bytes, 70_000);
    assert_eq!(std::fs::read(setup.dest()).unwrap(), setup.body);

    let wrong = Checksum::parse(&format!("blake3:{}", "1".repeat(64))).unwrap();
    let error = setup
        .fetcher
        .fetch(&request(
            url,
            &setup.dest().with_file_name("other"),
            Some(wrong),
        ))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("checksum mismatch"), "{error}");
}

#[tokio::test]
async fn credentials_are_sent_but_never_shown() {
    let setup = Setup::new(1000).await;
    setup.server.route("/private", Route::Status(403));
    let url = format!("http://alice:s3cret@{}/private", setup.server.addr);
    let error = setup
        .fetcher
        .fetch(&request(url, &setup.dest(), None))
        .await
        .unwrap_err();
    assert!(!message(&error).contains("s3cret"), "{error}");
    assert!(!setup.progress.text().contains("s3cret"));
    assert!(error.to_string().contains("HTTP 403"), "{error}");
    let hits = setup.server.hits_for("/private");
    assert_eq!(
        hits[0].authorization.as_deref(),
        Some("Basic YWxpY2U6czNjcmV0")
    );
}

#[tokio::test]
async fn unsupported_schemes_are_refused() {
    let setup = Setup::new(10).await;
    let error = setup
        .fetcher
        .fetch(&request(
            "ftp://example.com/x".to_string(),
            &setup.dest(),
            None,
        ))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("unsupported URL scheme `ftp`"),
        "{error}"
    );
}

#[tokio::test]
async fn progress_is_throttled() {
    let setup = Setup::new(2_000_000).await;
    setup.server.route(
        "/slow",
        Route::Slow {
            body: Arc::new(setup.body.clone()),
            chunk: 20_000,
            delay: Duration::from_millis(5),
            ranges: false,
        },
    );
    let started = Instant::now();
    setup
        .fetcher
        .fetch(&request(setup.server.url("/slow"), &setup.dest(), None))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let bytes_events = setup
        .progress
        .events()
        .into_iter()
        .filter(|e| matches!(e, ProgressEvent::Bytes { .. }))
        .count();
    // About ten a second, plus the first and the last.
    let allowed = (elapsed.as_secs_f64() * 10.0).ceil() as usize + 3;
    assert!(bytes_events >= 2, "{bytes_events}");
    assert!(
        bytes_events <= allowed,
        "{bytes_events} events in {elapsed:?}"
    );
}

/// Every redirect target is put to the policy before it is contacted: a hop to a host the
/// allowlist does not name is refused, naming the target and where it came from.
#[tokio::test]
async fn redirect_targets_are_checked_against_the_policy() {
    let setup = Setup::new(100).await;
    setup.server.file("/f", &setup.body, true);
    // A remote host the allowlist does not name (loopback is always allowed).
    let elsewhere = "https://downloads.example.org/f".to_string();
    setup.server.route(
        "/away",
        Route::Redirect {
            status: 302,
            location: elsewhere.clone(),
        },
    );
    let policy = policy::HostPolicy {
        allowed_hosts: Some(vec!["127.0.0.1".to_string()]),
        ..policy::HostPolicy::default()
    };
    let fetcher = fetcher(setup.progress.clone()).with_policy(Arc::new(policy));
    let before = setup.server.requests();
    let error = fetcher
        .fetch(&request(setup.server.url("/away"), &setup.dest(), None))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::PolicyDenied { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("downloads.example.org") && text.contains("a redirect from http://127.0.0.1"),
        "{text}"
    );
    assert_eq!(error.code().exit_code(), 9);
    assert_eq!(
        setup.server.requests() - before,
        1,
        "the target was contacted"
    );
    assert!(!setup.dest().exists());

    // An allowed hop is followed.
    setup.server.route(
        "/near",
        Route::Redirect {
            status: 302,
            location: "/f".to_string(),
        },
    );
    let fetched = fetcher
        .fetch(&request(setup.server.url("/near"), &setup.dest(), None))
        .await
        .unwrap();
    assert_eq!(fetched.bytes, 100);
}

#[tokio::test]
async fn a_copy_is_never_more_readable_than_its_source() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new(1_000).await;
    let source = setup.dir.path().join("private.bin");
    std::fs::write(&source, &setup.body).unwrap();
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o600)).unwrap();
    let url = format!("file://{}", source.display());
    setup
        .fetcher
        .fetch(&request(url, &setup.dest(), Some(sha256(&setup.body))))
        .await
        .unwrap();
    let mode = std::fs::metadata(setup.dest())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the copy of a 0600 file is 0600, got {mode:o}");
}
