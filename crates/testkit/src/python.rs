//! Real Python packages from PyPI for tests that check the robot (or the
//! emulator) with other people's libraries: one virtualenv per package
//! version under a directory the test gives (Cargo's `CARGO_TARGET_TMPDIR`),
//! made on first use and reused. Setting up fails the test rather than
//! skipping it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The python of a venv under `dir` with `package==version` installed.
pub fn venv_python(dir: &Path, package: &str, version: &str) -> PathBuf {
    let venv = dir.join(format!("{package}-venv-{version}"));
    let python = venv.join("bin").join("python");
    // Tests in other processes (nextest runs each test in its own) may want
    // the same venv at the same moment: one makes it, the others wait.
    let _lock = lock_file(&dir.join(format!("{package}-venv-{version}.lock")));
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

/// An exclusive `flock` on `path` (created if missing), held until the file is dropped.
fn lock_file(path: &Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    // SAFETY: flock on a file descriptor we own; released when the file closes.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {}: {}", path.display(), std::io::Error::last_os_error());
    file
}
