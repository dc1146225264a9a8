//! Exchange Web Services (`POST /EWS/Exchange.asmx`, SOAP 1.1) on the same mailbox store as
//! Graph: FindFolder, GetFolder, CreateFolder, SyncFolderItems, FindItem, GetItem, MoveItem,
//! UpdateItem, DeleteItem and CreateItem (messages from MIME: save, send, or both), with EWS's response messages (`ResponseClass`, `m:ResponseCode`), its SOAP
//! faults, OAuth bearer tokens for Exchange Online and `ExchangeImpersonation` for app-only tokens,
//! or Basic / NTLM sign-in as Exchange Server on-premises (`ewsauth`).
//!
//! Requests are read by element local names (namespace prefixes vary between clients); answers
//! use the `s:`/`m:`/`t:` prefixes Exchange Online uses.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use roxmltree::{Document, Node};
use serde::{Deserialize, Serialize};

use crate::config::EwsBlockBody;
use crate::ewsauth::{self, Refusal};
use crate::graph::iso;
use crate::mail::{Folder, MailError, Mailbox, Message, from_ews_id, id_well_formed, summarize};
use crate::mailauth::{self, Api, Caller, Denied, Need, Slot};
use crate::server::Connection;
use crate::state::Emu;

const NS_M: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";
const NS_T: &str = "http://schemas.microsoft.com/exchange/services/2006/types";
const NS_E: &str = "http://schemas.microsoft.com/exchange/services/2006/errors";
/// Back-off announced when the (app, mailbox) concurrency limit is hit.
const CONCURRENCY_BACK_OFF_MS: u64 = 1000;
/// `MaxChangesReturned` bounds (the schema's restriction).
const MAX_CHANGES: std::ops::RangeInclusive<usize> = 1..=512;

/// An error answered in a response message (`ResponseClass="Error"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
struct EwsError {
    code: &'static str,
    message: String,
}

impl EwsError {
    fn new(code: &'static str, message: impl Into<String>) -> EwsError {
        EwsError { code, message: message.into() }
    }

    fn item_not_found() -> EwsError {
        EwsError::new("ErrorItemNotFound", "The specified object was not found in the store.")
    }

    fn folder_not_found() -> EwsError {
        EwsError::new("ErrorFolderNotFound", "The specified folder could not be found in the store.")
    }

    fn malformed() -> EwsError {
        EwsError::new("ErrorInvalidIdMalformed", "Id is malformed.")
    }

    fn access_denied() -> EwsError {
        EwsError::new("ErrorAccessDenied", "Access is denied. Check credentials and try again.")
    }
}

impl From<MailError> for EwsError {
    fn from(e: MailError) -> EwsError {
        match e {
            MailError::ItemNotFound => EwsError::item_not_found(),
            MailError::FolderNotFound => EwsError::folder_not_found(),
            MailError::FolderExists => EwsError::new("ErrorFolderExists", e.to_string()),
            MailError::Invalid(m) => EwsError::new("ErrorInvalidRequest", m),
        }
    }
}

/// A failure of the whole request: a SOAP fault (HTTP 500) or a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Failure {
    #[error("{code}: {message}")]
    Fault { code: &'static str, message: String, back_off_ms: Option<u64> },
    #[error("401: {0}")]
    Unauthorized(Refusal),
}

impl Failure {
    fn fault(code: &'static str, message: impl Into<String>) -> Failure {
        Failure::Fault { code, message: message.into(), back_off_ms: None }
    }

    fn schema(message: impl Into<String>) -> Failure {
        Failure::fault("ErrorSchemaValidation", message)
    }

