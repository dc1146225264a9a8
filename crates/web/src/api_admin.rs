//! The API's side of what the UI's forms do: tenants, connections, mailboxes
//! and services created and changed, API tokens made and revoked. Each goes
//! through the same [`crate::ops`] calls as its form, so checks and storage
//! are the CLI's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use mailrobot_store::{Capability, MailboxKind, Mode, ServiceScopes};
use serde::{Deserialize, Serialize};

use crate::WebState;
use crate::api::{ApiError, ApiPath, Caller, ErrorJson, Outcome, Page, TOKEN_PREFIX, json_body};
use crate::json::{ConnectionJson, MailboxJson, TenantJson};
use crate::ops::{ConnectionForm, MailboxForm, MailboxSettingsForm, TenantForm};
use crate::session::{random_token, token_sha256};

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// A whole number, also when written `60.0` (JSON Schema counts it as an integer).
fn whole<'de, D: serde::Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
    let whole = match (number.as_i64(), number.as_f64()) {
        (Some(n), _) => Some(n),
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
        _ => None,
    };
    whole
        .and_then(|n| T::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("{number} is not a whole number in range")))
}

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
pub(crate) fn refused(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
}

// --- tenants ---

/// A new tenant: the UI form's fields.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantBody {
    #[schema(min_length = 1, pattern = r"\S")]
    name: String,
    /// The app registration's Application (client) ID.
    #[schema(min_length = 1, pattern = r"\S")]
    client_id: String,
    /// The directory (tenant) ID or a verified domain.
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

/// What `PATCH /tenants/{name}` changes (as `tenant set`): absent or null
/// fields keep what is stored; the name stays.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
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

impl From<TenantBody> for TenantPatch {
    fn from(b: TenantBody) -> Self {
        Self {
            client_id: Some(b.client_id),
            tenant: b.tenant,
            client_secret: b.client_secret,
            secret_expires: b.secret_expires,
            certificate_pem: b.certificate_pem,
            authority_url: b.authority_url,
            graph_url: b.graph_url,
            ews_url: b.ews_url,
        }
    }
}

