//! The privilege step against both sudo implementations a host may have as `sudo`: sudo.ws
//! ("a password is required") and sudo-rs, which Ubuntu ships as `sudo` ("interactive
//! authentication is required"). Each is a fake `sudo` script first on PATH that behaves and
//! words its messages like the real one for a user with a NOPASSWD rule, a user whose rule
//! needs a password (no cached credential), and a user sudo refuses; `apt-get`, `apt-cache` and
//! `dpkg-query` are fakes too. The install runs through the real `Apt` adapter and the host
//! Shell; the paths, with and without a terminal, must not depend on the implementation.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use adapters_package::{Apt, AptOptions, LockSettings, Privilege};
use provisioner_core::{Error, PackageManager, PackageRequest};
use support::{FakeBin, Recorder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sudo {
    /// sudo.ws (the classic sudo).
    Ws,
    /// sudo-rs.
    Rs,
}

impl Sudo {
    /// What it says when it would have to ask and `-n` forbids asking.
    fn needs_password(self) -> &'static str {
        match self {
            Sudo::Ws => "sudo: a password is required",
            Sudo::Rs => "sudo: interactive authentication is required",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// `alice ALL=(ALL) NOPASSWD: ALL`.
    NoPassword,
    /// `alice ALL=(ALL) ALL`, no cached credential: asks on the terminal (where the test's user
    /// types the password).
    Password,
    /// No rule for alice.
    Refused,
}

/// The fake `sudo`: logs its arguments, answers `-n`/`-l` like `implementation` under `rule`,
/// and runs the command (`VAR=value` words through env) when it may.
fn sudo_script(implementation: Sudo, rule: Rule, log: &Path) -> String {
    let parse = format!(
        r#"echo "sudo $*" >> '{log}'
n=0; l=0
while [ $# -gt 0 ]; do
  case "$1" in -n) n=1; shift ;; -l) l=1; shift ;; *) break ;; esac
done
"#,
        log = log.display()
    );
    let run = r#"if [ $l = 1 ]; then echo "/usr/bin/$1 $*" | cut -d' ' -f1,3-; exit 0; fi
exec env "$@"
"#;
    let decide = match (implementation, rule) {
        (_, Rule::NoPassword) => String::new(),
        (_, Rule::Password) => format!(
            "if [ $n = 1 ]; then echo '{}' >&2; exit 1; fi\n",
            implementation.needs_password()
        ),
        // sudo.ws asks for the password before it says no.
        (Sudo::Ws, Rule::Refused) => format!(
            "if [ $n = 1 ]; then echo '{}' >&2; exit 1; fi\necho \"Sorry, user alice is not allowed to execute '$*' as root on testhost.\" >&2; exit 1\n",
            Sudo::Ws.needs_password()
        ),
        // sudo-rs says no before it authenticates.
        (Sudo::Rs, Rule::Refused) => {
            "echo \"sudo: I'm sorry alice. I'm afraid I can't do that\" >&2; exit 1\n".to_string()
        }
    };
    format!("{parse}{decide}{run}")
}

struct Host {
    dir: tempfile::TempDir,
    progress: Arc<Recorder>,
}

impl Host {
    fn new(implementation: Sudo, rule: Rule) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let host = Host {
            dir,
            progress: Arc::new(Recorder::default()),
        };
        let bin = host.bin();
        let log = host.log();
        FakeBin::script(&bin, "sudo", &sudo_script(implementation, rule, &log));
        FakeBin::script(
            &bin,
            "apt-get",
            &format!("echo \"apt-get $*\" >> '{}'\n", log.display()),
        );
        FakeBin::script(&bin, "dpkg-query", "echo 'ii |1.0'\n");
        FakeBin::script(
            &bin,
            "apt-cache",
            "echo 'x | 1.0 | file:/srv/repo ./ Packages'\n",
        );
        host
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }

    /// What the fakes were asked to do, one line each.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn apt(&self, terminal: bool) -> Apt {
        Apt::new(
            FakeBin::new(&self.bin()),
            self.progress.clone(),
            Privilege::user(terminal),
            AptOptions {
                state_dir: self.dir.path().join("state"),
                locks: LockSettings {
                    root: self.dir.path().join("root"),
                    ..LockSettings::default()
                },
            },
        )
    }

    async fn install(&self, terminal: bool) -> Result<(), Error> {
        let request = PackageRequest {
            name: "x".parse().unwrap(),
            version: Some("1.0".parse().unwrap()),
            repository: None,
        };
        self.apt(terminal)
            .install(&[request])
            .await
            .map(|installed| assert_eq!(installed[0].version, "1.0"))
    }

    fn apt_ran(&self) -> bool {
        self.calls()
            .iter()
            .any(|call| call.starts_with("apt-get install"))
    }
}

