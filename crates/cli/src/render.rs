//! Terminal rendering: progress on stderr, results on stdout, errors with `hint:` lines.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use provisioner_core::{Error, Progress, ProgressEvent, human_bytes};

/// Renders progress events on stderr. On a terminal percentages update in place; otherwise a
/// line is written every 10 %.
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
}

impl StderrProgress {
    /// A renderer; `quiet` drops everything but notes.
    pub fn new(quiet: bool) -> Self {
        StderrProgress {
            quiet,
            terminal: std::io::stderr().is_terminal(),
            state: Mutex::new(State::default()),
        }
    }
}

impl Progress for StderrProgress {
    fn report(&self, event: ProgressEvent) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        let end_in_place = |state: &mut State, err: &mut dyn Write| {
            if state.in_place {
                let _ = writeln!(err);
                state.in_place = false;
            }
        };
        match event {
            ProgressEvent::Note { message } => {
                end_in_place(&mut state, &mut err);
                let _ = writeln!(err, "note: {message}");
            }
            _ if self.quiet => {}
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
                    let _ = write!(err, "\r    {step}: {percent:>3}%");
                    state.in_place = true;
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
                    let _ = write!(err, "\r{line}\x1b[K");
                    state.in_place = true;
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

/// Writes an error and its hint to stderr (and, with `json`, a JSON error object to stdout).
pub fn error(error: &Error, json: bool) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {error}");
    if let Some(hint) = error.hint() {
        for line in hint.lines() {
            let _ = writeln!(err, "hint: {line}");
        }
    }
    if json {
        let value = serde_json::json!({
            "error": {
                "code": error.code(),
                "message": error.to_string(),
                "hint": error.hint(),
            }
        });
        out(&value.to_string());
    }
}
