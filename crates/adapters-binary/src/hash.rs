//! Incremental hashing with the algorithms a [`Checksum`] can name.

use std::io::Read;
use std::path::Path;

use provisioner_core::{Algorithm, Checksum, Error, Result};

/// Size of the fixed buffers used for streaming (downloads, hashing, unpacking).
pub(crate) const BUFFER_SIZE: usize = 64 * 1024;

/// A running digest of one of the supported algorithms. SHA-2 is `ring`'s (the assembly of
/// BoringSSL, with SHA-NI or AVX2 where the CPU has them): about twice the pure-Rust speed on
/// CPUs without SHA-NI, so that hashing keeps up with a loopback download.
#[derive(Clone)]
pub(crate) enum StreamHasher {
    Sha256(ring::digest::Context),
    Sha512(ring::digest::Context),
    Blake3(Box<blake3::Hasher>),
}

impl StreamHasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => {
                StreamHasher::Sha256(ring::digest::Context::new(&ring::digest::SHA256))
            }
            Algorithm::Sha512 => {
                StreamHasher::Sha512(ring::digest::Context::new(&ring::digest::SHA512))
            }
            Algorithm::Blake3 => StreamHasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            StreamHasher::Sha256(_) => Algorithm::Sha256,
            StreamHasher::Sha512(_) => Algorithm::Sha512,
            StreamHasher::Blake3(_) => Algorithm::Blake3,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            StreamHasher::Sha256(hasher) => hasher.update(bytes),
            StreamHasher::Sha512(hasher) => hasher.update(bytes),
            StreamHasher::Blake3(hasher) => {
                hasher.update(bytes);
            }
        }
    }

    pub fn finish(self) -> Checksum {
        let algorithm = self.algorithm();
        let hex = match self {
            StreamHasher::Sha256(hasher) | StreamHasher::Sha512(hasher) => {
                hex::encode(hasher.finish().as_ref())
            }
            StreamHasher::Blake3(hasher) => hasher.finalize().to_hex().to_string(),
        };
        Checksum { algorithm, hex }
    }
}

/// Hashes a file with a fixed-size buffer; returns the checksum and the size.
pub fn hash_file(path: &Path, algorithm: Algorithm) -> Result<(Checksum, u64)> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut hasher = StreamHasher::new(algorithm);
    let mut buffer = vec![0u8; BUFFER_SIZE];
    let mut bytes = 0u64;
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(Error::io("read", path, error)),
        };
        hasher.update(&buffer[..read]);
        bytes += read as u64;
    }
    Ok((hasher.finish(), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let digest = |algorithm| {
            let mut hasher = StreamHasher::new(algorithm);
            hasher.update(b"ab");
            hasher.update(b"c");
            hasher.finish()
        };
        assert_eq!(
            digest(Algorithm::Sha256).to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            digest(Algorithm::Sha512).to_string(),
            "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        assert_eq!(
            digest(Algorithm::Blake3).to_string(),
            "blake3:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }
}
