//! Server options as an ordered list, parsed from a pool's `flags` with an engine's option
//! table (one spelling per option; an option given twice with different values is an error
//! unless the engine accumulates it), and the rules every recipe applies to them: options the
//! recipe renders itself ([`take_owned`]), options that make the engine download something
//! ([`refuse_fetching`]), and pool keys that become options ([`pool_setting`]).

use provisioner_core::{Error, FieldError, Result};

/// One option with its value words: none for a switch, one for most options, several for an
/// option that takes a list (argparse `nargs="+"`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    option: String,
    value: Option<String>,
    more: Vec<String>,
}

impl Entry {
    fn words(&self) -> Vec<&str> {
        self.value
            .iter()
            .chain(self.more.iter())
            .map(String::as_str)
            .collect()
    }
}

/// Server options as an ordered list of `(option, value)`, in order of first appearance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerArgs {
    options: Vec<Entry>,
}

impl ServerArgs {
    /// The flags exactly as written, one word each (no parsing).
    pub fn verbatim(flags: &[String]) -> ServerArgs {
        ServerArgs {
            options: flags
                .iter()
                .map(|f| Entry {
                    option: f.clone(),
                    value: None,
                    more: Vec::new(),
                })
                .collect(),
        }
    }

    /// The (first) value of an option, if set.
    pub fn get(&self, option: &str) -> Option<&Option<String>> {
        self.options
            .iter()
            .find(|e| e.option == option)
            .map(|e| &e.value)
    }

    /// Every value word of every occurrence of an option, in order.
    pub fn values(&self, option: &str) -> Vec<&str> {
        self.options
            .iter()
            .filter(|e| e.option == option)
            .flat_map(Entry::words)
            .collect()
    }

    /// The options given, in order (an option given several times appears each time).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.options.iter().map(|e| e.option.as_str())
    }

    /// Sets an option, keeping its first position when it exists.
    pub fn set(&mut self, option: &str, value: Option<String>) {
        match self.options.iter_mut().find(|e| e.option == option) {
            Some(slot) => {
                slot.value = value;
                slot.more.clear();
            }
            None => self.options.push(Entry {
                option: option.to_string(),
                value,
                more: Vec::new(),
            }),
        }
    }

    /// Removes an option (every occurrence), returning its first value.
    pub fn remove(&mut self, option: &str) -> Option<Option<String>> {
        let index = self.options.iter().position(|e| e.option == option)?;
        let first = self.options.remove(index).value;
        self.options.retain(|e| e.option != option);
        Some(first)
    }

    /// The options as argv.
    pub fn to_argv(&self) -> Vec<String> {
        let mut argv = Vec::new();
        for entry in &self.options {
            argv.push(entry.option.clone());
            argv.extend(entry.value.iter().cloned());
            argv.extend(entry.more.iter().cloned());
        }
        argv
    }
}

/// How an engine spells and parses its options (taken from the engine's own argument
/// definitions): other spellings mapped to the canonical one, the options it accumulates when
/// given more than once, the options that take no value or a list, and what a word that is
/// no option's value means.
#[derive(Debug, Clone, Copy)]
pub struct OptionTable {
    /// `(other spelling, canonical spelling)`.
    pub aliases: &'static [(&'static str, &'static str)],
    /// Canonical options that may be given several times, each occurrence kept in order.
    pub repeatable: &'static [&'static str],
    /// Options that take no value: a word after one is not its value.
    pub switches: &'static [&'static str],
    /// Whether every `--no-<name>` is a switch (argparse `BooleanOptionalAction`).
    pub negated_switches: bool,
    /// Options that take every word up to the next option (argparse `nargs="+"`).
    pub lists: &'static [&'static str],
    /// Whether a long option may be written with `_` for `-` before its first `.` (vLLM's
    /// `FlexibleArgumentParser`).
    pub underscores: bool,
    /// Whether a one-letter option may carry its value attached (`-p8080`, clap and getopt).
    pub attached_short_values: bool,
    /// Whether the engine's parser takes a unique prefix of a long option for the option
    /// (Python's argparse and glibc's `getopt_long` do): a prefix of an option the recipe
    /// owns, and of no other option the table names, is that option.
    pub abbreviations: bool,
    /// Other long options of the engine, named so that a prefix they share with an owned
    /// option is known to be ambiguous (the engine refuses it itself).
    pub others: &'static [&'static str],
    /// What a word that is no option's value is, when the server takes one (vLLM's model);
    /// `None`: the server takes no positional argument, and such a word is an error.
    pub positional: Option<&'static str>,
}

