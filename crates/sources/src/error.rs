use std::fmt;

/// What went wrong while talking to a mail source.
///
/// Opaque on purpose (like lettre's error): callers ask [`is_transient`]
/// to decide whether to back off and retry, and print it for people.
///
/// [`is_transient`]: SourceError::is_transient
#[derive(Debug)]
pub struct SourceError {
    kind: Kind,
    message: String,
    /// The server asked for quiet until then (HTTP Retry-After, EWS BackOffMilliseconds).
    retry_after: Option<std::time::Duration>,
    /// The server refused the credentials themselves (not the connection).
    login_refused: bool,
    /// The server no longer knows the stored sync state (Graph delta link,
    /// EWS SyncState): list from the start.
    sync_state_expired: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Network trouble, timeouts, server busy: retry later.
    Transient,
    /// Wrong password, missing folder, refused command: a person must act.
    Permanent,
}

impl SourceError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self { kind: Kind::Transient, message: message.into(), ..Self::base() }
    }

    fn base() -> Self {
        Self {
            kind: Kind::Permanent,
            message: String::new(),
            retry_after: None,
            login_refused: false,
            sync_state_expired: false,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self { kind: Kind::Permanent, message: message.into(), ..Self::base() }
    }

    /// The server refused the login: permanent, unless a renewed OAuth token
    /// gets in (sources ask for one once, see [`crate::credentials::current`]).
    pub fn login_refused(message: impl Into<String>) -> Self {
        Self { login_refused: true, ..Self::permanent(message) }
    }

    /// A transient error after which the server wants no request for `wait`.
    pub fn throttled(message: impl Into<String>, wait: std::time::Duration) -> Self {
        Self { kind: Kind::Transient, message: message.into(), retry_after: Some(wait), ..Self::base() }
    }

    /// The stored sync state expired: the source lists from the start (the
    /// journal keeps it from taking a mail twice). Not retried as it is.
    pub fn sync_state_expired(message: impl Into<String>) -> Self {
        Self { sync_state_expired: true, ..Self::permanent(message) }
    }

    pub fn is_sync_state_expired(&self) -> bool {
        self.sync_state_expired
    }

    /// How long the server asked the robot to stay away, if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after
    }

    pub fn is_transient(&self) -> bool {
        self.kind == Kind::Transient
    }

    pub fn is_permanent(&self) -> bool {
        self.kind == Kind::Permanent
    }

    pub fn is_login_refused(&self) -> bool {
        self.login_refused
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SourceError {}

impl From<std::io::Error> for SourceError {
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match err.kind() {
            NotFound | PermissionDenied | InvalidInput | InvalidData => Self::permanent(err.to_string()),
            _ => Self::transient(err.to_string()),
        }
    }
}

/// Refuses a value that would end or split a protocol line (CR, LF) or be
/// cut short by a server (NUL) — an IMAP folder name, a POP3 user name, an
/// SMTP address — before it is sent: such a value could smuggle in commands.
pub fn refuse_line_breaks(value: &str, what: &str) -> Result<(), SourceError> {
    match value.chars().find(|c| matches!(c, '\r' | '\n' | '\0')) {
        None => Ok(()),
        Some(c) => Err(SourceError::permanent(format!(
            "the {what} contains {}, which cannot be sent in a protocol line; correct it",
            match c {
                '\r' => "a carriage return",
                '\n' => "a line feed",
                _ => "a NUL character",
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_and_nul_are_refused() {
        assert!(refuse_line_breaks("Inbox/Support", "folder name").is_ok());
        for bad in ["a\r\nA1 DELETE INBOX", "x\ny", "a\0b"] {
            let err = refuse_line_breaks(bad, "folder name").unwrap_err();
            assert!(err.is_permanent() && err.to_string().contains("folder name"), "{err}");
        }
    }
}
