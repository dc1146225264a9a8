//! The real-client check for EWS: `exchangelib` (PyPI) against the emulator's
//! `/EWS/Exchange.asmx` over HTTPS, with a fixed server version (no autodiscover). App-only with
//! impersonation (exchangelib fetches its own token from the emulator) and delegated, read receipts
//! with and without `SuppressReadReceipts` (by schema version); and, with the
//! emulator switched to Exchange Server on-premises, NTLM (requests_ntlm, pyspnego) and Basic with
//! a user name and password. Fails (never skips) when Python or the package cannot be set up.

mod common;

use common::mail::*;
use common::python::{Script, venv_python};
use common::*;
use m365_emulator::{Emulator, EmulatorConfig, EwsAuthSpec, MailboxGrant};
use serde_json::json;

const EXCHANGELIB_VERSION: &str = "5.6.0";

#[test]
fn exchangelib_reads_and_changes_an_inbox_over_https() {
    let python = venv_python("exchangelib", EXCHANGELIB_VERSION);
    let emu = Emulator::start(EmulatorConfig::https(mail_setup())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, emu.ca_pem().unwrap()).unwrap();
    let delivered: Vec<_> = (0..5)
        .map(|n| {
            emu.deliver(m365_emulator::DeliverSpec {
                mailbox: SHARED.into(),
                folder: Some("inbox".into()),
                mime: mime(n),
                received_at: chrono::DateTime::from_timestamp(1_750_000_000 + n as i64 * 60, 0),
                is_read: false,
            })
            .unwrap()
        })
        .collect();
    emu.deliver_mime(USER, "inbox", &mime(42)).unwrap();
    let user_token = user_token(&emu, USER, &["https://outlook.office365.com/EWS.AccessAsUser.All"]);
    let mut script = Script::start(
        &python,
        "exchangelib_check.py",
        &ca,
        &json!({
            "ews_url": emu.ews_url(), "token_url": emu.token_url(TENANT_ID), "tenant_id": TENANT_ID,
            "client_id": DAEMON_APP, "client_secret": DAEMON_SECRET, "shared": SHARED,
            "user": USER, "user_token": user_token,
        }),
    );
    let r = script.recv();
    assert_eq!(r["exchangelib_version"], EXCHANGELIB_VERSION);
    assert_eq!(r["inbox_name"], "Inbox");
    assert_eq!(r["subjects"], json!(["Request 4", "Request 3", "Request 2", "Request 1", "Request 0"]));
    let ews = |id: &str| id.replace('-', "+").replace('_', "/");
    let first = r["sync_first"].as_array().unwrap();
    assert_eq!(first.len(), 5, "{r}");
    for (c, m) in first.iter().zip(&delivered) {
        assert_eq!(c, &json!(["create", ews(&m.id)]));
    }
    assert_eq!(r["mime"], json!([mime(1)]));
    assert_eq!(r["moved_old_id"], json!(ews(&delivered[2].id)));
    let archived = emu.messages(SHARED, "archive").unwrap();
    assert_eq!(archived.len(), 1);
    assert_eq!(r["moved_new_id"], json!(ews(&archived[0].id)));
    assert_eq!(
        r["sync_second"],
        json!([["read_flag_change", ews(&delivered[0].id), true], ["delete", ews(&delivered[2].id), null]]),
    );
    assert!(emu.messages(SHARED, "inbox").unwrap().iter().find(|m| m.id == delivered[0].id).unwrap().is_read);
    assert_eq!(r["created_folder"], true);
    assert_eq!(r["children"], json!(["Processed"]));
    let d = script.recv();
    assert_eq!(d["delegated_subjects"], json!(["Request 42"]));
    assert!(emu.stats().requests("ews") >= 8);

    // Read receipts: exchangelib suppresses them from Exchange2013_SP1 on (an Exchange2016 account)
    // and cannot before (an Exchange2013 account), so only the latter's mails get one.
    for n in 50..54 {
        emu.deliver_mime(USER, "inbox", &mime_asking_receipt(n)).unwrap();
    }
    script.send(&json!({}));
    assert_eq!(script.recv()["receipt_versions"], json!(["Exchange2013", "Exchange2016"]));
    let sent: Vec<(String, String)> =
        emu.read_receipts(Some(USER)).unwrap().into_iter().map(|r| (r.internet_message_id, r.kind)).collect();
    assert_eq!(
        sent,
        [("<req50@example.test>".to_string(), "read".to_string()), ("<req52@example.test>".into(), "not-read".into())]
    );
}

