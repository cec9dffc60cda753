//! What the rendered `run` needs from the runtime, checked when the runtime is detected: the init
//! binary behind `--init`, the OCI runtime (runc, crun), and the network backend that publishes
//! ports (rootful: netavark or the CNI plugins; rootless: slirp4netns or pasta). Each missing piece
//! is an error with the install command for this distribution (`sudo` only when not root).
//!
//! Podman does not report its init binary in `info`, so it is found the way podman finds it:
//! `init_path` under `[containers]` in the last containers.conf that sets it (`$CONTAINERS_CONF`
//! alone when set, else the system files, their `.d` directories and, rootless, the user's), else
//! `catatonit` in `/usr/libexec/podman`, the helper directories (`helper_binaries_dir`) or PATH.
//! A broken OCI runtime or network helper makes `podman info` itself fail; its message is turned
//! into the same kind of error. Docker reports an init binary it could not run as `InitCommit.ID`
//! `N/A`.

use std::path::{Path, PathBuf};

use provisioner_core::{Distro, Error, Result};

/// Files and directories podman reads its configuration and helpers from (the defaults of
/// containers-common; tests point them elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodmanFiles {
    /// containers.conf files read, in order, when `CONTAINERS_CONF` is unset; a `.d` directory
    /// stands for its `*.conf` files in name order.
    pub containers_conf: Vec<PathBuf>,
    /// Where helper binaries (catatonit, netavark) are looked for unless containers.conf sets
    /// `helper_binaries_dir`.
    pub helper_dirs: Vec<PathBuf>,
    /// Where CNI plugins are looked for unless containers.conf sets `cni_plugin_dirs`.
    pub cni_plugin_dirs: Vec<PathBuf>,
}

impl PodmanFiles {
    /// containers-common's defaults; `user_config` is the rootless user's config directory
    /// (`$XDG_CONFIG_HOME` or `~/.config`), `None` as root.
    pub fn defaults(user_config: Option<&Path>) -> PodmanFiles {
        let mut containers_conf: Vec<PathBuf> = [
            "/usr/share/containers/containers.conf",
            "/usr/share/containers/containers.conf.d",
            "/etc/containers/containers.conf",
            "/etc/containers/containers.conf.d",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        if let Some(dir) = user_config {
            containers_conf.push(dir.join("containers/containers.conf"));
            containers_conf.push(dir.join("containers/containers.conf.d"));
        }
        PodmanFiles {
            containers_conf,
            helper_dirs: [
                "/usr/local/libexec/podman",
                "/usr/local/lib/podman",
                "/usr/libexec/podman",
                "/usr/lib/podman",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            cni_plugin_dirs: [
                "/usr/local/libexec/cni",
                "/usr/libexec/cni",
                "/usr/local/lib/cni",
                "/usr/lib/cni",
                "/opt/cni/bin",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
        }
    }
}

/// A value set in a containers.conf file, with the file that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value.
    pub value: T,
    /// The file it was read from.
    pub file: PathBuf,
}

/// What podman's containers.conf files say about the pieces the run needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainersConf {
    /// Each file read (or looked for), with its text (`None`: absent or unreadable).
    pub sources: Vec<(PathBuf, Option<String>)>,
    /// `[containers] init_path`.
    pub init_path: Option<Setting<String>>,
    /// `[engine] helper_binaries_dir`.
    pub helper_binaries_dir: Option<Setting<Vec<String>>>,
    /// `[network] cni_plugin_dirs`.
    pub cni_plugin_dirs: Option<Setting<Vec<String>>>,
    /// `[engine] runtime`.
    pub runtime: Option<Setting<String>>,
    /// Whether `$CONTAINERS_CONF` named the one file read.
    pub from_variable: bool,
}

impl ContainersConf {
    /// Reads `containers_conf_variable` alone when given (podman then ignores every other
    /// file), else `files` in order; later files override earlier ones key by key.
    pub fn read(containers_conf_variable: Option<&str>, files: &PodmanFiles) -> ContainersConf {
        let paths: Vec<PathBuf> = match containers_conf_variable.filter(|v| !v.is_empty()) {
            Some(file) => vec![PathBuf::from(file)],
            None => files
                .containers_conf
                .iter()
                .flat_map(|path| {
                    if path.extension().is_some_and(|e| e == "d") {
                        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                            .map(|dir| {
                                dir.filter_map(|e| e.ok().map(|e| e.path()))
                                    .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                                    .collect()
                            })
                            .unwrap_or_default();
                        entries.sort();
                        entries
                    } else {
                        vec![path.clone()]
                    }
                })
                .collect(),
        };
        let mut conf = ContainersConf {
            from_variable: containers_conf_variable.is_some_and(|v| !v.is_empty()),
            ..ContainersConf::default()
        };
        for path in paths {
            let text = adapters_host::read_capped(&path, adapters_host::read::MAX_HOST_FILE).ok();
            if let Some(text) = &text {
                conf.apply(&path, text);
            }
            conf.sources.push((path, text));
        }
        conf
    }

