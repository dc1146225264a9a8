//! POP3 source against a real Dovecot.

mod common;

use common::*;
use mailrobot_sources::pop3::Pop3Source;
use mailrobot_sources::{Credentials, MailSource, Outcome};

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

#[tokio::test]
async fn list_fetch_and_delete_on_quit() {
    let d = dovecot();
    let mails: Vec<Vec<u8>> = (0..5).map(sample_mail).collect();
    d.deliver_many(USER, "INBOX", &mails).unwrap();

    let mut src = Pop3Source::connect(pop3_config(&d, false)).await.unwrap();
    let listed = src.list().await.unwrap();
    assert_eq!(listed.len(), 5);
    let unique: std::collections::HashSet<_> = ids(&listed).into_iter().collect();
    assert_eq!(unique.len(), 5, "UIDLs are distinct");

    let fetched = src.fetch(&ids(&listed)).await.unwrap();
    assert_eq!(fetched.len(), 5);
    // Dot-stuffed lines (".leading", ".", "..two") come back as delivered.
    assert_eq!(sorted(fetched.iter().map(|m| m.raw.clone()).collect()), sorted(mails.clone()));
    for m in &fetched {
        let l = listed.iter().find(|l| l.remote_id == m.remote_id).unwrap();
        assert_eq!(l.size, Some(m.raw.len() as u64), "LIST size matches");
    }

    let outcomes: Vec<_> = listed
        .iter()
        .enumerate()
        .map(|(i, l)| (l.remote_id.clone(), if i < 3 { Outcome::Processed } else { Outcome::Failed }))
        .collect();
    src.settle(&outcomes).await.unwrap();
    // Within the session the deleted mails are gone already...
    assert_eq!(src.list().await.unwrap().len(), 2);
    // ...and settling again is fine.
    src.settle(&outcomes).await.unwrap();
    assert_eq!(d.count(USER, "INBOX"), 5, "nothing deleted before QUIT");
    src.close().await.unwrap();
    assert_eq!(d.count(USER, "INBOX"), 2, "processed mails deleted at QUIT, failed ones kept");

    // The source reconnects after close; the same UIDLs name the same mails.
    let left = src.list().await.unwrap();
    let expect: Vec<String> = listed[3..].iter().map(|l| l.remote_id.clone()).collect();
    assert_eq!(ids(&left), expect);
    src.close().await.unwrap();
}

#[tokio::test]
async fn keep_on_server_deletes_nothing() {
    let d = dovecot();
    d.deliver_many(USER, "INBOX", (0..3).map(sample_mail)).unwrap();
    let mut src = Pop3Source::connect(pop3_config(&d, true)).await.unwrap();
    let listed = src.list().await.unwrap();
    let outcomes: Vec<_> = listed.iter().map(|l| (l.remote_id.clone(), Outcome::Processed)).collect();
    src.fetch(&ids(&listed)).await.unwrap();
    src.settle(&outcomes).await.unwrap();
    src.close().await.unwrap();
    assert_eq!(d.count(USER, "INBOX"), 3, "mails still there after QUIT");
    let again = src.list().await.unwrap();
    assert_eq!(ids(&again), ids(&listed), "same UIDLs in the next session");
    src.close().await.unwrap();
}

#[tokio::test]
async fn dropped_session_rolls_back_deletes() {
    let d = dovecot();
    d.deliver_many(USER, "INBOX", (0..2).map(sample_mail)).unwrap();
    let mut src = Pop3Source::connect(pop3_config(&d, false)).await.unwrap();
    let listed = src.list().await.unwrap();
    let outcomes: Vec<_> = listed.iter().map(|l| (l.remote_id.clone(), Outcome::Processed)).collect();
    src.settle(&outcomes).await.unwrap();
    drop(src); // no QUIT
    // Give the server a moment to notice the closed connection.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(d.count(USER, "INBOX"), 2);

    // Settling in a later session (idempotent retry) commits at QUIT.
    let mut src = Pop3Source::connect(pop3_config(&d, false)).await.unwrap();
    src.settle(&outcomes).await.unwrap();
    src.close().await.unwrap();
    assert_eq!(d.count(USER, "INBOX"), 0);
}

#[tokio::test]
async fn unknown_ids_are_left_out_and_settle_fine() {
    let d = dovecot();
    d.deliver(USER, "INBOX", &sample_mail(1)).unwrap();
    let mut src = Pop3Source::connect(pop3_config(&d, false)).await.unwrap();
    let listed = src.list().await.unwrap();
    let asked = vec![listed[0].remote_id.clone(), "no-such-uidl".to_string()];
    let fetched = src.fetch(&asked).await.unwrap();
    assert_eq!(fetched.len(), 1);
    src.settle(&[("no-such-uidl".into(), Outcome::Processed)]).await.unwrap();
    src.close().await.unwrap();
    assert_eq!(d.count(USER, "INBOX"), 1);
}

#[tokio::test]
async fn many_mails_pipelined() {
    let d = dovecot();
    let mails: Vec<Vec<u8>> = (0..300).map(sample_mail).collect();
    d.deliver_many(USER, "INBOX", &mails).unwrap();
    let t = std::time::Instant::now();
    let mut src = Pop3Source::connect(pop3_config(&d, false)).await.unwrap();
    let listed = src.list().await.unwrap();
    let fetched = src.fetch(&ids(&listed)).await.unwrap();
    assert_eq!(sorted(fetched.into_iter().map(|m| m.raw).collect()), sorted(mails));
    let outcomes: Vec<_> = listed.iter().map(|l| (l.remote_id.clone(), Outcome::Processed)).collect();
    src.settle(&outcomes).await.unwrap();
    src.close().await.unwrap();
    println!("POP3: 300 mails listed, fetched, deleted in {:?}", t.elapsed());
    assert_eq!(d.count(USER, "INBOX"), 0);
}

#[tokio::test]
async fn wrong_password_is_a_permanent_error_naming_the_problem() {
    let d = dovecot();
    let mut cfg = pop3_config(&d, false);
    cfg.credentials = Credentials::Password { username: USER.into(), password: "wrong-password-123".into() };
    let err = Pop3Source::connect(cfg).await.unwrap_err();
    let msg = err.to_string();
    assert!(err.is_permanent(), "{msg}");
    assert!(msg.contains("check the username and password"), "{msg}");
    assert!(msg.contains(USER), "{msg}");
    assert!(!msg.contains("wrong-password-123"), "password leaked: {msg}");
}

#[tokio::test]
async fn reconnects_after_the_server_drops_the_session() {
    let d = dovecot();
    d.deliver_many(USER, "INBOX", (0..3).map(sample_mail)).unwrap();
    let mut src = Pop3Source::connect(pop3_config(&d, false)).await.unwrap();
    let listed = src.list().await.unwrap();
    kick(&d);
    assert_eq!(src.fetch(&ids(&listed)).await.unwrap().len(), 3);
    kick(&d);
    src.settle(&[(listed[0].remote_id.clone(), Outcome::Processed)]).await.unwrap();
    kick(&d); // the DELE above is rolled back...
    assert_eq!(src.list().await.unwrap().len(), 3);
    // ...and done again, idempotently, in the new session.
    src.settle(&[(listed[0].remote_id.clone(), Outcome::Processed)]).await.unwrap();
    src.close().await.unwrap();
    assert_eq!(d.count(USER, "INBOX"), 2);
}

/// Kicks the user's sessions and waits until the server has really closed
/// them (doveadm only signals the processes).
fn kick(d: &mailrobot_testkit::dovecot::Dovecot) {
    d.kick(USER).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
}
