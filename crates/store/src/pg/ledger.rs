//! The PostgreSQL side of processing: reading pending mails, and the
//! [`Ledger`] primitives the ticket rules call inside the write transaction.
//! No decision is taken here.

use std::collections::{HashMap, HashSet};

use mailrobot_core::answer::folded;
use mailrobot_core::{
    Address, AnswerContext, AnswerLimits, BatchLookups, Filed, Ledger, MailboxPolicy, NewTicket, OutgoingAttachment,
    OutgoingMail, ParsedMail, PendingMail, StoredRule, StoredTemplate, TicketChange, TicketFields,
};

use super::rows::FilingRows;
use super::{BLOB_PIECE, PgTx, read_blob};
use crate::model::{FreshRow, mailbox_policy, tags_from_json, tags_to_json};
use crate::outbox::EventRecord;
use crate::{IncomingMail, JournalState, Result, StoreError, TicketStatus, WebhookEvent};

/// The next batch of pending mails as a subquery: up to `$2` mails in state
/// `fetched` (of mailbox `$1`, or all) in journal order, stopping before the
/// mail whose bytes would pass `$3` (the first always comes). The byte
/// budget is kept in the query (a running sum of sizes), so mails past it
/// are not read.
macro_rules! pending_batch {
    () => {
        "(SELECT id, mailbox_id, remote_id, raw_sha256, size, data FROM (
             SELECT m.id, m.mailbox_id, m.remote_id, m.raw_sha256, b.size, b.data,
                    (SUM(COALESCE(b.size, 0)) OVER (ORDER BY m.id))::bigint - COALESCE(b.size, 0) AS before,
                    ROW_NUMBER() OVER (ORDER BY m.id) AS n
             FROM messages m LEFT JOIN blobs b ON b.sha256 = m.raw_sha256
             WHERE m.state = 'fetched' AND ($1::bigint IS NULL OR m.mailbox_id = $1)
             ORDER BY m.id LIMIT $2) p
         WHERE n = 1 OR before + COALESCE(size, 0) <= $3) batch"
    };
}

