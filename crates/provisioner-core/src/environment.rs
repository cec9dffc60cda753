//! Which variables of the provisioner's own environment reach the programs it starts.
//!
//! No program the provisioner starts gets the caller's whole environment: a caller's shell
//! holds cloud keys, hub and forge tokens and passwords (`AWS_SECRET_ACCESS_KEY`, `HF_TOKEN`,
//! `GITHUB_TOKEN`, …) that a compiler, a package manager or an engine's `--version` has no use
//! for. Every [`crate::CommandSpec`] inherits an allowlist for its job instead:
//!
//! - [`BASE_ENV`], always (a `--version`/`--help` probe of an installed server gets this alone,
//!   plus what its command sets itself, such as `LD_LIBRARY_PATH`);
//! - the lists of its job, which an adapter opts into with
//!   [`crate::CommandSpec::inherit_also`]: [`GIT_ENV`] for git, [`BUILD_ENV`] for CMake and the
//!   compilers it runs (git's list included: CMake may run git), [`PACKAGE_ENV`] for package
//!   managers and sudo, [`CONTAINER_ENV`] for podman and docker (passed as explicit values, see
//!   there); a credential helper's list is its own (`adapters_container::HELPER_ENV`);
//! - and what the command sets itself ([`crate::CommandSpec::env`]: the pool's env for an
//!   engine, `LC_ALL=C` for output that is parsed, `GIT_TERMINAL_PROMPT=0`, …), which wins over
//!   an inherited value.
//!
//! An entry is a variable name, a prefix ending in `*` (`LC_*`), or a name or prefix after `!`
//! that is never inherited whatever else the list allows (`!GIT_DIR`). The lists are pure data;
//! `adapters_host::process` applies them when it spawns (the engine a supervisor starts gets a
//! cleared environment plus the pool's env file, no list at all).

/// What every program gets: what a POSIX program expects to find, the locale, and the network
/// settings of the host.
///
/// - `PATH`: to find the programs a tool runs itself (cmake finds the compiler, git its
///   helpers, sudo's target).
/// - `HOME`, `USER`, `LOGNAME`: where per-user configuration is (`~/.gitconfig`,
///   `~/.config/containers`, `~/.docker`, the ccache directory) and who runs (rootless podman,
///   AUR helpers, ssh). Not secrets.
/// - `LANG`, `LANGUAGE`, `LC_*`: messages in the user's language and the character set of file
///   names. Commands whose output is parsed set `LC_ALL=C` themselves.
/// - `TZ`: timestamps in logs.
/// - `TMPDIR`: where compilers, podman (image layers) and makepkg write temporary files, which
///   may have to be another file system than `/tmp`.
/// - `TERM`: interactive `sudo` prompts on the user's terminal, and tools' colour decisions.
/// - `http_proxy`, `https_proxy`, `HTTP_PROXY`, `HTTPS_PROXY`, `no_proxy`, `NO_PROXY`,
///   `all_proxy`, `ALL_PROXY`: the only way out of many networks, honoured by git (curl), apt,
///   dnf, pacman, podman and docker. A proxy URL may carry the proxy's credentials; they go
///   where the user sent them, to the proxy.
/// - `SSL_CERT_FILE`, `SSL_CERT_DIR`: the CA bundle that goes with such a proxy (OpenSSL and
///   Go programs: podman, credential helpers, curl). Paths, not secrets.
///
/// Left out on purpose: `SHELL` (nothing we run starts an interactive shell; makepkg and
/// CMake run `/bin/sh`), `DISPLAY` and friends (only a graphical sudo askpass needs them:
/// [`PACKAGE_ENV`]), `EDITOR`/`PAGER` (everything runs non-interactively), `LD_LIBRARY_PATH`
/// and `LD_PRELOAD` (a build or an explicit value carries the first; the second never), and
/// everything else.
pub const BASE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "TERM",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// What git adds: its own variables (`GIT_SSH_COMMAND`, `GIT_ASKPASS`, `GIT_SSL_CAINFO`,
/// `GIT_CONFIG_GLOBAL`, `GIT_TRACE*`, …) and `SSH_AUTH_SOCK` (the agent holding the key of an
/// `ssh://`/`git@` remote). Never the variables that point git at another repository (the
/// ones `git rev-parse --local-env-vars` lists, set when the provisioner runs inside a git
/// hook): git runs on our mirror and our checkout only. No `SSH_ASKPASS`: git runs with its
/// prompt off (`GIT_TERMINAL_PROMPT=0`) and nothing may stop a prepare to ask.
pub const GIT_ENV: &[&str] = &[
    "GIT_*",
    "SSH_AUTH_SOCK",
    "!GIT_DIR",
    "!GIT_WORK_TREE",
    "!GIT_IMPLICIT_WORK_TREE",
    "!GIT_INDEX_FILE",
    "!GIT_OBJECT_DIRECTORY",
    "!GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "!GIT_COMMON_DIR",
    "!GIT_GRAFT_FILE",
    "!GIT_SHALLOW_FILE",
    "!GIT_NO_REPLACE_OBJECTS",
    "!GIT_REPLACE_REF_BASE",
    "!GIT_PREFIX",
    "!GIT_CONFIG",
    "!GIT_CONFIG_PARAMETERS",
    "!GIT_NAMESPACE",
];

