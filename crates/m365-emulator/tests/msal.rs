//! The real-client check: Microsoft's MSAL for Python (from PyPI) against the emulator over
//! HTTPS — client credentials (secret, PS256 and RS256 certificates), refresh tokens, and an
//! authorization code redeemed for scopes of two resources (refused, AADSTS28000).
//!
//! The virtualenv is made once under Cargo's target tmp dir and reused. This test fails (it
//! does not skip) when Python or MSAL cannot be set up: the emulator is only as good as a real
//! client says.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;
use m365_emulator::{AppSpec, CertificateSpec, ConsentSpec, Emulator, EmulatorConfig, IssueSpec};
use serde_json::{Value, json};

const MSAL_VERSION: &str = "1.39.0";
const CERT_APP: &str = "ce47ce47-1111-4222-8333-444455556666";

/// A virtualenv with MSAL, made on first use.
fn msal_python() -> PathBuf {
    common::python::venv_python("msal", MSAL_VERSION)
}

struct Cert {
    key_pem: String,
    cert_pem: String,
    sha1_hex: String,
}

fn cert() -> Cert {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let der = key.to_pkcs8_der().unwrap();
    let key_pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap().to_string();
    let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec()),
        &rcgen::PKCS_RSA_SHA256,
    )
    .unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "msal test credential");
    let cert = params.self_signed(&kp).unwrap();
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.der());
    Cert { key_pem, cert_pem: cert.pem(), sha1_hex: sha1.as_ref().iter().map(|b| format!("{b:02x}")).collect() }
}

