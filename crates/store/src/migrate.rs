//! `mailrobot migrate-store`: an SQLite installation moved into an empty
//! PostgreSQL database, wholly or not at all.
//!
//! Both schemas have the same tables and columns (a test in `schema`
//! compares them). The copy finds the tables in the two databases (and
//! refuses when they differ), orders them by their foreign keys (parents
//! first), converts each value by its PostgreSQL column's type (read from
//! `information_schema`) and streams the rows with `COPY … (FORMAT binary)`,
//! one row at a time, so a 50 MB blob is in memory once or twice, never a
//! whole table. Every table goes in ONE PostgreSQL transaction. Each table
//! is then read back: the same number of rows, and the same checksum
//! ([`TableReport::checksum`]) over the rows SQLite gave and the rows
//! PostgreSQL holds. Identity sequences move past the copied ids. A refusal
//! or a mismatch rolls everything back.
//!
//! Refused: a source or a target on which a node is live (its heartbeat is
//! younger than [`LEASE_TTL`]), and a target that holds data. Rows a first
//! opening of the database writes (default service scopes, the master-key
//! check in the settings) are not data: the source's replace them.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::time::Duration;

use futures::StreamExt;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::blob_codec::{PACKED_TEXT_COLUMNS, unpack_text};
use crate::lease::{LEASE_TTL, alive_since};
use crate::schema::MIGRATIONS;
use crate::{PgStore, Result, SqliteStore, StoreError, redacted_url};

/// PostgreSQL tables that are not the robot's data (the schema's version).
const PG_ONLY: &[&str] = &["schema_version"];

/// Tables every command fills when it first opens a database (built-in
/// service scopes, the master-key check): rows there do not make a target
/// "in use"; they are replaced by the source's.
const OPENED_ONCE: &[&str] = &["service_scopes", "settings"];

/// What one table's copy did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableReport {
    pub table: String,
    /// Rows copied (and found again in PostgreSQL).
    pub rows: u64,
    /// SHA-256 (hex) of the table's rows in primary-key order (text keys in
    /// byte order), the same on both sides. Each value is encoded after its
    /// PostgreSQL column's type: NULL `N`; integer `I` + 8 bytes big-endian;
    /// boolean `B` + one byte 0/1; text `T` and binary `X` + their length as
    /// 8 bytes big-endian + their bytes; floating point `F` + its 8 IEEE
    /// bytes big-endian. Columns in PostgreSQL's order.
    pub checksum: String,
    /// The id the next row inserted gets, for tables with an identity
    /// column that received rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_id: Option<i64>,
}

/// What a migration did: every table, in the order copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    /// The SQLite file.
    pub source: String,
    /// The PostgreSQL database, its password hidden.
    pub target: String,
    pub tables: Vec<TableReport>,
    /// Rows copied, all tables together.
    pub rows: u64,
    /// Rows the target held from being opened before (service scopes,
    /// settings) that the source's replaced.
    pub replaced: u64,
}

/// Copies the SQLite database at `sqlite_path` into the empty PostgreSQL
/// database at `pg_url` (creating its schema), verifies every table and
/// commits once. See the module's documentation.
pub fn sqlite_to_postgres(sqlite_path: &Path, pg_url: &str) -> Result<MigrationReport> {
    sqlite_to_postgres_with_progress(sqlite_path, pg_url, &mut |_| {})
}

