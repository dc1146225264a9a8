//! [`OutboxStore`] on SQLite, and the enqueueing of ticket events inside a
//! ticket change's transaction.

use rusqlite::{OptionalExtension, Transaction, params};

use crate::outbox::{
    AnswerQuery, Attempt, Delivery, DeliveryFilter, DeliveryView, EventRecord, KIND_WEBHOOK, MailView, OutboxStore,
    QueuedMail, Webhook, event_id, event_of, events_text, mail_of, mailbox_config, parse_events, payload, reply_from,
    subscribers, with_files,
};
use crate::sqlite::{SqliteStore, now};
use crate::{Result, WebhookEvent};

/// Writes one outbox row per webhook that receives `event_type`, in the
/// caller's transaction (a disabled webhook's rows wait until it is enabled). All rows of one event share its id. When no
/// webhook wants the event, does nothing but one read of the (small)
/// webhooks table: `record` is only called when someone listens.
pub(crate) fn enqueue_event(
    tx: &Transaction<'_>,
    event_type: WebhookEvent,
    record: impl FnOnce() -> Result<EventRecord>,
) -> Result<()> {
    let webhooks: Vec<(i64, String)> = tx
        .prepare_cached("SELECT id, events FROM webhooks")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let subscribed = subscribers(webhooks, event_type);
    if subscribed.is_empty() {
        return Ok(());
    }
    let record = record()?;
    let event_id = event_id(&tx.query_row("SELECT lower(hex(randomblob(12)))", [], |r| r.get::<_, String>(0))?);
    let payload = payload(&record)?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO outbox (kind, ticket_id, payload, state, next_attempt_at, created_at, webhook_id, event_id,
         event_type) VALUES (?1, ?2, ?3, 'queued', ?4, ?4, ?5, ?6, ?7)",
    )?;
    for webhook_id in subscribed {
        insert.execute(params![
            KIND_WEBHOOK,
            record.ticket_id,
            payload,
            record.occurred_at,
            webhook_id,
            event_id,
            event_type
        ])?;
    }
    Ok(())
}

/// Every address the robot's mailboxes receive or send as.
fn own_addresses(tx: &Transaction<'_>) -> Result<Vec<String>> {
    let configs: Vec<String> = tx
        .prepare_cached("SELECT config FROM mailboxes")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(crate::outbox::own_addresses(configs))
}

