//! Processes on the host. This is the only module of the workspace that spawns processes (see
//! `clippy.toml`); everything else goes through the [`Shell`] port or [`spawn_detached`].
//!
//! Every child leads its own process group, so that a build and everything it forks (compilers,
//! linkers, backgrounded helpers) can be signalled as one unit. [`HostShell::run`] kills that group
//! when its future is dropped, which is how cancellation reaches a running build.
//!
//! A [`CommandSpec`] may carry standard input (written, then closed), be `sensitive` (its output
//! is returned to the caller and goes nowhere else: not to the log file, progress, tracing or the
//! tail that errors quote). A child never inherits this process's whole environment: only the
//! variables its spec's allowlist lets through ([`CommandSpec::inherits`]: the base list
//! [`provisioner_core::BASE_ENV`] by default, plus the lists of its job, see
//! [`provisioner_core::environment`]), then what the spec sets itself. A detached process
//! ([`spawn_detached`]) inherits nothing at all.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use nix::errno::Errno;
use nix::unistd::Pid;
use provisioner_core::{
    CommandOutput, CommandSpec, Error, MAX_STDOUT, Progress, ProgressEvent, Result, Secret, Shell,
    ToolInfo, redact_urls, shell_quote,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

pub use nix::sys::signal::Signal;

/// Combined output lines kept in [`CommandOutput::tail`].
const TAIL_LINES: usize = 40;
/// Lines carrying an error kept at most, and indented lines kept after each (CMake indents
/// the text of a `CMake Error at …:` message).
const ERROR_LINES: usize = 20;
const ERROR_CONTINUATION: usize = 4;
/// The line between the error lines and the last lines of a tail.
pub const TAIL_GAP: &str = "...";

/// Whether a line of tool output reports an error: the word `error`/`Error`/`ERROR` (not
/// `-Werror` or `errors=0`), `fatal`, or a tool's own error prefix (`E:` of apt, `CMake Error`,
/// `Could NOT find` of CMake's find modules).
fn is_error_line(line: &str) -> bool {
    let trimmed = line.trim_start();
    if trimmed.starts_with("E: ") || trimmed.contains("Could NOT find") {
        return true;
    }
    ["error", "Error", "ERROR", "fatal", "FATAL", "Fatal"]
        .iter()
        .any(|word| {
            line.match_indices(word).any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let after = line[at + word.len()..].chars().next();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_')
                    && !after.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '=')
            })
        })
}

/// The last `keep` lines of `text` as errors quote them: the lines that carry an error (from
/// anywhere in it, with their indented continuation lines) first, then [`TAIL_GAP`], then
/// the other last lines. For logs read back from a file (an engine that died at start).
pub(crate) fn tail_of_text(text: &str, keep: usize) -> String {
    let mut errors = Vec::new();
    let mut continuation = 0;
    for line in text.lines() {
        if errors.len() >= ERROR_LINES {
            break;
        }
        if is_error_line(line) {
            errors.push(line.to_string());
            continuation = ERROR_CONTINUATION;
        } else if continuation > 0 && line.starts_with([' ', '\t']) && !line.trim().is_empty() {
            errors.push(line.to_string());
            continuation -= 1;
        } else {
            continuation = 0;
        }
    }
    let all: Vec<&str> = text.lines().collect();
    let last = all[all.len().saturating_sub(keep)..]
        .iter()
        .map(|l| l.to_string())
        .collect();
    error_first_tail(errors, last)
}

/// The tail errors quote: the lines that carry an error first, then [`TAIL_GAP`], then the
/// other last lines (stdout and stderr are read side by side, so an error on stderr may arrive
/// anywhere among them).
fn error_first_tail(errors: Vec<String>, last: Vec<String>) -> String {
    if errors.is_empty() {
        return last.join("\n");
    }
    let rest: Vec<String> = last.into_iter().filter(|l| !errors.contains(l)).collect();
    let mut lines = errors;
    lines.push(TAIL_GAP.to_string());
    lines.extend(rest);
    lines.join("\n")
}

/// How long to keep reading output after the leader exited, for descendants still writing.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// A line longer than this is cut into pieces, so that output without newlines cannot grow a
/// buffer without bound.
const MAX_LINE: usize = 64 * 1024;

/// Runs processes on the host and reports build progress parsed from their output.
#[derive(Clone)]
pub struct HostShell {
    progress: Arc<dyn Progress>,
}

impl HostShell {
    /// A shell that reports progress of labelled commands to `progress`.
    pub fn new(progress: Arc<dyn Progress>) -> Self {
        HostShell { progress }
    }
}

impl std::fmt::Debug for HostShell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostShell").finish_non_exhaustive()
    }
}

#[async_trait]
impl Shell for HostShell {
    async fn run(&self, command: &CommandSpec) -> Result<CommandOutput> {
        run_command(command, self.progress.as_ref()).await
    }

    fn locate(&self, program: &str) -> Option<ToolInfo> {
        locate(program)
    }

    fn inspect(&self, path: &Path) -> Option<ToolInfo> {
        inspect(path)
    }
}

// ---------------------------------------------------------------------------------------------
// Spawning (the one place allowed to construct commands)