/// [`sqlite_to_postgres`], telling `progress` about each table once it is
/// copied and verified (before the commit).
pub fn sqlite_to_postgres_with_progress(
    sqlite_path: &Path,
    pg_url: &str,
    progress: &mut dyn FnMut(&TableReport),
) -> Result<MigrationReport> {
    let target_name = redacted_url(pg_url);
    let mut source = open_source(sqlite_path)?;
    // One snapshot of the source for everything read from it.
    let source_tx = source.transaction()?;
    refuse_live_source(&source_tx, sqlite_path)?;

    // Creates the schema, or finds it up to date (or refuses a newer one).
    drop(PgStore::connect(pg_url)?);
    let mut client = target_session(pg_url)?;

    let target = wait(client.transaction())?;
    // A copy of a large journal is long; nobody else should be waiting for
    // these tables, and a lock some node holds is not waited for long.
    wait(target.batch_execute(
        "SET LOCAL lock_timeout = '30s'; SET LOCAL statement_timeout = 0;
         SET LOCAL idle_in_transaction_session_timeout = '10min'",
    ))?;
    let tables = target_tables(&target)?;
    compare_schemas(&source_tx, &tables)?;
    let order = copy_order(&tables, &target_foreign_keys(&target)?)?;

    // Writers (a node starting meanwhile) wait for the commit; readers not.
    let all: Vec<String> = tables.keys().map(|t| quoted(t)).collect();
    wait(target.batch_execute(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", all.join(", "))))?;
    refuse_live_target(&target, &target_name)?;
    let replaced = refuse_data_in_target(&target, &tables, &target_name)?;

    let mut report = MigrationReport {
        source: sqlite_path.display().to_string(),
        target: target_name,
        tables: Vec::new(),
        rows: 0,
        replaced,
    };
    for name in &order {
        let table = &tables[name];
        let copied = copy_table(&source_tx, &target, table).map_err(|e| in_table(name, e))?;
        let found = target_checksum(&target, table).map_err(|e| in_table(name, e))?;
        if copied != found {
            return Err(StoreError::Corrupt(format!(
                "table {name} differs after the copy: SQLite gave {} rows (checksum {}), PostgreSQL holds {} \
                 (checksum {}); nothing was committed",
                copied.rows, copied.checksum, found.rows, found.checksum
            )));
        }
        let table_report =
            TableReport { table: name.clone(), rows: copied.rows, checksum: copied.checksum, next_id: None };
        tracing::info!(table = %name, rows = table_report.rows, "table copied and verified");
        progress(&table_report);
        report.rows += table_report.rows;
        report.tables.push(table_report);
    }
    for table_report in &mut report.tables {
        table_report.next_id = move_sequences(&target, &tables[&table_report.table])?;
    }
    wait(target.commit())?;
    drop(source_tx);
    Ok(report)
}

/// Waits for a PostgreSQL session's answer on the calling thread (the
/// session's socket is driven by the store's background runtime).
fn wait<F: Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

/// The source, read-only, at the latest schema.
fn open_source(path: &Path) -> Result<Connection> {
    if !path.is_file() {
        return Err(StoreError::Invalid(format!(
            "there is no SQLite database at {}: name the robot's database file (mailrobot.db in its data directory)",
            path.display()
        )));
    }
    let open = || -> Result<Connection> {
        let open_err = |source| StoreError::Open { path: path.display().to_string(), source };
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(open_err)?;
        Ok(conn)
    };
    let conn = open()?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| StoreError::Invalid(format!("{} is not a mailrobot SQLite database: {e}", path.display())))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::SchemaTooNew { found: version, known });
    }
    if version == known {
        return Ok(conn);
    }
    // An older schema: brought up to date as any start of the robot would.
    drop(conn);
    tracing::info!(path = %path.display(), from = version, to = known, "bringing the SQLite schema up to date first");
    drop(SqliteStore::open(path)?);
    open()
}

/// A session of its own for the copy (the store's sessions end a
/// transaction idle for seconds; a copy may pause longer between tables).
fn target_session(url: &str) -> Result<tokio_postgres::Client> {
    let (mut config, tls) = crate::pg::parse_url(url)?;
    config.application_name("mailrobot migrate-store");
    config.connect_timeout(Duration::from_secs(10));
    crate::pg::connect(&config, &tls)
}

/// A PostgreSQL table: its columns in order, and what orders its rows.
#[derive(Debug, Clone)]
struct Table {
    name: String,
    columns: Vec<Column>,
    /// The primary key's columns (every column if it has none).
    key: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    kind: Kind,
    pg_type: Type,
    /// Filled from a sequence (an identity column).
    sequence: bool,
    /// SQLite may hold its values packed ([`crate::blob_codec::PACKED_TEXT_COLUMNS`]).
    packed_in_sqlite: bool,
}

