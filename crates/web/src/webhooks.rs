//! Webhooks in the UI: added (URL, secret, events), enabled or disabled,
//! removed; each one's deliveries with the receiver's last answer, resendable.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use mailrobot_store::{DeliveryFilter, WebhookEvent};
use serde::Deserialize;

use crate::WebState;
use crate::json::{DeliveryJson, WebhookJson};
use crate::pages::{CsrfForm, Layout, csrf_refused, error_page, not_found, render};
use crate::session::SignedIn;

/// The deliveries a webhook's page shows (newest first).
const DELIVERIES_SHOWN: usize = 200;

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    layout: Option<Layout>,
    csrf: String,
    webhooks: Vec<WebhookJson>,
    /// The form's values after a refusal (never the secret).
    url: String,
    /// (field name, event, checked).
    events: Vec<(&'static str, WebhookEvent, bool)>,
    notice: Option<String>,
    message: Option<String>,
}

#[derive(Template)]
#[template(path = "webhook.html")]
struct WebhookPage {
    layout: Option<Layout>,
    csrf: String,
    webhook: WebhookJson,
    deliveries: Vec<DeliveryJson>,
    notice: Option<String>,
}

/// The form's field of each event (the names [`NewWebhook`] reads).
fn field_of(event: WebhookEvent) -> &'static str {
    match event {
        WebhookEvent::TicketCreated => "ticket_created",
        WebhookEvent::EntryAdded => "entry_added",
        WebhookEvent::TicketStatusChanged => "ticket_status_changed",
    }
}

fn all_events(checked: &[WebhookEvent]) -> Vec<(&'static str, WebhookEvent, bool)> {
    WebhookEvent::ALL.iter().map(|e| (field_of(*e), *e, checked.is_empty() || checked.contains(e))).collect()
}

async fn show(
    state: &WebState,
    signed_in: &SignedIn,
    form: Option<(String, Vec<WebhookEvent>)>,
    notice: Option<String>,
    message: Option<String>,
) -> Response {
    let webhooks = match state.blocking(|s| WebhookJson::all(s.outbox.as_ref())).await {
        Ok(webhooks) => webhooks,
        Err(err) => return error_page(&err),
    };
    let (url, checked) = form.unwrap_or_default();
    render(&WebhooksPage {
        layout: Some(Layout::new(signed_in, "Webhooks")),
        csrf: signed_in.session.csrf_token.clone(),
        webhooks,
        url,
        events: all_events(&checked),
        notice,
        message,
    })
}

pub async fn list(State(state): State<WebState>, signed_in: SignedIn) -> Response {
    show(&state, &signed_in, None, None, None).await
}

#[derive(Deserialize)]
pub struct NewWebhook {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    secret: String,
    // One checkbox per event (a form repeats no names here).
    ticket_created: Option<String>,
    entry_added: Option<String>,
    ticket_status_changed: Option<String>,
}

pub async fn create(State(state): State<WebState>, signed_in: SignedIn, Form(form): Form<NewWebhook>) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let events: Vec<WebhookEvent> = [
        (form.ticket_created.is_some(), WebhookEvent::TicketCreated),
        (form.entry_added.is_some(), WebhookEvent::EntryAdded),
        (form.ticket_status_changed.is_some(), WebhookEvent::TicketStatusChanged),
    ]
    .into_iter()
    .filter_map(|(on, e)| on.then_some(e))
    .collect();
    let url = form.url.trim().to_string();
    if events.is_empty() {
        let message = "Choose at least one event.".to_string();
        return show(&state, &signed_in, Some((url, events)), None, Some(message)).await;
    }
    match state.ops.add_webhook(url.clone(), events.clone(), form.secret).await {
        Ok(w) => show(&state, &signed_in, None, Some(format!("Webhook #{} added: {}", w.id, w.url)), None).await,
        Err(message) => show(&state, &signed_in, Some((url, events)), None, Some(message)).await,
    }
}

pub async fn page(State(state): State<WebState>, signed_in: SignedIn, Path(id): Path<i64>) -> Response {
    show_one(&state, &signed_in, id, None).await
}

async fn show_one(state: &WebState, signed_in: &SignedIn, id: i64, notice: Option<String>) -> Response {
    let filter = DeliveryFilter { webhook_id: Some(id), limit: Some(DELIVERIES_SHOWN), ..Default::default() };
    let found =
        state.blocking(move |s| Ok((WebhookJson::all(s.outbox.as_ref())?, s.outbox.deliveries(&filter)?))).await;
    let (webhooks, deliveries) = match found {
        Ok(found) => found,
        Err(err) => return error_page(&err),
    };
    let Some(webhook) = webhooks.into_iter().find(|w| w.id == id) else {
        return not_found("There is no such webhook.");
    };
    render(&WebhookPage {
        layout: Some(Layout::new(signed_in, "Webhooks")),
        csrf: signed_in.session.csrf_token.clone(),
        webhook,
        deliveries: deliveries.iter().map(|d| DeliveryJson::of(d, &state.tag)).collect(),
        notice,
    })
}

/// Enable, Disable, Remove.
pub async fn action(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path((id, action)): Path<(i64, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let done = match action.as_str() {
        "enable" => state.blocking(move |s| s.outbox.set_webhook_enabled(id, true)).await,
        "disable" => state.blocking(move |s| s.outbox.set_webhook_enabled(id, false)).await,
        "remove" => state.blocking(move |s| s.outbox.remove_webhook(id)).await,
        _ => return not_found("There is no such action."),
    };
    match done {
        Ok(true) if action == "remove" => Redirect::to("/webhooks").into_response(),
        Ok(true) => Redirect::to(&format!("/webhooks/{id}")).into_response(),
        Ok(false) => not_found("There is no such webhook."),
        Err(err) => error_page(&err),
    }
}

pub async fn resend(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path((id, delivery)): Path<(i64, i64)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let found = state.blocking(move |s| s.outbox.delivery(delivery)).await;
    match found {
        Ok(Some(d)) if d.webhook_id == id => {}
        Ok(_) => return not_found("There is no such delivery."),
        Err(err) => return error_page(&err),
    }
    if let Err(err) = state.blocking(move |s| s.outbox.resend_delivery(delivery)).await {
        return error_page(&err);
    }
    show_one(&state, &signed_in, id, Some(format!("Delivery {delivery} queued again; it is sent within seconds.")))
        .await
}
