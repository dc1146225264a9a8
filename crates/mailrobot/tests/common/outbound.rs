//! A real SMTP submission service for mail the robot sends: Dovecot's
//! submission (password login) relaying into Postfix's smtp-sink, or into
//! Dovecot's own LMTP so the mail lands in a mailbox ([`MailWorld`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mailrobot_testkit::dovecot::{Dovecot, Options};
use mailrobot_testkit::smtp_sink::SmtpSink;
use serde_json::Value;

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

/// The robot's own mailbox (read over IMAP) and the address it answers from.
pub const SUPPORT: &str = "support@contoso.test";
/// A requester with a mailbox of her own on the same Dovecot.
pub const ANN: &str = "ann@example.com";
/// Ann's colleague, with a mailbox on the same Dovecot.
pub const CAROL: &str = "carol@example.com";
/// The password of [`SUPPORT`], [`ANN`] and [`CAROL`] at IMAP.
pub const MAILBOX_PASSWORD: &str = "Mailbox-Pa55word";

/// A Dovecot where mail really arrives: the robot submits as [`DESK`], the
/// submission service relays into LMTP, and [`SUPPORT`]'s and [`ANN`]'s
/// mailboxes are read and written over IMAP by Python's imaplib
/// (`tests/python/mail_client.py`), not by the robot's own code.
pub struct MailWorld {
    pub dc: Dovecot,
    /// The submission service's `host:port`, for `--smtp-server`.
    pub submission: String,
    python: PathBuf,
}

impl MailWorld {
    pub fn start() -> MailWorld {
        Self::start_with(false)
    }

    /// With Sieve run on every delivery (scripts set with
    /// [`Dovecot::set_sieve_script`]); what Sieve sends comes back here too.
    pub fn start_with_sieve() -> MailWorld {
        Self::start_with(true)
    }

    fn start_with(sieve: bool) -> MailWorld {
        let python = mailrobot_testkit::lmtp_relay::python(Path::new(env!("CARGO_TARGET_TMPDIR")));
        let options = Options { lmtp_relay_python: Some(&python), sieve, ..Options::default() };
        let users =
            [(DESK, DESK_PASSWORD), (SUPPORT, MAILBOX_PASSWORD), (ANN, MAILBOX_PASSWORD), (CAROL, MAILBOX_PASSWORD)];
        let dc = Dovecot::start_with(&users, &options).expect("start Dovecot with LMTP (scripts/test.sh installs it)");
        let submission = format!("127.0.0.1:{}", dc.submission_port().unwrap());
        MailWorld { dc, submission, python }
    }

    fn client(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let script = super::manifest_dir().join("tests/python/mail_client.py");
        let mut child = Command::new(&self.python)
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "mail_client.py {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.dc.log()
        );
        out.stdout
    }

    /// Every mail in `folder` of `user`, fetched over IMAP (BODY.PEEK[]), by UID.
    pub fn fetch(&self, user: &str, folder: &str) -> Vec<Vec<u8>> {
        let port = self.dc.imap_port().to_string();
        let out = self.client(&["fetch", &port, user, MAILBOX_PASSWORD, folder], b"");
        let mails: Value = serde_json::from_slice(&out).unwrap();
        // Latin-1 text: each character is one byte of the mail.
        mails
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["raw"].as_str().unwrap().chars().map(|c| c as u8).collect())
            .collect()
    }

    /// How many mails `user` holds in INBOX and the robot's Processed and Failed folders, over IMAP.
    pub fn held(&self, user: &str) -> usize {
        ["INBOX", "Processed", "Failed"].iter().map(|folder| self.fetch(user, folder).len()).sum()
    }

    /// Puts `raw` into `folder` of `user` with IMAP APPEND.
    pub fn append(&self, user: &str, folder: &str, raw: &[u8]) {
        let port = self.dc.imap_port().to_string();
        self.client(&["append", &port, user, MAILBOX_PASSWORD, folder], raw);
    }

    /// Hands `raw` to the relay by SMTP, as another mail server would: it
    /// reaches `to`'s INBOX over LMTP.
    pub fn send(&self, from: &str, to: &str, raw: &[u8]) {
        let port = self.dc.relay_port().unwrap().to_string();
        self.client(&["send", &port, from, to], raw);
    }
}

/// The value of header `name` in `raw` (unfolded, the first one), if any.
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default().replace("\r\n ", " ").replace("\r\n\t", " ");
    head.lines().find_map(|line| {
        let (n, value) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| value.trim().to_string())
    })
}
