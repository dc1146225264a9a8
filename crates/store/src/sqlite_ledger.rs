//! The SQLite side of processing: reading pending mails, and the
//! [`Ledger`] primitives the ticket rules call inside the write transaction.
//! No decision is taken here.

use std::collections::HashMap;

use mailrobot_core::answer::folded;
use mailrobot_core::{
    Address, AnswerContext, AnswerLimits, Filed, Ledger, MailboxPolicy, NewTicket, OutgoingAttachment, OutgoingMail,
    ParsedMail, PendingMail, StoredRule, StoredTemplate, TicketChange, TicketFields,
};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::blob_codec::pack_text;
use crate::model::FreshRow;
use crate::outbox::EventRecord;
use crate::sqlite::{put_blob, read_blob};
use crate::sqlite_outbox::enqueue_event;
use crate::{JournalState, MessageKind, Result, StoreError, TicketStatus, WebhookEvent};

pub(crate) fn read_pending(
    tx: &Transaction<'_>,
    mailbox_id: Option<i64>,
    limit: usize,
    max_bytes: u64,
) -> Result<Vec<PendingMail>> {
    pending_batch(tx, mailbox_id, limit, max_bytes)?
        .into_iter()
        .map(|row| {
            let raw = match row.blob_id {
                Some(blob_id) => read_blob(tx, blob_id, row.size, row.codec.as_deref())?,
                None => Vec::new(),
            };
            Ok(PendingMail { journal_id: row.journal_id, mailbox_id: row.mailbox_id, remote_id: row.remote_id, raw })
        })
        .collect()
}

/// A pending mail's journal row and where its bytes are.
pub(crate) struct PendingRow {
    journal_id: i64,
    mailbox_id: i64,
    remote_id: String,
    blob_id: Option<i64>,
    /// Its size as received (0 when no bytes were stored).
    pub(crate) size: i64,
    codec: Option<String>,
}

/// The rows of the next batch of pending mails: in journal order, up to
/// `limit`, stopping before the mail whose bytes would pass `max_bytes`
/// (the first always comes). Sizes are known before any blob is read.
pub(crate) fn pending_batch(
    conn: &rusqlite::Connection,
    mailbox_id: Option<i64>,
    limit: usize,
    max_bytes: u64,
) -> Result<Vec<PendingRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.id, m.mailbox_id, m.remote_id, b.id, b.size, b.codec FROM messages m
         LEFT JOIN blobs b ON b.sha256 = m.raw_sha256
         WHERE m.state = 'fetched' AND (?1 IS NULL OR m.mailbox_id = ?1)
         ORDER BY m.id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![mailbox_id, limit as i64], |r| {
        Ok(PendingRow {
            journal_id: r.get(0)?,
            mailbox_id: r.get(1)?,
            remote_id: r.get(2)?,
            blob_id: r.get(3)?,
            size: r.get::<_, Option<i64>>(4)?.unwrap_or(0).max(0),
            codec: r.get(5)?,
        })
    })?;
    let mut batch = Vec::new();
    let mut bytes = 0u64;
    for row in rows {
        let row = row?;
        if !batch.is_empty() && bytes + row.size as u64 > max_bytes {
            break;
        }
        bytes += row.size as u64;
        batch.push(row);
    }
    Ok(batch)
}

/// One write transaction, as processing sees it.
pub(crate) struct SqliteLedger<'a, 'c> {
    pub(crate) tx: &'a Transaction<'c>,
    /// When this batch was processed (RFC 3339), one time for all its mails.
    pub(crate) at: String,
    /// The robot's own addresses, read once per batch when first needed
    /// (every mailbox's settings: not once per acknowledgement).
    pub(crate) own_addresses: Option<Vec<String>>,
    /// Journal rows of mails fetched in this transaction, written when
    /// their outcome is recorded (`Store::journal_and_file`).
    pub(crate) fresh: HashMap<i64, FreshRow>,
}

