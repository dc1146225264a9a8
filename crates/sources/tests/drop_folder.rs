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
