//! Terminal rendering: progress on stderr, results on stdout, errors with `hint:` lines.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use provisioner_core::{Error, Progress, ProgressEvent, human_bytes};

/// Renders progress events on stderr: one renderer for every mode. On a terminal, downloads
/// and builds get an `indicatif` bar (bytes, rate and ETA; `[n/m]` steps with what is being
/// built) that redraws in place; otherwise plain lines, one per tenth of the way. Step starts,
/// ends and notes are lines either way.
pub struct StderrProgress {
    quiet: bool,
    terminal: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    started: HashMap<String, Instant>,
    /// Plain output: the last tenth written per step.
    last_tenth: HashMap<String, u64>,
    /// Terminal output: the bar of each running step.
    bars: HashMap<String, indicatif::ProgressBar>,
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

/// The bar of a download: what, how much of how much, rate, time left.
fn bytes_style(known_total: bool) -> indicatif::ProgressStyle {
    let template = if known_total {
        "    {prefix}: [{bar:30}] {bytes}/{total_bytes}, {bytes_per_sec}, ETA {eta}"
    } else {
        "    {prefix}: {spinner} {bytes}, {bytes_per_sec}"
    };
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// The bar of a build: `[n/m]` steps and what is being built.
fn steps_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template("    {prefix}: [{pos}/{len}] [{bar:30}] {wide_msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl State {
    /// The bar of `step`, made with `style` on first use.
    fn bar(
        &mut self,
        step: &str,
        style: impl FnOnce() -> indicatif::ProgressStyle,
    ) -> &indicatif::ProgressBar {
        self.bars.entry(step.to_string()).or_insert_with(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr_with_hz(10),
            );
            bar.set_style(style());
            bar.set_prefix(step.to_string());
            bar
        })
    }

    /// Writes a line above any running bar.
    fn line(&self, text: &str) {
        match self.bars.values().next() {
            Some(bar) => bar.suspend(|| {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }),
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
        }
    }

    /// Whether plain output should write this tenth of `step` (each tenth once).
    fn new_tenth(&mut self, step: &str, done: u64, total: u64) -> bool {
        let tenth = done.min(total) * 10 / total.max(1);
        let last = self.last_tenth.get(step).copied();
        if last.is_some_and(|last| tenth <= last) {
            return false;
        }
        self.last_tenth.insert(step.to_string(), tenth);
        true
    }
}

impl Progress for StderrProgress {
    fn report(&self, event: ProgressEvent) {
        if self.quiet {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            ProgressEvent::Note { message } => state.line(&format!("note: {message}")),
            ProgressEvent::Started { step, detail } => {
                state.started.insert(step.clone(), Instant::now());
                match detail {
                    Some(detail) => state.line(&format!("==> {step} ({detail})")),
                    None => state.line(&format!("==> {step}")),
                }
            }
            ProgressEvent::Steps {
                step,
                done,
                total,
                current,
            } => {
                if self.terminal {
                    let bar = state.bar(&step, steps_style);
                    bar.set_length(total);
                    bar.set_position(done);
                    if let Some(current) = current {
                        bar.set_message(current);
                    }
                } else if state.new_tenth(&step, done, total) {
                    let current = current.map(|c| format!(" {c}")).unwrap_or_default();
                    state.line(&format!("    {step}: [{done}/{total}]{current}"));
                }
            }
            ProgressEvent::Bytes { step, done, total } => {
                let total = total.filter(|t| *t > 0);
                if self.terminal {
                    let bar = state.bar(&step, || bytes_style(total.is_some()));
                    if let Some(total) = total {
                        bar.set_length(total);
                    }
                    bar.set_position(done);
                    return;
                }
                let started = *state
                    .started
                    .entry(step.clone())
                    .or_insert_with(Instant::now);
                // Without a total, a line per 64 MiB.
                let (key_done, key_total) = match total {
                    Some(total) => (done, total),
                    None => ((done >> 26).min(9), 10),
                };
                if !state.new_tenth(&step, key_done, key_total) {
                    return;
                }
                let seconds = started.elapsed().as_secs_f64().max(1e-3);
                let rate = done as f64 / seconds;
                let mut line = format!("    {step}: {}", human_bytes(done));
                if let Some(total) = total {
                    line.push_str(&format!(" / {}", human_bytes(total)));
                }
                line.push_str(&format!(", {}/s", human_bytes(rate as u64)));
                if let Some(total) = total
                    && rate > 0.0
                    && total > done
                {
                    line.push_str(&format!(", ETA {:.0} s", (total - done) as f64 / rate));
                }
                state.line(&line);
            }
            ProgressEvent::Finished { step } => {
                if let Some(bar) = state.bars.remove(&step) {
                    bar.finish_and_clear();
                }
                state.last_tenth.remove(&step);
                let elapsed = state
                    .started
                    .remove(&step)
                    .map(|t| format!(" in {:.1} s", t.elapsed().as_secs_f64()))
                    .unwrap_or_default();
                state.line(&format!("    done: {step}{elapsed}"));
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
/// `{"error": {"code", "message", "hint", "fields"}}` on stdout (`fields`: one
/// `{"path", "message"}` per problem of an invalid configuration, else empty). Every error class of the library maps to
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
    /// The problems of an invalid configuration, each at its field path.
    pub fields: Vec<provisioner_core::FieldError>,
}

impl Failure {
    /// A configuration problem (exit 3) found by the CLI itself.
    pub fn config(message: String, hint: Option<String>) -> Failure {
        Failure {
            code: "config".to_string(),
            message,
            hint,
            exit: provisioner_core::ErrorCode::Config.exit_code() as u8,
            fields: Vec::new(),
        }
    }

    /// A command line (or switch) that does not parse: exit 2, code `usage`.
    pub fn usage(message: String, hint: Option<String>) -> Failure {
        Failure {
            code: "usage".to_string(),
            message,
            hint,
            exit: crate::exit::USAGE,
            fields: Vec::new(),
        }
    }

    /// The JSON object printed on stdout with `--json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "hint": self.hint,
                "fields": self.fields.iter().map(|field| serde_json::json!({
                    "path": field.path,
                    "message": field.message,
                })).collect::<Vec<_>>(),
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
            fields: match error {
                Error::ConfigInvalid { errors } => errors.clone(),
                _ => Vec::new(),
            },
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
