//! Tenants: the app registrations the robot signs in with.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailrobot_store::Tenant;

use crate::WebState;
use crate::ops::TenantForm;
use crate::pages::{Layout, error_page, render};
use crate::session::SignedIn;

/// One row of the list: what may be shown (never the secret).
pub struct TenantRow {
    pub name: String,
    pub client_id: String,
    pub tenant: String,
    pub secret: String,
    pub expires: String,
    pub certificate: String,
}

#[derive(Template)]
#[template(path = "tenants.html")]
struct TenantsPage {
    layout: Option<Layout>,
    tenants: Vec<TenantRow>,
}

fn secret_state(t: &Tenant) -> String {
    match (&t.secret_set_at, t.has_secret) {
        (Some(at), true) => format!("set on {}", crate::views::short_time(at)),
        (None, true) => "set".to_string(),
        _ => "none".to_string(),
    }
}

pub async fn list(State(state): State<WebState>, signed_in: SignedIn) -> Response {
    let tenants = match state.blocking(|s| s.auth.tenants()).await {
        Ok(tenants) => tenants,
        Err(err) => return error_page(&err),
    };
    let tenants = tenants
        .iter()
        .map(|t| TenantRow {
            name: t.name.clone(),
            client_id: t.client_id.clone(),
            tenant: t.directory.clone().unwrap_or_default(),
            secret: secret_state(t),
            expires: t.secret_expires_at.as_deref().map(|d| d.chars().take(10).collect()).unwrap_or_default(),
            certificate: t.certificate_info.clone().unwrap_or_else(|| "none".into()),
        })
        .collect();
    render(&TenantsPage { layout: Some(Layout::new(&signed_in, "Tenants")), tenants })
}

/// The form's fields as text (the secret is never put back into a page).
#[derive(Debug, Clone, Default)]
pub struct FormValues {
    pub name: String,
    pub client_id: String,
    pub tenant: String,
    pub secret_expires: String,
    pub authority_url: String,
    pub graph_url: String,
    pub ews_url: String,
}

impl FormValues {
    pub fn has_advanced(&self) -> bool {
        !(self.authority_url.is_empty() && self.graph_url.is_empty() && self.ews_url.is_empty())
    }

    fn of(t: &Tenant) -> Self {
        Self {
            name: t.name.clone(),
            client_id: t.client_id.clone(),
            tenant: t.directory.clone().unwrap_or_default(),
            secret_expires: t.secret_expires_at.as_deref().map(|d| d.chars().take(10).collect()).unwrap_or_default(),
            authority_url: t.authority_url.clone().unwrap_or_default(),
            graph_url: t.graph_url.clone().unwrap_or_default(),
            ews_url: t.ews_url.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "tenant_form.html")]
struct TenantFormPage {
    layout: Option<Layout>,
    heading: String,
    action: String,
    editing: bool,
    csrf: String,
    form: FormValues,
    secret_state: String,
    certificate_state: String,
    message: Option<String>,
    notice: Option<String>,
}

fn form_page(
    signed_in: &SignedIn,
    existing: Option<&Tenant>,
    form: FormValues,
    message: Option<String>,
    notice: Option<String>,
) -> TenantFormPage {
    let (heading, action) = match existing {
        Some(t) => (format!("Tenant {}", t.name), format!("/tenants/{}", crate::pages::path_segment(&t.name))),
        None => ("New tenant".to_string(), "/tenants/new".to_string()),
    };
    TenantFormPage {
        layout: Some(Layout::new(signed_in, "Tenants")),
        heading,
        action,
        editing: existing.is_some(),
        csrf: signed_in.session.csrf_token.clone(),
        form,
        secret_state: existing.map(secret_state).unwrap_or_default(),
        certificate_state: existing.and_then(|t| t.certificate_info.clone()).unwrap_or_else(|| "none".into()),
        message,
        notice,
    }
}

pub async fn new_form(signed_in: SignedIn) -> Response {
    render(&form_page(&signed_in, None, FormValues::default(), None, None))
}

/// Reads a multipart form into its text fields (an uploaded file as text).
/// Refuses a form without this session's CSRF token.
pub async fn read_multipart(
    signed_in: &SignedIn,
    mut multipart: Multipart,
) -> Result<HashMap<String, String>, Response> {
    let mut fields = HashMap::new();
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_string();
                let text = field.text().await.map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()).into_response())?;
                fields.insert(name, text);
            }
            Ok(None) => break,
            Err(e) => return Err((StatusCode::BAD_REQUEST, e.to_string()).into_response()),
        }
    }
    if !signed_in.csrf_ok(fields.get("csrf").map(String::as_str).unwrap_or("")) {
        return Err(crate::pages::csrf_refused());
    }
    Ok(fields)
}

