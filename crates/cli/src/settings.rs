//! Host-wide settings from the command line and the environment: every `LLAMA_ORCH_*` switch,
//! the cache root, the models directory, structured logs and colour.
//!
//! Rules, the same for every switch:
//! - a flag wins over its variable;
//! - an empty variable (or an empty flag value) means unset: `LLAMA_ORCH_OFFLINE=` is neither an
//!   error nor `true`, `LLAMA_ORCH_ALLOWED_HOSTS=` is no allowlist (not one that blocks every
//!   host);
//! - boolean switches take `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0` (any case); anything
//!   else is a usage error (exit 2);
//! - the cache root is `--cache-dir`, else `LLAMA_ORCH_CACHE_DIR`, else
//!   `$XDG_CACHE_HOME/llama-orch` (only when `XDG_CACHE_HOME` is absolute), else
//!   `$HOME/.cache/llama-orch` (only when `HOME` is absolute); the models directory is
//!   `--models-dir`, else `LLAMA_ORCH_MODELS_DIR`, else `$XDG_CACHE_HOME/models`, else
//!   `$HOME/.cache/models`. Without any of them a command that needs the directory fails with
//!   exit 3 and a hint naming the flag and the variable; it never falls back to `/.cache`.
//!
//! Reading is separate from the process: [`Environment`] is a snapshot, so the rules are tested
//! without touching the real environment.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use provisioner_core::Layout;

use crate::render::Failure;

/// `--cache-dir`'s variable.
pub const CACHE_DIR: &str = "LLAMA_ORCH_CACHE_DIR";
/// `--models-dir`'s variable.
pub const MODELS_DIR: &str = "LLAMA_ORCH_MODELS_DIR";
/// `--offline`'s variable.
pub const OFFLINE: &str = "LLAMA_ORCH_OFFLINE";
/// `--allowed-hosts`'s variable.
pub const ALLOWED_HOSTS: &str = "LLAMA_ORCH_ALLOWED_HOSTS";
/// `--allow-http`'s variable.
pub const ALLOW_HTTP: &str = "LLAMA_ORCH_ALLOW_HTTP";
/// Structured log filter (`info`, `debug`, any `tracing` filter); unset or empty: no logs.
pub const LOG: &str = "LLAMA_ORCH_LOG";
/// `json`: structured logs as one JSON object per line.
pub const LOG_FORMAT: &str = "LLAMA_ORCH_LOG_FORMAT";
/// <https://no-color.org>: when set and not empty, no colour.
pub const NO_COLOR: &str = "NO_COLOR";

/// A snapshot of environment variables. [`Environment::get`] treats an empty value as unset.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: BTreeMap<OsString, OsString>,
}

impl Environment {
    /// This process's environment.
    pub fn from_process() -> Self {
        Environment {
            vars: std::env::vars_os().collect(),
        }
    }

