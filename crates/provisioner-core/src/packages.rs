//! Distribution packages: the managers the provisioner drives, which package ships which engine
//! on which distribution, which package provides which build tool, and how an installed package
//! becomes an `engine_version`. Pure tables and string functions; the adapters run the managers.
//!
//! Contributors extend [`ENGINE_PACKAGES`] and [`TOOL_PACKAGES`]; nothing else needs to change.

use serde::{Deserialize, Serialize};

use crate::config::Engine;
use crate::prepared::Backend;
use crate::tools::Distro;

/// A package manager (or AUR helper) the provisioner can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManagerKind {
    /// Debian, Ubuntu: `apt-get` to install, `dpkg-query` to query.
    Apt,
    /// Arch and derivatives: `pacman`.
    Pacman,
    /// AUR helper `paru` (never run as root).
    Paru,
    /// AUR helper `yay` (never run as root).
    Yay,
    /// Fedora, RHEL-likes: `dnf` to install, `rpm` to query.
    Dnf,
}

impl ManagerKind {
    /// Every kind, in the order the config documents them.
    pub const ALL: [ManagerKind; 5] = [
        ManagerKind::Apt,
        ManagerKind::Pacman,
        ManagerKind::Paru,
        ManagerKind::Yay,
        ManagerKind::Dnf,
    ];

    /// The name used in configs, plans and versions.
    pub fn as_str(self) -> &'static str {
        match self {
            ManagerKind::Apt => "apt",
            ManagerKind::Pacman => "pacman",
            ManagerKind::Paru => "paru",
            ManagerKind::Yay => "yay",
            ManagerKind::Dnf => "dnf",
        }
    }

    /// Parses a config value.
    pub fn parse(text: &str) -> Option<ManagerKind> {
        ManagerKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The distribution's own manager.
    pub fn for_distro(distro: Distro) -> Option<ManagerKind> {
        match distro {
            Distro::Debian => Some(ManagerKind::Apt),
            Distro::Arch => Some(ManagerKind::Pacman),
            Distro::Fedora => Some(ManagerKind::Dnf),
            Distro::Unknown => None,
        }
    }

    /// Whether this is an AUR helper (builds as the invoking user; refuses root).
    pub fn is_aur_helper(self) -> bool {
        matches!(self, ManagerKind::Paru | ManagerKind::Yay)
    }

    /// The program that installs packages.
    pub fn program(self) -> &'static str {
        match self {
            ManagerKind::Apt => "apt-get",
            other => other.as_str(),
        }
    }

    /// The command line that installs `packages` (display only; adapters build argv
    /// themselves). `versioned` entries are `(name, Some(version))` for exact pins.
    pub fn install_command(self, packages: &[(String, Option<String>)]) -> String {
        let spec = |(name, version): &(String, Option<String>)| match (self, version) {
            (_, None) => name.clone(),
            (ManagerKind::Apt, Some(v)) => format!("{name}={v}"),
            (ManagerKind::Dnf, Some(v)) => format!("{name}-{v}"),
            (_, Some(v)) => format!("{name}={v}"),
        };
        let names: Vec<String> = packages.iter().map(spec).collect();
        let names = names.join(" ");
        match self {
            ManagerKind::Apt => format!("sudo apt-get install -y {names}"),
            ManagerKind::Pacman => format!("sudo pacman -S --needed {names}"),
            ManagerKind::Paru => format!("paru -S --needed {names}"),
            ManagerKind::Yay => format!("yay -S --needed {names}"),
            ManagerKind::Dnf => format!("sudo dnf install -y {names}"),
        }
    }
}

impl std::fmt::Display for ManagerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    // from the libggml0-backend-* packages it can use.
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

/// The packages known to ship `engine` on `distro`.
pub fn engine_packages(engine: Engine, distro: Distro) -> Vec<&'static EnginePackage> {
    ENGINE_PACKAGES
        .iter()
        .filter(|p| p.engine == engine && p.distro == distro)
        .collect()
}

/// The default package for `engine` with `backend` on `distro`.
pub fn default_engine_package(
    engine: Engine,
    distro: Distro,
    backend: Backend,
) -> Option<&'static EnginePackage> {
    ENGINE_PACKAGES
        .iter()
        .find(|p| p.engine == engine && p.distro == distro && p.backend == backend)
}

/// The package providing a build tool, per family: (program, debian, arch, fedora).
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
    ("curl", "curl", "curl", "curl"),
];

/// The package that provides `program` on `distro`.
pub fn tool_package(program: &str, distro: Distro) -> Option<&'static str> {
    let (_, debian, arch, fedora) = TOOL_PACKAGES.iter().find(|(p, ..)| *p == program)?;
    match distro {
        Distro::Debian => Some(debian),
        Distro::Arch => Some(arch),
        Distro::Fedora => Some(fedora),
        Distro::Unknown => None,
    }
}

