#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {}", with_cause(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error(
        "could not open the database at {url}: {reason} — check the URL (MAILROBOT_DATABASE_URL), that the server runs and that the role may log in"
    )]
    OpenDatabase { url: String, reason: String },
    /// No database session could be had in time (the server is down or
    /// every connection is busy).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("could not open the database at {path}: {source} — check that the data directory exists and is writable")]
    Open { path: String, source: rusqlite::Error },
    #[error("a mailbox named {0:?} already exists; choose another name or remove it first")]
    MailboxExists(String),
    #[error("a {what} named {name:?} already exists; choose another name")]
    Exists { what: &'static str, name: String },
    #[error("no mailbox with id {0}")]
    NoSuchMailbox(i64),
    #[error(
        "the database was written by a newer mailrobot (schema {found}, this one knows {known}); upgrade mailrobot"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// What was asked for cannot be stored as given (the text says why).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// A write for a mailbox whose lease this node no longer holds: another
    /// node polls it now. The node drops the mailbox and goes on.
    #[error("mailbox {mailbox_id}: write refused, {reason}; another node polls it now")]
    Fenced { mailbox_id: i64, reason: String },
}

impl StoreError {
    /// Worth trying again soon: the database was busy or an I/O hiccup.
    /// A damaged database, a schema from a newer version or a name clash
    /// need a person.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Sqlite(e) | StoreError::Open { source: e, .. } => matches!(
                e.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::SystemIoFailure
                )
            ),
            StoreError::Postgres(e) => {
                use tokio_postgres::error::SqlState;
                e.is_closed()
                    || e.as_db_error().is_none()
                    || matches!(
                        e.code(),
                        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                            || *c == SqlState::T_R_DEADLOCK_DETECTED
                            || *c == SqlState::LOCK_NOT_AVAILABLE
                            || *c == SqlState::ADMIN_SHUTDOWN
                            || *c == SqlState::CANNOT_CONNECT_NOW
                            || *c == SqlState::TOO_MANY_CONNECTIONS
                            || *c == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
                    )
            }
            StoreError::Unavailable(_) => true,
            StoreError::OpenDatabase { .. } => false,
            StoreError::MailboxExists(_)
            | StoreError::Exists { .. }
            | StoreError::NoSuchMailbox(_)
            | StoreError::SchemaTooNew { .. }
            | StoreError::Corrupt(_)
            | StoreError::Invalid(_)
            | StoreError::NotFound(_)
            | StoreError::Fenced { .. } => false,
        }
    }
}

/// The driver's error with its cause ("error performing TLS handshake" alone
/// does not say that the certificate was not trusted).
fn with_cause(err: &tokio_postgres::Error) -> String {
    match std::error::Error::source(err) {
        Some(cause) => format!("{err}: {cause}"),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_busy_database_is_transient() {
        assert!(!StoreError::SchemaTooNew { found: 9, known: 4 }.is_transient());
        assert!(!StoreError::Corrupt("x".into()).is_transient());
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
        assert!(StoreError::Sqlite(busy).is_transient());
        let full = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT), None);
        assert!(!StoreError::Sqlite(full).is_transient());
    }
}
