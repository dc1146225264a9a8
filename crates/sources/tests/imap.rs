//! IMAP source against a real Dovecot.

mod common;

use common::*;
use mailrobot_sources::imap::ImapSource;
use mailrobot_sources::{MailSource, Outcome, SettleAction};
use mailrobot_testkit::dovecot::is_seen;

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

#[tokio::test]
async fn move_settle_moves_to_processed_and_error_folders() {
    let d = dovecot();
    let mails: Vec<Vec<u8>> = (0..5).map(sample_mail).collect();
    d.deliver_many(USER, "INBOX", &mails).unwrap();
    assert!(!d.folder_exists(USER, "Processed") && !d.folder_exists(USER, "Errors"));

    let mut src = ImapSource::connect(imap_config(&d, SettleAction::Move)).await.unwrap();
    // Created on connect because they were missing.
    assert!(d.folder_exists(USER, "Processed"), "processed folder created");
    assert!(d.folder_exists(USER, "Errors"), "error folder created");

    let listed = src.list().await.unwrap();
    assert_eq!(listed.len(), 5);
    for l in &listed {
        let (validity, uid) = mailrobot_sources::imap::parse_remote_id(&l.remote_id).unwrap();
        assert!(validity > 0 && uid > 0, "{}", l.remote_id);
        assert!(l.size.unwrap() > 100);
    }

    let fetched = src.fetch(&ids(&listed)).await.unwrap();
    assert_eq!(fetched.len(), 5);
    let got = sorted(fetched.iter().map(|m| m.raw.clone()).collect());
    assert_eq!(got, sorted(mails.clone()), "bodies byte-identical");
    // Sizes from the listing match what came back.
    for m in &fetched {
        let l = listed.iter().find(|l| l.remote_id == m.remote_id).unwrap();
        assert_eq!(l.size, Some(m.raw.len() as u64));
    }
    // BODY.PEEK: fetching marked nothing \Seen.
    assert!(d.flags(USER, "INBOX").iter().all(|f| !is_seen(f)), "{:?}", d.flags(USER, "INBOX"));

    let outcomes: Vec<(String, Outcome)> = listed
        .iter()
        .enumerate()
        .map(|(i, l)| (l.remote_id.clone(), if i < 3 { Outcome::Processed } else { Outcome::Failed }))
        .collect();
    src.settle(&outcomes).await.unwrap();

    assert_eq!(d.count(USER, "INBOX"), 0, "INBOX empty after settle");
    assert_eq!(d.count(USER, "Processed"), 3);
    assert_eq!(d.count(USER, "Errors"), 2);
    let mut moved = d.messages(USER, "Processed");
    moved.extend(d.messages(USER, "Errors"));
    assert_eq!(sorted(moved), sorted(mails), "moved mails unchanged");

    assert!(src.list().await.unwrap().is_empty(), "nothing listed after settle");
    // Idempotent: settling again (mails are gone from INBOX) succeeds.
    src.settle(&outcomes).await.unwrap();
    assert_eq!(d.count(USER, "Processed"), 3);
    src.close().await.unwrap();
}

#[tokio::test]
async fn mark_read_keeps_mails_seen_in_inbox() {
    let d = dovecot();
    d.deliver_many(USER, "INBOX", (0..4).map(sample_mail)).unwrap();
    let mut src = ImapSource::connect(imap_config(&d, SettleAction::MarkRead)).await.unwrap();
    // Only the error folder is needed for MarkRead.
    assert!(d.folder_exists(USER, "Errors"));
    assert!(!d.folder_exists(USER, "Processed"));

    let listed = src.list().await.unwrap();
    assert_eq!(listed.len(), 4);
    src.fetch(&ids(&listed)).await.unwrap();
    assert!(d.flags(USER, "INBOX").iter().all(|f| !is_seen(f)), "fetch must not mark read");

    let outcomes: Vec<_> = listed[..3].iter().map(|l| (l.remote_id.clone(), Outcome::Processed)).collect();
    src.settle(&outcomes).await.unwrap();
    let flags = d.flags(USER, "INBOX");
    assert_eq!(flags.len(), 4, "mails stay in INBOX");
    assert_eq!(flags.iter().filter(|f| is_seen(f)).count(), 3, "{flags:?}");

    let again = src.list().await.unwrap();
    assert_eq!(ids(&again), vec![listed[3].remote_id.clone()], "read mails are not listed again");
    src.settle(&outcomes).await.unwrap();
    src.close().await.unwrap();
}