    fn response(&self) -> Response {
        match self {
            Failure::Fault { code, message, back_off_ms } => {
                soap_fault(StatusCode::INTERNAL_SERVER_ERROR, code, message, *back_off_ms)
            }
            Failure::Unauthorized(refusal) => refusal.response(),
        }
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml; charset=utf-8"));
    r
}

/// A SOAP fault in Exchange's shape: `faultcode` `a:{code}`, and in `detail` the
/// `e:ResponseCode`, `e:Message` and, for throttling, `t:MessageXml` with `BackOffMilliseconds`.
fn soap_fault(status: StatusCode, code: &str, message: &str, back_off_ms: Option<u64>) -> Response {
    let message = esc(message);
    let back_off = back_off_ms
        .map(|ms| {
            format!(
                "<t:MessageXml xmlns:t=\"{NS_T}\"><t:Value Name=\"BackOffMilliseconds\">{ms}</t:Value></t:MessageXml>"
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><s:Fault>\
         <faultcode xmlns:a=\"{NS_T}\">a:{code}</faultcode><faultstring xml:lang=\"en-US\">{message}</faultstring>\
         <detail><e:ResponseCode xmlns:e=\"{NS_E}\">{code}</e:ResponseCode><e:Message xmlns:e=\"{NS_E}\">{message}</e:Message>{back_off}</detail>\
         </s:Fault></s:Body></s:Envelope>"
    );
    xml_response(status, body)
}

/// EWS's answer to throttling and injected faults: a SOAP fault `ErrorServerBusy` (HTTP 500 for an
/// injected 429, else the injected status), with `BackOffMilliseconds` when a retry delay is known.
pub(crate) fn fault_response(status: StatusCode, retry_after: Option<u64>) -> Response {
    let status = if status == StatusCode::TOO_MANY_REQUESTS { StatusCode::INTERNAL_SERVER_ERROR } else { status };
    soap_fault(
        status,
        "ErrorServerBusy",
        "The server cannot service this request right now. Try again later.",
        retry_after.map(|s| s * 1000),
    )
}

/// The 403 of a blocked EWS call. Exchange Online's wording is not documented; these bodies are
/// the emulator's, in the shapes seen in the field: an HTML page, a line of text, a SOAP fault,
/// or nothing.
fn blocked_response(body: EwsBlockBody) -> Response {
    let (content_type, text) = match body {
        EwsBlockBody::Html => (
            "text/html; charset=utf-8",
            "<!DOCTYPE html><html><head><title>403 - Forbidden</title></head><body><h1>403 - Forbidden: Access is \
             denied.</h1><p>Exchange Web Services are not enabled for this organization, or this application is not \
             on its list of applications allowed to use them.</p></body></html>"
                .to_string(),
        ),
        EwsBlockBody::Text => (
            "text/plain; charset=utf-8",
            "EWS is blocked: Exchange Web Services are not enabled for this organization or this application."
                .to_string(),
        ),
        EwsBlockBody::Soap => {
            return soap_fault(
                StatusCode::FORBIDDEN,
                "ErrorAccessDenied",
                "Exchange Web Services are not enabled for this organization or this application.",
                None,
            );
        }
        EwsBlockBody::Empty => return StatusCode::FORBIDDEN.into_response(),
    };
    let mut r = (StatusCode::FORBIDDEN, text).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

// ---- reading requests ----

fn kids<'a, 'i>(n: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    n.children().filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn kid<'a, 'i>(n: Node<'a, 'i>, name: &'static str) -> Option<Node<'a, 'i>> {
    kids(n, name).next()
}

fn text(n: Node<'_, '_>) -> String {
    n.text().unwrap_or_default().trim().to_string()
}

/// A folder as a request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FolderRef {
    Id(String),
    /// A `DistinguishedFolderId` (well-known name), maybe in another mailbox.
    Named {
        name: String,
        mailbox: Option<String>,
    },
}

/// The `FolderId` / `DistinguishedFolderId` children of a node.
fn folder_refs(n: Node<'_, '_>) -> Vec<FolderRef> {
    n.children()
        .filter(|c| c.is_element())
        .filter_map(|c| match c.tag_name().name() {
            "FolderId" => Some(FolderRef::Id(c.attribute("Id").unwrap_or_default().to_string())),
            "DistinguishedFolderId" => Some(FolderRef::Named {
                name: c.attribute("Id").unwrap_or_default().to_string(),
                mailbox: kid(c, "Mailbox").and_then(|m| kid(m, "EmailAddress")).map(text),
            }),
            _ => None,
        })
        .collect()
}

fn item_ids(n: Option<Node<'_, '_>>) -> Vec<String> {
    n.map(|n| kids(n, "ItemId").map(|i| i.attribute("Id").unwrap_or_default().to_string()).collect())
        .unwrap_or_default()
}

fn resolve_folder<'m>(mb: &'m Mailbox, r: &FolderRef) -> Result<&'m Folder, EwsError> {
    match r {
        FolderRef::Id(id) if !id_well_formed(id) => Err(EwsError::malformed()),
        FolderRef::Id(id) => mb.folder(id).ok_or_else(EwsError::folder_not_found),
        FolderRef::Named { name, .. } => {
            // `root` is above the IPM subtree; the emulator has one root for both.
            let name = if name == "root" { "msgfolderroot" } else { name.as_str() };
            mb.folders.iter().find(|f| f.well_known == Some(name)).ok_or_else(EwsError::folder_not_found)
        }
    }
}

fn find_message<'m>(mb: &'m Mailbox, id: &str) -> Result<&'m Message, EwsError> {
    if !id_well_formed(id) {
        return Err(EwsError::malformed());
    }
    mb.message(id).ok_or_else(EwsError::item_not_found)
}

/// EWS spells ids in standard base64; the store keeps Graph's URL-safe spelling.
fn ews_id(id: &str) -> String {
    id.replace('-', "+").replace('_', "/")
}

fn folder_change_key(f: &Folder) -> String {
    format!("AQAAABYAAA{}", &f.id[f.id.len() - 12..])
}

// ---- the endpoint ----

/// `POST /EWS/Exchange.asmx`
pub(crate) async fn entry(
    State(emu): State<Arc<Emu>>,
    conn: Option<Extension<Connection>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&emu, conn.map(|Extension(c)| c), &headers, &body).await {
        Ok(r) => r,
        Err(f) => {
            tracing::debug!(error = %f, "EWS request failed");
            f.response()
        }
    }
}

/// The request's operation, its target mailbox and the open slot on it.
struct Cx<'a> {
    emu: &'a Arc<Emu>,
    mailbox: String,
    /// `RequestServerVersion` of the SOAP header (empty when absent).
    version: String,
    _slot: Slot,
}

/// Schema versions before the one that brought `SuppressReadReceipts` (Exchange 2013 SP1).
const BEFORE_SUPPRESS_READ_RECEIPTS: [&str; 6] =
    ["Exchange2007", "Exchange2007_SP1", "Exchange2010", "Exchange2010_SP1", "Exchange2010_SP2", "Exchange2013"];

impl Cx<'_> {
    /// Whether the operation suppresses read receipts: `SuppressReadReceipts="true"` under a
    /// `RequestServerVersion` whose schema has the attribute (Exchange2013_SP1 or later). Under an
    /// older or missing version the emulator does not honour it, so a client that forgets the
    /// version sees receipts go out here rather than in production.
    fn suppresses_read_receipts(&self, op: Node<'_, '_>) -> bool {
        let asked = op.attribute("SuppressReadReceipts").is_some_and(|v| v == "true" || v == "1");
        asked && !self.version.is_empty() && !BEFORE_SUPPRESS_READ_RECEIPTS.contains(&self.version.as_str())
    }
}

impl Cx<'_> {
    fn with<T>(&self, f: impl FnOnce(&mut Mailbox) -> T) -> T {
        let mut mail = self.emu.mail();
        let mb = mail.get_mut(&self.mailbox).expect("an open mailbox stays while its slot is held");
        f(mb)
    }
}