#[allow(clippy::disallowed_methods)]
fn tokio_command(program: &str) -> tokio::process::Command {
    tokio::process::Command::new(program)
}

#[allow(clippy::disallowed_methods)]
fn std_command(program: &Path) -> std::process::Command {
    std::process::Command::new(program)
}

// ---------------------------------------------------------------------------------------------
// run

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

async fn run_command(spec: &CommandSpec, progress: &dyn Progress) -> Result<CommandOutput> {
    let log = match &spec.log {
        Some(path) => {
            let mut log = LogSink::open(path, &spec.display())?;
            if spec.sensitive {
                log.line("(output not recorded: it holds secrets)");
            }
            Some(log)
        }
        None => None,
    };

    let mut command = tokio_command(&spec.program);
    command.args(&spec.args);
    // Never the whole environment: the variables the spec's allowlist lets through (the base
    // list, plus its job's), then what it sets itself.
    command.env_clear();
    for (name, value) in std::env::vars_os() {
        if name.to_str().is_some_and(|name| spec.inherits(name)) {
            command.env(name, value);
        }
    }
    command
        .envs(&spec.env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if spec.stdin.is_some() {
        command.stdin(Stdio::piped());
    } else if spec.terminal {
        command.stdin(Stdio::inherit());
    } else {
        command.stdin(Stdio::null());
    }
    if spec.terminal {
        // Interactive (a `sudo` password prompt): stay in the terminal's foreground process
        // group, or reading the terminal would stop the process with SIGTTIN.
        command.kill_on_drop(true);
    } else {
        command.process_group(0);
    }
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    // A program written a moment ago (an install's server, about to be asked its version) can
    // be briefly "busy" (ETXTBSY) while another thread's fork still holds its write descriptor:
    // a known Linux race, gone within milliseconds.
    let mut spawned = command.spawn();
    for _ in 0..20 {
        match &spawned {
            Err(error) if error.raw_os_error() == Some(nix::libc::ETXTBSY) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                spawned = command.spawn();
            }
            _ => break,
        }
    }
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            let error = spawn_error(&spec.program, spec.cwd.as_deref(), spec.display(), error);
            if let Some(mut log) = log {
                log.line(&error.to_string());
            }
            return Err(error);
        }
    };
    let Some(pid) = child.id() else {
        return Err(Error::Spawn {
            program: spec.program.clone(),
            source: std::io::Error::other("the process exited before its id could be read"),
        });
    };
    // From here on, leaving this function early (an error or a dropped future) kills the group.
    let mut guard = GroupGuard {
        pgid: (!spec.terminal).then_some(pid),
    };
    if let Some(group_file) = &spec.group_file {
        write_group_file(group_file, pid)?;
    }
    tracing::debug!(pid, command = %spec.display(), "spawned");

    let (sender, mut receiver) = mpsc::unbounded_channel();
    let feed_stdin = feed(child.stdin.take(), spec.stdin.as_ref());
    let pump_stdout = pump(child.stdout.take(), Stream::Stdout, sender.clone());
    let pump_stderr = pump(child.stderr.take(), Stream::Stderr, sender);
    let mut collector = Collector {
        stdout: String::new(),
        stdout_truncated: false,
        tail: VecDeque::with_capacity(TAIL_LINES + 1),
        errors: Vec::new(),
        continuation: 0,
        log,
        label: spec.progress.as_deref(),
        progress,
        last_steps: None,
        sensitive: spec.sensitive,
    };
    let status = {
        let reading = async {
            let collect = async {
                while let Some((stream, bytes)) = receiver.recv().await {
                    collector.push(stream, &bytes);
                }
            };
            tokio::join!(feed_stdin, pump_stdout, pump_stderr, collect);
        };
        tokio::pin!(reading);
        tokio::select! {
            status = child.wait() => {
                // The leader is done. Whatever is left in the pipes is read at once; a descendant
                // that still holds them open (a backgrounded helper) must not keep us waiting.
                if tokio::time::timeout(DRAIN_GRACE, &mut reading).await.is_err() {
                    tracing::debug!(pid, "output pipes still open after exit; not waiting for them");
                }
                status
            }
            () = &mut reading => child.wait().await,
        }
    };
    let status = status.map_err(|error| Error::Spawn {
        program: spec.program.clone(),
        source: std::io::Error::new(
            error.kind(),
            format!("cannot wait for process {pid}: {error}"),
        ),
    })?;
    guard.disarm();

    if collector.stdout_truncated {
        tracing::warn!(command = %spec.display(), "standard output exceeded 4 MiB and was cut; parsers refuse it");
    }
    Ok(CommandOutput {
        code: status.code(),
        signal: status.signal(),
        stdout: collector.stdout,
        stdout_truncated: collector.stdout_truncated,
        tail: error_first_tail(collector.errors, Vec::from(collector.tail)),
    })
}

