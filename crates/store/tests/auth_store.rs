//! The service-connection side of the store: single-use flows, the refresh
//! lock, the token cache, and what state changes clear — on SQLite and on
//! PostgreSQL, where several nodes share the database.

use mailrobot_store::*;

fn connection<S: AuthStore>(store: &S) -> Connection {
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

fn auth_flows_are_single_use<S: AuthStore>(s: &S) {
    let c = connection(s);
    s.create_auth_flow(&flow(c.id, "abc", "2999-01-01T00:00:00Z")).unwrap();
    let taken = s.take_auth_flow("abc").unwrap().expect("the flow");
    assert_eq!(taken.connection_id, c.id);
    assert!(s.take_auth_flow("abc").unwrap().is_none(), "a replayed state finds nothing");
    assert!(s.take_auth_flow("never-issued").unwrap().is_none());
}

fn expired_flows_are_swept<S: AuthStore>(s: &S) {
    let c = connection(s);
    s.create_auth_flow(&flow(c.id, "old", "2000-01-01T00:00:00Z")).unwrap();
    s.create_auth_flow(&flow(c.id, "new", "2999-01-01T00:00:00Z")).unwrap();
    assert!(s.take_auth_flow("old").unwrap().is_none());
    assert!(s.take_auth_flow("new").unwrap().is_some());
}

fn the_refresh_lock_has_one_holder_until_released_or_expired<S: AuthStore>(s: &S) {
    let c = connection(s);
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

fn authorization_rotation_and_blocking_states<S: AuthStore>(s: &S) {
    let c = connection(s);
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

fn names_are_unique<S: AuthStore>(s: &S) {
    connection(s);
    let again =
        s.add_tenant(&NewTenant { name: "contoso".into(), provider: "microsoft365".into(), ..Default::default() });
    assert!(matches!(again, Err(StoreError::Exists { what: "tenant", .. })));
}

fn every_sealed_value_is_listed_and_replaced_in_place<S: AuthStore + SealedStore + Store>(s: &S) {
    let c = connection(s);
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

/// Nodes (here threads, each on its own database session) asking for the same
/// refresh lock at once: exactly one gets it, and it stays its until released.
fn the_refresh_lock_has_one_holder_among_concurrent_owners<S: AuthStore>(s: &S) {
    let c = connection(s);
    let taken: Vec<bool> = std::thread::scope(|scope| {
        let tries: Vec<_> = (0..8)
            .map(|i| {
                scope.spawn(move || s.try_lock_refresh(c.id, &format!("node-{i}"), "2999-01-01T00:00:00Z").unwrap())
            })
            .collect();
        tries.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(taken.iter().filter(|t| **t).count(), 1, "one holder: {taken:?}");
    let holder = format!("node-{}", taken.iter().position(|t| *t).unwrap());
    let other = if holder == "node-0" { "node-1" } else { "node-0" };
    assert!(!s.try_lock_refresh(c.id, other, "2999-01-01T00:00:00Z").unwrap());
    s.unlock_refresh(c.id, other).unwrap();
    assert!(!s.try_lock_refresh(c.id, other, "2999-01-01T00:00:00Z").unwrap(), "only the holder releases");
    s.unlock_refresh(c.id, &holder).unwrap();
    assert!(s.try_lock_refresh(c.id, other, "2999-01-01T00:00:00Z").unwrap(), "released: the next one takes it");
    // Each connection has a lock of its own.
    let second = s
        .add_connection(&NewConnection {
            name: "desk-2".into(),
            tenant_id: c.tenant_id,
            capability: Capability::Ews,
            mode: Mode::Application,
            scopes: vec![],
        })
        .unwrap();
    assert!(s.try_lock_refresh(second.id, &holder, "2999-01-01T00:00:00Z").unwrap());
    assert!(!s.try_lock_refresh(9999, &holder, "2999-01-01T00:00:00Z").unwrap(), "no such connection");
}

/// A redirect delivered twice at once (two nodes, two requests): one of them
/// gets the flow.
fn an_auth_flow_is_taken_once_by_concurrent_takers<S: AuthStore>(s: &S) {
    let c = connection(s);
    s.create_auth_flow(&flow(c.id, "race", "2999-01-01T00:00:00Z")).unwrap();
    let taken: Vec<Option<AuthFlow>> = std::thread::scope(|scope| {
        let takers: Vec<_> = (0..8).map(|_| scope.spawn(|| s.take_auth_flow("race").unwrap())).collect();
        takers.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let got: Vec<&AuthFlow> = taken.iter().flatten().collect();
    assert_eq!(got.len(), 1, "single use");
    let f = got[0];
    assert_eq!(
        (f.state.as_str(), f.connection_id, f.sealed_verifier.as_slice(), f.nonce.as_str(), f.initiator.as_str()),
        ("race", c.id, &[1u8, 2, 3][..], "n", "cli")
    );
    assert_eq!(f.redirect_uri, "http://127.0.0.1:8025/wm/externalAuth/redirect.html");
    assert_eq!((f.created_at.as_str(), f.expires_at.as_str()), ("2026-11-26T10:00:00Z", "2999-01-01T00:00:00Z"));
    // The same state again is refused while the first is pending.
    s.create_auth_flow(&flow(c.id, "dup", "2999-01-01T00:00:00Z")).unwrap();
    assert!(s.create_auth_flow(&flow(c.id, "dup", "2999-01-01T00:00:00Z")).is_err());
    assert!(s.take_auth_flow("dup").unwrap().is_some());
}

fn tenants_keep_every_setting_and_credentials_separately<S: AuthStore>(s: &S) {
    let plain = s
        .add_tenant(&NewTenant {
            name: "plain".into(),
            provider: "oauth2".into(),
            client_id: "cid".into(),
            authorize_url: Some("http://127.0.0.1:9000/authorize".into()),
            token_url: Some("http://127.0.0.1:9000/token".into()),
            allow_plaintext: true,
            ..Default::default()
        })
        .unwrap();
    assert!(plain.allow_plaintext);
    assert!(!plain.has_secret && !plain.has_certificate);
    assert_eq!(plain.secret_set_at, None, "no secret, no time it was set");
    assert_eq!(plain.token_url.as_deref(), Some("http://127.0.0.1:9000/token"));
    assert_eq!(s.tenant_secret(plain.id).unwrap(), None);
    assert_eq!(s.tenant_certificate(plain.id).unwrap(), None);

    let sealed = s
        .add_tenant(&NewTenant {
            name: "sealed".into(),
            provider: "microsoft365".into(),
            client_id: "cid-2".into(),
            directory: Some("contoso.com".into()),
            graph_url: Some("https://graph.microsoft.com".into()),
            sealed_secret: Some(b"secret".to_vec()),
            secret_expires_at: Some("2027-01-01T00:00:00Z".into()),
            sealed_certificate: Some(b"cert".to_vec()),
            certificate_info: Some("CN=robot".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(!sealed.allow_plaintext);
    assert!(sealed.has_secret && sealed.has_certificate);
    assert_eq!(sealed.secret_set_at.as_deref(), Some(sealed.created_at.as_str()));
    assert_eq!(s.tenant_secret(sealed.id).unwrap().unwrap(), b"secret");
    assert_eq!(s.tenant_certificate(sealed.id).unwrap().unwrap(), b"cert");
    assert_eq!(s.tenant_by_name("sealed").unwrap().unwrap().certificate_info.as_deref(), Some("CN=robot"));
    assert!(s.tenant_by_name("nobody").unwrap().is_none());
    assert!(s.tenant(9999).unwrap().is_none());
    let names: Vec<String> = s.tenants().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["plain", "sealed"], "in the order they were added");

    // Only the secret: the certificate stays.
    s.set_tenant_credentials(plain.id, Some(b"secret-2"), None).unwrap();
    let plain2 = s.tenant(plain.id).unwrap().unwrap();
    assert!(plain2.has_secret && !plain2.has_certificate);
    assert!(plain2.secret_set_at.is_some());
    s.set_tenant_credentials(sealed.id, None, Some(b"cert-2")).unwrap();
    assert_eq!(s.tenant_secret(sealed.id).unwrap().unwrap(), b"secret");
    assert_eq!(s.tenant_certificate(sealed.id).unwrap().unwrap(), b"cert-2");

    // An update drops the tenant's cached tokens, and only the tenant's.
    let mine = s
        .add_connection(&NewConnection {
            name: "mine".into(),
            tenant_id: sealed.id,
            capability: Capability::Graph,
            mode: Mode::Application,
            scopes: vec!["https://graph.microsoft.com/.default".into()],
        })
        .unwrap();
    let theirs = s
        .add_connection(&NewConnection {
            name: "theirs".into(),
            tenant_id: plain.id,
            capability: Capability::Imap,
            mode: Mode::Delegated,
            scopes: vec![],
        })
        .unwrap();
    let token = CachedToken { sealed_token: b"at".to_vec(), expires_at: "2999-01-01T00:00:00Z".into() };
    s.put_token(mine.id, "r", &token).unwrap();
    s.put_token(theirs.id, "r", &token).unwrap();
    let updated = s
        .update_tenant(
            sealed.id,
            &TenantUpdate { client_id: "cid-3".into(), directory: None, certificate_info: None, ..Default::default() },
        )
        .unwrap();
    assert_eq!((updated.client_id.as_str(), updated.directory.as_deref()), ("cid-3", None));
    assert_eq!(updated.graph_url, None, "every setting is replaced");
    assert_eq!(updated.certificate_info.as_deref(), Some("CN=robot"), "no new certificate: its facts stay");
    assert!(updated.has_secret, "credentials stay");
    assert!(s.cached_token(mine.id, "r").unwrap().is_none());
    assert!(s.cached_token(theirs.id, "r").unwrap().is_some());
    let updated = s
        .update_tenant(
            sealed.id,
            &TenantUpdate { client_id: "cid-3".into(), certificate_info: Some("CN=new".into()), ..Default::default() },
        )
        .unwrap();
    assert_eq!(updated.certificate_info.as_deref(), Some("CN=new"));
    assert!(matches!(s.update_tenant(9999, &TenantUpdate::default()), Err(StoreError::Corrupt(_))));
}

fn connections_keep_scopes_and_names<S: AuthStore>(s: &S) {
    let c = connection(s);
    assert_eq!(c.scopes, ["https://graph.microsoft.com/Mail.ReadWrite.Shared", "offline_access"]);
    assert_eq!((c.capability, c.mode, c.has_refresh_token), (Capability::Graph, Mode::Delegated, false));
    assert_eq!(c.created_at, c.updated_at);
    let again = s.add_connection(&NewConnection {
        name: "desk".into(),
        tenant_id: c.tenant_id,
        capability: Capability::Pop,
        mode: Mode::Delegated,
        scopes: vec![],
    });
    assert!(matches!(again, Err(StoreError::Exists { what: "connection", .. })));
    let by_name = s.connection_by_name("desk").unwrap().unwrap();
    assert_eq!((by_name.id, by_name.scopes.len()), (c.id, 2));
    assert!(s.connection_by_name("nobody").unwrap().is_none());
    assert!(s.connection(9999).unwrap().is_none());
    assert_eq!(s.connections().unwrap().len(), 1);
    assert_eq!(s.refresh_token(c.id).unwrap(), None);
    assert_eq!(s.refresh_token(9999).unwrap(), None);

    // A refresh without a new refresh token keeps the old one, and makes a
    // failed connection ready again.
    s.complete_authorization(c.id, &Authorization { sealed_refresh_token: Some(b"rt".to_vec()), ..Default::default() })
        .unwrap();
    s.set_connection_state(c.id, ConnectionState::SecretExpired, Some("AADSTS7000222")).unwrap();
    let token = CachedToken { sealed_token: b"at".to_vec(), expires_at: "2999-01-01T00:00:00Z".into() };
    s.store_refresh(c.id, None, "r", &token).unwrap();
    let c2 = s.connection(c.id).unwrap().unwrap();
    assert_eq!((c2.state, c2.last_error.as_deref(), c2.has_refresh_token), (ConnectionState::Ready, None, true));
    assert_eq!(s.refresh_token(c.id).unwrap().unwrap(), b"rt");
    // A ready state with a reason keeps the cached tokens.
    s.set_connection_state(c.id, ConnectionState::Ready, Some("slow")).unwrap();
    assert!(s.cached_token(c.id, "r").unwrap().is_some());
    s.forget_tokens(c.id).unwrap();
    assert!(s.cached_token(c.id, "r").unwrap().is_none());
}

fn service_scopes_are_seeded_once_and_listed_in_capability_order<S: AuthStore>(s: &S) {
    let scopes = |capability, mode, scopes: &[&str]| ServiceScopes {
        capability,
        mode,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    };
    s.seed_service_scopes(&[
        scopes(Capability::Smtp, Mode::Delegated, &["smtp"]),
        scopes(Capability::Graph, Mode::Application, &["https://graph.microsoft.com/.default"]),
        scopes(Capability::Graph, Mode::Delegated, &["Mail.ReadWrite", "offline_access"]),
    ])
    .unwrap();
    s.set_service_scopes(&scopes(Capability::Smtp, Mode::Delegated, &["smtp", "offline_access"])).unwrap();
    // A second start seeds again: what is stored stays, what is new comes.
    s.seed_service_scopes(&[
        scopes(Capability::Smtp, Mode::Delegated, &["smtp"]),
        scopes(Capability::Ews, Mode::Delegated, &["ews"]),
    ])
    .unwrap();
    assert_eq!(
        s.service_scopes().unwrap(),
        [
            scopes(Capability::Graph, Mode::Delegated, &["Mail.ReadWrite", "offline_access"]),
            scopes(Capability::Graph, Mode::Application, &["https://graph.microsoft.com/.default"]),
            scopes(Capability::Ews, Mode::Delegated, &["ews"]),
            scopes(Capability::Smtp, Mode::Delegated, &["smtp", "offline_access"]),
        ]
    );
}

fn refresh_tokens_are_resealed_unless_rotated_meanwhile<S: AuthStore + SealedStore + Store>(s: &S) {
    let c = connection(s);
    s.complete_authorization(
        c.id,
        &Authorization { sealed_refresh_token: Some(b"rt-1".to_vec()), ..Default::default() },
    )
    .unwrap();
    let mailbox = s
        .add_mailbox(&NewMailbox {
            name: "shared".into(),
            kind: MailboxKind::Imap,
            config: serde_json::json!({}),
            sealed_secret: None,
            connection_id: None,
            poll_seconds: 60,
            max_message_bytes: 1 << 20,
        })
        .unwrap();
    s.set_mailbox_connection(mailbox.id, Some(c.id)).unwrap();
    assert_eq!(s.mailbox(mailbox.id).unwrap().connection_id, Some(c.id));
    s.set_mailbox_connection(mailbox.id, None).unwrap();
    assert_eq!(s.mailbox(mailbox.id).unwrap().connection_id, None);

    let values = s.sealed_values().unwrap();
    assert_eq!(values, [SealedValue { at: SealedRef::RefreshToken { connection_id: c.id }, sealed: b"rt-1".to_vec() }]);
    let resealed = vec![Resealed { old: values[0].clone(), new: b"rt-1+new".to_vec() }];
    assert_eq!(s.replace_sealed(&resealed).unwrap(), 1);
    assert_eq!(s.refresh_token(c.id).unwrap().unwrap(), b"rt-1+new");
    // Read before `serve` rotated it: the rotated token stays.
    let token = CachedToken { sealed_token: b"at".to_vec(), expires_at: "2999-01-01T00:00:00Z".into() };
    s.store_refresh(c.id, Some(b"rt-2"), "r", &token).unwrap();
    assert_eq!(s.replace_sealed(&resealed).unwrap(), 0);
    assert_eq!(s.refresh_token(c.id).unwrap().unwrap(), b"rt-2");
}

mailrobot_store::on_both_backends!(
    auth_flows_are_single_use,
    expired_flows_are_swept,
    the_refresh_lock_has_one_holder_until_released_or_expired,
    authorization_rotation_and_blocking_states,
    names_are_unique,
    every_sealed_value_is_listed_and_replaced_in_place,
    the_refresh_lock_has_one_holder_among_concurrent_owners,
    an_auth_flow_is_taken_once_by_concurrent_takers,
    tenants_keep_every_setting_and_credentials_separately,
    connections_keep_scopes_and_names,
    service_scopes_are_seeded_once_and_listed_in_capability_order,
    refresh_tokens_are_resealed_unless_rotated_meanwhile,
);
