//! The local model provisioner: models that are already on this host.
//!
//! References are `file:/abs/path`, `file:///abs/path` or a plain path; a relative path or a bare
//! name is looked up in the model cache directory. Remote schemes (`hf:`, `s3:`, `oci:`,
//! `http(s):`) belong to llama-orch's model-provisioner and are refused here with a hint.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use provisioner_core::{
    Algorithm, Checksum, Error, ModelArtifact, ModelProvisioner, ModelRequest, Result,
};
use sha2::Digest;

/// Resolves and verifies models that are present on the local file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalModels;

impl LocalModels {
    /// The local model provisioner.
    pub fn new() -> Self {
        LocalModels
    }
}

#[async_trait]
impl ModelProvisioner for LocalModels {
    async fn ensure_present(&self, request: &ModelRequest) -> Result<ModelArtifact> {
        let reference = request.reference.clone();
        let request = request.clone();
        tokio::task::spawn_blocking(move || ensure_present(&request))
            .await
            .map_err(|error| Error::Model {
                reference,
                message: format!("the model check did not finish: {error}"),
                hint: None,
            })?
    }
}

fn model_error(request: &ModelRequest, message: String, hint: Option<&str>) -> Error {
    Error::Model {
        reference: request.reference.clone(),
        message,
        hint: hint.map(str::to_string),
    }
}

fn ensure_present(request: &ModelRequest) -> Result<ModelArtifact> {
    let path = resolve(request)?;
    let metadata = match fs::metadata(&path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(model_error(
                request,
                format!("{} does not exist", path.display()),
                Some(
                    "put the model file there, or point the model reference at it with file:/absolute/path",
                ),
            ));
        }
        Err(error) => {
            return Err(model_error(
                request,
                format!("cannot read {}: {error}", path.display()),
                None,
            ));
        }
    };
    let path = fs::canonicalize(&path).map_err(|error| {
        model_error(
            request,
            format!("cannot resolve {}: {error}", path.display()),
            None,
        )
    })?;

    let bytes = if metadata.is_file() {
        metadata.len()
    } else if metadata.is_dir() {
        if request.checksum.is_some() {
            return Err(model_error(
                request,
                format!(
                    "{} is a directory; a checksum can only verify a single file",
                    path.display()
                ),
                Some("remove the checksum or point the reference at the model file"),
            ));
        }
        directory_size(&path).map_err(|error| {
            model_error(
                request,
                format!("cannot read {}: {error}", path.display()),
                None,
            )
        })?
    } else {
        return Err(model_error(
            request,
            format!("{} is not a regular file or directory", path.display()),
            None,
        ));
    };

    if let Some(expected) = &request.checksum {
        let actual = digest_file(&path, expected.algorithm).map_err(|error| {
            model_error(
                request,
                format!("cannot read {}: {error}", path.display()),
                None,
            )
        })?;
        if actual.hex != expected.hex {
            return Err(model_error(
                request,
                format!(
                    "checksum mismatch for {}: expected {expected}, actual {actual}",
                    path.display()
                ),
                Some(
                    "the file is damaged or not the configured model; download it again or correct the configured checksum",
                ),
            ));
        }
    }
    Ok(ModelArtifact { path, bytes })
}

/// Turns a reference into a path, refusing schemes this provisioner cannot serve.
fn resolve(request: &ModelRequest) -> Result<PathBuf> {
    let reference = request.reference.trim();
    if reference.is_empty() {
        return Err(model_error(
            request,
            "the model reference is empty".to_string(),
            Some("set the model reference to file:/absolute/path/to/model.gguf"),
        ));
    }
    if let Some(rest) = reference.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(model_error(
                request,
                "a file:// reference needs an absolute path (file:///path); remote hosts are not supported"
                    .to_string(),
                Some("write file:/absolute/path/to/model.gguf"),
            ));
        }
        return Ok(PathBuf::from(rest));
    }
    if let Some(rest) = reference.strip_prefix("file:") {
        return Ok(in_cache(request, rest));
    }
    let plain = in_cache(request, reference);
    if let Some(scheme) = scheme_of(reference)
        && !plain.exists()
    {
        return Err(model_error(
            request,
            format!("scheme `{scheme}` is not supported by the local model provisioner yet"),
            Some(
                "download the model file yourself and set the model reference to file:/absolute/path/to/model.gguf",
            ),
        ));
    }
    Ok(plain)
}

/// An absolute path as it is (`~/` expanded); a relative one inside the model cache.
fn in_cache(request: &ModelRequest, path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        request.cache_dir.join(path)
    }
}

/// The URI scheme of a reference (`hf` in `hf:org/repo/file.gguf`), if it has one.
fn scheme_of(reference: &str) -> Option<&str> {
    let (scheme, _) = reference.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then_some(scheme)
}

fn directory_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                total += entry.metadata()?.len();
            } else if kind.is_symlink() {
                // Model directories often link into a shared blob store; count what they point to.
                if let Ok(target) = fs::metadata(entry.path())
                    && target.is_file()
                {
                    total += target.len();
                }
            }
        }
    }
    Ok(total)
}

