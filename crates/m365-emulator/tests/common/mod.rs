//! Shared helpers of the integration tests: a standard directory, an HTTP client that does not
//! follow redirects, the sign-in form dance, Microsoft's error shape, and JWT checks against the
//! published JWKS (with ring directly, not the emulator's own code).

#![allow(dead_code)]

pub mod mail;
pub mod ntlm;
pub mod python;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use m365_emulator::{AppSpec, Emulator, EmulatorConfig, SecretSpec, Setup, TenantSpec, UserSpec};
use reqwest::StatusCode;
use serde_json::Value;

pub const TENANT_ID: &str = "7a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
pub const DOMAIN: &str = "contoso.test";
/// A confidential web app for the delegated flows (the robot's "Setup Authentication").
pub const WEB_APP: &str = "0d5e8a4c-1b2f-4c3d-9e8f-7a6b5c4d3e2f";
pub const WEB_SECRET: &str = "web~secret.value";
pub const REDIRECT: &str = "https://robot.example/wm/externalAuth/redirect.html";
/// A daemon app for client credentials.
pub const DAEMON_APP: &str = "3f2e1d0c-9b8a-4765-8432-10fedcba9876";
pub const DAEMON_SECRET: &str = "daemon~secret.value";
pub const USER: &str = "robot@contoso.test";
pub const PASSWORD: &str = "Passw0rd!";
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/Mail.ReadWrite.Shared";

pub fn setup() -> Setup {
    Setup {
        tenants: vec![TenantSpec { id: Some(TENANT_ID.into()), name: "Contoso".into(), ..TenantSpec::new(DOMAIN) }],
        apps: vec![
            AppSpec {
                tenant: DOMAIN.into(),
                client_id: Some(WEB_APP.into()),
                name: "Mail robot".into(),
                redirect_uris: vec![REDIRECT.into(), "http://localhost/callback".into()],
                secrets: vec![SecretSpec::new(WEB_SECRET)],
                ..Default::default()
            },
            AppSpec {
                tenant: DOMAIN.into(),
                client_id: Some(DAEMON_APP.into()),
                name: "Mail robot daemon".into(),
                secrets: vec![SecretSpec::new(DAEMON_SECRET)],
                application_permissions: vec![
                    "https://graph.microsoft.com/Mail.ReadWrite".into(),
                    "https://graph.microsoft.com/Mail.Send".into(),
                    "https://outlook.office365.com/full_access_as_app".into(),
                ],
                ..Default::default()
            },
        ],
        users: vec![UserSpec {
            tenant: DOMAIN.into(),
            username: USER.into(),
            password: PASSWORD.into(),
            name: Some("Mail Robot".into()),
            ..Default::default()
        }],
        consents: vec![],
        ..Default::default()
    }
}

pub fn start() -> Emulator {
    Emulator::start(EmulatorConfig::http(setup())).expect("emulator starts")
}

pub fn start_with(setup: Setup) -> Emulator {
    Emulator::start(EmulatorConfig::http(setup)).expect("emulator starts")
}

/// A client that shows redirects instead of following them.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

pub async fn post_token(emu: &Emulator, tenant: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = client().post(emu.token_url(tenant)).form(form).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// Asserts Microsoft's error JSON exactly: HTTP status, `error`, `error_codes`, and the
/// `error_description` layout "AADSTSn: …\r\nTrace ID: …\r\nCorrelation ID: …\r\nTimestamp: …".
pub fn assert_sts_error(status: StatusCode, body: &Value, want_status: u16, error: &str, code: u32) {
    assert_eq!(status.as_u16(), want_status, "status for {body}");
    assert_eq!(body["error"], error, "error in {body}");
    assert_eq!(body["error_codes"], serde_json::json!([code]), "codes in {body}");
    let desc = body["error_description"].as_str().expect("error_description");
    assert!(desc.starts_with(&format!("AADSTS{code}: ")), "description {desc}");
    let lines: Vec<&str> = desc.split("\r\n").collect();
    assert_eq!(lines.len(), 4, "description lines: {desc:?}");
    let trace = body["trace_id"].as_str().unwrap();
    let corr = body["correlation_id"].as_str().unwrap();
    let ts = body["timestamp"].as_str().unwrap();
    assert_eq!(lines[1], format!("Trace ID: {trace}"));
    assert_eq!(lines[2], format!("Correlation ID: {corr}"));
    assert_eq!(lines[3], format!("Timestamp: {ts}"));
    assert!(uuid_like(trace) && uuid_like(corr), "ids {trace} {corr}");
    // yyyy-mm-dd hh:mm:ssZ
    assert_eq!(ts.len(), 20, "timestamp {ts}");
    assert!(chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%SZ").is_ok(), "timestamp {ts}");
    assert!(body["error_uri"].as_str().unwrap().ends_with(&format!("/error?code={code}")));
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

/// PKCE verifier and S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = format!("verifier-{}-0123456789abcdefghijklmnopqrstuvwxyz", rand_suffix());
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
    (verifier, challenge)
}

pub fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The value of a hidden input in a page.
pub fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].replace("&amp;", "&").replace("&quot;", "\"").replace("&#39;", "'"))
}

