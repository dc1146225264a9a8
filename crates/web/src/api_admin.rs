//! The API's side of what the UI's forms do: tenants, connections, mailboxes
//! and services created and changed, API tokens made and revoked. Each goes
//! through the same [`crate::ops`] calls as its form, so checks and storage
//! are the CLI's.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use mailrobot_store::{Capability, MailboxKind, Mode, ServiceScopes};
use serde::{Deserialize, Serialize};

use crate::WebState;
use crate::api::{ApiError, Caller, Outcome, Page, TOKEN_PREFIX, json_body};
use crate::json::{ConnectionJson, MailboxJson, TenantJson};
use crate::ops::{ConnectionForm, MailboxForm, MailboxSettingsForm, TenantForm};
use crate::session::{random_token, token_sha256};

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

pub(crate) fn routes() -> Router<WebState> {
    Router::new()
        .route("/api/v1/tenants", post(create_tenant))
        .route("/api/v1/tenants/{name}", get(tenant).patch(change_tenant))
        .route("/api/v1/connections", post(create_connection))
        .route("/api/v1/connections/{name}", get(connection))
        .route("/api/v1/mailboxes", post(create_mailbox))
        .route("/api/v1/mailboxes/{name}", get(mailbox).patch(change_mailbox).delete(remove_mailbox))
        .route("/api/v1/services", get(services))
        .route("/api/v1/services/{capability}/{mode}", put(set_service))
        .route("/api/v1/api-tokens", post(create_token))
        .route("/api/v1/api-tokens/{name}", axum::routing::delete(revoke_token))
}

/// An operation's refusal: what was sent cannot be used, in words.
fn refused(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
}

// --- tenants ---

/// A tenant as the API takes it: the UI form's fields. On PATCH, absent
/// fields keep what is stored.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TenantBody {
    name: Option<String>,
    client_id: Option<String>,
    tenant: Option<String>,
    /// Write-only.
    client_secret: Option<String>,
    /// `YYYY-MM-DD`.
    secret_expires: Option<String>,
    /// PEM: certificate and private key. Write-only.
    certificate_pem: Option<String>,
    authority_url: Option<String>,
    graph_url: Option<String>,
    ews_url: Option<String>,
}

const TENANT_BODY: &str = r#"{"name", "client_id", "tenant", "client_secret", "secret_expires": "YYYY-MM-DD", "certificate_pem", "authority_url", "graph_url", "ews_url"}"#;

impl TenantBody {
    fn into_form(self, name: String, stored: Option<&mailrobot_store::Tenant>) -> TenantForm {
        let keep = |given: Option<String>, stored: Option<&Option<String>>| {
            given.or_else(|| stored.cloned().flatten()).filter(|v| !v.trim().is_empty())
        };
        TenantForm {
            name,
            client_id: self.client_id.or_else(|| stored.map(|t| t.client_id.clone())).unwrap_or_default(),
            tenant: keep(self.tenant, stored.map(|t| &t.directory)),
            client_secret: self.client_secret.filter(|s| !s.is_empty()),
            secret_expires: keep(self.secret_expires, stored.map(|t| &t.secret_expires_at))
                .map(|d| d.chars().take(10).collect()),
            certificate_pem: self.certificate_pem.filter(|s| !s.is_empty()),
            authority_url: keep(self.authority_url, stored.map(|t| &t.authority_url)),
            graph_url: keep(self.graph_url, stored.map(|t| &t.graph_url)),
            ews_url: keep(self.ews_url, stored.map(|t| &t.ews_url)),
        }
    }
}

async fn find_tenant(state: &WebState, name: &str) -> Result<mailrobot_store::Tenant, ApiError> {
    let name = name.to_string();
    state
        .blocking(move |s| s.auth.tenant_by_name(&name))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found("tenant"))
}

