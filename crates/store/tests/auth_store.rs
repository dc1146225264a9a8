//! The service-connection side of the store: single-use flows, the refresh
//! lock, the token cache, and what state changes clear.

use mailrobot_store::*;

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("robot.db")).unwrap();
    (dir, store)
}

fn connection(store: &SqliteStore) -> Connection {
    let tenant = store
        .add_tenant(&NewTenant {
            name: "contoso".into(),
            provider: "microsoft365".into(),
            client_id: "cid".into(),
            directory: Some("contoso.com".into()),
            ..Default::default()
        })
        .unwrap();
    store
        .add_connection(&NewConnection {
            name: "desk".into(),
            tenant_id: tenant.id,
            capability: Capability::Graph,
            mode: Mode::Delegated,
            scopes: vec!["https://graph.microsoft.com/Mail.ReadWrite.Shared".into(), "offline_access".into()],
        })
        .unwrap()
}

fn flow(connection_id: i64, state: &str, expires_at: &str) -> AuthFlow {
    AuthFlow {
        state: state.into(),
        connection_id,
        sealed_verifier: vec![1, 2, 3],
        nonce: "n".into(),
        redirect_uri: "http://127.0.0.1:8025/wm/externalAuth/redirect.html".into(),
        initiator: "cli".into(),
        created_at: "2026-11-26T10:00:00Z".into(),
        expires_at: expires_at.into(),
    }
}

#[test]
fn auth_flows_are_single_use() {
    let (_d, s) = store();
    let c = connection(&s);
    s.create_auth_flow(&flow(c.id, "abc", "2999-01-01T00:00:00Z")).unwrap();
    let taken = s.take_auth_flow("abc").unwrap().expect("the flow");
    assert_eq!(taken.connection_id, c.id);
    assert!(s.take_auth_flow("abc").unwrap().is_none(), "a replayed state finds nothing");
    assert!(s.take_auth_flow("never-issued").unwrap().is_none());
}

#[test]
fn expired_flows_are_swept() {
    let (_d, s) = store();
    let c = connection(&s);
    s.create_auth_flow(&flow(c.id, "old", "2000-01-01T00:00:00Z")).unwrap();
    s.create_auth_flow(&flow(c.id, "new", "2999-01-01T00:00:00Z")).unwrap();
    assert!(s.take_auth_flow("old").unwrap().is_none());
    assert!(s.take_auth_flow("new").unwrap().is_some());
}

#[test]
fn the_refresh_lock_has_one_holder_until_released_or_expired() {
    let (_d, s) = store();
    let c = connection(&s);
    assert!(s.try_lock_refresh(c.id, "a", "2999-01-01T00:00:00Z").unwrap());
    assert!(!s.try_lock_refresh(c.id, "b", "2999-01-01T00:00:00Z").unwrap());
    assert!(s.try_lock_refresh(c.id, "a", "2999-01-01T00:00:00Z").unwrap(), "the holder may extend");
    s.unlock_refresh(c.id, "b").unwrap();
    assert!(!s.try_lock_refresh(c.id, "b", "2999-01-01T00:00:00Z").unwrap(), "only the holder releases");
    s.unlock_refresh(c.id, "a").unwrap();
    assert!(s.try_lock_refresh(c.id, "b", "2000-01-01T00:00:00Z").unwrap());
    // b's lock is already expired (a crashed holder): a takes over.
    assert!(s.try_lock_refresh(c.id, "a", "2999-01-01T00:00:00Z").unwrap());
}

