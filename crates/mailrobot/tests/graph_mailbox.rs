//! Exchange / Microsoft Graph mailboxes end to end against the emulator:
//! application and delegated connections, delta with a stored deltaLink,
//! resync after the delta state expires, throttling, and access errors.

mod common;

use std::time::Duration;

use common::contoso::*;
use common::*;
use m365_emulator::{Emulator, FaultSpec, MailboxGrant};

fn deliver(emu: &Emulator, n: std::ops::Range<usize>) {
    for i in n {
        let mime =
            String::from_utf8(simple_mail(&format!("g{i}@ex"), &format!("Graph request {i}"), "", "Please help"))
                .unwrap();
        emu.deliver_mime(SHARED, "inbox", &mime).unwrap();
    }
}

/// `mailbox add shared --kind graph` over the shared mailbox, plus `extra` options.
fn add_graph_mailbox(robot: &Robot, connection: &str, extra: &[&str]) {
    let mut args = vec!["mailbox", "add", "--name", "shared", "--kind", "graph", "--connection", connection];
    args.extend_from_slice(&["--address", SHARED]);
    args.extend_from_slice(extra);
    robot.run(&args);
}

#[test]
fn application_connection_reads_a_shared_mailbox_exactly_once() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "app", "graph", "application");
    add_graph_mailbox(&robot, "app", &[]);
    deliver(&emu, 0..5);

    let out = robot.run(&["run-once"]);
    assert!(out.contains("5 fetched"), "{out}");
    assert_eq!(robot.tickets().len(), 5);
    assert_eq!(emu.count(SHARED, "inbox").unwrap(), 0);
    assert_eq!(emu.count(SHARED, "Processed").unwrap(), 5);
    // The five moves went out as one $batch, not five requests.
    let stats = emu.stats();
    assert_eq!(stats.http_requests("graph_batch"), 1);
    assert_eq!(stats.endpoints["graph"].batched, 5);
    assert!(emu.folders(SHARED).unwrap().iter().any(|f| f.display_name == "Failed"), "error folder created");

    // The deltaLink was stored: the next pass asks only for changes.
    deliver(&emu, 5..7);
    let delta_before = emu.stats().requests("graph_delta");
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 7);
    assert_eq!(emu.stats().requests("graph_delta") - delta_before, 1, "one delta page from the stored link");

    // The delta state expires (410 Gone): the robot lists again and makes
    // no ticket twice.
    emu.expire_delta_tokens(SHARED).unwrap();
    deliver(&emu, 7..8);
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 8);
    assert_eq!(robot.messages().len(), 8);
    assert_eq!(emu.count(SHARED, "Processed").unwrap(), 8);
}

