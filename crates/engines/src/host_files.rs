//! Host paths in engine flags, for container mode. A container sees only what is mounted into
//! it, so every option whose value is a path on this host is found (each engine's recipe lists
//! its own: [`crate::common::Recipe::path_options`]), its absolute paths are bind-mounted
//! read-only at `/inputs/<n>-<file name>` and the value is rewritten to that path; options the
//! engine writes to are refused with the reason. A relative path is passed as written: the
//! engine resolves it inside the container (vLLM's images ship `examples/*.jinja` next to their
//! working directory). Pure: whether a path exists is checked by the container runtime adapter
//! when the image is made present ([`provisioner_core::ImageSpec::inputs`]).

use std::path::Path;

use provisioner_core::{Error, HostInput, HostInputKind, Result};

/// Where host inputs are mounted inside a container.
pub const INPUTS_DIR: &str = "/inputs";

/// How an option's value holds paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathValue {
    /// One path.
    One,
    /// Comma-separated paths (llama.cpp's `--lora a.gguf,b.gguf`).
    List,
    /// Comma-separated `PATH:SCALE` items (llama.cpp's `--lora-scaled`).
    ScaledList,
    /// Comma-separated items, each an id or `NAME=PATH` (TGI's `--lora-adapters`); only the
    /// `NAME=PATH` items hold paths.
    NamedList,
    /// Words up to the next option, each `NAME=PATH` or a JSON object with a `"path"` (vLLM's
    /// `--lora-modules`).
    NamedWords,
    /// A path, or the content itself when it holds `{`, `}` or a line break (vLLM's
    /// `--chat-template`).
    PathOrInline,
}

/// What the engine does with the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathUse {
    /// Reads it (a file, a directory or either): mounted read-only.
    Read(HostInputKind),
    /// Writes there: refused in a container (its files vanish with it, and the mounts are
    /// read-only).
    Write,
}

/// An option of an engine whose value names paths.
#[derive(Debug, Clone, Copy)]
pub struct PathOption {
    /// Every spelling (`-mm`, `--mmproj`).
    pub names: &'static [&'static str],
    /// How the value holds paths.
    pub value: PathValue,
    /// What the engine does with them.
    pub usage: PathUse,
}

impl PathOption {
    /// A file the engine reads.
    pub const fn file(names: &'static [&'static str]) -> PathOption {
        PathOption {
            names,
            value: PathValue::One,
            usage: PathUse::Read(HostInputKind::File),
        }
    }

    /// A directory the engine reads.
    pub const fn directory(names: &'static [&'static str]) -> PathOption {
        PathOption {
            names,
            value: PathValue::One,
            usage: PathUse::Read(HostInputKind::Directory),
        }
    }

    /// A file or a directory the engine reads.
    pub const fn either(names: &'static [&'static str]) -> PathOption {
        PathOption {
            names,
            value: PathValue::One,
            usage: PathUse::Read(HostInputKind::Either),
        }
    }

    /// A path the engine writes to.
    pub const fn output(names: &'static [&'static str]) -> PathOption {
        PathOption {
            names,
            value: PathValue::One,
            usage: PathUse::Write,
        }
    }

    /// Read paths held in another form of value.
    pub const fn read(
        names: &'static [&'static str],
        value: PathValue,
        kind: HostInputKind,
    ) -> PathOption {
        PathOption {
            names,
            value,
            usage: PathUse::Read(kind),
        }
    }
}

/// A host path mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputMount {
    /// The host path and what it must be.
    pub input: HostInput,
    /// Where it is inside the container: `/inputs/<n>-<file name>`.
    pub target: String,
}

/// Server arguments with host paths rewritten, and what to mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewritten {
    /// The arguments as the container's server gets them.
    pub args: Vec<String>,
    /// One read-only bind mount per distinct host path, in order of appearance.
    pub mounts: Vec<InputMount>,
    /// Relative paths passed as written, for the plan.
    pub notes: Vec<String>,
}

fn is_option(token: &str) -> bool {
    token.starts_with('-') && token.len() > 1 && token.parse::<f64>().is_err()
}

