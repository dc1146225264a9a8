//! The admin API under `/_admin/`: JSON in, JSON out, no authentication (a loopback test tool).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::EmulatorError;
use crate::config::{
    AppSpec, ConsentSpec, FaultSpec, IdTokenFault, IssueSpec, SecretSpec, Setup, TenantSpec, UserSpec, UserUpdate,
};
use crate::state::Emu;

type Result<T> = std::result::Result<T, EmulatorError>;

fn body<T: DeserializeOwned>(b: &Bytes) -> Result<T> {
    Ok(serde_json::from_slice(b)?)
}

fn created<T: serde::Serialize>(v: T) -> Response {
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

fn ok() -> Response {
    axum::Json(json!({"ok": true})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRef {
    tenant: String,
    username: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    tenant: String,
    username: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddSecret {
    tenant: String,
    client_id: String,
    value: String,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpireSecret {
    tenant: String,
    client_id: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    seconds: i64,
}

pub(crate) fn routes() -> Router<Arc<Emu>> {
    Router::new()
        .route("/_admin/reset", post(reset))
        .route("/_admin/setup", post(setup))
        .route("/_admin/state", get(state))
        .route("/_admin/tenants", post(tenants))
        .route("/_admin/apps", post(apps))
        .route("/_admin/apps/secrets", post(add_secret))
        .route("/_admin/apps/secrets/expire", post(expire_secret))
        .route("/_admin/users", post(users))
        .route("/_admin/users/update", post(update_user))
        .route("/_admin/users/password", post(password))
        .route("/_admin/users/revoke-tokens", post(revoke_tokens))
        .route("/_admin/consents", post(grant_consent))
        .route("/_admin/consents/revoke", post(revoke_consent))
        .route("/_admin/tokens", post(tokens))
        .route("/_admin/faults", post(add_fault).get(list_faults).delete(clear_faults))
        .route("/_admin/faults/id-token", post(add_id_token_fault))
        .route("/_admin/stats", get(stats))
        .route("/_admin/stats/reset", post(reset_stats))
        .route("/_admin/clock", get(clock))
        .route("/_admin/clock/advance", post(advance))
}

async fn reset(State(emu): State<Arc<Emu>>, RawQuery(q): RawQuery) -> Result<Response> {
    let empty = q.is_some_and(|q| q.split('&').any(|kv| kv == "empty=true" || kv == "empty=1"));
    emu.reset(empty)?;
    tracing::info!(empty, "emulator reset");
    Ok(ok())
}

async fn setup(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    emu.load(&body::<Setup>(&b)?)?;
    Ok(ok())
}

async fn state(State(emu): State<Arc<Emu>>) -> Response {
    axum::Json(emu.dump()).into_response()
}

async fn tenants(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    Ok(created(emu.add_tenant(body::<TenantSpec>(&b)?)?))
}

async fn apps(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    Ok(created(emu.add_app(body::<AppSpec>(&b)?)?))
}

async fn add_secret(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    let s: AddSecret = body(&b)?;
    emu.add_secret(&s.tenant, &s.client_id, SecretSpec { value: s.value, expires_at: s.expires_at })?;
    Ok(ok())
}

async fn expire_secret(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    let s: ExpireSecret = body(&b)?;
    let n = emu.expire_secret(&s.tenant, &s.client_id, s.value.as_deref())?;
    Ok(axum::Json(json!({"ok": true, "expired": n})).into_response())
}

async fn users(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    Ok(created(emu.add_user(body::<UserSpec>(&b)?)?))
}

async fn update_user(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    Ok(axum::Json(emu.update_user(body::<UserUpdate>(&b)?)?).into_response())
}

async fn password(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    let p: PasswordChange = body(&b)?;
    emu.change_password(&p.tenant, &p.username, &p.password)?;
    Ok(ok())
}

async fn revoke_tokens(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    let u: UserRef = body(&b)?;
    emu.revoke_user_tokens(&u.tenant, &u.username)?;
    Ok(ok())
}

async fn grant_consent(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    emu.grant_consent(body::<ConsentSpec>(&b)?)?;
    Ok(ok())
}

async fn revoke_consent(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    emu.revoke_consent(body::<ConsentSpec>(&b)?)?;
    Ok(ok())
}

async fn tokens(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    let spec: IssueSpec = body(&b)?;
    Ok(axum::Json(crate::token::issue_for_admin(&emu, &spec)?).into_response())
}

async fn add_fault(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    emu.faults().add(body::<FaultSpec>(&b)?)?;
    Ok(created(json!({"ok": true})))
}

async fn add_id_token_fault(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    emu.faults().add_id_token(body::<IdTokenFault>(&b)?)?;
    Ok(created(json!({"ok": true})))
}

async fn list_faults(State(emu): State<Arc<Emu>>) -> Response {
    axum::Json(emu.faults().pending()).into_response()
}

async fn clear_faults(State(emu): State<Arc<Emu>>) -> Response {
    emu.faults().clear();
    ok()
}

async fn stats(State(emu): State<Arc<Emu>>) -> Response {
    axum::Json(emu.faults().stats.clone()).into_response()
}

async fn reset_stats(State(emu): State<Arc<Emu>>) -> Response {
    emu.faults().stats = Default::default();
    ok()
}

async fn clock(State(emu): State<Arc<Emu>>) -> Response {
    axum::Json(json!({"now": emu.clock.now_s(), "offset_seconds": emu.clock.offset_s()})).into_response()
}

async fn advance(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    let a: Advance = body(&b)?;
    let offset = emu.clock.advance(a.seconds);
    Ok(axum::Json(json!({"now": emu.clock.now_s(), "offset_seconds": offset})).into_response())
}
