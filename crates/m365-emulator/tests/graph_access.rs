//! Graph mail access: token checks, delegated permissions on own and others' mailboxes, mailbox
//! grants, application permissions and access policies, REST-disabled mailboxes, error shape,
//! $batch, throttling (concurrency limit) and injected faults.

mod common;

use common::mail::*;
use common::*;
use m365_emulator::{AccessPolicySpec, Emulator, EmulatorConfig, FaultSpec, MailboxGrant, MailboxSpec};
use reqwest::Method;
use serde_json::json;

const GRAPH: &str = "https://graph.microsoft.com";

fn inbox(emu: &Emulator, mailbox: &str) -> String {
    format!("{}/users/{mailbox}/mailFolders/inbox/messages", emu.graph_url())
}

#[tokio::test]
async fn tokens_are_checked() {
    let emu = start_mail();
    let url = inbox(&emu, USER);
    let r = client().get(&url).header("client-request-id", "my-id-1").send().await.unwrap();
    assert_eq!(r.headers()["client-request-id"], "my-id-1");
    assert!(r.headers().contains_key("request-id"));
    let (s, b) = (r.status().as_u16(), r.json().await.unwrap());
    assert_graph_error(s, &b, 401, "InvalidAuthenticationToken");
    assert_eq!(b["error"]["innerError"]["client-request-id"], "my-id-1");
    let (s, b) = gget(&url, "not.a.token").await;
    assert_graph_error(s, &b, 401, "InvalidAuthenticationToken");
    let ews = app_token(&emu, "https://outlook.office365.com").await;
    let (s, b) = gget(&url, &ews).await;
    assert_graph_error(s, &b, 401, "InvalidAuthenticationToken");
    let t = app_token(&emu, GRAPH).await;
    assert_eq!(gget(&url, &t).await.0, 200);
    emu.advance_clock(3600);
    let (s, b) = gget(&url, &t).await;
    assert_graph_error(s, &b, 401, "InvalidAuthenticationToken");
    assert!(b["error"]["message"].as_str().unwrap().contains("expired"));
}

#[tokio::test]
async fn delegated_access_needs_the_scope_and_a_grant_for_other_mailboxes() {
    let emu = start_mail();
    let shared = user_token(&emu, USER, &[GRAPH_SCOPE]);
    assert_eq!(gget(&inbox(&emu, USER), &shared).await.0, 200, "own mailbox with Mail.ReadWrite.Shared");
    assert_eq!(gget(&format!("{}/me/mailFolders/inbox/messages", emu.graph_url()), &shared).await.0, 200);
    let (s, b) = gget(&inbox(&emu, SHARED), &shared).await;
    assert_graph_error(s, &b, 403, "ErrorAccessDenied");
    assert_eq!(b["error"]["message"], "Access is denied. Check credentials and try again.");
    emu.grant_mailbox_access(MailboxGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), username: USER.into() })
        .unwrap();
    assert_eq!(gget(&inbox(&emu, SHARED), &shared).await.0, 200, "granted + .Shared");
    // Mail.Read reaches only the own mailbox, grant or not.
    let own_only = user_token(&emu, ALICE, &["https://graph.microsoft.com/Mail.Read"]);
    emu.grant_mailbox_access(MailboxGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), username: ALICE.into() })
        .unwrap();
    assert_eq!(gget(&inbox(&emu, ALICE), &own_only).await.0, 200);
    assert_eq!(gget(&inbox(&emu, SHARED), &own_only).await.0, 403);
    // Reading is not writing.
    let m = emu.deliver_mime(ALICE, "inbox", &mime(1)).unwrap();
    let url = format!("{}/users/{ALICE}/messages/{}", emu.graph_url(), m.id);
    let (s, _, b) = call(Method::PATCH, &url, &own_only, &[], Some(json!({"isRead": true}))).await;
    assert_graph_error(s, &b, 403, "ErrorAccessDenied");
    let (s, b) = gget(&inbox(&emu, "nobody@contoso.test"), &shared).await;
    assert_graph_error(s, &b, 404, "ErrorInvalidUser");
    let app = app_token(&emu, GRAPH).await;
    let (s, b) = gget(&format!("{}/me/messages", emu.graph_url()), &app).await;
    assert_graph_error(s, &b, 400, "BadRequest");
}

