//! The HTTP side of `serve`: liveness, metrics and the Setup Authentication
//! redirect; the admin UI and REST API join here in later issues.
//!
//! Nothing here is authenticated, so nothing here tells secrets or details
//! (`/healthz` says only `ok` or `error`), no request can make the store
//! count the journal more than once per [`COUNTS_CACHE_TTL`], and slow or
//! many clients are bounded by [`HttpLimits`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use mailrobot_auth::TokenBroker;
use mailrobot_auth::model::REDIRECT_PATH;
use mailrobot_store::{Counts, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

pub const HEADER_TIMEOUT_ENV: &str = "MAILROBOT_HTTP_HEADER_TIMEOUT_SECS";
pub const REQUEST_TIMEOUT_ENV: &str = "MAILROBOT_HTTP_REQUEST_TIMEOUT_SECS";
pub const MAX_CONNECTIONS_ENV: &str = "MAILROBOT_HTTP_MAX_CONNECTIONS";
/// When set, `/metrics` answers only requests with `Authorization: Bearer <this>`.
pub const METRICS_TOKEN_ENV: &str = "MAILROBOT_METRICS_TOKEN";

/// How long /healthz and /metrics reuse one count of the journal.
pub const COUNTS_CACHE_TTL: Duration = Duration::from_secs(5);

/// Limits that keep slow or many clients from tying up the HTTP side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time a client has to send a request's headers, counted from the
    /// connection (or the previous answer on a kept-alive one); then it is closed.
    pub header_read_timeout: Duration,
    /// Time from the headers to the answer, the body included; then 503.
    pub request_timeout: Duration,
    /// Open connections at most; more wait in the kernel's accept queue. A
    /// connection carries one request at a time (HTTP/1.1), so this also
    /// bounds the requests in flight.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_connections: 256,
        }
    }
}

impl HttpLimits {
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The defaults, changed by whichever of the environment variables is set.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let number = |name: &str, min: u64, max: u64| -> Result<Option<u64>, String> {
            let Some(raw) = lookup(name) else { return Ok(None) };
            match raw.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(format!("{name}={raw:?} is not a whole number from {min} to {max}; fix or unset it")),
            }
        };
        let mut limits = Self::default();
        if let Some(secs) = number(HEADER_TIMEOUT_ENV, 1, 30)? {
            limits.header_read_timeout = Duration::from_secs(secs);
        }
        if let Some(secs) = number(REQUEST_TIMEOUT_ENV, 1, 600)? {
            limits.request_timeout = Duration::from_secs(secs);
        }
        if let Some(n) = number(MAX_CONNECTIONS_ENV, 1, 65_536)? {
            limits.max_connections = n as usize;
        }
        Ok(limits)
    }
}

#[derive(Clone)]
pub struct HttpState {
    pub store: Arc<dyn Store>,
    pub metrics: PrometheusHandle,
    pub broker: Arc<TokenBroker>,
    pub limits: HttpLimits,
    counts: Arc<CountsCache>,
    /// `/metrics` needs this bearer token, if set ([`METRICS_TOKEN_ENV`]).
    metrics_token: Option<Arc<str>>,
}

impl HttpState {
    pub fn new(store: Arc<dyn Store>, metrics: PrometheusHandle, broker: Arc<TokenBroker>, limits: HttpLimits) -> Self {
        let metrics_token = std::env::var(METRICS_TOKEN_ENV).ok().filter(|t| !t.is_empty()).map(Arc::from);
        Self { store, metrics, broker, limits, counts: Arc::new(CountsCache::default()), metrics_token }
    }
}

/// The last count of tickets and journal, reused for [`COUNTS_CACHE_TTL`]:
/// counting scans the journal under the store's one lock, which the polling
/// loops need too. Requests that come while a count runs wait for it and
/// share its result (`None`: the store could not answer).
#[derive(Default)]
struct CountsCache {
    last: tokio::sync::Mutex<Option<(Instant, Option<Counts>)>>,
}

