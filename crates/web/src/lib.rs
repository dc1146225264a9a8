//! The administration UI in the browser, served by `mailrobot serve`:
//! server-rendered pages (askama) that work without JavaScript, sessions in
//! cookies, a CSRF token on every state-changing form, throttled sign-in.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use mailrobot_store::{AdminStore, AuthStore, DirectoryStore, OutboxStore, Store, StoreError};

pub mod administrators;
pub mod api;
pub mod api_admin;
pub mod api_directory;
pub mod api_outbox;
pub mod api_webhooks;
pub mod connections;
pub mod directory;
pub mod journal;
pub use mailrobot_views as json;
pub mod mailboxes;
pub mod openapi;
pub mod ops;
pub mod outbox;
pub mod pages;
pub mod password;
pub mod services;
pub mod session;
pub mod tenants;
pub mod throttle;
pub mod tickets;
pub mod tokens;
pub mod views;
pub mod webhooks;

pub use throttle::SignInThrottle;

/// The client's address, put on each request by the server loop (it is
/// what sign-in throttling counts per address).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// What the pages work with.
#[derive(Clone)]
pub struct WebState {
    pub store: Arc<dyn Store>,
    pub admins: Arc<dyn AdminStore>,
    pub auth: Arc<dyn AuthStore>,
    pub outbox: Arc<dyn OutboxStore>,
    /// Rules, mail templates and contacts.
    pub directory: Arc<dyn DirectoryStore>,
    /// Nodes and who holds which mailbox.
    pub leases: Arc<dyn mailrobot_store::LeaseStore>,
    /// The robot's public URL (no trailing slash): links it hands out.
    pub public_url: String,
    /// Cookies get `Secure` when the public URL is https.
    pub secure_cookies: bool,
    pub throttle: Arc<SignInThrottle>,
    /// What forms ask the robot to do (the binary's commands).
    pub ops: Arc<dyn ops::Operations>,
    /// How far the running polls have got (the dashboard's progress).
    pub progress: Arc<mailrobot_views::progress::SyncProgress>,
    /// How ticket numbers are written (`TKT-000123`).
    pub tag: mailrobot_core::TagFormat,
    /// Store work of pages and API calls running at once: the rest of the
    /// cores stay with ingestion, however many clients read.
    pub db_permits: Arc<tokio::sync::Semaphore>,
}

/// `MAILROBOT_WEB_DB_CONCURRENCY`: how many page and API store calls run at
/// once (default: half the cores, at least one).
pub const DB_CONCURRENCY_ENV: &str = "MAILROBOT_WEB_DB_CONCURRENCY";

/// The permits [`WebState::db_permits`] holds, from the environment.
pub fn db_concurrency() -> usize {
    std::env::var(DB_CONCURRENCY_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)))
}

/// Why a page could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a page task stopped: {0}")]
    Task(String),
    #[error("the page could not be rendered: {0}")]
    Render(#[from] askama::Error),
}

impl WebState {
    /// Runs store work off the async threads (SQLite calls block).
    pub async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&WebState) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, WebError> {
        let state = self.clone();
        let _permit = self.db_permits.acquire().await.map_err(|e| WebError::Task(e.to_string()))?;
        match tokio::task::spawn_blocking(move || work(&state)).await {
            Ok(result) => Ok(result?),
            Err(err) => Err(WebError::Task(err.to_string())),
        }
    }
}

/// The UI's routes. Pages set their own security headers (a CSP that lets
/// forms post to this origin and loads nothing from elsewhere).
pub fn router(state: WebState) -> Router {
    let api = api::router(state.clone());
    Router::new()
        .route("/", get(pages::home))
        .route("/sign-in", get(pages::sign_in_page).post(pages::sign_in))
        .route("/sign-out", post(pages::sign_out))
        .route("/dashboard", get(pages::dashboard))
        .route("/tenants", get(tenants::list))
        .route("/tenants/new", get(tenants::new_form).post(tenants::create))
        .route("/tenants/{name}", get(tenants::edit_form).post(tenants::update))
        .route("/services", get(services::page).post(services::save))
        .route("/connections", get(connections::list))
        .route("/connections/new", get(connections::new_form).post(connections::create))
        .route("/connections/{name}", get(connections::page))
        .route("/connections/{name}/authorize", post(connections::authorize))
        .route("/connections/{name}/test", post(connections::test))
        .route("/mailboxes", get(mailboxes::list))
        .route("/mailboxes/new", get(mailboxes::new_form).post(mailboxes::create))
        .route("/mailboxes/{name}", get(mailboxes::page))
        .route("/mailboxes/{name}/delete", get(mailboxes::confirm_delete).post(mailboxes::delete))
        .route("/mailboxes/{name}/settings", post(mailboxes::save_settings))
        .route("/mailboxes/{name}/{action}", post(mailboxes::action))
        .route("/journal", get(journal::list))
        .route("/journal/retry-failed", post(journal::retry_all))
        .route("/journal/{id}/retry", post(journal::retry))
        .route("/journal/{id}/raw.eml", get(journal::raw))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/webhooks/{id}", get(webhooks::page))
        .route("/webhooks/{id}/deliveries/{delivery}/resend", post(webhooks::resend))
        .route("/webhooks/{id}/{action}", post(webhooks::action))
        .route("/administrators", get(administrators::page).post(administrators::add))
        .route("/administrators/password", post(administrators::change_password))
        .route("/administrators/{email}/remove", post(administrators::remove))
        .route("/api-tokens", get(tokens::page).post(tokens::create))
        .route("/api-tokens/{name}/revoke", post(tokens::revoke))
        .route("/tickets", get(tickets::list))
        .route("/tickets/{number}", get(tickets::page))
        .route("/tickets/{number}/status", post(tickets::set_status))
        .route("/tickets/{number}/reply", post(tickets::reply))
        .route("/outbox", get(outbox::page))
        .route("/rules", get(directory::rules).post(directory::add_rule))
        .route("/rules/test", post(directory::test_rules))
        .route("/rules/{id}/remove", post(directory::remove_rule))
        .route("/templates", get(directory::templates).post(directory::save_template))
        .route("/contacts", get(directory::contacts).post(directory::add_contact))
        .route("/contacts/{email}", get(directory::contact))
        .route("/outbox/{id}/resend", post(outbox::resend))
        .route("/tickets/{number}/entries/{position}/html", get(tickets::entry_html))
        .route("/tickets/{number}/entries/{position}/attachments/{index}/{name}", get(tickets::attachment))
        .route("/static/app.css", get(pages::stylesheet))
        .with_state(state)
        // route_layer: only the pages; other paths keep the server's own policy.
        .route_layer(middleware::from_fn(page_headers))
        .merge(api)
}

/// The pages' policy: nothing from elsewhere, no inline script or style,
/// forms only to this origin, never framed.
/// [`PAGE_CSP`] with forms also allowed to lead to `origin` (the Setup
/// Authentication button's redirect goes to the identity platform, and
/// browsers hold redirects after a form to its form-action).
pub fn page_csp_with_form_target(origin: &str) -> String {
    PAGE_CSP.replace("form-action 'self'", &format!("form-action 'self' {origin}"))
}

pub const PAGE_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
     frame-src 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn page_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    // A page that posts to the identity platform sets a wider form-action.
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !headers.contains_key(header::X_FRAME_OPTIONS) {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
