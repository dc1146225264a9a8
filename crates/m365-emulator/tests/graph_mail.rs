//! Graph mail over HTTP: folders, listing with paging/$select/$filter/$orderby, a message's
//! fields, $value, attachments, PATCH, DELETE, move with and without immutable ids, sendMail.

mod common;

use common::mail::*;
use common::*;
use m365_emulator::{DeliverSpec, MailboxSpec};
use reqwest::Method;
use serde_json::json;

const GRAPH: &str = "https://graph.microsoft.com";

#[tokio::test]
async fn folders_list_get_create_and_duplicates() {
    let emu = start_mail();
    let t = app_token(&emu, GRAPH).await;
    let base = format!("{}/users/{USER}", emu.graph_url());
    let (s, b) = gget(&format!("{base}/mailFolders?$top=50"), &t).await;
    assert_eq!(s, 200, "{b}");
    let names: Vec<&str> = b["value"].as_array().unwrap().iter().map(|f| f["displayName"].as_str().unwrap()).collect();
    for n in ["Inbox", "Archive", "Deleted Items", "Drafts", "Sent Items", "Junk Email"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let (s, inbox) = gget(&format!("{base}/mailFolders/inbox"), &t).await;
    assert_eq!(s, 200);
    assert_eq!(inbox["displayName"], "Inbox");
    let (_, by_key) = gget(&format!("{base}/mailFolders('Inbox')"), &t).await;
    assert_eq!(by_key["id"], inbox["id"]);
    let (s, root) = gget(&format!("{base}/mailFolders/msgfolderroot"), &t).await;
    assert_eq!(s, 200);
    assert_eq!(inbox["parentFolderId"], root["id"]);

    let (s, _, done) =
        call(Method::POST, &format!("{base}/mailFolders"), &t, &[], Some(json!({"displayName": "Processed"}))).await;
    assert_eq!(s, 201, "{done}");
    assert_eq!(done["displayName"], "Processed");
    let (s, _, dup) =
        call(Method::POST, &format!("{base}/mailFolders"), &t, &[], Some(json!({"displayName": "processed"}))).await;
    assert_graph_error(s, &dup, 409, "ErrorFolderExists");
    let child_url = format!("{base}/mailFolders/{}/childFolders", done["id"].as_str().unwrap());
    let (s, _, child) = call(Method::POST, &child_url, &t, &[], Some(json!({"displayName": "2025"}))).await;
    assert_eq!(s, 201);
    assert_eq!(child["parentFolderId"], done["id"]);
    let (_, kids) = gget(&child_url, &t).await;
    assert_eq!(kids["value"][0]["id"], child["id"]);
    let (s, b) = gget(&format!("{base}/mailFolders/not-an-id"), &t).await;
    assert_graph_error(s, &b, 400, "ErrorInvalidIdMalformed");
    assert!(emu.folders(USER).unwrap().iter().any(|f| f.display_name == "2025"));
}

#[tokio::test]
async fn listing_pages_selects_filters_and_orders() {
    let emu = start_mail();
    let t = app_token(&emu, GRAPH).await;
    for i in 0..15 {
        emu.deliver(DeliverSpec {
            mailbox: USER.into(),
            mime: mime(i),
            received_at: Some(chrono::DateTime::from_timestamp(1_750_000_000 + i as i64 * 60, 0).unwrap()),
            ..Default::default()
        })
        .unwrap();
    }
    let url = format!("{}/users/{USER}/mailFolders/inbox/messages", emu.graph_url());
    let (s, p1) = gget(&url, &t).await;
    assert_eq!(s, 200);
    assert_eq!(p1["value"].as_array().unwrap().len(), 10, "default page of 10");
    assert_eq!(p1["value"][0]["subject"], "Request 14", "newest first by default");
    let next = p1["@odata.nextLink"].as_str().expect("nextLink");
    assert!(next.contains("%24skip=10") || next.contains("$skip=10"), "{next}");
    let (_, p2) = gget(next, &t).await;
    assert_eq!(p2["value"].as_array().unwrap().len(), 5);
    assert!(p2.get("@odata.nextLink").is_none());

    let (_, sel) = gget(&format!("{url}?$top=3&$select=subject,receivedDateTime"), &t).await;
    let first = sel["value"][0].as_object().unwrap();
    assert_eq!(sel["value"].as_array().unwrap().len(), 3);
    assert!(first.contains_key("id") && first.contains_key("subject") && first.contains_key("receivedDateTime"));
    assert!(!first.contains_key("body") && !first.contains_key("from"));

    let since = chrono::DateTime::from_timestamp(1_750_000_000 + 10 * 60, 0).unwrap().format("%Y-%m-%dT%H:%M:%SZ");
    let (s, f) =
        gget(&format!("{url}?$filter=receivedDateTime ge {since}&$orderby=receivedDateTime asc&$top=100"), &t).await;
    assert_eq!(s, 200, "{f}");
    let subjects: Vec<&str> = f["value"].as_array().unwrap().iter().map(|m| m["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects, ["Request 10", "Request 11", "Request 12", "Request 13", "Request 14"]);
    let (s, b) = gget(&format!("{url}?$filter=receivedDateTime gt {since}"), &t).await;
    assert_eq!((s, b["value"].as_array().unwrap().len()), (200, 4));
    let (s, b) = gget(&format!("{url}?$filter=isRead eq false&$orderby=receivedDateTime"), &t).await;
    assert_graph_error(s, &b, 400, "InefficientFilter");
    let (s, b) = gget(&format!("{url}?$top=1001"), &t).await;
    assert_graph_error(s, &b, 400, "BadRequest");
}

#[tokio::test]
async fn a_message_its_mime_attachments_patch_and_delete() {
    let emu = start_mail();
    let t = app_token(&emu, GRAPH).await;
    let plain = emu.deliver_mime(USER, "inbox", &mime(1)).unwrap();
    let att = emu.deliver_mime(USER, "inbox", WITH_ATTACHMENT).unwrap();
    let base = format!("{}/users/{USER}/messages", emu.graph_url());
    let (s, m) = gget(&format!("{base}/{}", plain.id), &t).await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["id"], plain.id.as_str());
    assert_eq!(m["subject"], "Request 1");
    assert_eq!(m["from"]["emailAddress"], json!({"name": "Customer 1", "address": "customer1@example.test"}));
    assert_eq!(m["sender"]["emailAddress"]["address"], "customer1@example.test");
    assert_eq!(m["toRecipients"][0]["emailAddress"]["address"], "robot@contoso.test");
    assert_eq!(m["internetMessageId"], "<req1@example.test>");
    assert_eq!(m["sentDateTime"], "2025-07-01T10:00:00Z");
    assert_eq!(m["isRead"], false);
    assert_eq!(m["hasAttachments"], false);
    assert_eq!(m["importance"], "normal");
    assert_eq!(m["body"]["contentType"], "text");
    assert_eq!(m["bodyPreview"], "Please help with number 1.");
    assert_eq!(m["parentFolderId"], plain.folder_id.as_str());
    assert!(m["@odata.etag"].as_str().unwrap().starts_with("W/\""));
    assert!(m["conversationId"].is_string() && m["createdDateTime"].is_string());

    let r = client().get(format!("{base}/{}/$value", plain.id)).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(r.text().await.unwrap(), mime(1));

    let (_, a) = gget(&format!("{base}/{}", att.id), &t).await;
    assert_eq!(a["hasAttachments"], true);
    assert_eq!(a["body"]["contentType"], "html");
    let (s, list) = gget(&format!("{base}/{}/attachments", att.id), &t).await;
    assert_eq!(s, 200);
    let first = &list["value"][0];
    assert_eq!(first["@odata.type"], "#microsoft.graph.fileAttachment");
    assert_eq!(first["name"], "invoice.pdf");
    assert_eq!(first["contentType"], "application/pdf");
    assert_eq!(first["contentBytes"], "JVBERi0xLjQK");
    let (s, one) = gget(&format!("{base}/{}/attachments/{}", att.id, first["id"].as_str().unwrap()), &t).await;
    assert_eq!((s, &one["name"]), (200, &json!("invoice.pdf")));

    let (s, _, p) = call(
        Method::PATCH,
        &format!("{base}/{}", plain.id),
        &t,
        &[],
        Some(json!({"isRead": true, "categories": ["robot"]})),
    )
    .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["isRead"], true);
    assert_ne!(p["@odata.etag"], m["@odata.etag"]);
    let info = &emu.messages(USER, "inbox").unwrap()[0];
    assert!(info.is_read);
    assert_eq!(info.categories, ["robot"]);

    let (s, _, _) = call(Method::DELETE, &format!("{base}/{}", plain.id), &t, &[], None).await;
    assert_eq!(s, 204);
    let (s, b) = gget(&format!("{base}/{}", plain.id), &t).await;
    assert_graph_error(s, &b, 404, "ErrorItemNotFound");
    let (s, b) = gget(&format!("{base}/AAMkAnot-base64!"), &t).await;
    assert_graph_error(s, &b, 400, "ErrorInvalidIdMalformed");
    assert_eq!(emu.count(USER, "inbox").unwrap(), 1);
}

#[tokio::test]
async fn move_changes_ids_unless_immutable_ids_are_asked_for() {
    let emu = start_mail();
    let t = app_token(&emu, GRAPH).await;
    let base = format!("{}/users/{USER}/messages", emu.graph_url());
    let a = emu.deliver_mime(USER, "inbox", &mime(1)).unwrap();
    let (s, _, moved) =
        call(Method::POST, &format!("{base}/{}/move", a.id), &t, &[], Some(json!({"destinationId": "archive"}))).await;
    assert_eq!(s, 201, "{moved}");
    assert_ne!(moved["id"], a.id.as_str(), "a REST id changes on move");
    let (s, b) = gget(&format!("{base}/{}", a.id), &t).await;
    assert_graph_error(s, &b, 404, "ErrorItemNotFound");
    let (s, _) = gget(&format!("{base}/{}", moved["id"].as_str().unwrap()), &t).await;
    assert_eq!(s, 200);
    assert_eq!(emu.messages(USER, "archive").unwrap()[0].id, moved["id"].as_str().unwrap());

    let imm = [("Prefer", "IdType=\"ImmutableId\"")];
    let b = emu.deliver_mime(USER, "inbox", &mime(2)).unwrap();
    let (_, _, listed) =
        call(Method::GET, &format!("{}/users/{USER}/mailFolders/inbox/messages", emu.graph_url()), &t, &imm, None)
            .await;
    let id = listed["value"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(id, b.immutable_id);
    let dest = emu.folders(USER).unwrap().into_iter().find(|f| f.display_name == "Deleted Items").unwrap().id;
    let (s, _, moved) =
        call(Method::POST, &format!("{base}/{id}/move"), &t, &imm, Some(json!({"destinationId": dest}))).await;
    assert_eq!(s, 201);
    assert_eq!(moved["id"], id.as_str(), "immutable ids survive moves");
    assert_eq!(moved["parentFolderId"], dest.as_str());
    // The header value is case-sensitive: anything else gives REST ids.
    let (_, _, m) = call(Method::GET, &format!("{base}/{id}"), &t, &[("Prefer", "IdType=\"immutableid\"")], None).await;
    assert_ne!(m["id"], id.as_str());
    let (s, _, b) =
        call(Method::POST, &format!("{base}/{id}/move"), &t, &imm, Some(json!({"destinationId": "nowhere"}))).await;
    assert_graph_error(s, &b, 400, "ErrorInvalidIdMalformed");
}

#[tokio::test]
async fn send_mail_json_and_mime() {
    let emu = start_mail();
    let t = app_token(&emu, GRAPH).await;
    let url = format!("{}/users/{USER}/sendMail", emu.graph_url());
    let msg = json!({"message": {"subject": "Ticket #1 received", "body": {"contentType": "Text", "content": "Thanks"},
        "toRecipients": [{"emailAddress": {"address": ALICE, "name": "Alice"}}]}, "saveToSentItems": true});
    let (s, _, _) = call(Method::POST, &url, &t, &[], Some(msg)).await;
    assert_eq!(s, 202);
    let sent = emu.messages(USER, "sentitems").unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].subject, "Ticket #1 received");
    assert_eq!(emu.messages(ALICE, "inbox").unwrap()[0].subject, "Ticket #1 received");

    let raw = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, mime(7).replace("robot@", "alice@"));
    let r = client().post(&url).bearer_auth(&t).header("content-type", "text/plain").body(raw).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(emu.count(ALICE, "inbox").unwrap(), 2);
    let r = client().post(&url).bearer_auth(&t).header("content-type", "text/plain").body("%%%").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let (s, _, b) = call(Method::POST, &url, &t, &[], Some(json!({"message": {"subject": "x"}}))).await;
    assert_graph_error(s, &b, 400, "ErrorInvalidRecipients");
    let (s, _, _) = call(
        Method::POST,
        &url,
        &t,
        &[],
        Some(
            json!({"message": {"subject": "nosave", "toRecipients": [{"emailAddress": {"address": "x@example.test"}}]},
            "saveToSentItems": false}),
        ),
    )
    .await;
    assert_eq!(s, 202);
    assert_eq!(emu.count(USER, "sentitems").unwrap(), 2, "MIME send saved, nosave not");
    let _ = MailboxSpec::default();
}