/// How a column's values are converted and checksummed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Boolean,
    Text,
    Bytes,
    Float,
}

impl Kind {
    /// The kind and wire type of a PostgreSQL `data_type`.
    fn of(data_type: &str) -> Option<(Kind, Type)> {
        Some(match data_type {
            "bigint" => (Kind::Integer, Type::INT8),
            "integer" => (Kind::Integer, Type::INT4),
            "smallint" => (Kind::Integer, Type::INT2),
            "boolean" => (Kind::Boolean, Type::BOOL),
            "text" => (Kind::Text, Type::TEXT),
            "character varying" => (Kind::Text, Type::VARCHAR),
            "bytea" => (Kind::Bytes, Type::BYTEA),
            "double precision" => (Kind::Float, Type::FLOAT8),
            "real" => (Kind::Float, Type::FLOAT4),
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Integer => "an integer",
            Kind::Boolean => "a boolean",
            Kind::Text => "text",
            Kind::Bytes => "binary data",
            Kind::Float => "a number",
        }
    }
}

/// Every table of the target's schema, by name.
fn target_tables(tx: &tokio_postgres::Transaction<'_>) -> Result<BTreeMap<String, Table>> {
    let columns = wait(tx.query(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text,
                c.is_identity::text = 'YES' OR coalesce(c.column_default::text LIKE 'nextval(%', false)
         FROM information_schema.columns c
         JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
         ORDER BY c.table_name, c.ordinal_position",
        &[],
    ))?;
    let mut tables = BTreeMap::<String, Table>::new();
    for row in &columns {
        let (table, name, data_type): (String, String, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if PG_ONLY.contains(&table.as_str()) {
            continue;
        }
        let Some((kind, pg_type)) = Kind::of(&data_type) else {
            return Err(StoreError::Invalid(format!(
                "column {table}.{name} has type {data_type}, which migrate-store does not know how to copy"
            )));
        };
        let entry =
            tables.entry(table.clone()).or_insert_with(|| Table { name: table, columns: Vec::new(), key: Vec::new() });
        let packed_in_sqlite = PACKED_TEXT_COLUMNS.contains(&(entry.name.as_str(), name.as_str()));
        entry.columns.push(Column { name, kind, pg_type, sequence: row.try_get(3)?, packed_in_sqlite });
    }
    let keys = wait(tx.query(
        "SELECT tc.table_name::text, k.column_name::text
         FROM information_schema.table_constraints tc
         JOIN information_schema.key_column_usage k ON k.constraint_schema = tc.constraint_schema
              AND k.constraint_name = tc.constraint_name AND k.table_name = tc.table_name
         WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = current_schema()
         ORDER BY tc.table_name, k.ordinal_position",
        &[],
    ))?;
    for row in &keys {
        let (table, column): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        if let Some(t) = tables.get_mut(&table)
            && let Some(i) = t.columns.iter().position(|c| c.name == column)
        {
            t.key.push(i);
        }
    }
    for table in tables.values_mut() {
        if table.key.is_empty() {
            table.key = (0..table.columns.len()).collect();
        }
    }
    if tables.is_empty() {
        return Err(StoreError::Invalid("the PostgreSQL database has no mailrobot tables".into()));
    }
    Ok(tables)
}

/// (table, table it refers to) for every foreign key of the target.
fn target_foreign_keys(tx: &tokio_postgres::Transaction<'_>) -> Result<Vec<(String, String)>> {
    let rows = wait(tx.query(
        "SELECT src.relname::text, dst.relname::text FROM pg_constraint c
         JOIN pg_class src ON src.oid = c.conrelid
         JOIN pg_class dst ON dst.oid = c.confrelid
         JOIN pg_namespace n ON n.oid = src.relnamespace
         WHERE c.contype = 'f' AND n.nspname = current_schema()",
        &[],
    ))?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// The tables in an order that copies every referenced table before the
/// tables referring to it (by name where the keys leave the choice).
/// A cycle of foreign keys fails, naming its tables.
fn copy_order(tables: &BTreeMap<String, Table>, foreign_keys: &[(String, String)]) -> Result<Vec<String>> {
    let mut parents: BTreeMap<&str, BTreeSet<&str>> = tables.keys().map(|t| (t.as_str(), BTreeSet::new())).collect();
    for (child, parent) in foreign_keys {
        // A table referring to itself is copied in key order.
        if child == parent {
            continue;
        }
        match (parents.get_mut(child.as_str()), tables.contains_key(parent)) {
            (Some(set), true) => {
                set.insert(parent.as_str());
            }
            _ => {
                return Err(StoreError::Invalid(format!(
                    "a foreign key from {child} to {parent} leaves the robot's tables; migrate-store cannot order them"
                )));
            }
        }
    }
    let mut order = Vec::with_capacity(tables.len());
    while !parents.is_empty() {
        let ready: Vec<&str> = parents.iter().filter(|(_, p)| p.is_empty()).map(|(t, _)| *t).collect();
        if ready.is_empty() {
            let stuck: Vec<&str> = parents.keys().copied().collect();
            return Err(StoreError::Invalid(format!(
                "the foreign keys of these tables form a cycle, so no copy order exists: {}",
                stuck.join(", ")
            )));
        }
        for table in ready {
            parents.remove(table);
            for p in parents.values_mut() {
                p.remove(table);
            }
            order.push(table.to_string());
        }
    }
    Ok(order)
}

/// Refuses unless the source has the target's tables and columns.
fn compare_schemas(source: &rusqlite::Transaction<'_>, tables: &BTreeMap<String, Table>) -> Result<()> {
    let mut on_sqlite = BTreeSet::new();
    let names: Vec<String> = source
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for table in names {
        let columns: Vec<String> = source
            .prepare("SELECT name FROM pragma_table_info(?1)")?
            .query_map([&table], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        on_sqlite.extend(columns.into_iter().map(|c| format!("{table}.{c}")));
    }
    let on_postgres: BTreeSet<String> =
        tables.values().flat_map(|t| t.columns.iter().map(move |c| format!("{}.{}", t.name, c.name))).collect();
    let only_sqlite: Vec<&String> = on_sqlite.difference(&on_postgres).collect();
    let only_postgres: Vec<&String> = on_postgres.difference(&on_sqlite).collect();
    if only_sqlite.is_empty() && only_postgres.is_empty() {
        return Ok(());
    }
    let list = |v: &[&String]| {
        if v.is_empty() { "nothing".to_string() } else { v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ") }
    };
    Err(StoreError::Invalid(format!(
        "the SQLite database and the PostgreSQL schema do not have the same tables and columns (only on SQLite: {}; \
         only on PostgreSQL: {}): run migrate-store with the mailrobot version that last ran on the SQLite \
         database, into a database of its own (no other application's tables)",
        list(&only_sqlite),
        list(&only_postgres)
    )))
}

/// A live node, as a refusal names it.
struct LiveNode {
    id: String,
    host: String,
    pid: i64,
    heartbeat_at: String,
}

fn describe(nodes: &[LiveNode]) -> String {
    nodes
        .iter()
        .map(|n| format!("node {} on {} (pid {}, last heartbeat {})", n.id, n.host, n.pid, n.heartbeat_at))
        .collect::<Vec<_>>()
        .join(", ")
}

fn refuse_live_source(source: &rusqlite::Transaction<'_>, path: &Path) -> Result<()> {
    let now: String = source.query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [], |r| r.get(0))?;
    let live: Vec<LiveNode> = source
        .prepare(
            "SELECT id, host, pid, heartbeat_at FROM nodes WHERE stopped_at IS NULL AND heartbeat_at > ?1 ORDER BY id",
        )?
        .query_map([alive_since(&now, LEASE_TTL)], |r| {
            Ok(LiveNode { id: r.get(0)?, host: r.get(1)?, pid: r.get(2)?, heartbeat_at: r.get(3)? })
        })?
        .collect::<rusqlite::Result<_>>()?;
    if live.is_empty() {
        return Ok(());
    }
    Err(StoreError::Invalid(format!(
        "refusing to migrate: {} is running on the SQLite database {}; stop every `mailrobot serve` using it \
         (a copy would miss what it writes meanwhile), wait until `mailrobot nodes list` shows no node alive, and \
         run migrate-store again",
        describe(&live),
        path.display()
    )))
}

fn refuse_live_target(target: &tokio_postgres::Transaction<'_>, name: &str) -> Result<()> {
    let now: String = wait(
        target
            .query_one(r#"SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#, &[]),
    )?
    .try_get(0)?;
    let rows = wait(target.query(
        "SELECT id, host, pid, heartbeat_at FROM nodes WHERE stopped_at IS NULL AND heartbeat_at > $1 ORDER BY id",
        &[&alive_since(&now, LEASE_TTL)],
    ))?;
    let live: Vec<LiveNode> = rows
        .iter()
        .map(|r| {
            Ok(LiveNode { id: r.try_get(0)?, host: r.try_get(1)?, pid: r.try_get(2)?, heartbeat_at: r.try_get(3)? })
        })
        .collect::<Result<_>>()?;
    if live.is_empty() {
        return Ok(());
    }
    Err(StoreError::Invalid(format!(
        "refusing to migrate: {} is running on the PostgreSQL database {name}; migrate-store copies into an \
         empty database nobody uses: stop those nodes and give migrate-store a new, empty database",
        describe(&live)
    )))
}

/// Refuses a target with data; empties the tables a first opening fills.
/// Returns how many rows those held.
fn refuse_data_in_target(
    target: &tokio_postgres::Transaction<'_>,
    tables: &BTreeMap<String, Table>,
    name: &str,
) -> Result<u64> {
    let mut data = Vec::new();
    let mut opened = Vec::new();
    for table in tables.keys() {
        let rows: i64 = wait(target.query_one(&format!("SELECT count(*) FROM {}", quoted(table)), &[]))?.try_get(0)?;
        if rows == 0 {
            continue;
        }
        if OPENED_ONCE.contains(&table.as_str()) {
            opened.push(table);
        } else {
            data.push(format!("{table}: {rows} row{}", if rows == 1 { "" } else { "s" }));
        }
    }
    if !data.is_empty() {
        return Err(StoreError::Invalid(format!(
            "refusing to migrate: the PostgreSQL database {name} already holds data ({}); migrate-store copies into \
             an empty database only: create a new one (`createdb -O ROLE mailrobot`) and name it, or, if this one's \
             data is not wanted, empty it (`DROP SCHEMA public CASCADE; CREATE SCHEMA public;` as its owner)",
            data.join(", ")
        )));
    }
    let mut replaced = 0;
    for table in opened {
        replaced += wait(target.execute(&format!("DELETE FROM {}", quoted(table)), &[]))?;
    }
    Ok(replaced)
}

/// Errors of one table's copy name it.
fn in_table(table: &str, err: StoreError) -> StoreError {
    match err {
        StoreError::Postgres(_) | StoreError::Sqlite(_) => {
            StoreError::Invalid(format!("copying table {table}: {err}; nothing was committed"))
        }
        other => other,
    }
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn column_list(table: &Table) -> String {
    table.columns.iter().map(|c| quoted(&c.name)).collect::<Vec<_>>().join(", ")
}

/// ORDER BY of the key: text in byte order and NULLs first on both sides.
fn key_order(table: &Table, postgres: bool) -> String {
    let terms: Vec<String> = table
        .key
        .iter()
        .map(|&i| {
            let column = &table.columns[i];
            match (column.kind, postgres) {
                (Kind::Text, true) => format!("{} COLLATE \"C\" NULLS FIRST", quoted(&column.name)),
                (_, true) => format!("{} NULLS FIRST", quoted(&column.name)),
                (Kind::Text, false) => format!("{} COLLATE BINARY", quoted(&column.name)),
                (_, false) => quoted(&column.name),
            }
        })
        .collect();
    terms.join(", ")
}

/// Rows and checksum of one side of a table.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    rows: u64,
    checksum: String,
}

/// A value as PostgreSQL stores it, borrowed from the row it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value<'a> {
    Null,
    Integer(i64),
    Boolean(bool),
    Text(&'a str),
    Bytes(&'a [u8]),
    Float(f64),
}

impl Value<'_> {
    /// The canonical encoding of [`TableReport::checksum`].
    fn hash(&self, hasher: &mut Sha256) {
        match self {
            Value::Null => hasher.update(b"N"),
            Value::Integer(i) => {
                hasher.update(b"I");
                hasher.update(i.to_be_bytes());
            }
            Value::Boolean(b) => hasher.update([b'B', u8::from(*b)]),
            Value::Text(s) => {
                hasher.update(b"T");
                hasher.update((s.len() as u64).to_be_bytes());
                hasher.update(s.as_bytes());
            }
            Value::Bytes(b) => {
                hasher.update(b"X");
                hasher.update((b.len() as u64).to_be_bytes());
                hasher.update(b);
            }
            Value::Float(f) => {
                hasher.update(b"F");
                hasher.update(f.to_bits().to_be_bytes());
            }
        }
    }

    /// An SQLite value converted for a PostgreSQL column.
    fn from_sqlite<'a>(value: ValueRef<'a>, column: &Column) -> std::result::Result<Value<'a>, String> {
        let text = |bytes| {
            let s = std::str::from_utf8(bytes).map_err(|e| format!("holds text that is not UTF-8 ({e})"))?;
            if s.contains('\0') {
                return Err("holds text with a NUL character, which PostgreSQL cannot store".to_string());
            }
            Ok(s)
        };
        Ok(match (column.kind, value) {
            (_, ValueRef::Null) => Value::Null,
            (Kind::Integer, ValueRef::Integer(i)) => Value::Integer(i),
            (Kind::Integer, ValueRef::Real(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::Integer(f as i64),
            // SQLite keeps flags as 0/1; read back as the store reads them.
            (Kind::Boolean, ValueRef::Integer(i)) => Value::Boolean(i != 0),
            (Kind::Text, ValueRef::Text(b) | ValueRef::Blob(b)) => Value::Text(text(b)?),
            (Kind::Bytes, ValueRef::Blob(b) | ValueRef::Text(b)) => Value::Bytes(b),
            (Kind::Float, ValueRef::Real(f)) => Value::Float(f),
            (Kind::Float, ValueRef::Integer(i)) => Value::Float(i as f64),
            (kind, other) => {
                return Err(format!("holds {:?} where PostgreSQL wants {}", other.data_type(), kind.name()));
            }
        })
        .map(|v| match (v, &column.pg_type) {
            // What a 4-byte float column gives back.
            (Value::Float(f), t) if *t == Type::FLOAT4 => Value::Float(f64::from(f as f32)),
            (v, _) => v,
        })
    }

    /// A PostgreSQL value as read back.
    fn from_pg<'r>(row: &'r tokio_postgres::Row, i: usize, column: &Column) -> Result<Value<'r>> {
        let t = &column.pg_type;
        Ok(if *t == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?.map_or(Value::Null, Value::Integer)
        } else if *t == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?.map_or(Value::Null, |v| Value::Integer(v.into()))
        } else if *t == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)?.map_or(Value::Null, |v| Value::Integer(v.into()))
        } else if *t == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)?.map_or(Value::Null, Value::Boolean)
        } else if *t == Type::TEXT || *t == Type::VARCHAR {
            row.try_get::<_, Option<&str>>(i)?.map_or(Value::Null, Value::Text)
        } else if *t == Type::BYTEA {
            row.try_get::<_, Option<&[u8]>>(i)?.map_or(Value::Null, Value::Bytes)
        } else if *t == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(i)?.map_or(Value::Null, Value::Float)
        } else {
            row.try_get::<_, Option<f32>>(i)?.map_or(Value::Null, |v| Value::Float(v.into()))
        })
    }
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) if *ty == Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
            Value::Integer(i) if *ty == Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
            Value::Integer(i) => i.to_sql(ty, out),
            Value::Boolean(b) => b.to_sql(ty, out),
            Value::Text(s) => s.to_sql(ty, out),
            Value::Bytes(b) => b.to_sql(ty, out),
            Value::Float(f) if *ty == Type::FLOAT4 => (f as f32).to_sql(ty, out),
            Value::Float(f) => f.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Each value is written to the column type it was converted for.
        true
    }

    to_sql_checked!();
}

