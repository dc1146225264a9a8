//! OpenID discovery, JWKS, MSAL instance discovery, introspection and userinfo, the generic
//! (Google-like) OAuth2 mode, and logout.

mod common;

use common::*;
use m365_emulator::{AppSpec, IssueSpec, SecretSpec, TenantMode, TenantSpec, UserSpec};
use serde_json::{Value, json};

async fn get_json(url: &str) -> (u16, Value) {
    let r = client().get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn openid_configuration_and_jwks() {
    let emu = start();
    let base = emu.base_url().to_string();
    for tenant in [TENANT_ID, DOMAIN] {
        let (s, c) = get_json(&emu.openid_configuration_url(tenant)).await;
        assert_eq!(s, 200);
        assert_eq!(c["issuer"], format!("{base}/{TENANT_ID}/v2.0"));
        assert_eq!(c["authorization_endpoint"], format!("{base}/{TENANT_ID}/oauth2/v2.0/authorize"));
        assert_eq!(c["token_endpoint"], format!("{base}/{TENANT_ID}/oauth2/v2.0/token"));
        assert_eq!(c["jwks_uri"], format!("{base}/{TENANT_ID}/discovery/v2.0/keys"));
        assert!(c["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&json!("private_key_jwt")));
        assert!(c["response_modes_supported"].as_array().unwrap().contains(&json!("form_post")));
    }
    let (_, c) = get_json(&emu.openid_configuration_url("common")).await;
    assert_eq!(c["issuer"], format!("{base}/{{tenantid}}/v2.0"));
    assert_eq!(c["token_endpoint"], format!("{base}/common/oauth2/v2.0/token"));
    let r = client().get(emu.openid_configuration_url("nope.test")).send().await.unwrap();
    let s = r.status();
    assert_sts_error(s, &r.json().await.unwrap(), 400, "invalid_request", 90002);

    let (s, keys) = get_json(&emu.jwks_url(TENANT_ID)).await;
    assert_eq!(s, 200);
    let k = &keys["keys"][0];
    assert_eq!(k["kty"], "RSA");
    assert_eq!(k["use"], "sig");
    assert_eq!(k["e"], "AQAB");
    assert_eq!(k["kid"], k["x5t"]);
    assert_eq!(k["kid"], emu.signing_key().kid());
    // x5t is the SHA-1 thumbprint of the x5c certificate.
    let der =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, k["x5c"][0].as_str().unwrap()).unwrap();
    let thumb = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
    assert_eq!(k["x5t"], base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, thumb));

    let (s, d) = get_json(&format!(
        "{base}/common/discovery/instance?api-version=1.1&authorization_endpoint={base}/{TENANT_ID}/oauth2/v2.0/authorize"
    ))
    .await;
    assert_eq!(s, 200);
    assert_eq!(d["tenant_discovery_endpoint"], format!("{base}/{TENANT_ID}/v2.0/.well-known/openid-configuration"));
    // The token endpoint does not take GET.
    let r = client().get(emu.token_url(TENANT_ID)).send().await.unwrap();
    let s = r.status();
    assert_sts_error(s, &r.json().await.unwrap(), 400, "invalid_request", 900561);
}

#[tokio::test]
async fn introspection_for_dovecot_and_userinfo() {
    let emu = start();
    let t = emu
        .issue_tokens(&IssueSpec {
            tenant: DOMAIN.into(),
            client_id: WEB_APP.into(),
            username: USER.into(),
            scopes: vec!["https://outlook.office.com/IMAP.AccessAsUser.All".into(), "offline_access".into()],
            mfa: false,
        })
        .unwrap();
    let at = t["access_token"].as_str().unwrap();
    let c = client();
    let r = c.get(emu.introspection_url()).bearer_auth(at).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let i: Value = r.json().await.unwrap();
    assert_eq!(i["active"], true);
    assert_eq!(i["email"], USER);
    assert_eq!(i["username"], USER);
    assert_eq!(i["scp"], "IMAP.AccessAsUser.All");
    assert_eq!(i["aud"], "https://outlook.office.com");
    assert_eq!(i["client_id"], WEB_APP);

    let r = c.get(emu.introspection_url()).bearer_auth("garbage").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    let r = c.get(emu.introspection_url()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // RFC 7662 style.
    let r: Value = c.post(emu.introspection_url()).form(&[("token", at)]).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["active"], true);

    let r = c.get(format!("{}/oidc/userinfo", emu.base_url())).bearer_auth(at).send().await.unwrap();
    let u: Value = r.json().await.unwrap();
    assert_eq!(u["name"], "Mail Robot");
    assert_eq!(u["email"], USER);

    // App-only tokens are active too, with roles and no e-mail.
    let (_, b) = post_token(
        &emu,
        TENANT_ID,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", DAEMON_APP),
            ("client_secret", DAEMON_SECRET),
            ("scope", "https://outlook.office365.com/.default"),
        ],
    )
    .await;
    let r: Value = c
        .get(emu.introspection_url())
        .bearer_auth(b["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["roles"], json!(["full_access_as_app"]));
    assert!(r.get("email").is_none());

    // Expired tokens are inactive.
    emu.advance_clock(3600);
    let r = c.get(emu.introspection_url()).bearer_auth(at).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r: Value = c.post(emu.introspection_url()).form(&[("token", at)]).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["active"], false);
}

#[tokio::test]
async fn generic_oauth2_mode_google_like() {
    let mut s = setup();
    s.tenants.push(TenantSpec {
        mode: TenantMode::Generic,
        rotate_refresh_tokens: false,
        ..TenantSpec::new("google.test")
    });
    s.apps.push(AppSpec {
        tenant: "google.test".into(),
        client_id: Some("1234-abc.apps.googleusercontent.test".into()),
        name: "robot".into(),
        redirect_uris: vec![REDIRECT.into()],
        secrets: vec![SecretSpec::new("gsecret")],
        ..Default::default()
    });
    s.users.push(UserSpec {
        tenant: "google.test".into(),
        username: "robot@gmail.test".into(),
        password: "pw".into(),
        ..Default::default()
    });
    let emu = start_with(s);
    let c = client();
    let (verifier, challenge) = pkce();
    let url = authorize_url(
        &emu,
        "google.test",
        &[
            ("client_id", "1234-abc.apps.googleusercontent.test"),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", "https://mail.google.com/ openid email"),
            ("access_type", "offline"),
            ("prompt", "consent"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    let loc = sign_in(&c, &emu, &url, "robot@gmail.test", "pw").await;
    let code = location_params(&loc)["code"].clone();
    let (s, b) = post_token(
        &emu,
        "google.test",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "1234-abc.apps.googleusercontent.test"),
            ("client_secret", "gsecret"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["scope"], "https://mail.google.com/ openid email");
    let (_, at) = verify_jwt(b["access_token"].as_str().unwrap(), &jwks(&emu, "google.test").await);
    assert_eq!(at["scp"], "https://mail.google.com/");
    assert_eq!(at["aud"], "1234-abc.apps.googleusercontent.test");
    let rt = b["refresh_token"].as_str().expect("access_type=offline gives a refresh token").to_string();
    let (s, b) = post_token(
        &emu,
        "google.test",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "1234-abc.apps.googleusercontent.test"),
            ("client_secret", "gsecret"),
            ("refresh_token", &rt),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(b.get("refresh_token").is_none(), "Google does not rotate");
    let i: Value = c
        .get(emu.introspection_url())
        .bearer_auth(b["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(i["email"], "robot@gmail.test");
    assert_eq!(i["scope"], "https://mail.google.com/");
}

#[tokio::test]
async fn logout_ends_the_session() {
    let emu = start();
    let c = client();
    let r = c
        .get(format!(
            "{}/{DOMAIN}/oauth2/v2.0/logout?post_logout_redirect_uri=https://robot.example/bye",
            emu.base_url()
        ))
        .header("cookie", "ESTSAUTH=whatever")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://robot.example/bye");
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(emu.stats().requests("logout"), 1);
}
