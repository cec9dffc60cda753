//! Which tools a source build needs and how to install each on the common distributions.
//! Pure tables: the adapters detect the distribution and look programs up.

use crate::plan::ToolRequirement;
use crate::prepared::Backend;

/// Linux distribution families with different package managers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distro {
    /// Debian, Ubuntu and derivatives (apt).
    Debian,
    /// Arch, CachyOS, EndeavourOS, Manjaro (pacman).
    Arch,
    /// Fedora, RHEL and derivatives (dnf).
    Fedora,
    /// Anything else.
    Unknown,
}

impl Distro {
    /// Parses a config value (`debian`, `arch`, `fedora`, or a distribution id they cover).
    pub fn parse(text: &str) -> Option<Distro> {
        match Distro::from_os_release(&format!("ID={text}\n")) {
            Distro::Unknown => None,
            known => Some(known),
        }
    }

    /// Lower-case family name.
    pub fn as_str(self) -> &'static str {
        match self {
            Distro::Debian => "debian",
            Distro::Arch => "arch",
            Distro::Fedora => "fedora",
            Distro::Unknown => "unknown",
        }
    }

    /// Detects the family from the text of `/etc/os-release` (`ID`, then `ID_LIKE`).
    pub fn from_os_release(text: &str) -> Distro {
        let value = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_ascii_lowercase())
                .unwrap_or_default()
        };
        let family = |id: &str| match id {
            "debian" | "ubuntu" | "linuxmint" | "pop" => Some(Distro::Debian),
            "arch" | "cachyos" | "endeavouros" | "manjaro" | "archarm" => Some(Distro::Arch),
            "fedora" | "rhel" | "centos" | "rocky" | "almalinux" => Some(Distro::Fedora),
            _ => None,
        };
        let id = value("ID");
        family(&id)
            .or_else(|| value("ID_LIKE").split_whitespace().find_map(family))
            .unwrap_or(Distro::Unknown)
    }
}

/// The tools a CMake source build needs for a backend and generator.
pub fn source_build_tools(generator: Option<&str>, backend: Backend) -> Vec<ToolRequirement> {
    let tool = |programs: &[&str], purpose: &str| ToolRequirement {
        programs: programs.iter().map(|p| p.to_string()).collect(),
        purpose: purpose.to_string(),
    };
    let mut tools = vec![
        tool(&["git"], "fetch the source"),
        tool(&["cmake"], "configure the build"),
    ];
    tools.push(match generator {
        Some("Ninja") => tool(&["ninja"], "run the build"),
        Some(_) => tool(&["make"], "run the build"),
        None => tool(&["ninja", "make"], "run the build"),
    });
    tools.push(tool(&["cc", "gcc", "clang"], "compile C"));
    tools.push(tool(&["c++", "g++", "clang++"], "compile C++"));
    match backend {
        Backend::Cpu => {}
        Backend::Cuda => tools.push(tool(&["nvcc"], "compile the CUDA backend")),
        Backend::Hip => tools.push(tool(&["hipcc"], "compile the HIP backend")),
        Backend::Vulkan => tools.push(tool(&["glslc"], "compile the Vulkan shaders")),
    }
    tools
}

/// The command that installs `program` on `distro`, when there is a known package.
pub fn install_command(program: &str, distro: Distro) -> Option<String> {
    let package = crate::packages::tool_package(program, distro)?;
    let manager = crate::packages::ManagerKind::for_distro(distro)?;
    Some(manager.install_command(&[(package.to_string(), None)]))
}

/// Places a CUDA toolkit is commonly installed when `nvcc` is not on PATH.
pub fn cuda_roots(env_cuda_home: Option<&str>, env_cuda_path: Option<&str>) -> Vec<String> {
    let mut roots: Vec<String> = [env_cuda_home, env_cuda_path]
        .into_iter()
        .flatten()
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    for root in ["/usr/local/cuda", "/opt/cuda"] {
        if !roots.iter().any(|r| r == root) {
            roots.push(root.to_string());
        }
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distro_detection_uses_id_then_id_like() {
        assert_eq!(Distro::from_os_release("ID=debian\n"), Distro::Debian);
        assert_eq!(
            Distro::from_os_release("ID=cachyos\nID_LIKE=arch\n"),
            Distro::Arch
        );
        assert_eq!(
            Distro::from_os_release("ID=\"myos\"\nID_LIKE=\"rhel fedora\"\n"),
            Distro::Fedora
        );
        assert_eq!(Distro::from_os_release("ID=gentoo\n"), Distro::Unknown);
    }

    #[test]
    fn cuda_needs_nvcc_and_cpu_does_not() {
        let names = |b| {
            source_build_tools(None, b)
                .into_iter()
                .flat_map(|t| t.programs)
                .collect::<Vec<_>>()
        };
        assert!(names(Backend::Cuda).contains(&"nvcc".to_string()));
        assert!(!names(Backend::Cpu).contains(&"nvcc".to_string()));
        assert_eq!(
            install_command("nvcc", Distro::Arch).as_deref(),
            Some("sudo pacman -S --needed cuda")
        );
    }
}