    /// Takes the keys this check needs from one file's text (a file podman cannot parse makes
    /// `podman info` fail, so it is skipped here).
    pub fn apply(&mut self, file: &Path, text: &str) {
        let Ok(table) = toml::from_str::<toml::Table>(text) else {
            return;
        };
        let string = |section: &str, key: &str| {
            table.get(section)?.get(key)?.as_str().map(|value| Setting {
                value: value.to_string(),
                file: file.to_path_buf(),
            })
        };
        let list = |section: &str, key: &str| {
            let items = table.get(section)?.get(key)?.as_array()?;
            Some(Setting {
                value: items
                    .iter()
                    .filter_map(|item| item.as_str().map(str::to_string))
                    .collect(),
                file: file.to_path_buf(),
            })
        };
        if let Some(value) = string("containers", "init_path") {
            self.init_path = Some(value);
        }
        if let Some(value) = list("engine", "helper_binaries_dir") {
            self.helper_binaries_dir = Some(value);
        }
        if let Some(value) = list("network", "cni_plugin_dirs") {
            self.cni_plugin_dirs = Some(value);
        }
        if let Some(value) = string("engine", "runtime") {
            self.runtime = Some(value);
        }
    }

    /// The files and their contents, for the fingerprint of the runtime check.
    pub fn fingerprint(&self) -> String {
        let mut text = String::new();
        for (path, contents) in &self.sources {
            text.push_str(&path.display().to_string());
            text.push('\0');
            text.push_str(contents.as_deref().unwrap_or("<absent>"));
            text.push('\0');
        }
        text
    }

