//! Webhooks, their deliveries and outbound mail in the outbox: what the
//! delivery engine (crate `mailrobot-outbox`) and the CLI/UI ask of the
//! store, on a real SQLite file and on a real PostgreSQL database (each test
//! runs on both).

use std::collections::HashSet;

use mailrobot_core::{AnswerLimits, OutgoingAttachment, OutgoingKind, OutgoingMail};
use mailrobot_store::*;

/// Now plus `secs` seconds, as the engine writes times.
fn at(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn mailbox(s: &impl Store, name: &str, config: serde_json::Value) -> i64 {
    s.add_mailbox(&NewMailbox {
        name: name.into(),
        kind: MailboxKind::DropFolder,
        config,
        sealed_secret: None,
        connection_id: None,
        poll_seconds: 60,
        max_message_bytes: 1 << 20,
    })
    .unwrap()
    .id
}

/// A mailbox that answers (SMTP), from desk@contoso.test.
fn answering_mailbox(s: &impl Store) -> i64 {
    mailbox(
        s,
        "desk",
        serde_json::json!({"path": "/nonexistent", "address": "desk@contoso.test",
            "reply": {"via": "smtp", "from": "desk@contoso.test", "reply_to": "help@contoso.test"}}),
    )
}

fn raw_mail(message_id: &str, from: &str, subject: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: desk@contoso.test\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n{extra}\r\n\
         Hello\r\n"
    )
    .into_bytes()
}

/// Journals and processes one mail; its ticket.
fn file_mail(s: &impl Store, mailbox_id: i64, remote_id: &str, raw: &[u8]) -> i64 {
    s.journal(mailbox_id, &[IncomingMail::fetched(remote_id, raw)]).unwrap();
    let out = s.process_pending(Some(mailbox_id), 10, u64::MAX, &ProcessingRules::default()).unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
    out[0].ticket_id.expect("the mail made or joined a ticket")
}

/// A webhook whose sealed secret names its id.
fn webhook(s: &impl OutboxStore, url: &str, events: &[WebhookEvent]) -> Webhook {
    s.add_webhook(url, events, &mut |id| format!("sealed-{id}").into_bytes()).unwrap()
}

fn mail_to(mailbox_id: i64, ticket: Option<u64>, kind: OutgoingKind, to: &str, n: usize) -> OutgoingMail {
    OutgoingMail {
        kind,
        mailbox_id,
        ticket,
        journal_id: 0,
        from: "desk@contoso.test".into(),
        to: to.into(),
        subject: format!("mail {n}"),
        message_id: format!("m{n}@contoso.test"),
        in_reply_to: None,
        references: Vec::new(),
        text: "hello".into(),
        html: None,
        reply_to: None,
        attachments: Vec::new(),
    }
}

fn queue(s: &impl Store, mails: &[OutgoingMail]) {
    s.with_ledger(&mut |ledger| {
        for mail in mails {
            ledger.queue_mail(mail)?;
        }
        Ok(())
    })
    .unwrap();
}

fn sent(status: Option<u16>) -> Attempt {
    Attempt { status, answer: "ok".into(), next: AfterAttempt::Delivered, body: None }
}