/// A file name safe in every value form (no `,`, `:`, `=`, quotes or spaces).
fn safe_name(path: &Path) -> String {
    let name: String = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.chars().all(|c| c == '.') {
        "input".to_string()
    } else {
        name
    }
}

struct Scan<'a> {
    flags: &'a [String],
    out: Rewritten,
    /// Only finding the files a native engine reads: nothing is mounted, so what a container
    /// refuses (a path it writes, a line break, an escape in JSON) is passed over.
    native: bool,
}

impl Scan<'_> {
    /// Where the configuration names `value` (the flag word holding it), for errors.
    fn field(&self, option: &str, value: &str) -> String {
        let index = self
            .flags
            .iter()
            .position(|f| f == value || f.ends_with(&format!("={value}")))
            .or_else(|| self.flags.iter().position(|f| f.contains(value)))
            .or_else(|| {
                self.flags
                    .iter()
                    .position(|f| f == option || f.starts_with(&format!("{option}=")))
            });
        match index {
            Some(index) => format!("provisioning.flags[{index}]"),
            None => "provisioning.flags".to_string(),
        }
    }

    /// One path named by `option`: its container path (mounted when absolute).
    fn path(&mut self, spec: &PathOption, option: &str, path: &str) -> Result<String> {
        let kind = match spec.usage {
            PathUse::Read(kind) => kind,
            PathUse::Write if self.native => return Ok(path.to_string()),
            PathUse::Write => {
                return Err(Error::invalid(
                    self.field(option, path),
                    format!(
                        "{option} {path}: the engine writes there, and in container mode its files vanish with the container (--rm) while host paths are mounted read-only; drop the option (the engine's output is in the run log) or run the engine natively"
                    ),
                ));
            }
        };
        if path.contains(['\n', '\r']) && !self.native {
            return Err(Error::invalid(
                self.field(option, path),
                format!("{option}: a path holding a line break cannot be mounted into a container"),
            ));
        }
        let host = Path::new(path);
        if !host.is_absolute() {
            let note = format!(
                "{option} {path} is a relative path: passed as written, the engine resolves it inside the container (from the image's working directory); give an absolute path for a {} on this host",
                match kind {
                    HostInputKind::Directory => "directory",
                    _ => "file",
                }
            );
            if !self.out.notes.contains(&note) {
                self.out.notes.push(note);
            }
            return Ok(path.to_string());
        }
        if let Some(existing) = self.out.mounts.iter().find(|m| m.input.path == host) {
            return Ok(existing.target.clone());
        }
        let target = format!(
            "{INPUTS_DIR}/{}-{}",
            self.out.mounts.len() + 1,
            safe_name(host)
        );
        let field = self.field(option, path);
        self.out.mounts.push(InputMount {
            input: HostInput {
                path: host.to_path_buf(),
                kind,
                option: option.to_string(),
                field,
            },
            target: target.clone(),
        });
        Ok(target)
    }

    /// The value of `option` with its paths rewritten.
    fn value(&mut self, spec: &PathOption, option: &str, value: &str) -> Result<String> {
        match spec.value {
            PathValue::One => self.path(spec, option, value),
            PathValue::PathOrInline => {
                if value.contains(['{', '}', '\n']) {
                    Ok(value.to_string())
                } else {
                    self.path(spec, option, value)
                }
            }
            PathValue::List => value
                .split(',')
                .map(|item| self.path(spec, option, item))
                .collect::<Result<Vec<_>>>()
                .map(|items| items.join(",")),
            PathValue::ScaledList => value
                .split(',')
                .map(|item| match item.rsplit_once(':') {
                    Some((path, scale)) => {
                        Ok(format!("{}:{scale}", self.path(spec, option, path)?))
                    }
                    None => self.path(spec, option, item),
                })
                .collect::<Result<Vec<_>>>()
                .map(|items| items.join(",")),
            PathValue::NamedList => value
                .split(',')
                .map(|item| self.named(spec, option, item))
                .collect::<Result<Vec<_>>>()
                .map(|items| items.join(",")),
            PathValue::NamedWords => self.named(spec, option, value),
        }
    }

    /// `NAME=PATH` (or, in a JSON object, its `"path"` string); anything else as it is.
    fn named(&mut self, spec: &PathOption, option: &str, item: &str) -> Result<String> {
        if item.trim_start().starts_with('{') {
            return self.json_path(spec, option, item);
        }
        match item.split_once('=') {
            Some((name, path)) => Ok(format!("{name}={}", self.path(spec, option, path)?)),
            None => Ok(item.to_string()),
        }
    }

    /// Rewrites the `"path": "…"` member of a JSON object given as a word (no escapes in the
    /// path are expected; one holding `\` or `"` is refused).
    fn json_path(&mut self, spec: &PathOption, option: &str, item: &str) -> Result<String> {
        let Some(key) = item.find("\"path\"") else {
            return Ok(item.to_string());
        };
        let after_key = &item[key + "\"path\"".len()..];
        let Some(colon) = after_key.find(':') else {
            return Ok(item.to_string());
        };
        let after_colon = &after_key[colon + 1..];
        let Some(open) = after_colon.find('"') else {
            return Ok(item.to_string());
        };
        let start = key + "\"path\"".len() + colon + 1 + open + 1;
        let Some(length) = item[start..].find('"') else {
            return Ok(item.to_string());
        };
        let path = &item[start..start + length];
        if path.contains('\\') {
            if self.native {
                return Ok(item.to_string());
            }
            return Err(Error::invalid(
                self.field(option, item),
                format!(
                    "{option}: a \"path\" holding an escape cannot be mounted; give the path plainly"
                ),
            ));
        }
        let rewritten = self.path(spec, option, path)?;
        Ok(format!(
            "{}{rewritten}{}",
            &item[..start],
            &item[start + length..]
        ))
    }
}

