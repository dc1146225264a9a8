//! Property: however a conversation is linked (ticket tag in the subject
//! behind any reply prefixes, In-Reply-To, References) and however arrivals
//! are cut into batches, every mail lands on the ticket of the mail that
//! started its thread, and every thread is exactly one ticket.

use mailrobot_store::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Link {
    Tag,
    InReplyTo,
    References,
}

#[derive(Debug, Clone)]
struct Mail {
    /// The earlier mail this one answers; None starts a thread.
    parent: Option<usize>,
    link: Link,
    prefix: &'static str,
}

fn conversation() -> impl Strategy<Value = (Vec<Mail>, Vec<usize>)> {
    (1usize..40).prop_flat_map(|n| {
        let mails = (0..n)
            .map(|i| {
                let parent = if i == 0 { Just(None).boxed() } else { prop::option::weighted(0.7, 0..i).boxed() };
                (
                    parent,
                    prop_oneof![Just(Link::Tag), Just(Link::InReplyTo), Just(Link::References)],
                    prop::sample::select(vec!["Re: ", "AW: ", "RE : ", "Fwd: Re: ", "SV: ", "", "WG: AW: "]),
                )
                    .prop_map(|(parent, link, prefix)| Mail { parent, link, prefix })
            })
            .collect::<Vec<_>>();
        (mails, prop::collection::vec(1usize..8, 1..10))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn replies_join_the_ticket_of_their_thread((mails, batch_sizes) in conversation()) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let mb = store.add_mailbox(&NewMailbox {
            name: "m".into(), kind: "drop-folder".into(), config: serde_json::json!({}),
            sealed_secret: None, connection_id: None, poll_seconds: 60, max_message_bytes: 1 << 20,
        }).unwrap().id;

        // The thread root of each mail, and each root's ticket number: roots
        // get tickets in arrival order, 1, 2, 3…
        let mut root = vec![0; mails.len()];
        let mut ticket_of_root = std::collections::HashMap::new();
        for (i, m) in mails.iter().enumerate() {
            root[i] = m.parent.map_or(i, |p| root[p]);
            if m.parent.is_none() {
                let next = ticket_of_root.len() as i64 + 1;
                ticket_of_root.insert(i, next);
            }
        }

        let tag = mailrobot_core::TagFormat::default();
        let raws: Vec<Vec<u8>> = mails.iter().enumerate().map(|(i, m)| {
            let (subject, headers) = match (m.parent, &m.link) {
                (None, _) => (format!("Question {i}"), String::new()),
                (Some(p), Link::Tag) => (format!("{}{} Question {}", m.prefix, tag.tag(ticket_of_root[&root[p]] as u64), root[p]), String::new()),
                (Some(p), Link::InReplyTo) => (format!("{}Question {}", m.prefix, root[p]), format!("In-Reply-To: <m{p}@t>\r\n")),
                (Some(p), Link::References) => (format!("{}Question {}", m.prefix, root[p]), format!("References: <m{}@t> <m{p}@t>\r\n", root[p])),
            };
            format!("From: p{i}@example.com\r\nSubject: {subject}\r\nMessage-ID: <m{i}@t>\r\n{headers}\r\nbody {i}\r\n").into_bytes()
        }).collect();

        // Arrive and get processed in batches of the generated sizes.
        let mut next = 0;
        let mut sizes = batch_sizes.iter().cycle();
        while next < raws.len() {
            let end = (next + sizes.next().unwrap()).min(raws.len());
            let batch: Vec<IncomingMail<'_>> = (next..end).map(|i| IncomingMail::fetched(i.to_string(), &raws[i])).collect();
            store.journal(mb, &batch).unwrap();
            store.process_pending(Some(mb), 1000, u64::MAX, &ProcessingRules::default()).unwrap();
            next = end;
        }

        let messages = store.messages(&MessageFilter::default()).unwrap();
        for m in &messages {
            let i: usize = m.remote_id.parse().unwrap();
            prop_assert_eq!(m.ticket_id, Some(ticket_of_root[&root[i]]), "mail {} ({:?})", i, mails[i]);
        }
        let tickets = store.tickets().unwrap();
        prop_assert_eq!(tickets.len(), ticket_of_root.len());
        for t in tickets {
            let root_index = ticket_of_root.iter().find(|(_, n)| **n == t.id).map(|(r, _)| *r).unwrap();
            let size = root.iter().filter(|r| **r == root_index).count() as i64;
            prop_assert_eq!(t.entries, size);
            prop_assert_eq!(t.subject, format!("Question {root_index}"));
        }
    }
}