#[test]
fn throttling_is_honoured_by_every_later_run() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "app", "graph", "application");
    add_graph_mailbox(&robot, "app", &[]);
    deliver(&emu, 0..3);
    emu.inject_fault(FaultSpec {
        endpoint: "graph_value".into(),
        count: 1,
        status: Some(429),
        retry_after: Some(6),
        ..Default::default()
    })
    .unwrap();
    let out = robot.run_raw(&["run-once"], &[]);
    assert!(!out.status.success(), "a throttled pass reports failure");
    assert!(String::from_utf8_lossy(&out.stderr).contains("throttles"), "{}", String::from_utf8_lossy(&out.stderr));

    // Within Retry-After no process sends a request for that mailbox.
    let before =
        emu.stats().requests("graph") + emu.stats().requests("graph_value") + emu.stats().requests("graph_delta");
    let out = robot.run(&["run-once"]);
    assert!(out.contains("throttled"), "{out}");
    let after =
        emu.stats().requests("graph") + emu.stats().requests("graph_value") + emu.stats().requests("graph_delta");
    assert_eq!(after, before, "a request was sent before Retry-After passed");

    // Retry-After 6 s is longer than a pass waits in place (5 s): the pass
    // ends, and the wait is stored for every later run.
    std::thread::sleep(Duration::from_millis(6100));
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 3);
    assert_eq!(robot.messages().len(), 3, "every mail exactly once");
    assert_eq!(emu.count(SHARED, "inbox").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn delegated_connection_needs_access_to_the_shared_mailbox() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "desk", "graph", "delegated");
    oauth::setup_authentication(&robot, &emu, DOMAIN, "desk", AGENT, AGENT_PASSWORD).await;

    add_graph_mailbox(&robot, "desk", &[]);
    deliver(&emu, 0..2);
    // The agent may not open the shared mailbox yet: a clear error, no ticket.
    let out = robot.run_raw(&["run-once"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ErrorAccessDenied") && stderr.contains("Full Access"), "{stderr}");
    assert_eq!(robot.tickets().len(), 0);

    emu.grant_mailbox_access(MailboxGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), username: AGENT.into() })
        .unwrap();
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 2);
    assert_eq!(emu.count(SHARED, "Processed").unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn imap_and_pop3_with_xoauth2_through_a_connection() {
    use mailrobot_testkit::dovecot::Dovecot;
    let emu = emulator();
    // Dovecot checks each bearer token at the emulator's introspection endpoint,
    // as Exchange Online would (audience, IMAP or POP scope, the mailbox).
    let dc = Dovecot::start_with_oauth2(&[(AGENT, "unused-password")], &emu.mail_introspection_url_template()).unwrap();
    dc.deliver(AGENT, "INBOX", &simple_mail("x1@ex", "Via IMAP XOAUTH2", "", "hello")).unwrap();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "imapc", "imap", "delegated");
    add_connection(&robot, "popc", "pop", "delegated");
    for connection in ["imapc", "popc"] {
        oauth::setup_authentication(&robot, &emu, DOMAIN, connection, AGENT, AGENT_PASSWORD).await;
    }

    let port = dc.imap_port().to_string();
    robot.run(&[
        "mailbox",
        "add",
        "--name",
        "imap-oauth",
        "--kind",
        "imap",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--tls",
        "none",
        "--username",
        AGENT,
        "--auth",
        "oauth",
        "--connection",
        "imapc",
    ]);
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 1);
    assert_eq!(dc.count(AGENT, "Processed"), 1);

    // Two hours on, the cached tokens have expired at the server: the login
    // with the stored one is refused, and a renewed token gets in.
    emu.advance_clock(2 * 3600);
    dc.deliver(AGENT, "INBOX", &simple_mail("x1b@ex", "After the token expired", "", "hello")).unwrap();
    let refreshes = || emu.stats().grants.get("refresh_token").copied().unwrap_or(0);
    let before = refreshes();
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 2);
    assert_eq!(refreshes(), before + 1, "the refused token was renewed once");
    // Dovecot's log process writes a moment later.
    assert!(wait_until(Duration::from_secs(5), || dc.log().contains("method=XOAUTH2")), "{}", dc.log());

    robot.run(&["mailbox", "disable", "imap-oauth"]);
    dc.deliver(AGENT, "INBOX", &simple_mail("x2@ex", "Via POP3 XOAUTH2", "", "hello")).unwrap();
    let port = dc.pop3_port().to_string();
    robot.run(&[
        "mailbox",
        "add",
        "--name",
        "pop-oauth",
        "--kind",
        "pop3",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--tls",
        "none",
        "--username",
        AGENT,
        "--auth",
        "oauth",
        "--connection",
        "popc",
    ]);
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 3);
    assert_eq!(dc.count(AGENT, "INBOX"), 0);
}

#[test]
fn mailbox_test_lists_graph_folders() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "app", "graph", "application");
    add_graph_mailbox(&robot, "app", &[]);
    deliver(&emu, 0..4);
    let probe = robot.json(&["mailbox", "test", "shared", "--json"]);
    assert_eq!(probe["ok"], true, "{probe}");
    assert_eq!(probe["waiting"], 4);
    assert_eq!(probe["unread"], 4);
    assert!(probe["folders"].as_array().unwrap().iter().any(|f| f["name"] == "Inbox"), "{probe}");
    assert_eq!(emu.count(SHARED, "inbox").unwrap(), 4);
    // The probe moved no delta state: the next pass still takes all four.
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 4);
}

