//! The Microsoft Graph mail subset under `/v1.0`: mail folders, messages (list, get, `$value`,
//! attachments, update, delete, move), per-folder delta, sendMail and JSON batching, with Graph's
//! error shape, permissions and Outlook's throttling. `/v1.0/subscriptions` (change
//! notifications) is served by `subscriptions`.
//!
//! Paths are dispatched by hand (not with the router) so that `$batch` items run through the
//! very same code as top-level requests.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::mail::{Addr, Folder, MailError, Mailbox, Message, Removal, id_well_formed};
use crate::mailauth::{self, Api, Caller, Denied, Need, Slot};
use crate::state::Emu;

/// Graph's error: status, `code`, `message`, plus headers some of them carry.
#[derive(Debug, Clone)]
pub(crate) struct GraphError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
    pub location: Option<String>,
}

impl GraphError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> GraphError {
        GraphError { status, code, message: message.into(), retry_after: None, location: None }
    }

    fn bad_request(message: impl Into<String>) -> GraphError {
        GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    fn malformed() -> GraphError {
        GraphError::new(StatusCode::BAD_REQUEST, "ErrorInvalidIdMalformed", "Id is malformed.")
    }

    fn not_found() -> GraphError {
        GraphError::new(StatusCode::NOT_FOUND, "ErrorItemNotFound", "The specified object was not found in the store.")
    }

    fn unknown_path() -> GraphError {
        GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", "Resource not found for the segment.")
    }

    fn method() -> GraphError {
        GraphError::new(StatusCode::METHOD_NOT_ALLOWED, "Request_BadRequest", "The HTTP method is not allowed.")
    }

    /// The JSON answer with `request-id`/`client-request-id` in the body and as headers.
    pub fn response(&self, headers: &HeaderMap, now_ms: i64) -> Response {
        let ids = RequestIds::new(headers);
        let date = iso(now_ms);
        let body = json!({"error": {"code": self.code, "message": self.message, "innerError": {
            "date": date, "request-id": ids.request_id, "client-request-id": ids.client_request_id}}});
        let mut r = (self.status, axum::Json(body)).into_response();
        ids.apply(r.headers_mut());
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(l) = self.location.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
            r.headers_mut().insert(header::LOCATION, l);
        }
        r
    }
}

impl From<Denied> for GraphError {
    fn from(d: Denied) -> GraphError {
        let unauth = |m: &str| GraphError::new(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", m);
        match d {
            Denied::NoToken => unauth("Access token is empty."),
            Denied::BadToken => unauth("Access token validation failure."),
            Denied::Expired => unauth("Lifetime validation failed, the token is expired."),
            Denied::WrongAudience => unauth("Access token validation failure. Invalid audience."),
            Denied::NoMailbox(u) => GraphError::new(
                StatusCode::NOT_FOUND,
                "ErrorInvalidUser",
                format!("The requested user '{u}' is invalid."),
            ),
            Denied::RestDisabled => GraphError::new(
                StatusCode::NOT_FOUND,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            ),
            Denied::Forbidden => GraphError::new(
                StatusCode::FORBIDDEN,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            ),
            Denied::Policy => GraphError::new(
                StatusCode::FORBIDDEN,
                "ErrorAccessDenied",
                "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.",
            ),
            Denied::Concurrency => GraphError {
                retry_after: Some(1),
                ..GraphError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                )
            },
            Denied::NeedsUser => {
                GraphError::bad_request("/me request is only valid with delegated authentication flow.")
            }
        }
    }
}

impl From<MailError> for GraphError {
    fn from(e: MailError) -> GraphError {
        match e {
            MailError::ItemNotFound | MailError::FolderNotFound => GraphError::not_found(),
            MailError::FolderExists => GraphError::new(StatusCode::CONFLICT, "ErrorFolderExists", e.to_string()),
            MailError::Invalid(m) => GraphError::new(StatusCode::BAD_REQUEST, "ErrorInvalidRequest", m),
        }
    }
}

/// The error an injected fault status stands for on Graph.
pub(crate) fn fault_error(status: StatusCode, retry_after: Option<u64>) -> GraphError {
    let (code, message) = match status.as_u16() {
        429 => ("TooManyRequests", "Too many requests."),
        503 => ("ServiceUnavailable", "The service is temporarily unavailable. Please retry."),
        504 => ("GatewayTimeout", "The gateway timed out."),
        _ => ("generalException", "An internal server error occurred."),
    };
    GraphError { retry_after, ..GraphError::new(status, code, message) }
}

/// `request-id` (new) and `client-request-id` (the client's, or the request id).
struct RequestIds {
    request_id: String,
    client_request_id: String,
}

