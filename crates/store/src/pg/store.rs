//! [`Store`] on PostgreSQL: mailboxes, the journal, tickets and the views.

use std::collections::HashSet;

use mailrobot_core::{Ledger, PendingMail};
use tokio_postgres::Row;

use super::lease::check_fences;
use super::ledger::{PgLedger, pending_batch_bytes, read_pending};
use super::{BLOB_PIECE, BlobRows, PgStore, PgTx, now, put_blob_hashed, read_blob};
use crate::model::*;
use crate::{JournalState, ProcessingRules, Result, Store, StoreError, TicketStatus};

const MAILBOX_COLUMNS: &str = "id, name, kind, enabled, config, sealed_secret IS NOT NULL, poll_seconds, \
     max_message_bytes, status, last_error, consecutive_failures, last_poll_at, next_poll_at, created_at, connection_id, \
     throttled_until";

fn mailbox_from_row(row: &Row) -> Result<Mailbox> {
    let config: String = row.try_get(4)?;
    Ok(Mailbox {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        kind: row.try_get(2)?,
        enabled: row.try_get(3)?,
        config: serde_json::from_str(&config).unwrap_or(serde_json::Value::Null),
        has_secret: row.try_get(5)?,
        poll_seconds: row.try_get(6)?,
        max_message_bytes: row.try_get(7)?,
        status: row.try_get(8)?,
        last_error: row.try_get(9)?,
        consecutive_failures: row.try_get(10)?,
        last_poll_at: row.try_get(11)?,
        next_poll_at: row.try_get(12)?,
        created_at: row.try_get(13)?,
        connection_id: row.try_get(14)?,
        throttled_until: row.try_get(15)?,
    })
}

pub(crate) const TICKET_SUMMARY_SQL: &str = "SELECT t.id, t.subject, t.requester, t.requester_name, t.status,
        (SELECT COUNT(*) FROM ticket_entries e WHERE e.ticket_id = t.id), t.created_at, t.updated_at,
        t.category, t.priority, t.queue, t.assignee, t.tags
     FROM tickets t";

pub(crate) fn ticket_from_row(r: &Row) -> Result<TicketSummary> {
    Ok(TicketSummary {
        fields: mailrobot_core::TicketFields {
            category: r.try_get(8)?,
            priority: r.try_get(9)?,
            queue: r.try_get(10)?,
            assignee: r.try_get(11)?,
            tags: tags_from_json(r.try_get(12)?),
        },
        id: r.try_get(0)?,
        subject: r.try_get(1)?,
        requester: r.try_get(2)?,
        requester_name: r.try_get(3)?,
        status: r.try_get(4)?,
        entries: r.try_get(5)?,
        created_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
    })
}

/// Which remote ids of `mails` the mailbox's journal has already.
fn journaled_remote_ids(tx: &mut PgTx<'_>, mailbox_id: i64, mails: &[IncomingMail<'_>]) -> Result<HashSet<String>> {
    let remote_ids: Vec<&str> = mails.iter().map(|m| m.remote_id.as_str()).collect();
    tx.query(
        "SELECT remote_id FROM messages WHERE mailbox_id = $1 AND remote_id = ANY($2)",
        &[&mailbox_id, &remote_ids],
    )?
    .iter()
    .map(|row| Ok(row.try_get(0)?))
    .collect()
}

impl Store for PgStore {
    fn add_mailbox(&self, new: &NewMailbox) -> Result<Mailbox> {
        let id = self.write(|tx| {
            if tx.query_opt("SELECT 1 FROM mailboxes WHERE name = $1", &[&new.name])?.is_some() {
                return Err(StoreError::MailboxExists(new.name.clone()));
            }
            let row = tx.query_one(
                "INSERT INTO mailboxes (name, kind, config, sealed_secret, poll_seconds, max_message_bytes, created_at,
                 connection_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                &[
                    &new.name,
                    &new.kind,
                    &new.config.to_string(),
                    &new.sealed_secret,
                    &new.poll_seconds,
                    &new.max_message_bytes,
                    &now(),
                    &new.connection_id,
                ],
            )?;
            Ok(row.try_get::<_, i64>(0)?)
        })?;
        self.mailbox(id)
    }