const INSTALL: &str = "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends --allow-downgrades -o DPkg::Lock::Timeout=300 x=1.0";

#[tokio::test]
async fn a_nopasswd_rule_runs_sudo_n_with_either_sudo() {
    for implementation in [Sudo::Ws, Sudo::Rs] {
        for terminal in [false, true] {
            let host = Host::new(implementation, Rule::NoPassword);
            host.install(terminal).await.unwrap();
            assert_eq!(
                host.calls(),
                [
                    "sudo -n true".to_string(),
                    format!("sudo -n {INSTALL}"),
                    format!("apt-get {}", INSTALL.split_once(" apt-get ").unwrap().1),
                ],
                "{implementation:?}, terminal {terminal}"
            );
        }
    }
}

#[tokio::test]
async fn a_password_without_a_terminal_fails_with_sudos_words_and_the_command_with_either_sudo() {
    for implementation in [Sudo::Ws, Sudo::Rs] {
        let host = Host::new(implementation, Rule::Password);
        let error = host.install(false).await.unwrap_err();
        let Error::Package { message, hint, .. } = &error else {
            panic!("{implementation:?}: {error:?}");
        };
        assert!(
            message.contains("sudo cannot run it without asking")
                && message.contains(implementation.needs_password())
                && message.contains("no terminal"),
            "{implementation:?}: {message}"
        );
        assert_eq!(
            hint.as_deref(),
            Some(format!("sudo {INSTALL}").as_str()),
            "{implementation:?}"
        );
        assert_eq!(error.code().exit_code(), 13, "{implementation:?}");
        assert!(!host.apt_ran(), "{implementation:?}: {:?}", host.calls());
    }
}

#[tokio::test]
async fn a_password_on_a_terminal_runs_interactive_sudo_with_either_sudo() {
    for implementation in [Sudo::Ws, Sudo::Rs] {
        let host = Host::new(implementation, Rule::Password);
        host.install(true).await.unwrap();
        let calls = host.calls();
        assert_eq!(
            &calls[..3],
            [
                "sudo -n true".to_string(),
                format!(
                    "sudo -n -l {}",
                    INSTALL.split_once("noninteractive ").unwrap().1
                ),
                format!("sudo {INSTALL}"),
            ],
            "{implementation:?}"
        );
        assert!(host.apt_ran(), "{implementation:?}: {calls:?}");
        let notes = host.progress.notes();
        assert!(
            notes.iter().any(|note| note.contains(&format!(
                "running `sudo {INSTALL}`; sudo may ask for your password"
            ))),
            "{implementation:?}: {notes:?}"
        );
    }
}

#[tokio::test]
async fn a_refusal_is_reported_in_sudos_words_with_either_sudo() {
    for implementation in [Sudo::Ws, Sudo::Rs] {
        let refusal = match implementation {
            Sudo::Ws => "Sorry, user alice is not allowed to execute",
            Sudo::Rs => "I'm sorry alice. I'm afraid I can't do that",
        };
        // On a terminal: interactive sudo says no, and its words are the error.
        let host = Host::new(implementation, Rule::Refused);
        let error = host.install(true).await.unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&format!("`sudo {INSTALL}` failed (exit code 1)"))
                && message.contains(refusal),
            "{implementation:?}: {message}"
        );
        assert_eq!(error.code().exit_code(), 13, "{implementation:?}");
        assert!(!host.apt_ran(), "{implementation:?}");

        // Without one: what sudo said when asked, and the command.
        let host = Host::new(implementation, Rule::Refused);
        let error = host.install(false).await.unwrap_err();
        let said = match implementation {
            // sudo.ws does not tell before the password.
            Sudo::Ws => implementation.needs_password(),
            Sudo::Rs => refusal,
        };
        assert!(
            error.to_string().contains(said),
            "{implementation:?}: {error}"
        );
        assert_eq!(error.code().exit_code(), 13, "{implementation:?}");
        assert!(!host.apt_ran(), "{implementation:?}");
    }
}
