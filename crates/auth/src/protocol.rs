//! The token endpoint's wire format (identity platform v2.0, RFC 6749) and
//! what its errors mean for a connection.

use serde::Deserialize;

use crate::error::AuthError;
use crate::model::ConnectionState;

/// A token endpoint's answer. Its tokens are wiped from memory when it is
/// dropped and never shown by `Debug`.
#[derive(Deserialize)]
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

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("scope", &self.scope)
            .field("expires_in", &self.expires_in)
            .field("access_token", &"***")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "***"))
            .field("id_token", &self.id_token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Drop for TokenResponse {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.access_token.zeroize();
        self.refresh_token.zeroize();
        self.id_token.zeroize();
    }
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
/// 28000 and 700022: the scopes span more than one resource.
const CONFIG_CODES: &[u32] = &[700016, 7000218, 90002, 70011, 700022, 28000, 50011, 900023, 90014, 700025, 500011];

/// What a refusal of the app's own credentials (`invalid_client`,
/// `unauthorized_client`) means and what a person should do. Only a wrong or
/// expired secret is cured by a new secret.
fn credential_advice(error: &str, code: Option<u32>) -> String {
    match code {
        Some(7000215) => {
            "the client secret is wrong (give the secret's Value, not its Secret ID): create a new client \
                          secret in the app registration (Certificates & secrets) and update the tenant"
                .into()
        }
        Some(7000222) => "the client secret has expired: create a new client secret in the app registration \
                          (Certificates & secrets) and update the tenant"
            .into(),
        Some(700027) => "the app registration does not accept the certificate the robot signs with (not uploaded, \
                         removed, or a different key): upload the tenant's certificate (its public part) under \
                         Certificates & secrets in the app registration, or give the tenant the certificate and key \
                         that are registered there"
            .into(),
        Some(700024) => "the client assertion was outside its validity time, so this machine's clock is off: set the \
                         clock right (NTP); the robot asks again on its next poll"
            .into(),
        Some(c) => format!(
            "the identity platform refused the app's credentials ({error}, AADSTS{c}): check the tenant's client id \
             and its secret or certificate against the app registration; \
             https://login.microsoftonline.com/error?code={c} explains the code"
        ),
        None => format!(
            "the identity platform refused the app's credentials ({error}): check the tenant's client id and its \
             secret or certificate against the app registration"
        ),
    }
}

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
    let mut message = parsed.message();
    if matches!(parsed.error.as_str(), "invalid_client" | "unauthorized_client") {
        message = format!("{message} — {}", credential_advice(&parsed.error, code));
    }
    if matches!(code, Some(28000 | 700022)) {
        message = format!(
            "{message} — a token is for one resource: make one connection per resource, each with that \
             resource's scopes only"
        );
    }
    let state = match code {
        Some(7000215) => Some(ConnectionState::SecretInvalid),
        Some(7000222) => Some(ConnectionState::SecretExpired),
        // Clock skew: nothing in the tenant is wrong, so nothing is blocked;
        // the next poll asks again once the clock is right.
        Some(700024) => None,
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

    #[test]
    fn debug_shows_no_token() {
        let r: TokenResponse = serde_json::from_str(
            r#"{"token_type":"Bearer","access_token":"AT-secret","refresh_token":"RT-secret","id_token":"ID-secret"}"#,
        )
        .unwrap();
        let shown = format!("{r:?}");
        assert!(!shown.contains("secret") && shown.contains("***"), "{shown}");
    }

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
    fn only_a_wrong_or_expired_secret_is_told_to_make_a_new_secret() {
        for code in [7000215, 7000222] {
            let err = classify(401, &body("invalid_client", code), Grant::ClientCredentials);
            assert!(err.to_string().contains("create a new client secret"), "{code}: {err}");
        }
        // A certificate the app registration does not know: upload it, no secret.
        let cert = classify(401, &body("invalid_client", 700027), Grant::ClientCredentials);
        assert_eq!(state_of(cert.clone()), Some(ConnectionState::SecretInvalid));
        let text = cert.to_string();
        assert!(text.contains("AADSTS700027") && text.contains("upload the tenant's certificate"), "{text}");
        assert!(!text.contains("client secret"), "{text}");
        // Clock skew: fix the clock; the connection is not blocked for it.
        let skew = classify(401, &body("invalid_client", 700024), Grant::RefreshToken);
        assert!(matches!(skew, AuthError::Refused { state: None, code: Some(700024), .. }), "{skew:?}");
        let text = skew.to_string();
        assert!(text.contains("clock") && !text.contains("client secret"), "{text}");
        // Any other credential refusal says its code and where to look, not "new secret".
        let other = classify(401, &body("invalid_client", 700021), Grant::ClientCredentials);
        let text = other.to_string();
        assert!(text.contains("AADSTS700021") && text.contains("error?code=700021"), "{text}");
        assert!(!text.contains("create a new client secret"), "{text}");
        let unauthorized = classify(400, &body("unauthorized_client", 7000112), Grant::RefreshToken);
        assert!(!unauthorized.to_string().contains("create a new client secret"), "{unauthorized}");
    }

    #[test]
    fn scopes_spanning_resources_are_a_configuration_error() {
        for code in [28000, 700022] {
            let err = classify(400, &body("invalid_scope", code), Grant::AuthorizationCode);
            assert!(matches!(&err, AuthError::Config(m) if m.contains("one connection per resource")), "{err:?}");
        }
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
