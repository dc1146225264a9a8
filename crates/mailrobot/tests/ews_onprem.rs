//! EWS mailboxes of Exchange Server on-premises: a user name and password
//! instead of OAuth, by NTLM or Basic as the server asks, against the
//! emulator switched to on-premises authentication.

mod common;

use common::contoso::*;
use common::*;
use m365_emulator::{EwsAuthScheme, EwsAuthSpec, EwsBlockBody, EwsBlockSpec, MailboxGrant};

fn deliver(emu: &m365_emulator::Emulator, ids: std::ops::Range<usize>) {
    for i in ids {
        let mime = simple_mail(&format!("onprem{i}@ex"), &format!("On-prem request {i}"), "", "Printer on fire");
        emu.deliver_mime(SHARED, "inbox", &String::from_utf8(mime).unwrap()).unwrap();
    }
}

#[test]
fn a_password_mailbox_signs_in_with_ntlm_when_offered_and_basic_when_asked() {
    let emu = emulator();
    emu.set_ews_auth(EwsAuthSpec::on_premises()).unwrap();
    emu.grant_mailbox_access(MailboxGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), username: AGENT.into() })
        .unwrap();
    let robot = Robot::new();

    // auto: the server offers Basic and NTLM; NTLM is chosen, so the
    // password never crosses the wire.
    assert!(add_password_ews_mailbox(&robot, "onprem", emu.base_url(), AGENT_PASSWORD, &[]));
    deliver(&emu, 0..3);
    let out = robot.run_raw(&["run-once"], &[("MAILROBOT_LOG_FORMAT", "json")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("password login chosen") && logs.contains(r#""login":"NTLM""#), "{logs}");
    assert_eq!(robot.tickets().len(), 3);
    assert_eq!(emu.count(SHARED, "Processed").unwrap(), 3);
    let listed = robot.run(&["mailbox", "list", "--json"]);
    assert!(!listed.contains(AGENT_PASSWORD), "{listed}");

    // Basic, when the mailbox asks for it.
    robot.run(&["mailbox", "disable", "onprem"]);
    assert!(add_password_ews_mailbox(&robot, "onprem-basic", emu.base_url(), AGENT_PASSWORD, &["--ews-auth", "basic"]));
    deliver(&emu, 3..5);
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 5);
    assert_eq!(robot.messages().len(), 5, "every mail exactly once");

    // A server that takes NTLM only, with auto.
    emu.set_ews_auth(EwsAuthSpec::new(&[EwsAuthScheme::Ntlm])).unwrap();
    robot.run(&["mailbox", "disable", "onprem-basic"]);
    robot.run(&["mailbox", "enable", "onprem"]);
    deliver(&emu, 5..6);
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 6);
}

#[test]
fn a_wrong_password_is_a_clear_mailbox_error() {
    let emu = emulator();
    emu.set_ews_auth(EwsAuthSpec::new(&[EwsAuthScheme::Ntlm])).unwrap();
    let robot = Robot::new();
    assert!(add_password_ews_mailbox(&robot, "onprem", emu.base_url(), "not-the-password", &[]));
    deliver(&emu, 0..1);
    let out = robot.run_raw(&["run-once"], &[]);
    assert!(!out.status.success());
    let listed = robot.json(&["mailbox", "list", "--json"]);
    let error = listed[0]["last_error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("user name or password") && error.contains("NTLM"), "{listed}");
    assert!(!listed.to_string().contains("not-the-password"));
    assert_eq!(emu.count(SHARED, "inbox").unwrap(), 1, "nothing taken");
}

#[test]
fn a_server_offering_no_password_scheme_is_named() {
    let emu = emulator();
    // Exchange Online: bearer tokens only.
    let robot = Robot::new();
    assert!(add_password_ews_mailbox(&robot, "onprem", emu.base_url(), AGENT_PASSWORD, &[]));
    let out = robot.run_raw(&["run-once"], &[]);
    assert!(!out.status.success());
    let listed = robot.json(&["mailbox", "list", "--json"]);
    let error = listed[0]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("Bearer"), "the error names what the server offers: {listed}");
}

/// A 403 that comes back on NTLM's own connection (crate::http1) is named like one through
/// reqwest: permanent, with what an Exchange admin must check.
#[test]
fn a_403_after_the_ntlm_handshake_is_a_clear_mailbox_error() {
    let emu = emulator();
    emu.set_ews_auth(EwsAuthSpec::new(&[EwsAuthScheme::Ntlm])).unwrap();
    emu.grant_mailbox_access(MailboxGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), username: AGENT.into() })
        .unwrap();
    emu.set_ews_block(EwsBlockSpec::blocked(EwsBlockBody::Text));
    let robot = Robot::new();
    assert!(add_password_ews_mailbox(&robot, "onprem", emu.base_url(), AGENT_PASSWORD, &[]));
    deliver(&emu, 0..1);
    let out = robot.run_raw(&["run-once"], &[]);
    assert!(!out.status.success());
    let listed = robot.json(&["mailbox", "list", "--json"]);
    let error = listed[0]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("HTTP 403") && error.contains("EWS is blocked"), "{listed}");
    assert!(error.contains("Set-CASMailbox") && !error.contains("bad XML"), "{listed}");
    assert_eq!(emu.count(SHARED, "inbox").unwrap(), 1, "nothing taken");
    emu.set_ews_block(EwsBlockSpec::default());
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 1);
}
