//! The crash points (`MAILROBOT_CRASH_AT`, `MAILROBOT_PANIC_AT`) exist only
//! with the `crash-points` feature, which only this crate's tests turn on
//! (a dev-dependency on itself). A normal build — `cargo build --release`,
//! `cargo install` — resolves features without dev-dependencies: shown here
//! with cargo's own resolver, against the same command with them.

use std::process::Command;

fn features(edges: &str) -> String {
    // At run time: a test binary built in another checkout sharing the
    // target directory must still ask about this one.
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "-p", "mailrobot", "--prefix", "none", "-e", edges])
        .current_dir(dir)
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree -e {edges}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_normal_build_has_no_crash_points() {
    let normal = features("no-dev,features");
    assert!(normal.contains("mailrobot v"), "{normal}");
    assert!(!normal.contains("crash-points"), "a normal build enables crash-points:\n{normal}");
    // The tests' build does enable it: the check above can tell.
    assert!(features("features").contains("mailrobot feature \"crash-points\""));
}
