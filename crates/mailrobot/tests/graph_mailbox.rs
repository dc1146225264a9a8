//! Exchange / Microsoft Graph mailboxes end to end against the emulator:
//! application and delegated connections, delta with a stored deltaLink,
//! resync after the delta state expires, throttling, and access errors; EWS
//! through a connection: read receipts never sent, a blocked EWS named.

mod common;

use std::time::Duration;

use common::contoso::*;
use common::*;
use m365_emulator::{Emulator, EwsBlockBody, EwsBlockSpec, FaultSpec, MailboxGrant};

fn deliver(emu: &Emulator, n: std::ops::Range<usize>) {
    for i in n {
        let mime =
            String::from_utf8(simple_mail(&format!("g{i}@ex"), &format!("Graph request {i}"), "", "Please help"))
                .unwrap();
        emu.deliver_mime(SHARED, "inbox", &mime).unwrap();
    }
}

/// `mailbox add NAME --kind KIND --connection CONNECTION --address SHARED`, plus `extra`.
fn add_shared_mailbox(robot: &Robot, kind: &str, name: &str, connection: &str, extra: &[&str]) {
    let mut args = vec!["mailbox", "add", "--name", name, "--kind", kind, "--connection", connection];
    args.extend_from_slice(&["--address", SHARED]);
    args.extend_from_slice(extra);
    robot.run(&args);
}

