//! Distribution packages: the managers the provisioner drives, which package ships which engine
//! on which distribution, which package provides which build tool, and how an installed package
//! becomes an `engine_version`. Pure tables and string functions; the adapters run the managers.
//!
//! Contributors extend [`ENGINE_PACKAGES`], [`BACKEND_PACKAGES`] and [`TOOL_PACKAGES`]; nothing
//! else needs to change.

use crate::names::{PackageName, PackageVersion};
use crate::secret::PackageRepo;
use crate::vocabulary::{Backend, Distro, Engine, ManagerKind};

impl ManagerKind {
    /// The command line that installs the latest `packages` (build tools; display only:
    /// adapters build argv themselves, and the managers' own hints pin exactly). `sudo` leads
    /// unless `as_root`; paru and yay never run as root and call sudo themselves.
    pub fn install_command(self, packages: &[&str], as_root: bool) -> String {
        let names = packages.join(" ");
        let sudo = if as_root { "" } else { "sudo " };
        match self {
            ManagerKind::Apt => format!("{sudo}apt-get install -y {names}"),
            ManagerKind::Pacman => format!("{sudo}pacman -S --needed {names}"),
            ManagerKind::Paru => format!("paru -S --needed {names}"),
            ManagerKind::Yay => format!("yay -S --needed {names}"),
            ManagerKind::Dnf => format!("{sudo}dnf install -y {names}"),
        }
    }
}

/// Where a package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The distribution's official repositories.
    Official,
    /// The Arch User Repository (built locally by an AUR helper).
    Aur,
}

/// One engine package on one distribution family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnginePackage {
    /// Engine shipped.
    pub engine: Engine,
    /// Distribution family.
    pub distro: Distro,
    /// Package name.
    pub name: &'static str,
    /// Backend it is built for.
    pub backend: Backend,
    /// Official repositories or the AUR.
    pub origin: Origin,
    /// The server executable it installs (found in its file list at install time).
    pub executable: &'static str,
}

const fn engine_package(
    distro: Distro,
    name: &'static str,
    backend: Backend,
    origin: Origin,
) -> EnginePackage {
    EnginePackage {
        engine: Engine::Llamacpp,
        distro,
        name,
        backend,
        origin,
        executable: "llama-server",
    }
}

/// Packages that ship an engine server, per distribution (checked against each distribution's
/// package index and file lists, 2026-11). The first entry per (engine, distro, backend) is the
/// default when a pool names no package.
pub const ENGINE_PACKAGES: &[EnginePackage] = &[
    // Debian 13+/Ubuntu 25.04+: `llama.cpp-tools` ships /usr/bin/llama-server; GPU support comes
    // from the libggml0-backend-* packages ([`BACKEND_PACKAGES`]), installed with it.
    engine_package(
        Distro::Debian,
        "llama.cpp-tools",
        Backend::Cpu,
        Origin::Official,
    ),
    // Arch `extra`: llama-cpp (CPU), llama-cpp-rocm (HIP); the AUR has the CUDA and Vulkan builds.
    engine_package(Distro::Arch, "llama-cpp", Backend::Cpu, Origin::Official),
    engine_package(
        Distro::Arch,
        "llama-cpp-rocm",
        Backend::Hip,
        Origin::Official,
    ),
    engine_package(Distro::Arch, "llama.cpp-cuda", Backend::Cuda, Origin::Aur),
    engine_package(
        Distro::Arch,
        "llama.cpp-vulkan",
        Backend::Vulkan,
        Origin::Aur,
    ),
    engine_package(Distro::Arch, "llama.cpp-hip", Backend::Hip, Origin::Aur),
    engine_package(Distro::Arch, "llama.cpp", Backend::Cpu, Origin::Aur),
    // Fedora 40+: `llama-cpp` ships /usr/bin/llama-server.
    engine_package(Distro::Fedora, "llama-cpp", Backend::Cpu, Origin::Official),
];

/// A package that carries one GPU backend of a server shipped by another package: installed
/// with the server, and its files are checked with the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendPackage {
    /// Engine served.
    pub engine: Engine,
    /// Distribution family.
    pub distro: Distro,
    /// The server package it extends.
    pub server: &'static str,
    /// Backend it carries.
    pub backend: Backend,
    /// Package name.
    pub name: &'static str,
    /// The library package it plugs into and depends on at exactly its own version: the backend
    /// package is installed at the version of this package that is installed with the server
    /// (it comes from that library's source, which is versioned apart from the server's).
    pub library: &'static str,
}

