//! Checking and installing what a build produced: plain file system work, no process.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use provisioner_core::{Backend, Error, Result};

/// Whether `path` is a regular file (after symlinks) with an execute bit.
pub(crate) fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The installed name of an artefact: its file name, under `bin/`.
pub(crate) fn file_name(artifact: &str) -> Option<&str> {
    Path::new(artifact).file_name().and_then(|n| n.to_str())
}

/// Artefacts must be relative paths inside the build tree with distinct file names.
pub(crate) fn check_artifacts(artifacts: &[String]) -> Result<()> {
    let mut names = std::collections::BTreeSet::new();
    for artifact in artifacts {
        let path = Path::new(artifact);
        let inside = !artifact.is_empty()
            && path
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        let name = file_name(artifact);
        if !inside || name.is_none() {
            return Err(Error::BuildCheck {
                message: format!(
                    "artefact `{artifact}` is not a file path inside the build directory"
                ),
                hint: Some(
                    "write artefacts relative to the build dir, e.g. bin/llama-server".into(),
                ),
            });
        }
        if let Some(name) = name
            && !names.insert(name.to_string())
        {
            return Err(Error::BuildCheck {
                message: format!(
                    "two artefacts are named `{name}`; they would overwrite each other in bin/"
                ),
                hint: None,
            });
        }
    }
    Ok(())
}

/// Every artefact is installed under `<dir>/bin/` and executable.
pub(crate) fn installed_ok(dir: &Path, artifacts: &[String]) -> bool {
    artifacts.iter().all(|artifact| {
        file_name(artifact).is_some_and(|name| is_executable(&dir.join("bin").join(name)))
    })
}

/// Fails unless every artefact exists in the build tree.
pub(crate) fn check_built(
    build_dir: &Path,
    artifacts: &[String],
    targets: &[String],
) -> Result<()> {
    for artifact in artifacts {
        let path = build_dir.join(artifact);
        if !path.is_file() {
            return Err(Error::BuildCheck {
                message: format!(
                    "the build finished but did not produce {artifact} (looked for {})",
                    path.display()
                ),
                hint: Some(format!(
                    "check that the targets ({}) build this artefact and that the artefact path is relative to the build directory",
                    targets.join(", ")
                )),
            });
        }
    }
    Ok(())
}

/// The library name fragment that proves a backend was built (`ggml-cuda`, ...).
pub(crate) fn backend_marker(backend: Backend) -> Option<&'static str> {
    match backend {
        Backend::Cpu => None,
        Backend::Cuda => Some("ggml-cuda"),
        Backend::Hip => Some("ggml-hip"),
        Backend::Vulkan => Some("ggml-vulkan"),
    }
}

fn is_library(name: &str) -> bool {
    name.ends_with(".a")
        || name.ends_with(".so")
        || name.contains(".so.")
        || name.ends_with(".dylib")
        || name.ends_with(".dll")
        || name.ends_with(".lib")
}

/// Searches the build tree (without following directory symlinks) for a library whose file name
/// contains `marker`.
pub(crate) fn find_library(root: &Path, marker: &str) -> Option<PathBuf> {
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if name.contains(marker) && is_library(&name) {
                return Some(entry.path());
            }
        }
    }
    None
}

/// Refuses a build that silently fell back to CPU.
pub(crate) fn check_backend(build_dir: &Path, backend: Backend, log: &Path) -> Result<()> {
    let Some(marker) = backend_marker(backend) else {
        return Ok(());
    };
    if find_library(build_dir, marker).is_some() {
        return Ok(());
    }
    Err(Error::BuildCheck {
        message: format!(
            "asked for {backend} but the build produced no {backend} backend; refusing to install a CPU-only build"
        ),
        hint: Some(format!(
            "make sure the flags enable the backend (e.g. -DGGML_{}=ON) and that its toolkit is installed; the configure output in {} says why it was left out",
            backend.as_str().to_ascii_uppercase(),
            log.display()
        )),
    })
}

