//! The CLI contract on the embedded default source: a drop folder.

mod common;

use common::*;

#[test]
fn demo_once_tells_the_story_and_leaves_consistent_json() {
    let robot = Robot::new();
    let out = robot.run(&["demo", "--once", "--local"]);
    assert!(out.contains("new ticket TKT-000001"), "{out}");
    assert!(out.contains("FAILED"), "{out}");

    let tickets = robot.tickets();
    assert_eq!(tickets.len(), 6, "{tickets:#?}");
    let first = &tickets[0];
    assert_eq!(first["number"], "TKT-000001");
    assert_eq!(first["tag"], "[TKT-000001]");
    assert_eq!(first["entries"], 2);
    assert_eq!(first["status"], "open");
    assert!(first["requester"].as_str().unwrap().contains('@'));

    let messages = robot.messages();
    assert_eq!(messages.len(), 12);
    let kinds: Vec<&str> = messages.iter().filter_map(|m| m["kind"].as_str()).collect();
    for kind in ["mail", "auto-reply", "bounce", "duplicate"] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let failed = robot.json(&["messages", "list", "--json", "--state", "failed"]);
    let failed = failed.as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["reason"].as_str().unwrap().contains("not an e-mail"));
    assert_eq!(failed[0]["ticket"], serde_json::Value::Null);
    let duplicate = messages.iter().find(|m| m["kind"] == "duplicate").unwrap();
    assert!(duplicate["ticket"].as_str().unwrap().starts_with("TKT-"));

    // The broken file is kept in failed/, the others in processed/.
    let drop = robot.data_dir().join("demo-dropfolder");
    assert_eq!(std::fs::read_dir(drop.join("failed")).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(drop.join("processed")).unwrap().count(), 11);
    assert_eq!(std::fs::read_dir(drop.join("inbox")).unwrap().count(), 0);

    let detail = robot.ticket("TKT-000005");
    let entries = detail["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "the duplicate must not add an entry");
    let attachments = entries[0]["attachments"].as_array().unwrap();
    assert!(attachments.iter().any(|a| a["content_type"] == "application/pdf" && a["size"].as_i64().unwrap() > 0));
    // HTML is shown sanitised: the demo's HTML-only mail keeps its content and
    // its inline logo (cid:), loses what a browser would act on (<meta>, style).
    let html_ticket = robot.ticket("TKT-000004");
    let html = html_ticket["entries"][0]["html"].as_str().expect("the HTML-only request has HTML");
    assert!(html.contains("cid:logo-contoso@contoso.com") && html.contains("contact form"), "{html}");
    assert!(!html.contains("http-equiv") && !html.contains("style="), "{html}");
    assert!(!html_ticket["entries"][0]["text"].as_str().unwrap().is_empty(), "text derived from HTML");

    // A second demo drops the same mails again: all dedupe, no new tickets.
    robot.run(&["demo", "--once", "--local"]);
    assert_eq!(robot.tickets().len(), 6);
    assert_eq!(robot.messages().len(), 24);
}

#[test]
fn drop_folder_ingests_renamed_files_and_ignores_tmp() {
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("drop", &drop);
    std::fs::write(drop.join("tmp").join("half-written.eml"), simple_mail("a@x", "Half", "", "...")).unwrap();
    std::fs::write(drop.join("inbox").join("1.eml"), simple_mail("b@x", "Printer", "", "broken")).unwrap();
    std::fs::write(drop.join("inbox").join("notes.txt"), "not a mail file").unwrap();
    let out = robot.run(&["run-once"]);
    assert!(out.contains("1 fetched"), "{out}");
    assert_eq!(robot.tickets().len(), 1);
    assert!(drop.join("tmp").join("half-written.eml").exists());
    assert!(drop.join("processed").join("1.eml").exists());
    assert!(drop.join("inbox").join("notes.txt").exists());
}

#[test]
fn ticket_prefix_is_configurable() {
    let robot = Robot::new();
    robot.run(&["settings", "set", "ticket.prefix", "HD-"]);
    robot.run(&["settings", "set", "ticket.digits", "4"]);
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("drop", &drop);
    std::fs::write(drop.join("inbox").join("1.eml"), simple_mail("1@x", "Hello", "", "x")).unwrap();
    std::fs::write(drop.join("inbox").join("2.eml"), simple_mail("2@x", "Re: [hd-0001] Hello", "", "y")).unwrap();
    robot.run(&["run-once"]);
    let tickets = robot.tickets();
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0]["number"], "HD-0001");
    assert_eq!(tickets[0]["entries"], 2);
    assert_eq!(robot.ticket("HD-0001")["tag"], "[HD-0001]");
}

