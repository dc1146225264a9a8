//! IMAP, POP and SMTP AUTH token checks at `/introspect/{protocol}` (what Dovecot's `passdb
//! oauth2` asks): the audience must be Exchange Online, the token must carry the protocol's
//! delegated scope or application role, and an app-only token reaches a mailbox only through an
//! Exchange service principal with full access to it.

mod common;

use common::*;
use m365_emulator::{IssueSpec, MailboxAppGrant, MailboxGrant, MailboxSpec, ServicePrincipalSpec, Setup};
use serde_json::{Value, json};

const SHARED: &str = "servicedesk@contoso.test";

fn setup_with_protocol_roles() -> Setup {
    let mut s = setup();
    let daemon = s.apps.iter_mut().find(|a| a.client_id.as_deref() == Some(DAEMON_APP)).unwrap();
    daemon.application_permissions.extend([
        "https://outlook.office365.com/IMAP.AccessAsApp".to_string(),
        "https://outlook.office365.com/POP.AccessAsApp".to_string(),
        "https://outlook.office365.com/SMTP.SendAsApp".to_string(),
    ]);
    s.mailboxes.push(MailboxSpec::new(DOMAIN, SHARED));
    s
}

fn user_token(emu: &m365_emulator::Emulator, scope: &str) -> String {
    let t = emu
        .issue_tokens(&IssueSpec {
            tenant: DOMAIN.into(),
            client_id: WEB_APP.into(),
            username: USER.into(),
            scopes: vec![scope.into(), "offline_access".into()],
            mfa: false,
        })
        .unwrap();
    t["access_token"].as_str().unwrap().to_string()
}

async fn app_token(emu: &m365_emulator::Emulator, scope: &str) -> String {
    let (s, b) = post_token(
        emu,
        TENANT_ID,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", DAEMON_APP),
            ("client_secret", DAEMON_SECRET),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b["access_token"].as_str().unwrap().to_string()
}

/// Dovecot's request: GET with the bearer token. Returns the status and the JSON.
async fn introspect(emu: &m365_emulator::Emulator, protocol: &str, mailbox: Option<&str>, token: &str) -> (u16, Value) {
    let r = client().get(emu.mail_introspection_url(protocol, mailbox)).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    if status == 401 {
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_string();
        assert!(challenge.starts_with("Bearer error="), "{challenge}");
    }
    (status, r.json().await.unwrap())
}

fn refused(answer: &(u16, Value), error: &str, says: &str) {
    let (status, v) = answer;
    assert_eq!(*status, 401, "{v}");
    assert_eq!(v["active"], false, "{v}");
    assert_eq!(v["error"], error, "{v}");
    let d = v["error_description"].as_str().unwrap();
    assert!(d.contains(says), "{d:?} should say {says:?}");
}

fn let_in(answer: &(u16, Value), as_user: &str) {
    let (status, v) = answer;
    assert_eq!(*status, 200, "{v}");
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["email"], as_user, "{v}");
}