/// Streams one table from SQLite into PostgreSQL; the source side's summary.
fn copy_table(
    source: &rusqlite::Transaction<'_>,
    target: &tokio_postgres::Transaction<'_>,
    table: &Table,
) -> Result<Summary> {
    let columns = column_list(table);
    let name = quoted(&table.name);
    let mut select = source.prepare(&format!("SELECT {columns} FROM {name} ORDER BY {}", key_order(table, false)))?;
    let types: Vec<Type> = table.columns.iter().map(|c| c.pg_type.clone()).collect();
    let sink = wait(target.copy_in(&format!("COPY {name} ({columns}) FROM STDIN (FORMAT binary)")))?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    let mut hasher = Sha256::new();
    let mut rows = 0u64;
    let mut found = select.query([])?;
    while let Some(row) = found.next()? {
        let refused = |column: &Column, why: String| {
            let key: Vec<String> =
                table.key.iter().map(|&k| format!("{} = {:?}", table.columns[k].name, row.get_ref(k).ok())).collect();
            StoreError::Invalid(format!(
                "table {}, row {}: column {} {why}; fix the row in SQLite, or remove it, and migrate again",
                table.name,
                key.join(", "),
                column.name
            ))
        };
        // Packed bodies go into PostgreSQL as the text they hold.
        let mut unpacked = Vec::with_capacity(table.columns.len());
        for (i, column) in table.columns.iter().enumerate() {
            unpacked.push(match (column.packed_in_sqlite, row.get_ref(i)?) {
                (true, ValueRef::Blob(stored)) => Some(unpack_text(stored).map_err(|why| refused(column, why))?),
                _ => None,
            });
        }
        let mut values = Vec::with_capacity(table.columns.len());
        for (i, column) in table.columns.iter().enumerate() {
            let stored = match &unpacked[i] {
                Some(text) => ValueRef::Text(text.as_bytes()),
                None => row.get_ref(i)?,
            };
            let value = Value::from_sqlite(stored, column).map_err(|why| refused(column, why))?;
            value.hash(&mut hasher);
            values.push(value);
        }
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        wait(writer.as_mut().write(&params))?;
        rows += 1;
    }
    let copied = wait(writer.as_mut().finish())?;
    if copied != rows {
        return Err(StoreError::Corrupt(format!(
            "table {}: {rows} rows sent, PostgreSQL took {copied}; nothing was committed",
            table.name
        )));
    }
    Ok(Summary { rows, checksum: hex::encode(hasher.finalize()) })
}