#[tokio::test]
async fn application_permissions_policies_and_rest_switch() {
    let emu = start_mail();
    let app = app_token(&emu, GRAPH).await;
    assert_eq!(gget(&inbox(&emu, SHARED), &app).await.0, 200);
    emu.set_access_policy(AccessPolicySpec {
        tenant: DOMAIN.into(),
        client_id: DAEMON_APP.into(),
        mailboxes: vec![USER.into()],
    })
    .unwrap();
    assert_eq!(gget(&inbox(&emu, USER), &app).await.0, 200);
    let (s, b) = gget(&inbox(&emu, SHARED), &app).await;
    assert_graph_error(s, &b, 403, "ErrorAccessDenied");
    assert_eq!(
        b["error"]["message"],
        "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings."
    );
    emu.set_rest_enabled(USER, false).unwrap();
    let (s, b) = gget(&inbox(&emu, USER), &app).await;
    assert_graph_error(s, &b, 404, "MailboxNotEnabledForRESTAPI");
    emu.set_rest_enabled(USER, true).unwrap();
    assert_eq!(gget(&inbox(&emu, USER), &app).await.0, 200);
}

#[tokio::test]
async fn batch_runs_items_with_dependencies_and_faults_of_their_own() {
    let emu = start_mail();
    let t = app_token(&emu, GRAPH).await;
    let m = emu.deliver_mime(USER, "inbox", &mime(1)).unwrap();
    emu.inject_fault(FaultSpec {
        endpoint: "graph_value".into(),
        status: Some(429),
        retry_after: Some(7),
        ..Default::default()
    })
    .unwrap();
    let body = json!({"requests": [
        {"id": "1", "method": "GET", "url": format!("/users/{USER}/mailFolders/inbox/messages?$select=subject")},
        {"id": "2", "method": "PATCH", "url": format!("/users/{USER}/messages/{}", m.id),
         "headers": {"Content-Type": "application/json"}, "body": {"isRead": true}},
        {"id": "3", "method": "GET", "url": format!("/users/{USER}/messages/{}/$value", m.id)},
        {"id": "4", "method": "GET", "url": format!("/users/{USER}/messages/AAMkAmissing"), "dependsOn": ["1"]},
        {"id": "5", "method": "GET", "url": format!("/users/{USER}/mailFolders/inbox"), "dependsOn": ["4"]},
    ]});
    let (s, _, b) = call(Method::POST, &format!("{}/$batch", emu.graph_url()), &t, &[], Some(body)).await;
    assert_eq!(s, 200, "{b}");
    let rs = b["responses"].as_array().unwrap();
    assert_eq!(rs.len(), 5);
    let by = |id: &str| rs.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(by("1")["status"], 200);
    assert_eq!(by("1")["body"]["value"][0]["subject"], "Request 1");
    assert_eq!(by("2")["status"], 200);
    assert_eq!(by("3")["status"], 429);
    assert_eq!(by("3")["headers"]["retry-after"], "7");
    assert_eq!(by("4")["status"], 400);
    assert_eq!(by("5")["status"], 424);
    assert_ne!(rs[0]["id"], "1", "answers are not in request order");
    assert!(emu.messages(USER, "inbox").unwrap()[0].is_read);
    assert_eq!(emu.stats().endpoints["graph_value"].status["429"], 1);
    let many: Vec<_> =
        (0..21).map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users/x/messages"})).collect();
    let (s, _, b) =
        call(Method::POST, &format!("{}/$batch", emu.graph_url()), &t, &[], Some(json!({"requests": many}))).await;
    assert_graph_error(s, &b, 400, "BadRequest");
}

/// An emulator whose mailbox `slow@contoso.test` takes `latency_ms` per request while it holds a
/// concurrency slot, with an app-only Graph token.
async fn slow_mailbox(latency_ms: u64) -> (Emulator, String) {
    let mut setup = mail_setup();
    setup.mailboxes.push(MailboxSpec { latency_ms, ..MailboxSpec::new(DOMAIN, SLOW) });
    let emu = Emulator::start(EmulatorConfig::http(setup)).unwrap();
    let t = app_token(&emu, GRAPH).await;
    (emu, t)
}