#[test]
fn msal_python_against_the_emulator_over_https() {
    let python = msal_python();
    let cert = cert();
    let mut s = setup();
    s.apps.push(AppSpec {
        tenant: DOMAIN.into(),
        client_id: Some(CERT_APP.into()),
        name: "cert app".into(),
        certificates: vec![CertificateSpec { pem: cert.cert_pem.clone() }],
        application_permissions: vec!["https://graph.microsoft.com/Mail.ReadWrite".into()],
        ..Default::default()
    });
    let emu = Emulator::start(EmulatorConfig::https(s)).unwrap();
    assert!(emu.base_url().starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, emu.ca_pem().unwrap()).unwrap();

    // A refresh token as Setup Authentication would have stored it; the same web app also does
    // client credentials with its secret.
    let tokens = emu
        .issue_tokens(&IssueSpec {
            tenant: DOMAIN.into(),
            client_id: WEB_APP.into(),
            username: USER.into(),
            scopes: vec!["openid".into(), "profile".into(), "offline_access".into(), GRAPH_SCOPE.into()],
            mfa: false,
        })
        .unwrap();
    let original_rt = tokens["refresh_token"].as_str().unwrap().to_string();
    // An authorization code whose request named Graph and EWS (signed in here; MSAL redeems it).
    const EWS_SCOPE: &str = "https://outlook.office365.com/EWS.AccessAsUser.All";
    emu.grant_consent(ConsentSpec {
        tenant: DOMAIN.into(),
        client_id: WEB_APP.into(),
        username: None,
        scopes: vec![GRAPH_SCOPE.into(), EWS_SCOPE.into()],
    })
    .unwrap();
    let code = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let c = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(emu.ca_pem().unwrap().as_bytes()).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let scope = format!("openid profile offline_access {GRAPH_SCOPE} {EWS_SCOPE}");
        let url = authorize_url(
            &emu,
            DOMAIN,
            &[("client_id", WEB_APP), ("response_type", "code"), ("redirect_uri", REDIRECT), ("scope", &scope)],
        );
        location_params(&sign_in(&c, &emu, &url, USER, PASSWORD).await)["code"].clone()
    });
    let web_cfg = json!({
        "authority": emu.authority(TENANT_ID),
        "client_id": WEB_APP,
        "secret": WEB_SECRET,
        "refresh_token": original_rt,
        "rt_scope": GRAPH_SCOPE,
        "cc_scope": "https://graph.microsoft.com/.default",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_scopes": [GRAPH_SCOPE, EWS_SCOPE],
        "cert": {"client_id": CERT_APP, "key_pem": cert.key_pem, "cert_pem": cert.cert_pem,
                 "sha1_thumbprint": cert.sha1_hex},
    });
    let mut child = Command::new(&python)
        .arg(manifest_dir().join("tests/msal/msal_check.py"))
        .env("REQUESTS_CA_BUNDLE", &ca)
        .env_remove("SSL_CERT_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child.stdin.take().unwrap().write_all(web_cfg.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "msal script failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON from the msal script");
    assert_eq!(r["msal_version"], MSAL_VERSION);
    let keys = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let c = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(emu.ca_pem().unwrap().as_bytes()).unwrap())
            .build()
            .unwrap();
        c.get(emu.jwks_url(TENANT_ID)).send().await.unwrap().json::<Value>().await.unwrap()
    });

    // Client credentials with the web app's secret: a Graph token; the second call is MSAL's cache.
    let cc = &r["client_credentials"];
    assert!(cc.get("error").is_none(), "{cc}");
    assert_eq!(cc["token_type"], "Bearer");
    let (_, at) = verify_jwt(cc["access_token"].as_str().unwrap(), &keys);
    assert_eq!(at["aud"], "https://graph.microsoft.com");
    assert_eq!(at["appid"], WEB_APP);
    assert_eq!(r["client_credentials_again"]["token_source"], "cache");
    assert_eq!(r["client_credentials_again"]["access_token"], cc["access_token"]);

    // Refresh token redeemed: new access token, rotated refresh token, id token claims, account.
    let rt = &r["refresh"];
    assert!(rt.get("error").is_none(), "{rt}");
    let (_, at) = verify_jwt(rt["access_token"].as_str().unwrap(), &keys);
    assert_eq!(at["scp"], "Mail.ReadWrite.Shared");
    assert_eq!(at["upn"], USER);
    assert_ne!(rt["refresh_token"], original_rt.as_str());
    assert_eq!(rt["id_token_claims"]["preferred_username"], USER);
    assert_eq!(rt["id_token_claims"]["aud"], WEB_APP);
    assert_eq!(r["accounts"], json!([USER]));
    // Two silent refreshes in a row succeed only if MSAL stored and used each rotated token.
    for key in ["silent", "silent_again"] {
        let s = &r[key];
        assert!(s.get("error").is_none(), "{key}: {s}");
        assert_eq!(s["token_source"], "identity_provider", "{key}");
    }

    // MSAL hands the emulator's errors through unchanged.
    let bad = &r["bad_secret"];
    assert_eq!(bad["error"], "invalid_client");
    assert_eq!(bad["error_codes"], json!([7000215]));
    assert!(bad["error_description"].as_str().unwrap().starts_with("AADSTS7000215: "));
    assert_eq!(r["bad_refresh"]["error"], "invalid_grant");
    assert_eq!(r["bad_refresh"]["error_codes"], json!([9002313]));

    // Certificates, the way MSAL signs assertions (PS256 + x5t#S256, RS256 + x5t).
    for key in ["cert_ps256", "cert_rs256"] {
        let c = &r[key];
        assert!(c.get("error").is_none(), "{key}: {c}");
        let (_, at) = verify_jwt(c["access_token"].as_str().unwrap(), &keys);
        assert_eq!(at["appid"], CERT_APP);
        assert_eq!(at["azpacr"], "2");
        assert_eq!(at["roles"], json!(["Mail.ReadWrite"]));
    }
    // A code redeemed for two resources' scopes: refused as Entra refuses it.
    let two = &r["code_two_resources"];
    assert_eq!(two["error"], "invalid_scope", "{two}");
    assert_eq!(two["error_codes"], json!([28000]), "{two}");
    let stats = emu.stats();
    assert!(stats.requests("openid_configuration") >= 1, "MSAL read the discovery document");
    assert_eq!(stats.grants["refresh_token"], 3);
    assert_eq!(stats.grants["client_credentials"], 3);
}

/// This package's directory, asked of cargo at run time (a test binary
/// built in another checkout that shares the target directory must read
/// this checkout's files); the build's own when run outside cargo.
fn manifest_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
}