async fn handle(
    emu: &Arc<Emu>,
    conn: Option<Connection>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Failure> {
    let caller = ewsauth::authenticate(emu, headers, conn).map_err(Failure::Unauthorized)?;
    // Exchange Online's EWS block decides by the app id, so after authentication.
    if let Some(body) = emu.ews_block_for(&caller) {
        tracing::debug!(client_id = %caller.client_id, "EWS blocked for this caller");
        return Ok(blocked_response(body));
    }
    let xml = std::str::from_utf8(body).map_err(|_| Failure::schema("The request is not UTF-8."))?;
    let doc =
        Document::parse(xml).map_err(|e| Failure::schema(format!("The request failed schema validation: {e}")))?;
    let env = doc.root_element();
    if env.tag_name().name() != "Envelope" {
        return Err(Failure::schema("The request is not a SOAP envelope."));
    }
    let op = kid(env, "Body")
        .and_then(|b| b.children().find(|c| c.is_element()))
        .ok_or_else(|| Failure::schema("The SOAP body is empty."))?;
    let version = kid(env, "Header")
        .and_then(|h| kid(h, "RequestServerVersion"))
        .and_then(|v| v.attribute("Version"))
        .unwrap_or_default()
        .to_string();
    let impersonated = kid(env, "Header")
        .and_then(|h| kid(h, "ExchangeImpersonation"))
        .map(|i| {
            kid(i, "ConnectingSID")
                .and_then(|s| kid(s, "SmtpAddress").or_else(|| kid(s, "PrimarySmtpAddress")))
                .map(text)
                .ok_or_else(|| {
                    Failure::fault(
                        "ErrorInvalidExchangeImpersonationHeaderData",
                        "ExchangeImpersonation SOAP header must name the mailbox with ConnectingSID/SmtpAddress.",
                    )
                })
        })
        .transpose()?;
    let mailbox = target_mailbox(emu, &caller, headers, impersonated, op)?;
    let name = op.tag_name().name();
    let need = if matches!(name, "FindFolder" | "GetFolder" | "SyncFolderItems" | "FindItem" | "GetItem") {
        Need::Read
    } else {
        Need::Write
    };
    tracing::debug!(op = name, mailbox, "EWS request");
    let slot = match mailauth::open(emu, &caller, &mailbox, Api::Ews, need).await {
        Ok(s) => s,
        Err(Denied::Concurrency) => {
            return Err(Failure::Fault {
                code: "ErrorServerBusy",
                message: "The server cannot service this request right now. Try again later.".into(),
                back_off_ms: Some(CONCURRENCY_BACK_OFF_MS),
            });
        }
        Err(Denied::NoMailbox(_)) => {
            return Err(Failure::fault(
                "ErrorNonExistentMailbox",
                format!("The SMTP address has no mailbox associated with it: {mailbox}"),
            ));
        }
        Err(Denied::Forbidden | Denied::Policy) if caller.user.is_some() => {
            // A delegate without access gets the operation's response messages with ErrorAccessDenied.
            return Ok(envelope(name, vec![error_message(name, &EwsError::access_denied())]));
        }
        Err(_) => {
            return Err(Failure::fault(
                "ErrorImpersonateUserDenied",
                "The account does not have permission to impersonate the requested user.",
            ));
        }
    };
    let cx = Cx { emu, mailbox: slot.mailbox.clone(), version, _slot: slot };
    let messages = match name {
        "FindFolder" => find_folder(&cx, op)?,
        "GetFolder" => get_folder(&cx, op)?,
        "CreateFolder" => create_folder(&cx, op)?,
        "SyncFolderItems" => sync_folder_items(&cx, op)?,
        "FindItem" => find_item(&cx, op)?,
        "GetItem" => get_item(&cx, op)?,
        "MoveItem" => move_item(&cx, op)?,
        "UpdateItem" => update_item(&cx, op)?,
        "DeleteItem" => delete_item(&cx, op)?,
        "CreateItem" => create_item(&cx, &caller, op)?,
        other => {
            return Err(Failure::fault(
                "ErrorInvalidRequest",
                format!("The operation {other} is not supported by this server."),
            ));
        }
    };
    Ok(envelope(name, messages))
}

/// Which mailbox a request works on. App-only: the impersonated one (and `X-AnchorMailbox` must
/// be sent, as Exchange Online requires for routing). Delegated: a `DistinguishedFolderId`'s
/// `Mailbox`, else the mailbox holding the first id the request names, else the user's own.
fn target_mailbox(
    emu: &Emu,
    caller: &Caller,
    headers: &HeaderMap,
    impersonated: Option<String>,
    op: Node<'_, '_>,
) -> Result<String, Failure> {
    let Some((oid, _)) = &caller.user else {
        let smtp = impersonated.ok_or_else(|| {
            Failure::fault(
                "ErrorInvalidExchangeImpersonationHeaderData",
                "ExchangeImpersonation SOAP header must be present for this type of OAuth token.",
            )
        })?;
        let anchor = headers.get("x-anchormailbox").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if anchor.is_empty() {
            return Err(Failure::fault(
                "ErrorMissingEmailAddress",
                "The X-AnchorMailbox HTTP header must name the impersonated mailbox.",
            ));
        }
        return Ok(smtp);
    };
    if impersonated.is_some() {
        return Err(Failure::fault(
            "ErrorImpersonateUserDenied",
            "The account does not have permission to impersonate the requested user.",
        ));
    }
    if let Some(addr) = op
        .descendants()
        .filter(|n| n.tag_name().name() == "DistinguishedFolderId")
        .find_map(|n| kid(n, "Mailbox").and_then(|m| kid(m, "EmailAddress")).map(text).filter(|s| !s.is_empty()))
    {
        return Ok(addr);
    }
    let ids: Vec<&str> = op
        .descendants()
        .filter(|n| matches!(n.tag_name().name(), "ItemId" | "FolderId"))
        .filter_map(|n| n.attribute("Id"))
        .collect();
    let mail = emu.mail();
    for id in ids {
        if let Some(mb) = mail
            .mailboxes
            .iter()
            .filter(|m| m.tenant_id == caller.tenant_id)
            .find(|m| m.message(id).is_some() || m.folders.iter().any(|f| f.id == from_ews_id(id)))
        {
            return Ok(mb.address.clone());
        }
    }
    Ok(oid.clone())
}

// ---- writing answers ----

fn envelope(op: &str, messages: Vec<String>) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">\
         <s:Header><h:ServerVersionInfo MajorVersion=\"15\" MinorVersion=\"20\" MajorBuildNumber=\"8769\" MinorBuildNumber=\"21\" \
         Version=\"V2018_01_08\" xmlns:h=\"{NS_T}\" xmlns=\"{NS_T}\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"/></s:Header>\
         <s:Body xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">\
         <m:{op}Response xmlns:m=\"{NS_M}\" xmlns:t=\"{NS_T}\"><m:ResponseMessages>{}</m:ResponseMessages></m:{op}Response>\
         </s:Body></s:Envelope>",
        messages.concat()
    );
    xml_response(StatusCode::OK, body)
}

