//! Which tools a source build needs and how to install each on the common distributions.
//! Pure tables: the adapters detect the distribution and look programs up.

use serde::{Deserialize, Serialize};

use crate::names::Generator;
use crate::vocabulary::{Backend, Distro, ManagerKind};

/// A tool a step needs on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolRequirement {
    /// Program names; any one of them satisfies the requirement (e.g. `c++`, `g++`, `clang++`).
    pub programs: Vec<String>,
    /// Why it is needed.
    pub purpose: String,
}

/// A C header a build option needs (its `find_package` fails without it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeaderRequirement {
    /// Path under an include directory, e.g. `curl/curl.h`.
    pub header: String,
    /// Why it is needed (names the option).
    pub purpose: String,
}

/// The tools a CMake source build needs for a backend and generator:
/// [`base_build_tools`] and the backend's [`backend_tool`].
pub fn source_build_tools(generator: Option<Generator>, backend: Backend) -> Vec<ToolRequirement> {
    let mut tools = base_build_tools(generator);
    tools.extend(backend_tool(backend));
    tools
}

fn tool(programs: &[&str], purpose: &str) -> ToolRequirement {
    ToolRequirement {
        programs: programs.iter().map(|p| p.to_string()).collect(),
        purpose: purpose.to_string(),
    }
}

/// git, cmake, the generator's program and C/C++ compilers.
pub fn base_build_tools(generator: Option<Generator>) -> Vec<ToolRequirement> {
    let mut tools = vec![
        tool(&["git"], "fetch the source"),
        tool(&["cmake"], "configure the build"),
    ];
    tools.push(match generator {
        Some(Generator::Ninja) => tool(&["ninja"], "run the build"),
        Some(Generator::UnixMakefiles) => tool(&["make"], "run the build"),
        None => tool(&["ninja", "make"], "run the build"),
    });
    tools.push(tool(&["cc", "gcc", "clang"], "compile C"));
    tools.push(tool(&["c++", "g++", "clang++"], "compile C++"));
    tools
}

/// The backend's compiler: nvcc (also looked for under `CUDA_HOME`, `CUDA_PATH` and the usual
/// roots), the HIP compiler (ROCm's clang by `-DCMAKE_HIP_COMPILER`, `HIPCXX` or under
/// `ROCM_PATH`, else hipcc), glslc (also in `$VULKAN_SDK/bin`). HIP and Vulkan builds need
/// more than the compiler (a CMake package, headers, the loader); the source builder's
/// preflight looks for all of it.
pub fn backend_tool(backend: Backend) -> Option<ToolRequirement> {
    match backend {
        Backend::Cpu => None,
        Backend::Cuda => Some(tool(&["nvcc"], "compile the CUDA backend")),
        Backend::Hip => Some(tool(
            &["hipcc"],
            "compile the HIP backend (or ROCm's clang, named by -DCMAKE_HIP_COMPILER or HIPCXX, or under ROCM_PATH)",
        )),
        Backend::Vulkan => Some(tool(&["glslc"], "compile the Vulkan shaders")),
    }
}

/// The command that installs `program` on `distro`, when there is a known package (`sudo`
/// unless `as_root`).
pub fn install_command(program: &str, distro: Distro, as_root: bool) -> Option<String> {
    let package = crate::packages::tool_package(program, distro)?;
    let manager = ManagerKind::for_distro(distro)?;
    Some(manager.install_command(&[package.as_str()], as_root))
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
            install_command("nvcc", Distro::Arch, false).as_deref(),
            Some("sudo pacman -S --needed cuda")
        );
    }
}
