//! The PostgreSQL store: several robot nodes share one database.
//!
//! The same traits as [`crate::SqliteStore`], the same tables and columns
//! ([`crate::schema::PG_MIGRATIONS`]), and no decision of its own: ticket
//! rules run in core through [`mailrobot_core::Ledger`].
//!
//! Concurrency: write transactions take one transaction-scoped advisory lock
//! ([`WRITE_LOCK`]), so writers follow each other as on SQLite and every
//! read-then-write (a ticket's next entry position, a name checked before it
//! is inserted) sees what the writer before it committed, on every node.
//! The writes one mailbox's lease holder alone makes (journal, settle
//! records, poll records, sync state) are the exception
//! ([`PgStore::write_for_mailbox`]): they lock their lease row instead, so
//! nodes journal side by side while another files. Lease bookkeeping
//! (registering, heartbeats, taking and freeing leases) takes a lock of its
//! own ([`LEASE_LOCK`]): it plans from every lease and must follow other
//! bookkeeping, not the filing of mail, so a node joining a busy cluster
//! is not queued behind every batch the others file. Reads take no lock. A
//! node stopped mid-transaction (SIGSTOP) cannot hold a lock for ever: the
//! session is ended after `idle_in_transaction_session_timeout`.

mod admin;
mod auth;
mod directory;
mod lease;
mod ledger;
mod outbox;
mod rows;
mod sealed;
mod store;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::Poll;
use std::time::Duration;

use futures::SinkExt;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use crate::schema::PG_MIGRATIONS;
use crate::{Result, StoreError};
use lease::check_fences;
use tls::{DatabaseUrl, MakeRustlsConnect};

pub(crate) use crate::sqlite::now;

/// The advisory lock key every write transaction takes ("mailrobt").
const WRITE_LOCK: i64 = 0x6d61_696c_726f_6274;
/// The advisory lock key lease bookkeeping takes ("maillea5"), instead of
/// [`WRITE_LOCK`]: a takeover still waits for the writes fenced by the
/// lease, which lock its row.
const LEASE_LOCK: i64 = 0x6d61_696c_6c65_6135;
/// The advisory lock key migrations take, so nodes starting together apply
/// each migration once.
const MIGRATION_LOCK: i64 = 0x6d61_696c_6d69_6772;

/// Sessions per node, at most, opened as needed, unless the node is given
/// another number ([`PgStore::connect_with_sessions`]): one writer at a time
/// holds or waits for [`WRITE_LOCK`] ([`PgStore::write`]); raw-mail writes
/// beside it and readers (UI, API, polls) share the rest, each a few
/// milliseconds. More only queue inside the server, and each new session
/// costs it its start-up and caches of its own: with 12 a node, three nodes
/// started on 10,000 waiting mails spent 9 % more of the machine's CPU per
/// mail than with 4 (one node alone about the same).
pub const DEFAULT_SESSIONS: u32 = 4;

/// The fewest sessions a node works with: the writer's and one for
/// everything else.
pub const MIN_SESSIONS: u32 = 2;

/// The runtime that drives every session's socket, on a thread of its own.
///
/// The store's traits are blocking, and are called from plain threads and
/// from async tasks alike (as SQLite's are). A tokio runtime cannot be
/// blocked on from inside another, so the sessions live here and callers
/// wait for their answers with [`wait`], which blocks only the calling thread.
fn sessions_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mailrobot-postgres")
            .enable_all()
            .build()
            .expect("a runtime for the PostgreSQL sessions")
    })
}

/// Waits for a session's answer on the calling thread.
fn wait<F: Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

/// Opens a session; its socket is driven by [`sessions_runtime`].
pub(crate) fn connect(config: &tokio_postgres::Config, tls: &MakeRustlsConnect) -> Result<tokio_postgres::Client> {
    let config = config.clone();
    let tls = tls.clone();
    let task = sessions_runtime().spawn(async move {
        let (client, connection) = config.connect(tls).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "a PostgreSQL session ended");
            }
        });
        Ok::<_, tokio_postgres::Error>(client)
    });
    wait(task).map_err(|e| StoreError::Unavailable(format!("connecting: {e}")))?.map_err(StoreError::from)
}

/// Runs SQL statements (no parameters) on a session of their own: for
/// tools and tests that work beside the store.
pub fn execute_batch(url: &str, sql: &str) -> Result<()> {
    let (config, tls) = parse_url(url)?;
    let client = connect(&config, &tls)?;
    Ok(wait(client.batch_execute(sql))?)
}