fn ok_message(op: &str, inner: &str) -> String {
    format!(
        "<m:{op}ResponseMessage ResponseClass=\"Success\"><m:ResponseCode>NoError</m:ResponseCode>{inner}</m:{op}ResponseMessage>"
    )
}

fn error_message(op: &str, e: &EwsError) -> String {
    format!(
        "<m:{op}ResponseMessage ResponseClass=\"Error\"><m:MessageText>{}</m:MessageText><m:ResponseCode>{}</m:ResponseCode>\
         <m:DescriptiveLinkKey>0</m:DescriptiveLinkKey></m:{op}ResponseMessage>",
        esc(&e.message),
        e.code
    )
}

fn message_of(op: &str, r: Result<String, EwsError>) -> String {
    match r {
        Ok(inner) => ok_message(op, &inner),
        Err(e) => error_message(op, &e),
    }
}

fn item_id_xml(m: &Message) -> String {
    format!("<t:ItemId Id=\"{}\" ChangeKey=\"{}\"/>", ews_id(&m.rest_id), m.change_key())
}

fn folder_xml(mb: &Mailbox, f: &Folder) -> String {
    let parent = f
        .parent
        .as_deref()
        .and_then(|p| mb.folders.iter().find(|x| x.id == p))
        .map(|p| format!("<t:ParentFolderId Id=\"{}\" ChangeKey=\"{}\"/>", ews_id(&p.id), folder_change_key(p)))
        .unwrap_or_default();
    format!(
        "<t:Folder><t:FolderId Id=\"{}\" ChangeKey=\"{}\"/>{parent}<t:FolderClass>IPF.Note</t:FolderClass>\
         <t:DisplayName>{}</t:DisplayName><t:TotalCount>{}</t:TotalCount><t:ChildFolderCount>{}</t:ChildFolderCount>\
         <t:UnreadCount>{}</t:UnreadCount></t:Folder>",
        ews_id(&f.id),
        folder_change_key(f),
        esc(&f.display_name),
        mb.in_folder(&f.id).count(),
        mb.children(&f.id).count(),
        mb.in_folder(&f.id).filter(|m| !m.is_read).count(),
    )
}

/// What of an item an `ItemShape` asks for.
#[derive(Debug, Clone, Default)]
struct Shape {
    /// `Default` / `AllProperties` rather than `IdOnly`.
    full: bool,
    mime: bool,
    /// `FieldURI`s of `AdditionalProperties`.
    fields: Vec<String>,
}

impl Shape {
    fn read(n: Option<Node<'_, '_>>) -> Shape {
        let Some(n) = n else { return Shape::default() };
        let full = kid(n, "BaseShape").map(text).is_some_and(|b| b != "IdOnly");
        let fields: Vec<String> = kid(n, "AdditionalProperties")
            .map(|a| a.children().filter_map(|c| c.attribute("FieldURI")).map(str::to_string).collect())
            .unwrap_or_default();
        let mime = kid(n, "IncludeMimeContent").map(text).is_some_and(|t| t == "true" || t == "1")
            || fields.iter().any(|f| f == "item:MimeContent");
        Shape { full, mime, fields }
    }

    fn wants(&self, field: &str) -> bool {
        self.full || self.fields.iter().any(|f| f == field)
    }
}

fn mailbox_xml(tag: &str, a: &crate::mail::Addr) -> String {
    format!(
        "<t:{tag}><t:Mailbox><t:Name>{}</t:Name><t:EmailAddress>{}</t:EmailAddress><t:RoutingType>SMTP</t:RoutingType></t:Mailbox></t:{tag}>",
        esc(&a.name),
        esc(&a.address)
    )
}

/// A `t:Message` with the shape's properties, in the schema's element order.
fn message_xml(mb: &Mailbox, m: &Message, shape: &Shape) -> String {
    let s = &m.summary;
    let mut x = String::from("<t:Message>");
    if shape.mime {
        x += &format!("<t:MimeContent CharacterSet=\"UTF-8\">{}</t:MimeContent>", STANDARD.encode(m.mime.as_slice()));
    }
    x += &item_id_xml(m);
    if shape.wants("item:ParentFolderId")
        && let Some(f) = mb.folders.iter().find(|f| f.id == m.folder)
    {
        x += &format!("<t:ParentFolderId Id=\"{}\" ChangeKey=\"{}\"/>", ews_id(&f.id), folder_change_key(f));
    }
    if shape.wants("item:ItemClass") {
        x += "<t:ItemClass>IPM.Note</t:ItemClass>";
    }
    if shape.wants("item:Subject") {
        x += &format!("<t:Subject>{}</t:Subject>", esc(&s.subject));
    }
    if shape.wants("item:DateTimeReceived") {
        x += &format!("<t:DateTimeReceived>{}</t:DateTimeReceived>", iso(m.received_ms));
    }
    if shape.wants("item:Size") {
        x += &format!("<t:Size>{}</t:Size>", m.mime.len());
    }
    if shape.wants("item:Categories") && !m.categories.is_empty() {
        x += "<t:Categories>";
        for c in &m.categories {
            x += &format!("<t:String>{}</t:String>", esc(c));
        }
        x += "</t:Categories>";
    }
    if shape.wants("item:Importance") {
        let imp = match s.importance {
            "high" => "High",
            "low" => "Low",
            _ => "Normal",
        };
        x += &format!("<t:Importance>{imp}</t:Importance>");
    }
    if shape.wants("item:DateTimeSent") {
        x += &format!("<t:DateTimeSent>{}</t:DateTimeSent>", iso(s.sent_ms.unwrap_or(m.received_ms)));
    }
    if shape.wants("item:DateTimeCreated") {
        x += &format!("<t:DateTimeCreated>{}</t:DateTimeCreated>", iso(m.created_ms));
    }
    if shape.wants("item:HasAttachments") {
        x += &format!("<t:HasAttachments>{}</t:HasAttachments>", s.attachments.iter().any(|a| !a.inline));
    }
    if shape.wants("message:Sender")
        && let Some(a) = &s.sender
    {
        x += &mailbox_xml("Sender", a);
    }
    if shape.wants("message:From")
        && let Some(a) = &s.from
    {
        x += &mailbox_xml("From", a);
    }
    if shape.wants("message:InternetMessageId") && !s.internet_message_id.is_empty() {
        x += &format!("<t:InternetMessageId>{}</t:InternetMessageId>", esc(&s.internet_message_id));
    }
    if shape.wants("message:IsRead") {
        x += &format!("<t:IsRead>{}</t:IsRead>", m.is_read);
    }
    x + "</t:Message>"
}