impl RequestIds {
    fn new(headers: &HeaderMap) -> RequestIds {
        let request_id = uuid::Uuid::new_v4().to_string();
        let client_request_id = headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| request_id.clone());
        RequestIds { request_id, client_request_id }
    }

    fn apply(&self, h: &mut HeaderMap) {
        for (k, v) in [("request-id", &self.request_id), ("client-request-id", &self.client_request_id)] {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(k, v);
            }
        }
    }
}

/// Graph's date-time format: `2025-07-01T10:00:00Z`.
pub(crate) fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Path segments after `/v1.0`, decoded, with OData key syntax `mailFolders('inbox')` split in two.
pub(crate) fn segments(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in path.trim_matches('/').split('/').filter(|s| !s.is_empty()) {
        let seg = percent_decode(raw);
        match seg.split_once('(') {
            Some((name, key)) if seg.ends_with(')') && !name.is_empty() => {
                out.push(name.to_string());
                let key = key.trim_end_matches(')').trim_matches('\'');
                if !key.is_empty() {
                    out.push(key.to_string());
                }
            }
            _ => out.push(seg),
        }
    }
    out
}

/// Graph's segment names are case-insensitive (change notifications name a message
/// `Users/{id}/Messages/{id}`, and clients GET that): known names in their canonical spelling.
fn canonical(mut segs: Vec<String>) -> Vec<String> {
    const NAMES: [&str; 14] = [
        "users",
        "me",
        "mailFolders",
        "childFolders",
        "messages",
        "attachments",
        "move",
        "sendMail",
        "delta",
        "subscriptions",
        "reauthorize",
        "microsoft.graph.move",
        "microsoft.graph.sendMail",
        "microsoft.graph.delta",
    ];
    for s in segs.iter_mut() {
        if let Some(n) = NAMES.iter().find(|n| n.eq_ignore_ascii_case(s)) {
            *s = n.to_string();
        }
    }
    segs
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

/// A Prefer header directive, e.g. `odata.maxpagesize=50`, `IdType="ImmutableId"`.
fn prefer(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

/// Immutable ids only with the exact (case-sensitive) `Prefer: IdType="ImmutableId"`.
fn wants_immutable(headers: &HeaderMap) -> bool {
    prefer(headers, "IdType").as_deref() == Some("\"ImmutableId\"")
}

/// One Graph request, as the top level and `$batch` items both give it.
pub(crate) struct GraphRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// `ANY /v1.0/*`
pub(crate) async fn entry(
    State(emu): State<Arc<Emu>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = GraphRequest { method, uri, headers, body };
    let path = req.uri.path().to_string();
    if path.trim_end_matches('/') == "/v1.0/$batch" {
        return crate::graphbatch::batch(emu, req).await;
    }
    handle(&emu, &req).await
}

/// Runs one request and answers it (errors in Graph's shape, ids headers on every answer).
pub(crate) async fn handle(emu: &Arc<Emu>, req: &GraphRequest) -> Response {
    match dispatch(emu, req).await {
        Ok(mut r) => {
            RequestIds::new(&req.headers).apply(r.headers_mut());
            r
        }
        Err(e) => {
            tracing::debug!(path = %req.uri.path(), code = e.code, "graph error");
            e.response(&req.headers, emu.clock.now_ms())
        }
    }
}

/// What the path asks for, once the user and folder segments are read.
enum Target {
    Folders { parent: Option<String> },
    Folder(String),
    Messages { folder: Option<String> },
    Delta(String),
    Message(String),
    Value(String),
    Attachments(String),
    Attachment(String, String),
    Move(String),
    SendMail,
}

fn target(rest: &[String]) -> Result<Target, GraphError> {
    let s: Vec<&str> = rest.iter().map(String::as_str).collect();
    // Collapse mailFolders/{a}/childFolders/{b}/… to the innermost folder.
    let mut folder: Option<&str> = None;
    let mut i = 0;
    if s.first() == Some(&"mailFolders") {
        if s.len() == 1 {
            return Ok(Target::Folders { parent: None });
        }
        folder = Some(s[1]);
        i = 2;
        while s.get(i) == Some(&"childFolders") {
            match s.get(i + 1) {
                Some(c) => {
                    folder = Some(c);
                    i += 2;
                }
                None => return Ok(Target::Folders { parent: folder.map(str::to_string) }),
            }
        }
    }
    let f = folder.map(str::to_string);
    Ok(match (&s[i..], f) {
        ([], Some(f)) => Target::Folder(f),
        (["messages"], f) => Target::Messages { folder: f },
        (["messages", "delta" | "delta()" | "microsoft.graph.delta"], Some(f)) => Target::Delta(f),
        (["messages", id], _) => Target::Message(id.to_string()),
        (["messages", id, "$value"], _) => Target::Value(id.to_string()),
        (["messages", id, "attachments"], _) => Target::Attachments(id.to_string()),
        (["messages", id, "attachments", a], _) => Target::Attachment(id.to_string(), a.to_string()),
        (["messages", id, "move" | "microsoft.graph.move"], _) => Target::Move(id.to_string()),
        (["sendMail" | "microsoft.graph.sendMail"], None) => Target::SendMail,
        _ => return Err(GraphError::unknown_path()),
    })
}

/// The request context of an opened mailbox.
struct Cx<'a> {
    emu: &'a Arc<Emu>,
    req: &'a GraphRequest,
    immutable: bool,
    _slot: Slot,
    mailbox: String,
}

impl Cx<'_> {
    fn with<T>(&self, f: impl FnOnce(&mut Mailbox) -> Result<T, GraphError>) -> Result<T, GraphError> {
        let mut mail = self.emu.mail();
        let mb = mail.get_mut(&self.mailbox).map_err(|_| GraphError::not_found())?;
        f(mb)
    }
}

