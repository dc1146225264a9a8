//! The PostgreSQL side of processing: reading pending mails, and the
//! [`Ledger`] primitives the ticket rules call inside the write transaction.
//! No decision is taken here.

use mailrobot_core::answer::folded;
use mailrobot_core::{
    Address, AnswerContext, AnswerLimits, Filed, Ledger, MailboxPolicy, NewTicket, OutgoingAttachment, OutgoingMail,
    ParsedMail, PendingMail, StoredRule, StoredTemplate, TicketChange, TicketFields,
};

use super::{PgTx, put_blob, read_blob};
use crate::model::{mailbox_policy, tags_from_json, tags_to_json};
use crate::outbox::EventRecord;
use crate::{JournalState, MessageKind, Result, StoreError, TicketStatus, WebhookEvent};

/// Up to `limit` mails in state `fetched`, with their bytes, stopping before
/// `max_bytes` (always at least one).
pub(crate) fn read_pending(
    tx: &mut PgTx<'_>,
    mailbox_id: Option<i64>,
    limit: usize,
    max_bytes: u64,
) -> Result<Vec<PendingMail>> {
    let rows = tx.query(
        "SELECT m.id, m.mailbox_id, m.remote_id, m.raw_sha256, b.size FROM messages m
         LEFT JOIN blobs b ON b.sha256 = m.raw_sha256
         WHERE m.state = 'fetched' AND ($1::bigint IS NULL OR m.mailbox_id = $1)
         ORDER BY m.id LIMIT $2",
        &[&mailbox_id, &(limit as i64)],
    )?;
    let mut pending = Vec::with_capacity(rows.len());
    let mut bytes = 0u64;
    for row in rows {
        let size: Option<i64> = row.try_get(4)?;
        // Sizes are known before the blobs are read: stop before the budget.
        let size_bytes = size.unwrap_or(0).max(0) as u64;
        if !pending.is_empty() && bytes + size_bytes > max_bytes {
            break;
        }
        bytes += size_bytes;
        let sha: Option<String> = row.try_get(3)?;
        let raw = match sha {
            Some(sha) => read_blob(tx, &sha)?.unwrap_or_default(),
            None => Vec::new(),
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

/// One write transaction, as processing sees it.
pub(crate) struct PgLedger<'a, 'c> {
    pub(crate) tx: &'a mut PgTx<'c>,
    /// When this batch was processed (RFC 3339), one time for all its mails.
    pub(crate) at: String,
    /// The robot's own addresses, read once per batch when first needed.
    pub(crate) own_addresses: Option<Vec<String>>,
}

impl Ledger for PgLedger<'_, '_> {
    type Error = StoreError;

    fn is_pending(&mut self, journal_id: i64) -> Result<bool> {
        let state: Option<JournalState> =
            match self.tx.query_opt("SELECT state FROM messages WHERE id = $1", &[&journal_id])? {
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
        let row = self.tx.query_opt(
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
        let Ok(ticket) = i64::try_from(ticket) else { return Ok(false) };
        Ok(self.tx.query_opt("SELECT 1 FROM tickets WHERE id = $1", &[&ticket])?.is_some())
    }

    fn ticket_of_message(&mut self, message_id: &str) -> Result<Option<u64>> {
        let received = self.tx.query_opt(
            "SELECT ticket_id FROM messages WHERE message_id = $1 AND ticket_id IS NOT NULL ORDER BY id LIMIT 1",
            &[&message_id],
        )?;
        // Or a mail the robot sent (an acknowledgement the requester answers).
        let row = match received {
            Some(row) => Some(row),
            None => self.tx.query_opt(
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
        let row = self.tx.query_one(
            "INSERT INTO tickets (subject, requester, requester_name, requester_key, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
            &[&ticket.subject, &ticket.requester, &ticket.requester_name, &ticket.requester.map(folded), &self.at],
        )?;
        Ok(row.try_get::<_, i64>(0)? as u64)
    }

    fn add_entry(&mut self, ticket: u64, journal_id: i64, mail: &ParsedMail) -> Result<()> {
        let (tx, ticket) = (&mut *self.tx, ticket as i64);
        let entry_id: i64 = tx
            .query_one(
                "INSERT INTO ticket_entries (ticket_id, position, journal_id, kind, message_id, from_addr, from_name,
                 subject, date, text_body, html_body, created_at, new_text)
                 VALUES ($1, (SELECT COALESCE(MAX(position), 0) + 1 FROM ticket_entries WHERE ticket_id = $1),
                         $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 RETURNING id",
                &[
                    &ticket,
                    &journal_id,
                    &MessageKind::from(mail.kind),
                    &mail.message_id,
                    &mail.from.as_ref().map(|a| a.email.as_str()),
                    &mail.from.as_ref().and_then(|a| a.name.as_deref()),
                    &mail.subject,
                    &mail.date,
                    &mail.text_body,
                    &mail.html_body,
                    &self.at,
                    &mail.new_text,
                ],
            )?
            .try_get(0)?;
        for (i, attachment) in mail.attachments.iter().enumerate() {
            let sha = put_blob(tx, &attachment.data)?;
            tx.exec(
                "INSERT INTO entry_attachments (entry_id, position, filename, content_type, content_id, inline, size,
                 blob_sha256) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &entry_id,
                    &(i as i64),
                    &attachment.filename,
                    &attachment.content_type,
                    &attachment.content_id,
                    &attachment.inline,
                    &(attachment.size() as i64),
                    &sha,
                ],
            )?;
        }
        tx.exec("UPDATE tickets SET updated_at = $2 WHERE id = $1", &[&ticket, &self.at])?;
        Ok(())
    }

    fn ticket_changed(&mut self, ticket: u64, change: TicketChange) -> Result<()> {
        let event_type = match change {
            TicketChange::Created => WebhookEvent::TicketCreated,
            TicketChange::EntryAdded => WebhookEvent::EntryAdded,
        };
        let at = self.at.clone();
        super::outbox::enqueue_event(self.tx, event_type, |tx| {
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
        super::outbox::answer_context(
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
        super::outbox::queue_mail(self.tx, &self.at, mail)
    }

    fn rules(&mut self) -> Result<Vec<StoredRule>> {
        super::directory::stored_rules(self.tx)
    }

    fn templates(&mut self) -> Result<Vec<StoredTemplate>> {
        super::directory::stored_templates(self.tx)
    }

    fn mailbox_policy(&mut self, mailbox_id: i64) -> Result<MailboxPolicy> {
        let config: String =
            self.tx.query_one("SELECT config FROM mailboxes WHERE id = $1", &[&mailbox_id])?.try_get(0)?;
        Ok(mailbox_policy(&config))
    }

    fn contact_known(&mut self, key: &str) -> Result<bool> {
        super::directory::contact_known(self.tx, key)
    }

    fn add_contact(&mut self, address: &Address) -> Result<()> {
        super::directory::add_mail_contact(self.tx, &self.at, address)
    }

    fn set_ticket_fields(&mut self, ticket: u64, fields: &TicketFields) -> Result<()> {
        let ticket = ticket as i64;
        let stored: Option<String> =
            self.tx.query_one("SELECT tags FROM tickets WHERE id = $1", &[&ticket])?.try_get(0)?;
        let tags = tags_to_json(&fields.merged_tags(&tags_from_json(stored)));
        self.tx.exec(
            "UPDATE tickets SET category = COALESCE($2, category), priority = COALESCE($3, priority),
             queue = COALESCE($4, queue), assignee = COALESCE($5, assignee), tags = $6 WHERE id = $1",
            &[&ticket, &fields.category, &fields.priority, &fields.queue, &fields.assignee, &tags],
        )?;
        Ok(())
    }

    fn record_rules(&mut self, journal_id: i64, summary: &str) -> Result<()> {
        // Several notes on one mail (rules, then a template fallback) add up.
        self.tx.exec(
            "UPDATE messages SET rules = CASE WHEN rules IS NULL THEN $2 ELSE rules || '; ' || $2 END WHERE id = $1",
            &[&journal_id, &summary],
        )?;
        Ok(())
    }

    fn original_attachment(&mut self, journal_id: i64) -> Result<Option<OutgoingAttachment>> {
        let row = self.tx.query_opt(
            "SELECT raw_sha256, size FROM messages WHERE id = $1 AND raw_sha256 IS NOT NULL",
            &[&journal_id],
        )?;
        Ok(match row {
            Some(row) => Some(OutgoingAttachment::original(row.try_get(0)?, row.try_get::<_, i64>(1)?.max(0) as u64)),
            None => None,
        })
    }

    fn record_answer(&mut self, journal_id: i64, answer: &str) -> Result<()> {
        self.tx.exec("UPDATE messages SET answer = $2 WHERE id = $1", &[&journal_id, &answer])?;
        Ok(())
    }

    fn record_processed(&mut self, journal_id: i64, mail: &ParsedMail, filed: Filed) -> Result<()> {
        self.tx.exec(
            "UPDATE messages SET state = 'processed', kind = $2, message_id = $3, fingerprint = $4, subject = $5,
             from_addr = $6, ticket_id = $7, reason = NULL, attempts = attempts + 1, processed_at = $8
             WHERE id = $1",
            &[
                &journal_id,
                &MessageKind::from(filed),
                &mail.message_id,
                &mail.fingerprint,
                &mail.subject,
                &mail.from.as_ref().map(|a| a.email.as_str()),
                &filed.ticket().map(|t| t as i64),
                &self.at,
            ],
        )?;
        Ok(())
    }

    fn record_failed(&mut self, journal_id: i64, reason: &str) -> Result<()> {
        self.tx.exec(
            "UPDATE messages SET state = 'failed', reason = $2, attempts = attempts + 1, processed_at = $3
             WHERE id = $1",
            &[&journal_id, &reason, &self.at],
        )?;
        Ok(())
    }
}