// ---- operations ----

/// `FindFolder` (`Traversal` `Shallow` or `Deep`, optional `IndexedPageFolderView`).
fn find_folder(cx: &Cx, op: Node<'_, '_>) -> Result<Vec<String>, Failure> {
    let deep = op.attribute("Traversal") == Some("Deep");
    let parents = kid(op, "ParentFolderIds").map(folder_refs).unwrap_or_default();
    if parents.is_empty() {
        return Err(Failure::schema("ParentFolderIds is required."));
    }
    let view = kid(op, "IndexedPageFolderView");
    let offset = view.and_then(|v| v.attribute("Offset")).and_then(|o| o.parse::<usize>().ok()).unwrap_or(0);
    let max = view.and_then(|v| v.attribute("MaxEntriesReturned")).and_then(|o| o.parse::<usize>().ok());
    Ok(cx.with(|mb| {
        parents
            .iter()
            .map(|p| {
                message_of(
                    "FindFolder",
                    resolve_folder(mb, p).map(|parent| {
                        let mut found: Vec<&Folder> = Vec::new();
                        let mut queue = vec![parent.id.clone()];
                        while let Some(id) = queue.pop() {
                            for c in mb.children(&id) {
                                found.push(c);
                                if deep {
                                    queue.push(c.id.clone());
                                }
                            }
                        }
                        let total = found.len();
                        let page: Vec<&Folder> =
                            found.into_iter().skip(offset).take(max.unwrap_or(usize::MAX)).collect();
                        let last = offset + page.len() >= total;
                        let folders: String = page.iter().map(|f| folder_xml(mb, f)).collect();
                        format!(
                            "<m:RootFolder IndexedPagingOffset=\"{}\" TotalItemsInView=\"{total}\" IncludesLastItemInRange=\"{last}\">\
                             <t:Folders>{folders}</t:Folders></m:RootFolder>",
                            offset + page.len()
                        )
                    }),
                )
            })
            .collect()
    }))
}

/// `GetFolder` for `FolderIds` (`FolderId` or `DistinguishedFolderId`).
fn get_folder(cx: &Cx, op: Node<'_, '_>) -> Result<Vec<String>, Failure> {
    let refs = kid(op, "FolderIds").map(folder_refs).unwrap_or_default();
    if refs.is_empty() {
        return Err(Failure::schema("FolderIds is required."));
    }
    Ok(cx.with(|mb| {
        refs.iter()
            .map(|r| {
                message_of(
                    "GetFolder",
                    resolve_folder(mb, r).map(|f| format!("<m:Folders>{}</m:Folders>", folder_xml(mb, f))),
                )
            })
            .collect()
    }))
}

/// `CreateFolder`: `ParentFolderId` and `Folders/Folder/DisplayName` (one message per folder).
fn create_folder(cx: &Cx, op: Node<'_, '_>) -> Result<Vec<String>, Failure> {
    let parent = kid(op, "ParentFolderId")
        .map(folder_refs)
        .and_then(|r| r.into_iter().next())
        .ok_or_else(|| Failure::schema("ParentFolderId is required."))?;
    let names: Vec<String> = kid(op, "Folders")
        .map(|f| {
            f.children()
                .filter(|c| c.is_element())
                .map(|c| kid(c, "DisplayName").map(text).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return Err(Failure::schema("Folders is required."));
    }
    Ok(cx.with(|mb| {
        names
            .iter()
            .map(|name| {
                let r = resolve_folder(mb, &parent).map(|p| p.id.clone()).and_then(|p| {
                    let f = mb.create_folder(&p, name)?;
                    Ok(format!(
                        "<m:Folders><t:Folder><t:FolderId Id=\"{}\" ChangeKey=\"{}\"/></t:Folder></m:Folders>",
                        ews_id(&f.id),
                        folder_change_key(&f)
                    ))
                });
                message_of("CreateFolder", r)
            })
            .collect()
    }))
}

/// SyncFolderItems state (opaque to clients): mailbox, folder, epoch and the change number
/// reached.
#[derive(Serialize, Deserialize)]
struct SyncState {
    m: String,
    f: String,
    e: u64,
    s: u64,
}

/// `SyncFolderItems`: changes after `SyncState` (none: from the start), at most
/// `MaxChangesReturned`, oldest first.
fn sync_folder_items(cx: &Cx, op: Node<'_, '_>) -> Result<Vec<String>, Failure> {
    let shape = Shape::read(kid(op, "ItemShape"));
    let folder = kid(op, "SyncFolderId")
        .map(folder_refs)
        .and_then(|r| r.into_iter().next())
        .ok_or_else(|| Failure::schema("SyncFolderId is required."))?;
    let max = kid(op, "MaxChangesReturned")
        .map(text)
        .and_then(|t| t.parse::<usize>().ok())
        .filter(|n| MAX_CHANGES.contains(n))
        .ok_or_else(|| Failure::schema("MaxChangesReturned must be an integer from 1 to 512."))?;
    let state = kid(op, "SyncState").map(text).filter(|s| !s.is_empty());
    Ok(vec![cx.with(|mb| {
        let r = resolve_folder(mb, &folder).map(|f| f.id.clone()).and_then(|f| {
            let invalid =
                || EwsError::new("ErrorInvalidSyncStateData", "Synchronization state data is corrupt or otherwise invalid.");
            let from = match &state {
                None => 0,
                Some(s) => {
                    let st: SyncState = URL_SAFE_NO_PAD
                        .decode(s)
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .ok_or_else(invalid)?;
                    if st.m != mb.id || st.f != f || st.e != mb.epoch {
                        return Err(invalid());
                    }
                    st.s
                }
            };
            let mut changes: Vec<(u64, String)> = mb
                .in_folder(&f)
                .filter(|m| m.seq > from)
                .map(|m| {
                    let x = if m.created_seq > from {
                        format!("<t:Create>{}</t:Create>", message_xml(mb, m, &shape))
                    } else if m.content_seq > from {
                        format!("<t:Update>{}</t:Update>", message_xml(mb, m, &shape))
                    } else {
                        format!("<t:ReadFlagChange>{}<t:IsRead>{}</t:IsRead></t:ReadFlagChange>", item_id_xml(m), m.is_read)
                    };
                    (m.seq, x)
                })
                .collect();
            // A first sync lists what is there; removals only matter to a client that saw the item.
            if from > 0 {
                changes.extend(mb.tombstones.iter().filter(|t| t.folder == f && t.seq > from).map(|t| {
                    (t.seq, format!("<t:Delete><t:ItemId Id=\"{}\"/></t:Delete>", ews_id(&t.rest_id)))
                }));
            }
            changes.sort_by_key(|(seq, _)| *seq);
            let last = changes.len() <= max;
            changes.truncate(max);
            let reached = if last { mb.seq.max(from) } else { changes.last().map_or(from, |(s, _)| *s) };
            let st = SyncState { m: mb.id.clone(), f: f.clone(), e: mb.epoch, s: reached };
            let st = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&st).expect("serializable"));
            let body: String = changes.into_iter().map(|(_, x)| x).collect();
            Ok(format!(
                "<m:SyncState>{st}</m:SyncState><m:IncludesLastItemInRange>{last}</m:IncludesLastItemInRange><m:Changes>{body}</m:Changes>"
            ))
        });
        message_of("SyncFolderItems", r)
    })])
}

