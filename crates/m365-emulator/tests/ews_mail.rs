//! EWS over raw SOAP: delegated and app-only (impersonation) access, folders, SyncFolderItems
//! paging and state, GetItem MIME, MoveItem, UpdateItem read flag, DeleteItem, read receipts and
//! SuppressReadReceipts, errors, throttling, and the 403 of a blocked EWS. Requests are written as
//! Microsoft's EWS reference shows them.

mod common;

use base64::Engine;
use common::mail::*;
use common::*;
use m365_emulator::{EwsBlockBody, EwsBlockSpec, FaultSpec, MailboxGrant};

const EWS: &str = "https://outlook.office365.com";
const EWS_SCOPE: &str = "https://outlook.office365.com/EWS.AccessAsUser.All";
const T: &str = "http://schemas.microsoft.com/exchange/services/2006/types";

/// Posts a SOAP request; `header` goes into `soap:Header` after `RequestServerVersion`.
async fn soap(
    emu: &m365_emulator::Emulator,
    token: &str,
    http_headers: &[(&str, &str)],
    header: &str,
    body: &str,
) -> (u16, String) {
    let (status, content_type, text) = soap_raw(emu, token, http_headers, "Exchange2013", header, body).await;
    if status != 401 {
        assert_eq!(content_type, "text/xml; charset=utf-8");
    }
    (status, text)
}

/// Posts a SOAP request naming `version` as `RequestServerVersion`; returns the status, the
/// Content-Type and the body, whatever they are.
async fn soap_raw(
    emu: &m365_emulator::Emulator,
    token: &str,
    http_headers: &[(&str, &str)],
    version: &str,
    header: &str,
    body: &str,
) -> (u16, String, String) {
    let xml = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"
  xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"
  xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Header><t:RequestServerVersion Version="{version}" />{header}</soap:Header>
  <soap:Body>{body}</soap:Body>
</soap:Envelope>"#
    );
    let mut r =
        client().post(emu.ews_url()).header("Content-Type", "text/xml; charset=utf-8").bearer_auth(token).body(xml);
    for (k, v) in http_headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, content_type, resp.text().await.unwrap())
}

fn impersonate(smtp: &str) -> String {
    format!(
        "<t:ExchangeImpersonation><t:ConnectingSID><t:SmtpAddress>{smtp}</t:SmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>"
    )
}

/// Elements with this local name, anywhere.
fn all<'a, 'i>(doc: &'a roxmltree::Document<'i>, name: &str) -> Vec<roxmltree::Node<'a, 'i>> {
    doc.descendants().filter(|n| n.is_element() && n.tag_name().name() == name).collect()
}

fn text_of(doc: &roxmltree::Document<'_>, name: &str) -> String {
    all(doc, name).first().and_then(|n| n.text()).unwrap_or_default().to_string()
}

/// The `ResponseCode`s of the response messages, asserting `ResponseClass` agrees.
fn codes(doc: &roxmltree::Document<'_>) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.is_element() && n.tag_name().name().ends_with("ResponseMessage"))
        .map(|m| {
            let code =
                m.children().find(|c| c.tag_name().name() == "ResponseCode").unwrap().text().unwrap().to_string();
            let class = m.attribute("ResponseClass").unwrap();
            assert_eq!(class == "Success", code == "NoError", "{class} with {code}");
            code
        })
        .collect()
}

/// `(kind, Id)` of SyncFolderItems changes.
fn changes(doc: &roxmltree::Document<'_>) -> Vec<(String, String)> {
    let Some(c) = all(doc, "Changes").into_iter().next() else { return vec![] };
    c.children()
        .filter(|n| n.is_element())
        .map(|n| {
            let id = n.descendants().find(|d| d.tag_name().name() == "ItemId").unwrap();
            assert_eq!(id.tag_name().namespace(), Some(T));
            (n.tag_name().name().to_string(), id.attribute("Id").unwrap().to_string())
        })
        .collect()
}

fn sync_body(folder: &str, state: Option<&str>, max: usize) -> String {
    let state = state.map(|s| format!("<m:SyncState>{s}</m:SyncState>")).unwrap_or_default();
    format!(
        r#"<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>
<m:SyncFolderId><t:DistinguishedFolderId Id="{folder}" /></m:SyncFolderId>{state}
<m:MaxChangesReturned>{max}</m:MaxChangesReturned></m:SyncFolderItems>"#
    )
}