async fn dispatch(emu: &Arc<Emu>, req: &GraphRequest) -> Result<Response, GraphError> {
    let segs = canonical(segments(req.uri.path()));
    let segs = match segs.first().map(String::as_str) {
        Some("v1.0") => &segs[1..],
        _ => return Err(GraphError::unknown_path()),
    };
    let caller = mailauth::caller(emu, &req.headers, Api::Graph).map_err(GraphError::from)?;
    if let [subs, rest @ ..] = segs
        && subs == "subscriptions"
    {
        return crate::subscriptions::handle(emu, req, &caller, rest).await;
    }
    let (user, rest) = match segs {
        [me, rest @ ..] if me == "me" => {
            let upn = caller.user.as_ref().map(|u| u.1.clone()).ok_or(GraphError::from(Denied::NeedsUser))?;
            (upn, rest)
        }
        [users, u, rest @ ..] if users == "users" => (u.clone(), rest),
        _ => return Err(GraphError::unknown_path()),
    };
    let t = target(rest)?;
    let need = match (&t, &req.method) {
        (Target::SendMail, _) => Need::Send,
        (_, &Method::GET) => Need::Read,
        _ => Need::Write,
    };
    let slot = mailauth::open(emu, &caller, &user, Api::Graph, need).await?;
    let cx = Cx { emu, req, immutable: wants_immutable(&req.headers), mailbox: slot.mailbox.clone(), _slot: slot };
    let m = req.method.clone();
    match (t, m) {
        (Target::Folders { parent }, Method::GET) => list_folders(&cx, parent.as_deref()),
        (Target::Folders { parent }, Method::POST) => create_folder(&cx, parent.as_deref().unwrap_or("msgfolderroot")),
        (Target::Folder(f), Method::GET) => get_folder(&cx, &f),
        (Target::Messages { folder }, Method::GET) => list_messages(&cx, folder.as_deref()),
        (Target::Delta(f), Method::GET) => delta(&cx, &f),
        (Target::Message(id), Method::GET) => get_message(&cx, &id),
        (Target::Message(id), Method::PATCH) => patch_message(&cx, &id),
        (Target::Message(id), Method::DELETE) => delete_message(&cx, &id),
        (Target::Value(id), Method::GET) => mime_value(&cx, &id),
        (Target::Attachments(id), Method::GET) => attachments(&cx, &id, None),
        (Target::Attachment(id, a), Method::GET) => attachments(&cx, &id, Some(&a)),
        (Target::Move(id), Method::POST) => move_message(&cx, &id),
        (Target::SendMail, Method::POST) => send_mail(&cx, &caller),
        _ => Err(GraphError::method()),
    }
}

fn check_id(id: &str) -> Result<(), GraphError> {
    if id_well_formed(id) { Ok(()) } else { Err(GraphError::malformed()) }
}

/// A folder by id or well-known name: malformed ids are 400, unknown ones 404.
fn folder<'a>(mb: &'a Mailbox, key: &str) -> Result<&'a Folder, GraphError> {
    if let Some(f) = mb.folder(key) {
        return Ok(f);
    }
    check_id(key)?;
    Err(GraphError::not_found())
}

fn message<'a>(mb: &'a Mailbox, id: &str) -> Result<&'a Message, GraphError> {
    check_id(id)?;
    mb.message(id).ok_or_else(GraphError::not_found)
}

