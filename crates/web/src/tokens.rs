//! API tokens in the UI: made (shown once), listed, revoked.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;
use mailrobot_store::ApiToken;
use serde::Deserialize;

use crate::WebState;
use crate::pages::{Layout, csrf_refused, error_page, render};
use crate::session::{SignedIn, random_token, token_sha256};

#[derive(Template)]
#[template(path = "api_tokens.html")]
struct TokensPage {
    layout: Option<Layout>,
    csrf: String,
    tokens: Vec<ApiToken>,
    new_name: String,
    new_token: Option<String>,
    message: Option<String>,
}

async fn show(
    state: &WebState,
    signed_in: &SignedIn,
    new: Option<(String, String)>,
    message: Option<String>,
) -> Response {
    let tokens = match state.blocking(|s| s.admins.api_tokens()).await {
        Ok(tokens) => tokens,
        Err(err) => return error_page(&err),
    };
    let (new_name, new_token) = match new {
        Some((name, token)) => (name, Some(token)),
        None => (String::new(), None),
    };
    render(&TokensPage {
        layout: Some(Layout::new(signed_in, "API tokens")),
        csrf: signed_in.session.csrf_token.clone(),
        tokens,
        new_name,
        new_token,
        message,
    })
}

pub async fn page(State(state): State<WebState>, signed_in: SignedIn) -> Response {
    show(&state, &signed_in, None, None).await
}

#[derive(Deserialize)]
pub struct NewToken {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    read_only: Option<String>,
}

pub async fn create(State(state): State<WebState>, signed_in: SignedIn, Form(form): Form<NewToken>) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let name = form.name.trim().to_string();
    if name.is_empty() {
        return show(&state, &signed_in, None, Some("A token needs a name.".into())).await;
    }
    let token = format!("{}{}", crate::api::TOKEN_PREFIX, random_token());
    let (hash, read_only, lookup) = (token_sha256(&token), form.read_only.is_some(), name.clone());
    match state.blocking(move |s| s.admins.add_api_token(&lookup, &hash, read_only)).await {
        Ok(_) => show(&state, &signed_in, Some((name, token)), None).await,
        Err(err) => show(&state, &signed_in, None, Some(err.to_string())).await,
    }
}

pub async fn revoke(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    Form(form): Form<crate::pages::CsrfForm>,
) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let lookup = name.clone();
    match state.blocking(move |s| s.admins.revoke_api_token(&lookup)).await {
        Ok(true) => show(&state, &signed_in, None, None).await,
        Ok(false) => show(&state, &signed_in, None, Some(format!("No API token named {name}."))).await,
        Err(err) => error_page(&err),
    }
}
