//! Administrators, sessions and API tokens, on a real SQLite file and a real
//! PostgreSQL database.

use std::time::Duration;

use mailrobot_store::*;

fn administrators_are_unique_by_email_in_any_case<S: AdminStore>(s: &S) {
    let ada = s.add_admin("ada@contoso.test", "$argon2id$hash").unwrap();
    assert!(matches!(s.add_admin("ADA@Contoso.test", "x"), Err(StoreError::Exists { .. })));
    let (found, hash) = s.admin_for_sign_in("Ada@contoso.TEST").unwrap().unwrap();
    assert_eq!((found.id, hash.as_str()), (ada.id, "$argon2id$hash"));
    assert_eq!(s.admins().unwrap().len(), 1);
    assert!(s.remove_admin("ada@contoso.test").unwrap());
    assert!(!s.remove_admin("ada@contoso.test").unwrap());
    assert!(s.admin_for_sign_in("ada@contoso.test").unwrap().is_none());
}

fn sessions_expire_and_end_with_a_new_password_or_the_administrator<S: AdminStore>(s: &S) {
    let ada = s.add_admin("ada@contoso.test", "h1").unwrap();
    s.create_session("t1", ada.id, "csrf-1", Duration::from_secs(3600)).unwrap();
    let session = s.session("t1").unwrap().unwrap();
    assert_eq!((session.admin.email.as_str(), session.csrf_token.as_str()), ("ada@contoso.test", "csrf-1"));
    assert!(session.admin.last_sign_in_at.is_some());
    assert!(s.session("unknown").unwrap().is_none());

    s.create_session("gone", ada.id, "c", Duration::ZERO).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert!(s.session("gone").unwrap().is_none(), "expired");

    s.delete_session("t1").unwrap();
    assert!(s.session("t1").unwrap().is_none(), "signed out");

    s.create_session("t2", ada.id, "c", Duration::from_secs(3600)).unwrap();
    assert!(s.set_admin_password("ada@contoso.test", "h2").unwrap());
    assert!(s.session("t2").unwrap().is_none(), "a new password ends every session");

    s.create_session("t3", ada.id, "c", Duration::from_secs(3600)).unwrap();
    s.remove_admin("ada@contoso.test").unwrap();
    assert!(s.session("t3").unwrap().is_none(), "a removed administrator has no sessions");
}

/// SQLite compares e-mail addresses without case by collation; PostgreSQL by
/// `lower()`: every way in by address must ignore case, and the address keeps
/// the case it was added with.
fn every_lookup_by_email_ignores_case<S: AdminStore>(s: &S) {
    let ada = s.add_admin("Ada@Contoso.test", "h1").unwrap();
    assert_eq!(ada.email, "Ada@Contoso.test");
    assert_eq!(ada.last_sign_in_at, None);
    let grace = s.add_admin("grace@contoso.test", "g").unwrap();
    assert!(grace.id > ada.id);
    assert!(matches!(s.add_admin("GRACE@CONTOSO.TEST", "x"), Err(StoreError::Exists { what: "administrator", .. })));
    assert_eq!(s.admins().unwrap(), [ada.clone(), grace.clone()], "in the order they were added");

    s.create_session("t1", ada.id, "c", Duration::from_secs(3600)).unwrap();
    s.create_session("g1", grace.id, "c", Duration::from_secs(3600)).unwrap();
    assert!(s.set_admin_password("ada@contoso.TEST", "h2").unwrap());
    assert!(!s.set_admin_password("nobody@contoso.test", "h2").unwrap());
    let (found, hash) = s.admin_for_sign_in("ADA@CONTOSO.TEST").unwrap().unwrap();
    assert_eq!((found.email.as_str(), hash.as_str()), ("Ada@Contoso.test", "h2"));
    assert!(found.last_sign_in_at.is_some());
    assert!(s.session("t1").unwrap().is_none(), "a new password ends the sessions");
    assert!(s.session("g1").unwrap().is_some(), "of that administrator only");

    assert!(s.remove_admin("ADA@contoso.test").unwrap());
    assert_eq!(s.admins().unwrap().len(), 1);
    // The address is free again, in any case.
    let again = s.add_admin("ada@contoso.test", "h3").unwrap();
    assert_ne!(again.id, ada.id);
}

/// Two sign-ups of one address at once (two nodes): one is added.
fn concurrent_additions_of_one_address_add_one<S: AdminStore>(s: &S) {
    let results: Vec<bool> = std::thread::scope(|scope| {
        let adds: Vec<_> = ["ada@contoso.test", "ADA@contoso.test", "Ada@Contoso.Test", "ada@CONTOSO.test"]
            .into_iter()
            .map(|email| {
                scope.spawn(move || match s.add_admin(email, "h") {
                    Ok(_) => true,
                    Err(StoreError::Exists { .. }) => false,
                    Err(e) => panic!("{e}"),
                })
            })
            .collect();
        adds.into_iter().map(|a| a.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|added| **added).count(), 1, "{results:?}");
    assert_eq!(s.admins().unwrap().len(), 1);
}

fn api_tokens_are_unique_by_name_and_found_by_hash<S: AdminStore>(s: &S) {
    let ci = s.add_api_token("ci", "sha-ci", true).unwrap();
    assert_eq!((ci.name.as_str(), ci.read_only), ("ci", true));
    let ops = s.add_api_token("ops", "sha-ops", false).unwrap();
    assert!(!ops.read_only);
    assert!(matches!(s.add_api_token("ci", "sha-other", false), Err(StoreError::Exists { what: "API token", .. })));
    assert_eq!(s.api_tokens().unwrap(), [ci.clone(), ops.clone()]);
    assert_eq!(s.api_token("sha-ci").unwrap(), Some(ci));
    assert_eq!(s.api_token("sha-ops").unwrap(), Some(ops));
    assert_eq!(s.api_token("ci").unwrap(), None, "found by the hash, not the name");
    assert!(s.revoke_api_token("ci").unwrap());
    assert!(!s.revoke_api_token("ci").unwrap());
    assert_eq!(s.api_token("sha-ci").unwrap(), None);
    assert_eq!(s.api_tokens().unwrap().len(), 1);
}

mailrobot_store::on_both_backends!(
    administrators_are_unique_by_email_in_any_case,
    sessions_expire_and_end_with_a_new_password_or_the_administrator,
    every_lookup_by_email_ignores_case,
    concurrent_additions_of_one_address_add_one,
    api_tokens_are_unique_by_name_and_found_by_hash,
);
