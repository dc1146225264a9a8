//! `/api/v1/webhooks`: receivers of ticket events and their deliveries.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use mailrobot_store::{DeliveryFilter, DeliveryState, WebhookEvent};
use serde::Deserialize;

use crate::WebState;
use crate::api::{ApiError, ApiPath, ApiQuery, Caller, ErrorJson, Outcome, Page, PageQuery, json_body, parse_param};
use crate::json::{DeliveryJson, WebhookJson};

pub(crate) fn routes() -> Router<WebState> {
    Router::new()
        .route("/api/v1/webhooks", get(list).post(create))
        .route("/api/v1/webhooks/{id}", get(one).patch(change).delete(remove))
        .route("/api/v1/webhooks/{id}/deliveries", get(deliveries))
        .route("/api/v1/webhooks/{id}/deliveries/{delivery}/resend", post(resend))
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    summary = "List webhooks",
    responses(
        (status = 200, description = "Every webhook (never its secret)", body = Page<WebhookJson>),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(State(state): State<WebState>, _caller: Caller) -> Result<Json<Page<WebhookJson>>, ApiError> {
    let items = state.blocking(|s| WebhookJson::all(s.outbox.as_ref())).await.map_err(ApiError::internal)?;
    Ok(Json(Page { items, next_cursor: None }))
}

async fn find(state: &WebState, id: i64) -> Result<WebhookJson, ApiError> {
    let all = state.blocking(|s| WebhookJson::all(s.outbox.as_ref())).await.map_err(ApiError::internal)?;
    all.into_iter().find(|w| w.id == id).ok_or_else(|| ApiError::not_found("webhook"))
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "A webhook",
    params(
        ("id" = i64, Path, description = "The webhook's id"),
    ),
    responses(
        (status = 200, description = "The webhook", body = WebhookJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn one(
    State(state): State<WebState>,
    _caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<WebhookJson>, ApiError> {
    Ok(Json(find(&state, id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// http:// or https:// with a host.
    #[schema(pattern = "^https?://[^/?#@\\s]+")]
    url: String,
    /// `whsec_<base64>`: write-only, never returned.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{32,88}={0,2}$")]
    secret: String,
    #[serde(default)]
    events: Vec<WebhookEvent>,
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    summary = "Add a webhook",
    request_body = NewWebhook,
    responses(
        (status = 201, description = "The webhook", body = WebhookJson),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 422, description = "The robot refuses what was asked; the message says why", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    State(state): State<WebState>,
    caller: Caller,
    body: Result<Json<NewWebhook>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<WebhookJson>), ApiError> {
    caller.may_write()?;
    let new = json_body(body, r#"{"url": "https://…", "secret": "whsec_…", "events": ["ticket.created", …]}"#)?;
    let webhook = state
        .ops
        .add_webhook(new.url, new.events, new.secret)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_webhook", e))?;
    Ok((StatusCode::CREATED, Json(WebhookJson::of(&webhook, 0))))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    enabled: bool,
}

#[utoipa::path(
    patch,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Enable or disable a webhook",
    params(
        ("id" = i64, Path, description = "The webhook's id"),
    ),
    request_body = WebhookPatch,
    responses(
        (status = 200, description = "The webhook, changed", body = WebhookJson),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn change(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    body: Result<Json<WebhookPatch>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<WebhookJson>, ApiError> {
    caller.may_write()?;
    let patch = json_body(body, r#"{"enabled": true|false}"#)?;
    let found = state.blocking(move |s| s.outbox.set_webhook_enabled(id, patch.enabled)).await;
    if !found.map_err(ApiError::internal)? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(Json(find(&state, id).await?))
}

#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Remove a webhook and its queued deliveries",
    params(
        ("id" = i64, Path, description = "The webhook's id"),
    ),
    responses(
        (status = 200, description = "Removed", body = Outcome),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn remove(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Outcome>, ApiError> {
    caller.may_write()?;
    if !state.blocking(move |s| s.outbox.remove_webhook(id)).await.map_err(ApiError::internal)? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(Json(Outcome { ok: true, message: format!("webhook #{id} removed, with its queued deliveries") }))
}

#[derive(Debug, Deserialize)]
pub struct DeliveriesQuery {
    state: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    summary = "A webhook's deliveries",
    params(
        ("id" = i64, Path, description = "The webhook's id"),
        ("state" = Option<DeliveryState>, Query, description = "Only deliveries in this state"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Items per page, 1 to 200 (default 50)"),
        ("cursor" = Option<String>, Query, pattern = "^[0-9]{0,18}$", description = "The `next_cursor` of the page before"),
    ),
    responses(
        (status = 200, description = "A page of its deliveries, newest first", body = Page<DeliveryJson>),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn deliveries(
    State(state): State<WebState>,
    _caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Json<Page<DeliveryJson>>, ApiError> {
    let (limit, before) = query.page.read()?;
    let delivery_state = parse_param::<DeliveryState>(query.state.as_deref(), "invalid_state")?;
    find(&state, id).await?;
    let filter = DeliveryFilter { webhook_id: Some(id), state: delivery_state, before, limit: Some(limit + 1) };
    let mut found = state.blocking(move |s| s.outbox.deliveries(&filter)).await.map_err(ApiError::internal)?;
    let next_cursor = (found.len() > limit).then(|| {
        found.truncate(limit);
        found.last().map(|d| d.id.to_string()).unwrap_or_default()
    });
    Ok(Json(Page { items: found.iter().map(|d| DeliveryJson::of(d, &state.tag)).collect(), next_cursor }))
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/deliveries/{delivery}/resend",
    tag = "webhooks",
    summary = "Send a delivery again",
    params(
        ("id" = i64, Path, description = "The webhook's id"),
        ("delivery" = i64, Path, description = "The delivery's id"),
    ),
    responses(
        (status = 200, description = "The delivery, queued again", body = DeliveryJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn resend(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath((id, delivery)): ApiPath<(i64, i64)>,
) -> Result<Json<DeliveryJson>, ApiError> {
    caller.may_write()?;
    let view = state.blocking(move |s| s.outbox.delivery(delivery)).await.map_err(ApiError::internal)?;
    if view.is_none_or(|d| d.webhook_id != id) {
        return Err(ApiError::not_found("delivery"));
    }
    state.blocking(move |s| s.outbox.resend_delivery(delivery)).await.map_err(ApiError::internal)?;
    let view = state.blocking(move |s| s.outbox.delivery(delivery)).await.map_err(ApiError::internal)?;
    Ok(Json(DeliveryJson::of(&view.ok_or_else(|| ApiError::not_found("delivery"))?, &state.tag)))
}
