//! Real Python clients from PyPI for the client checks: one virtualenv per package version under
//! Cargo's target tmp dir, made on first use and reused (as `tests/msal.rs` does). Setting up
//! fails the test rather than skipping it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The venv's python with `package==version` installed (in Cargo's target tmp dir).
pub fn venv_python(package: &str, version: &str) -> PathBuf {
    mailrobot_testkit::python::venv_python(Path::new(env!("CARGO_TARGET_TMPDIR")), package, version)
}

#[allow(unused_imports)]
pub use mailrobot_testkit::python::ensure_module;

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