/// Up to `limit` mails in state `fetched`, with their bytes, stopping before
/// `max_bytes` (always at least one).
pub(crate) fn read_pending(
    tx: &mut PgTx<'_>,
    mailbox_id: Option<i64>,
    limit: usize,
    max_bytes: u64,
) -> Result<Vec<PendingMail>> {
    // Small mails come with their bytes; larger ones are read in pieces.
    let rows = tx.query(
        concat!(
            "SELECT id, mailbox_id, remote_id, raw_sha256, CASE WHEN size <= $4 THEN data END FROM ",
            pending_batch!(),
            " ORDER BY id"
        ),
        &[&mailbox_id, &(limit as i64), &(max_bytes.min(i64::MAX as u64) as i64), &(BLOB_PIECE as i64)],
    )?;
    let mut pending = Vec::with_capacity(rows.len());
    for row in rows {
        let sha: Option<String> = row.try_get(3)?;
        let raw = match (row.try_get::<_, Option<Vec<u8>>>(4)?, sha) {
            (Some(raw), _) => raw,
            (None, Some(sha)) => read_blob(tx, &sha)?.unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        pending.push(PendingMail {
            journal_id: row.try_get(0)?,
            mailbox_id: row.try_get(1)?,
            remote_id: row.try_get(2)?,
            raw,
        });
    }
    Ok(pending)
}

/// The bytes [`read_pending`] with the same arguments would read; None
/// when no mail waits.
pub(crate) fn pending_batch_bytes(
    tx: &mut PgTx<'_>,
    mailbox_id: Option<i64>,
    limit: usize,
    max_bytes: u64,
) -> Result<Option<u64>> {
    let row = tx.query_one(
        concat!("SELECT count(*), COALESCE(SUM(COALESCE(size, 0)), 0)::bigint FROM ", pending_batch!()),
        &[&mailbox_id, &(limit as i64), &(max_bytes.min(i64::MAX as u64) as i64)],
    )?;
    let (mails, bytes): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    Ok((mails > 0).then_some(bytes.max(0) as u64))
}

/// One write transaction, as processing sees it.
///
/// Lookups are answered from what [`Ledger::prefetch`] read for the batch,
/// kept true through the batch's own writes (nobody else writes meanwhile:
/// the transaction holds the write lock); anything not prefetched is read.
/// Writes are deferred ([`PgTx::defer`]), so a mail costs no round trip
/// of its own.
pub(crate) struct PgLedger<'a, 'c> {
    tx: &'a mut PgTx<'c>,
    /// When this batch was processed (RFC 3339), one time for all its mails.
    at: String,
    /// The robot's own addresses, read once per batch when first needed.
    own_addresses: Option<Vec<String>>,
    known: Known,
    /// Ticket numbers taken from the sequence for this batch: the first is
    /// drawn from it, the others follow, and the sequence is moved past them
    /// at the end ([`PgLedger::finish`]).
    ticket_numbers: Option<(i64, i64)>,
    /// Tickets, entries, contacts and journal rows not sent yet.
    rows: FilingRows,
    /// Journal rows of mails fetched in this transaction, written when
    /// their outcome is recorded (`Store::journal_and_file`).
    pub(crate) fresh: HashMap<i64, FreshRow>,
}

/// The tickets of mails with one Message-ID.
#[derive(Default)]
struct Thread {
    /// The first journal row with a ticket: (row, ticket).
    received: Option<(i64, i64)>,
    /// The ticket of the first mail the robot sent with it.
    sent: Option<i64>,
}

/// What the batch's lookups will find, read at once.
#[derive(Default)]
struct Known {
    /// Journal row → still waiting for processing.
    pending: HashMap<i64, bool>,
    /// Fingerprints whose processed copies were read, and for each
    /// (fingerprint, Message-ID) the first processed copy: (row, its ticket).
    fingerprints: HashSet<String>,
    copies: HashMap<(String, Option<String>), (i64, Option<i64>)>,
    tickets: HashMap<u64, bool>,
    /// Tickets this batch opened.
    created: HashSet<u64>,
    /// Message-ID → the tickets of mails with that Message-ID.
    threads: HashMap<String, Thread>,
    contacts: HashMap<String, bool>,
    webhooks: Option<Vec<(i64, String)>>,
    /// Mailbox → (name, config).
    mailboxes: HashMap<i64, (String, String)>,
}

impl<'a, 'c> PgLedger<'a, 'c> {
    pub(crate) fn new(tx: &'a mut PgTx<'c>, at: String) -> Self {
        Self {
            tx,
            at,
            own_addresses: None,
            known: Known::default(),
            ticket_numbers: None,
            rows: FilingRows::default(),
            fresh: HashMap::new(),
        }
    }

    /// The transaction, once the rows gathered are sent: what comes next
    /// must see them.
    fn db(&mut self) -> Result<&mut PgTx<'c>> {
        self.rows.send(self.tx, &self.at)?;
        Ok(self.tx)
    }

    /// Sends what is left, and moves the ticket sequence past the numbers
    /// this batch used.
    pub(crate) fn finish(mut self) -> Result<()> {
        let numbers = self.ticket_numbers;
        let tx = self.db()?;
        if let Some((first, last)) = numbers
            && last > first
        {
            tx.query_one("SELECT setval(pg_get_serial_sequence('tickets', 'id'), $1::bigint)", &[&last])?;
        }
        Ok(())
    }

    /// Journals a mail refused before download as failed, with why.
    pub(crate) fn journal_rejected(
        &mut self,
        journal_id: i64,
        mailbox_id: i64,
        mail: &IncomingMail<'_>,
        reason: Option<&str>,
    ) -> Result<()> {
        let at = self.at.clone();
        let reason = reason.unwrap_or("not read").to_string();
        self.db()?.defer(
            "INSERT INTO messages (id, mailbox_id, remote_id, size, state, reason, fetched_at, processed_at)
             VALUES ($1, $2, $3, $4, 'failed', $5, $6, $6)",
            owned![journal_id, mailbox_id, mail.remote_id.clone(), mail.size as i64, reason, at],
            0,
        )
    }

    fn next_ticket_number(&mut self) -> Result<i64> {
        let number = match &mut self.ticket_numbers {
            Some((_, last)) => {
                *last += 1;
                *last
            }
            None => {
                let first: i64 =
                    self.db()?.query_one("SELECT nextval(pg_get_serial_sequence('tickets', 'id'))", &[])?.try_get(0)?;
                self.ticket_numbers = Some((first, first));
                first
            }
        };
        Ok(number)
    }

    fn webhooks(&mut self) -> Result<Vec<(i64, String)>> {
        if self.known.webhooks.is_none() {
            self.known.webhooks = Some(super::outbox::webhooks(self.db()?)?);
        }
        Ok(self.known.webhooks.clone().unwrap_or_default())
    }
}

/// Boxes statement parameters a deferred write keeps.
macro_rules! owned {
    ($($param:expr),* $(,)?) => {
        vec![$(Box::new($param) as $crate::pg::OwnedParam),*]
    };
}
pub(crate) use owned;

impl Ledger for PgLedger<'_, '_> {
    type Error = StoreError;

