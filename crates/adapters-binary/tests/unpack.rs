//! The unpacker against well-formed and hostile archives.

mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use adapters_binary::{copy_executable, unpack};
use provisioner_core::{ArchiveFormat, Error, UnpackLimits};
use support::{Item, gzip, raw_header, raw_tar, tar, xz, zip, zstd};
use tar::EntryType;

/// A scratch area: `base/dest` is unpacked into; the archive lives elsewhere.
struct Area {
    base: tempfile::TempDir,
    archives: tempfile::TempDir,
}

impl Area {
    fn new() -> Area {
        Area {
            base: tempfile::tempdir().unwrap(),
            archives: tempfile::tempdir().unwrap(),
        }
    }

    fn dest(&self) -> PathBuf {
        self.base.path().join("dest")
    }

    fn archive(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.archives.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Nothing but `dest` was created next to it.
    fn assert_contained(&self) {
        let names: Vec<String> = std::fs::read_dir(self.base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| n == "dest"),
            "written outside dest: {names:?}"
        );
    }

    fn unpack_tar_gz(
        &self,
        bytes: &[u8],
        limits: UnpackLimits,
    ) -> Result<adapters_binary::UnpackReport, Error> {
        let archive = self.archive("a.tar.gz", &gzip(bytes));
        unpack(&archive, ArchiveFormat::TarGz, &self.dest(), limits)
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// The error is a hostile archive (exit 6) naming the entry and containing the rule.
fn assert_rejected(result: Result<adapters_binary::UnpackReport, Error>, entry: &str, rule: &str) {
    let error = result.expect_err("the archive must be rejected");
    assert!(matches!(error, Error::HostileArchive { .. }), "{error:?}");
    assert_eq!(error.code().exit_code(), 6);
    let text = error.to_string();
    assert!(
        text.contains(&format!("`{entry}`")),
        "entry not named: {text}"
    );
    assert!(text.contains(rule), "rule not stated: {text}");
}

fn limits() -> UnpackLimits {
    UnpackLimits::default()
}

// ---------------------------------------------------------------------------------------------
// Good archives

fn good_items(script: &[u8]) -> Vec<Item<'_>> {
    vec![
        Item::Dir("pkg/"),
        Item::Dir("pkg/bin"),
        Item::File("pkg/bin/llama-server", script, 0o755),
        Item::File("pkg/bin/libggml.so.1", b"lib", 0o644),
        Item::Symlink("pkg/bin/libggml.so", "libggml.so.1"),
        Item::Symlink("pkg/lib", "bin"),
        Item::File("pkg/README", b"readme", 0o600),
    ]
}

fn check_good(dest: &Path) {
    let bin = dest.join("pkg/bin/llama-server");
    assert_eq!(std::fs::read(&bin).unwrap(), b"#!/bin/sh\necho hi\n");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(mode(&dest.join("pkg/bin/libggml.so.1")), 0o644);
    assert_eq!(
        mode(&dest.join("pkg/README")),
        0o644,
        "only the executable bit is kept"
    );
    assert_eq!(
        std::fs::read_link(dest.join("pkg/bin/libggml.so")).unwrap(),
        PathBuf::from("libggml.so.1")
    );
    assert_eq!(
        std::fs::read(dest.join("pkg/lib/libggml.so.1")).unwrap(),
        b"lib"
    );
}

#[test]
fn good_tar_gz_tar_zst_tar_xz() {
    let raw = tar(&good_items(b"#!/bin/sh\necho hi\n"));
    for (format, bytes, name) in [
        (ArchiveFormat::TarGz, gzip(&raw), "a.tar.gz"),
        (ArchiveFormat::TarZst, zstd(&raw), "a.tar.zst"),
        (ArchiveFormat::TarXz, xz(&raw), "a.tar.xz"),
    ] {
        let area = Area::new();
        let archive = area.archive(name, &bytes);
        let report = unpack(&archive, format, &area.dest(), limits()).unwrap();
        check_good(&area.dest());
        assert_eq!(report.entries, 7, "{format:?}");
        assert_eq!(report.bytes, 18 + 3 + 6);
        assert_eq!(report.symlinks.len(), 2);
        area.assert_contained();
    }
}

#[test]
fn concatenated_zstd_frames() {
    let raw = tar(&good_items(b"#!/bin/sh\necho hi\n"));
    let (first, second) = raw.split_at(1536);
    let mut bytes = zstd(first);
    bytes.extend(zstd(second));
    let area = Area::new();
    let archive = area.archive("a.tar.zst", &bytes);
    unpack(&archive, ArchiveFormat::TarZst, &area.dest(), limits()).unwrap();
    check_good(&area.dest());
}

#[test]
fn good_zip() {
    let area = Area::new();
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let file = |mode: u32| {
        zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode)
    };
    writer.add_directory("pkg/bin/", file(0o755)).unwrap();
    writer
        .start_file("pkg/bin/llama-server", file(0o4755))
        .unwrap();
    writer.write_all(b"#!/bin/sh\necho hi\n").unwrap();
    writer
        .start_file("pkg/bin/libggml.so.1", file(0o644))
        .unwrap();
    writer.write_all(b"lib").unwrap();
    writer
        .add_symlink("pkg/bin/libggml.so", "libggml.so.1", file(0o777))
        .unwrap();
    writer.add_symlink("pkg/lib", "bin", file(0o777)).unwrap();
    writer.start_file("pkg/README", file(0o666)).unwrap();
    writer.write_all(b"readme").unwrap();
    let bytes = writer.finish().unwrap().into_inner();
    let archive = area.archive("a.zip", &bytes);
    let report = unpack(&archive, ArchiveFormat::Zip, &area.dest(), limits()).unwrap();
    check_good(&area.dest());
    assert_eq!(report.entries, 6);
    area.assert_contained();
}