#[tokio::test]
async fn delegated_sync_get_move_update_delete() {
    let emu = start_mail();
    let token = user_token(&emu, USER, &[EWS_SCOPE]);
    let delivered: Vec<_> = (0..5).map(|n| emu.deliver_mime(USER, "inbox", &mime(n)).unwrap()).collect();

    // First sync in pages of 2: 2, 2, 1 creates, then nothing.
    let mut state: Option<String> = None;
    let mut seen = Vec::new();
    for (page, want_last) in [(2, false), (2, false), (1, true)] {
        let (s, x) = soap(&emu, &token, &[], "", &sync_body("inbox", state.as_deref(), 2)).await;
        assert_eq!(s, 200, "{x}");
        let doc = roxmltree::Document::parse(&x).unwrap();
        assert_eq!(codes(&doc), ["NoError"]);
        let ch = changes(&doc);
        assert_eq!(ch.len(), page, "{x}");
        assert!(ch.iter().all(|(k, _)| k == "Create"));
        assert_eq!(text_of(&doc, "IncludesLastItemInRange"), want_last.to_string());
        seen.extend(ch.into_iter().map(|(_, id)| id));
        state = Some(text_of(&doc, "SyncState"));
    }
    // Ids are Graph's ids in EWS's (standard base64) spelling.
    let want: Vec<String> = delivered.iter().map(|m| m.id.replace('-', "+").replace('_', "/")).collect();
    assert_eq!(seen, want);
    let (_, x) = soap(&emu, &token, &[], "", &sync_body("inbox", state.as_deref(), 10)).await;
    let doc = roxmltree::Document::parse(&x).unwrap();
    assert!(changes(&doc).is_empty());
    let state = text_of(&doc, "SyncState");

    // GetItem with MIME.
    let get = format!(
        r#"<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>
<t:AdditionalProperties><t:FieldURI FieldURI="item:Subject" /><t:FieldURI FieldURI="message:IsRead" /></t:AdditionalProperties>
<t:IncludeMimeContent>true</t:IncludeMimeContent></m:ItemShape>
<m:ItemIds><t:ItemId Id="{}" /></m:ItemIds></m:GetItem>"#,
        seen[0]
    );
    let (s, x) = soap(&emu, &token, &[], "", &get).await;
    assert_eq!(s, 200, "{x}");
    let doc = roxmltree::Document::parse(&x).unwrap();
    assert_eq!(codes(&doc), ["NoError"]);
    let mc = all(&doc, "MimeContent")[0];
    assert_eq!(mc.attribute("CharacterSet"), Some("UTF-8"));
    let raw = base64::engine::general_purpose::STANDARD.decode(mc.text().unwrap()).unwrap();
    assert_eq!(raw, mime(0).as_bytes());
    assert_eq!(text_of(&doc, "Subject"), "Request 0");
    assert_eq!(text_of(&doc, "IsRead"), "false");

    // Read flag, move, hard delete.
    let update = format!(
        r#"<m:UpdateItem MessageDisposition="SaveOnly" ConflictResolution="AutoResolve"><m:ItemChanges><t:ItemChange>
<t:ItemId Id="{}" /><t:Updates><t:SetItemField><t:FieldURI FieldURI="message:IsRead" />
<t:Message><t:IsRead>true</t:IsRead></t:Message></t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>"#,
        seen[1]
    );
    let (s, x) = soap(&emu, &token, &[], "", &update).await;
    assert_eq!((s, codes(&roxmltree::Document::parse(&x).unwrap())), (200, vec!["NoError".to_string()]), "{x}");
    assert!(emu.messages(USER, "inbox").unwrap().iter().find(|m| m.id == delivered[1].id).unwrap().is_read);

    let mv = format!(
        r#"<m:MoveItem><m:ToFolderId><t:DistinguishedFolderId Id="archive" /></m:ToFolderId>
<m:ItemIds><t:ItemId Id="{}" /></m:ItemIds></m:MoveItem>"#,
        seen[2]
    );
    let (s, x) = soap(&emu, &token, &[], "", &mv).await;
    assert_eq!(s, 200, "{x}");
    let doc = roxmltree::Document::parse(&x).unwrap();
    assert_eq!(codes(&doc), ["NoError"]);
    let new_id = all(&doc, "ItemId")[0].attribute("Id").unwrap().to_string();
    assert_ne!(new_id, seen[2]);
    assert_eq!(emu.messages(USER, "archive").unwrap()[0].id.replace('-', "+").replace('_', "/"), new_id);

    let del = format!(
        r#"<m:DeleteItem DeleteType="HardDelete"><m:ItemIds><t:ItemId Id="{}" /></m:ItemIds></m:DeleteItem>"#,
        seen[3]
    );
    let (s, x) = soap(&emu, &token, &[], "", &del).await;
    assert_eq!((s, codes(&roxmltree::Document::parse(&x).unwrap())), (200, vec!["NoError".to_string()]), "{x}");

    // The next sync: ReadFlagChange, Delete (moved), Delete (deleted), then a new Create.
    let new = emu.deliver_mime(USER, "inbox", &mime(9)).unwrap();
    let (_, x) = soap(&emu, &token, &[], "", &sync_body("inbox", Some(&state), 512)).await;
    let doc = roxmltree::Document::parse(&x).unwrap();
    let kinds: Vec<(String, String)> = changes(&doc);
    let ews = |id: &str| id.replace('-', "+").replace('_', "/");
    assert_eq!(
        kinds,
        vec![
            ("ReadFlagChange".into(), seen[1].clone()),
            ("Delete".into(), seen[2].clone()),
            ("Delete".into(), seen[3].clone()),
            ("Create".into(), ews(&new.id)),
        ],
        "{x}"
    );
    assert_eq!(text_of(&doc, "IsRead"), "true");

    // The moved item is gone from the inbox.
    let (_, x) = soap(&emu, &token, &[], "", &get.replace(&seen[0], &seen[2])).await;
    assert_eq!(codes(&roxmltree::Document::parse(&x).unwrap()), ["ErrorItemNotFound"]);
}

