//! Tickets: search and pages, each ticket with its entries (HTML shown
//! sanitized in a sandboxed frame that loads nothing), attachments and
//! status changes.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use mailrobot_store::{TicketDetail, TicketQuery, TicketStatus};
use serde::Deserialize;

use crate::pages::{Layout, csrf_refused, error_page, not_found, render};
use crate::session::SignedIn;
use crate::{WebState, views};

/// Tickets per page of the list.
pub const PAGE_SIZE: usize = 50;

const STATUSES: [(&str, &str); 3] = [("open", "Open"), ("pending", "Pending"), ("closed", "Closed")];

pub struct TicketRow {
    pub number: String,
    pub subject: String,
    pub requester: String,
    pub status: &'static str,
    pub entries: i64,
    pub updated: String,
}

fn status_label(s: TicketStatus) -> &'static str {
    match s {
        TicketStatus::Open => "Open",
        TicketStatus::Pending => "Pending",
        TicketStatus::Closed => "Closed",
    }
}

#[derive(Template)]
#[template(path = "tickets.html")]
struct TicketsPage {
    layout: Option<Layout>,
    q: String,
    status: String,
    mailbox: String,
    statuses: [(&'static str, &'static str); 3],
    mailboxes: Vec<String>,
    rows: Vec<TicketRow>,
    older: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    mailbox: String,
    before: Option<i64>,
}

/// What a search box's words look for: a ticket number written as the robot
/// writes it (`TKT-000123`, `[TKT-000123]`) is that ticket alone, found by
/// its key; other words match subjects and requesters (bare digits match the
/// number too).
pub fn search_terms(tag: &mailrobot_core::TagFormat, typed: &str) -> (Option<String>, Option<i64>) {
    let text = typed.trim();
    if text.is_empty() {
        return (None, None);
    }
    let number = tag.parse_number(text).and_then(|n| i64::try_from(n).ok());
    let written_as_number = number.is_some() && !text.bytes().all(|b| b.is_ascii_digit());
    if written_as_number { (None, number) } else { (Some(text.to_string()), number) }
}

pub async fn list(State(state): State<WebState>, signed_in: SignedIn, Query(params): Query<ListQuery>) -> Response {
    let (text, number) = search_terms(&state.tag, &params.q);
    let status = params.status.parse::<TicketStatus>().ok();
    let mailbox_name = params.mailbox.clone();
    let before = params.before;
    let loaded = state
        .blocking(move |s| {
            let mailboxes = s.store.mailboxes()?;
            let mailbox_id = mailboxes.iter().find(|m| m.name == mailbox_name).map(|m| m.id);
            let query = TicketQuery { text, number, status, mailbox_id, before_id: before, limit: PAGE_SIZE + 1 };
            let names = mailboxes.into_iter().filter(|m| !crate::mailboxes::is_removed(m)).map(|m| m.name).collect();
            Ok((names, s.store.search_tickets(&query)?))
        })
        .await;
    let (mailboxes, mut tickets) = match loaded {
        Ok(loaded) => loaded,
        Err(err) => return error_page(&err),
    };
    // One more than a page tells whether there are older ones.
    let older = (tickets.len() > PAGE_SIZE).then(|| {
        tickets.truncate(PAGE_SIZE);
        let last = tickets.last().map(|t| t.id).unwrap_or_default().to_string();
        let pairs =
            [("q", params.q.as_str()), ("status", &params.status), ("mailbox", &params.mailbox), ("before", &last)];
        format!("/tickets{}", crate::pages::query_string(&pairs))
    });
    let rows = tickets
        .iter()
        .map(|t| TicketRow {
            number: state.tag.number(t.id as u64),
            subject: t.subject.clone(),
            requester: t.requester.clone().unwrap_or_default(),
            status: status_label(t.status),
            entries: t.entries,
            updated: views::short_time(&t.updated_at),
        })
        .collect();
    render(&TicketsPage {
        layout: Some(Layout::new(&signed_in, "Tickets")),
        q: params.q,
        status: params.status,
        mailbox: params.mailbox,
        statuses: STATUSES,
        mailboxes,
        rows,
        older,
    })
}