fn copy_entry(from: &Path, to: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(from).map_err(|e| Error::io("inspect", from, e))?;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(from).map_err(|e| Error::io("read link", from, e))?;
        // Sibling links (libfoo.so -> libfoo.so.0) stay links; anything else is copied.
        if target.components().count() == 1 {
            let _ = fs::remove_file(to);
            return std::os::unix::fs::symlink(&target, to).map_err(|e| Error::io("link", to, e));
        }
    }
    // fs::copy follows symlinks and keeps the permission bits (the executable bit included).
    fs::copy(from, to).map_err(|e| Error::io("copy", from, e))?;
    Ok(())
}

/// Copies every artefact into `<out>/bin/`, with the shared libraries (`lib*.so*`) found beside it.
pub(crate) fn install(build_dir: &Path, artifacts: &[String], out: &Path) -> Result<()> {
    let bin = out.join("bin");
    fs::create_dir_all(&bin).map_err(|e| Error::io("create", &bin, e))?;
    let mut lib_dirs = std::collections::BTreeSet::new();
    for artifact in artifacts {
        let from = build_dir.join(artifact);
        let name = file_name(artifact).unwrap_or(artifact);
        copy_entry(&from, &bin.join(name))?;
        if let Some(parent) = from.parent() {
            lib_dirs.insert(parent.to_path_buf());
        }
    }
    for dir in lib_dirs {
        let entries = fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_shared =
                name.starts_with("lib") && (name.ends_with(".so") || name.contains(".so."));
            let target = bin.join(name.as_ref());
            if is_shared && fs::symlink_metadata(&target).is_err() {
                copy_entry(&entry.path(), &target)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"x").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn artefact_paths_must_stay_inside_the_build_tree() {
        assert!(check_artifacts(&["bin/llama-server".into()]).is_ok());
        for bad in ["../x", "/usr/bin/x", "", "bin/.."] {
            assert!(check_artifacts(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(check_artifacts(&["a/x".into(), "b/x".into()]).is_err());
    }

    #[test]
    fn installs_artefacts_and_their_shared_libraries() {
        let dir = tempfile::tempdir().unwrap();
        let build = dir.path().join("build");
        touch(&build.join("bin/server"), 0o755);
        touch(&build.join("bin/libggml.so.0.1"), 0o644);
        std::os::unix::fs::symlink("libggml.so.0.1", build.join("bin/libggml.so")).unwrap();
        touch(&build.join("bin/notes.txt"), 0o644);
        let out = dir.path().join("out");
        let artifacts = vec!["bin/server".to_string()];
        check_built(&build, &artifacts, &[]).unwrap();
        install(&build, &artifacts, &out).unwrap();
        assert!(is_executable(&out.join("bin/server")));
        assert!(out.join("bin/libggml.so.0.1").is_file());
        assert_eq!(
            fs::read_link(out.join("bin/libggml.so")).unwrap(),
            Path::new("libggml.so.0.1")
        );
        assert!(!out.join("bin/notes.txt").exists());
        assert!(installed_ok(&out, &artifacts));
        fs::set_permissions(out.join("bin/server"), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!installed_ok(&out, &artifacts));
        assert!(check_built(&build, &["bin/other".into()], &[]).is_err());
    }

    #[test]
    fn a_gpu_backend_needs_its_library() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        touch(&dir.path().join("ggml/src/libggml-cpu.so"), 0o755);
        assert!(check_backend(dir.path(), Backend::Cpu, &log).is_ok());
        let err = check_backend(dir.path(), Backend::Cuda, &log).unwrap_err();
        assert!(
            err.to_string()
                .contains("refusing to install a CPU-only build")
        );
        touch(&dir.path().join("ggml/src/ggml-cuda/libggml-cuda.a"), 0o644);
        assert!(check_backend(dir.path(), Backend::Cuda, &log).is_ok());
        assert!(check_backend(dir.path(), Backend::Vulkan, &log).is_err());
    }
}
