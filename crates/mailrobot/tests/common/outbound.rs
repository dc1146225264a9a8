//! A real SMTP submission service for mail the robot sends: Dovecot's
//! submission (password login) relaying into Postfix's smtp-sink.

use mailrobot_testkit::dovecot::{Dovecot, Options};
use mailrobot_testkit::smtp_sink::SmtpSink;

use super::Robot;

pub const DESK: &str = "desk@contoso.test";
pub const DESK_PASSWORD: &str = "Desk-Pa55word";

/// The sink, the Dovecot in front of it, and its `host:port`.
pub fn submission() -> (SmtpSink, Dovecot, String) {
    let sink = SmtpSink::start().unwrap();
    let options = Options { submission_relay_port: Some(sink.port()), ..Options::default() };
    let dc = Dovecot::start_with(&[(DESK, DESK_PASSWORD)], &options).unwrap();
    let server = format!("127.0.0.1:{}", dc.submission_port().unwrap());
    (sink, dc, server)
}

/// `mailbox set MAILBOX --reply-via smtp` through `server` as [`DESK`], from `from`.
pub fn reply_via_smtp(robot: &Robot, mailbox: &str, server: &str, from: &str) {
    let out = robot.run_raw(
        &[
            "mailbox",
            "set",
            mailbox,
            "--reply-via",
            "smtp",
            "--smtp-server",
            server,
            "--smtp-tls",
            "none",
            "--smtp-username",
            DESK,
            "--smtp-password-env",
            "PW",
            "--from",
            from,
        ],
        &[("PW", DESK_PASSWORD)],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
