//! `/api/v1/rules`, `/api/v1/templates` and `/api/v1/contacts`: what the
//! CLI's `rules`, `templates` and `contacts` commands do, in the same JSON.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use mailrobot_core::{MailTemplate, OutgoingKind, RuleDefinition};
use mailrobot_store::{NewContact, NewRule, StoreError, TemplateKey};
use serde::Deserialize;

use crate::api::{ApiError, ApiPath, ApiQuery, Caller, ErrorJson, Page, json_body};
use crate::json::{ContactDetailJson, ContactJson, RuleJson, TemplateJson, TemplatePreviewJson};
use crate::{WebError, WebState};

pub(crate) fn routes() -> Router<WebState> {
    Router::new()
        .route("/api/v1/rules", get(rules).post(create_rule))
        .route("/api/v1/rules/{id}", axum::routing::delete(remove_rule))
        .route("/api/v1/messages/{id}/rules", get(test_rules))
        .route("/api/v1/templates", get(templates))
        .route("/api/v1/templates/{kind}", put(set_template).delete(remove_template))
        .route("/api/v1/templates/{kind}/preview", get(preview_template))
        .route("/api/v1/contacts", get(contacts).post(create_contact))
        .route("/api/v1/contacts/{email}", get(contact))
}

/// The store's refusals as the API says them: what was asked cannot be
/// stored (422), or is not there (404).
fn store_error(err: WebError) -> ApiError {
    match err {
        WebError::Store(StoreError::Invalid(message)) => crate::api_admin::refused(message),
        WebError::Store(StoreError::NotFound(message)) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
        err => ApiError::internal(err),
    }
}

async fn mailbox_id(state: &WebState, name: Option<String>) -> Result<Option<i64>, ApiError> {
    let Some(name) = name.filter(|n| !n.trim().is_empty()) else { return Ok(None) };
    Ok(Some(crate::api_admin::find_mailbox(state, &name).await?.id))
}

// --- rules ---

#[utoipa::path(
    get,
    path = "/api/v1/rules",
    tag = "rules",
    summary = "Every rule, in the order they apply",
    responses(
        (status = 200, description = "The rules (as `rules list --json`)", body = Page<RuleJson>),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn rules(State(state): State<WebState>, _caller: Caller) -> Result<Json<Page<RuleJson>>, ApiError> {
    let rules = state.blocking(|s| s.directory.rules()).await.map_err(store_error)?;
    Ok(Json(Page { items: rules.iter().map(RuleJson::of).collect(), next_cursor: None }))
}

/// A new rule: when all `conditions` match a mail, its `actions` apply.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    #[schema(min_length = 1, pattern = r"\S")]
    name: String,
    /// Only for this mailbox (absent: every mailbox).
    mailbox: Option<String>,
    /// Its place in the order, 1 first (absent: last).
    position: Option<i64>,
    /// e.g. `[{"from": ["example.com"]}, {"subject_contains": "invoice"}]`; see docs/rules.md.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    conditions: Vec<serde_json::Value>,
    /// e.g. `[{"set_queue": "billing"}, "no_acknowledgement", "stop"]`.
    #[schema(value_type = Vec<Object>, min_items = 1)]
    actions: Vec<serde_json::Value>,
}

