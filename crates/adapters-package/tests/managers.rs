//! Each manager's argv, parsing and pin handling against a scripted Shell (dnf, paru and yay are
//! not installed here: these are their only tests; apt and pacman also run for real).

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use adapters_package::{
    Apt, AptOptions, Aur, Dnf, HostManagers, LockSettings, Pacman, PacmanOptions, Privilege,
};
use provisioner_core::Distro;
use provisioner_core::{CommandOutput, Engine, Error, ManagerKind, PackageManager, PackageRequest};
use support::{Recorder, ScriptedShell, fail, hint, ok};

fn pinned(name: &str, version: &str, repository: Option<&str>) -> PackageRequest {
    PackageRequest {
        name: name.parse().unwrap(),
        version: Some(version.parse().unwrap()),
        repository: repository.map(|r| r.parse().unwrap()),
    }
}

fn apt(shell: &Arc<ScriptedShell>, state: &Path, privilege: Privilege) -> Apt {
    Apt::new(
        shell.clone(),
        Arc::new(Recorder::default()),
        privilege,
        AptOptions {
            state_dir: state.to_path_buf(),
            // The host's lock files play no part here.
            locks: LockSettings {
                root: state.join("root"),
                ..LockSettings::default()
            },
        },
    )
}

/// Package managers inherit the base variables and theirs (apt's, sudo's), no build's and no
/// secret.
fn assert_package_env(calls: &[provisioner_core::CommandSpec]) {
    for command in calls {
        for name in [
            "PATH",
            "HOME",
            "https_proxy",
            "APT_CONFIG",
            "SUDO_PROMPT",
            "DNF_VAR_arch",
        ] {
            assert!(command.inherits(name), "{name}: {command:?}");
        }
        for name in [
            "AWS_SECRET_ACCESS_KEY",
            "HF_TOKEN",
            "GITHUB_TOKEN",
            "SOME_PASSWORD",
        ] {
            assert!(!command.inherits(name), "{name}: {command:?}");
        }
    }
}

