//! Property tests (proptest) of everything that parses what a user writes: the configuration
//! (arbitrary text, and pools built from arbitrary field values), the numeric ranges, the model,
//! image and git references, and the CMake cache entries. Each must never panic, refuse with a
//! clean error, and, where a value has a text form, read that form back as the same value.
//!
//! Case counts are modest (256 to 1000 per property) so that the suite stays fast; raise them
//! with `PROPTEST_CASES=100000 cargo test -p provisioner-core --test properties` for a long run.

use std::collections::BTreeMap;

use proptest::prelude::*;
use provisioner_core::config::ranges;
use provisioner_core::{
    CacheEntries, CacheEntry, Config, Error, Format, GitRef, HfRef, ImageReference, ModelRef,
};

/// `n` cases (`PROPTEST_CASES` raises them), failures reported but not written into the source
/// tree.
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(n, |given: u32| given.max(n));
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A refusal must be one of the configuration errors, each problem with a path and a message.
fn assert_clean_config_error(error: &Error) {
    match error {
        Error::ConfigSyntax { origin, message } => {
            assert_eq!(origin, "prop.yaml");
            assert!(!message.is_empty());
        }
        Error::ConfigInvalid { errors } => {
            assert!(!errors.is_empty());
            for e in errors {
                assert!(!e.path.is_empty(), "{e}");
                assert!(!e.message.is_empty(), "{e}");
            }
        }
        other => panic!("not a configuration error: {other:?}"),
    }
    let text = error.to_string();
    assert!(!text.contains("panicked"), "{text}");
}

fn parse_yaml(text: &str) -> Result<Config, Error> {
    Config::parse(text, Format::Yaml, "prop.yaml")
}

// ---------------------------------------------------------------------------------------------
// Configuration text.

/// Lines that look like a pool file, with arbitrary values and indentation.
fn yamlish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        proptest::sample::select(vec![
            "pools",
            "- id",
            "id",
            "engine",
            "model",
            "devices",
            "ctx",
            "tensor_split",
            "provisioning",
            "mode",
            "ports",
            "env",
            "flags",
            "source",
            "ref",
            "repo",
            "build",
            "cmake_flags",
            "container",
            "image",
            "tag",
            "digest",
            "binary",
            "url",
            "checksum",
            "size",
            "package",
            "version",
            "catalog",
            "- ",
            "&a",
            "*a",
            "<<",
            "? ",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,12}",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u128>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "[ -~]{0,20}",
        any::<String>(),
        Just(String::new()),
        Just("[".to_string()),
        Just("{".to_string()),
        Just("null".to_string()),
        Just("~".to_string()),
        Just(".inf".to_string()),
        Just(".nan".to_string()),
        Just("llamacpp".to_string()),
        Just("binary".to_string()),
    ];
    proptest::collection::vec((0usize..8, key, value), 0..16).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(indent, key, value)| format!("{}{key}: {value}\n", " ".repeat(indent)))
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Pools built from arbitrary field values.

/// A YAML value as text: scalars of every kind, and small lists and mappings of them.
fn yaml_value() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i128>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        (0u32..100_000).prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("null".to_string()),
        // Any string, quoted as JSON (a YAML double-quoted scalar).
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        "[a-zA-Z0-9:/@._+~-]{0,24}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        proptest::sample::select(vec![
            "llamacpp",
            "vllm",
            "tgi",
            "triton",
            "source",
            "binary",
            "container",
            "package",
            "external",
            "podman",
            "docker",
            "cuda",
            "cpu",
            "file:/m.gguf",
            "hf:org/repo",
            "https://example.org/x.tar.gz",
            "-DGGML_CUDA=ON",
            "GPU-0a",
            "sha256:00",
        ])
        .prop_map(|s| serde_json::to_string(s).unwrap()),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            proptest::collection::btree_map("[a-zA-Z_]{1,8}", inner, 0..4).prop_map(|map| {
                let entries: Vec<String> = map
                    .into_iter()
                    .map(|(k, v)| format!("{}: {v}", serde_json::to_string(&k).unwrap()))
                    .collect();
                format!("{{{}}}", entries.join(", "))
            }),
        ]
    })
    .boxed()
}

