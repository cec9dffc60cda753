//! Test support: a scripted Shell that answers commands by rules and records every call, plus
//! small fakes for the Policy and Clock ports.

#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
pub use provisioner_core::RecordingProgress as Recorder;
use provisioner_core::{
    Action, Clock, CommandOutput, CommandSpec, Error, Policy, Result, Shell, ToolInfo,
};

/// A successful run printing `stdout`.
pub fn ok(stdout: &str) -> CommandOutput {
    CommandOutput {
        code: Some(0),
        signal: None,
        stdout: stdout.to_string(),
        tail: stdout.to_string(),
    }
}

/// A failed run with exit `code` and `tail` as its output.
pub fn fail(code: i32, tail: &str) -> CommandOutput {
    CommandOutput {
        code: Some(code),
        signal: None,
        stdout: String::new(),
        tail: tail.to_string(),
    }
}

struct Rule {
    /// Substring of `program arg arg …`.
    pattern: String,
    output: CommandOutput,
    /// Uses left; `None`: unlimited.
    left: Option<usize>,
}

/// A Shell that answers by the first rule whose pattern occurs in the command line and still
/// has uses left; an unscripted command panics (the test fails naming it).
#[derive(Default)]
pub struct ScriptedShell {
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<Vec<CommandSpec>>,
    on_path: Mutex<Vec<String>>,
}

/// The command line a rule is matched against.
pub fn line(command: &CommandSpec) -> String {
    std::iter::once(command.program.as_str())
        .chain(command.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

impl ScriptedShell {
    pub fn new() -> Arc<Self> {
        Arc::new(ScriptedShell::default())
    }

    /// Answers every matching command with `output`.
    pub fn always(&self, pattern: &str, output: CommandOutput) -> &Self {
        self.rule(pattern, output, None)
    }

    /// Answers the next `times` matching commands with `output`.
    pub fn times(&self, pattern: &str, times: usize, output: CommandOutput) -> &Self {
        self.rule(pattern, output, Some(times))
    }

    /// Answers the next matching command with `output`.
    pub fn once(&self, pattern: &str, output: CommandOutput) -> &Self {
        self.rule(pattern, output, Some(1))
    }

    fn rule(&self, pattern: &str, output: CommandOutput, left: Option<usize>) -> &Self {
        self.rules.lock().unwrap().push(Rule {
            pattern: pattern.to_string(),
            output,
            left,
        });
        self
    }

    /// Programs `locate` finds.
    pub fn on_path(&self, programs: &[&str]) -> &Self {
        self.on_path
            .lock()
            .unwrap()
            .extend(programs.iter().map(|p| p.to_string()));
        self
    }

    /// Every command run so far.
    pub fn calls(&self) -> Vec<CommandSpec> {
        self.calls.lock().unwrap().clone()
    }

    /// Every command line run so far.
    pub fn lines(&self) -> Vec<String> {
        self.calls().iter().map(line).collect()
    }

    /// Command lines containing `pattern`.
    pub fn matching(&self, pattern: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.contains(pattern))
            .collect()
    }
}

#[async_trait]
impl Shell for ScriptedShell {
    async fn run(&self, command: &CommandSpec) -> Result<CommandOutput> {
        self.calls.lock().unwrap().push(command.clone());
        let text = line(command);
        let mut rules = self.rules.lock().unwrap();
        let rule = rules
            .iter_mut()
            .find(|rule| text.contains(&rule.pattern) && rule.left != Some(0));
        match rule {
            Some(rule) => {
                if let Some(left) = &mut rule.left {
                    *left -= 1;
                }
                Ok(rule.output.clone())
            }
            None => panic!("unscripted command: {text}"),
        }
    }

    fn locate(&self, program: &str) -> Option<ToolInfo> {
        self.on_path
            .lock()
            .unwrap()
            .iter()
            .any(|p| p == program)
            .then(|| ToolInfo {
                path: Path::new("/usr/bin").join(program),
                fingerprint: "1:1".to_string(),
            })
    }

    fn inspect(&self, _path: &Path) -> Option<ToolInfo> {
        None
    }
}

/// A Policy that allows what the config allows (like HostPolicy for packages).
pub struct ConfigPolicy;

impl Policy for ConfigPolicy {
    fn check(&self, action: &Action) -> Result<()> {
        match action {
            Action::InstallPackages {
                allowed_by_config: false,
                ..
            } => Err(Error::PolicyDenied {
                action: "installing packages".to_string(),
                hint: Some("set provisioning.allow_package_installs: true".to_string()),
            }),
            _ => Ok(()),
        }
    }
}

/// A Policy that refuses everything (offline mode, say).
pub struct DenyAll;

impl Policy for DenyAll {
    fn check(&self, _action: &Action) -> Result<()> {
        Err(Error::PolicyDenied {
            action: "anything".to_string(),
            hint: Some("policy says no".to_string()),
        })
    }
}

/// A clock stopped at 2026-01-01.
pub struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }
}

/// The hint of an error, or "".
pub fn hint(error: &Error) -> String {
    error.hint().unwrap_or_default().to_string()
}
