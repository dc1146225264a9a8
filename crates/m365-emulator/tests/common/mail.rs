//! Mail helpers of the Graph and EWS tests: a directory with mailboxes, tokens, and MIME samples.

use m365_emulator::{Emulator, EmulatorConfig, IssueSpec, MailboxSpec, Setup, UserSpec};
use serde_json::Value;

use super::*;

pub const SHARED: &str = "support@contoso.test";
pub const ALICE: &str = "alice@contoso.test";

pub fn mail_setup() -> Setup {
    let mut s = setup();
    s.users.push(UserSpec {
        tenant: DOMAIN.into(),
        username: ALICE.into(),
        password: PASSWORD.into(),
        name: Some("Alice".into()),
        ..Default::default()
    });
    s.mailboxes = vec![
        MailboxSpec::new(DOMAIN, USER),
        MailboxSpec { display_name: Some("Support".into()), ..MailboxSpec::new(DOMAIN, SHARED) },
        MailboxSpec::new(DOMAIN, ALICE),
    ];
    s
}

pub fn start_mail() -> Emulator {
    Emulator::start(EmulatorConfig::http(mail_setup())).expect("emulator starts")
}

/// An app-only token (client credentials) for a resource (`https://graph.microsoft.com` or
/// `https://outlook.office365.com`).
pub async fn app_token(emu: &Emulator, resource: &str) -> String {
    let scope = format!("{resource}/.default");
    let (status, body) = post_token(
        emu,
        DOMAIN,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", DAEMON_APP),
            ("client_secret", DAEMON_SECRET),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// A delegated token of `username` through the web app with the given scopes.
pub fn user_token(emu: &Emulator, username: &str, scopes: &[&str]) -> String {
    let t = emu
        .issue_tokens(&IssueSpec {
            tenant: DOMAIN.into(),
            client_id: WEB_APP.into(),
            username: username.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            mfa: false,
        })
        .unwrap();
    t["access_token"].as_str().unwrap().to_string()
}

pub fn mime(n: usize) -> String {
    format!(
        "From: Customer {n} <customer{n}@example.test>\r\nTo: Robot <robot@contoso.test>\r\nSubject: Request {n}\r\n\
         Message-ID: <req{n}@example.test>\r\nDate: Tue, 1 Jul 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nPlease help with number {n}.\r\n"
    )
}

/// `mime(n)` whose sender asks for a read receipt (`Disposition-Notification-To`).
pub fn mime_asking_receipt(n: usize) -> String {
    mime(n).replacen(
        "MIME-Version",
        &format!("Disposition-Notification-To: <customer{n}@example.test>\r\nMIME-Version"),
        1,
    )
}

pub const WITH_ATTACHMENT: &str = "From: a@example.test\r\nTo: robot@contoso.test\r\nSubject: Invoice\r\n\
    Message-ID: <att@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n\
    --XX\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>See <b>attached</b></p>\r\n\
    --XX\r\nContent-Type: application/pdf; name=invoice.pdf\r\nContent-Disposition: attachment; filename=invoice.pdf\r\n\
    Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XX--\r\n";

/// GET/POST/… with a bearer token; returns status, headers and the JSON body (Null if none).
pub async fn call(
    method: reqwest::Method,
    url: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = client().request(method, url).bearer_auth(token);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub async fn gget(url: &str, token: &str) -> (u16, Value) {
    let (s, _, b) = call(reqwest::Method::GET, url, token, &[], None).await;
    (s, b)
}

/// Asserts Graph's error JSON: status, code, and the innerError ids.
pub fn assert_graph_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "status for {body}");
    assert_eq!(body["error"]["code"], code, "code in {body}");
    assert!(body["error"]["message"].is_string());
    let inner = &body["error"]["innerError"];
    assert!(inner["request-id"].is_string() && inner["client-request-id"].is_string() && inner["date"].is_string());
}
