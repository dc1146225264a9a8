//! The authorization code flow driven over plain HTTP: authorize, sign-in form, consent form,
//! redirect (query, fragment, form_post), code redemption with PKCE, and its errors.

mod common;

use common::*;
use m365_emulator::{AppSpec, ConsentSpec, SecretSpec, UserSpec};
use serde_json::Value;

async fn redeem(emu: &m365_emulator::Emulator, code: &str, verifier: &str) -> (reqwest::StatusCode, Value) {
    post_token(
        emu,
        DOMAIN,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", WEB_APP),
            ("client_secret", WEB_SECRET),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
            ("client_info", "1"),
        ],
    )
    .await
}

#[tokio::test]
async fn full_flow_with_pkce_consent_and_verified_claims() {
    let emu = start();
    let c = client();
    let (verifier, challenge) = pkce();
    let url = authorize_url(
        &emu,
        TENANT_ID,
        &[
            ("client_id", WEB_APP),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", &format!("openid profile offline_access {GRAPH_SCOPE}")),
            ("state", "st-123"),
            ("nonce", "n-456"),
            ("login_hint", USER),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    // Sign-in page: a form with the documented fields, the login hint filled in.
    let html = page(get(&c, &url).await);
    assert!(html.contains("name=\"username\"") && html.contains("name=\"password\""));
    assert!(html.contains(&format!("value=\"{USER}\"")));
    let flow = hidden(&html, "flow").unwrap();
    assert_eq!(form_action(&html), format!("/{TENANT_ID}/login"));
    // Consent page lists the delegated permission.
    let consent = page(
        post_form(&c, &emu, &form_action(&html), &[("flow", &flow), ("username", USER), ("password", PASSWORD)]).await,
    );
    assert!(consent.contains("Permissions requested"), "{consent}");
    assert!(consent.contains(GRAPH_SCOPE));
    assert!(consent.contains("Maintain access to data you have given it access to"));
    let flow = hidden(&consent, "flow").unwrap();
    let loc = redirect(post_form(&c, &emu, &form_action(&consent), &[("flow", &flow), ("action", "accept")]).await);
    assert!(loc.starts_with(REDIRECT), "{loc}");
    let q = location_params(&loc);
    assert_eq!(q["state"], "st-123");
    let code = &q["code"];

    let (status, body) = redeem(&emu, code, &verifier).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    let scope = body["scope"].as_str().unwrap();
    assert!(scope.contains(GRAPH_SCOPE) && scope.contains("openid") && scope.contains("offline_access"), "{scope}");
    assert!(body["refresh_token"].as_str().unwrap().len() > 40);

    let keys = jwks(&emu, TENANT_ID).await;
    let (header, at) = verify_jwt(body["access_token"].as_str().unwrap(), &keys);
    assert!(header["kid"].is_string());
    assert_eq!(at["aud"], "https://graph.microsoft.com");
    assert_eq!(at["iss"], format!("{}/{TENANT_ID}/v2.0", emu.base_url()));
    assert_eq!(at["tid"], TENANT_ID);
    assert_eq!(at["scp"], "Mail.ReadWrite.Shared");
    assert_eq!(at["upn"], USER);
    assert_eq!(at["preferred_username"], USER);
    assert_eq!(at["name"], "Mail Robot");
    assert_eq!(at["appid"], WEB_APP);
    assert_eq!(at["azp"], WEB_APP);
    assert_eq!(at["azpacr"], "1");
    assert_eq!(at["ver"], "2.0");
    assert!(at.get("roles").is_none());
    let oid = at["oid"].as_str().unwrap().to_string();
    let (iat, nbf, exp) = (at["iat"].as_i64().unwrap(), at["nbf"].as_i64().unwrap(), at["exp"].as_i64().unwrap());
    assert!((iat - now()).abs() < 60 && nbf <= iat + 1 && exp - iat == 3599);

    let (_, id) = verify_jwt(body["id_token"].as_str().unwrap(), &keys);
    assert_eq!(id["aud"], WEB_APP);
    // iss names the tenant by id, whatever the sign-in URL named it by.
    assert_eq!(id["iss"], format!("{}/{TENANT_ID}/v2.0", emu.base_url()));
    assert_eq!(id["ver"], "2.0");
    let (id_iat, id_exp) = (id["iat"].as_i64().unwrap(), id["exp"].as_i64().unwrap());
    assert!((id_iat - now()).abs() < 60 && id_exp > now(), "iat {id_iat}, exp {id_exp}");
    assert_eq!(id["nonce"], "n-456");
    assert_eq!(id["name"], "Mail Robot");
    assert_eq!(id["preferred_username"], USER);
    assert_eq!(id["oid"], oid);
    assert_eq!(id["tid"], TENANT_ID);
    assert_eq!(id["sub"], at["sub"]);

    // client_info (MSAL asks for it): base64url {"uid": oid, "utid": tid}.
    let ci = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        body["client_info"].as_str().unwrap(),
    )
    .unwrap();
    let ci: Value = serde_json::from_slice(&ci).unwrap();
    assert_eq!(ci["uid"], oid);
    assert_eq!(ci["utid"], TENANT_ID);

    // Consent is remembered: the next sign-in goes straight back with a code.
    let (verifier2, challenge2) = pkce();
    let url2 = authorize_url(
        &emu,
        DOMAIN,
        &[
            ("client_id", WEB_APP),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", &format!("offline_access {GRAPH_SCOPE}")),
            ("code_challenge", &challenge2),
            ("code_challenge_method", "S256"),
        ],
    );
    let html = page(get(&c, &url2).await);
    let flow = hidden(&html, "flow").unwrap();
    let loc = redirect(
        post_form(&c, &emu, &form_action(&html), &[("flow", &flow), ("username", USER), ("password", PASSWORD)]).await,
    );
    let q = location_params(&loc);
    assert!(!q.contains_key("state"));
    let (status, body) = post_token(
        &emu,
        DOMAIN,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", WEB_APP),
            ("client_secret", WEB_SECRET),
            ("code", &q["code"]),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier2),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("id_token").is_none(), "no openid, no id_token");
    assert!(body.get("refresh_token").is_some());

    let stats = emu.stats();
    assert_eq!(stats.grants["authorization_code"], 2);
    assert_eq!(stats.requests("authorize"), 2);
    assert_eq!(stats.requests("login"), 3);
}

