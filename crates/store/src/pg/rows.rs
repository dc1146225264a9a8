//! The rows filing writes for most mails, gathered and sent as one
//! statement per table and few megabytes (`unnest` of arrays): the server
//! runs a few statements per batch instead of several per mail.
//!
//! Order matters and is kept: blobs, tickets, journal rows written at once
//! (mails fetched in this transaction: the entries refer to them), entries
//! (their positions follow the ones stored, in the order added),
//! attachments, ticket times, contacts, then journal rows updated
//! (mails journaled before). [`FilingRows::send`] must run before any
//! other statement of the transaction, so what it sends lands before what
//! follows it (the ledger sends them before every other write or read).

use mailrobot_core::answer::folded;
use mailrobot_core::{Address, Filed, NewTicket, ParsedMail};

use super::{BLOB_PIECE, BlobRows, OwnedParam, PgTx, put_blob};
use crate::model::FreshRow;
use crate::{MessageKind, Result};

/// Rows are sent once they hold this many bytes (bodies, attachments) or
/// mails, so a batch's copies stay small.
const MAX_BYTES: usize = 1 << 20;
const MAX_MAILS: usize = 500;

#[derive(Default)]
pub(crate) struct FilingRows {
    blobs: BlobRows,
    tickets: TicketRows,
    entries: EntryRows,
    attachments: AttachmentRows,
    touched_tickets: Vec<i64>,
    contacts: ContactRows,
    /// What was decided about answering mails whose journal rows are not
    /// among the ones to send.
    answers: std::collections::HashMap<i64, String>,
    /// Journal rows updated as processed, and rows written (fetched in this
    /// transaction) as processed.
    processed: ProcessedRows,
    inserted: InsertedRows,
    bytes: usize,
    mails: usize,
}

#[derive(Default)]
struct TicketRows {
    id: Vec<i64>,
    subject: Vec<String>,
    requester: Vec<Option<String>>,
    requester_name: Vec<Option<String>>,
    requester_key: Vec<Option<String>>,
}

#[derive(Default)]
struct EntryRows {
    ticket_id: Vec<i64>,
    journal_id: Vec<i64>,
    kind: Vec<MessageKind>,
    message_id: Vec<Option<String>>,
    from_addr: Vec<Option<String>>,
    from_name: Vec<Option<String>>,
    subject: Vec<String>,
    date: Vec<Option<String>>,
    text_body: Vec<String>,
    html_body: Vec<Option<String>>,
    new_text: Vec<Option<String>>,
}

#[derive(Default)]
struct AttachmentRows {
    journal_id: Vec<i64>,
    position: Vec<i64>,
    filename: Vec<Option<String>>,
    content_type: Vec<String>,
    content_id: Vec<Option<String>>,
    inline: Vec<bool>,
    size: Vec<i64>,
    sha256: Vec<String>,
}

#[derive(Default)]
struct ContactRows {
    email: Vec<String>,
    email_key: Vec<String>,
    name: Vec<Option<String>>,
}

#[derive(Default)]
struct ProcessedRows {
    id: Vec<i64>,
    kind: Vec<MessageKind>,
    message_id: Vec<Option<String>>,
    fingerprint: Vec<String>,
    subject: Vec<String>,
    from_addr: Vec<Option<String>>,
    ticket_id: Vec<Option<i64>>,
    answer: Vec<Option<String>>,
}

/// Journal rows written at once as processed: [`ProcessedRows`] and where
/// the mail came from.
#[derive(Default)]
struct InsertedRows {
    processed: ProcessedRows,
    mailbox_id: Vec<i64>,
    remote_id: Vec<String>,
    raw_sha256: Vec<String>,
    size: Vec<i64>,
}

impl ProcessedRows {
    fn push(&mut self, journal_id: i64, mail: &ParsedMail, filed: Filed, answer: Option<String>) {
        self.id.push(journal_id);
        self.kind.push(MessageKind::from(filed));
        self.message_id.push(mail.message_id.clone());
        self.fingerprint.push(mail.fingerprint.clone());
        self.subject.push(mail.subject.clone());
        self.from_addr.push(mail.from.as_ref().map(|a| a.email.clone()));
        self.ticket_id.push(filed.ticket().map(|t| t as i64));
        self.answer.push(answer);
    }

    /// Sets the answer of a row still to be sent; false if there is none.
    fn set_answer(&mut self, journal_id: i64, answer: &str) -> bool {
        match self.id.iter().rposition(|id| *id == journal_id) {
            Some(i) => {
                self.answer[i] = Some(answer.to_string());
                true
            }
            None => false,
        }
    }
}

/// Boxes the arrays of one statement.
macro_rules! arrays {
    ($($column:expr),* $(,)?) => {
        vec![$(Box::new(std::mem::take(&mut $column)) as OwnedParam),*]
    };
}