/// Every row of `table` in COPY's binary format (text as its bytes, bytea
/// raw): what a search of the database's bytes reads.
pub fn copy_out_table(url: &str, table: &str) -> Result<Vec<u8>> {
    let (config, tls) = parse_url(url)?;
    let client = connect(&config, &tls)?;
    let stream = wait(client.copy_out(&format!("COPY {table} TO STDOUT (FORMAT binary)")))?;
    let pieces: Vec<bytes::Bytes> = wait(futures::TryStreamExt::try_collect(stream))?;
    Ok(pieces.concat())
}

/// The names of the tables in the robot's schema.
pub fn table_names(url: &str) -> Result<Vec<String>> {
    let (config, tls) = parse_url(url)?;
    let client = connect(&config, &tls)?;
    let rows = wait(client.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", &[]))?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// A database session with the statements it has prepared: the hot paths
/// (journal, ledger) run the same few statements thousands of times, and a
/// prepared statement saves one round trip each.
pub struct PgConn {
    client: tokio_postgres::Client,
    statements: HashMap<String, Statement>,
}

pub(crate) struct Manager {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = StoreError;

    fn connect(&self) -> Result<PgConn> {
        Ok(PgConn { client: connect(&self.config, &self.tls)?, statements: HashMap::new() })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<()> {
        Ok(wait(conn.client.simple_query("")).map(|_| ())?)
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed()
    }
}

pub struct PgStore {
    pool: r2d2::Pool<Manager>,
    /// The mailbox leases this process holds, when it takes leases.
    pub(crate) fences: crate::lease::Fences,
    /// Held by the one thread of this process whose write transaction
    /// takes (or waits for) [`WRITE_LOCK`]: see [`PgStore::write`].
    writer: WriterTurn,
}

/// How long a writer waits for a lock: in the server (`lock_timeout`), and
/// in the process for its turn ([`WriterTurn`]). Past it the write fails as
/// the database being busy (transient: a poll tries again later).
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The turn of this process's writers: one at a time, each waiting at most
/// [`LOCK_WAIT`], as it would for the lock in the server.
#[derive(Debug, Default)]
struct WriterTurn {
    taken: std::sync::Mutex<bool>,
    freed: std::sync::Condvar,
}

/// A writer's turn, given back when dropped (also when its work panics).
struct Turn<'a>(&'a WriterTurn);

impl WriterTurn {
    /// Waits for the turn, at most `within`; None if it did not come.
    fn take(&self, within: Duration) -> Option<Turn<'_>> {
        let deadline = std::time::Instant::now() + within;
        let mut taken = self.taken.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while *taken {
            let left = deadline.checked_duration_since(std::time::Instant::now()).filter(|d| !d.is_zero())?;
            taken = self.freed.wait_timeout(taken, left).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
        }
        *taken = true;
        Some(Turn(self))
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.0.taken.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = false;
        self.0.freed.notify_one();
    }
}

/// `url` with its password replaced by `***`: what logs and errors show.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(a database URL that does not parse)".to_string(),
    }
}