/// Hashes a file with the given algorithm, reading it in chunks.
fn digest_file(path: &Path, algorithm: Algorithm) -> std::io::Result<Checksum> {
    let mut file = fs::File::open(path)?;
    let mut buffer = vec![0u8; 1024 * 1024];
    let hex = match algorithm {
        Algorithm::Sha256 => {
            let mut hasher = sha2::Sha256::new();
            read_chunks(&mut file, &mut buffer, |chunk| hasher.update(chunk))?;
            hex::encode(hasher.finalize())
        }
        Algorithm::Sha512 => {
            let mut hasher = sha2::Sha512::new();
            read_chunks(&mut file, &mut buffer, |chunk| hasher.update(chunk))?;
            hex::encode(hasher.finalize())
        }
        Algorithm::Blake3 => {
            let mut hasher = blake3::Hasher::new();
            read_chunks(&mut file, &mut buffer, |chunk| {
                hasher.update(chunk);
            })?;
            hasher.finalize().to_hex().to_string()
        }
    };
    Ok(Checksum { algorithm, hex })
}

fn read_chunks(
    file: &mut fs::File,
    buffer: &mut [u8],
    mut consume: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    loop {
        match file.read(buffer) {
            Ok(0) => return Ok(()),
            Ok(read) => consume(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `printf hello | sha256sum` and friends.
    const HELLO_SHA256: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    const HELLO_SHA512: &str = "9b71d224bd62f3785d96d46ad3ea3d73319bfbc2890caadae2dff72519673ca72323c3d99ba5c11d7c7acc6e14b8c5da0c4663475c2e5c3adef46f73bcdec043";

    fn request(reference: &str, cache: &Path) -> ModelRequest {
        ModelRequest {
            reference: reference.to_string(),
            cache_dir: cache.to_path_buf(),
            checksum: None,
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("tiny.gguf");
        fs::write(&model, "hello").unwrap();
        (dir, model)
    }

    #[tokio::test]
    async fn resolves_file_references_and_plain_paths() {
        let (dir, model) = setup();
        let canonical = fs::canonicalize(&model).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        for reference in [
            format!("file:{}", model.display()),
            format!("file://{}", model.display()),
            model.display().to_string(),
        ] {
            let artifact = LocalModels
                .ensure_present(&request(&reference, elsewhere.path()))
                .await
                .unwrap();
            assert_eq!(artifact.path, canonical, "{reference}");
            assert_eq!(artifact.bytes, 5);
        }
        drop(dir);
    }

    #[tokio::test]
    async fn relative_names_are_found_in_the_cache() {
        let (dir, model) = setup();
        let artifact = LocalModels
            .ensure_present(&request("tiny.gguf", dir.path()))
            .await
            .unwrap();
        assert_eq!(artifact.path, fs::canonicalize(&model).unwrap());
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/shard.bin"), "123").unwrap();
        let artifact = LocalModels
            .ensure_present(&request("sub", dir.path()))
            .await
            .unwrap();
        assert_eq!(artifact.bytes, 3);
    }

    #[tokio::test]
    async fn a_missing_model_names_the_resolved_path() {
        let dir = tempfile::tempdir().unwrap();
        let error = LocalModels
            .ensure_present(&request("absent.gguf", dir.path()))
            .await
            .unwrap_err();
        let expected = dir.path().join("absent.gguf");
        assert!(matches!(error, Error::Model { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("{} does not exist", expected.display())),
            "{message}"
        );
        assert!(error.hint().is_some());
    }

    #[tokio::test]
    async fn remote_schemes_are_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        for (reference, scheme) in [
            ("hf:org/repo/model.gguf", "hf"),
            ("s3://bucket/model.gguf", "s3"),
            ("https://example.com/model.gguf", "https"),
            ("oci:registry/model:tag", "oci"),
        ] {
            let error = LocalModels
                .ensure_present(&request(reference, dir.path()))
                .await
                .unwrap_err();
            let message = error.to_string();
            assert!(
                message.contains(&format!(
                    "scheme `{scheme}` is not supported by the local model provisioner yet"
                )),
                "{message}"
            );
            assert!(error.hint().unwrap().contains("file:/"), "{error:?}");
        }
    }

    #[tokio::test]
    async fn checksums_are_verified() {
        let (dir, _model) = setup();
        for text in [
            format!("sha256:{HELLO_SHA256}"),
            format!("sha512:{HELLO_SHA512}"),
            format!("blake3:{}", blake3::hash(b"hello").to_hex()),
        ] {
            let mut good = request("tiny.gguf", dir.path());
            good.checksum = Some(Checksum::parse(&text).unwrap());
            LocalModels.ensure_present(&good).await.unwrap();
        }

        let wrong = format!("sha256:{}", "0".repeat(64));
        let mut bad = request("tiny.gguf", dir.path());
        bad.checksum = Some(Checksum::parse(&wrong).unwrap());
        let error = LocalModels.ensure_present(&bad).await.unwrap_err();
        let message = error.to_string();
        assert!(message.contains(&format!("expected {wrong}")), "{message}");
        assert!(
            message.contains(&format!("actual sha256:{HELLO_SHA256}")),
            "{message}"
        );
    }

    #[test]
    fn finds_schemes() {
        assert_eq!(scheme_of("hf:org/repo"), Some("hf"));
        assert_eq!(scheme_of("git+https://x"), Some("git+https"));
        assert_eq!(scheme_of("models/a.gguf"), None);
        assert_eq!(scheme_of("/abs/a:b.gguf"), None);
        assert_eq!(scheme_of("9p:x"), None);
    }
}