    fn prefetch(&mut self, lookups: &BatchLookups) -> Result<()> {
        self.rows.send(self.tx, &self.at)?;
        let known = &mut self.known;
        let tx = &mut *self.tx;
        known.pending = lookups.journal_ids.iter().map(|id| (*id, self.fresh.contains_key(id))).collect();
        for row in
            tx.query("SELECT id FROM messages WHERE id = ANY($1) AND state = 'fetched'", &[&lookups.journal_ids])?
        {
            known.pending.insert(row.try_get(0)?, true);
        }
        known.fingerprints = lookups.fingerprints.iter().cloned().collect();
        for row in tx.query(
            "SELECT DISTINCT ON (fingerprint, message_id) fingerprint, message_id, id, ticket_id FROM messages
             WHERE fingerprint = ANY($1) AND state = 'processed' ORDER BY fingerprint, message_id, id",
            &[&lookups.fingerprints],
        )? {
            known.copies.insert((row.try_get(0)?, row.try_get(1)?), (row.try_get(2)?, row.try_get(3)?));
        }
        let tickets: Vec<i64> = lookups.tickets.iter().filter_map(|t| i64::try_from(*t).ok()).collect();
        known.tickets = lookups.tickets.iter().map(|t| (*t, false)).collect();
        for row in tx.query("SELECT id FROM tickets WHERE id = ANY($1)", &[&tickets])? {
            known.tickets.insert(row.try_get::<_, i64>(0)? as u64, true);
        }
        let ids = &lookups.referred_message_ids;
        known.threads = ids.iter().map(|id| (id.clone(), Thread::default())).collect();
        for row in tx.query(
            "SELECT DISTINCT ON (message_id) message_id, id, ticket_id FROM messages
             WHERE message_id = ANY($1) AND ticket_id IS NOT NULL ORDER BY message_id, id",
            &[ids],
        )? {
            let id: String = row.try_get(0)?;
            known.threads.entry(id).or_default().received = Some((row.try_get(1)?, row.try_get(2)?));
        }
        for row in tx.query(
            "SELECT DISTINCT ON (event_id) event_id, ticket_id FROM outbox
             WHERE kind = 'mail' AND event_id = ANY($1) AND ticket_id IS NOT NULL ORDER BY event_id, id",
            &[ids],
        )? {
            let id: String = row.try_get(0)?;
            known.threads.entry(id).or_default().sent = Some(row.try_get(1)?);
        }
        known.contacts = lookups.requester_keys.iter().map(|k| (k.clone(), false)).collect();
        for row in tx.query("SELECT email_key FROM contacts WHERE email_key = ANY($1)", &[&lookups.requester_keys])? {
            known.contacts.insert(row.try_get(0)?, true);
        }
        Ok(())
    }

    fn is_pending(&mut self, journal_id: i64) -> Result<bool> {
        if self.fresh.contains_key(&journal_id) {
            return Ok(true);
        }
        if let Some(pending) = self.known.pending.get(&journal_id) {
            return Ok(*pending);
        }
        let state: Option<JournalState> =
            match self.db()?.query_opt("SELECT state FROM messages WHERE id = $1", &[&journal_id])? {
                Some(row) => Some(row.try_get(0)?),
                None => None,
            };
        Ok(state == Some(JournalState::Fetched))
    }

    fn earlier_copy(
        &mut self,
        journal_id: i64,
        fingerprint: &str,
        message_id: Option<&str>,
    ) -> Result<Option<Option<u64>>> {
        // The mail asking is pending, so it is none of the processed copies.
        if self.known.fingerprints.contains(fingerprint) && self.known.pending.get(&journal_id) == Some(&true) {
            let key = (fingerprint.to_string(), message_id.map(str::to_string));
            return Ok(self.known.copies.get(&key).map(|(_, ticket)| ticket.map(|t| t as u64)));
        }
        let row = self.db()?.query_opt(
            "SELECT ticket_id FROM messages WHERE fingerprint = $1 AND message_id IS NOT DISTINCT FROM $2
             AND state = 'processed' AND id <> $3 ORDER BY id LIMIT 1",
            &[&fingerprint, &message_id, &journal_id],
        )?;
        Ok(match row {
            Some(row) => Some(row.try_get::<_, Option<i64>>(0)?.map(|t| t as u64)),
            None => None,
        })
    }

    fn ticket_exists(&mut self, ticket: u64) -> Result<bool> {
        if let Some(exists) = self.known.tickets.get(&ticket) {
            return Ok(*exists);
        }
        let Ok(ticket) = i64::try_from(ticket) else { return Ok(false) };
        Ok(self.db()?.query_opt("SELECT 1 FROM tickets WHERE id = $1", &[&ticket])?.is_some())
    }

