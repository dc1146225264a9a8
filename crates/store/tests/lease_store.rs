//! Nodes, mailbox leases and fencing, on both backends: several store
//! handles on one database stand for several nodes.

use std::time::Duration;

use mailrobot_store::*;

/// `n` new mailboxes, named apart from any added before.
fn mailboxes(store: &impl Store, n: usize) -> Vec<i64> {
    let before = store.mailboxes().unwrap().len();
    (before..before + n)
        .map(|i| {
            store
                .add_mailbox(&NewMailbox {
                    name: format!("box{i}"),
                    kind: MailboxKind::DropFolder,
                    config: serde_json::json!({"path": "/tmp/x"}),
                    sealed_secret: None,
                    connection_id: None,
                    poll_seconds: 60,
                    max_message_bytes: 1 << 20,
                })
                .unwrap()
                .id
        })
        .collect()
}

fn subscription(mailbox_id: i64, id: &str) -> PushSubscription {
    PushSubscription {
        mailbox_id,
        subscription_id: id.into(),
        sealed_client_state: format!("sealed state of {id}").into_bytes(),
        notification_url: "https://robot.example/graph/notifications".into(),
        watching: "connection 1: desk@contoso.test inbox".into(),
        expires_at: "2026-12-05T10:00:00.000Z".into(),
        created_at: "2026-12-02T10:00:00.000Z".into(),
        renewed_at: None,
    }
}

/// A mailbox has one subscription at most: saving another replaces it, a
/// subscription id names one mailbox, the clientState is among the sealed
/// values a key rotation reseals, and the row goes when forgotten.
fn push_subscriptions_are_one_per_mailbox<S: Store + SealedStore>(store: &S) {
    let ids = mailboxes(store, 2);
    assert!(store.push_subscription(ids[0]).unwrap().is_none());
    store.save_push_subscription(&subscription(ids[0], "sub-a")).unwrap();
    assert_eq!(store.push_subscription(ids[0]).unwrap(), Some(subscription(ids[0], "sub-a")));
    assert_eq!(store.push_subscription_by_id("sub-a").unwrap().map(|s| s.mailbox_id), Some(ids[0]));

    let renewed =
        PushSubscription { renewed_at: Some("2026-12-03T10:00:00.000Z".into()), ..subscription(ids[0], "sub-b") };
    store.save_push_subscription(&renewed).unwrap();
    assert_eq!(store.push_subscription(ids[0]).unwrap(), Some(renewed));
    assert!(store.push_subscription_by_id("sub-a").unwrap().is_none(), "replaced");
    // The same id saved for another mailbox moves there.
    store.save_push_subscription(&subscription(ids[1], "sub-b")).unwrap();
    assert!(store.push_subscription(ids[0]).unwrap().is_none());
    assert_eq!(store.push_subscription_by_id("sub-b").unwrap().map(|s| s.mailbox_id), Some(ids[1]));

    let sealed: Vec<SealedValue> = store
        .sealed_values()
        .unwrap()
        .into_iter()
        .filter(|v| matches!(v.at, SealedRef::PushClientState { .. }))
        .collect();
    assert_eq!(sealed.len(), 1, "{sealed:?}");
    assert_eq!(sealed[0].at, SealedRef::PushClientState { mailbox_id: ids[1] });
    let resealed = Resealed { old: sealed[0].clone(), new: b"resealed".to_vec() };
    assert_eq!(store.replace_sealed(&[resealed]).unwrap(), 1);
    assert_eq!(store.push_subscription(ids[1]).unwrap().unwrap().sealed_client_state, b"resealed");

    store.forget_push_subscription(ids[1]).unwrap();
    assert!(store.push_subscription_by_id("sub-b").unwrap().is_none());
}

mailrobot_store::on_both_backends!(push_subscriptions_are_one_per_mailbox);

/// A sync state belongs to the settings it was made with (a deltaLink to
/// its folder): changing them starts it over; saving the same keeps it.
fn new_settings_start_the_sync_state_over<S: Store>(store: &S) {
    let id = mailboxes(store, 1)[0];
    let mailbox = store.mailbox(id).unwrap();
    store.set_mailbox_sync_state(id, Some("delta-of-inbox")).unwrap();
    let same = MailboxUpdate {
        config: mailbox.config.clone(),
        poll_seconds: 30,
        max_message_bytes: mailbox.max_message_bytes,
        sealed_secret: None,
    };
    store.update_mailbox(id, &same).unwrap();
    assert_eq!(store.mailbox_sync_state(id).unwrap().as_deref(), Some("delta-of-inbox"));
    let other = MailboxUpdate { config: serde_json::json!({"path": "/tmp/elsewhere"}), ..same };
    store.update_mailbox(id, &other).unwrap();
    assert_eq!(store.mailbox_sync_state(id).unwrap(), None);
}

