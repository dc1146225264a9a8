//! End to end against a real Dovecot: mails delivered by IMAP and POP3
//! become tickets exactly once and are settled in the mailbox.

mod common;

use common::*;
use mailrobot_testkit::dovecot::{Dovecot, is_seen};

const USER: &str = "support@example.test";
const PASSWORD: &str = "correct horse battery staple";

fn dovecot() -> Dovecot {
    Dovecot::start(&[(USER, PASSWORD), ("helpdesk@example.test", PASSWORD)])
        .expect("start Dovecot (scripts/test.sh installs it)")
}

#[test]
fn imap_move_makes_tickets_threads_and_files_failures() {
    let dc = dovecot();
    dc.deliver(USER, "INBOX", &simple_mail("1@ex", "Printer broken", "", "It jams.")).unwrap();
    dc.deliver(USER, "INBOX", &simple_mail("2@ex", "Re: Printer broken", "In-Reply-To: <1@ex>\r\n", "Still.")).unwrap();
    dc.deliver(USER, "INBOX", b"\x00\x01 not a mail at all \xff").unwrap();
    dc.deliver(USER, "INBOX", &fixture("auto-reply/auto-submitted-auto-replied-sieve-vacation.eml")).unwrap();
    let robot = Robot::new();
    robot.add_imap("support", dc.imap_port(), USER, PASSWORD, &[]);

    let out = robot.run(&["run-once"]);
    assert!(out.contains("4 fetched"), "{out}");
    let tickets = robot.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:#?}");
    assert_eq!(tickets[0]["entries"], 2);
    assert_eq!(dc.count(USER, "INBOX"), 0);
    assert_eq!(dc.count(USER, "Processed"), 3);
    assert_eq!(dc.count(USER, "Failed"), 1);
    // Moved mails are not marked read by the robot's fetch (BODY.PEEK).
    let failed = robot.json(&["messages", "list", "--json", "--state", "failed"]);
    assert_eq!(failed.as_array().unwrap().len(), 1);

    // Nothing new: a second pass changes nothing.
    robot.run(&["run-once"]);
    assert_eq!(robot.messages().len(), 4);
    assert_eq!(robot.tickets().len(), 1);
}

#[test]
fn imap_mark_read_leaves_mails_and_survives_uidvalidity_change() {
    let dc = dovecot();
    for i in 0..3 {
        dc.deliver(USER, "INBOX", &simple_mail(&format!("{i}@ex"), &format!("Request {i}"), "", "body")).unwrap();
    }
    let robot = Robot::new();
    robot.add_imap("support", dc.imap_port(), USER, PASSWORD, &["--settle", "mark-read"]);
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 3);
    assert_eq!(dc.count(USER, "INBOX"), 3);
    assert!(dc.flags(USER, "INBOX").iter().all(|f| is_seen(f)), "{:?}", dc.flags(USER, "INBOX"));

    // The server forgets its UIDs (UIDVALIDITY changes) and the mails look
    // unread again: they come back under new remote ids, and must dedupe.
    let inbox = dc.folder_dir(USER, "INBOX");
    std::fs::remove_file(inbox.join("dovecot-uidlist")).unwrap();
    for entry in std::fs::read_dir(inbox.join("cur")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let unseen = name.split(":2,").next().unwrap().to_string() + ":2,";
        std::fs::rename(&path, inbox.join("cur").join(unseen)).unwrap();
    }
    let _ = std::fs::remove_file(inbox.join("dovecot.index"));
    let _ = std::fs::remove_file(inbox.join("dovecot.index.cache"));
    let _ = std::fs::remove_file(inbox.join("dovecot.index.log"));
    robot.run(&["run-once"]);
    let messages = robot.messages();
    assert_eq!(messages.len(), 6, "the copies are journaled again under new ids");
    assert_eq!(messages.iter().filter(|m| m["kind"] == "duplicate").count(), 3);
    assert_eq!(robot.tickets().len(), 3, "no ticket twice");
}

#[test]
fn imap_delete_and_oversized_mails() {
    let dc = dovecot();
    dc.deliver(USER, "INBOX", &simple_mail("small@ex", "Small", "", "fine")).unwrap();
    let big_body = "x".repeat(76).repeat(20_000); // ~1.5 MB
    dc.deliver(USER, "INBOX", &simple_mail("big@ex", "Big", "", &big_body)).unwrap();
    let robot = Robot::new();
    robot.add_imap("support", dc.imap_port(), USER, PASSWORD, &["--settle", "delete", "--max-message-mb", "1"]);
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 1);
    let failed = robot.json(&["messages", "list", "--json", "--state", "failed"]);
    let failed = failed.as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["reason"].as_str().unwrap().contains("over this mailbox's limit"), "{failed:?}");
    assert_eq!(dc.count(USER, "INBOX"), 0);
    assert_eq!(dc.count(USER, "Failed"), 1, "the oversized mail is kept in the error folder");
    assert_eq!(dc.count(USER, "Processed"), 0);
}