/// Reads one table back from PostgreSQL (a row at a time): its summary.
fn target_checksum(target: &tokio_postgres::Transaction<'_>, table: &Table) -> Result<Summary> {
    let statement = wait(target.prepare(&format!(
        "SELECT {} FROM {} ORDER BY {}",
        column_list(table),
        quoted(&table.name),
        key_order(table, true)
    )))?;
    let stream = wait(target.query_raw(&statement, std::iter::empty::<&(dyn ToSql + Sync)>()))?;
    let mut stream = pin!(stream);
    let mut hasher = Sha256::new();
    let mut rows = 0u64;
    while let Some(row) = wait(stream.next()) {
        let row = row?;
        for (i, column) in table.columns.iter().enumerate() {
            Value::from_pg(&row, i, column)?.hash(&mut hasher);
        }
        rows += 1;
    }
    Ok(Summary { rows, checksum: hex::encode(hasher.finalize()) })
}

/// Moves the table's sequences past the copied ids; the next id, if rows
/// were copied into an identity column.
fn move_sequences(target: &tokio_postgres::Transaction<'_>, table: &Table) -> Result<Option<i64>> {
    let mut next = None;
    for column in table.columns.iter().filter(|c| c.sequence) {
        let max: Option<i64> = wait(
            target
                .query_one(&format!("SELECT max({})::bigint FROM {}", quoted(&column.name), quoted(&table.name)), &[]),
        )?
        .try_get(0)?;
        let Some(max) = max else { continue };
        wait(target.query_one(
            "SELECT setval(pg_get_serial_sequence($1, $2), $3)",
            &[&quoted(&table.name), &column.name, &max],
        ))?;
        next = Some(max + 1);
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> Table {
        Table {
            name: name.into(),
            columns: vec![Column {
                name: "id".into(),
                kind: Kind::Integer,
                pg_type: Type::INT8,
                sequence: true,
                packed_in_sqlite: false,
            }],
            key: vec![0],
        }
    }

    fn tables(names: &[&str]) -> BTreeMap<String, Table> {
        names.iter().map(|n| (n.to_string(), table(n))).collect()
    }

    fn fk(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn parents_are_copied_before_the_tables_that_refer_to_them() {
        let all = tables(&["attachments", "blobs", "entries", "messages", "settings", "tickets"]);
        let keys = fk(&[
            ("attachments", "entries"),
            ("attachments", "blobs"),
            ("entries", "messages"),
            ("entries", "tickets"),
            ("messages", "blobs"),
            ("messages", "tickets"),
            ("tickets", "tickets"),
        ]);
        let order = copy_order(&all, &keys).unwrap();
        assert_eq!(order, ["blobs", "settings", "tickets", "messages", "entries", "attachments"]);
    }

    #[test]
    fn a_cycle_or_a_foreign_table_fails_loudly() {
        let err = copy_order(&tables(&["a", "b", "c"]), &fk(&[("a", "b"), ("b", "a")])).unwrap_err();
        assert!(err.to_string().contains("cycle") && err.to_string().contains("a, b"), "{err}");
        let err = copy_order(&tables(&["a"]), &fk(&[("a", "elsewhere")])).unwrap_err();
        assert!(err.to_string().contains("elsewhere"), "{err}");
    }

    #[test]
    fn sqlite_values_take_the_postgres_column_type() {
        let column =
            |kind, pg_type| Column { name: "c".into(), kind, pg_type, sequence: false, packed_in_sqlite: false };
        let flag = column(Kind::Boolean, Type::BOOL);
        assert_eq!(Value::from_sqlite(ValueRef::Integer(1), &flag), Ok(Value::Boolean(true)));
        assert_eq!(Value::from_sqlite(ValueRef::Integer(0), &flag), Ok(Value::Boolean(false)));
        assert_eq!(Value::from_sqlite(ValueRef::Null, &flag), Ok(Value::Null));
        let bytes = column(Kind::Bytes, Type::BYTEA);
        assert_eq!(Value::from_sqlite(ValueRef::Blob(b"\0\xff"), &bytes), Ok(Value::Bytes(b"\0\xff")));
        let text = column(Kind::Text, Type::TEXT);
        assert!(Value::from_sqlite(ValueRef::Blob(b"\xff"), &text).unwrap_err().contains("UTF-8"));
        assert!(Value::from_sqlite(ValueRef::Text(b"a\0b"), &text).unwrap_err().contains("NUL"));
        let number = column(Kind::Integer, Type::INT8);
        assert!(Value::from_sqlite(ValueRef::Text(b"x"), &number).unwrap_err().contains("an integer"));
    }

    #[test]
    fn the_checksum_encoding_tells_values_apart() {
        let digest = |values: &[Value<'_>]| {
            let mut h = Sha256::new();
            values.iter().for_each(|v| v.hash(&mut h));
            hex::encode(h.finalize())
        };
        assert_ne!(digest(&[Value::Text("ab"), Value::Text("c")]), digest(&[Value::Text("a"), Value::Text("bc")]));
        assert_ne!(digest(&[Value::Null]), digest(&[Value::Text("")]));
        assert_ne!(digest(&[Value::Text("1")]), digest(&[Value::Bytes(b"1")]));
        assert_ne!(digest(&[Value::Integer(1)]), digest(&[Value::Boolean(true)]));
    }
}