pub(crate) fn answer_context(
    tx: &Transaction<'_>,
    at: &str,
    own_addresses_cache: &mut Option<Vec<String>>,
    mailbox_id: i64,
    recipient_key: &str,
    ticket: Option<u64>,
    limits: &mailrobot_core::AnswerLimits,
) -> Result<Option<mailrobot_core::AnswerContext>> {
    let (name, config): (String, String) = tx
        .prepare_cached("SELECT name, config FROM mailboxes WHERE id = ?1")?
        .query_row([mailbox_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let Some(query) = AnswerQuery::new(&config, at, limits) else { return Ok(None) };
    let sent_to_sender_recently: u32 = tx
        .prepare_cached(
            "SELECT COUNT(*) FROM outbox WHERE kind = 'mail' AND recipient_key = ?1 AND created_at >= ?2
             AND mail_kind <> 'reply'",
        )?
        .query_row(params![recipient_key, query.since_sender], |r| r.get(0))?;
    // Agents' replies are not automatic: they count for neither limit.
    let sent_on_ticket_today: u32 = match ticket {
        Some(ticket) => tx
            .prepare_cached(
                "SELECT COUNT(*) FROM outbox WHERE kind = 'mail' AND ticket_id = ?1 AND created_at >= ?2
                 AND mail_kind <> 'reply'",
            )?
            .query_row(params![ticket as i64, query.day_start], |r| r.get(0))?,
        None => 0,
    };
    let own_addresses = match own_addresses_cache {
        Some(own) => own.clone(),
        None => own_addresses_cache.insert(own_addresses(tx)?).clone(),
    };
    Ok(Some(query.context(mailbox_id, name, own_addresses, sent_to_sender_recently, sent_on_ticket_today)))
}

pub(crate) fn queue_mail(tx: &Transaction<'_>, at: &str, mail: &mailrobot_core::OutgoingMail) -> Result<()> {
    let payload = payload(mail)?;
    tx.prepare_cached(
        "INSERT INTO outbox (kind, ticket_id, payload, state, next_attempt_at, created_at, event_id, mailbox_id,
         mail_kind, recipient, recipient_key, subject)
         VALUES ('mail', ?1, ?2, 'queued', ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        mail.ticket.map(|t| t as i64),
        payload,
        at,
        mail.message_id,
        mail.mailbox_id,
        mail.kind.as_str(),
        mail.to,
        mailrobot_core::answer::folded(&mail.to),
        mail.subject
    ])?;
    Ok(())
}

const WEBHOOK_COLUMNS: &str = "id, url, events, enabled, created_at";

fn webhook_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Webhook> {
    Ok(Webhook {
        id: r.get(0)?,
        url: r.get(1)?,
        events: parse_events(&r.get::<_, String>(2)?),
        enabled: r.get(3)?,
        created_at: r.get(4)?,
    })
}

const DELIVERY_VIEW_COLUMNS: &str = "o.id, o.webhook_id, w.url, o.event_id, o.event_type, o.ticket_id, o.state, \
     o.attempts, o.last_status, o.last_error, o.last_attempt_at, o.next_attempt_at, o.delivered_at, o.created_at";

fn delivery_view_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryView> {
    Ok(DeliveryView {
        id: r.get(0)?,
        webhook_id: r.get(1)?,
        url: r.get(2)?,
        event_id: r.get(3)?,
        event_type: r.get(4)?,
        ticket_id: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get(7)?,
        last_status: r.get(8)?,
        last_answer: r.get(9)?,
        last_attempt_at: r.get(10)?,
        next_attempt_at: r.get(11)?,
        delivered_at: r.get(12)?,
        created_at: r.get(13)?,
    })
}

impl OutboxStore for SqliteStore {
    fn add_webhook(&self, url: &str, events: &[WebhookEvent], seal: &mut dyn FnMut(i64) -> Vec<u8>) -> Result<Webhook> {
        let events_text = events_text(events);
        self.write(|tx| {
            tx.execute(
                "INSERT INTO webhooks (url, events, sealed_secret, created_at) VALUES (?1, ?2, x'', ?3)",
                params![url, events_text, now()],
            )?;
            let id = tx.last_insert_rowid();
            tx.execute("UPDATE webhooks SET sealed_secret = ?2 WHERE id = ?1", params![id, seal(id)])?;
            Ok(tx.query_row(
                &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?1"),
                [id],
                webhook_from_row,
            )?)
        })
    }

    fn webhooks(&self) -> Result<Vec<Webhook>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY id"))?;
        Ok(stmt.query_map([], webhook_from_row)?.collect::<rusqlite::Result<_>>()?)
    }

    fn webhook(&self, id: i64) -> Result<Option<Webhook>> {
        let conn = self.lock();
        Ok(conn
            .query_row(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?1"), [id], webhook_from_row)
            .optional()?)
    }

    fn webhook_secret(&self, id: i64) -> Result<Option<Vec<u8>>> {
        let conn = self.lock();
        Ok(conn.query_row("SELECT sealed_secret FROM webhooks WHERE id = ?1", [id], |r| r.get(0)).optional()?)
    }

    fn set_webhook_enabled(&self, id: i64, enabled: bool) -> Result<bool> {
        self.write(|tx| Ok(tx.execute("UPDATE webhooks SET enabled = ?2 WHERE id = ?1", params![id, enabled])? > 0))
    }

    fn remove_webhook(&self, id: i64) -> Result<bool> {
        self.write(|tx| {
            tx.execute("DELETE FROM outbox WHERE webhook_id = ?1", [id])?;
            Ok(tx.execute("DELETE FROM webhooks WHERE id = ?1", [id])? > 0)
        })
    }

    fn claim_due_deliveries(&self, now: &str, lease_until: &str, limit: usize) -> Result<Vec<Delivery>> {
        self.write(|tx| {
            let rows = tx
                .prepare_cached(
                    "SELECT o.id, o.webhook_id, w.url, o.event_id, o.event_type, o.payload, o.body, o.attempts,
                            o.created_at
                     FROM outbox o JOIN webhooks w ON w.id = o.webhook_id
                     WHERE o.state = 'queued' AND o.kind = 'webhook' AND w.enabled = 1
                       AND o.next_attempt_at <= ?1 AND (o.lease_until IS NULL OR o.lease_until <= ?1)
                       AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.state = 'queued'
                           AND e.webhook_id = o.webhook_id AND e.ticket_id IS o.ticket_id AND e.id < o.id)
                     ORDER BY o.next_attempt_at, o.id LIMIT ?2",
                )?
                .query_map(params![now, limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, WebhookEvent>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, i64>(7)?,
                        r.get::<_, String>(8)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut lease = tx.prepare_cached("UPDATE outbox SET lease_until = ?2 WHERE id = ?1")?;
            let mut claimed = Vec::with_capacity(rows.len());
            for (id, webhook_id, url, event_id, event_type, payload, body, attempts, created_at) in rows {
                let event = event_of(id, &payload)?;
                lease.execute(params![id, lease_until])?;
                claimed.push(Delivery { id, webhook_id, url, event_id, event_type, event, body, attempts, created_at });
            }
            Ok(claimed)
        })
    }

    fn set_delivery_body(&self, id: i64, body: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("UPDATE outbox SET body = ?2 WHERE id = ?1 AND body IS NULL", params![id, body])?;
            Ok(())
        })
    }

    fn record_attempts(&self, done: &[(i64, Attempt)], at: &str) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut update = tx.prepare_cached(
                "UPDATE outbox SET state = ?2, attempts = attempts + 1, last_status = ?3, last_error = ?4,
                 last_attempt_at = ?5, next_attempt_at = ?6, delivered_at = COALESCE(?7, delivered_at),
                 body = COALESCE(?8, body), lease_until = NULL WHERE id = ?1",
            )?;
            for (id, attempt) in done {
                let (state, next, delivered_at) = attempt.next.outcome(at);
                update.execute(params![
                    id,
                    state,
                    attempt.status,
                    attempt.answer,
                    at,
                    next,
                    delivered_at,
                    attempt.body
                ])?;
            }
            Ok(())
        })
    }

    fn next_delivery_due(&self) -> Result<Option<String>> {
        let conn = self.lock();
        Ok(conn.query_row(
            "SELECT MIN(MAX(o.next_attempt_at, COALESCE(o.lease_until, o.next_attempt_at)))
             FROM outbox o JOIN webhooks w ON w.id = o.webhook_id
             WHERE o.state = 'queued' AND o.kind = 'webhook' AND w.enabled = 1",
            [],
            |r| r.get(0),
        )?)
    }

    fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryView>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DELIVERY_VIEW_COLUMNS} FROM outbox o JOIN webhooks w ON w.id = o.webhook_id
             WHERE o.kind = 'webhook' AND (?1 IS NULL OR o.webhook_id = ?1) AND (?2 IS NULL OR o.state = ?2)
               AND (?3 IS NULL OR o.id < ?3)
             ORDER BY o.id DESC LIMIT ?4"
        ))?;
        let limit = filter.limit.map_or(-1, |l| l as i64);
        Ok(stmt
            .query_map(params![filter.webhook_id, filter.state, filter.before, limit], delivery_view_from_row)?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn delivery(&self, id: i64) -> Result<Option<DeliveryView>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {DELIVERY_VIEW_COLUMNS} FROM outbox o JOIN webhooks w ON w.id = o.webhook_id
                     WHERE o.id = ?1 AND o.kind = 'webhook'"
                ),
                [id],
                delivery_view_from_row,
            )
            .optional()?)
    }

    fn resend_delivery(&self, id: i64) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = ?2, lease_until = NULL
                 WHERE id = ?1 AND kind = 'webhook'",
                params![id, now()],
            )? > 0)
        })
    }

    fn claim_due_mails(&self, now: &str, lease_until: &str, limit: usize) -> Result<Vec<QueuedMail>> {
        self.write(|tx| {
            let rows = tx
                .prepare_cached(
                    "SELECT id, payload, body, attempts FROM outbox
                     WHERE kind = 'mail' AND state = 'queued' AND next_attempt_at <= ?1
                       AND (lease_until IS NULL OR lease_until <= ?1)
                     ORDER BY next_attempt_at, id LIMIT ?2",
                )?
                .query_map(params![now, limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut lease = tx.prepare_cached("UPDATE outbox SET lease_until = ?2 WHERE id = ?1")?;
            let mut claimed = Vec::with_capacity(rows.len());
            for (id, payload, body, attempts) in rows {
                let mail = mail_of(id, &payload)?;
                lease.execute(params![id, lease_until])?;
                claimed.push(QueuedMail { id, mail, body, attempts });
            }
            Ok(claimed)
        })
    }

    fn set_status_notifying(
        &self,
        ticket_id: i64,
        status: crate::TicketStatus,
        notification: Option<&mailrobot_core::OutgoingMail>,
    ) -> Result<bool> {
        use crate::sqlite::{StatusChange, change_ticket_status};
        self.write(|tx| {
            let change = change_ticket_status(tx, ticket_id, status)?;
            if let (StatusChange::Changed, Some(mail)) = (change, notification) {
                queue_mail(tx, &now(), mail)?;
            }
            Ok(change != StatusChange::NoTicket)
        })
    }

    fn queue_reply(&self, mail: &mailrobot_core::OutgoingMail, files: &[Vec<u8>]) -> Result<i64> {
        self.write(|tx| {
            let mail = with_files(mail, files, |bytes| crate::sqlite::put_blob(tx, bytes))?;
            queue_mail(tx, &now(), &mail)?;
            Ok(tx.last_insert_rowid())
        })
    }

    fn ticket_mailbox(&self, ticket_id: i64) -> Result<Option<(i64, Option<String>)>> {
        let conn = self.read();
        let found: Option<(i64, String)> = conn
            .query_row(
                "SELECT b.id, b.config FROM ticket_entries e JOIN messages m ON m.id = e.journal_id
                 JOIN mailboxes b ON b.id = m.mailbox_id WHERE e.ticket_id = ?1 ORDER BY e.position LIMIT 1",
                [ticket_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(found.map(|(id, config)| (id, reply_from(&mailbox_config(&config)))))
    }

    fn mails(&self) -> Result<Vec<MailView>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, ticket_id, recipient, subject, mail_kind, state, attempts, last_error, delivered_at, created_at,
                    next_attempt_at, mailbox_id
             FROM outbox WHERE kind = 'mail' ORDER BY id",
        )?;
        Ok(stmt
            .query_map([], |r| {
                Ok(MailView {
                    id: r.get(0)?,
                    ticket_id: r.get(1)?,
                    to: r.get(2)?,
                    subject: r.get(3)?,
                    kind: r.get(4)?,
                    state: r.get(5)?,
                    attempts: r.get(6)?,
                    last_error: r.get(7)?,
                    sent_at: r.get(8)?,
                    created_at: r.get(9)?,
                    next_attempt_at: r.get(10)?,
                    mailbox_id: r.get(11)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn resend_mail(&self, id: i64) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = ?2, lease_until = NULL
                 WHERE id = ?1 AND kind = 'mail'",
                params![id, now()],
            )? > 0)
        })
    }

    fn set_mailbox_reply_secret(&self, mailbox_id: i64, sealed: Option<&[u8]>) -> Result<()> {
        self.write(|tx| {
            tx.execute("UPDATE mailboxes SET sealed_reply_secret = ?2 WHERE id = ?1", params![mailbox_id, sealed])?;
            Ok(())
        })
    }

    fn mailbox_reply_secret(&self, mailbox_id: i64) -> Result<Option<Vec<u8>>> {
        let conn = self.read();
        Ok(conn
            .query_row("SELECT sealed_reply_secret FROM mailboxes WHERE id = ?1", [mailbox_id], |r| r.get(0))
            .optional()?
            .flatten())
    }

    fn pending_deliveries(&self) -> Result<Vec<(i64, i64)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT webhook_id, COUNT(*) FROM outbox WHERE state = 'queued' AND kind = 'webhook' GROUP BY webhook_id",
        )?;
        Ok(stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?)
    }
}