/// `mailbox add shared --kind graph` over the shared mailbox, plus `extra` options.
fn add_graph_mailbox(robot: &Robot, connection: &str, extra: &[&str]) {
    add_shared_mailbox(robot, "graph", "shared", connection, extra);
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
    assert_eq!(out.status.code(), Some(3), "held back by the server, not failed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("throttles"), "{}", String::from_utf8_lossy(&out.stderr));

    // Within Retry-After no process sends a request for that mailbox.
    let before =
        emu.stats().requests("graph") + emu.stats().requests("graph_value") + emu.stats().requests("graph_delta");
    let out = robot.run_raw(&["run-once"], &[]);
    assert_eq!(out.status.code(), Some(3));
    let out = String::from_utf8_lossy(&out.stdout);
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

/// The kind of an error survives the layers: a connection that needs a
/// person, found out in the middle of a pass (Graph refuses a token the
/// robot still thought valid, and renewing it is refused), pauses the
/// mailbox instead of making it fail and back off.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_refused_mid_pass_pauses_the_mailbox() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "desk", "graph", "delegated");
    oauth::setup_authentication(&robot, &emu, DOMAIN, "desk", AGENT, AGENT_PASSWORD).await;
    emu.grant_mailbox_access(MailboxGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), username: AGENT.into() })
        .unwrap();
    add_graph_mailbox(&robot, "desk", &[]);
    robot.run(&["run-once"]);
    // The token the robot holds is still good by its clock, not by the
    // server's; and the refresh token is revoked.
    emu.advance_clock(2 * 3600);
    emu.revoke_user_tokens(DOMAIN, AGENT).unwrap();
    deliver(&emu, 0..1);

    let out = robot.run_raw(&["run-once"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let mailbox = &robot.json(&["mailbox", "list", "--json"])[0];
    assert_eq!(mailbox["status"], "paused", "{mailbox}");
    assert_eq!(mailbox["consecutive_failures"], 0, "{mailbox}");
    assert_eq!(robot.tickets().len(), 0);
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

#[test]
fn a_settling_batch_throttled_item_by_item_is_sent_again_and_every_mail_settles_once() {
    let emu = emulator_with_latency(20);
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "app", "graph", "application");
    add_graph_mailbox(&robot, "app", &[]);
    deliver(&emu, 0..60);
    // The first pass makes the tickets and dies before settling.
    let out = robot.run_raw(&["run-once"], &[("MAILROBOT_CRASH_AT", "after-process")]);
    assert_eq!(out.status.code(), Some(86), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(robot.tickets().len(), 60);
    assert_eq!(emu.count(SHARED, "inbox").unwrap(), 60);

    // The next pass starts by settling them in $batches while another client of the app has
    // three requests running on the mailbox: Graph runs four items at once, so all but one find
    // no slot and are answered 429 on their own.
    emu.reset_stats();
    let other = emu.hold_mail_slots(SHARED, CLIENT_ID, 3).unwrap();
    assert_eq!(other.held(), 3);
    let out = robot.run_raw(&["run-once"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stats = emu.stats();
    let moves = &stats.endpoints["graph"];
    assert!(moves.status.get("429").is_some_and(|n| *n > 0), "items were throttled one by one: {moves:?}");
    assert_eq!(moves.status["201"], 60, "each mail moved once: {moves:?}");
    assert_eq!(emu.count(SHARED, "inbox").unwrap(), 0);
    assert_eq!(emu.count(SHARED, "Processed").unwrap(), 60);
    assert_eq!(robot.tickets().len(), 60);
    let messages = robot.messages();
    assert_eq!(messages.len(), 60, "each mail journaled once");
    assert!(messages.iter().all(|m| m["settled"] == true));
}

#[test]
fn two_thousand_mails_settle_exactly_once_while_another_client_holds_requests_on_the_mailbox() {
    // Each request holds its slot for 2 ms, so requests running together (the robot's fetches,
    // the items of its $batch) overlap as they would at Outlook.
    let emu = emulator_with_latency(2);
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "app", "graph", "application");
    add_graph_mailbox(&robot, "app", &[]);
    deliver(&emu, 0..2000);

    // Another client of the same app has two requests running on the mailbox all along, and a
    // third every other second: of the 4 slots the robot finds two free, at times one.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = std::time::Instant::now();
    let mut passes = 0;
    std::thread::scope(|s| {
        s.spawn(|| {
            let two = emu.hold_mail_slots(SHARED, CLIENT_ID, 2).unwrap();
            assert_eq!(two.held(), 2);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let third = emu.hold_mail_slots(SHARED, CLIENT_ID, 1).unwrap();
                std::thread::sleep(Duration::from_secs(1));
                drop(third);
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        while (emu.count(SHARED, "inbox").unwrap() > 0 || robot.messages().iter().any(|m| m["settled"] == false))
            && started.elapsed() < Duration::from_secs(300)
        {
            if passes > 0 {
                std::thread::sleep(Duration::from_secs(1));
            }
            passes += 1;
            robot.run_raw(&["run-once"], &[]);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let stats = emu.stats();
    let refused: u64 =
        ["graph", "graph_value"].iter().filter_map(|e| stats.endpoints.get(*e).and_then(|e| e.status.get("429"))).sum();
    eprintln!("done in {passes} passes, {:?}; {refused} requests and items refused", started.elapsed());
    assert!(refused > 0, "the robot met the other client's requests: {stats:?}");
    assert_eq!(stats.concurrency_peak(SHARED), 4);
    assert_eq!(emu.count(SHARED, "inbox").unwrap(), 0, "not done after {passes} passes");
    assert_eq!(emu.count(SHARED, "Processed").unwrap(), 2000);
    assert_eq!(stats.endpoints["graph"].status["201"], 2002, "each mail moved once (and two folders made)");
    let tickets = robot.tickets();
    assert_eq!(tickets.len(), 2000, "exactly one ticket per mail");
    assert!(tickets.iter().all(|t| t["entries"] == 1));
    let messages = robot.messages();
    assert_eq!(messages.len(), 2000, "each mail journaled once");
    assert!(messages.iter().all(|m| m["settled"] == true));
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
    // Busy without a back-off: the robot's default wait (30 s) is too long
    // to take in place, so the pass ends held back — not failed.
    emu.inject_fault(FaultSpec { endpoint: "ews".into(), count: 1, status: Some(500), ..Default::default() }).unwrap();
    let out = robot.run_raw(&["run-once"], &[]);
    assert_eq!(out.status.code(), Some(3), "held back by the server: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ErrorServerBusy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mailbox = &robot.json(&["mailbox", "list", "--json"])[0];
    assert_eq!(mailbox["status"], "throttled", "{mailbox}");
    assert_eq!(mailbox["consecutive_failures"], 0, "a wait the server asked for is no failure");
    assert!(mailbox["next_poll_at"].is_string(), "{mailbox}");
    // The next pass within the wait sends nothing and says so by its exit code.
    let before = emu.stats().requests("ews");
    assert_eq!(robot.run_raw(&["run-once"], &[]).status.code(), Some(3));
    assert_eq!(emu.stats().requests("ews"), before);
}

/// A fifth of EWS requests answered ErrorServerBusy with a one-second
/// back-off: one pass takes every wait in place and brings in all 100
/// mails exactly once, never asking before a back-off is over.
#[test]
fn one_pass_through_a_busy_ews_takes_every_mail_exactly_once() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "ews-app", "ews", "application");
    // mark-read: one UpdateItem per mail, so about 110 requests meet the faults.
    add_ews_mailbox(&robot, "ews-shared", "ews-app", &["--settle", "mark-read"]);
    deliver(&emu, 0..100);
    emu.inject_fault(FaultSpec {
        endpoint: "ews".into(),
        count: 1000,
        status: Some(429),
        retry_after: Some(1),
        probability: Some(0.2),
        ..Default::default()
    })
    .unwrap();
    let out = robot.run_raw(&["run-once"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    emu.clear_faults();

    let stats = emu.stats();
    let ews = &stats.endpoints["ews"];
    assert!(ews.faults > 0, "the faults struck: {ews:?}");
    assert_eq!(ews.early, 0, "a request came before its back-off was over: {ews:?}");
    let messages = robot.messages();
    assert_eq!(messages.len(), 100, "each mail journaled once");
    assert_eq!(robot.tickets().len(), 100);
    let inbox = emu.messages(SHARED, "inbox").unwrap();
    assert_eq!(inbox.len(), 100);
    assert!(inbox.iter().all(|m| m.is_read), "every mail settled");
    assert_eq!(robot.json(&["mailbox", "list", "--json"])[0]["status"], "ok");
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

/// Graph lists no sizes: a fetch stops holding more once it has 32 MiB and
/// hands the rest back, and the pipeline asks for them in its next batch.
/// Every mail still arrives exactly once, in one pass.
#[test]
fn graph_fetches_defer_past_their_byte_budget_and_lose_nothing() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "app", "graph", "application");
    add_graph_mailbox(&robot, "app", &[]);
    let body = "y".repeat(76).repeat(14_000); // ~1 MB each, 45 MB in all
    for i in 0..45 {
        let mime = simple_mail(&format!("big{i}@ex"), &format!("Big {i}"), "", &body);
        emu.deliver_mime(SHARED, "inbox", &String::from_utf8(mime).unwrap()).unwrap();
    }
    let out = robot.run_raw(&["run-once", "--json"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["report"]["fetched"], 45, "{report}");
    assert_eq!(robot.messages().len(), 45, "each mail journaled once");
    assert_eq!(robot.tickets().len(), 45);
    assert_eq!(emu.count(SHARED, "Processed").unwrap(), 45);
    // Each mail was downloaded once: deferred ones were not asked for twice.
    assert_eq!(emu.stats().requests("graph_value"), 45);
}

/// EWS lists each item's size (item:Size): a mail over the limit is never
/// asked for, and is kept in the error folder with its reason.
#[test]
fn an_ews_mail_over_the_size_limit_is_not_downloaded_but_kept_in_the_error_folder() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "ews-app", "ews", "application");
    add_ews_mailbox(&robot, "ews-shared", "ews-app", &["--max-message-mb", "1"]);
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
    assert!(reason.contains("over this mailbox's limit of 1048576 bytes"), "{reason}");
    assert_eq!(emu.count(SHARED, "inbox").unwrap(), 0);
    assert_eq!(emu.count(SHARED, "Failed").unwrap(), 1, "the oversized mail is kept in the error folder");
}

/// Mails whose senders ask for a read receipt (`Disposition-Notification-To`).
fn deliver_asking_receipts(emu: &Emulator, n: std::ops::Range<usize>) {
    for i in n {
        let headers = format!("Disposition-Notification-To: <customer{i}@example.com>\r\n");
        let mime = simple_mail(&format!("rr{i}@ex"), &format!("Please confirm {i}"), &headers, "Did you read it?");
        emu.deliver_mime(SHARED, "inbox", &String::from_utf8(mime).unwrap()).unwrap();
    }
}

/// `mailbox add NAME --kind ews` over the shared mailbox, plus `extra`.
fn add_ews_mailbox(robot: &Robot, name: &str, connection: &str, extra: &[&str]) {
    add_shared_mailbox(robot, "ews", name, connection, extra);
}

/// Outlook answers an expired delta link with 410 Gone and `SyncStateNotFound`: the robot drops
/// the link, lists the folder again (with mark-read every old mail is still there) and makes no
/// ticket twice; the next pass follows the new link.
#[test]
fn an_expired_delta_link_is_dropped_and_the_folder_listed_again() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "app", "graph", "application");
    add_graph_mailbox(&robot, "app", &["--settle", "mark-read"]);
    deliver(&emu, 0..3);
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 3);

    emu.expire_delta_tokens(SHARED).unwrap();
    deliver(&emu, 3..4);
    let out = robot.run(&["run-once"]);
    assert!(out.contains("4 listed") && out.contains("1 fetched"), "{out}");
    assert_eq!(robot.tickets().len(), 4);
    assert_eq!(robot.messages().len(), 4, "no mail journaled twice");
    assert!(emu.messages(SHARED, "inbox").unwrap().iter().all(|m| m.is_read));

    let before = emu.stats().requests("graph_delta");
    robot.run(&["run-once"]);
    let stats = emu.stats();
    assert_eq!(stats.requests("graph_delta") - before, 1, "one delta page from the new link");
    assert_eq!(stats.endpoints["graph_delta"].status.get("410"), Some(&1), "the expired link was used once");
    let listed = robot.json(&["mailbox", "list", "--json"]);
    assert!(listed[0]["last_error"].is_null(), "{listed}");
    assert_eq!(robot.tickets().len(), 4);
}

/// Graph has no way to suppress read receipts: mark-read through Graph sends the one a sender
/// asked for, so `mailbox add` warns about it.
#[test]
fn graph_mark_read_is_warned_about_for_its_read_receipts() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "app", "graph", "application");
    let out = robot.run_raw(
        &[
            "mailbox",
            "add",
            "--name",
            "shared",
            "--kind",
            "graph",
            "--connection",
            "app",
            "--address",
            SHARED,
            "--settle",
            "mark-read",
        ],
        &[],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("read receipt"), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = robot.json(&["mailbox", "list", "--json"]);
    assert!(listed[0]["warning"].as_str().unwrap_or_default().contains("--settle move"), "{listed}");
    deliver_asking_receipts(&emu, 0..1);
    robot.run(&["run-once"]);
    assert_eq!(emu.read_receipts(Some(SHARED)).unwrap().len(), 1, "what the warning is about");
}

/// EWS settles without read receipts: UpdateItem (mark-read) and DeleteItem (delete) carry
/// SuppressReadReceipts under Exchange2013_SP1; the emulator records a receipt when they do not
/// (m365-emulator's ews_mail and exchangelib tests show that side).
#[test]
fn ews_settling_sends_no_read_receipts() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "ews-app", "ews", "application");
    add_ews_mailbox(&robot, "ews-read", "ews-app", &["--settle", "mark-read"]);
    deliver_asking_receipts(&emu, 0..3);
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 3);
    assert!(emu.messages(SHARED, "inbox").unwrap().iter().all(|m| m.is_read));

    robot.run(&["mailbox", "disable", "ews-read"]);
    add_ews_mailbox(&robot, "ews-delete", "ews-app", &["--settle", "delete"]);
    deliver_asking_receipts(&emu, 3..6);
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 6);
    assert_eq!(emu.count(SHARED, "deleteditems").unwrap(), 6, "deleted, the three unread among them");
    assert_eq!(emu.read_receipts(Some(SHARED)).unwrap(), vec![], "no receipt went to a sender");
}

