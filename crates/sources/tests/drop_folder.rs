//! Drop-folder source on a temp dir.

use std::fs;

use mailrobot_sources::drop_folder::DropFolderSource;
use mailrobot_sources::{MailSource, Outcome};

#[tokio::test]
async fn list_fetch_settle_with_name_clash() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("drop");
    let mut src = DropFolderSource::open(root.clone()).unwrap();
    for sub in ["inbox", "tmp", "processed", "failed"] {
        assert!(root.join(sub).is_dir(), "{sub} created");
    }
    let inbox = root.join("inbox");
    fs::write(inbox.join("b.eml"), b"Subject: b\r\n\r\nB\r\n").unwrap();
    fs::write(inbox.join("a.eml"), b"Subject: a\r\n\r\nA\r\n").unwrap();
    fs::write(inbox.join("c.eml"), b"Subject: c\r\n\r\nC\r\n").unwrap();
    fs::write(inbox.join("notes.txt"), b"not a mail").unwrap();
    fs::create_dir(inbox.join("dir.eml")).unwrap();
    fs::write(root.join("tmp").join("half.eml"), b"Subj").unwrap();
    // Symlinks are not regular files in the inbox.
    std::os::unix::fs::symlink(inbox.join("a.eml"), inbox.join("link.eml")).unwrap();

    let listed = src.list().await.unwrap();
    let names: Vec<_> = listed.iter().map(|l| l.remote_id.as_str()).collect();
    assert_eq!(names, ["a.eml", "b.eml", "c.eml"], "only regular *.eml, sorted");
    assert_eq!(listed[0].size, Some(17));

    let ids: Vec<String> = vec!["c.eml".into(), "a.eml".into(), "gone.eml".into()];
    let fetched = src.fetch(&ids).await.unwrap();
    assert_eq!(fetched.len(), 2);
    assert_eq!(fetched[0].remote_id, "c.eml");
    assert_eq!(fetched[0].raw, b"Subject: c\r\n\r\nC\r\n");

    // A file of the same name already failed once.
    fs::write(root.join("failed").join("b.eml"), b"earlier b").unwrap();
    let outcomes = vec![
        ("a.eml".to_string(), Outcome::Processed),
        ("b.eml".to_string(), Outcome::Failed),
        ("c.eml".to_string(), Outcome::Failed),
    ];
    src.settle(&outcomes).await.unwrap();
    assert_eq!(fs::read(root.join("processed/a.eml")).unwrap(), b"Subject: a\r\n\r\nA\r\n");
    assert_eq!(fs::read(root.join("failed/b.eml")).unwrap(), b"earlier b", "never overwritten");
    assert_eq!(fs::read(root.join("failed/b-1.eml")).unwrap(), b"Subject: b\r\n\r\nB\r\n");
    assert!(root.join("failed/c.eml").exists());
    let left: Vec<_> = src.list().await.unwrap().into_iter().map(|l| l.remote_id).collect();
    assert!(left.is_empty(), "{left:?}");

    // Settling again (files are gone) succeeds and changes nothing.
    src.settle(&outcomes).await.unwrap();
    assert_eq!(fs::read_dir(root.join("failed")).unwrap().count(), 3);
    src.close().await.unwrap();
}

#[tokio::test]
async fn ids_that_are_paths_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = DropFolderSource::open(tmp.path().to_path_buf()).unwrap();
    fs::write(tmp.path().join("secret.eml"), b"x").unwrap();
    let fetched = src.fetch(&["../secret.eml".to_string()]).await.unwrap();
    assert!(fetched.is_empty());
    src.settle(&[("../secret.eml".to_string(), Outcome::Processed)]).await.unwrap();
    assert!(tmp.path().join("secret.eml").exists());
}

#[test]
fn open_fails_clearly_when_it_cannot_create() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain-file");
    fs::write(&file, b"").unwrap();
    let err = DropFolderSource::open(file.join("drop")).unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("plain-file"), "{err}");
}

/// A writer to the inbox swaps a listed file for a symlink to a file it
/// cannot read itself (the master key) between list and fetch: the robot
/// must refuse the link, never read through it. Run many times, with the
/// swap racing the fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_swapped_for_a_symlink_after_listing_is_refused_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("master.key");
    fs::write(&secret, b"SECRET-MASTER-KEY-0123456789").unwrap();
    let root = tmp.path().join("drop");
    let mut src = DropFolderSource::open(root.clone()).unwrap().with_max_message_bytes(1 << 20);
    let inbox = root.join("inbox");

    // Deterministic: listed as a file, a symlink by the time it is fetched.
    fs::write(inbox.join("swap.eml"), b"Subject: innocent\r\n\r\nhi\r\n").unwrap();
    assert_eq!(src.list().await.unwrap().len(), 1);
    fs::remove_file(inbox.join("swap.eml")).unwrap();
    std::os::unix::fs::symlink(&secret, inbox.join("swap.eml")).unwrap();
    let fetched = src.fetch(&["swap.eml".to_string()]).await.unwrap();
    assert_eq!(fetched.len(), 1);
    assert!(fetched[0].raw.is_empty(), "nothing read through the link");
    assert!(
        matches!(&fetched[0].refused, Some(mailrobot_sources::Refusal::NotAMail { reason }) if reason.contains("symbolic link")),
        "{:?}",
        fetched[0].refused
    );
    fs::remove_file(inbox.join("swap.eml")).unwrap();

    // Racing: another thread flips the name between file and link while
    // fetches run; every fetch gets the mail or a refusal, never the key.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (inbox, secret, stop) = (inbox.clone(), secret.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let tmp_file = inbox.join(".next");
                fs::write(&tmp_file, b"Subject: innocent\r\n\r\nhi\r\n").unwrap();
                fs::rename(&tmp_file, inbox.join("race.eml")).unwrap();
                let tmp_link = inbox.join(".link");
                let _ = fs::remove_file(&tmp_link);
                std::os::unix::fs::symlink(&secret, &tmp_link).unwrap();
                fs::rename(&tmp_link, inbox.join("race.eml")).unwrap();
                flips += 1;
            }
            flips
        })
    };
    let (mut mails, mut refusals) = (0, 0);
    for _ in 0..2000 {
        for mail in src.fetch(&["race.eml".to_string()]).await.unwrap() {
            let secret_seen = mail.raw.windows(6).any(|w| w == b"SECRET");
            assert!(!secret_seen, "read the master key through a symlink");
            if mail.refused.is_some() {
                refusals += 1;
            } else {
                assert_eq!(mail.raw, b"Subject: innocent\r\n\r\nhi\r\n");
                mails += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    assert!(flips > 10 && mails + refusals > 1000, "the race ran: {flips} flips, {mails} mails, {refusals} refusals");
}

#[tokio::test]
async fn a_file_over_the_limit_is_refused_without_reading_it_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("drop");
    let mut src = DropFolderSource::open(root.clone()).unwrap().with_max_message_bytes(1000);
    fs::write(root.join("inbox/big.eml"), vec![b'a'; 5000]).unwrap();
    let fetched = src.fetch(&["big.eml".to_string()]).await.unwrap();
    assert_eq!(fetched[0].oversized_at_least(), Some(5000));
    assert!(fetched[0].raw.is_empty());
}
