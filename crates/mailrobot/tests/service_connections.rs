//! Service connections end to end, against the Microsoft identity platform
//! emulator: Setup Authentication through `serve`'s redirect endpoint,
//! application mode, rotation across processes, single-flight refreshes,
//! revocation pausing mailboxes, secret problems, and secrets at rest.

mod common;

use std::time::Duration;

use common::*;
use m365_emulator::{
    AppSpec, ConsentSpec, Emulator, EmulatorConfig, FaultSpec, IdTokenFault, SecretSpec, Setup, TenantMode, TenantSpec,
    UserSpec,
};
use serde_json::Value;

const CLIENT_ID: &str = "5a1b2c3d-0000-4000-8000-00000000c11e";
const SECRET: &str = "Cl1ent~Secret.Value-That-Must-Not-Leak";
const DOMAIN: &str = "contoso.test";
const ADMIN: &str = "ada.admin@contoso.test";
const ADMIN_PASSWORD: &str = "Passw0rd!Ada";

struct World {
    emu: Emulator,
    robot: Robot,
}

/// An emulated tenant with the app registration the seed's guide makes, and
/// a robot with that tenant added.
fn world(access_token_lifetime: u64) -> World {
    let emu = Emulator::start(EmulatorConfig::http(Setup::default())).unwrap();
    emu.add_tenant(TenantSpec { access_token_lifetime_seconds: access_token_lifetime, ..TenantSpec::new(DOMAIN) })
        .unwrap();
    emu.add_app(AppSpec {
        tenant: DOMAIN.into(),
        client_id: Some(CLIENT_ID.into()),
        name: "Service desk robot".into(),
        // Loopback redirect URIs match on any port (Microsoft's localhost rule).
        redirect_uris: vec!["http://127.0.0.1/wm/externalAuth/redirect.html".into()],
        secrets: vec![SecretSpec::new(SECRET)],
        application_permissions: vec!["https://graph.microsoft.com/Mail.ReadWrite".into()],
        ..Default::default()
    })
    .unwrap();
    emu.add_user(UserSpec {
        tenant: DOMAIN.into(),
        username: ADMIN.into(),
        password: ADMIN_PASSWORD.into(),
        name: Some("Ada Admin".into()),
        ..Default::default()
    })
    .unwrap();
    let robot = Robot::new();
    let out = robot.run_raw(
        &[
            "tenant",
            "add",
            "--name",
            "contoso",
            "--client-id",
            CLIENT_ID,
            "--tenant",
            DOMAIN,
            "--client-secret-env",
            "M365_SECRET",
            "--authority-url",
            emu.base_url(),
        ],
        &[("M365_SECRET", SECRET)],
    );
    assert!(out.status.success(), "tenant add: {}", String::from_utf8_lossy(&out.stderr));
    World { emu, robot }
}

fn token_requests(emu: &Emulator) -> u64 {
    emu.stats().requests("token")
}

async fn sign_in(emu: &Emulator, authorize_url: &str, accept: bool) -> (u16, String, String) {
    common::oauth::sign_in_as(emu, DOMAIN, ADMIN, ADMIN_PASSWORD, authorize_url, accept).await
}

fn authorize(robot: &Robot, connection: &str) -> String {
    let url = robot.run(&["connection", "authorize", connection]).lines().next().unwrap().trim().to_string();
    // Without `--public-url` the redirect goes where `serve` said it
    // listens (a port the kernel picked), never to the default one.
    assert!(
        !url.contains("127.0.0.1%3A8025%2F") && !url.contains("127.0.0.1:8025/"),
        "the authorize URL {url} does not use the public URL serve recorded\n{}",
        robot.serve_logs()
    );
    url
}

