//! `https://`/`http://` and local references through `Models`, and the catalog they fill.

mod support;

use std::path::Path;

use provisioner_core::{Checksum, ModelProvisioner};
use support::*;

fn url(setup: &Setup, path: &str) -> String {
    format!("{}/org/files/resolve/main/{path}", setup.hub.endpoint())
}

#[tokio::test]
async fn a_url_is_downloaded_once_recorded_and_verified_later() {
    let setup = Setup::new().await;
    let model = gguf_of(10_000, 3);
    setup
        .hub
        .publish("org/files", vec![FakeFile::lfs("m.gguf", model.clone())]);
    let models = setup.models(setup.settings());
    let request = setup.request(&url(&setup, "m.gguf"));
    let artifact = models.ensure_present(&request).await.unwrap();
    assert!(
        artifact.path.starts_with(setup.models_dir().join("url/v1")),
        "{}",
        artifact.path.display()
    );
    assert_eq!(artifact.path.file_name().unwrap(), "m.gguf");
    assert_eq!(std::fs::read(&artifact.path).unwrap(), model);
    let sha256 = sha256_hex(&model);
    assert_eq!(artifact.files[0].sha256, Some(format!("sha256:{sha256}")));
    let id = artifact.id.clone().unwrap();
    assert_eq!(id, format!("url:127.0.0.1/m.gguf@{}", &sha256[..12]));
    assert!(
        setup
            .catalog()
            .find(&format!("sha256:{sha256}"))
            .unwrap()
            .is_some()
    );
    assert!(
        !tree(&setup.models_dir().join("url"))
            .iter()
            .any(|p| p.contains("partial"))
    );

    // Warm: no network; a file whose time changed but content did not still passes.
    setup.hub.clear_requests();
    let again = models.ensure_present(&request).await.unwrap();
    assert_eq!(again.path, artifact.path);
    assert!(setup.hub.requests().is_empty());
    let file = std::fs::File::options()
        .write(true)
        .open(&artifact.path)
        .unwrap();
    file.set_modified(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    drop(file);
    models.ensure_present(&request).await.unwrap();
    assert!(setup.hub.requests().is_empty());

    // Changed content (same size): the recorded sha256 no longer matches, it is fetched again.
    let mut damaged = model.clone();
    damaged[100] ^= 1;
    std::fs::write(&artifact.path, &damaged).unwrap();
    let repaired = models.ensure_present(&request).await.unwrap();
    assert_eq!(std::fs::read(&repaired.path).unwrap(), model);
    assert!(!setup.requests_to("cdn").is_empty());
}

#[tokio::test]
async fn a_url_checksum_mismatch_stages_nothing() {
    let setup = Setup::new().await;
    setup
        .hub
        .publish("org/files", vec![FakeFile::lfs("m.gguf", gguf_of(1000, 4))]);
    let mut request = setup.request(&url(&setup, "m.gguf"));
    request.checksum = Some(Checksum::parse(&format!("sha256:{}", "1".repeat(64))).unwrap());
    let error = setup
        .models(setup.settings())
        .ensure_present(&request)
        .await
        .unwrap_err();
    let text = described(&error);
    assert!(text.contains("checksum mismatch"), "{text}");
    assert_eq!(error.code().exit_code(), 8);
    assert!(
        !tree(&setup.models_dir().join("url"))
            .iter()
            .any(|p| p.contains("v1/")),
        "{:?}",
        tree(&setup.models_dir())
    );
    assert!(!setup.catalog().path().exists());

    let error = setup
        .models(setup.settings())
        .ensure_present(&setup.request(&url(&setup, "absent.gguf")))
        .await
        .unwrap_err();
    let text = described(&error);
    assert!(
        text.contains("404") && text.contains("absent.gguf"),
        "{text}"
    );
    assert!(text.contains("provisioning.model.ref"), "{text}");
}

#[tokio::test]
async fn an_archive_url_is_unpacked_safely() {
    let setup = Setup::new().await;
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in [
        ("model/tiny.gguf", tiny_gguf()),
        ("model/README", b"hi".to_vec()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, path, data.as_slice())
            .unwrap();
    }
    let archive = builder.into_inner().unwrap();
    setup.hub.publish(
        "org/files",
        vec![FakeFile::lfs("model.tar.gz", gzip(&archive))],
    );
    let artifact = setup
        .models(setup.settings())
        .ensure_present(&setup.request(&url(&setup, "model.tar.gz")))
        .await
        .unwrap();
    assert!(artifact.path.is_dir());
    assert_eq!(
        std::fs::read(artifact.path.join("model/tiny.gguf")).unwrap(),
        tiny_gguf()
    );
    let paths: Vec<&str> = artifact.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["model/README", "model/tiny.gguf"]);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn local_files_are_used_in_place_and_recorded() {
    let setup = Setup::new().await;
    let models_dir = setup.models_dir();
    std::fs::create_dir_all(&models_dir).unwrap();
    let file = models_dir.join("tiny.gguf");
    std::fs::write(&file, tiny_gguf()).unwrap();
    let models = setup.models(setup.settings());
    let mut request = setup.request("tiny.gguf");
    request.checksum =
        Some(Checksum::parse(&format!("sha256:{}", sha256_hex(&tiny_gguf()))).unwrap());
    let artifact = models.ensure_present(&request).await.unwrap();
    assert_eq!(artifact.path, std::fs::canonicalize(&file).unwrap());
    let id = artifact.id.clone().unwrap();
    assert_eq!(id, format!("file:{}", artifact.path.display()));
    let entry = setup.catalog().get(&id).unwrap().unwrap();
    assert!(entry.last_verified_ms.is_some());
    assert_eq!(entry.digest.unwrap().value, sha256_hex(&tiny_gguf()));
    let written = std::fs::metadata(setup.catalog().path())
        .unwrap()
        .modified()
        .unwrap();
    models.ensure_present(&request).await.unwrap();
    assert_eq!(
        std::fs::metadata(setup.catalog().path())
            .unwrap()
            .modified()
            .unwrap(),
        written,
        "an unchanged entry is not rewritten"
    );
    // Removing the entry keeps the user's file.
    setup.catalog().remove(&id, &|_| false).await.unwrap();
    assert!(file.exists());

    let error = models
        .ensure_present(&setup.request(&format!(
            "file:{}",
            Path::new("/nonexistent/m.gguf").display()
        )))
        .await
        .unwrap_err();
    assert!(described(&error).contains("does not exist"), "{error}");
    assert!(setup.hub.requests().is_empty());
}

/// A local file without `model.checksum` is hashed once for the catalog: its digest names it,
/// the next prepare reuses the recorded hash, and `verify` catches a changed byte.
#[tokio::test]
async fn a_local_file_is_hashed_once_and_verify_catches_a_changed_byte() {
    let setup = Setup::new().await;
    let models_dir = setup.models_dir();
    std::fs::create_dir_all(&models_dir).unwrap();
    let file = models_dir.join("tiny.gguf");
    std::fs::write(&file, tiny_gguf()).unwrap();
    let models = setup.models(setup.settings());
    let request = setup.request("tiny.gguf");
    let artifact = models.ensure_present(&request).await.unwrap();
    let id = artifact.id.clone().unwrap();
    let entry = setup.catalog().get(&id).unwrap().unwrap();
    assert_eq!(entry.digest.unwrap().value, sha256_hex(&tiny_gguf()));
    assert!(entry.last_verified_ms.is_none(), "nothing was pinned");
    setup.catalog().verify(&id).await.unwrap();

    // One byte changed, the size the same: the warm path keeps the recorded hash, `verify`
    // hashes again and says so.
    let mut changed = tiny_gguf();
    let last = changed.len() - 1;
    changed[last] ^= 0xff;
    std::fs::write(&file, &changed).unwrap();
    models.ensure_present(&request).await.unwrap();
    let error = setup.catalog().verify(&id).await.unwrap_err();
    assert!(described(&error).contains("checksum mismatch"), "{error}");
}