fn webhooks_are_added_listed_disabled_and_removed<S: Store + OutboxStore>(s: &S) {
    let a = webhook(s, "https://a.example/hook", &[WebhookEvent::TicketCreated, WebhookEvent::EntryAdded]);
    let b = webhook(s, "https://b.example/hook", &[WebhookEvent::TicketStatusChanged]);
    assert_eq!(a.url, "https://a.example/hook");
    assert_eq!(a.events, vec![WebhookEvent::TicketCreated, WebhookEvent::EntryAdded]);
    assert!(a.enabled);
    assert!(!a.created_at.is_empty());
    assert_ne!(a.id, b.id);
    assert_eq!(s.webhooks().unwrap(), vec![a.clone(), b.clone()], "in the order they were added");
    assert_eq!(s.webhook(b.id).unwrap(), Some(b.clone()));
    assert_eq!(s.webhook(b.id + 100).unwrap(), None);
    // The secret was sealed for the webhook's own id, in the same transaction.
    assert_eq!(s.webhook_secret(a.id).unwrap(), Some(format!("sealed-{}", a.id).into_bytes()));
    assert_eq!(s.webhook_secret(b.id + 100).unwrap(), None);

    assert!(s.set_webhook_enabled(a.id, false).unwrap());
    assert!(!s.webhook(a.id).unwrap().unwrap().enabled);
    assert!(!s.set_webhook_enabled(b.id + 100, false).unwrap());
    assert!(s.set_webhook_enabled(a.id, true).unwrap());
    assert!(s.webhook(a.id).unwrap().unwrap().enabled);

    // Removing a webhook removes its deliveries.
    let mb = answering_mailbox(s);
    file_mail(s, mb, "r1", &raw_mail("1@x", "ann@example.com", "Printer", ""));
    assert_eq!(s.deliveries(&DeliveryFilter { webhook_id: Some(a.id), ..Default::default() }).unwrap().len(), 1);
    assert!(s.remove_webhook(a.id).unwrap());
    assert!(!s.remove_webhook(a.id).unwrap());
    assert_eq!(s.webhooks().unwrap(), vec![b]);
    assert!(s.deliveries(&DeliveryFilter::default()).unwrap().is_empty());
    assert!(s.pending_deliveries().unwrap().is_empty());
}

fn an_event_is_enqueued_once_per_subscribed_webhook<S: Store + OutboxStore>(s: &S) {
    let created = webhook(s, "https://a.example/", &[WebhookEvent::TicketCreated, WebhookEvent::EntryAdded]);
    let status = webhook(s, "https://b.example/", &[WebhookEvent::TicketStatusChanged]);
    let also_created = webhook(s, "https://c.example/", &[WebhookEvent::TicketCreated]);
    // A disabled webhook's deliveries are written too; they wait.
    s.set_webhook_enabled(also_created.id, false).unwrap();
    let mb = answering_mailbox(s);
    let ticket = file_mail(s, mb, "r1", &raw_mail("1@x", "ann@example.com", "Printer", ""));

    let all = s.deliveries(&DeliveryFilter::default()).unwrap();
    let mut webhooks: Vec<i64> = all.iter().map(|d| d.webhook_id).collect();
    webhooks.sort();
    assert_eq!(webhooks, vec![created.id, also_created.id], "{all:?}");
    assert!(all.iter().all(|d| d.event_type == WebhookEvent::TicketCreated
        && d.ticket_id == Some(ticket)
        && d.state == DeliveryState::Queued
        && d.attempts == 0
        && d.last_status.is_none()
        && d.next_attempt_at.is_some()));
    assert_eq!(all[0].event_id, all[1].event_id, "one event, one id");
    let event_id = &all[0].event_id;
    assert!(
        event_id.len() == 28
            && event_id.starts_with("evt_")
            && event_id[4..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{event_id}"
    );
    assert_eq!(all.iter().find(|d| d.webhook_id == created.id).unwrap().url, "https://a.example/");
    assert_eq!(s.pending_deliveries().unwrap(), vec![(created.id, 1), (also_created.id, 1)]);

    // A reply: entry.added, to the first webhook only, with a new event id.
    file_mail(s, mb, "r2", &raw_mail("2@x", "ann@example.com", "Re: Printer", "In-Reply-To: <1@x>\r\n"));
    let added = s.deliveries(&DeliveryFilter { webhook_id: Some(created.id), ..Default::default() }).unwrap();
    assert_eq!(added.len(), 2);
    assert_eq!(added[0].event_type, WebhookEvent::EntryAdded, "newest first");
    assert_ne!(&added[0].event_id, event_id);
    assert_eq!(s.deliveries(&DeliveryFilter { webhook_id: Some(status.id), ..Default::default() }).unwrap(), vec![]);

    // A status change: ticket.status_changed, to the status webhook only.
    assert!(s.set_ticket_status(ticket, TicketStatus::Closed).unwrap());
    let changed = s.deliveries(&DeliveryFilter { webhook_id: Some(status.id), ..Default::default() }).unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].event_type, WebhookEvent::TicketStatusChanged);
    assert_eq!(s.deliveries(&DeliveryFilter::default()).unwrap().len(), 4);
    // Its record carries both statuses.
    let claimed = s.claim_due_deliveries(&at(60), &at(120), 10).unwrap();
    let delivery = claimed.iter().find(|d| d.webhook_id == status.id).unwrap();
    assert_eq!(delivery.event.ticket_id, ticket);
    assert_eq!(delivery.event.status, TicketStatus::Closed);
    assert_eq!(delivery.event.previous_status, Some(TicketStatus::Open));
    assert!(delivery.body.is_none());
}