mailrobot_store::on_both_backends!(new_settings_start_the_sync_state_over);

/// New mail announced to a node that does not hold the mailbox reaches the
/// holder at its next heartbeat, once; with no holder, the next node to take
/// the mailbox hears of it with the lease.
fn announced_mail_reaches_the_holder_at_its_next_heartbeat<S: Store + LeaseStore>(open: &dyn Fn() -> S) {
    let (a, b) = (open(), open());
    let ids = mailboxes(&a, 2);
    node(&a, "a");
    assert_eq!(held(&a.heartbeat("a", TTL).unwrap()), ids);
    assert!(b.announce_mail(ids[1], None).unwrap());
    assert_eq!(a.heartbeat("a", TTL).unwrap().announced, vec![Announcement { mailbox_id: ids[1], event: None }]);
    assert!(a.heartbeat("a", TTL).unwrap().announced.is_empty(), "told once");
    // A lifecycle event comes with it; a plain notification after it does
    // not wipe it out.
    assert!(b.announce_mail(ids[0], Some("subscriptionRemoved")).unwrap());
    assert!(b.announce_mail(ids[0], None).unwrap());
    let told = a.heartbeat("a", TTL).unwrap().announced;
    assert_eq!(told, vec![Announcement { mailbox_id: ids[0], event: Some("subscriptionRemoved".into()) }]);
    assert!(a.heartbeat("a", TTL).unwrap().announced.is_empty(), "told once");
    a.stop_node("a").unwrap();
    assert!(!b.announce_mail(ids[0], None).unwrap(), "no node holds it");
    node(&b, "b");
    let beat = b.heartbeat("b", TTL).unwrap();
    assert_eq!(held(&beat), ids);
    assert_eq!(beat.announced, vec![Announcement { mailbox_id: ids[0], event: None }], "told with the lease");
}

mailrobot_store::on_both_backends_opened!(announced_mail_reaches_the_holder_at_its_next_heartbeat);

fn node<S: LeaseStore>(store: &S, id: &str) {
    store.register_node(&NewNode::serve(id, "test", 1)).unwrap();
    store.fences().enable();
}

fn held(beat: &Heartbeat) -> Vec<i64> {
    beat.held.iter().map(|f| f.mailbox_id).collect()
}

const TTL: Duration = Duration::from_secs(15);

/// A node alone takes every mailbox; a second one gets half within two
/// heartbeats (the first gives up what is over its share, the second takes
/// it); `nodes` tells who holds what.
fn leases_are_shared_out_when_a_node_joins<S: Store + LeaseStore>(open: &dyn Fn() -> S) {
    let (a, b) = (open(), open());
    mailboxes(&a, 6);
    node(&a, "a");
    assert_eq!(a.heartbeat("a", TTL).unwrap().held.len(), 6);
    node(&b, "b");
    assert!(b.heartbeat("b", TTL).unwrap().held.is_empty(), "nothing is free yet");
    let beat = a.heartbeat("a", TTL).unwrap();
    assert_eq!((beat.held.len(), beat.released.len()), (3, 3), "a gives up what is over its share");
    let b_held = held(&b.heartbeat("b", TTL).unwrap());
    assert_eq!(b_held.len(), 3);
    let a_held = held(&a.heartbeat("a", TTL).unwrap());
    assert!(a_held.iter().all(|m| !b_held.contains(m)), "{a_held:?} {b_held:?}");
    let nodes = a.nodes(lease::ALIVE_WITHIN).unwrap();
    assert_eq!(nodes.len(), 2);
    assert!(nodes.iter().all(|n| n.alive && n.mailboxes.len() == 3), "{nodes:?}");
    // A stopping node frees its leases at once.
    a.stop_node("a").unwrap();
    assert_eq!(b.heartbeat("b", TTL).unwrap().held.len(), 6);
    assert!(!b.nodes(lease::ALIVE_WITHIN).unwrap().iter().find(|n| n.node_id == "a").unwrap().alive);
}

