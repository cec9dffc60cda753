//! # adapters-package
//!
//! Will hold the real `PackageManager` port adapters: pacman (and AUR helpers), apt and dnf, with
//! pinned versions and `allow_package_installs` honoured.
//!
//! Status: not implemented yet. Package mode is reported as unsupported by every engine recipe, and
//! preflight only prints install commands, until this crate provides the adapters.