fn deliveries_are_claimed_in_order_per_ticket_and_leased<S: Store + OutboxStore>(s: &S) {
    let hook = webhook(s, "https://a.example/", &[WebhookEvent::TicketCreated, WebhookEvent::EntryAdded]);
    let mb = answering_mailbox(s);
    let first = file_mail(s, mb, "r1", &raw_mail("1@x", "ann@example.com", "Printer", ""));
    file_mail(s, mb, "r2", &raw_mail("2@x", "ann@example.com", "Re: Printer", "In-Reply-To: <1@x>\r\n"));
    let second = file_mail(s, mb, "r3", &raw_mail("3@x", "bob@example.com", "Scanner", ""));
    assert_ne!(first, second);

    // Nothing is due before its time.
    assert!(s.claim_due_deliveries(&at(-3600), &at(60), 10).unwrap().is_empty());
    // The oldest of each ticket: the first ticket's reply waits for its creation.
    let (now, lease) = (at(60), at(120));
    let claimed = s.claim_due_deliveries(&now, &lease, 10).unwrap();
    let got: Vec<(i64, WebhookEvent)> = claimed.iter().map(|d| (d.event.ticket_id, d.event_type)).collect();
    assert_eq!(got, vec![(first, WebhookEvent::TicketCreated), (second, WebhookEvent::TicketCreated)]);
    assert!(claimed.iter().all(|d| d.url == "https://a.example/" && d.webhook_id == hook.id && d.attempts == 0));
    assert_eq!(claimed[0].event.entry_position, Some(1));
    // While the lease runs, no one else gets them.
    assert!(s.claim_due_deliveries(&now, &at(180), 10).unwrap().is_empty());
    // After the lease, they come back (a crashed engine's rows).
    let again = s.claim_due_deliveries(&at(121), &at(200), 1).unwrap();
    assert_eq!(again.len(), 1, "at most the limit");
    assert_eq!(again[0].id, claimed[0].id);

    // Delivered: the ticket's next event is due.
    s.record_attempts(&[(claimed[0].id, sent(Some(200)))], &now).unwrap();
    let next = s.claim_due_deliveries(&at(300), &at(400), 10).unwrap();
    let got: Vec<(i64, WebhookEvent)> = next.iter().map(|d| (d.event.ticket_id, d.event_type)).collect();
    assert_eq!(got, vec![(first, WebhookEvent::EntryAdded), (second, WebhookEvent::TicketCreated)]);
    assert_eq!(next[0].event.entry_position, Some(2));

    // A disabled webhook's deliveries wait, and are not due.
    s.set_webhook_enabled(hook.id, false).unwrap();
    assert!(s.claim_due_deliveries(&at(1000), &at(1100), 10).unwrap().is_empty());
    assert_eq!(s.next_delivery_due().unwrap(), None);
}

