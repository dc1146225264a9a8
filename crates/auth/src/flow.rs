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

/// How far the identity platform's clock may be behind ours before a fresh
/// id_token looks expired.
pub const ID_TOKEN_CLOCK_SKEW_SECONDS: i64 = 300;

/// Claims of an id_token the robot checks and records. The token came
/// straight from the token endpoint over TLS, so (per OpenID Connect Core
/// 3.1.3.7) its signature need not be checked; its issuer, audience, expiry,
/// not-before (when given) and nonce are.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct IdClaims {
    pub iss: Option<String>,
    pub aud: Option<Audience>,
    /// Unix seconds; a number, whole or not.
    pub exp: Option<f64>,
    /// Not valid before (Unix seconds), if the token says.
    pub nbf: Option<f64>,
    /// Microsoft: the directory the user signed in to (a GUID, also when the
    /// tenant is configured as a domain name or `organizations`).
    pub tid: Option<String>,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    pub upn: Option<String>,
    pub email: Option<String>,
    pub oid: Option<String>,
    pub sub: Option<String>,
    pub nonce: Option<String>,
}

/// `aud` is one string, or (OpenID Connect) an array of them.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, client_id: &str) -> bool {
        match self {
            Audience::One(a) => a == client_id,
            Audience::Many(all) => all.iter().any(|a| a == client_id),
        }
    }
}

impl std::fmt::Display for Audience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Audience::One(a) => write!(f, "{a:?}"),
            Audience::Many(all) => write!(f, "{all:?}"),
        }
    }
}

/// What the id_token of one sign-in must say.
pub struct IdTokenExpectation<'a> {
    /// The tenant's authority URL without a trailing slash: `iss` must be
    /// `{authority}/{tid}/v2.0`. None for generic OAuth2 providers, whose
    /// issuer is not configured (their `iss` is not checked).
    pub authority: Option<&'a str>,
    /// `aud` must be (or contain) the app's client id.
    pub client_id: &'a str,
    /// The nonce sent in the authorize request.
    pub nonce: &'a str,
    /// Unix seconds.
    pub now: i64,
}

impl IdClaims {
    /// Checks nonce, audience, issuer and expiry; the error says which failed and what to do.
    pub fn check(&self, expected: &IdTokenExpectation<'_>) -> Result<(), String> {
        if self.nonce.as_deref() != Some(expected.nonce) {
            return Err("the id_token's nonce does not match this sign-in; start again".into());
        }
        match &self.aud {
            Some(aud) if aud.contains(expected.client_id) => {}
            Some(aud) => {
                return Err(format!(
                    "the id_token is meant for another application (aud {aud}), not client id {}; \
                     check the tenant's client id and start Setup Authentication again",
                    expected.client_id
                ));
            }
            None => return Err("the id_token names no audience (aud); start Setup Authentication again".into()),
        }
        if let Some(authority) = expected.authority {
            let tid = self.tid.as_deref().filter(|t| !t.is_empty()).ok_or_else(|| {
                format!(
                    "the id_token names no tenant (tid), so its issuer cannot be checked; \
                     is {authority} a Microsoft identity platform? check the tenant's authority URL"
                )
            })?;
            let issuer = format!("{authority}/{tid}/v2.0");
            if self.iss.as_deref() != Some(issuer.as_str()) {
                return Err(format!(
                    "the id_token was issued by {}, not by {issuer:?}; check the tenant's authority URL \
                     and start Setup Authentication again",
                    self.iss.as_deref().map_or("nobody (no iss)".to_string(), |i| format!("{i:?}"))
                ));
            }
        }
        let at = |secs: f64| {
            chrono::DateTime::from_timestamp(secs as i64, 0)
                .map_or_else(|| format!("{secs} (Unix time)"), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        };
        if let Some(nbf) = self.nbf
            && nbf - (ID_TOKEN_CLOCK_SKEW_SECONDS as f64) > expected.now as f64
        {
            return Err(format!(
                "the id_token is valid only from {} and this machine's clock says {}; if the clock is wrong, \
                 correct it (NTP), then start Setup Authentication again",
                at(nbf),
                at(expected.now as f64)
            ));
        }
        let exp = self.exp.ok_or("the id_token has no expiry (exp); start Setup Authentication again")?;
        if exp + (ID_TOKEN_CLOCK_SKEW_SECONDS as f64) < expected.now as f64 {
            return Err(format!(
                "the id_token expired at {} and this machine's clock says {}; if the clock is wrong, \
                 correct it (NTP), then start Setup Authentication again",
                at(exp),
                at(expected.now as f64)
            ));
        }
        Ok(())
    }
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

    const AUTHORITY: &str = "https://login.microsoftonline.com";
    const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT: &str = "5a1b2c3d-0000-4000-8000-00000000c11e";
    const NOW: i64 = 1_800_000_000;

    fn token(claims: serde_json::Value) -> IdClaims {
        id_claims(&format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(claims.to_string()))).unwrap()
    }

