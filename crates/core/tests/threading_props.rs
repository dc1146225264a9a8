//! Property: however a conversation is linked (ticket tag in the subject
//! behind any reply prefixes, In-Reply-To, References) and however arrivals
//! are cut into batches, every mail lands on the ticket of the mail that
//! started its thread, and every thread is exactly one ticket.
//!
//! The rules run against an in-memory [`Ledger`] — the store's part is
//! lookups and writes, tested on SQLite in the store's own tests.

use std::collections::HashMap;
use std::convert::Infallible;

use mailrobot_core::*;
use proptest::prelude::*;

/// The journal and tickets as plain maps: what [`Ledger`] promises, nothing more.
#[derive(Default)]
struct MemoryLedger {
    /// Journal rows by id: pending, or processed with (fingerprint, Message-ID, ticket).
    journal: HashMap<i64, Row>,
    /// Ticket id → (subject, entries), ids from 1 in creation order.
    tickets: Vec<(String, Vec<i64>)>,
    /// Every change recorded, in order: (ticket, change, entries it had then).
    changes: Vec<(u64, TicketChange, usize)>,
}

enum Row {
    Pending,
    Processed { fingerprint: String, message_id: Option<String>, ticket: Option<u64> },
    Failed,
}

impl Ledger for MemoryLedger {
    type Error = Infallible;

    fn is_pending(&mut self, journal_id: i64) -> Result<bool, Infallible> {
        Ok(matches!(self.journal.get(&journal_id), Some(Row::Pending)))
    }

    fn earlier_copy(
        &mut self,
        journal_id: i64,
        fingerprint: &str,
        message_id: Option<&str>,
    ) -> Result<Option<Option<u64>>, Infallible> {
        let mut ids: Vec<_> = self.journal.keys().copied().filter(|id| *id != journal_id).collect();
        ids.sort();
        Ok(ids.into_iter().find_map(|id| match &self.journal[&id] {
            Row::Processed { fingerprint: f, message_id: m, ticket }
                if f == fingerprint && m.as_deref() == message_id =>
            {
                Some(*ticket)
            }
            _ => None,
        }))
    }

    fn ticket_exists(&mut self, ticket: u64) -> Result<bool, Infallible> {
        Ok(ticket >= 1 && ticket as usize <= self.tickets.len())
    }

    fn ticket_of_message(&mut self, message_id: &str) -> Result<Option<u64>, Infallible> {
        let mut ids: Vec<_> = self.journal.keys().copied().collect();
        ids.sort();
        Ok(ids.into_iter().find_map(|id| match &self.journal[&id] {
            Row::Processed { message_id: Some(m), ticket: Some(t), .. } if m == message_id => Some(*t),
            _ => None,
        }))
    }

    fn create_ticket(&mut self, ticket: &NewTicket<'_>) -> Result<u64, Infallible> {
        self.tickets.push((ticket.subject.to_string(), Vec::new()));
        Ok(self.tickets.len() as u64)
    }

    fn add_entry(&mut self, ticket: u64, journal_id: i64, _mail: &ParsedMail) -> Result<(), Infallible> {
        self.tickets[ticket as usize - 1].1.push(journal_id);
        Ok(())
    }

    fn ticket_changed(&mut self, ticket: u64, change: TicketChange) -> Result<(), Infallible> {
        let entries = self.tickets[ticket as usize - 1].1.len();
        self.changes.push((ticket, change, entries));
        Ok(())
    }

    fn answer_context(
        &mut self,
        _mailbox_id: i64,
        _recipient_key: &str,
        _ticket: Option<u64>,
        _limits: &AnswerLimits,
    ) -> Result<Option<AnswerContext>, Infallible> {
        // These mailboxes send no mail.
        Ok(None)
    }

    fn queue_mail(&mut self, _mail: &OutgoingMail) -> Result<(), Infallible> {
        unreachable!("a mailbox that sends no mail queues none")
    }

    fn record_answer(&mut self, _journal_id: i64, _answer: &str) -> Result<(), Infallible> {
        Ok(())
    }

    // No rules, templates or directory: threading alone.
    fn rules(&mut self) -> Result<Vec<StoredRule>, Infallible> {
        Ok(Vec::new())
    }

    fn templates(&mut self) -> Result<Vec<StoredTemplate>, Infallible> {
        Ok(Vec::new())
    }

