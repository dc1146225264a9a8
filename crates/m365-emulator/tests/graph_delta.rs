//! Graph per-folder delta: paging with Prefer: odata.maxpagesize, the deltaLink round, @removed
//! after moves and deletes, updates, and expired tokens (410 SyncStateNotFound, as Outlook spells it).

mod common;

use common::mail::*;
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const GRAPH: &str = "https://graph.microsoft.com";

/// Follows a delta round to its deltaLink; returns every item and the deltaLink.
async fn round(url: &str, t: &str, headers: &[(&str, &str)]) -> (Vec<Value>, String, usize) {
    let (mut items, mut next, mut pages) = (Vec::new(), url.to_string(), 0);
    loop {
        let (s, h, b) = call(Method::GET, &next, t, headers, None).await;
        assert_eq!(s, 200, "{b}");
        pages += 1;
        if headers.iter().any(|(_, v)| v.contains("maxpagesize")) {
            assert_eq!(h["preference-applied"], "odata.maxpagesize=2");
        }
        items.extend(b["value"].as_array().unwrap().iter().cloned());
        if let Some(n) = b["@odata.nextLink"].as_str() {
            assert!(n.contains("$skiptoken="), "{n}");
            next = n.to_string();
        } else {
            let d = b["@odata.deltaLink"].as_str().expect("deltaLink on the last page");
            assert!(d.contains("$deltatoken="), "{d}");
            return (items, d.to_string(), pages);
        }
    }
}

#[tokio::test]
async fn delta_rounds_report_new_changed_moved_and_deleted_messages() {
    let emu = start_mail();
    let t = app_token(&emu, GRAPH).await;
    let ids: Vec<_> = (0..5).map(|i| emu.deliver_mime(USER, "inbox", &mime(i)).unwrap()).collect();
    emu.deliver_mime(USER, "archive", &mime(99)).unwrap();
    let url = format!("{}/users/{USER}/mailFolders/inbox/messages/delta?$select=subject,isRead", emu.graph_url());
    let page = [("Prefer", "odata.maxpagesize=2")];
    let (items, delta, pages) = round(&url, &t, &page).await;
    assert_eq!((items.len(), pages), (5, 3));
    assert!(items.iter().all(|m| m["@odata.type"] == "#microsoft.graph.message" && m.get("body").is_none()));

    // Nothing changed: an empty round.
    let (items, delta, _) = round(&delta, &t, &page).await;
    assert!(items.is_empty(), "{items:?}");

    let base = format!("{}/users/{USER}/messages", emu.graph_url());
    call(Method::POST, &format!("{base}/{}/move", ids[0].id), &t, &[], Some(json!({"destinationId": "archive"}))).await;
    call(Method::PATCH, &format!("{base}/{}", ids[1].id), &t, &[], Some(json!({"isRead": true}))).await;
    call(Method::DELETE, &format!("{base}/{}", ids[2].id), &t, &[], None).await;
    let new = emu.deliver_mime(USER, "inbox", &mime(5)).unwrap();
    let (items, delta, _) = round(&delta, &t, &page).await;
    let find = |id: &str| items.iter().find(|m| m["id"] == id).unwrap_or_else(|| panic!("{id} in {items:?}"));
    assert_eq!(find(&ids[0].id)["@removed"]["reason"], "changed");
    assert_eq!(find(&ids[1].id)["isRead"], true);
    assert_eq!(find(&ids[2].id)["@removed"]["reason"], "deleted");
    assert_eq!(find(&new.id)["subject"], "Request 5");
    assert_eq!(items.len(), 4);

    emu.expire_delta_tokens(USER).unwrap();
    let (s, h, b) = call(Method::GET, &delta, &t, &[], None).await;
    assert_graph_error(s, &b, 410, "SyncStateNotFound");
    assert!(h["location"].to_str().unwrap().ends_with("$deltatoken="));
    let (s, _, b) = call(Method::GET, &format!("{url}&$skiptoken=garbage"), &t, &[], None).await;
    assert_graph_error(s, &b, 410, "SyncStateNotFound");
    // Starting over works.
    let (items, _, _) = round(&url, &t, &page).await;
    assert_eq!(items.len(), 4);
}

#[tokio::test]
async fn delta_with_immutable_ids_reports_the_same_id_across_moves() {
    let emu = start_mail();
    let t = app_token(&emu, GRAPH).await;
    let a = emu.deliver_mime(USER, "inbox", &mime(1)).unwrap();
    let imm = [("Prefer", "IdType=\"ImmutableId\"")];
    let url = format!("{}/users/{USER}/mailFolders/inbox/messages/delta", emu.graph_url());
    let (items, delta, _) = round(&url, &t, &imm).await;
    assert_eq!(items[0]["id"], a.immutable_id.as_str());
    let archive_url = format!("{}/users/{USER}/mailFolders/archive/messages/delta", emu.graph_url());
    let (_, archive_delta, _) = round(&archive_url, &t, &imm).await;
    let base = format!("{}/users/{USER}/messages", emu.graph_url());
    let (s, _, _) = call(
        Method::POST,
        &format!("{base}/{}/move", a.immutable_id),
        &t,
        &imm,
        Some(json!({"destinationId": "archive"})),
    )
    .await;
    assert_eq!(s, 201);
    let (items, _, _) = round(&delta, &t, &imm).await;
    assert_eq!(
        items,
        vec![
            json!({"@odata.type": "#microsoft.graph.message", "id": a.immutable_id, "@removed": {"reason": "changed"}})
        ]
    );
    let (items, _, _) = round(&archive_delta, &t, &imm).await;
    assert_eq!(items[0]["id"], a.immutable_id.as_str());
}