impl OptionTable {
    /// A table with nothing in it, to fill with struct update syntax.
    pub const EMPTY: OptionTable = OptionTable {
        aliases: &[],
        repeatable: &[],
        switches: &[],
        negated_switches: false,
        lists: &[],
        underscores: false,
        attached_short_values: false,
        abbreviations: false,
        others: &[],
        positional: None,
    };

    /// The canonical spelling of `option` as written.
    fn canonical(&self, option: &str) -> String {
        let option = if self.underscores && option.starts_with("--") {
            match option.split_once('.') {
                Some((name, rest)) => format!("{}.{rest}", name.replace('_', "-")),
                None => option.replace('_', "-"),
            }
        } else {
            option.to_string()
        };
        self.aliases
            .iter()
            .find(|(alias, _)| *alias == option)
            .map(|(_, name)| name.to_string())
            .unwrap_or(option)
    }

    fn is_switch(&self, option: &str) -> bool {
        self.switches.contains(&option) || (self.negated_switches && option.starts_with("--no-"))
    }

    /// Every option the table names.
    fn named(&self) -> impl Iterator<Item = &'static str> {
        self.aliases
            .iter()
            .flat_map(|(alias, name)| [*alias, *name])
            .chain(self.repeatable.iter().copied())
            .chain(self.switches.iter().copied())
            .chain(self.lists.iter().copied())
            .chain(self.others.iter().copied())
    }

    /// Whether the table names `option`.
    fn knows(&self, option: &str) -> bool {
        self.named().any(|named| named == option)
    }

    /// Splits a token into the option as written and a value written into the same word:
    /// `--name=value`, or `-p8080` for a one-letter alias when the engine allows it.
    fn split<'a>(&self, token: &'a str) -> (&'a str, Option<&'a str>) {
        if token.starts_with("--") {
            return match token.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (token, None),
            };
        }
        if self.attached_short_values && token.len() > 2 && !self.knows(token) {
            for (alias, _) in self.aliases {
                if alias.len() == 2 && token.starts_with(alias) {
                    let value = &token[2..];
                    return (alias, Some(value.strip_prefix('=').unwrap_or(value)));
                }
            }
        }
        (token, None)
    }
}

fn is_option(token: &str) -> bool {
    token.starts_with('-') && token.len() > 1 && token.parse::<f64>().is_err()
}

