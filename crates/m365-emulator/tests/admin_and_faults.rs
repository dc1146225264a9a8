//! Fault injection and counters, the admin API over HTTP, and the binary with a config file
//! and HTTPS.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use m365_emulator::{Emulator, EmulatorConfig, FaultSpec, IdTokenFault, IssueSpec, Setup};
use serde_json::{Value, json};

fn cc_form() -> Vec<(&'static str, &'static str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", DAEMON_APP),
        ("client_secret", DAEMON_SECRET),
        ("scope", "https://graph.microsoft.com/.default"),
    ]
}

#[tokio::test]
async fn injected_faults_and_counters() {
    let emu = start();
    emu.inject_fault(FaultSpec {
        endpoint: "token".into(),
        count: 2,
        status: Some(429),
        retry_after: Some(7),
        ..Default::default()
    })
    .unwrap();
    let c = client();
    for _ in 0..2 {
        let r = c.post(emu.token_url(TENANT_ID)).form(&cc_form()).send().await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "7");
        let s = r.status();
        let b: Value = r.json().await.unwrap();
        assert_sts_error(s, &b, 429, "temporarily_unavailable", 90055);
    }
    let r = c.post(emu.token_url(TENANT_ID)).form(&cc_form()).send().await.unwrap();
    assert_eq!(r.status(), 200, "the fault is used up");

    emu.inject_fault(FaultSpec { status: Some(503), ..Default::default() }).unwrap();
    let r = c.post(emu.token_url(TENANT_ID)).form(&cc_form()).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_none());

    emu.inject_fault(FaultSpec { status: Some(500), ..Default::default() }).unwrap();
    let r = c.post(emu.token_url(TENANT_ID)).form(&cc_form()).send().await.unwrap();
    let s = r.status();
    assert_sts_error(s, &r.json().await.unwrap(), 500, "server_error", 50000);

    emu.inject_fault(FaultSpec { latency_ms: 400, ..Default::default() }).unwrap();
    let t = Instant::now();
    let r = c.post(emu.token_url(TENANT_ID)).form(&cc_form()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(400), "{:?}", t.elapsed());

    emu.inject_fault(FaultSpec { drop_connection: true, ..Default::default() }).unwrap();
    // A fresh client: no pooled connection a retry could fall back on.
    let err = client().post(emu.token_url(TENANT_ID)).form(&cc_form()).send().await.unwrap_err();
    assert!(err.is_request() || err.is_connect(), "{err:?}");

    // Faults on one endpoint leave the others alone; `*` hits any.
    emu.inject_fault(FaultSpec { endpoint: "jwks".into(), status: Some(503), ..Default::default() }).unwrap();
    let r = c.get(emu.openid_configuration_url(TENANT_ID)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(emu.jwks_url(TENANT_ID)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    emu.inject_fault(FaultSpec { endpoint: "*".into(), status: Some(429), ..Default::default() }).unwrap();
    let r = c.get(emu.openid_configuration_url(TENANT_ID)).send().await.unwrap();
    assert_eq!(r.status(), 429);

    let stats = emu.stats();
    let token = &stats.endpoints["token"];
    assert_eq!(token.requests, 7);
    assert_eq!(token.faults, 6);
    assert_eq!(token.status["429"], 2);
    assert_eq!(token.status["503"], 1);
    assert_eq!(token.status["500"], 1);
    assert_eq!(token.status["200"], 2);
    assert_eq!(token.status["dropped"], 1);
    assert_eq!(stats.requests("jwks"), 1);
    assert_eq!(stats.requests("openid_configuration"), 2);
    assert_eq!(stats.grants["client_credentials"], 2);
    emu.reset_stats();
    assert_eq!(emu.stats().requests("token"), 0);

    // The admin API is never faulted nor counted.
    emu.inject_fault(FaultSpec { endpoint: "*".into(), status: Some(500), ..Default::default() }).unwrap();
    let r = c.get(format!("{}/_admin/stats", emu.base_url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    emu.clear_faults();
    let r = c.post(emu.token_url(TENANT_ID)).form(&cc_form()).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn correlation_id_is_the_client_request_id() {
    let emu = start();
    let id = "0f0e0d0c-0b0a-4909-8807-060504030201";
    let r = client()
        .post(emu.token_url(TENANT_ID))
        .header("client-request-id", id)
        .form(&[("grant_type", "client_credentials"), ("client_id", DAEMON_APP), ("client_secret", "bad")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["client-request-id"], id);
    assert_eq!(r.headers()["cache-control"], "no-store, no-cache");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["correlation_id"], id);
}

#[tokio::test]
async fn admin_api_over_http() {
    let emu = Emulator::start(EmulatorConfig::http(Setup::default())).unwrap();
    let c = client();
    let admin = |path: &str| format!("{}/_admin/{path}", emu.base_url());
    let post = |path: &str, body: Value| c.post(admin(path)).json(&body).send();

    let r =
        post("tenants", json!({"domain": "fabrikam.test", "name": "Fabrikam", "access_token_lifetime_seconds": 120}))
            .await
            .unwrap();
    assert_eq!(r.status(), 201);
    let tenant: Value = r.json().await.unwrap();
    let tid = tenant["id"].as_str().unwrap().to_string();
    assert_eq!(tenant["refresh_token_lifetime_seconds"], 90 * 86400);
    let r = post("tenants", json!({"domain": "fabrikam.test"})).await.unwrap();
    assert_eq!(r.status(), 409);
    let r = post("tenants", json!({"domain": "x.test", "bogus": 1})).await.unwrap();
    assert_eq!(r.status(), 400, "unknown fields are refused");

    let r = post(
        "apps",
        json!({"tenant": "fabrikam.test", "name": "robot", "redirect_uris": ["https://r.example/cb"],
               "secrets": [{"value": "s1", "expires_at": "2999-01-01T00:00:00Z"}],
               "application_permissions": ["https://graph.microsoft.com/Mail.ReadWrite"]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let app: Value = r.json().await.unwrap();
    let client_id = app["client_id"].as_str().unwrap().to_string();
    let r = post("apps", json!({"tenant": "nowhere.test"})).await.unwrap();
    assert_eq!(r.status(), 404);

    let r = post("users", json!({"tenant": tid, "username": "amy@fabrikam.test", "password": "pw", "name": "Amy"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let user: Value = r.json().await.unwrap();
    assert!(user["oid"].is_string());
    let r = post(
        "consents",
        json!({"tenant": "fabrikam.test", "client_id": client_id, "username": "amy@fabrikam.test",
               "scopes": ["https://graph.microsoft.com/Mail.Read"]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);

    let state: Value = c.get(admin("state")).send().await.unwrap().json().await.unwrap();
    assert_eq!(state["tenants"][0]["id"], tid);
    assert_eq!(state["apps"][0]["client_id"], client_id);
    assert_eq!(state["consents"][0]["scopes"], json!(["https://graph.microsoft.com/Mail.Read"]));

    // Tokens without the browser, then the user-side admin operations.
    let r = post(
        "tokens",
        json!({"tenant": "fabrikam.test", "client_id": client_id, "username": "amy@fabrikam.test",
               "scopes": ["openid", "offline_access", "https://graph.microsoft.com/Mail.Read"]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let tokens: Value = r.json().await.unwrap();
    assert_eq!(tokens["expires_in"], 120);
    let rt = tokens["refresh_token"].as_str().unwrap().to_string();
    let refresh = |rt: String| {
        let c = c.clone();
        let url = emu.token_url("fabrikam.test");
        let client_id = client_id.clone();
        async move {
            let r = c
                .post(url)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", "s1"),
                    ("refresh_token", rt.as_str()),
                ])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let r =
        post("users/password", json!({"tenant": "fabrikam.test", "username": "amy@fabrikam.test", "password": "new"}))
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let (s, b) = refresh(rt).await;
    assert_eq!((s, b["error_codes"][0].as_u64()), (400, Some(50173)));

    let r = post("apps/secrets/expire", json!({"tenant": "fabrikam.test", "client_id": client_id})).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["expired"], 1);
    let r =
        post("apps/secrets", json!({"tenant": "fabrikam.test", "client_id": client_id, "value": "s2"})).await.unwrap();
    assert_eq!(r.status(), 200);

    let r = post("faults", json!({"endpoint": "token", "status": 503, "count": 1})).await.unwrap();
    assert_eq!(r.status(), 201);
    let faults: Value = c.get(admin("faults")).send().await.unwrap().json().await.unwrap();
    assert_eq!(faults[0]["status"], 503);
    let r = post("faults", json!({"endpoint": "nope"})).await.unwrap();
    assert_eq!(r.status(), 400);
    c.delete(admin("faults")).send().await.unwrap();
    let faults: Value = c.get(admin("faults")).send().await.unwrap().json().await.unwrap();
    assert_eq!(faults, json!([]));

    let clock: Value = post("clock/advance", json!({"seconds": 3600})).await.unwrap().json().await.unwrap();
    assert_eq!(clock["offset_seconds"], 3600);
    let stats: Value = c.get(admin("stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["endpoints"]["token"]["requests"], 1);
    assert_eq!(stats["errors"]["50173"], 1);
    post("stats/reset", json!({})).await.unwrap();

    // Reset goes back to the (empty) start setup.
    let r = c.post(admin("reset")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let state: Value = c.get(admin("state")).send().await.unwrap().json().await.unwrap();
    assert_eq!(state["tenants"], json!([]));
    let clock: Value = c.get(admin("clock")).send().await.unwrap().json().await.unwrap();
    assert_eq!(clock["offset_seconds"], 0);
    // Setup in one go, in the config file's shape.
    let r = post("setup", serde_json::to_value(setup()).unwrap()).await.unwrap();
    assert_eq!(r.status(), 200);
    let (s, _) = post_token(&emu, TENANT_ID, &cc_form()).await;
    assert_eq!(s, 200);
}

/// Reads the "listening on URL" line of the binary.
fn spawn_binary(args: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_m365-emulator"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("m365-emulator listening on ").expect("listening line").to_string();
    (child, url)
}

#[tokio::test]
async fn binary_with_config_file_and_https() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("emulator.json");
    std::fs::write(&config, serde_json::to_string_pretty(&setup()).unwrap()).unwrap();
    let ca = dir.path().join("ca.pem");
    let (mut child, url) = spawn_binary(&[
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
        "--self-signed-ca-out",
        ca.to_str().unwrap(),
    ]);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let c = reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
    let r = c.post(format!("{url}/{TENANT_ID}/oauth2/v2.0/token")).form(&cc_form()).send().await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].is_string());

    // --tls-cert/--tls-key with PEM files (here written from a generated CA).
    let tls = m365_emulator::SelfSignedTls::generate(&["localhost", "127.0.0.1"]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &tls.cert_pem).unwrap();
    std::fs::write(&key, &tls.key_pem).unwrap();
    let (mut child, url) = spawn_binary(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(tls.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = c.get(format!("{url}/common/v2.0/.well-known/openid-configuration")).send().await.unwrap();
    let status = r.status();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200);
}

fn id_token_claims(tokens: &Value) -> Value {
    let payload = tokens["id_token"].as_str().expect("an id_token").split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap())
        .unwrap()
}

#[tokio::test]
async fn id_tokens_can_be_tampered_with_to_test_a_clients_checks() {
    let emu = start();
    let issue = || {
        emu.issue_tokens(&IssueSpec {
            tenant: DOMAIN.into(),
            client_id: WEB_APP.into(),
            username: USER.into(),
            scopes: vec!["openid".into(), "profile".into(), GRAPH_SCOPE.into()],
            mfa: false,
        })
        .unwrap()
    };
    // Over the admin API: change aud, drop tid, for two tokens.
    let r = client()
        .post(format!("{}/_admin/faults/id-token", emu.base_url()))
        .json(&json!({"claims": {"aud": "someone-else", "tid": null}, "count": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for _ in 0..2 {
        let id = id_token_claims(&issue());
        assert_eq!(id["aud"], "someone-else");
        assert!(id.get("tid").is_none(), "{id}");
        assert_eq!(id["iss"], format!("{}/{TENANT_ID}/v2.0", emu.base_url()), "the rest is as issued");
    }
    let id = id_token_claims(&issue());
    assert_eq!(id["aud"], WEB_APP, "used up");
    assert_eq!(id["tid"], TENANT_ID);

    // Through the Rust API; clear_faults drops what is queued.
    emu.tamper_id_tokens(IdTokenFault { claims: json!({"exp": 1}).as_object().unwrap().clone(), count: 1 }).unwrap();
    assert_eq!(id_token_claims(&issue())["exp"], 1);
    emu.tamper_id_tokens(IdTokenFault { claims: json!({"exp": 1}).as_object().unwrap().clone(), count: 5 }).unwrap();
    emu.clear_faults();
    assert_ne!(id_token_claims(&issue())["exp"], 1);
    assert!(emu.tamper_id_tokens(IdTokenFault { claims: Default::default(), count: 0 }).is_err());
}
