//! The engine's rounds of outbound mail against a real store (a SQLite file
//! and a PostgreSQL database): a round that runs longer than its rows' lease
//! leaves the rows it has not reached to the lease (a later round takes
//! them), so no row is ever held by two senders at once, and every mail is
//! sent exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailrobot_core::{OutgoingKind, OutgoingMail, TagFormat};
use mailrobot_outbox::{Engine, EngineConfig, MailTransport, SendFailure};
use mailrobot_store::{MailboxKind, NewMailbox, OutboxStore, PgStore, SqliteStore, Store};

/// An SMTP server stand-in that takes its time: counts each Message-ID sent.
struct SlowTransport {
    sent: Mutex<HashMap<String, u32>>,
    delay: Duration,
}

#[async_trait::async_trait]
impl MailTransport for SlowTransport {
    async fn send(&self, _mailbox: i64, _from: &str, _to: &str, message: &[u8]) -> Result<(), SendFailure> {
        tokio::time::sleep(self.delay).await;
        let text = String::from_utf8_lossy(message);
        let id = text.lines().find_map(|l| l.strip_prefix("Message-ID: ")).unwrap_or("").to_string();
        *self.sent.lock().unwrap().entry(id).or_default() += 1;
        Ok(())
    }
}

fn queued(store: &dyn Store, mailbox_id: i64, n: usize) {
    store
        .with_ledger(&mut |ledger| {
            for i in 0..n {
                ledger.queue_mail(&OutgoingMail {
                    kind: OutgoingKind::Acknowledgement,
                    mailbox_id,
                    ticket: None,
                    journal_id: i as i64,
                    from: "desk@contoso.test".into(),
                    to: format!("ann{i}@example.com"),
                    subject: format!("mail {i}"),
                    message_id: format!("m{i}@contoso.test"),
                    in_reply_to: None,
                    references: Vec::new(),
                    text: "hello".into(),
                    html: None,
                    reply_to: None,
                    attachments: Vec::new(),
                })?;
            }
            Ok(())
        })
        .unwrap();
}

/// The engine holds its store as `Arc<dyn …>`, so each backend's test owns
/// its store (the `on_both_backends!` macro lends one).
mod a_round_longer_than_its_lease_leaves_the_rest_to_a_later_round {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite() {
        let dir = tempfile::tempdir().unwrap();
        super::a_round_longer_than_its_lease_leaves_the_rest_to_a_later_round(Arc::new(
            SqliteStore::open(&dir.path().join("db")).unwrap(),
        ))
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn postgres() {
        let db = mailrobot_store::testing::TestDatabase::create();
        super::a_round_longer_than_its_lease_leaves_the_rest_to_a_later_round(Arc::new(
            PgStore::connect(&db.url).unwrap(),
        ))
        .await;
    }
}

async fn a_round_longer_than_its_lease_leaves_the_rest_to_a_later_round<S: Store + OutboxStore + 'static>(
    store: Arc<S>,
) {
    let mailbox = store
        .add_mailbox(&NewMailbox {
            name: "desk".into(),
            kind: MailboxKind::DropFolder,
            config: serde_json::json!({"path": "/nonexistent"}),
            sealed_secret: None,
            connection_id: None,
            poll_seconds: 60,
            max_message_bytes: 1 << 20,
        })
        .unwrap();
    queued(store.as_ref(), mailbox.id, 20);
    let transport = Arc::new(SlowTransport { sent: Mutex::default(), delay: Duration::from_millis(200) });
    let mut config = EngineConfig::new("http://127.0.0.1", TagFormat::default());
    config.concurrency = 2;
    config.lease = Duration::from_secs(1);
    let engine = Engine::new(
        store.clone() as Arc<dyn Store>,
        store.clone() as Arc<dyn OutboxStore>,
        Arc::new(mailrobot_secrets::SecretBox::from_key(&[7; 32])),
        config,
    )
    .unwrap()
    .with_mail(transport.clone());

    // 20 mails, 2 at a time, 200 ms each: 2 s of work against a 1 s lease.
    engine.run_once().await;
    let first = transport.sent.lock().unwrap().len();
    assert!((2..20).contains(&first), "the round stopped short of its lease: {first} sent");
    let states: Vec<String> = store.mails().unwrap().iter().map(|m| m.state.to_string()).collect();
    assert_eq!(states.iter().filter(|s| *s == "sent").count(), first, "{states:?}");
    // The rest are still leased: nothing is due until the lease runs out.
    assert_eq!(engine.run_once().await, 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    while engine.run_once().await > 0 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let sent = transport.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 20, "every mail sent: {sent:?}");
    assert!(sent.values().all(|n| *n == 1), "none sent twice: {sent:?}");
    assert!(store.mails().unwrap().iter().all(|m| m.state.to_string() == "sent"));
}