const SLOW: &str = "slow@contoso.test";

/// `n` GETs of the slow mailbox's inbox as `$batch` items `0`..`n`.
fn inbox_items(n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": format!("/users/{SLOW}/mailFolders/inbox/messages")}))
        .collect()
}

async fn batch(emu: &Emulator, t: &str, requests: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    let (s, _, b) =
        call(Method::POST, &format!("{}/$batch", emu.graph_url()), t, &[], Some(json!({ "requests": requests }))).await;
    assert_eq!(s, 200, "{b}");
    b["responses"].as_array().unwrap().clone()
}

fn status_of(responses: &[serde_json::Value], id: &str) -> u64 {
    responses.iter().find(|r| r["id"] == id).unwrap()["status"].as_u64().unwrap()
}

#[tokio::test]
async fn batch_items_run_four_at_a_time_each_holding_a_slot() {
    let (emu, t) = slow_mailbox(300).await;
    let started = std::time::Instant::now();
    let rs = batch(&emu, &t, inbox_items(8)).await;
    let took = started.elapsed();
    // Graph hands Outlook four items at a time, so a batch alone stays within the limit of 4...
    assert!(rs.iter().all(|r| r["status"] == 200), "{rs:?}");
    // ...and the items overlap: four in flight at once, eight in two rounds of 300 ms, not eight.
    assert_eq!(emu.stats().concurrency_peak(SLOW), 4);
    assert!(took < std::time::Duration::from_millis(1800), "8 items of 300 ms took {took:?}: not run side by side");
    assert!(took >= std::time::Duration::from_millis(600), "at most 4 at a time: {took:?}");
    assert_ne!(rs[0]["id"], "0", "answers are not in request order");
}

#[tokio::test]
async fn batch_items_meet_slots_another_client_holds_and_are_throttled_one_by_one() {
    let (emu, t) = slow_mailbox(300).await;
    let hold = emu.hold_mail_slots(SLOW, DAEMON_APP, 2).unwrap();
    assert_eq!(hold.held(), 2);
    let rs = batch(&emu, &t, inbox_items(4)).await;
    let mut statuses: Vec<u64> = rs.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 429, 429], "two slots were free: {rs:?}");
    for r in rs.iter().filter(|r| r["status"] == 429) {
        // The documented item shape: status 429, Retry-After among the item's headers, Graph's
        // error JSON as its body.
        assert_eq!(r["headers"]["retry-after"], "1", "{r}");
        assert_eq!(r["body"]["error"]["code"], "ApplicationThrottled", "{r}");
        assert_eq!(r["body"]["error"]["message"], "Application is over its MailboxConcurrency limit.");
    }
    assert_eq!(emu.stats().endpoints["graph"].status["429"], 2);
    assert_eq!(emu.stats().concurrency_peak(SLOW), 4);

    // A fully sequential batch (each item depends on the one before) needs one slot: with three
    // held it still goes through, one item after the other.
    let three = emu.hold_mail_slots(SLOW, DAEMON_APP, 3).unwrap();
    assert_eq!(three.held(), 2, "only two were free");
    drop(three);
    drop(hold);
    let hold = emu.hold_mail_slots(SLOW, DAEMON_APP, 3).unwrap();
    let chain: Vec<_> = inbox_items(3)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            if i > 0 {
                r["dependsOn"] = json!([(i - 1).to_string()]);
            }
            r
        })
        .collect();
    let rs = batch(&emu, &t, chain).await;
    assert!(rs.iter().all(|r| r["status"] == 200), "{rs:?}");

    // An item that depends on a throttled one is not run: 424.
    let mut items = inbox_items(2);
    items.push(
        json!({"id": "2", "method": "GET", "url": format!("/users/{SLOW}/mailFolders/inbox"), "dependsOn": ["0"]}),
    );
    let rs = batch(&emu, &t, items).await;
    let (first, dependent) = (status_of(&rs, "0"), status_of(&rs, "2"));
    assert_eq!(first + status_of(&rs, "1"), 200 + 429, "one slot free for two items: {rs:?}");
    assert_eq!(dependent, if first == 429 { 424 } else { 200 }, "{rs:?}");

    // Other mailboxes are not affected, and dropped holds give the slots back.
    assert_eq!(gget(&inbox(&emu, USER), &t).await.0, 200);
    drop(hold);
    let rs = batch(&emu, &t, inbox_items(4)).await;
    assert!(rs.iter().all(|r| r["status"] == 200), "{rs:?}");
}