#[test]
fn bare_executable() {
    let area = Area::new();
    let file = area.archive("download.bin", b"\x7fELF not really");
    let report = copy_executable(&file, &area.dest(), "llama-server", limits()).unwrap();
    let installed = area.dest().join("llama-server");
    assert_eq!(std::fs::read(&installed).unwrap(), b"\x7fELF not really");
    assert_eq!(mode(&installed), 0o755);
    assert_eq!(report.files, vec![PathBuf::from("llama-server")]);

    let tight = UnpackLimits {
        max_bytes: 4,
        max_entries: 10,
    };
    let error = copy_executable(&file, &area.base.path().join("other"), "x", tight).unwrap_err();
    assert!(error.to_string().contains("max_bytes"), "{error}");
    for bad in ["../x", "a/b", "", "..", "/abs"] {
        let error = copy_executable(&file, &area.dest(), bad, limits()).unwrap_err();
        assert!(
            error.to_string().contains("plain file name"),
            "{bad}: {error}"
        );
    }
    // Through `unpack`, a bare file keeps its own name.
    let again = Area::new();
    let file = again.archive("engine", b"x");
    unpack(&file, ArchiveFormat::Bare, &again.dest(), limits()).unwrap();
    assert_eq!(mode(&again.dest().join("engine")), 0o755);
}

// ---------------------------------------------------------------------------------------------
// Hostile tar archives

#[test]
fn parent_dir_entry() {
    let area = Area::new();
    let bytes = raw_tar(&[(
        raw_header(b"../x", EntryType::Regular, 4, 0o644, None),
        b"evil".to_vec(),
    )]);
    assert_rejected(
        area.unpack_tar_gz(&bytes, limits()),
        "../x",
        "`..` components are not allowed",
    );
    area.assert_contained();
    assert!(!area.base.path().join("x").exists());
}

#[test]
fn nested_parent_dir_entry() {
    let area = Area::new();
    let bytes = raw_tar(&[(
        raw_header(b"ok/../../y", EntryType::Regular, 4, 0o644, None),
        b"evil".to_vec(),
    )]);
    assert_rejected(area.unpack_tar_gz(&bytes, limits()), "ok/../../y", "`..`");
    area.assert_contained();
}

#[test]
fn absolute_entry() {
    let area = Area::new();
    let target = "/etc/adapters-binary-hostile-test";
    let bytes = raw_tar(&[(
        raw_header(target.as_bytes(), EntryType::Regular, 4, 0o644, None),
        b"evil".to_vec(),
    )]);
    assert_rejected(
        area.unpack_tar_gz(&bytes, limits()),
        target,
        "absolute paths are not allowed",
    );
    assert!(!Path::new(target).exists());
    assert!(
        !area.dest().join("etc").exists(),
        "not stripped and written either"
    );
    area.assert_contained();
}

