//! What the store keeps for service connections: app registrations
//! ("tenants"), connections, cached access tokens and pending Setup
//! Authentication flows. Secrets arrive and leave sealed.

use serde::Serialize;

use crate::Result;

#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    pub id: i64,
    pub name: String,
    /// `microsoft365` or `oauth2`.
    pub provider: String,
    pub client_id: String,
    /// Directory (tenant) id or domain, for Microsoft 365.
    pub directory: Option<String>,
    pub authority_url: Option<String>,
    pub graph_url: Option<String>,
    pub ews_url: Option<String>,
    /// Generic OAuth2 endpoints.
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub has_secret: bool,
    pub secret_set_at: Option<String>,
    pub secret_expires_at: Option<String>,
    pub has_certificate: bool,
    /// Public facts about the certificate (subject, thumbprint, expiry).
    pub certificate_info: Option<String>,
    pub created_at: String,
    /// Tokens and secrets may go to this tenant's URLs over `http://`
    /// (`tenant add --allow-plaintext`); otherwise only to loopback.
    pub allow_plaintext: bool,
}

/// What `tenant set` and the tenant form change; the credentials go through
/// [`AuthStore::set_tenant_credentials`].
#[derive(Debug, Clone, Default)]
pub struct TenantUpdate {
    pub client_id: String,
    pub directory: Option<String>,
    pub authority_url: Option<String>,
    pub graph_url: Option<String>,
    pub ews_url: Option<String>,
    pub secret_expires_at: Option<String>,
    /// Replaced when Some (a new certificate came with the update).
    pub certificate_info: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct NewTenant {
    pub name: String,
    pub provider: String,
    pub client_id: String,
    pub directory: Option<String>,
    pub authority_url: Option<String>,
    pub graph_url: Option<String>,
    pub ews_url: Option<String>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub sealed_secret: Option<Vec<u8>>,
    pub secret_expires_at: Option<String>,
    pub sealed_certificate: Option<Vec<u8>>,
    pub certificate_info: Option<String>,
    pub allow_plaintext: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Connection {
    pub id: i64,
    pub name: String,
    pub tenant_id: i64,
    pub capability: crate::Capability,
    pub mode: crate::Mode,
    pub scopes: Vec<String>,
    pub state: crate::ConnectionState,
    pub last_error: Option<String>,
    pub has_refresh_token: bool,
    pub authenticated_name: Option<String>,
    pub authenticated_upn: Option<String>,
    pub authenticated_oid: Option<String>,
    pub granted_scopes: Option<String>,
    pub authenticated_at: Option<String>,
    pub refreshed_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone)]
pub struct NewConnection {
    pub name: String,
    pub tenant_id: i64,
    pub capability: crate::Capability,
    pub mode: crate::Mode,
    pub scopes: Vec<String>,
}

/// Who completed Setup Authentication, and what was granted.
#[derive(Debug, Clone, Default)]
pub struct Authorization {
    pub sealed_refresh_token: Option<Vec<u8>>,
    pub name: Option<String>,
    pub upn: Option<String>,
    pub oid: Option<String>,
    pub granted_scopes: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AuthFlow {
    pub state: String,
    pub connection_id: i64,
    pub sealed_verifier: Vec<u8>,
    pub nonce: String,
    pub redirect_uri: String,
    /// Who started it: `cli`, or `session:<id>` for a browser session.
    pub initiator: String,
    pub created_at: String,
    pub expires_at: String,
}

#[derive(Debug, Clone)]
pub struct CachedToken {
    pub sealed_token: Vec<u8>,
    pub expires_at: String,
}

/// The scopes a new connection of a capability and mode gets by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceScopes {
    pub capability: crate::Capability,
    pub mode: crate::Mode,
    pub scopes: Vec<String>,
}

/// Scopes as every backend stores them: one space-separated string.
pub(crate) fn join_scopes(scopes: &[String]) -> String {
    scopes.join(" ")
}

/// Stored scopes ([`join_scopes`]) back as a list.
pub(crate) fn split_scopes(stored: &str) -> Vec<String> {
    stored.split_whitespace().map(str::to_string).collect()
}

/// The order [`AuthStore::service_scopes`] promises: capability order
/// ([`crate::Capability::ALL`]), delegated before application.
pub(crate) fn sort_service_scopes(rows: &mut [ServiceScopes]) {
    let order = |c: crate::Capability| crate::Capability::ALL.iter().position(|x| *x == c);
    rows.sort_by_key(|s| (order(s.capability), s.mode == crate::Mode::Application));
}

pub trait AuthStore: Send + Sync {
    fn add_tenant(&self, new: &NewTenant) -> Result<Tenant>;
    fn tenants(&self) -> Result<Vec<Tenant>>;
    fn tenant(&self, id: i64) -> Result<Option<Tenant>>;
    fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>>;
    fn tenant_secret(&self, id: i64) -> Result<Option<Vec<u8>>>;
    /// Replaces the sealed client secret and/or certificate (None leaves it).
    fn set_tenant_credentials(
        &self,
        id: i64,
        sealed_secret: Option<&[u8]>,
        sealed_certificate: Option<&[u8]>,
    ) -> Result<()>;
    fn tenant_certificate(&self, id: i64) -> Result<Option<Vec<u8>>>;
    /// Changes the tenant's settings; its connections' cached access tokens
    /// are dropped (they may belong to the old app or directory).
    fn update_tenant(&self, id: i64, update: &TenantUpdate) -> Result<Tenant>;