/// A mapping node of YAML text being assembled.
#[derive(Debug, Default)]
struct Node(BTreeMap<String, Entry>);

#[derive(Debug)]
enum Entry {
    Leaf(String),
    Map(Node),
}

impl Node {
    fn insert(&mut self, path: &[&str], value: String) {
        match path {
            [] => {}
            [last] => {
                self.0.insert((*last).to_string(), Entry::Leaf(value));
            }
            [first, rest @ ..] => {
                let entry = self
                    .0
                    .entry((*first).to_string())
                    .or_insert_with(|| Entry::Map(Node::default()));
                if let Entry::Map(node) = entry {
                    node.insert(rest, value);
                }
            }
        }
    }

    fn render(&self) -> String {
        let entries: Vec<String> = self
            .0
            .iter()
            .map(|(key, entry)| {
                let value = match entry {
                    Entry::Leaf(text) => text.clone(),
                    Entry::Map(node) => node.render(),
                };
                format!("{key}: {value}")
            })
            .collect();
        format!("{{{}}}", entries.join(", "))
    }
}

/// Every field a pool can hold, as a path.
const FIELDS: &[&[&str]] = &[
    &["model"],
    &["devices"],
    &["ctx"],
    &["tensor_split"],
    &["quant"],
    &["preload"],
    &["timeouts"],
    &["queue"],
    &["provisioning"],
    &["provisioning", "mode"],
    &["provisioning", "allow_package_installs"],
    &["provisioning", "allow_binary_downloads"],
    &["provisioning", "allow_cpu_fallback"],
    &["provisioning", "ports"],
    &["provisioning", "env"],
    &["provisioning", "flags"],
    &["provisioning", "source", "repo"],
    &["provisioning", "source", "ref"],
    &["provisioning", "source", "submodules"],
    &["provisioning", "source", "build", "cmake_flags"],
    &["provisioning", "source", "build", "generator"],
    &["provisioning", "source", "build", "cache_dir"],
    &["provisioning", "container", "image"],
    &["provisioning", "container", "tag"],
    &["provisioning", "container", "digest"],
    &["provisioning", "container", "insecure"],
    &["provisioning", "container", "runtime"],
    &["provisioning", "container", "model_arg"],
    &["provisioning", "package", "name"],
    &["provisioning", "package", "version"],
    &["provisioning", "package", "repo"],
    &["provisioning", "package", "manager"],
    &["provisioning", "package", "distro"],
    &["provisioning", "package", "backend"],
    &["provisioning", "binary", "url"],
    &["provisioning", "binary", "checksum"],
    &["provisioning", "binary", "install_dir"],
    &["provisioning", "binary", "version"],
    &["provisioning", "binary", "executable"],
    &["provisioning", "binary", "size"],
    &["provisioning", "model", "ref"],
    &["provisioning", "model", "cache_dir"],
    &["provisioning", "model", "checksum"],
    &["provisioning", "model", "revision"],
    &["provisioning", "model", "include"],
    &["provisioning", "model", "exclude"],
    &["unknown_key"],
    &["provisioning", "cmake_flag"],
];

/// A pool file of one to three pools, each with an id, an engine and arbitrary other fields.
fn pool_file() -> impl Strategy<Value = String> {
    let pool = (
        prop_oneof![
            "[a-z][a-z0-9-]{0,10}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            yaml_value(),
        ],
        prop_oneof![
            proptest::sample::select(vec!["llamacpp", "vllm", "tgi", "triton"])
                .prop_map(str::to_string),
            yaml_value(),
        ],
        proptest::collection::vec((0..FIELDS.len(), yaml_value()), 0..8),
    )
        .prop_map(|(id, engine, fields)| {
            let mut node = Node::default();
            node.insert(&["id"], id);
            node.insert(&["engine"], engine);
            for (field, value) in fields {
                node.insert(FIELDS[field], value);
            }
            node.render()
        });
    proptest::collection::vec(pool, 1..4)
        .prop_map(|pools| format!("pools: [{}]\n", pools.join(", ")))
}

// ---------------------------------------------------------------------------------------------
// References.