#[test]
fn symlink_to_root() {
    let area = Area::new();
    let bytes = raw_tar(&[
        (
            raw_header(b"root", EntryType::Symlink, 0, 0o777, Some(b"/")),
            vec![],
        ),
        (
            raw_header(b"root/tmp/x", EntryType::Regular, 4, 0o644, None),
            b"evil".to_vec(),
        ),
    ]);
    assert_rejected(
        area.unpack_tar_gz(&bytes, limits()),
        "root",
        "absolute path `/`",
    );
    assert!(std::fs::symlink_metadata(area.dest().join("root")).is_err());
    area.assert_contained();
}

#[test]
fn symlink_climbing_out() {
    let area = Area::new();
    let bytes = raw_tar(&[(
        raw_header(b"a", EntryType::Symlink, 0, 0o777, Some(b"../../x")),
        vec![],
    )]);
    assert_rejected(
        area.unpack_tar_gz(&bytes, limits()),
        "a",
        "points outside the archive",
    );
    area.assert_contained();
    assert!(std::fs::symlink_metadata(area.dest().join("a")).is_err());
}

#[test]
fn symlink_chain_climbing_out() {
    // `sub/up -> ..` is the destination itself (allowed); `sub/up/..` would then be outside.
    let area = Area::new();
    let bytes = raw_tar(&[
        (
            raw_header(b"sub/", EntryType::Directory, 0, 0o755, None),
            vec![],
        ),
        (
            raw_header(b"sub/up", EntryType::Symlink, 0, 0o777, Some(b"..")),
            vec![],
        ),
        (
            raw_header(b"esc", EntryType::Symlink, 0, 0o777, Some(b"sub/up/..")),
            vec![],
        ),
    ]);
    assert_rejected(
        area.unpack_tar_gz(&bytes, limits()),
        "esc",
        "`..` after a name",
    );
    area.assert_contained();
}

#[test]
fn writing_through_a_symlink() {
    let area = Area::new();
    let bytes = raw_tar(&[
        (
            raw_header(b"here", EntryType::Symlink, 0, 0o777, Some(b".")),
            vec![],
        ),
        (
            raw_header(b"here/x", EntryType::Regular, 4, 0o644, None),
            b"data".to_vec(),
        ),
    ]);
    assert_rejected(
        area.unpack_tar_gz(&bytes, limits()),
        "here/x",
        "is a symbolic link",
    );
    assert!(!area.dest().join("x").exists());
}

#[test]
fn entry_replacing_an_earlier_one() {
    let area = Area::new();
    let bytes = raw_tar(&[
        (
            raw_header(b"bin", EntryType::Regular, 4, 0o755, None),
            b"good".to_vec(),
        ),
        (
            raw_header(b"bin", EntryType::Symlink, 0, 0o777, Some(b"other")),
            vec![],
        ),
    ]);
    assert_rejected(
        area.unpack_tar_gz(&bytes, limits()),
        "bin",
        "duplicate entry",
    );
    assert_eq!(std::fs::read(area.dest().join("bin")).unwrap(), b"good");
}

#[test]
fn hardlink_to_etc_passwd() {
    let area = Area::new();
    let bytes = raw_tar(&[(
        raw_header(b"passwd", EntryType::Link, 0, 0o644, Some(b"/etc/passwd")),
        vec![],
    )]);
    assert_rejected(
        area.unpack_tar_gz(&bytes, limits()),
        "passwd",
        "hard link target `/etc/passwd` is outside the archive",
    );
    assert!(std::fs::symlink_metadata(area.dest().join("passwd")).is_err());
    area.assert_contained();
}

#[test]
fn hardlinks_inside_the_archive_work() {
    let area = Area::new();
    let bytes = raw_tar(&[
        (
            raw_header(b"bin/tool", EntryType::Regular, 4, 0o755, None),
            b"tool".to_vec(),
        ),
        (
            raw_header(b"bin/alias", EntryType::Link, 0, 0o755, Some(b"bin/tool")),
            vec![],
        ),
        (
            raw_header(b"bad", EntryType::Link, 0, 0o644, Some(b"missing")),
            vec![],
        ),
    ]);
    assert_rejected(
        area.unpack_tar_gz(&bytes, limits()),
        "bad",
        "not a regular file unpacked earlier",
    );
    assert_eq!(
        std::fs::read(area.dest().join("bin/alias")).unwrap(),
        b"tool"
    );
}

