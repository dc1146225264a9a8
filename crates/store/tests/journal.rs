//! The journal's exactly-once rules, on a real SQLite file and on a real
//! PostgreSQL database (each test runs on both).

use mailrobot_core::parse_raw;
use mailrobot_store::*;

fn mailbox(store: &impl Store, name: &str) -> i64 {
    store
        .add_mailbox(&NewMailbox {
            name: name.into(),
            kind: MailboxKind::DropFolder,
            config: serde_json::json!({"path": "/tmp/x"}),
            sealed_secret: None,
            connection_id: None,
            poll_seconds: 60,
            max_message_bytes: 50 << 20,
        })
        .unwrap()
        .id
}

fn mail(id: &str, subject: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\r\nTo: support@example.com\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n{extra}\r\n{body}\r\n"
    )
    .into_bytes()
}

fn rules() -> ProcessingRules {
    ProcessingRules::default()
}

fn journal_is_idempotent_per_remote_id<S: Store>(s: &S) {
    let mb = mailbox(s, "a");
    let raw = mail("1@x", "Hello", "", "Body");
    assert_eq!(s.journal(mb, &[IncomingMail::fetched("r1", &raw)]).unwrap(), 1);
    assert_eq!(s.journal(mb, &[IncomingMail::fetched("r1", &raw)]).unwrap(), 0);
    let known = s.known_remote_ids(mb, &["r1".into(), "r2".into()]).unwrap();
    assert_eq!(known.len(), 1);
    assert_eq!(known[0].state, JournalState::Fetched);
    assert!(!known[0].settled);
}

fn new_mail_makes_a_ticket_and_replies_join_it<S: Store>(s: &S) {
    let mb = mailbox(s, "a");
    let first = mail("1@x", "Printer broken", "", "It is broken");
    let by_header = mail("2@x", "Re: Printer broken", "In-Reply-To: <1@x>\r\n", "Still broken");
    let by_tag = mail("3@x", "AW: Re: [TKT-000001] Printer broken", "", "Thanks");
    s.journal(mb, &[IncomingMail::fetched("r1", &first)]).unwrap();
    s.process_pending(Some(mb), 100, u64::MAX, &rules()).unwrap();
    s.journal(mb, &[IncomingMail::fetched("r2", &by_header), IncomingMail::fetched("r3", &by_tag)]).unwrap();
    let out = s.process_pending(Some(mb), 100, u64::MAX, &rules()).unwrap();
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|p| p.ticket_id == Some(1) && !p.created_ticket));
    let tickets = s.tickets().unwrap();
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0].entries, 3);
    assert_eq!(tickets[0].subject, "Printer broken");
    assert_eq!(tickets[0].requester.as_deref(), Some("alice@example.com"));
    let detail = s.ticket(1).unwrap().unwrap();
    let positions: Vec<i64> = detail.entries.iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![1, 2, 3]);
}

/// A reply's new text is kept beside its full text; winmail.dat arrives
/// as the files it wraps.
fn entries_keep_the_new_text_and_unpacked_attachments<S: Store>(s: &S) {
    let mb = mailbox(s, "a");
    let first = mail("1@x", "Printer broken", "", "It is broken");
    let reply = mail(
        "2@x",
        "Re: [TKT-000001] Printer broken",
        "",
        "Works again.\r\n\r\nOn Mon, 7 Apr 2025, IT wrote:\r\n> Please restart it.\r\n",
    );
    let winmail = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/eml/new/winmail-dat-tnef.eml"),
    )
    .unwrap();
    s.journal(mb, &[IncomingMail::fetched("r1", &first)]).unwrap();
    s.process_pending(Some(mb), 100, u64::MAX, &rules()).unwrap();
    s.journal(mb, &[IncomingMail::fetched("r2", &reply), IncomingMail::fetched("r3", &winmail)]).unwrap();
    s.process_pending(Some(mb), 100, u64::MAX, &rules()).unwrap();
    let detail = s.ticket(1).unwrap().unwrap();
    assert_eq!(detail.entries[0].new_text, None);
    assert_eq!(detail.entries[1].new_text.as_deref(), Some("Works again."));
    assert!(detail.entries[1].text_body.contains("> Please restart it."));
    let tnef = s.ticket(2).unwrap().unwrap();
    let names: Vec<_> = tnef.entries[0].attachments.iter().map(|a| a.filename.as_deref().unwrap_or("")).collect();
    assert_eq!(names, ["Auftrag.txt"]);
    let stored = s.blob(&tnef.entries[0].attachments[0].sha256).unwrap().unwrap();
    assert!(stored.starts_with(b"Bitte VPN-Zugang"));
}