#[test]
fn two_hundred_mails_through_injected_throttling_and_drops_arrive_exactly_once() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "app", "graph", "application");
    add_graph_mailbox(&robot, "app", &[]);
    deliver(&emu, 0..200);

    // Every Graph request (and $batch item) fails with about one chance in
    // five, independently: 429 with and without Retry-After, 503, drops.
    for fault in FaultSpec::graph_failure_rate(0.2) {
        emu.inject_fault(fault).unwrap();
    }
    // Passes as `serve` runs them: a throttle longer than a pass waits in
    // place is stored, and the mailbox is skipped until then.
    let started = std::time::Instant::now();
    let mut passes = 0;
    while (emu.count(SHARED, "inbox").unwrap() > 0 || robot.messages().iter().any(|m| m["settled"] == false))
        && started.elapsed() < Duration::from_secs(600)
    {
        if passes > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        passes += 1;
        robot.run_raw(&["run-once"], &[]);
    }
    let stats = emu.stats();
    let faults: u64 = stats.endpoints.values().map(|e| e.faults).sum();
    let requests: u64 = ["graph", "graph_value", "graph_delta", "graph_batch"].iter().map(|e| stats.requests(e)).sum();
    eprintln!("{faults} faults in {requests} requests; done in {passes} passes, {:?}", started.elapsed());
    assert!(faults * 10 > requests, "faults did strike: {faults} of {requests}");
    assert_eq!(emu.count(SHARED, "inbox").unwrap(), 0, "not done after {passes} passes");
    assert_eq!(emu.count(SHARED, "Processed").unwrap(), 200);
    let tickets = robot.tickets();
    assert_eq!(tickets.len(), 200, "exactly one ticket per mail");
    assert!(tickets.iter().all(|t| t["entries"] == 1));
    let messages = robot.messages();
    assert_eq!(messages.len(), 200, "each mail journaled once");
}

#[tokio::test(flavor = "multi_thread")]
async fn ews_mailboxes_application_with_impersonation_and_delegated() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    // Application: full_access_as_app, every request impersonates the mailbox.
    add_connection(&robot, "ews-app", "ews", "application");
    robot.run(&[
        "mailbox",
        "add",
        "--name",
        "ews-shared",
        "--kind",
        "ews",
        "--connection",
        "ews-app",
        "--address",
        SHARED,
    ]);
    deliver(&emu, 0..4);
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 4);
    assert_eq!(emu.count(SHARED, "inbox").unwrap(), 0);
    assert_eq!(emu.count(SHARED, "Processed").unwrap(), 4);
    // The SyncState was stored: new mail only, no ticket twice.
    deliver(&emu, 4..6);
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 6);
    assert_eq!(robot.messages().len(), 6);
    let probe = robot.json(&["mailbox", "test", "ews-shared", "--json"]);
    assert_eq!(probe["ok"], true, "{probe}");
    robot.run(&["mailbox", "disable", "ews-shared"]);

    // Delegated: EWS.AccessAsUser.All for an agent granted the shared mailbox.
    emu.grant_mailbox_access(MailboxGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), username: AGENT.into() })
        .unwrap();
    add_connection(&robot, "ews-desk", "ews", "delegated");
    oauth::setup_authentication(&robot, &emu, DOMAIN, "ews-desk", AGENT, AGENT_PASSWORD).await;
    robot.run(&[
        "mailbox",
        "add",
        "--name",
        "ews-delegated",
        "--kind",
        "ews",
        "--connection",
        "ews-desk",
        "--address",
        SHARED,
        "--settle",
        "mark-read",
    ]);
    deliver(&emu, 6..8);
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 8);
    let inbox = emu.messages(SHARED, "inbox").unwrap();
    assert_eq!(inbox.len(), 2, "mark-read leaves them in the inbox");
    assert!(inbox.iter().all(|m| m.is_read));
    robot.run(&["run-once"]);
    assert_eq!(robot.messages().len(), 8, "read mails are not taken again");
}

#[test]
fn ews_throttling_answers_are_honoured() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "ews-app", "ews", "application");
    robot.run(&[
        "mailbox",
        "add",
        "--name",
        "ews-shared",
        "--kind",
        "ews",
        "--connection",
        "ews-app",
        "--address",
        SHARED,
    ]);
    deliver(&emu, 0..2);
    emu.inject_fault(FaultSpec { endpoint: "ews".into(), count: 1, status: Some(500), ..Default::default() }).unwrap();
    let out = robot.run_raw(&["run-once"], &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ErrorServerBusy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mailbox = &robot.json(&["mailbox", "list", "--json"])[0];
    assert!(mailbox["next_poll_at"].is_string());
}

