//! Server options as an ordered list: parsed from a pool's `flags` with an engine's option table
//! (one spelling per option; an option given twice with different values is an error unless
//! the engine accumulates it), or kept verbatim for engines whose flags are passed through as
//! written.

use provisioner_core::{Error, Result};

/// Server options as an ordered list of `(option, value)`, in order of first appearance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerArgs {
    options: Vec<(String, Option<String>)>,
}

impl ServerArgs {
    /// The flags exactly as written, one word each (no parsing).
    pub fn verbatim(flags: &[String]) -> ServerArgs {
        ServerArgs {
            options: flags.iter().map(|f| (f.clone(), None)).collect(),
        }
    }

    /// The value of an option, if set.
    pub fn get(&self, option: &str) -> Option<&Option<String>> {
        self.options
            .iter()
            .find(|(o, _)| o == option)
            .map(|(_, v)| v)
    }

    /// Sets an option, keeping its first position when it exists.
    pub fn set(&mut self, option: &str, value: Option<String>) {
        match self.options.iter_mut().find(|(o, _)| o == option) {
            Some(slot) => slot.1 = value,
            None => self.options.push((option.to_string(), value)),
        }
    }

    /// Removes an option (every occurrence), returning its first value.
    pub fn remove(&mut self, option: &str) -> Option<Option<String>> {
        let index = self.options.iter().position(|(o, _)| o == option)?;
        let first = self.options.remove(index).1;
        self.options.retain(|(o, _)| o != option);
        Some(first)
    }

    /// The options as argv.
    pub fn to_argv(&self) -> Vec<String> {
        let mut argv = Vec::new();
        for (option, value) in &self.options {
            argv.push(option.clone());
            if let Some(value) = value {
                argv.push(value.clone());
            }
        }
        argv
    }
}

/// How an engine spells its options: other spellings mapped to the canonical one, and the
/// options the server accumulates when given more than once (llama.cpp's `--lora`).
#[derive(Debug, Clone, Copy)]
pub struct OptionTable {
    /// `(other spelling, canonical spelling)`.
    pub aliases: &'static [(&'static str, &'static str)],
    /// Canonical options that may be given several times, each occurrence kept in order.
    pub repeatable: &'static [&'static str],
}

fn canonical(aliases: &[(&str, &str)], option: &str) -> String {
    aliases
        .iter()
        .find(|(alias, _)| *alias == option)
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| option.to_string())
}

fn is_option(token: &str) -> bool {
    token.starts_with('-') && token.parse::<f64>().is_err()
}

/// Parses configured flags of a server that takes no positional arguments, so that a word that
/// is not an option is the value of the option before it. `table` maps other spellings to the
/// canonical one and names the options kept every time they are given; any other option given
/// twice must carry the same value both times (the server would silently keep one), else an
/// error at `field[i]` names both.
pub fn parse_options(flags: &[String], table: &OptionTable, field: &str) -> Result<ServerArgs> {
    let mut args = ServerArgs::default();
    let mut first_at: Vec<(String, usize, String)> = Vec::new();
    let mut index = 0;
    while index < flags.len() {
        let start = index;
        let token = &flags[index];
        if !is_option(token) {
            return Err(invalid(
                field,
                start,
                &format!("`{token}` is not an option and follows no option that takes a value"),
            ));
        }
        let (name, inline_value) = match token.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_string())),
            _ => (token.as_str(), None),
        };
        let value = match inline_value {
            Some(value) => Some(value),
            None => match flags.get(index + 1) {
                Some(next) if !is_option(next) => {
                    index += 1;
                    Some(next.clone())
                }
                _ => None,
            },
        };
        let option = canonical(table.aliases, name);
        if table.repeatable.contains(&option.as_str()) {
            args.options.push((option, value));
        } else {
            let written = flags[start..=index].join(" ");
            match (
                args.get(&option),
                first_at.iter().find(|(o, _, _)| *o == option),
            ) {
                (Some(earlier), Some((_, at, earlier_written))) if *earlier != value => {
                    return Err(invalid(
                        field,
                        start,
                        &format!(
                            "`{written}` disagrees with `{earlier_written}` at {field}[{at}]: {option} takes one value; give it once"
                        ),
                    ));
                }
                (Some(_), _) => {}
                (None, _) => {
                    first_at.push((option.clone(), start, written));
                    args.set(&option, value);
                }
            }
        }
        index += 1;
    }
    Ok(args)
}

fn invalid(field: &str, index: usize, message: &str) -> Error {
    Error::invalid(format!("{field}[{index}]"), message)
}

impl ServerArgs {
    /// Where an option first appears in the configured flags, for error paths.
    pub fn position_in(flags: &[String], table: &OptionTable, option: &str) -> Option<usize> {
        flags.iter().position(|flag| {
            let name = flag.split_once('=').map_or(flag.as_str(), |(name, _)| name);
            canonical(table.aliases, name) == option
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: OptionTable = OptionTable {
        aliases: &[("-ngl", "--n-gpu-layers"), ("--ngl", "--n-gpu-layers")],
        repeatable: &["--lora"],
    };

    fn argv(flags: &[&str]) -> Vec<String> {
        let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        parse_options(&flags, &TABLE, "f").unwrap().to_argv()
    }

    #[test]
    fn aliases_become_one_option_and_a_repeat_that_agrees_is_kept_once() {
        assert_eq!(
            argv(&["-ngl", "33", "--metrics", "--ngl=33", "--metrics"]),
            vec!["--n-gpu-layers", "33", "--metrics"]
        );
    }

    #[test]
    fn an_option_given_twice_with_different_values_is_an_error_naming_both() {
        let flags: Vec<String> = ["--metrics", "-ngl", "10", "--n-gpu-layers=33"]
            .map(String::from)
            .to_vec();
        let error = parse_options(&flags, &TABLE, "f").unwrap_err().to_string();
        assert!(
            error.contains("f[3]: `--n-gpu-layers=33` disagrees with `-ngl 10` at f[1]"),
            "{error}"
        );
        let switch_then_value: Vec<String> =
            ["--metrics", "--metrics=yes"].map(String::from).to_vec();
        assert!(parse_options(&switch_then_value, &TABLE, "f").is_err());
    }

    #[test]
    fn repeatable_options_keep_every_occurrence_in_order() {
        assert_eq!(
            argv(&["--lora", "a.gguf", "--metrics", "--lora", "b.gguf"]),
            vec!["--lora", "a.gguf", "--metrics", "--lora", "b.gguf"]
        );
    }

    #[test]
    fn negative_numbers_are_values() {
        assert_eq!(
            argv(&["--seed", "-1", "--n-predict", "-2"]),
            vec!["--seed", "-1", "--n-predict", "-2"]
        );
    }

    #[test]
    fn a_stray_value_is_an_error() {
        let flags = vec!["stray".to_string()];
        assert!(parse_options(&flags, &TABLE, "f").is_err());
    }

    #[test]
    fn metacharacters_stay_one_argument() {
        assert_eq!(
            argv(&["--alias", "$(touch /tmp/pwned); rm -rf /"]),
            vec!["--alias", "$(touch /tmp/pwned); rm -rf /"]
        );
    }

    #[test]
    fn verbatim_keeps_every_word() {
        let flags: Vec<String> = ["positional", "--x", "1"].map(String::from).to_vec();
        assert_eq!(ServerArgs::verbatim(&flags).to_argv(), flags);
    }
}