    /// The given variables (tests).
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<OsString>,
        V: Into<OsString>,
    {
        Environment {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// A variable's value; `None` when it is unset or empty.
    pub fn get(&self, name: &str) -> Option<&OsStr> {
        self.vars
            .get(OsStr::new(name))
            .map(OsString::as_os_str)
            .filter(|value| !value.is_empty())
    }

    /// A variable as text; `None` when unset or empty, an error when it is not UTF-8.
    fn text(&self, name: &str) -> Result<Option<&str>, UsageError> {
        self.get(name)
            .map(|value| {
                value.to_str().ok_or_else(|| UsageError {
                    message: format!("{name} is not valid UTF-8"),
                })
            })
            .transpose()
    }

    /// An absolute directory from a variable; relative values are ignored (the XDG rule).
    fn absolute_dir(&self, name: &str) -> Option<PathBuf> {
        self.get(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    }
}

/// The host-wide flags as given on the command line (clap stays in `main.rs`/`args.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFlags {
    /// `--cache-dir`.
    pub cache_dir: Option<PathBuf>,
    /// `--models-dir`.
    pub models_dir: Option<PathBuf>,
    /// `--offline` given.
    pub offline: bool,
    /// `--allowed-hosts`, split at commas.
    pub allowed_hosts: Option<Vec<String>>,
    /// `--allow-http` given.
    pub allow_http: bool,
}

/// A switch whose value cannot be read: a usage error (exit 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    /// What is wrong, naming the variable.
    pub message: String,
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Host-wide settings, from flags and environment ([`resolve`] reads them).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Home directory (for defaults and `~/` in configs); empty when unknown.
    pub home: PathBuf,
    /// `$XDG_CACHE_HOME` when it is an absolute path: the default cache root and models
    /// directory live under it instead of `~/.cache`.
    pub xdg_cache_home: Option<PathBuf>,
    /// Cache root given (`--cache-dir`, `LLAMA_ORCH_CACHE_DIR`).
    pub cache_dir: Option<PathBuf>,
    /// Models directory given (`--models-dir`, `LLAMA_ORCH_MODELS_DIR`).
    pub models_dir: Option<PathBuf>,
    /// Offline mode.
    pub offline: bool,
    /// Network allowlist.
    pub allowed_hosts: Option<Vec<String>>,
    /// Allow plain HTTP downloads from remote hosts.
    pub allow_plain_http: bool,
    /// The Hugging Face client's settings (`HF_ENDPOINT`, `HF_TOKEN` or the token file,
    /// `HF_HUB_CACHE`/`HF_HOME`, `HF_HUB_OFFLINE`); `None` only in settings built by hand.
    pub hf: Option<adapters_model::HfSettings>,
}

impl Settings {
    /// The directories in use: the cache root and models directory given, else their defaults
    /// under `$XDG_CACHE_HOME` or `~/.cache` (see the module documentation); a failure (exit 3,
    /// with a hint) when neither is given and no default is known.
    pub fn try_layout(&self) -> Result<Layout, Failure> {
        Ok(Layout::with_cache_root(
            &self.home,
            cache_root(self)?,
            models_dir(self)?,
        ))
    }

    /// [`Settings::try_layout`] for callers that checked it already (`orchctl` does before
    /// every command that needs a directory); should it fail after all, the directories are
    /// relative to the working directory rather than the file system root.
    pub fn layout(&self) -> Layout {
        self.try_layout().unwrap_or_else(|_| {
            let cache = PathBuf::from(".cache");
            Layout::with_cache_root(
                &self.home,
                self.cache_dir
                    .clone()
                    .unwrap_or_else(|| cache.join("llama-orch")),
                self.models_dir
                    .clone()
                    .unwrap_or_else(|| cache.join("models")),
            )
        })
    }
}

/// Reads a boolean switch the way clap's boolish parser does.
fn boolish(name: &str, value: &str) -> Result<bool, UsageError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "t" | "true" | "on" | "1" => Ok(true),
        "n" | "no" | "f" | "false" | "off" | "0" => Ok(false),
        _ => Err(UsageError {
            message: format!(
                "invalid value '{value}' for {name}: expected true or false (also yes/no, on/off, 1/0), or leave it empty for unset"
            ),
        }),
    }
}

fn flag_or_var(flag: bool, env: &Environment, name: &str) -> Result<bool, UsageError> {
    if flag {
        return Ok(true);
    }
    env.text(name)?
        .map_or(Ok(false), |value| boolish(name, value))
}

/// A comma-separated host list with empty items dropped; `None` when nothing is left.
/// An allowlist from its comma-separated items: `None` for an empty value (no allowlist);
/// empty items between commas are dropped. A value that names no host at all (`,,,`) or an
/// item that is a URL or a path rather than a host name (`https://a.example`, `a.example/x`)
/// is a usage error: it would otherwise leave every host allowed, or allow nothing it seems
/// to.
fn host_list<'a>(
    items: impl IntoIterator<Item = &'a str>,
    given_as: &str,
) -> Result<Option<Vec<String>>, UsageError> {
    let items: Vec<&str> = items.into_iter().map(str::trim).collect();
    if items.iter().all(|item| item.is_empty()) {
        if items.len() <= 1 {
            return Ok(None);
        }
        return Err(UsageError {
            message: format!(
                "{given_as} names no host, only commas; give host names (a.example, *.b.example), or leave it empty for no allowlist"
            ),
        });
    }
    let mut hosts = Vec::new();
    for item in items.into_iter().filter(|item| !item.is_empty()) {
        // One colon is a port (hosts are matched without one); IPv6 addresses have several.
        let port = item.matches(':').count() == 1;
        if item.contains("://") || item.contains('/') || item.contains(char::is_whitespace) || port
        {
            return Err(UsageError {
                message: format!(
                    "{given_as}: `{item}` is not a host name; give the host alone (a.example, *.b.example, 10.0.0.5), not a URL, a path or a port"
                ),
            });
        }
        hosts.push(item.to_string());
    }
    Ok(Some(hosts))
}

