//! Facts about the host that decide how to build, gathered once.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use provisioner_core::Distro;

/// What the builder needs to know about the host besides the programs on PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// Distribution family, for install hints.
    pub distro: Distro,
    /// `CUDA_HOME`, when set and not empty.
    pub cuda_home: Option<String>,
    /// `CUDA_PATH`, when set and not empty.
    pub cuda_path: Option<String>,
    /// Parallel build jobs (`cmake --build --parallel`).
    pub jobs: usize,
    /// The provisioner runs as root: printed install commands carry no `sudo`.
    pub root: bool,
    /// Where the C compiler looks for headers (`CPATH`, `C_INCLUDE_PATH`, then the system's).
    pub include_dirs: Vec<PathBuf>,
    /// Where the linker looks for libraries (`LIBRARY_PATH`, then the system's).
    pub library_dirs: Vec<PathBuf>,
    /// `ROCM_PATH`, when set and not empty.
    pub rocm_path: Option<PathBuf>,
    /// `HIP_PATH`, when set and not empty.
    pub hip_path: Option<PathBuf>,
    /// `HIPCXX` (the HIP compiler CMake's `enable_language(HIP)` uses), when set.
    pub hipcxx: Option<PathBuf>,
    /// `VULKAN_SDK` (LunarG's SDK root, read by CMake's FindVulkan), when set.
    pub vulkan_sdk: Option<PathBuf>,
    /// `CMAKE_PREFIX_PATH` entries (where `find_package` looks first).
    pub cmake_prefix_path: Vec<PathBuf>,
}

impl HostFacts {
    /// Reads `/etc/os-release` (missing → [`Distro::Unknown`]), `CUDA_HOME`, `CUDA_PATH` and the
    /// available parallelism.
    pub fn detect() -> Self {
        let distro = adapters_host::read_capped(
            std::path::Path::new("/etc/os-release"),
            adapters_host::read::MAX_SMALL,
        )
        .map(|text| Distro::from_os_release(&text))
        .unwrap_or(Distro::Unknown);
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        HostFacts {
            distro,
            cuda_home: env("CUDA_HOME"),
            cuda_path: env("CUDA_PATH"),
            jobs: std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            root: adapters_host::running_as_root(),
            include_dirs: include_dirs(env("CPATH").as_deref(), env("C_INCLUDE_PATH").as_deref()),
            library_dirs: library_dirs(env("LIBRARY_PATH").as_deref()),
            rocm_path: env("ROCM_PATH").map(PathBuf::from),
            hip_path: env("HIP_PATH").map(PathBuf::from),
            hipcxx: env("HIPCXX").map(PathBuf::from),
            vulkan_sdk: env("VULKAN_SDK").map(PathBuf::from),
            cmake_prefix_path: env("CMAKE_PREFIX_PATH")
                .map(|list| split_list(&list))
                .unwrap_or_default(),
        }
    }
}

impl Default for HostFacts {
    /// An unknown distribution, no CUDA variables, one job, not root.
    fn default() -> Self {
        HostFacts {
            distro: Distro::Unknown,
            cuda_home: None,
            cuda_path: None,
            jobs: 1,
            root: false,
            include_dirs: include_dirs(None, None),
            library_dirs: library_dirs(None),
            rocm_path: None,
            hip_path: None,
            hipcxx: None,
            vulkan_sdk: None,
            cmake_prefix_path: Vec::new(),
        }
    }
}

/// The directories a C compiler searches by default on Linux, plus `CPATH` and
/// `C_INCLUDE_PATH` (gcc(1), "Environment Variables").
pub fn include_dirs(cpath: Option<&str>, c_include_path: Option<&str>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = [cpath, c_include_path]
        .into_iter()
        .flatten()
        .flat_map(|list| list.split(':'))
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .collect();
    let multiarch = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    for dir in ["/usr/local/include", multiarch.as_str(), "/usr/include"] {
        dirs.push(PathBuf::from(dir));
    }
    dirs
}

/// The directories of a `:`-separated list, empty entries dropped.
fn split_list(list: &str) -> Vec<PathBuf> {
    list.split(':')
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// `LIBRARY_PATH`, then the directories the linker searches by default on Linux (ld.so(8)
/// and the multiarch layout of Debian).
pub fn library_dirs(library_path: Option<&str>) -> Vec<PathBuf> {
    let mut dirs = library_path.map(split_list).unwrap_or_default();
    let multiarch = format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH);
    for dir in [
        "/usr/local/lib",
        multiarch.as_str(),
        "/usr/lib64",
        "/usr/lib",
    ] {
        dirs.push(PathBuf::from(dir));
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_dirs_put_the_environments_first() {
        let dirs = include_dirs(Some("/a:/b"), Some(""));
        assert_eq!(dirs[..2], [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert!(dirs.contains(&PathBuf::from("/usr/include")));
    }

    #[test]
    fn detect_gives_at_least_one_job() {
        let facts = HostFacts::detect();
        assert!(facts.jobs >= 1);
        assert!(facts.cuda_home.as_deref() != Some(""));
    }
}
