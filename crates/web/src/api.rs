//! The REST API, `/api/v1`: bearer API tokens (`mailrobot api-token
//! create`), JSON errors `{"error": {"code", "message"}}` with stable codes,
//! cursor pagination. Requests with a bearer token need no CSRF token: a
//! browser never sends one on its own.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mailrobot_store::{ApiToken, JournalState, TicketQuery, TicketStatus};
use serde::{Deserialize, Serialize};

use crate::WebState;
use crate::json::{ConnectionJson, MailboxJson, MessageJson, TenantJson, TicketDetailJson, TicketJson};
use crate::ops::PollNow;
use crate::session::token_sha256;

/// Prefix of every API token, so one is recognised in a config or a leak scan.
pub const TOKEN_PREFIX: &str = "mrt_";
/// Most items one page holds.
pub const MAX_LIMIT: usize = 200;
const DEFAULT_LIMIT: usize = 50;

/// An API error: its HTTP status, a stable code, and words for a person.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no such {what}"))
    }

    pub(crate) fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "an API request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the server could not answer; see its log")
    }
}

/// A JSON body, or a 400 `invalid_body` that says what to send.
pub(crate) fn json_body<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
    expected: &str,
) -> Result<T, ApiError> {
    body.map(|Json(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("{e}: send {expected}")))
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorJson {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable: programs may act on it (`unauthorized`, `read_only_token`, `not_found`, …).
    pub code: String,
    /// For people; may change.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorJson { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Who calls: the API token of the request.
pub struct Caller(pub ApiToken);

impl Caller {
    /// Refuses a read-only token's write.
    pub fn may_write(&self) -> Result<(), ApiError> {
        if self.0.read_only {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "read_only_token",
                format!("API token {:?} is read-only; create one without --read-only to change things", self.0.name),
            ));
        }
        Ok(())
    }
}

impl FromRequestParts<WebState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Self::Rejection> {
        let unauthorized = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim) else {
            return Err(unauthorized("send an API token: Authorization: Bearer <token> (mailrobot api-token create)"));
        };
        let hash = token_sha256(token);
        match state.blocking(move |s| s.admins.api_token(&hash)).await {
            Ok(Some(t)) => Ok(Caller(t)),
            Ok(None) => Err(unauthorized("this API token is unknown or was revoked")),
            Err(err) => Err(ApiError::internal(err)),
        }
    }
}

/// `Path`, with a JSON error: a path segment that cannot be read (a number
/// too large, a word where an id goes) names nothing, so 404.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(err) => {
                Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no such thing: {}", err.body_text())))
            }
        }
    }
}

/// `Query`, with a JSON error (400 `invalid_query`).
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(err) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", err.body_text())),
        }
    }
}

/// A query parameter given empty (`limit=`) is as good as absent.
fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// A page of items and where the next one starts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Give as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/api/v1/tickets", get(tickets))
        .route("/api/v1/tickets/{number}", get(ticket).patch(patch_ticket))
        .route("/api/v1/tickets/{number}/entries/{position}/attachments/{index}", get(attachment))
        .route("/api/v1/mailboxes", get(mailboxes))
        .route("/api/v1/mailboxes/{name}/test", post(mailbox_test))
        .route("/api/v1/mailboxes/{name}/poll", post(mailbox_poll))
        .route("/api/v1/messages", get(messages))
        .route("/api/v1/messages/{id}/retry", post(message_retry))
        .route("/api/v1/messages/{id}/raw", get(message_raw))
        .route("/api/v1/tenants", get(tenants))
        .route("/api/v1/connections", get(connections))
        .route("/api/v1/connections/{name}/authorize", post(connection_authorize))
        .route("/api/v1/connections/{name}/test", post(connection_test))
        .route("/api/v1/api-tokens", get(api_tokens))
        .route("/api/v1/openapi.json", get(openapi_document))
        .merge(crate::api_webhooks::routes())
        .merge(crate::api_admin::routes())
        .merge(crate::api_outbox::routes())
        .merge(crate::api_directory::routes())
        .route("/api/v1/{*rest}", get(unknown).post(unknown).patch(unknown).delete(unknown).put(unknown))
        .with_state(state)
}

