//! `POST /{tenant}/oauth2/v2.0/token`: authorization_code, refresh_token and client_credentials
//! grants, client authentication (secret in the body, HTTP Basic, certificate assertion), and
//! the tokens themselves.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::error::{StsError, Trace};
use crate::jwt::{self, Jwt};
use crate::scopes::{self, Permission, Resource, Scope};
use crate::state::{
    App, Emu, Inner, MS, PkceMethod, RefreshGrant, RevokeReason, Tenant, TenantPath, User, random_token,
};

pub(crate) type Params = HashMap<String, String>;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Clock skew tolerated on client assertion times.
const SKEW_S: i64 = 300;

/// Form or query parameters; the first occurrence of a name wins.
pub(crate) fn parse_params(raw: &[u8]) -> Params {
    let mut out = Params::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

/// `Authorization: Basic base64(urlencode(client_id):urlencode(secret))` (RFC 6749 2.3.1).
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    let dec = |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
    Some((dec(id)?, dec(secret)?))
}

/// ISO 8601 with seven fraction digits, as Entra prints times inside messages.
fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().format("%Y-%m-%dT%H:%M:%S%.3f0000Z").to_string()
}

/// A duration as .NET prints a TimeSpan (`d.hh:mm:ss`).
fn timespan(ms: i64) -> String {
    let s = ms / MS;
    format!("{}.{:02}:{:02}:{:02}", s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60)
}

/// Pairwise subject: stable per user (or app) and client, as Entra's `sub`.
fn pairwise_sub(tenant_id: &str, oid: &str, client_id: &str) -> String {
    let h = jwt::sha256(format!("{tenant_id}|{oid}|{client_id}").as_bytes());
    jwt::b64url(&h)
}

pub(crate) async fn token_get(State(emu): State<Arc<Emu>>, headers: HeaderMap) -> Response {
    let trace = Trace::new(&headers, emu.clock.now_ms());
    let e = StsError::new(
        "invalid_request",
        900561,
        "The endpoint only accepts POST, OPTIONS requests. Received a GET request.",
    );
    emu.faults().count_error(e.code);
    trace.error_response(&e, &emu.base_url)
}

pub(crate) async fn token_post(
    State(emu): State<Arc<Emu>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let trace = Trace::new(&headers, emu.clock.now_ms());
    let form = parse_params(&body);
    let grant = form.get("grant_type").cloned().unwrap_or_default();
    match handle(&emu, &tenant, &form, basic_auth(&headers)) {
        Ok(body) => {
            emu.faults().count_grant(&grant);
            tracing::debug!(tenant, grant, "token issued");
            (StatusCode::OK, trace.headers(), axum::Json(body)).into_response()
        }
        Err(e) => {
            emu.faults().count_error(e.code);
            tracing::info!(tenant, grant, code = e.code, error = e.error, "token request refused: {}", e.message);
            trace.error_response(&e, &emu.base_url)
        }
    }
}

/// Tokens to sign once the directory lock is released (RSA signing is the slow part).
pub(crate) struct Pending {
    access: Value,
    id: Option<Value>,
    refresh: Option<String>,
    scope: Option<String>,
    expires_in: u64,
    client_info: Option<String>,
}

impl Pending {
    pub fn sign(self, emu: &Emu) -> Value {
        let mut out = json!({
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "ext_expires_in": self.expires_in,
            "access_token": emu.key.sign(&self.access),
        });
        if let Some(s) = self.scope {
            out["scope"] = json!(s);
        }
        if let Some(r) = self.refresh {
            out["refresh_token"] = json!(r);
        }
        if let Some(mut id) = self.id {
            if let Some(changes) = emu.faults().take_id_token() {
                for (claim, value) in changes {
                    match value {
                        Value::Null => id.as_object_mut().map(|o| o.remove(&claim)),
                        value => id.as_object_mut().map(|o| o.insert(claim, value)),
                    };
                }
            }
            out["id_token"] = json!(emu.key.sign(&id));
        }
        if let Some(ci) = self.client_info {
            out["client_info"] = json!(ci);
        }
        out
    }
}

