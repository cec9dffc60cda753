//! # adapters-container
//!
//! Will hold the real `ContainerRuntime` port adapter: podman (preferred) or docker (fallback),
//! images resolved and pulled by digest through an OCI registry client.
//!
//! Status: not implemented yet. Container mode is reported as unsupported by every engine recipe
//! until this crate provides the adapter; nothing here pretends otherwise.
