//! IMAP and POP3 over implicit TLS and STARTTLS/STLS against Dovecot with
//! a self-signed certificate, trusted through `extra_ca_file`.

mod common;

use common::*;
use mailrobot_sources::imap::ImapSource;
use mailrobot_sources::pop3::Pop3Source;
use mailrobot_sources::{MailSource, Outcome, SettleAction, TlsMode};
use mailrobot_testkit::dovecot::{Dovecot, TlsFiles, self_signed_cert};

fn tls_dovecot() -> (tempfile::TempDir, TlsFiles, Dovecot) {
    let certs = tempfile::tempdir().unwrap();
    let files = self_signed_cert(certs.path()).unwrap_or_else(|e| panic!("cannot make a test certificate: {e}"));
    let d = Dovecot::start_with_tls(&[(USER, PASSWORD)], &files)
        .unwrap_or_else(|e| panic!("cannot start Dovecot with TLS for this test: {e}"));
    (certs, files, d)
}

#[tokio::test]
async fn imap_over_tls_and_starttls() {
    let (_certs, files, d) = tls_dovecot();
    d.deliver_many(USER, "INBOX", (0..2).map(sample_mail)).unwrap();

    for (mode, port) in [(TlsMode::Tls, d.imaps_port().unwrap()), (TlsMode::StartTls, d.imap_port())] {
        let mut cfg = imap_config(&d, SettleAction::Move);
        cfg.tls = mode;
        cfg.port = port;
        cfg.extra_ca_file = Some(files.cert.clone());
        let mut src = ImapSource::connect(cfg).await.unwrap_or_else(|e| panic!("{mode}: {e}"));
        let listed = src.list().await.unwrap();
        assert!(!listed.is_empty(), "{mode}");
        let first = listed[0].remote_id.clone();
        let fetched = src.fetch(std::slice::from_ref(&first)).await.unwrap();
        assert_eq!(fetched.len(), 1, "{mode}");
        src.settle(&[(first, Outcome::Processed)]).await.unwrap();
        src.close().await.unwrap();
    }
    assert_eq!(d.count(USER, "INBOX"), 0);
    assert_eq!(d.count(USER, "Processed"), 2);
}

#[tokio::test]
async fn pop3_over_tls_and_stls() {
    let (_certs, files, d) = tls_dovecot();
    d.deliver_many(USER, "INBOX", (0..2).map(sample_mail)).unwrap();

    for (mode, port) in [(TlsMode::Tls, d.pop3s_port().unwrap()), (TlsMode::StartTls, d.pop3_port())] {
        let mut cfg = pop3_config(&d, false);
        cfg.tls = mode;
        cfg.port = port;
        cfg.extra_ca_file = Some(files.cert.clone());
        let mut src = Pop3Source::connect(cfg).await.unwrap_or_else(|e| panic!("{mode}: {e}"));
        let listed = src.list().await.unwrap();
        assert!(!listed.is_empty(), "{mode}");
        let first = listed[0].remote_id.clone();
        let fetched = src.fetch(std::slice::from_ref(&first)).await.unwrap();
        assert_eq!(fetched.len(), 1, "{mode}");
        assert_eq!(fetched[0].raw, sample_mail(if mode == TlsMode::Tls { 0 } else { 1 }));
        src.settle(&[(first, Outcome::Processed)]).await.unwrap();
        src.close().await.unwrap();
    }
    assert_eq!(d.count(USER, "INBOX"), 0);
}

#[tokio::test]
async fn untrusted_certificate_is_permanent_and_says_what_to_do() {
    let (_certs, _files, d) = tls_dovecot();
    let mut cfg = imap_config(&d, SettleAction::Move);
    cfg.tls = TlsMode::Tls;
    cfg.port = d.imaps_port().unwrap();
    let err = ImapSource::connect(cfg).await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("extra_ca_file"), "{err}");

    let mut cfg = pop3_config(&d, false);
    cfg.tls = TlsMode::StartTls;
    let err = Pop3Source::connect(cfg).await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("extra_ca_file"), "{err}");
}

#[tokio::test]
async fn tls_to_a_plain_port_fails_without_hanging() {
    let d = dovecot();
    let mut cfg = imap_config(&d, SettleAction::Move);
    cfg.tls = TlsMode::Tls;
    cfg.timeout = std::time::Duration::from_secs(3);
    let t = std::time::Instant::now();
    let err = ImapSource::connect(cfg).await.unwrap_err();
    assert!(t.elapsed() < std::time::Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("does not seem to speak TLS"), "{err}");
}