#[test]
fn same_mail_to_two_mailboxes_makes_one_ticket() {
    let dc = dovecot();
    let mail = simple_mail("shared@ex", "To and Cc", "Cc: helpdesk@example.test\r\n", "Hello both");
    let with_trace = |rcpt: &str| {
        [format!("Return-Path: <customer@example.com>\r\nDelivered-To: {rcpt}\r\nReceived: from mx by {rcpt}; Thu, 26 Nov 2026 10:00:01 +0000\r\n").as_bytes(), &mail].concat()
    };
    dc.deliver(USER, "INBOX", &with_trace(USER)).unwrap();
    dc.deliver("helpdesk@example.test", "INBOX", &with_trace("helpdesk@example.test")).unwrap();
    let robot = Robot::new();
    robot.add_imap("support", dc.imap_port(), USER, PASSWORD, &[]);
    robot.add_imap("helpdesk", dc.imap_port(), "helpdesk@example.test", PASSWORD, &[]);
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 1);
    let messages = robot.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages.iter().filter(|m| m["kind"] == "duplicate").count(), 1);
    assert_eq!(messages[0]["ticket"], messages[1]["ticket"]);
}

#[test]
fn pop3_delete_and_keep_on_server() {
    let dc = dovecot();
    for i in 0..3 {
        dc.deliver(USER, "INBOX", &simple_mail(&format!("p{i}@ex"), &format!("POP {i}"), "", "body")).unwrap();
    }
    dc.deliver("helpdesk@example.test", "INBOX", &simple_mail("k@ex", "Kept", "", "body")).unwrap();
    let robot = Robot::new();
    robot.add_pop3("pop", dc.pop3_port(), USER, PASSWORD, &[]);
    robot.add_pop3("pop-keep", dc.pop3_port(), "helpdesk@example.test", PASSWORD, &["--keep-on-server"]);
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 4);
    assert_eq!(dc.count(USER, "INBOX"), 0, "processed mails are deleted");
    assert_eq!(dc.count("helpdesk@example.test", "INBOX"), 1, "--keep-on-server keeps them");
    robot.run(&["run-once"]);
    assert_eq!(robot.messages().len(), 4, "a kept mail is not fetched twice (UIDL)");
}

#[test]
fn one_broken_mailbox_does_not_stop_the_others() {
    let dc = dovecot();
    dc.deliver(USER, "INBOX", &simple_mail("ok@ex", "Works", "", "body")).unwrap();
    let robot = Robot::new();
    robot.add_imap("wrong-password", dc.imap_port(), USER, "not the password", &[]);
    robot.add_imap("nobody-listening", free_port(), USER, PASSWORD, &[]);
    robot.add_imap("good", dc.imap_port(), USER, PASSWORD, &[]);
    let out = robot.run_raw(&["run-once"], &[]);
    assert!(!out.status.success(), "run-once must report the unreachable mailboxes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wrong-password"), "{stderr}");
    assert!(stderr.contains("nobody-listening"), "{stderr}");
    assert!(!stderr.contains("not the password"), "a password leaked into the output: {stderr}");
    assert_eq!(robot.tickets().len(), 1, "the good mailbox was processed");
    let mailboxes = robot.json(&["mailbox", "list", "--json"]);
    let status = |name: &str| mailboxes.as_array().unwrap().iter().find(|m| m["name"] == name).unwrap().clone();
    assert_eq!(status("good")["status"], "ok");
    assert_eq!(status("wrong-password")["status"], "error");
    assert_eq!(status("nobody-listening")["consecutive_failures"], 1);
    assert!(status("nobody-listening")["next_poll_at"].is_string());
}

#[test]
fn mailbox_test_shows_folders_and_waiting_mail_without_changing_anything() {
    let dc = dovecot();
    dc.ensure_folder(USER, "Archive").unwrap();
    for i in 0..3 {
        dc.deliver(USER, "INBOX", &simple_mail(&format!("t{i}@ex"), "Waiting", "", "body")).unwrap();
    }
    let robot = Robot::new();
    robot.add_imap("support", dc.imap_port(), USER, PASSWORD, &[]);
    let probe = robot.json(&["mailbox", "test", "support", "--json"]);
    assert_eq!(probe["ok"], true, "{probe}");
    assert_eq!(probe["waiting"], 3);
    assert_eq!(probe["unread"], 3);
    let names: Vec<&str> = probe["folders"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"INBOX") && names.contains(&"Archive"), "{names:?}");
    assert_eq!(dc.count(USER, "INBOX"), 3, "a test changes nothing");
    assert!(robot.messages().is_empty());

    robot.add_imap("wrong", dc.imap_port(), USER, "nope", &[]);
    let out = robot.run_raw(&["mailbox", "test", "wrong", "--json"], &[]);
    assert!(!out.status.success());
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(value["error"].as_str().unwrap().contains("password"), "{value}");
}