/// What a build adds besides [`GIT_ENV`] (see [`BUILD_ENV`]): the compilers and their flags,
/// where headers and libraries are, CMake's own variables, the GPU toolkits' roots and flags,
/// compiler caches and the build tools' parallelism.
const BUILD_ONLY_ENV: &[&str] = &[
    // Compilers and flags CMake reads at configure time.
    "CC",
    "CXX",
    "CFLAGS",
    "CXXFLAGS",
    "CPPFLAGS",
    "LDFLAGS",
    "CUDACXX",
    "CUDAHOSTCXX",
    "CUDAFLAGS",
    "CUDAARCHS",
    "HIPCXX",
    "HIPFLAGS",
    "HIPARCHS",
    // Where headers and libraries are (the compiler driver and the linker read them).
    "CPATH",
    "C_INCLUDE_PATH",
    "CPLUS_INCLUDE_PATH",
    "LIBRARY_PATH",
    "LD_LIBRARY_PATH",
    "PKG_CONFIG_*",
    "CMAKE_*",
    // GPU toolkits: CUDA_HOME/CUDA_PATH, NVCC_PREPEND_FLAGS/NVCC_APPEND_FLAGS/NVCC_CCBIN,
    // ROCM_PATH, HIP_PATH/HIP_PLATFORM, VULKAN_SDK; MKLROOT for FindBLAS.
    "CUDA_*",
    "NVCC_*",
    "ROCM_*",
    "HIP_*",
    "VULKAN_SDK",
    "MKLROOT",
    // Compiler cache and build tools.
    "CCACHE_*",
    "MAKEFLAGS",
    "NINJA_*",
    "SOURCE_DATE_EPOCH",
];

/// What CMake configure and build (and the compilers, linkers and code generators they run)
/// add: `CC`, `CXX`, `CFLAGS`, `CXXFLAGS`, `CPPFLAGS`, `LDFLAGS`, `CUDACXX`, `CUDAHOSTCXX`,
/// `CUDAFLAGS`, `CUDAARCHS`, `HIPCXX`, `HIPFLAGS`, `HIPARCHS`, `CPATH`, `C_INCLUDE_PATH`,
/// `CPLUS_INCLUDE_PATH`, `LIBRARY_PATH`, `LD_LIBRARY_PATH`, `PKG_CONFIG_*`, `CMAKE_*`,
/// `CUDA_*`, `NVCC_*`, `ROCM_*`, `HIP_*`, `VULKAN_SDK`, `MKLROOT`, `CCACHE_*`, `MAKEFLAGS`,
/// `NINJA_*`, `SOURCE_DATE_EPOCH`, and [`GIT_ENV`] (CMake projects run git for their version
/// string, and `FetchContent` clones). No `SCCACHE_*`: its remote caches take cloud keys.
pub const BUILD_ENV: &[&str] = &BUILD_ENV_ARRAY;

