//! GPU devices requested for a container: parsed from `nvidia-smi -L` and checked before the image
//! is handed on, so that a typo in `devices:` fails at prepare time rather than at `run`.

use std::path::{Path, PathBuf};

/// One MIG instance of a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigDevice {
    /// Profile, e.g. `1g.10gb`.
    pub profile: String,
    /// Device number inside its GPU.
    pub device: u32,
    /// `MIG-…` UUID.
    pub uuid: String,
}

/// One GPU as `nvidia-smi -L` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// Index (`GPU 0:`).
    pub index: u32,
    /// Product name.
    pub name: String,
    /// `GPU-…` UUID.
    pub uuid: String,
    /// MIG instances listed under it.
    pub migs: Vec<MigDevice>,
}

/// Parses `nvidia-smi -L` output: `GPU 0: NAME (UUID: GPU-…)` lines, each followed by its
/// `  MIG 1g.10gb Device 0: (UUID: MIG-…)` lines. Other lines are ignored.
pub fn parse_nvidia_smi_list(text: &str) -> Vec<Gpu> {
    let mut gpus: Vec<Gpu> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        let Some((head, uuid)) = split_uuid(trimmed) else {
            continue;
        };
        if let Some(rest) = trimmed.strip_prefix("GPU ") {
            let Some((index, after)) = rest.split_once(':') else {
                continue;
            };
            let Ok(index) = index.trim().parse() else {
                continue;
            };
            let name = after
                .rsplit_once("(UUID:")
                .map_or(after, |(name, _)| name)
                .trim()
                .to_string();
            gpus.push(Gpu {
                index,
                name,
                uuid,
                migs: Vec::new(),
            });
        } else if let Some(rest) = head.strip_prefix("MIG ") {
            // `1g.10gb Device 0:`
            let mut words = rest.split_whitespace();
            let profile = words.next().unwrap_or_default().to_string();
            let device = words
                .skip_while(|w| *w != "Device")
                .nth(1)
                .and_then(|n| n.trim_end_matches(':').parse().ok())
                .unwrap_or(0);
            if let Some(gpu) = gpus.last_mut() {
                gpu.migs.push(MigDevice {
                    profile,
                    device,
                    uuid,
                });
            }
        }
    }
    gpus
}

/// `… (UUID: X)` → (`…`, `X`).
fn split_uuid(line: &str) -> Option<(&str, String)> {
    let (head, rest) = line.rsplit_once("(UUID:")?;
    let uuid = rest.trim().trim_end_matches(')').trim();
    (!uuid.is_empty()).then(|| (head.trim(), uuid.to_string()))
}

/// Checks that every requested device is an index, GPU UUID or MIG UUID in `gpus`; `Err` holds the
/// ones that are not.
pub fn unknown_devices(requested: &[String], gpus: &[Gpu]) -> Vec<String> {
    requested
        .iter()
        .filter(|device| {
            let device = device.trim();
            // `nvidia.com/gpu=0`, the CDI form, names the same devices.
            let device = device.strip_prefix("nvidia.com/gpu=").unwrap_or(device);
            let all = device == "all" && !gpus.is_empty();
            !all && !gpus.iter().any(|gpu| {
                device == gpu.index.to_string()
                    || device == gpu.uuid
                    || gpu.migs.iter().any(|mig| {
                        device == mig.uuid || device == format!("{}:{}", gpu.index, mig.device)
                    })
            })
        })
        .cloned()
        .collect()
}

/// The GPUs found, for messages: `0: NVIDIA H100 80GB HBM3 (GPU-…), MIG …`.
pub fn describe(gpus: &[Gpu]) -> String {
    if gpus.is_empty() {
        return "none".to_string();
    }
    gpus.iter()
        .map(|gpu| {
            let mut text = format!("{}: {} ({})", gpu.index, gpu.name, gpu.uuid);
            for mig in &gpu.migs {
                text.push_str(&format!(
                    "; MIG {} device {} ({})",
                    mig.profile, mig.device, mig.uuid
                ));
            }
            text
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first NVIDIA CDI spec file in `dirs` (a `.yaml`/`.json` naming `nvidia.com/gpu`).
pub fn find_cdi_spec(dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter().find_map(|dir| {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        entries.into_iter().find(|path| is_nvidia_spec(path))
    })
}

fn is_nvidia_spec(path: &Path) -> bool {
    let spec_file = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    );
    spec_file
        && adapters_host::read_capped(path, adapters_host::read::MAX_HOST_FILE)
            .is_ok_and(|text| text.contains("nvidia.com/gpu"))
}