fn attempts_are_recorded_in_one_round<S: Store + OutboxStore>(s: &S) {
    webhook(s, "https://a.example/", &[WebhookEvent::TicketCreated]);
    let mb = answering_mailbox(s);
    for (i, from) in ["ann@example.com", "bob@example.com", "eve@example.com"].iter().enumerate() {
        file_mail(s, mb, &format!("r{i}"), &raw_mail(&format!("{i}@x"), from, "Hello", ""));
    }
    let claimed = s.claim_due_deliveries(&at(60), &at(120), 10).unwrap();
    assert_eq!(claimed.len(), 3);
    let (ok, retry, give_up) = (claimed[0].id, claimed[1].id, claimed[2].id);
    // The body is kept once, before the first attempt.
    s.set_delivery_body(retry, "{\"first\":true}").unwrap();
    s.set_delivery_body(retry, "{\"second\":true}").unwrap();

    let done_at = at(61);
    let retry_at = at(600);
    s.record_attempts(
        &[
            (ok, sent(Some(204))),
            (
                retry,
                Attempt {
                    status: Some(503),
                    answer: "HTTP 503: busy".into(),
                    next: AfterAttempt::RetryAt(retry_at.clone()),
                    body: None,
                },
            ),
            (
                give_up,
                Attempt { status: None, answer: "no answer in time".into(), next: AfterAttempt::GiveUp, body: None },
            ),
        ],
        &done_at,
    )
    .unwrap();
    s.record_attempts(&[], &done_at).unwrap();

    let ok_view = s.delivery(ok).unwrap().unwrap();
    assert_eq!(ok_view.state, DeliveryState::Sent);
    assert_eq!((ok_view.attempts, ok_view.last_status), (1, Some(204)));
    assert_eq!(ok_view.delivered_at.as_deref(), Some(done_at.as_str()));
    assert_eq!(ok_view.last_attempt_at.as_deref(), Some(done_at.as_str()));
    assert_eq!(ok_view.next_attempt_at, None);
    let retry_view = s.delivery(retry).unwrap().unwrap();
    assert_eq!(retry_view.state, DeliveryState::Queued);
    assert_eq!((retry_view.attempts, retry_view.last_status), (1, Some(503)));
    assert_eq!(retry_view.last_answer.as_deref(), Some("HTTP 503: busy"));
    assert_eq!(retry_view.next_attempt_at.as_deref(), Some(retry_at.as_str()));
    assert_eq!(retry_view.delivered_at, None);
    let failed_view = s.delivery(give_up).unwrap().unwrap();
    assert_eq!(failed_view.state, DeliveryState::Failed);
    assert_eq!((failed_view.attempts, failed_view.last_status), (1, None));
    assert_eq!(failed_view.last_answer.as_deref(), Some("no answer in time"));

    // The lease ended with the answer; the retry is due at its time, with
    // the body kept from the first attempt.
    assert_eq!(s.next_delivery_due().unwrap(), Some(retry_at.clone()));
    assert!(s.claim_due_deliveries(&at(300), &at(400), 10).unwrap().is_empty());
    let lease = at(700);
    let retried = s.claim_due_deliveries(&at(601), &lease, 10).unwrap();
    assert_eq!(s.next_delivery_due().unwrap(), Some(lease), "the lease, not the due time");
    assert_eq!(retried.len(), 1);
    assert_eq!((retried[0].id, retried[0].attempts), (retry, 1));
    assert_eq!(retried[0].body.as_deref(), Some("{\"first\":true}"));
    assert_eq!(s.pending_deliveries().unwrap().iter().map(|(_, n)| n).sum::<i64>(), 1);

    // A failed delivery is resent by hand: due now, counted from zero, same event.
    assert!(s.resend_delivery(give_up).unwrap());
    let resent = s.delivery(give_up).unwrap().unwrap();
    assert_eq!((resent.state, resent.attempts), (DeliveryState::Queued, 0));
    assert_eq!(resent.event_id, failed_view.event_id);
    assert!(!s.resend_delivery(give_up + 100).unwrap());
    let claimed = s.claim_due_deliveries(&at(60), &at(120), 10).unwrap();
    assert_eq!(claimed.iter().map(|d| d.id).collect::<Vec<_>>(), vec![give_up]);
}

