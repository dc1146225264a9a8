//! The HTTP side of `serve`: liveness and metrics for now; the admin UI,
//! REST API and OAuth redirect join here in later issues.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mailrobot_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

#[derive(Clone)]
pub struct HttpState {
    pub store: Arc<dyn Store>,
    pub metrics: PrometheusHandle,
}

pub fn router(state: HttpState) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics)).with_state(state)
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