/// The OpenAPI document: public, it holds no data.
async fn openapi_document() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}

async fn unknown() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint; the API lives under /api/v1")
}

/// `limit` and `cursor` of a list request.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    // Text: a flattened query string carries no numbers (serde_urlencoded).
    limit: Option<String>,
    cursor: Option<String>,
}

impl PageQuery {
    /// The page size (1 to [`MAX_LIMIT`]) and the id the page starts below.
    pub(crate) fn read(&self) -> Result<(usize, Option<i64>), ApiError> {
        // An empty `limit=` is not a number: refused like any other.
        let limit = match self.limit.as_deref().map(str::trim) {
            Some(l) => l.parse::<usize>().ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_limit",
                    format!("limit must be a number from 1 to {MAX_LIMIT}"),
                )
            })?,
            None => DEFAULT_LIMIT,
        };
        let before = match given(self.cursor.as_deref()) {
            // Cursors are ids this API gave: digits only.
            Some(c) => Some(
                c.parse::<i64>().ok().filter(|_| c.len() <= 18 && c.bytes().all(|b| b.is_ascii_digit())).ok_or_else(
                    || ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "the cursor is not one this API gave"),
                )?,
            ),
            None => None,
        };
        Ok((limit, before))
    }
}

/// `text` parsed as `T`, or a 400 with `code`.
pub(crate) fn parse_param<T: std::str::FromStr<Err = String>>(
    text: Option<&str>,
    code: &'static str,
) -> Result<Option<T>, ApiError> {
    given(text).map(|t| t.parse::<T>().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, code, e))).transpose()
}

#[derive(Debug, Deserialize)]
pub struct TicketsQuery {
    /// Words in the subject or requester, or a ticket number.
    q: Option<String>,
    status: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

#[utoipa::path(
    get,
    path = "/api/v1/tickets",
    tag = "tickets",
    summary = "List and search tickets",
    params(
        ("q" = Option<String>, Query, description = "Words in the subject or requester, or a ticket number"),
        ("status" = Option<TicketStatus>, Query, description = "Only tickets with this status"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Items per page, 1 to 200 (default 50)"),
        ("cursor" = Option<String>, Query, pattern = "^[0-9]{0,18}$", description = "The `next_cursor` of the page before"),
    ),
    responses(
        (status = 200, description = "A page of tickets, newest first", body = Page<TicketJson>),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn tickets(
    State(state): State<WebState>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<TicketsQuery>,
) -> Result<Json<Page<TicketJson>>, ApiError> {
    let (limit, before_id) = query.page.read()?;
    let status = parse_param::<TicketStatus>(query.status.as_deref(), "invalid_status")?;
    let (text, number) = crate::tickets::search_terms(&state.tag, query.q.as_deref().unwrap_or(""));
    let q = TicketQuery { text, number, status, mailbox_id: None, before_id, limit: limit + 1 };
    let mut found = state.blocking(move |s| s.store.search_tickets(&q)).await.map_err(ApiError::internal)?;
    let next_cursor = (found.len() > limit).then(|| {
        found.truncate(limit);
        found.last().map(|t| t.id.to_string()).unwrap_or_default()
    });
    Ok(Json(Page { items: found.iter().map(|t| TicketJson::of(t, &state.tag)).collect(), next_cursor }))
}

async fn find_ticket(state: &WebState, number: &str) -> Result<mailrobot_store::TicketDetail, ApiError> {
    let id = state.tag.parse_number(number).and_then(|n| i64::try_from(n).ok()).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{number:?} is not a ticket number like {}", state.tag.number(123)),
        )
    })?;
    state
        .blocking(move |s| s.store.ticket(id))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found("ticket"))
}

