//! What two pools of one file would both use on this host: a host port, a container name, a
//! run file, an install path holding different content, or one package pinned at two
//! versions. Each pool's [`Claims`] are derived from its inputs (never by re-reading strings);
//! [`find`] compares them, pure, and words one [`Conflict`] per pool and resource, naming every
//! earlier pool that claims it too.
//!
//! Port `0` (a free port chosen at launch) never conflicts. An external pool claims its port:
//! the engine someone else runs there holds it. The same content at the same install path (the
//! same cache key) is shared, not a conflict.

use std::path::{Path, PathBuf};

use provisioner_core::packages::default_engine_package;
use provisioner_core::{Distro, FieldError, Layout, ManagerKind, PoolConfig, RunRecord};

use crate::common::{NativeFacts, PoolInputs, Recipe};
use crate::modes::{binary, container, external, package, source};

/// What one pool would use on this host that no other pool may.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims {
    /// The pool's position in the file (`pools[N]`).
    pub index: usize,
    /// Its id.
    pub id: String,
    /// Host ports it listens on, publishes or attaches to.
    pub ports: Vec<PortClaim>,
    /// Its container's name (container mode).
    pub container: Option<String>,
    /// Files and directories of the run dir it writes.
    pub run_paths: Vec<RunPath>,
    /// Final install paths and what goes there.
    pub installs: Vec<InstallClaim>,
    /// Packages it pins.
    pub packages: Vec<PackageClaim>,
}

/// How a pool uses a host port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortUse {
    /// A server on the host listens on it.
    Listens,
    /// A container runtime publishes it.
    Publishes,
    /// An engine run outside this tool listens on it.
    External,
}

impl PortUse {
    fn by(self) -> &'static str {
        match self {
            PortUse::Listens => "listened on by",
            PortUse::Publishes => "published by",
            PortUse::External => "used by the external engine of",
        }
    }
}

/// One host port of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortClaim {
    /// The port (`0`: a free one, chosen at launch).
    pub port: u16,
    /// What it is to the pool: `Triton's gRPC port`.
    pub role: String,
    /// How the pool uses it.
    pub by: PortUse,
    /// `None` when the pool configured it; else how to set the pool's ports (it came from the
    /// engine's default).
    pub defaulted: Option<String>,
}

/// A file or directory a pool's engine writes in the run dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPath {
    /// Where.
    pub path: PathBuf,
    /// What it is: `log`, `private run directory`.
    pub label: String,
}

/// A final install path and what goes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallClaim {
    /// The field that moves it, relative to the pool: `provisioning.binary.install_dir`.
    pub field: String,
    /// Which directory: claims of one slot install into one directory.
    pub slot: String,
    /// The directory, as shown: `install path /opt/llama/sha256-…`.
    pub place: String,
    /// What decides the directory's name, as shown.
    pub named_by: String,
    /// What goes there, as shown; two claims of one place with different content conflict.
    pub content: String,
    /// What to change.
    pub fix: String,
}

/// A package a pool pins at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageClaim {
    /// The package's name, or for a default the engine and backend it is chosen by.
    pub name: String,
    /// How it is shown: `package llama.cpp-tools`.
    pub shown: String,
    /// The distribution family it is installed on, when the pool says.
    pub family: Option<Distro>,
    /// The version pinned.
    pub version: String,
}

/// A resource a pool would share with earlier pools of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The pool reported first, then the earlier pools it conflicts with (`pools[N]` indices).
    pub pools: Vec<usize>,
    /// The message, at the reported pool's field.
    pub error: FieldError,
}

impl Conflict {
    /// Whether the conflict names the pool at `index`.
    pub fn involves(&self, index: usize) -> bool {
        self.pools.contains(&index)
    }
}

impl Claims {
    /// A pool that claims nothing yet.
    pub fn new(pool: &PoolConfig) -> Claims {
        Claims {
            index: pool.index,
            id: pool.id.to_string(),
            ..Claims::default()
        }
    }