/// Text that looks like a model reference, and arbitrary text.
fn model_ref_text() -> impl Strategy<Value = String> {
    let prefix = proptest::sample::select(vec![
        "", "file:", "file://", "file:///", "/", "hf:", "HF:", "https://", "http://", "s3://",
        "oci://", "ftp://", "./", "../",
    ]);
    prop_oneof![
        3 => (prefix, "[a-zA-Z0-9/@:. _%?#=&+~-]{0,40}").prop_map(|(p, s)| format!("{p}{s}")),
        1 => any::<String>(),
    ]
}

fn hf_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9._-]{0,8}(/[a-zA-Z0-9._-]{0,8}(@[a-zA-Z0-9./:_ -]{0,8})?(/[a-zA-Z0-9./_-]{0,16})?)?",
        1 => any::<String>(),
    ]
}

fn image_text() -> impl Strategy<Value = String> {
    let digest = prop_oneof![
        Just(String::new()),
        "[0-9a-f]{64}".prop_map(|hex| format!("@sha256:{hex}")),
        "@[a-z0-9:]{0,12}",
    ];
    prop_oneof![
        3 => (
            "(([a-z0-9.-]{1,10}|localhost|\\[[0-9a-f:]{1,8}\\])(:[0-9]{1,6})?/)?",
            "[a-zA-Z0-9._/-]{1,30}",
            "(:[a-zA-Z0-9._-]{0,10})?",
            digest,
        )
            .prop_map(|(registry, path, tag, digest)| format!("{registry}{path}{tag}{digest}")),
        1 => any::<String>(),
    ]
}

fn git_ref_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9./@{}~^:?*\\[\\\\ _-]{0,20}",
        1 => any::<String>(),
    ]
}

/// `-DNAME[:TYPE]=VALUE` with arbitrary parts, and arbitrary text.
fn cmake_flag_text() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        Just(String::new()),
        proptest::sample::select(vec![
            ":BOOL",
            ":bool",
            ":STRING",
            ":PATH",
            ":FILEPATH",
            ":INTERNAL",
            ":",
            ":Bool",
        ])
        .prop_map(str::to_string),
        ":[a-zA-Z:]{0,6}",
    ];
    let value = prop_oneof![
        proptest::sample::select(vec![
            "ON", "OFF", "on", "off", "TRUE", "false", "Yes", "no", "Y", "n", "1", "0", "2", "",
            "IGNORE", "NOTFOUND",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,12}",
        any::<String>(),
    ];
    prop_oneof![
        4 => ("(-D)?", "[A-Za-z0-9_.-]{0,10}", kind, "=?", value)
            .prop_map(|(d, name, kind, eq, value)| format!("{d}{name}{kind}{eq}{value}")),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(cases(1000))]

    /// Any text, read as YAML or TOML: a configuration or a configuration error, never a panic.
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        for format in [Format::Yaml, Format::Toml] {
            if let Err(error) = Config::parse(&text, format, "prop.yaml") {
                assert_clean_config_error(&error);
            }
        }
    }

    /// Text shaped like a pool file: the same.
    #[test]
    fn yamlish_text_never_panics(text in yamlish()) {
        if let Err(error) = parse_yaml(&text) {
            assert_clean_config_error(&error);
        }
    }

}

proptest! {
    #![proptest_config(cases(500))]

    /// Pools whose every field holds an arbitrary value: parsed, or every problem reported
    /// with a path under `pools[N]`; a parsed configuration serialises.
    #[test]
    fn pools_with_arbitrary_field_values_never_panic(text in pool_file()) {
        match parse_yaml(&text) {
            Ok(config) => {
                prop_assert!(!config.pools.is_empty());
                for (index, pool) in config.pools.iter().enumerate() {
                    prop_assert_eq!(pool.index, index);
                    if let Some(ctx) = pool.ctx {
                        prop_assert!(ranges::CTX.contains(&u64::from(ctx)));
                    }
                    prop_assert!(pool.provisioning.ports.iter().all(|p| ranges::PORT.contains(&u64::from(*p))));
                }
                prop_assert!(serde_json::to_string(&config).is_ok());
            }
            Err(error) => {
                assert_clean_config_error(&error);
                if let Error::ConfigInvalid { errors } = &error {
                    for e in errors {
                        prop_assert!(e.path.starts_with("pools"), "{}", e);
                    }
                }
            }
        }
    }

}