fn handle(emu: &Emu, tenant_raw: &str, form: &Params, basic: Option<(String, String)>) -> Result<Value, StsError> {
    let now_ms = emu.clock.now_ms();
    let pending = {
        let mut g = emu.lock();
        g.maybe_prune(now_ms);
        let path = g.tenant_path(tenant_raw).ok_or_else(|| StsError::tenant_not_found(tenant_raw))?;
        if form.contains_key("resource") {
            return Err(StsError::new("invalid_request", 901002, "The 'resource' request parameter is not supported."));
        }
        let grant = form.get("grant_type").ok_or_else(|| StsError::missing("grant_type"))?;
        if !matches!(grant.as_str(), "authorization_code" | "refresh_token" | "client_credentials") {
            return Err(StsError::new(
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{grant}'."),
            ));
        }
        let client = authenticate(&g, emu, &path, tenant_raw, form, basic, grant, now_ms)?;
        let ctx = Ctx { emu, path: &path, tenant_raw, form, client: &client, now_ms };
        match grant.as_str() {
            "authorization_code" => redeem_code(&mut g, &ctx)?,
            "refresh_token" => redeem_refresh(&mut g, &ctx)?,
            _ => client_credentials(&g, &ctx)?,
        }
    };
    Ok(pending.sign(emu))
}

/// The authenticated client.
struct Client {
    app: App,
    /// `azpacr`: 0 public client, 1 secret, 2 certificate.
    acr: &'static str,
}

struct Ctx<'a> {
    emu: &'a Emu,
    path: &'a TenantPath,
    tenant_raw: &'a str,
    form: &'a Params,
    client: &'a Client,
    now_ms: i64,
}

#[allow(clippy::too_many_arguments)]
fn authenticate(
    g: &Inner,
    emu: &Emu,
    path: &TenantPath,
    tenant_raw: &str,
    form: &Params,
    basic: Option<(String, String)>,
    grant: &str,
    now_ms: i64,
) -> Result<Client, StsError> {
    let body_id = form.get("client_id").filter(|s| !s.is_empty());
    let client_id = match (&basic, body_id) {
        (Some((b, _)), Some(f)) if b != f => {
            return Err(StsError::new(
                "invalid_request",
                90100,
                "The client_id in the request body differs from the one in the Authorization header.",
            ));
        }
        (Some((b, _)), _) => b.clone(),
        (None, Some(f)) => f.clone(),
        (None, None) => return Err(StsError::missing("client_id")),
    };
    let app = g.app(&client_id).ok_or_else(|| StsError::app_not_found(&client_id, tenant_raw))?;
    match path {
        TenantPath::Tenant(tid) if !g.app_usable_in(app, tid) => {
            return Err(StsError::app_not_found(&client_id, tenant_raw));
        }
        TenantPath::Consumers => {
            return Err(StsError::new(
                "invalid_request",
                9002332,
                format!(
                    "Application '{client_id}'({}) is configured for use by Azure Active Directory users only. \
                     Please do not use the /consumers endpoint to serve this request.",
                    app.spec.name
                ),
            ));
        }
        _ => {}
    }
    let secret = basic.as_ref().map(|(_, s)| s.clone()).or_else(|| form.get("client_secret").cloned());
    let assertion = form.get("client_assertion");
    if app.spec.public_client {
        if secret.is_some() || assertion.is_some() {
            return Err(StsError::new(
                "invalid_client",
                700025,
                "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
            ));
        }
        if grant == "client_credentials" {
            return Err(no_credential());
        }
        return Ok(Client { app: app.clone(), acr: "0" });
    }
    if let Some(a) = assertion {
        match form.get("client_assertion_type").map(String::as_str) {
            None => return Err(StsError::missing("client_assertion_type")),
            Some(JWT_BEARER) => {}
            Some(other) => {
                return Err(StsError::new(
                    "invalid_request",
                    90100,
                    format!("The client_assertion_type '{other}' is not supported; use '{JWT_BEARER}'."),
                ));
            }
        }
        verify_assertion(g, emu, app, a, path, tenant_raw, now_ms)?;
        return Ok(Client { app: app.clone(), acr: "2" });
    }
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return Err(no_credential());
    };
    let matching: Vec<_> = app.secrets.iter().filter(|s| s.value == secret).collect();
    if matching.is_empty() {
        return Err(StsError::new(
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret \
                 value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        ));
    }
    if matching.iter().all(|s| s.expires_ms.is_some_and(|e| e <= now_ms)) {
        return Err(StsError::new(
            "invalid_client",
            7000222,
            format!(
                "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create \
                 new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for \
                 added security: https://aka.ms/certCreds."
            ),
        ));
    }
    Ok(Client { app: app.clone(), acr: "1" })
}

