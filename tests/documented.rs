//! What the README promises and the program does, checked against each other.

use std::path::PathBuf;

use provisioner_core::{Error, ErrorCode, FieldError};
use tests::repo_root;

/// One error of every variant, with the exit code the README promises for it. The `match` has
/// no catch-all arm, so a new variant does not compile until it is listed here.
fn every_error() -> Vec<(Error, i32)> {
    let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
    let errors = vec![
        (
            Error::ConfigUnreadable {
                path: PathBuf::from("/x.yaml"),
                source: io(),
            },
            3,
        ),
        (
            Error::ConfigSyntax {
                origin: "x".into(),
                message: "m".into(),
            },
            3,
        ),
        (
            Error::ConfigInvalid {
                errors: vec![FieldError::new("pools[0].id", "m")],
            },
            3,
        ),
        (
            Error::UnknownPool {
                id: "p".into(),
                known: vec![],
            },
            3,
        ),
        (Error::AmbiguousPool { known: vec![] }, 3),
        (
            Error::UnsupportedMode {
                engine: "vllm".into(),
                mode: "binary".into(),
                supported: vec![],
                hint: None,
            },
            4,
        ),
        (
            Error::ExternalPool {
                pool: "p".into(),
                action: "up".into(),
                endpoint: "http://127.0.0.1:8080".into(),
                hint: None,
            },
            4,
        ),
        (
            Error::PortUnavailable {
                port: "x".into(),
                hint: None,
            },
            4,
        ),
        (
            Error::MissingTool {
                tool: "cmake".into(),
                purpose: "p".into(),
                searched: vec![],
                hint: None,
            },
            5,
        ),
        (
            Error::MissingSetup {
                what: "a CDI spec".into(),
                purpose: "p".into(),
                hint: None,
            },
            5,
        ),
        (
            Error::CommandFailed {
                command: "c".into(),
                status: "s".into(),
                tail: String::new(),
                log: None,
                hint: None,
            },
            7,
        ),
        (
            Error::Spawn {
                program: "p".into(),
                source: io(),
            },
            7,
        ),
        (
            Error::Source {
                repo: "r".into(),
                reference: "b1".into(),
                message: "m".into(),
                hint: None,
            },
            6,
        ),
        (
            Error::Download {
                url: "u".into(),
                message: "m".into(),
                hint: None,
            },
            6,
        ),
        (
            Error::HostileArchive {
                archive: "a".into(),
                message: "m".into(),
            },
            6,
        ),
        (
            Error::BuildCheck {
                message: "m".into(),
                hint: None,
            },
            7,
        ),
        (
            Error::Model {
                reference: "r".into(),
                message: "m".into(),
                hint: None,
            },
            8,
        ),
        (
            Error::PolicyDenied {
                action: "a".into(),
                hint: None,
            },
            9,
        ),
        (
            Error::Package {
                manager: "apt".into(),
                package: "p".into(),
                message: "m".into(),
                hint: None,
            },
            13,
        ),
        (
            Error::Io {
                operation: "read".into(),
                path: PathBuf::from("/x"),
                source: io(),
            },
            10,
        ),
        (
            Error::Engine {
                pool: "p".into(),
                message: "m".into(),
                hint: None,
            },
            11,
        ),
        (
            Error::AlreadyRunning {
                pool: "p".into(),
                pid: 1,
                log: PathBuf::from("/x.log"),
                config: None,
                hint: None,
            },
            14,
        ),
        (
            Error::PortHeld {
                pool: "p".into(),
                port: 8080,
                holder: "q".into(),
                pid: 1,
                config: Some(PathBuf::from("/q.yaml")),
                hint: None,
            },
            14,
        ),
        (Error::Cancelled, 130),
    ];
    for (error, _) in &errors {
        match error {
            Error::ConfigUnreadable { .. }
            | Error::ConfigSyntax { .. }
            | Error::ConfigInvalid { .. }
            | Error::UnknownPool { .. }
            | Error::AmbiguousPool { .. }
            | Error::UnsupportedMode { .. }
            | Error::ExternalPool { .. }
            | Error::MissingTool { .. }
            | Error::MissingSetup { .. }
            | Error::CommandFailed { .. }
            | Error::Spawn { .. }
            | Error::Source { .. }
            | Error::Download { .. }
            | Error::HostileArchive { .. }
            | Error::BuildCheck { .. }
            | Error::Model { .. }
            | Error::PolicyDenied { .. }
            | Error::Package { .. }
            | Error::Io { .. }
            | Error::Engine { .. }
            | Error::AlreadyRunning { .. }
            | Error::PortHeld { .. }
            | Error::PortUnavailable { .. }
            | Error::Cancelled => {}
        }
    }
    errors
}

#[test]
fn every_error_has_the_exit_code_the_readme_promises() {
    for (error, expected) in every_error() {
        assert_eq!(error.code().exit_code(), expected, "{error:?}");
    }
    // Every class is used by some variant.
    for code in ErrorCode::ALL {
        assert!(
            every_error().iter().any(|(error, _)| error.code() == code),
            "{code:?} has no variant"
        );
    }
}

/// The rows of the README's exit-code table.
fn readme_table() -> Vec<(i32, String)> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme
        .find("| exit | meaning |")
        .expect("README.md has an exit-code table");
    readme[start..]
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
            (
                cells[0].trim().parse().expect("an exit code"),
                cells[1].trim().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_readme_table_is_every_exit_code_with_its_meaning() {
    let mut expected: Vec<(i32, String)> = cli::exit::TABLE
        .iter()
        .map(|(code, meaning)| (i32::from(*code), meaning.to_string()))
        .chain(
            ErrorCode::ALL
                .iter()
                .map(|code| (code.exit_code(), code.meaning().to_string())),
        )
        .collect();
    expected.sort();
    assert_eq!(readme_table(), expected);
}
