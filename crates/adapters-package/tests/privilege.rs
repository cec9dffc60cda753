//! The privilege rules: root runs directly, users go through `sudo -n`, a password prompt only
//! with a terminal (and a note first), otherwise an error carrying the exact command.

mod support;

use std::sync::Arc;

use adapters_package::{Privilege, RootRunner, RootTask};
use provisioner_core::{CommandSpec, Error, ManagerKind};
use support::{Recorder, ScriptedShell, fail, ok};

fn install() -> CommandSpec {
    CommandSpec::new("apt-get", ["install", "-y", "llama.cpp-tools=1.0"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C")
}

const TASK: RootTask<'static> = RootTask {
    manager: ManagerKind::Apt,
    package: "llama.cpp-tools=1.0",
    action: "installing llama.cpp-tools=1.0",
};

fn runner(
    shell: &Arc<ScriptedShell>,
    progress: &Arc<Recorder>,
    privilege: Privilege,
) -> RootRunner {
    RootRunner::new(shell.clone(), progress.clone(), privilege)
}

#[tokio::test]
async fn root_runs_the_command_directly() {
    let shell = ScriptedShell::new();
    shell.always("apt-get install", ok(""));
    let progress = Arc::new(Recorder::default());
    let output = runner(&shell, &progress, Privilege::root())
        .run(&install(), &TASK, &[])
        .await
        .unwrap();
    assert!(output.success());
    let calls = shell.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0], install());
}

#[tokio::test]
async fn a_user_goes_through_sudo_n_with_the_environment_as_arguments() {
    let shell = ScriptedShell::new();
    shell.on_path(&["sudo"]).always("sudo -n", ok(""));
    let progress = Arc::new(Recorder::default());
    runner(&shell, &progress, Privilege::user(false))
        .run(&install(), &TASK, &[])
        .await
        .unwrap();
    let calls = shell.calls();
    assert_eq!(calls.len(), 2, "{:?}", shell.lines());
    // First the question: can sudo run anything without a prompt?
    assert_eq!(calls[0].program, "sudo");
    assert_eq!(calls[0].args, ["-n", "true"]);
    assert_eq!(calls[1].program, "sudo");
    assert_eq!(
        calls[1].args,
        [
            "-n",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "llama.cpp-tools=1.0"
        ]
    );
    assert!(!calls[1].terminal);
    // Never silently: the note says what runs as root.
    let notes = progress.notes();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains(
            "sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y llama.cpp-tools=1.0"
        ),
        "{notes:?}"
    );
}

#[tokio::test]
async fn a_nopasswd_rule_for_the_command_alone_is_found_with_sudo_l() {
    let shell = ScriptedShell::new();
    shell
        .on_path(&["sudo"])
        .once("sudo -n true", fail(1, "sudo: a password is required\n"))
        .once(
            "sudo -n -l apt-get install",
            ok("/usr/bin/apt-get install -y llama.cpp-tools=1.0\n"),
        )
        .once("sudo -n DEBIAN_FRONTEND", ok("done"));
    let progress = Arc::new(Recorder::default());
    let output = runner(&shell, &progress, Privilege::user(false))
        .run(&install(), &TASK, &[])
        .await
        .unwrap();
    assert!(output.success());
    let calls = shell.calls();
    assert_eq!(calls.len(), 3, "{:?}", shell.lines());
    // The policy is asked about the command itself; the variables are not part of it.
    assert_eq!(
        calls[1].args,
        [
            "-n",
            "-l",
            "apt-get",
            "install",
            "-y",
            "llama.cpp-tools=1.0"
        ]
    );
    assert!(!calls[2].terminal);
}

#[tokio::test]
async fn a_password_with_a_terminal_runs_interactive_sudo_after_a_note() {
    let shell = ScriptedShell::new();
    shell
        .on_path(&["sudo"])
        .times("sudo -n", 2, fail(1, "sudo: a password is required\n"))
        .once("sudo DEBIAN_FRONTEND", ok("done"));
    let progress = Arc::new(Recorder::default());
    let output = runner(&shell, &progress, Privilege::user(true))
        .run(&install(), &TASK, &[])
        .await
        .unwrap();
    assert!(output.success());
    let calls = shell.calls();
    assert_eq!(calls.len(), 3, "{:?}", shell.lines());
    assert_eq!(calls[2].program, "sudo");
    assert_eq!(
        calls[2].args,
        [
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "llama.cpp-tools=1.0"
        ]
    );
    assert!(calls[2].terminal, "interactive sudo must own the terminal");
    // sudo's questions get how sudo asks (SUDO_PROMPT, SUDO_ASKPASS), never a secret.
    for probe in &calls[..2] {
        assert!(probe.inherits("SUDO_PROMPT") && probe.inherits("SUDO_ASKPASS"));
        assert!(probe.inherits("TERM") && !probe.inherits("AWS_SECRET_ACCESS_KEY"));
    }
    let notes = progress.notes();
    let last = notes.last().unwrap();
    assert!(
        last.contains("installing llama.cpp-tools=1.0 needs root")
            && last.contains(
                "`sudo DEBIAN_FRONTEND=noninteractive apt-get install -y llama.cpp-tools=1.0`"
            )
            && last.contains("password"),
        "{notes:?}"
    );
}

