//! Helpers for the package-mode tests and benchmark: Debian packages of the llama-server built
//! from source, a flat apt repository holding several versions, and cleanup of what got
//! installed into the real system.

use std::path::{Path, PathBuf};

use std::process::Command;

use crate::containers::{command, run_ok};

/// The package the workspace's package-mode tests install (`/opt/ep-llama-server/bin/llama-server`).
pub const SERVER_PACKAGE: &str = "ep-llama-server";
/// The package benchmarks install, so that a benchmark never races a test.
pub const BENCH_PACKAGE: &str = "ep-llama-server-bench";
/// A package of the same repository that ships no server.
pub const EMPTY_PACKAGE: &str = "ep-llama-docs";

/// Builds `<name>_<version>_<arch>.deb` in `pool` from `files` (source file, absolute install
/// path). Returns the package file.
pub fn build_deb(pool: &Path, name: &str, version: &str, files: &[(&Path, &str)]) -> PathBuf {
    let root = pool.join(format!(".build-{name}-{version}"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("DEBIAN")).expect("create DEBIAN");
    for (source, target) in files {
        let destination = root.join(target.trim_start_matches('/'));
        std::fs::create_dir_all(destination.parent().expect("a parent")).expect("create dirs");
        std::fs::copy(source, &destination).expect("copy a packaged file");
    }
    let arch = String::from_utf8_lossy(&run_ok(command("dpkg").arg("--print-architecture")).stdout)
        .trim()
        .to_string();
    let control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: engine-provisioner tests <tests@localhost>\nSection: misc\nPriority: optional\nDescription: llama-server fixture for engine-provisioner's package mode\n"
    );
    std::fs::write(root.join("DEBIAN/control"), control).expect("write control");
    let deb = pool.join(format!("{name}_{version}_{arch}.deb"));
    run_ok(
        command("dpkg-deb")
            .args(["--build", "--root-owner-group", "-Zgzip"])
            .arg(&root)
            .arg(&deb),
    );
    std::fs::remove_dir_all(&root).expect("remove the build root");
    deb
}

/// Indexes every `.deb` in `dir` (all versions) and returns the isolated source line that
/// `provisioning.package.repo` takes.
pub fn flat_repo(dir: &Path) -> String {
    let output = run_ok(
        command("dpkg-scanpackages")
            .args(["--multiversion", ".", "/dev/null"])
            .current_dir(dir),
    );
    std::fs::write(dir.join("Packages"), &output.stdout).expect("write Packages");
    format!("deb [trusted=yes] file:{} ./", dir.display())
}

/// A repository with versions 1.0.0 and 1.1.0 of `name` (the source-built llama-server, plus a
/// version note so the two differ) and one version of [`EMPTY_PACKAGE`].
pub fn server_repo(dir: &Path, name: &str) -> String {
    let server = PathBuf::from(
        crate::source_build()["bin"]
            .as_str()
            .expect("the prepared bin"),
    );
    std::fs::create_dir_all(dir).expect("create the repo dir");
    for version in ["1.0.0", "1.1.0"] {
        let note = dir.join(format!(".note-{version}"));
        std::fs::write(&note, format!("{name} {version}\n")).expect("write note");
        let share = format!("/opt/{name}/share/VERSION");
        let bin = format!("/opt/{name}/bin/llama-server");
        build_deb(
            dir,
            name,
            version,
            &[(server.as_path(), bin.as_str()), (note.as_path(), &share)],
        );
    }
    let readme = dir.join(".readme");
    std::fs::write(&readme, "documentation only\n").expect("write readme");
    build_deb(
        dir,
        EMPTY_PACKAGE,
        "1.0.0",
        &[(readme.as_path(), "/usr/share/doc/ep-llama-docs/README")],
    );
    flat_repo(dir)
}

/// The installed version of a package, if any.
pub fn installed_version(name: &str) -> Option<String> {
    let output = command("dpkg-query")
        .args(["-W", "-f", "${db:Status-Abbrev}|${Version}", name])
        .output()
        .expect("dpkg-query runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (status, version) = text.split_once('|')?;
    status.starts_with("ii").then(|| version.to_string())
}

/// Purges the packages when dropped, so that a failing test leaves the system as it found it
/// (through apt-get, which waits for a dpkg lock another test may hold).
pub struct Purge(pub Vec<&'static str>);

impl Drop for Purge {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = command("apt-get")
                .args(["purge", "-y", "-qq", "-o", "DPkg::Lock::Timeout=300", name])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output();
        }
    }
}

/// A system user made for one test, with one sudoers rule; removed (user and rule) on drop.
pub struct TestUser {
    /// Login name.
    pub name: String,
    sudoers: PathBuf,
}

impl TestUser {
    /// Creates `name` (no home, no login shell, locked password) with `rule` in
    /// `/etc/sudoers.d/<name>`, checked with `visudo -c` first.
    pub fn create(name: &str, rule: &str) -> TestUser {
        let _ = command("userdel").arg(name).output();
        run_ok(command("useradd").args(["-M", "-s", "/usr/sbin/nologin", name]));
        let sudoers = PathBuf::from("/etc/sudoers.d").join(name);
        let draft = std::env::temp_dir().join(format!("{name}.sudoers"));
        std::fs::write(&draft, format!("{rule}\n")).expect("write the sudoers rule");
        run_ok(command("visudo").arg("-cf").arg(&draft));
        run_ok(
            command("install")
                .args(["-m", "0440"])
                .arg(&draft)
                .arg(&sudoers),
        );
        let _ = std::fs::remove_file(&draft);
        TestUser {
            name: name.to_string(),
            sudoers,
        }
    }

    /// Gives the user a password (sudo will ask for it).
    pub fn set_password(&self, password: &str) {
        use std::io::Write;
        let mut child = command("chpasswd")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("chpasswd starts");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{}:{password}\n", self.name).as_bytes())
            .expect("write to chpasswd");
        assert!(
            child.wait().expect("chpasswd ends").success(),
            "chpasswd failed"
        );
    }

    /// A command running `program` as this user (setpriv; no supplementary groups).
    pub fn command(&self, program: &Path) -> Command {
        let mut command = command("/usr/bin/setpriv");
        command
            .arg(format!("--reuid={}", self.name))
            .arg(format!("--regid={}", self.name))
            .args(["--clear-groups", "--"])
            .arg(program);
        command
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.sudoers);
        let _ = command("userdel").arg(&self.name).output();
    }
}

/// Whether this process is root (the real package tests install into the system).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