#[test]
fn ews_pointing_at_exchange_online_is_warned_about() {
    let robot = Robot::new();
    let out = robot.run_raw(
        &[
            "mailbox",
            "add",
            "--name",
            "old-ews",
            "--kind",
            "ews",
            "--ews-url",
            "https://outlook.office365.com/EWS/Exchange.asmx",
            "--address",
            "desk@contoso.com",
            "--username",
            "desk@contoso.com",
            "--password-env",
            "PW",
        ],
        &[("PW", "pw")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2026-10-01"));
    let list = robot.json(&["mailbox", "list", "--json"]);
    assert!(list[0]["warning"].as_str().unwrap().contains("Graph"), "{list}");
    let out = robot.run_raw(
        &[
            "mailbox",
            "add",
            "--name",
            "onprem",
            "--kind",
            "ews",
            "--ews-url",
            "https://mail.contoso.local/EWS/Exchange.asmx",
            "--address",
            "desk@contoso.local",
            "--username",
            "desk",
            "--password-env",
            "PW",
        ],
        &[("PW", "pw")],
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("2026-10-01"), "on-premises Exchange keeps EWS");
}

#[test]
fn an_application_access_policy_is_named_in_the_error() {
    let emu = emulator();
    emu.set_access_policy(m365_emulator::AccessPolicySpec {
        tenant: DOMAIN.into(),
        client_id: CLIENT_ID.into(),
        mailboxes: vec!["someone-else@contoso.test".into()],
    })
    .unwrap();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "app", "graph", "application");
    add_graph_mailbox(&robot, "app", &[]);
    deliver(&emu, 0..1);
    let out = robot.run_raw(&["run-once"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ErrorAccessDenied") && stderr.contains("application access policy"), "{stderr}");
    let mailbox = &robot.json(&["mailbox", "list", "--json"])[0];
    assert_eq!(mailbox["status"], "error");
    assert_eq!(robot.tickets().len(), 0);
    assert_eq!(emu.count(SHARED, "inbox").unwrap(), 1, "nothing touched");
}

#[test]
fn a_mailbox_without_rest_access_says_so() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "app", "graph", "application");
    add_graph_mailbox(&robot, "app", &[]);
    emu.set_rest_enabled(SHARED, false).unwrap();
    deliver(&emu, 0..1);
    let out = robot.run_raw(&["run-once"], &[]);
    assert!(!out.status.success());
    let listed = robot.json(&["mailbox", "list", "--json"]);
    let error = listed[0]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("MailboxNotEnabledForRESTAPI") && error.contains("EWS or IMAP"), "{listed}");
    assert_eq!(emu.count(SHARED, "inbox").unwrap(), 1, "nothing taken");
}

#[test]
fn a_mail_deleted_before_a_repeated_settle_counts_as_settled() {
    // Dying after the DELETE reached Graph but before the journal recorded
    // it: the next pass deletes again and gets ErrorItemNotFound, which
    // means done — not a failing mailbox.
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "app", "graph", "application");
    add_graph_mailbox(&robot, "app", &["--settle", "delete"]);
    deliver(&emu, 0..3);
    let out = robot.run_raw(&["run-once"], &[("MAILROBOT_CRASH_AT", "after-settle")]);
    assert_eq!(out.status.code(), Some(86), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(emu.count(SHARED, "inbox").unwrap(), 0, "deleted remotely before the crash");
    assert!(robot.messages().iter().any(|m| m["settled"] == false));

    robot.run(&["run-once"]);
    assert!(robot.messages().iter().all(|m| m["settled"] == true), "{:?}", robot.messages());
    assert_eq!(robot.tickets().len(), 3);
    let listed = robot.json(&["mailbox", "list", "--json"]);
    assert!(listed[0]["last_error"].is_null(), "{listed}");
}

#[test]
fn a_graph_mail_over_the_size_limit_is_not_downloaded_but_kept_in_the_error_folder() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "app", "graph", "application");
    add_graph_mailbox(&robot, "app", &["--max-message-mb", "1"]);
    deliver(&emu, 0..1);
    let big_body = "x".repeat(76).repeat(20_000); // ~1.5 MB
    let big = String::from_utf8(simple_mail("big@ex", "Big", "", &big_body)).unwrap();
    emu.deliver_mime(SHARED, "inbox", &big).unwrap();

    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 1);
    let failed = robot.json(&["messages", "list", "--json", "--state", "failed"]);
    let failed = failed.as_array().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let reason = failed[0]["reason"].as_str().unwrap();
    // Refused while downloading: from Content-Length, or once the limit is passed.
    assert!(reason.contains("at least") && reason.contains("over this mailbox's limit of 1048576 bytes"), "{reason}");
    assert_eq!(emu.count(SHARED, "inbox").unwrap(), 0);
    assert_eq!(emu.count(SHARED, "Failed").unwrap(), 1, "the oversized mail is kept in the error folder");
}
