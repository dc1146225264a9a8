//! Secrets never appear in clear: not in the database, the data directory,
//! the CLI's output or the logs.

mod common;

use common::*;
use mailrobot_testkit::dovecot::Dovecot;

const USER: &str = "support@example.test";
const PASSWORD: &str = "Very-Distinct-Password-4711";

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files_under(&path, out) } else { out.push(path) }
    }
}

#[test]
fn mailbox_password_is_encrypted_and_never_shown() {
    let dc = Dovecot::start(&[(USER, PASSWORD)]).unwrap();
    dc.deliver(USER, "INBOX", &simple_mail("1@x", "Hello", "", "body")).unwrap();
    let robot = Robot::new();
    robot.add_imap("support", dc.imap_port(), USER, PASSWORD, &[]);
    robot.add_pop3("support-pop", dc.pop3_port(), USER, PASSWORD, &["--keep-on-server"]);
    let out = robot.run_raw(&["run-once"], &[("MAILROBOT_LOG", "trace")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(robot.tickets().len(), 1, "the stored password works");

    let mut seen = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    seen += &robot.run(&["mailbox", "list", "--json"]);
    seen += &robot.run(&["mailbox", "list"]);
    if let Some(at) = seen.find(PASSWORD) {
        panic!("password in CLI output or logs: …{}…", &seen[at.saturating_sub(300)..at + PASSWORD.len()]);
    }

    let mut files = Vec::new();
    files_under(&robot.data_dir(), &mut files);
    assert!(files.iter().any(|f| f.ends_with("mailrobot.db")));
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()),
            "password in clear in {}",
            file.display()
        );
    }
    let key = robot.data_dir().join("master.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn password_from_stdin_and_a_foreign_master_key_is_a_clear_error() {
    let dc = Dovecot::start(&[(USER, PASSWORD)]).unwrap();
    let robot = Robot::new();
    let port = dc.imap_port().to_string();
    let mut child = robot
        .command(&[
            "mailbox",
            "add",
            "--name",
            "s",
            "--kind",
            "imap",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--tls",
            "none",
            "--username",
            USER,
            "--password-stdin",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(child.wait().unwrap().success());
    robot.run(&["run-once"]);

    // Another master key cannot open the stored password: the poll fails
    // with a message saying so, and nothing else breaks.
    let other_key = "11".repeat(32);
    let out = robot.run_raw(&["run-once"], &[("MAILROBOT_MASTER_KEY", &other_key)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MAILROBOT_MASTER_KEY"), "{stderr}");
}
