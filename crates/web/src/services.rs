//! Services: Microsoft 365's capabilities and their default scopes, editable
//! (the seed's step 11), and generic OAuth2.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::response::Response;
use mailrobot_store::{Capability, Mode, ServiceScopes};
use serde::Deserialize;

use crate::pages::{Layout, csrf_refused, error_page, render};
use crate::session::SignedIn;
use crate::{WebState, views};

pub struct ScopesRow {
    pub capability: &'static str,
    pub capability_label: &'static str,
    pub mode: &'static str,
    pub mode_label: &'static str,
    pub scopes: String,
}

#[derive(Template)]
#[template(path = "services.html")]
struct ServicesPage {
    layout: Option<Layout>,
    csrf: String,
    rows: Vec<ScopesRow>,
    notice: Option<String>,
    message: Option<String>,
}

async fn show(state: &WebState, signed_in: &SignedIn, notice: Option<String>, message: Option<String>) -> Response {
    let all = match state.blocking(|s| s.auth.service_scopes()).await {
        Ok(all) => all,
        Err(err) => return error_page(&err),
    };
    let rows = all
        .iter()
        .map(|s| ScopesRow {
            capability: s.capability.as_str(),
            capability_label: views::capability_label(s.capability),
            mode: s.mode.as_str(),
            mode_label: if s.mode == Mode::Delegated { "Delegated" } else { "Application" },
            scopes: s.scopes.join(" "),
        })
        .collect();
    render(&ServicesPage {
        layout: Some(Layout::new(signed_in, "Services")),
        csrf: signed_in.session.csrf_token.clone(),
        rows,
        notice,
        message,
    })
}

pub async fn page(State(state): State<WebState>, signed_in: SignedIn) -> Response {
    show(&state, &signed_in, None, None).await
}

#[derive(Deserialize)]
pub struct ScopesForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    capability: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    scopes: String,
}

pub async fn save(State(state): State<WebState>, signed_in: SignedIn, Form(form): Form<ScopesForm>) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let (Ok(capability), Ok(mode)) = (form.capability.parse::<Capability>(), form.mode.parse::<Mode>()) else {
        return show(&state, &signed_in, None, Some("Unknown capability or mode.".into())).await;
    };
    let scopes =
        ServiceScopes { capability, mode, scopes: form.scopes.split_whitespace().map(str::to_string).collect() };
    let what = format!("{} ({})", views::capability_label(capability), form.mode);
    match state.ops.set_service_scopes(scopes).await {
        Ok(()) => show(&state, &signed_in, Some(format!("Default scopes for {what} saved.")), None).await,
        Err(message) => show(&state, &signed_in, None, Some(format!("Not saved: {message}"))).await,
    }
}
