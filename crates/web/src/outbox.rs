//! The Outbox page: every mail the robot sends, its state and last error,
//! and `Resend`.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;

use crate::WebState;
use crate::json::OutboxMailJson;
use crate::pages::{CsrfForm, Layout, csrf_refused, error_page, render};
use crate::session::SignedIn;

#[derive(Template)]
#[template(path = "outbox.html")]
struct OutboxPage {
    layout: Option<Layout>,
    csrf: String,
    mails: Vec<OutboxMailJson>,
    notice: Option<String>,
}

async fn show(state: &WebState, signed_in: &SignedIn, notice: Option<String>) -> Response {
    let mails = match state.blocking(|s| s.outbox.mails()).await {
        Ok(mails) => mails,
        Err(err) => return error_page(&err),
    };
    let mut mails: Vec<OutboxMailJson> = mails.iter().map(|m| OutboxMailJson::of(m, &state.tag)).collect();
    mails.reverse();
    render(&OutboxPage {
        layout: Some(Layout::new(signed_in, "Outbox")),
        csrf: signed_in.session.csrf_token.clone(),
        mails,
        notice,
    })
}

pub async fn page(State(state): State<WebState>, signed_in: SignedIn) -> Response {
    show(&state, &signed_in, None).await
}

pub async fn resend(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    match state.blocking(move |s| s.outbox.resend_mail(id)).await {
        Ok(true) => show(&state, &signed_in, Some(format!("Mail {id} queued again; it is sent within seconds."))).await,
        Ok(false) => show(&state, &signed_in, Some(format!("There is no outbound mail {id}."))).await,
        Err(err) => error_page(&err),
    }
}
