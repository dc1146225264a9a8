//! Browser sessions: a random token in an HttpOnly, SameSite=Lax cookie
//! (Secure when the public URL is https); the store keeps its SHA-256 and
//! the session's CSRF token, which every state-changing form carries.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::WebState;
use mailrobot_store::Session;

pub const SESSION_COOKIE: &str = "mailrobot_session";
/// Double-submit cookie of the sign-in form (there is no session yet).
pub const SIGN_IN_COOKIE: &str = "mailrobot_sign_in";
/// How long a sign-in lasts.
pub const SESSION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(12 * 60 * 60);

/// 32 random bytes, URL-safe base64: session tokens and CSRF tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The value of cookie `name` in the request, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for `name`; `max_age` 0 removes it.
pub fn set_cookie(name: &str, value: &str, max_age: std::time::Duration, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// Compares without leaking where two tokens differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The signed-in administrator of a request. A page that takes one sends
/// the browser to the sign-in page when there is none.
pub struct SignedIn {
    pub session: Session,
    /// The SHA-256 of the cookie's token: names this browser's session.
    pub token_sha256: String,
}

impl SignedIn {
    /// Whether a submitted form carries this session's CSRF token.
    pub fn csrf_ok(&self, submitted: &str) -> bool {
        same_token(&self.session.csrf_token, submitted)
    }

    /// How a Setup Authentication flow started here names its browser.
    pub fn initiator(&self) -> String {
        session_initiator(&self.token_sha256)
    }
}

/// The initiator recorded on flows a browser session starts.
pub fn session_initiator(token_sha256: &str) -> String {
    format!("session:{token_sha256}")
}

impl FromRequestParts<WebState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Self::Rejection> {
        let to_sign_in = || Redirect::to("/sign-in").into_response();
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else { return Err(to_sign_in()) };
        let hash = token_sha256(token);
        let lookup = hash.clone();
        match state.blocking(move |s| s.admins.session(&lookup)).await {
            Ok(Some(session)) => Ok(SignedIn { session, token_sha256: hash }),
            Ok(None) => Err(to_sign_in()),
            Err(err) => Err(crate::pages::error_page(&err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; mailrobot_session=tok-en; b=2".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("tok-en"));
        assert_eq!(cookie(&headers, "missing"), None);
        let set = set_cookie(SESSION_COOKIE, "v", SESSION_LIFETIME, true);
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.ends_with("; Secure"), "{set}");
        assert!(!set_cookie(SESSION_COOKIE, "v", SESSION_LIFETIME, false).contains("Secure"));
    }

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(same_token(&a, &a.clone()));
        assert!(!same_token(&a, &b));
        assert!(!same_token(&a, &a[..42]));
    }
}
