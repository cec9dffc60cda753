//! # adapters-binary
//!
//! The `binary` provisioning mode: install a prebuilt engine (e.g. a llama.cpp release asset) from
//! a pinned URL. Three parts:
//!
//! - [`HttpFetcher`] implements [`provisioner_core::Fetcher`]: `https://`, `http://` and
//!   `file://` downloads streamed through a fixed-size buffer and hashed on the fly (SHA-256,
//!   SHA-512 or BLAKE3), resumable with HTTP range requests.
//! - [`unpack()`](unpack::unpack) unpacks `.tar.gz`, `.tar.zst`, `.tar.xz` and `.zip` archives
//!   (all with pure-Rust decoders) treating every entry as hostile, and
//!   [`copy_executable`] installs a bare executable.
//! - [`BinaryArtifactInstaller`] implements [`provisioner_core::BinaryInstaller`]: policy check,
//!   download, unpack, a version run through the [`provisioner_core::Shell`] port, and an atomic
//!   install through the shared transaction ([`adapters_host::install::InstallRoot`]).
//!
//! This crate never spawns a process itself: the one process it needs (the version run) goes
//! through the Shell port.
//!
//! ## Safety rules
//!
//! Downloads:
//! - the body goes to `<destination>.partial` and is renamed to `destination` only after the size
//!   cap and the checksum passed; a checksum mismatch or an oversized body deletes the partial
//!   file (corrupt bytes are never resumed), other failures keep it for the next run, which
//!   re-hashes it and asks for the rest (`Range: bytes=N-`; a server answering 200 or 416 makes it
//!   start over);
//! - the partial file is locked while it is written, so two downloads never interleave;
//! - redirects are followed one hop at a time (at most `max_redirects`), only to http(s), never
//!   from https down to http; credentials in the URL are sent only to the URL's own origin and are
//!   removed from every message, progress report and metadata record;
//! - a server that sends nothing for `stall_timeout` fails the download (ureq's per-read timeout),
//!   a body shorter than its `Content-Length` is reported as truncated;
//! - dropping the future stops the blocking download at its next read.
//!
//! Archives (see [`mod@unpack`] for the full list): every entry is validated before anything is
//! written for it; absolute paths, `..`, links leaving the tree, writes through links, devices and
//! fifos are refused; entries and bytes actually written are capped ([`provisioner_core::UnpackLimits`]);
//! only the executable bit survives (no setuid, setgid or sticky bits).
//!
//! Installs: the checksum-derived key names the install directory; the warm path reads
//! `metadata.json` and checks that the executable is still the same regular executable file (size
//! and mtime) without any network access or process; the cold path asks the Policy port first
//! (`Action::Download`, with `pinned: false` for an artefact without checksum, which the default
//! policy refuses), then works inside a staging directory that is removed on failure or
//! cancellation and renamed into place on success, `metadata.json` last.
//!
//! ## Layout
//!
//! ```text
//! <install_root>/                 (the spec's install_root, e.g. <engine cache>/bin)
//!   CACHEDIR.TAG
//!   downloads/<key>.<ext>         verified download, removed once installed
//!   downloads/<key>.<ext>.partial download in progress (kept for resuming)
//!   locks/<key>.lock              the install transaction's lock
//!   .staging/<key>.<pid>.<nonce>/ work in progress (out/ becomes the install)
//!   <key>/                        the install: the archive's tree as unpacked
//!   <key>/metadata.json           BinaryInstallMetadata, written last
//! ```
//!
//! `<key>` is `<algorithm>-<first 16 hex digits of the checksum>` (e.g. `sha256-0123456789abcdef`);
//! every download is pinned by a checksum.
//!
//! ## Errors
//!
//! - [`provisioner_core::Error::Download`] (`url` without credentials): HTTP statuses, connection failures, stalls, truncated bodies, redirect problems,
//!   checksum and size mismatches, unsupported URL schemes.
//! - [`provisioner_core::Error::HostileArchive`] (exit 6): hostile or corrupt archives, naming the
//!   entry and the rule.
//! - [`provisioner_core::Error::BuildCheck`]: an executable missing from the archive or present
//!   several times, a bad executable name.
//! - [`provisioner_core::Error::CommandFailed`]: the version run failed or did not exit in time.
//! - [`provisioner_core::Error::PolicyDenied`]: from the Policy port, before any network access.
//! - [`provisioner_core::Error::Io`]: the local disk.

pub mod fetch;
mod hash;
pub mod installer;
pub mod unpack;
mod url;

pub use fetch::{FetchSettings, HttpFetcher, partial_path};
pub use hash::hash_file;
pub use installer::{
    BinaryArtifactInstaller, BinaryInstallMetadata, DOWNLOADS_DIR, METADATA_FORMAT, install_key,
};
pub use unpack::{UnpackReport, copy_executable, unpack};
pub use url::redact;