    fn ticket_of_message(&mut self, message_id: &str) -> Result<Option<u64>> {
        if let Some(thread) = self.known.threads.get(message_id) {
            return Ok(thread.received.map(|(_, ticket)| ticket).or(thread.sent).map(|t| t as u64));
        }
        let tx = self.db()?;
        let received = tx.query_opt(
            "SELECT ticket_id FROM messages WHERE message_id = $1 AND ticket_id IS NOT NULL ORDER BY id LIMIT 1",
            &[&message_id],
        )?;
        // Or a mail the robot sent (an acknowledgement the requester answers).
        let row = match received {
            Some(row) => Some(row),
            None => tx.query_opt(
                "SELECT ticket_id FROM outbox WHERE kind = 'mail' AND event_id = $1 AND ticket_id IS NOT NULL
                 ORDER BY id LIMIT 1",
                &[&message_id],
            )?,
        };
        Ok(match row {
            Some(row) => Some(row.try_get::<_, i64>(0)? as u64),
            None => None,
        })
    }

    fn create_ticket(&mut self, ticket: &NewTicket<'_>) -> Result<u64> {
        let id = self.next_ticket_number()?;
        self.rows.ticket(id, ticket);
        self.known.tickets.insert(id as u64, true);
        self.known.created.insert(id as u64);
        Ok(id as u64)
    }

    fn add_entry(&mut self, ticket: u64, journal_id: i64, mail: &ParsedMail) -> Result<()> {
        // A ticket made by this batch has this batch's time already.
        let touched = !self.known.created.contains(&ticket);
        self.rows.entry(self.tx, ticket as i64, journal_id, mail, touched)
    }

    fn ticket_changed(&mut self, ticket: u64, change: TicketChange) -> Result<()> {
        let event_type = match change {
            TicketChange::Created => WebhookEvent::TicketCreated,
            TicketChange::EntryAdded => WebhookEvent::EntryAdded,
        };
        let at = self.at.clone();
        let webhooks = self.webhooks()?;
        if crate::outbox::subscribers(webhooks.clone(), event_type).is_empty() {
            return Ok(());
        }
        super::outbox::enqueue_event_to(self.db()?, webhooks, event_type, |tx| {
            let row = tx.query_one(
                "SELECT t.status, (SELECT MAX(position) FROM ticket_entries WHERE ticket_id = t.id)
                 FROM tickets t WHERE t.id = $1",
                &[&(ticket as i64)],
            )?;
            Ok(EventRecord {
                ticket_id: ticket as i64,
                entry_position: row.try_get(1)?,
                status: row.try_get::<_, TicketStatus>(0)?,
                previous_status: None,
                occurred_at: at,
            })
        })
    }

    fn answer_context(
        &mut self,
        mailbox_id: i64,
        recipient_key: &str,
        ticket: Option<u64>,
        limits: &AnswerLimits,
    ) -> Result<Option<AnswerContext>> {
        let mailbox = match self.known.mailboxes.get(&mailbox_id) {
            Some(mailbox) => mailbox.clone(),
            None => {
                let row = self.db()?.query_one("SELECT name, config FROM mailboxes WHERE id = $1", &[&mailbox_id])?;
                let mailbox: (String, String) = (row.try_get(0)?, row.try_get(1)?);
                self.known.mailboxes.insert(mailbox_id, mailbox.clone());
                mailbox
            }
        };
        let (name, config) = mailbox;
        // None: the mailbox sends no mail.
        let Some(query) = crate::outbox::AnswerQuery::new(&config, &self.at, limits) else { return Ok(None) };
        self.rows.send(self.tx, &self.at)?;
        let context = super::outbox::answer_context(
            self.tx,
            &mut self.own_addresses,
            (mailbox_id, name),
            query,
            recipient_key,
            ticket,
        )?;
        Ok(Some(context))
    }

    fn queue_mail(&mut self, mail: &OutgoingMail) -> Result<()> {
        if let (Some(ticket), Some(thread)) = (mail.ticket, self.known.threads.get_mut(&mail.message_id))
            && thread.sent.is_none()
        {
            thread.sent = Some(ticket as i64);
        }
        self.rows.send(self.tx, &self.at)?;
        super::outbox::queue_mail(self.tx, &self.at, mail)
    }

    fn rules(&mut self) -> Result<Vec<StoredRule>> {
        super::directory::stored_rules(self.db()?)
    }

    fn templates(&mut self) -> Result<Vec<StoredTemplate>> {
        super::directory::stored_templates(self.db()?)
    }

