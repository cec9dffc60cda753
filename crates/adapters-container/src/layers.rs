//! The backend of a local image, read from its layers on the host without running it.
//!
//! `image inspect` names the storage driver and, for overlay storage (podman's `overlay`,
//! docker's `overlay2`), the layer directories on the host: `GraphDriver.Data.UpperDir` (the top
//! layer) and `LowerDir` (the others, top first, `:`-separated). They are readable by the user
//! for rootless storage and by root for rootful storage. The image's file system is those layers
//! merged, so a name is what the top-most layer holding it says: a file, or a whiteout (a
//! character device 0/0, or a `.wh.<name>` file) that deletes it and everything below it; an
//! opaque directory (marked by a `.wh..wh..opq` file) hides what lower layers hold in it. The
//! ggml libraries (`libggml-*.so*`) are looked for in the image's working directory, `/app`
//! (where llama.cpp's images keep them), the library directories and `/opt`, a few levels deep;
//! symbolic links are never followed (they point into the image, not the host).
//!
//! Storage that is not overlay (vfs, docker's containerd snapshotter, which shows no layer
//! directories) or that this user cannot read gives `unknown`, with the reason. Directories
//! marked opaque only by an extended attribute (`trusted.overlay.opaque`) are not recognised as
//! opaque: their lower layers' ggml libraries would still count.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use provisioner_core::BackendFinding;

/// Directories of the image searched for ggml libraries (besides its working directory).
pub const LIBRARY_DIRS: &[&str] = &[
    "/app",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/usr/local/lib64",
    "/lib",
    "/lib64",
    "/opt",
];

/// How deep below each searched directory the scan goes (`/usr/lib/x86_64-linux-gnu/ggml/…`).
pub const DEPTH: usize = 3;

/// Entries read per layer at most, so that a huge image costs a bounded time.
const MAX_ENTRIES: usize = 200_000;

/// Where an image's files are on the host, from its `image inspect` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageLayers {
    /// Overlay layer directories, the top one first, and the image's working directory.
    Overlay {
        /// Layer directories (`diff`), the top one first.
        layers: Vec<PathBuf>,
        /// `Config.WorkingDir`, when set.
        working_dir: Option<String>,
    },
    /// The layers cannot be read from here: why.
    Unreadable(String),
}

impl ImageLayers {
    /// Reads `GraphDriver` and `Config.WorkingDir` of one image of `image inspect` output.
    pub fn from_inspect(image: &serde_json::Value) -> ImageLayers {
        let driver = &image["GraphDriver"];
        let Some(name) = driver["Name"].as_str() else {
            return ImageLayers::Unreadable(
                "the runtime shows no storage driver for it (docker's containerd image store shows none)"
                    .to_string(),
            );
        };
        if name != "overlay" && name != "overlay2" {
            return ImageLayers::Unreadable(format!(
                "its storage driver is {name}, whose layers are not read (only overlay's are)"
            ));
        }
        let data = &driver["Data"];
        let mut layers: Vec<PathBuf> = Vec::new();
        if let Some(upper) = data["UpperDir"].as_str().filter(|dir| !dir.is_empty()) {
            layers.push(PathBuf::from(upper));
        }
        if let Some(lower) = data["LowerDir"].as_str() {
            layers.extend(
                lower
                    .split(':')
                    .filter(|dir| !dir.is_empty())
                    .map(PathBuf::from),
            );
        }
        if layers.is_empty() {
            return ImageLayers::Unreadable(format!(
                "the runtime names no layer directories for its {name} storage"
            ));
        }
        let working_dir = image["Config"]["WorkingDir"]
            .as_str()
            .filter(|dir| dir.starts_with('/'))
            .map(str::to_string);
        ImageLayers::Overlay {
            layers,
            working_dir,
        }
    }