#[tokio::test]
async fn folders_find_create_get() {
    let emu = start_mail();
    let token = user_token(&emu, USER, &[EWS_SCOPE]);
    let find = r#"<m:FindFolder Traversal="Shallow"><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>
<m:ParentFolderIds><t:DistinguishedFolderId Id="msgfolderroot" /></m:ParentFolderIds></m:FindFolder>"#;
    let (s, x) = soap(&emu, &token, &[], "", find).await;
    assert_eq!(s, 200, "{x}");
    let doc = roxmltree::Document::parse(&x).unwrap();
    assert_eq!(codes(&doc), ["NoError"]);
    let names: Vec<&str> = all(&doc, "DisplayName").iter().map(|n| n.text().unwrap()).collect();
    assert!(names.contains(&"Inbox") && names.contains(&"Archive"), "{names:?}");
    let root = all(&doc, "RootFolder")[0];
    assert_eq!(root.attribute("IncludesLastItemInRange"), Some("true"));
    assert_eq!(root.attribute("TotalItemsInView"), Some(names.len().to_string().as_str()));

    let create = r#"<m:CreateFolder><m:ParentFolderId><t:DistinguishedFolderId Id="inbox" /></m:ParentFolderId>
<m:Folders><t:Folder><t:DisplayName>Processed</t:DisplayName></t:Folder></m:Folders></m:CreateFolder>"#;
    let (s, x) = soap(&emu, &token, &[], "", create).await;
    assert_eq!(s, 200, "{x}");
    let doc = roxmltree::Document::parse(&x).unwrap();
    assert_eq!(codes(&doc), ["NoError"]);
    let fid = all(&doc, "FolderId")[0].attribute("Id").unwrap().to_string();
    let (_, x) = soap(&emu, &token, &[], "", create).await;
    assert_eq!(codes(&roxmltree::Document::parse(&x).unwrap()), ["ErrorFolderExists"]);

    // The new folder by id, and the inbox by name, in one GetFolder.
    let get = format!(
        r#"<m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>
<m:FolderIds><t:FolderId Id="{fid}" /><t:DistinguishedFolderId Id="inbox" /></m:FolderIds></m:GetFolder>"#
    );
    let (_, x) = soap(&emu, &token, &[], "", &get).await;
    let doc = roxmltree::Document::parse(&x).unwrap();
    assert_eq!(codes(&doc), ["NoError", "NoError"]);
    let names: Vec<&str> = all(&doc, "DisplayName").iter().map(|n| n.text().unwrap()).collect();
    assert_eq!(names, ["Processed", "Inbox"]);
    assert_eq!(all(&doc, "ChildFolderCount")[1].text(), Some("1"));

    // A message moved into the new folder by its EWS id.
    let m = emu.deliver_mime(USER, "inbox", &mime(1)).unwrap();
    let mv = format!(
        r#"<m:MoveItem><m:ToFolderId><t:FolderId Id="{fid}" /></m:ToFolderId><m:ItemIds><t:ItemId Id="{}" /></m:ItemIds></m:MoveItem>"#,
        m.id.replace('-', "+").replace('_', "/")
    );
    let (_, x) = soap(&emu, &token, &[], "", &mv).await;
    assert_eq!(codes(&roxmltree::Document::parse(&x).unwrap()), ["NoError"]);
    assert_eq!(emu.count(USER, "Processed").unwrap(), 1);
}

#[tokio::test]
async fn app_only_needs_impersonation_and_anchor() {
    let emu = start_mail();
    let token = app_token(&emu, EWS).await;
    emu.deliver_mime(SHARED, "inbox", &mime(1)).unwrap();
    let anchor = [("X-AnchorMailbox", SHARED)];

    let (s, x) = soap(&emu, &token, &anchor, &impersonate(SHARED), &sync_body("inbox", None, 10)).await;
    assert_eq!(s, 200, "{x}");
    let doc = roxmltree::Document::parse(&x).unwrap();
    assert_eq!(codes(&doc), ["NoError"]);
    assert_eq!(changes(&doc).len(), 1);

    // Without impersonation: a SOAP fault.
    let (s, x) = soap(&emu, &token, &anchor, "", &sync_body("inbox", None, 10)).await;
    assert_eq!(s, 500);
    assert!(x.contains("ErrorInvalidExchangeImpersonationHeaderData"), "{x}");
    // Without X-AnchorMailbox: refused too.
    let (s, x) = soap(&emu, &token, &[], &impersonate(SHARED), &sync_body("inbox", None, 10)).await;
    assert_eq!(s, 500, "{x}");
    // An unknown mailbox.
    let (s, x) = soap(&emu, &token, &anchor, &impersonate("nobody@contoso.test"), &sync_body("inbox", None, 10)).await;
    assert_eq!(s, 500);
    assert!(x.contains("ErrorNonExistentMailbox"), "{x}");
    // A Graph token is not an EWS token.
    let graph = app_token(&emu, "https://graph.microsoft.com").await;
    let (s, _) = soap(&emu, &graph, &anchor, &impersonate(SHARED), &sync_body("inbox", None, 10)).await;
    assert_eq!(s, 401);
    let (s, _) = soap(&emu, "not-a-token", &anchor, &impersonate(SHARED), &sync_body("inbox", None, 10)).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn delegated_access_to_shared_mailbox_needs_a_grant() {
    let emu = start_mail();
    let token = user_token(&emu, USER, &[EWS_SCOPE]);
    emu.deliver_mime(SHARED, "inbox", &mime(1)).unwrap();
    let body = format!(
        r#"<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>
<m:SyncFolderId><t:DistinguishedFolderId Id="inbox"><t:Mailbox><t:EmailAddress>{SHARED}</t:EmailAddress></t:Mailbox>
</t:DistinguishedFolderId></m:SyncFolderId><m:MaxChangesReturned>10</m:MaxChangesReturned></m:SyncFolderItems>"#
    );
    let (s, x) = soap(&emu, &token, &[], "", &body).await;
    assert_eq!(s, 200);
    assert_eq!(codes(&roxmltree::Document::parse(&x).unwrap()), ["ErrorAccessDenied"]);
    emu.grant_mailbox_access(MailboxGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), username: USER.into() })
        .unwrap();
    let (_, x) = soap(&emu, &token, &[], "", &body).await;
    let doc = roxmltree::Document::parse(&x).unwrap();
    assert_eq!(codes(&doc), ["NoError"]);
    assert_eq!(changes(&doc).len(), 1);
    // Ids of the shared mailbox's items lead to it.
    let id = changes(&doc)[0].1.clone();
    let get = format!(
        r#"<m:GetItem><m:ItemShape><t:BaseShape>Default</t:BaseShape></m:ItemShape><m:ItemIds><t:ItemId Id="{id}" /></m:ItemIds></m:GetItem>"#
    );
    let (_, x) = soap(&emu, &token, &[], "", &get).await;
    let doc = roxmltree::Document::parse(&x).unwrap();
    assert_eq!(codes(&doc), ["NoError"]);
    assert_eq!(text_of(&doc, "Subject"), "Request 1");
}

