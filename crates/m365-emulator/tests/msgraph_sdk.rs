//! The real-client check for Graph mail: Microsoft's `msgraph-sdk` for Python (PyPI) lists the
//! inbox page by page and follows delta against the emulator over HTTPS, sees an expired delta
//! link answered 410 `SyncStateNotFound`, and reads the items of a `$batch` throttled one by one
//! (429 with their own Retry-After) while another client holds requests on the mailbox. Fails
//! (never skips) when Python or the package cannot be set up.

mod common;

use common::mail::*;
use common::python::{Script, ensure_module, venv_python};
use common::*;
use m365_emulator::{Emulator, EmulatorConfig, MailboxSpec};
use serde_json::json;

const MSGRAPH_VERSION: &str = "1.65.0";
const SLOW: &str = "slow@contoso.test";

#[test]
fn msgraph_sdk_lists_and_follows_delta_over_https() {
    let python = venv_python("msgraph-sdk", MSGRAPH_VERSION);
    // msgraph-core's batch classes import `deprecated` without declaring it
    // (microsoftgraph/msgraph-sdk-python-core#1030; the workaround given there).
    ensure_module(&python, "deprecated", "Deprecated==1.2.18");
    let mut setup = mail_setup();
    // Each request on this mailbox takes 300 ms while it holds a concurrency slot.
    setup.mailboxes.push(MailboxSpec { latency_ms: 300, ..MailboxSpec::new(DOMAIN, SLOW) });
    let emu = Emulator::start(EmulatorConfig::https(setup)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, emu.ca_pem().unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let token = rt.block_on(async {
        let c = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(emu.ca_pem().unwrap().as_bytes()).unwrap())
            .build()
            .unwrap();
        let r: serde_json::Value = c
            .post(emu.token_url(DOMAIN))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", DAEMON_APP),
                ("client_secret", DAEMON_SECRET),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["access_token"].as_str().expect("a token").to_string()
    });
    let mut delivered = Vec::new();
    for n in 0..5 {
        delivered.push(
            emu.deliver(m365_emulator::DeliverSpec {
                mailbox: SHARED.into(),
                folder: Some("inbox".into()),
                mime: mime(n),
                received_at: chrono::DateTime::from_timestamp(1_750_000_000 + n as i64 * 60, 0),
                is_read: false,
            })
            .unwrap(),
        );
    }
    let mut script = Script::start(
        &python,
        "msgraph_check.py",
        &ca,
        &json!({"graph_url": emu.graph_url(), "token": token, "ca": ca, "mailbox": SHARED}),
    );
    assert_eq!(script.recv()["ready"], true);
    // Between the two delta rounds: one moved out, one read, one new.
    emu.deliver_mime(SHARED, "inbox", &mime(7)).unwrap();
    let rt_move = rt.block_on(async {
        let url = format!("{}/users/{SHARED}/messages/{}/move", emu.graph_url(), delivered[0].id);
        let c = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(emu.ca_pem().unwrap().as_bytes()).unwrap())
            .build()
            .unwrap();
        c.post(url).bearer_auth(&token).json(&json!({"destinationId": "archive"})).send().await.unwrap().status()
    });
    assert_eq!(rt_move.as_u16(), 201);
    script.send(&json!({}));
    let r = script.recv();
    assert_eq!(r["msgraph_sdk_version"], MSGRAPH_VERSION);
    assert_eq!(
        r["pages"],
        json!([["Request 4", "Request 3"], ["Request 2", "Request 1"], ["Request 0"]]),
        "newest first, pages of $top=2 followed through @odata.nextLink"
    );
    let first: Vec<&str> = r["delta_first"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(first.len(), 5);
    for m in &delivered {
        assert!(first.contains(&m.id.as_str()));
    }
    assert_eq!(r["delta_second"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["delta_removed"], json!([delivered[0].id]));
    let stats = emu.stats();
    assert!(stats.requests("graph_delta") >= 2);

    // An expired delta link: 410 Gone with Outlook's SyncStateNotFound, as the SDK reports it.
    emu.expire_delta_tokens(SHARED).unwrap();
    script.send(&json!({}));
    assert_eq!(script.recv()["expired"], json!({"status": 410, "code": "SyncStateNotFound"}));

    // Another client of the same app holds two of the four slots: of four items, which Graph runs
    // side by side, two find no slot and are answered 429 on their own, each with Retry-After.
    let hold = emu.hold_mail_slots(SLOW, DAEMON_APP, 2).unwrap();
    assert_eq!(hold.held(), 2);
    script.send(&json!({"mailbox": SLOW, "items": 4}));
    let items = script.recv()["batch"].clone();
    let items = items.as_object().unwrap();
    let mut statuses: Vec<u64> = items.values().map(|item| item["status"].as_u64().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 429, 429], "{items:?}");
    for item in items.values() {
        let retry_after = if item["status"] == 429 { json!("1") } else { json!(null) };
        assert_eq!(item["retry_after"], retry_after, "{items:?}");
    }
}