impl TenantPatch {
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

#[utoipa::path(
    get,
    path = "/api/v1/tenants/{name}",
    tag = "tenants",
    summary = "A tenant",
    params(
        ("name" = String, Path, description = "The tenant's name"),
    ),
    responses(
        (status = 200, description = "The tenant", body = TenantJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn tenant(
    State(state): State<WebState>,
    _caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<TenantJson>, ApiError> {
    Ok(Json(TenantJson::of(&find_tenant(&state, &name).await?)))
}

#[utoipa::path(
    post,
    path = "/api/v1/tenants",
    tag = "tenants",
    summary = "Add a tenant",
    request_body = TenantBody,
    responses(
        (status = 201, description = "The tenant", body = TenantJson),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 422, description = "The robot refuses what was asked; the message says why", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_tenant(
    State(state): State<WebState>,
    caller: Caller,
    body: Body<TenantBody>,
) -> Result<(StatusCode, Json<TenantJson>), ApiError> {
    caller.may_write()?;
    let body = json_body(body, TENANT_BODY)?;
    let name = body.name.trim().to_string();
    let tenant = state.ops.add_tenant(TenantPatch::from(body).into_form(name, None)).await.map_err(refused)?;
    Ok((StatusCode::CREATED, Json(TenantJson::of(&tenant))))
}

#[utoipa::path(
    patch,
    path = "/api/v1/tenants/{name}",
    tag = "tenants",
    summary = "Change a tenant",
    params(
        ("name" = String, Path, description = "The tenant's name"),
    ),
    request_body = TenantPatch,
    responses(
        (status = 200, description = "The tenant, changed", body = TenantJson),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
        (status = 422, description = "The robot refuses what was asked; the message says why", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn change_tenant(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    body: Body<TenantPatch>,
) -> Result<Json<TenantJson>, ApiError> {
    caller.may_write()?;
    let body = json_body(
        body,
        "the fields to change of {\"client_id\", \"tenant\", \"client_secret\", \"secret_expires\", \"certificate_pem\", \"authority_url\", \"graph_url\", \"ews_url\"}",
    )?;
    let stored = find_tenant(&state, &name).await?;
    let form = body.into_form(stored.name.clone(), Some(&stored));
    let tenant = state.ops.update_tenant(&stored.name, form).await.map_err(refused)?;
    Ok(Json(TenantJson::of(&tenant)))
}

// --- connections ---

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionBody {
    #[schema(min_length = 1, pattern = r"\S")]
    name: String,
    #[schema(min_length = 1, pattern = r"\S")]
    tenant: String,
    capability: Capability,
    mode: Mode,
    /// None or empty: the capability's default scopes.
    #[serde(default)]
    scopes: Vec<String>,
}

pub(crate) async fn connection_view(state: &WebState, name: &str) -> Result<ConnectionJson, ApiError> {
    let name = name.to_string();
    let (found, tenants) = state
        .blocking(move |s| Ok((s.auth.connection_by_name(&name)?, s.auth.tenants()?)))
        .await
        .map_err(ApiError::internal)?;
    let c = found.ok_or_else(|| ApiError::not_found("connection"))?;
    let tenant = tenants.iter().find(|t| t.id == c.tenant_id).map(|t| t.name.clone());
    Ok(ConnectionJson::of(&c, tenant))
}

#[utoipa::path(
    get,
    path = "/api/v1/connections/{name}",
    tag = "connections",
    summary = "A service connection",
    params(
        ("name" = String, Path, description = "The connection's name"),
    ),
    responses(
        (status = 200, description = "The connection", body = ConnectionJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn connection(
    State(state): State<WebState>,
    _caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ConnectionJson>, ApiError> {
    Ok(Json(connection_view(&state, &name).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/connections",
    tag = "connections",
    summary = "Add a service connection",
    request_body = ConnectionBody,
    responses(
        (status = 201, description = "The connection", body = ConnectionJson),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 422, description = "The robot refuses what was asked; the message says why", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_connection(
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxBody {
    #[schema(min_length = 1, pattern = r"\S")]
    name: String,
    kind: MailboxKind,
    connection: Option<String>,
    address: Option<String>,
    host: Option<String>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 65535)]
    port: Option<u16>,
    #[serde(default)]
    security: Security,
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
    #[serde(default)]
    after_processing: AfterProcessing,
    /// Default 60.
    #[serde(default, deserialize_with = "whole")]
    poll_seconds: Option<i64>,
    /// Default 50.
    #[serde(default, deserialize_with = "whole")]
    max_message_mb: Option<i64>,
}

/// How IMAP and POP3 connect.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    #[default]
    Tls,
    Starttls,
    None,
}

/// What becomes of a mail in the mailbox once it is processed.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AfterProcessing {
    #[default]
    Move,
    MarkRead,
    Delete,
}

impl AfterProcessing {
    fn as_str(self) -> &'static str {
        match self {
            AfterProcessing::Move => "move",
            AfterProcessing::MarkRead => "mark-read",
            AfterProcessing::Delete => "delete",
        }
    }
}

impl Security {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Security::Tls => "tls",
            Security::Starttls => "starttls",
            Security::None => "none",
        }
    }
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
const DEFAULT_POLL_SECONDS: i64 = 60;
const DEFAULT_MAX_MESSAGE_MB: i64 = 50;

/// What `PATCH /mailboxes/{name}` changes; absent fields stay.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxPatch {
    enabled: Option<bool>,
    folder: Option<String>,
    processed_folder: Option<String>,
    error_folder: Option<String>,
    after_processing: Option<AfterProcessing>,
    #[serde(default, deserialize_with = "whole")]
    poll_seconds: Option<i64>,
    #[serde(default, deserialize_with = "whole")]
    max_message_mb: Option<i64>,
    /// Write-only.
    password: Option<String>,
    /// What happens to mail from senders the directory does not know.
    unknown_senders: Option<UnknownSenders>,
    /// The templates' language when a mail names none (e.g. `de`; empty: none).
    language: Option<String>,
    /// How it answers requesters (as `mailbox set --reply-via …`); absent fields stay.
    reply: Option<ReplyPatch>,
}

/// A mailbox's reply transport (docs/outbound.md).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyPatch {
    via: Option<ReplyVia>,
    /// host[:port]
    smtp_server: Option<String>,
    smtp_tls: Option<SmtpTls>,
    smtp_username: Option<String>,
    /// Write-only; sealed.
    smtp_password: Option<String>,
    /// An smtp service connection (SASL XOAUTH2).
    smtp_connection: Option<String>,
    /// The address mail is sent from.
    from: Option<String>,
    /// A Reply-To for what it sends ("" removes it).
    reply_to: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReplyVia {
    /// Nothing is sent (the default).
    None,
    Smtp,
    /// Microsoft Graph sendMail through a Graph mailbox's connection.
    Graph,
    /// EWS CreateItem through an EWS mailbox's endpoint.
    Ews,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    Starttls,
    Tls,
    None,
}

/// A mailbox's policy for senders the directory does not know.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownSenders {
    /// A new ticket's requester becomes a contact (the default).
    Create,
    /// Tickets are made; the directory is left alone.
    Accept,
    /// No ticket; the sender gets the rejection template.
    Reject,
}

pub(crate) async fn find_mailbox(state: &WebState, name: &str) -> Result<mailrobot_store::Mailbox, ApiError> {
    let name = name.to_string();
    let found = state.blocking(move |s| s.store.mailbox_by_name(&name)).await.map_err(ApiError::internal)?;
    found.filter(|m| !crate::mailboxes::is_removed(m)).ok_or_else(|| ApiError::not_found("mailbox"))
}

#[utoipa::path(
    get,
    path = "/api/v1/mailboxes/{name}",
    tag = "mailboxes",
    summary = "A mailbox",
    params(
        ("name" = String, Path, description = "The mailbox's name"),
    ),
    responses(
        (status = 200, description = "The mailbox", body = MailboxJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn mailbox(
    State(state): State<WebState>,
    _caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<MailboxJson>, ApiError> {
    Ok(Json(MailboxJson::of(&find_mailbox(&state, &name).await?)))
}

#[utoipa::path(
    post,
    path = "/api/v1/mailboxes",
    tag = "mailboxes",
    summary = "Add a mailbox",
    request_body = MailboxBody,
    responses(
        (status = 201, description = "The mailbox", body = MailboxJson),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 422, description = "The robot refuses what was asked; the message says why", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_mailbox(
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
        security: b.security.as_str().to_string(),
        username: b.username,
        password: b.password.filter(|p| !p.is_empty()),
        ews_url: b.ews_url,
        path: b.path,
        folder: b.folder,
        processed_folder: b.processed_folder,
        error_folder: b.error_folder,
        after_processing: b.after_processing.as_str().to_string(),
        poll_seconds: b.poll_seconds.unwrap_or(DEFAULT_POLL_SECONDS),
        max_message_mb: b.max_message_mb.unwrap_or(DEFAULT_MAX_MESSAGE_MB),
    };
    let m = state.ops.add_mailbox(form).await.map_err(refused)?;
    Ok((StatusCode::CREATED, Json(MailboxJson::of(&m))))
}

#[utoipa::path(
    patch,
    path = "/api/v1/mailboxes/{name}",
    tag = "mailboxes",
    summary = "Change a mailbox",
    params(
        ("name" = String, Path, description = "The mailbox's name"),
    ),
    request_body = MailboxPatch,
    responses(
        (status = 200, description = "The mailbox, changed", body = MailboxJson),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
        (status = 422, description = "The robot refuses what was asked; the message says why", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn change_mailbox(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    body: Body<MailboxPatch>,
) -> Result<Json<MailboxJson>, ApiError> {
    caller.may_write()?;
    let p = json_body(
        body,
        r#"{"enabled", "folder", "processed_folder", "error_folder", "after_processing", "poll_seconds", "max_message_mb", "password", "unknown_senders", "language", "reply": {"via", "smtp_server", "smtp_tls", "smtp_username", "smtp_password", "smtp_connection", "from", "reply_to"}}"#,
    )?;
    let m = find_mailbox(&state, &name).await?;
    let settings = MailboxSettingsForm {
        folder: p.folder,
        processed_folder: p.processed_folder,
        error_folder: p.error_folder,
        after_processing: p.after_processing.map(|a| a.as_str().to_string()),
        poll_seconds: p.poll_seconds,
        max_message_mb: p.max_message_mb,
        password: p.password.filter(|p| !p.is_empty()),
        unknown_senders: p.unknown_senders.map(|u| {
            match u {
                UnknownSenders::Create => "create",
                UnknownSenders::Accept => "accept",
                UnknownSenders::Reject => "reject",
            }
            .to_string()
        }),
        language: p.language,
        reply: p.reply.map(|r| crate::ops::ReplyForm {
            via: r.via.map(|v| {
                match v {
                    ReplyVia::None => "none",
                    ReplyVia::Smtp => "smtp",
                    ReplyVia::Graph => "graph",
                    ReplyVia::Ews => "ews",
                }
                .to_string()
            }),
            smtp_server: r.smtp_server,
            smtp_tls: r.smtp_tls.map(|t| {
                match t {
                    SmtpTls::Starttls => "starttls",
                    SmtpTls::Tls => "tls",
                    SmtpTls::None => "none",
                }
                .to_string()
            }),
            smtp_username: r.smtp_username,
            smtp_password: r.smtp_password,
            smtp_connection: r.smtp_connection,
            from: r.from,
            reply_to: r.reply_to,
        }),
    };
    let changes_settings = settings.folder.is_some()
        || settings.processed_folder.is_some()
        || settings.error_folder.is_some()
        || settings.after_processing.is_some()
        || settings.poll_seconds.is_some()
        || settings.max_message_mb.is_some()
        || settings.password.is_some()
        || settings.unknown_senders.is_some()
        || settings.language.is_some()
        || settings.reply.is_some();
    if changes_settings {
        state.ops.update_mailbox(&m.name, settings).await.map_err(refused)?;
    }
    if let Some(enabled) = p.enabled {
        let id = m.id;
        state.blocking(move |s| s.store.set_mailbox_enabled(id, enabled)).await.map_err(ApiError::internal)?;
    }
    Ok(Json(MailboxJson::of(&find_mailbox(&state, &m.name).await?)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/mailboxes/{name}",
    tag = "mailboxes",
    summary = "Remove a mailbox",
    params(
        ("name" = String, Path, description = "The mailbox's name"),
    ),
    responses(
        (status = 200, description = "Removed; its journal and tickets stay", body = Outcome),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn remove_mailbox(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Outcome>, ApiError> {
    caller.may_write()?;
    let m = find_mailbox(&state, &name).await?;
    let id = m.id;
    state.blocking(move |s| s.store.remove_mailbox(id)).await.map_err(ApiError::internal)?;
    Ok(Json(Outcome { ok: true, message: format!("mailbox {} removed; its journal and tickets stay", m.name) }))
}

// --- services ---

/// The default scopes of one capability and mode (the Services page).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServiceScopesJson {
    capability: Capability,
    capability_label: &'static str,
    mode: Mode,
    scopes: Vec<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/services",
    tag = "services",
    summary = "Default scopes",
    responses(
        (status = 200, description = "Default scopes per capability and mode", body = Page<ServiceScopesJson>),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn services(
    State(state): State<WebState>,
    _caller: Caller,
) -> Result<Json<Page<ServiceScopesJson>>, ApiError> {
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopesBody {
    #[schema(min_items = 1)]
    scopes: Vec<String>,
}

#[utoipa::path(
    put,
    path = "/api/v1/services/{capability}/{mode}",
    tag = "services",
    summary = "Set default scopes",
    params(
        ("capability" = Capability, Path, description = "The capability"),
        ("mode" = Mode, Path, description = "The mode"),
    ),
    request_body = ScopesBody,
    responses(
        (status = 200, description = "The scopes, saved", body = ServiceScopesJson),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
        (status = 422, description = "The robot refuses what was asked; the message says why", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn set_service(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath((capability, mode)): ApiPath<(String, String)>,
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    #[schema(min_length = 1, pattern = r"\S")]
    name: String,
    #[serde(default)]
    read_only: bool,
}

/// A token just made: the only answer that ever holds it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewTokenJson {
    name: String,
    read_only: bool,
    created_at: String,
    token: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/api-tokens",
    tag = "api-tokens",
    summary = "Make an API token",
    request_body = TokenBody,
    responses(
        (status = 201, description = "The token: the only answer that holds it", body = NewTokenJson),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 409, description = "In the way of something that exists", body = ErrorJson),
        (status = 422, description = "The robot refuses what was asked; the message says why", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_token(
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

#[utoipa::path(
    delete,
    path = "/api/v1/api-tokens/{name}",
    tag = "api-tokens",
    summary = "Revoke an API token",
    params(
        ("name" = String, Path, description = "The API token's name"),
    ),
    responses(
        (status = 200, description = "Revoked", body = Outcome),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn revoke_token(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Outcome>, ApiError> {
    caller.may_write()?;
    let lookup = name.clone();
    if !state.blocking(move |s| s.admins.revoke_api_token(&lookup)).await.map_err(ApiError::internal)? {
        return Err(ApiError::not_found("API token"));
    }
    Ok(Json(Outcome { ok: true, message: format!("API token {name} revoked") }))
}
