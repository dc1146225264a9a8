//! Shared set-up for the source tests: a real Dovecot, configs pointing at
//! it, and sample mails.
#![allow(dead_code)] // each test binary uses a different part of this

use std::time::Duration;

use mailrobot_sources::{Credentials, ImapConfig, Pop3Config, SettleAction, TlsMode};
use mailrobot_testkit::dovecot::Dovecot;

pub const USER: &str = "robot@example.test";
pub const PASSWORD: &str = "s3cret-Pa55";

/// Logs to the test's captured output; `RUST_LOG=mailrobot_sources=debug`
/// shows every command.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Starts Dovecot or fails the test with the reason (never skips).
pub fn dovecot() -> Dovecot {
    init_logs();
    Dovecot::start(&[(USER, PASSWORD)]).unwrap_or_else(|e| panic!("cannot start Dovecot for this test: {e}"))
}

pub fn password() -> Credentials {
    Credentials::Password { username: USER.into(), password: PASSWORD.into() }
}

pub fn imap_config(d: &Dovecot, settle: SettleAction) -> ImapConfig {
    ImapConfig {
        host: "127.0.0.1".into(),
        port: d.imap_port(),
        tls: TlsMode::None,
        credentials: password(),
        tokens: None,
        folder: "INBOX".into(),
        processed_folder: "Processed".into(),
        error_folder: "Errors".into(),
        settle,
        extra_ca_file: None,
        timeout: Duration::from_secs(10),
        max_message_bytes: 50 << 20,
    }
}

pub fn pop3_config(d: &Dovecot, keep_on_server: bool) -> Pop3Config {
    Pop3Config {
        host: "127.0.0.1".into(),
        port: d.pop3_port(),
        tls: TlsMode::None,
        credentials: password(),
        tokens: None,
        keep_on_server,
        extra_ca_file: None,
        timeout: Duration::from_secs(10),
        max_message_bytes: 50 << 20,
    }
}

/// A small mail with CRLF line ends; bodies include lines starting with a
/// dot (POP3 byte-stuffing) and a lone dot.
pub fn sample_mail(i: usize) -> Vec<u8> {
    format!(
        "From: Customer {i} <customer{i}@example.org>\r\n\
         To: robot@example.test\r\n\
         Subject: Request number {i}\r\n\
         Message-ID: <req-{i}@example.org>\r\n\
         Date: Mon, 2 Mar 2026 10:{:02}:00 +0000\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Hello, this is request {i}.\r\n\
         .leading dot line\r\n\
         .\r\n\
         ..two dots\r\n\
         Bye.\r\n",
        i % 60
    )
    .into_bytes()
}

/// Converts bare LF line ends to CRLF (what IMAP/POP3 servers send).
pub fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 20);
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

pub fn ids(listings: &[mailrobot_sources::Listing]) -> Vec<String> {
    listings.iter().map(|l| l.remote_id.clone()).collect()
}
pub mod scripted_imap;
