//! Real Python clients from PyPI for the client checks: one virtualenv per package version under
//! Cargo's target tmp dir, made on first use and reused (as `tests/msal.rs` does). Setting up
//! fails the test rather than skipping it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The venv's python with `package==version` installed.
pub fn venv_python(package: &str, version: &str) -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{package}-venv-{version}"));
    let python = venv.join("bin").join("python");
    let check =
        format!("import sys; from importlib.metadata import version; sys.exit(version('{package}') != '{version}')");
    let ready = python.exists() && Command::new(&python).args(["-c", &check]).status().is_ok_and(|s| s.success());
    if !ready {
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(venv.join("bin").join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("{package}=={version}"),
        ]));
    }
    python
}

/// Installs `requirement` into the venv of `python` unless `module` imports already: for a
/// dependency a package uses but does not declare.
pub fn ensure_module(python: &Path, module: &str, requirement: &str) {
    let present = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        let pip = python.parent().expect("venv bin").join("pip");
        run(Command::new(pip).args(["install", "--quiet", "--disable-pip-version-check", requirement]));
    }
}

/// A running script under `tests/python/` that talks JSON lines over stdin/stdout.
pub struct Script {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Script {
    /// Starts the script with the CA file trusted by `requests` and sends `config` as the first line.
    pub fn start(python: &Path, script: &str, ca: &Path, config: &serde_json::Value) -> Script {
        let mut child = Command::new(python)
            .arg(manifest_dir().join("tests/python").join(script))
            .env("REQUESTS_CA_BUNDLE", ca)
            .env_remove("SSL_CERT_FILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut s = Script { child, stdin, stdout };
        s.send(config);
        s
    }

    pub fn send(&mut self, v: &serde_json::Value) {
        writeln!(self.stdin, "{v}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next JSON line; on EOF, fails with the script's stderr.
    pub fn recv(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("script ended without an answer: {err}");
        }
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON from the script ({e}): {line}"))
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This package's directory, asked of cargo at run time (a test binary
/// built in another checkout that shares the target directory must read
/// this checkout's files); the build's own when run outside cargo.
fn manifest_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
}
