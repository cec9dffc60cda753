//! Running package-manager commands that need root, never silently:
//!
//! - as root, the command runs as it is;
//! - otherwise through `sudo -n` (works with a cached credential or a `NOPASSWD` rule), after a
//!   progress note that says what runs and why;
//! - when `sudo -n` needs a password and a terminal is attached, a note says so and interactive
//!   `sudo` runs in the terminal's foreground (it may ask for the password);
//! - with no terminal, or no `sudo` at all, the error carries the exact command to run.
//!
//! AUR helpers are the opposite case: they refuse to run as root and call `sudo` themselves, see
//! [`refuse_root_for_aur`].

use std::io::IsTerminal;
use std::sync::Arc;

use provisioner_core::{
    CommandOutput, CommandSpec, Error, ManagerKind, Progress, ProgressEvent, Result, Shell,
    redact_urls, shell_quote,
};

/// Environment variables set only to make output parseable (`LC_ALL=C`): kept in the
/// environment but not forwarded through `sudo` as `VAR=value` arguments nor shown in hints.
const PARSE_ONLY_VARIABLES: [&str; 1] = ["LC_ALL"];

/// What `sudo` prints when it cannot authenticate without asking.
const PASSWORD_NEEDED: [&str; 2] = ["a password is required", "a terminal is required"];

/// What `sudo` prints when the user may not run the command at all.
const SUDO_REFUSED: [&str; 4] = [
    "is not in the sudoers file",
    "is not allowed to execute",
    "may not run sudo",
    "incorrect password attempt",
];

/// Who the provisioner runs as, and whether it can ask the user for a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privilege {
    /// The effective user is root.
    pub root: bool,
    /// Standard input is a terminal (interactive `sudo` can ask for a password).
    pub terminal: bool,
}

impl Privilege {
    /// The current process: `geteuid() == 0`, and whether stdin is a terminal.
    pub fn detect() -> Self {
        Privilege {
            root: nix::unistd::geteuid().is_root(),
            terminal: std::io::stdin().is_terminal(),
        }
    }

    /// Root (no terminal needed).
    pub fn root() -> Self {
        Privilege {
            root: true,
            terminal: false,
        }
    }

    /// A regular user, with or without a terminal.
    pub fn user(terminal: bool) -> Self {
        Privilege {
            root: false,
            terminal,
        }
    }
}

/// What a root command is for, for notes and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootTask<'a> {
    /// Manager running it.
    pub manager: ManagerKind,
    /// Package, as errors name it (`name=version` when pinned).
    pub package: &'a str,
    /// What is being done, e.g. `installing llama.cpp-tools=1.0`.
    pub action: &'a str,
}

/// Runs commands that need root: directly as root, else through `sudo` (see the module docs).
#[derive(Clone)]
pub struct RootRunner {
    shell: Arc<dyn Shell>,
    progress: Arc<dyn Progress>,
    privilege: Privilege,
}

impl std::fmt::Debug for RootRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootRunner")
            .field("privilege", &self.privilege)
            .finish_non_exhaustive()
    }
}

/// The words a user types for `command`: forwarded variables as `VAR=value`, then argv.
fn command_words(command: &CommandSpec) -> Vec<String> {
    forwarded_env(command)
        .chain(std::iter::once(command.program.clone()))
        .chain(command.args.iter().cloned())
        .collect()
}

fn forwarded_env(command: &CommandSpec) -> impl Iterator<Item = String> + '_ {
    command
        .env
        .iter()
        .filter(|(key, _)| !PARSE_ONLY_VARIABLES.contains(&key.as_str()))
        .map(|(key, value)| format!("{key}={value}"))
}

/// Words quoted for display, URL credentials removed.
fn quoted(words: &[String]) -> String {
    words
        .iter()
        .map(|word| shell_quote(&redact_urls(word)))
        .collect::<Vec<_>>()
        .join(" ")
}

impl RootRunner {
    /// A runner over the Shell port for a process with `privilege`.
    pub fn new(shell: Arc<dyn Shell>, progress: Arc<dyn Progress>, privilege: Privilege) -> Self {
        RootRunner {
            shell,
            progress,
            privilege,
        }
    }

    /// Who runs the commands.
    pub fn privilege(&self) -> Privilege {
        self.privilege
    }

    /// The command as a user would type it to run it as root: as root the plain command
    /// (`VAR=value` prefixes included), otherwise with `sudo` in front.
    pub fn display(&self, command: &CommandSpec) -> String {
        let words = command_words(command);
        if self.privilege.root {
            quoted(&words)
        } else {
            format!("sudo {}", quoted(&words))
        }
    }

    /// Several commands run in order, for hints: `A && B`.
    pub fn display_all(&self, commands: &[&CommandSpec]) -> String {
        commands
            .iter()
            .map(|command| self.display(command))
            .collect::<Vec<_>>()
            .join(" && ")
    }