/// The driver's configuration and the TLS connector for `url` (see
/// [`tls`]: `sslmode` as libpq reads it).
pub(crate) fn parse_url(url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect)> {
    let open_err = |reason: String| StoreError::OpenDatabase { url: redacted_url(url), reason };
    let parsed = DatabaseUrl::parse(url).map_err(open_err)?;
    let tls = parsed.tls().map_err(open_err)?;
    Ok((parsed.config, tls))
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`, with
    /// libpq's `sslmode` and `sslrootcert` if given) and brings the schema
    /// up to date; at most [`DEFAULT_SESSIONS`] sessions.
    pub fn connect(url: &str) -> Result<Self> {
        Self::connect_with_sessions(url, DEFAULT_SESSIONS)
    }

    /// [`PgStore::connect`], opening at most `sessions` sessions (at least
    /// [`MIN_SESSIONS`]).
    pub fn connect_with_sessions(url: &str, sessions: u32) -> Result<Self> {
        let open_err = |reason: String| StoreError::OpenDatabase { url: redacted_url(url), reason };
        let (mut config, tls) = parse_url(url)?;
        config.application_name("mailrobot");
        config.connect_timeout(Duration::from_secs(10));
        // A node paused inside a transaction (SIGSTOP, a VM migration) loses
        // its session, and with it the write lock and any row lock it held.
        config
            .options(format!("-c idle_in_transaction_session_timeout=3000 -c lock_timeout={}", LOCK_WAIT.as_millis()));
        // The first session is opened here, so a wrong URL or password is
        // told at once, not after the pool's retries.
        let first = r2d2::ManageConnection::connect(&Manager { config: config.clone(), tls: tls.clone() })
            .map_err(|e| open_err(e.to_string()))?;
        let pool = r2d2::Pool::builder()
            .max_size(sessions.max(MIN_SESSIONS))
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(30))
            .error_handler(Box::new(r2d2::LoggingErrorHandler))
            .build_unchecked(Manager { config, tls });
        drop(first);
        let store = Self { pool, fences: Default::default(), writer: Default::default() };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = wait(conn.client.transaction())?;
        wait(tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]))?;
        wait(tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)"))?;
        let version: i64 = match wait(tx.query_opt("SELECT version FROM schema_version", &[]))? {
            Some(row) => row.try_get(0)?,
            None => {
                wait(tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[]))?;
                0
            }
        };
        let known = PG_MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::SchemaTooNew { found: version, known });
        }
        for (i, sql) in PG_MIGRATIONS.iter().enumerate().skip(version as usize) {
            tracing::info!(migration = i + 1, "applying PostgreSQL schema migration");
            wait(tx.batch_execute(sql))?;
            wait(tx.execute("UPDATE schema_version SET version = $1", &[&((i + 1) as i64)]))?;
        }
        wait(tx.commit())?;
        Ok(())
    }

    pub(crate) fn conn(&self) -> Result<r2d2::PooledConnection<Manager>> {
        self.pool.get().map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Runs `f` in a write transaction holding [`WRITE_LOCK`]; commits when it
    /// returns `Ok`.
    ///
    /// The writers of one process queue here first, so at most one of its
    /// sessions waits for the lock in the server: the others would only wait
    /// behind it, each holding a session the process's reads and raw-mail
    /// writes could use, and a busy node opened a dozen (a new session costs
    /// the server its start-up and its own catalog and statement caches).
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut PgTx<'_>) -> Result<T>) -> Result<T> {
        let Some(_turn) = self.writer.take(LOCK_WAIT) else {
            return Err(StoreError::Unavailable(format!(
                "this node's writes waited over {} s for their turn: another of its writes holds or waits \
                 for the write lock (a node or session of the database keeps it)",
                LOCK_WAIT.as_secs()
            )));
        };
        self.transaction_holding(WRITE_LOCK, f)
    }

    /// Runs `f` in a write transaction holding [`LEASE_LOCK`] (not
    /// [`WRITE_LOCK`]); commits when it returns `Ok`.
    pub(crate) fn write_leases<T>(&self, f: impl FnOnce(&mut PgTx<'_>) -> Result<T>) -> Result<T> {
        self.transaction_holding(LEASE_LOCK, f)
    }

    /// Runs `f` in a read-write transaction that first takes the
    /// transaction-scoped advisory lock `key`.
    fn transaction_holding<T>(&self, key: i64, f: impl FnOnce(&mut PgTx<'_>) -> Result<T>) -> Result<T> {
        self.transaction(|tx| {
            tx.exec("SELECT pg_advisory_xact_lock($1)", &[&key])?;
            f(tx)
        })
    }

    /// Runs `f` in a read-write transaction; commits when it returns `Ok`
    /// (its deferred writes waited for first).
    fn transaction<T>(&self, f: impl FnOnce(&mut PgTx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn()?;
        let PgConn { client, statements } = &mut *conn;
        let transaction = wait(client.transaction())?;
        let value = {
            let mut tx = PgTx::new(&transaction, statements);
            let value = f(&mut tx)?;
            tx.flush()?;
            value
        };
        wait(transaction.commit())?;
        Ok(value)
    }

    /// Runs `f` in a write transaction for writes only the holder of
    /// `mailboxes`' leases makes, without [`WRITE_LOCK`]: the lease rows are
    /// locked instead ([`check_fences`]), so a takeover waits for this
    /// transaction and one committed before it is seen. `f` must not read
    /// what other writers change (it may run beside them); it runs again when
    /// the server broke a deadlock by ending this transaction (two nodes
    /// storing the same attachment or mail bytes in a different order).
    pub(crate) fn write_for_mailbox<T>(
        &self,
        mailboxes: &[i64],
        mut f: impl FnMut(&mut PgTx<'_>) -> Result<T>,
    ) -> Result<T> {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        loop {
            let result = self.transaction(|tx| {
                check_fences(&self.fences, tx, mailboxes)?;
                f(tx)
            });
            match result {
                Err(StoreError::Postgres(e))
                    if attempt < ATTEMPTS
                        && e.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
                {
                    tracing::debug!(attempt, error = %e, "a mailbox's write was ended to break a deadlock; again");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Runs `f` in a read-only transaction: one consistent view, no lock.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&mut PgTx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn()?;
        let PgConn { client, statements } = &mut *conn;
        let transaction = wait(
            client
                .build_transaction()
                .read_only(true)
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .start(),
        )?;
        let value = f(&mut PgTx::new(&transaction, statements))?;
        wait(transaction.commit())?;
        Ok(value)
    }
}

/// A statement parameter a deferred write owns until it is done.
pub(crate) type OwnedParam = Box<dyn ToSql + Sync + Send>;

/// A write sent and not waited for yet.
type InFlight<'t> = Pin<Box<dyn Future<Output = std::result::Result<u64, tokio_postgres::Error>> + 't>>;

/// Writes in flight are waited for once this many are, or once they carry
/// this many bytes (bodies, attachments), so a batch's copies stay small.
const MAX_IN_FLIGHT: usize = 1_000;
const MAX_IN_FLIGHT_BYTES: usize = 2 << 20;

/// One transaction with its session's prepared statements.
///
/// A round trip to the server costs about 90 µs on these machines, a
/// pipelined statement about 6 µs (`examples/pg_round_trip.rs`): a write
/// whose answer nothing needs ([`PgTx::defer`]) is sent at once and not
/// waited for, so the server runs it while the node prepares the next one.
/// The server runs statements in the order they were sent, so every read
/// sees the writes before it. Writes are waited for with the next read, or
/// at the latest before commit; the first error among them is the one
/// returned, and the transaction is rolled back as with any error.
pub(crate) struct PgTx<'t> {
    tx: &'t tokio_postgres::Transaction<'t>,
    statements: &'t mut HashMap<String, Statement>,
    in_flight: Vec<InFlight<'t>>,
    in_flight_bytes: usize,
}

impl<'t> PgTx<'t> {
    fn new(tx: &'t tokio_postgres::Transaction<'t>, statements: &'t mut HashMap<String, Statement>) -> Self {
        Self { tx, statements, in_flight: Vec::new(), in_flight_bytes: 0 }
    }

    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        // Behind the writes in flight: a failed one's error is the one told.
        let tx = self.tx;
        let statement = self.after_in_flight(tx.prepare(sql))?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Sends a write and goes on without its answer. `bytes`: roughly what
    /// its parameters hold (bodies, attachment data).
    pub(crate) fn defer(&mut self, sql: &str, params: Vec<OwnedParam>, bytes: usize) -> Result<()> {
        let statement = self.statement(sql)?;
        let tx = self.tx;
        let mut write: InFlight<'t> = Box::pin(async move {
            tx.execute_raw(&statement, params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync))).await
        });
        // The first poll encodes the statement and queues it on the session;
        // only a statement that cannot be encoded is done at once.
        match write.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            Poll::Pending => self.in_flight.push(write),
            Poll::Ready(done) => {
                done?;
            }
        }
        self.in_flight_bytes += bytes;
        if self.in_flight.len() >= MAX_IN_FLIGHT || self.in_flight_bytes >= MAX_IN_FLIGHT_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Waits for the writes in flight.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.in_flight.is_empty() {
            return Ok(());
        }
        self.after_in_flight(async { Ok(()) })
    }

    /// Waits for the writes in flight, then for `last` (sent when first
    /// polled, after them). The first error in order is the one returned,
    /// since a failed statement aborts those after it.
    fn after_in_flight<T>(
        &mut self,
        last: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        let in_flight = std::mem::take(&mut self.in_flight);
        self.in_flight_bytes = 0;
        let (written, value) = wait(in_order(in_flight, last));
        written?;
        Ok(value?)
    }

    /// Executes `sql`; returns how many rows it changed.
    pub(crate) fn exec(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let statement = self.statement(sql)?;
        let tx = self.tx;
        self.after_in_flight(async move { tx.execute(&statement, params).await })
    }

    pub(crate) fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let statement = self.statement(sql)?;
        let tx = self.tx;
        self.after_in_flight(async move { tx.query(&statement, params).await })
    }

    pub(crate) fn query_opt(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        let statement = self.statement(sql)?;
        let tx = self.tx;
        self.after_in_flight(async move { tx.query_opt(&statement, params).await })
    }

    pub(crate) fn query_one(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
        let statement = self.statement(sql)?;
        let tx = self.tx;
        self.after_in_flight(async move { tx.query_one(&statement, params).await })
    }
}

/// Waits for `writes` (sent already, answered in order), then for `last`.
async fn in_order<L: Future>(
    mut writes: Vec<InFlight<'_>>,
    last: L,
) -> (std::result::Result<(), tokio_postgres::Error>, L::Output) {
    let mut last = std::pin::pin!(last);
    let mut last_value = None;
    let mut error = None;
    let mut next = 0;
    futures::future::poll_fn(|cx| {
        // `last` is sent on its first poll, behind the writes.
        if last_value.is_none()
            && let Poll::Ready(value) = last.as_mut().poll(cx)
        {
            last_value = Some(value);
        }
        while next < writes.len() {
            match writes[next].as_mut().poll(cx) {
                Poll::Ready(result) => {
                    if let (Err(e), None) = (result, &error) {
                        error = Some(e);
                    }
                    next += 1;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        match last_value.is_some() || last.as_mut().poll(cx).map(|v| last_value = Some(v)).is_ready() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    })
    .await;
    (error.map_or(Ok(()), Err), last_value.expect("set before ready"))
}

/// Blobs up to this size travel as one parameter; larger ones are streamed
/// in and read back in pieces of this size, so a 50 MB mail is never held
/// twice in the node's memory.
pub(crate) const BLOB_PIECE: usize = 4 << 20;

/// Stores bytes once under their SHA-256.
pub(crate) fn put_blob(tx: &mut PgTx<'_>, data: &[u8]) -> Result<String> {
    put_blob_hashed(tx, data, crate::raw_sha256(data))
}

/// [`put_blob`] for bytes whose SHA-256 (`raw_sha256`) the caller has.
pub(crate) fn put_blob_hashed(tx: &mut PgTx<'_>, data: &[u8], sha: String) -> Result<String> {
    if data.len() <= BLOB_PIECE {
        tx.defer(
            "INSERT INTO blobs (sha256, size, data) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
            vec![Box::new(sha.clone()), Box::new(data.len() as i64), Box::new(data.to_vec())],
            data.len(),
        )?;
        return Ok(sha);
    }
    if tx.query_opt("SELECT 1 FROM blobs WHERE sha256 = $1", &[&sha])?.is_some() {
        return Ok(sha);
    }
    // COPY in binary format: one row, one bytea field, sent in pieces.
    tx.exec("CREATE TEMP TABLE IF NOT EXISTS blob_upload (data BYTEA) ON COMMIT DELETE ROWS", &[])?;
    let mut header = Vec::with_capacity(32);
    header.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    header.extend_from_slice(&0i32.to_be_bytes()); // flags
    header.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    header.extend_from_slice(&1i16.to_be_bytes()); // fields in the row
    header.extend_from_slice(&(data.len() as i32).to_be_bytes());
    tx.flush()?;
    let sink = wait(tx.tx.copy_in::<_, bytes::Bytes>("COPY blob_upload (data) FROM STDIN (FORMAT binary)"))?;
    let mut sink = Box::pin(sink);
    wait(sink.send(bytes::Bytes::from(header)))?;
    for piece in data.chunks(BLOB_PIECE) {
        wait(sink.send(bytes::Bytes::copy_from_slice(piece)))?;
    }
    // The trailer: a field count of -1.
    wait(sink.send(bytes::Bytes::from_static(&[0xff, 0xff])))?;
    wait(sink.as_mut().finish())?;
    tx.exec(
        "INSERT INTO blobs (sha256, size, data) SELECT $1, $2, data FROM blob_upload ON CONFLICT (sha256) DO NOTHING",
        &[&sha, &(data.len() as i64)],
    )?;
    tx.exec("DELETE FROM blob_upload", &[])?;
    Ok(sha)
}

/// Small blobs stored with one statement per megabyte: fewer statements
/// for the server to run than one per blob, and few copies held.
const BLOB_ROWS_BYTES: usize = 1 << 20;

/// Small blobs stored with one statement per [`BLOB_ROWS_BYTES`].
#[derive(Default)]
pub(crate) struct BlobRows {
    seen: std::collections::HashSet<String>,
    shas: Vec<String>,
    sizes: Vec<i64>,
    data: Vec<Vec<u8>>,
    bytes: usize,
}

impl BlobRows {
    /// Adds `data` (at most [`BLOB_PIECE`] bytes); returns its SHA-256.
    pub(crate) fn add(&mut self, tx: &mut PgTx<'_>, data: &[u8]) -> Result<String> {
        self.add_hashed(tx, data, crate::raw_sha256(data))
    }

    /// [`BlobRows::add`] for bytes whose SHA-256 (`raw_sha256`) the caller has.
    pub(crate) fn add_hashed(&mut self, tx: &mut PgTx<'_>, data: &[u8], sha: String) -> Result<String> {
        if self.seen.insert(sha.clone()) {
            self.shas.push(sha.clone());
            self.sizes.push(data.len() as i64);
            self.data.push(data.to_vec());
            self.bytes += data.len();
        }
        if self.bytes >= BLOB_ROWS_BYTES {
            self.send(tx)?;
        }
        Ok(sha)
    }

    /// Sends the blobs added so far (not waited for).
    pub(crate) fn send(&mut self, tx: &mut PgTx<'_>) -> Result<()> {
        if self.shas.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.bytes);
        tx.defer(
            "INSERT INTO blobs (sha256, size, data) SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])
             ON CONFLICT (sha256) DO NOTHING",
            vec![
                Box::new(std::mem::take(&mut self.shas)),
                Box::new(std::mem::take(&mut self.sizes)),
                Box::new(std::mem::take(&mut self.data)),
            ],
            bytes,
        )
    }
}

/// A stored blob's bytes, if it is there, read into one exactly-sized buffer.
pub(crate) fn read_blob(tx: &mut PgTx<'_>, sha256: &str) -> Result<Option<Vec<u8>>> {
    let Some(row) = tx.query_opt("SELECT size, codec FROM blobs WHERE sha256 = $1", &[&sha256])? else {
        return Ok(None);
    };
    let size = row.try_get::<_, i64>(0)?.max(0) as usize;
    // Compressed by a SQLite robot (rows `migrate-store` copied): small, whole.
    if let Some(codec) = row.try_get::<_, Option<String>>(1)? {
        let row = tx.query_one("SELECT data FROM blobs WHERE sha256 = $1", &[&sha256])?;
        return crate::blob_codec::unpack(Some(&codec), row.try_get::<_, Vec<u8>>(0)?, size as i64).map(Some);
    }
    let mut data = Vec::with_capacity(size);
    // In pieces, so the node never holds a large blob twice. A value stored
    // uncompressed (what LZ4 cannot shrink: most large attachments) is
    // read piece by piece; a compressed one is decompressed by the server
    // up to the end of each piece.
    while data.len() < size {
        let row = tx.query_one(
            "SELECT substring(data FROM $2::int FOR $3::int) FROM blobs WHERE sha256 = $1",
            &[&sha256, &((data.len() + 1) as i32), &(BLOB_PIECE as i32)],
        )?;
        let piece: &[u8] = row.try_get(0)?;
        if piece.is_empty() {
            return Err(StoreError::Corrupt(format!("blob {sha256} is shorter than its recorded {size} bytes")));
        }
        data.extend_from_slice(piece);
    }
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer waits for the one before it, and gives up past its wait
    /// instead of queueing for ever behind a write that does not end.
    #[test]
    fn a_writer_waits_its_turn_for_a_bounded_time() {
        let turn = WriterTurn::default();
        let first = turn.take(Duration::ZERO).expect("a free turn is taken at once");
        let started = std::time::Instant::now();
        assert!(turn.take(Duration::from_millis(150)).is_none(), "the turn is held");
        assert!(started.elapsed() >= Duration::from_millis(150), "waited for it first");
        std::thread::scope(|s| {
            let waiting = s.spawn(|| turn.take(Duration::from_secs(10)).is_some());
            std::thread::sleep(Duration::from_millis(50));
            drop(first);
            assert!(waiting.join().unwrap(), "the next writer gets the turn once it is given back");
        });
        assert!(turn.take(Duration::ZERO).is_some(), "and gives it back in turn");
    }
}