pub struct EntryBlock {
    pub position: i64,
    pub subject: String,
    pub from: String,
    pub date: String,
    pub kind: &'static str,
    pub text: String,
    /// A reply's new text; the whole text then sits behind a toggle.
    pub new_text: Option<String>,
    pub has_html: bool,
    /// The HTML has quoted history: the frame shows the new part, the
    /// whole HTML sits behind a toggle.
    pub html_quoted: bool,
    pub attachments: Vec<AttachmentItem>,
    /// What was decided about answering it, and what rules did.
    pub answer: Option<String>,
    pub rules: Option<String>,
}

pub struct AttachmentItem {
    pub href: String,
    pub name: String,
    /// Size in words.
    pub size: String,
    /// Shown in the HTML body (a cid: image), listed too.
    pub inline: bool,
}

#[derive(Template)]
#[template(path = "ticket.html")]
struct TicketPage {
    layout: Option<Layout>,
    csrf: String,
    number: String,
    subject: String,
    requester: String,
    /// The requester's contact page.
    requester_href: Option<String>,
    /// What rules set: (label, value), only those set.
    routing: Vec<(&'static str, String)>,
    status: &'static str,
    status_value: &'static str,
    created: String,
    updated: String,
    statuses: [(&'static str, &'static str); 3],
    entries: Vec<EntryBlock>,
    notice: Option<String>,
    message: Option<String>,
}

async fn load(state: &WebState, number: &str) -> Result<TicketDetail, Response> {
    let Some(id) = state.tag.parse_number(number).and_then(|n| i64::try_from(n).ok()) else {
        return Err(not_found("No such ticket."));
    };
    match state.blocking(move |s| s.store.ticket(id)).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(not_found("No such ticket.")),
        Err(err) => Err(error_page(&err)),
    }
}

fn size_words(bytes: i64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.0} KB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

#[derive(Deserialize)]
pub struct Shown {
    saved: Option<String>,
    /// The outbox row of a reply just queued.
    replied: Option<i64>,
}

pub async fn page(
    state: State<WebState>,
    signed_in: SignedIn,
    number: Path<String>,
    Query(shown): Query<Shown>,
) -> Response {
    page_with(state, signed_in, number, shown, None).await
}

async fn page_with(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path(number): Path<String>,
    shown: Shown,
    shown_message: Option<String>,
) -> Response {
    let t = match load(&state, &number).await {
        Ok(t) => t,
        Err(response) => return response,
    };
    let number = state.tag.number(t.summary.id as u64);
    let entries = t
        .entries
        .iter()
        .map(|e| EntryBlock {
            position: e.position,
            subject: e.subject.clone(),
            from: match (&e.from_name, &e.from) {
                (Some(name), Some(addr)) => format!("{name} <{addr}>"),
                (None, Some(addr)) => addr.clone(),
                _ => "unknown sender".into(),
            },
            date: e.date.as_deref().map(views::short_time).unwrap_or_default(),
            kind: match e.kind {
                mailrobot_store::MessageKind::Mail => "mail",
                mailrobot_store::MessageKind::AutoReply => "automatic reply",
                mailrobot_store::MessageKind::Bounce => "bounce",
                mailrobot_store::MessageKind::Duplicate => "duplicate",
            },
            text: e.text_body.clone(),
            new_text: e.new_text.clone(),
            answer: e.answer.clone(),
            rules: e.rules.clone(),
            has_html: e.html_body.is_some(),
            html_quoted: e.html_body.as_deref().and_then(mailrobot_core::quote::html_quote_start).is_some(),
            attachments: e
                .attachments
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let name = a.filename.clone().unwrap_or_else(|| format!("attachment-{}", i + 1));
                    let href = format!(
                        "/tickets/{number}/entries/{}/attachments/{i}/{}",
                        e.position,
                        crate::pages::path_segment(&name)
                    );
                    AttachmentItem { href, name, size: size_words(a.size), inline: a.inline }
                })
                .collect(),
        })
        .collect();
    render(&TicketPage {
        layout: Some(Layout::new(&signed_in, "Tickets")),
        csrf: signed_in.session.csrf_token.clone(),
        number: number.clone(),
        subject: t.summary.subject.clone(),
        requester: match (&t.summary.requester_name, &t.summary.requester) {
            (Some(name), Some(addr)) => format!("{name} <{addr}>"),
            (None, Some(addr)) => addr.clone(),
            _ => "unknown".into(),
        },
        requester_href: t.summary.requester.as_deref().map(crate::directory::href),
        routing: routing_of(&t.summary.fields),
        status: status_label(t.summary.status),
        status_value: t.summary.status.as_str(),
        created: views::short_time(&t.summary.created_at),
        updated: views::short_time(&t.summary.updated_at),
        statuses: STATUSES,
        entries,
        notice: match (shown.saved, shown.replied) {
            (Some(_), _) => Some(format!("{number} is now {}.", status_label(t.summary.status))),
            (None, Some(row)) => Some(format!("Reply queued (outbox {row}); see Outbox for when it is sent.")),
            _ => None,
        },
        message: shown_message,
    })
}

