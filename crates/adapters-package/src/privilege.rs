//! Running package-manager commands that need root, never silently:
//!
//! - as root, the command runs as it is;
//! - otherwise sudo is asked directly whether it can run the command without a prompt:
//!   `sudo -n true` (a cached credential, or a `NOPASSWD` rule for everything), then
//!   `sudo -n -l COMMAND` (a `NOPASSWD` rule for this command). When it can, `sudo -n COMMAND`
//!   runs after a progress note that says what runs and why;
//! - when it cannot, sudo needs to ask (for a password) or refuses: with a terminal attached, a
//!   note says so and interactive `sudo` runs in the terminal's foreground, where sudo itself
//!   asks or says no; with no terminal, the error quotes what sudo said and carries the exact
//!   command to run;
//! - with no `sudo` at all, the error carries the exact command to run as root.
//!
//! Nothing here reads sudo's wording to decide: sudo.ws ("a password is required") and sudo-rs
//! ("interactive authentication is required") take the same path, and sudo's own message is
//! passed on to the user.
//!
//! AUR helpers are the opposite case: they refuse to run as root and call `sudo` themselves, see
//! [`refuse_root_for_aur`].

use std::io::IsTerminal;
use std::sync::Arc;

use provisioner_core::{
    CommandOutput, CommandSpec, Error, ManagerKind, Progress, ProgressEvent, Result, Shell,
    redact_urls, shell_quote,
};

use crate::locks::{LockSettings, LockWait, ManagerLock};

/// Environment variables set only to make output parseable (`LC_ALL=C`): kept in the
/// environment but not forwarded through `sudo` as `VAR=value` arguments nor shown in hints.
const PARSE_ONLY_VARIABLES: [&str; 1] = ["LC_ALL"];

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

/// Runs commands that need root: directly as root, else through `sudo` (see the module docs),
/// after waiting for the package manager's locks the command takes.
#[derive(Clone)]
pub struct RootRunner {
    shell: Arc<dyn Shell>,
    progress: Arc<dyn Progress>,
    privilege: Privilege,
    locks: LockSettings,
}

impl std::fmt::Debug for RootRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootRunner")
            .field("privilege", &self.privilege)
            .field("locks", &self.locks)
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

/// What sudo answered when asked whether it can run a command without a prompt.
enum SudoAnswer {
    /// It can: `sudo -n` runs the command.
    Ready,
    /// It cannot (it would ask for a password, or it refuses): what it said.
    Cannot(String),
}

impl RootRunner {
    /// A runner over the Shell port for a process with `privilege`; managers' locks are waited
    /// for as [`LockSettings::default`] says.
    pub fn new(shell: Arc<dyn Shell>, progress: Arc<dyn Progress>, privilege: Privilege) -> Self {
        RootRunner {
            shell,
            progress,
            privilege,
            locks: LockSettings::default(),
        }
    }

    /// The same runner with other lock settings.
    pub fn with_locks(mut self, locks: LockSettings) -> Self {
        self.locks = locks;
        self
    }

    /// Who runs the commands.
    pub fn privilege(&self) -> Privilege {
        self.privilege
    }

