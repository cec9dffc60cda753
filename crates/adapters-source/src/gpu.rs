//! What the tree's `find_package` calls need for a HIP or Vulkan build, looked for where CMake
//! looks, before anything is fetched or configured.
//!
//! - HIP (ggml/src/ggml-hip/CMakeLists.txt: `enable_language(HIP)`, `find_package(hip)`): the
//!   HIP compiler is ROCm's clang, named by `-DCMAKE_HIP_COMPILER`, else the `HIPCXX`
//!   environment variable (CMake's documented order for `enable_language(HIP)`), else found as
//!   `<root>/llvm/bin/clang` under `ROCM_PATH`, `HIP_PATH` or `/opt/rocm` (then passed as
//!   `-DCMAKE_HIP_COMPILER`, as nvcc off PATH is), else `hipcc` on PATH (distribution packages:
//!   Debian's hipcc wraps its clang); and the `hip` CMake package
//!   (`lib/cmake/hip/hip-config.cmake`) under those roots, `CMAKE_PREFIX_PATH` or the system's
//!   library directories.
//! - Vulkan (ggml-vulkan: `find_package(Vulkan COMPONENTS glslc REQUIRED)`, FindVulkan.cmake):
//!   `glslc` on PATH or in `$VULKAN_SDK/bin`, the header `vulkan/vulkan.h` and the loader
//!   `libvulkan.so` (the development symlink), each also under `$VULKAN_SDK`.
//!
//! Whatever is missing is reported at once, and the install hint names the whole set of
//! packages this distribution splits it into ([`backend_build_packages`]).

use std::path::{Path, PathBuf};

use provisioner_core::packages::backend_build_packages;
use provisioner_core::{Backend, CacheEntries, Error, PackageName, Shell, ToolInfo};

use crate::host::HostFacts;

/// What was found for a GPU backend: the compiler to fingerprint, and flags to pass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Found {
    /// `(role, tool)` entries that join the toolchain fingerprint (`hip-compiler`, `glslc`).
    pub tools: Vec<(String, ToolInfo)>,
    /// Flags preflight adds (`-DCMAKE_HIP_COMPILER=<root>/llvm/bin/clang`).
    pub flags: Vec<String>,
    /// Notes for the user (where the compiler was found).
    pub notes: Vec<String>,
}

/// One missing piece: what, and where it was looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Missing {
    /// What is missing, in words (`the HIP compiler`, `the header vulkan/vulkan.h`).
    pub what: String,
    /// Where it was looked for.
    pub searched: Vec<PathBuf>,
}

/// Looks for what `backend`'s build needs; CPU and CUDA need nothing here (nvcc has its own
/// search in the builder).
pub(crate) fn check(
    backend: Backend,
    flags: &CacheEntries,
    shell: &dyn Shell,
    host: &HostFacts,
) -> Result<Found, Vec<Missing>> {
    match backend {
        Backend::Hip => check_hip(flags, shell, host),
        Backend::Vulkan => check_vulkan(shell, host),
        Backend::Cpu | Backend::Cuda => Ok(Found::default()),
    }
}

/// The error for `missing` pieces of `backend`'s build, with the command that installs the
/// whole set on this distribution. A [`Error::MissingTool`], so that preflight can install
/// the packages itself when the pool allows it.
pub(crate) fn missing_error(backend: Backend, missing: &[Missing], host: &HostFacts) -> Error {
    let packages = backend_build_packages(backend, host.distro);
    let mut hint = match provisioner_core::ManagerKind::for_distro(host.distro) {
        Some(manager) if !packages.is_empty() => {
            let names: Vec<&str> = packages.iter().map(PackageName::as_str).collect();
            manager.install_command(&names, host.root)
        }
        _ => format!("install the {backend} development packages of your distribution"),
    };
    hint.push_str(match backend {
        Backend::Hip => {
            ", or point ROCM_PATH (or HIPCXX, or -DCMAKE_HIP_COMPILER in provisioning.source.build.cmake_flags) at your ROCm install"
        }
        Backend::Vulkan => ", or set VULKAN_SDK to your Vulkan SDK",
        Backend::Cpu | Backend::Cuda => "",
    });
    Error::MissingTool {
        tool: missing
            .iter()
            .map(|m| m.what.clone())
            .collect::<Vec<_>>()
            .join(", "),
        purpose: format!("build the {backend} backend"),
        searched: missing.iter().flat_map(|m| m.searched.clone()).collect(),
        hint: Some(hint),
    }
}

/// The ROCm install roots, in CMake's and ROCm's order: `ROCM_PATH`, `HIP_PATH`, `/opt/rocm`.
fn rocm_roots(host: &HostFacts) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = [host.rocm_path.as_ref(), host.hip_path.as_ref()]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let default = PathBuf::from("/opt/rocm");
    if !roots.contains(&default) {
        roots.push(default);
    }
    roots
}

