//! [`OutboxStore`] on PostgreSQL, and the enqueueing of ticket events inside
//! a ticket change's transaction.
//!
//! Several nodes send from one outbox: a claim is one statement that takes
//! the due rows (`FOR UPDATE SKIP LOCKED`) and leases them, so no two nodes
//! ever hold the same row; a row whose node died comes back when its lease
//! runs out, as on SQLite.

use tokio_postgres::Row;

use super::ledger::owned;
use super::store::change_ticket_status;
use super::{PgStore, PgTx, now, put_blob};
use crate::model::StatusChange;
use crate::outbox::{
    AnswerQuery, Attempt, Delivery, DeliveryFilter, DeliveryView, EventRecord, KIND_WEBHOOK, MailView, OutboxStore,
    QueuedMail, Webhook, event_id, event_of, events_text, mail_of, mailbox_config, parse_events, payload, reply_from,
    subscribers, with_files,
};
use crate::{Result, StoreError, WebhookEvent};

/// Writes one outbox row per webhook that receives `event_type`, in the
/// caller's transaction (a disabled webhook's rows wait until it is
/// enabled). All rows of one event share its id. When no webhook wants the
/// event, does nothing but one read of the (small) webhooks table: `record`
/// is only called when someone listens.
pub(crate) fn enqueue_event(
    tx: &mut PgTx<'_>,
    event_type: WebhookEvent,
    record: impl FnOnce(&mut PgTx<'_>) -> Result<EventRecord>,
) -> Result<()> {
    let webhooks = webhooks(tx)?;
    enqueue_event_to(tx, webhooks, event_type, record)
}

/// Every webhook: (id, the events it takes, as stored).
pub(crate) fn webhooks(tx: &mut PgTx<'_>) -> Result<Vec<(i64, String)>> {
    tx.query("SELECT id, events FROM webhooks", &[])?.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// [`enqueue_event`] with the webhooks read already.
pub(crate) fn enqueue_event_to(
    tx: &mut PgTx<'_>,
    webhooks: Vec<(i64, String)>,
    event_type: WebhookEvent,
    record: impl FnOnce(&mut PgTx<'_>) -> Result<EventRecord>,
) -> Result<()> {
    let subscribed = subscribers(webhooks, event_type);
    if subscribed.is_empty() {
        return Ok(());
    }
    let record = record(tx)?;
    // 96 random bits, as SQLite's randomblob(12).
    let random: String = tx.query_one("SELECT substr(md5(gen_random_uuid()::text), 1, 24)", &[])?.try_get(0)?;
    let event_id = event_id(&random);
    let payload = payload(&record)?;
    for webhook_id in subscribed {
        tx.defer(
            "INSERT INTO outbox (kind, ticket_id, payload, state, next_attempt_at, created_at, webhook_id, event_id,
             event_type) VALUES ($1, $2, $3, 'queued', $4, $4, $5, $6, $7)",
            owned![
                KIND_WEBHOOK,
                record.ticket_id,
                payload.clone(),
                record.occurred_at.clone(),
                webhook_id,
                event_id.clone(),
                event_type
            ],
            payload.len(),
        )?;
    }
    Ok(())
}

/// A `COUNT(*)` as the answer limits compare it.
fn count(row: &Row) -> Result<u32> {
    Ok(u32::try_from(row.try_get::<_, i64>(0)?).unwrap_or(u32::MAX))
}

/// Every address the robot's mailboxes receive or send as.
fn own_addresses(tx: &mut PgTx<'_>) -> Result<Vec<String>> {
    let configs = tx
        .query("SELECT config FROM mailboxes", &[])?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<Vec<String>, _>>()?;
    Ok(crate::outbox::own_addresses(configs))
}

/// What answering needs to know, for a mailbox that sends mail (`query`).
pub(crate) fn answer_context(
    tx: &mut PgTx<'_>,
    own_addresses_cache: &mut Option<Vec<String>>,
    (mailbox_id, name): (i64, String),
    query: AnswerQuery,
    recipient_key: &str,
    ticket: Option<u64>,
) -> Result<mailrobot_core::AnswerContext> {
    let sent_to_sender_recently = count(&tx.query_one(
        "SELECT COUNT(*) FROM outbox WHERE kind = 'mail' AND recipient_key = $1 AND created_at >= $2
         AND mail_kind <> 'reply'",
        &[&recipient_key, &query.since_sender],
    )?)?;
    // Agents' replies are not automatic: they count for neither limit.
    let sent_on_ticket_today = match ticket {
        Some(ticket) => count(&tx.query_one(
            "SELECT COUNT(*) FROM outbox WHERE kind = 'mail' AND ticket_id = $1 AND created_at >= $2
             AND mail_kind <> 'reply'",
            &[&(ticket as i64), &query.day_start],
        )?)?,
        None => 0,
    };
    let own_addresses = match own_addresses_cache {
        Some(own) => own.clone(),
        None => own_addresses_cache.insert(own_addresses(tx)?).clone(),
    };
    Ok(query.context(mailbox_id, name, own_addresses, sent_to_sender_recently, sent_on_ticket_today))
}

pub(crate) fn queue_mail(tx: &mut PgTx<'_>, at: &str, mail: &mailrobot_core::OutgoingMail) -> Result<()> {
    let payload = payload(mail)?;
    let bytes = payload.len();
    tx.defer(
        INSERT_MAIL,
        owned![
            mail.ticket.map(|t| t as i64),
            payload,
            at.to_string(),
            mail.message_id.clone(),
            mail.mailbox_id,
            mail.kind.as_str(),
            mail.to.clone(),
            mailrobot_core::answer::folded(&mail.to),
            mail.subject.clone(),
        ],
        bytes,
    )
}

const INSERT_MAIL: &str = "INSERT INTO outbox (kind, ticket_id, payload, state, next_attempt_at, created_at,
     event_id, mailbox_id, mail_kind, recipient, recipient_key, subject)
     VALUES ('mail', $1, $2, 'queued', $3, $3, $4, $5, $6, $7, $8, $9)";

/// [`queue_mail`], returning the outbox row's id.
fn insert_mail(tx: &mut PgTx<'_>, at: &str, mail: &mailrobot_core::OutgoingMail) -> Result<i64> {
    let payload = payload(mail)?;
    let row = tx.query_one(
        &format!("{INSERT_MAIL} RETURNING id"),
        &[
            &mail.ticket.map(|t| t as i64),
            &payload,
            &at,
            &mail.message_id,
            &mail.mailbox_id,
            &mail.kind.as_str(),
            &mail.to,
            &mailrobot_core::answer::folded(&mail.to),
            &mail.subject,
        ],
    )?;
    Ok(row.try_get(0)?)
}

const WEBHOOK_COLUMNS: &str = "id, url, events, enabled, created_at";

fn webhook_from_row(r: &Row) -> Result<Webhook> {
    Ok(Webhook {
        id: r.try_get(0)?,
        url: r.try_get(1)?,
        events: parse_events(r.try_get(2)?),
        enabled: r.try_get(3)?,
        created_at: r.try_get(4)?,
    })
}

const DELIVERY_VIEW_COLUMNS: &str = "o.id, o.webhook_id, w.url, o.event_id, o.event_type, o.ticket_id, o.state, \
     o.attempts, o.last_status, o.last_error, o.last_attempt_at, o.next_attempt_at, o.delivered_at, o.created_at";

fn delivery_view_from_row(r: &Row) -> Result<DeliveryView> {
    let id: i64 = r.try_get(0)?;
    let last_status = r
        .try_get::<_, Option<i64>>(8)?
        .map(|s| u16::try_from(s).map_err(|_| StoreError::Corrupt(format!("outbox row {id} has HTTP status {s}"))))
        .transpose()?;
    Ok(DeliveryView {
        id,
        webhook_id: r.try_get(1)?,
        url: r.try_get(2)?,
        event_id: r.try_get(3)?,
        event_type: r.try_get(4)?,
        ticket_id: r.try_get(5)?,
        state: r.try_get(6)?,
        attempts: r.try_get(7)?,
        last_status,
        last_answer: r.try_get(9)?,
        last_attempt_at: r.try_get(10)?,
        next_attempt_at: r.try_get(11)?,
        delivered_at: r.try_get(12)?,
        created_at: r.try_get(13)?,
    })
}

/// A claim's `LIMIT`: `usize` rows, as many as there are past `i64`.
fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Orders claimed rows as their claim chose them (an `UPDATE … RETURNING`
/// returns them in no particular order): by `next_attempt_at` (text, here
/// compared as bytes like on SQLite), then id.
fn in_claim_order<T>(mut rows: Vec<(String, i64, T)>) -> Vec<T> {
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    rows.into_iter().map(|(_, _, row)| row).collect()
}

impl OutboxStore for PgStore {
    fn add_webhook(&self, url: &str, events: &[WebhookEvent], seal: &mut dyn FnMut(i64) -> Vec<u8>) -> Result<Webhook> {
        let events_text = events_text(events);
        self.write(|tx| {
            let id: i64 = tx
                .query_one(
                    "INSERT INTO webhooks (url, events, sealed_secret, created_at) VALUES ($1, $2, ''::bytea, $3)
                     RETURNING id",
                    &[&url, &events_text, &now()],
                )?
                .try_get(0)?;
            tx.exec("UPDATE webhooks SET sealed_secret = $2 WHERE id = $1", &[&id, &seal(id)])?;
            webhook_from_row(&tx.query_one(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"), &[&id])?)
        })
    }

    fn webhooks(&self) -> Result<Vec<Webhook>> {
        self.read(|tx| {
            tx.query(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY id"), &[])?
                .iter()
                .map(webhook_from_row)
                .collect()
        })
    }

    fn webhook(&self, id: i64) -> Result<Option<Webhook>> {
        self.read(|tx| {
            tx.query_opt(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"), &[&id])?
                .as_ref()
                .map(webhook_from_row)
                .transpose()
        })
    }

    fn webhook_secret(&self, id: i64) -> Result<Option<Vec<u8>>> {
        self.read(|tx| {
            Ok(tx
                .query_opt("SELECT sealed_secret FROM webhooks WHERE id = $1", &[&id])?
                .map(|r| r.try_get(0))
                .transpose()?)
        })
    }

    fn set_webhook_enabled(&self, id: i64, enabled: bool) -> Result<bool> {
        self.write(|tx| Ok(tx.exec("UPDATE webhooks SET enabled = $2 WHERE id = $1", &[&id, &enabled])? > 0))
    }

    fn remove_webhook(&self, id: i64) -> Result<bool> {
        self.write(|tx| {
            tx.exec("DELETE FROM outbox WHERE webhook_id = $1", &[&id])?;
            Ok(tx.exec("DELETE FROM webhooks WHERE id = $1", &[&id])? > 0)
        })
    }

    fn claim_due_deliveries(&self, now: &str, lease_until: &str, limit: usize) -> Result<Vec<Delivery>> {
        self.write(|tx| {
            // One statement takes and leases the rows: a row another node is
            // claiming at this moment is skipped, not waited for.
            let rows = tx.query(
                "WITH due AS (
                     SELECT o.id, w.url FROM outbox o JOIN webhooks w ON w.id = o.webhook_id
                     WHERE o.state = 'queued' AND o.kind = 'webhook' AND w.enabled
                       AND o.next_attempt_at <= $1 AND (o.lease_until IS NULL OR o.lease_until <= $1)
                       AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.state = 'queued'
                           AND e.webhook_id = o.webhook_id AND e.ticket_id IS NOT DISTINCT FROM o.ticket_id
                           AND e.id < o.id)
                     ORDER BY o.next_attempt_at, o.id LIMIT $3
                     FOR UPDATE OF o SKIP LOCKED)
                 UPDATE outbox o SET lease_until = $2 FROM due WHERE o.id = due.id
                 RETURNING o.id, o.webhook_id, due.url, o.event_id, o.event_type, o.payload, o.body, o.attempts,
                           o.created_at, o.next_attempt_at",
                &[&now, &lease_until, &limit_of(limit)],
            )?;
            let mut claimed = Vec::with_capacity(rows.len());
            for r in &rows {
                let id: i64 = r.try_get(0)?;
                let event = event_of(id, r.try_get(5)?)?;
                let delivery = Delivery {
                    id,
                    webhook_id: r.try_get(1)?,
                    url: r.try_get(2)?,
                    event_id: r.try_get(3)?,
                    event_type: r.try_get(4)?,
                    event,
                    body: r.try_get(6)?,
                    attempts: r.try_get(7)?,
                    created_at: r.try_get(8)?,
                };
                claimed.push((r.try_get(9)?, id, delivery));
            }
            Ok(in_claim_order(claimed))
        })
    }

    fn set_delivery_body(&self, id: i64, body: &str) -> Result<()> {
        self.write(|tx| {
            tx.exec("UPDATE outbox SET body = $2 WHERE id = $1 AND body IS NULL", &[&id, &body])?;
            Ok(())
        })
    }

    fn record_attempts(&self, done: &[(i64, Attempt)], at: &str) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            for (id, attempt) in done {
                let (state, next, delivered_at) = attempt.next.outcome(at);
                tx.exec(
                    "UPDATE outbox SET state = $2, attempts = attempts + 1, last_status = $3, last_error = $4,
                     last_attempt_at = $5, next_attempt_at = $6, delivered_at = COALESCE($7, delivered_at),
                     body = COALESCE($8, body), lease_until = NULL WHERE id = $1",
                    &[
                        id,
                        &state,
                        &attempt.status.map(i64::from),
                        &attempt.answer,
                        &at,
                        &next,
                        &delivered_at,
                        &attempt.body,
                    ],
                )?;
            }
            Ok(())
        })
    }

    fn next_delivery_due(&self) -> Result<Option<String>> {
        self.read(|tx| {
            // The later of the due time and the lease (SQLite's two-argument MAX).
            Ok(tx
                .query_one(
                    "SELECT MIN(CASE WHEN o.lease_until > o.next_attempt_at THEN o.lease_until
                                     ELSE o.next_attempt_at END)
                     FROM outbox o JOIN webhooks w ON w.id = o.webhook_id
                     WHERE o.state = 'queued' AND o.kind = 'webhook' AND w.enabled",
                    &[],
                )?
                .try_get(0)?)
        })
    }

    fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryView>> {
        // No limit: LIMIT NULL.
        let limit = filter.limit.map(limit_of);
        self.read(|tx| {
            tx.query(
                &format!(
                    "SELECT {DELIVERY_VIEW_COLUMNS} FROM outbox o JOIN webhooks w ON w.id = o.webhook_id
                     WHERE o.kind = 'webhook' AND ($1::bigint IS NULL OR o.webhook_id = $1)
                       AND ($2::text IS NULL OR o.state = $2) AND ($3::bigint IS NULL OR o.id < $3)
                     ORDER BY o.id DESC LIMIT $4::bigint"
                ),
                &[&filter.webhook_id, &filter.state, &filter.before, &limit],
            )?
            .iter()
            .map(delivery_view_from_row)
            .collect()
        })
    }

    fn delivery(&self, id: i64) -> Result<Option<DeliveryView>> {
        self.read(|tx| {
            tx.query_opt(
                &format!(
                    "SELECT {DELIVERY_VIEW_COLUMNS} FROM outbox o JOIN webhooks w ON w.id = o.webhook_id
                     WHERE o.id = $1 AND o.kind = 'webhook'"
                ),
                &[&id],
            )?
            .as_ref()
            .map(delivery_view_from_row)
            .transpose()
        })
    }

    fn resend_delivery(&self, id: i64) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.exec(
                "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = $2, lease_until = NULL
                 WHERE id = $1 AND kind = 'webhook'",
                &[&id, &now()],
            )? > 0)
        })
    }

    fn queue_reply(&self, mail: &mailrobot_core::OutgoingMail, files: &[Vec<u8>]) -> Result<i64> {
        self.write(|tx| {
            let mail = with_files(mail, files, |bytes| put_blob(tx, bytes))?;
            insert_mail(tx, &now(), &mail)
        })
    }

    fn set_status_notifying(
        &self,
        ticket_id: i64,
        status: crate::TicketStatus,
        notification: Option<&mailrobot_core::OutgoingMail>,
    ) -> Result<bool> {
        self.write(|tx| {
            let change = change_ticket_status(tx, ticket_id, status)?;
            if let (StatusChange::Changed, Some(mail)) = (change, notification) {
                queue_mail(tx, &now(), mail)?;
            }
            Ok(change != StatusChange::NoTicket)
        })
    }

    fn ticket_mailbox(&self, ticket_id: i64) -> Result<Option<(i64, Option<String>)>> {
        self.read(|tx| {
            let Some(row) = tx.query_opt(
                "SELECT b.id, b.config FROM ticket_entries e JOIN messages m ON m.id = e.journal_id
                 JOIN mailboxes b ON b.id = m.mailbox_id WHERE e.ticket_id = $1 ORDER BY e.position LIMIT 1",
                &[&ticket_id],
            )?
            else {
                return Ok(None);
            };
            Ok(Some((row.try_get(0)?, reply_from(&mailbox_config(row.try_get(1)?)))))
        })
    }

    fn claim_due_mails(&self, now: &str, lease_until: &str, limit: usize) -> Result<Vec<QueuedMail>> {
        self.write(|tx| {
            let rows = tx.query(
                "WITH due AS (
                     SELECT id FROM outbox
                     WHERE kind = 'mail' AND state = 'queued' AND next_attempt_at <= $1
                       AND (lease_until IS NULL OR lease_until <= $1)
                     ORDER BY next_attempt_at, id LIMIT $3
                     FOR UPDATE SKIP LOCKED)
                 UPDATE outbox o SET lease_until = $2 FROM due WHERE o.id = due.id
                 RETURNING o.id, o.payload, o.body, o.attempts, o.next_attempt_at",
                &[&now, &lease_until, &limit_of(limit)],
            )?;
            let mut claimed = Vec::with_capacity(rows.len());
            for r in &rows {
                let id: i64 = r.try_get(0)?;
                let mail = mail_of(id, r.try_get(1)?)?;
                claimed.push((
                    r.try_get(4)?,
                    id,
                    QueuedMail { id, mail, body: r.try_get(2)?, attempts: r.try_get(3)? },
                ));
            }
            Ok(in_claim_order(claimed))
        })
    }

    fn mails(&self) -> Result<Vec<MailView>> {
        self.read(|tx| {
            tx.query(
                "SELECT id, ticket_id, recipient, subject, mail_kind, state, attempts, last_error, delivered_at,
                        created_at, next_attempt_at, mailbox_id
                 FROM outbox WHERE kind = 'mail' ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(MailView {
                    id: r.try_get(0)?,
                    ticket_id: r.try_get(1)?,
                    to: r.try_get(2)?,
                    subject: r.try_get(3)?,
                    kind: r.try_get(4)?,
                    state: r.try_get(5)?,
                    attempts: r.try_get(6)?,
                    last_error: r.try_get(7)?,
                    sent_at: r.try_get(8)?,
                    created_at: r.try_get(9)?,
                    next_attempt_at: r.try_get(10)?,
                    mailbox_id: r.try_get(11)?,
                })
            })
            .collect()
        })
    }

    fn resend_mail(&self, id: i64) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.exec(
                "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = $2, lease_until = NULL
                 WHERE id = $1 AND kind = 'mail'",
                &[&id, &now()],
            )? > 0)
        })
    }

    fn set_mailbox_reply_secret(&self, mailbox_id: i64, sealed: Option<&[u8]>) -> Result<()> {
        self.write(|tx| {
            tx.exec("UPDATE mailboxes SET sealed_reply_secret = $2 WHERE id = $1", &[&mailbox_id, &sealed])?;
            Ok(())
        })
    }

    fn mailbox_reply_secret(&self, mailbox_id: i64) -> Result<Option<Vec<u8>>> {
        self.read(|tx| {
            let row = tx.query_opt("SELECT sealed_reply_secret FROM mailboxes WHERE id = $1", &[&mailbox_id])?;
            Ok(row.map(|r| r.try_get::<_, Option<Vec<u8>>>(0)).transpose()?.flatten())
        })
    }

    fn pending_deliveries(&self) -> Result<Vec<(i64, i64)>> {
        self.read(|tx| {
            tx.query(
                "SELECT webhook_id, COUNT(*) FROM outbox WHERE state = 'queued' AND kind = 'webhook'
                 GROUP BY webhook_id ORDER BY webhook_id",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
        })
    }
}