    /// Where lock files are looked for and how long they are waited for.
    pub fn locks(&self) -> &LockSettings {
        &self.locks
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

    /// Waits until none of `locks` is held (see [`crate::locks`]), then runs `command` as root
    /// like [`RootRunner::run`].
    pub async fn run_locked(
        &self,
        command: &CommandSpec,
        task: &RootTask<'_>,
        then: &[&CommandSpec],
        locks: &[ManagerLock],
    ) -> Result<CommandOutput> {
        self.wait_for(command, task, locks).await?;
        self.run(command, task, then).await
    }

    /// Waits until none of `locks` is held, naming the holder; an error after the bound.
    pub async fn wait_for(
        &self,
        command: &CommandSpec,
        task: &RootTask<'_>,
        locks: &[ManagerLock],
    ) -> Result<()> {
        let shown = self.display(command);
        crate::locks::wait_for(
            &self.progress,
            &self.locks,
            LockWait {
                manager: task.manager,
                package: task.package,
                command: &shown,
            },
            locks,
        )
        .await
    }

    /// Runs `command` as root (see the module docs). `then` lists the commands that follow it in
    /// the same operation, so that a hint names all of them. A non-zero exit of the command
    /// itself (or of interactive sudo) is returned, not an error: callers decide with
    /// [`CommandOutput::success`] and report the output, sudo's words included.
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
        match self.ask_sudo(command).await? {
            SudoAnswer::Ready => {
                self.progress.report(ProgressEvent::Note {
                    message: format!(
                        "{} needs root: running `sudo -n {}`",
                        task.action,
                        quoted(&words)
                    ),
                });
                let sudo = sudo_command(command, Some("-n"), &words, false);
                self.shell.run(&sudo).await
            }
            SudoAnswer::Cannot(said) if !self.privilege.terminal => Err(Error::Package {
                manager: task.manager.to_string(),
                package: task.package.to_string(),
                message: format!(
                    "{} needs root, and sudo cannot run it without asking (for a password, or for permission){}; no terminal is attached to ask on. Run the command below yourself, run the provisioner as root, or allow the command without a password (a NOPASSWD sudoers rule)",
                    task.action,
                    sudo_said(&said)
                ),
                hint: Some(self.display_all(&all)),
            }),
            SudoAnswer::Cannot(_) => {
                self.progress.report(ProgressEvent::Note {
                    message: format!(
                        "{} needs root: running `sudo {}`; sudo may ask for your password",
                        task.action,
                        quoted(&words)
                    ),
                });
                let interactive = sudo_command(command, None, &words, true);
                self.shell.run(&interactive).await
            }
        }
    }

    /// Asks sudo whether it can run `command` without a prompt: `sudo -n true`, then
    /// `sudo -n -l COMMAND` (a rule for this command alone). Exit statuses only; the words of
    /// the first refusal are kept for the user.
    async fn ask_sudo(&self, command: &CommandSpec) -> Result<SudoAnswer> {
        let probe = |args: Vec<String>| {
            let mut probe = CommandSpec::new("sudo", args)
                .inherit_also(provisioner_core::PACKAGE_ENV)
                .env("LC_ALL", "C");
            probe.cwd = command.cwd.clone();
            probe
        };
        let anything = self
            .shell
            .run(&probe(vec!["-n".to_string(), "true".to_string()]))
            .await?;
        if anything.success() {
            return Ok(SudoAnswer::Ready);
        }
        // `-l` lists what the policy allows for the command itself; variables are not part of
        // it.
        let listed = std::iter::once(command.program.clone())
            .chain(command.args.iter().cloned())
            .collect::<Vec<_>>();
        let this = self
            .shell
            .run(&probe(
                ["-n".to_string(), "-l".to_string()]
                    .into_iter()
                    .chain(listed)
                    .collect(),
            ))
            .await?;
        if this.success() {
            return Ok(SudoAnswer::Ready);
        }
        Ok(SudoAnswer::Cannot(anything.tail.trim().to_string()))
    }
}

/// `sudo [flag] WORDS`, keeping the command's environment and working directory.
fn sudo_command(
    command: &CommandSpec,
    flag: Option<&str>,
    words: &[String],
    terminal: bool,
) -> CommandSpec {
    let mut sudo = command.clone();
    sudo.program = "sudo".to_string();
    sudo.args = flag
        .map(str::to_string)
        .into_iter()
        .chain(words.iter().cloned())
        .collect();
    sudo.terminal = terminal;
    sudo
}

/// `; sudo said: "…"` with sudo's own words (its last lines), or nothing when it said nothing.
fn sudo_said(said: &str) -> String {
    let lines: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let shown = lines[lines.len().saturating_sub(3)..].join(" / ");
    format!(" (sudo said: \"{shown}\")")
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