impl<'a, 'c> SqliteLedger<'a, 'c> {
    pub(crate) fn new(tx: &'a Transaction<'c>, at: String) -> Self {
        Self { tx, at, own_addresses: None, fresh: HashMap::new() }
    }

    /// Writes a fresh journal row with its outcome, as one insert.
    fn insert_fresh(&self, journal_id: i64, row: &FreshRow, outcome: &RowOutcome<'_>) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO messages (id, mailbox_id, remote_id, raw_sha256, size, state, kind, message_id,
                 fingerprint, subject, from_addr, ticket_id, reason, attempts, fetched_at, processed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 1, ?14, ?14)",
            )?
            .execute(params![
                journal_id,
                row.mailbox_id,
                row.remote_id,
                row.raw_sha256,
                row.size,
                outcome.state,
                outcome.kind,
                outcome.mail.and_then(|m| m.message_id.as_deref()),
                outcome.mail.map(|m| m.fingerprint.as_str()),
                outcome.mail.map(|m| m.subject.as_str()),
                outcome.mail.and_then(|m| m.from.as_ref()).map(|a| a.email.as_str()),
                outcome.ticket,
                outcome.reason,
                self.at
            ])?;
        Ok(())
    }
}

/// What a fresh journal row records of its mail's filing.
struct RowOutcome<'m> {
    state: JournalState,
    kind: Option<MessageKind>,
    mail: Option<&'m ParsedMail>,
    ticket: Option<i64>,
    reason: Option<&'m str>,
}

impl Ledger for SqliteLedger<'_, '_> {
    type Error = StoreError;

    fn is_pending(&mut self, journal_id: i64) -> Result<bool> {
        if self.fresh.contains_key(&journal_id) {
            return Ok(true);
        }
        let state = self
            .tx
            .prepare_cached("SELECT state FROM messages WHERE id = ?1")?
            .query_row([journal_id], |r| r.get::<_, JournalState>(0))
            .optional()?;
        Ok(state == Some(JournalState::Fetched))
    }