/// Finds the host paths in `args` (a server's arguments as rendered) named by the options of
/// `table`, and rewrites them to their mount points under [`INPUTS_DIR`]. `flags` (the pool's
/// own, as configured) only locate errors and mounts as `provisioning.flags[i]`.
pub fn rewrite(table: &[PathOption], args: &[String], flags: &[String]) -> Result<Rewritten> {
    scan(table, args, flags, false)
}

/// The host files and directories a native engine reads, named by absolute path in `args` by
/// the options of `table` (what [`rewrite`] would mount; the paths it writes are not among
/// them). `flags` locate each as `provisioning.flags[i]`.
pub fn native_inputs(table: &[PathOption], args: &[String], flags: &[String]) -> Vec<HostInput> {
    scan(table, args, flags, true)
        .map(|found| found.inputs_to_check(None))
        .unwrap_or_default()
}

fn scan(
    table: &[PathOption],
    args: &[String],
    flags: &[String],
    native: bool,
) -> Result<Rewritten> {
    let mut scan = Scan {
        flags,
        out: Rewritten::default(),
        native,
    };
    let find = |name: &str| table.iter().find(|spec| spec.names.contains(&name));
    let mut index = 0;
    while index < args.len() {
        let token = &args[index];
        index += 1;
        if !is_option(token) {
            scan.out.args.push(token.clone());
            continue;
        }
        if let Some((name, value)) = token.split_once('=')
            && name.starts_with("--")
            && let Some(spec) = find(name)
        {
            let value = scan.value(spec, name, value)?;
            scan.out.args.push(format!("{name}={value}"));
            continue;
        }
        scan.out.args.push(token.clone());
        let Some(spec) = find(token) else { continue };
        while let Some(value) = args.get(index).filter(|next| !is_option(next)) {
            let value = scan.value(spec, token, value)?;
            scan.out.args.push(value);
            index += 1;
            if spec.value != PathValue::NamedWords {
                break;
            }
        }
    }
    Ok(scan.out)
}

