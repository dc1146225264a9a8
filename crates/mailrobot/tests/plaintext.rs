//! Credentials never travel unencrypted to another machine unless the
//! operator allowed it with --allow-plaintext: refused at `add` without
//! contacting anything, and again at every connect.

mod common;

use common::*;

fn refused(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "must be refused: {}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("--allow-plaintext"), "the error names the flag: {stderr}");
    stderr
}

#[test]
fn mailbox_add_refuses_a_password_without_tls_to_another_host() {
    let robot = Robot::new();
    let pw = [("PW", "secret")];
    for (kind, extra) in [("imap", "--port=143"), ("pop3", "--port=110")] {
        let args = [
            "mailbox",
            "add",
            "--name",
            kind,
            "--kind",
            kind,
            "--host",
            "mail.example.com",
            extra,
            "--tls",
            "none",
            "--username",
            "u",
            "--password-env",
            "PW",
        ];
        let stderr = refused(&robot.run_raw(&args, &pw));
        assert!(stderr.contains("mail.example.com"), "{stderr}");
    }
    let ews = [
        "mailbox",
        "add",
        "--name",
        "onprem",
        "--kind",
        "ews",
        "--ews-url",
        "http://mail.contoso.local/EWS/Exchange.asmx",
        "--address",
        "desk@contoso.local",
        "--username",
        "CONTOSO\\svc",
        "--password-env",
        "PW",
    ];
    refused(&robot.run_raw(&ews, &pw));
    assert!(robot.json(&["mailbox", "list", "--json"]).as_array().unwrap().is_empty(), "nothing stored");

    // Loopback needs no flag; another host does, and the flag is stored.
    robot.add_imap("local", 1143, "u", "secret", &[]);
    let allowed = [
        "mailbox",
        "add",
        "--name",
        "trusted",
        "--kind",
        "imap",
        "--host",
        "mail.example.com",
        "--tls",
        "none",
        "--username",
        "u",
        "--password-env",
        "PW",
        "--allow-plaintext",
    ];
    assert!(robot.run_raw(&allowed, &pw).status.success());
    let list = robot.json(&["mailbox", "list", "--json"]);
    let trusted = list.as_array().unwrap().iter().find(|m| m["name"] == "trusted").unwrap();
    assert_eq!(trusted["settings"]["allow_plaintext"], true);
}

#[test]
fn tenant_add_refuses_http_to_another_host() {
    let robot = Robot::new();
    let secret = [("SECRET", "s3cr3t-value")];
    let base = [
        "tenant",
        "add",
        "--name",
        "contoso",
        "--client-id",
        "cid",
        "--tenant",
        "contoso.com",
        "--client-secret-env",
        "SECRET",
    ];
    for flag in ["--authority-url", "--graph-url", "--ews-url"] {
        let mut args = base.to_vec();
        args.extend([flag, "http://login.example.com"]);
        let stderr = refused(&robot.run_raw(&args, &secret));
        assert!(stderr.contains(flag), "{stderr}");
    }
    let mut args = base.to_vec();
    args.extend(["--authority-url", "http://login.example.com", "--allow-plaintext"]);
    assert!(robot.run_raw(&args, &secret).status.success());
    assert_eq!(robot.json(&["tenant", "list", "--json"])[0]["allow_plaintext"], true);
}

#[test]
fn smtp_test_refuses_a_login_without_tls_to_another_host() {
    let robot = Robot::new();
    let args =
        ["smtp", "test", "--server", "mail.example.com:25", "--tls", "none", "--username", "u", "--password-env", "PW"];
    refused(&robot.run_raw(&args, &[("PW", "secret")]));
}

/// A row changed behind the CLI's back (or stored by an older version) is
/// caught when the robot connects: no password leaves.
#[test]
fn every_connect_checks_again() {
    let robot = Robot::new();
    robot.add_imap("box", 1143, "u", "secret", &[]);
    robot.sql(
        "UPDATE mailboxes SET config = json_set(config, '$.host', 'mail.example.com')",
        "UPDATE mailboxes SET config = jsonb_set(config::jsonb, '{host}', '\"mail.example.com\"')::text",
    );
    let out = robot.run_raw(&["run-once"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let mailbox = &robot.json(&["mailbox", "list", "--json"])[0];
    let error = mailbox["last_error"].as_str().unwrap();
    assert!(error.contains("--allow-plaintext") && error.contains("mail.example.com"), "{error}");
}

#[test]
fn values_that_would_break_a_protocol_line_are_refused_at_add() {
    let robot = Robot::new();
    let args = [
        "mailbox",
        "add",
        "--name",
        "box",
        "--kind",
        "imap",
        "--host",
        "127.0.0.1",
        "--tls",
        "none",
        "--username",
        "u",
        "--password-env",
        "PW",
        "--processed-folder",
        "Done\r\nA1 DELETE INBOX",
    ];
    let out = robot.run_raw(&args, &[("PW", "secret")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("processed folder") && stderr.contains("carriage return"), "{stderr}");
}
