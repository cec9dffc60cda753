//! Cheap header checks of model files, so that a truncated or mislabelled file is an error at
//! prepare (naming the file) rather than an engine crash at `up`. Bounded reads only: at most
//! 24 bytes of a GGUF file, 8 bytes plus one of a safetensors file.
//!
//! - GGUF (<https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>): the magic `GGUF`
//!   (bytes `47 47 55 46`), then the version as a little-endian `u32`; versions 2 and 3 are the
//!   ones current readers load (version 1 was dropped by llama.cpp in 2023). Then the tensor
//!   count and the metadata key/value count as little-endian `u64`s, which must be present.
//! - safetensors (<https://huggingface.co/docs/safetensors/index>, "Format"): an 8-byte
//!   little-endian `u64` N, then N bytes of JSON header starting with `{`; N must fit inside the
//!   file (the format caps the header at 100 MB).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The header of an empty GGUF version 3 file (magic, version, no tensors, no metadata): the
/// least that passes [`check_header`]. Tests stage it where no engine reads the model.
pub const EMPTY_GGUF: [u8; 24] = *b"GGUF\x03\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

/// GGUF versions accepted.
pub const GGUF_VERSIONS: [u32; 2] = [2, 3];
/// The largest safetensors header the format allows (100 MB, as the reference reader).
pub const SAFETENSORS_MAX_HEADER: u64 = 100_000_000;

/// Checks the header of a `.gguf` or `.safetensors` file (by extension, any case); other files
/// pass unread. The error says what is wrong, without the path (the caller adds it).
pub fn check_header(path: &Path) -> Result<(), String> {
    check_header_as(path, &path.to_string_lossy())
}

/// Checks the header of `path` as the kind of file `name` names by its extension (a blob in the
/// Hugging Face cache has no extension of its own; its repository path has).
pub fn check_header_as(path: &Path, name: &str) -> Result<(), String> {
    let extension = Path::new(name)
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("gguf") => check_gguf(path),
        Some("safetensors") => check_safetensors(path),
        _ => Ok(()),
    }
}

fn read_prefix(path: &Path, len: usize) -> Result<(Vec<u8>, u64, File), String> {
    let mut file = File::open(path).map_err(|error| format!("cannot open it: {error}"))?;
    let size = file
        .metadata()
        .map_err(|error| format!("cannot inspect it: {error}"))?
        .len();
    let mut bytes = Vec::with_capacity(len);
    (&mut file)
        .take(len as u64)
        .read_to_end(&mut bytes)
        .map_err(|error| format!("cannot read it: {error}"))?;
    Ok((bytes, size, file))
}

fn check_gguf(path: &Path) -> Result<(), String> {
    let (bytes, size, _) = read_prefix(path, 24)?;
    if bytes.len() < 4 || &bytes[..4] != b"GGUF" {
        return Err(format!(
            "not a GGUF file: it does not start with the magic `GGUF` ({size} bytes)"
        ));
    }
    if bytes.len() < 24 {
        return Err(format!(
            "a truncated GGUF file: {size} bytes, too short for its header"
        ));
    }
    let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if !GGUF_VERSIONS.contains(&version) {
        return Err(format!(
            "GGUF version {version} is not supported (supported: 2, 3)"
        ));
    }
    Ok(())
}

fn check_safetensors(path: &Path) -> Result<(), String> {
    let (bytes, size, mut file) = read_prefix(path, 8)?;
    if bytes.len() < 8 {
        return Err(format!(
            "a truncated safetensors file: {size} bytes, too short for its header length"
        ));
    }
    let mut length = [0u8; 8];
    length.copy_from_slice(&bytes);
    let header = u64::from_le_bytes(length);
    if header == 0 || header > SAFETENSORS_MAX_HEADER || header > size - 8 {
        return Err(format!(
            "not a valid safetensors file: its header length {header} does not fit a {size}-byte file"
        ));
    }
    let mut first = [0u8; 1];
    file.seek(SeekFrom::Start(8))
        .and_then(|_| file.read_exact(&mut first))
        .map_err(|error| format!("cannot read it: {error}"))?;
    if first[0] != b'{' {
        return Err("not a valid safetensors file: its header is not a JSON object".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn gguf(version: u32) -> Vec<u8> {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(version.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes
    }

    #[test]
    fn gguf_headers() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_header(&write(dir.path(), "a.gguf", &gguf(3))).is_ok());
        assert_eq!(EMPTY_GGUF.to_vec(), gguf(3));
        assert!(check_header(&write(dir.path(), "b.GGUF", &gguf(2))).is_ok());
        let error = check_header(&write(dir.path(), "c.gguf", &gguf(1))).unwrap_err();
        assert!(error.contains("version 1"), "{error}");
        let error = check_header(&write(dir.path(), "d.gguf", b"<html>")).unwrap_err();
        assert!(error.contains("magic"), "{error}");
        let error = check_header(&write(dir.path(), "e.gguf", &gguf(3)[..10])).unwrap_err();
        assert!(error.contains("truncated"), "{error}");
        assert!(check_header(&write(dir.path(), "f.json", b"x")).is_ok());
    }

    #[test]
    fn safetensors_headers() {
        let dir = tempfile::tempdir().unwrap();
        let json = br#"{"__metadata__":{}}"#;
        let mut good = (json.len() as u64).to_le_bytes().to_vec();
        good.extend(json);
        assert!(check_header(&write(dir.path(), "a.safetensors", &good)).is_ok());
        let mut long = (1000u64).to_le_bytes().to_vec();
        long.extend(json);
        let error = check_header(&write(dir.path(), "b.safetensors", &long)).unwrap_err();
        assert!(error.contains("header length 1000"), "{error}");
        let mut array = 2u64.to_le_bytes().to_vec();
        array.extend(b"[]");
        let error = check_header(&write(dir.path(), "c.safetensors", &array)).unwrap_err();
        assert!(error.contains("JSON object"), "{error}");
        let error = check_header(&write(dir.path(), "d.safetensors", b"abc")).unwrap_err();
        assert!(error.contains("truncated"), "{error}");
    }
}