#[tokio::test]
async fn errors_in_response_messages() {
    let emu = start_mail();
    let token = user_token(&emu, USER, &[EWS_SCOPE]);
    let (s, x) = soap(&emu, &token, &[], "", &sync_body("inbox", Some("garbage"), 10)).await;
    assert_eq!(s, 200);
    let doc = roxmltree::Document::parse(&x).unwrap();
    assert_eq!(codes(&doc), ["ErrorInvalidSyncStateData"]);
    assert!(!text_of(&doc, "MessageText").is_empty());
    // A state of another folder is no good either.
    let (_, x) = soap(&emu, &token, &[], "", &sync_body("archive", None, 10)).await;
    let archive_state = text_of(&roxmltree::Document::parse(&x).unwrap(), "SyncState");
    let (_, x) = soap(&emu, &token, &[], "", &sync_body("inbox", Some(&archive_state), 10)).await;
    assert_eq!(codes(&roxmltree::Document::parse(&x).unwrap()), ["ErrorInvalidSyncStateData"]);
    // Expired states (the admin switch shared with Graph's delta tokens).
    emu.expire_delta_tokens(USER).unwrap();
    let (_, x) = soap(&emu, &token, &[], "", &sync_body("archive", Some(&archive_state), 10)).await;
    assert_eq!(codes(&roxmltree::Document::parse(&x).unwrap()), ["ErrorInvalidSyncStateData"]);

    // MaxChangesReturned outside 1–512 fails schema validation.
    let (s, x) = soap(&emu, &token, &[], "", &sync_body("inbox", None, 513)).await;
    assert_eq!(s, 500);
    assert!(x.contains("ErrorSchemaValidation"), "{x}");

    // Unknown and malformed ids.
    let m = emu.deliver_mime(USER, "inbox", &mime(1)).unwrap();
    emu.deliver_mime(USER, "inbox", &mime(2)).unwrap();
    let ews_id = m.id.replace('-', "+").replace('_', "/");
    let del = format!(
        r#"<m:DeleteItem DeleteType="MoveToDeletedItems"><m:ItemIds><t:ItemId Id="{ews_id}" /></m:ItemIds></m:DeleteItem>"#
    );
    let (_, x) = soap(&emu, &token, &[], "", &del).await;
    assert_eq!(codes(&roxmltree::Document::parse(&x).unwrap()), ["NoError"]);
    assert_eq!(emu.count(USER, "deleteditems").unwrap(), 1);
    let get = r#"<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>
<m:ItemIds><t:ItemId Id="AAMkAGI2TG93AAA=" /><t:ItemId Id="not-an-id" /></m:ItemIds></m:GetItem>"#;
    let (_, x) = soap(&emu, &token, &[], "", get).await;
    assert_eq!(codes(&roxmltree::Document::parse(&x).unwrap()), ["ErrorInvalidIdMalformed", "ErrorInvalidIdMalformed"]);
    let missing = format!("AAMkA{}", "A".repeat(43) + "=");
    let get = get.replace("AAMkAGI2TG93AAA=", &missing).replace(r#"<t:ItemId Id="not-an-id" />"#, "");
    let (_, x) = soap(&emu, &token, &[], "", &get).await;
    assert_eq!(codes(&roxmltree::Document::parse(&x).unwrap()), ["ErrorItemNotFound"]);
    // A move to an unknown folder.
    let (_, x) = soap(&emu, &token, &[], "", &format!(
        r#"<m:MoveItem><m:ToFolderId><t:FolderId Id="{missing}" /></m:ToFolderId><m:ItemIds><t:ItemId Id="{}" /></m:ItemIds></m:MoveItem>"#,
        emu.messages(USER, "inbox").unwrap()[0].id
    ))
    .await;
    assert_eq!(codes(&roxmltree::Document::parse(&x).unwrap()), ["ErrorToFolderNotFound"]);
    // UpdateItem without MessageDisposition.
    let (_, x) = soap(&emu, &token, &[], "", &format!(
        r#"<m:UpdateItem ConflictResolution="AutoResolve"><m:ItemChanges><t:ItemChange><t:ItemId Id="{}" /><t:Updates>
<t:SetItemField><t:FieldURI FieldURI="message:IsRead" /><t:Message><t:IsRead>true</t:IsRead></t:Message></t:SetItemField>
</t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>"#,
        emu.messages(USER, "inbox").unwrap()[0].id
    ))
    .await;
    assert_eq!(codes(&roxmltree::Document::parse(&x).unwrap()), ["ErrorMessageDispositionRequired"]);
    // Not XML at all.
    let r = client().post(emu.ews_url()).bearer_auth(&token).body("hello").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 500);
    assert!(r.text().await.unwrap().contains("ErrorSchemaValidation"));
}