/// Parses configured flags with `table`. A word that is not an option is the value of the
/// option before it (all of them for a list option, none for a switch), else a positional
/// argument, which is an error (`table.positional` says what the server would take it for).
/// Options the engine accumulates are kept every time they are given; any other option given
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
            let message = match table.positional {
                Some(meaning) => format!("`{token}` is a positional argument: {meaning}"),
                None => {
                    format!("`{token}` is not an option and follows no option that takes a value")
                }
            };
            return Err(invalid(field, start, &message));
        }
        let (name, inline_value) = table.split(token);
        let option = table.canonical(name);
        let mut value = inline_value.map(str::to_string);
        let mut more = Vec::new();
        if value.is_none() && !table.is_switch(&option) {
            while let Some(next) = flags.get(index + 1)
                && !is_option(next)
            {
                index += 1;
                match value {
                    None => value = Some(next.clone()),
                    Some(_) => more.push(next.clone()),
                }
                if !table.lists.contains(&option.as_str()) {
                    break;
                }
            }
        }
        let entry = Entry {
            option: option.clone(),
            value,
            more,
        };
        if table.repeatable.contains(&option.as_str()) {
            args.options.push(entry);
        } else {
            // What errors quote of the flags: never a credential's value.
            let written = if takes_a_secret(&option) {
                format!(
                    "{} <redacted>",
                    flags[start].split('=').next().unwrap_or("")
                )
            } else {
                flags[start..=index].join(" ")
            };
            let earlier = args.options.iter().find(|e| e.option == option);
            match (earlier, first_at.iter().find(|(o, _, _)| *o == option)) {
                (Some(earlier), Some((_, at, earlier_written)))
                    if earlier.words() != entry.words() =>
                {
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
                    args.options.push(entry);
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
        flags
            .iter()
            .position(|flag| is_option(flag) && table.canonical(table.split(flag).0) == option)
    }
}

/// `field[i]` and the flag as written there (with the value word after it), for messages.
fn written(flags: &[String], table: &OptionTable, field: &str, option: &str) -> (String, String) {
    let index = ServerArgs::position_in(flags, table, option).unwrap_or(0);
    let Some(flag) = flags.get(index) else {
        return (format!("{field}[{index}]"), option.to_string());
    };
    if takes_a_secret(option) {
        // An error quotes where the option is, never the token or key after it.
        let name = flag.split_once('=').map_or(flag.as_str(), |(name, _)| name);
        return (format!("{field}[{index}]"), format!("{name} <redacted>"));
    }
    let text = match flags.get(index + 1) {
        Some(next) if !flag.contains('=') && !is_option(next) && !table.is_switch(option) => {
            format!("{flag} {next}")
        }
        _ => flag.clone(),
    };
    (format!("{field}[{index}]"), text)
}

/// Whether an option's value is a credential (`--hf-token`, `--api-key`, a password): errors
/// never quote it.
pub fn takes_a_secret(option: &str) -> bool {
    let option = option.to_ascii_lowercase();
    option.ends_with("token")
        || option.ends_with("api-key")
        || option.contains("password")
        || option.ends_with("secret")
}

/// Why the model options are the provisioner's.
pub const MODEL_IS_STAGED: &str = "the provisioner passes the model it staged (provisioning.model.ref, or the pool's `model`); remove it";

/// Why the listening address is the provisioner's.
pub const HOST_IS_OWNED: &str = "engines listen on 127.0.0.1 on the host, and on all addresses inside a container that is published on 127.0.0.1 only; remove it";

/// Why a container's listening port is the provisioner's.
pub const CONTAINER_PORT_IS_OWNED: &str = "inside its container the engine listens on the image's own port, which the provisioner publishes on the host port given in provisioning.ports; set the port there";

/// An option the recipe owns: it renders the option itself, or the option would undo what the
/// recipe renders (the model, where the server listens).
#[derive(Debug, Clone, Copy)]
pub struct Owned {
    /// The option's canonical spelling.
    pub option: &'static str,
    /// Why the pool may not set it, and what to change instead (a sentence).
    pub instead: &'static str,
}

/// Takes the options the recipe owns off the flags: one given with exactly the value the
/// recipe renders (`rendered`) is dropped (the recipe renders it anyway); any other is an
/// error at `field[i]` saying what to change instead (every such option at once, in the order
/// of the flags). Where the engine takes unique prefixes of long options, a prefix of an owned
/// option counts as that option.
pub fn take_owned(
    options: &mut ServerArgs,
    flags: &[String],
    table: &OptionTable,
    field: &str,
    owned: &[Owned],
    rendered: &[(&str, String)],
) -> Result<()> {
    if table.abbreviations {
        let given: Vec<String> = options.names().map(str::to_string).collect();
        for name in given {
            if !name.starts_with("--") || name.len() < 4 || table.knows(&name) {
                continue;
            }
            if owned.iter().any(|o| o.option == name) {
                continue;
            }
            let longer = |option: &str| option.starts_with(&name) && option.len() > name.len();
            let matches: Vec<&Owned> = owned.iter().filter(|o| longer(o.option)).collect();
            let ambiguous = matches.len() > 1
                || table
                    .named()
                    .any(|other| longer(other) && !owned.iter().any(|o| o.option == other));
            if let [rule] = matches.as_slice()
                && !ambiguous
            {
                let (at, text) = written(flags, table, field, &name);
                return Err(Error::invalid(
                    at,
                    format!(
                        "`{text}`: the engine reads {name} as {}; {}",
                        rule.option, rule.instead
                    ),
                ));
            }
        }
    }
    let mut refused: Vec<(usize, FieldError)> = Vec::new();
    for rule in owned {
        if options.get(rule.option).is_none() {
            continue;
        }
        let expected = rendered
            .iter()
            .find(|(option, _)| *option == rule.option)
            .map(|(_, value)| value.as_str());
        let given = options.values(rule.option);
        if expected.is_some() && given.iter().all(|value| Some(*value) == expected) {
            options.remove(rule.option);
            continue;
        }
        let index = ServerArgs::position_in(flags, table, rule.option).unwrap_or(0);
        let (at, text) = written(flags, table, field, rule.option);
        let message = match expected {
            Some(value) => format!(
                "`{text}` contradicts the provisioner's {} {value}; {}",
                rule.option, rule.instead
            ),
            None => format!("`{text}`: {}", rule.instead),
        };
        refused.push((index, FieldError::new(at, message)));
    }
    if refused.is_empty() {
        return Ok(());
    }
    refused.sort_by_key(|(index, _)| *index);
    Err(Error::ConfigInvalid {
        errors: refused.into_iter().map(|(_, error)| error).collect(),
    })
}

/// When an option makes the engine download something.
#[derive(Debug, Clone, Copy)]
pub enum Fetches {
    /// Whenever it is given (a Hub revision, a download URL, a preset that names a Hub model).
    Always,
    /// When its value is not an absolute path (a Hub id such as `org/name`).
    UnlessPath,
    /// When one of the comma-separated items (`name=path` or an id) is not an absolute path
    /// (TGI's `--lora-adapters`).
    UnlessPathItems,
    /// When one of its words (`name=path`, or JSON with `"path"`) names no absolute path
    /// (vLLM's `--lora-modules`).
    UnlessPathModules,
    /// When the JSON object's `key` holds something that is not an absolute path (vLLM's
    /// `--speculative-config`'s `model`).
    UnlessPathInJson(&'static str),
}

/// An engine option that makes the engine fetch something itself.
#[derive(Debug, Clone, Copy)]
pub struct Fetching {
    /// The option's canonical spelling.
    pub option: &'static str,
    /// What it downloads, for the message.
    pub what: &'static str,
    /// When it does.
    pub when: Fetches,
}

fn is_local_path(value: &str) -> bool {
    value.starts_with('/')
}

fn fetches(when: Fetches, words: &[&str]) -> bool {
    match when {
        Fetches::Always => true,
        Fetches::UnlessPath => words.iter().any(|word| !is_local_path(word)),
        Fetches::UnlessPathItems => words
            .iter()
            .flat_map(|word| word.split(','))
            .filter(|item| !item.trim().is_empty())
            .any(|item| {
                let path = item.split_once('=').map_or(item, |(_, path)| path);
                !is_local_path(path.trim())
            }),
        Fetches::UnlessPathModules => words.iter().any(|word| {
            let word = word.trim();
            if word.starts_with('{') || word.starts_with('[') {
                json_paths(word, "path")
                    .iter()
                    .any(|path| !is_local_path(path))
            } else {
                let path = word.split_once('=').map_or(word, |(_, path)| path);
                !is_local_path(path)
            }
        }),
        Fetches::UnlessPathInJson(key) => words.iter().any(|word| {
            json_paths(word, key)
                .iter()
                .any(|path| !is_local_path(path))
        }),
    }
}

/// The string values of `key` in a JSON object or a list of objects (unparsable JSON: none;
/// the engine refuses it itself).
fn json_paths(text: &str, key: &str) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let objects = match value {
        serde_json::Value::Array(items) => items,
        other => vec![other],
    };
    objects
        .iter()
        .filter_map(|object| object.get(key))
        .filter_map(|value| value.as_str().map(str::to_string))
        .collect()
}

/// Refuses the options that would make the engine download something itself, behind the
/// host policy's back (`--offline`, the allowed hosts): an error at `field[i]` saying to stage
/// the thing and pass a local path, for every such option at once.
pub fn refuse_fetching(
    options: &ServerArgs,
    flags: &[String],
    table: &OptionTable,
    field: &str,
    fetching: &[Fetching],
) -> Result<()> {
    let mut problems = Problems::default();
    for rule in fetching {
        if options.get(rule.option).is_none() {
            continue;
        }
        if !fetches(rule.when, &options.values(rule.option)) {
            continue;
        }
        let (at, text) = written(flags, table, field, rule.option);
        problems.push(FieldError::new(
            at,
            format!(
                "`{text}` makes the engine download {} itself, which bypasses the provisioner's policy (--offline, the allowed hosts); stage it and pass a local path instead (the model itself comes from provisioning.model.ref)",
                rule.what
            ),
        ));
    }
    problems.finish()
}

/// Problems with a pool's flags, gathered so that every one is reported at once (ordered by
/// the flag they are at) instead of one per `config check`.
#[derive(Debug, Default)]
pub struct Problems(Vec<FieldError>);

impl Problems {
    /// Adds one problem.
    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    /// Keeps the field problems of a check's result; any other error is returned at once.
    pub fn gather(&mut self, result: Result<()>) -> Result<()> {
        match result {
            Err(Error::ConfigInvalid { errors }) => {
                self.0.extend(errors);
                Ok(())
            }
            other => other,
        }
    }

    /// `Ok` when nothing was found, else [`Error::ConfigInvalid`] with every problem, ordered
    /// by the index of the flag each is at (`…flags[3]` before `…flags[12]`).
    pub fn finish(mut self) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let index = |error: &FieldError| {
            error
                .path
                .rsplit_once('[')
                .and_then(|(_, rest)| rest.strip_suffix(']')?.parse::<usize>().ok())
                .unwrap_or(usize::MAX)
        };
        self.0.sort_by_key(index);
        self.0.dedup();
        Err(Error::ConfigInvalid { errors: self.0 })
    }
}

