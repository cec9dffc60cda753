//! Helpers every manager shares: error builders, output parsing and the post-install pin check.
//! Names, versions and repositories arrive as the core's types, checked when the config was read.

use std::path::PathBuf;

use provisioner_core::{
    CommandOutput, CommandSpec, Error, InstalledPackage, ManagerKind, PackageManager, PackageRepo,
    PackageRequest, Result, redact_urls,
};

use crate::locks::ManagerLock;

/// Runs a manager's remove command as root, after its locks are free; a failure carries the
/// manager's own output and names the command to run by hand.
pub(crate) async fn remove_as_root(
    runner: &crate::privilege::RootRunner,
    manager: ManagerKind,
    command: &CommandSpec,
    name: &provisioner_core::PackageName,
    locks: &[ManagerLock],
) -> Result<()> {
    let action = format!("removing {name}");
    let task = crate::privilege::RootTask {
        manager,
        package: name.as_str(),
        action: &action,
    };
    let output = runner.run_locked(command, &task, &[], locks).await?;
    if output.success() {
        Ok(())
    } else {
        let shown = runner.display(command);
        Err(failed(
            manager,
            name.as_str(),
            shown.clone(),
            &output,
            Some(shown),
        ))
    }
}

/// `name=version`, or `name` when unpinned: how errors name a request.
pub(crate) fn label(request: &PackageRequest) -> String {
    match &request.version {
        Some(version) => format!("{}={version}", request.name),
        None => request.name.to_string(),
    }
}

/// A manager's command that failed, as a package error (exit 13) quoting the manager's own
/// output (URL credentials removed from the command and the hint): what it said is shown, never
/// replaced by a guess.
pub(crate) fn failed(
    manager: ManagerKind,
    package: &str,
    display: String,
    output: &CommandOutput,
    hint: Option<String>,
) -> Error {
    Error::Package {
        manager: manager.to_string(),
        package: package.to_string(),
        message: format!(
            "`{}` failed ({}){}",
            redact_words(&display),
            output.status(),
            said(output)
        ),
        hint: hint.map(|hint| redact_words(&hint)),
    }
}

/// The last lines of a command's output as an indented block after a newline (`""` when it
/// printed nothing), for messages that quote what a manager said.
pub(crate) fn said(output: &CommandOutput) -> String {
    let lines: Vec<String> = output
        .tail
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| format!("  | {}", redact_urls(line)))
        .collect();
    if lines.is_empty() {
        String::new()
    } else {
        format!(":\n{}", lines.join("\n"))
    }
}

/// A command line for humans with every URL in it redacted.
pub(crate) fn redact_words(text: &str) -> String {
    redact_urls(text)
}

/// A package manager's command whose output is parsed: messages in the C locale, inheriting
/// the base variables and the package managers' ([`provisioner_core::PACKAGE_ENV`]) only.
pub(crate) fn parsed(program: &str, args: Vec<String>) -> CommandSpec {
    CommandSpec::new(program, args)
        .inherit_also(provisioner_core::PACKAGE_ENV)
        .env("LC_ALL", "C")
}

/// The value of `Key : value` lines (`pacman -Si`, `paru -Si`), in order.
pub(crate) fn field_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            (name.trim() == key).then(|| value.trim().to_string())
        })
        .collect()
}

/// Appends `value` unless present.
pub(crate) fn push_unique(list: &mut Vec<String>, value: String) {
    if !list.contains(&value) {
        list.push(value);
    }
}

/// Absolute paths, one per line, from a file listing.
pub(crate) fn absolute_lines(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim_end)
        .filter(|line| line.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// A repository as it may be shown or recorded (credentials removed).
pub(crate) fn shown_repository(repository: Option<&PackageRepo>) -> Option<String> {
    repository.map(PackageRepo::to_string)
}

/// The versions for messages: `a, b` or `none`.
pub(crate) fn version_list(versions: &[String]) -> String {
    if versions.is_empty() {
        "none".to_string()
    } else {
        versions.join(", ")
    }
}

/// After an install: queries every request and refuses to report success when a pinned version
/// is not what the package database holds.
pub(crate) async fn verify_installed(
    manager: &dyn PackageManager,
    requests: &[PackageRequest],
    same_version: fn(&str, &str) -> bool,
) -> Result<Vec<InstalledPackage>> {
    let mut installed = Vec::with_capacity(requests.len());
    for request in requests {
        let found = manager.query(&request.name).await?;
        let Some(mut package) = found else {
            return Err(Error::Package {
                manager: manager.kind().to_string(),
                package: label(request),
                message: "the install command succeeded but the package database reports it is not installed".to_string(),
                hint: Some(manager.install_command(std::slice::from_ref(request)).await),
            });
        };
        if let Some(version) = &request.version
            && !same_version(version.as_str(), &package.version)
        {
            return Err(Error::Package {
                manager: manager.kind().to_string(),
                package: label(request),
                message: format!(
                    "asked {version}, the package database reports {}; not reporting success",
                    package.version
                ),
                hint: Some(manager.install_command(std::slice::from_ref(request)).await),
            });
        }
        package.repository = shown_repository(request.repository.as_ref());
        installed.push(package);
    }
    Ok(installed)
}

/// Exact comparison (apt, pacman).
pub(crate) fn exact(asked: &str, reported: &str) -> bool {
    asked == reported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_split_at_the_first_colon() {
        let text = "Repository      : extra\nVersion         : 1:2.0-1\nName : x\n";
        assert_eq!(field_values(text, "Version"), vec!["1:2.0-1".to_string()]);
        assert_eq!(field_values(text, "Repository"), vec!["extra".to_string()]);
        assert!(field_values(text, "Missing").is_empty());
    }
}
