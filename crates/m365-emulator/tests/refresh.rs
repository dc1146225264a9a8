//! Refresh tokens: rotation, reuse of a replaced token (with and without a grace period),
//! lifetime and inactivity, revocation, password change, consent withdrawn, MFA and Conditional
//! Access turning on later, and one refresh token serving several resources.

mod common;

use common::*;
use m365_emulator::{ConsentSpec, IssueSpec, TenantSpec, UserUpdate};
use serde_json::Value;

fn issue(emu: &m365_emulator::Emulator, scopes: &[&str]) -> Value {
    emu.issue_tokens(&IssueSpec {
        tenant: DOMAIN.into(),
        client_id: WEB_APP.into(),
        username: USER.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        mfa: false,
    })
    .unwrap()
}

async fn refresh(emu: &m365_emulator::Emulator, rt: &str, scope: Option<&str>) -> (reqwest::StatusCode, Value) {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("client_id", WEB_APP),
        ("client_secret", WEB_SECRET),
        ("refresh_token", rt),
    ];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    post_token(emu, DOMAIN, &form).await
}

fn rt(v: &Value) -> String {
    v["refresh_token"].as_str().expect("refresh_token").to_string()
}

#[tokio::test]
async fn every_refresh_rotates_and_the_old_token_dies() {
    let emu = start();
    let first = issue(&emu, &["openid", "offline_access", GRAPH_SCOPE]);
    let rt1 = rt(&first);
    let (s, b) = refresh(&emu, &rt1, None).await;
    assert_eq!(s, 200, "{b}");
    let rt2 = rt(&b);
    assert_ne!(rt1, rt2, "a new refresh token on every use");
    assert!(b["id_token"].is_string(), "openid in the original grant");
    let (_, at) = verify_jwt(b["access_token"].as_str().unwrap(), &jwks(&emu, DOMAIN).await);
    assert_eq!(at["scp"], "Mail.ReadWrite.Shared");
    // The replaced token is refused (the emulator's default: no grace).
    let (s, b) = refresh(&emu, &rt1, None).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 70008);
    assert!(b["error_description"].as_str().unwrap().contains("already redeemed"));
    // The newest keeps working, and so on down the chain.
    let (s, b) = refresh(&emu, &rt2, None).await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = refresh(&emu, &rt(&b), None).await;
    assert_eq!(s, 200);
    // Garbage is a malformed grant.
    let (s, b) = refresh(&emu, "not-a-token", None).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 9002313);
    // Another client cannot use it.
    let (s, b) = post_token(
        &emu,
        DOMAIN,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", DAEMON_APP),
            ("client_secret", DAEMON_SECRET),
            ("refresh_token", &rt2),
        ],
    )
    .await;
    assert_sts_error(s, &b, 400, "invalid_grant", 70000);
}

#[tokio::test]
async fn grace_period_and_no_rotation_are_configurable() {
    let mut s = setup();
    s.tenants[0].refresh_token_reuse_grace_seconds = 60;
    s.tenants.push(TenantSpec { rotate_refresh_tokens: false, ..TenantSpec::new("google.test") });
    s.apps.push(m365_emulator::AppSpec {
        tenant: "google.test".into(),
        client_id: Some("g-client".into()),
        secrets: vec![m365_emulator::SecretSpec::new("g-secret")],
        ..Default::default()
    });
    s.users.push(m365_emulator::UserSpec {
        tenant: "google.test".into(),
        username: "someone@google.test".into(),
        password: "pw".into(),
        ..Default::default()
    });
    let emu = start_with(s);
    let rt1 = rt(&issue(&emu, &["offline_access", GRAPH_SCOPE]));
    let (_, b) = refresh(&emu, &rt1, None).await;
    let rt2 = rt(&b);
    // Within the grace period the old token still works (a retry after a lost answer)...
    let (s, b) = refresh(&emu, &rt1, None).await;
    assert_eq!(s, 200, "{b}");
    // ...and not after it, counted from its first use.
    emu.advance_clock(61);
    let (s, b) = refresh(&emu, &rt1, None).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 70008);
    let (s, _) = refresh(&emu, &rt2, None).await;
    assert_eq!(s, 200);

    // A tenant that does not rotate (Google-like) returns no new refresh token.
    let g = emu
        .issue_tokens(&IssueSpec {
            tenant: "google.test".into(),
            client_id: "g-client".into(),
            username: "someone@google.test".into(),
            scopes: vec![GRAPH_SCOPE.into(), "offline_access".into()],
            mfa: false,
        })
        .unwrap();
    let grt = rt(&g);
    for _ in 0..2 {
        let (s, b) = post_token(
            &emu,
            "google.test",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "g-client"),
                ("client_secret", "g-secret"),
                ("refresh_token", &grt),
            ],
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert!(b.get("refresh_token").is_none());
    }
}

