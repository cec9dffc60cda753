//! # cli
//!
//! `orchctl`, the thin front end. `main.rs` and `args.rs` parse flags with clap (the only crate
//! that knows clap); this library turns settings into a wired [`engines::Provisioner`] and runs
//! the commands, rendering progress on stderr and results on stdout. [`settings`] reads the
//! host-wide switches (`LLAMA_ORCH_*`, the cache root) from flags and the environment.
//! Orchestration lives in the library crates so that pool-managerd can reuse it;
//! [`wiring::provisioner`] is the composition root it can copy or call.

pub mod commands;
pub mod exit;
pub mod render;
pub mod settings;
pub mod wiring;