#[tokio::test]
async fn throttling_fault_has_back_off() {
    let emu = start_mail();
    let token = user_token(&emu, USER, &[EWS_SCOPE]);
    emu.inject_fault(FaultSpec {
        endpoint: "ews".into(),
        status: Some(429),
        retry_after: Some(2),
        ..Default::default()
    })
    .unwrap();
    let (s, x) = soap(&emu, &token, &[], "", &sync_body("inbox", None, 10)).await;
    assert_eq!(s, 500);
    let doc = roxmltree::Document::parse(&x).unwrap();
    let fault = all(&doc, "Fault")[0];
    assert_eq!(fault.tag_name().namespace(), Some("http://schemas.xmlsoap.org/soap/envelope/"));
    assert!(text_of(&doc, "faultcode").ends_with(":ErrorServerBusy"));
    assert_eq!(text_of(&doc, "ResponseCode"), "ErrorServerBusy");
    let mx = all(&doc, "MessageXml")[0];
    assert_eq!(mx.tag_name().namespace(), Some(T));
    let v = mx.children().find(|c| c.is_element()).unwrap();
    assert_eq!((v.attribute("Name"), v.text()), (Some("BackOffMilliseconds"), Some("2000")));
    // The fault was used up: the next request goes through.
    let (s, _) = soap(&emu, &token, &[], "", &sync_body("inbox", None, 10)).await;
    assert_eq!(s, 200);
    assert_eq!(emu.stats().requests("ews"), 2);
}

#[tokio::test]
async fn find_item_pages_newest_first() {
    let emu = start_mail();
    let token = user_token(&emu, USER, &[EWS_SCOPE]);
    for n in 0..5 {
        emu.deliver(m365_emulator::DeliverSpec {
            mailbox: USER.into(),
            folder: Some("inbox".into()),
            mime: mime(n),
            received_at: chrono::DateTime::from_timestamp(1_750_000_000 + n as i64 * 60, 0),
            is_read: false,
        })
        .unwrap();
    }
    let find = |offset: usize| {
        format!(
            r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>
<t:AdditionalProperties><t:FieldURI FieldURI="item:Subject" /></t:AdditionalProperties></m:ItemShape>
<m:IndexedPageItemView MaxEntriesReturned="3" Offset="{offset}" BasePoint="Beginning" />
<m:ParentFolderIds><t:DistinguishedFolderId Id="inbox" /></m:ParentFolderIds></m:FindItem>"#
        )
    };
    let (s, x) = soap(&emu, &token, &[], "", &find(0)).await;
    assert_eq!(s, 200, "{x}");
    let doc = roxmltree::Document::parse(&x).unwrap();
    assert_eq!(codes(&doc), ["NoError"]);
    let root = all(&doc, "RootFolder")[0];
    assert_eq!(
        (
            root.attribute("TotalItemsInView"),
            root.attribute("IndexedPagingOffset"),
            root.attribute("IncludesLastItemInRange")
        ),
        (Some("5"), Some("3"), Some("false"))
    );
    let subjects: Vec<&str> = all(&doc, "Subject").iter().map(|n| n.text().unwrap()).collect();
    assert_eq!(subjects, ["Request 4", "Request 3", "Request 2"]);
    let (_, x) = soap(&emu, &token, &[], "", &find(3)).await;
    let doc = roxmltree::Document::parse(&x).unwrap();
    let subjects: Vec<&str> = all(&doc, "Subject").iter().map(|n| n.text().unwrap()).collect();
    assert_eq!(subjects, ["Request 1", "Request 0"]);
    assert_eq!(all(&doc, "RootFolder")[0].attribute("IncludesLastItemInRange"), Some("true"));
}

#[tokio::test]
async fn over_the_concurrency_limit_is_server_busy() {
    let emu = start_mail();
    emu.set_mail_concurrency_limit(1);
    emu.create_mailbox(m365_emulator::MailboxSpec {
        latency_ms: 400,
        ..m365_emulator::MailboxSpec::new(DOMAIN, "slow@contoso.test")
    })
    .unwrap();
    let token = app_token(&emu, EWS).await;
    let anchor = [("X-AnchorMailbox", "slow@contoso.test")];
    let imp = impersonate("slow@contoso.test");
    let body = sync_body("inbox", None, 10);
    let (a, b) = tokio::join!(soap(&emu, &token, &anchor, &imp, &body), async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        soap(&emu, &token, &anchor, &imp, &body).await
    });
    assert_eq!(a.0, 200, "{}", a.1);
    assert_eq!(b.0, 500);
    let doc = roxmltree::Document::parse(&b.1).unwrap();
    assert_eq!(text_of(&doc, "ResponseCode"), "ErrorServerBusy");
    let v = all(&doc, "Value")[0];
    assert_eq!(v.attribute("Name"), Some("BackOffMilliseconds"));
    assert!(v.text().unwrap().parse::<u64>().unwrap() > 0);
}

fn mark_read(id: &str, attributes: &str) -> String {
    format!(
        r#"<m:UpdateItem MessageDisposition="SaveOnly" ConflictResolution="AutoResolve"{attributes}><m:ItemChanges><t:ItemChange>
<t:ItemId Id="{id}" /><t:Updates><t:SetItemField><t:FieldURI FieldURI="message:IsRead" />
<t:Message><t:IsRead>true</t:IsRead></t:Message></t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>"#
    )
}

fn delete(id: &str, attributes: &str) -> String {
    format!(
        r#"<m:DeleteItem DeleteType="MoveToDeletedItems"{attributes}><m:ItemIds><t:ItemId Id="{id}" /></m:ItemIds></m:DeleteItem>"#
    )
}

