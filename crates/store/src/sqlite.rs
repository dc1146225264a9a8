//! The embedded store: one SQLite file in WAL mode in the data directory.
//!
//! Durability: `synchronous=FULL`, so a commit is on disk when it returns;
//! callers group many mails into one transaction to pay one fsync per batch.
//! Several processes (serve, run-once, the CLI) share the file; writers wait
//! for each other through the busy timeout.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use mailrobot_core::{Decision, Lookups, ParsedMail, decide, parse};
use std::io::{Read, Write};

use rusqlite::{Connection, MAIN_DB, OptionalExtension, Transaction, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use crate::model::*;
use crate::schema::MIGRATIONS;
use crate::{ProcessingRules, Result, Store, StoreError};

pub struct SqliteStore {
    pub(crate) conn: Mutex<Connection>,
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl SqliteStore {
    /// Opens (creating if needed) `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let open_err = |source| StoreError::Open { path: path.display().to_string(), source };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(open_err)?;
        // Mails are stored whole: larger pages suit the blobs (only takes
        // effect when the file is created).
        conn.pragma_update(None, "page_size", 8192).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "cache_size", -8_192).map_err(open_err)?;
        conn.pragma_update(None, "temp_store", "MEMORY").map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        let store = Self { conn: Mutex::new(conn) };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::SchemaTooNew { found: version, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tracing::info!(migration = i + 1, "applying schema migration");
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (the open
        // transaction rolls back on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }
}

const MAILBOX_COLUMNS: &str = "id, name, kind, enabled, config, sealed_secret IS NOT NULL, poll_seconds, \
     max_message_bytes, status, last_error, consecutive_failures, last_poll_at, next_poll_at, created_at, connection_id, \
     throttled_until";

fn mailbox_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Mailbox> {
    let config: String = row.get(4)?;
    Ok(Mailbox {
        id: row.get(0)?,
        name: row.get(1)?,
        kind: row.get(2)?,
        enabled: row.get(3)?,
        config: serde_json::from_str(&config).unwrap_or(serde_json::Value::Null),
        has_secret: row.get(5)?,
        poll_seconds: row.get(6)?,
        max_message_bytes: row.get(7)?,
        status: row.get(8)?,
        last_error: row.get(9)?,
        consecutive_failures: row.get(10)?,
        last_poll_at: row.get(11)?,
        next_poll_at: row.get(12)?,
        created_at: row.get(13)?,
        connection_id: row.get(14)?,
        throttled_until: row.get(15)?,
    })
}

/// Stores bytes once under their SHA-256. Large contents are written through
/// SQLite's incremental blob I/O, so SQLite never holds its own copy of a
/// 30 MB mail in memory.
fn put_blob(tx: &Transaction<'_>, data: &[u8]) -> Result<String> {
    let sha = sha256_hex(data);
    let inserted = tx
        .prepare_cached("INSERT OR IGNORE INTO blobs (sha256, size, data) VALUES (?1, ?2, zeroblob(?2))")?
        .execute(params![sha, data.len() as i64])?;
    if inserted == 1 && !data.is_empty() {
        let rowid = tx.last_insert_rowid();
        let mut blob = tx.blob_open(MAIN_DB, c"blobs", c"data", rowid, false)?;
        blob.write_all(data).map_err(|e| StoreError::Corrupt(format!("writing blob {sha}: {e}")))?;
    }
    Ok(sha)
}

/// Reads a stored blob into one exactly-sized buffer.
fn read_blob(tx: &Transaction<'_>, rowid: i64, size: i64) -> Result<Vec<u8>> {
    let mut data = Vec::with_capacity(size.max(0) as usize);
    if size > 0 {
        let mut blob = tx.blob_open(MAIN_DB, c"blobs", c"data", rowid, true)?;
        blob.read_to_end(&mut data).map_err(|e| StoreError::Corrupt(format!("reading blob {rowid}: {e}")))?;
    }
    Ok(data)
}

/// One pending journal row, as read for processing.
struct Pending {
    journal_id: i64,
    mailbox_id: i64,
    remote_id: String,
    raw: Vec<u8>,
}

impl Store for SqliteStore {
    fn add_mailbox(&self, new: &NewMailbox) -> Result<Mailbox> {
        let id = self.write(|tx| {
            let exists: bool =
                tx.query_row("SELECT EXISTS(SELECT 1 FROM mailboxes WHERE name = ?1)", [&new.name], |r| r.get(0))?;
            if exists {
                return Err(StoreError::MailboxExists(new.name.clone()));
            }
            tx.execute(
                "INSERT INTO mailboxes (name, kind, config, sealed_secret, poll_seconds, max_message_bytes, created_at,
                 connection_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    new.name,
                    new.kind,
                    new.config.to_string(),
                    new.sealed_secret,
                    new.poll_seconds,
                    new.max_message_bytes,
                    now(),
                    new.connection_id
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })?;
        self.mailbox(id)
    }

    fn mailboxes(&self) -> Result<Vec<Mailbox>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes ORDER BY id"))?;
        let rows = stmt.query_map([], mailbox_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn mailbox_by_name(&self, name: &str) -> Result<Option<Mailbox>> {
        let conn = self.lock();
        Ok(conn
            .query_row(&format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE name = ?1"), [name], mailbox_from_row)
            .optional()?)
    }

    fn mailbox(&self, id: i64) -> Result<Mailbox> {
        let conn = self.lock();
        conn.query_row(&format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE id = ?1"), [id], mailbox_from_row)
            .optional()?
            .ok_or(StoreError::NoSuchMailbox(id))
    }

    fn mailbox_secret(&self, id: i64) -> Result<Option<Vec<u8>>> {
        let conn = self.lock();
        conn.query_row("SELECT sealed_secret FROM mailboxes WHERE id = ?1", [id], |r| r.get(0))
            .optional()?
            .ok_or(StoreError::NoSuchMailbox(id))
    }

    fn set_mailbox_enabled(&self, id: i64, enabled: bool) -> Result<()> {
        self.write(|tx| match tx.execute("UPDATE mailboxes SET enabled = ?2 WHERE id = ?1", params![id, enabled])? {
            0 => Err(StoreError::NoSuchMailbox(id)),
            _ => Ok(()),
        })
    }

    fn mailbox_sync_state(&self, id: i64) -> Result<Option<String>> {
        let conn = self.lock();
        Ok(conn.query_row("SELECT sync_state FROM mailboxes WHERE id = ?1", [id], |r| r.get(0)).optional()?.flatten())
    }

    fn set_mailbox_sync_state(&self, id: i64, state: Option<&str>) -> Result<()> {
        self.write(|tx| {
            tx.execute("UPDATE mailboxes SET sync_state = ?2 WHERE id = ?1", params![id, state])?;
            Ok(())
        })
    }

    fn remove_mailbox(&self, id: i64) -> Result<()> {
        // The journal keeps its rows (tickets refer to them): a removed
        // mailbox is only disabled and renamed out of the way.
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE mailboxes SET enabled = 0, name = name || ' (removed ' || ?2 || ')' WHERE id = ?1",
                params![id, now()],
            )?;
            if n == 0 { Err(StoreError::NoSuchMailbox(id)) } else { Ok(()) }
        })
    }

    fn record_poll(&self, id: i64, record: &PollRecord) -> Result<()> {
        self.write(|tx| {
            let status = record.outcome.status();
            let (error, failures) = match &record.outcome {
                PollOutcome::Ok => (None, "0"),
                PollOutcome::Failed { error } => (Some(error), "consecutive_failures + 1"),
                // Waiting for a person or for the server is no new failure.
                PollOutcome::Paused { error } => (Some(error), "consecutive_failures"),
                PollOutcome::Throttled { message } => (Some(message), "consecutive_failures"),
            };
            tx.execute(
                &format!(
                    "UPDATE mailboxes SET status = ?2, last_error = ?3, consecutive_failures = {failures},
                     last_poll_at = ?4, next_poll_at = ?5, throttled_until = ?6 WHERE id = ?1"
                ),
                params![id, status, error, now(), record.next_poll_at, record.throttled_until],
            )?;
            Ok(())
        })
    }

    fn known_remote_ids(&self, mailbox_id: i64, remote_ids: &[String]) -> Result<Vec<KnownMail>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT id, state, settled FROM messages WHERE mailbox_id = ?1 AND remote_id = ?2")?;
        let mut known = Vec::new();
        for remote_id in remote_ids {
            if let Some((journal_id, state, settled)) =
                stmt.query_row(params![mailbox_id, remote_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?
            {
                known.push(KnownMail { journal_id, remote_id: remote_id.clone(), state, settled });
            }
        }
        Ok(known)
    }

    fn journal(&self, mailbox_id: i64, mails: &[IncomingMail<'_>]) -> Result<usize> {
        if mails.is_empty() {
            return Ok(0);
        }
        self.write(|tx| {
            let fetched_at = now();
            let mut inserted = 0;
            for mail in mails {
                let exists: bool = tx
                    .prepare_cached("SELECT EXISTS(SELECT 1 FROM messages WHERE mailbox_id = ?1 AND remote_id = ?2)")?
                    .query_row(params![mailbox_id, mail.remote_id], |r| r.get(0))?;
                if exists {
                    continue;
                }
                let (sha, state) = match &mail.rejected {
                    None => (Some(put_blob(tx, mail.raw)?), "fetched"),
                    Some(_) => (None, "failed"),
                };
                tx.prepare_cached(
                    "INSERT INTO messages (mailbox_id, remote_id, raw_sha256, size, state, reason, fetched_at, processed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, CASE WHEN ?5 = 'failed' THEN ?7 END)",
                )?
                .execute(params![mailbox_id, mail.remote_id, sha, mail.size as i64, state, mail.rejected, fetched_at])?;
                inserted += 1;
            }
            Ok(inserted)
        })
    }

    fn process_pending(
        &self,
        mailbox_id: Option<i64>,
        limit: usize,
        max_bytes: u64,
        rules: &ProcessingRules,
    ) -> Result<Vec<ProcessedMail>> {
        self.write(|tx| {
            let pending = read_pending(tx, mailbox_id, limit, max_bytes)?;
            let processed_at = now();
            let mut results = Vec::with_capacity(pending.len());
            for mail in pending {
                results.push(process_one(tx, mail, rules, &processed_at)?);
            }
            Ok(results)
        })
    }

    fn unsettled(&self, mailbox_id: i64) -> Result<Vec<Unsettled>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, remote_id, state FROM messages
             WHERE mailbox_id = ?1 AND settled = 0 AND state <> 'fetched' ORDER BY id",
        )?;
        let rows = stmt
            .query_map([mailbox_id], |r| {
                let state: String = r.get(2)?;
                Ok(Unsettled {
                    journal_id: r.get(0)?,
                    remote_id: r.get(1)?,
                    settle_to: if state == "failed" { SettleTo::Failed } else { SettleTo::Processed },
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn mark_settled(&self, journal_ids: &[i64]) -> Result<()> {
        if journal_ids.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let at = now();
            let mut stmt = tx.prepare_cached("UPDATE messages SET settled = 1, settled_at = ?2 WHERE id = ?1")?;
            for id in journal_ids {
                stmt.execute(params![id, at])?;
            }
            Ok(())
        })
    }

    fn retry_failed(&self, mailbox_id: Option<i64>) -> Result<usize> {
        // Rows without raw bytes (refused before download) cannot be retried here.
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE messages SET state = 'fetched', reason = NULL
                 WHERE state = 'failed' AND raw_sha256 IS NOT NULL AND (?1 IS NULL OR mailbox_id = ?1)",
                [mailbox_id],
            )?)
        })
    }

    fn tickets(&self) -> Result<Vec<TicketSummary>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("{TICKET_SUMMARY_SQL} ORDER BY t.id"))?;
        let rows = stmt.query_map([], ticket_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn ticket(&self, id: i64) -> Result<Option<TicketDetail>> {
        let conn = self.lock();
        let Some(summary) =
            conn.query_row(&format!("{TICKET_SUMMARY_SQL} WHERE t.id = ?1"), [id], ticket_from_row).optional()?
        else {
            return Ok(None);
        };
        let mut entries_stmt = conn.prepare(
            "SELECT id, position, journal_id, message_id, from_addr, from_name, subject, kind, date,
                    text_body, html_body, created_at
             FROM ticket_entries WHERE ticket_id = ?1 ORDER BY position",
        )?;
        let mut attachments_stmt = conn.prepare(
            "SELECT filename, content_type, size, content_id, inline, blob_sha256
             FROM entry_attachments WHERE entry_id = ?1 ORDER BY position",
        )?;
        let mut entries = Vec::new();
        let rows = entries_stmt
            .query_map([id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    EntryView {
                        position: r.get(1)?,
                        journal_id: r.get(2)?,
                        message_id: r.get(3)?,
                        from: r.get(4)?,
                        from_name: r.get(5)?,
                        subject: r.get(6)?,
                        kind: r.get(7)?,
                        date: r.get(8)?,
                        text_body: r.get(9)?,
                        html_body: r.get(10)?,
                        attachments: Vec::new(),
                        created_at: r.get(11)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (entry_id, mut entry) in rows {
            entry.attachments = attachments_stmt
                .query_map([entry_id], |r| {
                    Ok(AttachmentView {
                        filename: r.get(0)?,
                        content_type: r.get(1)?,
                        size: r.get(2)?,
                        content_id: r.get(3)?,
                        inline: r.get(4)?,
                        sha256: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            entries.push(entry);
        }
        Ok(Some(TicketDetail { summary, entries }))
    }

    fn messages(&self, filter: &MessageFilter) -> Result<Vec<MessageView>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT m.id, b.name, m.remote_id, m.message_id, m.subject, m.from_addr, m.state, m.kind,
                    m.ticket_id, m.reason, m.size, m.raw_sha256, m.settled, m.fetched_at, m.processed_at
             FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
             WHERE (?1 IS NULL OR m.state = ?1) AND (?2 IS NULL OR m.mailbox_id = ?2)
             ORDER BY m.id",
        )?;
        let rows = stmt
            .query_map(params![filter.state, filter.mailbox_id], |r| {
                Ok(MessageView {
                    journal_id: r.get(0)?,
                    mailbox: r.get(1)?,
                    remote_id: r.get(2)?,
                    message_id: r.get(3)?,
                    subject: r.get(4)?,
                    from: r.get(5)?,
                    state: r.get(6)?,
                    kind: r.get(7)?,
                    ticket_id: r.get(8)?,
                    reason: r.get(9)?,
                    size: r.get(10)?,
                    raw_sha256: r.get(11)?,
                    settled: r.get(12)?,
                    fetched_at: r.get(13)?,
                    processed_at: r.get(14)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn counts(&self) -> Result<Counts> {
        let conn = self.lock();
        Ok(conn.query_row(
            "SELECT (SELECT COUNT(*) FROM tickets), COUNT(*),
                    COALESCE(SUM(state = 'fetched'), 0), COALESCE(SUM(state = 'processed'), 0),
                    COALESCE(SUM(state = 'failed'), 0), COALESCE(SUM(settled = 0 AND state <> 'fetched'), 0)
             FROM messages",
            [],
            |r| {
                Ok(Counts {
                    tickets: r.get(0)?,
                    messages: r.get(1)?,
                    fetched: r.get(2)?,
                    processed: r.get(3)?,
                    failed: r.get(4)?,
                    unsettled: r.get(5)?,
                })
            },
        )?)
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        let conn = self.lock();
        Ok(conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }
}

const TICKET_SUMMARY_SQL: &str = "SELECT t.id, t.subject, t.requester, t.requester_name, t.status,
        (SELECT COUNT(*) FROM ticket_entries e WHERE e.ticket_id = t.id), t.created_at, t.updated_at
     FROM tickets t";

fn ticket_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TicketSummary> {
    Ok(TicketSummary {
        id: r.get(0)?,
        subject: r.get(1)?,
        requester: r.get(2)?,
        requester_name: r.get(3)?,
        status: r.get(4)?,
        entries: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

fn read_pending(tx: &Transaction<'_>, mailbox_id: Option<i64>, limit: usize, max_bytes: u64) -> Result<Vec<Pending>> {
    let mut stmt = tx.prepare_cached(
        "SELECT m.id, m.mailbox_id, m.remote_id, b.id, b.size FROM messages m
         LEFT JOIN blobs b ON b.sha256 = m.raw_sha256
         WHERE m.state = 'fetched' AND (?1 IS NULL OR m.mailbox_id = ?1)
         ORDER BY m.id LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![mailbox_id, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut pending = Vec::with_capacity(rows.len());
    let mut bytes = 0u64;
    for (journal_id, mailbox_id, remote_id, blob_id, size) in rows {
        // Sizes are known before the blobs are read: stop before the budget.
        let size_bytes = size.unwrap_or(0).max(0) as u64;
        if !pending.is_empty() && bytes + size_bytes > max_bytes {
            break;
        }
        bytes += size_bytes;
        let raw = match blob_id {
            Some(blob_id) => read_blob(tx, blob_id, size.unwrap_or(0))?,
            None => Vec::new(),
        };
        pending.push(Pending { journal_id, mailbox_id, remote_id, raw });
    }
    Ok(pending)
}

/// Parses, decides and writes one mail inside the batch transaction. A mail
/// that cannot be parsed (or crashes the parser) is marked failed with the
/// reason; the batch goes on.
fn process_one(tx: &Transaction<'_>, mail: Pending, rules: &ProcessingRules, at: &str) -> Result<ProcessedMail> {
    let parsed = match catch_unwind(AssertUnwindSafe(|| parse(&mail.raw))) {
        Ok(Ok(parsed)) => parsed,
        Ok(Err(err)) => return fail(tx, mail, format!("cannot be read as an e-mail: {err}"), at),
        Err(_) => {
            return fail(tx, mail, "the parser crashed on this mail; kept for a later retry".to_string(), at);
        }
    };
    let lookups = lookups(tx, &parsed, mail.journal_id, rules)?;
    let decision = decide(&parsed, &lookups);
    let (kind, ticket_id, created_ticket) = match decision {
        Decision::Duplicate { ticket } => ("duplicate", ticket.map(|t| t as i64), false),
        Decision::Unmatched => (parsed.kind.as_str(), None, false),
        Decision::NewTicket => {
            let ticket = create_ticket(tx, &parsed, at)?;
            add_entry(tx, ticket, mail.journal_id, &parsed, at)?;
            (parsed.kind.as_str(), Some(ticket), true)
        }
        Decision::Append { ticket } => {
            add_entry(tx, ticket as i64, mail.journal_id, &parsed, at)?;
            (parsed.kind.as_str(), Some(ticket as i64), false)
        }
    };
    tx.prepare_cached(
        "UPDATE messages SET state = 'processed', kind = ?2, message_id = ?3, fingerprint = ?4, subject = ?5,
         from_addr = ?6, ticket_id = ?7, reason = NULL, attempts = attempts + 1, processed_at = ?8 WHERE id = ?1",
    )?
    .execute(params![
        mail.journal_id,
        kind,
        parsed.message_id,
        parsed.fingerprint,
        parsed.subject,
        parsed.from.as_ref().map(|a| a.email.as_str()),
        ticket_id,
        at
    ])?;
    Ok(ProcessedMail {
        journal_id: mail.journal_id,
        mailbox_id: mail.mailbox_id,
        remote_id: mail.remote_id,
        subject: Some(parsed.subject),
        state: "processed".into(),
        kind: Some(kind.into()),
        ticket_id,
        created_ticket,
        reason: None,
    })
}

fn fail(tx: &Transaction<'_>, mail: Pending, reason: String, at: &str) -> Result<ProcessedMail> {
    tracing::warn!(journal_id = mail.journal_id, remote_id = %mail.remote_id, %reason, "mail failed");
    tx.prepare_cached(
        "UPDATE messages SET state = 'failed', reason = ?2, attempts = attempts + 1, processed_at = ?3 WHERE id = ?1",
    )?
    .execute(params![mail.journal_id, reason, at])?;
    Ok(ProcessedMail {
        journal_id: mail.journal_id,
        mailbox_id: mail.mailbox_id,
        remote_id: mail.remote_id,
        subject: None,
        state: "failed".into(),
        kind: None,
        ticket_id: None,
        created_ticket: false,
        reason: Some(reason),
    })
}

fn lookups(tx: &Transaction<'_>, mail: &ParsedMail, journal_id: i64, rules: &ProcessingRules) -> Result<Lookups> {
    // An earlier processed copy with the same Message-ID and content.
    let duplicate_of = tx
        .prepare_cached(
            "SELECT ticket_id FROM messages WHERE fingerprint = ?1 AND message_id IS ?2
             AND state = 'processed' AND id <> ?3 ORDER BY id LIMIT 1",
        )?
        .query_row(params![mail.fingerprint, mail.message_id, journal_id], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .map(|t| t.map(|t| t as u64));

    let tag =
        rules.tag.find(&mail.subject).or_else(|| mail.original_subject.as_deref().and_then(|s| rules.tag.find(s)));
    let tagged_ticket = match tag {
        Some(id) => tx
            .prepare_cached("SELECT id FROM tickets WHERE id = ?1")?
            .query_row([id as i64], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|t| t as u64),
        None => None,
    };

    let mut thread_ticket = None;
    if tagged_ticket.is_none() {
        let mut stmt = tx.prepare_cached(
            "SELECT ticket_id FROM messages WHERE message_id = ?1 AND ticket_id IS NOT NULL ORDER BY id LIMIT 1",
        )?;
        for id in &mail.refers_to {
            if let Some(t) = stmt.query_row([id], |r| r.get::<_, i64>(0)).optional()? {
                thread_ticket = Some(t as u64);
                break;
            }
        }
    }
    Ok(Lookups { duplicate_of, tagged_ticket, thread_ticket })
}

fn create_ticket(tx: &Transaction<'_>, mail: &ParsedMail, at: &str) -> Result<i64> {
    let requester = mail.requester();
    let subject = mailrobot_core::subject::strip_reply_prefixes(&mail.subject);
    let subject = if subject.is_empty() { "(no subject)" } else { subject };
    tx.prepare_cached(
        "INSERT INTO tickets (subject, requester, requester_name, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
    )?
    .execute(params![
        subject,
        requester.map(|a| a.email.as_str()).filter(|e| !e.is_empty()),
        requester.and_then(|a| a.name.as_deref()),
        at
    ])?;
    Ok(tx.last_insert_rowid())
}

fn add_entry(tx: &Transaction<'_>, ticket: i64, journal_id: i64, mail: &ParsedMail, at: &str) -> Result<()> {
    let position: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(position), 0) + 1 FROM ticket_entries WHERE ticket_id = ?1")?
        .query_row([ticket], |r| r.get(0))?;
    tx.prepare_cached(
        "INSERT INTO ticket_entries (ticket_id, position, journal_id, kind, message_id, from_addr, from_name,
         subject, date, text_body, html_body, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        ticket,
        position,
        journal_id,
        mail.kind.as_str(),
        mail.message_id,
        mail.from.as_ref().map(|a| a.email.as_str()),
        mail.from.as_ref().and_then(|a| a.name.as_deref()),
        mail.subject,
        mail.date,
        mail.text_body,
        mail.html_body,
        at
    ])?;
    let entry_id = tx.last_insert_rowid();
    for (i, attachment) in mail.attachments.iter().enumerate() {
        let sha = put_blob(tx, &attachment.data)?;
        tx.prepare_cached(
            "INSERT INTO entry_attachments (entry_id, position, filename, content_type, content_id, inline, size, blob_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
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
    tx.prepare_cached("UPDATE tickets SET updated_at = ?2 WHERE id = ?1")?.execute(params![ticket, at])?;
    Ok(())
}