#[tokio::test]
async fn audience_and_delegated_scope_per_protocol() {
    let emu = start_with(setup_with_protocol_roles());
    // A Graph token is not for IMAP, whatever its scopes.
    let graph = user_token(&emu, GRAPH_SCOPE);
    refused(&introspect(&emu, "imap", Some(USER), &graph).await, "invalid_token", "https://graph.microsoft.com");
    // The generic endpoint takes any valid token: that is what the per-protocol one fixes.
    let r = client().get(emu.introspection_url()).bearer_auth(&graph).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // An IMAP token opens IMAP, and neither POP nor SMTP.
    let imap = user_token(&emu, "https://outlook.office.com/IMAP.AccessAsUser.All");
    let_in(&introspect(&emu, "imap", Some(USER), &imap).await, USER);
    let_in(&introspect(&emu, "imap", None, &imap).await, USER);
    refused(&introspect(&emu, "pop3", Some(USER), &imap).await, "insufficient_scope", "POP.AccessAsUser.All");
    refused(&introspect(&emu, "submission", Some(USER), &imap).await, "insufficient_scope", "SMTP.Send");

    // The user's later consents go into later tokens for the same resource (as Entra does).
    let pop = user_token(&emu, "https://outlook.office.com/POP.AccessAsUser.All");
    let_in(&introspect(&emu, "pop3", Some(USER), &pop).await, USER);
    let_in(&introspect(&emu, "pop", Some(USER), &pop).await, USER);
    let smtp = user_token(&emu, "https://outlook.office365.com/SMTP.Send");
    let_in(&introspect(&emu, "submission", Some(USER), &smtp).await, USER);
    let_in(&introspect(&emu, "smtp", Some(USER), &smtp).await, USER);

    // An EWS scope is Exchange's audience but not an IMAP permission.
    let emu2 = start_with(setup_with_protocol_roles());
    let ews = user_token(&emu2, "https://outlook.office365.com/EWS.AccessAsUser.All");
    refused(&introspect(&emu2, "imap", Some(USER), &ews).await, "insufficient_scope", "IMAP.AccessAsUser.All");

    // Bad, missing and expired tokens.
    refused(&introspect(&emu, "imap", Some(USER), "garbage").await, "invalid_token", "not valid");
    let r = client().get(emu.mail_introspection_url("imap", Some(USER))).send().await.unwrap();
    assert_eq!(r.status(), 401);
    emu.advance_clock(3600);
    refused(&introspect(&emu, "imap", Some(USER), &imap).await, "invalid_token", "expired");

    // Unknown protocols are not guessed.
    let r = client().get(emu.mail_introspection_url("lmtp", None)).bearer_auth(&imap).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_user_opens_another_mailbox_only_with_full_access() {
    let emu = start_with(setup_with_protocol_roles());
    let imap = user_token(&emu, "https://outlook.office.com/IMAP.AccessAsUser.All");
    refused(&introspect(&emu, "imap", Some(SHARED), &imap).await, "access_denied", SHARED);
    refused(&introspect(&emu, "imap", Some("nobody@contoso.test"), &imap).await, "access_denied", "no mailbox");
    emu.grant_mailbox_access(MailboxGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), username: USER.into() })
        .unwrap();
    // The SASL user is the shared mailbox, and that is the name the server logs in.
    let_in(&introspect(&emu, "imap", Some(SHARED), &imap).await, SHARED);
}