    fn mailboxes(&self) -> Result<Vec<Mailbox>> {
        self.read(|tx| {
            tx.query(&format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes ORDER BY id"), &[])?
                .iter()
                .map(mailbox_from_row)
                .collect()
        })
    }

    fn mailbox_by_name(&self, name: &str) -> Result<Option<Mailbox>> {
        self.read(|tx| {
            tx.query_opt(&format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE name = $1"), &[&name])?
                .as_ref()
                .map(mailbox_from_row)
                .transpose()
        })
    }

    fn mailbox(&self, id: i64) -> Result<Mailbox> {
        self.read(|tx| {
            tx.query_opt(&format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE id = $1"), &[&id])?
                .as_ref()
                .map(mailbox_from_row)
                .transpose()?
                .ok_or(StoreError::NoSuchMailbox(id))
        })
    }

    fn mailbox_secret(&self, id: i64) -> Result<Option<Vec<u8>>> {
        self.read(|tx| match tx.query_opt("SELECT sealed_secret FROM mailboxes WHERE id = $1", &[&id])? {
            Some(row) => Ok(row.try_get(0)?),
            None => Err(StoreError::NoSuchMailbox(id)),
        })
    }

    fn set_mailbox_enabled(&self, id: i64, enabled: bool) -> Result<()> {
        self.write(|tx| match tx.exec("UPDATE mailboxes SET enabled = $2 WHERE id = $1", &[&id, &enabled])? {
            0 => Err(StoreError::NoSuchMailbox(id)),
            _ => Ok(()),
        })
    }

    fn mailbox_sync_state(&self, id: i64) -> Result<Option<String>> {
        self.read(|tx| match tx.query_opt("SELECT sync_state FROM mailboxes WHERE id = $1", &[&id])? {
            Some(row) => Ok(row.try_get(0)?),
            None => Ok(None),
        })
    }

    fn set_mailbox_sync_state(&self, id: i64, state: Option<&str>) -> Result<()> {
        self.write_for_mailbox(&[id], |tx| {
            tx.exec("UPDATE mailboxes SET sync_state = $2 WHERE id = $1", &[&id, &state])?;
            Ok(())
        })
    }

    fn remove_mailbox(&self, id: i64) -> Result<()> {
        // The journal keeps its rows (tickets refer to them): a removed
        // mailbox is only disabled and renamed out of the way.
        self.write(|tx| {
            let n = tx.exec(
                "UPDATE mailboxes SET enabled = FALSE, name = name || ' (removed ' || $2 || ')' WHERE id = $1",
                &[&id, &now()],
            )?;
            if n == 0 { Err(StoreError::NoSuchMailbox(id)) } else { Ok(()) }
        })
    }

    fn update_mailbox(&self, id: i64, update: &MailboxUpdate) -> Result<Mailbox> {
        self.write(|tx| {
            let changed = tx.exec(
                // A sync state (Graph deltaLink, EWS SyncState) belongs to the
                // folder it was made for: other settings start it over.
                "UPDATE mailboxes SET config = $2, poll_seconds = $3, max_message_bytes = $4,
                 sealed_secret = COALESCE($5, sealed_secret),
                 sync_state = CASE WHEN config = $2 THEN sync_state END WHERE id = $1",
                &[
                    &id,
                    &update.config.to_string(),
                    &update.poll_seconds,
                    &update.max_message_bytes,
                    &update.sealed_secret,
                ],
            )?;
            if changed == 0 { Err(StoreError::NoSuchMailbox(id)) } else { Ok(()) }
        })?;
        self.mailbox(id)
    }

    fn record_poll(&self, id: i64, record: &PollRecord) -> Result<()> {
        self.write_for_mailbox(&[id], |tx| {
            let status = record.outcome.status();
            let (error, failures) = (record.outcome.error(), record.outcome.failures_sql());
            tx.exec(
                &format!(
                    "UPDATE mailboxes SET status = $2, last_error = $3, consecutive_failures = {failures},
                     last_poll_at = $4, next_poll_at = $5, throttled_until = $6 WHERE id = $1"
                ),
                &[&id, &status, &error, &now(), &record.next_poll_at, &record.throttled_until],
            )?;
            Ok(())
        })
    }

    fn push_subscription(&self, mailbox_id: i64) -> Result<Option<PushSubscription>> {
        let sql = format!("SELECT {PUSH_SUBSCRIPTION_COLUMNS} FROM push_subscriptions WHERE mailbox_id = $1");
        self.read(|tx| tx.query_opt(&sql, &[&mailbox_id])?.map(|r| push_subscription_row(&r)).transpose())
    }

    fn push_subscription_by_id(&self, subscription_id: &str) -> Result<Option<PushSubscription>> {
        let sql = format!("SELECT {PUSH_SUBSCRIPTION_COLUMNS} FROM push_subscriptions WHERE subscription_id = $1");
        self.read(|tx| tx.query_opt(&sql, &[&subscription_id])?.map(|r| push_subscription_row(&r)).transpose())
    }

    fn save_push_subscription(&self, s: &PushSubscription) -> Result<()> {
        self.write(|tx| {
            check_fences(&self.fences, tx, &[s.mailbox_id])?;
            // A subscription id names one mailbox: a stale row naming it goes.
            tx.exec(
                "DELETE FROM push_subscriptions WHERE subscription_id = $1 AND mailbox_id <> $2",
                &[&s.subscription_id, &s.mailbox_id],
            )?;
            tx.exec(
                "INSERT INTO push_subscriptions (mailbox_id, subscription_id, sealed_client_state, notification_url,
                                                 watching, expires_at, created_at, renewed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (mailbox_id) DO UPDATE SET subscription_id = excluded.subscription_id,
                     sealed_client_state = excluded.sealed_client_state, notification_url = excluded.notification_url,
                     watching = excluded.watching, expires_at = excluded.expires_at, created_at = excluded.created_at,
                     renewed_at = excluded.renewed_at",
                &[
                    &s.mailbox_id,
                    &s.subscription_id,
                    &s.sealed_client_state,
                    &s.notification_url,
                    &s.watching,
                    &s.expires_at,
                    &s.created_at,
                    &s.renewed_at,
                ],
            )?;
            Ok(())
        })
    }

    fn forget_push_subscription(&self, mailbox_id: i64) -> Result<()> {
        self.write(|tx| {
            tx.exec("DELETE FROM push_subscriptions WHERE mailbox_id = $1", &[&mailbox_id])?;
            Ok(())
        })
    }

    fn known_remote_ids(&self, mailbox_id: i64, remote_ids: &[String]) -> Result<Vec<KnownMail>> {
        self.read(|tx| {
            let rows = tx.query(
                "SELECT id, remote_id, state, settled FROM messages WHERE mailbox_id = $1 AND remote_id = ANY($2)",
                &[&mailbox_id, &remote_ids],
            )?;
            let mut known: std::collections::HashMap<String, KnownMail> = rows
                .iter()
                .map(|r| {
                    let remote_id: String = r.try_get(1)?;
                    Ok((
                        remote_id.clone(),
                        KnownMail {
                            journal_id: r.try_get(0)?,
                            remote_id,
                            state: r.try_get(2)?,
                            settled: r.try_get(3)?,
                        },
                    ))
                })
                .collect::<Result<_>>()?;
            // In the order asked, as SQLite answers.
            Ok(remote_ids.iter().filter_map(|id| known.remove(id)).collect())
        })
    }

    fn journal(&self, mailbox_id: i64, mails: &[IncomingMail<'_>]) -> Result<usize> {
        if mails.is_empty() {
            return Ok(0);
        }
        self.write_for_mailbox(&[mailbox_id], |tx| {
            let fetched_at = now();
            // Once per mailbox and remote id, also within one batch.
            let new = crate::process::new_mails(mails, journaled_remote_ids(tx, mailbox_id, mails)?);
            let mut shas: Vec<Option<String>> = Vec::with_capacity(new.len());
            let mut blobs = BlobRows::default();
            for &i in &new {
                let mail = &mails[i];
                shas.push(match &mail.rejected {
                    Some(_) => None,
                    None if mail.raw.len() > BLOB_PIECE => Some(put_blob_hashed(tx, mail.raw, mail.raw_sha256())?),
                    None => Some(blobs.add_hashed(tx, mail.raw, mail.raw_sha256())?),
                });
            }
            blobs.send(tx)?;
            let states: Vec<JournalState> = new
                .iter()
                .map(|i| if mails[*i].rejected.is_some() { JournalState::Failed } else { JournalState::Fetched })
                .collect();
            let inserted = tx.exec(
                // A row another writer added meanwhile (a `run-once` beside
                // the nodes, which takes no lease) is that writer's to file.
                "INSERT INTO messages (mailbox_id, remote_id, raw_sha256, size, state, reason, fetched_at, processed_at)
                 SELECT $1, remote_id, sha, size, state, reason, $2, CASE WHEN state = 'failed' THEN $2 END
                 FROM unnest($3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[])
                      AS u(remote_id, sha, size, state, reason)
                 ON CONFLICT (mailbox_id, remote_id) DO NOTHING",
                &[
                    &mailbox_id,
                    &fetched_at,
                    &new.iter().map(|i| mails[*i].remote_id.as_str()).collect::<Vec<_>>(),
                    &shas,
                    &new.iter().map(|i| mails[*i].size as i64).collect::<Vec<_>>(),
                    &states,
                    &new.iter().map(|i| mails[*i].rejected.as_deref()).collect::<Vec<_>>(),
                ],
            )?;
            Ok(inserted as usize)
        })
    }

    fn journal_and_file(
        &self,
        mailbox_id: i64,
        mails: &[IncomingMail<'_>],
        parses: ParsesLater<'_>,
        rules: &ProcessingRules,
    ) -> Result<Vec<ProcessedMail>> {
        if mails.is_empty() {
            parses();
            return Ok(Vec::new());
        }
        // The raw bytes first, while the parsing goes on, beside other
        // nodes (no write lock). Not waited for on disk: the commit of the
        // rows that refer to them flushes the log past them, and bytes no
        // row refers to (a crash between) are taken again by the next
        // fetch of the same mail.
        let shas = self.write_for_mailbox(&[mailbox_id], |tx| {
            tx.exec("SET LOCAL synchronous_commit = off", &[])?;
            let mut blobs = BlobRows::default();
            let mut shas = Vec::with_capacity(mails.len());
            for mail in mails {
                shas.push(match &mail.rejected {
                    Some(_) => None,
                    None if mail.raw.len() > BLOB_PIECE => Some(put_blob_hashed(tx, mail.raw, mail.raw_sha256())?),
                    None => Some(blobs.add_hashed(tx, mail.raw, mail.raw_sha256())?),
                });
            }
            blobs.send(tx)?;
            Ok(shas)
        })?;
        let parses = parses();
        // The rows under the write lock, as filing is: no other writer
        // adds these remote ids between the check and the rows.
        self.write(|tx| {
            check_fences(&self.fences, tx, &[mailbox_id])?;
            let new = crate::process::new_mails(mails, journaled_remote_ids(tx, mailbox_id, mails)?);
            // Ids drawn for every new row: they are written only when filing
            // records each outcome.
            let mut ids: Vec<i64> = tx
                .query(
                    "SELECT nextval(pg_get_serial_sequence('messages', 'id')) FROM generate_series(1, $1::bigint)",
                    &[&(new.len() as i64)],
                )?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<std::result::Result<_, _>>()?;
            ids.sort_unstable();
            let mut ledger = PgLedger::new(tx, now());
            let mut fresh = Vec::with_capacity(new.len());
            for (i, journal_id) in new.into_iter().zip(ids) {
                let mail = &mails[i];
                match (&mail.rejected, &shas[i]) {
                    (None, Some(sha)) => {
                        let row = FreshRow {
                            mailbox_id,
                            remote_id: mail.remote_id.clone(),
                            raw_sha256: sha.to_string(),
                            size: mail.size as i64,
                        };
                        ledger.fresh.insert(journal_id, row);
                        fresh.push((journal_id, mail));
                    }
                    (reason, _) => ledger.journal_rejected(journal_id, mailbox_id, mail, reason.as_deref())?,
                }
            }
            let processed = crate::process::file_fresh(&mut ledger, mailbox_id, fresh, parses, rules)?;
            crate::process::check_all_written(&ledger.fresh)?;
            ledger.finish()?;
            Ok(processed)
        })
    }

    fn pending_batch_bytes(&self, mailbox_id: Option<i64>, limit: usize, max_bytes: u64) -> Result<Option<u64>> {
        self.read(|tx| pending_batch_bytes(tx, mailbox_id, limit, max_bytes))
    }

    fn pending_mails(&self, mailbox_id: Option<i64>, limit: usize, max_bytes: u64) -> Result<Vec<PendingMail>> {
        self.read(|tx| read_pending(tx, mailbox_id, limit, max_bytes))
    }

    fn with_ledger_for(
        &self,
        mailboxes: &[i64],
        work: &mut dyn FnMut(&mut dyn Ledger<Error = StoreError>) -> Result<()>,
    ) -> Result<()> {
        self.write(|tx| {
            check_fences(&self.fences, tx, mailboxes)?;
            let mut ledger = PgLedger::new(tx, now());
            work(&mut ledger)?;
            ledger.finish()
        })
    }

    fn unsettled(&self, mailbox_id: i64) -> Result<Vec<Unsettled>> {
        self.read(|tx| {
            tx.query(
                "SELECT id, remote_id, state FROM messages
                 WHERE mailbox_id = $1 AND NOT settled AND state <> 'fetched' ORDER BY id",
                &[&mailbox_id],
            )?
            .iter()
            .map(|r| {
                let state: JournalState = r.try_get(2)?;
                Ok(Unsettled {
                    journal_id: r.try_get(0)?,
                    remote_id: r.try_get(1)?,
                    settle_to: if state == JournalState::Failed { SettleTo::Failed } else { SettleTo::Processed },
                })
            })
            .collect()
        })
    }

    fn mark_settled(&self, journal_ids: &[i64]) -> Result<()> {
        if journal_ids.is_empty() {
            return Ok(());
        }
        // A journal row's mailbox never changes: read before the write.
        let mailboxes: Vec<i64> = if self.fences.is_enabled() {
            self.read(|tx| {
                tx.query("SELECT DISTINCT mailbox_id FROM messages WHERE id = ANY($1)", &[&journal_ids])?
                    .iter()
                    .map(|r| Ok(r.try_get(0)?))
                    .collect()
            })?
        } else {
            Vec::new()
        };
        self.write_for_mailbox(&mailboxes, |tx| {
            tx.exec("UPDATE messages SET settled = TRUE, settled_at = $2 WHERE id = ANY($1)", &[&journal_ids, &now()])?;
            Ok(())
        })
    }

    fn retry_message(&self, journal_id: i64) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.exec(
                "UPDATE messages SET state = 'fetched', reason = NULL
                 WHERE id = $1 AND state = 'failed' AND raw_sha256 IS NOT NULL",
                &[&journal_id],
            )? > 0)
        })
    }

    fn retry_failed(&self, mailbox_id: Option<i64>) -> Result<usize> {
        // Rows without raw bytes (refused before download) cannot be retried here.
        self.write(|tx| {
            Ok(tx.exec(
                "UPDATE messages SET state = 'fetched', reason = NULL
                 WHERE state = 'failed' AND raw_sha256 IS NOT NULL AND ($1::bigint IS NULL OR mailbox_id = $1)",
                &[&mailbox_id],
            )? as usize)
        })
    }

    fn tickets(&self) -> Result<Vec<TicketSummary>> {
        self.read(|tx| {
            tx.query(&format!("{TICKET_SUMMARY_SQL} ORDER BY t.id"), &[])?.iter().map(ticket_from_row).collect()
        })
    }

    fn ticket(&self, id: i64) -> Result<Option<TicketDetail>> {
        self.read(|tx| {
            let Some(summary) = tx.query_opt(&format!("{TICKET_SUMMARY_SQL} WHERE t.id = $1"), &[&id])? else {
                return Ok(None);
            };
            let summary = ticket_from_row(&summary)?;
            let rows = tx.query(
                "SELECT e.id, e.position, e.journal_id, e.message_id, e.from_addr, e.from_name, e.subject, e.kind,
                        e.date, e.text_body, e.html_body, e.created_at, e.new_text, m.answer, m.rules
                 FROM ticket_entries e LEFT JOIN messages m ON m.id = e.journal_id
                 WHERE e.ticket_id = $1 ORDER BY e.position",
                &[&id],
            )?;
            let mut entries = Vec::with_capacity(rows.len());
            for r in &rows {
                let entry_id: i64 = r.try_get(0)?;
                let attachments = tx
                    .query(
                        "SELECT filename, content_type, size, content_id, inline, blob_sha256
                         FROM entry_attachments WHERE entry_id = $1 ORDER BY position",
                        &[&entry_id],
                    )?
                    .iter()
                    .map(|a| {
                        Ok(AttachmentView {
                            filename: a.try_get(0)?,
                            content_type: a.try_get(1)?,
                            size: a.try_get(2)?,
                            content_id: a.try_get(3)?,
                            inline: a.try_get(4)?,
                            sha256: a.try_get(5)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                entries.push(EntryView {
                    position: r.try_get(1)?,
                    journal_id: r.try_get(2)?,
                    message_id: r.try_get(3)?,
                    from: r.try_get(4)?,
                    from_name: r.try_get(5)?,
                    subject: r.try_get(6)?,
                    kind: r.try_get(7)?,
                    date: r.try_get(8)?,
                    text_body: r.try_get(9)?,
                    html_body: r.try_get(10)?,
                    created_at: r.try_get(11)?,
                    new_text: r.try_get(12)?,
                    answer: r.try_get(13)?,
                    rules: r.try_get(14)?,
                    attachments,
                });
            }
            Ok(Some(TicketDetail { summary, entries }))
        })
    }

    fn search_tickets(&self, query: &TicketQuery) -> Result<Vec<TicketSummary>> {
        let pattern = query.text.as_deref().map(like_pattern);
        self.read(|tx| {
            tx.query(
                &format!(
                    "{TICKET_SUMMARY_SQL}
                     WHERE ($1::text IS NULL OR t.subject ILIKE $1 OR t.requester ILIKE $1
                            OR t.requester_name ILIKE $1 OR t.id = $2)
                       AND ($3::text IS NULL OR t.status = $3)
                       AND ($4::bigint IS NULL OR EXISTS (SELECT 1 FROM ticket_entries e JOIN messages m
                                                      ON m.id = e.journal_id
                                                  WHERE e.ticket_id = t.id AND m.mailbox_id = $4))
                       AND ($5::bigint IS NULL OR t.id < $5)
                     ORDER BY t.id DESC LIMIT $6"
                ),
                &[&pattern, &query.number, &query.status, &query.mailbox_id, &query.before_id, &(query.limit as i64)],
            )?
            .iter()
            .map(ticket_from_row)
            .collect()
        })
    }

    fn set_ticket_status(&self, id: i64, status: TicketStatus) -> Result<bool> {
        self.write(|tx| Ok(change_ticket_status(tx, id, status)? != StatusChange::NoTicket))
    }

    fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        self.read(|tx| read_blob(tx, sha256))
    }

    fn message_raw(&self, journal_id: i64) -> Result<Option<Vec<u8>>> {
        self.read(|tx| {
            let sha: Option<String> =
                match tx.query_opt("SELECT raw_sha256 FROM messages WHERE id = $1", &[&journal_id])? {
                    Some(row) => row.try_get(0)?,
                    None => None,
                };
            match sha {
                Some(sha) => read_blob(tx, &sha),
                None => Ok(None),
            }
        })
    }

    fn messages(&self, filter: &MessageFilter) -> Result<Vec<MessageView>> {
        let order = if filter.page.is_some() { "DESC" } else { "ASC" };
        let (before, limit) = match filter.page {
            Some(page) => (page.before_id, Some(page.limit as i64)),
            None => (None, None),
        };
        self.read(|tx| {
            tx.query(
                &format!(
                    "SELECT m.id, b.name, m.remote_id, m.message_id, m.subject, m.from_addr, m.state, m.kind,
                            m.ticket_id, m.reason, m.size, m.raw_sha256, m.settled, m.fetched_at, m.processed_at,
                            m.answer, m.rules
                     FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
                     WHERE ($1::text IS NULL OR m.state = $1) AND ($2::bigint IS NULL OR m.mailbox_id = $2)
                       AND ($3::bigint IS NULL OR m.id < $3)
                     ORDER BY m.id {order} LIMIT $4"
                ),
                &[&filter.state, &filter.mailbox_id, &before, &limit],
            )?
            .iter()
            .map(|r| {
                Ok(MessageView {
                    journal_id: r.try_get(0)?,
                    mailbox: r.try_get(1)?,
                    remote_id: r.try_get(2)?,
                    message_id: r.try_get(3)?,
                    subject: r.try_get(4)?,
                    from: r.try_get(5)?,
                    state: r.try_get(6)?,
                    kind: r.try_get(7)?,
                    ticket_id: r.try_get(8)?,
                    reason: r.try_get(9)?,
                    size: r.try_get(10)?,
                    raw_sha256: r.try_get(11)?,
                    settled: r.try_get(12)?,
                    fetched_at: r.try_get(13)?,
                    processed_at: r.try_get(14)?,
                    answer: r.try_get(15)?,
                    rules: r.try_get(16)?,
                })
            })
            .collect()
        })
    }

    fn counts(&self) -> Result<Counts> {
        self.read(|tx| {
            let r = tx.query_one(
                "SELECT (SELECT COUNT(*) FROM tickets), total, fetched, total - fetched - failed, failed, unsettled
                 FROM (SELECT (SELECT COUNT(*) FROM messages) AS total,
                              (SELECT COUNT(*) FROM messages WHERE state = 'fetched') AS fetched,
                              (SELECT COUNT(*) FROM messages WHERE state = 'failed') AS failed,
                              (SELECT COUNT(*) FROM messages WHERE NOT settled AND state <> 'fetched') AS unsettled) c",
                &[],
            )?;
            Ok(Counts {
                tickets: r.try_get(0)?,
                messages: r.try_get(1)?,
                fetched: r.try_get(2)?,
                processed: r.try_get(3)?,
                failed: r.try_get(4)?,
                unsettled: r.try_get(5)?,
            })
        })
    }

    fn mailbox_counts(&self, since: &str) -> Result<Vec<MailboxCounts>> {
        self.read(|tx| {
            let mut counts: std::collections::BTreeMap<i64, MailboxCounts> = std::collections::BTreeMap::new();
            let mut add =
                |tx: &mut PgTx<'_>, sql: &str, since: Option<&str>, set: fn(&mut MailboxCounts, i64)| -> Result<()> {
                    let rows = match since {
                        Some(since) => tx.query(sql, &[&since])?,
                        None => tx.query(sql, &[])?,
                    };
                    for r in rows {
                        let (mailbox_id, n): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
                        set(counts.entry(mailbox_id).or_insert(MailboxCounts { mailbox_id, ..Default::default() }), n);
                    }
                    Ok(())
                };
            add(
                tx,
                "SELECT mailbox_id, COUNT(*) FROM messages WHERE fetched_at >= $1 GROUP BY mailbox_id",
                Some(since),
                |c, n| c.fetched_since = n,
            )?;
            add(
                tx,
                "SELECT mailbox_id, COUNT(*) FROM messages WHERE state = 'fetched' GROUP BY mailbox_id",
                None,
                |c, n| c.waiting = n,
            )?;
            add(
                tx,
                "SELECT mailbox_id, COUNT(*) FROM messages WHERE state = 'failed' GROUP BY mailbox_id",
                None,
                |c, n| c.failed = n,
            )?;
            Ok(counts.into_values().collect())
        })
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        self.read(|tx| match tx.query_opt("SELECT value FROM settings WHERE key = $1", &[&key])? {
            Some(row) => Ok(Some(row.try_get(0)?)),
            None => Ok(None),
        })
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.write(|tx| {
            tx.exec(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )?;
            Ok(())
        })
    }
}

/// Sets a ticket's status and, when it changed, queues the webhook event in
/// the same transaction.
pub(crate) fn change_ticket_status(tx: &mut PgTx<'_>, id: i64, status: TicketStatus) -> Result<StatusChange> {
    let Some(row) = tx.query_opt("SELECT status FROM tickets WHERE id = $1 FOR UPDATE", &[&id])? else {
        return Ok(StatusChange::NoTicket);
    };
    let previous: TicketStatus = row.try_get(0)?;
    if previous == status {
        return Ok(StatusChange::Unchanged);
    }
    let at = now();
    tx.exec("UPDATE tickets SET status = $2, updated_at = $3 WHERE id = $1", &[&id, &status, &at])?;
    super::outbox::enqueue_event(tx, crate::WebhookEvent::TicketStatusChanged, |_| {
        Ok(crate::EventRecord {
            ticket_id: id,
            entry_position: None,
            status,
            previous_status: Some(previous),
            occurred_at: at.clone(),
        })
    })?;
    Ok(StatusChange::Changed)
}

const PUSH_SUBSCRIPTION_COLUMNS: &str =
    "mailbox_id, subscription_id, sealed_client_state, notification_url, watching, expires_at, created_at, renewed_at";

fn push_subscription_row(r: &Row) -> Result<PushSubscription> {
    Ok(PushSubscription {
        mailbox_id: r.try_get(0)?,
        subscription_id: r.try_get(1)?,
        sealed_client_state: r.try_get(2)?,
        notification_url: r.try_get(3)?,
        watching: r.try_get(4)?,
        expires_at: r.try_get(5)?,
        created_at: r.try_get(6)?,
        renewed_at: r.try_get(7)?,
    })
}