fn tenant_form(fields: &HashMap<String, String>) -> (TenantForm, FormValues) {
    let text = |name: &str| fields.get(name).map(|v| v.trim().to_string()).unwrap_or_default();
    let some = |name: &str| Some(text(name)).filter(|v| !v.is_empty());
    let form = TenantForm {
        name: text("name"),
        client_id: text("client_id"),
        tenant: some("tenant"),
        client_secret: some("client_secret"),
        secret_expires: some("secret_expires"),
        certificate_pem: some("certificate"),
        authority_url: some("authority_url"),
        graph_url: some("graph_url"),
        ews_url: some("ews_url"),
    };
    let values = FormValues {
        name: text("name"),
        client_id: text("client_id"),
        tenant: text("tenant"),
        secret_expires: text("secret_expires"),
        authority_url: text("authority_url"),
        graph_url: text("graph_url"),
        ews_url: text("ews_url"),
    };
    (form, values)
}

pub async fn create(State(state): State<WebState>, signed_in: SignedIn, multipart: Multipart) -> Response {
    let fields = match read_multipart(&signed_in, multipart).await {
        Ok(fields) => fields,
        Err(refused) => return refused,
    };
    let (form, values) = tenant_form(&fields);
    match state.ops.add_tenant(form).await {
        Ok(t) => Redirect::to(&format!("/tenants/{}?saved=1", crate::pages::path_segment(&t.name))).into_response(),
        Err(message) => {
            (StatusCode::UNPROCESSABLE_ENTITY, render(&form_page(&signed_in, None, values, Some(message), None)))
                .into_response()
        }
    }
}

async fn find(state: &WebState, name: String) -> Result<Tenant, Response> {
    match state.blocking(move |s| s.auth.tenant_by_name(&name)).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(crate::pages::not_found("No such tenant.")),
        Err(err) => Err(error_page(&err)),
    }
}

#[derive(serde::Deserialize)]
pub struct Saved {
    saved: Option<String>,
}

pub async fn edit_form(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    axum::extract::Query(saved): axum::extract::Query<Saved>,
) -> Response {
    let tenant = match find(&state, name).await {
        Ok(t) => t,
        Err(response) => return response,
    };
    let notice = saved.saved.map(|_| format!("Tenant {} saved.", tenant.name));
    render(&form_page(&signed_in, Some(&tenant), FormValues::of(&tenant), None, notice))
}

pub async fn update(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    multipart: Multipart,
) -> Response {
    let fields = match read_multipart(&signed_in, multipart).await {
        Ok(fields) => fields,
        Err(refused) => return refused,
    };
    let tenant = match find(&state, name).await {
        Ok(t) => t,
        Err(response) => return response,
    };
    let (form, mut values) = tenant_form(&fields);
    values.name = tenant.name.clone();
    match state.ops.update_tenant(&tenant.name, form).await {
        Ok(t) => Redirect::to(&format!("/tenants/{}?saved=1", crate::pages::path_segment(&t.name))).into_response(),
        Err(message) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            render(&form_page(&signed_in, Some(&tenant), values, Some(message), None)),
        )
            .into_response(),
    }
}
