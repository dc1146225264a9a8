//! The HTTP side of `serve`: liveness and metrics for now; the admin UI,
//! REST API and OAuth redirect join here in later issues.

use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mailrobot_auth::TokenBroker;
use mailrobot_auth::model::REDIRECT_PATH;
use mailrobot_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;

#[derive(Clone)]
pub struct HttpState {
    pub store: Arc<dyn Store>,
    pub metrics: PrometheusHandle,
    pub broker: Arc<TokenBroker>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        // The seed's redirect path, so app registrations made by its guide work.
        .route(REDIRECT_PATH, get(redirect_query).post(redirect_form))
        .with_state(state)
}

/// What the identity platform sends back to the redirect URI.
#[derive(Debug, Default, Deserialize)]
pub struct RedirectParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn redirect_query(State(state): State<HttpState>, Query(params): Query<RedirectParams>) -> Response {
    complete_setup(state, params).await
}

async fn redirect_form(State(state): State<HttpState>, Form(params): Form<RedirectParams>) -> Response {
    complete_setup(state, params).await
}

async fn complete_setup(state: HttpState, params: RedirectParams) -> Response {
    let Some(flow_state) = params.state.as_deref().filter(|s| !s.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Setup Authentication failed",
            "The answer carries no state: start Setup Authentication again.",
        );
    };
    let error = params.error.as_deref().map(|e| (e, params.error_description.as_deref().unwrap_or("")));
    // Flows started from the CLI are bound to their server-side record; the
    // admin UI will bind its flows to the browser session.
    let result = state
        .broker
        .complete_authorization(flow_state, params.code.as_deref(), error, |initiator| initiator == "cli")
        .await;
    match result {
        Ok(connection) => page(
            StatusCode::OK,
            "Setup Authentication complete",
            &format!(
                "Connection {} is ready{}. You can close this window.",
                connection.name,
                connection.authenticated_upn.as_deref().map(|u| format!(", authenticated as {u}")).unwrap_or_default()
            ),
        ),
        Err(err) => {
            tracing::warn!(error = %err, "Setup Authentication failed");
            page(StatusCode::BAD_REQUEST, "Setup Authentication failed", &err.to_string())
        }
    }
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>{t}</h1><p>{m}</p></body></html>",
        t = escape(title),
        m = escape(message)
    );
    (status, Html(body)).into_response()
}

async fn healthz(State(state): State<HttpState>) -> Response {
    let store = state.store.clone();
    let result = tokio::task::spawn_blocking(move || {
        Ok::<_, mailrobot_store::StoreError>((store.counts()?, store.mailboxes()?))
    })
    .await;
    match result {
        Ok(Ok((counts, mailboxes))) => {
            let mailboxes: Vec<_> = mailboxes
                .iter()
                .filter(|m| m.enabled)
                .map(|m| json!({"name": m.name, "status": m.status, "last_error": m.last_error, "consecutive_failures": m.consecutive_failures}))
                .collect();
            Json(json!({"status": "ok", "counts": counts, "mailboxes": mailboxes})).into_response()
        }
        Ok(Err(err)) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "error", "error": err.to_string()})))
            .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"status": "error", "error": err.to_string()})))
            .into_response(),
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let store = state.store.clone();
    if let Ok(Ok(counts)) = tokio::task::spawn_blocking(move || store.counts()).await {
        metrics::gauge!("mailrobot_tickets").set(counts.tickets as f64);
        metrics::gauge!("mailrobot_journal_messages", "state" => "fetched").set(counts.fetched as f64);
        metrics::gauge!("mailrobot_journal_messages", "state" => "processed").set(counts.processed as f64);
        metrics::gauge!("mailrobot_journal_messages", "state" => "failed").set(counts.failed as f64);
        metrics::gauge!("mailrobot_journal_unsettled").set(counts.unsettled as f64);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
