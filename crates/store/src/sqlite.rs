//! The embedded store: one SQLite file in WAL mode in the data directory.
//!
//! Durability: `synchronous=FULL`, so a commit is on disk when it returns;
//! callers group many mails into one transaction to pay one fsync per batch.
//! Several processes (serve, run-once, the CLI) share the file; writers wait
//! for each other through the busy timeout.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use mailrobot_core::{Ledger, PendingMail};
use std::io::{Read, Write};

use rusqlite::{Connection, MAIN_DB, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::blob_codec::StoredText;
pub(crate) use crate::model::StatusChange;
use crate::model::*;
use crate::schema::MIGRATIONS;
use crate::sqlite_lease::check_fences;
use crate::sqlite_ledger::{SqliteLedger, pending_batch, read_pending};
use crate::{JournalState, ProcessingRules, Result, Store, StoreError, TicketStatus};

pub struct SqliteStore {
    /// The one connection that writes (and reads what writers read).
    pub(crate) conn: Mutex<Connection>,
    /// Read-only connections for the views (UI, API, metrics): in WAL mode
    /// they read committed data while the writer commits, so browsing never
    /// waits for ingestion's lock, nor ingestion for browsing.
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    /// The mailbox leases this process holds, when it takes leases.
    pub(crate) fences: crate::lease::Fences,
    /// Copies the WAL into the database beside the writer. Declared last:
    /// its connection closes last and leaves no WAL behind.
    checkpointer: crate::sqlite_checkpoint::Checkpointer,
}

/// Read-only connections per store.
const READERS: usize = 2;

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
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
        conn.pragma_update(None, "wal_autocheckpoint", crate::sqlite_checkpoint::BACKSTOP_PAGES).map_err(open_err)?;
        let mut store = Self {
            conn: Mutex::new(conn),
            readers: Vec::new(),
            next_reader: Default::default(),
            fences: Default::default(),
            checkpointer: crate::sqlite_checkpoint::Checkpointer::start(path)?,
        };
        store.migrate()?;
        for _ in 0..READERS {
            let reader = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(open_err)?;
            reader.busy_timeout(Duration::from_secs(30)).map_err(open_err)?;
            reader.pragma_update(None, "cache_size", -8_192).map_err(open_err)?;
            reader.pragma_update(None, "temp_store", "MEMORY").map_err(open_err)?;
            store.readers.push(Mutex::new(reader));
        }
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

    /// A read-only connection: a free one if any, else the next in turn.
    pub(crate) fn read(&self) -> std::sync::MutexGuard<'_, Connection> {
        for reader in &self.readers {
            if let Ok(guard) = reader.try_lock() {
                return guard;
            }
        }
        let i = self.next_reader.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.readers.len();
        self.readers[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        self.checkpointer.nudge();
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
pub(crate) fn put_blob(tx: &Transaction<'_>, data: &[u8]) -> Result<String> {
    put_blob_hashed(tx, data, raw_sha256(data), None)
}

/// [`put_blob`] for bytes whose SHA-256 ([`raw_sha256`]) the caller has,
/// and perhaps their compressed form ([`crate::blob_codec::pack`]), which is
/// stored instead.
pub(crate) fn put_blob_hashed(tx: &Transaction<'_>, data: &[u8], sha: String, packed: Option<&[u8]>) -> Result<String> {
    let (stored, codec) = match packed {
        Some(packed) => (packed, Some(crate::blob_codec::LZ4)),
        None => (data, None),
    };
    let inserted = tx
        .prepare_cached("INSERT OR IGNORE INTO blobs (sha256, size, data, codec) VALUES (?1, ?2, zeroblob(?3), ?4)")?
        .execute(params![sha, data.len() as i64, stored.len() as i64, codec])?;
    if inserted == 1 && !stored.is_empty() {
        let rowid = tx.last_insert_rowid();
        let mut blob = tx.blob_open(MAIN_DB, c"blobs", c"data", rowid, false)?;
        blob.write_all(stored).map_err(|e| StoreError::Corrupt(format!("writing blob {sha}: {e}")))?;
    }
    Ok(sha)
}

/// Reads a stored blob of `size` bytes (as stored with `codec`) into one
/// exactly-sized buffer.
pub(crate) fn read_blob(tx: &Transaction<'_>, rowid: i64, size: i64, codec: Option<&str>) -> Result<Vec<u8>> {
    let mut data = Vec::with_capacity(if codec.is_none() { size.max(0) as usize } else { 0 });
    if size > 0 {
        let mut blob = tx.blob_open(MAIN_DB, c"blobs", c"data", rowid, true)?;
        blob.read_to_end(&mut data).map_err(|e| StoreError::Corrupt(format!("reading blob {rowid}: {e}")))?;
    }
    crate::blob_codec::unpack(codec, data, size)
}

impl Store for SqliteStore {
    fn keeps_packed_mail(&self) -> bool {
        true
    }

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
        let conn = self.read();
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
            check_fences(&self.fences, tx, &[id])?;
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

    fn update_mailbox(&self, id: i64, update: &MailboxUpdate) -> Result<Mailbox> {
        self.write(|tx| {
            let changed = tx.execute(
                // A sync state (Graph deltaLink, EWS SyncState) belongs to the
                // folder it was made for: other settings start it over.
                "UPDATE mailboxes SET config = ?2, poll_seconds = ?3, max_message_bytes = ?4,
                 sealed_secret = COALESCE(?5, sealed_secret),
                 sync_state = CASE WHEN config = ?2 THEN sync_state END WHERE id = ?1",
                params![
                    id,
                    update.config.to_string(),
                    update.poll_seconds,
                    update.max_message_bytes,
                    update.sealed_secret
                ],
            )?;
            if changed == 0 { Err(StoreError::NoSuchMailbox(id)) } else { Ok(()) }
        })?;
        self.mailbox(id)
    }

    fn record_poll(&self, id: i64, record: &PollRecord) -> Result<()> {
        self.write(|tx| {
            check_fences(&self.fences, tx, &[id])?;
            let status = record.outcome.status();
            let (error, failures) = (record.outcome.error(), record.outcome.failures_sql());
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

    fn push_subscription(&self, mailbox_id: i64) -> Result<Option<PushSubscription>> {
        let conn = self.lock();
        let sql = format!("SELECT {PUSH_SUBSCRIPTION_COLUMNS} FROM push_subscriptions WHERE mailbox_id = ?1");
        Ok(conn.query_row(&sql, [mailbox_id], push_subscription_row).optional()?)
    }

    fn push_subscription_by_id(&self, subscription_id: &str) -> Result<Option<PushSubscription>> {
        let conn = self.lock();
        let sql = format!("SELECT {PUSH_SUBSCRIPTION_COLUMNS} FROM push_subscriptions WHERE subscription_id = ?1");
        Ok(conn.query_row(&sql, [subscription_id], push_subscription_row).optional()?)
    }

    fn save_push_subscription(&self, s: &PushSubscription) -> Result<()> {
        self.write(|tx| {
            check_fences(&self.fences, tx, &[s.mailbox_id])?;
            // A subscription id names one mailbox: a stale row naming it goes.
            tx.execute(
                "DELETE FROM push_subscriptions WHERE subscription_id = ?1 AND mailbox_id <> ?2",
                params![s.subscription_id, s.mailbox_id],
            )?;
            tx.execute(
                "INSERT INTO push_subscriptions (mailbox_id, subscription_id, sealed_client_state, notification_url,
                                                 watching, expires_at, created_at, renewed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (mailbox_id) DO UPDATE SET subscription_id = excluded.subscription_id,
                     sealed_client_state = excluded.sealed_client_state, notification_url = excluded.notification_url,
                     watching = excluded.watching, expires_at = excluded.expires_at, created_at = excluded.created_at,
                     renewed_at = excluded.renewed_at",
                params![
                    s.mailbox_id,
                    s.subscription_id,
                    s.sealed_client_state,
                    s.notification_url,
                    s.watching,
                    s.expires_at,
                    s.created_at,
                    s.renewed_at
                ],
            )?;
            Ok(())
        })
    }

    fn forget_push_subscription(&self, mailbox_id: i64) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM push_subscriptions WHERE mailbox_id = ?1", [mailbox_id])?;
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
            check_fences(&self.fences, tx, &[mailbox_id])?;
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
                    None => (
                        Some(put_blob_hashed(tx, mail.raw, mail.raw_sha256(), mail.packed.as_deref())?),
                        JournalState::Fetched,
                    ),
                    Some(_) => (None, JournalState::Failed),
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

    fn journal_and_file(
        &self,
        mailbox_id: i64,
        mails: &[IncomingMail<'_>],
        parses: ParsesLater<'_>,
        rules: &ProcessingRules,
    ) -> Result<Vec<ProcessedMail>> {
        // Waited for before the write lock: a parse takes longer than
        // storing the bytes, and other writers (settling) need the lock.
        let parses = parses();
        if mails.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            check_fences(&self.fences, tx, &[mailbox_id])?;
            let mut journaled = std::collections::HashSet::new();
            for mail in mails {
                let exists: bool = tx
                    .prepare_cached("SELECT EXISTS(SELECT 1 FROM messages WHERE mailbox_id = ?1 AND remote_id = ?2)")?
                    .query_row(params![mailbox_id, mail.remote_id], |r| r.get(0))?;
                if exists {
                    journaled.insert(mail.remote_id.clone());
                }
            }
            let new = crate::process::new_mails(mails, journaled);
            // Ids drawn as SQLite would (the writer lock is held): rows are
            // written only when filing records each outcome.
            let first_id: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM messages", [], |r| r.get(0))?;
            let mut ledger = SqliteLedger::new(tx, now());
            let mut fresh = Vec::with_capacity(new.len());
            for (journal_id, mail) in (first_id..).zip(new.into_iter().map(|i| &mails[i])) {
                if let Some(reason) = &mail.rejected {
                    tx.prepare_cached(
                        "INSERT INTO messages (id, mailbox_id, remote_id, size, state, reason, fetched_at, processed_at)
                         VALUES (?1, ?2, ?3, ?4, 'failed', ?5, ?6, ?6)",
                    )?
                    .execute(params![journal_id, mailbox_id, mail.remote_id, mail.size as i64, reason, ledger.at])?;
                    continue;
                }
                let raw_sha256 = put_blob_hashed(tx, mail.raw, mail.raw_sha256(), mail.packed.as_deref())?;
                let row =
                    FreshRow { mailbox_id, remote_id: mail.remote_id.clone(), raw_sha256, size: mail.size as i64 };
                ledger.fresh.insert(journal_id, row);
                fresh.push((journal_id, mail));
            }
            let processed = crate::process::file_fresh(&mut ledger, mailbox_id, fresh, parses, rules)?;
            crate::process::check_all_written(&ledger.fresh)?;
            Ok(processed)
        })
    }

    fn pending_batch_bytes(&self, mailbox_id: Option<i64>, limit: usize, max_bytes: u64) -> Result<Option<u64>> {
        let batch = pending_batch(&self.read(), mailbox_id, limit, max_bytes)?;
        Ok((!batch.is_empty()).then(|| batch.iter().map(|row| row.size as u64).sum()))
    }

    fn pending_mails(&self, mailbox_id: Option<i64>, limit: usize, max_bytes: u64) -> Result<Vec<PendingMail>> {
        // A read transaction: one consistent view while the blobs are read,
        // and no write lock held against other processes.
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        read_pending(&tx, mailbox_id, limit, max_bytes)
    }

    fn with_ledger_for(
        &self,
        mailboxes: &[i64],
        work: &mut dyn FnMut(&mut dyn Ledger<Error = StoreError>) -> Result<()>,
    ) -> Result<()> {
        self.write(|tx| {
            check_fences(&self.fences, tx, mailboxes)?;
            work(&mut SqliteLedger::new(tx, now()))
        })
    }

    fn unsettled(&self, mailbox_id: i64) -> Result<Vec<Unsettled>> {
        // Committed outcomes only, read beside the writer: settling does not
        // wait for the next batch's transaction.
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, remote_id, state FROM messages
             WHERE mailbox_id = ?1 AND settled = 0 AND state <> 'fetched' ORDER BY id",
        )?;
        let rows = stmt
            .query_map([mailbox_id], |r| {
                let state: JournalState = r.get(2)?;
                Ok(Unsettled {
                    journal_id: r.get(0)?,
                    remote_id: r.get(1)?,
                    settle_to: if state == JournalState::Failed { SettleTo::Failed } else { SettleTo::Processed },
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
            if self.fences.is_enabled() {
                let mut mailboxes = Vec::new();
                let mut stmt = tx.prepare_cached("SELECT mailbox_id FROM messages WHERE id = ?1")?;
                for id in journal_ids {
                    if let Some(mailbox) = stmt.query_row([id], |r| r.get::<_, i64>(0)).optional()? {
                        mailboxes.push(mailbox);
                    }
                }
                mailboxes.sort_unstable();
                mailboxes.dedup();
                check_fences(&self.fences, tx, &mailboxes)?;
            }
            let at = now();
            let mut stmt = tx.prepare_cached("UPDATE messages SET settled = 1, settled_at = ?2 WHERE id = ?1")?;
            for id in journal_ids {
                stmt.execute(params![id, at])?;
            }
            Ok(())
        })
    }

    fn retry_message(&self, journal_id: i64) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE messages SET state = 'fetched', reason = NULL
                 WHERE id = ?1 AND state = 'failed' AND raw_sha256 IS NOT NULL",
                [journal_id],
            )? > 0)
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
        let conn = self.read();
        let mut stmt = conn.prepare(&format!("{TICKET_SUMMARY_SQL} ORDER BY t.id"))?;
        let rows = stmt.query_map([], ticket_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn ticket(&self, id: i64) -> Result<Option<TicketDetail>> {
        let conn = self.read();
        let Some(summary) =
            conn.query_row(&format!("{TICKET_SUMMARY_SQL} WHERE t.id = ?1"), [id], ticket_from_row).optional()?
        else {
            return Ok(None);
        };
        let mut entries_stmt = conn.prepare(
            "SELECT e.id, e.position, e.journal_id, e.message_id, e.from_addr, e.from_name, e.subject, e.kind,
                    e.date, e.text_body, e.html_body, e.created_at, e.new_text, m.answer, m.rules
             FROM ticket_entries e LEFT JOIN messages m ON m.id = e.journal_id
             WHERE e.ticket_id = ?1 ORDER BY e.position",
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
                        text_body: r.get::<_, StoredText>(9)?.0,
                        new_text: r.get::<_, Option<StoredText>>(12)?.map(|t| t.0),
                        html_body: r.get::<_, Option<StoredText>>(10)?.map(|t| t.0),
                        attachments: Vec::new(),
                        created_at: r.get(11)?,
                        answer: r.get(13)?,
                        rules: r.get(14)?,
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

    fn search_tickets(&self, query: &TicketQuery) -> Result<Vec<TicketSummary>> {
        let conn = self.read();
        // LIKE with its wildcards escaped: the words are looked for as typed.
        let pattern = query.text.as_deref().map(like_pattern);
        let mut stmt = conn.prepare_cached(&format!(
            "{TICKET_SUMMARY_SQL}
             WHERE (?1 IS NULL OR t.subject LIKE ?1 ESCAPE '\\' OR t.requester LIKE ?1 ESCAPE '\\'
                    OR t.requester_name LIKE ?1 ESCAPE '\\' OR t.id = ?2)
               AND (?3 IS NULL OR t.status = ?3)
               AND (?4 IS NULL OR EXISTS (SELECT 1 FROM ticket_entries e JOIN messages m ON m.id = e.journal_id
                                          WHERE e.ticket_id = t.id AND m.mailbox_id = ?4))
               AND (?5 IS NULL OR t.id < ?5)
             ORDER BY t.id DESC LIMIT ?6"
        ))?;
        let rows = stmt
            .query_map(
                params![pattern, query.number, query.status, query.mailbox_id, query.before_id, query.limit as i64],
                ticket_from_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn set_ticket_status(&self, id: i64, status: TicketStatus) -> Result<bool> {
        self.write(|tx| Ok(change_ticket_status(tx, id, status)? != StatusChange::NoTicket))
    }

    fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        let mut conn = self.read();
        let tx = conn.transaction()?;
        let Some((rowid, size, codec)) = tx
            .query_row("SELECT id, size, codec FROM blobs WHERE sha256 = ?1", [sha256], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, Option<String>>(2)?))
            })
            .optional()?
        else {
            return Ok(None);
        };
        Ok(Some(read_blob(&tx, rowid, size, codec.as_deref())?))
    }

    fn message_raw(&self, journal_id: i64) -> Result<Option<Vec<u8>>> {
        let sha: Option<String> = {
            let conn = self.read();
            conn.query_row("SELECT raw_sha256 FROM messages WHERE id = ?1", [journal_id], |r| r.get(0))
                .optional()?
                .flatten()
        };
        match sha {
            Some(sha) => self.blob(&sha),
            None => Ok(None),
        }
    }

    fn messages(&self, filter: &MessageFilter) -> Result<Vec<MessageView>> {
        let conn = self.read();
        let order = if filter.page.is_some() { "DESC" } else { "ASC" };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT m.id, b.name, m.remote_id, m.message_id, m.subject, m.from_addr, m.state, m.kind,
                    m.ticket_id, m.reason, m.size, m.raw_sha256, m.settled, m.fetched_at, m.processed_at, m.answer, m.rules
             FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
             WHERE (?1 IS NULL OR m.state = ?1) AND (?2 IS NULL OR m.mailbox_id = ?2) AND (?3 IS NULL OR m.id < ?3)
             ORDER BY m.id {order} LIMIT ?4"
        ))?;
        let (before, limit) = match filter.page {
            Some(page) => (page.before_id, page.limit as i64),
            None => (None, -1),
        };
        let rows = stmt
            .query_map(params![filter.state, filter.mailbox_id, before, limit], |r| {
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
                    answer: r.get(15)?,
                    rules: r.get(16)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn counts(&self) -> Result<Counts> {
        let conn = self.read();
        Ok(conn.query_row(
            // Each count over its own (partial) index; processed is the rest.
            "SELECT (SELECT COUNT(*) FROM tickets), total, fetched, total - fetched - failed, failed, unsettled
             FROM (SELECT (SELECT COUNT(*) FROM messages) AS total,
                          (SELECT COUNT(*) FROM messages WHERE state = 'fetched') AS fetched,
                          (SELECT COUNT(*) FROM messages WHERE state = 'failed') AS failed,
                          (SELECT COUNT(*) FROM messages WHERE settled = 0 AND state <> 'fetched') AS unsettled)",
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

    fn mailbox_counts(&self, since: &str) -> Result<Vec<MailboxCounts>> {
        let conn = self.read();
        // Three counts, each over its own index: today's rows, the pending
        // rows and the failed ones are few next to the whole journal.
        let mut counts: std::collections::BTreeMap<i64, MailboxCounts> = std::collections::BTreeMap::new();
        let mut add = |sql: &str, param: Option<&str>, set: fn(&mut MailboxCounts, i64)| -> Result<()> {
            let mut stmt = conn.prepare_cached(sql)?;
            let rows =
                stmt.query_map(rusqlite::params_from_iter(param), |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (mailbox_id, n) = row?;
                set(counts.entry(mailbox_id).or_insert(MailboxCounts { mailbox_id, ..Default::default() }), n);
            }
            Ok(())
        };
        add(
            "SELECT mailbox_id, COUNT(*) FROM messages INDEXED BY messages_fetched_at WHERE fetched_at >= ?1
             GROUP BY mailbox_id",
            Some(since),
            |c, n| c.fetched_since = n,
        )?;
        add("SELECT mailbox_id, COUNT(*) FROM messages WHERE state = 'fetched' GROUP BY mailbox_id", None, |c, n| {
            c.waiting = n
        })?;
        add("SELECT mailbox_id, COUNT(*) FROM messages WHERE state = 'failed' GROUP BY mailbox_id", None, |c, n| {
            c.failed = n
        })?;
        Ok(counts.into_values().collect())
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

pub(crate) const TICKET_SUMMARY_SQL: &str = "SELECT t.id, t.subject, t.requester, t.requester_name, t.status,
        (SELECT COUNT(*) FROM ticket_entries e WHERE e.ticket_id = t.id), t.created_at, t.updated_at,
        t.category, t.priority, t.queue, t.assignee, t.tags
     FROM tickets t";

pub(crate) fn ticket_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TicketSummary> {
    Ok(TicketSummary {
        fields: mailrobot_core::TicketFields {
            category: r.get(8)?,
            priority: r.get(9)?,
            queue: r.get(10)?,
            assignee: r.get(11)?,
            tags: tags_from_json(r.get(12)?),
        },
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

/// Sets a ticket's status and, when it changed, queues the webhook event in
/// the same transaction.
pub(crate) fn change_ticket_status(tx: &Transaction<'_>, id: i64, status: TicketStatus) -> Result<StatusChange> {
    let Some(previous) =
        tx.query_row("SELECT status FROM tickets WHERE id = ?1", [id], |r| r.get::<_, TicketStatus>(0)).optional()?
    else {
        return Ok(StatusChange::NoTicket);
    };
    if previous == status {
        return Ok(StatusChange::Unchanged);
    }
    let at = now();
    tx.execute("UPDATE tickets SET status = ?2, updated_at = ?3 WHERE id = ?1", params![id, status, at])?;
    crate::sqlite_outbox::enqueue_event(tx, crate::WebhookEvent::TicketStatusChanged, || {
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

fn push_subscription_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PushSubscription> {
    Ok(PushSubscription {
        mailbox_id: r.get(0)?,
        subscription_id: r.get(1)?,
        sealed_client_state: r.get(2)?,
        notification_url: r.get(3)?,
        watching: r.get(4)?,
        expires_at: r.get(5)?,
        created_at: r.get(6)?,
        renewed_at: r.get(7)?,
    })
}