/// What rules set on a ticket, as the page lists it.
fn routing_of(fields: &mailrobot_core::TicketFields) -> Vec<(&'static str, String)> {
    let mut routing: Vec<(&'static str, String)> = [
        ("Queue", &fields.queue),
        ("Assignee", &fields.assignee),
        ("Category", &fields.category),
        ("Priority", &fields.priority),
    ]
    .into_iter()
    .filter_map(|(label, value)| value.clone().map(|v| (label, v)))
    .collect();
    if !fields.tags.is_empty() {
        routing.push(("Tags", fields.tags.join(", ")));
    }
    routing
}

/// The ticket page's `Send reply` (multipart: the text and files).
pub async fn reply(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path(number): Path<String>,
    mut multipart: axum::extract::Multipart,
) -> Response {
    let (mut csrf, mut text, mut files) = (String::new(), String::new(), Vec::new());
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_string();
                let filename = field.file_name().map(str::to_string);
                let content_type = field.content_type().map(str::to_string);
                let bytes = match field.bytes().await {
                    Ok(bytes) => bytes,
                    Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                };
                match name.as_str() {
                    "csrf" => csrf = String::from_utf8_lossy(&bytes).into_owned(),
                    "text" => text = String::from_utf8_lossy(&bytes).into_owned(),
                    "attachments" => {
                        if let Some(filename) = filename.filter(|f| !f.is_empty()) {
                            let content_type = content_type
                                .filter(|c| !c.is_empty() && c != "application/octet-stream")
                                .unwrap_or_else(|| "application/octet-stream".into());
                            files.push(crate::ops::ReplyFile { filename, content_type, bytes: bytes.to_vec() });
                        }
                    }
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        }
    }
    if !signed_in.csrf_ok(&csrf) {
        return csrf_refused();
    }
    match state.ops.reply(&number, text, files).await {
        Ok(queued) => Redirect::to(&format!("/tickets/{number}?replied={}", queued.id)).into_response(),
        Err(message) => {
            let shown = Shown { saved: None, replied: None };
            page_with(State(state), signed_in, Path(number), shown, Some(format!("Reply not sent: {message}"))).await
        }
    }
}

#[derive(Deserialize)]
pub struct StatusForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    status: String,
}

pub async fn set_status(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path(number): Path<String>,
    Form(form): Form<StatusForm>,
) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let t = match load(&state, &number).await {
        Ok(t) => t,
        Err(response) => return response,
    };
    let Ok(status) = form.status.parse::<TicketStatus>() else {
        return (StatusCode::BAD_REQUEST, "Choose Open, Pending or Closed.").into_response();
    };
    let id = t.summary.id;
    if let Err(message) = state.ops.set_status(id, status).await {
        return (StatusCode::UNPROCESSABLE_ENTITY, message).into_response();
    }
    Redirect::to(&format!("/tickets/{}?saved=1", state.tag.number(id as u64))).into_response()
}

/// The frame's policy: the sanitized HTML may style itself and show images
/// carried in the mail (data:), nothing else, no script even if one got
/// through, and only this site may frame it.
pub const ENTRY_HTML_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; sandbox";

/// Inline images larger than this in all are not put into the frame (they
/// stay listed as attachments).
const INLINE_IMAGES_MAX: usize = 16 << 20;

#[derive(Deserialize)]
pub struct HtmlPart {
    /// `new`: only the HTML before the quoted history.
    part: Option<String>,
}

