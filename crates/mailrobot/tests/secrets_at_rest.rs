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
    assert!(robot.database.is_some() || files.iter().any(|f| f.ends_with("mailrobot.db")));
    assert!(!robot.database_contains(PASSWORD.as_bytes()), "password in clear in the database");
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

#[tokio::test(flavor = "multi_thread")]
async fn a_master_key_rotation_reseals_every_stored_secret_at_once() {
    use common::contoso::*;
    const KEY_A: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
    const KEY_B: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
    let emu = emulator();
    let dc = Dovecot::start(&[(USER, PASSWORD)]).unwrap();
    let mut robot = Robot::new();
    let with_keys = |robot: &mut Robot, keys: &[(&str, &str)]| {
        robot.env = keys.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    };
    with_keys(&mut robot, &[("MAILROBOT_MASTER_KEY", KEY_A)]);

    // One of each: a mailbox password, a client secret, a cached access
    // token (application connection), a refresh token (delegated), a
    // webhook's signing secret.
    robot.add_imap("desk", dc.imap_port(), USER, PASSWORD, &[]);
    let hook_secret = "whsec_q0a2fPKAXz4xZ9eWvC9nhrD0sGZbyVsGN7kq1TLk8qI=";
    let out = robot.run_raw(
        &["webhook", "add", "--url", "https://helpdesk.example.com/hook", "--secret-env", "HOOK_SECRET"],
        &[("HOOK_SECRET", hook_secret)],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // …and the password of the mailbox's SMTP reply transport.
    common::outbound::reply_via_smtp(&robot, "desk", "127.0.0.1:25", "desk@example.test");
    add_tenant(&robot, &emu);
    for (name, mode) in [("app", "application"), ("deleg", "delegated")] {
        add_connection(&robot, name, "graph", mode);
    }
    robot.run(&["connection", "test", "app"]);
    common::oauth::setup_authentication(&robot, &emu, DOMAIN, "deleg", AGENT, AGENT_PASSWORD).await;
    let before = robot.json(&["secrets", "status", "--json"]);
    let count = before["secrets"].as_u64().unwrap();
    assert!(count >= 6, "{before}");
    assert_eq!(before["not_current"], 0);

    // A new key without the old one: nothing can be opened, nothing changes.
    with_keys(&mut robot, &[("MAILROBOT_MASTER_KEY", KEY_B)]);
    let out = robot.run_raw(&["secrets", "reseal"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nothing was changed") && stderr.contains("MAILROBOT_PREVIOUS_MASTER_KEYS"), "{stderr}");
    assert!(stderr.contains("password of mailbox desk") && !stderr.contains(PASSWORD), "{stderr}");
    assert!(stderr.contains("secret of webhook #1") && !stderr.contains(&hook_secret[6..]), "{stderr}");
    assert!(
        stderr.contains("SMTP password of mailbox desk") && !stderr.contains(common::outbound::DESK_PASSWORD),
        "{stderr}"
    );
    assert_eq!(robot.json(&["secrets", "status", "--json"])["not_current"], count);

    // With the old key as a previous one: everything re-sealed under the new.
    with_keys(&mut robot, &[("MAILROBOT_MASTER_KEY", KEY_B), ("MAILROBOT_PREVIOUS_MASTER_KEYS", KEY_A)]);
    let resealed = robot.json(&["secrets", "reseal", "--json"]);
    assert_eq!(resealed["resealed"], count, "{resealed}");

    // The old key can go: the robot still logs in everywhere.
    with_keys(&mut robot, &[("MAILROBOT_MASTER_KEY", KEY_B)]);
    assert_eq!(robot.json(&["secrets", "status", "--json"])["not_current"], 0);
    dc.deliver(USER, "INBOX", &simple_mail("rot@ex", "After the rotation", "", "hello")).unwrap();
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 1);
    for connection in ["app", "deleg"] {
        let v = robot.json(&["connection", "test", connection, "--json"]);
        assert_eq!(v["ok"], true, "{v}");
    }
    // And the old key alone opens nothing any more.
    with_keys(&mut robot, &[("MAILROBOT_MASTER_KEY", KEY_A)]);
    assert_eq!(robot.json(&["secrets", "status", "--json"])["not_current"], count);
}
