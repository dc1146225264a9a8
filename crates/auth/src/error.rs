use crate::model::ConnectionState;

/// Why no token could be had. Never contains a token or a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The identity platform refused the grant; `state` is what the
    /// connection becomes (reauth_required, secret_invalid, secret_expired),
    /// or None when a configuration or flow error leaves it as it is.
    #[error("{message}")]
    Refused { state: Option<ConnectionState>, code: Option<u32>, message: String },
    /// The connection is in a state where asking again cannot help.
    #[error("connection {connection} is {state}: {reason}")]
    Blocked { connection: String, state: &'static str, reason: String },
    /// Network trouble, 5xx, 429: retried already; try again later.
    #[error("{0}")]
    Transient(String),
    /// Settings or stored data are wrong; a person must fix them.
    #[error("{0}")]
    Config(String),
}

impl AuthError {
    pub fn is_transient(&self) -> bool {
        matches!(self, AuthError::Transient(_))
    }

    /// A person must act on the connection (run Setup Authentication
    /// again, give the tenant a new secret): mailboxes using it pause
    /// rather than fail, and nothing asks the identity platform until then.
    pub fn needs_person(&self) -> bool {
        matches!(self, AuthError::Blocked { .. } | AuthError::Refused { state: Some(_), .. })
    }
}

impl From<mailrobot_store::StoreError> for AuthError {
    fn from(err: mailrobot_store::StoreError) -> Self {
        AuthError::Transient(format!("store: {err}"))
    }
}