#[tokio::test]
async fn lifetime_and_inactivity() {
    let mut s = setup();
    s.tenants[0].refresh_token_inactivity_seconds = Some(3600);
    s.tenants[0].refresh_token_lifetime_seconds = 7200;
    s.tenants[0].access_token_lifetime_seconds = 600;
    let emu = start_with(s);
    let first = issue(&emu, &["offline_access", GRAPH_SCOPE]);
    assert_eq!(first["expires_in"], 600);
    emu.advance_clock(3601);
    let (s, b) = refresh(&emu, &rt(&first), None).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 700082);
    assert!(b["error_description"].as_str().unwrap().contains("was inactive for 0.01:00:00"));

    // Lifetime shorter than the inactivity window: AADSTS70008.
    let mut s = setup();
    s.tenants[0].refresh_token_lifetime_seconds = 100;
    let emu = start_with(s);
    let first = issue(&emu, &["offline_access", GRAPH_SCOPE]);
    let (s, b) = refresh(&emu, &rt(&first), None).await;
    assert_eq!(s, 200, "{b}");
    emu.advance_clock(101);
    let (s, b) = refresh(&emu, &rt(&b), None).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 70008);

    // The default is 90 days per token, renewed by each refresh.
    let emu = start();
    let mut token = rt(&issue(&emu, &["offline_access", GRAPH_SCOPE]));
    for _ in 0..3 {
        emu.advance_clock(80 * 86400);
        let (s, b) = refresh(&emu, &token, None).await;
        assert_eq!(s, 200, "{b}");
        token = rt(&b);
    }
    emu.advance_clock(91 * 86400);
    let (s, b) = refresh(&emu, &token, None).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 70008);
}

#[tokio::test]
async fn revocation_password_change_and_consent() {
    let emu = start();
    let a = rt(&issue(&emu, &["offline_access", GRAPH_SCOPE]));
    emu.revoke_user_tokens(DOMAIN, USER).unwrap();
    let (s, b) = refresh(&emu, &a, None).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 70008);

    // Tokens from after the revocation work; a password change kills them with 50173.
    let b1 = rt(&issue(&emu, &["offline_access", GRAPH_SCOPE]));
    let (s, _) = refresh(&emu, &b1, None).await;
    assert_eq!(s, 200);
    let b2 = rt(&issue(&emu, &["offline_access", GRAPH_SCOPE]));
    emu.change_password(DOMAIN, USER, "N3w-password").unwrap();
    let (s, b) = refresh(&emu, &b2, None).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 50173);
    assert!(b["error_description"].as_str().unwrap().contains("TokensValidFrom"));

    // Consent withdrawn: 65001 with suberror consent_required.
    let c = rt(&issue(&emu, &["offline_access", GRAPH_SCOPE]));
    emu.revoke_consent(ConsentSpec {
        tenant: DOMAIN.into(),
        client_id: WEB_APP.into(),
        username: Some(USER.into()),
        scopes: vec![],
    })
    .unwrap();
    let (s, b) = refresh(&emu, &c, None).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 65001);
    assert_eq!(b["suberror"], "consent_required");
}

#[tokio::test]
async fn mfa_and_conditional_access_turned_on_later() {
    let emu = start();
    let a = rt(&issue(&emu, &["offline_access", GRAPH_SCOPE]));
    emu.update_user(UserUpdate {
        tenant: DOMAIN.into(),
        username: USER.into(),
        mfa_required: Some(true),
        ..Default::default()
    })
    .unwrap();
    let (s, b) = refresh(&emu, &a, None).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 50076);
    emu.update_user(UserUpdate {
        tenant: DOMAIN.into(),
        username: USER.into(),
        mfa_required: Some(false),
        blocked_by_conditional_access: Some(true),
        ..Default::default()
    })
    .unwrap();
    let (s, b) = refresh(&emu, &a, None).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 53003);
}

#[tokio::test]
async fn one_refresh_token_several_resources() {
    let emu = start();
    let imap = "https://outlook.office.com/IMAP.AccessAsUser.All";
    let first = issue(&emu, &["offline_access", GRAPH_SCOPE, imap]);
    let keys = jwks(&emu, DOMAIN).await;
    let (_, at) = verify_jwt(first["access_token"].as_str().unwrap(), &keys);
    assert_eq!(at["aud"], "https://graph.microsoft.com", "the first resource wins");
    let (s, b) = refresh(&emu, &rt(&first), Some(&format!("{imap} offline_access"))).await;
    assert_eq!(s, 200, "{b}");
    let (_, at) = verify_jwt(b["access_token"].as_str().unwrap(), &keys);
    assert_eq!(at["aud"], "https://outlook.office.com");
    assert_eq!(at["scp"], "IMAP.AccessAsUser.All");
    assert_eq!(b["scope"], format!("{imap} offline_access"));
    // A resource never consented: 65001.
    let (s, b) =
        refresh(&emu, &rt(&b), Some("https://outlook.office365.com/EWS.AccessAsUser.All offline_access")).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 65001);
}
