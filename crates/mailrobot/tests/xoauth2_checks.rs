//! IMAP, POP3 and SMTP with SASL XOAUTH2 against a Dovecot that checks each
//! token as Exchange Online does (the emulator's `/introspect/{protocol}`,
//! one passdb per protocol and mailbox): app-only logins to a shared mailbox
//! with the SASL user = the mailbox, refused until the tenant admin has
//! registered the app's Exchange service principal and given it access, and
//! tokens for the wrong resource or protocol refused.

mod common;

use std::time::Duration;

use common::contoso::*;
use common::*;
use mailrobot_testkit::dovecot::{Dovecot, Options};
use mailrobot_testkit::smtp_sink::SmtpSink;
use serde_json::Value;

fn add_oauth_mailbox(robot: &Robot, name: &str, kind: &str, port: u16, username: &str, connection: &str) {
    let port = port.to_string();
    robot.run(&[
        "mailbox",
        "add",
        "--name",
        name,
        "--kind",
        kind,
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--tls",
        "none",
        "--username",
        username,
        "--auth",
        "oauth",
        "--connection",
        connection,
    ]);
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

/// `run-once` fails; returns what it and `mailbox list` say about `mailbox`.
fn failed_pass(robot: &Robot, mailbox: &str) -> (String, String) {
    let out = robot.run_raw(&["run-once"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let list = robot.json(&["mailbox", "list", "--json"]);
    let row = list.as_array().unwrap().iter().find(|m| m["name"] == mailbox).unwrap().clone();
    assert_eq!(row["status"], "error", "{row}");
    (String::from_utf8_lossy(&out.stderr).into_owned(), row["last_error"].as_str().unwrap().to_string())
}

/// The application-mode advice: the role, the service principal, the
/// mailbox permission, the app named — and no sign-in advice.
fn says_what_the_admin_must_do(text: &str, role: &str) {
    for needed in [role, "New-ServicePrincipal", "Add-MailboxPermission", CLIENT_ID, SHARED, "admin consent"] {
        assert!(text.contains(needed), "{needed:?} missing from: {text}");
    }
    assert!(!text.contains("Setup Authentication"), "no sign-in advice in application mode: {text}");
}

#[test]
fn app_only_imap_and_pop3_log_in_to_the_shared_mailbox_once_the_admin_let_the_app_in() {
    let emu = emulator();
    let dc = Dovecot::start_with_oauth2(&[(SHARED, "unused-password")], &emu.mail_introspection_url_template())
        .unwrap_or_else(|e| panic!("cannot start Dovecot: {e}"));
    dc.deliver(SHARED, "INBOX", &simple_mail("app1@ex", "Via app-only IMAP", "", "hello")).unwrap();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "imap-app", "imap", "application");
    add_oauth_mailbox(&robot, "shared-imap", "imap", dc.imap_port(), SHARED, "imap-app");

    // The app has its IMAP.AccessAsApp role, but no Exchange service principal.
    let (stderr, last_error) = failed_pass(&robot, "shared-imap");
    says_what_the_admin_must_do(&last_error, "IMAP.AccessAsApp");
    assert!(stderr.contains("New-ServicePrincipal"), "{stderr}");
    assert_eq!(robot.tickets().len(), 0);
    assert_eq!(dc.count(SHARED, "INBOX"), 1, "nothing was touched");
    // The token request went through (client credentials); the server refused it.
    assert!(emu.stats().grants.get("client_credentials").copied().unwrap_or(0) >= 1);

    let_app_into(&emu, SHARED);
    robot.run(&["run-once"]);
    let tickets = robot.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    assert_eq!(dc.count(SHARED, "Processed"), 1);
    // The SASL user was the shared mailbox, and Dovecot logged in as it.
    let login = format!("user=<{SHARED}>, method=XOAUTH2");
    assert!(wait_until(Duration::from_secs(5), || dc.log().contains(&login)), "{}", dc.log());
    let probe = robot.json(&["mailbox", "test", "shared-imap", "--json"]);
    assert_eq!(probe["ok"], true, "{probe}");

    // POP3 with its own application-mode connection.
    robot.run(&["mailbox", "disable", "shared-imap"]);
    dc.deliver(SHARED, "INBOX", &simple_mail("app2@ex", "Via app-only POP3", "", "hello")).unwrap();
    add_connection(&robot, "pop-app", "pop", "application");
    add_oauth_mailbox(&robot, "shared-pop", "pop3", dc.pop3_port(), SHARED, "pop-app");
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 2);
    assert_eq!(dc.count(SHARED, "INBOX"), 0, "POP3 deleted what it took");
}

#[test]
fn app_only_refused_without_mailbox_permission_names_the_mailbox_and_what_to_do() {
    let emu = emulator();
    let dc = Dovecot::start_with_oauth2(&[(SHARED, "unused-password")], &emu.mail_introspection_url_template())
        .unwrap_or_else(|e| panic!("cannot start Dovecot: {e}"));
    dc.deliver(SHARED, "INBOX", &simple_mail("app3@ex", "Waits for the admin", "", "hello")).unwrap();
    // The service principal exists, but has no permission on this mailbox.
    emu.register_service_principal(m365_emulator::ServicePrincipalSpec {
        tenant: DOMAIN.into(),
        client_id: CLIENT_ID.into(),
    })
    .unwrap();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "pop-app", "pop", "application");
    add_oauth_mailbox(&robot, "shared-pop", "pop3", dc.pop3_port(), SHARED, "pop-app");
    let (_, last_error) = failed_pass(&robot, "shared-pop");
    says_what_the_admin_must_do(&last_error, "POP.AccessAsApp");
    assert_eq!(dc.count(SHARED, "INBOX"), 1);

    emu.grant_mailbox_access_to_app(m365_emulator::MailboxAppGrant {
        tenant: DOMAIN.into(),
        mailbox: SHARED.into(),
        client_id: CLIENT_ID.into(),
    })
    .unwrap();
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 1);
}

