//! Sign-in, sign-out and the dashboard.

use std::time::Instant;

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::session::{self, SESSION_COOKIE, SESSION_LIFETIME, SIGN_IN_COOKIE, SignedIn};
use crate::{ClientAddr, WebError, WebState, password, views};

/// What every signed-in page shows around its content.
pub struct Layout {
    pub email: String,
    pub csrf: String,
    /// The nav link of this page.
    pub current: &'static str,
}

impl Layout {
    pub fn new(signed_in: &SignedIn, current: &'static str) -> Self {
        Self { email: signed_in.session.admin.email.clone(), csrf: signed_in.session.csrf_token.clone(), current }
    }

    /// The main navigation: (href, name).
    pub fn links(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("/dashboard", "Dashboard"),
            ("/tenants", "Tenants"),
            ("/services", "Services"),
            ("/connections", "Service Connections"),
            ("/mailboxes", "Mailboxes"),
            ("/journal", "Mail journal"),
            ("/tickets", "Tickets"),
            ("/outbox", "Outbox"),
            ("/rules", "Rules"),
            ("/templates", "Templates"),
            ("/contacts", "Contacts"),
            ("/webhooks", "Webhooks"),
            ("/api-tokens", "API tokens"),
            ("/administrators", "Administrators"),
        ]
    }
}

/// `name` as one path segment of a URL.
pub fn path_segment(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Bytes to download, never to render: `application/octet-stream` with
/// `Content-Disposition: attachment` and the name (RFC 6266: an ASCII
/// fallback and the name as given, percent-encoded).
pub fn download(bytes: Vec<u8>, filename: &str) -> Response {
    let ascii: String =
        filename.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' { c } else { '_' }).collect();
    let disposition = format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{}", path_segment(filename));
    let disposition = axum::http::HeaderValue::from_str(&disposition)
        .unwrap_or_else(|_| axum::http::HeaderValue::from_static("attachment"));
    (
        [
            (header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/octet-stream")),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response()
}

/// `?k=v&…` of the pairs whose value is not empty ("" when none is).
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(&path_segment(v));
    }
    out
}

/// The answer to a form without this session's CSRF token.
pub fn csrf_refused() -> Response {
    (StatusCode::FORBIDDEN, "The form expired; go back, reload the page and try again.").into_response()
}

pub fn not_found(text: &str) -> Response {
    let page = MessagePage { layout: None, title: "Not found".into(), text: text.to_string() };
    (StatusCode::NOT_FOUND, render(&page)).into_response()
}

pub fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(err) => error_page(&WebError::Render(err)),
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    layout: Option<Layout>,
    title: String,
    text: String,
}

/// A page that says what went wrong (store unavailable and the like).
pub fn error_page(err: &WebError) -> Response {
    tracing::error!(error = %err, "a page failed");
    let page = MessagePage {
        layout: None,
        title: "Something went wrong".into(),
        text: format!("{err}. Try again; if it keeps happening, see the server's log."),
    };
    let html = page.render().unwrap_or_else(|_| "Something went wrong".to_string());
    (StatusCode::INTERNAL_SERVER_ERROR, Html(html)).into_response()
}

pub async fn home(headers: HeaderMap) -> Redirect {
    // The dashboard itself sends the browser on to sign in if need be.
    if session::cookie(&headers, SESSION_COOKIE).is_some() {
        Redirect::to("/dashboard")
    } else {
        Redirect::to("/sign-in")
    }
}

pub async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../static/app.css"))
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    layout: Option<Layout>,
    csrf: String,
    email: String,
    message: Option<String>,
}

/// The sign-in form, with a fresh double-submit token in a cookie.
fn sign_in_form(state: &WebState, status: StatusCode, email: String, message: Option<String>) -> Response {
    let csrf = session::random_token();
    let cookie = session::set_cookie(SIGN_IN_COOKIE, &csrf, std::time::Duration::from_secs(3600), state.secure_cookies);
    let page = SignInPage { layout: None, csrf, email, message };
    (status, [(header::SET_COOKIE, cookie)], render(&page)).into_response()
}