fn copies_in_two_mailboxes_make_one_entry_but_reused_message_ids_do_not<S: Store>(s: &S) {
    let a = mailbox(s, "a");
    let b = mailbox(s, "b");
    let original = mail("same@x", "Question", "", "Body one");
    let copy = [
        b"Received: from relay by mx; Mon, 1 Jan 2024 00:00:00 +0000\r\nDelivered-To: b@example.com\r\n".as_slice(),
        &original,
    ]
    .concat();
    let reused_id = mail("same@x", "Question", "", "A different body");
    s.journal(a, &[IncomingMail::fetched("1", &original)]).unwrap();
    s.journal(b, &[IncomingMail::fetched("1", &copy), IncomingMail::fetched("2", &reused_id)]).unwrap();
    let out = s.process_pending(None, 100, u64::MAX, &rules()).unwrap();
    assert_eq!(out[0].kind, Some(MessageKind::Mail));
    assert_eq!(out[1].kind, Some(MessageKind::Duplicate));
    assert_eq!(out[1].ticket_id, out[0].ticket_id);
    assert_eq!(out[2].kind, Some(MessageKind::Mail));
    assert_ne!(out[2].ticket_id, out[0].ticket_id);
    assert_eq!(s.tickets().unwrap().len(), 2);
}

/// Filing looks things up that earlier mails of the same batch wrote: a
/// reply to a mail of the batch, a tag of a ticket the batch opened. Ticket
/// numbers go on from there in the next batch.
fn lookups_within_one_batch_see_what_the_batch_wrote<S: Store>(s: &S) {
    let mb = mailbox(s, "a");
    let first = mail("1@x", "Printer broken", "", "It is broken");
    let reply = mail("2@x", "Re: Printer broken", "In-Reply-To: <1@x>\r\n", "Still broken");
    let other = mail("3@x", "Scanner", "", "Scanner too");
    let tagged = mail("4@x", "Re: [TKT-000002] Scanner", "", "Thanks");
    let journaled = s
        .journal(
            mb,
            &[
                IncomingMail::fetched("r1", &first),
                IncomingMail::fetched("r2", &reply),
                IncomingMail::fetched("r3", &other),
                IncomingMail::fetched("r4", &tagged),
                IncomingMail::fetched("r1", &first),
            ],
        )
        .unwrap();
    assert_eq!(journaled, 4, "a remote id twice in one batch is journaled once");
    let out = s.process_pending(Some(mb), 100, u64::MAX, &rules()).unwrap();
    let filed: Vec<_> = out.iter().map(|p| (p.ticket_id, p.created_ticket)).collect();
    assert_eq!(filed, [(Some(1), true), (Some(1), false), (Some(2), true), (Some(2), false)]);
    s.journal(mb, &[IncomingMail::fetched("r5", &mail("5@x", "Monitor", "", "Dark"))]).unwrap();
    let out = s.process_pending(Some(mb), 100, u64::MAX, &rules()).unwrap();
    assert_eq!((out[0].ticket_id, out[0].created_ticket), (Some(3), true));
    let entries: Vec<_> = s.tickets().unwrap().iter().map(|t| (t.id, t.entries)).collect();
    assert_eq!(entries, [(1, 2), (2, 2), (3, 1)]);
}

