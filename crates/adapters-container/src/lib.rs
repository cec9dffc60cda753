//! # adapters-container
//!
//! The container mode adapter: [`PodmanOrDocker`] implements the
//! [`provisioner_core::ContainerRuntime`] port. It makes an OCI image present locally, pinned by
//! digest, with podman (preferred) or docker (fallback), and reports what runs it.
//!
//! ## Steps of `ensure_image`
//!
//! 1. **Reference and inputs.** `spec.image` is the core's [`provisioner_core::ImageReference`],
//!    parsed when the config was read (no registry → `docker.io`, one-component Docker Hub names
//!    → `library/…`), with its tag and pinned digest ([`ImageRef`] is the registry client's
//!    view). The host paths the run bind-mounts (`spec.inputs`, named in engine flags) must
//!    exist as the kind their option takes, else a configuration error names the flag.
//! 2. **Runtime.** `spec.runtime` when forced, else podman, else docker: located on PATH
//!    ([`provisioner_core::Shell::locate`]) and probed with `<runtime> info --format json`, then
//!    checked for what the rendered run needs ([`requirements`]: the init binary, the OCI
//!    runtime, the network backend); the check is recorded in `<cache_dir>/runtimes-v1/` under a
//!    fingerprint of the binary, [`ContainerSettings::env`] and the containers.conf files with
//!    their contents, and reused (no process) while what it found is still there. The choice is
//!    kept for the adapter's lifetime. Every runtime command carries
//!    [`ContainerSettings::env`] (the host's values of [`RUNTIME_ENV`], the same list as
//!    [`provisioner_core::CONTAINER_ENV`]: PATH, HOME, XDG_RUNTIME_DIR, CONTAINERS_CONF,
//!    DOCKER_HOST, …) as explicit values, which is also returned as `runtime_env`; of the rest of
//!    this process's environment a runtime command inherits the base list only
//!    ([`provisioner_core::BASE_ENV`]: locale, proxies). All processes go through the Shell port.
//! 3. **Warm path.** When the digest is known without the registry — pinned in the spec, or
//!    recorded for `registry/repo:tag` in `<cache_dir>/images-v1.json` ([`TagIndex`]) — one
//!    `<runtime> image inspect registry/repo@digest` decides: present with that digest →
//!    `cache_hit: true`, no registry contacted, no other process run (besides `nvidia-smi -L`
//!    when devices are requested). The labels come from the local image. An image of this host,
//!    `localhost/…`, is never pulled: `image inspect` of its tag finds it in the runtime's store
//!    and the artifact names it by image ID (`sha256:<id>` as reference and digest); absent, the
//!    error says how to build or load it.
//! 4. **Devices.** Each `spec.devices` entry must be a GPU index, GPU UUID or MIG UUID listed by
//!    `nvidia-smi -L` ([`parse_nvidia_smi_list`]); with podman an NVIDIA CDI spec must exist in
//!    `/etc/cdi` or `/var/run/cdi`.
//! 5. **Policy.** `Action::PullImage` before any registry request, so offline mode and the host
//!    allowlist refuse non-loopback registries; refused, a tag the store already holds is used
//!    (by the manifest digest recorded for that repository, else its image ID), with a note.
//! 6. **Registry** (module `distribution`: reqwest with rustls and ring, every answer read under a
//!    cap; manifests typed by oci-client). Anonymous first; on 401 the credentials for the
//!    registry host ([`CredentialSources`], see [`auth`]): from each auth file in turn
//!    ([`ContainerSettings::auth_files`], podman's order), its `credHelpers` entry for the host,
//!    then an `auths.<host>` entry that carries credentials (`auth` as base64 `user:pass`, or
//!    `username`/`password`; an empty `{}` falls through), then its `credsStore`, a credential
//!    helper run as `docker-credential-<name> get` through the Shell port (server URL on stdin,
//!    `{"ServerURL","Username","Secret"}` on stdout, a `sensitive` command whose output is never
//!    logged or quoted); else `LLAMA_ORCH_REGISTRY_USER` /
//!    `LLAMA_ORCH_REGISTRY_PASSWORD`. The manifest the tag names is fetched once and its digest
//!    is the hash of its bytes (the registry's `Docker-Content-Digest`, when sent, must agree);
//!    for an index, this platform's manifest is fetched too; then the config blob, whose
//!    `org.opencontainers.image.revision` / `.version` labels are reported. `insecure` switches to
//!    plain HTTP for that registry only.
//! 7. **Pull by digest.** `<runtime> pull [--tls-verify=false] registry/repo@sha256:…` with a
//!    progress label; then the stored image must carry that digest. podman prints the ID it
//!    stored the image under, the hex of its config digest: when that is the verified config
//!    and podman's store files (overlay driver, the store `podman info` named) record the image
//!    under the manifest digest, the store gives the layer directories without another runtime
//!    process (module `store`); otherwise `image inspect` must report the digest (`Digest` or
//!    `RepoDigests`). The tag index is updated atomically.
//! 8. **Backend.** The store files (or the same `image inspect`) name the image's overlay layer
//!    directories on the host; [`layers`] reads the `libggml-*.so*` files of the merged image from them without
//!    running it ([`provisioner_core::ImageArtifact::backend`]); other storage drivers, or
//!    storage this user cannot read, give `unknown`. No extra process runs.
//!
//! ## What is verified
//!
//! - A pinned digest that differs from the registry's digest for the tag is refused, naming both.
//! - Manifest bytes hash to the digest they were fetched by, or that the registry claims for
//!   them; the config blob hashes to the digest in the manifest.
//! - Every registry answer (manifest, config blob, tag list, token) is read under a cap (16 MiB;
//!   1 MiB for a token): a longer body, or a `Content-Length` saying so, is an error, never a
//!   memory exhaustion.
//! - A host beyond the registry (a redirect to its storage, the realm of its token challenge)
//!   is asked of the policy before anything is sent there, as a download of that URL would be.
//! - The local image the runtime holds reports the digest (after a pull, and on the warm path).
//! - Credentials never reach argv, logs, progress, errors or metadata: the runtime gets them in a
//!   temporary auth file (mode 0600, in a 0700 directory under `<cache_dir>/tmp`, removed after
//!   the pull) — podman `--authfile FILE`, docker `--config DIR`. [`Credentials`] prints its
//!   password as `***`. What a credential helper prints goes to this crate only (the command is
//!   `sensitive`: not logged, traced, shown as progress or quoted in errors), and a helper gets
//!   only the base variables ([`provisioner_core::BASE_ENV`]) and those [`HELPER_ENV`] lists. Podman and docker still use their own
//!   logins when this crate passes no auth file (an image the registry serves anonymously).
//!
//! ## Errors
//!
//! - [`Error::MissingTool`](provisioner_core::Error::MissingTool): no runtime installed
//!   (`podman or docker`, with the podman install commands), or the forced one missing; a
//!   credential helper that is not installed (`docker-credential-<name>`, with the auth file and
//!   key that name it).
//! - [`Error::CommandFailed`](provisioner_core::Error::CommandFailed): a runtime is installed but
//!   `info` fails (its output tail is shown), or `pull` fails; a credential helper fails or does
//!   not answer within [`HELPER_TIMEOUT`] (the program and its exit status only, never its
//!   output; the hint names the auth file and the key that selected it).
//! - [`Error::Source`](provisioner_core::Error::Source) with `repo` = `registry/repository` and
//!   `reference` = the tag or digest: every registry problem — bad reference, unknown repository
//!   or tag (told apart by listing the repository's tags; the hint shows some), authentication
//!   failed (the message names the registry, where rejected credentials came from and the
//!   helpers that had none; the hint the auth file locations; never the secret), pinned digest
//!   mismatch, tampered manifest or config, unreachable registry — and a local image that does
//!   not report the digest after the pull.
//! - [`Error::PolicyDenied`](provisioner_core::Error::PolicyDenied): from the Policy port.
//! - [`Error::Engine`](provisioner_core::Error::Engine) with `pool` = the engine name: device
//!   problems (no NVIDIA driver, unknown device — the GPUs found are listed, no CDI spec for
//!   podman with the `nvidia-ctk cdi generate` hint).
//! - [`Error::Io`](provisioner_core::Error::Io): the tag index or the temporary auth file.
//!
//! ## Docker and plain-HTTP registries
//!
//! podman takes `--tls-verify=false` per pull. docker has no such flag: its daemon must list the
//! registry under `"insecure-registries"` in `/etc/docker/daemon.json`. When the docker CLI talks
//! to `podman system service` (DOCKER_HOST), the service's `registries.conf` decides
//! (`[[registry]] location = "HOST:PORT"`, `insecure = true`). See [`DOCKER_INSECURE_HINT`].

pub mod auth;
pub mod devices;
mod distribution;
pub mod index;
pub mod layers;
pub mod reference;
mod registry;
pub mod requirements;
pub mod runtime;
mod store;

pub use auth::{
    CredentialSources, Credentials, DOCKER_HUB_SERVER, Found, HELPER_ENV, HELPER_TIMEOUT, Origin,
    Search, TempAuthFile, credentials_in,
};
pub use devices::{Gpu, MigDevice, find_cdi_spec, parse_nvidia_smi_list, unknown_devices};
pub use index::{IndexEntry, TagIndex};
pub use layers::ImageLayers;
pub use reference::{ImageRef, sha256_digest};
pub use registry::{REVISION_LABEL, VERSION_LABEL};
pub use requirements::{ContainersConf, PodmanFiles};
pub use runtime::{
    ContainerSettings, DOCKER_INSECURE_HINT, PodmanOrDocker, RUNTIME_ENV, podman_install_hint,
};