#[test]
fn clear_errors_for_bad_input() {
    let robot = Robot::new();
    let out = robot.run_raw(
        &[
            "mailbox",
            "add",
            "--name",
            "x",
            "--kind",
            "imap",
            "--host",
            "h",
            "--username",
            "u",
            "--password-env",
            "NOPE_NOT_SET",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOPE_NOT_SET"));
    let out =
        robot.run_raw(&["mailbox", "add", "--name", "x", "--kind", "imap", "--host", "h", "--username", "u"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-env"));
    let out = robot.run_raw(&["tickets", "show", "TKT-000099"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no ticket TKT-000099"));
    let out = robot.run_raw(&["messages", "list", "--state", "weird"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("[possible values: fetched, processed, failed]"));
}

#[test]
fn the_microsoft_365_demo_tells_the_seed_story() {
    let robot = Robot::new();
    let out = robot.run(&["demo", "--once"]);
    for step in [
        "Setup Authentication",
        "authenticated as ada.admin@contoso.test",
        "new ticket TKT-000001",
        "Processed 11, Failed 1",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
    let connections = robot.json(&["connection", "list", "--json"]);
    assert_eq!(connections[0]["state"], "ready");
    assert_eq!(connections[0]["capability"], "graph");
    assert_eq!(connections[0]["mode"], "delegated");
    assert_eq!(robot.tickets().len(), 6);
    let messages = robot.messages();
    assert_eq!(messages.len(), 12);
    assert_eq!(messages.iter().filter(|m| m["kind"] == "duplicate").count(), 1);
    assert_eq!(messages.iter().filter(|m| m["state"] == "failed").count(), 1);
    // The tag in the AW: reply names the VPN request: arrival order was kept.
    assert_eq!(robot.ticket("TKT-000002")["entries"].as_array().unwrap().len(), 2);
    let tenants = robot.run(&["tenant", "list", "--json"]);
    assert!(tenants.contains("set on"));
}

#[test]
fn mailbox_set_changes_only_what_it_is_given_and_only_what_applies() {
    let robot = Robot::new();
    let out = robot.run_raw(
        &[
            "mailbox",
            "add",
            "--name",
            "imap",
            "--kind",
            "imap",
            "--host",
            "imap.example.com",
            "--username",
            "u",
            "--password-env",
            "PW",
        ],
        &[("PW", "first-password")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    robot.add_drop_folder("drop", &robot.dir.path().join("drop"));
    robot.run(&[
        "mailbox",
        "set",
        "--name",
        "imap",
        "--folder",
        "Support",
        "--settle",
        "mark-read",
        "--poll-seconds",
        "30",
    ]);
    let imap = robot.json(&["mailbox", "list", "--json"])[0].clone();
    assert_eq!(imap["settings"]["folder"], "Support");
    assert_eq!(imap["settings"]["settle"], "mark-read");
    assert_eq!(imap["settings"]["host"], "imap.example.com", "untouched");
    assert_eq!((imap["poll_seconds"].as_i64(), imap["max_message_bytes"].as_i64()), (Some(30), Some(50 << 20)));
    let out =
        robot.run_raw(&["mailbox", "set", "--name", "imap", "--password-env", "PW"], &[("PW", "second-password")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!robot.database_contains(b"second-password"), "the new password is sealed");
    let stderr = |args: &[&str]| String::from_utf8_lossy(&robot.run_raw(args, &[("PW", "x")]).stderr).to_string();
    assert!(
        stderr(&["mailbox", "set", "--name", "drop", "--folder", "X"])
            .contains("--folder does not apply to a drop-folder mailbox")
    );
    assert!(
        stderr(&["mailbox", "set", "--name", "drop", "--password-env", "PW"]).contains("logs in without a password")
    );
    assert!(stderr(&["mailbox", "set", "--name", "imap", "--folder", "a\r\nb"]).contains("carriage return"));
    assert!(stderr(&["mailbox", "set", "--name", "nope", "--poll-seconds", "5"]).contains("no mailbox named"));
    // The name may also come first, without --name.
    robot.run(&["mailbox", "set", "imap", "--poll-seconds", "45"]);
    assert_eq!(robot.json(&["mailbox", "list", "--json"])[0]["poll_seconds"], 45);
    assert!(stderr(&["mailbox", "set", "--poll-seconds", "5"]).contains("name the mailbox"));
}

/// `new` names the admin UI's "new" pages (`/mailboxes/new`): no mailbox,
/// tenant or connection may take it.
#[test]
fn names_the_admin_ui_keeps_are_refused() {
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    let out = robot
        .run_raw(&["mailbox", "add", "--name", "new", "--kind", "drop-folder", "--path", drop.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kept for the admin UI"), "{out:?}");
    let out = robot.run_raw(&["tenant", "add", "--name", "New", "--client-id", "x", "--tenant", "contoso.test"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("kept for the admin UI"), "{out:?}");
    assert_eq!(robot.json(&["mailbox", "list", "--json"]), serde_json::json!([]));
}

/// `MAILROBOT_POLL_CONCURRENCY` bounds the polls running at once: with 1,
/// the mailboxes of one pass are polled one after the other (each poll's
/// start and end in the log, never two open at a time), and all of them are.
#[test]
fn polls_run_at_most_the_configured_number_at_once() {
    let robot = Robot::new();
    for i in 0..4 {
        let drop = robot.dir.path().join(format!("drop{i}"));
        robot.add_drop_folder(&format!("drop{i}"), &drop);
        for n in 0..20 {
            let mail = simple_mail(&format!("{i}-{n}@x"), &format!("Mailbox {i} mail {n}"), "", "hello");
            std::fs::write(drop.join("inbox").join(format!("{n}.eml")), mail).unwrap();
        }
    }
    let out =
        robot.run_raw(&["run-once"], &[("MAILROBOT_POLL_CONCURRENCY", "1"), ("MAILROBOT_LOG", "mailrobot=debug")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    let (mut open, mut most, mut started) = (0i32, 0i32, 0);
    for line in log.lines() {
        if line.contains("poll started") {
            open += 1;
            started += 1;
        } else if line.contains("poll finished") {
            open -= 1;
        }
        most = most.max(open);
    }
    assert_eq!(started, 4, "every mailbox polled:\n{log}");
    assert_eq!(most, 1, "at most one poll at a time:\n{log}");
    assert_eq!(robot.tickets().len(), 80);

    let refused = robot.run_raw(&["run-once"], &[("MAILROBOT_POLL_CONCURRENCY", "0")]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("MAILROBOT_POLL_CONCURRENCY must be a positive number"));
}
