//! The relay into LMTP delivers for real: a mail given to it by SMTP is in
//! the user's INBOX when the `250` comes, and an unknown user is refused
//! with LMTP's own answer.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;

use mailrobot_testkit::dovecot::{Dovecot, Options};
use mailrobot_testkit::lmtp_relay;

/// One SMTP transaction, line by line; returns the answer to the final dot.
fn send(port: u16, from: &str, to: &str, data: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut answer = || {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    };
    assert!(answer().starts_with("220"));
    let mut last = String::new();
    for command in ["EHLO client.test", &format!("MAIL FROM:<{from}>"), &format!("RCPT TO:<{to}>"), "DATA", data] {
        writer.write_all(format!("{command}\r\n").as_bytes()).unwrap();
        last = answer();
        if !(last.starts_with('2') || last.starts_with('3')) {
            break;
        }
    }
    let _ = writer.write_all(b"QUIT\r\n");
    last
}

#[test]
fn mail_given_to_the_relay_lands_in_the_mailbox_and_unknown_users_are_refused() {
    let python = lmtp_relay::python(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let options = Options { lmtp_relay_python: Some(&python), ..Options::default() };
    let dc = Dovecot::start_with(&[("bob@example.test", "pw")], &options).unwrap();
    let relay = dc.relay_port().unwrap();

    let data = "From: a@example.test\r\nTo: bob@example.test\r\nSubject: Hello\r\n\r\nHi Bob.\r\n.";
    let answer = send(relay, "a@example.test", "bob@example.test", data);
    assert!(answer.starts_with("250"), "{answer}\n{}", dc.log());
    let inbox = dc.messages("bob@example.test", "INBOX");
    assert_eq!(inbox.len(), 1, "in the INBOX once the 250 came");
    let text = String::from_utf8_lossy(&inbox[0]);
    assert!(text.contains("Subject: Hello") && text.contains("Delivered-To: bob@example.test"), "{text}");

    let answer = send(relay, "a@example.test", "nobody@example.test", data);
    assert!(answer.starts_with("550") && answer.contains("doesn't exist"), "{answer}");

    let both = Options { submission_relay_port: Some(1), ..options };
    let refused = Dovecot::start_with(&[], &both).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput, "{refused}");
}

/// With Sieve on, a user's vacation script answers a person's mail, and the
/// answer goes out through the relay into the sender's mailbox here.
#[test]
fn sieve_vacation_answers_through_the_relay() {
    let python = lmtp_relay::python(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let options = Options { lmtp_relay_python: Some(&python), sieve: true, ..Options::default() };
    let dc = Dovecot::start_with(&[("bob@example.test", "pw"), ("carol@example.test", "pw")], &options).unwrap();
    dc.set_sieve_script("bob@example.test", "require \"vacation\";\nvacation :days 1 \"Bob is away.\";\n").unwrap();
    let relay = dc.relay_port().unwrap();

    let data = "From: carol@example.test\r\nTo: bob@example.test\r\nSubject: Lunch?\r\nMessage-ID: <c1@example.test>\r\n\r\nToday?\r\n.";
    let answer = send(relay, "carol@example.test", "bob@example.test", data);
    assert!(answer.starts_with("250"), "{answer}\n{}", dc.log());
    assert_eq!(dc.messages("bob@example.test", "INBOX").len(), 1);
    let answers = dc.messages("carol@example.test", "INBOX");
    assert_eq!(answers.len(), 1, "the vacation answer came back\n{}", dc.log());
    let text = String::from_utf8_lossy(&answers[0]);
    assert!(text.contains("Auto-Submitted: auto-replied") && text.contains("Bob is away."), "{text}");
}
