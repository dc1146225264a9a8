//! The token endpoint's wire format (identity platform v2.0, RFC 6749) and
//! what its errors mean for a connection.

use serde::Deserialize;

use crate::error::AuthError;
use crate::model::ConnectionState;

#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    /// Seconds; Microsoft sends a number, some servers a string.
    #[serde(default)]
    pub expires_in: Option<serde_json::Value>,
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
}

impl TokenResponse {
    pub fn expires_in_seconds(&self) -> i64 {
        match &self.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(3600),
            Some(serde_json::Value::String(s)) => s.parse().unwrap_or(3600),
            _ => 3600,
        }
    }
}

/// Microsoft's error JSON: `error`, `error_description` ("AADSTSnnnnn: …"),
/// `error_codes`, `timestamp`, `trace_id`, `correlation_id`.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorResponse {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default)]
    pub error_codes: Vec<u32>,
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
}

impl ErrorResponse {
    /// The AADSTS code: `error_codes[0]`, else read from the description.
    pub fn code(&self) -> Option<u32> {
        self.error_codes.first().copied().or_else(|| {
            let text = self.error_description.as_deref()?;
            let digits: String = text.strip_prefix("AADSTS")?.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
    }

    /// Microsoft's message without the trace lines.
    pub fn message(&self) -> String {
        let description = self.error_description.as_deref().unwrap_or("");
        let first = description.split(['\r', '\n']).next().unwrap_or("").trim();
        let mut text = if first.is_empty() { self.error.clone() } else { format!("{first} ({})", self.error) };
        if let Some(correlation) = &self.correlation_id {
            text.push_str(&format!(" [correlation id {correlation}]"));
        }
        text
    }
}

/// Which grant was asked for: the same error means different things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

/// AADSTS codes after which only a person can help, by running Setup
/// Authentication again.
const REAUTH_CODES: &[u32] =
    &[70000, 70008, 700082, 700084, 50173, 65001, 50076, 50079, 50078, 50158, 53003, 50132, 50089, 50133, 50055];
/// Codes that mean the app registration or its settings are wrong.
const CONFIG_CODES: &[u32] = &[700016, 7000218, 90002, 70011, 700022, 50011, 900023, 90014, 700025, 500011];

/// What an error answer from the token endpoint means.
pub fn classify(status: u16, body: &str, grant: Grant) -> AuthError {
    let parsed: ErrorResponse = serde_json::from_str(body).unwrap_or_default();
    if status == 429 || status >= 500 || parsed.error == "temporarily_unavailable" {
        let detail = if parsed.error.is_empty() { format!("HTTP {status}") } else { parsed.message() };
        return AuthError::Transient(format!("the identity platform is busy or failing: {detail}"));
    }
    if parsed.error.is_empty() {
        let snippet: String = body.chars().take(200).collect();
        return AuthError::Transient(format!("unexpected answer from the token endpoint (HTTP {status}): {snippet}"));
    }
    let code = parsed.code();
    let message = parsed.message();
    let state = match code {
        Some(7000215) => Some(ConnectionState::SecretInvalid),
        Some(7000222) => Some(ConnectionState::SecretExpired),
        Some(c) if CONFIG_CODES.contains(&c) => None,
        // During Setup Authentication a refused code (reused, PKCE mismatch,
        // consent declined) ends that attempt only.
        _ if grant == Grant::AuthorizationCode => None,
        Some(c) if REAUTH_CODES.contains(&c) => Some(ConnectionState::ReauthRequired),
        _ => match parsed.error.as_str() {
            "invalid_grant" | "interaction_required" | "consent_required" | "login_required" => {
                Some(ConnectionState::ReauthRequired)
            }
            "invalid_client" | "unauthorized_client" => Some(ConnectionState::SecretInvalid),
            _ => None,
        },
    };
    match (state, code) {
        (None, Some(c)) if CONFIG_CODES.contains(&c) => AuthError::Config(message),
        _ => AuthError::Refused { state, code, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(error: &str, code: u32) -> String {
        format!(
            r#"{{"error":"{error}","error_description":"AADSTS{code}: Something happened.\r\nTrace ID: t\r\nCorrelation ID: c\r\nTimestamp: 2026-11-26 10:00:00Z","error_codes":[{code}],"timestamp":"2026-11-26 10:00:00Z","trace_id":"t","correlation_id":"c"}}"#
        )
    }

    fn state_of(err: AuthError) -> Option<ConnectionState> {
        match err {
            AuthError::Refused { state, .. } => state,
            _ => None,
        }
    }

    #[test]
    fn refresh_failures_ask_for_reauthentication() {
        for code in [70000, 70008, 700082, 50173, 65001, 50076] {
            let err = classify(400, &body("invalid_grant", code), Grant::RefreshToken);
            assert_eq!(state_of(err.clone()), Some(ConnectionState::ReauthRequired), "{code}");
            assert!(err.to_string().contains(&format!("AADSTS{code}")), "{err}");
            assert!(!err.to_string().contains("Trace ID"));
        }
    }

    #[test]
    fn secret_problems_and_configuration() {
        assert_eq!(
            state_of(classify(401, &body("invalid_client", 7000215), Grant::ClientCredentials)),
            Some(ConnectionState::SecretInvalid)
        );
        assert_eq!(
            state_of(classify(401, &body("invalid_client", 7000222), Grant::RefreshToken)),
            Some(ConnectionState::SecretExpired)
        );
        assert!(matches!(
            classify(400, &body("invalid_request", 90002), Grant::ClientCredentials),
            AuthError::Config(_)
        ));
        assert!(matches!(
            classify(400, &body("invalid_scope", 700022), Grant::ClientCredentials),
            AuthError::Config(_)
        ));
    }

    #[test]
    fn setup_errors_leave_the_connection_alone_and_busy_is_transient() {
        assert_eq!(state_of(classify(400, &body("invalid_grant", 54005), Grant::AuthorizationCode)), None);
        assert_eq!(state_of(classify(400, &body("invalid_grant", 501481), Grant::AuthorizationCode)), None);
        assert!(classify(503, "", Grant::RefreshToken).is_transient());
        assert!(classify(429, "{}", Grant::ClientCredentials).is_transient());
        assert!(classify(400, &body("temporarily_unavailable", 0), Grant::RefreshToken).is_transient());
    }
}