/// Query parameters of a redirect `Location`.
pub fn location_params(loc: &str) -> std::collections::HashMap<String, String> {
    let url = url::Url::parse(loc).unwrap();
    url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// Where a sign-in dance ended.
#[derive(Debug)]
pub enum Landing {
    /// A redirect (its Location).
    Redirect(String),
    /// A page (status and HTML).
    Page(u16, String),
}

/// GET the authorize URL; returns the page or redirect it answers with.
pub async fn get(c: &reqwest::Client, url: &str) -> Landing {
    land(c.get(url).send().await.unwrap()).await
}

pub async fn land(r: reqwest::Response) -> Landing {
    let status = r.status().as_u16();
    if status == 302 {
        return Landing::Redirect(r.headers()["location"].to_str().unwrap().to_string());
    }
    Landing::Page(status, r.text().await.unwrap())
}

pub fn page(l: Landing) -> String {
    match l {
        Landing::Page(200, html) => html,
        other => panic!("expected a page, got {other:?}"),
    }
}

pub fn redirect(l: Landing) -> String {
    match l {
        Landing::Redirect(loc) => loc,
        other => panic!("expected a redirect, got {other:?}"),
    }
}

/// Posts a form of the emulator (sign-in, MFA, consent).
pub async fn post_form(c: &reqwest::Client, emu: &Emulator, action: &str, form: &[(&str, &str)]) -> Landing {
    land(c.post(format!("{}{action}", emu.base_url())).form(form).send().await.unwrap()).await
}

/// The action attribute of the page's form.
pub fn form_action(html: &str) -> String {
    let start = html.find("action=\"").unwrap() + 8;
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_string()
}

pub fn authorize_url(emu: &Emulator, tenant: &str, params: &[(&str, &str)]) -> String {
    let mut u = url::Url::parse(&emu.authorize_url(tenant)).unwrap();
    u.query_pairs_mut().extend_pairs(params);
    u.to_string()
}

/// Signs in with the password form and accepts consent if asked; returns the final redirect.
pub async fn sign_in(c: &reqwest::Client, emu: &Emulator, url: &str, user: &str, password: &str) -> String {
    let html = page(get(c, url).await);
    let flow = hidden(&html, "flow").expect("flow field");
    let action = form_action(&html);
    let mut landing = post_form(c, emu, &action, &[("flow", &flow), ("username", user), ("password", password)]).await;
    if let Landing::Page(200, html) = &landing
        && html.contains("Permissions requested")
    {
        let flow = hidden(html, "flow").unwrap();
        landing = post_form(c, emu, &form_action(html), &[("flow", &flow), ("action", "accept")]).await;
    }
    redirect(landing)
}

/// The JWKS of a tenant, fetched over HTTP.
pub async fn jwks(emu: &Emulator, tenant: &str) -> Value {
    reqwest::get(emu.jwks_url(tenant)).await.unwrap().json().await.unwrap()
}

/// Checks an RS256 JWT against a JWKS and returns (header, claims).
pub fn verify_jwt(token: &str, jwks: &Value) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "JWT parts");
    let dec = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();
    let header: Value = serde_json::from_slice(&dec(parts[0])).unwrap();
    let claims: Value = serde_json::from_slice(&dec(parts[1])).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    let kid = header["kid"].as_str().unwrap();
    let key = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid).expect("kid in JWKS");
    let n = dec(key["n"].as_str().unwrap());
    let e = dec(key["e"].as_str().unwrap());
    let public = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
    public
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &dec(parts[2]),
        )
        .expect("signature verifies against the JWKS");
    (header, claims)
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