fn auto_replies_and_bounces_never_open_tickets<S: Store>(s: &S) {
    let mb = mailbox(s, "a");
    let first = mail("1@x", "Need help", "", "Help");
    let oof_known =
        mail("2@x", "Automatic reply: Need help", "Auto-Submitted: auto-replied\r\nIn-Reply-To: <1@x>\r\n", "Away");
    let oof_unknown = mail("3@x", "Out of Office", "Auto-Submitted: auto-replied\r\n", "Away");
    s.journal(
        mb,
        &[
            IncomingMail::fetched("1", &first),
            IncomingMail::fetched("2", &oof_known),
            IncomingMail::fetched("3", &oof_unknown),
        ],
    )
    .unwrap();
    let out = s.process_pending(None, 100, u64::MAX, &rules()).unwrap();
    assert_eq!(out[1].kind, Some(MessageKind::AutoReply));
    assert_eq!(out[1].ticket_id, Some(1));
    assert_eq!(out[2].kind, Some(MessageKind::AutoReply));
    assert_eq!(out[2].ticket_id, None);
    assert_eq!(out[2].state, JournalState::Processed);
    assert_eq!(s.tickets().unwrap().len(), 1);
}

fn broken_mail_fails_with_reason_and_the_batch_goes_on<S: Store>(s: &S) {
    let mb = mailbox(s, "a");
    let junk = b"\x00\x01\x02 this is not a mail\xff\xfe".to_vec();
    let good = mail("1@x", "Fine", "", "ok");
    s.journal(mb, &[IncomingMail::fetched("junk", &junk), IncomingMail::fetched("good", &good)]).unwrap();
    s.journal(mb, &[IncomingMail::rejected("huge", 60 << 20, "message is 62914560 bytes, over the limit")]).unwrap();
    let out = s.process_pending(None, 100, u64::MAX, &rules()).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].state, JournalState::Failed);
    assert!(out[0].reason.as_deref().unwrap().contains("not an e-mail"));
    assert_eq!(out[1].state, JournalState::Processed);
    let failed = s.messages(&MessageFilter { state: Some(JournalState::Failed), ..Default::default() }).unwrap();
    assert_eq!(failed.len(), 2);
    // Failed mails are settled to the error folder; processed ones normally.
    let unsettled = s.unsettled(mb).unwrap();
    let failed_ids: Vec<&str> =
        unsettled.iter().filter(|u| u.settle_to == SettleTo::Failed).map(|u| u.remote_id.as_str()).collect();
    assert_eq!(failed_ids, vec!["junk", "huge"]);
    s.mark_settled(&unsettled.iter().map(|u| u.journal_id).collect::<Vec<_>>()).unwrap();
    assert!(s.unsettled(mb).unwrap().is_empty());
    // The raw bytes of the broken mail are kept for a retry.
    assert_eq!(s.retry_failed(None).unwrap(), 1);
}

fn reopening_keeps_everything<S: Store>(open: &dyn Fn() -> S) {
    {
        let s = open();
        let mb = mailbox(&s, "a");
        s.journal(mb, &[IncomingMail::fetched("1", &mail("1@x", "x", "", "y"))]).unwrap();
    }
    let s = open();
    assert_eq!(s.counts().unwrap().fetched, 1);
    assert!(matches!(
        s.add_mailbox(&NewMailbox {
            name: "a".into(),
            kind: MailboxKind::Imap,
            config: serde_json::json!({}),
            sealed_secret: None,
            connection_id: None,
            poll_seconds: 1,
            max_message_bytes: 1,
        }),
        Err(StoreError::MailboxExists(_))
    ));
}