    fn named(&self) -> String {
        format!("pool \"{}\" (pools[{}])", self.id, self.index)
    }

    fn field(&self, relative: &str) -> String {
        format!("pools[{}].{relative}", self.index)
    }
}

/// The host ports of a server run on the host ([`PoolInputs::native_ports`]: the configured
/// ones, else the engine's default).
pub fn native_ports(
    recipe: &dyn Recipe,
    facts: &NativeFacts,
    common: &PoolInputs,
) -> Vec<PortClaim> {
    let label = recipe.engine().label();
    let defaulted = common.pool.provisioning.ports.is_empty();
    common
        .native_ports(facts)
        .into_iter()
        .enumerate()
        .map(|(index, port)| PortClaim {
            port,
            role: match (index, defaulted) {
                (0, false) => format!("{label}'s HTTP port"),
                (0, true) => format!("{label}'s HTTP port, by default"),
                _ => format!("{label}'s port"),
            },
            by: PortUse::Listens,
            defaulted: defaulted.then(|| "set provisioning.ports".to_string()),
        })
        .collect()
}

/// The host ports a container publishes, named by what they serve inside.
pub fn container_ports(
    recipe: &dyn Recipe,
    pool: &PoolConfig,
    inputs: &container::Inputs,
) -> Vec<PortClaim> {
    let facts = recipe.container();
    let label = recipe.engine().label();
    let configured = pool.provisioning.ports.len();
    let how = if facts.port_names.len() > 1 {
        format!(
            "provisioning.ports lists {label}'s {} ports, in that order",
            and_list(facts.port_names)
        )
    } else {
        "set provisioning.ports".to_string()
    };
    inputs
        .host_ports
        .iter()
        .enumerate()
        .map(|(index, port)| {
            let name = facts.port_names.get(index).copied().unwrap_or("other");
            let defaulted = index >= configured;
            PortClaim {
                port: *port,
                role: if defaulted {
                    format!("{label}'s {name} port, by default")
                } else {
                    format!("{label}'s {name} port")
                },
                by: PortUse::Publishes,
                defaulted: defaulted.then(|| how.clone()),
            }
        })
        .collect()
}

/// The port of an engine run outside this tool.
pub fn external_ports(
    recipe: &dyn Recipe,
    pool: &PoolConfig,
    inputs: &external::Inputs,
) -> Vec<PortClaim> {
    let defaulted = pool.provisioning.ports.is_empty();
    vec![PortClaim {
        port: inputs.port,
        role: if defaulted {
            format!(
                "the port of the external {} engine, by default",
                recipe.engine().label()
            )
        } else {
            format!(
                "the port of the external {} engine",
                recipe.engine().label()
            )
        },
        by: PortUse::External,
        defaulted: defaulted.then(|| "set provisioning.ports".to_string()),
    }]
}

/// The run dir's records of the pool's engine, and its private directory (the parent of
/// `env_file`, where the RunFiles port puts the env file).
pub fn run_paths(layout: &Layout, pool: &PoolConfig, env_file: &Path) -> Vec<RunPath> {
    let mut paths: Vec<RunPath> = RunRecord::ALL
        .iter()
        .map(|record| RunPath {
            path: layout.run_record(pool.id.as_str(), *record),
            label: record.label().to_string(),
        })
        .collect();
    if let Some(dir) = env_file.parent() {
        paths.push(RunPath {
            path: dir.to_path_buf(),
            label: "private run directory".to_string(),
        });
    }
    paths
}

/// A binary install: `<install_root>/<algorithm>-<16 hex of the checksum>`.
pub fn binary_install(inputs: &binary::Inputs) -> InstallClaim {
    let spec = &inputs.spec;
    let place = spec.install_root.join(spec.checksum.cache_key());
    InstallClaim {
        field: "provisioning.binary.install_dir".to_string(),
        slot: format!("binary\0{}", place.display()),
        place: format!("install path {}", place.display()),
        named_by: "the checksum's first 16 hex digits".to_string(),
        content: format!(
            "the {} download with checksum {}",
            spec.executable, spec.checksum
        ),
        fix: "give one of them another binary.install_dir".to_string(),
    }
}