/// A program that is not on PATH is a missing tool (exit 5, with the command that needed it);
/// anything else that stops a start keeps the operating system's error as its source.
fn spawn_error(program: &str, cwd: Option<&Path>, command: String, error: std::io::Error) -> Error {
    let program = program.to_string();
    match cwd {
        Some(dir) if !dir.is_dir() => Error::Spawn {
            program: program.clone(),
            source: std::io::Error::new(
                error.kind(),
                format!("working directory {} does not exist", dir.display()),
            ),
        },
        _ if error.kind() == std::io::ErrorKind::NotFound && !program.contains('/') => {
            Error::MissingTool {
                tool: program.clone(),
                purpose: format!("run `{command}`"),
                searched: Vec::new(),
                hint: Some(format!(
                    "install {program} with your system package manager, or put it on PATH"
                )),
            }
        }
        _ => Error::Spawn {
            program: program.clone(),
            source: error,
        },
    }
}

fn write_group_file(path: &Path, pid: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    fs::write(path, format!("{pid}\n")).map_err(|e| Error::io("write", path, e))
}

/// Kills a process group when dropped, unless disarmed after the leader exited normally.
struct GroupGuard {
    pgid: Option<u32>,
}

impl GroupGuard {
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            tracing::debug!(pgid, "killing the process group of an abandoned command");
            kill_group(pgid, Signal::SIGKILL);
        }
    }
}

/// Writes a command's input to its standard input and closes it. A child that exits (or closes
/// its input) without reading all of it is not an error here: its exit status tells.
async fn feed(stdin: Option<tokio::process::ChildStdin>, input: Option<&Secret>) {
    let (Some(mut stdin), Some(input)) = (stdin, input) else {
        return;
    };
    let _ = stdin.write_all(input.expose().as_bytes()).await;
    let _ = stdin.shutdown().await;
}

/// Reads a pipe to its end and sends it on line by line (each line with its terminator).
async fn pump<R: AsyncRead + Unpin>(
    reader: Option<R>,
    stream: Stream,
    sender: mpsc::UnboundedSender<(Stream, Vec<u8>)>,
) {
    let Some(mut reader) = reader else { return };
    let mut chunk = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let read = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        pending.extend_from_slice(&chunk[..read]);
        let mut start = 0;
        while let Some(offset) = pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset + 1;
            let _ = sender.send((stream, pending[start..end].to_vec()));
            start = end;
        }
        pending.drain(..start);
        if pending.len() >= MAX_LINE {
            let _ = sender.send((stream, std::mem::take(&mut pending)));
        }
    }
    if !pending.is_empty() {
        let _ = sender.send((stream, pending));
    }
}

/// Gathers what a command prints: capped stdout, the tail, the log file and progress.
struct Collector<'a> {
    stdout: String,
    stdout_truncated: bool,
    tail: VecDeque<String>,
    /// Lines that carry an error (and the indented lines right after one), wherever they
    /// came: shown before the tail, so that a long aftermath cannot push them out.
    errors: Vec<String>,
    /// Indented lines still taken after the last error line.
    continuation: usize,
    log: Option<LogSink>,
    label: Option<&'a str>,
    progress: &'a dyn Progress,
    last_steps: Option<(u64, u64)>,
    /// The output holds secrets: it is kept in `stdout` for the caller and goes nowhere else.
    sensitive: bool,
}

impl Collector<'_> {
    fn push(&mut self, stream: Stream, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        if stream == Stream::Stdout && !self.stdout_truncated {
            if self.stdout.len() + text.len() <= MAX_STDOUT {
                self.stdout.push_str(&text);
            } else {
                self.stdout_truncated = true;
            }
        }
        if self.sensitive {
            return;
        }
        // Tools print the URLs they were given (git, apt, curl): what is kept for humans has
        // their credentials and query values redacted.
        let line = redact_urls(text.trim_end_matches(['\n', '\r']));
        let line = line.as_str();
        if let Some(log) = &mut self.log {
            log.line(line);
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
        if self.errors.len() < ERROR_LINES {
            if is_error_line(line) {
                self.errors.push(line.to_string());
                self.continuation = ERROR_CONTINUATION;
            } else if self.continuation > 0
                && line.starts_with([' ', '\t'])
                && !line.trim().is_empty()
            {
                self.errors.push(line.to_string());
                self.continuation -= 1;
            } else {
                self.continuation = 0;
            }
        }
        if let Some(label) = self.label
            && let Some((done, total)) = parse_steps(line)
            && self.last_steps != Some((done, total))
        {
            self.last_steps = Some((done, total));
            self.progress.report(ProgressEvent::Steps {
                step: label.to_string(),
                done,
                total,
                current: current_target(line),
            });
        }
    }
}

/// A log file that output lines are appended to. A failed write is reported once and then the
/// log is abandoned: losing the log must not fail the command itself.
struct LogSink {
    file: Option<File>,
    path: PathBuf,
}

impl LogSink {
    fn open(path: &Path, header: &str) -> Result<LogSink> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        writeln!(file, "$ {header}").map_err(|e| Error::io("write", path, e))?;
        Ok(LogSink {
            file: Some(file),
            path: path.to_path_buf(),
        })
    }

    fn line(&mut self, line: &str) {
        let Some(file) = &mut self.file else { return };
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        if let Err(error) = file.write_all(&bytes) {
            tracing::warn!(path = %self.path.display(), %error, "cannot write the command log; continuing without it");
            self.file = None;
        }
    }
}

/// Parses build progress from one output line: CMake/make's `[ 45%] Building ...` gives 45 and
/// ninja's `[12/345] Building ...` gives the share of finished edges (3).
pub fn parse_progress(line: &str) -> Option<u8> {
    let (done, total) = parse_steps(line)?;
    u8::try_from(done * 100 / total).ok()
}