const fn debian_backend(backend: Backend, name: &'static str) -> BackendPackage {
    BackendPackage {
        engine: Engine::Llamacpp,
        distro: Distro::Debian,
        server: "llama.cpp-tools",
        backend,
        name,
        library: "libggml0",
    }
}

/// GPU backends that ship apart from the server (checked against Debian's package index,
/// 2026-11): Debian and Ubuntu build the ggml backends from the `ggml` source package
/// (`libggml0-backend-*`, versioned like `libggml0`, e.g. 0.9.11-1, each depending on
/// `libggml0 (= its own version)`), while `llama.cpp-tools` comes from the `llama.cpp` source
/// (e.g. 8064+dfsg-2) and depends on `libggml0 (>= …)` only; `libggml0` merely suggests the
/// backends, so none is installed with the server.
pub const BACKEND_PACKAGES: &[BackendPackage] = &[
    debian_backend(Backend::Cuda, "libggml0-backend-cuda"),
    debian_backend(Backend::Hip, "libggml0-backend-hip"),
    debian_backend(Backend::Vulkan, "libggml0-backend-vulkan"),
];

/// The package that carries `backend` for the server package `server` on `distro`, when the
/// backend ships apart from the server.
pub fn backend_package(
    engine: Engine,
    distro: Distro,
    server: &str,
    backend: Backend,
) -> Option<&'static BackendPackage> {
    BACKEND_PACKAGES.iter().find(|p| {
        p.engine == engine && p.distro == distro && p.server == server && p.backend == backend
    })
}

/// The packages known to ship `engine` on `distro`.
pub fn engine_packages(engine: Engine, distro: Distro) -> Vec<&'static EnginePackage> {
    ENGINE_PACKAGES
        .iter()
        .filter(|p| p.engine == engine && p.distro == distro)
        .collect()
}

/// The default package for `engine` with `backend` on `distro`: a package built for that
/// backend, else a server package whose backend ships in a [`BackendPackage`] (installed with
/// it).
pub fn default_engine_package(
    engine: Engine,
    distro: Distro,
    backend: Backend,
) -> Option<&'static EnginePackage> {
    let server = |p: &&EnginePackage| p.engine == engine && p.distro == distro;
    ENGINE_PACKAGES
        .iter()
        .filter(server)
        .find(|p| p.backend == backend)
        .or_else(|| {
            ENGINE_PACKAGES
                .iter()
                .filter(server)
                .find(|p| backend_package(engine, distro, p.name, backend).is_some())
        })
}

/// Everything a GPU backend's source build needs from the distribution, as one set per family
/// (Debian, Arch, Fedora; space-separated): the compiler and what the tree's `find_package`
/// needs besides it. Debian: hipcc pulls clang, libamdhip64-dev ships
/// `cmake/hip/hip-config.cmake`; libvulkan-dev ships the headers and `libvulkan.so`. Arch:
/// rocm-hip-sdk is ROCm's meta package; shaderc ships glslc. Fedora: rocm-hip-devel and
/// vulkan-loader-devel are the development packages.
pub const BACKEND_BUILD_PACKAGES: &[(Backend, &str, &str, &str)] = &[
    (Backend::Cuda, "nvidia-cuda-toolkit", "cuda", "cuda-toolkit"),
    (
        Backend::Hip,
        "hipcc libamdhip64-dev",
        "rocm-hip-sdk",
        "hipcc rocm-hip-devel",
    ),
    (
        Backend::Vulkan,
        "glslc libvulkan-dev",
        "shaderc vulkan-headers vulkan-icd-loader",
        "glslc vulkan-headers vulkan-loader-devel",
    ),
];

