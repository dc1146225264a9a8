//! The mail journal: every fetched copy with its state, kind, reason and
//! ticket; the raw mail for download; Retry for failed ones.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use mailrobot_store::{JournalState, MessageFilter, MessagePage};
use serde::Deserialize;

use crate::pages::{Layout, csrf_refused, error_page, not_found, render};
use crate::session::SignedIn;
use crate::{WebState, views};

pub const PAGE_SIZE: usize = 100;

pub struct JournalRow {
    pub id: i64,
    pub mailbox: String,
    pub subject: String,
    pub from: String,
    pub state: &'static str,
    pub kind: &'static str,
    pub reason: String,
    pub ticket: Option<String>,
    pub fetched: String,
    pub has_raw: bool,
    pub retryable: bool,
}

#[derive(Template)]
#[template(path = "journal.html")]
struct JournalPage {
    layout: Option<Layout>,
    csrf: String,
    mailboxes: Vec<String>,
    states: Vec<&'static str>,
    mailbox: String,
    state: String,
    rows: Vec<JournalRow>,
    older: Option<String>,
    notice: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct JournalQuery {
    #[serde(default)]
    mailbox: String,
    #[serde(default)]
    state: String,
    before: Option<i64>,
}

async fn show(
    state: &WebState,
    signed_in: &SignedIn,
    query: JournalQuery,
    notice: Option<String>,
    message: Option<String>,
) -> Response {
    let (mailbox_name, journal_state, before) =
        (query.mailbox.clone(), query.state.parse::<JournalState>().ok(), query.before);
    let loaded = state
        .blocking(move |s| {
            let mailboxes = s.store.mailboxes()?;
            let mailbox_id = mailboxes.iter().find(|m| m.name == mailbox_name).map(|m| m.id);
            let page = MessagePage { before_id: before, limit: PAGE_SIZE + 1 };
            let rows = s.store.messages(&MessageFilter { state: journal_state, mailbox_id, page: Some(page) })?;
            Ok((mailboxes.into_iter().map(|m| m.name).collect::<Vec<_>>(), rows))
        })
        .await;
    let (mailboxes, mut rows) = match loaded {
        Ok(loaded) => loaded,
        Err(err) => return error_page(&err),
    };
    let older = (rows.len() > PAGE_SIZE).then(|| {
        rows.truncate(PAGE_SIZE);
        let last = rows.last().map(|r| r.journal_id).unwrap_or_default().to_string();
        let pairs = [("mailbox", query.mailbox.as_str()), ("state", &query.state), ("before", &last)];
        format!("/journal{}", crate::pages::query_string(&pairs))
    });
    let rows = rows
        .iter()
        .map(|m| JournalRow {
            id: m.journal_id,
            mailbox: m.mailbox.clone(),
            subject: m.subject.clone().unwrap_or_default(),
            from: m.from.clone().unwrap_or_default(),
            state: m.state.as_str(),
            kind: m.kind.map_or("", |k| k.as_str()),
            reason: m.reason.clone().unwrap_or_default(),
            ticket: m.ticket_id.map(|t| state.tag.number(t as u64)),
            fetched: views::short_time(&m.fetched_at),
            has_raw: m.raw_sha256.is_some(),
            retryable: m.state == JournalState::Failed && m.raw_sha256.is_some(),
        })
        .collect();
    render(&JournalPage {
        layout: Some(Layout::new(signed_in, "Mail journal")),
        csrf: signed_in.session.csrf_token.clone(),
        mailboxes,
        states: JournalState::ALL.iter().map(|s| s.as_str()).collect(),
        mailbox: query.mailbox,
        state: query.state,
        rows,
        older,
        notice,
        message,
    })
}

pub async fn list(State(state): State<WebState>, signed_in: SignedIn, Query(query): Query<JournalQuery>) -> Response {
    show(&state, &signed_in, query, None, None).await
}

pub async fn retry(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    Form(form): Form<crate::pages::CsrfForm>,
) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let (notice, message) = match state.blocking(move |s| s.store.retry_message(id)).await {
        Ok(true) => (Some(format!("Mail {id} queued again; the mailbox's next poll processes it.")), None),
        Ok(false) => (None, Some(format!("Mail {id} is not a failed mail with its content kept."))),
        Err(err) => return error_page(&err),
    };
    show(&state, &signed_in, JournalQuery::default(), notice, message).await
}

#[derive(Deserialize)]
pub struct RetryAll {
    #[serde(default)]
    csrf: String,
    /// Empty: every mailbox.
    #[serde(default)]
    mailbox: String,
}

/// `Retry all failed`: every failed mail (of the mailbox filtered on) back
/// in the queue, as `messages retry [--mailbox]`.
pub async fn retry_all(State(state): State<WebState>, signed_in: SignedIn, Form(form): Form<RetryAll>) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let name = form.mailbox.clone();
    let done = state
        .blocking(move |s| {
            let mailbox_id = match name.as_str() {
                "" => None,
                name => match s.store.mailbox_by_name(name)? {
                    Some(m) => Some(m.id),
                    None => return Ok(None),
                },
            };
            Ok(Some(s.store.retry_failed(mailbox_id)?))
        })
        .await;
    let (notice, message) = match done {
        Ok(Some(n)) => (Some(format!("{n} failed mails queued again; each mailbox's next poll processes them.")), None),
        Ok(None) => (None, Some(format!("No mailbox {}.", form.mailbox))),
        Err(err) => return error_page(&err),
    };
    let query = JournalQuery { mailbox: form.mailbox, ..Default::default() };
    show(&state, &signed_in, query, notice, message).await
}

pub async fn raw(State(state): State<WebState>, _signed_in: SignedIn, Path(id): Path<i64>) -> Response {
    let loaded = state.blocking(move |s| s.store.message_raw(id)).await;
    match loaded {
        Ok(Some(bytes)) => crate::pages::download(bytes, &format!("mail-{id}.eml")),
        Ok(None) => not_found("This mail's content was not kept (it was refused before download)."),
        Err(err) => error_page(&err),
    }
}