fn non_empty(path: Option<&PathBuf>) -> Option<PathBuf> {
    path.filter(|path| !path.as_os_str().is_empty()).cloned()
}

/// Host settings from the flags and the environment (see the module documentation).
pub fn resolve(flags: &HostFlags, env: &Environment) -> Result<Settings, UsageError> {
    let allowed_hosts = match &flags.allowed_hosts {
        Some(given) => host_list(given.iter().map(String::as_str), "--allowed-hosts")?,
        None => None,
    };
    let allowed_hosts = match allowed_hosts {
        Some(hosts) => Some(hosts),
        None => match env.text(ALLOWED_HOSTS)? {
            Some(value) => host_list(value.split(','), ALLOWED_HOSTS)?,
            None => None,
        },
    };
    let home = env.absolute_dir("HOME");
    let hf = adapters_model::HfSettings::from_env(
        &|name| env.get(name).and_then(|v| v.to_str()).map(str::to_string),
        home.as_deref(),
    )
    .map_err(|error| UsageError {
        message: error.to_string(),
    })?;
    Ok(Settings {
        hf: Some(hf),
        home: env.absolute_dir("HOME").unwrap_or_default(),
        xdg_cache_home: env.absolute_dir("XDG_CACHE_HOME"),
        cache_dir: non_empty(flags.cache_dir.as_ref())
            .or_else(|| env.get(CACHE_DIR).map(PathBuf::from)),
        models_dir: non_empty(flags.models_dir.as_ref())
            .or_else(|| env.get(MODELS_DIR).map(PathBuf::from)),
        offline: flag_or_var(flags.offline, env, OFFLINE)?,
        allowed_hosts,
        allow_plain_http: flag_or_var(flags.allow_http, env, ALLOW_HTTP)?,
    })
}

/// Where structured logs go, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// The `tracing` filter (`LLAMA_ORCH_LOG`).
    pub filter: String,
    /// One JSON object per line (`LLAMA_ORCH_LOG_FORMAT=json`).
    pub json: bool,
}

/// Dependencies whose debug and trace logs show what goes over the wire: ureq's request and
/// response dumps and ureq-proto's hex dump of every byte sent (an `Authorization` header, the
/// `user:password` of a download URL as base64, a hub token), the TLS and HTTP/2 stacks and the
/// registry client (oci-client over reqwest and hyper: tokens, headers). Whatever filter
/// `LLAMA_ORCH_LOG` sets (`trace`, `ureq=trace`, a span directive), their events are cut at
/// [`WIRE_LOG_LEVEL`]: a target here is a prefix (`ureq` covers `ureq::run` and `ureq_proto`).
pub const WIRE_LOG_TARGETS: [&str; 11] = [
    "ureq",
    "ureq_proto",
    "rustls",
    "tokio_rustls",
    "hyper",
    "hyper_util",
    "hyper_rustls",
    "h2",
    "reqwest",
    "oci_client",
    "oci_spec",
];

/// The most detailed level of [`WIRE_LOG_TARGETS`] that is ever printed: their warnings and
/// errors (a refused certificate, a connection reset) stay.
pub const WIRE_LOG_LEVEL: &str = "warn";

/// Structured logs: `None` unless `LLAMA_ORCH_LOG` is set and not empty.
pub fn logs(env: &Environment) -> Option<LogSettings> {
    let filter = env.get(LOG)?.to_string_lossy().trim().to_string();
    if filter.is_empty() {
        return None;
    }
    Some(LogSettings {
        filter,
        json: env
            .get(LOG_FORMAT)
            .is_some_and(|format| format.eq_ignore_ascii_case("json")),
    })
}

/// Whether stderr gets colour and other terminal escapes: only on a terminal, never with
/// `NO_COLOR` set (and not empty).
pub fn colour(env: &Environment, stderr_is_terminal: bool) -> bool {
    stderr_is_terminal && env.get(NO_COLOR).is_none()
}

/// `name` under `$XDG_CACHE_HOME` or `~/.cache`, if either is known.
fn cache_default(settings: &Settings, name: &str) -> Option<PathBuf> {
    if let Some(xdg) = &settings.xdg_cache_home {
        return Some(xdg.join(name));
    }
    let home: &Path = &settings.home;
    (home.is_absolute()).then(|| home.join(".cache").join(name))
}