fn deliveries_are_listed_newest_first_with_filters<S: Store + OutboxStore>(s: &S) {
    let a = webhook(s, "https://a.example/", &[WebhookEvent::TicketCreated]);
    let b = webhook(s, "https://b.example/", &[WebhookEvent::TicketCreated]);
    let mb = answering_mailbox(s);
    for i in 0..3 {
        file_mail(s, mb, &format!("r{i}"), &raw_mail(&format!("{i}@x"), &format!("p{i}@example.com"), "Hi", ""));
    }
    let all = s.deliveries(&DeliveryFilter::default()).unwrap();
    assert_eq!(all.len(), 6);
    let ids: Vec<i64> = all.iter().map(|d| d.id).collect();
    let mut newest_first = ids.clone();
    newest_first.sort_by(|x, y| y.cmp(x));
    assert_eq!(ids, newest_first);

    let of_a = s.deliveries(&DeliveryFilter { webhook_id: Some(a.id), ..Default::default() }).unwrap();
    assert_eq!(of_a.len(), 3);
    assert!(of_a.iter().all(|d| d.webhook_id == a.id && d.url == "https://a.example/"));

    let page = s.deliveries(&DeliveryFilter { limit: Some(4), ..Default::default() }).unwrap();
    assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), ids[..4]);
    let rest =
        s.deliveries(&DeliveryFilter { before: Some(page[3].id), limit: Some(4), ..Default::default() }).unwrap();
    assert_eq!(rest.iter().map(|d| d.id).collect::<Vec<_>>(), ids[4..]);

    // By state.
    let claimed = s.claim_due_deliveries(&at(60), &at(120), 1).unwrap();
    s.record_attempts(&[(claimed[0].id, sent(Some(200)))], &at(61)).unwrap();
    let sent_ones = s.deliveries(&DeliveryFilter { state: Some(DeliveryState::Sent), ..Default::default() }).unwrap();
    assert_eq!(sent_ones.iter().map(|d| d.id).collect::<Vec<_>>(), vec![claimed[0].id]);
    let queued_of_b = s
        .deliveries(&DeliveryFilter {
            webhook_id: Some(b.id),
            state: Some(DeliveryState::Queued),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(queued_of_b.len(), 3 - usize::from(claimed[0].webhook_id == b.id));
    assert!(
        s.deliveries(&DeliveryFilter { state: Some(DeliveryState::Failed), ..Default::default() }).unwrap().is_empty()
    );

    // A mail row is no delivery.
    queue(s, &[mail_to(mb, None, OutgoingKind::Rejection, "x@example.com", 1)]);
    let mail_id = s.mails().unwrap()[0].id;
    assert_eq!(s.delivery(mail_id).unwrap(), None);
    assert_eq!(s.deliveries(&DeliveryFilter::default()).unwrap().len(), 6);
    assert_eq!(s.delivery(ids[0]).unwrap().unwrap().id, ids[0]);
}

fn mails_are_claimed_once_while_leased_and_again_after<S: Store + OutboxStore>(s: &S) {
    let mb = answering_mailbox(s);
    let mails: Vec<OutgoingMail> =
        (0..3).map(|i| mail_to(mb, None, OutgoingKind::Acknowledgement, &format!("p{i}@example.com"), i)).collect();
    queue(s, &mails);
    let (now, lease) = (at(60), at(120));
    assert!(s.claim_due_mails(&at(-3600), &lease, 10).unwrap().is_empty(), "not due yet");
    let first = s.claim_due_mails(&now, &lease, 2).unwrap();
    assert_eq!(first.iter().map(|q| q.mail.clone()).collect::<Vec<_>>(), mails[..2], "oldest first");
    assert!(first.iter().all(|q| q.body.is_none() && q.attempts == 0));
    let second = s.claim_due_mails(&now, &lease, 10).unwrap();
    assert_eq!(second.iter().map(|q| &q.mail).collect::<Vec<_>>(), vec![&mails[2]]);
    assert!(s.claim_due_mails(&now, &lease, 10).unwrap().is_empty(), "all leased");

    // The first is sent; the others' lease runs out and they come back.
    s.record_attempts(&[(first[0].id, sent(None))], &now).unwrap();
    assert!(s.claim_due_mails(&at(100), &at(200), 10).unwrap().is_empty());
    let back = s.claim_due_mails(&at(121), &at(200), 10).unwrap();
    assert_eq!(back.iter().map(|q| q.id).collect::<Vec<_>>(), vec![first[1].id, second[0].id]);
    // No webhook delivery is a mail, nor a mail a delivery.
    assert!(s.claim_due_deliveries(&at(1000), &at(1100), 10).unwrap().is_empty());
}

fn concurrent_claims_never_share_a_row<S: Store + OutboxStore>(s: &S) {
    let mb = answering_mailbox(s);
    let mails: Vec<OutgoingMail> =
        (0..40).map(|i| mail_to(mb, None, OutgoingKind::Acknowledgement, &format!("p{i}@example.com"), i)).collect();
    queue(s, &mails);
    let (now, lease) = (at(60), at(120));
    let claimed: Vec<Vec<i64>> = std::thread::scope(|scope| {
        let claimers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    // Bounded: rows handed out twice must not loop for ever.
                    for _ in 0..20 {
                        let got = s.claim_due_mails(&now, &lease, 3).unwrap();
                        if got.is_empty() {
                            break;
                        }
                        mine.extend(got.iter().map(|q| q.id));
                    }
                    mine
                })
            })
            .collect();
        claimers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let all: Vec<i64> = claimed.iter().flatten().copied().collect();
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 40, "{claimed:?}");
    assert_eq!(distinct.len(), 40, "a row was claimed twice: {claimed:?}");
}