/// Marking a mail read sends the read receipt its sender asked for, deleting it unread a not-read
/// receipt, unless `SuppressReadReceipts="true"` under a schema version that has it
/// (Exchange2013_SP1). Exchange sends one at most.
#[tokio::test]
async fn read_receipts_go_out_unless_suppressed() {
    let emu = start_mail();
    let token = user_token(&emu, USER, &[EWS_SCOPE]);
    let asking: Vec<String> = (0..6)
        .map(|n| {
            emu.deliver_mime(USER, "inbox", &mime_asking_receipt(n)).unwrap().id.replace('-', "+").replace('_', "/")
        })
        .collect();
    let plain = emu.deliver_mime(USER, "inbox", &mime(9)).unwrap().id.replace('-', "+").replace('_', "/");
    let suppress = r#" SuppressReadReceipts="true""#;
    let steps = [
        ("Exchange2013_SP1", mark_read(&asking[0], "")),
        ("Exchange2013_SP1", mark_read(&asking[1], suppress)),
        // The attribute is not in the Exchange2013 schema: not honoured.
        ("Exchange2013", mark_read(&asking[2], suppress)),
        ("Exchange2016", delete(&asking[3], "")),
        ("V2016_10_10", delete(&asking[4], suppress)),
        // Suppressed once, nothing is due any more: reading it again or deleting it sends nothing.
        ("Exchange2013_SP1", mark_read(&asking[5], suppress)),
        ("Exchange2013_SP1", delete(&asking[5], "")),
        ("Exchange2013_SP1", mark_read(&plain, "")),
    ];
    for (version, body) in &steps {
        let (s, _, x) = soap_raw(&emu, &token, &[], version, "", body).await;
        assert_eq!((s, codes(&roxmltree::Document::parse(&x).unwrap())), (200, vec!["NoError".to_string()]), "{x}");
    }
    let sent: Vec<(String, String, String, String)> = emu
        .read_receipts(Some(USER))
        .unwrap()
        .into_iter()
        .map(|r| (r.internet_message_id, r.to, r.kind, r.cause))
        .collect();
    let receipt = |n: usize, kind: &str, cause: &str| {
        (format!("<req{n}@example.test>"), format!("customer{n}@example.test"), kind.into(), cause.into())
    };
    assert_eq!(
        sent,
        [
            receipt(0, "read", "EWS UpdateItem"),
            receipt(2, "read", "EWS UpdateItem"),
            receipt(3, "not-read", "EWS DeleteItem")
        ]
    );
    // The same through the admin API.
    let url = format!("{}/_admin/mailboxes/receipts?mailbox={USER}", emu.base_url());
    let listed: serde_json::Value = client().get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    assert_eq!(listed[2]["kind"], "not-read");
    assert!(emu.read_receipts(Some(SHARED)).unwrap().is_empty());
}

/// EWS blocked (Exchange Online from 2026-10-01 without EWSEnabled and the app on
/// EWSAllowedAppIDs): authenticated calls get 403 with the chosen body; allowed app ids pass.
#[tokio::test]
async fn a_blocked_ews_answers_403_unless_the_app_is_allowed() {
    let emu = start_mail();
    let app = app_token(&emu, EWS).await;
    let user = user_token(&emu, USER, &[EWS_SCOPE]);
    let find = sync_body("inbox", None, 10);
    for (body, content_type) in [
        (EwsBlockBody::Html, "text/html; charset=utf-8"),
        (EwsBlockBody::Text, "text/plain; charset=utf-8"),
        (EwsBlockBody::Soap, "text/xml; charset=utf-8"),
        (EwsBlockBody::Empty, ""),
    ] {
        emu.set_ews_block(EwsBlockSpec::blocked(body));
        let (s, ct, x) = soap_raw(&emu, &user, &[], "Exchange2013_SP1", "", &find).await;
        assert_eq!((s, ct.as_str()), (403, content_type), "{body:?}: {x}");
        match body {
            EwsBlockBody::Html => assert!(x.starts_with("<!DOCTYPE html>") && x.contains("403"), "{x}"),
            EwsBlockBody::Text => assert!(x.contains("EWS is blocked") && !x.contains('<'), "{x}"),
            EwsBlockBody::Soap => {
                assert_eq!(text_of(&roxmltree::Document::parse(&x).unwrap(), "ResponseCode"), "ErrorAccessDenied")
            }
            EwsBlockBody::Empty => assert!(x.is_empty()),
        }
    }
    // Authentication comes first: no token is still 401.
    let (s, _, _) = soap_raw(&emu, "", &[], "Exchange2013_SP1", "", &find).await;
    assert_eq!(s, 401);

    // The allow list lets the daemon app through, not the web app (over the admin API).
    let block = serde_json::json!({"blocked": true, "allowed_app_ids": [DAEMON_APP], "body": "text"});
    let url = format!("{}/_admin/ews/block", emu.base_url());
    let r = client().post(&url).json(&block).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let headers = [("X-AnchorMailbox", USER)];
    let (s, _, x) = soap_raw(&emu, &app, &headers, "Exchange2013_SP1", &impersonate(USER), &find).await;
    assert_eq!(s, 200, "{x}");
    let (s, _, _) = soap_raw(&emu, &user, &[], "Exchange2013_SP1", "", &find).await;
    assert_eq!(s, 403);
    let now: serde_json::Value = client().get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(now, block);

    emu.set_ews_block(EwsBlockSpec::default());
    let (s, _, x) = soap_raw(&emu, &user, &[], "Exchange2013_SP1", "", &find).await;
    assert_eq!(s, 200, "{x}");
}