    /// The backend the image's ggml libraries show (see the module documentation).
    pub fn backend(&self) -> BackendFinding {
        const PLACE: &str = "the image's files (read from its layers)";
        match self {
            ImageLayers::Unreadable(why) => {
                BackendFinding::unknown(format!("the image's files were not read: {why}"))
            }
            ImageLayers::Overlay {
                layers,
                working_dir,
            } => {
                let mut dirs: Vec<&str> = Vec::new();
                if let Some(dir) = working_dir {
                    dirs.push(dir);
                }
                dirs.extend(LIBRARY_DIRS.iter().copied());
                match ggml_libraries(layers, &dirs) {
                    Ok(files) => BackendFinding::from_evidence(&files, PLACE, None),
                    Err(why) => {
                        BackendFinding::unknown(format!("the image's files were not read: {why}"))
                    }
                }
            }
        }
    }
}

/// What the top-most layer holding a path says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// A ggml library.
    Library,
    /// Deleted (a whiteout), or replaced by something that is not a directory: nothing of it
    /// or below it in lower layers shows.
    Gone,
    /// An opaque directory: nothing below it in lower layers shows.
    Opaque,
    /// Anything else (a directory, another file).
    Other,
}

/// The `libggml-*.so*` files of the merged image under `dirs` (image paths), as image paths.
pub fn ggml_libraries(layers: &[PathBuf], dirs: &[&str]) -> Result<Vec<PathBuf>, String> {
    let mut decided: BTreeMap<PathBuf, Seen> = BTreeMap::new();
    let roots: BTreeSet<PathBuf> = dirs
        .iter()
        .map(|dir| {
            Path::new(dir)
                .components()
                .filter(|c| matches!(c, std::path::Component::Normal(_)))
                .collect::<PathBuf>()
        })
        .collect();
    for layer in layers {
        std::fs::read_dir(layer).map_err(|e| format!("cannot read {}: {e}", layer.display()))?;
        let mut seen_here: Vec<(PathBuf, Seen)> = Vec::new();
        let mut budget = MAX_ENTRIES;
        for root in &roots {
            // The directories leading to the searched one can delete or hide it too.
            let mut prefix = PathBuf::new();
            for component in root.components() {
                prefix.push(component);
                if let Some(kind) = classify(layer, &prefix) {
                    seen_here.push((prefix.clone(), kind));
                }
            }
            scan(layer, root, DEPTH, &mut budget, &mut seen_here)?;
        }
        // Judged against the layers above only: an opaque directory hides lower layers, not
        // its own contents.
        let mut this_layer: BTreeMap<PathBuf, Seen> = BTreeMap::new();
        for (path, kind) in seen_here {
            if hidden(&decided, &path) || decided.contains_key(&path) {
                continue;
            }
            this_layer.entry(path).or_insert(kind);
        }
        decided.extend(this_layer);
    }
    Ok(decided
        .into_iter()
        .filter(|(_, kind)| *kind == Seen::Library)
        .map(|(path, _)| Path::new("/").join(path))
        .collect())
}

/// Whether an upper layer deleted or made opaque a directory above `path` (or deleted `path`).
fn hidden(decided: &BTreeMap<PathBuf, Seen>, path: &Path) -> bool {
    path.ancestors()
        .skip(1)
        .any(|above| matches!(decided.get(above), Some(Seen::Gone | Seen::Opaque)))
}

/// What `layer` holds at the image path `relative`, without following links: `None` when it
/// holds nothing there.
fn classify(layer: &Path, relative: &Path) -> Option<Seen> {
    let name = relative.file_name()?.to_str()?;
    let parent = relative.parent().unwrap_or(Path::new(""));
    if std::fs::symlink_metadata(layer.join(parent).join(format!(".wh.{name}"))).is_ok() {
        return Some(Seen::Gone);
    }
    let metadata = std::fs::symlink_metadata(layer.join(relative)).ok()?;
    let file_type = metadata.file_type();
    if file_type.is_char_device() && metadata.rdev() == 0 {
        return Some(Seen::Gone);
    }
    if file_type.is_dir() {
        let opaque = layer.join(relative).join(".wh..wh..opq");
        return Some(if std::fs::symlink_metadata(opaque).is_ok() {
            Seen::Opaque
        } else {
            Seen::Other
        });
    }
    if is_ggml_library(name) {
        return Some(Seen::Library);
    }
    // A file or link in place of a directory hides what lower layers hold below it.
    Some(Seen::Gone)
}