fn mails_are_recorded_sent_retried_and_failed<S: Store + OutboxStore>(s: &S) {
    let mb = answering_mailbox(s);
    let ticket = file_mail(s, mb, "r1", &raw_mail("1@x", "Ann <ann@example.com>", "Printer", ""));
    // The acknowledgement of the new ticket is queued with it.
    let views = s.mails().unwrap();
    assert_eq!(views.len(), 1, "{views:?}");
    let ack = &views[0];
    assert_eq!(ack.kind.as_deref(), Some("acknowledgement"));
    assert_eq!((ack.ticket_id, ack.mailbox_id), (Some(ticket), Some(mb)));
    assert_eq!(ack.to.as_deref(), Some("ann@example.com"));
    assert_eq!((ack.state, ack.attempts), (DeliveryState::Queued, 0));
    assert!(ack.subject.as_deref().unwrap_or("").contains("Printer"), "{ack:?}");
    queue(
        s,
        &[
            mail_to(mb, Some(ticket as u64), OutgoingKind::Notification, "ann@example.com", 2),
            mail_to(mb, None, OutgoingKind::Rejection, "eve@example.com", 3),
        ],
    );
    let claimed = s.claim_due_mails(&at(60), &at(120), 10).unwrap();
    assert_eq!(claimed.len(), 3);
    let retry_at = at(900);
    s.record_attempts(
        &[
            (
                claimed[0].id,
                Attempt {
                    status: None,
                    answer: "sent".into(),
                    next: AfterAttempt::Delivered,
                    body: Some("MIME 0".into()),
                },
            ),
            (
                claimed[1].id,
                Attempt {
                    status: None,
                    answer: "451 try later".into(),
                    next: AfterAttempt::RetryAt(retry_at.clone()),
                    body: Some("MIME 1".into()),
                },
            ),
            (
                claimed[2].id,
                Attempt { status: None, answer: "550 no such user".into(), next: AfterAttempt::GiveUp, body: None },
            ),
        ],
        &at(61),
    )
    .unwrap();
    let views = s.mails().unwrap();
    assert_eq!(views.iter().map(|m| m.id).collect::<Vec<_>>(), claimed.iter().map(|q| q.id).collect::<Vec<_>>());
    assert_eq!((views[0].state, views[0].attempts), (DeliveryState::Sent, 1));
    assert!(views[0].sent_at.is_some());
    assert_eq!((views[1].state, views[1].attempts), (DeliveryState::Queued, 1));
    assert_eq!(views[1].next_attempt_at.as_deref(), Some(retry_at.as_str()));
    assert_eq!(views[1].last_error.as_deref(), Some("451 try later"));
    assert_eq!(views[1].sent_at, None);
    assert_eq!((views[2].state, views[2].attempts), (DeliveryState::Failed, 1));
    assert_eq!(views[2].last_error.as_deref(), Some("550 no such user"));
    assert_eq!((views[2].kind.as_deref(), views[2].ticket_id), (Some("rejection"), None));

    // The retry sends the bytes first rendered.
    assert!(s.claim_due_mails(&at(600), &at(700), 10).unwrap().is_empty());
    let retried = s.claim_due_mails(&at(901), &at(1000), 10).unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!((retried[0].id, retried[0].attempts), (claimed[1].id, 1));
    assert_eq!(retried[0].body.as_deref(), Some("MIME 1"));

    // A failed mail is queued again by hand; a delivery id is no mail.
    assert!(s.resend_mail(claimed[2].id).unwrap());
    let view = s.mails().unwrap().into_iter().find(|m| m.id == claimed[2].id).unwrap();
    assert_eq!((view.state, view.attempts), (DeliveryState::Queued, 0));
    assert!(!s.resend_mail(claimed[2].id + 100).unwrap());
    let hook = webhook(s, "https://a.example/", &[WebhookEvent::TicketStatusChanged]);
    s.set_ticket_status(ticket, TicketStatus::Closed).unwrap();
    let delivery = s.deliveries(&DeliveryFilter { webhook_id: Some(hook.id), ..Default::default() }).unwrap()[0].id;
    assert!(!s.resend_mail(delivery).unwrap());
    assert!(!s.resend_delivery(claimed[0].id).unwrap(), "a mail is no delivery");
}

