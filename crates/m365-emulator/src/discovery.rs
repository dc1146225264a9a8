//! Discovery and token-checking endpoints: OpenID configuration, JWKS, MSAL's instance
//! discovery, userinfo, and the introspection endpoints for Dovecot's `passdb oauth2`: a generic
//! one (any valid token), and one per mail protocol that checks as Exchange Online does
//! (`mailproto`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::{StsError, Trace};
use crate::html;
use crate::mailproto::{self, Protocol};
use crate::state::{Emu, TenantPath};
use crate::token::parse_params;

/// The tenant id a discovery document names: the real id, or Entra's `{tenantid}` template for
/// the multi-tenant paths.
fn resolve(emu: &Emu, tenant: &str, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let path = emu.lock().tenant_path(tenant);
    match path {
        Some(TenantPath::Tenant(id)) => Ok(id),
        Some(_) => Ok("{tenantid}".into()),
        None => {
            let trace = Trace::new(headers, emu.clock.now_ms());
            Err(Box::new(trace.error_response(&StsError::tenant_not_found(tenant), &emu.base_url)))
        }
    }
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`
pub(crate) async fn openid_configuration(
    State(emu): State<Arc<Emu>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let tid = match resolve(&emu, &tenant, &headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    // Entra names the tenant by id in the endpoints (MSAL reads the tenant back from them).
    let seg = if tid == "{tenantid}" { tenant.clone() } else { tid.clone() };
    let b = &emu.base_url;
    axum::Json(json!({
        "token_endpoint": format!("{b}/{seg}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{b}/{seg}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": emu.issuer(&tid),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{b}/oidc/userinfo"),
        "authorization_endpoint": format!("{b}/{seg}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{b}/{seg}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{b}/{seg}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
            "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid",
            "ver", "at_hash", "c_hash", "email"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "kerberos_endpoint": format!("{b}/{seg}/kerberos"),
        "introspection_endpoint": format!("{b}/introspect"),
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }))
    .into_response()
}

/// `GET /{tenant}/discovery/v2.0/keys`
pub(crate) async fn keys(State(emu): State<Arc<Emu>>, Path(tenant): Path<String>, headers: HeaderMap) -> Response {
    let tid = match resolve(&emu, &tenant, &headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    axum::Json(json!({"keys": [emu.key.jwk(&emu.issuer(&tid))]})).into_response()
}

/// `GET /common/discovery/instance` — MSAL's instance discovery (used unless `instance_discovery=False`).
pub(crate) async fn instance_discovery(State(emu): State<Arc<Emu>>, RawQuery(query): RawQuery) -> Response {
    let params = query.map(|q| parse_params(q.as_bytes())).unwrap_or_default();
    let host = emu.base_url.split("://").nth(1).unwrap_or_default().to_string();
    // The tenant is the path segment of the authorization endpoint asked about.
    let tenant = params
        .get("authorization_endpoint")
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.path_segments().and_then(|mut s| s.next().map(str::to_string)))
        .unwrap_or_else(|| "common".into());
    axum::Json(json!({
        "tenant_discovery_endpoint": format!("{}/{tenant}/v2.0/.well-known/openid-configuration", emu.base_url),
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    }))
    .into_response()
}

/// The claims of a valid, unexpired token of this emulator.
fn check(emu: &Emu, token: &str) -> Option<Value> {
    let claims = emu.key.verify(token)?;
    let now = emu.clock.now_s();
    let exp = claims.get("exp")?.as_i64()?;
    let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(0);
    (now < exp && now + 300 >= nbf).then_some(claims)
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

/// What the introspection endpoint tells about an active token (RFC 7662 names, plus the
/// fields Dovecot's `passdb oauth2` reads: `email` as the user name, `active`).
fn introspection(claims: &Value) -> Value {
    let s = |n: &str| claims.get(n).cloned().unwrap_or(Value::Null);
    let scp = claims.get("scp").and_then(Value::as_str).unwrap_or_default();
    let mut out = json!({
        "active": true,
        "token_type": "Bearer",
        "client_id": s("appid"),
        "aud": s("aud"),
        "iss": s("iss"),
        "sub": s("sub"),
        "oid": s("oid"),
        "tid": s("tid"),
        "exp": s("exp"),
        "iat": s("iat"),
        "scp": scp,
        "scope": scp,
    });
    if let Some(upn) = claims.get("preferred_username") {
        out["username"] = upn.clone();
        out["email"] = claims.get("email").cloned().unwrap_or_else(|| upn.clone());
    }
    if let Some(r) = claims.get("roles") {
        out["roles"] = r.clone();
    }
    out
}

/// `GET /introspect` with `Authorization: Bearer <token>`: 200 with the token's facts, or 401.
pub(crate) async fn introspect_get(State(emu): State<Arc<Emu>>, headers: HeaderMap) -> Response {
    match bearer(&headers).and_then(|t| check(&emu, &t)) {
        Some(claims) => axum::Json(introspection(&claims)).into_response(),
        None => {
            let mut r = (StatusCode::UNAUTHORIZED, axum::Json(json!({"active": false}))).into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
            r
        }
    }
}

/// `POST /introspect` with the form field `token` (RFC 7662): always 200, `active` tells.
pub(crate) async fn introspect_post(State(emu): State<Arc<Emu>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = parse_params(&body);
    let token = form.get("token").cloned().or_else(|| bearer(&headers));
    match token.and_then(|t| check(&emu, &t)) {
        Some(claims) => axum::Json(introspection(&claims)).into_response(),
        None => axum::Json(json!({"active": false})).into_response(),
    }
}

/// `GET /introspect/{protocol}?mailbox=ADDR` with `Authorization: Bearer <token>` (Dovecot's
/// `introspection_mode = auth`): 200 with the token's facts and `email` = the mailbox when Exchange
/// Online would let the login in, else 401 with `error` and `error_description` saying why.
/// `protocol` is Dovecot's service name (`imap`, `pop3`, `submission`) or `pop`, `smtp`.
pub(crate) async fn introspect_protocol_get(
    State(emu): State<Arc<Emu>>,
    Path(protocol): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(p) = Protocol::parse(&protocol) else {
        return unknown_protocol(&protocol);
    };
    let params = query.map(|q| parse_params(q.as_bytes())).unwrap_or_default();
    let token = bearer(&headers).unwrap_or_default();
    match mailproto::check(&emu, &token, p, params.get("mailbox").map(String::as_str)) {
        Ok(login) => axum::Json(protocol_login(&login)).into_response(),
        Err(refusal) => {
            let (code, description) = (refusal.code(), refusal.description(p));
            tracing::info!(protocol = p.name(), error = code, %description, "mail protocol login refused");
            let mut r = (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"active": false, "error": code, "error_description": description})),
            )
                .into_response();
            // A header carries visible ASCII only.
            let quoted: String = description
                .chars()
                .map(|c| if c == '"' || !c.is_ascii() || c.is_ascii_control() { '\'' } else { c })
                .collect();
            let challenge = format!("Bearer error=\"{code}\", error_description=\"{quoted}\"");
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            r
        }
    }
}

/// `POST /introspect/{protocol}` with the form fields `token` and `mailbox` (or `?mailbox=`),
/// RFC 7662 style: always 200, `active` tells (with `error_description` when false).
pub(crate) async fn introspect_protocol_post(
    State(emu): State<Arc<Emu>>,
    Path(protocol): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(p) = Protocol::parse(&protocol) else {
        return unknown_protocol(&protocol);
    };
    let form = parse_params(&body);
    let params = query.map(|q| parse_params(q.as_bytes())).unwrap_or_default();
    let token = form.get("token").cloned().or_else(|| bearer(&headers)).unwrap_or_default();
    let mailbox = form.get("mailbox").or_else(|| params.get("mailbox")).map(String::as_str);
    match mailproto::check(&emu, &token, p, mailbox) {
        Ok(login) => axum::Json(protocol_login(&login)).into_response(),
        Err(refusal) => axum::Json(json!({
            "active": false,
            "error": refusal.code(),
            "error_description": refusal.description(p),
        }))
        .into_response(),
    }
}

/// The introspection answer for a login let in: the mailbox is the user name Dovecot compares
/// with the SASL user.
fn protocol_login(login: &mailproto::Login) -> Value {
    let mut out = introspection(&login.claims);
    out["email"] = json!(login.username);
    out["username"] = json!(login.username);
    out
}

fn unknown_protocol(protocol: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({
            "error": "invalid_request",
            "error_description": format!("unknown protocol '{protocol}': use imap, pop3 (pop) or submission (smtp)"),
        })),
    )
        .into_response()
}

/// `GET /oidc/userinfo` with a delegated access token.
pub(crate) async fn userinfo(State(emu): State<Arc<Emu>>, headers: HeaderMap) -> Response {
    let claims = bearer(&headers).and_then(|t| check(&emu, &t)).filter(|c| c.get("preferred_username").is_some());
    match claims {
        Some(c) => {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            let mut parts = name.splitn(2, ' ');
            let given = parts.next().unwrap_or_default().to_string();
            let family = parts.next().unwrap_or_default().to_string();
            axum::Json(json!({
                "sub": c["sub"],
                "name": name,
                "given_name": given,
                "family_name": family,
                "email": c.get("email").cloned().unwrap_or(Value::Null),
                "picture": format!("{}/oidc/userinfo/picture", emu.base_url),
            }))
            .into_response()
        }
        None => {
            let mut r = StatusCode::UNAUTHORIZED.into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
            r
        }
    }
}

/// `GET /error?code=N` — the error lookup page `error_uri` points at.
pub(crate) async fn error_lookup(RawQuery(query): RawQuery) -> Response {
    let params = query.map(|q| parse_params(q.as_bytes())).unwrap_or_default();
    let code = params.get("code").cloned().unwrap_or_default();
    Html(html::info(
        &format!("Error AADSTS{code}"),
        &["This is the Microsoft identity platform emulator. See Microsoft's AADSTS error code reference for this code."],
    ))
    .into_response()
}

pub(crate) async fn index(State(emu): State<Arc<Emu>>) -> Response {
    Html(html::info(
        "Microsoft identity platform emulator",
        &[
            &format!("Authority: {}/{{tenant}}", emu.base_url),
            "Endpoints: /{tenant}/oauth2/v2.0/authorize, /{tenant}/oauth2/v2.0/token, \
             /{tenant}/v2.0/.well-known/openid-configuration, /{tenant}/discovery/v2.0/keys, /introspect, \
             /introspect/{protocol}, /_admin/…",
        ],
    ))
    .into_response()
}