    /// Runs `command` as root (see the module docs). `then` lists the commands that follow it in
    /// the same operation, so that a hint names all of them. A non-zero exit of the command
    /// itself is returned, not an error: callers decide with [`CommandOutput::success`].
    pub async fn run(
        &self,
        command: &CommandSpec,
        task: &RootTask<'_>,
        then: &[&CommandSpec],
    ) -> Result<CommandOutput> {
        if self.privilege.root {
            return self.shell.run(command).await;
        }
        let all: Vec<&CommandSpec> = std::iter::once(command)
            .chain(then.iter().copied())
            .collect();
        if self.shell.locate("sudo").is_none() {
            let as_root = all
                .iter()
                .map(|command| quoted(&command_words(command)))
                .collect::<Vec<_>>()
                .join(" && ");
            return Err(Error::Package {
                manager: task.manager.to_string(),
                package: task.package.to_string(),
                message: format!(
                    "{} needs root and sudo is not installed; run the command below as root, or run the provisioner as root",
                    task.action
                ),
                hint: Some(as_root),
            });
        }

        let words = command_words(command);
        let mut sudo = command.clone();
        sudo.program = "sudo".to_string();
        sudo.args = std::iter::once("-n".to_string())
            .chain(words.iter().cloned())
            .collect();
        sudo.terminal = false;
        self.progress.report(ProgressEvent::Note {
            message: format!(
                "{} needs root: running `sudo -n {}`",
                task.action,
                quoted(&words)
            ),
        });
        let output = self.shell.run(&sudo).await?;
        if output.success() {
            return Ok(output);
        }
        if mentions(&output.tail, &SUDO_REFUSED) {
            return Err(self.refused(task, &all, &output));
        }
        if !mentions(&output.tail, &PASSWORD_NEEDED) {
            return Ok(output);
        }
        if !self.privilege.terminal {
            return Err(Error::Package {
                manager: task.manager.to_string(),
                package: task.package.to_string(),
                message: format!(
                    "{} needs root; sudo needs a password and no terminal is attached to ask for it. Run the command below yourself, run the provisioner as root, or allow the command without a password (a NOPASSWD sudoers rule)",
                    task.action
                ),
                hint: Some(self.display_all(&all)),
            });
        }

        self.progress.report(ProgressEvent::Note {
            message: format!(
                "{} needs root: running `sudo {}`; sudo may ask for your password",
                task.action,
                quoted(&words)
            ),
        });
        let mut interactive = sudo;
        interactive.args = words;
        interactive.terminal = true;
        let output = self.shell.run(&interactive).await?;
        if !output.success() && mentions(&output.tail, &SUDO_REFUSED) {
            return Err(self.refused(task, &all, &output));
        }
        Ok(output)
    }

    fn refused(&self, task: &RootTask<'_>, all: &[&CommandSpec], output: &CommandOutput) -> Error {
        let reason = output
            .tail
            .lines()
            .rev()
            .find(|line| line.starts_with("sudo:"))
            .unwrap_or("sudo refused")
            .trim()
            .to_string();
        Error::Package {
            manager: task.manager.to_string(),
            package: task.package.to_string(),
            message: format!(
                "{} needs root and sudo refused ({reason}); run the command below as a user allowed to, or as root",
                task.action
            ),
            hint: Some(self.display_all(all)),
        }
    }
}

fn mentions(text: &str, needles: &[&str]) -> bool {
    needles.iter().any(|needle| text.contains(needle))
}

/// AUR helpers (paru, yay) build packages as the invoking user and refuse to run as root: a clear
/// error instead of running them.
pub fn refuse_root_for_aur(privilege: Privilege, helper: ManagerKind, package: &str) -> Result<()> {
    if !privilege.root {
        return Ok(());
    }
    Err(Error::Package {
        manager: helper.to_string(),
        package: package.to_string(),
        message: format!(
            "{helper} refuses to run as root (it builds AUR packages as the invoking user and calls sudo itself), and the provisioner runs as root; run it as a regular user with sudo rights, or run the command below as one (or build the package and install it with `pacman -U`)"
        ),
        hint: Some(format!(
            "{helper} -S --needed {}",
            package.split('=').next().unwrap_or(package)
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forwards_env_but_not_parse_only_variables() {
        let command = CommandSpec::new("apt-get", ["install", "-y", "a b"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C");
        let user = RootRunner::new(
            Arc::new(NoShell),
            Arc::new(provisioner_core::NoProgress),
            Privilege::user(false),
        );
        assert_eq!(
            user.display(&command),
            "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y 'a b'"
        );
        let root = RootRunner::new(
            Arc::new(NoShell),
            Arc::new(provisioner_core::NoProgress),
            Privilege::root(),
        );
        assert_eq!(
            root.display(&command),
            "DEBIAN_FRONTEND=noninteractive apt-get install -y 'a b'"
        );
    }

    struct NoShell;

    #[async_trait::async_trait]
    impl Shell for NoShell {
        async fn run(&self, _command: &CommandSpec) -> Result<CommandOutput> {
            unreachable!("no process in this test")
        }
        fn locate(&self, _program: &str) -> Option<provisioner_core::ToolInfo> {
            None
        }
        fn inspect(&self, _path: &std::path::Path) -> Option<provisioner_core::ToolInfo> {
            None
        }
    }
}
