//! The local model provisioner: models that are already on this host.
//!
//! References are `file:/abs/path`, `file:///abs/path` or a plain path; a relative path or a bare
//! name is looked up in the models directory. Remote schemes (`hf:`, `https:`, `s3:`, `oci:`)
//! are not staged by this version: they are refused with exit 8 and a hint.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use provisioner_core::{
    Algorithm, Checksum, Error, ModelArtifact, ModelProvisioner, ModelRef, ModelRequest, Result,
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
                reference: reference.to_string(),
                message: format!("the model check did not finish: {error}"),
                hint: None,
            })?
    }
}

fn model_error(request: &ModelRequest, message: String, hint: Option<&str>) -> Error {
    Error::Model {
        reference: request.reference.to_string(),
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
                    "put the model file there, or set provisioning.model.ref to file:/absolute/path/to/the/model",
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
    Ok(ModelArtifact::local(path, bytes))
}

/// Turns a reference into a path, refusing the schemes this version cannot stage yet.
fn resolve(request: &ModelRequest) -> Result<PathBuf> {
    match &request.reference {
        ModelRef::File(path) => Ok(path.clone()),
        ModelRef::Relative(path) => Ok(in_models_dir(request, path)),
        remote @ (ModelRef::HuggingFace(_)
        | ModelRef::Url(_)
        | ModelRef::S3(_)
        | ModelRef::Oci(_)) => Err(model_error(
            request,
            format!(
                "the {}: scheme is not supported yet: this version stages models from local files only",
                remote.scheme()
            ),
            Some(
                "download the model yourself and set provisioning.model.ref to file:/absolute/path/to/the/model",
            ),
        )),
    }
}

/// A relative path inside the models directory (`~/` expanded against HOME).
fn in_models_dir(request: &ModelRequest, path: &Path) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    request.models_dir.join(path)
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

    fn request(reference: &str, models_dir: &Path) -> ModelRequest {
        ModelRequest {
            reference: reference.parse().unwrap(),
            models_dir: models_dir.to_path_buf(),
            checksum: None,
            include: Vec::new(),
            exclude: Vec::new(),
            refresh: false,
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
            ("oci://registry/model:tag", "oci"),
        ] {
            let error = LocalModels
                .ensure_present(&request(reference, dir.path()))
                .await
                .unwrap_err();
            let message = error.to_string();
            assert!(
                message.contains(&format!("the {scheme}: scheme is not supported yet")),
                "{message}"
            );
            assert!(error.hint().unwrap().contains("file:/"), "{error:?}");
            assert_eq!(error.code().exit_code(), 8);
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
}
