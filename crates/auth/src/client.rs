//! HTTP to the token endpoint: form posts, no redirects, bounded retries
//! with backoff for 429, 5xx and network trouble.

use std::time::Duration;

use crate::error::AuthError;
use crate::protocol::{Grant, TokenResponse, classify};

const ATTEMPTS: u32 = 3;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest Retry-After we wait inside one call; longer ones end the call as
/// transient and the caller's own backoff takes over.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct TokenClient {
    http: reqwest::Client,
}

impl TokenClient {
    /// Trusts the web PKI plus `MAILROBOT_CA_FILE` (a private CA, or a test's).
    pub fn new() -> Result<Self, AuthError> {
        let tls = mailrobot_sources::tls::client_config(None).map_err(|e| AuthError::Config(e.to_string()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("mailrobot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AuthError::Config(format!("HTTP client: {e}")))?;
        Ok(Self { http })
    }

    /// POSTs a token request; `basic` sends the client secret as HTTP Basic
    /// instead of in the body.
    pub async fn token(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
        grant: Grant,
    ) -> Result<TokenResponse, AuthError> {
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            let mut request = self.http.post(url).form(form);
            if let Some((user, password)) = basic {
                request = request.basic_auth(user, Some(password));
            }
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = mailrobot_sources::throttle::retry_after(response.headers());
                    // The token endpoint's answers are small; a flood is a transient failure.
                    let body =
                        match mailrobot_sources::http_body::read_capped(response, mailrobot_sources::http_body::SMALL)
                            .await
                        {
                            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                            Err(e) => {
                                let err = AuthError::Transient(format!("reading the token endpoint's answer: {e}"));
                                if attempt == ATTEMPTS {
                                    return Err(err);
                                }
                                tracing::warn!(attempt, error = %err, "token request failed; retrying");
                                tokio::time::sleep(delay).await;
                                delay *= 2;
                                continue;
                            }
                        };
                    if (200..300).contains(&status) {
                        return serde_json::from_str(&body).map_err(|e| {
                            AuthError::Transient(format!("the token endpoint answered with unreadable JSON: {e}"))
                        });
                    }
                    (classify(status, &body, grant), retry_after)
                }
                Err(err) => (
                    AuthError::Transient(format!("cannot reach the token endpoint {url}: {}", without_url(&err))),
                    None,
                ),
            };
            let (err, retry_after) = outcome;
            if !err.is_transient() || attempt == ATTEMPTS {
                return Err(err);
            }
            let wait = retry_after.unwrap_or(delay);
            if wait > MAX_RETRY_AFTER {
                return Err(err);
            }
            tracing::warn!(attempt, wait_ms = wait.as_millis() as u64, error = %err, "token request failed; retrying");
            tokio::time::sleep(wait).await;
            delay *= 2;
        }
        unreachable!("the loop returns on its last attempt")
    }
}

/// reqwest errors print the URL, which is fine, but never the form body;
/// keep only the cause chain.
fn without_url(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() { "timed out".to_string() } else { err.without_url_ref().to_string() };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        if self.is_connect() {
            "connection failed".into()
        } else if self.is_request() {
            "request failed".into()
        } else {
            "error".into()
        }
    }
}
