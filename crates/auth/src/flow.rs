//! Setup Authentication (authorization code + PKCE S256): the authorize URL,
//! and what the id_token says about who signed in.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// How long a started Setup Authentication stays valid.
pub const FLOW_LIFETIME_MINUTES: i64 = 10;

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A fresh `state`, `nonce` and PKCE verifier (RFC 7636: 43+ characters).
pub struct FlowSecrets {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

impl FlowSecrets {
    pub fn generate() -> Self {
        Self { state: random_token(24), nonce: random_token(16), verifier: random_token(48) }
    }

    pub fn challenge(&self) -> String {
        pkce_challenge(&self.verifier)
    }
}

pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

pub struct AuthorizeRequest<'a> {
    pub authorize_endpoint: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scopes: &'a [String],
    pub state: &'a str,
    pub nonce: &'a str,
    pub code_challenge: &'a str,
    pub login_hint: Option<&'a str>,
    /// Ask for a refresh token the way generic providers (Google) want it.
    pub offline_access_type: bool,
}

impl AuthorizeRequest<'_> {
    pub fn url(&self) -> Result<String, String> {
        let mut url = url::Url::parse(self.authorize_endpoint)
            .map_err(|e| format!("the authorize URL {:?} is not a URL: {e}", self.authorize_endpoint))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("client_id", self.client_id)
                .append_pair("response_type", "code")
                .append_pair("redirect_uri", self.redirect_uri)
                .append_pair("response_mode", "query")
                .append_pair("scope", &self.scopes.join(" "))
                .append_pair("state", self.state)
                .append_pair("nonce", self.nonce)
                .append_pair("code_challenge", self.code_challenge)
                .append_pair("code_challenge_method", "S256")
                .append_pair("prompt", "select_account");
            if let Some(hint) = self.login_hint {
                query.append_pair("login_hint", hint);
            }
            if self.offline_access_type {
                query.append_pair("access_type", "offline");
            }
        }
        Ok(url.into())
    }
}

/// Claims of an id_token the robot records. The token came straight from
/// the token endpoint over TLS, so (per OpenID Connect Core 3.1.3.7) its
/// signature need not be checked; its nonce is.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct IdClaims {
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    pub upn: Option<String>,
    pub email: Option<String>,
    pub oid: Option<String>,
    pub sub: Option<String>,
    pub nonce: Option<String>,
}

pub fn id_claims(id_token: &str) -> Result<IdClaims, String> {
    let payload = id_token.split('.').nth(1).ok_or("the id_token is not a JWT")?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("the id_token payload is not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the id_token payload is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let s = FlowSecrets::generate();
        assert!(s.verifier.len() >= 43);
        assert_ne!(s.state, FlowSecrets::generate().state);
    }

    #[test]
    fn authorize_url_carries_everything() {
        let scopes =
            vec!["https://graph.microsoft.com/Mail.ReadWrite.Shared".to_string(), "offline_access".to_string()];
        let url = AuthorizeRequest {
            authorize_endpoint: "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/authorize",
            client_id: "cid",
            redirect_uri: "https://robot.example/wm/externalAuth/redirect.html",
            scopes: &scopes,
            state: "st",
            nonce: "no",
            code_challenge: "ch",
            login_hint: None,
            offline_access_type: false,
        }
        .url()
        .unwrap();
        let parsed = url::Url::parse(&url).unwrap();
        let q: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
        assert_eq!(q["redirect_uri"], "https://robot.example/wm/externalAuth/redirect.html");
        assert_eq!(q["scope"], "https://graph.microsoft.com/Mail.ReadWrite.Shared offline_access");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["response_type"], "code");
    }

    #[test]
    fn reads_id_token_claims() {
        let payload =
            URL_SAFE_NO_PAD.encode(r#"{"name":"Ada","preferred_username":"ada@contoso.com","oid":"o-1","nonce":"n"}"#);
        let claims = id_claims(&format!("e30.{payload}.sig")).unwrap();
        assert_eq!(claims.preferred_username.as_deref(), Some("ada@contoso.com"));
        assert_eq!(claims.nonce.as_deref(), Some("n"));
        assert!(id_claims("garbage").is_err());
    }
}
