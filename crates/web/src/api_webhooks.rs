//! `/api/v1/webhooks`: receivers of ticket events and their deliveries.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use mailrobot_store::{DeliveryFilter, DeliveryState, WebhookEvent};
use serde::Deserialize;

use crate::WebState;
use crate::api::{ApiError, Caller, Outcome, Page, PageQuery, json_body, parse_param};
use crate::json::{DeliveryJson, WebhookJson};

pub(crate) fn routes() -> Router<WebState> {
    Router::new()
        .route("/api/v1/webhooks", get(list).post(create))
        .route("/api/v1/webhooks/{id}", get(one).patch(change).delete(remove))
        .route("/api/v1/webhooks/{id}/deliveries", get(deliveries))
        .route("/api/v1/webhooks/{id}/deliveries/{delivery}/resend", post(resend))
}

async fn list(State(state): State<WebState>, _caller: Caller) -> Result<Json<Page<WebhookJson>>, ApiError> {
    let items = state.blocking(|s| WebhookJson::all(s.outbox.as_ref())).await.map_err(ApiError::internal)?;
    Ok(Json(Page { items, next_cursor: None }))
}

async fn find(state: &WebState, id: i64) -> Result<WebhookJson, ApiError> {
    let all = state.blocking(|s| WebhookJson::all(s.outbox.as_ref())).await.map_err(ApiError::internal)?;
    all.into_iter().find(|w| w.id == id).ok_or_else(|| ApiError::not_found("webhook"))
}

async fn one(
    State(state): State<WebState>,
    _caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<WebhookJson>, ApiError> {
    Ok(Json(find(&state, id).await?))
}

#[derive(Debug, Deserialize)]
pub struct NewWebhook {
    url: String,
    /// `whsec_<base64>`: write-only, never returned.
    secret: String,
    #[serde(default)]
    events: Vec<WebhookEvent>,
}

async fn create(
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

#[derive(Debug, Deserialize)]
pub struct WebhookPatch {
    enabled: bool,
}

async fn change(
    State(state): State<WebState>,
    caller: Caller,
    Path(id): Path<i64>,
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

async fn remove(State(state): State<WebState>, caller: Caller, Path(id): Path<i64>) -> Result<Json<Outcome>, ApiError> {
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

async fn deliveries(
    State(state): State<WebState>,
    _caller: Caller,
    Path(id): Path<i64>,
    Query(query): Query<DeliveriesQuery>,
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

async fn resend(
    State(state): State<WebState>,
    caller: Caller,
    Path((id, delivery)): Path<(i64, i64)>,
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