fn no_credential() -> StsError {
    StsError::new(
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    )
}

/// Checks a certificate client assertion (see certificate-credentials on learn.microsoft.com).
fn verify_assertion(
    g: &Inner,
    emu: &Emu,
    app: &App,
    assertion: &str,
    path: &TenantPath,
    tenant_raw: &str,
    now_ms: i64,
) -> Result<(), StsError> {
    let malformed =
        |why: &str| StsError::new("invalid_client", 50027, format!("JWT token is invalid or malformed. {why}"));
    let jwt = Jwt::parse(assertion).ok_or_else(|| malformed("The client assertion is not a JWT."))?;
    let alg = jwt.header.get("alg").and_then(Value::as_str).unwrap_or_default();
    if alg != "RS256" && alg != "PS256" {
        return Err(StsError::new(
            "invalid_client",
            5002738,
            format!(
                "Invalid JWT token. '{alg}' is not a supported signature algorithm. Supported signing algorithms \
                 are: 'RS256, PS256'"
            ),
        ));
    }
    let s256 = jwt.header.get("x5t#S256").and_then(Value::as_str);
    let s1 = jwt.header.get("x5t").and_then(Value::as_str);
    let cert = match (s256, s1) {
        (Some(t), _) => app.certs.iter().find(|c| c.x5t_s256 == t.trim_end_matches('=')),
        (None, Some(t)) => app.certs.iter().find(|c| c.x5t == t.trim_end_matches('=')),
        (None, None) => None,
    };
    let Some(cert) = cert else {
        let shown = s256.or(s1).and_then(jwt::b64url_decode).map(|b| b.iter().map(|x| format!("{x:02X}")).collect());
        return Err(StsError::new(
            "invalid_client",
            700027,
            format!(
                "Client assertion failed signature validation. (Reason - The key was not found., Thumbprint of key \
                 used by client: '{}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see \
                 configured keys for app Id '{}'. Review the documentation at \
                 https://docs.microsoft.com/en-us/graph/deployments if you are not using the global cloud.)",
                shown.unwrap_or_else(|| String::from("none")),
                app.client_id
            ),
        ));
    };
    if !jwt::verify_rsa(alg, &cert.n, &cert.e, jwt.signing_input.as_bytes(), &jwt.signature) {
        return Err(StsError::new(
            "invalid_client",
            700027,
            format!(
                "Client assertion failed signature validation. (Reason - The provided signature value did not match \
                 the expected signature value., Thumbprint of key used by client: '{}', Found key 'Start={}')",
                cert.thumbprint_hex,
                iso(cert.not_after * MS)
            ),
        ));
    }
    let claim = |n: &str| jwt.claims.get(n).and_then(Value::as_str);
    if claim("iss") != Some(app.client_id.as_str()) || claim("sub") != Some(app.client_id.as_str()) {
        return Err(StsError::new(
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation \
             at https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials .",
        ));
    }
    // The audience is the token endpoint, written with the tenant as in the request, its id or domain.
    let mut tenants = vec![tenant_raw.to_string()];
    if let TenantPath::Tenant(tid) = path
        && let Some(t) = g.tenant_by_id(tid)
    {
        tenants.push(t.id.clone());
        tenants.push(t.spec.domain.clone());
    }
    let allowed: Vec<String> = tenants
        .iter()
        .flat_map(|t| [format!("{}/{t}/oauth2/v2.0/token", emu.base_url), format!("{}/{t}/oauth2/token", emu.base_url)])
        .collect();
    let auds: Vec<&str> = match jwt.claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !auds.iter().any(|a| allowed.iter().any(|x| x.eq_ignore_ascii_case(a))) {
        return Err(StsError::new(
            "invalid_client",
            700023,
            "Client assertion audience claim does not match Realm issuer. Review the documentation at \
             https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials .",
        ));
    }
    let now = now_ms / MS;
    // NumericDate may carry fractions (MSAL for Python sends `time.time()` floats).
    let numeric = |n: &str| jwt.claims.get(n).and_then(Value::as_f64).map(|f| f.floor() as i64);
    let exp = numeric("exp").ok_or_else(|| malformed("The 'exp' claim is missing."))?;
    if now > exp + SKEW_S {
        return Err(StsError::new(
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, expiry time of assertion {}.",
                iso(now_ms),
                iso(exp * MS)
            ),
        ));
    }
    if let Some(nbf) = numeric("nbf")
        && now + SKEW_S < nbf
    {
        return Err(StsError::new(
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}.",
                iso(now_ms),
                iso(nbf * MS)
            ),
        ));
    }
    // MSAL reuses one assertion for up to ten minutes, so a repeated jti is fine; a missing one is not.
    if claim("jti").is_none_or(str::is_empty) {
        return Err(malformed("The 'jti' claim is missing."));
    }
    Ok(())
}

