//! Administrators of the web UI and their sessions.

use serde::Serialize;

use crate::Result;

/// An administrator, as lists and the API show one (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Admin {
    pub id: i64,
    pub email: String,
    pub created_at: String,
    pub last_sign_in_at: Option<String>,
}

/// A signed-in browser: who, and the token its forms must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub admin: Admin,
    pub csrf_token: String,
    pub expires_at: String,
}

/// A token for the REST API, as lists show it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiToken {
    #[serde(skip)]
    pub id: i64,
    pub name: String,
    pub read_only: bool,
    pub created_at: String,
}

/// When a session created now for `lifetime` expires (RFC 3339, as stored);
/// a lifetime too long to represent counts as one day.
pub(crate) fn session_expires_at(lifetime: std::time::Duration) -> String {
    let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::days(1));
    (chrono::Utc::now() + lifetime).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub trait AdminStore: Send + Sync {
    /// Adds an administrator; an existing email (any case) is refused.
    fn add_admin(&self, email: &str, password_hash: &str) -> Result<Admin>;
    fn admins(&self) -> Result<Vec<Admin>>;
    /// The administrator and their password hash, for signing in.
    fn admin_for_sign_in(&self, email: &str) -> Result<Option<(Admin, String)>>;
    /// Removes the administrator and their sessions. Returns whether one was.
    fn remove_admin(&self, email: &str) -> Result<bool>;
    /// Replaces the password hash and ends every session of the administrator.
    fn set_admin_password(&self, email: &str, password_hash: &str) -> Result<bool>;

    /// A new session for `lifetime` (the caller keeps the token; the store
    /// its SHA-256).
    fn create_session(
        &self,
        token_sha256: &str,
        admin_id: i64,
        csrf_token: &str,
        lifetime: std::time::Duration,
    ) -> Result<()>;
    /// The session, unless it has expired.
    fn session(&self, token_sha256: &str) -> Result<Option<Session>>;
    fn delete_session(&self, token_sha256: &str) -> Result<()>;

    /// Adds an API token (the caller shows the token once; the store keeps
    /// its SHA-256). An existing name is refused.
    fn add_api_token(&self, name: &str, token_sha256: &str, read_only: bool) -> Result<ApiToken>;
    fn api_tokens(&self) -> Result<Vec<ApiToken>>;
    fn api_token(&self, token_sha256: &str) -> Result<Option<ApiToken>>;
    /// Returns whether a token had that name.
    fn revoke_api_token(&self, name: &str) -> Result<bool>;
}
