//! Service Connections: list, New connection, and a connection's page with
//! Setup Authentication and Test connection.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailrobot_store::{Capability, Connection, ConnectionState, Mode};
use serde::Deserialize;

use crate::ops::ConnectionForm;
use crate::pages::{Layout, csrf_refused, error_page, path_segment, render};
use crate::session::SignedIn;
use crate::{WebState, views};

/// The connection form's capabilities: (stored value, label).
const CAPABILITIES: [(&str, &str); 5] = [
    ("graph", "Exchange / Microsoft Graph"),
    ("ews", "Exchange / Office 365 (EWS)"),
    ("imap", "IMAP"),
    ("pop", "POP3"),
    ("smtp", "SMTP"),
];

fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::Delegated => "Delegated",
        Mode::Application => "Application",
    }
}

/// The state in words, and what a person should do about it.
pub fn state_words(c: &Connection) -> (String, Option<String>) {
    let reason = c.last_error.clone().unwrap_or_default();
    match (c.state, c.mode) {
        (ConnectionState::Ready, _) => ("ready".into(), None),
        (ConnectionState::NotAuthenticated, Mode::Delegated) => (
            "not authenticated yet".into(),
            Some("Click Setup Authentication and sign in with the account whose mailbox the robot reads.".into()),
        ),
        (ConnectionState::NotAuthenticated, Mode::Application) => {
            ("not used yet (tokens are asked for when needed)".into(), None)
        }
        (ConnectionState::ReauthRequired, _) => {
            (format!("Setup Authentication needed: {reason}"), Some("Run Setup Authentication again.".into()))
        }
        (ConnectionState::SecretInvalid, _) | (ConnectionState::SecretExpired, _) => (
            format!("the tenant's credentials are refused: {reason}"),
            Some(format!(
                "Create a new client secret in the Azure portal and enter it on the tenant's page ({}).",
                "Tenants"
            )),
        ),
    }
}

pub struct ConnectionRow {
    pub name: String,
    pub tenant: String,
    pub capability: &'static str,
    pub mode: &'static str,
    pub state: String,
}

#[derive(Template)]
#[template(path = "connections.html")]
struct ConnectionsPage {
    layout: Option<Layout>,
    rows: Vec<ConnectionRow>,
}

pub async fn list(State(state): State<WebState>, signed_in: SignedIn) -> Response {
    let loaded = state.blocking(|s| Ok((s.auth.connections()?, s.auth.tenants()?))).await;
    let (connections, tenants) = match loaded {
        Ok(loaded) => loaded,
        Err(err) => return error_page(&err),
    };
    let rows = connections
        .iter()
        .map(|c| ConnectionRow {
            name: c.name.clone(),
            tenant: tenants.iter().find(|t| t.id == c.tenant_id).map(|t| t.name.clone()).unwrap_or_default(),
            capability: views::capability_label(c.capability),
            mode: mode_label(c.mode),
            state: state_words(c).0,
        })
        .collect();
    render(&ConnectionsPage { layout: Some(Layout::new(&signed_in, "Service Connections")), rows })
}

