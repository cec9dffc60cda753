//! Property test of the unpacker: tar archives of arbitrary entries (files, directories,
//! symbolic and hard links, with paths and link targets holding `..`, `.`, empty components
//! and leading `/`) are unpacked into `base/dest`, accepted or not, and afterwards nothing
//! exists outside `dest`, no symbolic link inside it resolves outside it (following the links
//! the archive made, as the kernel would), and no hard link reaches a file outside it.
//!
//! 256 cases by default (each writes to disk); `PROPTEST_CASES` raises them.

mod support;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use adapters_binary::unpack;
use proptest::prelude::*;
use provisioner_core::{ArchiveFormat, Error, UnpackLimits};
use support::{gzip, raw_header, raw_tar};
use tar::EntryType;

#[derive(Debug, Clone)]
enum Kind {
    File,
    Dir,
    Symlink(String),
    Hardlink(String),
}

fn path_text() -> impl Strategy<Value = String> {
    let component = proptest::sample::select(vec!["a", "b", "l", "..", ".", ""]);
    (
        proptest::sample::select(vec!["", "", "", "/", "./", "../"]),
        proptest::collection::vec(component, 1..5),
    )
        .prop_map(|(lead, parts)| format!("{lead}{}", parts.join("/")))
}

fn entry() -> impl Strategy<Value = (String, Kind)> {
    (
        path_text(),
        prop_oneof![
            2 => Just(Kind::File),
            1 => Just(Kind::Dir),
            3 => path_text().prop_map(Kind::Symlink),
            1 => path_text().prop_map(Kind::Hardlink),
        ],
    )
}

fn tar_of(entries: &[(String, Kind)]) -> Vec<u8> {
    let headers: Vec<(tar::Header, Vec<u8>)> = entries
        .iter()
        .map(|(path, kind)| match kind {
            Kind::File => (
                raw_header(path.as_bytes(), EntryType::Regular, 2, 0o644, None),
                b"x\n".to_vec(),
            ),
            Kind::Dir => (
                raw_header(path.as_bytes(), EntryType::Directory, 0, 0o755, None),
                Vec::new(),
            ),
            Kind::Symlink(target) => (
                raw_header(
                    path.as_bytes(),
                    EntryType::Symlink,
                    0,
                    0o777,
                    Some(target.as_bytes()),
                ),
                Vec::new(),
            ),
            Kind::Hardlink(target) => (
                raw_header(
                    path.as_bytes(),
                    EntryType::Link,
                    0,
                    0o644,
                    Some(target.as_bytes()),
                ),
                Vec::new(),
            ),
        })
        .collect();
    raw_tar(&headers)
}

/// Resolves `target` from the directory `at` (components under `dest`) the way the kernel
/// would, following the symbolic links found on the way; `Err` with the path when it leaves
/// `dest`. Loops (more than 40 links) and missing entries end the walk inside.
fn resolve(
    dest: &Path,
    mut at: Vec<PathBuf>,
    target: &Path,
    hops: &mut u32,
) -> Result<Vec<PathBuf>, String> {
    for component in target.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => {
                return Err(format!("absolute target {}", target.display()));
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if at.pop().is_none() {
                    return Err(format!("{} climbs above dest", target.display()));
                }
            }
            Component::Normal(name) => {
                at.push(PathBuf::from(name));
                let here: PathBuf = at.iter().collect();
                let full = dest.join(&here);
                let Ok(metadata) = std::fs::symlink_metadata(&full) else {
                    return Ok(at);
                };
                if metadata.file_type().is_symlink() {
                    *hops += 1;
                    if *hops > 40 {
                        return Ok(at);
                    }
                    let link = std::fs::read_link(&full).unwrap();
                    at.pop();
                    at = resolve(dest, at, &link, hops)?;
                }
            }
        }
    }
    Ok(at)
}

/// Every path under `dir`, links not followed.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.clone());
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            walk(&path, out);
        }
    }
}

fn check_contained(base: &Path, dest: &Path) -> Result<(), String> {
    let outside: Vec<String> = std::fs::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "dest" && name != "outside")
        .collect();
    if !outside.is_empty() {
        return Err(format!("written outside dest: {outside:?}"));
    }
    if std::fs::read(base.join("outside/secret")).unwrap() != b"secret\n" {
        return Err("the file outside dest changed".to_string());
    }
    if !dest.exists() {
        return Ok(());
    }
    let mut paths = Vec::new();
    walk(dest, &mut paths);
    let mut inodes: HashMap<(u64, u64), u64> = HashMap::new();
    for path in &paths {
        let metadata = std::fs::symlink_metadata(path).unwrap();
        let rel = path.strip_prefix(dest).unwrap();
        if metadata.file_type().is_symlink() {
            let link = std::fs::read_link(path).unwrap();
            let dir: Vec<PathBuf> = rel
                .parent()
                .unwrap_or(Path::new(""))
                .components()
                .map(|c| PathBuf::from(c.as_os_str()))
                .collect();
            resolve(dest, dir, &link, &mut 0)
                .map_err(|why| format!("link {} -> {}: {why}", rel.display(), link.display()))?;
        } else if metadata.is_file() {
            *inodes.entry((metadata.dev(), metadata.ino())).or_default() += 1;
            if metadata.nlink() > 1
                && metadata.ino()
                    == std::fs::metadata(base.join("outside/secret"))
                        .unwrap()
                        .ino()
            {
                return Err(format!(
                    "{} is a hard link to the file outside",
                    rel.display()
                ));
            }
        }
    }
    // Every hard link's other names are inside dest too.
    for path in &paths {
        let metadata = std::fs::symlink_metadata(path).unwrap();
        if metadata.is_file() {
            let inside = inodes[&(metadata.dev(), metadata.ino())];
            if metadata.nlink() != inside {
                return Err(format!(
                    "{} has {} names, {inside} of them in dest",
                    path.display(),
                    metadata.nlink()
                ));
            }
        }
    }
    Ok(())
}

fn cases() -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(256, |given: u32| given.max(256));
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn nothing_escapes_the_destination(entries in proptest::collection::vec(entry(), 1..10)) {
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir(base.path().join("outside")).unwrap();
        std::fs::write(base.path().join("outside/secret"), b"secret\n").unwrap();
        let archives = tempfile::tempdir().unwrap();
        let archive = archives.path().join("a.tar.gz");
        std::fs::write(&archive, gzip(&tar_of(&entries))).unwrap();
        let dest = base.path().join("dest");
        let limits = UnpackLimits { max_bytes: 1024, max_entries: 64 };
        match unpack(&archive, ArchiveFormat::TarGz, &dest, limits) {
            Ok(_) => {}
            Err(error) => {
                prop_assert!(matches!(error, Error::HostileArchive { .. }), "{:?}", error);
                prop_assert!(!error.to_string().is_empty());
            }
        }
        // Accepted or refused part-way: what was written stays inside.
        if let Err(why) = check_contained(base.path(), &dest) {
            prop_assert!(false, "{}: {:?}", why, entries);
        }
    }
}