#[test]
fn authorization_rotation_and_blocking_states() {
    let (_d, s) = store();
    let c = connection(&s);
    assert_eq!(c.state, ConnectionState::NotAuthenticated);
    s.complete_authorization(
        c.id,
        &Authorization {
            sealed_refresh_token: Some(b"sealed-rt-1".to_vec()),
            name: Some("Ada".into()),
            upn: Some("ada@contoso.com".into()),
            oid: Some("oid-1".into()),
            granted_scopes: Some("Mail.ReadWrite.Shared".into()),
        },
    )
    .unwrap();
    let c2 = s.connection(c.id).unwrap().unwrap();
    assert_eq!(c2.state, ConnectionState::Ready);
    assert_eq!(c2.authenticated_upn.as_deref(), Some("ada@contoso.com"));
    let token = CachedToken { sealed_token: b"at".to_vec(), expires_at: "2999-01-01T00:00:00Z".into() };
    s.store_refresh(c.id, Some(b"sealed-rt-2"), "https://graph.microsoft.com", &token).unwrap();
    assert_eq!(s.refresh_token(c.id).unwrap().unwrap(), b"sealed-rt-2");
    assert!(s.cached_token(c.id, "https://graph.microsoft.com").unwrap().is_some());
    // Needing a person drops cached access tokens.
    s.set_connection_state(c.id, ConnectionState::ReauthRequired, Some("AADSTS70008: expired")).unwrap();
    assert!(s.cached_token(c.id, "https://graph.microsoft.com").unwrap().is_none());
    let c3 = s.connection(c.id).unwrap().unwrap();
    assert_eq!(c3.state, ConnectionState::ReauthRequired);
    assert_eq!(c3.last_error.as_deref(), Some("AADSTS70008: expired"));
}

#[test]
fn names_are_unique() {
    let (_d, s) = store();
    connection(&s);
    let again =
        s.add_tenant(&NewTenant { name: "contoso".into(), provider: "microsoft365".into(), ..Default::default() });
    assert!(matches!(again, Err(StoreError::Exists { what: "tenant", .. })));
}

#[test]
fn every_sealed_value_is_listed_and_replaced_in_place() {
    let (_d, s) = store();
    let c = connection(&s);
    s.set_tenant_credentials(c.tenant_id, Some(b"secret-1"), Some(b"cert-1")).unwrap();
    s.put_token(
        c.id,
        "https://graph.microsoft.com",
        &CachedToken { sealed_token: b"at-1".to_vec(), expires_at: "2999-01-01T00:00:00Z".into() },
    )
    .unwrap();
    s.create_auth_flow(&flow(c.id, "st", "2999-01-01T00:00:00Z")).unwrap();
    let mailbox = s
        .add_mailbox(&NewMailbox {
            name: "desk".into(),
            kind: MailboxKind::Imap,
            config: serde_json::json!({}),
            sealed_secret: Some(b"pw-1".to_vec()),
            connection_id: None,
            poll_seconds: 60,
            max_message_bytes: 1 << 20,
        })
        .unwrap();

    let values = s.sealed_values().unwrap();
    let kinds: Vec<&SealedRef> = values.iter().map(|v| &v.at).collect();
    assert!(kinds.contains(&&SealedRef::MailboxPassword { mailbox_id: mailbox.id, mailbox_name: "desk".into() }));
    assert!(kinds.contains(&&SealedRef::TenantSecret { tenant_id: c.tenant_id }));
    assert!(kinds.contains(&&SealedRef::TenantCertificate { tenant_id: c.tenant_id }));
    assert!(
        kinds
            .contains(&&SealedRef::AccessToken { connection_id: c.id, resource: "https://graph.microsoft.com".into() })
    );
    assert!(kinds.contains(&&SealedRef::AuthFlowVerifier { state: "st".into() }));
    assert_eq!(values.len(), 5, "no refresh token yet: {kinds:?}");

    let replaced: Vec<Resealed> =
        values.iter().map(|v| Resealed { old: v.clone(), new: [&v.sealed[..], b"+new"].concat() }).collect();
    // Meanwhile `serve` renews the access token: the newer one must stay.
    s.put_token(
        c.id,
        "https://graph.microsoft.com",
        &CachedToken { sealed_token: b"at-2".to_vec(), expires_at: "2999-01-01T00:00:00Z".into() },
    )
    .unwrap();
    assert_eq!(s.replace_sealed(&replaced).unwrap(), 4, "all but the one changed meanwhile");
    assert_eq!(s.mailbox_secret(mailbox.id).unwrap().unwrap(), b"pw-1+new");
    assert_eq!(s.tenant_secret(c.tenant_id).unwrap().unwrap(), b"secret-1+new");
    assert_eq!(s.tenant_certificate(c.tenant_id).unwrap().unwrap(), b"cert-1+new");
    assert_eq!(
        s.cached_token(c.id, "https://graph.microsoft.com").unwrap().unwrap().sealed_token,
        b"at-2",
        "a token rotated while re-sealing is not put back"
    );
    assert_eq!(s.take_auth_flow("st").unwrap().unwrap().sealed_verifier, [1, 2, 3, b'+', b'n', b'e', b'w']);
}