const BUILD_ENV_ARRAY: [&str; BUILD_ONLY_ENV.len() + GIT_ENV.len()] = {
    let mut all = [""; BUILD_ONLY_ENV.len() + GIT_ENV.len()];
    let mut i = 0;
    while i < BUILD_ONLY_ENV.len() {
        all[i] = BUILD_ONLY_ENV[i];
        i += 1;
    }
    let mut j = 0;
    while j < GIT_ENV.len() {
        all[i + j] = GIT_ENV[j];
        j += 1;
    }
    all
};

/// What package managers (apt-get, apt-cache, dpkg-query, dnf, rpm, pacman, the AUR helpers
/// paru and yay) and the `sudo` in front of them add:
///
/// - `DEBIAN_FRONTEND`, `DEBCONF_*`, `APT_CONFIG`: apt's and debconf's settings (apt commands
///   set `DEBIAN_FRONTEND=noninteractive` themselves);
/// - `DNF_VAR_*`: repository variables of dnf;
/// - `SUDO_PROMPT`, `SUDO_ASKPASS`: how sudo (sudo.ws and sudo-rs) asks for a password, on the
///   terminal or through an askpass program (`sudo -A`, an AUR helper's `SudoFlags`), with
///   `DISPLAY`, `WAYLAND_DISPLAY` and `XAUTHORITY` for a graphical one;
/// - for makepkg, which AUR helpers run: `PKGDEST`, `SRCDEST`, `SRCPKGDEST`, `LOGDEST`,
///   `BUILDDIR`, `PACKAGER`, `MAKEPKG_CONF`, `PKGEXT`, `SRCEXT`, `GNUPGHOME` and `GPGKEY`
///   (source signatures), plus what a build needs ([`BUILD_ENV`], opted into by AUR helpers
///   only);
/// - `PARU_CONF`, `XDG_CONFIG_HOME`, `XDG_CACHE_HOME`: where paru and yay keep their
///   configuration and build cache.
///
/// sudo itself resets the environment of the command it runs to its `env_keep` list; this is
/// what reaches sudo, not what sudo passes on.
pub const PACKAGE_ENV: &[&str] = &[
    "DEBIAN_FRONTEND",
    "DEBCONF_*",
    "APT_CONFIG",
    "DNF_VAR_*",
    "SUDO_PROMPT",
    "SUDO_ASKPASS",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "PKGDEST",
    "SRCDEST",
    "SRCPKGDEST",
    "LOGDEST",
    "BUILDDIR",
    "PACKAGER",
    "MAKEPKG_CONF",
    "PKGEXT",
    "SRCEXT",
    "GNUPGHOME",
    "GPGKEY",
    "PARU_CONF",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
];