fn test_json(robot: &Robot, connection: &str) -> (bool, Value) {
    let out = robot.run_raw(&["connection", "test", connection, "--json"], &[]);
    let value: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("connection test: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), value)
}

async fn delegated_ready(w: &World) {
    w.robot.run(&[
        "connection",
        "add",
        "--name",
        "desk",
        "--tenant",
        "contoso",
        "--capability",
        "graph",
        "--mode",
        "delegated",
    ]);
    let url = authorize(&w.robot, "desk");
    let (status, body, _) = sign_in(&w.emu, &url, true).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ready"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_authentication_end_to_end_through_serve() {
    let w = world(3599);
    let (mut serve, address) = w.robot.spawn_serve_anywhere();
    assert!(http_get(&address, "/healthz").is_some());

    w.robot.run(&[
        "connection",
        "add",
        "--name",
        "desk",
        "--tenant",
        "contoso",
        "--capability",
        "graph",
        "--mode",
        "delegated",
    ]);
    let (ok, before) = test_json(&w.robot, "desk");
    assert!(!ok);
    assert_eq!(before["state"], "not_authenticated");

    let url = authorize(&w.robot, "desk");
    assert!(
        url.contains(&format!(
            "redirect_uri=http%3A%2F%2F127.0.0.1%3A{}%2Fwm%2FexternalAuth%2Fredirect.html",
            address.rsplit(':').next().unwrap()
        )),
        "{url}"
    );
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let (status, body, redirect) = sign_in(&w.emu, &url, true).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(ADMIN), "{body}");

    let (ok, after) = test_json(&w.robot, "desk");
    assert!(ok, "{after}");
    assert_eq!(after["state"], "ready");
    assert_eq!(after["authenticated_as"]["username"], ADMIN);
    assert_eq!(after["authenticated_as"]["name"], "Ada Admin");
    assert!(after["granted_scopes"].as_str().unwrap().contains("Mail.ReadWrite.Shared"), "{after}");
    assert!(after["token_expires_at"].is_string());

    // The same answer again (a replayed state): refused, nothing changes.
    let http = reqwest::Client::new();
    let replay = http.get(&redirect).send().await.unwrap();
    assert_eq!(replay.status().as_u16(), 400);
    assert!(replay.text().await.unwrap().contains("already used"));
    // A person who declines consent: a clear error, the connection stays ready.
    w.emu
        .revoke_consent(ConsentSpec {
            tenant: DOMAIN.into(),
            client_id: CLIENT_ID.into(),
            username: Some(ADMIN.into()),
            scopes: vec!["https://graph.microsoft.com/Mail.ReadWrite.Shared".into()],
        })
        .unwrap();
    let url = authorize(&w.robot, "desk");
    let (status, body, _) = sign_in(&w.emu, &url, false).await;
    assert_eq!(status, 400);
    assert!(body.contains("access_denied") || body.contains("AADSTS65004"), "{body}");
    assert_eq!(test_json(&w.robot, "desk").1["state"], "ready");
    // A made-up state: refused.
    let forged =
        http.get(format!("http://{address}/wm/externalAuth/redirect.html?code=x&state=forged")).send().await.unwrap();
    assert_eq!(forged.status().as_u16(), 400);

    // The answer may come as form_post too.
    let form = http
        .post(format!("http://{address}/wm/externalAuth/redirect.html"))
        .form(&[("state", "also-forged"), ("code", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status().as_u16(), 400);
    assert!(form.text().await.unwrap().contains("unknown"));

    serve.kill().unwrap();
    serve.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_id_token_for_another_app_issuer_or_time_is_refused_end_to_end() {
    let w = world(3599);
    let (mut serve, _) = w.robot.spawn_serve_anywhere();
    w.robot.run(&[
        "connection",
        "add",
        "--name",
        "desk",
        "--tenant",
        "contoso",
        "--capability",
        "graph",
        "--mode",
        "delegated",
    ]);
    let wrong_tenant = "00000000-0000-4000-8000-000000000bad";
    for (claims, refusal) in [
        (serde_json::json!({"aud": "00000003-0000-0000-c000-000000000000"}), "meant for another application"),
        (serde_json::json!({"iss": format!("{}/{wrong_tenant}/v2.0", w.emu.base_url())}), "was issued by"),
        (serde_json::json!({"tid": wrong_tenant}), "was issued by"),
        (serde_json::json!({"exp": chrono::Utc::now().timestamp() - 3600}), "expired at"),
    ] {
        w.emu.tamper_id_tokens(IdTokenFault { claims: claims.as_object().unwrap().clone(), count: 1 }).unwrap();
        let url = authorize(&w.robot, "desk");
        let (status, body, _) = sign_in(&w.emu, &url, true).await;
        assert_eq!(status, 400, "{claims}: {body}");
        assert!(body.contains(refusal), "{claims}: {body}");
        let (ok, value) = test_json(&w.robot, "desk");
        assert!(!ok && value["state"] == "not_authenticated", "{claims}: the connection changed: {value}");
    }
    // The same sign-in with the id_token as issued completes (the tenant is configured by domain name).
    let url = authorize(&w.robot, "desk");
    let (status, body, _) = sign_in(&w.emu, &url, true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(test_json(&w.robot, "desk").1["state"], "ready");
    serve.kill().unwrap();
    serve.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_that_takes_too_long_is_answered_within_the_request_timeout() {
    let w = world(3599);
    let (mut serve, _) = w.robot.spawn_serve(&[("MAILROBOT_HTTP_REQUEST_TIMEOUT_SECS", "1")]);
    w.robot.run(&[
        "connection",
        "add",
        "--name",
        "desk",
        "--tenant",
        "contoso",
        "--capability",
        "graph",
        "--mode",
        "delegated",
    ]);
    let url = authorize(&w.robot, "desk");
    // The token endpoint hangs for 4 s while the robot redeems the code.
    w.emu.inject_fault(FaultSpec { endpoint: "token".into(), latency_ms: 4000, ..Default::default() }).unwrap();
    let started = std::time::Instant::now();
    let (status, body, _) = sign_in(&w.emu, &url, true).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("did not answer within 1 seconds"), "{body}");
    assert!(started.elapsed() < Duration::from_millis(3500), "{:?}", started.elapsed());
    assert_eq!(test_json(&w.robot, "desk").1["state"], "not_authenticated");
    serve.kill().unwrap();
    serve.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_cached_across_processes_and_rotation_survives_restarts() {
    // 60-second tokens are always inside the robot's 5-minute renewal margin,
    // so every process refreshes: each must use the refresh token the one
    // before it stored (the emulator refuses an old one: no grace).
    let w = world(3599);
    let serve = spawn_redirect_receiver(&w);
    delegated_ready(&w).await;
    let before = token_requests(&w.emu);
    for _ in 0..3 {
        assert!(test_json(&w.robot, "desk").0);
    }
    assert_eq!(token_requests(&w.emu), before, "a cached token is reused by new processes");
    drop(serve);

    let w = world(60);
    let serve = spawn_redirect_receiver(&w);
    delegated_ready(&w).await;
    let before = token_requests(&w.emu);
    for _ in 0..3 {
        let (ok, value) = test_json(&w.robot, "desk");
        assert!(ok, "rotation lost across restarts: {value}");
    }
    assert_eq!(token_requests(&w.emu), before + 3);
    assert_eq!(w.emu.stats().grants.get("refresh_token").copied().unwrap_or(0), 3);
    drop(serve);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_processes_make_exactly_one_refresh() {
    let w = world(3599);
    let serve = spawn_redirect_receiver(&w);
    delegated_ready(&w).await;
    // Drop the cached access token so the next callers must refresh.
    w.robot.sql("DELETE FROM access_tokens", "DELETE FROM access_tokens");
    let before = token_requests(&w.emu);
    let children: Vec<_> = (0..8)
        .map(|_| {
            w.robot
                .command(&["connection", "test", "desk", "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(token_requests(&w.emu) - before, 1, "eight processes, one refresh");
    drop(serve);
}

/// Empties the robot's access-token cache, as if every token had expired
/// (the robot has no command for it; Python's sqlite3 edits the file).
#[tokio::test(flavor = "multi_thread")]
async fn revocation_pauses_mailboxes_and_stops_token_requests() {
    let w = world(60);
    let (child, address) = w.robot.spawn_serve_anywhere();
    let serve = Serve(child);
    delegated_ready(&w).await;
    w.robot.run(&[
        "mailbox",
        "add",
        "--name",
        "shared",
        "--kind",
        "graph",
        "--connection",
        "desk",
        "--address",
        "servicedesk@contoso.test",
    ]);
    w.emu.revoke_user_tokens(DOMAIN, ADMIN).unwrap();
    // `run-once` polls only mailboxes no running node holds: the redirect
    // receiver (a `serve`) stops meanwhile, and starts again on the same
    // address for the new Setup Authentication.
    drop(serve);

    let out = w.robot.run_raw(&["run-once"], &[]);
    assert!(!out.status.success());
    let mailboxes = w.robot.json(&["mailbox", "list", "--json"]);
    assert_eq!(mailboxes[0]["status"], "paused", "{mailboxes}");
    assert!(mailboxes[0]["last_error"].as_str().unwrap().contains("AADSTS"), "{mailboxes}");
    let (ok, value) = test_json(&w.robot, "desk");
    assert!(!ok);
    assert_eq!(value["state"], "reauth_required");
    assert!(value["last_error"].as_str().unwrap().contains("connection authorize desk"), "{value}");

    // From now on nobody asks the token endpoint until Setup Authentication.
    let before = token_requests(&w.emu);
    w.robot.run_raw(&["run-once"], &[]);
    test_json(&w.robot, "desk");
    assert_eq!(token_requests(&w.emu), before);

    // Setup Authentication again: ready, and the mailbox resumes.
    let serve = Serve(w.robot.spawn_serve_at(&address, &[]).0);
    let url = authorize(&w.robot, "desk");
    let (status, body, _) = sign_in(&w.emu, &url, true).await;
    assert_eq!(status, 200, "{body}");
    assert!(test_json(&w.robot, "desk").0);
    drop(serve);
}

#[test]
fn application_mode_and_secret_problems() {
    let w = world(3599);
    w.robot.run(&[
        "connection",
        "add",
        "--name",
        "app",
        "--tenant",
        "contoso",
        "--capability",
        "graph",
        "--mode",
        "application",
    ]);
    let (ok, value) = test_json(&w.robot, "app");
    assert!(ok, "{value}");
    assert_eq!(value["state"], "ready");
    assert_eq!(w.emu.stats().grants.get("client_credentials").copied(), Some(1));

    // The secret expires at Microsoft: the connection says so.
    w.emu.expire_secret(DOMAIN, CLIENT_ID, None).unwrap();
    w.robot.run(&[
        "connection",
        "add",
        "--name",
        "app2",
        "--tenant",
        "contoso",
        "--capability",
        "ews",
        "--mode",
        "application",
    ]);
    let (ok, value) = test_json(&w.robot, "app2");
    assert!(!ok);
    assert_eq!(value["state"], "secret_expired", "{value}");
    assert!(value["last_error"].as_str().unwrap().contains("AADSTS7000222"), "{value}");
}

#[test]
fn a_wrong_secret_is_secret_invalid_and_never_printed() {
    let w = world(3599);
    let out = w.robot.run_raw(
        &[
            "tenant",
            "add",
            "--name",
            "typo",
            "--client-id",
            CLIENT_ID,
            "--tenant",
            DOMAIN,
            "--client-secret-env",
            "S",
            "--authority-url",
            w.emu.base_url(),
        ],
        &[("S", "not-the-secret")],
    );
    assert!(out.status.success());
    w.robot.run(&[
        "connection",
        "add",
        "--name",
        "app",
        "--tenant",
        "typo",
        "--capability",
        "graph",
        "--mode",
        "application",
    ]);
    let (ok, value) = test_json(&w.robot, "app");
    assert!(!ok);
    assert_eq!(value["state"], "secret_invalid", "{value}");
    assert!(value["last_error"].as_str().unwrap().contains("AADSTS7000215"));
    let tenants = w.robot.run(&["tenant", "list", "--json"]);
    assert!(!tenants.contains(SECRET) && !tenants.contains("not-the-secret"));
    assert!(tenants.contains("set on"));
}

#[test]
fn generic_oauth2_provider() {
    let emu = Emulator::start(EmulatorConfig::http(Setup::default())).unwrap();
    emu.add_tenant(TenantSpec { mode: TenantMode::Generic, ..TenantSpec::new("google.test") }).unwrap();
    emu.add_app(AppSpec {
        tenant: "google.test".into(),
        client_id: Some("robot.apps.example".into()),
        secrets: vec![SecretSpec::new("gsecret")],
        application_permissions: vec!["https://mail.google.com/".into()],
        ..Default::default()
    })
    .unwrap();
    let robot = Robot::new();
    let out = robot.run_raw(
        &[
            "tenant",
            "add",
            "--name",
            "google",
            "--provider",
            "oauth2",
            "--client-id",
            "robot.apps.example",
            "--client-secret-env",
            "G",
            "--authorize-url",
            &emu.authorize_url("google.test"),
            "--token-url",
            &emu.token_url("google.test"),
        ],
        &[("G", "gsecret")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    robot.run(&[
        "connection",
        "add",
        "--name",
        "gmail",
        "--tenant",
        "google",
        "--capability",
        "imap",
        "--mode",
        "application",
        "--scope",
        "https://mail.google.com/.default",
    ]);
    let (ok, value) = test_json(&robot, "gmail");
    assert!(ok, "{value}");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_secret_and_refresh_token_are_never_stored_or_logged_in_clear() {
    let w = world(60);
    let serve = spawn_redirect_receiver(&w);
    delegated_ready(&w).await;
    let out = w.robot.run_raw(&["connection", "test", "desk", "--json"], &[("MAILROBOT_LOG", "trace")]);
    assert!(out.status.success());
    let refresh_tokens = w.emu.refresh_tokens_of(DOMAIN, ADMIN).unwrap();
    assert!(!refresh_tokens.is_empty(), "the emulator knows the refresh tokens it issued");
    let mut needles: Vec<String> = refresh_tokens;
    needles.push(SECRET.to_string());
    let mut haystack = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    haystack += &w.robot.run(&["connection", "list", "--json"]);
    haystack += &w.robot.run(&["tenant", "list", "--json"]);
    for entry in walk(&w.robot.data_dir()) {
        haystack += &String::from_utf8_lossy(&std::fs::read(entry).unwrap());
    }
    for needle in &needles {
        assert!(!haystack.contains(needle.as_str()), "a secret is in clear in the data directory or the output");
    }
    drop(serve);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

/// `serve` on the port the app registration's redirect URI names.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_redirect_receiver(w: &World) -> Serve {
    Serve(w.robot.spawn_serve_anywhere().0)
}

#[test]
fn busy_identity_platform_is_retried_with_backoff_and_retry_after() {
    let w = world(3599);
    w.robot.run(&[
        "connection",
        "add",
        "--name",
        "app",
        "--tenant",
        "contoso",
        "--capability",
        "graph",
        "--mode",
        "application",
    ]);
    w.emu
        .inject_fault(FaultSpec { endpoint: "token".into(), count: 1, status: Some(503), ..Default::default() })
        .unwrap();
    w.emu
        .inject_fault(FaultSpec {
            endpoint: "token".into(),
            count: 1,
            status: Some(429),
            retry_after: Some(1),
            ..Default::default()
        })
        .unwrap();
    let started = std::time::Instant::now();
    let (ok, value) = test_json(&w.robot, "app");
    assert!(ok, "two transient failures are retried: {value}");
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After was not honoured");
    assert_eq!(w.emu.stats().requests("token"), 3);
    assert_eq!(value["state"], "ready");

    // Failing every time: the retries are bounded, the error says it is transient,
    // and the connection is not blamed.
    w.robot.run(&[
        "connection",
        "add",
        "--name",
        "app2",
        "--tenant",
        "contoso",
        "--capability",
        "ews",
        "--mode",
        "application",
    ]);
    w.emu
        .inject_fault(FaultSpec { endpoint: "token".into(), count: 10, status: Some(500), ..Default::default() })
        .unwrap();
    let before = w.emu.stats().requests("token");
    let (ok, value) = test_json(&w.robot, "app2");
    assert!(!ok);
    assert_eq!(w.emu.stats().requests("token") - before, 3, "bounded: three attempts");
    assert_eq!(value["state"], "not_authenticated", "{value}");
    assert!(value["error"].as_str().unwrap().contains("busy or failing"), "{value}");
}

#[test]
fn certificate_credential_over_https_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    // The app's certificate and RSA key, as an admin would make them.
    let key = dir.path().join("key.pem");
    let cert = dir.path().join("cert.pem");
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mailrobot-test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl could not make a certificate");
    let cert_pem = std::fs::read_to_string(&cert).unwrap();
    let bundle = dir.path().join("app.pem");
    std::fs::write(&bundle, format!("{cert_pem}{}", std::fs::read_to_string(&key).unwrap())).unwrap();

    let emu = Emulator::start(EmulatorConfig::https(Setup::default())).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, emu.ca_pem().unwrap()).unwrap();
    emu.add_tenant(TenantSpec::new(DOMAIN)).unwrap();
    emu.add_app(AppSpec {
        tenant: DOMAIN.into(),
        client_id: Some(CLIENT_ID.into()),
        certificates: vec![m365_emulator::CertificateSpec { pem: cert_pem }],
        application_permissions: vec!["https://graph.microsoft.com/Mail.ReadWrite".into()],
        ..Default::default()
    })
    .unwrap();
    assert!(emu.base_url().starts_with("https://"));

    let mut robot = Robot::new();
    robot.env.push(("MAILROBOT_CA_FILE".into(), ca.display().to_string()));
    robot.run(&[
        "tenant",
        "add",
        "--name",
        "contoso",
        "--client-id",
        CLIENT_ID,
        "--tenant",
        DOMAIN,
        "--certificate-file",
        bundle.to_str().unwrap(),
        "--authority-url",
        emu.base_url(),
    ]);
    let tenants = robot.json(&["tenant", "list", "--json"]);
    assert!(tenants[0]["certificate"].as_str().unwrap().contains("SHA-256 thumbprint"));
    robot.run(&[
        "connection",
        "add",
        "--name",
        "app",
        "--tenant",
        "contoso",
        "--capability",
        "graph",
        "--mode",
        "application",
    ]);
    let (ok, value) = test_json(&robot, "app");
    assert!(ok, "{value}");

    // Without the private CA the TLS handshake is refused, and says why (a new
    // connection, so no cached token answers instead).
    robot.run(&[
        "connection",
        "add",
        "--name",
        "app-b",
        "--tenant",
        "contoso",
        "--capability",
        "ews",
        "--mode",
        "application",
    ]);
    let mut untrusting = robot.command(&["connection", "test", "app-b", "--json"]);
    untrusting.env_remove("MAILROBOT_CA_FILE");
    let out = untrusting.output().unwrap();
    assert!(!out.status.success());
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(value["error"].as_str().unwrap().contains("cannot reach the token endpoint"), "{value}");
}

#[test]
fn insecure_urls_are_refused_and_expiring_secrets_warned_about() {
    let emu = Emulator::start(EmulatorConfig::http(Setup::default())).unwrap();
    emu.add_tenant(TenantSpec::new(DOMAIN)).unwrap();
    emu.add_app(AppSpec {
        tenant: DOMAIN.into(),
        client_id: Some(CLIENT_ID.into()),
        secrets: vec![SecretSpec::new(SECRET)],
        application_permissions: vec!["https://graph.microsoft.com/Mail.ReadWrite".into()],
        ..Default::default()
    })
    .unwrap();
    let robot = Robot::new();
    let out = robot.run_raw(
        &[
            "tenant",
            "add",
            "--name",
            "far",
            "--client-id",
            CLIENT_ID,
            "--tenant",
            DOMAIN,
            "--client-secret-env",
            "S",
            "--authority-url",
            "http://login.example.net",
        ],
        &[("S", SECRET)],
    );
    // A non-loopback http URL is refused (it used to be only a warning).
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unencrypted") && stderr.contains("--allow-plaintext"), "{stderr}");
    let soon = (chrono::Utc::now() + chrono::Duration::days(10)).format("%Y-%m-%d").to_string();
    let out = robot.run_raw(
        &[
            "tenant",
            "add",
            "--name",
            "near",
            "--client-id",
            CLIENT_ID,
            "--tenant",
            DOMAIN,
            "--client-secret-env",
            "S",
            "--authority-url",
            emu.base_url(),
            "--secret-expires",
            &soon,
        ],
        &[("S", SECRET)],
    );
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("unencrypted"), "loopback http is fine");
    robot.run(&[
        "connection",
        "add",
        "--name",
        "app",
        "--tenant",
        "near",
        "--capability",
        "graph",
        "--mode",
        "application",
    ]);
    let out = robot.run_raw(&["connection", "test", "app"], &[("MAILROBOT_LOG", "warn")]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expires soon"), "{}", String::from_utf8_lossy(&out.stderr));
    // The refused tenant was never stored: "near" is the only one.
    let tenants = robot.json(&["tenant", "list", "--json"]);
    assert_eq!(tenants.as_array().unwrap().len(), 1);
    assert!(tenants[0]["secret_expires_at"].as_str().unwrap().starts_with(&soon));
}

#[tokio::test(flavor = "multi_thread")]
async fn generic_oauth2_provider_with_setup_authentication() {
    // A Google-like provider: opaque scopes, access_type=offline for a
    // refresh token, no rotation.
    let emu = Emulator::start(EmulatorConfig::http(Setup::default())).unwrap();
    emu.add_tenant(TenantSpec { mode: TenantMode::Generic, rotate_refresh_tokens: false, ..TenantSpec::new(DOMAIN) })
        .unwrap();
    emu.add_app(AppSpec {
        tenant: DOMAIN.into(),
        client_id: Some("robot.apps.example".into()),
        secrets: vec![SecretSpec::new("gsecret")],
        // Loopback redirect URIs match on any port (Microsoft's localhost rule).
        redirect_uris: vec!["http://127.0.0.1/wm/externalAuth/redirect.html".into()],
        ..Default::default()
    })
    .unwrap();
    emu.add_user(UserSpec {
        tenant: DOMAIN.into(),
        username: ADMIN.into(),
        password: ADMIN_PASSWORD.into(),
        ..Default::default()
    })
    .unwrap();
    let robot = Robot::new();
    let out = robot.run_raw(
        &[
            "tenant",
            "add",
            "--name",
            "google",
            "--provider",
            "oauth2",
            "--client-id",
            "robot.apps.example",
            "--client-secret-env",
            "G",
            "--authorize-url",
            &emu.authorize_url(DOMAIN),
            "--token-url",
            &emu.token_url(DOMAIN),
        ],
        &[("G", "gsecret")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    robot.run(&[
        "connection",
        "add",
        "--name",
        "gmail",
        "--tenant",
        "google",
        "--capability",
        "imap",
        "--mode",
        "delegated",
        "--scope",
        "https://mail.google.com/",
    ]);
    let w = World { emu, robot };
    let _serve = spawn_redirect_receiver(&w);
    let url = authorize(&w.robot, "gmail");
    assert!(url.contains("access_type=offline"), "{url}");
    let (status, body, _) = sign_in(&w.emu, &url, true).await;
    assert_eq!(status, 200, "{body}");
    let (ok, value) = test_json(&w.robot, "gmail");
    assert!(ok, "{value}");
    assert_eq!(value["state"], "ready");
}

/// Entra issues a token for one resource at a time and refuses a code redemption whose scopes
/// span two: `connection add` refuses such a set up front and says what to do instead.
#[test]
fn scopes_of_two_resources_make_no_connection() {
    let w = world(3599);
    let add = |name: &str, scopes: &[&str]| {
        let mut args =
            vec!["connection", "add", "--name", name, "--tenant", "contoso", "--capability", "graph", "--mode"];
        args.push("delegated");
        for s in scopes {
            args.extend_from_slice(&["--scope", s]);
        }
        w.robot.run_raw(&args, &[])
    };
    for scopes in [
        &["https://graph.microsoft.com/Mail.ReadWrite.Shared", "https://outlook.office365.com/EWS.AccessAsUser.All"][..],
        // Two names of Exchange Online are two resources to Entra.
        &["https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office365.com/EWS.AccessAsUser.All"],
        // A bare permission is Graph's.
        &["Mail.Read", "https://outlook.office.com/SMTP.Send", "offline_access"],
    ] {
        let out = add("mixed", scopes);
        assert!(!out.status.success(), "{scopes:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("one connection per resource") && stderr.contains("2 resources"), "{stderr}");
    }
    assert_eq!(w.robot.json(&["connection", "list", "--json"]), serde_json::json!([]));
    // One resource with the OIDC scopes is fine.
    let out = add("graph", &["https://graph.microsoft.com/Mail.ReadWrite.Shared", "openid", "email", "offline_access"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