/// The packages that give `backend`'s source build everything it needs on `distro`
/// ([`BACKEND_BUILD_PACKAGES`]); empty for the CPU and for unknown distributions.
pub fn backend_build_packages(backend: Backend, distro: Distro) -> Vec<PackageName> {
    BACKEND_BUILD_PACKAGES
        .iter()
        .find(|(b, ..)| *b == backend)
        .and_then(|(_, debian, arch, fedora)| match distro {
            Distro::Debian => Some(*debian),
            Distro::Arch => Some(*arch),
            Distro::Fedora => Some(*fedora),
            Distro::Unknown => None,
        })
        .map(|names| names.split(' ').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

/// The package providing a build tool, or a header a build option needs (`curl/curl.h`), per
/// family: (program or header, debian, arch, fedora).
pub const TOOL_PACKAGES: &[(&str, &str, &str, &str)] = &[
    ("git", "git", "git", "git"),
    ("cmake", "cmake", "cmake", "cmake"),
    ("make", "make", "make", "make"),
    ("ninja", "ninja-build", "ninja", "ninja-build"),
    ("cc", "gcc", "gcc", "gcc"),
    ("gcc", "gcc", "gcc", "gcc"),
    ("c++", "g++", "gcc", "gcc-c++"),
    ("g++", "g++", "gcc", "gcc-c++"),
    ("clang", "clang", "clang", "clang"),
    ("clang++", "clang", "clang", "clang"),
    ("ccache", "ccache", "ccache", "ccache"),
    ("nvcc", "nvidia-cuda-toolkit", "cuda", "cuda-toolkit"),
    ("hipcc", "hipcc", "rocm-hip-sdk", "rocm-hip-devel"),
    ("glslc", "glslc", "shaderc", "glslc"),
    ("podman", "podman", "podman", "podman"),
    ("docker", "docker.io", "docker", "moby-engine"),
    // What podman's `run` needs besides podman: the init binary behind `--init`, an OCI
    // runtime, the network backend that publishes ports (CNI's `bridge`/`portmap` plugins or
    // netavark; slirp4netns or pasta rootless), and NVIDIA's CDI tooling for GPUs.
    ("catatonit", "catatonit", "catatonit", "catatonit"),
    ("runc", "runc", "runc", "runc"),
    ("crun", "crun", "crun", "crun"),
    ("conmon", "conmon", "conmon", "conmon"),
    ("netavark", "netavark", "netavark", "netavark"),
    (
        "aardvark-dns",
        "aardvark-dns",
        "aardvark-dns",
        "aardvark-dns",
    ),
    (
        "bridge",
        "containernetworking-plugins",
        "cni-plugins",
        "containernetworking-plugins",
    ),
    (
        "portmap",
        "containernetworking-plugins",
        "cni-plugins",
        "containernetworking-plugins",
    ),
    ("slirp4netns", "slirp4netns", "slirp4netns", "slirp4netns"),
    ("pasta", "passt", "passt", "passt"),
    (
        "nvidia-ctk",
        "nvidia-container-toolkit",
        "nvidia-container-toolkit",
        "nvidia-container-toolkit",
    ),
    ("curl", "curl", "curl", "curl"),
    // Headers: the development package that installs them.
    (
        "curl/curl.h",
        "libcurl4-openssl-dev",
        "curl",
        "libcurl-devel",
    ),
];

/// The package that provides `program` (or the header `program`) on `distro`.
pub fn tool_package(program: &str, distro: Distro) -> Option<PackageName> {
    let (_, debian, arch, fedora) = TOOL_PACKAGES.iter().find(|(p, ..)| *p == program)?;
    let name = match distro {
        Distro::Debian => debian,
        Distro::Arch => arch,
        Distro::Fedora => fedora,
        Distro::Unknown => return None,
    };
    // Every name in the table is a valid package name (a test checks them all).
    name.parse().ok()
}

/// A short, stable label for a repository: the name itself when it is one (`extra`,
/// `bookworm-backports`), else `repo-` and 8 hex digits of its BLAKE3 digest (URLs and source
/// lines are long and may name local paths).
pub fn repository_label(repository: &PackageRepo) -> String {
    let repository = repository.expose();
    let plain = !repository.is_empty()
        && repository.len() <= 40
        && repository
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain {
        repository.to_string()
    } else {
        format!(
            "repo-{}",
            &blake3::hash(repository.as_bytes()).to_hex()[..8]
        )
    }
}

/// The deterministic version of a package-mode engine: engine, manager, package, the exact
/// installed version string and, when one was configured, the repository's label.
pub fn package_engine_version(
    engine: Engine,
    manager: ManagerKind,
    package: &PackageName,
    version: &PackageVersion,
    repository: Option<&PackageRepo>,
) -> String {
    let mut text = format!("{engine}-{manager}-{package}-{version}");
    if let Some(repository) = repository {
        text.push('@');
        text.push_str(&repository_label(repository));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_a_default_cpu_package_that_ships_the_server() {
        for distro in [Distro::Debian, Distro::Arch, Distro::Fedora] {
            let package = default_engine_package(Engine::Llamacpp, distro, Backend::Cpu)
                .unwrap_or_else(|| panic!("no default for {distro:?}"));
            assert_eq!(package.executable, "llama-server");
            assert_eq!(package.origin, Origin::Official, "{package:?}");
            assert!(package.name.parse::<PackageName>().is_ok());
        }
        assert_eq!(
            default_engine_package(Engine::Llamacpp, Distro::Arch, Backend::Cuda)
                .map(|p| (p.name, p.origin)),
            Some(("llama.cpp-cuda", Origin::Aur))
        );
        assert!(default_engine_package(Engine::Llamacpp, Distro::Unknown, Backend::Cpu).is_none());
    }

    #[test]
    fn debian_gpu_backends_ship_apart_from_the_server() {
        for (backend, name) in [
            (Backend::Cuda, "libggml0-backend-cuda"),
            (Backend::Hip, "libggml0-backend-hip"),
            (Backend::Vulkan, "libggml0-backend-vulkan"),
        ] {
            let server = default_engine_package(Engine::Llamacpp, Distro::Debian, backend)
                .unwrap_or_else(|| panic!("no Debian server for {backend}"));
            assert_eq!(server.name, "llama.cpp-tools");
            let carrier =
                backend_package(Engine::Llamacpp, Distro::Debian, server.name, backend).unwrap();
            assert_eq!((carrier.name, carrier.library), (name, "libggml0"));
            assert!(carrier.name.parse::<PackageName>().is_ok());
            assert!(carrier.library.parse::<PackageName>().is_ok());
        }
        // The CPU build needs no other package; another server gets none of Debian's backends.
        assert!(
            backend_package(
                Engine::Llamacpp,
                Distro::Debian,
                "llama.cpp-tools",
                Backend::Cpu
            )
            .is_none()
        );
        assert!(
            backend_package(
                Engine::Llamacpp,
                Distro::Debian,
                "my-llama",
                Backend::Vulkan
            )
            .is_none()
        );
        // Arch builds a package per backend; Fedora ships none for CUDA.
        assert_eq!(
            default_engine_package(Engine::Llamacpp, Distro::Arch, Backend::Hip).map(|p| p.name),
            Some("llama-cpp-rocm")
        );
        assert!(default_engine_package(Engine::Llamacpp, Distro::Fedora, Backend::Cuda).is_none());
    }

    #[test]
    fn install_commands_carry_sudo_only_when_not_root() {
        assert_eq!(
            ManagerKind::Apt.install_command(&["cmake", "gcc"], false),
            "sudo apt-get install -y cmake gcc"
        );
        assert_eq!(
            ManagerKind::Pacman.install_command(&["cmake"], true),
            "pacman -S --needed cmake"
        );
        assert_eq!(
            ManagerKind::Dnf.install_command(&["gcc-c++"], true),
            "dnf install -y gcc-c++"
        );
        assert_eq!(
            ManagerKind::Yay.install_command(&["cmake"], false),
            "yay -S --needed cmake"
        );
    }

    #[test]
    fn engine_versions_are_exact_and_name_the_repository() {
        let version = |name: &str, version: &str, repo: Option<&str>| {
            package_engine_version(
                Engine::Llamacpp,
                ManagerKind::Apt,
                &name.parse().unwrap(),
                &version.parse().unwrap(),
                repo.map(|r| r.parse().unwrap()).as_ref(),
            )
        };
        assert_eq!(
            version("llama-server", "1.0.0", None),
            "llamacpp-apt-llama-server-1.0.0"
        );
        assert_eq!(
            version("llama-cpp", "1:b6000-1", Some("extra")),
            "llamacpp-apt-llama-cpp-1:b6000-1@extra"
        );
        let local = version("x", "1", Some("deb [trusted=yes] file:/srv/repo ./"));
        assert!(local.starts_with("llamacpp-apt-x-1@repo-"), "{local}");
        assert_eq!(local.len(), "llamacpp-apt-x-1@repo-".len() + 8);
    }

    #[test]
    fn tools_map_to_each_familys_package() {
        let name = |program, distro| tool_package(program, distro).map(|n| n.to_string());
        assert_eq!(name("g++", Distro::Fedora).as_deref(), Some("gcc-c++"));
        assert_eq!(
            name("ninja", Distro::Debian).as_deref(),
            Some("ninja-build")
        );
        assert_eq!(name("nvcc", Distro::Arch).as_deref(), Some("cuda"));
        assert_eq!(name("cmake", Distro::Unknown), None);
        assert_eq!(name("nonesuch", Distro::Debian), None);
        for (_, debian, arch, fedora) in TOOL_PACKAGES {
            for package in [debian, arch, fedora] {
                assert!(package.parse::<PackageName>().is_ok(), "{package}");
            }
        }
    }
}
