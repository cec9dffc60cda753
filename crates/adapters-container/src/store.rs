//! Reading podman's image store (containers/storage, overlay driver) right after a pull, so
//! that a cold prepare needs no `podman image inspect` (a runtime process, about 50 ms) to find
//! the pulled image's layer directories and check its digest.
//!
//! The files read (containers/storage `images.go` and `layers.go`): `<graphRoot>/overlay-images/
//! images.json`, a list of `{"id", "digest", "names", "layer"}` (the image ID is the hex of its
//! config digest; `layer` the ID of its top layer), and `<graphRoot>/overlay-layers/layers.json`,
//! a list of `{"id", "parent"}`; a layer's files are in `<graphRoot>/overlay/<id>/diff`. The
//! store writes each file whole and renames it into place, so a read sees one version.
//!
//! This is a fast path only: whatever does not match what is expected (another driver, a file
//! that cannot be read or parsed, an image or layer not found, a digest not recorded) gives
//! `None`, and the caller asks the runtime (`image inspect`) as before.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a podman store keeps its images (from `podman info`: `store.graphRoot`,
/// `store.graphDriverName`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Store {
    pub root: PathBuf,
    pub driver: String,
}

#[derive(Deserialize)]
struct StoredImage {
    id: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    layer: Option<String>,
}

#[derive(Deserialize)]
struct StoredLayer {
    id: String,
    #[serde(default)]
    parent: Option<String>,
}

/// Layers an image may have at most (a longer parent chain is taken as a loop).
const MAX_LAYERS: usize = 512;

impl Store {
    /// From `podman info --format json` output; `None` when it names no store.
    pub fn from_info(info: &serde_json::Value) -> Option<Store> {
        let store = &info["store"];
        Some(Store {
            root: PathBuf::from(store["graphRoot"].as_str().filter(|r| r.starts_with('/'))?),
            driver: store["graphDriverName"].as_str()?.to_string(),
        })
    }

    /// The layer directories (`diff`, the top one first) of the image with ID `id` (64 hex),
    /// when the store records it under `manifest_digest` (its `digest`, or a name ending in
    /// `@<manifest_digest>`) and every layer directory exists.
    pub fn overlay_layers(&self, id: &str, manifest_digest: &str) -> Option<Vec<PathBuf>> {
        if self.driver != "overlay" {
            return None;
        }
        let images: Vec<StoredImage> = read_json(&self.root.join("overlay-images/images.json"))?;
        let image = images.into_iter().find(|image| image.id == id)?;
        let suffix = format!("@{manifest_digest}");
        let recorded = image.digest.as_deref() == Some(manifest_digest)
            || image.names.iter().any(|name| name.ends_with(&suffix));
        if !recorded {
            return None;
        }
        let layers: Vec<StoredLayer> = read_json(&self.root.join("overlay-layers/layers.json"))?;
        let parents: HashMap<&str, Option<&str>> = layers
            .iter()
            .map(|layer| (layer.id.as_str(), layer.parent.as_deref()))
            .collect();
        let mut directories = Vec::new();
        let mut next = image.layer.as_deref();
        while let Some(layer) = next {
            if directories.len() >= MAX_LAYERS || !is_id(layer) {
                return None;
            }
            let directory = self.root.join("overlay").join(layer).join("diff");
            if !directory.is_dir() {
                return None;
            }
            directories.push(directory);
            next = *parents.get(layer)?;
        }
        (!directories.is_empty()).then_some(directories)
    }
}

/// A store ID: 64 lower-case hex digits (never a path).
fn is_id(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let text = adapters_host::read_capped(path, adapters_host::read::MAX_CATALOG).ok()?;
    serde_json::from_str(&text).ok()
}

/// The image ID `podman pull` printed (its last line of standard output: 64 hex digits).
pub(crate) fn pulled_id(stdout: &str) -> Option<&str> {
    stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .filter(|line| is_id(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn store(dir: &Path, images: serde_json::Value, layers: serde_json::Value) -> Store {
        std::fs::create_dir_all(dir.join("overlay-images")).unwrap();
        std::fs::create_dir_all(dir.join("overlay-layers")).unwrap();
        std::fs::write(dir.join("overlay-images/images.json"), images.to_string()).unwrap();
        std::fs::write(dir.join("overlay-layers/layers.json"), layers.to_string()).unwrap();
        Store {
            root: dir.to_path_buf(),
            driver: "overlay".to_string(),
        }
    }

    #[test]
    fn the_layers_of_a_recorded_image_top_first() {
        let dir = tempfile::tempdir().unwrap();
        let (image, top, base) = (id('1'), id('a'), id('b'));
        for layer in [&top, &base] {
            std::fs::create_dir_all(dir.path().join("overlay").join(layer).join("diff")).unwrap();
        }
        let store = store(
            dir.path(),
            serde_json::json!([{"id": image, "digest": "sha256:m", "names": ["r/x@sha256:m"], "layer": top}]),
            serde_json::json!([{"id": base}, {"id": top, "parent": base}]),
        );
        let layers = store.overlay_layers(&image, "sha256:m").unwrap();
        assert_eq!(
            layers,
            vec![
                dir.path().join("overlay").join(&top).join("diff"),
                dir.path().join("overlay").join(&base).join("diff"),
            ]
        );
        // Another digest, another ID, a missing layer directory, another driver: no answer.
        assert_eq!(store.overlay_layers(&image, "sha256:other"), None);
        assert_eq!(store.overlay_layers(&id('2'), "sha256:m"), None);
        std::fs::remove_dir_all(dir.path().join("overlay").join(&base)).unwrap();
        assert_eq!(store.overlay_layers(&image, "sha256:m"), None);
        let vfs = Store {
            driver: "vfs".to_string(),
            ..store
        };
        assert_eq!(vfs.overlay_layers(&image, "sha256:m"), None);
    }

    #[test]
    fn a_parent_loop_or_a_path_as_an_id_gives_no_answer() {
        let dir = tempfile::tempdir().unwrap();
        let (image, a, b) = (id('1'), id('a'), id('b'));
        for layer in [&a, &b] {
            std::fs::create_dir_all(dir.path().join("overlay").join(layer).join("diff")).unwrap();
        }
        let looped = store(
            dir.path(),
            serde_json::json!([{"id": image, "digest": "sha256:m", "layer": a}]),
            serde_json::json!([{"id": a, "parent": b}, {"id": b, "parent": a}]),
        );
        assert_eq!(looped.overlay_layers(&image, "sha256:m"), None);
        let escaping = store(
            dir.path(),
            serde_json::json!([{"id": image, "digest": "sha256:m", "layer": "../../etc"}]),
            serde_json::json!([]),
        );
        assert_eq!(escaping.overlay_layers(&image, "sha256:m"), None);
    }

    #[test]
    fn the_id_is_the_last_line_a_pull_prints() {
        let printed = format!(
            "Getting image source signatures\nWriting manifest\n{}\n",
            id('c')
        );
        assert_eq!(pulled_id(&printed), Some(id('c').as_str()));
        assert_eq!(pulled_id("Error: something\n"), None);
        assert_eq!(pulled_id(""), None);
    }
}