fn is_ggml_library(name: &str) -> bool {
    name.starts_with("libggml-") && (name.ends_with(".so") || name.contains(".so."))
}

/// Records what `layer` holds below the image directory `relative`, `depth` levels deep.
fn scan(
    layer: &Path,
    relative: &Path,
    depth: usize,
    budget: &mut usize,
    seen: &mut Vec<(PathBuf, Seen)>,
) -> Result<(), String> {
    let dir = layer.join(relative);
    // Only a real directory of this layer is read (never through a link).
    if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        if *budget == 0 {
            return Ok(());
        }
        *budget -= 1;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == ".wh..wh..opq" {
            continue;
        }
        if let Some(deleted) = name.strip_prefix(".wh.") {
            seen.push((relative.join(deleted), Seen::Gone));
            continue;
        }
        let child = relative.join(name);
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            let opaque = std::fs::symlink_metadata(layer.join(&child).join(".wh..wh..opq")).is_ok();
            seen.push((
                child.clone(),
                if opaque { Seen::Opaque } else { Seen::Other },
            ));
            if depth > 1 {
                scan(layer, &child, depth - 1, budget, seen)?;
            }
        } else if file_type.is_char_device() {
            let gone = std::fs::symlink_metadata(layer.join(&child)).is_ok_and(|m| m.rdev() == 0);
            seen.push((child, if gone { Seen::Gone } else { Seen::Other }));
        } else if is_ggml_library(name) {
            seen.push((child, Seen::Library));
        } else {
            seen.push((child, Seen::Other));
        }
    }
    Ok(())
}

