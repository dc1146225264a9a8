//! The SMTP submission client against a real server: Dovecot's submission
//! service (AUTH, STARTTLS) relaying to Postfix's smtp-sink, which keeps
//! what it receives.

use std::time::Duration;

use mailrobot_sources::TlsMode;
use mailrobot_sources::smtp::{self, SmtpConfig, SmtpLogin, SmtpSession};
use mailrobot_testkit::dovecot::{Dovecot, Options, self_signed_cert};
use mailrobot_testkit::smtp_sink::SmtpSink;

const USER: &str = "desk@example.test";
const PASSWORD: &str = "s3cret-pass";

fn servers(tls: Option<&mailrobot_testkit::dovecot::TlsFiles>) -> (SmtpSink, Dovecot) {
    let sink = SmtpSink::start().unwrap_or_else(|e| panic!("cannot start smtp-sink: {e}"));
    let options = Options { tls, submission_relay_port: Some(sink.port()), ..Options::default() };
    let dovecot = Dovecot::start_with(&[(USER, PASSWORD)], &options)
        .unwrap_or_else(|e| panic!("cannot start Dovecot with submission: {e}"));
    (sink, dovecot)
}

fn config(d: &Dovecot, tls: TlsMode, password: &str) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port: d.submission_port().expect("submission enabled"),
        tls,
        login: SmtpLogin::Password { username: USER.into(), password: password.into() },
        client_name: "robot.example.test".into(),
        timeout: Duration::from_secs(10),
        extra_ca_file: None,
    }
}

#[tokio::test]
async fn check_logs_in_and_sends_nothing() {
    let (sink, d) = servers(None);
    let info = smtp::check(&config(&d, TlsMode::None, PASSWORD)).await.unwrap();
    assert_eq!(info.authenticated_as.as_deref(), Some(USER));
    assert!(info.auth_mechanisms.iter().any(|m| m == "PLAIN"), "{info:?}");
    assert!(!info.secured);
    assert!(sink.mails().unwrap().is_empty(), "a check sends nothing");
}

#[tokio::test]
async fn wrong_password_is_a_clear_permanent_error() {
    let (_sink, d) = servers(None);
    let err = smtp::check(&config(&d, TlsMode::None, "wrong")).await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    let text = err.to_string();
    assert!(text.contains("535") && text.contains(USER) && text.contains("password"), "{text}");
    assert!(!text.contains("wrong"), "the password must not appear: {text}");
}

#[tokio::test]
async fn sends_mail_with_dots_and_8bit_text_to_several_recipients() {
    let (sink, d) = servers(None);
    let mut session = SmtpSession::connect(config(&d, TlsMode::None, PASSWORD)).await.unwrap();
    let raw = "From: Desk <desk@example.test>\nTo: a@example.org\nSubject: Re: [TKT-000001] Drucker\n\
               Message-ID: <ack-1@example.test>\nContent-Type: text/plain; charset=utf-8\n\
               Content-Transfer-Encoding: 8bit\n\nGrüße\n.\n..two dots\n";
    session.send(USER, &["a@example.org", "b@example.org"], raw.as_bytes()).await.unwrap();
    // The session stays usable after a refused recipient.
    let refused = session.send(USER, &["not an address"], b"Subject: x\r\n\r\ny\r\n").await;
    assert!(refused.is_err());
    session.send(USER, &["c@example.org"], b"Subject: second\r\n\r\nok\r\n").await.unwrap();
    // An address that would smuggle in a command is refused, not sent.
    let smuggled =
        session.send(USER, &["d@example.org>\r\nRCPT TO:<evil@example.org"], b"Subject: smuggled\r\n\r\nx\r\n");
    let err = smuggled.await.unwrap_err();
    assert!(err.is_permanent() && err.to_string().contains("RCPT TO"), "{err}");
    session.quit().await;

    let mails = sink.mails().unwrap();
    assert_eq!(mails.len(), 2, "{mails:?}");
    // Looked up by content: the sink's files carry no reliable order.
    let with = |subject: &str| {
        mails.iter().find(|m| String::from_utf8_lossy(&m.data).contains(subject)).unwrap_or_else(|| panic!("{mails:?}"))
    };
    let first = with("Subject: Re: [TKT-000001] Drucker");
    assert!(first.mail_from.starts_with(&format!("<{USER}>")), "{}", first.mail_from);
    assert_eq!(first.recipients, ["<a@example.org>", "<b@example.org>"]);
    let data = String::from_utf8(first.data.clone()).unwrap();
    // Dots are unstuffed by the server: the body arrives as written (the sink stores LF line ends).
    assert!(data.contains("\nGrüße\n.\n..two dots\n"), "{data:?}");
    assert_eq!(with("Subject: second").recipients, ["<c@example.org>"]);
    assert!(!mails.iter().any(|m| String::from_utf8_lossy(&m.data).contains("smuggled")), "{mails:?}");
}

#[tokio::test]
async fn starttls_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    let files = self_signed_cert(certs.path()).unwrap();
    let (_sink, d) = servers(Some(&files));

    let mut cfg = config(&d, TlsMode::StartTls, PASSWORD);
    // Without the CA the certificate is refused, with a hint.
    let err = smtp::check(&cfg).await.unwrap_err();
    assert!(err.to_string().contains("extra_ca_file"), "{err}");

    cfg.extra_ca_file = Some(files.cert.clone());
    let info = smtp::check(&cfg).await.unwrap();
    assert!(info.secured && info.authenticated_as.is_some(), "{info:?}");
}

#[tokio::test]
async fn starttls_missing_is_refused_before_any_password_is_sent() {
    let (_sink, d) = servers(None);
    let err = smtp::check(&config(&d, TlsMode::StartTls, PASSWORD)).await.unwrap_err();
    assert!(err.is_permanent() && err.to_string().contains("does not offer STARTTLS"), "{err}");
    assert!(!d.log().contains("Login: user=<"), "no login may happen without TLS:\n{}", d.log());
}

#[tokio::test]
async fn a_closed_port_is_transient() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        tls: TlsMode::None,
        login: SmtpLogin::Anonymous,
        client_name: "robot.example.test".into(),
        timeout: Duration::from_secs(5),
        extra_ca_file: None,
    };
    let err = smtp::check(&cfg).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}