impl CountsCache {
    async fn get(&self, store: &Arc<dyn Store>) -> Option<Counts> {
        let mut last = self.last.lock().await;
        if let Some((at, counts)) = &*last
            && at.elapsed() < COUNTS_CACHE_TTL
        {
            return counts.clone();
        }
        metrics::counter!("mailrobot_store_count_queries_total").increment(1);
        let store = store.clone();
        let counts = match tokio::task::spawn_blocking(move || store.counts()).await {
            Ok(Ok(counts)) => Some(counts),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "the store cannot count the journal; /healthz answers 503");
                None
            }
            Err(err) => {
                tracing::warn!(error = %err, "counting the journal failed; /healthz answers 503");
                None
            }
        };
        *last = Some((Instant::now(), counts.clone()));
        counts
    }
}

/// The robot's HTTP side: liveness, metrics, the Setup Authentication
/// redirect, and (with `web`) the admin UI.
pub fn router(
    state: HttpState,
    web: Option<mailrobot_web::WebState>,
    graph_push: Option<Arc<crate::graph_push::GraphPush>>,
) -> Router {
    let request_timeout = state.limits.request_timeout;
    let pages = web.map(mailrobot_web::router).unwrap_or_default();
    let push = graph_push.map(crate::graph_push::router).unwrap_or_default();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        // The seed's redirect path, so app registrations made by its guide work.
        .route(REDIRECT_PATH, get(redirect_query).post(redirect_form))
        .with_state(state)
        .merge(pages)
        .merge(push)
        .layer(middleware::from_fn_with_state(request_timeout, time_limit))
        // Outermost, so timeouts and 404s carry the headers too.
        .layer(middleware::from_fn(security_headers))
}

/// Serves `app` on `listener` until `stop` turns true (or its sender goes),
/// within `limits`; then lets open requests finish.
pub async fn serve_http(listener: TcpListener, app: Router, limits: HttpLimits, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // A free slot first: clients beyond the limit wait in the accept queue.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = stop.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %err, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let app = app.clone();
        let mut stop = stop.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                // Who is asking: sign-in throttling counts per address.
                request.extensions_mut().insert(mailrobot_web::ClientAddr(peer));
                app.clone().oneshot(request)
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                // Slow or vanished clients: theirs to fix, not the operator's.
                tracing::debug!(%peer, error = %err, "HTTP connection ended");
            }
        });
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}

async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%path, seconds = limit.as_secs(), "an HTTP request took too long and was cut off");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Request timed out",
                &format!("mailrobot did not answer within {} seconds; try again.", limit.as_secs()),
            )
        }
    }
}

/// No caching of answers (they can name connections and users), no framing,
/// no scripts or other loads (the pages need only their inline style), no referrer.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The admin UI's pages set their own policy (forms post to this origin).
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
        );
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// What the identity platform sends back to the redirect URI.
#[derive(Debug, Default, Deserialize)]
pub struct RedirectParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn redirect_query(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(params): Query<RedirectParams>,
) -> Response {
    complete_setup(state, &headers, params).await
}

async fn redirect_form(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Form(params): Form<RedirectParams>,
) -> Response {
    complete_setup(state, &headers, params).await
}