/// A pool key and the option it becomes: set from the key when the flags leave the option
/// out, accepted when they say the same (`same`), else an error at `field[i]` naming both.
#[allow(clippy::too_many_arguments)]
pub fn pool_setting(
    options: &mut ServerArgs,
    flags: &[String],
    table: &OptionTable,
    field: &str,
    key: &str,
    option: &str,
    value: &str,
    same: fn(&str, &str) -> bool,
) -> Result<()> {
    match options.get(option) {
        None => {
            options.set(option, Some(value.to_string()));
            Ok(())
        }
        Some(Some(given)) if same(given, value) => Ok(()),
        Some(given) => {
            let (at, _) = written(flags, table, field, option);
            Err(Error::invalid(
                at,
                format!(
                    "{option} {} disagrees with the pool's {key}: {value}; give it in one place",
                    given.as_deref().unwrap_or("(no value)")
                ),
            ))
        }
    }
}

/// Whether two integers say the same, written plainly or with a size suffix (`4k` = 4000,
/// `4K` = 4096, as vLLM reads `--max-model-len`).
pub fn same_count(given: &str, from_pool: &str) -> bool {
    given == from_pool || (count(given).is_some() && count(given) == count(from_pool))
}

/// An integer written plainly or with a decimal (`k`, `m`, `g`) or binary (`K`, `M`, `G`)
/// suffix.
pub fn count(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, factor) = match text.chars().last()? {
        'k' => (&text[..text.len() - 1], 1_000),
        'm' => (&text[..text.len() - 1], 1_000_000),
        'g' => (&text[..text.len() - 1], 1_000_000_000),
        'K' => (&text[..text.len() - 1], 1 << 10),
        'M' => (&text[..text.len() - 1], 1 << 20),
        'G' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    let value = number.parse::<f64>().ok()? * factor as f64;
    (value >= 0.0 && value.fract() == 0.0).then_some(value as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: OptionTable = OptionTable {
        aliases: &[("-ngl", "--n-gpu-layers"), ("--ngl", "--n-gpu-layers")],
        repeatable: &["--lora"],
        ..OptionTable::EMPTY
    };

    /// argparse-like: `_` for `-`, lists, switches, a positional model, abbreviations.
    const ARGPARSE: OptionTable = OptionTable {
        aliases: &[("-tp", "--tensor-parallel-size")],
        repeatable: &["--middleware"],
        switches: &["--enforce-eager"],
        negated_switches: true,
        lists: &["--served-model-name"],
        underscores: true,
        abbreviations: true,
        positional: Some("the server takes it for the model"),
        ..OptionTable::EMPTY
    };

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    fn argv(flags: &[&str]) -> Vec<String> {
        parse_options(&strings(flags), &TABLE, "f")
            .unwrap()
            .to_argv()
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
        let flags = strings(&["--metrics", "-ngl", "10", "--n-gpu-layers=33"]);
        let error = parse_options(&flags, &TABLE, "f").unwrap_err().to_string();
        assert!(
            error.contains("f[3]: `--n-gpu-layers=33` disagrees with `-ngl 10` at f[1]"),
            "{error}"
        );
        let switch_then_value = strings(&["--metrics", "--metrics=yes"]);
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
        let flags = strings(&["stray"]);
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
        let flags = strings(&["positional", "--x", "1"]);
        assert_eq!(ServerArgs::verbatim(&flags).to_argv(), flags);
    }

    #[test]
    fn lists_take_every_word_and_switches_none() {
        let flags = strings(&[
            "--served_model_name",
            "a",
            "b",
            "--enforce-eager",
            "--no-enable-prefix-caching",
            "-tp",
            "2",
            "--middleware",
            "m1",
            "--middleware",
            "m2",
        ]);
        let args = parse_options(&flags, &ARGPARSE, "f").unwrap();
        assert_eq!(
            args.to_argv(),
            strings(&[
                "--served-model-name",
                "a",
                "b",
                "--enforce-eager",
                "--no-enable-prefix-caching",
                "--tensor-parallel-size",
                "2",
                "--middleware",
                "m1",
                "--middleware",
                "m2",
            ])
        );
        assert_eq!(args.values("--served-model-name"), vec!["a", "b"]);
        // A list given twice with other words is one value given twice.
        let twice = strings(&["--served-model-name", "a", "--served-model-name", "a", "b"]);
        assert!(parse_options(&twice, &ARGPARSE, "f").is_err());
        // A word after a switch is a positional argument.
        let error = parse_options(&strings(&["--enforce-eager", "org/model"]), &ARGPARSE, "f")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "f[1]: `org/model` is a positional argument: the server takes it for the model"
            ),
            "{error}"
        );
    }

    #[test]
    fn owned_options_are_refused_unless_they_say_what_is_rendered() {
        let owned = [
            Owned {
                option: "--port",
                instead: "set the host port in provisioning.ports",
            },
            Owned {
                option: "--model",
                instead: "the provisioner sets the model; use provisioning.model.ref",
            },
        ];
        let rendered = [("--port", "8000".to_string())];
        let check = |flags: &[&str]| {
            let flags = strings(flags);
            let mut args = parse_options(&flags, &ARGPARSE, "f").unwrap();
            take_owned(&mut args, &flags, &ARGPARSE, "f", &owned, &rendered).map(|()| args)
        };
        assert_eq!(
            check(&["--port", "8000"]).unwrap().to_argv(),
            Vec::<String>::new()
        );
        let error = check(&["--enforce-eager", "--port=9000"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "f[1]: `--port=9000` contradicts the provisioner's --port 8000; set the host port in provisioning.ports"
            ),
            "{error}"
        );
        let error = check(&["--model", "x"]).unwrap_err().to_string();
        assert!(
            error.contains(
                "f[0]: `--model x`: the provisioner sets the model; use provisioning.model.ref"
            ),
            "{error}"
        );
        let error = check(&["--por", "9000"]).unwrap_err().to_string();
        assert!(
            error.contains("f[0]: `--por 9000`: the engine reads --por as --port"),
            "{error}"
        );
    }

    #[test]
    fn options_that_download_are_refused_unless_they_name_a_local_path() {
        let fetching = [
            Fetching {
                option: "--tokenizer",
                what: "a tokenizer",
                when: Fetches::UnlessPath,
            },
            Fetching {
                option: "--lora-modules",
                what: "LoRA adapters",
                when: Fetches::UnlessPathModules,
            },
            Fetching {
                option: "--speculative-config",
                what: "a draft model",
                when: Fetches::UnlessPathInJson("model"),
            },
            Fetching {
                option: "--lora-adapters",
                what: "LoRA adapters",
                when: Fetches::UnlessPathItems,
            },
        ];
        let table = OptionTable {
            lists: &["--lora-modules"],
            ..OptionTable::EMPTY
        };
        let check = |flags: &[&str]| {
            let flags = strings(flags);
            let args = parse_options(&flags, &table, "f").unwrap();
            refuse_fetching(&args, &flags, &table, "f", &fetching)
        };
        assert!(check(&["--tokenizer", "/models/tok"]).is_ok());
        let error = check(&["--tokenizer", "org/tok"]).unwrap_err().to_string();
        assert!(
            error.contains(
                "f[0]: `--tokenizer org/tok` makes the engine download a tokenizer itself"
            ),
            "{error}"
        );
        assert!(check(&["--lora-modules", "a=/l/a", r#"{"name":"b","path":"/l/b"}"#]).is_ok());
        assert!(check(&["--lora-modules", "a=/l/a", "b=org/b"]).is_err());
        assert!(check(&["--lora-modules", r#"{"name":"b","path":"org/b"}"#]).is_err());
        assert!(check(&["--speculative-config", r#"{"method":"ngram"}"#]).is_ok());
        assert!(check(&["--speculative-config", r#"{"model":"/m/draft"}"#]).is_ok());
        assert!(check(&["--speculative-config", r#"{"model":"org/draft"}"#]).is_err());
        assert!(check(&["--lora-adapters", "a=/l/a,b=/l/b"]).is_ok());
        assert!(check(&["--lora-adapters", "a=/l/a,org/b"]).is_err());
    }

    #[test]
    fn counts_with_suffixes() {
        assert!(same_count("4k", "4000"));
        assert!(same_count("4K", "4096"));
        assert!(same_count("4096", "4096"));
        assert!(!same_count("4k", "4096"));
        assert_eq!(count("1.5k"), Some(1500));
        assert_eq!(count("auto"), None);
    }

    #[test]
    fn attached_short_values() {
        let table = OptionTable {
            aliases: &[("-p", "--port")],
            attached_short_values: true,
            ..OptionTable::EMPTY
        };
        let flags = strings(&["-p9000"]);
        let args = parse_options(&flags, &table, "f").unwrap();
        assert_eq!(args.get("--port"), Some(&Some("9000".to_string())));
        assert_eq!(ServerArgs::position_in(&flags, &table, "--port"), Some(0));
    }
}