async fn tenant(
    State(state): State<WebState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<TenantJson>, ApiError> {
    Ok(Json(TenantJson::of(&find_tenant(&state, &name).await?)))
}

async fn create_tenant(
    State(state): State<WebState>,
    caller: Caller,
    body: Body<TenantBody>,
) -> Result<(StatusCode, Json<TenantJson>), ApiError> {
    caller.may_write()?;
    let body = json_body(body, TENANT_BODY)?;
    let name = body.name.clone().unwrap_or_default().trim().to_string();
    let tenant = state.ops.add_tenant(body.into_form(name, None)).await.map_err(refused)?;
    Ok((StatusCode::CREATED, Json(TenantJson::of(&tenant))))
}

async fn change_tenant(
    State(state): State<WebState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Body<TenantBody>,
) -> Result<Json<TenantJson>, ApiError> {
    caller.may_write()?;
    let body = json_body(body, TENANT_BODY)?;
    if body.name.as_ref().is_some_and(|n| *n != name) {
        return Err(refused("a tenant keeps its name; leave `name` out".into()));
    }
    let stored = find_tenant(&state, &name).await?;
    let form = body.into_form(stored.name.clone(), Some(&stored));
    let tenant = state.ops.update_tenant(&stored.name, form).await.map_err(refused)?;
    Ok(Json(TenantJson::of(&tenant)))
}

// --- connections ---

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionBody {
    name: String,
    tenant: String,
    capability: Capability,
    mode: Mode,
    /// None or empty: the capability's default scopes.
    #[serde(default)]
    scopes: Vec<String>,
}

async fn connection_view(state: &WebState, name: &str) -> Result<ConnectionJson, ApiError> {
    let name = name.to_string();
    let (found, tenants) = state
        .blocking(move |s| Ok((s.auth.connection_by_name(&name)?, s.auth.tenants()?)))
        .await
        .map_err(ApiError::internal)?;
    let c = found.ok_or_else(|| ApiError::not_found("connection"))?;
    let tenant = tenants.iter().find(|t| t.id == c.tenant_id).map(|t| t.name.clone());
    Ok(ConnectionJson::of(&c, tenant))
}

async fn connection(
    State(state): State<WebState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ConnectionJson>, ApiError> {
    Ok(Json(connection_view(&state, &name).await?))
}

async fn create_connection(
    State(state): State<WebState>,
    caller: Caller,
    body: Body<ConnectionBody>,
) -> Result<(StatusCode, Json<ConnectionJson>), ApiError> {
    caller.may_write()?;
    let b = json_body(
        body,
        r#"{"name", "tenant", "capability": "graph"|"ews"|"imap"|"pop"|"smtp", "mode": "delegated"|"application", "scopes": [...]}"#,
    )?;
    let form =
        ConnectionForm { name: b.name, tenant: b.tenant, capability: b.capability, mode: b.mode, scopes: b.scopes };
    let c = state.ops.add_connection(form).await.map_err(refused)?;
    Ok((StatusCode::CREATED, Json(connection_view(&state, &c.name).await?)))
}

// --- mailboxes ---

/// A new mailbox: the CLI's `mailbox add` flags, with its defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxBody {
    name: String,
    kind: MailboxKind,
    connection: Option<String>,
    address: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    /// `tls` (default), `starttls` or `none`.
    #[serde(default = "default_security")]
    security: String,
    username: Option<String>,
    /// Write-only.
    password: Option<String>,
    ews_url: Option<String>,
    /// Drop folder: the directory.
    path: Option<String>,
    #[serde(default = "default_folder")]
    folder: String,
    #[serde(default = "default_processed")]
    processed_folder: String,
    #[serde(default = "default_failed")]
    error_folder: String,
    /// `move` (default), `mark-read` or `delete`.
    #[serde(default = "default_settle")]
    after_processing: String,
    #[serde(default = "default_poll")]
    poll_seconds: i64,
    #[serde(default = "default_max_mb")]
    max_message_mb: i64,
}

fn default_security() -> String {
    "tls".into()
}
fn default_folder() -> String {
    "INBOX".into()
}
fn default_processed() -> String {
    "Processed".into()
}
fn default_failed() -> String {
    "Failed".into()
}
fn default_settle() -> String {
    "move".into()
}
fn default_poll() -> i64 {
    60
}
fn default_max_mb() -> i64 {
    50
}

/// What `PATCH /mailboxes/{name}` changes; absent fields stay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxPatch {
    enabled: Option<bool>,
    folder: Option<String>,
    processed_folder: Option<String>,
    error_folder: Option<String>,
    after_processing: Option<String>,
    poll_seconds: Option<i64>,
    max_message_mb: Option<i64>,
    /// Write-only.
    password: Option<String>,
}