proptest! {
    #![proptest_config(cases(256))]

    /// Secrets in `env` never appear in an error, whatever else is wrong with the pool.
    #[test]
    fn env_values_never_appear_in_errors(
        secret in "sk-[a-zA-Z0-9]{12,24}",
        broken in proptest::sample::select(vec!["ctx: -1", "devices: [x y]", "engine: nope", "provisioning: {ports: [70000]}", "bogus: 1"]),
        newline in any::<bool>(),
    ) {
        let value = if newline { format!("a\\n{secret}") } else { secret.clone() };
        let text = format!(
            "pools:\n  - id: p\n    engine: llamacpp\n    model: m\n    {broken}\n  - id: q\n    engine: llamacpp\n    model: m\n    provisioning: {{env: {{T: \"{value}\", 1X: \"{secret}\"}}}}\n"
        );
        let error = parse_yaml(&text).expect_err("broken");
        assert_clean_config_error(&error);
        prop_assert!(!error.to_string().contains(&secret), "{}", error);
    }
}

/// Whether a number written in the file is a whole number in `range`.
fn whole_in(value: &str, range: &std::ops::RangeInclusive<u64>) -> bool {
    value.parse::<u64>().is_ok_and(|n| range.contains(&n))
}

/// Numbers as a file may write them: integers of any size and sign, and floats.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<i128>().prop_map(|n| n.to_string()),
        (0u64..70_000).prop_map(|n| n.to_string()),
        (16_777_000u64..16_777_300).prop_map(|n| n.to_string()),
        (68_719_476_000u64..68_719_477_000).prop_map(|n| n.to_string()),
        (-2.0e6f64..2.0e6).prop_map(|f| f.to_string()),
    ]
}

/// The errors at exactly `path`, or an empty list when the text parses.
fn errors_at(text: &str, path: &str) -> Vec<String> {
    match parse_yaml(text) {
        Ok(_) => Vec::new(),
        Err(Error::ConfigInvalid { errors }) => errors
            .iter()
            .filter(|e| e.path == path)
            .map(|e| e.message.clone())
            .collect(),
        Err(other) => panic!("{text}: {other}"),
    }
}

