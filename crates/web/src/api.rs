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
use mailrobot_store::{ApiToken, TicketQuery, TicketStatus};
use serde::{Deserialize, Serialize};

use crate::WebState;
use crate::json::{ConnectionJson, MailboxJson, MessageJson, TenantJson, TicketDetailJson, TicketJson};
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(serde_json::json!({"error": {"code": self.code, "message": self.message}})))
                .into_response();
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

/// A page of items and where the next one starts.
#[derive(Debug, Serialize)]
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
        .merge(crate::api_webhooks::routes())
        .merge(crate::api_admin::routes())
        .route("/api/v1/{*rest}", get(unknown).post(unknown).patch(unknown).delete(unknown).put(unknown))
        .with_state(state)
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
        let limit = match self.limit.as_deref() {
            Some(l) => l.parse::<usize>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_limit",
                    format!("limit must be a number from 1 to {MAX_LIMIT}"),
                )
            })?,
            None => DEFAULT_LIMIT,
        }
        .clamp(1, MAX_LIMIT);
        let before = match self.cursor.as_deref() {
            Some(c) => Some(c.parse::<i64>().map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "the cursor is not one this API gave")
            })?),
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
    text.map(|t| t.parse::<T>().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, code, e))).transpose()
}

#[derive(Debug, Deserialize)]
pub struct TicketsQuery {
    /// Words in the subject or requester, or a ticket number.
    q: Option<String>,
    status: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

async fn tickets(
    State(state): State<WebState>,
    _caller: Caller,
    Query(query): Query<TicketsQuery>,
) -> Result<Json<Page<TicketJson>>, ApiError> {
    let (limit, before_id) = query.page.read()?;
    let status = parse_param::<TicketStatus>(query.status.as_deref(), "invalid_status")?;
    let text = query.q.map(|q| q.trim().to_string()).filter(|q| !q.is_empty());
    let number = text.as_deref().and_then(|t| state.tag.parse_number(t)).and_then(|n| i64::try_from(n).ok());
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

async fn ticket(
    State(state): State<WebState>,
    _caller: Caller,
    Path(number): Path<String>,
) -> Result<Json<TicketDetailJson>, ApiError> {
    let t = find_ticket(&state, &number).await?;
    Ok(Json(TicketDetailJson::of(&t, &state.tag)))
}

#[derive(Debug, Deserialize)]
pub struct TicketPatch {
    status: String,
}

async fn patch_ticket(
    State(state): State<WebState>,
    caller: Caller,
    Path(number): Path<String>,
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
    state.blocking(move |s| s.store.set_ticket_status(id, status)).await.map_err(ApiError::internal)?;
    let t = find_ticket(&state, &number).await?;
    Ok(Json(TicketJson::of(&t.summary, &state.tag)))
}

async fn mailboxes(State(state): State<WebState>, _caller: Caller) -> Result<Json<Page<MailboxJson>>, ApiError> {
    let all = state.blocking(|s| s.store.mailboxes()).await.map_err(ApiError::internal)?;
    let items = all.iter().filter(|m| !crate::mailboxes::is_removed(m)).map(MailboxJson::of).collect();
    Ok(Json(Page { items, next_cursor: None }))
}

async fn api_tokens(State(state): State<WebState>, _caller: Caller) -> Result<Json<Page<ApiToken>>, ApiError> {
    let items = state.blocking(|s| s.admins.api_tokens()).await.map_err(ApiError::internal)?;
    Ok(Json(Page { items, next_cursor: None }))
}

/// What an action did: whether it worked, in words.
#[derive(Debug, Serialize)]
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

async fn mailbox_test(
    State(state): State<WebState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Outcome>, ApiError> {
    caller.may_write()?;
    Ok(Outcome::of(state.ops.test_mailbox(&name).await))
}

async fn mailbox_poll(
    State(state): State<WebState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Outcome>, ApiError> {
    caller.may_write()?;
    Ok(Outcome::of(state.ops.poll_now(&name).await))
}

#[derive(Debug, Deserialize)]
pub struct MessagesQuery {
    state: Option<String>,
    mailbox: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

async fn messages(
    State(state): State<WebState>,
    _caller: Caller,
    Query(query): Query<MessagesQuery>,
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

async fn message_retry(
    State(state): State<WebState>,
    caller: Caller,
    Path(id): Path<i64>,
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

async fn message_raw(
    State(state): State<WebState>,
    _caller: Caller,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let bytes = state.blocking(move |s| s.store.message_raw(id)).await.map_err(ApiError::internal)?;
    let bytes = bytes.ok_or_else(|| ApiError::not_found("mail with its content kept"))?;
    Ok(crate::pages::download(bytes, &format!("mail-{id}.eml")))
}

async fn attachment(
    State(state): State<WebState>,
    _caller: Caller,
    Path((number, position, index)): Path<(String, i64, usize)>,
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

async fn tenants(State(state): State<WebState>, _caller: Caller) -> Result<Json<Page<TenantJson>>, ApiError> {
    let all = state.blocking(|s| s.auth.tenants()).await.map_err(ApiError::internal)?;
    Ok(Json(Page { items: all.iter().map(TenantJson::of).collect(), next_cursor: None }))
}

async fn connections(State(state): State<WebState>, _caller: Caller) -> Result<Json<Page<ConnectionJson>>, ApiError> {
    let (all, tenants) =
        state.blocking(|s| Ok((s.auth.connections()?, s.auth.tenants()?))).await.map_err(ApiError::internal)?;
    let items = all
        .iter()
        .map(|c| ConnectionJson::of(c, tenants.iter().find(|t| t.id == c.tenant_id).map(|t| t.name.clone())))
        .collect();
    Ok(Json(Page { items, next_cursor: None }))
}

#[derive(Debug, Serialize)]
pub struct AuthorizeUrl {
    /// Open it in a browser and sign in within 10 minutes.
    pub authorize_url: String,
}

async fn connection_authorize(
    State(state): State<WebState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<AuthorizeUrl>, ApiError> {
    caller.may_write()?;
    // Like the CLI's `connection authorize`: whoever the token's holder
    // gives the URL to signs in.
    let initiator = format!("api:{}", caller.0.name);
    match state.ops.begin_setup(&name, initiator).await {
        Ok(authorize_url) => Ok(Json(AuthorizeUrl { authorize_url })),
        Err(message) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "setup_not_started", message)),
    }
}

async fn connection_test(
    State(state): State<WebState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Outcome>, ApiError> {
    caller.may_write()?;
    Ok(Outcome::of(state.ops.test_connection(&name).await))
}