#[derive(Template)]
#[template(path = "connection_form.html")]
struct ConnectionFormPage {
    layout: Option<Layout>,
    csrf: String,
    tenants: Vec<String>,
    capabilities: [(&'static str, &'static str); 5],
    name: String,
    tenant: String,
    capability: String,
    mode: String,
    scope: String,
    message: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct NewConnection {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    capability: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    scope: String,
}

async fn form_page(state: &WebState, signed_in: &SignedIn, form: NewConnection, message: Option<String>) -> Response {
    let tenants = match state.blocking(|s| s.auth.tenants()).await {
        Ok(tenants) => tenants.into_iter().map(|t| t.name).collect(),
        Err(err) => return error_page(&err),
    };
    let page = ConnectionFormPage {
        layout: Some(Layout::new(signed_in, "Service Connections")),
        csrf: signed_in.session.csrf_token.clone(),
        tenants,
        capabilities: CAPABILITIES,
        name: form.name,
        tenant: form.tenant,
        capability: if form.capability.is_empty() { "graph".into() } else { form.capability },
        mode: if form.mode.is_empty() { "delegated".into() } else { form.mode },
        scope: form.scope,
        message,
    };
    render(&page)
}

pub async fn new_form(State(state): State<WebState>, signed_in: SignedIn) -> Response {
    form_page(&state, &signed_in, NewConnection::default(), None).await
}

pub async fn create(State(state): State<WebState>, signed_in: SignedIn, Form(form): Form<NewConnection>) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let parsed = (form.capability.parse::<Capability>(), form.mode.parse::<Mode>());
    let (Ok(capability), Ok(mode)) = parsed else {
        let page = form_page(&state, &signed_in, form, Some("Choose a capability and a mode.".into())).await;
        return (StatusCode::UNPROCESSABLE_ENTITY, page).into_response();
    };
    let request = ConnectionForm {
        name: form.name.trim().to_string(),
        tenant: form.tenant.clone(),
        capability,
        mode,
        scopes: form.scope.split_whitespace().map(str::to_string).collect(),
    };
    match state.ops.add_connection(request).await {
        Ok(c) => Redirect::to(&format!("/connections/{}", path_segment(&c.name))).into_response(),
        Err(message) => {
            (StatusCode::UNPROCESSABLE_ENTITY, form_page(&state, &signed_in, form, Some(message)).await).into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "connection.html")]
struct ConnectionPage {
    layout: Option<Layout>,
    csrf: String,
    name: String,
    tenant: String,
    capability: &'static str,
    mode: &'static str,
    scopes: String,
    state: String,
    todo: Option<String>,
    authenticated_as: Option<String>,
    authenticated_at: Option<String>,
    granted: Option<String>,
    delegated: bool,
    /// SMTP connections: the test logs in to an SMTP server too.
    smtp: bool,
    message: Option<String>,
    notice: Option<String>,
}

async fn show(
    state: &WebState,
    signed_in: &SignedIn,
    name: String,
    message: Option<String>,
    notice: Option<String>,
) -> Response {
    let lookup = name.clone();
    let loaded = state
        .blocking(move |s| {
            let Some(c) = s.auth.connection_by_name(&lookup)? else { return Ok(None) };
            let tenant = s.auth.tenant(c.tenant_id)?;
            Ok(Some((c, tenant)))
        })
        .await;
    let (c, tenant) = match loaded {
        Ok(Some(found)) => found,
        Ok(None) => return crate::pages::not_found("No such connection."),
        Err(err) => return error_page(&err),
    };
    // Where the Setup Authentication button's redirect leads.
    let sign_in_origin = tenant.as_ref().and_then(sign_in_origin).unwrap_or_else(|| DEFAULT_AUTHORITY.to_string());
    let tenant = tenant.map(|t| t.name).unwrap_or_default();
    let (state_text, todo) = state_words(&c);
    let authenticated_as =
        c.authenticated_at.as_ref().and_then(|_| match (&c.authenticated_name, &c.authenticated_upn) {
            (Some(name), Some(upn)) if name != upn => Some(format!("{name} ({upn})")),
            (Some(_), Some(upn)) => Some(upn.clone()),
            (None, Some(upn)) => Some(upn.clone()),
            (Some(name), None) => Some(name.clone()),
            (None, None) => None,
        });
    let page = ConnectionPage {
        layout: Some(Layout::new(signed_in, "Service Connections")),
        csrf: signed_in.session.csrf_token.clone(),
        name: c.name.clone(),
        tenant,
        capability: views::capability_label(c.capability),
        mode: mode_label(c.mode),
        scopes: c.scopes.join(" "),
        state: state_text,
        todo,
        authenticated_as,
        authenticated_at: c.authenticated_at.as_deref().map(views::short_time),
        granted: c.granted_scopes.clone(),
        delegated: c.mode == Mode::Delegated,
        smtp: c.capability == mailrobot_store::Capability::Smtp,
        message,
        notice,
    };
    let csp = crate::page_csp_with_form_target(&sign_in_origin);
    ([(axum::http::header::CONTENT_SECURITY_POLICY, csp)], render(&page)).into_response()
}

const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";

/// The origin (scheme, host, port) of the tenant's sign-in pages.
fn sign_in_origin(t: &mailrobot_store::Tenant) -> Option<String> {
    let url = t.authorize_url.as_deref().or(t.authority_url.as_deref())?;
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    // Only what a CSP source may hold.
    let clean = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    (clean(scheme) && clean(host) && !host.is_empty()).then(|| format!("{scheme}://{host}"))
}

#[derive(Deserialize)]
pub struct Shown {
    authenticated: Option<String>,
}

pub async fn page(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    Query(shown): Query<Shown>,
) -> Response {
    let notice = shown.authenticated.map(|_| "Setup Authentication complete.".to_string());
    show(&state, &signed_in, name, None, notice).await
}

pub async fn authorize(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    Form(form): Form<crate::pages::CsrfForm>,
) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    match state.ops.begin_setup(&name, signed_in.initiator()).await {
        // 303: the browser goes to the identity platform with a GET.
        Ok(url) => Redirect::to(&url).into_response(),
        Err(message) => {
            let message = format!("Setup Authentication could not start: {message}");
            (StatusCode::UNPROCESSABLE_ENTITY, show(&state, &signed_in, name, Some(message), None).await)
                .into_response()
        }
    }
}

/// The test form: a CSRF token, and for SMTP connections where to log in.
#[derive(Deserialize)]
pub struct TestForm {
    #[serde(default)]
    csrf: String,
    smtp_server: Option<String>,
    smtp_security: Option<String>,
    smtp_address: Option<String>,
}

pub async fn test(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    Form(form): Form<TestForm>,
) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let smtp =
        crate::ops::SmtpCheck { server: form.smtp_server, security: form.smtp_security, address: form.smtp_address };
    match state.ops.test_connection(&name, smtp).await {
        Ok(said) => show(&state, &signed_in, name, None, Some(format!("Test connection succeeded: {said}"))).await,
        Err(reason) => show(&state, &signed_in, name, Some(format!("Test connection failed: {reason}")), None).await,
    }
}