fn package_error(error: &Error) -> (&str, &str, &str) {
    match error {
        Error::Package {
            manager,
            package,
            message,
            ..
        } => (manager, package, message),
        other => panic!("not a package error: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// apt

#[tokio::test]
async fn apt_installs_the_exact_pin_noninteractively_and_checks_it() {
    let shell = ScriptedShell::new();
    shell
        .always("apt-get install", ok(""))
        .always("dpkg-query -W", ok("ii |8064+dfsg-2\n"));
    let state = tempfile::tempdir().unwrap();
    let installed = apt(&shell, state.path(), Privilege::root())
        .install(&[pinned("llama.cpp-tools", "8064+dfsg-2", None)])
        .await
        .unwrap();
    assert_eq!(installed[0].version, "8064+dfsg-2");
    let calls = shell.calls();
    assert_eq!(calls.len(), 2, "{:?}", shell.lines());
    assert_eq!(calls[0].program, "apt-get");
    assert_eq!(
        calls[0].args,
        [
            "install",
            "-y",
            "--no-install-recommends",
            "--allow-downgrades",
            "-o",
            "DPkg::Lock::Timeout=300",
            "llama.cpp-tools=8064+dfsg-2"
        ]
    );
    assert_eq!(
        calls[0].env.get("DEBIAN_FRONTEND").map(String::as_str),
        Some("noninteractive")
    );
    assert_package_env(&calls);
    assert_eq!(calls[1].program, "dpkg-query");
    assert_eq!(
        calls[1].args,
        [
            "-W",
            "-f",
            "${db:Status-Abbrev}|${Version}\n",
            "llama.cpp-tools"
        ]
    );
}

#[tokio::test]
async fn apt_release_names_become_target_releases() {
    let shell = ScriptedShell::new();
    shell
        .always("apt-get install", ok(""))
        .always("dpkg-query -W", ok("ii |2.0\n"));
    let state = tempfile::tempdir().unwrap();
    apt(&shell, state.path(), Privilege::root())
        .install(&[pinned("x", "2.0", Some("bookworm-backports"))])
        .await
        .unwrap();
    let install = &shell.calls()[0];
    let at = install.args.iter().position(|a| a == "-t").unwrap();
    assert_eq!(install.args[at + 1], "bookworm-backports");
    assert_eq!(install.args.last().unwrap(), "x=2.0");
}

#[tokio::test]
async fn apt_source_lines_are_used_in_isolation() {
    let shell = ScriptedShell::new();
    shell
        .always("apt-get update", ok(""))
        .always("apt-get install", ok(""))
        .always("dpkg-query -W", ok("ii |1.0\n"));
    let state = tempfile::tempdir().unwrap();
    let line = "deb [trusted=yes] file:/srv/repo ./";
    let installed = apt(&shell, state.path(), Privilege::root())
        .install(&[pinned("x", "1.0", Some(line))])
        .await
        .unwrap();
    assert_eq!(installed[0].repository.as_deref(), Some(line));

    let id = &blake3::hash(line.as_bytes()).to_hex()[..8];
    let dir = state.path().join(id);
    assert_eq!(
        std::fs::read_to_string(dir.join("sources.list")).unwrap(),
        format!("{line}\n")
    );
    assert!(dir.join("lists/partial").is_dir());
    let isolation = [
        "-o".to_string(),
        format!(
            "Dir::Etc::SourceList={}",
            dir.join("sources.list").display()
        ),
        "-o".to_string(),
        "Dir::Etc::SourceParts=/nonexistent".to_string(),
        "-o".to_string(),
        format!("Dir::State::Lists={}", dir.join("lists").display()),
    ];
    let calls = shell.calls();
    assert_eq!(calls[0].args[0], "update", "{:?}", shell.lines());
    for call in &calls[..2] {
        assert!(
            call.args
                .windows(isolation.len())
                .any(|window| window == isolation),
            "{:?}",
            call.args
        );
    }
    assert_eq!(calls[1].args[0], "install");
}

#[tokio::test]
async fn apt_names_the_available_versions_when_the_pin_does_not_exist() {
    let shell = ScriptedShell::new();
    shell
        .always(
            "apt-get install",
            fail(100, "E: Version '9.9' for 'ep-test-hello' was not found\n"),
        )
        .always("apt-get update", ok(""))
        .always(
            "apt-cache madison",
            ok(
                "ep-test-hello |      1.1.0 | http://deb.example bookworm/main amd64 Packages\n\
                ep-test-hello |      1.0.0 | http://deb.example bookworm/main amd64 Packages\n",
            ),
        );
    let state = tempfile::tempdir().unwrap();
    let error = apt(&shell, state.path(), Privilege::root())
        .install(&[pinned("ep-test-hello", "9.9", None)])
        .await
        .unwrap_err();
    let (manager, package, message) = package_error(&error);
    assert_eq!((manager, package), ("apt", "ep-test-hello=9.9"));
    assert!(
        message.contains("version 9.9 was not found") && message.contains("1.1.0, 1.0.0"),
        "{message}"
    );
    assert_eq!(
        hint(&error),
        "set provisioning.package.version to one of: 1.1.0, 1.0.0"
    );
    // System sources: refreshed once, then retried once.
    assert_eq!(
        shell.matching("apt-get update").len(),
        1,
        "{:?}",
        shell.lines()
    );
    assert_eq!(shell.matching("apt-get install").len(), 2);
}

#[tokio::test]
async fn apt_says_when_no_repository_offers_the_package() {
    let shell = ScriptedShell::new();
    shell
        .on_path(&["sudo"])
        .always("sudo -n true", ok(""))
        .always(
            "apt-get install",
            fail(100, "E: Unable to locate package nosuch\n"),
        )
        .always("apt-get update", ok(""))
        .always("apt-cache madison", ok(""));
    let state = tempfile::tempdir().unwrap();
    let error = apt(&shell, state.path(), Privilege::user(false))
        .install(&[PackageRequest::latest("nosuch".parse().unwrap())])
        .await
        .unwrap_err();
    let (_, _, message) = package_error(&error);
    assert!(
        message.contains("no configured repository offers nosuch")
            && message.contains("apt-get said:\n  | E: Unable to locate package nosuch"),
        "{message}"
    );
    assert_eq!(hint(&error), "sudo apt-get update");
    assert_eq!(error.code().exit_code(), 13);
}

/// apt-get update fails (another apt holds the lists lock, the network is down): its own words
/// are the error, never "no repository offers it" with a hint to run the update that failed.
#[tokio::test]
async fn apt_shows_its_own_failure_when_reading_the_lists_again_fails() {
    let shell = ScriptedShell::new();
    let busy = "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 1234 (apt-get)\nE: Unable to lock directory /var/lib/apt/lists/\n";
    shell
        .always(
            "apt-get install",
            fail(100, "E: Unable to locate package llama.cpp-tools\n"),
        )
        .always("apt-cache madison", ok(""))
        .always("apt-get update", fail(100, busy));
    let state = tempfile::tempdir().unwrap();
    let error = apt(&shell, state.path(), Privilege::root())
        .install(&[pinned("llama.cpp-tools", "8064+dfsg-2", None)])
        .await
        .unwrap_err();
    let (manager, package, message) = package_error(&error);
    assert_eq!((manager, package), ("apt", "llama.cpp-tools=8064+dfsg-2"));
    assert!(
        message.contains("reading them again failed: `DEBIAN_FRONTEND=noninteractive apt-get update` failed (exit code 100)")
            && message.contains("It is held by process 1234 (apt-get)"),
        "{message}"
    );
    assert!(
        !message.contains("no configured repository offers"),
        "{message}"
    );
    assert_eq!(error.code().exit_code(), 13);

    // Any other failure of the install is apt's own, with its command.
    let shell = ScriptedShell::new();
    shell
        .always(
            "apt-get install",
            fail(100, "E: Sub-process /usr/bin/dpkg returned an error code (1)\n"),
        )
        .always("apt-cache madison", ok("llama.cpp-tools | 8064+dfsg-2 | http://deb.debian.org/debian sid/main amd64 Packages\n"));
    let error = apt(&shell, state.path(), Privilege::root())
        .install(&[pinned("llama.cpp-tools", "8064+dfsg-2", None)])
        .await
        .unwrap_err();
    let (_, _, message) = package_error(&error);
    assert!(
        message.starts_with("`DEBIAN_FRONTEND=noninteractive apt-get install")
            && message.contains("dpkg returned an error code (1)"),
        "{message}"
    );
    assert_eq!(error.code().exit_code(), 13);
}

#[tokio::test]
async fn apt_refuses_success_when_the_database_reports_another_version() {
    let shell = ScriptedShell::new();
    shell
        .always("apt-get install", ok(""))
        .always("dpkg-query -W", ok("ii |1.1.0\n"));
    let state = tempfile::tempdir().unwrap();
    let error = apt(&shell, state.path(), Privilege::root())
        .install(&[pinned("x", "1.0.0", None)])
        .await
        .unwrap_err();
    let (_, _, message) = package_error(&error);
    assert!(
        message.contains("asked 1.0.0, the package database reports 1.1.0"),
        "{message}"
    );
}

#[tokio::test]
async fn apt_query_installed_only_at_ii() {
    let shell = ScriptedShell::new();
    shell
        .once(
            "dpkg-query -W -f ${db:Status-Abbrev}|${Version}\n a",
            ok("ii |1:2.0-1\n"),
        )
        .once(
            "dpkg-query -W -f ${db:Status-Abbrev}|${Version}\n b",
            ok("rc |1.0\n"),
        )
        .once(
            "dpkg-query -W -f ${db:Status-Abbrev}|${Version}\n c",
            fail(1, "dpkg-query: no packages found matching c\n"),
        )
        .once(
            "dpkg-query -W -f ${db:Status-Abbrev}|${Version}\n d",
            fail(2, "dpkg-query: error: database is locked\n"),
        );
    let state = tempfile::tempdir().unwrap();
    let apt = apt(&shell, state.path(), Privilege::root());
    assert_eq!(
        apt.query(&"a".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .version,
        "1:2.0-1"
    );
    assert_eq!(apt.query(&"b".parse().unwrap()).await.unwrap(), None);
    assert_eq!(apt.query(&"c".parse().unwrap()).await.unwrap(), None);
    let error = apt.query(&"d".parse().unwrap()).await.unwrap_err();
    let (_, _, message) = package_error(&error);
    assert!(message.contains("database is locked"), "{message}");
    assert_eq!(error.code().exit_code(), 13);
}

/// A file list cut at the Shell's output cap is refused, never read as a package without its
/// server; the same for a cut version list.
#[tokio::test]
async fn a_cut_output_is_an_error_not_a_short_list() {
    let cut = |stdout: &str| CommandOutput {
        stdout_truncated: true,
        ..ok(stdout)
    };
    let shell = ScriptedShell::new();
    shell
        .always("dpkg-query -L", cut("/.\n/usr\n/usr/share/doc\n"))
        .always("apt-cache madison", cut(" x | 1.0 | file:/r ./ Packages\n"));
    let state = tempfile::tempdir().unwrap();
    let apt = apt(&shell, state.path(), Privilege::root());
    let error = apt.files(&"x".parse().unwrap()).await.unwrap_err();
    assert!(
        error.to_string().contains("dpkg-query -L x")
            && error.to_string().contains("the cut output is not used"),
        "{error}"
    );
    let error = apt.available(&pinned("x", "1.0", None)).await.unwrap_err();
    assert!(error.to_string().contains("apt-cache madison"), "{error}");
}

#[tokio::test]
async fn apt_files_and_remove() {
    let shell = ScriptedShell::new();
    shell
        .always(
            "dpkg-query -L",
            ok("/.\n/usr\n/usr/bin\n/usr/bin/x\ndiverted by y to: /usr/bin/x.real\n"),
        )
        .always("apt-get remove", ok(""));
    let state = tempfile::tempdir().unwrap();
    let apt = apt(&shell, state.path(), Privilege::root());
    let files = apt.files(&"x".parse().unwrap()).await.unwrap();
    assert_eq!(files.last().unwrap(), Path::new("/usr/bin/x"));
    assert_eq!(files.len(), 4);
    apt.remove(&"x".parse().unwrap()).await.unwrap();
    let remove = shell.calls().pop().unwrap();
    assert_eq!(
        remove.args[..4],
        ["remove", "-y", "-o", "DPkg::Lock::Timeout=300"]
    );
    assert_eq!(remove.args.last().unwrap(), "x");
    // No repository is needed to remove: an empty source list, not the system's lists.
    let empty = state.path().join("installed-only/sources.list");
    assert!(
        remove
            .args
            .contains(&format!("Dir::Etc::SourceList={}", empty.display()))
    );
    assert_eq!(std::fs::read_to_string(empty).unwrap(), "");
}

#[tokio::test]
async fn apt_install_command_is_exact_for_each_source() {
    let shell = ScriptedShell::new();
    let state = tempfile::tempdir().unwrap();
    let user = apt(&shell, state.path(), Privilege::user(false));
    assert_eq!(
        user.install_command(&[pinned("llama.cpp-tools", "1.0", None)])
            .await,
        "sudo apt-get install -y --allow-downgrades llama.cpp-tools=1.0"
    );
    assert_eq!(
        user.install_command(&[pinned("x", "1.0", Some("bookworm-backports"))])
            .await,
        "sudo apt-get install -y --allow-downgrades -t bookworm-backports x=1.0"
    );
    assert_eq!(
        user.install_command(&[pinned("x", "1.0", Some("deb [trusted=yes] file:/srv ./"))])
            .await,
        "echo 'deb [trusted=yes] file:/srv ./' | sudo tee /etc/apt/sources.list.d/engine-provisioner.list && sudo apt-get update && sudo apt-get install -y --allow-downgrades x=1.0"
    );
    let root = apt(&shell, state.path(), Privilege::root());
    assert_eq!(
        root.install_command(&[PackageRequest::latest("cmake".parse().unwrap())])
            .await,
        "apt-get install -y cmake"
    );
    assert!(shell.calls().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Names: hostile ones cannot be a PackageName, PackageVersion or PackageRepo at all (the config
// refuses them when it is read; see provisioner-core's names tests); odd valid ones stay whole.

#[tokio::test]
async fn an_odd_valid_name_is_one_argv_element() {
    let shell = ScriptedShell::new();
    shell
        .always("apt-get install", ok(""))
        .always("dpkg-query -W", ok("ii |1:2.0~rc1+dfsg-1\n"));
    let state = tempfile::tempdir().unwrap();
    apt(&shell, state.path(), Privilege::root())
        .install(&[pinned("lib.cpp++-x@y", "1:2.0~rc1+dfsg-1", None)])
        .await
        .unwrap();
    let install = &shell.calls()[0];
    assert_eq!(
        install.args.last().unwrap(),
        "lib.cpp++-x@y=1:2.0~rc1+dfsg-1"
    );
    assert_eq!(install.args.len(), 7, "{:?}", install.args);
}

// ---------------------------------------------------------------------------------------------
// pacman

fn pacman(shell: &Arc<ScriptedShell>, options: PacmanOptions) -> Pacman {
    Pacman::new(
        shell.clone(),
        Arc::new(Recorder::default()),
        Privilege::root(),
        options,
    )
}

#[tokio::test]
async fn pacman_installs_from_a_named_repository_when_it_holds_the_pin() {
    let shell = ScriptedShell::new();
    shell
        .always(
            "-Si extra/llama-cpp",
            ok("Repository      : extra\nName            : llama-cpp\nVersion         : 1:6000-1\n"),
        )
        .always("-S --noconfirm --needed", ok(""))
        .always("-Q llama-cpp", ok("llama-cpp 1:6000-1\n"));
    let state = tempfile::tempdir().unwrap();
    let options = PacmanOptions {
        root: Some(PathBuf::from("/alt")),
        dbpath: Some(PathBuf::from("/alt/var/lib/pacman")),
        config: Some(PathBuf::from("/alt/pacman.conf")),
        state_dir: state.path().to_path_buf(),
        ..PacmanOptions::default()
    };
    let installed = pacman(&shell, options)
        .install(&[pinned("llama-cpp", "1:6000-1", Some("extra"))])
        .await
        .unwrap();
    assert_eq!(installed[0].version, "1:6000-1");
    let calls = shell.calls();
    let install = calls
        .iter()
        .find(|c| c.args.contains(&"-S".to_string()))
        .unwrap();
    assert_eq!(install.program, "pacman");
    assert_eq!(
        install.args,
        [
            "--root",
            "/alt",
            "--dbpath",
            "/alt/var/lib/pacman",
            "--config",
            "/alt/pacman.conf",
            "-S",
            "--noconfirm",
            "--needed",
            "extra/llama-cpp"
        ]
    );
    assert_eq!(
        install.env.get("LC_ALL").map(String::as_str),
        Some("C"),
        "parsed output must not be localised"
    );
}

#[tokio::test]
async fn pacman_installs_an_older_pin_from_the_file_next_to_a_local_database() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("eptest.db"), "").unwrap();
    for file in [
        "ep-test-hello-1.0.0-1-x86_64.pkg.tar.zst",
        "ep-test-hello-1.1.0-1-x86_64.pkg.tar.zst",
        "ep-test-hello-extra-1.0.0-1-x86_64.pkg.tar.zst",
    ] {
        std::fs::write(repo.path().join(file), "").unwrap();
    }
    let base = repo.path().join("base.conf");
    std::fs::write(
        &base,
        "[options]\nRootDir = /alt\nSigLevel = Required\nArchitecture = x86_64\n[core]\nServer = https://x\n",
    )
    .unwrap();
    let url = format!("file://{}/eptest.db", repo.path().display());
    let shell = ScriptedShell::new();
    shell
        .always("-Sy --noconfirm", ok(""))
        .always(
            "-Si eptest/ep-test-hello",
            ok("Repository      : eptest\nVersion         : 1.1.0-1\n"),
        )
        .always("-U --noconfirm", ok(""))
        .always("-Q ep-test-hello", ok("ep-test-hello 1.0.0-1\n"));
    let state = tempfile::tempdir().unwrap();
    let manager = pacman(
        &shell,
        PacmanOptions {
            config: Some(base.clone()),
            state_dir: state.path().to_path_buf(),
            ..PacmanOptions::default()
        },
    );
    manager
        .install(&[pinned("ep-test-hello", "1.0.0-1", Some(&url))])
        .await
        .unwrap();
    let lines = shell.lines();
    assert!(lines[0].contains("-Sy --noconfirm"), "{lines:?}");
    let generated = {
        let args = &shell.calls()[0].args;
        let at = args.iter().position(|a| a == "--config").unwrap();
        PathBuf::from(&args[at + 1])
    };
    assert!(
        generated.starts_with(state.path()),
        "{}",
        generated.display()
    );
    let text = std::fs::read_to_string(&generated).unwrap();
    assert!(text.contains("RootDir = /alt\n"), "{text}");
    assert!(text.contains("Architecture = x86_64\n"), "{text}");
    assert!(
        text.contains("SigLevel = Never\n") && !text.contains("Required"),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "[eptest]\nServer = file://{}\n",
            repo.path().display()
        )),
        "{text}"
    );
    assert!(!text.contains("[core]"), "{text}");
    let install = shell
        .calls()
        .into_iter()
        .find(|c| c.args.contains(&"-U".to_string()))
        .unwrap();
    assert_eq!(
        install.args.last().unwrap(),
        &repo
            .path()
            .join("ep-test-hello-1.0.0-1-x86_64.pkg.tar.zst")
            .display()
            .to_string()
    );
    assert!(shell.matching("-S --noconfirm --needed").is_empty());

    // The repository's own version goes through -S from that repository.
    let shell2 = ScriptedShell::new();
    shell2
        .always("-Sy --noconfirm", ok(""))
        .always(
            "-Si eptest/ep-test-hello",
            ok("Repository      : eptest\nVersion         : 1.1.0-1\n"),
        )
        .always("-S --noconfirm --needed eptest/ep-test-hello", ok(""))
        .always("-Q ep-test-hello", ok("ep-test-hello 1.1.0-1\n"));
    pacman(
        &shell2,
        PacmanOptions {
            config: Some(base),
            state_dir: state.path().to_path_buf(),
            ..PacmanOptions::default()
        },
    )
    .install(&[pinned("ep-test-hello", "1.1.0-1", Some(&url))])
    .await
    .unwrap();
    assert!(shell2.matching("-U").is_empty(), "{:?}", shell2.lines());
}

#[tokio::test]
async fn pacman_points_at_the_archive_when_no_repository_or_cache_has_the_pin() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("var/cache/pacman/pkg");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("llama-cpp-5000-1-x86_64.pkg.tar.zst"), "").unwrap();
    let shell = ScriptedShell::new();
    shell.always(
        "-Si llama-cpp",
        ok("Repository      : extra\nVersion         : 6000-1\n"),
    );
    let manager = Pacman::new(
        shell.clone(),
        Arc::new(Recorder::default()),
        Privilege::user(false),
        PacmanOptions {
            root: Some(root.path().to_path_buf()),
            state_dir: root.path().join("state"),
            ..PacmanOptions::default()
        },
    );
    let error = manager
        .install(&[pinned("llama-cpp", "4000-1", None)])
        .await
        .unwrap_err();
    let (_, package, message) = package_error(&error);
    assert_eq!(package, "llama-cpp=4000-1");
    assert!(
        message.contains("version 4000-1 is not available") && message.contains("6000-1, 5000-1"),
        "{message}"
    );
    assert_eq!(
        hint(&error),
        format!(
            "sudo pacman --root {} -U https://archive.archlinux.org/packages/l/llama-cpp/llama-cpp-4000-1-x86_64.pkg.tar.zst",
            root.path().display()
        )
    );
    // A cached older version is installed with -U.
    shell
        .always("sudo -n true", ok(""))
        .always("-U --noconfirm", ok(""))
        .always("-Q llama-cpp", ok("llama-cpp 5000-1\n"));
    shell.on_path(&["sudo"]);
    manager
        .install(&[pinned("llama-cpp", "5000-1", None)])
        .await
        .unwrap();
    let install = shell.matching("-U --noconfirm");
    assert_eq!(install.len(), 1);
    assert!(
        install[0].starts_with("sudo -n pacman --root")
            && install[0].ends_with("llama-cpp-5000-1-x86_64.pkg.tar.zst"),
        "{install:?}"
    );
}

/// The hint is the command an install would run for that pin: `-S` when a repository holds
/// it, `-U` of the cached file for an older one, the archive's URL when nothing has it; `sudo`
/// only when not root. Reading what is offered runs no install.
#[tokio::test]
async fn pacman_install_command_is_what_the_install_would_run_for_the_pin() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("var/cache/pacman/pkg");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("llama-cpp-5000-1-x86_64.pkg.tar.zst"), "").unwrap();
    let shell = ScriptedShell::new();
    shell.always(
        "-Si llama-cpp",
        ok("Repository      : extra\nVersion         : 6000-1\n"),
    );
    let manager = |privilege: Privilege| {
        Pacman::new(
            shell.clone(),
            Arc::new(Recorder::default()),
            privilege,
            PacmanOptions {
                root: Some(root.path().to_path_buf()),
                state_dir: root.path().join("state"),
                ..PacmanOptions::default()
            },
        )
    };
    let user = manager(Privilege::user(false));
    let r = root.path().display();
    assert_eq!(
        user.install_command(&[pinned("llama-cpp", "6000-1", None)])
            .await,
        format!("sudo pacman --root {r} -S --needed extra/llama-cpp")
    );
    assert_eq!(
        user.install_command(&[pinned("llama-cpp", "5000-1", None)])
            .await,
        format!(
            "sudo pacman --root {r} -U {}",
            cache.join("llama-cpp-5000-1-x86_64.pkg.tar.zst").display()
        )
    );
    assert_eq!(
        user.install_command(&[pinned("llama-cpp", "4000-1", None)])
            .await,
        format!(
            "sudo pacman --root {r} -U https://archive.archlinux.org/packages/l/llama-cpp/llama-cpp-4000-1-x86_64.pkg.tar.zst"
        )
    );
    assert_eq!(
        manager(Privilege::root())
            .install_command(&[pinned("llama-cpp", "6000-1", None)])
            .await,
        format!("pacman --root {r} -S --needed extra/llama-cpp")
    );
    assert!(
        shell.matching("--noconfirm").is_empty(),
        "{:?}",
        shell.lines()
    );
}