/// A processing batch holds no more raw bytes than asked (at least one
/// mail, however large), so memory has a bound whatever the mails are.
fn a_processing_batch_stops_at_its_byte_budget<S: Store>(s: &S) {
    let mb = mailbox(s, "a");
    let body = "x".repeat(10_000);
    let mails: Vec<Vec<u8>> = (0..5).map(|i| mail(&format!("{i}@x"), &format!("Big {i}"), "", &body)).collect();
    let incoming: Vec<IncomingMail<'_>> =
        mails.iter().enumerate().map(|(i, m)| IncomingMail::fetched(format!("r{i}"), m)).collect();
    s.journal(mb, &incoming).unwrap();
    let size = mails[0].len() as u64;
    assert!(mails.iter().all(|m| m.len() as u64 == size));
    // What a batch will read is known before it is read (the memory budget).
    let bytes = |max| s.pending_batch_bytes(Some(mb), 100, max).unwrap();
    assert_eq!(bytes(2 * size + 10), Some(2 * size));
    assert_eq!(s.pending_batch_bytes(Some(mb), 3, u64::MAX).unwrap(), Some(3 * size), "by count too");
    assert_eq!(s.process_pending(Some(mb), 100, 2 * size + 10, &rules()).unwrap().len(), 2);
    assert_eq!(bytes(1), Some(size));
    assert_eq!(s.process_pending(Some(mb), 100, 1, &rules()).unwrap().len(), 1, "at least one");
    assert_eq!(bytes(u64::MAX), Some(2 * size));
    assert_eq!(s.process_pending(Some(mb), 100, u64::MAX, &rules()).unwrap().len(), 2);
    assert_eq!(bytes(u64::MAX), None, "nothing waits");
    assert!(s.process_pending(Some(mb), 100, u64::MAX, &rules()).unwrap().is_empty());

    // An empty mail first does not let the next one past the budget.
    let big = mail("big@x", "Big", "", &body);
    s.journal(mb, &[IncomingMail::fetched("empty", b""), IncomingMail::fetched("big", &big)]).unwrap();
    let other = mailbox(s, "b");
    assert_eq!(s.pending_batch_bytes(Some(other), 100, 10).unwrap(), None, "another mailbox's mails");
    assert_eq!(bytes(10), Some(0));
    assert_eq!(s.process_pending(Some(mb), 100, 10, &rules()).unwrap().len(), 1);
    assert_eq!(bytes(10), Some(big.len() as u64));
    assert_eq!(s.process_pending(Some(mb), 100, 10, &rules()).unwrap().len(), 1);
}

/// Two processes share the file (serve and a `run-once`, say): each reads
/// pending mails with no lock held while it parses them, so both may read the
/// same mails. Only the first to file a mail makes its ticket.
fn a_mail_another_process_filed_meanwhile_is_left_alone<S: Store>(open: &dyn Fn() -> S) {
    let (first, second) = (open(), open());
    let mb = mailbox(&first, "a");
    let raws: Vec<Vec<u8>> = (0..3).map(|i| mail(&format!("{i}@x"), &format!("Question {i}"), "", "?")).collect();
    let incoming: Vec<IncomingMail<'_>> =
        raws.iter().enumerate().map(|(i, raw)| IncomingMail::fetched(format!("r{i}"), raw)).collect();
    first.journal(mb, &incoming).unwrap();

    let read_by_first = first.pending_mails(Some(mb), 100, u64::MAX).unwrap();
    assert_eq!(read_by_first.len(), 3);
    let parsed = mailrobot_core::parse_batch(read_by_first, 2);
    // Meanwhile the other process files them all.
    assert_eq!(second.process_pending(Some(mb), 100, u64::MAX, &rules()).unwrap().len(), 3);

    let mut parsed = Some(parsed);
    let mut filed = Vec::new();
    first
        .with_ledger(&mut |ledger| {
            filed = mailrobot_core::file_batch(ledger, parsed.take().unwrap(), &rules().tag, &Default::default())?;
            Ok(())
        })
        .unwrap();
    assert!(filed.is_empty(), "{filed:?}");
    assert_eq!(first.tickets().unwrap().len(), 3);
    assert!(first.ticket(1).unwrap().unwrap().entries.len() == 1);
}