async fn find_mailbox(state: &WebState, name: &str) -> Result<mailrobot_store::Mailbox, ApiError> {
    let name = name.to_string();
    let found = state.blocking(move |s| s.store.mailbox_by_name(&name)).await.map_err(ApiError::internal)?;
    found.filter(|m| !crate::mailboxes::is_removed(m)).ok_or_else(|| ApiError::not_found("mailbox"))
}

async fn mailbox(
    State(state): State<WebState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<MailboxJson>, ApiError> {
    Ok(Json(MailboxJson::of(&find_mailbox(&state, &name).await?)))
}

async fn create_mailbox(
    State(state): State<WebState>,
    caller: Caller,
    body: Body<MailboxBody>,
) -> Result<(StatusCode, Json<MailboxJson>), ApiError> {
    caller.may_write()?;
    let b = json_body(body, r#"{"name", "kind": "imap"|"pop3"|"drop-folder"|"graph"|"ews", ...} (docs/api.md)"#)?;
    let form = MailboxForm {
        name: b.name.trim().to_string(),
        kind: Some(b.kind),
        connection: b.connection,
        address: b.address,
        host: b.host,
        port: b.port,
        security: b.security,
        username: b.username,
        password: b.password.filter(|p| !p.is_empty()),
        ews_url: b.ews_url,
        path: b.path,
        folder: b.folder,
        processed_folder: b.processed_folder,
        error_folder: b.error_folder,
        after_processing: b.after_processing,
        poll_seconds: b.poll_seconds,
        max_message_mb: b.max_message_mb,
    };
    let m = state.ops.add_mailbox(form).await.map_err(refused)?;
    Ok((StatusCode::CREATED, Json(MailboxJson::of(&m))))
}

async fn change_mailbox(
    State(state): State<WebState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Body<MailboxPatch>,
) -> Result<Json<MailboxJson>, ApiError> {
    caller.may_write()?;
    let p = json_body(
        body,
        r#"{"enabled", "folder", "processed_folder", "error_folder", "after_processing", "poll_seconds", "max_message_mb", "password"}"#,
    )?;
    let m = find_mailbox(&state, &name).await?;
    let settings = MailboxSettingsForm {
        folder: p.folder,
        processed_folder: p.processed_folder,
        error_folder: p.error_folder,
        after_processing: p.after_processing,
        poll_seconds: p.poll_seconds,
        max_message_mb: p.max_message_mb,
        password: p.password.filter(|p| !p.is_empty()),
    };
    let changes_settings = settings.folder.is_some()
        || settings.processed_folder.is_some()
        || settings.error_folder.is_some()
        || settings.after_processing.is_some()
        || settings.poll_seconds.is_some()
        || settings.max_message_mb.is_some()
        || settings.password.is_some();
    if changes_settings {
        state.ops.update_mailbox(&m.name, settings).await.map_err(refused)?;
    }
    if let Some(enabled) = p.enabled {
        let id = m.id;
        state.blocking(move |s| s.store.set_mailbox_enabled(id, enabled)).await.map_err(ApiError::internal)?;
    }
    Ok(Json(MailboxJson::of(&find_mailbox(&state, &m.name).await?)))
}

async fn remove_mailbox(
    State(state): State<WebState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Outcome>, ApiError> {
    caller.may_write()?;
    let m = find_mailbox(&state, &name).await?;
    let id = m.id;
    state.blocking(move |s| s.store.remove_mailbox(id)).await.map_err(ApiError::internal)?;
    Ok(Json(Outcome { ok: true, message: format!("mailbox {} removed; its journal and tickets stay", m.name) }))
}

// --- services ---

/// The default scopes of one capability and mode (the Services page).
#[derive(Debug, Serialize)]
pub struct ServiceScopesJson {
    capability: Capability,
    capability_label: &'static str,
    mode: Mode,
    scopes: Vec<String>,
}

async fn services(State(state): State<WebState>, _caller: Caller) -> Result<Json<Page<ServiceScopesJson>>, ApiError> {
    let all = state.blocking(|s| s.auth.service_scopes()).await.map_err(ApiError::internal)?;
    let items = all
        .into_iter()
        .map(|s| ServiceScopesJson {
            capability: s.capability,
            capability_label: s.capability.label(),
            mode: s.mode,
            scopes: s.scopes,
        })
        .collect();
    Ok(Json(Page { items, next_cursor: None }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopesBody {
    scopes: Vec<String>,
}

async fn set_service(
    State(state): State<WebState>,
    caller: Caller,
    Path((capability, mode)): Path<(String, String)>,
    body: Body<ScopesBody>,
) -> Result<Json<ServiceScopesJson>, ApiError> {
    caller.may_write()?;
    let capability = capability.parse::<Capability>().map_err(|_| ApiError::not_found("capability"))?;
    let mode = mode.parse::<Mode>().map_err(|_| ApiError::not_found("mode"))?;
    let b = json_body(body, r#"{"scopes": ["https://graph.microsoft.com/Mail.ReadWrite", ...]}"#)?;
    let scopes = ServiceScopes { capability, mode, scopes: b.scopes };
    state.ops.set_service_scopes(scopes.clone()).await.map_err(refused)?;
    Ok(Json(ServiceScopesJson { capability, capability_label: capability.label(), mode, scopes: scopes.scopes }))
}

// --- API tokens ---

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    name: String,
    #[serde(default)]
    read_only: bool,
}

/// A token just made: the only answer that ever holds it.
#[derive(Debug, Serialize)]
pub struct NewTokenJson {
    name: String,
    read_only: bool,
    created_at: String,
    token: String,
}

async fn create_token(
    State(state): State<WebState>,
    caller: Caller,
    body: Body<TokenBody>,
) -> Result<(StatusCode, Json<NewTokenJson>), ApiError> {
    caller.may_write()?;
    let b = json_body(body, r#"{"name", "read_only": false}"#)?;
    let name = b.name.trim().to_string();
    if name.is_empty() {
        return Err(refused("an API token needs a name".into()));
    }
    let token = format!("{TOKEN_PREFIX}{}", random_token());
    let (hash, read_only) = (token_sha256(&token), b.read_only);
    let made = state.blocking(move |s| s.admins.add_api_token(&name, &hash, read_only)).await;
    let t = match made {
        Ok(t) => t,
        Err(crate::WebError::Store(e @ mailrobot_store::StoreError::Exists { .. })) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "exists", e.to_string()));
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    Ok((
        StatusCode::CREATED,
        Json(NewTokenJson { name: t.name, read_only: t.read_only, created_at: t.created_at, token }),
    ))
}

async fn revoke_token(
    State(state): State<WebState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Outcome>, ApiError> {
    caller.may_write()?;
    let lookup = name.clone();
    if !state.blocking(move |s| s.admins.revoke_api_token(&lookup)).await.map_err(ApiError::internal)? {
        return Err(ApiError::not_found("API token"));
    }
    Ok(Json(Outcome { ok: true, message: format!("API token {name} revoked") }))
}
