//! Helpers for the container tests and benchmark: a loopback docker-registry with htpasswd auth,
//! the podman environment this machine needs, and an image of the llama-server built from source.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{fixtures, free_port};

/// Registry user.
pub const USER: &str = "orch";
/// Registry password (the tests check it never shows).
pub const PASSWORD: &str = "s3cret-Passw0rd";

/// Test harness commands (podman, htpasswd, the registry, dpkg tools) run directly.
#[allow(clippy::disallowed_methods)]
pub fn command(program: &str) -> Command {
    Command::new(program)
}

/// Runs a command that must succeed.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("the command starts");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A docker-registry on loopback with htpasswd auth, killed on drop.
pub struct Registry {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Registry {
    /// Starts one with storage and htpasswd under `dir`.
    pub fn start(dir: &Path) -> Registry {
        let htpasswd = run_ok(command("htpasswd").args(["-Bbn", USER, PASSWORD]));
        std::fs::write(dir.join("htpasswd"), &htpasswd.stdout).unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test-secret\nauth:\n  htpasswd:\n    realm: test\n    path: {auth}\n",
            root = dir.join("storage").display(),
            auth = dir.join("htpasswd").display(),
        );
        std::fs::write(dir.join("registry.yml"), config).unwrap();
        let child = command("docker-registry")
            .arg("serve")
            .arg(dir.join("registry.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts (apt-get install docker-registry)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, port }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment every podman and orchctl call of the tests gets.
pub struct Env {
    vars: BTreeMap<String, PathBuf>,
}

impl Env {
    /// containers.conf and an auth file for `registry` under `dir`.
    pub fn new(dir: &Path, registry: u16) -> Env {
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n[engine]\nruntime = \"runc\"\n",
        )
        .unwrap();
        let auth = dir.join("auth.json");
        let token = base64(&format!("{USER}:{PASSWORD}"));
        std::fs::write(
            &auth,
            json!({"auths": {format!("127.0.0.1:{registry}"): {"auth": token}}}).to_string(),
        )
        .unwrap();
        let mut vars = BTreeMap::new();
        vars.insert("CONTAINERS_CONF".to_string(), conf);
        vars.insert("REGISTRY_AUTH_FILE".to_string(), auth);
        Env { vars }
    }

    /// Sets (or replaces) one variable, e.g. another `CONTAINERS_CONF`.
    pub fn set(&mut self, key: &str, value: PathBuf) {
        self.vars.insert(key.to_string(), value);
    }

    /// Sets the variables on a command.
    pub fn apply<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        for (key, value) in &self.vars {
            command.env(key, value);
        }
        command
    }

    /// Runs podman, which must succeed.
    pub fn podman(&self, args: &[&str]) -> Output {
        run_ok(self.apply(command("podman").args(args)))
    }
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Copies a dynamically linked program and every library `ldd` names into a root file system.
fn copy_with_libraries(program: &Path, rootfs: &Path, inside: &str) {
    let target = rootfs.join(inside.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(program, &target).unwrap();
    let ldd = run_ok(command("ldd").arg(program));
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            let real = std::fs::canonicalize(path).unwrap();
            let dest = rootfs.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(real, dest).unwrap();
        }
    }
}

/// An image holding the llama-server built from source, labelled with the commit it was built
/// from, pushed to the registry with credentials. Returns the repository.
pub fn push_llama_image(env: &Env, dir: &Path, registry: u16) -> String {
    let prepared = crate::source_build();
    let context = dir.join("llama-image");
    copy_with_libraries(
        Path::new(prepared["bin"].as_str().unwrap()),
        &context.join("rootfs"),
        "/llama-server",
    );
    std::fs::create_dir_all(context.join("rootfs/tmp")).unwrap();
    std::fs::write(
        context.join("Containerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"/llama-server\"]\n",
    )
    .unwrap();
    let repository = format!("127.0.0.1:{registry}/llama/server");
    let revision = format!("org.opencontainers.image.revision={}", fixtures().commit);
    let tag = format!("{repository}:fixture");
    env.podman(&[
        "build",
        "-q",
        "--label",
        &revision,
        "-t",
        &tag,
        &context.to_string_lossy(),
    ]);
    let creds = format!("{USER}:{PASSWORD}");
    env.podman(&["push", "-q", "--tls-verify=false", "--creds", &creds, &tag]);
    // Remove the local copy so that prepare has to pull it by digest.
    env.podman(&["rmi", "-f", &tag]);
    repository
}

/// Builds `tag`: an image of busybox alone whose entrypoint runs `script` with `sh` (the
/// stand-in engines of the container tests), in a context under `dir`.
pub fn build_busybox_image(env: &Env, dir: &Path, tag: &str, script: &str) {
    let context = dir.join("standin");
    std::fs::create_dir_all(context.join("rootfs/bin")).unwrap();
    std::fs::copy("/bin/busybox", context.join("rootfs/bin/busybox")).unwrap();
    std::fs::write(context.join("rootfs/standin.sh"), script).unwrap();
    std::fs::write(
        context.join("Containerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"/bin/busybox\", \"sh\", \"/standin.sh\"]\n",
    )
    .unwrap();
    env.podman(&["build", "-q", "-t", tag, &context.to_string_lossy()]);
}