#[tokio::test]
async fn delete_settle_expunges_and_failed_go_to_error_folder() {
    let d = dovecot();
    d.deliver_many(USER, "INBOX", (0..4).map(sample_mail)).unwrap();
    let mut src = ImapSource::connect(imap_config(&d, SettleAction::Delete)).await.unwrap();
    let listed = src.list().await.unwrap();
    let outcomes = vec![
        (listed[0].remote_id.clone(), Outcome::Processed),
        (listed[1].remote_id.clone(), Outcome::Processed),
        (listed[2].remote_id.clone(), Outcome::Failed),
    ];
    src.settle(&outcomes).await.unwrap();
    assert_eq!(d.count(USER, "INBOX"), 1);
    assert_eq!(d.count(USER, "Errors"), 1);
    assert_eq!(d.count(USER, "Processed"), 0);
    assert_eq!(ids(&src.list().await.unwrap()), vec![listed[3].remote_id.clone()]);
    src.settle(&outcomes).await.unwrap();
    src.close().await.unwrap();
}

#[tokio::test]
async fn fallback_without_move_and_uidplus() {
    let d = dovecot();
    let mails: Vec<Vec<u8>> = (0..6).map(sample_mail).collect();
    d.deliver_many(USER, "INBOX", &mails).unwrap();
    let mut src = ImapSource::connect(imap_config(&d, SettleAction::Move)).await.unwrap();
    assert_eq!(src.has_move(), Some(true));
    src.disable_extensions(true, true);
    assert_eq!(src.has_move(), Some(false));

    let listed = src.list().await.unwrap();
    let outcomes: Vec<_> = listed
        .iter()
        .enumerate()
        .map(|(i, l)| (l.remote_id.clone(), if i % 2 == 0 { Outcome::Processed } else { Outcome::Failed }))
        .collect();
    src.settle(&outcomes[..4]).await.unwrap();
    assert_eq!(d.count(USER, "INBOX"), 2, "copied away and expunged");
    assert_eq!(d.count(USER, "Processed"), 2);
    assert_eq!(d.count(USER, "Errors"), 2);
    // Idempotent in the fallback too, then the rest.
    src.settle(&outcomes).await.unwrap();
    assert_eq!(d.count(USER, "INBOX"), 0);
    assert_eq!(d.count(USER, "Processed"), 3);
    assert_eq!(d.count(USER, "Errors"), 3);
    src.close().await.unwrap();
}

#[tokio::test]
async fn existing_folders_are_reused() {
    let d = dovecot();
    d.ensure_folder(USER, "Processed").unwrap();
    d.ensure_folder(USER, "Errors").unwrap();
    d.deliver(USER, "Processed", &sample_mail(99)).unwrap();
    let mut src = ImapSource::connect(imap_config(&d, SettleAction::Move)).await.unwrap();
    assert_eq!(d.count(USER, "Processed"), 1, "existing folder kept as it was");
    src.close().await.unwrap();
    // A second robot session finds them and does not fail.
    let mut src = ImapSource::connect(imap_config(&d, SettleAction::Move)).await.unwrap();
    src.close().await.unwrap();
}

#[tokio::test]
async fn fetch_leaves_out_vanished_and_foreign_ids() {
    let d = dovecot();
    d.deliver_many(USER, "INBOX", (0..3).map(sample_mail)).unwrap();
    let mut src = ImapSource::connect(imap_config(&d, SettleAction::Move)).await.unwrap();
    let listed = src.list().await.unwrap();
    let (validity, _) = mailrobot_sources::imap::parse_remote_id(&listed[0].remote_id).unwrap();
    src.settle(&[(listed[0].remote_id.clone(), Outcome::Processed)]).await.unwrap();

    let asked = vec![
        listed[0].remote_id.clone(),               // moved away
        listed[1].remote_id.clone(),               // still there
        format!("{}:999", validity),               // never existed
        format!("{}:2", validity.wrapping_add(1)), // other UIDVALIDITY
        "garbage".to_string(),
    ];
    let fetched = src.fetch(&asked).await.unwrap();
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].remote_id, listed[1].remote_id);
    // Settling ids that name nothing succeeds.
    src.settle(&[(asked[2].clone(), Outcome::Failed), (asked[3].clone(), Outcome::Processed)]).await.unwrap();
    assert_eq!(d.count(USER, "INBOX"), 2);
    src.close().await.unwrap();
}

#[tokio::test]
async fn mails_with_bare_lf_come_back_with_crlf() {
    let d = dovecot();
    let lf_mail = b"From: a@example.org\nSubject: lf\n\nbody line\n".to_vec();
    d.deliver(USER, "INBOX", &lf_mail).unwrap();
    let mut src = ImapSource::connect(imap_config(&d, SettleAction::Move)).await.unwrap();
    let listed = src.list().await.unwrap();
    let fetched = src.fetch(&ids(&listed)).await.unwrap();
    assert_eq!(fetched.len(), 1);
    assert_eq!(crlf(&fetched[0].raw), crlf(&lf_mail));
    src.close().await.unwrap();
}