/// Whether `name` is a plausible package name on any supported manager: starts with a letter or
/// digit (never `-`, so it cannot be read as an option) and holds only `a-z A-Z 0-9 . _ + - @`.
pub fn is_valid_package_name(name: &str) -> bool {
    name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-' | '@'))
}

/// Whether `version` is a plausible package version (Debian `epoch:upstream-revision`, pacman
/// `epoch:pkgver-pkgrel` such as Arch's `b6000-1`, RPM `version-release`): starts with a letter
/// or digit (never `-`) and holds only `a-z A-Z 0-9 . _ + ~ : -`.
pub fn is_valid_package_version(version: &str) -> bool {
    version.len() <= 128
        && version
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '~' | ':' | '-'))
}

/// A short, stable label for a repository: the name itself when it is one (`extra`,
/// `bookworm-backports`), else `repo-` and 8 hex digits of its BLAKE3 digest (URLs and source
/// lines are long and may name local paths).
pub fn repository_label(repository: &str) -> String {
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
    package: &str,
    version: &str,
    repository: Option<&str>,
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
            assert!(is_valid_package_name(package.name));
        }
        assert_eq!(
            default_engine_package(Engine::Llamacpp, Distro::Arch, Backend::Cuda)
                .map(|p| (p.name, p.origin)),
            Some(("llama.cpp-cuda", Origin::Aur))
        );
        assert!(default_engine_package(Engine::Llamacpp, Distro::Unknown, Backend::Cpu).is_none());
    }

    #[test]
    fn install_commands_pin_in_each_managers_syntax() {
        let pinned = [(
            "llama.cpp-tools".to_string(),
            Some("8064+dfsg-2".to_string()),
        )];
        assert_eq!(
            ManagerKind::Apt.install_command(&pinned),
            "sudo apt-get install -y llama.cpp-tools=8064+dfsg-2"
        );
        let pinned = [("llama-cpp".to_string(), Some("b6000-1.fc42".to_string()))];
        assert_eq!(
            ManagerKind::Dnf.install_command(&pinned),
            "sudo dnf install -y llama-cpp-b6000-1.fc42"
        );
        let tools = [("cmake".to_string(), None), ("gcc".to_string(), None)];
        assert_eq!(
            ManagerKind::Pacman.install_command(&tools),
            "sudo pacman -S --needed cmake gcc"
        );
        assert_eq!(
            ManagerKind::Yay.install_command(&tools),
            "yay -S --needed cmake gcc"
        );
    }

    #[test]
    fn names_and_versions_that_could_be_options_or_shell_are_refused() {
        assert!(is_valid_package_name("llama.cpp-tools"));
        assert!(is_valid_package_name("gcc-c++"));
        assert!(!is_valid_package_name("--config=/tmp/evil"));
        assert!(!is_valid_package_name("llama; rm -rf /"));
        assert!(!is_valid_package_name("$(touch x)"));
        assert!(!is_valid_package_name(""));
        assert!(is_valid_package_version("1:2.3~rc1+dfsg-2"));
        assert!(is_valid_package_version("6000-1.fc42"));
        assert!(is_valid_package_version("b9727-1"));
        assert!(!is_valid_package_version("-1"));
        assert!(!is_valid_package_version("1.0 && reboot"));
    }

    #[test]
    fn engine_versions_are_exact_and_name_the_repository() {
        assert_eq!(
            package_engine_version(
                Engine::Llamacpp,
                ManagerKind::Apt,
                "llama-server",
                "1.0.0",
                None
            ),
            "llamacpp-apt-llama-server-1.0.0"
        );
        assert_eq!(
            package_engine_version(
                Engine::Llamacpp,
                ManagerKind::Pacman,
                "llama-cpp",
                "1:b6000-1",
                Some("extra")
            ),
            "llamacpp-pacman-llama-cpp-1:b6000-1@extra"
        );
        let local = package_engine_version(
            Engine::Llamacpp,
            ManagerKind::Apt,
            "x",
            "1",
            Some("deb [trusted=yes] file:/srv/repo ./"),
        );
        assert!(local.starts_with("llamacpp-apt-x-1@repo-"), "{local}");
        assert_eq!(local.len(), "llamacpp-apt-x-1@repo-".len() + 8);
    }

    #[test]
    fn tools_map_to_each_familys_package() {
        assert_eq!(tool_package("g++", Distro::Fedora), Some("gcc-c++"));
        assert_eq!(tool_package("ninja", Distro::Debian), Some("ninja-build"));
        assert_eq!(tool_package("nvcc", Distro::Arch), Some("cuda"));
        assert_eq!(tool_package("cmake", Distro::Unknown), None);
        assert_eq!(tool_package("nonesuch", Distro::Debian), None);
    }
}