    fn mailbox_policy(&mut self, mailbox_id: i64) -> Result<MailboxPolicy> {
        let config: String =
            self.db()?.query_one("SELECT config FROM mailboxes WHERE id = $1", &[&mailbox_id])?.try_get(0)?;
        Ok(mailbox_policy(&config))
    }

    fn contact_known(&mut self, key: &str) -> Result<bool> {
        if let Some(known) = self.known.contacts.get(key) {
            return Ok(*known);
        }
        super::directory::contact_known(self.db()?, key)
    }

    fn add_contact(&mut self, address: &Address) -> Result<()> {
        if let Some(known) = self.known.contacts.get_mut(&folded(&address.email)) {
            *known = true;
        }
        self.rows.contact(address);
        Ok(())
    }

    fn set_ticket_fields(&mut self, ticket: u64, fields: &TicketFields) -> Result<()> {
        let ticket = ticket as i64;
        let stored: Option<String> =
            self.db()?.query_one("SELECT tags FROM tickets WHERE id = $1", &[&ticket])?.try_get(0)?;
        let tags = tags_to_json(&fields.merged_tags(&tags_from_json(stored)));
        self.db()?.defer(
            "UPDATE tickets SET category = COALESCE($2, category), priority = COALESCE($3, priority),
             queue = COALESCE($4, queue), assignee = COALESCE($5, assignee), tags = $6 WHERE id = $1",
            owned![
                ticket,
                fields.category.clone(),
                fields.priority.clone(),
                fields.queue.clone(),
                fields.assignee.clone(),
                tags
            ],
            0,
        )
    }

    fn record_rules(&mut self, journal_id: i64, summary: &str) -> Result<()> {
        // Several notes on one mail (rules, then a template fallback) add up.
        self.db()?.defer(
            "UPDATE messages SET rules = CASE WHEN rules IS NULL THEN $2 ELSE rules || '; ' || $2 END WHERE id = $1",
            owned![journal_id, summary.to_string()],
            summary.len(),
        )
    }

    fn original_attachment(&mut self, journal_id: i64) -> Result<Option<OutgoingAttachment>> {
        let row = self.db()?.query_opt(
            "SELECT raw_sha256, size FROM messages WHERE id = $1 AND raw_sha256 IS NOT NULL",
            &[&journal_id],
        )?;
        Ok(match row {
            Some(row) => Some(OutgoingAttachment::original(row.try_get(0)?, row.try_get::<_, i64>(1)?.max(0) as u64)),
            None => None,
        })
    }

    fn record_answer(&mut self, journal_id: i64, answer: &str) -> Result<()> {
        self.rows.answer(journal_id, answer);
        Ok(())
    }

    fn record_processed(&mut self, journal_id: i64, mail: &ParsedMail, filed: Filed) -> Result<()> {
        let ticket = filed.ticket().map(|t| t as i64);
        self.known.pending.insert(journal_id, false);
        if self.known.fingerprints.contains(&mail.fingerprint) {
            let copy = self.known.copies.entry((mail.fingerprint.clone(), mail.message_id.clone()));
            let first = copy.or_insert((journal_id, ticket));
            if journal_id < first.0 {
                *first = (journal_id, ticket);
            }
        }
        if let (Some(message_id), Some(ticket)) = (&mail.message_id, ticket)
            && let Some(thread) = self.known.threads.get_mut(message_id)
            && thread.received.is_none_or(|(first, _)| journal_id < first)
        {
            thread.received = Some((journal_id, ticket));
        }
        let fresh = self.fresh.remove(&journal_id);
        self.rows.processed(self.tx, &self.at, journal_id, mail, filed, fresh)
    }

    fn record_failed(&mut self, journal_id: i64, reason: &str) -> Result<()> {
        self.known.pending.insert(journal_id, false);
        let at = self.at.clone();
        if let Some(row) = self.fresh.remove(&journal_id) {
            return self.db()?.defer(
                "INSERT INTO messages (id, mailbox_id, remote_id, raw_sha256, size, state, reason, attempts, fetched_at,
                 processed_at) VALUES ($1, $2, $3, $4, $5, 'failed', $6, 1, $7, $7)",
                owned![journal_id, row.mailbox_id, row.remote_id, row.raw_sha256, row.size, reason.to_string(), at],
                reason.len(),
            );
        }
        self.db()?.defer(
            "UPDATE messages SET state = 'failed', reason = $2, attempts = attempts + 1, processed_at = $3
             WHERE id = $1",
            owned![journal_id, reason.to_string(), at],
            reason.len(),
        )
    }
}
