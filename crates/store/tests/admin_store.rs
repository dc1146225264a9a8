//! Administrators and sessions, on a real SQLite file.

use std::time::Duration;

use mailrobot_store::*;

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("robot.db")).unwrap();
    (dir, store)
}

#[test]
fn administrators_are_unique_by_email_in_any_case() {
    let (_d, s) = store();
    let ada = s.add_admin("ada@contoso.test", "$argon2id$hash").unwrap();
    assert!(matches!(s.add_admin("ADA@Contoso.test", "x"), Err(StoreError::Exists { .. })));
    let (found, hash) = s.admin_for_sign_in("Ada@contoso.TEST").unwrap().unwrap();
    assert_eq!((found.id, hash.as_str()), (ada.id, "$argon2id$hash"));
    assert_eq!(s.admins().unwrap().len(), 1);
    assert!(s.remove_admin("ada@contoso.test").unwrap());
    assert!(!s.remove_admin("ada@contoso.test").unwrap());
    assert!(s.admin_for_sign_in("ada@contoso.test").unwrap().is_none());
}

#[test]
fn sessions_expire_and_end_with_a_new_password_or_the_administrator() {
    let (_d, s) = store();
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