#[tokio::test]
async fn form_post_response_mode_posts_code_and_state() {
    let emu = start();
    emu.grant_consent(ConsentSpec {
        tenant: DOMAIN.into(),
        client_id: WEB_APP.into(),
        username: Some(USER.into()),
        scopes: vec![GRAPH_SCOPE.into()],
    })
    .unwrap();
    let c = client();
    let (verifier, challenge) = pkce();
    let url = authorize_url(
        &emu,
        DOMAIN,
        &[
            ("client_id", WEB_APP),
            ("response_type", "code"),
            ("response_mode", "form_post"),
            ("redirect_uri", REDIRECT),
            ("scope", &format!("offline_access {GRAPH_SCOPE}")),
            ("state", "a&b \"c\""),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    let html = page(get(&c, &url).await);
    let flow = hidden(&html, "flow").unwrap();
    let post = page(
        post_form(&c, &emu, &form_action(&html), &[("flow", &flow), ("username", USER), ("password", PASSWORD)]).await,
    );
    // An auto-submitting form that POSTs to the redirect URI.
    assert!(post.contains("method=\"POST\""), "{post}");
    assert_eq!(form_action(&post), REDIRECT);
    assert!(post.contains("document.forms[0].submit()"));
    assert_eq!(hidden(&post, "state").unwrap(), "a&b \"c\"");
    let code = hidden(&post, "code").unwrap();
    let (status, body) = redeem(&emu, &code, &verifier).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn cancel_on_consent_redirects_access_denied_65004() {
    let emu = start();
    let c = client();
    let url = authorize_url(
        &emu,
        DOMAIN,
        &[
            ("client_id", WEB_APP),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", GRAPH_SCOPE),
            ("state", "s1"),
        ],
    );
    let html = page(get(&c, &url).await);
    let flow = hidden(&html, "flow").unwrap();
    let consent = page(
        post_form(&c, &emu, &form_action(&html), &[("flow", &flow), ("username", USER), ("password", PASSWORD)]).await,
    );
    let flow = hidden(&consent, "flow").unwrap();
    let loc = redirect(post_form(&c, &emu, &form_action(&consent), &[("flow", &flow), ("action", "cancel")]).await);
    assert!(loc.starts_with(REDIRECT));
    let q = location_params(&loc);
    assert_eq!(q["error"], "access_denied");
    assert!(q["error_description"].starts_with("AADSTS65004: User declined to consent"), "{q:?}");
    assert!(q["error_description"].contains("\r\nTrace ID: "));
    assert_eq!(q["error_subcode"], "cancel");
    assert_eq!(q["state"], "s1");
    assert!(!q.contains_key("code"));
    assert_eq!(emu.stats().error_count(65004), 1);
}

#[tokio::test]
async fn errors_before_the_redirect_uri_is_trusted_are_pages_not_redirects() {
    let emu = start();
    let c = client();
    let cases = [
        (authorize_url(&emu, "nope.test", &[("client_id", WEB_APP)]), 90002),
        (authorize_url(&emu, DOMAIN, &[("client_id", "00000000-0000-0000-0000-00000000beef")]), 700016),
        (
            authorize_url(
                &emu,
                DOMAIN,
                &[("client_id", WEB_APP), ("response_type", "code"), ("redirect_uri", "https://evil.example/cb")],
            ),
            50011,
        ),
        (authorize_url(&emu, "common", &[("client_id", WEB_APP), ("redirect_uri", REDIRECT)]), 50194),
    ];
    for (url, code) in cases {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 400, "{url}");
        assert!(r.headers().get("location").is_none());
        let html = r.text().await.unwrap();
        assert!(html.contains(&format!("<p id=\"error-code\">AADSTS{code}</p>")), "{code}: {html}");
    }
}

#[tokio::test]
async fn errors_after_validation_go_back_to_the_redirect_uri() {
    let emu = start();
    let c = client();
    let base = [("client_id", WEB_APP), ("redirect_uri", REDIRECT), ("state", "xyz")];
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, u32);
    let cases: Vec<Case> = vec![
        (vec![("response_type", "token"), ("scope", GRAPH_SCOPE)], "unsupported_response_type", 70005),
        (vec![("response_type", "code")], "invalid_request", 900144),
        (vec![("response_type", "code"), ("scope", "https://nothing.example/x.read")], "invalid_resource", 500011),
        (vec![("response_type", "code"), ("scope", "https://graph.microsoft.com/Mail.Raed")], "invalid_client", 650053),
        (vec![("response_type", "code"), ("scope", GRAPH_SCOPE), ("prompt", "none")], "login_required", 50058),
        (
            vec![("response_type", "code"), ("scope", GRAPH_SCOPE), ("code_challenge", "short")],
            "invalid_request",
            501491,
        ),
    ];
    for (extra, error, code) in cases {
        let mut params: Vec<(&str, &str)> = base.to_vec();
        params.extend(extra);
        let loc = redirect(get(&c, &authorize_url(&emu, DOMAIN, &params)).await);
        let q = location_params(&loc);
        assert_eq!(q["error"], error, "{loc}");
        assert!(q["error_description"].starts_with(&format!("AADSTS{code}:")), "{loc}");
        assert_eq!(q["state"], "xyz");
    }
}

#[tokio::test]
async fn sign_in_errors_show_on_the_sign_in_page() {
    let emu = start();
    let c = client();
    let url = authorize_url(
        &emu,
        DOMAIN,
        &[("client_id", WEB_APP), ("response_type", "code"), ("redirect_uri", REDIRECT), ("scope", GRAPH_SCOPE)],
    );
    let html = page(get(&c, &url).await);
    let flow = hidden(&html, "flow").unwrap();
    let again = page(
        post_form(&c, &emu, &form_action(&html), &[("flow", &flow), ("username", USER), ("password", "wrong")]).await,
    );
    assert!(again.contains("AADSTS50126: Error validating credentials due to invalid username or password."));
    let again = page(
        post_form(
            &c,
            &emu,
            &form_action(&html),
            &[("flow", &flow), ("username", "ghost@contoso.test"), ("password", "x")],
        )
        .await,
    );
    assert!(again.contains("AADSTS50034"), "{again}");
    // The same flow still works with the right password.
    let consent = page(
        post_form(&c, &emu, &form_action(&html), &[("flow", &flow), ("username", USER), ("password", PASSWORD)]).await,
    );
    assert!(consent.contains("Permissions requested"));
    // An unknown flow id is a stale session.
    match post_form(&c, &emu, &form_action(&html), &[("flow", "bogus"), ("username", USER), ("password", PASSWORD)])
        .await
    {
        Landing::Page(400, html) => assert!(html.contains("AADSTS50089")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn code_redemption_errors() {
    let emu = start();
    emu.grant_consent(ConsentSpec {
        tenant: DOMAIN.into(),
        client_id: WEB_APP.into(),
        username: None,
        scopes: vec![GRAPH_SCOPE.into()],
    })
    .unwrap();
    let c = client();
    let get_code = |challenge: String, method: &'static str| {
        let url = authorize_url(
            &emu,
            DOMAIN,
            &[
                ("client_id", WEB_APP),
                ("response_type", "code"),
                ("redirect_uri", REDIRECT),
                ("scope", &format!("offline_access {GRAPH_SCOPE}")),
                ("code_challenge", &challenge),
                ("code_challenge_method", method),
            ],
        );
        let c = c.clone();
        let emu = &emu;
        async move { location_params(&sign_in(&c, emu, &url, USER, PASSWORD).await)["code"].clone() }
    };
    // Admin consent: no consent page, straight to the code.
    let (verifier, challenge) = pkce();
    let code = get_code(challenge, "S256").await;
    let (s, b) = redeem(&emu, &code, "not-the-verifier-0123456789-0123456789-0123456789").await;
    assert_sts_error(s, &b, 400, "invalid_grant", 501481);
    let (s, b) = redeem(&emu, &code, &verifier).await;
    assert_eq!(s, 200, "a failed verifier does not burn the code: {b}");
    let (s, b) = redeem(&emu, &code, &verifier).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 54005);

    // redirect_uri must be the one of the authorize request.
    let (verifier, challenge) = pkce();
    let code = get_code(challenge, "S256").await;
    let (s, b) = post_token(
        &emu,
        DOMAIN,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", WEB_APP),
            ("client_secret", WEB_SECRET),
            ("code", &code),
            ("redirect_uri", "http://localhost/callback"),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_sts_error(s, &b, 400, "invalid_grant", 500112);

    // plain PKCE: the verifier is the challenge.
    let plain = format!("plain-{}-{}", rand_suffix(), rand_suffix());
    let code = get_code(plain.clone(), "plain").await;
    let (s, b) = redeem(&emu, &code, &plain).await;
    assert_eq!(s, 200, "{b}");

    // Codes live about ten minutes.
    let (verifier, challenge) = pkce();
    let code = get_code(challenge, "S256").await;
    emu.advance_clock(11 * 60);
    let (s, b) = redeem(&emu, &code, &verifier).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 70008);

    // Missing parameters and a garbage code.
    let (s, b) = post_token(
        &emu,
        DOMAIN,
        &[("grant_type", "authorization_code"), ("client_id", WEB_APP), ("client_secret", WEB_SECRET)],
    )
    .await;
    assert_sts_error(s, &b, 400, "invalid_request", 900144);
    let (s, b) = redeem(&emu, "garbage", &verifier).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 9002313);
}

/// The authorize request may name several resources, the redemption only one (OIDC scopes
/// aside): otherwise AADSTS28000, as the v2.0 endpoint answers. The code is not used up by it.
#[tokio::test]
async fn a_redemption_may_ask_for_one_resource_only() {
    const EWS_SCOPE: &str = "https://outlook.office365.com/EWS.AccessAsUser.All";
    let emu = start();
    emu.grant_consent(ConsentSpec {
        tenant: DOMAIN.into(),
        client_id: WEB_APP.into(),
        username: None,
        scopes: vec![GRAPH_SCOPE.into(), EWS_SCOPE.into()],
    })
    .unwrap();
    let c = client();
    let (verifier, challenge) = pkce();
    let both = format!("openid offline_access {GRAPH_SCOPE} {EWS_SCOPE}");
    let url = authorize_url(
        &emu,
        DOMAIN,
        &[
            ("client_id", WEB_APP),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", &both),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    let code = location_params(&sign_in(&c, &emu, &url, USER, PASSWORD).await)["code"].clone();
    let redeem_for = |scope: String| {
        let (code, verifier, emu) = (code.clone(), verifier.clone(), &emu);
        async move {
            post_token(
                emu,
                DOMAIN,
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", WEB_APP),
                    ("client_secret", WEB_SECRET),
                    ("code", &code),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", &verifier),
                    ("scope", &scope),
                ],
            )
            .await
        }
    };
    let (s, b) = redeem_for(both.clone()).await;
    assert_sts_error(s, &b, 400, "invalid_scope", 28000);
    assert!(b["error_description"].as_str().unwrap().contains("more than one resource"), "{b}");
    // Exchange Online's two URIs count as two resources.
    let (s, b) = redeem_for(format!("{EWS_SCOPE} https://outlook.office.com/SMTP.Send")).await;
    assert_sts_error(s, &b, 400, "invalid_scope", 28000);
    let (s, b) = redeem_for(format!("openid offline_access {EWS_SCOPE}")).await;
    assert_eq!(s, 200, "{b}");
    let (_, at) = verify_jwt(b["access_token"].as_str().unwrap(), &jwks(&emu, DOMAIN).await);
    assert_eq!(at["aud"], "https://outlook.office365.com");
}

#[tokio::test]
async fn mfa_step_and_amr() {
    let emu = start();
    emu.add_user(UserSpec {
        tenant: DOMAIN.into(),
        username: "boss@contoso.test".into(),
        password: "pw".into(),
        mfa_required: true,
        mfa_code: Some("424242".into()),
        ..Default::default()
    })
    .unwrap();
    emu.grant_consent(ConsentSpec {
        tenant: DOMAIN.into(),
        client_id: WEB_APP.into(),
        username: None,
        scopes: vec![GRAPH_SCOPE.into()],
    })
    .unwrap();
    let c = client();
    let url = authorize_url(
        &emu,
        DOMAIN,
        &[
            ("client_id", WEB_APP),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", &format!("offline_access {GRAPH_SCOPE}")),
        ],
    );
    let html = page(get(&c, &url).await);
    let flow = hidden(&html, "flow").unwrap();
    let mfa = page(
        post_form(
            &c,
            &emu,
            &form_action(&html),
            &[("flow", &flow), ("username", "boss@contoso.test"), ("password", "pw")],
        )
        .await,
    );
    assert!(mfa.contains("name=\"otp\""), "{mfa}");
    assert_eq!(form_action(&mfa), format!("/{DOMAIN}/mfa"));
    let wrong = page(post_form(&c, &emu, "/contoso.test/mfa", &[("flow", &flow), ("otp", "000000")]).await);
    assert!(wrong.contains("AADSTS500121"));
    let loc = redirect(post_form(&c, &emu, "/contoso.test/mfa", &[("flow", &flow), ("otp", "424242")]).await);
    let code = location_params(&loc)["code"].clone();
    let (s, b) = post_token(
        &emu,
        DOMAIN,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", WEB_APP),
            ("client_secret", WEB_SECRET),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (_, at) = verify_jwt(b["access_token"].as_str().unwrap(), &jwks(&emu, DOMAIN).await);
    assert_eq!(at["amr"], serde_json::json!(["pwd", "mfa"]));
    // Refresh tokens from the MFA session keep working.
    let (s, b) = post_token(
        &emu,
        DOMAIN,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", WEB_APP),
            ("client_secret", WEB_SECRET),
            ("refresh_token", b["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn sso_cookie_prompt_none_and_prompt_consent() {
    let emu = start();
    emu.grant_consent(ConsentSpec {
        tenant: DOMAIN.into(),
        client_id: WEB_APP.into(),
        username: None,
        scopes: vec![GRAPH_SCOPE.into()],
    })
    .unwrap();
    let c = client();
    let params = |prompt: Option<&'static str>| {
        let mut p =
            vec![("client_id", WEB_APP), ("response_type", "code"), ("redirect_uri", REDIRECT), ("scope", GRAPH_SCOPE)];
        if let Some(pr) = prompt {
            p.push(("prompt", pr));
        }
        authorize_url(&emu, DOMAIN, &p)
    };
    let html = page(get(&c, &params(None)).await);
    let flow = hidden(&html, "flow").unwrap();
    let r = c
        .post(format!("{}{}", emu.base_url(), form_action(&html)))
        .form(&[("flow", flow.as_str()), ("username", USER), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.starts_with("ESTSAUTH=") && set_cookie.contains("HttpOnly"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let q = location_params(r.headers()["location"].to_str().unwrap());
    assert!(q.contains_key("session_state"));

    // With the session cookie, prompt=none answers with a code at once.
    let r = c.get(params(Some("none"))).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(location_params(r.headers()["location"].to_str().unwrap()).contains_key("code"));
    // prompt=consent shows the consent page even though consent exists.
    let r = c.get(params(Some("consent"))).header("cookie", &cookie).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("Permissions requested"));
    // prompt=login ignores the session.
    let r = c.get(params(Some("login"))).header("cookie", &cookie).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("name=\"password\""));
    // A revoked user's session no longer signs in silently.
    emu.revoke_user_tokens(DOMAIN, USER).unwrap();
    let r = c.get(params(Some("none"))).header("cookie", &cookie).send().await.unwrap();
    let q = location_params(r.headers()["location"].to_str().unwrap());
    assert_eq!(q["error"], "login_required");
}

#[tokio::test]
async fn loopback_ports_fragment_mode_and_common_endpoint() {
    let emu = start();
    emu.add_app(AppSpec {
        tenant: DOMAIN.into(),
        client_id: Some("99999999-8888-4777-8666-555555555555".into()),
        name: "Multi".into(),
        redirect_uris: vec!["http://127.0.0.1/cb".into()],
        secrets: vec![SecretSpec::new("m")],
        delegated_permissions: vec![GRAPH_SCOPE.into()],
        multi_tenant: true,
        ..Default::default()
    })
    .unwrap();
    let c = client();
    let url = authorize_url(
        &emu,
        "common",
        &[
            ("client_id", "99999999-8888-4777-8666-555555555555"),
            ("response_type", "code"),
            ("response_mode", "fragment"),
            ("redirect_uri", "http://127.0.0.1:8765/cb"),
            ("scope", GRAPH_SCOPE),
        ],
    );
    let loc = sign_in(&c, &emu, &url, USER, PASSWORD).await;
    assert!(loc.starts_with("http://127.0.0.1:8765/cb#code="), "{loc}");
    let code = url::form_urlencoded::parse(loc.split_once('#').unwrap().1.as_bytes())
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", "99999999-8888-4777-8666-555555555555"),
        ("client_secret", "m"),
        ("code", code.as_str()),
        ("redirect_uri", "http://127.0.0.1:8765/cb"),
    ];
    // A code from /common must be redeemed through /common.
    let (s, b) = post_token(&emu, TENANT_ID, &form).await;
    assert_sts_error(s, &b, 400, "invalid_grant", 700005);
    let (s, b) = post_token(&emu, "common", &form).await;
    assert_eq!(s, 200, "{b}");
    let (_, at) = verify_jwt(b["access_token"].as_str().unwrap(), &jwks(&emu, "common").await);
    assert_eq!(at["tid"], TENANT_ID);
}