/// The cache root (see the module documentation), or exit 3 with a hint.
pub fn cache_root(settings: &Settings) -> Result<PathBuf, Failure> {
    settings
        .cache_dir
        .clone()
        .or_else(|| cache_default(settings, "llama-orch"))
        .ok_or_else(|| {
            unknown_dir(
                "the cache directory",
                "--cache-dir DIR",
                CACHE_DIR,
                "llama-orch",
            )
        })
}

/// The models directory (see the module documentation), or exit 3 with a hint.
pub fn models_dir(settings: &Settings) -> Result<PathBuf, Failure> {
    settings
        .models_dir
        .clone()
        .or_else(|| cache_default(settings, "models"))
        .ok_or_else(|| {
            unknown_dir(
                "the models directory",
                "--models-dir DIR",
                MODELS_DIR,
                "models",
            )
        })
}

fn unknown_dir(what: &str, flag: &str, variable: &str, name: &str) -> Failure {
    Failure::config(
        format!(
            "cannot tell where {what} is: neither {} nor {variable} is given, XDG_CACHE_HOME is not an absolute path and HOME is not set to one",
            flag.split(' ').next().unwrap_or(flag)
        ),
        Some(format!(
            "set {flag} or {variable}=DIR (or HOME, for the default ~/.cache/{name})"
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        Environment::from_pairs(pairs.iter().map(|(k, v)| (*k, *v)))
    }

    #[test]
    fn empty_switches_mean_unset() {
        let settings = resolve(
            &HostFlags::default(),
            &env(&[
                (OFFLINE, ""),
                (ALLOWED_HOSTS, ""),
                (ALLOW_HTTP, ""),
                (CACHE_DIR, ""),
                (MODELS_DIR, ""),
                ("HOME", "/home/u"),
            ]),
        )
        .unwrap();
        assert!(!settings.offline);
        assert_eq!(settings.allowed_hosts, None);
        assert!(!settings.allow_plain_http);
        assert_eq!(settings.cache_dir, None);
        assert_eq!(settings.models_dir, None);
        assert_eq!(
            cache_root(&settings).unwrap(),
            Path::new("/home/u/.cache/llama-orch")
        );
        assert_eq!(
            models_dir(&settings).unwrap(),
            Path::new("/home/u/.cache/models")
        );
        assert_eq!(logs(&env(&[(LOG, ""), (LOG_FORMAT, "json")])), None);
        assert!(colour(&env(&[(NO_COLOR, "")]), true));
    }

    #[test]
    fn booleans_read_like_clap_and_flags_win() {
        for (value, expected) in [("1", true), ("TRUE", true), ("on", true), ("no", false)] {
            let settings = resolve(&HostFlags::default(), &env(&[(OFFLINE, value)])).unwrap();
            assert_eq!(settings.offline, expected, "{value}");
        }
        let error = resolve(&HostFlags::default(), &env(&[(ALLOW_HTTP, "maybe")])).unwrap_err();
        assert!(
            error.message.contains("LLAMA_ORCH_ALLOW_HTTP") && error.message.contains("maybe"),
            "{error}"
        );
        let flags = HostFlags {
            offline: true,
            ..HostFlags::default()
        };
        assert!(
            resolve(&flags, &env(&[(OFFLINE, "false")]))
                .unwrap()
                .offline
        );
    }

    #[test]
    fn host_lists_drop_empty_items_and_flags_win() {
        let settings = resolve(
            &HostFlags::default(),
            &env(&[(ALLOWED_HOSTS, " a.example, ,*.b.example,")]),
        )
        .unwrap();
        assert_eq!(
            settings.allowed_hosts,
            Some(vec!["a.example".to_string(), "*.b.example".to_string()])
        );
        let flags = HostFlags {
            allowed_hosts: Some(vec!["c.example".to_string()]),
            ..HostFlags::default()
        };
        let settings = resolve(&flags, &env(&[(ALLOWED_HOSTS, "a.example")])).unwrap();
        assert_eq!(settings.allowed_hosts, Some(vec!["c.example".to_string()]));
        let flags = HostFlags {
            allowed_hosts: Some(vec![String::new()]),
            ..HostFlags::default()
        };
        assert_eq!(
            resolve(&flags, &Environment::default())
                .unwrap()
                .allowed_hosts,
            None
        );
    }

    #[test]
    fn host_lists_that_name_no_host_or_a_url_are_refused() {
        for value in [",,,", " , "] {
            let error = resolve(&HostFlags::default(), &env(&[(ALLOWED_HOSTS, value)]))
                .unwrap_err()
                .message;
            assert!(error.contains("names no host"), "{value}: {error}");
        }
        for value in [
            "https://a.example",
            "a.example/models",
            "a .example",
            "a.example:5000",
        ] {
            let error = resolve(&HostFlags::default(), &env(&[(ALLOWED_HOSTS, value)]))
                .unwrap_err()
                .message;
            assert!(error.contains("is not a host name"), "{value}: {error}");
        }
        let flags = HostFlags {
            allowed_hosts: Some(vec![String::new(), String::new()]),
            ..HostFlags::default()
        };
        let error = resolve(&flags, &Environment::default())
            .unwrap_err()
            .message;
        assert!(
            error.starts_with("--allowed-hosts names no host"),
            "{error}"
        );
        let settings = resolve(
            &HostFlags::default(),
            &env(&[(ALLOWED_HOSTS, "10.0.0.5,*.b.example,fd00::1")]),
        )
        .unwrap();
        assert_eq!(
            settings.allowed_hosts,
            Some(vec![
                "10.0.0.5".to_string(),
                "*.b.example".to_string(),
                "fd00::1".to_string()
            ])
        );
    }

    #[test]
    fn cache_root_order() {
        let flags = HostFlags {
            cache_dir: Some(PathBuf::from("/flag")),
            models_dir: Some(PathBuf::from("/flag-models")),
            ..HostFlags::default()
        };
        let all = env(&[
            (CACHE_DIR, "/var"),
            (MODELS_DIR, "/var-models"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ]);
        let settings = resolve(&flags, &all).unwrap();
        assert_eq!(cache_root(&settings).unwrap(), Path::new("/flag"));
        assert_eq!(models_dir(&settings).unwrap(), Path::new("/flag-models"));

        let settings = resolve(&HostFlags::default(), &all).unwrap();
        assert_eq!(cache_root(&settings).unwrap(), Path::new("/var"));
        assert_eq!(models_dir(&settings).unwrap(), Path::new("/var-models"));

        let settings = resolve(
            &HostFlags::default(),
            &env(&[("XDG_CACHE_HOME", "/xdg"), ("HOME", "/home/u")]),
        )
        .unwrap();
        assert_eq!(cache_root(&settings).unwrap(), Path::new("/xdg/llama-orch"));
        assert_eq!(models_dir(&settings).unwrap(), Path::new("/xdg/models"));

        // A relative XDG_CACHE_HOME is ignored, as the XDG specification says.
        let settings = resolve(
            &HostFlags::default(),
            &env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/home/u")]),
        )
        .unwrap();
        assert_eq!(
            cache_root(&settings).unwrap(),
            Path::new("/home/u/.cache/llama-orch")
        );
    }

    #[test]
    fn no_home_and_nothing_given_is_exit_3_naming_flag_and_variable() {
        for home in [None, Some(""), Some("relative")] {
            let pairs: Vec<(&str, &str)> = home.map(|h| ("HOME", h)).into_iter().collect();
            let settings = resolve(&HostFlags::default(), &env(&pairs)).unwrap();
            let failure = cache_root(&settings).unwrap_err();
            assert_eq!(failure.exit, 3);
            assert_eq!(failure.code, "config");
            let hint = failure.hint.unwrap();
            assert!(
                hint.contains("--cache-dir") && hint.contains("LLAMA_ORCH_CACHE_DIR"),
                "{hint}"
            );
            let failure = models_dir(&settings).unwrap_err();
            let hint = failure.hint.unwrap();
            assert!(
                hint.contains("--models-dir") && hint.contains("LLAMA_ORCH_MODELS_DIR"),
                "{hint}"
            );
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(&Environment::default(), true));
        assert!(!colour(&Environment::default(), false));
        assert!(!colour(&env(&[(NO_COLOR, "1")]), true));
    }

    #[test]
    fn log_settings() {
        assert_eq!(logs(&Environment::default()), None);
        assert_eq!(
            logs(&env(&[(LOG, "info"), (LOG_FORMAT, "JSON")])),
            Some(LogSettings {
                filter: "info".to_string(),
                json: true
            })
        );
    }
}
