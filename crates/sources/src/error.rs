use std::fmt;

/// What went wrong while talking to a mail source.
///
/// Opaque on purpose (like lettre's error): callers ask [`kind`],
/// [`is_transient`] or [`retry_after`] to decide what to do, and print it
/// for people. The lower-level error it came from is kept as its
/// [`source`](std::error::Error::source).
///
/// [`kind`]: SourceError::kind
/// [`is_transient`]: SourceError::is_transient
/// [`retry_after`]: SourceError::retry_after
#[derive(Debug)]
pub struct SourceError {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// The HTTP status of the answer it came from, for HTTP sources.
    http_status: Option<u16>,
}

/// What kind of failure, as far as what happens next is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Network trouble, timeouts, a server failing for now: retry later.
    Transient,
    /// The server asked for quiet this long (HTTP Retry-After, EWS
    /// BackOffMilliseconds): not a failure.
    Throttled(std::time::Duration),
    /// Wrong settings, a refused command or folder: a person must act.
    Permanent,
    /// The server refused the credentials themselves: permanent, unless a
    /// renewed OAuth token gets in (sources ask for one once).
    LoginRefused,
    /// The server no longer knows the stored sync state (Graph delta link,
    /// EWS SyncState): list from the start.
    SyncStateExpired,
    /// An answer ran past the bound it was read with (at least this many
    /// bytes): the server sent more than the robot takes.
    TooLarge(u64),
    /// The credentials need a person before anything can work again (a
    /// service connection needing Setup Authentication, a tenant needing a
    /// new secret): the mailbox pauses; retrying cannot help.
    NeedsPerson,
}

impl SourceError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None, http_status: None }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }

    /// The server refused the login: permanent, unless a renewed OAuth token
    /// gets in (sources ask for one once, see [`crate::credentials::current`]).
    pub fn login_refused(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::LoginRefused, message)
    }

    /// A wait the server asked for: no request before `wait` has passed.
    pub fn throttled(message: impl Into<String>, wait: std::time::Duration) -> Self {
        Self::new(ErrorKind::Throttled(wait), message)
    }

    /// The stored sync state expired: the source lists from the start (the
    /// journal keeps it from taking a mail twice). Not retried as it is.
    pub fn sync_state_expired(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::SyncStateExpired, message)
    }

    /// The credentials need a person (see [`ErrorKind::NeedsPerson`]).
    pub fn needs_person(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NeedsPerson, message)
    }

    /// An answer over the bound it was read with; `at_least` bytes came.
    pub fn too_large(message: impl Into<String>, at_least: u64) -> Self {
        Self::new(ErrorKind::TooLarge(at_least), message)
    }

    /// Keeps the lower-level error this one came from.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Notes the HTTP status of the answer this error came from.
    pub fn with_http_status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }

    /// The HTTP status of the answer this error came from, if any.
    pub fn http_status(&self) -> Option<u16> {
        self.http_status
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn is_sync_state_expired(&self) -> bool {
        self.kind == ErrorKind::SyncStateExpired
    }

    /// How long the server asked the robot to stay away, if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self.kind {
            ErrorKind::Throttled(wait) => Some(wait),
            _ => None,
        }
    }

    /// Worth trying again soon (network trouble, a server asking for quiet).
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, ErrorKind::Transient | ErrorKind::Throttled(_))
    }

    pub fn is_permanent(&self) -> bool {
        !self.is_transient()
    }

    pub fn is_login_refused(&self) -> bool {
        self.kind == ErrorKind::LoginRefused
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for SourceError {
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let message = err.to_string();
        let kind = match err.kind() {
            NotFound | PermissionDenied | InvalidInput | InvalidData => ErrorKind::Permanent,
            _ => ErrorKind::Transient,
        };
        Self::new(kind, message).with_source(err)
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