/// A source build: its directory under the build cache is named by a key over the commit, the
/// CMake flags, the generator and the toolchain, not over `submodules`; two pools building the
/// same ref of one repository with the same flags share it, with or without submodules.
pub fn source_install(inputs: &source::Inputs) -> InstallClaim {
    let spec = &inputs.spec;
    let generator = spec
        .generator
        .map_or_else(|| "the default generator".to_string(), |g| g.to_string());
    InstallClaim {
        field: "provisioning.source.submodules".to_string(),
        slot: format!(
            "source\0{}\0{}\0{}\0{}\0{}\0{}\0{:?}\0{:?}",
            spec.cache_dir.display(),
            spec.engine,
            spec.repo,
            spec.reference,
            spec.cmake_flags.to_flags().join(" "),
            generator,
            spec.backend,
            spec.targets,
        ),
        place: format!(
            "the build directory of {}@{} under {}",
            spec.repo,
            spec.reference,
            spec.cache_dir.display()
        ),
        named_by: "a key over the commit, CMake flags, generator and toolchain, not submodules"
            .to_string(),
        content: if spec.submodules {
            "a checkout with submodules".to_string()
        } else {
            "a checkout without submodules".to_string()
        },
        fix: "give one of them another source.build.cache_dir, or both the same submodules setting"
            .to_string(),
    }
}

/// The package a package-mode pool pins: its name, or the table's default for the engine and
/// backend on the pool's distribution (this host's when the pool names none).
pub fn package_pin(inputs: &package::Inputs) -> Vec<PackageClaim> {
    let spec = &inputs.spec;
    let family = spec.distro.or(spec.manager.map(|manager| match manager {
        ManagerKind::Apt => Distro::Debian,
        ManagerKind::Pacman | ManagerKind::Paru | ManagerKind::Yay => Distro::Arch,
        ManagerKind::Dnf => Distro::Fedora,
    }));
    let named = spec.name.as_ref().map(|name| name.to_string()).or_else(|| {
        let distro = family?;
        default_engine_package(spec.engine, distro, spec.backend).map(|p| p.name.to_string())
    });
    let (name, shown) = match named {
        Some(name) => (name.clone(), format!("package {name}")),
        None => (
            format!("default:{}:{}", spec.engine, spec.backend),
            format!(
                "the default {} package for the {} backend on this host's distribution",
                spec.engine.label(),
                spec.backend
            ),
        ),
    };
    vec![PackageClaim {
        name,
        shown,
        family,
        version: spec.version.to_string(),
    }]
}

/// Every resource a pool of `all` shares with an earlier one, one conflict per pool and
/// resource, in pool order.
pub fn find(all: &[Claims]) -> Vec<Conflict> {
    let mut found = Vec::new();
    for (at, claims) in all.iter().enumerate() {
        let earlier = &all[..at];
        ports(claims, earlier, &mut found);
        containers(claims, earlier, &mut found);
        run_files(claims, earlier, &mut found);
        installs(claims, earlier, &mut found);
        packages(claims, earlier, &mut found);
    }
    found
}

fn conflict(claims: &Claims, others: &[&Claims], field: &str, message: String) -> Conflict {
    let mut pools = vec![claims.index];
    pools.extend(others.iter().map(|o| o.index));
    Conflict {
        pools,
        error: FieldError::new(claims.field(field), message),
    }
}

