//! Facts about the host that decide how to build, gathered once.

use std::num::NonZeroUsize;

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
}

impl HostFacts {
    /// Reads `/etc/os-release` (missing → [`Distro::Unknown`]), `CUDA_HOME`, `CUDA_PATH` and the
    /// available parallelism.
    pub fn detect() -> Self {
        let distro = std::fs::read_to_string("/etc/os-release")
            .map(|text| Distro::from_os_release(&text))
            .unwrap_or(Distro::Unknown);
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        HostFacts {
            distro,
            cuda_home: env("CUDA_HOME"),
            cuda_path: env("CUDA_PATH"),
            jobs: std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        }
    }
}

impl Default for HostFacts {
    /// An unknown distribution, no CUDA variables, one job.
    fn default() -> Self {
        HostFacts {
            distro: Distro::Unknown,
            cuda_home: None,
            cuda_path: None,
            jobs: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_gives_at_least_one_job() {
        let facts = HostFacts::detect();
        assert!(facts.jobs >= 1);
        assert!(facts.cuda_home.as_deref() != Some(""));
    }
}