/// `FindItem` (`Traversal` `Shallow`) in `ParentFolderIds`, paged by `IndexedPageItemView`
/// (`MaxEntriesReturned`, `Offset`, `BasePoint`), ordered by `SortOrder` on
/// `item:DateTimeReceived` (default newest first). Restrictions are refused rather than ignored,
/// so a client never mistakes an unfiltered answer for a filtered one.
fn find_item(cx: &Cx, op: Node<'_, '_>) -> Result<Vec<String>, Failure> {
    let shape = Shape::read(kid(op, "ItemShape"));
    let parents = kid(op, "ParentFolderIds").map(folder_refs).unwrap_or_default();
    if parents.is_empty() {
        return Err(Failure::schema("ParentFolderIds is required."));
    }
    if kid(op, "Restriction").is_some() || kid(op, "QueryString").is_some() {
        return Err(Failure::fault(
            "ErrorInvalidRequest",
            "Restrictions and QueryString are not supported by this server.",
        ));
    }
    let view = kid(op, "IndexedPageItemView");
    let num = |a: &str| view.and_then(|v| v.attribute(a)).and_then(|o| o.parse::<usize>().ok());
    let (offset, max) = (num("Offset").unwrap_or(0), num("MaxEntriesReturned"));
    let from_end = view.and_then(|v| v.attribute("BasePoint")) == Some("End");
    let ascending = kid(op, "SortOrder")
        .and_then(|s| kid(s, "FieldOrder"))
        .is_some_and(|f| f.attribute("Order") == Some("Ascending"));
    Ok(cx.with(|mb| {
        parents
            .iter()
            .map(|p| {
                message_of(
                    "FindItem",
                    resolve_folder(mb, p).map(|f| {
                        let mut items: Vec<&Message> = mb.in_folder(&f.id).collect();
                        items.sort_by_key(|m| (m.received_ms, m.created_seq));
                        if !ascending {
                            items.reverse();
                        }
                        let total = items.len();
                        // With BasePoint End the offset counts back from the end; the page keeps the sort order.
                        let (start, end) = if from_end {
                            let end = total.saturating_sub(offset);
                            (end.saturating_sub(max.unwrap_or(end)), end)
                        } else {
                            let start = offset.min(total);
                            (start, start.saturating_add(max.unwrap_or(total)).min(total))
                        };
                        let next = offset + (end - start);
                        let last = if from_end { start == 0 } else { end == total };
                        let body: String = items[start..end].iter().map(|m| message_xml(mb, m, &shape)).collect();
                        format!(
                            "<m:RootFolder IndexedPagingOffset=\"{next}\" TotalItemsInView=\"{total}\" IncludesLastItemInRange=\"{last}\">\
                             <t:Items>{body}</t:Items></m:RootFolder>"
                        )
                    }),
                )
            })
            .collect()
    }))
}

/// `GetItem` for `ItemIds`, shaped by `ItemShape`.
fn get_item(cx: &Cx, op: Node<'_, '_>) -> Result<Vec<String>, Failure> {
    let shape = Shape::read(kid(op, "ItemShape"));
    let ids = item_ids(kid(op, "ItemIds"));
    if ids.is_empty() {
        return Err(Failure::schema("ItemIds is required."));
    }
    Ok(cx.with(|mb| {
        ids.iter()
            .map(|id| {
                message_of(
                    "GetItem",
                    find_message(mb, id).map(|m| format!("<m:Items>{}</m:Items>", message_xml(mb, m, &shape))),
                )
            })
            .collect()
    }))
}