#[utoipa::path(
    get,
    path = "/api/v1/tickets/{number}",
    tag = "tickets",
    summary = "A ticket with its entries",
    params(
        ("number" = String, Path, description = "The ticket number as the CLI prints it (TKT-000123)"),
    ),
    responses(
        (status = 200, description = "The ticket with its entries", body = TicketDetailJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn ticket(
    State(state): State<WebState>,
    _caller: Caller,
    ApiPath(number): ApiPath<String>,
) -> Result<Json<TicketDetailJson>, ApiError> {
    let t = find_ticket(&state, &number).await?;
    Ok(Json(TicketDetailJson::of(&t, &state.tag)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TicketPatch {
    #[schema(value_type = TicketStatus)]
    status: String,
}

#[utoipa::path(
    patch,
    path = "/api/v1/tickets/{number}",
    tag = "tickets",
    summary = "Change a ticket's status",
    params(
        ("number" = String, Path, description = "The ticket number as the CLI prints it (TKT-000123)"),
    ),
    request_body = TicketPatch,
    responses(
        (status = 200, description = "The ticket, changed", body = TicketJson),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn patch_ticket(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(number): ApiPath<String>,
    body: Result<Json<TicketPatch>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<TicketJson>, ApiError> {
    caller.may_write()?;
    let patch = json_body(body, r#"{"status": "open"|"pending"|"closed"}"#)?;
    let status = patch
        .status
        .parse::<TicketStatus>()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_status", e))?;
    let t = find_ticket(&state, &number).await?;
    let id = t.summary.id;
    state.ops.set_status(id, status).await.map_err(crate::api_admin::refused)?;
    let t = find_ticket(&state, &number).await?;
    Ok(Json(TicketJson::of(&t.summary, &state.tag)))
}

#[utoipa::path(
    get,
    path = "/api/v1/mailboxes",
    tag = "mailboxes",
    summary = "List mailboxes",
    responses(
        (status = 200, description = "Every mailbox", body = Page<MailboxJson>),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn mailboxes(
    State(state): State<WebState>,
    _caller: Caller,
) -> Result<Json<Page<MailboxJson>>, ApiError> {
    let all = state.blocking(|s| s.store.mailboxes()).await.map_err(ApiError::internal)?;
    let items = all.iter().filter(|m| !crate::mailboxes::is_removed(m)).map(MailboxJson::of).collect();
    Ok(Json(Page { items, next_cursor: None }))
}

#[utoipa::path(
    get,
    path = "/api/v1/api-tokens",
    tag = "api-tokens",
    summary = "List API tokens",
    responses(
        (status = 200, description = "Every token (never the token itself)", body = Page<ApiToken>),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn api_tokens(
    State(state): State<WebState>,
    _caller: Caller,
) -> Result<Json<Page<ApiToken>>, ApiError> {
    let items = state.blocking(|s| s.admins.api_tokens()).await.map_err(ApiError::internal)?;
    Ok(Json(Page { items, next_cursor: None }))
}

/// Where an SMTP connection's test logs in; every field optional (Microsoft
/// 365's SMTP server with STARTTLS, as the signed-in user).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpTestBody {
    /// `host[:port]`; default `smtp.office365.com:587`.
    smtp_server: Option<String>,
    smtp_security: Option<crate::api_admin::Security>,
    /// The sending address to log in as.
    address: Option<String>,
}

/// What an action did: whether it worked, in words.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    pub ok: bool,
    pub message: String,
}

impl Outcome {
    fn of(result: Result<String, String>) -> Json<Outcome> {
        Json(match result {
            Ok(message) => Outcome { ok: true, message },
            Err(message) => Outcome { ok: false, message },
        })
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/mailboxes/{name}/test",
    tag = "mailboxes",
    summary = "Test a mailbox's connection",
    params(
        ("name" = String, Path, description = "The mailbox's name"),
    ),
    responses(
        (status = 200, description = "What the test found, in words", body = Outcome),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn mailbox_test(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Outcome>, ApiError> {
    caller.may_write()?;
    let m = crate::api_admin::find_mailbox(&state, &name).await?;
    Ok(Outcome::of(state.ops.test_mailbox(&m.name).await.map(|t| t.said)))
}

#[utoipa::path(
    post,
    path = "/api/v1/mailboxes/{name}/poll",
    tag = "mailboxes",
    summary = "Poll a mailbox now",
    params(
        ("name" = String, Path, description = "The mailbox's name"),
    ),
    responses(
        (status = 200, description = "What the pass did, in words; in a cluster, on a node that does not hold the mailbox, that the node holding it was asked to poll it (`ok` false on a disabled mailbox)", body = Outcome),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn mailbox_poll(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Outcome>, ApiError> {
    caller.may_write()?;
    let m = crate::api_admin::find_mailbox(&state, &name).await?;
    Ok(Outcome::of(state.ops.poll_now(&m.name).await.map(PollNow::said)))
}

#[derive(Debug, Deserialize)]
pub struct MessagesQuery {
    state: Option<String>,
    mailbox: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

#[utoipa::path(
    get,
    path = "/api/v1/messages",
    tag = "journal",
    summary = "The mail journal",
    params(
        ("state" = Option<JournalState>, Query, description = "Only mails in this state"),
        ("mailbox" = Option<String>, Query, description = "Only mails of this mailbox"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Items per page, 1 to 200 (default 50)"),
        ("cursor" = Option<String>, Query, pattern = "^[0-9]{0,18}$", description = "The `next_cursor` of the page before"),
    ),
    responses(
        (status = 200, description = "A page of the mail journal, newest first", body = Page<MessageJson>),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn messages(
    State(state): State<WebState>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<MessagesQuery>,
) -> Result<Json<Page<MessageJson>>, ApiError> {
    let (limit, before_id) = query.page.read()?;
    let journal_state = parse_param::<mailrobot_store::JournalState>(query.state.as_deref(), "invalid_state")?;
    let mailbox = query.mailbox.clone();
    let mut rows = state
        .blocking(move |s| {
            let mailbox_id = match mailbox {
                Some(name) => match s.store.mailbox_by_name(&name)? {
                    Some(m) => Some(m.id),
                    None => return Ok(None),
                },
                None => None,
            };
            let page = mailrobot_store::MessagePage { before_id, limit: limit + 1 };
            let filter = mailrobot_store::MessageFilter { state: journal_state, mailbox_id, page: Some(page) };
            Ok(Some(s.store.messages(&filter)?))
        })
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found("mailbox"))?;
    let next_cursor = (rows.len() > limit).then(|| {
        rows.truncate(limit);
        rows.last().map(|m| m.journal_id.to_string()).unwrap_or_default()
    });
    Ok(Json(Page { items: rows.iter().map(|m| MessageJson::of(m, &state.tag)).collect(), next_cursor }))
}

#[utoipa::path(
    post,
    path = "/api/v1/messages/{id}/retry",
    tag = "journal",
    summary = "Retry a failed mail",
    params(
        ("id" = i64, Path, description = "The journal row's id"),
    ),
    responses(
        (status = 200, description = "Queued again", body = Outcome),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
        (status = 409, description = "In the way of something that exists", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn message_retry(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Outcome>, ApiError> {
    caller.may_write()?;
    if state.blocking(move |s| s.store.retry_message(id)).await.map_err(ApiError::internal)? {
        Ok(Json(Outcome { ok: true, message: format!("mail {id} queued again; the mailbox's next poll processes it") }))
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            format!("mail {id} is not a failed mail with its content kept"),
        ))
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/messages/{id}/raw",
    tag = "journal",
    summary = "A mail as fetched (.eml)",
    params(
        ("id" = i64, Path, description = "The journal row's id"),
    ),
    responses(
        (status = 200, description = "The mail as fetched", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn message_raw(
    State(state): State<WebState>,
    _caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, ApiError> {
    let bytes = state.blocking(move |s| s.store.message_raw(id)).await.map_err(ApiError::internal)?;
    let bytes = bytes.ok_or_else(|| ApiError::not_found("mail with its content kept"))?;
    Ok(crate::pages::download(bytes, &format!("mail-{id}.eml")))
}

#[utoipa::path(
    get,
    path = "/api/v1/tickets/{number}/entries/{position}/attachments/{index}",
    tag = "tickets",
    summary = "Download an attachment",
    params(
        ("number" = String, Path, description = "The ticket number as the CLI prints it (TKT-000123)"),
        ("position" = i64, Path, description = "The entry's position (1 is the first mail)"),
        ("index" = i64, Path, description = "The attachment's index in the entry, from 0"),
    ),
    responses(
        (status = 200, description = "The attachment's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn attachment(
    State(state): State<WebState>,
    _caller: Caller,
    ApiPath((number, position, index)): ApiPath<(String, i64, usize)>,
) -> Result<Response, ApiError> {
    let t = find_ticket(&state, &number).await?;
    let a = t
        .entries
        .iter()
        .find(|e| e.position == position)
        .and_then(|e| e.attachments.get(index))
        .cloned()
        .ok_or_else(|| ApiError::not_found("attachment"))?;
    let sha = a.sha256.clone();
    let bytes = state.blocking(move |s| s.store.blob(&sha)).await.map_err(ApiError::internal)?;
    let bytes = bytes.ok_or_else(|| ApiError::not_found("attachment content"))?;
    Ok(crate::pages::download(bytes, &a.filename.unwrap_or_else(|| format!("attachment-{}", index + 1))))
}

#[utoipa::path(
    get,
    path = "/api/v1/tenants",
    tag = "tenants",
    summary = "List tenants",
    responses(
        (status = 200, description = "Every tenant (never a secret)", body = Page<TenantJson>),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn tenants(
    State(state): State<WebState>,
    _caller: Caller,
) -> Result<Json<Page<TenantJson>>, ApiError> {
    let all = state.blocking(|s| s.auth.tenants()).await.map_err(ApiError::internal)?;
    Ok(Json(Page { items: all.iter().map(TenantJson::of).collect(), next_cursor: None }))
}

#[utoipa::path(
    get,
    path = "/api/v1/connections",
    tag = "connections",
    summary = "List service connections",
    responses(
        (status = 200, description = "Every service connection (never a token)", body = Page<ConnectionJson>),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn connections(
    State(state): State<WebState>,
    _caller: Caller,
) -> Result<Json<Page<ConnectionJson>>, ApiError> {
    let (all, tenants) =
        state.blocking(|s| Ok((s.auth.connections()?, s.auth.tenants()?))).await.map_err(ApiError::internal)?;
    let items = all
        .iter()
        .map(|c| ConnectionJson::of(c, tenants.iter().find(|t| t.id == c.tenant_id).map(|t| t.name.clone())))
        .collect();
    Ok(Json(Page { items, next_cursor: None }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuthorizeUrl {
    /// Open it in a browser and sign in within 10 minutes.
    pub authorize_url: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/connections/{name}/authorize",
    tag = "connections",
    summary = "Start Setup Authentication",
    params(
        ("name" = String, Path, description = "The connection's name"),
    ),
    responses(
        (status = 200, description = "The URL to open and sign in at", body = AuthorizeUrl),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
        (status = 422, description = "The robot refuses what was asked; the message says why", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn connection_authorize(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<AuthorizeUrl>, ApiError> {
    caller.may_write()?;
    // Like the CLI's `connection authorize`: whoever the token's holder
    // gives the URL to signs in.
    let initiator = format!("api:{}", caller.0.name);
    let c = crate::api_admin::connection_view(&state, &name).await?;
    match state.ops.begin_setup(&c.name, initiator).await {
        Ok(authorize_url) => Ok(Json(AuthorizeUrl { authorize_url })),
        Err(message) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "setup_not_started", message)),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/connections/{name}/test",
    tag = "connections",
    summary = "Test a connection (get a token now)",
    params(
        ("name" = String, Path, description = "The connection's name"),
    ),
    request_body(content = Option<SmtpTestBody>, description = "SMTP connections: where the test logs in", content_type = "application/json"),
    responses(
        (status = 200, description = "What came back, in words", body = Outcome),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn connection_test(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<Json<Outcome>, ApiError> {
    caller.may_write()?;
    let c = crate::api_admin::connection_view(&state, &name).await?;
    // The body is optional: only SMTP connections use it.
    let given: SmtpTestBody = if body.iter().all(u8::is_ascii_whitespace) {
        SmtpTestBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("{e}: send nothing, or {{\"smtp_server\", \"smtp_security\", \"address\"}}"),
            )
        })?
    };
    let smtp = crate::ops::SmtpCheck {
        server: given.smtp_server,
        security: given.smtp_security.map(|s| s.as_str().to_string()),
        address: given.address,
    };
    Ok(Outcome::of(state.ops.test_connection(&c.name, smtp).await))
}