fn a_reply_keeps_its_files_and_a_status_change_notifies<S: Store + OutboxStore>(s: &S) {
    let mb = answering_mailbox(s);
    let silent = mailbox(s, "silent", serde_json::json!({"path": "/nonexistent", "address": "quiet@contoso.test"}));
    let ticket = file_mail(s, mb, "r1", &raw_mail("1@x", "ann@example.com", "Printer", ""));
    let quiet_ticket = file_mail(s, silent, "r1", &raw_mail("2@x", "bob@example.com", "Scanner", ""));
    assert_eq!(s.ticket_mailbox(ticket).unwrap(), Some((mb, Some("desk@contoso.test".to_string()))));
    assert_eq!(s.ticket_mailbox(quiet_ticket).unwrap(), Some((silent, None)), "it sends no mail");
    assert_eq!(s.ticket_mailbox(ticket + quiet_ticket + 100).unwrap(), None);

    let before = s.mails().unwrap().len();
    let mut reply = mail_to(mb, Some(ticket as u64), OutgoingKind::Reply, "ann@example.com", 9);
    reply.attachments = vec![OutgoingAttachment {
        filename: "report.pdf".into(),
        content_type: "application/pdf".into(),
        sha256: String::new(),
        size: 0,
    }];
    let bytes = b"%PDF-1.4 report".to_vec();
    let id = s.queue_reply(&reply, std::slice::from_ref(&bytes)).unwrap();
    let views = s.mails().unwrap();
    assert_eq!(views.len(), before + 1);
    let view = views.iter().find(|m| m.id == id).unwrap();
    assert_eq!((view.kind.as_deref(), view.ticket_id), (Some("reply"), Some(ticket)));
    let queued = s.claim_due_mails(&at(60), &at(120), 10).unwrap().into_iter().find(|q| q.id == id).unwrap();
    let file = &queued.mail.attachments[0];
    assert_eq!(file.size, bytes.len() as u64);
    assert_eq!(s.blob(&file.sha256).unwrap(), Some(bytes), "the file is stored under its hash");
    assert_eq!(queued.mail.message_id, reply.message_id);

    // A status change queues the notification with it; no change, no mail.
    let notification = mail_to(mb, Some(ticket as u64), OutgoingKind::Notification, "ann@example.com", 10);
    assert!(s.set_status_notifying(ticket, TicketStatus::Closed, Some(&notification)).unwrap());
    assert_eq!(s.ticket(ticket).unwrap().unwrap().summary.status, TicketStatus::Closed);
    let kinds = |s: &S| s.mails().unwrap().into_iter().filter_map(|m| m.kind).collect::<Vec<_>>();
    assert_eq!(kinds(s).iter().filter(|k| *k == "notification").count(), 1);
    assert!(s.set_status_notifying(ticket, TicketStatus::Closed, Some(&notification)).unwrap());
    assert_eq!(kinds(s).iter().filter(|k| *k == "notification").count(), 1, "unchanged: nothing sent");
    assert!(!s.set_status_notifying(ticket + quiet_ticket + 100, TicketStatus::Open, Some(&notification)).unwrap());
    assert_eq!(kinds(s).iter().filter(|k| *k == "notification").count(), 1, "no ticket: nothing sent");
    assert!(s.set_status_notifying(ticket, TicketStatus::Open, None).unwrap());
    assert_eq!(s.ticket(ticket).unwrap().unwrap().summary.status, TicketStatus::Open);
}