/// The build tool's counter at the start of a line: ninja's `[n/m]` as `(n, m)`, make's
/// `[ p%]` as `(p, 100)`.
pub fn parse_steps(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (inside, _) = rest.split_once(']')?;
    let inside = inside.trim();
    if let Some(number) = inside.strip_suffix('%') {
        let percent: u64 = number.trim().parse().ok()?;
        return (percent <= 100).then_some((percent, 100));
    }
    let (done, total) = inside.split_once('/')?;
    let done: u64 = done.trim().parse().ok()?;
    let total: u64 = total.trim().parse().ok()?;
    (total > 0 && done <= total).then_some((done, total))
}

/// What a counted build line says it is doing (`Building CXX object a/b/server.cpp.o`,
/// `Linking CXX executable bin/llama-server`), shortened to its last path part.
pub fn current_target(line: &str) -> Option<String> {
    let (_, rest) = line.split_once(']')?;
    let rest = rest.trim();
    if rest.is_empty() {
        return None;
    }
    let words: Vec<&str> = rest.split_whitespace().collect();
    let shown = match words.split_last() {
        Some((last, before)) if last.contains('/') => {
            let name = last.rsplit('/').next().unwrap_or(last);
            let mut shown: Vec<&str> = before.to_vec();
            shown.push(name);
            shown.join(" ")
        }
        _ => words.join(" "),
    };
    Some(shown.chars().take(80).collect())
}

// ---------------------------------------------------------------------------------------------
// locate / inspect

/// Finds an executable on PATH (or at `program` itself when it contains a `/`) without running it.
pub fn locate(program: &str) -> Option<ToolInfo> {
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        return inspect(Path::new(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .find_map(|dir| inspect(&dir.join(program)))
}

/// Describes an executable regular file: its resolved path and a size-and-mtime fingerprint.
pub fn inspect(path: &Path) -> Option<ToolInfo> {
    let resolved = fs::canonicalize(path).ok()?;
    let metadata = fs::metadata(&resolved).ok()?;
    if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
        return None;
    }
    let mtime = metadata
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(ToolInfo {
        path: resolved,
        fingerprint: format!("{}-{}", metadata.len(), mtime),
    })
}

// ---------------------------------------------------------------------------------------------
// Detached processes

/// A long-running process to start in the background, e.g. an engine started by `up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedSpec {
    /// Absolute path of the program.
    pub program: PathBuf,
    /// Arguments, each one argv element.
    pub args: Vec<String>,
    /// The whole environment of the process; nothing is inherited.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// File that standard output and standard error are appended to.
    pub log: PathBuf,
}

impl DetachedSpec {
    /// The command for humans, shell-quoted.
    pub fn display(&self) -> String {
        std::iter::once(self.program.to_string_lossy().as_ref())
            .chain(self.args.iter().map(String::as_str))
            .map(|word| shell_quote(&redact_urls(word)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Starts a process in its own process group with a cleared environment and its output appended
/// to a log, and returns its pid (which is also its process group id). The process outlives the
/// caller; while the caller lives, a background thread reaps it when it exits.
pub fn spawn_detached(spec: &DetachedSpec) -> Result<u32> {
    if let Some(parent) = spec.log.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    let mut stdout = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(|e| Error::io("open", &spec.log, e))?;
    writeln!(stdout, "$ {}", spec.display()).map_err(|e| Error::io("write", &spec.log, e))?;
    let stderr = stdout
        .try_clone()
        .map_err(|e| Error::io("open", &spec.log, e))?;

    let program = spec.program.to_string_lossy().into_owned();
    let mut child = std_command(&spec.program)
        .args(&spec.args)
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|error| spawn_error(&program, Some(&spec.cwd), spec.display(), error))?;
    let pid = child.id();
    tracing::debug!(pid, command = %spec.display(), "spawned detached");
    let reaper = std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || {
            let _ = child.wait();
        });
    if let Err(error) = reaper {
        tracing::warn!(pid, %error, "cannot start a thread to reap the detached process");
    }
    Ok(pid)
}

// ---------------------------------------------------------------------------------------------
// Process groups

/// Sends `signal` to every process of a group; returns whether it was delivered. Refuses group
/// ids 0 and 1 and the caller's own group, so that a corrupt group file cannot take down the
/// provisioner itself.
pub fn kill_group(pgid: u32, signal: Signal) -> bool {
    let Some(group) = foreign_group(pgid) else {
        return false;
    };
    match nix::sys::signal::killpg(group, signal) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(error) => {
            tracing::warn!(pgid, %error, ?signal, "cannot signal process group");
            false
        }
    }
}

/// Whether a process group still has a live (not zombie) member.
pub fn group_alive(pgid: u32) -> bool {
    let Some(group) = foreign_group(pgid) else {
        return false;
    };
    match nix::sys::signal::killpg(group, None) {
        Err(Errno::ESRCH) => false,
        // The group exists (EPERM: it belongs to someone else). Zombies count as members for
        // kill(2) but not for us: look for a member that still runs, where /proc allows it.
        Ok(()) | Err(_) => group_has_running_member(pgid).unwrap_or(true),
    }
}

fn foreign_group(pgid: u32) -> Option<Pid> {
    let raw = i32::try_from(pgid).ok().filter(|&raw| raw > 1)?;
    let group = Pid::from_raw(raw);
    (group != nix::unistd::getpgrp()).then_some(group)
}

/// The members of a group that still run (not zombies), from `/proc`; `None` without `/proc`.
pub(crate) fn running_members(pgid: u32) -> Option<Vec<u32>> {
    let entries = fs::read_dir("/proc").ok()?;
    let mut members = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((state, group)) = parse_stat(&stat)
            && group == pgid
            && state != 'Z'
            && state != 'X'
        {
            members.push(pid);
        }
    }
    Some(members)
}