#[tokio::test]
async fn a_password_without_a_terminal_is_an_error_with_sudos_words_and_the_exact_command() {
    let shell = ScriptedShell::new();
    shell.on_path(&["sudo"]).always(
        "sudo -n",
        fail(1, "sudo: interactive authentication is required\n"),
    );
    let progress = Arc::new(Recorder::default());
    let then = CommandSpec::new("apt-get", ["install", "-y", "x"]);
    let error = runner(&shell, &progress, Privilege::user(false))
        .run(&install(), &TASK, &[&then])
        .await
        .unwrap_err();
    let Error::Package {
        manager,
        package,
        message,
        hint,
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(manager, "apt");
    assert_eq!(package, "llama.cpp-tools=1.0");
    assert!(
        message.contains("NOPASSWD")
            && message.contains("as root")
            && message.contains("password")
            && message.contains("sudo said: \"sudo: interactive authentication is required\""),
        "{message}"
    );
    assert_eq!(
        hint.as_deref(),
        Some(
            "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y llama.cpp-tools=1.0 && sudo apt-get install -y x"
        )
    );
    assert_eq!(error.code().exit_code(), 13);
    assert_eq!(
        shell.lines(),
        [
            "sudo -n true",
            "sudo -n -l apt-get install -y llama.cpp-tools=1.0"
        ],
        "no interactive sudo without a terminal"
    );
}

#[tokio::test]
async fn no_sudo_is_an_error_naming_the_command_to_run_as_root() {
    let shell = ScriptedShell::new();
    let progress = Arc::new(Recorder::default());
    let error = runner(&shell, &progress, Privilege::user(true))
        .run(&install(), &TASK, &[])
        .await
        .unwrap_err();
    let Error::Package { message, hint, .. } = &error else {
        panic!("{error:?}");
    };
    assert!(
        message.contains("needs root and sudo is not installed"),
        "{message}"
    );
    assert_eq!(
        hint.as_deref(),
        Some("DEBIAN_FRONTEND=noninteractive apt-get install -y llama.cpp-tools=1.0")
    );
    assert!(shell.calls().is_empty());
}

#[tokio::test]
async fn the_commands_own_failure_through_sudo_is_returned_as_output() {
    let shell = ScriptedShell::new();
    shell
        .on_path(&["sudo"])
        .once("sudo -n true", ok(""))
        .always("sudo -n", fail(100, "E: Unable to locate package x\n"));
    let progress = Arc::new(Recorder::default());
    let output = runner(&shell, &progress, Privilege::user(true))
        .run(&install(), &TASK, &[])
        .await
        .unwrap();
    assert_eq!(output.code, Some(100));
    assert_eq!(
        shell.calls().len(),
        2,
        "no password prompt for a failed command"
    );
}

#[tokio::test]
async fn a_refusal_is_sudos_own_words_with_or_without_a_terminal() {
    let refusal = "sudo: alice is not in the sudoers file.  This incident will be reported.\n";
    // Without a terminal: the error quotes sudo.
    let shell = ScriptedShell::new();
    shell.on_path(&["sudo"]).always("sudo -n", fail(1, refusal));
    let progress = Arc::new(Recorder::default());
    let error = runner(&shell, &progress, Privilege::user(false))
        .run(&install(), &TASK, &[])
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("alice is not in the sudoers file"),
        "{error}"
    );
    // With one: interactive sudo says it itself, and its output is the caller's to report.
    let shell = ScriptedShell::new();
    shell
        .on_path(&["sudo"])
        .always("sudo -n", fail(1, "sudo: a password is required\n"))
        .once("sudo DEBIAN_FRONTEND", fail(1, refusal));
    let output = runner(&shell, &progress, Privilege::user(true))
        .run(&install(), &TASK, &[])
        .await
        .unwrap();
    assert_eq!(output.code, Some(1));
    assert!(output.tail.contains("not in the sudoers file"));
}

#[test]
fn aur_helpers_are_refused_as_root_only() {
    assert!(
        adapters_package::refuse_root_for_aur(Privilege::user(false), ManagerKind::Paru, "x")
            .is_ok()
    );
    let error = adapters_package::refuse_root_for_aur(Privilege::root(), ManagerKind::Paru, "x=1")
        .unwrap_err();
    assert!(
        error.to_string().contains("refuses to run as root"),
        "{error}"
    );
    assert_eq!(error.hint(), Some("paru -S --needed x"));
}
