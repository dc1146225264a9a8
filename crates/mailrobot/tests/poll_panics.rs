//! A bug met while polling one mailbox fails that mailbox, with backoff,
//! not the process and not the other mailboxes.

mod common;

use common::*;

#[test]
fn a_panic_in_a_poll_is_recorded_on_the_mailbox_and_backs_off() {
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("drop", &drop);
    std::fs::write(drop.join("inbox/1.eml"), simple_mail("1@x", "Hello", "", "hi")).unwrap();

    let out = robot.run_raw(&["run-once"], &[("MAILROBOT_PANIC_AT", "poll")]);
    assert_eq!(out.status.code(), Some(2), "a failed mailbox, not a crashed process (101)");
    let mailbox = &robot.json(&["mailbox", "list", "--json"])[0];
    assert_eq!(mailbox["status"], "error", "{mailbox}");
    let error = mailbox["last_error"].as_str().unwrap();
    assert!(error.contains("internal error") && error.contains("injected panic at poll"), "{error}");
    assert_eq!(mailbox["consecutive_failures"], 1);
    assert!(mailbox["next_poll_at"].is_string(), "backs off: {mailbox}");

    // `serve` waits for next_poll_at; a later pass without the bug works.
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 1);
    assert_eq!(robot.json(&["mailbox", "list", "--json"])[0]["status"], "ok");
}