proptest! {
    #![proptest_config(cases(500))]

    /// Each numeric field is accepted exactly within its documented range; outside it the error
    /// names the field and the range.
    #[test]
    fn numeric_fields_are_checked_against_their_range(n in number_text()) {
        let head = "pools:\n  - id: p\n    engine: llamacpp\n    model: m.gguf\n";
        let cases: [(String, &str, bool, &str); 5] = [
            (format!("{head}    ctx: {n}\n"), "pools[0].ctx", whole_in(&n, &ranges::CTX), "from 1 to 16777216"),
            (format!("{head}    provisioning: {{ports: [{n}]}}\n"), "pools[0].provisioning.ports[0]", whole_in(&n, &ranges::PORT), "from 0 to 65535"),
            (format!("{head}    devices: [{n}]\n"), "pools[0].devices[0]", whole_in(&n, &ranges::DEVICE_INDEX), "from 0 to 1023"),
            (format!("{head}    provisioning: {{binary: {{size: {n}}}}}\n"), "pools[0].provisioning.binary.size", whole_in(&n, &ranges::BINARY_SIZE), "from 1 to 68719476736"),
            (
                format!("{head}    tensor_split: [{n}]\n"),
                "pools[0].tensor_split[0]",
                n.parse::<f64>().is_ok_and(|f| f == 0.0 || ranges::TENSOR_SPLIT.contains(&f)),
                "from 0.000001 to 1000000",
            ),
        ];
        for (text, path, ok, range) in cases {
            let errors = errors_at(&text, path);
            if ok {
                prop_assert!(errors.is_empty(), "{}: {:?}", text, errors);
            } else {
                prop_assert_eq!(errors.len(), 1, "{}", text);
                prop_assert!(errors[0].contains(range), "{}: {}", text, errors[0]);
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    /// Model references: never a panic; what parses reads back from its text form as itself
    /// (URLs show redacted, so for them the text form only has to parse again).
    #[test]
    fn model_refs_round_trip(text in model_ref_text()) {
        if let Ok(reference) = text.parse::<ModelRef>() {
            let shown = reference.to_string();
            let again = shown.parse::<ModelRef>();
            match &reference {
                ModelRef::Url(_) | ModelRef::S3(_) => {
                    prop_assert!(again.is_ok(), "{:?} shows as {:?}: {:?}", text, shown, again);
                }
                _ => prop_assert_eq!(again, Ok(reference.clone()), "{:?} shows as {:?}", text, shown),
            }
            let _ = (reference.scheme(), reference.is_local());
        }
    }

    /// Hugging Face references: never a panic, and a parsed one reads back as itself.
    #[test]
    fn hf_refs_round_trip(text in hf_text()) {
        if let Ok(hf) = text.parse::<HfRef>() {
            prop_assert!(hf.path.as_deref().is_none_or(|p| !p.split('/').any(|c| c == ".." || c.is_empty())));
            let shown = ModelRef::HuggingFace(hf.clone()).to_string();
            prop_assert_eq!(shown.parse::<ModelRef>(), Ok(ModelRef::HuggingFace(hf)), "{:?}", text);
        }
    }

    /// Image references: never a panic, and the normalised form reads back as itself.
    #[test]
    fn image_references_round_trip(text in image_text()) {
        if let Ok(image) = text.parse::<ImageReference>() {
            let shown = image.to_string();
            prop_assert_eq!(shown.parse::<ImageReference>(), Ok(image.clone()), "{:?}", text);
            prop_assert!(!image.registry().is_empty() && !image.repository().is_empty());
        }
    }

    /// Git refs: never a panic; an accepted ref is never an option or a revision expression.
    #[test]
    fn git_refs_round_trip(text in git_ref_text()) {
        if let Ok(reference) = text.parse::<GitRef>() {
            prop_assert_eq!(reference.to_string(), text.clone());
            prop_assert!(!text.starts_with('-'));
            prop_assert!(!text.contains("..") && !text.contains("@{"), "{:?}", text);
        }
    }

    /// One CMake cache entry: never a panic; its flag reads back as itself; the boolean
    /// normalisation is idempotent and keeps name and type.
    #[test]
    fn cmake_entries_round_trip(flag in cmake_flag_text()) {
        if let Ok(entry) = flag.parse::<CacheEntry>() {
            prop_assert_eq!(entry.to_flag().parse::<CacheEntry>(), Ok(entry.clone()));
            let boolean = entry.as_boolean_option();
            prop_assert_eq!(boolean.as_boolean_option(), boolean.clone());
            prop_assert_eq!(&boolean.name, &entry.name);
            prop_assert_eq!(&boolean.kind, &entry.kind);
            prop_assert_eq!(boolean.is_on(), entry.is_on());
            prop_assert_eq!(boolean.to_flag().parse::<CacheEntry>(), Ok(boolean));
        }
    }

    /// A list of entries: normalising is idempotent (the flags of a normalised set parse to the
    /// same set), sorted by name, one entry per name, the last one given winning.
    #[test]
    fn cmake_entry_lists_normalise_idempotently(flags in proptest::collection::vec(cmake_flag_text(), 0..8)) {
        if let Ok(entries) = CacheEntries::parse(flags.iter().map(String::as_str)) {
            let normalised = entries.to_flags();
            let again = CacheEntries::parse(normalised.iter().map(String::as_str));
            prop_assert_eq!(again.as_ref(), Ok(&entries));
            let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(names, sorted);
            for entry in entries.iter() {
                let last = flags
                    .iter()
                    .rev()
                    .filter_map(|f| f.parse::<CacheEntry>().ok())
                    .find(|e| e.name == entry.name);
                prop_assert_eq!(last.as_ref(), Some(entry));
            }
        } else {
            prop_assert!(flags.iter().any(|f| f.parse::<CacheEntry>().is_err()));
        }
    }
}