#[tokio::test]
async fn slots_held_over_the_admin_api_are_given_back_after_their_time() {
    let (emu, t) = slow_mailbox(0).await;
    let hold = json!({"mailbox": SLOW, "client_id": DAEMON_APP, "slots": 5, "ms": 500});
    let r = client().post(format!("{}/_admin/mailboxes/hold", emu.base_url())).json(&hold).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["held"], 4, "no more than the limit");
    let (s, b) = gget(&inbox(&emu, SLOW), &t).await;
    assert_graph_error(s, &b, 429, "ApplicationThrottled");
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(gget(&inbox(&emu, SLOW), &t).await.0, 200);
    let unknown = json!({"mailbox": "nobody@contoso.test", "client_id": DAEMON_APP, "slots": 1, "ms": 10});
    let r = client().post(format!("{}/_admin/mailboxes/hold", emu.base_url())).json(&unknown).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn concurrency_limit_answers_429_mailbox_concurrency() {
    let mut setup = mail_setup();
    setup.mailboxes.push(MailboxSpec { latency_ms: 400, ..MailboxSpec::new(DOMAIN, "slow@contoso.test") });
    let emu = Emulator::start(EmulatorConfig::http(setup)).unwrap();
    let t = app_token(&emu, GRAPH).await;
    let url = inbox(&emu, "slow@contoso.test");
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let (url, t) = (url.clone(), t.clone());
            tokio::spawn(async move { call(Method::GET, &url, &t, &[], None).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in calls {
        let (s, h, b) = c.await.unwrap();
        if s == 429 {
            assert_graph_error(s, &b, 429, "ApplicationThrottled");
            assert_eq!(b["error"]["message"], "Application is over its MailboxConcurrency limit.");
            assert!(h.contains_key("retry-after"));
        }
        statuses.push(s);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    // Other mailboxes are not affected, and the slots are given back.
    assert_eq!(gget(&inbox(&emu, USER), &t).await.0, 200);
    assert_eq!(gget(&url, &t).await.0, 200);
}

#[tokio::test]
async fn injected_faults_on_graph_endpoints() {
    let emu = start_mail();
    let t = app_token(&emu, GRAPH).await;
    let url = inbox(&emu, USER);
    let fault = |status: Option<u16>, retry_after: Option<u64>, drop: bool| FaultSpec {
        endpoint: "graph".into(),
        status,
        retry_after,
        drop_connection: drop,
        ..Default::default()
    };
    emu.inject_fault(fault(Some(429), Some(3), false)).unwrap();
    emu.inject_fault(fault(Some(429), None, false)).unwrap();
    emu.inject_fault(fault(Some(503), None, false)).unwrap();
    emu.inject_fault(fault(None, None, true)).unwrap();
    let (s, h, b) = call(Method::GET, &url, &t, &[], None).await;
    assert_graph_error(s, &b, 429, "TooManyRequests");
    assert_eq!(h["retry-after"], "3");
    let (s, h, _) = call(Method::GET, &url, &t, &[], None).await;
    assert_eq!(s, 429);
    assert!(!h.contains_key("retry-after"));
    let (s, _, b) = call(Method::GET, &url, &t, &[], None).await;
    assert_graph_error(s, &b, 503, "ServiceUnavailable");
    assert!(client().get(&url).bearer_auth(&t).send().await.is_err(), "dropped connection");
    assert_eq!(gget(&url, &t).await.0, 200);
    let st = emu.stats();
    assert_eq!(st.endpoints["graph"].requests, 5);
    assert_eq!(st.endpoints["graph"].faults, 4);
    assert_eq!(st.endpoints["graph"].status["dropped"], 1);
}
