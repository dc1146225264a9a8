//! Client credentials: a secret in the body, HTTP Basic, certificate assertions (PS256 with
//! x5t#S256, RS256 with x5t) built here, the app roles in the token, and the errors.

mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use m365_emulator::{AppSpec, CertificateSpec, SecretSpec};
use serde_json::{Value, json};

const CERT_APP: &str = "c3c3c3c3-0000-4000-8000-000000000c3c";

/// An RSA key and a self-signed certificate for it, as an app owner would upload.
struct AppCert {
    key: ring::signature::RsaKeyPair,
    pem: String,
    der: Vec<u8>,
}

fn app_cert() -> AppCert {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let pkcs8 = key.to_pkcs8_der().unwrap();
    let der_key = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
    let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der_key, &rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "robot app credential");
    let cert = params.self_signed(&kp).unwrap();
    AppCert {
        key: ring::signature::RsaKeyPair::from_pkcs8(pkcs8.as_bytes()).unwrap(),
        pem: cert.pem(),
        der: cert.der().to_vec(),
    }
}

/// A client assertion signed with `alg` (PS256 or RS256) and the matching thumbprint header.
fn assertion(cert: &AppCert, alg: &str, claims: &Value) -> String {
    let header = if alg == "PS256" {
        json!({"alg": "PS256", "typ": "JWT",
               "x5t#S256": URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &cert.der))})
    } else {
        json!({"alg": "RS256", "typ": "JWT",
               "x5t": URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert.der))})
    };
    let input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let padding: &dyn ring::signature::RsaEncoding =
        if alg == "PS256" { &ring::signature::RSA_PSS_SHA256 } else { &ring::signature::RSA_PKCS1_SHA256 };
    let mut sig = vec![0u8; cert.key.public().modulus_len()];
    cert.key.sign(padding, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn claims(emu: &m365_emulator::Emulator, client_id: &str) -> Value {
    let now = emu.now();
    json!({
        "aud": emu.token_url(TENANT_ID),
        "iss": client_id,
        "sub": client_id,
        "jti": rand_suffix(),
        "nbf": now,
        "iat": now,
        "exp": now + 600,
    })
}

async fn cc(emu: &m365_emulator::Emulator, extra: &[(&str, &str)]) -> (reqwest::StatusCode, Value) {
    let mut form = vec![("grant_type", "client_credentials")];
    form.extend_from_slice(extra);
    post_token(emu, TENANT_ID, &form).await
}

fn with_cert_app(cert: &AppCert) -> m365_emulator::Emulator {
    let emu = start();
    emu.add_app(AppSpec {
        tenant: TENANT_ID.into(),
        client_id: Some(CERT_APP.into()),
        name: "Cert app".into(),
        certificates: vec![CertificateSpec { pem: cert.pem.clone() }],
        application_permissions: vec!["https://graph.microsoft.com/Mail.ReadWrite".into()],
        ..Default::default()
    })
    .unwrap();
    emu
}

#[tokio::test]
async fn secret_in_body_and_basic_give_app_only_tokens_with_roles() {
    let emu = start();
    let (s, body) = cc(
        &emu,
        &[
            ("client_id", DAEMON_APP),
            ("client_secret", DAEMON_SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    assert!(body.get("refresh_token").is_none(), "client credentials never return a refresh token");
    assert!(body.get("id_token").is_none());
    let keys = jwks(&emu, TENANT_ID).await;
    let (_, at) = verify_jwt(body["access_token"].as_str().unwrap(), &keys);
    assert_eq!(at["aud"], "https://graph.microsoft.com");
    assert_eq!(at["roles"], json!(["Mail.ReadWrite", "Mail.Send"]));
    assert_eq!(at["appid"], DAEMON_APP);
    assert_eq!(at["azp"], DAEMON_APP);
    assert_eq!(at["tid"], TENANT_ID);
    assert_eq!(at["idtyp"], "app");
    assert_eq!(at["oid"], at["sub"]);
    assert!(at.get("scp").is_none() && at.get("upn").is_none());
    assert_eq!(at["iss"], emu.issuer(TENANT_ID));

    // HTTP Basic (url-encoded id and secret), Exchange as the resource, tenant by domain.
    let basic = STANDARD.encode(format!("{DAEMON_APP}:{}", DAEMON_SECRET.replace('~', "%7E")));
    let r = client()
        .post(emu.token_url(DOMAIN))
        .header("authorization", format!("Basic {basic}"))
        .form(&[("grant_type", "client_credentials"), ("scope", "https://outlook.office365.com/.default")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let (_, at) = verify_jwt(body["access_token"].as_str().unwrap(), &keys);
    assert_eq!(at["aud"], "https://outlook.office365.com");
    assert_eq!(at["roles"], json!(["full_access_as_app"]));
    assert_eq!(emu.stats().grants["client_credentials"], 2);
}

#[tokio::test]
async fn certificate_assertions_ps256_and_rs256() {
    let cert = app_cert();
    let emu = with_cert_app(&cert);
    let keys = jwks(&emu, TENANT_ID).await;
    for alg in ["PS256", "RS256"] {
        let a = assertion(&cert, alg, &claims(&emu, CERT_APP));
        let (s, b) = cc(
            &emu,
            &[
                ("client_id", CERT_APP),
                ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                ("client_assertion", &a),
                ("scope", "https://graph.microsoft.com/.default"),
            ],
        )
        .await;
        assert_eq!(s, 200, "{alg}: {b}");
        let (_, at) = verify_jwt(b["access_token"].as_str().unwrap(), &keys);
        assert_eq!(at["azpacr"], "2", "certificate credential");
        assert_eq!(at["roles"], json!(["Mail.ReadWrite"]));
    }
    // The audience may name the tenant by domain too.
    let mut c = claims(&emu, CERT_APP);
    c["aud"] = json!(emu.token_url(DOMAIN));
    let a = assertion(&cert, "PS256", &c);
    let (s, b) = cc(
        &emu,
        &[
            ("client_id", CERT_APP),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", &a),
            ("scope", "https://graph.microsoft.com/.default"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn assertion_errors() {
    let cert = app_cert();
    let emu = with_cert_app(&cert);
    let other = app_cert();
    let send = |a: String| {
        let emu = &emu;
        async move {
            cc(
                emu,
                &[
                    ("client_id", CERT_APP),
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ("client_assertion", &a),
                    ("scope", "https://graph.microsoft.com/.default"),
                ],
            )
            .await
        }
    };
    // Signed by a key whose certificate is not registered.
    let (s, b) = send(assertion(&other, "PS256", &claims(&emu, CERT_APP))).await;
    assert_sts_error(s, &b, 401, "invalid_client", 700027);
    assert!(b["error_description"].as_str().unwrap().contains("The key was not found"));
    // Registered thumbprint, wrong signature.
    let good = assertion(&cert, "RS256", &claims(&emu, CERT_APP));
    let forged = format!("{}.{}", &good[..good.rfind('.').unwrap()], URL_SAFE_NO_PAD.encode([7u8; 256]));
    let (s, b) = send(forged).await;
    assert_sts_error(s, &b, 401, "invalid_client", 700027);
    // iss/sub not the client id.
    let (s, b) = send(assertion(&cert, "PS256", &claims(&emu, DAEMON_APP))).await;
    assert_sts_error(s, &b, 401, "invalid_client", 700021);
    // Wrong audience.
    let mut c = claims(&emu, CERT_APP);
    c["aud"] = json!("https://login.microsoftonline.com/other/oauth2/v2.0/token");
    let (s, b) = send(assertion(&cert, "PS256", &c)).await;
    assert_sts_error(s, &b, 401, "invalid_client", 700023);
    // Expired.
    let mut c = claims(&emu, CERT_APP);
    c["exp"] = json!(emu.now() - 3600);
    let (s, b) = send(assertion(&cert, "PS256", &c)).await;
    assert_sts_error(s, &b, 401, "invalid_client", 700024);
    // Not a JWT at all.
    let (s, b) = send("abc".into()).await;
    assert_sts_error(s, &b, 401, "invalid_client", 50027);
}

#[tokio::test]
async fn secret_and_scope_errors() {
    let emu = start();
    let graph = "https://graph.microsoft.com/.default";
    let (s, b) = cc(&emu, &[("client_id", DAEMON_APP), ("client_secret", "wrong"), ("scope", graph)]).await;
    assert_sts_error(s, &b, 401, "invalid_client", 7000215);
    let (s, b) = cc(&emu, &[("client_id", DAEMON_APP), ("scope", graph)]).await;
    assert_sts_error(s, &b, 401, "invalid_client", 7000218);
    let (s, b) =
        cc(&emu, &[("client_id", "00000000-0000-0000-0000-000000000000"), ("client_secret", "x"), ("scope", graph)])
            .await;
    assert_sts_error(s, &b, 400, "unauthorized_client", 700016);
    let (s, b) =
        post_token(&emu, "unknown.test", &[("grant_type", "client_credentials"), ("client_id", DAEMON_APP)]).await;
    assert_sts_error(s, &b, 400, "invalid_request", 90002);
    let sec = [("client_id", DAEMON_APP), ("client_secret", DAEMON_SECRET)];
    let with_scope = |scope: &'static str| {
        let mut f = sec.to_vec();
        f.push(("scope", scope));
        f
    };
    let (s, b) = cc(&emu, &with_scope("https://graph.microsoft.com/Mail.Read")).await;
    assert_sts_error(s, &b, 400, "invalid_scope", 70011);
    let (s, b) =
        cc(&emu, &with_scope("https://graph.microsoft.com/.default https://outlook.office365.com/.default")).await;
    assert_sts_error(s, &b, 400, "invalid_scope", 700022);
    // Exchange Online's two URIs are two resources to the token endpoint.
    let (s, b) =
        cc(&emu, &with_scope("https://outlook.office.com/.default https://outlook.office365.com/.default")).await;
    assert_sts_error(s, &b, 400, "invalid_scope", 700022);
    let (s, b) = cc(&emu, &with_scope("https://unknown.example/.default")).await;
    assert_sts_error(s, &b, 400, "invalid_resource", 500011);
    let (s, b) = cc(&emu, &sec).await;
    assert_sts_error(s, &b, 400, "invalid_request", 900144);
    let (s, b) = post_token(
        &emu,
        "common",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", DAEMON_APP),
            ("client_secret", DAEMON_SECRET),
            ("scope", graph),
        ],
    )
    .await;
    assert_sts_error(s, &b, 400, "invalid_request", 9001023);
    let (s, b) =
        cc(&emu, &[("client_id", DAEMON_APP), ("client_secret", DAEMON_SECRET), ("scope", graph), ("resource", "x")])
            .await;
    assert_sts_error(s, &b, 400, "invalid_request", 901002);
    let (s, b) = post_token(&emu, TENANT_ID, &[("grant_type", "password"), ("client_id", DAEMON_APP)]).await;
    assert_sts_error(s, &b, 400, "unsupported_grant_type", 70003);

    // Expired secret, then a fresh one added beside it (secret rotation).
    emu.expire_secret(DOMAIN, DAEMON_APP, Some(DAEMON_SECRET)).unwrap();
    let (s, b) = cc(&emu, &with_scope(graph)).await;
    assert_sts_error(s, &b, 401, "invalid_client", 7000222);
    emu.add_secret(DOMAIN, DAEMON_APP, SecretSpec::new("rotated")).unwrap();
    let (s, _) = cc(&emu, &[("client_id", DAEMON_APP), ("client_secret", "rotated"), ("scope", graph)]).await;
    assert_eq!(s, 200);
    // A secret with an expiry date passes it on the emulator clock.
    emu.add_secret(
        DOMAIN,
        DAEMON_APP,
        SecretSpec { value: "short-lived".into(), expires_at: Some(chrono::Utc::now() + chrono::Duration::days(1)) },
    )
    .unwrap();
    let (s, _) = cc(&emu, &[("client_id", DAEMON_APP), ("client_secret", "short-lived"), ("scope", graph)]).await;
    assert_eq!(s, 200);
    emu.advance_clock(2 * 86400);
    let (s, b) = cc(&emu, &[("client_id", DAEMON_APP), ("client_secret", "short-lived"), ("scope", graph)]).await;
    assert_sts_error(s, &b, 401, "invalid_client", 7000222);
    assert_eq!(emu.stats().error_count(7000222), 2);
}

#[tokio::test]
async fn public_clients_and_blocked_workloads() {
    let emu = start();
    emu.add_app(AppSpec {
        tenant: DOMAIN.into(),
        client_id: Some("pub-client".into()),
        public_client: true,
        ..Default::default()
    })
    .unwrap();
    emu.add_app(AppSpec {
        tenant: DOMAIN.into(),
        client_id: Some("blocked".into()),
        secrets: vec![SecretSpec::new("b")],
        blocked_by_conditional_access: true,
        ..Default::default()
    })
    .unwrap();
    let graph = "https://graph.microsoft.com/.default";
    let (s, b) = cc(&emu, &[("client_id", "pub-client"), ("client_secret", "x"), ("scope", graph)]).await;
    assert_sts_error(s, &b, 401, "invalid_client", 700025);
    let (s, b) = cc(&emu, &[("client_id", "pub-client"), ("scope", graph)]).await;
    assert_sts_error(s, &b, 401, "invalid_client", 7000218);
    let (s, b) = cc(&emu, &[("client_id", "blocked"), ("client_secret", "b"), ("scope", graph)]).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 53003);
    // An app without roles on the resource still gets a token, just without `roles`.
    emu.add_app(AppSpec {
        tenant: DOMAIN.into(),
        client_id: Some("no-roles".into()),
        secrets: vec![SecretSpec::new("n")],
        ..Default::default()
    })
    .unwrap();
    let (s, b) = cc(&emu, &[("client_id", "no-roles"), ("client_secret", "n"), ("scope", graph)]).await;
    assert_eq!(s, 200);
    let (_, at) = verify_jwt(b["access_token"].as_str().unwrap(), &jwks(&emu, DOMAIN).await);
    assert!(at.get("roles").is_none());
}