fn ports(claims: &Claims, earlier: &[Claims], found: &mut Vec<Conflict>) {
    for claim in claims.ports.iter().filter(|c| c.port != 0) {
        let holders: Vec<(&Claims, &PortClaim)> = earlier
            .iter()
            .filter_map(|other| {
                let theirs = other.ports.iter().find(|p| p.port == claim.port)?;
                Some((other, theirs))
            })
            .collect();
        if holders.is_empty() {
            continue;
        }
        let by: Vec<String> = holders
            .iter()
            .map(|(other, theirs)| format!("{} {}", theirs.by.by(), other.named()))
            .collect();
        let how = claim
            .defaulted
            .as_ref()
            .map(|how| format!(" ({how})"))
            .unwrap_or_default();
        let others: Vec<&Claims> = holders.iter().map(|(other, _)| *other).collect();
        found.push(conflict(
            claims,
            &others,
            "provisioning.ports",
            format!(
                "host port {} ({}) is also {}; give each pool its own ports{how}",
                claim.port,
                claim.role,
                and_list(&by)
            ),
        ));
    }
}

fn containers(claims: &Claims, earlier: &[Claims], found: &mut Vec<Conflict>) {
    let Some(name) = &claims.container else {
        return;
    };
    let others: Vec<&Claims> = earlier
        .iter()
        .filter(|other| other.container.as_ref() == Some(name))
        .collect();
    if others.is_empty() {
        return;
    }
    let named: Vec<String> = others.iter().map(|o| o.named()).collect();
    found.push(conflict(
        claims,
        &others,
        "id",
        format!(
            "container name {name} is also the container of {}; give each pool its own id",
            and_list(&named)
        ),
    ));
}

fn run_files(claims: &Claims, earlier: &[Claims], found: &mut Vec<Conflict>) {
    for other in earlier {
        let overlap = claims.run_paths.iter().find_map(|mine| {
            other
                .run_paths
                .iter()
                .find(|theirs| {
                    mine.path.starts_with(&theirs.path) || theirs.path.starts_with(&mine.path)
                })
                .map(|theirs| (mine, theirs))
        });
        let Some((mine, theirs)) = overlap else {
            continue;
        };
        let relation = if mine.path == theirs.path {
            format!("is also the {} of {}", theirs.label, other.named())
        } else if mine.path.starts_with(&theirs.path) {
            format!(
                "lies in {} ({} of {})",
                theirs.path.display(),
                theirs.label,
                other.named()
            )
        } else {
            format!(
                "holds {} ({} of {})",
                theirs.path.display(),
                theirs.label,
                other.named()
            )
        };
        let fix = if claims.id == other.id {
            "give each pool its own id".to_string()
        } else {
            let extensions: Vec<&str> = RunRecord::ALL.iter().map(|r| r.extension()).collect();
            format!(
                "give the pools ids that are not another pool's id followed by {}",
                or_list(&extensions)
            )
        };
        found.push(conflict(
            claims,
            &[other],
            "id",
            format!(
                "run file {} (this pool's {}) {relation}; {fix}",
                mine.path.display(),
                mine.label
            ),
        ));
    }
}

fn installs(claims: &Claims, earlier: &[Claims], found: &mut Vec<Conflict>) {
    for claim in &claims.installs {
        let holders: Vec<(&Claims, &InstallClaim)> = earlier
            .iter()
            .filter_map(|other| {
                let theirs = other
                    .installs
                    .iter()
                    .find(|i| i.slot == claim.slot && i.content != claim.content)?;
                Some((other, theirs))
            })
            .collect();
        if holders.is_empty() {
            continue;
        }
        let theirs: Vec<String> = holders
            .iter()
            .map(|(other, theirs)| format!("{} installs {} there", other.named(), theirs.content))
            .collect();
        let others: Vec<&Claims> = holders.iter().map(|(other, _)| *other).collect();
        found.push(conflict(
            claims,
            &others,
            &claim.field,
            format!(
                "{} would hold {}, but {} (its name comes from {}); {}",
                claim.place,
                claim.content,
                and_list(&theirs),
                claim.named_by,
                claim.fix
            ),
        ));
    }
}