    /// Where the conf files were looked for, for hints.
    fn described(&self) -> String {
        if self.from_variable {
            format!(
                "$CONTAINERS_CONF ({})",
                self.sources
                    .first()
                    .map(|(p, _)| p.display().to_string())
                    .unwrap_or_default()
            )
        } else {
            "containers.conf".to_string()
        }
    }
}

/// The command that installs `program` here (`sudo` unless root), or the commands for each
/// distribution family when this one is unknown.
pub fn install_hint(program: &str, distro: Distro) -> String {
    let root = adapters_host::running_as_root();
    if let Some(command) = provisioner_core::tools::install_command(program, distro, root) {
        return command;
    }
    [
        (Distro::Debian, "Debian/Ubuntu"),
        (Distro::Arch, "Arch"),
        (Distro::Fedora, "Fedora"),
    ]
    .iter()
    .filter_map(|(family, label)| {
        provisioner_core::tools::install_command(program, *family, root)
            .map(|command| format!("{command} ({label})"))
    })
    .collect::<Vec<_>>()
    .join(" | ")
}

const INIT_PURPOSE: &str =
    "run the engine's container with --init (an init process forwards signals and reaps children)";

/// Podman's init binary: `init_path` when set (it must exist), else `catatonit` where podman
/// looks for it (`locate` searches PATH).
pub fn podman_init(
    conf: &ContainersConf,
    files: &PodmanFiles,
    locate: &dyn Fn(&str) -> Option<PathBuf>,
    distro: Distro,
) -> Result<PathBuf> {
    if let Some(setting) = &conf.init_path {
        let path = PathBuf::from(&setting.value);
        if path.is_file() {
            return Ok(path);
        }
        return Err(Error::MissingSetup {
            what: format!(
                "the init binary {} (`init_path` in {})",
                setting.value,
                setting.file.display()
            ),
            purpose: INIT_PURPOSE.to_string(),
            hint: Some(format!(
                "install catatonit ({}) and set `init_path` under [containers] in {} to its path, or remove `init_path` there",
                install_hint("catatonit", distro),
                setting.file.display()
            )),
        });
    }
    // The configured helper directories, then the defaults (which hold podman's old default
    // init path, /usr/libexec/podman/catatonit), then PATH.
    let mut searched = helper_dirs(conf, files);
    searched.extend(files.helper_dirs.iter().cloned());
    for dir in &searched {
        let candidate = dir.join("catatonit");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if let Some(found) = locate("catatonit") {
        return Ok(found);
    }
    let mut seen = std::collections::BTreeSet::new();
    searched.retain(|dir| seen.insert(dir.clone()));
    Err(Error::MissingTool {
        tool: "catatonit (podman's init binary)".to_string(),
        purpose: INIT_PURPOSE.to_string(),
        searched,
        hint: Some(format!(
            "{} (or set `init_path` under [containers] in {} to another init binary)",
            install_hint("catatonit", distro),
            conf.described()
        )),
    })
}

fn helper_dirs(conf: &ContainersConf, files: &PodmanFiles) -> Vec<PathBuf> {
    match &conf.helper_binaries_dir {
        Some(setting) => setting.value.iter().map(PathBuf::from).collect(),
        None => files.helper_dirs.clone(),
    }
}

/// Reads `podman info --format json` for the OCI runtime and the network backend, and finds
/// the init binary. Returns the paths found (they must still exist when the check is reused).
pub fn check_podman(
    info: &str,
    conf: &ContainersConf,
    files: &PodmanFiles,
    locate: &dyn Fn(&str) -> Option<PathBuf>,
    distro: Distro,
) -> Result<Vec<PathBuf>> {
    let info: serde_json::Value = serde_json::from_str(info).unwrap_or_default();
    let host = &info["host"];
    let mut found = Vec::new();
    if let Some(path) = host["ociRuntime"]["path"]
        .as_str()
        .filter(|p| !p.is_empty())
    {
        let path = PathBuf::from(path);
        if !path.is_file() {
            let name = host["ociRuntime"]["name"].as_str().unwrap_or("runc");
            return Err(missing_program(
                name,
                "run containers (podman's OCI runtime)",
                vec![path],
                distro,
                conf,
            ));
        }
        found.push(path);
    }
    let rootless = host["security"]["rootless"].as_bool().unwrap_or(false);
    if rootless {
        let executable = |key: &str| {
            host[key]["executable"]
                .as_str()
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        };
        match executable("pasta").or_else(|| executable("slirp4netns")) {
            Some(path) => found.push(path),
            None => {
                return Err(Error::MissingTool {
                    tool: "slirp4netns or pasta".to_string(),
                    purpose: "publish the engine's port from a rootless container".to_string(),
                    searched: Vec::new(),
                    hint: Some(format!(
                        "{} (podman 4) or {} (podman 5)",
                        install_hint("slirp4netns", distro),
                        install_hint("pasta", distro)
                    )),
                });
            }
        }
    } else if host["networkBackend"].as_str() == Some("cni") {
        let dirs: Vec<PathBuf> = match &conf.cni_plugin_dirs {
            Some(setting) => setting.value.iter().map(PathBuf::from).collect(),
            None => files.cni_plugin_dirs.clone(),
        };
        for plugin in ["bridge", "portmap"] {
            match dirs.iter().map(|d| d.join(plugin)).find(|p| p.is_file()) {
                Some(path) => found.push(path),
                None => {
                    return Err(Error::MissingTool {
                        tool: format!("the CNI plugin `{plugin}`"),
                        purpose: "publish the engine's port (podman's network backend is cni)"
                            .to_string(),
                        searched: dirs,
                        hint: Some(install_hint("bridge", distro)),
                    });
                }
            }
        }
    } else if host["networkBackend"].as_str() == Some("netavark") {
        let dirs = helper_dirs(conf, files);
        if let Some(path) = dirs
            .iter()
            .map(|d| d.join("netavark"))
            .find(|p| p.is_file())
        {
            found.push(path);
        }
    }
    found.push(podman_init(conf, files, locate, distro)?);
    Ok(found)
}

fn missing_program(
    program: &str,
    purpose: &str,
    searched: Vec<PathBuf>,
    distro: Distro,
    conf: &ContainersConf,
) -> Error {
    let package_program = match program {
        "netavark" | "aardvark-dns" | "slirp4netns" | "pasta" | "crun" | "runc" | "conmon"
        | "catatonit" => program,
        _ => "",
    };
    let install = if package_program.is_empty() {
        None
    } else {
        Some(install_hint(package_program, distro))
    };
    let configured = conf
        .runtime
        .as_ref()
        .filter(|setting| setting.value == program)
        .map(|setting| {
            format!(
                "; or choose another `runtime` under [engine] in {}",
                setting.file.display()
            )
        })
        .unwrap_or_default();
    Error::MissingTool {
        tool: program.to_string(),
        purpose: purpose.to_string(),
        searched,
        hint: install.map(|install| format!("{install}{configured}")),
    }
}

/// The error a failing `podman info` means, when its message names a missing piece: the OCI
/// runtime (`default OCI runtime "crun" not found`), a helper binary (`could not find "netavark"
/// in one of [...]`), or the CNI plugin directories (`invalid cni_plugin_dirs`).
pub fn podman_info_failure(tail: &str, conf: &ContainersConf, distro: Distro) -> Option<Error> {
    if let Some(rest) = tail.split("default OCI runtime \"").nth(1)
        && let Some((name, _)) = rest.split_once('"')
        && rest.contains("not found")
    {
        return Some(missing_program(
            name,
            "run containers (podman's OCI runtime)",
            Vec::new(),
            distro,
            conf,
        ));
    }
    if let Some(rest) = tail.split("could not find \"").nth(1)
        && let Some((name, rest)) = rest.split_once('"')
    {
        let searched = rest
            .split_once('[')
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(list, _)| list.split_whitespace().map(PathBuf::from).collect())
            .unwrap_or_default();
        let purpose = match name {
            "netavark" | "aardvark-dns" => "publish the engine's port (podman's network backend)",
            "slirp4netns" | "pasta" => "publish the engine's port from a rootless container",
            _ => "run containers with podman",
        };
        let mut error = missing_program(name, purpose, searched, distro, conf);
        if let Error::MissingTool { hint, .. } = &mut error {
            let fix = format!(
                "or set `helper_binaries_dir` under [engine] in {} to the directory that holds it",
                conf.described()
            );
            *hint = Some(match hint.take() {
                Some(install) => format!("{install}; {fix}"),
                None => fix,
            });
        }
        return Some(error);
    }
    if tail.contains("invalid cni_plugin_dirs") {
        let configured = conf
            .cni_plugin_dirs
            .as_ref()
            .map(|setting| {
                format!(
                    "; or correct `cni_plugin_dirs` under [network] in {}",
                    setting.file.display()
                )
            })
            .unwrap_or_default();
        return Some(Error::MissingTool {
            tool: "the CNI plugins".to_string(),
            purpose: "publish the engine's port (podman's network backend is cni)".to_string(),
            searched: conf
                .cni_plugin_dirs
                .as_ref()
                .map(|setting| setting.value.iter().map(PathBuf::from).collect())
                .unwrap_or_default(),
            hint: Some(format!("{}{configured}", install_hint("bridge", distro))),
        });
    }
    None
}

/// Reads `docker info --format json`: an init binary the daemon could not run shows as
/// `InitCommit.ID` `N/A`.
pub fn check_docker(info: &str, distro: Distro) -> Result<Vec<PathBuf>> {
    let info: serde_json::Value = serde_json::from_str(info).unwrap_or_default();
    if info["InitCommit"]["ID"].as_str() == Some("N/A") {
        let binary = info["InitBinary"].as_str().unwrap_or("docker-init");
        return Err(Error::MissingSetup {
            what: format!("docker's init binary ({binary})"),
            purpose: INIT_PURPOSE.to_string(),
            hint: Some(format!(
                "reinstall the docker engine, which ships it ({}), or set \"init-path\" in /etc/docker/daemon.json and restart dockerd",
                install_hint("docker", distro)
            )),
        });
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_info_failures_name_the_missing_piece() {
        let conf = ContainersConf::default();
        let error = podman_info_failure(
            "Error: default OCI runtime \"crun\" not found: invalid argument",
            &conf,
            Distro::Debian,
        )
        .unwrap();
        assert!(
            matches!(&error, Error::MissingTool { tool, .. } if tool == "crun"),
            "{error:?}"
        );
        assert!(error.hint().unwrap().contains("apt-get install -y crun"));
        let error = podman_info_failure(
            "Error: could not find \"netavark\" in one of [/usr/local/libexec/podman /usr/lib/podman].  To resolve this error, set the helper_binaries_dir key",
            &conf,
            Distro::Fedora,
        )
        .unwrap();
        assert!(
            matches!(&error, Error::MissingTool { tool, searched, .. } if tool == "netavark" && searched.len() == 2),
            "{error:?}"
        );
        assert!(error.hint().unwrap().contains("dnf install -y netavark"));
        assert!(podman_info_failure("Error: something else", &conf, Distro::Debian).is_none());
    }

    #[test]
    fn later_files_override_earlier_ones_key_by_key() {
        let mut conf = ContainersConf::default();
        conf.apply(
            Path::new("/a.conf"),
            "[containers]\ninit_path = \"/a/init\"\n[engine]\nruntime = \"crun\"\n",
        );
        conf.apply(
            Path::new("/b.conf"),
            "[engine]\nhelper_binaries_dir = [\"/h1\", \"/h2\"]\n",
        );
        conf.apply(Path::new("/c.conf"), "not toml [");
        assert_eq!(conf.init_path.as_ref().unwrap().value, "/a/init");
        assert_eq!(conf.runtime.as_ref().unwrap().file, Path::new("/a.conf"));
        assert_eq!(
            conf.helper_binaries_dir.as_ref().unwrap().value,
            ["/h1", "/h2"]
        );
    }

    #[test]
    fn docker_reports_a_missing_init_as_n_a() {
        assert!(
            check_docker(
                r#"{"InitBinary":"docker-init","InitCommit":{"ID":"de40ad0"}}"#,
                Distro::Debian
            )
            .is_ok()
        );
        let error = check_docker(
            r#"{"InitBinary":"docker-init","InitCommit":{"ID":"N/A"}}"#,
            Distro::Debian,
        )
        .unwrap_err();
        assert!(matches!(error, Error::MissingSetup { .. }), "{error:?}");
        assert!(error.hint().unwrap().contains("docker.io"));
    }
}
