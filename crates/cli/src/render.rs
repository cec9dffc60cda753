//! Terminal rendering: progress on stderr, results on stdout, errors with `hint:` lines.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use provisioner_core::{Error, Progress, ProgressEvent, human_bytes};

/// Renders progress events on stderr. On a terminal percentages update in place (a carriage
/// return and spaces, never an escape sequence); otherwise a line is written every 10 %.
pub struct StderrProgress {
    quiet: bool,
    terminal: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    started: HashMap<String, Instant>,
    last_percent: HashMap<String, u8>,
    in_place: bool,
    /// Characters of the line being updated in place, to blank what a shorter one leaves.
    in_place_width: usize,
}

impl StderrProgress {
    /// A renderer; `quiet` drops everything, notes included: with `-q` stderr carries only
    /// errors and their hints.
    pub fn new(quiet: bool) -> Self {
        StderrProgress {
            quiet,
            terminal: std::io::stderr().is_terminal(),
            state: Mutex::new(State::default()),
        }
    }
}

/// Writes `line` over the line being updated in place.
fn overwrite(state: &mut State, err: &mut dyn Write, line: &str) {
    let width = line.chars().count();
    let pad = state.in_place_width.saturating_sub(width);
    let _ = write!(err, "\r{line}{:pad$}", "");
    state.in_place = true;
    state.in_place_width = width;
}

impl Progress for StderrProgress {
    fn report(&self, event: ProgressEvent) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        let end_in_place = |state: &mut State, err: &mut dyn Write| {
            if state.in_place {
                let _ = writeln!(err);
                state.in_place = false;
                state.in_place_width = 0;
            }
        };
        match event {
            _ if self.quiet => {}
            ProgressEvent::Note { message } => {
                end_in_place(&mut state, &mut err);
                let _ = writeln!(err, "note: {message}");
            }
            ProgressEvent::Started { step, detail } => {
                end_in_place(&mut state, &mut err);
                state.started.insert(step.clone(), Instant::now());
                match detail {
                    Some(detail) => {
                        let _ = writeln!(err, "==> {step} ({detail})");
                    }
                    None => {
                        let _ = writeln!(err, "==> {step}");
                    }
                }
            }
            ProgressEvent::Percent { step, percent } => {
                let last = state.last_percent.get(&step).copied();
                if self.terminal {
                    overwrite(&mut state, &mut err, &format!("    {step}: {percent:>3}%"));
                } else if last.is_none_or(|l| percent / 10 > l / 10) {
                    let _ = writeln!(err, "    {step}: {percent}%");
                }
                state.last_percent.insert(step, percent);
            }
            ProgressEvent::Bytes { step, done, total } => {
                let started = *state
                    .started
                    .entry(step.clone())
                    .or_insert_with(Instant::now);
                let seconds = started.elapsed().as_secs_f64().max(1e-3);
                let rate = done as f64 / seconds;
                let mut line = format!("    {step}: {}", human_bytes(done));
                let mut percent = None;
                if let Some(total) = total.filter(|t| *t > 0) {
                    line.push_str(&format!(" / {}", human_bytes(total)));
                    percent = Some((done.min(total) * 100 / total) as u8);
                }
                line.push_str(&format!(", {}/s", human_bytes(rate as u64)));
                if let Some(total) = total
                    && rate > 0.0
                    && total > done
                {
                    line.push_str(&format!(", ETA {:.0} s", (total - done) as f64 / rate));
                }
                if self.terminal {
                    overwrite(&mut state, &mut err, &line);
                } else {
                    let key = percent.unwrap_or((done >> 26).min(255) as u8);
                    let last = state.last_percent.get(&step).copied();
                    if last.is_none_or(|l| key / 10 > l / 10) {
                        let _ = writeln!(err, "{line}");
                        state.last_percent.insert(step, key);
                    }
                }
            }
            ProgressEvent::Finished { step } => {
                end_in_place(&mut state, &mut err);
                let elapsed = state
                    .started
                    .remove(&step)
                    .map(|t| format!(" in {:.1} s", t.elapsed().as_secs_f64()))
                    .unwrap_or_default();
                let _ = writeln!(err, "    done: {step}{elapsed}");
            }
        }
    }
}

/// Writes a line to stdout.
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

/// A failure as `orchctl` reports it: `error:` and `hint:` lines on stderr and, with `--json`,
/// `{"error": {"code", "message", "hint"}}` on stdout. Every error class of the library maps to
/// one ([`Failure::from`]); the CLI adds its own (usage errors, an unknown cache directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The stable code in the JSON object: an [`provisioner_core::ErrorCode`]'s name, or
    /// `usage` for a command line that does not parse.
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// What to do about it, one line per `hint:`.
    pub hint: Option<String>,
    /// The process exit code (the README's table).
    pub exit: u8,
}

impl Failure {
    /// A configuration problem (exit 3) found by the CLI itself.
    pub fn config(message: String, hint: Option<String>) -> Failure {
        Failure {
            code: "config".to_string(),
            message,
            hint,
            exit: provisioner_core::ErrorCode::Config.exit_code() as u8,
        }
    }

    /// A command line (or switch) that does not parse: exit 2, code `usage`.
    pub fn usage(message: String, hint: Option<String>) -> Failure {
        Failure {
            code: "usage".to_string(),
            message,
            hint,
            exit: crate::exit::USAGE,
        }
    }

    /// The JSON object printed on stdout with `--json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "hint": self.hint,
            }
        })
    }
}

impl From<&Error> for Failure {
    fn from(error: &Error) -> Failure {
        let code = serde_json::to_value(error.code())
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{:?}", error.code()).to_ascii_lowercase());
        Failure {
            code,
            message: error.to_string(),
            hint: error.hint().map(str::to_string),
            exit: u8::try_from(error.code().exit_code()).unwrap_or(crate::exit::UNEXPECTED),
        }
    }
}

/// Writes a failure: `error:` and `hint:` lines on stderr, and with `json` its JSON object on
/// stdout.
pub fn failure(failure: &Failure, json: bool) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {}", failure.message);
    if let Some(hint) = &failure.hint {
        for line in hint.lines() {
            let _ = writeln!(err, "hint: {line}");
        }
    }
    drop(err);
    if json {
        failure_json(failure);
    }
}

/// Writes only the JSON object of a failure on stdout (its human text went to stderr already,
/// as clap prints a usage error).
pub fn failure_json(failure: &Failure) {
    out(&failure.to_json().to_string());
}

/// Writes an error and its hint to stderr (and, with `json`, a JSON error object to stdout).
pub fn error(error: &Error, json: bool) {
    failure(&Failure::from(error), json);
}
