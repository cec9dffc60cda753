//! Normalisation of llama-server flags: one spelling per option, the last value wins, and the
//! options the provisioner owns (`--model`, `--port`) cannot be set behind its back.

use provisioner_core::{Error, Result};

/// Canonical spellings of options that have several.
const ALIASES: &[(&str, &str)] = &[
    ("-ngl", "--n-gpu-layers"),
    ("--ngl", "--n-gpu-layers"),
    ("--gpu-layers", "--n-gpu-layers"),
    ("-m", "--model"),
    ("-c", "--ctx-size"),
    ("-np", "--parallel"),
    ("-t", "--threads"),
    ("-a", "--alias"),
    ("-ts", "--tensor-split"),
    ("-b", "--batch-size"),
    ("-ub", "--ubatch-size"),
    ("-fa", "--flash-attn"),
    ("-cb", "--cont-batching"),
    ("-nocb", "--no-cont-batching"),
];

/// llama-server options as an ordered list of `(option, value)`; order of first appearance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerArgs {
    options: Vec<(String, Option<String>)>,
}

impl ServerArgs {
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

    /// Removes an option.
    pub fn remove(&mut self, option: &str) -> Option<Option<String>> {
        let index = self.options.iter().position(|(o, _)| o == option)?;
        Some(self.options.remove(index).1)
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

fn canonical(option: &str) -> String {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == option)
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| option.to_string())
}

fn is_option(token: &str) -> bool {
    token.starts_with('-') && token.parse::<f64>().is_err()
}

/// Parses configured flags. llama-server takes no positional arguments, so a token that is not
/// an option is the value of the option before it.
pub fn normalise_server_flags(flags: &[String], field: &str) -> Result<ServerArgs> {
    let mut args = ServerArgs::default();
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
        let name = canonical(name);
        if name == "--model" {
            return Err(invalid(
                field,
                start,
                "the model is set by the provisioner; use provisioning.model.ref",
            ));
        }
        args.set(&name, value);
        index += 1;
    }
    Ok(args)
}

fn invalid(field: &str, index: usize, message: &str) -> Error {
    Error::ConfigInvalid {
        errors: vec![provisioner_core::FieldError {
            path: format!("{field}[{index}]"),
            message: message.to_string(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(flags: &[&str]) -> Vec<String> {
        let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        normalise_server_flags(&flags, "f").unwrap().to_argv()
    }

    #[test]
    fn legacy_gpu_layer_spellings_become_one_option_last_wins() {
        assert_eq!(
            argv(&[
                "-ngl",
                "10",
                "--metrics",
                "--gpu-layers",
                "20",
                "--ngl=33",
                "--metrics"
            ]),
            vec!["--n-gpu-layers", "33", "--metrics"]
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
    fn the_model_cannot_be_set_by_flags() {
        let flags = vec!["-m".to_string(), "x.gguf".to_string()];
        let error = normalise_server_flags(&flags, "pools[0].provisioning.flags").unwrap_err();
        assert!(
            error.to_string().contains("pools[0].provisioning.flags[0]"),
            "{error}"
        );
    }

    #[test]
    fn a_stray_value_is_an_error() {
        let flags = vec!["stray".to_string()];
        assert!(normalise_server_flags(&flags, "f").is_err());
    }

    #[test]
    fn metacharacters_stay_one_argument() {
        assert_eq!(
            argv(&["--alias", "$(touch /tmp/pwned); rm -rf /"]),
            vec!["--alias", "$(touch /tmp/pwned); rm -rf /"]
        );
    }
}
