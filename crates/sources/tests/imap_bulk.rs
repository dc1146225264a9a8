//! Many mails through IMAP, fetched in chunks: correct and reasonably fast.

mod common;

use std::collections::HashSet;
use std::time::Instant;

use common::*;
use mailrobot_sources::imap::ImapSource;
use mailrobot_sources::{MailSource, Outcome, SettleAction};

const MAILS: usize = 2_000;
const CHUNK: usize = 500;

#[tokio::test]
async fn two_thousand_mails_in_chunks_of_500() {
    let d = dovecot();
    let t = Instant::now();
    let mails: Vec<Vec<u8>> = (0..MAILS).map(sample_mail).collect();
    d.deliver_many(USER, "INBOX", &mails).unwrap();
    println!("delivered {MAILS} mails in {:?}", t.elapsed());

    let t = Instant::now();
    let mut src = ImapSource::connect(imap_config(&d, SettleAction::Move)).await.unwrap();
    let listed = src.list().await.unwrap();
    println!("connect + list of {} in {:?}", listed.len(), t.elapsed());
    assert_eq!(listed.len(), MAILS);

    let expected: HashSet<Vec<u8>> = mails.into_iter().collect();
    let mut seen_ids = HashSet::new();
    let mut seen_bodies = HashSet::new();
    let t = Instant::now();
    for chunk in listed.chunks(CHUNK) {
        let ids = ids(chunk);
        let fetched = src.fetch(&ids).await.unwrap();
        assert_eq!(fetched.len(), chunk.len());
        for m in fetched {
            assert!(ids.contains(&m.remote_id));
            assert!(expected.contains(&m.raw), "body of {} differs", m.remote_id);
            assert!(seen_ids.insert(m.remote_id));
            seen_bodies.insert(m.raw);
        }
        let outcomes: Vec<_> = ids.into_iter().map(|id| (id, Outcome::Processed)).collect();
        src.settle(&outcomes).await.unwrap();
    }
    let elapsed = t.elapsed();
    println!(
        "fetched + settled {MAILS} mails in chunks of {CHUNK} in {elapsed:?} ({:.0} mails/s)",
        MAILS as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(seen_bodies.len(), MAILS, "every mail exactly once");
    assert_eq!(d.count(USER, "INBOX"), 0);
    assert_eq!(d.count(USER, "Processed"), MAILS);
    assert!(src.list().await.unwrap().is_empty());
    src.close().await.unwrap();
}