/// `MoveItem` to `ToFolderId`; answers the items under their new ids (unless
/// `ReturnNewItemIds="false"`).
fn move_item(cx: &Cx, op: Node<'_, '_>) -> Result<Vec<String>, Failure> {
    let to = kid(op, "ToFolderId")
        .map(folder_refs)
        .and_then(|r| r.into_iter().next())
        .ok_or_else(|| Failure::schema("ToFolderId is required."))?;
    let ids = item_ids(kid(op, "ItemIds"));
    if ids.is_empty() {
        return Err(Failure::schema("ItemIds is required."));
    }
    let return_ids = op.attribute("ReturnNewItemIds") != Some("false");
    let now = cx.emu.clock.now_ms();
    Ok(cx.with(|mb| {
        ids.iter()
            .map(|id| {
                let r = resolve_folder(mb, &to)
                    .map(|f| f.id.clone())
                    .map_err(|e| {
                        if e.code == "ErrorFolderNotFound" {
                            EwsError::new("ErrorToFolderNotFound", "The destination folder could not be found.")
                        } else {
                            e
                        }
                    })
                    .and_then(|dest| {
                        find_message(mb, id)?;
                        let i = mb.move_message(id, &dest, now)?;
                        Ok(if return_ids {
                            format!("<m:Items><t:Message>{}</t:Message></m:Items>", item_id_xml(&mb.messages[i]))
                        } else {
                            "<m:Items/>".to_string()
                        })
                    });
                message_of("MoveItem", r)
            })
            .collect()
    }))
}

/// One `ItemChange` of `UpdateItem`: the read flag and categories. Marking an unread message
/// read sends the read receipt its sender asked for, unless `suppress`.
fn apply_change(mb: &mut Mailbox, change: Node<'_, '_>, suppress: bool, now: i64) -> Result<String, EwsError> {
    let id = kid(change, "ItemId").and_then(|i| i.attribute("Id")).unwrap_or_default();
    let was_read = find_message(mb, id)?.is_read;
    let (mut is_read, mut categories) = (None, None);
    for u in kid(change, "Updates").into_iter().flat_map(|u| u.children().filter(|c| c.is_element())) {
        let field = kid(u, "FieldURI").and_then(|f| f.attribute("FieldURI")).unwrap_or_default();
        let value = u.children().find(|c| c.is_element() && c.tag_name().name() == "Message");
        match (u.tag_name().name(), field) {
            ("SetItemField", "message:IsRead") => {
                let v = value.and_then(|v| kid(v, "IsRead")).map(text).unwrap_or_default();
                is_read = Some(match v.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(EwsError::new("ErrorInvalidPropertySet", "IsRead must be true or false.")),
                });
            }
            ("SetItemField", "item:Categories") => {
                categories = Some(
                    value
                        .and_then(|v| kid(v, "Categories"))
                        .map(|c| kids(c, "String").map(text).collect())
                        .unwrap_or_default(),
                );
            }
            ("DeleteItemField", "item:Categories") => categories = Some(Vec::new()),
            (_, f) => {
                return Err(EwsError::new(
                    "ErrorInvalidPropertyRequest",
                    format!("The property {f} cannot be updated by this server."),
                ));
            }
        }
    }
    let i = mb.update_message(id, is_read, categories, now)?;
    if is_read == Some(true) && !was_read {
        mb.settle_receipt(i, "read", suppress, "EWS UpdateItem", now);
    }
    Ok(format!(
        "<m:Items><t:Message>{}</t:Message></m:Items><m:ConflictResults><t:Count>0</t:Count></m:ConflictResults>",
        item_id_xml(&mb.messages[i])
    ))
}

/// `UpdateItem` (`MessageDisposition` required for messages; `SaveOnly` is what a message in a
/// mail folder takes).
fn update_item(cx: &Cx, op: Node<'_, '_>) -> Result<Vec<String>, Failure> {
    let changes: Vec<Node> = kid(op, "ItemChanges").map(|c| kids(c, "ItemChange").collect()).unwrap_or_default();
    if changes.is_empty() {
        return Err(Failure::schema("ItemChanges is required."));
    }
    if op.attribute("ConflictResolution").is_none() {
        return Err(Failure::schema("The ConflictResolution attribute is required."));
    }
    let disposition = op.attribute("MessageDisposition");
    let suppress = cx.suppresses_read_receipts(op);
    let now = cx.emu.clock.now_ms();
    Ok(cx.with(|mb| {
        changes
            .iter()
            .map(|c| {
                let r = match disposition {
                    Some("SaveOnly") => apply_change(mb, *c, suppress, now),
                    Some(_) => Err(EwsError::new(
                        "ErrorInvalidOperation",
                        "Only MessageDisposition SaveOnly applies to received messages.",
                    )),
                    None => Err(EwsError::new(
                        "ErrorMessageDispositionRequired",
                        "MessageDisposition is required for this operation.",
                    )),
                };
                message_of("UpdateItem", r)
            })
            .collect()
    }))
}

/// `DeleteItem` (`DeleteType` `HardDelete`, `SoftDelete` or `MoveToDeletedItems`). Deleting an
/// unread message sends the not-read receipt its sender asked for, unless suppressed.
fn delete_item(cx: &Cx, op: Node<'_, '_>) -> Result<Vec<String>, Failure> {
    let to_deleted = match op.attribute("DeleteType") {
        Some("MoveToDeletedItems") => true,
        Some("HardDelete" | "SoftDelete") => false,
        _ => return Err(Failure::schema("DeleteType must be HardDelete, SoftDelete or MoveToDeletedItems.")),
    };
    let ids = item_ids(kid(op, "ItemIds"));
    if ids.is_empty() {
        return Err(Failure::schema("ItemIds is required."));
    }
    let suppress = cx.suppresses_read_receipts(op);
    let now = cx.emu.clock.now_ms();
    Ok(cx.with(|mb| {
        ids.iter()
            .map(|id| {
                let r = find_message(mb, id).map(|m| m.is_read).and_then(|was_read| {
                    if !was_read && let Some(i) = mb.message_index(id) {
                        mb.settle_receipt(i, "not-read", suppress, "EWS DeleteItem", now);
                    }
                    if to_deleted {
                        mb.move_message(id, "deleteditems", now)?;
                    } else {
                        mb.delete_message(id)?;
                    }
                    Ok(String::new())
                });
                message_of("DeleteItem", r)
            })
            .collect()
    }))
}