#[tokio::test]
async fn app_only_needs_the_role_a_service_principal_and_mailbox_access() {
    let emu = start_with(setup_with_protocol_roles());
    let token = app_token(&emu, "https://outlook.office365.com/.default").await;

    // Application tokens name no user: without a mailbox nothing maps them to one.
    refused(&introspect(&emu, "imap", None, &token).await, "access_denied", "names no user");
    // No Exchange service principal yet.
    let no_sp = introspect(&emu, "imap", Some(SHARED), &token).await;
    refused(&no_sp, "access_denied", "New-ServicePrincipal");
    assert!(no_sp.1["error_description"].as_str().unwrap().contains(DAEMON_APP));

    // Full access before the service principal exists is refused, as Exchange does.
    let grant = MailboxAppGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), client_id: DAEMON_APP.into() };
    assert!(emu.grant_mailbox_access_to_app(grant.clone()).is_err());

    emu.register_service_principal(ServicePrincipalSpec { tenant: DOMAIN.into(), client_id: DAEMON_APP.into() })
        .unwrap();
    refused(&introspect(&emu, "imap", Some(SHARED), &token).await, "access_denied", "Add-MailboxPermission");

    emu.grant_mailbox_access_to_app(grant).unwrap();
    let_in(&introspect(&emu, "imap", Some(SHARED), &token).await, SHARED);
    let_in(&introspect(&emu, "pop3", Some(SHARED), &token).await, SHARED);
    let_in(&introspect(&emu, "submission", Some(SHARED), &token).await, SHARED);
    // Access to one mailbox is not access to another.
    emu.create_mailbox(MailboxSpec::new(DOMAIN, "sales@contoso.test")).unwrap();
    refused(&introspect(&emu, "imap", Some("sales@contoso.test"), &token).await, "access_denied", "sales@");

    // RFC 7662 POST: 200 either way, `active` tells.
    let c = client();
    let url = emu.mail_introspection_url("imap", None);
    let ok: Value = c
        .post(&url)
        .form(&[("token", token.as_str()), ("mailbox", SHARED)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((ok["active"].clone(), ok["email"].clone()), (json!(true), json!(SHARED)), "{ok}");
    let r = c.post(&url).form(&[("token", token.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["active"], false);
}

#[tokio::test]
async fn app_only_without_the_protocol_role_is_refused() {
    // The daemon app of the common setup has full_access_as_app (EWS) but no IMAP/POP/SMTP role.
    let mut s = setup();
    s.mailboxes.push(MailboxSpec::new(DOMAIN, SHARED));
    s.exchange_service_principals.push(ServicePrincipalSpec { tenant: DOMAIN.into(), client_id: DAEMON_APP.into() });
    s.mailbox_app_grants.push(MailboxAppGrant {
        tenant: DOMAIN.into(),
        mailbox: SHARED.into(),
        client_id: DAEMON_APP.into(),
    });
    let emu = start_with(s);
    let token = app_token(&emu, "https://outlook.office365.com/.default").await;
    refused(&introspect(&emu, "imap", Some(SHARED), &token).await, "insufficient_scope", "IMAP.AccessAsApp");
    refused(&introspect(&emu, "pop3", Some(SHARED), &token).await, "insufficient_scope", "POP.AccessAsApp");
    refused(&introspect(&emu, "submission", Some(SHARED), &token).await, "insufficient_scope", "SMTP.SendAsApp");
    // A Graph app token is refused for its audience before anything else.
    let graph = app_token(&emu, "https://graph.microsoft.com/.default").await;
    refused(&introspect(&emu, "imap", Some(SHARED), &graph).await, "invalid_token", "audience");
}

#[tokio::test]
async fn service_principals_through_the_admin_api_and_the_state_dump() {
    let emu = start_with(setup_with_protocol_roles());
    let c = client();
    let base = emu.base_url();
    let grant = json!({"tenant": DOMAIN, "mailbox": SHARED, "client_id": DAEMON_APP});
    let r = c.post(format!("{base}/_admin/mailboxes/grant-app")).json(&grant).send().await.unwrap();
    assert_eq!(r.status(), 404, "no service principal yet");
    let sp = json!({"tenant": DOMAIN, "client_id": DAEMON_APP});
    let r = c.post(format!("{base}/_admin/exchange/service-principals")).json(&sp).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.post(format!("{base}/_admin/mailboxes/grant-app")).json(&grant).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let unknown = json!({"tenant": DOMAIN, "client_id": "00000000-0000-0000-0000-00000000dead"});
    let r = c.post(format!("{base}/_admin/exchange/service-principals")).json(&unknown).send().await.unwrap();
    assert_eq!(r.status(), 404, "only apps the tenant knows");

    let token = app_token(&emu, "https://outlook.office365.com/.default").await;
    let_in(&introspect(&emu, "imap", Some(SHARED), &token).await, SHARED);

    // The dump carries both, and loads into a fresh emulator with the same effect.
    let state = emu.state();
    assert_eq!(state.exchange_service_principals.len(), 1);
    assert_eq!(state.mailbox_app_grants.len(), 1);
    assert_eq!(state.mailbox_app_grants[0].client_id, DAEMON_APP);
    let again = start_with(state);
    let token = app_token(&again, "https://outlook.office365.com/.default").await;
    let_in(&introspect(&again, "imap", Some(SHARED), &token).await, SHARED);
}