/// A `CreateItem` of one message from MIME, as the CreateItem reference writes it;
/// `saved` is the `SavedItemFolderId` content (empty: none).
fn create_item(disposition: &str, saved: &str, mime: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(mime);
    let saved =
        if saved.is_empty() { String::new() } else { format!("<m:SavedItemFolderId>{saved}</m:SavedItemFolderId>") };
    format!(
        r#"<m:CreateItem MessageDisposition="{disposition}">{saved}<m:Items><t:Message>
<t:MimeContent CharacterSet="UTF-8">{encoded}</t:MimeContent></t:Message></m:Items></m:CreateItem>"#
    )
}

/// A mail from the robot to Alice (and someone outside the emulator), Alice again in Cc.
fn outgoing(n: usize) -> String {
    format!(
        "From: Robot <{USER}>\r\nTo: Alice <{ALICE}>, someone@example.test\r\nCc: {ALICE}\r\nSubject: Answer {n}\r\n\
         Message-ID: <answer{n}@contoso.test>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nWe are on it.\r\n"
    )
}

#[tokio::test]
async fn create_item_sends_saves_or_both_from_mime() {
    let emu = start_mail();
    let token = user_token(&emu, USER, &[EWS_SCOPE]);
    let sent_items = r#"<t:DistinguishedFolderId Id="sentitems" />"#;

    // SendAndSaveCopy: a copy in Sent Items, exactly the MIME given, and one delivery to Alice
    // (named in To and Cc); no item id in the answer.
    let (s, x) = soap(&emu, &token, &[], "", &create_item("SendAndSaveCopy", sent_items, &outgoing(1))).await;
    assert_eq!(s, 200, "{x}");
    let doc = roxmltree::Document::parse(&x).unwrap();
    assert_eq!(codes(&doc), ["NoError"], "{x}");
    assert!(all(&doc, "CreateItemResponseMessage").len() == 1 && all(&doc, "ItemId").is_empty(), "{x}");
    let sent = emu.messages(USER, "sentitems").unwrap();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].is_read);
    assert_eq!(emu.mime(USER, &sent[0].id).unwrap(), outgoing(1).as_bytes());
    let got = emu.messages(ALICE, "inbox").unwrap();
    assert_eq!(got.len(), 1, "once, though named twice: {got:?}");
    assert_eq!((got[0].subject.as_str(), got[0].is_read), ("Answer 1", false));
    assert_eq!(emu.mime(ALICE, &got[0].id).unwrap(), outgoing(1).as_bytes(), "headers travel as given");

    // Without SavedItemFolderId, SendAndSaveCopy keeps the copy in Sent Items too.
    let (_, x) = soap(&emu, &token, &[], "", &create_item("SendAndSaveCopy", "", &outgoing(2))).await;
    assert_eq!(codes(&roxmltree::Document::parse(&x).unwrap()), ["NoError"]);
    assert_eq!(emu.count(USER, "sentitems").unwrap(), 2);

    // SendOnly: sent, no copy.
    let (_, x) = soap(&emu, &token, &[], "", &create_item("SendOnly", "", &outgoing(3))).await;
    assert_eq!(codes(&roxmltree::Document::parse(&x).unwrap()), ["NoError"]);
    assert_eq!(emu.count(USER, "sentitems").unwrap(), 2);
    assert_eq!(emu.count(ALICE, "inbox").unwrap(), 3);

    // SaveOnly: saved where asked, with its id in the answer; nothing sent.
    let drafts = r#"<t:DistinguishedFolderId Id="drafts" />"#;
    let (_, x) = soap(&emu, &token, &[], "", &create_item("SaveOnly", drafts, &outgoing(4))).await;
    let doc = roxmltree::Document::parse(&x).unwrap();
    assert_eq!(codes(&doc), ["NoError"]);
    let draft = emu.messages(USER, "drafts").unwrap();
    assert_eq!(draft.len(), 1);
    assert_eq!(all(&doc, "ItemId")[0].attribute("Id").unwrap(), draft[0].id.replace('-', "+").replace('_', "/"));
    assert_eq!(emu.count(ALICE, "inbox").unwrap(), 3);
}