impl Rewritten {
    /// The mounts whose host paths must exist before the run: all but those under
    /// `written_by_prepare` (the run directory, whose files prepare writes after the image).
    pub fn inputs_to_check(&self, written_by_prepare: Option<&Path>) -> Vec<HostInput> {
        self.mounts
            .iter()
            .filter(|m| written_by_prepare.is_none_or(|dir| !m.input.path.starts_with(dir)))
            .map(|m| m.input.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[PathOption] = &[
        PathOption::file(&["--chat-template-file"]),
        PathOption::read(&["--lora"], PathValue::List, HostInputKind::File),
        PathOption::read(
            &["--lora-scaled"],
            PathValue::ScaledList,
            HostInputKind::File,
        ),
        PathOption::output(&["--log-file"]),
        PathOption::read(
            &["--chat-template"],
            PathValue::PathOrInline,
            HostInputKind::File,
        ),
        PathOption::read(
            &["--lora-modules"],
            PathValue::NamedWords,
            HostInputKind::Either,
        ),
        PathOption::read(
            &["--lora-adapters"],
            PathValue::NamedList,
            HostInputKind::Either,
        ),
    ];

    fn words(text: &[&str]) -> Vec<String> {
        text.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn absolute_paths_are_mounted_once_and_rewritten() {
        let args = words(&[
            "--model",
            "/models/m.gguf",
            "--chat-template-file",
            "/srv/t/chat ml.jinja",
            "--lora",
            "/srv/a.gguf,rel.gguf",
            "--lora-scaled=/srv/a.gguf:0.5,/srv/b,c.gguf:1",
        ]);
        let flags = args[2..].to_vec();
        let out = rewrite(TABLE, &args, &flags).unwrap();
        assert_eq!(
            out.args,
            words(&[
                "--model",
                "/models/m.gguf",
                "--chat-template-file",
                "/inputs/1-chat_ml.jinja",
                "--lora",
                "/inputs/2-a.gguf,rel.gguf",
                "--lora-scaled=/inputs/2-a.gguf:0.5,/inputs/3-b,c.gguf:1",
            ])
        );
        assert_eq!(out.mounts.len(), 3);
        assert_eq!(out.mounts[0].input.field, "provisioning.flags[1]");
        assert_eq!(out.mounts[0].input.path, Path::new("/srv/t/chat ml.jinja"));
        assert_eq!(out.mounts[2].input.field, "provisioning.flags[4]");
        assert_eq!(out.notes.len(), 2, "{:?}", out.notes);
        assert!(out.notes[0].contains("rel.gguf"), "{:?}", out.notes);
    }

    #[test]
    fn outputs_and_line_breaks_are_refused_inline_templates_kept() {
        let args = words(&["--log-file", "/tmp/x.log"]);
        let error = rewrite(TABLE, &args, &args).unwrap_err();
        assert!(
            error.to_string().contains("provisioning.flags[1]"),
            "{error}"
        );
        assert!(error.to_string().contains("writes there"), "{error}");

        let args = words(&["--chat-template", "{{ messages }}"]);
        let out = rewrite(TABLE, &args, &args).unwrap();
        assert_eq!(out.args, args);
        assert!(out.mounts.is_empty());

        let args = words(&["--chat-template-file", "/a\nb"]);
        assert!(rewrite(TABLE, &args, &args).is_err());
    }

    #[test]
    fn named_items_and_json_objects() {
        let args = words(&[
            "--lora-modules",
            "sql=/srv/lora/sql",
            r#"{"name": "x", "path": "/srv/lora/x", "base_model_name": "m"}"#,
            "--lora-adapters",
            "org/adapter,mine=/srv/lora/sql",
            "--other",
        ]);
        let out = rewrite(TABLE, &args, &args).unwrap();
        assert_eq!(
            out.args,
            words(&[
                "--lora-modules",
                "sql=/inputs/1-sql",
                r#"{"name": "x", "path": "/inputs/2-x", "base_model_name": "m"}"#,
                "--lora-adapters",
                "org/adapter,mine=/inputs/1-sql",
                "--other",
            ])
        );
        assert_eq!(out.mounts[1].input.kind, HostInputKind::Either);
    }

    #[test]
    fn files_prepare_writes_are_mounted_but_not_checked() {
        let args = words(&["--chat-template-file", "/run/p/key", "--lora", "/srv/a"]);
        let out = rewrite(TABLE, &args, &args).unwrap();
        let checked = out.inputs_to_check(Some(Path::new("/run")));
        assert_eq!(checked.len(), 1);
        assert_eq!(checked[0].path, Path::new("/srv/a"));
    }
}