/// The backend of an image whose inspect object is `image`.
pub fn image_backend(image: &serde_json::Value) -> BackendFinding {
    ImageLayers::from_inspect(image).backend()
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisioner_core::FoundBackend;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }

    #[test]
    fn inspect_objects_of_overlay_and_other_storage() {
        let podman = serde_json::json!({
            "Config": {"WorkingDir": "/app"},
            "GraphDriver": {"Name": "overlay", "Data": {
                "UpperDir": "/s/overlay/c/diff",
                "LowerDir": "/s/overlay/b/diff:/s/overlay/a/diff",
                "WorkDir": "/s/overlay/c/work"}}
        });
        assert_eq!(
            ImageLayers::from_inspect(&podman),
            ImageLayers::Overlay {
                layers: [
                    "/s/overlay/c/diff",
                    "/s/overlay/b/diff",
                    "/s/overlay/a/diff"
                ]
                .map(PathBuf::from)
                .to_vec(),
                working_dir: Some("/app".to_string()),
            }
        );
        let vfs = serde_json::json!({"GraphDriver": {"Name": "vfs", "Data": null}});
        let ImageLayers::Unreadable(why) = ImageLayers::from_inspect(&vfs) else {
            panic!("vfs read as overlay");
        };
        assert!(why.contains("vfs"), "{why}");
        let found = image_backend(&serde_json::json!({"Id": "x"}));
        assert_eq!(found.backend, FoundBackend::Unknown);
        assert!(found.how.contains("no storage driver"), "{}", found.how);
    }

    #[test]
    fn the_top_most_layer_decides_and_whiteouts_delete() {
        let dir = tempfile::tempdir().unwrap();
        let (top, middle, bottom) = (
            dir.path().join("top"),
            dir.path().join("middle"),
            dir.path().join("bottom"),
        );
        for layer in [&top, &middle, &bottom] {
            std::fs::create_dir_all(layer).unwrap();
        }
        touch(&bottom.join("app/libggml-cuda.so"));
        touch(&bottom.join("app/libggml-base.so"));
        touch(&bottom.join("app/libggml-cpu-haswell.so"));
        touch(&bottom.join("usr/lib/x86_64-linux-gnu/libggml-vulkan.so.0"));
        touch(&bottom.join("srv/libggml-hip.so"));
        let layers = vec![top.clone(), middle.clone(), bottom.clone()];
        let dirs = ["/app", "/usr/lib"];

        let found = ggml_libraries(&layers, &dirs).unwrap();
        assert!(
            found.contains(&PathBuf::from("/app/libggml-cuda.so")),
            "{found:?}"
        );
        assert!(
            found.contains(&PathBuf::from(
                "/usr/lib/x86_64-linux-gnu/libggml-vulkan.so.0"
            )),
            "{found:?}"
        );
        assert!(!found.iter().any(|p| p.starts_with("/srv")), "{found:?}");

        // A whiteout file in a higher layer deletes the CUDA library.
        touch(&middle.join("app/.wh.libggml-cuda.so"));
        let found = ggml_libraries(&layers, &dirs).unwrap();
        assert!(
            !found.contains(&PathBuf::from("/app/libggml-cuda.so")),
            "{found:?}"
        );
        assert!(
            found.contains(&PathBuf::from("/app/libggml-base.so")),
            "{found:?}"
        );

        // A file re-added above the whiteout shows again.
        touch(&top.join("app/libggml-cuda.so"));
        let found = ggml_libraries(&layers, &dirs).unwrap();
        assert!(
            found.contains(&PathBuf::from("/app/libggml-cuda.so")),
            "{found:?}"
        );

        // An opaque /usr/lib above hides the Vulkan library below it.
        touch(&top.join("usr/lib/.wh..wh..opq"));
        let found = ggml_libraries(&layers, &dirs).unwrap();
        assert!(
            !found
                .iter()
                .any(|p| p.starts_with("/usr/lib/x86_64-linux-gnu")),
            "{found:?}"
        );

        // A deleted /app deletes everything in it below.
        let gone = dir.path().join("gone");
        touch(&gone.join(".wh.app"));
        let found = ggml_libraries(&[gone, middle.clone(), bottom.clone()], &["/app"]).unwrap();
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn links_are_not_followed_out_of_the_layer() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        let outside = dir.path().join("outside");
        touch(&outside.join("libggml-cuda.so"));
        std::fs::create_dir_all(&layer).unwrap();
        std::os::unix::fs::symlink(&outside, layer.join("app")).unwrap();
        assert!(ggml_libraries(&[layer], &["/app"]).unwrap().is_empty());
    }

    #[test]
    fn what_the_libraries_show() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("l");
        touch(&layer.join("app/libggml-base.so"));
        touch(&layer.join("app/libggml-cpu-haswell.so"));
        let overlay = |working_dir: Option<&str>| ImageLayers::Overlay {
            layers: vec![layer.clone()],
            working_dir: working_dir.map(str::to_string),
        };
        assert_eq!(overlay(None).backend().backend, FoundBackend::Cpu);
        touch(&layer.join("app/libggml-cuda.so"));
        let cuda = overlay(None).backend();
        assert_eq!(cuda.backend, FoundBackend::Cuda);
        assert!(cuda.how.contains("libggml-cuda.so"), "{}", cuda.how);
        touch(&layer.join("srv/llama/libggml-vulkan.so"));
        assert_eq!(
            overlay(Some("/srv/llama")).backend().gpus,
            vec![FoundBackend::Cuda, FoundBackend::Vulkan]
        );
        let missing = ImageLayers::Overlay {
            layers: vec![dir.path().join("nope")],
            working_dir: None,
        };
        let found = missing.backend();
        assert_eq!(found.backend, FoundBackend::Unknown);
        assert!(found.how.contains("cannot read"), "{}", found.how);
    }
}