    fn earlier_copy(
        &mut self,
        journal_id: i64,
        fingerprint: &str,
        message_id: Option<&str>,
    ) -> Result<Option<Option<u64>>> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT ticket_id FROM messages WHERE fingerprint = ?1 AND message_id IS ?2
                 AND state = 'processed' AND id <> ?3 ORDER BY id LIMIT 1",
            )?
            .query_row(params![fingerprint, message_id, journal_id], |r| r.get::<_, Option<i64>>(0))
            .optional()?
            .map(|t| t.map(|t| t as u64)))
    }

    fn ticket_exists(&mut self, ticket: u64) -> Result<bool> {
        let Ok(ticket) = i64::try_from(ticket) else { return Ok(false) };
        Ok(self
            .tx
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM tickets WHERE id = ?1)")?
            .query_row([ticket], |r| r.get(0))?)
    }

    fn ticket_of_message(&mut self, message_id: &str) -> Result<Option<u64>> {
        let received = self
            .tx
            .prepare_cached(
                "SELECT ticket_id FROM messages WHERE message_id = ?1 AND ticket_id IS NOT NULL ORDER BY id LIMIT 1",
            )?
            .query_row([message_id], |r| r.get::<_, i64>(0))
            .optional()?;
        // Or a mail the robot sent (an acknowledgement the requester answers).
        let sent = match received {
            Some(ticket) => Some(ticket),
            None => self
                .tx
                .prepare_cached(
                    "SELECT ticket_id FROM outbox WHERE kind = 'mail' AND event_id = ?1 AND ticket_id IS NOT NULL
                     ORDER BY id LIMIT 1",
                )?
                .query_row([message_id], |r| r.get::<_, i64>(0))
                .optional()?,
        };
        Ok(sent.map(|t| t as u64))
    }

    fn create_ticket(&mut self, ticket: &NewTicket<'_>) -> Result<u64> {
        self.tx
            .prepare_cached(
                "INSERT INTO tickets (subject, requester, requester_name, requester_key, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            )?
            .execute(params![
                ticket.subject,
                ticket.requester,
                ticket.requester_name,
                ticket.requester.map(folded),
                self.at
            ])?;
        Ok(self.tx.last_insert_rowid() as u64)
    }

    fn add_entry(&mut self, ticket: u64, journal_id: i64, mail: &ParsedMail) -> Result<()> {
        let (tx, ticket) = (self.tx, ticket as i64);
        let position: i64 = tx
            .prepare_cached("SELECT COALESCE(MAX(position), 0) + 1 FROM ticket_entries WHERE ticket_id = ?1")?
            .query_row([ticket], |r| r.get(0))?;
        tx.prepare_cached(
            "INSERT INTO ticket_entries (ticket_id, position, journal_id, kind, message_id, from_addr, from_name,
             subject, date, text_body, html_body, created_at, new_text)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?
        .execute(params![
            ticket,
            position,
            journal_id,
            MessageKind::from(mail.kind),
            mail.message_id,
            mail.from.as_ref().map(|a| a.email.as_str()),
            mail.from.as_ref().and_then(|a| a.name.as_deref()),
            mail.subject,
            mail.date,
            pack_text(&mail.text_body),
            mail.html_body.as_deref().map(pack_text),
            self.at,
            mail.new_text.as_deref().map(pack_text)
        ])?;
        let entry_id = tx.last_insert_rowid();
        for (i, attachment) in mail.attachments.iter().enumerate() {
            let sha = put_blob(tx, &attachment.data)?;
            tx.prepare_cached(
                "INSERT INTO entry_attachments (entry_id, position, filename, content_type, content_id, inline, size,
                 blob_sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                entry_id,
                i as i64,
                attachment.filename,
                attachment.content_type,
                attachment.content_id,
                attachment.inline,
                attachment.size() as i64,
                sha
            ])?;
        }
        // Replies reopen nothing yet (statuses come with the web UI); they do
        // mark the ticket as changed.
        tx.prepare_cached("UPDATE tickets SET updated_at = ?2 WHERE id = ?1")?.execute(params![ticket, self.at])?;
        Ok(())
    }

    fn ticket_changed(&mut self, ticket: u64, change: TicketChange) -> Result<()> {
        let event_type = match change {
            TicketChange::Created => WebhookEvent::TicketCreated,
            TicketChange::EntryAdded => WebhookEvent::EntryAdded,
        };
        let (tx, at) = (self.tx, &self.at);
        enqueue_event(tx, event_type, || {
            let (status, position) = tx
                .prepare_cached(
                    "SELECT t.status, (SELECT MAX(position) FROM ticket_entries WHERE ticket_id = t.id)
                     FROM tickets t WHERE t.id = ?1",
                )?
                .query_row([ticket as i64], |r| Ok((r.get::<_, TicketStatus>(0)?, r.get::<_, Option<i64>>(1)?)))?;
            Ok(EventRecord {
                ticket_id: ticket as i64,
                entry_position: position,
                status,
                previous_status: None,
                occurred_at: at.clone(),
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
        crate::sqlite_outbox::answer_context(
            self.tx,
            &self.at,
            &mut self.own_addresses,
            mailbox_id,
            recipient_key,
            ticket,
            limits,
        )
    }

    fn queue_mail(&mut self, mail: &OutgoingMail) -> Result<()> {
        crate::sqlite_outbox::queue_mail(self.tx, &self.at, mail)
    }

    fn rules(&mut self) -> Result<Vec<StoredRule>> {
        crate::sqlite_directory::stored_rules(self.tx)
    }

    fn templates(&mut self) -> Result<Vec<StoredTemplate>> {
        crate::sqlite_directory::stored_templates(self.tx)
    }

    fn mailbox_policy(&mut self, mailbox_id: i64) -> Result<MailboxPolicy> {
        let config: String = self
            .tx
            .prepare_cached("SELECT config FROM mailboxes WHERE id = ?1")?
            .query_row([mailbox_id], |r| r.get(0))?;
        Ok(crate::model::mailbox_policy(&config))
    }

    fn contact_known(&mut self, key: &str) -> Result<bool> {
        crate::sqlite_directory::contact_known(self.tx, key)
    }

    fn add_contact(&mut self, address: &Address) -> Result<()> {
        crate::sqlite_directory::add_mail_contact(self.tx, &self.at, address)
    }

    fn set_ticket_fields(&mut self, ticket: u64, fields: &TicketFields) -> Result<()> {
        let stored: Option<String> = self
            .tx
            .prepare_cached("SELECT tags FROM tickets WHERE id = ?1")?
            .query_row([ticket as i64], |r| r.get(0))?;
        let tags = crate::model::tags_to_json(&fields.merged_tags(&crate::model::tags_from_json(stored)));
        self.tx
            .prepare_cached(
                "UPDATE tickets SET category = COALESCE(?2, category), priority = COALESCE(?3, priority),
                 queue = COALESCE(?4, queue), assignee = COALESCE(?5, assignee), tags = ?6 WHERE id = ?1",
            )?
            .execute(params![ticket as i64, fields.category, fields.priority, fields.queue, fields.assignee, tags])?;
        Ok(())
    }

    fn record_rules(&mut self, journal_id: i64, summary: &str) -> Result<()> {
        // Several notes on one mail (rules, then a template fallback) add up.
        self.tx
            .prepare_cached(
                "UPDATE messages SET rules = CASE WHEN rules IS NULL THEN ?2 ELSE rules || '; ' || ?2 END WHERE id = ?1",
            )?
            .execute(params![journal_id, summary])?;
        Ok(())
    }

    fn original_attachment(&mut self, journal_id: i64) -> Result<Option<OutgoingAttachment>> {
        Ok(self
            .tx
            .prepare_cached("SELECT raw_sha256, size FROM messages WHERE id = ?1 AND raw_sha256 IS NOT NULL")?
            .query_row([journal_id], |r| Ok(OutgoingAttachment::original(r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))
            .optional()?)
    }

    fn record_answer(&mut self, journal_id: i64, answer: &str) -> Result<()> {
        self.tx
            .prepare_cached("UPDATE messages SET answer = ?2 WHERE id = ?1")?
            .execute(params![journal_id, answer])?;
        Ok(())
    }

    fn record_processed(&mut self, journal_id: i64, mail: &ParsedMail, filed: Filed) -> Result<()> {
        if let Some(row) = self.fresh.remove(&journal_id) {
            let outcome = RowOutcome {
                state: JournalState::Processed,
                kind: Some(MessageKind::from(filed)),
                mail: Some(mail),
                ticket: filed.ticket().map(|t| t as i64),
                reason: None,
            };
            return self.insert_fresh(journal_id, &row, &outcome);
        }
        self.tx
            .prepare_cached(
                "UPDATE messages SET state = 'processed', kind = ?2, message_id = ?3, fingerprint = ?4, subject = ?5,
                 from_addr = ?6, ticket_id = ?7, reason = NULL, attempts = attempts + 1, processed_at = ?8
                 WHERE id = ?1",
            )?
            .execute(params![
                journal_id,
                MessageKind::from(filed),
                mail.message_id,
                mail.fingerprint,
                mail.subject,
                mail.from.as_ref().map(|a| a.email.as_str()),
                filed.ticket().map(|t| t as i64),
                self.at
            ])?;
        Ok(())
    }

    fn record_failed(&mut self, journal_id: i64, reason: &str) -> Result<()> {
        if let Some(row) = self.fresh.remove(&journal_id) {
            let outcome =
                RowOutcome { state: JournalState::Failed, kind: None, mail: None, ticket: None, reason: Some(reason) };
            return self.insert_fresh(journal_id, &row, &outcome);
        }
        self.tx
            .prepare_cached(
                "UPDATE messages SET state = 'failed', reason = ?2, attempts = attempts + 1, processed_at = ?3
                 WHERE id = ?1",
            )?
            .execute(params![journal_id, reason, self.at])?;
        Ok(())
    }
}