fn counts_per_mailbox_tell_today_waiting_and_failed<S: Store>(s: &S) {
    let (a, b) = (mailbox(s, "a"), mailbox(s, "b"));
    let good = mail("1@x", "Hello", "", "Body");
    s.journal(a, &[IncomingMail::fetched("r1", &good), IncomingMail::fetched("r2", b"not a mail")]).unwrap();
    s.journal(b, &[IncomingMail::rejected("r3", 99, "too large")]).unwrap();
    let before = s.mailbox_counts("2000-01-01T00:00:00Z").unwrap();
    assert_eq!(before[0], MailboxCounts { mailbox_id: a, fetched_since: 2, waiting: 2, failed: 0 });
    assert_eq!(before[1], MailboxCounts { mailbox_id: b, fetched_since: 1, waiting: 0, failed: 1 });
    s.process_pending(None, 100, u64::MAX, &rules()).unwrap();
    let after = s.mailbox_counts("2999-01-01T00:00:00Z").unwrap();
    assert_eq!(after[0], MailboxCounts { mailbox_id: a, fetched_since: 0, waiting: 0, failed: 1 });
}

fn tickets_are_searched_filtered_and_paged_newest_first<S: Store>(s: &S) {
    let (a, b) = (mailbox(s, "a"), mailbox(s, "b"));
    let raws: Vec<Vec<u8>> =
        (1..=5).map(|i| mail(&format!("{i}@x"), &format!("Printer {i} 100%_done"), "", "x")).collect();
    s.journal(a, &[IncomingMail::fetched("r1", &raws[0]), IncomingMail::fetched("r2", &raws[1])]).unwrap();
    s.journal(b, &[IncomingMail::fetched("r3", &raws[2]), IncomingMail::fetched("r4", &raws[3])]).unwrap();
    let other = mail("9@x", "Coffee", "", "x");
    s.journal(b, &[IncomingMail::fetched("r5", &other)]).unwrap();
    s.process_pending(None, 100, u64::MAX, &rules()).unwrap();
    let ids = |q: TicketQuery| {
        s.search_tickets(&TicketQuery { limit: 10, ..q }).unwrap().iter().map(|t| t.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(TicketQuery::default()), [5, 4, 3, 2, 1]);
    assert_eq!(ids(TicketQuery { text: Some("printer".into()), ..Default::default() }), [4, 3, 2, 1]);
    // Wildcards are looked for as typed.
    assert_eq!(ids(TicketQuery { text: Some("%_".into()), ..Default::default() }), [4, 3, 2, 1]);
    assert_eq!(ids(TicketQuery { text: Some("a%b".into()), ..Default::default() }), Vec::<i64>::new());
    assert_eq!(ids(TicketQuery { text: Some("alice@".into()), ..Default::default() }).len(), 5);
    assert_eq!(ids(TicketQuery { text: Some("zzz".into()), number: Some(3), ..Default::default() }), [3]);
    assert_eq!(ids(TicketQuery { mailbox_id: Some(a), ..Default::default() }), [2, 1]);
    assert!(s.set_ticket_status(2, TicketStatus::Closed).unwrap());
    assert!(!s.set_ticket_status(99, TicketStatus::Closed).unwrap());
    assert_eq!(ids(TicketQuery { status: Some(TicketStatus::Closed), ..Default::default() }), [2]);
    assert_eq!(ids(TicketQuery { status: Some(TicketStatus::Open), before_id: Some(4), ..Default::default() }), [3, 1]);
    let page = s.search_tickets(&TicketQuery { limit: 2, ..Default::default() }).unwrap();
    assert_eq!(page.len(), 2);
    let sha = s.messages(&MessageFilter::default()).unwrap()[0].raw_sha256.clone().unwrap();
    assert_eq!(s.blob(&sha).unwrap().unwrap(), raws[0]);
    assert!(s.blob("0000").unwrap().is_none());
}

/// A mail larger than the pieces blobs travel in (PostgreSQL streams those
/// in with COPY and reads them back in pieces) comes back byte for byte.
fn a_large_mail_comes_back_byte_for_byte<S: Store>(s: &S) {
    let mb = mailbox(s, "a");
    let body: String = (0..9_500_000u32).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let raw = mail("big@x", "Big", "", &body);
    s.journal(mb, &[IncomingMail::fetched("r1", &raw)]).unwrap();
    // A second journaling of the same bytes (another mailbox) stores them once.
    let other = mailbox(s, "b");
    s.journal(other, &[IncomingMail::fetched("r1", &raw)]).unwrap();
    let pending = s.pending_mails(Some(mb), 10, u64::MAX).unwrap();
    assert_eq!(pending.len(), 1);
    assert!(pending[0].raw == raw, "the bytes read back differ ({} vs {})", pending[0].raw.len(), raw.len());
    let journal_id = pending[0].journal_id;
    assert!(s.message_raw(journal_id).unwrap().unwrap() == raw);
    let out = s.process_pending(None, 10, u64::MAX, &rules()).unwrap();
    assert_eq!(out.len(), 2);
}

// Journaling and filing in one transaction (`Store::journal_and_file`),
// each new journal row written once with its outcome: the same outcomes as
// journaling, then processing.

/// Journals and files `mails` (remote id, raw bytes), each parsed as the
/// pipeline parses it, plus `rejected` ones refused before download.
fn journal_and_file<S: Store>(
    s: &S,
    mailbox_id: i64,
    mails: &[(&str, &[u8])],
    rejected: &[(&str, u64, &str)],
) -> Vec<ProcessedMail> {
    let mut incoming: Vec<IncomingMail<'_>> = mails.iter().map(|(id, raw)| IncomingMail::fetched(*id, raw)).collect();
    incoming.extend(rejected.iter().map(|(id, size, reason)| IncomingMail::rejected(*id, *size, *reason)));
    let mut parses = Parses::new();
    for (id, raw) in mails {
        parses.entry(id.to_string()).or_insert_with(|| parse_raw(raw));
    }
    s.journal_and_file(mailbox_id, &incoming, Box::new(move || parses), &ProcessingRules::default()).unwrap()
}

/// How a mail was filed: remote id, state, kind, ticket, whether it opened it.
type Filed<'a> = (&'a str, JournalState, Option<MessageKind>, Option<i64>, bool);