/// A node that stops heartbeating (killed, or paused) loses its leases
/// after the TTL; the node that takes one gets a higher token; the paused
/// node's writes are refused when it wakes, and counted.
fn a_paused_node_is_fenced_when_it_wakes<S: Store + LeaseStore>(open: &dyn Fn() -> S) {
    let (a, b) = (open(), open());
    let ids = mailboxes(&a, 1);
    let short = Duration::from_millis(400);
    node(&a, "a");
    let a_fence = a.heartbeat("a", short).unwrap().held[0].clone();
    let raw = b"From: x@example.com\r\nSubject: one\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n".to_vec();
    assert_eq!(a.journal(ids[0], &[IncomingMail::fetched("r1", &raw)]).unwrap(), 1, "the holder writes");
    node(&b, "b");
    let beat = b.heartbeat("b", short).unwrap();
    assert!(beat.held.is_empty(), "a's lease is live");
    assert!(beat.next_expiry_in.is_some_and(|d| d <= short), "b knows when to look again: {beat:?}");
    // b without the lease may not write either.
    assert!(matches!(b.journal(ids[0], &[IncomingMail::fetched("r2", &raw)]), Err(StoreError::Fenced { .. })));
    // a is "paused" past its lease; b takes the mailbox with a new token.
    std::thread::sleep(short + Duration::from_millis(100));
    let b_fence = b.heartbeat("b", TTL).unwrap().held[0].clone();
    assert!(b_fence.token > a_fence.token, "{b_fence:?} after {a_fence:?}");
    // a wakes up and tries every kind of write it makes for the mailbox.
    let refused_before = a.fences().refused();
    let writes: Vec<(&str, Result<()>)> = vec![
        ("journal", a.journal(ids[0], &[IncomingMail::fetched("r3", &raw)]).map(|_| ())),
        ("sync state", a.set_mailbox_sync_state(ids[0], Some("stale"))),
        ("push subscription", a.save_push_subscription(&subscription(ids[0], "stale-sub"))),
    ];
    for (what, result) in writes {
        assert!(matches!(result, Err(StoreError::Fenced { .. })), "{what}: {result:?}");
        // Fenced drops the mailbox: restore a's stale view to try the next kind.
        a.fences().set(vec![a_fence.clone()]);
    }
    let pending = a.pending_mails(Some(ids[0]), 10, u64::MAX).unwrap();
    assert!(matches!(
        a.process_pending(Some(ids[0]), 10, u64::MAX, &ProcessingRules::default()),
        Err(StoreError::Fenced { .. })
    ));
    a.fences().set(vec![a_fence.clone()]);
    assert!(matches!(a.mark_settled(&[pending[0].journal_id]), Err(StoreError::Fenced { .. })));
    assert_eq!(a.fences().refused() - refused_before, 5, "every refused write is counted");
    assert!(a.fences().get(ids[0]).is_none(), "a drops the mailbox");
    // Nothing a wrote landed; b goes on.
    assert!(b.mailbox_sync_state(ids[0]).unwrap().is_none());
    assert!(b.push_subscription(ids[0]).unwrap().is_none());
    assert_eq!(b.known_remote_ids(ids[0], &["r1".into(), "r3".into()]).unwrap().len(), 1);
    assert_eq!(b.process_pending(Some(ids[0]), 10, u64::MAX, &ProcessingRules::default()).unwrap().len(), 1);
    // a's next heartbeat sees it holds nothing.
    assert!(a.heartbeat("a", TTL).unwrap().held.is_empty());
}

/// A `run-once` pass takes only free leases and counts for no share: the
/// node beside it gives nothing up for it and `nodes` does not list it; its
/// writes are fenced like a node's; when it stops its leases are free at
/// once and it leaves no row behind.
fn a_pass_takes_only_free_leases_and_counts_for_no_share<S: Store + LeaseStore>(open: &dyn Fn() -> S) {
    let (a, p) = (open(), open());
    let by_node = mailboxes(&a, 4);
    node(&a, "a");
    assert_eq!(held(&a.heartbeat("a", TTL).unwrap()), by_node);
    let added = mailboxes(&a, 2);
    p.register_node(&NewNode { kind: NodeKind::RunOnce, ..NewNode::serve("pass", "test", 2) }).unwrap();
    p.fences().enable();
    let taken = p.take_free_leases("pass", TTL).unwrap();
    assert_eq!(taken.held.iter().map(|f| f.mailbox_id).collect::<Vec<_>>(), added);
    assert_eq!(taken.held_elsewhere, by_node.iter().map(|&m| (m, "a".to_string())).collect::<Vec<_>>());
    let beat = a.heartbeat("a", TTL).unwrap();
    assert!(beat.released.is_empty(), "the pass counts for no share: {beat:?}");
    assert_eq!(held(&beat), by_node, "a cannot take what the pass holds");
    let nodes = a.nodes(lease::ALIVE_WITHIN).unwrap();
    assert_eq!(nodes.iter().map(|n| n.node_id.as_str()).collect::<Vec<_>>(), ["a"], "{nodes:?}");
    let raw = b"Subject: x\r\n\r\nx\r\n".to_vec();
    assert_eq!(p.journal(added[0], &[IncomingMail::fetched("r1", &raw)]).unwrap(), 1, "the pass writes for its own");
    assert!(matches!(p.journal(by_node[0], &[IncomingMail::fetched("r2", &raw)]), Err(StoreError::Fenced { .. })));
    assert_eq!(p.renew_leases("pass", TTL).unwrap(), taken.held, "renewed, nothing taken");
    p.stop_node("pass").unwrap();
    assert_eq!(a.heartbeat("a", TTL).unwrap().held.len(), 6, "free at once");
    assert!(p.nodes(Duration::from_secs(3600)).unwrap().iter().all(|n| n.node_id != "pass"));
}