    /// What Microsoft issues: `iss` = `{authority}/{tid}/v2.0` with the token's own tid.
    fn microsoft() -> serde_json::Value {
        serde_json::json!({
            "iss": format!("{AUTHORITY}/{TID}/v2.0"), "aud": CLIENT, "tid": TID,
            "exp": NOW + 3600, "nonce": "n-1", "preferred_username": "ada@contoso.com"
        })
    }

    fn expect(authority: Option<&'static str>) -> IdTokenExpectation<'static> {
        IdTokenExpectation { authority, client_id: CLIENT, nonce: "n-1", now: NOW }
    }

    fn with(change: &str, value: serde_json::Value) -> IdClaims {
        let mut claims = microsoft();
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(change);
        } else {
            claims[change] = value;
        }
        token(claims)
    }

    #[test]
    fn a_microsoft_id_token_passes() {
        token(microsoft()).check(&expect(Some(AUTHORITY))).unwrap();
        // aud may be an array that contains the client id (OpenID Connect).
        with("aud", serde_json::json!(["other", CLIENT])).check(&expect(Some(AUTHORITY))).unwrap();
    }

    #[test]
    fn the_nonce_must_match() {
        let err = with("nonce", "replayed".into()).check(&expect(Some(AUTHORITY))).unwrap_err();
        assert!(err.contains("nonce does not match"), "{err}");
        assert!(with("nonce", serde_json::Value::Null).check(&expect(Some(AUTHORITY))).is_err());
    }

    #[test]
    fn the_audience_must_be_our_client_id() {
        let err =
            with("aud", "00000003-0000-0000-c000-000000000000".into()).check(&expect(Some(AUTHORITY))).unwrap_err();
        assert!(err.contains("meant for another application") && err.contains(CLIENT), "{err}");
        assert!(with("aud", serde_json::json!(["a", "b"])).check(&expect(Some(AUTHORITY))).is_err());
        let err = with("aud", serde_json::Value::Null).check(&expect(Some(AUTHORITY))).unwrap_err();
        assert!(err.contains("no audience"), "{err}");
    }

    #[test]
    fn the_issuer_is_the_authority_with_the_tokens_own_tenant() {
        // Another directory's issuer with this token's tid, another host, v1.0, none at all.
        for iss in [
            format!("{AUTHORITY}/00000000-0000-0000-0000-000000000001/v2.0"),
            format!("https://login.evil.example/{TID}/v2.0"),
            format!("https://sts.windows.net/{TID}/"),
            format!("{AUTHORITY}/organizations/v2.0"),
        ] {
            let err = with("iss", iss.clone().into()).check(&expect(Some(AUTHORITY))).unwrap_err();
            assert!(err.contains("was issued by") && err.contains("authority URL"), "{iss}: {err}");
        }
        assert!(with("iss", serde_json::Value::Null).check(&expect(Some(AUTHORITY))).is_err());
        // The expectation follows tid, so a token whose tid and iss agree on another tenant passes
        // (a tenant configured as a domain name or `organizations` cannot know its GUID up front).
        let other = "11111111-2222-3333-4444-555555555555";
        let mut claims = microsoft();
        claims["tid"] = other.into();
        claims["iss"] = format!("{AUTHORITY}/{other}/v2.0").into();
        token(claims).check(&expect(Some(AUTHORITY))).unwrap();
        // No tid: the issuer cannot be checked.
        let err = with("tid", serde_json::Value::Null).check(&expect(Some(AUTHORITY))).unwrap_err();
        assert!(err.contains("no tenant (tid)"), "{err}");
        // Generic OAuth2 providers have no configured issuer; the other checks still apply.
        with("iss", "https://accounts.example".into()).check(&expect(None)).unwrap();
        assert!(with("aud", "someone-else".into()).check(&expect(None)).is_err());
    }

    #[test]
    fn an_expired_id_token_is_refused_with_five_minutes_of_skew() {
        with("exp", (NOW - 60).into()).check(&expect(Some(AUTHORITY))).unwrap();
        with("exp", (NOW - ID_TOKEN_CLOCK_SKEW_SECONDS).into()).check(&expect(Some(AUTHORITY))).unwrap();
        let err =
            with("exp", (NOW - ID_TOKEN_CLOCK_SKEW_SECONDS - 1).into()).check(&expect(Some(AUTHORITY))).unwrap_err();
        assert!(err.contains("expired at 2027-01-15T07:54:59Z") && err.contains("clock"), "{err}");
        let err = with("exp", serde_json::Value::Null).check(&expect(Some(AUTHORITY))).unwrap_err();
        assert!(err.contains("no expiry"), "{err}");
        // A fractional exp is still a NumericDate.
        with("exp", serde_json::json!((NOW + 10) as f64 + 0.5)).check(&expect(Some(AUTHORITY))).unwrap();
    }

    #[test]
    fn an_id_token_not_valid_yet_is_refused_with_five_minutes_of_skew() {
        with("nbf", (NOW + ID_TOKEN_CLOCK_SKEW_SECONDS).into()).check(&expect(Some(AUTHORITY))).unwrap();
        let err =
            with("nbf", (NOW + ID_TOKEN_CLOCK_SKEW_SECONDS + 1).into()).check(&expect(Some(AUTHORITY))).unwrap_err();
        assert!(err.contains("valid only from") && err.contains("clock"), "{err}");
    }
}
