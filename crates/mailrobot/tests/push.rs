//! Push instead of polling: new mail the server announces (IMAP IDLE) is
//! fetched at once, whatever the poll interval.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mailrobot_testkit::dovecot::Dovecot;

const USER: &str = "desk";
const PASSWORD: &str = "idle-password";

fn mail(n: usize) -> Vec<u8> {
    format!("From: ann@example.com\r\nSubject: Pushed {n}\r\nMessage-ID: <push-{n}@example.com>\r\n\r\nHello {n}.\r\n")
        .into_bytes()
}

/// With a ten-minute poll interval, only the server's IDLE announcement can
/// bring each mail in within seconds.
#[test]
fn imap_idle_brings_new_mail_in_at_once() {
    let dc = Dovecot::start(&[(USER, PASSWORD)]).expect("start Dovecot (scripts/test.sh installs it)");
    let robot = Robot::new();
    robot.add_imap("desk", dc.imap_port(), USER, PASSWORD, &["--poll-seconds", "600"]);
    let (mut serve, _) = robot.spawn_serve(&[]);
    let polled = wait_until(Duration::from_secs(20), || {
        robot.json(&["mailbox", "list", "--json"])[0]["last_poll_at"].as_str().is_some()
    });
    assert!(polled, "the first poll never ran:\n{}", robot.serve_logs());
    // The watcher logs in and enters IDLE beside the first poll.
    std::thread::sleep(Duration::from_secs(1));
    for n in 1..=3 {
        dc.deliver(USER, "INBOX", &mail(n)).unwrap();
        let delivered = Instant::now();
        let arrived = wait_until(Duration::from_secs(5), || robot.tickets().len() == n);
        assert!(arrived, "mail {n} was not fetched within 5 s of arriving:\n{}", robot.serve_logs());
        eprintln!("mail {n}: a ticket {:?} after delivery", delivered.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(dc.count(USER, "INBOX"), 0);
    serve.kill().unwrap();
    serve.wait().unwrap();
}