    fn mailbox_policy(&mut self, _mailbox_id: i64) -> Result<MailboxPolicy, Infallible> {
        Ok(MailboxPolicy { unknown_senders: UnknownSenders::Accept, language: None })
    }

    fn contact_known(&mut self, _key: &str) -> Result<bool, Infallible> {
        Ok(false)
    }

    fn add_contact(&mut self, _address: &Address) -> Result<(), Infallible> {
        unreachable!("the policy is accept")
    }

    fn set_ticket_fields(&mut self, _ticket: u64, _fields: &TicketFields) -> Result<(), Infallible> {
        unreachable!("no rules")
    }

    fn record_rules(&mut self, _journal_id: i64, _summary: &str) -> Result<(), Infallible> {
        unreachable!("no rules")
    }

    fn original_attachment(&mut self, _journal_id: i64) -> Result<Option<OutgoingAttachment>, Infallible> {
        unreachable!("no rules")
    }

    fn record_processed(&mut self, journal_id: i64, mail: &ParsedMail, filed: Filed) -> Result<(), Infallible> {
        let row = Row::Processed {
            fingerprint: mail.fingerprint.clone(),
            message_id: mail.message_id.clone(),
            ticket: filed.ticket(),
        };
        self.journal.insert(journal_id, row);
        Ok(())
    }

    fn record_failed(&mut self, journal_id: i64, _reason: &str) -> Result<(), Infallible> {
        self.journal.insert(journal_id, Row::Failed);
        Ok(())
    }
}

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
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn replies_join_the_ticket_of_their_thread((mails, batch_sizes) in conversation()) {
        let mut ledger = MemoryLedger::default();

        // The thread root of each mail, and each root's ticket number: roots
        // get tickets in arrival order, 1, 2, 3…
        let mut root = vec![0; mails.len()];
        let mut ticket_of_root = std::collections::HashMap::new();
        for (i, m) in mails.iter().enumerate() {
            root[i] = m.parent.map_or(i, |p| root[p]);
            if m.parent.is_none() {
                let next = ticket_of_root.len() as u64 + 1;
                ticket_of_root.insert(i, next);
            }
        }

        let tag = TagFormat::default();
        let raws: Vec<Vec<u8>> = mails.iter().enumerate().map(|(i, m)| {
            let (subject, headers) = match (m.parent, &m.link) {
                (None, _) => (format!("Question {i}"), String::new()),
                (Some(p), Link::Tag) => (format!("{}{} Question {}", m.prefix, tag.tag(ticket_of_root[&root[p]]), root[p]), String::new()),
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
            let batch: Vec<PendingMail> = (next..end).map(|i| {
                ledger.journal.insert(i as i64, Row::Pending);
                PendingMail { journal_id: i as i64, mailbox_id: 1, remote_id: i.to_string(), raw: raws[i].clone() }
            }).collect();
            let outcomes = file_batch(&mut ledger, parse_batch(batch, 2), &tag, &AnswerLimits::default()).unwrap();
            prop_assert_eq!(outcomes.len(), end - next);
            for outcome in outcomes {
                let i = outcome.journal_id as usize;
                let filed = outcome.result.unwrap().filed;
                prop_assert_eq!(filed.ticket(), Some(ticket_of_root[&root[i]]), "mail {} ({:?})", i, mails[i]);
            }
            next = end;
        }

        prop_assert_eq!(ledger.tickets.len(), ticket_of_root.len());
        for (index, (subject, entries)) in ledger.tickets.iter().enumerate() {
            let id = index as u64 + 1;
            let root_index = ticket_of_root.iter().find(|(_, n)| **n == id).map(|(r, _)| *r).unwrap();
            let members: Vec<i64> = (0..mails.len()).filter(|i| root[*i] == root_index).map(|i| i as i64).collect();
            prop_assert_eq!(entries, &members);
            prop_assert_eq!(subject, &format!("Question {root_index}"));
            // Webhooks hear of each entry once, in order: created with the
            // first, then one `EntryAdded` per later entry.
            let heard: Vec<(TicketChange, usize)> =
                ledger.changes.iter().filter(|(t, ..)| *t == id).map(|(_, c, n)| (*c, *n)).collect();
            let expected: Vec<(TicketChange, usize)> = (1..=entries.len())
                .map(|n| (if n == 1 { TicketChange::Created } else { TicketChange::EntryAdded }, n))
                .collect();
            prop_assert_eq!(heard, expected);
        }
    }
}