/// A process of this machine that is gone (killed, crashed) has its leases
/// freed at once by the next one that starts here; one whose pid still
/// runs, or one of another machine, keeps them until they run out.
fn leases_of_processes_gone_from_this_machine_are_freed_at_once<S: Store + LeaseStore>(open: &dyn Fn() -> S) {
    let (a, b, c, d) = (open(), open(), open(), open());
    let ids = mailboxes(&a, 3);
    let on = |store: &S, id: &str, pid: i64, scope: &str| {
        store.register_node(&NewNode { pid_scope: Some(scope.into()), ..NewNode::serve(id, "test", pid) }).unwrap();
        store.fences().enable();
    };
    on(&a, "dead-here", 101, "machine-1");
    assert_eq!(held(&a.heartbeat("dead-here", TTL).unwrap()), ids);
    on(&c, "alive-here", 102, "machine-1");
    on(&d, "dead-elsewhere", 101, "machine-2");
    on(&b, "starting", 103, "machine-1");
    let gone = b.free_leases_of_gone("machine-1", &|pid| pid != 101).unwrap();
    assert_eq!(gone, ["dead-here"]);
    // Three live nodes now: its share is one of the three freed.
    assert_eq!(held(&b.heartbeat("starting", TTL).unwrap()).len(), 1);
    let nodes = b.nodes(lease::ALIVE_WITHIN).unwrap();
    let alive = |id: &str| nodes.iter().find(|n| n.node_id == id).unwrap().alive;
    assert!(!alive("dead-here") && alive("alive-here") && alive("dead-elsewhere"), "{nodes:?}");
    assert!(b.free_leases_of_gone("machine-1", &|pid| pid != 101).unwrap().is_empty(), "once");
}

/// Writes of a process that takes no leases (the CLI) are not fenced.
fn processes_without_leases_write_freely<S: Store + LeaseStore>(open: &dyn Fn() -> S) {
    let s = open();
    let ids = mailboxes(&s, 1);
    let raw = b"Subject: x\r\n\r\nx\r\n".to_vec();
    assert_eq!(s.journal(ids[0], &[IncomingMail::fetched("r1", &raw)]).unwrap(), 1);
    s.set_mailbox_sync_state(ids[0], Some("s")).unwrap();
    assert_eq!(s.fences().refused(), 0);
}

mailrobot_store::on_both_backends_opened!(
    leases_are_shared_out_when_a_node_joins,
    a_paused_node_is_fenced_when_it_wakes,
    processes_without_leases_write_freely,
    a_pass_takes_only_free_leases_and_counts_for_no_share,
    leases_of_processes_gone_from_this_machine_are_freed_at_once,
);