impl FilingRows {
    pub(crate) fn ticket(&mut self, id: i64, ticket: &NewTicket<'_>) {
        let rows = &mut self.tickets;
        rows.id.push(id);
        rows.subject.push(ticket.subject.to_string());
        rows.requester.push(ticket.requester.map(str::to_string));
        rows.requester_name.push(ticket.requester_name.map(str::to_string));
        rows.requester_key.push(ticket.requester.map(folded));
    }

    /// The mail as the ticket's next entry, with its attachments. A ticket
    /// opened before this batch (`touched`) gets this batch's time.
    pub(crate) fn entry(
        &mut self,
        tx: &mut PgTx<'_>,
        ticket: i64,
        journal_id: i64,
        mail: &ParsedMail,
        touched: bool,
    ) -> Result<()> {
        let rows = &mut self.entries;
        rows.ticket_id.push(ticket);
        rows.journal_id.push(journal_id);
        rows.kind.push(MessageKind::from(mail.kind));
        rows.message_id.push(mail.message_id.clone());
        rows.from_addr.push(mail.from.as_ref().map(|a| a.email.clone()));
        rows.from_name.push(mail.from.as_ref().and_then(|a| a.name.clone()));
        rows.subject.push(mail.subject.clone());
        rows.date.push(mail.date.clone());
        rows.text_body.push(mail.text_body.clone());
        rows.html_body.push(mail.html_body.clone());
        rows.new_text.push(mail.new_text.clone());
        self.bytes += mail.text_body.len()
            + mail.html_body.as_ref().map_or(0, String::len)
            + mail.new_text.as_ref().map_or(0, String::len);
        for (i, attachment) in mail.attachments.iter().enumerate() {
            let sha = if attachment.data.len() > BLOB_PIECE {
                put_blob(tx, &attachment.data)?
            } else {
                self.bytes += attachment.data.len();
                self.blobs.add(tx, &attachment.data)?
            };
            let rows = &mut self.attachments;
            rows.journal_id.push(journal_id);
            rows.position.push(i as i64);
            rows.filename.push(attachment.filename.clone());
            rows.content_type.push(attachment.content_type.clone());
            rows.content_id.push(attachment.content_id.clone());
            rows.inline.push(attachment.inline);
            rows.size.push(attachment.size() as i64);
            rows.sha256.push(sha);
        }
        if touched && !self.touched_tickets.contains(&ticket) {
            self.touched_tickets.push(ticket);
        }
        Ok(())
    }

    pub(crate) fn contact(&mut self, address: &Address) {
        self.contacts.email.push(address.as_written.clone());
        self.contacts.email_key.push(folded(&address.email));
        self.contacts.name.push(address.name.clone());
    }

    /// What was decided about answering the mail (the last word counts):
    /// on its journal row if that is still to be sent.
    pub(crate) fn answer(&mut self, journal_id: i64, answer: &str) {
        if !self.processed.set_answer(journal_id, answer) && !self.inserted.processed.set_answer(journal_id, answer) {
            self.answers.insert(journal_id, answer.to_string());
        }
    }

    /// The journal row as processed (written now if `fresh`); sends the
    /// rows once enough wait.
    pub(crate) fn processed(
        &mut self,
        tx: &mut PgTx<'_>,
        at: &str,
        journal_id: i64,
        mail: &ParsedMail,
        filed: Filed,
        fresh: Option<FreshRow>,
    ) -> Result<()> {
        let answer = self.answers.remove(&journal_id);
        match fresh {
            None => self.processed.push(journal_id, mail, filed, answer),
            Some(row) => {
                let rows = &mut self.inserted;
                rows.processed.push(journal_id, mail, filed, answer);
                rows.mailbox_id.push(row.mailbox_id);
                rows.remote_id.push(row.remote_id);
                rows.raw_sha256.push(row.raw_sha256);
                rows.size.push(row.size);
            }
        }
        self.mails += 1;
        if self.mails >= MAX_MAILS || self.bytes >= MAX_BYTES {
            self.send(tx, at)?;
        }
        Ok(())
    }

