//! # adapters-source
//!
//! The `source` provisioning mode: [`CmakeSourceBuilder`] implements
//! [`provisioner_core::SourceBuilder`] with git and CMake, driven entirely through the
//! [`provisioner_core::Shell`] port (this crate never spawns a process itself).
//!
//! What `ensure_built` does, in order:
//!
//! 1. **Preflight** (no process): every tool of [`provisioner_core::tools::source_build_tools`] is
//!    located; a missing one fails with the command that installs it. A CUDA build finds `nvcc` off
//!    PATH under the usual toolkit roots and passes `-DCMAKE_CUDA_COMPILER`; it never falls back to
//!    a CPU build.
//! 2. **Toolchain fingerprints** of cmake, the generator tool, the compilers and the backend
//!    compiler (size and mtime, no process) go into the cache key.
//! 3. **Ref resolution**: a full SHA needs nothing; tags and commits resolved once are kept in the
//!    ref index `<cache_dir>/refs-v1.json`; anything else (and every branch) goes through a bare
//!    mirror `<cache_dir>/git/<hash>.git`, after the policy allowed the fetch.
//! 4. **Key** over the layout version, commit, generator, flags, targets, artefacts, backend and
//!    toolchain: `<cache_dir>/builds-v1/<key>`.
//! 5. **Warm path**: an installed, valid build is returned without running any process. When
//!    preflight fails (a host that only runs engines has no git, cmake or compiler), any complete
//!    build of the same commit (known from a full SHA or the ref index), flags, targets,
//!    artefacts and backend is returned instead, whatever toolchain built it; only without one
//!    does the preflight failure stand (or missing tools get installed, when the pool allows).
//! 6. **Cold path**: clone from the mirror into a staging dir, configure, build, check that the
//!    backend asked for was really built, copy the artefacts to `bin/`, and rename into place
//!    atomically with `metadata.json` written last (see `adapters_host::install::InstallRoot`).

mod artefacts;
mod builder;
mod checks;
mod gpu;
mod host;
mod key;
mod mirror;
mod refs;
mod submodules;
mod tree;

pub use builder::{BUILDS_BUCKET, CmakeSourceBuilder, SourceBuildMetadata};
pub use host::HostFacts;
pub use key::{KeyInputs, LAYOUT_VERSION, build_key};
pub use refs::{REF_INDEX_FILE, known_commit};
