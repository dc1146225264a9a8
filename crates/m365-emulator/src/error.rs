//! Errors: the library's own (`EmulatorError`) and the identity platform's (`StsError`, answered
//! in Microsoft's exact JSON shape).

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// What the library and its admin API can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("crypto: {0}")]
    Crypto(String),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl EmulatorError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            EmulatorError::NotFound(_) => StatusCode::NOT_FOUND,
            EmulatorError::Conflict(_) => StatusCode::CONFLICT,
            EmulatorError::Invalid(_) | EmulatorError::Config(_) | EmulatorError::Json(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for EmulatorError {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(json!({"error": self.to_string()}))).into_response()
    }
}

/// An error of the security token service: an OAuth2 `error`, an AADSTS code and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StsError {
    pub status: StatusCode,
    pub error: &'static str,
    pub code: u32,
    pub message: String,
    /// Entra adds `suberror` to some invalid_grant answers (`consent_required`, `basic_action`…).
    pub suberror: Option<&'static str>,
    /// Extra response headers (Retry-After on throttling).
    pub retry_after: Option<u64>,
}

impl StsError {
    pub fn new(error: &'static str, code: u32, message: impl Into<String>) -> StsError {
        // Entra answers failed client authentication with 401, everything else with 400.
        let status = if error == "invalid_client" { StatusCode::UNAUTHORIZED } else { StatusCode::BAD_REQUEST };
        StsError { status, error, code, message: message.into(), suberror: None, retry_after: None }
    }

    pub fn with_suberror(mut self, s: &'static str) -> StsError {
        self.suberror = Some(s);
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> StsError {
        self.status = status;
        self
    }

    pub fn missing(param: &str) -> StsError {
        StsError::new(
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{param}'."),
        )
    }

    pub fn tenant_not_found(tenant: &str) -> StsError {
        StsError::new(
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into \
                 the correct cloud. Check with your subscription administrator, this may happen if there are no \
                 active subscriptions for the tenant."
            ),
        )
    }

    pub fn app_not_found(client_id: &str, tenant: &str) -> StsError {
        StsError::new(
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can \
                 happen if the application has not been installed by the administrator of the tenant or consented \
                 to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        )
    }

    pub fn invalid_scope(scope: &str) -> StsError {
        StsError::new(
            "invalid_scope",
            70011,
            format!("The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."),
        )
    }

    pub fn resource_not_found(resource: &str, tenant: &str) -> StsError {
        StsError::new(
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen \
                 if the application has not been installed by the administrator of the tenant or consented to by any \
                 user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        )
    }

    pub fn single_tenant_on_common(client_id: &str, app_name: &str) -> StsError {
        StsError::new(
            "invalid_request",
            50194,
            format!(
                "Application '{client_id}'({app_name}) is not configured as a multi-tenant application. Usage of the \
                 /common endpoint is not supported for such applications created after '10/15/2018'. Use a \
                 tenant-specific endpoint or configure the application to be multi-tenant."
            ),
        )
    }

    /// `AADSTSnnnnn: message` — the first line of `error_description`.
    pub fn headline(&self) -> String {
        format!("AADSTS{}: {}", self.code, self.message)
    }
}

/// Request-scoped identifiers every STS answer carries.
#[derive(Debug, Clone)]
pub(crate) struct Trace {
    pub trace_id: String,
    pub correlation_id: String,
    /// `yyyy-mm-dd hh:mm:ssZ`
    pub timestamp: String,
    /// Whether the client sent `client-request-id` (then it is echoed back).
    pub echo_correlation: bool,
}

impl Trace {
    /// Entra uses the client's `client-request-id` as the correlation id when it sends one.
    pub fn new(headers: &HeaderMap, now_ms: i64) -> Trace {
        let client = headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| uuid::Uuid::parse_str(v).is_ok())
            .map(str::to_string);
        let timestamp = chrono::DateTime::from_timestamp_millis(now_ms)
            .unwrap_or_default()
            .format("%Y-%m-%d %H:%M:%SZ")
            .to_string();
        Trace {
            trace_id: uuid::Uuid::new_v4().to_string(),
            echo_correlation: client.is_some(),
            correlation_id: client.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            timestamp,
        }
    }

    /// `AADSTSnnnnn: message\r\nTrace ID: …\r\nCorrelation ID: …\r\nTimestamp: …`
    pub fn description(&self, e: &StsError) -> String {
        format!(
            "{}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}",
            e.headline(),
            self.trace_id,
            self.correlation_id,
            self.timestamp
        )
    }

    /// Headers Entra puts on token endpoint answers.
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("cache-control", HeaderValue::from_static("no-store, no-cache"));
        h.insert("pragma", HeaderValue::from_static("no-cache"));
        h.insert("content-type", HeaderValue::from_static("application/json; charset=utf-8"));
        if let Ok(v) = HeaderValue::from_str(&self.trace_id) {
            h.insert("x-ms-request-id", v);
        }
        if self.echo_correlation
            && let Ok(v) = HeaderValue::from_str(&self.correlation_id)
        {
            h.insert("client-request-id", v);
        }
        h
    }

    /// The JSON error answer of the token (and discovery) endpoints.
    pub fn error_response(&self, e: &StsError, base_url: &str) -> Response {
        let mut body = json!({
            "error": e.error,
            "error_description": self.description(e),
            "error_codes": [e.code],
            "timestamp": self.timestamp,
            "trace_id": self.trace_id,
            "correlation_id": self.correlation_id,
            "error_uri": format!("{base_url}/error?code={}", e.code),
        });
        if let Some(s) = e.suberror {
            body["suberror"] = json!(s);
        }
        let mut headers = self.headers();
        if let Some(secs) = e.retry_after {
            headers.insert("retry-after", HeaderValue::from(secs));
        }
        (e.status, headers, axum::Json(body)).into_response()
    }
}