#[test]
fn app_only_smtp_login_through_connection_test_and_smtp_test() {
    let emu = emulator();
    let sink = SmtpSink::start().unwrap_or_else(|e| panic!("cannot start smtp-sink: {e}"));
    let template = emu.mail_introspection_url_template();
    let options = Options {
        oauth2_introspection_url: Some(&template),
        submission_relay_port: Some(sink.port()),
        ..Options::default()
    };
    let dc = Dovecot::start_with(&[(SHARED, "unused-password")], &options)
        .unwrap_or_else(|e| panic!("cannot start Dovecot: {e}"));
    let server = format!("127.0.0.1:{}", dc.submission_port().unwrap());
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "smtp-app", "smtp", "application");
    let connection_test = [
        "connection",
        "test",
        "smtp-app",
        "--smtp-server",
        &server,
        "--smtp-tls",
        "none",
        "--address",
        SHARED,
        "--json",
    ];
    let smtp_test = [
        "smtp",
        "test",
        "--server",
        &server,
        "--tls",
        "none",
        "--connection",
        "smtp-app",
        "--address",
        SHARED,
        "--json",
    ];

    // Refused before the admin's part: both checks say what to do.
    for args in [&connection_test[..], &smtp_test[..]] {
        let out = robot.run_raw(args, &[]);
        assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));
        let v = json_of(&out);
        let smtp = if v.get("smtp").is_some() { &v["smtp"] } else { &v };
        assert_eq!(smtp["ok"], false, "{v}");
        let error = smtp["error"].as_str().unwrap();
        says_what_the_admin_must_do(error, "SMTP.SendAsApp");
        assert!(error.contains("535"), "{error}");
    }
    // The people's output says the same.
    let out = robot.run_raw(&connection_test[..connection_test.len() - 1], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("New-ServicePrincipal") && !text.contains("Setup Authentication"), "{text}");

    let_app_into(&emu, SHARED);
    let v = robot.json(&connection_test);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["smtp"]["authenticated_as"], SHARED, "{v}");
    let v = robot.json(&smtp_test);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["authenticated_as"], SHARED);
    let login = format!("user=<{SHARED}>, method=XOAUTH2");
    assert!(wait_until(Duration::from_secs(5), || dc.log().contains(&login)), "{}", dc.log());
    assert!(sink.mails().unwrap().is_empty(), "checks send nothing");

    // App tokens name no user: the mailbox must be given.
    let out = robot.run_raw(&["smtp", "test", "--server", &server, "--tls", "none", "--connection", "smtp-app"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--address"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_for_another_resource_or_protocol_are_refused() {
    let emu = emulator();
    let dc = Dovecot::start_with_oauth2(&[(AGENT, "unused-password")], &emu.mail_introspection_url_template())
        .unwrap_or_else(|e| panic!("cannot start Dovecot: {e}"));
    dc.deliver(AGENT, "INBOX", &simple_mail("d1@ex", "Delegated", "", "hello")).unwrap();
    let robot = robot_with_tenant(&emu);
    let add_scoped = |name: &str, capability: &str, scope: &str| {
        robot.run(&[
            "connection",
            "add",
            "--name",
            name,
            "--tenant",
            "contoso",
            "--capability",
            capability,
            "--mode",
            "delegated",
            "--scope",
            &format!("{scope} openid profile offline_access"),
        ]);
    };
    // An IMAP connection given a Graph scope gets a Graph token (aud Graph).
    add_scoped("imap-graph", "imap", "https://graph.microsoft.com/Mail.ReadWrite.Shared");
    // A POP connection given the IMAP scope gets an IMAP-only token.
    add_scoped("pop-imap", "pop", "https://outlook.office.com/IMAP.AccessAsUser.All");
    for connection in ["imap-graph", "pop-imap"] {
        oauth::setup_authentication(&robot, &emu, DOMAIN, connection, AGENT, AGENT_PASSWORD).await;
    }

    add_oauth_mailbox(&robot, "agent-imap", "imap", dc.imap_port(), AGENT, "imap-graph");
    let (_, last_error) = failed_pass(&robot, "agent-imap");
    assert!(
        last_error.contains("IMAP.AccessAsUser.All") && last_error.contains("Setup Authentication"),
        "{last_error}"
    );
    robot.run(&["mailbox", "disable", "agent-imap"]);

    add_oauth_mailbox(&robot, "agent-pop", "pop3", dc.pop3_port(), AGENT, "pop-imap");
    let (_, last_error) = failed_pass(&robot, "agent-pop");
    assert!(last_error.contains("POP.AccessAsUser.All"), "{last_error}");
    assert_eq!(robot.tickets().len(), 0);
    assert_eq!(dc.count(AGENT, "INBOX"), 1);

    // Dovecot asked the per-protocol endpoint each time and was told no.
    let stats = emu.stats();
    let introspect = stats.endpoints.get("introspect").unwrap();
    assert_eq!(introspect.status.get("200").copied().unwrap_or(0), 0, "{introspect:?}");
    assert!(introspect.status.get("401").copied().unwrap_or(0) >= 4, "{introspect:?}");
}
