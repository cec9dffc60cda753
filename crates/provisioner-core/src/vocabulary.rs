//! The domain vocabulary: the closed sets of names every other module speaks in (engines,
//! provisioning modes, compute backends, distribution families, package managers, container
//! runtimes). This module imports nothing from the rest of the crate, so that every other module
//! can import it without an import circle.
//!
//! Each set parses from the exact lower-case word used in configs (`FromStr`, serde) and prints
//! it back (`Display`, `as_str`); matches over these enums are exhaustive everywhere, so adding a
//! variant makes the compiler list every place that must learn about it.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Implements `as_str`, `ALL`, `Display` and `FromStr` for a fieldless enum whose config words
/// are given per variant. The `FromStr` error names the accepted words.
macro_rules! word_enum {
    ($type:ident, $what:literal, [$($variant:ident => $word:literal),+ $(,)?]) => {
        impl $type {
            /// Every variant, in the order the documentation lists them.
            pub const ALL: &'static [$type] = &[$($type::$variant),+];

            /// The word used in configs, plans, paths and versions.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($type::$variant => $word),+
                }
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $type {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                $type::ALL
                    .iter()
                    .copied()
                    .find(|value| value.as_str() == text)
                    .ok_or_else(|| {
                        let words: Vec<String> =
                            $type::ALL.iter().map(|v| format!("`{}`", v.as_str())).collect();
                        format!("unknown {} `{text}`; expected one of {}", $what, words.join(", "))
                    })
            }
        }
    };
}

/// The inference engines a pool can run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// ggml-org/llama.cpp `llama-server`.
    Llamacpp,
    /// vLLM's OpenAI-compatible server.
    Vllm,
    /// Hugging Face Text Generation Inference.
    Tgi,
    /// NVIDIA Triton Inference Server (TensorRT-LLM backend).
    Triton,
}

word_enum!(Engine, "engine", [
    Llamacpp => "llamacpp",
    Vllm => "vllm",
    Tgi => "tgi",
    Triton => "triton",
]);

impl Engine {
    /// The mode a pool gets when its config names none (llama-orch ORCH-3800: llama.cpp is
    /// built from source, the other engines run from their upstream container images).
    pub fn default_mode(self) -> Mode {
        match self {
            Engine::Llamacpp => Mode::Source,
            Engine::Vllm | Engine::Tgi | Engine::Triton => Mode::Container,
        }
    }

    /// The name humans know the engine by, for messages.
    pub fn label(self) -> &'static str {
        match self {
            Engine::Llamacpp => "llama.cpp",
            Engine::Vllm => "vLLM",
            Engine::Tgi => "TGI",
            Engine::Triton => "Triton",
        }
    }
}

/// How an engine gets onto the host.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Nothing is provisioned: someone else runs the engine and the pool attaches to it.
    External,
    /// git clone + CMake build.
    Source,
    /// An OCI image, pinned by digest, run by podman or docker.
    Container,
    /// A distribution package at an exact version.
    Package,
    /// A prebuilt archive from a pinned URL with a checksum.
    Binary,
}

word_enum!(Mode, "mode", [
    External => "external",
    Source => "source",
    Container => "container",
    Package => "package",
    Binary => "binary",
]);

/// The compute backend of an engine build.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// CPU only.
    #[default]
    Cpu,
    /// NVIDIA CUDA.
    Cuda,
    /// AMD HIP/ROCm.
    Hip,
    /// Vulkan.
    Vulkan,
}

word_enum!(Backend, "backend", [
    Cpu => "cpu",
    Cuda => "cuda",
    Hip => "hip",
    Vulkan => "vulkan",
]);

impl Backend {
    /// Whether this is a GPU backend.
    pub fn is_gpu(self) -> bool {
        match self {
            Backend::Cpu => false,
            Backend::Cuda | Backend::Hip | Backend::Vulkan => true,
        }
    }
}

/// Linux distribution families, each with its own package manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Distro {
    /// Debian, Ubuntu and derivatives (apt).
    Debian,
    /// Arch, CachyOS, EndeavourOS, Manjaro (pacman).
    Arch,
    /// Fedora, RHEL and derivatives (dnf).
    Fedora,
    /// Anything else (detected hosts only; never accepted in a config).
    Unknown,
}