    fn add_connection(&self, new: &NewConnection) -> Result<Connection>;
    fn connections(&self) -> Result<Vec<Connection>>;
    fn connection(&self, id: i64) -> Result<Option<Connection>>;
    fn connection_by_name(&self, name: &str) -> Result<Option<Connection>>;
    /// Sets the state and its human-readable reason (None clears it).
    fn set_connection_state(&self, id: i64, state: crate::ConnectionState, last_error: Option<&str>) -> Result<()>;
    fn refresh_token(&self, connection_id: i64) -> Result<Option<Vec<u8>>>;
    /// Setup Authentication succeeded: state `ready`, the new refresh token
    /// and who granted it; cached access tokens are dropped.
    fn complete_authorization(&self, connection_id: i64, auth: &Authorization) -> Result<()>;
    /// A refresh returned a new refresh token: it replaces the old one, and
    /// the new access token is cached, in one commit.
    fn store_refresh(
        &self,
        connection_id: i64,
        sealed_refresh_token: Option<&[u8]>,
        resource: &str,
        token: &CachedToken,
    ) -> Result<()>;

    fn cached_token(&self, connection_id: i64, resource: &str) -> Result<Option<CachedToken>>;
    fn put_token(&self, connection_id: i64, resource: &str, token: &CachedToken) -> Result<()>;
    /// Drops the connection's cached access tokens (a server refused one).
    fn forget_tokens(&self, connection_id: i64) -> Result<()>;

    /// Takes the connection's refresh lock for `owner` until `until` (RFC 3339)
    /// if it is free or expired. Returns whether it was taken.
    fn try_lock_refresh(&self, connection_id: i64, owner: &str, until: &str) -> Result<bool>;
    fn unlock_refresh(&self, connection_id: i64, owner: &str) -> Result<()>;

    fn create_auth_flow(&self, flow: &AuthFlow) -> Result<()>;
    /// Removes and returns the flow for `state` (single use), if any.
    fn take_auth_flow(&self, state: &str) -> Result<Option<AuthFlow>>;
    /// Binds a mailbox to a connection (its tokens authenticate the mailbox).
    fn set_mailbox_connection(&self, mailbox_id: i64, connection_id: Option<i64>) -> Result<()>;

    /// Every capability and mode's default scopes, in capability order.
    fn service_scopes(&self) -> Result<Vec<ServiceScopes>>;
    /// Stores these defaults where none are stored yet (first start, new capabilities).
    fn seed_service_scopes(&self, defaults: &[ServiceScopes]) -> Result<()>;
    fn set_service_scopes(&self, scopes: &ServiceScopes) -> Result<()>;
}
