//! Administrators in the UI: listed, added with a password, removed; and
//! one's own password changed (which ends every session of that account,
//! this one too).

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use mailrobot_store::Admin;
use serde::Deserialize;

use crate::WebState;
use crate::pages::{CsrfForm, Layout, csrf_refused, error_page, render};
use crate::session::SignedIn;

#[derive(Template)]
#[template(path = "administrators.html")]
struct AdministratorsPage {
    layout: Option<Layout>,
    csrf: String,
    me: String,
    admins: Vec<Admin>,
    notice: Option<String>,
    message: Option<String>,
}

async fn show(state: &WebState, signed_in: &SignedIn, notice: Option<String>, message: Option<String>) -> Response {
    let admins = match state.blocking(|s| s.admins.admins()).await {
        Ok(admins) => admins,
        Err(err) => return error_page(&err),
    };
    render(&AdministratorsPage {
        layout: Some(Layout::new(signed_in, "Administrators")),
        csrf: signed_in.session.csrf_token.clone(),
        me: signed_in.session.admin.email.clone(),
        admins,
        notice,
        message,
    })
}

pub async fn page(State(state): State<WebState>, signed_in: SignedIn) -> Response {
    show(&state, &signed_in, None, None).await
}

#[derive(Deserialize)]
pub struct NewAdmin {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// Hashes off the async threads (Argon2id takes a while on purpose).
async fn hash(password: String) -> Result<String, String> {
    match tokio::task::spawn_blocking(move || crate::password::hash(&password)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

pub async fn add(State(state): State<WebState>, signed_in: SignedIn, Form(form): Form<NewAdmin>) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let email = form.email.trim().to_string();
    if !email.contains('@') {
        return show(&state, &signed_in, None, Some("Give the administrator's email address.".into())).await;
    }
    let password_hash = match hash(form.password).await {
        Ok(h) => h,
        Err(message) => return show(&state, &signed_in, None, Some(format!("Not added: {message}."))).await,
    };
    let lookup = email.clone();
    match state.blocking(move |s| s.admins.add_admin(&lookup, &password_hash)).await {
        Ok(_) => show(&state, &signed_in, Some(format!("Administrator {email} added.")), None).await,
        Err(err) => show(&state, &signed_in, None, Some(format!("Not added: {err}."))).await,
    }
}

pub async fn remove(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path(email): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let admins = match state.blocking(|s| s.admins.admins()).await {
        Ok(admins) => admins,
        Err(err) => return error_page(&err),
    };
    if admins.len() <= 1 {
        let message = "The last administrator stays: add another one first.".to_string();
        return show(&state, &signed_in, None, Some(message)).await;
    }
    let lookup = email.clone();
    match state.blocking(move |s| s.admins.remove_admin(&lookup)).await {
        Ok(true) if email.eq_ignore_ascii_case(&signed_in.session.admin.email) => {
            Redirect::to("/sign-in").into_response()
        }
        Ok(true) => {
            show(&state, &signed_in, Some(format!("Administrator {email} removed; their sessions ended.")), None).await
        }
        Ok(false) => show(&state, &signed_in, None, Some(format!("No administrator {email}."))).await,
        Err(err) => error_page(&err),
    }
}

#[derive(Deserialize)]
pub struct PasswordChange {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

pub async fn change_password(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Form(form): Form<PasswordChange>,
) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let email = signed_in.session.admin.email.clone();
    let lookup = email.clone();
    let stored = match state.blocking(move |s| s.admins.admin_for_sign_in(&lookup)).await {
        Ok(Some((_, stored))) => stored,
        Ok(None) => return Redirect::to("/sign-in").into_response(),
        Err(err) => return error_page(&err),
    };
    let current = form.current_password;
    let matches =
        tokio::task::spawn_blocking(move || crate::password::verify(&stored, &current)).await.unwrap_or(false);
    if !matches {
        return show(&state, &signed_in, None, Some("The current password is not right.".into())).await;
    }
    let password_hash = match hash(form.new_password).await {
        Ok(h) => h,
        Err(message) => return show(&state, &signed_in, None, Some(format!("Not changed: {message}."))).await,
    };
    match state.blocking(move |s| s.admins.set_admin_password(&email, &password_hash)).await {
        // Every session of the account ended, this one too: sign in again.
        Ok(_) => Redirect::to("/sign-in").into_response(),
        Err(err) => error_page(&err),
    }
}