fn one_commit_files_what_journal_then_process_would<S: Store>(s: &S) {
    let mb = mailbox(s, "a");
    let first = mail("1@x", "Printer broken", "", "It is broken");
    let reply = mail("2@x", "Re: Printer broken", "In-Reply-To: <1@x>\r\n", "Still broken");
    let known = mail("0@x", "Known", "", "journaled by an earlier pass");
    s.journal(mb, &[IncomingMail::fetched("r0", &known)]).unwrap();
    let mails: [(&str, &[u8]); 6] = [
        ("r0", &known),
        ("r1", &first),
        // The same mail again under another remote id (a re-listed copy).
        ("r2", &first),
        ("r3", &reply),
        ("r4", b"not a mail"),
        // A remote id twice in one fetch: the first counts.
        ("r1", &reply),
    ];
    let out = journal_and_file(s, mb, &mails, &[("r5", 99 << 20, "too large")]);
    let outcomes: Vec<Filed<'_>> =
        out.iter().map(|p| (p.remote_id.as_str(), p.state, p.kind, p.ticket_id, p.created_ticket)).collect();
    assert_eq!(
        outcomes,
        [
            ("r1", JournalState::Processed, Some(MessageKind::Mail), Some(1), true),
            ("r2", JournalState::Processed, Some(MessageKind::Duplicate), Some(1), false),
            ("r3", JournalState::Processed, Some(MessageKind::Mail), Some(1), false),
            ("r4", JournalState::Failed, None, None, false),
        ]
    );
    assert!(out[3].reason.as_deref().is_some_and(|r| r.contains("cannot be read")), "{:?}", out[3].reason);

    let rows = s.messages(&MessageFilter { mailbox_id: Some(mb), ..Default::default() }).unwrap();
    let by_remote = |rid: &str| rows.iter().find(|m| m.remote_id == rid).unwrap_or_else(|| panic!("{rid} missing"));
    assert_eq!(rows.len(), 6, "r0 to r5, each once: {rows:?}");
    assert_eq!(by_remote("r0").state, JournalState::Fetched, "left to the pass that journaled it");
    let r1 = by_remote("r1");
    assert_eq!((r1.message_id.as_deref(), r1.subject.as_deref()), (Some("1@x"), Some("Printer broken")));
    assert_eq!(r1.from.as_deref(), Some("alice@example.com"));
    assert!(r1.processed_at.is_some() && !r1.settled);
    assert_eq!(s.message_raw(r1.journal_id).unwrap().unwrap(), first, "the raw bytes are journaled");
    assert_eq!(s.message_raw(by_remote("r3").journal_id).unwrap().unwrap(), reply);
    assert_eq!(by_remote("r4").state, JournalState::Failed);
    assert_eq!(s.message_raw(by_remote("r4").journal_id).unwrap().unwrap(), b"not a mail", "a broken mail is kept");
    let r5 = by_remote("r5");
    assert_eq!((r5.state, r5.reason.as_deref(), r5.size), (JournalState::Failed, Some("too large"), 99 << 20));
    // Rows are numbered in the order the mails came.
    let ids: Vec<i64> = ["r0", "r1", "r2", "r3", "r4", "r5"].iter().map(|r| by_remote(r).journal_id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let ticket = s.ticket(1).unwrap().unwrap();
    let entries: Vec<(i64, i64)> = ticket.entries.iter().map(|e| (e.position, e.journal_id)).collect();
    assert_eq!(entries, [(1, r1.journal_id), (2, by_remote("r3").journal_id)]);
    let unsettled: Vec<String> = s.unsettled(mb).unwrap().into_iter().map(|u| u.remote_id).collect();
    assert_eq!(unsettled, ["r1", "r2", "r3", "r4", "r5"]);

    // Processing what is left (r0) goes on from the rows written once.
    let rest = s.process_pending(Some(mb), 100, u64::MAX, &ProcessingRules::default()).unwrap();
    assert_eq!(rest.len(), 1);
    assert!(rest[0].created_ticket);
    // A second delivery of the batch journals nothing again.
    assert!(journal_and_file(s, mb, &[("r1", &first), ("r3", &reply)], &[]).is_empty());
    assert_eq!(s.tickets().unwrap().len(), 2);
}

fn a_copy_in_another_mailbox_joins_the_ticket_of_the_first<S: Store>(s: &S) {
    let (a, b) = (mailbox(s, "a"), mailbox(s, "b"));
    let original = mail("1@x", "Hello", "", "Body");
    let later = mail("5@x", "Re: Hello", "References: <1@x>\r\n", "More");
    journal_and_file(s, a, &[("1", &original)], &[]);
    let out = journal_and_file(s, b, &[("1", &original), ("2", &later)], &[]);
    let kinds: Vec<(Option<MessageKind>, Option<i64>)> = out.iter().map(|p| (p.kind, p.ticket_id)).collect();
    assert_eq!(kinds, [(Some(MessageKind::Duplicate), Some(1)), (Some(MessageKind::Mail), Some(1))]);
    assert_eq!(s.ticket(1).unwrap().unwrap().entries.len(), 2);
}

mailrobot_store::on_both_backends!(
    a_large_mail_comes_back_byte_for_byte,
    journal_is_idempotent_per_remote_id,
    new_mail_makes_a_ticket_and_replies_join_it,
    entries_keep_the_new_text_and_unpacked_attachments,
    copies_in_two_mailboxes_make_one_entry_but_reused_message_ids_do_not,
    lookups_within_one_batch_see_what_the_batch_wrote,
    auto_replies_and_bounces_never_open_tickets,
    broken_mail_fails_with_reason_and_the_batch_goes_on,
    a_processing_batch_stops_at_its_byte_budget,
    counts_per_mailbox_tell_today_waiting_and_failed,
    tickets_are_searched_filtered_and_paged_newest_first,
    one_commit_files_what_journal_then_process_would,
    a_copy_in_another_mailbox_joins_the_ticket_of_the_first
);

mailrobot_store::on_both_backends_opened!(
    reopening_keeps_everything,
    a_mail_another_process_filed_meanwhile_is_left_alone
);

/// PostgreSQL keeps a text mail compressed with LZ4 (a third of its
/// bytes to write, out of line and in the WAL), and bytes LZ4 cannot
/// shrink as they are; both read back byte for byte.
#[test]
fn postgres_stores_text_mails_compressed_and_packed_bytes_as_they_are() {
    let db = testing::TestDatabase::create();
    let s = PgStore::connect(&db.url).unwrap();
    let mb = mailbox(&s, "a");
    let body: String = (0..400).map(|i| format!("Line {i} of a request about the printer on floor 2.\r\n")).collect();
    let text = mail("text@x", "Text", "", &body);
    // Packed bytes (an archive, a picture) look random to LZ4.
    let packed = testing::random_looking_bytes(20_000);
    s.journal(mb, &[IncomingMail::fetched("1", &text), IncomingMail::fetched("2", &packed)]).unwrap();
    let compression_is = |sha: &str, expected: &str| {
        pg_tools::execute_batch(
            &db.url,
            &format!(
                "DO $$ BEGIN IF (SELECT pg_column_compression(data) FROM blobs WHERE sha256 = '{sha}') \
                 IS DISTINCT FROM {expected} THEN RAISE EXCEPTION 'blob {sha}: not {}'; END IF; END $$",
                expected.replace('\'', "")
            ),
        )
    };
    let (text_sha, packed_sha) = (raw_sha256(&text), raw_sha256(&packed));
    compression_is(&text_sha, "'lz4'").unwrap();
    compression_is(&packed_sha, "NULL").unwrap();
    assert!(s.blob(&text_sha).unwrap().unwrap() == text);
    assert!(s.blob(&packed_sha).unwrap().unwrap() == packed);
}

/// SQLite keeps a mail the pipeline compressed ([`blob_codec::pack`]) as
/// it was given, with its codec, and reads it back byte for byte: through
/// the blob, the raw mail, and the journal's pending mails. The entry it
/// files keeps its long body packed and a short one as text, and the
/// ticket shows both as parsed.
#[test]
fn sqlite_keeps_mails_and_entry_bodies_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailrobot.db");
    let s = SqliteStore::open(&path).unwrap();
    assert!(s.keeps_packed_mail());
    let mb = mailbox(&s, "a");
    let body: String = (0..400).map(|i| format!("Line {i} of a request about the printer on floor 2.\r\n")).collect();
    let text = mail("text@x", "Text", "", &body);
    let packed = blob_codec::pack(&text).expect("text compresses");
    s.journal(mb, &[IncomingMail::fetched("1", &text).packed(Some(packed.clone()))]).unwrap();
    let sha = raw_sha256(&text);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (codec, stored, size): (Option<String>, i64, i64) = conn
        .query_row("SELECT codec, length(data), size FROM blobs WHERE sha256 = ?1", [&sha], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!((codec.as_deref(), stored, size), (Some(blob_codec::LZ4), packed.len() as i64, text.len() as i64));
    assert!(s.blob(&sha).unwrap().unwrap() == text);
    let pending = s.pending_mails(Some(mb), 10, u64::MAX).unwrap();
    assert!(pending[0].raw == text);
    assert!(s.message_raw(pending[0].journal_id).unwrap().unwrap() == text);
    let short = mail("short@x", "Short", "", "Thanks, it works now.");
    s.journal(mb, &[IncomingMail::fetched("2", &short)]).unwrap();
    let out = s.process_pending(None, 10, u64::MAX, &rules()).unwrap();
    assert_eq!(out.len(), 2);
    let tickets = s.tickets().unwrap();
    assert_eq!(tickets.iter().map(|t| t.subject.as_str()).collect::<Vec<_>>(), ["Text", "Short"]);

    let stored: Vec<(String, i64)> = conn
        .prepare("SELECT typeof(text_body), length(text_body) FROM ticket_entries ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(stored[0].0, "blob", "the long body is packed: {stored:?}");
    assert!((stored[0].1 as usize) < body.len() / 4, "{stored:?} for {} bytes", body.len());
    assert_eq!(stored[1].0, "text", "a short body stays text: {stored:?}");
    for (ticket, raw) in tickets.iter().zip([&text, &short]) {
        let entry = &s.ticket(ticket.id).unwrap().unwrap().entries[0];
        assert_eq!(entry.text_body, mailrobot_core::process::parse_raw(raw).unwrap().text_body);
    }
}
