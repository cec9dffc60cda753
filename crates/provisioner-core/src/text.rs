//! Small text helpers for what humans read: byte counts and shell-quoted words.

/// Implements `Serialize` as the type's `Display` text and `Deserialize` through its `FromStr`,
/// whose error message becomes the deserializer's: the one way every value with a syntax is
/// written in configs, plans and records.
macro_rules! serde_as_text {
    ($type:ty) => {
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use serde_as_text;

/// Bytes for humans, binary units (`1.5 KiB`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Quotes one word for display (never for execution: nothing here goes through a shell).
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+,@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What leads a printed command that needs root: `sudo ` for a user, nothing for root (a
/// pasted `sudo` fails where sudo is not installed, as in most containers).
pub fn sudo_prefix(as_root: bool) -> &'static str {
    if as_root { "" } else { "sudo " }
}

/// An argv for humans, each word shell-quoted.
pub fn command_line<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words
        .into_iter()
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_for_humans() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(200 * 1024 * 1024), "200.0 MiB");
    }

    #[test]
    fn quoting() {
        assert_eq!(command_line(["a", "b c", "it's"]), r"a 'b c' 'it'\''s'");
    }
}