#[tokio::test]
async fn pacman_query_files_and_remove_under_an_alternative_root() {
    let shell = ScriptedShell::new();
    shell
        .once("-Q x", ok("x 1.0-1\n"))
        .once("-Q y", fail(1, "error: package 'y' was not found\n"))
        .always(
            "-Ql x",
            ok("x /alt/usr/\nx /alt/usr/bin/x\nx /usr/bin/unprefixed\n"),
        )
        .always("-R --noconfirm x", ok(""));
    let state = tempfile::tempdir().unwrap();
    let manager = pacman(
        &shell,
        PacmanOptions {
            root: Some(PathBuf::from("/alt")),
            state_dir: state.path().to_path_buf(),
            ..PacmanOptions::default()
        },
    );
    assert_eq!(
        manager
            .query(&"x".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .version,
        "1.0-1"
    );
    assert_eq!(manager.query(&"y".parse().unwrap()).await.unwrap(), None);
    assert_eq!(
        manager.files(&"x".parse().unwrap()).await.unwrap(),
        [
            PathBuf::from("/alt/usr/"),
            PathBuf::from("/alt/usr/bin/x"),
            PathBuf::from("/alt/usr/bin/unprefixed")
        ]
    );
    manager.remove(&"x".parse().unwrap()).await.unwrap();
    assert_eq!(
        shell.calls().last().unwrap().args,
        ["--root", "/alt", "-R", "--noconfirm", "x"]
    );
}

// ---------------------------------------------------------------------------------------------
// dnf

fn dnf(shell: &Arc<ScriptedShell>) -> Dnf {
    Dnf::new(
        shell.clone(),
        Arc::new(Recorder::default()),
        Privilege::root(),
    )
}

#[tokio::test]
async fn dnf_pins_with_name_version_and_restricts_the_repository() {
    let shell = ScriptedShell::new();
    shell
        .always("dnf install", ok(""))
        .always("rpm -q", ok("(none):6000-1.fc42\n"));
    let installed = dnf(&shell)
        .install(&[pinned("llama-cpp", "6000-1.fc42", Some("updates"))])
        .await
        .unwrap();
    assert_eq!(installed[0].version, "6000-1.fc42");
    let calls = shell.calls();
    assert_package_env(&calls);
    assert!(!calls[0].inherits("CC"), "dnf builds nothing");
    assert_eq!(calls[0].program, "dnf");
    assert_eq!(
        calls[0].args,
        [
            "install",
            "-y",
            "--setopt=install_weak_deps=False",
            "--repo",
            "updates",
            "llama-cpp-6000-1.fc42"
        ]
    );
    assert_eq!(
        calls[1].args,
        [
            "-q",
            "--qf",
            "%{EPOCH}:%{VERSION}-%{RELEASE}\n",
            "llama-cpp"
        ]
    );
}

#[tokio::test]
async fn dnf_url_repositories_are_added_for_the_one_command() {
    let shell = ScriptedShell::new();
    shell
        .always("dnf install", ok(""))
        .always("rpm -q", ok("1:2.0-1\n"));
    dnf(&shell)
        .install(&[pinned("x", "1:2.0-1", Some("file:///srv/rpms"))])
        .await
        .unwrap();
    let args = &shell.calls()[0].args;
    assert_eq!(
        args[3..],
        [
            "--repofrompath=engine-provisioner,file:///srv/rpms",
            "--repo=engine-provisioner",
            "--setopt=engine-provisioner.gpgcheck=0",
            "x-1:2.0-1"
        ]
    );
    let shell = ScriptedShell::new();
    shell
        .always("dnf install", ok(""))
        .always("rpm -q", ok("(none):2.0-1\n"));
    dnf(&shell)
        .install(&[pinned("x", "2.0-1", Some("https://mirror.example/rpms"))])
        .await
        .unwrap();
    assert!(
        !shell.lines()[0].contains("gpgcheck"),
        "remote repositories keep their signature checks"
    );
}

#[tokio::test]
async fn dnf_names_available_versions_and_queries_precisely() {
    let shell = ScriptedShell::new();
    shell
        .always(
            "dnf install",
            fail(1, "No match for argument: x-9.9\nError: Unable to find a match: x-9.9\n"),
        )
        .always(
            "dnf list --showduplicates --available",
            ok("Available Packages\nx.x86_64   1.0-1.fc42   fedora\nx.x86_64   1.1-1.fc42   updates\n"),
        )
        .once("rpm -q --qf %{EPOCH}:%{VERSION}-%{RELEASE}\n y", fail(1, "package y is not installed\n"))
        .always("rpm -ql x", ok("/usr/bin/x\n/usr/share/doc/x\n"));
    let manager = dnf(&shell);
    let error = manager
        .install(&[pinned("x", "9.9", None)])
        .await
        .unwrap_err();
    let (_, _, message) = package_error(&error);
    assert!(
        message.contains("version 9.9 was not found") && message.contains("1.0-1.fc42, 1.1-1.fc42"),
        "{message}"
    );
    assert_eq!(manager.query(&"y".parse().unwrap()).await.unwrap(), None);
    assert_eq!(
        manager.files(&"x".parse().unwrap()).await.unwrap(),
        [
            PathBuf::from("/usr/bin/x"),
            PathBuf::from("/usr/share/doc/x")
        ]
    );
    assert_eq!(
        manager
            .install_command(&[pinned("llama-cpp", "6000-1.fc42", None)])
            .await,
        "dnf install -y --setopt=install_weak_deps=False llama-cpp-6000-1.fc42"
    );
}

// ---------------------------------------------------------------------------------------------
// AUR helpers

#[tokio::test]
async fn aur_helpers_refuse_root_before_running_anything() {
    let shell = ScriptedShell::new();
    shell.on_path(&["paru", "yay"]);
    for helper in [ManagerKind::Paru, ManagerKind::Yay] {
        let aur = Aur::new(
            helper,
            shell.clone(),
            Arc::new(Recorder::default()),
            Privilege::root(),
        )
        .unwrap();
        let error = aur
            .install(&[pinned("llama.cpp-cuda", "1-1", None)])
            .await
            .unwrap_err();
        let (manager, _, message) = package_error(&error);
        assert_eq!(manager, helper.as_str());
        assert!(message.contains("refuses to run as root"), "{message}");
    }
    assert!(shell.calls().is_empty());
    assert!(
        Aur::new(
            ManagerKind::Apt,
            shell.clone(),
            Arc::new(Recorder::default()),
            Privilege::root()
        )
        .is_err()
    );
}

#[tokio::test]
async fn aur_helpers_run_as_the_user_and_honour_only_the_current_pkgbuild() {
    for (helper, program) in [(ManagerKind::Paru, "paru"), (ManagerKind::Yay, "yay")] {
        let shell = ScriptedShell::new();
        shell
            .always(
                &format!("{program} -Si llama.cpp-cuda"),
                ok("Repository      : aur\nName            : llama.cpp-cuda\nVersion         : 6000-1\n"),
            )
            .always(&format!("{program} -S --noconfirm --needed"), ok(""))
            .always("pacman -Q llama.cpp-cuda", ok("llama.cpp-cuda 6000-1\n"));
        let progress = Arc::new(Recorder::default());
        let aur = Aur::new(
            helper,
            shell.clone(),
            progress.clone(),
            Privilege::user(true),
        )
        .unwrap();
        aur.install(&[pinned("llama.cpp-cuda", "6000-1", None)])
            .await
            .unwrap();
        let install = shell
            .calls()
            .into_iter()
            .find(|c| c.args.first().map(String::as_str) == Some("-S"))
            .unwrap();
        assert_eq!(
            install.program, program,
            "helpers run as the user, not via sudo"
        );
        assert_eq!(
            install.args,
            ["-S", "--noconfirm", "--needed", "llama.cpp-cuda"]
        );
        assert!(
            install.terminal,
            "the helper's own sudo may need the terminal"
        );
        // makepkg builds the package and clones its sources: a build's variables too.
        assert_package_env(&shell.calls());
        assert!(install.inherits("CC") && install.inherits("MAKEFLAGS"));
        assert!(install.inherits("PKGDEST") && install.inherits("GIT_SSH_COMMAND"));
        assert!(progress.notes().iter().any(|n| n.contains("sudo")));

        let error = aur
            .install(&[pinned("llama.cpp-cuda", "5000-1", None)])
            .await
            .unwrap_err();
        let (_, _, message) = package_error(&error);
        assert!(
            message.contains("current PKGBUILD only, which is version 6000-1")
                && message.contains("5000-1")
                && message.contains("pacman -U"),
            "{message}"
        );
        assert_eq!(hint(&error), "set provisioning.package.version to 6000-1");
        assert_eq!(
            shell.matching("-S --noconfirm").len(),
            1,
            "nothing built for a pin the AUR cannot give"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Selection

fn managers(shell: &Arc<ScriptedShell>, distro: Distro) -> HostManagers {
    HostManagers::new(
        shell.clone(),
        Arc::new(Recorder::default()),
        PathBuf::from("/tmp/unused-state"),
    )
    .with_distro(distro)
    .with_privilege(Privilege::user(false))
}

#[test]
fn each_family_gets_its_manager() {
    let shell = ScriptedShell::new();
    for (distro, kind) in [
        (Distro::Debian, ManagerKind::Apt),
        (Distro::Arch, ManagerKind::Pacman),
        (Distro::Fedora, ManagerKind::Dnf),
    ] {
        let managers = managers(&shell, distro);
        assert_eq!(
            managers
                .manager(None, None, Some("llama-cpp"), Some(Engine::Llamacpp))
                .unwrap()
                .kind(),
            kind
        );
        assert_eq!(managers.default_manager().unwrap().kind(), kind);
    }
    // The config's distro wins over the detected one; a forced manager over both.
    let debian = managers(&shell, Distro::Debian);
    assert_eq!(
        debian
            .manager(None, Some(Distro::Fedora), None, None)
            .unwrap()
            .kind(),
        ManagerKind::Dnf
    );
    assert_eq!(
        debian
            .manager(Some(ManagerKind::Pacman), None, None, None)
            .unwrap()
            .kind(),
        ManagerKind::Pacman
    );
}

#[test]
fn aur_only_packages_get_a_helper_paru_first() {
    let shell = ScriptedShell::new();
    let arch = managers(&shell, Distro::Arch);
    let error = arch
        .manager(None, None, Some("llama.cpp-cuda"), Some(Engine::Llamacpp))
        .err()
        .unwrap();
    let Error::MissingTool { tool, hint, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(tool, "paru");
    assert!(
        hint.as_deref()
            .unwrap()
            .contains("pacman -S --needed base-devel git")
    );
    shell.on_path(&["yay"]);
    assert_eq!(
        arch.manager(None, None, Some("llama.cpp-cuda"), Some(Engine::Llamacpp))
            .unwrap()
            .kind(),
        ManagerKind::Yay
    );
    shell.on_path(&["paru"]);
    assert_eq!(
        arch.manager(None, None, Some("llama.cpp-cuda"), Some(Engine::Llamacpp))
            .unwrap()
            .kind(),
        ManagerKind::Paru
    );
    // Official packages stay with pacman; forcing yay gets yay.
    assert_eq!(
        arch.manager(None, None, Some("llama-cpp"), Some(Engine::Llamacpp))
            .unwrap()
            .kind(),
        ManagerKind::Pacman
    );
    assert_eq!(
        arch.manager(Some(ManagerKind::Yay), None, Some("llama-cpp"), None)
            .unwrap()
            .kind(),
        ManagerKind::Yay
    );
}

#[test]
fn an_unknown_distribution_with_nothing_forced_is_a_clear_error() {
    let shell = ScriptedShell::new();
    let unknown = managers(&shell, Distro::Unknown);
    let error = unknown.manager(None, None, Some("x"), None).err().unwrap();
    let (_, _, message) = package_error(&error);
    assert!(message.contains("unknown distribution"), "{message}");
    let hint = hint(&error);
    assert!(
        hint.contains("provisioning.package.distro")
            && hint.contains("provisioning.package.manager"),
        "{hint}"
    );
    assert!(unknown.default_manager().is_none());
    assert_eq!(
        unknown
            .manager(Some(ManagerKind::Apt), None, Some("x"), None)
            .unwrap()
            .kind(),
        ManagerKind::Apt
    );
}