/// The sign-in session a grant belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Session {
    pub seq: u64,
    pub auth_time_s: i64,
    pub mfa: bool,
}

fn revoked_error(user: &User, seq: u64, auth_time_s: i64) -> Option<StsError> {
    let r = user.revoked_for(seq)?;
    Some(match r.reason {
        RevokeReason::PasswordChange => StsError::new(
            "invalid_grant",
            50173,
            format!(
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might \
                 have changed or reset their password. The grant was issued on '{}' and the TokensValidFrom date \
                 (before which tokens are not valid) for this user is '{}'.",
                iso(auth_time_s * MS),
                iso(r.at_ms)
            ),
        ),
        RevokeReason::Admin => StsError::new(
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired or has been revoked (the user's sign-in \
             sessions were revoked by an administrator). Send a new interactive authorization request for this user \
             and resource.",
        ),
    })
}

fn redeem_code(g: &mut Inner, cx: &Ctx) -> Result<Pending, StsError> {
    let code = cx.form.get("code").filter(|s| !s.is_empty()).ok_or_else(|| StsError::missing("code"))?;
    let redirect_uri = cx.form.get("redirect_uri").ok_or_else(|| StsError::missing("redirect_uri"))?;
    let c =
        g.codes.get(code).cloned().ok_or_else(|| {
            StsError::new("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        })?;
    if c.client_id != cx.client.app.client_id {
        return Err(StsError::new(
            "invalid_grant",
            70000,
            "Provided grant is invalid or malformed. The authorization code was issued to another client.",
        ));
    }
    if c.redeemed {
        return Err(StsError::new(
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing \
             refresh token.",
        ));
    }
    if cx.now_ms - c.issued_ms > crate::state::CODE_LIFETIME_MS {
        return Err(StsError::new(
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive \
             authorization request for this user and resource.",
        ));
    }
    let same_path = match (&c.path, cx.path) {
        (TenantPath::Tenant(a), TenantPath::Tenant(b)) => a == b,
        (a, b) => a == b,
    };
    if !same_path {
        return Err(StsError::new(
            "invalid_grant",
            700005,
            "Provided Authorization Code is intended to use against other tenant, thus rejected.",
        ));
    }
    if *redirect_uri != c.redirect_uri {
        return Err(StsError::new(
            "invalid_grant",
            500112,
            format!(
                "The reply address '{redirect_uri}' does not match the reply address '{}' provided when requesting \
                 Authorization code.",
                c.redirect_uri
            ),
        ));
    }
    if let Some((challenge, method)) = &c.challenge {
        let verifier = cx.form.get("code_verifier").map(String::as_str).unwrap_or_default();
        let computed = match method {
            PkceMethod::S256 => jwt::b64url(&jwt::sha256(verifier.as_bytes())),
            PkceMethod::Plain => verifier.to_string(),
        };
        if verifier.is_empty() || computed != *challenge {
            return Err(StsError::new(
                "invalid_grant",
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            ));
        }
    }
    let tenant = g.tenant_by_id(&c.tenant_id).cloned().ok_or_else(|| StsError::tenant_not_found(&c.tenant_id))?;
    let user = g
        .user(&c.tenant_id, &c.user_oid)
        .cloned()
        .ok_or_else(|| StsError::new("invalid_grant", 70000, "Provided grant is invalid or malformed."))?;
    let session = Session { seq: c.session_seq, auth_time_s: c.auth_time_s, mfa: c.mfa };
    if let Some(e) = revoked_error(&user, session.seq, session.auth_time_s) {
        return Err(e);
    }
    let requested =
        cx.form.get("scope").map(|s| scopes::split(s)).filter(|s| !s.is_empty()).unwrap_or(c.scopes.clone());
    // The authorize request may name several resources; the redemption must ask for one (plus
    // OIDC scopes). Field reports of the v2.0 endpoint show AADSTS28000 here.
    if let Ok(parsed) = g.parse_scopes(&tenant, &requested)
        && !tenant.generic()
        && scopes::distinct_resources(&parsed).len() > 1
    {
        return Err(multiple_resources(28000, &requested.join(" ")));
    }
    let out = issue_delegated(
        g,
        cx.emu,
        &Issue {
            tenant: &tenant,
            app: &cx.client.app,
            user: &user,
            requested: &requested,
            grant_scopes: &c.scopes,
            session,
            nonce: c.nonce.as_deref(),
            client_info: cx.form.get("client_info").is_some_and(|v| v == "1"),
            mint_refresh: c.offline,
            acr: cx.client.acr,
            now_ms: cx.now_ms,
        },
    )?;
    if let Some(c) = g.codes.get_mut(code) {
        c.redeemed = true;
    }
    Ok(out)
}

fn redeem_refresh(g: &mut Inner, cx: &Ctx) -> Result<Pending, StsError> {
    let rt =
        cx.form.get("refresh_token").filter(|s| !s.is_empty()).ok_or_else(|| StsError::missing("refresh_token"))?;
    let grant =
        g.refresh.get(rt).cloned().ok_or_else(|| {
            StsError::new("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        })?;
    let app = &cx.client.app;
    let wrong_tenant = matches!(cx.path, TenantPath::Tenant(t) if *t != grant.tenant_id);
    if grant.client_id != app.client_id || wrong_tenant {
        return Err(StsError::new(
            "invalid_grant",
            70000,
            "Provided grant is invalid or malformed. The refresh token was issued to another client or tenant.",
        ));
    }
    if cx.path.is_multi() && !app.spec.multi_tenant {
        return Err(StsError::single_tenant_on_common(&app.client_id, &app.spec.name));
    }
    let tenant = g.tenant_by_id(&grant.tenant_id).cloned().ok_or_else(|| StsError::tenant_not_found(cx.tenant_raw))?;
    let user = g
        .user(&grant.tenant_id, &grant.user_oid)
        .cloned()
        .ok_or_else(|| StsError::new("invalid_grant", 70000, "Provided grant is invalid or malformed."))?;
    if let Some(e) = revoked_error(&user, grant.session_seq, grant.auth_time_s) {
        return Err(e);
    }
    let grace_ms = tenant.spec.refresh_token_reuse_grace_seconds as i64 * MS;
    if grant.superseded_ms.is_some_and(|at| cx.now_ms - at > grace_ms) {
        return Err(StsError::new(
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired or has been revoked: this refresh token \
             was already redeemed and replaced by the one issued with it. Use the newest refresh token. Send a new \
             interactive authorization request for this user and resource.",
        ));
    }
    let age_ms = cx.now_ms - grant.issued_ms;
    if let Some(inactive) = tenant.spec.refresh_token_inactivity_seconds
        && age_ms > inactive as i64 * MS
    {
        return Err(StsError::new(
            "invalid_grant",
            700082,
            format!(
                "The refresh token has expired due to inactivity. The token was issued on {} and was inactive for \
                 {}.",
                iso(grant.issued_ms),
                timespan(inactive as i64 * MS)
            ),
        ));
    }
    if age_ms > tenant.spec.refresh_token_lifetime_seconds as i64 * MS {
        return Err(StsError::new(
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive \
             authorization request for this user and resource.",
        ));
    }
    let requested =
        cx.form.get("scope").map(|s| scopes::split(s)).filter(|s| !s.is_empty()).unwrap_or(grant.scopes.clone());
    let rotate = tenant.spec.rotate_refresh_tokens;
    let out = issue_delegated(
        g,
        cx.emu,
        &Issue {
            tenant: &tenant,
            app,
            user: &user,
            requested: &requested,
            grant_scopes: &grant.scopes,
            session: Session { seq: grant.session_seq, auth_time_s: grant.auth_time_s, mfa: grant.mfa },
            nonce: None,
            client_info: cx.form.get("client_info").is_some_and(|v| v == "1"),
            mint_refresh: rotate,
            acr: cx.client.acr,
            now_ms: cx.now_ms,
        },
    )?;
    if rotate && let Some(old) = g.refresh.get_mut(rt) {
        // Grace counts from the first redemption, however often the old token is replayed.
        old.superseded_ms.get_or_insert(cx.now_ms);
    }
    Ok(out)
}

fn client_credentials(g: &Inner, cx: &Ctx) -> Result<Pending, StsError> {
    let tid = match cx.path {
        TenantPath::Tenant(t) => t.clone(),
        TenantPath::Organizations => {
            return Err(StsError::new(
                "invalid_request",
                50059,
                "No tenant-identifying information found in either the request or implied by any provided credentials.",
            ));
        }
        _ => {
            return Err(StsError::new(
                "invalid_request",
                9001023,
                "The grant type isn't supported over the /common or /consumers endpoints. Please use the \
                 /organizations or tenant-specific endpoint.",
            ));
        }
    };
    let tenant = g.tenant_by_id(&tid).cloned().ok_or_else(|| StsError::tenant_not_found(cx.tenant_raw))?;
    let app = &cx.client.app;
    let raw_scope = cx.form.get("scope").filter(|s| !s.trim().is_empty()).ok_or_else(|| StsError::missing("scope"))?;
    let raw = scopes::split(raw_scope);
    let (aud, roles) = if tenant.generic() {
        let roles = app.spec.application_permissions.clone();
        (app.client_id.clone(), roles)
    } else {
        let parsed = g.parse_scopes(&tenant, &raw).map_err(|b| StsError::invalid_scope(&b.0))?;
        for (s, p) in raw.iter().zip(&parsed) {
            if !matches!(p, Scope::Perm(_)) {
                return Err(StsError::invalid_scope(s));
            }
        }
        let resources = scopes::distinct_resources(&parsed);
        if resources.len() > 1 {
            // AADSTS700022 InvalidMultipleResourcesScope (the error-code reference).
            return Err(multiple_resources(700022, raw_scope));
        }
        for (s, p) in raw.iter().zip(&parsed) {
            if matches!(p, Scope::Perm(p) if !p.is_default()) {
                return Err(StsError::new(
                    "invalid_scope",
                    70011,
                    format!(
                        "The provided value for the input parameter 'scope' is not valid. The scope {s} is not valid. \
                         Client credential flows must have a scope value with /.default suffixed to the resource \
                         identifier (application ID URI)."
                    ),
                ));
            }
        }
        let resource = resources[0].clone();
        if !g.resource_known(&resource) {
            return Err(StsError::resource_not_found(&resource.uri, tenant.display()));
        }
        (audience(&resource), g.roles(&tenant, app, &resource.id))
    };
    if app.spec.blocked_by_conditional_access {
        return Err(blocked_by_ca());
    }
    let now = cx.now_ms / MS;
    let lifetime = tenant.spec.access_token_lifetime_seconds;
    let mut access = json!({
        "aud": aud,
        "iss": cx.emu.issuer(&tenant.id),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime as i64,
        "aio": random_token(24),
        "azp": app.client_id,
        "azpacr": cx.client.acr,
        "appid": app.client_id,
        "appidacr": cx.client.acr,
        "idp": cx.emu.issuer(&tenant.id),
        "idtyp": "app",
        "oid": app.object_id,
        "rh": "0.emulator",
        "sub": app.object_id,
        "tid": tenant.id,
        "uti": random_token(16),
        "ver": "2.0",
    });
    if !roles.is_empty() {
        access["roles"] = json!(roles);
    }
    Ok(Pending { access, id: None, refresh: None, scope: None, expires_in: lifetime, client_info: None })
}

/// Scopes of more than one resource where a token for one is asked for.
fn multiple_resources(code: u32, scope: &str) -> StsError {
    StsError::new(
        "invalid_scope",
        code,
        format!(
            "Provided value for the input parameter scope is not valid because it contains more than one resource. \
             Scope {scope} is not valid."
        ),
    )
}

/// `aud` of a token for a resource: first-party resources keep the URI the client used, app
/// registrations get their client id (as v2.0 tokens do).
fn audience(r: &Resource) -> String {
    if r.is_builtin() { r.uri.clone() } else { r.id.clone() }
}

fn blocked_by_ca() -> StsError {
    StsError::new(
        "invalid_grant",
        53003,
        "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
    )
}

pub(crate) fn consent_missing(app: &App) -> StsError {
    StsError::new(
        "invalid_grant",
        65001,
        format!(
            "The user or administrator has not consented to use the application with ID '{}' named '{}'. Send an \
             interactive authorization request for this user and resource.",
            app.client_id, app.spec.name
        ),
    )
    .with_suberror("consent_required")
}

/// What a delegated token is issued from.
pub(crate) struct Issue<'a> {
    pub tenant: &'a Tenant,
    pub app: &'a App,
    pub user: &'a User,
    /// Scopes asked for now (decide the resource and the checks).
    pub requested: &'a [String],
    /// Scopes of the original authorization (remembered by the refresh token).
    pub grant_scopes: &'a [String],
    pub session: Session,
    pub nonce: Option<&'a str>,
    pub client_info: bool,
    pub mint_refresh: bool,
    pub acr: &'static str,
    pub now_ms: i64,
}

/// Access token (+ id token, + refresh token) for a user, after the user-side checks.
pub(crate) fn issue_delegated(g: &mut Inner, emu: &Emu, i: &Issue) -> Result<Pending, StsError> {
    let (tenant, app, user) = (i.tenant, i.app, i.user);
    let parsed = g.parse_scopes(tenant, i.requested).map_err(|b| StsError::invalid_scope(&b.0))?;
    if user.spec.blocked_by_conditional_access {
        return Err(blocked_by_ca());
    }
    let granted = g.granted(tenant, app, user);
    let is_granted = |p: &Permission| granted.iter().any(|q| q.key() == p.key());
    let perms = scopes::permissions(&parsed);
    let (aud, scp, resource_id, mut scope_out): (String, Vec<String>, String, Vec<String>) = if tenant.generic() {
        if perms.iter().any(|p| !is_granted(p)) {
            return Err(consent_missing(app));
        }
        let names: Vec<String> = perms.iter().map(|p| p.name.clone()).collect();
        (app.client_id.clone(), names.clone(), String::new(), names)
    } else {
        let resource = perms.first().map(|p| p.resource.clone()).unwrap_or_else(Resource::graph);
        if !g.resource_known(&resource) {
            return Err(StsError::resource_not_found(&resource.uri, tenant.display()));
        }
        // With several resources the first one wins; the others stay usable through the refresh token.
        let mine: Vec<&&Permission> = perms.iter().filter(|p| p.resource.id == resource.id).collect();
        if mine.iter().any(|p| !p.is_default() && !is_granted(p)) {
            return Err(consent_missing(app));
        }
        let scp: Vec<String> =
            granted.iter().filter(|p| p.resource.id == resource.id).map(|p| p.name.clone()).collect();
        if scp.is_empty() && !mine.is_empty() {
            return Err(consent_missing(app));
        }
        let out = scp.iter().map(|n| format!("{}/{n}", resource.uri)).collect();
        (audience(&resource), scp, resource.id.clone(), out)
    };
    if user.spec.mfa_required && !i.session.mfa {
        return Err(StsError::new(
            "invalid_grant",
            50076,
            format!(
                "Due to a configuration change made by your administrator, or because you moved to a new location, \
                 you must use multi-factor authentication to access '{}'.",
                if resource_id.is_empty() { &app.client_id } else { &resource_id }
            ),
        )
        .with_suberror("basic_action"));
    }
    for o in ["openid", "profile", "email", "offline_access"] {
        if scopes::has_oidc(&parsed, o) {
            scope_out.push(o.to_string());
        }
    }
    let now = i.now_ms / MS;
    let lifetime = tenant.spec.access_token_lifetime_seconds;
    let sub = pairwise_sub(&tenant.id, &user.oid, &app.client_id);
    let scp_claim =
        if scp.is_empty() { scope_out.iter().filter(|s| *s != "offline_access").cloned().collect() } else { scp };
    let amr = if i.session.mfa { json!(["pwd", "mfa"]) } else { json!(["pwd"]) };
    let access = json!({
        "aud": aud,
        "iss": emu.issuer(&tenant.id),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime as i64,
        "aio": random_token(24),
        "amr": amr,
        "azp": app.client_id,
        "azpacr": i.acr,
        "appid": app.client_id,
        "appidacr": i.acr,
        "auth_time": i.session.auth_time_s,
        "email": user.email(),
        "idtyp": "user",
        "name": user.name(),
        "oid": user.oid,
        "preferred_username": user.spec.username,
        "rh": "0.emulator",
        "scp": scp_claim.join(" "),
        "sub": sub,
        "tid": tenant.id,
        "unique_name": user.spec.username,
        "upn": user.spec.username,
        "uti": random_token(16),
        "ver": "2.0",
    });
    let id = scopes::has_oidc(&parsed, "openid").then(|| {
        let mut id = json!({
            "aud": app.client_id,
            "iss": emu.issuer(&tenant.id),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "aio": random_token(24),
            "auth_time": i.session.auth_time_s,
            "name": user.name(),
            "oid": user.oid,
            "preferred_username": user.spec.username,
            "rh": "0.emulator",
            "sub": sub,
            "tid": tenant.id,
            "uti": random_token(16),
            "ver": "2.0",
        });
        if let Some(n) = i.nonce {
            id["nonce"] = json!(n);
        }
        if scopes::has_oidc(&parsed, "email") {
            id["email"] = json!(user.email());
        }
        id
    });
    let refresh = i.mint_refresh.then(|| {
        let token = format!("1.emu.{}", random_token(48));
        g.refresh.insert(
            token.clone(),
            RefreshGrant {
                client_id: app.client_id.clone(),
                tenant_id: tenant.id.clone(),
                user_oid: user.oid.clone(),
                scopes: i.grant_scopes.to_vec(),
                issued_ms: i.now_ms,
                session_seq: i.session.seq,
                auth_time_s: i.session.auth_time_s,
                mfa: i.session.mfa,
                superseded_ms: None,
            },
        );
        token
    });
    let client_info =
        i.client_info.then(|| jwt::b64url(json!({"uid": user.oid, "utid": tenant.id}).to_string().as_bytes()));
    Ok(Pending { access, id, refresh, scope: Some(scope_out.join(" ")), expires_in: lifetime, client_info })
}

/// `POST /_admin/tokens`: what a finished sign-in would return, without the browser.
pub(crate) fn issue_for_admin(emu: &Emu, spec: &crate::IssueSpec) -> Result<Value, crate::EmulatorError> {
    use crate::EmulatorError;
    let now_ms = emu.clock.now_ms();
    let pending = {
        let mut g = emu.lock();
        let tenant = g
            .tenant(&spec.tenant)
            .cloned()
            .ok_or_else(|| EmulatorError::NotFound(format!("tenant {}", spec.tenant)))?;
        let app = g
            .app(&spec.client_id)
            .cloned()
            .ok_or_else(|| EmulatorError::NotFound(format!("app {}", spec.client_id)))?;
        let oid = g
            .user_by_name(Some(&tenant.id), &spec.username)
            .ok_or_else(|| EmulatorError::NotFound(format!("user {}", spec.username)))?
            .oid
            .clone();
        let parsed =
            g.parse_scopes(&tenant, &spec.scopes).map_err(|b| EmulatorError::Invalid(format!("scope {}", b.0)))?;
        let consent: Vec<String> = spec
            .scopes
            .iter()
            .zip(&parsed)
            .filter(|(_, p)| matches!(p, Scope::Perm(p) if !p.is_default()))
            .map(|(s, _)| s.clone())
            .collect();
        let user = g.user_mut(&tenant.id, &oid).expect("user just found");
        let list = user.consents.entry(app.client_id.clone()).or_default();
        for s in consent {
            if !list.iter().any(|x| x.eq_ignore_ascii_case(&s)) {
                list.push(s);
            }
        }
        let user = user.clone();
        let seq = g.next_seq();
        let offline = scopes::has_oidc(&parsed, "offline_access");
        issue_delegated(
            &mut g,
            emu,
            &Issue {
                tenant: &tenant,
                app: &app,
                user: &user,
                requested: &spec.scopes,
                grant_scopes: &spec.scopes,
                session: Session { seq, auth_time_s: now_ms / MS, mfa: spec.mfa },
                nonce: None,
                client_info: false,
                mint_refresh: offline,
                acr: if app.spec.public_client { "0" } else { "1" },
                now_ms,
            },
        )
        .map_err(|e| EmulatorError::Invalid(e.headline()))?
    };
    Ok(pending.sign(emu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_url_decoded() {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode("my%20app:s%3Acret%2B");
        h.insert("authorization", format!("Basic {v}").parse().unwrap());
        assert_eq!(basic_auth(&h), Some(("my app".into(), "s:cret+".into())));
    }

    #[test]
    fn time_formats() {
        assert_eq!(timespan((90 * 86400 + 3661) * MS), "90.01:01:01");
        assert_eq!(iso(0), "1970-01-01T00:00:00.0000000Z");
    }
}