pub async fn sign_in_page(State(state): State<WebState>) -> Response {
    sign_in_form(&state, StatusCode::OK, String::new(), None)
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

pub async fn sign_in(
    State(state): State<WebState>,
    client: Option<axum::Extension<ClientAddr>>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let email = form.email.trim().to_string();
    let cookie_token = session::cookie(&headers, SIGN_IN_COOKIE).unwrap_or("");
    if cookie_token.is_empty() || !session::same_token(cookie_token, &form.csrf) {
        let message = "The sign-in form expired or came from another site; sign in again.".to_string();
        return sign_in_form(&state, StatusCode::FORBIDDEN, email, Some(message));
    }
    let account = format!("account:{}", email.to_lowercase());
    let address = client.map(|c| format!("address:{}", c.0.0.ip())).unwrap_or_else(|| "address:unknown".into());
    let keys = [account.as_str(), address.as_str()];
    if let Some(wait) = state.throttle.wait(&keys, Instant::now()) {
        let message = format!("Too many failed sign-ins. Try again in {} seconds.", wait.as_secs().max(1));
        return sign_in_form(&state, StatusCode::TOO_MANY_REQUESTS, email, Some(message));
    }
    let lookup = email.clone();
    let found = match state.blocking(move |s| s.admins.admin_for_sign_in(&lookup)).await {
        Ok(found) => found,
        Err(err) => return error_page(&err),
    };
    let password_given = form.password;
    let (admin, matches) = tokio::task::spawn_blocking(move || match found {
        Some((admin, hash)) => {
            let ok = password::verify(&hash, &password_given);
            (Some(admin), ok)
        }
        None => {
            // As long as for a known address.
            password::verify(password::decoy(), &password_given);
            (None, false)
        }
    })
    .await
    .unwrap_or((None, false));
    let Some(admin) = admin.filter(|_| matches) else {
        state.throttle.failed(&keys, Instant::now());
        tracing::info!(%address, "a sign-in was refused");
        let message = "The email or password is not right.".to_string();
        return sign_in_form(&state, StatusCode::UNAUTHORIZED, email, Some(message));
    };
    state.throttle.succeeded(&keys);
    let token = session::random_token();
    let (hash, csrf, admin_id) = (session::token_sha256(&token), session::random_token(), admin.id);
    if let Err(err) = state.blocking(move |s| s.admins.create_session(&hash, admin_id, &csrf, SESSION_LIFETIME)).await {
        return error_page(&err);
    }
    tracing::info!(admin = %admin.email, "signed in");
    let session_cookie = session::set_cookie(SESSION_COOKIE, &token, SESSION_LIFETIME, state.secure_cookies);
    let clear = session::set_cookie(SIGN_IN_COOKIE, "", std::time::Duration::ZERO, state.secure_cookies);
    // AppendHeaders: two cookies, where an array of pairs keeps only the last.
    (AppendHeaders([(header::SET_COOKIE, session_cookie), (header::SET_COOKIE, clear)]), Redirect::to("/dashboard"))
        .into_response()
}

/// A form that carries only the session's CSRF token (the page's buttons).
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub async fn sign_out(
    State(state): State<WebState>,
    signed_in: SignedIn,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    if let Some(token) = session::cookie(&headers, SESSION_COOKIE) {
        let hash = session::token_sha256(token);
        if let Err(err) = state.blocking(move |s| s.admins.delete_session(&hash)).await {
            return error_page(&err);
        }
    }
    let clear = session::set_cookie(SESSION_COOKIE, "", std::time::Duration::ZERO, state.secure_cookies);
    ([(header::SET_COOKIE, clear)], Redirect::to("/sign-in")).into_response()
}

/// One mailbox row of the dashboard.
pub struct MailboxRow {
    pub name: String,
    pub kind: &'static str,
    pub state: String,
    pub state_class: &'static str,
    pub last_poll: String,
    pub today: i64,
    pub waiting: i64,
    pub failed: i64,
    /// The node whose lease it is: the one polling it now.
    pub node: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    layout: Option<Layout>,
    attention: Vec<String>,
    /// Polls under way, with how far they have got.
    syncing: Vec<SyncRow>,
    rows: Vec<MailboxRow>,
}

struct SyncRow {
    name: String,
    /// "1,200 of 50,000 mails fetched".
    text: String,
    fetched: usize,
    waiting: usize,
    started: String,
}

/// 50000 → "50,000".
fn group_digits(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub async fn dashboard(State(state): State<WebState>, signed_in: SignedIn) -> Response {
    let now = chrono::Utc::now();
    let midnight = now.date_naive().and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let since = midnight.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let loaded = state
        .blocking(move |s| {
            Ok((
                s.store.mailboxes()?,
                s.store.mailbox_counts(&since)?,
                s.auth.connections()?,
                s.auth.tenants()?,
                s.leases.nodes(mailrobot_store::lease::ALIVE_WITHIN)?,
            ))
        })
        .await;
    let (mailboxes, counts, connections, tenants, nodes) = match loaded {
        Ok(loaded) => loaded,
        Err(err) => return error_page(&err),
    };
    let progress = state.progress.snapshot();
    let syncing_ids: Vec<i64> = progress.iter().map(|p| p.mailbox_id).collect();
    let mut attention: Vec<String> = tenants.iter().filter_map(|t| views::tenant_attention(t, now)).collect();
    attention.extend(connections.iter().filter_map(views::connection_attention));
    let rows = mailboxes
        .iter()
        .filter(|m| !crate::mailboxes::is_removed(m))
        .map(|m| {
            let (mut state, state_class) = views::mailbox_state(m);
            if m.status == mailrobot_store::MailboxStatus::New && syncing_ids.contains(&m.id) {
                state = "first sync under way".to_string();
            }
            let c = counts.iter().find(|c| c.mailbox_id == m.id).cloned().unwrap_or_default();
            MailboxRow {
                name: m.name.clone(),
                kind: views::kind_label(m.kind),
                state,
                state_class,
                last_poll: m.last_poll_at.as_deref().map_or_else(|| "never".to_string(), views::short_time),
                today: c.fetched_since,
                waiting: c.waiting,
                failed: c.failed,
                node: nodes
                    .iter()
                    .find(|n| n.mailboxes.contains(&m.name))
                    .map_or_else(|| "none".to_string(), |n| n.node_id.clone()),
            }
        })
        .collect();
    let syncing = progress
        .into_iter()
        .filter_map(|p| {
            let m = mailboxes.iter().find(|m| m.id == p.mailbox_id)?;
            Some(SyncRow {
                name: m.name.clone(),
                text: format!("{} of {} mails fetched", group_digits(p.fetched), group_digits(p.waiting)),
                fetched: p.fetched,
                waiting: p.waiting,
                started: views::short_time(&p.started_at),
            })
        })
        .collect();
    render(&DashboardPage { layout: Some(Layout::new(&signed_in, "Dashboard")), attention, syncing, rows })
}