#[test]
fn device_and_fifo_entries() {
    for (entry_type, name) in [
        (EntryType::Char, "null"),
        (EntryType::Block, "sda"),
        (EntryType::Fifo, "pipe"),
    ] {
        let area = Area::new();
        let bytes = raw_tar(&[(
            raw_header(name.as_bytes(), entry_type, 0, 0o666, None),
            vec![],
        )]);
        assert_rejected(
            area.unpack_tar_gz(&bytes, limits()),
            name,
            "device and fifo entries are not allowed",
        );
        assert!(std::fs::symlink_metadata(area.dest().join(name)).is_err());
    }
}

#[test]
fn setuid_and_setgid_bits_are_dropped() {
    let area = Area::new();
    let bytes = tar(&[
        Item::File("suid", b"x", 0o4755),
        Item::File("sgid", b"x", 0o2755),
        Item::File("both-no-exec", b"x", 0o6644),
        Item::File("world-writable", b"x", 0o777),
        Item::File("sticky", b"x", 0o1644),
    ]);
    area.unpack_tar_gz(&bytes, limits()).unwrap();
    assert_eq!(mode(&area.dest().join("suid")), 0o755);
    assert_eq!(mode(&area.dest().join("sgid")), 0o755);
    assert_eq!(mode(&area.dest().join("both-no-exec")), 0o644);
    assert_eq!(mode(&area.dest().join("world-writable")), 0o755);
    assert_eq!(mode(&area.dest().join("sticky")), 0o644);
}

#[test]
fn too_many_entries() {
    let area = Area::new();
    let names: Vec<String> = (0..20).map(|i| format!("f{i:02}")).collect();
    let items: Vec<Item<'_>> = names.iter().map(|n| Item::File(n, b"x", 0o644)).collect();
    let tight = UnpackLimits {
        max_entries: 10,
        ..limits()
    };
    assert_rejected(
        area.unpack_tar_gz(&tar(&items), tight),
        "f10",
        "more than 10 entries",
    );
    assert!(!area.dest().join("f10").exists());
}

#[test]
fn tar_bomb_over_max_bytes() {
    // 100 MB of zeros in about 100 KB: a gzip member holding the tar header, then one hundred
    // members of 1 MiB of zeros each (gzip members concatenate; compressing once keeps the test
    // fast in debug builds). The limit stops it at 10 MB, before anything is written.
    let area = Area::new();
    let total = 100 * 1024 * 1024;
    let header = raw_header(b"zeros", EntryType::Regular, total as u64, 0o644, None);
    let mut compressed = gzip(header.as_bytes());
    let block = gzip(&vec![0u8; 1024 * 1024]);
    for _ in 0..100 {
        compressed.extend_from_slice(&block);
    }
    assert!(compressed.len() < 1024 * 1024);
    let tight = UnpackLimits {
        max_bytes: 10 * 1024 * 1024,
        ..limits()
    };
    let archive = area.archive("bomb.tar.gz", &compressed);
    let result = unpack(&archive, ArchiveFormat::TarGz, &area.dest(), tight);
    assert_rejected(
        result,
        "zeros",
        "more than the 10485760 bytes left of the unpack limit",
    );
    assert!(
        !area.dest().join("zeros").exists(),
        "refused before writing"
    );
}

#[test]
fn huge_long_name_metadata_is_capped() {
    let area = Area::new();
    let long_name = vec![b'a'; 2 * 1024 * 1024];
    let bytes = raw_tar(&[
        (
            raw_header(b"ok", EntryType::Regular, 2, 0o644, None),
            b"ok".to_vec(),
        ),
        (
            raw_header(
                b"././@LongLink",
                EntryType::GNULongName,
                long_name.len() as u64,
                0o644,
                None,
            ),
            long_name,
        ),
        (
            raw_header(b"x", EntryType::Regular, 1, 0o644, None),
            b"x".to_vec(),
        ),
    ]);
    let error = area.unpack_tar_gz(&bytes, limits()).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("more than 1048576 bytes of headers"),
        "{text}"
    );
    assert!(text.contains("after entry `ok`"), "{text}");
}