/// Graph cannot suppress read receipts: PATCHing `isRead` of a message whose sender asked for
/// one sends it (reported against Outlook; Microsoft documents no way around it). Graph shows the
/// request as `isReadReceiptRequested`.
#[tokio::test]
async fn patching_is_read_sends_the_receipt_a_sender_asked_for() {
    let emu = start_mail();
    let t = app_token(&emu, GRAPH).await;
    let asking = emu.deliver_mime(USER, "inbox", &mime_asking_receipt(1)).unwrap();
    let plain = emu.deliver_mime(USER, "inbox", &mime(2)).unwrap();
    let base = format!("{}/users/{USER}/messages", emu.graph_url());
    let (_, b) = gget(&format!("{base}/{}?$select=isReadReceiptRequested", asking.id), &t).await;
    assert_eq!(b["isReadReceiptRequested"], true, "{b}");
    let (_, b) = gget(&format!("{base}/{}?$select=isReadReceiptRequested", plain.id), &t).await;
    assert_eq!(b["isReadReceiptRequested"], false, "{b}");
    for m in [&asking, &asking, &plain] {
        let (s, _, b) = call(Method::PATCH, &format!("{base}/{}", m.id), &t, &[], Some(json!({"isRead": true}))).await;
        assert_eq!(s, 200, "{b}");
    }
    let sent = emu.read_receipts(None).unwrap();
    assert_eq!(sent.len(), 1, "one receipt, once: {sent:?}");
    assert_eq!(
        (sent[0].to.as_str(), sent[0].kind.as_str(), sent[0].cause.as_str()),
        ("customer1@example.test", "read", "Graph PATCH")
    );
}
