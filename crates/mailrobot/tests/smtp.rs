//! `mailrobot smtp test` and `mailrobot connection test` on an smtp
//! connection, against Dovecot's submission service (relaying to Postfix's
//! smtp-sink): a password login, and SASL XOAUTH2 with a delegated service
//! connection's tokens, which Dovecot checks at the emulator. Nothing is sent.

mod common;

use std::time::Duration;

use common::contoso::*;
use common::*;
use mailrobot_testkit::dovecot::{Dovecot, Options};
use mailrobot_testkit::smtp_sink::SmtpSink;
use serde_json::Value;

const DESK: &str = "desk@example.test";
const DESK_PASSWORD: &str = "Desk-Pa55word";

fn submission(oauth2_introspection_url: Option<&str>, users: &[(&str, &str)]) -> (SmtpSink, Dovecot) {
    let sink = SmtpSink::start().unwrap_or_else(|e| panic!("cannot start smtp-sink: {e}"));
    let options = Options { oauth2_introspection_url, submission_relay_port: Some(sink.port()), ..Options::default() };
    let dovecot = Dovecot::start_with(users, &options).unwrap_or_else(|e| panic!("cannot start Dovecot: {e}"));
    (sink, dovecot)
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn smtp_test_with_a_password_logs_in_and_sends_nothing() {
    let (sink, dc) = submission(None, &[(DESK, DESK_PASSWORD)]);
    let server = format!("127.0.0.1:{}", dc.submission_port().unwrap());
    let robot = Robot::new();
    let args = [
        "smtp",
        "test",
        "--server",
        &server,
        "--tls",
        "none",
        "--username",
        DESK,
        "--password-env",
        "SMTP_PW",
        "--json",
    ];

    let out = robot.run_raw(&args, &[("SMTP_PW", DESK_PASSWORD)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let v = json_of(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["authenticated_as"], DESK);
    assert_eq!(v["sent"], false);
    assert!(sink.mails().unwrap().is_empty());

    let out = robot.run_raw(&args, &[("SMTP_PW", "not-the-password")]);
    assert_eq!(out.status.code(), Some(3));
    let v = json_of(&out);
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("535") && error.contains("password"), "{error}");
    let everything = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!everything.contains("not-the-password"), "the password leaked: {everything}");
}

#[tokio::test(flavor = "multi_thread")]
async fn smtp_connection_logs_in_with_xoauth2() {
    let emu = emulator();
    let (sink, dc) = submission(Some(&emu.mail_introspection_url_template()), &[(AGENT, "unused-password")]);
    let server = format!("127.0.0.1:{}", dc.submission_port().unwrap());
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "smtpc", "smtp", "delegated");
    oauth::setup_authentication(&robot, &emu, DOMAIN, "smtpc", AGENT, AGENT_PASSWORD).await;

    // connection test: a token, then an SMTP login with it as the signed-in user.
    let v = robot.json(&["connection", "test", "smtpc", "--smtp-server", &server, "--smtp-tls", "none", "--json"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["smtp"]["ok"], true, "{v}");
    assert_eq!(v["smtp"]["authenticated_as"], AGENT);
    assert!(v["smtp"]["auth_mechanisms"].as_array().unwrap().iter().any(|m| m == "XOAUTH2"), "{v}");

    // smtp test with the connection gives the same answer.
    let v = robot.json(&["smtp", "test", "--server", &server, "--tls", "none", "--connection", "smtpc", "--json"]);
    assert_eq!(v["ok"], true, "{v}");
    // Dovecot's log process writes a moment later.
    assert!(wait_until(Duration::from_secs(5), || dc.log().contains("method=XOAUTH2")), "{}", dc.log());

    // A token for the agent does not open another mailbox: a clear refusal
    // naming the scope to check, after one renewed token.
    let out = robot.run_raw(
        &["connection", "test", "smtpc", "--smtp-server", &server, "--smtp-tls", "none", "--address", SHARED, "--json"],
        &[],
    );
    assert_eq!(out.status.code(), Some(3));
    let v = json_of(&out);
    assert_eq!(v["smtp"]["ok"], false);
    let error = v["smtp"]["error"].as_str().unwrap();
    assert!(error.contains(SHARED) && error.contains("SMTP.Send"), "{error}");
    assert!(sink.mails().unwrap().is_empty(), "checks send nothing");
}