/// What `CreateItem` does with a message (`MessageDisposition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    SaveOnly,
    SendOnly,
    SendAndSaveCopy,
}

impl Disposition {
    fn sends(self) -> bool {
        self != Disposition::SaveOnly
    }
}

/// `CreateItem` of `t:Message`s from `t:MimeContent` (base64 of the whole MIME message), as the
/// CreateItem reference describes `MessageDisposition`: `SaveOnly` saves it in
/// `SavedItemFolderId` and answers its `ItemId`; `SendOnly` sends it and keeps no copy;
/// `SendAndSaveCopy` sends it and saves a copy in `SavedItemFolderId` (Sent Items when absent,
/// as the MessageDispositionType reference says); the two that send answer no id. Sending is
/// transport into the Inbox of every recipient (`To`/`Cc` of the MIME, plus any
/// `ToRecipients`/`CcRecipients`/`BccRecipients` given beside it) that is a mailbox here. A
/// message built from properties alone (no `MimeContent`) is beyond this server.
fn create_item(cx: &Cx, caller: &Caller, op: Node<'_, '_>) -> Result<Vec<String>, Failure> {
    let items: Vec<Node> =
        kid(op, "Items").map(|i| i.children().filter(|c| c.is_element()).collect()).unwrap_or_default();
    if items.is_empty() {
        return Err(Failure::schema("Items is required and must hold at least one item."));
    }
    let disposition = match op.attribute("MessageDisposition") {
        None => None,
        Some("SaveOnly") => Some(Disposition::SaveOnly),
        Some("SendOnly") => Some(Disposition::SendOnly),
        Some("SendAndSaveCopy") => Some(Disposition::SendAndSaveCopy),
        Some(other) => {
            return Err(Failure::schema(format!(
                "The MessageDisposition attribute is invalid: {other:?} is not SaveOnly, SendOnly or SendAndSaveCopy."
            )));
        }
    };
    let saved = kid(op, "SavedItemFolderId").map(folder_refs).and_then(|r| r.into_iter().next());
    let now = cx.emu.clock.now_ms();
    Ok(items
        .into_iter()
        .map(|item| message_of("CreateItem", create_message(cx, caller, item, disposition, saved.as_ref(), now)))
        .collect())
}

/// One item of `CreateItem`; see [`create_item`].
fn create_message(
    cx: &Cx,
    caller: &Caller,
    item: Node<'_, '_>,
    disposition: Option<Disposition>,
    saved: Option<&FolderRef>,
    now: i64,
) -> Result<String, EwsError> {
    if item.tag_name().name() != "Message" {
        return Err(EwsError::new(
            "ErrorInvalidRequest",
            format!("This server creates Message items only, not {}.", item.tag_name().name()),
        ));
    }
    let disposition = disposition.ok_or_else(|| {
        EwsError::new("ErrorMessageDispositionRequired", "MessageDisposition is required for this operation.")
    })?;
    let named: Vec<String> = ["ToRecipients", "CcRecipients", "BccRecipients"]
        .into_iter()
        .filter_map(|list| kid(item, list))
        .flat_map(|list| kids(list, "Mailbox"))
        .filter_map(|m| kid(m, "EmailAddress").map(text))
        .filter(|a| !a.is_empty())
        .collect();
    let no_recipients = || {
        EwsError::new(
            "ErrorInvalidRecipients",
            "At least one recipient isn't valid., A message can't be sent because it contains no recipients.",
        )
    };
    let mime = match kid(item, "MimeContent") {
        Some(content) => {
            let encoded: String = text(content).split_whitespace().collect();
            if encoded.is_empty() {
                return Err(EwsError::new("ErrorMimeContentInvalid", "The MIME content is empty."));
            }
            STANDARD.decode(encoded).map_err(|_| {
                EwsError::new("ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.")
            })?
        }
        None if disposition.sends() && named.is_empty() => return Err(no_recipients()),
        None => {
            return Err(EwsError::new(
                "ErrorInvalidRequest",
                "This server creates messages from MimeContent only; give the message as MimeContent.",
            ));
        }
    };
    let mut recipients = summarize(&mime).recipients();
    recipients.extend(named);
    if disposition.sends() && recipients.is_empty() {
        return Err(no_recipients());
    }
    let mut mail = cx.emu.mail();
    let mb = mail.get_mut(&cx.mailbox).expect("an open mailbox stays while its slot is held");
    let folder = match saved {
        Some(r) => resolve_folder(mb, r)
            .map_err(|e| {
                if e.code == "ErrorFolderNotFound" {
                    EwsError::new("ErrorSavedItemFolderNotFound", "The folder to save the item in could not be found.")
                } else {
                    e
                }
            })?
            .id
            .clone(),
        None => mb.folder("sentitems").map(|f| f.id.clone()).ok_or_else(EwsError::folder_not_found)?,
    };
    if disposition.sends() && !crate::mailauth::may_send_as(caller, mb) {
        // As the ResponseCode reference describes ErrorSendAsDenied: the message is left in
        // the mailbox's Drafts, unsent.
        mb.deliver("drafts", mime, now, true)?;
        return Err(EwsError::new(
            "ErrorSendAsDenied",
            "The user account which was used to submit this request does not have the right to send mail on \
             behalf of the specified sending account.",
        ));
    }
    let answer = match disposition {
        Disposition::SaveOnly => {
            let i = mb.deliver(&folder, mime, now, true)?;
            return Ok(format!("<m:Items><t:Message>{}</t:Message></m:Items>", item_id_xml(&mb.messages[i])));
        }
        Disposition::SendAndSaveCopy => {
            mb.deliver(&folder, mime.clone(), now, true)?;
            "<m:Items/>".to_string()
        }
        Disposition::SendOnly => "<m:Items/>".to_string(),
    };
    let reached = mail.transport(&recipients, &mime, now);
    tracing::debug!(mailbox = %cx.mailbox, recipients = recipients.len(), reached, "EWS CreateItem sent a message");
    Ok(answer)
}
