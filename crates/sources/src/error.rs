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
        Self { kind: Kind::Transient, message: message.into(), retry_after: None }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self { kind: Kind::Permanent, message: message.into(), retry_after: None }
    }

    /// A transient error after which the server wants no request for `wait`.
    pub fn throttled(message: impl Into<String>, wait: std::time::Duration) -> Self {
        Self { kind: Kind::Transient, message: message.into(), retry_after: Some(wait) }
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