/// What a container runtime (podman, docker) needs from the host: its configuration, never
/// credentials. Unlike the other lists these are exact names, read once into the adapter's
/// settings and passed to every runtime command as explicit values (so that the runtime check's
/// fingerprint covers them), returned as `ImageArtifact::runtime_env` and kept by supervisors to
/// run and ask the runtime about the container later:
///
/// - `PATH`, `HOME`: the runtime's helpers (conmon, the OCI runtime, netavark) and its
///   per-user configuration;
/// - `XDG_RUNTIME_DIR`, `XDG_CONFIG_HOME`, `XDG_DATA_HOME`: rootless podman's run directory,
///   configuration and storage; `DBUS_SESSION_BUS_ADDRESS`: rootless podman with the systemd
///   cgroup manager creates its scopes through the user's bus;
/// - `CONTAINERS_CONF`, `CONTAINERS_CONF_OVERRIDE`, `CONTAINERS_REGISTRIES_CONF`,
///   `CONTAINERS_STORAGE_CONF`, `STORAGE_DRIVER`, `STORAGE_OPTS`, `REGISTRY_AUTH_FILE`:
///   podman's configuration files, storage and auth file (a path; the credentials stay in it);
/// - `CONTAINER_HOST`, `CONTAINER_CONNECTION`: a remote podman service;
/// - `DOCKER_HOST`, `DOCKER_CONTEXT`, `DOCKER_CONFIG`, `DOCKER_CERT_PATH`, `DOCKER_TLS_VERIFY`:
///   docker's daemon, its TLS material (paths) and its config directory.
///
/// Proxies come with [`BASE_ENV`]: runtime commands inherit it.
pub const CONTAINER_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "DBUS_SESSION_BUS_ADDRESS",
    "CONTAINERS_CONF",
    "CONTAINERS_CONF_OVERRIDE",
    "CONTAINERS_REGISTRIES_CONF",
    "CONTAINERS_STORAGE_CONF",
    "STORAGE_DRIVER",
    "STORAGE_OPTS",
    "REGISTRY_AUTH_FILE",
    "CONTAINER_HOST",
    "CONTAINER_CONNECTION",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
];

/// Whether `entries` let the variable `name` through: no `!` entry matches it and some other
/// entry does (an entry ending in `*` matches by prefix).
pub fn allows<S: AsRef<str>>(entries: &[S], name: &str) -> bool {
    let matches = |pattern: &str| match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    };
    let mut allowed = false;
    for entry in entries {
        match entry.as_ref().strip_prefix('!') {
            Some(excluded) if matches(excluded) => return false,
            Some(_) => {}
            None => allowed = allowed || matches(entry.as_ref()),
        }
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_names_prefixes_and_exclusions() {
        assert!(allows(BASE_ENV, "PATH"));
        assert!(allows(BASE_ENV, "LC_ALL") && allows(BASE_ENV, "LC_CTYPE"));
        assert!(!allows(BASE_ENV, "PATHS") && !allows(BASE_ENV, "LD_PRELOAD"));
        assert!(allows(GIT_ENV, "GIT_SSH_COMMAND") && allows(GIT_ENV, "SSH_AUTH_SOCK"));
        assert!(!allows(GIT_ENV, "GIT_DIR") && !allows(GIT_ENV, "GIT_WORK_TREE"));
        assert!(allows(BUILD_ENV, "GIT_ASKPASS") && !allows(BUILD_ENV, "GIT_INDEX_FILE"));
        assert!(allows(BUILD_ENV, "CUDA_HOME") && allows(BUILD_ENV, "CMAKE_PREFIX_PATH"));
        assert!(allows(&["A*", "!AB"], "AC") && !allows(&["A*", "!AB"], "AB"));
        assert!(!allows(&["!A*", "AB"], "AB"));
        assert!(!allows::<&str>(&[], "PATH"));
    }

    #[test]
    fn no_list_lets_a_secret_through() {
        let secrets = [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "HF_TOKEN",
            "HUGGING_FACE_HUB_TOKEN",
            "GITHUB_TOKEN",
            "GH_TOKEN",
            "SOME_PASSWORD",
            "LLAMA_ORCH_REGISTRY_PASSWORD",
            "OPENAI_API_KEY",
            "LD_PRELOAD",
        ];
        for list in [BASE_ENV, GIT_ENV, BUILD_ENV, PACKAGE_ENV, CONTAINER_ENV] {
            for secret in secrets {
                assert!(!allows(list, secret), "{secret} is allowed by {list:?}");
            }
        }
    }

    #[test]
    fn the_build_list_holds_git_s_list() {
        assert_eq!(BUILD_ENV.len(), BUILD_ONLY_ENV.len() + GIT_ENV.len());
        assert!(GIT_ENV.iter().all(|entry| BUILD_ENV.contains(entry)));
        assert!(CONTAINER_ENV.iter().all(|entry| !entry.contains('*')));
    }
}