/// Exchange Online blocks EWS (HTTP 403, often not SOAP) unless the organisation allows the app:
/// a permanent mailbox error that says what happened and what to do, whatever the body.
#[test]
fn a_blocked_ews_is_a_mailbox_error_that_says_what_to_do() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "ews-app", "ews", "application");
    add_ews_mailbox(&robot, "ews-shared", "ews-app", &[]);
    deliver(&emu, 0..2);
    let last_error = |body: EwsBlockBody| {
        emu.set_ews_block(EwsBlockSpec::blocked(body));
        let out = robot.run_raw(&["run-once"], &[]);
        assert!(!out.status.success(), "{body:?}");
        let mailbox = robot.json(&["mailbox", "list", "--json"])[0].clone();
        assert_eq!(mailbox["status"], "error", "{mailbox}");
        mailbox["last_error"].as_str().unwrap_or_default().to_string()
    };
    let html = last_error(EwsBlockBody::Html);
    assert!(html.contains("HTTP 403") && html.contains("EWS is blocked"), "{html}");
    assert!(html.contains("Exchange Web Services are not enabled"), "the page's words, without tags: {html}");
    assert!(html.contains("EWSAllowedAppIDs") && html.contains("--kind graph"), "{html}");
    assert!(!html.contains("bad XML") && !html.contains('<'), "{html}");
    let soap = last_error(EwsBlockBody::Soap);
    assert!(soap.contains("HTTP 403") && soap.contains("ErrorAccessDenied"), "{soap}");
    let empty = last_error(EwsBlockBody::Empty);
    assert!(empty.contains("HTTP 403") && empty.contains("EWSAllowedAppIDs"), "{empty}");
    assert_eq!(robot.tickets().len(), 0);

    // The admin allows the app: the next pass works.
    emu.set_ews_block(EwsBlockSpec {
        allowed_app_ids: vec![CLIENT_ID.into()],
        ..EwsBlockSpec::blocked(EwsBlockBody::Html)
    });
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 2);
}

