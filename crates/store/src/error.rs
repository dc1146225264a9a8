#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
}