#[tokio::test]
async fn create_item_refuses_bad_input_with_ews_errors() {
    let emu = start_mail();
    let token = user_token(&emu, USER, &[EWS_SCOPE]);
    let sent_items = r#"<t:DistinguishedFolderId Id="sentitems" />"#;
    let code = |x: &str| codes(&roxmltree::Document::parse(x).unwrap());
    let without_mime = |extra: &str| {
        format!(
            r#"<m:CreateItem MessageDisposition="SendAndSaveCopy"><m:Items><t:Message><t:Subject>Hi</t:Subject>{extra}</t:Message></m:Items></m:CreateItem>"#
        )
    };
    let cases = [
        // No MimeContent and nobody to send to (ResponseCode reference: ErrorInvalidRecipients).
        (without_mime(""), "ErrorInvalidRecipients"),
        // Recipients given as properties: this server needs the MIME.
        (
            without_mime(&format!("<t:ToRecipients><t:Mailbox><t:EmailAddress>{ALICE}</t:EmailAddress></t:Mailbox></t:ToRecipients>")),
            "ErrorInvalidRequest",
        ),
        (create_item("SendAndSaveCopy", sent_items, "").replace("<t:MimeContent CharacterSet=\"UTF-8\"></t:MimeContent>", "<t:MimeContent/>"), "ErrorMimeContentInvalid"),
        (create_item("SendAndSaveCopy", sent_items, "x").replace(">eA==<", ">%%%not base64<"), "ErrorMimeContentInvalidBase64String"),
        // A MIME message with no To or Cc.
        (create_item("SendAndSaveCopy", sent_items, &outgoing(1).replace(&format!("To: Alice <{ALICE}>, someone@example.test\r\nCc: {ALICE}\r\n"), "")), "ErrorInvalidRecipients"),
        (create_item("SendAndSaveCopy", sent_items, &outgoing(1)).replace(" MessageDisposition=\"SendAndSaveCopy\"", ""), "ErrorMessageDispositionRequired"),
        (create_item("SendAndSaveCopy", r#"<t:FolderId Id="AAMkAnope" />"#, &outgoing(1)), "ErrorInvalidIdMalformed"),
        (create_item("SendAndSaveCopy", r#"<t:DistinguishedFolderId Id="nosuchfolder" />"#, &outgoing(1)), "ErrorSavedItemFolderNotFound"),
        (
            r#"<m:CreateItem MessageDisposition="SaveOnly"><m:Items><t:CalendarItem><t:Subject>Meet</t:Subject></t:CalendarItem></m:Items></m:CreateItem>"#.to_string(),
            "ErrorInvalidRequest",
        ),
    ];
    for (body, want) in &cases {
        let (s, x) = soap(&emu, &token, &[], "", body).await;
        assert_eq!((s, code(&x)), (200, vec![want.to_string()]), "{body}\n{x}");
        assert!(x.contains("<m:MessageText>"), "{x}");
    }
    // Whole-request faults: an unknown disposition, no items.
    for body in [
        create_item("SendLater", sent_items, &outgoing(1)),
        r#"<m:CreateItem MessageDisposition="SendOnly"><m:Items/></m:CreateItem>"#.to_string(),
    ] {
        let (s, x) = soap(&emu, &token, &[], "", &body).await;
        assert_eq!(s, 500, "{x}");
        assert!(x.contains("ErrorSchemaValidation"), "{x}");
    }
    // Several items: each answered on its own.
    let two = create_item("SendOnly", "", &outgoing(5))
        .replace("</m:Items>", "<t:Message><t:MimeContent>%%%</t:MimeContent></t:Message></m:Items>");
    let (_, x) = soap(&emu, &token, &[], "", &two).await;
    assert_eq!(code(&x), ["NoError", "ErrorMimeContentInvalidBase64String"], "{x}");
    assert_eq!(emu.count(ALICE, "inbox").unwrap(), 1, "only the good one went");
    assert_eq!(emu.count(USER, "sentitems").unwrap(), 0);
    assert_eq!(emu.count(USER, "drafts").unwrap(), 0);
}

/// Full access lets a delegate read a shared mailbox, not send as it: without Send As the
/// answer is ErrorSendAsDenied and the message stays in the mailbox's Drafts (ResponseCode
/// reference). App-only callers impersonate the mailbox and send as it.
#[tokio::test]
async fn sending_from_another_mailbox_needs_send_as() {
    let emu = start_mail();
    let token = user_token(&emu, USER, &[EWS_SCOPE]);
    emu.grant_mailbox_access(MailboxGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), username: USER.into() })
        .unwrap();
    let shared_sent = format!(
        r#"<t:DistinguishedFolderId Id="sentitems"><t:Mailbox><t:EmailAddress>{SHARED}</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>"#
    );
    let from_shared = outgoing(1).replace(&format!("From: Robot <{USER}>"), &format!("From: Support <{SHARED}>"));
    let body = create_item("SendAndSaveCopy", &shared_sent, &from_shared);
    let (s, x) = soap(&emu, &token, &[], "", &body).await;
    assert_eq!(s, 200, "{x}");
    let doc = roxmltree::Document::parse(&x).unwrap();
    assert_eq!(codes(&doc), ["ErrorSendAsDenied"], "{x}");
    assert!(text_of(&doc, "MessageText").contains("does not have the right to send mail"), "{x}");
    assert_eq!(emu.count(SHARED, "drafts").unwrap(), 1, "left in Drafts");
    assert_eq!((emu.count(SHARED, "sentitems").unwrap(), emu.count(ALICE, "inbox").unwrap()), (0, 0));

    // Send As, granted through the admin API.
    let grant = serde_json::json!({"tenant": DOMAIN, "mailbox": SHARED, "username": USER});
    let r = client().post(format!("{}/_admin/mailboxes/send-as", emu.base_url())).json(&grant).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, x) = soap(&emu, &token, &[], "", &body).await;
    assert_eq!(codes(&roxmltree::Document::parse(&x).unwrap()), ["NoError"], "{x}");
    assert_eq!((emu.count(SHARED, "sentitems").unwrap(), emu.count(ALICE, "inbox").unwrap()), (1, 1));
    assert_eq!(emu.count(USER, "sentitems").unwrap(), 0, "kept in the shared mailbox, not the caller's");

    // App-only, impersonating the shared mailbox.
    let app = app_token(&emu, EWS).await;
    let (s, x) = soap(
        &emu,
        &app,
        &[("X-AnchorMailbox", SHARED)],
        &impersonate(SHARED),
        &create_item("SendAndSaveCopy", r#"<t:DistinguishedFolderId Id="sentitems" />"#, &from_shared),
    )
    .await;
    assert_eq!((s, codes(&roxmltree::Document::parse(&x).unwrap())), (200, vec!["NoError".to_string()]), "{x}");
    assert_eq!((emu.count(SHARED, "sentitems").unwrap(), emu.count(ALICE, "inbox").unwrap()), (2, 2));
}
