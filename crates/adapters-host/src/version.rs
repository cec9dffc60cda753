//! Running a freshly installed program once to ask its version: the check every installer
//! (binary archives, distribution packages) makes before it commits an install.

use std::time::Duration;

use provisioner_core::{
    CommandOutput, CommandSpec, Error, FlagProbe, Progress, ProgressEvent, Result, Shell,
};

/// How many lines of version output are kept.
pub const VERSION_LINES: usize = 10;
/// How many bytes of version output are kept.
pub const VERSION_MAX_BYTES: usize = 4096;
/// How long a version run may take by default.
pub const DEFAULT_VERSION_TIMEOUT: Duration = Duration::from_secs(60);

/// A version run: the command, its time limit, and what to tell the user when it fails.
#[derive(Debug, Clone)]
pub struct VersionRun<'a> {
    /// Progress step name, e.g. `check llama-server`.
    pub step: String,
    /// The program with its version arguments (argv, working directory, environment).
    pub command: &'a CommandSpec,
    /// Killed after this long.
    pub timeout: Duration,
    /// The hint when the program runs but fails (missing libraries, wrong architecture, …).
    pub failure_hint: &'a str,
}

/// Runs the program through the Shell port with a time limit; a timeout or a non-zero exit is
/// an [`Error::CommandFailed`] with a hint. Returns the kept version text (see
/// [`version_text`]).
pub async fn run_version(
    shell: &dyn Shell,
    progress: &dyn Progress,
    run: &VersionRun<'_>,
) -> Result<Option<String>> {
    let command = run.command;
    progress.report(ProgressEvent::Started {
        step: run.step.clone(),
        detail: Some(command.display()),
    });
    let output: CommandOutput = match tokio::time::timeout(run.timeout, shell.run(command)).await {
        Ok(output) => output?,
        Err(_) => {
            return Err(Error::CommandFailed {
                command: command.display(),
                status: format!(
                    "still running after {} s; killed",
                    run.timeout.as_secs_f64()
                ),
                tail: String::new(),
                log: None,
                hint: Some(format!(
                    "the version arguments ({}) must make the program print its version and exit",
                    command.args.join(" ")
                )),
            });
        }
    };
    if !output.success() {
        return Err(Error::CommandFailed {
            command: command.display(),
            status: output.status(),
            tail: output.tail.clone(),
            log: None,
            hint: Some(run.failure_hint.to_string()),
        });
    }
    progress.report(ProgressEvent::Finished {
        step: run.step.clone(),
    });
    // Only the first lines are read: a cut output still has them.
    Ok(version_text(&output.stdout, &output.tail))
}

/// How long a help run may take: it prints and exits, but a server that ignores the argument
/// and starts serving must not hold up the install.
pub const HELP_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `command` (the installed server with the probe's help arguments) once and returns the
/// probe's options that its output lists ([`FlagProbe::listed`]). Never fails: a server that
/// cannot run, exits non-zero, or is still running after `timeout` lists nothing, and the
/// reason is a progress note.
pub async fn probe_flags(
    shell: &dyn Shell,
    progress: &dyn Progress,
    command: &CommandSpec,
    probe: &FlagProbe,
    timeout: Duration,
) -> Vec<String> {
    let outcome = match tokio::time::timeout(timeout, shell.run(command)).await {
        Ok(Ok(output)) if output.success() && output.stdout_truncated => Err(format!(
            "its help went over {} and is not read",
            provisioner_core::human_bytes(provisioner_core::MAX_STDOUT as u64)
        )),
        Ok(Ok(output)) if output.success() => Ok(output),
        Ok(Ok(output)) => Err(output.status()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("still running after {} s", timeout.as_secs())),
    };
    match outcome {
        Ok(output) => {
            let mut listed = probe.listed(&output.stdout);
            for flag in probe.listed(&output.tail) {
                if !listed.contains(&flag) {
                    listed.push(flag);
                }
            }
            listed
        }
        Err(reason) => {
            progress.report(ProgressEvent::Note {
                message: format!(
                    "`{}` did not answer ({reason}); the server gets none of {}",
                    command.display(),
                    probe.flags.join(", ")
                ),
            });
            Vec::new()
        }
    }
}

/// Gives an install recorded before flag probes were kept (`*slot(metadata)` is `None`) the
/// options its server lists now, once: `command` (the installed server with the probe's help
/// arguments) is run, the answer set, and `metadata.json` amended, so later warm calls run
/// nothing. A record that has its answer is returned as it is. A failure to amend only costs a
/// probe next time (said in a progress note).
pub async fn learn_flags_once<M: serde::Serialize>(
    shell: &dyn Shell,
    progress: &dyn Progress,
    mut installed: crate::install::Installed<M>,
    slot: fn(&mut M) -> &mut Option<Vec<String>>,
    probe: &FlagProbe,
    command: &CommandSpec,
) -> crate::install::Installed<M> {
    if slot(&mut installed.metadata).is_some() {
        return installed;
    }
    let found = probe_flags(shell, progress, command, probe, HELP_TIMEOUT).await;
    *slot(&mut installed.metadata) = Some(found);
    if let Err(error) = crate::install::amend_metadata(&installed) {
        progress.report(ProgressEvent::Note {
            message: format!("could not record the server's options: {error}"),
        });
    }
    installed
}

/// The first non-empty lines of what a version run printed (standard output, then the combined
/// output tail, each line once), capped at [`VERSION_LINES`] lines and [`VERSION_MAX_BYTES`].
pub fn version_text(stdout: &str, tail: &str) -> Option<String> {
    let mut lines: Vec<&str> = Vec::new();
    for line in stdout.lines().chain(tail.lines()) {
        let line = line.trim_end();
        if !line.is_empty() && !lines.contains(&line) {
            lines.push(line);
        }
    }
    let mut text = lines
        .into_iter()
        .take(VERSION_LINES)
        .collect::<Vec<_>>()
        .join("\n");
    if text.len() > VERSION_MAX_BYTES {
        let mut cut = VERSION_MAX_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_stdout_and_tail_and_keeps_the_first_lines() {
        assert_eq!(
            version_text("v 1.0\n", "v 1.0\nbuilt with gcc\n").as_deref(),
            Some("v 1.0\nbuilt with gcc")
        );
        let many: String = (0..50).map(|i| format!("line {i}\n")).collect();
        assert_eq!(
            version_text("", &many).unwrap().lines().count(),
            VERSION_LINES
        );
        assert_eq!(
            version_text("only stdout\n", "").as_deref(),
            Some("only stdout")
        );
        assert_eq!(version_text("", " \n"), None);
        let wide = "é".repeat(VERSION_MAX_BYTES);
        assert!(version_text(&wide, "").unwrap().len() <= VERSION_MAX_BYTES);
    }
}