pub async fn entry_html(
    State(state): State<WebState>,
    _signed_in: SignedIn,
    Path((number, position)): Path<(String, i64)>,
    Query(part): Query<HtmlPart>,
) -> Response {
    let t = match load(&state, &number).await {
        Ok(t) => t,
        Err(response) => return response,
    };
    let Some(entry) = t.entries.iter().find(|e| e.position == position) else {
        return not_found("This entry has no HTML.");
    };
    let Some(mut html) = entry.html_body.as_deref() else {
        return not_found("This entry has no HTML.");
    };
    if part.part.as_deref() == Some("new")
        && let Some(start) = mailrobot_core::quote::html_quote_start(html)
    {
        html = &html[..start];
    }
    let mut clean = mailrobot_core::html::sanitize(html);
    // The frame is sandboxed: it sends no session cookie, so its inline
    // images come along as data: URLs rather than links to the attachments.
    let mut referenced = Vec::new();
    mailrobot_core::html::rewrite_cids(&clean, |cid| {
        referenced.push(cid.to_string());
        None
    });
    let images: Vec<(String, String, String)> = entry
        .attachments
        .iter()
        .filter(|a| a.content_type.starts_with("image/"))
        .filter_map(|a| {
            let cid = a.content_id.clone().filter(|cid| referenced.contains(cid))?;
            Some((cid, a.content_type.clone(), a.sha256.clone()))
        })
        .collect();
    if !images.is_empty() {
        let shas: Vec<String> = images.iter().map(|(_, _, sha)| sha.clone()).collect();
        let blobs = state
            .blocking(move |s| {
                let mut total = 0usize;
                let mut out = Vec::with_capacity(shas.len());
                for sha in shas {
                    out.push(s.store.blob(&sha)?.filter(|b| {
                        total += b.len();
                        total <= INLINE_IMAGES_MAX
                    }));
                }
                Ok(out)
            })
            .await;
        let blobs = match blobs {
            Ok(blobs) => blobs,
            Err(err) => return error_page(&err),
        };
        use base64::Engine;
        let urls: Vec<(String, String)> = images
            .into_iter()
            .zip(blobs)
            .filter_map(|((cid, content_type, _), blob)| {
                let data = base64::engine::general_purpose::STANDARD.encode(blob?);
                Some((cid, format!("data:{content_type};base64,{data}")))
            })
            .collect();
        clean = mailrobot_core::html::rewrite_cids(&clean, |cid| {
            urls.iter().find(|(id, _)| id == cid).map(|(_, url)| url.clone())
        });
    }
    (
        [
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(ENTRY_HTML_CSP)),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN")),
        ],
        Html(clean),
    )
        .into_response()
}

pub async fn attachment(
    State(state): State<WebState>,
    _signed_in: SignedIn,
    Path((number, position, index, _name)): Path<(String, i64, usize, String)>,
) -> Response {
    let t = match load(&state, &number).await {
        Ok(t) => t,
        Err(response) => return response,
    };
    let Some(a) = t.entries.iter().find(|e| e.position == position).and_then(|e| e.attachments.get(index)).cloned()
    else {
        return not_found("No such attachment.");
    };
    let sha = a.sha256.clone();
    let bytes = match state.blocking(move |s| s.store.blob(&sha)).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return not_found("The attachment's content is missing."),
        Err(err) => return error_page(&err),
    };
    let name = a.filename.unwrap_or_else(|| format!("attachment-{}", index + 1));
    crate::pages::download(bytes, &name)
}

#[cfg(test)]
mod tests {
    use super::search_terms;

    #[test]
    fn a_number_written_as_the_robot_writes_it_is_found_by_its_key_alone() {
        let tag = mailrobot_core::TagFormat::default();
        assert_eq!(search_terms(&tag, " TKT-000123 "), (None, Some(123)));
        assert_eq!(search_terms(&tag, "[tkt-000123]"), (None, Some(123)));
        assert_eq!(search_terms(&tag, "123"), (Some("123".into()), Some(123)), "bare digits are words too");
        assert_eq!(search_terms(&tag, "printer"), (Some("printer".into()), None));
        assert_eq!(search_terms(&tag, "  "), (None, None));
    }
}