fn packages(claims: &Claims, earlier: &[Claims], found: &mut Vec<Conflict>) {
    for claim in &claims.packages {
        let holders: Vec<(&Claims, &PackageClaim)> = earlier
            .iter()
            .filter_map(|other| {
                let theirs = other.packages.iter().find(|p| {
                    p.name == claim.name
                        && p.version != claim.version
                        && (p.family.is_none()
                            || claim.family.is_none()
                            || p.family == claim.family)
                })?;
                Some((other, theirs))
            })
            .collect();
        if holders.is_empty() {
            continue;
        }
        let theirs: Vec<String> = holders
            .iter()
            .map(|(other, theirs)| format!("at {} by {}", theirs.version, other.named()))
            .collect();
        let others: Vec<&Claims> = holders.iter().map(|(other, _)| *other).collect();
        found.push(conflict(
            claims,
            &others,
            "provisioning.package.version",
            format!(
                "{} is pinned at {} here but {}; a host has one version of a package installed: pin every pool to the same version",
                claim.shown,
                claim.version,
                and_list(&theirs)
            ),
        ));
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list<T: AsRef<str>>(items: &[T]) -> String {
    joined(items, "and")
}

/// `a`, `a or b`, `a, b or c`.
fn or_list<T: AsRef<str>>(items: &[T]) -> String {
    joined(items, "or")
}

fn joined<T: AsRef<str>>(items: &[T], word: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_string(),
        [rest @ .., last] => {
            let rest: Vec<&str> = rest.iter().map(AsRef::as_ref).collect();
            format!("{} {word} {}", rest.join(", "), last.as_ref())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(index: usize, id: &str, ports: &[u16]) -> Claims {
        Claims {
            index,
            id: id.to_string(),
            ports: ports
                .iter()
                .map(|port| PortClaim {
                    port: *port,
                    role: "HTTP".to_string(),
                    by: PortUse::Listens,
                    defaulted: None,
                })
                .collect(),
            ..Claims::default()
        }
    }

    #[test]
    fn ports_conflict_by_number_and_zero_never() {
        let found = find(&[pool(0, "a", &[0, 8080]), pool(1, "b", &[0, 8081, 8080])]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pools, vec![1, 0]);
        assert_eq!(
            found[0].error.to_string(),
            "pools[1].provisioning.ports: host port 8080 (HTTP) is also listened on by pool \"a\" (pools[0]); give each pool its own ports"
        );
    }

    #[test]
    fn a_run_path_inside_another_pools_conflicts() {
        let mut a = pool(0, "a", &[]);
        a.run_paths.push(RunPath {
            path: PathBuf::from("/run/a"),
            label: "private run directory".to_string(),
        });
        let mut b = pool(1, "b", &[]);
        b.run_paths.push(RunPath {
            path: PathBuf::from("/run/a/env"),
            label: "env file".to_string(),
        });
        let found = find(&[a, b]);
        assert_eq!(
            found[0].error.message,
            "run file /run/a/env (this pool's env file) lies in /run/a (private run directory of pool \"a\" (pools[0])); give the pools ids that are not another pool's id followed by .json, .pid, .log, .log.1 or .lock"
        );
        // A sibling whose name merely starts the same is no conflict.
        let mut c = pool(0, "c", &[]);
        c.run_paths.push(RunPath {
            path: PathBuf::from("/run/a.json"),
            label: "state file".to_string(),
        });
        let mut d = pool(1, "d", &[]);
        d.run_paths.push(RunPath {
            path: PathBuf::from("/run/a"),
            label: "private run directory".to_string(),
        });
        assert!(find(&[c, d]).is_empty());
    }

    #[test]
    fn lists_read_as_sentences() {
        assert_eq!(and_list(&["a"]), "a");
        assert_eq!(and_list(&["a", "b"]), "a and b");
        assert_eq!(or_list(&["a", "b", "c"]), "a, b or c");
    }
}
