//! MAILROBOT_CA_FILE is honoured when a mailbox names no CA file. Its own
//! test binary: it sets a process-wide environment variable.

mod common;

use common::*;
use mailrobot_sources::imap::ImapSource;
use mailrobot_sources::tls::CA_FILE_ENV;
use mailrobot_sources::{MailSource, SettleAction, TlsMode};
use mailrobot_testkit::dovecot::{Dovecot, self_signed_cert};

#[tokio::test]
async fn ca_file_from_environment() {
    let certs = tempfile::tempdir().unwrap();
    let files = self_signed_cert(certs.path()).unwrap();
    let d = Dovecot::start_with_tls(&[(USER, PASSWORD)], &files).unwrap();
    // SAFETY: the only test in this binary; nothing else reads the
    // environment concurrently.
    unsafe { std::env::set_var(CA_FILE_ENV, &files.cert) };
    let mut cfg = imap_config(&d, SettleAction::Move);
    cfg.tls = TlsMode::Tls;
    cfg.port = d.imaps_port().unwrap();
    let mut src = ImapSource::connect(cfg).await.unwrap();
    src.list().await.unwrap();
    src.close().await.unwrap();
}