#[test]
fn corrupt_archives_are_clear_errors() {
    let area = Area::new();
    for (format, name) in [
        (ArchiveFormat::TarGz, "x.tar.gz"),
        (ArchiveFormat::TarZst, "x.tar.zst"),
        (ArchiveFormat::TarXz, "x.tar.xz"),
        (ArchiveFormat::Zip, "x.zip"),
    ] {
        let archive = area.archive(name, b"this is not an archive at all, just some text");
        let error = unpack(&archive, format, &area.dest(), limits()).unwrap_err();
        assert!(
            matches!(error, Error::HostileArchive { .. }),
            "{format:?}: {error:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile zip archives

#[test]
fn zip_with_parent_and_absolute_paths() {
    for name in ["../evil", "/tmp/adapters-binary-evil", "a\\..\\..\\evil"] {
        let area = Area::new();
        let archive = area.archive("a.zip", &zip(&[(name, b"evil", 0o644)]));
        let error = unpack(&archive, ArchiveFormat::Zip, &area.dest(), limits()).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("a.zip: entry `"), "{text}");
        assert!(text.contains("not allowed"), "{text}");
        area.assert_contained();
    }
    assert!(!Path::new("/tmp/adapters-binary-evil").exists());
}

#[test]
fn zip_symlink_out_and_device() {
    let area = Area::new();
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    writer
        .add_symlink(
            "link",
            "../../outside",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
    let archive = area.archive("a.zip", &writer.finish().unwrap().into_inner());
    assert_rejected(
        unpack(&archive, ArchiveFormat::Zip, &area.dest(), limits()),
        "link",
        "points outside the archive",
    );

    // A character device recorded in the unix mode (the zip writer only writes files, so the
    // central directory's external attributes are patched).
    let area = Area::new();
    let mut bytes = zip(&[("dev", b"", 0o666)]);
    let central = bytes.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
    bytes[central + 38..central + 42].copy_from_slice(&(0o020_666u32 << 16).to_le_bytes());
    let archive = area.archive("b.zip", &bytes);
    assert_rejected(
        unpack(&archive, ArchiveFormat::Zip, &area.dest(), limits()),
        "dev",
        "device, fifo and socket entries are not allowed",
    );
}

#[test]
fn zip_too_many_entries() {
    let area = Area::new();
    let names: Vec<String> = (0..12).map(|i| format!("f{i:02}")).collect();
    let items: Vec<(&str, &[u8], u32)> = names
        .iter()
        .map(|n| (n.as_str(), &b"x"[..], 0o644))
        .collect();
    let archive = area.archive("a.zip", &zip(&items));
    let tight = UnpackLimits {
        max_entries: 10,
        ..limits()
    };
    assert_rejected(
        unpack(&archive, ArchiveFormat::Zip, &area.dest(), tight),
        "f10",
        "more than the limit of 10",
    );
    assert!(
        !area.dest().join("f00").exists(),
        "refused before writing anything"
    );
}

/// A zip holding 100 MB of zeros whose headers claim `claimed` bytes.
fn zip_bomb(claimed: Option<u32>) -> Vec<u8> {
    // Deflating 100 MB takes seconds in a debug build: do it once for both tests.
    static HONEST: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let honest = HONEST.get_or_init(|| zip(&[("zeros.bin", &vec![0u8; 100 * 1024 * 1024], 0o644)]));
    let mut bytes = honest.clone();
    if let Some(claimed) = claimed {
        let claimed = claimed.to_le_bytes();
        // Local header: uncompressed size at offset 22; central directory entry: offset 24.
        assert_eq!(&bytes[..4], b"PK\x03\x04");
        bytes[22..26].copy_from_slice(&claimed);
        let central = bytes
            .windows(4)
            .rposition(|w| w == b"PK\x01\x02")
            .expect("central directory");
        bytes[central + 24..central + 28].copy_from_slice(&claimed);
    }
    bytes
}

#[test]
fn zip_bomb_honest_headers() {
    let area = Area::new();
    let bomb = zip_bomb(None);
    assert!(bomb.len() < 1024 * 1024);
    let archive = area.archive("bomb.zip", &bomb);
    let tight = UnpackLimits {
        max_bytes: 10 * 1024 * 1024,
        ..limits()
    };
    assert_rejected(
        unpack(&archive, ArchiveFormat::Zip, &area.dest(), tight),
        "zeros.bin",
        "bytes left of the unpack limit",
    );
    assert!(!area.dest().join("zeros.bin").exists());
}

#[test]
fn zip_bomb_lying_headers() {
    let area = Area::new();
    let archive = area.archive("bomb.zip", &zip_bomb(Some(1000)));
    let tight = UnpackLimits {
        max_bytes: 10 * 1024 * 1024,
        ..limits()
    };
    let error = unpack(&archive, ArchiveFormat::Zip, &area.dest(), tight).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("`zeros.bin`"), "{text}");
    let written = std::fs::metadata(area.dest().join("zeros.bin")).map_or(0, |m| m.len());
    assert!(written <= 10 * 1024 * 1024, "wrote {written} bytes");
    area.assert_contained();
}