fn group_has_running_member(pgid: u32) -> Option<bool> {
    running_members(pgid).map(|members| !members.is_empty())
}

/// Whether a live group is working on `dir`: one of its members has its working directory under
/// `dir` or names `dir` on its command line. This guards against killing an unrelated group that
/// reused the id recorded in an old group file. Without `/proc` it cannot tell and says yes.
pub fn group_works_in(pgid: u32, dir: &Path) -> bool {
    let Some(members) = running_members(pgid) else {
        return true;
    };
    let canonical = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let needles: Vec<Vec<u8>> = [dir, canonical.as_path()]
        .iter()
        .map(|path| path.as_os_str().as_encoded_bytes().to_vec())
        .filter(|needle| !needle.is_empty())
        .collect();
    members.iter().any(|pid| {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let cwd_inside = fs::read_link(proc_dir.join("cwd"))
            .is_ok_and(|cwd| cwd.starts_with(dir) || cwd.starts_with(&canonical));
        let named = fs::read(proc_dir.join("cmdline")).is_ok_and(|cmdline| {
            needles.iter().any(|needle| {
                cmdline
                    .windows(needle.len())
                    .any(|w| w == needle.as_slice())
            })
        });
        cwd_inside || named
    })
}

/// State and process group from `/proc/<pid>/stat` (`pid (comm) state ppid pgrp ...`).
fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    let mut fields = after_comm.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, group))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Instant;

    use provisioner_core::RecordingProgress as Recorder;

    fn shell() -> HostShell {
        HostShell::new(Arc::new(provisioner_core::NoProgress))
    }

    async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn parses_make_and_ninja_progress() {
        assert_eq!(
            parse_progress("[ 45%] Building CXX object src/llama.cpp.o"),
            Some(45)
        );
        assert_eq!(
            parse_progress("[100%] Built target llama-server"),
            Some(100)
        );
        assert_eq!(parse_progress("[12/345] Building C object ggml.o"), Some(3));
        assert_eq!(
            parse_progress("[345/345] Linking CXX executable"),
            Some(100)
        );
        assert_eq!(parse_progress("[0/0] nothing"), None);
        assert_eq!(parse_progress("[7/3] odd"), None);
        assert_eq!(parse_progress("[101%] odd"), None);
        assert_eq!(parse_progress("-- Configuring done"), None);
        assert_eq!(parse_progress("[abc] x"), None);
    }

    #[test]
    fn parses_proc_stat_with_awkward_names() {
        assert_eq!(
            parse_stat("42 (a (weird) name) S 1 4242 4242 0 -1"),
            Some(('S', 4242))
        );
        assert_eq!(parse_stat("43 (sh) Z 1 17 17"), Some(('Z', 17)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn error_lines_are_words_not_parts_of_flags() {
        for line in [
            "CMake Error at common/CMakeLists.txt:85 (message):",
            "  Could NOT find CURL.  Hint: set -DLLAMA_CURL=OFF",
            "E: Unable to locate package nope",
            "fatal: repository 'x' not found",
            "src/a.c:3:1: error: expected ';'",
            "error: failed to commit transaction",
        ] {
            assert!(is_error_line(line), "{line}");
        }
        for line in [
            "-- Performing Test HAVE_WERROR -Werror=format",
            "checked 3 files, errors=0",
            "[ 50%] Building CXX object common/CMakeFiles/error_handling.cpp.o",
            "-- Configuring done",
        ] {
            assert!(!is_error_line(line), "{line}");
        }
    }

    /// An error early in a long output (CMake's, followed by pages of warnings) is still shown,
    /// first, with the indented lines that explain it; stderr counts like stdout.
    #[tokio::test]
    async fn the_error_lines_lead_a_tail_that_lost_them() {
        let shell = HostShell::new(Arc::new(provisioner_core::RecordingProgress::default()));
        let script = "echo 'CMake Error at common/CMakeLists.txt:85 (message):' >&2; \
                      echo '  Could NOT find CURL.  Hint: set -DLLAMA_CURL=OFF' >&2; \
                      i=0; while [ $i -lt 100 ]; do echo \"-- warning line $i\"; i=$((i+1)); done; \
                      echo '-- Configuring incomplete, errors occurred!'; exit 1";
        let output = shell
            .run(&CommandSpec::new("sh", ["-c", script]))
            .await
            .unwrap();
        let lines: Vec<&str> = output.tail.lines().collect();
        assert_eq!(
            lines[..3],
            [
                "CMake Error at common/CMakeLists.txt:85 (message):",
                "  Could NOT find CURL.  Hint: set -DLLAMA_CURL=OFF",
                TAIL_GAP
            ],
            "{}",
            output.tail
        );
        assert!(lines.contains(&"-- Configuring incomplete, errors occurred!"));
        assert!(lines.contains(&"-- warning line 99"));
        assert!(
            !lines.contains(&"-- warning line 10"),
            "only the last lines follow"
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("CMake Error"))
                .count(),
            1,
            "shown once"
        );
        let error = Error::CommandFailed {
            command: "cmake".to_string(),
            status: "exit code 1".to_string(),
            tail: output.tail,
            log: None,
            hint: None,
        };
        assert!(
            error
                .to_string()
                .contains("output (the lines with errors, then the last lines):\n  | CMake Error"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn runs_a_command_and_keeps_output_tail_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/nested/run.log");
        let spec = CommandSpec::new("sh", ["-c", "echo out; echo err >&2; exit 3"]).log(&log);
        let output = shell().run(&spec).await.unwrap();
        assert_eq!(output.code, Some(3));
        assert_eq!(output.signal, None);
        assert!(!output.success());
        assert_eq!(output.stdout, "out\n");
        let tail: Vec<&str> = output.tail.lines().collect();
        assert!(tail.contains(&"out") && tail.contains(&"err"), "{tail:?}");
        let logged = fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = logged.lines().collect();
        assert_eq!(lines[0], format!("$ {}", spec.display()));
        assert!(lines.contains(&"out") && lines.contains(&"err"), "{logged}");
    }

    #[tokio::test]
    async fn an_output_over_the_cap_is_cut_and_refused_to_parsers() {
        // 5 MiB of lines, more than MAX_STDOUT: the start is kept, the flag says it was cut.
        let spec = CommandSpec::new("sh", ["-c", "yes 0123456789abcdef | head -c 5242880"]);
        let output = shell().run(&spec).await.unwrap();
        assert!(output.success());
        assert!(output.stdout_truncated);
        assert!(output.stdout.len() <= MAX_STDOUT);
        assert!(output.stdout.starts_with("0123456789abcdef\n"));
        let refused = output.whole_stdout(&spec.display()).unwrap_err();
        assert!(
            refused.to_string().contains("more than 4.0 MiB"),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("yes 0123456789abcdef"),
            "{refused}"
        );

        // Exactly at the cap is whole.
        let spec = CommandSpec::new("sh", ["-c", "yes 0123456789abcdef | head -c 4194304"]);
        let output = shell().run(&spec).await.unwrap();
        assert!(!output.stdout_truncated);
        assert_eq!(output.whole_stdout("at the cap").unwrap().len(), MAX_STDOUT);
    }

    #[tokio::test]
    async fn appends_to_an_existing_log_and_sets_env_and_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("run.log");
        fs::write(&log, "earlier\n").unwrap();
        let spec = CommandSpec::new("sh", ["-c", "echo \"$GREETING\"; pwd"])
            .env("GREETING", "hello there")
            .cwd(dir.path())
            .log(&log);
        let output = shell().run(&spec).await.unwrap();
        assert!(output.success());
        let canonical = fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            output.stdout,
            format!("hello there\n{}\n", canonical.display())
        );
        assert!(
            fs::read_to_string(&log)
                .unwrap()
                .starts_with("earlier\n$ sh")
        );
    }

    #[tokio::test]
    async fn arguments_are_never_interpreted_by_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("X");
        let argument = "$(touch X);rm *";
        let spec = CommandSpec::new("printf", ["%s", argument]).cwd(dir.path());
        let output = shell().run(&spec).await.unwrap();
        assert!(output.success(), "{output:?}");
        assert_eq!(output.stdout, argument);
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn reports_progress_only_when_the_count_changes() {
        let recorder = Arc::new(Recorder::default());
        let shell = HostShell::new(recorder.clone());
        let script = "echo '[ 10%] a'; echo '[ 10%] b'; echo '[ 50%] Building CXX object tools/server/CMakeFiles/llama-server.dir/server.cpp.o'; echo 'warning: x' >&2; echo plain; echo '[ 50%] y'; echo '[3/4] Linking CXX executable bin/llama-server'";
        let spec = CommandSpec::new("sh", ["-c", script]).progress("build");
        let output = shell.run(&spec).await.unwrap();
        assert!(output.success());
        let steps: Vec<(u64, u64, Option<String>)> = recorder
            .events()
            .into_iter()
            .map(|event| match event {
                ProgressEvent::Steps {
                    step,
                    done,
                    total,
                    current,
                } => {
                    assert_eq!(step, "build");
                    (done, total, current)
                }
                other => panic!("unexpected event {other:?}"),
            })
            .collect();
        assert_eq!(
            steps,
            vec![
                (10, 100, Some("a".to_string())),
                (
                    50,
                    100,
                    Some("Building CXX object server.cpp.o".to_string())
                ),
                (
                    3,
                    4,
                    Some("Linking CXX executable llama-server".to_string())
                ),
            ]
        );
    }

    #[tokio::test]
    async fn without_a_label_no_progress_is_reported() {
        let recorder = Arc::new(Recorder::default());
        let shell = HostShell::new(recorder.clone());
        let output = shell
            .run(&CommandSpec::new("sh", ["-c", "echo '[ 50%] x'"]))
            .await
            .unwrap();
        assert!(output.success());
        assert!(recorder.events().is_empty());
    }

    #[tokio::test]
    async fn dropping_the_run_future_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let group_file = dir.path().join("process-group");
        let grandchild_file = dir.path().join("grandchild");
        let mut spec = CommandSpec::new("sh", ["-c", "sleep 30 & echo $! > grandchild; sleep 30"])
            .cwd(dir.path());
        spec.group_file = Some(group_file.clone());

        let shell = shell();
        let mut run = Box::pin(shell.run(&spec));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            tokio::select! {
                result = &mut run => panic!("the command finished early: {result:?}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            let started = fs::read_to_string(&grandchild_file)
                .map(|text| text.ends_with('\n'))
                .unwrap_or(false);
            if started {
                break;
            }
            assert!(Instant::now() < deadline, "the grandchild never started");
        }
        let pgid: u32 = fs::read_to_string(&group_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let grandchild: u32 = fs::read_to_string(&grandchild_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_ne!(pgid, grandchild);
        assert!(group_alive(pgid));

        drop(run);
        wait_until("the group is gone", || !group_alive(pgid)).await;
        let stat = fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || parse_stat(&stat).is_some_and(|(state, _)| state == 'Z'),
            "grandchild still runs: {stat}"
        );
    }

    #[tokio::test]
    async fn a_backgrounded_descendant_does_not_keep_the_run_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let group_file = dir.path().join("process-group");
        let mut spec = CommandSpec::new("sh", ["-c", "sleep 30 & echo done"]);
        spec.group_file = Some(group_file.clone());
        let output = tokio::time::timeout(Duration::from_secs(15), shell().run(&spec)).await;
        let pgid: u32 = fs::read_to_string(&group_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        kill_group(pgid, Signal::SIGKILL);
        let output = output
            .expect("run waited for the backgrounded sleep")
            .unwrap();
        assert!(output.success());
        assert_eq!(output.stdout, "done\n");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_missing_tool() {
        let error = shell()
            .run(&CommandSpec::new("definitely-not-a-program", ["x"]))
            .await
            .unwrap_err();
        match &error {
            Error::MissingTool { tool, purpose, .. } => {
                assert_eq!(tool, "definitely-not-a-program");
                assert_eq!(purpose, "run `definitely-not-a-program x`");
                assert!(error.to_string().contains("not found on PATH"), "{error}");
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert_eq!(error.code().exit_code(), 5);
    }

    #[tokio::test]
    async fn a_missing_working_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let error = shell()
            .run(&CommandSpec::new("true", Vec::<String>::new()).cwd(&missing))
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains(&missing.display().to_string()),
            "{error}"
        );
    }

    #[tokio::test]
    async fn standard_input_is_written_then_closed() {
        let spec = CommandSpec::new("sh", ["-c", "cat; echo; echo end"])
            .stdin(Secret::new("https://index.docker.io/v1/"));
        let output = shell().run(&spec).await.unwrap();
        assert!(output.success(), "{output:?}");
        assert_eq!(output.stdout, "https://index.docker.io/v1/\nend\n");
        // Without input, standard input is empty (not the test's terminal).
        let output = shell()
            .run(&CommandSpec::new("sh", ["-c", "cat; echo end"]))
            .await
            .unwrap();
        assert_eq!(output.stdout, "end\n");
        // A child that does not read its input is not held up by it.
        let big = "x".repeat(1024 * 1024);
        let output = shell()
            .run(&CommandSpec::new("sh", ["-c", "echo done"]).stdin(Secret::new(big)))
            .await
            .unwrap();
        assert_eq!(output.stdout, "done\n");
    }

    /// Every field of every tracing event and span, as text.
    #[derive(Clone, Default)]
    struct Traced(Arc<std::sync::Mutex<String>>);

    struct Fields<'a>(&'a mut String);

    impl tracing::field::Visit for Fields<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={value:?}\n", field.name()));
        }
    }

    impl tracing::Subscriber for Traced {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            span.record(&mut Fields(&mut self.0.lock().unwrap()));
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
            values.record(&mut Fields(&mut self.0.lock().unwrap()));
        }
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            event.record(&mut Fields(&mut self.0.lock().unwrap()));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[tokio::test]
    async fn sensitive_output_reaches_the_caller_only() {
        let traced = Traced::default();
        let _tracing = tracing::subscriber::set_default(traced.clone());
        // Another test's thread may have met the `spawned` event first, with no subscriber of
        // its own, and cached that nobody wants it: ask every event again.
        tracing::callsite::rebuild_interest_cache();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("helper.log");
        let recorder = Arc::new(Recorder::default());
        let shell = HostShell::new(recorder.clone());
        // The secrets are put together at run time: the argv does not hold them.
        let script = "p=s3; echo \"[ 50%] {\\\"Secret\\\":\\\"${p}cret-Out\\\"} $(cat)\"; echo \"err ${p}cret-Err\" >&2; exit 1";
        let spec = CommandSpec::new("sh", ["-c", script])
            .stdin(Secret::new("s3cret-In"))
            .sensitive()
            .progress("helper")
            .log(&log);
        let output = shell.run(&spec).await.unwrap();
        assert_eq!(output.code, Some(1));
        assert!(
            output.stdout.contains("s3cret-Out\"} s3cret-In"),
            "{output:?}"
        );
        assert_eq!(output.tail, "");
        assert!(recorder.events().is_empty(), "{:?}", recorder.events());
        let logged = fs::read_to_string(&log).unwrap();
        assert!(
            logged.starts_with(&format!("$ {}", spec.display())),
            "{logged}"
        );
        let traced = traced.0.lock().unwrap().clone();
        assert!(traced.contains("spawned"), "nothing was traced: {traced}");
        let debug = format!("{spec:?}");
        for place in [&logged, &traced, &debug, &spec.display()] {
            assert!(!place.contains("s3cret"), "a secret leaked: {place}");
        }

        // The same command without the flag shows its output everywhere.
        let mut plain = spec.clone();
        plain.sensitive = false;
        let output = shell.run(&plain).await.unwrap();
        assert!(output.tail.contains("s3cret-Err"), "{output:?}");
        assert!(fs::read_to_string(&log).unwrap().contains("s3cret-Out"));
        assert_eq!(recorder.events().len(), 1);
    }

    #[tokio::test]
    async fn only_the_allowed_variables_are_inherited() {
        let dropped: Vec<String> = std::env::vars()
            .map(|(name, _)| name)
            .filter(|name| name != "PATH" && !name.starts_with("CARGO_"))
            .collect();
        let spec = CommandSpec::new("env", Vec::<String>::new())
            .inherit_only(["PATH", "CARGO_*"])
            .env("ADDED", "yes");
        assert!(spec.inherits("PATH") && spec.inherits("CARGO_PKG_NAME"));
        assert!(!spec.inherits("PATHS") && !spec.inherits("HOME"));
        let output = shell().run(&spec).await.unwrap();
        assert!(output.success(), "{output:?}");
        let names: Vec<&str> = output
            .stdout
            .lines()
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .collect();
        assert!(
            names.contains(&"PATH") && names.contains(&"ADDED"),
            "{names:?}"
        );
        for name in &dropped {
            assert!(!names.contains(&name.as_str()), "{name} was inherited");
        }
        assert!(
            names
                .iter()
                .all(|n| *n == "PATH" || *n == "ADDED" || n.starts_with("CARGO_")),
            "{names:?}"
        );
        // By default only the base list is inherited (tests/environment.rs plants secrets).
        let base = shell()
            .run(&CommandSpec::new("env", Vec::<String>::new()))
            .await
            .unwrap();
        for line in base.stdout.lines() {
            let Some((name, _)) = line.split_once('=') else {
                continue;
            };
            assert!(
                provisioner_core::environment::allows(provisioner_core::BASE_ENV, name),
                "{name} was inherited by default"
            );
        }
        assert!(base.stdout.contains("PATH="), "{}", base.stdout);
    }

    #[test]
    fn locates_programs_without_running_them() {
        let sh = shell().locate("sh").expect("sh is on PATH");
        assert!(sh.path.is_absolute());
        assert_eq!(sh.path, fs::canonicalize(&sh.path).unwrap());
        let size = fs::metadata(&sh.path).unwrap().len();
        assert!(sh.fingerprint.starts_with(&format!("{size}-")), "{sh:?}");
        assert!(shell().locate("definitely-not-a-program").is_none());
        assert_eq!(
            shell().locate(sh.path.to_str().unwrap()).as_ref(),
            Some(&sh)
        );
    }

    #[test]
    fn inspect_rejects_non_executables_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, "data").unwrap();
        assert!(inspect(&plain).is_none());
        assert!(inspect(dir.path()).is_none());
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o755)).unwrap();
        let info = inspect(&plain).unwrap();
        assert!(info.fingerprint.starts_with("4-"));
    }

    #[test]
    fn refuses_to_signal_special_groups() {
        assert!(!kill_group(0, Signal::SIGTERM));
        assert!(!kill_group(1, Signal::SIGTERM));
        let own = u32::try_from(nix::unistd::getpgrp().as_raw()).unwrap();
        assert!(!kill_group(own, Signal::SIGCONT));
        assert!(!group_alive(own));
    }

    #[tokio::test]
    async fn detached_processes_get_only_the_given_environment() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("run/engine.log");
        let sh = locate("sh").unwrap().path;
        let mut env = BTreeMap::new();
        env.insert("ONLY".to_string(), "this".to_string());
        let spec = DetachedSpec {
            program: sh,
            args: vec!["-c".to_string(), "env; echo done".to_string()],
            env,
            cwd: dir.path().to_path_buf(),
            log: log.clone(),
        };
        let pid = spawn_detached(&spec).unwrap();
        assert!(pid > 1);
        wait_until("the detached process is done", || {
            fs::read_to_string(&log).is_ok_and(|text| text.contains("done\n"))
        })
        .await;
        let text = fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("$ "), "{text}");
        assert!(text.contains("ONLY=this"), "{text}");
        assert!(!text.contains("HOME="), "{text}");
        wait_until("the detached group is gone", || !group_alive(pid)).await;
    }
}
