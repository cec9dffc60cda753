//! Checksums written as `algorithm:hex` in the configuration.

use serde::{Deserialize, Serialize};

/// Supported digest algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// SHA-256 (64 hex digits).
    Sha256,
    /// SHA-512 (128 hex digits).
    Sha512,
    /// BLAKE3 (64 hex digits); used for the provisioner's own cache.
    Blake3,
}

impl Algorithm {
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 | Algorithm::Blake3 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// The prefix used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::Blake3 => "blake3",
        }
    }
}

/// A parsed checksum, hex in lower case; written and serialised as `algorithm:hex`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[schemars(with = "String")]
pub struct Checksum {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Lower-case hex digest.
    pub hex: String,
}

impl Checksum {
    /// Parses `sha256:…`, `sha512:…` or `blake3:…`.
    pub fn parse(text: &str) -> Result<Checksum, String> {
        let Some((prefix, hex)) = text.split_once(':') else {
            return Err(format!(
                "`{text}` has no algorithm; write sha256:<64 hex>, sha512:<128 hex> or blake3:<64 hex>"
            ));
        };
        let algorithm = match prefix.to_ascii_lowercase().as_str() {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            "blake3" => Algorithm::Blake3,
            other => {
                return Err(format!(
                    "unknown checksum algorithm `{other}`; use sha256, sha512 or blake3"
                ));
            }
        };
        if hex.len() != algorithm.hex_len() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "a {} checksum is {} hex digits, got `{hex}`",
                algorithm.as_str(),
                algorithm.hex_len()
            ));
        }
        Ok(Checksum {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        })
    }

    /// The name what it pins gets in a cache: `<algorithm>-<first 16 hex digits>` (e.g.
    /// `sha256-0123456789abcdef`). Two checksums that share it name one install directory.
    pub fn cache_key(&self) -> String {
        format!(
            "{}-{}",
            self.algorithm.as_str(),
            &self.hex[..16.min(self.hex.len())]
        )
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl std::str::FromStr for Checksum {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Checksum::parse(text)
    }
}

crate::text::serde_as_text!(Checksum);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let sum = Checksum::parse(&format!("SHA256:{}", "A".repeat(64))).unwrap();
        assert_eq!(sum.to_string(), format!("sha256:{}", "a".repeat(64)));
        assert!(
            Checksum::parse("md5:abc")
                .unwrap_err()
                .contains("unknown checksum algorithm")
        );
        assert!(
            Checksum::parse("sha512:abc")
                .unwrap_err()
                .contains("128 hex digits")
        );
        assert!(
            Checksum::parse("deadbeef")
                .unwrap_err()
                .contains("no algorithm")
        );
    }
}