#[tokio::test]
async fn new_mail_is_seen_on_next_list_and_after_close() {
    let d = dovecot();
    let mut src = ImapSource::connect(imap_config(&d, SettleAction::Move)).await.unwrap();
    assert!(src.list().await.unwrap().is_empty());
    d.deliver(USER, "INBOX", &sample_mail(1)).unwrap();
    assert_eq!(src.list().await.unwrap().len(), 1);
    src.close().await.unwrap();
    // After close the source reconnects on its own.
    d.deliver(USER, "INBOX", &sample_mail(2)).unwrap();
    let listed = src.list().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(src.fetch(&ids(&listed)).await.unwrap().len(), 2);
    src.close().await.unwrap();
}

#[tokio::test]
async fn wrong_password_is_a_permanent_error_naming_the_problem() {
    let d = dovecot();
    let mut cfg = imap_config(&d, SettleAction::Move);
    cfg.credentials =
        mailrobot_sources::Credentials::Password { username: USER.into(), password: "wrong-password-123".into() };
    let err = ImapSource::connect(cfg).await.unwrap_err();
    let msg = err.to_string();
    assert!(err.is_permanent(), "{msg}");
    assert!(msg.contains("check the username and password"), "{msg}");
    assert!(msg.contains(USER) && msg.contains(&d.imap_port().to_string()), "{msg}");
    assert!(msg.contains("AUTHENTICATIONFAILED"), "{msg}");
    assert!(!msg.contains("wrong-password-123"), "password leaked: {msg}");
}

#[tokio::test]
async fn missing_watched_folder_is_permanent() {
    let d = dovecot();
    let mut cfg = imap_config(&d, SettleAction::Move);
    cfg.folder = "NoSuchFolder".into();
    let err = ImapSource::connect(cfg).await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("NoSuchFolder"), "{err}");
}

#[tokio::test]
async fn nothing_listening_is_transient() {
    let d = dovecot();
    let mut cfg = imap_config(&d, SettleAction::Move);
    // A port that was free a moment ago.
    cfg.port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = ImapSource::connect(cfg).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn error_folder_deleted_meanwhile_is_created_again() {
    let d = dovecot();
    d.deliver_many(USER, "INBOX", (0..2).map(sample_mail)).unwrap();
    let mut src = ImapSource::connect(imap_config(&d, SettleAction::Move)).await.unwrap();
    let listed = src.list().await.unwrap();
    // Someone removes the error folder while the robot runs.
    std::fs::remove_dir_all(d.folder_dir(USER, "Errors")).unwrap();
    src.settle(&[(listed[0].remote_id.clone(), Outcome::Failed)]).await.unwrap();
    assert_eq!(d.count(USER, "Errors"), 1);
    src.close().await.unwrap();
}

#[tokio::test]
async fn reconnects_after_the_server_drops_the_session() {
    let d = dovecot();
    d.deliver_many(USER, "INBOX", (0..3).map(sample_mail)).unwrap();
    let mut src = ImapSource::connect(imap_config(&d, SettleAction::Move)).await.unwrap();
    let listed = src.list().await.unwrap();
    kick(&d);
    // Each call after a kick works on a fresh connection.
    let fetched = src.fetch(&ids(&listed)).await.unwrap();
    assert_eq!(fetched.len(), 3);
    kick(&d);
    src.settle(&[(listed[0].remote_id.clone(), Outcome::Processed)]).await.unwrap();
    kick(&d);
    assert_eq!(src.list().await.unwrap().len(), 2);
    src.close().await.unwrap();
    assert_eq!(d.count(USER, "Processed"), 1);
}

/// Kicks the user's sessions and waits until the server has really closed
/// them (doveadm only signals the processes).
fn kick(d: &mailrobot_testkit::dovecot::Dovecot) {
    d.kick(USER).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
}

#[tokio::test]
async fn twenty_concurrent_sessions() {
    let d = dovecot();
    d.deliver_many(USER, "INBOX", (0..5).map(sample_mail)).unwrap();
    let cfg = imap_config(&d, SettleAction::Move);
    // All twenty are open at the same time before any is closed.
    let mut sources = Vec::new();
    for _ in 0..20 {
        sources.push(ImapSource::connect(cfg.clone()).await.unwrap());
    }
    for src in &mut sources {
        assert_eq!(src.list().await.unwrap().len(), 5);
    }
    for mut src in sources {
        src.close().await.unwrap();
    }
}
