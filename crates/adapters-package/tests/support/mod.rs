//! Test support: a scripted Shell that answers commands by rules and records every call, a
//! Shell that runs real processes with a directory of fake programs first on PATH, a process
//! that holds an `fcntl` lock, plus small fakes for the Policy and Clock ports.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
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
        stdout_truncated: false,
        tail: stdout.to_string(),
    }
}

/// A failed run with exit `code` and `tail` as its output.
pub fn fail(code: i32, tail: &str) -> CommandOutput {
    CommandOutput {
        code: Some(code),
        signal: None,
        stdout: String::new(),
        stdout_truncated: false,
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

/// Real processes (the host Shell), with `bin` first on PATH: a program found there is that
/// fake, and only programs found there are located (the host's sudo, apt-get… stay out of
/// sight). The fakes themselves get `bin:/usr/bin:/bin` as PATH.
pub struct FakeBin {
    inner: adapters_host::HostShell,
    bin: PathBuf,
}

impl FakeBin {
    /// A Shell over the fakes in `bin`.
    pub fn new(bin: &Path) -> Arc<FakeBin> {
        Arc::new(FakeBin {
            inner: adapters_host::HostShell::new(Arc::new(provisioner_core::NoProgress)),
            bin: bin.to_path_buf(),
        })
    }

    /// Writes an executable shell script `bin/<name>`.
    pub fn script(bin: &Path, name: &str, body: &str) {
        std::fs::create_dir_all(bin).unwrap();
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[async_trait]
impl Shell for FakeBin {
    async fn run(&self, command: &CommandSpec) -> Result<CommandOutput> {
        let mut command = command.clone();
        let fake = self.bin.join(&command.program);
        if !command.program.contains('/') && fake.is_file() {
            command.program = fake.display().to_string();
        }
        command.env.insert(
            "PATH".to_string(),
            format!("{}:/usr/bin:/bin", self.bin.display()),
        );
        // A script another test thread is still writing may be open for writing in a process
        // forked meanwhile (until it execs): "text file busy" is retried.
        for _ in 0..50 {
            match self.inner.run(&command).await {
                Err(Error::Spawn { source, .. })
                    if source.kind() == std::io::ErrorKind::ExecutableFileBusy =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
        self.inner.run(&command).await
    }

    fn locate(&self, program: &str) -> Option<ToolInfo> {
        let fake = self.bin.join(program);
        fake.is_file().then(|| ToolInfo {
            path: fake,
            fingerprint: "fake".to_string(),
        })
    }

    fn inspect(&self, path: &Path) -> Option<ToolInfo> {
        self.inner.inspect(path)
    }
}

/// Another process holding an `fcntl` write lock on a file (as apt and dpkg take them), for
/// `seconds` or until dropped: perl (in every Debian install), run through the host Shell.
pub struct LockHolder {
    task: Option<tokio::task::JoinHandle<Result<CommandOutput>>>,
    /// The holder's pid.
    pub pid: u32,
}

impl LockHolder {
    /// Starts the holder and returns once it holds the lock (the file is created if missing).
    pub async fn hold(path: &Path, seconds: u32) -> LockHolder {
        let marker = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        let marker_path = marker.to_path_buf();
        std::fs::remove_file(&marker_path).unwrap();
        // struct flock on 64-bit Linux: short type, short whence, off_t start, off_t len,
        // pid_t pid (32 bytes with padding).
        let script = r#"use Fcntl qw(F_SETLKW F_WRLCK);
open(my $fh, '>>', $ARGV[0]) or die "open $ARGV[0]: $!";
my $lock = pack('s s x4 q q l x4', F_WRLCK, 0, 0, 0, 0);
fcntl($fh, F_SETLKW, $lock) or die "fcntl: $!";
open(my $m, '>', $ARGV[1]) or die "marker: $!";
print $m $$;
close($m);
sleep($ARGV[2]);
"#;
        let command = CommandSpec::new(
            "perl",
            [
                "-e".to_string(),
                script.to_string(),
                path.display().to_string(),
                marker_path.display().to_string(),
                seconds.to_string(),
            ],
        );
        let task = tokio::spawn(async move {
            adapters_host::HostShell::new(Arc::new(provisioner_core::NoProgress))
                .run(&command)
                .await
        });
        let started = std::time::Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&marker_path)
                && let Ok(pid) = text.trim().parse::<u32>()
            {
                drop(marker);
                return LockHolder {
                    task: Some(task),
                    pid,
                };
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the lock holder did not start"
            );
            assert!(!task.is_finished(), "the lock holder exited early");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the holder exits (its lock is then released).
    pub async fn finish(mut self) {
        let task = self.task.take().unwrap();
        let output = task.await.unwrap().unwrap();
        assert!(output.success(), "lock holder failed: {}", output.tail);
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        // Dropping the Shell's future kills the holder's process group.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
