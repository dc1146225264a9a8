//! Exactly-once through crashes: the process dies at every step boundary
//! (fail points), and `serve` is SIGKILLed at random moments while 1,000
//! mails flow. Every mail must end as exactly one ticket entry, and the
//! mailbox must end settled.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use mailrobot_testkit::dovecot::Dovecot;
use mailrobot_testkit::generate::{GenOptions, generate_corpus};

const USER: &str = "support@example.test";
const PASSWORD: &str = "pw-crash";
const POINTS: &[&str] = &["after-fetch", "after-process", "after-settle", "after-mark-settled"];

fn no_replies() -> GenOptions {
    GenOptions { reply_ratio: 0.0, ..GenOptions::default() }
}

/// Each journaled copy of a generated mail is one ticket with one entry.
fn assert_exactly_once(robot: &Robot, expected: usize) {
    let tickets = robot.tickets();
    assert_eq!(tickets.len(), expected, "one ticket per mail");
    assert!(tickets.iter().all(|t| t["entries"] == 1), "no ticket got a second entry");
    let messages = robot.messages();
    let mut per_message_id: HashMap<String, usize> = HashMap::new();
    for m in &messages {
        assert_eq!(m["state"], "processed", "{m}");
        *per_message_id.entry(m["message_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(per_message_id.len(), expected);
    assert!(per_message_id.values().all(|n| *n == 1), "a mail was journaled twice");
}

#[test]
fn a_crash_at_every_step_boundary_loses_and_duplicates_nothing() {
    for point in POINTS {
        for nth in [1, 2] {
            let dc = Dovecot::start(&[(USER, PASSWORD)]).unwrap();
            dc.deliver_many(USER, "INBOX", generate_corpus(30, 7, &no_replies())).unwrap();
            let robot = Robot::new();
            robot.add_imap("support", dc.imap_port(), USER, PASSWORD, &[]);
            let crash = format!("{point}:{nth}");
            let out = robot.run_raw(&["run-once"], &[("MAILROBOT_CRASH_AT", &crash), ("MAILROBOT_BATCH_MAILS", "10")]);
            assert_eq!(
                out.status.code(),
                Some(86),
                "{crash}: the injected crash did not happen: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Restart: the next passes finish the work.
            robot.run(&["run-once"]);
            robot.run(&["run-once"]);
            assert_exactly_once(&robot, 30);
            assert_eq!(dc.count(USER, "INBOX"), 0, "{crash}: INBOX not emptied");
            assert_eq!(dc.count(USER, "Processed"), 30, "{crash}: mails missing from Processed");
        }
    }
}

#[test]
fn pop3_deletes_lost_with_the_session_are_redone() {
    // Dying after the journal recorded the settlement but before QUIT loses
    // the server-side deletes; the next pass must delete them again.
    for point in ["after-settle", "after-mark-settled"] {
        let dc = Dovecot::start(&[(USER, PASSWORD)]).unwrap();
        dc.deliver_many(USER, "INBOX", generate_corpus(12, 3, &no_replies())).unwrap();
        let robot = Robot::new();
        robot.add_pop3("pop", dc.pop3_port(), USER, PASSWORD, &[]);
        let out = robot.run_raw(&["run-once"], &[("MAILROBOT_CRASH_AT", point)]);
        assert_eq!(out.status.code(), Some(86), "{point}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(dc.count(USER, "INBOX"), 12, "{point}: no QUIT, so nothing is deleted yet");
        robot.run(&["run-once"]);
        assert_exactly_once(&robot, 12);
        assert_eq!(dc.count(USER, "INBOX"), 0, "{point}: deletes not redone");
    }
}

#[test]
fn sigkill_at_random_moments_while_1000_mails_flow() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let dc = Dovecot::start(&[(USER, PASSWORD)]).unwrap();
    dc.deliver_many(USER, "INBOX", generate_corpus(1000, 42, &no_replies())).unwrap();
    let robot = Robot::new();
    robot.add_imap("support", dc.imap_port(), USER, PASSWORD, &["--poll-seconds", "1"]);
    // Small batches make many commits, so kills land between all kinds of steps.
    let env = [("MAILROBOT_BATCH_MAILS", "5")];
    let mut kills = 0;
    let mut left_at_kill = Vec::new();
    // On PostgreSQL a node takes its leases only after gathering with the
    // nodes starting beside it: the kills come that much later.
    let gathering = if robot.database_url().is_some() { mailrobot::node::GATHER_FOR } else { Duration::ZERO };
    for _ in 0..30 {
        let (mut child, _) = robot.spawn_serve(&env);
        std::thread::sleep(gathering + Duration::from_millis(rng.gen_range(60..300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        let left = dc.count(USER, "INBOX");
        left_at_kill.push(left);
        if left == 0 {
            break;
        }
    }
    eprintln!("mails left in INBOX after each kill: {left_at_kill:?}");
    // The kills must have interrupted real work, not an idle robot.
    assert!(
        left_at_kill.iter().filter(|&&n| n > 0 && n < 1000).count() >= 2,
        "kills did not land mid-flow: {left_at_kill:?}"
    );
    // A last, undisturbed serve finishes the job.
    let (mut child, address) = robot.spawn_serve(&env);
    let done = wait_until(Duration::from_secs(120), || {
        dc.count(USER, "INBOX") == 0
            && http_get(&address, "/metrics").is_some_and(|(_, m)| {
                metric(&m, "mailrobot_journal_unsettled") == Some(0.0)
                    && metric(&m, "mailrobot_journal_messages{state=\"fetched\"}") == Some(0.0)
            })
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(done, "the robot did not finish after {kills} kills:\n{}", robot.serve_logs());
    assert!(kills >= 1);
    assert_exactly_once(&robot, 1000);
    assert_eq!(dc.count(USER, "Processed"), 1000);
}

/// Rows left `fetched` (by `messages retry`, or by a crash of an earlier
/// version that journaled before filing) are filed from their stored bytes
/// before the server is asked: a pass whose mailbox is unreachable still
/// files them.
#[test]
fn mails_left_fetched_are_filed_before_the_server_is_asked() {
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("desk", &drop);
    std::fs::write(drop.join("inbox/1.eml"), b"\x00 not a mail").unwrap();
    robot.run(&["run-once"]);
    let state = |robot: &Robot| robot.messages()[0]["state"].as_str().unwrap().to_string();
    assert_eq!(state(&robot), "failed");
    assert!(std::fs::read_dir(drop.join("failed")).unwrap().count() == 1, "settled to failed/");
    robot.run(&["messages", "retry"]);
    assert_eq!(state(&robot), "fetched");

    // The folder's path now names a file: the mailbox cannot be opened.
    let away = robot.dir.path().join("drop-away");
    std::fs::rename(&drop, &away).unwrap();
    std::fs::write(&drop, b"").unwrap();
    let out = robot.run_raw(&["run-once"], &[]);
    assert!(!out.status.success(), "the pass could not open the mailbox");
    assert_eq!(state(&robot), "failed", "filed without the mailbox: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(&drop).unwrap();
    std::fs::rename(&away, &drop).unwrap();
    robot.run(&["run-once"]);
    assert_eq!(robot.messages().len(), 1, "one journal row");
    assert!(std::fs::read_dir(drop.join("failed")).unwrap().count() == 1);
}