    /// Sends every row gathered (not waited for), in the order the tables
    /// depend on each other.
    pub(crate) fn send(&mut self, tx: &mut PgTx<'_>, at: &str) -> Result<()> {
        self.blobs.send(tx)?;
        let at = || Box::new(at.to_string()) as OwnedParam;
        let bytes = std::mem::take(&mut self.bytes);
        self.mails = 0;
        let t = &mut self.tickets;
        if !t.id.is_empty() {
            let mut params = vec![at()];
            params.extend(arrays![t.id, t.subject, t.requester, t.requester_name, t.requester_key]);
            tx.defer(
                "INSERT INTO tickets (created_at, updated_at, id, subject, requester, requester_name, requester_key)
                 SELECT $1, $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])",
                params,
                0,
            )?;
        }
        // Before the entries, answers and outbox rows that refer to them.
        let i = &mut self.inserted;
        if !i.mailbox_id.is_empty() {
            let mut params = vec![at()];
            let p = &mut i.processed;
            params.extend(arrays![
                p.id,
                i.mailbox_id,
                i.remote_id,
                i.raw_sha256,
                i.size,
                p.kind,
                p.message_id,
                p.fingerprint,
                p.subject,
                p.from_addr,
                p.ticket_id,
                p.answer
            ]);
            tx.defer(
                "INSERT INTO messages (fetched_at, processed_at, state, attempts, id, mailbox_id, remote_id, raw_sha256,
                 size, kind, message_id, fingerprint, subject, from_addr, ticket_id, answer)
                 SELECT $1, $1, 'processed', 1, *
                 FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[],
                             $9::text[], $10::text[], $11::text[], $12::bigint[], $13::text[])",
                params,
                0,
            )?;
        }
        let e = &mut self.entries;
        if !e.journal_id.is_empty() {
            let mut params = vec![at()];
            params.extend(arrays![
                e.ticket_id,
                e.journal_id,
                e.kind,
                e.message_id,
                e.from_addr,
                e.from_name,
                e.subject,
                e.date,
                e.text_body,
                e.html_body,
                e.new_text
            ]);
            // Each entry goes after the ticket's stored ones and those
            // before it in this statement.
            tx.defer(
                "INSERT INTO ticket_entries (ticket_id, position, journal_id, kind, message_id, from_addr, from_name,
                 subject, date, text_body, html_body, created_at, new_text)
                 SELECT u.ticket_id,
                        COALESCE((SELECT MAX(e.position) FROM ticket_entries e WHERE e.ticket_id = u.ticket_id), 0)
                          + ROW_NUMBER() OVER (PARTITION BY u.ticket_id ORDER BY u.n),
                        u.journal_id, u.kind, u.message_id, u.from_addr, u.from_name, u.subject, u.date,
                        u.text_body, u.html_body, $1, u.new_text
                 FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                             $9::text[], $10::text[], $11::text[], $12::text[])
                      WITH ORDINALITY AS u(ticket_id, journal_id, kind, message_id, from_addr, from_name, subject,
                                           date, text_body, html_body, new_text, n)",
                params,
                bytes,
            )?;
        }
        let a = &mut self.attachments;
        if !a.journal_id.is_empty() {
            tx.defer(
                "INSERT INTO entry_attachments (entry_id, position, filename, content_type, content_id, inline, size,
                 blob_sha256)
                 SELECT (SELECT id FROM ticket_entries WHERE journal_id = u.journal_id), u.position, u.filename,
                        u.content_type, u.content_id, u.inline, u.size, u.sha256
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::boolean[],
                             $7::bigint[], $8::text[])
                      AS u(journal_id, position, filename, content_type, content_id, inline, size, sha256)",
                arrays![a.journal_id, a.position, a.filename, a.content_type, a.content_id, a.inline, a.size, a.sha256],
                0,
            )?;
        }
        if !self.touched_tickets.is_empty() {
            let mut params = vec![at()];
            params.extend(arrays![self.touched_tickets]);
            tx.defer("UPDATE tickets SET updated_at = $1 WHERE id = ANY($2)", params, 0)?;
        }
        let c = &mut self.contacts;
        if !c.email.is_empty() {
            let mut params = vec![at()];
            params.extend(arrays![c.email, c.email_key, c.name]);
            tx.defer(
                "INSERT INTO contacts (created_at, source, email, email_key, name)
                 SELECT $1, 'mail', * FROM unnest($2::text[], $3::text[], $4::text[])
                 ON CONFLICT (email_key) DO NOTHING",
                params,
                0,
            )?;
        }
        // Answers of mails not processed (yet): on their own.
        for (journal_id, answer) in std::mem::take(&mut self.answers) {
            tx.defer("UPDATE messages SET answer = $2 WHERE id = $1", vec![Box::new(journal_id), Box::new(answer)], 0)?;
        }
        let p = &mut self.processed;
        if !p.id.is_empty() {
            let mut params = vec![at()];
            params.extend(arrays![
                p.id,
                p.kind,
                p.message_id,
                p.fingerprint,
                p.subject,
                p.from_addr,
                p.ticket_id,
                p.answer
            ]);
            tx.defer(
                "UPDATE messages m SET state = 'processed', kind = u.kind, message_id = u.message_id,
                        fingerprint = u.fingerprint, subject = u.subject, from_addr = u.from_addr,
                        ticket_id = u.ticket_id, reason = NULL, attempts = m.attempts + 1, processed_at = $1,
                        answer = COALESCE(u.answer, m.answer)
                 FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[],
                             $9::text[])
                      AS u(id, kind, message_id, fingerprint, subject, from_addr, ticket_id, answer)
                 WHERE m.id = u.id",
                params,
                0,
            )?;
        }
        Ok(())
    }
}