fn check_hip(
    flags: &CacheEntries,
    shell: &dyn Shell,
    host: &HostFacts,
) -> Result<Found, Vec<Missing>> {
    let mut found = Found::default();
    let mut missing = Vec::new();
    let roots = rocm_roots(host);
    // The compiler, in CMake's order: the cache entry, HIPCXX, then the conventional roots.
    let named = flags
        .get("CMAKE_HIP_COMPILER")
        .map(|entry| (PathBuf::from(&entry.value), "-DCMAKE_HIP_COMPILER"))
        .or_else(|| host.hipcxx.as_ref().map(|path| (path.clone(), "HIPCXX")));
    let mut compiler_root = None;
    match named {
        Some((path, given_by)) => match shell.inspect(&path) {
            Some(info) => {
                compiler_root = root_of_compiler(&path);
                found.tools.push(("hip-compiler".to_string(), info));
            }
            None => missing.push(Missing {
                what: format!("the HIP compiler {} (given by {given_by})", path.display()),
                searched: vec![path],
            }),
        },
        None => {
            let candidates: Vec<PathBuf> = roots
                .iter()
                .map(|root| root.join("llvm/bin/clang"))
                .collect();
            let in_root = candidates
                .iter()
                .find_map(|path| Some((path.clone(), shell.inspect(path)?)));
            match (in_root, shell.locate("hipcc")) {
                (Some((path, info)), _) => {
                    compiler_root = root_of_compiler(&path);
                    found
                        .flags
                        .push(format!("-DCMAKE_HIP_COMPILER={}", path.display()));
                    found.notes.push(format!(
                        "using ROCm's clang at {} as the HIP compiler (passing -DCMAKE_HIP_COMPILER)",
                        path.display()
                    ));
                    found.tools.push(("hip-compiler".to_string(), info));
                }
                (None, Some(info)) => {
                    // A distribution's hipcc (Debian's wraps its own clang): its root holds
                    // the rest.
                    compiler_root = info
                        .path
                        .parent()
                        .and_then(Path::parent)
                        .map(Path::to_path_buf);
                    found.tools.push(("hip-compiler".to_string(), info));
                }
                (None, None) => missing.push(Missing {
                    what: "the HIP compiler (ROCm's clang, or hipcc)".to_string(),
                    searched: candidates,
                }),
            }
        }
    }
    // The `hip` CMake package.
    let mut prefixes: Vec<PathBuf> = host.cmake_prefix_path.clone();
    prefixes.extend(roots);
    if let Some(root) = compiler_root
        && !prefixes.contains(&root)
    {
        prefixes.push(root);
    }
    let mut package_dirs: Vec<PathBuf> = prefixes
        .iter()
        .map(|prefix| prefix.join("lib/cmake/hip"))
        .collect();
    package_dirs.extend(host.library_dirs.iter().map(|dir| dir.join("cmake/hip")));
    package_dirs.dedup();
    let has_package = package_dirs.iter().any(|dir| {
        ["hip-config.cmake", "hipConfig.cmake"]
            .iter()
            .any(|file| dir.join(file).is_file())
    });
    if !has_package {
        missing.push(Missing {
            what: "the hip CMake package (hip-config.cmake)".to_string(),
            searched: package_dirs,
        });
    }
    if missing.is_empty() {
        Ok(found)
    } else {
        Err(missing)
    }
}

/// `<root>` of a compiler at `<root>/llvm/bin/clang` or `<root>/bin/<name>`.
fn root_of_compiler(path: &Path) -> Option<PathBuf> {
    let bin = path.parent()?;
    let above = bin.parent()?;
    Some(if above.file_name().is_some_and(|n| n == "llvm") {
        above.parent()?.to_path_buf()
    } else {
        above.to_path_buf()
    })
}

fn check_vulkan(shell: &dyn Shell, host: &HostFacts) -> Result<Found, Vec<Missing>> {
    let mut found = Found::default();
    let mut missing = Vec::new();
    let sdk = host.vulkan_sdk.as_ref();
    let in_sdk = sdk.map(|sdk| sdk.join("bin/glslc"));
    let glslc = shell
        .locate("glslc")
        .or_else(|| in_sdk.as_ref().and_then(|path| shell.inspect(path)));
    match glslc {
        Some(info) => found.tools.push(("glslc".to_string(), info)),
        None => missing.push(Missing {
            what: "glslc (the Vulkan shader compiler)".to_string(),
            searched: in_sdk.into_iter().collect(),
        }),
    }
    let mut include_dirs: Vec<PathBuf> = sdk.map(|sdk| sdk.join("include")).into_iter().collect();
    include_dirs.extend(host.include_dirs.iter().cloned());
    if !include_dirs
        .iter()
        .any(|dir| dir.join("vulkan/vulkan.h").is_file())
    {
        missing.push(Missing {
            what: "the header vulkan/vulkan.h".to_string(),
            searched: include_dirs,
        });
    }
    let mut library_dirs: Vec<PathBuf> = sdk.map(|sdk| sdk.join("lib")).into_iter().collect();
    library_dirs.extend(host.library_dirs.iter().cloned());
    if !library_dirs
        .iter()
        .any(|dir| dir.join("libvulkan.so").exists())
    {
        missing.push(Missing {
            what: "the Vulkan loader libvulkan.so".to_string(),
            searched: library_dirs,
        });
    }
    if missing.is_empty() {
        Ok(found)
    } else {
        Err(missing)
    }
}
