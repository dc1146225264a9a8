//! `/api/v1/outbox` and agents' replies: `POST /api/v1/tickets/{number}/reply`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;

use crate::WebState;
use crate::api::{ApiError, ApiPath, Caller, ErrorJson, Page, json_body};
use crate::json::OutboxMailJson;

pub(crate) fn routes() -> Router<WebState> {
    Router::new()
        .route("/api/v1/outbox", get(list))
        .route("/api/v1/outbox/{id}/resend", post(resend))
        .route("/api/v1/tickets/{number}/reply", post(reply))
}

#[utoipa::path(
    get,
    path = "/api/v1/outbox",
    tag = "outbox",
    summary = "Every mail the robot sends, newest first",
    responses(
        (status = 200, description = "Outbound mail (as `outbox list --json`)", body = Page<OutboxMailJson>),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<WebState>,
    _caller: Caller,
) -> Result<Json<Page<OutboxMailJson>>, ApiError> {
    let mails = state.blocking(|s| s.outbox.mails()).await.map_err(ApiError::internal)?;
    let items = mails.iter().rev().map(|m| OutboxMailJson::of(m, &state.tag)).collect();
    Ok(Json(Page { items, next_cursor: None }))
}

#[utoipa::path(
    post,
    path = "/api/v1/outbox/{id}/resend",
    tag = "outbox",
    summary = "Queue a mail again, now (same Message-ID)",
    params(("id" = i64, Path, description = "The outbound mail's id")),
    responses(
        (status = 200, description = "The mail, queued again", body = OutboxMailJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn resend(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<OutboxMailJson>, ApiError> {
    caller.may_write()?;
    if !state.blocking(move |s| s.outbox.resend_mail(id)).await.map_err(ApiError::internal)? {
        return Err(ApiError::not_found("outbound mail"));
    }
    let mails = state.blocking(|s| s.outbox.mails()).await.map_err(ApiError::internal)?;
    let m = mails.iter().find(|m| m.id == id).ok_or_else(|| ApiError::not_found("outbound mail"))?;
    Ok(Json(OutboxMailJson::of(m, &state.tag)))
}

/// A file sent with a reply.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyAttachment {
    #[schema(min_length = 1)]
    filename: String,
    /// Default `application/octet-stream`.
    content_type: Option<String>,
    /// The file's bytes, base64.
    content_base64: String,
}

/// An agent's reply.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    #[schema(min_length = 1, pattern = r"\S")]
    text: String,
    #[serde(default)]
    attachments: Vec<ReplyAttachment>,
}

#[utoipa::path(
    post,
    path = "/api/v1/tickets/{number}/reply",
    tag = "tickets",
    summary = "Answer the requester by mail",
    params(("number" = String, Path, description = "The ticket number as the CLI prints it (TKT-000123)")),
    request_body = ReplyBody,
    responses(
        (status = 201, description = "The reply, queued in the outbox", body = OutboxMailJson),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
        (status = 422, description = "The robot refuses what was asked; the message says why", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn reply(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(number): ApiPath<String>,
    body: Result<Json<ReplyBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<OutboxMailJson>), ApiError> {
    caller.may_write()?;
    let body = json_body(body, r#"{"text": "...", "attachments": [{"filename", "content_type", "content_base64"}]}"#)?;
    let id = state.tag.parse_number(&number).ok_or_else(|| ApiError::not_found("ticket"))?;
    let id = i64::try_from(id).map_err(|_| ApiError::not_found("ticket"))?;
    if state.blocking(move |s| s.store.ticket(id)).await.map_err(ApiError::internal)?.is_none() {
        return Err(ApiError::not_found("ticket"));
    }
    let mut files = Vec::with_capacity(body.attachments.len());
    for a in body.attachments {
        let bytes = base64::engine::general_purpose::STANDARD.decode(a.content_base64.trim()).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("{}: content_base64 is not base64: {e}", a.filename),
            )
        })?;
        let content_type = a.content_type.unwrap_or_else(|| "application/octet-stream".into());
        files.push(crate::ops::ReplyFile { filename: a.filename, content_type, bytes });
    }
    let queued = state
        .ops
        .reply(&number, body.text, files)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", e))?;
    Ok((StatusCode::CREATED, Json(queued)))
}