/// Two processes that open a mailbox at the same moment (a poll and a
/// connection test, or two nodes) both find its processed and error folders
/// missing and both create them: Exchange refuses the second of each
/// (ErrorFolderExists). That process takes the folder the other made
/// instead of failing — through Graph and through EWS.
#[test]
fn two_processes_creating_the_same_folders_at_once_both_go_on() {
    // Each request waits 300 ms: both processes look before either creates.
    let emu = emulator_with_latency(300);
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "app", "graph", "application");
    add_connection(&robot, "ews-app", "ews", "application");
    add_graph_mailbox(&robot, "app", &[]);
    let ews_folders = ["--processed-folder", "Done over EWS", "--error-folder", "Failed over EWS"];
    add_ews_mailbox(&robot, "ews-shared", "ews-app", &ews_folders);
    for (mailbox, made) in [("shared", ["Processed", "Failed"]), ("ews-shared", ["Done over EWS", "Failed over EWS"])] {
        let tests: Vec<_> = (0..2)
            .map(|_| {
                robot
                    .command(&["mailbox", "test", mailbox, "--json"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for test in tests {
            let out = test.wait_with_output().unwrap();
            let answer = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{mailbox}: {answer}{}", String::from_utf8_lossy(&out.stderr));
            let probe: serde_json::Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(probe["ok"], true, "{mailbox}: {probe}");
        }
        let folders: Vec<String> = emu.folders(SHARED).unwrap().into_iter().map(|f| f.display_name).collect();
        for name in made {
            assert_eq!(folders.iter().filter(|f| f.eq_ignore_ascii_case(name)).count(), 1, "{folders:?}");
        }
    }
}