#[test]
fn exchangelib_signs_in_on_premises_with_ntlm_and_basic() {
    let python = venv_python("exchangelib", EXCHANGELIB_VERSION);
    let emu = Emulator::start(EmulatorConfig::https(mail_setup())).unwrap();
    // Exchange Server on-premises: user names and passwords, no bearer tokens.
    emu.set_ews_auth(EwsAuthSpec::on_premises()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, emu.ca_pem().unwrap()).unwrap();
    for n in [42, 43] {
        emu.deliver_mime(USER, "inbox", &mime(n)).unwrap();
    }
    emu.deliver_mime(SHARED, "inbox", &mime(7)).unwrap();
    emu.grant_mailbox_access(MailboxGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), username: USER.into() })
        .unwrap();
    let case = |name: &str, auth: &str, username: &str, password: &str, mailbox: &str| json!({"name": name, "auth": auth, "username": username, "password": password, "mailbox": mailbox});
    let cases = [
        case("ntlm_domain_user", "NTLM", "CONTOSO\\robot", PASSWORD, USER),
        case("ntlm_upn_granted_shared", "NTLM", USER, PASSWORD, SHARED),
        case("basic_upn", "BASIC", USER, PASSWORD, USER),
        case("basic_plain_name", "BASIC", "robot", PASSWORD, USER),
        case("ntlm_shared_without_grant", "NTLM", ALICE, PASSWORD, SHARED),
        case("ntlm_wrong_password", "NTLM", "CONTOSO\\robot", "wrong", USER),
        case("basic_wrong_password", "BASIC", USER, "wrong", USER),
    ];
    let mut script =
        Script::start(&python, "exchangelib_onprem.py", &ca, &json!({"ews_url": emu.ews_url(), "cases": cases}));
    let v = script.recv();
    assert_eq!(v["exchangelib_version"], EXCHANGELIB_VERSION);
    let mut got = std::collections::BTreeMap::new();
    for _ in 0..cases.len() {
        let r = script.recv();
        got.insert(r["case"].as_str().unwrap().to_string(), r);
    }
    let subjects = |c: &str| got[c]["subjects"].clone();
    let error = |c: &str| got[c]["error"].clone();
    assert_eq!(subjects("ntlm_domain_user"), json!(["Request 42", "Request 43"]), "{}", got["ntlm_domain_user"]);
    assert_eq!(subjects("ntlm_upn_granted_shared"), json!(["Request 7"]), "{}", got["ntlm_upn_granted_shared"]);
    assert_eq!(subjects("basic_upn"), json!(["Request 42", "Request 43"]), "{}", got["basic_upn"]);
    assert_eq!(subjects("basic_plain_name"), json!(["Request 42", "Request 43"]), "{}", got["basic_plain_name"]);
    assert_eq!(error("ntlm_shared_without_grant"), "ErrorAccessDenied", "{}", got["ntlm_shared_without_grant"]);
    assert_eq!(error("ntlm_wrong_password"), "UnauthorizedError", "{}", got["ntlm_wrong_password"]);
    assert_eq!(error("basic_wrong_password"), "UnauthorizedError", "{}", got["basic_wrong_password"]);
    // NTLM ran its handshake: each NTLM request costs 401 (no credentials), 401 (challenge), then the answer.
    let ews = &emu.stats().endpoints["ews"];
    assert!(ews.status["401"] >= 6, "{ews:?}");
}