#[utoipa::path(
    post,
    path = "/api/v1/rules",
    tag = "rules",
    summary = "Add a rule",
    request_body = RuleBody,
    responses(
        (status = 201, description = "The rule", body = RuleJson),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
        (status = 422, description = "The robot refuses what was asked; the message says why", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_rule(
    State(state): State<WebState>,
    caller: Caller,
    body: Result<Json<RuleBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<RuleJson>), ApiError> {
    caller.may_write()?;
    let body = json_body(body, r#"{"name", "mailbox", "position", "conditions": [...], "actions": [...]}"#)?;
    let json = serde_json::json!({"conditions": body.conditions, "actions": body.actions}).to_string();
    let definition = RuleDefinition::parse(&json).map_err(|e| crate::api_admin::refused(e.to_string()))?;
    let mailbox_id = mailbox_id(&state, body.mailbox).await?;
    let rule = NewRule { name: body.name, mailbox_id, position: body.position, definition };
    let added = state.blocking(move |s| s.directory.add_rule(&rule)).await.map_err(store_error)?;
    Ok((StatusCode::CREATED, Json(RuleJson::of(&added))))
}

#[utoipa::path(
    delete,
    path = "/api/v1/rules/{id}",
    tag = "rules",
    summary = "Remove a rule",
    params(("id" = i64, Path, description = "The rule's id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn remove_rule(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    caller.may_write()?;
    if !state.blocking(move |s| s.directory.remove_rule(id)).await.map_err(store_error)? {
        return Err(ApiError::not_found("rule"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/v1/messages/{id}/rules",
    tag = "rules",
    summary = "Which rules match a journaled mail and what they would do (changes nothing)",
    params(("id" = i64, Path, description = "The journal id")),
    responses(
        (status = 200, description = "As `rules test --message ID --json`", body = Object),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
        (status = 422, description = "The robot refuses what was asked; the message says why", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn test_rules(
    State(state): State<WebState>,
    _caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tag = state.tag.clone();
    let test = state.blocking(move |s| s.directory.test_rules(id, &tag)).await.map_err(store_error)?;
    Ok(Json(serde_json::to_value(&test).map_err(ApiError::internal)?))
}

// --- templates ---

#[utoipa::path(
    get,
    path = "/api/v1/templates",
    tag = "templates",
    summary = "Stored mail templates (kinds without one use the built-in template)",
    responses(
        (status = 200, description = "As `templates list --json`", body = Page<TemplateJson>),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn templates(
    State(state): State<WebState>,
    _caller: Caller,
) -> Result<Json<Page<TemplateJson>>, ApiError> {
    let templates = state.blocking(|s| s.directory.templates()).await.map_err(store_error)?;
    Ok(Json(Page { items: templates.iter().map(TemplateJson::of).collect(), next_cursor: None }))
}

/// Which template of a kind: its mailbox and language.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TemplatePlace {
    /// Only for this mailbox (absent: every mailbox).
    mailbox: Option<String>,
    /// A language tag such as `de` (absent: any language).
    language: Option<String>,
}

async fn template_key(state: &WebState, kind: &str, place: TemplatePlace) -> Result<TemplateKey, ApiError> {
    let kind: OutgoingKind = kind.parse().map_err(|_| ApiError::not_found("kind of template"))?;
    let mailbox_id = mailbox_id(state, place.mailbox).await?;
    Ok(TemplateKey { kind, mailbox_id, language: place.language.unwrap_or_default().trim().to_ascii_lowercase() })
}

/// A template's parts (minijinja).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    #[schema(min_length = 1)]
    subject: String,
    #[schema(min_length = 1)]
    text: String,
    html: Option<String>,
}

#[utoipa::path(
    put,
    path = "/api/v1/templates/{kind}",
    tag = "templates",
    summary = "Store a template (checked by rendering it with sample values first)",
    params(
        ("kind" = String, Path, description = "acknowledgement, notification, reply or rejection"),
        TemplatePlace,
    ),
    request_body = TemplateBody,
    responses(
        (status = 200, description = "The stored template", body = TemplateJson),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
        (status = 422, description = "The robot refuses what was asked; the message says why", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn set_template(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(kind): ApiPath<String>,
    ApiQuery(place): ApiQuery<TemplatePlace>,
    body: Result<Json<TemplateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<TemplateJson>, ApiError> {
    caller.may_write()?;
    let key = template_key(&state, &kind, place).await?;
    let body = json_body(body, r#"{"subject", "text", "html"}"#)?;
    let template = MailTemplate { subject: body.subject, text: body.text, html: body.html };
    let stored = state.blocking(move |s| s.directory.set_template(&key, &template)).await.map_err(store_error)?;
    Ok(Json(TemplateJson::of(&stored)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/templates/{kind}",
    tag = "templates",
    summary = "Remove a stored template: the built-in one applies again",
    params(
        ("kind" = String, Path, description = "acknowledgement, notification, reply or rejection"),
        TemplatePlace,
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
        (status = 422, description = "The robot refuses what was asked; the message says why", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn remove_template(
    State(state): State<WebState>,
    caller: Caller,
    ApiPath(kind): ApiPath<String>,
    ApiQuery(place): ApiQuery<TemplatePlace>,
) -> Result<StatusCode, ApiError> {
    caller.may_write()?;
    let key = template_key(&state, &kind, place).await?;
    if !state.blocking(move |s| s.directory.remove_template(&key)).await.map_err(store_error)? {
        return Err(ApiError::not_found("stored template"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/v1/templates/{kind}/preview",
    tag = "templates",
    summary = "The template that applies there, rendered with sample values",
    params(
        ("kind" = String, Path, description = "acknowledgement, notification, reply or rejection"),
        TemplatePlace,
    ),
    responses(
        (status = 200, description = "As `templates show KIND --json`", body = TemplatePreviewJson),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
        (status = 422, description = "The robot refuses what was asked; the message says why", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn preview_template(
    State(state): State<WebState>,
    _caller: Caller,
    ApiPath(kind): ApiPath<String>,
    ApiQuery(place): ApiQuery<TemplatePlace>,
) -> Result<Json<TemplatePreviewJson>, ApiError> {
    let mailbox = place.mailbox.clone().filter(|m| !m.trim().is_empty());
    let key = template_key(&state, &kind, place).await?;
    let stored = state.blocking(|s| s.directory.templates()).await.map_err(store_error)?;
    let preview =
        TemplatePreviewJson::of(&stored, &key, mailbox).map_err(|e| crate::api_admin::refused(e.to_string()))?;
    Ok(Json(preview))
}

// --- contacts ---

#[utoipa::path(
    get,
    path = "/api/v1/contacts",
    tag = "contacts",
    summary = "The sender directory",
    responses(
        (status = 200, description = "As `contacts list --json`", body = Page<ContactJson>),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn contacts(
    State(state): State<WebState>,
    _caller: Caller,
) -> Result<Json<Page<ContactJson>>, ApiError> {
    let contacts = state.blocking(|s| s.directory.contacts()).await.map_err(store_error)?;
    Ok(Json(Page { items: contacts.iter().map(ContactJson::of).collect(), next_cursor: None }))
}

/// A contact to add (or whose name and organisation to update).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactBody {
    #[schema(min_length = 3, pattern = "@")]
    email: String,
    name: Option<String>,
    organisation: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/contacts",
    tag = "contacts",
    summary = "Add a contact (or update a known one's name and organisation)",
    request_body = ContactBody,
    responses(
        (status = 201, description = "The contact", body = ContactJson),
        (status = 400, description = "What was sent cannot be used", body = ErrorJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 403, description = "A read-only token asked for a change", body = ErrorJson),
        (status = 422, description = "The robot refuses what was asked; the message says why", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_contact(
    State(state): State<WebState>,
    caller: Caller,
    body: Result<Json<ContactBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<ContactJson>), ApiError> {
    caller.may_write()?;
    let body = json_body(body, r#"{"email", "name", "organisation"}"#)?;
    let new = NewContact { email: body.email, name: body.name, organisation: body.organisation };
    let contact = state.blocking(move |s| s.directory.add_contact(&new)).await.map_err(store_error)?;
    Ok((StatusCode::CREATED, Json(ContactJson::of(&contact))))
}

#[utoipa::path(
    get,
    path = "/api/v1/contacts/{email}",
    tag = "contacts",
    summary = "A contact and the tickets they requested",
    params(("email" = String, Path, description = "The address (case and +tags are folded)")),
    responses(
        (status = 200, description = "As `contacts show EMAIL --json`", body = ContactDetailJson),
        (status = 401, description = "No API token, or an unknown or revoked one", body = ErrorJson),
        (status = 404, description = "No such thing", body = ErrorJson),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn contact(
    State(state): State<WebState>,
    _caller: Caller,
    ApiPath(email): ApiPath<String>,
) -> Result<Json<ContactDetailJson>, ApiError> {
    let found = state.blocking(move |s| s.directory.contact(&email)).await.map_err(store_error)?;
    let (contact, tickets) = found.ok_or_else(|| ApiError::not_found("contact"))?;
    Ok(Json(ContactDetailJson::of(&contact, &tickets, &state.tag)))
}