fn answers_count_automatic_mails_per_sender_and_ticket<S: Store + OutboxStore>(s: &S) {
    let mb = answering_mailbox(s);
    let silent = mailbox(s, "silent", serde_json::json!({"path": "/x", "username": "robot@contoso.test"}));
    let none = mailbox(
        s,
        "off",
        serde_json::json!({"path": "/y", "address": "off@contoso.test",
            "reply": {"via": "none", "from": "x@contoso.test"}}),
    );
    let ticket = file_mail(s, mb, "r1", &raw_mail("1@x", "Ann+billing@Example.com", "Printer", "")) as u64;
    let context = |mailbox_id: i64, key: &str, ticket: Option<u64>, limits: AnswerLimits| {
        let mut found = None;
        s.with_ledger(&mut |ledger| {
            found = Some(ledger.answer_context(mailbox_id, key, ticket, &limits)?);
            Ok(())
        })
        .unwrap();
        found.unwrap()
    };
    let limits = AnswerLimits::default();
    assert_eq!(context(silent, "ann@example.com", None, limits), None, "no reply settings: sends nothing");
    assert_eq!(context(none, "ann@example.com", None, limits), None, "--reply-via none");

    // The acknowledgement filing the mail queued counts for its sender and ticket.
    let found = context(mb, "ann@example.com", Some(ticket), limits).unwrap();
    assert_eq!(found.mailbox_id, mb);
    assert_eq!(found.mailbox_name, "desk");
    assert_eq!(found.from, "desk@contoso.test");
    assert_eq!(found.reply_to.as_deref(), Some("help@contoso.test"));
    let mut own = found.own_addresses.clone();
    own.sort();
    own.dedup();
    assert_eq!(own, vec!["desk@contoso.test", "off@contoso.test", "robot@contoso.test", "x@contoso.test"]);
    assert_eq!((found.sent_to_sender_recently, found.sent_on_ticket_today), (1, 1));
    // Other senders and tickets count apart; an agent's reply counts for neither.
    queue(s, &[mail_to(mb, Some(ticket), OutgoingKind::Reply, "ann@example.com", 5)]);
    let found = context(mb, "ann@example.com", Some(ticket), limits).unwrap();
    assert_eq!((found.sent_to_sender_recently, found.sent_on_ticket_today), (1, 1));
    let other = context(mb, "bob@example.com", Some(ticket + 1), limits).unwrap();
    assert_eq!((other.sent_to_sender_recently, other.sent_on_ticket_today), (0, 0));
    let no_ticket = context(mb, "ann@example.com", None, limits).unwrap();
    assert_eq!(no_ticket.sent_on_ticket_today, 0);
    queue(s, &[mail_to(mb, Some(ticket), OutgoingKind::Notification, "ann@example.com", 6)]);
    let found = context(mb, "ann@example.com", Some(ticket), limits).unwrap();
    assert_eq!((found.sent_to_sender_recently, found.sent_on_ticket_today), (2, 2));
    // The sender window ends now: mails queued before it are not counted.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let none_recent = context(mb, "ann@example.com", Some(ticket), AnswerLimits { sender_window_minutes: 0, ..limits });
    assert_eq!(none_recent.unwrap().sent_to_sender_recently, 0);
}

fn reply_secrets_are_kept_per_mailbox<S: Store + OutboxStore>(s: &S) {
    let mb = answering_mailbox(s);
    let other = mailbox(s, "other", serde_json::json!({"path": "/x"}));
    assert_eq!(s.mailbox_reply_secret(mb).unwrap(), None);
    s.set_mailbox_reply_secret(mb, Some(b"sealed smtp password")).unwrap();
    assert_eq!(s.mailbox_reply_secret(mb).unwrap(), Some(b"sealed smtp password".to_vec()));
    assert_eq!(s.mailbox_reply_secret(other).unwrap(), None);
    assert_eq!(s.mailbox_reply_secret(other + 100).unwrap(), None);
    s.set_mailbox_reply_secret(mb, None).unwrap();
    assert_eq!(s.mailbox_reply_secret(mb).unwrap(), None);
}

mailrobot_store::on_both_backends!(
    webhooks_are_added_listed_disabled_and_removed,
    an_event_is_enqueued_once_per_subscribed_webhook,
    deliveries_are_claimed_in_order_per_ticket_and_leased,
    attempts_are_recorded_in_one_round,
    deliveries_are_listed_newest_first_with_filters,
    mails_are_claimed_once_while_leased_and_again_after,
    concurrent_claims_never_share_a_row,
    mails_are_recorded_sent_retried_and_failed,
    a_reply_keeps_its_files_and_a_status_change_notifies,
    answers_count_automatic_mails_per_sender_and_ticket,
    reply_secrets_are_kept_per_mailbox,
);