impl Distro {
    /// Lower-case family name.
    pub fn as_str(self) -> &'static str {
        match self {
            Distro::Debian => "debian",
            Distro::Arch => "arch",
            Distro::Fedora => "fedora",
            Distro::Unknown => "unknown",
        }
    }

    /// The family of one distribution id as `/etc/os-release` spells it (`ID`, or a word of
    /// `ID_LIKE`).
    pub fn family_of(id: &str) -> Option<Distro> {
        match id {
            "debian" | "ubuntu" | "linuxmint" | "pop" | "raspbian" => Some(Distro::Debian),
            "arch" | "cachyos" | "endeavouros" | "manjaro" | "archarm" => Some(Distro::Arch),
            "fedora" | "rhel" | "centos" | "rocky" | "almalinux" => Some(Distro::Fedora),
            _ => None,
        }
    }

    /// Detects the family from the text of `/etc/os-release` (`ID`, then `ID_LIKE`; the
    /// format is specified in os-release(5)).
    pub fn from_os_release(text: &str) -> Distro {
        let value = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_ascii_lowercase())
                .unwrap_or_default()
        };
        let id = value("ID");
        Distro::family_of(&id)
            .or_else(|| {
                value("ID_LIKE")
                    .split_whitespace()
                    .find_map(Distro::family_of)
            })
            .unwrap_or(Distro::Unknown)
    }
}

impl fmt::Display for Distro {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Distro {
    type Err = String;

    /// A config value: `debian`, `arch`, `fedora`, or a distribution id they cover (`ubuntu`,
    /// `cachyos`, `rhel`, …).
    fn from_str(text: &str) -> Result<Self, String> {
        Distro::family_of(&text.to_ascii_lowercase()).ok_or_else(|| {
            format!(
                "unknown distribution `{text}`; expected `debian`, `arch` or `fedora` (or an id they cover, e.g. `ubuntu`, `cachyos`, `rhel`)"
            )
        })
    }
}

/// A package manager (or AUR helper) the provisioner can drive.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
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

word_enum!(ManagerKind, "package manager", [
    Apt => "apt",
    Pacman => "pacman",
    Paru => "paru",
    Yay => "yay",
    Dnf => "dnf",
]);

impl ManagerKind {
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
        match self {
            ManagerKind::Paru | ManagerKind::Yay => true,
            ManagerKind::Apt | ManagerKind::Pacman | ManagerKind::Dnf => false,
        }
    }

    /// The program that installs packages.
    pub fn program(self) -> &'static str {
        match self {
            ManagerKind::Apt => "apt-get",
            ManagerKind::Pacman | ManagerKind::Paru | ManagerKind::Yay | ManagerKind::Dnf => {
                self.as_str()
            }
        }
    }
}

/// Which container runtime runs an engine image.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// podman (preferred).
    Podman,
    /// docker (fallback).
    Docker,
}

word_enum!(RuntimeKind, "container runtime", [
    Podman => "podman",
    Docker => "docker",
]);

/// A GPU as written in a pool's `devices`: an index (`0`) or an id such as a GPU or MIG UUID.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(untagged)]
pub enum DeviceId {
    /// GPU index as `nvidia-smi -L` numbers them.
    Index(u32),
    /// Device id string (`GPU-…` or `MIG-…`).
    Id(String),
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceId::Index(index) => write!(f, "{index}"),
            DeviceId::Id(id) => f.write_str(id),
        }
    }
}

crate::text::serde_as_text!(Distro);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_errors_list_the_choices() {
        for engine in Engine::ALL {
            assert_eq!(engine.as_str().parse::<Engine>(), Ok(*engine));
        }
        assert_eq!(
            "ollama".parse::<Engine>().unwrap_err(),
            "unknown engine `ollama`; expected one of `llamacpp`, `vllm`, `tgi`, `triton`"
        );
        assert_eq!("dnf".parse::<ManagerKind>(), Ok(ManagerKind::Dnf));
        assert!("zypper".parse::<ManagerKind>().is_err());
    }

    #[test]
    fn default_modes_follow_llama_orch() {
        assert_eq!(Engine::Llamacpp.default_mode(), Mode::Source);
        for engine in [Engine::Vllm, Engine::Tgi, Engine::Triton] {
            assert_eq!(engine.default_mode(), Mode::Container);
        }
    }

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
        assert_eq!("Ubuntu".parse::<Distro>(), Ok(Distro::Debian));
        assert!("unknown".parse::<Distro>().is_err());
    }
}