async fn complete_setup(state: HttpState, headers: &HeaderMap, params: RedirectParams) -> Response {
    let Some(flow_state) = params.state.as_deref().filter(|s| !s.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Setup Authentication failed",
            "The answer carries no state: start Setup Authentication again.",
        );
    };
    let error = params.error.as_deref().map(|e| (e, params.error_description.as_deref().unwrap_or("")));
    // Flows started from the CLI are bound to their server-side record;
    // flows started in the admin UI to the browser session that started
    // them (its cookie comes back on this top-level redirect: SameSite=Lax).
    let this_browser = mailrobot_web::session::cookie(headers, mailrobot_web::session::SESSION_COOKIE)
        .map(|token| mailrobot_web::session::session_initiator(&mailrobot_web::session::token_sha256(token)));
    let from_this_browser = std::sync::atomic::AtomicBool::new(false);
    let result = state
        .broker
        .complete_authorization(flow_state, params.code.as_deref(), error, |initiator| {
            let ours = this_browser.as_deref() == Some(initiator);
            from_this_browser.store(ours, std::sync::atomic::Ordering::Relaxed);
            // The CLI and API tokens hand the URL to whoever signs in.
            initiator == "cli" || initiator.starts_with("api:") || ours
        })
        .await;
    match result {
        // Back to the connection's page in the admin UI.
        Ok(connection) if from_this_browser.load(std::sync::atomic::Ordering::Relaxed) => {
            let path = format!("/connections/{}?authenticated=1", mailrobot_web::pages::path_segment(&connection.name));
            axum::response::Redirect::to(&path).into_response()
        }
        Ok(connection) => page(
            StatusCode::OK,
            "Setup Authentication complete",
            &format!(
                "Connection {} is ready{}. You can close this window.",
                connection.name,
                connection.authenticated_upn.as_deref().map(|u| format!(", authenticated as {u}")).unwrap_or_default()
            ),
        ),
        Err(err) => {
            tracing::warn!(error = %err, "Setup Authentication failed");
            page(StatusCode::BAD_REQUEST, "Setup Authentication failed", &err.to_string())
        }
    }
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>{t}</h1><p>{m}</p></body></html>",
        t = escape(title),
        m = escape(message)
    );
    (status, Html(body)).into_response()
}

/// Liveness for load balancers and monitors, unauthenticated: only whether
/// the store answers. Mailbox details belong to the authenticated API.
async fn healthz(State(state): State<HttpState>) -> Response {
    match state.counts.get(&state.store).await {
        Some(_) => Json(json!({"status": "ok"})).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "error"}))).into_response(),
    }
}

async fn metrics(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.metrics_token {
        let given =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|t| mailrobot_web::session::same_token(t.trim(), expected)) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                format!("/metrics needs Authorization: Bearer <the value of {METRICS_TOKEN_ENV}>\n"),
            )
                .into_response();
        }
    }
    if let Some(counts) = state.counts.get(&state.store).await {
        metrics::gauge!("mailrobot_tickets").set(counts.tickets as f64);
        metrics::gauge!("mailrobot_journal_messages", "state" => "fetched").set(counts.fetched as f64);
        metrics::gauge!("mailrobot_journal_messages", "state" => "processed").set(counts.processed as f64);
        metrics::gauge!("mailrobot_journal_messages", "state" => "failed").set(counts.failed as f64);
        metrics::gauge!("mailrobot_journal_unsettled").set(counts.unsettled as f64);
    }
    let store = state.store.clone();
    if let Ok(Ok(mailboxes)) = tokio::task::spawn_blocking(move || store.mailboxes()).await {
        crate::metrics::record_mailbox_states(&mailboxes);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_from_the_environment_within_bounds() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(HttpLimits::from_lookup(env(&[])).unwrap(), HttpLimits::default());
        assert!(HttpLimits::default().header_read_timeout <= Duration::from_secs(30));
        let limits = HttpLimits::from_lookup(env(&[
            (HEADER_TIMEOUT_ENV, "2"),
            (REQUEST_TIMEOUT_ENV, "5"),
            (MAX_CONNECTIONS_ENV, "3"),
        ]))
        .unwrap();
        assert_eq!(
            limits,
            HttpLimits {
                header_read_timeout: Duration::from_secs(2),
                request_timeout: Duration::from_secs(5),
                max_connections: 3
            }
        );
        // A header timeout over 30 s is refused, as is nonsense; the message names the variable.
        for bad in [&[(HEADER_TIMEOUT_ENV, "45")][..], &[(HEADER_TIMEOUT_ENV, "0")], &[(MAX_CONNECTIONS_ENV, "many")]] {
            let err = HttpLimits::from_lookup(env(bad)).unwrap_err();
            assert!(err.contains(bad[0].0), "{err}");
        }
    }
}