fn folder_json(mb: &Mailbox, f: &Folder) -> Value {
    let info = mb.folder_info(f);
    json!({
        "id": f.id,
        "displayName": f.display_name,
        "parentFolderId": f.parent.clone().unwrap_or_default(),
        "childFolderCount": mb.children(&f.id).count(),
        "unreadItemCount": info.unread,
        "totalItemCount": info.total,
        "sizeInBytes": mb.in_folder(&f.id).map(|m| m.mime.len()).sum::<usize>(),
        "isHidden": false,
    })
}

fn ok_json(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

fn list_folders(cx: &Cx, parent: Option<&str>) -> Result<Response, GraphError> {
    let q = query(&cx.req.uri);
    let top = q.get("$top").map(|t| t.parse::<usize>()).transpose().map_err(|_| bad_top())?.unwrap_or(10);
    let skip = q.get("$skip").and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
    cx.with(|mb| {
        let parent = match parent {
            Some(p) => folder(mb, p)?.id.clone(),
            None => mb.root().id.clone(),
        };
        let all: Vec<Value> = mb.children(&parent).map(|f| folder_json(mb, f)).collect();
        let mut body = json!({
            "@odata.context": format!("{}/v1.0/$metadata#users('{}')/mailFolders", cx.emu.base_url, mb.address),
            "value": all.iter().skip(skip).take(top).cloned().collect::<Vec<_>>(),
        });
        if skip + top < all.len() {
            body["@odata.nextLink"] = json!(link(&cx.emu.base_url, cx.req.uri.path(), &q, &[("$skip", skip + top)]));
        }
        Ok(ok_json(StatusCode::OK, body))
    })
}

fn bad_top() -> GraphError {
    GraphError::bad_request("Invalid value for $top: it must be an integer between 1 and 1000.")
}

/// The same request URL with some query options replaced.
fn link(base: &str, path: &str, q: &HashMap<String, String>, set: &[(&str, usize)]) -> String {
    let mut q = q.clone();
    for (k, v) in set {
        q.insert(k.to_string(), v.to_string());
    }
    let mut keys: Vec<_> = q.keys().cloned().collect();
    keys.sort();
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for k in keys {
        ser.append_pair(&k, &q[&k]);
    }
    format!("{base}{path}?{}", ser.finish())
}

#[derive(Deserialize)]
struct NewFolder {
    #[serde(rename = "displayName")]
    display_name: Option<String>,
}

fn create_folder(cx: &Cx, parent: &str) -> Result<Response, GraphError> {
    let nf: NewFolder = serde_json::from_slice(&cx.req.body)
        .map_err(|e| GraphError::bad_request(format!("Invalid JSON in the request body: {e}")))?;
    let name = nf.display_name.unwrap_or_default();
    cx.with(|mb| {
        let parent = folder(mb, parent)?.id.clone();
        let f = mb.create_folder(&parent, &name)?;
        Ok(ok_json(StatusCode::CREATED, folder_json(mb, &f)))
    })
}

fn get_folder(cx: &Cx, key: &str) -> Result<Response, GraphError> {
    cx.with(|mb| {
        let f = folder(mb, key)?;
        Ok(ok_json(StatusCode::OK, folder_json(mb, f)))
    })
}

fn addr_json(a: &Addr) -> Value {
    json!({"emailAddress": {"name": a.name, "address": a.address}})
}

/// A message as Graph shows it, cut down to `$select` (`id` and `@odata.etag` always stay).
pub(crate) fn message_json(m: &Message, immutable: bool, select: Option<&[String]>, text_body: bool) -> Value {
    let s = &m.summary;
    let (content_type, content) = match (&s.html, &s.text, text_body) {
        (Some(h), _, false) => ("html", h.clone()),
        (_, Some(t), _) => ("text", t.clone()),
        (Some(h), None, true) => ("text", h.clone()),
        (None, None, _) => ("text", String::new()),
    };
    let sent = s.sent_ms.unwrap_or(m.received_ms);
    let id = if immutable { &m.immutable_id } else { &m.rest_id };
    let full = json!({
        "@odata.etag": format!("W/\"{}\"", m.change_key()),
        "id": id,
        "createdDateTime": iso(m.created_ms),
        "lastModifiedDateTime": iso(m.modified_ms),
        "changeKey": m.change_key(),
        "categories": m.categories,
        "receivedDateTime": iso(m.received_ms),
        "sentDateTime": iso(sent),
        "hasAttachments": s.attachments.iter().any(|a| !a.inline),
        "internetMessageId": s.internet_message_id,
        "subject": s.subject,
        "bodyPreview": s.preview,
        "importance": s.importance,
        "parentFolderId": m.folder,
        "conversationId": s.conversation_id,
        "isDeliveryReceiptRequested": false,
        "isReadReceiptRequested": s.receipt_to.is_some(),
        "isRead": m.is_read,
        "isDraft": false,
        "inferenceClassification": "focused",
        "body": {"contentType": content_type, "content": content},
        "sender": s.sender.as_ref().map(addr_json),
        "from": s.from.as_ref().map(addr_json),
        "toRecipients": s.to.iter().map(addr_json).collect::<Vec<_>>(),
        "ccRecipients": s.cc.iter().map(addr_json).collect::<Vec<_>>(),
        "bccRecipients": [],
        "replyTo": s.reply_to.iter().map(addr_json).collect::<Vec<_>>(),
        "flag": {"flagStatus": "notFlagged"},
    });
    match select {
        None => full,
        Some(fields) => {
            let mut out = Map::new();
            for (k, v) in full.as_object().expect("object") {
                if k == "id" || k == "@odata.etag" || fields.iter().any(|f| f.eq_ignore_ascii_case(k)) {
                    out.insert(k.clone(), v.clone());
                }
            }
            Value::Object(out)
        }
    }
}

fn select(q: &HashMap<String, String>) -> Option<Vec<String>> {
    q.get("$select").map(|s| s.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect())
}

fn text_body(headers: &HeaderMap) -> bool {
    prefer(headers, "outlook.body-content-type").is_some_and(|v| v.trim_matches('"').eq_ignore_ascii_case("text"))
}

/// One `$filter` clause: `receivedDateTime ge 2025-01-01T00:00:00Z`, `isRead eq false`.
#[derive(Debug, Clone)]
enum Clause {
    Received(String, i64),
    IsRead(bool),
}

fn parse_filter(f: &str) -> Result<Vec<Clause>, GraphError> {
    let bad = || GraphError::bad_request(format!("Invalid filter clause: {f}"));
    let mut out = Vec::new();
    let lower = f.to_string();
    for clause in lower.split(" and ").map(str::trim).filter(|c| !c.is_empty()) {
        let parts: Vec<&str> = clause.split_whitespace().collect();
        let [prop, op, value] = parts.as_slice() else { return Err(bad()) };
        let value = value.trim_matches('\'');
        if prop.eq_ignore_ascii_case("receivedDateTime") {
            let op = op.to_ascii_lowercase();
            if !["ge", "gt", "le", "lt", "eq"].contains(&op.as_str()) {
                return Err(bad());
            }
            let t = chrono::DateTime::parse_from_rfc3339(value).map_err(|_| bad())?.timestamp_millis();
            out.push(Clause::Received(op, t));
        } else if prop.eq_ignore_ascii_case("isRead") && op.eq_ignore_ascii_case("eq") {
            out.push(Clause::IsRead(value.parse().map_err(|_| bad())?));
        } else {
            return Err(bad());
        }
    }
    Ok(out)
}

fn matches(m: &Message, clauses: &[Clause]) -> bool {
    // Graph compares at second precision, as it shows the times.
    let r = m.received_ms.div_euclid(1000) * 1000;
    clauses.iter().all(|c| match c {
        Clause::Received(op, t) => match op.as_str() {
            "ge" => r >= *t,
            "gt" => r > *t,
            "le" => r <= *t,
            "lt" => r < *t,
            _ => r == *t,
        },
        Clause::IsRead(b) => m.is_read == *b,
    })
}

fn list_messages(cx: &Cx, folder_key: Option<&str>) -> Result<Response, GraphError> {
    let q = query(&cx.req.uri);
    let top = match q.get("$top") {
        Some(t) => t.parse::<usize>().ok().filter(|t| (1..=1000).contains(t)).ok_or_else(bad_top)?,
        None => 10,
    };
    let skip = match q.get("$skip") {
        Some(s) => s.parse::<usize>().map_err(|_| GraphError::bad_request("Invalid value for $skip."))?,
        None => 0,
    };
    let clauses = q.get("$filter").map(|f| parse_filter(f)).transpose()?.unwrap_or_default();
    let desc = match q.get("$orderby").map(|o| o.split_whitespace().map(str::to_ascii_lowercase).collect::<Vec<_>>()) {
        None => true,
        Some(o) => {
            if o.first().map(String::as_str) != Some("receiveddatetime") {
                return Err(GraphError::bad_request("Only receivedDateTime can be used in $orderby here."));
            }
            // Outlook wants the ordered property to lead the filter.
            if matches!(clauses.first(), Some(Clause::IsRead(_))) {
                return Err(GraphError::new(
                    StatusCode::BAD_REQUEST,
                    "InefficientFilter",
                    "The restriction or sort order is too complex for this operation.",
                ));
            }
            o.get(1).map(String::as_str) == Some("desc")
        }
    };
    let sel = select(&q);
    let text = text_body(&cx.req.headers);
    cx.with(|mb| {
        let fid = folder_key.map(|k| folder(mb, k).map(|f| f.id.clone())).transpose()?;
        let mut all: Vec<&Message> = mb
            .messages
            .iter()
            .filter(|m| fid.as_ref().is_none_or(|f| &m.folder == f) && matches(m, &clauses))
            .collect();
        all.sort_by_key(|m| (m.received_ms, m.seq));
        if desc {
            all.reverse();
        }
        let page: Vec<Value> =
            all.iter().skip(skip).take(top).map(|m| message_json(m, cx.immutable, sel.as_deref(), text)).collect();
        let mut body = json!({
            "@odata.context": format!("{}/v1.0/$metadata#users('{}')/messages", cx.emu.base_url, mb.address),
            "value": page,
        });
        if skip + top < all.len() {
            body["@odata.nextLink"] = json!(link(&cx.emu.base_url, cx.req.uri.path(), &q, &[("$skip", skip + top)]));
        }
        Ok(ok_json(StatusCode::OK, body))
    })
}

fn get_message(cx: &Cx, id: &str) -> Result<Response, GraphError> {
    let q = query(&cx.req.uri);
    let sel = select(&q);
    cx.with(|mb| {
        let m = message(mb, id)?;
        Ok(ok_json(StatusCode::OK, message_json(m, cx.immutable, sel.as_deref(), text_body(&cx.req.headers))))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Patch {
    is_read: Option<bool>,
    categories: Option<Vec<String>>,
}

fn patch_message(cx: &Cx, id: &str) -> Result<Response, GraphError> {
    let p: Patch = serde_json::from_slice(&cx.req.body)
        .map_err(|e| GraphError::bad_request(format!("Invalid JSON in the request body: {e}")))?;
    let now = cx.emu.clock.now_ms();
    cx.with(|mb| {
        let was_read = message(mb, id)?.is_read;
        let i = mb.update_message(id, p.is_read, p.categories, now)?;
        // Graph has no SuppressReadReceipts: Outlook sends the receipt a sender asked for
        // (reported in msgraph-sdk-php#1169; Microsoft documents no way around it).
        if p.is_read == Some(true) && !was_read {
            mb.settle_receipt(i, "read", false, "Graph PATCH", now);
        }
        Ok(ok_json(StatusCode::OK, message_json(&mb.messages[i], cx.immutable, None, false)))
    })
}

fn delete_message(cx: &Cx, id: &str) -> Result<Response, GraphError> {
    cx.with(|mb| {
        message(mb, id)?;
        mb.delete_message(id)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
}

/// `$value`: the MIME as stored. Graph labels it `text/plain`.
fn mime_value(cx: &Cx, id: &str) -> Result<Response, GraphError> {
    cx.with(|mb| {
        let m = message(mb, id)?;
        let mut r = Response::new(Body::from(m.mime.to_vec()));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Ok(r)
    })
}

fn attachments(cx: &Cx, id: &str, one: Option<&str>) -> Result<Response, GraphError> {
    cx.with(|mb| {
        let m = message(mb, id)?;
        let list: Vec<Value> = m
            .summary
            .attachments
            .iter()
            .enumerate()
            .map(|(i, a)| {
                json!({
                    "@odata.type": "#microsoft.graph.fileAttachment",
                    "id": format!("{}{i}", m.immutable_id.trim_end_matches('=')),
                    "lastModifiedDateTime": iso(m.modified_ms),
                    "name": a.name,
                    "contentType": a.content_type,
                    "size": a.bytes.len(),
                    "isInline": a.inline,
                    "contentId": a.content_id,
                    "contentBytes": STANDARD.encode(&a.bytes),
                })
            })
            .collect();
        match one {
            None => Ok(ok_json(StatusCode::OK, json!({"value": list}))),
            Some(aid) => list
                .into_iter()
                .find(|a| a["id"] == aid)
                .map(|a| ok_json(StatusCode::OK, a))
                .ok_or_else(GraphError::not_found),
        }
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MoveBody {
    destination_id: Option<String>,
}

fn move_message(cx: &Cx, id: &str) -> Result<Response, GraphError> {
    let b: MoveBody = serde_json::from_slice(&cx.req.body)
        .map_err(|e| GraphError::bad_request(format!("Invalid JSON in the request body: {e}")))?;
    let dest = b.destination_id.ok_or_else(|| GraphError::bad_request("destinationId is required."))?;
    let now = cx.emu.clock.now_ms();
    cx.with(|mb| {
        message(mb, id)?;
        let dest = folder(mb, &dest)?.id.clone();
        let i = mb.move_message(id, &dest, now)?;
        Ok(ok_json(StatusCode::CREATED, message_json(&mb.messages[i], cx.immutable, None, false)))
    })
}

/// Delta state carried in `$skiptoken` / `$deltatoken` (opaque to clients).
#[derive(Serialize, Deserialize)]
struct DeltaState {
    /// Mailbox and folder.
    m: String,
    f: String,
    /// Changes after this change number…
    s: u64,
    /// …up to this one (the snapshot of the round).
    u: u64,
    /// Last change number already returned in this round.
    l: u64,
    /// Mailbox epoch (expiring tokens bumps it).
    e: u64,
    /// Page size and `$select` of the first request.
    p: usize,
    sel: Option<Vec<String>>,
}

fn encode_state(s: &DeltaState) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(s).expect("serializable"))
}

fn decode_state(t: &str) -> Option<DeltaState> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(t).ok()?).ok()
}

fn delta(cx: &Cx, folder_key: &str) -> Result<Response, GraphError> {
    let q = query(&cx.req.uri);
    let text = text_body(&cx.req.headers);
    let max_page = prefer(&cx.req.headers, "odata.maxpagesize").and_then(|v| v.parse::<usize>().ok());
    cx.with(|mb| {
        let f = folder(mb, folder_key)?.id.clone();
        let path = cx.req.uri.path().to_string();
        // Outlook spells the code with a capital S; the overview docs write `syncStateNotFound`.
        let gone = || GraphError {
            location: Some(format!("{}{path}?$deltatoken=", cx.emu.base_url)),
            ..GraphError::new(
                StatusCode::GONE,
                "SyncStateNotFound",
                "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
            )
        };
        let token = q.get("$skiptoken").or_else(|| q.get("$deltatoken"));
        let mut st = match token {
            Some(t) => {
                let st = decode_state(t).ok_or_else(gone)?;
                if st.m != mb.id || st.f != f || st.e != mb.epoch {
                    return Err(gone());
                }
                st
            }
            None => DeltaState {
                m: mb.id.clone(),
                f: f.clone(),
                s: 0,
                u: mb.seq,
                l: 0,
                e: mb.epoch,
                p: q.get("$top").and_then(|t| t.parse().ok()).unwrap_or(10),
                sel: select(&q),
            },
        };
        if q.contains_key("$deltatoken") {
            // A new round: from the last round's end to now.
            st = DeltaState { s: st.u, l: st.u, u: mb.seq, ..st };
        }
        let page = max_page.unwrap_or(st.p).clamp(1, 1000);
        let lo = st.l.max(st.s);
        // Messages changed in the window, and (after the first round) those that left the folder.
        let mut items: Vec<(u64, Value)> = mb
            .in_folder(&f)
            .filter(|m| m.seq > lo && m.seq <= st.u)
            .map(|m| {
                let mut v = message_json(m, cx.immutable, st.sel.as_deref(), text);
                v["@odata.type"] = json!("#microsoft.graph.message");
                (m.seq, v)
            })
            .collect();
        if st.s > 0 {
            items.extend(mb.tombstones.iter().filter(|t| t.folder == f && t.seq > lo && t.seq <= st.u).map(|t| {
                let id = if cx.immutable { &t.immutable_id } else { &t.rest_id };
                let reason = match t.reason {
                    Removal::Moved => "changed",
                    Removal::Deleted => "deleted",
                };
                (t.seq, json!({"@odata.type": "#microsoft.graph.message", "id": id, "@removed": {"reason": reason}}))
            }));
        }
        items.sort_by_key(|(seq, _)| *seq);
        let more = items.len() > page;
        items.truncate(page);
        let mut body = json!({
            "@odata.context": format!("{}/v1.0/$metadata#Collection(message)", cx.emu.base_url),
        });
        if more {
            st.l = items.last().map_or(st.l, |(s, _)| *s);
            body["@odata.nextLink"] = json!(format!("{}{path}?$skiptoken={}", cx.emu.base_url, encode_state(&st)));
        } else {
            st.l = st.u;
            body["@odata.deltaLink"] = json!(format!("{}{path}?$deltatoken={}", cx.emu.base_url, encode_state(&st)));
        }
        body["value"] = Value::Array(items.into_iter().map(|(_, v)| v).collect());
        let mut r = ok_json(StatusCode::OK, body);
        if let Some(n) = max_page
            && let Ok(v) = HeaderValue::from_str(&format!("odata.maxpagesize={n}"))
        {
            r.headers_mut().insert("preference-applied", v);
        }
        Ok(r)
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendMail {
    message: OutMessage,
    save_to_sent_items: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct OutMessage {
    subject: String,
    body: Option<OutBody>,
    to_recipients: Vec<Recipient>,
    cc_recipients: Vec<Recipient>,
    bcc_recipients: Vec<Recipient>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutBody {
    content_type: Option<String>,
    content: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recipient {
    email_address: EmailAddress,
}

#[derive(Deserialize)]
struct EmailAddress {
    address: String,
    name: Option<String>,
}

/// RFC 2047 for non-ASCII header text.
fn header_text(s: &str) -> String {
    if s.is_ascii() { s.to_string() } else { format!("=?UTF-8?B?{}?=", STANDARD.encode(s)) }
}

fn mailbox_header(name: Option<&str>, address: &str) -> String {
    match name.filter(|n| !n.is_empty() && *n != address) {
        Some(n) => format!("\"{}\" <{address}>", header_text(n).replace('"', "")),
        None => format!("<{address}>"),
    }
}

/// `POST /users/{id}/sendMail`: JSON (`message`, `saveToSentItems`) or base64 MIME as `text/plain`.
/// Saved to Sent Items, and delivered to the inbox of every recipient mailbox the emulator has.
fn send_mail(cx: &Cx, _caller: &Caller) -> Result<Response, GraphError> {
    let is_mime = cx
        .req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/plain"));
    let now = cx.emu.clock.now_ms();
    let (mime, save, recipients) = if is_mime {
        let raw = String::from_utf8_lossy(&cx.req.body).split_whitespace().collect::<String>();
        let mime = STANDARD.decode(raw).map_err(|_| {
            GraphError::new(
                StatusCode::BAD_REQUEST,
                "ErrorMimeContentInvalidBase64String",
                "Invalid base64 string for MIME content.",
            )
        })?;
        let rcpts = crate::mail::summarize(&mime).recipients();
        (mime, true, rcpts)
    } else {
        let sm: SendMail = serde_json::from_slice(&cx.req.body)
            .map_err(|e| GraphError::bad_request(format!("Invalid JSON in the request body: {e}")))?;
        let m = sm.message;
        if m.to_recipients.is_empty() && m.cc_recipients.is_empty() && m.bcc_recipients.is_empty() {
            return Err(GraphError::new(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidRecipients",
                "At least one recipient isn't valid., A message can't be sent because it contains no recipients.",
            ));
        }
        let (from_name, from_addr) = cx.with(|mb| Ok((mb.display_name.clone(), mb.address.clone())))?;
        let list = |r: &[Recipient]| {
            r.iter()
                .map(|x| mailbox_header(x.email_address.name.as_deref(), &x.email_address.address))
                .collect::<Vec<_>>()
        };
        let html =
            m.body.as_ref().and_then(|b| b.content_type.as_deref()).is_some_and(|c| c.eq_ignore_ascii_case("html"));
        let content = m.body.and_then(|b| b.content).unwrap_or_default();
        let domain = from_addr.split('@').nth(1).unwrap_or("emulator.test").to_string();
        let date = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default().to_rfc2822();
        let mut mime = format!(
            "From: {}\r\nSubject: {}\r\nDate: {date}\r\nMessage-ID: <{}@{domain}>\r\nMIME-Version: 1.0\r\n",
            mailbox_header(Some(&from_name), &from_addr),
            header_text(&m.subject),
            uuid::Uuid::new_v4().simple(),
        );
        if !m.to_recipients.is_empty() {
            mime.push_str(&format!("To: {}\r\n", list(&m.to_recipients).join(", ")));
        }
        if !m.cc_recipients.is_empty() {
            mime.push_str(&format!("Cc: {}\r\n", list(&m.cc_recipients).join(", ")));
        }
        mime.push_str(&format!(
            "Content-Type: text/{}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            if html { "html" } else { "plain" },
            STANDARD.encode(content.as_bytes())
        ));
        let rcpts = m
            .to_recipients
            .iter()
            .chain(&m.cc_recipients)
            .chain(&m.bcc_recipients)
            .map(|r| r.email_address.address.clone())
            .collect();
        (mime.into_bytes(), sm.save_to_sent_items.unwrap_or(true), rcpts)
    };
    if save {
        cx.with(|mb| Ok(mb.deliver("sentitems", mime.clone(), now, true)?))?;
    }
    cx.emu.mail().transport(&recipients, &mime, now);
    Ok(StatusCode::ACCEPTED.into_response())
}