/// On PostgreSQL a node registers and heartbeats while another node files
/// mail: lease bookkeeping takes a lock of its own, not the one each
/// filing holds (a node started beside a busy one used to wait seconds
/// behind its queue of batches before it could take a share). SQLite has
/// one writer by design, and nodes share only PostgreSQL.
#[test]
fn postgres_lease_bookkeeping_does_not_wait_for_the_filing_of_mail() {
    use std::sync::mpsc;
    use std::time::Instant;
    let db = testing::TestDatabase::create();
    let (filer, joiner) = (PgStore::connect(&db.url).unwrap(), PgStore::connect(&db.url).unwrap());
    let ids = mailboxes(&filer, 3);
    node(&filer, "a");
    assert_eq!(held(&filer.heartbeat("a", TTL).unwrap()), ids);
    let (filing, filing_started) = mpsc::channel();
    let (joined, join_done) = mpsc::channel::<()>();
    let filer_ref = &filer;
    std::thread::scope(|s| {
        s.spawn(move || {
            filer_ref
                .with_ledger_for(&[ids[0]], &mut |_ledger| {
                    filing.send(()).unwrap();
                    // The write lock is held until b has joined, or nearly as
                    // long as the server lets a transaction idle (3 s).
                    let _ = join_done.recv_timeout(Duration::from_millis(2_800));
                    Ok(())
                })
                .unwrap();
        });
        filing_started.recv().unwrap();
        let started = Instant::now();
        node(&joiner, "b");
        let beat = joiner.heartbeat("b", TTL).unwrap();
        let took = started.elapsed();
        joined.send(()).unwrap();
        assert!(took < Duration::from_millis(2_500), "b waited {took:?} for a's filing to end");
        assert!(beat.held.is_empty(), "a's leases are live: {beat:?}");
        assert!(beat.short_of_share, "b knows it is owed a share: {beat:?}");
    });
    // Once the filing is over, a gives up what is over its share.
    let beat = filer.heartbeat("a", TTL).unwrap();
    assert_eq!(beat.released.len(), 1, "{beat:?}");
}

/// The writers of one process queue for the write lock in the process: one
/// of its sessions holds the lock (or waits for it), and the others wait
/// without a session instead of queueing inside the server, each with a
/// session of its own.
#[test]
fn postgres_a_process_waits_for_the_write_lock_on_one_session() {
    use std::sync::mpsc;
    let db = testing::TestDatabase::create();
    let store = PgStore::connect(&db.url).unwrap();
    // Fails while any session of this database waits for an advisory lock.
    let none_waiting = "DO $$ DECLARE waiting bigint; BEGIN
        SELECT count(*) INTO waiting FROM pg_locks l JOIN pg_database d ON d.oid = l.database
         WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database();
        IF waiting > 0 THEN RAISE EXCEPTION '% sessions wait for the write lock', waiting; END IF;
    END $$";
    let (holding, held) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let store = &store;
    let waited = std::thread::scope(|s| {
        s.spawn(move || {
            store
                .with_ledger(&mut |_ledger| {
                    holding.send(()).unwrap();
                    let _ = released.recv_timeout(Duration::from_millis(2_500));
                    Ok(())
                })
                .unwrap();
        });
        held.recv().unwrap();
        let others: Vec<_> = (0..3).map(|_| s.spawn(move || store.with_ledger(&mut |_ledger| Ok(())))).collect();
        // Looked at ten times while the three wait for the one.
        let waited: Vec<_> = (0..10)
            .filter_map(|_| {
                std::thread::sleep(Duration::from_millis(100));
                pg_tools::execute_batch(&db.url, none_waiting).err()
            })
            .collect();
        release.send(()).unwrap();
        for other in others {
            other.join().unwrap().unwrap();
        }
        waited
    });
    assert!(waited.is_empty(), "writers of one process waited in the server: {waited:?}");
}

#[test]
fn postgres_a_process_opens_at_most_the_sessions_it_is_given() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let db = testing::TestDatabase::create();
    let store = PgStore::connect_with_sessions(&db.url, 2).unwrap();
    // Fails while this database has more than two sessions of the robot's
    // (the check's own session names no application).
    let at_most_two = "DO $$ DECLARE sessions bigint; BEGIN
        SELECT count(*) INTO sessions FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'mailrobot';
        IF sessions > 2 THEN RAISE EXCEPTION '% sessions open', sessions; END IF;
    END $$";
    let (store, reading) = (&store, &AtomicBool::new(true));
    let over = std::thread::scope(|s| {
        // The writer holds one session while six readers want one each.
        s.spawn(move || {
            store
                .with_ledger(&mut |_ledger| {
                    std::thread::sleep(Duration::from_millis(600));
                    Ok(())
                })
                .unwrap();
        });
        for _ in 0..6 {
            s.spawn(move || {
                while reading.load(Ordering::Relaxed) {
                    store.tickets().unwrap();
                }
            });
        }
        let over: Vec<_> = (0..10)
            .filter_map(|_| {
                std::thread::sleep(Duration::from_millis(50));
                pg_tools::execute_batch(&db.url, at_most_two).err()
            })
            .collect();
        reading.store(false, Ordering::Relaxed);
        over
    });
    assert!(over.is_empty(), "the process opened more sessions than it was given: {over:?}");
}
